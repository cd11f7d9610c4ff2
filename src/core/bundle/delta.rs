//! Deltas: the changes since a base bundle, delivered with that base so a
//! worker that already holds the base applies them without touching it.
//!
//! A delta is sealed like a bundle (same key, same envelope) and its
//! plaintext has the same shape: the whole policy's JSON (tenants,
//! providers, limited keys… everything but the plain keys' records), then
//! the plain keys that changed since the base as records — changed, added,
//! or a removal record for a key gone since. Its JSON names the base
//! (`base`: version and `seal::fingerprint`). The filter's configuration is
//! then the container `thbd ‖ u32 LE delta length ‖ delta ‖ base`; a worker
//! whose cached base has that fingerprint reuses its record table (no
//! decryption, no check of a million records again) and looks keys up in
//! the overlay first. Refused, with the reason, and the previous state
//! kept: a delta bound to another base (version or fingerprint), one not
//! newer than its base, one that renumbers the base's sub-accounts, a
//! damaged container; and a delta's plaintext offered as a full bundle.

use super::compile::{compile_delta, Policy};
use super::keys::KeyTable;
use super::seal::{self, BundleKey, Header, SealError};
use super::{open_and_compile_full, pack, schema, BundleError};
use crate::core::secret::to_hex;
use std::sync::Arc;

pub const MAGIC: &[u8; 4] = b"thbd";
const LEN_AT: usize = MAGIC.len();
const DELTA_AT: usize = LEN_AT + 4;

/// The configuration for a delta and its base.
pub fn join(delta: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(delta.len()).ok()?;
    let mut out = Vec::with_capacity(DELTA_AT + delta.len() + base.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(delta);
    out.extend_from_slice(base);
    Some(out)
}

/// A container's (delta, base).
pub type Parts<'a> = (&'a [u8], &'a [u8]);

/// (delta, base) of a container; `None` if `config` is a plain bundle.
pub fn split(config: &[u8]) -> Option<Result<Parts<'_>, SealError>> {
    if !config.starts_with(MAGIC) {
        return None;
    }
    let len = config.get(LEN_AT..DELTA_AT).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let parts = len.and_then(|len| {
        let end = DELTA_AT.checked_add(usize::try_from(len).ok()?)?;
        Some((config.get(DELTA_AT..end)?, config.get(end..)?))
    });
    Some(
        parts
            .filter(|(d, b)| !d.is_empty() && !b.is_empty())
            .ok_or(SealError::Envelope("delta container is truncated")),
    )
}

/// The identity of a configuration (`seal::fingerprint` of a bundle; of
/// both parts for a delta with its base).
pub fn fingerprint(config: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    match split(config) {
        Some(Ok((delta, base))) => {
            let mut h = Sha256::new();
            h.update(b"tokenhub-delta-fingerprint\0");
            h.update(seal::fingerprint(delta));
            h.update(seal::fingerprint(base));
            h.finalize().into()
        }
        _ => seal::fingerprint(config),
    }
}

/// The sealed header that names a configuration's version: the delta's,
/// or the bundle's.
pub fn peek_header(config: &[u8]) -> Result<Header, SealError> {
    match split(config) {
        Some(parts) => seal::peek_header(parts?.0),
        None => seal::peek_header(config),
    }
}

/// What a worker keeps of a base bundle to apply deltas on it.
#[derive(Debug, Clone)]
pub struct Base {
    pub fingerprint: [u8; 32],
    pub version: u64,
    pub table: Arc<KeyTable>,
    /// (tenant, sub-account) ids by index, as the records number them.
    pub sub_accounts: Vec<(String, String)>,
}

impl Base {
    fn of(policy: &Policy, fingerprint: [u8; 32]) -> Self {
        Self { fingerprint, version: policy.version, table: policy.keys.table(), sub_accounts: sub_account_ids(policy) }
    }
}

