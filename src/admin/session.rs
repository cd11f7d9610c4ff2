//! One admin's request, from the CLI or the HTTP service: who is acting
//! (authentication, 2FA), may they (least privilege), then the change under
//! the store lock, the audit line, and the commit.
//!
//! Bootstrap rule: while no admin has ever activated 2FA, an operator who
//! names no admin acts as `bootstrap` with platform rights (the master key is
//! the credential), so a fresh store can be set up and the first admin added.
//! The first activation of 2FA sets `two_factor_required` for good: from then
//! on every command must name an admin (`--as`, `TOKENHUB_ADMIN`, or a token
//! over HTTP), and every change needs that admin's TOTP or recovery code. An
//! admin without 2FA may then only read and enroll its own 2FA.

use super::audit::{self, AuditLog, Entry, Event, Outcome, Target};
use super::store::admins::{self, authorize, authorize_key, Actor, Need};
use super::store::{Store, StoreDoc};
use super::totp::{self, CodeKind, Refusal};
use super::AdminError;
use zeroize::Zeroizing;

/// Who the caller says it is.
pub enum Claim {
    /// No admin named (bootstrap, while 2FA is not yet required).
    Anonymous,
    /// `--as NAME` on the command line.
    Named(String),
    /// A bearer token presented to the HTTP service.
    Token(Zeroizing<String>),
}

/// Whom a read or a change is allowed to, resolved against its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Platform,
    /// The tenant of the target (after resolving a key id to its tenant).
    Tenant,
    /// The admin named in the target.
    Itself,
    Anyone,
}

/// A change as the session sees it (`mutate`).
#[derive(Debug, Clone)]
pub struct Change {
    pub action: &'static str,
    pub scope: Scope,
    pub target: Target,
    /// Changes the published policy (the HTTP service then republishes).
    pub changes_policy: bool,
    /// Needs no 2FA code (only `2fa verify`, which proves a code itself).
    pub exempt_2fa: bool,
    /// Allowed to an admin without 2FA even on a secured store (`2fa
    /// enroll`); an admin who has 2FA still proves it.
    pub enrolling: bool,
}

impl Change {
    pub fn new(action: &'static str, scope: Scope, target: Target) -> Self {
        Self { action, scope, target, changes_policy: false, exempt_2fa: false, enrolling: false }
    }
    /// An operation that changes what the filter enforces.
    pub fn policy(action: &'static str, scope: Scope, target: Target) -> Self {
        Self { changes_policy: true, ..Self::new(action, scope, target) }
    }
}

/// Given to an operation: the acting admin, the clock, and its target (which
/// it may complete, e.g. with the id of the key it created).
pub struct Ctx {
    pub actor: Actor,
    pub now: u64,
    pub target: Target,
    /// Commit the operation's changes to the store even though it fails
    /// (a failed `2fa verify` must still count the failure).
    pub keep_on_error: bool,
    /// Extra audit detail on success (never a secret).
    pub note: Option<String>,
    /// Further tenants the operation touched (e.g. the previous owner of an
    /// identity mapping): the audit line is repeated under each, so every
    /// tenant's admins see what happened to their objects.
    pub also_tenants: Vec<String>,
}

pub struct Session<'a> {
    pub store: &'a Store,
    pub claim: Claim,
    /// A TOTP or recovery code, used only for mutations.
    pub otp: Option<Zeroizing<String>>,
    /// `cli` or `http`, recorded in the audit log.
    pub via: &'static str,
    pub now: u64,
    /// Publish the bundle in the same commit as every policy change (the
    /// HTTP service, `--publish`): `publish::publish_hook`. The session
    /// knows no publisher of its own.
    pub publish: Option<PublishHook>,
}

/// Writes what the document now holds where the gateways read it.
pub type PublishHook = fn(&mut StoreDoc, u64) -> Result<(), AdminError>;

/// A refused authentication: the error for the caller, what to audit.
struct AuthFailure {
    error: AdminError,
    actor: String,
    outcome: Outcome,
}

