//! The masquerade ruleset of one IP family, in a table only the masq agent owns.
//!
//! Upstream's iptables rules, one for one (`ip-masq-agent.go`: `syncMasqRules`):
//!
//! ```text
//! table ip dualstack-masq {
//!     chain postrouting {            # nat postrouting, priority srcnat + 10
//!         fib daddr type != local jump IP-MASQ-AGENT      # -m addrtype ! --dst-type LOCAL
//!     }
//!     chain IP-MASQ-AGENT {
//!         ip daddr 169.254.0.0/16 return                   # unless masqLinkLocal
//!         ip daddr <each nonMasqueradeCIDR of the family> return
//!         [--to-ports: per tcp/udp/sctp and interval: meta l4proto P [numgen ...] masquerade to :A-B]
//!         masquerade fully-random                          # must be last
//!     }
//! }
//! ```
//!
//! Every sync replaces the whole table in one transaction (`add table`, `delete table`, then
//! everything anew), which the kernel commits atomically: no packet sees a half-built chain. NAT
//! rules are consulted only for a connection's first packet, so established flows keep their
//! addresses across any update (conntrack holds the binding).

use std::fmt::Write as _;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::config::{LINK_LOCAL_V4, LINK_LOCAL_V6, MasqConfig};
use crate::flags::{MasqFlags, PortInterval};

/// Our table's name, the same in both families (`ip dualstack-masq`, `ip6 dualstack-masq`).
pub const TABLE: &str = "dualstack-masq";
/// The base chain that hooks nat postrouting.
pub const BASE_CHAIN: &str = "postrouting";
/// Its priority: `srcnat + 10`, after the proxy's `nat-postrouting` (`srcnat`). The first nat
/// chain that maps a new connection wins and later ones are skipped, so the proxy's masquerade
/// of marked Service traffic is never overridden, as in iptables, where kube-proxy's
/// `KUBE-POSTROUTING` jump precedes ip-masq-agent's in `POSTROUTING`.
pub const PRIORITY: i32 = 110;
/// `srcnat` (100), for the text rendering.
const SRCNAT: i32 = 100;
/// The scale of `--to-ports` probabilities: `numgen random mod SCALE < p * SCALE`.
pub const PROBABILITY_SCALE: u32 = 1_000_000_000;

/// Upstream's comment of the POSTROUTING jump (`%s` = the chain).
pub const JUMP_COMMENT: &str = "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom %s chain";
/// Upstream's comment of every RETURN rule.
pub const NON_MASQ_COMMENT: &str = "ip-masq-agent: local traffic is not subject to MASQUERADE";
/// Upstream's comment of every MASQUERADE rule.
pub const MASQ_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)";
/// nftables keeps at most 128 bytes of comment.
const COMMENT_MAX: usize = 128;

/// The protocols `--to-ports` applies to, in upstream's order.
pub const TO_PORTS_PROTOCOLS: [&str; 3] = ["tcp", "udp", "sctp"];

/// One rule of our masquerade chain.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `ip daddr NET return`: the destination keeps the source address.
    Return(IpNet),
    /// `[meta l4proto P] [numgen random mod SCALE < N] masquerade [to :PORTS] [fully-random]`.
    Masquerade {
        /// `meta l4proto` (with `--to-ports`).
        protocol: Option<&'static str>,
        /// Upstream's `--probability` (omitted on an interval's last chance).
        probability: Option<f64>,
        /// `--to-ports` interval.
        to_ports: Option<PortInterval>,
        /// `--random-fully`.
        fully_random: bool,
    },
}

/// The whole table of one family: what one sync writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    /// The family (`ip` / `ip6` table).
    pub family: IpFamily,
    /// `--masq-chain`.
    pub chain: String,
    /// The masquerade chain's rules, in order.
    pub rules: Vec<Rule>,
}

/// Renders `config` for `family` (upstream's `syncMasqRules` / `syncMasqRulesIPv6`).
pub fn render(config: &MasqConfig, flags: &MasqFlags, family: IpFamily) -> Ruleset {
    let mut rules = Vec::new();
    let (link_local, masq_link_local) = match family {
        IpFamily::IPv4 => (LINK_LOCAL_V4, config.masq_link_local),
        IpFamily::IPv6 => (LINK_LOCAL_V6, config.masq_link_local_ipv6),
    };
    if !masq_link_local {
        rules.push(Rule::Return(link_local.parse().expect("constant CIDR")));
    }
    rules.extend(config.nets(family).into_iter().map(Rule::Return));
    let masq = |protocol, probability, to_ports| Rule::Masquerade {
        protocol,
        probability,
        to_ports,
        fully_random: flags.random_fully,
    };
    if !flags.to_ports.is_empty() {
        let total: u32 = flags.to_ports.iter().map(|i| i.size()).sum();
        for proto in TO_PORTS_PROTOCOLS {
            let mut remaining = total;
            for &i in &flags.to_ports {
                let s = i.size();
                let p = (s != remaining).then(|| f64::from(s) / f64::from(remaining));
                remaining -= s;
                rules.push(masq(Some(proto), p, Some(i)));
            }
        }
    }
    rules.push(masq(None, None, None));
    Ruleset {
        family,
        chain: flags.masq_chain.clone(),
        rules,
    }
}

fn nft_family(f: IpFamily) -> &'static str {
    match f {
        IpFamily::IPv4 => "ip",
        IpFamily::IPv6 => "ip6",
    }
}

