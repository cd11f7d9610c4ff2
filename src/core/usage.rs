//! Token usage read from provider responses as they stream through, with
//! bounded memory and without keeping any content: non-streaming JSON
//! (OpenAI `usage`, Anthropic `usage`, Gemini `usageMetadata`) and
//! server-sent events (OpenAI's final chunk with `usage`, Anthropic
//! `message_start` / `message_delta`, the Responses API
//! `response.completed`, Gemini's streamed `usageMetadata`).
//!
//! The SSE parser keeps no event text: the `data:` lines of an event are fed
//! straight into a streaming JSON scanner (`core::jsonscan`), which keeps
//! only the small `usage` objects and the model name (each capped). The
//! carry-over between body chunks is that scanner's fixed state plus at
//! most a field name of a few bytes, so an event split anywhere, down to
//! one byte a chunk, is read the same.

use crate::core::jsonscan::{Captured, JsonScan};
use serde_json::Value;

/// A usage object or model name longer than this is ignored.
pub const MAX_CAPTURE: usize = 4096;

/// What a response used, normalized across providers. `input` counts every
/// input token (cached and cache-write ones included), `output` every
/// output token (reasoning included), so a price table can charge
/// `input - cached_input - cache_write` at the input price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the prompt cache (Anthropic bills them apart).
    pub cache_write: u64,
    /// Output tokens spent on reasoning (already inside `output`).
    pub reasoning: u64,
}

/// A model name as it may appear in an access log: at most 64 characters
/// of `A-Z a-z 0-9 . _ : / @ -`, else nothing (a client-chosen string that
/// matched a `prefix*` pattern must not carry content into the logs).
pub fn loggable_model(model: &str) -> Option<&str> {
    let ok = !model.is_empty()
        && model.len() <= 64
        && model.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'@' | b'-'));
    ok.then_some(model)
}

/// The response body's framing, from its `content-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    EventStream,
}

impl Framing {
    /// `None`: neither JSON nor SSE (nothing to read).
    pub fn from_content_type(value: &str) -> Option<Self> {
        let media = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match media.as_str() {
            "text/event-stream" => Some(Self::EventStream),
            "application/json" => Some(Self::Json),
            m if m.starts_with("application/") && m.ends_with("+json") => Some(Self::Json),
            _ => None,
        }
    }
}

const PATHS: &[&[&str]] = &[
    &["usage"],
    &["usageMetadata"],
    &["message", "usage"],
    &["response", "usage"],
    &["model"],
    &["modelVersion"],
    &["message", "model"],
    &["response", "model"],
];
const FIRST_MODEL_PATH: usize = 4;

/// Fields set by one usage object; later objects override what they set
/// (Anthropic's `message_delta` carries the final output count).
#[derive(Debug, Default, Clone, Copy)]
struct Partial {
    input: Option<u64>,
    output: Option<u64>,
    cached_input: Option<u64>,
    cache_write: Option<u64>,
    reasoning: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line; the bytes of the field name read so far.
    Name {
        len: u8,
        buf: [u8; 5],
    },
    /// After `data:`, before the optional single space.
    DataStart,
    Data,
    /// A line we skip (other fields, comments, overlong names).
    Skip,
}

const LINE_START: Line = Line::Name { len: 0, buf: [0; 5] };

pub struct UsageParser {
    framing: Framing,
    scan: JsonScan,
    line: Line,
    /// The last byte was a CR (a following LF belongs to the same break).
    after_cr: bool,
    /// The current event has had a data line (the next one adds a newline).
    event_has_data: bool,
    partial: Partial,
    seen_usage: bool,
    model: Option<String>,
}

