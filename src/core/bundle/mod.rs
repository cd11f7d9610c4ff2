//! The policy bundle: its JSON schema, the sealed envelope around it, and
//! the one validation pass that compiles it into lookup structures.
//!
//! The same `open_and_compile` runs in the filter's `on_configure` and in
//! `tokenhub-admin publish`, so the admin never publishes what the filter
//! would reject.

pub mod compile;
pub mod delta;
pub mod keys;
pub mod pack;
pub mod schema;
pub mod seal;
pub mod shared;

pub use compile::{compile, Policy};
pub use pack::pack;
pub use seal::{open, seal, BundleKey, SealError};

/// Why a bundle was refused: names the stage and the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    Seal(SealError),
    Parse(String),
    Invalid(String),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seal(e) => write!(f, "bundle could not be opened: {e}"),
            Self::Parse(e) => write!(f, "bundle is not valid JSON for schema {}: {e}", schema::SCHEMA_VERSION),
            Self::Invalid(e) => write!(f, "bundle failed validation: {e}"),
        }
    }
}

/// Opens a sealed bundle, or a delta with its base (`delta`), and compiles
/// it. Takes either envelope form (text or binary, see `seal`).
pub fn open_and_compile(sealed: impl AsRef<[u8]>, key: &BundleKey) -> Result<Policy, BundleError> {
    delta::load(sealed.as_ref().to_vec(), key, None).map(|(policy, _)| policy)
}

/// A full bundle, decrypted where it lies (never held twice in a VM).
fn open_and_compile_full(sealed: Vec<u8>, key: &BundleKey) -> Result<Policy, BundleError> {
    let header = seal::peek_header(&sealed).map_err(BundleError::Seal)?;
    let (plaintext, range) = seal::open_owned(sealed, key).map_err(BundleError::Seal)?;
    let body = plaintext.get(range.clone()).unwrap_or_default();
    let (doc, table_start) = pack::read(body)?;
    if header.version != doc.version {
        return Err(BundleError::Invalid(format!(
            "version: the sealed header says {} but the body says {}",
            header.version, doc.version
        )));
    }
    if doc.base.is_some() {
        return Err(BundleError::Invalid("a delta cannot be loaded without its base bundle".into()));
    }
    let mut plaintext = plaintext;
    plaintext.truncate(range.end);
    // The key records stay in the decrypted buffer: no copy, no parse.
    let table = table_start.map(|start| (plaintext, range.start + start));
    compile::compile_with_table(&doc, table).map_err(BundleError::Invalid)
}
