//! API keys in a compiled policy.
//!
//! Almost every key is only (id, secret hash, sub-account, status, expiry).
//! Those live in one table of fixed 37-byte records sorted by id — in a
//! sealed bundle, the decrypted bytes themselves: no per-key allocation or
//! parsing, ~37 bytes per key in each worker VM, found by binary search.
//! The few keys that carry more (a previous secret in its grace period,
//! scopes, an allowlist, a quota, a token budget, an expiry past 2106) are
//! compiled into a hash map, with their full hash.

use super::schema::{KeyDoc, Status};
use crate::core::apikey::{self, KEY_ID_LEN};
use crate::core::cidr::AllowList;
use crate::core::models::ModelRules;
use crate::core::secret::{bytes_equal, SecretHash};
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::Zeroizing;

use super::compile::{Limits, Scopes};
use super::schema::{QuotaDoc, TokenBudgetDoc};

pub type KeyIdBytes = [u8; KEY_ID_LEN];

/// How much of the secret's SHA-256 (`secret::hash_secret`) a record
/// keeps: its first 16 bytes (a million keys: 16 MB less in every copy of
/// the table). The record is found by key id, then these bytes are
/// compared in constant time with the same prefix of the presented
/// secret's hash. Passing with another secret takes a preimage of 128 bits
/// of SHA-256 (~2¹²⁸ hashes), even for whoever has read the records: the
/// secret is random (~190 bits), so there is no guessing it sooner, and
/// the key id is inside the hash, so no work carries over to another key.
/// Limited keys and previous secrets keep all 32 bytes.
pub const RECORD_HASH_LEN: usize = 16;

/// The hash prefix a record stores.
pub type RecordHash = [u8; RECORD_HASH_LEN];

/// id (12, base62) ‖ hash prefix (16, `RECORD_HASH_LEN`) ‖ sub-account
/// index (u32 LE) ‖ expires_at (u32 LE unix seconds, `NEVER` = no expiry;
/// a key that expires later than u32 allows, after 2106-02-07, is not
/// plain: see `is_plain`) ‖ flags (bit 0 = active; bit 1 = removed, only
/// in a delta's overlay: the key is gone since the base). The layout is
/// named by the plaintext's schema (`super::pack::PACKED_SCHEMA`).
pub const RECORD_LEN: usize = KEY_ID_LEN + RECORD_HASH_LEN + 4 + 4 + 1;
pub type Record = [u8; RECORD_LEN];
const HASH_AT: usize = KEY_ID_LEN;
const SUB_AT: usize = HASH_AT + RECORD_HASH_LEN;
const EXPIRES_AT: usize = SUB_AT + 4;
const FLAGS_AT: usize = EXPIRES_AT + 4;
const NEVER: u32 = u32::MAX;
const ACTIVE: u8 = 1;
const REMOVED: u8 = 2;

/// A key as the decision sees it, wherever it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Key<'p> {
    id: &'p KeyIdBytes,
    /// The current secret's stored hash: all 32 bytes for a limited key,
    /// the record's `RECORD_HASH_LEN` for a plain one.
    hash: &'p [u8],
    /// The previous secret's hash and the last second it is accepted.
    pub previous: Option<(&'p SecretHash, u64)>,
    pub sub_account: usize,
    pub active: bool,
    pub expires_at: Option<u64>,
    limits: Option<&'p Limits>,
}

static NO_MODELS: Option<ModelRules> = None;
static NO_SCOPES: Option<Scopes> = None;
static NO_ALLOWLIST: Option<AllowList> = None;

