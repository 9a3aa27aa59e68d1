//! The side of `kprov image build` that touches the machine: reads the
//! root, runs mkfs.vfat, mtools, syslinux and mkfs.ext4 on plain files (no
//! loop device, no mount), and streams head, partitions and tail through
//! sha256 and zstd into the image, then writes its manifest. The image
//! appears under its name only when whole (a temporary file renamed).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::bootloader::{self, Kernel, INITRD_FILE, KERNEL_FILE};
use crate::gpt;
use crate::layout::{auto_disk_size, round_up_mib, DiskLayout, LayoutError, MIB};
use crate::manifest::{Blob, ImageManifest, SeedSlot};
use crate::nocloud;

/// The boot partition's size unless the kernel and initrd need more.
pub const BOOT_SIZE: u64 = 256 * MIB;

/// Where distributions put SYSLINUX's GPT boot code.
const GPTMBR: [&str; 2] = [
    "/usr/lib/syslinux/mbr/gptmbr.bin",
    "/usr/share/syslinux/gptmbr.bin",
];

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageBuild {
    /// The root filesystem (prebaked), with a kernel and initrd in /boot.
    pub root: PathBuf,
    /// The compressed image to write; its manifest is `OUTPUT.json`.
    pub output: PathBuf,
    /// The raw disk's size in bytes; `None` sizes it from the root.
    pub size: Option<u64>,
    /// Kernel arguments after `root=PARTUUID=… rw`.
    pub kernel_args: Vec<String>,
    /// What the partition and filesystem GUIDs are derived from.
    pub seed: String,
    /// zstd's compression level.
    pub level: i32,
}

/// What a build will make, decided before anything is written.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The disk.
    pub layout: DiskLayout,
    /// The kernel that boots.
    pub kernel: Kernel,
    /// Bytes the root's files take.
    pub root_bytes: u64,
}

/// A step of the build, for progress lines.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Making the boot partition.
    Boot,
    /// Making the root filesystem.
    Root,
    /// Compressing: raw bytes done of all.
    Compress {
        /// Raw bytes written so far.
        done: u64,
        /// The raw image's size.
        total: u64,
    },
}

