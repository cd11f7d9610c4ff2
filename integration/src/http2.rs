//! HTTP/2 to the plaintext listener (h2c with prior knowledge), two ways:
//!
//! - [`curl`]: the system `curl --http2-prior-knowledge`, for well-formed
//!   requests with any header values (repeated names, non-UTF-8 bytes) and
//!   a fully parsed response;
//! - [`raw`]: a minimal frame writer for requests no conforming client
//!   sends (`transfer-encoding`, repeated `content-length`, a body shorter
//!   than its `content-length`), which reports how Envoy answered: a status,
//!   a stream reset or a GOAWAY.

use crate::client::Response;
use std::io;
use std::net::{IpAddr, SocketAddr};

/// What an HTTP/2 exchange ended with.
#[derive(Debug, Clone)]
pub enum H2Outcome {
    /// A response (with `curl`, fully parsed; with `raw`, only the status).
    Response(Response),
    /// The stream was reset (RST_STREAM) with this error code, or curl
    /// reported that the stream was not closed cleanly.
    Reset(String),
    /// The connection went away (GOAWAY, with this error code) before an
    /// answer.
    GoAway(u32),
}

impl H2Outcome {
    /// The response; panics with the outcome otherwise.
    pub fn response(self) -> Response {
        match self {
            H2Outcome::Response(r) => r,
            other => panic!("expected an HTTP/2 response, got {other:?}"),
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            H2Outcome::Response(r) => Some(r.status),
            _ => None,
        }
    }
}

fn url(dst: SocketAddr, path: &str) -> String {
    match dst {
        SocketAddr::V4(a) => format!("http://{}:{}{path}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("http://[{}]:{}{path}", a.ip(), a.port()),
    }
}

pub mod curl {
    use super::{url, H2Outcome};
    use crate::client::Response;
    use std::ffi::OsString;
    use std::fs;
    use std::net::{IpAddr, SocketAddr};
    use std::os::unix::ffi::OsStringExt;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};

    static CALL: AtomicU32 = AtomicU32::new(0);

    /// One HTTP/2 request with prior knowledge from `src` to `dst`: the
    /// method, the path exactly as given (`--path-as-is`), the headers in
    /// order (repeated names sent repeatedly; an empty value as `name;`),
    /// the body if not empty. curl adds `user-agent` and `accept`.
    pub fn request(
        src: IpAddr,
        dst: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> std::io::Result<H2Outcome> {
        let n = CALL.fetch_add(1, Ordering::SeqCst);
        let base = std::env::temp_dir().join(format!("tokenhub-h2-{}-{n}", std::process::id()));
        let (head_file, body_file, data_file) =
            (base.with_extension("head"), base.with_extension("body"), base.with_extension("data"));
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http2-prior-knowledge", "--path-as-is", "--max-time", "15"])
            .arg("--interface")
            .arg(src.to_string())
            .args(["-X", method])
            .arg("-D")
            .arg(&head_file)
            .arg("-o")
            .arg(&body_file);
        for (name, value) in headers {
            let mut line: Vec<u8> = name.as_bytes().to_vec();
            if value.is_empty() {
                line.push(b';');
            } else {
                line.extend_from_slice(b": ");
                line.extend_from_slice(value);
            }
            cmd.arg("-H").arg(OsString::from_vec(line));
        }
        if !body.is_empty() {
            fs::write(&data_file, body)?;
            let mut arg = OsString::from("@");
            arg.push(&data_file);
            cmd.arg("--data-binary").arg(arg);
        }
        cmd.arg(url(dst, path)).stdin(Stdio::null());
        let out = cmd.output();
        let cleanup = |files: &[&PathBuf]| files.iter().for_each(|f| drop(fs::remove_file(f)));
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                cleanup(&[&head_file, &body_file, &data_file]);
                return Err(e);
            }
        };
        let head = fs::read(&head_file).unwrap_or_default();
        let resp_body = fs::read(&body_file).unwrap_or_default();
        cleanup(&[&head_file, &body_file, &data_file]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            // 92: HTTP/2 stream error (reset); 56: connection closed.
            if head.is_empty() {
                return Ok(H2Outcome::Reset(format!("curl {}: {}", out.status, stderr.trim())));
            }
        }
        parse_head(&head, resp_body)
            .map(H2Outcome::Response)
            .ok_or_else(|| std::io::Error::other(format!("curl {}: no HTTP/2 response head: {stderr}", out.status)))
    }

    fn parse_head(head: &[u8], body: Vec<u8>) -> Option<Response> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.split_whitespace();
        if parts.next()? != "HTTP/2" {
            return None;
        }
        let status = parts.next()?.parse().ok()?;
        let headers = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(Response { status, reason: String::new(), headers, body })
    }
}

