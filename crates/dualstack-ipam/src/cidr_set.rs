//! The node CIDR set of one cluster CIDR: carves `--cluster-cidr` into node pod CIDRs.
//!
//! Port of `kubernetes/kubernetes:pkg/controller/nodeipam/ipam/cidrset/cidr_set.go`:
//!
//! * Node CIDR `i` is `cluster | (i << (bits - node_mask))`, the same formula for both families.
//! * [`CidrSet::allocate_next`] is round-robin: it takes the first free index at or after
//!   `next_candidate`, wrapping, and moves `next_candidate` past it. A released CIDR is not
//!   handed out again until the scan wraps.
//! * [`CidrSet::occupy`] and [`CidrSet::release`] cover every index of a CIDR (a larger CIDR covers
//!   many, a smaller one the one that contains it), count only the bits they flip, and do not
//!   move `next_candidate`.
//! * IPv6 only: the node mask may be at most 16 bits longer than the cluster prefix.
//!
//! The bitmap is the hierarchical one of this crate: finding the next free index skips full
//! 64-bit words, and whole groups of them, so an allocation costs a few word operations however
//! full the set is. Its memory grows with the highest index used, so a large IPv4 set (a /8
//! carved into /32s) costs nothing until used.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::bitmap::Bitmap;
use crate::family::{IpFamily, addr_to_u128, u128_to_addr};

/// The most an IPv6 node mask may exceed the cluster prefix (upstream `clusterSubnetMaxDiff`).
pub const IPV6_MAX_MASK_DIFF: u8 = 16;

/// Why a CIDR set cannot be built or a CIDR cannot be allocated, occupied or released.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CidrSetError {
    /// IPv6 only: the node mask is more than 16 bits longer than the cluster prefix.
    #[error("New CIDR set failed; the node CIDR size is too big")]
    SubNetTooBig,
    /// The node mask is shorter than the cluster prefix (the controller validates this first).
    #[error("node mask size {node_mask} is smaller than the mask size of cluster cidr {cluster}")]
    NodeMaskTooSmall {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node mask size that was given.
        node_mask: u8,
    },
    /// The node mask is longer than the family's address width.
    #[error("node mask size {node_mask} is too long for cluster cidr {cluster}")]
    NodeMaskTooLong {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node mask size that was given.
        node_mask: u8,
    },
    /// Every node CIDR is taken.
    #[error(
        "CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range"
    )]
    NoCidrsRemaining,
    /// The CIDR does not overlap the cluster CIDR (upstream's wording, "out the range", kept).
    #[error("cidr {cidr} is out the range of cluster cidr {cluster}")]
    OutOfClusterCidr {
        /// The CIDR that was given.
        cidr: IpNet,
        /// The cluster CIDR.
        cluster: IpNet,
    },
    /// The address maps to an index beyond the set.
    #[error("CIDR: {ip}/{node_mask} is out of the range of CIDR allocator")]
    IndexOutOfRange {
        /// The address that was given.
        ip: IpAddr,
        /// The node mask size.
        node_mask: u8,
    },
}

/// The node CIDRs of one cluster CIDR.
#[derive(Clone, Debug)]
pub struct CidrSet {
    cluster: IpNet,
    family: IpFamily,
    node_mask: u8,
    /// `bits - node_mask`: how far an index is shifted into an address.
    shift: u32,
    max_cidrs: u64,
    allocated: u64,
    next_candidate: u64,
    used: Bitmap,
}

impl CidrSet {
    /// A set of `/node_mask` CIDRs out of `cluster_cidr` (masked to its network first).
    pub fn new(cluster_cidr: IpNet, node_mask: u8) -> Result<Self, CidrSetError> {
        let cluster = cluster_cidr.trunc();
        let family = IpFamily::of_net(&cluster);
        let prefix = cluster.prefix_len();
        if node_mask < prefix {
            return Err(CidrSetError::NodeMaskTooSmall { cluster, node_mask });
        }
        if node_mask > family.bits() {
            return Err(CidrSetError::NodeMaskTooLong { cluster, node_mask });
        }
        let diff = node_mask - prefix;
        if family == IpFamily::IPv6 && diff > IPV6_MAX_MASK_DIFF {
            return Err(CidrSetError::SubNetTooBig);
        }
        // diff <= 32 for IPv4 and <= 16 for IPv6.
        let max_cidrs = 1u64 << diff;
        Ok(CidrSet {
            cluster,
            family,
            node_mask,
            shift: u32::from(family.bits() - node_mask),
            max_cidrs,
            allocated: 0,
            next_candidate: 0,
            used: Bitmap::new(max_cidrs),
        })
    }

