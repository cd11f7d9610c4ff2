//! Model allowlists and token usage end to end: a
//! real Envoy with the built guard, keys with `--models` made by the real
//! `tokenhub-admin`, and a scripted upstream that answers in the real
//! OpenAI and Anthropic response shapes, JSON and SSE, the SSE written in
//! small TCP pieces so events reach the filter split across body chunks.
//!
//! Checks: an allowed model passes with its body byte for byte; another
//! model is 403 `model_not_allowed`; a non-JSON body is 400 for a
//! restricted key only; the access log carries the model and the token
//! counts; a unique canary in request and response bodies never appears in
//! any log or file of Envoy or the store.
//!
//! Needs the filter (`make wasm`), the sidecar and Envoy (`make bootstrap`).

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;
use tokenhub_integration::guard::*;
use tokenhub_integration::scripted::{Reply, ScriptedUpstream};
use tokenhub_integration::IssuedKey;

const CANARY: &str = "zdr-canary-7f3a9c1e5b";

/// What the scripted upstream answers: by path and `"stream":true`.
fn scripted_reply(path: &str, body: &[u8]) -> (&'static str, Vec<u8>) {
    let stream = String::from_utf8_lossy(body).contains("\"stream\":true");
    let text = format!("{CANARY} reply");
    match (path.starts_with("/anthropic/"), stream) {
        (false, false) => ("application/json", format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{{"cached_tokens":1024}},"completion_tokens_details":{{"reasoning_tokens":64}}}}}}"#
        ).into_bytes()),
        (false, true) => ("text/event-stream", format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}],\"usage\":null}}\n\n\
             data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,\"prompt_tokens_details\":{{\"cached_tokens\":0}}}}}}\n\n\
             data: [DONE]\n\n"
        ).into_bytes()),
        (true, false) => ("application/json", format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[{{"type":"text","text":"{text}"}}],"stop_reason":"end_turn","usage":{{"input_tokens":20,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":12}}}}"#
        ).into_bytes()),
        (true, true) => ("text/event-stream", format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-20241022\",\"usage\":{{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}}}}\n\n\
             event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":15}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        ).into_bytes()),
    }
}

/// `scripted_reply` as the upstream sends it: event streams chunked in
/// 7-byte writes.
fn script(path: &str, body: &[u8]) -> Reply {
    match scripted_reply(path, body) {
        ("text/event-stream", body) => Reply::Streamed { content_type: "text/event-stream", body, piece: 7 },
        (content_type, body) => Reply::Whole { content_type, body, delay: Duration::ZERO },
    }
}

