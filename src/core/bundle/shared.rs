//! Which provider endpoints the platform's shared credential may serve.
//!
//! A tenant without its own provider secret is served with the platform's.
//! Providers keep objects under the credential that created them (OpenAI
//! files, batches, assistants, threads, vector stores, fine-tuning jobs,
//! stored chat completions and responses; Anthropic files and message
//! batches), so on a shared credential tenant B could list and read tenant
//! A's objects. The shared credential therefore serves only the endpoints a
//! provider declares (`shared_endpoints`), and the presets below name the
//! stateless ones. Everything else needs the tenant's own secret.
//!
//! Why these and not others, with header-only decisions (the guard never
//! reads bodies):
//! - Chat completions: `POST …/chat/completions` only. A client may send
//!   `store: true`; the completion is then kept under the platform's
//!   account, but every endpoint that reads stored completions back
//!   (`GET …/chat/completions[/…]`, updates, deletes) is refused on the
//!   shared credential, so no tenant can read another's.
//! - The Responses API (`…/responses`) stores by default and reads stored
//!   responses through `previous_response_id` in the body: it is not in
//!   the preset, so it needs the tenant's own secret.
//! - Models: `GET` only (listing and retrieving); `DELETE` of a fine-tuned
//!   model is not shared, and fine-tuning itself is refused, so the shared
//!   account holds no tenant's model.
//! - Nothing that uploads or references stored objects is shared, so the
//!   shared account holds no tenant's files for a `file_id` to point at.

/// OpenAI's stateless endpoints, relative to the provider's path prefix,
/// which stands for the SDK's base URL (`https://api.openai.com/v1`).
pub const OPENAI: [&str; 12] = [
    "POST chat/completions",
    "POST completions",
    "POST embeddings",
    "POST moderations",
    "POST audio/speech",
    "POST audio/transcriptions",
    "POST audio/translations",
    "POST images/generations",
    "POST images/edits",
    "POST images/variations",
    "GET models",
    "GET models/*",
];

/// Anthropic's stateless endpoints, relative to the provider's path prefix,
/// which stands for the SDK's base URL (`https://api.anthropic.com`).
pub const ANTHROPIC: [&str; 5] =
    ["POST v1/messages", "POST v1/messages/count_tokens", "POST v1/complete", "GET v1/models", "GET v1/models/*"];

/// The preset of that name (`openai`, `anthropic`), if there is one.
pub fn preset(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "openai" => Some(&OPENAI),
        "anthropic" => Some(&ANTHROPIC),
        _ => None,
    }
}

/// A preset's entries as bundle `shared_endpoints` under `path_prefix`.
pub fn expand(path_prefix: &str, entries: &[&str]) -> Vec<String> {
    let base = path_prefix.trim_end_matches('/');
    entries
        .iter()
        .map(|e| match e.split_once(' ') {
            Some((method, rel)) => format!("{method} {base}/{rel}"),
            None => format!("* {base}/{e}"),
        })
        .collect()
}

/// Client-sent headers that steer a provider credential to another
/// organisation, project or billing account (or carry a provider
/// credential of their own). The guard removes them from every request, so
/// only what the platform configured reaches the provider.
pub const PROVIDER_ROUTING_HEADERS: [&str; 5] =
    ["openai-organization", "openai-project", "api-key", "x-goog-api-key", "x-goog-user-project"];

/// One compiled `shared_endpoints` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEndpoint {
    /// `None` = any method.
    method: Option<String>,
    /// The exact path, or (with `below`) the prefix ending in `/`.
    path: String,
    below: bool,
}

impl SharedEndpoint {
    /// Parses `"METHOD /path"` or `"METHOD /path/*"`; the path must be
    /// under `provider_prefix`. The error says what is wrong, not where.
    pub fn parse(entry: &str, provider_prefix: &str) -> Result<Self, String> {
        let (method, path) =
            entry.split_once(' ').ok_or_else(|| format!("{entry:?} must be \"METHOD /path\" or \"METHOD /path/*\""))?;
        let method = match method {
            "*" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(m.to_string()),
            m => return Err(format!("{m:?} is not an upper-case HTTP method or *")),
        };
        let (path, below) = match path.strip_suffix("/*") {
            Some(p) => (format!("{p}/"), true),
            None => (path.to_string(), false),
        };
        let plain = path.starts_with('/')
            && !path.contains(['?', '#', '%', '\\', '*'])
            && path.bytes().all(|b| b.is_ascii_graphic())
            && !path.split('/').any(|seg| seg == "." || seg == "..");
        if !plain {
            return Err(format!("{entry:?}: the path must start with / (no query, escapes, dot segments or * inside)"));
        }
        if !crate::core::decision::path_has_prefix(&path, provider_prefix) {
            return Err(format!("{entry:?} is not under the provider's path_prefix {provider_prefix:?}"));
        }
        Ok(Self { method, path, below })
    }

    /// True when the shared credential may serve `method path` (the path
    /// without its query).
    pub fn allows(&self, method: &str, path: &str) -> bool {
        let method_ok = self.method.as_deref().is_none_or(|m| m == method);
        let path_ok =
            if self.below { path.len() > self.path.len() && path.starts_with(&self.path) } else { path == self.path };
        method_ok && path_ok
    }
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ep(entry: &str) -> SharedEndpoint {
        SharedEndpoint::parse(entry, "/v1/").unwrap()
    }

    #[test]
    fn exact_paths_do_not_cover_what_lies_below() {
        let chat = ep("POST /v1/chat/completions");
        assert!(chat.allows("POST", "/v1/chat/completions"));
        assert!(!chat.allows("GET", "/v1/chat/completions"), "listing stored completions");
        assert!(!chat.allows("POST", "/v1/chat/completions/chatcmpl-1"), "updating a stored completion");
        assert!(!chat.allows("POST", "/v1/chat/completionsx"));
    }

    #[test]
    fn star_covers_only_what_lies_below() {
        let models = ep("GET /v1/models/*");
        assert!(models.allows("GET", "/v1/models/gpt-x"));
        assert!(!models.allows("GET", "/v1/models"));
        assert!(!models.allows("GET", "/v1/models/"));
        assert!(!models.allows("DELETE", "/v1/models/ft-x"));
        assert!(ep("* /v1/models/*").allows("DELETE", "/v1/models/ft-x"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in
            ["/v1/x", "post /v1/x", "POST v1/x", "POST /v1/x?y", "POST /v1/../files", "POST /v1/a*b", "POST /v2/x"]
        {
            assert!(SharedEndpoint::parse(bad, "/v1/").is_err(), "{bad}");
        }
    }

    #[test]
    fn presets_expand_under_the_prefix_and_hold_no_stateful_api() {
        let openai = expand("/v1/", &OPENAI);
        assert!(openai.contains(&"POST /v1/chat/completions".to_string()));
        let anthropic = expand("/anthropic", &ANTHROPIC);
        assert!(anthropic.contains(&"POST /anthropic/v1/messages".to_string()));
        for entry in openai.iter().chain(&anthropic) {
            assert!(SharedEndpoint::parse(entry, "/").is_ok(), "{entry}");
            for stateful in ["files", "batches", "assistants", "threads", "vector_stores", "fine_tuning", "responses"] {
                assert!(!entry.contains(stateful), "{entry} is stateful");
            }
        }
    }
}
