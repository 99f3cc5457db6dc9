//! The ReplicaSet controller's decisions (upstream `pkg/controller/replicaset`): which pods a
//! ReplicaSet owns, how many to create or which to delete (upstream's `ActivePodsWithRanks`
//! order), the pods it creates, and its status.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::scheduler::label_selector_matches;

/// Upstream's `BurstReplicas`: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;

/// Not being deleted and not finished (upstream's `FilterActivePods`).
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The controller owner reference of an object.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether the object's controller is the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// The owner reference a controller sets on what it creates (`controller`,
/// `blockOwnerDeletion`).
pub fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pods of `rs`: same namespace, its controller reference.
pub fn owned<'a>(rs: &ReplicaSet, pods: &'a [std::sync::Arc<Pod>]) -> Vec<&'a Pod> {
    let uid = rs.metadata.uid.as_deref().unwrap_or("");
    pods.iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.namespace == rs.metadata.namespace)
        .filter(|p| controlled_by(&p.metadata, uid))
        .collect()
}

/// `Ready=True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// When the pod turned ready (`Ready=True`'s `lastTransitionTime`), if it is.
pub fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0)
        })
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    ready_since(pod).is_some_and(|t| {
        min_ready_seconds == 0
            || t + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now
    })
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| {
            cs.iter().map(|c| c.restart_count).max().unwrap_or(0)
        })
}

/// upstream's `ActivePodsWithRanks.Less` (without the co-located ranking): the pods to delete
/// first come first — unassigned before assigned, Pending before Unknown before Running, not
/// ready before ready, ready for less time first, more restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        .then_with(|| match (ready_since(a), ready_since(b)) {
            // Ready for less time (later transition) first.
            (Some(x), Some(y)) => y.cmp(&x),
            _ => Ordering::Equal,
        })
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            t(b).cmp(&t(a))
        })
}

/// What a sync does to the pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodDiff {
    /// Nothing.
    None,
    /// Create this many pods.
    Create(usize),
    /// Delete these pods (names), in order.
    Delete(Vec<String>),
}

/// upstream's `manageReplicas`: the diff between `spec.replicas` and the active owned pods,
/// at most [`BURST_REPLICAS`] at a time.
pub fn diff(rs: &ReplicaSet, owned_active: &[&Pod]) -> PodDiff {
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let have = owned_active.len();
    match want.cmp(&have) {
        Ordering::Equal => PodDiff::None,
        Ordering::Greater => PodDiff::Create((want - have).min(BURST_REPLICAS)),
        Ordering::Less => {
            let mut pods = owned_active.to_vec();
            pods.sort_by(|a, b| deletion_order(a, b));
            PodDiff::Delete(
                pods.iter()
                    .take((have - want).min(BURST_REPLICAS))
                    .map(|p| p.metadata.name.clone().unwrap_or_default())
                    .collect(),
            )
        }
    }
}

/// A pod of `rs`'s template: `generateName` `<rs>-` (the server adds five random characters),
/// the template's labels and annotations, the controller reference.
pub fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                rs.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: rs.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// upstream's `calculateStatus` (conditions kept as they are).
pub fn status(rs: &ReplicaSet, owned_active: &[&Pod], now: jiff::Timestamp) -> ReplicaSetStatus {
    let template_labels: BTreeMap<String, String> = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some(template_labels),
        match_expressions: None,
    };
    let count = |f: &dyn Fn(&Pod) -> bool| owned_active.iter().filter(|p| f(p)).count() as i32;
    ReplicaSetStatus {
        replicas: owned_active.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            label_selector_matches(&sel, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
        })),
        ready_replicas: Some(count(&is_ready)),
        available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(name: &str, node: &str, phase: &str, ready: Option<i64>, created: i64) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid", "controller": true}]},
            "spec": {"containers": [{"name": "c"}], "nodeName": node},
            "status": {"phase": phase},
        }))
        .unwrap();
        p.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        if let Some(t) = ready {
            p.status.as_mut().unwrap().conditions = Some(vec![
                serde_json::from_value(json!({
                "type": "Ready", "status": "True",
                "lastTransitionTime": jiff::Timestamp::from_second(t).unwrap().to_string()}))
                .unwrap(),
            ]);
        }
        p
    }

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
        }))
        .unwrap()
    }

    #[test]
    fn deletion_prefers_unscheduled_then_pending_then_not_ready_then_newest_ready() {
        let pods = [
            pod("ready-old", "n1", "Running", Some(100), 10),
            pod("ready-new", "n1", "Running", Some(200), 20),
            pod("running-not-ready", "n1", "Running", None, 5),
            pod("pending", "n2", "Pending", None, 1),
            pod("unscheduled", "", "Pending", None, 0),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        for (replicas, want) in [
            (4, vec!["unscheduled"]),
            (3, vec!["unscheduled", "pending"]),
            (2, vec!["unscheduled", "pending", "running-not-ready"]),
            (
                0,
                vec![
                    "unscheduled",
                    "pending",
                    "running-not-ready",
                    "ready-new",
                    "ready-old",
                ],
            ),
        ] {
            assert_eq!(
                diff(&rs(replicas), &refs),
                PodDiff::Delete(want.iter().map(|s| s.to_string()).collect()),
                "replicas {replicas}"
            );
        }
        assert_eq!(diff(&rs(5), &refs), PodDiff::None);
        assert_eq!(diff(&rs(8), &refs), PodDiff::Create(3));
        assert_eq!(diff(&rs(10_000), &refs), PodDiff::Create(BURST_REPLICAS));
    }

    #[test]
    fn new_pods_carry_the_template_labels_and_the_controller_reference() {
        let p = new_pod(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("ReplicaSet", "rs-uid", Some(true))
        );
    }

    #[test]
    fn status_counts_owned_ready_and_available_pods() {
        let mut pods = vec![
            Arc::new(pod("a", "n1", "Running", Some(100), 1)),
            Arc::new(pod("b", "n1", "Running", None, 1)),
        ];
        let mut other = pod("c", "n1", "Running", Some(100), 1);
        other.metadata.owner_references = None;
        pods.push(Arc::new(other));
        let r = rs(2);
        let owned: Vec<&Pod> = owned(&r, &pods);
        let s = status(&r, &owned, jiff::Timestamp::from_second(1000).unwrap());
        assert_eq!(s.replicas, 2);
        assert_eq!(s.ready_replicas, Some(1));
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(2));
    }
}
