//! Model allowlists: the patterns a key, sub-account or tenant may use, and
//! the bounded scanner that finds the model a request asks for in its JSON
//! body (OpenAI chat/completions, responses, embeddings; Anthropic
//! messages: all carry a top-level `"model"` member).
//!
//! The scanner keeps a fixed-size state whatever the body size; it reads up
//! to the end of the top-level `model` value, then the caller lets the rest
//! stream through. Afterwards, `check_rest` keeps validating what follows
//! (constant memory) so a second top-level `model` member, which JSON
//! parsers resolve differently (first or last wins), is refused rather than
//! decided on the wrong one.

use crate::core::errors::DenyReason;
use crate::core::jsonscan::{Captured, JsonScan, Syntax};

/// How many body bytes may precede the end of the `model` value. Envoy
/// buffers the body while the scanner reads, so its own buffer limit
/// (`per_connection_buffer_limit_bytes`, 1 MiB by default) may refuse a
/// request earlier (413).
pub const DEFAULT_SCAN_BOUND: usize = 4 << 20;
/// The longest model name read.
pub const MAX_MODEL_LEN: usize = 256;
/// The longest pattern accepted in a bundle.
pub const MAX_PATTERN_LEN: usize = 128;

/// The largest output cap taken from a request (a reservation, not a
/// promise: a model stops at its own limit long before).
pub const MAX_OUTPUT_CAP: u64 = 1 << 20;

/// `model` (index 0), then the output caps a request may state: OpenAI chat
/// (`max_tokens`, `max_completion_tokens`), Responses (`max_output_tokens`),
/// Anthropic (`max_tokens`), Gemini (`generationConfig.maxOutputTokens`).
const MODEL_PATH: &[&[&str]] = &[
    &["model"],
    &["max_tokens"],
    &["max_completion_tokens"],
    &["max_output_tokens"],
    &["generationConfig", "maxOutputTokens"],
];

/// What the scanner knows so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelScan {
    /// The top-level `model` member, a string.
    Found(String),
    /// Not a JSON object, `model` is not a string or too long, or the
    /// object has `model` twice.
    NotJson,
    /// No `model` before the bound, or none in the whole body.
    NotFoundWithinBound,
    /// Feed more body.
    NeedMore,
}

/// After the decision: whether the rest of the body is still consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    Fine,
    /// A second top-level `model` member (sticky).
    DuplicateModel,
}

pub struct ModelScanner {
    scan: JsonScan,
    seen: usize,
    bound: usize,
    result: Option<ModelScan>,
    duplicate: bool,
    max_output: Option<u64>,
}

impl ModelScanner {
    pub fn new(bound: usize) -> Self {
        // The raw value: quotes and escapes (up to 6 bytes a character).
        let scan = JsonScan::new(MODEL_PATH, MAX_MODEL_LEN * 6 + 2, true);
        Self { scan, seen: 0, bound, result: None, duplicate: false, max_output: None }
    }

    /// Feeds the next body chunk. Once the result is known, further calls
    /// return it unchanged (pass later chunks to `check_rest`). The bytes of
    /// this chunk after the model are checked here already: a duplicate
    /// `model` in them turns `Found` into `NotJson`.
    pub fn feed(&mut self, chunk: &[u8]) -> ModelScan {
        if let Some(r) = &self.result {
            return r.clone();
        }
        let room = self.bound.saturating_sub(self.seen);
        let slice = chunk.get(..room).unwrap_or(chunk);
        // Output caps before the model are noted on the way.
        let mut used = 0;
        let mut model = None;
        while used < slice.len() && model.is_none() {
            used += self.scan.feed_until_capture(slice.get(used..).unwrap_or_default());
            for c in self.scan.take() {
                if c.path == 0 {
                    model = Some(decode_model(&c));
                } else {
                    self.note_output_cap(&c);
                }
            }
            if self.scan.syntax() == Syntax::Invalid {
                break;
            }
        }
        self.seen += used;
        let syntax = self.scan.syntax();
        let outcome = if let Some(found) = model {
            found
        } else if syntax == Syntax::Invalid {
            ModelScan::NotJson
        } else if self.seen >= self.bound {
            // (A complete object without `model` waits for the end of the
            // body: trailing bytes may still make it not JSON.)
            ModelScan::NotFoundWithinBound
        } else {
            return ModelScan::NeedMore;
        };
        let outcome = match outcome {
            ModelScan::Found(m) => {
                if self.check_rest(chunk.get(used..).unwrap_or_default()) == Rest::DuplicateModel {
                    ModelScan::NotJson
                } else {
                    ModelScan::Found(m)
                }
            }
            other => other,
        };
        self.result = Some(outcome.clone());
        outcome
    }

    /// The end of the body without a result so far.
    pub fn finish(&mut self) -> ModelScan {
        if let Some(r) = &self.result {
            return r.clone();
        }
        let r = match self.scan.finish() {
            Syntax::Invalid | Syntax::Open => ModelScan::NotJson,
            Syntax::Complete => ModelScan::NotFoundWithinBound,
        };
        self.result = Some(r.clone());
        r
    }

