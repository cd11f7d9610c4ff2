//! Admin accounts (roles, least privilege), their HTTP API tokens, and
//! their second factor (TOTP enrollment, recovery codes).

use super::render::{date, status_str, table};
use super::Reply;
use crate::admin::audit::{rfc3339, Target};
use crate::admin::session::{Change, Scope, Session};
use crate::admin::store::admins::{self, AdminAccount, Role};
use crate::admin::store::policy;
use crate::admin::store::StoreDoc;
use crate::admin::totp::{self, SecondFactor};
use crate::admin::{fsutil, random_base62, random_index, AdminError};
use crate::core::bundle::schema::Status;
use serde_json::{json, Value};
use std::path::Path;
use zeroize::Zeroizing;

/// Adds an admin. On a store without admins this is the bootstrap step, and
/// the first admin must be a platform admin (someone must be able to manage
/// the others).
pub fn add(s: &Session, name: &str, role: Role, tenant: Option<&str>) -> Result<Reply, AdminError> {
    admins::check_name(name)?;
    match (role, tenant) {
        (Role::Tenant, None) => return Err(AdminError::Usage("a tenant admin needs --tenant TENANT".into())),
        (Role::Platform, Some(_)) => {
            return Err(AdminError::Usage("a platform admin covers every tenant: drop --tenant".into()))
        }
        _ => {}
    }
    let target = Target { admin: Some(name.into()), tenant: tenant.map(Into::into), ..Target::default() };
    s.mutate(Change::new("admin.add", Scope::Platform, target), |d, c| {
        if admins::find(&d.admins, name).is_some() {
            return Err(AdminError::Usage(format!("admin {name:?} already exists")));
        }
        if d.admins.is_empty() && role != Role::Platform {
            return Err(AdminError::Usage("the first admin must be a platform admin (--role platform)".into()));
        }
        if let Some(t) = tenant {
            policy::tenant(d, t)?;
        }
        d.admins.push(AdminAccount {
            name: name.into(),
            role,
            tenant: tenant.map(Into::into),
            status: Status::Active,
            created_at: c.now,
            second_factor: SecondFactor::default(),
            tokens: Vec::new(),
        });
        Ok(())
    })?;
    Ok(Reply::new(
        format!("admin {name} added ({}); next: tokenhub-admin 2fa enroll --as {name}", role_text(role, tenant)),
        json!({"admin": name, "role": role, "tenant": tenant}),
    ))
}

fn role_text(role: Role, tenant: Option<&str>) -> String {
    match role {
        Role::Platform => "platform admin".into(),
        Role::Tenant => format!("tenant admin of {}", tenant.unwrap_or("-")),
    }
}

pub fn list(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, who| {
        let visible: Vec<&AdminAccount> =
            doc.admins.iter().filter(|a| a.name == who.name || who.sees(a.tenant.as_deref())).collect();
        let rows: Vec<Vec<String>> = visible.iter().map(|a| admin_row(a, s.now)).collect();
        let text = table(&["ADMIN", "ROLE", "TENANT", "STATUS", "2FA", "RECOVERY", "TOKENS", "CREATED"], &rows);
        Ok(Reply::new(text, Value::Array(visible.iter().map(|a| admin_json(a, s.now)).collect())))
    })
}

fn admin_row(a: &AdminAccount, now: u64) -> Vec<String> {
    vec![
        a.name.clone(),
        format!("{:?}", a.role).to_lowercase(),
        a.tenant.clone().unwrap_or_else(|| "-".into()),
        status_str(a.status).into(),
        two_fa_state(&a.second_factor, now),
        a.second_factor.recovery.len().to_string(),
        a.tokens.len().to_string(),
        date(Some(a.created_at)),
    ]
}

fn two_fa_state(sf: &SecondFactor, now: u64) -> String {
    match (sf.enabled(), sf.locked_at(now), sf.pending.is_some()) {
        (_, Some(until), _) => format!("locked until {}", rfc3339(until)),
        (true, None, _) => "on".into(),
        (false, None, true) => "pending".into(),
        (false, None, false) => "off".into(),
    }
}

