//! Token and dollar budgets end to end (local quota mode): a real Envoy
//! with the built guard, budgets and prices set by the real
//! `tokenhub-admin`, and a scripted upstream answering in the real OpenAI
//! and Anthropic shapes (JSON and SSE, as `models_e2e.rs`).
//!
//! Each budget is proved by how many requests fit in it: the counter moves
//! by the usage the response reported, not by the reservation and not by
//! nothing. Checks: tokens per minute (OpenAI JSON) refused with 429,
//! `Retry-After` and `RateLimit-*` in tokens once spent; tokens per day
//! (Anthropic SSE); a monthly dollar budget charged by the price table, and
//! a model without a price refused; many parallel requests against one
//! budget overshoot it by less than one reservation; a stream the upstream
//! cuts off is charged the usage that arrived; the soft limit's metric and
//! access-log field; the cost in the access log.
//!
//! Needs the filter (`make wasm`), the sidecar and Envoy (`make bootstrap`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tokenhub_integration::guard::*;
use tokenhub_integration::quota::{header_u64, room_in_minute, set_quota};
use tokenhub_integration::scripted::budgets::{anthropic_stream, chat, script, OUTPUT_RESERVATION};
use tokenhub_integration::scripted::ScriptedUpstream;
use tokenhub_integration::{IssuedKey, Response};

/// Sends until the first refusal (at most `max`): the admitted count and the refusal.
fn until_refused(max: usize, send: impl Fn() -> Response) -> (usize, Response) {
    for admitted in 0..max {
        let resp = send();
        if resp.status != 200 {
            return (admitted, resp);
        }
    }
    panic!("{max} requests admitted, none refused");
}

fn assert_budget_refusal(resp: &Response, limit: u64) {
    assert_eq!(resp.status, 429, "{}", resp.body_text());
    assert_eq!(resp.json()["error"]["code"], "token_budget_exceeded", "{}", resp.body_text());
    assert_eq!(header_u64(resp, "ratelimit-limit"), limit, "{:?}", resp.headers);
    assert_eq!(header_u64(resp, "ratelimit-remaining"), 0);
    assert!(header_u64(resp, "retry-after") >= 1);
}

#[derive(Default)]
struct Keys {
    per_minute: Option<IssuedKey>,
    sse: Option<IssuedKey>,
    dollars: Option<IssuedKey>,
    parallel: Option<IssuedKey>,
    parallel_capped: Option<IssuedKey>,
    cut_off: Option<IssuedKey>,
}

