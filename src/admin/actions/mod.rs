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
pub mod providers;
pub mod render;
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
    pub warnings: Vec<String>,
}

impl Reply {
    pub fn new(text: impl Into<String>, json: Value) -> Self {
        Self { text: text.into(), json, warnings: Vec::new() }
    }

    pub fn warn(mut self, w: impl Into<String>) -> Self {
        self.warnings.push(w.into());
        self
    }
}
