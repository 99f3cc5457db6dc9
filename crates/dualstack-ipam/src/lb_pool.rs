//! LoadBalancer IP pools: addresses for `status.loadBalancer.ingress`, both families in one pool.
//!
//! A pool is built from entries, each a CIDR (`192.0.2.0/28`, `2001:db8:lb::/120`), an inclusive
//! range `FIRST-LAST` (`192.0.2.10-192.0.2.20`, `2001:db8::10-2001:db8::1f`) or a single address.
//! Families may be mixed in one pool; the two ends of a range must be of one family.
//!
//! * Both families leave out the network address of a CIDR: the IPv4 network address, and the
//!   IPv6 subnet-router anycast address (RFC 4291 2.6.1, the all-zero host address), which
//!   routers of the link answer. An IPv4 CIDR also leaves out its broadcast address (IPv6 has
//!   none). The point-to-point and host prefixes use every address: IPv4 /31 (RFC 3021) and /32,
//!   IPv6 /127 (RFC 6164) and /128. Ranges and single addresses are taken as written.
//! * Overlapping or adjacent entries are merged.
//! * [`LbPool::allocate_next`] returns the **lowest** free address of the family. Deterministic
//!   allocation makes pool behaviour easy to reason about and to test; there is no reason to
//!   spread VIPs randomly.
//!
//! Free space is a sorted map of free intervals per family and allocated addresses a sorted set,
//! so every operation is O(log n) in the number of allocations and nothing is sized by the
//! ranges (an IPv6 /64 entry costs one interval).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::family::{IpFamily, addr_to_u128, u128_to_addr};

/// Why a pool entry cannot be parsed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PoolEntryError {
    /// An entry with `/` that is not a CIDR.
    #[error("invalid cidr in load balancer pool entry {entry:?}")]
    InvalidCidr {
        /// The entry as given.
        entry: String,
        /// Why it does not parse.
        #[source]
        source: ipnet::AddrParseError,
    },
    /// An entry (or one end of a range) that is not an IP address.
    #[error("invalid ip address in load balancer pool entry {entry:?}")]
    InvalidAddress {
        /// The entry as given.
        entry: String,
        /// Why it does not parse.
        #[source]
        source: std::net::AddrParseError,
    },
    /// A range whose ends are of different families.
    #[error("load balancer pool range {entry:?} mixes IPv4 and IPv6 addresses")]
    MixedFamilies {
        /// The entry as given.
        entry: String,
    },
    /// A range whose first address is after its last.
    #[error("load balancer pool range {entry:?} has its first address after its last")]
    Reversed {
        /// The entry as given.
        entry: String,
    },
}

/// Why a pool allocation failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PoolAllocError {
    /// The requested address is in no range of the pool.
    #[error("provided IP {ip} is not in any load balancer pool range")]
    NotInPool {
        /// The address that was requested.
        ip: IpAddr,
    },
    /// The requested address is already allocated.
    #[error("provided IP {ip} is already allocated")]
    Allocated {
        /// The address that was requested.
        ip: IpAddr,
    },
    /// The pool has ranges of the family, all taken.
    #[error("load balancer pool is full for ip family {family}")]
    Full {
        /// The requested family.
        family: IpFamily,
    },
    /// The pool has no range of the family.
    #[error("load balancer pool has no range for ip family {family}")]
    NoRangeForFamily {
        /// The requested family.
        family: IpFamily,
    },
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolRange {
    /// The first address.
    pub first: IpAddr,
    /// The last address (same family, not before `first`).
    pub last: IpAddr,
}

