//! The ClusterIP allocator for one family and one service CIDR.
//!
//! The model is upstream's current IPAddress allocator
//! (`kubernetes/kubernetes:pkg/registry/core/service/ipallocator/ipallocator.go`) with the
//! KEP-3070 static/dynamic bands:
//!
//! * IPv6 prefixes shorter than /64 are refused.
//! * Usable addresses run from network+1 to broadcast−1 for IPv4 and to the last address for
//!   IPv6 (IPv6 has no broadcast). There is no 65536 cap. Like upstream's `hostsPerNetwork`, an
//!   IPv4 /31 or /32 and an IPv6 /128 have no usable address; an IPv6 /127 has one (its last).
//! * The static band is the first [`range_offset`] usable addresses, the dynamic band the rest.
//!   [`ClusterIpRange::allocate_next`] takes a random free address from the dynamic band, and from
//!   the static band only when the dynamic one is full; [`ClusterIpRange::allocate`] takes any
//!   usable address.
//!
//! # Design
//!
//! Addresses are handled as offsets from network+1. Each band is kept in a hierarchical bitmap
//! while it has at most 2^24 addresses (so every IPv4 /8 or longer, every IPv6 /104 or longer,
//! at most 2 MiB), and in a hash set of allocated offsets when larger (an IPv6 /64 or an IPv4
//! shorter than /8): no structure is sized by a huge range. `allocate_next` draws a random start
//! in the band and takes the first free address at or after it, wrapping inside the band, as
//! upstream does; the bitmap answers that in a few word operations however full it is (flat
//! from 0% to 99%), and the hash set is only used where the fill level is necessarily tiny. The
//! choice depends only on the allocated set and the RNG state, so a snapshot restored into an
//! allocator with the same seed behaves exactly like the original.
//!
//! Randomness is held, not global: [`ClusterIpRange::new`] seeds a small RNG deterministically
//! from the CIDR; the edge that owns real entropy calls [`ClusterIpRange::reseed`] (tests pick
//! their seed the same way).
//!
//! Dry runs differ from upstream on purpose: upstream's dry-run `AllocateNext` returns the network
//! address without looking for a free one and its dry-run `Allocate` does not check that the
//! address is free. Here [`ClusterIpRange::dry_run_allocate`] checks both range and freeness and
//! [`ClusterIpRange::dry_run_allocate_next`] returns exactly the address the next
//! `allocate_next` would return.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bands::BandedAllocator;
use crate::family::{IpFamily, addr_to_u128, u128_to_addr};

/// Why a service CIDR cannot back an allocator.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RangeError {
    /// An IPv6 service CIDR shorter than /64 (upstream's IPAddress allocator limit).
    #[error("shortest allowed prefix length for service CIDR is 64, got {prefix}")]
    PrefixTooShort {
        /// The prefix length that was given.
        prefix: u8,
    },
}

/// Why an allocation, dry run or restore failed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AllocError {
    /// No free address is left in either band.
    #[error("range is full")]
    Full,
    /// The requested address is already allocated.
    #[error("provided IP is already allocated")]
    Allocated,
    /// The requested address is not a usable address of the range (outside the CIDR, the
    /// network address, the IPv4 broadcast address, or of the other family).
    #[error("provided IP {ip} is not in the valid range. The range of valid IPs is {range}")]
    NotInRange {
        /// The address that was requested.
        ip: IpAddr,
        /// The service CIDR of the allocator.
        range: IpNet,
    },
    /// A snapshot of a different CIDR was given to restore.
    #[error("the provided network does not match the current range")]
    MismatchedNetwork,
    /// A request names a family that has no configured service CIDR (only returned by
    /// [`crate::ServiceIpAllocators`]).
    #[error("no service cidr is configured for ip family {family}")]
    FamilyNotConfigured {
        /// The requested family.
        family: IpFamily,
    },
}

/// The saved state of a [`ClusterIpRange`]: its CIDR and its allocated addresses, sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSnapshot {
    /// The service CIDR (masked to its network).
    pub range: IpNet,
    /// Every allocated address, in increasing order.
    pub allocated: Vec<IpAddr>,
}

