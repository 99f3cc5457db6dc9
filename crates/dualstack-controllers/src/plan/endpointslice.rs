//! The EndpointSlice reconciler: for one Service, its selected pods and the slices this
//! controller already manages for it, the slices to create, update and delete, per address type
//! (after `kubernetes/kubernetes:staging/src/k8s.io/endpointslice/reconciler.go`).
//!
//! * One set of slices per entry of `spec.ipFamilies` (`addressType` `IPv4`/`IPv6`); slices of
//!   any other address type (a dropped family) are deleted.
//! * A pod is an endpoint of a family when it has an IP of that family (`status.podIPs`), is not
//!   terminal, and has an IP at all; terminating pods stay, with `terminating: true`.
//! * `ready = publishNotReadyAddresses || (Ready && !terminating)`, `serving = Ready`.
//! * Ports are the Service's ports resolved against each pod (named `targetPort`s may differ
//!   per pod); pods with different resolved ports go to different slices.
//! * At most `max_endpoints_per_slice` endpoints per slice. Existing slices keep the endpoints
//!   they have (updated in place), new endpoints fill slices that change anyway, then slices
//!   with room, then repurposed unneeded slices, then new ones.
//! * A family with no endpoints keeps exactly one placeholder slice (no endpoints, no ports).
//! * Labels: the Service's own (except the two reserved keys), `kubernetes.io/service-name`,
//!   `endpointslice.kubernetes.io/managed-by`, `service.kubernetes.io/headless` for headless
//!   Services. Slices that change get `endpoints.kubernetes.io/last-change-trigger-time`.
//!
//! Endpoints, ports and owners are compared by their meaning (absent protocol is `TCP`, and so
//! on), so a server that normalises objects differently never causes an update loop.

use std::collections::{BTreeMap, HashSet};

use dualstack_ipam::IpFamily;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::pods;
use super::trigger::{ANNOTATION_LAST_CHANGE_TRIGGER_TIME, format};

/// Label naming the Service a slice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`LABEL_MANAGED_BY`] (upstream's, so tools recognise the slices).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Label set on the slices of headless Services.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Node label giving an endpoint's zone.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// What the reconciler looks at for one Service.
pub struct SliceInput<'a> {
    /// The Service (with a selector).
    pub service: &'a Service,
    /// The pods its selector selects, in its namespace.
    pub pods: &'a [&'a Pod],
    /// The slices labelled as managed by us for this Service.
    pub existing: &'a [&'a EndpointSlice],
    /// The zone of a node (its `topology.kubernetes.io/zone` label), if known.
    pub zone_of: &'a dyn Fn(&str) -> Option<String>,
    /// The sync's trigger time, written on slices that change.
    pub trigger_time: Option<Timestamp>,
    /// `--max-endpoints-per-slice`.
    pub max_endpoints_per_slice: usize,
}

/// The writes for one address type.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// New slices (with `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Changed slices (with the `resourceVersion` they were read at).
    pub update: Vec<EndpointSlice>,
    /// Slices to delete.
    pub delete: Vec<EndpointSlice>,
}

impl Changes {
    /// No writes.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The reconciler's result: writes per address type (`IPv4`, `IPv6`, or the address type of a
/// slice that must go).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlicePlan {
    /// Per address type.
    pub by_address_type: BTreeMap<String, Changes>,
}

impl SlicePlan {
    /// No writes at all.
    pub fn is_empty(&self) -> bool {
        self.by_address_type.values().all(Changes::is_empty)
    }

    /// The writes of one address type (empty when none).
    pub fn of(&self, address_type: &str) -> Changes {
        self.by_address_type
            .get(address_type)
            .cloned()
            .unwrap_or_default()
    }

    /// (creates, updates, deletes) over all address types.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.by_address_type
            .values()
            .fold((0, 0, 0), |(c, u, d), ch| {
                (
                    c + ch.create.len(),
                    u + ch.update.len(),
                    d + ch.delete.len(),
                )
            })
    }
}

