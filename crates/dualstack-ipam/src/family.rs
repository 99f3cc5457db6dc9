//! The IP family: the one place where "IPv4" and "IPv6" are spelled.
//!
//! Every other crate of the project uses [`IpFamily`] for `spec.ipFamilies`, per-family
//! allocators and per-family rule rendering. Its serde form and its `Display` are the
//! Kubernetes spellings `IPv4` and `IPv6`.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IP family, spelled as Kubernetes spells it (`IPv4`, `IPv6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4 (32-bit addresses).
    IPv4,
    /// IPv6 (128-bit addresses).
    IPv6,
}

impl IpFamily {
    /// Both families, IPv4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::IPv4, IpFamily::IPv6];

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => IpFamily::IPv4,
            IpNet::V6(_) => IpFamily::IPv6,
        }
    }

    /// The Kubernetes spelling: `"IPv4"` or `"IPv6"`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }

    /// The other family.
    pub fn other(self) -> Self {
        match self {
            IpFamily::IPv4 => IpFamily::IPv6,
            IpFamily::IPv6 => IpFamily::IPv4,
        }
    }

    /// The address width in bits: 32 or 128.
    pub fn bits(self) -> u8 {
        match self {
            IpFamily::IPv4 => 32,
            IpFamily::IPv6 => 128,
        }
    }

    /// Parses the exact Kubernetes spelling (`"IPv4"` or `"IPv6"`, case-sensitive, as the API
    /// requires); anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(IpFamily::IPv4),
            "IPv6" => Some(IpFamily::IPv6),
            _ => None,
        }
    }

    /// The index of this family in per-family arrays: 0 for IPv4, 1 for IPv6.
    pub fn index(self) -> usize {
        match self {
            IpFamily::IPv4 => 0,
            IpFamily::IPv6 => 1,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address as an unsigned integer (IPv4 in the low 32 bits).
pub(crate) fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` with integer value `value`; for IPv4 only the low 32 bits count.
pub(crate) fn u128_to_addr(family: IpFamily, value: u128) -> IpAddr {
    match family {
        // Truncation is intended: callers only pass values that fit the family.
        IpFamily::IPv4 => IpAddr::V4((value as u32).into()),
        IpFamily::IPv6 => IpAddr::V6(value.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_spell_families_as_kubernetes_does() {
        let cases = [
            (IpFamily::IPv4, "IPv4", "\"IPv4\"", 32, IpFamily::IPv6, 0),
            (IpFamily::IPv6, "IPv6", "\"IPv6\"", 128, IpFamily::IPv4, 1),
        ];
        for (family, text, json, bits, other, index) in cases {
            assert_eq!(family.as_str(), text);
            assert_eq!(family.to_string(), text);
            assert_eq!(serde_json::to_string(&family).unwrap(), json);
            assert_eq!(serde_json::from_str::<IpFamily>(json).unwrap(), family);
            assert_eq!(IpFamily::parse(text), Some(family));
            assert_eq!(family.bits(), bits);
            assert_eq!(family.other(), other);
            assert_eq!(family.index(), index);
        }
    }

    #[test]
    fn should_reject_other_spellings() {
        for bad in ["ipv4", "IPV6", "", "IPv5", " IPv4"] {
            assert_eq!(IpFamily::parse(bad), None, "{bad:?}");
        }
        assert!(serde_json::from_str::<IpFamily>("\"ipv6\"").is_err());
    }

    #[test]
    fn should_derive_family_from_addresses_and_networks() {
        let cases: [(&str, &str, IpFamily); 2] = [
            ("10.0.0.1", "10.0.0.0/16", IpFamily::IPv4),
            ("fd00:10::1", "fd00:10::/108", IpFamily::IPv6),
        ];
        for (addr, net, family) in cases {
            assert_eq!(IpFamily::of_addr(&addr.parse().unwrap()), family);
            assert_eq!(IpFamily::of_net(&net.parse().unwrap()), family);
        }
    }

    #[test]
    fn should_round_trip_addresses_through_integers() {
        for addr in [
            "0.0.0.0",
            "10.0.0.1",
            "255.255.255.255",
            "::",
            "fd00::1",
            "ffff::ffff",
        ] {
            let ip: IpAddr = addr.parse().unwrap();
            let family = IpFamily::of_addr(&ip);
            assert_eq!(u128_to_addr(family, addr_to_u128(ip)), ip);
        }
    }
}
