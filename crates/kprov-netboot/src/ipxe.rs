//! What the HTTP server renders per machine: the iPXE script, the
//! NoCloud documents, and the per-machine token that guards them.

use sha2::{Digest, Sha256};

use crate::machine::{Boot, MacAddr, Profile};

/// Per-machine tokens: derived from a server secret and the MAC, so they
/// survive restarts (the secret is kept in the state directory) and need
/// no table.
#[derive(Clone)]
pub struct Tokens {
    secret: [u8; 32],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(..)")
    }
}

impl Tokens {
    /// Tokens from a secret.
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    /// The token of `mac` (32 hex digits).
    pub fn for_mac(&self, mac: &MacAddr) -> String {
        let mut h = Sha256::new();
        h.update(b"kprov-netboot-token\0");
        h.update(self.secret);
        h.update(mac.0);
        hex::encode(&h.finalize()[..16])
    }

    /// Whether `token` is `mac`'s (compared without early exit).
    pub fn check(&self, mac: &MacAddr, token: &str) -> bool {
        let want = self.for_mac(mac);
        want.len() == token.len()
            && want
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The NoCloud seed URL of a machine (cloud-init's `ds=nocloud-net;s=`).
pub fn seed_url(http_base: &str, mac: &MacAddr, token: &str) -> String {
    format!("{http_base}/machines/{}/{token}/", mac.dashed())
}

/// The iPXE script of a machine: boot its kernel and initrd with the
/// NoCloud seed on the command line, or `exit` (fall through to the local
/// disk) once it is installed.
pub fn render_script(
    name: &str,
    mac: &MacAddr,
    profile: &Profile,
    http_base: &str,
    token: &str,
) -> String {
    let mut s = String::from("#!ipxe\n");
    s.push_str(&format!("echo kprov: {name} ({mac})\n"));
    if profile.installed {
        s.push_str("echo kprov: installed, booting from the local disk\nexit\n");
        return s;
    }
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

    fn profile(installed: bool) -> Profile {
        Profile {
            role: None,
            boot: Boot::Kernel {
                kernel: RelPath::new("k/vmlinuz").unwrap(),
                initrd: Some(RelPath::new("k/initrd.img").unwrap()),
                cmdline: "console=ttyS0".into(),
            },
            user_data: None,
            installed,
        }
    }

    #[test]
    fn scripts_boot_the_kernel_with_the_seed_or_exit_once_installed() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let s = render_script(
            "node1",
            &mac,
            &profile(false),
            "http://10.0.0.1:8080",
            "tok",
        );
        assert_eq!(
            s,
            "#!ipxe\necho kprov: node1 (52:54:00:00:00:01)\n\
            kernel http://10.0.0.1:8080/files/k/vmlinuz initrd=initrd.img console=ttyS0 \
            ds=nocloud-net;s=http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/ \
            kprov.seed=http://10.0.0.1:8080/machines/52-54-00-00-00-01/tok/\n\
            initrd http://10.0.0.1:8080/files/k/initrd.img\nboot\n"
        );
        let s = render_script("node1", &mac, &profile(true), "http://x", "tok");
        assert!(s.ends_with("exit\n") && !s.contains("kernel"));
    }

    #[test]
    fn tokens_are_per_machine_and_per_secret() {
        let a = MacAddr([2, 0, 0, 0, 0, 1]);
        let b = MacAddr([2, 0, 0, 0, 0, 2]);
        let t = Tokens::new([7; 32]);
        assert_eq!(t.for_mac(&a).len(), 32);
        assert!(t.check(&a, &t.for_mac(&a)));
        assert!(!t.check(&a, &t.for_mac(&b)));
        assert!(!t.check(&a, ""));
        assert_ne!(Tokens::new([8; 32]).for_mac(&a), t.for_mac(&a));
    }
}
