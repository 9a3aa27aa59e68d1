//! The node's flags: one clap + serde struct, [`NodeConfig`], for
//! everything `kprov provision` is told about the node it prepares.
//!
//! - `kprov provision` and `kprov userdata` flatten it into their
//!   arguments, and `kprov cluster` builds one per joining worker, so the
//!   flags are defined once;
//! - a YAML config file (`--config`) holds the same settings under the
//!   same names, the long flag names without `--` ([`from_yaml`]);
//! - [`NodeConfig::to_args`] turns it back into the flags it was parsed
//!   from, the inverse of parsing: setup.sh's `kprov provision` line is
//!   rendered with it, and a config file becomes an argument list that the
//!   command's own clap parser takes before the command line's (the
//!   pattern of coreos-installer's `install --config-file`), so that clap
//!   does the merge and the command line wins;
//! - [`NodeConfig::node_spec`] checks it into a [`NodeSpec`], each error
//!   naming the flag.
//!
//! Flag names are never written by hand: a field's long flag (clap) and
//! its key (serde) are both its name in kebab case, and the tests check
//! that every flag has a key and survives `to_args` and parsing again.
//!
//! Why here: kprov-core is the model every crate that describes a node
//! already depends on (the CLI, kprov-bootconfig and kprov-cluster), and clap, serde and serde_yaml are pure, so the crate keeps
//! doing no I/O. Reading the files the flags name (`--ca-cert`) is the
//! caller's job.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::join::{is_dns_name, parse_node_labels, JoinInputError};
use crate::spec::SpecError;
use crate::version::{VersionError, NEWEST_KNOWN};
use crate::{
    Arch, BootstrapToken, CaCertificate, ContainerRuntime, KubernetesVersion, NodeSpec, Phase,
    ProxyMode, RuntimeSource,
};

/// Default of `--cache-dir`.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/kprov";
/// Default of `--cluster-dns`: the tenth address of kubeadm's default
/// service range.
pub const DEFAULT_CLUSTER_DNS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, 10));
/// Default of `--cluster-domain`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// Default of `--timeout`, in seconds.
pub const DEFAULT_TIMEOUT: u64 = 300;

/// What describes a node to `kprov provision`, as the user gives it: on
/// the command line, in a config file, or in the setup.sh of a boot
/// config. Values are checked by clap where a type says what is valid
/// (versions, enums, addresses), the rest by [`NodeConfig::node_spec`].
///
/// `Default` is what parsing no flags gives.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize, serde::Deserialize)]
// No deny_unknown_fields: a config file also holds the command's own keys;
// from_yaml refuses keys that neither knows.
#[serde(rename_all = "kebab-case", default)]
pub struct NodeConfig {
    /// Which phase to run. The join phase needs --token, --api-server and
    /// a way to trust the API server (--discovery-token-ca-cert-hash,
    /// --ca-cert or --discovery-token-unsafe-skip-ca-verification).
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,

    /// Kubernetes release of the kubelet and kubectl to install
    /// (vMAJOR.MINOR.PATCH, at least v1.20.0). The default is the newest
    /// release kprov knows.
    #[arg(long, value_name = "VERSION", default_value_t = NEWEST_KNOWN)]
    pub kubelet_version: KubernetesVersion,

    /// Container runtime to install and configure.
    #[arg(long, value_enum, default_value_t = ContainerRuntime::Containerd)]
    pub container_runtime: ContainerRuntime,

    /// kube-proxy mode the node is prepared for.
    #[arg(long, value_enum, default_value_t = ProxyMode::Iptables)]
    pub proxy_mode: ProxyMode,

    /// Architecture of the binaries to install (amd64 or arm64); defaults
    /// to the machine's own.
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,

    /// Directory of artifacts to install from: kubelet, kubectl,
    /// cni-plugins.tgz (and on Flatcar containerd.tar.gz, runc), each listed
    /// with its sha256 in a SHA256SUMS file. Files not listed are refused.
    /// (With `kprov userdata`: a path on the node, baked into the image or
    /// mounted.)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["bundle", "mirror"])]
    #[serde(serialize_with = "opt_path_as_text")]
    pub artifacts_dir: Option<PathBuf>,

    /// Offline bundle (directory or .tar.zst, from `kprov bundle create`)
    /// to install from; nothing is downloaded. (With `kprov userdata`: a
    /// path on the node.)
    #[arg(long, value_name = "PATH", conflicts_with = "mirror")]
    #[serde(serialize_with = "opt_path_as_text")]
    pub bundle: Option<PathBuf>,

