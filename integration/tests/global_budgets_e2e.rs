//! Token and dollar budgets in the global quota mode, end to end: two real
//! Envoys (envoy/global-ratelimit/envoy.yaml.tmpl) share every budget
//! through the real `tokenhub-admin ratelimit` service and a real Redis;
//! a scripted upstream answers in the real OpenAI and Anthropic shapes.
//!
//! At request headers the guard writes its reservation to filter state and
//! Envoy's ratelimit filter sends it to the service (`budget_reserve`),
//! which refuses a spent budget or reserves atomically; when the stream is
//! done (completed or aborted) the guard writes the actual usage and Envoy
//! sends it (`budget_settle`), which replaces the reservation. Checks,
//! requests alternating over the two replicas: tokens per minute settled
//! to the reported usage (7 admitted, then the guard's 429
//! `token_budget_exceeded` as OpenAI-style JSON, and a refusal reserves
//! nothing); a monthly dollar budget by the price table, and a body whose
//! model has no price refused after admission with its reservation given
//! back; 30 parallel requests over both replicas within the overshoot
//! bound; an aborted stream charged what arrived; a key without budgets
//! leaves no budget counter in Redis.
//!
//! Settlement reaches Redis a round trip after the response (Envoy sends it
//! when it destroys the stream), so sequential requests here pause 150 ms.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;
use tokenhub_integration::global::start_global_mode;
use tokenhub_integration::guard::{bearer, request_lines};
use tokenhub_integration::quota::{header_u64, room_in_minute, set_quota};
use tokenhub_integration::scripted::budgets::{anthropic_stream, chat, script, OUTPUT_RESERVATION};
use tokenhub_integration::scripted::ScriptedUpstream;
use tokenhub_integration::{addrs, paths, Admin, Envoy, RateLimitService, Redis, Response};

const REPLICAS: usize = 2;
/// Settlement reaches Redis a round trip after the response.
const SETTLE_PAUSE: Duration = Duration::from_millis(150);

struct Keys {
    per_minute: String,
    dollars: String,
    parallel: String,
    cut_off: String,
    unmetered: (String, String),
    /// Key ids: per_minute, dollars, cut_off.
    ids: [String; 3],
}

struct Fixture {
    envoys: Vec<Envoy>,
    upstream: ScriptedUpstream,
    _service: RateLimitService,
    redis: Redis,
    admin: Admin,
}

impl Fixture {
    fn post(&self, replica: usize, key: &str, path: &str, body: &[u8]) -> Response {
        let auth = bearer(key);
        let len = body.len().to_string();
        let headers =
            [("authorization", auth.as_str()), ("content-type", "application/json"), ("content-length", len.as_str())];
        self.envoys[replica % REPLICAS]
            .request(addrs::V4_PRIMARY, &request_lines("POST", path, &headers, true), body)
            .expect("request through Envoy")
    }

    /// Sends until the first refusal (at most `max`), alternating replicas
    /// and pausing for each settlement: the admitted count and the refusal.
    fn until_refused(&self, max: usize, key: &str, path: &str, body: &[u8]) -> (usize, Response) {
        for admitted in 0..max {
            let resp = self.post(admitted, key, path, body);
            if resp.status != 200 {
                return (admitted, resp);
            }
            thread::sleep(SETTLE_PAUSE);
        }
        panic!("{max} requests admitted, none refused");
    }
}

/// A store with tenant acme and the two scripted providers.
fn acme_with_providers() -> Admin {
    let admin = Admin::init(&paths::guard_wasm());
    admin.json(&["tenant", "add", "acme", "--region", "eu"]);
    admin.set_provider(
        &["openai", "--path-prefix", "/v1/", "--header", "authorization", "--format", "Bearer {secret}"],
        "sk-global-openai",
    );
    admin.set_provider(
        &["anthropic", "--path-prefix", "/anthropic/", "--header", "x-api-key", "--format", "{secret}"],
        "sk-global-anthropic",
    );
    admin
}

