//! The encrypted store: tenants, sub-accounts, keys (hashes only),
//! providers (secrets encrypted with the whole file), admin accounts.
//!
//! On disk: `{"format":"tokenhub-store","v":1,"kid":…,"sealed":…}` where
//! `sealed` is AES-256-GCM over the JSON document, with the header fields as
//! AAD. Every change is lock → load → mutate → atomic replace, so concurrent
//! invocations serialize and a crash leaves the last committed state.

pub mod admins;
pub mod policy;

use super::audit::{Entry, Head};
use super::fsutil::{self, LockGuard};
use super::AdminError;
use crate::core::bundle::schema::BundleDoc;
use crate::core::crypto::Key256;
use crate::core::wipe::to_json_zeroizing;
use admins::AdminAccount;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const FORMAT: &str = "tokenhub-store";
const FORMAT_VERSION: u32 = 1;

/// Everything the admin tool keeps. `policy` is exactly what gets published
/// (with a fresh version number); the rest is administrative metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreDoc {
    /// Increments on every committed change.
    pub revision: u64,
    /// Key that seals published bundles (Envoy's TOKENHUB_BUNDLE_KEY).
    pub bundle_key: String,
    pub policy: BundleDoc,
    #[serde(default)]
    pub key_meta: BTreeMap<String, KeyMeta>,
    #[serde(default)]
    pub tenant_meta: BTreeMap<String, TenantMeta>,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
    /// Admin accounts, their roles, 2FA state and token hashes.
    #[serde(default)]
    pub admins: Vec<AdminAccount>,
    /// Set when the first admin activates 2FA, and never cleared: from then
    /// on every command names an admin and every mutation needs a code.
    #[serde(default)]
    pub two_factor_required: bool,
    #[serde(default)]
    pub audit: AuditState,
}

/// The decrypted document holds secrets (the bundle key, the audit key,
/// provider secrets; 2FA seeds zero themselves, `SecondFactor`): overwritten when it is dropped, so a
/// long-running `serve` keeps no copy of them beyond the request that
/// needed them (tests/admin_serve.rs scans its memory).
impl Drop for StoreDoc {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.bundle_key.zeroize();
        self.audit.key.zeroize();
    }
}

/// The audit log's MAC key and its last committed entry (see `admin::audit`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditState {
    /// Base64, 32 random bytes; created with the store.
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// The lines of the last commit, sealed with it: the store is committed
    /// first, then they are appended, so a crash in between (or a cut of
    /// just these lines) is repaired by appending them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Entry>,
}

