//! The install itself: the manifest and the image over HTTP, onto a disk
//! (a block device, or a file standing for one), with fsync.
//!
//! Order on the disk: the first MiB zeroed and synced; the image streamed
//! (decompressed, both sums computed as it passes; the raw one only when
//! the zstd frame carries no checksum of its own, see [`crate::frame`]),
//! resumed with a Range request from the last compressed byte received
//! when the connection drops; then the sums and sizes checked; only then the first MiB
//! written and synced. Any failure after the first write zeroes the first
//! MiB again.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::disk::{wipe_head, DiskWriter};
use crate::frame;
use crate::manifest::{ImageManifest, ManifestError};
use crate::pipeline::{HashThread, Pipeline};

/// What to install where.
#[derive(Debug, Clone)]
pub struct Install {
    /// The manifest's URL; the image is beside it.
    pub manifest_url: String,
    /// The disk (a block device, or a regular file of the disk's size).
    pub disk: PathBuf,
    /// Attempts per request before giving up.
    pub attempts: u32,
    /// The pause between attempts.
    pub backoff: Duration,
    /// The machine's NoCloud seed URL, written into the image's seed slot
    /// (when the manifest has one) before the first MiB: cloud-init on
    /// the installed system fetches its user-data from there.
    pub seed: Option<String>,
}

/// Where an install stands, for progress lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Compressed bytes received.
    pub received: u64,
    /// Compressed bytes in all.
    pub total: u64,
    /// Raw bytes decompressed.
    pub written: u64,
    /// Since the image's first request.
    pub elapsed: Duration,
}

/// A finished install.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The manifest it followed.
    pub manifest: ImageManifest,
    /// Requests made for the image (1 without interruptions).
    pub requests: u32,
    /// From the image's first request to the disk synced.
    pub elapsed: Duration,
    /// Whether the seed went into the image's seed slot.
    pub seeded: bool,
    /// Whether the raw bytes were hashed and checked against the
    /// manifest's sum; otherwise the image's zstd frame carried a content
    /// checksum, which the decoder checked.
    pub raw_hashed: bool,
}

