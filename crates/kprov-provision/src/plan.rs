//! The plan: typed resources computed from (OS facts, node spec) alone.

use kprov_artifacts::{ArtifactId, ArtifactName};
use kprov_core::{ContainerRuntime, NodeSpec, RuntimeSource};

use crate::os::{OsFacts, OsFamily};
use crate::render::containerd::ContainerdConfig;
use crate::render::systemd::{self, UnitFile, HEALTH_UNIT, POD_NETWORK_UNIT};
use crate::render::{docker_daemon_json, kubelet, modules_conf, sysctl_conf};
use crate::tables::{self, SYSCTLS};
use kprov_plan::{Contents, ImageImport, PackageManager, Plan, Resource};

pub use kprov_plan::STATE_DIR;
/// Where image archives are staged on a node.
pub const IMAGES_DIR: &str = "/var/lib/kprov/images";
/// The unit that imports them at boot (offline roots).
pub const IMAGES_UNIT: &str = "kprov-images.service";

/// A plan's headline: what it is for, on which OS, with which kubelet
/// and runtime, live or offline.
pub fn headline(
    purpose: &str,
    os: &OsFacts,
    kubelet_version: &kprov_core::KubernetesVersion,
    container_runtime: ContainerRuntime,
    live: bool,
) -> String {
    format!(
        "{purpose} for {} [{}], kubelet {kubelet_version}, runtime {container_runtime}, {}",
        os.pretty_name,
        os.family,
        if live { "live host" } else { "offline root" }
    )
}

/// The package manager of an OS family; none on Flatcar.
pub fn package_manager(family: OsFamily) -> Option<PackageManager> {
    match family {
        OsFamily::Apt => Some(PackageManager::Apt),
        OsFamily::Yum => Some(PackageManager::Yum),
        OsFamily::Dnf => Some(PackageManager::Dnf),
        OsFamily::Flatcar => None,
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A renderer failed (a bug: the models are always serialisable).
    #[error("rendering {what}: {reason}")]
    Render {
        /// What was being rendered.
        what: &'static str,
        /// The renderer's message.
        reason: String,
    },
    /// A value that cannot be written into a unit file.
    #[error("unit {path}: {source}")]
    Unit {
        /// The unit file on the node.
        path: String,
        /// The value refused.
        source: systemd::UnitValueError,
    },
}

fn file(path: &str, mode: u32, text: String) -> Resource {
    Resource::File {
        path: path.to_string(),
        mode,
        contents: Contents::Text(text),
    }
}

fn unit_file(dir: &str, name: &str, unit: &UnitFile) -> Result<Resource, PlanError> {
    let path = format!("{dir}/{name}");
    let text = unit.render().map_err(|source| PlanError::Unit {
        path: path.clone(),
        source,
    })?;
    Ok(file(&path, 0o644, text))
}

/// Plans the kubelet's configuration for a node that joins or runs the
/// control plane: its KubeletConfiguration and unit drop-in, and on a
/// running host a daemon-reload and the kubelet (re)started on them.
pub fn plan_kubelet(
    os: &OsFacts,
    params: &kubelet::KubeletParams,
    live: bool,
    purpose: &'static str,
    container_runtime: ContainerRuntime,
) -> Result<Plan, PlanError> {
    let layout = tables::layout(os.family);
    let dropin = kubelet::kubelet_dropin(layout.bin_dir, params)
        .render()
        .map_err(|source| PlanError::Unit {
            path: kubelet::DROPIN_PATH.to_string(),
            source,
        })?;
    let mut r = vec![
        file(kubelet::CONFIG_PATH, 0o644, kubelet::kubelet_config(params)),
        file(kubelet::DROPIN_PATH, 0o644, dropin),
    ];
    if live {
        r.push(Resource::DaemonReloaded {
            units: vec!["kubelet.service".into()],
        });
        r.push(Resource::UnitActive {
            unit: "kubelet.service".into(),
            config: vec![kubelet::CONFIG_PATH.into(), kubelet::DROPIN_PATH.into()],
        });
    }
    Ok(Plan::new(
        headline(purpose, os, &params.version, container_runtime, live),
        live,
        r,
    ))
}

/// Where a joining node keeps the cluster CA.
pub const CA_CERT_PATH: &str = "/etc/kubernetes/pki/ca.crt";

/// What the join phase writes besides the kubelet's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinFiles {
    /// The cluster CA (PEM), trusted by then.
    pub ca_pem: String,
    /// bootstrap-kubelet.conf (it holds the token), or None on a node that
    /// has joined already, whose kubelet.conf must not be replaced by a
    /// possibly expired token.
    pub bootstrap_kubeconfig: Option<Vec<u8>>,
    /// The node-local API load balancer the kubelet reaches the API
    /// through (`kprov-lb.service`), when the node uses one.
    pub lb: Option<crate::render::systemd::LbUnitSpec>,
}

