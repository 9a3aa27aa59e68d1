//! What a zstd frame's header says about checking it: with a content
//! checksum (XXH64 of the decompressed bytes, checked by the decoder at
//! the frame's end), the raw image needs no sha256 of its own. The
//! compressed image's sha256 binds the bytes to the manifest; the
//! frame's checksum proves they decompressed to what was compressed.

/// The zstd frame magic number, little-endian on the wire.
const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// In the frame header descriptor: Content_Checksum_flag.
const CONTENT_CHECKSUM: u8 = 0x04;

/// Whether the zstd frame starting `head` carries a content checksum;
/// None until `head` holds the magic number and the descriptor.
pub fn checksummed(head: &[u8]) -> Option<bool> {
    let descriptor = *head.get(4)?;
    Some(head[..4] == MAGIC && descriptor & CONTENT_CHECKSUM != 0)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn compressed(checksum: bool) -> Vec<u8> {
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(checksum).unwrap();
        encoder.write_all(&[7u8; 100_000]).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn the_header_tells_a_checksummed_frame_from_a_bare_one() {
        assert_eq!(checksummed(&compressed(true)), Some(true));
        assert_eq!(checksummed(&compressed(false)), Some(false));
        assert_eq!(
            checksummed(&zstd::encode_all(&[1u8; 10][..], 3).unwrap()),
            Some(false)
        );
    }

    #[test]
    fn too_few_bytes_say_nothing_and_other_data_is_no_checksummed_frame() {
        let frame = compressed(true);
        for len in 0..5 {
            assert_eq!(checksummed(&frame[..len]), None, "{len} bytes");
        }
        assert_eq!(checksummed(b"\x1f\x8b\x08\x00\x04"), Some(false));
    }
}
