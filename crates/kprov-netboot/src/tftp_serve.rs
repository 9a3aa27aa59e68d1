//! TFTP serving (side effects): the request loop on port 69 and one
//! transfer per read request, bounded so that silent clients cannot hold
//! the server.
//!
//! A transfer has two stages:
//! - the first exchange (the option acknowledgement, or block 1, and its
//!   ACK) runs as a cheap async task with its own socket; at most
//!   `limits.tftpMaxPending` of them wait at once (requests beyond that
//!   are dropped: clients send theirs again), and a client that stays
//!   silent is given up after three tries;
//! - once the client has answered, the bulk of the file is sent on a
//!   blocking thread (a strict send/wait loop with a plain socket costs
//!   three system calls per block and no wakeups of the async runtime,
//!   which keeps parallel transfers fast on few cores); at most
//!   `limits.tftpMaxTransfers` run at once, so the blocking pool stays
//!   free for HTTP file bodies.
//!
//! Retransmission waits are the negotiated timeout, which is capped
//! (`limits.tftpMaxTimeoutSeconds`), with five retries: a stalled
//! transfer ends within six timeouts. File names and client messages are
//! logged escaped (`?` formatting), so a newline cannot forge a log line.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::add;
use crate::paths::{resolve_under, ResolveError};
use crate::server::Shared;
use crate::tftp::{code, encode_data, negotiate, Negotiated, Packet, Sender};

/// Sends of the first packet before a silent client is given up.
const FIRST_TRIES: u32 = 3;
/// Retries of a stalled window.
const RETRIES: u32 = 5;
/// How long an answered transfer waits for a sending slot.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// Answers read requests on `sock` until it fails.
pub async fn tftp_loop(shared: Arc<Shared>, sock: UdpSocket) {
    let caps = shared.caps;
    let pending = Arc::new(Semaphore::new(caps.tftp_pending));
    let sending = Arc::new(Semaphore::new(caps.tftp_transfers));
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("TFTP receive: {e}");
                continue;
            }
        };
        match Packet::parse(&buf[..n]) {
            Ok(Packet::Read {
                file,
                mode,
                options,
            }) => {
                let Ok(permit) = pending.clone().try_acquire_owned() else {
                    add(&shared.metrics.tftp_errors, 1);
                    tracing::debug!(peer = %peer, file = ?file, "TFTP request dropped: {} requests already wait for their first acknowledgement", caps.tftp_pending);
                    continue;
                };
                tokio::spawn(transfer(
                    shared.clone(),
                    sending.clone(),
                    permit,
                    peer,
                    file,
                    mode,
                    options,
                ));
            }
            Ok(Packet::Write) => {
                add(&shared.metrics.tftp_errors, 1);
                tracing::warn!(peer = %peer, "TFTP write refused");
                let e = Packet::Error {
                    code: code::ACCESS,
                    message: "read-only server".into(),
                };
                let _ = sock.send_to(&e.encode(), peer).await;
            }
            Ok(_) | Err(_) => {
                tracing::debug!(peer = %peer, "TFTP: not a request on port {}", shared.config.ports.tftp);
            }
        }
    }
}

async fn transfer(
    shared: Arc<Shared>,
    sending: Arc<Semaphore>,
    pending: OwnedSemaphorePermit,
    peer: SocketAddr,
    file: String,
    mode: String,
    options: Vec<(String, String)>,
) {
    let result = run(&shared, sending, pending, peer, &file, &mode, &options).await;
    match result {
        Ok(bytes) => {
            add(&shared.metrics.tftp_transfers, 1);
            add(&shared.metrics.tftp_bytes, bytes);
            tracing::info!(peer = %peer, file = ?file, bytes, "TFTP sent");
        }
        Err(e) => {
            add(&shared.metrics.tftp_errors, 1);
            tracing::warn!(peer = %peer, file = ?file, "TFTP: {e}");
        }
    }
}

