//! Writes a benchmark bundle the way `tokenhub-admin publish` does — through
//! `tokenhub_guard::admin::publish::publish` itself (compile, seal, open and
//! compile again, ECDS resource, atomic write) — and times each publish.
//!
//! usage: bench-bundle --out DIR --keys N [--cidrs M] --wasm FILE [--republish K]
//!
//! Writes DIR/guard.json (the ECDS file to start Envoy with), DIR/next/guard.N.json
//! (K later versions of the same policy, for reload timing), DIR/bundle.key
//! (TOKENHUB_BUNDLE_KEY) and DIR/info.json (credentials, versions, timings).

use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenhub_guard::admin::publish::publish;
use tokenhub_guard::admin::store::StoreDoc;
use tokenhub_guard::admin::{random_key256, unix_now};

struct Args {
    out: PathBuf,
    keys: usize,
    cidrs: usize,
    wasm: PathBuf,
    republish: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut keys = 10;
    let mut cidrs = 1;
    let mut wasm = None;
    let mut republish = 0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--keys" => keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--cidrs" => cidrs = value()?.parse().map_err(|e| format!("--cidrs: {e}"))?,
            "--wasm" => wasm = Some(PathBuf::from(value()?)),
            "--republish" => republish = value()?.parse().map_err(|e| format!("--republish: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        out: out.ok_or("--out is required")?,
        keys: keys.max(3),
        cidrs: cidrs.max(1),
        wasm: wasm.ok_or("--wasm is required")?,
        republish,
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    std::fs::create_dir_all(args.out.join("next")).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (policy, creds) = tokenhub_bench::policy(args.keys, args.cidrs, 1);
    let generate_ms = ms(t);
    let bundle_key = random_key256();
    let mut doc = StoreDoc { bundle_key: bundle_key.to_base64().to_string(), policy, ..StoreDoc::default() };

    let mut publish_ms = Vec::new();
    let mut versions = Vec::new();
    let mut files = Vec::new();
    let now = unix_now();
    for i in 0..=args.republish {
        let file =
            if i == 0 { args.out.join("guard.json") } else { args.out.join("next").join(format!("guard.{i}.json")) };
        let t = Instant::now();
        let published =
            publish(&mut doc, &file, &args.wasm, now).map_err(|e| format!("publish {}: {e}", file.display()))?;
        publish_ms.push(ms(t));
        versions.push(published.version);
        files.push(file.clone());
        // publish() recorded it in doc.published: the next one gets a higher
        // version, exactly as tokenhub-admin's next publish would.
    }
    let bytes = std::fs::metadata(&files[0]).map(|m| m.len()).unwrap_or(0);
    write_private(&args.out.join("bundle.key"), bundle_key.to_base64().as_bytes())?;
    let info = serde_json::json!({
        "keys": args.keys,
        "cidrs": args.cidrs,
        "credentials": creds.to_json(),
        "versions": versions,
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "ecds_bytes": bytes,
        "generate_ms": generate_ms,
        "publish_ms": publish_ms,
    });
    let text = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("info.json"), text).map_err(|e| e.to_string())?;
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-bundle: {e}");
        std::process::exit(1);
    }
}
