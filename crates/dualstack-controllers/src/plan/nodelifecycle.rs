//! kube-controller-manager's node lifecycle controller without eviction (pure; time is an
//! argument): upstream's `monitorNodeHealth`/`tryUpdateNodeHealth` and the `NoSchedule`
//! tainting pass (`doNoScheduleTaintingPass`).
//!
//! * Health: a node is probed when first seen, when its `Ready` condition's
//!   `lastHeartbeatTime` changes, and when its Lease in `kube-node-lease` is renewed
//!   (`spec.renewTime` newer than the one seen before). Probe times are the controller's own
//!   clock, as upstream's, so clock skew between nodes and controller does not matter.
//! * A node not probed for `--node-monitor-grace-period` (40 s; `--node-startup-grace-period`,
//!   60 s, while it has no `Ready` condition) gets `Ready`, `MemoryPressure`, `DiskPressure` and
//!   `PIDPressure` set to `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node status.";
//!   a missing one is added with `NodeStatusNeverUpdated`, "Kubelet never posted node status.").
//!   Upstream counts the first grace of a node that never posted status from its
//!   `creationTimestamp`; here from when the controller first saw it (same clock for every
//!   probe).
//! * When the controller itself turns `Ready` from `True` to not `True`, the node gets a
//!   `NodeNotReady` event and every pod bound to it gets `Ready=False` (upstream's
//!   `MarkPodsNotReady`: only the `Ready` condition), so EndpointSlices stop sending to them.
//!   No pod is evicted: the `NoExecute` taints and the eviction of upstream are left out.
//! * Taints: `node.kubernetes.io/not-ready` (`Ready=False`), `.../unreachable`
//!   (`Ready=Unknown`), `.../memory-pressure`, `.../disk-pressure`, `.../pid-pressure`,
//!   `.../network-unavailable` (condition `True`) and `.../unschedulable`
//!   (`spec.unschedulable`), all `NoSchedule`, are added and removed to follow the node; other
//!   taints are left alone.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Default `--node-monitor-grace-period`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// Default `--node-startup-grace-period`.
pub const DEFAULT_STARTUP_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// Default `--node-monitor-period`.
pub const DEFAULT_MONITOR_PERIOD: Duration = Duration::from_secs(5);
/// Namespace of the node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Reason of a condition the controller turned `Unknown`.
pub const REASON_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// Message of a condition the controller turned `Unknown`.
pub const MESSAGE_STATUS_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// Reason of a condition the kubelet never posted.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
/// Message of a condition the kubelet never posted.
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";
/// Event reason on the node and on its pods.
pub const REASON_NODE_NOT_READY: &str = "NodeNotReady";
/// Message of the event on each pod.
pub const MESSAGE_POD_NODE_NOT_READY: &str = "Node is not ready";

/// The conditions turned `Unknown` with `Ready` (upstream leaves `NetworkUnavailable` alone).
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The `NoSchedule` taint of a condition's status (upstream's
/// `nodeConditionToTaintKeyStatusMap`).
fn condition_taint(type_: &str, status: &str) -> Option<&'static str> {
    match (type_, status) {
        ("Ready", "False") => Some("node.kubernetes.io/not-ready"),
        ("Ready", "Unknown") => Some("node.kubernetes.io/unreachable"),
        ("MemoryPressure", "True") => Some("node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "True") => Some("node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "True") => Some("node.kubernetes.io/pid-pressure"),
        ("NetworkUnavailable", "True") => Some("node.kubernetes.io/network-unavailable"),
        _ => None,
    }
}

/// Taint keys this controller owns (with effect `NoSchedule`).
const MANAGED_TAINTS: [&str; 7] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];

/// The controller's timing flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// `--node-monitor-grace-period`.
    pub grace_period: Duration,
    /// `--node-startup-grace-period`.
    pub startup_grace_period: Duration,
    /// `--node-monitor-period`.
    pub monitor_period: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            grace_period: DEFAULT_GRACE_PERIOD,
            startup_grace_period: DEFAULT_STARTUP_GRACE_PERIOD,
            monitor_period: DEFAULT_MONITOR_PERIOD,
        }
    }
}

/// What to write for one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePlan {
    /// The node's new `status.conditions` (written through `nodes/status`).
    pub conditions: Option<Vec<NodeCondition>>,
    /// The node's new `spec.taints`.
    pub taints: Option<Vec<Taint>>,
    /// The controller turned `Ready` from `True` to not `True`: record `NodeNotReady` on the node
    /// and mark its pods not ready.
    pub became_not_ready: bool,
}

impl NodePlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_none() && self.taints.is_none() && !self.became_not_ready
    }
}

#[derive(Debug, Clone)]
struct Health {
    probe: Timestamp,
    heartbeat: Option<Timestamp>,
    renew: Option<Timestamp>,
}