#[test]
fn token_and_dollar_budgets_through_envoy() {
    let upstream = ScriptedUpstream::start(script);
    let keys: Arc<Mutex<Keys>> = Arc::default();
    let k = Arc::clone(&keys);
    let upstream_port = upstream.addr.port();
    let fx = Fixture::start_with_module(
        &tokenhub_integration::paths::guard_wasm(),
        move |admin, _| {
            let mut k = k.lock().unwrap();
            let key = |limits: &[&str]| {
                let key = admin.create_key(TENANT, &[]);
                set_quota(admin, &["--key", &key.key_id], limits);
                Some(key)
            };
            k.per_minute = key(&["--tokens-per-minute", "10000"]);
            k.sse = key(&["--tokens-per-day", "500"]);
            k.dollars = key(&["--monthly-budget", "1"]);
            k.parallel = key(&["--tokens-per-day", "10000"]);
            k.parallel_capped = key(&["--tokens-per-day", "5000"]);
            k.cut_off = key(&["--tokens-per-day", "220"]);
            // $100 / $50 / $1000 per million: an OpenAI JSON reply
            // (1200 in, 1024 of them cached, 300 out) costs $0.3688.
            let price = ["price", "set", "--provider", "openai", "--model", "gpt-4o-mini*", "--input", "100"];
            admin.json(&[&price[..], &["--cached-input", "50", "--output", "1000"]].concat());
            let metering =
                admin.json(&["quota", "metering", "--default-output-tokens", &OUTPUT_RESERVATION.to_string()]);
            assert_eq!(metering["default_output_tokens"], OUTPUT_RESERVATION);
        },
        move |opts| opts.upstream_port = upstream_port,
    );
    let keys = std::mem::take(&mut *keys.lock().unwrap());
    let key = |k: &Option<IssuedKey>| k.clone().expect("key").key;

    // Tokens per minute, OpenAI JSON: 1500 tokens a reply. Admitted while
    // the counter is below 10 000: 7 (1 500 × 7 = 10 500). Charging the
    // reservation (~530) would admit 19; charging nothing, all.
    room_in_minute(30);
    let per_minute = key(&keys.per_minute);
    let (admitted, refusal) =
        until_refused(20, || fx.post_json(&per_minute, "/v1/chat/completions", &chat("gpt-4o-mini", "hello")));
    assert_eq!(admitted, 7, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 10_000);
    assert!(header_u64(&refusal, "retry-after") <= 60);
    assert_eq!(upstream.take_bodies().len(), 7, "the refusal reached no upstream");

    // Tokens per day, Anthropic SSE: 35 in + 15 out a reply, 10 fit in 500.
    let sse = key(&keys.sse);
    let (admitted, refusal) =
        until_refused(30, || fx.post_json(&sse, "/anthropic/v1/messages", &anthropic_stream("hi")));
    assert_eq!(admitted, 10, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 500);
    assert!(header_u64(&refusal, "retry-after") > 60, "a day's window");

    // A monthly dollar budget: $0.3688 a reply, 3 fit in $1; a model
    // without a price cannot be charged, so it is refused.
    let dollars = key(&keys.dollars);
    let resp = fx.post_json(&dollars, "/v1/chat/completions", &chat("o3", "hello"));
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    assert_eq!(resp.json()["error"]["code"], "model_not_priced");
    let (admitted, refusal) =
        until_refused(10, || fx.post_json(&dollars, "/v1/chat/completions", &chat("gpt-4o-mini", "hello")));
    assert_eq!(admitted, 3, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 1_000_000_000);
    upstream.take_bodies().len();

    // Concurrency: 30 requests at once, each using its reservation less 4
    // tokens, answered after 1 s. Charged only at the end, all 30 would go
    // through (30 × ~530 against 10 000); reserved at admission, the total
    // stays below the limit plus one reservation (`core::budget`: each is
    // admitted only while the counter, which holds every admitted
    // reservation, is below the limit).
    let parallel = key(&keys.parallel);
    let body = chat("gpt-4o-mini", "reserve-mode");
    let reservation = (body.len() as u64).div_ceil(4) + OUTPUT_RESERVATION;
    let refused = overshoot_bound(&fx, &upstream, &parallel, &[body], 10_000, reservation);
    // The same with `max_tokens: 200` stated, after the model or before it:
    // reserved ~225 each, so ~22 fit in 5 000 (reserving the default 512
    // instead would admit ~10, using under half the budget).
    let capped = key(&keys.parallel_capped);
    let after = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"reserve-mode"}],"max_tokens":200}"#;
    let before = br#"{"max_tokens":200,"model":"gpt-4o-mini","messages":[{"role":"user","content":"reserve-mode"}]}"#;
    assert_eq!(after.len(), before.len());
    let reservation = (after.len() as u64).div_ceil(4) + 200;
    let refused =
        refused + overshoot_bound(&fx, &upstream, &capped, &[after.to_vec(), before.to_vec()], 5_000, reservation);

    // A stream the upstream cuts off after `message_start` (35 in, 1 out so
    // far): charged those 36 tokens when Envoy ends the stream. Then
    // Anthropic SSE replies of 50 fit while below 220: 4 (36 + 200 = 236).
    // Keeping the reservation would admit none, charging nothing 5.
    let cut_off = key(&keys.cut_off);
    let mut conn = TcpStream::connect(fx.envoy.listener()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let body = anthropic_stream("cut-off");
    let head = format!(
        "POST /anthropic/v1/messages HTTP/1.1\r\nhost: tokenhub.test\r\nauthorization: Bearer {cut_off}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).expect("head");
    conn.write_all(&body).expect("body");
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("message_start"), "{out}");
    assert!(!out.contains("message_stop"), "the stream was cut off: {out}");
    thread::sleep(Duration::from_millis(500));
    let (admitted, refusal) =
        until_refused(10, || fx.post_json(&cut_off, "/anthropic/v1/messages", &anthropic_stream("hi")));
    assert_eq!(admitted, 4, "{}", refusal.body_text());
    assert_budget_refusal(&refusal, 220);

    // The soft limit (80 %): counted, and in the access log of the
    // requests admitted past it; the cost of the dollar-budget replies.
    assert!(fx.guard_stat("tokenhub.budget_soft_limit") >= 5, "{:?}", fx.guard_counters());
    assert_eq!(fx.guard_stat("tokenhub.denied.budget_exceeded") as usize, 4 + refused);
    assert_eq!(fx.guard_stat("tokenhub.denied.model_not_priced"), 1);
    let log = fx.envoy.access_log_lines(8 + 11 + 5 + 30 + 30 + 1 + 5);
    let of = |k: &Option<IssuedKey>| {
        let id = k.clone().expect("key").key_id;
        log.iter().filter(|l| l["key_id"] == id.as_str()).cloned().collect::<Vec<_>>()
    };
    let minute_lines = of(&keys.per_minute);
    let soft: Vec<bool> = minute_lines.iter().map(|l| l["soft_limit"] == "1").collect();
    // After 5 replies 7 500 are used: the 6th's reservation passes 8 000.
    assert_eq!(soft, [false, false, false, false, false, true, true, false], "{minute_lines:#?}");
    let costs: Vec<String> =
        of(&keys.dollars).iter().map(|l| l["cost_nano_usd"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(costs, ["", "368800000", "368800000", "368800000", ""], "model_not_priced, 3 replies, the refusal");

    // `tokenhub-admin usage` on the same log: the dollar key's tokens and
    // cost per model (the model the response named), summed from the lines.
    let access_log = fx.envoy.access_log_path().display().to_string();
    let dollars_id = keys.dollars.clone().expect("key").key_id;
    let report = fx.admin.json(&["usage", "--access-log", &access_log, "--key", &dollars_id, "--per-model"]);
    let rows = report["rows"].as_array().expect("rows");
    let replied = rows.iter().find(|r| r["model"] == "gpt-4o-mini-2024-07-18").expect("a row for the model");
    let totals: Vec<Option<u64>> = ["requests", "input_tokens", "output_tokens", "cached_tokens", "cost_nano_usd"]
        .iter()
        .map(|f| replied[*f].as_u64())
        .collect();
    assert_eq!(totals, [Some(3), Some(3_600), Some(900), Some(3_072), Some(3 * 368_800_000)], "{report}");
    assert_eq!(replied["cost_usd"], "1.106400000");

    // Prometheus: usage per tenant and model, labels bounded by the bundle
    // (`core::usage_metrics`): the priced models by their price-table
    // pattern, the unpriced Anthropic one as `other` (10 + 1 cut off + 4
    // replies of 35 input tokens).
    let prometheus = fx.envoy.stats_prometheus();
    let series = |kind: &str, model: &str| {
        let head = format!("tokenhub_usage_{kind}{{tenant=\"{TENANT}\",model=\"{model}\"}} ");
        let alt = format!("tokenhub_usage_{kind}{{model=\"{model}\",tenant=\"{TENANT}\"}} ");
        prometheus
            .lines()
            .find_map(|l| l.strip_prefix(&head).or_else(|| l.strip_prefix(&alt)))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let usage_lines: Vec<&str> = prometheus.lines().filter(|l| l.contains("tokenhub_usage")).collect();
    assert_eq!(series("requests", "other"), Some(15), "{usage_lines:#?}");
    assert_eq!(series("input_tokens", "other"), Some(15 * 35), "{usage_lines:#?}");
    assert_eq!(series("cost_nano_usd", "other"), Some(0), "{usage_lines:#?}");
    assert!(series("cost_nano_usd", "gpt-4o-mini_").is_some_and(|c| c >= 10 * 368_800_000), "{usage_lines:#?}");
    assert!(
        usage_lines
            .iter()
            .all(|l| l.starts_with('#') || l.contains("model=\"other\"") || l.contains("model=\"gpt-4o-mini_\"")),
        "only bundle-defined labels: {usage_lines:#?}"
    );
}

/// Sends 30 requests at once (the bodies in turn), each answered after 1 s
/// with usage = its reservation less 4: some must be refused, and the
/// admitted ones' total must stay below `limit + reservation` yet use the
/// budget. Returns how many were refused.
fn overshoot_bound(
    fx: &Fixture,
    upstream: &ScriptedUpstream,
    key: &str,
    bodies: &[Vec<u8>],
    limit: u64,
    reservation: u64,
) -> usize {
    let used = reservation - 4;
    let responses: Vec<Response> = thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let body = &bodies[i % bodies.len()];
                scope.spawn(move || fx.post_json(key, "/v1/chat/completions", body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("request thread")).collect()
    });
    let admitted = responses.iter().filter(|r| r.status == 200).count() as u64;
    let refused: Vec<&Response> = responses.iter().filter(|r| r.status != 200).collect();
    assert!(refused.iter().all(|r| r.status == 429), "{:?}", refused.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(!refused.is_empty(), "30 × {used} tokens against {limit}: some must be refused");
    assert!(admitted * used < limit + reservation, "overshoot bound: {admitted} × {used} ≥ {limit} + {reservation}");
    assert!(admitted * used >= limit - reservation, "the budget was used: {admitted} × {used} of {limit}");
    assert_eq!(upstream.take_bodies().len() as u64, admitted);
    refused.len()
}
