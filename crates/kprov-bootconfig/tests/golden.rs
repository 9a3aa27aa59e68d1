//! Golden boot configs over a table of node specs (tests/common), checked
//! against the files under tests/golden/ (set KPROV_UPDATE_GOLDEN=1 to
//! rewrite them, then review the diff), and against the Ignition 3.4 JSON
//! schema and CoreOS's own Ignition config structs (ignition-config).
//! The real cloud-init validator runs in tests/cloud_init_schema.rs.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::io::Read as _;

use base64::Engine as _;
use common::{cases, Case, TOKEN};
use kprov_bootconfig::cloud_init::{self, CloudConfig};
use kprov_bootconfig::{paths, render, setup, Format, USER_DATA_LIMIT};

fn b64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The cloud-config text of a case, decoded when it was gzipped.
fn cloud_config_text(c: &Case) -> String {
    let bytes = render(&c.spec, Format::CloudInit, c.gzip).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    if c.gzip {
        String::from_utf8(gunzip(&b64(&text))).unwrap()
    } else {
        text
    }
}

fn ignition_json(c: &Case) -> serde_json::Value {
    serde_json::from_slice(&render(&c.spec, Format::Ignition, c.gzip).unwrap()).unwrap()
}

fn golden_name(c: &Case, format: Format) -> String {
    match (format, c.gzip) {
        (Format::CloudInit, false) => format!("{}.cloud-config", c.name),
        (Format::CloudInit, true) => format!("{}.cloud-config.gz.b64", c.name),
        (Format::Ignition, _) => format!("{}.ign", c.name),
    }
}

#[test]
fn rendered_configs_match_their_golden_files() {
    let golden = common::dir("golden");
    let mut mismatches = Vec::new();
    for c in cases() {
        for format in [Format::CloudInit, Format::Ignition] {
            let got = String::from_utf8(render(&c.spec, format, c.gzip).unwrap()).unwrap();
            let path = golden.join(golden_name(&c, format));
            if let Err(m) = kprov_testkit::golden::compare(&path, &got) {
                mismatches.push(m);
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

fn schema_validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&common::fixture("ignition-v3.4.schema.json")).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn schema_errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn ignition_configs_validate_against_the_ignition_3_4_schema() {
    let v = schema_validator();
    for c in cases() {
        let doc = ignition_json(&c);
        let errors = schema_errors(&v, &doc);
        assert!(errors.is_empty(), "{}: {errors:?}", c.name);
    }
}

/// A file of a parsed Ignition config: its mode and decoded contents.
fn ignition_file(files: &[ignition_config::v3_4::File], path: &str) -> (i64, Vec<u8>) {
    let f = files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path}"));
    let contents = f.contents.as_ref().unwrap();
    let source = contents.source.as_ref().unwrap();
    let data = b64(source.strip_prefix("data:;base64,").unwrap());
    let data = match contents.compression.as_deref() {
        Some("gzip") => gunzip(&data),
        None => data,
        Some(other) => panic!("{path}: compression {other}"),
    };
    assert_eq!(f.overwrite, Some(true), "{path}");
    assert_eq!(f.user.as_ref().unwrap().name.as_deref(), Some("root"));
    (f.mode.unwrap(), data)
}

#[test]
fn ignition_configs_parse_with_coreos_ignition_config_and_hold_the_expected_files_units_and_users()
{
    for c in cases() {
        let bytes = render(&c.spec, Format::Ignition, c.gzip).unwrap();
        let (config, warnings) = ignition_config::Config::parse_slice(&bytes).unwrap();
        assert!(warnings.is_empty(), "{}: {warnings:?}", c.name);
        let ignition_config::Config::V3_4(config) = config else {
            panic!("{}: not parsed as 3.4: {config:?}", c.name);
        };
        let files = config.storage.unwrap().files.unwrap();
        let spec = &c.spec;

        let mut want_paths = vec!["/etc/hostname"];
        assert_eq!(
            ignition_file(&files, "/etc/hostname"),
            (0o644, format!("{}\n", spec.hostname).into_bytes())
        );
        if let Some(ca) = &spec.ca_cert {
            want_paths.push(paths::CA_CERT);
            assert_eq!(
                ignition_file(&files, paths::CA_CERT),
                (0o644, ca.pem().as_bytes().to_vec())
            );
        }
        if let Some(content) = &spec.cloud_config_content {
            let path = spec
                .provision
                .cloud_config
                .as_ref()
                .unwrap()
                .to_str()
                .unwrap();
            want_paths.push(path);
            assert_eq!(
                ignition_file(&files, path),
                (0o600, content.as_bytes().to_vec())
            );
        }
        if spec.token.is_some() {
            want_paths.push(paths::TOKEN_FILE);
            assert_eq!(
                ignition_file(&files, paths::TOKEN_FILE),
                (0o600, format!("{TOKEN}\n").into_bytes())
            );
        }
        want_paths.push(paths::SETUP_SCRIPT);
        assert_eq!(
            ignition_file(&files, paths::SETUP_SCRIPT),
            (0o700, setup::render(spec).into_bytes())
        );
        let got_paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(got_paths, want_paths, "{}", c.name);

        let users = config.passwd.and_then(|p| p.users).unwrap_or_default();
        if spec.ssh_authorized_keys.is_empty() {
            assert!(users.is_empty(), "{}", c.name);
        } else {
            assert_eq!(users.len(), 1);
            assert_eq!(users[0].name, "core");
            let keys: Vec<String> = spec
                .ssh_authorized_keys
                .iter()
                .map(|k| k.to_string())
                .collect();
            assert_eq!(users[0].ssh_authorized_keys.as_ref().unwrap(), &keys);
        }

        let units = config.systemd.unwrap().units.unwrap();
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].name, "kprov-setup.service");
        assert_eq!(units[0].enabled, Some(true));
        let unit = units[0].contents.as_ref().unwrap();
        for line in [
            "Type=oneshot",
            "ExecStart=/opt/kprov/setup.sh",
            "ConditionPathExists=!/var/lib/kprov/setup.done",
            "After=network-online.target",
            "WantedBy=multi-user.target",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line}:\n{unit}");
        }
    }
}

