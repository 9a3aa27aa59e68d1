//! Verified downloads: parallel, retried with backoff, resumed with HTTP
//! Range after an interruption, checked against their sha256 before they
//! enter the cache, and cached by sha256.
//!
//! Cache layout (`--cache-dir`, default /var/cache/kprov):
//!
//! ```text
//! sha256/<hex>          verified files, named by their sum
//! partial/<hex>.part    interrupted downloads, resumed on the next attempt
//! checksums/<hex>       checksum files fetched, named by the sum of their URL
//! ```
//!
//! Nothing unverified leaves `partial/`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use kprov_artifacts::catalog::{self, Bases, ChecksumFormat, Download};
use kprov_artifacts::{ArtifactError, ArtifactId, ArtifactSource, FetchedArtifact};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server answered with an error status.
    #[error("GET {url}: server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The connection failed on every attempt.
    #[error("GET {url}: {reason} (after {attempts} attempts)")]
    Transport {
        /// The URL.
        url: String,
        /// The last error.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The file does not have the sum its checksum file gives.
    #[error("sha256 mismatch for {url}: expected {expected}, got {actual}; nothing was installed")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The expected sum.
        expected: String,
        /// The sum of what was received.
        actual: String,
    },
    /// A checksum file without a usable sum.
    #[error("checksum file {url} does not contain a sha256 sum")]
    BadChecksumFile {
        /// Its URL.
        url: String,
    },
    /// Local file trouble in the cache.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let path = path.to_path_buf();
    move |source| DownloadError::Io {
        action,
        path,
        source,
    }
}

/// Downloads into a sha256-keyed cache.
pub struct Downloader {
    client: reqwest::Client,
    cache: PathBuf,
    attempts: u32,
    backoff: Duration,
    progress: Option<MultiProgress>,
}