impl<'p> Key<'p> {
    /// The public key id (base62, validated at compile time).
    pub fn id(&self) -> &'p str {
        std::str::from_utf8(self.id).unwrap_or_default()
    }

    /// Whether `presented` (`secret::hash_secret` of the presented secret)
    /// is the current secret's hash, as far as it is stored: compared in
    /// constant time (the stored length is public, not secret).
    pub fn is_current_secret(&self, presented: &SecretHash) -> bool {
        presented.get(..self.hash.len()).is_some_and(|p| bytes_equal(self.hash, p))
    }

    /// The current secret's hash as stored (see `hash`).
    pub fn stored_hash(&self) -> &'p [u8] {
        self.hash
    }

    pub fn scopes(&self) -> &'p Option<Scopes> {
        self.limits.map_or(&NO_SCOPES, |l| &l.scopes)
    }

    pub fn allowlist(&self) -> &'p Option<AllowList> {
        self.limits.map_or(&NO_ALLOWLIST, |l| &l.allowlist)
    }

    /// The key's own model allowlist, if it has one.
    pub fn models(&self) -> &'p Option<ModelRules> {
        self.limits.map_or(&NO_MODELS, |l| &l.models)
    }

    pub fn quota(&self) -> Option<&'p QuotaDoc> {
        self.limits.and_then(|l| l.quota.as_ref())
    }

    /// The key's own token and dollar limits, if it has any.
    pub fn budget(&self) -> Option<&'p TokenBudgetDoc> {
        self.limits.and_then(|l| l.budget.as_ref())
    }
}

/// A key that needs more than a record.
#[derive(Debug)]
pub struct LimitedKey {
    pub id: KeyIdBytes,
    pub hash: SecretHash,
    pub previous: Option<(SecretHash, u64)>,
    pub sub_account: usize,
    pub active: bool,
    pub expires_at: Option<u64>,
    pub limits: Option<Limits>,
}

impl LimitedKey {
    fn view(&self) -> Key<'_> {
        Key {
            id: &self.id,
            hash: &self.hash[..],
            previous: self.previous.as_ref().map(|(h, until)| (h, *until)),
            sub_account: self.sub_account,
            active: self.active,
            expires_at: self.expires_at,
            limits: self.limits.as_ref(),
        }
    }
}

/// Whether a key fits in a record: nothing beyond the record's fields,
/// and an expiry a u32 holds. A later expiry (past 2106) keeps the key in
/// the JSON part, exact, rather than one cut to fit.
pub fn is_plain(k: &KeyDoc) -> bool {
    k.expires_at.is_none_or(|t| t < u64::from(NEVER)) && k.previous.is_none() && !has_limits(k)
}

/// Whether a key narrows anything beyond its sub-account.
pub fn has_limits(k: &KeyDoc) -> bool {
    k.scopes.is_some() || k.ip_allowlist.is_some() || k.quota.is_some() || k.budget.is_some() || !k.models.is_empty()
}

/// The record of a plain key (`is_plain`). An expiry past what a u32
/// holds would not be plain; were one passed, it is stored as the last
/// second a record can name: earlier than asked, never later.
pub fn encode_record(
    id: &KeyIdBytes,
    hash: &SecretHash,
    sub_account: u32,
    status: Status,
    expires_at: Option<u64>,
) -> Record {
    let expires = expires_at.map_or(NEVER, |t| u32::try_from(t).unwrap_or(NEVER - 1).min(NEVER - 1));
    let mut r = [0u8; RECORD_LEN];
    r[..HASH_AT].copy_from_slice(id);
    r[HASH_AT..SUB_AT].copy_from_slice(&hash[..RECORD_HASH_LEN]);
    r[SUB_AT..EXPIRES_AT].copy_from_slice(&sub_account.to_le_bytes());
    r[EXPIRES_AT..FLAGS_AT].copy_from_slice(&expires.to_le_bytes());
    r[FLAGS_AT] = if status == Status::Active { ACTIVE } else { 0 };
    r
}

/// An overlay record saying the key `id` no longer exists.
pub fn removal_record(id: &KeyIdBytes) -> Record {
    let mut r = [0u8; RECORD_LEN];
    r[..HASH_AT].copy_from_slice(id);
    r[EXPIRES_AT..FLAGS_AT].copy_from_slice(&NEVER.to_le_bytes());
    r[FLAGS_AT] = REMOVED;
    r
}

