//! Admin accounts, their roles (least privilege), their API tokens, and the
//! authorization rule every command goes through. Pure: no I/O.
//!
//! Roles: a *platform* admin may do everything; a *tenant* admin only acts
//! on the objects of its one tenant (its sub-accounts, keys, allowlists,
//! sub-account and key quotas) and sees only them.

use crate::admin::totp::SecondFactor;
use crate::admin::AdminError;
use crate::core::bundle::schema::Status;
use crate::core::secret::{bytes_equal, to_hex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including tenants, providers and other admins.
    Platform,
    /// One tenant's sub-accounts, keys, allowlists and quotas.
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminAccount {
    pub name: String,
    pub role: Role,
    /// The one tenant a tenant admin may act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default)]
    pub status: Status,
    pub created_at: u64,
    #[serde(default)]
    pub second_factor: SecondFactor,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AdminToken>,
}

/// A bearer token for the admin HTTP service; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub id: String,
    /// Hex SHA-256 (see `token_hash`).
    pub hash: String,
    pub created_at: u64,
    #[serde(default)]
    pub label: String,
}

/// Tokens look like `tha_` + 12-character id + 40-character secret (base62),
/// so secret scanners can spot a leaked one.
pub const TOKEN_PREFIX: &str = "tha_";
const TOKEN_ID_LEN: usize = 12;
const TOKEN_SECRET_LEN: usize = 40;

/// Who is acting, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    /// True for the unauthenticated operator of a store with no 2FA yet.
    pub bootstrap: bool,
}

/// The name audit entries give an unauthenticated operator.
pub const BOOTSTRAP_ACTOR: &str = "bootstrap";

impl Actor {
    pub fn bootstrap() -> Self {
        Self { name: BOOTSTRAP_ACTOR.into(), role: Role::Platform, tenant: None, bootstrap: true }
    }

    pub fn of(account: &AdminAccount) -> Self {
        Self { name: account.name.clone(), role: account.role, tenant: account.tenant.clone(), bootstrap: false }
    }

    pub fn is_platform(&self) -> bool {
        self.role == Role::Platform
    }

    /// Which tenants this actor may see and act on: every one for a
    /// platform admin, its own for a tenant admin (never an object of no
    /// tenant). The one filter of every listing and of `authorize`.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        self.is_platform() || (tenant.is_some() && self.tenant.as_deref() == tenant)
    }
}

/// What an operation requires of the acting admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Platform admins only.
    Platform,
    /// Platform admins, or the admin of this tenant (`None`: the object was
    /// not found, so only a platform admin gets to hear that).
    Tenant(Option<String>),
    /// The named admin itself, or a platform admin.
    Itself(String),
    /// Any authenticated admin.
    Anyone,
}

/// The least-privilege rule. The message says what would be needed.
pub fn authorize(who: &Actor, need: &Need) -> Result<(), AdminError> {
    let allowed = match need {
        Need::Platform => who.is_platform(),
        Need::Tenant(Some(t)) => who.sees(Some(t)),
        Need::Tenant(None) => who.is_platform(),
        Need::Itself(name) => who.is_platform() || &who.name == name,
        Need::Anyone => true,
    };
    if allowed {
        return Ok(());
    }
    let scope = who.tenant.as_deref().unwrap_or("-");
    Err(AdminError::Forbidden(match need {
        Need::Platform => {
            format!("admin {} (tenant admin of {scope}) may not do this: it needs a platform admin", who.name)
        }
        Need::Tenant(Some(t)) => format!("admin {} may only act on tenant {scope}, not {t}", who.name),
        Need::Tenant(None) => format!("admin {} may only act on objects of tenant {scope}", who.name),
        Need::Itself(name) => format!("admin {} may not act for admin {name}", who.name),
        Need::Anyone => String::new(),
    }))
}

/// What a caller who may not see a key is told: exactly what it is told
/// for a key that does not exist, so a tenant admin cannot learn that an
/// id belongs to another tenant (or which one).
pub fn no_such_key(id: &str) -> AdminError {
    AdminError::NotFound(format!("no key {id:?}; list them with `tokenhub-admin key list`"))
}

/// `authorize` for an object named by key id, whose tenant (`None`: no such
/// key) was looked up from the key: a refusal is "not found", never "it is
/// tenant X's".
pub fn authorize_key(who: &Actor, key_id: &str, tenant: Option<&str>) -> Result<(), AdminError> {
    match tenant {
        Some(t) if who.sees(Some(t)) => Ok(()),
        None if who.is_platform() => Ok(()),
        _ => Err(no_such_key(key_id)),
    }
}

/// Admin names end up in otpauth URIs and audit lines: a small alphabet.
pub fn check_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        && name != BOOTSTRAP_ACTOR;
    if ok {
        Ok(())
    } else {
        Err(AdminError::Usage(format!(
            "admin name {name:?}: use 1-64 characters of a-z A-Z 0-9 - _ . @ (and not {BOOTSTRAP_ACTOR:?})"
        )))
    }
}

/// The store is *secured* once any active admin has 2FA enabled: from then
/// on nobody acts without naming an admin, and every mutation needs a code.
pub fn secured(admins: &[AdminAccount]) -> bool {
    admins.iter().any(|a| a.status == Status::Active && a.second_factor.enabled())
}

