//! The ClusterIP allocators of a cluster: one [`ClusterIpRange`] per configured family.
//!
//! The first range is the primary (`--service-cluster-ip-range` entry 0). A Service's ClusterIPs
//! are allocated as a unit: [`ServiceIpAllocators::allocate_all`] either allocates every requested
//! family or, when one fails, releases what it had taken for the earlier ones, as upstream's
//! registry does (`kubernetes/kubernetes:pkg/registry/core/service/storage/alloc.go`).

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::cluster_ip::{AllocError, ClusterIpRange, RangeError};
use crate::family::IpFamily;

/// Why a set of service CIDRs cannot form the cluster's allocators.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum DualError {
    /// No service CIDR was given.
    #[error("at least one service cidr is required")]
    NoRanges,
    /// More than two service CIDRs were given.
    #[error("at most two service cidrs are allowed, got {count}")]
    TooManyRanges {
        /// How many were given.
        count: usize,
    },
    /// Both service CIDRs are of the same family.
    #[error("service cidrs {first} and {second} must be of different ip families")]
    SameFamily {
        /// The primary CIDR.
        first: IpNet,
        /// The secondary CIDR.
        second: IpNet,
    },
    /// A service CIDR cannot back an allocator.
    #[error("service cidr [{index}] {cidr} is invalid")]
    Range {
        /// Its position in the list.
        index: usize,
        /// The CIDR.
        cidr: IpNet,
        /// What is wrong with it.
        #[source]
        source: RangeError,
    },
}

/// What [`ServiceIpAllocators::release_all`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseReport {
    /// How many addresses were allocated and are now free.
    pub released: usize,
    /// Addresses whose family has no configured range any more; upstream logs "Not releasing
    /// ClusterIP ... because IPFamily ... is no longer configured on server" for these.
    pub unconfigured: Vec<IpAddr>,
}

/// One ClusterIP allocator per configured family, primary first.
#[derive(Clone, Debug)]
pub struct ServiceIpAllocators {
    ranges: Vec<ClusterIpRange>,
}

impl ServiceIpAllocators {
    /// The allocators of a single- or dual-stack cluster; `ranges[0]` is the primary.
    pub fn new(ranges: Vec<ClusterIpRange>) -> Result<Self, DualError> {
        match ranges.as_slice() {
            [] => Err(DualError::NoRanges),
            [_] => Ok(ServiceIpAllocators { ranges }),
            [a, b] if a.family() == b.family() => Err(DualError::SameFamily {
                first: a.cidr(),
                second: b.cidr(),
            }),
            [_, _] => Ok(ServiceIpAllocators { ranges }),
            _ => Err(DualError::TooManyRanges {
                count: ranges.len(),
            }),
        }
    }