/// An admin without secrets: token ids and labels, 2FA state, no hashes.
pub fn admin_json(a: &AdminAccount, now: u64) -> Value {
    json!({
        "name": a.name, "role": a.role, "tenant": a.tenant, "status": a.status, "created_at": a.created_at,
        "two_factor": {
            "enabled": a.second_factor.enabled(), "pending": a.second_factor.pending.is_some(),
            "enabled_at": a.second_factor.enabled_at, "recovery_codes_left": a.second_factor.recovery.len(),
            "locked_until": a.second_factor.locked_at(now),
        },
        "tokens": a.tokens.iter().map(|t| json!({"id": t.id, "label": t.label, "created_at": t.created_at})).collect::<Vec<_>>(),
    })
}

/// True when, after `change`, an active platform admin remains who can act
/// (one with 2FA, once 2FA is required): the store would be unmanageable
/// otherwise.
pub(super) fn keeps_a_platform_admin(doc: &StoreDoc, change: impl FnOnce(&mut Vec<AdminAccount>)) -> bool {
    let mut admins = doc.admins.clone();
    change(&mut admins);
    let secured = doc.two_factor_required;
    admins
        .iter()
        .any(|a| a.role == Role::Platform && a.status == Status::Active && (!secured || a.second_factor.enabled()))
}

pub(super) fn last_admin_error(name: &str) -> AdminError {
    AdminError::Usage(format!(
        "refusing: without {name} no platform admin (with 2FA) could manage this store; add another platform admin first"
    ))
}

pub fn set_status(s: &Session, name: &str, status: Status) -> Result<Reply, AdminError> {
    let action = if status == Status::Disabled { "admin.disable" } else { "admin.enable" };
    s.mutate(Change::new(action, Scope::Platform, Target::admin(name)), |d, _| {
        admins::find_mut(&mut d.admins, name)?;
        let apply = |admins: &mut Vec<AdminAccount>| {
            admins.iter_mut().filter(|a| a.name == name).for_each(|a| a.status = status)
        };
        if !keeps_a_platform_admin(d, apply) {
            return Err(last_admin_error(name));
        }
        admins::find_mut(&mut d.admins, name)?.status = status;
        Ok(())
    })?;
    Ok(Reply::new(format!("admin {name} {}", status_str(status)), json!({"admin": name, "status": status})))
}

pub fn remove(s: &Session, name: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::new("admin.remove", Scope::Platform, Target::admin(name)), |d, _| {
        admins::find_mut(&mut d.admins, name)?;
        if !keeps_a_platform_admin(d, |admins| admins.retain(|a| a.name != name)) {
            return Err(last_admin_error(name));
        }
        d.admins.retain(|a| a.name != name);
        Ok(())
    })?;
    Ok(Reply::new(format!("admin {name} removed"), json!({"admin": name, "removed": true})))
}

/// A token for the admin HTTP service, shown once; only its hash is kept.
pub fn token_create(s: &Session, name: &str, label: &str) -> Result<Reply, AdminError> {
    let (id, token) = s.mutate(Change::new("admin.token.create", Scope::Itself, Target::admin(name)), |d, c| {
        let account = admins::find_mut(&mut d.admins, name)?;
        let (id, token) = admins::issue_token(account, label, c.now, random_base62);
        c.target.token_id = Some(id.clone());
        Ok((id, token))
    })?;
    Ok(Reply::new(
        format!("token {id} created for admin {name}\n{}", token.as_str()),
        json!({"admin": name, "token_id": id, "token": token.as_str()}),
    )
    .shown_once(
        "This is the only time the token is shown. Send it as `authorization: Bearer TOKEN` to `tokenhub-admin serve`.",
    ))
}

