//! systemd unit files from a small typed model.

use std::fmt::Write;

/// A unit file: named sections of `Key=Value` lines, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFile {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl UnitFile {
    /// An empty unit file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a section with its entries.
    pub fn section(mut self, name: &str, entries: &[(&str, &str)]) -> Self {
        self.sections.push((
            name.to_string(),
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
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

    /// The unit file text.
    pub fn render(&self) -> String {
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
        out
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
/// Importing what containerd already holds only re-reads the archive.
pub fn images_unit(ctr: &str, runtime_unit: &str, archives: &[String]) -> UnitFile {
    let mut service = vec![
        ("Type".to_string(), "oneshot".to_string()),
        ("RemainAfterExit".to_string(), "yes".to_string()),
    ];
    for a in archives {
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

/// The oneshot service that syncs the node's pod network (CNI config and
/// routes) once; it does nothing until the node has joined a cluster that
/// runs kprov's bridge network.
pub fn pod_network_service(bin_dir: &str) -> UnitFile {
    let exec = format!("{bin_dir}/kprov pod-network sync");
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
        .section("Service", &[("Type", "oneshot"), ("ExecStart", &exec)])
}

/// The timer that runs the pod-network sync every 10 s.
pub fn pod_network_timer() -> UnitFile {
    every_10_seconds("Sync the kprov pod network every 10 seconds")
}

fn every_10_seconds(description: &str) -> UnitFile {
    UnitFile::new()
        .section("Unit", &[("Description", description)])
        .section(
            "Timer",
            &[
                ("OnBootSec", "30s"),
                ("OnUnitActiveSec", "10s"),
                ("AccuracySec", "1s"),
            ],
        )
        .section("Install", &[("WantedBy", "timers.target")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_render_sections_in_order_and_expose_wanted_by() {
        let unit = kubelet_unit("/usr/local/bin", "containerd.service");
        let text = unit.render();
        assert!(text.contains("[Service]\nExecStart=/usr/local/bin/kubelet\n"));
        assert!(text.find("[Unit]") < text.find("[Service]"));
        assert_eq!(unit.wanted_by(), ["multi-user.target"]);
        assert_eq!(health_timer().wanted_by(), ["timers.target"]);
        assert!(health_service("/opt/bin", "containerd")
            .wanted_by()
            .is_empty());
    }
}
