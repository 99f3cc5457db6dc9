//! The pod address allocator of one node, pure: one [`Range`] per family (the node's
//! podCIDRs), the set of reserved addresses and the last address handed out per range in;
//! the next free address per range out. Persistence (files, the lock) is `store.rs`.
//!
//! The rules are host-local's (`containernetworking/plugins:plugins/ipam/host-local`): the
//! usable range of a subnet starts after the network address, the gateway is the first host
//! address and is never handed out, an IPv4 range ends before the broadcast address (an IPv6
//! range at the last address), and the search starts after the last reserved address and wraps
//! around, so a freed address is not reused at once.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

/// Allocator failures.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpamError {
    /// Every address of the range is reserved (host-local's words).
    #[error("no IP addresses available in range set: {0}")]
    Exhausted(String),
    /// The subnet has no address besides network, gateway (and broadcast).
    #[error("network {0} too small to allocate from")]
    TooSmall(IpNet),
    /// Two ranges of one family were given.
    #[error("more than one range of the same family: {0} and {1}")]
    SameFamily(IpNet, IpNet),
    /// No range at all.
    #[error("no ranges to allocate from")]
    NoRanges,
}

/// One family's range: a subnet with its gateway and the first and last usable address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The subnet (masked: `10.244.1.7/24` becomes `10.244.1.0/24`).
    pub subnet: IpNet,
    /// The first host address, kept for the bridge.
    pub gateway: IpAddr,
    first: u128,
    last: u128,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        // Values of an IPv4 range fit 32 bits.
        IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into())
    } else {
        IpAddr::V6(n.into())
    }
}

impl Range {
    /// The range of `subnet`: network+1 is the gateway, network+1 ... last (broadcast-1 for
    /// IPv4) the range as host-local prints it, network+2 ... last the addresses handed out.
    pub fn from_subnet(subnet: IpNet) -> Result<Self, IpamError> {
        let subnet = subnet.trunc();
        let v4 = subnet.addr().is_ipv4();
        let net = to_u128(subnet.network());
        let mut last = to_u128(subnet.broadcast());
        if v4 {
            last = last.saturating_sub(1);
        }
        // Need network+1 (gateway) and at least network+2 for a pod.
        if last < net + 2 {
            return Err(IpamError::TooSmall(subnet));
        }
        Ok(Self {
            subnet,
            gateway: from_u128(v4, net + 1),
            first: net + 1,
            last,
        })
    }

    /// Whether the range is IPv4.
    pub fn is_ipv4(&self) -> bool {
        self.subnet.addr().is_ipv4()
    }

    /// Whether `ip` is in the range (gateway included).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && (self.first..=self.last).contains(&to_u128(ip))
    }

    /// `ip` with the subnet's prefix length, as a result's `address`.
    pub fn with_prefix(&self, ip: IpAddr) -> IpNet {
        // The prefix length comes from a valid IpNet of the same family.
        IpNet::new(ip, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }

    /// The next free address after `last_reserved` (or from the start when there is none or it
    /// is outside the range), wrapping around; the gateway is never returned.
    pub fn next_free(
        &self,
        reserved: &HashSet<IpAddr>,
        last_reserved: Option<IpAddr>,
    ) -> Result<IpAddr, IpamError> {
        let v4 = self.is_ipv4();
        let gw = to_u128(self.gateway);
        let start = match last_reserved {
            Some(ip) if self.contains(ip) => to_u128(ip),
            // Start so that the first candidate is the range's first address.
            _ => self.last,
        };
        let mut cur = start;
        // A candidate is rejected only when it is the gateway or reserved, so a free address is
        // found after at most |reserved| + 2 steps, even in an IPv6 /64.
        let size = self.last - self.first + 1;
        let bound = size.min(reserved.len() as u128 + 2);
        for _ in 0..bound {
            cur = if cur >= self.last {
                self.first
            } else {
                cur + 1
            };
            if cur == gw {
                continue;
            }
            let ip = from_u128(v4, cur);
            if !reserved.contains(&ip) {
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted(self.to_string()))
    }
}

/// host-local's range set notation: `first-last`.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v4 = self.is_ipv4();
        write!(
            f,
            "{}-{}",
            from_u128(v4, self.first),
            from_u128(v4, self.last)
        )
    }
}

