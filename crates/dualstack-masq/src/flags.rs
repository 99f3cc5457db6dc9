//! ip-masq-agent's flags that shape the rules: `--masq-chain`, `--nomasq-all-reserved-ranges`,
//! `--enable-ipv6`, `--random-fully`, `--to-ports` (upstream's `pkg/interval` syntax).

use std::fmt;

use thiserror::Error;

use crate::ruleset::BASE_CHAIN;

/// The flags, with upstream's defaults ([`MasqFlags::default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqFlags {
    /// `--masq-chain` (`IP-MASQ-AGENT`): the name of our nat chain.
    pub masq_chain: String,
    /// `--nomasq-all-reserved-ranges` (false): the default list also holds the reserved ranges.
    pub nomasq_all_reserved_ranges: bool,
    /// `--enable-ipv6` (false): manage the IPv6 table too, and accept IPv6 CIDRs.
    pub enable_ipv6: bool,
    /// `--random-fully` (true): `masquerade fully-random`.
    pub random_fully: bool,
    /// `--to-ports` (none): masquerade tcp, udp and sctp to these source ports only.
    pub to_ports: Vec<PortInterval>,
}

impl Default for MasqFlags {
    fn default() -> Self {
        MasqFlags {
            masq_chain: "IP-MASQ-AGENT".into(),
            nomasq_all_reserved_ranges: false,
            enable_ipv6: false,
            random_fully: true,
            to_ports: Vec::new(),
        }
    }
}

/// A bad flag value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlagError {
    /// An interval has more than one `-`.
    #[error("invalid interval {0:?}")]
    Interval(String),
    /// A bound is not a number (Go's `strconv.Atoi` text).
    #[error("strconv.Atoi: parsing {0:?}: invalid syntax")]
    Number(String),
    /// `first-last` with first > last.
    #[error("first is greater than last in {0:?}")]
    Reversed(String),
    /// A port above 65535 (ours: nftables needs a port number).
    #[error("port {0} is out of range 0-65535")]
    PortRange(i64),
    /// `--masq-chain` is not an nftables chain name we can own.
    #[error(
        "invalid --masq-chain {0:?}: a chain name starts with a letter and holds letters, digits, '-', '_', '.' (at most 64), and is not {BASE_CHAIN:?}"
    )]
    Chain(String),
}

/// One interval of `--to-ports` (`1024-29999` or `8080`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInterval {
    /// First port.
    pub first: u16,
    /// Last port (== first for one port).
    pub last: u16,
}

impl PortInterval {
    /// How many ports.
    pub fn size(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }
}

impl fmt::Display for PortInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

fn atoi(s: &str) -> Result<i64, FlagError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FlagError::Number(s.into()));
    }
    s.parse().map_err(|_| FlagError::Number(s.into()))
}

fn port(v: i64) -> Result<u16, FlagError> {
    u16::try_from(v).map_err(|_| FlagError::PortRange(v))
}

/// Parses `--to-ports` as upstream's `interval.ParseIntervals` (comma-separated `a` or `a-b`).
pub fn parse_to_ports(s: &str) -> Result<Vec<PortInterval>, FlagError> {
    s.split(',')
        .map(|p| {
            let parts: Vec<&str> = p.split('-').collect();
            if parts.len() > 2 {
                return Err(FlagError::Interval(p.into()));
            }
            let first = atoi(parts[0])?;
            let last = match parts.get(1) {
                Some(l) => atoi(l)?,
                None => first,
            };
            if first > last {
                return Err(FlagError::Reversed(p.into()));
            }
            Ok(PortInterval {
                first: port(first)?,
                last: port(last)?,
            })
        })
        .collect()
}

/// Checks `--masq-chain`: a plain nftables identifier, not our base chain's name.
pub fn validate_chain(name: &str) -> Result<(), FlagError> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != BASE_CHAIN;
    if ok {
        Ok(())
    } else {
        Err(FlagError::Chain(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_parse_to_ports_as_upstreams_intervals() {
        let p = parse_to_ports("1024-29999,32768-65535").unwrap();
        assert_eq!(
            p.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["1024-29999", "32768-65535"]
        );
        assert_eq!(p[0].size(), 28976);
        assert_eq!(parse_to_ports("1024,65535").unwrap()[1].size(), 1);
        for (s, e) in [
            ("1-2-3", "invalid interval \"1-2-3\""),
            ("x", "strconv.Atoi: parsing \"x\": invalid syntax"),
            ("", "strconv.Atoi: parsing \"\": invalid syntax"),
            ("20-10", "first is greater than last in \"20-10\""),
            ("1024-70000", "port 70000 is out of range 0-65535"),
        ] {
            assert_eq!(parse_to_ports(s).unwrap_err().to_string(), e, "{s}");
        }
    }

    #[test]
    fn should_accept_plain_chain_names_only() {
        assert!(validate_chain("IP-MASQ-AGENT").is_ok());
        assert!(validate_chain("masq_2.v").is_ok());
        for bad in ["", "1abc", "a b", "postrouting", "a\"b", &"x".repeat(65)] {
            assert!(validate_chain(bad).is_err(), "{bad}");
        }
    }
}
