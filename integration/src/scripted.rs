//! A scripted AI provider: a one-request-per-connection HTTP/1.1 upstream
//! answering each request with what a script returns for its path and body
//! (real OpenAI / Anthropic response shapes, streamed or not), and keeping
//! the request bodies it received.

use crate::http1;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How one request is answered (always 200).
pub enum Reply {
    /// The whole body, with content-length, after `delay`.
    Whole { content_type: &'static str, body: Vec<u8>, delay: Duration },
    /// Chunked, in `piece`-byte writes 1 ms apart (a stream as providers
    /// send it, so event boundaries fall inside chunks).
    Streamed { content_type: &'static str, body: Vec<u8>, piece: usize },
    /// An event stream that stops after `head`: the connection is cut
    /// without the last chunk, so Envoy sees the upstream reset.
    CutOff { head: Vec<u8> },
}

/// The reply for a request's path and body.
pub type Script = fn(&str, &[u8]) -> Reply;

pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ScriptedUpstream {
    pub fn start(script: Script) -> ScriptedUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&bodies), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let b = Arc::clone(&b);
                thread::spawn(move || {
                    let _ = serve(conn, script, &b);
                });
            }
        });
        ScriptedUpstream { addr, bodies, stop, thread: Some(thread) }
    }

    /// The request bodies received since the last call.
    pub fn take_bodies(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.bodies.lock().unwrap())
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, script: Script, bodies: &Mutex<Vec<Vec<u8>>>) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(head) = http1::read_head(&mut reader)? else { return Ok(()) };
    let body = http1::read_body(&mut reader, http1::request_body_kind(&head)?)?;
    let path = head.start_line.split(' ').nth(1).unwrap_or_default().to_string();
    bodies.lock().unwrap().push(body.clone());
    let mut out = conn;
    match script(&path, &body) {
        Reply::Whole { content_type, body, delay } => {
            thread::sleep(delay);
            write!(
                out,
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )?;
            out.write_all(&body)?;
        }
        Reply::Streamed { content_type, body, piece } => {
            write!(out, "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")?;
            for part in body.chunks(piece.max(1)) {
                write_chunk(&mut out, part)?;
                thread::sleep(Duration::from_millis(1));
            }
            out.write_all(b"0\r\n\r\n")?;
        }
        Reply::CutOff { head } => {
            write!(out, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")?;
            write_chunk(&mut out, &head)?;
            thread::sleep(Duration::from_millis(300));
            out.shutdown(std::net::Shutdown::Both)?;
        }
    }
    out.flush()
}

fn write_chunk(out: &mut TcpStream, part: &[u8]) -> std::io::Result<()> {
    write!(out, "{:x}\r\n", part.len())?;
    out.write_all(part)?;
    out.write_all(b"\r\n")?;
    out.flush()
}
