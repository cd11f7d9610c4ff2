//! Runs the native `core::decision::decide` a given number of times, for
//! `valgrind --tool=callgrind` (instruction counts are stable on a noisy
//! machine: run it with two iteration counts and take the difference per
//! call) and for counting heap allocations per decision.
//!
//! usage: decide-count --keys N [--cidrs M] --case CASE --iters I
//!        decide-count --keys N [--cidrs M] --memory
//! Prints one JSON object: the decision label and allocations per call; or,
//! with --memory, the heap the filter's `on_configure` needs per key: peak
//! while opening and compiling the sealed bundle (the sealed text, the
//! decrypted JSON, the parsed document and the compiled policy at once)
//! and what the compiled policy keeps. Native sizes (64-bit pointers): the
//! wasm32 filter's are somewhat smaller.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

fn grow(by: usize) {
    let live = LIVE.fetch_add(by as u64, Ordering::Relaxed) + by as u64;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        grow(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        grow(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let mut keys = 10usize;
    let mut cidrs = 1usize;
    let mut case = "allow".to_string();
    let mut iters = 1000u64;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--memory" {
            memory(keys, cidrs);
            return;
        }
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--keys" => keys = v.parse().unwrap_or(keys),
            "--cidrs" => cidrs = v.parse().unwrap_or(cidrs),
            "--case" => case = v,
            "--iters" => iters = v.parse().unwrap_or(iters),
            other => {
                eprintln!("decide-count: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let (doc, creds) = tokenhub_bench::policy(keys, cidrs, 1);
    let policy = match tokenhub_guard::core::bundle::compile(&doc) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("decide-count: policy does not compile: {e}");
            std::process::exit(1);
        }
    };
    drop(doc);
    let Some((headers, ip)) = tokenhub_bench::case_request(&creds, &case) else {
        eprintln!("decide-count: unknown case {case}");
        std::process::exit(2);
    };
    let now = 1_800_000_000;
    let label = tokenhub_bench::decision_label(&policy, &headers, ip, now);
    std::hint::black_box(tokenhub_bench::decide_once(&policy, &headers, ip, now));
    let (a0, b0) = (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
    for _ in 0..iters {
        std::hint::black_box(tokenhub_bench::decide_once(
            std::hint::black_box(&policy),
            std::hint::black_box(&headers),
            ip,
            now,
        ));
    }
    let per = |x: u64| if iters == 0 { 0.0 } else { x as f64 / iters as f64 };
    println!(
        "{}",
        serde_json::json!({
            "keys": keys, "cidrs": cidrs, "case": case, "iters": iters, "decision": label,
            "allocs_per_call": per(ALLOCS.load(Ordering::Relaxed) - a0),
            "alloc_bytes_per_call": per(BYTES.load(Ordering::Relaxed) - b0),
        })
    );
}

/// Heap needed to load a bundle of `keys` keys, as `on_configure` does it:
/// the sealed binary envelope `publish` writes (what the VM is handed),
/// opened and compiled.
fn memory(keys: usize, cidrs: usize) {
    use tokenhub_guard::core::bundle::{delta, pack, seal, BundleKey};
    let key = BundleKey::from_bytes([7; 32]);
    let (doc, _) = tokenhub_bench::policy(keys, cidrs, 1);
    let sealed = {
        let plain = pack(&doc).unwrap_or_default();
        let text = seal(&plain, &key, doc.version, [1; 12]).unwrap_or_default();
        seal::to_binary(&text).unwrap_or_default()
    };
    drop(doc);
    let sealed_len = sealed.len() as u64;
    let base = LIVE.load(Ordering::Relaxed) - sealed_len;
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    // The filter's path: the configuration's bytes decrypted where they lie.
    let policy = delta::load(sealed, &key, None).map(|(policy, _)| policy);
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let retained = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    let ok = policy.is_ok();
    drop(policy);
    let k = keys as f64;
    println!(
        "{}",
        serde_json::json!({
            "keys": keys, "cidrs": cidrs, "compiled": ok, "sealed_bytes": sealed_len,
            "peak_bytes": peak, "retained_bytes": retained,
            "sealed_bytes_per_key": sealed_len as f64 / k,
            "peak_bytes_per_key": peak as f64 / k, "retained_bytes_per_key": retained as f64 / k,
        })
    );
}