/// The per-node health the controller remembers between passes.
#[derive(Debug, Clone)]
pub struct NodeLifecycle {
    config: LifecycleConfig,
    health: HashMap<String, Health>,
}

fn ready_heartbeat(node: &Node) -> Option<Timestamp> {
    conditions(node)
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0)
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

impl NodeLifecycle {
    /// A controller with no node seen yet.
    pub fn new(config: LifecycleConfig) -> Self {
        Self {
            config,
            health: HashMap::new(),
        }
    }

    /// The timing flags.
    pub fn config(&self) -> LifecycleConfig {
        self.config
    }

    /// Forgets a deleted node.
    pub fn forget(&mut self, name: &str) {
        self.health.remove(name);
    }

    /// Records what `node` and its Lease say at `now` (first sight, a new heartbeat, a renewed
    /// Lease all count as a probe).
    pub fn observe(&mut self, node: &Node, lease: Option<&Lease>, now: Timestamp) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let heartbeat = ready_heartbeat(node);
        let renew = lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let h = self.health.entry(name).or_insert_with(|| Health {
            probe: now,
            heartbeat,
            renew,
        });
        if heartbeat != h.heartbeat {
            h.heartbeat = heartbeat;
            h.probe = now;
        }
        if let Some(r) = renew
            && h.renew.is_none_or(|old| old < r)
        {
            h.renew = Some(r);
            h.probe = now;
        }
    }

    /// Whether `node` has gone unprobed for longer than its grace period at `now`.
    pub fn is_stale(&self, node: &Node, now: Timestamp) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or("");
        let Some(h) = self.health.get(name) else {
            return false;
        };
        let has_ready = conditions(node).iter().any(|c| c.type_ == "Ready");
        let grace = if has_ready {
            self.config.grace_period
        } else {
            self.config.startup_grace_period
        };
        let grace = jiff::SignedDuration::try_from(grace).unwrap_or(jiff::SignedDuration::MAX);
        now.duration_since(h.probe) > grace
    }

    /// One pass over `node` at `now`: [`observe`](Self::observe), then the conditions a stale
    /// node gets and the taints that follow from its (new) conditions.
    pub fn plan(&mut self, node: &Node, lease: Option<&Lease>, now: Timestamp) -> NodePlan {
        self.observe(node, lease, now);
        let mut plan = NodePlan::default();
        let mut conds = conditions(node).to_vec();
        if self.is_stale(node, now) {
            let was_ready = conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if mark_unknown(&mut conds, node, now) {
                plan.became_not_ready = was_ready;
                plan.conditions = Some(conds.clone());
            }
        }
        plan.taints = reconcile_taints(node, &conds);
        plan
    }
}

