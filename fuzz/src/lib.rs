//! The fuzz harness for the pure core: one function per `cargo fuzz` target,
//! each feeding arbitrary bytes to the core and asserting invariants against
//! oracles derived here, independently of the core where possible (key
//! strings, hashes, CIDR containment and the whole request decision are
//! recomputed from a plain model, not by calling the code under test).
//!
//! The same file is compiled into `tests/fuzz_regressions.rs` (by path), so
//! every committed seed and every saved crash is replayed by `cargo test`
//! natively, through exactly the code the fuzzer ran.
//!
//! A failed invariant panics; libFuzzer saves the input as a crash.

pub mod cidr_model;
pub mod decision;
pub mod fixture;
pub mod input;
pub mod seeds;
pub mod targets;

pub use targets::{apikey, bundle_compile, bundle_open, cidr, decision, model_scan, usage};

/// A target body.
pub type Target = fn(&[u8]);

/// The targets, by name, as `cargo fuzz` knows them.
pub const TARGETS: [(&str, Target); 7] = [
    ("bundle_open", bundle_open),
    ("bundle_compile", bundle_compile),
    ("apikey", apikey),
    ("cidr", cidr),
    ("decision", decision),
    ("model_scan", model_scan),
    ("usage", usage),
];
