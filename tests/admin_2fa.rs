//! Admin accounts and 2FA through the real binary: bootstrap, enrollment,
//! codes on every change once 2FA is on, replay, recovery codes, lockout,
//! least privilege for tenant admins, and an audit log that records every
//! refusal but never a secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::{enable_2fa, totp, Home};

/// The store as an operator sets it up: bootstrap, a platform admin with
/// 2FA, and two tenants.
fn secured_home(name: &str) -> (Home, String, Vec<String>) {
    let home = Home::new(name);
    // Bootstrap: no admin yet, so acting without --as is allowed.
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["tenant", "add", "globex"]).ok();
    home.run(&["admin", "add", "ann", "--role", "tenant"]).fails(2);
    // The first admin must be a platform admin.
    home.run(&["admin", "add", "ann", "--role", "tenant", "--tenant", "acme"]).fails(2);
    home.run(&["admin", "add", "root", "--role", "platform"]).ok();
    home.run(&["admin", "add", "ann", "--role", "tenant", "--tenant", "acme"]).ok();
    let (secret, recovery) = enable_2fa(&home, "root");
    (home, secret, recovery)
}

#[test]
fn bootstrap_then_2fa_is_required_for_every_change() {
    let (home, secret, recovery) = secured_home("2fa-required");
    // Nobody acts anonymously any more, not even to read.
    let refused = home.run(&["tenant", "add", "initech"]).fails(4);
    assert!(refused.stderr.contains("--as"), "{}", refused.stderr);
    home.run(&["tenant", "list"]).fails(4);
    // Naming an admin is not enough for a change: a code is needed.
    let refused = home.run(&["--as", "root", "tenant", "add", "initech"]).fails(4);
    assert!(refused.stderr.contains("2FA code is required"), "{}", refused.stderr);
    // Reads need no code.
    home.run(&["--as", "root", "tenant", "list"]).ok();
    // A wrong code is refused; the next step's code works (±1 step window).
    home.run(&["--as", "root", "--otp", "000000", "tenant", "add", "initech"]).fails(4);
    let code = totp(&secret, 1);
    home.run(&["--as", "root", "--otp", &code, "tenant", "add", "initech"]).ok();
    // The same code again is a replay.
    let replay = home.run(&["--as", "root", "--otp", &code, "tenant", "add", "hooli"]).fails(4);
    assert!(replay.stderr.contains("already used"), "{}", replay.stderr);
    // A code two steps ahead is outside the window.
    home.run(&["--as", "root", "--otp", &totp(&secret, 3), "tenant", "add", "hooli"]).fails(4);
    // Recovery codes work where a TOTP does, once each, from every source.
    home.run(&["--as", "root", "--otp", &recovery[0], "tenant", "add", "hooli"]).ok();
    home.run(&["--as", "root", "--otp", &recovery[0], "tenant", "add", "umbrella"]).fails(4);
    home.run_with(&["--as", "root", "tenant", "add", "umbrella"], &[("TOKENHUB_OTP", &recovery[1])], None).ok();
    home.run_with(&["tenant", "add", "vehement"], &[("TOKENHUB_ADMIN", "root"), ("TOKENHUB_OTP", &recovery[2])], None)
        .ok();
    // --otp-stdin: the first line is the code, the rest stays for the provider secret.
    let stdin = format!("{}\nsk-provider-secret-0123456789\n", recovery[3]);
    home.run_with(
        &["--as", "root", "--otp-stdin", "provider", "set", "openai", "--path-prefix", "/v1/"],
        &[],
        Some(&stdin),
    )
    .ok();
    let providers = home.run(&["--json", "--as", "root", "provider", "list"]).ok().json();
    assert_eq!(providers[0]["has_default_secret"], true);
    let status = home.run(&["--json", "--as", "root", "2fa", "status"]).ok().json();
    assert_eq!(status["two_factor"]["recovery_codes_left"], 6);
    // Regenerating replaces the set.
    let fresh = home.run(&["--json", "--as", "root", "--otp", &recovery[4], "2fa", "recovery-codes"]).ok().json();
    let fresh: Vec<String> =
        fresh["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
    home.run(&["--as", "root", "--otp", &recovery[5], "tenant", "add", "soylent"]).fails(4);
    home.run(&["--as", "root", "--otp", &fresh[0], "tenant", "add", "soylent"]).ok();
    home.run(&["--as", "root", "audit", "verify"]).ok();
}

#[test]
fn tenant_admins_only_touch_their_tenant() {
    let (home, _, root_codes) = secured_home("least-privilege");
    // ann has no 2FA yet: she may read and enroll, not change anything.
    home.run(&["--as", "ann", "key", "create", "--tenant", "acme"]).fails(4);
    let (_, ann_codes) = enable_2fa(&home, "ann");
    let otp = |i: usize| ann_codes[i].clone();
    let mine = home.run(&["--json", "--as", "ann", "--otp", &otp(0), "key", "create", "--tenant", "acme"]).ok().json();
    let key_id = mine["key_id"].as_str().unwrap().to_string();
    // Another tenant, a tenant-level quota, a new tenant, a provider, an admin: refused.
    for (i, args) in [
        vec!["key", "create", "--tenant", "globex"],
        vec!["quota", "set", "--tenant", "acme", "--per-minute", "10"],
        vec!["tenant", "add", "evil"],
        vec!["admin", "add", "eve", "--role", "platform"],
        vec!["2fa", "reset", "root"],
    ]
    .iter()
    .enumerate()
    {
        // Each refusal spends a code: the code was good, the role was not.
        let mut full = vec!["--as", "ann", "--otp", &ann_codes[1 + i]];
        full.extend(args.iter().copied());
        let refused = home.run(&full).fails(4);
        assert!(refused.stderr.contains("may"), "{args:?}: {}", refused.stderr);
    }
    // Within the tenant: quotas and allowlists on her sub-accounts and keys.
    home.run(&["--as", "ann", "--otp", &otp(6), "quota", "set", "--key", &key_id, "--per-minute", "5"]).ok();
    home.run(&[
        "--as",
        "ann",
        "--otp",
        &otp(7),
        "ip",
        "allow",
        "--tenant",
        "acme",
        "--sub-account",
        "default",
        "10.0.0.0/8",
    ])
    .ok();
    // She sees only her tenant.
    let tenants = home.run(&["--json", "--as", "ann", "tenant", "list"]).ok().json();
    assert_eq!(tenants.as_array().unwrap().len(), 1);
    assert_eq!(tenants[0]["id"], "acme");
    home.run(&["--as", "ann", "tenant", "show", "globex"]).fails(4);
    let root_key = home
        .run(&["--json", "--as", "root", "--otp", &root_codes[0], "key", "create", "--tenant", "globex"])
        .ok()
        .json();
    home.run(&["--as", "ann", "key", "show", root_key["key_id"].as_str().unwrap()]).fails(3);
    assert_eq!(home.run(&["--json", "--as", "ann", "key", "list"]).ok().json().as_array().unwrap().len(), 1);
    // The refusals are audited as denied, with the actor named.
    let denied: Vec<_> =
        home.audit_lines().into_iter().filter(|e| e["outcome"] == "denied" && e["actor"] == "ann").collect();
    assert_eq!(denied.len(), 5, "{denied:?}");
    // A tenant admin's audit view is its tenant's.
    let seen = home.run(&["--json", "--as", "ann", "audit", "search"]).ok().json();
    assert!(seen.as_array().unwrap().iter().all(|e| e["target"]["tenant"] == "acme" || e["actor"] == "ann"));
}

#[test]
fn repeated_failures_lock_the_account_and_are_audited() {
    let (home, _, recovery) = secured_home("lockout");
    for i in 1..=5 {
        let r = home.run(&["--as", "root", "--otp", "123456", "tenant", "add", "x"]).fails(4);
        if i == 5 {
            assert!(r.stderr.contains("locked until"), "{}", r.stderr);
        }
    }
    // Locked: even a valid recovery code is refused (and not consumed).
    let r = home.run(&["--as", "root", "--otp", &recovery[0], "tenant", "add", "x"]).fails(4);
    assert!(r.stderr.contains("locked"), "{}", r.stderr);
    let status = home.run(&["--json", "--as", "root", "2fa", "status"]).ok().json();
    assert!(status["two_factor"]["locked_until"].as_u64().is_some());
    assert_eq!(status["two_factor"]["recovery_codes_left"], 10);
    let failures =
        home.run(&["--json", "--as", "root", "audit", "search", "--failures", "--actor", "root"]).ok().json();
    let outcomes: Vec<&str> = failures.as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["auth_failed", "auth_failed", "auth_failed", "auth_failed", "locked", "locked"]);
    // Acting anonymously instead does not help.
    home.run(&["admin", "add", "root2", "--role", "platform"]).fails(4);
}