    /// The cluster CIDR, masked to its network.
    pub fn cluster_cidr(&self) -> IpNet {
        self.cluster
    }

    /// The family of the cluster CIDR.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// The prefix length of every node CIDR.
    pub fn node_mask(&self) -> u8 {
        self.node_mask
    }

    /// How many node CIDRs the cluster CIDR holds.
    pub fn max_cidrs(&self) -> u64 {
        self.max_cidrs
    }

    /// How many node CIDRs are taken.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The index where the next round-robin scan starts.
    pub fn next_candidate(&self) -> u64 {
        self.next_candidate
    }

    /// The node CIDR at `index`, if below [`CidrSet::max_cidrs`].
    pub fn cidr_at(&self, index: u64) -> Option<IpNet> {
        if index >= self.max_cidrs {
            return None;
        }
        let base = addr_to_u128(self.cluster.network());
        // shift can be 128 only for a /0 node mask, where index is 0.
        let offset = u128::from(index).checked_shl(self.shift).unwrap_or(0);
        let ip = u128_to_addr(self.family, base | offset);
        Some(IpNet::new(ip, self.node_mask).expect("node mask fits the family"))
    }

    /// The index of the node CIDR holding `ip` (upstream `getIndexForIP`), or
    /// [`CidrSetError::IndexOutOfRange`] when `ip` is not in the cluster CIDR.
    pub fn index_of(&self, ip: IpAddr) -> Result<u64, CidrSetError> {
        let out = CidrSetError::IndexOutOfRange {
            ip,
            node_mask: self.node_mask,
        };
        if IpFamily::of_addr(&ip) != self.family {
            return Err(out);
        }
        let delta = addr_to_u128(self.cluster.network()) ^ addr_to_u128(ip);
        let index = delta.checked_shr(self.shift).unwrap_or(0);
        match u64::try_from(index) {
            Ok(i) if i < self.max_cidrs => Ok(i),
            _ => Err(out),
        }
    }

    /// Whether the node CIDR holding `cidr`'s network address is taken (false outside the set).
    pub fn is_allocated(&self, cidr: &IpNet) -> bool {
        self.index_of(cidr.network())
            .is_ok_and(|i| self.used.get(i))
    }

    /// Takes the next free node CIDR, round-robin from `next_candidate`.
    pub fn allocate_next(&mut self) -> Result<IpNet, CidrSetError> {
        if self.allocated == self.max_cidrs {
            return Err(CidrSetError::NoCidrsRemaining);
        }
        let index = self
            .used
            .first_clear_from(self.next_candidate)
            .or_else(|| self.used.first_clear_in(0, self.next_candidate))
            .expect("a free index exists when allocated < max");
        self.used.set(index);
        self.allocated += 1;
        self.next_candidate = (index + 1) % self.max_cidrs;
        Ok(self.cidr_at(index).expect("index below max"))
    }

    /// The inclusive index range covered by `cidr` (upstream `getBeginningAndEndIndices`).
    fn indices(&self, cidr: &IpNet) -> Result<(u64, u64), CidrSetError> {
        let cidr = cidr.trunc();
        let overlaps = IpFamily::of_net(&cidr) == self.family
            && (self.cluster.contains(&cidr.network()) || cidr.contains(&self.cluster.network()));
        if !overlaps {
            return Err(CidrSetError::OutOfClusterCidr {
                cidr,
                cluster: self.cluster,
            });
        }
        if cidr.prefix_len() <= self.cluster.prefix_len() {
            return Ok((0, self.max_cidrs - 1));
        }
        Ok((
            self.index_of(cidr.network())?,
            self.index_of(cidr.broadcast())?,
        ))
    }

    /// Whether any node CIDR covered by `cidr` is taken (an error when `cidr` is outside the
    /// set).
    pub fn any_allocated_in(&self, cidr: &IpNet) -> Result<bool, CidrSetError> {
        let (begin, end) = self.indices(cidr)?;
        Ok((begin..=end).any(|i| self.used.get(i)))
    }

    /// Marks every node CIDR covered by `cidr` as taken; idempotent. Does not move
    /// `next_candidate`.
    pub fn occupy(&mut self, cidr: &IpNet) -> Result<(), CidrSetError> {
        let (begin, end) = self.indices(cidr)?;
        self.allocated += self.used.set_range(begin, end + 1);
        Ok(())
    }

