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

/// What an operation returns.
#[derive(Debug, Clone)]
pub struct Reply {
    /// For a terminal.
    pub text: String,
    /// For `--json` and the HTTP API.
    pub json: Value,
    /// Printed on stderr by the CLI (a lock-out warning, a secret shown once).
    pub warnings: Vec<Warning>,
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
        Self { text: text.into(), json, warnings: Vec::new() }
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
