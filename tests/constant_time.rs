//! The secret comparison is constant-time: a dudect-style statistical test
//! (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?", 2017).
//!
//! Two classes of inputs are timed, many times, in random interleaved
//! order: (a) a wrong value equal to the right one except in the LAST byte,
//! (b) a wrong value that differs in the FIRST byte. An early-exit compare
//! takes longer on (a). Welch's t-test compares the two timing
//! distributions, raw and cropped at several percentiles (outliers from a
//! shared, noisy machine); |t| ≥ 4.5 on any of them is a leak (the dudect
//! convention). Checked:
//!
//! - `secret::hashes_equal` on 32-byte hashes;
//! - the key verification path exactly as `decision::decide` runs it: a
//!   presented key with a wrong secret, against a stored hash (the record's
//!   16-byte prefix, `keys::RECORD_HASH_LEN`) that matches the presented
//!   secret's hash in all but its last stored byte, vs a random one;
//! - as a control, a naive early-exit compare on 4 KiB buffers, which the
//!   same test must flag (so the test can fail).
//!
//! Timing on a shared machine is noisy, so the timing tests are `#[ignore]`d
//! in `cargo test`/`make test` and run by `make timing` (release build, one
//! test thread, t statistics printed). Sample counts: `TIMING_SAMPLES`
//! (a multiplier, default 1).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;
mod common;

use std::hint::black_box;
#[cfg(not(target_arch = "x86_64"))]
use std::time::Instant;
use tokenhub_guard::core::bundle::keys::RECORD_HASH_LEN;
use tokenhub_guard::core::bundle::{compile, Policy};
use tokenhub_guard::core::decision::{decide, Decision, RequestFacts};
use tokenhub_guard::core::errors::DenyReason;
use tokenhub_guard::core::secret::{hash_secret, hashes_equal, SecretHash};
// The class sequence and random inputs: seeded, repeatable.
use tokenhub_testkit::Rng;

/// |t| at or above this means the two classes are distinguishable.
const THRESHOLD: f64 = 4.5;

// ------------------------------------------------------------ statistics

/// Running mean and variance (Welford).
#[derive(Default, Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }

    fn var(&self) -> f64 {
        if self.n < 2.0 {
            0.0
        } else {
            self.m2 / (self.n - 1.0)
        }
    }
}

/// Welch's t statistic between two samples' moments.
fn welch_t(a: &Moments, b: &Moments) -> f64 {
    let se = (a.var() / a.n + b.var() / b.n).sqrt();
    if se == 0.0 {
        0.0
    } else {
        (a.mean - b.mean) / se
    }
}

/// The t statistics of one run: over all samples, then over the samples
/// below each cropping percentile (computed over both classes together).
struct Report {
    name: &'static str,
    /// (percentile kept or 1.0 for all, t, n class a, n class b)
    tests: Vec<(f64, f64, usize, usize)>,
    /// Mean time per sample of class (a) and (b), in ticks (cycles on
    /// x86-64, else ns).
    mean_ticks: (f64, f64),
}

impl Report {
    fn max_abs_t(&self) -> f64 {
        self.tests.iter().map(|t| t.1.abs()).fold(0.0, f64::max)
    }

    fn print(&self) {
        println!(
            "{}: mean {:.1} vs {:.1} ticks (a: last byte differs, b: first byte differs); max |t| = {:.2} (threshold {THRESHOLD})",
            self.name,
            self.mean_ticks.0,
            self.mean_ticks.1,
            self.max_abs_t()
        );
        for (p, t, na, nb) in &self.tests {
            let crop = if *p >= 1.0 { "all samples".to_string() } else { format!("below p{:.1}", p * 100.0) };
            println!("    {crop:>16}: t = {t:>8.2}  (n = {na} + {nb})");
        }
    }
}

const MIN_PER_CLASS: f64 = 1000.0;
const CROPS: [f64; 8] = [1.0, 0.999, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5];