    /// Download from a mirror with upstream's layout instead of upstream
    /// (dl.k8s.io and GitHub releases). Without --bundle or
    /// --artifacts-dir, kprov downloads, verifying every file's sha256.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,

    /// Download cache, keyed by sha256.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CACHE_DIR)]
    #[serde(serialize_with = "path_as_text")]
    pub cache_dir: PathBuf,

    /// Where the container runtime comes from on apt/yum/dnf systems.
    #[arg(long, value_enum, default_value_t = RuntimeSource::Distro)]
    pub runtime_source: RuntimeSource,

    /// Sandbox (pause) image for containerd, e.g. one imported offline.
    /// Defaults to the image kubeadm uses for the kubelet version.
    #[arg(long, value_name = "IMAGE")]
    pub sandbox_image: Option<String>,

    /// In-tree cloud provider for the kubelet (join phase), e.g. openstack.
    #[arg(long, value_name = "NAME")]
    pub cloud_provider: Option<String>,

    /// Path on the node of the cloud provider's config file (join phase;
    /// with `kprov userdata --cloud-config-file`, default
    /// /etc/kubernetes/cloud-config).
    #[arg(long, value_name = "PATH")]
    #[serde(serialize_with = "opt_path_as_text")]
    pub cloud_config: Option<PathBuf>,

    /// Bootstrap token to join with (join phase), [a-z0-9]{6}.[a-z0-9]{16}.
    /// Prefer the KPROV_TOKEN environment variable: command lines are
    /// visible to other users.
    // Parsed after clap, so that a malformed token is never echoed back.
    #[arg(
        long,
        env = "KPROV_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<TokenText>,

    /// PEM file of the cluster CA that signed the API server's certificate
    /// (join phase). Trusted as given; checked against
    /// --discovery-token-ca-cert-hash when both are given. (`kprov
    /// userdata` embeds it and writes it to /etc/kubernetes/pki/ca.crt on
    /// the node.)
    #[arg(long, value_name = "FILE")]
    #[serde(serialize_with = "opt_path_as_text")]
    pub ca_cert: Option<PathBuf>,

    /// The API server to join (join phase): https://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub api_server: Option<String>,

    /// Pin the cluster CA by its public-key hash (join phase):
    /// sha256:<hex of the SHA-256 of its DER SubjectPublicKeyInfo>, as
    /// `kprov pki ca-hash` prints it. The CA found by token discovery is
    /// accepted only if it matches one. Repeatable; in a config file, a
    /// list.
    #[arg(
        long,
        value_name = "sha256:HEX",
        alias = "discovery-token-ca-cert-hashes"
    )]
    #[serde(alias = "discovery-token-ca-cert-hashes")]
    pub discovery_token_ca_cert_hash: Vec<String>,

    /// Trust whatever CA token discovery finds, without a pinned hash
    /// (join phase). Anyone who can answer for the API server's address
    /// can then take the node over.
    #[arg(long)]
    pub discovery_token_unsafe_skip_ca_verification: bool,

    /// The node's name (join phase; the kubelet's --hostname-override).
    /// Defaults to the host name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The node's address (join phase; the kubelet's --node-ip).
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<String>,

    /// Labels the node registers with (join phase): KEY=VALUE,...
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub node_labels: Option<String>,

    /// Taints the node registers with (join phase): KEY[=VALUE]:EFFECT,
    /// comma-separated or repeated; in a config file, a list.
    #[arg(long, value_name = "TAINT", value_delimiter = ',')]
    pub register_with_taints: Vec<String>,

    /// The cluster DNS Service's address the kubelet gives pods (join
    /// phase).
    #[arg(long, value_name = "IP", default_value_t = DEFAULT_CLUSTER_DNS)]
    pub cluster_dns: IpAddr,

    /// The cluster's DNS domain (join phase).
    #[arg(long, value_name = "DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    pub cluster_domain: String,

    /// Seconds the join phase may take in all: discovery, TLS bootstrap
    /// and the Node's registration.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT)]
    pub timeout: u64,

    /// The node is a container (systemd-nspawn) on a kernel, swap and disk
    /// it shares with its host: containerd keeps OOM score adjustments
    /// at or above its own (a container may not lower them), and the
    /// kubelet (join phase) tolerates the host's swap (failSwapOn: false)
    /// and neither evicts pods nor deletes images over the host's disk
    /// usage (disk eviction thresholds at 0%, image garbage collection at
    /// 100%). The host sets the kernel modules and sysctls.
    #[arg(long)]
    pub node_in_container: bool,

    /// Join as a master (join phase): fetch the shared CAs and keys the
    /// first master uploaded (`kprov init --upload-certs`), make this
    /// master's own certificates, join etcd, and run the control plane
    /// here. Needs --certificate-key and --node-ip (the address this
    /// master's API server and etcd member advertise).
    #[arg(long)]
    pub control_plane: bool,

    /// The key (64 hex characters) the shared certificates were uploaded
    /// under (with --control-plane). Prefer the KPROV_CERTIFICATE_KEY
    /// environment variable: command lines are visible to other users.
    // Parsed by the command, so that a malformed key is never echoed back.
    #[arg(
        long,
        env = "KPROV_CERTIFICATE_KEY",
        hide_env_values = true,
        value_name = "KEY",
        requires = "control_plane"
    )]
    pub certificate_key: Option<TokenText>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            phase: Phase::All,
            kubelet_version: NEWEST_KNOWN,
            container_runtime: ContainerRuntime::Containerd,
            proxy_mode: ProxyMode::Iptables,
            arch: None,
            artifacts_dir: None,
            bundle: None,
            mirror: None,
            cache_dir: DEFAULT_CACHE_DIR.into(),
            runtime_source: RuntimeSource::Distro,
            sandbox_image: None,
            cloud_provider: None,
            cloud_config: None,
            token: None,
            ca_cert: None,
            api_server: None,
            discovery_token_ca_cert_hash: Vec::new(),
            discovery_token_unsafe_skip_ca_verification: false,
            node_name: None,
            node_ip: None,
            node_labels: None,
            register_with_taints: Vec::new(),
            cluster_dns: DEFAULT_CLUSTER_DNS,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            timeout: DEFAULT_TIMEOUT,
            node_in_container: false,
            control_plane: false,
            certificate_key: None,
        }
    }
}

