//! Our own netlink batches against the kernel, in a new network namespace of a test thread
//! (root; CI is root): what they load lists exactly as what `nft -f` loads from the same
//! transaction's text, full and incremental, for every scenario of the golden tests; element-only
//! syncs reach the same state as a fresh full load; a refused batch names the operation; a
//! batch far over the socket's default buffer goes in one piece.

#[path = "../../dualstack-proxy/tests/support/mod.rs"]
mod support;

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
    let text = list_table(family).replace(['{', '}'], "\n");
    let mut lines: Vec<String> = text
        .split([',', '\n'])
        .map(|l| l.trim().trim_start_matches("elements = ").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// Runs `f` on a thread of its own in a new network namespace (gone with the thread), as root.
fn in_new_netns(f: impl FnOnce() + Send + 'static) {
    assert!(is_root(), "needs root and nft (CI runs as root)");
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f();
    })
    .join()
    .unwrap();
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[test]
fn element_only_syncs_sent_over_netlink_equal_a_fresh_full_load() {
    in_new_netns(|| {
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
                dualstack_proxy::netlink::is_element_only(tx),
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
        assert!(
            e.contains("refused") && e.contains("No such file or directory"),
            "{e}"
        );
        assert!(
            e.contains("in `delete element ip dualstack-proxy no-such-set { 10.9.9.9 }`"),
            "names the refused operation: {e}"
        );
    });
}

/// Loads `tx` with `nft -f -` from its text.
fn nft_text(tx: &dualstack_proxy::Transaction) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(tx.to_text().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn flush() {
    assert!(
        Command::new("nft")
            .args(["flush", "ruleset"])
            .status()
            .unwrap()
            .success()
    );
}

/// A transaction of the rule shapes the scenarios do not reach: anonymous interval sets of
/// several networks (overlapping, adjacent, one running to the top of the address space, the
/// whole space) and a random choice among chains.
fn anonymous_sets(family: dualstack_ipam::IpFamily) -> dualstack_proxy::Transaction {
    use dualstack_proxy::nft::*;
    let (nets, top, all) = match family {
        dualstack_ipam::IpFamily::IPv4 => (
            vec![
                "10.0.0.0/8",
                "10.1.0.0/16",
                "192.168.1.0/24",
                "10.9.9.9/32",
                "11.0.0.0/8",
            ],
            vec!["255.255.255.0/24", "10.0.0.0/8"],
            "0.0.0.0/0",
        ),
        dualstack_ipam::IpFamily::IPv6 => (
            vec!["fd00::/64", "fd01::/120", "fd02::1/128", "fd00::/63"],
            vec!["ffff::/16", "fd00::/8"],
            "::/0",
        ),
    };
    let parse =
        |v: &[&str]| -> Vec<ipnet::IpNet> { v.iter().map(|n| n.parse().unwrap()).collect() };
    let saddr_not = |n: Vec<ipnet::IpNet>| Match::Addr {
        dir: Dir::Saddr,
        negate: true,
        rhs: AddrRhs::Nets(n),
    };
    let many: Vec<ipnet::IpNet> = (0..3000u32)
        .map(|i| match family {
            dualstack_ipam::IpFamily::IPv4 => {
                format!("10.{}.{}.0/25", i / 256, i % 256).parse().unwrap()
            }
            dualstack_ipam::IpFamily::IPv6 => format!("fd00:{i:x}::/64").parse().unwrap(),
        })
        .collect();
    let mut tx = dualstack_proxy::Transaction::new(family, true);
    tx.ops.push(Op::AddTable);
    for c in ["c", "d"] {
        tx.ops.push(Op::AddChain(ChainDef {
            name: c.into(),
            base: None,
        }));
    }
    let rules = vec![
        Rule::when(vec![saddr_not(parse(&nets))], Stmt::Verdict(Verdict::Drop)),
        Rule::when(
            vec![
                Match::Addr {
                    dir: Dir::Daddr,
                    negate: false,
                    rhs: AddrRhs::Nets(parse(&nets)),
                },
                Match::L4Proto(Protocol::Udp),
                Match::ThDport(53),
            ],
            Stmt::Verdict(Verdict::Accept),
        )
        .comment("several networks"),
        Rule::when(vec![saddr_not(parse(&top))], Stmt::Verdict(Verdict::Drop)),
        Rule::when(
            vec![saddr_not(parse(&[all, top[1]]))],
            Stmt::Verdict(Verdict::Drop),
        ),
        Rule::when(vec![saddr_not(parse(&[all]))], Stmt::Verdict(Verdict::Drop)),
        // Thousands of ranges: the set's elements take several messages.
        Rule::when(vec![saddr_not(many.clone())], Stmt::Verdict(Verdict::Drop)),
        Rule::new(Stmt::Numgen {
            targets: vec!["d".into(), "d".into(), "d".into()],
        }),
    ];
    tx.ops.push(Op::AddRules {
        chain: "c".into(),
        rules: rules.into(),
    });
    tx
}

#[test]
fn what_netlink_loads_lists_as_what_nft_loads_from_the_same_text() {
    in_new_netns(|| {
        let nft = NftCommand::default();
        let t = Instant::now();
        let listing = || (normalized("ip"), normalized("ip6"));
        for cfg in [support::node_config(), support::node_config_all_nodeports()] {
            let (svcs, slices) = support::world();
            // Half the Services and a third of the slices afterwards: chains flushed and
            // deleted, sets and elements removed.
            let svcs2: Vec<Service> = svcs.iter().step_by(2).cloned().collect();
            let slices2: Vec<EndpointSlice> = slices.iter().step_by(3).cloned().collect();
            let mut px = DualStackProxier::new(&cfg);
            let full = px.update(&svcs, &slices, t).unwrap();
            let inc = px.update(&svcs2, &slices2, t).unwrap();
            for (label, steps) in [
                ("full", vec![&full]),
                ("full, then a change", vec![&full, &inc]),
            ] {
                flush();
                for step in &steps {
                    for f in step.families() {
                        nft.apply(&f.transaction).unwrap();
                    }
                }
                let ours = listing();
                flush();
                for step in &steps {
                    for f in step.families() {
                        nft_text(&f.transaction);
                    }
                }
                let theirs = listing();
                assert!(ours.0.len() > 100 && ours.1.len() > 100, "{ours:?}");
                assert_same(&ours.0, &theirs.0, label);
                assert_same(&ours.1, &theirs.1, label);
            }
        }
        for family in [
            dualstack_ipam::IpFamily::IPv4,
            dualstack_ipam::IpFamily::IPv6,
        ] {
            let tx = anonymous_sets(family);
            flush();
            nft.apply(&tx).unwrap();
            let ours = listing_of(family);
            flush();
            nft_text(&tx);
            assert_same(&ours, &listing_of(family), "anonymous sets");
            assert!(
                ours.iter()
                    .any(|l| l.contains("comment \"several networks\"")),
                "{ours:?}"
            );
        }
        flush();
    });
}

/// Equal listings, or a failure that shows only the lines that differ.
fn assert_same(ours: &[String], theirs: &[String], label: &str) {
    if ours != theirs {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter()
                .filter(|l| !b.contains(l))
                .take(10)
                .cloned()
                .collect()
        };
        panic!(
            "{label}: netlink and nft -f differ\nonly ours: {:#?}\nonly nft's: {:#?}",
            only(ours, theirs),
            only(theirs, ours)
        );
    }
}

