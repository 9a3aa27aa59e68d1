//! The side of `kprov initrd build` that touches the machine: reads the
//! kernel's modules from a root and the static kprov binary, and writes
//! the gzip-compressed cpio whose `/init` is kprov (running stage2).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::bootloader;
use crate::build::{boot_files, io, BuildError, Replacement};
use crate::initrd::{Cpio, ModuleDeps, DEFAULT_MODULES, MODULE_LIST};

/// What to build.
#[derive(Debug, Clone)]
pub struct InitrdBuild {
    /// The root whose kernel the initrd is for (the image's root).
    pub root: PathBuf,
    /// The kernel version; `None` takes the root's newest.
    pub kernel: Option<String>,
    /// Modules beyond [`DEFAULT_MODULES`].
    pub modules: Vec<String>,
    /// The static kprov binary that becomes `/init`.
    pub kprov: PathBuf,
    /// The initrd to write.
    pub output: PathBuf,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct InitrdBuilt {
    /// The kernel version.
    pub kernel: String,
    /// The kernel image to boot it with (in the root's /boot).
    pub kernel_image: PathBuf,
    /// The modules in it, in load order (paths under lib/modules/VERSION).
    pub modules: Vec<String>,
    /// The initrd's bytes.
    pub size: u64,
}

/// Builds the initrd.
pub fn build_initrd(request: &InitrdBuild) -> Result<InitrdBuilt, BuildError> {
    let root_error = |reason: String| BuildError::Root {
        path: request.root.clone(),
        reason,
    };
    let boot = request.root.join("boot");
    let names = boot_files(&request.root).map_err(root_error)?;
    let version = match &request.kernel {
        Some(version) if names.contains(&format!("vmlinuz-{version}")) => version.clone(),
        Some(version) => {
            return Err(root_error(format!(
                "/boot has no vmlinuz-{version} (the --kernel asked for)"
            )))
        }
        None => {
            bootloader::newest_kernel(names.iter().map(String::as_str))
                .ok_or_else(|| root_error("/boot has no vmlinuz-VERSION with an initrd.img-VERSION: install a kernel package".into()))?
                .version
        }
    };
    let modules_dir = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|dir| request.root.join(dir).join(&version))
        .find(|dir| dir.join("modules.dep").is_file())
        .ok_or_else(|| {
            root_error(format!(
                "has no lib/modules/{version}/modules.dep (run depmod {version} in the root)"
            ))
        })?;
    let deps = ModuleDeps::parse(
        &fs::read_to_string(modules_dir.join("modules.dep"))
            .map_err(io(format!("reading {}/modules.dep", modules_dir.display())))?,
    );
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(crate::initrd::module_name).collect();
    let unknown: Vec<&String> = request
        .modules
        .iter()
        .filter(|m| !deps.has(m) && !builtin.contains(&m.replace('-', "_")))
        .collect();
    if !unknown.is_empty() {
        return Err(root_error(format!(
            "kernel {version} has no module {} (see lib/modules/{version}/modules.dep)",
            unknown
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let modules = deps.closure(
        DEFAULT_MODULES
            .iter()
            .copied()
            .chain(request.modules.iter().map(String::as_str)),
    );

    let init =
        fs::read(&request.kprov).map_err(io(format!("reading {}", request.kprov.display())))?;
    check_static(&init).map_err(|reason| BuildError::Root {
        path: request.kprov.clone(),
        reason,
    })?;
    let mtime = fs::metadata(boot.join(format!("vmlinuz-{version}")))
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            u32::try_from(m.mtime().max(0)).unwrap_or(0)
        })
        .map_err(io(format!("reading vmlinuz-{version}")))?;

    let tmp = Replacement::beside(&request.output, "kprov-initrd")?;
    let gzip = flate2::write::GzEncoder::new(
        io::BufWriter::new(tmp.file()),
        flate2::Compression::default(),
    );
    let mut cpio = Cpio::new(gzip, mtime);
    let write_error = io(format!("writing {}", request.output.display()));
    let archive = (|| -> io::Result<()> {
        for d in ["dev", "proc", "sys", "run", "tmp", "etc", "etc/kprov"] {
            cpio.dir(d, 0o755)?;
        }
        cpio.char_device("dev/console", 0o600, 5, 1)?;
        cpio.file("init", 0o755, &init)?;
        let base = format!("lib/modules/{version}");
        let mut made = std::collections::BTreeSet::new();
        for module in &modules {
            let path = format!("{base}/{module}");
            let mut parent = String::new();
            for part in Path::new(&path).parent().into_iter().flat_map(|p| p.iter()) {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(&part.to_string_lossy());
                if made.insert(parent.clone()) {
                    cpio.dir(&parent, 0o755)?;
                }
            }
            let data = fs::read(modules_dir.join(module))?;
            cpio.file(&path, 0o644, &data)?;
        }
        let list: String = modules.iter().map(|m| format!("{base}/{m}\n")).collect();
        cpio.file(MODULE_LIST, 0o644, list.as_bytes())?;
        Ok(())
    })();
    archive.map_err(write_error)?;
    let gzip = cpio
        .finish()
        .map_err(io(format!("writing {}", request.output.display())))?;
    gzip.finish()
        .and_then(|mut w| w.flush())
        .map_err(io(format!("writing {}", request.output.display())))?;
    let size = tmp.commit()?;
    Ok(InitrdBuilt {
        kernel_image: boot.join(format!("vmlinuz-{version}")),
        kernel: version,
        modules,
        size,
    })
}

/// Refuses what cannot be an initrd's `/init` on its own: anything but a
/// 64-bit x86 ELF executable without a program interpreter.
fn check_static(elf: &[u8]) -> Result<(), String> {
    let expected = "expected the static kprov executable (x86-64 ELF without a dynamic loader)";
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[18] != 62 {
        return Err(format!("is not an x86-64 ELF file: {expected}"));
    }
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    for i in 0..count {
        let at = phoff + i * size;
        let Some(kind) = elf.get(at..at + 4) else {
            return Err(format!("has a truncated program header table: {expected}"));
        };
        // PT_INTERP: linked dynamically; nothing in the initrd can load it.
        if kind == 3u32.to_le_bytes() {
            return Err(format!("is dynamically linked: {expected}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_static_x86_64_elf_can_be_init() {
        let own = fs::read("/proc/self/exe").unwrap();
        // Test executables are built static, as kprov is (.cargo/config.toml).
        assert_eq!(check_static(&own), Ok(()));
        let dynamic = fs::read("/bin/sh").unwrap();
        assert!(check_static(&dynamic)
            .unwrap_err()
            .contains("dynamically linked"));
        assert!(check_static(b"#!/bin/sh\necho hi\n")
            .unwrap_err()
            .contains("not an x86-64 ELF"));
    }
}
