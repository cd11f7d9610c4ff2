//! The admin API's HTTP/1.1 transport, built to stay up under abuse:
//!
//! - one thread per connection, at most `MAX_CONNECTIONS` at once (more are
//!   answered 503 and closed); each must send its request head within
//!   `HEAD_DEADLINE` and its body within `BODY_DEADLINE` (a slow-loris client
//!   holds one connection slot for a few seconds, never the service);
//! - heads up to `MAX_HEAD`, bodies up to `MAX_BODY` (`Content-Length` only);
//! - the bearer token is checked before the body is read, against token
//!   hashes cached in memory and refreshed only when `store.enc` changes: a
//!   bad token costs a SHA-256, not a store decryption or a store write;
//! - failed authentications are counted per client address and written to
//!   the audit log as one aggregated line per address at most every
//!   `FAILURE_FLUSH` (the first at once), so a flood of bad tokens cannot
//!   grow the log or rewrite the store per attempt; past `FAILURE_LIMIT` in
//!   a window an address gets 429 with `Retry-After`;
//! - at most `MAX_WORKERS` requests run their operation at once (the store
//!   lock serializes changes anyway);
//! - one request per connection (`connection: close`).

use crate::admin::audit::{Event, Outcome, Target};
use crate::admin::session::Session;
use crate::admin::store::admins::{self, AdminAccount};
use crate::admin::store::Store;
use crate::admin::{unix_now, AdminError};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

pub const MAX_CONNECTIONS: usize = 256;
pub const MAX_WORKERS: usize = 4;
pub const MAX_HEAD: usize = 16 * 1024;
/// Larger bodies are refused: no operation needs more.
pub const MAX_BODY: usize = 64 * 1024;
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
pub const BODY_DEADLINE: Duration = Duration::from_secs(10);
const IO_TIMEOUT: Duration = Duration::from_millis(500);
pub const FAILURE_FLUSH: Duration = Duration::from_secs(5);
pub const FAILURE_LIMIT: u64 = 20;
/// Distinct addresses counted per window; the rest share one line.
const MAX_FAILURE_SOURCES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Other(String),
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Other(m) => m,
        })
    }
}

/// A request head, parsed.
pub struct Head {
    pub method: Method,
    pub target: String,
    /// Lower-case names, first occurrence of each.
    headers: Vec<(String, String)>,
    /// Body bytes that arrived with the head.
    pub rest: Vec<u8>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// An answer the transport gives by itself.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl Refusal {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), retry_after: None }
    }
}

/// Reads the request head, within `HEAD_DEADLINE` and `MAX_HEAD`.
pub fn read_head(stream: &mut TcpStream) -> Result<Head, Refusal> {
    let start = Instant::now();
    // May hold the start of a body (a secret): zeroed when dropped, and
    // reserved whole so it is never reallocated (which would leave a copy).
    let mut chunk = [0u8; 2048];
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_HEAD + 1 + chunk.len()));
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(Refusal::new(431, "usage", format!("request head larger than {MAX_HEAD} bytes")));
        }
        if start.elapsed() > HEAD_DEADLINE {
            return Err(Refusal::new(408, "timeout", "request head not received in time"));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(Refusal::new(400, "usage", "connection closed before the request head ended")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(Refusal::new(400, "usage", format!("reading the request: {e}"))),
        }
    };
    chunk.fill(0);
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::new(400, "usage", "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Refusal::new(505, "usage", "only HTTP/1.x is served"));
    }
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other if !other.is_empty() && other.bytes().all(|b| b.is_ascii_uppercase()) => Method::Other(other.into()),
        _ => return Err(Refusal::new(400, "usage", "malformed request method")),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Refusal::new(400, "usage", "malformed header line"));
        };
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || name.contains(' ') {
            return Err(Refusal::new(400, "usage", "malformed header name"));
        }
        if !headers.iter().any(|(n, _)| *n == name) {
            headers.push((name, value.trim().to_string()));
        }
    }
    Ok(Head { method, target: target.to_string(), headers, rest })
}

/// The declared body length; chunked bodies are refused.
pub fn body_length(head: &Head) -> Result<usize, Refusal> {
    if head.header("transfer-encoding").is_some() {
        return Err(Refusal::new(411, "usage", "send the body with Content-Length (chunked bodies are not accepted)"));
    }
    let n = match head.header("content-length") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| Refusal::new(400, "usage", "Content-Length is not a number"))?,
    };
    if n > MAX_BODY {
        return Err(Refusal::new(413, "usage", format!("request body larger than {MAX_BODY} bytes")));
    }
    Ok(n)
}

