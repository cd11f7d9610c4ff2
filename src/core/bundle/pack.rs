//! The sealed plaintext: the bundle's JSON document, then a NUL byte (JSON
//! text never contains one), then the plain keys as packed records (see
//! `super::keys`). A 100 000-key bundle is then ~5.7 MB of records that a
//! worker VM decrypts and keeps as they are, instead of ~20 MB of JSON it
//! would parse and rebuild. A plaintext without the NUL is JSON only.

use super::keys::{decode_record, encode_record, is_plain, KeyIdBytes, Record, RECORD_LEN};
use super::schema::{BundleDoc, KeyDoc};
use crate::core::apikey;
use crate::core::secret::{hash_from_hex, to_hex};
use std::collections::HashMap;
use zeroize::Zeroizing;

const SEPARATOR: u8 = 0;

/// The plaintext to seal for `doc`. Expects a document that compiles (the
/// publisher compiles it first); a plain key it cannot pack is an error.
pub fn pack(doc: &BundleDoc) -> Result<Zeroizing<Vec<u8>>, String> {
    let subs = sub_account_positions(doc);
    let mut records: Vec<Record> = Vec::new();
    let mut limited = Vec::new();
    for (i, k) in doc.keys.iter().enumerate() {
        if !is_plain(k) {
            limited.push(k.clone());
            continue;
        }
        let id: KeyIdBytes =
            k.id.as_bytes()
                .try_into()
                .ok()
                .filter(|_| apikey::is_valid_key_id(&k.id))
                .ok_or_else(|| format!("keys[{i}].id: not a key id"))?;
        let hash = hash_from_hex(&k.hash).ok_or_else(|| format!("keys[{i}].hash: expected 64 hex digits"))?;
        let sub = *subs
            .get(&(k.tenant.as_str(), k.sub_account.as_str()))
            .ok_or_else(|| format!("keys[{i}]: tenant {:?} has no sub-account {:?}", k.tenant, k.sub_account))?;
        records.push(encode_record(&id, &hash, sub, k.status, k.expires_at));
    }
    records.sort_unstable();
    if records.windows(2).any(|w| w[0][..apikey::KEY_ID_LEN] == w[1][..apikey::KEY_ID_LEN]) {
        return Err("keys: duplicate key id".into());
    }
    // Every field listed (no `..`): a field added to the schema fails to
    // compile here until it is carried over.
    let json_part = BundleDoc {
        schema: doc.schema,
        version: doc.version,
        issued_at: doc.issued_at,
        tenants: doc.tenants.clone(),
        keys: limited,
        providers: doc.providers.clone(),
        oidc: doc.oidc.clone(),
    };
    let mut out = Zeroizing::new(serde_json::to_vec(&json_part).map_err(|e| e.to_string())?);
    out.reserve(1 + records.len() * RECORD_LEN);
    out.push(SEPARATOR);
    for r in &records {
        out.extend_from_slice(r);
    }
    Ok(out)
}

/// The length of the JSON part, and where the records start (if any).
pub fn split(plaintext: &[u8]) -> (usize, Option<usize>) {
    match plaintext.iter().position(|&b| b == SEPARATOR) {
        Some(at) => (at, Some(at + 1)),
        None => (plaintext.len(), None),
    }
}

/// The document a plaintext holds, records turned back into keys (for
/// inspecting a published bundle; the filter never builds this).
pub fn unpack(plaintext: &[u8]) -> Result<BundleDoc, String> {
    let (json_len, table_start) = split(plaintext);
    let mut doc = super::schema::parse(plaintext.get(..json_len).unwrap_or_default())?;
    let records = table_start.and_then(|s| plaintext.get(s..)).unwrap_or_default();
    if !records.len().is_multiple_of(RECORD_LEN) {
        return Err(format!("key table: {} bytes is not a whole number of records", records.len()));
    }
    let subs: Vec<(String, String)> =
        doc.tenants.iter().flat_map(|t| t.sub_accounts.iter().map(move |s| (t.id.clone(), s.id.clone()))).collect();
    for (i, r) in records.chunks_exact(RECORD_LEN).enumerate() {
        let d = decode_record(r).ok_or_else(|| format!("key table record {i}: malformed"))?;
        let (tenant, sub_account) =
            subs.get(d.sub_account).cloned().ok_or_else(|| format!("key table record {i}: no such sub-account"))?;
        doc.keys.push(KeyDoc {
            id: String::from_utf8_lossy(&d.id).into_owned(),
            tenant,
            sub_account,
            hash: to_hex(&d.hash),
            status: d.status,
            expires_at: d.expires_at,
            ..KeyDoc::default()
        });
    }
    Ok(doc)
}

/// (tenant id, sub-account id) → its position in document order, which is
/// the order `compile` gives sub-accounts.
fn sub_account_positions(doc: &BundleDoc) -> HashMap<(&str, &str), u32> {
    doc.tenants
        .iter()
        .flat_map(|t| t.sub_accounts.iter().map(move |s| (t.id.as_str(), s.id.as_str())))
        .zip(0u32..)
        .collect()
}
