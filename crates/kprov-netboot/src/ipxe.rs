//! What the HTTP server renders per machine: the iPXE script and the
//! NoCloud documents. The tokens in their URLs come from [`crate::token`]
//! and [`crate::state`].

use crate::config::Stage2Boot;
use crate::machine::{Boot, MacAddr, Profile};
use crate::paths::RelPath;

/// The NoCloud seed URL of a machine (cloud-init's `ds=nocloud-net;s=`).
pub fn seed_url(http_base: &str, mac: &MacAddr, token: &str) -> String {
    format!("{http_base}/machines/{}/{token}/", mac.dashed())
}

/// The iPXE script of a machine: boot its kernel and initrd with the
/// NoCloud seed (with its seed token) on the command line; for an image
/// machine, boot the stage2 kernel and initrd with the image's manifest,
/// the seed (its installed report goes there) and the boot interface's
/// MAC; without a token (installed), `exit` to fall through to the local
/// disk.
pub fn render_script(
    name: &str,
    mac: &MacAddr,
    profile: &Profile,
    http_base: &str,
    seed_token: Option<&str>,
    stage2: Option<&Stage2Boot>,
) -> String {
    let mut s = String::from("#!ipxe\n");
    s.push_str(&format!("echo kprov: {name} ({mac})\n"));
    let Some(token) = seed_token else {
        s.push_str("echo kprov: installed, booting from the local disk\nexit\n");
        return s;
    };
    let seed = seed_url(http_base, mac, token);
    match &profile.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => boot_kernel(
            &mut s,
            http_base,
            kernel,
            initrd.as_ref(),
            cmdline,
            &format!("ds=nocloud-net;s={seed} kprov.seed={seed}"),
        ),
        Boot::Image { image } => match stage2 {
            Some(stage2) => boot_kernel(
                &mut s,
                http_base,
                &stage2.kernel,
                Some(&stage2.initrd),
                &stage2.cmdline,
                &format!(
                    "kprov.manifest={http_base}/files/{image}.json kprov.seed={seed} BOOTIF=01-{}",
                    mac.dashed()
                ),
            ),
            None => s.push_str(&format!(
                "echo kprov: image {http_base}/files/{image} needs the stage2 initrd: set stage2 (kernel, initrd) in the server's configuration\nexit\n"
            )),
        },
    }
    s
}

/// `kernel` (with the user's `cmdline`, then kprov's `arguments`),
/// `initrd` and `boot` lines.
fn boot_kernel(
    s: &mut String,
    http_base: &str,
    kernel: &RelPath,
    initrd: Option<&RelPath>,
    cmdline: &str,
    arguments: &str,
) {
    let mut line = format!("kernel {http_base}/files/{kernel}");
    if let Some(initrd) = initrd {
        // The initrd= argument lets EFI stub kernels find it.
        line.push_str(&format!(
            " initrd={}",
            initrd.as_str().rsplit('/').next().unwrap_or("initrd")
        ));
    }
    if !cmdline.is_empty() {
        line.push(' ');
        line.push_str(cmdline);
    }
    line.push(' ');
    line.push_str(arguments);
    line.push('\n');
    s.push_str(&line);
    if let Some(initrd) = initrd {
        s.push_str(&format!("initrd {http_base}/files/{initrd}\n"));
    }
    s.push_str("boot\n");
}

/// The NoCloud meta-data document.
pub fn meta_data(name: &str, hostname: Option<&str>) -> String {
    format!(
        "instance-id: {name}\nlocal-hostname: {}\n",
        hostname.unwrap_or(name)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::paths::RelPath;

    fn profile() -> Profile {
        Profile {
            role: None,
            boot: Boot::Kernel {
                kernel: RelPath::new("k/vmlinuz").unwrap(),
                initrd: Some(RelPath::new("k/initrd.img").unwrap()),
                cmdline: "console=ttyS0".into(),
            },
            user_data: None,
            installed: false,
        }
    }

    #[test]
    fn scripts_boot_the_kernel_with_the_seed_or_exit_without_one() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let s = render_script(
            "node1",
            &mac,
            &profile(),
            "http://10.0.0.1:8080",
            Some("tok"),
            None,
        );
        assert_eq!(
            s,
            "#!ipxe\necho kprov: node1 (52:54:00:00:00:01)\n\
            kernel http://10.0.0.1:8080/files/k/vmlinuz initrd=initrd.img console=ttyS0 \
            ds=nocloud-net;s=http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/ \
            kprov.seed=http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/\n\
            initrd http://10.0.0.1:8080/files/k/initrd.img\nboot\n"
        );
        let s = render_script("node1", &mac, &profile(), "http://x", None, None);
        assert!(s.ends_with("exit\n") && !s.contains("kernel"));
    }

    #[test]
    fn image_machines_boot_stage2_with_the_manifest_the_seed_and_their_mac() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let mut image = profile();
        image.boot = Boot::Image {
            image: RelPath::new("images/node.img.zst").unwrap(),
        };
        let stage2 = Stage2Boot {
            kernel: RelPath::new("stage2/vmlinuz").unwrap(),
            initrd: RelPath::new("stage2/stage2.initrd").unwrap(),
            cmdline: "console=ttyS0".into(),
        };
        let s = render_script(
            "node1",
            &mac,
            &image,
            "http://10.0.0.1",
            Some("tok"),
            Some(&stage2),
        );
        assert_eq!(
            s,
            "#!ipxe\necho kprov: node1 (52:54:00:00:00:01)\n\
            kernel http://10.0.0.1/files/stage2/vmlinuz initrd=stage2.initrd console=ttyS0 \
            kprov.manifest=http://10.0.0.1/files/images/node.img.zst.json \
            kprov.seed=http://10.0.0.1/machines/52-54-00-00-00-01/tok/ BOOTIF=01-52-54-00-00-00-01\n\
            initrd http://10.0.0.1/files/stage2/stage2.initrd\nboot\n"
        );
        let without = render_script("node1", &mac, &image, "http://10.0.0.1", Some("tok"), None);
        assert!(without.contains("set stage2 (kernel, initrd)") && without.ends_with("exit\n"));
        let installed = render_script(
            "node1",
            &mac,
            &image,
            "http://10.0.0.1",
            None,
            Some(&stage2),
        );
        assert!(installed.ends_with("exit\n") && !installed.contains("kernel"));
    }
}
