//! Golden plans: for each OS family (from fixture os-release files) and a
//! few spec variants, the rendered plan must equal the file under
//! tests/golden/plans/. Set KPROV_UPDATE_GOLDEN=1 to rewrite them, then
//! review the diff.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::PathBuf;

use kprov_core::{Arch, ContainerRuntime, NodeSpec, ProxyMode, RuntimeSource};
use kprov_provision::os::detect;
use kprov_provision::plan::plan_base;

struct Case {
    golden: &'static str,
    fixture: &'static str,
    version: &'static str,
    runtime: ContainerRuntime,
    proxy: ProxyMode,
    live: bool,
    upstream_runtime: bool,
    /// Images from a bundle.
    images: &'static [&'static str],
    /// `--node-in-container`.
    in_container: bool,
}

const fn case(golden: &'static str, fixture: &'static str, version: &'static str) -> Case {
    Case {
        golden,
        fixture,
        version,
        runtime: ContainerRuntime::Containerd,
        proxy: ProxyMode::Iptables,
        live: false,
        upstream_runtime: false,
        images: &[],
        in_container: false,
    }
}

const IMAGES: &[&str] = &["k8s.gcr.io/pause:3.2", "k8s.gcr.io/kube-proxy:v1.20.2"];

fn cases() -> Vec<Case> {
    vec![
        case("debian-12-offline", "debian-12", "v1.20.2"),
        Case {
            live: true,
            ..case("debian-12-live", "debian-12", "v1.20.2")
        },
        case("debian-11-offline", "debian-11", "v1.30.4"),
        case("ubuntu-18.04-offline", "ubuntu-18.04", "v1.20.2"),
        Case {
            proxy: ProxyMode::Ipvs,
            live: true,
            ..case("ubuntu-24.04-live-ipvs", "ubuntu-24.04", "v1.37.0")
        },
        Case {
            runtime: ContainerRuntime::Docker,
            ..case("ubuntu-18.04-docker", "ubuntu-18.04", "v1.23.17")
        },
        case("centos-7-offline", "centos-7", "v1.20.2"),
        case("rocky-9-offline", "rocky-9", "v1.31.0"),
        case("rhel-8-offline", "rhel-8", "v1.28.2"),
        case("almalinux-8-offline", "almalinux-8", "v1.28.2"),
        case("flatcar-offline", "flatcar", "v1.20.2"),
        Case {
            live: true,
            ..case("flatcar-live", "flatcar", "v1.37.0")
        },
        case("container-linux-offline", "container-linux", "v1.20.2"),
        Case {
            upstream_runtime: true,
            ..case("debian-12-upstream-runtime", "debian-12", "v1.20.2")
        },
        Case {
            images: IMAGES,
            ..case("debian-12-offline-images", "debian-12", "v1.20.2")
        },
        Case {
            images: IMAGES,
            live: true,
            ..case("debian-12-live-images", "debian-12", "v1.20.2")
        },
        Case {
            images: IMAGES,
            ..case("flatcar-offline-images", "flatcar", "v1.20.2")
        },
        Case {
            images: IMAGES,
            in_container: true,
            ..case("debian-12-offline-in-container", "debian-12", "v1.20.2")
        },
    ]
}

fn dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(sub)
}

fn render(c: &Case) -> String {
    let text = std::fs::read_to_string(dir("fixtures/os-release").join(c.fixture)).unwrap();
    let os = detect(&text, c.fixture).unwrap();
    let spec = NodeSpec {
        container_runtime: c.runtime,
        proxy_mode: c.proxy,
        runtime_source: if c.upstream_runtime {
            RuntimeSource::Upstream
        } else {
            RuntimeSource::Distro
        },
        images: c.images.iter().map(ToString::to_string).collect(),
        in_container: c.in_container,
        ..NodeSpec::new(c.version.parse().unwrap(), Arch::Amd64)
    };
    let plan = plan_base(&os, &spec, c.live).unwrap();
    let mut out = plan.render_text();
    out.push_str("# json\n");
    out.push_str(&serde_json::to_string_pretty(&plan.resources).unwrap());
    out.push('\n');
    out
}

