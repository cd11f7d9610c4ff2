//! The newest bundle an Envoy process has accepted, and the rollback rule.
//!
//! Every accepted bundle update gets fresh VMs (at least the main thread's
//! validation VM), so what must outlive them lives in the store every VM of
//! the process shares (Proxy-Wasm shared data in Envoy, a map in tests),
//! behind the same compare-and-swap trait as the quota counters.
//!
//! Two kinds of entry. The record `tokenhub.bundle.newest` is small:
//! `[version u64 LE][fingerprint 32][SHA-256 of the first 40 bytes]`,
//! swapped with one compare-and-swap, so a VM reads 72 bytes to claim a
//! bundle instead of copying the whole sealed text (tens of MB at a million
//! keys) into its memory. The sealed text lives under a key named by its
//! fingerprint (`seal::fingerprint`), written before the record points at
//! it ("staged"), never changed afterwards, and cleared once the record
//! moved on; a reader checks the text against the fingerprint, and opening
//! it authenticates every byte. The protocol:
//! - a version older than the newest is a rollback: refused, and the VM
//!   serves the newest (`newest_sealed` fetches its text);
//! - the same version and fingerprint again is fine (every worker VM
//!   loads it);
//! - a newer version, or the same number with another fingerprint (never
//!   published twice on purpose), becomes the newest: the latest
//!   configuration wins;
//! - a record that cannot be decoded refuses every bundle: the VM serves
//!   nothing (503) rather than guess whether a bundle is a rollback;
//! - a store that fails to write is no reason to refuse a valid, newer
//!   bundle: it is served, and the newest stays what it was.

use crate::core::quota::{CounterStore, StoreError, MAX_CAS_ATTEMPTS};
use crate::core::secret::to_hex;
use sha2::{Digest, Sha256};

/// The shared-data key of the newest accepted bundle's record.
pub const NEWEST_KEY: &str = "tokenhub.bundle.newest";

const RECORD: usize = 8 + 32 + 32;

/// A sealed bundle's identity (see `seal::fingerprint`).
pub type Fingerprint = [u8; 32];

/// The newest accepted bundle: its version and fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Newest {
    pub version: u64,
    pub fingerprint: Fingerprint,
}

/// The record exists but does not decode: fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// What a VM serves after claiming its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This bundle is (now) the newest: serve it.
    Serve,
    /// A rollback: serve the newest instead.
    Rollback(Newest),
    /// The record is unreadable: serve nothing.
    Unreadable,
}

/// The shared-data key of a staged sealed text.
pub fn text_key(fingerprint: &Fingerprint) -> String {
    format!("tokenhub.bundle.sealed.{}", to_hex(fingerprint))
}

/// The newest accepted bundle; `Ok(None)` before the first one.
pub fn newest(store: &dyn CounterStore) -> Result<Option<Newest>, Unreadable> {
    decode(store.get(NEWEST_KEY).0.as_deref())
}

/// Keeps `sealed` where a VM that must fall back to it finds it, unless it
/// is the newest already (then it is there). Before the bundle is opened:
/// opening it consumes the bytes. False if the store refused the write.
pub fn stage(store: &dyn CounterStore, fingerprint: &Fingerprint, sealed: &[u8]) -> bool {
    if matches!(newest(store), Ok(Some(n)) if n.fingerprint == *fingerprint) {
        return true;
    }
    matches!(store.set(&text_key(fingerprint), sealed, 0), Ok(true))
}

/// Drops a staged text that did not become the newest (refused, or a
/// rollback); the newest's text is never dropped.
pub fn discard(store: &dyn CounterStore, fingerprint: &Fingerprint) {
    if !matches!(newest(store), Ok(Some(n)) if n.fingerprint == *fingerprint) {
        let _ = store.set(&text_key(fingerprint), &[], 0);
    }
}

