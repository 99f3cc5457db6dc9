//! Property tests of the allocators against simple models, IPv4 and IPv6 side by side.
//!
//! The ranges are small so that random operation sequences fill them, empty them and wrap.

use std::collections::BTreeSet;
use std::net::IpAddr;

use dualstack_ipam::{
    AllocError, CidrSet, CidrSetError, ClusterIpRange, IpFamily, NodePortAllocator, PortAllocError,
    PortRange,
};
use ipnet::IpNet;
use proptest::prelude::*;

/// Small service CIDRs of both families: (cidr, usable, static band size).
const RANGES: [(&str, u64, u64); 10] = [
    ("10.0.0.0/26", 62, 16),
    ("fd00:10::/122", 63, 16),
    ("10.0.0.0/27", 30, 16),
    ("fd00:10::/123", 31, 16),
    ("10.0.0.0/28", 14, 0),
    ("fd00:10::/124", 15, 0),
    ("192.168.1.240/30", 2, 0),
    ("fd00:10::/126", 3, 0),
    ("192.168.1.0/31", 0, 0),
    ("fd00:10::/127", 1, 0),
];

fn int(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn addr(family: IpFamily, v: u128) -> IpAddr {
    match family {
        IpFamily::IPv4 => IpAddr::V4((v as u32).into()),
        IpFamily::IPv6 => IpAddr::V6(v.into()),
    }
}

/// The usable addresses of a service CIDR, computed independently of the crate.
fn usable_model(cidr: &IpNet) -> Vec<IpAddr> {
    let family = IpFamily::of_net(cidr);
    let network = int(cidr.network());
    let last = int(cidr.broadcast());
    let last_usable = match family {
        IpFamily::IPv4 => last.saturating_sub(1),
        IpFamily::IPv6 => last,
    };
    (network + 1..=last_usable)
        .map(|v| addr(family, v))
        .collect()
}

/// An address near the range: `network + (x mod (size + 2))`, so some fall outside.
fn near(cidr: &IpNet, x: u64) -> IpAddr {
    let family = IpFamily::of_net(cidr);
    let size = int(cidr.broadcast()) - int(cidr.network()) + 1;
    let v = int(cidr.network()) + u128::from(x) % (size + 2);
    addr(family, v)
}

#[derive(Clone, Debug)]
enum Op {
    Allocate(u64),
    AllocateNext,
    Release(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u64>().prop_map(Op::Allocate),
        Just(Op::AllocateNext),
        Just(Op::AllocateNext),
        any::<u64>().prop_map(Op::Release),
    ]
}

/// The outcome of one operation, to compare two allocators.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Allocated(Result<(), AllocError>),
    Next(Result<IpAddr, AllocError>),
    Released(bool),
}

fn apply(r: &mut ClusterIpRange, op: &Op) -> Outcome {
    let cidr = r.cidr();
    match *op {
        Op::Allocate(x) => Outcome::Allocated(r.allocate(near(&cidr, x))),
        Op::AllocateNext => Outcome::Next(r.allocate_next()),
        Op::Release(x) => Outcome::Released(r.release(near(&cidr, x))),
    }
}