/// A minimal HTTP/2 client that writes frames as told: HPACK literals
/// without Huffman coding or indexing, so any name and value goes on the
/// wire as given, in order. It reads back only what a test needs: the
/// response status, or a reset or GOAWAY.
pub mod raw {
    use super::H2Outcome;
    use crate::client::Response;
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::io::{self, Read, Write};
    use std::net::{IpAddr, SocketAddr, TcpStream};
    use std::time::Duration;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const DATA: u8 = 0;
    const HEADERS: u8 = 1;
    const RST_STREAM: u8 = 3;
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const END_STREAM: u8 = 0x1;
    const ACK: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const PADDED: u8 = 0x8;
    const PRIORITY: u8 = 0x20;

    /// Sends one request on stream 1: `headers` (pseudo-headers first, as
    /// the caller orders them) and, if `body` is given, one DATA frame
    /// ending the stream. Returns how Envoy answered.
    pub fn request(
        src: IpAddr,
        dst: SocketAddr,
        headers: &[(&[u8], &[u8])],
        body: Option<&[u8]>,
    ) -> io::Result<H2Outcome> {
        let domain = if src.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        socket.connect_timeout(&SockAddr::from(dst), Duration::from_secs(10))?;
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;

        let mut out = PREFACE.to_vec();
        // SETTINGS_HEADER_TABLE_SIZE = 0 (no dynamic table in the answer),
        // SETTINGS_ENABLE_PUSH = 0.
        frame(&mut out, SETTINGS, 0, 0, &[0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
        let mut block = Vec::new();
        for (name, value) in headers {
            block.push(0x00); // literal without indexing, new name
            string(&mut block, name);
            string(&mut block, value);
        }
        let flags = END_HEADERS | if body.is_none() { END_STREAM } else { 0 };
        frame(&mut out, HEADERS, flags, 1, &block);
        if let Some(body) = body {
            frame(&mut out, DATA, END_STREAM, 1, body);
        }
        stream.write_all(&out)?;

        let mut goaway = None;
        loop {
            let mut head = [0u8; 9];
            if let Err(e) = stream.read_exact(&mut head) {
                return match (goaway, e.kind()) {
                    (Some(code), _) => Ok(H2Outcome::GoAway(code)),
                    (None, io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset) => {
                        Ok(H2Outcome::Reset(format!("connection closed ({e})")))
                    }
                    _ => Err(e),
                };
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload)?;
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let mut ack = Vec::new();
                    frame(&mut ack, SETTINGS, ACK, 0, &[]);
                    stream.write_all(&ack)?;
                }
                PING if flags & ACK == 0 => {
                    let mut pong = Vec::new();
                    frame(&mut pong, PING, ACK, 0, &payload);
                    stream.write_all(&pong)?;
                }
                HEADERS if id == 1 => {
                    let status = status_of(&payload, flags)
                        .ok_or_else(|| io::Error::other("cannot read :status from the response"))?;
                    return Ok(H2Outcome::Response(Response {
                        status,
                        reason: String::new(),
                        headers: Vec::new(),
                        body: Vec::new(),
                    }));
                }
                RST_STREAM if id == 1 => {
                    let code = payload.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                    return Ok(H2Outcome::Reset(error_name(code)));
                }
                GOAWAY => {
                    let last = payload.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff);
                    let code = payload.get(4..8).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                    if last.unwrap_or(0) < 1 {
                        return Ok(H2Outcome::GoAway(code));
                    }
                    // Stream 1 may still be answered; else the close
                    // that follows reports this GOAWAY.
                    goaway = Some(code);
                }
                _ => {}
            }
        }
    }

    /// The names of RFC 9113's error codes.
    pub fn error_name(code: u32) -> String {
        let names = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        names.get(code as usize).map_or_else(|| format!("error {code}"), |n| n.to_string())
    }

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = payload.len();
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// An HPACK integer with an `n`-bit prefix, the high bits in `first`.
    fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
        let max = (1usize << n) - 1;
        if value < max {
            out.push(first | value as u8);
            return;
        }
        out.push(first | max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128) as u8 | 0x80);
            value /= 128;
        }
        out.push(value as u8);
    }

    fn string(out: &mut Vec<u8>, s: &[u8]) {
        integer(out, 0, 7, s.len());
        out.extend_from_slice(s);
    }

    fn read_integer(buf: &[u8], pos: &mut usize, n: u32) -> Option<usize> {
        let max = (1usize << n) - 1;
        let mut value = usize::from(*buf.get(*pos)?) & max;
        *pos += 1;
        if value < max {
            return Some(value);
        }
        let mut shift = 0;
        loop {
            let b = *buf.get(*pos)?;
            *pos += 1;
            value += usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }

    /// The `:status` of a response header block: Envoy sends it first,
    /// either as a static-table entry or as a literal whose name is static
    /// entry 8 and whose value is three digits (plain or Huffman-coded).
    fn status_of(payload: &[u8], flags: u8) -> Option<u16> {
        let mut pos = 0;
        let mut end = payload.len();
        if flags & PADDED != 0 {
            let pad = usize::from(*payload.first()?);
            pos = 1;
            end = end.checked_sub(pad)?;
        }
        if flags & PRIORITY != 0 {
            pos += 5;
        }
        let block = payload.get(pos..end)?;
        let mut at = 0;
        loop {
            let first = *block.get(at)?;
            if first & 0xe0 == 0x20 {
                read_integer(block, &mut at, 5)?; // dynamic table size update
                continue;
            }
            if first & 0x80 != 0 {
                let index = read_integer(block, &mut at, 7)?;
                return [200, 204, 206, 304, 400, 404, 500].get(index.checked_sub(8)?).copied();
            }
            let prefix = if first & 0xc0 == 0x40 { 6 } else { 4 };
            if read_integer(block, &mut at, prefix)? != 8 {
                return None;
            }
            let huffman = block.get(at)? & 0x80 != 0;
            let len = read_integer(block, &mut at, 7)?;
            let raw = block.get(at..at + len)?;
            let digits = if huffman { huffman_digits(raw)? } else { String::from_utf8(raw.to_vec()).ok()? };
            return digits.parse().ok();
        }
    }

    /// Decodes an HPACK Huffman string made only of digits (RFC 7541
    /// appendix B: '0'–'2' are 5-bit codes 0–2, '3'–'9' 6-bit codes 25–31).
    fn huffman_digits(raw: &[u8]) -> Option<String> {
        let bits: Vec<u8> = raw.iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1)).collect();
        let mut out = String::new();
        let mut i = 0;
        while i < bits.len() {
            let rest = &bits[i..];
            // Padding: fewer than 8 one-bits to the end.
            if rest.len() < 8 && rest.iter().all(|&b| b == 1) {
                break;
            }
            let take = |n: usize| rest.get(..n).map(|s| s.iter().fold(0u8, |acc, &b| acc << 1 | b));
            let five = take(5)?;
            if five <= 2 {
                out.push(char::from(b'0' + five));
                i += 5;
                continue;
            }
            let six = take(6)?;
            if (25..=31).contains(&six) {
                out.push(char::from(b'0' + six - 22));
                i += 6;
                continue;
            }
            return None;
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn integers_round_trip() {
            for (n, v) in [(5, 10), (5, 31), (5, 1337), (7, 126), (7, 127), (7, 60_000), (4, 8)] {
                let mut buf = Vec::new();
                integer(&mut buf, 0, n, v);
                let mut pos = 0;
                assert_eq!(read_integer(&buf, &mut pos, n), Some(v));
                assert_eq!(pos, buf.len());
            }
        }

        #[test]
        fn status_forms() {
            // Indexed :status 200, after a table size update.
            assert_eq!(status_of(&[0x20, 0x88], END_HEADERS), Some(200));
            // Literal with incremental indexing, name index 8, "403" plain.
            assert_eq!(status_of(&[0x48, 0x03, b'4', b'0', b'3'], END_HEADERS), Some(403));
            // "503" Huffman-coded: 5=011011 0=00000 3=011001, padded with 1s.
            let bits = "011011".to_string() + "00000" + "011001";
            let mut padded = bits.clone();
            while !padded.len().is_multiple_of(8) {
                padded.push('1');
            }
            let bytes: Vec<u8> =
                padded.as_bytes().chunks(8).map(|c| c.iter().fold(0u8, |a, &b| a << 1 | (b - b'0'))).collect();
            let mut block = vec![0x08, 0x80 | bytes.len() as u8];
            block.extend_from_slice(&bytes);
            assert_eq!(status_of(&block, END_HEADERS), Some(503));
        }
    }
}

/// `curl::request`, for callers that already hold the pieces.
pub fn h2c(src: IpAddr, dst: SocketAddr, method: &str, path: &str, headers: &[(&str, &[u8])]) -> io::Result<H2Outcome> {
    curl::request(src, dst, method, path, headers, b"")
}
