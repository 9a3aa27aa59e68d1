//! The boot partition's contents, decided: which kernel of the root boots,
//! and SYSLINUX's configuration for it.

use std::cmp::Ordering;

use crate::guid::Guid;

/// A kernel and its initrd, by their file names in the root's `/boot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// The version (`6.1.0-50-cloud-amd64`).
    pub version: String,
    /// `vmlinuz-VERSION`.
    pub image: String,
    /// `initrd.img-VERSION`.
    pub initrd: String,
}

/// The newest kernel among `names` (a `/boot` listing) that has an
/// initrd beside it.
pub fn newest_kernel<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Kernel> {
    let names: Vec<&str> = names.into_iter().collect();
    names
        .iter()
        .filter_map(|name| name.strip_prefix("vmlinuz-"))
        .filter(|version| names.contains(&format!("initrd.img-{version}").as_str()))
        .max_by(|a, b| compare_versions(a, b))
        .map(|version| Kernel {
            version: version.to_string(),
            image: format!("vmlinuz-{version}"),
            initrd: format!("initrd.img-{version}"),
        })
}

/// Orders versions by their runs of digits as numbers, so that
/// `6.1.0-10` comes after `6.1.0-9`.
fn compare_versions(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let order = match (x, y) {
            ((true, x), (true, y)) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then_with(|| x.trim_start_matches('0').cmp(y.trim_start_matches('0'))),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// The file names the kernel and initrd get on the boot partition.
pub const KERNEL_FILE: &str = "vmlinuz";
/// See [`KERNEL_FILE`].
pub const INITRD_FILE: &str = "initrd.img";

/// `syslinux.cfg`: boot the kernel at once with the root partition by its
/// GUID (the disk's name can differ from machine to machine) read-write,
/// and `kernel_args` after.
pub fn syslinux_config(root: Guid, kernel_args: &[String]) -> String {
    let mut append = format!("root=PARTUUID={root} rw");
    for arg in kernel_args {
        append.push(' ');
        append.push_str(arg);
    }
    format!(
        "# Written by kprov image build.\n\
         DEFAULT kprov\n\
         PROMPT 0\n\
         TIMEOUT 0\n\
         LABEL kprov\n\
         \x20 LINUX /{KERNEL_FILE}\n\
         \x20 INITRD /{INITRD_FILE}\n\
         \x20 APPEND {append}\n"
    )
}

/// Kernel arguments that cannot go into `syslinux.cfg`'s one APPEND line.
pub fn check_kernel_arg(arg: &str) -> Result<(), String> {
    if arg.is_empty() || arg.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "kernel argument {arg:?}: expected one word without spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_kernel_with_an_initrd_is_chosen_by_numeric_version() {
        let names = [
            "vmlinuz-6.1.0-9-amd64",
            "initrd.img-6.1.0-9-amd64",
            "vmlinuz-6.1.0-10-amd64",
            "initrd.img-6.1.0-10-amd64",
            "vmlinuz-6.1.0-11-amd64", // no initrd: not bootable here
            "config-6.1.0-11-amd64",
        ];
        let kernel = newest_kernel(names).unwrap();
        assert_eq!(kernel.version, "6.1.0-10-amd64");
        assert_eq!(kernel.initrd, "initrd.img-6.1.0-10-amd64");
        assert_eq!(newest_kernel(["config-6.1.0-9-amd64"]), None);
    }

    #[test]
    fn the_configuration_boots_the_root_partition_by_guid_with_the_extra_arguments() {
        let root = Guid::derived("s", "root");
        let text = syslinux_config(root, &["console=ttyS0,115200".to_string()]);
        assert!(text.contains("DEFAULT kprov\n"), "{text}");
        assert!(text.contains("  LINUX /vmlinuz\n"), "{text}");
        assert!(
            text.contains(&format!(
                "  APPEND root=PARTUUID={root} rw console=ttyS0,115200\n"
            )),
            "{text}"
        );
        assert!(check_kernel_arg("quiet").is_ok());
        assert!(check_kernel_arg("a b").unwrap_err().contains("\"a b\""));
        assert!(check_kernel_arg("a\nAPPEND x").is_err());
    }
}