/// A bootstrap token as the user typed it: checked by
/// [`NodeConfig::node_spec`] (so that clap never echoes a malformed one),
/// and hidden by `Debug`, so that logging a config does not log it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TokenText(String);

impl TokenText {
    /// The text. Callers keep it out of logs and command lines.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TokenText {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl From<&str> for TokenText {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl std::fmt::Debug for TokenText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenText(<redacted>)")
    }
}

/// Serialises a path as text. Flag values are text: a path that is not
/// UTF-8 (possible only from a command line, never from a YAML file or a
/// checked node path) is written lossily, so that `to_args` cannot fail.
pub fn path_as_text<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// [`path_as_text`] for an optional path.
pub fn opt_path_as_text<S: serde::Serializer>(
    path: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_some(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

/// One flag as [`to_flags`] writes it: its long name without `--`, and
/// its value (none for a switch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The long name, e.g. `kubelet-version`.
    pub name: String,
    /// The value; `None` for a switch such as
    /// `--discovery-token-unsafe-skip-ca-verification`.
    pub value: Option<String>,
}

impl Flag {
    /// The flag as command-line words: `--name VALUE`; `--name=VALUE` when
    /// the value starts with `-`, which a parser would take for a flag;
    /// `--name` for a switch.
    pub fn words(&self) -> Vec<String> {
        match &self.value {
            None => vec![format!("--{}", self.name)],
            Some(v) if v.starts_with('-') => vec![format!("--{}={v}", self.name)],
            Some(v) => vec![format!("--{}", self.name), v.clone()],
        }
    }
}

/// Why a value could not be written as flags.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// serde could not serialise the value.
    #[error("{0}")]
    Serialize(#[from] serde_yaml::Error),
    /// The value is not a struct of named fields.
    #[error("not a set of flags: expected a struct of named fields")]
    NotAStruct,
    /// A field holds something a flag cannot carry (a map, a nested list).
    #[error("{key}: cannot be written as a flag value: expected text, a number, true/false or a list of them")]
    Value {
        /// The field's key.
        key: String,
    },
}

/// The flags that `value`'s fields stand for, in the order the fields are
/// declared: a set field becomes `--key VALUE` (a list: once per element;
/// `true`: `--key` alone), where `key` is the field's serde name; unset
/// options, empty lists and `false` are left out. For a struct whose
/// serde names are its clap long flags (as [`NodeConfig`]'s are), parsing
/// the result gives `value` back.
pub fn to_flags<T: serde::Serialize>(value: &T) -> Result<Vec<Flag>, ArgsError> {
    use serde_yaml::Value;
    let Value::Mapping(map) = serde_yaml::to_value(value)? else {
        return Err(ArgsError::NotAStruct);
    };
    let scalar = |key: &str, v: Value| match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ArgsError::Value {
            key: key.to_string(),
        }),
    };
    let mut flags = Vec::new();
    for (key, v) in map {
        let Value::String(name) = key else {
            return Err(ArgsError::NotAStruct);
        };
        match v {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => flags.push(Flag { name, value: None }),
            Value::Sequence(items) => {
                for item in items {
                    let value = Some(scalar(&name, item)?);
                    flags.push(Flag {
                        name: name.clone(),
                        value,
                    });
                }
            }
            other => {
                let value = Some(scalar(&name, other)?);
                flags.push(Flag { name, value });
            }
        }
    }
    Ok(flags)
}

