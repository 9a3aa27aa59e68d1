//! `kprov image build` as the disk image tests run it, the manifest it
//! writes beside the image, and images made up for stage2 to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Runs `kprov image build --root ROOT --output OUTPUT EXTRA...`.
pub fn build(root: &Path, output: &Path, extra: &[&str]) -> super::Run {
    let root = root.display().to_string();
    let output = output.display().to_string();
    let mut args = vec!["image", "build", "--root", &root, "--output", &output];
    args.extend_from_slice(extra);
    super::kprov(&args, &[])
}

/// The manifest written beside `output` (`OUTPUT.json`).
pub fn manifest(output: &Path) -> serde_json::Value {
    let path = format!("{}.json", output.display());
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The root filesystem (the GPT's second partition) of the raw disk
/// image `raw`, copied out to `dir/root.ext4` for debugfs.
pub fn root_filesystem(raw: &Path, dir: &Path) -> PathBuf {
    let table = super::sh(Command::new("sfdisk").arg("--json").arg(raw));
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    let start = table["partitiontable"]["partitions"][1]["start"]
        .as_u64()
        .unwrap_or_else(|| panic!("no second partition in {table}"));
    let ext4 = dir.join("root.ext4");
    super::sh(
        Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", ext4.display()))
            .args(["bs=1M", "status=none", "conv=sparse"])
            .arg(format!("skip={}", (start * 512) >> 20)),
    );
    ext4
}

/// Writes `raw` zstd-compressed as `node.img.zst` (one frame with a
/// content checksum, as `kprov image build` writes it) with its manifest
/// into `site`; returns the compressed size.
pub fn publish(site: &Path, raw: &[u8]) -> usize {
    use std::io::Write;
    let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.write_all(raw).unwrap();
    let compressed = encoder.finish().unwrap();
    let sha = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
    std::fs::write(site.join("node.img.zst"), &compressed).unwrap();
    std::fs::write(
        site.join("node.img.zst.json"),
        format!(
            r#"{{"image":"node.img.zst","raw":{{"size":{},"sha256":"{}"}},"compressed":{{"size":{},"sha256":"{}"}}}}"#,
            raw.len(),
            sha(raw),
            compressed.len(),
            sha(&compressed)
        ),
    )
    .unwrap();
    compressed.len()
}

/// A raw image of `len` bytes like a node's, for benchmarks: stretches of
/// 1 MiB of text-like bytes (they compress), of noise (they do not) and
/// of zeros (free space).
pub fn node_like(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|i| match (i >> 20) % 4 {
            0 => b"kubelet containerd etcd apiserver "[i % 34],
            1 => {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            }
            _ => 0,
        })
        .collect()
}

/// Prints the benchmark figure of stage2 against `curl | zstd -d | dd`
/// writing the same `raw_bytes` image (`compressed_bytes` compressed)
/// `setting` (where from, onto what), from each one's best time.
pub fn bench_against_curl_zstd_dd(
    setting: &str,
    raw_bytes: usize,
    compressed_bytes: usize,
    stage2_seconds: f64,
    peer_seconds: f64,
) {
    let mib = |bytes: usize| bytes as f64 / f64::from(1u32 << 20);
    let raw = mib(raw_bytes);
    super::bench(&format!(
        "stage2 write of a {raw:.0} MiB image ({:.0} MiB compressed) {setting}: kprov stage2 {:.1} MiB/s (compressed sha256 and zstd's checksum verified, first MiB last, fsync), curl | zstd -d | dd {:.1} MiB/s (conv=fsync); ratio {:.2} (goal >= 0.95)",
        mib(compressed_bytes),
        raw / stage2_seconds,
        raw / peer_seconds,
        peer_seconds / stage2_seconds
    ));
}
