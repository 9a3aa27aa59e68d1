//! Every rendered cloud-config through the real validator:
//! `cloud-init schema --config-file FILE` (cloud-init 22.4.2, Debian 12),
//! run by chroot in a Debian 12 root that has cloud-init
//! (`tools/debian-root.sh cloud`, built once and cached). Broken documents
//! must fail the same check, so the check is known to be able to fail.
//! The Ignition config's setup unit goes through `systemd-analyze verify`
//! in the same root.
//!
//! They need root and the Debian archive (for the first build of the
//! root), so they are `#[ignore]`d; `tools/test.sh` runs them
//! (`--include-ignored`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use kprov_bootconfig::cloud_init::{self, CloudConfig};
use kprov_bootconfig::{render, Format};

/// The cached root tarball, built by tools/debian-root.sh on first use.
fn cloud_root_tarball() -> PathBuf {
    let script = common::dir("../../../tools/debian-root.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("cloud")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} cloud failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(text.lines().last().unwrap().trim())
}

/// A Debian root with cloud-init, extracted into a scratch directory that
/// is removed when it is dropped. Kernel modules, docs and locales are
/// left out: cloud-init's schema check does not need them.
struct CloudRoot {
    dir: tempfile::TempDir,
}

impl CloudRoot {
    fn new() -> Self {
        std::fs::create_dir_all("/var/tmp/kprov-tests").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("cloud-root-")
            .tempdir_in("/var/tmp/kprov-tests")
            .unwrap();
        let out = Command::new("tar")
            .arg("-C")
            .arg(dir.path())
            .args([
                "--exclude=./usr/lib/modules",
                "--exclude=./boot",
                "--exclude=./usr/share/doc",
                "--exclude=./usr/share/locale",
                "--exclude=./usr/share/man",
                "-xf",
            ])
            .arg(cloud_root_tarball())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir_all(dir.path().join("tmp/kprov")).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `args` in the root.
    fn chroot(&self, args: &[&str]) -> Output {
        Command::new("chroot")
            .arg(self.path())
            .args(args)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap()
    }

    /// Writes `bytes` to /tmp/kprov/`name` in the root and runs
    /// `cloud-init schema` on it: (success, stdout + stderr).
    fn schema_check(&self, name: &str, bytes: &[u8]) -> (bool, String) {
        std::fs::write(self.path().join("tmp/kprov").join(name), bytes).unwrap();
        let file = format!("/tmp/kprov/{name}");
        let out = self.chroot(&["cloud-init", "schema", "--config-file", &file]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
#[ignore = "needs root and the cached Debian 12 cloud root; run by tools/test.sh"]
fn every_rendered_cloud_config_passes_the_real_cloud_init_schema_check() {
    let root = CloudRoot::new();
    let version = root.chroot(&["cloud-init", "--version"]);
    println!(
        "validator: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    for c in common::cases() {
        let mut bytes = render(&c.spec, Format::CloudInit, c.gzip).unwrap();
        if c.gzip {
            // The platform decodes the base64; cloud-init gunzips (see
            // the test below); the schema check reads the document.
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&bytes)
                .unwrap();
            bytes = gunzip(&raw);
        }
        let (ok, text) = root.schema_check(&format!("{}.yaml", c.name), &bytes);
        assert!(ok, "{}: cloud-init schema refused it:\n{text}", c.name);
        assert!(text.contains("Valid cloud-config"), "{}: {text}", c.name);
    }
}

#[test]
#[ignore = "needs root and the cached Debian 12 cloud root; run by tools/test.sh"]
fn broken_cloud_configs_fail_the_real_cloud_init_schema_check() {
    let root = CloudRoot::new();
    let case = common::cases()
        .into_iter()
        .find(|c| c.name == "hostname-yes")
        .unwrap();
    let model: CloudConfig = cloud_init::cloud_config(&case.spec);

    // The same model through serde_yaml's own emitter: `yes` comes out
    // plain, which cloud-init's YAML 1.1 reader takes for a boolean. This
    // is why kprov emits through libyaml with every string quoted.
    let serde_yaml_text = format!("#cloud-config\n{}", serde_yaml::to_string(&model).unwrap());
    assert!(
        serde_yaml_text.contains("\nhostname: yes\n"),
        "{serde_yaml_text}"
    );

    let ours = model.to_yaml().unwrap();
    let mut runcmd_not_a_list: serde_yaml::Value = serde_yaml::from_str(&ours).unwrap();
    runcmd_not_a_list["runcmd"] = "/opt/kprov/setup.sh".into();
    let mut mode_as_number: serde_yaml::Value = serde_yaml::from_str(&ours).unwrap();
    mode_as_number["ssh_authorized_keys"] = serde_yaml::Value::Number(644.into());

    for (what, text, want) in [
        (
            "hostname yes emitted by serde_yaml",
            serde_yaml_text,
            "hostname: True is not of type 'string'",
        ),
        (
            "runcmd not a list",
            format!(
                "#cloud-config\n{}",
                serde_yaml::to_string(&runcmd_not_a_list).unwrap()
            ),
            "runcmd: '/opt/kprov/setup.sh' is not of type 'array'",
        ),
        (
            "ssh keys as a number",
            format!(
                "#cloud-config\n{}",
                serde_yaml::to_string(&mode_as_number).unwrap()
            ),
            "ssh_authorized_keys: 644 is not of type",
        ),
        (
            "no #cloud-config header",
            ours.strip_prefix("#cloud-config\n").unwrap().to_string(),
            "#cloud-config",
        ),
    ] {
        let (ok, out) = root.schema_check("broken.yaml", text.as_bytes());
        assert!(!ok, "{what}: cloud-init schema accepted it:\n{out}");
        assert!(out.contains(want), "{what}: {out}");
    }
    // And ours, from the same model, passes.
    let (ok, out) = root.schema_check("ours.yaml", ours.as_bytes());
    assert!(ok, "{out}");
}

#[test]
#[ignore = "needs root and the cached Debian 12 cloud root; run by tools/test.sh"]
fn cloud_init_itself_decompresses_gzip_user_data_to_the_same_document() {
    let root = CloudRoot::new();
    let case = common::cases().into_iter().find(|c| c.gzip).unwrap();
    let encoded = render(&case.spec, Format::CloudInit, true).unwrap();
    let gz = base64::engine::general_purpose::STANDARD
        .decode(&encoded)
        .unwrap();
    std::fs::write(root.path().join("tmp/kprov/user-data.gz"), &gz).unwrap();
    // cloud-init's own user-data handling: decompress if it is gzip.
    let out = root.chroot(&[
        "python3",
        "-c",
        "import sys; from cloudinit import util; \
         sys.stdout.write(util.decomp_gzip(open(sys.argv[1], 'rb').read(), quiet=False))",
        "/tmp/kprov/user-data.gz",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = render(&case.spec, Format::CloudInit, false).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(plain).unwrap()
    );
}

#[test]
#[ignore = "needs root and the cached Debian 12 cloud root; run by tools/test.sh"]
fn the_ignition_setup_unit_passes_systemd_analyze_verify() {
    let root = CloudRoot::new();
    let spec = &common::cases()[0].spec;
    let script = root.path().join("opt/kprov/setup.sh");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, kprov_bootconfig::setup::render(spec)).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let unit_path = root.path().join("etc/systemd/system/kprov-setup.service");
    let verify = |contents: &str| {
        std::fs::write(&unit_path, contents).unwrap();
        let out = root.chroot(&[
            "systemd-analyze",
            "verify",
            "/etc/systemd/system/kprov-setup.service",
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The unit as it is in the rendered Ignition config.
    let doc: serde_json::Value =
        serde_json::from_slice(&render(spec, Format::Ignition, false).unwrap()).unwrap();
    let unit = doc["systemd"]["units"][0]["contents"].as_str().unwrap();
    let (ok, stderr) = verify(unit);
    assert!(ok && stderr.is_empty(), "systemd-analyze verify: {stderr}");

    // The check can fail: a misspelt type, a relative ExecStart.
    for (what, broken) in [
        (
            "Type=oneshoot",
            unit.replace("Type=oneshot", "Type=oneshoot"),
        ),
        (
            "relative ExecStart",
            unit.replace("ExecStart=/opt/kprov/setup.sh", "ExecStart=setup.sh"),
        ),
    ] {
        let (ok, stderr) = verify(&broken);
        // systemd-analyze reports bad settings on stderr (exit status 0
        // for settings it ignores).
        assert!(
            !ok || stderr.contains("kprov-setup.service:"),
            "{what}: systemd-analyze accepted it: {stderr}"
        );
    }
}