pub fn find<'a>(admins: &'a [AdminAccount], name: &str) -> Option<&'a AdminAccount> {
    admins.iter().find(|a| a.name == name)
}

pub fn find_mut<'a>(admins: &'a mut [AdminAccount], name: &str) -> Result<&'a mut AdminAccount, AdminError> {
    admins
        .iter_mut()
        .find(|a| a.name == name)
        .ok_or_else(|| AdminError::NotFound(format!("no admin {name:?}; list them with `tokenhub-admin admin list`")))
}

/// Platform admins that are active and not `except`: removing or demoting
/// the last one would leave nobody able to manage tenants and admins.
pub fn other_platform_admins(admins: &[AdminAccount], except: &str) -> usize {
    admins.iter().filter(|a| a.role == Role::Platform && a.status == Status::Active && a.name != except).count()
}

fn token_hash(id: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tokenhub-admin-token-v1\0");
    h.update(id.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    to_hex(&h.finalize())
}

/// Creates a token for `account`; returns it (shown once) and its id.
pub fn issue_token(
    account: &mut AdminAccount,
    label: &str,
    now: u64,
    random: impl Fn(usize) -> String,
) -> (String, Zeroizing<String>) {
    let id = random(TOKEN_ID_LEN);
    let secret = Zeroizing::new(random(TOKEN_SECRET_LEN));
    account.tokens.push(AdminToken {
        id: id.clone(),
        hash: token_hash(&id, &secret),
        created_at: now,
        label: label.into(),
    });
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{id}{}", secret.as_str()));
    (id, token)
}

/// The active admin a presented token belongs to, if any.
pub fn by_token<'a>(admins: &'a [AdminAccount], token: &str) -> Option<&'a AdminAccount> {
    let body = token.strip_prefix(TOKEN_PREFIX)?;
    if body.len() != TOKEN_ID_LEN + TOKEN_SECRET_LEN || !body.is_char_boundary(TOKEN_ID_LEN) {
        return None;
    }
    let (id, secret) = body.split_at(TOKEN_ID_LEN);
    let presented = token_hash(id, secret);
    admins
        .iter()
        .filter(|a| a.status == Status::Active)
        .find(|a| a.tokens.iter().any(|t| t.id == id && bytes_equal(t.hash.as_bytes(), presented.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, role: Role, tenant: Option<&str>) -> AdminAccount {
        AdminAccount {
            name: name.into(),
            role,
            tenant: tenant.map(Into::into),
            status: Status::Active,
            created_at: 0,
            second_factor: SecondFactor::default(),
            tokens: vec![],
        }
    }

    #[test]
    fn least_privilege() {
        let platform = Actor::of(&account("root", Role::Platform, None));
        let acme = Actor::of(&account("ann", Role::Tenant, Some("acme")));
        for need in [Need::Platform, Need::Tenant(Some("acme".into())), Need::Tenant(None), Need::Anyone] {
            assert!(authorize(&platform, &need).is_ok(), "{need:?}");
        }
        assert!(authorize(&acme, &Need::Tenant(Some("acme".into()))).is_ok());
        assert!(authorize(&acme, &Need::Anyone).is_ok());
        assert!(authorize(&acme, &Need::Itself("ann".into())).is_ok());
        let denied =
            [Need::Platform, Need::Tenant(Some("globex".into())), Need::Tenant(None), Need::Itself("root".into())];
        for need in denied {
            let e = authorize(&acme, &need).unwrap_err();
            assert_eq!(e.exit_code(), 4, "{need:?}");
        }
        assert!(Actor::bootstrap().is_platform());
    }

    #[test]
    fn names() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("ops.team-1@acme").is_ok());
        for bad in ["", "a:b", "a b", "bootstrap", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_checked() {
        let mut n = 0u8;
        let random = |len: usize| {
            n = n.wrapping_add(1);
            "x".repeat(len - 1) + &char::from(b'a' + n % 26).to_string()
        };
        let mut a = account("root", Role::Platform, None);
        let random = std::cell::RefCell::new(random);
        let (id, token) = issue_token(&mut a, "ci", 5, |len| (random.borrow_mut())(len));
        assert!(token.starts_with("tha_") && token.contains(&id));
        assert!(!serde_json::to_string(&a).unwrap().contains(&token[4 + 12..]));
        let admins = vec![a];
        assert_eq!(by_token(&admins, &token).map(|a| a.name.as_str()), Some("root"));
        let mut wrong = token.to_string();
        wrong.pop();
        wrong.push('#');
        assert!(by_token(&admins, &wrong).is_none());
        assert!(by_token(&admins, "tha_short").is_none());
        assert!(by_token(&admins, "").is_none());
        let mut disabled = admins.clone();
        disabled[0].status = Status::Disabled;
        assert!(by_token(&disabled, &token).is_none(), "a disabled admin's tokens stop working");
    }

    #[test]
    fn secured_when_any_active_admin_has_2fa() {
        let mut a = account("root", Role::Platform, None);
        assert!(!secured(std::slice::from_ref(&a)));
        a.second_factor.secret = Some("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into());
        assert!(secured(std::slice::from_ref(&a)));
        a.status = Status::Disabled;
        assert!(!secured(&[a]));
    }
}
