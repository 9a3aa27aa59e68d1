//! systemd unit files from a small typed model.
//!
//! Values are written so that systemd reads back exactly what was put in:
//! `%` becomes `%%` (no specifier is expanded), `$` in `Exec*=` lines
//! becomes `$$` (no variable is expanded), and a value with a control
//! character (a newline would start a new `Key=` line) or a trailing `\`
//! (which would join the next line) is refused, naming the unit key.

use std::fmt::Write;

/// A value that cannot be written into a unit file as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{section}] {key}= value {value:?}: {reason}")]
pub struct UnitValueError {
    /// The section.
    pub section: String,
    /// The key.
    pub key: String,
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A unit file: named sections of `Key=Value` lines, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    sections: Vec<(String, Vec<(String, String)>)>,
    /// The first value that could not be written, reported by `render`.
    refused: Option<UnitValueError>,
}

/// Checks a value and escapes what systemd would expand.
pub fn unit_value(section: &str, key: &str, value: &str) -> Result<String, UnitValueError> {
    let refuse = |reason| UnitValueError {
        section: section.to_string(),
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !key_ok || section.chars().any(|c| c.is_control() || c == ']') {
        return Err(refuse("not a unit-file key"));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(
            "unit-file values cannot hold control characters such as a newline",
        ));
    }
    if value.ends_with('\\') {
        return Err(refuse(
            "unit-file values cannot end with '\\', which joins the next line",
        ));
    }
    let mut out = value.replace('%', "%%");
    if key.starts_with("Exec") {
        out = out.replace('$', "$$");
    }
    Ok(out)
}

impl UnitFile {
    /// An empty unit file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a section with its entries. A value that cannot be written
    /// is left out and makes [`UnitFile::render`] fail.
    pub fn section(mut self, name: &str, entries: &[(&str, &str)]) -> Self {
        let mut checked = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match unit_value(name, k, v) {
                Ok(v) => checked.push((k.to_string(), v)),
                Err(e) => {
                    self.refused.get_or_insert(e);
                }
            }
        }
        self.sections.push((name.to_string(), checked));
        self
    }

    /// The targets listed in `[Install] WantedBy=`.
    pub fn wanted_by(&self) -> Vec<String> {
        self.sections
            .iter()
            .filter(|(name, _)| name == "Install")
            .flat_map(|(_, entries)| entries.iter())
            .filter(|(k, _)| k == "WantedBy")
            .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
            .collect()
    }

    /// The unit file text, or the first value that could not be written.
    pub fn render(&self) -> Result<String, UnitValueError> {
        if let Some(e) = &self.refused {
            return Err(e.clone());
        }
        let mut out = String::from("# Written by kprov.\n");
        for (i, (name, entries)) in self.sections.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let _ = writeln!(out, "[{name}]");
            for (k, v) in entries {
                let _ = writeln!(out, "{k}={v}");
            }
        }
        Ok(out)
    }
}

/// The kubelet unit of the base phase: installed and enabled, but it only
/// starts once the join phase has written its configuration.
pub fn kubelet_unit(bin_dir: &str, runtime_unit: &str) -> UnitFile {
    let exec = format!("{bin_dir}/kubelet");
    let after = format!("network-online.target {runtime_unit}");
    UnitFile::new()
        .section(
            "Unit",
            &[
                ("Description", "kubelet: The Kubernetes Node Agent"),
                ("Documentation", "https://kubernetes.io/docs/"),
                ("Wants", "network-online.target"),
                ("After", &after),
                // Before join there is nothing to run; avoid a crash loop.
                ("ConditionPathExists", "/var/lib/kubelet/config.yaml"),
                ("StartLimitIntervalSec", "0"),
            ],
        )
        .section(
            "Service",
            &[
                ("ExecStart", &exec),
                ("Restart", "always"),
                ("RestartSec", "10"),
            ],
        )
        .section("Install", &[("WantedBy", "multi-user.target")])
}

