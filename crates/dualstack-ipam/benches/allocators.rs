//! Allocator benchmarks: every operation should stay well under 1 µs and flat from empty to
//! 99% full.
//!
//! * `clusterip/<cidr>/<fill>`: one `allocate_next` plus one `release` of the address it
//!   returned, on a range pre-filled to the given level (so the fill level stays constant). An
//!   IPv6 /64 cannot be half filled; it is measured empty and with 1,000,000 addresses taken.
//! * `cidrset/ipv6-48-to-64`: allocating all 65,536 /64 node CIDRs of an IPv6 /48, one after
//!   the other; the reported time is for the 65,536 allocations (divide by 65,536, or read the
//!   throughput line).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dualstack_ipam::{CidrSet, ClusterIpRange};

fn filled(cidr: &str, count: u64) -> ClusterIpRange {
    let mut r = ClusterIpRange::with_seed(cidr.parse().unwrap(), 0x5eed).unwrap();
    for _ in 0..count {
        r.allocate_next().unwrap();
    }
    r
}

fn cluster_ip(c: &mut Criterion) {
    let mut group = c.benchmark_group("clusterip");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let v4_16 = 65_534u64;
    let v6_108 = (1u64 << 20) - 1;
    let cases: [(&str, &str, u64); 8] = [
        ("10.0.0.0/16", "0%", 0),
        ("10.0.0.0/16", "50%", v4_16 / 2),
        ("10.0.0.0/16", "99%", v4_16 * 99 / 100),
        ("fd00:10::/108", "0%", 0),
        ("fd00:10::/108", "50%", v6_108 / 2),
        ("fd00:10::/108", "99%", v6_108 * 99 / 100),
        ("fd00:10::/64", "0%", 0),
        ("fd00:10::/64", "1M-preallocated", 1_000_000),
    ];
    for (cidr, label, count) in cases {
        let mut r = filled(cidr, count);
        group.bench_function(format!("allocate_next+release/{cidr}/{label}"), |b| {
            b.iter(|| {
                let ip = r.allocate_next().unwrap();
                black_box(r.release(black_box(ip)));
            })
        });
    }
    group.finish();
}

fn cidr_set(c: &mut Criterion) {
    let mut group = c.benchmark_group("cidrset");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(65_536));
    group.bench_function("allocate_next/ipv6-48-to-64/65536-nodes", |b| {
        b.iter_batched(
            || CidrSet::new("fd00:10:244::/48".parse().unwrap(), 64).unwrap(),
            |mut set| {
                for _ in 0..65_536 {
                    black_box(set.allocate_next().unwrap());
                }
                set
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, cluster_ip, cidr_set);
criterion_main!(benches);