/// A record's fields (for `pack::unpack`): the hash is the stored prefix.
pub struct DecodedRecord {
    pub id: KeyIdBytes,
    pub hash: RecordHash,
    pub sub_account: usize,
    pub status: Status,
    pub expires_at: Option<u64>,
}

pub fn decode_record(r: &[u8]) -> Option<DecodedRecord> {
    let key = view(r)?;
    Some(DecodedRecord {
        id: *key.id,
        hash: key.hash.try_into().ok()?,
        sub_account: key.sub_account,
        status: if key.active { Status::Active } else { Status::Disabled },
        expires_at: key.expires_at,
    })
}

/// Sorted records in a (zeroized) buffer, from `start` on, with an index
/// by the ids' first two characters: a lookup bisects ~1/3 844 of the
/// table, a handful of cache lines instead of ~17 at 100 000 keys.
#[derive(Default)]
pub struct KeyTable {
    bytes: Zeroizing<Vec<u8>>,
    start: usize,
    /// `buckets[b]..buckets[b + 1]`: the records whose id starts with the
    /// two characters numbered `b` (empty when the table is).
    buckets: Vec<u32>,
}

const BASE: usize = 62;
const BUCKETS: usize = BASE * BASE;

/// A base62 character's rank, in byte order (0-9, A-Z, a-z).
fn rank(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some(usize::from(c - b'0')),
        b'A'..=b'Z' => Some(usize::from(c - b'A') + 10),
        b'a'..=b'z' => Some(usize::from(c - b'a') + 36),
        _ => None,
    }
}

fn bucket(id: &[u8]) -> Option<usize> {
    Some(rank(*id.first()?)? * BASE + rank(*id.get(1)?)?)
}

impl std::fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyTable({} records)", self.len())
    }
}

impl KeyTable {
    /// Adopts `bytes[start..]` as the table after checking every record:
    /// ids base62 and strictly ascending (so unique), sub-account indexes
    /// below `sub_accounts`, no unknown flags.
    pub fn adopt(bytes: Zeroizing<Vec<u8>>, start: usize, sub_accounts: usize) -> Result<Self, String> {
        Self::adopt_with(bytes, start, sub_accounts, false)
    }

    /// As `adopt`, for a delta's overlay: removal records allowed.
    pub fn adopt_overlay(bytes: Zeroizing<Vec<u8>>, start: usize, sub_accounts: usize) -> Result<Self, String> {
        Self::adopt_with(bytes, start, sub_accounts, true)
    }

    fn adopt_with(bytes: Zeroizing<Vec<u8>>, start: usize, sub_accounts: usize, overlay: bool) -> Result<Self, String> {
        let known = if overlay { ACTIVE | REMOVED } else { ACTIVE };
        let mut table = Self { bytes, start, buckets: Vec::new() };
        let records = table.records();
        if !records.len().is_multiple_of(RECORD_LEN) {
            return Err(format!(
                "key table: {} bytes is not a whole number of {RECORD_LEN}-byte records",
                records.len()
            ));
        }
        let mut previous: Option<&[u8]> = None;
        for (i, r) in records.chunks_exact(RECORD_LEN).enumerate() {
            let id = &r[..HASH_AT];
            if !std::str::from_utf8(id).is_ok_and(apikey::is_valid_key_id) {
                return Err(format!("key table record {i}: the id is not {KEY_ID_LEN} base62 characters"));
            }
            if previous.is_some_and(|p| p >= id) {
                return Err(format!("key table record {i}: ids are not strictly ascending (duplicate or unsorted)"));
            }
            previous = Some(id);
            if read_u32(r, SUB_AT) as usize >= sub_accounts {
                return Err(format!("key table record {i}: sub-account index out of range"));
            }
            if r[FLAGS_AT] & !known != 0 || r[FLAGS_AT] == ACTIVE | REMOVED {
                return Err(format!("key table record {i}: unknown flags"));
            }
        }
        table.index()?;
        Ok(table)
    }