impl PoolRange {
    /// Parses one pool entry: a CIDR, `FIRST-LAST`, or a single address.
    pub fn parse(entry: &str) -> Result<Self, PoolEntryError> {
        let text = entry.trim();
        let addr = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|source| PoolEntryError::InvalidAddress {
                    entry: entry.to_string(),
                    source,
                })
        };
        if text.contains('/') {
            let net: IpNet = text.parse().map_err(|source| PoolEntryError::InvalidCidr {
                entry: entry.to_string(),
                source,
            })?;
            let (first, last) = match net {
                IpNet::V4(v4) if v4.prefix_len() < 31 => {
                    let (n, b) = (u32::from(v4.network()), u32::from(v4.broadcast()));
                    (IpAddr::V4((n + 1).into()), IpAddr::V4((b - 1).into()))
                }
                IpNet::V6(v6) if v6.prefix_len() < 127 => {
                    let n = u128::from(v6.network());
                    (IpAddr::V6((n + 1).into()), IpAddr::V6(v6.broadcast()))
                }
                _ => (net.network(), net.broadcast()),
            };
            return Ok(PoolRange { first, last });
        }
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (addr(a)?, addr(b)?),
            None => {
                let a = addr(text)?;
                (a, a)
            }
        };
        if IpFamily::of_addr(&first) != IpFamily::of_addr(&last) {
            return Err(PoolEntryError::MixedFamilies {
                entry: entry.to_string(),
            });
        }
        if addr_to_u128(first) > addr_to_u128(last) {
            return Err(PoolEntryError::Reversed {
                entry: entry.to_string(),
            });
        }
        Ok(PoolRange { first, last })
    }

    /// The family of the range.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_addr(&self.first)
    }

    /// How many addresses the range holds (2^128 saturates to `u128::MAX`).
    pub fn len(&self) -> u128 {
        (addr_to_u128(self.last) - addr_to_u128(self.first)).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        IpFamily::of_addr(&ip) == self.family()
            && (addr_to_u128(self.first)..=addr_to_u128(self.last)).contains(&addr_to_u128(ip))
    }
}

/// Per-family state: merged ranges, free intervals and allocated addresses, as integers.
#[derive(Clone, Debug, Default)]
struct FamilyPool {
    /// Disjoint, non-adjacent, sorted inclusive ranges.
    ranges: Vec<(u128, u128)>,
    /// Free intervals, start → inclusive end.
    free: BTreeMap<u128, u128>,
    allocated: BTreeSet<u128>,
}

impl FamilyPool {
    fn contains(&self, v: u128) -> bool {
        let i = self.ranges.partition_point(|&(first, _)| first <= v);
        i > 0 && v <= self.ranges[i - 1].1
    }
}

/// A LoadBalancer address pool over both families.
#[derive(Clone, Debug, Default)]
pub struct LbPool {
    /// Indexed by [`IpFamily::index`].
    pools: [FamilyPool; 2],
    /// Families in the order their first entry appeared.
    families: Vec<IpFamily>,
}

