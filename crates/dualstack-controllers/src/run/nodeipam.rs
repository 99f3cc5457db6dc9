//! Node IPAM at the edge: watches Nodes, feeds [`NodeIpamPlanner`] in one loop (the allocator
//! is sequential, as upstream's), and writes assignments with up to 30 patches in flight
//! (upstream's `cidrUpdateWorkers`), each retried 3 times (`cidrUpdateRetries`).
//!
//! The patch is upstream's: a strategic merge patch setting `spec.podCIDR` and `spec.podCIDRs`
//! together.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use dualstack_api::config::NodeIpamConfig;
use futures::stream::FuturesUnordered;
use futures::{Future, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::task::JoinSet;

use super::events::{self, Recorder};
use super::{RunError, informer};
use crate::cache::ObjKey;
use crate::metrics::Metrics;
use crate::plan::nodeipam::{
    NodeAction, NodeIpamPlanner, PatchOutcome, REASON_CIDR_ASSIGNMENT_FAILED,
    REASON_CIDR_NOT_AVAILABLE, node_status_message,
};

/// Patches in flight at most.
const WORKERS: usize = 30;
/// Attempts per patch.
const RETRIES: usize = 3;

type PatchFuture =
    Pin<Box<dyn Future<Output = (String, Vec<IpNet>, PatchOutcome, Option<kube::Error>)> + Send>>;

async fn patch(
    api: Api<Node>,
    node: String,
    cidrs: Vec<IpNet>,
) -> (String, Vec<IpNet>, PatchOutcome, Option<kube::Error>) {
    let list: Vec<String> = cidrs.iter().map(IpNet::to_string).collect();
    let body = serde_json::json!({"spec": {"podCIDR": list[0], "podCIDRs": list}});
    let mut last = None;
    for _ in 0..RETRIES {
        match api
            .patch(&node, &PatchParams::default(), &Patch::Strategic(&body))
            .await
        {
            Ok(_) => return (node, cidrs, PatchOutcome::Written, None),
            Err(e) => {
                let stop = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 422);
                last = Some(e);
                if stop {
                    break;
                }
            }
        }
    }
    let timed_out =
        matches!(&last, Some(kube::Error::Api(s)) if s.code == 504 || s.reason == "Timeout");
    let outcome = if timed_out {
        PatchOutcome::TimedOut
    } else {
        PatchOutcome::Failed
    };
    (node, cidrs, outcome, last)
}

fn update_metrics(metrics: &Metrics, planner: &mut NodeIpamPlanner) {
    let stats = planner.take_stats();
    for (i, set) in planner.allocator().sets().iter().enumerate() {
        let label = Metrics::cidr(&set.cluster_cidr());
        metrics
            .cidr_allocations
            .get_or_create(&label)
            .inc_by(stats.allocations[i]);
        metrics
            .cidr_releases
            .get_or_create(&label)
            .inc_by(stats.releases[i]);
        metrics
            .cidr_usage
            .get_or_create(&label)
            .set(set.allocated() as f64 / set.max_cidrs() as f64);
        metrics
            .cidr_max
            .get_or_create(&label)
            .set(set.max_cidrs() as f64);
    }
    for (i, tries) in stats.tries {
        let label = Metrics::cidr(&planner.allocator().sets()[i].cluster_cidr());
        metrics
            .cidr_tries
            .get_or_create(&label)
            .observe(tries as f64);
    }
}

