//! Netboot: the servers that boot machines from the network, driven by
//! Machine resources.
//!
//! Pure parts (no sockets, no clock, no filesystem unless named):
//! - [`machine`]: Machine resources, validation, the registry by MAC/UUID,
//!   loading a directory ([`machine::load_dir`] reads files);
//! - [`config`]: the server's configuration file;
//! - [`crd`]: the Machine resource's Rust type, shared by the files and
//!   the `machines.kprov.dev` custom resource generated from it;
//! - [`dhcp`]: DHCPv4 decisions (full and proxy mode, PXE/iPXE boot files)
//!   over `dhcproto` messages, with [`dhcp::handle_datagram`] as the fuzz
//!   entry;
//! - [`leases`]: the pool's lease table;
//! - [`tftp`]: TFTP packets, option negotiation and the sending window;
//! - [`ipxe`]: per-machine iPXE scripts and the NoCloud documents;
//! - [`token`]: per-machine tokens (HMAC under the server secret, with
//!   a purpose, an epoch, a serial and an expiry);
//! - [`state`]: per-machine state (token epoch and serial, user-data
//!   window, installed report, address seen, phase) and the rules that
//!   bind a machine's data to its address and token;
//! - [`paths`]: path safety for the served roots;
//! - [`metrics`]: counters rendered in Prometheus text format;
//! - [`ra`]: the IPv6 router advertisement that tells iPXE not to wait;
//! - [`deploy`]: netboot as a workload of the cluster (`kprov netboot
//!   deploy`'s objects);
//! - [`join`]: join data netboot makes for worker Machines (their
//!   tokens and user-data).
//!
//! The thin side-effect layer: [`server`] (startup, the supervised tasks,
//! DHCP sockets, the reload and flush loops), [`tftp_serve`] (bounded
//! TFTP transfers), the connection handling of [`http`], [`limits`]
//! (caps that fit the descriptor limit, per-address slots, idle
//! timeouts), [`epochs`] (token epoch files, `rotate-token`) and the
//! loops that talk to the API server: [`kube_source`] (Machines, Nodes,
//! status), [`leader`] (the Lease) and [`kube_join`] (join tokens).

pub mod config;
pub mod crd;
pub mod deploy;
pub mod dhcp;
pub mod epochs;
pub mod fuzz;
pub mod http;
pub mod ipxe;
pub mod join;
pub mod kube_join;
pub mod kube_source;
pub mod leader;
pub mod leases;
pub mod limits;
pub mod machine;
pub mod metrics;
pub mod paths;
pub mod ra;
pub mod server;
pub mod state;
pub mod tftp;
pub mod tftp_serve;
pub mod token;
