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
    let dir = admin_support::fresh_dir("keyplace");
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

/// Issue 16 #4: an older store.enc put back (one revision is enough) is
/// refused everywhere, including the unattended republish; so is a log cut
/// by more than its last commit. The documented recoveries work.
#[test]
fn a_rolled_back_store_is_refused_and_cannot_be_republished() {
    let home = Home::new("rollback-store");
    home.run(&["tenant", "add", "acme"]).ok();
    let (key_id, _) = home.create_key(&["--tenant", "acme"]);
    home.run(&["publish"]).ok();
    let store = home.home().join("store.enc");
    let before_revoke = std::fs::read(&store).unwrap();
    // The incident response: one commit disables the key and publishes.
    home.run(&["incident", "revoke", &key_id]).ok();
    let newest = std::fs::read(&store).unwrap();
    let published = std::fs::read(home.ecds_file()).unwrap();
    let log_before = home.audit_text();
    // Someone with write access (no master key) puts the old store back.
    std::fs::write(&store, &before_revoke).unwrap();
    for args in
        [vec!["key", "list"], vec!["key", "enable", key_id.as_str()], vec!["sync"], vec!["publish"], vec!["status"]]
    {
        let run = home.run(&args).fails(5);
        assert!(run.stderr.contains("older than the audit log"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("audit rebind") && run.stderr.contains("newest store.enc"), "{}", run.stderr);
    }
    let verify = home.run(&["audit", "verify"]).fails(5);
    assert!(verify.stderr.contains("older"), "{}", verify.stderr);
    // A refused identification is not audited onto a log that is not the
    // store's (that would bind them again silently).
    home.run(&["--as", "nobody", "audit", "verify"]).fails(5);
    assert_eq!(std::fs::read(home.ecds_file()).unwrap(), published, "nothing republished");
    assert_eq!(home.audit_text(), log_before, "nothing appended");
    // Recovery 1: the newest store back: everything works again.
    std::fs::write(&store, &newest).unwrap();
    home.run(&["audit", "verify"]).ok();
    let key = home.run(&["--json", "key", "show", &key_id]).ok().json();
    assert_eq!(key["status"], "disabled");
    // Recovery 2: a deliberate restore, recorded in the log.
    std::fs::write(&store, &before_revoke).unwrap();
    let rebind = home.run(&["audit", "rebind"]).ok();
    assert!(rebind.stdout.contains("older store.enc"), "{}", rebind.stdout);
    home.run(&["audit", "verify"]).ok();
    home.run(&["audit", "rebind"]).fails(2);
    let last: Value = serde_json::from_str(home.audit_text().lines().last().unwrap()).unwrap();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("audit.rebind"), Some("system")));
    home.run(&["sync"]).ok();
}

#[test]
fn a_cut_audit_log_is_refused_and_the_last_commit_is_restored() {
    let home = Home::new("rollback-log");
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["tenant", "add", "globex"]).ok();
    home.run(&["tenant", "add", "initech"]).ok();
    let full = home.audit_text();
    // The last commit's line missing (as after a crash between the store's
    // commit and the append): the next command appends it again, unchanged.
    home.rewrite_audit(|l| {
        l.pop();
    });
    home.run(&["tenant", "list"]).ok();
    home.run(&["audit", "verify"]).ok();
    assert_eq!(home.audit_text(), full);
    // More than that cut: refused, by reads, changes and verify alike.
    home.rewrite_audit(|l| l.truncate(l.len() - 2));
    for args in [vec!["tenant", "list"], vec!["tenant", "add", "hooli"], vec!["sync"]] {
        let run = home.run(&args).fails(5);
        assert!(run.stderr.contains("cut from the end"), "{args:?}: {}", run.stderr);
    }
    home.run(&["audit", "verify"]).fails(5);
    // Recovery: the full log back, or a recorded rebind.
    std::fs::write(home.audit_log(), &full).unwrap();
    home.run(&["tenant", "list"]).ok();
    home.rewrite_audit(|l| l.truncate(l.len() - 2));
    let rebind = home.run(&["audit", "rebind"]).ok();
    assert!(rebind.stdout.contains("cut"), "{}", rebind.stdout);
    home.run(&["audit", "verify"]).ok();
    home.run(&["tenant", "add", "hooli"]).ok();
}

/// Reads run without the store lock: a commit landing between a read's
/// load of the store and its look at the log must not look like a
/// rollback (found by `make test-api`).
#[test]
fn reads_racing_commits_never_see_a_false_rollback() {
    let home = Home::new("read-race");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    home.run(&["tenant", "list"]).ok();
                }
            });
        }
        for i in 0..25 {
            home.run(&["tenant", "add", &format!("t{i}")]).ok();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    home.run(&["audit", "verify"]).ok();
}

/// Reads authorised by the session: another tenant's identity mapping is
/// "not found" to `oidc unmap` (never probed, never removed), and `usage
/// --tenant` of another tenant is refused while its own is read.
#[test]
fn unmap_and_usage_see_only_the_admins_own_tenant() {
    let home = two_tenants("read-scope");
    home.run(&map_args("gil", "globex")).ok();
    let unmap = |who: &str| {
        let args = map_args(who, "x");
        let mut args: Vec<&str> = args[..args.len() - 2].to_vec();
        args[3] = "unmap";
        home.run(&args)
    };
    let probe = unmap("ann").fails(3);
    assert!(!probe.stderr.contains("globex"), "{}", probe.stderr);
    assert_eq!(mapped_tenant(&home), ["globex"]);
    unmap("gil").ok();
    assert!(mapped_tenant(&home).is_empty());

    let log = home.dir.join("access.log");
    std::fs::write(&log, "").unwrap();
    let path = log.to_str().unwrap();
    let refused = home.run(&["--as", "ann", "usage", "--access-log", path, "--tenant", "globex"]).fails(4);
    assert!(refused.stderr.contains("acme"), "{}", refused.stderr);
    home.run(&["--as", "ann", "usage", "--access-log", path, "--tenant", "acme"]).ok();
    home.run(&["--as", "ann", "usage", "--access-log", path]).ok();
    home.run(&["--as", "root", "usage", "--access-log", path, "--tenant", "globex"]).ok();
}
