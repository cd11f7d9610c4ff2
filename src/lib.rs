//! TokenHub Guard.
#[cfg(feature = "admin")]
pub mod admin;
pub mod capabilities;
pub mod core;
#[cfg(target_arch = "wasm32")]
mod filter;
