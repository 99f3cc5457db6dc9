//! What the proxier reads: Services and EndpointSlices (from `k8s_openapi` types, turned once
//! into small family-agnostic structs) and the node facts of the flags.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use dualstack_ipam::IpFamily;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::ProxyError;
use crate::family::{is_of, net_is_of};
use crate::nft::Protocol;

/// The label naming the proxy that should handle a Service; Services with it are not ours.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The default session-affinity timeout (3 hours), as upstream.
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10800;

/// A Service's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ServiceKey {
    /// A key.
    pub fn new(namespace: &str, name: &str) -> Self {
        ServiceKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service: upstream's `ServicePortName` (`ns/name:port`) plus its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    /// The Service.
    pub service: ServiceKey,
    /// The port's name ("" for an unnamed single port).
    pub port_name: String,
    /// The protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_name.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port_name)
        }
    }
}

/// One port of a Service, as the proxier needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    /// The port's name.
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
}

/// A Service, family-agnostic: what every per-family proxier reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `(family, clusterIP)` pairs: `clusterIPs[i]` of `ipFamilies[i]`.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs` (both families; unparsable entries are skipped).
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` (both families).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` (whitespace trimmed, as upstream).
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// The ports.
    pub ports: Vec<PortInfo>,
    /// `sessionAffinity: ClientIP`: the timeout in seconds.
    pub affinity_timeout_secs: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (`Cluster` otherwise).
    pub external_local: bool,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<u16>,
}

impl ServiceInfo {
    /// Reads a Service. `None` when no proxy should handle it: headless (`clusterIP: None`),
    /// ExternalName or without a ClusterIP, or labelled with another proxy's name.
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let meta = &svc.metadata;
        if meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
        {
            return None;
        }
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            return None;
        }
        let key = ServiceKey::new(
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref()?,
        );
        let mut cluster_ips: Vec<IpAddr> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().filter_map(|s| s.parse().ok()).collect(),
            _ => spec
                .cluster_ip
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        };
        // `ipFamilies[i]` names the family of `clusterIPs[i]`; a list disagreeing with it (never
        // valid in the API) keeps only the entries whose family matches.
        if let Some(fams) = &spec.ip_families {
            let mut i = 0;
            cluster_ips.retain(|ip| {
                let ok = fams
                    .get(i)
                    .and_then(|f| IpFamily::parse(f))
                    .is_none_or(|f| is_of(f, ip));
                i += 1;
                ok
            });
        }
        if cluster_ips.is_empty() {
            return None;
        }
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let load_balancer_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let load_balancer_source_ranges = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: Protocol::from_k8s(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok()?,
                    node_port: p
                        .node_port
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| *n != 0),
                })
            })
            .collect();
        let affinity_timeout_secs =
            (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .and_then(|t| u32::try_from(t).ok())
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECS)
            });
        Some(ServiceInfo {
            key,
            cluster_ips,
            external_ips,
            load_balancer_ips,
            load_balancer_source_ranges,
            ports,
            affinity_timeout_secs,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec
                .health_check_node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0),
        })
    }

    /// The ClusterIP of `family` (upstream's `GetClusterIPByFamily`).
    pub fn cluster_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.cluster_ips
            .iter()
            .copied()
            .find(|ip| is_of(family, ip))
    }

    /// The external IPs of `family`.
    pub fn external_ips(&self, family: IpFamily) -> Vec<IpAddr> {
        self.external_ips
            .iter()
            .copied()
            .filter(|ip| is_of(family, ip))
            .collect()
    }

    /// The LoadBalancer ingress IPs of `family`.
    pub fn load_balancer_ips(&self, family: IpFamily) -> Vec<IpAddr> {
        self.load_balancer_ips
            .iter()
            .copied()
            .filter(|ip| is_of(family, ip))
            .collect()
    }

    /// The source ranges of `family`.
    pub fn source_ranges(&self, family: IpFamily) -> Vec<IpNet> {
        self.load_balancer_source_ranges
            .iter()
            .copied()
            .filter(|n| net_is_of(family, n))
            .collect()
    }
}

/// One endpoint of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The first address (the only one the proxy uses, as upstream).
    pub addr: IpAddr,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `conditions.ready` (absent means true).
    pub ready: bool,
    /// `conditions.serving` (absent means true).
    pub serving: bool,
    /// `conditions.terminating` (absent means false).
    pub terminating: bool,
}

/// One port of a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    /// The name ("" when absent).
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The port on the endpoints.
    pub port: u16,
}

/// An EndpointSlice, as the proxier needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The slice's own name.
    pub name: String,
    /// The Service it belongs to.
    pub service: ServiceKey,
    /// `addressType`.
    pub family: IpFamily,
    /// The ports.
    pub ports: Vec<SlicePort>,
    /// The endpoints.
    pub endpoints: Vec<SliceEndpoint>,
}

