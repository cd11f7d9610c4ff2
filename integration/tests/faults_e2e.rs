//! Faults through a real Envoy:
//!
//! - a trap in the filter (the fault-injection build: a request with
//!   `x-tokenhub-test-fault: panic` panics inside the VM) answers 503 in the
//!   guard's JSON error shape, never lets a request through, and with the
//!   shipped `failure_policy: FAIL_RELOAD` the worker serves again within a
//!   bound;
//! - bad bundles (wrong or missing bundle key, corrupt, truncated, future
//!   schema, older version) are refused with a log line that names the
//!   problem while the last good bundle keeps serving; with no valid bundle
//!   at start every request is refused with 503;
//! - `tokenhub-admin` SIGKILLed at random instants during mutations and
//!   publishes, many times, while Envoy watches: the store still opens, no
//!   change whose command exited 0 is lost, and no torn or foreign bundle
//!   ever reaches Envoy.
//!
//! Needs `make wasm`, `make wasm-fault`, `make admin`, `make bootstrap`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokenhub_integration::guard::*;
use tokenhub_integration::keys::secret_of;
use tokenhub_integration::{paths, EcdsOutcome, IssuedKey, Response, Rng};

/// The promise for FAIL_RELOAD: a trapped worker serves again within this.
const RECOVERY_LIMIT: Duration = Duration::from_secs(5);

/// The JSON the bootstrap's local_reply_config gives a trapped request.
fn assert_guard_unavailable(resp: &Response, case: &str) {
    assert_eq!(resp.status, 503, "{case}: {} {}", resp.status, resp.body_text());
    assert_eq!(resp.header("content-type"), Some("application/json"), "{case}: {:?}", resp.headers);
    let body = resp.json();
    assert_eq!(body["error"]["type"], "service_unavailable", "{case}: {body}");
    assert_eq!(body["error"]["code"], "guard_unavailable", "{case}: {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {body}");
}

fn fault_wasm() -> std::path::PathBuf {
    let wasm = paths::fault_wasm();
    assert!(
        wasm.is_file(),
        "{} is not built: run `make wasm-fault` (cargo build --target wasm32-wasip1 --release --lib \
         --features fault-injection --target-dir target/fault)",
        wasm.display()
    );
    wasm
}

// ===========================================================================
// A trap in the filter.

