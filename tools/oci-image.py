#!/usr/bin/env python3
"""Writes a single-platform OCI image archive (a tar holding oci-layout,
index.json and blobs/sha256/...) from directories and tarballs, without
docker. Used by tools/build-images.sh.

Each --layer is a directory (packed as root-owned files, mtime 0) or an
existing .tar; layers are gzipped deterministically, so the same inputs give
the same digests. index.json names the image twice: with containerd's
`io.containerd.image.name` (the full reference `ctr images import` keeps)
and OCI's `org.opencontainers.image.ref.name` (the tag).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack_dir(src, out_tar):
    """A tar of src's contents, owned by root, mtime 0, sorted."""
    def reset(info):
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tarfile.open(out_tar, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, src)
            if rel != ".":
                tar.add(dirpath, arcname=rel, recursive=False, filter=reset)
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                arc = name if rel == "." else os.path.join(rel, name)
                tar.add(full, arcname=arc, recursive=False, filter=reset)


def add_blob(blobs, data_path=None, data=None):
    """Moves (or writes) a blob into blobs/sha256; returns (digest, size)."""
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)
    digest = sha256_file(data_path)
    size = os.path.getsize(data_path)
    shutil.move(data_path, os.path.join(blobs, digest))
    return "sha256:" + digest, size


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ref", required=True, help="full reference, e.g. k8s.gcr.io/pause:3.2")
    p.add_argument("--out", required=True, help="the archive to write")
    p.add_argument("--layer", action="append", default=[], help="directory or .tar, bottom first")
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--arch", default="amd64")
    a = p.parse_args()
    if ":" not in a.ref.rsplit("/", 1)[-1]:
        sys.exit(f"oci-image: --ref {a.ref!r} has no tag")
    tag = a.ref.rsplit(":", 1)[1]

    work = tempfile.mkdtemp(prefix="oci-image-", dir=os.path.dirname(os.path.abspath(a.out)))
    try:
        blobs = os.path.join(work, "blobs", "sha256")
        os.makedirs(blobs)
        layers, diff_ids = [], []
        for src in a.layer:
            raw = os.path.join(work, "layer.tar")
            if os.path.isdir(src):
                pack_dir(src, raw)
            else:
                shutil.copyfile(src, raw)
            diff_ids.append("sha256:" + sha256_file(raw))
            gz = os.path.join(work, "layer.tar.gz")
            with open(raw, "rb") as fin, open(gz, "wb") as fout:
                with gzip.GzipFile(fileobj=fout, mode="wb", mtime=0, compresslevel=6) as z:
                    shutil.copyfileobj(fin, z, 1 << 20)
            os.unlink(raw)
            digest, size = add_blob(blobs, data_path=gz)
            layers.append({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest,
                "size": size,
            })
        config = {
            "created": "1970-01-01T00:00:00Z",
            "architecture": a.arch,
            "os": "linux",
            "config": {
                "Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        if a.entrypoint:
            config["config"]["Entrypoint"] = a.entrypoint
        if a.cmd:
            config["config"]["Cmd"] = a.cmd
        cdigest, csize = add_blob(blobs, data=json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": cdigest,
                "size": csize,
            },
            "layers": layers,
        }
        mdigest, msize = add_blob(blobs, data=json.dumps(manifest, sort_keys=True).encode())
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": mdigest,
                "size": msize,
                "platform": {"architecture": a.arch, "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": a.ref,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }
        with open(os.path.join(work, "index.json"), "w") as f:
            json.dump(index, f, sort_keys=True)
        with open(os.path.join(work, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        tmp_out = a.out + ".partial"
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:
            def reset(info):
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                return info
            for name in ["oci-layout", "index.json"]:
                tar.add(os.path.join(work, name), arcname=name, filter=reset)
            tar.add(os.path.join(work, "blobs"), arcname="blobs", recursive=False, filter=reset)
            tar.add(blobs, arcname="blobs/sha256", recursive=False, filter=reset)
            for name in sorted(os.listdir(blobs)):
                tar.add(os.path.join(blobs, name), arcname="blobs/sha256/" + name, filter=reset)
        os.replace(tmp_out, a.out)
        print(f"{a.out} {a.ref} {mdigest}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
