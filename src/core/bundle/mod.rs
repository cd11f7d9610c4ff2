//! The policy bundle: its JSON schema, the sealed envelope around it, and
//! the one validation pass that compiles it into lookup structures.
//!
//! The same `open_and_compile` runs in the filter's `on_configure` and in
//! `tokenhub-admin publish`, so the admin never publishes what the filter
//! would reject.

pub mod compile;
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

/// Opens a sealed bundle and compiles it; the only entry point the filter
/// uses. Takes either envelope form (text or binary, see `seal`).
pub fn open_and_compile(sealed: impl AsRef<[u8]>, key: &BundleKey) -> Result<Policy, BundleError> {
    let sealed = sealed.as_ref();
    let header = seal::peek_header(sealed).map_err(BundleError::Seal)?;
    let plaintext = seal::open(sealed, key).map_err(BundleError::Seal)?;
    let (json_len, table_start) = pack::split(&plaintext);
    let doc = schema::parse(plaintext.get(..json_len).unwrap_or_default()).map_err(BundleError::Parse)?;
    if header.version != doc.version {
        return Err(BundleError::Invalid(format!(
            "version: the sealed header says {} but the body says {}",
            header.version, doc.version
        )));
    }
    // The key records stay in the decrypted buffer: no copy, no parse.
    let table = table_start.map(|start| (plaintext, start));
    compile::compile_with_table(&doc, table).map_err(BundleError::Invalid)
}
