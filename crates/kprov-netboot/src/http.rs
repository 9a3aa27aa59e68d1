//! The HTTP side: routing (pure: a request path to a [`Route`]), byte
//! ranges (pure: [`parse_range`]), and the hyper service that answers
//! with scripts, NoCloud documents, files and metrics.
//!
//! - `/boot/<mac>/<token>.ipxe`: the machine's iPXE script, to the
//!   machine's own address with the script token of its DHCP reply;
//! - `/files/<path>`: kernels, initrds and images under the HTTP root,
//!   with `Range`;
//! - `/machines/<mac>/<token>/{meta-data,user-data,vendor-data}`: NoCloud,
//!   to the machine's own address with its newest seed token (404 unknown
//!   MAC, 403 another address or a bad token, 410 user-data that is gone);
//! - `POST /machines/<mac>/<token>/installed`: the stage2 report;
//! - `/metrics`: Prometheus text.
//!
//! The rules for per-machine data are in [`crate::state`]; this module
//! gathers what they need (the machine, its lease, its epoch, the clock).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use crate::ipxe::{meta_data, render_script};
use crate::machine::{Boot, MacAddr};
use crate::metrics::add;
use crate::paths::{resolve_under, ResolveError};
use crate::server::Shared;
use crate::state::{Doc, ScriptKind};

/// A response body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The iPXE script of a MAC, with the script token.
    Script {
        /// The machine.
        mac: MacAddr,
        /// The token given.
        token: String,
    },
    /// The old script URL without a token: refused.
    ScriptWithoutToken(MacAddr),
    /// A file under the HTTP root (the path as requested).
    File(String),
    /// A NoCloud document.
    NoCloud {
        /// The machine.
        mac: MacAddr,
        /// The token given.
        token: String,
        /// meta-data, user-data or vendor-data.
        doc: Doc,
    },
    /// The stage2 "installed" report (POST).
    Installed {
        /// The machine.
        mac: MacAddr,
        /// The token given.
        token: String,
    },
    /// The metrics.
    Metrics,
    /// This server's own kprov binary (what setup.sh fetches by default
    /// in the user-data netboot makes).
    OwnBinary,
    /// Nothing we serve.
    NotFound,
}

/// Routes a path (without the query).
pub fn route(path: &str) -> Route {
    if path == "/metrics" {
        return Route::Metrics;
    }
    if path == crate::kube_join::OWN_BINARY_PATH {
        return Route::OwnBinary;
    }
    if let Some(rest) = path.strip_prefix("/boot/") {
        let Some(rest) = rest.strip_suffix(".ipxe") else {
            return Route::NotFound;
        };
        return match rest.split('/').collect::<Vec<_>>()[..] {
            [mac] => match mac.parse() {
                Ok(mac) => Route::ScriptWithoutToken(mac),
                Err(_) => Route::NotFound,
            },
            [mac, token] if !token.is_empty() => match mac.parse() {
                Ok(mac) => Route::Script {
                    mac,
                    token: token.to_string(),
                },
                Err(_) => Route::NotFound,
            },
            _ => Route::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/files/") {
        return Route::File(rest.to_string());
    }
    if let Some(rest) = path.strip_prefix("/machines/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [mac, token, what] = parts[..] {
            let Ok(mac) = mac.parse() else {
                return Route::NotFound;
            };
            let token = token.to_string();
            let doc = match what {
                "meta-data" => Doc::MetaData,
                "user-data" => Doc::UserData,
                "vendor-data" => Doc::VendorData,
                "installed" => return Route::Installed { mac, token },
                _ => return Route::NotFound,
            };
            return Route::NoCloud { mac, token, doc };
        }
    }
    Route::NotFound
}

/// A `Range` header resolved against a file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No (usable) range: the whole file.
    Full,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Outside the file: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range (multi-range requests get the whole
/// file, which RFC 9110 allows).
pub fn parse_range(header: Option<&str>, size: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), _) if start >= size => RangeReq::Unsatisfiable,
        (Ok(start), Ok(end)) if end >= start => RangeReq::Part(start, end.min(size - 1)),
        (Ok(start), Err(_)) if b.is_empty() => RangeReq::Part(start, size - 1),
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 || size == 0 {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part(size - n.min(size), size - 1)
            }
        }
        _ => RangeReq::Full,
    }
}