/// The newest bundle and its sealed text. `Ok(None)`: none accepted yet,
/// or its text is gone or does not match (serve nothing).
pub fn newest_sealed(
    store: &dyn CounterStore,
    fingerprint_of: impl Fn(&[u8]) -> Fingerprint,
) -> Result<Option<(Newest, Vec<u8>)>, Unreadable> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let Some(newest) = newest(store)? else { return Ok(None) };
        match store.get(&text_key(&newest.fingerprint)).0 {
            Some(text) if !text.is_empty() && fingerprint_of(&text) == newest.fingerprint => {
                return Ok(Some((newest, text)))
            }
            // Moved on between the two reads: read the record again.
            _ if self::newest(store)? != Some(newest) => continue,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Claims `version` (staged under `fingerprint`) as the newest, or says why not.
pub fn claim(store: &dyn CounterStore, version: u64, fingerprint: &Fingerprint) -> Claim {
    let record = encode(version, fingerprint);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(NEWEST_KEY);
        let previous = match decode(value.as_deref()) {
            Err(Unreadable) => return Claim::Unreadable,
            Ok(Some(newest)) if version < newest.version => return Claim::Rollback(newest),
            Ok(Some(newest)) if newest.version == version && newest.fingerprint == *fingerprint => {
                return Claim::Serve;
            }
            Ok(previous) => previous,
        };
        match store.set(NEWEST_KEY, &record, cas) {
            Ok(false) => continue,
            Ok(true) => {
                if let Some(old) = previous.filter(|old| old.fingerprint != *fingerprint) {
                    let _ = store.set(&text_key(&old.fingerprint), &[], 0);
                }
                return Claim::Serve;
            }
            Err(StoreError) => return Claim::Serve,
        }
    }
    // Still contended: every read saw this version as the newest, so it is
    // no rollback.
    Claim::Serve
}

fn encode(version: u64, fingerprint: &Fingerprint) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD);
    record.extend_from_slice(&version.to_le_bytes());
    record.extend_from_slice(fingerprint);
    let check = Sha256::digest(&record);
    record.extend_from_slice(&check);
    record
}

