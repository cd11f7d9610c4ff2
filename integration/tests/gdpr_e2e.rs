//! GDPR through real Envoy: a tenant with keys, traffic, admins and an
//! identity mapping is exported, erased and published away; the gateway
//! refuses its keys within 1 s; the bundle (opened), the audit log and the
//! access log (rotated, pruned with --drop-tenant) hold nothing of it.
//! (2FA and the decrypted store are covered natively in tests/erasure_cli.rs,
//! which has the admin's own code; this crate has no TOTP and no admin
//! feature.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tokenhub_guard::core::bundle::{self, BundleKey};
use tokenhub_integration::guard::{request_lines, sealed_of};
use tokenhub_integration::{addrs, paths, Admin, EchoUpstream, Envoy, EnvoyOptions};

const TENANT: &str = "gdpr-erasee";
const TENANT_NAME: &str = "Erasee Widgets GmbH";
const OTHER: &str = "gdpr-bystander";
const TENANT_SECRET: &str = "sk-erasee-own.Secret~4242";
const ADMIN_NAME: &str = "erasee-admin-ann";
const IDENTITY: &str = "google-sub-55501234";
/// The promise: an erased tenant's keys are refused within this long.
const LIMIT: Duration = Duration::from_secs(1);

fn opened_bundle(admin: &Admin) -> String {
    let ecds: serde_json::Value = serde_json::from_str(&admin.ecds_contents()).unwrap();
    let plain = bundle::open(sealed_of(&ecds), &BundleKey::from_base64(admin.bundle_key()).unwrap()).unwrap();
    serde_json::to_string(&bundle::pack::unpack(&plain).unwrap()).unwrap()
}

/// Publishes, then starts an echo upstream and an Envoy holding that bundle.
fn serving(admin: &Admin) -> (EchoUpstream, Envoy) {
    let version = admin.publish()["version"].as_u64().unwrap();
    let echo = EchoUpstream::start().expect("echo upstream");
    let envoy = Envoy::start(EnvoyOptions::new(echo.port()).publisher(admin));
    envoy.wait_for_stat("wasmcustom.tokenhub.bundle_version", |v| v == version, Duration::from_secs(10));
    (echo, envoy)
}

/// The status of `GET /v1/models` with `key`, sent from `src`.
fn models_status(envoy: &Envoy, key: &str, src: std::net::IpAddr) -> u16 {
    let lines = request_lines("GET", "/v1/models", &[("authorization", &format!("Bearer {key}"))], true);
    envoy.request(src, &lines, b"").unwrap().status
}