    /// Builds empty allocators from the service CIDRs, primary first.
    pub fn from_cidrs(cidrs: &[IpNet]) -> Result<Self, DualError> {
        let ranges = cidrs
            .iter()
            .enumerate()
            .map(|(index, &cidr)| {
                ClusterIpRange::new(cidr).map_err(|source| DualError::Range {
                    index,
                    cidr,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(ranges)
    }

    /// The configured families, primary first.
    pub fn families(&self) -> Vec<IpFamily> {
        self.ranges.iter().map(ClusterIpRange::family).collect()
    }

    /// The primary family (the family of the first service CIDR).
    pub fn primary_family(&self) -> IpFamily {
        self.ranges[0].family()
    }

    /// Whether both families are configured.
    pub fn is_dual_stack(&self) -> bool {
        self.ranges.len() == 2
    }

    /// The primary range.
    pub fn primary(&self) -> &ClusterIpRange {
        &self.ranges[0]
    }

    /// The range of `family`, if configured.
    pub fn get(&self, family: IpFamily) -> Option<&ClusterIpRange> {
        self.ranges.iter().find(|r| r.family() == family)
    }

    /// The range of `family`, if configured, for changes.
    pub fn get_mut(&mut self, family: IpFamily) -> Option<&mut ClusterIpRange> {
        self.ranges.iter_mut().find(|r| r.family() == family)
    }

    /// Every range, primary first.
    pub fn ranges(&self) -> &[ClusterIpRange] {
        &self.ranges
    }

    fn allocate_one(
        &mut self,
        family: IpFamily,
        wanted: Option<IpAddr>,
    ) -> Result<IpAddr, AllocError> {
        let range = self
            .get_mut(family)
            .ok_or(AllocError::FamilyNotConfigured { family })?;
        match wanted {
            Some(ip) => range.allocate(ip).map(|()| ip),
            None => range.allocate_next(),
        }
    }

    /// Allocates one address per request, in order: `Some(ip)` asks for that address, `None` for
    /// any free one. Either every request succeeds and the addresses come back in request order,
    /// or nothing stays allocated and the error comes with the index of the failing request.
    pub fn allocate_all(
        &mut self,
        requests: &[(IpFamily, Option<IpAddr>)],
    ) -> Result<Vec<IpAddr>, (usize, AllocError)> {
        let mut done = Vec::with_capacity(requests.len());
        for (index, &(family, wanted)) in requests.iter().enumerate() {
            match self.allocate_one(family, wanted) {
                Ok(ip) => done.push(ip),
                Err(err) => {
                    for &ip in &done {
                        self.release_one(ip);
                    }
                    return Err((index, err));
                }
            }
        }
        Ok(done)
    }

    /// Checks what [`ServiceIpAllocators::allocate_all`] would do, without changing anything.
    /// Each request is checked on its own: two requests in one call for the same address are not
    /// detected (a Service never has two ClusterIPs of one family).
    pub fn dry_run_allocate_all(
        &self,
        requests: &[(IpFamily, Option<IpAddr>)],
    ) -> Result<Vec<IpAddr>, (usize, AllocError)> {
        requests
            .iter()
            .enumerate()
            .map(|(index, &(family, wanted))| {
                let range = self
                    .get(family)
                    .ok_or((index, AllocError::FamilyNotConfigured { family }))?;
                match wanted {
                    Some(ip) => range.dry_run_allocate(ip).map(|()| ip),
                    None => range.dry_run_allocate_next(),
                }
                .map_err(|err| (index, err))
            })
            .collect()
    }

    fn release_one(&mut self, ip: IpAddr) -> Option<bool> {
        self.get_mut(IpFamily::of_addr(&ip)).map(|r| r.release(ip))
    }

    /// Releases addresses, each in the range of its own family. Addresses of a family that is
    /// not configured are skipped and listed; addresses not allocated are ignored.
    pub fn release_all(&mut self, ips: &[IpAddr]) -> ReleaseReport {
        let mut report = ReleaseReport::default();
        for &ip in ips {
            match self.release_one(ip) {
                Some(released) => report.released += usize::from(released),
                None => report.unconfigured.push(ip),
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn should_keep_the_configured_order_with_the_primary_first() {
        // D46 and D64 from the spec.
        let cases = [
            (
                ["10.0.0.0/16", "fd00:10::/108"],
                [IpFamily::IPv4, IpFamily::IPv6],
            ),
            (
                ["fd00:10::/108", "10.0.0.0/16"],
                [IpFamily::IPv6, IpFamily::IPv4],
            ),
        ];
        for (cidrs, families) in cases {
            let a = ServiceIpAllocators::from_cidrs(&cidrs.map(net)).unwrap();
            assert_eq!(a.families(), families.to_vec());
            assert_eq!(a.primary_family(), families[0]);
            assert!(a.is_dual_stack());
            assert_eq!(a.primary().cidr(), net(cidrs[0]));
            assert_eq!(a.get(families[1]).unwrap().cidr(), net(cidrs[1]));
        }
        let single = ServiceIpAllocators::from_cidrs(&[net("fd00:10::/108")]).unwrap();
        assert!(!single.is_dual_stack());
        assert!(single.get(IpFamily::IPv4).is_none());
    }

    #[test]
    fn should_refuse_bad_cidr_lists() {
        let cases: [(Vec<&str>, &str); 4] = [
            (vec![], "at least one service cidr is required"),
            (
                vec!["10.0.0.0/16", "10.1.0.0/16"],
                "service cidrs 10.0.0.0/16 and 10.1.0.0/16 must be of different ip families",
            ),
            (
                vec!["10.0.0.0/16", "fd00::/108", "10.1.0.0/16"],
                "at most two service cidrs are allowed, got 3",
            ),
            (
                vec!["10.0.0.0/16", "fd00::/48"],
                "service cidr [1] fd00::/48 is invalid",
            ),
        ];
        for (cidrs, message) in cases {
            let cidrs: Vec<IpNet> = cidrs.into_iter().map(net).collect();
            let err = ServiceIpAllocators::from_cidrs(&cidrs).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn should_allocate_both_families_in_request_order() {
        let mut a =
            ServiceIpAllocators::from_cidrs(&[net("10.0.0.0/24"), net("fd00:10::/120")]).unwrap();
        let got = a
            .allocate_all(&[
                (IpFamily::IPv6, None),
                (IpFamily::IPv4, Some(ip("10.0.0.10"))),
            ])
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(IpFamily::of_addr(&got[0]), IpFamily::IPv6);
        assert_eq!(got[1], ip("10.0.0.10"));
        assert!(a.get(IpFamily::IPv6).unwrap().has(got[0]));
        assert!(a.get(IpFamily::IPv4).unwrap().has(got[1]));
    }

    #[test]
    fn should_roll_back_the_first_family_when_the_second_fails() {
        // (second family's cidr, filler: how to make it fail, expected error)
        let cases = [
            // IPv4 primary, IPv6 full.
            (
                "10.0.0.0/24",
                "fd00:10::/126",
                IpFamily::IPv4,
                IpFamily::IPv6,
            ),
            // IPv6 primary, IPv4 full.
            (
                "fd00:10::/120",
                "10.0.0.0/30",
                IpFamily::IPv6,
                IpFamily::IPv4,
            ),
        ];
        for (first, second, f1, f2) in cases {
            let mut a = ServiceIpAllocators::from_cidrs(&[net(first), net(second)]).unwrap();
            while a.get_mut(f2).unwrap().allocate_next().is_ok() {}
            let before = a.get(f1).unwrap().snapshot();
            let err = a.allocate_all(&[(f1, None), (f2, None)]).unwrap_err();
            assert_eq!(err, (1, AllocError::Full));
            assert_eq!(a.get(f1).unwrap().snapshot(), before);
            assert_eq!(a.get(f1).unwrap().used(), 0);

            // Same with a specific first address that is rolled back.
            let first_ip = a.get(f1).unwrap().first_usable().unwrap();
            let err = a
                .allocate_all(&[(f1, Some(first_ip)), (f2, None)])
                .unwrap_err();
            assert_eq!(err.0, 1);
            assert!(!a.get(f1).unwrap().has(first_ip));
        }
    }

    #[test]
    fn should_fail_a_request_for_an_unconfigured_family_without_allocating() {
        let mut a = ServiceIpAllocators::from_cidrs(&[net("10.0.0.0/24")]).unwrap();
        let err = a
            .allocate_all(&[(IpFamily::IPv4, None), (IpFamily::IPv6, None)])
            .unwrap_err();
        assert_eq!(
            err,
            (
                1,
                AllocError::FamilyNotConfigured {
                    family: IpFamily::IPv6
                }
            )
        );
        assert_eq!(
            err.1.to_string(),
            "no service cidr is configured for ip family IPv6"
        );
        assert_eq!(a.primary().used(), 0);
    }

    #[test]
    fn should_report_a_specific_address_in_the_wrong_range() {
        let mut a =
            ServiceIpAllocators::from_cidrs(&[net("10.0.0.0/16"), net("fd00:10::/108")]).unwrap();
        let err = a
            .allocate_all(&[
                (IpFamily::IPv4, None),
                (IpFamily::IPv6, Some(ip("fd00:11::1"))),
            ])
            .unwrap_err();
        assert_eq!(err.0, 1);
        assert_eq!(
            err.1.to_string(),
            "provided IP fd00:11::1 is not in the valid range. The range of valid IPs is fd00:10::/108"
        );
        assert_eq!(a.primary().used(), 0);
    }

    #[test]
    fn should_release_by_family_and_skip_unconfigured_families() {
        let mut a = ServiceIpAllocators::from_cidrs(&[net("fd00:10::/108")]).unwrap();
        let got = a.allocate_all(&[(IpFamily::IPv6, None)]).unwrap();
        let report = a.release_all(&[got[0], ip("10.0.0.5"), ip("fd00:10::77")]);
        assert_eq!(
            report,
            ReleaseReport {
                released: 1,
                unconfigured: vec![ip("10.0.0.5")],
            }
        );
        assert_eq!(a.primary().used(), 0);
    }

    #[test]
    fn should_dry_run_the_pair_without_allocating() {
        let mut a =
            ServiceIpAllocators::from_cidrs(&[net("10.0.0.0/24"), net("fd00:10::/120")]).unwrap();
        let requests = [
            (IpFamily::IPv4, None),
            (IpFamily::IPv6, Some(ip("fd00:10::a"))),
        ];
        let dry = a.dry_run_allocate_all(&requests).unwrap();
        assert_eq!(a.primary().used(), 0);
        assert_eq!(a.allocate_all(&requests).unwrap(), dry);
        assert_eq!(
            a.dry_run_allocate_all(&requests).unwrap_err(),
            (1, AllocError::Allocated)
        );
    }
}