pub fn token_list(s: &Session, name: &str) -> Result<Reply, AdminError> {
    s.read(Scope::Itself, Target::admin(name), |doc, _| {
        let a = admins::find(&doc.admins, name).ok_or_else(|| AdminError::NotFound(format!("no admin {name:?}")))?;
        let rows: Vec<Vec<String>> =
            a.tokens.iter().map(|t| vec![t.id.clone(), t.label.clone(), date(Some(t.created_at))]).collect();
        let json: Vec<Value> =
            a.tokens.iter().map(|t| json!({"id": t.id, "label": t.label, "created_at": t.created_at})).collect();
        Ok(Reply::new(table(&["TOKEN ID", "LABEL", "CREATED"], &rows), Value::Array(json)))
    })
}

pub fn token_revoke(s: &Session, name: &str, token_id: &str) -> Result<Reply, AdminError> {
    let target = Target { admin: Some(name.into()), token_id: Some(token_id.into()), ..Target::default() };
    s.mutate(Change::new("admin.token.revoke", Scope::Itself, target), |d, _| {
        let account = admins::find_mut(&mut d.admins, name)?;
        let before = account.tokens.len();
        account.tokens.retain(|t| t.id != token_id);
        if account.tokens.len() == before {
            return Err(AdminError::NotFound(format!("admin {name} has no token {token_id:?}")));
        }
        Ok(())
    })?;
    Ok(Reply::new(
        format!("token {token_id} of admin {name} revoked"),
        json!({"admin": name, "token_id": token_id, "revoked": true}),
    ))
}

/// Starts (or restarts) enrollment: a new secret, pending until `2fa verify`
/// proves the authenticator has it. Re-enrolling while 2FA is on needs a
/// current code, like any change.
pub fn enroll(s: &Session, png: Option<&Path>) -> Result<Reply, AdminError> {
    let name = s.acting_admin()?;
    let mut op = Change::new("2fa.enroll", Scope::Itself, Target::admin(&name));
    op.enrolling = true;
    let (secret, uri) = s.mutate(op, |d, _| {
        let account = admins::find_mut(&mut d.admins, &name)?;
        let secret = Zeroizing::new(totp::new_secret());
        let uri = totp::otpauth_uri(&secret, &name).map_err(AdminError::Internal)?;
        account.second_factor.pending = Some(secret.to_string());
        Ok((secret, uri))
    })?;
    let qr = qr_text(&uri)?;
    if let Some(path) = png {
        write_qr_png(&uri, path)?;
    }
    let mut text = format!(
        "Scan this with Google Authenticator, Authy or any TOTP app (admin {name}):\n\n{qr}\n{}\n\nor enter the secret by hand: {}\n",
        uri.as_str(),
        secret.as_str()
    );
    if let Some(p) = png {
        text.push_str(&format!("QR code also written to {} (mode 0600; delete it once scanned)\n", p.display()));
    }
    text.push_str(&format!("Then activate it: tokenhub-admin 2fa verify --as {name}   (enter the code the app shows)"));
    Ok(Reply::new(text, json!({"admin": name, "otpauth_uri": uri.as_str(), "secret": secret.as_str(), "png": png}))
        .shown_once("The QR code and URI contain the 2FA secret: do not share or log them."))
}

fn qr_code(uri: &str) -> Result<qrcode::QrCode, AdminError> {
    qrcode::QrCode::new(uri.as_bytes()).map_err(|e| AdminError::Internal(format!("QR code: {e}")))
}