/// containerd's unit, for nodes where kprov installs the static release.
pub fn containerd_unit(bin_dir: &str) -> UnitFile {
    let exec = format!("{bin_dir}/containerd");
    let path =
        format!("PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    UnitFile::new()
        .section(
            "Unit",
            &[
                ("Description", "containerd container runtime"),
                ("Documentation", "https://containerd.io"),
                ("After", "network.target local-fs.target"),
            ],
        )
        .section(
            "Service",
            &[
                ("Environment", &path),
                ("ExecStartPre", "-/sbin/modprobe overlay"),
                ("ExecStart", &exec),
                ("Type", "notify"),
                ("Delegate", "yes"),
                ("KillMode", "process"),
                ("Restart", "always"),
                ("RestartSec", "5"),
                ("LimitNPROC", "infinity"),
                ("LimitCORE", "infinity"),
                ("LimitNOFILE", "infinity"),
                ("TasksMax", "infinity"),
                ("OOMScoreAdjust", "-999"),
            ],
        )
        .section("Install", &[("WantedBy", "multi-user.target")])
}

/// The oneshot unit that imports staged image archives into containerd at
/// boot, for roots prebaked offline (no containerd runs while prebaking).
/// `images` are (reference, archive) pairs. Importing what containerd
/// already holds only re-reads the archive, which takes minutes on a slow
/// machine (a VM under TCG): the unit's condition skips it when containerd
/// lists every reference already (a store filled before the first boot,
/// or by an earlier one), and imports all when one is missing (image
/// garbage collection removed it, or the store is new).
pub fn images_unit(ctr: &str, runtime_unit: &str, images: &[(String, String)]) -> UnitFile {
    let references: Vec<&str> = images.iter().map(|(r, _)| r.as_str()).collect();
    let mut service = vec![
        ("Type".to_string(), "oneshot".to_string()),
        ("RemainAfterExit".to_string(), "yes".to_string()),
        (
            "ExecCondition".to_string(),
            format!(
                "/bin/sh -c 'for r in \"$@\"; do {ctr} -n k8s.io images ls -q | grep -qxF -e \"$r\" || exit 0; done; exit 1' kprov-images {}",
                references.join(" ")
            ),
        ),
    ];
    for (_, a) in images {
        service.push((
            "ExecStart".to_string(),
            format!("{ctr} -n k8s.io images import {a}"),
        ));
    }
    let service: Vec<(&str, &str)> = service
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    UnitFile::new()
        .section(
            "Unit",
            &[
                (
                    "Description",
                    "Import the container images staged by kprov into containerd",
                ),
                ("Requires", runtime_unit),
                ("After", runtime_unit),
                ("Before", "kubelet.service"),
            ],
        )
        .section("Service", &service)
        .section("Install", &[("WantedBy", "multi-user.target")])
}

/// The health check name shared by the service and its timer.
pub const HEALTH_UNIT: &str = "kprov-healthcheck";

/// The oneshot service that checks the runtime and kubelet once.
pub fn health_service(bin_dir: &str, runtime: &str) -> UnitFile {
    let exec = format!("{bin_dir}/kprov health-check --runtime {runtime}");
    UnitFile::new()
        .section(
            "Unit",
            &[
                (
                    "Description",
                    "kprov node health check (container runtime and kubelet)",
                ),
                ("After", "network-online.target"),
            ],
        )
        .section("Service", &[("Type", "oneshot"), ("ExecStart", &exec)])
}

/// The timer that runs the health check every 10 s.
pub fn health_timer() -> UnitFile {
    every_10_seconds("Run the kprov node health check every 10 seconds")
}

/// The pod-network sync name shared by the service and its timer.
pub const POD_NETWORK_UNIT: &str = "kprov-pod-network";

/// What the `kprov-lb.service` unit runs with: `kprov lb run`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbUnitSpec {
    /// Where the kubelet, kube-proxy and admin tools connect
    /// (`127.0.0.1:6443`).
    pub listen: String,
    /// The cluster CA (`/etc/kubernetes/pki/ca.crt`).
    pub ca_file: String,
    /// The kubeconfig discovery reads the Endpoints with (the kubelet's
    /// `/etc/kubernetes/kubelet.conf`, through the balancer itself).
    pub kubeconfig: String,
    /// The API servers of the join configuration, `IP:PORT` each.
    pub seeds: Vec<String>,
    /// The metrics listener (`127.0.0.1:6445`).
    pub metrics_address: String,
}