#[test]
fn a_trap_in_the_filter_is_a_json_503_never_an_allowed_request_and_the_worker_recovers() {
    const FAULTS: usize = 5;
    // One worker: every request after a trap meets the dead VM.
    let fx = Fixture::start_with_module(&fault_wasm(), |_, _| {}, |opts| opts.concurrency = 1);
    let key = fx.key.key.clone();
    let auth = bearer(&key);
    let trap = [("authorization", auth.as_str()), ("x-tokenhub-test-fault", "panic")];
    fx.expect_allowed(|| fx.with_key(&key));

    let mut recoveries = Vec::new();
    for round in 0..FAULTS {
        let before = fx.guard_counters();
        // The trapping request itself: 503 JSON, nothing upstream.
        let resp = fx.get("/v1/models", &trap);
        assert_guard_unavailable(&resp, &format!("round {round}: the trapping request"));
        let trapped_at = Instant::now();
        // The dead VM refuses the next requests too, whatever they carry:
        // a valid key is not let through unchecked, nor is no key at all.
        let resp = fx.with_key(&key);
        assert_guard_unavailable(&resp, &format!("round {round}: a valid key right after the trap"));
        let resp = fx.get("/v1/models", &[]);
        assert_guard_unavailable(&resp, &format!("round {round}: no key right after the trap"));
        assert!(fx.echo.take_requests().is_empty(), "round {round}: a request reached the upstream during the fault");
        assert_eq!(fx.guard_counters(), before, "round {round}: a dead VM counted a decision");

        // FAIL_RELOAD: after a backoff the next request rebuilds the VM.
        // Until then every answer is the JSON 503, never anything else.
        let mut unavailable = 0;
        let recovered = loop {
            let resp = fx.with_key(&key);
            if resp.status == 200 {
                break trapped_at.elapsed();
            }
            assert_guard_unavailable(&resp, &format!("round {round}: while the worker recovers"));
            unavailable += 1;
            assert!(
                trapped_at.elapsed() < RECOVERY_LIMIT,
                "round {round}: the worker did not recover within {RECOVERY_LIMIT:?} ({unavailable} requests refused)"
            );
            thread::sleep(Duration::from_millis(50));
        };
        let upstream = fx.echo.take_requests();
        assert_eq!(upstream.len(), 1, "round {round}: the first request after recovery");
        let identity = fixture_identity(&fx.key.key_id);
        let injected = format!("Bearer {OPENAI_SECRET}");
        assert_forwarded(&upstream[0], ("authorization", &injected), &identity, &[&key, secret_of(&key)], "recovered");
        // The rebuilt VM has the policy: refusals are refusals again.
        fx.expect_denied(MISSING_KEY, || fx.get("/v1/models", &[]));
        fx.expect_denied(TENANT_MISMATCH, || {
            fx.get("/v1/models", &[("authorization", &auth), ("x-tokenhub-tenant", "x")])
        });
        fx.expect_allowed(|| fx.with_key(&key));
        recoveries.push(recovered);
    }
    // Envoy logged each panic, the access log names the failure.
    let log = fx.envoy.log_contents();
    let panics = log.matches("fault injection: trap requested").count();
    assert_eq!(panics, FAULTS, "panic lines in Envoy's log");
    thread::sleep(Duration::from_millis(300));
    let fail_stream = fx.envoy.access_log().iter().filter(|l| l["details"] == "wasm_fail_stream").count();
    assert!(fail_stream >= 3 * FAULTS, "access log lines with details wasm_fail_stream: {fail_stream}");
    // The rebuilt VMs reloaded the same bundle, no rollback was refused.
    assert!(!log.contains("rollback refused"), "a VM rebuilt after a trap refused its own bundle as a rollback");
    println!(
        "faults: {FAULTS} traps injected; recovery after each (FAIL_RELOAD): {:?}; max {:?} (limit {RECOVERY_LIMIT:?})",
        recoveries,
        recoveries.iter().max()
    );
}

