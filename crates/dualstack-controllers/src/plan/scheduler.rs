//! The scheduler's decision for one pending pod (pure): kube-scheduler's default filters that
//! matter without resource requests, in upstream's plugin order, then the node with the fewest
//! pods.
//!
//! Filters, per node, the first failing one giving the node's reason (upstream stops a node at
//! its first failing plugin):
//!
//! 1. `NodeUnschedulable`: `spec.unschedulable` unless the pod tolerates
//!    `node.kubernetes.io/unschedulable:NoSchedule` → "node(s) were unschedulable".
//! 2. `TaintToleration`: the first `NoSchedule`/`NoExecute` taint the pod does not tolerate →
//!    "node(s) had untolerated taint {KEY: VALUE}". A node whose `Ready` condition is not `True`
//!    counts as carrying the taint kube-controller-manager would give it
//!    (`node.kubernetes.io/not-ready` for `False` or no condition, `.../unreachable` for
//!    `Unknown`, effect `NoSchedule`) even before that taint is written: upstream filters
//!    NotReady nodes only through those taints, so this is the reason a user sees there, and a
//!    pod tolerating the taint may still land on such a node, as upstream.
//! 3. `NodeAffinity`: `spec.nodeSelector` and required node affinity →
//!    "node(s) didn't match Pod's node affinity/selector".
//! 4. `NodeResourcesFit` (pod count only): allocatable `pods` (missing = 0, as upstream) must
//!    exceed the node's non-terminal pods → "Too many pods".
//!
//! Score: the fewest pods wins (spreading evenly); ties are broken by an injected random
//! number, as upstream's `selectHost` samples among the best nodes.
//!
//! The `FailedScheduling` message is upstream's `FitError`: `0/N nodes are available: ` and
//! the sorted histogram of reasons, then the default preemption plugin's verdict (no pod has a
//! lower priority here, so preemption never finds victims).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use serde_json::{Value, json};

/// The scheduler's name (`spec.schedulerName`, event source).
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// Event reason of a binding.
pub const REASON_SCHEDULED: &str = "Scheduled";
/// Event reason of a failed attempt.
pub const REASON_FAILED_SCHEDULING: &str = "FailedScheduling";
/// `PodScheduled=False` reason.
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
/// Upstream's `ErrNoNodesAvailable`.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// Taint key of a node whose `Ready` condition is `False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint key of a node whose `Ready` condition is `Unknown`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint key of a cordoned node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Why a node cannot take the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeReason {
    /// `spec.unschedulable`.
    Unschedulable,
    /// A `NoSchedule`/`NoExecute` taint the pod does not tolerate.
    UntoleratedTaint {
        /// Its key.
        key: String,
        /// Its value.
        value: String,
    },
    /// `nodeSelector` or required node affinity.
    Selector,
    /// No room for one more pod.
    TooManyPods,
    /// The pod's required anti-affinity (`kubernetes.io/hostname`) matches a pod on the node.
    AntiAffinity,
    /// A pod on the node has required anti-affinity matching this pod.
    ExistingAntiAffinity,
}

impl NodeReason {
    /// Upstream's text.
    pub fn text(&self) -> String {
        match self {
            NodeReason::Unschedulable => "node(s) were unschedulable".into(),
            NodeReason::UntoleratedTaint { key, value } => {
                format!("node(s) had untolerated taint {{{key}: {value}}}")
            }
            NodeReason::Selector => "node(s) didn't match Pod's node affinity/selector".into(),
            NodeReason::TooManyPods => "Too many pods".into(),
            NodeReason::AntiAffinity => "node(s) didn't match pod anti-affinity rules".into(),
            NodeReason::ExistingAntiAffinity => {
                "node(s) didn't satisfy existing pods anti-affinity rules".into()
            }
        }
    }

    /// Whether evicting lower-priority pods could help (upstream's `Unschedulable` status, as
    /// opposed to `UnschedulableAndUnresolvable`).
    fn preemption_could_help(&self) -> bool {
        matches!(
            self,
            NodeReason::TooManyPods | NodeReason::AntiAffinity | NodeReason::ExistingAntiAffinity
        )
    }
}

/// A node as the scheduler sees it: the object and the non-terminal pods bound to it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a Node,
    /// Pods on it, counting the ones this scheduler just bound.
    pub pods: usize,
    /// Those pods (non-terminal), for inter-pod anti-affinity.
    pub neighbours: &'a [std::sync::Arc<Pod>],
}