/// The labels every slice of `svc` carries.
pub fn desired_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| *k != LABEL_SERVICE_NAME && *k != LABEL_MANAGED_BY)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if pods::is_headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        labels.remove(LABEL_HEADLESS);
    }
    labels.insert(
        LABEL_SERVICE_NAME.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// The controller owner reference of a slice of `svc`.
pub fn owner_reference(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// True when the slice is managed by this controller.
pub fn is_managed(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_MANAGED_BY))
        .map(String::as_str)
        == Some(CONTROLLER_NAME)
}

/// The Service a managed slice belongs to (its `kubernetes.io/service-name` label).
pub fn service_name_of(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()?
        .get(LABEL_SERVICE_NAME)
        .map(String::as_str)
}

/// A port by meaning: name (absent = ""), number, protocol (absent = TCP), app protocol.
type PortKey = Vec<(String, i32, String, Option<String>)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect()
}

/// An endpoint by meaning.
type EndpointKey<'a> = (
    &'a [String],
    (bool, bool, bool),
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
    (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    ),
);

fn endpoint_key(e: &Endpoint) -> EndpointKey<'_> {
    let c = e.conditions.clone().unwrap_or_default();
    let t = e.target_ref.as_ref();
    (
        &e.addresses,
        (
            c.ready.unwrap_or(false),
            c.serving.unwrap_or(false),
            c.terminating.unwrap_or(false),
        ),
        e.node_name.as_deref(),
        e.zone.as_deref(),
        e.hostname.as_deref(),
        (
            t.and_then(|r| r.kind.as_deref()),
            t.and_then(|r| r.namespace.as_deref()),
            t.and_then(|r| r.name.as_deref()),
            t.and_then(|r| r.uid.as_deref()),
        ),
    )
}

fn same_endpoint(a: &Endpoint, b: &Endpoint) -> bool {
    endpoint_key(a) == endpoint_key(b)
}

fn target_pod(e: &Endpoint) -> Option<&str> {
    e.target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref().unwrap_or("Pod") == "Pod")
        .and_then(|r| r.name.as_deref())
}

fn is_placeholder(s: &EndpointSlice) -> bool {
    s.endpoints.is_empty() && s.ports.as_ref().is_none_or(|p| p.is_empty())
}

fn owned_by(s: &EndpointSlice, owner: &OwnerReference) -> bool {
    let refs = s.metadata.owner_references.as_deref().unwrap_or(&[]);
    refs.len() == 1
        && refs[0].uid == owner.uid
        && refs[0].kind == owner.kind
        && refs[0].controller == Some(true)
}

/// The endpoint of `pod` in a slice of address family `ip`.
fn endpoint_for(
    pod: &Pod,
    svc: &Service,
    ip: String,
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pods::is_terminating(pod);
    let ready = pods::publish_not_ready(svc) || (serving && !terminating);
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let zone = node_name.as_deref().and_then(zone_of);
    let hostname = pods::should_set_hostname(pod, svc)
        .then(|| pod.spec.as_ref().and_then(|s| s.hostname.clone()))
        .flatten();
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name,
        zone,
        hostname,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service's ports resolved against `pod` (upstream `getEndpointPorts`); ports whose named
/// target the pod lacks are left out.
pub fn ports_for(pod: &Pod, svc: &Service) -> Vec<EndpointPort> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let port = pods::find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(
                    sp.protocol
                        .clone()
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| "TCP".into()),
                ),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// A slice being kept (possibly changed).
struct Slot {
    slice: EndpointSlice,
    key: PortKey,
    changed: bool,
}

/// Plans the writes for one Service.
pub fn reconcile(input: &SliceInput<'_>) -> SlicePlan {
    let svc = input.service;
    let wanted = pods::address_types(svc);
    let mut plan = SlicePlan::default();
    let mut existing: Vec<&EndpointSlice> = input.existing.to_vec();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for family in &wanted {
        let of_type: Vec<&EndpointSlice> = existing
            .iter()
            .copied()
            .filter(|s| s.address_type == family.as_str())
            .collect();
        plan.by_address_type.insert(
            family.as_str().to_string(),
            reconcile_family(input, *family, &of_type),
        );
    }
    for s in existing {
        if !wanted.iter().any(|f| f.as_str() == s.address_type) {
            plan.by_address_type
                .entry(s.address_type.clone())
                .or_default()
                .delete
                .push(s.clone());
        }
    }
    plan
}

