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

use crate::state::Phase;

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
