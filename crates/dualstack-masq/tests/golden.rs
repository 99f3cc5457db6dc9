//! Golden rulesets, both families side by side: upstream's default configs (with and without
//! `--nomasq-all-reserved-ranges`), its dual-stack examples (`TestSyncMasqRules`,
//! `TestSyncMasqRulesIPv6`), link-local switches and `--to-ports`. `UPDATE_GOLDEN=1` rewrites
//! the files. The `nft -c` check of text and JSON needs root and nft (`--ignored`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use dualstack_ipam::IpFamily;
use dualstack_masq::flags::parse_to_ports;
use dualstack_masq::{MasqConfig, MasqFlags, Rule, Ruleset, render};

fn v6_flags() -> MasqFlags {
    MasqFlags {
        enable_ipv6: true,
        ..MasqFlags::default()
    }
}

fn cfg(yaml: &str) -> MasqConfig {
    MasqConfig::parse(yaml, false, true).unwrap()
}

/// Every scenario: (name, config, flags).
fn scenarios() -> Vec<(&'static str, MasqConfig, MasqFlags)> {
    let empty = MasqConfig {
        non_masquerade_cidrs: vec![],
        ..MasqConfig::new(false)
    };
    vec![
        ("empty-config", empty.clone(), v6_flags()),
        ("default-config", MasqConfig::new(false), v6_flags()),
        (
            "default-config-all-reserved-ranges",
            MasqConfig::new(true),
            MasqFlags {
                nomasq_all_reserved_ranges: true,
                ..v6_flags()
            },
        ),
        (
            "dual-stack-example",
            cfg("nonMasqueradeCIDRs: [10.244.0.0/16, fc00::/7]"),
            v6_flags(),
        ),
        (
            "masq-link-local-both",
            cfg(
                "nonMasqueradeCIDRs: [10.244.0.0/16, fc00::/7]\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true",
            ),
            v6_flags(),
        ),
        (
            "to-ports-no-random-fully",
            MasqConfig::new(false),
            MasqFlags {
                random_fully: false,
                to_ports: parse_to_ports("1024-29999,32768-65535").unwrap(),
                ..v6_flags()
            },
        ),
    ]
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.nft"))
}

fn both(c: &MasqConfig, f: &MasqFlags) -> String {
    format!(
        "{}{}",
        render(c, f, IpFamily::IPv4).to_text(),
        render(c, f, IpFamily::IPv6).to_text()
    )
}

#[test]
fn rendered_rulesets_match_the_golden_files_for_both_families() {
    for (name, c, f) in scenarios() {
        let got = both(&c, &f);
        let path = golden(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(got, want, "{name}: {}", path.display());
    }
}

fn returns(r: &Ruleset) -> Vec<String> {
    r.rules
        .iter()
        .filter_map(|r| match r {
            Rule::Return(n) => Some(n.to_string()),
            Rule::Masquerade { .. } => None,
        })
        .collect()
}

/// The RETURN lists of upstream's `TestSyncMasqRules` / `TestSyncMasqRulesIPv6`, row by row,
/// IPv4 and IPv6 side by side; every chain ends in one protocol-less MASQUERADE.
#[test]
fn return_rules_are_upstreams_for_each_family() {
    let rows: Vec<(MasqConfig, &[&str], &[&str])> = vec![
        (
            MasqConfig {
                non_masquerade_cidrs: vec![],
                ..MasqConfig::new(false)
            },
            &["169.254.0.0/16"],
            &["fe80::/10"],
        ),
        (
            MasqConfig::new(false),
            &[
                "169.254.0.0/16",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
            ],
            &["fe80::/10"],
        ),
        (
            MasqConfig::new(true),
            &[
                "169.254.0.0/16",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "192.0.0.0/24",
                "192.0.2.0/24",
                "192.88.99.0/24",
                "198.18.0.0/15",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "240.0.0.0/4",
            ],
            &["fe80::/10"],
        ),
        (
            cfg("nonMasqueradeCIDRs: [10.244.0.0/16, fc00::/7]"),
            &["169.254.0.0/16", "10.244.0.0/16"],
            &["fe80::/10", "fc00::/7"],
        ),
        (
            cfg("nonMasqueradeCIDRs: []\nmasqLinkLocalIPv6: true"),
            &["169.254.0.0/16"],
            &[],
        ),
    ];
    for (c, v4, v6) in rows {
        for (family, want) in [(IpFamily::IPv4, v4), (IpFamily::IPv6, v6)] {
            let r = render(&c, &v6_flags(), family);
            assert_eq!(returns(&r), want, "{family:?} {:?}", c.non_masquerade_cidrs);
            assert_eq!(
                r.rules.last(),
                Some(&Rule::Masquerade {
                    protocol: None,
                    probability: None,
                    to_ports: None,
                    fully_random: true
                })
            );
        }
    }
}

/// Upstream's `--to-ports` probabilities (`TestSyncMasqRules` with to-ports).
#[test]
fn to_ports_probabilities_are_upstreams() {
    for (ports, want) in [
        (
            "1024-29999,32768-65535",
            vec![Some(0.469292562840114), None],
        ),
        (
            "1024-29999,32768-49151,61000-65535",
            vec![Some(0.5807279140612474), Some(0.7831739961759082), None],
        ),
        ("1024,65535", vec![Some(0.5), None]),
    ] {
        let f = MasqFlags {
            to_ports: parse_to_ports(ports).unwrap(),
            ..MasqFlags::default()
        };
        let r = render(&MasqConfig::new(false), &f, IpFamily::IPv4);
        let probs: Vec<(Option<&str>, Option<f64>)> = r
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Masquerade {
                    protocol,
                    probability,
                    ..
                } => Some((*protocol, *probability)),
                Rule::Return(_) => None,
            })
            .collect();
        let mut expected = Vec::new();
        for proto in ["tcp", "udp", "sctp"] {
            expected.extend(want.iter().map(|p| (Some(proto), *p)));
        }
        expected.push((None, None));
        assert_eq!(probs, expected, "{ports}");
    }
}

fn nft(args: &[&str], input: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Root (CI runs as root); otherwise the test says it was skipped.
fn root() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        eprintln!("SKIPPED: needs root and nft");
    }
    root
}

#[test]
fn nft_accepts_every_scenario_as_text_and_json_for_both_families() {
    if !root() {
        return;
    }
    for (name, c, f) in scenarios() {
        for family in [IpFamily::IPv4, IpFamily::IPv6] {
            let r = render(&c, &f, family);
            nft(&["-c", "-f", "-"], &r.to_text())
                .unwrap_or_else(|e| panic!("{name} {family:?} text refused:\n{e}"));
            nft(&["-c", "-j", "-f", "-"], &r.to_json_string())
                .unwrap_or_else(|e| panic!("{name} {family:?} json refused:\n{e}"));
        }
    }
}
