#!/usr/bin/env bash
# kprov's main job, end to end on an embedded default: build a Debian 12
# root from Debian packages, prebake it into a Kubernetes node with
# `kprov provision --phase base --root`, and show what was done and the
# node's resulting state; then a cluster of two VMs (qemu, TCG): a master
# bootstrapped by `kprov init` and a worker joined by the user-data
# `kprov userdata` renders, until `kubectl get nodes` shows both Ready.
# Installs what it needs (idempotently) first.
#
# Env: KPROV_DEMO_DIR (default /var/tmp/kprov-demo)
#      KPROV_DEMO_NO_CLUSTER=1 stops before the cluster (which takes about
#      25 minutes under TCG, with kubeadm init measured beside it)
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
# The static binary (.cargo/config.toml names the target).
kprov=${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/kprov

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
plugins=("$root"/opt/cni/bin/*)
printf 'CNI plugins: %s\n' "${plugins[*]##*/}"
printf 'units:       kubelet %s, containerd %s, kprov-healthcheck.timer %s\n' \
    "$(in_root systemctl is-enabled kubelet)" "$(in_root systemctl is-enabled containerd)" \
    "$(in_root systemctl is-enabled kprov-healthcheck.timer)"
printf 'swap:        %s\n' "$(grep swap "$root/etc/fstab" || echo 'no swap entries')"
printf 'sysctls:     %s\n' "$(grep -v '^#' "$root/etc/sysctl.d/90-kprov-kubernetes.conf" | tr '\n' ';')"
printf 'modules:     %s\n' "$(grep -v '^#' "$root/etc/modules-load.d/kprov-kubernetes.conf" | tr '\n' ' ')"
printf 'cri config:  %s\n' "$(in_root containerd --config /etc/containerd/config.toml config dump | grep -E 'SystemdCgroup|sandbox_image' | tr -s ' ' | tr '\n' ';')"

say "a second run changes nothing"
"$kprov" provision --phase base --root "$root" --artifacts-dir "$artifacts" --kubelet-version v1.20.2 2>/dev/null | tail -n 1

[[ ${KPROV_DEMO_NO_CLUSTER:-} == 1 ]] && exit 0

say "a cluster: kprov init in a master VM, a worker VM joined by kprov userdata (qemu, TCG; about 25 minutes)"
# The VM test is the demo: it builds both disk images (prebaked from
# bundles), boots the master, waits for `kprov init`, boots the worker
# with its NoCloud user-data, prints `kubectl get nodes` once both are
# Ready, then measures kubeadm init on a copy of the master's image.
tools/install-deps.sh test vm images
tools/build-kubernetes.sh >/dev/null
tools/build-images.sh >/dev/null
tools/debian-root.sh vm >/dev/null
tools/debian-root.sh cloud >/dev/null
KPROV_BENCH_BIN=$kprov cargo test --locked -p kprov --test init_vm -- --ignored --nocapture 2>&1 |
    grep -E -A4 '^kubectl get nodes|^BENCH|^test result|panicked'
