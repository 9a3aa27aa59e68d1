//! Prebaking a real Debian 12 root (mmdebstrap, cached) with real apt, the
//! v1.20.2 kubelet built from Debian's source, and Debian's CNI plugins;
//! checked with the real tools (dpkg, containerd, systemd-analyze), booted
//! with systemd-nspawn, and killed at every resource to prove crash safety.
//!
//! These need root, network access to the Debian archive and minutes, so
//! they are `#[ignore]`d; `tools/test.sh` runs them (`--include-ignored`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    artifacts_dir, base_args, copy_tree, diff, extract_debian_root, kprov, link_tree,
    root_with_packages, scratch, sh, snapshot,
};

fn chroot(root: &Path, args: &[&str]) -> String {
    let out = sh(Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn prebake(root: &Path) -> common::Run {
    prebake_with(kprov, root)
}

/// A way to run kprov: `common::kprov` (the build under test) or
/// `common::kprov_release` (the static release binary).
type KprovRun = fn(&[&str], &[(&str, &str)]) -> common::Run;

/// Prebakes with `run` (the debug build, or the release build for a root
/// that boots: the base phase installs the binary that runs it).
fn prebake_with(run: KprovRun, root: &Path) -> common::Run {
    let mut args = base_args(root.to_str().unwrap(), artifacts_dir().to_str().unwrap());
    args.extend(["--output", "json"]);
    let run = run(&args, &[]);
    assert!(run.ok(), "kprov failed:\n{}", run.stderr);
    run
}

#[test]
#[ignore = "needs root, the Debian archive and the cached Kubernetes build; run by tools/test.sh"]
fn prebaking_a_debian_root_installs_everything_and_a_second_run_changes_nothing() {
    let dir = scratch("prebake-");
    let root = dir.path().join("root");
    extract_debian_root(&root);

    let first = prebake(&root).json();
    // Only containerd's enablement is already there: its package enables it.
    let unchanged: Vec<&str> = first["reports"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "unchanged")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        unchanged,
        ["unit-enabled:containerd.service@multi-user.target"],
        "{first}"
    );

    // Packages, by dpkg inside the root.
    let status = chroot(
        &root,
        &[
            "dpkg-query",
            "-W",
            "-f=${Package} ${db:Status-Abbrev}\n",
            "containerd",
            "conntrack",
            "socat",
            "ebtables",
            "ethtool",
            "iptables",
            "ipset",
            "ipvsadm",
            "curl",
            "ca-certificates",
        ],
    );
    for line in status.lines() {
        assert!(line.ends_with(" ii "), "not installed: {line}");
    }
    assert_eq!(status.lines().count(), 10, "{status}");

    // Kernel settings and swap.
    let sysctl =
        std::fs::read_to_string(root.join("etc/sysctl.d/90-kprov-kubernetes.conf")).unwrap();
    for kv in [
        "net.ipv4.ip_forward = 1",
        "net.bridge.bridge-nf-call-iptables = 1",
        "net.bridge.bridge-nf-call-ip6tables = 1",
        "kernel.panic = 10",
        "kernel.panic_on_oops = 1",
        "vm.overcommit_memory = 1",
    ] {
        assert!(
            sysctl.lines().any(|l| l == kv),
            "{kv} missing from\n{sysctl}"
        );
    }
    let modules =
        std::fs::read_to_string(root.join("etc/modules-load.d/kprov-kubernetes.conf")).unwrap();
    assert!(
        modules.lines().any(|l| l == "overlay") && modules.lines().any(|l| l == "br_netfilter")
    );
    let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
    assert!(
        fstab.contains("#kprov-swap-off# /swapfile none swap sw 0 0"),
        "{fstab}"
    );
    assert!(!fstab.lines().any(|l| l.starts_with("/swapfile")));

    // containerd accepts the config; the values kubelet depends on are in effect.
    let dump = chroot(
        &root,
        &[
            "containerd",
            "--config",
            "/etc/containerd/config.toml",
            "config",
            "dump",
        ],
    );
    for want in [
        "SystemdCgroup = true",
        "sandbox_image = \"k8s.gcr.io/pause:3.2\"",
        "bin_dir = \"/opt/cni/bin\"",
        "conf_dir = \"/etc/cni/net.d\"",
    ] {
        assert!(
            dump.contains(want),
            "{want} not in containerd's config dump"
        );
    }
    assert!(!dump.contains("disabled_plugins = [\"cri\"]"));

    // Binaries run.
    assert_eq!(
        chroot(&root, &["/usr/local/bin/kubelet", "--version"]).trim(),
        "Kubernetes v1.20.2"
    );
    assert!(chroot(
        &root,
        &["/usr/local/bin/kubectl", "version", "--client", "--short"]
    )
    .contains("v1.20.2"));
    assert!(
        root.join("opt/cni/bin/bridge").is_file() && root.join("opt/cni/bin/host-local").is_file()
    );
    assert!(chroot(&root, &["/usr/local/bin/kprov", "--version"]).starts_with("kprov "));

    // Units present, enabled by symlink, valid for systemd.
    for (link, target) in [
        (
            "etc/systemd/system/multi-user.target.wants/kubelet.service",
            "/etc/systemd/system/kubelet.service",
        ),
        (
            "etc/systemd/system/multi-user.target.wants/containerd.service",
            "/lib/systemd/system/containerd.service",
        ),
        (
            "etc/systemd/system/timers.target.wants/kprov-healthcheck.timer",
            "/etc/systemd/system/kprov-healthcheck.timer",
        ),
        ("etc/systemd/system/swap.target", "/dev/null"),
    ] {
        assert_eq!(
            std::fs::read_link(root.join(link)).unwrap(),
            Path::new(target),
            "{link}"
        );
    }
    let verify = Command::new("chroot")
        .arg(&root)
        .args([
            "systemd-analyze",
            "verify",
            "/etc/systemd/system/kubelet.service",
            "/etc/systemd/system/kprov-healthcheck.service",
            "/etc/systemd/system/kprov-healthcheck.timer",
        ])
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let enabled = chroot(
        &root,
        &[
            "systemctl",
            "is-enabled",
            "kubelet.service",
            "containerd.service",
            "kprov-healthcheck.timer",
        ],
    );
    assert_eq!(
        enabled.lines().collect::<Vec<_>>(),
        ["enabled", "enabled", "enabled"]
    );

    // A second run changes nothing, in its report and on disk.
    let before = snapshot(&root);
    let second = prebake(&root).json();
    let s = &second["reports"][0]["summary"];
    assert_eq!(
        (s["created"].as_u64(), s["changed"].as_u64()),
        (Some(0), Some(0)),
        "{second}"
    );
    assert_eq!(diff(&before, &snapshot(&root)), Vec::<String>::new());
}

#[test]
#[ignore = "needs root, the Debian archive and the cached Kubernetes build; run by tools/test.sh"]
fn a_run_killed_at_any_point_ends_like_an_uninterrupted_run() {
    let base = root_with_packages();
    let dir = scratch("fault-");
    let reference = dir.path().join("reference");
    link_tree(base, &reference);
    let full = prebake(&reference).json();
    let changed = full["reports"][0]["summary"]["created"].as_u64().unwrap()
        + full["reports"][0]["summary"]["changed"].as_u64().unwrap();
    assert!(
        changed >= 15,
        "expected most resources to change after the packages: {full}"
    );
    let want = snapshot(&reference);
    std::fs::remove_dir_all(&reference).unwrap();

    // Kill after each changed resource, and in the middle of a few writes
    // (temp file written, not yet renamed).
    let mut points: Vec<String> = (1..=changed)
        .map(|n| format!("resource.applied={n}"))
        .collect();
    points.extend([1, 3, 7, 12].map(|n| format!("write.before-rename={n}")));
    for point in points {
        let root = dir.path().join("root");
        link_tree(base, &root);
        let args = base_args(root.to_str().unwrap(), artifacts_dir().to_str().unwrap());
        let killed = kprov(&args, &[("KPROV_FAILPOINTS", point.as_str())]);
        assert_eq!(
            killed.code,
            Some(86),
            "{point}: the failpoint did not fire:\n{}",
            killed.stderr
        );
        let rerun = kprov(&args, &[]);
        assert!(rerun.ok(), "{point}: re-run failed:\n{}", rerun.stderr);
        let differences = diff(&want, &snapshot(&root));
        assert!(
            differences.is_empty(),
            "{point}: end state differs from an uninterrupted run:\n{}",
            differences.join("\n")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
#[ignore = "needs root, systemd-nspawn and the cached Kubernetes build; run by tools/test.sh"]
fn the_prebaked_root_boots_with_containerd_and_the_health_checks_restart_it() {
    let dir = scratch("nspawn-");
    let root = dir.path().join("root");
    copy_tree(root_with_packages(), &root);
    prebake_with(common::kprov_release, &root);
    common::assert_release_binary_installed(&root);

    // A probe unit reports, on the console, what is active once the system
    // is up, runs one health check round, and powers the container off.
    std::fs::write(
        root.join("etc/systemd/system/kprov-test-probe.service"),
        "[Unit]\nAfter=multi-user.target containerd.service kprov-healthcheck.timer\n\
         [Service]\nType=oneshot\nTimeoutStartSec=300\nStandardOutput=append:/var/lib/kprov-probe.log\n\
         ExecStart=/bin/sh -c 'for i in $(seq 60); do systemctl is-active -q containerd kprov-healthcheck.timer && break; sleep 1; done; \
         echo \"PROBE containerd=$(systemctl is-active containerd) timer=$(systemctl is-active kprov-healthcheck.timer) kubelet=$(systemctl is-enabled kubelet)/$(systemctl is-active kubelet)\"; \
         /usr/local/bin/kprov health-check --runtime containerd 2>&1 | sed \"s/^/PROBE /\"; \
         systemctl stop containerd; echo \"PROBE stopped containerd=$(systemctl is-active containerd)\"; \
         for i in $(seq 150); do sleep 1; systemctl is-active -q containerd && break; done; \
         echo \"PROBE later containerd=$(systemctl is-active containerd)\"; \
         journalctl -o cat -u kprov-healthcheck.service | grep -m1 restarted | sed \"s/^/PROBE /\"; systemctl poweroff'\n\
         [Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/etc/systemd/system/kprov-test-probe.service",
        root.join("etc/systemd/system/multi-user.target.wants/kprov-test-probe.service"),
    )
    .unwrap();

    // The health timer first fires 30 s after boot and every 10 s after;
    // three failed checks restart containerd: about a minute.
    let console = common::boot_nspawn(&root, Duration::from_secs(240));
    // The probe writes to a file: a getty on the console would hang up
    // its terminal and cut it off.
    let probe_log =
        std::fs::read_to_string(root.join("var/lib/kprov-probe.log")).unwrap_or_default();
    let console = format!("{console}\n--- probe log ---\n{probe_log}");
    let probe: Vec<&str> = probe_log
        .lines()
        .filter(|l| l.starts_with("PROBE "))
        .map(str::trim_end)
        .collect();
    assert!(
        probe.contains(&"PROBE containerd=active timer=active kubelet=enabled/inactive"),
        "unexpected probe output {probe:?}; console:\n{console}"
    );
    assert!(
        probe.contains(&"PROBE health: containerd.service ok"),
        "{probe:?}; console:\n{console}"
    );
    // Stopped by hand, containerd is restarted by the health checker, which
    // logs why.
    assert!(
        probe.contains(&"PROBE stopped containerd=inactive"),
        "{probe:?}; console:\n{console}"
    );
    assert!(
        probe.contains(&"PROBE later containerd=active"),
        "{probe:?}; console:\n{console}"
    );
    assert!(
        probe.iter().any(|l| l.starts_with(
            "PROBE health: containerd.service unhealthy: cannot connect to /run/containerd/containerd.sock"
        ) && l.ends_with("restarted it after 3 consecutive failed checks")),
        "{probe:?}; console:\n{console}"
    );
}

#[test]
#[ignore = "benchmark: prints figures; run by tools/test.sh"]
fn benchmark_noop_rerun_and_offline_apply() {
    let bin = common::kprov_bin_for_benchmarks();
    let dir = scratch("bench-");
    let root = dir.path().join("root");
    link_tree(root_with_packages(), &root);
    let args = base_args(root.to_str().unwrap(), artifacts_dir().to_str().unwrap());
    let timed = || {
        let start = Instant::now();
        let out = Command::new(&bin).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    };
    let apply = timed();
    let mut noop: Vec<Duration> = (0..5).map(|_| timed()).collect();
    noop.sort();
    println!("BENCH binary: {}", bin.display());
    println!(
        "BENCH offline apply (packages already installed, the base plan): {:.3} s",
        apply.as_secs_f64()
    );
    println!(
        "BENCH no-op re-run on the prebaked root: median {:.3} s, min {:.3} s, max {:.3} s (goal <= 0.15 s)",
        noop[2].as_secs_f64(),
        noop[0].as_secs_f64(),
        noop[4].as_secs_f64()
    );
}