#[test]
fn a_trap_with_two_workers_never_lets_a_request_through_unchecked() {
    // Connections spread over two workers: one VM dies, the other serves.
    // Whatever worker a request meets, it is decided or refused with the
    // JSON 503, never passed on unchecked.
    let fx = Fixture::start_with_module(&fault_wasm(), |_, _| {}, |opts| opts.concurrency = 2);
    let key = fx.key.key.clone();
    let auth = bearer(&key);
    let (mut refused, mut decided) = (0, 0);
    for round in 0..3 {
        let resp = fx.get("/v1/models", &[("authorization", &auth), ("x-tokenhub-test-fault", "panic")]);
        assert_guard_unavailable(&resp, &format!("round {round}: trap"));
        for _ in 0..20 {
            // No key: must never be 200.
            let resp = fx.get("/v1/models", &[]);
            match resp.status {
                401 => decided += 1,
                503 => {
                    assert_guard_unavailable(&resp, "no key after a trap");
                    refused += 1;
                }
                other => panic!("a request without a key after a trap got {other}: {}", resp.body_text()),
            }
        }
        assert!(fx.echo.take_requests().is_empty(), "a request without a key reached the upstream");
        // Let the dead worker recover before the next round.
        let start = Instant::now();
        while start.elapsed() < RECOVERY_LIMIT {
            let ok = (0..4).all(|_| fx.with_key(&key).status == 200);
            if ok {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        fx.echo.take_requests();
    }
    println!("faults with two workers: 3 traps; afterwards {decided} keyless requests decided (401), {refused} refused (503)");
}

// ===========================================================================
// Bad bundles at runtime: refused, the last good one keeps serving.

/// The ECDS file `ecds` with its sealed bundle replaced by `sealed`.
/// (the text form, in a StringValue, as a hand-edited file would carry it).
fn with_sealed(ecds: &str, sealed: &str) -> String {
    let mut doc = parse_ecds(ecds);
    set_sealed_text(&mut doc, sealed);
    doc.to_string()
}

/// `thb1.<header>.<body>` split in three.
fn envelope(sealed: &str) -> (String, serde_json::Value, String) {
    let mut parts = sealed.splitn(3, '.');
    let (prefix, header, body) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    (prefix.to_string(), header, body.to_string())
}

/// The version in a sealed bundle's header.
fn version_of(sealed: &str) -> u64 {
    envelope(sealed).1["version"].as_u64().unwrap_or(0)
}

fn reseal_header(prefix: &str, header: &serde_json::Value, body: &str) -> String {
    format!("{prefix}.{}.{body}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

/// The corrupted variants of a genuine sealed bundle, with the reason the
/// filter must log for each.
fn corruptions(sealed: &str) -> Vec<(&'static str, String, String)> {
    let (prefix, header, body) = envelope(sealed);
    let mid = body.len() / 2;
    let flip = |c: &str| if c == "A" { "B" } else { "A" };
    let flipped = format!("{}{}{}", &body[..mid], flip(&body[mid..=mid]), &body[mid + 1..]);
    let truncated_len = (body.len() / 2) / 4 * 4;
    let mut future = header.clone();
    future["schema"] = 2.into();
    let mut newer = header.clone();
    newer["version"] = (header["version"].as_u64().unwrap() + 1).into();
    let altered = "authentication failed: the bundle was altered or truncated".to_string();
    vec![
        ("one ciphertext character changed", reseal_header(&prefix, &header, &flipped), altered.clone()),
        ("ciphertext truncated to half", reseal_header(&prefix, &header, &body[..truncated_len]), altered.clone()),
        ("header claims a newer version", reseal_header(&prefix, &newer, &body), altered),
        (
            "future schema",
            reseal_header(&prefix, &future, &body),
            "bundle schema 2 is not supported by this filter (supports 1)".to_string(),
        ),
        (
            "body not base64url",
            format!("{prefix}.{}.{}!{}", sealed.split('.').nth(1).unwrap(), &body[..mid], &body[mid..]),
            "malformed envelope: body is not base64url".to_string(),
        ),
        (
            "body cut off",
            format!("{prefix}.{}", sealed.split('.').nth(1).unwrap()),
            "malformed envelope: expected thb1.<header>.<body>".to_string(),
        ),
        (
            "not a sealed bundle",
            "{\"tenants\":[]}".to_string(),
            "malformed envelope: does not start with thb1.".to_string(),
        ),
        (
            "body too short",
            format!("{prefix}.{}.AAAA", sealed.split('.').nth(1).unwrap()),
            "malformed envelope: body is too short".to_string(),
        ),
    ]
}

#[test]
fn bad_bundles_are_refused_with_a_clear_log_line_and_the_last_good_one_keeps_serving() {
    let fx = Fixture::start();
    let (v1, second, version) = fx.two_versions();
    let current = fx.admin.ecds_contents();
    let sealed = sealed_of(&parse_ecds(&current)).to_string();
    let valid = [fx.key.key.as_str(), second.key.as_str()];
    let mut n = 0;
    for (name, bad, reason) in corruptions(&sealed) {
        println!("bad bundle: {name}");
        assert_rejected(&fx, &with_sealed(&current, &bad), &reason, version, &valid);
        n += 1;
    }
    // Sealed under another store's bundle key.
    let (foreign, other_key, reason) = fx.foreign_bundle();
    assert_rejected(&fx, &foreign, &reason, version, &valid);
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&other_key.key));
    n += 1;

    // An ECDS file cut in half is not even a resource: Envoy fails it
    // (update_failure), the filter is never asked, the bundle keeps serving.
    for (name, text) in
        [("ECDS file cut in half", current[..current.len() / 2].to_string()), ("empty ECDS file", String::new())]
    {
        let failures = fx.ecds_stat("update_failure");
        let log_from = fx.envoy.log_contents().len();
        let outcome = fx.envoy.publish_ecds_and_wait(&text);
        assert_eq!(outcome, EcdsOutcome::Failed, "{name}");
        assert_eq!(fx.ecds_stat("update_failure"), failures + 1, "{name}");
        let lines = log_lines_since(&fx.envoy, log_from, "Filesystem config update failure");
        assert!(!lines.is_empty(), "{name}: no log line for the failed update");
        for key in valid {
            fx.expect_allowed(|| fx.with_key(key));
        }
        n += 1;
    }

    // An older version, genuinely sealed (a rollback): accepted as a file,
    // but the filter keeps serving the newest version and says so.
    let log_from = fx.envoy.log_contents().len();
    let v1_version = version_of(&sealed_of(&parse_ecds(&v1)));
    let replay = v1.replace("\"name\": \"tokenhub_guard\"", "\"name\": \"tokenhub_guard_replayed\"");
    assert_ne!(replay, v1);
    let outcome = fx.envoy.publish_ecds_and_wait(&replay);
    assert_ne!(outcome, EcdsOutcome::Failed);
    let lines = log_lines_since(&fx.envoy, log_from, "rollback refused");
    let want = format!("bundle version {v1_version} is older than version {version} already loaded (rollback refused); serving version {version}");
    assert!(lines.iter().any(|l| l.contains(&want)), "no log line says: {want}\n{lines:#?}");
    for key in valid {
        fx.expect_allowed(|| fx.with_key(key));
    }
    assert_eq!(prometheus_value(&fx.envoy.stats_prometheus(), "tokenhub_bundle_version"), Some(version));
    n += 1;

    // And a good publish still goes through after all that.
    let third = fx.admin.create_key(TENANT, &[]);
    fx.publish();
    fx.expect_allowed(|| fx.with_key(&third.key));
    println!("bad bundles at runtime: {n} refused, the last good one served throughout");
}

// ===========================================================================
// The capability list `publish` writes is enforced.

/// The guard's VM gets exactly the host calls its published configuration
/// lists (it has a vm_id of its own, so it never inherits the unrestricted
/// default config's VM): with one call it needs taken off the list, the
/// guard traps on its first request — a JSON 503, nothing upstream, never
/// an unchecked request. (Had Envoy ignored the list, this would be a 200.)
#[test]
fn the_published_capability_list_is_enforced_and_a_missing_host_call_fails_closed() {
    let (admin, key) = new_store();
    admin.publish();
    let mut doc = parse_ecds(&admin.ecds_contents());
    let config = &mut doc["resources"][0]["typed_config"]["config"];
    let allowed = config["capability_restriction_config"]["allowed_capabilities"].as_object_mut().unwrap();
    assert!(allowed.remove("proxy_get_header_map_pairs").is_some(), "publish lists the header read");
    let fx = Fixture::start_envoy(admin, key, Some(doc.to_string()), None);
    assert_guard_unavailable(&fx.with_key(&fx.key.key), "header read stubbed");
    assert_guard_unavailable(&fx.get("/v1/models", &[]), "header read stubbed, no key");
    assert!(fx.echo.take_requests().is_empty(), "a request reached the upstream");
    assert!(fx.envoy.wait_for_log("panicked at", Duration::from_secs(5)), "the stubbed call did not trap");
}

// ===========================================================================
// No valid bundle at start: every request 503.

#[test]
fn with_no_valid_bundle_at_start_every_request_is_refused_with_503() {
    let mut n = 0;
    // The bundle key is missing from Envoy's environment.
    {
        let (admin, key) = new_store();
        admin.publish();
        let fx = Fixture::start_envoy_with(admin, key, None, |opts| opts.env.retain(|(n, _)| n != BUNDLE_KEY_ENV));
        assert_fails_closed(&fx);
        let want =
            "bundle rejected, the previous one keeps serving: TOKENHUB_BUNDLE_KEY is not set in Envoy's environment";
        assert!(fx.envoy.wait_for_log(want, Duration::from_secs(5)), "no log line: {want}");
        n += 1;
    }
    // The bundle key is not a key.
    {
        let (admin, key) = new_store();
        admin.publish();
        let fx = Fixture::start_envoy(admin, key, None, Some("not a base64 key!".to_string()));
        assert_fails_closed(&fx);
        let want = "bundle rejected, the previous one keeps serving: TOKENHUB_BUNDLE_KEY:";
        assert!(fx.envoy.wait_for_log(want, Duration::from_secs(5)), "no log line: {want}");
        n += 1;
    }
    // Corrupt, truncated and future-schema bundles as the first file; then
    // a good publish serves at once, without a restart.
    for name in ["one ciphertext character changed", "ciphertext truncated to half", "future schema"] {
        let (admin, key) = new_store();
        admin.publish();
        let good = admin.ecds_contents();
        let sealed = sealed_of(&parse_ecds(&good)).to_string();
        let (_, bad, reason) = corruptions(&sealed).into_iter().find(|(n, _, _)| *n == name).unwrap();
        let fx = Fixture::start_envoy(admin, key, Some(with_sealed(&good, &bad)), None);
        assert_fails_closed(&fx);
        assert!(fx.envoy.wait_for_log(&reason, Duration::from_secs(5)), "{name} at start: no log line says {reason}");
        fx.publish();
        fx.expect_allowed(|| fx.with_key(&fx.key.key));
        n += 1;
    }
    // An ECDS file cut in half at start.
    {
        let (admin, key) = new_store();
        admin.publish();
        let good = admin.ecds_contents();
        let fx = Fixture::start_envoy(admin, key, Some(good[..good.len() / 2].to_string()), None);
        assert_fails_closed(&fx);
        fx.publish();
        fx.expect_allowed(|| fx.with_key(&fx.key.key));
        n += 1;
    }
    println!("no valid bundle at start: {n} cases, every request 503 until a good publish");
}

// ===========================================================================
// tokenhub-admin killed at random instants.

/// What the watcher saw of guard.json while the admin was being killed.
#[derive(Default)]
struct Watch {
    reads: u64,
    torn: Vec<String>,
    /// bundle version -> distinct SHA-like fingerprints (the sealed text)
    versions: BTreeMap<u64, BTreeSet<String>>,
}

/// Reads guard.json every millisecond until told to stop: every read must
/// be a complete ECDS document with a sealed bundle.
fn watch_ecds(path: std::path::PathBuf, stop: Arc<AtomicBool>, watch: Arc<Mutex<Watch>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let mut w = watch.lock().unwrap();
                w.reads += 1;
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(doc) if sealed_of(&doc).starts_with("thb1.") => {
                        let sealed = sealed_of(&doc);
                        let version = version_of(&sealed);
                        w.versions.entry(version).or_default().insert(sealed);
                    }
                    _ => {
                        let excerpt: String = text.chars().take(80).collect();
                        w.torn.push(format!("{} bytes: {excerpt}", text.len()));
                    }
                }
            }
            thread::sleep(Duration::from_millis(1));
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    CreateKey,
    CreateKeyPublish,
    AddTenant,
    AllowCidr,
    DisableKey,
    Publish,
}

