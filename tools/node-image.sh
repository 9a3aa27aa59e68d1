#!/usr/bin/env bash
# Builds (once per content) and caches the node image that
# `kprov cluster up --image DIR` takes, the way the nspawn tests make theirs
# (crates/kprov/tests/cluster_nspawn.rs), and prints its directory:
#
#  1. a control-plane bundle: `kprov bundle create --control-plane` from a
#     loopback mirror of the v1.20.2 build (kubelet, kubectl, kubeadm and
#     the CNI plugins, tools/artifacts-dir.sh) and a loopback registry
#     (Debian's docker-registry, filled with skopeo) holding the images of
#     tools/build-images.sh; busybox rides along for workloads, CoreDNS is
#     left out (Debian has no CoreDNS to build it from);
#  2. the Debian 12 root of tools/debian-root.sh, prebaked with
#     `kprov provision --phase base --root DIR --bundle BUNDLE
#     --kubelet-version v1.20.2 --node-in-container`;
#  3. the bundle's images imported into the image's own containerd store by
#     one throwaway nspawn boot (the nspawn example's `warm`), so machines
#     start with them instead of importing them each at first boot.
#
# The mirror, the registry and the throwaway machine live in a network
# namespace of this script's own, deleted at the end: nothing listens on
# the host, and nothing is left but the image.
#
# Usage: tools/node-image.sh KPROV NSPAWN_EXAMPLE
#        (the release kprov, and target/.../release/examples/nspawn)
# Env:   KPROV_DEV_CACHE (default /var/cache/kprov-dev)
#        KPROV_MACHINES_DIR (default /var/lib/kprov/machines): older images
#        that a machine there still names are kept
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: tools/node-image.sh KPROV NSPAWN_EXAMPLE" >&2
    exit 2
fi
kprov=$(realpath "$1")
nspawn=$(realpath "$2")
cache=${KPROV_DEV_CACHE:-/var/cache/kprov-dev}
machines=${KPROV_MACHINES_DIR:-/var/lib/kprov/machines}
version=v1.20.2
busybox=docker.io/library/busybox:1.35.0
coredns=k8s.gcr.io/coredns:1.7.0
# Bump when how the image is made changes, so stale caches are rebuilt.
revision=1

log() { printf 'node-image: %s\n' "$*" >&2; }
here=$(cd "$(dirname "$0")" && pwd)
tarball=$("$here/debian-root.sh" node)
k8s_bin=$("$here/build-kubernetes.sh")
artifacts=$("$here/artifacts-dir.sh")
images=$("$here/build-images.sh")

# The key: every input's content, and kprov itself (it does the prebake).
key=$({
    echo "kprov nspawn node image r$revision: base --node-in-container, control-plane bundle + busybox, containerd warmed"
    sha256sum <"$tarball"
    cat "$images/SHA256SUMS" "$k8s_bin/../SHA256SUMS" "$artifacts/SHA256SUMS"
    sha256sum <"$kprov"
} | sha256sum | cut -c1-32)
dir=$cache/node-images
out=$dir/$key
if [[ -d $out ]]; then
    echo "$out"
    exit 0
fi