/// The ranges of a node's podCIDRs, at most one per family, in the given order.
pub fn ranges(subnets: &[IpNet]) -> Result<Vec<Range>, IpamError> {
    if subnets.is_empty() {
        return Err(IpamError::NoRanges);
    }
    let mut out: Vec<Range> = Vec::with_capacity(subnets.len());
    for s in subnets {
        let r = Range::from_subnet(*s)?;
        if let Some(other) = out.iter().find(|o| o.is_ipv4() == r.is_ipv4()) {
            return Err(IpamError::SameFamily(other.subnet, r.subnet));
        }
        out.push(r);
    }
    Ok(out)
}

/// One address per range, all or nothing: `hints[i]` is the last address reserved in
/// `ranges[i]`.
pub fn allocate(
    ranges: &[Range],
    reserved: &HashSet<IpAddr>,
    hints: &[Option<IpAddr>],
) -> Result<Vec<IpAddr>, IpamError> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| r.next_free(reserved, hints.get(i).copied().flatten()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn set(ips: &[&str]) -> HashSet<IpAddr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn ranges_skip_network_and_gateway_and_the_ipv4_broadcast() {
        // (subnet, gateway, printed range, first handed out)
        let rows = [
            (
                "10.244.1.0/24",
                "10.244.1.1",
                "10.244.1.1-10.244.1.254",
                "10.244.1.2",
            ),
            (
                "fc00:0:0:1::/64",
                "fc00:0:0:1::1",
                "fc00:0:0:1::1-fc00::1:ffff:ffff:ffff:ffff",
                "fc00:0:0:1::2",
            ),
            (
                "10.244.1.77/24",
                "10.244.1.1",
                "10.244.1.1-10.244.1.254",
                "10.244.1.2",
            ),
            (
                "fd00::1234/120",
                "fd00::1201",
                "fd00::1201-fd00::12ff",
                "fd00::1202",
            ),
        ];
        for (subnet, gw, printed, first) in rows {
            let r = Range::from_subnet(net(subnet)).unwrap();
            assert_eq!(r.gateway, ip(gw), "{subnet}");
            assert_eq!(r.to_string(), printed, "{subnet}");
            assert_eq!(
                r.next_free(&HashSet::new(), None).unwrap(),
                ip(first),
                "{subnet}"
            );
            assert!(!r.contains(r.subnet.network()), "{subnet}");
        }
    }

    #[test]
    fn the_last_address_is_broadcast_for_ipv4_but_usable_for_ipv6() {
        // (subnet, reserved, next)
        let rows = [
            (
                "10.0.0.0/29",
                vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"],
                Some("10.0.0.6"),
            ),
            (
                "fd00::/125",
                vec!["fd00::2", "fd00::3", "fd00::4", "fd00::5", "fd00::6"],
                Some("fd00::7"),
            ),
            (
                "10.0.0.0/29",
                vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"],
                None,
            ),
        ];
        for (subnet, reserved, next) in rows {
            let r = Range::from_subnet(net(subnet)).unwrap();
            let got = r.next_free(&set(&reserved), None);
            match next {
                Some(n) => assert_eq!(got.unwrap(), ip(n), "{subnet}"),
                None => assert_eq!(
                    got.unwrap_err().to_string(),
                    "no IP addresses available in range set: 10.0.0.1-10.0.0.6"
                ),
            }
        }
    }

    #[test]
    fn exhaustion_names_the_range_set_for_both_families() {
        let rows = [
            (
                "10.0.0.0/30",
                vec!["10.0.0.2"],
                "no IP addresses available in range set: 10.0.0.1-10.0.0.2",
            ),
            (
                "fd00::/126",
                vec!["fd00::2", "fd00::3"],
                "no IP addresses available in range set: fd00::1-fd00::3",
            ),
        ];
        for (subnet, reserved, msg) in rows {
            let r = Range::from_subnet(net(subnet)).unwrap();
            let err = r
                .next_free(&set(&reserved), Some(ip(reserved[0])))
                .unwrap_err();
            assert_eq!(err.to_string(), msg);
        }
    }

    #[test]
    fn too_small_subnets_are_refused() {
        for s in ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::1/128"] {
            assert!(
                matches!(Range::from_subnet(net(s)), Err(IpamError::TooSmall(_))),
                "{s}"
            );
        }
        assert!(Range::from_subnet(net("10.0.0.0/30")).is_ok());
        assert!(Range::from_subnet(net("fd00::/126")).is_ok());
    }

    #[test]
    fn the_search_starts_after_the_hint_and_wraps_around() {
        // (subnet, hint, reserved, next)
        let rows = [
            ("10.0.0.0/24", "10.0.0.7", vec![], "10.0.0.8"),
            ("fd00::/64", "fd00::7", vec![], "fd00::8"),
            ("10.0.0.0/24", "10.0.0.254", vec![], "10.0.0.2"),
            ("fd00::/120", "fd00::ff", vec![], "fd00::2"),
            (
                "10.0.0.0/24",
                "10.0.0.253",
                vec!["10.0.0.254", "10.0.0.2"],
                "10.0.0.3",
            ),
            (
                "fd00::/120",
                "fd00::fe",
                vec!["fd00::ff", "fd00::2"],
                "fd00::3",
            ),
            // a hint outside the range (the node's CIDR changed) starts from the beginning
            ("10.0.0.0/24", "10.9.9.9", vec![], "10.0.0.2"),
            ("fd00::/64", "fd99::9", vec![], "fd00::2"),
        ];
        for (subnet, hint, reserved, next) in rows {
            let r = Range::from_subnet(net(subnet)).unwrap();
            assert_eq!(
                r.next_free(&set(&reserved), Some(ip(hint))).unwrap(),
                ip(next),
                "{subnet} after {hint}"
            );
        }
    }

    #[test]
    fn a_freed_address_is_not_reused_before_the_range_wraps() {
        let r = Range::from_subnet(net("10.0.0.0/29")).unwrap();
        let mut reserved = HashSet::new();
        let mut last = None;
        for _ in 0..3 {
            let a = r.next_free(&reserved, last).unwrap();
            reserved.insert(a);
            last = Some(a);
        }
        reserved.remove(&ip("10.0.0.2"));
        assert_eq!(r.next_free(&reserved, last).unwrap(), ip("10.0.0.5"));
    }

    #[test]
    fn allocate_takes_one_address_per_family_or_none() {
        let rs = ranges(&[net("10.244.1.0/24"), net("fc00:0:0:1::/64")]).unwrap();
        let got = allocate(
            &rs,
            &set(&["10.244.1.2"]),
            &[None, Some(ip("fc00:0:0:1::9"))],
        )
        .unwrap();
        assert_eq!(got, vec![ip("10.244.1.3"), ip("fc00:0:0:1::a")]);

        let small = ranges(&[net("fd00::/126"), net("10.0.0.0/30")]).unwrap();
        let err = allocate(&small, &set(&["10.0.0.2"]), &[None, None]).unwrap_err();
        assert_eq!(err, IpamError::Exhausted("10.0.0.1-10.0.0.2".into()));
    }

    #[test]
    fn ranges_hold_at_most_one_subnet_per_family() {
        assert_eq!(ranges(&[]), Err(IpamError::NoRanges));
        assert!(matches!(
            ranges(&[net("10.0.0.0/24"), net("10.1.0.0/24")]),
            Err(IpamError::SameFamily(..))
        ));
        assert!(matches!(
            ranges(&[net("fd00::/64"), net("fd01::/64")]),
            Err(IpamError::SameFamily(..))
        ));
        assert_eq!(ranges(&[net("fd00::/64")]).unwrap().len(), 1);
    }
}
