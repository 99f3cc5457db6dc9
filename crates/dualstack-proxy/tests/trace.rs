//! Packet traces over the rules we emit, table-driven, the same rows for both families: which
//! endpoint(s) a new connection may be DNATed to, or whether it is rejected, dropped or left
//! alone, and whether it is masqueraded. The world is every golden scenario at once
//! (`support::scenarios`), on `node-a`.

mod support;

use std::net::IpAddr;
use std::time::Instant;

use dualstack_ipam::IpFamily;
use dualstack_proxy::trace::{Fate, Origin, Outcome, Packet, Tracer};
use dualstack_proxy::{DualStackProxier, Protocol, Ruleset};
use support::*;

struct Row {
    what: &'static str,
    src: IpAddr,
    proto: Protocol,
    dst: IpAddr,
    port: u16,
    origin: Origin,
    want: Vec<Outcome>,
}

fn dnat(addr: IpAddr, port: u16, masquerade: bool) -> Outcome {
    Outcome {
        fate: Fate::Dnat(addr, port),
        masquerade,
    }
}
fn reject() -> Outcome {
    Outcome {
        fate: Fate::Reject,
        masquerade: false,
    }
}
fn drop_() -> Outcome {
    Outcome {
        fate: Fate::Drop,
        masquerade: false,
    }
}
fn untouched() -> Outcome {
    Outcome {
        fate: Fate::Accept,
        masquerade: false,
    }
}

fn row(
    what: &'static str,
    src: IpAddr,
    proto: Protocol,
    dst: IpAddr,
    port: u16,
    origin: Origin,
    mut want: Vec<Outcome>,
) -> Row {
    want.sort();
    Row {
        what,
        src,
        proto,
        dst,
        port,
        origin,
        want,
    }
}

