//! EndpointSlices and Endpoints at the edge: Services, Pods, our EndpointSlices, Endpoints and
//! Nodes are watched into indexed caches; every change queues the Services it concerns (a pod
//! change queues the Services that select its old and its new labels); workers sync one Service
//! at a time with [`plan::endpointslice::reconcile`](crate::plan::endpointslice::reconcile) and
//! [`plan::endpoints::plan`](crate::plan::endpoints::plan) and apply the writes. Workers start
//! once every cache has its first list, as upstream waits for informer sync.
//!
//! A Service that no longer exists gets its slices (and the Endpoints object we manage)
//! deleted here, so no garbage collector is needed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{RunError, informer};
use crate::cache::{Cache, Change, ObjKey};
use crate::config::EndpointSliceOptions;
use crate::metrics::{Metrics, OperationLabels, ResultLabels};
use crate::plan::endpoints::{self, EndpointsPlan, LABEL_SKIP_MIRROR};
use crate::plan::endpointslice::{
    self, CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_TOPOLOGY_ZONE, SliceInput,
};
use crate::plan::pods;
use crate::plan::trigger::TriggerTimeTracker;
use crate::queue::WorkQueue;

/// Which of the two controllers run.
#[derive(Debug, Clone, Copy)]
pub struct Enabled {
    /// EndpointSlices.
    pub slices: bool,
    /// The legacy Endpoints object.
    pub endpoints: bool,
}

struct Ctx {
    client: Client,
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    slices: Arc<Cache<EndpointSlice>>,
    endpoints: Arc<Cache<Endpoints>>,
    nodes: Arc<Cache<Node>>,
    queue: Arc<WorkQueue<ObjKey>>,
    tracker: Mutex<TriggerTimeTracker>,
    options: EndpointSliceOptions,
    enabled: Enabled,
    metrics: Metrics,
}

fn pod_index(p: &Pod) -> Vec<String> {
    let ns = p.metadata.namespace.as_deref().unwrap_or("");
    p.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{ns}/{k}={v}"))
        .collect()
}

/// A Service is found by each `key=value` of its selector.
fn service_index(s: &Service) -> Vec<String> {
    let ns = s.metadata.namespace.as_deref().unwrap_or("");
    pods::selector(s)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{ns}/{k}={v}"))
        .collect()
}

fn slice_index(s: &EndpointSlice) -> Vec<String> {
    match endpointslice::service_name_of(s) {
        Some(svc) => vec![format!(
            "{}/{svc}",
            s.metadata.namespace.as_deref().unwrap_or("")
        )],
        None => Vec::new(),
    }
}

