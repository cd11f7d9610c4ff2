//! The audit log: `<home>/audit.log`, append-only JSON lines, one per admin
//! operation and per failed authentication. Metadata only (who, what, which
//! ids, outcome): never a secret, an API key, a token or a 2FA code.
//!
//! Chained: each line carries `prev` (the previous line's `hash`) and its own
//! `hash`, an HMAC-SHA-256 of the line keyed by a key kept in the encrypted
//! store — so nobody without the master key can rewrite the log and recompute
//! the chain. Store and log are bound both ways: each line records `rev`,
//! the store revision it was committed with, and the store records the
//! log's head and the lines of its last commit (see `session::check_binding`):
//! an older store put back, or a log cut at the end, is refused. Appends
//! happen under the store lock and are fsynced.

use super::AdminError;
use crate::core::secret::{bytes_equal, to_hex};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest `detail` kept; longer ones are cut (an error message, never data).
const MAX_DETAIL: usize = 512;

/// The ids an operation touched. Every field is an identifier, never a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl Target {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    pub fn tenant(t: &str) -> Self {
        Self { tenant: Some(t.into()), ..Self::default() }
    }
    pub fn sub_account(t: &str, s: &str) -> Self {
        Self { tenant: Some(t.into()), sub_account: Some(s.into()), ..Self::default() }
    }
    pub fn key(k: &str) -> Self {
        Self { key_id: Some(k.into()), ..Self::default() }
    }
    pub fn admin(a: &str) -> Self {
        Self { admin: Some(a.into()), ..Self::default() }
    }
    pub fn provider(p: &str, tenant: Option<&str>) -> Self {
        Self { provider: Some(p.into()), tenant: tenant.map(Into::into), ..Self::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done (and committed).
    Ok,
    /// Authenticated, but the role does not allow it.
    Denied,
    /// Refused for another reason (not found, invalid input, …).
    Error,
    /// Unknown admin, bad token, missing, wrong or replayed 2FA code.
    AuthFailed,
    /// The attempt that locked the account, or one refused while locked.
    Locked,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1 for the first line, +1 per line.
    pub seq: u64,
    /// UTC, RFC 3339 (`2025-01-31T12:00:00Z`).
    pub time: String,
    pub actor: String,
    /// `cli` or `http`.
    pub via: String,
    /// `key.create`, `incident.revoke`, `auth.2fa`, …
    pub action: String,
    #[serde(default, skip_serializing_if = "Target::is_empty")]
    pub target: Target,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The store revision committed with this line (binds the log to the
    /// store: an older `store.enc` put back is behind the log's last `rev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<u64>,
    pub prev: String,
    pub hash: String,
    /// Set when erasure (`tenant erase`, `admin erase`) replaced this
    /// line's personal fields with `[erased]` (see `AuditLog::erase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<Erasure>,
}

/// What an erased line carries instead of its personal fields: when, and a
/// MAC (same audit key, its own domain) over the line as it now is, its
/// original `hash` and `prev` included. The original `hash` still links the
/// chain; the new MAC shows the erased line was written by a holder of the
/// audit key and not altered since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    pub at: String,
    pub mac: String,
}

/// What an erased personal field reads as.
pub const ERASED: &str = "[erased]";

/// Whose personal data an erasure removes from the log: a tenant (every
/// line naming it, and every field of such a line), keys and admins by
/// name (as target or actor).
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub tenant: Option<String>,
    pub key_ids: std::collections::BTreeSet<String>,
    pub admins: std::collections::BTreeSet<String>,
}

impl Subject {
    fn concerns(&self, e: &Entry) -> bool {
        let t = &e.target;
        (self.tenant.is_some() && t.tenant == self.tenant)
            || t.key_id.as_ref().is_some_and(|k| self.key_ids.contains(k))
            || t.admin.as_ref().is_some_and(|a| self.admins.contains(a))
            || self.admins.contains(&e.actor)
    }

