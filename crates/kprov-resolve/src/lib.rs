//! Host names resolved in Rust, never through glibc's NSS.
//!
//! kprov ships as one static executable (see the README). glibc's
//! `getaddrinfo` in a static executable loads NSS modules at run time, which
//! needs the shared libraries of the very glibc it was linked with; so
//! nothing in kprov may call it. Every client kprov makes resolves names
//! here instead, with hickory-resolver: first `/etc/hosts`, then the DNS
//! servers, search list and options of `/etc/resolv.conf`. As with glibc, a
//! missing `/etc/resolv.conf` (or one that names no server) means the
//! server on 127.0.0.1, so a root that holds nothing but `/etc/hosts` still
//! resolves the names listed there. A name the hosts table lists is
//! answered from it alone; DNS queries need random numbers, which a static
//! binary reads from `/dev/urandom`.
//!
//! Two uses:
//! - [`System`] (and [`Resolver`]) implement reqwest's
//!   [`reqwest::dns::Resolve`], for the downloader's client
//!   (`ClientBuilder::dns_resolver`). Clients kprov does
//!   not build itself (oci-client's) use reqwest's own hickory resolver,
//!   enabled by the workspace's `hickory-dns` feature; that one needs an
//!   `/etc/resolv.conf`.
//! - [`pin_host`] resolves the host of a URL once, for clients that resolve
//!   names with `getaddrinfo` and cannot be given a resolver (kube-rs): the
//!   caller connects to the address and verifies TLS against the name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::Query;
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};

/// The hosts table a system resolver reads.
pub const HOSTS: &str = "/etc/hosts";
/// The DNS configuration a system resolver reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why a name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A configuration file exists but could not be read or parsed.
    #[error("reading {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The lookup failed or found no address.
    #[error("resolving host name {name}: {reason}")]
    Lookup {
        /// The name.
        name: String,
        /// Why (from /etc/hosts and DNS).
        reason: String,
    },
}

/// A resolver: the hosts table, then DNS.
#[derive(Clone)]
pub struct Resolver {
    hosts: Arc<Hosts>,
    /// The DNS configuration, and the DNS client made from it at the first
    /// name the hosts table does not list (hickory draws random numbers as
    /// it makes one, which a name from the hosts table must not need).
    dns_config: (ResolverConfig, ResolverOpts),
    dns: Arc<OnceLock<TokioResolver>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// The running system's resolver: [`HOSTS`] and [`RESOLV_CONF`]. A
    /// missing file counts as empty (no hosts; the DNS server on
    /// 127.0.0.1, as glibc assumes); an unreadable or malformed one is an
    /// error naming it.
    pub fn system() -> Result<Self, ResolveError> {
        let hosts = read_optional(Path::new(HOSTS))?;
        let resolv_conf = read_optional(Path::new(RESOLV_CONF))?;
        Self::from_contents(hosts.as_deref().unwrap_or_default(), resolv_conf.as_deref()).map_err(
            |e| match e {
                ResolveError::Config { path, reason } => ResolveError::Config {
                    path: if path == "hosts" { HOSTS } else { RESOLV_CONF }.into(),
                    reason,
                },
                other => other,
            },
        )
    }

    /// A resolver from the text of a hosts file and of a resolv.conf (None:
    /// no file).
    pub fn from_contents(hosts: &[u8], resolv_conf: Option<&[u8]>) -> Result<Self, ResolveError> {
        let config_err = |reason: String| ResolveError::Config {
            path: "resolv.conf".into(),
            reason,
        };
        // hickory refuses a file without servers; glibc then asks the
        // local server, and so do we.
        let names_a_server = |text: &[u8]| {
            String::from_utf8_lossy(text)
                .lines()
                .any(|l| l.split_whitespace().next() == Some("nameserver"))
        };
        let (config, mut options) = match resolv_conf {
            Some(text) if names_a_server(text) => {
                hickory_resolver::system_conf::parse_resolv_conf(text)
                    .map_err(|e| config_err(e.to_string()))?
            }
            _ => (local_server(), ResolverOpts::default()),
        };
        // Both families, for happy eyeballs in reqwest's connector.
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // The hosts table is given below, never read behind our back.
        options.use_hosts_file = ResolveHosts::Never;
        let mut table = Hosts::default();
        table
            .read_hosts_conf(hosts)
            .map_err(|e| ResolveError::Config {
                path: "hosts".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            hosts: Arc::new(table),
            dns_config: (config, options),
            dns: Arc::default(),
        })
    }

