//! AES-256-GCM and the 256-bit key type, shared by the sealed bundle (core)
//! and the admin store.

use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// A 256-bit secret key. Zeroized on drop; Debug shows only its fingerprint.
#[derive(Clone)]
pub struct Key256(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key256(id={})", self.id())
    }
}

/// The key text is not 32 bytes of standard base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFormatError;

impl std::fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("key must be 32 bytes in standard base64 (generate one with `openssl rand -base64 32`)")
    }
}

impl Key256 {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses standard base64 of 32 bytes; surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<Self, KeyFormatError> {
        let decoded = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|_| KeyFormatError)?);
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| KeyFormatError)?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_slice()))
    }

    /// Public fingerprint (8 hex digits), safe to log and to store beside
    /// ciphertext, so a key mismatch is diagnosed by name.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"tokenhub-key-id\0");
        h.update(self.0.as_slice());
        crate::core::secret::to_hex(&h.finalize()[..4])
    }

    /// Encrypts and authenticates `plaintext` and `aad`; returns nonce‖ciphertext‖tag.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        let cipher = Aes256Gcm::new_from_slice(self.0.as_slice()).ok()?;
        let ct = cipher.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Some(out)
    }

    /// Opens nonce‖ciphertext‖tag; `None` if it was altered, truncated, or
    /// sealed with another key or AAD.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.open_vec(aad, sealed.to_vec())
    }

    /// As `open`, decrypting in the buffer it is given: a large bundle is
    /// never held twice (ciphertext and plaintext) in a VM's memory.
    pub fn open_vec(&self, aad: &[u8], mut sealed: Vec<u8>) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = sealed.get(..NONCE_LEN)?.try_into().ok()?;
        sealed.drain(..NONCE_LEN);
        let mut buffer = Zeroizing::new(sealed);
        let cipher = Aes256Gcm::new_from_slice(self.0.as_slice()).ok()?;
        cipher.decrypt_in_place(Nonce::from_slice(&nonce), aad, &mut *buffer).ok()?;
        Some(buffer)
    }
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn seal_open_and_tamper() {
        let k = Key256::from_bytes([5; 32]);
        let sealed = k.seal([1; 12], b"aad", b"hello").unwrap();
        assert_eq!(k.open(b"aad", &sealed).unwrap().as_slice(), b"hello");
        assert!(k.open(b"other", &sealed).is_none());
        assert!(Key256::from_bytes([6; 32]).open(b"aad", &sealed).is_none());
        let mut t = sealed.clone();
        t[14] ^= 1;
        assert!(k.open(b"aad", &t).is_none());
        assert!(k.open(b"aad", &sealed[..20]).is_none());
    }

    #[test]
    fn base64_and_fingerprint() {
        let k = Key256::from_bytes([9; 32]);
        let again = Key256::from_base64(&format!(" {}\n", k.to_base64().as_str())).unwrap();
        assert_eq!(k.id(), again.id());
        assert_ne!(k.id(), Key256::from_bytes([8; 32]).id());
        assert_eq!(Key256::from_base64("c2hvcnQ=").err(), Some(KeyFormatError));
        assert!(!format!("{k:?}").contains(k.to_base64().as_str()));
    }
}
