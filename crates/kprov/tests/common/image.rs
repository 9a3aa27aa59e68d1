//! `kprov image build` as the disk image tests run it, and the manifest it
//! writes beside the image.

use std::path::Path;

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