    /// The body after the model: scanned with constant memory for a
    /// second top-level `model` member, never kept.
    pub fn check_rest(&mut self, chunk: &[u8]) -> Rest {
        if !self.duplicate {
            self.scan.feed(chunk);
            for c in self.scan.take() {
                if c.path == 0 {
                    self.duplicate = true;
                } else {
                    self.note_output_cap(&c);
                }
            }
        }
        if self.duplicate {
            Rest::DuplicateModel
        } else {
            Rest::Fine
        }
    }
}

impl ModelScanner {
    /// The largest output cap the body stated so far (`max_tokens`,
    /// `max_completion_tokens`, `max_output_tokens`,
    /// `generationConfig.maxOutputTokens`; a non-negative integer, at most
    /// `MAX_OUTPUT_CAP`). Several: the largest, whichever a provider reads.
    pub fn max_output(&self) -> Option<u64> {
        self.max_output
    }

    fn note_output_cap(&mut self, c: &Captured) {
        if c.truncated {
            return;
        }
        if let Ok(n) = serde_json::from_slice::<u64>(&c.raw) {
            let n = n.min(MAX_OUTPUT_CAP);
            self.max_output = Some(self.max_output.map_or(n, |m| m.max(n)));
        }
    }
}

fn decode_model(c: &Captured) -> ModelScan {
    if c.truncated {
        return ModelScan::NotJson;
    }
    match serde_json::from_slice::<String>(&c.raw) {
        Ok(m) if !m.is_empty() && m.len() <= MAX_MODEL_LEN => ModelScan::Found(m),
        _ => ModelScan::NotJson,
    }
}

/// One allowlist entry: an exact name, or `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    /// Parses a pattern; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > MAX_PATTERN_LEN {
            return Err(format!("must be 1-{MAX_PATTERN_LEN} characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{text:?} may hold only printable ASCII without spaces"));
        }
        match text.find('*') {
            None => Ok(Self::Exact(text.to_string())),
            Some(i) if i + 1 == text.len() && i > 0 => Ok(Self::Prefix(text[..i].to_string())),
            Some(_) if text == "*" => Err("\"*\" would allow every model; remove the model list instead".to_string()),
            Some(_) => Err(format!("{text:?}: '*' is allowed only once, at the end (e.g. \"gpt-4o*\")")),
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        match self {
            Self::Exact(name) => name == model,
            Self::Prefix(prefix) => model.starts_with(prefix.as_str()),
        }
    }
}

/// The models one level (key, sub-account or tenant) allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelRules {
    patterns: Vec<Pattern>,
}

impl ModelRules {
    /// `None` for an empty list (no rule at this level).
    pub fn compile(list: &[String]) -> Result<Option<Self>, (usize, String)> {
        if list.is_empty() {
            return Ok(None);
        }
        let patterns = list.iter().enumerate().map(|(i, p)| Pattern::parse(p).map_err(|e| (i, e)));
        Ok(Some(Self { patterns: patterns.collect::<Result<_, _>>()? }))
    }

    pub fn allows(&self, model: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(model))
    }
}

/// The tightest applies: every level that sets a list must allow the model.
pub fn allowed_by_all(levels: &[&Option<ModelRules>], model: &str) -> bool {
    levels.iter().all(|l| l.as_ref().is_none_or(|r| r.allows(model)))
}

/// The body decision once the scanner has a result (`None`: feed more).
pub fn verdict(levels: &[&Option<ModelRules>], scan: &ModelScan) -> Option<Result<(), DenyReason>> {
    match scan {
        ModelScan::NeedMore => None,
        ModelScan::Found(m) if allowed_by_all(levels, m) => Some(Ok(())),
        ModelScan::Found(_) => Some(Err(DenyReason::ModelNotAllowed)),
        ModelScan::NotJson | ModelScan::NotFoundWithinBound => Some(Err(DenyReason::ModelUnreadable)),
    }
}

/// The largest model list (`GET /v1/models` response) the guard filters;
/// a longer one is refused (502) rather than passed unfiltered.
pub const MAX_MODEL_LIST: usize = 1 << 20;

/// Whether `path` (without its query) lists models: `…/v1/models`, the
/// OpenAI and Anthropic list endpoints.
pub fn is_model_list(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    method == "GET" && path.ends_with("/v1/models")
}

/// Not wired into the filter yet: replacing a response body needs the
/// host call `proxy_set_buffer_bytes`, which the module's least-privilege
/// capability list (`src/capabilities.rs`, enforced by
/// `tests/capabilities.rs`: no body or buffer writes) does not grant. See
/// README, "Model allowlists and token usage".
///
/// A model list response (OpenAI `{"object":"list","data":[{"id":…}]}`,
/// Anthropic `{"data":[{"id":…,"type":"model"}],"has_more":…}`) with only
/// the entries every level allows; every other member is kept. `None`: not
/// such a JSON object (the caller refuses it, never passes it unfiltered).
pub fn filter_model_list(levels: &[&Option<ModelRules>], body: &[u8]) -> Option<Vec<u8>> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = doc.as_object_mut()?.get_mut("data")?.as_array_mut()?;
    data.retain(|entry| entry.get("id").and_then(|id| id.as_str()).is_some_and(|id| allowed_by_all(levels, id)));
    serde_json::to_vec(&doc).ok()
}

/// Whether any level restricts models (then the body must be read).
pub fn any_rules(levels: &[&Option<ModelRules>]) -> bool {
    levels.iter().any(|l| l.is_some())
}