/// The rows of one family.
fn rows(p: Plan) -> Vec<Row> {
    use Origin::*;
    use Protocol::*;
    let client = p.local_pod(50);
    let blocked = ip(if p.family == IpFamily::IPv4 {
        "192.0.2.99"
    } else {
        "2001:db8:3::99"
    });
    let mut rows = vec![
        // clusterip-dual (svc1; IPv6 is its primary family, so IPv4 is the secondary).
        row(
            "pod to ClusterIP: DNAT to any endpoint, no masquerade",
            client,
            Tcp,
            p.cluster_ip(1),
            80,
            Pod,
            vec![
                dnat(p.local_pod(1), 8080, false),
                dnat(p.remote_pod(1), 8080, false),
            ],
        ),
        row(
            "hairpin: an endpoint reaching its own Service is masqueraded when it lands on itself",
            p.local_pod(1),
            Tcp,
            p.cluster_ip(1),
            80,
            Pod,
            vec![
                dnat(p.local_pod(1), 8080, true),
                dnat(p.remote_pod(1), 8080, false),
            ],
        ),
        row(
            "node to ClusterIP: masqueraded (not from the cluster CIDR)",
            p.node_ip(),
            Tcp,
            p.cluster_ip(1),
            80,
            Node,
            vec![
                dnat(p.local_pod(1), 8080, true),
                dnat(p.remote_pod(1), 8080, true),
            ],
        ),
        row(
            "outside to ClusterIP routed to the node: masqueraded",
            p.outside(),
            Tcp,
            p.cluster_ip(1),
            80,
            Outside,
            vec![
                dnat(p.local_pod(1), 8080, true),
                dnat(p.remote_pod(1), 8080, true),
            ],
        ),
        row(
            "wrong port of a ClusterIP: rejected",
            client,
            Tcp,
            p.cluster_ip(1),
            81,
            Pod,
            vec![reject()],
        ),
        row(
            "unallocated address of the Service CIDR: dropped",
            client,
            Tcp,
            p.unallocated_cluster_ip(),
            80,
            Pod,
            vec![drop_()],
        ),
        row(
            "traffic to no Service: untouched",
            client,
            Tcp,
            p.outside(),
            443,
            Pod,
            vec![untouched()],
        ),
        // nodeport (svc2).
        row(
            "outside to NodePort, Cluster policy: masqueraded",
            p.outside(),
            Tcp,
            p.node_ip(),
            30002,
            Outside,
            vec![dnat(p.remote_pod(2), 8080, true)],
        ),
        row(
            "node to its own NodePort: masqueraded",
            p.node_ip(),
            Tcp,
            p.node_ip(),
            30002,
            Node,
            vec![dnat(p.remote_pod(2), 8080, true)],
        ),
        row(
            "NodePort on an address outside --nodeport-addresses: untouched",
            p.outside(),
            Tcp,
            p.other_node_ip(),
            30002,
            Outside,
            vec![untouched()],
        ),
        // lb-dual-local (svc4): externalTrafficPolicy Local.
        row(
            "outside to LB IP, Local policy: the local endpoint only, source kept",
            p.outside(),
            Tcp,
            p.lb_ip(4),
            80,
            Outside,
            vec![dnat(p.local_pod(4), 8080, false)],
        ),
        row(
            "outside to NodePort, Local policy: the local endpoint only, source kept",
            p.outside(),
            Tcp,
            p.node_ip(),
            30004,
            Outside,
            vec![dnat(p.local_pod(4), 8080, false)],
        ),
        row(
            "pod to LB IP, Local policy: short-circuited to every endpoint",
            client,
            Tcp,
            p.lb_ip(4),
            80,
            Pod,
            vec![
                dnat(p.local_pod(4), 8080, false),
                dnat(p.remote_pod(4), 8080, false),
            ],
        ),
        row(
            "node to LB IP, Local policy: short-circuited and masqueraded",
            p.node_ip(),
            Tcp,
            p.lb_ip(4),
            80,
            Node,
            vec![
                dnat(p.local_pod(4), 8080, true),
                dnat(p.remote_pod(4), 8080, true),
            ],
        ),
        // externalips (svc5).
        row(
            "outside to externalIP: masqueraded",
            p.outside(),
            Tcp,
            p.lb_ip(5),
            80,
            Outside,
            vec![dnat(p.remote_pod(5), 8080, true)],
        ),
        // affinity (svc6), no remembered client yet: either endpoint.
        row(
            "affinity Service, new client: either endpoint",
            client,
            Tcp,
            p.cluster_ip(6),
            80,
            Pod,
            vec![
                dnat(p.remote_pod(6), 8080, false),
                dnat(p.remote_pod(7), 8080, false),
            ],
        ),
        // internal-local (svc7 remote only, svc8 local + remote).
        row(
            "internalTrafficPolicy Local without a local endpoint: dropped",
            client,
            Tcp,
            p.cluster_ip(7),
            80,
            Pod,
            vec![drop_()],
        ),
        row(
            "internalTrafficPolicy Local: the local endpoint only",
            client,
            Tcp,
            p.cluster_ip(8),
            80,
            Pod,
            vec![dnat(p.local_pod(8), 8080, false)],
        ),
        // terminating-fallback (svc9).
        row(
            "only terminating endpoints: the serving one",
            client,
            Tcp,
            p.cluster_ip(9),
            80,
            Pod,
            vec![dnat(p.remote_pod(10), 8080, false)],
        ),
        // no-endpoints (svc10).
        row(
            "no endpoints, ClusterIP from a pod: rejected",
            client,
            Tcp,
            p.cluster_ip(10),
            80,
            Pod,
            vec![reject()],
        ),
        row(
            "no endpoints, ClusterIP from the node: rejected",
            p.node_ip(),
            Tcp,
            p.cluster_ip(10),
            80,
            Node,
            vec![reject()],
        ),
        row(
            "no endpoints, NodePort from outside: rejected",
            p.outside(),
            Tcp,
            p.node_ip(),
            30010,
            Outside,
            vec![reject()],
        ),
        row(
            "no endpoints, externalIP from outside: rejected",
            p.outside(),
            Tcp,
            p.lb_ip(10),
            80,
            Outside,
            vec![reject()],
        ),
        row(
            "no endpoints, UDP: rejected too",
            client,
            Udp,
            p.cluster_ip(10),
            80,
            Pod,
            vec![reject()],
        ),
        // udp-sctp-hostnetwork (svc11).
        row(
            "UDP to a hostNetwork endpoint",
            client,
            Udp,
            p.cluster_ip(11),
            53,
            Pod,
            vec![dnat(p.other_node_ip(), 5353, false)],
        ),
        row(
            "SCTP to a hostNetwork endpoint",
            client,
            Sctp,
            p.cluster_ip(11),
            9999,
            Pod,
            vec![dnat(p.other_node_ip(), 9999, false)],
        ),
        row(
            "TCP to a UDP-only port: rejected as a wrong port",
            client,
            Tcp,
            p.cluster_ip(11),
            53,
            Pod,
            vec![reject()],
        ),
        row(
            "node to a hostNetwork endpoint: masqueraded",
            p.node_ip(),
            Udp,
            p.cluster_ip(11),
            53,
            Node,
            vec![dnat(p.other_node_ip(), 5353, true)],
        ),
        // source-ranges (svc12).
        row(
            "LB IP from an allowed source",
            p.outside(),
            Tcp,
            p.lb_ip(12),
            80,
            Outside,
            vec![dnat(p.remote_pod(12), 8080, true)],
        ),
        row(
            "LB IP from a source outside loadBalancerSourceRanges: dropped",
            blocked,
            Tcp,
            p.lb_ip(12),
            80,
            Outside,
            vec![drop_()],
        ),
        row(
            "LB IP from a pod outside loadBalancerSourceRanges: dropped",
            client,
            Tcp,
            p.lb_ip(12),
            80,
            Pod,
            vec![drop_()],
        ),
        row(
            "NodePort bypasses loadBalancerSourceRanges",
            blocked,
            Tcp,
            p.node_ip(),
            30012,
            Outside,
            vec![dnat(p.remote_pod(12), 8080, true)],
        ),
    ];
    match p.family {
        IpFamily::IPv6 => rows.extend([
            // lb-ipv6-only (svc3): the seed's example.
            row(
                "outside to the IPv6-only LoadBalancer",
                p.outside(),
                Tcp,
                p.lb_ip(3),
                80,
                Outside,
                vec![dnat(p.remote_pod(3), 8080, true)],
            ),
            row(
                "outside to the IPv6-only Service's NodePort",
                p.outside(),
                Tcp,
                p.node_ip(),
                30003,
                Outside,
                vec![dnat(p.remote_pod(3), 8080, true)],
            ),
            row(
                "a SingleStack IPv4 Service has no IPv6 NodePort or ClusterIP",
                client,
                Tcp,
                p.cluster_ip(13),
                80,
                Pod,
                vec![drop_()],
            ),
        ]),
        IpFamily::IPv4 => rows.extend([
            row(
                "single-stack IPv4 ClusterIP",
                client,
                Tcp,
                p.cluster_ip(13),
                80,
                Pod,
                vec![dnat(p.remote_pod(13), 8080, false)],
            ),
            row(
                "the IPv6-only Service's NodePort is not open on IPv4",
                p.outside(),
                Tcp,
                p.node_ip(),
                30003,
                Outside,
                vec![untouched()],
            ),
        ]),
    }
    rows
}

