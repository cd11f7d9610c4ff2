//! GDPR erasure through the CLI: `tenant erase` and `admin erase` remove
//! their subject from the store and the published bundle, and leave the
//! audit log verifiable with the subject's fields unreadable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::{enable_2fa, personal_data_fixture, Home};
use serde_json::Value;
use tokenhub_guard::admin::store::{load_master_key, Store, StorePaths};
use tokenhub_guard::core::bundle::{self, BundleKey};

/// The decrypted store, read by the admin's own code, as text.
fn store_text(home: &Home) -> String {
    serde_json::to_string(&store_doc(home)).unwrap()
}

fn store_doc(home: &Home) -> tokenhub_guard::admin::store::StoreDoc {
    let store = Store::new(StorePaths::new(home.home()), load_master_key(Some(&home.master_key_file())).unwrap());
    store.load().unwrap()
}

/// The published bundle, opened with the bundle key, as text.
fn bundle_text(home: &Home) -> String {
    let key = BundleKey::from_base64(&store_doc(home).bundle_key).unwrap();
    let sealed = tokenhub_guard::admin::ecds::GuardResource::read(&home.ecds_file()).unwrap().unwrap().sealed;
    let plain = bundle::open(&sealed, &key).unwrap();
    serde_json::to_string(&bundle::pack::unpack(&plain).unwrap()).unwrap()
}

#[test]
fn tenant_erase_leaves_nothing_readable_and_the_chain_verifiable() {
    let home = Home::new("erase");
    let keys = personal_data_fixture(&home, "annwhite", "sub-7391");
    let (acme_key, acme_secret, globex_key) = (keys.acme_id, keys.acme_key, keys.globex_id);
    let (_, root) = enable_2fa(&home, "root");
    let (_, ann) = enable_2fa(&home, "annwhite");
    home.run(&["--as", "annwhite", "--otp", &ann[0], "key", "disable", &acme_key]).ok();
    home.run(&["--as", "annwhite", "--otp", &ann[1], "tenant", "export", "acme"]).ok();
    home.run(&["--as", "root", "--otp", &root[0], "publish"]).ok();
    let before = home.audit_lines().len();
    assert!(bundle_text(&home).contains(&acme_key), "published before the erasure");

    // Refused: no or a wrong confirmation, a tenant admin, no 2FA code.
    home.run(&["--as", "root", "--otp", &root[1], "tenant", "erase", "acme"]).fails(2);
    home.run(&["--as", "root", "--otp", &root[1], "tenant", "erase", "acme", "--confirm", "acm"]).fails(2);
    home.run(&["--as", "annwhite", "--otp", &ann[2], "tenant", "erase", "acme", "--confirm", "acme"]).fails(4);
    home.run(&["--as", "root", "tenant", "erase", "acme", "--confirm", "acme"]).fails(4);
    assert!(store_text(&home).contains("annwhite"), "nothing erased by a refusal");

    let v = home
        .run(&["--json", "--as", "root", "--otp", &root[1], "tenant", "erase", "acme", "--confirm", "acme"])
        .ok()
        .json();
    assert_eq!(v["erased"], true);
    assert_eq!(v["removed"]["keys"], 1);
    assert_eq!(v["removed"]["admins"], 1);
    assert!(v["audit_lines_erased"].as_u64().unwrap() >= 8, "{v}");
    home.run(&["--as", "root", "--otp", &root[2], "publish"]).ok();
    // Again: nothing left in the store or the log; a name found nowhere.
    let again = home
        .run(&["--json", "--as", "root", "--otp", &root[3], "tenant", "erase", "acme", "--confirm", "acme"])
        .fails(3);
    assert!(again.stderr.contains("acme"), "{}", again.stderr);

    // The chain verifies; every line is still there, and one more per command.
    home.run(&["--as", "root", "audit", "verify"]).ok();
    let lines = home.audit_lines();
    assert!(lines.len() > before);
    let erased: Vec<&Value> = lines.iter().filter(|e| e.get("erased").is_some()).collect();
    assert_eq!(erased.len() as u64, v["audit_lines_erased"].as_u64().unwrap());
    assert!(erased.iter().all(|e| e["detail"].is_null()));
    let erase_line = lines.iter().find(|e| e["action"] == "tenant.erase" && e["outcome"] == "ok").unwrap();
    assert!(erase_line.get("target").is_none(), "the erase line names nobody: {erase_line}");

    // Nothing of acme anywhere: store (decrypted), bundle (opened), audit log.
    let secret_part = &acme_secret[16..48];
    let names = ["acme", "Acme Widgets", "research", "annwhite", &acme_key, "sub-7391", "203.0.113", "sk-acme-own"];
    for (place, text) in [("store", store_text(&home)), ("bundle", bundle_text(&home)), ("audit", home.audit_text())] {
        for name in names.iter().chain([&secret_part]) {
            assert!(!text.contains(name), "{name} still in the {place}");
        }
        if place != "audit" {
            assert!(text.contains(&globex_key) && text.contains("globex"), "{place} keeps globex");
        }
    }
    // Another tenant's lines stay readable.
    let globex = home.run(&["--json", "--as", "root", "audit", "search", "--tenant", "globex"]).ok().json();
    assert!(globex.as_array().unwrap().iter().any(|e| e["target"]["key_id"] == globex_key.as_str()));
    assert!(home.audit_text().contains("\"admin\":\"gus\""));
    home.run(&["--as", "annwhite", "tenant", "list"]).fails(4);

    // An erased line altered afterwards is caught.
    home.rewrite_audit(|lines| {
        let i = lines.iter().position(|l| l.contains("\"erased\"")).unwrap();
        lines[i] = lines[i].replacen("\"[erased]\"", "\"acme\"", 1);
    });
    let out = home.run(&["--as", "root", "audit", "verify"]);
    assert_ne!(out.status.code(), Some(0), "{}", out.stdout);
    assert!(out.stdout.contains("erased entry") || out.stderr.contains("erased entry"), "{}{}", out.stdout, out.stderr);
}

