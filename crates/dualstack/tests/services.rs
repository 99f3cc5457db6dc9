//! Dual-stack Services against the real server (issue 4): the seed's three manifests with real
//! kubectl on an IPv4-primary and an IPv6-primary cluster; 64 concurrent dual-stack creates from
//! 8 clients; a full range; the repair loop; restarting single-stack → dual-stack → single-stack.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use common::{Kubectl, TestServer, eventually};
use serde_json::{Value, json};

fn seed(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed")
        .join(name);
    p.to_str().unwrap().to_string()
}

fn in_range(ip: &str, cidr: &str) -> bool {
    let ip: IpAddr = ip.parse().unwrap();
    let (net, len) = cidr.split_once('/').unwrap();
    let net: IpAddr = net.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn get_json(s: &TestServer, path: &str) -> Value {
    let (code, body) = s.request("GET", path, None, None).unwrap();
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn create(s: &TestServer, ns: &str, body: &Value) -> (u16, Value) {
    let (code, text) = s
        .request(
            "POST",
            &format!("/api/v1/namespaces/{ns}/services"),
            Some(&body.to_string()),
            Some("application/json"),
        )
        .unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn svc(name: &str, policy: Option<&str>, families: Option<&[&str]>) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    if let Some(p) = policy {
        v["spec"]["ipFamilyPolicy"] = p.into();
    }
    if let Some(f) = families {
        v["spec"]["ipFamilies"] = json!(f);
    }
    v
}

fn ip_addresses(s: &TestServer) -> BTreeSet<String> {
    let list = get_json(s, "/apis/networking.k8s.io/v1/ipaddresses");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// (manifest, expected family) on one cluster.
fn check_seed_manifests(range: &str, rows: &[(&str, &str)], v4: &str, v6: &str) {
    let s = TestServer::start(&[&format!("--service-cluster-ip-range={range}")]);
    for version in ["1.27", "1.33"] {
        let k = Kubectl::require(version);
        for (i, (file, family)) in rows.iter().enumerate() {
            let ns = format!("seed-{}-{i}", version.replace('.', ""));
            s.kubectl_ok(&k, &["create", "namespace", &ns]);
            // Unchanged manifests, including the alpha field `ipFamily` under strict validation.
            s.kubectl_ok(&k, &["apply", "-n", &ns, "-f", &seed(file)]);
            let out = s.kubectl_ok(
                &k,
                &["get", "svc", "my-service", "-n", &ns, "-o", "jsonpath={.spec.clusterIP} {.spec.ipFamilies[0]} {.spec.ipFamilyPolicy} {.spec.clusterIPs[*]}"],
            );
            let parts: Vec<&str> = out.split_whitespace().collect();
            assert_eq!(parts.len(), 4, "{file} on {range}: {out}");
            let (ip, fam, policy) = (parts[0], parts[1], parts[2]);
            assert_eq!(fam, *family, "{file} on {range} with kubectl {version}");
            assert_eq!(policy, "SingleStack");
            assert_eq!(parts[3], ip, "clusterIPs == [clusterIP]");
            let cidr = if *family == "IPv4" { v4 } else { v6 };
            assert!(in_range(ip, cidr), "{ip} not in {cidr}");
            // Re-applying the unchanged manifest works (the alpha field names the same family).
            s.kubectl_ok(&k, &["apply", "-n", &ns, "-f", &seed(file)]);
        }
    }
}

#[test]
fn seed_manifests_get_cluster_ips_of_the_right_family_with_ipv4_primary() {
    check_seed_manifests(
        "10.0.0.0/16,fd00::/108",
        &[
            ("dual-stack-default-svc.yaml", "IPv4"),
            ("dual-stack-ipv4-svc.yaml", "IPv4"),
            ("dual-stack-ipv6-svc.yaml", "IPv6"),
        ],
        "10.0.0.0/16",
        "fd00::/108",
    );
}

#[test]
fn seed_manifests_get_cluster_ips_of_the_right_family_with_ipv6_primary() {
    check_seed_manifests(
        "fd00::/108,10.0.0.0/16",
        &[
            ("dual-stack-default-svc.yaml", "IPv6"),
            ("dual-stack-ipv4-svc.yaml", "IPv4"),
            ("dual-stack-ipv6-svc.yaml", "IPv6"),
        ],
        "10.0.0.0/16",
        "fd00::/108",
    );
}

#[test]
fn seed_ip_family_is_checked_against_the_cluster_and_immutable() {
    let s = TestServer::start(&["--service-cluster-ip-range=10.0.0.0/16"]);
    let k = Kubectl::require("1.33");
    let out = s.kubectl(&k, &["apply", "-f", &seed("dual-stack-ipv6-svc.yaml")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            r#"spec.ipFamily: Invalid value: "IPv6": only the following families are allowed: IPv4"#
        ),
        "{err}"
    );
    s.kubectl_ok(&k, &["apply", "-f", &seed("dual-stack-ipv4-svc.yaml")]);
    let out = s.kubectl(&k, &["apply", "-f", &seed("dual-stack-ipv6-svc.yaml")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"spec.ipFamily: Invalid value: "IPv6": field is immutable"#),
        "{err}"
    );
}

#[test]
fn sixty_four_concurrent_dual_stack_creates_from_eight_clients_get_distinct_addresses() {
    let s = TestServer::start(&["--service-cluster-ip-range=10.0.0.0/24,fd00:10::/120"]);
    let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let s = &s;
                scope.spawn(move || {
                    (0..8)
                        .map(|i| {
                            create(
                                s,
                                "default",
                                &svc(&format!("c{c}-s{i}"), Some("RequireDualStack"), None),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut seen = BTreeSet::new();
    for (code, v) in &results {
        assert_eq!(*code, 201, "{v}");
        let ips = v["spec"]["clusterIPs"].as_array().unwrap();
        assert_eq!(ips.len(), 2);
        assert!(in_range(ips[0].as_str().unwrap(), "10.0.0.0/24"));
        assert!(in_range(ips[1].as_str().unwrap(), "fd00:10::/120"));
        for ip in ips {
            assert!(
                seen.insert(ip.as_str().unwrap().to_string()),
                "duplicate {ip}"
            );
        }
    }
    assert_eq!(seen.len(), 128);
    // Every address is recorded once, owned by its Service (plus the kubernetes Service).
    let recorded = ip_addresses(&s);
    assert_eq!(recorded.len(), 129);
    assert!(seen.is_subset(&recorded));
}

#[test]
fn a_full_range_gives_range_is_full_and_nothing_is_half_created() {
    // /29 IPv4: 6 usable, .1 is the kubernetes Service, so 5 dual-stack Services fit.
    let s = TestServer::start(&["--service-cluster-ip-range=10.0.0.0/29,fd00:10::/125"]);
    for i in 0..5 {
        let (code, v) = create(
            &s,
            "default",
            &svc(&format!("s{i}"), Some("RequireDualStack"), None),
        );
        assert_eq!(code, 201, "{v}");
    }
    let before = ip_addresses(&s);
    assert_eq!(before.len(), 11);
    let (code, v) = create(&s, "default", &svc("s5", Some("RequireDualStack"), None));
    assert_eq!(code, 500, "{v}");
    assert_eq!(v["reason"], "InternalError");
    assert_eq!(
        v["message"],
        "Internal error occurred: failed to allocate a serviceIP: range is full"
    );
    // Nothing half-created: no Service, no IPv6 address taken for it.
    let (code, _) = s
        .request("GET", "/api/v1/namespaces/default/services/s5", None, None)
        .unwrap();
    assert_eq!(code, 404);
    assert_eq!(ip_addresses(&s), before);
    // A delete gives the addresses back.
    let (code, _) = s
        .request(
            "DELETE",
            "/api/v1/namespaces/default/services/s0",
            None,
            None,
        )
        .unwrap();
    assert_eq!(code, 200);
    let (code, v) = create(&s, "default", &svc("s5", Some("RequireDualStack"), None));
    assert_eq!(code, 201, "{v}");
}

fn events_with_reason(s: &TestServer, reason: &str) -> Vec<Value> {
    let list = get_json(
        s,
        &format!("/api/v1/events?fieldSelector=reason%3D{reason}"),
    );
    list["items"].as_array().unwrap().clone()
}

#[test]
fn repair_recreates_missing_records_and_reports_them() {
    let s = TestServer::start(&[
        "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
        "--service-ip-repair-interval=500ms",
    ]);
    let (code, v) = create(&s, "default", &svc("web", Some("RequireDualStack"), None));
    assert_eq!(code, 201);
    let v6 = v["spec"]["clusterIPs"][1].as_str().unwrap().to_string();
    // Lose the record of the secondary address: repair recreates it and says so.
    let (code, body) = s
        .request(
            "DELETE",
            &format!("/apis/networking.k8s.io/v1/ipaddresses/{v6}"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let back = eventually(Duration::from_secs(10), || {
        ip_addresses(&s).contains(&v6).then_some(())
    });
    assert!(back.is_some(), "repair did not recreate {v6}");
    let ev = eventually(Duration::from_secs(10), || {
        let e = events_with_reason(&s, "ClusterIPNotAllocated");
        (!e.is_empty()).then_some(e)
    })
    .expect("ClusterIPNotAllocated event");
    assert_eq!(
        ev[0]["message"],
        format!("Cluster IP [IPv6]:{v6} is not allocated; repairing")
    );
    assert_eq!(ev[0]["type"], "Warning");
    assert_eq!(ev[0]["involvedObject"]["name"], "web");
}

/// How many repair runs have logged `phrase` for the record of `ip`.
fn repair_log_count(s: &TestServer, phrase: &str, ip: &str) -> usize {
    s.log()
        .lines()
        .filter(|l| {
            l.contains(phrase) && l.contains(&format!("ipaddresses.networking.k8s.io/{ip}"))
        })
        .count()
}

#[test]
fn a_leaked_ip_address_survives_two_repair_runs_goes_in_the_third_and_is_allocatable_again() {
    // Runs 4 s apart: each check below lands well inside the gap after the run it follows,
    // even on a loaded machine.
    let s = TestServer::start(&[
        "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
        "--service-ip-repair-interval=4s",
    ]);
    let flagged = "may have leaked: flagging for later clean up";
    let cleaned = "appears to have leaked: cleaning up";
    // A record owned by a Service that does not exist.
    let leaked = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": "10.0.77.77", "labels": {"ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io"}},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "gone"}},
    });
    let (code, body) = s
        .request(
            "POST",
            "/apis/networking.k8s.io/v1/ipaddresses",
            Some(&leaked.to_string()),
            Some("application/json"),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let mut pinned = svc("pinned", Some("SingleStack"), Some(&["IPv4"]));
    pinned["spec"]["clusterIP"] = json!("10.0.77.77");
    for run in 1..=2 {
        let seen = eventually(Duration::from_secs(20), || {
            (repair_log_count(&s, flagged, "10.0.77.77") >= run).then_some(())
        });
        assert!(
            seen.is_some(),
            "repair run {run} did not flag the leak\n{}",
            s.log()
        );
        assert_eq!(repair_log_count(&s, cleaned, "10.0.77.77"), 0, "run {run}");
        assert!(
            ip_addresses(&s).contains("10.0.77.77"),
            "the leaked record went in run {run}, before the third"
        );
        // Still held: the address cannot be given to a Service.
        let (code, body) = create(&s, "default", &pinned);
        assert_eq!(code, 422, "run {run}: {body}");
    }
    let gone = eventually(Duration::from_secs(20), || {
        (!ip_addresses(&s).contains("10.0.77.77")).then_some(())
    });
    assert!(
        gone.is_some(),
        "the leaked record survived the third run\n{}",
        s.log()
    );
    assert_eq!(repair_log_count(&s, flagged, "10.0.77.77"), 2);
    assert_eq!(repair_log_count(&s, cleaned, "10.0.77.77"), 1);
    // Released: a Service may have it now, and its record names that Service.
    let (code, body) = create(&s, "default", &pinned);
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["clusterIPs"], json!(["10.0.77.77"]));
    let record = get_json(&s, "/apis/networking.k8s.io/v1/ipaddresses/10.0.77.77");
    assert_eq!(record["spec"]["parentRef"]["name"], "pinned");
}

#[test]
fn reconfiguring_single_to_dual_and_back_follows_upstream() {
    let mut s = TestServer::start(&[
        "--service-cluster-ip-range=10.0.0.0/16",
        "--service-ip-repair-interval=500ms",
    ]);
    let (code, prefer) = create(&s, "default", &svc("prefer", Some("PreferDualStack"), None));
    assert_eq!(code, 201);
    assert_eq!(
        prefer["spec"]["ipFamilies"],
        json!(["IPv4"]),
        "PreferDualStack on a single-stack cluster stays single"
    );
    let (code, v) = create(
        &s,
        "default",
        &svc("require", Some("RequireDualStack"), None),
    );
    assert_eq!(code, 422);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("this cluster is not configured for dual-stack services"),
        "{v}"
    );

    // Single → dual: existing Services untouched, also by unrelated updates.
    s.restart(Some(&[
        "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
        "--service-ip-repair-interval=500ms",
    ]));
    let now = get_json(&s, "/api/v1/namespaces/default/services/prefer");
    assert_eq!(now["spec"]["clusterIPs"], prefer["spec"]["clusterIPs"]);
    let label = json!({"metadata": {"labels": {"touched": "yes"}}}).to_string();
    let (code, body) = s
        .request(
            "PATCH",
            "/api/v1/namespaces/default/services/prefer",
            Some(&label),
            Some("application/merge-patch+json"),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let after: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        after["spec"]["ipFamilies"],
        json!(["IPv4"]),
        "no auto-upgrade"
    );
    // The user upgrades explicitly.
    let up = json!({"spec": {"ipFamilyPolicy": "RequireDualStack"}}).to_string();
    let (code, body) = s
        .request(
            "PATCH",
            "/api/v1/namespaces/default/services/prefer",
            Some(&up),
            Some("application/merge-patch+json"),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let up: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(up["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
    assert_eq!(
        up["spec"]["clusterIPs"][0], prefer["spec"]["clusterIPs"][0],
        "the primary never changes"
    );
    let v6 = up["spec"]["clusterIPs"][1].as_str().unwrap().to_string();
    assert!(in_range(&v6, "fd00:10::/108"));

    // Dual → single: the Service keeps its IPv6 address in storage, repair reports it, updates
    // need a downgrade, and the downgrade releases the secondary.
    s.restart(Some(&[
        "--service-cluster-ip-range=10.0.0.0/16",
        "--service-ip-repair-interval=500ms",
    ]));
    let kept = get_json(&s, "/api/v1/namespaces/default/services/prefer");
    assert_eq!(kept["spec"]["clusterIPs"], up["spec"]["clusterIPs"]);
    let ev = eventually(Duration::from_secs(10), || {
        let e = events_with_reason(&s, "ClusterIPNotValid");
        (!e.is_empty()).then_some(e)
    })
    .expect("ClusterIPNotValid event");
    assert_eq!(
        ev[0]["message"],
        format!(
            "Cluster IP {v6}(IPv6) is of ip family that is no longer configured on cluster; please recreate service"
        )
    );
    let (code, body) = s
        .request(
            "PATCH",
            "/api/v1/namespaces/default/services/prefer",
            Some(&label.replace("yes", "again")),
            Some("application/merge-patch+json"),
        )
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("this cluster is not configured for dual-stack services"),
        "{body}"
    );
    let down = json!({"spec": {"ipFamilyPolicy": "SingleStack"}}).to_string();
    let (code, body) = s
        .request(
            "PATCH",
            "/api/v1/namespaces/default/services/prefer",
            Some(&down),
            Some("application/merge-patch+json"),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let down: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        down["spec"]["clusterIPs"],
        json!([prefer["spec"]["clusterIPs"][0]])
    );
    assert_eq!(down["spec"]["ipFamilies"], json!(["IPv4"]));
    assert!(
        !ip_addresses(&s).contains(&v6),
        "the secondary's record goes with the downgrade"
    );
}

#[test]
fn node_ports_are_allocated_checked_and_released_with_upstream_errors() {
    let s = TestServer::start(&[
        "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
        "--service-node-port-range=30000-30100",
    ]);
    let np = |name: &str, port: Option<i64>, ty: &str, etp: Option<&str>| {
        let mut v = svc(name, Some("PreferDualStack"), None);
        v["spec"]["type"] = ty.into();
        if let Some(p) = port {
            v["spec"]["ports"][0]["nodePort"] = p.into();
        }
        if let Some(e) = etp {
            v["spec"]["externalTrafficPolicy"] = e.into();
        }
        v
    };
    let (code, a) = create(&s, "default", &np("a", Some(30080), "NodePort", None));
    assert_eq!(code, 201, "{a}");
    assert_eq!(a["spec"]["ports"][0]["nodePort"], 30080);
    let (code, b) = create(&s, "default", &np("b", Some(30080), "NodePort", None));
    assert_eq!(code, 422);
    assert_eq!(
        b["message"],
        r#"Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#
    );
    let (code, c) = create(&s, "default", &np("c", Some(80), "NodePort", None));
    assert_eq!(code, 422);
    assert_eq!(
        c["details"]["causes"][0]["message"],
        "Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-30100"
    );
    // LoadBalancer with externalTrafficPolicy Local also gets a health check NodePort.
    let (code, lb) = create(
        &s,
        "default",
        &np("lb", None, "LoadBalancer", Some("Local")),
    );
    assert_eq!(code, 201, "{lb}");
    let hc = lb["spec"]["healthCheckNodePort"].as_i64().unwrap();
    let port = lb["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=30100).contains(&hc) && (30000..=30100).contains(&port) && hc != port);
    // Deleting gives every port back.
    for name in ["a", "lb"] {
        let (code, _) = s
            .request(
                "DELETE",
                &format!("/api/v1/namespaces/default/services/{name}"),
                None,
                None,
            )
            .unwrap();
        assert_eq!(code, 200);
    }
    let (code, again) = create(&s, "default", &np("again", Some(30080), "NodePort", None));
    assert_eq!(code, 201, "{again}");
    let (code, hc_again) = create(&s, "default", &np("hc-again", Some(hc), "NodePort", None));
    assert_eq!(code, 201, "{hc_again}");
}

#[test]
fn every_request_to_v1_endpoints_carries_the_1_33_deprecation_warning_and_slices_do_not() {
    let s = TestServer::start(&[]);
    let version = get_json(&s, "/version");
    assert_eq!(
        (version["major"].as_str(), version["minor"].as_str()),
        (Some("1"), Some("33")),
        "the warning is for a server reporting 1.33"
    );
    let warning =
        r#"299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice""#;
    let ep = "/api/v1/namespaces/default/endpoints";
    let body =
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "e1"}}).to_string();
    let json_ct = [("Content-Type", "application/json")];
    let cases: [(&str, String, Option<&[u8]>, u16); 5] = [
        ("GET", ep.to_string(), None, 200),
        ("GET", format!("{ep}/kubernetes"), None, 200),
        ("POST", ep.to_string(), Some(body.as_bytes()), 201),
        ("GET", format!("{ep}/missing"), None, 404),
        ("DELETE", format!("{ep}/e1"), None, 200),
    ];
    for (method, path, body, code) in cases {
        let headers: &[(&str, &str)] = if body.is_some() { &json_ct } else { &[] };
        let r = s.call(&s.token, method, &path, body, headers);
        assert_eq!(r.status, code, "{method} {path}: {}", r.body);
        assert_eq!(r.header_values("warning"), [warning], "{method} {path}");
    }
    let mut w = s.watch(&format!("{ep}?watch=true"));
    assert_eq!(w.status(), 200);
    assert_eq!(w.header("warning").as_deref(), Some(warning), "watch");
    let r = s.call(
        &s.token,
        "GET",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.header_values("warning").is_empty(),
        "{:?}",
        r.header_values("warning")
    );
}

fn ready_condition(v: &Value) -> (String, String, String) {
    let c = v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    let s = |k: &str| c[k].as_str().unwrap_or("<none>").to_string();
    (s("status"), s("reason"), s("message"))
}

#[test]
fn service_cidrs_carry_the_finalizer_and_ready_and_go_only_when_no_address_needs_them() {
    let s = TestServer::start(&["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"]);
    let cidrs = "/apis/networking.k8s.io/v1/servicecidrs";
    let finalizer = "networking.k8s.io/service-cidr-finalizer";
    let ready = (
        "True".to_string(),
        String::new(),
        "Kubernetes Service CIDR is ready".to_string(),
    );
    let blocked = (
        "False".to_string(),
        "Terminating".to_string(),
        "There are still IPAddresses referencing the ServiceCIDR, please remove them or create a new ServiceCIDR".to_string(),
    );
    let settled = |name: &str, want: &(String, String, String)| {
        let mut last = Value::Null;
        let ok = eventually(Duration::from_secs(10), || {
            last = get_json(&s, &format!("{cidrs}/{name}"));
            let has = last["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == finalizer));
            (has && ready_condition(&last) == *want).then_some(())
        });
        assert!(ok.is_some(), "{name}: {last}");
        last
    };
    // The bootstrap ServiceCIDR and one a user creates.
    settled("kubernetes", &ready);
    let extra = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "extra"}, "spec": {"cidrs": ["10.1.0.0/16", "fd00:11::/108"]}});
    let (code, body) = s
        .request(
            "POST",
            cidrs,
            Some(&extra.to_string()),
            Some("application/json"),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");
    settled("extra", &ready);
    let held = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": "fd00:11::5", "labels": {
            "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            "ipaddress.kubernetes.io/ip-family": "IPv6"}},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "held"}}});
    let ips = "/apis/networking.k8s.io/v1/ipaddresses";
    let (code, body) = s
        .request(
            "POST",
            ips,
            Some(&held.to_string()),
            Some("application/json"),
        )
        .unwrap();
    assert_eq!(code, 201, "{body}");

    // Deleting either while an address lies only in it: it stays, Ready=False Terminating.
    for name in ["kubernetes", "extra"] {
        let (code, body) = s
            .request("DELETE", &format!("{cidrs}/{name}"), None, None)
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let v = settled(name, &blocked);
        assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    }
    // The default/kubernetes Service keeps `kubernetes` alive; `extra` goes with its address.
    let (code, body) = s
        .request("DELETE", &format!("{ips}/fd00:11::5"), None, None)
        .unwrap();
    assert!(code == 200 || code == 404, "{code} {body}");
    let gone = eventually(Duration::from_secs(10), || {
        let (code, _) = s
            .request("GET", &format!("{cidrs}/extra"), None, None)
            .unwrap();
        (code == 404).then_some(())
    });
    assert!(gone.is_some(), "an empty ServiceCIDR being deleted stays");
    std::thread::sleep(Duration::from_millis(500));
    settled("kubernetes", &blocked);
}