impl Ctx {
    /// The Services in the pod's namespace whose selector matches the pod's labels (looked up
    /// by the pod's labels, so the cost follows the matches, not the number of Services).
    fn services_for(&self, pod: &Pod) -> Vec<ObjKey> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        let mut out: Vec<ObjKey> = Vec::new();
        for (k, v) in pod.metadata.labels.iter().flatten() {
            for s in self.services.by_index(&format!("{ns}/{k}={v}")) {
                let key = ObjKey::of(s.as_ref());
                if !out.contains(&key)
                    && pods::selector(&s).is_some_and(|sel| {
                        pods::selector_matches(sel, pod.metadata.labels.as_ref())
                    })
                {
                    out.push(key);
                }
            }
        }
        out
    }

    /// The pods `svc` selects.
    fn pods_for(&self, svc: &Service) -> Vec<Arc<Pod>> {
        let Some(sel) = pods::selector(svc) else {
            return Vec::new();
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let Some((k, v)) = sel.iter().next() else {
            return Vec::new();
        };
        self.pods
            .by_index(&format!("{ns}/{k}={v}"))
            .into_iter()
            .filter(|p| pods::selector_matches(sel, p.metadata.labels.as_ref()))
            .collect()
    }

    fn managed_slices(&self, key: &ObjKey) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .by_index(&key.to_string())
            .into_iter()
            .filter(|s| endpointslice::is_managed(s))
            .collect()
    }

    fn count(&self, op: &str, n: usize) {
        if n > 0 {
            self.metrics
                .slice_changes
                .get_or_create(&OperationLabels {
                    operation: op.into(),
                })
                .inc_by(n as u64);
        }
    }

    async fn delete_slices(
        &self,
        ns: &str,
        slices: &[Arc<EndpointSlice>],
    ) -> Result<(), kube::Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let results = join_all(slices.iter().map(|s| {
            let api = api.clone();
            let name = s.metadata.name.clone().unwrap_or_default();
            async move {
                (
                    name.clone(),
                    api.delete(&name, &DeleteParams::default()).await,
                )
            }
        }))
        .await;
        let mut first = None;
        for (name, r) in results {
            match r {
                Ok(_) => {
                    self.slices.remove(&ObjKey::new(ns, name));
                    self.count("delete", 1);
                }
                Err(e) if is_not_found(&e) => self.slices.remove(&ObjKey::new(ns, name)),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn sync(&self, key: &ObjKey) -> Result<(), kube::Error> {
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: remove what we made for it.
            self.tracker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(&key.to_string());
            let slices = self.managed_slices(key);
            if self.enabled.slices {
                self.delete_slices(&key.namespace, &slices).await?;
            }
            if self.enabled.endpoints
                && let Some(e) = self.endpoints.get(key)
                && e.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_SKIP_MIRROR))
                    .is_some()
            {
                let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => self.endpoints.remove(key),
                    Err(e) if is_not_found(&e) => self.endpoints.remove(key),
                    Err(e) => return Err(e),
                }
            }
            return Ok(());
        };
        if pods::is_external_name(&svc) {
            if self.enabled.slices {
                let slices = self.managed_slices(key);
                self.delete_slices(&key.namespace, &slices).await?;
            }
            return Ok(());
        }
        if pods::selector(&svc).is_none() {
            return Ok(());
        }
        let selected = self.pods_for(&svc);
        let pod_refs: Vec<&Pod> = selected.iter().map(|p| p.as_ref()).collect();
        let trigger = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .compute(&key.to_string(), &svc, pod_refs.iter().copied());

        let mut writes: Vec<futures::future::BoxFuture<'_, Result<(), kube::Error>>> = Vec::new();
        if self.enabled.slices {
            let existing = self.managed_slices(key);
            let existing_refs: Vec<&EndpointSlice> = existing.iter().map(|s| s.as_ref()).collect();
            let nodes = &self.nodes;
            let zone_of = |n: &str| {
                nodes.get(&ObjKey::new("", n)).and_then(|node| {
                    node.metadata
                        .labels
                        .as_ref()?
                        .get(LABEL_TOPOLOGY_ZONE)
                        .cloned()
                })
            };
            let plan = endpointslice::reconcile(&SliceInput {
                service: &svc,
                pods: &pod_refs,
                existing: &existing_refs,
                zone_of: &zone_of,
                trigger_time: trigger,
                max_endpoints_per_slice: self.options.max_endpoints_per_slice,
            });
            let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
            let mut deletes = Vec::new();
            for changes in plan.by_address_type.into_values() {
                for s in changes.create {
                    let api = api.clone();
                    writes.push(Box::pin(async move {
                        match api.create(&PostParams::default(), &s).await {
                            Ok(created) => {
                                self.slices.write_through(created);
                                self.count("create", 1);
                                Ok(())
                            }
                            Err(e) if is_terminating_namespace(&e) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }));
                }
                for s in changes.update {
                    let api = api.clone();
                    writes.push(Box::pin(async move {
                        let name = s.metadata.name.clone().unwrap_or_default();
                        let updated = api.replace(&name, &PostParams::default(), &s).await?;
                        self.slices.write_through(updated);
                        self.count("update", 1);
                        Ok(())
                    }));
                }
                deletes.extend(changes.delete.into_iter().map(Arc::new));
            }
            if !deletes.is_empty() {
                let ns = key.namespace.clone();
                writes.push(Box::pin(
                    async move { self.delete_slices(&ns, &deletes).await },
                ));
            }
        }
        if self.enabled.endpoints {
            let existing = self.endpoints.get(key);
            let plan = endpoints::plan(&svc, &pod_refs, existing.as_deref(), trigger);
            let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
            match plan {
                EndpointsPlan::Unchanged => {}
                EndpointsPlan::Create(e) => writes.push(Box::pin(async move {
                    match api.create(&PostParams::default(), &e).await {
                        Ok(created) => {
                            self.endpoints.write_through(created);
                            Ok(())
                        }
                        Err(e) if is_terminating_namespace(&e) => Ok(()),
                        Err(e) => Err(e),
                    }
                })),
                EndpointsPlan::Update(e) => writes.push(Box::pin(async move {
                    let updated = api.replace(&key.name, &PostParams::default(), &e).await?;
                    self.endpoints.write_through(updated);
                    Ok(())
                })),
            }
        }
        let mut first = None;
        for r in join_all(writes).await {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_terminating_namespace(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

/// Runs the EndpointSlice and/or Endpoints controller until dropped.
pub async fn run(
    client: Client,
    options: EndpointSliceOptions,
    enabled: Enabled,
    metrics: Metrics,
) -> Result<(), RunError> {
    let ctx = Arc::new(Ctx {
        services: Arc::new(Cache::new(Some(Box::new(service_index)))),
        pods: Arc::new(Cache::new(Some(Box::new(pod_index)))),
        slices: Arc::new(Cache::new(Some(Box::new(slice_index)))),
        endpoints: Arc::new(Cache::default()),
        nodes: Arc::new(Cache::default()),
        queue: Arc::new(WorkQueue::new()),
        tracker: Mutex::new(TriggerTimeTracker::default()),
        client: client.clone(),
        options,
        enabled,
        metrics,
    });
    let mut tasks = JoinSet::new();
    let mut synced = Vec::new();

    let (tx, rx) = watch::channel(false);
    synced.push(rx);
    let c = ctx.clone();
    tasks.spawn(informer::run(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        ctx.services.clone(),
        tx,
        move |changes: Vec<Change<Service>>| {
            for ch in changes {
                if let Some(s) = ch.new.as_ref().or(ch.old.as_ref()) {
                    c.queue.add(ObjKey::of(s.as_ref()));
                }
            }
        },
    ));

    let (tx, rx) = watch::channel(false);
    synced.push(rx);
    let c = ctx.clone();
    tasks.spawn(informer::run(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        ctx.pods.clone(),
        tx,
        move |changes: Vec<Change<Pod>>| {
            for ch in changes {
                for p in ch.old.iter().chain(ch.new.iter()) {
                    for key in c.services_for(p) {
                        c.queue.add(key);
                    }
                }
            }
        },
    ));

    let (tx, rx) = watch::channel(false);
    synced.push(rx);
    let c = ctx.clone();
    tasks.spawn(informer::run(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}")),
        ctx.slices.clone(),
        tx,
        move |changes: Vec<Change<EndpointSlice>>| {
            for ch in changes {
                for s in ch.old.iter().chain(ch.new.iter()) {
                    if let Some(svc) = endpointslice::service_name_of(s) {
                        c.queue.add(ObjKey::new(
                            s.metadata.namespace.clone().unwrap_or_default(),
                            svc,
                        ));
                    }
                }
            }
        },
    ));

    let (tx, rx) = watch::channel(false);
    synced.push(rx);
    let c = ctx.clone();
    tasks.spawn(informer::run(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        ctx.endpoints.clone(),
        tx,
        move |changes: Vec<Change<Endpoints>>| {
            if !c.enabled.endpoints {
                return;
            }
            for ch in changes {
                if let Some(e) = ch.new.as_ref().or(ch.old.as_ref()) {
                    c.queue.add(ObjKey::of(e.as_ref()));
                }
            }
        },
    ));

    let (tx, rx) = watch::channel(false);
    synced.push(rx);
    tasks.spawn(informer::run(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        ctx.nodes.clone(),
        tx,
        |_: Vec<Change<Node>>| {},
    ));

    for mut rx in synced {
        informer::wait_synced(&mut rx).await;
    }
    // Everything once, plus the Services of slices whose Service is gone.
    for s in ctx.services.list() {
        ctx.queue.add(ObjKey::of(s.as_ref()));
    }
    for s in ctx.slices.list() {
        if let Some(svc) = endpointslice::service_name_of(&s) {
            ctx.queue.add(ObjKey::new(
                s.metadata.namespace.clone().unwrap_or_default(),
                svc,
            ));
        }
    }
    tracing::info!(
        slices = enabled.slices,
        endpoints = enabled.endpoints,
        workers = options.concurrent_syncs,
        "endpoints controllers started"
    );
    for _ in 0..options.concurrent_syncs {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            while let Some(key) = ctx.queue.get().await {
                let start = Instant::now();
                let result = ctx.sync(&key).await;
                ctx.metrics
                    .slice_sync_duration
                    .observe(start.elapsed().as_secs_f64());
                let label = ResultLabels {
                    result: if result.is_ok() { "success" } else { "error" }.into(),
                };
                ctx.metrics.slice_syncs.get_or_create(&label).inc();
                match result {
                    Ok(()) => ctx.queue.forget(&key),
                    Err(error) => {
                        tracing::debug!(service = %key, %error, "endpoints sync failed; retrying");
                        ctx.queue.add_rate_limited(key.clone());
                    }
                }
                ctx.queue.done(&key);
            }
        });
    }
    let ended = tasks.join_next().await;
    ctx.queue.shutdown();
    tracing::error!(?ended, "an endpoints controller task ended");
    Err(RunError::Stopped("endpoints controller"))
}
