#!/usr/bin/env bash
# Installs, idempotently, the Debian packages a development task needs.
# Usage: tools/install-deps.sh fast|build|root|test|vm|images|cluster ...
set -euo pipefail

want=()
for set in "$@"; do
    case "$set" in
    build) want+=(golang-1.19-go golang-github-modern-go-reflect2-dev rsync jq dpkg-dev make) ;;
    root) want+=(mmdebstrap) ;;
    # tools/test.sh --fast: the shellcheck gate; zsh and fish parse the
    # completion scripts, groff reads the manual pages.
    fast) want+=(shellcheck zsh fish groff-base) ;;
    # For setup.sh: shellcheck; curl, wget and python3 (a loopback HTTP
    # server) for the setup.sh runs.
    # busybox-static (udhcpc, and the netboot test initrd), tftp-hpa,
    # ipxe (undionly.kpxe, ipxe.efi) for the netboot tests.
    # tftpd-hpa, nginx-light, kea-admin (perfdhcp) and kea-dhcp4-server
    # are the peers of the netboot benchmarks; their services are not
    # started (see below).
    # The static binary test: file, strace (no NSS file opened) and
    # dnsmasq (a DNS server on loopback).
    test) want+=(systemd-container util-linux shellcheck curl wget python3 busybox-static tftp-hpa ipxe tftpd-hpa nginx-light libnginx-mod-stream haproxy kea-admin kea-dhcp4-server etcd-server openssl zsh fish groff-base file strace dnsmasq-base) ;;
    # ipxe-qemu: the iPXE ROMs of qemu's NICs (the netboot VM test boots from it).
    # dosfstools, mtools, syslinux(-common): `kprov image build`; fdisk
    # (sfdisk) reads its partition tables back in the tests.
    vm) want+=(qemu-system-x86 ipxe-qemu e2fsprogs dnsmasq-base openssh-client binutils dosfstools mtools syslinux syslinux-common fdisk zstd) ;;
    # tools/build-images.sh: the pause program (gcc, static libc), etcd and
    # busybox from Debian, python3 writes the OCI layout; the image tests
    # run a registry, push with skopeo and make an htpasswd file.
    images) want+=(gcc libc6-dev binutils python3 etcd-server etcd-client busybox-static docker-registry skopeo apache2-utils) ;;
    # tools/node-image.sh and `kprov cluster up` (nspawn target): the
    # machines, and the loopback mirror and registry the bundle is made from.
    cluster) want+=(systemd-container util-linux iproute2 python3 docker-registry skopeo openssh-client) ;;
    *) echo "install-deps: unknown set '$set' (expected fast, build, root, test, vm, images or cluster)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
apt-get update -qq >&2 || true
extra=()
if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    # A fresh machine may carry a newer qemu-utils that conflicts with the
    # distro's qemu-system-x86: install both at the distro's version.
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    extra=(--allow-downgrades "qemu-utils=$v" qemu-block-extra-)
fi
# Benchmark peers are run by the tests inside their own namespaces: keep
# their packaged services from starting on the host (policy-rc.d 101 =
# action forbidden), unless the host already has a policy of its own.
# invoke-rc.d names a service (nginx), deb-systemd-invoke its unit
# (nginx.service): both are matched.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
    # shellcheck disable=SC2016 # "$1" belongs to the policy script
    printf '#!/bin/sh\ncase "${1%%.service}" in tftpd-hpa|nginx|kea-dhcp4-server) exit 101 ;; esac\nexit 0\n' > "$policy"
    chmod 755 "$policy"
    own_policy=1
fi
status=0
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" "${extra[@]}" >&2 || status=$?
[[ $own_policy -eq 1 ]] && rm -f "$policy"
exit "$status"
