//! kprov's PKI and kubeconfigs side by side with kubeadm v1.20.2's (built
//! from Debian's Kubernetes source by tools/build-kubernetes.sh), for the
//! same inputs: the same files and modes, and per certificate the same
//! subject, issuer, SANs, key usages, basic constraints, key type and
//! size, signature algorithm and validity (within a minute); keys and
//! serials differ. kubeadm's own `certs check-expiration` then reads
//! kprov's PKI, kubectl reads kprov's kubeconfigs, and openssl verifies
//! every leaf against its CA.
//!
//! kubeadm needs the cached Kubernetes build (minutes the first time) and
//! root, so these are `#[ignore]`d; `tools/test.sh` runs them
//! (`--include-ignored`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{kprov, kubernetes_bin_dir, scratch, sh};
use x509_parser::prelude::*;

const NODE: &str = "master-1";
const ADVERTISE: &str = "192.0.2.10";
const ENDPOINT: &str = "cp.example.test";
const SANS: &[&str] = &["extra.example.test", "198.51.100.7"];
const SERVICE_CIDR: &str = "10.96.0.0/12";
const DOMAIN: &str = "cluster.local";

fn kubeadm_config(cert_dir: &str, ecdsa: bool) -> String {
    let gates = if ecdsa {
        "featureGates:\n  PublicKeysECDSA: true\n"
    } else {
        ""
    };
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta2
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {ADVERTISE}
  bindPort: 6443
nodeRegistration:
  name: {NODE}
---
apiVersion: kubeadm.k8s.io/v1beta2
kind: ClusterConfiguration
kubernetesVersion: v1.20.2
certificatesDir: {cert_dir}
controlPlaneEndpoint: {ENDPOINT}
apiServer:
  certSANs: [{sans}]
networking:
  serviceSubnet: {SERVICE_CIDR}
  dnsDomain: {DOMAIN}
{gates}",
        sans = SANS
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn kubeadm(args: &[&str]) -> Output {
    sh(Command::new(kubernetes_bin_dir().join("kubeadm")).args(args))
}

fn kubectl(args: &[&str]) -> Output {
    sh(Command::new(kubernetes_bin_dir().join("kubectl")).args(args))
}

fn kprov_args<'a>(cmd: &'a str, root: &'a str, key_type: &'a str) -> Vec<&'a str> {
    vec![
        cmd,
        "--root",
        root,
        "--node-name",
        NODE,
        "--advertise-address",
        ADVERTISE,
        "--control-plane-endpoint",
        ENDPOINT,
        "--kubernetes-version",
        "v1.20.2",
        "--key-type",
        key_type,
    ]
}

/// Every file under `dir` with its mode.
fn files(dir: &Path) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = p.metadata().unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, meta.permissions().mode() & 0o7777);
            }
        }
    }
    out
}

/// What must be equal between kubeadm's and kprov's certificate.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    version: u32,
    subject: String,
    issuer: String,
    dns: Vec<String>,
    ips: Vec<String>,
    key_usage: Option<(bool, String)>,
    ext_key_usage: Option<(bool, bool, bool)>,
    basic_constraints: Option<(bool, bool, Option<u32>)>,
    public_key: String,
    signature: String,
    has_subject_key_id: bool,
    has_authority_key_id: bool,
    extension_count: usize,
}

/// Validity and identifiers, compared separately.
struct Extra {
    not_before: i64,
    not_after: i64,
    subject_key_id: Option<Vec<u8>>,
    authority_key_id: Option<Vec<u8>>,
    spki: Vec<u8>,
}

fn pem_der(bytes: &[u8]) -> Vec<u8> {
    let (_, pem) = parse_x509_pem(bytes).unwrap();
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn facts(der: &[u8]) -> (Facts, Extra) {
    let (_, x) = X509Certificate::from_der(der).unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Some(san) = x.subject_alternative_name().unwrap() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) => ips.push(format!("{b:?}")),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
    }
    let mut ski = None;
    let mut aki = None;
    for ext in x.iter_extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    let spki = x.public_key();
    let public_key = match spki.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(r) => format!("RSA {}", r.key_size()),
        x509_parser::public_key::PublicKey::EC(p) => format!(
            "EC {} {}",
            spki.algorithm
                .parameters
                .as_ref()
                .and_then(|a| a.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default(),
            p.key_size()
        ),
        other => panic!("unexpected key {other:?}"),
    };
    (
        Facts {
            version: x.version().0,
            subject: x.subject().to_string(),
            issuer: x.issuer().to_string(),
            dns,
            ips,
            key_usage: x
                .key_usage()
                .unwrap()
                .map(|k| (k.critical, k.value.to_string())),
            ext_key_usage: x.extended_key_usage().unwrap().map(|e| {
                assert!(e.value.other.is_empty());
                (e.critical, e.value.server_auth, e.value.client_auth)
            }),
            basic_constraints: x
                .basic_constraints()
                .unwrap()
                .map(|b| (b.critical, b.value.ca, b.value.path_len_constraint)),
            public_key,
            signature: x.signature_algorithm.algorithm.to_id_string(),
            has_subject_key_id: ski.is_some(),
            has_authority_key_id: aki.is_some(),
            extension_count: x.extensions().len(),
        },
        Extra {
            not_before: x.validity().not_before.timestamp(),
            not_after: x.validity().not_after.timestamp(),
            subject_key_id: ski,
            authority_key_id: aki,
            spki: spki.raw.to_vec(),
        },
    )
}

