//! The Machine resource's schema: one Rust type for the files of
//! `machinesDir` and for the `machines.kprov.dev` custom resource, whose
//! definition is generated from it ([`definition`], printed by `kprov
//! netboot crd`). The API server checks what the schema can say (a MAC's
//! or UUID's form, required fields); [`crate::machine`] validates the rest
//! (paths under the HTTP root, addresses in the subnet, duplicates) for
//! both sources alike. Files refuse unknown fields; the API server prunes
//! them (v1.20 has no strict field validation).
//!
//! Machines are cluster-scoped, as Nodes are: a machine is one piece of
//! hardware whatever namespace its owner works in.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::machine::MachineError;
use crate::state::{phase_of, Phase, Record};

/// What the MAC address field accepts: six hex byte pairs separated by
/// `:` or `-` (as [`crate::machine::MacAddr`] parses).
pub const MAC_PATTERN: &str = "^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$";

/// What the SMBIOS UUID field accepts: 8-4-4-4-12 hex digits.
pub const UUID_PATTERN: &str =
    "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$";

/// A Machine's spec: who the machine is (MAC, SMBIOS UUID, fixed address,
/// host name) and its boot profile.
// kube's printcolumn is repeated once per column, by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kprov.dev",
    version = "v1alpha1",
    kind = "Machine",
    plural = "machines",
    shortname = "mach",
    root = "MachineResource",
    doc = "A machine netboot knows: its identity, what it boots, and (in status) what netboot has seen of it.",
    status = "MachineStatus",
    printcolumn(name = "MAC", type_ = "string", json_path = ".spec.macAddress"),
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.ipAddress"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Seen", type_ = "string", json_path = ".status.address"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MachineSpec {
    /// The boot interface's MAC address, e.g. 52:54:00:12:34:56.
    #[schemars(schema_with = "mac_address_schema")]
    pub mac_address: String,
    /// The SMBIOS UUID (found when a machine boots from another NIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "uuid_schema")]
    pub uuid: Option<String>,
    /// The fixed IPv4 address handed out in full DHCP mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The host name (DHCP option 12 and the NoCloud meta-data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// What it boots and the data it gets.
    #[serde(flatten)]
    pub profile: ProfileSpec,
}

/// A boot profile: everything of a Machine but its identity. The
/// server's default profile (for unknown MACs) is one of these too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSpec {
    /// The role (master, worker, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What it boots.
    pub boot: BootSpec,
    /// Its cloud-init user-data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Once installed, its iPXE script exits to the local disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub installed: bool,
}

/// What a machine boots: a kernel (with an initrd and a command line) or
/// a disk image that the stage2 initrd writes to disk. Paths are
/// relative to the HTTP root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BootSpec {
    /// The kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// The initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Extra kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// A disk image (instead of a kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What netboot has seen of a Machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineStatus {
    /// Where the machine is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The conditions behind the phase, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<MachineCondition>,
    /// The address it was last seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// When it was last heard from (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact: Option<String>,
    /// The last request of its that was refused, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One condition of a Machine, in the shape of Kubernetes' conditions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineCondition {
    /// What the condition is about (e.g. Installed).
    #[serde(rename = "type")]
    pub kind: String,
    /// True, False or Unknown.
    pub status: String,
    /// Why, in one CamelCase word.
    pub reason: String,
    /// Why, for people.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
}

fn pattern_string(description: &str, pattern: &str) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": description,
        "pattern": pattern,
    })
}

fn mac_address_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    pattern_string(
        "The boot interface's MAC address: six hex byte pairs separated by ':' or '-', e.g. 52:54:00:12:34:56.",
        MAC_PATTERN,
    )
}

fn uuid_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = pattern_string("The SMBIOS UUID: 8-4-4-4-12 hex digits.", UUID_PATTERN);
    schema.insert("nullable".into(), true.into());
    schema
}

