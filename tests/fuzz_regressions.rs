//! Replays the fuzz corpus natively: every committed seed under
//! `fuzz/corpus/<target>/` and every saved crash under
//! `fuzz/regressions/<target>/` goes through the same harness the fuzzer
//! runs (`fuzz/src`, included here by path), so a fixed crash stays fixed
//! and a broken invariant shows up in plain `cargo test`.
//!
//! `make fuzz-seeds` rewrites the seed corpus from the fixture (after a
//! bundle format change); `committed_seeds_are_current` says when it is due.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn replay(kind: &str) -> usize {
    let mut n = 0;
    for (target, run) in harness::TARGETS {
        for file in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails (replay: cargo fuzz run {target} {})",
                file.display(),
                file.display()
            );
            n += 1;
        }
    }
    n
}

/// The seeds, generated in memory: runs on every target, wasm32-wasip1
/// included (the core as Envoy runs it), where the WASI runner gives the
/// tests no file system.
#[test]
fn generated_seeds_pass_every_invariant() {
    for (target, name, bytes) in harness::seeds::all() {
        let run = harness::TARGETS.iter().find(|(t, _)| *t == target).map(|(_, f)| *f).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target}/{name} fails");
    }
}

#[test]
#[cfg_attr(target_family = "wasm", ignore = "no file system under the wasm test runners")]
fn seed_corpus_replays_cleanly() {
    let n = replay("corpus");
    assert!(n >= harness::seeds::all().len(), "only {n} seed files found");
}

#[test]
#[cfg_attr(target_family = "wasm", ignore = "no file system under the wasm test runners")]
fn saved_crashes_replay_cleanly() {
    replay("regressions");
}

#[test]
#[cfg_attr(target_family = "wasm", ignore = "no file system under the wasm test runners")]
fn committed_seeds_are_current() {
    let dir = fuzz_dir().join("corpus");
    if std::env::var_os("FUZZ_WRITE_SEEDS").is_some() {
        for (target, name, bytes) in harness::seeds::all() {
            std::fs::create_dir_all(dir.join(target)).unwrap();
            std::fs::write(dir.join(target).join(name), bytes).unwrap();
        }
    }
    for (target, name, bytes) in harness::seeds::all() {
        let path = dir.join(target).join(&name);
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "{} is stale or missing: run `make fuzz-seeds`", path.display());
    }
}

/// The decision seeds cover both outcomes, so the fuzzer starts from
/// requests that get through and ones that stop at each step.
#[test]
fn decision_seeds_reach_allow_and_each_denial_step() {
    use harness::decision::{check, decode, Expect};
    let fx = harness::fixture::fixture();
    let mut allows = 0;
    let mut denials = std::collections::BTreeSet::new();
    for (target, name, bytes) in harness::seeds::all() {
        if target != "decision" {
            continue;
        }
        match check(fx, &decode(&bytes)) {
            Expect::Allow { .. } => {
                assert!(name.starts_with("allow"), "{name} is allowed");
                allows += 1;
            }
            Expect::Deny { reasons, .. } => {
                assert!(name.starts_with("deny"), "{name} is denied with {reasons:?}");
                denials.insert(format!("{:?}", reasons[0]));
            }
        }
    }
    assert!(allows >= 5, "{allows} allowed seeds");
    assert!(denials.len() >= 6, "{denials:?}");
}

// Crashes the fuzzer found, one test each (also replayed by
// `saved_crashes_replay_cleanly`); embedded, so they run under WASI too.

/// `cidr`: `parse_cidr` (via ipnet) accepts IPv4 octets with leading zeros
/// in CIDR form (`00.0.0.0/8`; `010.1.2.0/24` is read as 10.1.2.0/24) while
/// the standard parser, and `parse_cidr` on a bare address, refuse them.
/// Octal or decimal is ambiguous (CVE-2021-29921); the harness now accepts
/// either a refusal or the decimal reading, never another.
#[test]
fn regression_cidr_leading_zero_octets() {
    harness::cidr(include_bytes!("../fuzz/regressions/cidr/leading-zero-octets"));
    harness::cidr(include_bytes!("../fuzz/regressions/cidr/leading-zero-forms"));
}

/// `cidr`: ipnet accepts an IPv6 `::` standing for no group at all
/// (`::ff:f:ff0f:fff:f:f:0:0/96`, eight groups besides it), which std
/// refuses; read unambiguously, so accepted by the harness.
#[test]
fn regression_cidr_ipv6_empty_double_colon() {
    harness::cidr(include_bytes!("../fuzz/regressions/cidr/ipv6-empty-double-colon"));
    harness::cidr(include_bytes!("../fuzz/regressions/cidr/ipv6-double-colon-forms"));
}