    /// Replaces the subject's fields of `e` (the whole target when the
    /// line names the tenant; the detail always: it may quote a name).
    fn erase(&self, e: &mut Entry) {
        let gone = || Some(ERASED.to_string());
        let t = &mut e.target;
        let whole = self.tenant.is_some() && t.tenant == self.tenant;
        if whole {
            t.tenant = gone();
            t.sub_account = t.sub_account.as_ref().and(gone());
            t.key_id = t.key_id.as_ref().and(gone());
            t.admin = t.admin.as_ref().and(gone());
            t.token_id = t.token_id.as_ref().and(gone());
        }
        if t.key_id.as_ref().is_some_and(|k| self.key_ids.contains(k)) {
            t.key_id = gone();
        }
        if t.admin.as_ref().is_some_and(|a| self.admins.contains(a)) {
            t.admin = gone();
            t.token_id = t.token_id.as_ref().and(gone());
        }
        if self.admins.contains(&e.actor) {
            e.actor = ERASED.into();
        }
        e.detail = None;
    }
}

/// The MAC of an erased line (see `Erasure`).
pub fn erasure_mac(key: &[u8], entry: &Entry) -> Result<String, AdminError> {
    let mut unsigned = entry.clone();
    if let Some(e) = unsigned.erased.as_mut() {
        e.mac = String::new();
    }
    mac_of(key, b"tokenhub-audit-erased-v1\n", &unsigned)
}

/// Hex HMAC-SHA256 over `domain` (which kind of MAC this is) and `entry`
/// serialized (deterministic: fixed field order).
fn mac_of(key: &[u8], domain: &[u8], entry: &Entry) -> Result<String, AdminError> {
    let bytes = serde_json::to_vec(entry).map_err(|e| AdminError::Internal(e.to_string()))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| AdminError::Internal("audit key".into()))?;
    mac.update(domain);
    mac.update(&bytes);
    Ok(to_hex(&mac.finalize().into_bytes()))
}

/// What the caller knows about an event; `append` adds seq, time and chain.
#[derive(Debug, Clone)]
pub struct Event {
    pub actor: String,
    pub via: &'static str,
    pub action: String,
    pub target: Target,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

/// The last committed entry, recorded in the store (see module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// Computes an entry's `hash`: HMAC over the entry serialized with an empty
/// `hash` field. Serialization is deterministic (fixed field order).
pub fn entry_mac(key: &[u8], entry: &Entry) -> Result<String, AdminError> {
    let mut unsigned = entry.clone();
    unsigned.hash = String::new();
    mac_of(key, b"tokenhub-audit-v1\n", &unsigned)
}

impl Entry {
    pub fn head(&self) -> Head {
        Head { seq: self.seq, hash: self.hash.clone() }
    }
}

/// The entries for `events`, chained after `last` (the log's last line),
/// each recording `rev`, the store revision they are committed with.
pub fn prepare(
    key: &[u8],
    last: Option<&Entry>,
    events: Vec<Event>,
    now: u64,
    rev: Option<u64>,
) -> Result<Vec<Entry>, AdminError> {
    let (mut seq, mut prev) = last.map_or((1, GENESIS.to_string()), |e| (e.seq + 1, e.hash.clone()));
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let mut entry = Entry {
            seq,
            time: rfc3339(now),
            actor: event.actor,
            via: event.via.into(),
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            detail: event.detail.map(|d| truncate(&d)),
            rev,
            prev,
            hash: String::new(),
            erased: None,
        };
        entry.hash = entry_mac(key, &entry)?;
        seq += 1;
        prev = entry.hash.clone();
        out.push(entry);
    }
    Ok(out)
}

pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and fsyncs. The caller holds the store lock.
    pub fn append(&self, key: &[u8], event: Event, now: u64) -> Result<Head, AdminError> {
        let last = self.last_entry(true)?;
        let entries = prepare(key, last.as_ref(), vec![event], now, None)?;
        self.write_entries(&entries)?;
        entries.last().map(Entry::head).ok_or_else(|| AdminError::Internal("no audit entry".into()))
    }

    /// The last complete line as an entry (`None`: the log is empty or
    /// missing). With `cut`, an interrupted last line (no newline: its
    /// writer died) is removed first; the caller then holds the store lock.
    pub fn last_entry(&self, cut: bool) -> Result<Option<Entry>, AdminError> {
        let io = |e| AdminError::io(&self.path, e);
        let file = if cut {
            OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&self.path)
        } else {
            File::open(&self.path)
        };
        let mut file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let Some(line) = read_last_line(&mut file, cut).map_err(io)? else { return Ok(None) };
        serde_json::from_str(&line).map(Some).map_err(|_| {
            AdminError::Corrupt(format!(
                "{}: the last line is not an audit entry; run `tokenhub-admin audit verify`",
                self.path.display()
            ))
        })
    }

    /// Appends entries made by `prepare` in one write, and fsyncs. Refuses
    /// entries that do not continue the log's last line.
    pub fn write_entries(&self, entries: &[Entry]) -> Result<(), AdminError> {
        let io = |e| AdminError::io(&self.path, e);
        let Some(first) = entries.first() else { return Ok(()) };
        let last = self.last_entry(true)?;
        let tip = last.as_ref().map_or(GENESIS, |e| e.hash.as_str());
        if first.prev != tip {
            return Err(AdminError::Internal(format!(
                "{}: the entries to append do not continue the log (it changed under the lock)",
                self.path.display()
            )));
        }
        let mut bytes = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut bytes, entry).map_err(|e| AdminError::Internal(e.to_string()))?;
            bytes.push(b'\n');
        }
        let mut file = OpenOptions::new().append(true).create(true).mode(0o600).open(&self.path).map_err(io)?;
        // One write: a crash leaves at most a partial last line, which has
        // no newline and is dropped by the next append.
        file.write_all(&bytes).map_err(io)?;
        file.sync_data().map_err(io)
    }

    /// Every complete line, parsed where possible (for tail and search).
    pub fn entries(&self) -> Result<Vec<Entry>, AdminError> {
        Ok(self.lines()?.into_iter().filter_map(|(_, l)| serde_json::from_str(&l).ok()).collect())
    }

    /// Complete lines with their 1-based line numbers; a missing log is empty.
    fn lines(&self) -> Result<Vec<(usize, String)>, AdminError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(AdminError::io(&self.path, e)),
        };
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        Ok(complete.lines().enumerate().map(|(i, l)| (i + 1, l.to_string())).collect())
    }

    /// Makes `subject`'s personal fields unreadable in every line about it
    /// (`Subject::erase`), each such line sealed with an erasure MAC; the
    /// chain (`seq`, `prev`, `hash`) is kept, so `verify` still passes. The
    /// log is rewritten atomically with its mode. A subject that is a tenant
    /// also covers the key ids and admins its lines name. The caller holds
    /// the store lock. Returns how many lines were erased.
    pub fn erase(&self, key: &[u8], subject: &Subject, now: u64) -> Result<usize, AdminError> {
        // Each line with its entry; untouched lines are written back as read.
        let mut lines: Vec<(String, Option<Entry>)> =
            self.lines()?.into_iter().map(|(_, l)| (l.clone(), serde_json::from_str::<Entry>(&l).ok())).collect();
        let mut subject = subject.clone();
        if subject.tenant.is_some() {
            for e in lines.iter().filter_map(|(_, e)| e.as_ref()).filter(|e| e.target.tenant == subject.tenant) {
                subject.key_ids.extend(e.target.key_id.iter().filter(|k| k.as_str() != ERASED).cloned());
                subject.admins.extend(e.target.admin.iter().filter(|a| a.as_str() != ERASED).cloned());
            }
        }
        let mut count = 0;
        for (text, entry) in &mut lines {
            let Some(e) = entry.as_mut().filter(|e| subject.concerns(e)) else { continue };
            subject.erase(e);
            e.erased = Some(Erasure { at: rfc3339(now), mac: String::new() });
            let mac = erasure_mac(key, e)?;
            if let Some(x) = e.erased.as_mut() {
                x.mac = mac;
            }
            *text = serde_json::to_string(e).map_err(|e| AdminError::Internal(e.to_string()))?;
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let mut bytes = Vec::new();
        for (text, _) in &lines {
            bytes.extend_from_slice(text.as_bytes());
            bytes.push(b'\n');
        }
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(&self.path).map_err(|e| AdminError::io(&self.path, e))?.permissions().mode() & 0o777;
        super::fsutil::write_atomic(&self.path, &bytes, mode).map_err(|e| AdminError::io(&self.path, e))?;
        Ok(count)
    }

    /// Checks every line's MAC, the chain and the sequence, and that the
    /// entry the store recorded as committed is still there.
    pub fn verify(&self, key: &[u8], anchor: Option<&Head>) -> Result<VerifyReport, AdminError> {
        let lines = self.lines()?;
        let mut problems = Vec::new();
        let mut previous: Option<Entry> = None;
        let mut anchor_seen = false;
        for (n, text) in &lines {
            let Ok(entry) = serde_json::from_str::<Entry>(text) else {
                problems.push(Problem { line: *n, message: "not an audit entry (edited or inserted)".into() });
                previous = None;
                continue;
            };
            if let Some(erased) = &entry.erased {
                if !bytes_equal(erasure_mac(key, &entry)?.as_bytes(), erased.mac.as_bytes()) {
                    problems.push(Problem {
                        line: *n,
                        message: format!("erased entry {} was altered (its erasure MAC does not match)", entry.seq),
                    });
                }
            } else if !bytes_equal(entry_mac(key, &entry)?.as_bytes(), entry.hash.as_bytes()) {
                problems.push(Problem {
                    line: *n,
                    message: format!("entry {} was altered (its hash does not match its content)", entry.seq),
                });
            }
            check_link(*n, previous.as_ref(), &entry, &mut problems);
            if let Some(a) = anchor {
                anchor_seen |= entry.seq == a.seq && entry.hash == a.hash;
            }
            previous = Some(entry);
        }
        let last = lines.iter().rev().find_map(|(n, t)| serde_json::from_str::<Entry>(t).ok().map(|e| (*n, e)));
        if let (Some(a), Some((n, last))) = (anchor.filter(|_| anchor_seen), last) {
            if last.seq != a.seq || last.hash != a.hash {
                problems.push(Problem {
                    line: n,
                    message: format!(
                        "the store records entry {} as its last but the log goes on to entry {} (revision {}): store.enc is older than the log (an older copy was put back)",
                        a.seq,
                        last.seq,
                        last.rev.map_or_else(|| "?".to_string(), |r| r.to_string())
                    ),
                });
            }
        }
        if let Some(a) = anchor.filter(|a| a.seq > 0 && !anchor_seen) {
            problems.push(Problem {
                line: lines.len() + 1,
                message: format!(
                    "the store records entry {} as committed but the log does not contain it (lines removed from the end, or the log replaced)",
                    a.seq
                ),
            });
        }
        Ok(VerifyReport { entries: lines.len(), problems })
    }
}