/// Reads exactly `n` body bytes within `BODY_DEADLINE`.
pub fn read_body(stream: &mut TcpStream, head: &mut Head, n: usize) -> Result<Zeroizing<Vec<u8>>, Refusal> {
    // Sized to the body at once (never reallocated, which would leave a
    // copy); what came with the head is moved in and zeroed.
    let rest = Zeroizing::new(std::mem::take(&mut head.rest));
    let mut body = Zeroizing::new(Vec::with_capacity(n.max(rest.len())));
    body.extend_from_slice(&rest);
    if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) && body.len() < n {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let start = Instant::now();
    let mut chunk = [0u8; 4096];
    while body.len() < n {
        if start.elapsed() > BODY_DEADLINE {
            return Err(Refusal::new(408, "timeout", "request body not received in time"));
        }
        let want = (n - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return Err(Refusal::new(400, "usage", "connection closed before the body ended")),
            Ok(k) => body.extend_from_slice(&chunk[..k]),
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(Refusal::new(400, "usage", format!("reading the body: {e}"))),
        }
    }
    chunk.fill(0);
    body.truncate(n);
    Ok(body)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        421 => "Misdirected Request",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ if status >= 500 => "Internal Server Error",
        _ => "Error",
    }
}

/// Writes a JSON response and closes the connection gracefully (unread
/// request bytes are drained briefly, so the client sees the answer rather
/// than a reset).
pub fn respond(stream: TcpStream, status: u16, body: &serde_json::Value, retry_after: Option<u64>) {
    let retry = retry_after.map(|s| ("retry-after", s.to_string()));
    respond_with(stream, status, "application/json", retry.as_slice(), body.to_string().as_bytes());
}

/// Writes a response of any type (`cache-control: no-store` always; the
/// caller adds its own headers) and closes the connection as `respond` does.
pub fn respond_with(mut stream: TcpStream, status: u16, content_type: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while start.elapsed() < Duration::from_secs(1) && drained < 4 * MAX_BODY {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

pub fn refusal_body(r: &Refusal) -> serde_json::Value {
    serde_json::json!({"error": {"kind": r.kind, "message": r.message}})
}

pub fn configure(stream: &TcpStream) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
}

/// Counts open connections; `None` when the limit is reached.
pub struct Slots(AtomicUsize);

pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }
    pub fn take(&self) -> Option<Slot<'_>> {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        if prev >= MAX_CONNECTIONS {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A counting semaphore bounding the requests that run an operation.
pub struct Workers {
    busy: Mutex<usize>,
    freed: Condvar,
}

pub struct Permit<'a>(&'a Workers);

impl Workers {
    pub const fn new() -> Self {
        Self { busy: Mutex::new(0), freed: Condvar::new() }
    }
    pub fn acquire(&self) -> Permit<'_> {
        let mut busy = lock(&self.busy);
        while *busy >= MAX_WORKERS {
            busy = self.freed.wait(busy).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *busy += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *lock(&self.0.busy) -= 1;
        self.0.freed.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which store file the cache was filled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn stamp(store: &Store) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(store.paths.store()).ok()?;
    Some(Stamp { len: m.len(), modified: m.modified().ok(), inode: m.ino() })
}

/// Admin accounts (for their token hashes) as of the store file on disk.
pub struct AuthCache {
    state: Mutex<(Option<Stamp>, Vec<AdminAccount>)>,
}

impl AuthCache {
    pub fn new() -> Self {
        Self { state: Mutex::new((None, Vec::new())) }
    }

