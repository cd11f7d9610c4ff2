//! Global quotas end to end: three real Envoys with two
//! workers each (envoy/global-ratelimit/envoy.yaml.tmpl), the guard with a
//! bundle published in global quota mode, the real `tokenhub-admin
//! ratelimit` service and a real Redis. Load is spread over all replicas;
//! the quotas must hold across them exactly.
//!
//! The tests in this file run one at a time (three Envoys each on a
//! 2-core machine), and each waits, if needed, until the current minute has
//! enough seconds left, so a window boundary cannot fall inside a count.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tokenhub_integration::global::start_global_mode;
use tokenhub_integration::quota::*;
use tokenhub_integration::{addrs, paths, Admin, EchoUpstream, Envoy, IssuedKey, RateLimitService, Redis, Response};

const REPLICAS: usize = 3;

/// One test at a time in this binary.
static SERIAL: Mutex<()> = Mutex::new(());

struct Fixture {
    envoys: Vec<Envoy>,
    echo: EchoUpstream,
    admin: Admin,
    service: RateLimitService,
    redis: Redis,
}

/// A store with tenants `acme` (sub-accounts default and lab) and `globex`,
/// one provider; `setup` adds keys and quotas; global mode; publish; Redis,
/// the service, and REPLICAS Envoys of two workers on the published file.
fn start(setup: impl FnOnce(&Admin) -> Vec<IssuedKey>) -> (Fixture, Vec<IssuedKey>) {
    let admin = Admin::init(&paths::guard_wasm());
    admin.json(&["tenant", "add", "acme", "--region", "eu"]);
    admin.json(&["subaccount", "add", "acme", "lab"]);
    admin.json(&["tenant", "add", "globex", "--region", "us"]);
    admin.set_provider(&["openai", "--path-prefix", "/v1/"], "sk-global-upstream");
    let keys = setup(&admin);
    let echo = EchoUpstream::start().expect("echo upstream");
    let (redis, service, envoys) = start_global_mode(&admin, echo.port(), REPLICAS);
    (Fixture { envoys, echo, admin, service, redis }, keys)
}

impl Fixture {
    /// One request with `key` through replica `replica`, on its own
    /// connection, carrying `extra` headers.
    fn call_via(&self, replica: usize, key: &str, extra: &[&str]) -> Response {
        let lines = call_lines("global.test", key, extra);
        self.envoys[replica % REPLICAS].request(addrs::V4_PRIMARY, &lines, b"").expect("request through Envoy")
    }

    fn call(&self, key: &str) -> Response {
        self.call_via(0, key, &[])
    }