fn analyze(name: &'static str, samples: &[(bool, f64)]) -> Report {
    let mut sorted: Vec<f64> = samples.iter().map(|s| s.1).collect();
    sorted.sort_by(f64::total_cmp);
    let mut tests = Vec::new();
    let mut means = (0.0, 0.0);
    for p in CROPS {
        let cut = if p >= 1.0 { f64::INFINITY } else { sorted[((sorted.len() as f64) * p) as usize] };
        let (mut a, mut b) = (Moments::default(), Moments::default());
        for &(class_b, x) in samples.iter().filter(|s| s.1 < cut) {
            if class_b {
                b.push(x)
            } else {
                a.push(x)
            }
        }
        if p >= 1.0 {
            means = (a.mean, b.mean);
        }
        // Like dudect, a crop that leaves too few samples of a class is no test.
        if a.n < MIN_PER_CLASS || b.n < MIN_PER_CLASS {
            continue;
        }
        tests.push((p, welch_t(&a, &b), a.n as usize, b.n as usize));
    }
    Report { name, tests, mean_ticks: means }
}

// ------------------------------------------------------------ measurement

fn samples(base: usize) -> usize {
    let k: usize = std::env::var("TIMING_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    base * k.max(1)
}

/// A timestamp: the cycle counter on x86-64 (fenced, so the timed code
/// stays between the reads; `Instant` has ~10 ns steps here), else the
/// monotonic clock in ns.
#[inline(always)]
fn stamp() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_lfence, _rdtsc};
        // SAFETY: lfence and rdtsc are baseline x86-64 instructions with no
        // memory effects.
        unsafe {
            _mm_lfence();
            let t = _rdtsc();
            _mm_lfence();
            t
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Inputs of both classes, made before any timing: (class is (b), input).
type Pool<I> = Vec<(bool, I)>;

fn pool<I>(per_class: usize, rng: &mut Rng, mut make: impl FnMut(bool, &mut Rng) -> I) -> Pool<I> {
    (0..2 * per_class).map(|i| i % 2 == 1).map(|class_b| (class_b, make(class_b, rng))).collect()
}

/// Times `n` samples. Each picks an input from `pool` at random (so the
/// classes interleave randomly and drift or background load fall on both
/// alike), installs it with `install` — the same instructions for both
/// classes, only the data differ — drains the store buffer, then times
/// `batch` calls of `run`. The first 5% are warm-up.
fn measure<S, I>(
    seed: u64,
    n: usize,
    batch: usize,
    state: &mut S,
    pool: &Pool<I>,
    mut install: impl FnMut(&mut S, &I),
    mut run: impl FnMut(&S) -> bool,
) -> Vec<(bool, f64)> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1000_0000_01b3));
    let warmup = n / 20;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + warmup {
        let (class_b, input) = &pool[(rng.next_u64() % pool.len() as u64) as usize];
        install(state, input);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let start = stamp();
        for _ in 0..batch {
            black_box(run(black_box(&*state)));
        }
        let ticks = stamp().wrapping_sub(start) as f64;
        if i >= warmup {
            out.push((*class_b, ticks));
        }
    }
    out
}

// ------------------------------------------------------------ the subjects

/// The deliberately leaky comparison of the control.
#[inline(never)]
fn naive_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if a[i] != b[i] {
            return false;
        }
    }
    true
}

/// Class (a): `right` with its last byte changed; (b): its first byte.
fn wrong_copy(right: &[u8], class_b: bool, rng: &mut Rng) -> Vec<u8> {
    let mut out = right.to_vec();
    let at = if class_b { 0 } else { out.len() - 1 };
    out[at] ^= rng.nonzero_byte();
    out
}

fn to_hash(v: Vec<u8>) -> SecretHash {
    v.try_into().unwrap()
}

/// `hashes_equal(right, presented)`.
struct HashPair {
    right: SecretHash,
    presented: SecretHash,
}