impl Downloader {
    /// A downloader caching under `cache`. Progress bars are drawn when
    /// stderr is a terminal; otherwise each download logs one line.
    pub fn new(cache: impl Into<PathBuf>) -> Result<Self, DownloadError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("kprov/", env!("CARGO_PKG_VERSION")))
            // Names resolved in Rust (/etc/hosts, /etc/resolv.conf): kprov
            // is a static binary, glibc's NSS is not there to load.
            .dns_resolver(Arc::new(kprov_resolve::System::default()))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DownloadError::Transport {
                url: String::new(),
                reason: e.to_string(),
                attempts: 0,
            })?;
        Ok(Self {
            client,
            cache: cache.into(),
            attempts: 5,
            backoff: Duration::from_millis(500),
            progress: std::io::stderr().is_terminal().then(MultiProgress::new),
        })
    }

    /// Sets the number of attempts and the first backoff delay (doubled
    /// after each failed attempt).
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    /// The cache path of a verified file with sum `sha256`.
    pub fn cached_path(&self, sha256: &[u8; 32]) -> PathBuf {
        self.cache.join("sha256").join(hex::encode(sha256))
    }

    /// Fetches a small text file (a checksum file), with retries, caching
    /// it by URL.
    pub async fn fetch_checksum(
        &self,
        url: &str,
        format: &ChecksumFormat,
    ) -> Result<[u8; 32], DownloadError> {
        let key = hex::encode(Sha256::digest(url.as_bytes()));
        let cached = self.cache.join("checksums").join(&key);
        if let Ok(text) = tokio::fs::read_to_string(&cached).await {
            if let Some(sum) = catalog::parse_checksum(&text, format) {
                return Ok(sum);
            }
        }
        let text = self
            .with_retries_async(url, || async {
                let resp = self.client.get(url).send().await.map_err(Attempt::retry)?;
                let resp = check_status(url, resp)?;
                resp.text().await.map_err(Attempt::retry)
            })
            .await?;
        let sum = catalog::parse_checksum(&text, format)
            .ok_or_else(|| DownloadError::BadChecksumFile { url: url.into() })?;
        write_file(&cached, text.as_bytes()).await?;
        Ok(sum)
    }

    async fn with_retries_async<T, F, Fut>(&self, url: &str, mut op: F) -> Result<T, DownloadError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Attempt>>,
    {
        let mut delay = self.backoff;
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            match op().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(reason)) => {
                    tracing::warn!(url, attempt, %reason, "download attempt failed");
                    last = reason;
                    if attempt < self.attempts {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
        Err(DownloadError::Transport {
            url: url.into(),
            reason: last,
            attempts: self.attempts,
        })
    }

    /// Downloads `url` into the cache unless a file with `expected` is
    /// already there; resumes a partial download; verifies the sum (hashed
    /// while streaming) before the file enters the cache. Returns the cache
    /// path. The cache is not fsynced: every user re-verifies what it
    /// installs, so a file damaged by a power cut is caught, not trusted.
    pub async fn fetch_verified(
        &self,
        url: &str,
        expected: [u8; 32],
        label: &str,
    ) -> Result<PathBuf, DownloadError> {
        let done = self.cached_path(&expected);
        if tokio::fs::metadata(&done).await.is_ok() {
            return Ok(done);
        }
        let partial_dir = self.cache.join("partial");
        tokio::fs::create_dir_all(&partial_dir)
            .await
            .map_err(io_err("creating", &partial_dir))?;
        let part = partial_dir.join(format!("{}.part", hex::encode(expected)));
        let bar = self.bar(label);
        let actual = self
            .with_retries_async(url, || self.attempt_download(url, &part, &bar))
            .await?;
        bar.finish_and_clear();

        if actual != expected {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(DownloadError::ChecksumMismatch {
                url: url.into(),
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
        let dir = self.cache.join("sha256");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_err("creating", &dir))?;
        tokio::fs::rename(&part, &done)
            .await
            .map_err(io_err("moving into the cache", &done))?;
        tracing::info!(url, sha256 = %hex::encode(expected), "downloaded and verified");
        Ok(done)
    }

    fn bar(&self, label: &str) -> ProgressBar {
        match &self.progress {
            Some(multi) => {
                let bar = multi.add(ProgressBar::new(0));
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:24} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {wide_bar}",
                ) {
                    bar.set_style(style);
                }
                bar.set_message(label.to_string());
                bar
            }
            None => ProgressBar::hidden(),
        }
    }

    /// One attempt: resumes from the partial file when there is one and
    /// the server honours the range; returns the SHA-256 of the whole file.
    async fn attempt_download(
        &self,
        url: &str,
        part: &Path,
        bar: &ProgressBar,
    ) -> Result<[u8; 32], Attempt> {
        let have = partial_len(part).await.map_err(Attempt::Fatal)?;
        let mut request = self.client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = request.send().await.map_err(Attempt::retry)?;
        // 416: the partial file is already complete.
        if have > 0 && resp.status().as_u16() == 416 {
            let file = open_partial(part).await.map_err(Attempt::Fatal)?;
            let (_, hasher) = hash_prefix(file, part, u64::MAX)
                .await
                .map_err(Attempt::Fatal)?;
            return Ok(hasher.finalize().into());
        }
        let resp = check_status(url, resp)?;
        let resumed = resp.status().as_u16() == 206;
        // The partial file is opened once, never through a symlink, and
        // hashed and extended through that one handle.
        let file = open_partial(part).await.map_err(Attempt::Fatal)?;
        let (file, hasher) = if resumed {
            hash_prefix(file, part, have)
                .await
                .map_err(Attempt::Fatal)?
        } else {
            file.set_len(0)
                .await
                .map_err(|e| Attempt::Fatal(io_err("truncating", part)(e)))?;
            (file, Sha256::new())
        };
        let mut hasher = hasher;
        let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let start = if resumed { have } else { 0 };
        if let Some(len) = resp.content_length() {
            bar.set_length(start + len);
        }
        bar.set_position(start);
        if resumed {
            tracing::info!(url, from = have, "resuming download");
        }
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // Keep every byte received, so the next attempt resumes
                    // exactly where this one stopped.
                    let _ = file.flush().await;
                    return Err(Attempt::retry(e));
                }
            };
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Attempt::Fatal(io_err("writing", part)(e)))?;
            bar.inc(chunk.len() as u64);
        }
        file.flush()
            .await
            .map_err(|e| Attempt::Fatal(io_err("writing", part)(e)))?;
        Ok(hasher.finalize().into())
    }

    /// Resolves and downloads `downloads` in parallel (at most four at a
    /// time); returns the cache paths in the same order.
    pub async fn fetch_all(
        &self,
        downloads: &[Download],
    ) -> Vec<Result<FetchedArtifact, DownloadError>> {
        futures_util::stream::iter(downloads.iter().map(|d| async move {
            let sum = self
                .fetch_checksum(&d.checksum_url, &d.checksum_format)
                .await?;
            let path = self.fetch_verified(&d.url, sum, &d.file_name).await?;
            Ok(FetchedArtifact { path, sha256: sum })
        }))
        .buffered(4)
        .collect()
        .await
    }
}

/// One attempt's failure: worth retrying, or final.
enum Attempt {
    Retry(String),
    Fatal(DownloadError),
}

impl Attempt {
    /// reqwest's own message ("error sending request for url ...") leaves
    /// the cause (a refused connection, a name that does not resolve) to
    /// its sources: they are added, each once.
    fn retry(e: impl std::error::Error) -> Self {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text = format!("{text}: {cause_text}");
            }
            source = cause.source();
        }
        Self::Retry(text)
    }
}

/// Server errors and throttling are retried; other error statuses (404,
/// 403, ...) are final.
fn check_status(url: &str, resp: reqwest::Response) -> Result<reqwest::Response, Attempt> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = status.as_u16();
    if status.is_server_error() || code == 429 || code == 408 {
        Err(Attempt::Retry(format!("server answered {code}")))
    } else {
        Err(Attempt::Fatal(DownloadError::Status {
            url: url.into(),
            status: code,
        }))
    }
}