#[test]
fn admin_erase_removes_one_person() {
    let home = Home::new("erase-admin");
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["admin", "add", "root", "--role", "platform"]).ok();
    home.run(&["admin", "add", "bobsmith", "--role", "platform"]).ok();
    let (_, root) = enable_2fa(&home, "root");
    let (_, bob) = enable_2fa(&home, "bobsmith");
    home.run(&["--as", "bobsmith", "--otp", &bob[0], "tenant", "disable", "acme"]).ok();
    home.run(&["--as", "root", "--otp", &root[0], "admin", "erase", "root", "--confirm", "root"]).fails(2);
    home.run(&["--as", "root", "--otp", &root[1], "admin", "erase", "bobsmith", "--confirm", "bobsmith"]).ok();
    home.run(&["--as", "root", "audit", "verify"]).ok();
    home.run(&["--as", "root", "--otp", &root[2], "admin", "erase", "bobsmith", "--confirm", "bobsmith"]).fails(3);
    assert!(!home.audit_text().contains("bobsmith"));
    assert!(!store_text(&home).contains("bobsmith"));
    // The tenant's lines stay, with the erased admin's name gone.
    let acme = home.run(&["--json", "--as", "root", "audit", "search", "--tenant", "acme"]).ok().json();
    assert!(acme.as_array().unwrap().iter().any(|e| e["action"] == "tenant.disable" && e["actor"] == "[erased]"));
}

/// An access-log line `days` days old.
fn access_line(days: u64, ip: &str, tenant: &str) -> String {
    let t = tokenhub_guard::admin::audit::rfc3339(admin_support::now() - days * 86_400 - 60);
    format!(
        r#"{{"start_time":"{}.250Z","method":"POST","path":"/v1/chat/completions","status":"200","client":"{ip}","tenant":"{tenant}","key_id":"k1"}}"#,
        t.trim_end_matches('Z')
    )
}

