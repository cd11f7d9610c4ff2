//! A raw HTTP/1.1 client: writes the request head exactly as given (so tests
//! can send duplicate headers, odd whitespace, non-UTF-8 bytes) from a
//! chosen loopback source address, and parses the response.

use crate::http1::{self, find_header};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Long enough for a loaded 2-core CI machine, short enough that a stuck
/// test fails instead of hanging the run.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In order, duplicates preserved.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.body_text()))
    }
}

/// One client connection, for several requests on a kept-alive connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `dst` from `src_ip` (port chosen by the kernel).
    pub fn open(src_ip: IpAddr, dst: SocketAddr) -> io::Result<Connection> {
        let domain = if src_ip.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SockAddr::from(SocketAddr::new(src_ip, 0)))?;
        socket.connect_timeout(&SockAddr::from(dst), IO_TIMEOUT)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Connection { reader: BufReader::new(stream) })
    }

    /// Sends the head lines (each followed by CRLF), an empty line and
    /// `body`, byte for byte, then reads one response. Nothing is added:
    /// no Host, no Content-Length.
    pub fn send<L: AsRef<[u8]>>(&mut self, head_lines: &[L], body: &[u8]) -> io::Result<Response> {
        let bytes = encode(head_lines, body);
        self.reader.get_mut().write_all(&bytes)?;
        let method = first_token(head_lines.first().map(AsRef::as_ref).unwrap_or_default());
        self.read_response(&method)
    }

    fn read_response(&mut self, method: &str) -> io::Result<Response> {
        let (status, reason, head, body) = http1::read_response(&mut self.reader, method)?;
        Ok(Response { status, reason, headers: head.headers, body })
    }
}

/// One request on a fresh connection from `src_ip` to `dst`; see
/// [`Connection::send`].
pub fn request<L: AsRef<[u8]>>(src_ip: IpAddr, dst: SocketAddr, head_lines: &[L], body: &[u8]) -> io::Result<Response> {
    Connection::open(src_ip, dst)?.send(head_lines, body)
}

/// `GET path` from 127.0.0.1 with a Host header, the given headers and
/// `connection: close`.
pub fn get(dst: SocketAddr, path: &str, headers: &[(&str, &str)]) -> io::Result<Response> {
    let lines = get_lines(path, headers);
    request(IpAddr::V4(Ipv4Addr::LOCALHOST), dst, &lines, b"")
}

/// The head lines of a plain GET, for callers that want another source
/// address or connection.
pub fn get_lines(path: &str, headers: &[(&str, &str)]) -> Vec<String> {
    let mut lines = vec![format!("GET {path} HTTP/1.1"), "host: tokenhub.test".to_string()];
    lines.extend(headers.iter().map(|(n, v)| format!("{n}: {v}")));
    lines.push("connection: close".to_string());
    lines
}

fn encode<L: AsRef<[u8]>>(head_lines: &[L], body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in head_lines {
        bytes.extend_from_slice(line.as_ref());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(body);
    bytes
}

fn first_token(line: &[u8]) -> String {
    let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).into_owned()
}
