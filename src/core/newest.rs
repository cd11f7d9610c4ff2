//! The newest bundle an Envoy process has accepted, and the rollback rule.
//!
//! Every accepted bundle update gets fresh VMs, so what must outlive them
//! lives in the store every VM of the process shares (Proxy-Wasm shared
//! data in Envoy, a map in tests), behind the same compare-and-swap trait
//! as the quota counters.
//!
//! One entry, `[version u64 LE][SHA-256 of the sealed text][sealed text]`,
//! written with one compare-and-swap: a reader never sees a version with
//! another bundle's text, whatever VMs claim at the same time. The protocol:
//! - a version older than the newest is a rollback: refused, and the VM
//!   serves the newest (its sealed text comes with the refusal);
//! - the same version and text again is fine (every worker VM loads it);
//! - a newer version, or the same number with other content (never
//!   published twice on purpose), becomes the newest: the latest
//!   configuration wins;
//! - an entry that cannot be decoded (too short, digest mismatch) refuses
//!   every bundle: the VM serves nothing (503) rather than guess whether a
//!   bundle is a rollback;
//! - a store that fails to write is no reason to refuse a valid, newer
//!   bundle: it is served, and the newest stays what it was.

use crate::core::quota::{CounterStore, StoreError, MAX_CAS_ATTEMPTS};
use sha2::{Digest, Sha256};

/// The shared-data key of the newest accepted bundle.
pub const NEWEST_KEY: &str = "tokenhub.bundle.newest";

const HEADER: usize = 8 + 32;

/// The newest accepted bundle: its version and its sealed text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newest {
    pub version: u64,
    pub sealed: Vec<u8>,
}

/// The entry exists but does not decode: fail closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// What a VM serves after claiming its bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This bundle is (now) the newest: serve it.
    Serve,
    /// A rollback: serve the newest instead.
    Rollback(Newest),
    /// The entry is unreadable: serve nothing.
    Unreadable,
}

/// The newest accepted bundle; `Ok(None)` before the first one.
pub fn newest(store: &dyn CounterStore) -> Result<Option<Newest>, Unreadable> {
    decode(store.get(NEWEST_KEY).0.as_deref())
}

/// Claims `version` (with its sealed text) as the newest, or says why not.
pub fn claim(store: &dyn CounterStore, version: u64, sealed: &[u8]) -> Claim {
    let digest: [u8; 32] = Sha256::digest(sealed).into();
    let mut record = Vec::with_capacity(HEADER + sealed.len());
    record.extend_from_slice(&version.to_le_bytes());
    record.extend_from_slice(&digest);
    record.extend_from_slice(sealed);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (value, cas) = store.get(NEWEST_KEY);
        match decode(value.as_deref()) {
            Err(Unreadable) => return Claim::Unreadable,
            Ok(Some(newest)) if version < newest.version => return Claim::Rollback(newest),
            Ok(Some(_)) if value.as_deref().and_then(|v| v.get(..HEADER)) == record.get(..HEADER) => {
                return Claim::Serve;
            }
            Ok(_) => {}
        }
        match store.set(NEWEST_KEY, &record, cas) {
            Ok(false) => continue,
            Ok(true) | Err(StoreError) => return Claim::Serve,
        }
    }
    // Still contended: every read saw this version as the newest, so it is
    // no rollback.
    Claim::Serve
}