fn text(status: StatusCode, body: String, content_type: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Answers one request.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = answer(&shared, peer, &req, &path).await;
    let status = resp.status();
    if status.is_success() {
        add(&shared.metrics.http_ok, 1);
    } else {
        add(&shared.metrics.http_errors, 1);
    }
    Ok(resp)
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN)
}

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: &Request<Incoming>,
    path: &str,
) -> Response<Body> {
    let route = route(path);
    let allowed: &[Method] = match route {
        Route::Installed { .. } => &[Method::POST],
        Route::Script { .. } | Route::NoCloud { .. } => &[Method::GET],
        _ => &[Method::GET, Method::HEAD],
    };
    if !allowed.contains(req.method()) {
        let names: Vec<&str> = allowed.iter().map(Method::as_str).collect();
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} only\n", names.join(" or ")),
            "text/plain",
        );
    }
    let base = shared.config.http_base();
    let unknown = |what: &str, mac: &MacAddr| {
        tracing::warn!(mac = %mac, peer = %peer, "{what} for an unknown MAC refused");
        text(
            StatusCode::NOT_FOUND,
            "unknown machine\n".into(),
            "text/plain",
        )
    };
    match route {
        Route::Metrics => text(
            StatusCode::OK,
            shared.metrics.render(shared.machines().len()) + &shared.phase_metrics(),
            "text/plain; version=0.0.4",
        ),
        Route::ScriptWithoutToken(mac) => {
            tracing::warn!(mac = %mac, peer = %peer, "iPXE script without a token refused");
            text(
                StatusCode::FORBIDDEN,
                "the script URL needs the token of this server's DHCP reply\n".into(),
                "text/plain",
            )
        }
        Route::Script { mac, token } => {
            let Some(m) = shared.machine_view(&mac) else {
                return unknown("iPXE script", &mac);
            };
            let kind = if m.profile.installed {
                ScriptKind::LocalDisk
            } else {
                match m.profile.boot {
                    Boot::Kernel { .. } => ScriptKind::Kernel,
                    Boot::Image { .. } => ScriptKind::Image,
                }
            };
            let ask = shared.ask(&mac, m.fixed, peer, &token);
            match shared.with_states(|s| s.open_script(&shared.tokens, &ask, &shared.policy, kind))
            {
                Ok(grant) => {
                    tracing::info!(mac = %mac, machine = %m.name, peer = %peer, boots = if grant.seed.is_some() { "network" } else { "local disk" }, "iPXE script served");
                    text(
                        StatusCode::OK,
                        render_script(
                            &m.name,
                            &mac,
                            &m.profile,
                            &base,
                            grant.seed.as_deref(),
                            shared.config.stage2.as_ref(),
                        ),
                        "text/plain",
                    )
                }
                Err(why) => {
                    tracing::warn!(mac = %mac, machine = %m.name, peer = %peer, reason = %why, "iPXE script refused");
                    text(status(why.status()), format!("{why}\n"), "text/plain")
                }
            }
        }
        Route::NoCloud { mac, token, doc } => {
            let Some(m) = shared.machine_view(&mac) else {
                return unknown("NoCloud request", &mac);
            };
            if m.awaits_join_data && doc == Doc::UserData {
                tracing::info!(mac = %mac, machine = %m.name, peer = %peer, "user-data asked for before its join data was made: 503");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "this machine's join data is being made: retry in a few seconds\n".into(),
                    "text/plain",
                );
            }
            let ask = shared.ask(&mac, m.fixed, peer, &token);
            let r = shared.with_states(|s| {
                s.open_doc(
                    &shared.tokens,
                    &ask,
                    doc,
                    &shared.policy,
                    m.profile.installed,
                )
            });
            if let Err(why) = r {
                tracing::warn!(mac = %mac, machine = %m.name, peer = %peer, doc = ?doc, reason = %why, "NoCloud request refused");
                return text(status(why.status()), format!("{why}\n"), "text/plain");
            }
            tracing::info!(mac = %mac, machine = %m.name, peer = %peer, doc = ?doc, "NoCloud document served");
            let body = match doc {
                Doc::MetaData => meta_data(&m.instance, m.hostname.as_deref()),
                Doc::UserData => m.profile.user_data.clone().unwrap_or_default(),
                Doc::VendorData => String::new(),
            };
            text(StatusCode::OK, body, "text/plain")
        }
        Route::Installed { mac, token } => {
            let Some(m) = shared.machine_view(&mac) else {
                return unknown("installed report", &mac);
            };
            let ask = shared.ask(&mac, m.fixed, peer, &token);
            match shared.with_states(|s| s.report_installed(&shared.tokens, &ask)) {
                Ok(()) => {
                    tracing::info!(mac = %mac, machine = %m.name, peer = %peer, "installed report: the script boots the local disk from now on");
                    let mut r = text(StatusCode::NO_CONTENT, String::new(), "text/plain");
                    r.headers_mut().remove(hyper::header::CONTENT_TYPE);
                    r
                }
                Err(why) => {
                    tracing::warn!(mac = %mac, machine = %m.name, peer = %peer, reason = %why, "installed report refused");
                    text(status(why.status()), format!("{why}\n"), "text/plain")
                }
            }
        }
        Route::File(rel) => serve_file(shared, peer, req, &rel).await,
        Route::OwnBinary => match std::fs::File::open("/proc/self/exe") {
            Ok(file) => serve_open_file(shared, peer, req, file, "kprov"),
            Err(e) => text(
                StatusCode::NOT_FOUND,
                format!("this server's binary: {e}\n"),
                "text/plain",
            ),
        },
        Route::NotFound => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
    }
}

