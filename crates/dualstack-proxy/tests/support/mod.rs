//! The test address plan, one place for both families (after kube-proxy's "Conventions for
//! tests using NewFakeProxier"), and builders of Services and EndpointSlices.
//!
//! | what                     | IPv4              | IPv6                  |
//! |--------------------------|-------------------|-----------------------|
//! | cluster CIDR (pods)      | 10.0.0.0/16       | fd00:10::/48          |
//! | pods on this node        | 10.0.1.N          | fd00:10:0:1::N        |
//! | pods on another node     | 10.0.2.N          | fd00:10:0:2::N        |
//! | Service CIDR             | 172.30.0.0/16     | fd00:172:30::/108     |
//! | ClusterIPs               | 172.30.0.N        | fd00:172:30::N        |
//! | this node (`node-a`)     | 192.168.0.2       | fd00:192:168::2       |
//! | another node (`node-b`)  | 192.168.0.3       | fd00:192:168::3       |
//! | LoadBalancer / external  | 203.0.113.N       | 2001:db8:1::N         |
//! | the outside host         | 198.51.100.7      | 2001:db8:2::7         |
#![allow(dead_code)]

use std::net::IpAddr;

use dualstack_ipam::IpFamily;
use dualstack_proxy::{NodeConfig, input::NodePortAddress};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

pub const NODE: &str = "node-a";
pub const OTHER_NODE: &str = "node-b";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The address plan of one family.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub family: IpFamily,
}

impl Plan {
    pub fn v4() -> Plan {
        Plan {
            family: IpFamily::IPv4,
        }
    }
    pub fn v6() -> Plan {
        Plan {
            family: IpFamily::IPv6,
        }
    }
    fn v4ish(&self) -> bool {
        self.family == IpFamily::IPv4
    }
    pub fn fam(&self) -> &'static str {
        self.family.as_str()
    }
    pub fn local_pod(&self, n: u8) -> IpAddr {
        ip(&if self.v4ish() {
            format!("10.0.1.{n}")
        } else {
            format!("fd00:10:0:1::{n}")
        })
    }
    pub fn remote_pod(&self, n: u8) -> IpAddr {
        ip(&if self.v4ish() {
            format!("10.0.2.{n}")
        } else {
            format!("fd00:10:0:2::{n}")
        })
    }
    pub fn cluster_ip(&self, n: u16) -> IpAddr {
        ip(&if self.v4ish() {
            format!("172.30.{}.{}", n / 256, n % 256)
        } else {
            format!("fd00:172:30::{n:x}")
        })
    }
    pub fn node_ip(&self) -> IpAddr {
        ip(if self.v4ish() {
            "192.168.0.2"
        } else {
            "fd00:192:168::2"
        })
    }
    pub fn other_node_ip(&self) -> IpAddr {
        ip(if self.v4ish() {
            "192.168.0.3"
        } else {
            "fd00:192:168::3"
        })
    }
    pub fn lb_ip(&self, n: u8) -> IpAddr {
        ip(&if self.v4ish() {
            format!("203.0.113.{n}")
        } else {
            format!("2001:db8:1::{n}")
        })
    }
    pub fn outside(&self) -> IpAddr {
        ip(if self.v4ish() {
            "198.51.100.7"
        } else {
            "2001:db8:2::7"
        })
    }
    /// An address in the Service CIDR that no Service holds.
    pub fn unallocated_cluster_ip(&self) -> IpAddr {
        ip(if self.v4ish() {
            "172.30.200.200"
        } else {
            "fd00:172:30::ffff"
        })
    }
}

/// Both families, IPv4 first.
pub fn plans() -> [Plan; 2] {
    [Plan::v4(), Plan::v6()]
}

/// The node config of `node-a`, dual-stack.
pub fn node_config() -> NodeConfig {
    let mut c = NodeConfig::new(
        NODE,
        vec![Plan::v4().node_ip(), Plan::v6().node_ip()],
        vec![net("10.0.0.0/16"), net("fd00:10::/48")],
    );
    c.service_cidrs = vec![net("172.30.0.0/16"), net("fd00:172:30::/108")];
    c
}

