//! The pure core: everything that decides, parses or seals, with no knowledge
//! of Proxy-Wasm. It is compiled natively (tested with `cargo test`) and to
//! `wasm32-wasip1` (tested under a WASI runtime, and run inside Envoy).

pub mod apikey;
pub mod budget;
pub mod bundle;
pub mod cidr;
pub mod crypto;
pub mod decision;
pub mod errors;
pub mod jsonscan;
#[cfg(test)]
mod memstore;
pub mod models;
pub mod newest;
pub mod quota;
pub mod ratelimit_wire;
pub mod redact;
pub mod secret;
pub mod usage;
pub mod usage_metrics;
pub mod wipe;
