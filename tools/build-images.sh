#!/usr/bin/env bash
# Builds, without docker, the container images a v1.20.2 control-plane node
# runs, as OCI image archives from real binaries, and caches them by version
# so that later runs on this machine reuse them:
#
#   pause_3.2.tar                        k8s.gcr.io/pause:3.2 (gcc -Os -static of the
#                                        Kubernetes tree's build/pause/linux/pause.c)
#   kube-apiserver_v1.20.2.tar           k8s.gcr.io/kube-apiserver:v1.20.2
#   kube-controller-manager_v1.20.2.tar  k8s.gcr.io/kube-controller-manager:v1.20.2
#   kube-scheduler_v1.20.2.tar           k8s.gcr.io/kube-scheduler:v1.20.2
#   kube-proxy_v1.20.2.tar               k8s.gcr.io/kube-proxy:v1.20.2 (plus a Debian
#                                        layer with iptables and conntrack)
#   etcd_3.4.13-0.tar                    k8s.gcr.io/etcd:3.4.13-0 (Debian's etcd-server
#                                        and etcd-client, with the libraries they link)
#   busybox_1.35.0.tar                   docker.io/library/busybox:1.35.0 (busybox-static)
#
# The Kubernetes binaries come from tools/build-kubernetes.sh. CoreDNS has no
# Debian package and is not built. Each archive's index.json names the image
# (io.containerd.image.name), so `ctr -n k8s.io images import --all-platforms
# FILE` keeps the full reference; INDEX lists "FILE REFERENCE" per line.
#
# Usage: tools/build-images.sh        # prints the cache directory
# Env:   KPROV_DEV_CACHE (default /var/cache/kprov-dev)
set -euo pipefail

version=v1.20.2
cache=${KPROV_DEV_CACHE:-/var/cache/kprov-dev}
out="$cache/images/$version"
# Bump when what goes into the images changes, so stale caches are rebuilt.
revision=2

log() { printf 'build-images: %s\n' "$*" >&2; }

here=$(cd "$(dirname "$0")" && pwd)
bin=$("$here/build-kubernetes.sh")
# The images hold the Kubernetes binaries: a rebuild of those (another
# build revision) must rebuild the images too.
stamp="r$revision $(sha256sum <"$bin/../SHA256SUMS" | cut -c1-16)"
if [[ -f "$out/.complete" && "$(cat "$out/.complete")" == "$stamp" ]]; then
    echo "$out"
    exit 0
fi

"$here/install-deps.sh" root images >&2
pause_c="$bin/../src/pause.c"
[[ -f $pause_c ]] || { log "no $pause_c: tools/build-kubernetes.sh keeps it beside the binaries"; exit 1; }

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp/work"
work="$tmp/work"
image() { # FILE REF ARGS...
    local file=$1 ref=$2
    shift 2
    log "writing $ref"
    python3 "$here/oci-image.py" --ref "$ref" --out "$tmp/$file" "$@" >&2
    echo "$file $ref" >>"$tmp/INDEX"
}

# pause: the same program upstream's image runs, linked statically.
mkdir -p "$work/pause"
gcc -Os -static -o "$work/pause/pause" "$pause_c"
strip "$work/pause/pause"
image pause_3.2.tar k8s.gcr.io/pause:3.2 --layer "$work/pause" --entrypoint /pause

# The control-plane components: static Go binaries in /usr/local/bin.
for c in kube-apiserver kube-controller-manager kube-scheduler; do
    mkdir -p "$work/$c/usr/local/bin"
    cp "$bin/$c" "$work/$c/usr/local/bin/"
    image "${c}_$version.tar" "k8s.gcr.io/$c:$version" --layer "$work/$c" \
        --entrypoint "/usr/local/bin/$c"
done

# kube-proxy programs iptables rules: a minimal Debian layer under it.
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
log "building the Debian layer for kube-proxy (iptables, conntrack)"
mmdebstrap --variant=essential --include=iptables,conntrack \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$work/debian.tar" "$mirror" >&2
mkdir -p "$work/kube-proxy/usr/local/bin"
cp "$bin/kube-proxy" "$work/kube-proxy/usr/local/bin/"
image "kube-proxy_$version.tar" "k8s.gcr.io/kube-proxy:$version" \
    --layer "$work/debian.tar" --layer "$work/kube-proxy" \
    --entrypoint /usr/local/bin/kube-proxy

# etcd: Debian's build is dynamically linked; copy the libraries it needs.
mkdir -p "$work/etcd/usr/local/bin"
for b in etcd etcdctl; do
    cp "/usr/bin/$b" "$work/etcd/usr/local/bin/"
    # The loader line has no "=>"; [ \t] rather than \s, which mawk lacks.
    ldd "/usr/bin/$b" | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}' | while read -r lib; do
        mkdir -p "$work/etcd$(dirname "$lib")"
        cp -L "$lib" "$work/etcd$lib"
    done
done
mkdir -p "$work/etcd/var/lib/etcd"
image etcd_3.4.13-0.tar k8s.gcr.io/etcd:3.4.13-0 --layer "$work/etcd" \
    --entrypoint /usr/local/bin/etcd

# busybox: one static binary and its applet links.
mkdir -p "$work/busybox/bin"
cp /bin/busybox "$work/busybox/bin/busybox"
for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$work/busybox/bin/$applet"
done
image busybox_1.35.0.tar docker.io/library/busybox:1.35.0 --layer "$work/busybox" --cmd sh

rm -rf "$work"
(cd "$tmp" && sha256sum ./*.tar >SHA256SUMS)
echo "$stamp" >"$tmp/.complete"
rm -rf "$out"
mv "$tmp" "$out"
log "done: $out"
echo "$out"
