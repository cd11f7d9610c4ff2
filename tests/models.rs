//! The bounded model scanner (request bodies) and model allowlist patterns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use tokenhub_guard::core::models::{
    allowed_by_all, any_rules, ModelRules, ModelScan, ModelScanner, Pattern, Rest, DEFAULT_SCAN_BOUND,
};
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Scans `body` in the given chunks, then ends the body.
fn scan_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> ModelScan {
    let mut s = ModelScanner::new(DEFAULT_SCAN_BOUND);
    for c in chunks {
        match s.feed(c) {
            ModelScan::NeedMore => {}
            done => return done,
        }
    }
    s.finish()
}

fn scan(body: &[u8]) -> ModelScan {
    scan_chunks([body])
}

/// The same result whole, in 1-byte chunks, and split in two at every offset.
fn scan_everywhere(body: &[u8]) -> ModelScan {
    let whole = scan(body);
    assert_eq!(scan_chunks(body.chunks(1)), whole, "1-byte chunks of {:?}", String::from_utf8_lossy(body));
    for cut in 0..=body.len() {
        let (a, b) = body.split_at(cut);
        assert_eq!(scan_chunks([a, b]), whole, "split at {cut} of {:?}", String::from_utf8_lossy(body));
    }
    whole
}

fn found(m: &str) -> ModelScan {
    ModelScan::Found(m.to_string())
}

#[test]
fn finds_the_top_level_model_in_provider_shapes() {
    let openai = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    assert_eq!(scan_everywhere(openai), found("gpt-4o-mini"));
    // openai-python sends messages first: the model comes after the prompt.
    let late = br#"{"messages":[{"role":"user","content":"say \"model\": {[\\"}],"max_tokens":5,"model":"gpt-4o"}"#;
    assert_eq!(scan_everywhere(late), found("gpt-4o"));
    let anthropic = br#"{"max_tokens":1024,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}],"model":"claude-3-5-sonnet-20241022","messages":[]}"#;
    assert_eq!(scan_everywhere(anthropic), found("claude-3-5-sonnet-20241022"));
    let embeddings =
        b" \r\n\t{ \"input\" : [1, 2.5e3, -0.1, true, false, null] , \"model\" : \"text-embedding-3-small\" }";
    assert_eq!(scan_everywhere(embeddings), found("text-embedding-3-small"));
}