impl SliceInfo {
    /// Reads a slice. `Ok(None)` for a slice without the service-name label; an `addressType`
    /// other than IPv4/IPv6 (FQDN) is an error, as upstream's meta proxier says.
    pub fn from_slice(slice: &EndpointSlice) -> Result<Option<SliceInfo>, ProxyError> {
        let family = match slice.address_type.as_str() {
            "IPv4" => IpFamily::IPv4,
            "IPv6" => IpFamily::IPv6,
            other => return Err(ProxyError::UnsupportedAddressType(other.to_string())),
        };
        let meta = &slice.metadata;
        let Some(svc_name) = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            return Ok(None);
        };
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: Protocol::from_k8s(p.protocol.as_deref())?,
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                let addr: IpAddr = e.addresses.first()?.parse().ok()?;
                if !is_of(family, &addr) {
                    return None;
                }
                let c = e.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                Some(SliceEndpoint {
                    addr,
                    node_name: e.node_name.clone(),
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(true),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                })
            })
            .collect();
        Ok(Some(SliceInfo {
            name: meta.name.clone().unwrap_or_default(),
            service: ServiceKey::new(namespace, svc_name),
            family,
            ports,
            endpoints,
        }))
    }
}

/// One entry of `--nodeport-addresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePortAddress {
    /// A CIDR: the node's addresses inside it.
    Cidr(IpNet),
    /// `primary`: the node IP of each family.
    Primary,
}

/// The node facts and flags the rules depend on (both families).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// `--hostname-override` / the Node's name: endpoints on it are local.
    pub node_name: String,
    /// The node IPs (InternalIP then ExternalIP), per family the first is primary.
    pub node_ips: Vec<IpAddr>,
    /// All addresses of the node's interfaces (for `--nodeport-addresses` CIDRs).
    pub local_addresses: Vec<IpAddr>,
    /// `--cluster-cidr`: the first of a family is its local-traffic detector.
    pub cluster_cidrs: Vec<IpNet>,
    /// The Service CIDRs (`--service-cluster-ip-range` or ServiceCIDR objects): unallocated
    /// addresses in them are dropped.
    pub service_cidrs: Vec<IpNet>,
    /// `--nodeport-addresses` (empty: the primary node IP of each family, nftables' default).
    pub nodeport_addresses: Vec<NodePortAddress>,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit` (default 14: mark 0x4000).
    pub masquerade_bit: u8,
}

impl NodeConfig {
    /// A config with upstream's defaults for everything but the node facts.
    pub fn new(node_name: &str, node_ips: Vec<IpAddr>, cluster_cidrs: Vec<IpNet>) -> Self {
        NodeConfig {
            node_name: node_name.to_string(),
            local_addresses: node_ips.clone(),
            node_ips,
            cluster_cidrs,
            service_cidrs: Vec::new(),
            nodeport_addresses: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
        }
    }

    /// Resolves the facts of one family.
    pub fn for_family(&self, family: IpFamily) -> FamilyConfig {
        let node_ips: Vec<IpAddr> = self
            .node_ips
            .iter()
            .copied()
            .filter(|ip| is_of(family, ip))
            .collect();
        let nodeports = if self.nodeport_addresses.is_empty() {
            NodePortMatch::Addrs(node_ips.first().copied().into_iter().collect())
        } else {
            let mut addrs: Vec<IpAddr> = Vec::new();
            let mut all = false;
            for entry in &self.nodeport_addresses {
                match entry {
                    NodePortAddress::Primary => addrs.extend(node_ips.first().copied()),
                    NodePortAddress::Cidr(net) if net_is_of(family, net) => {
                        if net.prefix_len() == 0 {
                            all = true;
                        }
                        addrs.extend(
                            self.local_addresses
                                .iter()
                                .copied()
                                .filter(|a| net.contains(a)),
                        );
                    }
                    NodePortAddress::Cidr(_) => {}
                }
            }
            addrs.sort();
            addrs.dedup();
            if all {
                NodePortMatch::AllLocal
            } else {
                NodePortMatch::Addrs(addrs)
            }
        };
        FamilyConfig {
            family,
            node_name: self.node_name.clone(),
            node_ips,
            local_detector: self
                .cluster_cidrs
                .iter()
                .copied()
                .find(|n| net_is_of(family, n)),
            service_cidrs: self
                .service_cidrs
                .iter()
                .copied()
                .filter(|n| net_is_of(family, n))
                .collect(),
            nodeports,
            masquerade_all: self.masquerade_all,
            mark: 1u32 << self.masquerade_bit.min(31),
        }
    }
}

/// Which destinations accept NodePort traffic in one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortMatch {
    /// The addresses in the `nodeport-ips` set.
    Addrs(Vec<IpAddr>),
    /// Every local address but loopback (`--nodeport-addresses 0.0.0.0/0`).
    AllLocal,
}

/// The node facts of one family, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyConfig {
    /// The family.
    pub family: IpFamily,
    /// The node's name.
    pub node_name: String,
    /// The node IPs of this family, primary first.
    pub node_ips: Vec<IpAddr>,
    /// The cluster CIDR that marks pod traffic; `None` is upstream's no-op detector.
    pub local_detector: Option<IpNet>,
    /// The Service CIDRs of this family.
    pub service_cidrs: Vec<IpNet>,
    /// The NodePort destinations.
    pub nodeports: NodePortMatch,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// The masquerade mark bit (`0x4000`).
    pub mark: u32,
}

/// Slices of one Service, by slice name.
pub type SlicesOf = BTreeMap<String, SliceInfo>;
