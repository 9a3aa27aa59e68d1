#!/usr/bin/env bash
# kprov's main job, end to end on an embedded default: build a Debian 12
# root from Debian packages, prebake it into a Kubernetes node with
# `kprov provision --phase base --root`, and show what was done and the
# node's resulting state and that a second run changes nothing; then a
# cluster made by `kprov cluster up` on the nspawn target: one master and
# one worker, systemd-nspawn machines booted from a node image (the same
# Debian root prebaked from a control-plane bundle, tools/node-image.sh),
# until `kubectl get nodes` shows both Ready and every exit criterion is
# checked; then `kprov cluster down`. Installs what it needs
# (idempotently) first.
#
# Env: KPROV_DEMO_DIR (default /var/tmp/kprov-demo)
#      KPROV_DEMO_NO_CLUSTER=1 stops before the cluster
#      KPROV_DEMO_NETNS=NAME puts the cluster's bridge in the existing
#      network namespace NAME (`ip netns add NAME`) instead of the host's
#      (`kprov cluster up --netns`); kubectl then runs in it too
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $EUID -ne 0 ]]; then
    echo "tools/demo.sh: run as root: it builds a root filesystem and chroots into it" >&2
    exit 2
fi
if [[ -n ${KPROV_DEMO_NETNS:-} && ${KPROV_DEMO_NO_CLUSTER:-} != 1 && ! -e /run/netns/$KPROV_DEMO_NETNS ]]; then
    echo "tools/demo.sh: KPROV_DEMO_NETNS=$KPROV_DEMO_NETNS: no such network namespace (make it with \`ip netns add $KPROV_DEMO_NETNS\`)" >&2
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

say "the node image for a cluster: the same root prebaked from a control-plane bundle (cached by content)"
tools/install-deps.sh cluster images
cargo build --release --locked -p kprov-cluster --example nspawn
image=$(tools/node-image.sh "$kprov" "${kprov%/kprov}/examples/nspawn")
echo "$image"

name=demo
cluster=(--name "$name")
kubectl=("$artifacts/kubectl")
netns=${KPROV_DEMO_NETNS:-}
if [[ -n $netns ]]; then
    cluster+=(--netns "$netns")
    kubectl=(ip netns exec "$netns" "$artifacts/kubectl")
fi
kubeconfig=$demo/kubeconfig
cluster+=(--kubeconfig "$kubeconfig")
# Whatever happens from here, the cluster goes at the end.
down_on_exit() {
    echo "demo: taking cluster $name down" >&2
    "$kprov" cluster down "${cluster[@]}" >&2 || true
}
trap down_on_exit EXIT

say "kprov cluster up ${cluster[*]} --masters 1 --workers 1 --image $image"
cluster_started=$SECONDS
# Every wait inside is bounded (--timeout per boot, init, join and
# Ready; the whole at most 30 minutes).
timeout 1800 "$kprov" cluster up "${cluster[@]}" --masters 1 --workers 1 --image "$image" --timeout 600
cluster_up=$((SECONDS - cluster_started))

say "kubectl get nodes"
"${kubectl[@]}" --kubeconfig "$kubeconfig" --request-timeout=30s get nodes -o wide

say "kprov cluster down ${cluster[*]}"
trap - EXIT
"$kprov" cluster down "${cluster[@]}"

say "done in $SECONDS s (kprov cluster up: $cluster_up s)"
