//! Compiled CIDR allowlists (IPv4 and IPv6).
//!
//! A list is stored as one hash set of masked network addresses per prefix
//! length in use, so a lookup costs one hash probe per distinct prefix length
//! (at most 33 for IPv4, 129 for IPv6) however many CIDRs the list holds.

use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// One allowlist. `None` at a level means "no restriction at this level";
/// an enabled list with no CIDRs denies every address.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    v4: PrefixTable<u32>,
    v6: PrefixTable<u128>,
}

#[derive(Debug, Clone)]
struct PrefixTable<T> {
    /// (prefix length, networks of that length), longest first.
    by_len: Vec<(u8, HashSet<T>)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self { by_len: Vec::new() }
    }
}

/// A CIDR string that could not be parsed; carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl std::fmt::Display for CidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not a CIDR (expected e.g. 203.0.113.0/24, 2001:db8::/32, or a single address)", self.0)
    }
}

/// The network a client address is cut to when it is logged without its
/// host part (GDPR minimisation): IPv4 /24, IPv6 /48.
pub fn truncate(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            IpAddr::V4(std::net::Ipv4Addr::new(x, y, z, 0))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    }
}

/// Parses a CIDR, or a bare address as a single-host network. Host bits set
/// below the prefix (`10.0.0.1/8`) are rejected: they usually mean a typo.
pub fn parse_cidr(text: &str) -> Result<IpNet, CidrError> {
    let err = || CidrError(text.to_string());
    if has_leading_zero_octet(text) {
        // `010.1.2.0` is 8.1.2.0 to inet_aton (octal) and 10.1.2.0 to others:
        // an allowlist must not be ambiguous (cf. CVE-2021-29921).
        return Err(err());
    }
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(text.parse::<IpAddr>().map_err(|_| err())?),
    };
    if net.trunc() != net {
        return Err(err());
    }
    Ok(match net {
        // An IPv4-mapped IPv6 network is stored as the IPv4 network it means.
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| err())?,
            None => net,
        },
        _ => net,
    })
}

/// True when a dotted-quad part (IPv4, or the tail of an IPv6 address)
/// has an octet with a leading zero.
fn has_leading_zero_octet(text: &str) -> bool {
    let addr = text.split('/').next().unwrap_or(text);
    let quad = addr.rsplit(':').next().unwrap_or(addr);
    quad.contains('.') && quad.split('.').any(|octet| octet.len() > 1 && octet.starts_with('0'))
}

impl AllowList {
    pub fn from_cidrs<'a>(cidrs: impl IntoIterator<Item = &'a str>) -> Result<Self, CidrError> {
        let mut v4: HashMap<u8, HashSet<u32>> = HashMap::new();
        let mut v6: HashMap<u8, HashSet<u128>> = HashMap::new();
        for text in cidrs {
            match parse_cidr(text)? {
                IpNet::V4(n) => {
                    v4.entry(n.prefix_len()).or_default().insert(u32::from(n.network()));
                }
                IpNet::V6(n) => {
                    v6.entry(n.prefix_len()).or_default().insert(u128::from(n.network()));
                }
            }
        }
        Ok(Self { v4: PrefixTable::from_map(v4), v6: PrefixTable::from_map(v6) })
    }

    /// True when `ip` lies inside one of the list's networks. IPv4-mapped
    /// IPv6 client addresses are matched as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.v4.contains(u32::from(v4), 32),
            IpAddr::V6(v6) => self.v6.contains(u128::from(v6), 128),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.by_len.is_empty() && self.v6.by_len.is_empty()
    }
}

impl<T> PrefixTable<T>
where
    T: Copy + Eq + std::hash::Hash + std::ops::Shr<u32, Output = T> + std::ops::Shl<u32, Output = T> + Default,
{
    fn from_map(map: HashMap<u8, HashSet<T>>) -> Self {
        let mut by_len: Vec<(u8, HashSet<T>)> = map.into_iter().collect();
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Self { by_len }
    }

    fn contains(&self, addr: T, bits: u32) -> bool {
        self.by_len.iter().any(|(len, nets)| nets.contains(&mask(addr, u32::from(*len), bits)))
    }
}