/// Why an install failed. After the disk's first write, its first MiB has
/// been zeroed again whatever the cause.
#[derive(Debug, thiserror::Error)]
pub enum Stage2Error {
    /// The manifest is unusable.
    #[error("the manifest {url}: {source}")]
    Manifest {
        /// Its URL.
        url: String,
        /// What is wrong.
        source: ManifestError,
    },
    /// A request failed for good.
    #[error("{url}: {why}")]
    Http {
        /// The URL.
        url: String,
        /// What happened, with the attempts made.
        why: String,
    },
    /// The disk cannot hold the image; nothing was written.
    #[error("{disk}: {capacity} bytes, smaller than the image's {needed}; nothing written")]
    TooSmall {
        /// The disk.
        disk: String,
        /// Its size.
        capacity: u64,
        /// The raw image's size.
        needed: u64,
    },
    /// What arrived is not the image the manifest describes.
    #[error("{what}: expected {expected}, got {actual}; the disk's first MiB is zeroed")]
    Mismatch {
        /// Which sum or size.
        what: &'static str,
        /// The manifest's.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The seed cannot go into the image's seed slot; nothing was
    /// written.
    #[error("{0}; nothing written")]
    Seed(String),
    /// The disk failed, or the image does not decompress.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Stage2Error {
    let context = context.into();
    move |source| Stage2Error::Io { context, source }
}

/// Progress lines for a console (not a terminal): one per tenth of the
/// image, and at least every 10 s.
pub fn console_lines() -> impl FnMut(Progress) {
    let mut next_tenth = 1u64;
    let mut last_line = Duration::ZERO;
    move |p: Progress| {
        let tenth = p.received * 10 / p.total.max(1);
        if tenth >= next_tenth || p.elapsed >= last_line + Duration::from_secs(10) {
            next_tenth = tenth + 1;
            last_line = p.elapsed;
            eprintln!(
                "kprov: stage2: {}% ({} of {} MiB received, {} MiB written, {:.0} s)",
                p.received * 100 / p.total.max(1),
                p.received >> 20,
                p.total >> 20,
                p.written >> 20,
                p.elapsed.as_secs_f64()
            );
        }
    }
}

/// The line that says an install is done.
pub fn installed_line(disk: &Path, installed: &Installed) -> String {
    let manifest = &installed.manifest;
    let raw = manifest.raw.size;
    let seconds = installed.elapsed.as_secs_f64().max(0.001);
    let verified = if installed.raw_hashed {
        format!("sha256 {}", manifest.raw.sha256)
    } else {
        format!(
            "sha256 {} of the compressed image, zstd's checksum of the raw",
            manifest.compressed.sha256
        )
    };
    format!(
        "kprov: stage2: {} installed: {} MiB verified ({verified}), {} request(s), {:.1} s, {:.0} MiB/s",
        disk.display(),
        raw >> 20,
        installed.requests,
        seconds,
        raw as f64 / f64::from(1u32 << 20) / seconds
    )
}

/// Fetches the manifest, then streams the image onto the disk.
pub async fn install(
    request: &Install,
    progress: &mut dyn FnMut(Progress),
) -> Result<Installed, Stage2Error> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Stage2Error::Http {
            url: request.manifest_url.clone(),
            why: format!("no HTTP client: {e}"),
        })?;
    let manifest = fetch_manifest(&http, request).await?;
    let seed_slot = seed_slot(&manifest, request.seed.as_deref())?;
    let disk_name = request.disk.display().to_string();
    let mut disk = open_disk(&request.disk)?;
    let capacity = disk
        .seek(SeekFrom::End(0))
        .map_err(io(format!("sizing {disk_name}")))?;
    if capacity < manifest.raw.size {
        return Err(Stage2Error::TooSmall {
            disk: disk_name,
            capacity,
            needed: manifest.raw.size,
        });
    }
    wipe_head(&mut disk, capacity).map_err(io(format!("zeroing the first MiB of {disk_name}")))?;
    disk.sync_all()
        .map_err(io(format!("syncing {disk_name}")))?;
    let started = Instant::now();
    match stream(
        &http,
        request,
        &manifest,
        seed_slot.as_ref(),
        disk,
        started,
        progress,
    )
    .await
    {
        Ok((disk, requests, raw_hashed)) => {
            disk.sync_all()
                .map_err(io(format!("syncing {disk_name}")))?;
            Ok(Installed {
                manifest,
                requests,
                elapsed: started.elapsed(),
                seeded: seed_slot.is_some(),
                raw_hashed,
            })
        }
        Err((e, disk)) => {
            if let Some(mut disk) = disk {
                // Best effort: the error above is what the console names.
                let _ = wipe_head(&mut disk, capacity).and_then(|()| disk.sync_all());
            } else if let Ok(mut disk) = open_disk(&request.disk) {
                let _ = wipe_head(&mut disk, capacity).and_then(|()| disk.sync_all());
            }
            Err(e)
        }
    }
}

/// The bytes for the image's seed slot and where they go, checked before
/// anything is written; None without a seed or a slot.
fn seed_slot(
    manifest: &ImageManifest,
    seed: Option<&str>,
) -> Result<Option<(u64, Vec<u8>)>, Stage2Error> {
    let (Some(slot), Some(seed)) = (manifest.seed, seed) else {
        return Ok(None);
    };
    let bytes = kprov_image::nocloud::seeded(seed).map_err(|e| Stage2Error::Seed(e.to_string()))?;
    if bytes.len() as u64 != slot.size {
        return Err(Stage2Error::Seed(format!(
            "the image's seed slot holds {} bytes, this kprov writes {}",
            slot.size,
            bytes.len()
        )));
    }
    Ok(Some((slot.offset, bytes)))
}

