//! The side of stage2's networking: the interface set up, DHCP over a UDP
//! socket bound to it (broadcast: it has no address yet), and the lease
//! applied with rtnetlink.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketType};
use socket2::{Domain, Protocol, Socket, Type};

use crate::dhcp::{self, Lease, Reply};
use crate::netlink;

/// How long one DHCP exchange may take before it starts over.
const EXCHANGE: Duration = Duration::from_secs(4);

/// Brings `interface` up, takes a lease by DHCP within `limit`, and
/// configures the address and default route it gives.
pub fn configure(interface: &str, limit: Duration) -> Result<Lease, String> {
    let index: u32 = read_sys(interface, "ifindex")?
        .parse()
        .map_err(|e| format!("{interface}: ifindex: {e}"))?;
    let mac = parse_mac(&read_sys(interface, "address")?)
        .ok_or_else(|| format!("{interface}: no Ethernet address"))?;
    rtnetlink(&netlink::link_up(index, 1), 1)
        .map_err(|e| format!("setting {interface} up: {e}"))?;
    let lease = lease(interface, mac, limit)?;
    rtnetlink(
        &netlink::add_address(index, lease.address, lease.prefix_len, 2),
        2,
    )
    .map_err(|e| {
        format!(
            "adding {}/{} to {interface}: {e}",
            lease.address, lease.prefix_len
        )
    })?;
    if let Some(router) = lease.router {
        rtnetlink(&netlink::add_default_route(index, router, 3), 3)
            .map_err(|e| format!("adding the default route via {router}: {e}"))?;
    }
    Ok(lease)
}

/// `eth0: 10.0.0.50/24 from DHCP server 10.0.0.1, router 10.0.0.254`.
pub fn describe(interface: &str, lease: &Lease) -> String {
    format!(
        "{interface}: {}/{} from DHCP server {}{}",
        lease.address,
        lease.prefix_len,
        lease.server,
        lease
            .router
            .map(|r| format!(", router {r}"))
            .unwrap_or_else(|| ", no router".into())
    )
}

fn read_sys(interface: &str, file: &str) -> Result<String, String> {
    fs::read_to_string(format!("/sys/class/net/{interface}/{file}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("interface {interface}: {e}"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// DISCOVER, OFFER, REQUEST, ACK; any silence or NAK starts over, until
/// `limit`.
fn lease(interface: &str, mac: [u8; 6], limit: Duration) -> Result<Lease, String> {
    let socket = dhcp_socket(interface).map_err(|e| format!("DHCP socket on {interface}: {e}"))?;
    let started = Instant::now();
    let servers = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let mut xid = u32::from_ne_bytes(mac[2..6].try_into().unwrap_or([0; 4]))
        ^ started.elapsed().subsec_nanos()
        ^ std::process::id();
    let mut attempt = 0;
    while started.elapsed() < limit {
        attempt += 1;
        if attempt > 1 {
            eprintln!(
                "kprov: stage2: {interface}: no DHCP lease yet ({:.0} s), asking again",
                started.elapsed().as_secs_f64()
            );
        }
        xid = xid.wrapping_add(1);
        socket
            .send_to(&dhcp::discover(mac, xid), servers)
            .map_err(|e| format!("sending DHCPDISCOVER on {interface}: {e}"))?;
        let Some(Reply::Offer(offer)) =
            wait_reply(&socket, mac, xid, |r| matches!(r, Reply::Offer(_)))
        else {
            continue;
        };
        socket
            .send_to(&dhcp::request(mac, xid, &offer), servers)
            .map_err(|e| format!("sending DHCPREQUEST on {interface}: {e}"))?;
        if let Some(Reply::Ack(lease)) =
            wait_reply(&socket, mac, xid, |r| !matches!(r, Reply::Offer(_)))
        {
            return Ok(lease);
        }
    }
    Err(format!(
        "no DHCP lease on {interface} within {} s (no server answered, or every offer was withdrawn)",
        limit.as_secs()
    ))
}

/// The first reply to `xid` that `wanted` accepts, within [`EXCHANGE`].
fn wait_reply(
    socket: &UdpSocket,
    mac: [u8; 6],
    xid: u32,
    wanted: impl Fn(&Reply) -> bool,
) -> Option<Reply> {
    let deadline = Instant::now() + EXCHANGE;
    let mut buffer = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let Ok((n, _)) = socket.recv_from(&mut buffer) else {
            return None;
        };
        if let Some(reply) = dhcp::parse_reply(&buffer[..n], mac, xid) {
            if wanted(&reply) {
                return Some(reply);
            }
        }
    }
}

fn dhcp_socket(interface: &str) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())?;
    Ok(socket.into())
}

/// Sends one rtnetlink request and waits for its acknowledgement.
fn rtnetlink(request: &[u8], seq: u32) -> Result<(), String> {
    let socket = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)
        .map_err(|e| format!("rtnetlink socket: {e}"))?;
    // Bounded: a missing acknowledgement must end in an error, not a hang.
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )
    .map_err(|e| format!("rtnetlink socket: {e}"))?;
    let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&socket, request, rustix::net::SendFlags::empty(), &kernel)
        .map_err(|e| format!("rtnetlink: {e}"))?;
    let mut reply = vec![0u8; 8192];
    for _ in 0..8 {
        let (n, _) = rustix::net::recv(&socket, &mut reply, rustix::net::RecvFlags::empty())
            .map_err(|e| format!("rtnetlink: {e}"))?;
        match netlink::answer(&reply[..n], seq) {
            Some(0) => return Ok(()),
            Some(error) => {
                return Err(std::io::Error::from_raw_os_error(-error).to_string());
            }
            None => continue,
        }
    }
    Err("rtnetlink: no acknowledgement".into())
}
