//! Creating a store (`init`) and opening one: where the master key lives
//! (never beside the store), the bundle key, the first audit line.

use super::Reply;
use crate::admin::audit::Target;
use crate::admin::session::{Change, Claim, Scope, Session};
use crate::admin::store::{load_master_key, Settings, Store, StoreDoc, StorePaths};
use crate::admin::{fsutil, random_key256, unix_now, AdminError};
use crate::core::bundle::schema::{BundleDoc, SCHEMA_VERSION};
use serde_json::json;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where earlier versions put the master key by default: beside the store.
fn legacy_key_file(home: &Path) -> PathBuf {
    home.join("master.key")
}

/// How to say where the master key is, and why not in <home>.
const MASTER_KEY_HINT: &str = "set TOKENHUB_MASTER_KEY_FILE (or --master-key-file) to a 0600 file outside the store's directory, e.g. /etc/tokenhub/master.key or a mounted secret, or pass the key itself in TOKENHUB_MASTER_KEY; the key must not live beside store.enc, or whoever copies or backs up that directory can open every secret in it";

/// Opens the store in `home` with the master key from TOKENHUB_MASTER_KEY
/// or `master_key_file`.
pub fn open_store(home: &Path, master_key_file: Option<&Path>) -> Result<Store, AdminError> {
    if std::env::var_os("TOKENHUB_MASTER_KEY").is_none() && master_key_file.is_none() {
        let legacy = legacy_key_file(home);
        let found = if legacy.exists() {
            format!(
                " ({} is there from an older version: move it out of {}, then point TOKENHUB_MASTER_KEY_FILE at it)",
                legacy.display(),
                home.display()
            )
        } else {
            String::new()
        };
        return Err(AdminError::Usage(format!("no master key: {MASTER_KEY_HINT}{found}")));
    }
    Ok(Store::new(StorePaths::new(home), load_master_key(master_key_file)?))
}

/// Refuses a new master key file inside the store's directory.
fn check_key_outside_home(key_file: &Path, home: &Path) -> Result<(), AdminError> {
    let home = home.canonicalize().map_err(|e| AdminError::io(home, e))?;
    let parent = match key_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.canonicalize().map_err(|e| {
        AdminError::Usage(format!(
            "the master key file's directory {} cannot be used ({e}); create it first (mode 0700)",
            parent.display()
        ))
    })?;
    if dir.starts_with(&home) {
        return Err(AdminError::Usage(format!(
            "refusing to create the master key at {}, inside the store's directory {}: {MASTER_KEY_HINT}",
            key_file.display(),
            home.display()
        )));
    }
    Ok(())
}

/// A secret and a newline, written atomically with mode 0600.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), AdminError> {
    let body = Zeroizing::new(format!("{text}\n"));
    fsutil::write_atomic(path, body.as_bytes(), 0o600).map_err(|e| AdminError::io(path, e))
}

/// Where `init` writes and what it starts from (the CLI's `init` flags).
#[derive(Debug, Clone, Default)]
pub struct InitSpec {
    /// The ECDS file Envoy watches.
    pub ecds_file: Option<PathBuf>,
    /// tokenhub_guard.wasm as Envoy sees it.
    pub wasm: Option<PathBuf>,
    /// Also write the new bundle key here (0600).
    pub bundle_key_out: Option<PathBuf>,
    /// Use this bundle key instead of a new random one.
    pub bundle_key_file: Option<PathBuf>,
}

/// Creates a store in `home` (and a master key file if none exists); its
/// audit log starts with the creation.
pub fn init(home: &Path, master_key_file: Option<&Path>, args: &InitSpec) -> Result<Reply, AdminError> {
    let paths = StorePaths::new(home);
    if !paths.store().exists() && paths.audit().exists() {
        return Err(AdminError::Usage(format!(
            "{} exists from an earlier store: a new store cannot continue another store's audit log. Keep it (it is the record of that store) by moving it out of {}, then run init again",
            paths.audit().display(),
            home.display()
        )));
    }
    let mut created_master = None;
    if std::env::var_os("TOKENHUB_MASTER_KEY").is_none() {
        let Some(key_file) = master_key_file else {
            return Err(AdminError::Usage(format!("where should init keep the new master key? {MASTER_KEY_HINT}")));
        };
        fsutil::ensure_private_dir(home).map_err(|e| AdminError::io(home, e))?;
        if !key_file.exists() {
            check_key_outside_home(key_file, home)?;
            write_secret_file(key_file, &random_key256().to_base64())?;
            created_master = Some(key_file.to_path_buf());
        }
    }
    fsutil::ensure_private_dir(home).map_err(|e| AdminError::io(home, e))?;
    let store = open_store(home, master_key_file)?;
    let bundle_key = match &args.bundle_key_file {
        Some(path) => {
            let text = Zeroizing::new(fsutil::read_private_file(path).map_err(|e| AdminError::io(path, e))?);
            crate::core::crypto::Key256::from_base64(&text).map_err(|e| {
                AdminError::Usage(format!(
                    "{}: {e}: the bundle key is the base64 of 32 random bytes (openssl rand -base64 32)",
                    path.display()
                ))
            })?
        }
        None => random_key256(),
    };
    let mut doc = StoreDoc::default();
    doc.bundle_key = bundle_key.to_base64().to_string();
    doc.policy = BundleDoc { schema: SCHEMA_VERSION, ..Default::default() };
    doc.settings = Settings { ecds_file: args.ecds_file.clone(), wasm_path: args.wasm.clone() };
    doc.audit.key_bytes()?;
    store.create(&doc)?;
    if let Some(p) = &args.bundle_key_out {
        write_secret_file(p, &bundle_key.to_base64())?;
    }
    // The log starts with the store's creation.
    let session =
        Session { store: &store, claim: Claim::Anonymous, otp: None, via: "cli", now: unix_now(), publish: None };
    let op = Change::new("store.init", Scope::Anyone, Target::default());
    session.mutate(op, |_, _| Ok(()))?;
    let mut text = format!("store created at {}", store.paths.store().display());
    if let Some(key_file) = &created_master {
        text.push_str(&format!(
            "\nnew master key written to {} (mode 0600): back it up apart from the store; without it the store cannot be opened",
            key_file.display()
        ));
    }
    text.push_str("\nnext: tokenhub-admin admin add NAME --role platform, then 2fa enroll / 2fa verify --as NAME");
    Ok(Reply::new(
        text,
        json!({"store": store.paths.store(), "master_key_created": created_master.is_some(), "bundle_key_id": bundle_key.id()}),
    ))
}
