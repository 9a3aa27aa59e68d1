//! DHCPv4 decisions as pure functions over `dhcproto` messages: what to
//! answer a request with, given the configuration, the known machines and
//! the lease table. The socket layer (`server`) only moves bytes.
//!
//! PXE logic, so that no client loops between chainloads:
//! - a client already running iPXE (user class "iPXE") gets the HTTP URL
//!   of its per-machine iPXE script, with a short-lived script token
//!   (`/boot/<mac>/<token>.ipxe`; [`View::script_token`] makes it);
//! - a PXE ROM (vendor class "PXEClient") gets an iPXE binary over TFTP:
//!   architecture 0 (legacy BIOS) the BIOS one (`undionly.kpxe`), 7 and 9
//!   (UEFI x86-64) the UEFI one (`ipxe.efi`); other architectures get no
//!   boot file;
//! - anything else (an OS's DHCP client) gets an address only.
//!
//! Unknown MACs get nothing unless a default profile is configured.
//! Proxy mode answers PXE clients only and never hands out addresses.

use std::net::Ipv4Addr;

use dhcproto::v4::{Architecture, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

use crate::config::{Config, Mode};
use crate::leases::LeaseTable;
use crate::machine::{MacAddr, Machine, Registry};

/// Which socket a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The DHCP server port (67).
    Dhcp,
    /// The PXE boot server port of proxyDHCP (4011).
    ProxyBoot,
}

/// What kind of client sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// iPXE (user class "iPXE"): gets its script's HTTP URL.
    Ipxe,
    /// A legacy BIOS PXE ROM.
    PxeBios,
    /// A UEFI x86-64 PXE ROM.
    PxeUefi,
    /// A PXE ROM of an architecture we have no binary for.
    PxeOther(u16),
    /// An ordinary DHCP client.
    Plain,
}

/// Classifies a request by its user class, vendor class and architecture.
pub fn classify(msg: &Message) -> ClientKind {
    let opts = msg.opts();
    if let Some(DhcpOption::UserClass(uc)) = opts.get(OptionCode::UserClass) {
        if uc.windows(4).any(|w| w == b"iPXE") {
            return ClientKind::Ipxe;
        }
    }
    let pxe = matches!(opts.get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"PXEClient"));
    if !pxe {
        return ClientKind::Plain;
    }
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => u16::from(*a),
        _ => 0,
    };
    match Architecture::from(arch) {
        Architecture::Intelx86PC => ClientKind::PxeBios,
        Architecture::BC | Architecture::X86_64 => ClientKind::PxeUefi,
        _ => ClientKind::PxeOther(arch),
    }
}

/// The SMBIOS UUID from option 97 (type 0 + 16 bytes), in the canonical
/// text form. PXE sends the first three fields little-endian.
pub fn client_uuid(msg: &Message) -> Option<String> {
    let Some(DhcpOption::ClientMachineIdentifier(id)) =
        msg.opts().get(OptionCode::ClientMachineIdentifier)
    else {
        return None;
    };
    let b: [u8; 16] = id.get(1..17)?.try_into().ok()?;
    if id[0] != 0 {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// Where a reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    /// 255.255.255.255:68 on the interface (client without an address).
    Broadcast,
    /// A client with an address: `ciaddr`:68.
    Client(Ipv4Addr),
    /// A relay agent: `giaddr`:67.
    Relay(Ipv4Addr),
    /// Back to the sender's address and port (the 4011 boot server).
    Sender,
}

/// A reply to send.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The message.
    pub message: Message,
    /// Where it goes.
    pub to: ReplyTo,
    /// The client.
    pub mac: MacAddr,
    /// Offer, Ack or Nak.
    pub kind: MessageType,
    /// The machine's name, or `default` for the default profile.
    pub machine: String,
    /// The address given (if any).
    pub address: Option<Ipv4Addr>,
    /// The boot file given (if any).
    pub boot_file: Option<String>,
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Answer it.
    Reply(Box<Reply>),
    /// Stay silent (with the reason, for the log).
    Ignore {
        /// The client, when the packet named one.
        mac: Option<MacAddr>,
        /// Why.
        reason: String,
    },
}