/// `kprov-lb.service`: the node-local API load balancer, started before
/// the kubelet (which reaches the API through it) and restarted whenever
/// it stops. Its endpoints file lives in /var/lib/kprov/lb.
pub fn lb_unit(bin_dir: &str, spec: &LbUnitSpec) -> UnitFile {
    let exec = format!(
        "{bin_dir}/kprov lb run --listen {} --ca-file {} --kubeconfig {} --endpoints-file /var/lib/kprov/lb/endpoints.json --metrics-address {}{}",
        spec.listen,
        spec.ca_file,
        spec.kubeconfig,
        spec.metrics_address,
        spec.seeds.iter().map(|s| format!(" --seed {s}")).collect::<String>()
    );
    UnitFile::new()
        .section(
            "Unit",
            &[
                (
                    "Description",
                    "kprov lb: the node-local Kubernetes API load balancer",
                ),
                ("Wants", "network-online.target"),
                ("After", "network-online.target"),
                ("Before", "kubelet.service"),
                ("StartLimitIntervalSec", "0"),
            ],
        )
        .section(
            "Service",
            &[
                ("ExecStart", &exec),
                ("Restart", "always"),
                ("RestartSec", "1"),
            ],
        )
        .section("Install", &[("WantedBy", "multi-user.target")])
}

/// The oneshot service that syncs the node's pod network (CNI config and
/// routes) once; it does nothing until the node has joined a cluster that
/// runs kprov's bridge network.
pub fn pod_network_service(bin_dir: &str) -> UnitFile {
    let exec = format!("{bin_dir}/kprov pod-network sync --follow");
    UnitFile::new()
        .section(
            "Unit",
            &[
                (
                    "Description",
                    "kprov pod network sync (CNI config and routes to other nodes' pods)",
                ),
                ("After", "network-online.target"),
            ],
        )
        .section(
            "Service",
            &[
                ("Type", "exec"),
                ("ExecStart", &exec),
                ("Restart", "always"),
                ("RestartSec", "2"),
            ],
        )
}

/// The timer that starts the pod-network sync 5 s after boot and every
/// 5 s after, a no-op while it runs. The sync follows the Nodes: a node is
/// Ready only once its CNI config is written, which the sync does as soon
/// as its pod range is given (and which a master's sync gives).
pub fn pod_network_timer() -> UnitFile {
    periodic(
        "Keep the kprov pod network sync running (started 5 s after boot)",
        "5s",
        "5s",
    )
}

fn every_10_seconds(description: &str) -> UnitFile {
    periodic(description, "30s", "10s")
}

