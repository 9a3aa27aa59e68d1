//! Command-line definitions. Each flag's help is written for users.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kprov_core::node_config;
use kprov_core::version::NEWEST_KNOWN;
use kprov_core::{Arch, KubernetesVersion, NodeConfig};

pub use crate::config_file::FromConfig;

/// kprov takes machines from bare metal or a blank VM to Ready Kubernetes
/// nodes.
///
/// Every command that changes a host first computes a plan from its inputs,
/// then changes only what differs; `--dry-run` shows the plan and what
/// would change. A second run changes nothing.
#[derive(Debug, Parser)]
#[command(
    name = "kprov",
    version,
    long_version = crate::commands::version::LONG_VERSION,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug,
    /// trace, off, or directives such as kprov=debug,warn); KPROV_LOG, in
    /// the same form, overrides it.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<crate::log_filter::LogFilter>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prepare a host, live or a root directory offline, to run a kubelet.
    ///
    /// The base phase installs packages, kernel parameters and modules,
    /// turns swap off, installs the container runtime, CNI plugins, kubelet
    /// and kubectl, the kubelet unit (enabled, started by the join phase)
    /// and kprov's health checks. With --root it prebakes a directory or a
    /// mounted disk image: nothing is started or loaded there.
    ///
    /// The join phase trusts the API server (a pinned CA hash checked by
    /// token discovery, or --ca-cert), writes the CA, the bootstrap
    /// kubeconfig (0600) and the kubelet's configuration, starts the
    /// kubelet and waits for TLS bootstrap and the Node; a failure is
    /// diagnosed by cause. A joined node is left as it is.
    ///
    /// The node's flags can also come from a YAML file (--config) whose
    /// keys are the long flag names without "--", as in `kprov userdata
    /// --config`; flags given on the command line win.
    ///
    /// Example (prebake): kprov provision --phase base --root /mnt/image
    /// --artifacts-dir ./artifacts --kubelet-version v1.20.2
    ///
    /// Example (join): KPROV_TOKEN=abcdef.0123456789abcdef kprov provision
    /// --phase join --api-server https://10.0.0.1:6443
    /// --discovery-token-ca-cert-hash sha256:<hex>
    Provision(Box<ProvisionArgs>),

    /// Undo the join phase: stop the kubelet, remove its credentials,
    /// configuration and state, the cluster CA, the pods' containers and
    /// the CNI configuration and state. The base phase stays; the node
    /// can join again.
    ///
    /// Example: kprov reset --dry-run
    Reset(ResetArgs),

    /// Check the container runtime and kubelet once; restart a unit that
    /// failed several checks in a row. Run by kprov-healthcheck.timer.
    HealthCheck(HealthCheckArgs),

    /// The node side of kprov's `bridge` pod network (`kprov init
    /// --pod-network bridge`): this node's CNI config from its pod range,
    /// and a route to every other node's pod range via that node.
    PodNetwork(PodNetworkArgs),

    /// Show the operating system detected in a root.
    Os(OsArgs),

    /// Stacked etcd on a master, through its own member and certificates.
    #[command(subcommand)]
    Etcd(EtcdCommand),

    /// Make the control plane's certificates and keys as kubeadm does
    /// (`kubeadm init phase certs all`), or check them.
    ///
    /// Writes the cluster CA, the API server's serving and client
    /// certificates, the front-proxy CA and client, the etcd CA, serving,
    /// peer and client certificates, and the service-account key pair
    /// under --cert-dir. Existing valid files are reused; a file that
    /// differs from what would be made (other SANs, another CA, expired)
    /// is an error that says what differs, and nothing is written.
    ///
    /// Example: kprov pki --node-name master-1 --advertise-address
    /// 192.168.1.10 --san api.example.com
    Pki(Box<PkiArgs>),

    /// Make the control plane's kubeconfigs as kubeadm does (`kubeadm init
    /// phase kubeconfig all`): admin.conf (and super-admin.conf from
    /// v1.29), kubelet.conf, controller-manager.conf and scheduler.conf,
    /// each with a client certificate signed by the cluster CA.
    ///
    /// Run `kprov pki` first. Existing valid kubeconfigs are reused.
    Kubeconfig(Box<KubeconfigArgs>),

    /// Render boot configs (user-data) that make a new machine a node.
    ///
    /// Prints a cloud-init #cloud-config document or an Ignition 3.4
    /// config (Flatcar) that sets the host name, installs SSH keys, writes
    /// the cluster CA, the cloud provider's config and the bootstrap token
    /// (0600, never on a command line) and a setup.sh that, at first boot,
    /// fetches kprov from --provision-source, checks its sha256 before
    /// running it and runs `kprov provision` with the node's flags.
    ///
    /// Flags can also come from a YAML node spec (--config) whose keys are
    /// the long flag names without "--"; flags given on the command line
    /// win. The output holds the bootstrap token: --output writes it 0600.
    ///
    /// Example: kprov userdata --format cloud-init --hostname worker-1
    /// --ssh-authorized-keys-file ~/.ssh/id_ed25519.pub --ca-cert ca.crt
    /// --provision-source https://boot.example.com/kprov
    /// --provision-binary ./kprov --phase base --output user-data
    Userdata(Box<UserdataArgs>),

    /// Create and check offline bundles of everything a node needs.
    #[command(subcommand)]
    Bundle(BundleCommand),

    /// Bootstrap a control plane on this machine, as `kubeadm init` does:
    /// certificates, kubeconfigs, static pods for etcd and the control
    /// plane, the bootstrap-token RBAC and cluster-info.
    ///
    /// Each phase runs alone with `kprov init phase NAME`; re-running a
    /// phase on a working control plane changes nothing and says so.
    ///
    /// Example: kprov init phase control-plane --node-name master-1
    /// --advertise-address 192.168.1.10 --kubernetes-version v1.20.2
    Init(Box<InitArgs>),

    /// Create, list and delete bootstrap tokens, with which nodes join.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Boot machines from the network: DHCP (full or proxy), TFTP and
    /// HTTP with per-machine iPXE scripts and cloud-init NoCloud data,
    /// driven by Machine resources.
    #[command(subcommand)]
    Netboot(NetbootCommand),

    /// The node-local load balancer in front of every API server: the
    /// kubelet, kube-proxy and the node's admin tools reach the API at
    /// 127.0.0.1:PORT, and each connection goes to a healthy API server.
    ///
    /// `run` checks every backend's /readyz (HTTPS, the cluster CA) every
    /// --check-interval; a backend that fails two checks in a row (or a
    /// client's connect) gets no new connection, and every connection
    /// open to it is closed at once, so clients reconnect to a live one.
    /// Backends come from --seed, the endpoints file (kept so that a
    /// restart while every API server is down still knows them) and, with
    /// --kubeconfig, the Endpoints default/kubernetes. `status` asks a
    /// running balancer about its backends.
    ///
    /// Example: kprov lb run --listen 127.0.0.1:6443 --ca-file
    /// /etc/kubernetes/pki/ca.crt --seed 10.0.0.10:6443 --kubeconfig
    /// /etc/kubernetes/kubelet.conf --metrics-address 127.0.0.1:6445
    #[command(subcommand)]
    Lb(LbCommand),

    /// Install a disk image onto this machine's disk, as the stage2 initrd
    /// does: the zstd-compressed image beside --manifest is streamed onto
    /// --disk, decompressed and checked as it streams (the compressed
    /// image's sha256 against the manifest; the raw image by zstd's frame
    /// checksum, which `kprov image build` writes, or else by its sha256),
    /// and resumed with an HTTP Range request when the connection drops.
    ///
    /// The disk's first MiB (partition table, boot code) is zeroed first,
    /// held back while the rest streams and written last, once every check
    /// passes: a disk whose install stopped halfway never boots. On
    /// failure it is zeroed again and the error names the cause (the
    /// expected and the actual sum for a mismatch). A disk smaller than the image is refused
    /// before anything is written.
    ///
    /// Example: kprov stage2 --manifest
    /// http://10.0.0.1:8080/images/node.img.zst.json --disk /dev/vda
    Stage2(Stage2Args),

    /// Build disk images for bare metal (what stage2 installs).
    #[command(subcommand)]
    Image(ImageCommand),

    /// Build the stage2 initrd that netbooted machines install images with.
    #[command(subcommand)]
    Initrd(InitrdCommand),

    /// Make, inspect and remove whole clusters of N masters and M workers
    /// on local machines (systemd-nspawn containers) or existing hosts
    /// over ssh (--target ssh), stateless: a cluster's machines are found
    /// on the target by name and labels (NAME-master-1, NAME-worker-2,
    /// ...).
    ///
    /// `up` converges: run again, it changes nothing; with more --workers
    /// it adds the missing ones. It ends with the exit criteria of every
    /// phase (`check`). `down` removes the machines, the cluster's bridge
    /// and the kubeconfig `up` wrote (on ssh hosts: `kprov reset`, and
    /// what kprov put there).
    ///
    /// Example: kprov cluster up --name demo --masters 1 --workers 2
    /// --image /var/lib/kprov/images/node
    #[command(subcommand)]
    Cluster(ClusterCommand),

    /// Show kprov's version, the git commit it was built from and the
    /// Kubernetes releases it supports.
    ///
    /// Example: kprov version --output json
    Version(VersionArgs),

    /// Print a shell completion script on stdout.
    ///
    /// Example (bash): kprov completions bash > /etc/bash_completion.d/kprov
    ///
    /// Example (zsh): kprov completions zsh > "${fpath[1]}/_kprov"
    ///
    /// Example (fish): kprov completions fish > ~/.config/fish/completions/kprov.fish
    Completions(CompletionsArgs),

    /// Print kprov's manual page (roff) on stdout, or write one page per
    /// command into a directory.
    ///
    /// Example: kprov man | man -l -
    ///
    /// Example: kprov man --dir /usr/local/share/man/man1
    Man(ManArgs),
}

