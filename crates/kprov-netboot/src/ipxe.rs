//! What the HTTP server renders per machine: the iPXE script and the
//! NoCloud documents. The tokens in their URLs come from [`crate::token`]
//! and [`crate::state`].

use crate::machine::{Boot, MacAddr, Profile};

/// The NoCloud seed URL of a machine (cloud-init's `ds=nocloud-net;s=`).
pub fn seed_url(http_base: &str, mac: &MacAddr, token: &str) -> String {
    format!("{http_base}/machines/{}/{token}/", mac.dashed())
}

/// The iPXE script of a machine: boot its kernel and initrd with the
/// NoCloud seed (with its seed token) on the command line, or, without a
/// token (installed), `exit` to fall through to the local disk.
pub fn render_script(
    name: &str,
    mac: &MacAddr,
    profile: &Profile,
    http_base: &str,
    seed_token: Option<&str>,
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
        } => {
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
            line.push_str(&format!(" ds=nocloud-net;s={seed} kprov.seed={seed}\n"));
            s.push_str(&line);
            if let Some(initrd) = initrd {
                s.push_str(&format!("initrd {http_base}/files/{initrd}\n"));
            }
            s.push_str("boot\n");
        }
        Boot::Image { image } => {
            // The stage2 writer (a later issue) boots with the image URL.
            s.push_str(&format!(
                "echo kprov: image {http_base}/files/{image} needs the stage2 initrd, not configured here\nexit\n"
            ));
        }
    }
    s
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
        );
        assert_eq!(
            s,
            "#!ipxe\necho kprov: node1 (52:54:00:00:00:01)\n\
            kernel http://10.0.0.1:8080/files/k/vmlinuz initrd=initrd.img console=ttyS0 \
            ds=nocloud-net;s=http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/ \
            kprov.seed=http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/\n\
            initrd http://10.0.0.1:8080/files/k/initrd.img\nboot\n"
        );
        let s = render_script("node1", &mac, &profile(), "http://x", None);
        assert!(s.ends_with("exit\n") && !s.contains("kernel"));
    }
}
