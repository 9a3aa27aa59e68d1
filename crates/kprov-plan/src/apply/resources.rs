//! Check and converge, per resource kind.

use std::path::Path;

use kprov_host::fs::{self, FileAttrs, FileState};
use kprov_host::{Command, HostError};

use super::{
    archive, containers, network, packages, removal, systemd, ApplyContext, ApplyError, Status,
};
use crate::fstab;
use crate::resource::Resource;

fn host_err(resource: &Resource) -> impl FnOnce(HostError) -> ApplyError + '_ {
    move |source| ApplyError::Host {
        resource: resource.id(),
        source,
    }
}

/// Compares the node with what `resource` asks for.
pub fn check(resource: &Resource, ctx: &ApplyContext<'_>) -> Result<Status, ApplyError> {
    let root = ctx.root;
    let err = host_err(resource);
    match resource {
        Resource::Packages { manager, names } => packages::check(*manager, names, ctx).map_err(err),
        Resource::Directory { path, mode } => {
            match fs::state(root, Path::new(path)).map_err(err)? {
                FileState::Missing => Ok(Status::Missing("does not exist".into())),
                FileState::Dir { attrs } if attrs == FileAttrs::root(*mode) => Ok(Status::Ok),
                FileState::Dir { attrs } => Ok(Status::Differs(format!(
                    "mode {:04o} owner {}:{}",
                    attrs.mode, attrs.uid, attrs.gid
                ))),
                other => Err(ApplyError::Other {
                    resource: resource.id(),
                    message: format!(
                    "{path} exists but is not a directory ({other:?}); remove it or move it away"
                ),
                }),
            }
        }
        Resource::File {
            path,
            mode,
            contents,
        } => Ok(file_status(
            &fs::state(root, Path::new(path)).map_err(err)?,
            *mode,
            &fs::sha256(contents.bytes()),
        )),
        Resource::Symlink { path, target } => {
            Ok(match fs::state(root, Path::new(path)).map_err(err)? {
                FileState::Missing => Status::Missing("does not exist".into()),
                FileState::Symlink { target: t } if t == Path::new(target) => Status::Ok,
                other => Status::Differs(format!("is {other:?}")),
            })
        }
        Resource::Binary { path, artifact } | Resource::ImageArchive { path, artifact } => {
            let sha256 = ctx
                .artifacts
                .checksum(artifact)
                .map_err(|source| ApplyError::artifact(resource.id(), source))?;
            Ok(file_status(
                &fs::state(root, Path::new(path)).map_err(err)?,
                installed_mode(resource),
                &sha256,
            ))
        }
        Resource::Archive { dir, artifact, .. } => archive::check(resource, dir, artifact, ctx),
        Resource::FstabSwapDisabled => {
            let text = fs::read(root, Path::new("/etc/fstab")).map_err(err)?;
            Ok(match text {
                None => Status::Ok,
                Some(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    if fstab::disable_swap(&text) == text {
                        Status::Ok
                    } else {
                        Status::Differs("has active swap lines".into())
                    }
                }
            })
        }
        Resource::SwapUnitsMasked => systemd::check_swap_masked(ctx).map_err(err),
        Resource::UnitEnabled { unit, wanted_by } => {
            systemd::check_enabled(unit, wanted_by, ctx).map_err(err)
        }
        Resource::SysctlActive { key, value } => {
            let current = fs::read(root, &sysctl_path(key)).map_err(err)?;
            Ok(match current {
                None => Status::Missing(format!("{key} does not exist in this kernel")),
                Some(v) if String::from_utf8_lossy(&v).trim() == value => Status::Ok,
                Some(v) => Status::Differs(format!("is {}", String::from_utf8_lossy(&v).trim())),
            })
        }
        Resource::ModuleLoaded { name } => Ok(
            if fs::state(root, &Path::new("/sys/module").join(name)).map_err(err)?
                == FileState::Missing
            {
                Status::Missing("not loaded".into())
            } else {
                Status::Ok
            },
        ),
        Resource::SwapOff => {
            let swaps = fs::read(root, Path::new("/proc/swaps"))
                .map_err(err)?
                .unwrap_or_default();
            let active = String::from_utf8_lossy(&swaps)
                .lines()
                .skip(1)
                .filter(|l| !l.trim().is_empty())
                .count();
            Ok(if active == 0 {
                Status::Ok
            } else {
                Status::Differs(format!("{active} swap area(s) in use"))
            })
        }
        Resource::DaemonReloaded { units } => systemd::check_reloaded(units, ctx).map_err(err),
        Resource::UnitActive { unit, config } => {
            systemd::check_active(unit, config, ctx).map_err(err)
        }
        Resource::ImagesImported { ctr, images } => {
            // On a first run ctr may not be installed yet, or containerd not
            // started: pass 1 checks before anything is converged. Then
            // everything is to be imported; converge asks again.
            let missing = match containers::missing_images(ctr, images, ctx) {
                Ok(missing) => missing,
                Err(e) => {
                    return Ok(Status::Missing(format!(
                        "containerd's images cannot be listed yet: {e}"
                    )))
                }
            };
            Ok(if missing.is_empty() {
                Status::Ok
            } else {
                Status::Missing(format!(
                    "not in containerd: {}",
                    missing
                        .iter()
                        .map(|i| i.reference.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ))
            })
        }
        Resource::Absent { path } => removal::check_absent(path, ctx).map_err(err),
        Resource::DirEmpty { dir } => removal::check_empty(dir, ctx).map_err(err),
        Resource::UnitStopped { unit } => systemd::check_stopped(unit, ctx).map_err(err),
        Resource::Unmounted { dir } => removal::check_unmounted(dir, ctx).map_err(err),
        Resource::ContainersRemoved { ctr } => Ok(containers::check_removed(ctr, ctx)),
        Resource::Routes { protocol, routes } => {
            network::check_routes(*protocol, routes, ctx).map_err(err)
        }
        Resource::LinkAbsent { name } => network::check_link_absent(name, ctx).map_err(err),
    }
}

/// Executables 0755, staged image archives 0644.
fn installed_mode(resource: &Resource) -> u32 {
    match resource {
        Resource::ImageArchive { .. } => 0o644,
        _ => 0o755,
    }
}

fn file_status(state: &FileState, mode: u32, sha256: &[u8; 32]) -> Status {
    match state {
        FileState::Missing => Status::Missing("does not exist".into()),
        FileState::File {
            attrs,
            sha256: current,
        } => {
            let mut diffs = Vec::new();
            if current != sha256 {
                diffs.push("contents differ".to_string());
            }
            if *attrs != FileAttrs::root(mode) {
                diffs.push(format!(
                    "mode {:04o} owner {}:{}",
                    attrs.mode, attrs.uid, attrs.gid
                ));
            }
            if diffs.is_empty() {
                Status::Ok
            } else {
                Status::Differs(diffs.join(", "))
            }
        }
        other => Status::Differs(format!("is not a regular file ({other:?})")),
    }
}

fn sysctl_path(key: &str) -> std::path::PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Makes the node match `resource`.
pub fn converge(resource: &Resource, ctx: &ApplyContext<'_>) -> Result<(), ApplyError> {
    let root = ctx.root;
    let err = host_err(resource);
    match resource {
        Resource::Packages { manager, names } => {
            packages::install(*manager, names, ctx).map_err(err)
        }
        Resource::Directory { path, mode } => {
            fs::create_dir_all(root, Path::new(path)).map_err(host_err(resource))?;
            fs::set_attrs(root, Path::new(path), FileAttrs::root(*mode)).map_err(err)
        }
        Resource::File {
            path,
            mode,
            contents,
        } => {
            let path = Path::new(path);
            fs::write_atomic(root, path, contents.bytes(), FileAttrs::root(*mode))
                .and_then(|()| fs::remember_sum(root, path, fs::sha256(contents.bytes())))
                .map_err(err)
        }
        Resource::Symlink { path, target } => {
            fs::symlink_atomic(root, Path::new(path), Path::new(target)).map_err(err)
        }
        Resource::Binary { path, artifact } | Resource::ImageArchive { path, artifact } => {
            let artifact_err = |source| ApplyError::artifact(resource.id(), source);
            let fetched = ctx.artifacts.fetch(artifact).map_err(artifact_err)?;
            let mut reader = fetched.open_verified().map_err(artifact_err)?;
            let attrs = FileAttrs::root(installed_mode(resource));
            let path = Path::new(path);
            // The verifying reader fails the write unless the contents
            // have the artifact's sum.
            fs::write_atomic_from(root, path, &mut reader, attrs)
                .and_then(|()| fs::remember_sum(root, path, fetched.sha256))
                .map_err(err)
        }
        Resource::Archive {
            dir,
            artifact,
            strip_prefix,
        } => archive::extract(resource, dir, artifact, strip_prefix.as_deref(), ctx),
        Resource::FstabSwapDisabled => {
            let path = Path::new("/etc/fstab");
            let attrs = match fs::state(root, path).map_err(host_err(resource))? {
                FileState::File { attrs, .. } => attrs,
                _ => FileAttrs::root(0o644),
            };
            let text = fs::read(root, path)
                .map_err(host_err(resource))?
                .unwrap_or_default();
            let new = fstab::disable_swap(&String::from_utf8_lossy(&text));
            fs::write_atomic(root, path, new.as_bytes(), attrs).map_err(err)
        }
        Resource::SwapUnitsMasked => systemd::mask_swap(ctx).map_err(err),
        Resource::UnitEnabled { unit, wanted_by } => {
            systemd::enable(unit, wanted_by, ctx).map_err(err)
        }
        Resource::SysctlActive { key, value } => {
            let path = root.resolve(sysctl_path(key)).map_err(host_err(resource))?;
            std::fs::write(&path, value).map_err(|e| err(HostError::io("writing", path, e)))
        }
        Resource::ModuleLoaded { name } => {
            ctx.runner
                .run_checked(&Command::new("modprobe", [name.as_str()]))
                .map_err(err)?;
            Ok(())
        }
        Resource::SwapOff => {
            ctx.runner
                .run_checked(&Command::new("swapoff", ["-a"]))
                .map_err(err)?;
            Ok(())
        }
        Resource::DaemonReloaded { .. } => {
            ctx.runner
                .run_checked(&Command::new("systemctl", ["daemon-reload"]))
                .map_err(err)?;
            Ok(())
        }
        Resource::UnitActive { unit, .. } => {
            ctx.runner
                .run_checked(&Command::new("systemctl", ["restart", unit.as_str()]))
                .map_err(err)?;
            Ok(())
        }
        Resource::ImagesImported { ctr, images } => {
            // The archives were verified when they were staged (earlier
            // ImageArchive resources); import only what containerd lacks.
            for image in containers::missing_images(ctr, images, ctx).map_err(host_err(resource))? {
                ctx.runner
                    .run_checked(&Command::new(
                        ctr.as_str(),
                        ["-n", "k8s.io", "images", "import", image.archive.as_str()],
                    ))
                    .map_err(host_err(resource))?;
            }
            Ok(())
        }
        Resource::Absent { path } => removal::remove_tree(root, Path::new(path)).map_err(err),
        Resource::DirEmpty { dir } => removal::empty(dir, ctx).map_err(err),
        Resource::UnitStopped { unit } => {
            ctx.runner
                .run_checked(&Command::new("systemctl", ["stop", unit.as_str()]))
                .map_err(err)?;
            Ok(())
        }
        Resource::Unmounted { dir } => removal::unmount(dir, ctx).map_err(err),
        Resource::ContainersRemoved { ctr } => {
            containers::remove_all(ctr, ctx);
            Ok(())
        }
        Resource::Routes { protocol, routes } => {
            network::converge_routes(*protocol, routes, ctx).map_err(err)
        }
        Resource::LinkAbsent { name } => network::delete_link(name, ctx).map_err(err),
    }
}

#[cfg(test)]
mod tests {
    //! The live image import against a scripted `ctr` (a stand-in Runner:
    //! the real import is exercised by crates/kprov/tests/images.rs, where
    //! containerd in a booted root imports the staged archives).

    use std::cell::RefCell;

    use kprov_artifacts::LocalDirSource;
    use kprov_host::{CommandOutput, Root, Runner};

    use crate::resource::ImageImport;

    use super::*;

    /// Answers `ctr images ls -q` with the images it holds; an import adds
    /// the image whose archive it was given.
    struct FakeCtr {
        held: RefCell<Vec<String>>,
        imports: RefCell<Vec<String>>,
    }

    impl Runner for FakeCtr {
        fn run(&self, cmd: &Command) -> Result<CommandOutput, HostError> {
            let args: Vec<&str> = cmd.args.iter().map(String::as_str).collect();
            let stdout = match args.as_slice() {
                ["-n", "k8s.io", "images", "ls", "-q"] => self.held.borrow().join("\n"),
                ["-n", "k8s.io", "images", "import", archive] => {
                    self.imports.borrow_mut().push(archive.to_string());
                    let name = archive.trim_end_matches(".tar").rsplit('/').next().unwrap();
                    self.held.borrow_mut().push(name.to_string());
                    String::new()
                }
                other => panic!("unexpected command {} {other:?}", cmd.program),
            };
            Ok(CommandOutput {
                success: true,
                status: "exit status 0".into(),
                stdout,
                stderr: String::new(),
            })
        }
    }

    /// A node where ctr does not run yet.
    struct NoCtr;

    impl Runner for NoCtr {
        fn run(&self, cmd: &Command) -> Result<CommandOutput, HostError> {
            Ok(CommandOutput {
                success: false,
                status: "exit status 1".into(),
                stdout: String::new(),
                stderr: format!("{}: connection refused", cmd.program),
            })
        }
    }

    #[test]
    fn before_containerd_runs_every_image_is_missing_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("SHA256SUMS"), "").unwrap();
        let artifacts = LocalDirSource::open(dir.path()).unwrap();
        let root = Root::new("/").unwrap();
        let ctx = ApplyContext {
            root: &root,
            runner: &NoCtr,
            artifacts: &artifacts,
            dry_run: true,
        };
        let resource = Resource::ImagesImported {
            ctr: "/usr/bin/ctr".into(),
            images: vec![ImageImport {
                reference: "k8s.gcr.io/pause:3.2".into(),
                archive: "/var/lib/kprov/images/k8s.gcr.io_pause_3.2.tar".into(),
            }],
        };
        match check(&resource, &ctx).unwrap() {
            Status::Missing(why) => assert!(why.contains("connection refused"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(converge(&resource, &ctx).is_err());
    }

    #[test]
    fn live_import_brings_in_only_the_images_containerd_lacks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("SHA256SUMS"), "").unwrap();
        let artifacts = LocalDirSource::open(dir.path()).unwrap();
        let root = Root::new("/").unwrap();
        let runner = FakeCtr {
            held: RefCell::new(vec!["a".into(), "sha256:0123".into()]),
            imports: RefCell::default(),
        };
        let ctx = ApplyContext {
            root: &root,
            runner: &runner,
            artifacts: &artifacts,
            dry_run: false,
        };
        let image = |name: &str| ImageImport {
            reference: name.into(),
            archive: format!("/var/lib/kprov/images/{name}.tar"),
        };
        let resource = Resource::ImagesImported {
            ctr: "/usr/bin/ctr".into(),
            images: vec![image("a"), image("b"), image("c")],
        };
        assert_eq!(
            check(&resource, &ctx).unwrap(),
            Status::Missing("not in containerd: b c".into())
        );
        converge(&resource, &ctx).unwrap();
        assert_eq!(
            *runner.imports.borrow(),
            ["/var/lib/kprov/images/b.tar", "/var/lib/kprov/images/c.tar"]
        );
        assert_eq!(check(&resource, &ctx).unwrap(), Status::Ok);
    }
}
