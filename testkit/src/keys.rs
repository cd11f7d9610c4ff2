//! An independent implementation of the API key format (`thk_` + 12-char
//! key id + 32-char secret + CRC32 of id‖secret as 6 base62 digits), to
//! forge well-formed keys the store never issued, and of the stored secret
//! hash, to search dumps for leaked hashes. Independent of the filter's
//! code on purpose: a test that agrees with the CLI's keys proves the
//! format, not just the implementation.

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "thk_";
pub const KEY_ID_LEN: usize = 12;
pub const SECRET_LEN: usize = 32;
pub const CHECKSUM_LEN: usize = 6;
/// 4 + 12 + 32 + 6.
pub const KEY_LEN: usize = PREFIX.len() + KEY_ID_LEN + SECRET_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The public key id of a well-formed key.
pub fn key_id_of(key: &str) -> &str {
    &key[PREFIX.len()..PREFIX.len() + KEY_ID_LEN]
}

/// The secret part of a well-formed key.
pub fn secret_of(key: &str) -> &str {
    &key[PREFIX.len() + KEY_ID_LEN..PREFIX.len() + KEY_ID_LEN + SECRET_LEN]
}

/// A well-formed key (valid checksum) from a key id and a secret.
pub fn forge_key(key_id: &str, secret: &str) -> String {
    let payload = format!("{key_id}{secret}");
    format!("{PREFIX}{payload}{}", checksum(payload.as_bytes()))
}

/// The 6 base62 digits of the CRC32 of `payload`, most significant first.
pub fn checksum(payload: &[u8]) -> String {
    let mut crc = crc32fast::hash(payload);
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// `real`'s secret under another key id, with a valid checksum.
pub fn key_with_id(real: &str, key_id: &str) -> String {
    forge_key(key_id, secret_of(real))
}

/// 32 base62 characters that differ from `secret` in every position.
pub fn other_secret(secret: &str) -> String {
    secret.bytes().map(|b| if b == b'Q' { 'R' } else { 'Q' }).collect()
}

/// `real` with the secret's character at `index` (0-based within the
/// secret) changed, and the checksum recomputed: a valid-looking key one
/// character away from the real one.
pub fn one_char_off_secret(real: &str, index: usize) -> String {
    let mut secret: Vec<u8> = secret_of(real).bytes().collect();
    secret[index] = if secret[index] == b'a' { b'b' } else { b'a' };
    forge_key(key_id_of(real), &String::from_utf8_lossy(&secret))
}

/// The stored form of a key's secret (src/core/secret.rs): hex SHA-256 of
/// "tokenhub-key-v1\0" ‖ key id ‖ 0 ‖ secret.
pub fn secret_hash_hex(key: &str) -> String {
    stored_hash(key_id_of(key), secret_of(key))
}

/// The stored form of `secret` under `key_id` (see `secret_hash_hex`).
pub fn stored_hash(key_id: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tokenhub-key-v1\0");
    h.update(key_id.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The base62 digit `i` (mod 62).
pub fn base62(i: u8) -> u8 {
    BASE62[usize::from(i) % 62]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_keys_have_the_format() {
        let key = forge_key("AbCdEfGhIjKl", "0123456789abcdefghijABCDEFGHIJ01");
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(key_id_of(&key), "AbCdEfGhIjKl");
        assert_eq!(secret_of(&key), "0123456789abcdefghijABCDEFGHIJ01");
        assert_eq!(key_with_id(&key, "AbCdEfGhIjKl"), key);
        let off = one_char_off_secret(&key, 3);
        assert_eq!(off.len(), KEY_LEN);
        assert_ne!(off, key);
        assert_eq!(secret_of(&off).bytes().zip(secret_of(&key).bytes()).filter(|(a, b)| a != b).count(), 1);
        assert!(other_secret(secret_of(&key)).bytes().zip(secret_of(&key).bytes()).all(|(a, b)| a != b));
    }
}
