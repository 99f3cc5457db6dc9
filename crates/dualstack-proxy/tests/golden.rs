//! Golden rulesets: each scenario's objects in the `ip` and `ip6` tables side by side, and the
//! fixed part once. `UPDATE_GOLDEN=1 cargo test -p dualstack-proxy --test golden` rewrites them;
//! review the diff.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use dualstack_ipam::IpFamily;
use dualstack_proxy::DualStackProxier;
use dualstack_proxy::ruleset::MAX_SHARED_ENDPOINTS;
use support::*;

fn check(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.nft"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        got, want,
        "golden {name} differs; rerun with UPDATE_GOLDEN=1 and review"
    );
}

fn base_lines(family: IpFamily) -> HashSet<String> {
    let mut p = DualStackProxier::new(&node_config());
    let r = p.sync(Instant::now());
    let tx = if family == IpFamily::IPv4 {
        r.ipv4.transaction
    } else {
        r.ipv6.transaction
    };
    tx.to_text().lines().map(str::to_string).collect()
}

/// The text without the pick chains of more than 3 endpoints (they differ only in N).
fn without_big_picks(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.split_whitespace().any(|w| {
                w.strip_prefix("pick-")
                    .and_then(|r| r.rsplit('-').next())
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| n > 3)
            })
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn fixed_part_of_both_tables_matches_golden() {
    let mut p = DualStackProxier::new(&node_config());
    let r = p.sync(Instant::now());
    let got = format!(
        "# ip (pick chains of 4..={MAX_SHARED_ENDPOINTS} endpoints left out: they differ only in N)\n{}\n# ip6\n{}",
        without_big_picks(&r.ipv4.transaction.to_text()),
        without_big_picks(&r.ipv6.transaction.to_text())
    );
    check("base", &got);
}

#[test]
fn the_fixed_part_has_pick_chains_up_to_the_shared_maximum_in_both_families() {
    let mut p = DualStackProxier::new(&node_config());
    let r = p.sync(Instant::now());
    let n = MAX_SHARED_ENDPOINTS;
    for (f, text) in [
        ("ip", r.ipv4.transaction.to_text()),
        ("ip6", r.ipv6.transaction.to_text()),
    ] {
        for kind in ["cluster", "external"] {
            let want = format!(
                "add rule {f} dualstack-proxy pick-{kind}-{n} dnat to {f} daddr . meta l4proto . th dport . numgen random mod {n} map @service-backends\n"
            );
            assert!(text.contains(&want), "{want}");
        }
        let want = format!(
            "add rule {f} dualstack-proxy pick-nodeport-{n} dnat to meta l4proto . th dport . numgen random mod {n} map @nodeport-backends\n"
        );
        assert!(text.contains(&want), "{want}");
        assert!(!text.contains(&format!("pick-cluster-{}", n + 1)));
    }
}

#[test]
fn fixed_part_with_all_nodeport_addresses_uses_fib_local() {
    let mut p = DualStackProxier::new(&node_config_all_nodeports());
    let r = p.sync(Instant::now());
    let v4 = r.ipv4.transaction.to_text();
    let v6 = r.ipv6.transaction.to_text();
    assert!(v4.contains("add rule ip dualstack-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports"), "{v4}");
    assert!(v6.contains("add rule ip6 dualstack-proxy services fib daddr type local ip6 daddr != ::1/128 meta l4proto . th dport vmap @service-nodeports"), "{v6}");
    assert!(!v4.contains("add element ip dualstack-proxy nodeport-ips"));
}

#[test]
fn every_scenario_matches_its_golden_ruleset_in_both_families() {
    let b4 = base_lines(IpFamily::IPv4);
    let b6 = base_lines(IpFamily::IPv6);
    for s in scenarios() {
        let mut p = DualStackProxier::new(&node_config());
        let r = p.update(&s.services, &s.slices, Instant::now()).unwrap();
        let only = |text: String, base: &HashSet<String>| -> String {
            text.lines()
                .filter(|l| !base.contains(*l))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let got = format!(
            "# ip\n{}\n# ip6\n{}",
            only(r.ipv4.transaction.to_text(), &b4),
            only(r.ipv6.transaction.to_text(), &b6)
        );
        check(s.name, &got);
    }
}

#[test]
fn single_stack_ipv4_service_puts_nothing_in_the_ip6_table() {
    let s = scenarios()
        .into_iter()
        .find(|s| s.name == "single-stack-ipv4")
        .unwrap();
    let mut p = DualStackProxier::new(&node_config());
    p.update(&s.services, &s.slices, Instant::now()).unwrap();
    assert!(p.family(IpFamily::IPv6).ruleset().services.is_empty());
    assert_eq!(p.family(IpFamily::IPv4).ruleset().services.len(), 1);
}
