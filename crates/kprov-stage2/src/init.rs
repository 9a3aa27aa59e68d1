//! Stage2 as the initrd's `/init` (PID 1): mount the kernel's
//! filesystems, load the NIC and disk modules the initrd carries, read
//! the settings from the kernel command line, find the disk and the boot
//! interface, install, and reboot into the installed system. PID 1 must
//! never exit (the kernel panics), so every failure ends in the action
//! `kprov.on-failure` names, with the cause on the console.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::mount::{mount, MountFlags};
use rustix::system::{reboot, RebootCommand};

use crate::cmdline::{self, BootSettings, OnFailure};
use crate::install::Install;

/// The module list `kprov initrd build` writes (kprov-image's MODULE_LIST).
const MODULE_LIST: &str = "/etc/kprov/stage2-modules";

/// How long devices may take to appear once their drivers are loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// How long DHCP may take (servers that ping before offering are slow).
const DHCP_WAIT: Duration = Duration::from_secs(60);

/// Runs stage2 as PID 1. Never returns.
pub fn run() -> ! {
    let on_failure = match boot() {
        Ok(()) => {
            say("installed; rebooting into the installed system");
            rustix::fs::sync();
            let _ = reboot(RebootCommand::Restart);
            OnFailure::Halt
        }
        Err((error, on_failure)) => {
            say(&format!("failed: {error}"));
            on_failure
        }
    };
    rustix::fs::sync();
    match on_failure {
        OnFailure::Reboot => {
            say("rebooting in 10 s (kprov.on-failure=reboot)");
            std::thread::sleep(Duration::from_secs(10));
            let _ = reboot(RebootCommand::Restart);
        }
        OnFailure::Poweroff => {
            say("powering off (kprov.on-failure=poweroff)");
            let _ = reboot(RebootCommand::PowerOff);
        }
        OnFailure::Halt => say("halted (kprov.on-failure=halt)"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn say(line: &str) {
    eprintln!("kprov: stage2: {line}");
}

fn boot() -> Result<(), (String, OnFailure)> {
    // Until the command line is read, a failure reboots (the default).
    let early = |e: String| (e, OnFailure::Reboot);
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        mount(fstype, target, fstype, MountFlags::empty(), None)
            .map_err(|e| early(format!("mounting {fstype} on {target}: {e}")))?;
    }
    let cmdline = fs::read_to_string("/proc/cmdline")
        .map_err(|e| early(format!("reading /proc/cmdline: {e}")))?;
    let settings = cmdline::parse(&cmdline).map_err(early)?;
    let fail = |e: String| (e, settings.on_failure);
    let modules = load_modules(Path::new(MODULE_LIST));
    let mut line = format!("{} kernel modules loaded", modules.loaded);
    if !modules.absent.is_empty() {
        line.push_str(&format!(
            "; not for this machine: {}",
            modules.absent.join(", ")
        ));
    }
    if !modules.failed.is_empty() {
        line.push_str(&format!("; failed to load: {}", modules.failed.join(", ")));
    }
    say(&line);
    let disk = wait_for_disk(&settings).map_err(fail)?;
    say(&format!(
        "disk {} ({} MiB)",
        disk.display(),
        disk_bytes(&disk).unwrap_or(0) >> 20
    ));
    let (interface, mac) = wait_for_interface(&settings).map_err(fail)?;
    say(&format!("interface {interface} ({mac})"));
    let lease = crate::net::configure(&interface, DHCP_WAIT).map_err(fail)?;
    say(&crate::net::describe(&interface, &lease));
    let request = Install {
        manifest_url: settings.manifest.clone(),
        disk: disk.clone(),
        attempts: settings.attempts,
        backoff: Duration::from_secs(2),
        seed: settings.seed.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("starting the runtime: {e}")))?;
    let mut lines = crate::install::console_lines();
    let installed = runtime
        .block_on(crate::install::install(&request, &mut lines))
        .map_err(|e| fail(format!("installing onto {}: {e}", disk.display())))?;
    eprintln!("{}", crate::install::installed_line(&disk, &installed));
    if installed.seeded {
        say("the seed is in the image's NoCloud meta-data: cloud-init fetches the user-data at first boot");
    }
    if let Some(seed) = &settings.seed {
        runtime
            .block_on(report_installed(seed, settings.attempts))
            .map_err(fail)?;
        say("reported installed to the netboot server");
    }
    Ok(())
}

/// POSTs `SEED/installed`: the netboot server marks the machine installed
/// and its next script boots the local disk. Without the report the
/// machine would install again at its next netboot, so a failed report
/// fails the install.
async fn report_installed(seed: &str, attempts: u32) -> Result<(), String> {
    let url = format!("{seed}installed");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut last = String::new();
    for attempt in 1..=attempts {
        match client.post(&url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response) => last = format!("HTTP {}", response.status()),
            Err(e) => last = e.without_url().to_string(),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // The token is in the URL: name the server's answer, not the URL.
    Err(format!(
        "reporting installed to the netboot server failed {attempts} time(s): {last}"
    ))
}

/// What loading the initrd's modules did.
struct Modules {
    loaded: usize,
    /// Refused for want of their hardware (ENODEV: a Hyper-V bus driver
    /// on other machines), or needing such a module (ENOENT: unknown
    /// symbols): normal on any one machine.
    absent: Vec<String>,
    /// Anything else, with why.
    failed: Vec<String>,
}

/// Loads each module in the list, in order. Already loaded counts as
/// loaded.
fn load_modules(list: &Path) -> Modules {
    let mut modules = Modules {
        loaded: 0,
        absent: Vec::new(),
        failed: Vec::new(),
    };
    let Ok(text) = fs::read_to_string(list) else {
        modules.failed.push(format!("{} missing", list.display()));
        return modules;
    };
    for module in text.lines().filter(|l| !l.is_empty()) {
        let path = Path::new("/").join(module);
        // Compressed modules are decompressed by the kernel (flag
        // MODULE_INIT_COMPRESSED_FILE, Linux 6.0+).
        let flags = if module.ends_with(".ko") { 0 } else { 4 };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                modules.failed.push(format!("{name} ({e})"));
                continue;
            }
        };
        match rustix::system::finit_module(&file, c"", flags) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => modules.loaded += 1,
            Err(rustix::io::Errno::NODEV | rustix::io::Errno::NOENT) => modules.absent.push(name),
            Err(e) => modules.failed.push(format!("{name} ({e})")),
        }
    }
    modules
}

