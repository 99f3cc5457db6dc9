//! The scheduler at the edge: watches Pods and Nodes, asks [`crate::plan::scheduler`] where each
//! pending pod goes, and binds it through `pods/NAME/binding`, as kube-scheduler's
//! `DefaultBinder` does.
//!
//! Watch-driven: a pod is scheduled as soon as its watch event arrives, so binding takes one
//! request after the create. Pods this scheduler has bound count on their node at once
//! ("assumed" until the watch shows them bound), so a burst spreads evenly. A pod no node fits
//! gets `FailedScheduling` and `PodScheduled=False` (reason `Unschedulable`) and waits in the
//! unschedulable set: retried when any node changes or a bound pod goes away, else after its
//! back-off (1 s doubling to 10 s, upstream's pod back-off).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::events::{self, Recorder};
use super::{RunError, informer};
use crate::cache::{Cache, ObjKey};
use crate::plan::scheduler::{
    self as plan, Candidate, Decision, REASON_FAILED_SCHEDULING, REASON_SCHEDULED,
};

/// First retry of an unschedulable pod (upstream `podInitialBackoffDuration`).
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between retries (upstream `podMaxBackoffDuration`).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often due retries are looked for.
const RETRY_TICK: Duration = Duration::from_millis(500);

/// A reference to a Pod, for its events.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Random numbers for tie-breaks: splitmix64 seeded from the process's hash keys.
struct TieBreak(u64);

impl TieBreak {
    fn new() -> Self {
        Self(RandomState::new().hash_one(0u64))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// How a binding ended.
enum Outcome {
    Bound,
    /// The pod is gone or already bound by someone else: forget it.
    Gone(ObjKey),
    /// Try again later.
    Failed(ObjKey),
}

#[derive(Default)]
struct Queues {
    /// Pods to schedule now, in arrival order.
    active: VecDeque<ObjKey>,
    queued: HashSet<ObjKey>,
    /// Pods bound (or being bound) by us whose bound state the watch has not shown yet.
    assumed: HashMap<ObjKey, String>,
    /// Pods no node fits: attempts so far and when to retry.
    unschedulable: HashMap<ObjKey, (u32, Instant)>,
}

impl Queues {
    fn push(&mut self, key: ObjKey) {
        if !self.assumed.contains_key(&key) && self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    fn forget(&mut self, key: &ObjKey) {
        self.unschedulable.remove(key);
        self.queued.remove(key);
    }

    /// Something changed that may let unschedulable pods fit: retry them all now.
    fn flush_unschedulable(&mut self) {
        let keys: Vec<ObjKey> = self.unschedulable.keys().cloned().collect();
        for k in keys {
            self.push(k);
        }
    }

    fn flush_due(&mut self, now: Instant) {
        let due: Vec<ObjKey> = self
            .unschedulable
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            self.push(k);
        }
    }

    fn back_off(&mut self, key: ObjKey, now: Instant) {
        let attempts = self.unschedulable.get(&key).map_or(0, |(a, _)| *a) + 1;
        let delay = INITIAL_BACKOFF
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(MAX_BACKOFF);
        self.unschedulable.insert(key, (attempts, now + delay));
    }
}

/// A pod change that matters to an unschedulable pod: its spec or labels (upstream ignores
/// status-only updates, our own `PodScheduled` write among them).
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec || old.metadata.labels != new.metadata.labels
}

/// Whether a pod holds room on its node.
fn holds_room(pod: &Pod) -> bool {
    plan::bound_node(pod).is_some() && !plan::is_terminal(pod)
}

/// Pods per node: bound non-terminal pods plus the ones we assumed.
fn pod_counts(pods: &Cache<Pod>, q: &mut Queues) -> HashMap<String, usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for p in pods.list() {
        if holds_room(&p)
            && let Some(n) = plan::bound_node(&p)
        {
            *counts.entry(n.to_string()).or_default() += 1;
        }
    }
    q.assumed.retain(|key, node| match pods.get(key) {
        Some(p) if plan::bound_node(&p).is_none() => {
            *counts.entry(node.clone()).or_default() += 1;
            true
        }
        // Bound (already counted above) or gone.
        _ => false,
    });
    counts
}