fn decode(value: Option<&[u8]>) -> Result<Option<Newest>, Unreadable> {
    let Some(value) = value else { return Ok(None) };
    if value.len() != RECORD || Sha256::digest(&value[..40]).as_slice() != &value[40..] {
        return Err(Unreadable);
    }
    let version = value[..8].try_into().map(u64::from_le_bytes).map_err(|_| Unreadable)?;
    let fingerprint = value[8..40].try_into().map_err(|_| Unreadable)?;
    Ok(Some(Newest { version, fingerprint }))
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    use crate::core::memstore::MemStore;
    use std::cell::RefCell;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn sealed(version: u64, variant: &str) -> Vec<u8> {
        format!("sealed bundle v{version} {variant}").into_bytes()
    }

    fn fp_of(text: &[u8]) -> Fingerprint {
        Sha256::digest(text).into()
    }

    fn fp(version: u64, variant: &str) -> Fingerprint {
        fp_of(&sealed(version, variant))
    }

    fn n(version: u64, variant: &str) -> Newest {
        Newest { version, fingerprint: fp(version, variant) }
    }

    /// What a VM does: stage the text, then claim it.
    fn claim_text(s: &dyn CounterStore, version: u64, variant: &str) -> Claim {
        stage(s, &fp(version, variant), &sealed(version, variant));
        claim(s, version, &fp(version, variant))
    }

    fn stored(store: &dyn CounterStore) -> Option<Newest> {
        newest(store).unwrap()
    }

    #[test]
    fn first_claim_becomes_the_newest() {
        let s = MemStore::default();
        assert_eq!(stored(&s), None);
        assert_eq!(claim_text(&s, 3, "a"), Claim::Serve);
        assert_eq!(stored(&s), Some(n(3, "a")));
    }

    #[test]
    fn same_version_and_text_again_is_served_without_a_write() {
        let s = MemStore::default();
        claim_text(&s, 3, "a");
        let cas = s.get(NEWEST_KEY).1;
        for _ in 0..4 {
            assert_eq!(claim_text(&s, 3, "a"), Claim::Serve, "every worker VM loads the same bundle");
        }
        assert_eq!(s.get(NEWEST_KEY).1, cas, "a reload rewrote the entry");
    }

    #[test]
    fn an_older_version_is_refused_and_the_newest_comes_with_the_refusal() {
        let s = MemStore::default();
        claim_text(&s, 5, "a");
        for old in [0, 1, 4] {
            assert_eq!(claim_text(&s, old, "a"), Claim::Rollback(n(5, "a")));
        }
        assert_eq!(stored(&s).map(|n| n.version), Some(5), "a refused claim changed the newest");
    }

    #[test]
    fn newer_wins_and_the_previous_newest_becomes_a_rollback() {
        let s = MemStore::default();
        claim_text(&s, 5, "a");
        assert_eq!(claim_text(&s, 6, "a"), Claim::Serve);
        assert_eq!(claim_text(&s, 5, "a"), Claim::Rollback(n(6, "a")));
    }

    #[test]
    fn the_same_number_with_other_content_wins_too() {
        let s = MemStore::default();
        claim_text(&s, 5, "first");
        assert_eq!(claim_text(&s, 5, "second"), Claim::Serve);
        assert_eq!(stored(&s), Some(n(5, "second")));
        // What a rollback falls back to is the latest configuration.
        assert_eq!(claim_text(&s, 4, "a"), Claim::Rollback(n(5, "second")));
    }

    #[test]
    fn an_unreadable_entry_refuses_every_bundle() {
        let mut bad_digest = encode(9, &fp(9, "a"));
        bad_digest[3] ^= 1;
        for corrupt in [vec![], vec![1; 8], vec![1; RECORD - 1], vec![1; RECORD], bad_digest] {
            let s = MemStore::default();
            s.set(NEWEST_KEY, &corrupt, 0).unwrap();
            assert_eq!(newest(&s), Err(Unreadable), "{corrupt:?}");
            for version in [0, 9, u64::MAX] {
                assert_eq!(claim_text(&s, version, "a"), Claim::Unreadable, "{corrupt:?}");
            }
            assert_eq!(s.get(NEWEST_KEY).0, Some(corrupt.clone()), "a refused claim overwrote the entry");
        }
    }

    #[test]
    fn the_newest_text_is_kept_and_what_it_replaced_or_refused_is_dropped() {
        let s = MemStore::default();
        assert_eq!(newest_sealed(&s, fp_of), Ok(None));
        claim_text(&s, 5, "a");
        assert_eq!(newest_sealed(&s, fp_of), Ok(Some((n(5, "a"), sealed(5, "a")))));
        claim_text(&s, 6, "b");
        assert_eq!(newest_sealed(&s, fp_of), Ok(Some((n(6, "b"), sealed(6, "b")))));
        assert_eq!(s.get(&text_key(&fp(5, "a"))).0, Some(vec![]), "the replaced text is still held");
        // A rollback staged its text: discarding it keeps the newest's.
        assert!(matches!(claim_text(&s, 4, "c"), Claim::Rollback(_)));
        discard(&s, &fp(4, "c"));
        discard(&s, &fp(6, "b"));
        assert_eq!(s.get(&text_key(&fp(4, "c"))).0, Some(vec![]));
        assert_eq!(newest_sealed(&s, fp_of), Ok(Some((n(6, "b"), sealed(6, "b")))));
        // The newest again: no second copy written.
        let cas = s.get(&text_key(&fp(6, "b"))).1;
        assert!(stage(&s, &fp(6, "b"), &sealed(6, "b")));
        assert_eq!(s.get(&text_key(&fp(6, "b"))).1, cas);
        // A text that does not match its fingerprint is not served.
        s.set(&text_key(&fp(6, "b")), b"something else", 0).unwrap();
        assert_eq!(newest_sealed(&s, fp_of), Ok(None));
    }

    #[test]
    fn a_failing_store_does_not_refuse_a_newer_bundle() {
        let s = MemStore::default();
        claim_text(&s, 5, "a");
        s.fail_writes(true);
        assert_eq!(claim_text(&s, 6, "a"), Claim::Serve);
        assert_eq!(claim_text(&s, 4, "a"), Claim::Rollback(n(5, "a")));
        assert_eq!(stored(&s).map(|n| n.version), Some(5));
    }

    #[test]
    fn contention_is_retried_and_never_serves_a_rollback() {
        let s = MemStore::default();
        claim_text(&s, 5, "a");
        s.conflict_next(MAX_CAS_ATTEMPTS - 1);
        assert_eq!(claim_text(&s, 6, "a"), Claim::Serve);
        assert_eq!(stored(&s).map(|n| n.version), Some(6));
        s.conflict_next(MAX_CAS_ATTEMPTS);
        assert_eq!(claim_text(&s, 7, "a"), Claim::Serve, "still newer than every read");
        s.conflict_next(MAX_CAS_ATTEMPTS);
        assert!(matches!(claim_text(&s, 4, "a"), Claim::Rollback(_)));
    }

    /// A store where another VM's claim lands between a read and the write.
    struct Interleaved<'a> {
        inner: &'a MemStore,
        other: RefCell<Option<(u64, Vec<u8>)>>,
    }

    impl CounterStore for Interleaved<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, u32) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<bool, StoreError> {
            if let Some((version, text)) = self.other.borrow_mut().take() {
                stage(self.inner, &fp_of(&text), &text);
                claim(self.inner, version, &fp_of(&text));
            }
            self.inner.set(key, value, cas)
        }
    }

    fn race(before: u64, mine: u64, other: u64) -> (Claim, Option<Newest>) {
        let s = MemStore::default();
        claim_text(&s, before, "a");
        let racing = Interleaved { inner: &s, other: RefCell::new(Some((other, sealed(other, "other")))) };
        let outcome = claim_text(&racing, mine, "mine");
        (outcome, stored(&s))
    }

    #[test]
    fn racing_claims_leave_the_newest_version_with_its_own_text() {
        // A newer claim lands first: mine is now a rollback to it.
        let (outcome, after) = race(5, 6, 7);
        let seven = n(7, "other");
        assert_eq!(outcome, Claim::Rollback(seven));
        assert_eq!(after, Some(seven));
        // An older (but still newer than before) claim lands first: mine wins.
        let (outcome, after) = race(5, 7, 6);
        assert_eq!(outcome, Claim::Serve);
        assert_eq!(after, Some(n(7, "mine")));
        // The same number with other content lands first: the retry sees
        // another text and the latest claim wins.
        let (outcome, after) = race(5, 6, 6);
        assert_eq!(outcome, Claim::Serve);
        assert_eq!(after, Some(n(6, "mine")));
    }

    /// Real threads on one shared store: whatever the order, the entry ends
    /// at the highest version with that version's text, and no claim below
    /// a version already stored was served.
    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn concurrent_claims_converge_on_the_highest_version() {
        use crate::core::memstore::SyncStore;
        use std::sync::Arc;
        for round in 0..20u64 {
            let s = Arc::new(SyncStore::default());
            let threads: Vec<_> = (1..=8u64)
                .map(|t| {
                    let s = Arc::clone(&s);
                    let version = (t * 7 + round) % 8 + 1;
                    std::thread::spawn(move || (version, claim_text(&*s, version, "a")))
                })
                .collect();
            let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let Ok(Some(last)) = newest(&*s) else { panic!("round {round}: no newest after {outcomes:?}") };
            assert_eq!(last.version, 8, "round {round}: {outcomes:?}");
            assert_eq!(last, n(8, "a"), "round {round}");
            assert_eq!(newest_sealed(&*s, fp_of).unwrap().map(|(_, t)| t), Some(sealed(8, "a")), "round {round}");
            for (version, outcome) in outcomes {
                if let Claim::Rollback(newer) = outcome {
                    assert!(newer.version > version, "round {round}: {version} refused for {}", newer.version);
                    assert_eq!(newer.fingerprint, fp(newer.version, "a"), "round {round}");
                }
            }
        }
    }
}