/// The topology key whose required anti-affinity terms are honoured.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// Whether `term` (a required pod affinity term of `owner`) selects `other`: same namespace
/// (or one listed in `namespaces`), and its label selector matches.
fn term_selects(
    term: &k8s_openapi::api::core::v1::PodAffinityTerm,
    owner: &Pod,
    other: &Pod,
) -> bool {
    let owner_ns = owner.metadata.namespace.as_deref().unwrap_or("");
    let other_ns = other.metadata.namespace.as_deref().unwrap_or("");
    let in_ns = match term.namespaces.as_deref() {
        Some(list) if !list.is_empty() => list.iter().any(|n| n == other_ns),
        _ => owner_ns == other_ns,
    };
    if !in_ns {
        return false;
    }
    let Some(sel) = &term.label_selector else {
        return false;
    };
    let empty = std::collections::BTreeMap::new();
    let labels = other.metadata.labels.as_ref().unwrap_or(&empty);
    label_selector_matches(sel, labels)
}

/// `metav1.LabelSelectorAsSelector(sel).Matches(labels)`.
pub fn label_selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let got = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => got.is_some_and(|v| values.contains(v)),
                "NotIn" => got.is_none_or(|v| !values.contains(v)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
}

/// The required anti-affinity terms of `pod` on `kubernetes.io/hostname`.
fn hostname_anti_affinity(pod: &Pod) -> &[k8s_openapi::api::core::v1::PodAffinityTerm] {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// upstream's `InterPodAffinity` filter for required anti-affinity with the hostname topology:
/// the node fails when one of the pod's terms selects a pod on it, or when a pod on it has a
/// term selecting this pod.
fn anti_affinity(pod: &Pod, c: &Candidate<'_>) -> Option<NodeReason> {
    let host =
        |t: &&k8s_openapi::api::core::v1::PodAffinityTerm| t.topology_key == HOSTNAME_TOPOLOGY;
    let others = c
        .neighbours
        .iter()
        .filter(|o| o.metadata.uid.is_none() || o.metadata.uid != pod.metadata.uid);
    for other in others.clone() {
        if hostname_anti_affinity(pod)
            .iter()
            .filter(host)
            .any(|t| term_selects(t, pod, other))
        {
            return Some(NodeReason::AntiAffinity);
        }
    }
    for other in others {
        if hostname_anti_affinity(other)
            .iter()
            .filter(host)
            .any(|t| term_selects(t, other, pod))
        {
            return Some(NodeReason::ExistingAntiAffinity);
        }
    }
    None
}

/// What to do with a pending pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bind it to this node.
    Bind(String),
    /// No node fits: the `FailedScheduling` message, also the `PodScheduled=False` message.
    Unschedulable(String),
}

/// Whether this scheduler owns a pod and it still waits for a node: no `spec.nodeName`,
/// `spec.schedulerName` unset or `default-scheduler`, not being deleted, not finished.
pub fn wants_node(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && matches!(
            spec.scheduler_name.as_deref(),
            None | Some("") | Some(DEFAULT_SCHEDULER)
        )
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
        && spec.scheduling_gates.as_ref().is_none_or(|g| g.is_empty())
}

/// `Succeeded` or `Failed`: such pods hold no room on their node.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The node a pod is bound to, if any.
pub fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Upstream's `Toleration.ToleratesTaint`: effects match (an empty toleration effect matches
/// all), keys match (an empty key with `Exists` matches every key), and `Exists` ignores the
/// value while `Equal` (the default) compares it.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The `Ready` condition's status, if the node has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
}

/// The node's taints, plus the NoSchedule taint its `Ready` condition implies when it is not
/// there yet (see the module documentation).
fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let implied = match ready_status(node) {
        Some("True") => None,
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        _ => Some(TAINT_NOT_READY),
    };
    if let Some(key) = implied
        && !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    taints
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (value.and_then(int), values.first().and_then(|s| int(s))) {
            (Some(v), Some(bound)) if values.len() == 1 => {
                if r.operator == "Gt" {
                    v > bound
                } else {
                    v < bound
                }
            }
            _ => false,
        },
        _ => false,
    }
}

