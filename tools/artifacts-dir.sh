#!/usr/bin/env bash
# Assembles (once) a kprov artifact directory from real files and prints its
# path: kubelet and kubectl from tools/build-kubernetes.sh, and the CNI
# plugins from Debian's containernetworking-plugins packed the way the
# upstream release tarball is (./bridge, ./host-local, ... at the top).
#
# Usage: tools/artifacts-dir.sh
# Env:   KPROV_DEV_CACHE (default /var/cache/kprov-dev)
set -euo pipefail

cache=${KPROV_DEV_CACHE:-/var/cache/kprov-dev}
here=$(cd "$(dirname "$0")" && pwd)
k8s_bin=$("$here/build-kubernetes.sh")
version=v1.20.2
out="$cache/artifacts/$version-amd64"

if [[ -f "$out/SHA256SUMS" ]]; then
    echo "$out"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dir" "$work/deb"
cp "$k8s_bin/kubelet" "$k8s_bin/kubectl" "$work/dir/"
(cd "$work/deb" && apt-get download -q containernetworking-plugins >&2)
dpkg-deb -x "$work"/deb/containernetworking-plugins_*.deb "$work/deb/x"
tar -C "$work/deb/x/usr/lib/cni" --owner=0 --group=0 -czf "$work/dir/cni-plugins.tgz" .
(cd "$work/dir" && sha256sum kubelet kubectl cni-plugins.tgz > SHA256SUMS)
mkdir -p "$(dirname "$out")"
rm -rf "$out"
mv "$work/dir" "$out"
chmod 755 "$out"
echo "$out"