    /// Builds `buckets` (records already sorted, ids already base62).
    fn index(&mut self) -> Result<(), String> {
        let count = self.len();
        if count == 0 {
            return Ok(());
        }
        let too_many = || "key table: too many records".to_string();
        let mut buckets = vec![0u32; BUCKETS + 1];
        let mut next = 0;
        for (i, r) in self.records().chunks_exact(RECORD_LEN).enumerate() {
            let b = bucket(r).ok_or_else(|| format!("key table record {i}: the id is not base62"))?;
            let at = u32::try_from(i).map_err(|_| too_many())?;
            while next <= b {
                buckets[next] = at;
                next += 1;
            }
        }
        let end = u32::try_from(count).map_err(|_| too_many())?;
        buckets[next..].iter_mut().for_each(|slot| *slot = end);
        self.buckets = buckets;
        Ok(())
    }

    /// A table from unsorted records of validated keys (written as JSON).
    fn from_records(mut records: Vec<Record>) -> Result<Self, String> {
        records.sort_unstable();
        let mut bytes = Zeroizing::new(Vec::with_capacity(records.len() * RECORD_LEN));
        for r in &records {
            bytes.extend_from_slice(r);
        }
        let mut table = Self { bytes, start: 0, buckets: Vec::new() };
        table.index()?;
        Ok(table)
    }

    pub fn records(&self) -> &[u8] {
        self.bytes.get(self.start..).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.records().len() / RECORD_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn record(&self, index: usize) -> Option<&[u8]> {
        self.records().get(index * RECORD_LEN..(index + 1) * RECORD_LEN)
    }

    /// Binary search by id within its bucket.
    pub fn find(&self, id: &[u8]) -> Option<Key<'_>> {
        self.position(id).and_then(|i| self.record(i)).and_then(view)
    }

    /// The record index of `id`.
    fn position(&self, id: &[u8]) -> Option<usize> {
        let b = bucket(id)?;
        let (mut lo, mut hi) = (*self.buckets.get(b)? as usize, *self.buckets.get(b + 1)? as usize);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.record(mid)?;
            match r[..HASH_AT].cmp(id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    fn iter(&self) -> impl Iterator<Item = Key<'_>> {
        self.records().chunks_exact(RECORD_LEN).filter(|r| !removed(r)).filter_map(view)
    }

    /// In an overlay: `Some(None)` = removed, `Some(Some(key))` = changed
    /// or added, `None` = not in the overlay.
    fn overlaid(&self, id: &[u8]) -> Option<Option<Key<'_>>> {
        let r = self.position(id).and_then(|i| self.record(i))?;
        Some(if removed(r) { None } else { view(r) })
    }
}

fn read_u32(r: &[u8], at: usize) -> u32 {
    r.get(at..at + 4).and_then(|b| b.try_into().ok()).map_or(u32::MAX, u32::from_le_bytes)
}

fn removed(r: &[u8]) -> bool {
    r.get(FLAGS_AT).is_some_and(|f| f & REMOVED != 0)
}

fn view(r: &[u8]) -> Option<Key<'_>> {
    let expires = r.get(EXPIRES_AT..FLAGS_AT)?.try_into().ok().map(u32::from_le_bytes)?;
    Some(Key {
        id: r.get(..HASH_AT)?.try_into().ok()?,
        hash: r.get(HASH_AT..SUB_AT)?,
        previous: None,
        sub_account: read_u32(r, SUB_AT) as usize,
        active: *r.get(FLAGS_AT)? & ACTIVE != 0,
        expires_at: (expires != NEVER).then_some(u64::from(expires)),
        limits: None,
    })
}