/// The node config with `--nodeport-addresses 0.0.0.0/0,::/0`.
pub fn node_config_all_nodeports() -> NodeConfig {
    let mut c = node_config();
    c.nodeport_addresses = vec![
        NodePortAddress::Cidr(net("0.0.0.0/0")),
        NodePortAddress::Cidr(net("::/0")),
    ];
    c
}

/// The addresses of `node-a` (both families).
pub fn local_addresses() -> Vec<IpAddr> {
    vec![
        Plan::v4().node_ip(),
        Plan::v6().node_ip(),
        ip("127.0.0.1"),
        ip("::1"),
    ]
}

/// A Service from a JSON spec (merged over `type: ClusterIP`) and optional status.
pub fn service(ns: &str, name: &str, spec: Value, status: Value) -> Service {
    let mut s = json!({"type": "ClusterIP", "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080}]});
    if let (Some(base), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name},
        "spec": s, "status": status,
    }))
    .unwrap()
}

/// A ClusterIP Service, dual-stack or single, with the given ClusterIPs (family order).
pub fn cluster_ip_service(ns: &str, name: &str, ips: &[IpAddr]) -> Service {
    let fams: Vec<&str> = ips.iter().map(|i| IpFamily::of_addr(i).as_str()).collect();
    let policy = if ips.len() == 2 {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    service(
        ns,
        name,
        json!({"clusterIP": ips[0].to_string(), "clusterIPs": ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
               "ipFamilies": fams, "ipFamilyPolicy": policy}),
        json!({}),
    )
}

/// One endpoint of a slice: address, node, ready, serving, terminating.
pub struct Ep {
    pub addr: IpAddr,
    pub node: &'static str,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

pub fn ready(addr: IpAddr, node: &'static str) -> Ep {
    Ep {
        addr,
        node,
        ready: true,
        serving: true,
        terminating: false,
    }
}

pub fn terminating(addr: IpAddr, node: &'static str, serving: bool) -> Ep {
    Ep {
        addr,
        node,
        ready: false,
        serving,
        terminating: true,
    }
}

/// A slice of `family` for Service `ns/svc` with port `p80` → `port` (TCP).
pub fn slice(
    ns: &str,
    svc: &str,
    name: &str,
    family: IpFamily,
    port: u16,
    eps: &[Ep],
) -> EndpointSlice {
    slice_ports(ns, svc, name, family, &[("p80", "TCP", port)], eps)
}

/// A slice with the given (name, protocol, port) ports.
pub fn slice_ports(
    ns: &str,
    svc: &str,
    name: &str,
    family: IpFamily,
    ports: &[(&str, &str, u16)],
    eps: &[Ep],
) -> EndpointSlice {
    let eps: Vec<Value> = eps
        .iter()
        .map(|e| {
            json!({"addresses": [e.addr.to_string()], "nodeName": e.node,
                   "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating}})
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family.as_str(),
        "endpoints": eps, "ports": ports,
    }))
    .unwrap()
}

/// One golden scenario: name, Services, slices.
pub struct Scenario {
    pub name: &'static str,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

fn both_slices(
    ns: &str,
    svc: &str,
    port: u16,
    eps: impl Fn(Plan) -> Vec<Ep>,
) -> Vec<EndpointSlice> {
    plans()
        .iter()
        .map(|p| {
            slice(
                ns,
                svc,
                &format!("{svc}-{}", p.fam().to_lowercase()),
                p.family,
                port,
                &eps(*p),
            )
        })
        .collect()
}

fn dual_ips(n: u16) -> Vec<IpAddr> {
    vec![Plan::v4().cluster_ip(n), Plan::v6().cluster_ip(n)]
}

fn dual_spec(n: u16, extra: Value) -> Value {
    let mut s = json!({"clusterIP": Plan::v4().cluster_ip(n).to_string(),
        "clusterIPs": [Plan::v4().cluster_ip(n).to_string(), Plan::v6().cluster_ip(n).to_string()],
        "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"});
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

/// Every scenario; each uses its own Service names and ClusterIPs, so together they form one
/// world for the packet tracer. The ClusterIP number of each is noted.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        // .1: dual-stack ClusterIP, IPv6 primary (so IPv4 is the secondary family); one local and
        // one remote endpoint per family.
        Scenario {
            name: "clusterip-dual",
            services: vec![cluster_ip_service(
                "ns1",
                "svc1",
                &[Plan::v6().cluster_ip(1), Plan::v4().cluster_ip(1)],
            )],
            slices: both_slices("ns1", "svc1", 8080, |p| {
                vec![
                    ready(p.local_pod(1), NODE),
                    ready(p.remote_pod(1), OTHER_NODE),
                ]
            }),
        },
        // .2: NodePort, Cluster policy, remote endpoint only.
        Scenario {
            name: "nodeport",
            services: vec![service(
                "ns2",
                "svc2",
                dual_spec(
                    2,
                    json!({"type": "NodePort",
                "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30002}]}),
                ),
                json!({}),
            )],
            slices: both_slices("ns2", "svc2", 8080, |p| {
                vec![ready(p.remote_pod(2), OTHER_NODE)]
            }),
        },
        // .3: the seed's `type: LoadBalancer` + `ipFamily: IPv6` (GA form: SingleStack [IPv6]).
        Scenario {
            name: "lb-ipv6-only",
            services: vec![service(
                "ns3",
                "svc3",
                json!({"type": "LoadBalancer",
                "clusterIP": Plan::v6().cluster_ip(3).to_string(), "clusterIPs": [Plan::v6().cluster_ip(3).to_string()],
                "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30003}]}),
                json!({"loadBalancer": {"ingress": [{"ip": Plan::v6().lb_ip(3).to_string()}]}}),
            )],
            slices: vec![slice(
                "ns3",
                "svc3",
                "svc3-ipv6",
                IpFamily::IPv6,
                8080,
                &[ready(Plan::v6().remote_pod(3), OTHER_NODE)],
            )],
        },
        // .4: dual-stack LoadBalancer, externalTrafficPolicy Local, one local and one remote
        // endpoint, health-check node port.
        Scenario {
            name: "lb-dual-local",
            services: vec![service(
                "ns4",
                "svc4",
                dual_spec(
                    4,
                    json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32004,
                "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30004}]}),
                ),
                json!({"loadBalancer": {"ingress": [{"ip": Plan::v4().lb_ip(4).to_string()}, {"ip": Plan::v6().lb_ip(4).to_string()}]}}),
            )],
            slices: both_slices("ns4", "svc4", 8080, |p| {
                vec![
                    ready(p.local_pod(4), NODE),
                    ready(p.remote_pod(4), OTHER_NODE),
                ]
            }),
        },
        // .5: externalIPs of both families.
        Scenario {
            name: "externalips",
            services: vec![service(
                "ns5",
                "svc5",
                dual_spec(
                    5,
                    json!({"externalIPs": [Plan::v4().lb_ip(5).to_string(), Plan::v6().lb_ip(5).to_string()]}),
                ),
                json!({}),
            )],
            slices: both_slices("ns5", "svc5", 8080, |p| {
                vec![ready(p.remote_pod(5), OTHER_NODE)]
            }),
        },
        // .6: ClientIP affinity, 600 s, two endpoints.
        Scenario {
            name: "affinity",
            services: vec![service(
                "ns6",
                "svc6",
                dual_spec(
                    6,
                    json!({"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
                ),
                json!({}),
            )],
            slices: both_slices("ns6", "svc6", 8080, |p| {
                vec![
                    ready(p.remote_pod(6), OTHER_NODE),
                    ready(p.remote_pod(7), OTHER_NODE),
                ]
            }),
        },
        // .7: internalTrafficPolicy Local with only a remote endpoint → dropped; .8 with a
        // local one → only it.
        Scenario {
            name: "internal-local",
            services: vec![
                service(
                    "ns7",
                    "svc7",
                    dual_spec(7, json!({"internalTrafficPolicy": "Local"})),
                    json!({}),
                ),
                service(
                    "ns7",
                    "svc8",
                    dual_spec(8, json!({"internalTrafficPolicy": "Local"})),
                    json!({}),
                ),
            ],
            slices: [
                both_slices("ns7", "svc7", 8080, |p| {
                    vec![ready(p.remote_pod(8), OTHER_NODE)]
                }),
                both_slices("ns7", "svc8", 8080, |p| {
                    vec![
                        ready(p.local_pod(8), NODE),
                        ready(p.remote_pod(9), OTHER_NODE),
                    ]
                }),
            ]
            .concat(),
        },
        // .9: only terminating endpoints: the serving one is used, the non-serving one not.
        Scenario {
            name: "terminating-fallback",
            services: vec![service("ns9", "svc9", dual_spec(9, json!({})), json!({}))],
            slices: both_slices("ns9", "svc9", 8080, |p| {
                vec![
                    terminating(p.remote_pod(10), OTHER_NODE, true),
                    terminating(p.remote_pod(11), OTHER_NODE, false),
                ]
            }),
        },
        // .10: NodePort + externalIP without any endpoint: rejected everywhere.
        Scenario {
            name: "no-endpoints",
            services: vec![service(
                "ns10",
                "svc10",
                dual_spec(
                    10,
                    json!({"type": "NodePort",
                "externalIPs": [Plan::v4().lb_ip(10).to_string(), Plan::v6().lb_ip(10).to_string()],
                "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30010}]}),
                ),
                json!({}),
            )],
            slices: vec![],
        },
        // .11: UDP and SCTP ports on a hostNetwork endpoint (the other node's IP).
        Scenario {
            name: "udp-sctp-hostnetwork",
            services: vec![service(
                "ns11",
                "svc11",
                dual_spec(
                    11,
                    json!({"ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "sctp", "port": 9999, "protocol": "SCTP"}]}),
                ),
                json!({}),
            )],
            slices: plans()
                .iter()
                .map(|p| {
                    slice_ports(
                        "ns11",
                        "svc11",
                        &format!("svc11-{}", p.fam().to_lowercase()),
                        p.family,
                        &[("dns", "UDP", 5353), ("sctp", "SCTP", 9999)],
                        &[ready(p.other_node_ip(), OTHER_NODE)],
                    )
                })
                .collect(),
        },
        // .12: LoadBalancer with loadBalancerSourceRanges (the outside host's /24 only).
        Scenario {
            name: "source-ranges",
            services: vec![service(
                "ns12",
                "svc12",
                dual_spec(
                    12,
                    json!({"type": "LoadBalancer",
                "loadBalancerSourceRanges": ["198.51.100.0/24", " 2001:db8:2::/64"],
                "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30012}]}),
                ),
                json!({"loadBalancer": {"ingress": [{"ip": Plan::v4().lb_ip(12).to_string()}, {"ip": Plan::v6().lb_ip(12).to_string()}]}}),
            )],
            slices: both_slices("ns12", "svc12", 8080, |p| {
                vec![ready(p.remote_pod(12), OTHER_NODE)]
            }),
        },
        // .13: a ClusterIP Service of one family (IPv4 SingleStack): nothing in the ip6 table.
        Scenario {
            name: "single-stack-ipv4",
            services: vec![cluster_ip_service(
                "ns13",
                "svc13",
                &[Plan::v4().cluster_ip(13)],
            )],
            slices: vec![slice(
                "ns13",
                "svc13",
                "svc13-ipv4",
                IpFamily::IPv4,
                8080,
                &[ready(Plan::v4().remote_pod(13), OTHER_NODE)],
            )],
        },
    ]
}

/// All scenarios together.
pub fn world() -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut svcs = Vec::new();
    let mut slices = Vec::new();
    for s in scenarios() {
        svcs.extend(s.services);
        slices.extend(s.slices);
    }
    let _ = dual_ips(0);
    (svcs, slices)
}