impl AuthFailure {
    fn new(actor: &str, error: AdminError) -> Self {
        Self { error, actor: actor.to_string(), outcome: Outcome::AuthFailed }
    }
}

impl Session<'_> {
    /// Whether this store requires 2FA and named admins (see module docs).
    pub fn secured(doc: &StoreDoc) -> bool {
        doc.two_factor_required || admins::secured(&doc.admins)
    }

    /// The claimed actor's name for audit lines before authentication.
    fn claimed_name(&self) -> String {
        match &self.claim {
            Claim::Anonymous => admins::BOOTSTRAP_ACTOR.into(),
            Claim::Named(n) => n.clone(),
            Claim::Token(_) => "(token)".into(),
        }
    }

    /// Identifies the acting admin (no 2FA check).
    fn identify(&self, doc: &StoreDoc) -> Result<Actor, AuthFailure> {
        let name = match &self.claim {
            Claim::Anonymous if Self::secured(doc) => {
                return Err(AuthFailure::new(
                    "-",
                    AdminError::Auth(
                        "2FA is on for this store: name the acting admin with --as NAME (or TOKENHUB_ADMIN)".into(),
                    ),
                ))
            }
            Claim::Anonymous => return Ok(Actor::bootstrap()),
            Claim::Named(n) => n.clone(),
            Claim::Token(t) => match admins::by_token(&doc.admins, t) {
                Some(a) => a.name.clone(),
                None => return Err(AuthFailure::new("-", AdminError::Auth("invalid or revoked admin token".into()))),
            },
        };
        match admins::find(&doc.admins, &name) {
            Some(a) if a.status == crate::core::bundle::schema::Status::Active => Ok(Actor::of(a)),
            Some(_) => Err(AuthFailure::new(&name, AdminError::Auth(format!("admin {name:?} is disabled")))),
            None => Err(AuthFailure::new(
                &name,
                AdminError::Auth(format!("no admin {name:?}; list them with `tokenhub-admin admin list`")),
            )),
        }
    }

    /// Identifies the admin and, for a change, checks its second factor.
    /// Returns a note for the audit line (e.g. a recovery code was used).
    fn authenticate(&self, doc: &mut StoreDoc, change: &Change) -> Result<(Actor, Option<String>), AuthFailure> {
        let who = self.identify(doc)?;
        if who.bootstrap || change.exempt_2fa {
            return Ok((who, None));
        }
        let secured = Self::secured(doc);
        let account = admins::find_mut(&mut doc.admins, &who.name).map_err(|e| AuthFailure::new(&who.name, e))?;
        if !account.second_factor.enabled() {
            if secured && !change.enrolling {
                return Err(AuthFailure::new(
                    &who.name,
                    AdminError::Auth(format!(
                        "admin {0} has no 2FA, and every change on this store needs it: run `tokenhub-admin 2fa enroll --as {0}`",
                        who.name
                    )),
                ));
            }
            return Ok((who, None));
        }
        let Some(code) = self.otp.as_ref() else {
            return Err(AuthFailure::new(
                &who.name,
                AdminError::Auth(
                    "a 2FA code is required: --otp CODE, --otp-stdin, TOKENHUB_OTP, or the x-tokenhub-otp header"
                        .into(),
                ),
            ));
        };
        match totp::verify(&mut account.second_factor, &who.name, code, self.now) {
            Ok(CodeKind::Totp) => Ok((who, None)),
            Ok(CodeKind::Recovery) => {
                let left = account.second_factor.recovery.len();
                Ok((who, Some(format!("authenticated with a recovery code ({left} left)"))))
            }
            Err(refusal) => Err(AuthFailure {
                error: AdminError::Auth(refusal.to_string()),
                actor: who.name,
                outcome: if matches!(refusal, Refusal::Locked { .. }) { Outcome::Locked } else { Outcome::AuthFailed },
            }),
        }
    }

    /// Fills a target's tenant (and sub-account) from its key id, so both
    /// the authorization and the audit line name the tenant.
    fn resolve(doc: &StoreDoc, target: &mut Target) {
        if let Some(k) = target.key_id.as_ref().and_then(|id| doc.policy.keys.iter().find(|k| &k.id == id)) {
            target.tenant.get_or_insert_with(|| k.tenant.clone());
            target.sub_account.get_or_insert_with(|| k.sub_account.clone());
        }
        if let Some(a) = target.admin.as_ref().and_then(|n| admins::find(&doc.admins, n)) {
            if target.tenant.is_none() {
                target.tenant.clone_from(&a.tenant);
            }
        }
    }

    /// The one authorization rule, for reads and changes: may `who` act on
    /// `given` (as the caller named it) with `scope`, `resolved` being the
    /// same target with its tenant looked up. An object named by key id: a
    /// tenant admin gets the same "not found" for another tenant's key as
    /// for a missing one.
    fn authorize(who: &Actor, scope: Scope, given: &Target, resolved: &Target) -> Result<(), AdminError> {
        let by_key = given.tenant.is_none() && scope == Scope::Tenant;
        match (&given.key_id, by_key) {
            (Some(id), true) => authorize_key(who, id, resolved.tenant.as_deref()),
            _ => authorize(who, &Self::need(scope, resolved)),
        }
    }

    fn need(scope: Scope, target: &Target) -> Need {
        match scope {
            Scope::Platform => Need::Platform,
            Scope::Tenant => Need::Tenant(target.tenant.clone()),
            Scope::Itself => Need::Itself(target.admin.clone().unwrap_or_default()),
            Scope::Anyone => Need::Anyone,
        }
    }

    /// Runs a change: authenticate, authorize, apply `f` to a copy, publish
    /// if asked, audit, commit. A refusal is audited too, and 2FA counters
    /// are committed even when the change is not.
    pub fn mutate<T>(
        &self,
        change: Change,
        f: impl FnOnce(&mut StoreDoc, &mut Ctx) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        self.store.locked(|store| self.mutate_locked(store, change, f))?
    }

    fn mutate_locked<T>(
        &self,
        store: &Store,
        change: Change,
        f: impl FnOnce(&mut StoreDoc, &mut Ctx) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let mut doc = store.load()?;
        check_binding(store, &doc, true)?;
        let mut target = change.target.clone();
        Self::resolve(&doc, &mut target);
        let (actor, note) = match self.authenticate(&mut doc, &change) {
            Ok(p) => p,
            Err(fail) => {
                let event = self.event(&fail.actor, change.action, target, fail.outcome, Some(fail.error.to_string()));
                // A counted failure changed the 2FA state; commit it either way.
                self.record_and_commit(store, &mut doc, event)?;
                return Err(fail.error);
            }
        };
        if let Err(e) = Self::authorize(&actor, change.scope, &change.target, &target) {
            let event = self.event(&actor.name, change.action, target, Outcome::Denied, Some(e.to_string()));
            self.record_and_commit(store, &mut doc, event)?;
            return Err(e);
        }
        let mut work = doc.clone();
        let mut ctx = Ctx { actor, now: self.now, target, keep_on_error: false, note, also_tenants: Vec::new() };
        let result = f(&mut work, &mut ctx).and_then(|v| {
            if let (Some(publish), true) = (self.publish, change.changes_policy) {
                publish(&mut work, self.now)?;
            }
            Ok(v)
        });
        match result {
            Ok(v) => {
                let event = self.event(&ctx.actor.name, change.action, ctx.target, Outcome::Ok, ctx.note);
                let events = with_also(event, &ctx.also_tenants);
                self.record_all_and_commit(store, &mut work, events)?;
                Ok(v)
            }
            Err(e) => {
                let outcome = match e {
                    AdminError::Auth(_) => Outcome::AuthFailed,
                    AdminError::Forbidden(_) => Outcome::Denied,
                    _ => Outcome::Error,
                };
                let event = self.event(&ctx.actor.name, change.action, ctx.target, outcome, Some(e.to_string()));
                let events = with_also(event, &ctx.also_tenants);
                let keep = if ctx.keep_on_error { &mut work } else { &mut doc };
                self.record_all_and_commit(store, keep, events)?;
                Err(e)
            }
        }
    }

    /// Runs a read, authorized as a change is (`mutate`): identify the admin
    /// (no 2FA: reads change nothing), check `scope` against `target` (its
    /// tenant looked up from a key id), then hand `f` the document and the
    /// admin. A listing reads with `Scope::Anyone` and keeps only what
    /// `Actor::sees` allows.
    pub fn read<T>(
        &self,
        scope: Scope,
        target: Target,
        f: impl FnOnce(&StoreDoc, &Actor) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        self.read_checked(true, scope, target, f)
    }

    /// A read by any admin that leaves a store and log that are not bound to
    /// each other to `f` (`audit verify` reports it) instead of refusing.
    pub fn read_unbound<T>(&self, f: impl FnOnce(&StoreDoc, &Actor) -> Result<T, AdminError>) -> Result<T, AdminError> {
        self.read_checked(false, Scope::Anyone, Target::default(), f)
    }

    fn read_checked<T>(
        &self,
        check: bool,
        scope: Scope,
        target: Target,
        f: impl FnOnce(&StoreDoc, &Actor) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let mut doc = self.store.load()?;
        // Without the lock, a commit may land between loading the store and
        // reading the log's tail (the log then looks ahead): look again
        // under the lock before calling it a rollback.
        if check && check_binding(self.store, &doc, false).is_err() {
            doc = self.store.locked(|store| {
                let doc = store.load()?;
                check_binding(store, &doc, false).map(|()| doc)
            })??;
        }
        match self.identify(&doc) {
            Ok(who) => {
                let mut resolved = target.clone();
                Self::resolve(&doc, &mut resolved);
                Self::authorize(&who, scope, &target, &resolved)?;
                f(&doc, &who)
            }
            Err(fail) => {
                let event = self.event(
                    &fail.actor,
                    "auth.identify",
                    Target::default(),
                    fail.outcome,
                    Some(fail.error.to_string()),
                );
                self.store.locked(|store| self.record_only(store, event))??;
                Err(fail.error)
            }
        }
    }

    fn event(&self, actor: &str, action: &str, target: Target, outcome: Outcome, detail: Option<String>) -> Event {
        let actor = if actor == "(token)" || actor.is_empty() { self.claimed_name() } else { actor.to_string() };
        Event { actor, via: self.via, action: action.to_string(), target, outcome, detail }
    }

    /// Appends the audit line, then commits the store (with the new head).
    fn record_and_commit(&self, store: &Store, doc: &mut StoreDoc, event: Event) -> Result<(), AdminError> {
        self.record_all_and_commit(store, doc, vec![event])
    }

    /// Commits the store with the new audit lines sealed in it (and the log
    /// head they end at), then appends them to the log. A crash in between
    /// leaves a committed change whose lines are in the store, appended by
    /// the next command (`check_binding`): never a change without its audit
    /// lines, and never a log ahead of its store — so a log ahead of the
    /// store can only mean an older store.enc was put back.
    fn record_all_and_commit(&self, store: &Store, doc: &mut StoreDoc, events: Vec<Event>) -> Result<(), AdminError> {
        let key = doc.audit.key_bytes()?;
        let log = AuditLog::new(store.paths.audit());
        let last = log.last_entry(true)?;
        let entries = audit::prepare(&key, last.as_ref(), events, self.now, Some(doc.revision + 1))?;
        doc.audit.head = entries.last().map(Entry::head);
        doc.audit.pending.clone_from(&entries);
        store.commit(doc)?;
        log.write_entries(&entries).map_err(|e| {
            AdminError::Io(format!(
                "the change is committed, but its audit line could not be written ({e}); the next command appends it"
            ))
        })
    }

    /// Audits a refusal that changed nothing; the store is reloaded so only
    /// the audit head moves.
    fn record_only(&self, store: &Store, event: Event) -> Result<(), AdminError> {
        let mut doc = store.load()?;
        // Never chain onto a log that is not this store's (that would bind
        // them again silently; only `audit rebind` may).
        check_binding(store, &doc, true)?;
        self.record_and_commit(store, &mut doc, event)
    }
}

