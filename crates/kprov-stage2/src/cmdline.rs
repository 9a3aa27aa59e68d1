//! What stage2 is told on the kernel command line, when it runs as the
//! initrd's `/init`:
//!
//! - `kprov.manifest=URL` (required): the image's manifest;
//! - `kprov.disk=PATH`: the disk to write (default: the first disk that is
//!   not removable, by name);
//! - `kprov.interface=NAME`, or `BOOTIF=01-aa-bb-cc-dd-ee-ff` as iPXE and
//!   pxelinux pass it: the interface to configure (default: the first
//!   with a link);
//! - `kprov.on-failure=reboot|poweroff|halt`: after a failed install
//!   (default reboot, so that the machine netboots and tries again);
//! - `kprov.attempts=N`: attempts per request (default 10);
//! - `kprov.seed=URL`: the machine's NoCloud seed on the netboot server,
//!   where stage2 reports the image installed (`URL` + `installed`).

/// The settings read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSettings {
    /// `kprov.manifest`.
    pub manifest: String,
    /// `kprov.disk`.
    pub disk: Option<String>,
    /// `kprov.interface`.
    pub interface: Option<String>,
    /// `BOOTIF`'s MAC address, lowercase with colons.
    pub boot_mac: Option<String>,
    /// `kprov.on-failure`.
    pub on_failure: OnFailure,
    /// `kprov.attempts`.
    pub attempts: u32,
    /// `kprov.seed`.
    pub seed: Option<String>,
}

/// What stage2 does after a failed install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Reboot (and netboot again).
    Reboot,
    /// Power off.
    Poweroff,
    /// Stay, with the cause on the console.
    Halt,
}

/// Reads the settings from `/proc/cmdline`'s text; errors name the
/// parameter and what was expected.
pub fn parse(cmdline: &str) -> Result<BootSettings, String> {
    let mut manifest = None;
    let mut settings = BootSettings {
        manifest: String::new(),
        disk: None,
        interface: None,
        boot_mac: None,
        on_failure: OnFailure::Reboot,
        attempts: 10,
        seed: None,
    };
    for word in cmdline.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        match key {
            "kprov.manifest" => {
                if !(value.starts_with("http://") || value.starts_with("https://")) {
                    return Err(format!(
                        "kprov.manifest={value}: expected an http:// or https:// URL"
                    ));
                }
                manifest = Some(value.to_string());
            }
            "kprov.disk" => {
                if !value.starts_with("/dev/") {
                    return Err(format!("kprov.disk={value}: expected a /dev/ path"));
                }
                settings.disk = Some(value.to_string());
            }
            "kprov.interface" => settings.interface = Some(value.to_string()),
            "kprov.seed" => {
                if !(value.starts_with("http://") || value.starts_with("https://"))
                    || !value.ends_with('/')
                {
                    return Err(format!(
                        "kprov.seed={value}: expected an http:// URL ending in /"
                    ));
                }
                settings.seed = Some(value.to_string());
            }
            "BOOTIF" => {
                // Hardware type 01 (Ethernet), then the MAC with dashes.
                let mac = value.strip_prefix("01-").unwrap_or(value).replace('-', ":");
                let valid = mac.len() == 17
                    && mac
                        .split(':')
                        .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
                if !valid {
                    return Err(format!("BOOTIF={value}: expected 01-aa-bb-cc-dd-ee-ff"));
                }
                settings.boot_mac = Some(mac.to_ascii_lowercase());
            }
            "kprov.on-failure" => {
                settings.on_failure = match value {
                    "reboot" => OnFailure::Reboot,
                    "poweroff" => OnFailure::Poweroff,
                    "halt" => OnFailure::Halt,
                    _ => {
                        return Err(format!(
                            "kprov.on-failure={value}: expected reboot, poweroff or halt"
                        ))
                    }
                }
            }
            "kprov.attempts" => {
                settings.attempts =
                    value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("kprov.attempts={value}: expected a number above 0")
                    })?;
            }
            _ => {}
        }
    }
    settings.manifest = manifest.ok_or(
        "no kprov.manifest=URL on the kernel command line: the netboot server's script passes it",
    )?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_come_from_their_parameters_and_the_rest_is_ignored() {
        let settings = parse(
            "console=ttyS0 kprov.manifest=http://10.0.0.1:8080/files/node.img.zst.json kprov.seed=http://10.0.0.1:8080/machines/52-54-00-ab-cd-ef/tok/ BOOTIF=01-52-54-00-AB-CD-EF kprov.disk=/dev/nvme0n1 kprov.on-failure=poweroff kprov.attempts=3 quiet",
        )
        .unwrap();
        assert_eq!(
            settings.manifest,
            "http://10.0.0.1:8080/files/node.img.zst.json"
        );
        assert_eq!(settings.boot_mac.as_deref(), Some("52:54:00:ab:cd:ef"));
        assert_eq!(settings.disk.as_deref(), Some("/dev/nvme0n1"));
        assert_eq!(settings.on_failure, OnFailure::Poweroff);
        assert_eq!(settings.attempts, 3);
        assert_eq!(
            settings.seed.as_deref(),
            Some("http://10.0.0.1:8080/machines/52-54-00-ab-cd-ef/tok/")
        );
        let defaults = parse("kprov.manifest=https://x/m.json").unwrap();
        assert_eq!(defaults.on_failure, OnFailure::Reboot);
        assert_eq!(
            (defaults.disk, defaults.interface, defaults.attempts),
            (None, None, 10)
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        for (cmdline, expected) in [
            ("quiet", "no kprov.manifest=URL"),
            (
                "kprov.manifest=ftp://x",
                "kprov.manifest=ftp://x: expected an http",
            ),
            (
                "kprov.manifest=http://x kprov.disk=vda",
                "kprov.disk=vda: expected a /dev/ path",
            ),
            (
                "kprov.manifest=http://x BOOTIF=01-52-54",
                "BOOTIF=01-52-54: expected",
            ),
            (
                "kprov.manifest=http://x kprov.on-failure=later",
                "expected reboot, poweroff or halt",
            ),
            (
                "kprov.manifest=http://x kprov.attempts=0",
                "kprov.attempts=0: expected a number",
            ),
            (
                "kprov.manifest=http://x kprov.seed=http://s/tok",
                "kprov.seed=http://s/tok: expected an http:// URL ending in /",
            ),
        ] {
            let error = parse(cmdline).unwrap_err();
            assert!(error.contains(expected), "{cmdline}: {error}");
        }
    }
}
