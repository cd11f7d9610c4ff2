//! Issue 16's admin-side findings, each as an attack that must fail: an
//! identity mapping taken over from another tenant, foreign ids probed,
//! rolled-back stores and cut audit logs, and the admin API flooded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::Home;
use serde_json::Value;

/// A store without 2FA yet (named admins act without codes): a platform
/// admin `root`, tenant admins `ann` (acme) and `gil` (globex).
fn two_tenants(name: &str) -> Home {
    let home = Home::new(name);
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["tenant", "add", "globex"]).ok();
    home.run(&["admin", "add", "root", "--role", "platform"]).ok();
    home.run(&["admin", "add", "ann", "--role", "tenant", "--tenant", "acme"]).ok();
    home.run(&["admin", "add", "gil", "--role", "tenant", "--tenant", "globex"]).ok();
    home
}

fn map_args<'a>(who: &'a str, tenant: &'a str) -> Vec<&'a str> {
    vec![
        "--as",
        who,
        "oidc",
        "map",
        "--issuer",
        "https://accounts.google.com",
        "--claim",
        "email",
        "--value",
        "cfo@corp.example",
        "--tenant",
        tenant,
    ]
}

fn mapped_tenant(home: &Home) -> Vec<String> {
    let list = home.run(&["--json", "--as", "root", "oidc", "list"]).ok().json();
    list.as_array().unwrap().iter().map(|o| o["tenant"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_tenant_admin_cannot_take_over_another_tenants_identity_mapping() {
    let home = two_tenants("oidc-takeover");
    home.run(&map_args("gil", "globex")).ok();
    // ann (acme) maps globex's identity to acme: refused, nothing moves.
    let refused = home.run(&map_args("ann", "acme")).fails(4);
    assert!(refused.stderr.contains("another tenant"), "{}", refused.stderr);
    assert!(!refused.stderr.contains("globex"), "the refusal must not name the owner: {}", refused.stderr);
    assert_eq!(mapped_tenant(&home), ["globex"]);
    // globex's admin sees the attempt in its own audit view.
    let seen = home.run(&["--json", "--as", "gil", "audit", "search", "--action", "oidc.map"]).ok().json();
    let denied: Vec<&Value> = seen.as_array().unwrap().iter().filter(|e| e["outcome"] == "denied").collect();
    assert_eq!(denied.len(), 1, "{seen}");
    assert_eq!(denied[0]["actor"], "ann");
    // A platform admin may move it; both tenants' views show the move.
    home.run(&map_args("root", "acme")).ok();
    assert_eq!(mapped_tenant(&home), ["acme"]);
    for (who, tenant) in [("gil", "globex"), ("ann", "acme")] {
        let seen = home.run(&["--json", "--as", who, "audit", "search", "--action", "oidc.map"]).ok().json();
        let moved = seen
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "root" && e["outcome"] == "ok" && e["target"]["tenant"] == tenant);
        assert!(moved, "{who} does not see the move: {seen}");
    }
    home.run(&["--as", "root", "audit", "verify"]).ok();
}

#[test]
fn a_foreign_key_id_looks_missing_and_status_is_the_tenants_own() {
    let home = two_tenants("foreign-ids");
    let (theirs, _) = home.create_key(&["--tenant", "globex"]);
    home.create_key(&["--tenant", "globex"]);
    let (mine, _) = home.create_key(&["--tenant", "acme"]);
    let missing = "AAAAAAAAAAAA";
    let as_ann = |args: &[&str]| {
        let mut full = vec!["--as", "ann"];
        full.extend_from_slice(args);
        home.run(&full)
    };
    for verb in [
        vec!["key", "disable"],
        vec!["key", "rotate"],
        vec!["key", "delete"],
        vec!["key", "show"],
        vec!["incident", "revoke"],
        vec!["quota", "show", "--key"],
        vec!["ip", "list", "--key"],
    ] {
        let probe = |id: &str| {
            let mut args = verb.clone();
            args.push(id);
            let run = as_ann(&args).fails(3);
            run.stderr.replace(id, "<id>")
        };
        let (foreign, absent) = (probe(&theirs), probe(missing));
        assert_eq!(foreign, absent, "{verb:?}: a foreign id must answer exactly like a missing one");
        assert!(!foreign.contains("globex"), "{verb:?}: {foreign}");
    }
    // The key is untouched, and ann's own audit view does not name its tenant.
    let shown = home.run(&["--json", "--as", "root", "key", "show", &theirs]).ok().json();
    assert_eq!(shown["status"], "active");
    let seen = home.run(&["--json", "--as", "ann", "audit", "search"]).ok().json();
    assert!(!seen.to_string().contains("globex"), "{seen}");
    // globex's admin sees the probes on its key.
    let probes = home.run(&["--json", "--as", "gil", "audit", "search", "--key", &theirs]).ok().json();
    assert!(probes.as_array().unwrap().iter().any(|e| e["actor"] == "ann" && e["outcome"] == "denied"), "{probes}");
    // Status: ann counts her tenant only; root counts everything.
    let status = as_ann(&["--json", "status"]).ok().json();
    assert_eq!(
        (status["tenants"].as_u64(), status["keys"].as_u64(), status["admins"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    let status = home.run(&["--json", "--as", "root", "status"]).ok().json();
    assert_eq!(
        (status["tenants"].as_u64(), status["keys"].as_u64(), status["admins"].as_u64()),
        (Some(2), Some(3), Some(3))
    );
    // Her own key still works for her.
    as_ann(&["key", "disable", &mine]).ok();
}

/// Issue 16 #11: the master key is never created beside the store it opens.
#[test]
fn init_keeps_the_master_key_out_of_the_stores_directory() {
    let dir = std::env::temp_dir().join(format!("thg-keyplace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let home = dir.join("home");
    let run = |env: &[(&str, &std::path::Path)]| {
        let mut c = std::process::Command::new(admin_support::BIN);
        c.args(["init"]).env("TOKENHUB_HOME", &home);
        for v in ["TOKENHUB_MASTER_KEY", "TOKENHUB_MASTER_KEY_FILE", "TOKENHUB_ADMIN", "TOKENHUB_OTP"] {
            c.env_remove(v);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // Nothing said: refused, with where and why.
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("TOKENHUB_MASTER_KEY_FILE") && err.contains("outside"), "{err}");
    assert!(!home.join("master.key").exists() && !home.join("store.enc").exists());
    // Inside the store's directory: refused.
    let out = run(&[("TOKENHUB_MASTER_KEY_FILE", &home.join("master.key"))]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("inside the store's directory"), "{err}");
    assert!(!home.join("master.key").exists());
    // Outside: created 0600, and later commands find it only when told.
    let key = dir.join("keys").join("master.key");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    let out = run(&[("TOKENHUB_MASTER_KEY_FILE", &key)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(!home.join("master.key").exists());
    let out = std::process::Command::new(admin_support::BIN)
        .args(["tenant", "list"])
        .env("TOKENHUB_HOME", &home)
        .env_remove("TOKENHUB_MASTER_KEY")
        .env_remove("TOKENHUB_MASTER_KEY_FILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("no master key"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