proptest! {
    #[test]
    fn cluster_ip_range_agrees_with_a_set_model(
        which in 0..RANGES.len(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let (cidr, usable, static_len) = RANGES[which];
        let cidr: IpNet = cidr.parse().unwrap();
        let valid = usable_model(&cidr);
        prop_assert_eq!(valid.len() as u64, usable);
        let statics: BTreeSet<IpAddr> = valid.iter().take(static_len as usize).copied().collect();
        let mut r = ClusterIpRange::with_seed(cidr, seed).unwrap();
        prop_assert_eq!(r.usable(), usable);
        prop_assert_eq!(r.static_band_size(), static_len);
        let mut model = BTreeSet::new();
        for op in &ops {
            match apply(&mut r, op) {
                Outcome::Allocated(got) => {
                    let Op::Allocate(x) = *op else { unreachable!() };
                    let ip = near(&cidr, x);
                    let expected = if !valid.contains(&ip) {
                        Err(AllocError::NotInRange { ip, range: cidr })
                    } else if model.contains(&ip) {
                        Err(AllocError::Allocated)
                    } else {
                        model.insert(ip);
                        Ok(())
                    };
                    prop_assert_eq!(got, expected);
                }
                Outcome::Next(Ok(ip)) => {
                    prop_assert!(valid.contains(&ip), "{} not usable", ip);
                    prop_assert!(model.insert(ip), "{} handed out twice", ip);
                    if statics.contains(&ip) {
                        // Only once every dynamic address is taken.
                        prop_assert!(valid.iter().filter(|a| !statics.contains(a)).all(|a| model.contains(a)));
                    }
                }
                Outcome::Next(Err(err)) => {
                    prop_assert_eq!(err, AllocError::Full);
                    prop_assert_eq!(model.len() as u64, usable);
                }
                Outcome::Released(got) => {
                    let Op::Release(x) = *op else { unreachable!() };
                    prop_assert_eq!(got, model.remove(&near(&cidr, x)));
                }
            }
            prop_assert_eq!(r.used(), model.len() as u64);
            prop_assert_eq!(r.free(), usable - model.len() as u64);
        }
        prop_assert_eq!(r.allocated(), model.iter().copied().collect::<Vec<_>>());
        for ip in &valid {
            prop_assert_eq!(r.has(*ip), model.contains(ip));
        }
    }

    #[test]
    fn cluster_ip_range_fills_without_duplicates_then_refills_after_release(
        which in 0..RANGES.len(),
        seed in any::<u64>(),
        release_mask in any::<u64>(),
    ) {
        let (cidr, usable, _) = RANGES[which];
        let cidr: IpNet = cidr.parse().unwrap();
        let mut r = ClusterIpRange::with_seed(cidr, seed).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..usable {
            let dry = r.dry_run_allocate_next();
            let ip = r.allocate_next().unwrap();
            prop_assert_eq!(dry, Ok(ip));
            prop_assert!(seen.insert(ip));
        }
        prop_assert_eq!(r.allocate_next(), Err(AllocError::Full));
        prop_assert_eq!(seen.iter().copied().collect::<Vec<_>>(), usable_model(&cidr));

        let released: BTreeSet<IpAddr> = seen
            .iter()
            .enumerate()
            .filter(|(i, _)| release_mask >> (i % 64) & 1 == 1)
            .map(|(_, ip)| *ip)
            .collect();
        for ip in &released {
            prop_assert!(r.release(*ip));
        }
        let mut again = BTreeSet::new();
        for _ in 0..released.len() {
            again.insert(r.allocate_next().unwrap());
        }
        prop_assert_eq!(again, released);
        prop_assert_eq!(r.allocate_next(), Err(AllocError::Full));
    }

    #[test]
    fn cluster_ip_snapshot_restore_gives_identical_state_and_behaviour(
        which in 0..RANGES.len(),
        seeds in any::<(u64, u64, u64)>(),
        before in proptest::collection::vec(op(), 0..100),
        after in proptest::collection::vec(op(), 1..100),
    ) {
        let (cidr, _, _) = RANGES[which];
        let cidr: IpNet = cidr.parse().unwrap();
        let mut original = ClusterIpRange::with_seed(cidr, seeds.0).unwrap();
        for op in &before {
            apply(&mut original, op);
        }
        let snapshot = original.snapshot();
        let json = serde_json::to_string(&snapshot).unwrap();
        let mut restored = ClusterIpRange::with_seed(cidr, seeds.1).unwrap();
        // Restore replaces whatever was there.
        for _ in 0..3 {
            let _ = restored.allocate_next();
        }
        restored.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        prop_assert_eq!(restored.snapshot(), snapshot.clone());
        prop_assert_eq!(restored.used(), original.used());
        prop_assert_eq!(restored.free(), original.free());

        original.reseed(seeds.2);
        restored.reseed(seeds.2);
        for op in &after {
            prop_assert_eq!(apply(&mut original, op), apply(&mut restored, op));
        }
        prop_assert_eq!(original.snapshot(), restored.snapshot());
    }
}

/// CIDR sets of both families: (cluster, node mask).
const CIDR_SETS: [(&str, u8); 6] = [
    ("10.0.0.0/24", 28),
    ("fd00:10::/120", 124),
    ("10.244.0.0/16", 24),
    ("fd00:10:244::/56", 64),
    ("10.0.0.0/22", 32),
    ("fd00:10:244::/54", 64),
];

#[derive(Clone, Debug)]
enum CidrOp {
    AllocateNext,
    /// Occupy (`true`) or release the CIDR at `index` with `extra` bits less than the node mask
    /// (a larger CIDR) or `extra - 3` more bits when negative (a smaller one).
    Cover(bool, u64, i8),
}

fn cidr_op() -> impl Strategy<Value = CidrOp> {
    prop_oneof![
        3 => Just(CidrOp::AllocateNext),
        1 => (any::<bool>(), any::<u64>(), -3i8..4).prop_map(|(o, i, e)| CidrOp::Cover(o, i, e)),
    ]
}

proptest! {
    #[test]
    fn cidr_set_agrees_with_a_round_robin_model(
        which in 0..CIDR_SETS.len(),
        ops in proptest::collection::vec(cidr_op(), 1..400),
    ) {
        let (cluster, mask) = CIDR_SETS[which];
        let cluster: IpNet = cluster.parse().unwrap();
        let mut set = CidrSet::new(cluster, mask).unwrap();
        let max = set.max_cidrs();
        let bits = IpFamily::of_net(&cluster).bits();
        let mut used = BTreeSet::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                CidrOp::AllocateNext => {
                    let expected = (0..max).map(|i| (next + i) % max).find(|i| !used.contains(i));
                    match (set.allocate_next(), expected) {
                        (Ok(cidr), Some(index)) => {
                            prop_assert_eq!(Some(cidr), set.cidr_at(index));
                            prop_assert_eq!(cidr.prefix_len(), mask);
                            prop_assert!(cluster.contains(&cidr));
                            used.insert(index);
                            next = (index + 1) % max;
                        }
                        (Err(err), None) => prop_assert_eq!(err, CidrSetError::NoCidrsRemaining),
                        (got, want) => prop_assert!(false, "got {:?}, model wants {:?}", got, want),
                    }
                }
                CidrOp::Cover(occupy, index, extra) => {
                    let index = index % max;
                    let prefix = if extra >= 0 {
                        mask.saturating_sub(extra as u8).max(cluster.prefix_len().saturating_sub(1))
                    } else {
                        (mask + (-extra) as u8).min(bits)
                    };
                    let base = set.cidr_at(index).unwrap();
                    let cidr = IpNet::new(base.network(), prefix).unwrap().trunc();
                    // The indices it covers, per the model.
                    let covered: Vec<u64> = (0..max)
                        .filter(|&i| {
                            let c = set.cidr_at(i).unwrap();
                            cidr.contains(&c) || c.contains(&cidr)
                        })
                        .collect();
                    let flipped = covered
                        .iter()
                        .filter(|i| if occupy { used.insert(**i) } else { used.remove(*i) })
                        .count();
                    let before = set.allocated();
                    if occupy {
                        set.occupy(&cidr).unwrap();
                        prop_assert_eq!(set.allocated(), before + flipped as u64);
                    } else {
                        set.release(&cidr).unwrap();
                        prop_assert_eq!(set.allocated(), before - flipped as u64);
                    }
                }
            }
            prop_assert_eq!(set.allocated(), used.len() as u64);
            prop_assert_eq!(set.next_candidate(), next);
        }
        for i in 0..max {
            prop_assert_eq!(set.is_allocated(&set.cidr_at(i).unwrap()), used.contains(&i));
        }
    }

    #[test]
    fn cidr_set_hands_out_every_cidr_once_then_is_full(which in 0..CIDR_SETS.len(), occupied in any::<u64>()) {
        let (cluster, mask) = CIDR_SETS[which];
        let cluster: IpNet = cluster.parse().unwrap();
        let mut set = CidrSet::new(cluster, mask).unwrap();
        let max = set.max_cidrs();
        let pre = set.cidr_at(occupied % max).unwrap();
        set.occupy(&pre).unwrap();
        set.occupy(&pre).unwrap();
        let mut seen = BTreeSet::new();
        for _ in 1..max {
            let c = set.allocate_next().unwrap();
            prop_assert!(c != pre);
            prop_assert!(seen.insert(c));
        }
        prop_assert_eq!(set.allocate_next(), Err(CidrSetError::NoCidrsRemaining));
        set.release(&cluster).unwrap();
        prop_assert_eq!(set.allocated(), 0);
    }
}

