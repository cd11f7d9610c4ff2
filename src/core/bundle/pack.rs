//! The sealed plaintext: the bundle's JSON document, then a NUL byte (JSON
//! text never contains one), then the plain keys as packed records (see
//! `super::keys`). A 100 000-key bundle is then ~3.7 MB of records that a
//! worker VM decrypts and keeps as they are, instead of ~20 MB of JSON it
//! would parse and rebuild. A plaintext without the NUL is JSON only.
//!
//! The JSON part's `schema` names the record layout (`PACKED_SCHEMA`), so
//! that no build reads records of another layout: it refuses the bundle,
//! saying why, and keeps serving the one it holds.

use super::compile::compile;
use super::keys::{decode_record, is_plain, RECORD_LEN};
use super::schema::{self, BundleDoc, KeyDoc, SCHEMA_VERSION};
use super::BundleError;
use crate::core::secret::to_hex;
use crate::core::wipe::to_json_zeroizing;
use zeroize::Zeroizing;

const SEPARATOR: u8 = 0;

/// The `schema` of a plaintext with records: the document's schema
/// (`SCHEMA_VERSION`) with this record layout, 37 bytes (16-byte hash
/// prefix, u32 expiry). Plaintexts packed before say `SCHEMA_VERSION` with
/// 57-byte records: this build refuses them, and those builds refuse this
/// one ("schema: 2 is not supported"). JSON alone (no NUL) says
/// `SCHEMA_VERSION`, as ever. A new document schema takes a number that
/// is neither.
pub const PACKED_SCHEMA: u32 = 2;

/// The record size of the layout `SCHEMA_VERSION` named, to say why such a
/// bundle is refused.
const OLD_RECORD_LEN: usize = 57;

/// The plaintext to seal for `doc`. Compiling it validates every key (the
/// error names the field) and builds the sorted records the filter adopts;
/// packing only writes them after the JSON of everything else.
pub fn pack(doc: &BundleDoc) -> Result<Zeroizing<Vec<u8>>, String> {
    let policy = compile(doc)?;
    let records = policy.keys.records();
    let mut out = to_json_zeroizing(&json_part(doc, doc.base.clone()), 1 + records.len()).map_err(|e| e.to_string())?;
    out.push(SEPARATOR);
    out.extend_from_slice(records);
    Ok(out)
}

/// What a packed plaintext's JSON part holds of `doc`: everything but the
/// plain keys (those are the records), with `base` (a delta's base). Built
/// field by field, not cloned: at a million keys a clone of `doc` costs
/// more than the rest of the JSON part.
pub(super) fn json_part(doc: &BundleDoc, base: Option<schema::BaseRef>) -> BundleDoc {
    // Every field listed (no `..`): a field added to the schema fails to
    // compile here until it is carried over.
    BundleDoc {
        schema: PACKED_SCHEMA,
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
        base,
    }
}

/// The length of the JSON part, and where the records start (if any).
pub fn split(plaintext: &[u8]) -> (usize, Option<usize>) {
    match plaintext.iter().position(|&b| b == SEPARATOR) {
        Some(at) => (at, Some(at + 1)),
        None => (plaintext.len(), None),
    }
}

/// A plaintext's JSON part, parsed, its `schema` checked against its
/// layout (then `SCHEMA_VERSION`, for `compile`), and where its records
/// start, if it has any.
pub fn read(plaintext: &[u8]) -> Result<(BundleDoc, Option<usize>), BundleError> {
    let (json_len, table_start) = split(plaintext);
    let mut doc = schema::parse(plaintext.get(..json_len).unwrap_or_default()).map_err(BundleError::Parse)?;
    check_layout(&mut doc, table_start.is_some()).map_err(BundleError::Invalid)?;
    Ok((doc, table_start))
}

/// Whether the records (`records`: the plaintext has the NUL) are in this
/// build's layout; sets `doc.schema` to the document's schema.
pub fn check_layout(doc: &mut BundleDoc, records: bool) -> Result<(), String> {
    match (records, doc.schema) {
        // JSON only: `compile` checks the schema.
        (false, _) => Ok(()),
        (true, PACKED_SCHEMA) => {
            doc.schema = SCHEMA_VERSION;
            Ok(())
        }
        (true, SCHEMA_VERSION) => Err(format!(
            "key records: packed by an earlier tokenhub-admin ({OLD_RECORD_LEN}-byte records, schema \
             {SCHEMA_VERSION}); this build reads schema {PACKED_SCHEMA} ({RECORD_LEN}-byte records): publish again \
             with this release's tokenhub-admin"
        )),
        (true, other) => Err(format!(
            "schema: {other} is not supported (this build reads {PACKED_SCHEMA} with key records, \
             {SCHEMA_VERSION} without)"
        )),
    }
}

/// The document a plaintext holds, records turned back into keys (for
/// inspecting a published bundle; the filter never builds this). A record
/// keeps only a prefix of the secret's hash (`keys::RECORD_HASH_LEN`): its
/// key's `hash` is those bytes in hex (32 digits, not SHA-256's 64), which
/// `compile` refuses — the full hash is in the admin's store, not here.
pub fn unpack(plaintext: &[u8]) -> Result<BundleDoc, String> {
    let (mut doc, table_start) = read(plaintext).map_err(|e| e.to_string())?;
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
