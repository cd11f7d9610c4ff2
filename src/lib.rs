//! TokenHub Guard.
#[cfg(feature = "admin")]
pub mod admin;
pub mod capabilities;
pub mod core;
// The filter targets wasm32-wasip1; on wasm32-unknown-unknown only the
// core is built (its tests run there too).
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod filter;