const OPS: [Op; 6] = [Op::CreateKey, Op::CreateKeyPublish, Op::AddTenant, Op::AllowCidr, Op::DisableKey, Op::Publish];
const CHAOS_TENANT: &str = "chaos-co";

/// The changes that committed (the command exited 0), to find afterwards.
#[derive(Default)]
struct Committed {
    keys: Vec<IssuedKey>,
    disabled: BTreeSet<String>,
    /// Keys whose disable was killed: either state is right.
    uncertain: BTreeSet<String>,
    tenants: Vec<String>,
    cidrs: Vec<String>,
    published: BTreeSet<u64>,
}

impl Committed {
    /// Records run `i` of `op` (on `target`, for a disable): finished
    /// (`stdout` is its output) or killed.
    fn record(&mut self, op: Op, i: usize, target: Option<&IssuedKey>, finished: Option<&str>) {
        let json = || serde_json::from_str::<serde_json::Value>(finished.unwrap_or_default()).expect("admin output");
        match (op, finished.is_some()) {
            (Op::CreateKey | Op::CreateKeyPublish, true) => {
                let json = json();
                self.keys.push(IssuedKey {
                    key: json["key"].as_str().unwrap().to_string(),
                    key_id: json["key_id"].as_str().unwrap().to_string(),
                });
            }
            (Op::AddTenant, true) => self.tenants.push(format!("chaos-t{i}")),
            (Op::AllowCidr, true) => self.cidrs.push(cidr(i)),
            (Op::DisableKey, true) => {
                self.disabled.extend(target.map(|k| k.key_id.clone()));
            }
            (Op::DisableKey, false) => {
                self.uncertain.extend(target.map(|k| k.key_id.clone()));
            }
            (Op::Publish, true) => {
                self.published.insert(json()["version"].as_u64().unwrap());
            }
            _ => {}
        }
    }

