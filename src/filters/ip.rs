//! The `ip` filter: allow or deny clients by where they connect from, as
//! nbdkit-ip-filter. `allow=` and `deny=` are comma-separated rules:
//! `all`/`any`, `anyipv4`/`allipv4`, `anyipv6`/`allipv6`,
//! `anyunix`/`allunix`, `anyvsock`/`allvsock` (never matches: no vsock
//! listener), `A.B.C.D[/NN]`, `A:B::...[/NN]`, and for Unix sockets
//! `pid:`, `uid:`, `gid:` (SO_PEERCRED) and `security:LABEL`
//! (SO_PEERSEC). A client matching an allow rule is let in; else one
//! matching a deny rule is refused before the handshake; else let in.
//! A client that is not on a socket (`-s` over pipes) is refused when
//! any rule is given (nbdkit fails closed).
//! Example: `nbdscript -U sock --filter=ip memory 1G allow=uid:1000 deny=all`.
//! Must not import tokio or rhai.

use super::FilterDef;
use crate::backend::{Backend, BackendError, Errno, Filter, Peer, Result};
use crate::params::{ConfigError, Params};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub const DEF: FilterDef = FilterDef {
    name: "ip",
    params: &[
        (
            "allow",
            "rules let in first: all, anyipv4, anyipv6, anyunix, ADDR[/NN], pid:, uid:, gid:, security:",
        ),
        ("deny", "rules refused unless allowed (same syntax)"),
    ],
    description: "allow or deny clients by address or Unix credentials",
    make,
};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Any,
    AnyV4,
    AnyV6,
    AnyUnix,
    AnyVsock,
    V4(Ipv4Addr, u32),
    V6(Ipv6Addr, u32),
    Pid(i32),
    Uid(u32),
    Gid(u32),
    Security(String),
}

fn parse_rules(key: &str, v: &str) -> std::result::Result<Vec<Rule>, ConfigError> {
    v.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse_rule(s.trim()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            ConfigError::new(format!(
                "ip: {key}={v}: expected a comma-separated list of all, anyipv4, anyipv6, \
                 anyunix, anyvsock, an IPv4 or IPv6 address (optionally /NN), pid:N, uid:N, \
                 gid:N or security:LABEL"
            ))
        })
}

fn parse_rule(s: &str) -> Option<Rule> {
    Some(match s {
        "all" | "any" => Rule::Any,
        "allipv4" | "anyipv4" => Rule::AnyV4,
        "allipv6" | "anyipv6" => Rule::AnyV6,
        "allunix" | "anyunix" => Rule::AnyUnix,
        "allvsock" | "anyvsock" => Rule::AnyVsock,
        _ => {
            if let Some(n) = s.strip_prefix("pid:") {
                return n.parse().ok().map(Rule::Pid);
            }
            if let Some(n) = s.strip_prefix("uid:") {
                return n.parse().ok().map(Rule::Uid);
            }
            if let Some(n) = s.strip_prefix("gid:") {
                return n.parse().ok().map(Rule::Gid);
            }
            if let Some(l) = s.strip_prefix("security:") {
                return (!l.is_empty()).then(|| Rule::Security(l.to_string()));
            }
            let (addr, prefix) = match s.split_once('/') {
                Some((a, p)) => (a, Some(p.parse::<u32>().ok()?)),
                None => (s, None),
            };
            match addr.parse::<IpAddr>().ok()? {
                IpAddr::V4(a) => {
                    let p = prefix.unwrap_or(32);
                    (p <= 32).then_some(Rule::V4(a, p))?
                }
                IpAddr::V6(a) => {
                    let p = prefix.unwrap_or(128);
                    (p <= 128).then_some(Rule::V6(a, p))?
                }
            }
        }
    })
}

fn prefix_match(a: u128, b: u128, prefix: u32, bits: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - prefix;
    (a >> shift) == (b >> shift)
}

impl Rule {
    fn matches(&self, peer: &Peer) -> bool {
        match (self, peer) {
            (Rule::Any, _) => true,
            (Rule::AnyV4, Peer::Tcp(a)) => a.is_ipv4(),
            (Rule::AnyV6, Peer::Tcp(a)) => a.is_ipv6(),
            (Rule::AnyUnix, Peer::Unix { .. }) => true,
            (Rule::V4(r, p), Peer::Tcp(a)) => match a.ip() {
                IpAddr::V4(c) => prefix_match(
                    u32::from(c) as u128,
                    u32::from(*r) as u128,
                    *p,
                    32,
                ),
                IpAddr::V6(_) => false,
            },
            (Rule::V6(r, p), Peer::Tcp(a)) => match a.ip() {
                IpAddr::V6(c) => prefix_match(u128::from(c), u128::from(*r), *p, 128),
                IpAddr::V4(_) => false,
            },
            (Rule::Pid(r), Peer::Unix { pid, .. }) => *pid == Some(*r),
            (Rule::Uid(r), Peer::Unix { uid, .. }) => *uid == Some(*r),
            (Rule::Gid(r), Peer::Unix { gid, .. }) => *gid == Some(*r),
            (Rule::Security(r), Peer::Unix { security, .. }) => security.as_deref() == Some(r),
            _ => false,
        }
    }
}

