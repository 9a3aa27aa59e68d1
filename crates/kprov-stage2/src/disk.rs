//! The disk writer: the raw image's bytes go to the disk in order, except
//! the first MiB, which is held back and written by [`DiskWriter::commit`]
//! once the image has been verified (coreos-installer's rule: a disk whose
//! writing stopped halfway has no partition table and never boots).

use std::io::{self, Seek, SeekFrom, Write};

/// The bytes held back: partition tables and boot code live there.
pub const HEAD: u64 = 1 << 20;

/// Writes a raw image onto `target` from offset 0, holding back its first
/// [`HEAD`] bytes. (The raw sha256 is computed beside it, on a thread of
/// its own: [`crate::pipeline`].)
pub struct DiskWriter<W: Write + Seek> {
    target: W,
    head: Vec<u8>,
    written: u64,
    positioned: bool,
}

impl<W: Write + Seek> DiskWriter<W> {
    /// A writer at the start of `target`.
    pub fn new(target: W) -> Self {
        Self {
            target,
            head: Vec::new(),
            written: 0,
            positioned: false,
        }
    }

    /// Raw bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Starts over from offset 0 (the server sent the whole image again).
    pub fn restart(&mut self) {
        self.head.clear();
        self.written = 0;
        self.positioned = false;
    }

    /// Writes the held-back first MiB and flushes: the image is whole and
    /// verified. Returns the target (for the caller's fsync).
    pub fn commit(mut self) -> io::Result<W> {
        self.target.seek(SeekFrom::Start(0))?;
        self.target.write_all(&self.head)?;
        self.target.flush()?;
        Ok(self.target)
    }

    /// Overwrites `bytes` at `offset`, past the held-back first MiB, on the
    /// target (the verified image's own bytes there are replaced: the
    /// machine's seed in the image's seed slot).
    pub fn patch(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        if offset < HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is inside the held-back first MiB"),
            ));
        }
        self.target.seek(SeekFrom::Start(offset))?;
        self.target.write_all(bytes)?;
        // The next write seeks back to where the stream stands.
        self.positioned = false;
        Ok(())
    }

    /// The target, without writing the first MiB (a failed install).
    pub fn into_target(self) -> W {
        self.target
    }
}

impl<W: Write + Seek> Write for DiskWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        if self.written < HEAD {
            let take = rest.len().min((HEAD - self.written) as usize);
            self.head.extend_from_slice(&rest[..take]);
            self.written += take as u64;
            rest = &rest[take..];
        }
        if !rest.is_empty() {
            if !self.positioned {
                self.target.seek(SeekFrom::Start(self.written))?;
                self.positioned = true;
            }
            self.target.write_all(rest)?;
            self.written += rest.len() as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.target.flush()
    }
}

/// Zeroes the first `min(HEAD, size)` bytes of `target` and flushes: what
/// stage2 does before writing and after a failure.
pub fn wipe_head<W: Write + Seek>(target: &mut W, size: u64) -> io::Result<()> {
    target.seek(SeekFrom::Start(0))?;
    target.write_all(&vec![0u8; HEAD.min(size) as usize])?;
    target.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 + 1).collect()
    }

    #[test]
    fn the_first_mib_lands_only_at_commit_and_everything_else_in_place() {
        let data = image(3 * HEAD as usize + 123);
        let mut w = DiskWriter::new(Cursor::new(vec![0xEEu8; data.len()]));
        for chunk in data.chunks(70_001) {
            w.write_all(chunk).unwrap();
        }
        assert_eq!(w.written(), data.len() as u64);
        let before = w.into_target().into_inner();
        assert!(before[..HEAD as usize].iter().all(|b| *b == 0xEE));
        assert_eq!(&before[HEAD as usize..], &data[HEAD as usize..]);

        let mut w = DiskWriter::new(Cursor::new(vec![0xEEu8; data.len()]));
        w.write_all(&data).unwrap();
        assert_eq!(w.commit().unwrap().into_inner(), data);
    }

    #[test]
    fn a_patch_lands_past_the_head_and_the_stream_goes_on_where_it_stood() {
        let data = image(3 * HEAD as usize);
        let mut w = DiskWriter::new(Cursor::new(vec![0xEEu8; data.len()]));
        let half = 2 * HEAD as usize;
        w.write_all(&data[..half]).unwrap();
        w.patch(HEAD + 10, b"seed").unwrap();
        assert!(w.patch(HEAD - 1, b"x").is_err());
        w.write_all(&data[half..]).unwrap();
        let mut expected = data.clone();
        expected[HEAD as usize + 10..HEAD as usize + 14].copy_from_slice(b"seed");
        assert_eq!(w.commit().unwrap().into_inner(), expected);
    }

    #[test]
    fn an_image_smaller_than_the_head_is_all_held_back() {
        let data = image(4096);
        let mut w = DiskWriter::new(Cursor::new(Vec::new()));
        w.write_all(&data).unwrap();
        assert!(w.into_target().into_inner().is_empty());
        let mut w = DiskWriter::new(Cursor::new(Vec::new()));
        w.write_all(&data).unwrap();
        assert_eq!(w.commit().unwrap().into_inner(), data);
    }

    #[test]
    fn a_restart_forgets_what_came_before() {
        let data = image(2 * HEAD as usize);
        let mut w = DiskWriter::new(Cursor::new(vec![0u8; data.len()]));
        w.write_all(&image(HEAD as usize + 10)[5..]).unwrap();
        w.restart();
        w.write_all(&data).unwrap();
        assert_eq!(w.written(), data.len() as u64);
        assert_eq!(w.commit().unwrap().into_inner(), data);
    }

    #[test]
    fn wiping_zeroes_at_most_the_head() {
        let mut disk = Cursor::new(vec![7u8; 3 * HEAD as usize]);
        wipe_head(&mut disk, 3 * HEAD).unwrap();
        let bytes = disk.into_inner();
        assert!(bytes[..HEAD as usize].iter().all(|b| *b == 0));
        assert!(bytes[HEAD as usize..].iter().all(|b| *b == 7));
        let mut small = Cursor::new(vec![7u8; 100]);
        wipe_head(&mut small, 100).unwrap();
        assert_eq!(small.into_inner(), vec![0u8; 100]);
    }
}