/// `kprov cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create what is missing of a cluster and check it: machines from
    /// the node image, `kprov init` on the first master, workers joined,
    /// every node Ready, the admin kubeconfig written (0600), then the
    /// exit criteria's table. Flags can come from a YAML file (--config)
    /// whose keys are the flag names without "--".
    Up(ClusterUpArgs),
    /// Remove every machine of a cluster (ssh hosts: reset, not removed),
    /// its bridge and the kubeconfig `up` wrote; nothing else. A cluster with nothing left is an error
    /// that changes nothing.
    Down(ClusterArgsOnly),
    /// Show a cluster's machines and whether each is a Ready node.
    Status(ClusterReadArgs),
    /// Print a cluster's admin kubeconfig (it holds credentials).
    Kubeconfig(ClusterArgsOnly),
    /// Check a cluster's exit criteria: machines booted, the API server
    /// serving and scheduling, nodes Ready, kube-proxy on every node, the
    /// DNS add-on. Exits non-zero when one fails.
    Check(ClusterReadArgs),
}

/// Flags of `kprov cluster up`.
#[derive(Debug, Args)]
pub struct ClusterUpArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: kprov_cluster::config::ClusterConfig,
    /// A YAML file with the same keys as the flags; flags given win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Output format of the final report.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// End once every node is Ready, without checking the exit criteria
    /// (`kprov cluster check` checks them later): on slow machines (VMs
    /// under TCG) they take many minutes.
    #[arg(long)]
    pub skip_check: bool,
}