/// The PEM label and the DER public key of a private key, read by
/// openssl (the key itself is never printed).
fn key_facts(pem: &[u8]) -> (String, Vec<u8>) {
    let label = String::from_utf8_lossy(pem)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl cannot read the key");
    (label, out.stdout)
}

fn assert_close(what: &str, a: i64, b: i64) {
    assert!(
        (a - b).abs() <= 60,
        "{what}: {a} and {b} differ by more than a minute"
    );
}

/// Compares two certificates; returns the kprov one's extra facts.
fn compare_cert(name: &str, kubeadm_der: &[u8], kprov_der: &[u8]) -> Extra {
    compare_cert_except(name, kubeadm_der, kprov_der, |_| {})
}

/// Like [`compare_cert`], after `adjust` has changed kubeadm's facts
/// where kprov knowingly differs.
fn compare_cert_except(
    name: &str,
    kubeadm_der: &[u8],
    kprov_der: &[u8],
    adjust: impl FnOnce(&mut Facts),
) -> Extra {
    let (mut want, want_extra) = facts(kubeadm_der);
    adjust(&mut want);
    let (got, got_extra) = facts(kprov_der);
    assert_eq!(
        got, want,
        "{name}: kprov's certificate differs from kubeadm's"
    );
    assert_close(
        &format!("{name} notBefore"),
        got_extra.not_before,
        want_extra.not_before,
    );
    assert_close(
        &format!("{name} notAfter"),
        got_extra.not_after,
        want_extra.not_after,
    );
    got_extra
}

