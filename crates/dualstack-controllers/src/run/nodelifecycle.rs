//! The node lifecycle controller at the edge: watches Nodes and the Leases of
//! `kube-node-lease`, runs [`NodeLifecycle`] every `--node-monitor-period` (5 s) and on every
//! node change, and writes its plans: conditions through `nodes/NAME/status`, taints with a
//! merge patch, and, when a node stops being ready, `Ready=False` on each of its pods through
//! `pods/NAME/status` with a `NodeNotReady` event (upstream's `MarkPodsNotReady`). Every write
//! carries the `resourceVersion` it was planned from, so it fails rather than overwrite a newer
//! object, as upstream's `UpdateStatus` does; status writes are strategic merge patches of
//! `status.conditions` (keyed by `type`), not replaces, since the cached objects lack what the
//! cache strips. A write that fails is retried on the next pass (pods of a node that is still
//! not ready included, as upstream's `needsRetry`).

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use tokio::task::JoinSet;

use super::events::{self, Recorder};
use super::scheduler::pod_ref;
use super::{RunError, informer};
use crate::cache::{Cache, ObjKey};
use crate::plan::nodelifecycle::{
    LifecycleConfig, MESSAGE_POD_NODE_NOT_READY, NODE_LEASE_NAMESPACE, NodeLifecycle, NodePlan,
    REASON_NODE_NOT_READY, mark_pod_not_ready, node_status_change_message,
};
use crate::plan::scheduler::ready_status;

/// Marks every pod bound to `node` not ready; false when a write failed (retry later).
async fn mark_pods(client: &Client, node: &str, recorder: &Recorder) -> bool {
    let all: Api<Pod> = Api::all(client.clone());
    let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let pods = match all.list(&lp).await {
        Ok(l) => l.items,
        Err(error) => {
            tracing::warn!(node, %error, "listing the pods of a node that is not ready");
            return false;
        }
    };
    let mut ok = true;
    let now = jiff::Timestamp::now();
    for pod in pods {
        let Some(marked) = mark_pod_not_ready(&pod, now) else {
            continue;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let ready: Vec<_> = marked
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .filter(|c| c.type_ == "Ready")
            .collect();
        let body = serde_json::json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {"conditions": ready},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&body))
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), node, "marked pod not ready");
                recorder
                    .record(
                        &pod_ref(&pod),
                        events::WARNING,
                        REASON_NODE_NOT_READY,
                        MESSAGE_POD_NODE_NOT_READY,
                    )
                    .await;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), %error, "could not mark pod not ready");
                ok = false;
            }
        }
    }
    ok
}

/// Writes one node's plan; false when a write failed.
async fn apply(api: &Api<Node>, node: &Node, plan: &NodePlan) -> bool {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut current = node.clone();
    if let Some(conds) = &plan.conditions {
        // A patch, not a replace: the cached node lacks what the cache strips (managed fields,
        // the last-applied annotation), which a replace through `status` would drop.
        let body = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conds},
        });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&body))
            .await
        {
            Ok(written) => {
                tracing::info!(
                    node = name,
                    "node status set to Unknown: Kubelet stopped posting node status"
                );
                current = written;
            }
            Err(error) => {
                tracing::warn!(node = name, %error, "could not update node status");
                return false;
            }
        }
    }
    if let Some(taints) = &plan.taints {
        let body = serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "spec": {"taints": taints},
        });
        if let Err(error) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            tracing::warn!(node = name, %error, "could not update node taints");
            return false;
        }
        tracing::info!(node = name, taints = ?taints.iter().map(|t| &t.key).collect::<Vec<_>>(), "node taints updated");
    }
    true
}

struct Controller {
    client: Client,
    nodes_api: Api<Node>,
    leases: Arc<Cache<Lease>>,
    recorder: Arc<Recorder>,
    lifecycle: NodeLifecycle,
    /// Nodes whose pods still have to be marked not ready.
    retry_pods: HashSet<String>,
}

impl Controller {
    fn lease(&self, node: &str) -> Option<Arc<Lease>> {
        self.leases.get(&ObjKey::new(NODE_LEASE_NAMESPACE, node))
    }

    async fn pass(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let lease = self.lease(&name);
        let plan = self
            .lifecycle
            .plan(node, lease.as_deref(), jiff::Timestamp::now());
        if !plan.is_empty() && !apply(&self.nodes_api, node, &plan).await {
            return;
        }
        if plan.became_not_ready {
            self.recorder
                .record(
                    &events::node_ref(node),
                    events::NORMAL,
                    REASON_NODE_NOT_READY,
                    &node_status_change_message(&name, REASON_NODE_NOT_READY),
                )
                .await;
            self.retry_pods.insert(name.clone());
        }
        if self.retry_pods.contains(&name) {
            // Retried only while the node is still not ready (upstream's needsRetry).
            let not_ready = plan.became_not_ready || ready_status(node) != Some("True");
            if !not_ready || mark_pods(&self.client, &name, &self.recorder).await {
                self.retry_pods.remove(&name);
            }
        }
    }
}

/// Runs the node lifecycle controller until dropped.
pub async fn run(
    client: Client,
    config: LifecycleConfig,
    recorder: Arc<Recorder>,
) -> Result<(), RunError> {
    let mut tasks = JoinSet::new();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let (nodes, mut node_rx) = informer::start_synced(nodes_api.clone(), &mut tasks).await;
    let (leases, mut lease_rx) = informer::start_synced(
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        &mut tasks,
    )
    .await;
    let mut c = Controller {
        client,
        nodes_api,
        leases,
        recorder,
        lifecycle: NodeLifecycle::new(config),
        retry_pods: HashSet::new(),
    };
    let now = jiff::Timestamp::now();
    for n in nodes.list() {
        let lease = c.lease(n.metadata.name.as_deref().unwrap_or(""));
        c.lifecycle.observe(&n, lease.as_deref(), now);
    }
    tracing::info!(
        nodes = nodes.len(),
        grace_period = ?config.grace_period,
        monitor_period = ?config.monitor_period,
        "node lifecycle controller started"
    );
    let mut tick = tokio::time::interval(config.monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for n in nodes.list() {
                    c.pass(&n).await;
                }
            }
            changes = node_rx.recv() => {
                let Some(changes) = changes else {
                    return Err(RunError::Stopped("node watch"));
                };
                for ch in changes {
                    match (ch.old, ch.new) {
                        (_, Some(new)) => c.pass(&new).await,
                        (Some(old), None) => {
                            let name = old.metadata.name.as_deref().unwrap_or("");
                            c.lifecycle.forget(name);
                            c.retry_pods.remove(name);
                        }
                        (None, None) => {}
                    }
                }
            }
            changes = lease_rx.recv() => {
                let Some(changes) = changes else {
                    return Err(RunError::Stopped("lease watch"));
                };
                let now = jiff::Timestamp::now();
                for ch in changes {
                    let Some(lease) = ch.new else { continue };
                    let name = lease.metadata.name.clone().unwrap_or_default();
                    if let Some(n) = nodes.get(&ObjKey::new("", name.as_str())) {
                        c.lifecycle.observe(&n, Some(&lease), now);
                    }
                }
            }
            Some(done) = tasks.join_next() => {
                tracing::error!(?done, "node lifecycle watch ended");
                return Err(RunError::Stopped("node lifecycle watch"));
            }
        }
    }
}