    /// Whether `token` belongs to an active admin of the committed store.
    /// Decrypts the store only when its file changed since the last look.
    pub fn check(&self, store: &Store, token: &str) -> Result<bool, AdminError> {
        let mut state = lock(&self.state);
        let now = stamp(store);
        if now.is_none() || state.0 != now {
            let mut doc = store.load()?;
            // Only what a token check needs: no 2FA secrets kept around
            // (a dropped `SecondFactor` zeroes its seeds).
            let admins = std::mem::take(&mut doc.admins)
                .into_iter()
                .map(|a| AdminAccount { second_factor: Default::default(), ..a })
                .collect();
            *state = (now, admins);
        }
        Ok(admins::by_token(&state.1, token).is_some())
    }
}

impl Default for AuthCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Failed authentications of the current window, per client address.
pub struct Failures {
    state: Mutex<FailureState>,
}

struct FailureState {
    window_start: Instant,
    counts: BTreeMap<String, (u64, String)>,
    /// Per address, this window: for the 429 limit.
    totals: BTreeMap<String, u64>,
    last_flush: Option<Instant>,
}

impl Failures {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(FailureState {
                window_start: Instant::now(),
                counts: BTreeMap::new(),
                totals: BTreeMap::new(),
                last_flush: None,
            }),
        }
    }

    /// Counts one failure; flushes at once when nothing was flushed for a
    /// whole window (so a single failure is audited without delay). Returns
    /// the seconds to wait when `ip` is past `FAILURE_LIMIT` in this window.
    pub fn record(&self, store: &Store, ip: IpAddr, why: &str) -> Option<u64> {
        let (flush_now, limited) = {
            let mut s = lock(&self.state);
            let key = ip.to_string();
            let source = if s.counts.len() >= MAX_FAILURE_SOURCES && !s.counts.contains_key(&key) {
                "other addresses".to_string()
            } else {
                key.clone()
            };
            s.counts.entry(source).or_insert((0, why.to_string())).0 += 1;
            let total = s.totals.entry(key).or_insert(0);
            *total += 1;
            let limited = (*total > FAILURE_LIMIT)
                .then(|| FAILURE_FLUSH.saturating_sub(s.window_start.elapsed()).as_secs().max(1));
            (s.last_flush.is_none_or(|t| t.elapsed() >= FAILURE_FLUSH), limited)
        };
        if flush_now {
            self.flush(store);
        }
        limited
    }

    /// Writes one audit line per address counted since the last flush (one
    /// store commit for all), and starts a new window when it is over.
    pub fn flush(&self, store: &Store) {
        let (counts, seconds) = {
            let mut s = lock(&self.state);
            let seconds = s.last_flush.map_or(0, |t| t.elapsed().as_secs());
            s.last_flush = Some(Instant::now());
            if s.window_start.elapsed() >= FAILURE_FLUSH {
                s.window_start = Instant::now();
                s.totals.clear();
            }
            (std::mem::take(&mut s.counts), seconds)
        };
        if counts.is_empty() {
            return;
        }
        let events = counts
            .into_iter()
            .map(|(source, (n, why))| Event {
                actor: "-".into(),
                via: "http",
                action: "auth.identify".into(),
                target: Target::default(),
                outcome: Outcome::AuthFailed,
                detail: Some(if n == 1 {
                    format!("{why} (from {source})")
                } else {
                    format!("{n} failed authentications from {source} in the last {seconds}s: {why}")
                }),
            })
            .collect();
        let session = Session {
            store,
            claim: crate::admin::session::Claim::Anonymous,
            otp: None,
            via: "http",
            now: unix_now(),
            publish: None,
        };
        if let Err(e) = session.record_events(events) {
            eprintln!("tokenhub-admin serve: could not audit failed authentications: {e}");
        }
    }
}

impl Default for Failures {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        configure(&s);
        (c, s)
    }

    #[test]
    fn heads_are_parsed_and_bounded() {
        let (mut c, mut s) = pair();
        c.write_all(b"POST /v1/keys?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nAuthorization: Bearer t\r\n\r\n{}")
            .unwrap();
        let mut head = read_head(&mut s).unwrap();
        assert_eq!((head.method.clone(), head.target.as_str()), (Method::Post, "/v1/keys?x=1"));
        assert_eq!(head.header("authorization"), Some("Bearer t"));
        let n = body_length(&head).unwrap();
        assert_eq!(&read_body(&mut s, &mut head, n).unwrap()[..], b"{}");

        let (mut c, mut s) = pair();
        c.write_all(format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(MAX_HEAD + 10)).as_bytes()).unwrap();
        assert_eq!(read_head(&mut s).err().map(|r| r.status), Some(431));

        let (mut c, mut s) = pair();
        c.write_all(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert_eq!(body_length(&read_head(&mut s).unwrap()).err().map(|r| r.status), Some(411));
        let (mut c, mut s) = pair();
        c.write_all(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1).as_bytes()).unwrap();
        assert_eq!(body_length(&read_head(&mut s).unwrap()).err().map(|r| r.status), Some(413));
    }

    #[test]
    fn a_silent_client_times_out() {
        let (_c, mut s) = pair();
        let start = Instant::now();
        assert_eq!(read_head(&mut s).err().map(|r| r.status), Some(408));
        assert!(start.elapsed() < HEAD_DEADLINE + Duration::from_secs(2));
    }

    #[test]
    fn slots_and_workers_are_bounded() {
        let slots = Slots::new();
        let held: Vec<_> = (0..MAX_CONNECTIONS).map(|_| slots.take().unwrap()).collect();
        assert!(slots.take().is_none());
        drop(held);
        assert!(slots.take().is_some());
    }
}
