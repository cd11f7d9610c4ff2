//! The policy bundle: its JSON schema, the sealed envelope around it, and
//! the one validation pass that compiles it into lookup structures.
//!
//! The same `open_and_compile` runs in the filter's `on_configure` and in
//! `tokenhub-admin publish`, so the admin never publishes what the filter
//! would reject.

pub mod compile;
pub mod schema;
pub mod seal;

pub use compile::{compile, Policy};
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

/// Opens a sealed bundle and compiles it; the only entry point the filter uses.
pub fn open_and_compile(sealed: &str, key: &BundleKey) -> Result<Policy, BundleError> {
    let plaintext = open(sealed, key).map_err(BundleError::Seal)?;
    let doc = schema::parse(&plaintext).map_err(BundleError::Parse)?;
    // Gone before the compiled tables grow: the VM's memory never shrinks,
    // so what it peaks at is what it keeps.
    drop(plaintext);
    let header = seal::peek_header(sealed).map_err(BundleError::Seal)?;
    if header.version != doc.version {
        return Err(BundleError::Invalid(format!(
            "version: the sealed header says {} but the body says {}",
            header.version, doc.version
        )));
    }
    compile(&doc).map_err(BundleError::Invalid)
}
