//! TokenHub Guard.
pub mod core;
#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(feature = "admin")]
pub mod admin;