/// Why a build failed; each names the input or the program.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The root is not one an image can be made from.
    #[error("root {path}: {reason}")]
    Root {
        /// The root.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A kernel argument cannot be used.
    #[error("{0}")]
    KernelArg(String),
    /// The sizes do not fit.
    #[error("{0}")]
    Layout(#[from] LayoutError),
    /// The root does not fit the disk size given.
    #[error("--size {size} MiB is too small for root {root}: its files take {needed} MiB (about {suggested} MiB of disk needed)")]
    TooSmall {
        /// The disk size given, MiB.
        size: u64,
        /// The root.
        root: PathBuf,
        /// What its files take, MiB.
        needed: u64,
        /// The automatic size, MiB.
        suggested: u64,
    },
    /// A program or file the build needs is missing.
    #[error("{what} not found: install Debian's {package} package")]
    Missing {
        /// The program or file.
        what: String,
        /// The package that has it.
        package: &'static str,
    },
    /// A program failed.
    #[error("{command} exited with {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its error output.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The error.
        source: io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let what = what.into();
    move |source| BuildError::Io { what, source }
}

/// Reads the root and decides the layout; writes nothing.
pub fn plan(build: &ImageBuild) -> Result<ImagePlan, BuildError> {
    let root_error = |reason: String| BuildError::Root {
        path: build.root.clone(),
        reason,
    };
    let meta = fs::metadata(&build.root)
        .map_err(|e| root_error(format!("cannot be read ({e}); expected a root directory")))?;
    if !meta.is_dir() {
        return Err(root_error("is not a directory".into()));
    }
    for arg in &build.kernel_args {
        bootloader::check_kernel_arg(arg).map_err(BuildError::KernelArg)?;
    }
    let init_found = ["sbin/init", "usr/sbin/init", "usr/lib/systemd/systemd"]
        .iter()
        .any(|p| fs::symlink_metadata(build.root.join(p)).is_ok());
    if !init_found {
        return Err(root_error(
            "has no /sbin/init or /usr/lib/systemd/systemd: expected a bootable root (systemd-sysv)".into(),
        ));
    }
    let boot = build.root.join("boot");
    let names = boot_files(&build.root).map_err(root_error)?;
    let kernel = bootloader::newest_kernel(names.iter().map(String::as_str)).ok_or_else(|| {
        root_error("/boot has no vmlinuz-VERSION with an initrd.img-VERSION beside it: install a kernel package (linux-image-amd64) and initramfs-tools".into())
    })?;
    let boot_files = file_size(&boot.join(&kernel.image))? + file_size(&boot.join(&kernel.initrd))?;
    let boot_size = BOOT_SIZE.max(round_up_mib(boot_files + 64 * MIB));
    let root_bytes = tree_bytes(&build.root)?;
    let suggested = auto_disk_size(root_bytes, boot_size);
    let size = build.size.unwrap_or(suggested);
    let layout = DiskLayout::plan(size, boot_size, &build.seed)?;
    if layout.root.size < root_bytes + root_bytes / 20 {
        return Err(BuildError::TooSmall {
            size: size / MIB,
            root: build.root.clone(),
            needed: root_bytes.div_ceil(MIB),
            suggested: suggested / MIB,
        });
    }
    Ok(ImagePlan {
        layout,
        kernel,
        root_bytes,
    })
}

/// Builds the image: returns its manifest, also written beside it.
pub fn build(
    build: &ImageBuild,
    plan: &ImagePlan,
    progress: &mut dyn FnMut(Step),
) -> Result<ImageManifest, BuildError> {
    let boot_code = boot_code()?;
    for (program, package) in [
        ("mkfs.ext4", "e2fsprogs"),
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("syslinux", "syslinux"),
    ] {
        if find_program(program).is_none() {
            return Err(BuildError::Missing {
                what: program.into(),
                package,
            });
        }
    }
    let dir = output_dir(&build.output);
    let name = build
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BuildError::Io {
            what: format!("output {}", build.output.display()),
            source: io::Error::new(io::ErrorKind::InvalidInput, "expected a file name"),
        })?;
    // Scratch files beside the output: the partitions are as big as the
    // disk, so they go where the image is going, and vanish on any error.
    let scratch = tempfile::Builder::new()
        .prefix(".kprov-image-")
        .tempdir_in(&dir)
        .map_err(io(format!(
            "making a scratch directory in {}",
            dir.display()
        )))?;
    let epoch = source_date_epoch(&build.root.join("boot").join(&plan.kernel.image))?;

    progress(Step::Boot);
    let boot_fs = scratch.path().join("boot.fat");
    let slot = make_boot_partition(build, plan, &boot_fs, scratch.path(), epoch)?;
    progress(Step::Root);
    let root_fs = scratch.path().join("root.ext4");
    make_root_filesystem(build, plan, &root_fs, epoch)?;

    let manifest_path = manifest_path(&build.output);
    match fs::remove_file(&manifest_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io(format!("removing the old {}", manifest_path.display()))(
                e,
            ))
        }
        _ => {}
    }
    let image = Replacement::beside(&build.output, &name)?;
    let (raw, compressed) = compose(
        &plan.layout,
        &boot_code,
        &boot_fs,
        &root_fs,
        image.file(),
        build.level,
        progress,
    )?;
    image.commit()?;
    let manifest = ImageManifest {
        image: name,
        raw,
        compressed,
        seed: Some(SeedSlot {
            offset: plan.layout.boot.offset + slot,
            size: nocloud::SLOT_BYTES as u64,
        }),
    };
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| BuildError::Io {
        what: "encoding the manifest".into(),
        source: io::Error::other(e),
    })? + "\n";
    let file = Replacement::beside(&manifest_path, "manifest")?;
    file.file()
        .write_all(text.as_bytes())
        .map_err(io(format!("writing {}", manifest_path.display())))?;
    file.commit()?;
    Ok(manifest)
}

/// A file written beside `output` and renamed onto it once whole and
/// synced: a reader never sees half of one, and a failure leaves nothing
/// (the temporary file goes when this is dropped).
pub(crate) struct Replacement {
    tmp: tempfile::NamedTempFile,
    output: PathBuf,
}

impl Replacement {
    /// A temporary file named `.PREFIX.*` in `output`'s directory.
    pub(crate) fn beside(output: &Path, prefix: &str) -> Result<Self, BuildError> {
        let dir = output_dir(output);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{prefix}."))
            .tempfile_in(&dir)
            .map_err(io(format!(
                "creating a temporary file in {}",
                dir.display()
            )))?;
        Ok(Self {
            tmp,
            output: output.to_path_buf(),
        })
    }