#[test]
fn a_broken_ignition_config_fails_the_schema_and_the_ignition_structs() {
    let v = schema_validator();
    let good = ignition_json(&cases()[0]);
    let mut breakages: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut b = good.clone();
    b["storage"]["files"][0]["mode"] = "0644".into();
    breakages.push(("mode as an octal string", b));
    let mut b = good.clone();
    b["passwd"]["users"][0]["sshAuthorizedKeys"] = "ssh-ed25519 AAAA".into();
    breakages.push(("keys as a string", b));
    let mut b = good.clone();
    b["systemd"]["units"][0]["enabled"] = "yes".into();
    breakages.push(("enabled as a string", b));
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("ignition");
    breakages.push(("no ignition section", b));
    for (what, doc) in breakages {
        assert!(
            !schema_errors(&v, &doc).is_empty(),
            "{what}: the schema accepted it"
        );
        assert!(
            ignition_config::Config::parse_slice(&serde_json::to_vec(&doc).unwrap()).is_err(),
            "{what}: ignition-config accepted it"
        );
    }
    // The same document unbroken passes both.
    assert!(schema_errors(&v, &good).is_empty());
    assert!(ignition_config::Config::parse_slice(&serde_json::to_vec(&good).unwrap()).is_ok());
}

#[test]
fn cloud_configs_read_back_into_the_model_with_the_expected_files() {
    for c in cases() {
        let text = cloud_config_text(&c);
        assert!(text.starts_with("#cloud-config\n"), "{}", c.name);
        let back: CloudConfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, cloud_init::cloud_config(&c.spec), "{}", c.name);

        let spec = &c.spec;
        assert_eq!(back.hostname, spec.hostname.short());
        let files: Vec<(&str, &str)> = back
            .write_files
            .iter()
            .map(|f| (f.path.as_str(), f.permissions.as_str()))
            .collect();
        let mut want = Vec::new();
        if spec.ca_cert.is_some() {
            want.push((paths::CA_CERT, "0644"));
        }
        if let Some(path) = &spec.provision.cloud_config {
            want.push((path.to_str().unwrap(), "0600"));
        }
        if spec.token.is_some() {
            want.push((paths::TOKEN_FILE, "0600"));
        }
        want.push((paths::SETUP_SCRIPT, "0700"));
        assert_eq!(files, want, "{}", c.name);
        assert_eq!(back.runcmd, [[paths::SETUP_SCRIPT]]);
    }
}

