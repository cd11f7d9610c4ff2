//! The target bodies. Each takes the fuzzer's bytes and panics on a broken
//! invariant.

use super::cidr_model::{canonical, model_rule, model_rule_decimal, rule_contains, Rule};
use super::fixture::{self, key_string};
use super::input::Input;
use std::net::IpAddr;
use tokenhub_guard::core::apikey::{self as core_apikey, KeyFormatError, KEY_LEN};
use tokenhub_guard::core::bundle::{self, schema, BundleError, Policy};
use tokenhub_guard::core::cidr::{parse_cidr, AllowList};

pub use super::decision::decision;

/// Bundle bytes as the filter receives them (the ECDS configuration, text
/// or binary envelope), opened with the fixed bundle key. Invariants: only
/// an authentic bundle opens (AES-GCM: the fuzzer cannot forge a tag, so
/// anything that opens is one of the fixture's sealed bundles, up to
/// surrounding whitespace); whatever opens and compiles is sound.
pub fn bundle_open(data: &[u8]) {
    let key = fixture::bundle_key();
    let opened = bundle::open(data, &key);
    let compiled = bundle::open_and_compile(data, &key);
    if opened.is_ok() || compiled.is_ok() {
        let (text, binary) = (data.trim_ascii(), data.trim_ascii_start());
        assert!(
            sealed_texts().iter().any(|s| s.as_slice() == text || s.as_slice() == binary),
            "bytes that are not one of the sealed fixtures opened: {data:?}"
        );
    }
    if let Err(BundleError::Parse(_) | BundleError::Invalid(_)) = &compiled {
        assert!(opened.is_ok(), "got past decryption in open_and_compile but open() refuses: {compiled:?}");
    }
    if let Ok(policy) = &compiled {
        let header = bundle::seal::peek_header(data);
        assert_eq!(header.map(|h| h.version).ok(), Some(policy.version), "header and body versions differ");
        check_policy(policy);
    }
}

/// Every sealed fixture, in both envelope forms.
fn sealed_texts() -> &'static [Vec<u8>] {
    static TEXTS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        let texts = fixture::sealed_bundles();
        let binary = texts.iter().filter_map(|t| bundle::seal::to_binary(t).ok());
        texts.iter().map(|t| t.as_bytes().to_vec()).chain(binary).collect()
    })
}

/// Raw JSON through the strict parser and the compiler. Invariants: a
/// parsed document re-serializes to the same document; the same bytes,
/// sealed and opened, give the same verdict (the filter and the admin tool
/// run one function); a compiled policy is structurally sound.
pub fn bundle_compile(data: &[u8]) {
    let Ok(doc) = schema::parse(data) else { return };
    let again = serde_json::to_vec(&doc).map(|j| schema::parse(&j));
    assert!(matches!(&again, Ok(Ok(d)) if *d == doc), "the document does not survive a round trip: {again:?}");
    let direct = bundle::compile(&doc);
    let sealed = bundle::seal(data, &fixture::bundle_key(), doc.version, [9; 12])
        .unwrap_or_else(|e| panic!("sealing a parsed document failed: {e}"));
    let through_seal = bundle::open_and_compile(&sealed, &fixture::bundle_key());
    match (&direct, &through_seal) {
        (Ok(a), Ok(b)) => assert_eq!((a.version, a.keys.len()), (b.version, b.keys.len())),
        (Err(a), Err(BundleError::Invalid(b))) => assert_eq!(a, b),
        _ => panic!("compile and open_and_compile disagree: {direct:?} vs {through_seal:?}"),
    }
    if let Ok(policy) = &direct {
        check_packed(&doc, policy);
        check_policy(policy);
        assert_eq!(policy.version, doc.version);
        assert_eq!(policy.tenants.len(), doc.tenants.len());
        assert_eq!(policy.sub_accounts.len(), doc.tenants.iter().map(|t| t.sub_accounts.len()).sum::<usize>());
        assert_eq!(policy.keys.len(), doc.keys.len());
        assert_eq!(policy.providers.len(), doc.providers.len());
        assert_eq!(policy.oidc.len(), doc.oidc.len());
        for k in &doc.keys {
            let compiled = policy.keys.get(k.id.as_bytes()).map(|c| c.id());
            assert_eq!(compiled, Some(k.id.as_str()), "key {:?} missing from the table", k.id);
        }
    }
}