fn reconcile_family(
    input: &SliceInput<'_>,
    family: IpFamily,
    existing: &[&EndpointSlice],
) -> Changes {
    let svc = input.service;
    let max = input.max_endpoints_per_slice.max(1);

    // Desired endpoints, grouped by their resolved ports, in pod-name order.
    let mut desired: BTreeMap<PortKey, (Vec<EndpointPort>, BTreeMap<String, Endpoint>)> =
        BTreeMap::new();
    for pod in input.pods {
        if !pods::should_be_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pods::pod_ip_of_family(pod, family) else {
            continue;
        };
        let ports = ports_for(pod, svc);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ep = endpoint_for(pod, svc, ip, input.zone_of);
        desired
            .entry(port_key(&ports))
            .or_insert_with(|| (ports, BTreeMap::new()))
            .1
            .insert(name, ep);
    }
    let total: usize = desired.values().map(|(_, eps)| eps.len()).sum();

    // Pass 1: keep what existing slices hold, refreshed.
    let mut placed: HashSet<String> = HashSet::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut unneeded: Vec<&EndpointSlice> = Vec::new();
    for s in existing {
        let key = port_key(s.ports.as_deref().unwrap_or(&[]));
        let Some((_, group)) = desired.get(&key) else {
            unneeded.push(s);
            continue;
        };
        let mut kept = Vec::new();
        let mut changed = false;
        for ep in &s.endpoints {
            let want = target_pod(ep)
                .filter(|n| !placed.contains(*n))
                .and_then(|n| group.get(n).map(|d| (n, d)));
            match want {
                Some((name, d)) if kept.len() < max => {
                    changed |= !same_endpoint(ep, d);
                    kept.push(d.clone());
                    placed.insert(name.to_string());
                }
                _ => changed = true,
            }
        }
        if kept.is_empty() {
            unneeded.push(s);
            continue;
        }
        let mut slice = (*s).clone();
        slice.endpoints = kept;
        slots.push(Slot {
            slice,
            key,
            changed,
        });
    }

    // Pass 2: place the rest.
    let mut create: Vec<EndpointSlice> = Vec::new();
    for (key, (ports, group)) in &desired {
        let mut remaining: Vec<Endpoint> = group
            .iter()
            .filter(|(n, _)| !placed.contains(*n))
            .map(|(_, e)| e.clone())
            .collect();
        if remaining.is_empty() {
            continue;
        }
        remaining.reverse(); // pop() takes them in pod-name order
        // Slices that change anyway first, then the fullest slices with room.
        let mut order: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].key == *key).collect();
        order.sort_by_key(|&i| {
            (
                !slots[i].changed,
                std::cmp::Reverse(slots[i].slice.endpoints.len()),
            )
        });
        for i in order {
            while slots[i].slice.endpoints.len() < max {
                let Some(e) = remaining.pop() else { break };
                slots[i].slice.endpoints.push(e);
                slots[i].changed = true;
            }
        }
        while !remaining.is_empty() {
            let n = remaining.len().min(max);
            let chunk: Vec<Endpoint> = remaining.drain(remaining.len() - n..).rev().collect();
            match unneeded.pop() {
                Some(old) => {
                    let mut slice = old.clone();
                    slice.ports = Some(ports.clone());
                    slice.endpoints = chunk;
                    slots.push(Slot {
                        slice,
                        key: key.clone(),
                        changed: true,
                    });
                }
                None => create.push(new_slice(svc, family, ports.clone(), chunk)),
            }
        }
    }

    // A family without endpoints keeps one placeholder.
    if total == 0 && create.is_empty() {
        if let Some(pos) = unneeded.iter().position(|s| is_placeholder(s)) {
            let s = unneeded.remove(pos);
            slots.push(Slot {
                slice: s.clone(),
                key: Vec::new(),
                changed: false,
            });
        } else if let Some(old) = unneeded.pop() {
            let mut slice = old.clone();
            slice.ports = Some(Vec::new());
            slice.endpoints = Vec::new();
            slots.push(Slot {
                slice,
                key: Vec::new(),
                changed: true,
            });
        } else {
            create.push(new_slice(svc, family, Vec::new(), Vec::new()));
        }
    }

    // Metadata of kept slices; trigger time on everything written.
    let labels = desired_labels(svc);
    let owner = owner_reference(svc);
    let mut update = Vec::new();
    for mut slot in slots {
        if slot.slice.metadata.labels.as_ref() != Some(&labels) {
            slot.slice.metadata.labels = Some(labels.clone());
            slot.changed = true;
        }
        if !owned_by(&slot.slice, &owner) {
            slot.slice.metadata.owner_references = Some(vec![owner.clone()]);
            slot.changed = true;
        }
        if slot.changed {
            set_trigger_time(&mut slot.slice.metadata, input.trigger_time);
            update.push(slot.slice);
        }
    }
    for s in &mut create {
        set_trigger_time(&mut s.metadata, input.trigger_time);
    }
    update.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Changes {
        create,
        update,
        delete: unneeded.into_iter().cloned().collect(),
    }
}