/// [`to_flags`] as command-line words ([`Flag::words`]).
pub fn to_args<T: serde::Serialize>(value: &T) -> Result<Vec<String>, ArgsError> {
    Ok(to_flags(value)?.iter().flat_map(Flag::words).collect())
}

impl NodeConfig {
    /// The flags this config stands for ([`to_flags`]). Every value is
    /// written, defaults included, so that a kprov of another build (the
    /// one setup.sh fetches) does exactly what these say.
    pub fn to_flags(&self) -> Vec<Flag> {
        match to_flags(self) {
            Ok(flags) => flags,
            // Every field is text, a number, a boolean, an enum or a list of
            // text, which serde_yaml always serialises (paths lossily).
            Err(e) => unreachable!("NodeConfig serialises as flags: {e}"),
        }
    }

    /// The command-line words of [`NodeConfig::to_flags`]: the inverse of
    /// parsing.
    pub fn to_args(&self) -> Vec<String> {
        self.to_flags().iter().flat_map(Flag::words).collect()
    }
}

/// The keys serde reads for `T`: its fields' names and their aliases
/// (skipped fields are not keys).
pub fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut probe = FieldProbe(None);
    // The probe refuses to deserialise anything, after noting the fields.
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// A deserializer that records the field names a struct asks for.
struct FieldProbe(Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for &mut FieldProbe {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(serde::de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Why a config file was refused. Each message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// Not YAML, or a value of the wrong type or out of range; serde_yaml
    /// names the key and the line (`kubelet-version: ... at line 2 column
    /// 18`).
    #[error("{0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A value refused by its type's own parser.
    #[error("{key}: {source}")]
    Value {
        /// The key.
        key: String,
        /// What the parser said.
        source: serde_yaml::Error,
    },
    /// The document is not a mapping.
    #[error("expected a mapping of flag names (without \"--\") to values")]
    NotAMapping,
    /// A key that is none of the command's flags.
    #[error("unknown field `{key}`, expected one of {}", quoted(expected))]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys the command takes.
        expected: Vec<&'static str>,
    },
}

fn quoted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A command without keys of its own.
#[derive(Debug, Default, serde::Deserialize)]
struct NoKeys {}

impl NodeConfig {
    /// Reads the text of a YAML config file that holds only node keys, as
    /// `kprov provision --config` takes it.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigFileError> {
        from_yaml::<NoKeys>(text).map(|(_, node)| node)
    }
}

/// Reads the text of a YAML config file whose keys are a command's long
/// flag names: its own (`T`'s keys) and the node's ([`NodeConfig`]'s). An
/// empty file is all defaults; a key that neither knows is refused.
pub fn from_yaml<T: DeserializeOwned + Default>(
    text: &str,
) -> Result<(T, NodeConfig), ConfigFileError> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    let map = match doc {
        serde_yaml::Value::Null => return Ok((T::default(), NodeConfig::default())),
        serde_yaml::Value::Mapping(map) => map,
        _ => return Err(ConfigFileError::NotAMapping),
    };
    let expected: Vec<&'static str> = keys::<T>()
        .iter()
        .chain(keys::<NodeConfig>())
        .copied()
        .collect();
    for key in map.keys() {
        let known = key.as_str().is_some_and(|k| expected.contains(&k));
        if !known {
            let key = match key.as_str() {
                Some(k) => k.to_string(),
                None => serde_yaml::to_string(key)
                    .unwrap_or_default()
                    .trim_end()
                    .to_string(),
            };
            return Err(ConfigFileError::UnknownKey { key, expected });
        }
    }
    // Each reads its own keys from the text (so that serde_yaml's errors
    // name the key and the line) and leaves the other's alone.
    let own: T = read(text, &map)?;
    let node: NodeConfig = read(text, &map)?;
    Ok((own, node))
}