/// Every key of a policy: the record table (shared with later deltas on
/// the same base), a delta's overlay on it, and the limited keys.
#[derive(Debug, Default)]
pub struct KeyIndex {
    table: Arc<KeyTable>,
    /// Changes since `table` (a delta's): looked up first.
    overlay: KeyTable,
    limited: HashMap<KeyIdBytes, LimitedKey>,
    /// Keys the overlay adds minus those it removes.
    overlay_net: isize,
}

impl KeyIndex {
    /// `packed` (from a sealed bundle, already checked), plus the keys a
    /// JSON document listed: plain ones as records, the rest as limited.
    /// The caller has made sure no id appears twice.
    pub fn new(
        packed: KeyTable,
        records: Vec<Record>,
        limited: HashMap<KeyIdBytes, LimitedKey>,
    ) -> Result<Self, String> {
        let table = if records.is_empty() {
            packed
        } else {
            let mut all = records;
            all.extend(packed.records().chunks_exact(RECORD_LEN).filter_map(|r| Record::try_from(r).ok()));
            KeyTable::from_records(all)?
        };
        Ok(Self { table: Arc::new(table), overlay: KeyTable::default(), limited, overlay_net: 0 })
    }

    /// A delta's keys: `base` untouched, `overlay` (checked) on top, the
    /// limited keys above both.
    pub fn with_overlay(base: Arc<KeyTable>, overlay: KeyTable, limited: HashMap<KeyIdBytes, LimitedKey>) -> Self {
        let mut net = 0isize;
        for r in overlay.records().chunks_exact(RECORD_LEN) {
            match (removed(r), base.position(&r[..HASH_AT]).is_some()) {
                (true, true) => net -= 1,
                (false, false) => net += 1,
                _ => {}
            }
        }
        // A base key now limited is counted among the limited ones.
        net -=
            limited.keys().filter(|id| overlay.position(&id[..]).is_none() && base.position(&id[..]).is_some()).count()
                as isize;
        Self { table: base, overlay, limited, overlay_net: net }
    }

    /// The record table (alone, unshared) and the limited keys.
    pub fn into_parts(self) -> (KeyTable, HashMap<KeyIdBytes, LimitedKey>) {
        (Arc::try_unwrap(self.table).unwrap_or_default(), self.limited)
    }

    /// The record table, to share with a later delta on this base.
    pub fn table(&self) -> Arc<KeyTable> {
        Arc::clone(&self.table)
    }

    /// The plain keys' records, sorted by id: what a sealed bundle carries
    /// (a policy compiled from a document has no overlay).
    pub fn records(&self) -> &[u8] {
        self.table.records()
    }