/// Flags of `kprov cluster down` and `kubeconfig`.
#[derive(Debug, Args)]
pub struct ClusterArgsOnly {
    /// The cluster.
    #[command(flatten)]
    pub cluster: kprov_cluster::config::ClusterConfig,
    /// A YAML file with the same keys as the flags; flags given win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// Flags of `kprov cluster status` and `check`.
#[derive(Debug, Args)]
pub struct ClusterReadArgs {
    /// The cluster.
    #[command(flatten)]
    pub cluster: kprov_cluster::config::ClusterConfig,
    /// A YAML file with the same keys as the flags; flags given win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Flags of `kprov version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Flags of `kprov completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete kprov's commands and flags in.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

/// Shells `kprov completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    /// Bash (3.2 and later).
    Bash,
    /// Zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Flags of `kprov man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write kprov.1 and one page per command (kprov-provision.1,
    /// kprov-bundle-create.1, ...) into this directory instead of printing
    /// the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `kprov netboot` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetbootCommand {
    /// Run the DHCP, TFTP and HTTP servers in one process until stopped.
    ///
    /// The config file (YAML) names the mode (full: hand out addresses;
    /// proxy: PXE options only, next to another DHCP server), the
    /// interface, the server's address, the subnet, the TFTP and HTTP
    /// roots, the state directory (token secret, leases, machine state,
    /// token epochs) and the directory of Machine resources, which is
    /// reloaded when a file changes. A machine's script and NoCloud data
    /// are served only to its own address with its tokens (see the
    /// README). Logs go to stderr (info by default), with mac= on every
    /// line about a machine; metrics are at http://SERVER/metrics. If a
    /// server task fails, the command exits non-zero naming it.
    ///
    /// Example: kprov netboot serve --config /etc/kprov/netboot.yaml
    Serve(NetbootServeArgs),
    /// Start a new token epoch for a machine: every script and seed token
    /// it was given so far is refused from then on (a running server
    /// notices within a second), and its user-data window opens again
    /// for its next boot.
    ///
    /// The epoch is kept in the state directory of the config
    /// (stateDir/epochs/<mac>); this prints the new epoch.
    ///
    /// Example: kprov netboot rotate-token --config /etc/kprov/netboot.yaml 52:54:00:12:34:56
    RotateToken(NetbootRotateArgs),
    /// Print the CustomResourceDefinition of Machines (machines.kprov.dev,
    /// v1alpha1) for `kubectl apply -f -`.
    ///
    /// It is generated from the same Rust type as the Machine files of
    /// machinesDir, so a file that `serve` accepts is a valid Machine
    /// object. The API server then refuses a malformed MAC or UUID, or a
    /// spec without macAddress or boot, naming the field; status (phase,
    /// conditions, the address seen, last contact, last error) is a
    /// subresource.
    ///
    /// Example: kprov netboot crd | kubectl apply -f -
    Crd,
    /// Run netboot in the cluster: the Machine definition, a service
    /// account with rights limited to what the server does, the config
    /// file in a ConfigMap, and a host-network DaemonSet on the nodes of
    /// the machines' network (masters by default).
    ///
    /// The image must hold the static kprov at /usr/local/bin/kprov. Each
    /// replica binds its own node's address (serverAddress is replaced by
    /// it) and they share a Lease, so one answers DHCP at a time. The
    /// config's tftpRoot, httpRoot and stateDir must be absolute paths
    /// under --data-dir, the host directory the pods mount; Machines come
    /// from the cluster (no machinesDir). Applied server-side: a second
    /// run changes nothing. --output yaml prints the objects instead.
    ///
    /// Example: kprov netboot deploy --config netboot.yaml --image registry.local/kprov:v0.1.0
    Deploy(NetbootDeployArgs),
}

/// Flags of `kprov netboot deploy`.
#[derive(Debug, Args)]
pub struct NetbootDeployArgs {
    /// The server's YAML config file (put in the ConfigMap as it is).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The image holding the static kprov at /usr/local/bin/kprov.
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    /// An administrator's kubeconfig.
    #[arg(
        long,
        value_name = "FILE",
        env = "KUBECONFIG",
        default_value = "/etc/kubernetes/admin.conf"
    )]
    pub kubeconfig: PathBuf,
    /// The namespace of the workload, its ConfigMap and its Lease.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub namespace: String,
    /// The host directory the pods mount (at the same path), holding the
    /// config's roots and state directory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kprov/netboot")]
    pub data_dir: String,
    /// The nodes netboot runs on (KEY=VALUE, repeatable): those attached
    /// to the machines' network. Default: the masters.
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// Say what would change, change nothing (a server-side dry run).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the objects as YAML for `kubectl apply -f -` instead of
    /// applying them (no cluster needed).
    #[arg(long, value_enum)]
    pub output: Option<DeployOutputArg>,
}

/// What `kprov netboot deploy --output` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeployOutputArg {
    /// The objects, as YAML documents.
    Yaml,
}

/// Flags of `kprov netboot rotate-token`.
#[derive(Debug, Args)]
pub struct NetbootRotateArgs {
    /// The server's YAML config file (for its state directory).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The machine's MAC address (aa:bb:cc:dd:ee:ff).
    #[arg(value_name = "MAC")]
    pub mac: String,
}

/// Flags of `kprov netboot serve`.
#[derive(Debug, Args)]
pub struct NetbootServeArgs {
    /// The server's YAML config file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where Machines come from: the config's machinesDir (files), or
    /// machines.kprov.dev objects in the cluster (kubernetes; apply the
    /// definition of `kprov netboot crd` first), whose status the server
    /// then writes.
    #[arg(long, value_enum, default_value_t = MachinesArg::Files)]
    pub machines: MachinesArg,
    /// With --machines kubernetes: the kubeconfig to reach the cluster
    /// with (default: the pod's service account).
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With --machines kubernetes: the namespace of the Lease
    /// (kprov-netboot) that lets one replica answer DHCP at a time.
    #[arg(long, value_name = "NAMESPACE", default_value = "kube-system")]
    pub lease_namespace: String,
    /// With --machines kubernetes: this replica's name in the Lease
    /// (default: $POD_NAME, else HOSTNAME-PID).
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// The server's address, in place of the config's serverAddress (a
    /// replica of `kprov netboot deploy` is given its node's).
    #[arg(long, value_name = "IPV4")]
    pub server_address: Option<std::net::Ipv4Addr>,
}

/// Where `kprov netboot serve` takes Machines from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MachinesArg {
    /// The YAML files of the config's machinesDir.
    Files,
    /// machines.kprov.dev objects in the cluster.
    Kubernetes,
}

/// `kprov token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token (a Secret in kube-system) and sign
    /// cluster-info with it. Prints the token, or with
    /// --print-join-command the `kprov provision` line a node joins with,
    /// on stdout; --token-file writes it 0600 instead.
    ///
    /// Example: kprov token create --ttl 2h --print-join-command
    Create(TokenCreateArgs),
    /// List bootstrap tokens: id, expiry, usages, groups (never secrets).
    List(TokenListArgs),
    /// Delete bootstrap tokens by id (or whole token) and their
    /// cluster-info signatures.
    Delete(TokenDeleteArgs),
}

/// The kubeconfig `kprov token` talks to the API server with.
#[derive(Debug, Args)]
pub struct AdminKubeconfigArgs {
    /// An administrator's kubeconfig.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kubernetes/admin.conf"
    )]
    pub kubeconfig: PathBuf,
}

/// Flags of `kprov token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub admin: AdminKubeconfigArgs,

    /// How long the token is valid: a positive duration such as 24h,
    /// 1h30m or 90s, at most 87600h (10 years).
    #[arg(long, value_name = "DURATION", default_value = "24h", allow_hyphen_values = true, value_parser = parse_with::<kprov_controlplane::token::Ttl>)]
    pub ttl: kprov_controlplane::token::Ttl,

    /// What the token may be used for: authentication, signing.
    #[arg(long, value_name = "USAGE", value_delimiter = ',', default_value = "signing,authentication", value_parser = parse_with::<kprov_controlplane::token::Usage>)]
    pub usages: Vec<kprov_controlplane::token::Usage>,

    /// Extra groups of the token's identity (system:bootstrappers:...).
    #[arg(long, value_name = "GROUP", value_delimiter = ',', default_value = kprov_controlplane::token::DEFAULT_NODE_GROUP, value_parser = parse_with::<kprov_controlplane::token::TokenGroup>)]
    pub groups: Vec<kprov_controlplane::token::TokenGroup>,

    /// A note for humans, shown by `kprov token list`.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "made by kprov token create"
    )]
    pub description: String,

    /// Print the command that joins a node with this token (API server
    /// and CA hash from the kubeconfig).
    #[arg(long)]
    pub print_join_command: bool,

    /// With --print-join-command: the command that joins a master, which
    /// takes the shared certificates uploaded by `kprov init phase
    /// upload-certs` (needs --certificate-key, checked against the upload
    /// before the token is made).
    #[arg(long, requires = "print_join_command", requires = "certificate_key")]
    pub control_plane: bool,

    /// With --control-plane: the key the upload was encrypted with (64
    /// hex characters; ignored without --control-plane). Prefer the KPROV_CERTIFICATE_KEY environment
    /// variable: command lines are visible to other users.
    // Parsed after clap, so that a malformed key is never echoed back.
    #[arg(
        long,
        env = "KPROV_CERTIFICATE_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub certificate_key: Option<String>,

    /// Write the token (or the join command) to FILE, 0600, instead of
    /// stdout.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Flags of `kprov token list`.
