//! Incremental updates: what a change rewrites, conntrack and health-check outputs, and the
//! scale test (one Service changed among 10,000) with timings (`--ignored --nocapture`).

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dualstack_ipam::IpFamily;
use dualstack_proxy::nft::{Key, Op};
use dualstack_proxy::{DualStackProxier, Protocol};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use support::*;

/// `n` dual-stack ClusterIP Services with `eps` endpoints per family each.
fn many(n: u16, eps: u8) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::with_capacity(n as usize);
    let mut slices = Vec::with_capacity(2 * n as usize);
    for i in 0..n {
        let name = format!("svc{i}");
        svcs.push(cluster_ip_service(
            "bulk",
            &name,
            &[
                Plan::v4().cluster_ip(i + 1000),
                Plan::v6().cluster_ip(i + 1000),
            ],
        ));
        for p in plans() {
            let addrs: Vec<Ep> = (0..eps)
                .map(|e| ready(endpoint_addr(p, i, e), OTHER_NODE))
                .collect();
            slices.push(slice(
                "bulk",
                &name,
                &format!("{name}-{}", p.fam()),
                p.family,
                8080,
                &addrs,
            ));
        }
    }
    (svcs, slices)
}

fn endpoint_addr(p: Plan, svc: u16, ep: u8) -> IpAddr {
    let n = u32::from(svc) * 16 + u32::from(ep);
    if p.family == IpFamily::IPv4 {
        ip(&format!(
            "10.{}.{}.{}",
            1 + n / 65536,
            (n / 256) % 256,
            n % 256
        ))
    } else {
        ip(&format!("fd00:10:1::{:x}:{:x}", n >> 16, n & 0xffff))
    }
}

fn op_names(op: &Op) -> String {
    format!("{op:?}")
}

/// The first address of an element key.
fn key_addr(k: &Key) -> Option<IpAddr> {
    match k {
        Key::Addr(a)
        | Key::AddrProtoPort(a, ..)
        | Key::AddrProtoPortBucket(a, ..)
        | Key::AddrPair(a, _) => Some(*a),
        Key::ProtoPort(..) | Key::ProtoPortBucket(..) => None,
    }
}

fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let spec = svc.spec.as_ref().unwrap();
    spec.cluster_ips
        .iter()
        .flatten()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// The endpoint addresses of the slices of Service `name`.
fn slice_addresses(slices: &[EndpointSlice], name: &str) -> Vec<IpAddr> {
    slices
        .iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .is_some_and(|n| n == name)
        })
        .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.iter()))
        .map(|a| a.parse().unwrap())
        .collect()
}

#[test]
fn second_sync_without_changes_is_empty() {
    let (svcs, slices) = world();
    let mut p = DualStackProxier::new(&node_config());
    let t = Instant::now();
    p.update(&svcs, &slices, t).unwrap();
    let r = p.update(&svcs, &slices, t).unwrap();
    assert!(
        r.ipv4.transaction.is_empty() && r.ipv6.transaction.is_empty(),
        "{:?}",
        r.ipv4.transaction.ops
    );
}

#[test]
fn incremental_result_equals_a_fresh_full_render() {
    let (svcs, slices) = world();
    let mut p = DualStackProxier::new(&node_config());
    let t = Instant::now();
    p.update(&[], &[], t).unwrap();
    p.update(&svcs[..4], &slices, t).unwrap();
    p.update(&svcs, &slices[1..], t).unwrap();
    p.update(&svcs, &slices, t).unwrap();
    let mut fresh = DualStackProxier::new(&node_config());
    fresh.update(&svcs, &slices, t).unwrap();
    for f in IpFamily::ALL {
        assert_eq!(p.family(f).ruleset(), fresh.family(f).ruleset());
    }
}

/// The size a transaction declares for `set`, if it declares it.
fn declared_size(tx: &dualstack_proxy::Transaction, set: &str) -> Option<u32> {
    tx.ops.iter().find_map(|op| match op {
        Op::AddSet(s) if s.name == set => s.size,
        _ => None,
    })
}