/// `T` from `text`, whose keys are `map`'s. serde_yaml names the key of a
/// value of the wrong type, but not that of a value its type's own parser
/// refused (an unsupported version): that key is found by reading each
/// entry alone.
fn read<T: DeserializeOwned>(text: &str, map: &serde_yaml::Mapping) -> Result<T, ConfigFileError> {
    serde_yaml::from_str(text).map_err(|err| {
        let refused = map.iter().find_map(|(key, value)| {
            let mut one = serde_yaml::Mapping::new();
            one.insert(key.clone(), value.clone());
            // Through text again, so that scalars read as they did.
            let alone = serde_yaml::to_string(&one).ok()?;
            serde_yaml::from_str::<T>(&alone).err()?;
            key.as_str()
        });
        match refused {
            Some(key) if !err.to_string().starts_with(&format!("{key}: ")) => {
                ConfigFileError::Value {
                    key: key.to_string(),
                    source: err,
                }
            }
            _ => ConfigFileError::Yaml(err),
        }
    })
}

/// Why a node config was refused. Each names the flag, which is also the
/// config file's key.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// A well-formed release that kprov does not provision.
    #[error("--kubelet-version: {0}")]
    KubeletVersion(VersionError),
    /// A malformed token (never echoed).
    #[error("--token: {0}")]
    Token(crate::token::TokenError),
    /// A malformed join input.
    #[error(transparent)]
    Input(#[from] JoinInputError),
    /// A node address that is not an IP address.
    #[error("invalid --node-ip {value:?}: expected an IPv4 or IPv6 address")]
    NodeIp {
        /// The value given.
        value: String,
    },
    /// A join phase that may not take any time.
    #[error("--timeout 0: expected a number of seconds above 0")]
    Timeout,
    /// A cluster domain that is not a DNS name.
    #[error("invalid --cluster-domain {value:?}: expected a DNS domain such as cluster.local")]
    ClusterDomain {
        /// The value given.
        value: String,
    },
    /// The spec is inconsistent as a whole or incomplete for the phase.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

impl NodeConfigError {
    /// The key (the long flag name without `--`) whose value was refused,
    /// when the error is about one value; `None` when it is about the
    /// spec as a whole (a missing flag, flags that do not go together).
    pub fn key(&self) -> Option<&'static str> {
        let flag = match self {
            Self::KubeletVersion(_) => "--kubelet-version",
            Self::Token(_) => "--token",
            Self::Input(e) => e.flag,
            Self::NodeIp { .. } => "--node-ip",
            Self::Timeout => "--timeout",
            Self::ClusterDomain { .. } => "--cluster-domain",
            Self::Spec(SpecError::CloudProvider { .. }) => "--cloud-provider",
            Self::Spec(SpecError::CloudConfig { .. }) => "--cloud-config",
            Self::Spec(SpecError::SandboxImage { .. }) => "--sandbox-image",
            Self::Spec(_) => return None,
        };
        flag.strip_prefix("--")
    }
}

