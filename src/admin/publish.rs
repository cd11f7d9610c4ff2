//! Publishing: the store's policy, validated by the same code the filter
//! runs, sealed, wrapped in an ECDS resource, and atomically renamed into
//! the directory Envoy watches.

use super::ecds::{Format, GuardResource};
use super::store::{Published, StoreDoc};
use super::{fsutil, random_nonce, AdminError};
use crate::core::bundle::delta::{self, NoDelta};
use crate::core::bundle::{self, keys::RECORD_LEN, pack, seal, BundleKey};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Full bundle or delta (see `core::bundle::delta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A delta on the published base when the base holds at least
    /// `DELTA_MIN_KEYS` keys and the changes since it are few (at most
    /// `max(DELTA_MAX_RECORDS, base / 10)` records); else the full bundle,
    /// which becomes the next base.
    #[default]
    Auto,
    /// Always the full bundle (a new base).
    Full,
    /// A delta whenever there is a compatible base, whatever its size.
    Delta,
}

/// Below this many keys a full bundle loads in milliseconds: no delta.
pub const DELTA_MIN_KEYS: usize = 10_000;
/// A delta may always carry this many changed keys.
pub const DELTA_MAX_RECORDS: usize = 1_000;

/// What a delta publish reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeltaInfo {
    pub base_version: u64,
    pub changed_keys: usize,
}

/// Validates, seals and writes the bundle (full or delta, `Mode::Auto`);
/// records what was published.
pub fn publish(doc: &mut StoreDoc, ecds_file: &Path, wasm_path: &Path, now: u64) -> Result<Published, AdminError> {
    publish_with(doc, ecds_file, wasm_path, now, Mode::Auto).map(|(p, _)| p)
}

/// As `publish`, choosing full or delta by `mode`.
pub fn publish_with(
    doc: &mut StoreDoc,
    ecds_file: &Path,
    wasm_path: &Path,
    now: u64,
    mode: Mode,
) -> Result<(Published, Option<DeltaInfo>), AdminError> {
    let key =
        BundleKey::from_base64(&doc.bundle_key).map_err(|e| AdminError::Corrupt(format!("store bundle key: {e}")))?;
    // Versions only grow, even after restoring an older store or a publish
    // killed between its rename and its commit (the file on disk is then
    // newer than the store's record): Envoy refuses a bundle older than one
    // it has loaded, and a number must never name two different bundles.
    // What the file holds now: its version here, and the base of a delta
    // (read once: at a million keys it is 59 MB).
    let on_disk = GuardResource::read(ecds_file).ok().flatten().map(|r| r.sealed);
    let version_on_disk = on_disk.as_deref().and_then(|s| delta::peek_header(s).ok()).map_or(0, |h| h.version);
    let previous = doc.published.as_ref().map_or(0, |p| p.version).max(version_on_disk);
    doc.policy.version = previous.saturating_add(1).max(now.saturating_mul(1000));
    doc.policy.issued_at = now;
    let (sealed, delta) = match delta_config(doc, &key, on_disk, mode)? {
        Some((config, info)) => (config, Some(info)),
        None => (seal_policy(doc, &key)?, None),
    };
    let text = GuardResource::new(&sealed, wasm_path).to_file(Format::of(ecds_file)).map_err(AdminError::Internal)?;
    if let Some(dir) = ecds_file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AdminError::io(dir, e))?;
    }
    fsutil::write_atomic(ecds_file, &text, 0o640).map_err(|e| AdminError::io(ecds_file, e))?;
    let published = Published {
        version: doc.policy.version,
        at: now,
        path: ecds_file.to_path_buf(),
        sha256: crate::core::secret::to_hex(&Sha256::digest(&text)),
    };
    doc.published = Some(published.clone());
    Ok((published, delta))
}

/// The delta configuration (`thbd‖delta‖base`) on the base the ECDS file
/// holds (`current`: its configuration), if `mode` wants one and the base
/// allows it; verified by loading it exactly as the filter does.
fn delta_config(
    doc: &StoreDoc,
    key: &BundleKey,
    current: Option<Vec<u8>>,
    mode: Mode,
) -> Result<Option<(Vec<u8>, DeltaInfo)>, AdminError> {
    let Some(current) = current.filter(|_| mode != Mode::Full) else { return Ok(None) };
    let base = match delta::split(&current) {
        Some(Ok((_, base))) => base,
        Some(Err(_)) => return Ok(None),
        None => current.as_slice(),
    };
    // A base sealed with another key, damaged, or a text envelope: full.
    let (Ok(header), Ok(plain)) = (seal::peek_header(base), seal::open(base, key)) else { return Ok(None) };
    if !base.starts_with(seal::BINARY_PREFIX.as_bytes()) {
        return Ok(None);
    }
    let base_keys = pack::split(&plain).1.map_or(0, |start| plain.len().saturating_sub(start) / RECORD_LEN);
    if mode == Mode::Auto && base_keys < DELTA_MIN_KEYS {
        return Ok(None);
    }
    let fingerprint = seal::fingerprint(base);
    let (packed, changed_keys) = match delta::pack_delta(&doc.policy, &plain, header.version, &fingerprint) {
        Ok(packed) => packed,
        Err(NoDelta::Renumbered | NoDelta::Layout) => return Ok(None),
        Err(NoDelta::Invalid(e)) => return Err(AdminError::Invalid(e)),
    };
    if mode == Mode::Auto && changed_keys > DELTA_MAX_RECORDS.max(base_keys / 10) {
        return Ok(None);
    }
    let sealed =
        seal(&packed, key, doc.policy.version, random_nonce()).map_err(|e| AdminError::Internal(e.to_string()))?;
    let binary = seal::to_binary(&sealed).map_err(|e| AdminError::Internal(e.to_string()))?;
    let config = delta::join(&binary, base).ok_or_else(|| AdminError::Internal("delta too large".into()))?;
    bundle::open_and_compile(&config, key).map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(Some((config, DeltaInfo { base_version: header.version, changed_keys })))
}

/// Seals the policy after proving the filter will accept it: pack (which
/// compiles), seal, then open and compile the sealed bytes exactly as
/// `on_configure` does. Returns the binary envelope (see `core::bundle::seal`).
pub fn seal_policy(doc: &StoreDoc, key: &BundleKey) -> Result<Vec<u8>, AdminError> {
    let plain = bundle::pack(&doc.policy).map_err(AdminError::Invalid)?;
    let sealed =
        seal(&plain, key, doc.policy.version, random_nonce()).map_err(|e| AdminError::Internal(e.to_string()))?;
    let binary = seal::to_binary(&sealed).map_err(|e| AdminError::Internal(e.to_string()))?;
    bundle::open_and_compile(&binary, key).map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(binary)
}

/// What a publish reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishedInfo {
    pub tenants: usize,
    pub keys: usize,
    /// Set when a delta on an earlier base was published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaInfo>,
    #[serde(flatten)]
    pub published: Published,
}

/// The session's publish hook (`Session::publish`): the committed policy to
/// the configured ECDS file, in the same commit as the change.
pub fn publish_hook(doc: &mut StoreDoc, now: u64) -> Result<(), AdminError> {
    publish_configured(doc, None, None, now).map(|_| ())
}

/// Publishes to the configured ECDS file (`Mode::Auto`), first recording
/// new settings if given. Refuses when nothing says where to write.
pub fn publish_configured(
    doc: &mut StoreDoc,
    ecds: Option<&Path>,
    wasm: Option<&Path>,
    now: u64,
) -> Result<PublishedInfo, AdminError> {
    publish_configured_with(doc, ecds, wasm, now, Mode::Auto)
}

/// As `publish_configured`, full or delta by `mode`.
pub fn publish_configured_with(
    doc: &mut StoreDoc,
    ecds: Option<&Path>,
    wasm: Option<&Path>,
    now: u64,
    mode: Mode,
) -> Result<PublishedInfo, AdminError> {
    if let Some(p) = ecds {
        doc.settings.ecds_file = Some(p.to_path_buf());
    }
    if let Some(p) = wasm {
        doc.settings.wasm_path = Some(p.to_path_buf());
    }
    let ecds = doc.settings.ecds_file.clone().ok_or_else(|| {
        AdminError::Usage(
            "no ECDS file configured: run `tokenhub-admin publish --ecds-file FILE --wasm FILE` once".into(),
        )
    })?;
    let wasm = doc.settings.wasm_path.clone().ok_or_else(|| {
        AdminError::Usage(
            "no wasm path configured: run `tokenhub-admin publish --ecds-file FILE --wasm FILE` once".into(),
        )
    })?;
    let (published, delta) = publish_with(doc, &ecds, &wasm, now, mode)?;
    Ok(PublishedInfo { keys: doc.policy.keys.len(), tenants: doc.policy.tenants.len(), delta, published })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::bundle::schema::{BundleDoc, KeyDoc, SubAccountDoc, TenantDoc, SCHEMA_VERSION};
    use crate::core::secret::{hash_secret, to_hex};

    /// An ECDS file written by a tokenhub-admin of the 57-byte layout
    /// (schema 1, id ‖ SHA-256 ‖ sub-account u32 ‖ expiry u64 ‖ flags),
    /// then a publish that asks for a delta: a delta on that base would be
    /// refused with it, so the publish goes full, in this layout.
    #[test]
    fn a_base_in_the_earlier_record_layout_gets_a_full_publish() {
        let dir = crate::admin::fsutil::fresh_test_dir("publish-layout");
        let (ecds, wasm) = (dir.join("guard.pb"), dir.join("guard.wasm"));
        let key = crate::admin::random_key256();
        let id = "K00000000001";
        let mut doc = StoreDoc::default();
        doc.bundle_key = key.to_base64().to_string();
        doc.policy = BundleDoc {
            schema: SCHEMA_VERSION,
            version: 1,
            tenants: vec![TenantDoc {
                id: "acme".into(),
                sub_accounts: vec![SubAccountDoc { id: "main".into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut old = serde_json::to_vec(&doc.policy).unwrap();
        old.push(0);
        old.extend_from_slice(id.as_bytes());
        old.extend_from_slice(&hash_secret(id, "s"));
        old.extend_from_slice(&0u32.to_le_bytes());
        old.extend_from_slice(&u64::MAX.to_le_bytes());
        old.push(1);
        let sealed = seal::to_binary(&seal(&old, &key, 1, [1; 12]).unwrap()).unwrap();
        std::fs::write(&ecds, GuardResource::new(&sealed, &wasm).to_file(Format::Protobuf).unwrap()).unwrap();
        doc.policy.keys.push(KeyDoc {
            id: id.into(),
            tenant: "acme".into(),
            sub_account: "main".into(),
            hash: to_hex(&hash_secret(id, "s")),
            ..Default::default()
        });
        let (published, delta) = publish_with(&mut doc, &ecds, &wasm, 2, Mode::Delta).unwrap();
        assert_eq!(delta, None, "a delta on a base of the other layout");
        let written = GuardResource::read(&ecds).unwrap().unwrap().sealed;
        let policy = bundle::open_and_compile(&written, &key).unwrap();
        assert_eq!((policy.version, policy.keys.len()), (published.version, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