fn make(p: &Params) -> std::result::Result<Arc<dyn Filter>, ConfigError> {
    let allow = match p.get("allow") {
        Some(v) => parse_rules("allow", v)?,
        None => Vec::new(),
    };
    let deny = match p.get("deny") {
        Some(v) => parse_rules("deny", v)?,
        None => Vec::new(),
    };
    Ok(Arc::new(IpFilter { allow, deny }))
}

pub struct IpFilter {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl IpFilter {
    /// nbdkit's rules: allow first, then deny, else allowed.
    fn permitted(&self, peer: &Peer) -> bool {
        for r in &self.allow {
            let m = r.matches(peer);
            tracing::debug!("ip: match source with allow: {r:?} => {}", yes(m));
            if m {
                return true;
            }
        }
        for r in &self.deny {
            let m = r.matches(peer);
            tracing::debug!("ip: match source with deny: {r:?} => {}", yes(m));
            if m {
                return false;
            }
        }
        true
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl Filter for IpFilter {
    fn name(&self) -> String {
        "ip".into()
    }
    fn preconnect(&self, peer: &Peer, _readonly: bool) -> Result<()> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Ok(());
        }
        if *peer == Peer::Unknown {
            return Err(BackendError::new(
                Errno::Perm,
                "ip: the client's address is unknown (not a socket): refused",
            ));
        }
        if self.permitted(peer) {
            Ok(())
        } else {
            Err(BackendError::new(
                Errno::Perm,
                "ip: client not permitted to connect because of source address restriction",
            ))
        }
    }
    fn open(&self, next: Arc<dyn Backend>, _readonly: bool) -> Result<Arc<dyn Backend>> {
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::offset::tests::params;

    fn filter(kv: &[(&str, &str)]) -> IpFilter {
        let allow = kv
            .iter()
            .find(|(k, _)| *k == "allow")
            .map(|(_, v)| parse_rules("allow", v).unwrap())
            .unwrap_or_default();
        let deny = kv
            .iter()
            .find(|(k, _)| *k == "deny")
            .map(|(_, v)| parse_rules("deny", v).unwrap())
            .unwrap_or_default();
        IpFilter { allow, deny }
    }

    fn tcp(s: &str) -> Peer {
        Peer::Tcp(s.parse().unwrap())
    }

    fn unix(pid: i32, uid: u32, gid: u32) -> Peer {
        Peer::Unix {
            pid: Some(pid),
            uid: Some(uid),
            gid: Some(gid),
            security: None,
        }
    }

    #[test]
    fn rules_in_nbdkit_order() {
        let f = filter(&[("allow", "127.0.0.1,::1"), ("deny", "all")]);
        assert!(f.preconnect(&tcp("127.0.0.1:5"), false).is_ok());
        assert!(f.preconnect(&tcp("[::1]:5"), false).is_ok());
        assert!(f.preconnect(&tcp("10.0.0.1:5"), false).is_err());
        assert!(f.preconnect(&unix(1, 2, 3), false).is_err());
        let f = filter(&[("deny", "8.0.0.0/8")]);
        assert!(f.preconnect(&tcp("8.1.2.3:5"), false).is_err());
        assert!(f.preconnect(&tcp("9.1.2.3:5"), false).is_ok());
        let f = filter(&[("allow", "anyipv6"), ("deny", "all")]);
        assert!(f.preconnect(&tcp("[fe80::1]:5"), false).is_ok());
        assert!(f.preconnect(&tcp("1.1.1.1:5"), false).is_err());
        let f = filter(&[("allow", "fe80::/16"), ("deny", "anyipv6,anyunix")]);
        assert!(f.preconnect(&tcp("[fe80::9]:5"), false).is_ok());
        assert!(f.preconnect(&tcp("[fe81::9]:5"), false).is_err());
        assert!(f.preconnect(&tcp("1.1.1.1:5"), false).is_ok());
        assert!(f.preconnect(&unix(1, 2, 3), false).is_err());
        let f = filter(&[("allow", "uid:2,gid:9"), ("deny", "all")]);
        assert!(f.preconnect(&unix(1, 2, 3), false).is_ok());
        assert!(f.preconnect(&unix(1, 3, 9), false).is_ok());
        assert!(f.preconnect(&unix(1, 3, 3), false).is_err());
        let f = filter(&[("deny", "pid:7")]);
        assert!(f.preconnect(&unix(7, 2, 3), false).is_err());
        assert!(f.preconnect(&unix(8, 2, 3), false).is_ok());
        assert!(f.preconnect(&Peer::Unknown, false).is_err());
        assert!(filter(&[]).preconnect(&Peer::Unknown, false).is_ok());
        let f = filter(&[("allow", "security:unconfined"), ("deny", "all")]);
        let labelled = Peer::Unix {
            pid: None,
            uid: None,
            gid: None,
            security: Some("unconfined".into()),
        };
        assert!(f.preconnect(&labelled, false).is_ok());
        assert!(f.preconnect(&unix(1, 2, 3), false).is_err());
        for bad in ["1.2.3.4/33", "uid:x", "nonsense", "::1/129", "security:"] {
            assert!(make(&params(&[("allow", bad)])).is_err(), "{bad}");
        }
    }
}