fn open_disk(path: &Path) -> Result<File, Stage2Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(format!(
            "opening {} (the disk must exist)",
            path.display()
        )))
}

async fn fetch_manifest(
    http: &reqwest::Client,
    request: &Install,
) -> Result<ImageManifest, Stage2Error> {
    let url = &request.manifest_url;
    let mut last = String::new();
    for attempt in 1..=request.attempts.max(1) {
        if attempt > 1 {
            tokio::time::sleep(request.backoff).await;
        }
        match http.get(url).send().await {
            Ok(resp) if resp.status().is_success() => match resp.text().await {
                Ok(text) => {
                    return ImageManifest::parse(&text).map_err(|source| Stage2Error::Manifest {
                        url: url.clone(),
                        source,
                    })
                }
                Err(e) => last = e.to_string(),
            },
            Ok(resp) if resp.status().is_client_error() => {
                return Err(Stage2Error::Http {
                    url: url.clone(),
                    why: format!("HTTP {}", resp.status()),
                })
            }
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Stage2Error::Http {
        url: url.clone(),
        why: format!("{last} ({} attempts)", request.attempts.max(1)),
    })
}

type Failed = (Stage2Error, Option<File>);
type Decoder = zstd::stream::write::Decoder<'static, Pipeline<File>>;

/// The disk back from a failed stream, for its first MiB to be zeroed,
/// with `error`; or, when the disk itself failed, that error.
fn stopped(pipeline: Pipeline<File>, error: Stage2Error) -> Failed {
    match pipeline.finish() {
        Ok(written) => (error, Some(written.writer.into_target())),
        Err((e, writer)) => (
            io("writing the image onto the disk")(e),
            Some(writer.into_target()),
        ),
    }
}

/// Streams the image onto `disk`; the disk back (for the fsync), the
/// number of requests and whether the raw bytes were hashed, or the error
/// and the disk when there is one to wipe.
async fn stream(
    http: &reqwest::Client,
    request: &Install,
    manifest: &ImageManifest,
    seed_slot: Option<&(u64, Vec<u8>)>,
    disk: File,
    started: Instant,
    progress: &mut dyn FnMut(Progress),
) -> Result<(File, u32, bool), Failed> {
    let url = manifest.image_url(&request.manifest_url);
    let total = manifest.compressed.size;
    let writer = Pipeline::spawn(DiskWriter::new(disk))
        .map_err(|e| (io("starting the disk writer")(e), None))?;
    let mut decoder: Decoder = zstd::stream::write::Decoder::new(writer)
        .map_err(|e| (io("starting the decompressor")(e), None))?;
    // The compressed sum on a thread of its own, beside the decompression.
    let mut hasher = HashThread::spawn("compressed-sha256")
        .map_err(|e| (io("starting the hashing thread")(e), None))?;
    let mut received = 0u64;
    let mut requests = 0u32;
    // The frame header, until it says whether zstd checks the raw bytes.
    let mut head = Vec::new();
    let mut frame_checksummed = None;
    let mut failures = 0u32;
    let mut last_error = String::new();
    while received < total {
        if failures >= request.attempts.max(1) {
            let e = Stage2Error::Http {
                url: url.clone(),
                why: format!(
                    "{last_error} ({failures} attempts; {received} of {total} bytes received)"
                ),
            };
            return Err(stopped(decoder.into_inner(), e));
        }
        if failures > 0 {
            tokio::time::sleep(request.backoff).await;
        }
        requests += 1;
        let mut get = http.get(&url);
        if received > 0 {
            get = get.header(reqwest::header::RANGE, format!("bytes={received}-"));
        }
        let mut resp = match get.send().await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                last_error = e.to_string();
                continue;
            }
        };
        match resp.status().as_u16() {
            206 if received > 0 => {}
            200 => {
                if received > 0 {
                    // The server ignored the Range: the whole image again.
                    received = 0;
                    if let Err(e) = hasher.restart() {
                        return Err(stopped(decoder.into_inner(), io("hashing the image")(e)));
                    }
                    let mut writer = decoder.into_inner();
                    if let Err(e) = writer.restart() {
                        return Err(stopped(writer, io("restarting the disk writer")(e)));
                    }
                    decoder = zstd::stream::write::Decoder::new(writer)
                        .map_err(|e| (io("restarting the decompressor")(e), None))?;
                }
            }
            status if (400..500).contains(&status) => {
                let e = Stage2Error::Http {
                    url: url.clone(),
                    why: format!("HTTP {}", resp.status()),
                };
                return Err(stopped(decoder.into_inner(), e));
            }
            _ => {
                failures += 1;
                last_error = format!("HTTP {}", resp.status());
                continue;
            }
        }
        let mut dropped = false;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    if received + bytes.len() as u64 > total {
                        let e = Stage2Error::Mismatch {
                            what: "the compressed image's size",
                            expected: total.to_string(),
                            actual: format!("more than {total}"),
                        };
                        return Err(stopped(decoder.into_inner(), e));
                    }
                    if frame_checksummed.is_none() {
                        head.extend_from_slice(&bytes[..bytes.len().min(8)]);
                        frame_checksummed = frame::checksummed(&head);
                        if frame_checksummed == Some(true) {
                            decoder.get_mut().stop_hashing();
                        }
                    }
                    received += bytes.len() as u64;
                    if let Err(e) = decoder.write_all(&bytes) {
                        return Err(stopped(
                            decoder.into_inner(),
                            io("decompressing the image")(e),
                        ));
                    }
                    // Bytes clones share the buffer: nothing is copied.
                    if let Err(e) = hasher.update(bytes) {
                        return Err(stopped(decoder.into_inner(), io("hashing the image")(e)));
                    }
                    progress(Progress {
                        received,
                        total,
                        written: decoder.get_ref().written(),
                        elapsed: started.elapsed(),
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    failures += 1;
                    dropped = true;
                    last_error = format!("the connection dropped: {e}");
                    break;
                }
            }
        }
        if received < total && !dropped {
            failures += 1;
            last_error = format!("the response ended after {received} of {total} bytes");
        }
    }
    if let Err(e) = decoder.flush() {
        return Err(stopped(
            decoder.into_inner(),
            io("decompressing the image")(e),
        ));
    }
    let (writer, raw_sha256) = match decoder.into_inner().finish() {
        Ok(written) => (written.writer, written.sha256),
        Err((e, writer)) => {
            return Err((
                io("writing the image onto the disk")(e),
                Some(writer.into_target()),
            ))
        }
    };
    let compressed = hasher.finish();
    let checks = [
        (
            "the compressed image's sha256",
            &manifest.compressed.sha256,
            compressed,
        ),
        (
            "the raw image's size",
            &manifest.raw.size.to_string(),
            writer.written().to_string(),
        ),
    ];
    // The raw sum is not computed when the frame's own checksum stands for it.
    let raw_hashed = raw_sha256.is_some();
    let raw_check =
        raw_sha256.map(|actual| ("the raw image's sha256", &manifest.raw.sha256, actual));
    for (what, expected, actual) in checks.into_iter().chain(raw_check) {
        if *expected != actual {
            let e = Stage2Error::Mismatch {
                what,
                expected: expected.clone(),
                actual,
            };
            return Err((e, Some(writer.into_target())));
        }
    }
    let mut writer = writer;
    if let Some((offset, bytes)) = seed_slot {
        if let Err(e) = writer.patch(*offset, bytes) {
            return Err((io("writing the seed")(e), Some(writer.into_target())));
        }
    }
    let disk = writer
        .commit()
        .map_err(|e| (io("writing the first MiB")(e), None))?;
    Ok((disk, requests, raw_hashed))
}
