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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::ServiceKey;

    fn ep(last: u8, local: bool, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addr: IpAddr::from([10, 0, 0, last]),
            port: 80,
            local,
            ready,
            serving,
            terminating,
        }
    }

    fn svc(internal_local: bool, external_local: bool) -> ServiceInfo {
        ServiceInfo {
            key: ServiceKey::new("ns", "svc"),
            cluster_ips: vec![IpAddr::from([172, 30, 0, 1])],
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            ports: vec![],
            affinity_timeout_secs: None,
            internal_local,
            external_local,
            health_check_node_port: None,
        }
    }

    fn last(eps: &[Endpoint]) -> Vec<u8> {
        eps.iter()
            .map(|e| match e.addr {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn categorize_follows_upstream_for_every_policy() {
        let ready_local = ep(1, true, true, true, false);
        let ready_remote = ep(2, false, true, true, false);
        let term_serving_local = ep(3, true, false, true, true);
        let term_serving_remote = ep(4, false, false, true, true);
        let term_not_serving = ep(5, false, false, false, true);
        let not_ready = ep(6, true, false, false, false);
        // (what, endpoints, internal local, external local, externally accessible,
        //  cluster, local, all reachable, has any)
        type Row = (
            &'static str,
            Vec<Endpoint>,
            bool,
            bool,
            bool,
            Vec<u8>,
            Vec<u8>,
            Vec<u8>,
            bool,
        );
        let rows: Vec<Row> = vec![
            (
                "cluster policy uses ready endpoints",
                vec![
                    ready_local.clone(),
                    ready_remote.clone(),
                    term_serving_remote.clone(),
                    not_ready.clone(),
                ],
                false,
                false,
                false,
                vec![1, 2],
                vec![],
                vec![1, 2],
                true,
            ),
            (
                "no ready endpoint: serving terminating ones",
                vec![
                    term_serving_local.clone(),
                    term_serving_remote.clone(),
                    term_not_serving.clone(),
                ],
                false,
                false,
                false,
                vec![3, 4],
                vec![],
                vec![3, 4],
                true,
            ),
            (
                "nothing serving: no endpoints",
                vec![term_not_serving.clone(), not_ready.clone()],
                false,
                false,
                false,
                vec![],
                vec![],
                vec![],
                false,
            ),
            (
                "internal local: local ready only",
                vec![ready_local.clone(), ready_remote.clone()],
                true,
                false,
                false,
                vec![],
                vec![1],
                vec![1],
                true,
            ),
            (
                "internal local without local endpoints: has endpoints, none local",
                vec![ready_remote.clone()],
                true,
                false,
                false,
                vec![],
                vec![],
                vec![],
                true,
            ),
            (
                "internal local: local terminating fallback",
                vec![term_serving_local.clone(), ready_remote.clone()],
                true,
                false,
                false,
                vec![],
                vec![3],
                vec![3],
                true,
            ),
            (
                "external local keeps cluster endpoints for short-circuits",
                vec![ready_local.clone(), ready_remote.clone()],
                false,
                true,
                true,
                vec![1, 2],
                vec![1],
                vec![1, 2],
                true,
            ),
            (
                "external local on a port nobody reaches from outside is cluster",
                vec![ready_local.clone(), ready_remote.clone()],
                false,
                true,
                false,
                vec![1, 2],
                vec![],
                vec![1, 2],
                true,
            ),
        ];
        for (what, eps, il, el, ext, cluster, local, all, any) in rows {
            let c = categorize(&eps, &svc(il, el), ext);
            assert_eq!(last(&c.cluster), cluster, "{what}: cluster");
            assert_eq!(last(&c.local), local, "{what}: local");
            assert_eq!(last(&c.all_reachable), all, "{what}: all");
            assert_eq!(c.has_any, any, "{what}: has_any");
        }
    }

    #[test]
    fn duplicate_endpoints_across_slices_keep_the_ready_copy() {
        use crate::input::{SliceEndpoint, SliceInfo, SlicePort};
        use crate::nft::Protocol;
        use dualstack_ipam::IpFamily;
        let mk = |name: &str, ready: bool| SliceInfo {
            name: name.into(),
            service: ServiceKey::new("ns", "svc"),
            family: IpFamily::IPv4,
            ports: vec![SlicePort {
                name: "p".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            endpoints: vec![SliceEndpoint {
                addr: IpAddr::from([10, 0, 0, 9]),
                node_name: None,
                ready,
                serving: ready,
                terminating: false,
            }],
        };
        let slices: SlicesOf = [
            ("a".to_string(), mk("a", false)),
            ("b".to_string(), mk("b", true)),
        ]
        .into();
        let port = PortInfo {
            name: "p".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        };
        let eps = endpoints_for_port(&port, &slices, "node");
        assert_eq!(eps.len(), 1);
        assert!(eps[0].ready);
    }
}