    /// Replaces a key's stored secret hash in place (same memory, same
    /// layout; `hash` as long as what is stored: see `Key::stored_hash`);
    /// false if there is no such key. For measurements that must differ
    /// only in the compared bytes (the constant-time test): the filter
    /// never changes a compiled policy.
    pub fn replace_hash(&mut self, id: &[u8], hash: &[u8]) -> bool {
        if let Some(k) = id.try_into().ok().and_then(|fixed: &KeyIdBytes| self.limited.get_mut(fixed)) {
            return match hash.try_into() {
                Ok(full) => {
                    k.hash = full;
                    true
                }
                Err(_) => false,
            };
        }
        let Some(table) = Arc::get_mut(&mut self.table) else { return false };
        let Some(at) = table.position(id) else { return false };
        let start = table.start + at * RECORD_LEN + HASH_AT;
        match table.bytes.get_mut(start..start + RECORD_HASH_LEN).filter(|slot| slot.len() == hash.len()) {
            Some(slot) => {
                slot.copy_from_slice(hash);
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: &[u8]) -> Option<Key<'_>> {
        let fixed: &KeyIdBytes = id.try_into().ok()?;
        if let Some(k) = self.limited.get(fixed) {
            return Some(k.view());
        }
        if !self.overlay.is_empty() {
            if let Some(overlaid) = self.overlay.overlaid(id) {
                return overlaid;
            }
        }
        self.table.find(id)
    }

    pub fn len(&self) -> usize {
        (self.table.len() as isize + self.overlay_net).max(0) as usize + self.limited.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that carry limits of their own (the only ones with quotas).
    pub fn limited(&self) -> impl Iterator<Item = Key<'_>> {
        self.limited.values().map(LimitedKey::view)
    }

    /// Every key, once, as `get` sees it.
    pub fn iter(&self) -> impl Iterator<Item = Key<'_>> {
        let shadowed = |k: &Key<'_>| {
            self.limited.contains_key(k.id) || (!self.overlay.is_empty() && self.overlay.position(k.id).is_some())
        };
        let base = self.table.iter().filter(move |k| !shadowed(k));
        let overlay = self.overlay.iter().filter(move |k| !self.limited.contains_key(k.id));
        base.chain(overlay).chain(self.limited())
    }
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    fn ids(n: usize, mut seed: u64) -> Vec<KeyIdBytes> {
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            ALPHABET[(seed % 62) as usize]
        };
        (0..n).map(|_| std::array::from_fn(|_| next())).collect()
    }

    fn table_of(ids: &[KeyIdBytes]) -> KeyTable {
        let records = ids.iter().enumerate().map(|(i, id)| encode_record(id, &[i as u8; 32], 0, Status::Active, None));
        KeyTable::from_records(records.collect()).unwrap()
    }

    #[test]
    fn a_record_compares_its_hash_prefix_a_limited_key_its_whole_hash() {
        let hash: SecretHash = std::array::from_fn(|i| i as u8);
        let id = *b"K00000000001";
        let table = KeyTable::from_records(vec![encode_record(&id, &hash, 0, Status::Active, Some(7))]).unwrap();
        let record = table.find(&id).unwrap();
        assert_eq!(record.stored_hash(), &hash[..RECORD_HASH_LEN]);
        assert_eq!(record.expires_at, Some(7));
        let limited =
            LimitedKey { id, hash, previous: None, sub_account: 0, active: true, expires_at: None, limits: None };
        for (key, stored) in [(record, RECORD_HASH_LEN), (limited.view(), 32)] {
            assert!(key.is_current_secret(&hash));
            for at in 0..32 {
                let mut other = hash;
                other[at] ^= 0x80;
                // Past the stored bytes nothing is compared (see `RECORD_HASH_LEN`).
                assert_eq!(key.is_current_secret(&other), at >= stored, "byte {at} of {stored}");
            }
        }
        // An expiry no u32 holds (never plain) would be stored earlier, not later.
        let far = KeyTable::from_records(vec![encode_record(&id, &hash, 0, Status::Active, Some(u64::MAX))]).unwrap();
        assert_eq!(far.find(&id).unwrap().expires_at, Some(u64::from(NEVER) - 1));
    }

    #[test]
    fn the_bucket_index_finds_exactly_the_keys_in_the_table() {
        let mut present = ids(3000, 0x9e37_79b9_7f4a_7c15);
        // The alphabet's edges, in the first and second position.
        for edge in [*b"000000000000", *b"zzzzzzzzzzzz", *b"9Zaz00000000", *b"Az9a00000000", *b"a9zA00000000"] {
            present.push(edge);
        }
        present.sort_unstable();
        present.dedup();
        let table = table_of(&present);
        assert_eq!(table.len(), present.len());
        for (i, id) in present.iter().enumerate() {
            let key = table.find(id).unwrap_or_else(|| panic!("{i} not found"));
            assert_eq!(key.id().as_bytes(), id);
        }
        for absent in ids(3000, 42).iter().filter(|id| present.binary_search(id).is_err()) {
            assert!(table.find(absent).is_none());
        }
        for malformed in [&b"-00000000000"[..], b"0-0000000000", b"", b"0"] {
            assert!(table.find(malformed).is_none());
        }
        assert!(KeyTable::default().find(b"000000000000").is_none());
        assert!(table_of(&[]).find(b"000000000000").is_none());
    }
}