/// The packed form (what `tokenhub-admin publish` seals) compiles to the
/// same keys as the JSON form, field for field.
fn check_packed(doc: &schema::BundleDoc, direct: &Policy) {
    let packed = bundle::pack(doc).unwrap_or_else(|e| panic!("a compiling document does not pack: {e}"));
    let sealed = bundle::seal(&packed, &fixture::bundle_key(), doc.version, [9; 12])
        .unwrap_or_else(|e| panic!("sealing a packed document failed: {e}"));
    let binary = bundle::seal::to_binary(&sealed).unwrap_or_else(|e| panic!("binary form: {e}"));
    let policy = bundle::open_and_compile(&binary, &fixture::bundle_key())
        .unwrap_or_else(|e| panic!("a packed bundle of a compiling document is refused: {e}"));
    assert_eq!(policy.keys.len(), direct.keys.len());
    for k in direct.keys.iter() {
        let p = policy.keys.get(k.id().as_bytes()).unwrap_or_else(|| panic!("key {:?} lost in packing", k.id()));
        assert_eq!(format!("{k:?}"), format!("{p:?}"), "key {:?} changed in packing", k.id());
    }
}

/// What the decision relies on: every index resolves, key ids are keys,
/// providers are ordered longest prefix first, injected headers are safe.
fn check_policy(p: &Policy) {
    for key in p.keys.iter() {
        assert_eq!(p.keys.get(key.id().as_bytes()).map(|k| k.id()), Some(key.id()));
        assert!(core_apikey::is_valid_key_id(key.id()), "{:?}", key.id());
        let sub = p.sub_accounts.get(key.sub_account);
        assert!(sub.is_some_and(|s| s.tenant < p.tenants.len()), "key {:?} points nowhere", key.id());
    }
    for s in &p.sub_accounts {
        assert!(s.tenant < p.tenants.len());
    }
    for w in p.providers.windows(2) {
        assert!(w[0].path_prefix.len() >= w[1].path_prefix.len(), "providers not longest-first");
    }
    for (i, prov) in p.providers.iter().enumerate() {
        assert!(prov.path_prefix.starts_with('/'));
        assert!(!prov.header.starts_with("x-tokenhub-") && prov.header != "host" && !prov.header.is_empty());
        let values = prov.default_value.iter().chain(p.tenants.iter().filter_map(|t| t.provider_values.get(&i)));
        for v in values {
            assert!(!v.bytes().any(|b| b.is_ascii_control()), "an injected value carries a control character");
        }
    }
    for t in &p.tenants {
        assert!(t.provider_values.keys().all(|i| *i < p.providers.len()));
    }
}

/// Key parsing against an oracle of the format (prefix, length, base62,
/// CRC32), and round trips through `assemble`. The second half builds a
/// key with a correct checksum from the input, so the accepting path is
/// fuzzed too, not only rejections.
pub fn apikey(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_key_text(&text);
    if data.len() >= 44 {
        let id: String = data[..12].iter().map(|b| char::from(fixture::base62(*b))).collect();
        let secret: String = data[12..44].iter().map(|b| char::from(fixture::base62(*b))).collect();
        let full = key_string(&id, &secret);
        assert_eq!(core_apikey::assemble(&id, &secret).as_deref(), Some(full.as_str()));
        check_key_text(&full);
        // Any single substitution at the position the input names is caught.
        let mut bytes = full.clone().into_bytes();
        let pos = 4 + usize::from(data[44 % data.len()]) % (KEY_LEN - 4);
        let c = fixture::base62(data[data.len() - 1]);
        if bytes[pos] != c {
            bytes[pos] = c;
            let changed = String::from_utf8_lossy(&bytes);
            assert!(core_apikey::parse(&changed).is_err(), "one-symbol change accepted: {changed}");
        }
    }
}

