//! Node dual-stack rules: `spec.podCIDRs` (`ValidateNode`, `ValidateNodeUpdate`, v1 conversion),
//! and the routes between nodes' pod networks ([`pod_cidr_routes`]).

use dualstack_apimachinery::field::{ErrorList, FieldError, Path};
use dualstack_ipam::IpFamily;
use k8s_openapi::api::core::v1::Node;

use crate::ip::{is_dual_stack_or_single, parse_cidr, validate_cidr};

/// v1 conversion rule: `podCIDR` wins when it disagrees with `podCIDRs[0]`; a lone `podCIDR`
/// becomes `podCIDRs = [podCIDR]`; afterwards `podCIDR == podCIDRs[0]`.
pub fn normalize_pod_cidrs(node: &mut Node) {
    let Some(spec) = node.spec.as_mut() else {
        return;
    };
    let single = spec.pod_cidr.clone().filter(|s| !s.is_empty());
    let plural = spec.pod_cidrs.clone().unwrap_or_default();
    match (single, plural.first()) {
        (Some(s), Some(first)) if *first != s => spec.pod_cidrs = Some(vec![s]),
        (Some(s), None) => spec.pod_cidrs = Some(vec![s]),
        _ => {}
    }
    spec.pod_cidr = spec.pod_cidrs.as_ref().and_then(|p| p.first().cloned());
}

/// `spec.podCIDRs` validation (create and update).
pub fn validate_pod_cidrs(node: &Node) -> ErrorList {
    let path = Path::new("spec").child("podCIDRs");
    let mut errs = Vec::new();
    let cidrs = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidrs.clone())
        .unwrap_or_default();
    for (i, c) in cidrs.iter().enumerate() {
        errs.extend(validate_cidr(&path.index(i), c));
    }
    if !errs.is_empty() || cidrs.len() < 2 {
        return errs;
    }
    let nets: Vec<_> = cidrs.iter().filter_map(|c| parse_cidr(c)).collect();
    if !is_dual_stack_or_single(&nets, IpFamily::of_net) {
        errs.push(FieldError::invalid(
            &path,
            dualstack_apimachinery::field::Value::StrList("string", cidrs.clone()),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    for (i, c) in cidrs.iter().enumerate() {
        if cidrs[..i].contains(c) {
            errs.push(FieldError::duplicate(&path.index(i), c.as_str()));
        }
    }
    errs
}

/// `ValidateNodeUpdate`: once set, podCIDRs may not change.
pub fn validate_pod_cidrs_update(new: &Node, old: &Node) -> ErrorList {
    let get = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_cidrs.clone())
            .unwrap_or_default()
    };
    let (n, o) = (get(new), get(old));
    if !o.is_empty() && n != o {
        return vec![FieldError::forbidden(
            &Path::new("spec").child("podCIDRs"),
            "node updates may not change podCIDR except from \"\" to valid",
        )];
    }
    Vec::new()
}

/// One route to another node's pods: `dst` (a podCIDR) via `gateway` (that node's InternalIP
/// of the same family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodCidrRoute {
    /// The other node's podCIDR.
    pub dst: ipnet::IpNet,
    /// The other node's InternalIP of the podCIDR's family.
    pub gateway: std::net::IpAddr,
}

