//! The image's own NoCloud source. Its boot partition is labelled
//! `CIDATA` and holds `meta-data` and `user-data`, which cloud-init reads
//! at first boot. `meta-data` is a slot of fixed size: stage2 fills it
//! with the machine's seed URL (`seedfrom:`), and cloud-init then fetches
//! the machine's own user-data from the netboot server. The seed (it
//! carries the machine's token) thus stays on a partition only root can
//! read, never on the kernel command line, which every process can.

/// The boot partition's label, the one cloud-init's NoCloud looks for.
pub const LABEL: &str = "CIDATA";
/// The slot's file name on the boot partition.
pub const META_DATA: &str = "meta-data";
/// The user-data file's name: cloud-init wants both files.
pub const USER_DATA: &str = "user-data";
/// What `user-data` holds until the seed's user-data replaces it.
pub const EMPTY_USER_DATA: &str = "#cloud-config\n{}\n";
/// The slot's size: one page, and room for a long URL.
pub const SLOT_BYTES: usize = 4096;

const UNSEEDED: &str =
    "# kprov: this image is not seeded: stage2 writes the machine's seedfrom here\n{}\n";

/// Why a seed URL cannot go into the slot.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("seed URL {url:?}: {why}")]
pub struct SeedError {
    /// The URL.
    pub url: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The slot as the image carries it: an empty mapping, padded.
pub fn unseeded() -> Vec<u8> {
    padded(UNSEEDED)
}

/// The slot for a machine whose NoCloud documents are at `url` (ending in
/// `/`, as cloud-init appends `meta-data` and `user-data` to it).
pub fn seeded(url: &str) -> Result<Vec<u8>, SeedError> {
    let refuse = |why| SeedError {
        url: url.to_string(),
        why,
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(refuse("expected an http:// or https:// URL"));
    }
    if !url.ends_with('/') {
        return Err(refuse("expected a URL ending in /"));
    }
    // Quoted in YAML below: no quote or backslash can end the string early.
    if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return Err(refuse(
            "expected printable ASCII without spaces, quotes or backslashes",
        ));
    }
    let text = format!("seedfrom: \"{url}\"\n");
    if text.len() + 2 > SLOT_BYTES {
        return Err(refuse("too long for the image's meta-data slot"));
    }
    Ok(padded(&text))
}

/// Where the unseeded slot starts in `filesystem` (the boot partition's
/// bytes): the whole slot, in one piece, exactly once.
pub fn find_slot(filesystem: &[u8]) -> Option<usize> {
    let slot = unseeded();
    let first_line = &slot[..UNSEEDED.find('\n').unwrap_or(0) + 1];
    let mut found = None;
    let mut from = 0;
    while let Some(at) = filesystem[from..]
        .windows(first_line.len())
        .position(|w| w == first_line)
    {
        let start = from + at;
        if filesystem.get(start..start + SLOT_BYTES) == Some(&slot[..]) {
            if found.is_some() {
                return None;
            }
            found = Some(start);
        }
        from = start + 1;
    }
    found
}

/// `text`, then a YAML comment of spaces up to [`SLOT_BYTES`].
fn padded(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(b'#');
    bytes.resize(SLOT_BYTES - 1, b' ');
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_slots_fill_the_page_and_end_in_a_comment() {
        let seed = "http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/";
        for slot in [unseeded(), seeded(seed).unwrap()] {
            assert_eq!(slot.len(), SLOT_BYTES);
            let text = String::from_utf8(slot).unwrap();
            let last = text.lines().last().unwrap();
            assert!(last.starts_with('#') && last.trim_end() == "#", "{last:?}");
        }
        let text = String::from_utf8(seeded(seed).unwrap()).unwrap();
        assert!(
            text.starts_with(&format!("seedfrom: \"{seed}\"\n#")),
            "{text}"
        );
    }

    #[test]
    fn bad_seed_urls_are_refused_naming_what_was_expected() {
        for (url, why) in [
            ("ftp://x/", "expected an http:// or https:// URL"),
            ("http://x/seed", "expected a URL ending in /"),
            ("http://x/\"/", "expected printable ASCII"),
            ("http://x/a b/", "expected printable ASCII"),
            ("http://x/\n/", "expected printable ASCII"),
        ] {
            let e = seeded(url).unwrap_err();
            assert!(e.why.starts_with(why), "{url:?}: {e}");
            assert!(e.to_string().starts_with("seed URL "), "{e}");
        }
        let long = format!("http://x/{}/", "a".repeat(SLOT_BYTES));
        assert_eq!(
            seeded(&long).unwrap_err().why,
            "too long for the image's meta-data slot"
        );
    }

    #[test]
    fn the_slot_is_found_only_whole_and_once() {
        let slot = unseeded();
        let mut fs = vec![0u8; 3 * SLOT_BYTES];
        fs[1000..1000 + SLOT_BYTES].copy_from_slice(&slot);
        assert_eq!(find_slot(&fs), Some(1000));
        // Split across clusters (not contiguous): not found.
        let mut split = vec![0u8; 4 * SLOT_BYTES];
        split[..2048].copy_from_slice(&slot[..2048]);
        split[3 * SLOT_BYTES..3 * SLOT_BYTES + 2048].copy_from_slice(&slot[2048..]);
        assert_eq!(find_slot(&split), None);
        // Twice: ambiguous, so not found.
        let mut twice = fs.clone();
        twice.extend_from_slice(&slot);
        assert_eq!(find_slot(&twice), None);
        assert_eq!(find_slot(&[]), None);
    }
}