/// The pods each node holds (bound non-terminal ones and the ones we assumed), for inter-pod
/// anti-affinity.
fn pods_by_node(pods: &Cache<Pod>, q: &Queues) -> HashMap<String, Vec<Arc<Pod>>> {
    let mut out: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods.list() {
        if holds_room(&p)
            && let Some(n) = plan::bound_node(&p)
        {
            out.entry(n.to_string()).or_default().push(p.clone());
        }
    }
    for (key, node) in &q.assumed {
        if let Some(p) = pods.get(key)
            && plan::bound_node(&p).is_none()
        {
            out.entry(node.clone()).or_default().push(p);
        }
    }
    out
}

async fn bind(client: Client, pod: Arc<Pod>, node: String, recorder: Arc<Recorder>) -> Outcome {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let key = ObjKey::new(ns.as_str(), name.as_str());
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let body = plan::binding(&pod, &node);
    match api
        .create_subresource::<_, serde_json::Value>("binding", &name, &PostParams::default(), &body)
        .await
    {
        Ok(_) => {
            tracing::debug!(pod = %key, node, "bound");
            recorder
                .record(
                    &pod_ref(&pod),
                    events::NORMAL,
                    REASON_SCHEDULED,
                    &plan::scheduled_message(&ns, &name, &node),
                )
                .await;
            Outcome::Bound
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            tracing::info!(pod = %key, node, message = %s.message, "binding refused");
            Outcome::Gone(key)
        }
        Err(error) => {
            tracing::warn!(pod = %key, node, %error, "binding failed");
            Outcome::Failed(key)
        }
    }
}

async fn unschedulable(client: Client, pod: Arc<Pod>, message: String, recorder: Arc<Recorder>) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    recorder
        .record(
            &pod_ref(&pod),
            events::WARNING,
            REASON_FAILED_SCHEDULING,
            &message,
        )
        .await;
    let now = jiff::Timestamp::now().to_string();
    if let Some(patch) = plan::unschedulable_patch(&pod, &message, &now) {
        let api: Api<Pod> = Api::namespaced(client, &ns);
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::warn!(pod = %format!("{ns}/{name}"), %error, "could not record PodScheduled=False");
        }
    }
}

