//! The manifest beside a disk image (`node.img.zst.json`): the compressed
//! image's file name, and the size and sha256 of both the raw image (what
//! lands on the disk) and the compressed one (what travels).

use serde::{Deserialize, Serialize};

/// A disk image's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    /// The compressed image's file name, in the manifest's directory.
    pub image: String,
    /// The raw image.
    pub raw: Blob,
    /// The zstd-compressed image.
    pub compressed: Blob,
    /// Where in the raw image the NoCloud `meta-data` slot is, which
    /// stage2 fills with the machine's seed ([`crate::nocloud`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSlot>,
}

/// A byte range of the raw image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedSlot {
    /// From the image's start; past the first MiB, which stage2 writes last.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

/// A size and a sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// Bytes.
    pub size: u64,
    /// Lowercase hexadecimal sha256.
    pub sha256: String,
}

/// Why a manifest is unusable: the field and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Not the JSON document expected.
    #[error("not an image manifest: {0}")]
    Syntax(String),
    /// A field holds something else than expected.
    #[error("{field}: {found:?} is not {expected}")]
    Field {
        /// The field.
        field: &'static str,
        /// What it holds.
        found: String,
        /// What it must be.
        expected: &'static str,
    },
}

impl ImageManifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let manifest: Self =
            serde_json::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        let name = &manifest.image;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(ManifestError::Field {
                field: "image",
                found: name.clone(),
                expected: "a file name beside the manifest",
            });
        }
        for (field, blob) in [
            ("raw.sha256", &manifest.raw),
            ("compressed.sha256", &manifest.compressed),
        ] {
            if blob.sha256.len() != 64
                || !blob
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(ManifestError::Field {
                    field,
                    found: blob.sha256.clone(),
                    expected: "64 lowercase hexadecimal digits",
                });
            }
        }
        for (field, blob) in [
            ("raw.size", &manifest.raw),
            ("compressed.size", &manifest.compressed),
        ] {
            if blob.size == 0 {
                return Err(ManifestError::Field {
                    field,
                    found: "0".into(),
                    expected: "a size above zero",
                });
            }
        }
        if let Some(slot) = manifest.seed {
            if slot.offset < 1 << 20
                || slot.size == 0
                || slot.offset.saturating_add(slot.size) > manifest.raw.size
            {
                return Err(ManifestError::Field {
                    field: "seed",
                    found: format!("offset {}, size {}", slot.offset, slot.size),
                    expected: "a range of the raw image past its first MiB",
                });
            }
        }
        Ok(manifest)
    }

    /// The image's URL: the manifest's, with its last segment replaced.
    pub fn image_url(&self, manifest_url: &str) -> String {
        let base = manifest_url
            .split(['?', '#'])
            .next()
            .unwrap_or(manifest_url);
        match base.rfind('/') {
            Some(slash) => format!("{}{}", &base[..=slash], self.image),
            None => self.image.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(image: &str, raw_sum: &str, size: u64) -> String {
        format!(
            r#"{{"image":"{image}","raw":{{"size":{size},"sha256":"{raw_sum}"}},"compressed":{{"size":10,"sha256":"{}"}}}}"#,
            "b".repeat(64)
        )
    }

    #[test]
    fn a_manifest_names_its_image_beside_itself() {
        let m = ImageManifest::parse(&text("node.img.zst", &"a".repeat(64), 4096)).unwrap();
        assert_eq!(m.raw.size, 4096);
        assert_eq!(
            m.image_url("http://10.0.0.1:8080/images/node.img.zst.json"),
            "http://10.0.0.1:8080/images/node.img.zst"
        );
        assert_eq!(
            m.image_url("http://10.0.0.1/m.json?token=x"),
            "http://10.0.0.1/node.img.zst"
        );
    }

    #[test]
    fn bad_manifests_name_the_field_and_what_was_expected() {
        let sum = "a".repeat(64);
        let e = ImageManifest::parse(&text("../etc/passwd", &sum, 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "image: \"../etc/passwd\" is not a file name beside the manifest"
        );
        let e = ImageManifest::parse(&text("i", "ABC", 1)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("raw.sha256: \"ABC\" is not 64 lowercase"),
            "{e}"
        );
        let e = ImageManifest::parse(&text("i", &sum, 0)).unwrap_err();
        assert_eq!(e.to_string(), "raw.size: \"0\" is not a size above zero");
        let with_seed = |offset: u64| {
            text("i", &sum, 4 << 20).replace(
                r#""compressed""#,
                &format!(r#""seed":{{"offset":{offset},"size":4096}},"compressed""#),
            )
        };
        let m = ImageManifest::parse(&with_seed(2 << 20)).unwrap();
        assert_eq!(
            m.seed,
            Some(SeedSlot {
                offset: 2 << 20,
                size: 4096
            })
        );
        for offset in [4096, 4 << 20] {
            let e = ImageManifest::parse(&with_seed(offset)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("seed: \"offset {offset}, size 4096\" is not a range of the raw image past its first MiB")
            );
        }
        let e = ImageManifest::parse("{\"image\": 1}").unwrap_err();
        assert!(matches!(e, ManifestError::Syntax(_)), "{e}");
    }
}
