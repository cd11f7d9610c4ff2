//! The CLI as scripts and operators use it: `--json` everywhere, exit codes
//! that mean something, help that teaches, quotas, the incident response,
//! and secrets that never reach argv, output or error messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admin_support;

use admin_support::{personal_data_fixture, Home};
use serde_json::Value;
use tokenhub_guard::core::bundle::{self, BundleKey};
use tokenhub_testkit::providers::ANTHROPIC_ARGS;

/// The policy inside the published ECDS file, opened with the bundle key
/// exactly as the filter does.
fn published_policy(home: &Home) -> Value {
    let key_file = home.dir.join("bundle.key");
    home.run(&["bundle-key", "--out", key_file.to_str().unwrap()]).ok();
    let key = BundleKey::from_base64(std::fs::read_to_string(&key_file).unwrap().trim()).unwrap();
    let sealed = tokenhub_guard::admin::ecds::GuardResource::read(&home.ecds_file()).unwrap().unwrap().sealed;
    let plain = bundle::open(&sealed, &key).unwrap();
    serde_json::to_value(bundle::pack::unpack(&plain).unwrap()).unwrap()
}

#[test]
fn every_command_speaks_json() {
    let home = Home::new("json");
    let cidr_file = home.dir.join("secret");
    std::fs::write(&cidr_file, "sk-test-secret").unwrap();
    home.run(&["tenant", "add", "acme"]).ok();
    let (key_id, _) = home.create_key(&["--tenant", "acme"]);
    let png = home.dir.join("qr.png");
    let bk = home.dir.join("bk");
    let commands: Vec<Vec<&str>> = vec![
        vec!["tenant", "list"],
        vec!["tenant", "show", "acme"],
        vec!["tenant", "set-region", "acme", "eu"],
        vec!["subaccount", "add", "acme", "research"],
        vec!["subaccount", "list", "acme"],
        vec!["subaccount", "disable", "acme", "research"],
        vec!["subaccount", "enable", "acme", "research"],
        vec!["key", "list"],
        vec!["key", "show", &key_id],
        vec!["key", "rotate", &key_id, "--grace", "1h"],
        vec!["key", "set-scopes", &key_id, "--methods", "get,post", "--paths", "/v1/"],
        vec!["key", "set-expiry", &key_id, "--in", "30d"],
        vec!["key", "set-expiry", &key_id, "--never"],
        vec!["key", "disable", &key_id],
        vec!["key", "enable", &key_id],
        vec!["ip", "allow", "--tenant", "acme", "203.0.113.0/24", "2001:db8::/32"],
        vec!["ip", "deny", "--tenant", "acme", "2001:db8::/32"],
        vec!["ip", "list", "--tenant", "acme"],
        vec!["ip", "disable", "--tenant", "acme"],
        vec!["ip", "enable", "--tenant", "acme"],
        vec!["quota", "set", "--tenant", "acme", "--per-minute", "600"],
        vec!["quota", "show", "--tenant", "acme"],
        vec!["quota", "clear", "--tenant", "acme"],
        vec!["provider", "set", "openai", "--path-prefix", "/v1/", "--secret-file", cidr_file.to_str().unwrap()],
        vec!["provider", "list"],
        vec!["publish"],
        vec!["status"],
        vec!["bundle-key", "--out", bk.to_str().unwrap()],
        vec!["admin", "add", "root", "--role", "platform"],
        vec!["admin", "list"],
        vec!["admin", "token", "create", "root"],
        vec!["admin", "token", "list", "root"],
        vec!["--as", "root", "2fa", "enroll", "--png", png.to_str().unwrap()],
        vec!["--as", "root", "2fa", "status"],
        vec!["audit", "tail", "-n", "3"],
        vec!["audit", "search", "--action", "key."],
        vec!["audit", "verify"],
        vec!["incident", "revoke", &key_id],
        vec!["key", "delete", &key_id],
        vec!["provider", "remove", "openai"],
        vec!["tenant", "disable", "acme"],
        vec!["tenant", "enable", "acme"],
    ];
    for args in commands {
        let mut full = vec!["--json"];
        full.extend(args);
        let run = home.run(&full).ok();
        let _: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{full:?}: {e}: {}", run.stdout));
    }
    // Errors are JSON on stderr, with a stable kind.
    let err = home.run(&["--json", "key", "show", "nosuchkey000"]).fails(3);
    let v: Value = serde_json::from_str(err.stderr.trim()).unwrap();
    assert_eq!(v["error"]["kind"], "not_found");
}