fn start() -> (Fixture, Keys) {
    let admin = acme_with_providers();
    let key = |limits: &[&str]| {
        let key = admin.create_key("acme", &[]);
        set_quota(&admin, &["--key", &key.key_id], limits);
        (key.key, key.key_id)
    };
    let (per_minute, per_minute_id) = key(&["--tokens-per-minute", "10000"]);
    let (dollars, dollars_id) = key(&["--monthly-budget", "1"]);
    let (parallel, _) = key(&["--tokens-per-day", "10000"]);
    let (cut_off, cut_off_id) = key(&["--tokens-per-day", "220"]);
    let unmetered = admin.create_key("acme", &[]);
    set_quota(&admin, &["--key", &unmetered.key_id], &["--per-minute", "100"]);
    // $100 / $50 / $1000 per million: an OpenAI JSON reply (1200 in, 1024
    // of them cached, 300 out) costs $0.3688.
    let price = ["price", "set", "--provider", "openai", "--model", "gpt-4o-mini*", "--input", "100"];
    admin.json(&[&price[..], &["--cached-input", "50", "--output", "1000"]].concat());
    admin.json(&["quota", "metering", "--default-output-tokens", &OUTPUT_RESERVATION.to_string()]);
    let upstream = ScriptedUpstream::start(script);
    let (redis, service, envoys) = start_global_mode(&admin, upstream.addr.port(), REPLICAS);
    let keys = Keys {
        per_minute,
        dollars,
        parallel,
        cut_off,
        unmetered: (unmetered.key, unmetered.key_id),
        ids: [per_minute_id, dollars_id, cut_off_id],
    };
    (Fixture { envoys, upstream, _service: service, redis, admin }, keys)
}

/// One request on its own connection, the body sent 300 ms after the
/// headers (so Envoy's ratelimit filter has its answer first); the raw
/// response, read until the connection closes (also when cut off).
fn send_raw(envoy: &Envoy, key: &str, path: &str, body: &[u8]) -> String {
    send_split(envoy, key, path, body, || ())
}

fn assert_budget_refusal(resp: &Response, limit: u64) {
    assert_eq!(resp.status, 429, "{}", resp.body_text());
    let body = resp.json();
    assert_eq!(body["error"]["code"], "token_budget_exceeded", "{}", resp.body_text());
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(resp.header("content-type"), Some("application/json"), "{:?}", resp.headers);
    assert_eq!(header_u64(resp, "ratelimit-limit"), limit, "{:?}", resp.headers);
    assert_eq!(header_u64(resp, "ratelimit-remaining"), 0);
    assert!(header_u64(resp, "retry-after") >= 1);
}

