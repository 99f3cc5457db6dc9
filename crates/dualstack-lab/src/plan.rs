//! The lab's address plan and network, as data.
//!
//! One L2 segment (a bridge in the hidden `switch` namespace) joins the nodes and the
//! `outside` host. Addresses come from the documentation ranges: 203.0.113.0/24 and
//! 2001:db8:1::/64. Node `node-i` is `.10+i` / `::10+i` (hex digits as written), the outside
//! host is `.100` / `::100` and is every node's default gateway, so pod egress to anything
//! off-cluster goes to it (and nowhere else: it has no default route).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The lab segment, IPv4.
pub const SEGMENT_V4: &str = "203.0.113.0/24";
/// The lab segment, IPv6.
pub const SEGMENT_V6: &str = "2001:db8:1::/64";
/// The name of the outside host.
pub const OUTSIDE: &str = "outside";
/// The hidden namespace holding the segment's bridge.
pub const SWITCH: &str = "switch";
/// Most nodes a lab may have (addresses .11 to .99).
pub const MAX_NODES: usize = 89;
/// The port of the API server's listener on every node's loopback.
pub const NODE_API_PORT: u16 = 6443;

/// One host of the lab: a node or the outside host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// `node-1` ... or `outside`.
    pub name: String,
    /// Its IPv4 address on the segment.
    pub v4: Ipv4Addr,
    /// Its IPv6 address on the segment.
    pub v6: Ipv6Addr,
}

impl Host {
    /// The addresses in the cluster's family order (kubelet's `--node-ip`).
    pub fn ips(&self, ipv6_primary: bool) -> [IpAddr; 2] {
        if ipv6_primary {
            [self.v6.into(), self.v4.into()]
        } else {
            [self.v4.into(), self.v6.into()]
        }
    }

    /// `--node-ip` for this host.
    pub fn node_ip_flag(&self, ipv6_primary: bool) -> String {
        let [a, b] = self.ips(ipv6_primary);
        format!("{a},{b}")
    }
}

/// Invalid lab shapes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// `--nodes` outside 1..=MAX_NODES.
    #[error("--nodes must be between 1 and {MAX_NODES}, got {0}")]
    Nodes(usize),
}

/// The whole lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `node-1` ... `node-N`.
    pub nodes: Vec<Host>,
    /// The outside host.
    pub outside: Host,
    /// Whether the cluster's primary family is IPv6 (its ranges were given IPv6 first).
    pub ipv6_primary: bool,
}

/// Lays out a lab of `nodes` nodes.
pub fn plan(nodes: usize, ipv6_primary: bool) -> Result<Plan, PlanError> {
    if nodes == 0 || nodes > MAX_NODES {
        return Err(PlanError::Nodes(nodes));
    }
    let host = |name: String, last: u8| Host {
        name,
        v4: Ipv4Addr::new(203, 0, 113, last),
        v6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, hex_like(last)),
    };
    Ok(Plan {
        nodes: (1..=nodes)
            .map(|i| host(format!("node-{i}"), 10 + i as u8))
            .collect(),
        outside: host(OUTSIDE.to_string(), 100),
        ipv6_primary,
    })
}

/// `11` → `0x11`: the IPv6 address reads like the IPv4 one (`.11` ↔ `::11`).
fn hex_like(n: u8) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).unwrap_or(u16::from(n))
}