#[test]
fn exit_codes_mean_something() {
    let home = Home::new("exit");
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["tenant", "add", "acme"]).fails(2); // already exists
    home.run(&["key", "disable", "nosuchkey000"]).fails(3);
    home.run(&["ip", "allow", "--tenant", "acme", "10.0.0.0/33"]).fails(2);
    home.run(&["quota", "set", "--key", "nosuchkey000", "--per-minute", "5"]).fails(3);
    home.run(&["quota", "set", "--tenant", "acme", "--per-minute", "0"]).fails(2);
    // The filter's own validation refuses the policy: exit 6, nothing stored.
    let secret = home.dir.join("s");
    std::fs::write(&secret, "x").unwrap();
    let run = home.run(&[
        "provider",
        "set",
        "p",
        "--path-prefix",
        "/v1/",
        "--header",
        "host",
        "--secret-file",
        secret.to_str().unwrap(),
    ]);
    run.fails(6);
    home.run(&["--as", "nobody", "tenant", "list"]).fails(4);
    // Another master key: exit 4; a damaged store: exit 5.
    let other = home.dir.join("other.key");
    std::fs::write(&other, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    home.run(&["--master-key-file", other.to_str().unwrap(), "tenant", "list"]).fails(4);
    let store = home.home().join("store.enc");
    let text = std::fs::read_to_string(&store).unwrap();
    let pos = text.find("\"sealed\": \"").unwrap() + 20;
    let mut damaged = text.into_bytes();
    damaged[pos] = if damaged[pos] == b'A' { b'B' } else { b'A' };
    std::fs::write(&store, damaged).unwrap();
    home.run(&["tenant", "list"]).fails(5);
    // Bad usage is clap's exit 2.
    home.run(&["key", "create"]).fails(2);
}

#[test]
fn ip_changes_that_lock_everyone_out_are_warned_about() {
    let home = Home::new("ip-lockout");
    home.run(&["tenant", "add", "acme"]).ok();
    let (key_id, _) = home.create_key(&["--tenant", "acme"]);
    let ok = home.run(&["ip", "allow", "--tenant", "acme", "10.0.0.0/8"]).ok();
    assert!(!ok.stderr.contains("warning"), "{}", ok.stderr);
    let ok = home.run(&["ip", "allow", "--key", &key_id, "10.1.2.0/24"]).ok();
    assert!(!ok.stderr.contains("warning"), "{}", ok.stderr);
    // Narrowing the tenant to a range that misses the key's list: warned.
    home.run(&["ip", "deny", "--tenant", "acme", "10.0.0.0/8"]).ok();
    let warned = home.run(&["ip", "allow", "--tenant", "acme", "192.168.0.0/16"]).ok();
    assert!(warned.stderr.contains(&format!("key {key_id}")), "{}", warned.stderr);
    let emptied = home.run(&["ip", "deny", "--tenant", "acme", "192.168.0.0/16"]).ok();
    assert!(emptied.stderr.contains("refuses every address"), "{}", emptied.stderr);
    // Bad CIDRs are refused with the offending text; IPv6 is fine.
    let bad = home.run(&["ip", "allow", "--tenant", "acme", "10.0.0.1/8"]).fails(2);
    assert!(bad.stderr.contains("10.0.0.1/8"), "{}", bad.stderr);
    home.run(&["ip", "allow", "--tenant", "acme", "--sub-account", "default", "2001:db8::/32"]).ok();
}

#[test]
fn help_teaches_with_examples() {
    let home = Home::new("help");
    let top = home.run(&["--help"]).ok();
    assert!(top.stdout.contains("Quick start") && top.stdout.contains("Exit codes"));
    for group in [
        "tenant",
        "subaccount",
        "key",
        "ip",
        "quota",
        "provider",
        "incident",
        "admin",
        "2fa",
        "audit",
        "serve",
        "ratelimit",
    ] {
        let help = home.run(&[group, "--help"]).ok();
        assert!(help.stdout.contains("Example"), "{group} --help has no examples:\n{}", help.stdout);
    }
}

