//! `kprov image build`: the disk it makes is read back with the real tools
//! (sfdisk, zstd, mtools, debugfs), built twice it is the same, and bad
//! input leaves nothing behind; a master's image, from a root prebaked
//! with a control-plane bundle, holds that bundle's images. The tests that boot what it makes are in
//! disk_image_vm.rs.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::path::Path;
use std::process::Command;

use common::image::{build, manifest, root_filesystem};
use common::sh;

/// A root with what the build looks for (an init, a kernel and initrd in
/// /boot) and files to find again; it does not boot.
fn small_root(root: &Path) {
    for dir in ["boot", "sbin", "etc", "usr/lib/systemd"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("usr/lib/systemd/systemd"), "not a real init").unwrap();
    std::os::unix::fs::symlink("/usr/lib/systemd/systemd", root.join("sbin/init")).unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-9-amd64"), "old kernel").unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-9-amd64"), "old initrd").unwrap();
    std::fs::write(root.join("boot/vmlinuz-6.1.0-10-amd64"), "new kernel").unwrap();
    std::fs::write(root.join("boot/initrd.img-6.1.0-10-amd64"), "new initrd").unwrap();
    std::fs::write(root.join("etc/hostname"), "image-test\n").unwrap();
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(sh(cmd).stdout).unwrap()
}

#[test]
#[ignore = "needs dosfstools, mtools, syslinux and fdisk (tools/install-deps.sh vm)"]
fn an_image_is_a_gpt_disk_holding_the_kernel_and_the_root_and_is_the_same_when_built_again() {
    let dir = common::scratch("disk-image-");
    let root = dir.path().join("root");
    small_root(&root);
    let output = dir.path().join("node.img.zst");
    let run = build(
        &root,
        &output,
        &["--size", "1300M", "--kernel-arg", "quiet"],
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("kernel 6.1.0-10-amd64"),
        "{}",
        run.stderr
    );
    let first = manifest(&output);
    assert_eq!(first["image"], "node.img.zst");
    assert_eq!(
        first["compressed"]["sha256"].as_str().unwrap(),
        common::sha256_hex(&output)
    );
    assert_eq!(
        first["compressed"]["size"].as_u64().unwrap(),
        std::fs::metadata(&output).unwrap().len()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&output).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // zstd decompresses it to the raw disk the manifest describes.
    let raw = dir.path().join("disk.raw");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&raw)
        .arg(&output));
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 1300 << 20);
    assert_eq!(first["raw"]["size"].as_u64().unwrap(), 1300 << 20);
    assert_eq!(
        first["raw"]["sha256"].as_str().unwrap(),
        common::sha256_hex(&raw)
    );

    // sfdisk reads both partitions from the tables kprov wrote.
    let table: serde_json::Value =
        serde_json::from_str(&stdout(Command::new("sfdisk").arg("--json").arg(&raw))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt");
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    // sfdisk -V checks both headers, their CRCs and the backup's place.
    let verify = Command::new("sfdisk").arg("-V").arg(&raw).output().unwrap();
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let root_uuid = parts[1]["uuid"].as_str().unwrap().to_lowercase();
    let boot_offset = parts[0]["start"].as_u64().unwrap() * 512;
    let root_offset = parts[1]["start"].as_u64().unwrap() * 512;

    // The boot partition: the newest kernel, SYSLINUX, its configuration
    // naming the root partition.
    let fat = format!("{}@@{boot_offset}", raw.display());
    let listing = stdout(
        Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-a", "-b", "-i", &fat, "::/"]),
    );
    for file in [
        "vmlinuz",
        "initrd.img",
        "syslinux.cfg",
        "ldlinux.sys",
        "ldlinux.c32",
        "meta-data",
        "user-data",
    ] {
        assert!(listing.contains(&format!("::/{file}")), "{listing}");
    }
    // cloud-init's NoCloud finds the boot partition by its label, and the
    // manifest's seed slot is where stage2 finds the meta-data file's bytes.
    let label = stdout(
        Command::new("mlabel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-i", &fat, "::"]),
    );
    assert_eq!(label.trim(), "Volume label is CIDATA", "{label}");
    let meta_data = stdout(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/meta-data",
    ]));
    assert!(
        meta_data.starts_with("# kprov: this image is not seeded"),
        "{meta_data}"
    );
    let slot = &first["seed"];
    let (slot_offset, slot_size) = (
        slot["offset"].as_u64().unwrap() as usize,
        slot["size"].as_u64().unwrap() as usize,
    );
    assert_eq!(slot_size, meta_data.len(), "{first}");
    let raw_bytes = std::fs::read(&raw).unwrap();
    assert!(
        raw_bytes[slot_offset..slot_offset + slot_size] == *meta_data.as_bytes(),
        "the seed slot {slot} is not the meta-data file's bytes"
    );
    let kernel = stdout(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/vmlinuz",
    ]));
    assert_eq!(kernel, "new kernel");
    let config = stdout(Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").args([
        "-i",
        &fat,
        "::/syslinux.cfg",
    ]));
    assert!(
        config.contains(&format!("APPEND root=PARTUUID={root_uuid} rw quiet")),
        "{config}"
    );

    // The root partition: ext4 with the root's files.
    let ext4 = root_filesystem(&raw, dir.path());
    let hostname = stdout(
        Command::new("debugfs")
            .args(["-R", "cat /etc/hostname"])
            .arg(&ext4),
    );
    assert_eq!(hostname, "image-test\n");

    // Built again from the same root: the same partition tables and boot
    // partition, byte for byte. (The root filesystem can differ in the
    // access times mkfs.ext4 -d copies from files the first build read.)
    let again = dir.path().join("again.img.zst");
    let run = build(&root, &again, &["--size", "1300M", "--kernel-arg", "quiet"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(manifest(&again)["raw"]["size"], first["raw"]["size"]);
    let raw_again = dir.path().join("again.raw");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&raw_again)
        .arg(&again));
    let (one, two) = (
        std::fs::read(&raw).unwrap(),
        std::fs::read(&raw_again).unwrap(),
    );
    let root_start = root_offset as usize;
    let tail_start = one.len() - (1 << 20);
    assert!(
        one[..root_start] == two[..root_start],
        "head or boot partition differ"
    );
    assert!(one[tail_start..] == two[tail_start..], "tail differs");
}