fn set_trigger_time(meta: &mut ObjectMeta, t: Option<Timestamp>) {
    if let Some(t) = t {
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_LAST_CHANGE_TRIGGER_TIME.into(), format(t));
    }
}

fn new_slice(
    svc: &Service,
    family: IpFamily,
    ports: Vec<EndpointPort>,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.metadata.name.as_deref().unwrap_or(""))),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(desired_labels(svc)),
            owner_references: Some(vec![owner_reference(svc)]),
            ..Default::default()
        },
        address_type: family.as_str().into(),
        endpoints,
        ports: Some(ports),
    }
}

#[cfg(test)]
mod tests {
    use super::super::pods::fixtures::{pod, service};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn no_zone(_: &str) -> Option<String> {
        None
    }

    fn plan(svc: &Service, pods: &[&Pod], existing: &[&EndpointSlice]) -> SlicePlan {
        reconcile(&SliceInput {
            service: svc,
            pods,
            existing,
            zone_of: &no_zone,
            trigger_time: Some("2026-01-01T00:00:05Z".parse().unwrap()),
            max_endpoints_per_slice: 100,
        })
    }

    /// The server's answer to a create: a name and a resourceVersion.
    fn created(mut s: EndpointSlice, name: &str) -> EndpointSlice {
        s.metadata.name = Some(name.into());
        s.metadata.generate_name = None;
        s.metadata.resource_version = Some("1".into());
        s
    }

