//! The image's consumers on threads of their own: the disk writer and the
//! raw sha256 ([`Pipeline`]), and the compressed sha256 ([`HashThread`]).
//! Receiving and decompressing (on the caller's thread), hashing and
//! writing overlap, as the stages of `curl | zstd -d | dd` do in their
//! own processes. Raw bytes go over in 1 MiB buffers, shared by both
//! threads, through bounded channels: the memory the overlap costs.

use std::io::{self, Seek, Write};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::disk::DiskWriter;

/// The size of a buffer handed over.
const CHUNK: usize = 1 << 20;
/// Buffers queued for each thread at most.
const QUEUED: usize = 8;

#[derive(Clone)]
enum Job<B> {
    Raw(B),
    Restart,
}

/// A buffer of raw bytes, shared by the writer and the hasher.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A sha256 computed on a thread of its own, over buffers handed to it in
/// order; `update` returns once the buffer is queued.
pub struct HashThread<B: AsRef<[u8]> + Send + 'static> {
    to_hasher: Option<SyncSender<Job<B>>>,
    hasher: Option<JoinHandle<Sha256>>,
}

impl<B: AsRef<[u8]> + Send + 'static> HashThread<B> {
    /// Starts the thread, named `name`.
    pub fn spawn(name: &str) -> io::Result<Self> {
        let (to_hasher, queue) = mpsc::sync_channel::<Job<B>>(QUEUED);
        let hasher = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for job in queue {
                    match job {
                        Job::Raw(bytes) => hasher.update(bytes.as_ref()),
                        Job::Restart => hasher = Sha256::new(),
                    }
                }
                hasher
            })?;
        Ok(Self {
            to_hasher: Some(to_hasher),
            hasher: Some(hasher),
        })
    }

    /// Queues `bytes` for hashing.
    pub fn update(&mut self, bytes: B) -> io::Result<()> {
        self.send(Job::Raw(bytes))
    }

    /// Starts the sum over.
    pub fn restart(&mut self) -> io::Result<()> {
        self.send(Job::Restart)
    }

    /// The sum of everything queued, in hexadecimal.
    pub fn finish(mut self) -> String {
        self.to_hasher = None;
        hex::encode(join(self.hasher.take()).finalize())
    }

    fn send(&mut self, job: Job<B>) -> io::Result<()> {
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "the hashing thread stopped");
        self.to_hasher
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }
}

/// The writer back from its thread, and the first error it met (after
/// which it wrote nothing more).
type WriterEnd<W> = (DiskWriter<W>, io::Result<()>);

/// A finished pipeline: every byte written (the first MiB still held
/// back) and hashed, unless hashing was stopped.
pub struct Written<W: Write + Seek> {
    /// The writer, for the seed patch and the commit.
    pub writer: DiskWriter<W>,
    /// The sha256 of the raw bytes, in hexadecimal.
    pub sha256: Option<String>,
}

/// Raw bytes in, to a [`DiskWriter`] and a sha256 on threads of their own;
/// `write` returns once the bytes are queued. [`Pipeline::finish`] waits
/// for both.
pub struct Pipeline<W: Write + Seek + Send + 'static> {
    filling: Vec<u8>,
    handed_over: u64,
    to_disk: Option<SyncSender<Job<Shared>>>,
    hasher: Option<HashThread<Shared>>,
    writer: Option<JoinHandle<WriterEnd<W>>>,
}

impl<W: Write + Seek + Send + 'static> Pipeline<W> {
    /// Starts the threads: the disk writer's thread owns `writer`.
    pub fn spawn(writer: DiskWriter<W>) -> io::Result<Self> {
        let (to_disk, disk_queue) = mpsc::sync_channel::<Job<Shared>>(QUEUED);
        let writer = std::thread::Builder::new()
            .name("disk-writer".into())
            .spawn(move || {
                let mut writer = writer;
                for job in disk_queue {
                    match job {
                        Job::Raw(bytes) => {
                            if let Err(e) = writer.write_all(bytes.as_ref()) {
                                return (writer, Err(e));
                            }
                        }
                        Job::Restart => writer.restart(),
                    }
                }
                (writer, Ok(()))
            })?;
        let hasher = HashThread::spawn("raw-sha256")?;
        Ok(Self {
            filling: Vec::with_capacity(CHUNK),
            handed_over: 0,
            to_disk: Some(to_disk),
            hasher: Some(hasher),
            writer: Some(writer),
        })
    }

    /// Raw bytes taken so far (queued, or written and hashed).
    pub fn written(&self) -> u64 {
        self.handed_over + self.filling.len() as u64
    }

    /// Hashes nothing more: the hashing thread ends, and
    /// [`Pipeline::finish`] returns no sum.
    pub fn stop_hashing(&mut self) {
        // Dropped: its thread ends with what it had, unread.
        self.hasher = None;
    }

    /// Starts over from offset 0 (the server sent the whole image again):
    /// the writer and the hash forget what they had, after what is queued.
    pub fn restart(&mut self) -> io::Result<()> {
        self.filling.clear();
        self.handed_over = 0;
        self.send(Job::Restart)
    }

    /// Waits for both threads: the writer and the raw sum, or the first
    /// error met on the disk with the writer (to zero its first MiB).
    pub fn finish(mut self) -> Result<Written<W>, (io::Error, DiskWriter<W>)> {
        let handed = self.hand_over();
        self.to_disk = None;
        let (writer, wrote) = join(self.writer.take());
        let sha256 = self.hasher.take().map(HashThread::finish);
        match wrote.and(handed) {
            Ok(()) => Ok(Written { writer, sha256 }),
            Err(e) => Err((e, writer)),
        }
    }

    fn send(&mut self, job: Job<Shared>) -> io::Result<()> {
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "the disk writer stopped");
        let to_disk = self.to_disk.as_ref().ok_or_else(stopped)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.send(job.clone())?;
        }
        to_disk.send(job).map_err(|_| stopped())
    }

    fn hand_over(&mut self) -> io::Result<()> {
        if self.filling.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.filling, Vec::with_capacity(CHUNK));
        self.handed_over += full.len() as u64;
        self.send(Job::Raw(Shared(Arc::new(full))))
    }
}

