//! `tokenhub-admin`: the sidecar that keeps the encrypted store and
//! publishes sealed bundles. Native only (behind the `admin` feature).
//!
//! The parts: `store` (the encrypted document: policy edits, admin
//! accounts), `session` (who acts, may they, audit, commit), `actions` (every
//! command, shared by both front ends), `cli` and `api` (the two front ends:
//! argument types and conversion only), `publish` (sealing the bundle),
//! `xds` (the control plane that pushes it) and `ratelimit` (the global
//! quota service).

pub mod actions;
pub mod api;
pub mod audit;
pub mod cli;
pub mod ecds;
pub mod fsutil;
pub mod logger;
pub mod publish;
pub mod ratelimit;
pub mod retention;
pub mod session;
pub mod store;
pub mod totp;
pub mod usage;
pub mod xds;

use rand::RngCore;
use std::path::Path;

/// Every failure the tool reports, each with its own exit code so scripts
/// can tell them apart.
#[derive(Debug)]
pub enum AdminError {
    /// Bad arguments or state the operator can fix (exit 2).
    Usage(String),
    /// A tenant, key, … that does not exist (exit 3).
    NotFound(String),
    /// Wrong master key, unknown admin or token, 2FA refused, locked
    /// account (exit 4).
    Auth(String),
    /// Authenticated, but the admin's role does not allow it (exit 4).
    Forbidden(String),
    /// A file that cannot be read as what it should be (exit 5).
    Corrupt(String),
    /// The policy would not pass the filter's validation (exit 6).
    Invalid(String),
    /// I/O or an unexpected failure (exit 1).
    Io(String),
    Internal(String),
}

impl AdminError {
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Self::Io(format!("{}: {e}", path.display()))
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::NotFound(_) => 3,
            Self::Auth(_) | Self::Forbidden(_) => 4,
            Self::Corrupt(_) => 5,
            Self::Invalid(_) => 6,
            Self::Io(_) | Self::Internal(_) => 1,
        }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(m)
            | Self::NotFound(m)
            | Self::Auth(m)
            | Self::Forbidden(m)
            | Self::Corrupt(m)
            | Self::Io(m)
            | Self::Internal(m) => f.write_str(m),
            Self::Invalid(m) => write!(f, "the policy would be rejected by the filter: {m}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl AdminError {
    /// A stable name for scripts and the HTTP API.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Usage(_) => "usage",
            Self::NotFound(_) => "not_found",
            Self::Auth(_) => "auth",
            Self::Forbidden(_) => "forbidden",
            Self::Corrupt(_) => "corrupt",
            Self::Invalid(_) => "invalid_policy",
            Self::Io(_) => "io",
            Self::Internal(_) => "internal",
        }
    }

    /// The HTTP status the API and the console answer this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Usage(_) => 400,
            Self::Auth(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::Invalid(_) => 422,
            Self::Corrupt(_) | Self::Io(_) | Self::Internal(_) => 500,
        }
    }
}

pub use crate::core::redact::safe_serde_error;

pub fn random_nonce() -> [u8; 12] {
    let mut n = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

pub fn random_key256() -> crate::core::crypto::Key256 {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let key = crate::core::crypto::Key256::from_bytes(b);
    zeroize::Zeroize::zeroize(&mut b);
    key
}

/// `len` random base62 characters from the OS generator.
pub fn random_base62(len: usize) -> String {
    let mut rng = rand::rngs::OsRng;
    crate::core::apikey::random_base62(len, || {
        let mut b = [0u8; 1];
        rng.fill_bytes(&mut b);
        b[0]
    })
}

/// A uniform index in `0..n` from the OS generator (`n` > 0).
pub fn random_index(n: usize) -> usize {
    use rand::Rng;
    rand::rngs::OsRng.gen_range(0..n.max(1))
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `--listen` address of a service (`serve`, `ratelimit`): IP:PORT, as
/// in `example`; off loopback only with `--allow-remote`, else a refusal
/// saying where the service `belongs`.
pub fn listen_address(
    listen: &str,
    example: &str,
    allow_remote: bool,
    belongs: &str,
) -> Result<std::net::SocketAddr, AdminError> {
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| AdminError::Usage(format!("--listen {listen:?}: expected IP:PORT, e.g. {example}")))?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(AdminError::Usage(format!(
            "refusing to listen on {addr}: {belongs}; pass --allow-remote to override"
        )));
    }
    Ok(addr)
}

/// Parses `90s`, `15m`, `24h`, `7d`, `2w` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 15m, 24h, 7d or 2w"))?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use s, m, h, d or w)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("120"), Ok(120));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
    }

    #[test]
    fn a_listen_address_is_ip_port_on_loopback_unless_allowed_off_it() {
        let usage = |r: Result<std::net::SocketAddr, AdminError>| match r {
            Err(AdminError::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(listen_address("127.0.0.1:8081", "e.g.", false, "b").unwrap().port(), 8081);
        assert_eq!(listen_address("[::1]:0", "e.g.", false, "b").unwrap().port(), 0);
        assert_eq!(listen_address("0.0.0.0:8082", "e.g.", true, "b").unwrap().to_string(), "0.0.0.0:8082");
        assert_eq!(
            usage(listen_address("localhost:80", "127.0.0.1:8081", false, "b")),
            "--listen \"localhost:80\": expected IP:PORT, e.g. 127.0.0.1:8081"
        );
        assert_eq!(
            usage(listen_address("0.0.0.0:80", "e.g.", false, "it belongs on loopback")),
            "refusing to listen on 0.0.0.0:80: it belongs on loopback; pass --allow-remote to override"
        );
    }

    #[test]
    fn random_parts_are_base62_and_distinct() {
        let a = random_base62(32);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, random_base62(32));
    }
}