#[derive(Debug, Args)]
pub struct TokenListArgs {
    #[command(flatten)]
    pub admin: AdminKubeconfigArgs,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Flags of `kprov token delete`.
#[derive(Debug, Args)]
pub struct TokenDeleteArgs {
    #[command(flatten)]
    pub admin: AdminKubeconfigArgs,

    /// Token ids (abcdef) or whole tokens (abcdef.0123456789abcdef).
    #[arg(required = true, value_name = "TOKEN_ID")]
    pub ids: Vec<String>,
}

/// Where binaries and images come from.
#[derive(Debug, Args)]
pub struct ArtifactSourceArgs {
    /// Directory of artifacts to install from: kubelet, kubectl,
    /// cni-plugins.tgz (and on Flatcar containerd.tar.gz, runc), each listed
    /// with its sha256 in a SHA256SUMS file. Files not listed are refused.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["bundle", "mirror"])]
    pub artifacts_dir: Option<PathBuf>,

    /// Offline bundle (directory or .tar.zst, from `kprov bundle create`)
    /// to install from; nothing is downloaded.
    #[arg(long, value_name = "PATH", conflicts_with = "mirror")]
    pub bundle: Option<PathBuf>,

    /// Download from a mirror with upstream's layout instead of upstream
    /// (dl.k8s.io and GitHub releases). Without --bundle or
    /// --artifacts-dir, kprov downloads, verifying every file's sha256.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,

    /// Download cache, keyed by sha256.
    #[arg(long, value_name = "DIR", default_value = "/var/cache/kprov")]
    pub cache_dir: PathBuf,
}

impl ArtifactSourceArgs {
    /// Whether any source was named (otherwise: downloads from upstream).
    pub fn given(&self) -> bool {
        self.artifacts_dir.is_some() || self.bundle.is_some() || self.mirror.is_some()
    }
}

/// Flags of `kprov init`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct InitArgs {
    /// Run one phase alone.
    #[command(subcommand)]
    pub action: Option<InitAction>,

    /// Phases to leave out of a full run, e.g. base (a prebaked node) or
    /// base,kubelet-start (files only, for another machine's kubelet).
    #[arg(long, value_name = "PHASE", value_delimiter = ',', value_parser = init_phase_parser())]
    pub skip_phases: Vec<String>,

    /// Also run the upload-certs phase: the shared CAs and the
    /// service-account keys, encrypted with the certificate key, go into
    /// kube-system/kubeadm-certs for 2 hours, for masters that join (with
    /// kprov or `kubeadm join --control-plane`). Without
    /// --certificate-key a new key is made and printed on stdout, once.
    #[arg(long)]
    pub upload_certs: bool,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// What `kprov init` runs instead of every phase.
#[derive(Debug, Subcommand)]
pub enum InitAction {
    /// Run one phase of `kprov init`.
    Phase(InitPhaseArgs),
}

/// Flags of `kprov init phase`.
#[derive(Debug, Args)]
pub struct InitPhaseArgs {
    /// The phase.
    #[arg(value_parser = init_phase_parser())]
    pub name: String,

    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The phases of `kprov init`, from the workflow's own table, with their
/// descriptions (shown by `--help`).
fn init_phase_parser() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        kprov_workflow::init::phase_list()
            .into_iter()
            .map(|(name, description)| clap::builder::PossibleValue::new(name).help(description)),
    )
}

/// Everything that describes the control plane being made.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub dirs: CertDirArgs,

    #[command(flatten)]
    pub source: ArtifactSourceArgs,

    /// How long to wait for the API server and for this node to register.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,

    /// Where kubeconfigs and manifests/ go.
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes")]
    pub kubernetes_dir: PathBuf,

    #[command(flatten)]
    pub node: ControlPlaneNodeArgs,

    #[command(flatten)]
    pub pki: PkiInputArgs,

    /// The range of pod IPs; each node gets a /24 of it. Must not overlap
    /// the service range.
    #[arg(long, value_name = "CIDR", default_value = kprov_controlplane::spec::DEFAULT_POD_CIDR, value_parser = parse_with::<kprov_controlplane::spec::Cidr>)]
    pub pod_cidr: kprov_controlplane::spec::Cidr,

    /// How pods on different nodes reach each other.
    #[arg(long, value_enum, default_value_t = PodNetworkArg::Flannel)]
    pub pod_network: PodNetworkArg,

    /// The registry control-plane images are named under (default: the
    /// release's, k8s.gcr.io before v1.25, registry.k8s.io from v1.25).
    #[arg(long, value_name = "REGISTRY", value_parser = parse_image_registry)]
    pub image_registry: Option<kprov_core::ImageRegistry>,

    /// kube-proxy's mode.
    #[arg(long, value_enum, default_value_t = ProxyModeArg::Iptables)]
    pub proxy_mode: ProxyModeArg,

    /// flannel's image, with the flannel pod network.
    #[arg(long, value_name = "IMAGE", default_value = kprov_controlplane::addons::DEFAULT_FLANNEL_IMAGE, value_parser = parse_flannel_image)]
    pub flannel_image: kprov_core::ImageRef,

    /// The nodes are containers (systemd-nspawn) on a kernel, swap and
    /// disk they share with their host: this master's kubelet tolerates
    /// the host's swap and neither evicts pods nor deletes images over the
    /// host's disk usage, containerd
    /// (when the base phase is installed) keeps OOM scores at or above its
    /// own, and kube-proxy leaves the host's conntrack table size alone.
    #[arg(long)]
    pub node_in_container: bool,

    /// The key (64 hex characters, 32 bytes) upload-certs encrypts the
    /// shared certificates with; default: a new one, printed once. Only
    /// upload-certs reads it. Prefer the KPROV_CERTIFICATE_KEY environment variable: command
    /// lines are visible to other users.
    // Parsed after clap, so that a malformed key is never echoed back.
    #[arg(
        long,
        env = "KPROV_CERTIFICATE_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub certificate_key: Option<String>,

    /// Report what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Pod networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodNetworkArg {
    /// flannel (VXLAN), for any topology.
    Flannel,
    /// bridge + host-local CNI with a route per node, for one L2 segment.
    Bridge,
}