/// Checks that `entry` follows `previous` (or starts the log).
fn check_link(line: usize, previous: Option<&Entry>, entry: &Entry, problems: &mut Vec<Problem>) {
    let (want_seq, want_prev) = match previous {
        Some(p) => (p.seq + 1, p.hash.as_str()),
        None if line == 1 => (1, GENESIS),
        // The line before could not be read; that was already reported.
        None => return,
    };
    if entry.prev != want_prev || entry.seq != want_seq {
        let what = if line == 1 {
            "the log does not start at entry 1 (lines removed from the start)".to_string()
        } else {
            format!(
                "entry {} does not follow entry {} on line {} (a line was removed, inserted or moved here)",
                entry.seq,
                want_seq - 1,
                line - 1
            )
        };
        problems.push(Problem { line, message: what });
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub entries: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Returns the last complete line; with `cut`, first removes an
/// interrupted last line (no newline: its writer died before the commit).
fn read_last_line(file: &mut File, cut: bool) -> io::Result<Option<String>> {
    let len = file.metadata()?.len();
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        (&mut *file).take(len - start).read_to_end(&mut buf)?;
        let Some(last_nl) = buf.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                if cut && len > 0 {
                    file.set_len(0)?;
                }
                return Ok(None);
            }
            window *= 2;
            continue;
        };
        let end = start + last_nl as u64 + 1;
        if cut && end < len {
            file.set_len(end)?;
            file.sync_data()?;
        }
        let before = &buf[..last_nl];
        match before.iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(String::from_utf8_lossy(&before[i + 1..]).into_owned())),
            None if start == 0 => return Ok(Some(String::from_utf8_lossy(before).into_owned())),
            None => window *= 2,
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_DETAIL {
        return s.to_string();
    }
    let mut end = MAX_DETAIL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: u64) -> String {
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
}

/// Howard Hinnant's civil-from-days.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A point in time for `--since` / `--until`: unix seconds, `YYYY-MM-DD`,
/// `YYYY-MM-DDTHH:MM:SSZ`, or a duration ago (`15m`, `24h`, `7d`).
pub fn parse_time(text: &str, now: u64) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(ago) = super::parse_duration(t) {
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(now.saturating_sub(ago));
        }
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{text:?}: too large"));
    }
    parse_date_time(t)
        .ok_or_else(|| format!("{text:?}: use unix seconds, 2025-01-31, 2025-01-31T12:00:00Z or an age like 24h"))
}