/// The listing of one family's table, lines as nft prints them (anonymous sets inline).
fn listing_of(family: dualstack_ipam::IpFamily) -> Vec<String> {
    let f = if family == dualstack_ipam::IpFamily::IPv4 {
        "ip"
    } else {
        "ip6"
    };
    list_table(f).lines().map(str::to_string).collect()
}

/// `nft list table FAMILY dualstack-proxy`.
fn list_table(family: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", family, "dualstack-proxy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_batch_far_over_the_default_socket_buffer_goes_in_one_piece() {
    in_new_netns(|| {
        let nft = NftCommand::default();
        let t = Instant::now();
        // 2,000 dual-stack Services of 4 endpoints: a few MiB per family.
        let mut svcs = Vec::new();
        let mut slices = Vec::new();
        for i in 0..2000u32 {
            let name = format!("big{i}");
            let (hi, lo) = (i / 250, i % 250 + 1);
            svcs.push(service(
                &name,
                &format!("172.30.{hi}.{lo}"),
                &format!("fd00:172:30::{hi}:{lo}"),
                30000 + u16::try_from(i).unwrap(),
            ));
            let v4: Vec<String> = (0..4).map(|e| format!("10.{hi}.{lo}.{}", e + 1)).collect();
            let v6: Vec<String> = (0..4)
                .map(|e| format!("fd00:10:{hi}:{lo}::{}", e + 1))
                .collect();
            slices.push(slice(&name, false, &v4));
            slices.push(slice(&name, true, &v6));
        }
        let mut px = DualStackProxier::new(&node());
        let full = px.update(&svcs, &slices, t).unwrap();
        for f in full.families() {
            let bytes = dualstack_proxy::netlink::batch(&f.transaction, 1)
                .bytes
                .len();
            assert!(
                bytes > 1 << 20,
                "{bytes} bytes is not far over the default buffer"
            );
            nft.apply(&f.transaction).unwrap();
        }
        let (v4, v6) = (normalized("ip"), normalized("ip6"));
        assert!(
            v4.iter().any(|l| l.starts_with("172.30.7.250 . tcp . 80")),
            "the last Service is in"
        );
        assert!(
            v6.iter()
                .any(|l| l.starts_with("fd00:172:30::7:250 . tcp . 80")),
            "the last Service is in"
        );
        flush();
    });
}
