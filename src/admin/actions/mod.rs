//! The operations, shared by the CLI and the admin HTTP service. Each takes
//! a `Session` (who is acting) and typed arguments, goes through the
//! session's authentication, authorization and audit, and returns a `Reply`:
//! text for people, JSON for scripts and the API. Secrets appear in a reply
//! only where they are issued (a new key, token, 2FA secret, recovery codes).

pub mod access;
pub mod admins;
pub mod auditing;
pub mod identities;
pub mod keys;
pub mod prices;
pub mod privacy;
pub mod providers;
pub mod render;
pub mod setup;
pub mod system;
pub mod tenants;

use serde_json::Value;
use std::borrow::Cow;

/// What an operation returns: text for a terminal, JSON for `--json` and
/// the HTTP API.
pub struct Reply {
    body: Body,
    /// Printed on stderr by the CLI (a lock-out warning, a secret shown once).
    pub warnings: Vec<Warning>,
}

/// A reply's text and JSON: made with it, or rendered on demand (a report
/// of 100 000 rows is rendered once, in the one format asked for).
enum Body {
    Made { text: String, json: Value },
    Deferred(Box<dyn Render>),
}

/// A reply rendered on demand.
pub trait Render {
    fn text(&self) -> String;
    fn json(&self) -> Value;
    /// The JSON written straight to `out`, without building a `Value`.
    fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}

/// What a reply tells the operator beside its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The reply carries a secret that is shown only now (a key, a token,
    /// a 2FA secret, recovery codes): how to keep it.
    ShownOnce(String),
    /// The change is done, but has a consequence to know (an allowlist that
    /// refuses everything, a stricter level above, quotas not counted).
    Consequence(String),
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ShownOnce(m) => f.write_str(m),
            Self::Consequence(m) => write!(f, "warning: {m}"),
        }
    }
}

impl Reply {
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self { body: Body::Made { text: text.into(), json }, warnings: Vec::new() }
    }

    pub fn deferred(body: impl Render + 'static) -> Self {
        Self { body: Body::Deferred(Box::new(body)), warnings: Vec::new() }
    }

    pub fn text(&self) -> Cow<'_, str> {
        match &self.body {
            Body::Made { text, .. } => Cow::Borrowed(text),
            Body::Deferred(r) => Cow::Owned(r.text()),
        }
    }

    pub fn json(&self) -> Cow<'_, Value> {
        match &self.body {
            Body::Made { json, .. } => Cow::Borrowed(json),
            Body::Deferred(r) => Cow::Owned(r.json()),
        }
    }

    /// The JSON, then a line break.
    pub fn write_json(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        match &self.body {
            Body::Made { json, .. } => serde_json::to_writer(&mut *out, json)?,
            Body::Deferred(r) => r.write_json(out)?,
        }
        out.write_all(b"\n")
    }

    /// The JSON, taken out of the reply.
    pub fn into_json(self) -> Value {
        match self.body {
            Body::Made { json, .. } => json,
            Body::Deferred(r) => r.json(),
        }
    }

    pub fn warn(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(Warning::Consequence(w.into()));
        self
    }

    pub fn shown_once(mut self, how_to_keep_it: impl Into<String>) -> Self {
        self.warnings.push(Warning::ShownOnce(how_to_keep_it.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shown_once_is_told_plainly_a_consequence_as_a_warning() {
        let r =
            Reply::new("", Value::Null).shown_once("This is the only time the key is shown.").warn("stricter above");
        let lines: Vec<String> = r.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["This is the only time the key is shown.", "warning: stricter above"]);
    }
}