/// What the decision reads: configuration, machines, and how to make a
/// script token for a MAC.
pub struct View<'a> {
    /// The server configuration.
    pub config: &'a Config,
    /// The known machines.
    pub machines: &'a Registry,
    /// The script token of a MAC (put in iPXE's script URL).
    pub script_token: &'a dyn Fn(&MacAddr) -> String,
}

/// Who a client is: a Machine, or the default profile.
enum Known<'a> {
    Machine(&'a Machine),
    Default,
}

impl Known<'_> {
    fn name(&self) -> String {
        match self {
            Known::Machine(m) => m.name.clone(),
            Known::Default => "default".into(),
        }
    }
}

/// Decodes a packet.
pub fn decode(bytes: &[u8]) -> Result<Message, dhcproto::error::DecodeError> {
    Message::from_bytes(bytes)
}

/// Checks what `dhcproto`'s decoder takes for granted (it asserts on
/// these in debug builds and would slice past `chaddr` on a large
/// `hlen`): a hardware address length of at most 16, and the lengths of
/// the fixed-size options it decodes, with adjacent repeats concatenated
/// as RFC 3396 says.
pub fn precheck(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 240 {
        return Err(format!(
            "{} bytes is shorter than a BOOTP header",
            bytes.len()
        ));
    }
    if bytes[2] > 16 {
        return Err(format!("hardware address length {} is over 16", bytes[2]));
    }
    let mut at = 240;
    let mut run: Option<(u8, usize)> = None;
    let check = |code: u8, len: usize| -> Result<(), String> {
        let ok = match code {
            80 => len == 0,
            81 => len >= 3,
            94 => len == 3,
            152..=155 => len == 4,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("option {code} has an invalid length {len}"))
        }
    };
    while at < bytes.len() {
        let code = bytes[at];
        if code == 0 || code == 255 {
            if let Some((c, len)) = run.take() {
                check(c, len)?;
            }
            if code == 255 {
                break;
            }
            at += 1;
            continue;
        }
        let Some(&len) = bytes.get(at + 1) else {
            return Err(format!("option {code} is cut off"));
        };
        let len = usize::from(len);
        if at + 2 + len > bytes.len() {
            return Err(format!("option {code} runs past the end of the packet"));
        }
        run = match run {
            Some((c, total)) if c == code => Some((c, total + len)),
            Some((c, total)) => {
                check(c, total)?;
                Some((code, len))
            }
            None => Some((code, len)),
        };
        at += 2 + len;
    }
    if let Some((c, len)) = run {
        check(c, len)?;
    }
    Ok(())
}

/// Encodes a reply.
pub fn encode(msg: &Message) -> Result<Vec<u8>, dhcproto::error::EncodeError> {
    msg.to_vec()
}

/// The URL of a machine's iPXE script, with its script token.
pub fn script_url(config: &Config, mac: &MacAddr, token: &str) -> String {
    format!("{}/boot/{}/{token}.ipxe", config.http_base(), mac.dashed())
}

/// The boot file a client of this kind gets (None: none for it).
pub fn boot_file(view: &View<'_>, kind: ClientKind, mac: &MacAddr) -> Option<String> {
    let config = view.config;
    match kind {
        ClientKind::Ipxe => Some(script_url(config, mac, &(view.script_token)(mac))),
        ClientKind::PxeBios => Some(config.boot_files.bios.clone()),
        ClientKind::PxeUefi => Some(config.boot_files.uefi.clone()),
        ClientKind::PxeOther(_) | ClientKind::Plain => None,
    }
}

