//! What the guard's module may do inside Envoy, by Proxy-Wasm/WASI name:
//! the `capability_restriction_config` that `tokenhub-admin publish` writes
//! beside the bundle. Envoy stubs every other host call and never enters the
//! VM for an unlisted callback. Least privilege: no outbound HTTP calls,
//! one outbound gRPC call only (the global quota mode's budget top-up to
//! the rate limit service, `core::ratelimit_wire`, with its answer
//! callbacks and the resumption of the body it held), no queues, no body
//! or buffer writes. And speed: the trailer, log
//! and done callbacks are not listed, so Envoy skips those VM entries on
//! every request. The body callbacks are listed since model allowlists:
//! Envoy enters the VM once per body chunk, and the guard
//! returns at once unless the credential has model rules (then it reads the
//! request body for the model and the response body for token usage).
//!
//! The list lives beside the filter (`src/filter`), not in the admin: the
//! test `tests/capabilities.rs` reads the import and export tables of the
//! built `tokenhub_guard.wasm` and fails when the module imports a host call
//! missing here (it would trap: 503 for every request) or when an entry here
//! is no longer imported (a privilege nothing uses).

/// Callbacks the filter implements (exports Envoy may enter).
pub const CALLBACKS: [&str; 10] = [
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_context_create",
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_delete",
    "proxy_on_grpc_receive",
    "proxy_on_grpc_close",
];

/// Proxy-Wasm host calls the filter makes (module `env` imports).
pub const HOST_CALLS: [&str; 18] = [
    "proxy_log",
    "proxy_get_buffer_bytes",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_get_current_time_nanoseconds",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_header_map_pairs",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_send_local_response",
    "proxy_grpc_call",
    "proxy_continue_stream",
    // The SDK enters the stream's context before a gRPC answer's callback.
    "proxy_set_effective_context",
];

/// WASI calls (module `wasi_snapshot_preview1` imports): the bundle key
/// from the environment, hash-map seeds, panic messages and exit, made by
/// the filter or by Rust's standard library on its behalf.
pub const WASI: [&str; 5] = ["environ_get", "environ_sizes_get", "random_get", "fd_write", "proc_exit"];

/// Everything allowed, in the order it is written to the ECDS file.
pub fn all() -> impl Iterator<Item = &'static str> {
    CALLBACKS.into_iter().chain(HOST_CALLS).chain(WASI)
}
