//! The pure core: everything that decides, parses or seals, with no knowledge
//! of Proxy-Wasm. It is compiled natively (tested with `cargo test`) and to
//! `wasm32-wasip1` (tested under a WASI runtime, and run inside Envoy).

pub mod apikey;
pub mod bundle;
pub mod cidr;
pub mod crypto;
pub mod decision;
pub mod errors;
#[cfg(test)]
mod memstore;
pub mod newest;
pub mod quota;
pub mod redact;
pub mod secret;