/// Decides the answer to one request. `now` is seconds since the epoch;
/// the lease table is updated for pool addresses.
pub fn decide(
    msg: &Message,
    listener: Listener,
    view: &View<'_>,
    leases: &mut LeaseTable,
    now: u64,
) -> Decision {
    let ignore = |mac: Option<MacAddr>, reason: &str| Decision::Ignore {
        mac,
        reason: reason.to_string(),
    };
    if msg.opcode() != Opcode::BootRequest {
        return ignore(None, "not a BOOTREQUEST");
    }
    if msg.hlen() != 6 || u8::from(msg.htype()) != 1 {
        return ignore(None, "not an Ethernet client");
    }
    let Some(mac) = MacAddr::from_chaddr(msg.chaddr()) else {
        return ignore(None, "no client hardware address");
    };
    let Some(mtype) = msg.opts().msg_type() else {
        return ignore(Some(mac), "no DHCP message type");
    };
    let uuid = client_uuid(msg);
    let known = match view.machines.find(&mac, uuid.as_deref()) {
        Some(m) => Known::Machine(m),
        None if view.config.default_profile.is_some() => Known::Default,
        None => return ignore(Some(mac), "unknown MAC and no default profile"),
    };
    let kind = classify(msg);
    let server = view.config.server_address;
    if let Some(DhcpOption::ServerIdentifier(id)) = msg.opts().get(OptionCode::ServerIdentifier) {
        if *id != server && mtype == MessageType::Request {
            if let (Mode::Full, Known::Default) = (view.config.mode, &known) {
                leases.release(&mac, now);
            }
            return ignore(Some(mac), "the client chose another server");
        }
    }
    match (view.config.mode, listener) {
        (Mode::Proxy, _) | (Mode::Full, Listener::ProxyBoot) => {
            proxy_reply(msg, listener, view, &known, kind, mac, mtype)
        }
        (Mode::Full, Listener::Dhcp) => {
            full_reply(msg, view, &known, kind, mac, mtype, leases, now)
        }
    }
}

fn base_reply(req: &Message, server: Ipv4Addr, mtype: MessageType) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr())
        .set_chaddr(req.chaddr());
    m.opts_mut().insert(DhcpOption::MessageType(mtype));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    m
}

fn reply_to(req: &Message, mtype: MessageType) -> ReplyTo {
    if !req.giaddr().is_unspecified() {
        ReplyTo::Relay(req.giaddr())
    } else if mtype != MessageType::Nak && !req.ciaddr().is_unspecified() {
        ReplyTo::Client(req.ciaddr())
    } else {
        ReplyTo::Broadcast
    }
}

fn set_boot(m: &mut Message, server: Ipv4Addr, file: &Option<String>) {
    if let Some(file) = file {
        m.set_siaddr(server);
        // The 128-byte file field holds the name; option 67 too, for
        // clients that read only the option.
        if file.len() < 128 {
            m.set_fname_str(file);
        }
        m.opts_mut()
            .insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    }
}

