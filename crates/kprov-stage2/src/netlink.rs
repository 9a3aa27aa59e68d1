//! The three rtnetlink requests stage2 needs to configure its interface,
//! as bytes: set a link up, add an IPv4 address, add a default route.
//! Each asks for an acknowledgement. Linux's `rtnetlink(7)`.

use std::net::Ipv4Addr;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
/// `NLMSG_ERROR`: the kernel's answer, error 0 being the acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_DHCP: u8 = 16;
const RTN_UNICAST: u8 = 1;

/// Sets interface `index` up.
pub fn link_up(index: u32, seq: u32) -> Vec<u8> {
    // ifinfomsg: family AF_UNSPEC, type, index, flags, the flags to change.
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes());
    message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)
}

/// Adds `address/prefix_len` to interface `index` (replacing it if there).
pub fn add_address(index: u32, address: Ipv4Addr, prefix_len: u8, seq: u32) -> Vec<u8> {
    let mut body = vec![AF_INET, prefix_len, 0, 0];
    body.extend_from_slice(&index.to_ne_bytes());
    attribute(&mut body, IFA_LOCAL, &address.octets());
    attribute(&mut body, IFA_ADDRESS, &address.octets());
    message(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        body,
    )
}

/// Adds (or replaces) the default route via `gateway` on interface `index`.
pub fn add_default_route(index: u32, gateway: Ipv4Addr, seq: u32) -> Vec<u8> {
    let body_head = [AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, 0, RTN_UNICAST];
    let mut body = body_head.to_vec();
    body.extend_from_slice(&0u32.to_ne_bytes());
    attribute(&mut body, RTA_GATEWAY, &gateway.octets());
    attribute(&mut body, RTA_OIF, &index.to_ne_bytes());
    message(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        body,
    )
}

/// The kernel's answer to request `seq` in `reply`: `Some(0)` for the
/// acknowledgement, `Some(-errno)` for a refusal, `None` when `reply`
/// holds no answer to it.
pub fn answer(reply: &[u8], seq: u32) -> Option<i32> {
    let mut at = 0;
    while at + 16 <= reply.len() {
        let len = u32::from_ne_bytes(reply[at..at + 4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().ok()?);
        let got = u32::from_ne_bytes(reply[at + 8..at + 12].try_into().ok()?);
        if len < 16 || at + len > reply.len() {
            return None;
        }
        if kind == NLMSG_ERROR && got == seq && len >= 20 {
            return Some(i32::from_ne_bytes(reply[at + 16..at + 20].try_into().ok()?));
        }
        at += len.div_ceil(4) * 4;
    }
    None
}

fn attribute(body: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    body.extend_from_slice(&(len as u16).to_ne_bytes());
    body.extend_from_slice(&kind.to_ne_bytes());
    body.extend_from_slice(data);
    body.resize(body.len().div_ceil(4) * 4, 0);
}

fn message(kind: u16, flags: u16, seq: u32, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_header_of_their_length_and_padded_attributes() {
        let up = link_up(3, 1);
        assert_eq!(up.len(), 32);
        assert_eq!(u32::from_ne_bytes(up[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(up[4..6].try_into().unwrap()),
            RTM_NEWLINK
        );
        let addr = add_address(3, Ipv4Addr::new(10, 0, 0, 50), 24, 2);
        // header 16 + ifaddrmsg 8 + two 8-byte attributes.
        assert_eq!(addr.len(), 40);
        assert_eq!(addr[16..18], [AF_INET, 24]);
        assert_eq!(addr[24..32], [8, 0, 2, 0, 10, 0, 0, 50][..]);
        let route = add_default_route(3, Ipv4Addr::new(10, 0, 0, 254), 3);
        // header 16 + rtmsg 12 + gateway 8 + oif 8.
        assert_eq!(route.len(), 44);
        assert_eq!(route[16 + 4], RT_TABLE_MAIN);
    }

    #[test]
    fn the_answer_to_a_request_is_found_by_its_sequence_number() {
        let mut ack = message(NLMSG_ERROR, 0, 7, 0i32.to_ne_bytes().to_vec());
        ack.extend(message(NLMSG_ERROR, 0, 8, (-17i32).to_ne_bytes().to_vec()));
        assert_eq!(answer(&ack, 7), Some(0));
        assert_eq!(answer(&ack, 8), Some(-17));
        assert_eq!(answer(&ack, 9), None);
        assert_eq!(answer(&[1, 2, 3], 7), None);
    }
}