/// What to do when store and log disagree, for the operator.
const REBIND_HINT: &str = "if you restored a backup on purpose, `tokenhub-admin audit rebind` records that in the log and binds the two again (it needs the master key)";

/// Refuses a store and an audit log that are not the same point in
/// history: the log's last line must be the head the store recorded. Lines
/// of the last commit missing from the log (a crash after the commit, or
/// exactly those lines cut) are appended again when `repair` (under the
/// store lock) and accepted otherwise. A log that goes on past the store's
/// head means an older store.enc was put back (it would revive revoked keys
/// and admins); a log that ends before it means lines were cut.
pub fn check_binding(store: &Store, doc: &StoreDoc, repair: bool) -> Result<(), AdminError> {
    let log = AuditLog::new(store.paths.audit());
    let last = log.last_entry(repair)?;
    let head = doc.audit.head.clone().unwrap_or_default();
    let tip = last.as_ref().map_or(audit::GENESIS, |e| e.hash.as_str());
    if last.as_ref().map_or(head.seq == 0, |e| e.head() == head) {
        return Ok(());
    }
    if let Some(i) = doc.audit.pending.iter().position(|p| p.prev == tip) {
        return if repair { log.write_entries(&doc.audit.pending[i..]) } else { Ok(()) };
    }
    let path = log.path().display();
    Err(match last {
        Some(e) if e.seq > head.seq => AdminError::Corrupt(format!(
            "{} is older than the audit log: it is revision {} and records audit entry {} as its last, but {path} goes on to entry {}{}. An older copy of the store was put back, which would revive revoked keys and admins; refusing to use it. Recovery: put back the newest store.enc (the log's later entries say what changed since); {REBIND_HINT}",
            store.paths.store().display(),
            doc.revision,
            head.seq,
            e.seq,
            e.rev.map(|r| format!(" (revision {r})")).unwrap_or_default(),
        )),
        other => AdminError::Corrupt(format!(
            "the audit log {path} ends at entry {} but the store records entry {} as committed: lines were cut from the end of the log (or it was replaced or removed); refusing to go on. Recovery: put back the complete audit.log from a backup, then run `tokenhub-admin audit verify`; {REBIND_HINT}",
            other.map_or(0, |e| e.seq),
            head.seq
        )),
    })
}