/// What netboot knows of one Machine, for its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed<'a> {
    /// Its record (None: nothing seen yet).
    pub record: Option<&'a Record>,
    /// Whether its spec says `installed: true`.
    pub spec_installed: bool,
    /// Why netboot refused its spec, when it did.
    pub refused: Option<&'a MachineError>,
    /// Its Node (name, Ready), once it exists.
    pub node: Option<(&'a str, bool)>,
}

/// An RFC 3339 time from seconds since the Unix epoch.
pub fn rfc3339(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A Machine's status from what netboot has seen of it, `now` (seconds
/// since the epoch). A condition whose status did not change keeps its
/// transition time from `previous`.
pub fn status_of(seen: Observed<'_>, previous: Option<&MachineStatus>, now: u64) -> MachineStatus {
    let record = seen.record;
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.kind == kind))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| rfc3339(now));
        MachineCondition {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
        }
    };
    let valid = match seen.refused {
        Some(e) => condition(
            "Valid",
            false,
            "InvalidSpec",
            format!("{}: {}", e.field, e.reason),
        ),
        None => condition(
            "Valid",
            true,
            "SpecAccepted",
            "netboot serves this Machine".into(),
        ),
    };
    let at = |t: Option<u64>| t.map(rfc3339).unwrap_or_default();
    let booted = match record {
        Some(r) if r.script_at.is_some() => condition(
            "PXEBooted",
            true,
            "ScriptServed",
            format!("its iPXE script was served at {}", at(r.script_at)),
        ),
        Some(r) if r.dhcp_at.is_some() => condition(
            "PXEBooted",
            true,
            "DHCPAnswered",
            format!("DHCP answered it at {}", at(r.dhcp_at)),
        ),
        _ => condition(
            "PXEBooted",
            false,
            "NotSeen",
            "netboot has not heard from it".into(),
        ),
    };
    let installed = match record.and_then(|r| r.installed_at) {
        Some(t) => condition(
            "Installed",
            true,
            "Stage2Reported",
            format!("stage2 reported its image installed at {}", rfc3339(t)),
        ),
        None if seen.spec_installed => condition(
            "Installed",
            true,
            "SpecInstalled",
            "its spec says installed: true".into(),
        ),
        None => condition(
            "Installed",
            false,
            "NotInstalled",
            "no install reported".into(),
        ),
    };
    let configured = match record.and_then(|r| r.user_data_first) {
        Some(t) => condition(
            "UserDataServed",
            true,
            "UserDataServed",
            format!("its user-data was first served at {}", rfc3339(t)),
        ),
        None => condition(
            "UserDataServed",
            false,
            "NotServed",
            "its user-data has not been served".into(),
        ),
    };
    let node_ready = match seen.node {
        Some((node, true)) => condition(
            "NodeReady",
            true,
            "KubeletReady",
            format!("Node {node} is Ready"),
        ),
        Some((node, false)) => condition(
            "NodeReady",
            false,
            "NodeNotReady",
            format!("Node {node} is registered, not Ready"),
        ),
        None => condition(
            "NodeReady",
            false,
            "NoNode",
            "no Node of its name yet".into(),
        ),
    };
    let phase = if seen.refused.is_some() {
        Phase::Failed
    } else {
        phase_of(
            record,
            seen.spec_installed,
            seen.node.map(|(_, ready)| ready),
        )
        .0
    };
    MachineStatus {
        phase: Some(phase),
        conditions: vec![valid, booted, installed, configured, node_ready],
        address: record.and_then(|r| r.address).map(|a| a.to_string()),
        last_contact: record.and_then(|r| r.last_contact).map(rfc3339),
        last_error: seen
            .refused
            .map(|e| format!("{}: {}", e.field, e.reason))
            .or_else(|| record.and_then(|r| r.last_error.clone())),
    }
}