/// The first exchange, async; then the bulk on a blocking thread.
async fn run(
    shared: &Arc<Shared>,
    sending: Arc<Semaphore>,
    pending: OwnedSemaphorePermit,
    peer: SocketAddr,
    file: &str,
    mode: &str,
    options: &[(String, String)],
) -> Result<u64, String> {
    let sock = UdpSocket::bind(SocketAddrV4::new(shared.config.server_address, 0))
        .await
        .map_err(|e| format!("socket: {e}"))?;
    sock.connect(peer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let refuse = |code: u16, message: String| {
        let packet = Packet::Error {
            code,
            message: message.clone(),
        }
        .encode();
        let sock = &sock;
        async move {
            let _ = sock.send(&packet).await;
            Err::<u64, String>(message)
        }
    };
    if mode != "octet" && mode != "netascii" {
        return refuse(code::ILLEGAL, format!("unsupported mode {mode:?}")).await;
    }
    let path = match resolve_under(&shared.tftp_root, file) {
        Ok(p) => p,
        Err(e @ ResolveError::NotFound(_)) => return refuse(code::NOT_FOUND, e.to_string()).await,
        Err(e) => return refuse(code::ACCESS, e.to_string()).await,
    };
    let f = std::fs::File::open(&path).map_err(|e| format!("open: {e}"))?;
    let size = f
        .metadata()
        .map(|m| m.len())
        .map_err(|e| format!("stat: {e}"))?;
    let n = negotiate(options, size, shared.caps.tftp_max_timeout);
    let mut sender = Sender::new(size, n.blksize, n.windowsize);

    // The first exchange: OACK and ACK 0, or block 1 and its ACK.
    let oack = !n.accepted.is_empty();
    let first = if oack {
        Packet::OptionAck {
            options: n.accepted.clone(),
        }
        .encode()
    } else {
        let mut packet = Vec::new();
        let len = size.min(n.blksize as u64) as usize;
        let mut block = vec![0u8; len];
        f.read_exact_at(&mut block, 0)
            .map_err(|e| format!("read: {e}"))?;
        encode_data(&mut packet, 1, &block);
        packet
    };
    let mut answered = false;
    let mut buf = vec![0u8; 1024];
    for _ in 0..FIRST_TRIES {
        sock.send(&first).await.map_err(|e| format!("send: {e}"))?;
        let deadline = tokio::time::Instant::now() + n.timeout;
        loop {
            let got = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await;
            let Ok(Ok(len)) = got else { break };
            match Packet::parse(&buf[..len]) {
                Ok(Packet::Ack { block: 0 }) if oack => answered = true,
                Ok(Packet::Ack { block }) if !oack => answered = sender.ack(block),
                Ok(Packet::Error { message, .. }) => {
                    return Err(format!("client ended the transfer: {message:?}"))
                }
                _ => {}
            }
            if answered {
                break;
            }
        }
        if answered {
            break;
        }
    }
    if !answered {
        return Err(format!(
            "no acknowledgement of the first packet after {FIRST_TRIES} tries: client silent"
        ));
    }
    drop(pending);
    if sender.done() {
        return Ok(size);
    }
    let slot = match tokio::time::timeout(SLOT_WAIT, sending.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return refuse(
                code::UNDEFINED,
                format!(
                    "server busy: {} transfers running",
                    shared.caps.tftp_transfers
                ),
            )
            .await
        }
    };
    let sock = sock.into_std().map_err(|e| format!("socket: {e}"))?;
    sock.set_nonblocking(false)
        .map_err(|e| format!("socket: {e}"))?;
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        bulk(&sock, &f, size, &n, &mut sender)
    })
    .await
    .unwrap_or_else(|e| Err(format!("transfer task: {e}")))
    .map(|()| size)
}

/// Sends the rest of the file, window by window, until the last block is
/// acknowledged.
fn bulk(
    sock: &std::net::UdpSocket,
    f: &std::fs::File,
    size: u64,
    n: &Negotiated,
    sender: &mut Sender,
) -> Result<(), String> {
    let send = |bytes: &[u8]| {
        sock.send(bytes)
            .map(|_| ())
            .map_err(|e| format!("send: {e}"))
    };
    let mut recv = vec![0u8; 1024];
    let mut block = vec![0u8; n.blksize];
    let mut packet = Vec::with_capacity(n.blksize + 4);
    let mut tries = 0;
    while !sender.done() {
        let window: Vec<_> = sender.window(size).collect();
        for (b, offset, len) in window {
            f.read_exact_at(&mut block[..len], offset)
                .map_err(|e| format!("read: {e}"))?;
            encode_data(&mut packet, b as u16, &block[..len]);
            send(&packet)?;
        }
        // Wait for an ACK that moves the window (duplicates are ignored).
        let deadline = std::time::Instant::now() + n.timeout;
        let advanced = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match recv_packet(sock, &mut recv, left) {
                Some(Packet::Ack { block }) => {
                    if sender.ack(block) {
                        break true;
                    }
                }
                Some(Packet::Error { message, .. }) => {
                    return Err(format!("client ended the transfer: {message:?}"))
                }
                Some(_) => {}
                None => break false,
            }
        };
        if advanced {
            tries = 0;
        } else {
            tries += 1;
            if tries > RETRIES {
                return Err("client stopped acknowledging".into());
            }
        }
    }
    Ok(())
}

/// The next parseable packet within `wait`, or None on timeout.
fn recv_packet(sock: &std::net::UdpSocket, buf: &mut [u8], wait: Duration) -> Option<Packet> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match sock.recv(buf) {
            Ok(n) => {
                if let Ok(p) = Packet::parse(&buf[..n]) {
                    return Some(p);
                }
            }
            Err(_) => return None,
        }
    }
}