#[test]
fn budgets_hold_across_two_replicas_through_the_rate_limit_service() {
    let (fx, keys) = start();

    // Tokens per minute, OpenAI JSON: 1500 tokens a reply. Admitted while
    // the shared counter is below 10 000: 7 (1 500 × 7 = 10 500). Charging
    // the reservation (~530) would admit 19; charging nothing, all.
    room_in_minute(30);
    let body = chat("gpt-4o-mini", "hello");
    let (admitted, refusal) = fx.until_refused(20, &keys.per_minute, "/v1/chat/completions", &body);
    assert_eq!(admitted, 7, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 10_000);
    assert!(header_u64(&refusal, "retry-after") <= 60);
    // A refusal reserved nothing and gives nothing back: still refused on
    // both replicas (a wrongly released reservation would admit one more).
    for replica in 0..REPLICAS {
        thread::sleep(SETTLE_PAUSE);
        assert_budget_refusal(&fx.post(replica, &keys.per_minute, "/v1/chat/completions", &body), 10_000);
    }
    assert_eq!(fx.upstream.take_bodies().len(), 7, "the refusals reached no upstream");
    // The soft limit (80 %), which only the service can see across the
    // replicas: after 5 replies 7 500 are used, so the 6th's and 7th's
    // reservations pass 8 000 — in their access-log lines, on whichever
    // replica served them, and in the guard's metric.
    thread::sleep(Duration::from_millis(300));
    let per_minute_id = keys.ids[0].clone();
    let mut lines: Vec<serde_json::Value> = fx
        .envoys
        .iter()
        .flat_map(|e| e.access_log())
        .filter(|l| l["key_id"] == per_minute_id.as_str() && l["status"] == 200)
        .collect();
    lines.sort_by_key(|l| l["start_time"].as_str().unwrap_or("").to_string());
    let soft: Vec<bool> = lines.iter().map(|l| l["soft_limit"] == "1").collect();
    assert_eq!(soft, [false, false, false, false, false, true, true], "{lines:#?}");
    let metric: u64 = fx.envoys.iter().map(|e| e.stat("wasmcustom.tokenhub.budget_soft_limit").unwrap_or(0)).sum();
    assert_eq!(metric, 2);

    // A monthly dollar budget: $0.3688 a reply, 3 fit in $1. A model
    // without a price is refused once the body names it, after the service
    // reserved ($0.514 at the provider's highest prices): given back, or
    // only 2 would fit.
    // (The body follows the headers after the service has answered: a
    // refusal while Envoy still waits for it keeps the reservation, see
    // docs/global-quotas.md.)
    let out = send_raw(&fx.envoys[1], &keys.dollars, "/v1/chat/completions", &chat("o3", "hello"));
    assert!(out.starts_with("HTTP/1.1 403") && out.contains("model_not_priced"), "{out}");
    thread::sleep(SETTLE_PAUSE);
    let (admitted, refusal) = fx.until_refused(10, &keys.dollars, "/v1/chat/completions", &chat("gpt-4o-mini", "hi"));
    assert_eq!(admitted, 3, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 1_000_000_000);
    fx.upstream.take_bodies();

    // A stream the upstream cuts off after `message_start` (35 in, 1 out so
    // far): charged those 36 tokens when Envoy ends the stream. Then
    // Anthropic SSE replies of 50 fit while below 220: 4 (36 + 200 = 236).
    // Keeping the reservation (~540) would admit none, charging nothing 5.
    let out = send_raw(&fx.envoys[0], &keys.cut_off, "/anthropic/v1/messages", &anthropic_stream("cut-off"));
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("message_start"), "{out}");
    assert!(!out.contains("message_stop"), "the stream was cut off: {out}");
    thread::sleep(Duration::from_millis(500));
    let (admitted, refusal) = fx.until_refused(10, &keys.cut_off, "/anthropic/v1/messages", &anthropic_stream("hi"));
    assert_eq!(admitted, 4, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 220);
    fx.upstream.take_bodies();

    // Concurrency over both replicas: 30 requests at once, each using its
    // reservation less 4 tokens, answered after 1 s. Charged only at the
    // end, all 30 would go through (30 × ~530 against 10 000); reserved at
    // admission in Redis, the total stays below the limit plus one
    // reservation (`core::budget`).
    let body = chat("gpt-4o-mini", "reserve-mode");
    let reservation = (body.len() as u64).div_ceil(4) + OUTPUT_RESERVATION;
    let used = reservation - 4;
    let responses: Vec<Response> = thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let (fx, key, body) = (&fx, &keys.parallel, &body);
                scope.spawn(move || fx.post(i, key, "/v1/chat/completions", body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    });
    let admitted = responses.iter().filter(|r| r.status == 200).count() as u64;
    // Past 8 000 with their reservations, the later ones were past the soft
    // limit: the service's header for the guard never reaches the client.
    assert!(responses.iter().all(|r| r.header("x-tokenhub-soft-limit").is_none()), "soft-limit header leaked");
    let refused: Vec<&Response> = responses.iter().filter(|r| r.status != 200).collect();
    for r in &refused {
        assert_budget_refusal(r, 10_000);
    }
    assert!(!refused.is_empty(), "30 × {used} tokens against 10 000: some must be refused");
    let limit = 10_000;
    assert!(admitted * used < limit + reservation, "overshoot bound: {admitted} × {used} ≥ {limit} + {reservation}");
    assert!(admitted * used >= limit - reservation, "the budget was used: {admitted} × {used} of {limit}");
    assert_eq!(fx.upstream.take_bodies().len() as u64, admitted);

    // A key without budgets: its requests pass (its request quota counts)
    // and leave no budget counter in Redis: the guard wrote no filter state,
    // so Envoy sent no budget descriptor.
    let (unmetered, unmetered_id) = &keys.unmetered;
    for replica in 0..REPLICAS {
        let r = fx.post(replica, unmetered, "/v1/chat/completions", &chat("gpt-4o-mini", "hello"));
        assert_eq!(r.status, 200, "{}", r.body_text());
    }
    thread::sleep(SETTLE_PAUSE);
    let counters = fx.redis.cli(&["--scan", "--pattern", &format!("tokenhub.q|k|{unmetered_id}|*")]);
    let counters: Vec<&str> = counters.lines().collect();
    assert_eq!(counters.len(), 1, "only its request counter: {counters:?}");
    assert!(counters[0].contains("|m|"), "{counters:?}");

    // `usage --current`: this month's totals from the service's counters
    // in Redis, what was charged above (the refusals by the service not
    // counted; the unpriced model's refusal a request of nothing).
    let usage = |extra: &[&str]| {
        let mut args = vec!["usage", "--current"];
        args.extend_from_slice(extra);
        let mut cmd = fx.admin.command(&args);
        cmd.env("TOKENHUB_REDIS_URL", fx.redis.url());
        let out = cmd.output().expect("tokenhub-admin usage --current");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let totals = |id: &str| {
        let report = usage(&["--key", id]);
        let rows = report["rows"].as_array().cloned().unwrap_or_default();
        assert_eq!(rows.len(), 1, "{report}");
        ["requests", "input_tokens", "output_tokens", "cached_tokens", "cost_nano_usd"]
            .map(|f| rows[0][f].as_u64().unwrap_or_else(|| panic!("{f} in {report}")))
    };
    let [per_minute_id, dollars_id, cut_off_id] = &keys.ids;
    assert_eq!(totals(per_minute_id), [7, 7 * 1_200, 7 * 300, 7 * 1_024, 7 * 368_800_000]);
    assert_eq!(totals(dollars_id), [4, 3 * 1_200, 3 * 300, 3 * 1_024, 3 * 368_800_000]);
    // The cut-off stream: 35 in (10 of them cached), 1 out; then 4 × (35, 15).
    assert_eq!(totals(cut_off_id), [5, 5 * 35, 1 + 4 * 15, 5 * 10, 0]);
    // Per tenant: every metered request of acme (not the unmetered key's).
    let tenant = usage(&["--by", "tenant"]);
    let rows = tenant["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{tenant}");
    assert_eq!(rows[0]["requests"].as_u64(), Some(7 + 4 + 5 + admitted), "{tenant}");
    assert_eq!(rows[0]["tenant"], "acme");
}