/// The node-local API load balancer's unit.
pub const LB_UNIT: &str = "kprov-lb.service";

/// Plans the join phase: the CA, the bootstrap kubeconfig (0600), the
/// kubelet's configuration and drop-in, the kubelet enabled; on a running
/// host, (re)started on them.
pub fn plan_join(
    os: &OsFacts,
    params: &kubelet::KubeletParams,
    files: &JoinFiles,
    live: bool,
    container_runtime: ContainerRuntime,
) -> Result<Plan, PlanError> {
    let mut plan = plan_kubelet(os, params, live, "join phase", container_runtime)?;
    let mut front = vec![file(CA_CERT_PATH, 0o644, files.ca_pem.clone())];
    if let Some(conf) = &files.bootstrap_kubeconfig {
        front.push(Resource::File {
            path: kubelet::BOOTSTRAP_KUBECONFIG_PATH.into(),
            mode: 0o600,
            contents: Contents::Secret(conf.clone()),
        });
    }
    let files_end = front.len() + 2;
    plan.resources.splice(0..0, front);
    plan.resources.insert(
        files_end,
        Resource::UnitEnabled {
            unit: "kubelet.service".into(),
            wanted_by: "multi-user.target".into(),
        },
    );
    for r in &mut plan.resources {
        if let Resource::UnitActive { config, .. } = r {
            config.push(CA_CERT_PATH.into());
            if files.bootstrap_kubeconfig.is_some() {
                config.push(kubelet::BOOTSTRAP_KUBECONFIG_PATH.into());
            }
        }
    }
    if let Some(lb) = &files.lb {
        add_lb(&mut plan, os, lb, files_end + 1)?;
    }
    Ok(plan)
}

/// Adds the balancer to a join plan: its unit written and enabled at
/// `at`; on a running host, started (on its unit) before the kubelet.
fn add_lb(
    plan: &mut Plan,
    os: &OsFacts,
    lb: &crate::render::systemd::LbUnitSpec,
    at: usize,
) -> Result<(), PlanError> {
    let layout = tables::layout(os.family);
    let path = format!("{}/{LB_UNIT}", layout.unit_dir);
    let text = crate::render::systemd::lb_unit(layout.bin_dir, lb)
        .render()
        .map_err(|source| PlanError::Unit {
            path: path.clone(),
            source,
        })?;
    plan.resources.splice(
        at..at,
        [
            file(&path, 0o644, text),
            Resource::UnitEnabled {
                unit: LB_UNIT.into(),
                wanted_by: "multi-user.target".into(),
            },
        ],
    );
    for r in &mut plan.resources {
        if let Resource::DaemonReloaded { units } = r {
            units.push(LB_UNIT.into());
        }
    }
    if let Some(kubelet) = plan
        .resources
        .iter()
        .position(|r| matches!(r, Resource::UnitActive { .. }))
    {
        plan.resources.insert(
            kubelet,
            Resource::UnitActive {
                unit: LB_UNIT.into(),
                config: vec![path],
            },
        );
    }
    Ok(())
}