impl Plan {
    /// Every host, nodes first.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.nodes.iter().chain(std::iter::once(&self.outside))
    }

    /// A host by name.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts().find(|h| h.name == name)
    }

    /// The switch port (the veth end in the switch namespace) of the `i`-th host.
    pub fn port_name(i: usize) -> String {
        format!("p{i}")
    }

    /// Locally administered MAC addresses, unique on the segment: `side` 0 for the switch
    /// port, 1 for the host's `eth0`.
    pub fn mac(i: usize, side: u8) -> [u8; 6] {
        let i = u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes();
        [0x02, 0x64, 0x73, side, i[0], i[1]]
    }

    /// What a host's `eth0` carries: both addresses with their prefix lengths on the segment.
    pub fn host_addresses(h: &Host) -> [ipnet::IpNet; 2] {
        [
            ipnet::IpNet::new(h.v4.into(), 24).expect("/24 is valid"),
            ipnet::IpNet::new(h.v6.into(), 64).expect("/64 is valid"),
        ]
    }

    /// A host's default gateways: the outside host, for nodes; none for the outside host
    /// itself, which has no route off the segment.
    pub fn default_gateways(&self, h: &Host) -> Vec<IpAddr> {
        if h.name == OUTSIDE {
            Vec::new()
        } else {
            vec![self.outside.v4.into(), self.outside.v6.into()]
        }
    }
}

/// The ip-masq-agent configuration `up` puts in the ConfigMap `kube-system/ip-masq-agent`:
/// upstream's default list (RFC 1918) plus every `--cluster-cidr` entry, so pod-to-pod traffic
/// keeps its addresses in both families (the default list has no IPv6 range) while traffic to
/// the `outside` host (203.0.113.100, 2001:db8:1::100, outside every entry) is masqueraded.
pub fn masq_config(cluster_cidrs: &[ipnet::IpNet]) -> String {
    let mut out = String::from(
        "# dualstack up: ip-masq-agent's configuration for this lab (both families)\nnonMasqueradeCIDRs:\n",
    );
    for c in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        out += &format!("  - {c}\n");
    }
    for c in cluster_cidrs {
        out += &format!("  - {}\n", c.trunc());
    }
    out += "resyncInterval: 60s\n";
    out
}

/// The outside host's routes to the pod networks, as a cloud's route table: each node's
/// podCIDRs via that node's address of the same family.
pub fn outside_routes(
    plan: &Plan,
    pod_cidrs: &[(String, Vec<ipnet::IpNet>)],
) -> Vec<(ipnet::IpNet, IpAddr)> {
    let mut out = Vec::new();
    for (node, cidrs) in pod_cidrs {
        let Some(h) = plan.nodes.iter().find(|h| &h.name == node) else {
            continue;
        };
        for c in cidrs {
            let via: IpAddr = if c.addr().is_ipv4() {
                h.v4.into()
            } else {
                h.v6.into()
            };
            out.push((*c, via));
        }
    }
    out
}