/// Small port ranges: (range, static band size).
const PORT_RANGES: [(&str, u64); 4] = [
    ("30000-30009", 0),
    ("30000-30099", 16),
    ("100-163", 16),
    ("65500-65535", 16),
];

/// The outcome of one port operation, to compare two allocators.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PortOutcome {
    Allocated(Result<(), PortAllocError>),
    Next(Result<u16, PortAllocError>),
    Released(bool),
}

/// A port near the range: `first - 2 + (x mod (size + 4))`, so some fall outside.
fn port_near(r: PortRange, x: u64) -> u16 {
    let lo = u64::from(r.first()).saturating_sub(2);
    (lo + x % (u64::from(r.size()) + 4)).min(65535) as u16
}

fn apply_port(a: &mut NodePortAllocator, op: &Op) -> PortOutcome {
    let r = a.range();
    match *op {
        Op::Allocate(x) => PortOutcome::Allocated(a.allocate(port_near(r, x))),
        Op::AllocateNext => PortOutcome::Next(a.allocate_next()),
        Op::Release(x) => PortOutcome::Released(a.release(port_near(r, x))),
    }
}

proptest! {
    #[test]
    fn node_port_allocator_agrees_with_a_set_model(
        which in 0..PORT_RANGES.len(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let (text, static_len) = PORT_RANGES[which];
        let range = PortRange::parse(text).unwrap();
        let mut a = NodePortAllocator::with_seed(range, seed);
        let mut model = BTreeSet::new();
        let statics: BTreeSet<u16> = (0..static_len).map(|i| range.first() + i as u16).collect();
        for op in &ops {
            match apply_port(&mut a, op) {
                PortOutcome::Allocated(got) => {
                    let Op::Allocate(x) = *op else { unreachable!() };
                    let p = port_near(range, x);
                    let expected = if !range.contains(p) {
                        Err(PortAllocError::NotInRange { range })
                    } else if !model.insert(p) {
                        Err(PortAllocError::Allocated)
                    } else {
                        Ok(())
                    };
                    prop_assert_eq!(got, expected);
                }
                PortOutcome::Next(Ok(p)) => {
                    prop_assert!(range.contains(p));
                    prop_assert!(model.insert(p), "{} twice", p);
                    if statics.contains(&p) {
                        prop_assert!((range.first()..=range.last())
                            .filter(|q| !statics.contains(q))
                            .all(|q| model.contains(&q)));
                    }
                }
                PortOutcome::Next(Err(err)) => {
                    prop_assert_eq!(err, PortAllocError::Full);
                    prop_assert_eq!(model.len() as u32, range.size());
                }
                PortOutcome::Released(got) => {
                    let Op::Release(x) = *op else { unreachable!() };
                    prop_assert_eq!(got, model.remove(&port_near(range, x)));
                }
            }
            prop_assert_eq!(a.used(), model.len() as u32);
        }
        prop_assert_eq!(a.snapshot().allocated, model.iter().copied().collect::<Vec<_>>());
    }

    #[test]
    fn node_port_snapshot_restore_gives_identical_behaviour(
        which in 0..PORT_RANGES.len(),
        seeds in any::<(u64, u64)>(),
        before in proptest::collection::vec(op(), 0..100),
        after in proptest::collection::vec(op(), 1..100),
    ) {
        let range = PortRange::parse(PORT_RANGES[which].0).unwrap();
        let mut original = NodePortAllocator::with_seed(range, seeds.0);
        for op in &before {
            apply_port(&mut original, op);
        }
        let mut restored = NodePortAllocator::new(range);
        restored.restore(&original.snapshot()).unwrap();
        prop_assert_eq!(restored.snapshot(), original.snapshot());
        original.reseed(seeds.1);
        restored.reseed(seeds.1);
        for op in &after {
            prop_assert_eq!(apply_port(&mut original, op), apply_port(&mut restored, op));
        }
    }
}