/// Keeps the top `len` bits of a `bits`-wide address.
fn mask<T>(addr: T, len: u32, bits: u32) -> T
where
    T: Copy + std::ops::Shr<u32, Output = T> + std::ops::Shl<u32, Output = T> + Default,
{
    if len == 0 {
        T::default()
    } else {
        let shift = bits - len;
        if shift == 0 {
            addr
        } else {
            (addr >> shift) << shift
        }
    }
}

#[cfg(test)]
mod tests {
    // Run by wasm-bindgen-test-runner on wasm32-unknown-unknown (make test-wasm).
    use super::*;
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn list(cidrs: &[&str]) -> AllowList {
        AllowList::from_cidrs(cidrs.iter().copied()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_ranges() {
        let l = list(&["203.0.113.0/24", "198.51.100.7/32", "10.0.0.0/8"]);
        assert!(l.contains(ip("203.0.113.0")));
        assert!(l.contains(ip("203.0.113.255")));
        assert!(!l.contains(ip("203.0.114.0")));
        assert!(l.contains(ip("198.51.100.7")));
        assert!(!l.contains(ip("198.51.100.8")));
        assert!(l.contains(ip("10.255.1.2")));
        assert!(!l.contains(ip("11.0.0.0")));
    }

    #[test]
    fn ipv6_and_mapped() {
        let l = list(&["2001:db8::/32", "::1/128", "127.0.0.1"]);
        assert!(l.contains(ip("2001:db8:ffff::1")));
        assert!(!l.contains(ip("2001:db9::1")));
        assert!(l.contains(ip("::1")));
        // A v4-mapped client address matches the v4 rule ...
        assert!(l.contains(ip("::ffff:127.0.0.1")));
        // ... and a v4-mapped rule matches the plain v4 client.
        let mapped = list(&["::ffff:192.0.2.0/120"]);
        assert!(mapped.contains(ip("192.0.2.77")));
        assert!(!mapped.contains(ip("192.0.3.1")));
    }

    #[test]
    fn zero_prefix_and_empty() {
        assert!(list(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
        assert!(!list(&["0.0.0.0/0"]).contains(ip("::2")));
        assert!(list(&["::/0"]).contains(ip("2001::1")));
        let empty = list(&[]);
        assert!(empty.is_empty());
        assert!(!empty.contains(ip("127.0.0.1")));
    }

    #[test]
    fn rejects_bad_cidrs_naming_them() {
        for bad in [
            "10.0.0.1/8",
            "300.0.0.0/8",
            "10.0.0.0/33",
            "abc",
            "",
            "2001:db8::1/32",
            "010.1.2.0/24",
            "00.0.0.0/8",
            "10.01.0.0/16",
            "::ffff:010.0.0.1",
        ] {
            let err = AllowList::from_cidrs([bad]).unwrap_err();
            assert_eq!(err.0, bad);
            assert!(err.to_string().contains("is not a CIDR"));
        }
    }

    proptest::proptest! {
        #[test]
        fn matches_ipnet_reference(a in proptest::prelude::any::<u32>(), net in proptest::prelude::any::<u32>(), len in 0u8..=32) {
            let n = ipnet::Ipv4Net::new(net.into(), len).unwrap().trunc();
            let l = list(&[n.to_string().as_str()]);
            proptest::prop_assert_eq!(l.contains(IpAddr::V4(a.into())), n.contains(&std::net::Ipv4Addr::from(a)));
        }

        #[test]
        fn matches_ipnet_reference_v6(a in proptest::prelude::any::<u128>(), net in proptest::prelude::any::<u128>(), len in 0u8..=128) {
            let n = ipnet::Ipv6Net::new(net.into(), len).unwrap().trunc();
            proptest::prop_assume!(n.addr().to_ipv4_mapped().is_none() || len < 96);
            let l = list(&[n.to_string().as_str()]);
            let addr = std::net::Ipv6Addr::from(a);
            proptest::prop_assume!(addr.to_ipv4_mapped().is_none());
            proptest::prop_assert_eq!(l.contains(IpAddr::V6(addr)), n.contains(&addr));
        }
    }
}