/// The CustomResourceDefinition of `machines.kprov.dev`, as YAML for
/// `kubectl apply -f`.
pub fn definition() -> String {
    let crd = MachineResource::crd();
    let mut text = String::from("# The Machine resource of kprov netboot (kprov netboot crd).\n");
    text.push_str(
        &serde_yaml::to_string(&crd)
            .unwrap_or_else(|e| unreachable!("a CRD always serializes: {e}")),
    );
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_follows_the_record_and_keeps_unchanged_transition_times() {
        let mut record = Record {
            dhcp_at: Some(1_000),
            last_contact: Some(1_000),
            address: Some("10.77.0.20".parse().unwrap()),
            ..Record::default()
        };
        let first = status_of(
            Observed {
                record: Some(&record),
                ..Observed::default()
            },
            None,
            1_000,
        );
        assert_eq!(first.phase, Some(Phase::PxeBooting));
        assert_eq!(first.address.as_deref(), Some("10.77.0.20"));
        assert_eq!(first.last_contact.as_deref(), Some("1970-01-01T00:16:40Z"));
        let booted = &first.conditions[1];
        assert_eq!(
            (
                booted.kind.as_str(),
                booted.status.as_str(),
                booted.reason.as_str()
            ),
            ("PXEBooted", "True", "DHCPAnswered")
        );
        record.installed_at = Some(2_000);
        let later = status_of(
            Observed {
                record: Some(&record),
                ..Observed::default()
            },
            Some(&first),
            2_000,
        );
        assert_eq!(later.phase, Some(Phase::Installed));
        // PXEBooted stayed True: its time is the first one.
        assert_eq!(later.conditions[1].last_transition_time, rfc3339(1_000));
        assert_eq!(later.conditions[2].status, "True");
        assert_eq!(later.conditions[2].last_transition_time, rfc3339(2_000));
    }

    #[test]
    fn a_machine_is_joining_with_its_node_registered_and_ready_with_it_ready() {
        let record = Record {
            installed_at: Some(100),
            user_data_first: Some(200),
            user_data_at: Some(200),
            ..Record::default()
        };
        let seen = |node| Observed {
            record: Some(&record),
            node,
            ..Observed::default()
        };
        assert_eq!(status_of(seen(None), None, 300).phase, Some(Phase::Joining));
        let registered = status_of(seen(Some(("node1", false))), None, 300);
        assert_eq!(registered.phase, Some(Phase::Joining));
        assert_eq!(registered.conditions[4].reason, "NodeNotReady");
        let ready = status_of(seen(Some(("node1", true))), Some(&registered), 400);
        assert_eq!(ready.phase, Some(Phase::Ready));
        let condition = &ready.conditions[4];
        assert_eq!(
            (
                condition.kind.as_str(),
                condition.status.as_str(),
                condition.message.as_str()
            ),
            ("NodeReady", "True", "Node node1 is Ready")
        );
        assert_eq!(condition.last_transition_time, rfc3339(400));
    }

    #[test]
    fn a_refused_spec_fails_the_machine_naming_the_field() {
        let refused = MachineError {
            file: "machine/node2".into(),
            field: "spec.ipAddress".into(),
            reason: "10.1.0.9 is not a host address of the configured subnet 10.77.0.0/24".into(),
        };
        let status = status_of(
            Observed {
                refused: Some(&refused),
                ..Observed::default()
            },
            None,
            5,
        );
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(
            status.last_error.as_deref(),
            Some("spec.ipAddress: 10.1.0.9 is not a host address of the configured subnet 10.77.0.0/24")
        );
        assert_eq!(
            (
                status.conditions[0].status.as_str(),
                status.conditions[0].reason.as_str()
            ),
            ("False", "InvalidSpec")
        );
    }

    #[test]
    fn the_definition_is_cluster_scoped_with_a_status_and_checks_the_mac() {
        let crd: serde_json::Value = serde_yaml::from_str(&definition()).unwrap();
        assert_eq!(crd["metadata"]["name"], "machines.kprov.dev");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["names"]["kind"], "Machine");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object(), "{version}");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec["properties"]["macAddress"]["pattern"], MAC_PATTERN,
            "{spec}"
        );
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"macAddress") && required.contains(&"boot"),
            "{required:?}"
        );
        let phases = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["phase"]["enum"];
        assert!(
            phases.as_array().unwrap().contains(&"PXEBooting".into()),
            "{phases}"
        );
    }
}
