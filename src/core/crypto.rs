//! AES-256-GCM, ChaCha20-Poly1305 and the 256-bit key type, shared by the
//! sealed bundle (core) and the admin store. The bundle is sealed with
//! ChaCha20-Poly1305: a Wasm VM has no AES instructions, and software
//! AES-GCM decrypts a million-key bundle ~6x slower there.

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

/// Which AEAD a sealed body uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead256 {
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl Key256 {
    /// ChaCha20-Poly1305 under a subkey derived from this key (one key
    /// never serves two algorithms): nonce‖ciphertext‖tag.
    pub fn seal_chacha(&self, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
        use chacha20poly1305::aead::Aead as _;
        let cipher = self.chacha()?;
        let ct = cipher.encrypt(chacha20poly1305::Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Some(out)
    }

    /// Decrypts nonce‖ciphertext‖tag where it lies in `body` (no copy):
    /// on success the plaintext is `body[NONCE_LEN..body.len() - TAG_LEN]`.
    /// On failure the bytes may be garbage; the caller drops them.
    pub fn open_in_place(&self, alg: Aead256, aad: &[u8], body: &mut [u8]) -> Option<()> {
        if body.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, rest) = body.split_at_mut(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        match alg {
            Aead256::Aes256Gcm => {
                let cipher = Aes256Gcm::new_from_slice(self.0.as_slice()).ok()?;
                let tag = aes_gcm::Tag::from_slice(tag);
                cipher.decrypt_in_place_detached(Nonce::from_slice(nonce), aad, ciphertext, tag).ok()
            }
            Aead256::ChaCha20Poly1305 => {
                let tag = chacha20poly1305::Tag::from_slice(tag);
                let nonce = chacha20poly1305::Nonce::from_slice(nonce);
                self.chacha()?.decrypt_in_place_detached(nonce, aad, ciphertext, tag).ok()
            }
        }
    }

    fn chacha(&self) -> Option<chacha20poly1305::ChaCha20Poly1305> {
        let mut h = Sha256::new();
        h.update(b"tokenhub-bundle-chacha20poly1305\0");
        h.update(self.0.as_slice());
        let subkey = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
        chacha20poly1305::ChaCha20Poly1305::new_from_slice(subkey.as_slice()).ok()
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
    fn chacha_seals_and_opens_in_place_and_refuses_tampering() {
        let k = Key256::from_bytes([5; 32]);
        let sealed = k.seal_chacha([1; 12], b"aad", b"hello").unwrap();
        let mut body = sealed.clone();
        k.open_in_place(Aead256::ChaCha20Poly1305, b"aad", &mut body).unwrap();
        assert_eq!(&body[NONCE_LEN..body.len() - TAG_LEN], b"hello");
        for bad in [0, 12, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[bad] ^= 1;
            assert!(k.open_in_place(Aead256::ChaCha20Poly1305, b"aad", &mut t).is_none(), "byte {bad}");
        }
        assert!(k.open_in_place(Aead256::ChaCha20Poly1305, b"other", &mut sealed.clone()).is_none());
        assert!(k.open_in_place(Aead256::Aes256Gcm, b"aad", &mut sealed.clone()).is_none());
        assert!(Key256::from_bytes([6; 32])
            .open_in_place(Aead256::ChaCha20Poly1305, b"aad", &mut sealed.clone())
            .is_none());
        assert!(k.open_in_place(Aead256::ChaCha20Poly1305, b"aad", &mut sealed[..27].to_vec()).is_none());
        // The AES-GCM form (bundles sealed before) opens in place too.
        let mut gcm = k.seal([1; 12], b"aad", b"hello").unwrap();
        k.open_in_place(Aead256::Aes256Gcm, b"aad", &mut gcm).unwrap();
        assert_eq!(&gcm[NONCE_LEN..gcm.len() - TAG_LEN], b"hello");
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