/// The KEP-3070 static band size of a service CIDR (upstream `calculateRangeOffset`).
///
/// With `size` the raw number of addresses of the CIDR: 0 when `size <= 16`, otherwise
/// `size / 16` clamped to `[16, 256]`.
pub fn range_offset(cidr: &IpNet) -> u64 {
    const MIN: u128 = 16;
    const MAX: u128 = 256;
    const STEP: u128 = 16;
    let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
    // Saturate for an IPv6 /0: only the comparison with MAX * STEP matters.
    let size = 1u128.checked_shl(host_bits).unwrap_or(u128::MAX);
    if size <= MIN {
        return 0;
    }
    (size / STEP).clamp(MIN, MAX) as u64
}

/// The ClusterIP allocator of one service CIDR (one family).
#[derive(Clone, Debug)]
pub struct ClusterIpRange {
    cidr: IpNet,
    family: IpFamily,
    /// network + 1 as an integer: offset 0.
    base: u128,
    alloc: BandedAllocator,
}

impl ClusterIpRange {
    /// An empty allocator for `cidr` (masked to its network first), seeded from the CIDR.
    pub fn new(cidr: IpNet) -> Result<Self, RangeError> {
        let cidr = cidr.trunc();
        let seed = default_seed(&cidr);
        Self::with_seed(cidr, seed)
    }

    /// An empty allocator for `cidr` whose random choices follow `seed`.
    pub fn with_seed(cidr: IpNet, seed: u64) -> Result<Self, RangeError> {
        let cidr = cidr.trunc();
        let family = IpFamily::of_net(&cidr);
        if family == IpFamily::IPv6 && cidr.prefix_len() < 64 {
            return Err(RangeError::PrefixTooShort {
                prefix: cidr.prefix_len(),
            });
        }
        let host_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        // At most 2^64 for IPv6 (/64) and 2^32 for IPv4.
        let size = 1u128 << host_bits;
        let excluded = match family {
            IpFamily::IPv4 => 2, // network and broadcast
            IpFamily::IPv6 => 1, // network only
        };
        let usable = u64::try_from(size.saturating_sub(excluded)).expect("at most 2^64 - 1");
        let base = addr_to_u128(cidr.network()) + 1;
        Ok(ClusterIpRange {
            cidr,
            family,
            base,
            alloc: BandedAllocator::new(usable, range_offset(&cidr), seed),
        })
    }

    /// Restarts the random sequence from `seed` (the allocated set is kept).
    pub fn reseed(&mut self, seed: u64) {
        self.alloc.reseed(seed);
    }

    /// The service CIDR, masked to its network.
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The family of the range.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// How many addresses can be allocated in total.
    pub fn usable(&self) -> u64 {
        self.alloc.total()
    }

    /// How many addresses are allocated.
    pub fn used(&self) -> u64 {
        self.alloc.used()
    }

    /// How many addresses are still free.
    pub fn free(&self) -> u64 {
        self.alloc.free()
    }

    /// The size of the static band: the first this-many usable addresses.
    pub fn static_band_size(&self) -> u64 {
        self.alloc.static_len()
    }

    /// The first usable address (network+1): the `kubernetes` service's ClusterIP when this is
    /// the primary range. `None` when the range has no usable address.
    pub fn first_usable(&self) -> Option<IpAddr> {
        (self.usable() > 0).then(|| self.addr_at(0))
    }

    /// The last usable address (broadcast−1 for IPv4, the last address for IPv6).
    pub fn last_usable(&self) -> Option<IpAddr> {
        (self.usable() > 0).then(|| self.addr_at(self.usable() - 1))
    }

    fn offset_of(&self, ip: IpAddr) -> Option<u64> {
        if IpFamily::of_addr(&ip) != self.family {
            return None;
        }
        let offset = addr_to_u128(ip).checked_sub(self.base)?;
        u64::try_from(offset).ok().filter(|&o| o < self.usable())
    }

    fn addr_at(&self, offset: u64) -> IpAddr {
        u128_to_addr(self.family, self.base + u128::from(offset))
    }

    fn checked_offset(&self, ip: IpAddr) -> Result<u64, AllocError> {
        self.offset_of(ip).ok_or(AllocError::NotInRange {
            ip,
            range: self.cidr,
        })
    }

