//! Publishing: the store's policy, validated by the same code the filter
//! runs, sealed, wrapped in an ECDS resource, and atomically renamed into
//! the directory Envoy watches.

use super::store::{Published, StoreDoc};
use super::{fsutil, random_nonce, AdminError};
use crate::core::bundle::{self, seal, BundleKey};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The filter's name in Envoy's `config_discovery`.
pub const FILTER_NAME: &str = "tokenhub.guard";

/// Validates, seals and writes the bundle; records what was published.
pub fn publish(doc: &mut StoreDoc, ecds_file: &Path, wasm_path: &Path, now: u64) -> Result<Published, AdminError> {
    let key =
        BundleKey::from_base64(&doc.bundle_key).map_err(|e| AdminError::Corrupt(format!("store bundle key: {e}")))?;
    // Versions only grow, even after restoring an older store or a publish
    // killed between its rename and its commit (the file on disk is then
    // newer than the store's record): Envoy refuses a bundle older than one
    // it has loaded, and a number must never name two different bundles.
    let previous = doc.published.as_ref().map_or(0, |p| p.version).max(version_on_disk(ecds_file));
    doc.policy.version = previous.saturating_add(1).max(now.saturating_mul(1000));
    doc.policy.issued_at = now;
    let sealed = seal_policy(doc, &key)?;
    let resource = ecds_resource(&sealed, wasm_path);
    let text = serde_json::to_vec_pretty(&resource).map_err(|e| AdminError::Internal(e.to_string()))?;
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
    Ok(published)
}

/// The bundle version in an existing ECDS file (0 if none or unreadable).
fn version_on_disk(ecds_file: &Path) -> u64 {
    let Ok(text) = std::fs::read(ecds_file) else { return 0 };
    let Ok(resource) = serde_json::from_slice::<serde_json::Value>(&text) else { return 0 };
    resource["resources"][0]["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .and_then(|sealed| seal::peek_header(sealed).ok())
        .map_or(0, |h| h.version)
}

/// Seals the policy after proving the filter will accept it: compile, seal,
/// then open and compile the sealed text exactly as `on_configure` does.
pub fn seal_policy(doc: &StoreDoc, key: &BundleKey) -> Result<String, AdminError> {
    bundle::compile(&doc.policy).map_err(AdminError::Invalid)?;
    let plain =
        zeroize::Zeroizing::new(serde_json::to_vec(&doc.policy).map_err(|e| AdminError::Internal(e.to_string()))?);
    let sealed =
        seal(&plain, key, doc.policy.version, random_nonce()).map_err(|e| AdminError::Internal(e.to_string()))?;
    bundle::open_and_compile(&sealed, key).map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(sealed)
}

/// The ECDS resource. JSON is valid YAML, so the file may be named .yaml.
pub fn ecds_resource(sealed: &str, wasm_path: &Path) -> serde_json::Value {
    json!({
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": FILTER_NAME,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {
                    "name": "tokenhub_guard",
                    "root_id": "tokenhub_guard",
                    "vm_config": {
                        "vm_id": "tokenhub_guard",
                        "runtime": "envoy.wasm.runtime.v8",
                        "code": { "local": { "filename": wasm_path.to_string_lossy() } },
                        "environment_variables": { "host_env_keys": ["TOKENHUB_BUNDLE_KEY"] }
                    },
                    "configuration": {
                        "@type": "type.googleapis.com/google.protobuf.StringValue",
                        "value": sealed
                    },
                    // A crashed VM answers 503 and is reloaded for later
                    // requests: never open, and not down for good.
                    "failure_policy": "FAIL_RELOAD"
                }
            }
        }]
    })
}

/// What a publish reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishedInfo {
    pub tenants: usize,
    pub keys: usize,
    #[serde(flatten)]
    pub published: Published,
}

/// Publishes to the configured ECDS file, first recording new settings if
/// given. Refuses when nothing says where to write.
pub fn publish_configured(
    doc: &mut StoreDoc,
    ecds: Option<&Path>,
    wasm: Option<&Path>,
    now: u64,
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
    let published = publish(doc, &ecds, &wasm, now)?;
    Ok(PublishedInfo { keys: doc.policy.keys.len(), tenants: doc.policy.tenants.len(), published })
}
