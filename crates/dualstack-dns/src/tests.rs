//! Table tests of the record logic (IPv4 and IPv6 rows side by side) and wire tests of the
//! server on loopback (NXDOMAIN/NODATA with SOA, TC over UDP, TCP, REFUSED, NOTIMP).
//!
//! Test address plan: Service ClusterIPs 10.96.0.0/16 and fd00:10:96::/108, pods 10.244.0.0/16
//! and fd00:10:244::/56, cluster domain `cluster.local`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::records::{Outcome, Zone};
use crate::view::{ClusterView, dashed, undashed};

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn slice(ns: &str, svc: &str, family: &str, endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{svc}-{}", family.to_lowercase()),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// The fixture cluster.
fn view() -> ClusterView {
    let http = json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 8080}]);
    let services = vec![
        service(
            "default",
            "web",
            json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00:10:96::20"], "ports": http}),
        ),
        service(
            "default",
            "v4only",
            json!({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"],
                   "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
        service(
            "default",
            "v6only",
            json!({"clusterIP": "fd00:10:96::40", "clusterIPs": ["fd00:10:96::40"]}),
        ),
        service(
            "default",
            "head",
            json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": http}),
        ),
        service(
            "default",
            "empty",
            json!({"clusterIP": "None", "clusterIPs": ["None"]}),
        ),
        service(
            "default",
            "unready",
            json!({"clusterIP": "None", "clusterIPs": ["None"], "publishNotReadyAddresses": true}),
        ),
        service(
            "default",
            "ext",
            json!({"type": "ExternalName", "externalName": "www.example.com"}),
        ),
        service(
            "Other",
            "Web",
            json!({"clusterIP": "10.96.0.50", "clusterIPs": ["fd00:10:96::50", "10.96.0.50"]}),
        ),
    ];
    let ready = json!({"ready": true});
    let slices = vec![
        slice(
            "default",
            "head",
            "IPv4",
            json!([
                {"addresses": ["10.244.1.5"], "hostname": "pet-0", "conditions": ready},
                {"addresses": ["10.244.2.6"], "conditions": ready},
                {"addresses": ["10.244.3.7"], "conditions": {"ready": false}},
            ]),
        ),
        slice(
            "default",
            "head",
            "IPv6",
            json!([
                {"addresses": ["fd00:10:244:1::5"], "hostname": "pet-0", "conditions": ready},
                {"addresses": ["fd00:10:244:2::6"], "conditions": {}},
                {"addresses": ["fd00:10:244:3::7"], "conditions": {"ready": false}},
            ]),
        ),
        slice(
            "default",
            "empty",
            "IPv4",
            json!([{"addresses": ["10.244.3.8"], "conditions": {"ready": false}}]),
        ),
        slice(
            "default",
            "unready",
            "IPv6",
            json!([{"addresses": ["fd00:10:244:3::9"], "conditions": {"ready": false}}]),
        ),
    ];
    ClusterView::build(&services, &slices)
}

fn zone() -> Zone {
    Zone::new("cluster.local").unwrap()
}

/// `(rcode, answers as "name type rdata", SOA in authority)`.
fn ask(
    v: &ClusterView,
    name: &str,
    qtype: RecordType,
) -> Option<(ResponseCode, Vec<String>, bool)> {
    match zone().answer(v, &Name::from_ascii(name).unwrap(), qtype) {
        Outcome::NotOurs => None,
        Outcome::Answer(a) => {
            let mut answers: Vec<String> = a
                .answers
                .iter()
                .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
                .collect();
            answers.sort();
            Some((
                a.code,
                answers,
                a.authority
                    .iter()
                    .any(|r| r.record_type() == RecordType::SOA),
            ))
        }
    }
}

const NOERROR: ResponseCode = ResponseCode::NoError;
const NXDOMAIN: ResponseCode = ResponseCode::NXDomain;

#[test]
fn service_names_answer_each_family_from_cluster_ips_and_nodata_for_a_missing_family() {
    let v = view();
    let web = "web.default.svc.cluster.local.";
    let cases: &[(&str, RecordType, ResponseCode, &[&str])] = &[
        (
            web,
            RecordType::A,
            NOERROR,
            &["web.default.svc.cluster.local. A 10.96.0.20"],
        ),
        (
            web,
            RecordType::AAAA,
            NOERROR,
            &["web.default.svc.cluster.local. AAAA fd00:10:96::20"],
        ),
        (
            "v4only.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
            &["v4only.default.svc.cluster.local. A 10.96.0.30"],
        ),
        (
            "v4only.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &[],
        ),
        (
            "v6only.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
            &[],
        ),
        (
            "v6only.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["v6only.default.svc.cluster.local. AAAA fd00:10:96::40"],
        ),
        // Case-insensitive, answered with the question's spelling.
        (
            "WEB.Other.SVC.cluster.local.",
            RecordType::A,
            NOERROR,
            &["WEB.Other.SVC.cluster.local. A 10.96.0.50"],
        ),
        (
            "WEB.Other.SVC.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["WEB.Other.SVC.cluster.local. AAAA fd00:10:96::50"],
        ),
        (web, RecordType::MX, NOERROR, &[]),
        (
            "nope.default.svc.cluster.local.",
            RecordType::A,
            NXDOMAIN,
            &[],
        ),
        (
            "nope.default.svc.cluster.local.",
            RecordType::AAAA,
            NXDOMAIN,
            &[],
        ),
        ("web.nons.svc.cluster.local.", RecordType::A, NXDOMAIN, &[]),
        (
            "ext.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
            &["ext.default.svc.cluster.local. CNAME www.example.com."],
        ),
        (
            "ext.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["ext.default.svc.cluster.local. CNAME www.example.com."],
        ),
    ];
    for (name, qtype, code, want) in cases {
        let (got_code, got, soa) = ask(&v, name, *qtype).expect("ours");
        assert_eq!(
            (got_code, got.clone()),
            (
                *code,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            ),
            "{name} {qtype}"
        );
        assert_eq!(
            soa,
            want.is_empty(),
            "SOA in authority exactly when the answer is empty: {name} {qtype}"
        );
    }
}

#[test]
fn headless_services_answer_ready_endpoints_of_each_family_and_nxdomain_without_any() {
    let v = view();
    let head = "head.default.svc.cluster.local.";
    let cases: &[(&str, RecordType, ResponseCode, &[&str])] = &[
        (
            head,
            RecordType::A,
            NOERROR,
            &[
                "head.default.svc.cluster.local. A 10.244.1.5",
                "head.default.svc.cluster.local. A 10.244.2.6",
            ],
        ),
        (
            head,
            RecordType::AAAA,
            NOERROR,
            &[
                "head.default.svc.cluster.local. AAAA fd00:10:244:1::5",
                "head.default.svc.cluster.local. AAAA fd00:10:244:2::6",
            ],
        ),
        // A hostname names the endpoint's addresses of both families.
        (
            "pet-0.head.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
            &["pet-0.head.default.svc.cluster.local. A 10.244.1.5"],
        ),
        (
            "pet-0.head.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["pet-0.head.default.svc.cluster.local. AAAA fd00:10:244:1::5"],
        ),
        // Without a hostname the dashed address is the system-assigned identifier.
        (
            "10-244-2-6.head.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
            &["10-244-2-6.head.default.svc.cluster.local. A 10.244.2.6"],
        ),
        (
            "10-244-2-6.head.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &[],
        ),
        (
            "fd00-10-244-2--6.head.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["fd00-10-244-2--6.head.default.svc.cluster.local. AAAA fd00:10:244:2::6"],
        ),
        // Not ready: not there.
        (
            "10-244-3-7.head.default.svc.cluster.local.",
            RecordType::A,
            NXDOMAIN,
            &[],
        ),
        (
            "empty.default.svc.cluster.local.",
            RecordType::A,
            NXDOMAIN,
            &[],
        ),
        (
            "empty.default.svc.cluster.local.",
            RecordType::AAAA,
            NXDOMAIN,
            &[],
        ),
        // publishNotReadyAddresses counts not-ready endpoints; an IPv6-only one has no A.
        (
            "unready.default.svc.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["unready.default.svc.cluster.local. AAAA fd00:10:244:3::9"],
        ),
        (
            "unready.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
            &[],
        ),
        // Endpoint names only exist for headless Services.
        (
            "pet-0.web.default.svc.cluster.local.",
            RecordType::A,
            NXDOMAIN,
            &[],
        ),
    ];
    for (name, qtype, code, want) in cases {
        let (got_code, got, soa) = ask(&v, name, *qtype).expect("ours");
        assert_eq!(
            (got_code, got),
            (
                *code,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            ),
            "{name} {qtype}"
        );
        assert_eq!(soa, want.is_empty(), "{name} {qtype}");
    }
}

#[test]
fn srv_records_exist_for_named_ports_with_the_targets_addresses_as_additionals() {
    let v = view();
    let (code, got, _) = ask(
        &v,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(code, NOERROR);
    assert_eq!(
        got,
        vec![
            "_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local."
        ]
    );
    let (code, got, _) = ask(
        &v,
        "_http._tcp.head.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    assert_eq!(code, NOERROR);
    // One SRV per (ready endpoint, named port): pet-0, 10-244-2-6 and fd00-10-244-2--6.
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got.iter()
            .any(|g| g.ends_with("80 pet-0.head.default.svc.cluster.local.")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.ends_with("80 10-244-2-6.head.default.svc.cluster.local.")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|g| g.ends_with("80 fd00-10-244-2--6.head.default.svc.cluster.local.")),
        "{got:?}"
    );

    let z = zone();
    let Outcome::Answer(a) = z.answer(
        &v,
        &Name::from_ascii("_http._tcp.web.default.svc.cluster.local.").unwrap(),
        RecordType::SRV,
    ) else {
        panic!("ours")
    };
    let extra: Vec<String> = a
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data))
        .collect();
    assert_eq!(extra, vec!["A 10.96.0.20", "AAAA fd00:10:96::20"]);

    let cases: &[(&str, RecordType, ResponseCode)] = &[
        (
            "_dns._udp.v4only.default.svc.cluster.local.",
            RecordType::SRV,
            NOERROR,
        ),
        (
            "_http._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
            NXDOMAIN,
        ),
        (
            "_nope._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            NXDOMAIN,
        ),
        // The SRV name exists: other types are NODATA; `_tcp.<svc>` is an empty non-terminal.
        (
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::A,
            NOERROR,
        ),
        (
            "_tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
            NOERROR,
        ),
        (
            "_udp.web.default.svc.cluster.local.",
            RecordType::SRV,
            NXDOMAIN,
        ),
    ];
    for (name, qtype, want) in cases {
        assert_eq!(ask(&v, name, *qtype).unwrap().0, *want, "{name} {qtype}");
    }
}

#[test]
fn ptr_records_name_cluster_ips_and_headless_endpoints_of_both_families() {
    let v = view();
    let cases: &[(&str, Option<&str>)] = &[
        (
            "20.0.96.10.in-addr.arpa.",
            Some("web.default.svc.cluster.local."),
        ),
        (
            "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.",
            Some("web.default.svc.cluster.local."),
        ),
        (
            "5.1.244.10.in-addr.arpa.",
            Some("pet-0.head.default.svc.cluster.local."),
        ),
        (
            "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.4.4.2.0.0.1.0.0.0.0.d.f.ip6.arpa.",
            Some("pet-0.head.default.svc.cluster.local."),
        ),
        (
            "6.2.244.10.in-addr.arpa.",
            Some("10-244-2-6.head.default.svc.cluster.local."),
        ),
        // Not ready, or not ours at all: forwarded (CoreDNS's fallthrough for reverse zones).
        ("7.3.244.10.in-addr.arpa.", None),
        ("1.2.0.192.in-addr.arpa.", None),
        ("96.10.in-addr.arpa.", None),
    ];
    for (name, want) in cases {
        let got = ask(&v, name, RecordType::PTR);
        match want {
            Some(target) => assert_eq!(
                got,
                Some((NOERROR, vec![format!("{name} PTR {target}")], false)),
                "{name}"
            ),
            None => assert_eq!(got, None, "{name}"),
        }
    }
}

#[test]
fn pod_records_answer_the_dashed_address_of_either_family() {
    let v = view();
    let cases: &[(&str, RecordType, ResponseCode, &[&str])] = &[
        (
            "10-244-1-5.default.pod.cluster.local.",
            RecordType::A,
            NOERROR,
            &["10-244-1-5.default.pod.cluster.local. A 10.244.1.5"],
        ),
        (
            "10-244-1-5.default.pod.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &[],
        ),
        (
            "fd00-10-244-1--5.default.pod.cluster.local.",
            RecordType::AAAA,
            NOERROR,
            &["fd00-10-244-1--5.default.pod.cluster.local. AAAA fd00:10:244:1::5"],
        ),
        (
            "fd00-10-244-1--5.default.pod.cluster.local.",
            RecordType::A,
            NOERROR,
            &[],
        ),
        (
            "10-244-1-500.default.pod.cluster.local.",
            RecordType::A,
            NXDOMAIN,
            &[],
        ),
        (
            "web.default.pod.cluster.local.",
            RecordType::A,
            NXDOMAIN,
            &[],
        ),
    ];
    for (name, qtype, code, want) in cases {
        let (got_code, got, _) = ask(&v, name, *qtype).unwrap();
        assert_eq!(
            (got_code, got),
            (
                *code,
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            ),
            "{name} {qtype}"
        );
    }
    for ip in ["10.244.1.5", "fd00:10:244:1::5", "::1", "fd00::"] {
        let ip = ip.parse().unwrap();
        assert_eq!(undashed(&dashed(ip)), Some(ip), "{ip}");
    }
}

#[test]
fn zone_structure_names_are_nodata_and_the_schema_version_is_a_txt_record() {
    let v = view();
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "default.svc.cluster.local.",
        "pod.cluster.local.",
        "anyns.pod.cluster.local.",
    ] {
        assert_eq!(
            ask(&v, name, RecordType::A),
            Some((NOERROR, vec![], true)),
            "{name}"
        );
    }
    assert_eq!(
        ask(&v, "nons.svc.cluster.local.", RecordType::A).unwrap().0,
        NXDOMAIN
    );
    assert_eq!(
        ask(&v, "a.b.c.d.e.f.svc.cluster.local.", RecordType::A)
            .unwrap()
            .0,
        NXDOMAIN
    );
    assert_eq!(
        ask(&v, "dns-version.cluster.local.", RecordType::TXT),
        Some((
            NOERROR,
            vec!["dns-version.cluster.local. TXT 1.1.0".to_string()],
            false
        ))
    );
    let soa = ask(&v, "cluster.local.", RecordType::SOA).unwrap();
    assert_eq!(soa.1.len(), 1);
    assert!(
        soa.1[0].starts_with("cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{soa:?}"
    );
    // Outside the cluster domain: not ours.
    assert_eq!(ask(&v, "example.com.", RecordType::A), None);
    assert_eq!(ask(&v, "cluster.local.example.com.", RecordType::A), None);
}

// ---- the server on loopback ----

async fn start(view: ClusterView, upstreams: Vec<SocketAddr>) -> SocketAddr {
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(view));
    // Keep the sender alive for the server's lifetime.
    std::mem::forget(_tx);
    let sockets = crate::server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let addr = sockets[0].0.local_addr().unwrap();
    let handler = crate::server::Handler::new(zone(), rx, upstreams);
    tokio::spawn(crate::server::serve(handler, sockets));
    addr
}