    /// Whether `ip` is a usable address of this range (allocated or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether `ip` is allocated.
    pub fn has(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| self.alloc.has(o))
    }

    /// Allocates the requested address, in either band.
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), AllocError> {
        let offset = self.checked_offset(ip)?;
        if self.alloc.allocate(offset) {
            Ok(())
        } else {
            Err(AllocError::Allocated)
        }
    }

    /// Allocates a random free address: from the dynamic band while it has room, then from the
    /// static band.
    pub fn allocate_next(&mut self) -> Result<IpAddr, AllocError> {
        let offset = self.alloc.allocate_next().ok_or(AllocError::Full)?;
        Ok(self.addr_at(offset))
    }

    /// Frees `ip`; true when it was allocated. Addresses that are not allocated or not in the
    /// range are ignored.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| self.alloc.release(o))
    }

    /// Checks that [`ClusterIpRange::allocate`] would succeed for `ip`, without changing anything.
    pub fn dry_run_allocate(&self, ip: IpAddr) -> Result<(), AllocError> {
        let offset = self.checked_offset(ip)?;
        if self.alloc.has(offset) {
            Err(AllocError::Allocated)
        } else {
            Ok(())
        }
    }

    /// The address the next [`ClusterIpRange::allocate_next`] would return, without changing
    /// anything (not even the RNG).
    pub fn dry_run_allocate_next(&self) -> Result<IpAddr, AllocError> {
        let offset = self.alloc.peek_next().ok_or(AllocError::Full)?;
        Ok(self.addr_at(offset))
    }

    /// The allocated addresses, in increasing order.
    pub fn allocated(&self) -> Vec<IpAddr> {
        self.alloc
            .allocated()
            .into_iter()
            .map(|o| self.addr_at(o))
            .collect()
    }

    /// The current state, to persist.
    pub fn snapshot(&self) -> RangeSnapshot {
        RangeSnapshot {
            range: self.cidr,
            allocated: self.allocated(),
        }
    }

    /// Replaces the state with a snapshot's.
    ///
    /// The snapshot must be of the same CIDR ([`AllocError::MismatchedNetwork`]) and every address
    /// in it must be usable in this range ([`AllocError::NotInRange`] names the first that is
    /// not). On error nothing changes. Duplicate addresses count once. The RNG is not part of the
    /// snapshot.
    pub fn restore(&mut self, snapshot: &RangeSnapshot) -> Result<(), AllocError> {
        if snapshot.range.trunc() != self.cidr {
            return Err(AllocError::MismatchedNetwork);
        }
        let offsets = snapshot
            .allocated
            .iter()
            .map(|&ip| self.checked_offset(ip))
            .collect::<Result<Vec<_>, _>>()?;
        self.alloc.replace_with(offsets);
        Ok(())
    }
}