fn proxy_reply(
    req: &Message,
    listener: Listener,
    view: &View<'_>,
    known: &Known<'_>,
    kind: ClientKind,
    mac: MacAddr,
    mtype: MessageType,
) -> Decision {
    let ignore = |reason: &str| Decision::Ignore {
        mac: Some(mac),
        reason: reason.into(),
    };
    if matches!(kind, ClientKind::Plain) {
        return ignore("proxy mode: not a PXE client");
    }
    let reply_type = match (listener, mtype) {
        (Listener::Dhcp, MessageType::Discover) => MessageType::Offer,
        (Listener::ProxyBoot, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (Listener::Dhcp, _) => return ignore("proxy mode: the address server answers this"),
        (Listener::ProxyBoot, _) => return ignore("boot server: not a request"),
    };
    let file = boot_file(view, kind, &mac);
    if file.is_none() {
        return ignore("no boot file for this client architecture");
    }
    let server = view.config.server_address;
    let mut m = base_reply(req, server, reply_type);
    m.set_ciaddr(req.ciaddr());
    m.opts_mut()
        .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    // PXE discovery control 8: take the boot file from this reply, skip
    // boot server discovery.
    m.opts_mut()
        .insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    set_boot(&mut m, server, &file);
    let to = match listener {
        Listener::ProxyBoot => ReplyTo::Sender,
        Listener::Dhcp => reply_to(req, reply_type),
    };
    Decision::Reply(Box::new(Reply {
        message: m,
        to,
        mac,
        kind: reply_type,
        machine: known.name(),
        address: None,
        boot_file: file,
    }))
}

#[allow(clippy::too_many_arguments)]
fn full_reply(
    req: &Message,
    view: &View<'_>,
    known: &Known<'_>,
    kind: ClientKind,
    mac: MacAddr,
    mtype: MessageType,
    leases: &mut LeaseTable,
    now: u64,
) -> Decision {
    let config = view.config;
    let ignore = |reason: &str| Decision::Ignore {
        mac: Some(mac),
        reason: reason.into(),
    };
    let reserved = |ip: Ipv4Addr| ip == config.server_address || view.machines.is_fixed(ip);
    // The address this client should have.
    let address = |leases: &mut LeaseTable| -> Option<Ipv4Addr> {
        match known {
            Known::Machine(m) if m.ip.is_some() => m.ip,
            _ => config
                .pool
                .as_ref()
                .and_then(|pool| leases.choose(&mac, pool, &reserved, now)),
        }
    };
    let from_pool = !matches!(known, Known::Machine(m) if m.ip.is_some());
    leases.prune(config.pool.as_ref(), now);
    let lease_end = now + u64::from(config.lease_seconds);
    let (reply_type, yiaddr) = match mtype {
        MessageType::Discover => {
            let Some(ip) = address(leases) else {
                return ignore(
                    "no address for this client (no fixed address, pool empty or absent)",
                );
            };
            if from_pool {
                // Hold the offered address briefly so that it is not
                // offered twice (a full pool takes back old offers).
                leases.offer(&mac, ip, now + u64::from(config.offer_seconds));
            }
            (MessageType::Offer, ip)
        }
        MessageType::Request => {
            let wanted = match req.opts().get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                _ => req.ciaddr(),
            };
            let ours = match known {
                Known::Machine(m) if m.ip.is_some() => m.ip,
                _ if config.pool.is_some() => {
                    let pool = config.pool.as_ref();
                    let in_pool = pool.is_some_and(|p| {
                        (u32::from(p.start)..=u32::from(p.end)).contains(&u32::from(wanted))
                    });
                    if in_pool && !reserved(wanted) && leases.is_free_for(&mac, wanted, now) {
                        Some(wanted)
                    } else {
                        address(leases)
                    }
                }
                _ => None,
            };
            match ours {
                Some(ip) if ip == wanted => {
                    if from_pool {
                        leases.commit(&mac, ip, lease_end);
                    }
                    (MessageType::Ack, ip)
                }
                _ => (MessageType::Nak, Ipv4Addr::UNSPECIFIED),
            }
        }
        MessageType::Inform => (MessageType::Ack, Ipv4Addr::UNSPECIFIED),
        MessageType::Release | MessageType::Decline => {
            if from_pool {
                leases.release(&mac, now);
            }
            return ignore("release/decline noted");
        }
        _ => return ignore("message type not handled"),
    };
    let server = config.server_address;
    let mut m = base_reply(req, server, reply_type);
    if reply_type == MessageType::Nak {
        return Decision::Reply(Box::new(Reply {
            message: m,
            to: reply_to(req, reply_type),
            mac,
            kind: reply_type,
            machine: known.name(),
            address: None,
            boot_file: None,
        }));
    }
    m.set_yiaddr(yiaddr).set_ciaddr(req.ciaddr());
    let opts = m.opts_mut();
    if mtype != MessageType::Inform {
        opts.insert(DhcpOption::AddressLeaseTime(config.lease_seconds));
    }
    if let Some(subnet) = &config.subnet {
        opts.insert(DhcpOption::SubnetMask(subnet.mask()));
        opts.insert(DhcpOption::BroadcastAddr(subnet.broadcast()));
    }
    if let Some(router) = config.router {
        opts.insert(DhcpOption::Router(vec![router]));
    }
    if !config.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(config.dns.clone()));
    }
    if let Known::Machine(machine) = known {
        if let Some(h) = &machine.hostname {
            opts.insert(DhcpOption::Hostname(h.clone()));
        }
    }
    let file = boot_file(view, kind, &mac);
    set_boot(&mut m, server, &file);
    Decision::Reply(Box::new(Reply {
        message: m,
        to: reply_to(req, reply_type),
        mac,
        kind: reply_type,
        machine: known.name(),
        address: (!yiaddr.is_unspecified()).then_some(yiaddr),
        boot_file: file,
    }))
}

