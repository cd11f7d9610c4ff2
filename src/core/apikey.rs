//! The API key format: `thk_` + key id + secret + checksum, all base62.
//!
//! In the spirit of GitHub's tokens: the fixed prefix lets secret scanners
//! find leaked keys, the CRC32 checksum rejects typos and garbage before any
//! lookup, and the public key id gives an O(1) lookup while only a hash of
//! the secret is ever stored.

use std::fmt;

pub const PREFIX: &str = "thk_";
pub const KEY_ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = PREFIX.len() + KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a presented string is not a well-formed API key. Never carries the
/// presented value itself, so it is safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormatError {
    Prefix,
    Length,
    Alphabet,
    Checksum,
}

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prefix => "API key does not start with thk_",
            Self::Length => "API key has the wrong length",
            Self::Alphabet => "API key contains characters outside base62",
            Self::Checksum => "API key checksum does not match",
        })
    }
}

/// A syntactically valid key split into its parts (borrowed from the input).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey").field("key_id", &self.key_id).field("secret", &"<redacted>").finish()
    }
}

/// Splits and checks a presented key. Cheap and allocation-free: it runs
/// before any lookup so garbage never reaches the key table.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, KeyFormatError> {
    let body = key.strip_prefix(PREFIX).ok_or(KeyFormatError::Prefix)?;
    if body.len() != KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN {
        return Err(KeyFormatError::Length);
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Alphabet);
    }
    let (payload, checksum) = body.split_at(KEY_ID_LEN + SECRET_LEN);
    if checksum.as_bytes() != encode_checksum(crc32fast::hash(payload.as_bytes())) {
        return Err(KeyFormatError::Checksum);
    }
    let (key_id, secret) = payload.split_at(KEY_ID_LEN);
    Ok(ParsedKey { key_id, secret })
}

/// Assembles a key from a key id and a secret (both base62, of the fixed
/// lengths). Returns `None` when a part is malformed.
pub fn assemble(key_id: &str, secret: &str) -> Option<String> {
    let well_formed = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed(key_id, KEY_ID_LEN) || !well_formed(secret, SECRET_LEN) {
        return None;
    }
    let payload = format!("{key_id}{secret}");
    let checksum = encode_checksum(crc32fast::hash(payload.as_bytes()));
    let mut key = format!("{PREFIX}{payload}");
    key.extend(checksum.iter().map(|&b| char::from(b)));
    Some(key)
}

/// True when `id` has the shape of a key id (used to validate bundles).
pub fn is_valid_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Maps uniformly random bytes to a base62 string of `len` characters by
/// rejection sampling (no modulo bias). `next_byte` supplies randomness.
pub fn random_base62(len: usize, mut next_byte: impl FnMut() -> u8) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let b = next_byte() & 0x3f; // 0..64
        if let Some(&c) = BASE62.get(usize::from(b)) {
            out.push(char::from(c));
        }
    }
    out
}

/// CRC32 as exactly six base62 digits (62^6 > 2^32), most significant first.
fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    digits
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const ID: &str = "AbCdEf012345";
    const SECRET: &str = "0123456789abcdefghijABCDEFGHIJxy";

    fn key() -> String {
        assemble(ID, SECRET).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = key();
        assert_eq!(k.len(), KEY_LEN);
        assert!(k.starts_with("thk_"));
        let parsed = parse(&k).unwrap();
        assert_eq!(parsed.key_id, ID);
        assert_eq!(parsed.secret, SECRET);
    }

    #[test]
    fn rejects_each_malformation() {
        let k = key();
        assert_eq!(parse(&k.replacen("thk_", "thx_", 1)), Err(KeyFormatError::Prefix));
        assert_eq!(parse(&k[..k.len() - 1]), Err(KeyFormatError::Length));
        assert_eq!(parse(&format!("{k}a")), Err(KeyFormatError::Length));
        assert_eq!(parse(""), Err(KeyFormatError::Prefix));
        let mut bad = k.clone().into_bytes();
        bad[10] = b'-';
        assert_eq!(parse(std::str::from_utf8(&bad).unwrap()), Err(KeyFormatError::Alphabet));
        // One character of the secret changed: the checksum catches it.
        let mut typo = k.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        assert_eq!(parse(std::str::from_utf8(&typo).unwrap()), Err(KeyFormatError::Checksum));
    }

    #[test]
    fn debug_redacts_secret() {
        let k = key();
        let shown = format!("{:?}", parse(&k).unwrap());
        assert!(!shown.contains(SECRET));
    }

    #[test]
    fn assemble_rejects_bad_parts() {
        assert!(assemble("short", SECRET).is_none());
        assert!(assemble(ID, "short").is_none());
        assert!(assemble("AbCdEf01234_", SECRET).is_none());
    }

    #[test]
    fn random_base62_has_length_and_alphabet() {
        let mut n = 0u8;
        let s = random_base62(40, || {
            n = n.wrapping_add(37);
            n
        });
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    proptest::proptest! {
        #[test]
        fn any_single_char_change_is_caught(pos in 4usize..KEY_LEN, c in proptest::char::range('0', 'z')) {
            let k = key();
            let mut chars: Vec<char> = k.chars().collect();
            proptest::prop_assume!(c.is_ascii_alphanumeric() && chars[pos] != c);
            chars[pos] = c;
            let changed: String = chars.into_iter().collect();
            // CRC32 detects every single-symbol error.
            proptest::prop_assert!(parse(&changed).is_err());
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = parse(&s);
        }
    }
}