#[test]
fn sets_are_sized_with_room_and_a_sync_that_would_fill_one_is_a_full_one() {
    use dualstack_proxy::ruleset::{MIN_SET_SIZE, set_size};
    assert_eq!(set_size(0), MIN_SET_SIZE);
    assert_eq!(set_size(100_000), 262_144);
    let t = Instant::now();
    let mut p = DualStackProxier::new(&node_config());
    // 200 Services × 2 endpoints: 400 backends per family get the smallest size.
    let (svcs, slices) = many(200, 2);
    let r = p.update(&svcs, &slices, t).unwrap();
    assert!(r.ipv4.transaction.full);
    assert_eq!(
        declared_size(&r.ipv4.transaction, "service-backends"),
        Some(MIN_SET_SIZE)
    );
    // 300 more: 1,000 backends still fit, so the change is incremental.
    let (svcs, slices) = many(500, 2);
    let r = p.update(&svcs, &slices, t).unwrap();
    assert!(!r.ipv4.transaction.full && !r.ipv6.transaction.full);
    // 100 more would make 1,200 backends in a set of 1,024: the whole table is written again,
    // the set sized for what it holds.
    let (svcs, slices) = many(600, 2);
    let r = p.update(&svcs, &slices, t).unwrap();
    for f in r.families() {
        assert!(f.transaction.full, "{}", f.transaction.family);
        assert_eq!(
            declared_size(&f.transaction, "service-backends"),
            Some(4096)
        );
        assert_eq!(declared_size(&f.transaction, "service-ips"), Some(2048));
    }
    // Elements only go: nothing refills, so the next change is incremental again.
    let (svcs, slices) = many(300, 2);
    let r = p.update(&svcs, &slices, t).unwrap();
    assert!(!r.ipv4.transaction.full && !r.ipv6.transaction.full);
    // Affinity sets, which update themselves, get no size (the kernel's fixed hash cannot time
    // elements out).
    let mut fresh = DualStackProxier::new(&node_config());
    let (svcs, slices) = world();
    let r = fresh.update(&svcs, &slices, t).unwrap();
    for op in &r.ipv4.transaction.ops {
        if let Op::AddSet(s) = op {
            assert_eq!(s.size.is_some(), s.timeout_secs.is_none(), "{s:?}");
        }
    }
}