impl From<PodNetworkArg> for kprov_controlplane::spec::PodNetwork {
    fn from(p: PodNetworkArg) -> Self {
        match p {
            PodNetworkArg::Flannel => Self::Flannel,
            PodNetworkArg::Bridge => Self::Bridge,
        }
    }
}

/// `kprov bundle` subcommands.
#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Download (verified, through the cache) everything a node of one
    /// release needs and write it with a manifest.json of sums.
    ///
    /// Example: kprov bundle create --kubernetes-version v1.20.2 --arch amd64
    /// --output node-v1.20.2.tar.zst
    Create(Box<BundleCreateArgs>),
    /// Re-check every file of a bundle against its manifest.
    Verify(BundleVerifyArgs),
}

/// Flags of `kprov bundle create`.
#[derive(Debug, Args)]
pub struct BundleCreateArgs {
    /// Kubernetes release the bundle is for.
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    pub kubernetes_version: KubernetesVersion,

    /// Node architecture (amd64 or arm64).
    #[arg(long, value_name = "ARCH")]
    pub arch: Arch,

    /// Download from a mirror that keeps upstream's layout under this base
    /// URL (release/<version>/bin/linux/<arch>/..., <org>/<project>/releases/download/...).
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,

    /// Also include what a control-plane node needs: the kube-apiserver,
    /// kube-controller-manager, kube-scheduler, kube-proxy, etcd and CoreDNS
    /// images (the pause image is always included).
    #[arg(long)]
    pub control_plane: bool,

    /// Pull images from this registry (HOST[:PORT]) instead of their own,
    /// under the same repository and tag; they keep their canonical names
    /// (e.g. k8s.gcr.io/pause:3.2) in the bundle and on the node.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub registry_mirror: Option<String>,

    /// Speak plain HTTP to the registry (for a registry without TLS on a
    /// trusted network or loopback).
    #[arg(long)]
    pub insecure_registry: bool,

    /// Log in to the registry with HTTP basic auth as this user; the
    /// password is read from the KPROV_REGISTRY_PASSWORD environment
    /// variable (never from the command line).
    #[arg(long, value_name = "USER")]
    pub registry_username: Option<String>,

    /// Leave this image out (a full reference from the catalog, e.g.
    /// k8s.gcr.io/coredns:1.7.0 when nodes pull it themselves). Repeatable.
    #[arg(long, value_name = "IMAGE")]
    pub exclude_image: Vec<String>,

    /// Also include this image (a full reference REGISTRY/REPOSITORY:TAG,
    /// e.g. docker.io/library/busybox:1.35.0), for workloads that must run
    /// without a registry. Repeatable.
    #[arg(long = "image", value_name = "IMAGE")]
    pub extra_images: Vec<String>,

    /// Binaries only: no container images (nodes pull them themselves).
    #[arg(long, conflicts_with_all = ["registry_mirror", "exclude_image", "extra_images"])]
    pub no_images: bool,

    /// Include containerd and runc static releases (for Flatcar, or nodes
    /// provisioned with --runtime-source upstream).
    #[arg(long)]
    pub upstream_runtime: bool,

    /// Extra artifacts to include: kubeadm, crictl.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "NAME")]
    pub include: Vec<ExtraArg>,

    /// Where to write the bundle: a directory, or a single file ending in
    /// .tar.zst.
    #[arg(long, value_name = "PATH")]
    pub output: PathBuf,

    /// Download cache, keyed by sha256.
    #[arg(long, value_name = "DIR", default_value = "/var/cache/kprov")]
    pub cache_dir: PathBuf,
}

/// Optional extras in a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExtraArg {
    /// The kubeadm binary.
    Kubeadm,
    /// The crictl release tarball.
    Crictl,
}

/// Flags of `kprov bundle verify`.
#[derive(Debug, Args)]
pub struct BundleVerifyArgs {
    /// The bundle: a directory or a .tar.zst file.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
}

/// kube-proxy modes, as `kprov init` takes them.
pub use kprov_core::ProxyMode as ProxyModeArg;

/// `kprov lb` subcommands.
#[derive(Debug, Subcommand)]
pub enum LbCommand {
    /// Run the load balancer until stopped (logs on stderr, info by
    /// default).
    ///
    /// Example: kprov lb run --listen 127.0.0.1:6443 --ca-file
    /// /etc/kubernetes/pki/ca.crt --seed 10.0.0.10:6443
    Run(LbRunArgs),
    /// List a running balancer's backends, their health and connections.
    ///
    /// Example: kprov lb status --metrics-address 127.0.0.1:6445 --output json
    Status(LbStatusArgs),
}

/// Flags of `kprov lb run`.
#[derive(Debug, Args)]
pub struct LbRunArgs {
    /// Where clients connect, IP:PORT.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:6443", value_parser = parse_socket_addr)]
    pub listen: std::net::SocketAddr,

    /// The cluster CA (PEM) the API servers' certificates are checked
    /// against.
    #[arg(long, value_name = "FILE")]
    pub ca_file: PathBuf,

    /// A kubeconfig to read the Endpoints default/kubernetes with, every
    /// --discovery-interval (it may point at this balancer itself, with
    /// tls-server-name: kubernetes). Without it the backends are the
    /// seeds and the endpoints file's.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// The file of known backends, rewritten (atomically) when discovery
    /// finds a new set.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/kprov/lb/endpoints.json"
    )]
    pub endpoints_file: PathBuf,

    /// An API server, IP:PORT (the join configuration's). Repeat for
    /// several, or separate with commas. Seeds are always backends.
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',', value_parser = parse_backend)]
    pub seed: Vec<std::net::SocketAddr>,

    /// Time between two /readyz checks of each backend (e.g. 500ms, 1s).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub check_interval: std::time::Duration,

    /// How long one /readyz check, or connecting to a backend for a
    /// client, may take.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub check_timeout: std::time::Duration,

    /// Time between two reads of the Endpoints default/kubernetes.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub discovery_interval: std::time::Duration,

    /// The name the API servers' certificates are checked for (their IP
    /// need not be a SAN).
    #[arg(long, value_name = "NAME", default_value = "kubernetes")]
    pub tls_server_name: String,

    /// Serve Prometheus metrics (GET /metrics) and the status `kprov lb
    /// status` reads (GET /status) on this IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_socket_addr)]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// `kprov image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make a bootable raw disk image from a root directory, written
    /// zstd-compressed with a manifest beside it (OUTPUT.json: size and
    /// sha256 of the raw and the compressed image), as `kprov stage2` and
    /// the netboot server expect.
    ///
    /// The root is a prebaked node: a Debian root (mmdebstrap or
    /// debootstrap with systemd-sysv, a kernel package and
    /// initramfs-tools, and cloud-init for NoCloud) on which `kprov
    /// provision --phase base --root` has run. The disk is GPT: a FAT
    /// boot partition with SYSLINUX (BIOS boot), the root's newest kernel
    /// and initrd, then an ext4 root partition found by its GUID. Made
    /// from plain files with mkfs.vfat, mtools, syslinux and mkfs.ext4
    /// (Debian packages dosfstools, mtools, syslinux, syslinux-common,
    /// e2fsprogs): no loop device, no mount. The same root, seed and
    /// SOURCE_DATE_EPOCH give the same root filesystem.
    ///
    /// Example: kprov image build --root /srv/node-root --output
    /// /srv/images/node.img.zst --kernel-arg console=ttyS0,115200
    Build(ImageBuildArgs),
}

