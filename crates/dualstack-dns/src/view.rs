//! The in-memory view of the cluster that DNS answers come from: Services and the ready
//! endpoints of their EndpointSlices, indexed by name and by address. Pure: built from API
//! objects, no I/O. The watch loop (`watch.rs`) rebuilds it when objects change.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label an EndpointSlice carries with its Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The deprecated annotation that makes not-ready endpoints count as ready (spec §2.1).
pub const TOLERATE_UNREADY_ANNOTATION: &str =
    "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// What a Service's own name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A Service with ClusterIPs (one per family, in `clusterIPs` order).
    ClusterIp(Vec<IpAddr>),
    /// A headless Service (`clusterIP: None`): its ready endpoints.
    Headless,
    /// An `ExternalName` Service: a CNAME to this name.
    ExternalName(String),
}

/// A named port of a Service (unnamed ports have no SRV record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    /// The port's name, lowercased.
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// One ready endpoint of a Service: its hostname (the `hostname` field, or the dashed address
/// as the system-assigned identifier) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's hostname, lowercased.
    pub hostname: String,
    /// Its addresses (one family per slice; a dual-stack pod with a hostname appears once per
    /// family under the same hostname).
    pub addresses: Vec<IpAddr>,
}

/// One Service as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// ClusterIPs, headless, or ExternalName.
    pub kind: ServiceKind,
    /// Named ports.
    pub ports: Vec<NamedPort>,
    /// Ready endpoints (only kept for headless Services), sorted by hostname.
    pub endpoints: Vec<Endpoint>,
}

impl ServiceEntry {
    /// The ready addresses of all endpoints, deduplicated, in endpoint order.
    pub fn endpoint_addresses(&self) -> Vec<IpAddr> {
        let mut seen = BTreeSet::new();
        self.endpoints
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .filter(|a| seen.insert(*a))
            .collect()
    }
}

/// The cluster as DNS sees it. Keys are lowercased (comparisons are case-insensitive, spec §2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// `(namespace, name)` → Service.
    pub services: BTreeMap<(String, String), ServiceEntry>,
    /// Namespaces that have at least one Service (their `<ns>.svc.<zone>` exists).
    pub namespaces: BTreeSet<String>,
    /// Address → the names that own it, for PTR: `(namespace, service, Some(hostname))` for a
    /// headless endpoint, `(namespace, service, None)` for a ClusterIP.
    pub reverse: HashMap<IpAddr, Vec<(String, String, Option<String>)>>,
}

impl ClusterView {
    /// Builds the view from Services and EndpointSlices (slices are matched to their Service by
    /// namespace and the `kubernetes.io/service-name` label).
    pub fn build<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> ClusterView {
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service
                    .entry((ns.to_ascii_lowercase(), svc.to_ascii_lowercase()))
                    .or_default()
                    .push(s);
            }
        }
        let mut view = ClusterView::default();
        for svc in services {
            let ns = svc
                .metadata
                .namespace
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let name = svc
                .metadata
                .name
                .clone()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if ns.is_empty() || name.is_empty() {
                continue;
            }
            let key = (ns, name);
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            view.namespaces.insert(key.0.clone());
            view.services
                .insert(key.clone(), service_entry(svc, slices));
        }
        for ((ns, name), entry) in &view.services {
            match &entry.kind {
                ServiceKind::ClusterIp(ips) => {
                    for ip in ips {
                        view.reverse
                            .entry(*ip)
                            .or_default()
                            .push((ns.clone(), name.clone(), None));
                    }
                }
                ServiceKind::Headless => {
                    for e in &entry.endpoints {
                        for ip in &e.addresses {
                            view.reverse.entry(*ip).or_default().push((
                                ns.clone(),
                                name.clone(),
                                Some(e.hostname.clone()),
                            ));
                        }
                    }
                }
                ServiceKind::ExternalName(_) => {}
            }
        }
        view
    }
}

fn service_entry(svc: &Service, slices: &[&EndpointSlice]) -> ServiceEntry {
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else {
        let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.clone());
        }
        if ips.iter().any(|ip| ip == "None") {
            ServiceKind::Headless
        } else {
            ServiceKind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
        }
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let name = p.name.as_deref().filter(|n| !n.is_empty())?;
            Some(NamedPort {
                name: name.to_ascii_lowercase(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let tolerate_unready = spec.publish_not_ready_addresses == Some(true)
        || svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOLERATE_UNREADY_ANNOTATION))
            .is_some_and(|v| v == "true");
    let endpoints = if kind == ServiceKind::Headless {
        ready_endpoints(slices, tolerate_unready)
    } else {
        Vec::new()
    };
    ServiceEntry {
        kind,
        ports,
        endpoints,
    }
}

/// The ready endpoints of the slices, grouped by hostname (a dual-stack pod's two slices'
/// endpoints with the same hostname become one endpoint with both addresses).
fn ready_endpoints(slices: &[&EndpointSlice], tolerate_unready: bool) -> Vec<Endpoint> {
    let mut by_host: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        for ep in &slice.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !tolerate_unready {
                continue;
            }
            for a in &ep.addresses {
                let Ok(ip) = a.parse::<IpAddr>() else {
                    continue;
                };
                let host = ep
                    .hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| dashed(ip));
                let addrs = by_host.entry(host).or_default();
                if !addrs.contains(&ip) {
                    addrs.push(ip);
                }
            }
        }
    }
    by_host
        .into_iter()
        .map(|(hostname, mut addresses)| {
            addresses.sort();
            Endpoint {
                hostname,
                addresses,
            }
        })
        .collect()
}

/// An address as one DNS label: `10-244-1-5`, `fc00-0-1--5` (`.` and `:` become `-`), the form
/// of pod records (spec §2.6) and of an endpoint without a hostname (as CoreDNS names them).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed`]: `10-244-1-5` → 10.244.1.5, `fc00--5` → fc00::5.
pub fn undashed(label: &str) -> Option<IpAddr> {
    let v4 = label.replace('-', ".");
    if let Ok(ip) = v4.parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(ip));
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}
