//! Which endpoints a Service port uses: the endpoints of its slices for that port, then
//! upstream's `CategorizeEndpoints` (pkg/proxy/topology.go) without topology hints.

use std::net::IpAddr;

use crate::input::{PortInfo, ServiceInfo, SlicesOf};

/// One endpoint of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// The address.
    pub addr: IpAddr,
    /// The port on the endpoint.
    pub port: u16,
    /// On this node.
    pub local: bool,
    /// Ready.
    pub ready: bool,
    /// Serving.
    pub serving: bool,
    /// Terminating.
    pub terminating: bool,
}

/// The endpoints of `port` from the slices of its Service, deduplicated by address and port (a
/// ready copy wins), sorted by address then port.
pub fn endpoints_for_port(port: &PortInfo, slices: &SlicesOf, node_name: &str) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices.values() {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for e in &slice.endpoints {
            out.push(Endpoint {
                addr: e.addr,
                port: sp.port,
                local: e.node_name.as_deref() == Some(node_name),
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
            });
        }
    }
    // Ready copies sort first among equal (addr, port), so dedup keeps them.
    out.sort_by_key(|e| (e.addr, e.port, !e.ready));
    out.dedup_by(|b, a| a.addr == b.addr && a.port == b.port);
    out
}

/// The endpoints chosen for each traffic policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For `Cluster` policy: the ready endpoints, else the serving terminating ones.
    pub cluster: Vec<Endpoint>,
    /// For `Local` policy: the local ready endpoints, else the local serving terminating ones.
    pub local: Vec<Endpoint>,
    /// The union of both: every endpoint chain to write.
    pub all_reachable: Vec<Endpoint>,
    /// Whether any endpoint anywhere can serve (upstream's `hasAnyEndpoints`).
    pub has_any: bool,
}

/// Whether the port can be reached from outside (NodePort, externalIPs, LoadBalancer IPs) in
/// this family.
pub fn externally_accessible(port: &PortInfo, has_external_ips: bool, has_lb_ips: bool) -> bool {
    port.node_port.is_some() || has_external_ips || has_lb_ips
}

/// Upstream's `CategorizeEndpoints`, without topology hints.
pub fn categorize(
    endpoints: &[Endpoint],
    svc: &ServiceInfo,
    externally_accessible: bool,
) -> Categorized {
    let external_local = externally_accessible && svc.external_local;
    // Even with `externalTrafficPolicy: Local`, cluster endpoints are needed for the
    // short-circuit of pod and node traffic to external destinations.
    let uses_cluster = !svc.internal_local || externally_accessible;
    let uses_local = svc.internal_local || external_local;
    let mut c = Categorized::default();
    if uses_cluster {
        c.cluster = endpoints.iter().filter(|e| e.ready).cloned().collect();
        if c.cluster.is_empty() {
            c.cluster = endpoints
                .iter()
                .filter(|e| e.serving && e.terminating)
                .cloned()
                .collect();
        }
        c.has_any = !c.cluster.is_empty();
    }
    if !uses_local {
        c.all_reachable = c.cluster.clone();
        return c;
    }
    let mut local_ready = false;
    let mut local_terminating = false;
    for e in endpoints {
        if e.ready {
            c.has_any = true;
            local_ready |= e.local;
        } else if e.serving && e.terminating {
            c.has_any = true;
            local_terminating |= e.local;
        }
    }
    if local_ready {
        c.local = endpoints
            .iter()
            .filter(|e| e.local && e.ready)
            .cloned()
            .collect();
    } else if local_terminating {
        c.local = endpoints
            .iter()
            .filter(|e| e.local && e.serving && e.terminating)
            .cloned()
            .collect();
    }
    if !uses_cluster {
        c.all_reachable = c.local.clone();
        return c;
    }
    let mut all = c.cluster.clone();
    for e in &c.local {
        if !all.contains(e) {
            all.push(e.clone());
        }
    }
    all.sort();
    c.all_reachable = all;
    c
}
