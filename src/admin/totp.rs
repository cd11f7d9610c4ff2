//! The second factor of an admin account: TOTP (RFC 6238, the codes Google
//! Authenticator and Authy show) and single-use recovery codes.
//!
//! Pure: the time is always an argument, so every rule (window, replay,
//! lockout, recovery code use) is unit-tested with fixed clocks. The caller
//! persists the mutated `SecondFactor` under the store lock.

use crate::core::secret::{bytes_equal, to_hex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Secret, TOTP};
use zeroize::Zeroizing;

/// Seconds per code (every authenticator app's default).
pub const STEP: u64 = 30;
pub const DIGITS: usize = 6;
/// Codes one step before or after the current one are accepted (clock drift).
pub const SKEW_STEPS: u64 = 1;
/// Consecutive failures that lock the account …
pub const MAX_FAILURES: u32 = 5;
/// … for this long.
pub const LOCKOUT_SECS: u64 = 15 * 60;
pub const RECOVERY_CODES: usize = 10;
/// Shown in authenticator apps next to the account name.
pub const ISSUER: &str = "TokenHub";

/// Recovery code alphabet: lower case without the look-alikes 0/o, 1/l/i.
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const RECOVERY_LEN: usize = 12;

/// One admin's 2FA state, kept in the encrypted store.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactor {
    /// Base32 secret of the active authenticator; `None` = 2FA is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Enrolled but not yet proven with a code (`2fa verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_at: Option<u64>,
    /// Highest time step accepted so far: a code of this step or an earlier
    /// one is a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<u64>,
    /// Consecutive failed attempts.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<u64>,
    /// Hex SHA-256 of each unused recovery code.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<String>,
}

/// The seeds are secrets: overwritten whenever a `SecondFactor` is dropped
/// (a loaded store, an admin copied without its 2FA state).
impl Drop for SecondFactor {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.pending.zeroize();
    }
}

impl std::fmt::Debug for SecondFactor {
    /// Never prints the secrets, so a debug dump of the store is harmless.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecondFactor")
            .field("enabled", &self.enabled())
            .field("pending", &self.pending.is_some())
            .field("last_step", &self.last_step)
            .field("failures", &self.failures)
            .field("locked_until", &self.locked_until)
            .field("recovery_codes_left", &self.recovery.len())
            .finish()
    }
}

impl SecondFactor {
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The end of the lockout, if the account is locked at `now`.
    pub fn locked_at(&self, now: u64) -> Option<u64> {
        self.locked_until.filter(|&until| now < until)
    }
}

/// Which kind of code was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    Totp,
    Recovery,
}

/// Why a code was refused. Never carries the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures; refused without checking until this time.
    Locked { until: u64 },
    /// Neither a current TOTP code nor an unused recovery code.
    Invalid,
    /// A TOTP code of a time step already used.
    Replayed,
    /// 2FA is not enabled (or nothing is pending for `verify_pending`).
    NotEnrolled,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Locked { until } => {
                write!(f, "too many failed codes: the account is locked until {}", super::audit::rfc3339(*until))
            }
            Self::Invalid => f.write_str("the 2FA code is not valid"),
            Self::Replayed => f.write_str("this 2FA code was already used; wait for the next one"),
            Self::NotEnrolled => f.write_str("2FA is not enrolled for this admin"),
        }
    }
}

/// A new random secret (160 bits, RFC 4226's recommendation), base32.
pub fn new_secret() -> String {
    match Secret::generate_secret().to_encoded() {
        Secret::Encoded(s) => s,
        // to_encoded always returns Encoded; keep the compiler honest anyway.
        Secret::Raw(bytes) => to_base32(&bytes),
    }
}

