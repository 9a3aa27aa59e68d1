//! The HTTP side: routing (pure: a request path to a [`Route`]), byte
//! ranges (pure: [`parse_range`]), and the hyper service that answers
//! with scripts, NoCloud documents, files and metrics.
//!
//! - `/boot/<mac>.ipxe`: the machine's iPXE script;
//! - `/files/<path>`: kernels, initrds and images under the HTTP root,
//!   with `Range`;
//! - `/machines/<mac>/<token>/{meta-data,user-data,vendor-data}`: NoCloud,
//!   only with the machine's own token (404 unknown MAC, 403 wrong token);
//! - `/metrics`: Prometheus text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};

use crate::ipxe::{meta_data, render_script};
use crate::machine::MacAddr;
use crate::metrics::add;
use crate::paths::{resolve_under, ResolveError};
use crate::server::Shared;

/// A response body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The iPXE script of a MAC.
    Script(MacAddr),
    /// A file under the HTTP root (the path as requested).
    File(String),
    /// A NoCloud document.
    NoCloud {
        /// The machine.
        mac: MacAddr,
        /// The token given.
        token: String,
        /// meta-data, user-data or vendor-data.
        doc: NoCloudDoc,
    },
    /// The metrics.
    Metrics,
    /// Nothing we serve.
    NotFound,
}

/// The NoCloud documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCloudDoc {
    /// meta-data.
    MetaData,
    /// user-data.
    UserData,
    /// vendor-data.
    VendorData,
}

/// Routes a path (without the query).
pub fn route(path: &str) -> Route {
    if path == "/metrics" {
        return Route::Metrics;
    }
    if let Some(rest) = path.strip_prefix("/boot/") {
        return match rest.strip_suffix(".ipxe").map(str::parse::<MacAddr>) {
            Some(Ok(mac)) => Route::Script(mac),
            _ => Route::NotFound,
        };
    }
    if let Some(rest) = path.strip_prefix("/files/") {
        return Route::File(rest.to_string());
    }
    if let Some(rest) = path.strip_prefix("/machines/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if let [mac, token, doc] = parts[..] {
            let doc = match doc {
                "meta-data" => NoCloudDoc::MetaData,
                "user-data" => NoCloudDoc::UserData,
                "vendor-data" => NoCloudDoc::VendorData,
                _ => return Route::NotFound,
            };
            if let Ok(mac) = mac.parse() {
                return Route::NoCloud {
                    mac,
                    token: token.to_string(),
                    doc,
                };
            }
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

async fn answer(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    req: &Request<Incoming>,
    path: &str,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET or HEAD only\n".into(),
            "text/plain",
        );
    }
    let base = shared.config.http_base();
    match route(path) {
        Route::Metrics => text(
            StatusCode::OK,
            shared.metrics.render(shared.machines().len()),
            "text/plain; version=0.0.4",
        ),
        Route::Script(mac) => {
            let machines = shared.machines();
            let (name, profile) = match machines.get(&mac) {
                Some(m) => (m.name.clone(), m.profile.clone()),
                None => match &shared.config.default_profile {
                    Some(p) => ("default".to_string(), p.clone()),
                    None => {
                        tracing::warn!(mac = %mac, peer = %peer, "iPXE script for an unknown MAC refused");
                        return text(
                            StatusCode::NOT_FOUND,
                            "unknown machine\n".into(),
                            "text/plain",
                        );
                    }
                },
            };
            let token = shared.tokens.for_mac(&mac);
            tracing::info!(mac = %mac, machine = %name, peer = %peer, "iPXE script served");
            text(
                StatusCode::OK,
                render_script(&name, &mac, &profile, &base, &token),
                "text/plain",
            )
        }
        Route::NoCloud { mac, token, doc } => {
            let machines = shared.machines();
            let (name, hostname, user_data) = match machines.get(&mac) {
                Some(m) => (
                    m.name.clone(),
                    m.hostname.clone(),
                    m.profile.user_data.clone(),
                ),
                None => match &shared.config.default_profile {
                    Some(p) => (
                        format!("default-{}", mac.dashed()),
                        None,
                        p.user_data.clone(),
                    ),
                    None => {
                        tracing::warn!(mac = %mac, peer = %peer, "NoCloud request for an unknown MAC refused");
                        return text(
                            StatusCode::NOT_FOUND,
                            "unknown machine\n".into(),
                            "text/plain",
                        );
                    }
                },
            };
            if !shared.tokens.check(&mac, &token) {
                tracing::warn!(mac = %mac, machine = %name, peer = %peer, "NoCloud request with a wrong token refused");
                return text(
                    StatusCode::FORBIDDEN,
                    "wrong token for this machine\n".into(),
                    "text/plain",
                );
            }
            tracing::info!(mac = %mac, machine = %name, peer = %peer, doc = ?doc, "NoCloud document served");
            let body = match doc {
                NoCloudDoc::MetaData => meta_data(&name, hostname.as_deref()),
                NoCloudDoc::UserData => user_data.unwrap_or_default(),
                NoCloudDoc::VendorData => String::new(),
            };
            text(StatusCode::OK, body, "text/plain")
        }
        Route::File(rel) => serve_file(shared, peer, req, &rel).await,
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
    let file = match std::fs::File::open(&real) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::NOT_FOUND, format!("{rel}: {e}\n"), "text/plain"),
    };
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
    tracing::debug!(peer = %peer, file = rel, start, len, "HTTP file");
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
pub async fn serve_file_connection(
    shared: Arc<Shared>,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(2048);
    // The request head, bounded in size and time.
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return;
        }
        let mut chunk = [0u8; 2048];
        match tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut chunk))
            .await
        {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
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
    tracing::debug!(peer = %peer, file = rel, start, len, "HTTP file (sendfile)");
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
        let sent = stream
            .async_io(tokio::io::Interest::WRITABLE, || {
                rustix::fs::sendfile(&stream, &file, Some(&mut offset), count)
                    .map_err(std::io::Error::from)
            })
            .await;
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
        assert_eq!(route("/boot/52-54-00-00-00-01.ipxe"), Route::Script(mac));
        assert_eq!(route("/boot/52:54:00:00:00:01.ipxe"), Route::Script(mac));
        assert_eq!(route("/boot/nope.ipxe"), Route::NotFound);
        assert_eq!(route("/files/k/vmlinuz"), Route::File("k/vmlinuz".into()));
        assert_eq!(
            route("/machines/52-54-00-00-00-01/abc/user-data"),
            Route::NoCloud {
                mac,
                token: "abc".into(),
                doc: NoCloudDoc::UserData
            }
        );
        assert_eq!(
            route("/machines/52-54-00-00-00-01/abc/other"),
            Route::NotFound
        );
        assert_eq!(
            route("/machines/52-54-00-00-00-01/user-data"),
            Route::NotFound
        );
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/"), Route::NotFound);
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
