//! The sealed plaintext: the bundle's JSON document, then a NUL byte (JSON
//! text never contains one), then the plain keys as packed records (see
//! `super::keys`). A 100 000-key bundle is then ~5.7 MB of records that a
//! worker VM decrypts and keeps as they are, instead of ~20 MB of JSON it
//! would parse and rebuild. A plaintext without the NUL is JSON only.

use super::compile::compile;
use super::keys::{decode_record, is_plain, RECORD_LEN};
use super::schema::{BundleDoc, KeyDoc};
use crate::core::secret::to_hex;
use crate::core::wipe::to_json_zeroizing;
use zeroize::Zeroizing;

const SEPARATOR: u8 = 0;

/// The plaintext to seal for `doc`. Compiling it validates every key (the
/// error names the field) and builds the sorted records the filter adopts;
/// packing only writes them after the JSON of everything else.
pub fn pack(doc: &BundleDoc) -> Result<Zeroizing<Vec<u8>>, String> {
    let policy = compile(doc)?;
    let records = policy.keys.records();
    // Every field listed (no `..`): a field added to the schema fails to
    // compile here until it is carried over.
    let json_part = BundleDoc {
        schema: doc.schema,
        version: doc.version,
        issued_at: doc.issued_at,
        tenants: doc.tenants.clone(),
        keys: doc.keys.iter().filter(|k| !is_plain(k)).cloned().collect(),
        providers: doc.providers.clone(),
        oidc: doc.oidc.clone(),
        quota_mode: doc.quota_mode,
        prices: doc.prices.clone(),
        soft_limit_percent: doc.soft_limit_percent,
        default_output_tokens: doc.default_output_tokens,
        base: doc.base.clone(),
    };
    let mut out = to_json_zeroizing(&json_part, 1 + records.len()).map_err(|e| e.to_string())?;
    out.push(SEPARATOR);
    out.extend_from_slice(records);
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