    fn addresses(s: &EndpointSlice) -> Vec<(String, bool)> {
        s.endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].clone(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn should_create_one_slice_per_family_with_the_family_addresses_ports_and_labels() {
        let svc = service("web", &["IPv4", "IPv6"]);
        let a = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        let b = pod("b", &["10.244.1.5", "fd00:10:244:1::5"], false, 8080);
        let p = plan(&svc, &[&a, &b], &[]);
        let v4 = p.of("IPv4");
        let v6 = p.of("IPv6");
        assert_eq!((v4.create.len(), v6.create.len()), (1, 1));
        assert_eq!(
            addresses(&v4.create[0]),
            vec![("10.244.0.5".into(), true), ("10.244.1.5".into(), false)]
        );
        assert_eq!(
            addresses(&v6.create[0]),
            vec![
                ("fd00:10:244::5".into(), true),
                ("fd00:10:244:1::5".into(), false)
            ]
        );
        let s = &v6.create[0];
        assert_eq!(s.address_type, "IPv6");
        assert_eq!(s.metadata.generate_name.as_deref(), Some("web-"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_MANAGED_BY], "endpointslice-controller.k8s.io");
        assert_eq!(labels["team"], "net");
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()[ANNOTATION_LAST_CHANGE_TRIGGER_TIME],
            "2026-01-01T00:00:05Z"
        );
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-web"
        );
        let port = &s.ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.port, port.protocol.as_deref()),
            (Some("http"), Some(8080), Some("TCP"))
        );
        let ep = &s.endpoints[1];
        assert_eq!(ep.node_name.as_deref(), Some("node-a"));
        assert_eq!(
            ep.conditions,
            Some(EndpointConditions {
                ready: Some(false),
                serving: Some(false),
                terminating: Some(false)
            })
        );
        assert_eq!(ep.target_ref.as_ref().unwrap().name.as_deref(), Some("b"));
    }

    #[test]
    fn should_leave_single_stack_pods_out_of_the_other_familys_slices() {
        let svc = service("web", &["IPv6", "IPv4"]);
        let a = pod("a", &["10.244.0.5"], true, 8080);
        let b = pod("b", &["fd00:10:244::6"], true, 8080);
        let p = plan(&svc, &[&a, &b], &[]);
        assert_eq!(
            addresses(&p.of("IPv4").create[0]),
            vec![("10.244.0.5".into(), true)]
        );
        assert_eq!(
            addresses(&p.of("IPv6").create[0]),
            vec![("fd00:10:244::6".into(), true)]
        );
    }

    #[test]
    fn should_not_write_when_nothing_changed_and_update_in_place_when_readiness_changes() {
        let svc = service("web", &["IPv4", "IPv6"]);
        let a = pod("a", &["10.244.0.5", "fd00:10:244::5"], false, 8080);
        let first = plan(&svc, &[&a], &[]);
        let v4 = created(first.of("IPv4").create[0].clone(), "web-aaaaa");
        let v6 = created(first.of("IPv6").create[0].clone(), "web-bbbbb");
        assert!(plan(&svc, &[&a], &[&v4, &v6]).is_empty());

        let ready = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        let p = plan(&svc, &[&ready], &[&v4, &v6]);
        assert_eq!(p.counts(), (0, 2, 0));
        let upd = &p.of("IPv4").update[0];
        assert_eq!(upd.metadata.name.as_deref(), Some("web-aaaaa"));
        assert_eq!(upd.metadata.resource_version.as_deref(), Some("1"));
        assert_eq!(addresses(upd), vec![("10.244.0.5".into(), true)]);
    }

    #[test]
    fn should_mark_terminating_pods_not_ready_but_still_serving() {
        let svc = service("web", &["IPv4"]);
        let mut a = pod("a", &["10.244.0.5"], true, 8080);
        a.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let p = plan(&svc, &[&a], &[]);
        let c = p.of("IPv4").create[0].endpoints[0]
            .conditions
            .clone()
            .unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let p = plan(&publish, &[&a], &[]);
        let c = p.of("IPv4").create[0].endpoints[0]
            .conditions
            .clone()
            .unwrap();
        assert_eq!(c.ready, Some(true));
    }

    #[test]
    fn should_split_at_max_endpoints_per_slice() {
        let svc = service("web", &["IPv4"]);
        let owned: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &[&format!("10.244.{}.{}", i / 200, i % 200 + 1)],
                    true,
                    8080,
                )
            })
            .collect();
        let refs: Vec<&Pod> = owned.iter().collect();
        let p = plan(&svc, &refs, &[]);
        let sizes: Vec<usize> = p
            .of("IPv4")
            .create
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        // Adding 30 pods fills the partial slice instead of creating a new one.
        let slices: Vec<EndpointSlice> = p
            .of("IPv4")
            .create
            .into_iter()
            .enumerate()
            .map(|(i, s)| created(s, &format!("web-{i}")))
            .collect();
        let more: Vec<Pod> = (250..280)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &[&format!("10.244.2.{}", i - 249)],
                    true,
                    8080,
                )
            })
            .collect();
        let all: Vec<&Pod> = owned.iter().chain(&more).collect();
        let existing: Vec<&EndpointSlice> = slices.iter().collect();
        let p = plan(&svc, &all, &existing);
        assert_eq!(p.counts(), (0, 1, 0));
        assert_eq!(p.of("IPv4").update[0].endpoints.len(), 80);
    }

    #[test]
    fn should_group_pods_whose_named_port_resolves_differently() {
        let svc = service("web", &["IPv4"]);
        let a = pod("a", &["10.244.0.5"], true, 8080);
        let b = pod("b", &["10.244.0.6"], true, 9090);
        let p = plan(&svc, &[&a, &b], &[]);
        let mut ports: Vec<i32> = p
            .of("IPv4")
            .create
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        ports.sort();
        assert_eq!(ports, vec![8080, 9090]);
    }

    #[test]
    fn should_keep_one_placeholder_per_family_without_endpoints() {
        let svc = service("web", &["IPv4", "IPv6"]);
        let p = plan(&svc, &[], &[]);
        for t in ["IPv4", "IPv6"] {
            let c = p.of(t);
            assert_eq!(c.create.len(), 1);
            assert!(c.create[0].endpoints.is_empty());
            assert_eq!(c.create[0].ports, Some(vec![]));
        }
        // An existing placeholder is kept as is.
        let v4 = created(p.of("IPv4").create[0].clone(), "web-p4");
        let v6 = created(p.of("IPv6").create[0].clone(), "web-p6");
        assert!(plan(&svc, &[], &[&v4, &v6]).is_empty());
        // The last pod going away turns its slice into the placeholder.
        let a = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        let with = plan(&svc, &[&a], &[]);
        let s4 = created(with.of("IPv4").create[0].clone(), "web-x4");
        let after = plan(&svc, &[], &[&s4]);
        let c = after.of("IPv4");
        assert_eq!((c.create.len(), c.update.len(), c.delete.len()), (0, 1, 0));
        assert!(c.update[0].endpoints.is_empty());
        assert_eq!(c.update[0].ports, Some(vec![]));
    }

    #[test]
    fn should_delete_the_slices_of_a_dropped_family() {
        let dual = service("web", &["IPv4", "IPv6"]);
        let a = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        let first = plan(&dual, &[&a], &[]);
        let v4 = created(first.of("IPv4").create[0].clone(), "web-a");
        let v6 = created(first.of("IPv6").create[0].clone(), "web-b");
        let single = service("web", &["IPv4"]);
        let p = plan(&single, &[&a], &[&v4, &v6]);
        assert!(p.of("IPv4").is_empty());
        let deleted: Vec<_> = p
            .of("IPv6")
            .delete
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(deleted, vec![Some("web-b".to_string())]);
    }

    #[test]
    fn should_drop_deleted_pods_and_duplicates_and_fix_labels() {
        let svc = service("web", &["IPv4"]);
        let a = pod("a", &["10.244.0.5"], true, 8080);
        let b = pod("b", &["10.244.0.6"], true, 8080);
        let first = plan(&svc, &[&a, &b], &[]);
        let s1 = created(first.of("IPv4").create[0].clone(), "web-1");
        let mut s2 = s1.clone();
        s2.metadata.name = Some("web-2".into());
        // `b` is gone; `a` is listed twice (a stale duplicate).
        let p = plan(&svc, &[&a], &[&s1, &s2]);
        let c = p.of("IPv4");
        assert_eq!(c.update.len(), 1);
        assert_eq!(addresses(&c.update[0]), vec![("10.244.0.5".into(), true)]);
        assert_eq!(c.delete.len(), 1);
        // A user label added to the Service reaches the slices.
        let mut relabelled = svc.clone();
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "front".into());
        let p = plan(&relabelled, &[&a, &b], &[&s1]);
        assert_eq!(p.counts(), (0, 1, 0));
        assert_eq!(
            p.of("IPv4").update[0].metadata.labels.as_ref().unwrap()["tier"],
            "front"
        );
    }

    #[test]
    fn should_label_headless_slices_and_set_hostnames() {
        let mut svc = service("web", &["IPv4", "IPv6"]);
        svc.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut a = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        let spec = a.spec.as_mut().unwrap();
        spec.hostname = Some("a".into());
        spec.subdomain = Some("web".into());
        let p = plan(&svc, &[&a], &[]);
        let s = &p.of("IPv6").create[0];
        assert_eq!(s.metadata.labels.as_ref().unwrap()[LABEL_HEADLESS], "");
        assert_eq!(s.endpoints[0].hostname.as_deref(), Some("a"));
    }

    #[test]
    fn should_fill_in_the_zone_from_the_node() {
        let svc = service("web", &["IPv4"]);
        let a = pod("a", &["10.244.0.5"], true, 8080);
        let zone = |n: &str| (n == "node-a").then(|| "zone-1".to_string());
        let p = reconcile(&SliceInput {
            service: &svc,
            pods: &[&a],
            existing: &[],
            zone_of: &zone,
            trigger_time: None,
            max_endpoints_per_slice: 100,
        });
        let s = &p.of("IPv4").create[0];
        assert_eq!(s.endpoints[0].zone.as_deref(), Some("zone-1"));
        assert!(s.metadata.annotations.is_none());
    }
}
