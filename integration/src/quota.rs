//! What the quota suites share: the guard counting locally
//! (`tests/quota_e2e.rs`) and the rate limit service counting globally
//! (`tests/global_quota_e2e.rs`) are held to the same admission and the
//! same refusal.

use crate::{Admin, Response};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `tokenhub-admin quota set <target> <limits>`.
pub fn set_quota(admin: &Admin, target: &[&str], limits: &[&str]) {
    let mut args = vec!["quota", "set"];
    args.extend_from_slice(target);
    args.extend_from_slice(limits);
    admin.json(&args);
}

/// The request lines of one counted call with `key` to `host`, on its own
/// connection, with `extra` headers.
pub fn call_lines(host: &str, key: &str, extra: &[&str]) -> Vec<String> {
    let mut lines = vec![
        "POST /v1/chat/completions HTTP/1.1".to_string(),
        format!("host: {host}"),
        format!("authorization: Bearer {key}"),
        "content-length: 0".to_string(),
        "connection: close".to_string(),
    ];
    lines.extend(extra.iter().map(|h| h.to_string()));
    lines
}

/// Waits until at least `need` seconds remain in the current minute, so a
/// per-minute window does not reset under a test.
pub fn room_in_minute(need: u64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let left = 60 - now % 60;
    if left < need {
        thread::sleep(Duration::from_secs(left) + Duration::from_millis(200));
    }
}

pub fn header_u64(resp: &Response, name: &str) -> u64 {
    resp.header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", resp.headers))
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `threads` threads, thread `i` making `per_thread` calls `call(i)` at
/// once; every response.
pub fn hammer<F>(threads: usize, per_thread: usize, call: F) -> Vec<Response>
where
    F: Fn(usize) -> Response + Send + Sync + 'static,
{
    let call = Arc::new(call);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let call = Arc::clone(&call);
            thread::spawn(move || (0..per_thread).map(|_| call(i)).collect::<Vec<_>>())
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().expect("load thread")).collect()
}

/// How many were admitted.
pub fn admitted(responses: &[Response]) -> usize {
    responses.iter().filter(|r| r.status == 200).count()
}

/// The shape of every refusal, from the guard (local mode) or from the rate
/// limit service (global mode): 429, the exhausted limit's RateLimit fields
/// and `Retry-After`, the OpenAI-shaped JSON error.
pub fn assert_refusal(r: &Response, limit: u64) {
    assert_eq!(r.status, 429, "{}", r.body_text());
    assert_eq!(header_u64(r, "ratelimit-limit"), limit, "{:?}", r.headers);
    assert_eq!(header_u64(r, "ratelimit-remaining"), 0);
    let retry = header_u64(r, "retry-after");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(header_u64(r, "ratelimit-reset"), retry);
    assert_eq!(r.header("content-type"), Some("application/json"), "{:?}", r.headers);
    let body = r.json();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
}