#[test]
fn every_string_value_in_a_cloud_config_is_quoted_or_a_literal_block() {
    use libyaml_safer::{EventData, Parser, ScalarStyle};
    enum Ctx {
        Map { next_is_key: bool },
        Seq,
    }
    // A nested container in a mapping is a value: a key comes next.
    fn value_done(stack: &mut [Ctx]) {
        if let Some(Ctx::Map { next_is_key }) = stack.last_mut() {
            *next_is_key = true;
        }
    }
    for c in cases() {
        let text = cloud_config_text(&c);
        let mut input = text.as_bytes();
        let mut parser = Parser::new();
        parser.set_input_string(&mut input);
        let mut stack = Vec::new();
        let mut values = 0;
        for event in &mut parser {
            match event.unwrap().data {
                EventData::MappingStart { .. } => {
                    value_done(&mut stack);
                    stack.push(Ctx::Map { next_is_key: true });
                }
                EventData::SequenceStart { .. } => {
                    value_done(&mut stack);
                    stack.push(Ctx::Seq);
                }
                EventData::MappingEnd | EventData::SequenceEnd => {
                    stack.pop();
                }
                EventData::Scalar { value, style, .. } => {
                    match stack.last_mut() {
                        Some(Ctx::Map { next_is_key }) if *next_is_key => {
                            assert_eq!(style, ScalarStyle::Plain, "{}: key {value:?}", c.name);
                            *next_is_key = false;
                            continue;
                        }
                        Some(Ctx::Map { next_is_key }) => *next_is_key = true,
                        _ => {}
                    }
                    values += 1;
                    let boolean = style == ScalarStyle::Plain && value == "true";
                    assert!(
                        boolean
                            || matches!(
                                style,
                                ScalarStyle::SingleQuoted
                                    | ScalarStyle::DoubleQuoted
                                    | ScalarStyle::Literal
                            ),
                        "{}: {value:?} is {style:?}",
                        c.name
                    );
                }
                _ => {}
            }
        }
        assert!(values > 5, "{}: only {values} values seen", c.name);
    }
}

#[test]
fn a_typical_node_s_user_data_stays_under_16_kb() {
    // A worker with a cloud provider config: CA, token, key, setup.sh.
    let typical = &cases()[1];
    assert_eq!(typical.name, "worker-cloud-config");
    for (format, gzip) in [
        (Format::CloudInit, false),
        (Format::CloudInit, true),
        (Format::Ignition, false),
        (Format::Ignition, true),
    ] {
        let size = render(&typical.spec, format, gzip).unwrap().len();
        println!("user-data size: {format:?} gzip={gzip}: {size} bytes");
        assert!(
            size < USER_DATA_LIMIT,
            "{format:?} gzip={gzip}: {size} bytes"
        );
    }
}

#[test]
fn the_token_is_only_in_its_0600_file_and_never_in_setup_sh() {
    for c in cases().into_iter().filter(|c| c.spec.token.is_some()) {
        let script = setup::render(&c.spec);
        assert!(!script.contains(TOKEN), "{}", c.name);
        assert!(!script.contains(common::SECRET), "{}", c.name);
        let text = cloud_config_text(&c);
        assert_eq!(text.matches(common::SECRET).count(), 1, "{}", c.name);
        let back: CloudConfig = serde_yaml::from_str(&text).unwrap();
        let holders: Vec<(&str, &str)> = back
            .write_files
            .iter()
            .filter(|f| f.content.contains(TOKEN))
            .map(|f| (f.path.as_str(), f.permissions.as_str()))
            .collect();
        assert_eq!(holders, [(paths::TOKEN_FILE, "0600")], "{}", c.name);
    }
}

#[test]
fn specs_kprov_provision_would_refuse_are_refused_when_rendering() {
    let mut no_token = common::worker("w", "https://h/kprov", common::SHA256);
    no_token.token = None;
    let mut content_without_path = common::minimal("w", "https://h/kprov", common::SHA256);
    content_without_path.cloud_config_content = Some("x".into());
    let mut docker_too_new = common::minimal("w", "https://h/kprov", common::SHA256);
    docker_too_new.provision.container_runtime = kprov_core::ContainerRuntime::Docker;
    docker_too_new.provision.kubelet_version = "v1.30.0".parse().unwrap();
    for (spec, want) in [
        (no_token, "--phase all needs --token"),
        (
            content_without_path,
            "--cloud-config-file needs --cloud-config (the path on the node) and --cloud-provider",
        ),
        (docker_too_new, "docker"),
    ] {
        for format in [Format::CloudInit, Format::Ignition] {
            let err = render(&spec, format, false).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
