//! Whole-store operations: publish, status, exporting the bundle key.

use super::render::date;
use super::setup::write_secret_file;
use super::Reply;
use crate::admin::audit::Target;
use crate::admin::publish;
use crate::admin::session::{Change, Scope, Session};
use crate::admin::{xds, AdminError};
use serde_json::json;
use std::path::Path;

/// Publishing only ships what admins already committed, so any admin may
/// trigger it; changing where it goes (`--ecds-file`, `--wasm`) is the
/// platform's.
pub fn publish(s: &Session, ecds: Option<&Path>, wasm: Option<&Path>) -> Result<Reply, AdminError> {
    publish_with(s, ecds, wasm, publish::Mode::Auto)
}

/// As `publish`, full or delta by `mode`.
pub fn publish_with(
    s: &Session,
    ecds: Option<&Path>,
    wasm: Option<&Path>,
    mode: publish::Mode,
) -> Result<Reply, AdminError> {
    let scope = if ecds.is_some() || wasm.is_some() { Scope::Platform } else { Scope::Anyone };
    let info = s.mutate(Change::new("publish", scope, Target::default()), |d, c| {
        let info = publish::publish_configured_with(d, ecds, wasm, c.now, mode)?;
        c.note = Some(match info.delta {
            Some(d) => format!(
                "version {} (delta on {}, {} keys changed)",
                info.published.version, d.base_version, d.changed_keys
            ),
            None => format!("version {}", info.published.version),
        });
        Ok(info)
    })?;
    let what = match info.delta {
        Some(d) => format!(" as a delta on version {} ({} keys changed)", d.base_version, d.changed_keys),
        None => String::new(),
    };
    let reply = Reply::new(
        format!(
            "published bundle version {}{what} ({} tenants, {} keys) to {}",
            info.published.version,
            info.tenants,
            info.keys,
            info.published.path.display()
        ),
        json!(info),
    );
    Ok(match crate::admin::ecds::format_advice(&info.published.path, info.keys) {
        Some(advice) => reply.warn(advice),
        None => reply,
    })
}

pub fn status(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, who| {
        let actual = doc.published.as_ref().map(|p| {
            std::fs::read(&p.path).ok().map(|b| crate::core::secret::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&b)))
        });
        let matches = doc.published.as_ref().zip(actual.as_ref()).map(|(p, a)| a.as_deref() == Some(p.sha256.as_str()));
        let secured = Session::secured(doc);
        let gateways = xds::registry::read(&s.store.paths.home);
        // A tenant admin sees its own tenant's counts, not the platform's.
        let tenants = doc.policy.tenants.iter().filter(|t| who.sees(Some(&t.id))).count();
        let keys = doc.policy.keys.iter().filter(|k| who.sees(Some(&k.tenant))).count();
        let admins = doc.admins.iter().filter(|a| who.sees(a.tenant.as_deref())).count();
        let json = json!({
            "store_revision": doc.revision,
            "tenants": tenants,
            "keys": keys,
            "admins": admins,
            "two_factor_required": secured,
            "acting_as": who.name,
            "published": doc.published,
            "published_file_matches": matches,
            "gateways": gateways.gateways.values().collect::<Vec<_>>(),
        });
        let mut text = format!(
            "store revision {} — {} tenants, {} keys, {} admins",
            doc.revision, tenants, keys, admins
        );
        match (&doc.published, matches) {
            (None, _) => text.push_str("\nnothing published yet; run `tokenhub-admin publish`"),
            (Some(p), m) => {
                text.push_str(&format!("\npublished version {} on {} to {}", p.version, date(Some(p.at)), p.path.display()));
                text.push_str(match m {
                    Some(true) => "\nthe file on disk is the one published",
                    Some(false) => "\nwarning: the file on disk differs from what was published",
                    None => "\nwarning: the published file is missing",
                });
            }
        }
        text.push_str(&gateway_lines(&gateways));
        text.push_str(if secured {
            "\n2FA: required for every change"
        } else {
            "\n2FA: not yet on — add an admin and run `2fa enroll` (until then anyone with the master key acts as bootstrap)"
        });
        Ok(Reply::new(text, json))
    })
}

/// One line per gateway the xDS control plane knows (none without xDS).
fn gateway_lines(state: &xds::registry::State) -> String {
    let mut text = String::new();
    if !state.gateways.is_empty() {
        let serving = state.serving_version.map_or("nothing".to_string(), |v| v.to_string());
        text.push_str(&format!("\ngateways (xDS, serving {serving}):"));
    }
    for g in state.gateways.values() {
        let acked = g.acked_version.map_or("none".to_string(), |v| v.to_string());
        let link = if g.connected { "connected" } else { "disconnected" };
        text.push_str(&format!(
            "\n  {} {link}, acknowledged {acked}, last seen {}",
            g.node_id,
            date(Some(g.last_seen))
        ));
        if let Some(n) = &g.last_nack {
            text.push_str(&format!(", refused {} on {}: {}", n.version, date(Some(n.at)), n.reason));
        }
    }
    text
}

/// Writes Envoy's TOKENHUB_BUNDLE_KEY to a 0600 file (platform only, audited).
pub fn bundle_key(s: &Session, out: &Path) -> Result<Reply, AdminError> {
    s.mutate(Change::new("bundle-key.export", Scope::Platform, Target::default()), |d, c| {
        write_secret_file(out, &d.bundle_key)?;
        c.note = Some(format!("written to {}", out.display()));
        Ok(())
    })?;
    Ok(Reply::new(format!("bundle key written to {} (mode 0600)", out.display()), json!({"path": out})))
}

/// The unattended start-up step of containers and pods: re-publish the
/// committed policy (Envoy needs a guard.json to start) and write the bundle
/// key where Envoy's start command reads it. Changes no policy.
pub fn sync(s: &Session, bundle_key_out: Option<&Path>) -> Result<Reply, AdminError> {
    let info = s.system("system.sync", |d| {
        if let Some(out) = bundle_key_out {
            write_secret_file(out, &d.bundle_key)?;
        }
        publish::publish_configured(d, None, None, s.now)
    })?;
    Ok(Reply::new(
        format!(
            "republished the committed policy as bundle version {} to {}",
            info.published.version,
            info.published.path.display()
        ),
        json!(info),
    ))
}
