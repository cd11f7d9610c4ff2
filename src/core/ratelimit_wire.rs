//! The global quota mode's rate limit protocol as the guard speaks it
//! itself: Envoy's `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`
//! (the service is `tokenhub-admin ratelimit`, `src/admin/ratelimit`).
//!
//! Envoy's own `ratelimit` filter asks at request headers. The guard asks
//! once more, from the request body, for a budget TOP-UP: when the body
//! states an output cap (`max_tokens`…) or is longer than `content-length`
//! said, so that its estimate exceeds what was reserved at headers, the
//! guard holds the body and sends ONE descriptor — the identity entries
//! exactly as Envoy's actions build them plus `budget_reserve` = the extra
//! charge — over Proxy-Wasm's `dispatch_grpc_call` to [`CLUSTER`]. The
//! service admits or refuses it like any reservation.
//!
//! The messages are tiny, so they are encoded and decoded here by hand
//! (protobuf wire format: varints and length-delimited fields), without
//! Proxy-Wasm or a protobuf runtime in the module, and tested natively
//! (against `envoy-types`' own encoding, which the admin's service uses).

/// The rate limit domain (`domain` in Envoy's filter config and in the
/// guard's own call; the service answers only this one).
pub const DOMAIN: &str = "tokenhub";
/// The Envoy cluster of the rate limit service: the one Envoy's ratelimit
/// filter uses in `envoy/global-ratelimit/envoy.yaml.tmpl` (and the Docker
/// and Kubernetes global configurations); the guard's top-up goes there too.
pub const CLUSTER: &str = "ratelimit";
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";
/// The guard's own call gives up after this long (Envoy's filter: 2 s in
/// the template, above the service's 1 s Redis timeout).
pub const TIMEOUT_MS: u64 = 2_000;

/// Descriptor entry keys (Envoy reads their values from the guard's
/// identity headers; `src/admin/ratelimit/descriptors.rs` maps them).
pub const TENANT_ENTRY: &str = "tenant";
pub const SUB_ACCOUNT_ENTRY: &str = "sub_account";
/// Absent for an OIDC identity (no key).
pub const KEY_ID_ENTRY: &str = "key_id";
/// A reservation (`core::budget::Charge::to_wire`).
pub const BUDGET_RESERVE_ENTRY: &str = "budget_reserve";

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unknown,
    Ok,
    OverLimit,
}

/// What the guard reads of a `RateLimitResponse`: the overall code and the
/// headers the service asks to add (on OVER_LIMIT: `retry-after`, the
/// `ratelimit-*` fields, `content-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: Code,
    pub headers: Vec<(String, String)>,
}

/// `RateLimitRequest { domain, descriptors: [ { entries } ] }` with one
/// descriptor (`hits_addend` left out: 0, which the service reads as 1 and
/// a budget descriptor ignores).
pub fn encode_request(domain: &str, entries: &[(&str, &str)]) -> Vec<u8> {
    let mut descriptor = Vec::new();
    for (key, value) in entries {
        let mut entry = Vec::with_capacity(key.len() + value.len() + 4);
        bytes_field(&mut entry, 1, key.as_bytes());
        bytes_field(&mut entry, 2, value.as_bytes());
        bytes_field(&mut descriptor, 1, &entry);
    }
    let mut out = Vec::with_capacity(domain.len() + descriptor.len() + 8);
    bytes_field(&mut out, 1, domain.as_bytes());
    bytes_field(&mut out, 2, &descriptor);
    out
}

/// Decodes a `RateLimitResponse` (fields 1 `overall_code` and 3
/// `response_headers_to_add`; every other field skipped). `None`: not a
/// well-formed message (the caller fails closed).
pub fn decode_response(bytes: &[u8]) -> Option<Answer> {
    let mut code = Code::Unknown;
    let mut headers = Vec::new();
    for field in Fields(bytes) {
        match field? {
            (1, Value::Varint(v)) => {
                code = match v {
                    1 => Code::Ok,
                    2 => Code::OverLimit,
                    _ => Code::Unknown,
                }
            }
            (3, Value::Bytes(header)) => headers.push(decode_header(header)?),
            _ => {}
        }
    }
    Some(Answer { code, headers })
}

/// `envoy.config.core.v3.HeaderValue { key = 1, value = 2, raw_value = 3 }`.
fn decode_header(bytes: &[u8]) -> Option<(String, String)> {
    let (mut key, mut value) = (String::new(), String::new());
    for field in Fields(bytes) {
        match field? {
            (1, Value::Bytes(k)) => key = String::from_utf8(k.to_vec()).ok()?,
            (2 | 3, Value::Bytes(v)) if value.is_empty() => value = String::from_utf8(v.to_vec()).ok()?,
            _ => {}
        }
    }
    Some((key, value))
}

fn bytes_field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message; an item is `None` where the bytes break off
/// or use a wire type protobuf no longer has (groups).
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_none() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Option<(u64, Value<'a>)> {
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                let bytes = self.0.get(..len)?;
                self.0 = self.0.get(len..)?;
                Value::Bytes(bytes)
            }
            5 => self.skip(4)?,
            _ => return None,
        };
        Some((tag >> 3, value))
    }

    fn skip(&mut self, n: usize) -> Option<Value<'a>> {
        self.0 = self.0.get(n..)?;
        Some(Value::Fixed)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, byte) in self.0.iter().enumerate().take(10) {
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = self.0.get(i + 1..)?;
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_request_is_the_hand_computed_bytes() {
        let bytes = encode_request("td", &[("k", "v"), ("budget_reserve", "12,0")]);
        let mut expected = vec![0x0a, 2, b't', b'd', 0x12, 32];
        expected.extend([0x0a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        expected.extend([0x0a, 22, 0x0a, 14]);
        expected.extend(b"budget_reserve");
        expected.extend([0x12, 4]);
        expected.extend(b"12,0");
        assert_eq!(bytes, expected);
        // A value past 127 bytes takes a two-byte length.
        let long = "x".repeat(200);
        let bytes = encode_request("d", &[("k", &long)]);
        assert_eq!(&bytes[3..6], &[0x12, 0xd1, 0x01], "descriptor of 209 bytes: {:?}", &bytes[..8]);
    }

    #[test]
    fn responses_decode_and_garbage_does_not() {
        // overall_code OVER_LIMIT, a status (skipped), one header, a raw body.
        let mut bytes = vec![0x08, 2, 0x12, 2, 0x08, 2];
        bytes.extend([0x1a, 17, 0x0a, 11]);
        bytes.extend(b"retry-after");
        bytes.extend([0x12, 2, b'4', b'2']);
        bytes.extend([0x2a, 2, b'{', b'}', 0x3d, 0, 0, 0, 0, 0x09, 0, 0, 0, 0, 0, 0, 0, 0]);
        let answer = decode_response(&bytes).unwrap();
        assert_eq!(answer.code, Code::OverLimit);
        assert_eq!(answer.headers, vec![("retry-after".to_string(), "42".to_string())]);
        assert_eq!(decode_response(&[0x08, 1]).unwrap().code, Code::Ok);
        assert_eq!(decode_response(&[]).unwrap().code, Code::Unknown, "an empty message is UNKNOWN");
        for broken in [&[0x08][..], &[0x1a, 5, 0x0a], &[0x0b], &[0x08, 0xff, 0xff], &[0x1a, 2, 0x0a, 9]] {
            assert_eq!(decode_response(broken), None, "{broken:?}");
        }
        let too_long = [0xffu8; 11];
        assert_eq!(decode_response(&too_long), None);
    }
}