fn openssl_verify(ca: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify -CAfile {} {}: {}{}",
        ca.display(),
        cert.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Client certificate and key of a kubeconfig, via kubectl.
fn kubeconfig_credentials(path: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let field = |jsonpath: &str| {
        let out = kubectl(&[
            "--kubeconfig",
            path.to_str().unwrap(),
            "config",
            "view",
            "--raw",
            "-o",
            &format!("jsonpath={{{jsonpath}}}"),
        ]);
        base64::engine::general_purpose::STANDARD
            .decode(out.stdout.trim_ascii())
            .unwrap()
    };
    (
        field(".clusters[0].cluster.certificate-authority-data"),
        field(".users[0].user.client-certificate-data"),
        field(".users[0].user.client-key-data"),
    )
}

struct Side {
    pki: PathBuf,
    kubeconfigs: PathBuf,
    time: Duration,
}

fn side_by_side(key_type: &str) {
    let dir = scratch("pki-kubeadm-");
    let ecdsa = key_type == "ecdsa";

    // kubeadm into A.
    let a = dir.path().join("kubeadm");
    let config = dir.path().join("kubeadm.yaml");
    std::fs::write(
        &config,
        kubeadm_config(a.join("pki").to_str().unwrap(), ecdsa),
    )
    .unwrap();
    let start = Instant::now();
    kubeadm(&[
        "init",
        "phase",
        "certs",
        "all",
        "--config",
        config.to_str().unwrap(),
    ]);
    let kubeadm_time = start.elapsed();
    kubeadm(&[
        "init",
        "phase",
        "kubeconfig",
        "all",
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig-dir",
        a.to_str().unwrap(),
    ]);
    let kubeadm_side = Side {
        pki: a.join("pki"),
        kubeconfigs: a.clone(),
        time: kubeadm_time,
    };

    // kprov into a root B, in kubeadm's default places.
    let b = dir.path().join("kprov-root");
    std::fs::create_dir_all(&b).unwrap();
    let root = b.to_str().unwrap();
    let mut args = kprov_args("pki", root, key_type);
    for san in SANS {
        args.extend(["--san", san]);
    }
    args.extend(["--service-cidr", SERVICE_CIDR, "--cluster-domain", DOMAIN]);
    let start = Instant::now();
    let run = kprov(&args, &[]);
    let kprov_time = start.elapsed();
    assert!(run.ok(), "kprov pki: {}", run.stderr);
    let run = kprov(&kprov_args("kubeconfig", root, key_type), &[]);
    assert!(run.ok(), "kprov kubeconfig: {}", run.stderr);
    let kprov_side = Side {
        pki: b.join("etc/kubernetes/pki"),
        kubeconfigs: b.join("etc/kubernetes"),
        time: kprov_time,
    };
    println!(
        "BENCH PKI generation ({key_type}, debug build of kprov): kubeadm {:.2} s, kprov {:.2} s",
        kubeadm_side.time.as_secs_f64(),
        kprov_side.time.as_secs_f64()
    );

    // Same files, same modes.
    let want_files = files(&kubeadm_side.pki);
    assert_eq!(files(&kprov_side.pki), want_files);
    assert_eq!(want_files.len(), 22);

    // Per certificate, the same facts; every leaf verifies.
    let cas = [
        ("ca.crt", &["apiserver", "apiserver-kubelet-client"][..]),
        ("front-proxy-ca.crt", &["front-proxy-client"][..]),
        (
            "etcd/ca.crt",
            &[
                "etcd/server",
                "etcd/peer",
                "etcd/healthcheck-client",
                "apiserver-etcd-client",
            ][..],
        ),
    ];
    for (ca, leaves) in cas {
        let read = |side: &Side, f: &str| pem_der(&std::fs::read(side.pki.join(f)).unwrap());
        let ca_extra = compare_cert(ca, &read(&kubeadm_side, ca), &read(&kprov_side, ca));
        for leaf in leaves {
            let crt = format!("{leaf}.crt");
            let extra = compare_cert(&crt, &read(&kubeadm_side, &crt), &read(&kprov_side, &crt));
            assert_eq!(
                extra.authority_key_id, ca_extra.subject_key_id,
                "{crt}: authority key id is not its CA's subject key id"
            );
            openssl_verify(&kprov_side.pki.join(ca), &kprov_side.pki.join(&crt));
        }
    }
    // Keys: the same PEM format and type; each kprov key is its cert's.
    for (file, _) in want_files.iter().filter(|(f, _)| f.ends_with(".key")) {
        let (want_label, want_pub) =
            key_facts(&std::fs::read(kubeadm_side.pki.join(file)).unwrap());
        let (got_label, got_pub) = key_facts(&std::fs::read(kprov_side.pki.join(file)).unwrap());
        assert_eq!(got_label, want_label, "{file}");
        let kind = |spki: &[u8]| {
            let (_, s) = SubjectPublicKeyInfo::from_der(spki).unwrap();
            (
                s.algorithm.algorithm.to_id_string(),
                s.parsed().unwrap().key_size(),
            )
        };
        assert_eq!(kind(&got_pub), kind(&want_pub), "{file}");
        if file != "sa.key" {
            let crt = file.replace(".key", ".crt");
            let (_, extra) = facts(&pem_der(&std::fs::read(kprov_side.pki.join(crt)).unwrap()));
            assert_eq!(
                got_pub, extra.spki,
                "{file} is not the key of its certificate"
            );
        }
    }
    let sa_pub = std::fs::read_to_string(kprov_side.pki.join("sa.pub")).unwrap();
    assert!(sa_pub.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let (_, sa_key_pub) = key_facts(&std::fs::read(kprov_side.pki.join("sa.key")).unwrap());
    let (_, sa_pub_der) = parse_x509_pem(sa_pub.as_bytes()).unwrap();
    assert_eq!(sa_pub_der.contents, sa_key_pub, "sa.pub is not sa.key's");

    // Kubeconfigs: what kubectl shows (data redacted) is identical; the
    // client certificates have the same facts; each embeds its own CA.
    let kubeconfigs = [
        "admin.conf",
        "kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ];
    let conf_files = |side: &Side| -> BTreeMap<String, u32> {
        files(&side.kubeconfigs)
            .into_iter()
            .filter(|(f, _)| f.ends_with(".conf"))
            .collect()
    };
    assert_eq!(conf_files(&kprov_side), conf_files(&kubeadm_side));
    assert_eq!(conf_files(&kprov_side).len(), kubeconfigs.len());
    for conf in kubeconfigs {
        let view = |side: &Side| {
            let out = kubectl(&[
                "--kubeconfig",
                side.kubeconfigs.join(conf).to_str().unwrap(),
                "config",
                "view",
                "-o",
                "json",
            ]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
        };
        assert_eq!(view(&kprov_side), view(&kubeadm_side), "{conf}");
        let (want_ca, want_cert, want_key) =
            kubeconfig_credentials(&kubeadm_side.kubeconfigs.join(conf));
        let (got_ca, got_cert, got_key) =
            kubeconfig_credentials(&kprov_side.kubeconfigs.join(conf));
        assert_eq!(
            pem_der(&want_ca),
            pem_der(&std::fs::read(kubeadm_side.pki.join("ca.crt")).unwrap())
        );
        assert_eq!(
            pem_der(&got_ca),
            pem_der(&std::fs::read(kprov_side.pki.join("ca.crt")).unwrap()),
            "{conf} does not embed kprov's CA"
        );
        // kubeadm v1.20 gives kubeconfig clients RSA keys even with its
        // PublicKeysECDSA gate on (its kubeconfig phase does not pass the
        // key algorithm on); kprov uses the key type asked for.
        let extra = compare_cert_except(conf, &pem_der(&want_cert), &pem_der(&got_cert), |f| {
            if ecdsa {
                assert_eq!(f.public_key, "RSA 2048", "kubeadm's {conf} key changed");
                f.public_key = "EC 1.2.840.10045.3.1.7 256".into();
            }
        });
        let (want_label, _) = key_facts(&want_key);
        let (got_label, got_pub) = key_facts(&got_key);
        let want_label = if ecdsa {
            assert_eq!(want_label, "-----BEGIN RSA PRIVATE KEY-----");
            "-----BEGIN EC PRIVATE KEY-----".to_string()
        } else {
            want_label
        };
        assert_eq!(got_label, want_label, "{conf} key format");
        assert_eq!(got_pub, extra.spki, "{conf}: key is not its certificate's");
        let cert_file = dir.path().join(format!("{conf}.crt"));
        std::fs::write(&cert_file, &got_cert).unwrap();
        openssl_verify(&kprov_side.pki.join("ca.crt"), &cert_file);
    }

    // kubeadm reads kprov's PKI and kubeconfigs: check-expiration inside
    // kprov's root (--rootfs chroots kubeadm there), where they sit in
    // kubeadm's default places.
    std::fs::write(
        b.join("kubeadm.yaml"),
        kubeadm_config("/etc/kubernetes/pki", ecdsa),
    )
    .unwrap();
    let out = kubeadm(&[
        "certs",
        "check-expiration",
        "--rootfs",
        root,
        "--config",
        "/kubeadm.yaml",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    println!("{table}");
    assert!(!table.contains("MISSING"), "{table}");
    for name in [
        "admin.conf",
        "apiserver",
        "apiserver-etcd-client",
        "apiserver-kubelet-client",
        "controller-manager.conf",
        "etcd-healthcheck-client",
        "etcd-peer",
        "etcd-server",
        "front-proxy-client",
        "scheduler.conf",
    ] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("kubeadm does not list {name}:\n{table}"));
        assert!(line.contains(" 364d "), "{line}");
        assert!(line.trim_end().ends_with("no"), "{line}");
    }
    for ca in ["ca", "etcd-ca", "front-proxy-ca"] {
        let line = table
            .lines()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(ca))
            .unwrap_or_else(|| panic!("kubeadm does not list CA {ca}:\n{table}"));
        assert!(line.contains(" 9y "), "{line}");
        assert!(line.trim_end().ends_with("no"), "{line}");
    }
}

#[test]
#[ignore = "needs root and the Kubernetes v1.20.2 build (tools/build-kubernetes.sh); run by tools/test.sh"]
fn rsa_pki_and_kubeconfigs_match_kubeadms() {
    side_by_side("rsa");
}

#[test]
#[ignore = "needs root and the Kubernetes v1.20.2 build (tools/build-kubernetes.sh); run by tools/test.sh"]
fn ecdsa_pki_and_kubeconfigs_match_kubeadms() {
    side_by_side("ecdsa");
}

/// Median of a few timed runs of `run` in fresh directories.
fn median_time(runs: usize, mut run: impl FnMut(&Path)) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let dir = scratch("pki-bench-");
            let start = Instant::now();
            run(dir.path());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

#[test]
#[ignore = "benchmark: needs the Kubernetes v1.20.2 build; tools/test.sh runs it on a release build"]
fn benchmark_pki_generation_against_kubeadm() {
    let bin = common::kprov_bin_for_benchmarks();
    for key_type in ["rsa", "ecdsa"] {
        let kubeadm_time = median_time(5, |dir| {
            let config = dir.join("kubeadm.yaml");
            std::fs::write(
                &config,
                kubeadm_config(dir.join("pki").to_str().unwrap(), key_type == "ecdsa"),
            )
            .unwrap();
            kubeadm(&[
                "init",
                "phase",
                "certs",
                "all",
                "--config",
                config.to_str().unwrap(),
            ]);
        });
        let kprov_time = median_time(5, |dir| {
            let mut args = kprov_args("pki", dir.to_str().unwrap(), key_type);
            for san in SANS {
                args.extend(["--san", san]);
            }
            sh(Command::new(&bin).args(&args));
        });
        println!("BENCH binary: {}", bin.display());
        println!(
            "BENCH PKI generation, {key_type} (10 certificates + sa key, median of 5): kubeadm init phase certs all {:.3} s, kprov pki {:.3} s",
            kubeadm_time.as_secs_f64(),
            kprov_time.as_secs_f64()
        );
    }
}
