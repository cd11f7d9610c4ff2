//! The oracle of IP allowlists: networks and client addresses read with the
//! standard library's address parser and matched by plain bit masks,
//! independently of the core's parser (`ipnet`).

use std::net::IpAddr;
use tokenhub_testkit::fixture::List;

/// A network as the oracle sees it: IPv4 or IPv6 bits and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    V4(u32, u8),
    V6(u128, u8),
}

const MAPPED_PREFIX: u128 = 0xffff_u128 << 32;

/// Reads `addr` or `addr/len` (decimal `len` without leading zeros) with
/// the standard library's address parser (which refuses IPv4 octets with
/// leading zeros, as octal or decimal is ambiguous); `None` when malformed
/// or host bits are set. An IPv4-mapped IPv6 network of length ≥ 96 means
/// the IPv4 network.
pub fn model_rule(text: &str) -> Option<Rule> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => {
            let digits = !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_digit());
            if !digits || (l.len() > 1 && l.starts_with('0')) {
                return None;
            }
            (a.parse::<IpAddr>().ok()?, Some(l.parse::<u16>().ok()?))
        }
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    match addr {
        IpAddr::V4(a) => {
            let len = len.unwrap_or(32);
            let bits = u32::from(a);
            (len <= 32 && bits & !mask32(len as u8) == 0).then_some(Rule::V4(bits, len as u8))
        }
        IpAddr::V6(a) => {
            let len = len.unwrap_or(128);
            let bits = u128::from(a);
            if len > 128 || bits & !mask128(len as u8) != 0 {
                return None;
            }
            if len >= 96 && bits >> 32 == MAPPED_PREFIX >> 32 {
                Some(Rule::V4(bits as u32, (len - 96) as u8))
            } else {
                Some(Rule::V6(bits, len as u8))
            }
        }
    }
}

/// The most a parser may read into a text: `model_rule` after dropping
/// leading zeros from IPv4 octets and the prefix length, i.e. reading them
/// as decimal (never octal), and after reading a `::` that stands for no
/// group at all (eight groups besides it) as a plain separator.
pub fn model_rule_decimal(text: &str) -> Option<Rule> {
    fn strip(n: &str) -> &str {
        let t = n.trim_start_matches('0');
        if t.is_empty() && !n.is_empty() {
            "0"
        } else {
            t
        }
    }
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let (head, quad) = match addr.rfind(':') {
        Some(i) => addr.split_at(i + 1),
        None => ("", addr),
    };
    let quad = if quad.contains('.') {
        quad.split('.')
            .map(|o| if o.bytes().all(|b| b.is_ascii_digit()) { strip(o) } else { o })
            .collect::<Vec<_>>()
            .join(".")
    } else {
        quad.to_string()
    };
    let mut head = head.to_string();
    let quad_groups = match quad.len() {
        0 => 0,
        _ if quad.contains('.') => 2,
        _ => 1,
    };
    if head.contains("::") && head.split(':').filter(|g| !g.is_empty()).count() + quad_groups == 8 {
        head = if let Some(rest) = head.strip_prefix("::") { rest.to_string() } else { head.replacen("::", ":", 1) };
    }
    let len = len.map(|l| if l.bytes().all(|b| b.is_ascii_digit()) { strip(l) } else { l });
    model_rule(&match len {
        Some(l) => format!("{head}{quad}/{l}"),
        None => format!("{head}{quad}"),
    })
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// A client address as rules see it: IPv4-mapped IPv6 is the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if u128::from(v6) >> 32 == MAPPED_PREFIX >> 32 => {
            IpAddr::V4(std::net::Ipv4Addr::from(u128::from(v6) as u32))
        }
        other => other,
    }
}

pub fn rule_contains(rule: Rule, ip: IpAddr) -> bool {
    match (rule, canonical(ip)) {
        (Rule::V4(net, len), IpAddr::V4(a)) => u32::from(a) & mask32(len) == net,
        (Rule::V6(net, len), IpAddr::V6(a)) => u128::from(a) & mask128(len) == net,
        _ => false,
    }
}

/// Rules of a list, parsed by the model's parser.
pub fn rules(list: &List) -> Vec<Rule> {
    list.cidrs.iter().map(|c| model_rule(c).unwrap_or_else(|| panic!("fixture CIDR {c:?}"))).collect()
}