fn hash_pair() -> (HashPair, Pool<SecretHash>) {
    let right = hash_secret("K00000000001", "S0000000001G00000000000000000000");
    let inputs = pool(256, &mut Rng::new(11), |class_b, rng| to_hash(wrong_copy(&right, class_b, rng)));
    (HashPair { right, presented: right }, inputs)
}

/// `naive_eq(right, presented)` on 4 KiB.
struct Buffers {
    right: Vec<u8>,
    presented: Vec<u8>,
}

fn buffers() -> (Buffers, Pool<Vec<u8>>) {
    let mut rng = Rng::new(7);
    let mut right = vec![0u8; 4096];
    rng.fill(&mut right);
    let inputs = pool(16, &mut rng, |class_b, rng| wrong_copy(&right, class_b, rng));
    (Buffers { presented: right.clone(), right }, inputs)
}

/// `decide` on the fixture's key 1 (a plain key: a record) presented with
/// a wrong secret (valid checksum, so the request reaches the hash
/// comparison); the input is the key's stored hash, as long as stored. One compiled policy for both classes: the stored hash
/// is swapped in place (`KeyIndex::replace_hash`), so the classes differ
/// only in the compared bytes — not in which policy, allocation or cache
/// lines the decision walks.
struct KeyPath {
    policy: Policy,
    key_id: Vec<u8>,
    presented_hash: SecretHash,
    headers: Vec<(&'static str, &'static [u8])>,
}

/// Class (a): stored hashes equal to the presented secret's hash except in
/// the last stored byte; (b): random stored hashes (first byte differs).
fn key_path() -> (KeyPath, Pool<Vec<u8>>) {
    let policy = compile(&common::base_doc()).unwrap();
    let (_, wrong, _) = common::make_key(1, 77);
    let parsed = tokenhub_guard::core::apikey::parse(&wrong).unwrap();
    let presented_hash = hash_secret(parsed.key_id, parsed.secret);
    let key_id = parsed.key_id.as_bytes().to_vec();
    let stored_len = policy.keys.get(&key_id).unwrap().stored_hash().len();
    assert_eq!(stored_len, RECORD_HASH_LEN, "key 1 is a record");
    let presented_prefix = &presented_hash[..stored_len];
    let value: &'static [u8] = format!("Bearer {wrong}").into_bytes().leak();
    let inputs = pool(256, &mut Rng::new(13), |class_b, rng| {
        if class_b {
            let mut random = vec![0u8; stored_len];
            rng.fill(&mut random);
            random[0] = presented_hash[0] ^ rng.nonzero_byte();
            random
        } else {
            wrong_copy(presented_prefix, false, rng)
        }
    });
    let state = KeyPath { policy, key_id, presented_hash, headers: vec![("authorization", value)] };
    (state, inputs)
}

fn install_stored_hash(s: &mut KeyPath, hash: &[u8]) {
    assert!(s.policy.keys.replace_hash(&s.key_id, hash), "key 1 is not in the policy");
}

fn run_key_path(s: &KeyPath) -> bool {
    let facts = RequestFacts {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &s.headers,
        source: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        now: common::NOW,
        oidc: None,
    };
    matches!(decide(&s.policy, &facts), Decision::Deny(d) if d.reason == DenyReason::WrongSecret)
}

// ------------------------------------------------------------ always-run checks

#[test]
fn welch_t_matches_a_worked_example() {
    let (mut a, mut b) = (Moments::default(), Moments::default());
    [1.0, 2.0, 3.0, 4.0].iter().for_each(|x| a.push(*x));
    [2.0, 4.0, 6.0, 8.0].iter().for_each(|x| b.push(*x));
    // means 2.5 and 5, variances 5/3 and 20/3: t = -2.5 / sqrt(25/12).
    let t = welch_t(&a, &b);
    assert!((t - (-2.5 / (25.0f64 / 12.0).sqrt())).abs() < 1e-12, "{t}");
    assert_eq!(welch_t(&a, &a), 0.0);
}