/// Bytes in, bytes out: the whole pure path the server runs for each
/// datagram (decode, decide, encode). This is the fuzz target's entry; it
/// must never panic, whatever the input.
pub fn handle_datagram(
    bytes: &[u8],
    listener: Listener,
    view: &View<'_>,
    leases: &mut LeaseTable,
    now: u64,
) -> (Decision, Option<Vec<u8>>) {
    if let Err(reason) = precheck(bytes) {
        return (
            Decision::Ignore {
                mac: None,
                reason: format!("malformed packet: {reason}"),
            },
            None,
        );
    }
    let msg = match decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            return (
                Decision::Ignore {
                    mac: None,
                    reason: format!("malformed packet: {e}"),
                },
                None,
            )
        }
    };
    let decision = decide(&msg, listener, view, leases, now);
    let bytes = match &decision {
        Decision::Reply(r) => encode(&r.message).ok(),
        Decision::Ignore { .. } => None,
    };
    (decision, bytes)
}

/// A request as PXE ROMs, iPXE and OS clients send them (for tests,
/// the fuzz corpus and benchmarks).
pub fn sample_request(
    mac: MacAddr,
    mtype: MessageType,
    kind: ClientKind,
    requested: Option<Ipv4Addr>,
    server_id: Option<Ipv4Addr>,
) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(0x1234_5678)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&mac.0);
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(mtype));
    if let Some(ip) = requested {
        opts.insert(DhcpOption::RequestedIpAddress(ip));
    }
    if let Some(ip) = server_id {
        opts.insert(DhcpOption::ServerIdentifier(ip));
    }
    let arch = match kind {
        ClientKind::PxeBios | ClientKind::Ipxe => Some(0),
        ClientKind::PxeUefi => Some(7),
        ClientKind::PxeOther(a) => Some(a),
        ClientKind::Plain => None,
    };
    if let Some(a) = arch {
        opts.insert(DhcpOption::ClassIdentifier(
            format!("PXEClient:Arch:{a:05}:UNDI:002001").into_bytes(),
        ));
        opts.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(a)));
    }
    if kind == ClientKind::Ipxe {
        opts.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::Path;

    use super::*;
    use crate::machine::parse_machine;

    const NODE: &str = "\
apiVersion: kprov.dev/v1alpha1
kind: Machine
metadata: {name: node1}
spec:
  macAddress: 52:54:00:00:00:01
  ipAddress: 10.77.0.20
  hostname: node1
  boot: {kernel: vmlinuz, initrd: initrd.img}
";

    fn config(mode: &str, default_profile: bool) -> Config {
        let mut text = format!(
            "mode: {mode}\ninterface: br0\nserverAddress: 10.77.0.1\nsubnet: 10.77.0.0/24\n\
             machinesDir: m\ntftpRoot: t\nhttpRoot: h\nstateDir: s\nports: {{http: 8080}}\n"
        );
        if mode == "full" {
            text.push_str("pool: {start: 10.77.0.100, end: 10.77.0.101}\n");
        }
        if default_profile {
            text.push_str("defaultProfile: {boot: {kernel: vmlinuz}}\n");
        }
        Config::parse(Path::new("c.yaml"), &text).unwrap()
    }

    fn machines() -> Registry {
        let m = parse_machine(Path::new("n.yaml"), NODE, None).unwrap();
        Registry::build(vec![m]).0
    }

    const KNOWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const UNKNOWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 9]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn run(
        config: &Config,
        msg: &Message,
        listener: Listener,
        leases: &mut LeaseTable,
    ) -> Decision {
        let reg = machines();
        let view = View {
            config,
            machines: &reg,
            script_token: &|_| "tok".to_string(),
        };
        // Round-trip through bytes, as the server does.
        let bytes = encode(msg).unwrap();
        let (decision, reply) = handle_datagram(&bytes, listener, &view, leases, 1000);
        if let Decision::Reply(r) = &decision {
            let back = decode(&reply.unwrap()).unwrap();
            assert_eq!(back.xid(), msg.xid());
            assert_eq!(back.opts().msg_type(), Some(r.kind));
        }
        decision
    }

    fn reply(d: Decision) -> Reply {
        match d {
            Decision::Reply(r) => *r,
            Decision::Ignore { reason, .. } => panic!("ignored: {reason}"),
        }
    }

    fn ignored(d: Decision) -> String {
        match d {
            Decision::Reply(r) => panic!("replied {:?}", r.kind),
            Decision::Ignore { reason, .. } => reason,
        }
    }

    fn fname(m: &Message) -> String {
        m.fname_str()
            .and_then(|r| r.ok())
            .unwrap_or_default()
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn clients_get_the_boot_file_for_what_they_run() {
        let c = config("full", false);
        let cases = [
            (ClientKind::PxeBios, "undionly.kpxe"),
            (ClientKind::PxeUefi, "ipxe.efi"),
            (ClientKind::PxeOther(9), "ipxe.efi"),
            (
                ClientKind::Ipxe,
                "http://10.77.0.1:8080/boot/52-54-00-00-00-01/tok.ipxe",
            ),
            (ClientKind::Plain, ""),
        ];
        for (kind, want) in cases {
            let msg = sample_request(KNOWN, MessageType::Discover, kind, None, None);
            let r = reply(run(&c, &msg, Listener::Dhcp, &mut LeaseTable::default()));
            assert_eq!(r.kind, MessageType::Offer);
            assert_eq!(r.message.yiaddr(), Ipv4Addr::new(10, 77, 0, 20), "{kind:?}");
            assert_eq!(fname(&r.message), want, "{kind:?}");
            if want.is_empty() {
                assert_eq!(r.message.siaddr(), Ipv4Addr::UNSPECIFIED);
            } else {
                assert_eq!(r.message.siaddr(), SERVER);
            }
            assert_eq!(r.to, ReplyTo::Broadcast);
            let o = r.message.opts();
            assert!(
                matches!(o.get(OptionCode::SubnetMask), Some(DhcpOption::SubnetMask(m)) if *m == Ipv4Addr::new(255, 255, 255, 0))
            );
            assert!(
                matches!(o.get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "node1")
            );
            assert!(
                matches!(o.get(OptionCode::ServerIdentifier), Some(DhcpOption::ServerIdentifier(s)) if *s == SERVER)
            );
        }
        // An architecture without a binary still gets its address, no file.
        let msg = sample_request(
            KNOWN,
            MessageType::Discover,
            ClientKind::PxeOther(11),
            None,
            None,
        );
        assert_eq!(classify(&msg), ClientKind::PxeOther(11));
        let r = reply(run(&c, &msg, Listener::Dhcp, &mut LeaseTable::default()));
        assert_eq!(fname(&r.message), "");
    }

    #[test]
    fn requests_are_acked_for_the_fixed_address_and_nakked_otherwise() {
        let c = config("full", false);
        let mut leases = LeaseTable::default();
        let ok = sample_request(
            KNOWN,
            MessageType::Request,
            ClientKind::Plain,
            Some(Ipv4Addr::new(10, 77, 0, 20)),
            Some(SERVER),
        );
        let r = reply(run(&c, &ok, Listener::Dhcp, &mut leases));
        assert_eq!(r.kind, MessageType::Ack);
        assert_eq!(r.address, Some(Ipv4Addr::new(10, 77, 0, 20)));
        assert!(leases.is_empty(), "fixed addresses need no lease");
        let wrong = sample_request(
            KNOWN,
            MessageType::Request,
            ClientKind::Plain,
            Some(Ipv4Addr::new(10, 77, 0, 21)),
            None,
        );
        assert_eq!(
            reply(run(&c, &wrong, Listener::Dhcp, &mut leases)).kind,
            MessageType::Nak
        );
        let other = sample_request(
            KNOWN,
            MessageType::Request,
            ClientKind::Plain,
            Some(Ipv4Addr::new(10, 77, 0, 20)),
            Some(Ipv4Addr::new(10, 77, 0, 2)),
        );
        assert_eq!(
            ignored(run(&c, &other, Listener::Dhcp, &mut leases)),
            "the client chose another server"
        );
        // A renewal (ciaddr set) is answered to the client's address.
        let mut renew = sample_request(KNOWN, MessageType::Request, ClientKind::Plain, None, None);
        renew.set_ciaddr(Ipv4Addr::new(10, 77, 0, 20));
        assert_eq!(
            reply(run(&c, &renew, Listener::Dhcp, &mut leases)).to,
            ReplyTo::Client(Ipv4Addr::new(10, 77, 0, 20))
        );
        // A relayed request goes back to the relay.
        let mut relayed =
            sample_request(KNOWN, MessageType::Discover, ClientKind::Plain, None, None);
        relayed.set_giaddr(Ipv4Addr::new(10, 77, 0, 5));
        assert_eq!(
            reply(run(&c, &relayed, Listener::Dhcp, &mut leases)).to,
            ReplyTo::Relay(Ipv4Addr::new(10, 77, 0, 5))
        );
    }

    #[test]
    fn unknown_macs_get_nothing_unless_a_default_profile_is_configured() {
        let msg = sample_request(
            UNKNOWN,
            MessageType::Discover,
            ClientKind::PxeBios,
            None,
            None,
        );
        let c = config("full", false);
        assert_eq!(
            ignored(run(&c, &msg, Listener::Dhcp, &mut LeaseTable::default())),
            "unknown MAC and no default profile"
        );
        let c = config("proxy", false);
        assert_eq!(
            ignored(run(&c, &msg, Listener::Dhcp, &mut LeaseTable::default())),
            "unknown MAC and no default profile"
        );

        let c = config("full", true);
        let mut leases = LeaseTable::default();
        let r = reply(run(&c, &msg, Listener::Dhcp, &mut leases));
        assert_eq!(r.machine, "default");
        assert_eq!(r.address, Some(Ipv4Addr::new(10, 77, 0, 100)));
        let req = sample_request(
            UNKNOWN,
            MessageType::Request,
            ClientKind::Ipxe,
            Some(Ipv4Addr::new(10, 77, 0, 100)),
            Some(SERVER),
        );
        let r = reply(run(&c, &req, Listener::Dhcp, &mut leases));
        assert_eq!(r.kind, MessageType::Ack);
        assert_eq!(
            fname(&r.message),
            "http://10.77.0.1:8080/boot/52-54-00-00-00-09/tok.ipxe"
        );
        assert_eq!(leases.get(&UNKNOWN).unwrap().expires, 1000 + 3600);
        // The pool holds two addresses. A pending offer is taken back for
        // a third client; bound leases are not.
        let m2 = MacAddr([2, 0, 0, 0, 0, 2]);
        let m3 = MacAddr([2, 0, 0, 0, 0, 3]);
        let discover =
            |mac| sample_request(mac, MessageType::Discover, ClientKind::Plain, None, None);
        let offered = reply(run(&c, &discover(m2), Listener::Dhcp, &mut leases));
        assert_eq!(offered.address, Some(Ipv4Addr::new(10, 77, 0, 101)));
        assert_eq!(
            leases.get(&m2).unwrap().expires,
            1000 + 10,
            "offers are short"
        );
        let taken = reply(run(&c, &discover(m3), Listener::Dhcp, &mut leases));
        assert_eq!(taken.address, Some(Ipv4Addr::new(10, 77, 0, 101)));
        assert!(leases.get(&m2).is_none());
        let request = sample_request(
            m3,
            MessageType::Request,
            ClientKind::Plain,
            Some(Ipv4Addr::new(10, 77, 0, 101)),
            Some(SERVER),
        );
        assert_eq!(
            reply(run(&c, &request, Listener::Dhcp, &mut leases)).kind,
            MessageType::Ack
        );
        let why = ignored(run(&c, &discover(m2), Listener::Dhcp, &mut leases));
        assert!(why.starts_with("no address"), "{why}");
        // A release frees the address.
        run(
            &c,
            &sample_request(
                UNKNOWN,
                MessageType::Release,
                ClientKind::Plain,
                None,
                Some(SERVER),
            ),
            Listener::Dhcp,
            &mut leases,
        );
        assert_eq!(
            reply(run(&c, &discover(m2), Listener::Dhcp, &mut leases)).address,
            Some(Ipv4Addr::new(10, 77, 0, 100))
        );
    }

    #[test]
    fn proxy_mode_gives_pxe_options_only() {
        let c = config("proxy", false);
        let mut leases = LeaseTable::default();
        let plain = sample_request(KNOWN, MessageType::Discover, ClientKind::Plain, None, None);
        assert_eq!(
            ignored(run(&c, &plain, Listener::Dhcp, &mut leases)),
            "proxy mode: not a PXE client"
        );
        let pxe = sample_request(
            KNOWN,
            MessageType::Discover,
            ClientKind::PxeBios,
            None,
            None,
        );
        let r = reply(run(&c, &pxe, Listener::Dhcp, &mut leases));
        assert_eq!(r.kind, MessageType::Offer);
        assert_eq!(r.message.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(fname(&r.message), "undionly.kpxe");
        let o = r.message.opts();
        assert!(o.get(OptionCode::SubnetMask).is_none());
        assert!(o.get(OptionCode::AddressLeaseTime).is_none());
        assert!(
            matches!(o.get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient")
        );
        let req = sample_request(
            KNOWN,
            MessageType::Request,
            ClientKind::PxeBios,
            Some(Ipv4Addr::new(10, 77, 0, 60)),
            None,
        );
        assert_eq!(
            ignored(run(&c, &req, Listener::Dhcp, &mut leases)),
            "proxy mode: the address server answers this"
        );
        let mut boot = sample_request(KNOWN, MessageType::Request, ClientKind::Ipxe, None, None);
        boot.set_ciaddr(Ipv4Addr::new(10, 77, 0, 60));
        let r = reply(run(&c, &boot, Listener::ProxyBoot, &mut leases));
        assert_eq!(r.kind, MessageType::Ack);
        assert_eq!(r.to, ReplyTo::Sender);
        assert_eq!(
            fname(&r.message),
            "http://10.77.0.1:8080/boot/52-54-00-00-00-01/tok.ipxe"
        );
        assert!(leases.is_empty());
    }

    #[test]
    fn smbios_uuids_are_read_in_pxe_byte_order() {
        let mut m = sample_request(
            UNKNOWN,
            MessageType::Discover,
            ClientKind::PxeBios,
            None,
            None,
        );
        let mut id = vec![0u8];
        id.extend([
            0x2a, 0x3e, 0x0d, 0x8c, 0, 0, 0, 0x40, 0x80, 0, 0, 0, 0, 0, 0, 1,
        ]);
        m.opts_mut().insert(DhcpOption::ClientMachineIdentifier(id));
        assert_eq!(
            client_uuid(&m).as_deref(),
            Some("8c0d3e2a-0000-4000-8000-000000000001")
        );
    }

    #[test]
    fn garbage_is_ignored() {
        let c = config("full", true);
        let reg = machines();
        let view = View {
            config: &c,
            machines: &reg,
            script_token: &|_| "tok".to_string(),
        };
        for bytes in [&b""[..], b"\x01", &[0u8; 300], &[0xffu8; 600]] {
            let (d, out) =
                handle_datagram(bytes, Listener::Dhcp, &view, &mut LeaseTable::default(), 0);
            assert!(matches!(d, Decision::Ignore { .. }));
            assert!(out.is_none());
        }
    }
}
