//! Criterion microbenchmark of the native decision (`core::decision::decide`,
//! with the header view the filter builds) at 10 and 100 000 keys, allow and
//! deny paths, and at 1 and 10 000 CIDRs. Part of `make bench`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let now = 1_800_000_000;
    let mut group = c.benchmark_group("decide");
    for (keys, cidrs) in [(10, 1), (100_000, 1), (10, 10_000), (100_000, 10_000)] {
        let (doc, creds) = tokenhub_bench::policy(keys, cidrs, 1);
        let Ok(policy) = tokenhub_guard::core::bundle::compile(&doc) else { continue };
        drop(doc);
        for case in tokenhub_bench::CASES {
            if cidrs > 1 && case != "allow" {
                continue;
            }
            let Some((headers, ip)) = tokenhub_bench::case_request(&creds, case) else { continue };
            let id = BenchmarkId::new(case, format!("{keys}keys-{cidrs}cidrs"));
            group.bench_with_input(id, &headers, |b, headers| {
                b.iter(|| tokenhub_bench::decide_once(black_box(&policy), black_box(headers), ip, now))
            });
        }
    }
    group.finish();
}

fn config() -> Criterion {
    // Short, but enough samples for a stable median; BENCH_QUICK shrinks it
    // to a smoke run.
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    Criterion::default()
        .warm_up_time(Duration::from_millis(if quick { 50 } else { 500 }))
        .measurement_time(Duration::from_millis(if quick { 100 } else { 2000 }))
        .sample_size(if quick { 10 } else { 50 })
}

criterion_group! { name = benches; config = config(); targets = bench }
criterion_main!(benches);
