//! The legacy `Endpoints` object of a Service (upstream's Endpoints controller,
//! `kubernetes/kubernetes:pkg/controller/endpoint/endpoints_controller.go`): one family only,
//! the Service's primary (`ipFamilies[0]`); pods without an IP of that family are skipped.
//!
//! * Terminating pods are left out unless `publishNotReadyAddresses`.
//! * Ready pods (or all, with `publishNotReadyAddresses`) go to `addresses`, others to
//!   `notReadyAddresses`.
//! * Subsets are repacked canonically: addresses grouped by identical port sets, sorted by IP.
//! * At most 1000 addresses; beyond that the object is truncated and annotated
//!   `endpoints.kubernetes.io/over-capacity: truncated`.
//! * Labels: the Service's, `service.kubernetes.io/headless` for headless Services, and
//!   `endpointslice.kubernetes.io/skip-mirror: "true"` (the mirroring controller skips it).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::endpointslice::LABEL_HEADLESS;
use super::pods;
use super::trigger::{ANNOTATION_LAST_CHANGE_TRIGGER_TIME, format};

/// Label telling the EndpointSlice mirroring controller to leave an Endpoints object alone.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Annotation set when addresses were dropped to stay under [`MAX_CAPACITY`].
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses an Endpoints object carries.
pub const MAX_CAPACITY: usize = 1000;

/// What to do with the Endpoints object.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointsPlan {
    /// It is as it should be.
    Unchanged,
    /// It does not exist yet.
    Create(Endpoints),
    /// It exists and differs (carries the `resourceVersion` it was read at).
    Update(Endpoints),
}

type PortKey = (String, i32, String, Option<String>);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

type AddressKey = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn address_key(a: &EndpointAddress) -> AddressKey {
    let t = a.target_ref.as_ref();
    (
        a.ip.clone(),
        a.node_name.clone(),
        a.hostname.clone(),
        t.and_then(|r| r.name.clone()),
        t.and_then(|r| r.uid.clone()),
    )
}

/// Pods with one port set: the ports, and per address its value and readiness.
type Group = (
    Vec<EndpointPort>,
    BTreeMap<AddressKey, (EndpointAddress, bool)>,
);

/// Subsets by meaning, for comparison: per subset (ports, ready, not ready).
type SubsetsKey = Vec<(Vec<PortKey>, Vec<AddressKey>, Vec<AddressKey>)>;

fn subsets_key(subsets: &[EndpointSubset]) -> SubsetsKey {
    let mut out: SubsetsKey = subsets
        .iter()
        .map(|s| {
            let mut ports: Vec<PortKey> = s.ports.iter().flatten().map(port_key).collect();
            ports.sort();
            let mut ready: Vec<AddressKey> =
                s.addresses.iter().flatten().map(address_key).collect();
            ready.sort();
            let mut not: Vec<AddressKey> = s
                .not_ready_addresses
                .iter()
                .flatten()
                .map(address_key)
                .collect();
            not.sort();
            (ports, ready, not)
        })
        .collect();
    out.sort();
    out
}

/// The labels of the Endpoints object of `svc`.
pub fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    if pods::is_headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        labels.remove(LABEL_HEADLESS);
    }
    labels.insert(LABEL_SKIP_MIRROR.into(), "true".into());
    labels
}

/// The desired subsets of `svc` from its selected `pods`, and whether they were truncated.
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> (Vec<EndpointSubset>, bool) {
    let publish = pods::publish_not_ready(svc);
    let svc_ports: Vec<_> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<Vec<PortKey>, Group> = BTreeMap::new();
    for pod in pods {
        if !pods::should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(family) = pods::endpoints_family(svc, pod) else {
            continue;
        };
        let Some(ip) = pods::pod_ip_of_family(pod, family) else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            hostname: pods::should_set_hostname(pod, svc)
                .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
                .flatten(),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let ready = publish || pods::is_ready(pod);
        let ports: Vec<EndpointPort> = if svc_ports.is_empty() {
            if !pods::is_headless(svc) {
                continue;
            }
            Vec::new()
        } else {
            let resolved: Vec<EndpointPort> = svc_ports
                .iter()
                .filter_map(|sp| {
                    Some(EndpointPort {
                        name: sp.name.clone().filter(|n| !n.is_empty()),
                        port: pods::find_port(pod, sp)?,
                        protocol: Some(
                            sp.protocol
                                .clone()
                                .filter(|p| !p.is_empty())
                                .unwrap_or_else(|| "TCP".into()),
                        ),
                        app_protocol: sp.app_protocol.clone(),
                    })
                })
                .collect();
            if resolved.is_empty() {
                continue;
            }
            resolved
        };
        let mut key: Vec<PortKey> = ports.iter().map(port_key).collect();
        key.sort();
        let group = groups.entry(key).or_insert_with(|| {
            let mut sorted = ports.clone();
            sorted.sort_by_key(port_key);
            (sorted, BTreeMap::new())
        });
        group.1.insert(address_key(&address), (address, ready));
    }
    let mut budget = MAX_CAPACITY;
    let total: usize = groups.values().map(|(_, a)| a.len()).sum();
    let truncated = total > MAX_CAPACITY;
    let mut subsets = Vec::new();
    for (_, (ports, addrs)) in groups {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for (_, (a, r)) in addrs {
            if r { ready.push(a) } else { not_ready.push(a) }
        }
        // Ready addresses first when truncating.
        ready.truncate(budget);
        budget -= ready.len();
        not_ready.truncate(budget);
        budget -= not_ready.len();
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        });
    }
    subsets.sort_by(|a, b| first_ip(a).cmp(&first_ip(b)));
    (subsets, truncated)
}