#[test]
fn plans_match_their_golden_files() {
    let mismatches: Vec<String> = cases()
        .iter()
        .filter_map(|c| {
            let path = dir("golden/plans").join(format!("{}.plan", c.golden));
            kprov_testkit::golden::compare(&path, &render(c)).err()
        })
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn flatcar_plans_install_no_packages_and_put_binaries_under_opt_bin() {
    let text = render(&case("x", "flatcar", "v1.20.2"));
    assert!(!text.contains("packages ("), "{text}");
    assert!(text.contains("binary /opt/bin/kubelet"));
    assert!(text.contains("archive containerd (amd64) into /opt/bin"));
    assert!(text.contains("file /etc/systemd/system/containerd.service"));
}

#[test]
fn centos_7_uses_yum_and_docker_s_repository() {
    let text = render(&case("x", "centos-7", "v1.20.2"));
    assert!(text.contains("packages (yum): ca-certificates conntrack-tools"));
    assert!(text.contains("containerd.io"));
    assert!(text.contains("file /etc/yum.repos.d/docker-ce.repo"));
}

#[test]
fn offline_plans_start_and_load_nothing() {
    for c in cases().into_iter().filter(|c| !c.live) {
        let text = render(&c);
        for live_only in [
            "in effect",
            "loaded",
            "no swap in use",
            "reloaded",
            " active",
        ] {
            let plan_part = text.split("# json").next().unwrap();
            assert!(!plan_part.contains(live_only), "{}: {live_only}", c.golden);
        }
    }
}

#[test]
fn an_unsupported_os_is_refused_with_its_id_and_version() {
    let text = std::fs::read_to_string(dir("fixtures/os-release").join("fedora-40")).unwrap();
    let err = detect(&text, "/r/etc/os-release").unwrap_err().to_string();
    assert!(err.starts_with("unsupported operating system: ID=fedora VERSION_ID=40; supported: ubuntu 18.04/20.04/22.04/24.04"), "{err}");
}

fn join_plan(live: bool, joined: bool) -> kprov_plan::Plan {
    use kprov_provision::plan::{plan_join, JoinFiles};
    use kprov_provision::render::kubelet::KubeletParams;
    let text = std::fs::read_to_string(dir("fixtures/os-release").join("debian-12")).unwrap();
    let os = detect(&text, "debian-12").unwrap();
    let params = KubeletParams {
        version: "v1.20.2".parse().unwrap(),
        client_ca_file: "/etc/kubernetes/pki/ca.crt".into(),
        cluster_dns: "10.96.0.10".into(),
        cluster_domain: "cluster.local".into(),
        runtime_endpoint: "unix:///run/containerd/containerd.sock".into(),
        node_ip: Some("10.0.0.5".into()),
        node_labels: [("role".to_string(), "worker".to_string())].into(),
        register_with_taints: vec!["dedicated=gpu:NoSchedule".into()],
        cloud_provider: None,
        cloud_config: None,
        static_pods: false,
        hostname_override: Some("worker-1".into()),
        in_container: false,
    };
    let files = JoinFiles {
        ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
        bootstrap_kubeconfig: (!joined).then(|| b"token: abcdef.0123456789abcdef".to_vec()),
        lb: Some(kprov_provision::render::systemd::LbUnitSpec {
            listen: "127.0.0.1:6443".into(),
            ca_file: "/etc/kubernetes/pki/ca.crt".into(),
            kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
            seeds: vec!["10.0.0.1:6443".into()],
            metrics_address: "127.0.0.1:6445".into(),
        }),
    };
    plan_join(&os, &params, &files, live, ContainerRuntime::Containerd).unwrap()
}

#[test]
fn join_plans_match_their_golden_files() {
    let mismatches: Vec<String> = [
        ("join-debian-12-live", true),
        ("join-debian-12-offline", false),
    ]
    .iter()
    .filter_map(|(golden, live)| {
        let path = dir("golden/plans").join(format!("{golden}.plan"));
        kprov_testkit::golden::compare(&path, &join_plan(*live, false).render_text()).err()
    })
    .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn a_join_plan_keeps_the_token_secret_0600_and_a_joined_node_gets_none() {
    use kprov_plan::{Contents, Resource};
    let plan = join_plan(true, false);
    let bootstrap = plan
        .resources
        .iter()
        .find(|r| r.id() == "file:/etc/kubernetes/bootstrap-kubelet.conf")
        .unwrap();
    assert!(matches!(
        bootstrap,
        Resource::File {
            mode: 0o600,
            contents: Contents::Secret(_),
            ..
        }
    ));
    assert!(!plan.render_text().contains("0123456789abcdef"));
    assert!(!serde_json::to_string(&plan)
        .unwrap()
        .contains("0123456789abcdef"));
    let joined = join_plan(true, true);
    assert!(!joined
        .resources
        .iter()
        .any(|r| r.id().contains("bootstrap-kubelet.conf")));
    assert!(join_plan(false, false)
        .resources
        .iter()
        .all(|r| !r.is_live_only()));
}

#[test]
fn a_join_plan_starts_the_node_local_balancer_before_the_kubelet() {
    let ids: Vec<String> = join_plan(true, false)
        .resources
        .iter()
        .map(|r| r.id())
        .collect();
    let at = |id: &str| {
        ids.iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("no {id} in {ids:?}"))
    };
    assert!(
        at("file:/etc/systemd/system/kprov-lb.service")
            < at("unit-enabled:kprov-lb.service@multi-user.target")
    );
    assert!(at("unit-active:kprov-lb.service") < at("unit-active:kubelet.service"));
}
