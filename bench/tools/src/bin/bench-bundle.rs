//! Writes a benchmark bundle the way `tokenhub-admin publish` does — through
//! `tokenhub_guard::admin::publish::publish` itself (compile, seal, open and
//! compile again, ECDS resource, atomic write) — and times each publish.
//!
//! usage: bench-bundle --out DIR --keys N [--cidrs M] --wasm FILE [--republish K] [--deltas] [--metered] [--pb] [--store]
//!
//! With --pb, the ECDS files are binary protobuf (guard.pb, next/guard.N.pb),
//! as `tokenhub-admin publish --ecds-file X.pb` writes them.
//!
//! With --metered, the policy also has the `metered` key (a token budget)
//! and the `models` key (a model allowlist): `tokenhub_bench::add_metered_keys`.
//!
//! With --deltas, each later version is a delta on the first (publish
//! --delta): filler key i disabled, filler key i + 1 deleted and a new key
//! created, i.e. one revoke, one disable and one new key since the last.
//!
//! With --store, the policy is also a `tokenhub-admin` store (DIR/home,
//! master key in DIR/master.key) whose configured ECDS file is
//! DIR/live/guard.json (or .pb), where the caller moves the first version:
//! the CLI's own commands then publish onto what Envoy watches.
//!
//! Writes DIR/guard.json (or .pb) (the ECDS file to start Envoy with), DIR/next/guard.N.json
//! (K later versions of the same policy, for reload timing), DIR/bundle.key
//! (TOKENHUB_BUNDLE_KEY) and DIR/info.json (credentials, versions, timings).

use std::path::{Path, PathBuf};
use std::time::Instant;
use tokenhub_guard::admin::publish::{publish_with, Mode};
use tokenhub_guard::admin::store::StoreDoc;
use tokenhub_guard::admin::{random_key256, unix_now};
use tokenhub_guard::core::bundle::schema::Status;

struct Args {
    out: PathBuf,
    keys: usize,
    cidrs: usize,
    wasm: PathBuf,
    republish: usize,
    deltas: bool,
    metered: bool,
    /// The ECDS files' extension: "json" or "pb".
    extension: &'static str,
    store: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut keys = 10;
    let mut cidrs = 1;
    let mut wasm = None;
    let mut republish = 0;
    let mut deltas = false;
    let mut metered = false;
    let mut extension = "json";
    let mut store = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--keys" => keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--cidrs" => cidrs = value()?.parse().map_err(|e| format!("--cidrs: {e}"))?,
            "--wasm" => wasm = Some(PathBuf::from(value()?)),
            "--republish" => republish = value()?.parse().map_err(|e| format!("--republish: {e}"))?,
            "--deltas" => deltas = true,
            "--metered" => metered = true,
            "--pb" => extension = "pb",
            "--store" => store = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        out: out.ok_or("--out is required")?,
        keys: keys.max(3),
        cidrs: cidrs.max(1),
        wasm: wasm.ok_or("--wasm is required")?,
        republish,
        deltas,
        metered,
        extension,
        store,
    })
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    std::fs::create_dir_all(args.out.join("next")).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let (mut policy, creds) = tokenhub_bench::policy(args.keys, args.cidrs, 1);
    let mut credentials = creds.to_json();
    if args.metered {
        let extra = tokenhub_bench::add_metered_keys(&mut policy, &creds);
        credentials["metered"] = serde_json::Value::String(extra.metered);
        credentials["models"] = serde_json::Value::String(extra.models);
    }
    let generate_ms = ms(t);
    let bundle_key = random_key256();
    // StoreDoc zeroizes on drop, so it is filled in place, not by a struct update.
    let mut doc = StoreDoc::default();
    doc.bundle_key = bundle_key.to_base64().to_string();
    doc.policy = policy;

    let mut publish_ms = Vec::new();
    let mut versions = Vec::new();
    let mut files = Vec::new();
    let now = unix_now();
    for i in 0..=args.republish {
        let ext = args.extension;
        let file = match i {
            0 => args.out.join(format!("guard.{ext}")),
            _ => args.out.join("next").join(format!("guard.{i}.{ext}")),
        };
        if i > 0 && args.deltas {
            change_keys(&mut doc, i)?;
            // The delta's base is what the file it replaces holds.
            std::fs::copy(&files[0], &file).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        let mode = if i > 0 && args.deltas { Mode::Delta } else { Mode::Full };
        let t = Instant::now();
        let (published, delta) = publish_with(&mut doc, &file, &args.wasm, now, mode)
            .map_err(|e| format!("publish {}: {e}", file.display()))?;
        if args.deltas && i > 0 && delta.is_none() {
            return Err(format!("publish {}: no delta was made", file.display()));
        }
        publish_ms.push(ms(t));
        versions.push(published.version);
        files.push(file.clone());
        // publish() recorded it in doc.published: the next one gets a higher
        // version, exactly as tokenhub-admin's next publish would.
    }
    let bytes = std::fs::metadata(&files[0]).map(|m| m.len()).unwrap_or(0);
    let store_ms = match args.store {
        true => Some(write_store(&mut doc, &args)?),
        false => None,
    };
    write_private(&args.out.join("bundle.key"), bundle_key.to_base64().as_bytes())?;
    let info = serde_json::json!({
        "keys": args.keys,
        "cidrs": args.cidrs,
        "credentials": credentials,
        "versions": versions,
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "ecds_bytes": bytes,
        "generate_ms": generate_ms,
        "publish_ms": publish_ms,
        "store_save_load_ms": store_ms,
    });
    let text = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("info.json"), text).map_err(|e| e.to_string())?;
    Ok(())
}

/// Change `i` (from 1): a filler key disabled, the next one deleted, a
/// new one created (a copy of the deleted one under a new id).
fn change_keys(doc: &mut StoreDoc, i: usize) -> Result<(), String> {
    let keys = &mut doc.policy.keys;
    let at = keys.len().checked_sub(2 * i + 1).ok_or("too few keys for --deltas")?;
    keys[at].status = Status::Disabled;
    let mut added = keys.remove(at + 1);
    let mut id = added.id.into_bytes();
    id[11] = if id[11] == b'z' { b'y' } else { b'z' };
    id[10] = b'0' + (i % 10) as u8;
    added.id = String::from_utf8(id).map_err(|e| e.to_string())?;
    keys.push(added);
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// The policy as a `tokenhub-admin` store publishing to DIR/live; the
/// times it takes to save and to load it (ms).
fn write_store(doc: &mut StoreDoc, args: &Args) -> Result<[f64; 2], String> {
    use tokenhub_guard::admin::store::{Store, StorePaths};
    let out = std::path::absolute(&args.out).map_err(|e| e.to_string())?;
    doc.settings.ecds_file = Some(out.join("live").join(format!("guard.{}", args.extension)));
    doc.settings.wasm_path = Some(std::path::absolute(&args.wasm).map_err(|e| e.to_string())?);
    let master = random_key256();
    write_private(&out.join("master.key"), master.to_base64().as_bytes())?;
    let store = Store::new(StorePaths::new(out.join("home")), master);
    let t = Instant::now();
    store.create(doc).map_err(|e| format!("store: {e}"))?;
    let saved = ms(t);
    let t = Instant::now();
    store.load().map_err(|e| format!("store: {e}"))?;
    Ok([saved, ms(t)])
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