fn periodic(description: &str, first: &str, every: &str) -> UnitFile {
    UnitFile::new()
        .section("Unit", &[("Description", description)])
        .section(
            "Timer",
            &[
                ("OnBootSec", first),
                ("OnUnitActiveSec", every),
                ("AccuracySec", "1s"),
            ],
        )
        .section("Install", &[("WantedBy", "timers.target")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_or_refused_naming_the_key() {
        for (key, value, written) in [
            ("Description", "100% kprov", "100%% kprov"),
            ("ExecStart", "/bin/echo $HOME %h", "/bin/echo $$HOME %%h"),
            ("Environment", "A=$B", "A=$B"),
            (
                "ExecStartPre",
                "-/sbin/modprobe overlay",
                "-/sbin/modprobe overlay",
            ),
        ] {
            let unit = UnitFile::new().section("Service", &[(key, value)]);
            assert_eq!(
                unit.render().unwrap(),
                format!("# Written by kprov.\n[Service]\n{key}={written}\n")
            );
        }
        for (key, value, error) in [
            (
                "ExecStart",
                "/bin/ctr import /x.tar\nExecStartPre=/bin/touch /pwned",
                "[Service] ExecStart= value \"/bin/ctr import /x.tar\\nExecStartPre=/bin/touch /pwned\": unit-file values cannot hold control characters such as a newline",
            ),
            (
                "Description",
                "a\rb",
                "[Service] Description= value \"a\\rb\": unit-file values cannot hold control characters such as a newline",
            ),
            (
                "ExecStart",
                "/bin/true \\",
                "[Service] ExecStart= value \"/bin/true \\\\\": unit-file values cannot end with '\\', which joins the next line",
            ),
            (
                "Exec\nStart",
                "x",
                "[Service] Exec\nStart= value \"x\": not a unit-file key",
            ),
        ] {
            let unit = UnitFile::new()
                .section("Unit", &[("Description", "fine")])
                .section("Service", &[(key, value), ("Type", "oneshot")]);
            assert_eq!(unit.render().unwrap_err().to_string(), error, "{value:?}");
        }
    }

    /// The images unit's condition, run by a real shell (the rendered `$$`
    /// unescaped, its single quotes kept as the shell's) with `ctr`
    /// listing `listed`: skipped (exit 1) only when every image is there.
    #[test]
    fn the_images_unit_is_skipped_only_when_containerd_lists_every_image() {
        let dir = tempfile::tempdir().unwrap();
        let ctr = dir.path().join("ctr");
        let listed = dir.path().join("listed");
        std::fs::write(&ctr, format!("#!/bin/sh\ncat {}\n", listed.display())).unwrap();
        std::fs::set_permissions(&ctr, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let images = [
            ("k8s.gcr.io/pause:3.2", "/var/lib/kprov/images/a.tar"),
            (
                "docker.io/library/busybox:1.35.0",
                "/var/lib/kprov/images/b.tar",
            ),
        ]
        .map(|(r, a)| (r.to_string(), a.to_string()));
        let text = images_unit(&ctr.display().to_string(), "containerd.service", &images)
            .render()
            .unwrap();
        let condition = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecCondition=/bin/sh -c "))
            .unwrap()
            .replace("$$", "$");
        let run = |list: &str| {
            std::fs::write(&listed, list).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("set -- {condition}; sh -c \"$@\""))
                .output()
                .unwrap();
            assert!(
                out.stderr.is_empty(),
                "{condition}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.status.code()
        };
        let all = "k8s.gcr.io/pause:3.2\ndocker.io/library/busybox:1.35.0\nother:1\n";
        assert_eq!(run(all), Some(1), "every image listed: skipped");
        assert_eq!(
            run("k8s.gcr.io/pause:3.2\n"),
            Some(0),
            "one missing: imported"
        );
        assert_eq!(
            run("k8s.gcr.io/pause:3.22\ndocker.io/library/busybox:1.35.0\n"),
            Some(0),
            "a longer name is another image"
        );
        assert_eq!(run(""), Some(0), "an empty store: imported");
    }

    #[test]
    fn an_image_archive_path_with_a_newline_adds_no_line_to_the_images_unit() {
        let unit = images_unit(
            "/usr/bin/ctr",
            "containerd.service",
            &[(
                "k8s.gcr.io/pause:3.2".to_string(),
                "/var/lib/kprov/images/x.tar\nExecStartPre=/bin/touch /pwned".to_string(),
            )],
        );
        assert!(unit
            .render()
            .unwrap_err()
            .to_string()
            .starts_with("[Service] ExecStart= value "));
    }

    #[test]
    fn units_render_sections_in_order_and_expose_wanted_by() {
        let unit = kubelet_unit("/usr/local/bin", "containerd.service");
        let text = unit.render().unwrap();
        assert!(text.contains("[Service]\nExecStart=/usr/local/bin/kubelet\n"));
        assert!(text.find("[Unit]") < text.find("[Service]"));
        assert_eq!(unit.wanted_by(), ["multi-user.target"]);
        assert_eq!(health_timer().wanted_by(), ["timers.target"]);
        assert!(health_service("/opt/bin", "containerd")
            .wanted_by()
            .is_empty());
    }

    #[test]
    fn the_lb_unit_runs_kprov_lb_with_every_seed_before_the_kubelet() {
        let spec = LbUnitSpec {
            listen: "127.0.0.1:6443".into(),
            ca_file: "/etc/kubernetes/pki/ca.crt".into(),
            kubeconfig: "/etc/kubernetes/kubelet.conf".into(),
            seeds: vec!["10.0.0.10:6443".into(), "10.0.0.11:6443".into()],
            metrics_address: "127.0.0.1:6445".into(),
        };
        assert_eq!(
            lb_unit("/usr/local/bin", &spec).render().unwrap(),
            "# Written by kprov.\n\
             [Unit]\n\
             Description=kprov lb: the node-local Kubernetes API load balancer\n\
             Wants=network-online.target\n\
             After=network-online.target\n\
             Before=kubelet.service\n\
             StartLimitIntervalSec=0\n\
             \n\
             [Service]\n\
             ExecStart=/usr/local/bin/kprov lb run --listen 127.0.0.1:6443 --ca-file /etc/kubernetes/pki/ca.crt --kubeconfig /etc/kubernetes/kubelet.conf --endpoints-file /var/lib/kprov/lb/endpoints.json --metrics-address 127.0.0.1:6445 --seed 10.0.0.10:6443 --seed 10.0.0.11:6443\n\
             Restart=always\n\
             RestartSec=1\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        );
    }
}