/// Flags of `kprov image build`.
#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The root directory to put on the disk (with /boot/vmlinuz-VERSION
    /// and /boot/initrd.img-VERSION).
    #[arg(long, value_name = "DIR")]
    pub root: std::path::PathBuf,

    /// The compressed image to write (node.img.zst); its manifest is
    /// written beside it as OUTPUT.json. Both are replaced whole.
    #[arg(long, value_name = "FILE")]
    pub output: std::path::PathBuf,

    /// The raw disk's size (4G, 6144M); the image fits disks at least
    /// this big. Default: the root's files plus a quarter plus 512 MiB
    /// (at least 1 GiB of root), plus the boot partition.
    #[arg(long, value_name = "SIZE", value_parser = parse_disk_size)]
    pub size: Option<u64>,

    /// A kernel argument after root=PARTUUID=... rw; repeat for more
    /// (console=ttyS0,115200, ds=nocloud;s=URL).
    #[arg(long = "kernel-arg", value_name = "ARG")]
    pub kernel_args: Vec<String>,

    /// What the partition and filesystem GUIDs are derived from: images
    /// built with different seeds can share a machine.
    #[arg(long, value_name = "TEXT", default_value = "kprov-image")]
    pub seed: String,

    /// zstd's compression level.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,

    /// Print the layout (sizes, kernel, partition GUIDs) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `kprov initrd` subcommands.
#[derive(Debug, Subcommand)]
pub enum InitrdCommand {
    /// Make the stage2 initrd: a gzip-compressed cpio whose /init is this
    /// static kprov binary (running stage2), with the kernel modules for
    /// common NICs and disks (virtio, e1000/e1000e, igb, ixgbe, i40e, ice,
    /// r8169, tg3, bnxt, mlx, nvme, ahci, SAS) and what they depend on,
    /// taken from the kernel of --root (boot it with that kernel, printed
    /// at the end).
    ///
    /// Example: kprov initrd build --root /srv/node-root --output
    /// /srv/netboot/stage2.initrd
    Build(InitrdBuildArgs),
}

/// Flags of `kprov initrd build`.
#[derive(Debug, Args)]
pub struct InitrdBuildArgs {
    /// The root with the kernel (/boot/vmlinuz-VERSION) and its modules
    /// (/lib/modules/VERSION): the image's root, so that stage2 and the
    /// installed system share a kernel.
    #[arg(long, value_name = "DIR")]
    pub root: std::path::PathBuf,

    /// The initrd to write (replaced whole).
    #[arg(long, value_name = "FILE")]
    pub output: std::path::PathBuf,

    /// The kernel version (default: the root's newest).
    #[arg(long, value_name = "VERSION")]
    pub kernel: Option<String>,

    /// A kernel module to add (with its dependencies); repeat for more.
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,

    /// The kprov binary to put in as /init (default: this one). It must
    /// be static: nothing in the initrd can load a dynamic one.
    #[arg(long, value_name = "PATH")]
    pub kprov: Option<std::path::PathBuf>,
}

fn parse_disk_size(s: &str) -> Result<u64, String> {
    kprov_image::layout::parse_disk_size(s)
}

/// Flags of `kprov stage2`.
#[derive(Debug, Args)]
pub struct Stage2Args {
    /// The image's manifest (JSON: the image's file name beside it, and
    /// the size and sha256 of the raw and the compressed image).
    #[arg(long, value_name = "URL")]
    pub manifest: String,

    /// The disk to write: a block device, or a file of the disk's size.
    /// Everything on it is overwritten.
    #[arg(long, value_name = "PATH")]
    pub disk: std::path::PathBuf,

    /// Attempts per request (the image's resumes count) before giving up.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempts: u32,

    /// The pause between attempts.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub retry_delay: std::time::Duration,

    /// Configure this interface by DHCP first, as the stage2 initrd does
    /// (set it up, take a lease, add its address and default route).
    #[arg(long, value_name = "INTERFACE")]
    pub dhcp: Option<String>,

    /// The machine's NoCloud seed URL (ending in /), written into the
    /// image's meta-data slot on its boot partition (labelled CIDATA):
    /// cloud-init on the installed system fetches its user-data there.
    /// The stage2 initrd takes it from kprov.seed.
    #[arg(long, value_name = "URL")]
    pub seed: Option<String>,
}

/// Flags of `kprov lb status`.
#[derive(Debug, Args)]
pub struct LbStatusArgs {
    /// The running balancer's --metrics-address.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:6445", value_parser = parse_socket_addr)]
    pub metrics_address: std::net::SocketAddr,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

fn parse_socket_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP:PORT address (for example 127.0.0.1:6443)"))
}

fn parse_backend(s: &str) -> Result<std::net::SocketAddr, String> {
    kprov_lb::backend::parse_backend(s)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    kprov_lb::duration::parse_duration(s)
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    /// A line per resource and a summary.
    Text,
    /// The same as one JSON document on stdout.
    Json,
}

fn parse_version(s: &str) -> Result<KubernetesVersion, String> {
    KubernetesVersion::parse_supported(s).map_err(|e| e.to_string())
}

/// Flags of `kprov provision`: the node's ([`NodeConfig`], which
/// `--config` can also give) and how to run.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// YAML file of node settings: its keys are the node's long flag names
    /// without "--" (phase, kubelet-version, api-server, ...; lists for
    /// repeatable flags), as in `kprov userdata --config`. Flags given on
    /// the command line win, and lists from both are joined. Relative
    /// paths in it (ca-cert, artifacts-dir, bundle, cache-dir) are
    /// relative to the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The node's root: / for the running host, or a directory (a chroot,
    /// a mounted disk image) to prebake offline.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    #[command(flatten)]
    pub node: NodeConfig,

    /// Print the plan and what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Report format on stdout; progress always goes to stderr.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,

    /// Which of the node's values came from --config.
    #[arg(skip)]
    pub from_config: FromConfig,
}

/// Flags of `kprov reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// The node's root: / for the running host, or a directory.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Print what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// On a master: reset even when its etcd member cannot leave first
    /// (etcd does not answer, or removing it would break quorum). The
    /// member then stays in etcd until removed from another master.
    #[arg(long)]
    pub force: bool,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Flags of `kprov health-check`.
