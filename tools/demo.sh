#!/usr/bin/env bash
# kprov's main job, end to end on an embedded default: build a Debian 12
# root from Debian packages, prebake it into a Kubernetes node with
# `kprov provision --phase base --root`, and show what was done and the
# node's resulting state. Installs what it needs (idempotently) first.
#
# Env: KPROV_DEMO_DIR (default /var/tmp/kprov-demo)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "tools/demo.sh: run as root: it builds a root filesystem and chroots into it" >&2
    exit 2
fi
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "preparing: Debian packages, the Kubernetes v1.20.2 build (cached), a Debian 12 root (cached)"
tools/install-deps.sh build root
tarball=$(tools/debian-root.sh)
artifacts=$(tools/artifacts-dir.sh)
cargo build --release --locked -p kprov
kprov=$PWD/target/release/kprov

demo=${KPROV_DEMO_DIR:-/var/tmp/kprov-demo}
root=$demo/root
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xf "$tarball"

say "the node: $root"
"$kprov" os --root "$root"

say "kprov provision --phase base --root $root (prebake, offline)"
"$kprov" provision --phase base --root "$root" --artifacts-dir "$artifacts" --kubelet-version v1.20.2

in_root() { chroot "$root" env PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"; }
say "the node's resulting state"
printf 'kubelet:     %s\n' "$(in_root kubelet --version)"
printf 'kubectl:     %s\n' "$(in_root kubectl version --client --short 2>/dev/null)"
printf 'containerd:  %s\n' "$(in_root containerd --version)"
printf 'CNI plugins: %s\n' "$(ls "$root/opt/cni/bin" | tr '\n' ' ')"
printf 'units:       kubelet %s, containerd %s, kprov-healthcheck.timer %s\n' \
    "$(in_root systemctl is-enabled kubelet)" "$(in_root systemctl is-enabled containerd)" \
    "$(in_root systemctl is-enabled kprov-healthcheck.timer)"
printf 'swap:        %s\n' "$(grep swap "$root/etc/fstab" || echo 'no swap entries')"
printf 'sysctls:     %s\n' "$(grep -v '^#' "$root/etc/sysctl.d/90-kprov-kubernetes.conf" | tr '\n' ';')"
printf 'modules:     %s\n' "$(grep -v '^#' "$root/etc/modules-load.d/kprov-kubernetes.conf" | tr '\n' ' ')"
printf 'cri config:  %s\n' "$(in_root containerd --config /etc/containerd/config.toml config dump | grep -E 'SystemdCgroup|sandbox_image' | tr -s ' ' | tr '\n' ';')"

say "a second run changes nothing"
"$kprov" provision --phase base --root "$root" --artifacts-dir "$artifacts" --kubelet-version v1.20.2 2>/dev/null | tail -n 1