#[test]
fn logs_prune_drops_old_lines_cuts_old_addresses_and_refuses_a_live_log() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new("prune");
    let log = home.dir.join("access.log.1");
    let lines = [
        access_line(0, "203.0.113.77", "acme"),
        access_line(10, "2001:db8:abcd:12::1", "acme"),
        access_line(45, "198.51.100.9", "globex"),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();

    // `usage` reads it as pruned: the 45-day-old line is not counted.
    let usage = home.run(&["--json", "usage", "--access-log", log.to_str().unwrap()]).ok().json();
    let text = usage.to_string();
    assert!(!text.contains("globex") && !text.contains("198.51.100"), "{text}");
    assert!(text.contains("2001:db8:abcd::") && text.contains("203.0.113.77"), "{text}");

    // A process holding the file open: refused, the file untouched.
    let mut holder = std::process::Command::new("sh")
        .args(["-c", "exec 3>>\"$0\"; echo open; exec sleep 30", log.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut first).unwrap();
    let refused = home.run(&["logs", "prune", "--access-log", log.to_str().unwrap()]).fails(2);
    assert!(refused.stderr.contains("rotate it first"), "{}", refused.stderr);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), lines.join("\n") + "\n");

    let out = home
        .run(&["--json", "logs", "prune", "--access-log", log.to_str().unwrap(), "--retain-days", "30"])
        .ok()
        .json();
    assert_eq!(out["files"][0]["stats"]["dropped"], 1, "{out}");
    assert_eq!(out["files"][0]["stats"]["truncated"], 1, "{out}");
    let pruned = std::fs::read_to_string(&log).unwrap();
    assert_eq!(pruned.lines().count(), 2);
    assert_eq!(pruned.lines().next().unwrap(), lines[0], "a young line is kept byte for byte");
    assert!(pruned.contains(r#""client":"2001:db8:abcd::""#) && !pruned.contains("12::1"), "{pruned}");
    assert!(!pruned.contains("198.51.100") && !pruned.contains("globex"));
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o640, "mode kept");
    // At once (0 days): every address cut.
    home.run(&["logs", "prune", "--access-log", log.to_str().unwrap(), "--truncate-ips-after-days", "0"]).ok();
    assert!(std::fs::read_to_string(&log).unwrap().contains(r#""client":"203.0.113.0""#));
    // An erased tenant's lines, whatever their age.
    home.run(&["logs", "prune", "--access-log", log.to_str().unwrap(), "--drop-tenant", "acme"]).ok();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
}

/// `tenant log-retention`: a tenant's own days override the platform's in
/// `logs prune` and `usage`; `tenant erase --access-log` drops its lines
/// from rotated logs, and says which it could not prune and why.
#[test]
fn a_tenant_s_own_retention_applies_to_prune_usage_and_erase() {
    let home = Home::new("tenant-retention");
    for t in ["acme", "globex", "initech"] {
        home.run(&["tenant", "add", t]).ok();
    }
    home.run(&["tenant", "log-retention", "acme", "--retain-days", "5", "--truncate-at-write"]).ok();
    let set = home.run(&["--json", "tenant", "log-retention", "globex", "--retain-days", "60"]).ok().json();
    assert_eq!(set["log_retention"], serde_json::json!({"retain_days": 60}), "{set}");
    home.run(&["tenant", "log-retention", "initech", "--retain-days", "0"]).fails(2);
    let shown = home.run(&["--json", "tenant", "show", "acme"]).ok().json();
    assert_eq!(shown["log_retention"]["truncate_ips_after_days"], 0, "{shown}");

    let log = home.dir.join("access.log.1");
    let lines = [
        access_line(0, "203.0.113.77", "acme"),
        access_line(10, "203.0.113.78", "acme"),
        access_line(45, "198.51.100.9", "globex"),
        access_line(45, "192.0.2.10", "initech"),
        access_line(1, "192.0.2.11", "initech"),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let usage = home.run(&["--json", "usage", "--access-log", log.to_str().unwrap()]).ok().json();
    let requests = |tenant: &str| -> u64 {
        usage["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["tenant"] == tenant)
            .map(|r| r["requests"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((requests("acme"), requests("globex"), requests("initech")), (1, 1, 1), "{usage}");
    let text = usage.to_string();
    assert!(text.contains("203.0.113.0") && !text.contains("203.0.113.77"), "acme's cut at once: {text}");
    assert!(text.contains("198.51.100.0") && text.contains("192.0.2.11"), "{text}");

    let out = home.run(&["--json", "logs", "prune", "--access-log", log.to_str().unwrap()]).ok().json();
    assert_eq!(out["files"][0]["stats"]["dropped"], 2, "acme's 10-day and initech's 45-day lines: {out}");
    assert_eq!(out["files"][0]["stats"]["truncated"], 2, "acme's fresh line and globex's: {out}");
    assert_eq!(out["tenant_rules"]["acme"]["retain_days"], 5, "{out}");
    let pruned = std::fs::read_to_string(&log).unwrap();
    assert!(pruned.contains("198.51.100.0") && !pruned.contains("203.0.113.77"), "{pruned}");
    // Without the store's rules: the platform's alone (acme's line is young).
    let plain = home.dir.join("access.log.2");
    std::fs::write(&plain, access_line(10, "203.0.113.78", "acme") + "\n").unwrap();
    home.run(&["logs", "prune", "--access-log", plain.to_str().unwrap(), "--ignore-tenant-rules"]).ok();
    assert!(std::fs::read_to_string(&plain).unwrap().contains("acme"));

    // Erase with the managed logs: the pruned file loses globex's lines; a
    // missing one is named with the fix, and the erasure stands.
    let missing = home.dir.join("gone.log");
    let erased = home.run(&[
        "--json",
        "tenant",
        "erase",
        "globex",
        "--confirm",
        "globex",
        "--access-log",
        log.to_str().unwrap(),
        "--access-log",
        missing.to_str().unwrap(),
    ]);
    let erased = erased.ok();
    assert!(erased.stderr.contains("gone.log") && erased.stderr.contains("--drop-tenant globex"), "{}", erased.stderr);
    let v = erased.json();
    assert_eq!(v["access_logs"][0]["lines_dropped"], 1, "{v}");
    assert!(v["access_logs"][1]["error"].is_string(), "{v}");
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(!after.contains("globex") && after.contains("initech"), "{after}");
    // Without --access-log, the reply says where the lines still are.
    let bare = home.run(&["tenant", "erase", "initech", "--confirm", "initech"]).ok();
    assert!(bare.stderr.contains("--drop-tenant initech"), "{}", bare.stderr);
}
