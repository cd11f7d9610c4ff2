//! Feeds a response body (e.g. the 1 MiB SSE stream of `bench.py metered`)
//! through `core::usage::UsageParser` in fixed-size chunks, `--iters` times:
//! the metered path's response parsing without Envoy or the Proxy-Wasm
//! host calls. Natively under `valgrind --tool=callgrind
//! --toggle-collect='*parse_body*'` it gives instructions per byte; built
//! for wasm32-wasip1 (`--no-default-features`) and run under Node
//! (`tools/wasi-run.mjs`) with two iteration counts, the time per MiB in V8.
//!
//! usage: usage-count --body FILE [--framing sse|json] [--chunk BYTES] [--iters N]
//! Prints one JSON object: the usage read and the bytes parsed.

use tokenhub_guard::core::usage::{Framing, Usage, UsageParser};

/// One pass over `body` in `chunk`-byte pieces, as the filter feeds it.
#[inline(never)]
pub fn parse_body(body: &[u8], chunk: usize, framing: Framing) -> Option<Usage> {
    let mut parser = UsageParser::new(framing);
    for piece in body.chunks(chunk.max(1)) {
        parser.feed(piece);
    }
    parser.usage()
}

fn run() -> Result<(), String> {
    let mut body = None;
    let mut framing = Framing::EventStream;
    let mut chunk = 16_384usize;
    let mut iters = 1usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--body" => body = Some(value()?),
            "--framing" => {
                framing = match value()?.as_str() {
                    "sse" => Framing::EventStream,
                    "json" => Framing::Json,
                    other => return Err(format!("--framing: sse or json, not {other}")),
                }
            }
            "--chunk" => chunk = value()?.parse().map_err(|e| format!("--chunk: {e}"))?,
            "--iters" => iters = value()?.parse().map_err(|e| format!("--iters: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let path = body.ok_or("--body is required")?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let mut usage = None;
    for _ in 0..iters {
        usage = std::hint::black_box(parse_body(std::hint::black_box(&bytes), chunk, framing));
    }
    let Some(u) = usage else { return Err(format!("{path}: no usage found")) };
    println!(
        "{{\"bytes\":{},\"iters\":{iters},\"chunk\":{chunk},\"input\":{},\"output\":{}}}",
        bytes.len(),
        u.input,
        u.output
    );
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("usage-count: {e}");
        std::process::exit(1);
    }
}
