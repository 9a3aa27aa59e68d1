//! IPv6 router advertisements with router lifetime 0: "there is no IPv6
//! router here". iPXE otherwise waits about 13 s for IPv6 configuration
//! before it boots over IPv4; with one of these it goes on at once.

/// An ICMPv6 Router Advertisement (RFC 4861, 4.2) with every field zero:
/// no hop limit advice, no managed/other flags, router lifetime 0, no
/// options. The kernel fills in the checksum of raw ICMPv6 sockets.
pub fn lifetime_zero_advertisement() -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 134; // type: Router Advertisement
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_says_no_router() {
        let p = lifetime_zero_advertisement();
        assert_eq!(p[0], 134);
        assert_eq!(u16::from_be_bytes([p[6], p[7]]), 0, "router lifetime");
        assert_eq!(p.len(), 16);
    }
}
