//! Free loopback ports for the processes a test starts.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// Ports already handed out by this test binary: tests run in parallel
/// threads, and a port is free again (for the kernel) the moment we drop the
/// probe listener, before the process that is meant to use it binds it.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A TCP port that is free on both 127.0.0.1 and ::1 (the Envoy listener
/// binds both) and not handed out before by this process.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(v4) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(port) = v4.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        let mut ports = handed_out().lock().unwrap_or_else(|p| p.into_inner());
        if ports.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port found after 100 tries");
}