/// The event, then a copy under each further tenant (other ids dropped:
/// they belong to the first tenant's objects).
fn with_also(event: Event, also: &[String]) -> Vec<Event> {
    let copies: Vec<Event> = also
        .iter()
        .filter(|t| event.target.tenant.as_ref() != Some(*t))
        .map(|t| {
            let mut copy = event.clone();
            copy.target = Target { tenant: Some(t.clone()), ..Target::default() };
            copy
        })
        .collect();
    std::iter::once(event).chain(copies).collect()
}

impl Session<'_> {
    /// Runs an unattended operation that changes no policy (re-publishing
    /// the committed store, exporting the bundle key for Envoy), audited as
    /// `system`. It needs only the master key, which already opens the
    /// whole store, so no admin identity or 2FA code can add protection;
    /// requiring them would make every container restart need a human.
    pub fn system<T>(
        &self,
        action: &str,
        f: impl FnOnce(&mut StoreDoc) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        self.store.locked(|store| {
            let mut doc = store.load()?;
            check_binding(store, &doc, true)?;
            let result = f(&mut doc);
            let (outcome, detail) = match &result {
                Ok(_) => (Outcome::Ok, None),
                Err(e) => (Outcome::Error, Some(e.to_string())),
            };
            let event = Event {
                actor: "system".into(),
                via: self.via,
                action: action.to_string(),
                target: Target::default(),
                outcome,
                detail,
            };
            if result.is_ok() {
                self.record_and_commit(store, &mut doc, event)?;
            } else {
                self.record_only(store, event)?;
            }
            result
        })?
    }

    /// Audits refusals that happened outside a session (the HTTP service's
    /// aggregated failed authentications): one commit for all of them.
    pub fn record_events(&self, events: Vec<Event>) -> Result<(), AdminError> {
        self.store.locked(|store| {
            let mut doc = store.load()?;
            check_binding(store, &doc, true)?;
            self.record_all_and_commit(store, &mut doc, events)
        })?
    }

    /// After a deliberate restore: records how store and log disagree as an
    /// `audit.rebind` line chained to the log's last line, and commits the
    /// store with that head. Needs only the master key, like `system`.
    pub fn rebind(&self) -> Result<String, AdminError> {
        self.store.locked(|store| {
            let mut doc = store.load()?;
            let Err(problem) = check_binding(store, &doc, true) else {
                return Err(AdminError::Usage(
                    "the store and the audit log agree; there is nothing to rebind (`tokenhub-admin audit verify` checks the whole log)".into(),
                ));
            };
            let last = AuditLog::new(store.paths.audit()).last_entry(true)?;
            let head = doc.audit.head.clone().unwrap_or_default();
            let detail = format!(
                "store revision {} recorded audit entry {}; the log ended at entry {}{}",
                doc.revision,
                head.seq,
                last.as_ref().map_or(0, |e| e.seq),
                match last.as_ref() {
                    Some(e) if e.seq > head.seq => " (an older store.enc was put back)",
                    _ => " (log lines were cut or the log replaced)",
                }
            );
            let event = Event {
                actor: "system".into(),
                via: self.via,
                action: "audit.rebind".into(),
                target: Target::default(),
                outcome: Outcome::Ok,
                detail: Some(detail.clone()),
            };
            doc.audit.pending.clear();
            self.record_all_and_commit(store, &mut doc, vec![event])?;
            drop(problem);
            Ok(detail)
        })?
    }

    /// The admin this session acts as, by name (for self-service commands).
    pub fn acting_admin(&self) -> Result<String, AdminError> {
        match &self.claim {
            Claim::Anonymous => Err(AdminError::Usage("say which admin you are: --as NAME (or TOKENHUB_ADMIN)".into())),
            Claim::Named(n) => Ok(n.clone()),
            Claim::Token(_) => self.read(Scope::Anyone, Target::default(), |_, who| Ok(who.name.clone())),
        }
    }

    /// How a change takes effect: published already, or on the next publish.
    pub fn apply_hint(&self) -> &'static str {
        if self.publish.is_some() {
            "published"
        } else {
            "publish to apply"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::audit::AuditLog;
    use crate::admin::store::admins::{AdminAccount, Role};
    use crate::admin::store::StorePaths;
    use crate::core::bundle::schema::{BundleDoc, Status, SCHEMA_VERSION};

    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const T0: u64 = 1_800_000_000;

    /// A store whose admin `root` has 2FA on (or not).
    fn store(name: &str, with_2fa: bool) -> Store {
        let dir = std::env::temp_dir().join(format!("thg-session-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(StorePaths::new(&dir), crate::admin::random_key256());
        let mut root = AdminAccount {
            name: "root".into(),
            role: Role::Platform,
            tenant: None,
            status: Status::Active,
            created_at: 0,
            second_factor: Default::default(),
            tokens: vec![],
        };
        if with_2fa {
            root.second_factor.secret = Some(SECRET.into());
        }
        let mut doc = StoreDoc::default();
        doc.policy = BundleDoc { schema: SCHEMA_VERSION, ..Default::default() };
        doc.admins = vec![root];
        doc.two_factor_required = with_2fa;
        store.create(&doc).unwrap();
        store
    }

    fn session<'a>(store: &'a Store, claim: Claim, otp: Option<&str>, now: u64) -> Session<'a> {
        Session { store, claim, otp: otp.map(|c| Zeroizing::new(c.into())), via: "cli", now, publish: None }
    }

    fn add_tenant(s: &Session, id: &str) -> Result<(), AdminError> {
        s.mutate(Change::policy("tenant.add", Scope::Platform, Target::tenant(id)), |d, c| {
            crate::admin::store::policy::add_tenant(d, id, "", "", c.now)
        })
    }

    fn code(t: u64) -> String {
        totp::code_at(SECRET, t).unwrap().to_string()
    }

    fn outcomes(store: &Store) -> Vec<Outcome> {
        AuditLog::new(store.paths.audit()).entries().unwrap().iter().map(|e| e.outcome).collect()
    }

    #[test]
    fn bootstrap_acts_anonymously_until_2fa_is_on() {
        let open = store("bootstrap", false);
        add_tenant(&session(&open, Claim::Anonymous, None, T0), "acme").unwrap();
        let entry = &AuditLog::new(open.paths.audit()).entries().unwrap()[0];
        assert_eq!((entry.actor.as_str(), entry.outcome), ("bootstrap", Outcome::Ok));

        let secured = store("secured", true);
        let e = add_tenant(&session(&secured, Claim::Anonymous, None, T0), "acme").unwrap_err();
        assert_eq!(e.exit_code(), 4);
        let e = session(&secured, Claim::Anonymous, None, T0)
            .read(Scope::Anyone, Target::default(), |_, _| Ok(()))
            .unwrap_err();
        assert_eq!(e.exit_code(), 4);
        assert_eq!(outcomes(&secured), [Outcome::AuthFailed, Outcome::AuthFailed]);
    }

    #[test]
    fn a_refused_change_still_commits_the_2fa_counters() {
        let store = store("counters", true);
        let root = || Claim::Named("root".into());
        add_tenant(&session(&store, root(), Some(&code(T0)), T0), "acme").unwrap();
        // The same code again: refused, nothing added, but the failure counted.
        assert!(add_tenant(&session(&store, root(), Some(&code(T0)), T0), "globex").is_err());
        let doc = store.load().unwrap();
        assert_eq!(doc.policy.tenants.len(), 1);
        assert_eq!(doc.admins[0].second_factor.failures, 1);
        assert_eq!(doc.admins[0].second_factor.last_step, Some(T0 / totp::STEP));
        assert_eq!(doc.audit.head.as_ref().map(|h| h.seq), Some(2));
    }

    #[test]
    fn lockout_holds_across_invocations_and_expires_with_the_clock() {
        let store = store("lockout", true);
        let root = || Claim::Named("root".into());
        for _ in 0..totp::MAX_FAILURES {
            assert!(add_tenant(&session(&store, root(), Some("000000"), T0), "x").is_err());
        }
        let later = T0 + 60;
        let e = add_tenant(&session(&store, root(), Some(&code(later)), later), "x").unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        let after = T0 + totp::LOCKOUT_SECS + 1;
        add_tenant(&session(&store, root(), Some(&code(after)), after), "x").unwrap();
        let o = outcomes(&store);
        assert_eq!(&o[o.len() - 3..], [Outcome::Locked, Outcome::Locked, Outcome::Ok]);
    }

    #[test]
    fn an_admin_without_2fa_cannot_change_a_secured_store() {
        let store = store("no-2fa", true);
        store
            .update(|d| {
                let mut ann = d.admins[0].clone();
                ann.name = "ann".into();
                ann.second_factor = Default::default();
                d.admins.push(ann);
                Ok(())
            })
            .unwrap();
        let e = add_tenant(&session(&store, Claim::Named("ann".into()), None, T0), "x").unwrap_err();
        assert!(e.to_string().contains("2fa enroll"), "{e}");
        // Reading is fine.
        let who = session(&store, Claim::Named("ann".into()), None, T0)
            .read(Scope::Anyone, Target::default(), |_, who| Ok(who.name.clone()))
            .unwrap();
        assert_eq!(who, "ann");
    }
}