#[test]
fn an_erased_tenant_is_refused_at_once_and_leaves_nothing_readable() {
    let admin = Admin::init(&paths::built_guard_wasm());
    admin.json(&["tenant", "add", TENANT, "--name", TENANT_NAME]);
    admin.json(&["tenant", "add", OTHER]);
    admin.set_provider(&["openai", "--path-prefix", "/v1/"], "sk-platform-default-0001");
    admin.set_provider(&["openai", "--path-prefix", "/v1/", "--tenant", TENANT], TENANT_SECRET);
    let key = admin.create_key(TENANT, &["--name", "erasee-ci-key"]);
    let other = admin.create_key(OTHER, &[]);
    admin.json(&["oidc", "map", "--issuer", "https://accounts.google.com", "--value", IDENTITY, "--tenant", TENANT]);
    admin.json(&["admin", "add", "root", "--role", "platform"]);
    admin.json(&["admin", "add", ADMIN_NAME, "--role", "tenant", "--tenant", TENANT]);
    admin.json(&["--as", ADMIN_NAME, "key", "list"]);
    let (_echo, envoy) = serving(&admin);
    let call = |key: &str, src| models_status(&envoy, key, src);
    // Traffic: the erasee from 127.0.0.2, the bystander from 127.0.0.1.
    assert_eq!(call(&key.key, addrs::V4_OTHER), 200);
    assert_eq!(call(&other.key, addrs::V4_PRIMARY), 200);
    let logged = |what: &str, count: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::read_to_string(envoy.access_log_path()).unwrap_or_default().matches(what).count() < count {
            assert!(Instant::now() < deadline, "the access log never recorded {count} lines with {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    logged(TENANT, 1);

    // Export (with its traffic), then erase and publish.
    let export = admin.dir().join("export.json");
    let access_log = envoy.access_log_path().display().to_string();
    admin.json(&["tenant", "export", TENANT, "--out", export.to_str().unwrap(), "--access-log", &access_log]);
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.contains(&key.key_id) && exported.contains("127.0.0.2") && exported.contains(IDENTITY));
    let start = Instant::now();
    let erased = admin.json(&["tenant", "erase", TENANT, "--confirm", TENANT]);
    admin.publish();
    let last = loop {
        let status = call(&key.key, addrs::V4_OTHER);
        if status == 401 || start.elapsed() > LIMIT {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(last, 401, "the erased tenant's key was still served {LIMIT:?} after `tenant erase` + publish");
    let refused_after = start.elapsed();
    assert_eq!(call(&other.key, addrs::V4_PRIMARY), 200, "the bystander is served");
    assert_eq!(erased["removed"]["admins"], 1);

    logged(&other.key_id, 2);
    // Rotate Envoy's live log, then prune the rotated file (addresses cut at once).
    let rotated = envoy.dir().join("access.log.1");
    std::fs::rename(envoy.access_log_path(), &rotated).unwrap();
    let reopen = request_lines("POST", "/reopen_logs", &[], true);
    assert_eq!(tokenhub_integration::request(addrs::V4_PRIMARY, envoy.admin_addr(), &reopen, b"").unwrap().status, 200);
    let live = admin.run(&["logs", "prune", "--access-log", &access_log]);
    assert_eq!(live.status.code(), Some(2), "a live log is refused: {}", live.stderr);
    let rotated_str = rotated.display().to_string();
    admin.json(&["logs", "prune", "--access-log", &rotated_str, "--truncate-ips-after-days", "0"]);

    // The search: names, ids, identity, IPs and secrets.
    admin.json(&["audit", "verify"]);
    let audit = std::fs::read_to_string(admin.home().join("audit.log")).unwrap();
    let pruned = std::fs::read_to_string(&rotated).unwrap();
    let bundle = opened_bundle(&admin);
    let secret_part = &key.key[key.key.len() - 24..];
    let personal = [TENANT, TENANT_NAME, ADMIN_NAME, IDENTITY, key.key_id.as_str(), "erasee-ci-key", TENANT_SECRET];
    for (place, text) in [("audit log", &audit), ("bundle", &bundle)] {
        for needle in personal.iter().chain([&secret_part, &"127.0.0.2"]) {
            assert!(!text.contains(needle), "{needle} in the {place}");
        }
    }
    assert!(bundle.contains(OTHER) && audit.contains(OTHER), "the bystander stays");
    // Pruned with the retention alone, the tenant's lines stay (docs/gdpr.md),
    // without a full address; --drop-tenant then removes them.
    assert!(!pruned.contains("127.0.0.2") && !pruned.contains("127.0.0.1\""), "{pruned}");
    assert!(pruned.contains("\"client\":\"127.0.0.0\"") && pruned.contains(TENANT), "{pruned}");
    let dropped =
        admin.json(&["logs", "prune", "--access-log", &rotated_str, "--drop-tenant", TENANT, "--retain-days", "30"]);
    assert!(dropped["files"][0]["stats"]["erased"].as_u64().unwrap() >= 1, "{dropped}");
    let pruned = std::fs::read_to_string(&rotated).unwrap();
    for needle in personal.iter().chain([&secret_part, &"127.0.0.2"]) {
        assert!(!pruned.contains(needle), "{needle} in the access log");
    }
    assert!(pruned.contains(&other.key_id), "the bystander's lines stay: {pruned} {dropped}");
    println!("tenant erase: the key was refused {refused_after:?} after the erase started");
}

#[test]
fn a_tenant_that_truncates_at_write_time_is_logged_by_network_only() {
    let admin = Admin::init(&paths::built_guard_wasm());
    admin.json(&["tenant", "add", TENANT]);
    admin.json(&["tenant", "add", OTHER]);
    admin.json(&["tenant", "log-retention", TENANT, "--truncate-at-write", "--retain-days", "10"]);
    admin.set_provider(&["openai", "--path-prefix", "/v1/"], "sk-platform-default-0001");
    let key = admin.create_key(TENANT, &[]);
    let other = admin.create_key(OTHER, &[]);
    let (_echo, envoy) = serving(&admin);
    let call = |key: &str, src| models_status(&envoy, key, src);
    // Allowed, refused with its owner known (a claimed tenant that is not
    // its own), over IPv6; and the bystander, logged whole.
    assert_eq!(call(&key.key, addrs::V4_OTHER), 200);
    let claimed = [("authorization", format!("Bearer {}", key.key)), ("x-tokenhub-tenant", OTHER.to_string())];
    let claimed: Vec<(&str, &str)> = claimed.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let lines = request_lines("GET", "/v1/models", &claimed, true);
    assert_eq!(envoy.request(addrs::V4_OTHER, &lines, b"").unwrap().status, 403);
    assert_eq!(call(&key.key, addrs::V6_LOOPBACK), 200);
    assert_eq!(call(&other.key, addrs::V4_OTHER), 200);
    // Refused by Envoy before the guard: Envoy's own address (with its port).
    let bad = request_lines("GET", "/v1%2Fmodels", &[], true);
    assert_eq!(envoy.request(addrs::V4_OTHER, &bad, b"").unwrap().status, 400);
    let log = envoy.access_log_lines(5);
    assert_eq!(log.len(), 5, "{log:#?}");
    let text = std::fs::read_to_string(envoy.access_log_path()).unwrap();
    for line in &log[..3] {
        assert_eq!(line["tenant"], TENANT, "{line}");
    }
    assert_eq!(
        (log[0]["client"].as_str(), log[1]["client"].as_str()),
        (Some("127.0.0.0"), Some("127.0.0.0")),
        "{text}"
    );
    assert_eq!(log[2]["client"], "::", "IPv6 cut to its /48: {text}");
    assert_eq!((log[3]["tenant"].as_str(), log[3]["client"].as_str()), (Some(OTHER), Some("127.0.0.2")), "{text}");
    let raw = log[4]["client"].as_str().unwrap();
    assert!(raw.starts_with("127.0.0.2:") && log[4]["tenant"].is_null(), "{text}");
    assert_eq!(text.matches("127.0.0.2").count(), 2, "the truncating tenant's address nowhere: {text}");
    assert!(!text.contains("::1"), "{text}");
}