    /// The DNS client, made now if it was not yet. hickory draws random
    /// numbers (query ids) as it makes one and panics when it cannot: a
    /// static binary's random numbers come from /dev/urandom (getrandom
    /// finds no `getrandom` function through a static glibc's dlsym), so
    /// their absence is an error here, naming the device.
    fn dns(&self, name: &str) -> Result<&TokioResolver, ResolveError> {
        if let Some(dns) = self.dns.get() {
            return Ok(dns);
        }
        getrandom::fill(&mut [0u8; 8]).map_err(|e| ResolveError::Lookup {
            name: name.to_string(),
            reason: format!("no random numbers for DNS queries (/dev/urandom): {e}"),
        })?;
        let (config, options) = self.dns_config.clone();
        let mut dns =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        dns.set_hosts(self.hosts.clone());
        Ok(self.dns.get_or_init(|| dns))
    }

    /// The addresses of `name` (an address literal is its own answer).
    /// Needs a tokio runtime.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let host = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let err = |reason: String| ResolveError::Lookup {
            name: name.to_string(),
            reason,
        };
        // A name in the hosts table is answered from it alone, as glibc's
        // "files" does: no DNS query for the family it does not list.
        let listed = self.listed(host);
        if !listed.is_empty() {
            return Ok(listed);
        }
        let found = self
            .dns(name)?
            .lookup_ip(host)
            .await
            .map_err(|e| err(e.to_string()))?;
        let addrs: Vec<IpAddr> = found.iter().collect();
        if addrs.is_empty() {
            return Err(err("no address".into()));
        }
        Ok(addrs)
    }
}

impl Resolver {
    /// The addresses the hosts table lists for `host`, IPv4 first.
    fn listed(&self, host: &str) -> Vec<IpAddr> {
        let Ok(name) = Name::from_str(&host.to_ascii_lowercase()) else {
            return Vec::new();
        };
        [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|t| {
                self.hosts
                    .lookup_static_host(&Query::query(name.clone(), t))
            })
            .flat_map(|l| l.iter().filter_map(|r| r.ip_addr()).collect::<Vec<_>>())
            .collect()
    }
}