impl AuditState {
    /// The MAC key, created on first use for stores made before it existed
    /// (the caller commits the store after appending).
    pub fn key_bytes(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, AdminError> {
        if self.key.is_empty() {
            self.key = super::random_key256().to_base64().to_string();
        }
        STANDARD
            .decode(&self.key)
            .map(zeroize::Zeroizing::new)
            .map_err(|_| AdminError::Corrupt("the store's audit key is not base64".into()))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMeta {
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_at: Option<u64>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantMeta {
    pub created_at: u64,
}

/// Where `publish` writes and what the ECDS resource points at.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecds_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub version: u64,
    pub at: u64,
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    format: String,
    v: u32,
    kid: String,
    sealed: String,
}

/// The store's files under one home directory.
#[derive(Debug, Clone)]
pub struct StorePaths {
    pub home: PathBuf,
}

impl StorePaths {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }
    pub fn store(&self) -> PathBuf {
        self.home.join("store.enc")
    }
    pub fn lock(&self) -> PathBuf {
        self.home.join("store.lock")
    }
    pub fn audit(&self) -> PathBuf {
        self.home.join("audit.log")
    }
}

/// An opened store: paths plus the master key.
pub struct Store {
    pub paths: StorePaths,
    master: Key256,
}

impl Store {
    pub fn new(paths: StorePaths, master: Key256) -> Self {
        Self { paths, master }
    }

    pub fn exists(&self) -> bool {
        self.paths.store().exists()
    }

    /// Creates a new store; refuses to overwrite an existing one.
    pub fn create(&self, doc: &StoreDoc) -> Result<(), AdminError> {
        fsutil::ensure_private_dir(&self.paths.home).map_err(|e| AdminError::io(&self.paths.home, e))?;
        let _lock = self.lock()?;
        if self.exists() {
            return Err(AdminError::Usage(format!(
                "a store already exists at {}; refusing to overwrite it",
                self.paths.store().display()
            )));
        }
        self.save(doc)
    }

    pub fn lock(&self) -> Result<LockGuard, AdminError> {
        LockGuard::acquire(&self.paths.lock()).map_err(|e| AdminError::io(&self.paths.lock(), e))
    }

    /// Reads and decrypts (no lock: the file is always whole).
    pub fn load(&self) -> Result<StoreDoc, AdminError> {
        let path = self.paths.store();
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                AdminError::Usage(format!("no store at {}; create one with `tokenhub-admin init`", path.display()))
            }
            _ => AdminError::io(&path, e),
        })?;
        let env: Envelope = serde_json::from_str(&text).map_err(|e| {
            AdminError::Corrupt(format!("{}: not a TokenHub store ({})", path.display(), super::safe_serde_error(&e)))
        })?;
        if env.format != FORMAT || env.v != FORMAT_VERSION {
            return Err(AdminError::Corrupt(format!(
                "{}: unsupported store format {} v{}",
                path.display(),
                env.format,
                env.v
            )));
        }
        if env.kid != self.master.id() {
            return Err(AdminError::Auth(format!(
                "the store is encrypted with master key {} but the given master key is {}",
                env.kid,
                self.master.id()
            )));
        }
        let sealed =
            STANDARD.decode(&env.sealed).map_err(|_| AdminError::Corrupt(format!("{}: bad base64", path.display())))?;
        let plain = self.master.open(aad(&env.kid).as_bytes(), &sealed).ok_or_else(|| {
            AdminError::Corrupt(format!("{}: authentication failed (file altered or truncated)", path.display()))
        })?;
        // The decrypted document holds secrets: the error names a position only.
        serde_json::from_slice(&plain)
            .map_err(|e| AdminError::Corrupt(format!("{}: {}", path.display(), super::safe_serde_error(&e))))
    }

    /// Encrypts and atomically replaces the store file (mode 0600).
    fn save(&self, doc: &StoreDoc) -> Result<(), AdminError> {
        let plain = to_json_zeroizing(doc, 0).map_err(|e| AdminError::Internal(e.to_string()))?;
        let kid = self.master.id();
        let sealed = self
            .master
            .seal(super::random_nonce(), aad(&kid).as_bytes(), &plain)
            .ok_or_else(|| AdminError::Internal("encryption failed".into()))?;
        let env = Envelope { format: FORMAT.into(), v: FORMAT_VERSION, kid, sealed: STANDARD.encode(sealed) };
        let text = serde_json::to_vec_pretty(&env).map_err(|e| AdminError::Internal(e.to_string()))?;
        let path = self.paths.store();
        fsutil::write_atomic(&path, &text, 0o600).map_err(|e| AdminError::io(&path, e))
    }

    /// The one way to change the store: under the lock, load, apply `f`, and
    /// commit only if it succeeds. Returns what `f` returned.
    pub fn update<T>(&self, f: impl FnOnce(&mut StoreDoc) -> Result<T, AdminError>) -> Result<T, AdminError> {
        self.locked(|store| {
            let mut doc = store.load()?;
            let out = f(&mut doc)?;
            store.commit(&mut doc)?;
            Ok(out)
        })?
    }

    /// Runs `f` holding the store lock, for callers that decide themselves
    /// what to commit (the session commits 2FA counters even when it refuses
    /// the operation). Only `f` may call `commit`.
    pub fn locked<T>(&self, f: impl FnOnce(&Store) -> T) -> Result<T, AdminError> {
        let _lock = self.lock()?;
        self.remove_stale_temp_files();
        Ok(f(self))
    }

    /// Saves `doc` as the next revision. Call only inside `locked`.
    pub fn commit(&self, doc: &mut StoreDoc) -> Result<(), AdminError> {
        doc.revision += 1;
        self.save(doc)
    }

    /// A writer killed between creating its temp file and renaming it leaves
    /// the file behind; under the lock no writer is active, so any is stale.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.paths.home) else { return };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".store.enc.tmp.") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn aad(kid: &str) -> String {
    format!("{FORMAT}/{FORMAT_VERSION}/{kid}")
}

/// Loads the master key: from `TOKENHUB_MASTER_KEY` (base64 text) or from a
/// file that only its owner can read. Never from the command line.
pub fn load_master_key(file: Option<&Path>) -> Result<Key256, AdminError> {
    if let Ok(text) = std::env::var("TOKENHUB_MASTER_KEY") {
        return Key256::from_base64(&text).map_err(|e| AdminError::Usage(format!("TOKENHUB_MASTER_KEY: {e}")));
    }
    let Some(path) = file else {
        return Err(AdminError::Usage(
            "no master key: set TOKENHUB_MASTER_KEY_FILE (a 0600 file) or TOKENHUB_MASTER_KEY".into(),
        ));
    };
    let text = zeroize::Zeroizing::new(fsutil::read_private_file(path).map_err(|e| AdminError::io(path, e))?);
    Key256::from_base64(&text).map_err(|e| AdminError::Usage(format!("{}: {e}", path.display())))
}
