//! Stage2's DHCP client, the packets: DISCOVER and REQUEST out, OFFER,
//! ACK and NAK in (RFC 2131), for one interface with one MAC. The socket
//! and the retries are in [`crate::net`].

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

/// An address offered or acknowledged, with what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The client's address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length (from the subnet mask; /24 without one).
    pub prefix_len: u8,
    /// The default router, if the server names one.
    pub router: Option<Ipv4Addr>,
    /// The server that made the offer.
    pub server: Ipv4Addr,
}

/// A server's reply to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An offer.
    Offer(Lease),
    /// The requested address is the client's.
    Ack(Lease),
    /// The request was refused: start over.
    Nak,
}

/// DISCOVER, asking for a broadcast reply (the interface has no address).
pub fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut msg = base(mac, xid);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    encode(msg)
}

/// REQUEST for `lease`'s address from its server.
pub fn request(mac: [u8; 6], xid: u32, lease: &Lease) -> Vec<u8> {
    let mut msg = base(mac, xid);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(lease.address));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(lease.server));
    encode(msg)
}

/// Reads a datagram: `None` unless it is a reply to this client's
/// transaction `xid` (other clients' replies arrive too, broadcast).
pub fn parse_reply(bytes: &[u8], mac: [u8; 6], xid: u32) -> Option<Reply> {
    let msg = Message::from_bytes(bytes).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid || msg.chaddr().get(..6)? != mac {
        return None;
    }
    let kind = msg.opts().msg_type()?;
    if kind == MessageType::Nak {
        return Some(Reply::Nak);
    }
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(id)) => *id,
        _ => msg.siaddr(),
    };
    let prefix_len = match msg.opts().get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask).count_ones() as u8,
        _ => 24,
    };
    let router = match msg.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let lease = Lease {
        address: msg.yiaddr(),
        prefix_len,
        router,
        server,
    };
    if lease.address.is_unspecified() {
        return None;
    }
    match kind {
        MessageType::Offer => Some(Reply::Offer(lease)),
        MessageType::Ack => Some(Reply::Ack(lease)),
        _ => None,
    }
}

fn base(mac: [u8; 6], xid: u32) -> Message {
    let mut msg = blank_request();
    msg.set_xid(xid)
        .set_flags(Flags::default().set_broadcast())
        .set_chaddr(&mac);
    msg.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
    ]));
    msg
}

/// An empty BOOTREQUEST, decoded from its bytes. Not `Message::default()`
/// or `Message::new*`: they draw a random xid through the `rand` crate,
/// whose getrandom(2) blocks until the kernel's entropy pool is ready, and
/// stage2 runs so early on an idle machine that this can take forever.
fn blank_request() -> Message {
    const BOOTP_HEADER: usize = 236;
    const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
    const END: u8 = 255;
    let mut bytes = vec![0u8; BOOTP_HEADER];
    bytes[0] = 1; // op: BOOTREQUEST
    bytes[1] = 1; // htype: Ethernet
    bytes.extend(MAGIC_COOKIE);
    bytes.push(END);
    Message::decode(&mut Decoder::new(&bytes)).expect("a fixed, well-formed BOOTREQUEST")
}

fn encode(msg: Message) -> Vec<u8> {
    // Encoding a message built from valid parts cannot fail.
    msg.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xab, 0xcd, 0xef];

    fn reply(kind: MessageType, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut msg = Message::default();
        msg.set_opcode(Opcode::BootReply)
            .set_xid(xid)
            .set_yiaddr(Ipv4Addr::new(10, 0, 0, 50))
            .set_chaddr(&mac);
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        msg.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)));
        msg.opts_mut()
            .insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 254, 0)));
        msg.opts_mut()
            .insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 254)]));
        msg.to_vec().unwrap()
    }

    #[test]
    fn discover_and_request_carry_the_mac_the_transaction_and_the_chosen_server() {
        let msg = Message::from_bytes(&discover(MAC, 7)).unwrap();
        assert_eq!(msg.opcode(), Opcode::BootRequest);
        assert_eq!((msg.xid(), &msg.chaddr()[..6]), (7, &MAC[..]));
        assert!(msg.flags().broadcast());
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        let lease = Lease {
            address: Ipv4Addr::new(10, 0, 0, 50),
            prefix_len: 24,
            router: None,
            server: Ipv4Addr::new(10, 0, 0, 1),
        };
        let msg = Message::from_bytes(&request(MAC, 7, &lease)).unwrap();
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            msg.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(lease.address))
        );
        assert_eq!(
            msg.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(lease.server))
        );
    }

    #[test]
    fn replies_to_this_transaction_give_the_lease_and_others_are_ignored() {
        let lease = Lease {
            address: Ipv4Addr::new(10, 0, 0, 50),
            prefix_len: 23,
            router: Some(Ipv4Addr::new(10, 0, 0, 254)),
            server: Ipv4Addr::new(10, 0, 0, 1),
        };
        assert_eq!(
            parse_reply(&reply(MessageType::Offer, 7, MAC), MAC, 7),
            Some(Reply::Offer(lease.clone()))
        );
        assert_eq!(
            parse_reply(&reply(MessageType::Ack, 7, MAC), MAC, 7),
            Some(Reply::Ack(lease))
        );
        assert_eq!(
            parse_reply(&reply(MessageType::Nak, 7, MAC), MAC, 7),
            Some(Reply::Nak)
        );
        assert_eq!(
            parse_reply(&reply(MessageType::Offer, 8, MAC), MAC, 7),
            None
        );
        let other = [0x52, 0x54, 0, 0, 0, 1];
        assert_eq!(
            parse_reply(&reply(MessageType::Offer, 7, other), MAC, 7),
            None
        );
        assert_eq!(parse_reply(&discover(MAC, 7), MAC, 7), None);
        assert_eq!(parse_reply(b"junk", MAC, 7), None);
    }
}