async fn serve_file(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: &Request<Incoming>,
    rel: &str,
) -> Response<Body> {
    let real = match resolve_under(&shared.http_root, rel) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(peer = %peer, "HTTP {e}");
            let status = match e {
                ResolveError::NotFound(_) => StatusCode::NOT_FOUND,
                ResolveError::Refused(_) | ResolveError::Escapes(_) => StatusCode::FORBIDDEN,
            };
            return text(status, format!("{e}\n"), "text/plain");
        }
    };
    match std::fs::File::open(&real) {
        Ok(file) => serve_open_file(shared, peer, req, file, rel),
        Err(e) => text(StatusCode::NOT_FOUND, format!("{rel}: {e}\n"), "text/plain"),
    }
}

/// Answers with `file` (`what` names it in the log): whole, or the
/// range asked for.
fn serve_open_file(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: &Request<Incoming>,
    file: std::fs::File,
    what: &str,
) -> Response<Body> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let range = req
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, len) = match parse_range(range, size) {
        RangeReq::Full => (StatusCode::OK, 0, size),
        RangeReq::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeReq::Unsatisfiable => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                String::new(),
                "text/plain",
            );
            if let Ok(v) = format!("bytes */{size}").parse() {
                r.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    tracing::debug!(peer = %peer, file = ?what, start, len, "HTTP file");
    let body: Body = if req.method() == Method::HEAD {
        Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
    } else {
        file_body(file, start, len, shared.clone())
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_LENGTH, len.into());
    h.insert(
        hyper::header::ACCEPT_RANGES,
        hyper::header::HeaderValue::from_static("bytes"),
    );
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = format!("bytes {start}-{}/{size}", start + len - 1).parse() {
            h.insert(hyper::header::CONTENT_RANGE, v);
        }
    }
    r
}

/// Streams `len` bytes of `file` from `start`: a blocking task reads
/// large chunks (page cache) and hands them to the connection through a
/// small channel, so a slow client holds little memory.
fn file_body(file: std::fs::File, start: u64, len: u64, shared: Arc<Shared>) -> Body {
    const CHUNK: u64 = 512 * 1024;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = left.min(CHUNK);
            // read_to_end fills spare capacity without zeroing it first.
            let mut buf = Vec::with_capacity(want as usize);
            let item = match (&mut file).take(want).read_to_end(&mut buf) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shorter than its size",
                )),
                Ok(n) => {
                    left -= n as u64;
                    add(&shared.metrics.http_bytes, n as u64);
                    Ok(Frame::data(Bytes::from(buf)))
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    StreamBody::new(stream).boxed()
}

/// Accepts connections on `listener` until it fails: at most
/// `caps.http_connections` at once (the rest wait in the listen backlog)
/// and `caps.http_per_address` from one address (the rest get a 503 and
/// are closed at once).
pub async fn http_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let caps = shared.caps;
    let slots = Arc::new(tokio::sync::Semaphore::new(caps.http_connections));
    let per_address = crate::limits::AddressSlots::new(caps.http_per_address);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("HTTP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(place) = per_address.enter(peer.ip()) else {
            add(&shared.metrics.http_errors, 1);
            tracing::debug!(peer = %peer, "HTTP connection refused: {} connections from this address already", caps.http_per_address);
            tokio::spawn(async move {
                let _slot = slot;
                refuse_busy(stream).await;
            });
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _place = place;
            serve_connection(shared, stream, peer).await;
        });
    }
}

