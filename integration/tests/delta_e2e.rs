//! Deltas end to end: `tokenhub-admin publish --delta` writes only the
//! changes since the published base (with that base, in one ECDS file), and
//! a real Envoy applies them on the base its workers hold: a deleted key
//! and a disabled key refused, a new key accepted; a delta bound to
//! another base, or damaged, is refused with its reason in the log while
//! the previous state keeps serving; an older delta replayed is a rollback
//! (the newest keeps serving); a full publish supersedes the deltas.
//!
//! Small key counts (the speed at a million keys is in bench/results/keys.md).
//! Needs the filter (`make wasm`), the sidecar and Envoy (`make bootstrap`).

use std::path::PathBuf;
use std::time::Duration;
use tokenhub_integration::guard::*;
use tokenhub_integration::EcdsOutcome;
use tokenhub_integration::{paths, IssuedKey};

const MAGIC: &[u8] = b"thbd";

/// (delta, base) of a published delta configuration.
fn parts(config: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert!(config.starts_with(MAGIC), "not a delta configuration");
    let len = u32::from_le_bytes(config[4..8].try_into().unwrap()) as usize;
    (config[8..8 + len].to_vec(), config[8 + len..].to_vec())
}

fn join(delta: &[u8], base: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(delta.len() as u32).to_le_bytes());
    out.extend_from_slice(delta);
    out.extend_from_slice(base);
    out
}

fn published_config(fx: &Fixture) -> Vec<u8> {
    sealed_bytes_of(&parse_ecds(&fx.admin.ecds_contents()))
}

/// `publish` with extra flags, waiting until Envoy took the file.
fn publish_with(fx: &Fixture, flags: &[&str]) -> serde_json::Value {
    let mut args = vec!["publish"];
    args.extend_from_slice(flags);
    let (out, outcome) = fx.envoy.await_ecds(|| fx.admin.json(&args));
    assert_eq!(outcome, EcdsOutcome::Accepted, "tokenhub-admin publish {flags:?}: {out}");
    out
}

fn with_config(fx: &Fixture, config: &[u8]) -> String {
    let mut ecds = parse_ecds(&fx.admin.ecds_contents());
    set_sealed_bytes(&mut ecds, config);
    serde_json::to_string_pretty(&ecds).unwrap()
}

/// The local template watching `guard.pb`: the binary form of the ECDS
/// file (`publish --ecds-file X.pb`), which Envoy reads by its extension.
fn binary_template() -> PathBuf {
    let local = paths::repo_root().join(tokenhub_integration::envoy::LOCAL_TEMPLATE);
    let text = std::fs::read_to_string(&local).unwrap();
    let binary = text.replace("{{BUNDLE_DIR}}/guard.json", "{{BUNDLE_DIR}}/guard.pb");
    assert_ne!(binary, text, "{} no longer watches {{{{BUNDLE_DIR}}}}/guard.json", local.display());
    let path = std::env::temp_dir().join(format!("tokenhub-delta-e2e-{}.yaml.tmpl", std::process::id()));
    std::fs::write(&path, binary).unwrap();
    path
}

/// A store with three more keys, published; Envoy on it. `binary`: the
/// store publishes guard.pb and Envoy watches that.
fn start(binary: bool) -> (Fixture, Vec<IssuedKey>) {
    let mut extra = Vec::new();
    let template = binary.then(binary_template);
    let fx = Fixture::start_with_module(
        &paths::guard_wasm(),
        |admin, _| {
            if binary {
                let pb = admin.bundle_dir().join("guard.pb");
                admin.json(&["publish", "--ecds-file", &pb.display().to_string()]);
            }
            extra = (0..3).map(|_| admin.create_key(TENANT, &[])).collect();
        },
        |opts| {
            if let Some(template) = template {
                opts.template = template;
            }
        },
    );
    (fx, extra)
}

#[test]
fn a_delta_refuses_deleted_and_disabled_keys_and_admits_new_ones_on_the_base_the_workers_hold() {
    deleted_disabled_and_new_keys_through_a_delta(false);
}

/// The same through the binary ECDS file: full bundle and deltas alike.
#[test]
fn a_binary_ecds_file_serves_the_full_bundle_and_its_deltas() {
    deleted_disabled_and_new_keys_through_a_delta(true);
}

