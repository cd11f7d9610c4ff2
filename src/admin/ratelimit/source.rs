//! The limits' source: the ECDS file `publish` writes, opened with the
//! bundle key by the same `core::bundle::open_and_compile` the filter runs,
//! re-read when it changes. A bad file is logged and the last good bundle
//! keeps serving; an older version than the one loaded is refused, as the
//! guard refuses rollbacks.

use super::descriptors::LimitTable;
use crate::admin::ecds::{Format, GuardResource};
use crate::admin::fsutil::{self, FileWatch};
use crate::core::bundle::{self, BundleKey};
use std::path::{Path, PathBuf};

/// Environment variable holding the bundle key (as for Envoy).
pub const BUNDLE_KEY_ENV: &str = "TOKENHUB_BUNDLE_KEY";

/// The bundle key from a 0600 file, else from `TOKENHUB_BUNDLE_KEY`.
pub fn bundle_key(file: Option<&Path>) -> Result<BundleKey, String> {
    let text = match file {
        Some(path) => zeroize::Zeroizing::new(
            fsutil::read_private_file(path).map_err(|e| format!("--bundle-key-file {}: {e}", path.display()))?,
        ),
        None => zeroize::Zeroizing::new(std::env::var(BUNDLE_KEY_ENV).map_err(|_| {
            format!("no bundle key: set {BUNDLE_KEY_ENV} or pass --bundle-key-file (`tokenhub-admin bundle-key --out FILE` writes it)")
        })?),
    };
    BundleKey::from_base64(text.trim()).map_err(|e| format!("bundle key: {e}"))
}

/// Opens the ECDS file's bundle into a limit table.
pub fn load(path: &Path, key: &BundleKey) -> Result<LimitTable, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    load_bytes(&text, Format::of(path), key).map_err(|e| format!("{}: {e}", path.display()))
}

fn load_bytes(text: &[u8], format: Format, key: &BundleKey) -> Result<LimitTable, String> {
    let resource = GuardResource::from_file(text, format)?.ok_or("nothing published yet")?;
    let policy = bundle::open_and_compile(resource.sealed, key).map_err(|e| e.to_string())?;
    Ok(LimitTable::new(policy))
}

/// Watches one file: `poll` returns a new table when the file changed to a
/// newer valid bundle.
pub struct Source {
    watch: FileWatch,
    key: BundleKey,
    version: u64,
}

/// What a poll found.
#[derive(Debug)]
pub enum Polled {
    Unchanged,
    Loaded(Box<LimitTable>),
    /// Not loaded; the reason names the problem (never bundle content).
    Refused(String),
}

impl Source {
    pub fn new(path: PathBuf, key: BundleKey) -> Self {
        Self { watch: FileWatch::new(path), key, version: 0 }
    }

    pub fn path(&self) -> &Path {
        self.watch.path()
    }

    pub fn poll(&mut self) -> Polled {
        let path = self.watch.path().display().to_string();
        match self.watch.poll() {
            None => Polled::Unchanged,
            Some(Err(e)) => Polled::Refused(format!("{path}: {e}")),
            Some(Ok(text)) => match load_bytes(&text, Format::of(self.watch.path()), &self.key) {
                Ok(table) if table.policy.version < self.version => Polled::Refused(format!(
                    "{path}: bundle version {} is older than version {} already loaded (rollback refused)",
                    table.policy.version, self.version
                )),
                Ok(table) => {
                    self.version = table.policy.version;
                    Polled::Loaded(Box::new(table))
                }
                Err(e) => Polled::Refused(format!("{path}: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::bundle::schema::{BundleDoc, QuotaDoc, QuotaMode, SubAccountDoc, TenantDoc, SCHEMA_VERSION};
    use crate::core::bundle::{pack, seal, seal::to_binary};

    fn key(n: u8) -> BundleKey {
        BundleKey::from_bytes([n; 32])
    }

    fn ecds(version: u64, per_minute: u64, k: &BundleKey) -> Vec<u8> {
        let doc = BundleDoc {
            schema: SCHEMA_VERSION,
            version,
            quota_mode: QuotaMode::Global,
            tenants: vec![TenantDoc {
                id: "acme".into(),
                quota: Some(QuotaDoc { per_minute: Some(per_minute), per_day: None }),
                sub_accounts: vec![SubAccountDoc { id: "default".into(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let sealed = to_binary(&seal(&pack(&doc).unwrap(), k, version, [7; 12]).unwrap()).unwrap();
        GuardResource::new(&sealed, Path::new("/w/guard.wasm")).to_file(Format::Json).unwrap()
    }

    fn tenant_limit(t: &LimitTable) -> u64 {
        t.limits(&[("tenant", "acme"), ("sub_account", "default")]).unwrap()[0].limit
    }

    fn write(path: &Path, bytes: &[u8]) {
        // A new inode and a distinct mtime-or-length, as publish's rename.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn loads_what_publish_writes_then_reloads_on_change_and_keeps_the_last_good_bundle() {
        let dir = crate::admin::fsutil::fresh_test_dir("rl-source");
        let path = dir.join("guard.json");
        let k = key(1);
        let mut source = Source::new(path.clone(), key(1));

        // Missing: reported once.
        assert!(matches!(source.poll(), Polled::Refused(r) if r.contains("guard.json")));
        assert!(matches!(source.poll(), Polled::Unchanged));

        write(&path, &ecds(5, 30, &k));
        let Polled::Loaded(t) = source.poll() else { panic!("version 5 should load") };
        assert_eq!((t.policy.version, t.policy.quota_mode, tenant_limit(&t)), (5, QuotaMode::Global, 30));
        assert!(matches!(source.poll(), Polled::Unchanged));

        // Sealed with another key, truncated, an older version: refused with a reason.
        write(&path, &ecds(6, 40, &key(2)));
        assert!(matches!(source.poll(), Polled::Refused(r) if r.contains("sealed with key")));
        write(&path, b"{\"resources\": [");
        assert!(matches!(source.poll(), Polled::Refused(r) if r.contains("not JSON")));
        write(&path, &ecds(4, 40, &k));
        assert!(matches!(source.poll(), Polled::Refused(r) if r.contains("rollback refused")));

        write(&path, &ecds(7, 60, &k));
        let Polled::Loaded(t) = source.poll() else { panic!("version 7 should load") };
        assert_eq!(tenant_limit(&t), 60);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_bundle_key_file_must_be_private() {
        let dir = crate::admin::fsutil::fresh_test_dir("rl-key");
        let path = dir.join("bundle.key");
        std::fs::write(&path, format!("{}\n", &*key(3).to_base64())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(bundle_key(Some(&path)).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(bundle_key(Some(&path)).unwrap().id(), key(3).id());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