/// The routes the outside host gets for the LoadBalancer pools, as a BGP speaker peering
/// with every node would install them: each pool (as CIDRs) via every node's segment address
/// of the pool's family (ECMP). Entries that do not parse are skipped (the server refuses
/// them anyway).
pub fn pool_routes(plan: &Plan, pools: &[String]) -> Vec<(ipnet::IpNet, Vec<IpAddr>)> {
    let mut out = Vec::new();
    for p in pools {
        let Ok(r) = dualstack_ipam::lb_pool::PoolRange::parse(p) else {
            continue;
        };
        let nets: Vec<ipnet::IpNet> = match (p.parse::<ipnet::IpNet>(), r.first, r.last) {
            (Ok(net), _, _) => vec![net.trunc()],
            (_, IpAddr::V4(a), IpAddr::V4(b)) => {
                ipnet::Ipv4Subnets::new(a, b, 0).map(Into::into).collect()
            }
            (_, IpAddr::V6(a), IpAddr::V6(b)) => {
                ipnet::Ipv6Subnets::new(a, b, 0).map(Into::into).collect()
            }
            _ => continue,
        };
        let via: Vec<IpAddr> = plan
            .nodes
            .iter()
            .map(|n| {
                if r.first.is_ipv4() {
                    IpAddr::V4(n.v4)
                } else {
                    IpAddr::V6(n.v6)
                }
            })
            .collect();
        out.extend(nets.into_iter().map(|n| (n, via.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_outside_host_routes_each_pool_over_every_node_of_its_family() {
        let p = plan(2, false).unwrap();
        let r = pool_routes(
            &p,
            &[
                "198.51.100.0/24".to_string(),
                "2001:db8:1b::/112".to_string(),
            ],
        );
        let text: Vec<String> = r
            .iter()
            .map(|(n, via)| format!("{n} via {via:?}"))
            .collect();
        assert_eq!(
            text,
            [
                "198.51.100.0/24 via [203.0.113.11, 203.0.113.12]",
                "2001:db8:1b::/112 via [2001:db8:1::11, 2001:db8:1::12]"
            ]
        );
    }

    use super::*;

    #[test]
    fn nodes_and_the_outside_host_get_one_address_per_family_on_the_segment() {
        let p = plan(3, false).unwrap();
        let names: Vec<_> = p.hosts().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["node-1", "node-2", "node-3", "outside"]);
        assert_eq!(
            p.nodes[0].node_ip_flag(false),
            "203.0.113.11,2001:db8:1::11"
        );
        assert_eq!(p.nodes[2].node_ip_flag(true), "2001:db8:1::13,203.0.113.13");
        assert_eq!(p.outside.v4.to_string(), "203.0.113.100");
        assert_eq!(p.outside.v6.to_string(), "2001:db8:1::100");
        let v4: ipnet::Ipv4Net = SEGMENT_V4.parse().unwrap();
        let v6: ipnet::Ipv6Net = SEGMENT_V6.parse().unwrap();
        assert!(p.hosts().all(|h| v4.contains(&h.v4) && v6.contains(&h.v6)));
    }

    #[test]
    fn lab_sizes_are_bounded() {
        assert_eq!(plan(0, false), Err(PlanError::Nodes(0)));
        assert_eq!(plan(90, false), Err(PlanError::Nodes(90)));
        assert_eq!(
            plan(89, false).unwrap().nodes[88].v4.to_string(),
            "203.0.113.99"
        );
    }

    #[test]
    fn nodes_route_everything_off_the_segment_to_the_outside_host_only() {
        let p = plan(2, false).unwrap();
        let gw: Vec<String> = p
            .default_gateways(&p.nodes[0])
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert_eq!(gw, ["203.0.113.100", "2001:db8:1::100"]);
        assert!(p.default_gateways(&p.outside).is_empty());
        let a: Vec<String> = Plan::host_addresses(&p.nodes[1])
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(a, ["203.0.113.12/24", "2001:db8:1::12/64"]);
        let macs: std::collections::BTreeSet<_> = (0..3)
            .flat_map(|i| [Plan::mac(i, 0), Plan::mac(i, 1)])
            .collect();
        assert_eq!(macs.len(), 6, "every MAC on the segment is unique");
        assert!(
            macs.iter().all(|m| m[0] & 0x03 == 0x02),
            "locally administered, unicast"
        );
    }

    #[test]
    fn outside_routes_go_to_each_node_by_family_and_the_masq_config_names_the_cluster_cidrs() {
        let p = plan(2, false).unwrap();
        let routes = outside_routes(
            &p,
            &[
                (
                    "node-2".into(),
                    vec![
                        "10.244.1.0/24".parse().unwrap(),
                        "fc00:0:0:1::/64".parse().unwrap(),
                    ],
                ),
                ("gone".into(), vec!["10.244.9.0/24".parse().unwrap()]),
            ],
        );
        let got: Vec<String> = routes.iter().map(|(c, v)| format!("{c} via {v}")).collect();
        assert_eq!(
            got,
            [
                "10.244.1.0/24 via 203.0.113.12",
                "fc00:0:0:1::/64 via 2001:db8:1::12"
            ]
        );
        let c = masq_config(&[
            "10.244.0.0/16".parse().unwrap(),
            "fc00::/48".parse().unwrap(),
        ]);
        assert!(c.contains("  - fc00::/48\n"), "{c}");
        assert!(!c.contains("203.0.113"), "{c}");
    }
}