fn deleted_disabled_and_new_keys_through_a_delta(binary: bool) {
    let (fx, extra) = start(binary);
    let published = fx.admin.status()["published"]["path"].as_str().unwrap().to_string();
    assert_eq!(published.ends_with("guard.pb"), binary, "{published}");
    let base_version = fx.admin.published_version();
    for k in &extra {
        fx.expect_allowed(|| fx.with_key(&k.key));
    }
    let log_from = fx.envoy.log_contents().len();
    fx.admin.json(&["key", "delete", &extra[0].key_id]);
    fx.admin.json(&["key", "disable", &extra[1].key_id]);
    let new = fx.admin.create_key(TENANT, &[]);
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&new.key));

    let out = publish_with(&fx, &["--delta"]);
    assert_eq!(out["delta"]["base_version"].as_u64(), Some(base_version), "{out}");
    assert_eq!(out["delta"]["changed_keys"].as_u64(), Some(3), "{out}");
    let version = out["version"].as_u64().unwrap();
    assert!(version > base_version);
    match binary {
        false => assert!(!parts(&published_config(&fx)).1.is_empty()),
        // Binary protobuf, not the JSON form (whose base is checked above).
        true => assert!(!std::fs::read(&published).unwrap().starts_with(b"{")),
    }

    fx.envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&extra[0].key));
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&extra[1].key));
    fx.expect_allowed(|| fx.with_key(&extra[2].key));
    fx.expect_allowed(|| fx.with_key(&new.key));
    fx.expect_allowed(|| fx.with_key(&fx.key.key));
    // The workers kept their base: they say so, and none loaded it again.
    let reused = log_lines_since(
        &fx.envoy,
        log_from,
        &format!("delta version {version} applied on base version {base_version} held by this VM"),
    );
    assert!(!reused.is_empty(), "no worker applied the delta on the base it holds");
    // The main thread's fresh VM checked it against the base's summary.
    let checked =
        log_lines_since(&fx.envoy, log_from, &format!("delta version {version} checked without loading its base"));
    assert!(!checked.is_empty(), "the fresh VM loaded the base in full");

    // A second delta on the same base carries every change since it.
    fx.admin.json(&["key", "enable", &extra[1].key_id]);
    let out = publish_with(&fx, &["--delta"]);
    assert_eq!(out["delta"]["base_version"].as_u64(), Some(base_version), "{out}");
    assert_eq!(out["delta"]["changed_keys"].as_u64(), Some(2), "{out}");
    fx.expect_allowed(|| fx.with_key(&extra[1].key));
    fx.expect_denied(UNKNOWN_KEY, || fx.with_key(&extra[0].key));
    fx.expect_allowed(|| fx.with_key(&new.key));
}

#[test]
fn a_delta_for_another_base_or_damaged_is_refused_an_old_one_is_a_rollback_and_a_full_publish_supersedes() {
    let mut victim = None;
    let fx = Fixture::start_with(|admin, _| victim = Some(admin.create_key(TENANT, &[])));
    let victim = victim.unwrap();
    fx.admin.json(&["key", "disable", &victim.key_id]);
    let first = publish_with(&fx, &["--delta"]);
    let first_delta_file = fx.admin.ecds_contents();
    let (first_delta, _) = parts(&published_config(&fx));
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&victim.key));

    // A full publish: the file holds a bundle again, the new base.
    let late = fx.admin.create_key(TENANT, &[]);
    let full = publish_with(&fx, &["--full"]);
    assert!(full["delta"].is_null(), "{full}");
    let full_version = full["version"].as_u64().unwrap();
    assert!(!published_config(&fx).starts_with(MAGIC));
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&victim.key));
    fx.expect_allowed(|| fx.with_key(&late.key));

    // The first delta with the new base: bound to another base, refused.
    let wrong_base = with_config(&fx, &join(&first_delta, &published_config(&fx)));
    assert_rejected(&fx, &wrong_base, "applies to base version", full_version, &[&fx.key.key, &late.key]);
    fx.expect_denied(KEY_DISABLED, || fx.with_key(&victim.key));

    // A delta on the new base, then damaged in its delta part: refused.
    fx.admin.json(&["key", "enable", &victim.key_id]);
    let second = publish_with(&fx, &["--delta"]);
    let second_version = second["version"].as_u64().unwrap();
    assert_eq!(second["delta"]["base_version"].as_u64(), Some(full_version), "{second}");
    fx.expect_allowed(|| fx.with_key(&victim.key));
    let (delta, base) = parts(&published_config(&fx));
    let mut damaged = delta.clone();
    let at = damaged.len() - 20;
    damaged[at] ^= 1;
    let text = with_config(&fx, &join(&damaged, &base));
    assert_rejected(&fx, &text, "authentication failed", second_version, &[&fx.key.key, &late.key, &victim.key]);

    // The first delta file replayed as it was: older than the newest, a
    // rollback; the newest keeps serving (the victim enabled, `late` known).
    let log_from = fx.envoy.log_contents().len();
    let replay = first_delta_file.replace("\"name\": \"tokenhub_guard\"", "\"name\": \"tokenhub_guard_replayed\"");
    fx.envoy.publish_ecds_and_wait(&replay);
    let refused = log_lines_since(&fx.envoy, log_from, "rollback refused");
    assert!(
        refused.iter().any(|l| l.contains(&format!("version {}", first["version"].as_u64().unwrap()))),
        "no rollback refusal logged: {refused:#?}"
    );
    fx.expect_allowed(|| fx.with_key(&victim.key));
    fx.expect_allowed(|| fx.with_key(&late.key));
}