fn parse_date_time(t: &str) -> Option<u64> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, time) = match t.split_once('T') {
        Some((d, rest)) => (d, Some(rest.strip_suffix('Z')?)),
        None => (t, None),
    };
    let mut parts = date.split('-');
    let (y, m, d) = (num(parts.next()?)?, num(parts.next()?)?, num(parts.next()?)?);
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, m, d) * 86_400;
    if let Some(time) = time {
        let mut hms = time.split(':');
        let (h, mi, s) = (num(hms.next()?)?, num(hms.next()?)?, num(hms.next()?)?);
        if hms.next().is_some() || h > 23 || mi > 59 || s > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + s;
    }
    u64::try_from(secs).ok()
}

/// Which entries `audit search` returns (all given conditions hold), with
/// its times as `T`: as given (`String`: unix seconds, 2025-01-31,
/// 2025-01-31T12:00:00Z or an age like 24h), then parsed (`u64`).
#[derive(Debug, Clone, Default)]
pub struct Filter<T = u64> {
    pub tenant: Option<String>,
    pub key_id: Option<String>,
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.` (`key.` = every key action).
    pub action: Option<String>,
    pub since: Option<T>,
    pub until: Option<T>,
    /// Only refusals (denied, auth failures, lockouts, errors).
    pub failures: bool,
}

impl<T> Filter<T> {
    /// The same filter with `parse` applied to its times.
    pub fn parse_times<U, E>(self, parse: impl Fn(T) -> Result<U, E>) -> Result<Filter<U>, E> {
        Ok(Filter {
            since: self.since.map(&parse).transpose()?,
            until: self.until.map(&parse).transpose()?,
            tenant: self.tenant,
            key_id: self.key_id,
            actor: self.actor,
            action: self.action,
            failures: self.failures,
        })
    }
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        let action_ok = match &self.action {
            None => true,
            Some(a) if a.ends_with('.') => e.action.starts_with(a.as_str()),
            Some(a) => &e.action == a,
        };
        let time = parse_date_time(&e.time).unwrap_or(0);
        eq(&self.tenant, &e.target.tenant)
            && eq(&self.key_id, &e.target.key_id)
            && self.actor.as_ref().is_none_or(|a| &e.actor == a)
            && action_ok
            && self.since.is_none_or(|s| time >= s)
            && self.until.is_none_or(|u| time <= u)
            && (!self.failures || e.outcome != Outcome::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn temp_log(name: &str) -> AuditLog {
        let dir = crate::admin::fsutil::fresh_test_dir(&format!("audit-{name}"));
        AuditLog::new(dir.join("audit.log"))
    }

    fn event(i: usize) -> Event {
        Event {
            actor: "alice".into(),
            via: "cli",
            action: if i.is_multiple_of(2) { "key.create".into() } else { "tenant.add".into() },
            target: Target { tenant: Some(format!("t{i}")), key_id: Some(format!("k{i}")), ..Target::default() },
            outcome: Outcome::Ok,
            detail: None,
        }
    }

    /// A log of `n` lines; returns it and the head to anchor.
    fn log_with(name: &str, n: usize) -> (AuditLog, Head) {
        let log = temp_log(name);
        let mut head = Head::default();
        for i in 0..n {
            head = log.append(KEY, event(i), 1_700_000_000 + i as u64).unwrap();
        }
        (log, head)
    }

    fn rewrite(log: &AuditLog, f: impl FnOnce(&mut Vec<String>)) {
        let text = std::fs::read_to_string(log.path()).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        f(&mut lines);
        std::fs::write(log.path(), lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    }

    fn problem_lines(log: &AuditLog, head: &Head) -> Vec<usize> {
        log.verify(KEY, Some(head)).unwrap().problems.iter().map(|p| p.line).collect()
    }

    #[test]
    fn intact_log_verifies() {
        let (log, head) = log_with("intact", 5);
        let report = log.verify(KEY, Some(&head)).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        assert_eq!((report.entries, head.seq), (5, 5));
        let entries = log.entries().unwrap();
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[1].prev, entries[0].hash);
        assert_eq!(entries[4].time, "2023-11-14T22:13:24Z");
    }

    #[test]
    fn an_edit_is_named() {
        let (log, head) = log_with("edit", 5);
        rewrite(&log, |l| l[2] = l[2].replace("\"alice\"", "\"mallory\""));
        assert_eq!(problem_lines(&log, &head), vec![3]);
        // Even a recomputed plain SHA-256 would not help: the MAC needs the key.
        let msg = &log.verify(KEY, Some(&head)).unwrap().problems[0].message;
        assert!(msg.contains("altered"), "{msg}");
    }

    #[test]
    fn a_deletion_is_named() {
        let (log, head) = log_with("delete", 5);
        rewrite(&log, |l| {
            l.remove(1);
        });
        assert_eq!(problem_lines(&log, &head), vec![2]);
    }

    #[test]
    fn an_insertion_is_named() {
        let (log, head) = log_with("insert", 4);
        rewrite(&log, |l| {
            let copy = l[1].clone();
            l.insert(3, copy);
        });
        assert_eq!(problem_lines(&log, &head), vec![4, 5]);
    }

    #[test]
    fn a_reordering_is_named() {
        let (log, head) = log_with("reorder", 5);
        rewrite(&log, |l| l.swap(1, 2));
        let lines = problem_lines(&log, &head);
        assert!(lines.contains(&2) && !lines.contains(&1), "{lines:?}");
    }

    #[test]
    fn truncation_at_either_end_is_detected() {
        let (log, head) = log_with("trunc-end", 5);
        rewrite(&log, |l| l.truncate(3));
        assert_eq!(problem_lines(&log, &head), vec![4], "the store's anchor catches a cut end");
        let (log, head) = log_with("trunc-start", 5);
        rewrite(&log, |l| {
            l.remove(0);
        });
        assert_eq!(problem_lines(&log, &head), vec![1]);
        let (log, head) = log_with("gone", 3);
        std::fs::remove_file(log.path()).unwrap();
        assert_eq!(problem_lines(&log, &head), vec![1]);
    }

    #[test]
    fn the_wrong_key_fails_every_line() {
        let (log, head) = log_with("key", 3);
        let report = log.verify(b"another key, another key, anothe", Some(&head)).unwrap();
        assert_eq!(report.problems.len(), 3);
    }

    #[test]
    fn a_partial_last_line_is_dropped_by_the_next_append() {
        let (log, head) = log_with("partial", 3);
        let mut f = OpenOptions::new().append(true).open(log.path()).unwrap();
        f.write_all(b"{\"seq\":4,\"time\":\"20").unwrap();
        drop(f);
        // An interrupted write is not an entry: verify ignores it …
        assert!(log.verify(KEY, Some(&head)).unwrap().ok());
        // … and the next append replaces it.
        let next = log.append(KEY, event(9), 1_700_000_100).unwrap();
        assert_eq!(next.seq, 4);
        assert!(log.verify(KEY, Some(&next)).unwrap().ok());
        assert_eq!(log.entries().unwrap().len(), 4);
    }

    #[test]
    fn filters() {
        let (log, _) = log_with("filter", 6);
        let entries = log.entries().unwrap();
        let count = |f: Filter| entries.iter().filter(|e| f.matches(e)).count();
        assert_eq!(count(Filter::default()), 6);
        assert_eq!(count(Filter { tenant: Some("t2".into()), ..Filter::default() }), 1);
        assert_eq!(count(Filter { key_id: Some("k3".into()), ..Filter::default() }), 1);
        assert_eq!(count(Filter { action: Some("key.".into()), ..Filter::default() }), 3);
        assert_eq!(count(Filter { action: Some("key".into()), ..Filter::default() }), 0);
        assert_eq!(count(Filter { actor: Some("bob".into()), ..Filter::default() }), 0);
        assert_eq!(count(Filter { since: Some(1_700_000_002), until: Some(1_700_000_003), ..Filter::default() }), 2);
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        for t in [0u64, 951_782_400, 1_700_000_123, 4_102_444_799] {
            assert_eq!(parse_time(&rfc3339(t), 0), Ok(t));
        }
        assert_eq!(parse_time("2000-02-29", 0), Ok(951_782_400));
        assert_eq!(parse_time("1700000000", 0), Ok(1_700_000_000));
        assert_eq!(parse_time("1h", 10_000), Ok(6_400));
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2000-13-01", 0).is_err());
    }

    #[test]
    fn long_details_are_cut() {
        assert_eq!(truncate("short"), "short");
        let long = "é".repeat(400);
        assert!(truncate(&long).len() <= MAX_DETAIL + 3);
    }
}
