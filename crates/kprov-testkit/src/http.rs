//! A small HTTP/1.1 file server on 127.0.0.1 for tests: GET and HEAD with
//! single byte ranges (206 / 416), one request per connection, and faults
//! on demand: cut a response off after some bytes, or corrupt a byte.
//! It serves a directory exactly as a static web server would; the faults
//! are what a flaky mirror or a damaged file looks like to a client.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fault applied to responses for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after `bytes` bytes of the body, for the first
    /// `times` requests of the path.
    DropAfter {
        /// Body bytes sent before the cut.
        bytes: u64,
        /// How many responses to cut.
        times: u32,
    },
    /// Flip one bit in the middle of the body, every time.
    Corrupt,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// The Range header, if any.
    pub range: Option<String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    faults: HashMap<String, Fault>,
    log: Vec<Logged>,
}

/// A running server; stopped and joined on drop.
pub struct FileServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `root` on a free port of 127.0.0.1.
    pub fn start(root: &Path) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(State::default()));
        let root = root.to_path_buf();
        let (stop2, state2) = (stop.clone(), state.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (root, state) = (root.clone(), state2.clone());
                        std::thread::spawn(move || {
                            let _ = handle(stream, &root, &state);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            state,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets a fault for `path` (as requested, e.g. `/release/v1/kubelet`).
    pub fn set_fault(&self, path: &str, fault: Fault) {
        self.lock().faults.insert(path.to_string(), fault);
    }

    /// The requests served so far.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    full.is_file().then_some(full)
}

fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        len.checked_sub(1)?
    } else {
        end.parse().ok()?
    };
    (start <= end && end < len).then_some((start, end))
}

fn handle(stream: TcpStream, root: &Path, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts
        .next()
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut out = stream;
    let log = |status: u16| {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            status,
        });
    };
    let Some(file_path) = resolve(root, &path).filter(|_| method == "GET" || method == "HEAD")
    else {
        log(404);
        out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    };
    let mut file = std::fs::File::open(&file_path)?;
    let len = file.metadata()?.len();
    let (status, start, end) = match &range {
        Some(r) => match parse_range(r, len) {
            Some((s, e)) => (206, s, e),
            None => {
                log(416);
                write!(out, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
        },
        None => (200, 0, len.saturating_sub(1)),
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let fault = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let fault = s.faults.get(&path).cloned();
        if let Some(Fault::DropAfter { bytes, times }) = fault {
            if times > 0 {
                s.faults.insert(
                    path.clone(),
                    Fault::DropAfter {
                        bytes,
                        times: times - 1,
                    },
                );
            }
            (times > 0).then_some(Fault::DropAfter { bytes, times })
        } else {
            fault
        }
    };
    log(status);
    let reason = if status == 206 {
        "Partial Content"
    } else {
        "OK"
    };
    write!(out, "HTTP/1.1 {status} {reason}\r\nContent-Length: {body_len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n")?;
    if status == 206 {
        write!(out, "Content-Range: bytes {start}-{end}/{len}\r\n")?;
    }
    out.write_all(b"\r\n")?;
    if method == "HEAD" {
        return Ok(());
    }
    file.seek(SeekFrom::Start(start))?;
    let limit = match fault {
        Some(Fault::DropAfter { bytes, .. }) => bytes.min(body_len),
        _ => body_len,
    };
    let corrupt_at = matches!(fault, Some(Fault::Corrupt)).then_some(len / 2);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    while sent < limit {
        let want = buf.len().min((limit - sent) as usize);
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        if let Some(at) = corrupt_at {
            let pos = start + sent;
            if at >= pos && at < pos + n as u64 {
                buf[(at - pos) as usize] ^= 0x01;
            }
        }
        out.write_all(&buf[..n])?;
        sent += n as u64;
    }
    out.flush()?;
    if sent < body_len {
        // Cut off: close without finishing the body.
        out.shutdown(std::net::Shutdown::Both)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_http_defines_them() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-2", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn paths_never_leave_the_root() {
        let dir = std::env::temp_dir();
        assert_eq!(resolve(&dir, "/../etc/passwd"), None);
        assert_eq!(resolve(&dir, "/./x"), None);
    }
}