/// A 503 with `Connection: close`, written within a second, then close.
async fn refuse_busy(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let reply = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(reply).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// One connection: plain file downloads go to the sendfile path (after a
/// peek at the first bytes), everything else through hyper. A client
/// that sends nothing within the header timeout is closed; hyper closes
/// one whose request head is not complete by then, and [`IdleStream`]
/// one that moves no byte for the idle timeout (a keep-alive connection
/// nobody uses, or a client that stopped reading).
///
/// [`IdleStream`]: crate::limits::IdleStream
pub async fn serve_connection(
    shared: Arc<Shared>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let caps = shared.caps;
    let mut first = [0u8; 11];
    match tokio::time::timeout(caps.http_header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {
            if is_file_download(&first[..n]) {
                serve_file_connection(
                    shared,
                    stream,
                    peer,
                    caps.http_header_timeout,
                    caps.http_idle_timeout,
                )
                .await;
                return;
            }
        }
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(peer = %peer, "HTTP: nothing sent within {:?}: closed", caps.http_header_timeout);
            return;
        }
    }
    let io = hyper_util::rt::TokioIo::new(crate::limits::IdleStream::new(
        stream,
        caps.http_idle_timeout,
    ));
    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), peer, req));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(caps.http_header_timeout)
        .serve_connection(io, svc)
        .await
    {
        tracing::debug!(peer = %peer, "HTTP connection: {e}");
    }
}

/// Whether a connection's first bytes are a plain file download, which
/// [`serve_file_connection`] answers with sendfile(2) (the kernel copies
/// from the page cache to the socket). Anything else, or too few bytes to
/// tell, goes to hyper, which serves files too, through user space.
pub fn is_file_download(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(b"GET /files/")
}

/// The response head of the sendfile path (one request per connection).
pub fn file_response_head(status: StatusCode, start: u64, len: u64, size: u64) -> String {
    let mut h = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.push_str(&format!(
            "Content-Range: bytes {start}-{}/{size}\r\n",
            start + len - 1
        ));
    } else if status == StatusCode::RANGE_NOT_SATISFIABLE {
        h.push_str(&format!("Content-Range: bytes */{size}\r\n"));
    }
    if status.is_success() {
        h.push_str("Content-Type: application/octet-stream\r\n");
    } else {
        h.push_str("Content-Type: text/plain\r\n");
    }
    h.push_str("\r\n");
    h
}

