//! Quotas end to end: limits set with the real `tokenhub-admin
//! quota set`, enforced by the filter in a real Envoy with two workers,
//! counted in Proxy-Wasm shared data, under concurrent load from several
//! connections.
//!
//! Fixed windows: every test that counts within one minute first waits, if
//! needed, until the current minute has enough seconds left, so a window
//! boundary cannot fall inside the test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use tokenhub_integration::keys::key_with_id;
use tokenhub_integration::quota::*;
use tokenhub_integration::{addrs, paths, Admin, EchoUpstream, Envoy, EnvoyOptions, IssuedKey, Response};

const TENANT: &str = "quota-co";

struct Fixture {
    envoy: Envoy,
    echo: EchoUpstream,
    admin: Admin,
}

/// A store with TENANT (sub-accounts `default` and `lab`) and one provider;
/// `setup` adds keys and quotas; then publish and start Envoy with
/// `--concurrency 2`.
fn start(setup: impl FnOnce(&Admin) -> Vec<IssuedKey>) -> (Fixture, Vec<IssuedKey>) {
    let admin = Admin::init(&paths::guard_wasm());
    admin.json(&["tenant", "add", TENANT, "--region", "eu"]);
    admin.json(&["subaccount", "add", TENANT, "lab"]);
    admin.set_provider(&["openai", "--path-prefix", "/v1/"], "sk-quota-upstream");
    let keys = setup(&admin);
    admin.publish();
    let echo = EchoUpstream::start().expect("echo upstream");
    let mut opts = EnvoyOptions::new(echo.port()).publisher(&admin);
    opts.concurrency = 2;
    let envoy = Envoy::start(opts);
    let version = admin.published_version();
    envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
    (Fixture { envoy, echo, admin }, keys)
}

impl Fixture {
    fn call(&self, key: &str) -> Response {
        self.envoy.request(addrs::V4_PRIMARY, &call_lines("quota.test", key, &[]), b"").expect("request through Envoy")
    }

    fn stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("wasmcustom.{name}")).unwrap_or(0)
    }
}

/// Sends `per_thread` requests with `key` from each of `threads` threads,
/// each request on its own connection; returns every response.
fn with_key(fx: &Arc<Fixture>, key: &str, threads: usize, per_thread: usize) -> Vec<Response> {
    let (fx, key) = (Arc::clone(fx), key.to_string());
    hammer(threads, per_thread, move |_| fx.call(&key))
}

#[test]
fn key_limit_admits_exactly_n_under_concurrent_load_then_429_with_headers() {
    const LIMIT: u64 = 25;
    let (fx, keys) = start(|a| {
        let k = a.create_key(TENANT, &[]);
        set_quota(a, &["--key", &k.key_id], &["--per-minute", &LIMIT.to_string()]);
        vec![k]
    });
    let fx = Arc::new(fx);
    room_in_minute(20);
    let responses = with_key(&fx, &keys[0].key, 6, 15);

    let allowed: Vec<&Response> = responses.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<&Response> = responses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(allowed.len() as u64, LIMIT, "no over- or under-admission");
    assert_eq!(limited.len() + allowed.len(), responses.len(), "only 200 and 429");
    assert_eq!(fx.echo.take_requests().len() as u64, LIMIT, "exactly the admitted requests reached upstream");

    // Every admitted request saw a different remaining budget: one count each.
    let remaining: BTreeSet<u64> = allowed.iter().map(|r| header_u64(r, "ratelimit-remaining")).collect();
    assert_eq!(remaining, (0..LIMIT).collect(), "remaining budgets");
    for r in &allowed {
        assert_eq!(header_u64(r, "ratelimit-limit"), LIMIT);
    }
    for r in &limited {
        assert_refusal(r, LIMIT);
    }
    assert_eq!(fx.stat("tokenhub.denied.quota_exceeded"), limited.len() as u64);
    assert_eq!(fx.stat("tokenhub.allowed"), LIMIT);
}