fn threshold(p: f64) -> u64 {
    (p * f64::from(PROBABILITY_SCALE)).round() as u64
}

fn comment(s: &str) -> String {
    let mut s = s.to_string();
    s.truncate(COMMENT_MAX);
    s
}

impl Ruleset {
    fn jump_comment(&self) -> String {
        comment(&JUMP_COMMENT.replace("%s", &self.chain))
    }

    /// The transaction as `nft -f` text.
    pub fn to_text(&self) -> String {
        let fam = nft_family(self.family);
        let t = format!("{fam} {TABLE}");
        let mut out = String::new();
        let _ = writeln!(out, "add table {t}");
        let _ = writeln!(out, "delete table {t}");
        let _ = writeln!(out, "add table {t}");
        let _ = writeln!(
            out,
            "add chain {t} {BASE_CHAIN} {{ type nat hook postrouting priority srcnat + {}; policy accept; }}",
            PRIORITY - SRCNAT
        );
        let _ = writeln!(out, "add chain {t} {}", self.chain);
        let _ = writeln!(
            out,
            "add rule {t} {BASE_CHAIN} fib daddr type != local jump {} comment {:?}",
            self.chain,
            self.jump_comment()
        );
        for r in &self.rules {
            let body = match r {
                Rule::Return(net) => {
                    format!("{fam} daddr {net} return comment {NON_MASQ_COMMENT:?}")
                }
                Rule::Masquerade {
                    protocol,
                    probability,
                    to_ports,
                    fully_random,
                } => {
                    let mut s = String::new();
                    if let Some(p) = protocol {
                        let _ = write!(s, "meta l4proto {p} ");
                    }
                    if let Some(p) = probability {
                        let _ = write!(
                            s,
                            "numgen random mod {PROBABILITY_SCALE} < {} ",
                            threshold(*p)
                        );
                    }
                    s.push_str("masquerade");
                    if let Some(i) = to_ports {
                        let _ = write!(s, " to :{i}");
                    }
                    if *fully_random {
                        s.push_str(" fully-random");
                    }
                    let _ = write!(s, " comment {MASQ_COMMENT:?}");
                    s
                }
            };
            let _ = writeln!(out, "add rule {t} {} {body}", self.chain);
        }
        out
    }

    /// The transaction in libnftables' JSON schema (`nft -j -f -`).
    pub fn to_json(&self) -> Value {
        let fam = nft_family(self.family);
        let table = json!({"family": fam, "name": TABLE});
        let mut cmds = vec![
            json!({"metainfo": {"json_schema_version": 1}}),
            json!({"add": {"table": table}}),
            json!({"delete": {"table": table}}),
            json!({"add": {"table": table}}),
            json!({"add": {"chain": {
                "family": fam, "table": TABLE, "name": BASE_CHAIN,
                "type": "nat", "hook": "postrouting", "prio": PRIORITY, "policy": "accept"
            }}}),
            json!({"add": {"chain": {"family": fam, "table": TABLE, "name": self.chain}}}),
        ];
        let rule = |chain: &str, expr: Vec<Value>, comment: &str| {
            json!({"add": {"rule": {
                "family": fam, "table": TABLE, "chain": chain, "expr": expr, "comment": comment
            }}})
        };
        cmds.push(rule(
            BASE_CHAIN,
            vec![
                json!({"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}),
                json!({"jump": {"target": self.chain}}),
            ],
            &self.jump_comment(),
        ));
        for r in &self.rules {
            let (expr, c) = match r {
                Rule::Return(net) => (
                    vec![
                        json!({"match": {"op": "==",
                            "left": {"payload": {"protocol": fam, "field": "daddr"}},
                            "right": {"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}}}}),
                        json!({"return": null}),
                    ],
                    NON_MASQ_COMMENT,
                ),
                Rule::Masquerade {
                    protocol,
                    probability,
                    to_ports,
                    fully_random,
                } => {
                    let mut expr = Vec::new();
                    if let Some(p) = protocol {
                        expr.push(json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": p}}));
                    }
                    if let Some(p) = probability {
                        expr.push(json!({"match": {"op": "<",
                            "left": {"numgen": {"mode": "random", "mod": PROBABILITY_SCALE, "offset": 0}},
                            "right": threshold(*p)}}));
                    }
                    let mut m = serde_json::Map::new();
                    if let Some(i) = to_ports {
                        m.insert(
                            "port".into(),
                            if i.first == i.last {
                                json!(i.first)
                            } else {
                                json!({"range": [i.first, i.last]})
                            },
                        );
                    }
                    if *fully_random {
                        m.insert("flags".into(), json!("fully-random"));
                    }
                    expr.push(json!({"masquerade": if m.is_empty() { Value::Null } else { Value::Object(m) }}));
                    (expr, MASQ_COMMENT)
                }
            };
            cmds.push(rule(&self.chain, expr, c));
        }
        json!({"nftables": cmds})
    }

    /// [`Ruleset::to_json`] as a string.
    pub fn to_json_string(&self) -> String {
        self.to_json().to_string()
    }
}

/// Removes our table of `family` if it is there (a family whose masquerading is turned off).
pub fn delete_json(family: IpFamily) -> Value {
    let table = json!({"family": nft_family(family), "name": TABLE});
    json!({"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"add": {"table": table}},
        {"delete": {"table": table}},
    ]})
}