/// One node selector term: every expression on labels and every field (`metadata.name`)
/// requirement must hold; an empty term matches nothing (upstream).
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name" && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// Upstream's `NodeAffinity` filter: every `nodeSelector` label, and one of the required
/// affinity terms if there are any.
pub fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else {
        return true;
    };
    let labels = node.metadata.labels.as_ref();
    if let Some(sel) = &spec.node_selector
        && !sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => r
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, node)),
        None => true,
    }
}

fn allocatable_pods(node: &Node) -> usize {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get("pods"))
        .and_then(|q| q.0.parse::<usize>().ok())
        .unwrap_or(0)
}

/// Why `node` cannot take `pod`, in upstream's filter order; `None` when it can.
pub fn filter(pod: &Pod, c: &Candidate<'_>) -> Option<NodeReason> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let tolerated = |taint: &Taint| tolerations.iter().any(|t| tolerates(t, taint));
    let unschedulable = c
        .node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if unschedulable
        && !tolerated(&Taint {
            key: TAINT_UNSCHEDULABLE.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        })
    {
        return Some(NodeReason::Unschedulable);
    }
    if let Some(t) = effective_taints(c.node)
        .into_iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(t))
    {
        return Some(NodeReason::UntoleratedTaint {
            key: t.key,
            value: t.value.unwrap_or_default(),
        });
    }
    if !matches_node_selector(pod, c.node) {
        return Some(NodeReason::Selector);
    }
    if allocatable_pods(c.node) <= c.pods {
        return Some(NodeReason::TooManyPods);
    }
    anti_affinity(pod, c)
}

/// upstream's `FitError.Error()` for the nodes' reasons, with the default preemption plugin's
/// message (`preemption: ...`).
pub fn fit_error(pod: &Pod, reasons: &[NodeReason]) -> String {
    let n = reasons.len();
    let mut histogram: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *histogram.entry(r.text()).or_default() += 1;
    }
    let mut msg = format!(
        "0/{n} nodes are available: {}.",
        sorted_histogram(&histogram)
    );
    let never = pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        == Some("Never");
    let preemption = if never {
        "not eligible due to preemptionPolicy=Never.".to_string()
    } else {
        let mut p: BTreeMap<String, usize> = BTreeMap::new();
        for r in reasons {
            let text = if r.preemption_could_help() {
                "No preemption victims found for incoming pod"
            } else {
                "Preemption is not helpful for scheduling"
            };
            *p.entry(text.to_string()).or_default() += 1;
        }
        format!("0/{n} nodes are available: {}.", sorted_histogram(&p))
    };
    msg.push_str(" preemption: ");
    msg.push_str(&preemption);
    msg
}

/// `"COUNT REASON"` entries sorted as Go's `sort.Strings` sorts them (bytewise, so `10 ...`
/// comes before `2 ...`), joined by `, `.
fn sorted_histogram(h: &BTreeMap<String, usize>) -> String {
    let mut entries: Vec<String> = h.iter().map(|(k, v)| format!("{v} {k}")).collect();
    entries.sort();
    entries.join(", ")
}

/// Decides where `pod` goes. `tie_break` is a random number choosing among the nodes with the
/// fewest pods (the caller injects it; tests fix it).
pub fn schedule(pod: &Pod, nodes: &[Candidate<'_>], tie_break: u64) -> Decision {
    if nodes.is_empty() {
        return Decision::Unschedulable(NO_NODES_AVAILABLE.into());
    }
    let mut reasons = Vec::new();
    let mut best: Vec<&Candidate<'_>> = Vec::new();
    for c in nodes {
        match filter(pod, c) {
            Some(r) => reasons.push(r),
            None => match best.first() {
                Some(b) if b.pods < c.pods => {}
                Some(b) if b.pods == c.pods => best.push(c),
                _ => best = vec![c],
            },
        }
    }
    if best.is_empty() {
        return Decision::Unschedulable(fit_error(pod, &reasons));
    }
    // Sorted by name, so the same tie-break picks the same node whatever the input order.
    best.sort_by(|a, b| a.node.metadata.name.cmp(&b.node.metadata.name));
    let pick = best[(tie_break % best.len() as u64) as usize];
    Decision::Bind(pick.node.metadata.name.clone().unwrap_or_default())
}

/// The `Scheduled` event message.
pub fn scheduled_message(namespace: &str, pod: &str, node: &str) -> String {
    format!("Successfully assigned {namespace}/{pod} to {node}")
}

/// The `v1` Binding of `pod` to `node` (the body of `pods/NAME/binding`), with the pod's UID as
/// a precondition, as kube-scheduler's `DefaultBinder`.
pub fn binding(pod: &Pod, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {
            "name": pod.metadata.name,
            "namespace": pod.metadata.namespace,
            "uid": pod.metadata.uid,
        },
        "target": {"kind": "Node", "name": node},
    })
}