    /// The file to write.
    pub(crate) fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Makes it 0644 (images, initrds and manifests are served to
    /// machines as they are: nothing in them is secret), syncs it and
    /// renames it onto the output; returns its size.
    pub(crate) fn commit(self) -> Result<u64, BuildError> {
        let file = self.tmp.as_file();
        let size = file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .and_then(|()| file.sync_all())
            .and_then(|()| file.metadata())
            .map_err(io(format!("syncing {}", self.output.display())))?
            .len();
        self.tmp
            .persist(&self.output)
            .map_err(|e| io(format!("renaming into {}", self.output.display()))(e.error))?;
        Ok(size)
    }
}

/// The file names in `root`'s /boot, where its kernels are.
pub(crate) fn boot_files(root: &Path) -> Result<Vec<String>, String> {
    Ok(fs::read_dir(root.join("boot"))
        .map_err(|e| format!("/boot cannot be read ({e}); expected a kernel and its initrd there"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// The directory `output` goes into.
pub(crate) fn output_dir(output: &Path) -> PathBuf {
    match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `OUTPUT.json`.
pub fn manifest_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

fn make_boot_partition(
    build: &ImageBuild,
    plan: &ImagePlan,
    fat: &Path,
    scratch: &Path,
    epoch: u64,
) -> Result<u64, BuildError> {
    sized_file(fat, plan.layout.boot.size)?;
    // --invariant: fixed volume ID and times; mtools (and syslinux, which
    // writes through it) date files by SOURCE_DATE_EPOCH.
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", nocloud::LABEL, "--invariant"])
        .arg(fat))?;
    let mut files = vec![
        (
            build.root.join("boot").join(&plan.kernel.image),
            KERNEL_FILE,
        ),
        (
            build.root.join("boot").join(&plan.kernel.initrd),
            INITRD_FILE,
        ),
    ];
    for (name, content) in [
        (
            "syslinux.cfg",
            bootloader::syslinux_config(plan.layout.root.guid, &build.kernel_args).into_bytes(),
        ),
        (nocloud::META_DATA, nocloud::unseeded()),
        (nocloud::USER_DATA, nocloud::EMPTY_USER_DATA.into()),
    ] {
        let path = scratch.join(name);
        fs::write(&path, content)
            .and_then(|()| {
                // mcopy -m keeps the file's time: the build's, not the clock's.
                let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
                File::options().write(true).open(&path)?.set_modified(time)
            })
            .map_err(io(format!("writing {}", path.display())))?;
        files.push((path, name));
    }
    for (source, target) in files {
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .arg("-m")
            .arg("-i")
            .arg(fat)
            .arg(&source)
            .arg(format!("::/{target}")))?;
    }
    run(Command::new("syslinux")
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .arg("--install")
        .arg(fat))?;
    // Stage2 writes the seed into the slot's bytes on the disk, so they
    // must be one piece of the filesystem, as a fresh FAT lays them out.
    let bytes = fs::read(fat).map_err(io(format!("reading {}", fat.display())))?;
    nocloud::find_slot(&bytes)
        .map(|at| at as u64)
        .ok_or_else(|| BuildError::Io {
            what: format!("finding the meta-data slot in {}", fat.display()),
            source: io::Error::other("not in one piece, or not found exactly once"),
        })
}

fn make_root_filesystem(
    build: &ImageBuild,
    plan: &ImagePlan,
    ext4: &Path,
    epoch: u64,
) -> Result<(), BuildError> {
    sized_file(ext4, plan.layout.root.size)?;
    let uuid = crate::guid::Guid::derived(&build.seed, "root filesystem").to_string();
    let result = run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .args(["-q", "-F", "-L", "kprov-root", "-U", &uuid])
        .arg("-E")
        .arg(format!("hash_seed={uuid}"))
        .arg("-d")
        .arg(&build.root)
        .arg(ext4));
    match result {
        Err(BuildError::Command { stderr, .. })
            if stderr.contains("No space left") || stderr.contains("Could not allocate") =>
        {
            Err(BuildError::TooSmall {
                size: plan.layout.size / MIB,
                root: build.root.clone(),
                needed: plan.root_bytes.div_ceil(MIB),
                suggested: auto_disk_size(plan.root_bytes, plan.layout.boot.size) / MIB,
            })
        }
        other => other,
    }
}

/// Writes the raw image (head, boot partition, root partition, tail, zeros
/// between) through sha256 into zstd and the compressed bytes through
/// sha256 into `out`; returns both blobs.
fn compose(
    layout: &DiskLayout,
    boot_code: &[u8; gpt::BOOT_CODE],
    boot_fs: &Path,
    root_fs: &Path,
    out: &File,
    level: i32,
    progress: &mut dyn FnMut(Step),
) -> Result<(Blob, Blob), BuildError> {
    let compressed = Hashing::new(BufWriter::with_capacity(MIB as usize, out));
    let mut encoder = zstd::Encoder::new(compressed, level).map_err(io("starting zstd"))?;
    // The frame's own checksum of the raw bytes, checked by every zstd
    // decoder: stage2 then hashes only the compressed stream.
    encoder
        .include_checksum(true)
        .map_err(io("asking zstd for a checksum"))?;
    let mut raw = Hashing::new(encoder);
    let total = layout.size;
    let mut next_report = 0u64;
    let mut report = |done: u64, progress: &mut dyn FnMut(Step)| {
        if done >= next_report || done == total {
            progress(Step::Compress { done, total });
            next_report = done + total / 10;
        }
    };
    let failed = |what: &str| io(format!("{what} into the image"));
    raw.write_all(&gpt::head(layout, boot_code))
        .map_err(failed("writing the partition table"))?;
    for (path, partition) in [(boot_fs, &layout.boot), (root_fs, &layout.root)] {
        zeros(&mut raw, partition.offset).map_err(failed("padding"))?;
        let mut file = File::open(path).map_err(io(format!("opening {}", path.display())))?;
        let mut buffer = vec![0u8; MIB as usize];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(io(format!("reading {}", path.display())))?;
            if n == 0 {
                break;
            }
            raw.write_all(&buffer[..n])
                .map_err(failed("writing a partition"))?;
            report(raw.count, progress);
        }
    }
    let tail = gpt::tail(layout);
    zeros(&mut raw, total - tail.len() as u64).map_err(failed("padding"))?;
    raw.write_all(&tail)
        .map_err(failed("writing the backup partition table"))?;
    report(raw.count, progress);
    let (encoder, raw_blob) = raw.finish();
    let compressed = encoder.finish().map_err(io("finishing zstd"))?;
    let (buffered, compressed_blob) = compressed.finish();
    buffered
        .into_inner()
        .map_err(|e| io("writing the image")(e.into_error()))?;
    Ok((raw_blob, compressed_blob))
}

/// Writes zeros until `raw` has had `until` bytes.
fn zeros<W: Write>(raw: &mut Hashing<W>, until: u64) -> io::Result<()> {
    let zero = [0u8; 64 * 1024];
    while raw.count < until {
        let n = (until - raw.count).min(zero.len() as u64) as usize;
        raw.write_all(&zero[..n])?;
    }
    Ok(())
}

/// A writer that counts and hashes what passes.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (W, Blob) {
        let blob = Blob {
            size: self.count,
            sha256: hex::encode(self.hasher.finalize()),
        };
        (self.inner, blob)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// SYSLINUX's boot code for GPT disks, from the syslinux-common package.
fn boot_code() -> Result<[u8; gpt::BOOT_CODE], BuildError> {
    let path = GPTMBR
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| BuildError::Missing {
            what: GPTMBR[0].into(),
            package: "syslinux-common",
        })?;
    let bytes = fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    bytes
        .get(..gpt::BOOT_CODE)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| BuildError::Io {
            what: format!("reading {}", path.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, "shorter than 440 bytes"),
        })
}

