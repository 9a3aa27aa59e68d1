#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests and the demo use, from Debian's
# `kubernetes` source package (v1.20.2 in bookworm), and caches them by
# version outside the work tree so that later runs on this machine reuse them.
#
# Usage: tools/build-kubernetes.sh        # prints the cache's bin directory
# Env:   KPROV_DEV_CACHE (default /var/cache/kprov-dev)
set -euo pipefail

version=v1.20.2
cache=${KPROV_DEV_CACHE:-/var/cache/kprov-dev}
out="$cache/kubernetes/$version"
targets=(kubelet kubeadm kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)

log() { printf 'build-kubernetes: %s\n' "$*" >&2; }

if [[ -f "$out/.complete" ]]; then
    echo "$out/bin"
    exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
"$here/install-deps.sh" build >&2

work="$cache/kubernetes/src-$version"
mkdir -p "$work"
cd "$work"
if ! compgen -G "kubernetes-*/" >/dev/null; then
    log "fetching Debian's kubernetes source package"
    # apt-get source needs deb-src entries mirroring the deb ones.
    src=/etc/apt/sources.list.d/debian.sources
    if [[ -f $src ]] && ! grep -q '^Types:.*deb-src' "$src"; then
        sed -i 's/^Types: deb$/Types: deb deb-src/' "$src"
        apt-get update -qq >&2 || true
    fi
    apt-get source --download-only kubernetes >&2
    dsc=$(ls kubernetes_*.dsc | head -n1)
    dpkg-source --no-check -x "$dsc" >&2
fi
tree=$(ls -d kubernetes-*/ | head -n1)
cd "$tree"
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes

export GOPATH=$PWD/.go CGO_ENABLED=0 PATH=/usr/lib/go-1.19/bin:$PATH
export GOFLAGS=-mod=vendor GO111MODULE=on
# Stamp the version the binaries report, as upstream release builds do.
export KUBE_GIT_VERSION=$version KUBE_GIT_TREE_STATE=clean
for t in "${targets[@]}"; do
    if [[ -x _output/bin/$t ]]; then continue; fi
    log "building $t"
    make WHAT=cmd/$t >&2
done

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
for t in "${targets[@]}"; do cp "_output/bin/$t" "$tmp/bin/"; done
(cd "$tmp/bin" && sha256sum * > ../SHA256SUMS)
touch "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
log "done: $out/bin"
echo "$out/bin"