/// The status patch (strategic merge on `status.conditions`, keyed by `type`) that records an
/// unschedulable pod, as upstream's `updatePod`: `PodScheduled=False`, reason `Unschedulable`,
/// the message. `None` when the pod already says exactly that (upstream skips the write).
/// `now` is the RFC 3339 time of the change.
pub fn unschedulable_patch(pod: &Pod, message: &str, now: &str) -> Option<Value> {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    if let Some(c) = current
        && c.status == "False"
        && c.reason.as_deref() == Some(REASON_UNSCHEDULABLE)
        && c.message.as_deref() == Some(message)
    {
        return None;
    }
    let transition = match current {
        Some(c) if c.status == "False" => c
            .last_transition_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.to_string()),
        _ => now.to_string(),
    };
    Some(json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": REASON_UNSCHEDULABLE,
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }]}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn node(name: &str) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                allocatable: Some([("pods".to_string(), Quantity("110".into()))].into()),
                ..Default::default()
            }),
        }
    }

    fn with_labels(mut n: Node, labels: &[(&str, &str)]) -> Node {
        n.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        n
    }

    fn with_taint(mut n: Node, key: &str, value: &str, effect: &str) -> Node {
        n.spec
            .get_or_insert_with(Default::default)
            .taints
            .get_or_insert_with(Vec::new)
            .push(Taint {
                key: key.into(),
                value: (!value.is_empty()).then(|| value.into()),
                effect: effect.into(),
                ..Default::default()
            });
        n
    }

    fn with_ready(mut n: Node, status: Option<&str>) -> Node {
        let st = n.status.get_or_insert_with(Default::default);
        st.conditions = status.map(|s| {
            vec![NodeCondition {
                type_: "Ready".into(),
                status: s.into(),
                ..Default::default()
            }]
        });
        n
    }

    fn pod() -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: None,
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            ..Default::default()
        }
    }

    fn cands(nodes: &[Node], pods: &[usize]) -> Vec<Candidate<'static>> {
        let leaked: &'static [Node] = Box::leak(nodes.to_vec().into_boxed_slice());
        leaked
            .iter()
            .zip(pods)
            .map(|(node, &pods)| Candidate {
                node,
                pods,
                neighbours: &[],
            })
            .collect()
    }

    #[test]
    fn tolerations_match_as_upstreams_tolerates_taint() {
        let taint = |k: &str, v: &str, e: &str| Taint {
            key: k.into(),
            value: (!v.is_empty()).then(|| v.into()),
            effect: e.into(),
            ..Default::default()
        };
        let cases = [
            // (toleration, taint, tolerated)
            (
                toleration("k", "Equal", "v", "NoSchedule"),
                taint("k", "v", "NoSchedule"),
                true,
            ),
            (
                toleration("k", "", "v", "NoSchedule"),
                taint("k", "v", "NoSchedule"),
                true,
            ),
            (
                toleration("k", "Equal", "w", "NoSchedule"),
                taint("k", "v", "NoSchedule"),
                false,
            ),
            (
                toleration("k", "Exists", "", "NoSchedule"),
                taint("k", "v", "NoSchedule"),
                true,
            ),
            (
                toleration("k", "Exists", "", ""),
                taint("k", "v", "NoExecute"),
                true,
            ),
            (
                toleration("k", "Exists", "", "NoExecute"),
                taint("k", "v", "NoSchedule"),
                false,
            ),
            (
                toleration("", "Exists", "", ""),
                taint("any", "x", "NoSchedule"),
                true,
            ),
            (
                toleration("", "Exists", "", "NoExecute"),
                taint("any", "", "NoSchedule"),
                false,
            ),
            (
                toleration("other", "Exists", "", ""),
                taint("k", "", "NoSchedule"),
                false,
            ),
            (
                toleration("k", "Equal", "", ""),
                taint("k", "", "NoSchedule"),
                true,
            ),
            (
                toleration("k", "Bogus", "", ""),
                taint("k", "", "NoSchedule"),
                false,
            ),
        ];
        for (i, (t, taint, want)) in cases.iter().enumerate() {
            assert_eq!(tolerates(t, taint), *want, "case {i}: {t:?} vs {taint:?}");
        }
    }

    #[test]
    fn each_node_gets_the_reason_of_its_first_failing_filter() {
        let mut cordoned = with_taint(node("a"), "dedicated", "gpu", "NoSchedule");
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        let mut selective = pod();
        selective.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        let cases: Vec<(&str, Pod, Node, usize, Option<NodeReason>)> = vec![
            ("fits", pod(), node("n"), 0, None),
            (
                "cordoned beats taint",
                pod(),
                cordoned.clone(),
                0,
                Some(NodeReason::Unschedulable),
            ),
            (
                "taint with value",
                pod(),
                with_taint(node("n"), "dedicated", "gpu", "NoSchedule"),
                0,
                Some(NodeReason::UntoleratedTaint {
                    key: "dedicated".into(),
                    value: "gpu".into(),
                }),
            ),
            (
                "NoExecute counts",
                pod(),
                with_taint(node("n"), "k", "", "NoExecute"),
                0,
                Some(NodeReason::UntoleratedTaint {
                    key: "k".into(),
                    value: "".into(),
                }),
            ),
            (
                "PreferNoSchedule does not filter",
                pod(),
                with_taint(node("n"), "k", "", "PreferNoSchedule"),
                0,
                None,
            ),
            (
                "Ready=Unknown is the unreachable taint",
                pod(),
                with_ready(node("n"), Some("Unknown")),
                0,
                Some(NodeReason::UntoleratedTaint {
                    key: TAINT_UNREACHABLE.into(),
                    value: "".into(),
                }),
            ),
            (
                "Ready=False is the not-ready taint",
                pod(),
                with_ready(node("n"), Some("False")),
                0,
                Some(NodeReason::UntoleratedTaint {
                    key: TAINT_NOT_READY.into(),
                    value: "".into(),
                }),
            ),
            (
                "no Ready condition is the not-ready taint",
                pod(),
                with_ready(node("n"), None),
                0,
                Some(NodeReason::UntoleratedTaint {
                    key: TAINT_NOT_READY.into(),
                    value: "".into(),
                }),
            ),
            (
                "selector before capacity",
                selective.clone(),
                node("n"),
                110,
                Some(NodeReason::Selector),
            ),
            (
                "selector matches",
                selective.clone(),
                with_labels(node("n"), &[("disk", "ssd")]),
                0,
                None,
            ),
            ("full", pod(), node("n"), 110, Some(NodeReason::TooManyPods)),
            ("one slot left", pod(), node("n"), 109, None),
        ];
        for (name, pod, node, pods, want) in cases {
            let c = Candidate {
                node: &node,
                pods,
                neighbours: &[],
            };
            assert_eq!(filter(&pod, &c), want, "{name}");
        }
    }

    #[test]
    fn a_pod_tolerating_everything_may_use_cordoned_tainted_and_not_ready_nodes() {
        let mut p = pod();
        p.spec.as_mut().unwrap().tolerations = Some(vec![toleration("", "Exists", "", "")]);
        let mut cordoned = with_ready(node("n"), Some("Unknown"));
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        let cordoned = with_taint(cordoned, "k", "v", "NoExecute");
        assert_eq!(
            filter(
                &p,
                &Candidate {
                    node: &cordoned,
                    pods: 0,
                    neighbours: &[],
                }
            ),
            None
        );
    }

    #[test]
    fn a_node_without_allocatable_pods_has_no_room_as_upstream() {
        let mut n = node("n");
        n.status.as_mut().unwrap().allocatable = None;
        assert_eq!(
            filter(
                &pod(),
                &Candidate {
                    node: &n,
                    pods: 0,
                    neighbours: &[],
                }
            ),
            Some(NodeReason::TooManyPods)
        );
    }

    #[test]
    fn required_node_affinity_terms_are_ored_and_expressions_anded() {
        let affinity: k8s_openapi::api::core::v1::Affinity = serde_json::from_value(json!({
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a", "b"]},
                    {"key": "gpu", "operator": "DoesNotExist"}
                ]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["special"]}]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}
            ]}}
        }))
        .unwrap();
        let mut p = pod();
        p.spec.as_mut().unwrap().affinity = Some(affinity);
        let cases = [
            (with_labels(node("n"), &[("zone", "a")]), true),
            (with_labels(node("n"), &[("zone", "c")]), false),
            (
                with_labels(node("n"), &[("zone", "b"), ("gpu", "1")]),
                false,
            ),
            (node("special"), true),
            (with_labels(node("n"), &[("cores", "16")]), true),
            (with_labels(node("n"), &[("cores", "8")]), false),
            (with_labels(node("n"), &[("cores", "x")]), false),
            (node("n"), false),
        ];
        for (n, want) in cases {
            assert_eq!(
                matches_node_selector(&p, &n),
                want,
                "{:?} {:?}",
                n.metadata.name,
                n.metadata.labels
            );
        }
    }

    #[test]
    fn the_node_with_the_fewest_pods_wins_and_ties_are_broken_by_the_injected_number() {
        let nodes = [node("c"), node("a"), node("b")];
        let c = cands(&nodes, &[3, 1, 1]);
        assert_eq!(schedule(&pod(), &c, 0), Decision::Bind("a".into()));
        assert_eq!(schedule(&pod(), &c, 1), Decision::Bind("b".into()));
        assert_eq!(schedule(&pod(), &c, 2), Decision::Bind("a".into()));
        let c = cands(&nodes, &[0, 1, 1]);
        for t in 0..4 {
            assert_eq!(schedule(&pod(), &c, t), Decision::Bind("c".into()));
        }
    }

    #[test]
    fn repeated_scheduling_spreads_pods_evenly() {
        let nodes = [node("n1"), node("n2"), node("n3")];
        let mut counts = [0usize; 3];
        for i in 0..9u64 {
            let c = cands(&nodes, &counts);
            let Decision::Bind(n) = schedule(&pod(), &c, i * 7919) else {
                panic!("unschedulable");
            };
            let idx = nodes
                .iter()
                .position(|x| x.metadata.name.as_deref() == Some(&n))
                .unwrap();
            counts[idx] += 1;
        }
        assert_eq!(counts, [3, 3, 3]);
    }

    #[test]
    fn failed_scheduling_messages_are_upstreams() {
        let mut selective = pod();
        selective.spec.as_mut().unwrap().node_selector =
            Some([("disk".to_string(), "ssd".to_string())].into());
        let nodes = [with_ready(node("a"), Some("Unknown")), node("b"), node("c")];
        assert_eq!(
            schedule(&selective, &cands(&nodes, &[0, 0, 0]), 0),
            Decision::Unschedulable(
                "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.".into()
            )
        );
        let mut cordoned = node("d");
        cordoned.spec.as_mut().unwrap().unschedulable = Some(true);
        let nodes = [
            node("a"),
            cordoned,
            with_taint(node("e"), "k", "v", "NoSchedule"),
        ];
        assert_eq!(
            schedule(&pod(), &cands(&nodes, &[110, 0, 0]), 0),
            Decision::Unschedulable(
                "0/3 nodes are available: 1 Too many pods, 1 node(s) had untolerated taint {k: v}, 1 node(s) were unschedulable. preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.".into()
            )
        );
        let mut never = pod();
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(
            schedule(&never, &cands(&[node("a")], &[110]), 0),
            Decision::Unschedulable(
                "0/1 nodes are available: 1 Too many pods. preemption: not eligible due to preemptionPolicy=Never.".into()
            )
        );
        assert_eq!(
            schedule(&pod(), &[], 0),
            Decision::Unschedulable("no nodes available to schedule pods".into())
        );
    }

    #[test]
    fn reason_counts_sort_as_go_strings() {
        let mut reasons = vec![NodeReason::TooManyPods; 2];
        reasons.extend(vec![NodeReason::Selector; 10]);
        assert!(
            fit_error(&pod(), &reasons).starts_with(
                "0/12 nodes are available: 10 node(s) didn't match Pod's node affinity/selector, 2 Too many pods."
            )
        );
    }

    #[test]
    fn only_unbound_live_pods_of_the_default_scheduler_want_a_node() {
        let mut cases: Vec<(&str, Pod, bool)> = vec![("plain", pod(), true)];
        let mut p = pod();
        p.spec.as_mut().unwrap().scheduler_name = Some(DEFAULT_SCHEDULER.into());
        cases.push(("named default", p, true));
        let mut p = pod();
        p.spec.as_mut().unwrap().scheduler_name = Some("other".into());
        cases.push(("other scheduler", p, false));
        let mut p = pod();
        p.spec.as_mut().unwrap().node_name = Some("n".into());
        cases.push(("bound", p, false));
        let mut p = pod();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        cases.push(("deleting", p, false));
        for phase in ["Succeeded", "Failed"] {
            let mut p = pod();
            p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            cases.push((phase, p, false));
        }
        let mut p = pod();
        p.spec.as_mut().unwrap().scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "g".into(),
            }]);
        cases.push(("gated", p, false));
        for (name, p, want) in cases {
            assert_eq!(wants_node(&p), want, "{name}");
        }
    }

    #[test]
    fn the_unschedulable_condition_is_written_once_per_message() {
        let now = "2025-01-01T00:00:00Z";
        let patch = unschedulable_patch(&pod(), "m1", now).unwrap();
        assert_eq!(
            patch,
            json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "m1", "lastProbeTime": null,
                "lastTransitionTime": now}]}})
        );
        let mut p = pod();
        p.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "PodScheduled",
            "status": "False", "reason": "Unschedulable", "message": "m1",
            "lastTransitionTime": "2020-01-01T00:00:00Z"}]}))
            .unwrap(),
        );
        assert_eq!(unschedulable_patch(&p, "m1", now), None);
        let changed = unschedulable_patch(&p, "m2", now).unwrap();
        assert_eq!(
            changed["status"]["conditions"][0]["lastTransitionTime"], "2020-01-01T00:00:00Z",
            "the status stays False, so the transition time stays"
        );
    }

    #[test]
    fn the_binding_names_the_pod_the_node_and_the_uid_precondition() {
        let mut p = pod();
        p.metadata.uid = Some("u1".into());
        assert_eq!(
            binding(&p, "n1"),
            json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
                "target": {"kind": "Node", "name": "n1"}})
        );
        assert_eq!(
            scheduled_message("default", "p", "n1"),
            "Successfully assigned default/p to n1"
        );
    }

    #[test]
    fn required_anti_affinity_on_hostname_spreads_and_then_refuses_with_upstreams_text() {
        let web = |name: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c"}], "affinity": {"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "web"}},
                        "topologyKey": HOSTNAME_TOPOLOGY}]}}},
            }))
            .unwrap()
        };
        let nodes = [node("a"), node("b"), node("c")];
        let mut placed: BTreeMap<String, Vec<std::sync::Arc<Pod>>> = BTreeMap::new();
        for i in 0..3 {
            let p = web(&format!("web-{i}"));
            let cands: Vec<Candidate<'_>> = nodes
                .iter()
                .map(|n| {
                    let on = placed
                        .get(n.metadata.name.as_deref().unwrap())
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    Candidate {
                        node: n,
                        pods: on.len(),
                        neighbours: on,
                    }
                })
                .collect();
            let Decision::Bind(n) = schedule(&p, &cands, 0) else {
                panic!("pod {i} not placed")
            };
            drop(cands);
            placed.entry(n).or_default().push(std::sync::Arc::new(p));
        }
        assert_eq!(placed.len(), 3, "one pod per node");
        let cands: Vec<Candidate<'_>> = nodes
            .iter()
            .map(|n| {
                let on = placed[n.metadata.name.as_deref().unwrap()].as_slice();
                Candidate {
                    node: n,
                    pods: 1,
                    neighbours: on,
                }
            })
            .collect();
        assert_eq!(
            schedule(&web("web-3"), &cands, 0),
            Decision::Unschedulable(
                "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.".into()
            )
        );
        // A pod without the rule is kept off by the existing pods' anti-affinity.
        let mut plain = web("plain");
        plain.spec.as_mut().unwrap().affinity = None;
        let Decision::Unschedulable(m) = schedule(&plain, &cands, 0) else {
            panic!()
        };
        assert!(
            m.contains("3 node(s) didn't satisfy existing pods anti-affinity rules"),
            "{m}"
        );
        // Other namespaces do not count.
        let mut other = web("other");
        other.metadata.namespace = Some("other".into());
        assert!(matches!(schedule(&other, &cands, 0), Decision::Bind(_)));
    }
}
