//! End-to-end test harness for TokenHub Guard: a real Envoy with the guard
//! filter (delivered by filesystem ECDS), an echo upstream that reports
//! exactly what reached it, and a raw HTTP/1.1 client that sends exactly the
//! bytes a test gives it from a chosen loopback source address.
//!
//! ```no_run
//! use tokenhub_integration::{EchoUpstream, Envoy, EnvoyOptions};
//! let echo = EchoUpstream::start().unwrap();
//! let envoy = Envoy::start(EnvoyOptions::new(echo.port()));
//! assert_eq!(envoy.get("/v1/models", &[]).status, 503); // no bundle yet
//! ```

pub mod admin;
pub mod client;
pub mod control_plane;
pub mod echo;
pub mod envoy;
pub mod global;
pub mod guard;
pub mod http2;
pub mod paths;
pub mod ports;
pub mod process;
pub mod quota;
pub mod scripted;

pub use admin::{Admin, AdminOutput, IssuedKey};
pub use client::{get, get_lines, request, Connection, Response};
pub use echo::{EchoUpstream, ReceivedRequest};
pub use envoy::{guard_ecds_yaml, EcdsOutcome, Envoy, EnvoyOptions};
pub use global::{RateLimitService, Redis};
pub use ports::free_port;
pub use process::ChildGuard;
/// The HTTP/1 reader, the key-format oracle, the provider fixtures and the
/// PRNG, from the one test kit.
pub use tokenhub_testkit::{http1, keys, providers, Rng};

/// Loopback source addresses for allowlist tests.
pub mod addrs {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    pub const V4_PRIMARY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    pub const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    pub const V6_LOOPBACK: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
}