#[test]
fn only_the_top_level_member_counts() {
    let nested = br#"{"metadata":{"model":"evil"},"tools":[{"model":"evil2"}],"model":"good"}"#;
    assert_eq!(scan_everywhere(nested), found("good"));
    let in_string = br#"{"prompt":"{\"model\":\"evil\"}","model":"good"}"#;
    assert_eq!(scan_everywhere(in_string), found("good"));
    assert_eq!(scan_everywhere(br#"{"metadata":{"model":"evil"}}"#), ModelScan::NotFoundWithinBound);
}

#[test]
fn escapes_in_keys_and_values_are_decoded() {
    assert_eq!(scan_everywhere(br#"{"mod\u0065l":"gpt-4o"}"#), found("gpt-4o"));
    assert_eq!(scan_everywhere(br#"{"model":"gpt\u002d4o\/x"}"#), found("gpt-4o/x"));
    assert_eq!(scan_everywhere(br#"{"models":"a","mode":"b","model":"c"}"#), found("c"));
    assert_eq!(scan_everywhere(br#"{"\ud83d\ude00":"x","model":"\ud83d\ude00"}"#), found("\u{1F600}"));
}

#[test]
fn a_second_model_member_is_refused_in_the_same_chunk_or_later() {
    let dup = br#"{"model":"allowed","messages":[],"model":"forbidden"}"#;
    assert_eq!(scan(dup), ModelScan::NotJson);
    let escaped = br#"{"model":"allowed","mod\u0065l":"forbidden"}"#;
    assert_eq!(scan(escaped), ModelScan::NotJson);
    // Decided on the first chunk; the second member arrives afterwards.
    for cut in 1..dup.len() {
        let (a, b) = dup.split_at(cut);
        let mut s = ModelScanner::new(DEFAULT_SCAN_BOUND);
        match s.feed(a) {
            ModelScan::Found(m) => {
                assert_eq!(m, "allowed");
                assert_eq!(s.check_rest(b), Rest::DuplicateModel, "cut {cut}");
            }
            ModelScan::NeedMore => assert_eq!(s.feed(b), ModelScan::NotJson, "cut {cut}"),
            // Both members in the first chunk.
            ModelScan::NotJson => assert!(cut >= dup.len() - 1, "cut {cut}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    let mut s = ModelScanner::new(DEFAULT_SCAN_BOUND);
    assert_eq!(s.feed(br#"{"model":"a","#), found("a"));
    assert_eq!(s.check_rest(br#""messages":[{"model":"nested is fine"}]}"#), Rest::Fine);
}

#[test]
fn not_json_and_not_an_object_are_refused() {
    for body in [
        &b"model=gpt-4o"[..],
        b"[{\"model\":\"gpt-4o\"}]",
        b"\"gpt-4o\"",
        b"",
        b"{\"messages\":[}",
        b"{\"a\":1,,\"model\":\"x\"}",
        b"{'model':'x'}",
        b"{\"model\":42}",
        b"{\"model\":{\"name\":\"x\"}}",
        b"{\"model\":\"\"}",
        b"{\"model\":\"a\nb\"}",
        b"{\"a\":\"\\x\",\"model\":\"m\"}",
        b"{\"a\":\"\\u12g4\",\"model\":\"m\"}",
    ] {
        assert_eq!(scan_everywhere(body), ModelScan::NotJson, "{:?}", String::from_utf8_lossy(body));
    }
}

#[test]
fn the_decision_comes_at_the_model_the_rest_streams_through() {
    // What follows the model is the upstream's to refuse.
    let mut s = ModelScanner::new(DEFAULT_SCAN_BOUND);
    assert_eq!(s.feed(br#"{"model":"gpt-4o""#), found("gpt-4o"));
    assert_eq!(s.check_rest(b",,]"), Rest::Fine);
    assert_eq!(scan(br#"{"model":"gpt-4o""#), found("gpt-4o"));
}

#[test]
fn complete_json_without_model_is_not_found() {
    assert_eq!(scan_everywhere(b"{}"), ModelScan::NotFoundWithinBound);
    assert_eq!(scan_everywhere(br#"{"messages":[1,2,{"a":[]}]}"#), ModelScan::NotFoundWithinBound);
}

#[test]
fn the_bound_stops_the_scan_whatever_the_body_size() {
    let mut s = ModelScanner::new(1 << 16);
    assert_eq!(s.feed(br#"{"input":""#), ModelScan::NeedMore);
    let block = vec![b'a'; 1 << 14];
    let mut result = ModelScan::NeedMore;
    let mut fed = 0usize;
    while result == ModelScan::NeedMore && fed < 1 << 30 {
        result = s.feed(&block);
        fed += block.len();
    }
    assert_eq!(result, ModelScan::NotFoundWithinBound);
    assert!(fed <= 1 << 17, "stopped only after {fed} bytes");
    // A model past the bound is not found either.
    let mut body = br#"{"input":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 100));
    body.extend(br#"","model":"m"}"#);
    let mut s = ModelScanner::new(50);
    assert_eq!(s.feed(&body), ModelScan::NotFoundWithinBound);
    let mut s = ModelScanner::new(body.len());
    assert_eq!(s.feed(&body), found("m"));
}

#[test]
fn overlong_model_and_deep_nesting_are_refused() {
    let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(300));
    assert_eq!(scan(long.as_bytes()), ModelScan::NotJson);
    let deep = format!(r#"{{"a":{}{}, "model":"m"}}"#, "[".repeat(200), "]".repeat(200));
    assert_eq!(scan(deep.as_bytes()), ModelScan::NotJson);
    let ok = format!(r#"{{"a":{}{}, "model":"m"}}"#, "[".repeat(100), "]".repeat(100));
    assert_eq!(scan(ok.as_bytes()), found("m"));
}

proptest! {
    /// The scanner agrees with serde_json on documents built from arbitrary
    /// values, wherever the model sits and however the body is chunked.
    #[test]
    fn agrees_with_serde_json(
        before in proptest::collection::vec(("[a-z\\\\\"{}]{0,6}", any_json()), 0..4),
        model in "[ -~\u{e9}\u{1F600}]{1,20}",
        after in proptest::collection::vec(("[a-z]{0,6}", any_json()), 0..3),
        chunk in 1usize..17,
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in before { if k != "model" { obj.insert(k, v); } }
        obj.insert("model".into(), serde_json::Value::String(model.clone()));
        for (k, v) in after { if k != "model" { obj.insert(k, v); } }
        let body = serde_json::to_vec(&serde_json::Value::Object(obj)).unwrap();
        prop_assert_eq!(scan_chunks(body.chunks(chunk)), found(&model));
    }

    /// Whatever the bytes, a `Found` is a model serde_json reads the same.
    #[test]
    fn found_matches_serde_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let ModelScan::Found(m) = scan(&body) {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(v["model"].as_str(), Some(m.as_str()));
        }
    }
}

fn any_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i32>().prop_map(|n| serde_json::json!(n)),
        (-1e6f64..1e6).prop_map(|n| serde_json::json!(n)),
        "[ -~\"\\\\\u{e9}]{0,8}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("[a-z\"]{0,5}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn patterns_exact_and_prefix() {
    assert_eq!(Pattern::parse("gpt-4o").unwrap(), Pattern::Exact("gpt-4o".into()));
    assert_eq!(Pattern::parse("gpt-4o*").unwrap(), Pattern::Prefix("gpt-4o".into()));
    for bad in ["", "*", "gpt*4o", "gpt-*-mini*", "with space", "é", &"m".repeat(129)] {
        assert!(Pattern::parse(bad).is_err(), "{bad:?} accepted");
    }
    let rules = ModelRules::compile(&["gpt-4o".into(), "claude-3-5-*".into()]).unwrap().unwrap();
    assert!(rules.allows("gpt-4o"));
    assert!(!rules.allows("gpt-4o-mini"));
    assert!(!rules.allows("gpt-4"));
    assert!(rules.allows("claude-3-5-sonnet-20241022"));
    assert!(!rules.allows("claude-3-opus"));
    assert_eq!(ModelRules::compile(&[]).unwrap(), None);
    assert_eq!(ModelRules::compile(&["ok".into(), "b*d".into()]).unwrap_err().0, 1);
}

#[test]
fn the_tightest_level_applies() {
    let tenant = ModelRules::compile(&["gpt-*".into(), "claude-*".into()]).unwrap();
    let sub = ModelRules::compile(&["gpt-4o*".into()]).unwrap();
    let key = ModelRules::compile(&["gpt-4o-mini".into(), "claude-3-haiku".into()]).unwrap();
    let none = None;
    assert!(allowed_by_all(&[&key, &sub, &tenant], "gpt-4o-mini"));
    // The key allows it, the sub-account does not.
    assert!(!allowed_by_all(&[&key, &sub, &tenant], "claude-3-haiku"));
    assert!(allowed_by_all(&[&none, &none, &tenant], "claude-3-haiku"));
    assert!(!allowed_by_all(&[&none, &none, &tenant], "llama-3"));
    assert!(allowed_by_all(&[&none, &none, &none], "anything"));
    assert!(!any_rules(&[&none, &none, &none]));
    assert!(any_rules(&[&none, &sub, &none]));
}

/// The output cap a body states, fed whole, in 1-byte chunks and split at
/// every offset, with the rest of the body going through `check_rest` once
/// the model is known (as the filter does).
fn output_cap_everywhere(body: &[u8]) -> Option<u64> {
    let cap = |chunks: Vec<&[u8]>| {
        let mut s = ModelScanner::new(DEFAULT_SCAN_BOUND);
        let mut decided = false;
        for c in chunks {
            if decided {
                assert_eq!(s.check_rest(c), Rest::Fine);
            } else if s.feed(c) != ModelScan::NeedMore {
                decided = true;
            }
        }
        s.max_output()
    };
    let whole = cap(vec![body]);
    assert_eq!(cap(body.chunks(1).collect()), whole, "1-byte chunks of {:?}", String::from_utf8_lossy(body));
    for cut in 0..=body.len() {
        let (a, b) = body.split_at(cut);
        assert_eq!(cap(vec![a, b]), whole, "split at {cut} of {:?}", String::from_utf8_lossy(body));
    }
    whole
}

#[test]
fn output_caps_are_read_before_and_after_the_model() {
    let cases: &[(&str, Option<u64>)] = &[
        (r#"{"model":"gpt-4o","max_tokens":200,"messages":[]}"#, Some(200)),
        (r#"{"max_tokens":7,"model":"claude-3-5-haiku"}"#, Some(7)),
        (r#"{"model":"o3","max_completion_tokens":64}"#, Some(64)),
        (r#"{"model":"o3","input":"x","max_output_tokens":1000}"#, Some(1000)),
        (r#"{"model":"g","generationConfig":{"temperature":1,"maxOutputTokens":55}}"#, Some(55)),
        // Several: the largest, whichever field the provider reads.
        (r#"{"max_tokens":10,"model":"m","max_completion_tokens":30,"max_tokens":20}"#, Some(30)),
        // Not a non-negative integer: no cap (the configured default applies).
        (r#"{"model":"m","max_tokens":null}"#, None),
        (r#"{"model":"m","max_tokens":-5}"#, None),
        (r#"{"model":"m","max_tokens":1.5}"#, None),
        (r#"{"model":"m","max_tokens":"100"}"#, None),
        // Nested elsewhere: not the request's cap.
        (r#"{"model":"m","messages":[{"max_tokens":9}],"tools":{"max_tokens":9}}"#, None),
        (r#"{"model":"m"}"#, None),
    ];
    for (body, want) in cases {
        assert_eq!(output_cap_everywhere(body.as_bytes()), *want, "{body}");
    }
    // Capped: a reservation, not a promise.
    let huge = br#"{"model":"m","max_tokens":18446744073709551615}"#;
    assert_eq!(output_cap_everywhere(huge), Some(tokenhub_guard::core::models::MAX_OUTPUT_CAP));
    // The model is still found, and a duplicate still refused, with caps around.
    assert_eq!(scan_everywhere(br#"{"max_tokens":1,"model":"a","max_tokens":2}"#), found("a"));
    assert_eq!(scan(br#"{"max_tokens":1,"model":"a","model":"b"}"#), ModelScan::NotJson);
}

#[test]
fn model_lists_keep_only_allowed_entries() {
    use tokenhub_guard::core::models::{filter_model_list, is_model_list};
    let rules = ModelRules::compile(&["gpt-4o-mini".into(), "claude-3-5-*".into()]).unwrap();
    let levels = [&rules, &None, &None];
    let openai = br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"},{"id":"gpt-4o-mini","object":"model","owned_by":"system"},{"id":"o3"}]}"#;
    let out: serde_json::Value = serde_json::from_slice(&filter_model_list(&levels, openai).unwrap()).unwrap();
    assert_eq!(
        out,
        serde_json::json!({"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"system"}]})
    );
    let anthropic = br#"{"data":[{"type":"model","id":"claude-3-5-haiku-20241022"},{"type":"model","id":"claude-opus-4"}],"has_more":false,"first_id":"a","last_id":"b"}"#;
    let out: serde_json::Value = serde_json::from_slice(&filter_model_list(&levels, anthropic).unwrap()).unwrap();
    assert_eq!(out["data"], serde_json::json!([{"type":"model","id":"claude-3-5-haiku-20241022"}]));
    assert_eq!(out["has_more"], false, "other members kept");
    // Entries without a string id are dropped; not a list: None (refused).
    let odd = br#"{"data":[{"name":"gpt-4o-mini"},{"id":7},"gpt-4o-mini"]}"#;
    assert_eq!(filter_model_list(&levels, odd).unwrap(), br#"{"data":[]}"#);
    for bad in [&b"[]"[..], b"{\"data\":{}}", b"{}", b"not json", b"{\"data\":[]"] {
        assert_eq!(filter_model_list(&levels, bad), None, "{}", String::from_utf8_lossy(bad));
    }
    assert!(is_model_list("GET", "/v1/models") && is_model_list("GET", "/anthropic/v1/models?limit=20"));
    assert!(!is_model_list("POST", "/v1/models") && !is_model_list("GET", "/v1/models/gpt-4o"));
}