fn first_ip(s: &EndpointSubset) -> Option<&str> {
    s.addresses
        .iter()
        .flatten()
        .chain(s.not_ready_addresses.iter().flatten())
        .map(|a| a.ip.as_str())
        .next()
}

/// Plans the Endpoints object of `svc` (which has a selector) given the `existing` one.
pub fn plan(
    svc: &Service,
    pods: &[&Pod],
    existing: Option<&Endpoints>,
    trigger_time: Option<Timestamp>,
) -> EndpointsPlan {
    let (subsets, truncated) = desired_subsets(svc, pods);
    let labels = desired_labels(svc);
    let over = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_OVER_CAPACITY))
            .is_some()
    };
    if let Some(e) = existing {
        let same = subsets_key(e.subsets.as_deref().unwrap_or(&[])) == subsets_key(&subsets)
            && e.metadata.labels.as_ref() == Some(&labels)
            && over(e) == truncated;
        if same {
            return EndpointsPlan::Unchanged;
        }
    }
    let mut meta = match existing {
        Some(e) => e.metadata.clone(),
        None => ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            ..Default::default()
        },
    };
    meta.labels = Some(labels);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    if let Some(t) = trigger_time {
        annotations.insert(ANNOTATION_LAST_CHANGE_TRIGGER_TIME.into(), format(t));
    }
    if truncated {
        annotations.insert(ANNOTATION_OVER_CAPACITY.into(), "truncated".into());
    } else {
        annotations.remove(ANNOTATION_OVER_CAPACITY);
    }
    if annotations.is_empty() {
        meta.annotations = None;
    }
    let obj = Endpoints {
        metadata: meta,
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    if existing.is_some() {
        EndpointsPlan::Update(obj)
    } else {
        EndpointsPlan::Create(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::super::pods::fixtures::{pod, service};
    use super::*;

    fn ips(e: &Endpoints) -> (Vec<String>, Vec<String>) {
        let s = e.subsets.clone().unwrap_or_default();
        let get = |f: fn(&EndpointSubset) -> Option<&Vec<EndpointAddress>>| {
            s.iter()
                .flat_map(|x| f(x).cloned().unwrap_or_default())
                .map(|a| a.ip)
                .collect::<Vec<_>>()
        };
        (
            get(|x| x.addresses.as_ref()),
            get(|x| x.not_ready_addresses.as_ref()),
        )
    }

    #[test]
    fn should_carry_only_the_primary_family_of_a_dual_stack_service() {
        let a = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        let b = pod("b", &["10.244.0.6", "fd00:10:244::6"], false, 8080);
        let EndpointsPlan::Create(v4) =
            plan(&service("web", &["IPv4", "IPv6"]), &[&a, &b], None, None)
        else {
            panic!("expected create")
        };
        assert_eq!(
            ips(&v4),
            (vec!["10.244.0.5".into()], vec!["10.244.0.6".into()])
        );
        let EndpointsPlan::Create(v6) =
            plan(&service("web", &["IPv6", "IPv4"]), &[&a, &b], None, None)
        else {
            panic!("expected create")
        };
        assert_eq!(
            ips(&v6),
            (vec!["fd00:10:244::5".into()], vec!["fd00:10:244::6".into()])
        );
        assert_eq!(
            v6.metadata.labels.as_ref().unwrap()[LABEL_SKIP_MIRROR],
            "true"
        );
        let port = &v6.subsets.as_ref().unwrap()[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    }

    #[test]
    fn should_skip_pods_without_an_ip_of_the_primary_family() {
        let a = pod("a", &["10.244.0.5"], true, 8080);
        let EndpointsPlan::Create(e) = plan(&service("web", &["IPv6", "IPv4"]), &[&a], None, None)
        else {
            panic!("expected create")
        };
        assert!(e.subsets.is_none());
    }

    #[test]
    fn should_not_rewrite_an_equal_object_and_update_a_changed_one() {
        let svc = service("web", &["IPv4"]);
        let a = pod("a", &["10.244.0.5"], true, 8080);
        let EndpointsPlan::Create(mut e) =
            plan(&svc, &[&a], None, Some(jiff::Timestamp::UNIX_EPOCH))
        else {
            panic!("expected create")
        };
        e.metadata.resource_version = Some("7".into());
        assert_eq!(plan(&svc, &[&a], Some(&e), None), EndpointsPlan::Unchanged);
        let EndpointsPlan::Update(u) = plan(&svc, &[], Some(&e), None) else {
            panic!("expected update")
        };
        assert_eq!(u.metadata.resource_version.as_deref(), Some("7"));
        assert!(u.subsets.is_none());
    }

    #[test]
    fn should_leave_terminating_pods_out_unless_publishing_not_ready() {
        let mut a = pod("a", &["10.244.0.5"], true, 8080);
        a.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        let svc = service("web", &["IPv4"]);
        let (subsets, _) = desired_subsets(&svc, &[&a]);
        assert!(subsets.is_empty());
        let mut publish = svc;
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = desired_subsets(&publish, &[&a]);
        assert_eq!(subsets[0].addresses.as_ref().unwrap()[0].ip, "10.244.0.5");
    }

    #[test]
    fn should_truncate_at_capacity_and_say_so() {
        let svc = service("web", &["IPv4"]);
        let owned: Vec<Pod> = (0..1005)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &[&format!("10.244.{}.{}", i / 250, i % 250 + 1)],
                    true,
                    8080,
                )
            })
            .collect();
        let refs: Vec<&Pod> = owned.iter().collect();
        let EndpointsPlan::Create(e) = plan(&svc, &refs, None, None) else {
            panic!("expected create")
        };
        assert_eq!(ips(&e).0.len(), MAX_CAPACITY);
        assert_eq!(
            e.metadata.annotations.as_ref().unwrap()[ANNOTATION_OVER_CAPACITY],
            "truncated"
        );
    }
}