/// Answers one `GET /files/...` on `stream` with sendfile(2), then closes
/// the connection. Same routing, path checks and ranges as the hyper path.
/// The whole request head must arrive within `header_timeout`; the body
/// stops when the client takes nothing for `idle_timeout`.
pub async fn serve_file_connection(
    shared: Arc<Shared>,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    header_timeout: Duration,
    idle_timeout: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(2048);
    // The request head, bounded in size and time.
    let deadline = tokio::time::Instant::now() + header_timeout;
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return;
        }
        let mut chunk = [0u8; 2048];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => return,
            Err(_) => {
                tracing::debug!(peer = %peer, "HTTP request head not sent within {header_timeout:?}: closed");
                return;
            }
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let (path, range) = match req.parse(&buf[..head_end]) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req
                .path
                .unwrap_or("/")
                .split('?')
                .next()
                .unwrap_or("/")
                .to_string();
            let range = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("range"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_string);
            (path, range)
        }
        _ => return,
    };
    let fail = |status: StatusCode, text: String| {
        add(&shared.metrics.http_errors, 1);
        format!(
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{text}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            text.len()
        )
    };
    let Route::File(rel) = route(&path) else {
        let _ = stream
            .write_all(fail(StatusCode::NOT_FOUND, "not found\n".into()).as_bytes())
            .await;
        return;
    };
    let real = match resolve_under(&shared.http_root, &rel) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(peer = %peer, "HTTP {e}");
            let status = match e {
                ResolveError::NotFound(_) => StatusCode::NOT_FOUND,
                ResolveError::Refused(_) | ResolveError::Escapes(_) => StatusCode::FORBIDDEN,
            };
            let _ = stream
                .write_all(fail(status, format!("{e}\n")).as_bytes())
                .await;
            return;
        }
    };
    let Ok(file) = std::fs::File::open(&real) else {
        let _ = stream
            .write_all(fail(StatusCode::NOT_FOUND, "cannot open\n".into()).as_bytes())
            .await;
        return;
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (status, start, len) = match parse_range(range.as_deref(), size) {
        RangeReq::Full => (StatusCode::OK, 0, size),
        RangeReq::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeReq::Unsatisfiable => {
            add(&shared.metrics.http_errors, 1);
            let head = file_response_head(StatusCode::RANGE_NOT_SATISFIABLE, 0, 0, size);
            let _ = stream.write_all(head.as_bytes()).await;
            return;
        }
    };
    tracing::debug!(peer = %peer, file = ?rel, start, len, "HTTP file (sendfile)");
    if stream
        .write_all(file_response_head(status, start, len, size).as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let count = (end - offset).min(1 << 30) as usize;
        let sent = tokio::time::timeout(
            idle_timeout,
            stream.async_io(tokio::io::Interest::WRITABLE, || {
                rustix::fs::sendfile(&stream, &file, Some(&mut offset), count)
                    .map_err(std::io::Error::from)
            }),
        )
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing for the idle timeout",
            ))
        });
        match sent {
            Ok(0) => break,
            Ok(n) => add(&shared.metrics.http_bytes, n as u64),
            Err(e) => {
                tracing::debug!(peer = %peer, "HTTP sendfile: {e}");
                add(&shared.metrics.http_errors, 1);
                return;
            }
        }
    }
    add(&shared.metrics.http_ok, 1);
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_route_to_what_they_name() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let script = |token: &str| Route::Script {
            mac,
            token: token.into(),
        };
        assert_eq!(route("/boot/52-54-00-00-00-01/t0k.ipxe"), script("t0k"));
        assert_eq!(route("/boot/52:54:00:00:00:01/t0k.ipxe"), script("t0k"));
        assert_eq!(
            route("/boot/52-54-00-00-00-01.ipxe"),
            Route::ScriptWithoutToken(mac)
        );
        for other in [
            "/boot/nope.ipxe",
            "/boot/52-54-00-00-00-01/.ipxe",
            "/boot/52-54-00-00-00-01/a/b.ipxe",
            "/boot/52-54-00-00-00-01/tok",
            "/machines/52-54-00-00-00-01/abc/other",
            "/machines/52-54-00-00-00-01/user-data",
            "/machines/zz/abc/user-data",
            "/",
        ] {
            assert_eq!(route(other), Route::NotFound, "{other}");
        }
        assert_eq!(route("/files/k/vmlinuz"), Route::File("k/vmlinuz".into()));
        assert_eq!(
            route("/machines/52-54-00-00-00-01/abc/user-data"),
            Route::NoCloud {
                mac,
                token: "abc".into(),
                doc: Doc::UserData
            }
        );
        assert_eq!(
            route("/machines/52-54-00-00-00-01/abc/installed"),
            Route::Installed {
                mac,
                token: "abc".into()
            }
        );
        assert_eq!(route("/metrics"), Route::Metrics);
    }

    #[test]
    fn only_plain_file_downloads_take_the_sendfile_path() {
        assert!(is_file_download(b"GET /files/vmlinuz HTTP/1.1\r\n"));
        for other in [
            &b"GET /boot/x.ipxe"[..],
            b"HEAD /files/x",
            b"GET /fil",
            b"POST /files/x",
            b"",
        ] {
            assert!(!is_file_download(other), "{other:?}");
        }
        assert_eq!(
            file_response_head(StatusCode::PARTIAL_CONTENT, 10, 5, 100),
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\
             Content-Range: bytes 10-14/100\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
    }

    #[test]
    fn ranges_resolve_against_the_size() {
        let cases = [
            (None, RangeReq::Full),
            (Some("bytes=0-99"), RangeReq::Part(0, 99)),
            (Some("bytes=900-2000"), RangeReq::Part(900, 999)),
            (Some("bytes=990-"), RangeReq::Part(990, 999)),
            (Some("bytes=-10"), RangeReq::Part(990, 999)),
            (Some("bytes=-5000"), RangeReq::Part(0, 999)),
            (Some("bytes=1000-"), RangeReq::Unsatisfiable),
            (Some("bytes=-0"), RangeReq::Unsatisfiable),
            (Some("bytes=5-1"), RangeReq::Full),
            (Some("bytes=0-1,5-6"), RangeReq::Full),
            (Some("items=0-1"), RangeReq::Full),
        ];
        for (h, want) in cases {
            assert_eq!(parse_range(h, 1000), want, "{h:?}");
        }
    }
}