#[test]
fn sub_account_and_tenant_limits_cap_several_keys_together() {
    let (fx, keys) = start(|a| {
        let in_lab = a.create_key(TENANT, &["--sub-account", "lab"]);
        let in_lab_too = a.create_key(TENANT, &["--sub-account", "lab"]);
        let in_default = a.create_key(TENANT, &[]);
        set_quota(a, &["--tenant", TENANT, "--sub-account", "lab"], &["--per-minute", "6"]);
        set_quota(a, &["--tenant", TENANT], &["--per-minute", "10"]);
        vec![in_lab, in_lab_too, in_default]
    });
    let fx = Arc::new(fx);
    room_in_minute(20);
    // Two lab keys share the lab's 6, concurrently.
    let lab_a = thread::spawn({
        let (fx, k) = (Arc::clone(&fx), keys[0].key.clone());
        move || with_key(&fx, &k, 2, 5)
    });
    let lab_b = with_key(&fx, &keys[1].key, 2, 5);
    let lab_a = lab_a.join().expect("lab thread");
    assert_eq!(admitted(&lab_a) + admitted(&lab_b), 6, "sub-account limit across its keys");
    // The default sub-account has no limit of its own: the tenant's 10 leave 4.
    let rest = with_key(&fx, &keys[2].key, 3, 4);
    assert_eq!(admitted(&rest), 4, "tenant limit across sub-accounts");
    let refused = rest.iter().find(|r| r.status == 429).expect("a 429");
    assert_eq!(header_u64(refused, "ratelimit-limit"), 10, "the tenant limit decided");
    assert_eq!(fx.echo.take_requests().len(), 10);
}

#[test]
fn a_new_window_admits_again_and_rotation_keeps_the_count() {
    let (fx, keys) = start(|a| {
        let k = a.create_key(TENANT, &[]);
        set_quota(a, &["--key", &k.key_id], &["--per-minute", "3"]);
        vec![k]
    });
    room_in_minute(15);
    assert_eq!(fx.call(&keys[0].key).status, 200);
    assert_eq!(fx.call(&keys[0].key).status, 200);
    // Rotation keeps the key id, so the count follows the new secret.
    let rotated = fx.admin.rotate_key(&keys[0].key_id, "0s");
    let (_, outcome) = fx.envoy.await_ecds(|| fx.admin.publish());
    assert_eq!(outcome, tokenhub_integration::EcdsOutcome::Accepted);
    assert_eq!(fx.call(&rotated.key).status, 200, "third of three");
    let refused = fx.call(&rotated.key);
    assert_eq!(refused.status, 429, "rotation must not reset the quota");
    // The next window admits again.
    let retry = header_u64(&refused, "retry-after");
    thread::sleep(Duration::from_secs(retry) + Duration::from_millis(300));
    let again = fx.call(&rotated.key);
    assert_eq!(again.status, 200, "new window: {}", again.body_text());
    assert_eq!(header_u64(&again, "ratelimit-remaining"), 2);
}

#[test]
fn a_flood_of_unknown_keys_does_not_grow_shared_data() {
    let (fx, keys) = start(|a| {
        let k = a.create_key(TENANT, &[]);
        set_quota(a, &["--key", &k.key_id], &["--per-minute", "1000"]);
        set_quota(a, &["--tenant", TENANT], &["--per-day", "100000"]);
        vec![k]
    });
    // One key quota (minute) + one tenant quota (day): two counters.
    assert_eq!(fx.stat("tokenhub.quota_counters"), 2);
    let real = &keys[0].key;
    let flood: u32 = 400;
    for i in 0..flood {
        // Well-formed keys (valid checksum) with random ids: they reach the
        // key lookup, and stop there.
        let fake = key_with_id(real, &format!("Z{i:011}"));
        assert_eq!(fx.call(&fake).status, 401);
    }
    assert_eq!(fx.stat("tokenhub.denied.unknown_key"), u64::from(flood));
    assert_eq!(fx.stat("tokenhub.quota_counters"), 2, "unknown keys create no counters");
    assert_eq!(fx.call(real).status, 200);
    assert_eq!(fx.echo.take_requests().len(), 1);
}