#[test]
fn the_audit_log_never_holds_a_secret() {
    let (home, secret, recovery) = secured_home("no-secrets");
    let code = totp(&secret, 1);
    let provider_secret = "sk-live-0123456789abcdefSECRET";
    home.run_with(
        &["--as", "root", "--otp", &code, "provider", "set", "openai", "--path-prefix", "/v1/"],
        &[],
        Some(provider_secret),
    )
    .ok();
    let key =
        home.run(&["--json", "--as", "root", "--otp", &recovery[0], "key", "create", "--tenant", "acme"]).ok().json();
    let key_id = key["key_id"].as_str().unwrap();
    let rotated = home
        .run(&["--json", "--as", "root", "--otp", &recovery[1], "key", "rotate", key_id, "--grace", "1h"])
        .ok()
        .json();
    let token =
        home.run(&["--json", "--as", "root", "--otp", &recovery[2], "admin", "token", "create", "root"]).ok().json();
    let ann = home.run(&["--json", "--as", "ann", "2fa", "enroll"]).ok().json();
    home.run(&["--as", "root", "--otp", "999999", "tenant", "add", "x"]).fails(4);
    home.run(&["--as", "root", "--otp", &recovery[3], "bundle-key", "--out", home.dir.join("bk").to_str().unwrap()])
        .ok();
    let bundle_key = std::fs::read_to_string(home.dir.join("bk")).unwrap();
    let log = home.audit_text();
    let mut secrets: Vec<String> = vec![
        secret.clone(),
        provider_secret.into(),
        key["key"].as_str().unwrap().into(),
        rotated["key"].as_str().unwrap().into(),
        token["token"].as_str().unwrap().into(),
        ann["secret"].as_str().unwrap().into(),
        bundle_key.trim().into(),
        // Codes as JSON strings (a bare 6-digit run could occur inside a hash).
        format!("\"{code}\""),
        "\"999999\"".into(),
    ];
    secrets.extend(recovery.iter().cloned());
    secrets.extend(recovery.iter().map(|c| c.replace('-', "")));
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the audit log contains a secret: {s}");
    }
    // …while it does record who did what to which ids.
    let lines = home.audit_lines();
    assert!(lines
        .iter()
        .any(|e| e["action"] == "key.rotate" && e["target"]["key_id"] == key_id && e["actor"] == "root"));
    assert!(lines.iter().any(|e| e["action"] == "admin.token.create" && e["target"]["token_id"] == token["token_id"]));
    assert!(lines.iter().any(|e| e["outcome"] == "auth_failed" && e["action"] == "tenant.add"));
    // And the master key never leaves its file.
    let master = std::fs::read_to_string(home.master_key_file()).unwrap();
    assert!(!log.contains(master.trim()));
    let store = std::fs::read_to_string(home.home().join("store.enc")).unwrap();
    for s in &secrets[..7] {
        assert!(!store.contains(s.as_str()), "the store file holds a secret in clear");
    }
}

