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

    /// The `ip -batch` script run in the switch namespace: the bridge, and one veth per host
    /// whose far end (`eth0`) is moved into the host's namespace file.
    pub fn switch_script(&self, netns_path: impl Fn(&str) -> String) -> String {
        let mut s = String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
        for (i, h) in self.hosts().enumerate() {
            let port = format!("p{i}");
            s += &format!(
                "link add {port} type veth peer name eth0 netns {}\nlink set {port} master br0\nlink set {port} up\n",
                netns_path(&h.name)
            );
        }
        s
    }

    /// The `ip -batch` script run in a host's namespace once its `eth0` is there.
    pub fn host_script(&self, h: &Host) -> String {
        let mut s = format!(
            "link set lo up\nlink set eth0 up\naddress add {}/24 dev eth0\naddress add {}/64 dev eth0 nodad\n",
            h.v4, h.v6
        );
        if h.name != OUTSIDE {
            s += &format!(
                "route add default via {} dev eth0\nroute add default via {} dev eth0\n",
                self.outside.v4, self.outside.v6
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
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
        let p = plan(1, false).unwrap();
        let node = p.host_script(&p.nodes[0]);
        assert!(node.contains("route add default via 203.0.113.100 dev eth0"));
        assert!(node.contains("route add default via 2001:db8:1::100 dev eth0"));
        assert!(node.contains("2001:db8:1::11/64 dev eth0 nodad"));
        assert!(!p.host_script(&p.outside).contains("route"));
        let sw = p.switch_script(|n| format!("/lab/netns/{n}"));
        assert!(sw.contains("link add p1 type veth peer name eth0 netns /lab/netns/outside"));
    }
}