#[test]
fn quotas_per_tenant_sub_account_and_key() {
    let home = Home::new("quota");
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["subaccount", "add", "acme", "research"]).ok();
    let (key_id, _) = home.create_key(&["--tenant", "acme", "--sub-account", "research"]);
    home.run(&["quota", "set", "--tenant", "acme", "--per-minute", "600", "--per-day", "100000"]).ok();
    home.run(&["quota", "set", "--tenant", "acme", "--sub-account", "research", "--per-minute", "100"]).ok();
    // A key limit looser than its sub-account's is allowed, with a warning.
    let loose = home.run(&["quota", "set", "--key", &key_id, "--per-minute", "1000", "--per-day", "5000"]).ok();
    assert!(loose.stderr.contains("stricter"), "{}", loose.stderr);
    let shown = home.run(&["--json", "quota", "show", "--key", &key_id]).ok().json();
    assert_eq!(shown["quota"], serde_json::json!({"per_minute": 1000, "per_day": 5000}));
    assert_eq!(shown["effective"], serde_json::json!({"per_minute": 100, "per_day": 5000}));
    home.run(&["publish"]).ok();
    let policy = published_policy(&home);
    assert_eq!(policy["tenants"][0]["quota"], serde_json::json!({"per_minute": 600, "per_day": 100000}));
    assert_eq!(policy["tenants"][0]["sub_accounts"][1]["quota"], serde_json::json!({"per_minute": 100}));
    assert_eq!(policy["keys"][0]["quota"], serde_json::json!({"per_minute": 1000, "per_day": 5000}));
    // Clearing removes the level's limits.
    home.run(&["quota", "clear", "--key", &key_id]).ok();
    let shown = home.run(&["--json", "quota", "show", "--key", &key_id]).ok().json();
    assert!(shown["quota"].is_null());
    // Each change is audited with its ids and the new limits.
    let sets: Vec<Value> = home.audit_lines().into_iter().filter(|e| e["action"] == "quota.set").collect();
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[2]["target"]["key_id"], key_id.as_str());
    assert_eq!(sets[2]["detail"], "1000/min, 5000/day");
}

#[test]
fn token_budgets_and_prices_are_validated_audited_and_published() {
    let home = Home::new("budgets");
    let secret = home.dir.join("secret");
    std::fs::write(&secret, "sk-test-secret").unwrap();
    home.run(&["provider", "set", "openai", "--path-prefix", "/v1/", "--secret-file", secret.to_str().unwrap()]).ok();
    home.run(&["tenant", "add", "acme"]).ok();
    let (key_id, _) = home.create_key(&["--tenant", "acme"]);
    // Prices need their provider; dollars per million, in steps of $0.001.
    home.run(&["price", "set", "--provider", "nope", "--model", "gpt-4o", "--input", "1", "--output", "2"]).fails(3);
    home.run(&["price", "set", "--provider", "openai", "--model", "gpt-4o", "--input", "0.0001", "--output", "1"])
        .fails(2);
    home.run(&["price", "set", "--provider", "openai", "--model", "gpt-*-x", "--input", "1", "--output", "1"]).fails(6);
    let openai = ["price", "set", "--provider", "openai", "--model", "gpt-4o", "--input", "2.50"];
    home.run(&[&openai[..], &["--cached-input", "1.25", "--output", "10"]].concat()).ok();
    home.run(&[
        "price",
        "set",
        "--provider",
        "openai",
        "--model",
        "gpt-4o-mini*",
        "--input",
        "$0.15",
        "--output",
        "0.6",
    ])
    .ok();
    let list = home.run(&["--json", "price", "list"]).ok().json();
    assert_eq!(list[0]["input_nano_usd_per_token"], 2_500);
    assert_eq!(list[0]["cached_input_usd_per_million"], "1.25");
    assert_eq!(list[1]["output_nano_usd_per_token"], 600);
    assert!(home.run(&["price", "list"]).ok().stdout.contains("$10.00"));
    // Budgets beside the request quota; a 0 and a bad amount are refused.
    home.run(&["quota", "set", "--key", &key_id, "--tokens-per-minute", "0"]).fails(2);
    home.run(&["quota", "set", "--key", &key_id, "--monthly-budget", "12,50"]).fails(2);
    home.run(&["quota", "set", "--tenant", "acme", "--tokens-per-day", "1000000", "--monthly-budget", "100"]).ok();
    let set = ["quota", "set", "--key", &key_id, "--per-minute", "60", "--tokens-per-minute", "20000"];
    let own = home.run(&[&set[..], &["--monthly-budget", "12.50"]].concat()).ok();
    assert!(!own.stderr.contains("stricter"), "nothing above is stricter: {}", own.stderr);
    let loose = home.run(&["quota", "set", "--key", &key_id, "--monthly-budget", "500"]).ok();
    assert!(loose.stderr.contains("effective budget is 1000000 tokens/day, $100.00/month"), "{}", loose.stderr);
    home.run(&[&set[..], &["--monthly-budget", "12.50"]].concat()).ok();
    let shown = home.run(&["--json", "quota", "show", "--key", &key_id]).ok().json();
    assert_eq!(shown["quota"], serde_json::json!({"per_minute": 60}));
    let budget = serde_json::json!({"tokens_per_minute": 20000, "monthly_budget_nano_usd": 12_500_000_000u64});
    assert_eq!(shown["budget"], budget);
    assert_eq!(
        shown["effective_budget"],
        serde_json::json!({"tokens_per_minute": 20000, "tokens_per_day": 1000000, "monthly_budget_nano_usd": 12_500_000_000u64})
    );
    let text = home.run(&["quota", "show", "--key", &key_id]).ok().stdout;
    assert!(text.contains("20000 tokens/min") && text.contains("$12.50/month"), "{text}");
    home.run(&["publish"]).ok();
    let policy = published_policy(&home);
    assert_eq!(policy["keys"][0]["budget"], budget);
    assert_eq!(policy["tenants"][0]["budget"]["tokens_per_day"], 1_000_000);
    assert_eq!(
        policy["prices"][0],
        serde_json::json!({"provider": "openai", "model": "gpt-4o", "input": 2500, "cached_input": 1250, "output": 10000})
    );
    // The global mode counts budgets too (the rate limit service, in Redis).
    home.run(&["quota", "mode", "global"]).ok();
    home.run(&["publish"]).ok();
    let policy = published_policy(&home);
    assert_eq!((&policy["quota_mode"], &policy["keys"][0]["budget"]), (&serde_json::json!("global"), &budget));
    home.run(&["quota", "mode", "local"]).ok();
    // Clearing removes budgets too; removing a price; each change audited.
    home.run(&["quota", "clear", "--key", &key_id]).ok();
    assert!(home.run(&["--json", "quota", "show", "--key", &key_id]).ok().json()["budget"].is_null());
    home.run(&["price", "remove", "--provider", "openai", "--model", "gpt-4o"]).ok();
    home.run(&["price", "remove", "--provider", "openai", "--model", "gpt-4o"]).fails(3);
    assert_eq!(home.run(&["--json", "price", "list"]).ok().json().as_array().unwrap().len(), 1);
    let audit = home.audit_lines();
    let count = |action: &str| audit.iter().filter(|e| e["action"] == action && e["outcome"] == "ok").count();
    assert_eq!((count("price.set"), count("price.remove")), (2, 1));
    let last_set = audit.iter().rev().find(|e| e["action"] == "quota.set").unwrap();
    assert_eq!(last_set["detail"], "60/min; 20000 tokens/min, $12.50/month");
}

