//! The one test kit of TokenHub Guard, shared by the core's tests
//! (`tests/`), the end-to-end harness (`integration/`) and the fuzz harness
//! (`fuzz/`): one seedable PRNG, one independent oracle of the API key
//! format, one policy fixture (rendered to bundle JSON), the provider
//! fixtures, one HTTP/1 message reader, one CLI driver. Plain std, so it
//! builds for every target the tests run on.

// Test support: a failed run fails the test, with everything it said.
#![allow(clippy::panic)]

pub mod cli;
pub mod fixture;
pub mod http1;
pub mod keys;
pub mod providers;
pub mod rng;

pub use rng::Rng;