/// Runs node IPAM until dropped; returns an error when the existing nodes cannot be occupied.
pub async fn run(
    client: Client,
    config: NodeIpamConfig,
    metrics: Metrics,
    recorder: Arc<Recorder>,
) -> Result<(), RunError> {
    let api: Api<Node> = Api::all(client);
    let mut tasks = JoinSet::new();
    let (cache, mut rx) = informer::start_synced(api.clone(), &mut tasks).await;
    let nodes = cache.list();
    let refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    let (mut planner, mut actions) =
        NodeIpamPlanner::start(&config, &refs).map_err(RunError::NodeIpam)?;
    tracing::info!(
        cluster_cidrs = ?config.cluster_cidrs,
        node_mask_sizes = ?config.node_mask_sizes,
        nodes = nodes.len(),
        "node ipam controller started"
    );
    drop(nodes);
    let mut backlog: VecDeque<(String, Vec<IpNet>)> = VecDeque::new();
    let mut inflight: FuturesUnordered<PatchFuture> = FuturesUnordered::new();
    loop {
        for action in actions.drain(..) {
            match action {
                NodeAction::Assign { node, cidrs } => backlog.push_back((node, cidrs)),
                NodeAction::NotAvailable { node, error } => {
                    tracing::warn!(node, %error, "no CIDR available for node");
                    if let Some(n) = cache.get(&ObjKey::new("", node.as_str())) {
                        recorder
                            .record(
                                &events::node_ref(&n),
                                events::WARNING,
                                REASON_CIDR_NOT_AVAILABLE,
                                &node_status_message(&node, REASON_CIDR_NOT_AVAILABLE),
                            )
                            .await;
                    }
                }
                NodeAction::Invalid { node, error } => {
                    tracing::error!(node, %error, "skipping a node with podCIDRs this allocator cannot occupy");
                    if let Some(n) = cache.get(&ObjKey::new("", node.as_str())) {
                        recorder
                            .record(
                                &events::node_ref(&n),
                                events::WARNING,
                                REASON_CIDR_NOT_AVAILABLE,
                                &error.to_string(),
                            )
                            .await;
                    }
                }
            }
        }
        while inflight.len() < WORKERS
            && let Some((node, cidrs)) = backlog.pop_front()
        {
            inflight.push(Box::pin(patch(api.clone(), node, cidrs)));
        }
        update_metrics(&metrics, &mut planner);
        let mut released = false;
        tokio::select! {
            changes = rx.recv() => {
                let Some(changes) = changes else {
                    return Err(RunError::Stopped("node watch"));
                };
                for change in changes {
                    match (change.old, change.new) {
                        (_, Some(new)) => {
                            released |= new.metadata.deletion_timestamp.is_some();
                            actions.extend(planner.on_node(&new));
                        }
                        (Some(old), None) => {
                            actions.extend(planner.on_delete(&old));
                            released = true;
                        }
                        (None, None) => {}
                    }
                }
            }
            Some((node, cidrs, outcome, error)) = inflight.next(), if !inflight.is_empty() => {
                planner.on_patch(&node, &cidrs, outcome);
                match outcome {
                    PatchOutcome::Written => {
                        tracing::info!(node, cidrs = ?cidrs, "set node podCIDRs");
                    }
                    _ => {
                        let error = error.map(|e| e.to_string()).unwrap_or_default();
                        tracing::error!(node, %error, "failed to update node podCIDRs");
                        released = outcome == PatchOutcome::Failed;
                        if let Some(n) = cache.get(&ObjKey::new("", node.as_str())) {
                            recorder
                                .record(
                                    &events::node_ref(&n),
                                    events::WARNING,
                                    REASON_CIDR_ASSIGNMENT_FAILED,
                                    &node_status_message(&node, REASON_CIDR_ASSIGNMENT_FAILED),
                                )
                                .await;
                        }
                    }
                }
            }
            Some(done) = tasks.join_next() => {
                tracing::error!(?done, "node watch ended");
                return Err(RunError::Stopped("node watch"));
            }
        }
        if released && planner.has_pending() {
            let waiting: Vec<String> = planner.pending().map(str::to_string).collect();
            for name in waiting {
                match cache.get(&ObjKey::new("", name.as_str())) {
                    Some(n) => actions.extend(planner.on_node(&n)),
                    None => {
                        // Gone meanwhile: forget it.
                        let gone = Node {
                            metadata: kube::api::ObjectMeta {
                                name: Some(name),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        planner.on_delete(&gone);
                    }
                }
            }
        }
    }
}