/// The build's timestamp: `SOURCE_DATE_EPOCH` when set, else the kernel's
/// modification time, so that the same root gives the same filesystem.
fn source_date_epoch(kernel: &Path) -> Result<u64, BuildError> {
    if let Some(epoch) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Ok(epoch);
    }
    let meta = fs::metadata(kernel).map_err(io(format!("reading {}", kernel.display())))?;
    Ok(meta.mtime().max(0) as u64)
}

fn file_size(path: &Path) -> Result<u64, BuildError> {
    Ok(fs::metadata(path)
        .map_err(io(format!("reading {}", path.display())))?
        .len())
}

/// The bytes the files under `dir` take on disk (blocks, not lengths),
/// without following symbolic links.
fn tree_bytes(dir: &Path) -> Result<u64, BuildError> {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))? {
            let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
            let meta = entry
                .metadata()
                .map_err(io(format!("reading {}", entry.path().display())))?;
            total += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// A sparse file of `size` bytes.
fn sized_file(path: &Path, size: u64) -> Result<(), BuildError> {
    File::create(path)
        .and_then(|f| f.set_len(size))
        .map_err(io(format!("creating {}", path.display())))
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn run(command: &mut Command) -> Result<(), BuildError> {
    let output = command.output().map_err(|e| BuildError::Io {
        what: format!("running {:?}", command.get_program()),
        source: e,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(BuildError::Command {
        command: format!(
            "{} {}",
            command.get_program().to_string_lossy(),
            command
                .get_args()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        status: output.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
    })
}