    /// The newest committed key not disabled (or maybe disabled) yet.
    fn disable_target(&self) -> Option<IssuedKey> {
        self.keys
            .iter()
            .rev()
            .find(|k| !self.disabled.contains(&k.key_id) && !self.uncertain.contains(&k.key_id))
            .cloned()
    }
}

fn cidr(i: usize) -> String {
    format!("10.{}.0.0/16", i % 250)
}

/// The arguments of run `i` of `op`.
fn args_for(op: Op, i: usize, target: Option<&IssuedKey>) -> Vec<String> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    match op {
        Op::CreateKey => s(&["key", "create", "--tenant", TENANT, "--name", &format!("chaos-{i}")]),
        Op::CreateKeyPublish => s(&["key", "create", "--tenant", TENANT, "--name", &format!("chaos-{i}"), "--publish"]),
        Op::AddTenant => s(&["tenant", "add", &format!("chaos-t{i}"), "--region", "eu"]),
        Op::AllowCidr => s(&["ip", "allow", "--tenant", CHAOS_TENANT, &cidr(i)]),
        Op::DisableKey => match target {
            Some(k) => s(&["key", "disable", &k.key_id]),
            None => s(&["status"]),
        },
        Op::Publish => s(&["publish"]),
    }
}

#[test]
fn admin_killed_at_random_instants_loses_no_committed_change_and_envoy_never_sees_a_torn_bundle() {
    const KILLS: usize = 50;
    let fx = Fixture::start_with(|admin, _| {
        admin.json(&["tenant", "add", CHAOS_TENANT, "--region", "eu"]);
    });
    let mut rng = Rng::from_env("TOKENHUB_CHAOS_SEED", "chaos");
    let stop = Arc::new(AtomicBool::new(false));
    let watch = Arc::new(Mutex::new(Watch::default()));
    let watcher = watch_ecds(fx.admin.ecds_file(), Arc::clone(&stop), Arc::clone(&watch));
    let mut committed = Committed::default();

    let took = calibrate(&fx, &mut committed);
    let (killed, completed) = kill_at_random(&fx, &mut rng, &took, KILLS, &mut committed);
    assert_store_holds(&fx, &committed);

    // A last, undisturbed publish reaches Envoy with every committed change.
    let final_version = fx.publish();
    committed.published.insert(final_version);
    thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    for k in &committed.keys {
        if committed.disabled.contains(&k.key_id) {
            fx.expect_denied(KEY_DISABLED, || fx.with_key(&k.key));
        } else if !committed.uncertain.contains(&k.key_id) {
            fx.expect_allowed(|| fx.with_key(&k.key));
        }
    }

    // Envoy never saw a torn or foreign file.
    let w = watch.lock().unwrap();
    assert!(w.torn.is_empty(), "the watcher read torn guard.json files: {:#?}", w.torn);
    assert_eq!(fx.ecds_stat("update_failure"), 0, "Envoy failed to parse a published file");
    assert_eq!(fx.ecds_stat("update_rejected"), 0, "the filter refused a published bundle");
    let log = fx.envoy.log_contents();
    let loaded: BTreeSet<u64> =
        log.lines().filter_map(|l| l.split("bundle version ").nth(1)).filter_map(loaded_version).collect();
    let written: BTreeSet<u64> = w.versions.keys().copied().chain(committed.published.iter().copied()).collect();
    for v in &loaded {
        assert!(
            written.contains(v),
            "Envoy loaded bundle version {v}, which the admin never wrote (written: {written:?})"
        );
    }
    let reused: Vec<u64> = w.versions.iter().filter(|(_, s)| s.len() > 1).map(|(v, _)| *v).collect();
    println!(
        "admin chaos: {} runs, {killed} killed, {completed} finished before the kill; store opened after every one; \
         committed: {} keys ({} disabled), {} tenants, {} CIDRs, {} publishes; watcher read guard.json {} times, torn 0; \
         Envoy loaded {} distinct versions, all written by the admin; versions written with two different bundles \
         (a killed publish's number reused): {reused:?}",
        killed + completed,
        committed.keys.len(),
        committed.disabled.len(),
        committed.tenants.len(),
        committed.cidrs.len(),
        committed.published.len(),
        w.reads,
        loaded.len()
    );
    assert!(reused.is_empty(), "a version number named two different bundles: {reused:?}");
}