/// The length of a partial download to resume from. Anything at that
/// name that is not a regular file (a symlink someone planted) is removed
/// and the download starts over.
async fn partial_len(part: &Path) -> Result<u64, DownloadError> {
    match tokio::fs::symlink_metadata(part).await {
        Ok(m) if m.file_type().is_file() => Ok(m.len()),
        Ok(_) => {
            tracing::warn!(path = %part.display(), "not a regular file: removed, starting over");
            tokio::fs::remove_file(part)
                .await
                .map_err(io_err("removing", part))?;
            Ok(0)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err("inspecting", part)(e)),
    }
}

/// Opens (creating it if needed) a partial download for reading and
/// writing, refusing to follow a symlink at its name.
async fn open_partial(part: &Path) -> Result<tokio::fs::File, DownloadError> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(part)
        .await
        .map_err(io_err("opening", part))
}

/// Hashes the first `len` bytes of a partial download through its handle
/// and leaves the handle positioned (and the file cut) right after them.
async fn hash_prefix(
    file: tokio::fs::File,
    path: &Path,
    len: u64,
) -> Result<(tokio::fs::File, Sha256), DownloadError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file.into_std().await;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("reading", &path))?;
        let read = std::io::copy(&mut (&mut file).take(len), &mut hasher)
            .map_err(io_err("reading", &path))?;
        file.set_len(read).map_err(io_err("truncating", &path))?;
        file.seek(SeekFrom::Start(read))
            .map_err(io_err("reading", &path))?;
        Ok((tokio::fs::File::from_std(file), hasher))
    })
    .await
    .map_err(|e| DownloadError::Transport {
        url: String::new(),
        reason: e.to_string(),
        attempts: 0,
    })?
}

/// Writes a small cache file with kprov-host's atomic write.
async fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_err("creating", dir))?;
    }
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        kprov_host::fs::write_file_atomic(&path, &bytes, 0o644).map_err(|e| match e {
            kprov_host::HostError::Io {
                action,
                path,
                source,
            } => DownloadError::Io {
                action,
                path,
                source,
            },
            other => io_err("writing", &path)(std::io::Error::other(other.to_string())),
        })
    })
    .await
    .map_err(|e| DownloadError::Transport {
        url: String::new(),
        reason: e.to_string(),
        attempts: 0,
    })?
}

/// Artifacts downloaded from upstream or a mirror, for one Kubernetes
/// release: the catalog gives URLs, the checksum files give sums.
pub struct DownloadSource {
    runtime: tokio::runtime::Handle,
    downloader: Arc<Downloader>,
    kubernetes_version: kprov_core::KubernetesVersion,
    bases: Bases,
}

impl DownloadSource {
    /// A source for the artifacts of `kubernetes_version`, from `bases`,
    /// downloading on the command's runtime (`runtime`; called from
    /// outside it, as the apply engine does).
    pub fn new(
        runtime: tokio::runtime::Handle,
        downloader: Downloader,
        kubernetes_version: kprov_core::KubernetesVersion,
        bases: Bases,
    ) -> Result<Self, ArtifactError> {
        Ok(Self {
            runtime,
            downloader: Arc::new(downloader),
            kubernetes_version,
            bases,
        })
    }

    fn plan(&self, id: &ArtifactId) -> Result<Download, ArtifactError> {
        catalog::download(id.name, &self.kubernetes_version, id.arch, &self.bases).map_err(
            |source| ArtifactError::Catalog {
                artifact: id.to_string(),
                source,
            },
        )
    }
}

impl ArtifactSource for DownloadSource {
    fn describe(&self) -> String {
        format!(
            "downloads from {} and {}",
            self.bases.kubernetes, self.bases.github
        )
    }

    fn checksum(&self, id: &ArtifactId) -> Result<[u8; 32], ArtifactError> {
        let d = self.plan(id)?;
        self.runtime
            .block_on(
                self.downloader
                    .fetch_checksum(&d.checksum_url, &d.checksum_format),
            )
            .map_err(|source| ArtifactError::Download {
                artifact: id.to_string(),
                source: Box::new(source),
            })
    }

    fn prefetch(&self, ids: &[ArtifactId]) -> Result<(), ArtifactError> {
        let downloads: Vec<Download> = ids
            .iter()
            .map(|id| self.plan(id))
            .collect::<Result<_, _>>()?;
        let results = self.runtime.block_on(self.downloader.fetch_all(&downloads));
        for (id, result) in ids.iter().zip(results) {
            result.map_err(|source| ArtifactError::Download {
                artifact: id.to_string(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    fn fetch(&self, id: &ArtifactId) -> Result<FetchedArtifact, ArtifactError> {
        let d = self.plan(id)?;
        let mut results = self
            .runtime
            .block_on(self.downloader.fetch_all(std::slice::from_ref(&d)));
        results
            .pop()
            .unwrap_or_else(|| {
                Err(DownloadError::BadChecksumFile {
                    url: d.checksum_url.clone(),
                })
            })
            .map_err(|source| ArtifactError::Download {
                artifact: id.to_string(),
                source: Box::new(source),
            })
    }
}