    /// `call_via` again while Envoy answers 503 (it may need a moment to
    /// reconnect to a restarted service or Redis), for up to 15 s: the
    /// first other answer, else the last 503.
    fn call_once_reconnected(&self, replica: usize, key: &str) -> Response {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = self.call_via(replica, key, &[]);
            if r.status != 503 || Instant::now() > deadline {
                return r;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `threads` threads, thread i sending through replica i % REPLICAS with
/// key `keys[i % keys.len()]`, `per_thread` requests each; every response.
fn spread(fx: &Arc<Fixture>, keys: &[&str], threads: usize, per_thread: usize, extra: &[&str]) -> Vec<Response> {
    let fx = Arc::clone(fx);
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let extra: Vec<String> = extra.iter().map(|h| h.to_string()).collect();
    hammer(threads, per_thread, move |i| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        fx.call_via(i, &keys[i % keys.len()], &extra)
    })
}

#[test]
fn key_sub_account_and_tenant_limits_hold_exactly_across_three_replicas() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const KEY_LIMIT: u64 = 30;
    let (fx, keys) = start(|a| {
        let limited = a.create_key("acme", &[]);
        set_quota(a, &["--key", &limited.key_id], &["--per-minute", &KEY_LIMIT.to_string()]);
        let lab_a = a.create_key("acme", &["--sub-account", "lab"]);
        let lab_b = a.create_key("acme", &["--sub-account", "lab"]);
        set_quota(a, &["--tenant", "acme", "--sub-account", "lab"], &["--per-minute", "20"]);
        let gx_a = a.create_key("globex", &[]);
        let gx_b = a.create_key("globex", &[]);
        set_quota(a, &["--tenant", "globex"], &["--per-minute", "25"]);
        vec![limited, lab_a, lab_b, gx_a, gx_b]
    });
    let fx = Arc::new(fx);
    let started = Instant::now();
    room_in_minute(15);

    // A key limited to 30/min, 6 threads over the 3 replicas, 60 requests;
    // half of them claim another key in x-tokenhub-* headers, which the
    // guard strips (a claimed tenant or sub-account that disagrees is a
    // 403 before any counting): they count under their own key all the same.
    let forged = ["x-tokenhub-key-id: AAAAAAAAAAAA", "x-tokenhub-region: us", "x-tokenhub-auth: oidc"];
    let mut responses = spread(&fx, &[&keys[0].key], 3, 10, &[]);
    responses.extend(spread(&fx, &[&keys[0].key], 3, 10, &forged));
    let allowed: Vec<&Response> = responses.iter().filter(|r| r.status == 200).collect();
    assert_eq!(allowed.len() as u64, KEY_LIMIT, "exactly the limit across all replicas");
    for r in responses.iter().filter(|r| r.status != 200) {
        assert_refusal(r, KEY_LIMIT);
    }
    let remaining: BTreeSet<u64> = allowed.iter().map(|r| header_u64(r, "ratelimit-remaining")).collect();
    assert_eq!(remaining, (0..KEY_LIMIT).collect(), "one count per admitted request");
    let upstream = fx.echo.take_requests();
    assert_eq!(upstream.len() as u64, KEY_LIMIT, "only admitted requests reach the upstream");
    assert!(upstream.iter().all(|r| r.header("x-tokenhub-key-id") == Some(keys[0].key_id.as_str())));

    // The lab sub-account's 20/min, shared by two keys, over all replicas.
    let lab = spread(&fx, &[&keys[1].key, &keys[2].key], 6, 6, &[]);
    assert_eq!(admitted(&lab), 20, "sub-account limit across its keys and replicas");
    for r in lab.iter().filter(|r| r.status != 200) {
        assert_refusal(r, 20);
    }
    // The tenant's 25/min, shared by two keys.
    let globex = spread(&fx, &[&keys[3].key, &keys[4].key], 6, 7, &[]);
    assert_eq!(admitted(&globex), 25, "tenant limit across its keys and replicas");
    for r in globex.iter().filter(|r| r.status != 200) {
        assert_refusal(r, 25);
    }
    assert_eq!(fx.echo.take_requests().len(), 45);
    // The guard counted nothing itself: every 429 came from the service.
    for envoy in &fx.envoys {
        assert_eq!(envoy.stat("wasmcustom.tokenhub.denied.quota_exceeded").unwrap_or(0), 0);
        assert_eq!(envoy.stat("wasmcustom.tokenhub.quota_counters").unwrap_or(0), 0);
    }
    let over: u64 = fx.envoys.iter().map(|e| e.stat("cluster.echo.ratelimit.over_limit").unwrap_or(0)).sum();
    assert_eq!(over, (60 - 30) + (36 - 20) + (42 - 25), "Envoy's ratelimit filter refused the rest");
    eprintln!("global quotas: exactness over {REPLICAS} replicas checked in {:?}", started.elapsed());
}

#[test]
fn redis_down_fails_closed_then_recovers_a_service_restart_loses_no_count_and_a_publish_reloads() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (fx, keys) = start(|a| {
        let k = a.create_key("acme", &[]);
        set_quota(a, &["--key", &k.key_id], &["--per-minute", "10"]);
        vec![k]
    });
    let mut fx = fx;
    room_in_minute(20);
    let key = keys[0].key.clone();

    // The service restarted: the count continues where it was.
    for expected in [9, 8, 7, 6] {
        let r = fx.call(&key);
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(header_u64(&r, "ratelimit-remaining"), expected);
    }
    fx.service.restart();
    fx.service.wait_loaded(fx.admin.published_version());
    let after = fx.call_once_reconnected(1, &key);
    assert_eq!(after.status, 200, "{}", after.body_text());
    assert_eq!(header_u64(&after, "ratelimit-remaining"), 5, "no count lost across the restart");
    let rest: Vec<Response> = (0..7).map(|i| fx.call_via(i, &key, &[])).collect();
    assert_eq!(admitted(&rest), 5, "the remaining five, then refusals");
    assert_refusal(&rest[6], 10);

    // Redis killed: fail closed on every replica (503, JSON), never open.
    fx.redis.kill();
    for replica in 0..REPLICAS {
        let r = fx.call_via(replica, &key, &[]);
        assert_eq!(r.status, 503, "replica {replica} with Redis down: {}", r.body_text());
        assert_eq!(r.json()["error"]["code"], "quota_service_unavailable");
    }
    let before = fx.echo.take_requests().len();
    assert_eq!(before, 10, "nothing reached the upstream while Redis was down");

    // Redis back (empty: no persistence here): served again.
    fx.redis.restart();
    let back = fx.call_once_reconnected(2, &key);
    assert_eq!(back.status, 200, "after Redis came back: {}", back.body_text());
    assert!(fx.service.log().contains("Redis"), "the service logged the outage:\n{}", fx.service.log());

    // A new publish reaches the running service: the key's limit drops to
    // 1/min, and the one request already counted since Redis came back uses it.
    set_quota(&fx.admin, &["--key", &keys[0].key_id], &["--per-minute", "1"]);
    fx.admin.publish();
    fx.service.wait_loaded(fx.admin.published_version());
    assert_refusal(&fx.call_via(1, &key, &[]), 1);
}
