//! Secret hashing and constant-time comparison.
//!
//! Key secrets carry ~190 bits of entropy, so a fast hash is the right tool
//! (a slow password hash would only cost CPU per request). The key id is
//! bound into the hash, so a hash cannot be replayed under another key id.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The stored form of a key secret: SHA-256 over a domain tag, the key id
/// and the secret.
pub type SecretHash = [u8; 32];

const DOMAIN: &[u8] = b"tokenhub-key-v1\0";

pub fn hash_secret(key_id: &str, secret: &str) -> SecretHash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(key_id.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Compares two hashes in time independent of where they differ.
pub fn hashes_equal(a: &SecretHash, b: &SecretHash) -> bool {
    a.ct_eq(b).into()
}

/// Compares arbitrary byte strings without an early exit on the first
/// differing byte (the length is not secret).
pub fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// Parses exactly 64 lowercase or uppercase hex digits.
pub fn hash_from_hex(s: &str) -> Option<SecretHash> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *slot = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn hash_binds_key_id_and_secret() {
        let a = hash_secret("AAAAAAAAAAAA", "s1");
        assert_eq!(a, hash_secret("AAAAAAAAAAAA", "s1"));
        assert_ne!(a, hash_secret("AAAAAAAAAAAB", "s1"));
        assert_ne!(a, hash_secret("AAAAAAAAAAAA", "s2"));
        // The separator keeps (id, secret) splits apart.
        assert_ne!(hash_secret("ab", "c"), hash_secret("a", "bc"));
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let h = hash_secret("k", "s");
        assert_eq!(hash_from_hex(&to_hex(&h)), Some(h));
        assert_eq!(hash_from_hex(&to_hex(&h).to_uppercase()), Some(h));
        assert_eq!(hash_from_hex("abc"), None);
        assert_eq!(hash_from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn constant_time_equality_is_equality() {
        let a = hash_secret("k", "s");
        let mut b = a;
        assert!(hashes_equal(&a, &b));
        b[31] ^= 1;
        assert!(!hashes_equal(&a, &b));
        assert!(bytes_equal(b"abc", b"abc"));
        assert!(!bytes_equal(b"abc", b"abd"));
        assert!(!bytes_equal(b"abc", b"ab"));
    }
}