#[test]
fn quota_mode_is_validated_audited_and_published() {
    let home = Home::new("quota-mode");
    home.run(&["tenant", "add", "acme"]).ok();
    let shown = home.run(&["--json", "quota", "mode"]).ok().json();
    assert_eq!(shown["quota_mode"], "local", "local is the default");
    home.run(&["quota", "mode", "everywhere"]).fails(2);
    let set = home.run(&["--json", "quota", "mode", "global"]).ok();
    assert_eq!(set.json()["quota_mode"], "global");
    assert_eq!(set.json()["previous"], "local");
    assert!(set.stderr.contains("tokenhub-admin ratelimit"), "global mode warns what it needs: {}", set.stderr);
    assert_eq!(home.run(&["--json", "quota", "mode"]).ok().json()["quota_mode"], "global");
    home.run(&["publish"]).ok();
    assert_eq!(published_policy(&home)["quota_mode"], "global", "the mode travels in the sealed bundle");
    home.run(&["quota", "mode", "local"]).ok();
    home.run(&["publish"]).ok();
    assert!(published_policy(&home).get("quota_mode").is_none(), "local (the default) is left out of the bundle");
    let changes: Vec<Value> = home.audit_lines().into_iter().filter(|e| e["action"] == "quota.mode").collect();
    assert_eq!(changes.len(), 2, "each change is audited");
    assert_eq!(changes[0]["detail"], "local -> global");
    assert_eq!(changes[1]["detail"], "global -> local");
}

#[test]
fn metering_settings_are_validated_audited_and_published() {
    let home = Home::new("metering");
    home.run(&["tenant", "add", "acme"]).ok();
    let shown = home.run(&["--json", "quota", "metering"]).ok().json();
    assert_eq!(shown, serde_json::json!({"soft_limit_percent": 80, "default_output_tokens": 1024}), "the defaults");
    let set = home.run(&["--json", "quota", "metering", "--default-output-tokens", "512"]).ok().json();
    assert_eq!(set, serde_json::json!({"soft_limit_percent": 80, "default_output_tokens": 512}));
    home.run(&["quota", "metering", "--soft-limit-percent", "90"]).ok();
    // Out of range: refused with the field named, nothing changed.
    let refused = home.run(&["quota", "metering", "--soft-limit-percent", "0"]).fails(6);
    assert!(refused.stderr.contains("soft_limit_percent"), "{}", refused.stderr);
    let refused = home.run(&["quota", "metering", "--default-output-tokens", "0"]).fails(6);
    assert!(refused.stderr.contains("default_output_tokens"), "{}", refused.stderr);
    home.run(&["quota", "metering", "--soft-limit-percent", "101"]).fails(6);
    let text = home.run(&["quota", "metering"]).ok().stdout;
    assert!(text.contains("90%") && text.contains("512"), "{text}");
    home.run(&["publish"]).ok();
    let policy = published_policy(&home);
    assert_eq!(
        (policy["soft_limit_percent"].as_u64(), policy["default_output_tokens"].as_u64()),
        (Some(90), Some(512))
    );
    let changes: Vec<Value> = home.audit_lines().into_iter().filter(|e| e["action"] == "quota.metering").collect();
    assert_eq!(changes.iter().filter(|e| e["outcome"] == "ok").count(), 2, "each change is audited");
}

