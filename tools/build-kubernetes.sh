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

# Bumped whenever the build changes, so that caches rebuild.
revision="reflect2-1.0.2-r3"

here=$(cd "$(dirname "$0")" && pwd)

# tools/build-images.sh builds the pause image from this file of the same
# source; it is kept beside the binaries because the source tree is not.
pause_source=src/pause.c
work="$cache/kubernetes/src-$version"

# Unpacks Debian's kubernetes source package into $work (once) and enters
# its tree.
enter_source() {
    mkdir -p "$work"
    cd "$work"
    if ! compgen -G "kubernetes-*/" >/dev/null; then
        log "fetching Debian's kubernetes source package"
        # apt-get source needs deb-src entries mirroring the deb ones.
        local sources=/etc/apt/sources.list.d/debian.sources
        if [[ -f $sources ]] && ! grep -q '^Types:.*deb-src' "$sources"; then
            sed -i 's/^Types: deb$/Types: deb deb-src/' "$sources"
            apt-get update -qq >&2 || true
        fi
        apt-get source --download-only kubernetes >&2
        local dscs=(kubernetes_*.dsc)
        dpkg-source --no-check -x "${dscs[0]}" >&2
    fi
    local trees=(kubernetes-*/)
    cd "${trees[0]}"
}

# The source tree and Go's build cache in it (about 3 GB) are only needed
# to build again, which a new revision does from scratch anyway.
drop_source() {
    cd /
    rm -rf "$work"
}

if [[ -f "$out/.complete" && "$(cat "$out/.complete")" == "$revision" ]]; then
    # Caches made before pause.c was kept: take it from the source again.
    if [[ ! -f $out/$pause_source ]]; then
        log "keeping pause.c from the source package"
        "$here/install-deps.sh" build >&2
        enter_source
        mkdir -p "$out/src"
        cp build/pause/linux/pause.c "$out/$pause_source"
        drop_source
    fi
    echo "$out/bin"
    exit 0
fi

"$here/install-deps.sh" build >&2
enter_source
# The vendored modern-go/reflect2 v1.0.1 walks Go maps through runtime
# internals that changed in Go 1.18: built with Go 1.19, the API server
# dies with "fatal error: fault" in mapiternext when it encodes a map
# (a ConfigMap) to JSON. v1.0.2, from Debian's package, is the fix.
if [[ "$(cat .kprov-patched 2>/dev/null)" != "$revision" ]]; then
    log "replacing vendored reflect2 v1.0.1 with Debian's v1.0.2"
    vendored=vendor/github.com/modern-go/reflect2
    rm -rf "$vendored"
    mkdir -p "$vendored"
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2/. "$vendored/"
    rm -rf "$vendored"/test* "$vendored"/*_test.go
    sed -i 's|github.com/modern-go/reflect2 v1.0.1|github.com/modern-go/reflect2 v1.0.2|g' go.mod vendor/modules.txt
    rm -rf _output/bin _output/local/bin _output/local/go/bin
    echo "$revision" > .kprov-patched
fi
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes

export GOPATH=$PWD/.go CGO_ENABLED=0 PATH=/usr/lib/go-1.19/bin:$PATH
export GOFLAGS=-mod=vendor GO111MODULE=on
# Stamp the version the binaries report, as upstream release builds do.
export KUBE_GIT_VERSION=$version KUBE_GIT_TREE_STATE=clean
for t in "${targets[@]}"; do
    if [[ -x _output/bin/$t ]]; then continue; fi
    log "building $t"
    make "WHAT=cmd/$t" >&2
done

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
for t in "${targets[@]}"; do cp "_output/bin/$t" "$tmp/bin/"; done
(cd "$tmp/bin" && sha256sum -- * > ../SHA256SUMS)
mkdir -p "$tmp/src"
cp build/pause/linux/pause.c "$tmp/$pause_source"
echo "$revision" > "$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
drop_source
log "done: $out/bin"
echo "$out/bin"