impl LbPool {
    /// Builds a pool from entries (see the module doc for the forms).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, PoolEntryError> {
        let ranges = entries
            .iter()
            .map(|e| PoolRange::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_ranges(&ranges))
    }

    /// Builds a pool from parsed ranges.
    pub fn from_ranges(ranges: &[PoolRange]) -> Self {
        let mut pool = LbPool::default();
        for range in ranges {
            let family = range.family();
            if !pool.families.contains(&family) {
                pool.families.push(family);
            }
            pool.pools[family.index()]
                .ranges
                .push((addr_to_u128(range.first), addr_to_u128(range.last)));
        }
        for p in &mut pool.pools {
            p.ranges.sort_unstable();
            let mut merged: Vec<(u128, u128)> = Vec::with_capacity(p.ranges.len());
            for &(first, last) in &p.ranges {
                match merged.last_mut() {
                    Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
                    _ => merged.push((first, last)),
                }
            }
            p.free = merged.iter().copied().collect();
            p.ranges = merged;
        }
        pool
    }

    /// The families that have at least one range, in the order of the entries.
    pub fn families(&self) -> &[IpFamily] {
        &self.families
    }

    /// The merged ranges of `family`, in increasing order.
    pub fn ranges(&self, family: IpFamily) -> Vec<PoolRange> {
        self.pools[family.index()]
            .ranges
            .iter()
            .map(|&(a, b)| PoolRange {
                first: u128_to_addr(family, a),
                last: u128_to_addr(family, b),
            })
            .collect()
    }

    /// Whether `ip` is in one of the pool's ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.pools[IpFamily::of_addr(&ip).index()].contains(addr_to_u128(ip))
    }

    /// Whether `ip` is allocated.
    pub fn has(&self, ip: IpAddr) -> bool {
        self.pools[IpFamily::of_addr(&ip).index()]
            .allocated
            .contains(&addr_to_u128(ip))
    }

    /// How many addresses of `family` are allocated.
    pub fn used(&self, family: IpFamily) -> usize {
        self.pools[family.index()].allocated.len()
    }

    /// How many addresses of `family` are free (saturating at `u128::MAX`).
    pub fn free(&self, family: IpFamily) -> u128 {
        self.pools[family.index()]
            .free
            .iter()
            .fold(0u128, |n, (&a, &b)| {
                n.saturating_add(b - a).saturating_add(1)
            })
    }

    /// The allocated addresses of `family`, in increasing order.
    pub fn allocated(&self, family: IpFamily) -> Vec<IpAddr> {
        self.pools[family.index()]
            .allocated
            .iter()
            .map(|&v| u128_to_addr(family, v))
            .collect()
    }

    /// Allocates the lowest free address of `family`.
    pub fn allocate_next(&mut self, family: IpFamily) -> Result<IpAddr, PoolAllocError> {
        let p = &mut self.pools[family.index()];
        if p.ranges.is_empty() {
            return Err(PoolAllocError::NoRangeForFamily { family });
        }
        let (start, end) = p.free.pop_first().ok_or(PoolAllocError::Full { family })?;
        if start < end {
            p.free.insert(start + 1, end);
        }
        p.allocated.insert(start);
        Ok(u128_to_addr(family, start))
    }

    /// Allocates the requested address.
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), PoolAllocError> {
        let v = addr_to_u128(ip);
        let p = &mut self.pools[IpFamily::of_addr(&ip).index()];
        if !p.contains(v) {
            return Err(PoolAllocError::NotInPool { ip });
        }
        if p.allocated.contains(&v) {
            return Err(PoolAllocError::Allocated { ip });
        }
        // In a range and not allocated: some free interval holds it.
        let (&start, &end) = p
            .free
            .range(..=v)
            .next_back()
            .expect("a free address lies in a free interval");
        debug_assert!(start <= v && v <= end);
        p.free.remove(&start);
        if start < v {
            p.free.insert(start, v - 1);
        }
        if v < end {
            p.free.insert(v + 1, end);
        }
        p.allocated.insert(v);
        Ok(())
    }

    /// Frees `ip`; true when it was allocated.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        let v = addr_to_u128(ip);
        let p = &mut self.pools[IpFamily::of_addr(&ip).index()];
        if !p.allocated.remove(&v) {
            return false;
        }
        let mut start = v;
        let mut end = v;
        if let Some(prev) = v.checked_sub(1)
            && let Some((&s, &e)) = p.free.range(..v).next_back()
            && e == prev
        {
            start = s;
            p.free.remove(&s);
        }
        if let Some(next) = v.checked_add(1)
            && let Some(e) = p.free.remove(&next)
        {
            end = e;
        }
        p.free.insert(start, end);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn should_parse_entries_of_both_families() {
        // (entry, first, last): IPv4 and IPv6 rows side by side.
        let cases = [
            // A CIDR leaves out its network address in both families (and IPv4 its broadcast).
            ("192.0.2.0/29", "192.0.2.1", "192.0.2.6"),
            ("2001:db8:1b::/125", "2001:db8:1b::1", "2001:db8:1b::7"),
            // Point-to-point prefixes use both addresses.
            ("192.0.2.8/31", "192.0.2.8", "192.0.2.9"),
            ("2001:db8::8/127", "2001:db8::8", "2001:db8::9"),
            // Host prefixes use their one address.
            ("192.0.2.9/32", "192.0.2.9", "192.0.2.9"),
            ("2001:db8::/128", "2001:db8::", "2001:db8::"),
            // Ranges are taken as written, network address included.
            ("192.0.2.0-192.0.2.20", "192.0.2.0", "192.0.2.20"),
            (" 2001:db8::0 - 2001:db8::1f ", "2001:db8::", "2001:db8::1f"),
            ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
            ("2001:db8::7", "2001:db8::7", "2001:db8::7"),
        ];
        for (entry, first, last) in cases {
            let r = PoolRange::parse(entry).unwrap();
            assert_eq!((r.first, r.last), (ip(first), ip(last)), "{entry}");
        }
        assert_eq!(
            PoolRange::parse("2001:db8::/64").unwrap().len(),
            (1 << 64) - 1
        );
    }

    #[test]
    fn should_never_hand_out_the_network_address_of_a_cidr_in_either_family() {
        // (cidr, network address, first address handed out)
        let cases = [
            ("192.0.2.0/24", "192.0.2.0", "192.0.2.1"),
            ("2001:db8:1b::/64", "2001:db8:1b::", "2001:db8:1b::1"),
        ];
        for (cidr, network, first) in cases {
            let mut pool = LbPool::parse(&[cidr]).unwrap();
            assert!(!pool.contains(ip(network)), "{cidr}");
            assert_eq!(
                pool.allocate(ip(network)).unwrap_err().to_string(),
                format!("provided IP {network} is not in any load balancer pool range")
            );
            let family = IpFamily::of_addr(&ip(network));
            assert_eq!(pool.allocate_next(family).unwrap(), ip(first), "{cidr}");
        }
    }

    #[test]
    fn should_refuse_bad_entries_with_clear_messages() {
        let cases = [
            (
                "192.0.2.0/33",
                "invalid cidr in load balancer pool entry \"192.0.2.0/33\"",
            ),
            (
                "nonsense",
                "invalid ip address in load balancer pool entry \"nonsense\"",
            ),
            (
                "192.0.2.1-",
                "invalid ip address in load balancer pool entry \"192.0.2.1-\"",
            ),
            (
                "192.0.2.1-2001:db8::1",
                "load balancer pool range \"192.0.2.1-2001:db8::1\" mixes IPv4 and IPv6 addresses",
            ),
            (
                "192.0.2.9-192.0.2.1",
                "load balancer pool range \"192.0.2.9-192.0.2.1\" has its first address after its last",
            ),
            (
                "2001:db8::9-2001:db8::1",
                "load balancer pool range \"2001:db8::9-2001:db8::1\" has its first address after its last",
            ),
        ];
        for (entry, message) in cases {
            assert_eq!(LbPool::parse(&[entry]).unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn should_hand_out_the_lowest_free_address_per_family() {
        let mut pool = LbPool::parse(&[
            "2001:db8::10-2001:db8::12",
            "192.0.2.0/30",
            "192.0.2.10-192.0.2.11",
        ])
        .unwrap();
        assert_eq!(pool.families(), &[IpFamily::IPv6, IpFamily::IPv4]);
        let cases = [
            (
                IpFamily::IPv4,
                vec!["192.0.2.1", "192.0.2.2", "192.0.2.10", "192.0.2.11"],
            ),
            (
                IpFamily::IPv6,
                vec!["2001:db8::10", "2001:db8::11", "2001:db8::12"],
            ),
        ];
        for (family, expected) in cases {
            for e in &expected {
                assert_eq!(pool.allocate_next(family).unwrap(), ip(e));
            }
            assert_eq!(
                pool.allocate_next(family).unwrap_err().to_string(),
                format!("load balancer pool is full for ip family {family}")
            );
            assert_eq!(pool.used(family), expected.len());
            assert_eq!(pool.free(family), 0);
            // Releasing a middle one makes it the next.
            assert!(pool.release(ip(expected[1])));
            assert!(!pool.release(ip(expected[1])));
            assert_eq!(pool.allocate_next(family).unwrap(), ip(expected[1]));
        }
    }

    #[test]
    fn should_allocate_requested_addresses_and_report_errors() {
        let mut pool = LbPool::parse(&["192.0.2.0/28", "2001:db8::/120"]).unwrap();
        let cases = [
            ("192.0.2.5", "192.0.2.0", "198.51.100.1"),
            ("2001:db8::5", "2001:db8::", "2001:db8::100"),
        ];
        for (good, outside1, outside2) in cases {
            pool.allocate(ip(good)).unwrap();
            assert!(pool.has(ip(good)));
            assert_eq!(
                pool.allocate(ip(good)).unwrap_err().to_string(),
                format!("provided IP {good} is already allocated")
            );
            for bad in [outside1, outside2] {
                assert!(!pool.contains(ip(bad)));
                assert_eq!(
                    pool.allocate(ip(bad)).unwrap_err().to_string(),
                    format!("provided IP {bad} is not in any load balancer pool range")
                );
                assert!(!pool.release(ip(bad)));
            }
        }
        // The requested addresses split the free space; lowest-free still works around them.
        pool.allocate(ip("192.0.2.1")).unwrap();
        assert_eq!(pool.allocate_next(IpFamily::IPv4).unwrap(), ip("192.0.2.2"));
        assert_eq!(pool.free(IpFamily::IPv4), 14 - 3);
        assert!(pool.release(ip("192.0.2.1")));
        assert!(pool.release(ip("192.0.2.2")));
        assert_eq!(pool.free(IpFamily::IPv4), 14 - 1);
        assert_eq!(pool.allocate_next(IpFamily::IPv4).unwrap(), ip("192.0.2.1"));
    }

    #[test]
    fn should_refuse_a_family_without_ranges() {
        let mut pool = LbPool::parse(&["192.0.2.0/28"]).unwrap();
        assert_eq!(
            pool.allocate_next(IpFamily::IPv6).unwrap_err().to_string(),
            "load balancer pool has no range for ip family IPv6"
        );
        assert_eq!(pool.families(), &[IpFamily::IPv4]);
    }

    #[test]
    fn should_merge_overlapping_and_adjacent_entries() {
        let pool = LbPool::parse(&[
            "192.0.2.0/30",
            "192.0.2.3-192.0.2.5",
            "192.0.2.6",
            "2001:db8::/126",
            "2001:db8::2-2001:db8::9",
        ])
        .unwrap();
        assert_eq!(
            pool.ranges(IpFamily::IPv4),
            vec![PoolRange {
                first: ip("192.0.2.1"),
                last: ip("192.0.2.6")
            }]
        );
        assert_eq!(
            pool.ranges(IpFamily::IPv6),
            vec![PoolRange {
                first: ip("2001:db8::1"),
                last: ip("2001:db8::9")
            }]
        );
    }

    #[test]
    fn should_serve_a_huge_ipv6_range_without_sizing_anything_by_it() {
        let mut pool = LbPool::parse(&["2001:db8::/64", "::/0"]).unwrap();
        assert_eq!(pool.free(IpFamily::IPv6), u128::MAX);
        for i in 0..3000u32 {
            assert_eq!(
                pool.allocate_next(IpFamily::IPv6).unwrap(),
                u128_to_addr(IpFamily::IPv6, u128::from(i) + 1)
            );
        }
        pool.allocate(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
            .unwrap();
        assert!(pool.release(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(pool.release(ip("::1")));
        assert_eq!(pool.allocate_next(IpFamily::IPv6).unwrap(), ip("::1"));
    }
}
