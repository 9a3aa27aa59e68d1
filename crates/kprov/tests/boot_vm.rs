//! A Debian 12 VM (qemu, TCG) provisions itself from the boot config kprov
//! renders: cloud-init fetches NoCloud user-data over HTTP
//! (`ds=nocloud-net;s=http://...`) from a server inside the test's network
//! namespace; setup.sh downloads kprov from the same server (the
//! `--provision-source`), verifies its sha256 and runs
//! `kprov provision --phase base`, which downloads kubelet, kubectl and the
//! CNI plugins from the mirror on that server. A second VM is given a
//! config pinned to the wrong sum and must refuse to run the binary.
//!
//! Needs root, qemu, dnsmasq and minutes: `#[ignore]`d, run by tools/test.sh.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::vm::{boot_until, make_disk, Network};
use common::{
    artifacts_dir, base_args, bench, build_mirror, copy_tree, debian_cloud_root_tarball, extract,
    kprov, scratch, sh, sha256_hex,
};

const SUCCESS: &str = "kprov-setup: done: kprov provision succeeded";
const FAILURE: &str = "kprov-setup: error:";

/// The cloud root (cloud-init, ifupdown, dhclient, a kernel) with the
/// node packages installed from the host: the VM has no route out.
fn cloud_root_with_packages() -> &'static Path {
    static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ROOT
        .get_or_init(|| {
            let dir = scratch("cloud-packages-");
            let root = dir.path().join("root");
            extract(debian_cloud_root_tarball(), &root);
            let run = kprov(
                &base_args(root.to_str().unwrap(), artifacts_dir().to_str().unwrap()),
                &[("KPROV_FAILPOINTS", "resource.applied=1")],
            );
            assert_eq!(run.code, Some(86), "{}", run.stderr);
            // No login prompt on the serial line: its hangup would cut
            // cloud-init's output off the console.
            std::os::unix::fs::symlink(
                "/dev/null",
                root.join("etc/systemd/system/serial-getty@ttyS0.service"),
            )
            .unwrap();
            (dir, root)
        })
        .1
}

struct Site {
    dir: PathBuf,
    kprov_sha256: String,
}

/// The web root: kprov (the static release binary, as shipped), the
/// mirror, and one NoCloud directory per VM.
fn site(dir: &Path) -> Site {
    let site = dir.join("site");
    build_mirror(&site.join("mirror"));
    let kprov_bin = site.join("kprov");
    std::fs::copy(common::kprov_release_bin(), &kprov_bin).unwrap();
    Site {
        kprov_sha256: sha256_hex(&kprov_bin),
        dir: site,
    }
}

fn user_data(site: &Site, name: &str, gateway: &str, pinned: &str, key: &str) {
    let nocloud = site.dir.join(name);
    std::fs::create_dir_all(&nocloud).unwrap();
    std::fs::write(
        nocloud.join("meta-data"),
        format!("instance-id: {name}\nlocal-hostname: {name}\n"),
    )
    .unwrap();
    std::fs::write(nocloud.join("vendor-data"), "").unwrap();
    let out = nocloud.join("user-data");
    let run = kprov(
        &[
            "userdata",
            "--format",
            "cloud-init",
            "--hostname",
            name,
            "--ssh-authorized-key",
            key,
            "--provision-source",
            &format!("http://{gateway}:8080/kprov"),
            "--provision-sha256",
            pinned,
            "--phase",
            "base",
            "--kubelet-version",
            "v1.20.2",
            "--mirror",
            &format!("http://{gateway}:8080/mirror"),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(run.ok(), "kprov userdata failed: {}", run.stderr);
}

fn ssh_key(dir: &Path) -> String {
    let key = dir.join("id_ed25519");
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kprov-test", "-f"])
        .arg(&key));
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
#[ignore = "needs root, qemu, dnsmasq and the cached builds; run by tools/test.sh"]
fn a_vm_provisions_itself_from_its_user_data_and_refuses_a_binary_with_the_wrong_sum() {
    let dir = scratch("boot-vm-");
    let mut ns = Netns::new("10.77.0");
    let gateway = ns.gateway();
    let site = site(dir.path());
    let key = ssh_key(dir.path());
    user_data(&site, "node1", &gateway, &site.kprov_sha256, &key);
    let wrong = "0".repeat(64);
    user_data(&site, "node2", &gateway, &wrong, &key);
    let size = std::fs::metadata(site.dir.join("node1/user-data"))
        .unwrap()
        .len();

    let root = dir.path().join("root");
    copy_tree(cloud_root_with_packages(), &root);
    let vm = make_disk(&root, dir.path(), "4G");
    std::fs::remove_dir_all(&root).unwrap();
    let disk2 = dir.path().join("disk2.raw");
    sh(Command::new("cp")
        .arg("--sparse=always")
        .arg(&vm.disk)
        .arg(&disk2));

    ns.add_tap("tap0");
    ns.serve_dhcp(&dir.path().join("leases"));
    ns.serve_http(&site.dir, 8080);

    let start = Instant::now();
    let (console, marker) = boot_until(
        ns.command("qemu-system-x86_64"),
        &vm,
        &dir.path().join("console-1.log"),
        &Network::Tap {
            tap: "tap0".into(),
            mac: "52:54:00:77:00:02".into(),
        },
        &format!("ds=nocloud-net;s=http://{gateway}:8080/node1/"),
        &[SUCCESS, FAILURE],
        Duration::from_secs(900),
    );
    let took = start.elapsed();
    assert_eq!(
        marker, SUCCESS,
        "setup.sh did not succeed; console:\n{console}"
    );
    for step in [
        "kprov-setup: step 2/5: fetching kprov from http://10.77.0.1:8080/kprov",
        "kprov-setup: step 3/5: verifying the sha256",
        &format!(
            "kprov-setup: sha256 {} is the pinned one",
            site.kprov_sha256
        ),
    ] {
        assert!(
            console.contains(step),
            "missing {step:?}; console:\n{console}"
        );
    }
    assert!(
        console.contains("resources: ") && console.contains(" created, "),
        "no provision summary; console:\n{console}"
    );
    bench(&format!("boot config VM: from VM start to setup.sh done (cloud-init NoCloud over HTTP, kprov fetched and verified, base phase from the mirror, TCG): {:.0} s", took.as_secs_f64()));
    bench(&format!(
        "boot config: rendered cloud-init user-data for the test node: {size} bytes"
    ));

    // The second VM's config pins another sum: setup.sh must refuse.
    let vm2 = common::vm::VmDisk { disk: disk2, ..vm };
    let (console, marker) = boot_until(
        ns.command("qemu-system-x86_64"),
        &vm2,
        &dir.path().join("console-2.log"),
        &Network::Tap {
            tap: "tap0".into(),
            mac: "52:54:00:77:00:03".into(),
        },
        &format!("ds=nocloud-net;s=http://{gateway}:8080/node2/"),
        &[SUCCESS, FAILURE],
        Duration::from_secs(900),
    );
    assert_eq!(
        marker, FAILURE,
        "a binary with the wrong sum was run; console:\n{console}"
    );
    let refusal = format!("kprov-setup: error: sha256 mismatch for kprov from http://{gateway}:8080/kprov: expected {wrong}, got {}; refusing to run it", site.kprov_sha256);
    assert!(
        console.contains(&refusal),
        "missing {refusal:?}; console:\n{console}"
    );
    assert!(
        !console.contains("step 4/5"),
        "kprov was run; console:\n{console}"
    );
}