/// One request on its own connection; `between` runs after the headers
/// went out and 300 ms passed (Envoy's ratelimit filter has its answer),
/// before the body. The raw response, read until the connection closes.
fn send_split(envoy: &Envoy, key: &str, path: &str, body: &[u8], between: impl FnOnce()) -> String {
    let mut conn = TcpStream::connect(envoy.listener()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: tokenhub.test\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("head");
    thread::sleep(Duration::from_millis(300));
    between();
    conn.write_all(body).expect("body");
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// This minute's token counter of a key in Redis (`tokenhub.q|k|ID|tm|…`).
fn minute_tokens(redis: &Redis, key_id: &str) -> u64 {
    let keys = redis.cli(&["--scan", "--pattern", &format!("tokenhub.q|k|{key_id}|tm|*")]);
    keys.lines().map(|k| redis.cli(&["GET", k.trim()]).trim().parse::<u64>().unwrap_or(0)).sum()
}

/// The body's `max_tokens` in the global mode: Envoy's ratelimit filter
/// reserved at headers with the default output (512), so the guard tops
/// the reservation up itself once it read the body (one more
/// `ShouldRateLimit`, to the same service, from the Wasm filter).
/// - Refused at body time: a key of 400 tokens a minute, 50 used. The
///   header reservation (~540 for an Anthropic stream) is admitted (the
///   counter was below the limit), so a 4 096-token cap's top-up finds the
///   budget spent: 429 `token_budget_exceeded` with the service's
///   `ratelimit-*`, nothing upstream, the header reservation given back;
///   the same request without `max_tokens` is admitted. (Without the
///   top-up, the capped request is admitted: 200.)
/// - Admitted and settled: a key of 10 000 a minute; a request stating
///   `max_tokens` 8 500, answered after 1 s with 8 496 out. While it runs
///   Redis holds its body estimate (input + 8 500: without the top-up,
///   input + 512); after it, exactly the usage (a settlement that forgot the
///   top-up would leave 7 988 more). The top-up passed the soft limit: the
///   access log says so (the header reservation alone did not).
/// - The service failing at the top-up (Redis gone after the header
///   answer): 503 `filter_fault`, fail closed (without the top-up: 200).
#[test]
fn the_bodys_max_tokens_is_topped_up_by_the_guard() {
    let admin = acme_with_providers();
    let tight = admin.create_key("acme", &[]);
    set_quota(&admin, &["--key", &tight.key_id], &["--tokens-per-minute", "400"]);
    let roomy = admin.create_key("acme", &[]);
    set_quota(&admin, &["--key", &roomy.key_id], &["--tokens-per-minute", "10000"]);
    admin.json(&["quota", "metering", "--default-output-tokens", &OUTPUT_RESERVATION.to_string()]);
    let upstream = ScriptedUpstream::start(script);
    let (mut redis, _service, envoys) = start_global_mode(&admin, upstream.addr.port(), 1);
    let envoy = &envoys[0];
    let capped = |max_tokens: u64| {
        format!(
            r#"{{"model":"claude-3-5-haiku-20241022","max_tokens":{max_tokens},"stream":true,"messages":[{{"role":"user","content":"hi"}}]}}"#
        )
        .into_bytes()
    };
    let path = "/anthropic/v1/messages";

    // Both parts (about 5 s) in one minute's counters.
    room_in_minute(20);
    let out = send_split(envoy, &tight.key, path, &anthropic_stream("hi"), || {});
    assert!(out.starts_with("HTTP/1.1 200"), "no max_tokens: the header reservation only: {out}");
    thread::sleep(SETTLE_PAUSE);
    assert_eq!(minute_tokens(&redis, &tight.key_id), 50, "settled to the stream's 35 in + 15 out");
    assert_eq!(upstream.take_bodies().len(), 1);
    let out = send_split(envoy, &tight.key, path, &capped(4_096), || {});
    assert!(out.starts_with("HTTP/1.1 429"), "the top-up must be refused: {out}");
    assert!(out.contains("token_budget_exceeded"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(lower.contains("ratelimit-limit: 400") && lower.contains("ratelimit-remaining: 0"), "{out}");
    assert!(lower.contains("retry-after: "), "{out}");
    assert!(lower.contains("content-type: application/json"), "{out}");
    assert!(upstream.take_bodies().is_empty(), "a refused body reaches no upstream");
    thread::sleep(SETTLE_PAUSE);
    assert_eq!(minute_tokens(&redis, &tight.key_id), 50, "the refusal gave its header reservation back");
    let out = send_split(envoy, &tight.key, path, &anthropic_stream("hi"), || {});
    assert!(out.starts_with("HTTP/1.1 200"), "the same request without max_tokens is admitted: {out}");
    upstream.take_bodies();

    let body =
        br#"{"model":"gpt-4o-mini","max_tokens":8500,"messages":[{"role":"user","content":"reserve-mode"}]}"#.to_vec();
    let input = (body.len() as u64).div_ceil(4);
    let during = thread::scope(|scope| {
        let running = scope.spawn(|| send_split(envoy, &roomy.key, "/v1/chat/completions", &body, || {}));
        // The upstream answers 1 s after the body: the reservation stands.
        thread::sleep(Duration::from_millis(300 + 600));
        let during = minute_tokens(&redis, &roomy.key_id);
        let out = running.join().expect("request thread");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        during
    });
    assert_eq!(during, input + 8_500, "reserved while running: the body's estimate (input {input} + max_tokens)");
    thread::sleep(SETTLE_PAUSE);
    assert_eq!(minute_tokens(&redis, &roomy.key_id), input + 8_496, "settled to the usage reported");
    // The top-up took the budget past its soft limit (80 %; the header
    // reservation alone did not): the service said so in the top-up's
    // answer, and the guard marked it in the access log.
    let line = envoy.access_log().into_iter().find(|l| l["key_id"] == roomy.key_id.as_str()).expect("access log line");
    assert_eq!(line["soft_limit"], "1", "{line}");

    // Redis gone after Envoy's ratelimit filter answered: the top-up cannot
    // be decided, the guard refuses (fail closed).
    let out = send_split(envoy, &roomy.key, path, &capped(4_096), || redis.kill());
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("gateway_fault"), "{out}");
    assert_eq!(upstream.take_bodies().len(), 1, "only the admitted request reached the upstream");
}

/// RESP for one command.
fn resp(args: &[&str]) -> String {
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    out
}

/// `usage --current` over 100 000 keys' totals in a real Redis (the size
/// the issue names): every row is read and summed right. The time is
/// printed, not asserted (docs/global-quotas.md has the figures).
#[test]
fn usage_current_reads_100_000_keys_totals() {
    const KEYS: u64 = 100_000;
    let admin = Admin::init(&paths::guard_wasm());
    admin.json(&["tenant", "add", "acme", "--region", "eu"]);
    admin.json(&["quota", "mode", "global"]);
    let redis = Redis::start();
    let month = std::process::Command::new("date").args(["-u", "+%Y-%m"]).output().expect("date");
    let month = String::from_utf8_lossy(&month.stdout).trim().to_string();
    // The service's layout (src/admin/ratelimit/totals.rs): per level, one
    // hash per month, member → `requests input output cached usd nano`; the
    // sub-account and tenant levels hold the sums the settlements add there.
    let total = |level: &str| format!("tokenhub.usage|{month}|{level}");
    let input: u64 = (0..KEYS).map(|i| i % 1_000).sum();
    let output: u64 = (0..KEYS).map(|i| i % 7).sum();
    let cost = 1_000 * KEYS;
    let mut commands = String::new();
    for i in 0..KEYS {
        let member = format!("acme|default|k{i:07}");
        let packed = format!("2 {} {} 1 0 1000", i % 1_000, i % 7);
        commands.push_str(&resp(&["HSET", &total("key"), &member, &packed]));
    }
    let sums = format!("{} {input} {output} {KEYS} {} {}", 2 * KEYS, cost / 1_000_000_000, cost % 1_000_000_000);
    for (level, member) in [("sub", "acme|default|*"), ("tenant", "acme|*|*")] {
        commands.push_str(&resp(&["HSET", &total(level), member, &sums]));
    }
    redis.pipe(commands.as_bytes());
    let run = |args: &[&str]| {
        let mut cmd = admin.command(args);
        cmd.env("TOKENHUB_REDIS_URL", redis.url());
        let started = std::time::Instant::now();
        let out = cmd.output().expect("tokenhub-admin usage --current");
        let took = started.elapsed();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON"), took)
    };
    let (tenant, took_tenant) = run(&["usage", "--current", "--by", "tenant"]);
    let row = &tenant["rows"][0];
    assert_eq!(tenant["month"], month.as_str());
    assert_eq!(
        [&row["requests"], &row["input_tokens"], &row["output_tokens"], &row["cached_tokens"], &row["cost_nano_usd"]]
            .map(|v| v.as_u64()),
        [Some(2 * KEYS), Some(input), Some(output), Some(KEYS), Some(cost)],
        "{tenant}"
    );
    let (keys, took_keys) = run(&["usage", "--current"]);
    assert_eq!(keys["rows"].as_array().map(Vec::len), Some(KEYS as usize));
    let summed: u64 = keys["rows"].as_array().into_iter().flatten().filter_map(|r| r["input_tokens"].as_u64()).sum();
    assert_eq!(summed, input, "the key level adds up to the tenant's");
    // The same as a table for a terminal: a header and a line per key.
    let mut cmd = admin.text_command(&["usage", "--current"]);
    cmd.env("TOKENHUB_REDIS_URL", redis.url());
    let started = std::time::Instant::now();
    let out = cmd.output().expect("tokenhub-admin usage --current");
    let took_text = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = text.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        ["TENANT", "SUB_ACCOUNT", "KEY_ID", "REQUESTS", "INPUT_TOKENS", "OUTPUT_TOKENS", "CACHED_TOKENS", "COST_USD"]
    );
    assert_eq!(text.lines().count(), KEYS as usize + 1);
    assert!(
        text.contains(
            "acme    default      k0000999  2         999           5              1              0.000001000"
        ),
        "{}",
        &text[..2_000]
    );
    eprintln!(
        "usage --current over {KEYS} keys' totals: --by tenant {took_tenant:?}, --by key {took_keys:?} (JSON) and {took_text:?} (text), {KEYS} rows"
    );
}
