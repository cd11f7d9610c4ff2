//! A streaming JSON scanner with bounded memory: it validates the syntax of
//! a document fed in chunks of any size (down to one byte) and hands back
//! the raw bytes of the values found at a few paths (e.g. `model`,
//! `usage`, `message.usage`), each captured up to a small bound. Nothing
//! else of the document is kept: the scanner's memory is a fixed-size
//! state, one key buffer and one capture buffer, whatever the size of the
//! document.
//!
//! Used by the model scanner (request bodies) and the usage parser
//! (response bodies, SSE events). It never logs anything.

/// The deepest nesting accepted (serde_json's own default limit). Deeper
/// documents are refused as not JSON.
pub const MAX_DEPTH: u32 = 128;
/// Paths are at most this many members deep.
const MAX_PATH: usize = 3;
/// Keys longer than this (raw, escapes included) never match a path.
const MAX_KEY: usize = 128;

/// Where a scan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Valid so far, document not complete.
    Open,
    /// One complete value, nothing but whitespace after it.
    Complete,
    /// Not JSON (or nested deeper than `MAX_DEPTH`, or, with
    /// `objects_only`, a top-level value that is not an object).
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Value,
    ValueOrEnd,
    KeyOrEnd,
    Key,
    Colon,
    CommaOrEnd,
    Str,
    StrEsc,
    StrHex(u8),
    Literal,
    Done,
    Fail,
}

/// A value found at one of the scanner's paths: the index of the path and
/// the value's raw JSON text (empty and `truncated` when it was longer than
/// the capture limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub path: usize,
    pub raw: Vec<u8>,
    pub truncated: bool,
}

struct Capture {
    path: usize,
    /// Container depth where the value started.
    depth: u32,
    buf: Vec<u8>,
    overflow: bool,
}

pub struct JsonScan {
    paths: &'static [&'static [&'static str]],
    capture_limit: usize,
    objects_only: bool,
    st: St,
    in_key: bool,
    depth: u32,
    /// Bit i set: the container at depth i+1 is an object.
    objects: u128,
    /// The member name of the current value at depths 1..=MAX_PATH
    /// (`None`: an array element or a name too long to match).
    keys: [Option<String>; MAX_PATH],
    key_raw: Vec<u8>,
    key_overflow: bool,
    capture: Option<Capture>,
    done: Vec<Captured>,
}

impl JsonScan {
    /// A scanner capturing the values at `paths` (member names from the top
    /// level), each up to `capture_limit` bytes (longer ones are dropped).
    /// `objects_only`: the top-level value must be an object.
    pub fn new(paths: &'static [&'static [&'static str]], capture_limit: usize, objects_only: bool) -> Self {
        Self {
            paths,
            capture_limit,
            objects_only,
            st: St::Value,
            in_key: false,
            depth: 0,
            objects: 0,
            keys: Default::default(),
            key_raw: Vec::new(),
            key_overflow: false,
            capture: None,
            done: Vec::new(),
        }
    }

    /// Starts over with a new document (the buffers keep their capacity).
    pub fn reset(&mut self) {
        self.st = St::Value;
        self.in_key = false;
        self.depth = 0;
        self.objects = 0;
        self.keys = Default::default();
        self.key_raw.clear();
        self.key_overflow = false;
        self.capture = None;
        self.done.clear();
    }

    pub fn syntax(&self) -> Syntax {
        match self.st {
            St::Fail => Syntax::Invalid,
            St::Done => Syntax::Complete,
            // (A top-level number ends only with the document: `finish`.)
            _ => Syntax::Open,
        }
    }

    /// The values completed since the last call.
    pub fn take(&mut self) -> Vec<Captured> {
        std::mem::take(&mut self.done)
    }

    /// Whether a capture completed and waits in `take`.
    pub fn has_captures(&self) -> bool {
        !self.done.is_empty()
    }

    /// Feeds bytes; stops early (returning how many bytes were consumed)
    /// as soon as a value is captured, so a caller can stop reading there.
    pub fn feed_until_capture(&mut self, chunk: &[u8]) -> usize {
        for (i, b) in chunk.iter().enumerate() {
            self.byte(*b);
            if !self.done.is_empty() {
                return i + 1;
            }
            if self.st == St::Fail {
                return chunk.len();
            }
        }
        chunk.len()
    }

    /// Feeds bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        for b in chunk {
            if self.st == St::Fail {
                return;
            }
            self.byte(*b);
        }
    }

    /// The end of the document: a top-level number is complete now.
    pub fn finish(&mut self) -> Syntax {
        if self.st == St::Literal && self.depth == 0 {
            self.value_end(false);
        }
        self.syntax()
    }

    fn byte(&mut self, b: u8) {
        if let Some(c) = &mut self.capture {
            if !c.overflow {
                if c.buf.len() < self.capture_limit {
                    c.buf.push(b);
                } else {
                    c.overflow = true;
                    c.buf = Vec::new();
                }
            }
        }
        self.step(b);
    }