/// A QR code drawn with half-block characters, light on dark so phone
/// cameras read it from a dark terminal too.
fn qr_text(uri: &str) -> Result<String, AdminError> {
    use qrcode::render::unicode::Dense1x2;
    Ok(qr_code(uri)?
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

fn write_qr_png(uri: &str, path: &Path) -> Result<(), AdminError> {
    let image = qr_code(uri)?.render::<image::Luma<u8>>().min_dimensions(256, 256).build();
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| AdminError::Internal(format!("PNG: {e}")))?;
    fsutil::write_atomic(path, bytes.get_ref(), 0o600).map_err(|e| AdminError::io(path, e))
}

/// Activates the pending secret with a code from the app, turns on 2FA for
/// the store for good, and issues the recovery codes (shown once).
pub fn verify(s: &Session) -> Result<Reply, AdminError> {
    let name = s.acting_admin()?;
    let code = s.otp.clone().ok_or_else(|| {
        AdminError::Usage("give the code the app shows: --otp CODE, --otp-stdin or TOKENHUB_OTP".into())
    })?;
    let mut op = Change::new("2fa.verify", Scope::Itself, Target::admin(&name));
    op.exempt_2fa = true;
    let codes = s.mutate(op, |d, c| {
        let account = admins::find_mut(&mut d.admins, &name)?;
        if let Err(refusal) = totp::verify_pending(&mut account.second_factor, &code, c.now) {
            // The failure counts toward the lockout: keep that change.
            c.keep_on_error = true;
            return Err(AdminError::Auth(refusal.to_string()));
        }
        let codes = totp::regenerate_recovery_codes(&mut account.second_factor, &name, random_index);
        d.two_factor_required = true;
        Ok(codes)
    })?;
    Ok(recovery_reply(&name, &codes, "2FA is on"))
}

fn recovery_reply(name: &str, codes: &[Zeroizing<String>], what: &str) -> Reply {
    let list: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    Reply::new(
        format!(
            "{what} for admin {name}. Recovery codes (each works once in place of a 2FA code; keep them offline):\n{}",
            list.join("\n")
        ),
        json!({"admin": name, "two_factor": true, "recovery_codes": list}),
    )
    .shown_once("These recovery codes are shown only now.")
}

pub fn recovery_codes(s: &Session) -> Result<Reply, AdminError> {
    let name = s.acting_admin()?;
    let codes = s.mutate(Change::new("2fa.recovery-codes", Scope::Itself, Target::admin(&name)), |d, _| {
        let account = admins::find_mut(&mut d.admins, &name)?;
        if !account.second_factor.enabled() {
            return Err(AdminError::Usage(format!("admin {name} has no 2FA yet: run `2fa enroll` first")));
        }
        Ok(totp::regenerate_recovery_codes(&mut account.second_factor, &name, random_index))
    })?;
    Ok(recovery_reply(&name, &codes, "New recovery codes (the old ones no longer work)"))
}

/// For a lost phone: a platform admin removes another admin's 2FA (and
/// unlocks it); that admin enrolls again.
pub fn reset(s: &Session, name: &str) -> Result<Reply, AdminError> {
    s.mutate(Change::new("2fa.reset", Scope::Platform, Target::admin(name)), |d, _| {
        admins::find_mut(&mut d.admins, name)?;
        let clear = |admins: &mut Vec<AdminAccount>| {
            admins.iter_mut().filter(|a| a.name == name).for_each(|a| a.second_factor = SecondFactor::default())
        };
        if !keeps_a_platform_admin(d, clear) {
            return Err(last_admin_error(name));
        }
        admins::find_mut(&mut d.admins, name)?.second_factor = SecondFactor::default();
        Ok(())
    })?;
    Ok(Reply::new(
        format!("2FA of admin {name} removed; they must run `tokenhub-admin 2fa enroll --as {name}` before changing anything"),
        json!({"admin": name, "two_factor": false}),
    ))
}

pub fn status(s: &Session) -> Result<Reply, AdminError> {
    s.read(Scope::Anyone, Target::default(), |doc, who| {
        if who.bootstrap {
            return Ok(Reply::new(
                "acting as bootstrap (no admin named); 2FA is not yet required on this store",
                json!({"admin": null, "two_factor_required": false}),
            ));
        }
        let a = admins::find(&doc.admins, &who.name).ok_or_else(|| AdminError::NotFound(who.name.clone()))?;
        let v = admin_json(a, s.now);
        Ok(Reply::new(
            format!(
                "admin {}: 2FA {}, {} recovery codes left",
                a.name,
                two_fa_state(&a.second_factor, s.now),
                a.second_factor.recovery.len()
            ),
            v,
        ))
    })
}