#[test]
fn the_classes_are_what_the_timing_tests_claim() {
    let differing = |x: &[u8], y: &[u8]| -> Vec<usize> { (0..x.len()).filter(|i| x[*i] != y[*i]).collect() };
    let (h, inputs) = hash_pair();
    for (class_b, presented) in &inputs {
        assert_eq!(differing(&h.right, presented), vec![if *class_b { 0 } else { 31 }]);
        assert!(!hashes_equal(&h.right, presented));
    }
    let (buf, inputs) = buffers();
    for (class_b, presented) in &inputs {
        assert_eq!(differing(&buf.right, presented), vec![if *class_b { 0 } else { 4095 }]);
        assert!(!naive_eq(&buf.right, presented));
    }
    assert!(naive_eq(&buf.right, &buf.presented));
    // The key path reaches the comparison and refuses, in both classes.
    let (mut k, inputs) = key_path();
    let last = RECORD_HASH_LEN - 1;
    for (class_b, stored) in &inputs {
        assert_eq!(stored.len(), RECORD_HASH_LEN);
        assert_eq!(stored[..last] == k.presented_hash[..last], !class_b);
        let at = if *class_b { 0 } else { last };
        assert_ne!(stored[at], k.presented_hash[at]);
        install_stored_hash(&mut k, stored);
        assert_eq!(k.policy.keys.get(&k.key_id).map(|key| key.stored_hash()), Some(&stored[..]), "swapped in place");
        assert!(run_key_path(&k), "expected WrongSecret");
    }
}

// ------------------------------------------------------------ timing (make timing)

/// Up to `ROUNDS` independent runs. A constant-time verdict needs one run
/// under the threshold; a leak verdict needs every run at or above it. A
/// real leak grows with the sample count and shows in every run; a burst of
/// load from another process on the shared cores does not.
const ROUNDS: u64 = 3;

fn rounds(name: &'static str, mut run: impl FnMut(u64) -> Vec<(bool, f64)>) -> Vec<f64> {
    let mut ts = Vec::new();
    for round in 0..ROUNDS {
        let report = analyze(name, &run(round));
        println!("round {}:", round + 1);
        report.print();
        ts.push(report.max_abs_t());
        if report.max_abs_t() < THRESHOLD {
            break;
        }
    }
    ts
}

#[test]
#[ignore = "timing: run by `make timing`"]
fn hashes_equal_is_constant_time() {
    let (mut s, inputs) = hash_pair();
    let ts = rounds("secret::hashes_equal (32 B, 16 calls per sample)", |seed| {
        let install = |s: &mut HashPair, h: &SecretHash| s.presented = *h;
        measure(seed, samples(2_000_000), 16, &mut s, &inputs, install, |s| hashes_equal(&s.right, &s.presented))
    });
    assert!(ts.iter().any(|t| *t < THRESHOLD), "hashes_equal leaks where inputs differ: max |t| per round {ts:.2?}");
}

#[test]
#[ignore = "timing: run by `make timing`"]
fn key_verification_in_decide_is_constant_time() {
    let (mut s, inputs) = key_path();
    let ts = rounds("decision::decide, wrong secret (hash prefix match vs random)", |seed| {
        let install = |s: &mut KeyPath, h: &Vec<u8>| install_stored_hash(s, h);
        measure(seed, samples(1_000_000), 1, &mut s, &inputs, install, run_key_path)
    });
    assert!(ts.iter().any(|t| *t < THRESHOLD), "key verification leaks: max |t| per round {ts:.2?}");
}

#[test]
#[ignore = "timing: run by `make timing`"]
fn control_naive_early_exit_comparison_is_detected() {
    let (mut s, inputs) = buffers();
    let ts = rounds("control: naive early-exit compare (4 KiB)", |seed| {
        let install = |s: &mut Buffers, b: &Vec<u8>| s.presented.copy_from_slice(b);
        measure(seed, samples(100_000), 1, &mut s, &inputs, install, |s| naive_eq(&s.right, &s.presented))
    });
    assert!(ts.iter().all(|t| *t >= THRESHOLD), "the test failed to detect a known leak: max |t| per round {ts:.2?}");
}