async fn ask_wire(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    crate::client::query(server, name, qtype, tcp, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_server_answers_over_udp_and_tcp_with_soa_on_nodata_and_nxdomain() {
    let server = start(view(), vec![]).await;
    for tcp in [false, true] {
        let m = ask_wire(
            server,
            "web.default.svc.cluster.local",
            RecordType::AAAA,
            tcp,
        )
        .await;
        assert_eq!(m.metadata.response_code, NOERROR);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1, "{m:?}");
        assert_eq!(m.answers[0].data.to_string(), "fd00:10:96::20");

        let m = ask_wire(
            server,
            "v4only.default.svc.cluster.local",
            RecordType::AAAA,
            tcp,
        )
        .await;
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (NOERROR, 0),
            "{m:?}"
        );
        assert_eq!(m.authorities.len(), 1, "NODATA carries the SOA: {m:?}");
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

        let m = ask_wire(server, "nope.default.svc.cluster.local", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, NXDOMAIN);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    }
    // Without an upstream, names outside the cluster are refused at once.
    let m = ask_wire(server, "example.com", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
}

#[tokio::test]
async fn a_large_answer_is_truncated_over_udp_and_complete_over_tcp() {
    let endpoints: Vec<serde_json::Value> = (1..=200)
        .map(|i| json!({"addresses": [format!("10.244.{}.{}", i / 250, i % 250 + 1)], "conditions": {"ready": true}}))
        .collect();
    let v = ClusterView::build(
        &[service(
            "default",
            "big",
            json!({"clusterIP": "None", "clusterIPs": ["None"]}),
        )],
        &[slice("default", "big", "IPv4", json!(endpoints))],
    );
    let server = start(v, vec![]).await;
    // No EDNS: 512 bytes.
    let q = crate::client::query_message(7, "big.default.svc.cluster.local", RecordType::A, None)
        .unwrap();
    let udp = crate::client::exchange_udp(server, &q, Duration::from_secs(5))
        .await
        .unwrap();
    let m = Message::from_vec(&udp).unwrap();
    assert!(udp.len() <= 512, "{}", udp.len());
    assert!(m.metadata.truncation, "TC set");
    assert!(m.answers.len() < 200);
    let m = ask_wire(server, "big.default.svc.cluster.local", RecordType::A, true).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 200);
}

#[tokio::test]
async fn names_outside_the_cluster_are_forwarded_and_servfail_when_the_upstream_is_silent() {
    // The upstream: another of our servers, authoritative for `upstream.test`.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();

    let upstream_zone = Zone::new("upstream.test").unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(view()));
    std::mem::forget(tx);
    let sockets = crate::server::bind(&["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    let up2 = sockets[0].0.local_addr().unwrap();
    tokio::spawn(crate::server::serve(
        crate::server::Handler::new(upstream_zone, rx, vec![]),
        sockets,
    ));

    let forwarding = start(view(), vec![up2]).await;
    let m = ask_wire(
        forwarding,
        "web.default.svc.upstream.test",
        RecordType::A,
        false,
    )
    .await;
    assert_eq!(m.metadata.response_code, NOERROR);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].data.to_string(), "10.96.0.20");
    assert!(m.metadata.recursion_available);

    let to_silent = start(view(), vec![silent_addr]).await;
    let m = ask_wire(to_silent, "example.com", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}