fn wait_for_disk(settings: &BootSettings) -> Result<PathBuf, String> {
    let started = Instant::now();
    loop {
        let found = match &settings.disk {
            Some(disk) => Path::new(disk).exists().then(|| PathBuf::from(disk)),
            None => first_fixed_disk(),
        };
        if let Some(disk) = found {
            return Ok(disk);
        }
        if started.elapsed() > DEVICE_WAIT {
            return Err(match &settings.disk {
                Some(disk) => format!("no disk {disk} after {} s", DEVICE_WAIT.as_secs()),
                None => format!(
                    "no disk after {} s (none in /sys/block that is not removable; is its driver in the initrd? kprov initrd build --module NAME)",
                    DEVICE_WAIT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The first (by name) whole disk that is not removable, a loop, RAM,
/// optical or device-mapper device.
fn first_fixed_disk() -> Option<PathBuf> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "sr", "zram", "dm-", "md", "fd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .filter(|n| {
            fs::read_to_string(format!("/sys/block/{n}/removable")).is_ok_and(|r| r.trim() == "0")
        })
        .collect();
    names.sort();
    names.first().map(|n| PathBuf::from("/dev").join(n))
}

fn disk_bytes(disk: &Path) -> Option<u64> {
    let name = disk.file_name()?.to_string_lossy();
    let sectors: u64 = fs::read_to_string(format!("/sys/block/{name}/size"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(sectors * 512)
}

/// The boot interface: `kprov.interface`, else the one with BOOTIF's MAC,
/// else the first (by name) that is not loopback.
fn wait_for_interface(settings: &BootSettings) -> Result<(String, String), String> {
    let started = Instant::now();
    loop {
        let mut interfaces: Vec<(String, String)> = fs::read_dir("/sys/class/net")
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "lo")
                    .map(|n| {
                        let mac = fs::read_to_string(format!("/sys/class/net/{n}/address"))
                            .unwrap_or_default()
                            .trim()
                            .to_string();
                        (n, mac)
                    })
                    .collect()
            })
            .unwrap_or_default();
        interfaces.sort();
        let found = interfaces.into_iter().find(|(name, mac)| {
            match (&settings.interface, &settings.boot_mac) {
                (Some(wanted), _) => name == wanted,
                (None, Some(boot_mac)) => mac == boot_mac,
                (None, None) => true,
            }
        });
        if let Some(found) = found {
            return Ok(found);
        }
        if started.elapsed() > DEVICE_WAIT {
            let which = match (&settings.interface, &settings.boot_mac) {
                (Some(name), _) => format!("interface {name}"),
                (None, Some(mac)) => format!("interface with MAC {mac} (BOOTIF)"),
                (None, None) => "network interface".to_string(),
            };
            return Err(format!(
                "no {which} after {} s (is its driver in the initrd? kprov initrd build --module NAME)",
                DEVICE_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