fn decode(value: Option<&[u8]>) -> Result<Option<Newest>, Unreadable> {
    let Some(value) = value else { return Ok(None) };
    let (Some(version), Some(digest), Some(sealed)) = (value.get(..8), value.get(8..HEADER), value.get(HEADER..))
    else {
        return Err(Unreadable);
    };
    if Sha256::digest(sealed).as_slice() != digest {
        return Err(Unreadable);
    }
    let version = version.try_into().map(u64::from_le_bytes).map_err(|_| Unreadable)?;
    Ok(Some(Newest { version, sealed: sealed.to_vec() }))
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

    fn stored(store: &dyn CounterStore) -> Option<Newest> {
        newest(store).unwrap()
    }

    #[test]
    fn first_claim_becomes_the_newest() {
        let s = MemStore::default();
        assert_eq!(stored(&s), None);
        assert_eq!(claim(&s, 3, &sealed(3, "a")), Claim::Serve);
        assert_eq!(stored(&s), Some(Newest { version: 3, sealed: sealed(3, "a") }));
    }

    #[test]
    fn same_version_and_text_again_is_served_without_a_write() {
        let s = MemStore::default();
        claim(&s, 3, &sealed(3, "a"));
        let cas = s.get(NEWEST_KEY).1;
        for _ in 0..4 {
            assert_eq!(claim(&s, 3, &sealed(3, "a")), Claim::Serve, "every worker VM loads the same bundle");
        }
        assert_eq!(s.get(NEWEST_KEY).1, cas, "a reload rewrote the entry");
    }

    #[test]
    fn an_older_version_is_refused_and_the_newest_comes_with_the_refusal() {
        let s = MemStore::default();
        claim(&s, 5, &sealed(5, "a"));
        for old in [0, 1, 4] {
            assert_eq!(
                claim(&s, old, &sealed(old, "a")),
                Claim::Rollback(Newest { version: 5, sealed: sealed(5, "a") })
            );
        }
        assert_eq!(stored(&s).map(|n| n.version), Some(5), "a refused claim changed the newest");
    }

    #[test]
    fn newer_wins_and_the_previous_newest_becomes_a_rollback() {
        let s = MemStore::default();
        claim(&s, 5, &sealed(5, "a"));
        assert_eq!(claim(&s, 6, &sealed(6, "a")), Claim::Serve);
        assert_eq!(claim(&s, 5, &sealed(5, "a")), Claim::Rollback(Newest { version: 6, sealed: sealed(6, "a") }));
    }

    #[test]
    fn the_same_number_with_other_content_wins_too() {
        let s = MemStore::default();
        claim(&s, 5, &sealed(5, "first"));
        assert_eq!(claim(&s, 5, &sealed(5, "second")), Claim::Serve);
        assert_eq!(stored(&s), Some(Newest { version: 5, sealed: sealed(5, "second") }));
        // What a rollback falls back to is the latest configuration.
        assert_eq!(claim(&s, 4, &sealed(4, "a")), Claim::Rollback(Newest { version: 5, sealed: sealed(5, "second") }));
    }

    #[test]
    fn an_unreadable_entry_refuses_every_bundle() {
        let mut bad_digest = 9u64.to_le_bytes().to_vec();
        bad_digest.extend_from_slice(&[0; 32]);
        bad_digest.extend_from_slice(b"text");
        for corrupt in [vec![], vec![1; 8], vec![1; HEADER - 1], bad_digest] {
            let s = MemStore::default();
            s.set(NEWEST_KEY, &corrupt, 0).unwrap();
            assert_eq!(newest(&s), Err(Unreadable), "{corrupt:?}");
            for version in [0, 9, u64::MAX] {
                assert_eq!(claim(&s, version, &sealed(version, "a")), Claim::Unreadable, "{corrupt:?}");
            }
            assert_eq!(s.get(NEWEST_KEY).0, Some(corrupt.clone()), "a refused claim overwrote the entry");
        }
    }

    #[test]
    fn a_failing_store_does_not_refuse_a_newer_bundle() {
        let s = MemStore::default();
        claim(&s, 5, &sealed(5, "a"));
        s.fail_writes(true);
        assert_eq!(claim(&s, 6, &sealed(6, "a")), Claim::Serve);
        assert_eq!(claim(&s, 4, &sealed(4, "a")), Claim::Rollback(Newest { version: 5, sealed: sealed(5, "a") }));
        assert_eq!(stored(&s).map(|n| n.version), Some(5));
    }

    #[test]
    fn contention_is_retried_and_never_serves_a_rollback() {
        let s = MemStore::default();
        claim(&s, 5, &sealed(5, "a"));
        s.conflict_next(MAX_CAS_ATTEMPTS - 1);
        assert_eq!(claim(&s, 6, &sealed(6, "a")), Claim::Serve);
        assert_eq!(stored(&s).map(|n| n.version), Some(6));
        s.conflict_next(MAX_CAS_ATTEMPTS);
        assert_eq!(claim(&s, 7, &sealed(7, "a")), Claim::Serve, "still newer than every read");
        s.conflict_next(MAX_CAS_ATTEMPTS);
        assert!(matches!(claim(&s, 4, &sealed(4, "a")), Claim::Rollback(_)));
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
                claim(self.inner, version, &text);
            }
            self.inner.set(key, value, cas)
        }
    }

    fn race(before: u64, mine: u64, other: u64) -> (Claim, Option<Newest>) {
        let s = MemStore::default();
        claim(&s, before, &sealed(before, "a"));
        let racing = Interleaved { inner: &s, other: RefCell::new(Some((other, sealed(other, "other")))) };
        let outcome = claim(&racing, mine, &sealed(mine, "mine"));
        (outcome, stored(&s))
    }

    #[test]
    fn racing_claims_leave_the_newest_version_with_its_own_text() {
        // A newer claim lands first: mine is now a rollback to it.
        let (outcome, after) = race(5, 6, 7);
        let seven = Newest { version: 7, sealed: sealed(7, "other") };
        assert_eq!(outcome, Claim::Rollback(seven.clone()));
        assert_eq!(after, Some(seven));
        // An older (but still newer than before) claim lands first: mine wins.
        let (outcome, after) = race(5, 7, 6);
        assert_eq!(outcome, Claim::Serve);
        assert_eq!(after, Some(Newest { version: 7, sealed: sealed(7, "mine") }));
        // The same number with other content lands first: the retry sees
        // another text and the latest claim wins.
        let (outcome, after) = race(5, 6, 6);
        assert_eq!(outcome, Claim::Serve);
        assert_eq!(after, Some(Newest { version: 6, sealed: sealed(6, "mine") }));
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
                    std::thread::spawn(move || (version, claim(&*s, version, &sealed(version, "a"))))
                })
                .collect();
            let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            let Ok(Some(last)) = newest(&*s) else { panic!("round {round}: no newest after {outcomes:?}") };
            assert_eq!(last.version, 8, "round {round}: {outcomes:?}");
            assert_eq!(last.sealed, sealed(8, "a"), "round {round}");
            for (version, outcome) in outcomes {
                if let Claim::Rollback(newer) = outcome {
                    assert!(newer.version > version, "round {round}: {version} refused for {}", newer.version);
                    assert_eq!(newer.sealed, sealed(newer.version, "a"), "round {round}");
                }
            }
        }
    }
}