    /// Frees every node CIDR covered by `cidr`; idempotent.
    pub fn release(&mut self, cidr: &IpNet) -> Result<(), CidrSetError> {
        let (begin, end) = self.indices(cidr)?;
        self.allocated -= self.used.clear_range(begin, end + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn set(cluster: &str, mask: u8) -> CidrSet {
        CidrSet::new(net(cluster), mask).unwrap()
    }

    /// Upstream `TestCIDRSetFullyAllocated`.
    #[test]
    fn should_hand_out_a_cluster_cidr_equal_to_the_node_mask_once() {
        for (cluster, mask, expected) in [
            ("127.123.234.0/30", 30, "127.123.234.0/30"),
            ("beef:1234::/30", 30, "beef:1234::/30"),
        ] {
            let mut s = set(cluster, mask);
            let p = s.allocate_next().unwrap();
            assert_eq!(p, net(expected));
            assert_eq!(s.allocate_next(), Err(CidrSetError::NoCidrsRemaining));
            s.release(&p).unwrap();
            assert_eq!(s.allocate_next().unwrap(), net(expected));
            assert_eq!(
                s.allocate_next().unwrap_err().to_string(),
                "CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range"
            );
        }
    }

    /// Upstream `TestIndexToCIDRBlock`.
    #[test]
    fn should_map_indexes_to_cidrs() {
        let cases = [
            ("127.123.3.0/16", 24, 0, "127.123.0.0/24"),
            ("127.123.0.0/16", 24, 15, "127.123.15.0/24"),
            ("192.168.5.219/28", 32, 5, "192.168.5.213/32"),
            ("2001:0db8:1234:3::/48", 64, 0, "2001:db8:1234::/64"),
            ("2001:0db8:1234::/48", 64, 15, "2001:db8:1234:f::/64"),
            (
                "2001:0db8:85a3::8a2e:0370:7334/50",
                63,
                6425,
                "2001:db8:85a3:3232::/63",
            ),
            ("2001:0db8::/32", 48, 0, "2001:db8::/48"),
            ("2001:0db8::/32", 48, 15, "2001:db8:f::/48"),
            (
                "2001:0db8:85a3::8a2e:0370:7334/32",
                48,
                6425,
                "2001:db8:1919::/48",
            ),
            ("2001:0db8:1234:ff00::/56", 72, 0, "2001:db8:1234:ff00::/72"),
            (
                "2001:0db8:1234:ff00::/56",
                72,
                15,
                "2001:db8:1234:ff00:f00::/72",
            ),
            (
                "2001:0db8:1234:ff00::0370:7334/56",
                72,
                6425,
                "2001:db8:1234:ff19:1900::/72",
            ),
            (
                "2001:0db8:1234:0:1234::/80",
                96,
                0,
                "2001:db8:1234:0:1234::/96",
            ),
            (
                "2001:0db8:1234:0:1234::/80",
                96,
                15,
                "2001:db8:1234:0:1234:f::/96",
            ),
            (
                "2001:0db8:1234:ff00::0370:7334/80",
                96,
                6425,
                "2001:db8:1234:ff00:0:1919::/96",
            ),
            ("fd00:10:244::/56", 64, 0, "fd00:10:244::/64"),
            ("fd00:10:244::/56", 64, 1, "fd00:10:244:1::/64"),
            ("10.244.0.0/16", 24, 1, "10.244.1.0/24"),
        ];
        for (cluster, mask, index, expected) in cases {
            let s = set(cluster, mask);
            assert_eq!(
                s.cidr_at(index),
                Some(net(expected)),
                "{cluster} /{mask} #{index}"
            );
            assert_eq!(s.index_of(net(expected).network()), Ok(index));
        }
        assert_eq!(set("10.0.0.0/16", 24).cidr_at(256), None);
    }

    #[test]
    fn should_mask_the_cluster_cidr_first() {
        let s = set("192.168.5.219/28", 32);
        assert_eq!(s.cluster_cidr(), net("192.168.5.208/28"));
        assert_eq!(s.max_cidrs(), 16);
        let s = set("fd00:10:244::17/56", 64);
        assert_eq!(s.cluster_cidr(), net("fd00:10:244::/56"));
        assert_eq!(s.max_cidrs(), 256);
    }

    /// Upstream `TestCIDRSetv6` plus the dual-stack default example of spec §2.3.
    #[test]
    fn should_allocate_the_first_cidrs_in_order_and_enforce_the_ipv6_mask_limit() {
        let cases = [
            ("127.0.0.0/8", 32, Some(("127.0.0.0/32", "127.0.0.1/32"))),
            ("beef:1234::/32", 49, None),
            (
                "2001:beef:1234:369b::/60",
                64,
                Some(("2001:beef:1234:3690::/64", "2001:beef:1234:3691::/64")),
            ),
            (
                "10.244.0.0/16",
                24,
                Some(("10.244.0.0/24", "10.244.1.0/24")),
            ),
            (
                "fd00:10:244::/56",
                64,
                Some(("fd00:10:244::/64", "fd00:10:244:1::/64")),
            ),
        ];
        for (cluster, mask, expected) in cases {
            match (CidrSet::new(net(cluster), mask), expected) {
                (Ok(mut s), Some((first, second))) => {
                    assert_eq!(s.allocate_next().unwrap(), net(first));
                    assert_eq!(s.allocate_next().unwrap(), net(second));
                }
                (Err(err), None) => {
                    assert_eq!(
                        err.to_string(),
                        "New CIDR set failed; the node CIDR size is too big"
                    );
                }
                (got, _) => panic!("{cluster} /{mask}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn should_limit_only_ipv6_mask_differences() {
        // IPv6: a difference of 16 is the most allowed.
        assert_eq!(set("fd00::/48", 64).max_cidrs(), 65_536);
        assert_eq!(
            CidrSet::new(net("fd00::/47"), 64).unwrap_err(),
            CidrSetError::SubNetTooBig
        );
        // IPv4: no limit.
        assert_eq!(set("127.0.0.0/8", 32).max_cidrs(), 1 << 24);
        assert_eq!(set("0.0.0.0/0", 32).max_cidrs(), 1 << 32);
    }

    #[test]
    fn should_refuse_node_masks_outside_the_cluster_prefix_and_the_family_width() {
        let cases = [
            (
                "10.0.0.0/16",
                8,
                "node mask size 8 is smaller than the mask size of cluster cidr 10.0.0.0/16",
            ),
            (
                "fd00::/56",
                48,
                "node mask size 48 is smaller than the mask size of cluster cidr fd00::/56",
            ),
            (
                "10.0.0.0/30",
                33,
                "node mask size 33 is too long for cluster cidr 10.0.0.0/30",
            ),
            (
                "fd00::/120",
                129,
                "node mask size 129 is too long for cluster cidr fd00::/120",
            ),
        ];
        for (cluster, mask, message) in cases {
            assert_eq!(
                CidrSet::new(net(cluster), mask).unwrap_err().to_string(),
                message
            );
        }
    }

    /// Upstream `TestCIDRSet_RandomishAllocation`.
    #[test]
    fn should_reallocate_the_same_cidrs_after_releasing_them_all() {
        for cluster in ["127.123.234.0/16", "beef:1234::/16"] {
            let mut s = set(cluster, 24);
            let first: Vec<_> = (0..256).map(|_| s.allocate_next().unwrap()).collect();
            assert!(s.allocate_next().is_err());
            for c in &first {
                s.release(c).unwrap();
            }
            let again: Vec<_> = (0..256).map(|_| s.allocate_next().unwrap()).collect();
            assert!(s.allocate_next().is_err());
            assert_eq!(first, again);
        }
    }

    /// Upstream `TestCIDRSet_AllocationOccupied`.
    #[test]
    fn should_skip_occupied_cidrs() {
        for cluster in ["127.123.234.0/16", "beef:1234::/16"] {
            let mut s = set(cluster, 24);
            let all: Vec<_> = (0..256).map(|_| s.allocate_next().unwrap()).collect();
            for c in &all {
                s.release(c).unwrap();
            }
            for c in &all[128..] {
                s.occupy(c).unwrap();
            }
            s.occupy(&all[128]).unwrap();
            assert_eq!(s.allocated(), 128);
            let mut again: Vec<_> = (0..128).map(|_| s.allocate_next().unwrap()).collect();
            assert!(s.allocate_next().is_err());
            again.extend_from_slice(&all[128..]);
            assert_eq!(again, all);
        }
    }

    #[test]
    fn should_not_reuse_a_released_cidr_until_the_scan_wraps() {
        for (cluster, mask) in [("10.0.0.0/16", 24), ("fd00:10:244::/56", 64)] {
            let mut s = set(cluster, mask);
            let a = s.allocate_next().unwrap();
            let b = s.allocate_next().unwrap();
            s.release(&a).unwrap();
            let c = s.allocate_next().unwrap();
            assert_eq!(s.index_of(c.network()), Ok(2), "{cluster}");
            assert!(s.is_allocated(&b));
            assert!(!s.is_allocated(&a));
            // Fill the rest; the released one comes back only after the wrap.
            let rest: Vec<_> = (0..253).map(|_| s.allocate_next().unwrap()).collect();
            assert_eq!(s.index_of(rest[252].network()), Ok(255));
            assert_eq!(s.next_candidate(), 0);
            assert_eq!(s.allocate_next().unwrap(), a);
            assert!(s.allocate_next().is_err());
        }
    }

    /// Upstream `TestDoubleOccupyRelease`, with an IPv6 twin.
    #[test]
    fn should_count_only_flipped_cidrs_on_occupy_and_release() {
        let v4 = [
            ("10.42.5.0/24", true, 1),
            ("10.42.9.0/24", true, 2),
            ("10.42.8.0/22", true, 5),
            ("10.42.9.0/24", true, 5),
            ("10.42.9.0/24", false, 4),
            ("10.42.9.0/24", false, 4),
            ("10.42.4.0/22", false, 3),
        ];
        let v6 = [
            ("fd00:42:0:500::/56", true, 1),
            ("fd00:42:0:900::/56", true, 2),
            ("fd00:42:0:800::/54", true, 5),
            ("fd00:42:0:900::/56", true, 5),
            ("fd00:42:0:900::/56", false, 4),
            ("fd00:42:0:900::/56", false, 4),
            ("fd00:42:0:400::/54", false, 3),
        ];
        for (cluster, mask, ops) in [("10.42.0.0/16", 24, v4), ("fd00:42::/48", 56, v6)] {
            let mut s = set(cluster, mask);
            for (cidr, occupy, expected) in ops {
                if occupy {
                    s.occupy(&net(cidr)).unwrap();
                } else {
                    s.release(&net(cidr)).unwrap();
                }
                assert_eq!(s.allocated(), expected, "{cluster}: after {cidr}");
            }
            for _ in 0..(256 - 3) {
                s.allocate_next().unwrap();
            }
            assert!(s.allocate_next().is_err());
        }
    }

    /// Upstream `TestGetBitforCIDR`.
    #[test]
    fn should_compute_the_index_of_a_cidr() {
        let cases = [
            ("127.0.0.0/8", 16, "127.0.0.0/16", Some(0)),
            ("be00::/8", 16, "be00::/16", Some(0)),
            ("127.0.0.0/8", 16, "127.123.0.0/16", Some(123)),
            ("be00::/8", 16, "beef::/16", Some(0xef)),
            ("127.0.0.0/8", 16, "127.168.0.0/16", Some(168)),
            ("be00::/8", 16, "be68::/16", Some(0x68)),
            ("127.0.0.0/8", 16, "127.224.0.0/16", Some(224)),
            ("be00::/8", 16, "be24::/16", Some(0x24)),
            ("192.168.0.0/16", 24, "192.168.12.0/24", Some(12)),
            ("beef::/16", 24, "beef:1200::/24", Some(0x12)),
            ("192.168.0.0/16", 24, "192.168.151.0/24", Some(151)),
            ("beef::/16", 24, "beef:9700::/24", Some(0x97)),
            ("192.168.0.0/16", 24, "127.168.224.0/24", None),
            ("beef::/16", 24, "2001:db00::/24", None),
        ];
        for (cluster, mask, cidr, expected) in cases {
            let s = set(cluster, mask);
            let got = s.index_of(net(cidr).network());
            match expected {
                Some(i) => assert_eq!(got, Ok(i), "{cluster} {cidr}"),
                None => assert!(got.is_err(), "{cluster} {cidr}"),
            }
        }
        let err = set("192.168.0.0/16", 24)
            .index_of("127.168.224.0".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CIDR: 127.168.224.0/24 is out of the range of CIDR allocator"
        );
        let err = set("beef::/16", 24)
            .index_of("2001:db00::".parse().unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CIDR: 2001:db00::/24 is out of the range of CIDR allocator"
        );
    }

    /// Upstream `TestOccupy`.
    #[test]
    fn should_occupy_the_index_range_of_a_cidr() {
        let cases = [
            ("127.0.0.0/8", 16, "127.0.0.0/8", 0, 255),
            ("2001:beef:1200::/40", 48, "2001:beef:1200::/40", 0, 255),
            ("127.0.0.0/8", 16, "127.0.0.0/2", 0, 255),
            ("2001:beef:1200::/40", 48, "2001:beef:1234::/34", 0, 255),
            ("127.0.0.0/8", 16, "127.0.0.0/16", 0, 0),
            ("2001:beef:1200::/40", 48, "2001:beef:1200::/48", 0, 0),
            ("127.0.0.0/8", 32, "127.0.0.0/16", 0, 65_535),
            ("2001:beef:1200::/48", 64, "2001:beef:1200::/48", 0, 65_535),
            ("127.0.0.0/7", 16, "127.0.0.0/15", 256, 257),
            ("2001:beef:7f00::/39", 48, "2001:beef:7f00::/47", 256, 257),
            ("127.0.0.0/7", 15, "127.0.0.0/15", 128, 128),
            ("2001:beef:7f00::/39", 47, "2001:beef:7f00::/47", 128, 128),
            ("127.0.0.0/7", 18, "127.0.0.0/15", 1024, 1031),
            ("2001:beef:7f00::/39", 50, "2001:beef:7f00::/47", 1024, 1031),
            // A CIDR smaller than the node mask occupies the one node CIDR holding it.
            ("10.244.0.0/16", 24, "10.244.7.128/25", 7, 7),
            ("fd00:10:244::/56", 64, "fd00:10:244:7::/80", 7, 7),
        ];
        for (cluster, mask, cidr, begin, end) in cases {
            let mut s = set(cluster, mask);
            s.occupy(&net(cidr)).unwrap();
            assert_eq!(s.allocated(), end - begin + 1, "{cluster} {cidr}");
            assert_eq!(
                s.used.iter_ones().collect::<Vec<_>>(),
                (begin..=end).collect::<Vec<_>>()
            );
            // Occupy does not move next_candidate.
            assert_eq!(s.next_candidate(), 0);
        }
    }

    #[test]
    fn should_refuse_cidrs_outside_the_cluster_cidr() {
        let cases = [
            (
                "10.244.0.0/16",
                24,
                "10.245.0.0/24",
                "cidr 10.245.0.0/24 is out the range of cluster cidr 10.244.0.0/16",
            ),
            (
                "fd00:10:244::/56",
                64,
                "fd00:10:245::/64",
                "cidr fd00:10:245::/64 is out the range of cluster cidr fd00:10:244::/56",
            ),
            (
                "10.244.0.0/16",
                24,
                "fd00::/64",
                "cidr fd00::/64 is out the range of cluster cidr 10.244.0.0/16",
            ),
            (
                "fd00:10:244::/56",
                64,
                "10.244.0.0/24",
                "cidr 10.244.0.0/24 is out the range of cluster cidr fd00:10:244::/56",
            ),
        ];
        for (cluster, mask, cidr, message) in cases {
            let mut s = set(cluster, mask);
            assert_eq!(s.occupy(&net(cidr)).unwrap_err().to_string(), message);
            assert_eq!(s.release(&net(cidr)).unwrap_err().to_string(), message);
            assert_eq!(s.allocated(), 0);
        }
    }

    /// Upstream `TestCidrSetMetricsHistogram`: occupy half, then the next allocation comes right
    /// after the occupied half.
    #[test]
    fn should_allocate_after_an_occupied_half() {
        for (cluster, mask, half, expected) in [
            ("10.0.0.0/16", 24, "10.0.0.0/17", "10.0.128.0/24"),
            ("fd00::/48", 56, "fd00::/49", "fd00:0:0:8000::/56"),
        ] {
            let mut s = set(cluster, mask);
            s.occupy(&net(half)).unwrap();
            assert_eq!(s.allocated(), 128);
            assert_eq!(s.allocate_next().unwrap(), net(expected));
            s.release(&net(cluster)).unwrap();
            assert_eq!(s.allocated(), 0);
            s.occupy(&net(cluster)).unwrap();
            assert_eq!(s.allocated(), 256);
        }
    }

    #[test]
    fn should_handle_a_huge_ipv4_set_without_allocating_it() {
        // 2^24 /32s from a /8: memory only for what is used.
        let mut s = set("127.0.0.0/8", 32);
        assert_eq!(s.allocate_next().unwrap(), net("127.0.0.0/32"));
        s.occupy(&net("127.0.1.0/24")).unwrap();
        assert_eq!(s.allocated(), 257);
        s.release(&net("127.0.0.0/8")).unwrap();
        assert_eq!(s.allocated(), 0);
        assert_eq!(s.allocate_next().unwrap(), net("127.0.0.1/32"));
    }
}
