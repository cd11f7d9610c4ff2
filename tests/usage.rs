//! Token usage from real provider response shapes, JSON and SSE, chunked at
//! every byte offset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokenhub_guard::core::usage::{Framing, Usage, UsageParser};
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn parse_chunks<'a>(framing: Framing, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Option<Usage>, Option<String>) {
    let mut p = UsageParser::new(framing);
    for c in chunks {
        p.feed(c);
    }
    (p.usage(), p.model().map(str::to_string))
}

/// Whole, 1-byte chunks, and every two-way split agree.
fn parse_everywhere(framing: Framing, body: &[u8]) -> (Option<Usage>, Option<String>) {
    let whole = parse_chunks(framing, [body]);
    assert_eq!(parse_chunks(framing, body.chunks(1)), whole, "1-byte chunks");
    for cut in 0..=body.len() {
        let (a, b) = body.split_at(cut);
        assert_eq!(parse_chunks(framing, [a, b]), whole, "split at {cut}");
    }
    whole
}

/// `body` parses (see `parse_everywhere`) to `want` and names `model`.
fn assert_parses(framing: Framing, body: &[u8], want: Option<Usage>, model: &str) {
    assert_eq!(parse_everywhere(framing, body), (want, Some(model.to_string())));
}

fn usage(input: u64, output: u64, cached_input: u64, cache_write: u64, reasoning: u64) -> Option<Usage> {
    Some(Usage { input, output, cached_input, cache_write, reasoning })
}

#[test]
fn content_types() {
    assert_eq!(Framing::from_content_type("application/json"), Some(Framing::Json));
    assert_eq!(Framing::from_content_type("Application/JSON; charset=utf-8"), Some(Framing::Json));
    assert_eq!(Framing::from_content_type("text/event-stream; charset=utf-8"), Some(Framing::EventStream));
    assert_eq!(Framing::from_content_type("application/problem+json"), Some(Framing::Json));
    assert_eq!(Framing::from_content_type("text/plain"), None);
}

#[test]
fn openai_chat_completion_json() {
    let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"usage: {\"prompt_tokens\": 999}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":64,"audio_tokens":0}},"system_fingerprint":"fp"}"#;
    assert_parses(Framing::Json, body, usage(1200, 300, 1024, 0, 64), "gpt-4o-2024-08-06");
}

#[test]
fn responses_api_json() {
    let body = br#"{"id":"resp_1","object":"response","model":"o4-mini","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":128},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":32},"total_tokens":380}}"#;
    assert_eq!(parse_everywhere(Framing::Json, body).0, usage(328, 52, 128, 0, 32));
}

#[test]
fn anthropic_message_json() {
    let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-sonnet-20241022","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":20,"cache_creation_input_tokens":100,"cache_read_input_tokens":2000,"output_tokens":12}}"#;
    assert_parses(Framing::Json, body, usage(2120, 12, 2000, 100, 0), "claude-3-5-sonnet-20241022");
}

#[test]
fn gemini_json() {
    let body = br#"{"candidates":[{"content":{"parts":[{"text":"x"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":50,"candidatesTokenCount":10,"totalTokenCount":80,"cachedContentTokenCount":20,"thoughtsTokenCount":20},"modelVersion":"gemini-2.5-flash"}"#;
    assert_parses(Framing::Json, body, usage(50, 30, 20, 0, 20), "gemini-2.5-flash");
}