#[test]
fn incident_revoke_disables_publishes_and_shows_the_trail() {
    let home = Home::new("incident");
    home.run(&["tenant", "add", "acme"]).ok();
    let (key_id, _) = home.create_key(&["--tenant", "acme", "--name", "leaked"]);
    home.run(&["key", "rotate", &key_id, "--grace", "24h"]).ok();
    home.run(&["publish"]).ok();
    let before = published_policy(&home);
    assert!(before["keys"][0]["previous"].is_object(), "the rotation left a previous secret");
    let revoked = home.run(&["incident", "revoke", &key_id]).ok();
    assert!(revoked.stdout.contains("disabled and published"), "{}", revoked.stdout);
    for action in ["key.create", "key.rotate", "incident.revoke"] {
        assert!(revoked.stdout.contains(action), "the trail lacks {action}:\n{}", revoked.stdout);
    }
    // Published at once, with the key disabled and its previous secret gone.
    let after = published_policy(&home);
    assert!(after["version"].as_u64() > before["version"].as_u64());
    assert_eq!(after["keys"][0]["status"], "disabled");
    assert!(after["keys"][0]["previous"].is_null());
    // JSON: the audit entries of the key, last one the revocation.
    let (other, _) = home.create_key(&["--tenant", "acme"]);
    let v = home.run(&["--json", "incident", "revoke", &other]).ok().json();
    let trail = v["audit"].as_array().unwrap();
    assert_eq!(trail.first().unwrap()["action"], "key.create");
    assert!(trail.iter().all(|e| e["target"]["key_id"] == other.as_str()));
    home.run(&["incident", "revoke", "nosuchkey000"]).fails(3);
    home.run(&["audit", "verify"]).ok();
}

#[test]
fn secrets_stay_out_of_output_and_errors() {
    let home = Home::new("secrets");
    home.run(&["tenant", "add", "acme"]).ok();
    // A secret with a control character is refused without being echoed.
    let bad = "sk-evil\u{7}-0123456789";
    let run = home.run_with(&["provider", "set", "openai", "--path-prefix", "/v1/"], &[], Some(bad));
    let run = run.fails(6);
    assert!(!run.stderr.contains("sk-evil"), "{}", run.stderr);
    let good = "sk-good-0123456789abcdef";
    home.run_with(&["provider", "set", "openai", "--path-prefix", "/v1/"], &[], Some(good)).ok();
    home.run_with(
        &["provider", "set", "openai", "--path-prefix", "/v1/", "--tenant", "acme"],
        &[],
        Some("sk-acme-own-secret"),
    )
    .ok();
    for args in [vec!["--json", "provider", "list"], vec!["--json", "tenant", "show", "acme"], vec!["--json", "status"]]
    {
        let out = home.run(&args).ok();
        assert!(!out.stdout.contains(good) && !out.stdout.contains("sk-acme-own-secret"), "{args:?}: {}", out.stdout);
    }
    // A key is shown once: never by list or show.
    let (key_id, key) = home.create_key(&["--tenant", "acme"]);
    let secret_part = &key[16..48];
    for args in [vec!["--json", "key", "list"], vec!["--json", "key", "show", &key_id]] {
        let out = home.run(&args).ok();
        assert!(!out.stdout.contains(secret_part), "{args:?}");
    }
    assert!(!home.audit_text().contains(good) && !home.audit_text().contains(secret_part));
}