#[test]
fn enrollment_writes_a_private_png_and_needs_a_code_from_the_new_secret() {
    let home = Home::new("enroll");
    home.run(&["admin", "add", "root", "--role", "platform"]).ok();
    home.run(&["--as", "root", "2fa", "verify", "--otp", "123456"]).fails(4);
    let png = home.dir.join("root.png");
    let v = home.run(&["--json", "--as", "root", "2fa", "enroll", "--png", png.to_str().unwrap()]).ok().json();
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&png).unwrap().permissions().mode() & 0o777, 0o600);
    // The text output draws the QR code for a terminal.
    let text = home.run(&["--as", "root", "2fa", "enroll"]).ok();
    assert!(text.stdout.contains('█') && text.stdout.contains("otpauth://totp/TokenHub:root?secret="));
    // The first enrollment's secret was replaced by the second.
    let old = v["secret"].as_str().unwrap();
    home.run(&["--as", "root", "--otp", &totp(old, 0), "2fa", "verify"]).fails(4);
    // Until verified, the store is not secured.
    home.run(&["tenant", "add", "acme"]).ok();
    // `2fa enroll` needs someone to enroll.
    home.run(&["2fa", "enroll"]).fails(2);
}

#[test]
fn unattended_sync_republishes_without_an_admin_once_2fa_is_on() {
    let (home, _secret, _recovery) = secured_home("2fa-sync");
    // A container restart: no admin, no code; only the master key.
    home.run(&["publish"]).fails(4);
    let key_out = home.home().join("bundle.key.out");
    let out = home.run(&["--json", "sync", "--bundle-key-out", key_out.to_str().unwrap()]).ok().json();
    assert!(out["version"].as_u64().unwrap() > 0, "{out}");
    assert!(home.ecds_file().is_file());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_out).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Audited as the system, never with the key.
    let text = home.audit_text();
    assert!(text.contains("\"system.sync\""), "{text}");
    assert!(!text.contains(std::fs::read_to_string(&key_out).unwrap().trim()));
    // It changed no policy: a change still needs an admin and a code.
    home.run(&["tenant", "add", "initech"]).fails(4);
    home.run(&["--as", "root", "audit", "verify"]).ok();
}
