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

/// The provider of the budget suites (`budgets_e2e`, `global_budgets_e2e`):
/// by path and marker, OpenAI JSON (1 500 tokens) or Anthropic SSE (35 in,
/// 15 out), and the requests that drive it.
pub mod budgets {
    use super::Reply;
    use std::time::Duration;

    /// The output reservation of a request that states no `max_tokens`, as
    /// the suites set with `quota metering --default-output-tokens` (not the
    /// built-in 1 024, so the setting is proved to reach the guard).
    pub const OUTPUT_RESERVATION: u64 = 512;

    pub const ANTHROPIC_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-20241022\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n";

    /// By path and by a marker in the request: `"stream":true`, `reserve-mode`
    /// (usage = the guard's reservation minus 4 tokens: the body's `max_tokens`
    /// or the default, answered after 1 s),
    /// `cut-off` (the stream stops after `message_start`).
    pub fn script(path: &str, body: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(body);
        let whole =
            |content_type, body: String| Reply::Whole { content_type, body: body.into_bytes(), delay: Duration::ZERO };
        if text.contains("cut-off") {
            let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"par\"}}\n\n";
            return Reply::CutOff { head: format!("{ANTHROPIC_START}{delta}").into_bytes() };
        }
        if text.contains("reserve-mode") {
            let input = (body.len() as u64).div_ceil(4);
            let stated = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["max_tokens"].as_u64());
            let output = stated.unwrap_or(OUTPUT_RESERVATION) - 4;
            let json = format!(
                r#"{{"id":"chatcmpl-2","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{{"prompt_tokens":{input},"completion_tokens":{output},"total_tokens":{}}}}}"#,
                input + output
            );
            return Reply::Whole {
                content_type: "application/json",
                body: json.into_bytes(),
                delay: Duration::from_secs(1),
            };
        }
        match (path.starts_with("/anthropic/"), text.contains("\"stream\":true")) {
            (false, false) => whole("application/json", r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":1024}}}"#.to_string()),
            (true, true) => whole("text/event-stream", format!(
                "{ANTHROPIC_START}\
                 event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"hi\"}}}}\n\n\
                 event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":15}}}}\n\n\
                 event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
            )),
            _ => whole("application/json", r#"{"error":{"message":"not scripted"}}"#.to_string()),
        }
    }

    pub fn chat(model: &str, marker: &str) -> Vec<u8> {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"{marker}"}}]}}"#).into_bytes()
    }

    pub fn anthropic_stream(marker: &str) -> Vec<u8> {
        format!(
            r#"{{"model":"claude-3-5-haiku-20241022","stream":true,"messages":[{{"role":"user","content":"{marker}"}}]}}"#
        )
        .into_bytes()
    }
}