#[test]
fn removing_an_endpoint_flushes_and_deletes_only_its_chain_later() {
    let ns = "ns1";
    // With affinity the Service has chains of its own (without, see the test below).
    let mut svc = cluster_ip_service(
        ns,
        "svc1",
        &[Plan::v4().cluster_ip(1), Plan::v6().cluster_ip(1)],
    );
    svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let two = |p: Plan| {
        slice(
            ns,
            "svc1",
            &format!("s-{}", p.fam()),
            p.family,
            8080,
            &[
                ready(p.remote_pod(1), OTHER_NODE),
                ready(p.remote_pod(2), OTHER_NODE),
            ],
        )
    };
    let one = |p: Plan| {
        slice(
            ns,
            "svc1",
            &format!("s-{}", p.fam()),
            p.family,
            8080,
            &[ready(p.remote_pod(1), OTHER_NODE)],
        )
    };
    let mut px = DualStackProxier::new(&node_config());
    let t0 = Instant::now();
    px.update(
        std::slice::from_ref(&svc),
        &[two(Plan::v4()), two(Plan::v6())],
        t0,
    )
    .unwrap();
    let r = px
        .update(
            std::slice::from_ref(&svc),
            &[one(Plan::v4()), two(Plan::v6())],
            t0,
        )
        .unwrap();
    assert!(r.ipv6.transaction.is_empty(), "the IPv6 table is untouched");
    let ops = &r.ipv4.transaction.ops;
    let flushed: Vec<&String> = ops
        .iter()
        .filter_map(|o| {
            if let Op::FlushChain(c) = o {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        flushed.len(),
        2,
        "service chain refilled, endpoint chain emptied: {ops:?}"
    );
    assert!(flushed.iter().any(|c| c.starts_with("service-")));
    assert!(
        flushed
            .iter()
            .any(|c| c.starts_with("endpoint-") && c.ends_with("__10.0.2.2/8080"))
    );
    assert!(
        !ops.iter().any(|o| matches!(
            o,
            Op::DeleteChain(_) | Op::DeleteElements { .. } | Op::AddElements { .. }
        )),
        "{ops:?}"
    );
    // Deleted only after the delay, by a later sync.
    assert!(
        px.sync(t0 + Duration::from_millis(500))
            .ipv4
            .transaction
            .is_empty()
    );
    let later = px.sync(t0 + Duration::from_secs(1));
    assert!(
        matches!(&later.ipv4.transaction.ops[..], [Op::DeleteChain(c)] if c.ends_with("__10.0.2.2/8080"))
    );
}

#[test]
fn removing_an_endpoint_of_a_plain_service_rewrites_only_its_backend_elements() {
    let ns = "ns1";
    let svc = cluster_ip_service(
        ns,
        "svc1",
        &[Plan::v4().cluster_ip(1), Plan::v6().cluster_ip(1)],
    );
    let eps = |p: Plan, n: u8| {
        slice(
            ns,
            "svc1",
            &format!("s-{}", p.fam()),
            p.family,
            8080,
            &(1..=n)
                .map(|i| ready(p.remote_pod(i), OTHER_NODE))
                .collect::<Vec<_>>(),
        )
    };
    let mut px = DualStackProxier::new(&node_config());
    let t0 = Instant::now();
    px.update(
        std::slice::from_ref(&svc),
        &[eps(Plan::v4(), 2), eps(Plan::v6(), 2)],
        t0,
    )
    .unwrap();
    let r = px
        .update(
            std::slice::from_ref(&svc),
            &[eps(Plan::v4(), 1), eps(Plan::v6(), 2)],
            t0,
        )
        .unwrap();
    assert!(r.ipv6.transaction.is_empty(), "the IPv6 table is untouched");
    let text = r.ipv4.transaction.to_text();
    let v4 = Plan::v4();
    let cip = v4.cluster_ip(1);
    // Bucket 0 keeps its endpoint; the address now goes to the pick chain of one endpoint.
    let want = format!(
        "delete element ip dualstack-proxy service-backends {{ {cip} . tcp . 80 . 1 }}\n\
         delete element ip dualstack-proxy service-ips {{ {cip} . tcp . 80 }}\n\
         add element ip dualstack-proxy service-ips {{ {cip} . tcp . 80 : goto pick-cluster-1 }}\n"
    );
    assert_eq!(text, want);
    // Nothing is left to clean up later: no chain of its own was touched.
    assert!(!px.family(IpFamily::IPv4).has_changes());
    assert!(
        px.sync(t0 + Duration::from_secs(1))
            .ipv4
            .transaction
            .is_empty()
    );
}

#[test]
fn a_port_with_more_endpoints_than_the_shared_maximum_gets_chains_of_its_own() {
    use dualstack_proxy::ruleset::MAX_SHARED_ENDPOINTS;
    let ns = "ns1";
    let svc = cluster_ip_service(ns, "big", &[Plan::v4().cluster_ip(1)]);
    let eps = |n: u32| {
        slice(
            ns,
            "big",
            "s-v4",
            Plan::v4().family,
            8080,
            &(0..n)
                .map(|i| {
                    ready(
                        format!("10.0.{}.{}", 100 + i / 200, 1 + i % 200)
                            .parse()
                            .unwrap(),
                        OTHER_NODE,
                    )
                })
                .collect::<Vec<_>>(),
        )
    };
    let mut px = DualStackProxier::new(&node_config());
    let t0 = Instant::now();
    let at_max = px
        .update(std::slice::from_ref(&svc), &[eps(MAX_SHARED_ENDPOINTS)], t0)
        .unwrap();
    assert!(at_max.ipv4.transaction.to_text().contains(&format!(
        "172.30.0.1 . tcp . 80 : goto pick-cluster-{MAX_SHARED_ENDPOINTS}"
    )));
    let over = px
        .update(
            std::slice::from_ref(&svc),
            &[eps(MAX_SHARED_ENDPOINTS + 1)],
            t0,
        )
        .unwrap();
    let text = over.ipv4.transaction.to_text();
    assert!(
        text.contains("add chain ip dualstack-proxy service-"),
        "{text}"
    );
    assert!(
        text.contains("172.30.0.1 . tcp . 80 : goto service-"),
        "{text}"
    );
    assert!(
        text.contains("delete element ip dualstack-proxy service-backends"),
        "the shared elements go: {text}"
    );
}

#[test]
fn removed_udp_endpoints_are_reported_for_conntrack_per_family() {
    let s = scenarios()
        .into_iter()
        .find(|s| s.name == "udp-sctp-hostnetwork")
        .unwrap();
    let mut px = DualStackProxier::new(&node_config());
    let t = Instant::now();
    px.update(&s.services, &s.slices, t).unwrap();
    let r = px.update(&s.services, &s.slices[1..], t).unwrap();
    assert!(r.ipv6.removed_udp_endpoints.is_empty());
    let rm = &r.ipv4.removed_udp_endpoints;
    assert_eq!(rm.len(), 1, "only the UDP port, not SCTP: {rm:?}");
    assert_eq!(rm[0].service_port.protocol, Protocol::Udp);
    assert_eq!(rm[0].endpoint, Plan::v4().other_node_ip());
    assert_eq!(rm[0].endpoint_port, 5353);
    assert_eq!(rm[0].service_ips, vec![Plan::v4().cluster_ip(11)]);
}

#[test]
fn health_checks_list_local_policy_services_with_local_endpoints_of_both_families() {
    let (svcs, slices) = world();
    let mut px = DualStackProxier::new(&node_config());
    px.update(&svcs, &slices, Instant::now()).unwrap();
    let hc = px.health_checks();
    assert_eq!(hc.len(), 1, "{hc:?}");
    assert_eq!(hc[0].service.to_string(), "ns4/svc4");
    assert_eq!(hc[0].node_port, 32004);
    assert_eq!(hc[0].local_endpoints, 2, "one local endpoint per family");
}

#[test]
fn fqdn_slices_are_refused_as_upstream_does() {
    let mut sl = slice("ns", "svc", "s", IpFamily::IPv4, 80, &[]);
    sl.address_type = "FQDN".into();
    let mut px = DualStackProxier::new(&node_config());
    assert_eq!(
        px.on_slice(&sl).unwrap_err().to_string(),
        "EndpointSlice address type not supported: FQDN"
    );
}

#[test]
fn headless_and_foreign_proxy_services_are_ignored() {
    let headless = service(
        "ns",
        "h",
        json!({"clusterIP": "None", "clusterIPs": ["None"]}),
        json!({}),
    );
    let mut foreign = cluster_ip_service("ns", "f", &[Plan::v4().cluster_ip(77)]);
    foreign.metadata.labels = Some(
        [(
            "service.kubernetes.io/service-proxy-name".to_string(),
            "other".to_string(),
        )]
        .into(),
    );
    let mut px = DualStackProxier::new(&node_config());
    px.update(&[headless, foreign], &[], Instant::now())
        .unwrap();
    assert!(px.family(IpFamily::IPv4).ruleset().services.is_empty());
}

/// One changed Service among `n`: the transaction names only that Service.
fn one_change_among(n: u16) -> (Duration, Duration, usize, usize) {
    let (mut svcs, slices) = many(n, 10);
    let mut px = DualStackProxier::new(&node_config());
    let t = Instant::now();
    let start = Instant::now();
    let full = px.update(&svcs, &slices, t).unwrap();
    let model = start.elapsed();
    let full_ops = full.ipv4.transaction.ops.len() + full.ipv6.transaction.ops.len();
    let text_start = Instant::now();
    let text_len = full.ipv4.transaction.to_text().len() + full.ipv6.transaction.to_text().len();
    let text = text_start.elapsed();
    let full_time = model + text;
    if n >= 10_000 {
        println!(
            "  model (inputs -> ruleset -> transaction): {model:?}; text: {text:?} ({text_len} bytes)"
        );
    }
    // Change one Service: add a port.
    let target = (n / 2) as usize;
    let name = svcs[target].metadata.name.clone().unwrap();
    svcs[target].spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    let start = Instant::now();
    px.on_service(&svcs[target]);
    let inc = px.sync(t);
    let _text = (
        inc.ipv4.transaction.to_text(),
        inc.ipv6.transaction.to_text(),
    );
    let inc_time = start.elapsed();
    // Its own chains, sets and elements by name; its backend and hairpin elements by address.
    let mut own: Vec<IpAddr> = cluster_ips(&svcs[target]);
    own.extend(slice_addresses(&slices, &name));
    for f in inc.families() {
        for op in &f.transaction.ops {
            let s = op_names(op);
            let keys_are_own = match op {
                Op::AddElements { elements, .. } => elements
                    .iter()
                    .all(|e| key_addr(&e.key).is_some_and(|a| own.contains(&a))),
                Op::DeleteElements { keys, .. } => keys
                    .iter()
                    .all(|k| key_addr(k).is_some_and(|a| own.contains(&a))),
                _ => false,
            };
            assert!(
                s.contains(&format!("bulk/{name}/")) || keys_are_own,
                "op not about {name}: {s}"
            );
        }
    }
    let inc_ops = inc.ipv4.transaction.ops.len() + inc.ipv6.transaction.ops.len();
    (full_time, inc_time, full_ops, inc_ops)
}

#[test]
fn one_changed_service_among_many_touches_only_its_own_chains_and_elements() {
    let (_, _, full_ops, inc_ops) = one_change_among(500);
    // Per family: 10 affinity sets, 11 chains flushed and refilled (42 rules).
    assert!(
        inc_ops > 0 && inc_ops <= 2 * (10 + 11 + 42),
        "{inc_ops} ops (full: {full_ops})"
    );
}

#[test]
#[ignore = "timing at scale; run with --ignored --nocapture (ideally --release)"]
fn scale_10000_dual_stack_services_times_10_endpoints() {
    let (full, inc, full_ops, inc_ops) = one_change_among(10_000);
    println!(
        "full render of 10,000 dual-stack Services x 10 endpoints (both families, model + JSON text): {full:?}, {full_ops} ops"
    );
    println!("one-Service change at 10,000 (event -> diff -> JSON): {inc:?}, {inc_ops} ops");
}
