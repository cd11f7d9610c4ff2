//! The console's server-side sessions. The cookie carries a random id; the
//! table holds, under the id's SHA-256, the admin it was issued to, that
//! admin's token (so every request is authorized by the session exactly as
//! an API call with the same token), the CSRF token of its forms, and its
//! age. Nothing survives a restart of the service.

use super::super::http::Head;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const COOKIE: &str = "__Host-tokenhub-console";
/// Ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// Ends this long after sign-in, however active.
pub const MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// Sessions at once (the oldest goes first).
const MAX_SESSIONS: usize = 256;

#[derive(Clone)]
pub struct Row {
    pub admin: String,
    pub token: Zeroizing<String>,
    pub csrf: String,
    created: Instant,
    seen: Instant,
    /// Recovery codes just issued, for one download within a few minutes.
    download: Option<(Zeroizing<String>, Instant)>,
}

pub struct Sessions {
    rows: Mutex<HashMap<String, Row>>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key(sid: &str) -> String {
    Sha256::digest(sid.as_bytes()).iter().map(|x| format!("{x:02x}")).collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn live(r: &Row) -> bool {
    r.seen.elapsed() < IDLE && r.created.elapsed() < MAX_AGE
}

impl Sessions {
    pub fn new() -> Self {
        Self { rows: Mutex::new(HashMap::new()) }
    }

    /// A new session for `admin`; returns the cookie's value.
    pub fn create(&self, admin: &str, token: Zeroizing<String>) -> String {
        let sid = random_hex(32);
        let now = Instant::now();
        let row = Row { admin: admin.into(), token, csrf: random_hex(32), created: now, seen: now, download: None };
        let mut rows = lock(&self.rows);
        rows.retain(|_, r| live(r));
        if rows.len() >= MAX_SESSIONS {
            if let Some(oldest) = rows.iter().min_by_key(|(_, r)| r.created).map(|(k, _)| k.clone()) {
                rows.remove(&oldest);
            }
        }
        rows.insert(key(&sid), row);
        sid
    }

    /// The live session of a cookie (and marks it used).
    pub fn get(&self, sid: &str) -> Option<Row> {
        let mut rows = lock(&self.rows);
        let k = key(sid);
        match rows.get_mut(&k) {
            Some(r) if live(r) => {
                r.seen = Instant::now();
                Some(r.clone())
            }
            Some(_) => {
                rows.remove(&k);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, sid: &str) {
        lock(&self.rows).remove(&key(sid));
    }

    /// Keeps recovery codes for one download (five minutes at most).
    pub fn keep_download(&self, sid: &str, text: Zeroizing<String>) {
        if let Some(r) = lock(&self.rows).get_mut(&key(sid)) {
            r.download = Some((text, Instant::now()));
        }
    }

    /// The kept recovery codes, once.
    pub fn take_download(&self, sid: &str) -> Option<Zeroizing<String>> {
        let mut rows = lock(&self.rows);
        let (text, at) = rows.get_mut(&key(sid))?.download.take()?;
        (at.elapsed() < Duration::from_secs(300)).then_some(text)
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

/// The session id the request's cookie carries.
pub fn cookie(head: &Head) -> Option<String> {
    let header = head.header("cookie")?;
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn set_cookie(sid: &str) -> String {
    format!("{COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}", MAX_AGE.as_secs())
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Constant-time comparison of a form's CSRF token with the session's.
pub fn same_token(given: &str, expected: &str) -> bool {
    !expected.is_empty() && given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_bound_and_removable() {
        let s = Sessions::new();
        let a = s.create("ann", Zeroizing::new("tha_x".into()));
        let b = s.create("bob", Zeroizing::new("tha_y".into()));
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(s.get(&a).unwrap().admin, "ann");
        assert_ne!(s.get(&a).unwrap().csrf, s.get(&b).unwrap().csrf);
        assert!(s.get(&"0".repeat(64)).is_none());
        s.remove(&a);
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some());
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("", ""));
        assert!(!same_token("ab", "abc"));
    }

    #[test]
    fn downloads_are_given_once() {
        let s = Sessions::new();
        let a = s.create("ann", Zeroizing::new("t".into()));
        s.keep_download(&a, Zeroizing::new("codes".into()));
        assert_eq!(s.take_download(&a).unwrap().as_str(), "codes");
        assert!(s.take_download(&a).is_none());
    }

    #[test]
    fn the_cookie_is_host_only_secure_and_strict() {
        let c = set_cookie("ab");
        for part in ["__Host-", "Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age="] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!c.contains("Domain"));
    }
}
