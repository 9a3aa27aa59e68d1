//! The typed resources a plan is made of.
//!
//! A resource says what should be true on the node ("this file has these
//! contents", "these packages are installed"), never how to get there; the
//! apply engine checks and converges each one.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use kprov_artifacts::ArtifactId;
use serde::{Serialize, Serializer};

/// A package manager the engine can install with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    /// apt and dpkg (Debian, Ubuntu).
    Apt,
    /// yum (CentOS 7).
    Yum,
    /// dnf (Rocky, Alma, RHEL 8/9).
    Dnf,
}

impl fmt::Display for PackageManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Apt => "apt",
            Self::Yum => "yum",
            Self::Dnf => "dnf",
        })
    }
}

/// File contents in a plan. Secrets are kept out of plan output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Text that may be shown.
    Text(String),
    /// Bytes that must never be printed or logged.
    Secret(Vec<u8>),
}

impl Contents {
    /// The bytes to write.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Secret(b) => b,
        }
    }
}

impl Serialize for Contents {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(t) => s.serialize_str(t),
            Self::Secret(_) => s.serialize_str("<redacted>"),
        }
    }
}

fn octal<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

fn artifact_name<S: Serializer>(id: &ArtifactId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// Something that should be true on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// Packages installed with the family's package manager.
    Packages {
        /// apt, yum or dnf.
        manager: PackageManager,
        /// Package names.
        names: Vec<String>,
    },
    /// A directory.
    Directory {
        /// Node path.
        path: String,
        /// Permission bits.
        #[serde(serialize_with = "octal")]
        mode: u32,
    },
    /// A regular file with exact contents and mode, owned by root.
    File {
        /// Node path.
        path: String,
        /// Permission bits.
        #[serde(serialize_with = "octal")]
        mode: u32,
        /// The contents.
        contents: Contents,
    },
    /// A symbolic link.
    Symlink {
        /// Node path of the link.
        path: String,
        /// Where it points.
        target: String,
    },
    /// A binary installed from an artifact.
    Binary {
        /// Node path.
        path: String,
        /// The artifact.
        #[serde(serialize_with = "artifact_name")]
        artifact: ArtifactId,
    },
    /// The regular files of a tarball artifact, extracted into a directory.
    Archive {
        /// Node directory.
        dir: String,
        /// The artifact.
        #[serde(serialize_with = "artifact_name")]
        artifact: ArtifactId,
        /// A leading directory to drop from member names (`bin/`).
        strip_prefix: Option<String>,
    },
    /// A container image's OCI archive staged on the node (0644), from an
    /// [`kprov_artifacts::ArtifactName::Image`] artifact.
    ImageArchive {
        /// Node path.
        path: String,
        /// The artifact.
        #[serde(serialize_with = "artifact_name")]
        artifact: ArtifactId,
    },
    /// Swap lines of /etc/fstab commented out.
    FstabSwapDisabled,
    /// `swap.target` and every `.swap` unit in /etc/systemd/system masked.
    SwapUnitsMasked,
    /// A unit enabled: its `[Install] WantedBy=` symlink exists.
    UnitEnabled {
        /// The unit, e.g. `containerd.service`.
        unit: String,
        /// The target that wants it.
        wanted_by: String,
    },
    /// Live only: a kernel parameter in effect.
    SysctlActive {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Live only: a kernel module loaded.
    ModuleLoaded {
        /// The module.
        name: String,
    },
    /// Live only: no swap in use.
    SwapOff,
    /// Live only: systemd has read the current unit files.
    DaemonReloaded {
        /// Units whose files kprov manages.
        units: Vec<String>,
    },
    /// Live only: a unit active, and restarted if started before its
    /// configuration last changed.
    UnitActive {
        /// The unit.
        unit: String,
        /// Node paths of its configuration.
        config: Vec<String>,
    },
    /// Live only: images present in containerd's `k8s.io` namespace (as
    /// `ctr -n k8s.io images ls -q` lists them); missing ones are imported
    /// from their staged archives.
    ImagesImported {
        /// Node path of `ctr`.
        ctr: String,
        /// The images.
        images: Vec<ImageImport>,
    },
    /// Nothing at a path: a file, symlink or whole directory tree removed
    /// (symlinks are removed, never followed).
    Absent {
        /// Node path.
        path: String,
    },
    /// A directory with no entries (the directory itself stays).
    DirEmpty {
        /// Node path.
        dir: String,
    },
    /// Live only: a unit not running.
    UnitStopped {
        /// The unit.
        unit: String,
    },
    /// Live only: nothing mounted at or below a directory.
    Unmounted {
        /// Node path.
        dir: String,
    },
    /// Live only: no container left in containerd's `k8s.io` namespace
    /// (removed with ctr, best effort: one that will not go is logged).
    ContainersRemoved {
        /// Node path of `ctr`.
        ctr: String,
    },
    /// Live only: the kernel's routes of one routing protocol number are
    /// exactly these (destination -> gateway); others of that protocol
    /// are deleted, routes of other protocols are never touched.
    Routes {
        /// The protocol number kprov's routes carry (`ip route ... proto N`).
        protocol: u8,
        /// Destination prefix -> gateway.
        routes: BTreeMap<String, IpAddr>,
    },
    /// Live only: no network link of this name.
    LinkAbsent {
        /// The link, e.g. a bridge.
        name: String,
    },
}

/// One image of [`Resource::ImagesImported`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageImport {
    /// Full reference, as containerd lists it.
    pub reference: String,
    /// Node path of its OCI archive.
    pub archive: String,
}

