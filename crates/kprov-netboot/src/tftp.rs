//! TFTP, read-only: packets (RFC 1350), option negotiation (RFC 2347
//! blksize/RFC 2348, timeout and tsize/RFC 2349, windowsize/RFC 7440) and
//! the sender's window, all pure. Block numbers wrap from 65535 to 0 for
//! files of more than 65535 blocks, as tftp-hpa and curl expect.

use std::time::Duration;

/// Error codes of RFC 1350 (and 8 of RFC 2347).
pub mod code {
    /// Not defined.
    pub const UNDEFINED: u16 = 0;
    /// File not found.
    pub const NOT_FOUND: u16 = 1;
    /// Access violation.
    pub const ACCESS: u16 = 2;
    /// Illegal operation.
    pub const ILLEGAL: u16 = 4;
    /// Unknown transfer ID.
    pub const UNKNOWN_TID: u16 = 5;
    /// Option negotiation refused.
    pub const OPTIONS: u16 = 8;
}

/// A TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read request: file, mode, options (names lower-cased).
    Read {
        /// The file name.
        file: String,
        /// netascii or octet.
        mode: String,
        /// Options in request order.
        options: Vec<(String, String)>,
    },
    /// Write request (refused: the server is read-only).
    Write,
    /// Data block.
    Data {
        /// Block number.
        block: u16,
        /// Payload.
        data: Vec<u8>,
    },
    /// Acknowledgement.
    Ack {
        /// Block number.
        block: u16,
    },
    /// Error.
    Error {
        /// Error code.
        code: u16,
        /// Message.
        message: String,
    },
    /// Option acknowledgement.
    OptionAck {
        /// Accepted options.
        options: Vec<(String, String)>,
    },
}

/// Why a packet did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than its fixed fields.
    #[error("truncated packet")]
    Truncated,
    /// Unknown opcode.
    #[error("unknown opcode {0}")]
    Opcode(u16),
    /// A string field is not NUL-terminated UTF-8.
    #[error("malformed string field")]
    String,
}

fn strings(body: &[u8]) -> Result<Vec<String>, ParseError> {
    if body.last() != Some(&0) {
        return Err(ParseError::String);
    }
    body[..body.len() - 1]
        .split(|b| *b == 0)
        .map(|s| {
            std::str::from_utf8(s)
                .map(str::to_string)
                .map_err(|_| ParseError::String)
        })
        .collect()
}

fn pairs(items: &[String]) -> Vec<(String, String)> {
    items
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_ascii_lowercase(), c[1].clone()))
        .collect()
}

impl Packet {
    /// Parses a datagram.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        if bytes.len() < 2 {
            return Err(ParseError::Truncated);
        }
        let op = u16::from_be_bytes([bytes[0], bytes[1]]);
        let body = &bytes[2..];
        if matches!(op, 3..=5) && bytes.len() < 4 {
            return Err(ParseError::Truncated);
        }
        let num =
            u16::from_be_bytes([bytes[2.min(bytes.len() - 1)], bytes[3.min(bytes.len() - 1)]]);
        Ok(match op {
            1 => {
                let s = strings(body)?;
                if s.len() < 2 {
                    return Err(ParseError::String);
                }
                Packet::Read {
                    file: s[0].clone(),
                    mode: s[1].to_ascii_lowercase(),
                    options: pairs(&s[2..]),
                }
            }
            2 => Packet::Write,
            3 => Packet::Data {
                block: num,
                data: bytes[4..].to_vec(),
            },
            4 => Packet::Ack { block: num },
            5 => Packet::Error {
                code: num,
                message: strings(&bytes[4..])
                    .ok()
                    .and_then(|s| s.into_iter().next())
                    .unwrap_or_default(),
            },
            6 if body.is_empty() => Packet::OptionAck { options: vec![] },
            6 => Packet::OptionAck {
                options: pairs(&strings(body)?),
            },
            other => return Err(ParseError::Opcode(other)),
        })
    }

    /// Encodes the packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        };
        match self {
            Packet::Read {
                file,
                mode,
                options,
            } => {
                out.extend_from_slice(&1u16.to_be_bytes());
                put_str(&mut out, file);
                put_str(&mut out, mode);
                for (k, v) in options {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
            Packet::Write => out.extend_from_slice(&2u16.to_be_bytes()),
            Packet::Data { block, data } => {
                out.extend_from_slice(&3u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
                out.extend_from_slice(data);
            }
            Packet::Ack { block } => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&block.to_be_bytes());
            }
            Packet::Error { code, message } => {
                out.extend_from_slice(&5u16.to_be_bytes());
                out.extend_from_slice(&code.to_be_bytes());
                put_str(&mut out, message);
            }
            Packet::OptionAck { options } => {
                out.extend_from_slice(&6u16.to_be_bytes());
                for (k, v) in options {
                    put_str(&mut out, k);
                    put_str(&mut out, v);
                }
            }
        }
        out
    }
}