fn world_rulesets() -> (Ruleset, Ruleset) {
    let (svcs, slices) = world();
    let mut p = DualStackProxier::new(&node_config());
    p.update(&svcs, &slices, Instant::now()).unwrap();
    (
        p.family(IpFamily::IPv4).ruleset(),
        p.family(IpFamily::IPv6).ruleset(),
    )
}

#[test]
fn every_path_meets_the_expected_verdict_in_both_families() {
    let (v4, v6) = world_rulesets();
    let local = local_addresses();
    let mut failures = Vec::new();
    for (p, rs) in [(Plan::v4(), &v4), (Plan::v6(), &v6)] {
        let tracer = Tracer::new(rs, &local);
        for r in rows(p) {
            let got = tracer.trace(&Packet {
                src: r.src,
                proto: r.proto,
                dst: r.dst,
                dport: r.port,
                origin: r.origin,
            });
            if got != r.want {
                failures.push(format!(
                    "{} {}: got {got:?}, want {:?}",
                    p.fam(),
                    r.what,
                    r.want
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_remembered_client_sticks_to_its_endpoint_in_both_families() {
    let (v4, v6) = world_rulesets();
    let local = local_addresses();
    for (p, rs) in [(Plan::v4(), &v4), (Plan::v6(), &v6)] {
        let client = p.local_pod(50);
        let target = p.remote_pod(7).to_string().replace(':', ".");
        let set = rs
            .services
            .values()
            .flat_map(|f| f.sets.keys())
            .find(|s| s.contains(&format!("__{target}/")))
            .unwrap();
        let mut tracer = Tracer::new(rs, &local);
        tracer.remember(set, client);
        let got = tracer.trace(&Packet {
            src: client,
            proto: Protocol::Tcp,
            dst: p.cluster_ip(6),
            dport: 80,
            origin: Origin::Pod,
        });
        assert_eq!(got, vec![dnat(p.remote_pod(7), 8080, false)], "{}", p.fam());
    }
}

#[test]
fn all_local_nodeport_addresses_open_nodeports_on_every_local_address_but_loopback() {
    let (svcs, slices) = world();
    let mut px = DualStackProxier::new(&node_config_all_nodeports());
    px.update(&svcs, &slices, Instant::now()).unwrap();
    for p in plans() {
        let rs = px.family(p.family).ruleset();
        let lo = ip(if p.family == IpFamily::IPv4 {
            "127.0.0.1"
        } else {
            "::1"
        });
        let tracer = Tracer::new(&rs, &local_addresses());
        let t = |dst| {
            tracer.trace(&Packet {
                src: p.node_ip(),
                proto: Protocol::Tcp,
                dst,
                dport: 30002,
                origin: Origin::Node,
            })
        };
        assert_eq!(
            t(p.node_ip()),
            vec![dnat(p.remote_pod(2), 8080, true)],
            "{}",
            p.fam()
        );
        assert_eq!(t(lo), vec![untouched()], "{}", p.fam());
    }
}