impl Resource {
    /// A stable identifier, e.g. `file:/etc/containerd/config.toml`.
    pub fn id(&self) -> String {
        match self {
            Self::Packages { manager, .. } => format!("packages:{manager}"),
            Self::Directory { path, .. } => format!("directory:{path}"),
            Self::File { path, .. } => format!("file:{path}"),
            Self::Symlink { path, .. } => format!("symlink:{path}"),
            Self::Binary { path, .. } => format!("binary:{path}"),
            Self::Archive { dir, artifact, .. } => format!("archive:{}->{dir}", artifact.name),
            Self::ImageArchive { path, .. } => format!("image-archive:{path}"),
            Self::FstabSwapDisabled => "fstab-swap-disabled:/etc/fstab".into(),
            Self::SwapUnitsMasked => "swap-units-masked".into(),
            Self::UnitEnabled { unit, wanted_by } => format!("unit-enabled:{unit}@{wanted_by}"),
            Self::SysctlActive { key, .. } => format!("sysctl-active:{key}"),
            Self::ModuleLoaded { name } => format!("module-loaded:{name}"),
            Self::SwapOff => "swap-off".into(),
            Self::DaemonReloaded { .. } => "daemon-reloaded".into(),
            Self::UnitActive { unit, .. } => format!("unit-active:{unit}"),
            Self::ImagesImported { .. } => "images-imported:k8s.io".into(),
            Self::Absent { path } => format!("absent:{path}"),
            Self::DirEmpty { dir } => format!("dir-empty:{dir}"),
            Self::UnitStopped { unit } => format!("unit-stopped:{unit}"),
            Self::Unmounted { dir } => format!("unmounted:{dir}"),
            Self::ContainersRemoved { .. } => "containers-removed:k8s.io".into(),
            Self::Routes { protocol, .. } => format!("routes:proto-{protocol}"),
            Self::LinkAbsent { name } => format!("link-absent:{name}"),
        }
    }

    /// True for resources that only make sense on a running host.
    pub fn is_live_only(&self) -> bool {
        matches!(
            self,
            Self::SysctlActive { .. }
                | Self::ModuleLoaded { .. }
                | Self::SwapOff
                | Self::DaemonReloaded { .. }
                | Self::UnitActive { .. }
                | Self::ImagesImported { .. }
                | Self::UnitStopped { .. }
                | Self::Unmounted { .. }
                | Self::ContainersRemoved { .. }
                | Self::Routes { .. }
                | Self::LinkAbsent { .. }
        )
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Packages { manager, names } => {
                write!(f, "packages ({manager}): {}", names.join(" "))
            }
            Self::Directory { path, mode } => write!(f, "directory {path} ({mode:04o})"),
            Self::File { path, mode, .. } => write!(f, "file {path} ({mode:04o})"),
            Self::Symlink { path, target } => write!(f, "symlink {path} -> {target}"),
            Self::Binary { path, artifact } => write!(f, "binary {path} from {artifact}"),
            Self::Archive { dir, artifact, .. } => write!(f, "archive {artifact} into {dir}"),
            Self::ImageArchive { path, artifact } => {
                write!(f, "image archive {path} from {artifact}")
            }
            Self::FstabSwapDisabled => f.write_str("swap lines of /etc/fstab commented out"),
            Self::SwapUnitsMasked => f.write_str("swap units masked"),
            Self::UnitEnabled { unit, wanted_by } => write!(f, "unit {unit} enabled ({wanted_by})"),
            Self::SysctlActive { key, value } => write!(f, "sysctl {key} = {value} in effect"),
            Self::ModuleLoaded { name } => write!(f, "kernel module {name} loaded"),
            Self::SwapOff => f.write_str("no swap in use"),
            Self::DaemonReloaded { .. } => f.write_str("systemd unit files reloaded"),
            Self::UnitActive { unit, .. } => write!(f, "unit {unit} active"),
            Self::ImagesImported { images, .. } => write!(
                f,
                "images in containerd (k8s.io): {}",
                images
                    .iter()
                    .map(|i| i.reference.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Self::Absent { path } => write!(f, "{path} absent"),
            Self::DirEmpty { dir } => write!(f, "{dir} empty"),
            Self::UnitStopped { unit } => write!(f, "unit {unit} stopped"),
            Self::Unmounted { dir } => write!(f, "nothing mounted under {dir}"),
            Self::ContainersRemoved { .. } => f.write_str("pod containers removed (k8s.io)"),
            Self::Routes { protocol, routes } if routes.is_empty() => {
                write!(f, "no routes of protocol {protocol}")
            }
            Self::Routes { protocol, routes } => write!(
                f,
                "routes of protocol {protocol}: {}",
                routes
                    .iter()
                    .map(|(dst, via)| format!("{dst} via {via}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::LinkAbsent { name } => write!(f, "network link {name} absent"),
        }
    }
}
