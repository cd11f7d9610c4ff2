//! Minimal HTTP/1.1 message reading shared by the echo upstream, the raw
//! client of the end-to-end harness and the admin API's tests. Header names and values are kept as received (bytes decoded
//! lossily), in order, duplicates included: the tests assert on exactly
//! what crossed the wire.

use std::io::{self, BufRead, Read};

/// Upper bound on one head line, so a broken peer cannot make a test hang
/// in memory growth.
const MAX_LINE: usize = 64 * 1024;

/// A start line plus its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// First value of `name` (case-insensitive) in a header list.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Reads one line terminated by LF, without the CR LF. `Ok(None)` at a
/// clean EOF before any byte.
pub fn read_line<R: BufRead>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(invalid("line too long or truncated"));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads a start line and header fields up to the empty line. `Ok(None)` if
/// the peer closed the connection before sending anything (keep-alive end).
pub fn read_head<R: BufRead>(reader: &mut R) -> io::Result<Option<Head>> {
    let Some(start) = read_line(reader)? else {
        return Ok(None);
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("EOF inside the head"))?;
        if line.is_empty() {
            break;
        }
        headers.push(split_header(&line)?);
    }
    let start_line = String::from_utf8_lossy(&start).into_owned();
    Ok(Some(Head { start_line, headers }))
}

fn split_header(line: &[u8]) -> io::Result<(String, String)> {
    let colon = line.iter().position(|&b| b == b':').ok_or_else(|| invalid("header line without ':'"))?;
    let name = String::from_utf8_lossy(&line[..colon]).into_owned();
    let value = String::from_utf8_lossy(line[colon + 1..].trim_ascii()).into_owned();
    Ok((name, value))
}

/// How the body of a message is delimited (RFC 9112 section 6.3, minus the
/// cases the tests never need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Body framing of a request: chunked, content-length, or none.
pub fn request_body_kind(head: &Head) -> io::Result<BodyKind> {
    if is_chunked(head) {
        return Ok(BodyKind::Chunked);
    }
    match head.header("content-length") {
        Some(v) => parse_length(v).map(BodyKind::Length),
        None => Ok(BodyKind::None),
    }
}

/// Body framing of a response to a request with method `method`.
pub fn response_body_kind(head: &Head, method: &str, status: u16) -> io::Result<BodyKind> {
    if method.eq_ignore_ascii_case("HEAD") || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyKind::None);
    }
    if is_chunked(head) {
        return Ok(BodyKind::Chunked);
    }
    match head.header("content-length") {
        Some(v) => parse_length(v).map(BodyKind::Length),
        None => Ok(BodyKind::UntilClose),
    }
}

fn is_chunked(head: &Head) -> bool {
    head.headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"))
}

fn parse_length(value: &str) -> io::Result<usize> {
    value.trim().parse().map_err(|_| invalid("bad content-length"))
}

/// Reads a body framed as `kind`.
pub fn read_body<R: BufRead>(reader: &mut R, kind: BodyKind) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match kind {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        BodyKind::UntilClose => {
            reader.read_to_end(&mut body)?;
        }
        BodyKind::Chunked => read_chunked(reader, &mut body)?,
    }
    Ok(body)
}

fn read_chunked<R: BufRead>(reader: &mut R, body: &mut Vec<u8>) -> io::Result<()> {
    loop {
        let line = read_line(reader)?.ok_or_else(|| invalid("EOF in chunk size"))?;
        let size_text = String::from_utf8_lossy(&line);
        // Chunk extensions (";name=value") are allowed and ignored.
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailer fields, then the final empty line.
            while !read_line(reader)?.ok_or_else(|| invalid("EOF in trailers"))?.is_empty() {}
            return Ok(());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let crlf = read_line(reader)?.ok_or_else(|| invalid("EOF after chunk"))?;
        if !crlf.is_empty() {
            return Err(invalid("chunk not followed by CRLF"));
        }
    }
}

/// One response: status, reason, head and body (a response to `method`,
/// which decides whether it has a body).
pub fn read_response<R: BufRead>(reader: &mut R, method: &str) -> io::Result<(u16, String, Head, Vec<u8>)> {
    let head = read_head(reader)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"))?;
    let (status, reason) = parse_status_line(&head)?;
    let kind = response_body_kind(&head, method, status)?;
    let body = read_body(reader, kind)?;
    Ok((status, reason, head, body))
}

fn parse_status_line(head: &Head) -> io::Result<(u16, String)> {
    let mut parts = head.start_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid("not an HTTP/1.x status line"));
    }
    let status = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| invalid("bad status code"))?;
    Ok((status, parts.next().unwrap_or_default().to_string()))
}

pub fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn head_keeps_order_and_duplicates() {
        let raw = b"GET / HTTP/1.1\r\nA: 1\r\nb:2 \r\nA: 3\r\n\r\n";
        let head = read_head(&mut Cursor::new(&raw[..])).unwrap().unwrap();
        assert_eq!(head.start_line, "GET / HTTP/1.1");
        let want = [("A", "1"), ("b", "2"), ("A", "3")];
        let got: Vec<(&str, &str)> = head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn chunked_body_with_extension_and_trailer() {
        let raw = b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: v\r\n\r\nrest";
        let mut cursor = Cursor::new(&raw[..]);
        let body = read_body(&mut cursor, BodyKind::Chunked).unwrap();
        assert_eq!(body, b"Wikipedia");
        let mut rest = String::new();
        cursor.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "rest");
    }

    #[test]
    fn eof_before_head_is_none() {
        assert!(read_head(&mut Cursor::new(&b""[..])).unwrap().is_none());
    }
}
