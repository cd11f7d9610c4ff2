//! The echo upstream: a threaded HTTP/1.1 server that answers every request
//! with 200 and a JSON body listing exactly what it received, and records
//! the requests for assertions. It stands in for the AI provider: tests
//! check which headers the guard removed, set or injected.

use crate::http1::{self, Head};
use serde_json::json;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    /// In order, duplicates preserved, names as sent (Envoy lowercases).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// First value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        http1::find_header(&self.headers, name)
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// State shared between the handle and the server threads.
#[derive(Default)]
struct Shared {
    received: Mutex<Vec<ReceivedRequest>>,
    arrived: Condvar,
    stopping: AtomicBool,
    /// Clones of open connections, so drop can close kept-alive ones that a
    /// server thread is blocked reading.
    connections: Mutex<Vec<TcpStream>>,
}

/// A running echo upstream; stops when dropped.
pub struct EchoUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoUpstream {
    /// Starts on 127.0.0.1 with a kernel-chosen port.
    pub fn start() -> io::Result<EchoUpstream> {
        Self::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
    }

    /// Starts on `addr` (port 0 = kernel-chosen).
    pub fn bind(addr: SocketAddr) -> io::Result<EchoUpstream> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new().name("echo-accept".into()).spawn(move || accept_loop(listener, shared))?
        };
        Ok(EchoUpstream { addr, shared, acceptor: Some(acceptor) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.received).clone()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<ReceivedRequest> {
        lock(&self.shared.received).last().cloned()
    }

    /// Returns and forgets the requests received so far.
    pub fn take_requests(&self) -> Vec<ReceivedRequest> {
        std::mem::take(&mut *lock(&self.shared.received))
    }

    /// Waits until at least `n` requests have arrived; returns them.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = Instant::now() + timeout;
        let mut received = lock(&self.shared.received);
        while received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            received = match self.shared.arrived.wait_timeout(received, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        received.clone()
    }

    /// Blocks the calling thread while the server runs (for the binary).
    pub fn join(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept() so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for conn in lock(&self.shared.connections).drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A poisoned lock only means another test thread panicked; the data is
/// still usable for reporting.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.connections).push(clone);
        }
        let shared = Arc::clone(&shared);
        let _ = thread::Builder::new().name("echo-conn".into()).spawn(move || serve_connection(stream, &shared));
    }
}

/// Serves requests on one connection until the peer closes it or asks to.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let Ok(peer) = stream.peer_addr() else { return };
    let mut reader = BufReader::new(stream);
    loop {
        let Ok(Some(head)) = http1::read_head(&mut reader) else {
            return;
        };
        let Ok(request) = read_request(&mut reader, head.clone(), peer) else {
            return;
        };
        let keep_alive = wants_keep_alive(&head);
        let response = encode_response(&request, keep_alive);
        record(shared, request);
        if reader.get_mut().write_all(&response).is_err() || !keep_alive {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>, head: Head, peer: SocketAddr) -> io::Result<ReceivedRequest> {
    let kind = http1::request_body_kind(&head)?;
    let body = http1::read_body(reader, kind)?;
    let mut parts = head.start_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    Ok(ReceivedRequest { peer, method, path, headers: head.headers, body })
}

fn record(shared: &Shared, request: ReceivedRequest) {
    lock(&shared.received).push(request);
    shared.arrived.notify_all();
}

/// HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes
/// unless told to keep it.
fn wants_keep_alive(head: &Head) -> bool {
    let connection = head.header("connection").unwrap_or_default().to_ascii_lowercase();
    if head.start_line.ends_with("HTTP/1.0") {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    }
}

fn encode_response(request: &ReceivedRequest, keep_alive: bool) -> Vec<u8> {
    let body = json!({
        "method": request.method,
        "path": request.path,
        "headers": request.headers.iter().map(|(n, v)| [n, v]).collect::<Vec<_>>(),
        "body_bytes": request.body.len(),
    })
    .to_string();
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