/// A POST whose body is written in two parts 300 ms apart (so Envoy hands
/// the filter two chunks); the raw response text.
fn post_in_two(fx: &Fixture, key: &str, first: &[u8], second: &[u8]) -> String {
    use std::io::Read;
    let mut conn = TcpStream::connect(fx.envoy.listener()).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: tokenhub.test\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        first.len() + second.len()
    );
    conn.write_all(head.as_bytes()).expect("head");
    conn.write_all(first).expect("first part");
    conn.flush().expect("flush");
    thread::sleep(Duration::from_millis(300));
    // The refusal may already have closed the connection.
    let _ = conn.write_all(second);
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn chat(model: &str, stream: bool) -> Vec<u8> {
    // openai-python's order: the prompt before the model.
    format!(r#"{{"messages":[{{"role":"user","content":"{CANARY} question"}}],"model":"{model}","stream":{stream}}}"#)
        .into_bytes()
}

fn anthropic(model: &str, stream: bool) -> Vec<u8> {
    format!(
        r#"{{"model":"{model}","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"{CANARY} question"}}]}}"#
    )
    .into_bytes()
}

fn files_containing(dir: &Path, needle: &[u8], hits: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_containing(&p, needle, hits);
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
}

#[test]
fn model_allowlists_and_usage_through_envoy() {
    let upstream = ScriptedUpstream::start(script);
    let restricted: Arc<Mutex<Option<IssuedKey>>> = Arc::new(Mutex::new(None));
    let r = Arc::clone(&restricted);
    let upstream_port = upstream.addr.port();
    let fx = Fixture::start_with_module(
        &tokenhub_integration::paths::guard_wasm(),
        move |admin, _| {
            *r.lock().unwrap() = Some(admin.create_key(TENANT, &["--models", "gpt-4o-mini,claude-3-5-*"]));
        },
        move |opts| opts.upstream_port = upstream_port,
    );
    let key = restricted.lock().unwrap().clone().expect("restricted key");
    let ecds = fx.admin.ecds_contents();
    assert!(ecds.contains("proxy_on_request_body") && ecds.contains("proxy_on_response_body"), "{ecds}");

    // Allowed, OpenAI JSON: the body reaches the upstream byte for byte.
    let body = chat("gpt-4o-mini", false);
    let resp = fx.post_json(&key.key, "/v1/chat/completions", &body);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(resp.json()["usage"]["prompt_tokens"], 1200);
    assert_eq!(upstream.take_bodies(), vec![body]);

    // Allowed, OpenAI SSE.
    let resp = fx.post_json(&key.key, "/v1/chat/completions", &chat("gpt-4o-mini", true));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert!(resp.body_text().ends_with("data: [DONE]\n\n"), "{}", resp.body_text());

    // Allowed by prefix, Anthropic JSON and SSE.
    let resp = fx.post_json(&key.key, "/anthropic/v1/messages", &anthropic("claude-3-5-haiku-20241022", false));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    let resp = fx.post_json(&key.key, "/anthropic/v1/messages", &anthropic("claude-3-5-haiku-20241022", true));
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(upstream.take_bodies().len(), 3);

    // Another model: 403 model_not_allowed, nothing upstream.
    let resp = fx.post_json(&key.key, "/v1/chat/completions", &chat("gpt-4o", false));
    assert_eq!(resp.status, 403, "{}", resp.body_text());
    let err = resp.json();
    assert_eq!(err["error"]["code"], "model_not_allowed", "{err}");
    assert_eq!(err["error"]["type"], "permission_error", "{err}");
    // Not JSON: 400 for the restricted key.
    let resp = fx.post_json(&key.key, "/v1/chat/completions", format!("model=gpt-4o-mini&q={CANARY}").as_bytes());
    assert_eq!(resp.status, 400, "{}", resp.body_text());
    assert_eq!(resp.json()["error"]["code"], "model_required");
    // Two model members: refused, whichever an upstream parser would read.
    let dup = br#"{"model":"gpt-4o-mini","messages":[],"model":"gpt-4o"}"#;
    assert_eq!(fx.post_json(&key.key, "/v1/chat/completions", dup).status, 400);
    // The second member arrives in a later chunk, after the first was
    // decided and passed on: the request is still refused, and the
    // upstream never gets a complete body.
    let first = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"#;
    let second = br#""model":"gpt-4o"}"#;
    let resp = post_in_two(&fx, &key.key, first, second);
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("model_required"), "{resp}");
    assert!(upstream.take_bodies().is_empty(), "a refused body reached the upstream");
    assert_eq!(fx.guard_stat("tokenhub.denied.model_not_allowed"), 1);
    assert_eq!(fx.guard_stat("tokenhub.denied.model_unreadable"), 3);

    // A request without a body names no model: it goes on as any other.
    let auth = bearer(&key.key);
    let resp = fx.get("/v1/models", &[("authorization", auth.as_str())]);
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(upstream.take_bodies(), vec![Vec::<u8>::new()]);

    // The unrestricted key: its body is never read, not-JSON passes.
    let resp = fx.post_json(&fx.key.key, "/v1/chat/completions", format!("model=x&q={CANARY}").as_bytes());
    assert_eq!(resp.status, 200, "{}", resp.body_text());
    assert_eq!(upstream.take_bodies().len(), 1);

    // The access log: model and tokens of the metered requests.
    let log = fx.envoy.access_log_lines(10);
    assert_eq!(log.len(), 10, "{log:#?}");
    let tokens = |line: &serde_json::Value| {
        ["model", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens"]
            .map(|f| line[f].as_str().map(str::to_string).unwrap_or_default())
    };
    assert_eq!(tokens(&log[0]), ["gpt-4o-mini-2024-07-18", "1200", "300", "1024", "64"], "{}", log[0]);
    assert_eq!(tokens(&log[1]), ["gpt-4o-mini-2024-07-18", "9", "12", "0", "0"], "{}", log[1]);
    assert_eq!(tokens(&log[2]), ["claude-3-5-haiku-20241022", "2120", "12", "2000", "0"], "{}", log[2]);
    assert_eq!(tokens(&log[3]), ["claude-3-5-haiku-20241022", "35", "15", "10", "0"], "{}", log[3]);
    for line in &log[4..] {
        assert!(line["input_tokens"].is_null() && line["model"].is_null(), "{line}");
    }

    // Zero data retention: the canary was in request and response bodies;
    // it is in no log, stat or file of Envoy or the store.
    let mut hits = Vec::new();
    files_containing(fx.envoy.dir(), CANARY.as_bytes(), &mut hits);
    files_containing(fx.admin.dir(), CANARY.as_bytes(), &mut hits);
    assert!(hits.is_empty(), "the canary was written to {hits:?}");
    assert!(!fx.envoy.stats_text().contains(CANARY));
    assert!(!fx.envoy.log_contents().contains(CANARY));
}