impl NodeConfig {
    /// Checks every value and the whole for the phase, and returns the
    /// node spec. `ca_cert` is the content of `--ca-cert`, which the
    /// caller reads; `arch` is `--arch`, or what the caller detects.
    pub fn node_spec(
        &self,
        ca_cert: Option<CaCertificate>,
        arch: Arch,
    ) -> Result<NodeSpec, NodeConfigError> {
        self.kubelet_version
            .check_supported()
            .map_err(NodeConfigError::KubeletVersion)?;
        let token = match &self.token {
            None => None,
            Some(t) => Some(
                t.expose()
                    .parse::<BootstrapToken>()
                    .map_err(NodeConfigError::Token)?,
            ),
        };
        let spec = NodeSpec {
            container_runtime: self.container_runtime,
            proxy_mode: self.proxy_mode,
            runtime_source: self.runtime_source,
            cloud_provider: self.cloud_provider.clone(),
            cloud_config: self.cloud_config.clone(),
            token,
            ca_cert,
            sandbox_image: self.sandbox_image.clone(),
            api_server: self.api_server.as_deref().map(str::parse).transpose()?,
            ca_cert_hashes: self
                .discovery_token_ca_cert_hash
                .iter()
                .map(|h| h.parse())
                .collect::<Result<_, _>>()?,
            unsafe_skip_ca_verification: self.discovery_token_unsafe_skip_ca_verification,
            node_name: self.node_name.as_deref().map(str::parse).transpose()?,
            node_ip: match &self.node_ip {
                None => None,
                Some(ip) => Some(
                    ip.parse()
                        .map_err(|_| NodeConfigError::NodeIp { value: ip.clone() })?,
                ),
            },
            node_labels: match &self.node_labels {
                None => Vec::new(),
                Some(l) => parse_node_labels(l)?,
            },
            register_with_taints: self
                .register_with_taints
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()?,
            in_container: self.node_in_container,
            ..NodeSpec::new(self.kubelet_version.clone(), arch)
        };
        spec.validate(self.phase)?;
        if self.phase.includes_join() {
            if self.timeout == 0 {
                return Err(NodeConfigError::Timeout);
            }
            if !is_dns_name(&self.cluster_domain) {
                return Err(NodeConfigError::ClusterDomain {
                    value: self.cluster_domain.clone(),
                });
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::{CommandFactory, Parser};

    use super::*;

    /// NodeConfig as a whole command, as `kprov provision` flattens it.
    #[derive(Debug, Parser)]
    #[command(args_override_self = true)]
    struct Command {
        #[command(flatten)]
        node: NodeConfig,
    }

    fn parse(args: &[String]) -> Result<NodeConfig, clap::Error> {
        let argv = std::iter::once("kprov-provision".to_string()).chain(args.iter().cloned());
        Command::try_parse_from(argv).map(|c| c.node)
    }

    /// Every field set to something other than its default.
    fn full() -> NodeConfig {
        NodeConfig {
            phase: Phase::Join,
            kubelet_version: "v1.23.4-rc.1".parse().unwrap(),
            container_runtime: ContainerRuntime::Docker,
            proxy_mode: ProxyMode::Ipvs,
            arch: Some(Arch::Arm64),
            artifacts_dir: Some("/srv/artifacts".into()),
            bundle: None,
            mirror: None,
            cache_dir: "/var/cache/other".into(),
            runtime_source: RuntimeSource::Upstream,
            sandbox_image: Some("registry.example/pause:3.2".into()),
            cloud_provider: Some("openstack".into()),
            cloud_config: Some("/etc/kubernetes/cloud.conf".into()),
            token: Some("kp7q2x.s3cr3tv4lu3xyz9w".into()),
            ca_cert: Some("ca dir/ca.crt".into()),
            api_server: Some("https://10.0.0.1:6443".into()),
            discovery_token_ca_cert_hash: vec![
                format!("sha256:{}", "ab".repeat(32)),
                format!("sha256:{}", "cd".repeat(32)),
            ],
            discovery_token_unsafe_skip_ca_verification: true,
            node_name: Some("worker-1".into()),
            node_ip: Some("fd00::21".into()),
            node_labels: Some("role=worker,example.com/zone=a".into()),
            register_with_taints: vec!["dedicated=gpu:NoSchedule".into(), "spot:NoExecute".into()],
            cluster_dns: "10.32.0.10".parse().unwrap(),
            cluster_domain: "example.internal".into(),
            timeout: 42,
            node_in_container: true,
            control_plane: true,
            certificate_key: Some("ab".repeat(32).as_str().into()),
        }
    }

    /// The specs of the round-trip table.
    fn table() -> Vec<(&'static str, NodeConfig)> {
        let default = NodeConfig::default();
        let bundle = NodeConfig {
            bundle: Some("/opt/kprov/node.tar.zst".into()),
            phase: Phase::Base,
            ..default.clone()
        };
        let mirror = NodeConfig {
            mirror: Some("http://10.0.0.1:8080/mirror".into()),
            arch: Some(Arch::Amd64),
            ..default.clone()
        };
        let odd_values = NodeConfig {
            // Values a parser could mistake for flags, or that need quoting.
            node_labels: Some("-x=y".into()),
            sandbox_image: Some("--help".into()),
            cluster_domain: "".into(),
            cloud_provider: Some("has space".into()),
            discovery_token_ca_cert_hash: vec!["-".into()],
            ..default.clone()
        };
        vec![
            ("default", default),
            ("full", full()),
            ("bundle", bundle),
            ("mirror", mirror),
            ("odd values", odd_values),
        ]
    }

    fn long_names() -> BTreeSet<String> {
        Command::command()
            .get_arguments()
            .filter_map(|a| a.get_long())
            .filter(|l| *l != "help")
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", full());
        assert!(text.contains("TokenText(<redacted>)"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn parsing_no_flags_gives_the_default() {
        assert_eq!(parse(&[]).unwrap(), NodeConfig::default());
    }

    #[test]
    fn to_args_then_parsing_gives_the_same_config() {
        for (name, config) in table() {
            let args = config.to_args();
            let back = parse(&args).unwrap_or_else(|e| panic!("{name}: {args:?}: {e}"));
            assert_eq!(back, config, "{name}: {args:?}");
        }
    }

    #[test]
    fn a_fully_populated_config_writes_every_flag() {
        let written: BTreeSet<String> = full().to_flags().into_iter().map(|f| f.name).collect();
        let mut every = long_names();
        // bundle and mirror conflict with artifacts-dir, which full() sets;
        // they are checked on their own below.
        every.remove("bundle");
        every.remove("mirror");
        assert_eq!(
            written, every,
            "flags that to_args leaves out of a full config, or writes without clap knowing them"
        );
        // And the two left out above are written when set.
        let [bundle, mirror] = [&table()[2].1, &table()[3].1].map(NodeConfig::to_args);
        assert!(bundle.contains(&"--bundle".to_string()), "{bundle:?}");
        assert!(mirror.contains(&"--mirror".to_string()), "{mirror:?}");
    }

    #[test]
    fn every_flag_is_a_config_key_and_every_key_a_flag() {
        let mut flags = long_names();
        for arg in Command::command().get_arguments() {
            flags.extend(
                arg.get_all_aliases()
                    .into_iter()
                    .flatten()
                    .map(str::to_string),
            );
        }
        let keys: BTreeSet<String> = keys::<NodeConfig>().iter().map(|k| k.to_string()).collect();
        assert_eq!(flags, keys);
    }

    #[test]
    fn to_args_writes_every_value_in_declaration_order() {
        let config = NodeConfig {
            phase: Phase::Base,
            kubelet_version: "v1.20.2".parse().unwrap(),
            mirror: Some("https://m.example/k8s".into()),
            discovery_token_ca_cert_hash: vec!["sha256:1".into(), "sha256:2".into()],
            discovery_token_unsafe_skip_ca_verification: true,
            sandbox_image: Some("-x".into()),
            ..NodeConfig::default()
        };
        assert_eq!(
            config.to_args().join(" "),
            "--phase base --kubelet-version v1.20.2 --container-runtime containerd \
             --proxy-mode iptables --mirror https://m.example/k8s --cache-dir /var/cache/kprov \
             --runtime-source distro --sandbox-image=-x \
             --discovery-token-ca-cert-hash sha256:1 --discovery-token-ca-cert-hash sha256:2 \
             --discovery-token-unsafe-skip-ca-verification --cluster-dns 10.96.0.10 \
             --cluster-domain cluster.local --timeout 300"
        );
    }

    #[test]
    fn a_config_file_reads_into_the_same_config_as_its_flags() {
        let text = "phase: join\n\
                    kubelet-version: v1.23.4-rc.1\n\
                    container-runtime: docker\n\
                    proxy-mode: ipvs\n\
                    arch: arm64\n\
                    artifacts-dir: /srv/artifacts\n\
                    cache-dir: /var/cache/other\n\
                    runtime-source: upstream\n\
                    sandbox-image: registry.example/pause:3.2\n\
                    cloud-provider: openstack\n\
                    cloud-config: /etc/kubernetes/cloud.conf\n\
                    token: kp7q2x.s3cr3tv4lu3xyz9w\n\
                    ca-cert: ca dir/ca.crt\n\
                    api-server: https://10.0.0.1:6443\n\
                    discovery-token-ca-cert-hashes:\n\
                    - sha256:abababababababababababababababababababababababababababababababab\n\
                    - sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\n\
                    discovery-token-unsafe-skip-ca-verification: true\n\
                    node-name: worker-1\n\
                    node-ip: fd00::21\n\
                    node-labels: role=worker,example.com/zone=a\n\
                    register-with-taints: [dedicated=gpu:NoSchedule, spot:NoExecute]\n\
                    cluster-dns: 10.32.0.10\n\
                    cluster-domain: example.internal\n\
                    timeout: 42\n\
                    node-in-container: true\n\
                    control-plane: true\n\
                    certificate-key: abababababababababababababababababababababababababababababababab\n";
        assert_eq!(NodeConfig::from_yaml(text).unwrap(), full());
        for empty in ["", "\n", "# nothing\n"] {
            assert_eq!(NodeConfig::from_yaml(empty).unwrap(), NodeConfig::default());
        }
    }

    #[test]
    fn a_command_s_own_keys_are_read_apart_from_the_node_s() {
        #[derive(Debug, Default, PartialEq, serde::Deserialize)]
        #[serde(rename_all = "kebab-case", default)]
        struct Own {
            hostname: Option<String>,
            gzip: bool,
        }
        let (own, node) =
            from_yaml::<Own>("hostname: 0600\ngzip: true\nphase: base\ntimeout: 9\n").unwrap();
        assert_eq!(
            own,
            Own {
                hostname: Some("0600".into()),
                gzip: true
            }
        );
        assert_eq!((node.phase, node.timeout), (Phase::Base, 9));
        let err = from_yaml::<Own>("hostname: w\nssh-keys: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown field `ssh-keys`, expected one of `hostname`, `gzip`, `phase`, `kubelet-version`,"),
            "{err}"
        );
    }

    #[test]
    fn bad_config_files_are_refused_naming_the_key() {
        for (text, want) in [
            ("node-names: w\n", "unknown field `node-names`, expected one of `phase`,"),
            ("1: x\n", "unknown field `1`"),
            ("- phase\n", "expected a mapping of flag names (without \"--\") to values"),
            ("phase: bogus\n", "phase: unknown variant `bogus`, expected one of `base`, `join`, `all` at line 1"),
            ("phase: base\nkubelet-version: v1.19.0\n", "kubelet-version: Kubernetes version v1.19.0 is not supported: the minimum is v1.20.0"),
            ("kubelet-version: 1.x\n", "kubelet-version: malformed Kubernetes version \"1.x\""),
            ("phase: base\ntimeout: soon\n", "timeout: invalid type: string \"soon\", expected u64 at line 2"),
            ("node-name: [a, b]\n", "node-name: invalid type: sequence, expected a string at line 1"),
            ("discovery-token-ca-cert-hash: sha256:ab\n", "discovery-token-ca-cert-hash: invalid type: string \"sha256:ab\", expected a sequence"),
            ("cluster-dns: 10.0.0.300\n", "cluster-dns: invalid IP address syntax at line 1"),
            ("phase: base\nphase: join\n", "duplicate entry with key \"phase\""),
        ] {
            let err = NodeConfig::from_yaml(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn node_spec_checks_every_value_and_names_its_key() {
        let join = NodeConfig {
            phase: Phase::Join,
            token: Some("kp7q2x.s3cr3tv4lu3xyz9w".into()),
            api_server: Some("https://10.0.0.1:6443".into()),
            discovery_token_unsafe_skip_ca_verification: true,
            ..NodeConfig::default()
        };
        let spec = join.node_spec(None, Arch::Amd64).unwrap();
        assert_eq!(
            spec.api_server.unwrap().to_string(),
            "https://10.0.0.1:6443"
        );
        type Edit = fn(&mut NodeConfig);
        let cases: [(Edit, Option<&str>, &str); 12] = [
            (|c| c.kubelet_version = "v1.19.3".parse().unwrap(), Some("kubelet-version"), "--kubelet-version: Kubernetes version v1.19.3 is not supported: the minimum is v1.20.0"),
            (|c| c.token = Some("kp7q2x.S3CR3TV4LU3XYZ9W".into()), Some("token"), "--token: malformed bootstrap token: expected"),
            (|c| c.api_server = Some("http://x:1".into()), Some("api-server"), "invalid --api-server \"http://x:1\""),
            (|c| c.discovery_token_ca_cert_hash = vec!["sha256:1".into()], Some("discovery-token-ca-cert-hash"), "invalid --discovery-token-ca-cert-hash \"sha256:1\""),
            (|c| c.node_name = Some("Worker_1".into()), Some("node-name"), "invalid --node-name \"Worker_1\""),
            (|c| c.node_ip = Some("10.0.0.300".into()), Some("node-ip"), "invalid --node-ip \"10.0.0.300\": expected an IPv4 or IPv6 address"),
            (|c| c.node_labels = Some("role".into()), Some("node-labels"), "invalid --node-labels \"role\""),
            (|c| c.register_with_taints = vec!["a:Never".into()], Some("register-with-taints"), "invalid --register-with-taints \"a:Never\""),
            (|c| c.timeout = 0, Some("timeout"), "--timeout 0: expected a number of seconds above 0"),
            (|c| c.cluster_domain = "Cluster Local".into(), Some("cluster-domain"), "invalid --cluster-domain \"Cluster Local\""),
            (|c| c.sandbox_image = Some("bad image".into()), Some("sandbox-image"), "invalid --sandbox-image \"bad image\""),
            (|c| c.token = None, None, "--phase join needs --token"),
        ];
        for (edit, key, want) in cases {
            let mut c = join.clone();
            edit(&mut c);
            let err = c.node_spec(None, Arch::Amd64).unwrap_err();
            assert!(err.to_string().starts_with(want), "{err}");
            assert_eq!(err.key(), key, "{err}");
            assert!(!err.to_string().to_lowercase().contains("s3cr3t"), "{err}");
        }
        // The join-only checks leave the base phase alone.
        let base = NodeConfig {
            phase: Phase::Base,
            timeout: 0,
            cluster_domain: "Cluster Local".into(),
            ..NodeConfig::default()
        };
        assert!(base.node_spec(None, Arch::Amd64).is_ok());
    }
}