/// Writes a DATA packet header + payload into `buf` (reused between
/// sends, to avoid an allocation per block).
pub fn encode_data(buf: &mut Vec<u8>, block: u16, data: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&3u16.to_be_bytes());
    buf.extend_from_slice(&block.to_be_bytes());
    buf.extend_from_slice(data);
}

/// The transfer parameters after negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size.
    pub blksize: usize,
    /// Retransmission timeout.
    pub timeout: Duration,
    /// Blocks sent before waiting for an ACK.
    pub windowsize: u16,
    /// Options to acknowledge (empty: no OACK, start with block 1).
    pub accepted: Vec<(String, String)>,
}

/// The largest block size accepted: one that fits an Ethernet frame is
/// what clients ask for (1468), but RFC 2348 allows up to 65464.
pub const MAX_BLKSIZE: usize = 65464;
/// The largest window accepted.
pub const MAX_WINDOW: u16 = 64;

/// Negotiates the request's options for a file of `size` bytes. Unknown
/// or out-of-range options are left out of the OACK (RFC 2347: the server
/// may ignore them), so the client falls back to the defaults. A timeout
/// over `max_timeout` seconds is one of them: a client must not make a
/// transfer wait up to 255 s per retry (RFC 2349 lets the server only
/// accept the value as asked, or leave it out).
pub fn negotiate(options: &[(String, String)], size: u64, max_timeout: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: 512,
        timeout: Duration::from_secs(1),
        windowsize: 1,
        accepted: Vec::new(),
    };
    for (name, value) in options {
        match name.as_str() {
            "blksize" => {
                if let Ok(v) = value.parse::<usize>() {
                    if v >= 8 {
                        n.blksize = v.min(MAX_BLKSIZE);
                        n.accepted.push((name.clone(), n.blksize.to_string()));
                    }
                }
            }
            "timeout" => {
                if let Ok(v) = value.parse::<u64>() {
                    if (1..=max_timeout.min(255)).contains(&v) {
                        n.timeout = Duration::from_secs(v);
                        n.accepted.push((name.clone(), v.to_string()));
                    }
                }
            }
            "tsize" => n.accepted.push((name.clone(), size.to_string())),
            "windowsize" => {
                if let Ok(v) = value.parse::<u16>() {
                    if v >= 1 {
                        n.windowsize = v.min(MAX_WINDOW);
                        n.accepted.push((name.clone(), n.windowsize.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    n
}

/// The sender's side of one read transfer: which blocks to send next and
/// what an ACK means. Blocks are counted from 1 without wrapping inside;
/// the wire number is `block as u16`.
#[derive(Debug, Clone)]
pub struct Sender {
    blksize: u64,
    window: u64,
    /// The number of the last block (the one shorter than blksize).
    last_block: u64,
    /// Every block up to this one is acknowledged.
    acked: u64,
}

impl Sender {
    /// A transfer of `size` bytes.
    pub fn new(size: u64, blksize: usize, window: u16) -> Self {
        let blksize = blksize as u64;
        Self {
            blksize,
            window: u64::from(window.max(1)),
            last_block: size / blksize + 1,
            acked: 0,
        }
    }

    /// The blocks of the current window: (block, byte offset, length).
    pub fn window(&self, size: u64) -> impl Iterator<Item = (u64, u64, usize)> + '_ {
        let first = self.acked + 1;
        let last = (self.acked + self.window).min(self.last_block);
        (first..=last).map(move |b| {
            let offset = (b - 1) * self.blksize;
            let len = size.saturating_sub(offset).min(self.blksize) as usize;
            (b, offset, len)
        })
    }

    /// Applies an ACK's wire block number. Returns true if it advanced the
    /// window. ACKs outside the window in flight (duplicates, stale) are
    /// ignored; the wire number is mapped to the in-flight block it
    /// stands for, which handles the wrap at 65535.
    pub fn ack(&mut self, wire: u16) -> bool {
        for b in (self.acked + 1)..=(self.acked + self.window).min(self.last_block) {
            if b as u16 == wire {
                self.acked = b;
                return true;
            }
        }
        false
    }

    /// Whether the last block has been acknowledged.
    pub fn done(&self) -> bool {
        self.acked >= self.last_block
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn packets_round_trip() {
        let packets = [
            Packet::Read {
                file: "undionly.kpxe".into(),
                mode: "octet".into(),
                options: vec![
                    ("blksize".into(), "1468".into()),
                    ("tsize".into(), "0".into()),
                ],
            },
            Packet::Data {
                block: 7,
                data: vec![1, 2, 3],
            },
            Packet::Ack { block: 65535 },
            Packet::Error {
                code: 1,
                message: "no such file".into(),
            },
            Packet::OptionAck {
                options: vec![("blksize".into(), "1468".into())],
            },
        ];
        for p in packets {
            assert_eq!(Packet::parse(&p.encode()).unwrap(), p);
        }
        assert_eq!(
            Packet::parse(b"\x00\x01a\x00OCTET\x00BlkSize\x001024\x00").unwrap(),
            Packet::Read {
                file: "a".into(),
                mode: "octet".into(),
                options: vec![("blksize".into(), "1024".into())],
            }
        );
        for bad in [
            &b""[..],
            b"\x00\x01",
            b"\x00\x01abc",
            b"\x00\x09\x00\x00",
            b"\x00\x01a\x00",
            b"\x00\x01\xff\x00octet\x00",
        ] {
            assert!(Packet::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_are_negotiated_within_limits() {
        let opts = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let n = negotiate(
            &opts(&[
                ("blksize", "1468"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("windowsize", "16"),
                ("foo", "1"),
            ]),
            5000,
            5,
        );
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.timeout, Duration::from_secs(3));
        assert_eq!(n.windowsize, 16);
        assert_eq!(
            n.accepted,
            opts(&[
                ("blksize", "1468"),
                ("tsize", "5000"),
                ("timeout", "3"),
                ("windowsize", "16")
            ])
        );
        let n = negotiate(
            &opts(&[
                ("blksize", "100000"),
                ("windowsize", "1000"),
                ("timeout", "0"),
                ("blksize", "x"),
            ]),
            1,
            5,
        );
        assert_eq!(n.blksize, MAX_BLKSIZE);
        assert_eq!(n.windowsize, MAX_WINDOW);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert_eq!(negotiate(&[], 1, 5).accepted, vec![]);
        // A timeout over the cap is left out: the default of 1 s holds.
        let n = negotiate(&opts(&[("timeout", "255"), ("tsize", "0")]), 7, 5);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert_eq!(n.accepted, opts(&[("tsize", "7")]));
    }

    #[test]
    fn the_window_advances_on_acks_and_wraps_block_numbers() {
        // 1000 bytes at 512: blocks 1 (512) and 2 (488).
        let mut s = Sender::new(1000, 512, 4);
        assert_eq!(
            s.window(1000).collect::<Vec<_>>(),
            vec![(1, 0, 512), (2, 512, 488)]
        );
        assert!(!s.ack(3));
        assert!(s.ack(2));
        assert!(s.done());
        // An exact multiple ends with an empty block.
        let mut s = Sender::new(1024, 512, 1);
        assert!(s.ack(1) && s.ack(2));
        assert_eq!(s.window(1024).collect::<Vec<_>>(), vec![(3, 1024, 0)]);
        assert!(!s.ack(2), "duplicate ACK");
        assert!(s.ack(3) && s.done());
        // Past 65535 blocks the wire number wraps to 0.
        let size = 70_000 * 8;
        let mut s = Sender::new(size, 8, 2);
        for b in 1..=65_535u64 {
            assert!(s.ack(b as u16), "{b}");
        }
        assert_eq!(s.window(size).next().unwrap().0, 65_536);
        assert!(s.ack(0));
        assert!(s.ack(1));
        assert_eq!(s.window(size).next().unwrap().0, 65_538);
    }
}
