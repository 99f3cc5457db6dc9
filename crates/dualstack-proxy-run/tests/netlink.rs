//! Element-only syncs sent as our own netlink batch reach the same kernel state as `nft -f` of a
//! fresh full ruleset: run in a new network namespace of a test thread (root; CI is root).

use std::net::IpAddr;
use std::process::Command;
use std::time::Instant;

use dualstack_proxy::{DualStackProxier, NodeConfig};
use dualstack_proxy_run::apply::{NftApplier, NftCommand};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn service(name: &str, v4: &str, v6: &str, node_port: u16) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "type": "NodePort",
            "clusterIP": v4, "clusterIPs": [v4, v6],
            "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": node_port}]
        }
    }))
    .unwrap()
}

fn slice(svc: &str, v6: bool, addrs: &[String]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-{}", if v6 { "v6" } else { "v4" }), "namespace": "ns",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "endpoints": addrs.iter().map(|a| json!({
            "addresses": [a], "conditions": {"ready": true}, "nodeName": "node-a"
        })).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    }))
    .unwrap()
}

fn world(eps: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for i in 0..4u16 {
        let name = format!("svc{i}");
        svcs.push(service(
            &name,
            &format!("172.30.0.{}", i + 1),
            &format!("fd00:172:30::{}", i + 1),
            30000 + i,
        ));
        let n = eps + usize::from(i);
        let v4: Vec<String> = (0..n).map(|e| format!("10.0.{i}.{}", e + 1)).collect();
        let v6: Vec<String> = (0..n)
            .map(|e| format!("fd00:10:0:{i}::{}", e + 1))
            .collect();
        slices.push(slice(&name, false, &v4));
        slices.push(slice(&name, true, &v6));
    }
    (svcs, slices)
}

fn node() -> NodeConfig {
    NodeConfig::new(
        "node-a",
        vec![
            "203.0.113.10".parse::<IpAddr>().unwrap(),
            "2001:db8:1::10".parse().unwrap(),
        ],
        vec![
            "10.0.0.0/16".parse().unwrap(),
            "fd00:10::/48".parse().unwrap(),
        ],
    )
}

/// The table's listing with every set's elements sorted (the kernel lists a hash in its own
/// order).
fn normalized(family: &str) -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "table", family, "dualstack-proxy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).replace(['{', '}'], "\n");
    let mut lines: Vec<String> = text
        .split([',', '\n'])
        .map(|l| l.trim().trim_start_matches("elements = ").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn element_only_syncs_sent_over_netlink_equal_a_fresh_full_load() {
    assert!(is_root(), "needs root and nft (CI runs as root)");
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let nft = NftCommand::default();
        let t = Instant::now();
        let mut px = DualStackProxier::new(&node());
        let (svcs, slices) = world(2);
        let full = px.update(&svcs, &slices, t).unwrap();
        for f in full.families() {
            nft.apply(&f.transaction).unwrap();
        }
        // Endpoints replaced, added and removed: elements only.
        let (svcs2, mut slices2) = world(3);
        slices2.remove(0); // svc0 loses its IPv4 endpoints: no-endpoint map elements
        let inc = px.update(&svcs2, &slices2, t).unwrap();
        for f in inc.families() {
            let tx = &f.transaction;
            assert!(
                dualstack_proxy::netlink::element_batch(tx, 1).is_some(),
                "element-only: {:?}",
                tx.ops
            );
            nft.apply(tx).unwrap();
        }
        let got = (normalized("ip"), normalized("ip6"));
        // The same final state loaded whole by nft.
        let mut fresh = DualStackProxier::new(&node());
        let again = fresh.update(&svcs2, &slices2, t).unwrap();
        for f in again.families() {
            nft.apply(&f.transaction).unwrap();
        }
        let want = (normalized("ip"), normalized("ip6"));
        assert_eq!(got, want);
        assert!(
            got.0.iter().any(|l| l.contains("10.0.1.3 . 8080")),
            "{:?}",
            got.0
        );
        // A refused batch (an element of a set that does not exist) is reported.
        let mut bad = dualstack_proxy::Transaction::new(dualstack_ipam::IpFamily::IPv4, false);
        bad.ops.push(dualstack_proxy::nft::Op::DeleteElements {
            set: "no-such-set".into(),
            keys: vec![dualstack_proxy::nft::Key::Addr("10.9.9.9".parse().unwrap())],
        });
        let e = nft.apply(&bad).unwrap_err().to_string();
        assert!(e.contains("refused"), "{e}");
    })
    .join()
    .unwrap();
}