/// Calibration: how long each operation takes when left alone.
fn calibrate(fx: &Fixture, committed: &mut Committed) -> BTreeMap<String, Duration> {
    let mut took = BTreeMap::new();
    for (i, op) in OPS.iter().enumerate() {
        let args = args_for(*op, 1000 + i, None);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let start = Instant::now();
        let out = fx.admin.run(&argv).ok();
        took.insert(format!("{op:?}"), start.elapsed());
        if *op != Op::Publish {
            committed.record(*op, 1000 + i, None, Some(&out.stdout));
        }
    }
    println!("admin operations left alone take: {took:?}");
    took
}

/// `kills` random operations, each SIGKILLed after a random share of the
/// time it takes (some finish first); the store must open after each.
/// Returns (killed, finished).
fn kill_at_random(
    fx: &Fixture,
    rng: &mut Rng,
    took: &BTreeMap<String, Duration>,
    kills: usize,
    committed: &mut Committed,
) -> (usize, usize) {
    let (mut killed, mut completed) = (0, 0);
    for i in 0..kills {
        let op = OPS[rng.below(OPS.len() as u64) as usize];
        // DisableKey picks the newest committed key not disabled yet.
        let target = committed.disable_target();
        if op == Op::DisableKey && target.is_none() {
            continue;
        }
        let args = args_for(op, i, target.as_ref());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let budget = took[&format!("{op:?}")].as_micros() as u64;
        let delay = Duration::from_micros(rng.below(budget + budget / 3 + 1));
        let mut child = fx
            .admin
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tokenhub-admin");
        thread::sleep(delay);
        // SIGKILL (no chance to clean up), unless it already exited.
        let _ = child.kill();
        let out = child.wait_with_output().expect("reaping tokenhub-admin");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            completed += 1;
            committed.record(op, i, target.as_ref(), Some(&stdout));
        } else {
            killed += 1;
            committed.record(op, i, target.as_ref(), None);
        }
        // The store opens after every kill.
        let status = fx.admin.run(&["status"]);
        assert!(
            status.status.success(),
            "after kill {i} ({op:?} after {delay:?}) the store does not open: {}",
            status.stderr
        );
    }
    (killed, completed)
}