#[test]
fn json_without_usage_or_not_json() {
    assert_eq!(parse_everywhere(Framing::Json, br#"{"error":{"message":"bad"}}"#).0, None);
    assert_eq!(parse_everywhere(Framing::Json, b"<html>usage</html>").0, None);
    assert_eq!(parse_everywhere(Framing::Json, br#"{"usage":null}"#).0, None);
}

const OPENAI_STREAM: &[u8] = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"usage\\\"\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,\"prompt_tokens_details\":{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n\
data: [DONE]\n\n";

#[test]
fn openai_stream_final_usage_chunk() {
    assert_parses(Framing::EventStream, OPENAI_STREAM, usage(9, 12, 0, 0, 0), "gpt-4o-mini");
}

#[test]
fn openai_stream_crlf_and_split_data_lines() {
    let crlf: Vec<u8> = String::from_utf8_lossy(OPENAI_STREAM).replace('\n', "\r\n").into_bytes();
    assert_eq!(parse_everywhere(Framing::EventStream, &crlf).0, usage(9, 12, 0, 0, 0));
    let cr: Vec<u8> = String::from_utf8_lossy(OPENAI_STREAM).replace('\n', "\r").into_bytes();
    assert_eq!(parse_everywhere(Framing::EventStream, &cr).0, usage(9, 12, 0, 0, 0));
    // One event's JSON over several data lines, no space after the colon,
    // with a comment and an id field between.
    let multi = b": keep-alive\n\nid: 7\ndata:{\"usage\":\ndata: {\"prompt_tokens\":3,\n: comment\ndata: \"completion_tokens\":4}}\n\n";
    assert_eq!(parse_everywhere(Framing::EventStream, multi).0, usage(3, 4, 0, 0, 0));
}

const ANTHROPIC_STREAM: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-3-5-haiku-20241022\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\\\"usage\\\":{\\\"output_tokens\\\":999}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

#[test]
fn anthropic_stream_start_and_delta() {
    assert_parses(Framing::EventStream, ANTHROPIC_STREAM, usage(35, 15, 10, 0, 0), "claude-3-5-haiku-20241022");
}

#[test]
fn an_aborted_stream_counts_what_arrived() {
    let cut = ANTHROPIC_STREAM.windows(21).position(|w| w == b"event: message_delta\n").unwrap();
    let (u, _) = parse_everywhere(Framing::EventStream, &ANTHROPIC_STREAM[..cut]);
    assert_eq!(u, usage(35, 1, 10, 0, 0));
    // Cut inside the final usage event: the partial event is not counted.
    let inside = ANTHROPIC_STREAM.windows(16).position(|w| w == b"\"output_tokens\":").unwrap();
    let last = ANTHROPIC_STREAM[..inside + 20].len();
    let (u, _) = parse_chunks(Framing::EventStream, [&ANTHROPIC_STREAM[..last]]);
    assert!(u.is_none() || u == usage(35, 1, 10, 0, 0), "{u:?}");
}

#[test]
fn responses_api_stream_completed_event() {
    let mut body = Vec::new();
    body.extend_from_slice(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-4.1\",\"output\":[],\"usage\":null}}\n\n");
    body.extend_from_slice(
        b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n",
    );
    // The completed event repeats the whole output: far larger than any
    // buffer the parser keeps.
    let text = "x".repeat(20_000);
    body.extend_from_slice(format!("event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"model\":\"gpt-4.1\",\"output\":[{{\"type\":\"message\",\"content\":[{{\"type\":\"output_text\",\"text\":\"{text}\"}}]}}],\"usage\":{{\"input_tokens\":36,\"input_tokens_details\":{{\"cached_tokens\":0}},\"output_tokens\":87,\"output_tokens_details\":{{\"reasoning_tokens\":0}},\"total_tokens\":123}}}}}}\n\n").as_bytes());
    let (u, m) = parse_chunks(Framing::EventStream, body.chunks(1));
    assert_eq!(u, usage(36, 87, 0, 0, 0));
    assert_eq!(m.as_deref(), Some("gpt-4.1"));
    for size in [2, 3, 7, 64, 1000, 16384] {
        assert_eq!(parse_chunks(Framing::EventStream, body.chunks(size)).0, usage(36, 87, 0, 0, 0), "{size}");
    }
}

#[test]
fn gemini_sse_stream_keeps_the_last_cumulative_count() {
    let body = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":1,\"totalTokenCount\":9},\"modelVersion\":\"gemini-2.0-flash\"}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]}}],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":5,\"totalTokenCount\":13},\"modelVersion\":\"gemini-2.0-flash\"}\r\n\r\n";
    assert_parses(Framing::EventStream, body, usage(8, 5, 0, 0, 0), "gemini-2.0-flash");
}

#[test]
fn garbage_streams_yield_nothing() {
    for body in
        [&b"data: {\"usage\":{\"prompt_tokens\":1\n\ndata: }}\n\n"[..], b"\xff\xfe\x00data", b"data: [DONE]\n\n"]
    {
        assert_eq!(parse_everywhere(Framing::EventStream, body).0, None, "{:?}", String::from_utf8_lossy(body));
    }
    // An overlong usage object is ignored, not truncated into a wrong count.
    let pad = "1".repeat(5000);
    let big = format!("data: {{\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2,\"x\":{pad}}}}}\n\n");
    assert_eq!(parse_chunks(Framing::EventStream, [big.as_bytes()]).0, None);
}