#[test]
fn init_takes_the_bundle_key_from_a_file_for_scaled_out_gateways() {
    use std::os::unix::fs::PermissionsExt;
    let dir = admin_support::fresh_dir("bundle-key-file");
    let given = dir.join("bundle.key");
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    std::fs::write(&given, format!("{key}\n")).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenhub-admin"))
            .args(args)
            .env("TOKENHUB_HOME", dir.join("home"))
            .env_remove("TOKENHUB_MASTER_KEY")
            .env("TOKENHUB_MASTER_KEY_FILE", dir.join("master.key"))
            .output()
            .unwrap()
    };
    let ecds = dir.join("guard.json");
    let init = |extra: &[&str]| {
        let mut args = vec!["init", "--ecds-file", ecds.to_str().unwrap(), "--wasm", "/opt/tokenhub/guard.wasm"];
        args.extend_from_slice(extra);
        run(&args)
    };
    // Readable by others: refused, naming the fix, and no store is made.
    std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = init(&["--bundle-key-file", given.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("chmod 600"), "{stderr}");
    assert!(!dir.join("home/store.enc").exists());
    // Not a key: refused with what a bundle key is.
    let bad = dir.join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = init(&["--bundle-key-file", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("openssl rand -base64 32"), "{stderr}");
    assert!(!stderr.contains(key));
    // A private file: the store seals with exactly that key.
    std::fs::set_permissions(&given, std::fs::Permissions::from_mode(0o600)).unwrap();
    let made = init(&["--bundle-key-file", given.to_str().unwrap()]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(!String::from_utf8_lossy(&made.stdout).contains(key));
    let out = dir.join("exported.key");
    assert!(run(&["bundle-key", "--out", out.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), key);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where the platform's provider secret may be used: the preset named like
/// the provider by default, explicit presets and endpoints, and clear
/// refusals for what would share nothing or share by mistake.
#[test]
fn provider_set_declares_the_endpoints_the_shared_secret_serves() {
    let home = Home::new("shared-endpoints");
    let secret = Some("sk-platform-0123456789");
    let shared_of = |id: &str| -> Vec<String> {
        let list = home.run(&["--json", "provider", "list"]).ok().json();
        let provider = list.as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap();
        provider["shared_endpoints"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    // Named like a preset: its stateless endpoints under the prefix.
    home.run_with(&["provider", "set", "openai", "--path-prefix", "/v1/"], &[], secret).ok();
    let openai = shared_of("openai");
    assert!(openai.contains(&"POST /v1/chat/completions".to_string()), "{openai:?}");
    assert!(openai.contains(&"GET /v1/models/*".to_string()), "{openai:?}");
    assert!(!openai.iter().any(|e| e.contains("files") || e.contains("batches") || e.contains("responses")));
    // Any other name: the operator must say what is shared.
    let run = home.run_with(&["provider", "set", "acme-llm", "--path-prefix", "/llm/"], &[], secret).fails(6);
    assert!(run.stderr.contains("shared_endpoints") && run.stderr.contains("--shared-preset"), "{}", run.stderr);
    home.run_with(
        &["provider", "set", "acme-llm", "--path-prefix", "/llm/", "--shared-endpoint", "POST /llm/generate"],
        &[],
        secret,
    )
    .ok();
    assert_eq!(shared_of("acme-llm"), ["POST /llm/generate"]);
    // A preset under another prefix, plus one more endpoint.
    home.run_with(
        &[&["provider", "set", "claude"][..], &ANTHROPIC_ARGS, &["--shared-preset", "anthropic"]].concat(),
        &[],
        secret,
    )
    .ok();
    assert!(shared_of("claude").contains(&"POST /anthropic/v1/messages".to_string()));
    // Unknown presets and endpoints outside the prefix are refused, by name.
    let run = home
        .run_with(&["provider", "set", "openai", "--path-prefix", "/v1/", "--shared-preset", "gemini"], &[], secret)
        .fails(2);
    assert!(run.stderr.contains("gemini"), "{}", run.stderr);
    let run = home
        .run_with(
            &["provider", "set", "openai", "--path-prefix", "/v1/", "--shared-endpoint", "GET /v2/files"],
            &[],
            secret,
        )
        .fails(6);
    assert!(run.stderr.contains("/v2/files"), "{}", run.stderr);
    // `none` with a platform secret shares nothing: refused, naming the fix.
    home.run_with(&["provider", "set", "openai", "--path-prefix", "/v1/", "--shared-preset", "none"], &[], secret)
        .fails(6);
    // Unchanged by a tenant's own secret.
    home.run(&["tenant", "add", "acme"]).ok();
    home.run_with(
        &["provider", "set", "openai", "--path-prefix", "/v1/", "--tenant", "acme"],
        &[],
        Some("sk-acme-own"),
    )
    .ok();
    assert_eq!(shared_of("openai"), openai);
}

#[test]
fn model_lists_for_keys_sub_accounts_and_tenants_reach_the_bundle() {
    let home = Home::new("models");
    home.run(&["tenant", "add", "acme"]).ok();
    home.run(&["subaccount", "add", "acme", "research"]).ok();
    let (created, _) =
        home.create_key(&["--tenant", "acme", "--sub-account", "research", "--models", "gpt-4o-mini,claude-3-5-*"]);
    let (other, _) = home.create_key(&["--tenant", "acme"]);
    home.run(&["key", "set-scopes", &other, "--paths", "/v1/", "--models", "gpt-4o"]).ok();
    home.run(&["tenant", "set-models", "acme", "--models", "gpt-*,claude-*"]).ok();
    let sub = home.run(&["--json", "subaccount", "set-models", "acme", "research", "--models", "gpt-4o*"]).ok().json();
    assert_eq!(sub["models"], serde_json::json!(["gpt-4o*"]));
    // A bad pattern is refused with the field named, and changes nothing.
    let bad = home.run(&["tenant", "set-models", "acme", "--models", "gpt*4"]);
    assert!(!bad.status.success(), "a bad pattern was accepted");
    assert!(bad.stderr.contains("tenants[0].models[0]") && bad.stderr.contains("at the end"), "{}", bad.stderr);
    home.run(&["publish"]).ok();
    let policy = published_policy(&home);
    assert_eq!(policy["tenants"][0]["models"], serde_json::json!(["gpt-*", "claude-*"]));
    assert_eq!(policy["tenants"][0]["sub_accounts"][1]["models"], serde_json::json!(["gpt-4o*"]));
    let key = |id: &str| policy["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(key(&created)["models"], serde_json::json!(["gpt-4o-mini", "claude-3-5-*"]));
    assert_eq!(key(&other)["models"], serde_json::json!(["gpt-4o"]));
    // set-scopes without --models clears the key's list; no --models clears a tenant's.
    home.run(&["key", "set-scopes", &other]).ok();
    home.run(&["tenant", "set-models", "acme"]).ok();
    home.run(&["publish"]).ok();
    let policy = published_policy(&home);
    assert!(policy["tenants"][0].get("models").is_none());
    let key = |id: &str| policy["keys"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert!(key(&other).get("models").is_none());
    let audit = home.audit_text();
    assert!(audit.contains("tenant.set-models") && audit.contains("subaccount.set-models"));
}

/// Every field of `value` is declared in `schema` (JSON Schema subset:
/// properties, items, $ref, type, const, enum), recursively; returns the
/// paths of what is not.
fn undeclared(value: &Value, schema: &Value, root: &Value, at: &str, out: &mut Vec<String>) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r.trim_start_matches("#/").split('/').fold(root, |s, part| &s[part]),
        None => schema,
    };
    if let Some(constant) = schema.get("const") {
        if value != constant {
            out.push(format!("{at}: {value} is not {constant}"));
        }
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            out.push(format!("{at}: {value} is not one of {choices:?}"));
        }
    }
    match value {
        Value::Object(map) => {
            let declared = schema.get("properties").and_then(Value::as_object);
            for (name, field) in map {
                match declared.and_then(|d| d.get(name)) {
                    Some(sub) => undeclared(field, sub, root, &format!("{at}.{name}"), out),
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        out.push(format!("{at}.{name} is not in the schema"))
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                undeclared(item, &schema["items"], root, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn tenant_export_holds_everything_about_the_tenant_and_no_secret() {
    let home = Home::new("export");
    let keys = personal_data_fixture(&home, "ann", "1234567890");
    let (acme_key, acme_secret, globex_key) = (keys.acme_id, keys.acme_key, keys.globex_id);
    home.run(&["quota", "set", "--tenant", "acme", "--sub-account", "research", "--tokens-per-day", "100000"]).ok();
    home.run(&["--as", "ann", "key", "disable", &acme_key]).ok();

    // A tenant admin exports its own tenant, never another.
    home.run(&["--as", "ann", "tenant", "export", "globex"]).fails(4);
    let doc = home.run(&["--as", "ann", "--json", "tenant", "export", "acme"]).ok().json();
    assert_eq!(doc["format"], "tokenhub.tenant-export/1");
    assert_eq!(doc["tenant"]["id"], "acme");
    assert_eq!(doc["tenant"]["region"], "eu");
    assert_eq!(doc["tenant"]["own_provider_secrets"], serde_json::json!(["openai"]));
    assert_eq!(doc["tenant"]["ip_allowlist"]["cidrs"], serde_json::json!(["203.0.113.0/24"]));
    assert_eq!(doc["tenant"]["sub_accounts"][1]["budget"]["tokens_per_day"], 100_000);
    let keys: Vec<&str> = doc["keys"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(keys, [acme_key.as_str()]);
    assert_eq!(doc["oidc_mappings"][0]["value"], "1234567890");
    let admins: Vec<&str> = doc["admins"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(admins, ["ann"]);
    let audit = doc["audit"].as_array().unwrap();
    assert!(audit.iter().any(|e| e["action"] == "key.create" && e["target"]["key_id"] == acme_key.as_str()));
    assert!(audit.iter().any(|e| e["action"] == "key.disable" && e["actor"] == "ann"));
    assert!(audit.iter().all(|e| e["target"]["tenant"] == "acme" || e["actor"] == "ann"), "{audit:#?}");
    // Nothing of another tenant (but what ann herself tried), no secret, no hash.
    let mut others = doc.clone();
    others["audit"] = Value::Array(audit.iter().filter(|e| e["actor"] != "ann").cloned().collect());
    let text = others.to_string();
    for absent in ["globex", globex_key.as_str(), "gus", "sk-platform", "sk-acme-own", &acme_secret[16..48]] {
        assert!(!text.contains(absent), "{absent} in the export: {others:#}");
    }
    assert!(!doc.to_string().contains("sha256"), "no key hash");
    assert!(!doc.to_string().contains(&acme_secret[16..48]), "no key secret");
    // Every field is declared in the published schema.
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string("docs/tenant-export.schema.json").unwrap()).unwrap();
    let mut problems = Vec::new();
    undeclared(&doc, &schema, &schema, "$", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    let mut broken = doc.clone();
    broken["keys"][0]["secret_hash"] = "x".into();
    undeclared(&broken, &schema, &schema, "$", &mut problems);
    assert_eq!(problems, ["$.keys[0].secret_hash is not in the schema"], "the schema check can fail");

    // To a file: mode 0600, the same document; the export is audited.
    let out = home.dir.join("acme-export.json");
    home.run(&["--as", "root", "tenant", "export", "acme", "--out", out.to_str().unwrap()]).ok();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written["keys"], doc["keys"]);
    let exports: Vec<Value> = home.audit_lines().into_iter().filter(|e| e["action"] == "tenant.export").collect();
    assert_eq!(exports.len(), 3, "two exports and one refusal: {exports:#?}");
}

#[test]
fn usage_reports_tokens_and_cost_as_text_json_and_csv() {
    let home = Home::new("usage-tokens");
    let log = home.dir.join("access.log");
    let at = |minutes: u64| {
        let t = tokenhub_guard::admin::audit::rfc3339(admin_support::now() - minutes * 60);
        format!("{}.250Z", t.trim_end_matches('Z'))
    };
    let line = |m: u64, tenant: &str, key: &str, model: &str, input: u64, cost: u64| {
        format!(
            r#"{{"start_time":"{}","status":"200","reason":"allowed","tenant":"{tenant}","sub_account":"default","key_id":"{key}","model":"{model}","input_tokens":"{input}","output_tokens":"10","cached_tokens":"-","reasoning_tokens":"-","cost_nano_usd":"{cost}"}}"#,
            at(m)
        )
    };
    let lines = [
        line(3, "acme", "k1", "gpt-4o", 100, 2_500_000),
        line(2, "acme", "k2", "gpt-4o", 50, 1_250_000),
        line(1, "acme", "k2", "claude-3-5-haiku", 7, 0),
        line(1, "globex", "k3", "=cmd()", 1, 1),
    ];
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let log = log.to_str().unwrap();
    let json = home.run(&["--json", "usage", "--access-log", log, "--by", "tenant", "--per-model"]).ok().json();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{json}");
    let gpt = rows.iter().find(|r| r["model"] == "gpt-4o").unwrap();
    assert_eq!(
        (gpt["tenant"].as_str(), gpt["requests"].as_u64(), gpt["input_tokens"].as_u64()),
        (Some("acme"), Some(2), Some(150))
    );
    assert_eq!((gpt["output_tokens"].as_u64(), gpt["cost_nano_usd"].as_u64()), (Some(20), Some(3_750_000)));
    assert!(gpt.get("key_id").is_none() && gpt.get("sub_account").is_none(), "per tenant: {gpt}");
    let csv = home.run(&["usage", "--access-log", log, "--by", "tenant", "--per-model", "--csv"]).ok().stdout;
    let csv_lines: Vec<&str> = csv.lines().collect();
    assert!(csv_lines[0].starts_with("tenant,model,requests,allowed,input_tokens,output_tokens"), "{csv}");
    assert_eq!(csv_lines.len(), 4, "{csv}");
    assert!(csv.contains("acme,gpt-4o,2,2,150,20,0,0,3750000,0.003750000,"), "{csv}");
    assert!(csv.contains("globex,'=cmd()"), "a log value never becomes a spreadsheet formula: {csv}");
    let text = home.run(&["usage", "--access-log", log, "--key", "k2", "--per-model"]).ok().stdout;
    assert!(text.contains("KEY_ID") && text.contains("claude-3-5-haiku") && text.contains("0.001250000"), "{text}");
    assert!(!text.contains("k1"), "{text}");
    home.run(&["usage", "--access-log", log, "--by", "department"]).fails(2);
    // Without a log: --current, which needs the global mode's counters.
    home.run(&["usage"]).fails(2);
    let local = home.run(&["usage", "--current"]).fails(2);
    assert!(
        local.stderr.contains("local quota mode") && local.stderr.contains("quota mode global"),
        "{}",
        local.stderr
    );
    let per_model = home.run(&["usage", "--current", "--per-model"]).fails(2);
    assert!(per_model.stderr.contains("--access-log"), "{}", per_model.stderr);
    let secret = home.run(&["usage", "--current", "--redis", "redis://:s3cret@127.0.0.1:1"]).fails(2);
    assert!(secret.stderr.contains("TOKENHUB_REDIS_URL") && !secret.stderr.contains("s3cret"), "{}", secret.stderr);
}