/// Plans the base phase: everything a node needs before it can join.
pub fn plan_base(os: &OsFacts, spec: &NodeSpec, live: bool) -> Result<Plan, PlanError> {
    let layout = tables::layout(os.family);
    let runtime = spec.container_runtime;
    let artifact = |name: ArtifactName, version: Option<String>| ArtifactId {
        name,
        version,
        arch: spec.arch,
    };
    let kube_version = Some(spec.kubelet_version.to_string());
    let mut r = Vec::new();

    // Packages (and the repository that provides the runtime on RHEL-likes).
    // containerd from its static release: always on Flatcar, on request
    // elsewhere. Docker always comes from the distribution.
    let upstream_containerd = runtime == ContainerRuntime::Containerd
        && (os.family == OsFamily::Flatcar || spec.runtime_source == RuntimeSource::Upstream);
    if !upstream_containerd {
        if let Some((path, repo)) = tables::docker_repo(os) {
            r.push(file(path, 0o644, repo));
        }
    }
    let mut packages: Vec<String> = tables::base_packages(os)
        .into_iter()
        .map(str::to_string)
        .collect();
    if !upstream_containerd {
        packages.extend(
            tables::runtime_packages(os, runtime)
                .into_iter()
                .map(str::to_string),
        );
    }
    if let (false, Some(manager)) = (packages.is_empty(), package_manager(os.family)) {
        r.push(Resource::Packages {
            manager,
            names: packages,
        });
    }

    for (path, mode) in [
        (layout.cni_bin_dir, 0o755),
        (layout.cni_conf_dir, 0o755),
        (STATE_DIR, 0o700),
    ] {
        r.push(Resource::Directory {
            path: path.to_string(),
            mode,
        });
    }

    // Kernel and swap.
    let modules = tables::kernel_modules(spec.proxy_mode);
    r.push(file(tables::SYSCTL_FILE, 0o644, sysctl_conf(SYSCTLS)));
    r.push(file(tables::MODULES_FILE, 0o644, modules_conf(&modules)));
    r.push(Resource::FstabSwapDisabled);
    r.push(Resource::SwapUnitsMasked);

    // Container runtime.
    let mut ctr = None;
    let mut runtime_config = Vec::new();
    let mut own_units = Vec::new();
    match runtime {
        ContainerRuntime::Containerd => {
            let mut runc = None;
            ctr = Some(if upstream_containerd {
                format!("{}/ctr", layout.bin_dir)
            } else {
                "/usr/bin/ctr".to_string()
            });
            if upstream_containerd {
                r.push(Resource::Archive {
                    dir: layout.bin_dir.to_string(),
                    artifact: artifact(ArtifactName::Containerd, None),
                    strip_prefix: Some("bin/".into()),
                });
                let runc_path = format!("{}/runc", layout.bin_dir);
                r.push(Resource::Binary {
                    path: runc_path.clone(),
                    artifact: artifact(ArtifactName::Runc, None),
                });
                r.push(unit_file(
                    layout.unit_dir,
                    "containerd.service",
                    &systemd::containerd_unit(layout.bin_dir),
                )?);
                own_units.push("containerd.service".to_string());
                runc = Some(runc_path);
            }
            let sandbox = spec
                .sandbox_image
                .clone()
                .unwrap_or_else(|| tables::pause_image(&spec.kubelet_version));
            let config = ContainerdConfig::for_node(
                &sandbox,
                layout.cni_bin_dir,
                layout.cni_conf_dir,
                runc.as_deref(),
                spec.in_container,
            )
            .render()
            .map_err(|e| PlanError::Render {
                what: "containerd config",
                reason: e.to_string(),
            })?;
            r.push(file("/etc/containerd/config.toml", 0o644, config));
            runtime_config.push("/etc/containerd/config.toml".to_string());
        }
        ContainerRuntime::Docker => {
            r.push(file("/etc/docker/daemon.json", 0o644, docker_daemon_json()));
            runtime_config.push("/etc/docker/daemon.json".to_string());
        }
    }

    // Binaries.
    r.push(Resource::Archive {
        dir: layout.cni_bin_dir.to_string(),
        artifact: artifact(ArtifactName::CniPlugins, None),
        strip_prefix: None,
    });
    for (name, version) in [
        (ArtifactName::Kubelet, kube_version.clone()),
        (ArtifactName::Kubectl, kube_version.clone()),
        (ArtifactName::Kprov, None),
    ] {
        r.push(Resource::Binary {
            path: format!("{}/{}", layout.bin_dir, name),
            artifact: artifact(name, version),
        });
    }

    // Images, staged as verified archives. A live host imports them once
    // containerd runs (below); an offline root imports them at first boot.
    let mut images = Vec::new();
    if let (Some(ctr), false) = (&ctr, spec.images.is_empty()) {
        r.push(Resource::Directory {
            path: IMAGES_DIR.to_string(),
            mode: 0o700,
        });
        for reference in &spec.images {
            let archive = format!(
                "{IMAGES_DIR}/{}.tar",
                reference.replace(['/', ':', '@'], "_")
            );
            r.push(Resource::ImageArchive {
                path: archive.clone(),
                artifact: artifact(ArtifactName::Image, Some(reference.clone())),
            });
            images.push(ImageImport {
                reference: reference.clone(),
                archive,
            });
        }
        if !live {
            let imports: Vec<(String, String)> = images
                .iter()
                .map(|i| (i.reference.clone(), i.archive.clone()))
                .collect();
            r.push(unit_file(
                layout.unit_dir,
                IMAGES_UNIT,
                &systemd::images_unit(ctr, runtime.unit(), &imports),
            )?);
            r.push(Resource::UnitEnabled {
                unit: IMAGES_UNIT.to_string(),
                wanted_by: "multi-user.target".to_string(),
            });
        }
    }

    // Units.
    let kubelet = systemd::kubelet_unit(layout.bin_dir, runtime.unit());
    // kprov's own periodic units: the health check and the pod-network
    // sync, each a oneshot service run by a timer.
    let periodic = [
        (
            HEALTH_UNIT,
            systemd::health_service(layout.bin_dir, &runtime.to_string()),
            systemd::health_timer(),
        ),
        (
            POD_NETWORK_UNIT,
            systemd::pod_network_service(layout.bin_dir),
            systemd::pod_network_timer(),
        ),
    ];
    r.push(unit_file(layout.unit_dir, "kubelet.service", &kubelet)?);
    own_units.push("kubelet.service".to_string());
    let mut enabled = vec![
        (runtime.unit().to_string(), "multi-user.target".to_string()),
        ("kubelet.service".to_string(), kubelet.wanted_by().join(" ")),
    ];
    for (name, service, timer) in &periodic {
        let service_name = format!("{name}.service");
        let timer_name = format!("{name}.timer");
        r.push(unit_file(layout.unit_dir, &service_name, service)?);
        r.push(unit_file(layout.unit_dir, &timer_name, timer)?);
        enabled.push((timer_name.clone(), timer.wanted_by().join(" ")));
        own_units.extend([service_name, timer_name]);
    }
    for (unit, wanted_by) in enabled {
        r.push(Resource::UnitEnabled { unit, wanted_by });
    }

    if live {
        for m in &modules {
            r.push(Resource::ModuleLoaded {
                name: m.to_string(),
            });
        }
        for s in SYSCTLS {
            r.push(Resource::SysctlActive {
                key: s.key.to_string(),
                value: s.value.to_string(),
            });
        }
        r.push(Resource::SwapOff);
        r.push(Resource::DaemonReloaded {
            units: own_units.clone(),
        });
        r.push(Resource::UnitActive {
            unit: runtime.unit().to_string(),
            config: runtime_config,
        });
        if let (Some(ctr), false) = (ctr, images.is_empty()) {
            r.push(Resource::ImagesImported { ctr, images });
        }
        for (name, _, _) in &periodic {
            r.push(Resource::UnitActive {
                unit: format!("{name}.timer"),
                config: vec![
                    format!("{}/{name}.service", layout.unit_dir),
                    format!("{}/{name}.timer", layout.unit_dir),
                ],
            });
        }
    }

    Ok(Plan::new(
        headline("base phase", os, &spec.kubelet_version, runtime, live),
        live,
        r,
    ))
}