/// Sets the kubelet conditions to `Unknown` (adding missing ones); true when anything changed.
fn mark_unknown(conds: &mut Vec<NodeCondition>, node: &Node, now: Timestamp) -> bool {
    let mut changed = false;
    for type_ in KUBELET_CONDITIONS {
        match conds.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_STATUS_UNKNOWN.into());
                c.message = Some(MESSAGE_STATUS_UNKNOWN.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conds.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed
}

/// The node's taints after the `NoSchedule` tainting pass for `conds`; `None` when they stay.
pub fn reconcile_taints(node: &Node, conds: &[NodeCondition]) -> Option<Vec<Taint>> {
    let mut want: Vec<&str> = conds
        .iter()
        .filter_map(|c| condition_taint(&c.type_, &c.status))
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push("node.kubernetes.io/unschedulable");
    }
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let managed = |t: &Taint| t.effect == "NoSchedule" && MANAGED_TAINTS.contains(&t.key.as_str());
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.contains(&t.key.as_str()))
        .cloned()
        .collect();
    for key in want {
        if !out.iter().any(|t| t.key == key && t.effect == "NoSchedule") {
            out.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    (out != current).then_some(out)
}

/// Upstream's `MarkPodsNotReady` for one pod: its `Ready` condition set to `False` (the
/// transition time moves; reason and message stay). `None` when it has no `Ready` condition or
/// it is already `False`.
pub fn mark_pod_not_ready(pod: &Pod, now: Timestamp) -> Option<Pod> {
    let mut pod = pod.clone();
    let cond = pod
        .status
        .as_mut()?
        .conditions
        .as_mut()?
        .iter_mut()
        .find(|c| c.type_ == "Ready")?;
    if cond.status == "False" {
        return None;
    }
    cond.status = "False".into();
    cond.last_transition_time = Some(Time(now));
    Some(pod)
}

/// The message of the `NodeNotReady` event on a node (upstream's `RecordNodeStatusChange`).
pub fn node_status_change_message(node: &str, status: &str) -> String {
    format!("Node {node} status is now: {status}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    const T0: i64 = 1_700_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).unwrap()
    }

    fn cond(type_: &str, status: &str) -> NodeCondition {
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            last_heartbeat_time: Some(Time(at(-100))),
            last_transition_time: Some(Time(at(-100))),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
        }
    }

    fn node(conds: Vec<NodeCondition>) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some("n1".into()),
                creation_timestamp: Some(Time(at(-200))),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(conds),
                ..Default::default()
            }),
        }
    }

    fn lease(renew: i64) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(at(renew))),
                ..Default::default()
            }),
        }
    }

    fn config() -> LifecycleConfig {
        LifecycleConfig {
            grace_period: Duration::from_secs(40),
            startup_grace_period: Duration::from_secs(60),
            monitor_period: Duration::from_secs(5),
        }
    }

    fn ready_status(plan: &NodePlan) -> Option<(String, Option<String>)> {
        plan.conditions.as_ref().and_then(|c| {
            c.iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| (c.status.clone(), c.reason.clone()))
        })
    }

    #[test]
    fn a_node_whose_lease_is_renewed_stays_as_it_is() {
        let mut lc = NodeLifecycle::new(config());
        let n = node(vec![cond("Ready", "True")]);
        for t in (0..=120).step_by(5) {
            let plan = lc.plan(&n, Some(&lease(t)), at(t));
            assert!(plan.is_empty(), "at {t}s: {plan:?}");
        }
    }

    #[test]
    fn staleness_follows_the_grace_period_table() {
        // (what happens, grace of the probe, checks: (seconds after start, stale?))
        struct Case {
            name: &'static str,
            conds: Vec<NodeCondition>,
            renewals: Vec<i64>,
            checks: Vec<(i64, bool)>,
        }
        let cases = [
            Case {
                name: "never renewed: 40s from first sight",
                conds: vec![cond("Ready", "True")],
                renewals: vec![],
                checks: vec![(0, false), (40, false), (41, true)],
            },
            Case {
                name: "renewed at 30s: 40s from then",
                conds: vec![cond("Ready", "True")],
                renewals: vec![30],
                checks: vec![(0, false), (30, false), (70, false), (71, true)],
            },
            Case {
                name: "no Ready condition: the startup grace",
                conds: vec![],
                renewals: vec![],
                checks: vec![(0, false), (41, false), (60, false), (61, true)],
            },
        ];
        for case in cases {
            let mut lc = NodeLifecycle::new(config());
            let n = node(case.conds.clone());
            let mut renewed = None;
            for (t, want) in case.checks {
                if let Some(r) = case.renewals.iter().rev().find(|r| **r <= t) {
                    renewed = Some(lease(*r));
                }
                lc.observe(&n, renewed.as_ref(), at(t));
                assert_eq!(lc.is_stale(&n, at(t)), want, "{}: at {t}s", case.name);
            }
        }
    }

    #[test]
    fn a_new_heartbeat_counts_as_a_probe() {
        let mut lc = NodeLifecycle::new(config());
        let mut n = node(vec![cond("Ready", "True")]);
        lc.observe(&n, None, at(0));
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_heartbeat_time =
            Some(Time(at(35)));
        lc.observe(&n, None, at(35));
        assert!(!lc.is_stale(&n, at(75)));
        assert!(lc.is_stale(&n, at(76)));
    }

    #[test]
    fn a_stale_ready_node_turns_unknown_is_tainted_and_its_pods_are_marked() {
        let mut lc = NodeLifecycle::new(config());
        let n = node(vec![
            cond("Ready", "True"),
            cond("MemoryPressure", "False"),
            cond("NetworkUnavailable", "False"),
        ]);
        assert!(lc.plan(&n, Some(&lease(0)), at(0)).is_empty());
        let plan = lc.plan(&n, Some(&lease(0)), at(41));
        assert!(plan.became_not_ready);
        let conds = plan.conditions.clone().unwrap();
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap().clone();
        let ready = get("Ready");
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(REASON_STATUS_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_STATUS_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(Time(at(41))));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(at(-100))),
            "the heartbeat stays"
        );
        assert_eq!(get("MemoryPressure").status, "Unknown");
        assert_eq!(get("NetworkUnavailable").status, "False", "left alone");
        let disk = get("DiskPressure");
        assert_eq!(
            (
                disk.status.as_str(),
                disk.reason.as_deref(),
                disk.message.as_deref()
            ),
            (
                "Unknown",
                Some(REASON_NEVER_UPDATED),
                Some(MESSAGE_NEVER_UPDATED)
            )
        );
        assert_eq!(disk.last_heartbeat_time, Some(Time(at(-200))));
        assert_eq!(
            plan.taints,
            Some(vec![Taint {
                key: "node.kubernetes.io/unreachable".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }])
        );
    }

    #[test]
    fn a_node_already_unknown_is_not_written_again_and_never_ready_nodes_mark_no_pods() {
        let mut lc = NodeLifecycle::new(config());
        let mut n = node(vec![cond("Ready", "True")]);
        lc.plan(&n, None, at(0));
        let plan = lc.plan(&n, None, at(41));
        n.status.as_mut().unwrap().conditions = plan.conditions;
        n.spec.as_mut().unwrap().taints = plan.taints;
        assert!(lc.plan(&n, None, at(46)).is_empty());

        let mut lc = NodeLifecycle::new(config());
        let n = node(vec![]);
        lc.plan(&n, None, at(0));
        let plan = lc.plan(&n, None, at(61));
        assert!(!plan.became_not_ready, "it never was ready");
        assert_eq!(
            ready_status(&plan),
            Some(("Unknown".into(), Some(REASON_NEVER_UPDATED.into())))
        );
    }

    #[test]
    fn a_kubelet_posting_ready_again_removes_the_taint() {
        let mut lc = NodeLifecycle::new(config());
        let mut n = node(vec![cond("Ready", "True")]);
        lc.plan(&n, None, at(0));
        let plan = lc.plan(&n, None, at(41));
        n.status.as_mut().unwrap().conditions = plan.conditions;
        n.spec.as_mut().unwrap().taints = plan.taints;
        // Renewed, but the kubelet has not posted Ready yet: still Unknown and tainted.
        assert!(lc.plan(&n, Some(&lease(50)), at(50)).is_empty());
        let mut back = cond("Ready", "True");
        back.last_heartbeat_time = Some(Time(at(51)));
        n.status.as_mut().unwrap().conditions = Some(vec![back]);
        let plan = lc.plan(&n, Some(&lease(50)), at(51));
        assert_eq!(plan.taints, Some(vec![]));
        assert!(plan.conditions.is_none() && !plan.became_not_ready);
    }

    #[test]
    fn the_tainting_pass_follows_conditions_and_cordons_and_keeps_other_taints() {
        let other = Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let managed = |k: &str| Taint {
            key: k.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        // (name, conditions, cordoned, taints before, taints after)
        type Case = (
            &'static str,
            Vec<NodeCondition>,
            bool,
            Vec<Taint>,
            Option<Vec<Taint>>,
        );
        let cases: Vec<Case> = vec![
            (
                "ready, clean",
                vec![cond("Ready", "True")],
                false,
                vec![],
                None,
            ),
            (
                "not ready",
                vec![cond("Ready", "False")],
                false,
                vec![other.clone()],
                Some(vec![other.clone(), managed("node.kubernetes.io/not-ready")]),
            ),
            (
                "recovered",
                vec![cond("Ready", "True")],
                false,
                vec![managed("node.kubernetes.io/unreachable"), other.clone()],
                Some(vec![other.clone()]),
            ),
            (
                "pressure and cordon",
                vec![cond("Ready", "True"), cond("DiskPressure", "True")],
                true,
                vec![],
                Some(vec![
                    managed("node.kubernetes.io/disk-pressure"),
                    managed("node.kubernetes.io/unschedulable"),
                ]),
            ),
            (
                "a NoExecute taint of a managed key is not ours",
                vec![cond("Ready", "True")],
                false,
                vec![Taint {
                    effect: "NoExecute".into(),
                    ..managed("node.kubernetes.io/unreachable")
                }],
                None,
            ),
        ];
        for (name, conds, cordoned, taints, want) in cases {
            let mut n = node(conds.clone());
            n.spec.as_mut().unwrap().unschedulable = Some(cordoned);
            n.spec.as_mut().unwrap().taints = Some(taints);
            assert_eq!(reconcile_taints(&n, &conds), want, "{name}");
        }
    }

    #[test]
    fn marking_a_pod_not_ready_changes_only_its_ready_condition() {
        let pod = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![
                    PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(-10))),
                        ..Default::default()
                    },
                    PodCondition {
                        type_: "ContainersReady".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let marked = mark_pod_not_ready(&pod, at(0)).unwrap();
        let conds = marked.status.as_ref().unwrap().conditions.clone().unwrap();
        assert_eq!(conds[0].status, "False");
        assert_eq!(conds[0].last_transition_time, Some(Time(at(0))));
        assert_eq!(conds[1].status, "True");
        assert_eq!(mark_pod_not_ready(&marked, at(1)), None);
        assert_eq!(mark_pod_not_ready(&Pod::default(), at(1)), None);
        assert_eq!(
            node_status_change_message("n1", REASON_NODE_NOT_READY),
            "Node n1 status is now: NodeNotReady"
        );
    }
}