/// Every committed change is in the store, and the audit log verifies.
fn assert_store_holds(fx: &Fixture, committed: &Committed) {
    let listed = fx.admin.json(&["key", "list"]);
    let listed: BTreeMap<String, String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key_id"].as_str().unwrap().to_string(), k["status"].as_str().unwrap().to_string()))
        .collect();
    for k in &committed.keys {
        let status = listed.get(&k.key_id).unwrap_or_else(|| panic!("committed key {} is lost", k.key_id));
        if committed.disabled.contains(&k.key_id) {
            assert_eq!(status, "disabled", "committed disable of {} is lost", k.key_id);
        } else if !committed.uncertain.contains(&k.key_id) {
            assert_eq!(status, "active", "key {} changed state without a committed command", k.key_id);
        }
    }
    let tenant_list = fx.admin.json(&["tenant", "list"]);
    let tenant_ids: BTreeSet<String> =
        tenant_list.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    for t in &committed.tenants {
        assert!(tenant_ids.contains(t), "committed tenant {t} is lost");
    }
    let chaos = tenant_list.as_array().unwrap().iter().find(|t| t["id"] == CHAOS_TENANT).unwrap().clone();
    let allow = chaos["ip_allowlist"].to_string();
    for c in &committed.cidrs {
        assert!(allow.contains(c), "committed allowlist entry {c} is lost: {allow}");
    }
    let verify = fx.admin.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "the audit log does not verify after the kills: {} {}",
        verify.stdout,
        verify.stderr
    );
}