fn local_server() -> ResolverConfig {
    ResolverConfig::from_parts(
        None,
        Vec::new(),
        hickory_resolver::config::NameServerConfigGroup::from_ips_clear(
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            53,
            true,
        ),
    )
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ResolveError> {
    match std::fs::read(path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ResolveError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

/// The system resolver ([`Resolver::system`]), made at its first lookup:
/// a command that never connects never reads the files.
#[derive(Debug, Clone, Default)]
pub struct System {
    cell: Arc<OnceLock<Resolver>>,
}

impl System {
    /// The resolver, made now if it was not yet.
    pub fn get(&self) -> Result<&Resolver, ResolveError> {
        if let Some(r) = self.cell.get() {
            return Ok(r);
        }
        let made = Resolver::system()?;
        Ok(self.cell.get_or_init(|| made))
    }
}

impl From<Resolver> for System {
    fn from(resolver: Resolver) -> Self {
        Self {
            cell: Arc::new(OnceLock::from(resolver)),
        }
    }
}

impl reqwest::dns::Resolve for System {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        match self.get() {
            Ok(r) => r.resolve(name),
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.clone();
        Box::pin(async move {
            let addrs = resolver.lookup(name.as_str()).await?;
            // reqwest sets the port itself.
            let addrs: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// For a URL whose host is a name: the same URL with that name replaced by
/// one of its addresses (IPv4 first), and the name, which TLS must still
/// verify the server's certificate against. None when the host is an
/// address already (or the URL has no host).
pub async fn pin_host(
    resolver: &System,
    url: &http::Uri,
) -> Result<Option<(http::Uri, String)>, ResolveError> {
    let Some(authority) = url.authority() else {
        return Ok(None);
    };
    let host = authority.host();
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return Ok(None);
    }
    let addrs = resolver.get()?.lookup(host).await?;
    let ip = addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| ResolveError::Lookup {
            name: host.to_string(),
            reason: "no address".into(),
        })?;
    let literal = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let new_authority = match authority.port_u16() {
        Some(port) => format!("{literal}:{port}"),
        None => literal,
    };
    let mut parts = url.clone().into_parts();
    parts.authority =
        Some(
            new_authority
                .parse()
                .map_err(|e: http::uri::InvalidUri| ResolveError::Lookup {
                    name: host.to_string(),
                    reason: e.to_string(),
                })?,
        );
    let pinned = http::Uri::from_parts(parts).map_err(|e| ResolveError::Lookup {
        name: host.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some((pinned, host.to_string())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HOSTS_FILE: &[u8] = b"127.0.0.1 localhost\n\
        # a comment\n\
        10.0.0.7 api.cluster.test api\n\
        fd00::7 v6only.test\n";

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A resolver whose only DNS server is 127.0.0.1, where nothing answers
    /// in tests: a name can only come from the hosts table.
    fn hosts_only() -> Resolver {
        Resolver::from_contents(
            HOSTS_FILE,
            Some(b"nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"),
        )
        .unwrap()
    }

    #[test]
    fn names_in_the_hosts_table_resolve_without_any_dns_server() {
        let r = hosts_only();
        let rt = runtime();
        let cases: &[(&str, &[&str])] = &[
            ("api.cluster.test", &["10.0.0.7"]),
            ("api", &["10.0.0.7"]),
            ("v6only.test", &["fd00::7"]),
            ("10.1.2.3", &["10.1.2.3"]),
            ("[fd00::1]", &["fd00::1"]),
        ];
        for (name, want) in cases {
            let got = rt.block_on(r.lookup(name)).unwrap();
            let want: Vec<IpAddr> = want.iter().map(|w| w.parse().unwrap()).collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_missing_or_serverless_resolv_conf_still_resolves_the_hosts_table() {
        let rt = runtime();
        for conf in [None, Some(&b"search example.test\n"[..])] {
            let r = Resolver::from_contents(HOSTS_FILE, conf).unwrap();
            assert_eq!(
                rt.block_on(r.lookup("api.cluster.test")).unwrap(),
                ["10.0.0.7".parse::<IpAddr>().unwrap()],
                "{conf:?}"
            );
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let r = Resolver::from_contents(
            HOSTS_FILE,
            Some(b"nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"),
        )
        .unwrap();
        let err = runtime()
            .block_on(r.lookup("nothing-here.invalid"))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("resolving host name nothing-here.invalid: "),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_resolv_conf_is_refused() {
        let err = Resolver::from_contents(b"", Some(b"nameserver not-an-address\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("reading resolv.conf: "),
            "{err}"
        );
    }

    #[test]
    fn pin_host_replaces_a_name_by_its_address_and_keeps_the_rest() {
        let r = System::from(hosts_only());
        let rt = runtime();
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                "https://api.cluster.test:6443",
                Some(("https://10.0.0.7:6443/", "api.cluster.test")),
            ),
            (
                "https://api.cluster.test/some/path?q=1",
                Some(("https://10.0.0.7/some/path?q=1", "api.cluster.test")),
            ),
            (
                "https://v6only.test:6443",
                Some(("https://[fd00::7]:6443/", "v6only.test")),
            ),
            ("https://10.0.0.1:6443", None),
            ("https://[fd00::1]:6443", None),
        ];
        for (url, want) in cases {
            let got = rt
                .block_on(pin_host(&r, &url.parse().unwrap()))
                .unwrap()
                .map(|(u, n)| (u.to_string(), n));
            let want = want.map(|(u, n)| (u.to_string(), n.to_string()));
            assert_eq!(got, want, "{url}");
        }
    }
}