/// A thread's result; its panic goes on in the caller.
fn join<T>(thread: Option<JoinHandle<T>>) -> T {
    thread
        .expect("each thread is joined once, by finish")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

impl<W: Write + Seek + Send + 'static> Write for Pipeline<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(CHUNK - self.filling.len());
        self.filling.extend_from_slice(&buf[..take]);
        if self.filling.len() == CHUNK {
            self.hand_over()?;
        }
        Ok(take)
    }

    /// Queues what is buffered; [`Pipeline::finish`] waits for it.
    fn flush(&mut self) -> io::Result<()> {
        self.hand_over()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, SeekFrom};

    use super::*;
    use crate::disk::HEAD;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4099) as u8).collect()
    }

    fn finished(pipeline: Pipeline<Cursor<Vec<u8>>>) -> Written<Cursor<Vec<u8>>> {
        pipeline.finish().map_err(|(e, _)| e).unwrap()
    }

    #[test]
    fn what_arrives_in_odd_pieces_is_hashed_and_lands_as_the_disk_writer_alone_would_write_it() {
        let raw = image(3 * CHUNK + 12_345);
        let mut alone = DiskWriter::new(Cursor::new(vec![0u8; raw.len()]));
        alone.write_all(&raw).unwrap();
        let mut pipeline =
            Pipeline::spawn(DiskWriter::new(Cursor::new(vec![0u8; raw.len()]))).unwrap();
        for piece in raw.chunks(131_071) {
            pipeline.write_all(piece).unwrap();
        }
        assert_eq!(pipeline.written(), raw.len() as u64);
        let done = finished(pipeline);
        assert_eq!(done.sha256, Some(hex::encode(Sha256::digest(&raw))));
        assert_eq!(done.writer.written(), raw.len() as u64);
        assert_eq!(
            done.writer.commit().unwrap().into_inner(),
            alone.commit().unwrap().into_inner()
        );
    }

    #[test]
    fn a_restart_forgets_the_first_pass_on_disk_and_in_the_sum() {
        let raw = image(2 * CHUNK + 5);
        let mut pipeline =
            Pipeline::spawn(DiskWriter::new(Cursor::new(vec![0u8; raw.len()]))).unwrap();
        pipeline.write_all(&image(CHUNK + 77)[9..]).unwrap();
        pipeline.restart().unwrap();
        assert_eq!(pipeline.written(), 0);
        pipeline.write_all(&raw).unwrap();
        let done = finished(pipeline);
        assert_eq!(done.sha256, Some(hex::encode(Sha256::digest(&raw))));
        assert_eq!(done.writer.written(), raw.len() as u64);
        assert_eq!(done.writer.commit().unwrap().into_inner(), raw);
    }

    #[test]
    fn a_hash_thread_sums_what_it_was_given_since_its_last_restart() {
        let mut hasher = HashThread::spawn("test-sha256").unwrap();
        hasher.update(vec![1u8; 100]).unwrap();
        hasher.restart().unwrap();
        for piece in [b"abc".to_vec(), b"def".to_vec()] {
            hasher.update(piece).unwrap();
        }
        assert_eq!(hasher.finish(), hex::encode(Sha256::digest(b"abcdef")));
    }

    #[test]
    fn stopped_hashing_gives_no_sum_and_the_same_disk() {
        let raw = image(2 * CHUNK + 3);
        let mut pipeline =
            Pipeline::spawn(DiskWriter::new(Cursor::new(vec![0u8; raw.len()]))).unwrap();
        pipeline.stop_hashing();
        pipeline.write_all(&raw).unwrap();
        let done = finished(pipeline);
        assert_eq!(done.sha256, None);
        assert_eq!(done.writer.commit().unwrap().into_inner(), raw);
    }

    /// A disk that fails every write past `limit`.
    struct Failing {
        inner: Cursor<Vec<u8>>,
        limit: u64,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.inner.position() + buf.len() as u64 > self.limit {
                return Err(io::Error::other("no space left on the test disk"));
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for Failing {
        fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
            self.inner.seek(to)
        }
    }

    #[test]
    fn the_disks_error_comes_back_with_the_writer_and_later_writes_are_refused() {
        let disk = Failing {
            inner: Cursor::new(Vec::new()),
            limit: HEAD + CHUNK as u64,
        };
        let mut pipeline = Pipeline::spawn(DiskWriter::new(disk)).unwrap();
        let raw = image(32 * CHUNK);
        // Queued writes succeed until the writer's failure is seen.
        let refused = raw.chunks(CHUNK).any(|c| pipeline.write_all(c).is_err());
        assert!(refused, "every write was accepted after the disk failed");
        let (e, writer) = match pipeline.finish() {
            Err(failed) => failed,
            Ok(_) => panic!("the failing disk's error was lost"),
        };
        assert_eq!(e.to_string(), "no space left on the test disk");
        assert!(writer.written() <= HEAD + 2 * CHUNK as u64);
    }
}