fn to_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn totp(secret_b32: &str, account: &str) -> Result<TOTP, String> {
    let bytes = Secret::Encoded(secret_b32.to_string()).to_bytes().map_err(|_| "the 2FA secret is not base32")?;
    TOTP::new(Algorithm::SHA1, DIGITS, 0, STEP, bytes, Some(ISSUER.into()), account.to_string())
        .map_err(|e| format!("2FA setup: {e}"))
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(secret_b32: &str, account: &str) -> Result<Zeroizing<String>, String> {
    Ok(Zeroizing::new(totp(secret_b32, account)?.get_url()))
}

/// The code an authenticator shows at `time` (tests and scripted setups).
pub fn code_at(secret_b32: &str, time: u64) -> Result<Zeroizing<String>, String> {
    Ok(Zeroizing::new(totp(secret_b32, "x")?.generate(time)))
}

/// The time step within ±`SKEW_STEPS` of `now` whose code is `code`.
fn matching_step(secret_b32: &str, code: &str, now: u64) -> Option<u64> {
    let t = totp(secret_b32, "x").ok()?;
    let current = now / STEP;
    let first = current.saturating_sub(SKEW_STEPS);
    // Check every candidate (no early exit) so timing does not tell which step matched.
    let mut found = None;
    for step in first..=current + SKEW_STEPS {
        let expected = Zeroizing::new(t.generate(step * STEP));
        if bytes_equal(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

fn looks_like_totp(code: &str) -> bool {
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Checks a code for an enabled account: a TOTP code (not replayed) or an
/// unused recovery code (then consumed). Counts failures and locks the
/// account after `MAX_FAILURES` in a row. `account` salts recovery hashes.
pub fn verify(sf: &mut SecondFactor, account: &str, code: &str, now: u64) -> Result<CodeKind, Refusal> {
    clear_expired_lock(sf, now)?;
    let Some(secret) = sf.secret.clone() else {
        return Err(Refusal::NotEnrolled);
    };
    let code = code.trim();
    let result = if looks_like_totp(code) {
        match matching_step(&secret, code, now) {
            Some(step) if sf.last_step.is_some_and(|last| step <= last) => Err(Refusal::Replayed),
            Some(step) => {
                sf.last_step = Some(step);
                Ok(CodeKind::Totp)
            }
            None => Err(Refusal::Invalid),
        }
    } else {
        use_recovery_code(sf, account, code)
    };
    settle(sf, result, now)
}

/// Proves a pending enrollment: the code must come from the new secret.
/// On success the pending secret becomes the active one.
pub fn verify_pending(sf: &mut SecondFactor, code: &str, now: u64) -> Result<(), Refusal> {
    clear_expired_lock(sf, now)?;
    let Some(pending) = sf.pending.clone() else {
        return Err(Refusal::NotEnrolled);
    };
    let result = match matching_step(&pending, code.trim(), now) {
        Some(step) => {
            sf.secret = Some(pending);
            sf.pending = None;
            sf.enabled_at = Some(now);
            sf.last_step = Some(step);
            Ok(CodeKind::Totp)
        }
        None => Err(Refusal::Invalid),
    };
    settle(sf, result, now).map(|_| ())
}

/// Refuses while locked; forgets the lock (and its failures) once it expired.
fn clear_expired_lock(sf: &mut SecondFactor, now: u64) -> Result<(), Refusal> {
    if let Some(until) = sf.locked_at(now) {
        return Err(Refusal::Locked { until });
    }
    if sf.locked_until.take().is_some() {
        sf.failures = 0;
    }
    Ok(())
}

/// Success resets the failure count; a failure counts and may lock.
fn settle(sf: &mut SecondFactor, result: Result<CodeKind, Refusal>, now: u64) -> Result<CodeKind, Refusal> {
    match result {
        Ok(kind) => {
            sf.failures = 0;
            Ok(kind)
        }
        Err(refusal) => {
            sf.failures = sf.failures.saturating_add(1);
            if sf.failures >= MAX_FAILURES {
                let until = now.saturating_add(LOCKOUT_SECS);
                sf.locked_until = Some(until);
                return Err(Refusal::Locked { until });
            }
            Err(refusal)
        }
    }
}

fn use_recovery_code(sf: &mut SecondFactor, account: &str, code: &str) -> Result<CodeKind, Refusal> {
    let hash = recovery_hash(account, code);
    let position = sf.recovery.iter().position(|h| bytes_equal(h.as_bytes(), hash.as_bytes()));
    match position {
        Some(i) => {
            sf.recovery.remove(i);
            Ok(CodeKind::Recovery)
        }
        None => Err(Refusal::Invalid),
    }
}

/// Recovery codes are compared after removing dashes and spaces and
/// lower-casing, so `ABCD-efgh-2345` and `abcdefgh2345` are the same code.
fn normalize(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

/// The stored form: ~59 bits of entropy behind the store's own encryption,
/// so a fast hash salted with the account name is enough.
pub fn recovery_hash(account: &str, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tokenhub-recovery-v1\0");
    h.update(account.as_bytes());
    h.update([0u8]);
    h.update(normalize(code).as_bytes());
    to_hex(&h.finalize())
}

/// Ten fresh recovery codes: shown once (returned), stored hashed (in `sf`,
/// replacing any earlier ones). `next_index` draws uniformly in 0..n.
pub fn regenerate_recovery_codes(
    sf: &mut SecondFactor,
    account: &str,
    mut next_index: impl FnMut(usize) -> usize,
) -> Vec<Zeroizing<String>> {
    let codes: Vec<Zeroizing<String>> = (0..RECOVERY_CODES)
        .map(|_| {
            let raw: String = (0..RECOVERY_LEN)
                .map(|_| char::from(RECOVERY_ALPHABET[next_index(RECOVERY_ALPHABET.len()) % RECOVERY_ALPHABET.len()]))
                .collect();
            Zeroizing::new(format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12]))
        })
        .collect();
    sf.recovery = codes.iter().map(|c| recovery_hash(account, c)).collect();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238's SHA-1 test secret ("12345678901234567890"), base32.
    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const T0: u64 = 1_700_000_010; // an arbitrary fixed clock

    fn enabled() -> SecondFactor {
        let mut sf = SecondFactor::default();
        sf.secret = Some(SECRET.into());
        sf
    }

    fn code(t: u64) -> String {
        code_at(SECRET, t).unwrap().to_string()
    }

    #[test]
    fn rfc6238_vector() {
        // RFC 6238 appendix B: T = 59 → 94287082 (8 digits); 6 digits → 287082.
        assert_eq!(code(59), "287082");
        assert_eq!(code(1_111_111_109), "081804");
    }

    #[test]
    fn accepts_current_and_adjacent_steps_only() {
        for offset in [-30i64, 0, 30] {
            let mut sf = enabled();
            let t = (T0 as i64 + offset) as u64;
            assert_eq!(verify(&mut sf, "a", &code(t), T0), Ok(CodeKind::Totp), "offset {offset}");
        }
        for offset in [-90i64, -60, 60, 90] {
            let mut sf = enabled();
            let t = (T0 as i64 + offset) as u64;
            assert_eq!(verify(&mut sf, "a", &code(t), T0), Err(Refusal::Invalid), "offset {offset}");
        }
    }

    #[test]
    fn a_code_is_never_accepted_twice() {
        let mut sf = enabled();
        let c = code(T0);
        assert_eq!(verify(&mut sf, "a", &c, T0), Ok(CodeKind::Totp));
        assert_eq!(verify(&mut sf, "a", &c, T0), Err(Refusal::Replayed));
        assert_eq!(verify(&mut sf, "a", &c, T0 + 20), Err(Refusal::Replayed), "still in the window");
        // An older step is a replay too, even if never used.
        assert_eq!(verify(&mut sf, "a", &code(T0 - 30), T0), Err(Refusal::Replayed));
        // The next step's code works.
        assert_eq!(verify(&mut sf, "a", &code(T0 + 30), T0 + 30), Ok(CodeKind::Totp));
    }

    #[test]
    fn failures_lock_the_account_then_the_lock_expires() {
        let mut sf = enabled();
        for i in 1..MAX_FAILURES {
            assert_eq!(verify(&mut sf, "a", "000000", T0), Err(Refusal::Invalid), "attempt {i}");
        }
        let until = T0 + LOCKOUT_SECS;
        assert_eq!(verify(&mut sf, "a", "000000", T0), Err(Refusal::Locked { until }));
        // Locked: even a valid code is refused, and the lock is not extended.
        assert_eq!(verify(&mut sf, "a", &code(T0 + 60), T0 + 60), Err(Refusal::Locked { until }));
        assert_eq!(sf.locked_until, Some(until));
        // After the lock: a valid code works and the failure count is reset.
        let later = until + 1;
        assert_eq!(verify(&mut sf, "a", &code(later), later), Ok(CodeKind::Totp));
        assert_eq!((sf.failures, sf.locked_until), (0, None));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let mut sf = enabled();
        for _ in 0..MAX_FAILURES - 1 {
            let _ = verify(&mut sf, "a", "000000", T0);
        }
        assert_eq!(verify(&mut sf, "a", &code(T0), T0), Ok(CodeKind::Totp));
        assert_eq!(sf.failures, 0);
        assert_eq!(verify(&mut sf, "a", "999999", T0 + 30), Err(Refusal::Invalid), "counts from zero again");
    }

    #[test]
    fn replays_count_as_failures() {
        let mut sf = enabled();
        let c = code(T0);
        verify(&mut sf, "a", &c, T0).unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            assert_eq!(verify(&mut sf, "a", &c, T0), Err(Refusal::Replayed));
        }
        assert!(matches!(verify(&mut sf, "a", &c, T0), Err(Refusal::Locked { .. })));
    }

    fn counter_rng(seed: usize) -> impl FnMut(usize) -> usize {
        let mut n = seed;
        move |m| {
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (n >> 33) % m
        }
    }

    #[test]
    fn recovery_codes_are_single_use_and_stored_hashed() {
        let mut sf = enabled();
        let codes = regenerate_recovery_codes(&mut sf, "alice", counter_rng(7));
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert_eq!(sf.recovery.len(), RECOVERY_CODES);
        let stored = serde_json::to_string(&sf).unwrap();
        for c in &codes {
            assert_eq!(c.len(), 14);
            assert!(!stored.contains(c.as_str()), "stored in clear");
        }
        // Accepted once, in any case and without dashes; then refused.
        let first = codes[0].to_uppercase().replace('-', "");
        assert_eq!(verify(&mut sf, "alice", &first, T0), Ok(CodeKind::Recovery));
        assert_eq!(verify(&mut sf, "alice", &codes[0], T0), Err(Refusal::Invalid));
        assert_eq!(sf.recovery.len(), RECOVERY_CODES - 1);
        // Bound to the account: another admin's name does not match.
        assert_eq!(verify(&mut sf, "bob", &codes[1], T0), Err(Refusal::Invalid));
        // Regenerating invalidates the old ones.
        let fresh = regenerate_recovery_codes(&mut sf, "alice", counter_rng(8));
        assert_eq!(verify(&mut sf, "alice", &codes[2], T0), Err(Refusal::Invalid));
        assert_eq!(verify(&mut sf, "alice", &fresh[2], T0), Ok(CodeKind::Recovery));
    }

    #[test]
    fn enrollment_needs_a_code_from_the_new_secret() {
        let mut sf = SecondFactor::default();
        sf.pending = Some(SECRET.into());
        assert!(!sf.enabled());
        assert_eq!(verify(&mut sf, "a", &code(T0), T0), Err(Refusal::NotEnrolled));
        assert_eq!(verify_pending(&mut sf, "123456", T0), Err(Refusal::Invalid));
        assert_eq!(verify_pending(&mut sf, &code(T0), T0), Ok(()));
        assert!(sf.enabled() && sf.pending.is_none());
        // The enrollment code is spent: it cannot authenticate a command.
        assert_eq!(verify(&mut sf, "a", &code(T0), T0), Err(Refusal::Replayed));
    }

    #[test]
    fn secrets_and_uri() {
        let s = new_secret();
        assert!(s.len() >= 32 && s.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(s, new_secret());
        let uri = otpauth_uri(&s, "alice").unwrap();
        assert!(uri.starts_with("otpauth://totp/TokenHub:alice?"), "{}", uri.as_str());
        assert!(uri.contains(&format!("secret={s}")) && uri.contains("issuer=TokenHub"));
        assert_eq!(to_base32(b"12345678901234567890"), SECRET);
        assert!(!format!("{:?}", enabled()).contains(SECRET));
    }
}