#[derive(Debug, Args)]
pub struct HealthCheckArgs {
    /// The container runtime whose socket to probe.
    #[arg(long, value_enum, default_value_t = kprov_core::ContainerRuntime::Containerd)]
    pub runtime: kprov_core::ContainerRuntime,
}

/// `kprov pod-network` subcommands.
#[derive(Debug, Args)]
pub struct PodNetworkArgs {
    #[command(subcommand)]
    pub command: PodNetworkCommand,
}

/// What `kprov pod-network` does.
#[derive(Debug, Subcommand)]
pub enum PodNetworkCommand {
    /// Bring this node's CNI config and pod routes in line with the
    /// cluster. Does nothing on a node that has not joined or in a cluster
    /// that runs another pod network. On a master whose controller manager
    /// leads, first give every Node without a pod range the next free one
    /// (kprov, not the controller manager, allocates the bridge network's
    /// ranges). kprov-pod-network.service runs it with --follow.
    Sync(PodNetworkSyncArgs),
}

/// Flags of `kprov pod-network sync`.
#[derive(Debug, Args)]
pub struct PodNetworkSyncArgs {
    /// The kubelet's kubeconfig: the node's own credentials, and its name.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kubernetes/kubelet.conf"
    )]
    pub kubeconfig: PathBuf,

    /// Keep running: sync again as soon as any Node changes (a new Node,
    /// a range given, an address), and every 30 s; every second while the
    /// node has not joined or the API server does not answer yet.
    #[arg(long, conflicts_with = "dry_run")]
    pub follow: bool,

    /// Say what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What `kprov etcd` does.
#[derive(Debug, Subcommand)]
pub enum EtcdCommand {
    /// List etcd's members (ID, name, peer and client URLs, learner or
    /// voter) and whether each answers as itself, as the local member
    /// sees them; with the API server's etcd client certificate. No
    /// etcdctl needed (it lives in etcd's image), and no mirror pod (the
    /// kubelet may create it a minute after etcd starts).
    ///
    /// Example: kprov etcd members --output json
    Members(EtcdMembersArgs),
}

/// Flags of `kprov etcd members`.
#[derive(Debug, Args)]
pub struct EtcdMembersArgs {
    /// The control plane's certificate directory: etcd/ca.crt and
    /// apiserver-etcd-client.{crt,key}.
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
    pub cert_dir: PathBuf,

    /// The etcd client URL to ask.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:2379")]
    pub endpoint: String,

    /// How to print the members.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Flags of `kprov os`.
#[derive(Debug, Args)]
pub struct OsArgs {
    /// The root whose os-release to read.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Boot config formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FormatArg {
    /// cloud-init #cloud-config YAML.
    #[default]
    CloudInit,
    /// Ignition 3.4 JSON, for Flatcar.
    Ignition,
}

/// Flags of `kprov userdata`, and the node spec YAML (--config) in one
/// struct, so that the two cannot drift apart: a YAML key is the long
/// flag name without "--". The node's flags are [`NodeConfig`], shared
/// with `kprov provision`, which setup.sh runs with them; the others
/// describe the boot config.
#[derive(Debug, Default, Args, serde::Serialize, serde::Deserialize)]
// Unknown keys are refused by kprov_core::node_config::from_yaml, which
// reads the node's keys into NodeConfig.
#[serde(rename_all = "kebab-case", default)]
pub struct UserdataArgs {
    /// Boot config format: cloud-init (most distributions) or ignition
    /// (Flatcar).
    #[serde(skip)]
    #[arg(long, value_enum)]
    pub format: FormatArg,

    /// YAML node spec with any of the flags below as keys (without
    /// "--"); flags given on the command line take precedence, and lists
    /// from both (SSH keys, CA hashes, taints) are joined. Relative paths
    /// of local files in it (ssh-authorized-keys-file, ca-cert,
    /// cloud-config-file, provision-binary) are relative to the file.
    #[serde(skip)]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The node's host name, which becomes its Kubernetes node name
    /// (RFC 1123, lower case, e.g. worker-1 or worker-1.example.com).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// An SSH public key ("ssh-ed25519 AAAA... comment") allowed to log in
    /// (the default user with cloud-init, `core` with Ignition).
    /// Repeatable; in --config, a list under ssh-authorized-keys.
    #[serde(rename = "ssh-authorized-key", alias = "ssh-authorized-keys")]
    #[arg(
        long = "ssh-authorized-key",
        alias = "ssh-authorized-keys",
        value_name = "KEY"
    )]
    pub ssh_authorized_keys: Vec<String>,

    /// A file of SSH public keys, one per line (authorized_keys or
    /// id_*.pub); added to --ssh-authorized-key.
    #[serde(serialize_with = "node_config::opt_path_as_text")]
    #[arg(long, value_name = "FILE")]
    pub ssh_authorized_keys_file: Option<PathBuf>,

    /// Local file with the cloud provider's config, embedded in the boot
    /// config and written 0600 on the node at --cloud-config.
    #[serde(serialize_with = "node_config::opt_path_as_text")]
    #[arg(long, value_name = "FILE")]
    pub cloud_config_file: Option<PathBuf>,

    /// Where setup.sh fetches kprov from on the node: an http://, https://
    /// or file:// URL of the binary.
    #[arg(long, value_name = "URL")]
    pub provision_source: Option<String>,

    /// sha256 (64 hex digits) the fetched kprov must have; setup.sh
    /// refuses to run anything else.
    #[arg(long, value_name = "HEX")]
    pub provision_sha256: Option<String>,

    /// Local copy of the kprov binary served at --provision-source; its
    /// sha256 is computed and pinned (and must match --provision-sha256
    /// if both are given).
    #[serde(serialize_with = "node_config::opt_path_as_text")]
    #[arg(long, value_name = "FILE")]
    pub provision_binary: Option<PathBuf>,

    /// cloud-init: gzip the whole document and print it base64-encoded,
    /// for platforms that take base64 user-data (cloud-init decompresses
    /// it). Ignition: gzip each file's contents inside the config.
    #[arg(long)]
    pub gzip: bool,

    /// Write the boot config to FILE (mode 0600: it holds the bootstrap
    /// token) instead of stdout.
    #[serde(skip)]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The node's flags, which setup.sh runs `kprov provision` with. Paths
    /// other than --ca-cert (--artifacts-dir, --bundle, --cache-dir,
    /// --cloud-config) are paths on the node; the token is written 0600
    /// on the node and passed to kprov in its environment.
    #[serde(skip)]
    #[command(
        flatten,
        next_help_heading = "Node options (passed to `kprov provision` on the node)"
    )]
    pub node: NodeConfig,

    /// Which of the values came from --config.
    #[serde(skip)]
    #[arg(skip)]
    pub from_config: FromConfig,
}

