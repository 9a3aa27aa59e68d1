//! The stage2 initrd's contents, decided and encoded: which kernel modules
//! go in (the ones asked for and everything they depend on, in the order
//! they must load), and the newc cpio archive the kernel unpacks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

/// Modules for the NICs and disks of common machines and VMs; the ones a
/// kernel does not have (or has built in) are left out.
pub const DEFAULT_MODULES: &[&str] = &[
    // VMs
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "vmxnet3",
    "hv_netvsc",
    "hv_storvsc",
    // NICs
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "r8169",
    "tg3",
    "bnxt_en",
    "mlx4_en",
    "mlx5_core",
    // disks
    "nvme",
    "ahci",
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
];

/// The file in the initrd that lists the modules to load, in order.
pub const MODULE_LIST: &str = "etc/kprov/stage2-modules";

/// A module's name as the kernel knows it: the file name without `.ko`
/// (and a compression suffix), `-` read as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// `modules.dep` read: each module's path and the paths it needs.
#[derive(Debug, Default)]
pub struct ModuleDeps {
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

impl ModuleDeps {
    /// Parses `modules.dep` (`path: dependency-path ...` per line).
    pub fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            by_name.insert(module_name(path), (path.to_string(), deps));
        }
        ModuleDeps { by_name }
    }

    /// Whether the kernel has `name` as a loadable module.
    pub fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(&name.replace('-', "_"))
    }

    /// The paths of `names` and all they depend on, each after its
    /// dependencies. Names the kernel does not have are skipped.
    pub fn closure<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            if let Some((path, _)) = self.by_name.get(&name.replace('-', "_")) {
                self.visit(path, &mut seen, &mut order);
            }
        }
        order
    }

    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        if let Some((_, deps)) = self.by_name.get(&module_name(path)) {
            for dep in deps {
                self.visit(dep, seen, order);
            }
        }
        order.push(path.to_string());
    }
}

/// Writes a newc ("070701") cpio archive, the initramfs format.
pub struct Cpio<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
    mtime: u32,
    device: (u32, u32),
}

impl<W: Write> Cpio<W> {
    /// An archive whose entries are all dated `mtime` (reproducible).
    pub fn new(out: W, mtime: u32) -> Self {
        Cpio {
            out,
            written: 0,
            next_inode: 1,
            mtime,
            device: (0, 0),
        }
    }

    /// A directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, 0o040000 | mode, 2, &[])
    }

    /// A regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, 0o100000 | mode, 1, data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, 0o120777, 1, target.as_bytes())
    }

    /// A character device (`/dev/console` must exist before devtmpfs is
    /// mounted: the kernel opens it for `/init`'s output).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.device = (major, minor);
        let result = self.entry(path, 0o020000 | mode, 1, &[]);
        self.device = (0, 0);
        result
    }

    /// Ends the archive; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, &[])?;
        Ok(self.out)
    }

    fn entry(&mut self, path: &str, mode: u32, links: u32, data: &[u8]) -> io::Result<()> {
        let name_size = path.len() + 1;
        let inode = self.next_inode;
        self.next_inode += 1;
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let fields = [
            inode,
            mode,
            0,
            0,
            links,
            self.mtime,
            size,
            0,
            0,
            self.device.0,
            self.device.1,
            name_size as u32,
            0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(path.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..pad as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz:
";

    #[test]
    fn every_module_comes_after_what_it_needs_once_and_missing_ones_are_skipped() {
        let deps = ModuleDeps::parse(DEP);
        let order = deps.closure(["virtio_net", "virtio-blk", "nvme", "e1000e"]);
        let position = |name: &str| {
            order
                .iter()
                .position(|p| module_name(p) == name)
                .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
        };
        assert_eq!(order.len(), 7, "{order:?}");
        assert!(position("virtio_ring") < position("virtio"));
        assert!(position("virtio") < position("virtio_net"));
        assert!(position("failover") < position("net_failover"));
        assert!(position("net_failover") < position("virtio_net"));
        assert!(position("virtio") < position("virtio_blk"));
        assert_eq!(module_name(&order[6]), "e1000e");
        assert!(deps.has("virtio-net") && !deps.has("nvme"));
    }

    #[test]
    fn the_archive_is_newc_with_padded_names_and_data_and_a_trailer() {
        let mut cpio = Cpio::new(Vec::new(), 0x6000_0000);
        cpio.dir("etc", 0o755).unwrap();
        cpio.file("etc/a", 0o644, b"hello").unwrap();
        cpio.symlink("init", "/bin/kprov").unwrap();
        cpio.char_device("dev/console", 0o600, 5, 1).unwrap();
        let bytes = cpio.finish().unwrap();
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(bytes.len() % 4, 0);
        // The second header starts on the 4-byte boundary after the first
        // header (110 bytes) and "etc\0".
        let second = 116;
        assert_eq!(&bytes[second..second + 6], b"070701");
        // Its mode, size and name: a 0644 file of 5 bytes named etc/a.
        let field = |at: usize, n: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&bytes[at + 6 + 8 * n..at + 14 + 8 * n]).unwrap(),
                16,
            )
            .unwrap()
        };
        assert_eq!(field(second, 1), 0o100644);
        assert_eq!(field(second, 6), 5);
        assert_eq!(field(second, 5), 0x6000_0000);
        assert_eq!(&bytes[second + 110..second + 116], b"etc/a\0");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("hello"));
        assert!(text.contains("init\0"));
        // dev/console: a character device 5,1 (rdevmajor, rdevminor).
        let console = text.find("dev/console").unwrap() - 110;
        assert_eq!(field(console, 1), 0o020600);
        assert_eq!((field(console, 9), field(console, 10)), (5, 1));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