fn check_key_text(text: &str) {
    let expected = match text.strip_prefix("thk_") {
        None => Err(KeyFormatError::Prefix),
        Some(body) if body.len() != 50 => Err(KeyFormatError::Length),
        Some(body) if !body.bytes().all(|b| b.is_ascii_alphanumeric()) => Err(KeyFormatError::Alphabet),
        Some(body) if key_string(&body[..12], &body[12..44]) != text => Err(KeyFormatError::Checksum),
        Some(body) => Ok((&body[..12], &body[12..44])),
    };
    let got = core_apikey::parse(text).map(|p| (p.key_id, p.secret));
    assert_eq!(got, expected, "parse({text:?})");
    if let Ok((id, secret)) = got {
        assert!(core_apikey::is_valid_key_id(id));
        assert_eq!(core_apikey::assemble(id, secret).as_deref(), Some(text));
        // Debug output never shows the secret.
        let shown = format!("{:?}", core_apikey::parse(text));
        assert!(!shown.contains(secret), "Debug leaks the secret");
    }
}

/// CIDR texts (one per line, then probe addresses after a NUL byte) through
/// `parse_cidr` and `AllowList`, against a model that parses with the
/// standard library and tests containment with plain masks.
pub fn cidr(data: &[u8]) {
    let (texts, probes) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let texts = String::from_utf8_lossy(texts);
    let lines: Vec<&str> = texts.split('\n').take(16).collect();
    let mut rules: Vec<Rule> = Vec::new();
    let mut all_ok = true;
    for line in &lines {
        let core = parse_cidr(line);
        let strict = model_rule(line);
        match &core {
            Ok(net) => {
                assert_eq!(*net, net.trunc(), "{line:?}: host bits survived");
                assert_eq!(parse_cidr(&net.to_string()).as_ref(), Ok(net), "{line:?}: {net} does not re-parse");
                let meant = model_rule(&net.to_string());
                // Whatever the core accepts, it reads as the model does
                // (beyond the strict syntax only leading zeros, as decimal).
                let decimal = model_rule_decimal(line);
                assert!(meant.is_some() && meant == decimal, "{line:?}: core made {net}, the model {decimal:?}");
                assert!(strict.is_none() || strict == meant, "{line:?}: core made {net}, the model {strict:?}");
                rules.extend(meant);
            }
            Err(e) => {
                // Everything in the strict syntax is accepted.
                assert!(strict.is_none(), "{line:?}: core refuses what the model reads as {strict:?}");
                assert_eq!(e.0, *line, "the error must name the offending text");
                all_ok = false;
            }
        }
    }
    let list = AllowList::from_cidrs(lines.iter().copied());
    assert_eq!(list.is_ok(), all_ok, "from_cidrs disagrees with parse_cidr on {lines:?}");
    let Ok(list) = list else { return };
    assert_eq!(list.is_empty(), rules.is_empty());
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut input = Input::new(probes);
    for _ in 0..8 {
        match input.byte() % 3 {
            0 => addrs.push(IpAddr::from(input.array::<4>())),
            1 => addrs.push(IpAddr::from(input.array::<16>())),
            _ => {
                let v4: [u8; 4] = input.array();
                addrs.push(IpAddr::from(std::net::Ipv4Addr::from(v4).to_ipv6_mapped()));
            }
        }
    }
    // The edges of every rule, and one step outside.
    for rule in &rules {
        match *rule {
            Rule::V4(net, len) => {
                let last = net | (u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
                for a in [net, last, net.wrapping_sub(1), last.wrapping_add(1)] {
                    addrs.push(IpAddr::from(a.to_be_bytes()));
                    addrs.push(IpAddr::from(std::net::Ipv4Addr::from(a).to_ipv6_mapped()));
                }
            }
            Rule::V6(net, len) => {
                let last = net | (u128::MAX.checked_shr(u32::from(len)).unwrap_or(0));
                for a in [net, last, net.wrapping_sub(1), last.wrapping_add(1)] {
                    addrs.push(IpAddr::from(a.to_be_bytes()));
                }
            }
        }
    }
    for ip in addrs {
        let expected = rules.iter().any(|r| rule_contains(*r, ip));
        assert_eq!(list.contains(ip), expected, "contains({ip}) (canonical {}) with rules {lines:?}", canonical(ip));
    }
}

/// Request bodies through the model scanner. The first byte picks a chunk
/// size. The body is fed as the filter feeds it: to the scanner until it
/// decides, then the rest to `check_rest` (a duplicate `model` refuses).
/// Invariants: the verdict does not depend on how the body is chunked; a `Found` model is what serde_json reads as the top-level
/// `model` of a body that is valid JSON; and a valid JSON object with a
/// plain string `model` (once, not too long) is always found.
pub fn model_scan(data: &[u8]) {
    use tokenhub_guard::core::models::{
        ModelScan, ModelScanner, Rest, DEFAULT_SCAN_BOUND, MAX_MODEL_LEN, MAX_OUTPUT_CAP,
    };
    let Some((first, body)) = data.split_first() else { return };
    let run = |size: usize| {
        let mut s = ModelScanner::new(DEFAULT_SCAN_BOUND);
        let mut verdict = ModelScan::NeedMore;
        for c in body.chunks(size.max(1)) {
            verdict = match verdict {
                ModelScan::NeedMore => s.feed(c),
                ModelScan::Found(m) if s.check_rest(c) == Rest::Fine => ModelScan::Found(m),
                ModelScan::Found(_) => ModelScan::NotJson,
                done => return (done, s.max_output()),
            };
        }
        let verdict = match verdict {
            ModelScan::NeedMore => s.finish(),
            done => done,
        };
        (verdict, s.max_output())
    };
    let (whole, cap) = run(body.len());
    assert_eq!(run(usize::from(*first % 16) + 1), (whole.clone(), cap), "chunking changed the result");
    assert_eq!(run(1), (whole.clone(), cap), "1-byte chunks changed the result");
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let (ModelScan::Found(m), Some(v)) = (&whole, &parsed) {
        assert_eq!(v["model"].as_str(), Some(m.as_str()), "serde_json reads another model");
    }
    let duplicated = body.windows(7).filter(|w| w == b"\"model\"").count() > 1 || body.contains(&b'\\');
    if let Some(serde_json::Value::Object(o)) = &parsed {
        if let Some(serde_json::Value::String(m)) = o.get("model") {
            if !duplicated && !m.is_empty() && m.len() <= MAX_MODEL_LEN {
                assert_eq!(whole, ModelScan::Found(m.clone()), "a valid body's model was missed");
                // The output cap: the largest stated (top-level) cap, as serde reads it.
                let names = ["max_tokens", "max_completion_tokens", "max_output_tokens"];
                let once = names
                    .iter()
                    .all(|n| body.windows(n.len() + 2).filter(|w| w[1..w.len() - 1] == *n.as_bytes()).count() <= 1)
                    && !body.windows(15).any(|w| w == b"maxOutputTokens");
                if once {
                    let want = names.iter().filter_map(|n| o.get(*n)?.as_u64()).map(|n| n.min(MAX_OUTPUT_CAP)).max();
                    assert_eq!(cap, want, "the output cap differs from serde_json's");
                }
            }
        }
    }
}

/// Response bodies through the usage parser, as JSON and as SSE (the first
/// byte picks the framing and a chunk size). Invariant: the usage and model
/// read do not depend on the chunking, 1-byte chunks included.
pub fn usage(data: &[u8]) {
    use tokenhub_guard::core::usage::{Framing, UsageParser};
    let Some((first, body)) = data.split_first() else { return };
    let framing = if first & 1 == 0 { Framing::Json } else { Framing::EventStream };
    let run = |size: usize| {
        let mut p = UsageParser::new(framing);
        for c in body.chunks(size.max(1)) {
            p.feed(c);
        }
        (p.usage(), p.model().map(str::to_string))
    };
    let whole = run(body.len());
    assert_eq!(run(usize::from(first >> 1) % 32 + 1), whole, "chunking changed the usage");
    assert_eq!(run(1), whole, "1-byte chunks changed the usage");
    if let Some(u) = whole.0 {
        assert!(u.cached_input <= u.input.max(u.cached_input));
    }
}