    fn step(&mut self, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.st {
            St::Value | St::ValueOrEnd if ws => {}
            St::ValueOrEnd if b == b']' => self.close(false),
            St::Value | St::ValueOrEnd => self.value_start(b),
            St::KeyOrEnd | St::Key | St::Colon | St::CommaOrEnd | St::Done if ws => {}
            St::KeyOrEnd if b == b'}' => self.close(true),
            St::KeyOrEnd | St::Key if b == b'"' => {
                self.in_key = true;
                self.key_raw.clear();
                self.key_overflow = false;
                self.st = St::Str;
            }
            St::Colon if b == b':' => {
                self.set_key();
                self.st = St::Value;
            }
            St::CommaOrEnd => self.after_value(b),
            St::Str => match b {
                b'"' => {
                    if self.in_key {
                        self.in_key = false;
                        self.st = St::Colon;
                    } else {
                        self.value_end(false);
                    }
                }
                b'\\' => {
                    self.key_byte(b);
                    self.st = St::StrEsc;
                }
                0..=0x1f => self.st = St::Fail,
                _ => self.key_byte(b),
            },
            St::StrEsc => {
                self.key_byte(b);
                self.st = match b {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => St::Str,
                    b'u' => St::StrHex(4),
                    _ => St::Fail,
                }
            }
            St::StrHex(n) if b.is_ascii_hexdigit() => {
                self.key_byte(b);
                self.st = if n <= 1 { St::Str } else { St::StrHex(n - 1) };
            }
            St::Literal if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') => {}
            St::Literal => {
                self.value_end(true);
                // The delimiter belongs to what follows the literal.
                if self.st != St::Fail {
                    self.step(b);
                }
            }
            _ => self.st = St::Fail,
        }
    }

    fn after_value(&mut self, b: u8) {
        let in_object = self.in_object();
        match b {
            b',' if in_object => self.st = St::Key,
            b',' => self.st = St::Value,
            b'}' if in_object => self.close(true),
            b']' if !in_object => self.close(false),
            _ => self.st = St::Fail,
        }
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.objects & (1u128 << (self.depth - 1)) != 0
    }

    fn key_byte(&mut self, b: u8) {
        if self.in_key && !self.key_overflow {
            if self.key_raw.len() < MAX_KEY {
                self.key_raw.push(b);
            } else {
                self.key_overflow = true;
            }
        }
    }

    /// The member name just read becomes the path element at this depth.
    fn set_key(&mut self) {
        let Some(slot) = (self.depth as usize).checked_sub(1).and_then(|i| self.keys.get_mut(i)) else { return };
        *slot = if self.key_overflow {
            None
        } else if self.key_raw.contains(&b'\\') {
            let mut quoted = Vec::with_capacity(self.key_raw.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&self.key_raw);
            quoted.push(b'"');
            serde_json::from_slice::<String>(&quoted).ok()
        } else {
            String::from_utf8(self.key_raw.clone()).ok()
        };
    }

    fn value_start(&mut self, b: u8) {
        if self.depth == 0 && self.objects_only && b != b'{' {
            self.st = St::Fail;
            return;
        }
        if self.capture.is_none() {
            if let Some(path) = self.matching_path() {
                self.capture = Some(Capture { path, depth: self.depth, buf: vec![b], overflow: false });
            }
        }
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => {
                self.in_key = false;
                self.st = St::Str;
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => self.st = St::Literal,
            _ => self.st = St::Fail,
        }
    }

    /// The path the value starting now sits at, if it is one of ours.
    fn matching_path(&self) -> Option<usize> {
        let depth = self.depth as usize;
        if depth == 0 || depth > MAX_PATH {
            return None;
        }
        let here = &self.keys[..depth];
        self.paths
            .iter()
            .position(|p| p.len() == depth && p.iter().zip(here).all(|(want, have)| have.as_deref() == Some(*want)))
    }

    fn open(&mut self, object: bool) {
        if self.depth >= MAX_DEPTH {
            self.st = St::Fail;
            return;
        }
        let bit = 1u128 << self.depth;
        if object {
            self.objects |= bit;
        } else {
            self.objects &= !bit;
        }
        self.depth += 1;
        if let Some(slot) = self.keys.get_mut(self.depth as usize - 1) {
            *slot = None;
        }
        self.st = if object { St::KeyOrEnd } else { St::ValueOrEnd };
    }

    fn close(&mut self, object: bool) {
        if self.depth == 0 || self.in_object() != object {
            self.st = St::Fail;
            return;
        }
        self.depth -= 1;
        self.value_end(false);
    }

    /// A value ended; `literal`: the byte just captured is the delimiter
    /// after it, not part of it.
    fn value_end(&mut self, literal: bool) {
        self.st = if self.depth == 0 { St::Done } else { St::CommaOrEnd };
        if self.capture.as_ref().is_some_and(|c| c.depth == self.depth) {
            if let Some(mut c) = self.capture.take() {
                if literal && !c.overflow {
                    c.buf.pop();
                }
                if c.overflow {
                    c.buf = Vec::new();
                }
                self.done.push(Captured { path: c.path, raw: c.buf, truncated: c.overflow });
            }
        }
    }
}
