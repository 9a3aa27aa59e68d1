#!/usr/bin/env bash
# Builds (once) and caches a Debian 12 root made from Debian packages with
# mmdebstrap, as a tarball outside the work tree; prints the tarball's path.
# The root is what a freshly installed node looks like before kprov runs:
# systemd as init, apt, no Kubernetes bits.
#
# Usage: tools/debian-root.sh [node|ssh|vm|cloud]
# Env:   KPROV_DEV_CACHE (default /var/cache/kprov-dev)
set -euo pipefail

variant=${1:-node}
cache=${KPROV_DEV_CACHE:-/var/cache/kprov-dev}
suite=bookworm
# Bump when the package list changes so that stale caches are rebuilt.
revision=1

case "$variant" in
node) include=systemd-sysv,dbus,udev,iproute2,kmod,procps,ca-certificates,netbase ;;
# node + the OpenSSH server, for hosts of the ssh target. It ships without
# host keys and with sshd disabled: each host makes its own keys
# (ssh-keygen -A) before it enables sshd.
ssh) include=systemd-sysv,dbus,udev,iproute2,kmod,procps,ca-certificates,netbase,openssh-server ;;
# node + a kernel and initramfs, for booting under qemu (-kernel/-initrd).
vm) include=systemd-sysv,dbus,udev,iproute2,kmod,procps,ca-certificates,netbase,linux-image-cloud-amd64,initramfs-tools ;;
# vm + cloud-init and what a cloud image boots with (sshd, DHCP via
# ifupdown, curl for setup.sh); also where `cloud-init schema` runs.
cloud) include=systemd-sysv,dbus,udev,iproute2,kmod,procps,ca-certificates,netbase,linux-image-cloud-amd64,initramfs-tools,cloud-init,openssh-server,ifupdown,isc-dhcp-client,curl ;;
*) echo "debian-root: unknown variant '$variant' (expected: node, ssh, vm or cloud)" >&2; exit 2 ;;
esac
hooks=()
if [[ $variant == ssh ]]; then
    # shellcheck disable=SC2016
    hooks=(--customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' --customize-hook='chroot "$1" systemctl disable ssh.service')
fi

out="$cache/roots/$suite-$variant-r$revision.tar"
if [[ -f "$out" ]]; then
    echo "$out"
    exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
"$here/install-deps.sh" root >&2
mkdir -p "$cache/roots"
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "debian-root: building $suite/$variant from $mirror" >&2
# A swap line lets the tests see that provisioning comments it out. The
# hooks are run by mmdebstrap's shell, which expands "$1" (the root).
# shellcheck disable=SC2016
mmdebstrap --variant=minbase --include="$include" \
    --customize-hook='echo "/swapfile none swap sw 0 0" >> "$1/etc/fstab"' \
    --customize-hook='echo kprov-node > "$1/etc/hostname"' \
    "${hooks[@]}" \
    "$suite" "$cache/roots/.partial-$suite-$variant.tar" "$mirror" >&2
mv "$cache/roots/.partial-$suite-$variant.tar" "$out"
echo "$out"