fn default_seed(cidr: &IpNet) -> u64 {
    let network = addr_to_u128(cidr.network());
    (network as u64)
        ^ ((network >> 64) as u64)
        ^ (u64::from(cidr.prefix_len()) << 56)
        ^ 0x6b38_7365_7276_6963
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn should_compute_the_kep_3070_offset() {
        let cases = [
            ("192.168.1.1/32", 0),
            ("fd00::1/128", 0),
            ("192.168.1.1/30", 0),
            ("fd00::1/126", 0),
            ("192.168.1.1/28", 0),
            ("192.168.1.1/27", 16),
            ("fd00::1/124", 0),
            ("fd00::1/122", 16),
            ("192.168.1.1/22", 64),
            ("fd00::1/118", 64),
            ("192.168.1.1/8", 256),
            ("fd00::/64", 256),
            ("10.0.0.0/0", 256),
            ("::/0", 256),
        ];
        for (cidr, offset) in cases {
            assert_eq!(range_offset(&net(cidr)), offset, "{cidr}");
        }
    }

    #[test]
    fn should_count_usable_addresses_per_family() {
        // (cidr, usable, first usable, last usable)
        let cases = [
            (
                "192.168.1.0/24",
                254,
                Some("192.168.1.1"),
                Some("192.168.1.254"),
            ),
            (
                "2001:db8:1::/120",
                255,
                Some("2001:db8:1::1"),
                Some("2001:db8:1::ff"),
            ),
            (
                "10.0.0.0/15",
                131_070,
                Some("10.0.0.1"),
                Some("10.1.255.254"),
            ),
            (
                "2001:db8::/112",
                65_535,
                Some("2001:db8::1"),
                Some("2001:db8::ffff"),
            ),
            (
                "10.0.0.0/12",
                (1 << 20) - 2,
                Some("10.0.0.1"),
                Some("10.15.255.254"),
            ),
            (
                "fd00:10::/108",
                (1 << 20) - 1,
                Some("fd00:10::1"),
                Some("fd00:10::f:ffff"),
            ),
            (
                "192.168.1.240/30",
                2,
                Some("192.168.1.241"),
                Some("192.168.1.242"),
            ),
            ("fd00::/126", 3, Some("fd00::1"), Some("fd00::3")),
            ("192.168.1.0/31", 0, None, None),
            ("fd00::/127", 1, Some("fd00::1"), Some("fd00::1")),
            ("192.168.1.0/32", 0, None, None),
            ("fd00::/128", 0, None, None),
            (
                "fd00::/64",
                u64::MAX,
                Some("fd00::1"),
                Some("fd00::ffff:ffff:ffff:ffff"),
            ),
            (
                "0.0.0.0/0",
                (1 << 32) - 2,
                Some("0.0.0.1"),
                Some("255.255.255.254"),
            ),
        ];
        for (cidr, usable, first, last) in cases {
            let r = ClusterIpRange::new(net(cidr)).unwrap();
            assert_eq!(r.usable(), usable, "{cidr}");
            assert_eq!(r.free(), usable, "{cidr}");
            assert_eq!(r.used(), 0, "{cidr}");
            assert_eq!(r.first_usable(), first.map(ip), "{cidr}");
            assert_eq!(r.last_usable(), last.map(ip), "{cidr}");
        }
    }

    #[test]
    fn should_mask_the_cidr_to_its_network() {
        let cases = [
            ("10.0.0.5/16", "10.0.0.0/16", IpFamily::IPv4),
            ("fd00:10::7/108", "fd00:10::/108", IpFamily::IPv6),
        ];
        for (given, masked, family) in cases {
            let r = ClusterIpRange::new(net(given)).unwrap();
            assert_eq!(r.cidr(), net(masked));
            assert_eq!(r.family(), family);
        }
    }

    #[test]
    fn should_refuse_ipv6_prefixes_shorter_than_64() {
        let err = ClusterIpRange::new(net("fd00::/63")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "shortest allowed prefix length for service CIDR is 64, got 63"
        );
        assert!(ClusterIpRange::new(net("fd00::/64")).is_ok());
        assert!(ClusterIpRange::new(net("10.0.0.0/1")).is_ok());
    }

    #[test]
    fn should_reject_addresses_outside_the_usable_range_with_the_range_in_the_message() {
        // (cidr, ip, expected message)
        let cases = [
            (
                "10.0.0.0/16",
                "10.1.0.5",
                "provided IP 10.1.0.5 is not in the valid range. The range of valid IPs is 10.0.0.0/16",
            ),
            (
                "fd00:10::/108",
                "fd00:11::5",
                "provided IP fd00:11::5 is not in the valid range. The range of valid IPs is fd00:10::/108",
            ),
            (
                "192.168.1.0/24",
                "192.168.1.0",
                "provided IP 192.168.1.0 is not in the valid range. The range of valid IPs is 192.168.1.0/24",
            ),
            (
                "2001:db8:1::/64",
                "2001:db8:1::",
                "provided IP 2001:db8:1:: is not in the valid range. The range of valid IPs is 2001:db8:1::/64",
            ),
            (
                "192.168.1.0/24",
                "192.168.1.255",
                "provided IP 192.168.1.255 is not in the valid range. The range of valid IPs is 192.168.1.0/24",
            ),
            (
                "192.168.1.0/24",
                "fd00::1",
                "provided IP fd00::1 is not in the valid range. The range of valid IPs is 192.168.1.0/24",
            ),
            (
                "fd00::/120",
                "10.0.0.1",
                "provided IP 10.0.0.1 is not in the valid range. The range of valid IPs is fd00::/120",
            ),
            (
                "192.168.1.0/32",
                "192.168.1.0",
                "provided IP 192.168.1.0 is not in the valid range. The range of valid IPs is 192.168.1.0/32",
            ),
            (
                "fd00::/128",
                "fd00::",
                "provided IP fd00:: is not in the valid range. The range of valid IPs is fd00::/128",
            ),
            (
                "192.168.1.0/31",
                "192.168.1.1",
                "provided IP 192.168.1.1 is not in the valid range. The range of valid IPs is 192.168.1.0/31",
            ),
        ];
        for (cidr, addr, message) in cases {
            let mut r = ClusterIpRange::new(net(cidr)).unwrap();
            let err = r.allocate(ip(addr)).unwrap_err();
            assert_eq!(err.to_string(), message);
            assert_eq!(r.dry_run_allocate(ip(addr)).unwrap_err(), err);
            assert!(!r.contains(ip(addr)));
            assert!(!r.release(ip(addr)));
            assert_eq!(r.used(), 0);
        }
    }

    #[test]
    fn should_allow_the_edges_of_the_usable_range() {
        // IPv6 has no broadcast address: its last address is usable. IPv4's is not.
        let cases = [
            ("10.0.0.0/24", ["10.0.0.1", "10.0.0.254"]),
            ("fd00:10::/120", ["fd00:10::1", "fd00:10::ff"]),
            ("fd00::/64", ["fd00::1", "fd00::ffff:ffff:ffff:ffff"]),
            ("fd00::/127", ["fd00::1", "fd00::1"]),
        ];
        for (cidr, edges) in cases {
            let mut r = ClusterIpRange::new(net(cidr)).unwrap();
            for addr in edges {
                assert!(r.contains(ip(addr)), "{cidr} {addr}");
                if !r.has(ip(addr)) {
                    r.allocate(ip(addr)).unwrap();
                }
                assert!(r.has(ip(addr)));
                assert_eq!(
                    r.allocate(ip(addr)).unwrap_err().to_string(),
                    "provided IP is already allocated"
                );
            }
        }
    }

    #[test]
    fn should_report_full_for_ranges_without_usable_addresses() {
        for cidr in ["192.168.1.0/32", "192.168.1.0/31", "fd00::/128"] {
            let mut r = ClusterIpRange::new(net(cidr)).unwrap();
            assert_eq!(r.allocate_next().unwrap_err().to_string(), "range is full");
            assert_eq!(r.dry_run_allocate_next(), Err(AllocError::Full));
        }
    }

    #[test]
    fn should_fill_small_ranges_exactly_then_report_full() {
        for (cidr, usable) in [
            ("192.168.1.240/30", 2),
            ("fd00::/126", 3),
            ("fd00::/127", 1),
        ] {
            let mut r = ClusterIpRange::new(net(cidr)).unwrap();
            let got: BTreeSet<_> = (0..usable).map(|_| r.allocate_next().unwrap()).collect();
            assert_eq!(got.len() as u64, usable);
            assert!(got.iter().all(|a| r.contains(*a)));
            assert_eq!(r.allocate_next(), Err(AllocError::Full));
        }
    }

    /// Upstream `TestAllocateReserved` for both families: fill the dynamic band, then the static
    /// addresses are still free for explicit requests, and the static band is the fallback.
    #[test]
    fn should_keep_the_static_band_for_explicit_requests_until_the_dynamic_band_is_full() {
        // (cidr, offset, the static addresses)
        let cases: [(&str, u64, Vec<String>); 2] = [
            (
                "192.168.1.0/25",
                16,
                (1..=16).map(|i| format!("192.168.1.{i}")).collect(),
            ),
            (
                "fd00:10::/121",
                16,
                (1..=16).map(|i| format!("fd00:10::{i:x}")).collect(),
            ),
        ];
        for (cidr, offset, statics) in cases {
            let mut r = ClusterIpRange::with_seed(net(cidr), 42).unwrap();
            assert_eq!(r.static_band_size(), offset);
            let dynamic = r.usable() - offset;
            for _ in 0..dynamic {
                let a = r.allocate_next().unwrap();
                assert!(!statics.contains(&a.to_string()), "{cidr}: {a} is static");
            }
            assert_eq!(r.free(), 16, "{cidr}");
            for s in &statics {
                r.allocate(ip(s)).unwrap();
            }
            assert_eq!(r.free(), 0);
            assert_eq!(r.allocate_next(), Err(AllocError::Full));
            let tenth = ip(&statics[9]);
            assert!(r.release(tenth));
            assert_eq!(r.dry_run_allocate_next(), Ok(tenth));
            assert_eq!(r.allocate_next(), Ok(tenth));
            assert_eq!(r.allocate_next(), Err(AllocError::Full));
        }
    }

    #[test]
    fn should_release_silently_and_report_whether_something_was_released() {
        for (cidr, addr) in [("10.0.0.0/24", "10.0.0.10"), ("fd00::/120", "fd00::a")] {
            let mut r = ClusterIpRange::new(net(cidr)).unwrap();
            assert!(!r.release(ip(addr)));
            r.allocate(ip(addr)).unwrap();
            assert!(r.release(ip(addr)));
            assert!(!r.release(ip(addr)));
            assert!(!r.has(ip(addr)));
            r.allocate(ip(addr)).unwrap();
        }
    }

    #[test]
    fn should_dry_run_without_changing_anything() {
        for (cidr, addr) in [("10.0.0.0/24", "10.0.0.10"), ("fd00::/120", "fd00::a")] {
            let mut r = ClusterIpRange::with_seed(net(cidr), 1).unwrap();
            assert_eq!(r.dry_run_allocate(ip(addr)), Ok(()));
            assert!(!r.has(ip(addr)));
            let next = r.dry_run_allocate_next().unwrap();
            assert_eq!(r.dry_run_allocate_next().unwrap(), next);
            assert_eq!(r.used(), 0);
            assert_eq!(r.allocate_next().unwrap(), next);
            r.allocate(ip(addr)).unwrap();
            assert_eq!(r.dry_run_allocate(ip(addr)), Err(AllocError::Allocated));
        }
    }

    #[test]
    fn should_allocate_in_an_ipv6_slash_64_without_a_structure_sized_by_the_range() {
        let mut r = ClusterIpRange::with_seed(net("fd00:1::/64"), 9).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..10_000 {
            let a = r.allocate_next().unwrap();
            assert!(r.contains(a));
            // Dynamic band: offset >= 256, i.e. above fd00:1::100.
            assert!(a > ip("fd00:1::100"));
            assert!(seen.insert(a));
        }
        assert_eq!(r.used(), 10_000);
        assert_eq!(r.free(), u64::MAX - 10_000);
        let snap = r.snapshot();
        assert_eq!(snap.allocated, seen.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn should_refuse_to_restore_a_snapshot_of_another_network() {
        let cases = [
            ("192.168.1.0/24", "192.168.2.0/24", "192.168.2.1"),
            ("fd00:1::/120", "fd00:2::/120", "fd00:2::1"),
            ("192.168.1.0/24", "192.168.1.0/25", "192.168.1.1"),
        ];
        for (have, other, addr) in cases {
            let mut r = ClusterIpRange::new(net(have)).unwrap();
            let snap = RangeSnapshot {
                range: net(other),
                allocated: vec![ip(addr)],
            };
            let err = r.restore(&snap).unwrap_err();
            assert_eq!(
                err.to_string(),
                "the provided network does not match the current range"
            );
        }
    }

    #[test]
    fn should_refuse_a_snapshot_with_an_address_outside_the_range_and_keep_the_state() {
        for (cidr, good, bad) in [
            ("10.0.0.0/24", "10.0.0.7", "10.0.0.255"),
            ("fd00::/120", "fd00::7", "fd00::100"),
        ] {
            let mut r = ClusterIpRange::new(net(cidr)).unwrap();
            r.allocate(ip(good)).unwrap();
            let snap = RangeSnapshot {
                range: net(cidr),
                allocated: vec![ip(bad)],
            };
            assert_eq!(
                r.restore(&snap),
                Err(AllocError::NotInRange {
                    ip: ip(bad),
                    range: net(cidr)
                })
            );
            assert_eq!(r.allocated(), vec![ip(good)]);
        }
    }

    #[test]
    fn should_restore_upstream_new_from_snapshot_counts() {
        // TestNewFromSnapshot: 192.168.0.0/24 with 128 allocated: free 126, used 128.
        let mut r = ClusterIpRange::new(net("192.168.0.0/24")).unwrap();
        for _ in 0..128 {
            r.allocate_next().unwrap();
        }
        let json = serde_json::to_string(&r.snapshot()).unwrap();
        let snap: RangeSnapshot = serde_json::from_str(&json).unwrap();
        let mut other = ClusterIpRange::new(net("192.168.0.0/24")).unwrap();
        other.restore(&snap).unwrap();
        assert_eq!(other.free(), 126);
        assert_eq!(other.used(), 128);
        assert_eq!(other.allocated(), r.allocated());
    }
}