/// The routes node `me` needs so that every pod reaches every other node's pods with its own
/// address (no NAT): each other node's podCIDRs, each via that node's first InternalIP of the
/// same family. A podCIDR whose family the node has no InternalIP of is skipped (there is no
/// gateway to send it to); unparsable entries are skipped too. Sorted, so equal inputs give
/// equal plans.
pub fn pod_cidr_routes(me: &str, nodes: &[Node]) -> Vec<PodCidrRoute> {
    let mut out = Vec::new();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(me) || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let internal: Vec<std::net::IpAddr> = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let cidrs = n.spec.as_ref().and_then(|s| s.pod_cidrs.as_ref());
        for c in cidrs.into_iter().flatten() {
            let Ok(dst) = c.parse::<ipnet::IpNet>() else {
                continue;
            };
            let dst = dst.trunc();
            let family = IpFamily::of_addr(&dst.addr());
            if let Some(gateway) = internal.iter().find(|ip| IpFamily::of_addr(ip) == family) {
                out.push(PodCidrRoute {
                    dst,
                    gateway: *gateway,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node(single: Option<&str>, plural: &[&str]) -> Node {
        Node {
            spec: Some(NodeSpec {
                pod_cidr: single.map(str::to_string),
                pod_cidrs: (!plural.is_empty())
                    .then(|| plural.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn singular_pod_cidr_wins_and_stays_equal_to_the_first_plural() {
        let mut n = node(Some("10.244.1.0/24"), &["10.244.0.0/24", "fd00::/64"]);
        normalize_pod_cidrs(&mut n);
        assert_eq!(
            n.spec.as_ref().unwrap().pod_cidrs,
            Some(vec!["10.244.1.0/24".to_string()])
        );
        let mut n = node(None, &["fd00::/64", "10.244.0.0/24"]);
        normalize_pod_cidrs(&mut n);
        assert_eq!(
            n.spec.as_ref().unwrap().pod_cidr.as_deref(),
            Some("fd00::/64")
        );
    }

    #[test]
    fn pod_cidrs_must_be_one_per_family() {
        let ok = |p: &[&str]| validate_pod_cidrs(&node(None, p)).is_empty();
        assert!(ok(&["10.244.0.0/24", "fd00::/64"]));
        assert!(ok(&["fd00::/64", "10.244.0.0/24"]));
        let texts = |p: &[&str]| {
            validate_pod_cidrs(&node(None, p))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts(&["10.244.0.0/24", "10.245.0.0/24"]),
            vec![
                r#"spec.podCIDRs: Invalid value: []string{"10.244.0.0/24", "10.245.0.0/24"}: may specify no more than one CIDR for each IP family"#
            ]
        );
        assert_eq!(
            texts(&["nope"]),
            vec![
                r#"spec.podCIDRs[0]: Invalid value: "nope": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#
            ]
        );
    }

    #[test]
    fn pod_cidrs_are_immutable_once_set() {
        let empty = node(None, &[]);
        let set = node(None, &["10.244.0.0/24", "fd00::/64"]);
        assert!(validate_pod_cidrs_update(&set, &empty).is_empty());
        let changed = node(None, &["10.244.0.0/24"]);
        assert_eq!(
            validate_pod_cidrs_update(&changed, &set)[0].to_string(),
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        );
    }

    fn routed_node(name: &str, cidrs: &[&str], ips: &[&str]) -> Node {
        use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
        Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidrs: Some(cidrs.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|a| NodeAddress {
                            type_: "InternalIP".into(),
                            address: a.to_string(),
                        })
                        .chain(std::iter::once(NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        }))
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn every_other_nodes_pod_cidrs_go_via_its_internal_ip_of_the_same_family() {
        let nodes = [
            routed_node(
                "a",
                &["10.244.0.0/24", "fc00::/64"],
                &["203.0.113.11", "2001:db8:1::11"],
            ),
            // IPv6-primary ordering on the other node makes no difference.
            routed_node(
                "b",
                &["fc00:0:0:1::/64", "10.244.1.0/24"],
                &["2001:db8:1::12", "203.0.113.12"],
            ),
            // A single-stack node: only its IPv4 podCIDR is reachable.
            routed_node(
                "c",
                &["10.244.2.0/24", "fc00:0:0:2::/64"],
                &["203.0.113.13"],
            ),
            // No podCIDRs yet: nothing to route.
            routed_node("d", &[], &["203.0.113.14", "2001:db8:1::14"]),
        ];
        let got: Vec<String> = pod_cidr_routes("a", &nodes)
            .iter()
            .map(|r| format!("{} via {}", r.dst, r.gateway))
            .collect();
        assert_eq!(
            got,
            [
                "10.244.1.0/24 via 203.0.113.12",
                "10.244.2.0/24 via 203.0.113.13",
                "fc00:0:0:1::/64 via 2001:db8:1::12",
            ]
        );
        assert!(pod_cidr_routes("a", &nodes[..1]).is_empty());
    }
}