/// Runs the scheduler until dropped.
pub async fn run(client: Client, recorder: Arc<Recorder>) -> Result<(), RunError> {
    let mut tasks = JoinSet::new();
    let (nodes, mut node_rx) =
        informer::start_synced(Api::<Node>::all(client.clone()), &mut tasks).await;
    let (pods, mut pod_rx) =
        informer::start_synced(Api::<Pod>::all(client.clone()), &mut tasks).await;
    let mut q = Queues::default();
    for p in pods.list() {
        if plan::wants_node(&p) {
            q.push(ObjKey::of(p.as_ref()));
        }
    }
    tracing::info!(
        nodes = nodes.len(),
        pending = q.active.len(),
        "scheduler started"
    );
    let mut rng = TieBreak::new();
    let mut inflight: FuturesUnordered<BoxFuture<'static, Option<Outcome>>> =
        FuturesUnordered::new();
    let mut tick = tokio::time::interval(RETRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if !q.active.is_empty() {
            let node_list = nodes.list();
            let mut counts = pod_counts(&pods, &mut q);
            let mut by_node = pods_by_node(&pods, &q);
            while let Some(key) = q.active.pop_front() {
                q.queued.remove(&key);
                let Some(pod) = pods.get(&key) else {
                    q.forget(&key);
                    continue;
                };
                if !plan::wants_node(&pod) {
                    q.forget(&key);
                    continue;
                }
                let candidates: Vec<Candidate<'_>> = node_list
                    .iter()
                    .map(|n| {
                        let name = n.metadata.name.as_deref().unwrap_or("");
                        Candidate {
                            node: n.as_ref(),
                            pods: counts.get(name).copied().unwrap_or(0),
                            neighbours: by_node.get(name).map(Vec::as_slice).unwrap_or_default(),
                        }
                    })
                    .collect();
                match plan::schedule(&pod, &candidates, rng.next()) {
                    Decision::Bind(node) => {
                        *counts.entry(node.clone()).or_default() += 1;
                        by_node.entry(node.clone()).or_default().push(pod.clone());
                        q.unschedulable.remove(&key);
                        q.assumed.insert(key, node.clone());
                        inflight.push(Box::pin(
                            bind(client.clone(), pod, node, recorder.clone()).map(Some),
                        ));
                    }
                    Decision::Unschedulable(message) => {
                        tracing::debug!(pod = %key, message, "unschedulable");
                        q.back_off(key, Instant::now());
                        inflight.push(Box::pin(
                            unschedulable(client.clone(), pod, message, recorder.clone())
                                .map(|_| None),
                        ));
                    }
                }
            }
        }
        tokio::select! {
            changes = pod_rx.recv() => {
                let Some(changes) = changes else {
                    return Err(RunError::Stopped("pod watch"));
                };
                for c in changes {
                    match (&c.old, &c.new) {
                        (old, Some(new)) => {
                            let key = ObjKey::of(new.as_ref());
                            if plan::wants_node(new) {
                                let requeue = match (old, q.unschedulable.contains_key(&key)) {
                                    (Some(old), true) => spec_changed(old, new),
                                    _ => true,
                                };
                                if requeue {
                                    q.push(key);
                                }
                            } else {
                                q.forget(&key);
                                if old.as_ref().is_some_and(|o| holds_room(o)) && !holds_room(new) {
                                    q.flush_unschedulable();
                                }
                            }
                        }
                        (Some(old), None) => {
                            q.forget(&ObjKey::of(old.as_ref()));
                            if holds_room(old) {
                                q.flush_unschedulable();
                            }
                        }
                        (None, None) => {}
                    }
                }
            }
            changes = node_rx.recv() => {
                if changes.is_none() {
                    return Err(RunError::Stopped("node watch"));
                }
                q.flush_unschedulable();
            }
            Some(outcome) = inflight.next(), if !inflight.is_empty() => {
                match outcome {
                    Some(Outcome::Bound) | None => {}
                    Some(Outcome::Gone(key)) => {
                        q.assumed.remove(&key);
                        q.forget(&key);
                    }
                    Some(Outcome::Failed(key)) => {
                        q.assumed.remove(&key);
                        q.back_off(key, Instant::now());
                    }
                }
            }
            _ = tick.tick() => q.flush_due(Instant::now()),
            Some(done) = tasks.join_next() => {
                tracing::error!(?done, "scheduler watch ended");
                return Err(RunError::Stopped("scheduler watch"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_one_second_to_ten() {
        let mut q = Queues::default();
        let t0 = Instant::now();
        let key = ObjKey::new("default", "p");
        let mut delays = Vec::new();
        for _ in 0..6 {
            q.back_off(key.clone(), t0);
            delays.push(q.unschedulable[&key].1 - t0);
        }
        assert_eq!(
            delays,
            [1, 2, 4, 8, 10, 10].map(Duration::from_secs).to_vec()
        );
    }

    #[test]
    fn an_assumed_pod_is_not_queued_twice_and_counts_on_its_node() {
        let mut q = Queues::default();
        let key = ObjKey::new("default", "p");
        q.push(key.clone());
        q.push(key.clone());
        assert_eq!(q.active.len(), 1);
        q.active.clear();
        q.queued.clear();
        q.assumed.insert(key.clone(), "n1".into());
        q.push(key.clone());
        assert!(q.active.is_empty(), "in flight");
        let cache = Cache::<Pod>::default();
        cache.write_through(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(Default::default()),
            status: None,
        });
        assert_eq!(pod_counts(&cache, &mut q).get("n1"), Some(&1));
        cache.remove(&key);
        assert!(pod_counts(&cache, &mut q).is_empty());
        assert!(q.assumed.is_empty(), "a gone pod is no longer assumed");
    }

    #[test]
    fn tie_breaks_vary() {
        let mut t = TieBreak::new();
        let values: HashSet<u64> = (0..100).map(|_| t.next() % 3).collect();
        assert_eq!(values.len(), 3);
    }
}