"$here/install-deps.sh" cluster images >&2
mkdir -p "$dir"
work=$(mktemp -d "$dir/.work-XXXXXX")
ns=kprov-node-image-$$
registry_pid=
mirror_pid=
cleanup() {
    local pid m
    for pid in $registry_pid $mirror_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # A failed warm leaves its machine: destroy it before the namespace goes.
    for m in "$work"/machines/*/; do
        if [[ -d $m ]]; then
            KPROV_MACHINES=$work/machines KPROV_NETNS=/run/netns/$ns \
                "$nspawn" destroy "$(basename "$m")" >&2 || true
        fi
    done
    # Whatever else still runs in this script's own namespace, by PID.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill "$pid" 2>/dev/null || true
    done
    ip netns delete "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }
# quiet NAME PATTERN COMMAND...: runs a step with its output in
# $work/NAME.log; on success only its last line matching PATTERN is shown
# (kprov's summary), on failure all of it.
quiet() {
    local log=$work/$1.log pattern=$2
    shift 2
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        log "failed: $*"
        return 1
    fi
    grep -E -e "$pattern" "$log" | tail -n 1 >&2 || true
}
# Waits (at most 15 s) until something listens on 127.0.0.1:$1 in the namespace.
wait_port() {
    local i
    for ((i = 0; i < 150; i++)); do
        in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
        sleep 0.1
    done
    log "nothing listens on 127.0.0.1:$1 after 15 s"
    return 1
}

started=$SECONDS
log "a mirror of the $version build and a registry of its images (in namespace $ns)"
release=$work/mirror/release/$version/bin/linux/amd64
mkdir -p "$release"
for b in kubelet kubectl kubeadm; do
    cp "$k8s_bin/$b" "$release/"
    sha256sum <"$release/$b" | cut -d' ' -f1 >"$release/$b.sha256"
done
# The catalog names the CNI plugins v0.8.7 for v1.20; Debian's plugins stand in.
cni=$work/mirror/containernetworking/plugins/releases/download/v0.8.7
mkdir -p "$cni"
cp "$artifacts/cni-plugins.tgz" "$cni/cni-plugins-linux-amd64-v0.8.7.tgz"
(cd "$cni" && sha256sum cni-plugins-linux-amd64-v0.8.7.tgz >cni-plugins-linux-amd64-v0.8.7.tgz.sha256)
# Started by `ip netns exec` directly (it execs the program): $! is the
# server's own PID, for the cleanup.
ip netns exec "$ns" python3 -m http.server --bind 127.0.0.1 --directory "$work/mirror" 8080 \
    >/dev/null 2>"$work/mirror.log" &
mirror_pid=$!
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry/storage
http:
  addr: 127.0.0.1:5000
EOF
ip netns exec "$ns" docker-registry serve "$work/registry/config.yml" >/dev/null 2>"$work/registry.log" &
registry_pid=$!
wait_port 8080
wait_port 5000
while read -r file ref; do
    in_ns skopeo copy -q --dest-tls-verify=false "oci-archive:$images/$file" \
        "docker://127.0.0.1:5000/${ref#*/}" >&2
done <"$images/INDEX"

log "kprov bundle create --control-plane (without $coredns, with $busybox)"
quiet bundle "^bundle " in_ns "$kprov" bundle create --kubernetes-version "$version" --arch amd64 \
    --mirror http://127.0.0.1:8080 --registry-mirror 127.0.0.1:5000 --insecure-registry \
    --control-plane --exclude-image "$coredns" --image "$busybox" \
    --output "$work/bundle" --cache-dir "$work/cache"

log "kprov provision --phase base --root (the Debian 12 root, --node-in-container)"
root=$work/root
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
quiet provision ' resources: ' "$kprov" provision --phase base --root "$root" --bundle "$work/bundle" \
    --kubelet-version "$version" --arch amd64 --node-in-container

log "importing the bundle's images into the image's containerd store (one nspawn boot)"
export KPROV_MACHINES=$work/machines KPROV_NETNS=/run/netns/$ns
quiet prepare . "$nspawn" prepare
warm_started=$SECONDS
quiet warm . "$nspawn" warm "$root" 10.86.1.1/24 300
log "imported in $((SECONDS - warm_started)) s: $(du -sh "$root/var/lib/containerd" | cut -f1) in /var/lib/containerd"

mv "$root" "$out"
log "made $out in $((SECONDS - started)) s"
# Older images (other kprov builds or inputs) are not used again, unless
# a machine still stands on one.
for old in "$dir"/*/; do
    old=${old%/}
    [[ $old == "$out" ]] && continue
    if grep -qsF "\"$old\"" "$machines"/*/machine.json; then
        log "keeping $old: a machine in $machines uses it"
        continue
    fi
    rm -rf "$old"
done
echo "$out"