#[test]
fn bad_input_is_refused_by_name_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    small_root(&root);
    // 3 MiB of files: more than the root partition of a 260 MiB disk.
    std::fs::write(root.join("etc/data"), vec![7u8; 3 << 20]).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let output = out.join("node.img.zst");
    let root_text = root.display().to_string();

    let no_kernel = dir.path().join("no-kernel");
    small_root(&no_kernel);
    for name in ["initrd.img-6.1.0-9-amd64", "initrd.img-6.1.0-10-amd64"] {
        std::fs::remove_file(no_kernel.join("boot").join(name)).unwrap();
    }
    let cases: Vec<(common::Run, String)> = vec![
        (
            build(&no_kernel, &output, &[]),
            format!(
                "root {}: /boot has no vmlinuz-VERSION with an initrd.img-VERSION",
                no_kernel.display()
            ),
        ),
        (
            build(&dir.path().join("missing"), &output, &[]),
            "missing: cannot be read".to_string(),
        ),
        (
            build(&root, &output, &["--size", "260M"]),
            format!("--size 260 MiB is too small for root {root_text}: its files take 4 MiB"),
        ),
        (
            build(&root, &output, &["--size", "4T"]),
            "disk size \"4T\": expected a whole number of MiB or GiB".to_string(),
        ),
        (
            build(&root, &output, &["--kernel-arg", "a b"]),
            "kernel argument \"a b\": expected one word".to_string(),
        ),
    ];
    for (run, expected) in cases {
        assert_ne!(run.code, Some(0), "{}", run.stderr);
        assert!(
            run.stderr.contains(&expected),
            "want {expected:?} in:\n{}",
            run.stderr
        );
    }
    // A dry run prints the plan and writes nothing either.
    let run = build(&root, &output, &["--dry-run"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("dry run: nothing written"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("root partition 1024 MiB"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
#[ignore = "needs root, docker-registry, skopeo, the Debian cloud root, the Kubernetes build and the static release kprov (tools/test.sh)"]
fn a_masters_image_is_prebaked_from_a_control_plane_bundle_and_holds_its_images_for_the_first_boot()
{
    let dir = common::scratch("master-image-");
    let d = dir.path();
    let bundle = common::registry::control_plane_bundle(&d.join("bundle-work"), &[]);
    let bundled: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("manifest.json")).unwrap())
            .unwrap();
    let images: Vec<(String, String)> = bundled["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "image")
        .map(|a| {
            let file = Path::new(a["path"].as_str().unwrap()).file_name().unwrap();
            (
                file.to_string_lossy().into_owned(),
                a["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names: Vec<&str> = images.iter().map(|(file, _)| file.as_str()).collect();
    for wanted in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "etcd",
        "pause",
    ] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "no {wanted} in the bundle: {names:?}"
        );
    }

    // The master's root: Debian's cloud root (kernel, cloud-init) with the
    // base phase from the control-plane bundle, as a node image is made.
    let root = d.join("root");
    common::extract(common::debian_cloud_root_tarball(), &root);
    common::cluster::prebake(&root, &bundle, "master");
    let output = d.join("master.img.zst");
    let run = build(&root, &output, &["--kernel-arg", "console=ttyS0,115200"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    std::fs::remove_dir_all(&root).unwrap();

    // Read back from the image: every image of the bundle staged, byte for
    // byte, and the unit that imports them into containerd at first boot.
    let raw = d.join("master.raw");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&raw)
        .arg(&output));
    let ext4 = root_filesystem(&raw, d);
    std::fs::remove_file(&raw).unwrap();
    let staged = d.join("staged");
    std::fs::create_dir(&staged).unwrap();
    sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump /var/lib/kprov/images {}", staged.display()))
        .arg(&ext4));
    for (file, sha256) in &images {
        let path = staged.join("images").join(file);
        assert!(
            path.exists(),
            "{file} is not in the image's /var/lib/kprov/images"
        );
        assert_eq!(&common::sha256_hex(&path), sha256, "{file}");
    }
    let unit = stdout(
        Command::new("debugfs")
            .args([
                "-R",
                "stat /etc/systemd/system/multi-user.target.wants/kprov-images.service",
            ])
            .arg(&ext4),
    );
    assert!(unit.contains("Type: symlink"), "{unit}");
    let kprov = stdout(
        Command::new("debugfs")
            .args(["-R", "stat /usr/local/bin/kprov"])
            .arg(&ext4),
    );
    assert!(kprov.contains("Type: regular"), "{kprov}");
}
