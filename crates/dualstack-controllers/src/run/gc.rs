//! The garbage collector: discovers every listable, watchable, deletable resource, watches
//! each (one graph keyed by uid), and applies [`crate::plan::gc`] after any change (debounced)
//! and every few seconds: deletes with a uid precondition and the chosen propagation, owner
//! reference and finalizer removals as merge patches guarded by `resourceVersion`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::RunError;
use crate::plan::gc::{self, GcAction, GcObject};

/// Full pass period.
const RESYNC: Duration = Duration::from_secs(5);

/// Where an object lives: its resource, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct At {
    resource: usize,
    namespace: Option<String>,
    name: String,
}

type Graph = Arc<Mutex<HashMap<At, (GcObject<At>, DynamicObject)>>>;

fn api(client: &Client, ar: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Runs the garbage collector until dropped.
pub async fn run(client: Client) -> Result<(), RunError> {
    let discovery = loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => break d,
            Err(error) => {
                tracing::warn!(%error, "garbage collector: discovery failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let mut resources: Vec<(ApiResource, bool)> = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.supports_operation(verbs::LIST)
                && caps.supports_operation(verbs::WATCH)
                && caps.supports_operation(verbs::DELETE)
                && caps.supports_operation(verbs::PATCH)
            {
                resources.push((ar, caps.scope == Scope::Namespaced));
            }
        }
    }
    tracing::info!(resources = resources.len(), "garbage collector watching");
    let graph: Graph = Arc::default();
    let notify = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    for (i, (ar, namespaced)) in resources.iter().enumerate() {
        let (graph, notify, ar) = (graph.clone(), notify.clone(), ar.clone());
        let namespaced = *namespaced;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        tasks.spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut relist: Option<HashMap<At, (GcObject<At>, DynamicObject)>> = None;
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let at_of = |o: &DynamicObject| At {
                    resource: i,
                    namespace: if namespaced {
                        o.metadata.namespace.clone()
                    } else {
                        None
                    },
                    name: o.metadata.name.clone().unwrap_or_default(),
                };
                let node = |o: &DynamicObject| GcObject {
                    at: at_of(o),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    owners: o.metadata.owner_references.clone().unwrap_or_default(),
                    deleting: o.metadata.deletion_timestamp.is_some(),
                    finalizers: o.metadata.finalizers.clone().unwrap_or_default(),
                };
                let mut g = graph.lock().expect("gc graph");
                match event {
                    watcher::Event::Init => relist = Some(HashMap::new()),
                    watcher::Event::InitApply(o) => {
                        if let Some(r) = relist.as_mut() {
                            r.insert(at_of(&o), (node(&o), o));
                        }
                    }
                    watcher::Event::InitDone => {
                        g.retain(|k, _| k.resource != i);
                        g.extend(relist.take().unwrap_or_default());
                    }
                    watcher::Event::Apply(o) => {
                        g.insert(at_of(&o), (node(&o), o));
                    }
                    watcher::Event::Delete(o) => {
                        g.remove(&at_of(&o));
                    }
                }
                drop(g);
                notify.notify_one();
            }
        });
    }
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (objects, rvs): (Vec<GcObject<At>>, HashMap<At, DynamicObject>) = {
            let g = graph.lock().expect("gc graph");
            (
                g.values().map(|(n, _)| n.clone()).collect(),
                g.iter().map(|(k, (_, o))| (k.clone(), o.clone())).collect(),
            )
        };
        for action in gc::plan(&objects) {
            apply(&client, &resources, &rvs, action).await;
        }
        if tasks.is_empty() {
            return Err(RunError::Stopped("garbage-collector-controller"));
        }
    }
}

async fn apply(
    client: &Client,
    resources: &[(ApiResource, bool)],
    objects: &HashMap<At, DynamicObject>,
    action: GcAction<At>,
) {
    let at = match &action {
        GcAction::Delete { at, .. }
        | GcAction::RemoveOwners { at, .. }
        | GcAction::RemoveFinalizer { at, .. } => at.clone(),
    };
    let Some(obj) = objects.get(&at) else { return };
    let ar = &resources[at.resource].0;
    let api = api(client, ar, at.namespace.as_deref());
    let rv = obj.metadata.resource_version.clone();
    let result = match action {
        GcAction::Delete {
            uid, propagation, ..
        } => {
            tracing::info!(kind = %ar.kind, name = %at.name, propagation, "garbage collecting");
            let dp = DeleteParams {
                propagation_policy: Some(match propagation {
                    "Foreground" => kube::api::PropagationPolicy::Foreground,
                    _ => kube::api::PropagationPolicy::Background,
                }),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            api.delete(&at.name, &dp).await.map(|_| ())
        }
        GcAction::RemoveOwners { uids, .. } => {
            let kept: Vec<_> = obj
                .metadata
                .owner_references
                .iter()
                .flatten()
                .filter(|r| !uids.contains(&r.uid))
                .cloned()
                .collect();
            let patch = json!({"metadata": {"ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) }, "resourceVersion": rv}});
            api.patch(&at.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
        }
        GcAction::RemoveFinalizer { finalizer, .. } => {
            let kept: Vec<_> = obj
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != finalizer)
                .cloned()
                .collect();
            let patch = json!({"metadata": {"finalizers": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) }, "resourceVersion": rv}});
            api.patch(&at.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(|_| ())
        }
    };
    if let Err(error) = result {
        tracing::debug!(kind = %ar.kind, name = %at.name, %error, "garbage collector action failed");
    }
}