pub(super) fn sub_account_ids(policy: &Policy) -> Vec<(String, String)> {
    policy
        .sub_accounts
        .iter()
        .map(|s| (policy.tenants.get(s.tenant).map(|t| t.id.clone()).unwrap_or_default(), s.id.clone()))
        .collect()
}

/// Loads a configuration: a bundle, or a delta with its base — the base
/// from `cached` when the fingerprints match (then it is neither decrypted
/// nor checked again: it was, when it was cached). Returns the policy and
/// the base to cache for the next delta.
pub fn load(mut config: Vec<u8>, key: &BundleKey, cached: Option<&Base>) -> Result<(Policy, Base), BundleError> {
    let (delta, base_at, base_fingerprint) = match split(&config) {
        None => {
            let fingerprint = seal::fingerprint(&config);
            let policy = open_and_compile_full(config, key)?;
            let base = Base::of(&policy, fingerprint);
            return Ok((policy, base));
        }
        Some(parts) => {
            let (delta, base) = parts.map_err(BundleError::Seal)?;
            (delta.to_vec(), config.len() - base.len(), seal::fingerprint(base))
        }
    };
    let base = match cached {
        Some(c) if c.fingerprint == base_fingerprint => c.clone(),
        _ => {
            // The base in place of the container (no second copy).
            config.drain(..base_at);
            let policy = open_and_compile_full(config, key)?;
            Base::of(&policy, base_fingerprint)
        }
    };
    let policy = open_delta(delta, &base, key)?;
    Ok((policy, base))
}