/// "N loaded (…" (what follows "bundle version " in the filter's log) -> N
fn loaded_version(rest: &str) -> Option<u64> {
    let (number, rest) = rest.split_once(' ')?;
    rest.starts_with("loaded").then(|| number.parse().ok()).flatten()
}

// ===========================================================================
// Regression (found by the chaos test): a publish killed between the rename
// of guard.json and the store's commit used to leave a version that the next
// publish reused for different content, and the filter kept the first
// bundle of that version as the "newest" a rollback falls back to, reviving
// a key disabled since. Now the admin numbers past the version on disk, and
// the filter lets the latest configuration of a version win.

#[test]
fn a_publish_killed_before_its_commit_never_lets_a_version_name_two_bundles() {
    let fx = Fixture::start();
    let v1 = fx.admin.ecds_contents();
    let store = fx.admin.home().join("store.enc");
    let ecds = fx.admin.ecds_file();
    // Start of a second, so the publishes below fall in the same one.
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_millis();
    thread::sleep(Duration::from_millis(u64::from(1000 - ms) + 20));

    // The admin: a publish whose store commit never happened (killed after
    // the rename), simulated by putting the store and its audit log back
    // (the log is appended after the store's commit, so neither changed).
    // The next publish reads the newer version on disk and goes past it.
    let audit = fx.admin.home().join("audit.log");
    let (before, before_log) = (std::fs::read(&store).unwrap(), std::fs::read(&audit).unwrap());
    let first = fx.publish();
    std::fs::write(&store, &before).unwrap();
    std::fs::write(&audit, &before_log).unwrap();
    fx.admin.json(&["key", "disable", &fx.key.key_id]);
    let second = fx.publish();
    assert!(second > first, "version {second} reused or older than {first}");
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&fx.key.key));

    // The filter: should a number ever name two bundles (here forced by
    // also putting the old file back in place, which Envoy does not
    // watch), the latest configuration wins, also for what a rollback
    // falls back to. (Store and audit log go back together: the admin
    // refuses a store put back alone.)
    let (before, before_log) = (std::fs::read(&store).unwrap(), std::fs::read(&audit).unwrap());
    let before_file = std::fs::read(&ecds).unwrap();
    fx.admin.json(&["key", "enable", &fx.key.key_id]);
    let third = fx.publish();
    fx.expect_allowed(|| fx.with_key(&fx.key.key));
    std::fs::write(&store, &before).unwrap();
    std::fs::write(&audit, &before_log).unwrap();
    std::fs::write(&ecds, &before_file).unwrap();
    let fourth = fx.publish();
    println!("versions: {first} {second} {third} {fourth} (third == fourth: {})", third == fourth);
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&fx.key.key));
    // A replayed old bundle: refused, and the newest (key disabled) serves.
    let replay = v1.replace("\"name\": \"tokenhub_guard\"", "\"name\": \"tokenhub_guard_replayed\"");
    fx.envoy.publish_ecds_and_wait(&replay);
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&fx.key.key));
}

#[test]
fn an_emptied_ecds_file_does_not_drop_the_bundle_in_force() {
    let fx = Fixture::start();
    let version = fx.admin.published_version();
    // The guard's resource with an empty configuration, as a broken
    // publisher or a hand edit might write it.
    fx.envoy.publish_ecds_and_wait(&fx.envoy.guard_ecds(""));
    assert!(
        fx.envoy
            .wait_for_log(&format!("empty configuration refused; serving version {version}"), Duration::from_secs(5)),
        "no log line names the refusal"
    );
    for _ in 0..4 {
        fx.expect_allowed(|| fx.with_key(&fx.key.key));
        fx.expect_denied(MISSING_KEY, || fx.get("/v1/models", &[]));
    }
}