impl UsageParser {
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            scan: JsonScan::new(PATHS, MAX_CAPTURE, true),
            line: LINE_START,
            after_cr: false,
            event_has_data: false,
            partial: Partial::default(),
            seen_usage: false,
            model: None,
        }
    }

    /// Feeds the next response body chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        match self.framing {
            Framing::Json => {
                self.scan.feed(chunk);
                self.collect();
            }
            Framing::EventStream => {
                for b in chunk {
                    self.sse_byte(*b);
                }
            }
        }
    }

    /// The usage read so far (`None` when the response carried none): at
    /// the end of the stream, or what arrived before an abort.
    pub fn usage(&self) -> Option<Usage> {
        let p = &self.partial;
        self.seen_usage.then(|| Usage {
            input: p.input.unwrap_or(0),
            output: p.output.unwrap_or(0),
            cached_input: p.cached_input.unwrap_or(0),
            cache_write: p.cache_write.unwrap_or(0),
            reasoning: p.reasoning.unwrap_or(0),
        })
    }

    /// The model the response names (the first one seen).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    fn sse_byte(&mut self, b: u8) {
        let newline = b == b'\n' || b == b'\r';
        if b == b'\n' && self.after_cr {
            self.after_cr = false;
            return;
        }
        self.after_cr = b == b'\r';
        if newline {
            self.end_of_line();
            return;
        }
        self.line = match self.line {
            Line::Name { len, buf } if b == b':' => {
                if buf.get(..usize::from(len)) == Some(b"data".as_slice()) {
                    if self.event_has_data {
                        // Data lines of one event join with a newline.
                        self.scan.feed(b"\n");
                    }
                    self.event_has_data = true;
                    Line::DataStart
                } else {
                    Line::Skip
                }
            }
            Line::Name { len, mut buf } => match buf.get_mut(usize::from(len)) {
                Some(slot) => {
                    *slot = b;
                    Line::Name { len: len + 1, buf }
                }
                None => Line::Skip,
            },
            Line::DataStart if b == b' ' => Line::Data,
            Line::DataStart | Line::Data => {
                self.scan.feed(&[b]);
                self.collect();
                Line::Data
            }
            Line::Skip => Line::Skip,
        };
    }

    fn end_of_line(&mut self) {
        let blank = self.line == LINE_START;
        self.line = LINE_START;
        if blank {
            // The end of an event: the next one is a new document.
            if self.event_has_data {
                self.scan.finish();
                self.collect();
            }
            self.scan.reset();
            self.event_has_data = false;
        }
    }

    fn collect(&mut self) {
        if !self.scan.has_captures() {
            return;
        }
        for c in self.scan.take() {
            self.apply(&c);
        }
    }

    fn apply(&mut self, c: &Captured) {
        if c.truncated {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&c.raw) else { return };
        if c.path >= FIRST_MODEL_PATH {
            if self.model.is_none() {
                self.model = value.as_str().filter(|m| !m.is_empty() && m.len() <= 256).map(str::to_string);
            }
            return;
        }
        let Some(obj) = value.as_object() else { return };
        let p = if PATHS.get(c.path) == Some(&&["usageMetadata"][..]) { gemini(obj) } else { openai_or_anthropic(obj) };
        let any = p.input.is_some() || p.output.is_some();
        let acc = &mut self.partial;
        acc.input = p.input.or(acc.input);
        acc.output = p.output.or(acc.output);
        acc.cached_input = p.cached_input.or(acc.cached_input);
        acc.cache_write = p.cache_write.or(acc.cache_write);
        acc.reasoning = p.reasoning.or(acc.reasoning);
        self.seen_usage |= any;
    }
}

fn num(obj: &serde_json::Map<String, Value>, name: &str) -> Option<u64> {
    obj.get(name).and_then(Value::as_u64)
}

fn nested(obj: &serde_json::Map<String, Value>, outer: &str, name: &str) -> Option<u64> {
    obj.get(outer).and_then(Value::as_object).and_then(|o| num(o, name))
}

/// OpenAI chat/completions (`prompt_tokens`…), the Responses API
/// (`input_tokens`… with `*_tokens_details`) and Anthropic (`input_tokens`
/// without the cache, which comes in `cache_*_input_tokens`).
fn openai_or_anthropic(obj: &serde_json::Map<String, Value>) -> Partial {
    if obj.contains_key("prompt_tokens") || obj.contains_key("completion_tokens") {
        return Partial {
            input: num(obj, "prompt_tokens"),
            output: num(obj, "completion_tokens"),
            cached_input: nested(obj, "prompt_tokens_details", "cached_tokens"),
            cache_write: None,
            reasoning: nested(obj, "completion_tokens_details", "reasoning_tokens"),
        };
    }
    let cache_read = num(obj, "cache_read_input_tokens");
    let cache_creation = num(obj, "cache_creation_input_tokens");
    if cache_read.is_some() || cache_creation.is_some() {
        // Anthropic: input_tokens excludes both cache counts.
        let base = num(obj, "input_tokens");
        let input = base.map(|b| b.saturating_add(cache_read.unwrap_or(0)).saturating_add(cache_creation.unwrap_or(0)));
        return Partial {
            input,
            output: num(obj, "output_tokens"),
            cached_input: cache_read,
            cache_write: cache_creation,
            reasoning: None,
        };
    }
    Partial {
        input: num(obj, "input_tokens"),
        output: num(obj, "output_tokens"),
        cached_input: nested(obj, "input_tokens_details", "cached_tokens"),
        cache_write: None,
        reasoning: nested(obj, "output_tokens_details", "reasoning_tokens"),
    }
}

/// Gemini: `candidatesTokenCount` excludes the thoughts, which are billed
/// as output.
fn gemini(obj: &serde_json::Map<String, Value>) -> Partial {
    let candidates = num(obj, "candidatesTokenCount");
    let thoughts = num(obj, "thoughtsTokenCount");
    let output = match (candidates, thoughts) {
        (None, None) => None,
        (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
    };
    Partial {
        input: num(obj, "promptTokenCount"),
        output,
        cached_input: num(obj, "cachedContentTokenCount"),
        cache_write: None,
        reasoning: thoughts,
    }
}
