//! Bounds on what clients can hold: the caps that fit the process's
//! file-descriptor limit ([`caps`], pure), connection slots per address
//! ([`AddressSlots`]), and streams that end when no byte moves for a while
//! ([`IdleStream`]).
//!
//! Without them 70 half-sent HTTP requests took every descriptor of a
//! small host and locked real clients out, and silent TFTP requests held
//! the blocking threads that file downloads need.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::Limits;

/// Descriptors kept for everything but client connections and transfers
/// (sockets of the servers, state files, the runtime).
pub const RESERVED_FDS: u64 = 64;

/// The caps in force: the configured ones, lowered to fit the descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// HTTP connections at once.
    pub http_connections: usize,
    /// HTTP connections at once from one address.
    pub http_per_address: usize,
    /// Time to send a request head.
    pub http_header_timeout: Duration,
    /// Time a connection may sit without traffic.
    pub http_idle_timeout: Duration,
    /// TFTP requests waiting for their first acknowledgement.
    pub tftp_pending: usize,
    /// TFTP transfers sending.
    pub tftp_transfers: usize,
    /// The largest TFTP timeout option accepted, in seconds.
    pub tftp_max_timeout: u64,
}

/// The caps for `limits` under a limit of `fds` open descriptors: an HTTP
/// connection may hold two (socket and file), a pending TFTP request one
/// (its socket), a TFTP transfer two; together they get at most three
/// quarters of what is left after [`RESERVED_FDS`]. One address gets at
/// most a quarter of the HTTP connections.
pub fn caps(limits: &Limits, fds: u64) -> Caps {
    let budget = usize::try_from(fds.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    let http_connections = limits.http_max_connections.min((budget / 4).max(1));
    Caps {
        http_connections,
        http_per_address: limits
            .http_max_connections_per_address
            .min((http_connections / 4).max(1)),
        http_header_timeout: Duration::from_secs(limits.http_header_timeout_seconds),
        http_idle_timeout: Duration::from_secs(limits.http_idle_timeout_seconds),
        tftp_pending: limits.tftp_max_pending.min((budget / 8).max(1)),
        tftp_transfers: limits.tftp_max_transfers.min((budget / 16).max(1)),
        tftp_max_timeout: limits.tftp_max_timeout_seconds,
    }
}

/// Raises the soft limit of open descriptors to the hard one (as servers
/// do) and returns the limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Connections per address, each counted while its [`AddressSlot`] lives.
#[derive(Debug)]
pub struct AddressSlots {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`AddressSlots`]; freed on drop.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    ip: IpAddr,
}

impl AddressSlots {
    /// At most `max` per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or None when it holds `max` already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// How many connections `ip` holds.
    pub fn held(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way
/// for `idle` while it is being read or written: a keep-alive connection
/// nobody uses, or a client that stopped reading.
#[derive(Debug)]
pub struct IdleStream<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// Ready(error) once the deadline has passed (and registers the
    /// waker otherwise).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "connection idle too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.moved();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_fit_the_descriptor_limit() {
        let limits = Limits::default();
        let roomy = caps(&limits, 1 << 20);
        assert_eq!(
            (
                roomy.http_connections,
                roomy.http_per_address,
                roomy.tftp_pending,
                roomy.tftp_transfers
            ),
            (1024, 64, 256, 64)
        );
        // 80 descriptors: 16 to share.
        let tight = caps(&limits, 80);
        assert_eq!(
            (
                tight.http_connections,
                tight.http_per_address,
                tight.tftp_pending,
                tight.tftp_transfers
            ),
            (4, 1, 2, 1)
        );
        let none = caps(&limits, 10);
        assert_eq!((none.http_connections, none.tftp_transfers), (1, 1));
        assert_eq!(tight.http_header_timeout, Duration::from_secs(10));
        assert_eq!(tight.tftp_max_timeout, 5);
    }

    #[test]
    fn an_address_holds_at_most_its_share_of_slots() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.enter(a).unwrap();
        let _second = slots.enter(a).unwrap();
        assert!(slots.enter(a).is_none());
        assert!(slots.enter(b).is_some());
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.enter(a).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_times_out_and_a_busy_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(64);
        let mut server = IdleStream::new(server, Duration::from_secs(5));
        let mut client = client;
        let mut buf = [0u8; 4];
        // Traffic every 3 s keeps it open past 5 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            client.write_all(b"ping").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
        }
        let start = Instant::now();
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