fn open_delta(sealed: Vec<u8>, base: &Base, key: &BundleKey) -> Result<Policy, BundleError> {
    let header = seal::peek_header(&sealed).map_err(BundleError::Seal)?;
    let (plaintext, range) = seal::open_owned(sealed, key).map_err(BundleError::Seal)?;
    let body = plaintext.get(range.clone()).unwrap_or_default();
    let (doc, table_start) = pack::read(body)?;
    let invalid = |e: String| BundleError::Invalid(format!("delta: {e}"));
    if header.version != doc.version {
        return Err(invalid(format!(
            "version: the sealed header says {} but the body says {}",
            header.version, doc.version
        )));
    }
    let Some(bound) = &doc.base else {
        return Err(invalid("names no base bundle".into()));
    };
    if bound.version != base.version || bound.fingerprint != to_hex(&base.fingerprint) {
        return Err(invalid(format!(
            "it applies to base version {} ({}), but the base delivered with it is version {} ({}); publish again",
            bound.version,
            short(&bound.fingerprint),
            base.version,
            short(&to_hex(&base.fingerprint))
        )));
    }
    if doc.version <= base.version {
        return Err(invalid(format!("version {} is not newer than its base's {}", doc.version, base.version)));
    }
    let mut plaintext = plaintext;
    plaintext.truncate(range.end);
    let overlay = table_start.map(|start| (plaintext, range.start + start));
    compile_delta(&doc, base, overlay).map_err(invalid)
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Why no delta was packed (the caller publishes in full instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoDelta {
    /// The base renumbers sub-accounts the new policy keeps (a tenant or
    /// sub-account was removed or reordered).
    Renumbered,
    /// The base's records are in another layout than this build's (see
    /// `pack::PACKED_SCHEMA`): a delta on it would be refused with it.
    Layout,
    /// The new policy or the base does not compile.
    Invalid(String),
}

/// The plaintext of a delta taking the base (its decrypted plaintext,
/// version and fingerprint) to `doc`, and how many records it carries.
pub fn pack_delta(
    doc: &schema::BundleDoc,
    base_plaintext: &[u8],
    base_version: u64,
    base_fingerprint: &[u8; 32],
) -> Result<(zeroize::Zeroizing<Vec<u8>>, usize), NoDelta> {
    use super::keys::{removal_record, RECORD_LEN};
    let (json_len, start) = pack::split(base_plaintext);
    let mut base_doc = schema::parse(base_plaintext.get(..json_len).unwrap_or_default()).map_err(NoDelta::Invalid)?;
    pack::check_layout(&mut base_doc, start.is_some()).map_err(|_| NoDelta::Layout)?;
    let base_policy = super::compile::compile(&base_doc).map_err(NoDelta::Invalid)?;
    let policy = super::compile::compile(doc).map_err(NoDelta::Invalid)?;
    let base_ids = sub_account_ids(&base_policy);
    if sub_account_ids(&policy).get(..base_ids.len()) != Some(base_ids.as_slice()) {
        return Err(NoDelta::Renumbered);
    }
    let limited: std::collections::HashSet<&[u8]> =
        doc.keys.iter().filter(|k| !super::keys::is_plain(k)).map(|k| k.id.as_bytes()).collect();
    let old = start.and_then(|s| base_plaintext.get(s..)).unwrap_or_default();
    let (mut old, mut new) =
        (old.chunks_exact(RECORD_LEN).peekable(), policy.keys.records().chunks_exact(RECORD_LEN).peekable());
    let mut overlay: Vec<u8> = Vec::new();
    let id = |r: &[u8]| r.get(..crate::core::apikey::KEY_ID_LEN).unwrap_or_default().to_vec();
    loop {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let order = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => Less,
            (None, Some(_)) => Greater,
            (Some(o), Some(n)) => id(o).cmp(&id(n)),
        };
        match (order, old.next_if(|_| order != Greater), new.next_if(|_| order != Less)) {
            (Equal, Some(o), Some(n)) if o != n => overlay.extend_from_slice(n),
            (Less, Some(o), _) if !limited.contains(id(o).as_slice()) => {
                // Gone since the base (a key now limited is found first
                // among the limited keys: no removal record).
                let fixed: super::keys::KeyIdBytes =
                    id(o).try_into().map_err(|_| NoDelta::Invalid("a base record is malformed".into()))?;
                overlay.extend_from_slice(&removal_record(&fixed));
            }
            (Greater, _, Some(n)) => overlay.extend_from_slice(n),
            _ => {}
        }
    }
    let base = schema::BaseRef { version: base_version, fingerprint: to_hex(base_fingerprint) };
    let mut out = crate::core::wipe::to_json_zeroizing(&pack::json_part(doc, Some(base)), 1 + overlay.len())
        .map_err(|e| NoDelta::Invalid(e.to_string()))?;
    let count = overlay.len() / RECORD_LEN;
    out.push(0);
    out.extend_from_slice(&overlay);
    Ok((out, count))
}

/// What a VM that has not loaded a base needs to check a delta on it:
/// the base without its records. Kept in shared data by the VM that
/// loaded the base (same process: it was checked there).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BaseSummary {
    pub fingerprint: String,
    pub version: u64,
    pub sub_accounts: Vec<(String, String)>,
}

impl Base {
    pub fn summary(&self) -> BaseSummary {
        BaseSummary {
            fingerprint: to_hex(&self.fingerprint),
            version: self.version,
            sub_accounts: self.sub_accounts.clone(),
        }
    }
}

/// A delta checked against a base this process already loaded, without
/// its records: everything but the base's plain keys (which this policy
/// does not have: it is for checking and for creating quota counters, not
/// for serving). `None` when `config` is no delta on `summary`'s base.
pub fn check_deferred(config: &[u8], key: &BundleKey, summary: &BaseSummary) -> Option<Result<Policy, BundleError>> {
    let (delta, base) = split(config)?.ok()?;
    let fingerprint = seal::fingerprint(base);
    if to_hex(&fingerprint) != summary.fingerprint {
        return None;
    }
    let base = Base {
        fingerprint,
        version: summary.version,
        table: Arc::new(KeyTable::default()),
        sub_accounts: summary.sub_accounts.clone(),
    };
    Some(open_delta(delta.to_vec(), &base, key))
}
