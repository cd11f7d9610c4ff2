//! The provider fixtures every tier checks the credential rules with: the
//! Anthropic provider's shape, and the endpoints a platform credential may
//! (stateless) or must never (stateful: files, batches, threads, stored
//! responses…) serve for a tenant without a secret of its own. Written
//! here once, independent of the core's presets (`core::bundle::shared`).

/// `provider set anthropic` arguments after the name: its prefix, header
/// and format (the secret alone in `x-api-key`).
pub const ANTHROPIC_ARGS: [&str; 6] = ["--path-prefix", "/anthropic/", "--header", "x-api-key", "--format", "{secret}"];

/// (method, path) a shared platform credential serves.
pub const STATELESS: [(&str, &str); 9] = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/moderations"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/gpt-4o"),
    ("POST", "/anthropic/v1/messages"),
    ("POST", "/anthropic/v1/messages/count_tokens"),
    ("GET", "/anthropic/v1/models"),
];

/// (method, path) of every stateful endpoint family: refused on a shared
/// credential, served with a tenant's own.
pub const STATEFUL: [(&str, &str); 22] = [
    // OpenAI files
    ("GET", "/v1/files"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files/file-abc123/content"),
    ("POST", "/v1/uploads"),
    // batches
    ("GET", "/v1/batches"),
    ("POST", "/v1/batches"),
    // assistants, threads, vector stores
    ("GET", "/v1/assistants"),
    ("POST", "/v1/threads"),
    ("GET", "/v1/threads/thread_abc/messages"),
    ("GET", "/v1/vector_stores"),
    // fine-tuning and the models it makes
    ("GET", "/v1/fine_tuning/jobs"),
    ("DELETE", "/v1/models/ft:gpt-4o-mini:org:custom:abc"),
    // stored chat completions
    ("GET", "/v1/chat/completions"),
    ("GET", "/v1/chat/completions/chatcmpl-abc"),
    ("POST", "/v1/chat/completions/chatcmpl-abc"),
    ("DELETE", "/v1/chat/completions/chatcmpl-abc"),
    // the Responses API (stores by default; reads stored responses by id)
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/resp_abc"),
    // Anthropic files and message batches
    ("GET", "/anthropic/v1/files"),
    ("POST", "/anthropic/v1/files"),
    ("POST", "/anthropic/v1/messages/batches"),
    ("GET", "/anthropic/v1/messages/batches/msgbatch_abc/results"),
];
