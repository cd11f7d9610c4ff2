//! The audit log through the real binary: one line per operation and per
//! refusal, searchable, and `audit verify` names any line that was edited,
//! removed, inserted or moved (exit 5).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::Home;

/// A store with a dozen audited operations.
fn busy_home(name: &str) -> Home {
    let home = Home::new(name);
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["tenant", "add", "globex"]).ok();
    let (k1, _) = home.create_key(&["--tenant", "acme"]);
    home.create_key(&["--tenant", "globex"]);
    home.run(&["key", "rotate", &k1, "--grace", "1h"]).ok();
    home.run(&["key", "disable", "nosuchkey000"]).fails(3);
    home.run(&["ip", "allow", "--tenant", "acme", "203.0.113.0/24"]).ok();
    home.run(&["quota", "set", "--key", &k1, "--per-day", "100"]).ok();
    home.run(&["publish"]).ok();
    home
}

fn verify_problems(home: &Home) -> String {
    let run = home.run(&["audit", "verify"]).fails(5);
    run.stderr
}

#[test]
fn entries_have_metadata_and_a_chain() {
    let home = busy_home("audit-shape");
    let lines = home.audit_lines();
    assert_eq!(lines.len(), 10, "init + 9 operations, refusals included");
    for (i, e) in lines.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        for field in ["time", "actor", "via", "action", "outcome", "prev", "hash"] {
            assert!(e.get(field).is_some(), "line {} lacks {field}", i + 1);
        }
        if i > 0 {
            assert_eq!(e["prev"], lines[i - 1]["hash"]);
        }
    }
    let failed = lines.iter().find(|e| e["outcome"] == "error").unwrap();
    assert_eq!(failed["action"], "key.disable");
    assert_eq!(failed["target"]["key_id"], "nosuchkey000");
    let ok = home.run(&["audit", "verify"]).ok();
    assert!(ok.stdout.contains("intact: 10 entries"), "{}", ok.stdout);
}

#[test]
fn tail_and_search() {
    let home = busy_home("audit-search");
    let tail = home.run(&["--json", "audit", "tail", "-n", "2"]).ok().json();
    let actions: Vec<&str> = tail.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["quota.set", "publish"]);
    let search = |args: &[&str]| {
        let mut full = vec!["--json", "audit", "search"];
        full.extend_from_slice(args);
        home.run(&full).ok().json().as_array().unwrap().len()
    };
    assert_eq!(search(&[]), 10);
    assert_eq!(search(&["--tenant", "acme"]), 5, "tenant.add, key.create, key.rotate, ip.allow, quota.set");
    assert_eq!(search(&["--action", "key."]), 4);
    assert_eq!(search(&["--action", "key.create"]), 2);
    assert_eq!(search(&["--actor", "bootstrap"]), 10);
    assert_eq!(search(&["--actor", "mallory"]), 0);
    assert_eq!(search(&["--failures"]), 1);
    assert_eq!(search(&["--since", "1h"]), 10);
    assert_eq!(search(&["--until", "2020-01-01"]), 0);
    assert_eq!(search(&["--since", "2020-01-01T00:00:00Z", "--until", "2100-01-01"]), 10);
    home.run(&["audit", "search", "--since", "last tuesday"]).fails(2);
    let text = home.run(&["audit", "tail", "-n", "1"]).ok();
    assert!(text.stdout.contains("bootstrap@cli publish"), "{}", text.stdout);
}

#[test]
fn an_edited_line_is_named() {
    let home = busy_home("audit-edit");
    home.rewrite_audit(|l| l[3] = l[3].replace("\"bootstrap\"", "\"mallory\""));
    let problems = verify_problems(&home);
    assert!(problems.contains("line 4: entry 4 was altered"), "{problems}");
    assert!(!problems.contains("line 5"), "{problems}");
}

#[test]
fn an_edit_with_a_recomputed_plain_hash_is_still_caught() {
    // An attacker who edits the outcome and fixes the chain with SHA-256
    // still fails: the hashes are keyed MACs.
    use sha2::{Digest, Sha256};
    let home = busy_home("audit-rehash");
    home.rewrite_audit(|l| {
        let mut e: serde_json::Value = serde_json::from_str(&l[5]).unwrap();
        e["outcome"] = "ok".into();
        e["hash"] = "".into();
        let forged = format!("{:x}", Sha256::digest(serde_json::to_vec(&e).unwrap()));
        e["hash"] = forged.clone().into();
        l[5] = e.to_string();
        let mut next: serde_json::Value = serde_json::from_str(&l[6]).unwrap();
        next["prev"] = forged.into();
        l[6] = next.to_string();
    });
    let problems = verify_problems(&home);
    assert!(problems.contains("line 6") && problems.contains("line 7"), "{problems}");
}

#[test]
fn a_deleted_line_is_named() {
    let home = busy_home("audit-delete");
    home.rewrite_audit(|l| {
        l.remove(4);
    });
    let problems = verify_problems(&home);
    assert!(problems.contains("line 5: entry 6 does not follow entry 4"), "{problems}");
}

#[test]
fn an_inserted_line_is_named() {
    let home = busy_home("audit-insert");
    home.rewrite_audit(|l| {
        let copy = l[2].clone();
        l.insert(6, copy);
    });
    let problems = verify_problems(&home);
    assert!(problems.contains("line 7"), "{problems}");
}

#[test]
fn reordered_lines_are_named() {
    let home = busy_home("audit-reorder");
    home.rewrite_audit(|l| l.swap(2, 3));
    let problems = verify_problems(&home);
    assert!(problems.contains("line 3") && problems.contains("line 4"), "{problems}");
    assert!(!problems.contains("line 2:"), "{problems}");
}

#[test]
fn a_cut_end_or_a_missing_log_is_caught() {
    let home = busy_home("audit-truncate");
    home.rewrite_audit(|l| l.truncate(7));
    let problems = verify_problems(&home);
    assert!(problems.contains("line 8") && problems.contains("entry 10"), "{problems}");
    std::fs::remove_file(home.audit_log()).unwrap();
    let problems = verify_problems(&home);
    assert!(problems.contains("line 1"), "{problems}");
}

#[test]
fn the_log_is_private_and_append_only_across_runs() {
    use std::os::unix::fs::PermissionsExt;
    let home = busy_home("audit-mode");
    let mode = std::fs::metadata(home.audit_log()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = home.audit_text();
    home.run(&["tenant", "list"]).ok();
    assert_eq!(home.audit_text(), before, "reads are not audited");
    home.run(&["tenant", "add", "initech"]).ok();
    let after = home.audit_text();
    assert!(after.starts_with(&before), "earlier lines are never rewritten");
    assert_eq!(after.lines().count(), before.lines().count() + 1);
}