/// Key types for generated keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyTypeArg {
    /// RSA 2048 (kubeadm's default).
    Rsa,
    /// ECDSA on P-256 (kubeadm's PublicKeysECDSA feature gate).
    Ecdsa,
}

impl From<KeyTypeArg> for kprov_pki::KeyType {
    fn from(k: KeyTypeArg) -> Self {
        match k {
            KeyTypeArg::Rsa => Self::Rsa,
            KeyTypeArg::Ecdsa => Self::Ecdsa,
        }
    }
}

fn parse_image_registry(s: &str) -> Result<kprov_core::ImageRegistry, String> {
    s.parse()
        .map_err(|e: kprov_core::image::ImageRefError| format!("--image-registry {s:?}: {e}"))
}

fn parse_flannel_image(s: &str) -> Result<kprov_core::ImageRef, String> {
    s.parse()
        .map_err(|e: kprov_core::image::ImageRefError| format!("--flannel-image {s:?}: {e}"))
}

fn parse_log_level(s: &str) -> Result<crate::log_filter::LogFilter, String> {
    s.parse()
        .map_err(|e: crate::log_filter::LogFilterError| format!("--log-level {e}"))
}

fn parse_with<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

/// The cluster-wide inputs of the API server's certificate, shared by
/// `kprov pki` and `kprov init`.
#[derive(Debug, Args)]
pub struct PkiInputArgs {
    /// An extra subject alternative name for the API server's
    /// certificate: an IP address or a DNS name. Repeat for several, or
    /// separate with commas.
    #[arg(long, value_name = "NAME", value_delimiter = ',', value_parser = parse_with::<kprov_pki::spec::ExtraSan>)]
    pub san: Vec<kprov_pki::spec::ExtraSan>,

    /// The range of Service IPs; its first address (the `kubernetes`
    /// Service) is a SAN of the API server's certificate.
    #[arg(long, value_name = "CIDR", default_value = kprov_pki::spec::DEFAULT_SERVICE_CIDR, value_parser = parse_with::<kprov_pki::spec::ServiceCidr>)]
    pub service_cidr: kprov_pki::spec::ServiceCidr,

    /// The cluster's DNS domain; kubernetes.default.svc.DOMAIN is a SAN
    /// of the API server's certificate.
    #[arg(long, value_name = "DOMAIN", default_value = kprov_pki::spec::DEFAULT_CLUSTER_DOMAIN, value_parser = parse_with::<kprov_pki::spec::ClusterDomain>)]
    pub cluster_domain: kprov_pki::spec::ClusterDomain,
}

/// Where the PKI lives.
#[derive(Debug, Args)]
pub struct CertDirArgs {
    /// The node's root: / for the running host, or a directory (a chroot,
    /// a mounted disk image). Paths below are on the node.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Directory of the certificates and keys.
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
    pub cert_dir: PathBuf,
}

/// The control-plane node the certificates and kubeconfigs are for.
#[derive(Debug, Args)]
pub struct ControlPlaneNodeArgs {
    /// The node's name (lower-case DNS name); the API server's and etcd's
    /// certificates name it, and kubelet.conf's identity is
    /// system:node:NAME.
    #[arg(long, value_name = "NAME", required = true, value_parser = parse_with::<kprov_pki::spec::NodeName>)]
    pub node_name: Option<kprov_pki::spec::NodeName>,

    /// The IP address the API server advertises (and etcd listens on).
    #[arg(long, value_name = "IP", required = true, value_parser = parse_with::<kprov_pki::spec::AdvertiseAddress>)]
    pub advertise_address: Option<kprov_pki::spec::AdvertiseAddress>,

    /// A stable address for the control plane, HOST or HOST:PORT (a load
    /// balancer or DNS name in front of several masters). Defaults to the
    /// advertise address.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_with::<kprov_pki::spec::ControlPlaneEndpoint>)]
    pub control_plane_endpoint: Option<kprov_pki::spec::ControlPlaneEndpoint>,

    /// The Kubernetes release of the control plane: subjects and files
    /// follow what kubeadm of that release makes (from v1.29, admin.conf
    /// is in kubeadm:cluster-admins and super-admin.conf is added).
    #[arg(long, value_name = "VERSION", value_parser = parse_version, default_value_t = NEWEST_KNOWN)]
    pub kubernetes_version: KubernetesVersion,

    /// Type of the keys generated.
    #[arg(long, value_enum, default_value_t = KeyTypeArg::Rsa)]
    pub key_type: KeyTypeArg,
}

/// Flags of `kprov pki`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PkiArgs {
    /// Instead of making the PKI: check it, or print the CA hash.
    #[command(subcommand)]
    pub action: Option<PkiAction>,

    #[command(flatten)]
    pub dirs: CertDirArgs,

    #[command(flatten)]
    pub node: ControlPlaneNodeArgs,

    #[command(flatten)]
    pub pki: PkiInputArgs,

    /// Make and check everything in memory and report what would be
    /// written; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// What `kprov pki` does instead of making the PKI.
#[derive(Debug, Subcommand)]
pub enum PkiAction {
    /// List every certificate (and the kubeconfigs' client certificates
    /// with --kubeconfig-dir) with subject, expiry and time left; exit
    /// with status 1 if any is expired or invalid.
    Check(PkiCheckArgs),

    /// Print the CA's public-key hash, `sha256:<hex>`, which joining nodes
    /// pin (kubeadm's --discovery-token-ca-cert-hash).
    CaHash(CaHashArgs),
}

/// Flags of `kprov pki check`.
#[derive(Debug, Args)]
pub struct PkiCheckArgs {
    #[command(flatten)]
    pub dirs: CertDirArgs,

    /// Also check the client certificates of the kubeconfigs in DIR.
    #[arg(long, value_name = "DIR")]
    pub kubeconfig_dir: Option<PathBuf>,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

/// Flags of `kprov pki ca-hash`.
#[derive(Debug, Args)]
pub struct CaHashArgs {
    #[command(flatten)]
    pub dirs: CertDirArgs,
}

/// Flags of `kprov kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub dirs: CertDirArgs,

    /// Directory to write the kubeconfigs to.
    #[arg(
        long,
        visible_alias = "out-dir",
        value_name = "DIR",
        default_value = "/etc/kubernetes"
    )]
    pub kubeconfig_dir: PathBuf,

    #[command(flatten)]
    pub node: ControlPlaneNodeArgs,

    /// Make and check everything in memory and report what would be
    /// written; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Report format on stdout.
    #[arg(long, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
}

impl From<ExtraArg> for kprov_artifacts::ArtifactName {
    fn from(e: ExtraArg) -> Self {
        match e {
            ExtraArg::Kubeadm => Self::Kubeadm,
            ExtraArg::Crictl => Self::Crictl,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
