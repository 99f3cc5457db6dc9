//! The ReplicaSet and Deployment controllers: informers over pods, ReplicaSets and
//! Deployments, and a loop that syncs every object of its kind after any change (debounced)
//! and every second, applying [`crate::plan::replicaset`] / [`crate::plan::deployment`].
//! Writes go through to the caches at once (client-go's "expectations": a pod just created is
//! counted before its watch event arrives).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

use super::events::Recorder;
use super::{RunError, informer};
use crate::cache::{Cache, Change};
use crate::plan::deployment::{self as dplan, RsAction};
use crate::plan::replicaset::{self as rsplan, PodDiff};

/// Full resync period (also how soon `minReadySeconds` and progress deadlines are noticed).
const RESYNC: Duration = Duration::from_secs(1);
/// Changes arriving within this window are synced together.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Waits for a change on either channel or the resync tick, then drains both.
async fn next<A, B>(
    a: &mut UnboundedReceiver<Vec<Change<A>>>,
    b: &mut UnboundedReceiver<Vec<Change<B>>>,
) -> bool {
    let woke = tokio::select! {
        x = a.recv() => x.is_some(),
        x = b.recv() => x.is_some(),
        _ = tokio::time::sleep(RESYNC) => true,
    };
    tokio::time::sleep(DEBOUNCE).await;
    while a.try_recv().is_ok() {}
    while b.try_recv().is_ok() {}
    woke
}

fn reference(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some(kind.into()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        ..Default::default()
    }
}

/// Runs the ReplicaSet controller until dropped.
pub async fn run_replicasets(client: Client, recorder: Arc<Recorder>) -> Result<(), RunError> {
    let mut tasks = JoinSet::new();
    let (pods, mut pod_rx) =
        informer::start_synced(Api::<Pod>::all(client.clone()), &mut tasks).await;
    let (rss, mut rs_rx) =
        informer::start_synced(Api::<ReplicaSet>::all(client.clone()), &mut tasks).await;
    loop {
        if !next(&mut pod_rx, &mut rs_rx).await {
            return Err(RunError::Stopped("replicaset-controller"));
        }
        let all_pods = pods.list();
        for rs in rss.list() {
            if rs.metadata.deletion_timestamp.is_some() {
                continue;
            }
            sync_replica_set(&client, &recorder, &pods, &rss, &rs, &all_pods).await;
        }
    }
}

async fn sync_replica_set(
    client: &Client,
    recorder: &Recorder,
    pods: &Cache<Pod>,
    rss: &Cache<ReplicaSet>,
    rs: &ReplicaSet,
    all_pods: &[Arc<Pod>],
) {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let name = rs.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let owned: Vec<&Pod> = rsplan::owned(rs, all_pods)
        .into_iter()
        .filter(|p| rsplan::is_active(p))
        .collect();
    let rs_ref = reference("ReplicaSet", &rs.metadata);
    let mut changed = false;
    match rsplan::diff(rs, &owned) {
        PodDiff::None => {}
        PodDiff::Create(n) => {
            for _ in 0..n {
                match api
                    .create(&PostParams::default(), &rsplan::new_pod(rs))
                    .await
                {
                    Ok(p) => {
                        let pod_name = p.metadata.name.clone().unwrap_or_default();
                        pods.write_through(p);
                        changed = true;
                        recorder
                            .record(
                                &rs_ref,
                                "Normal",
                                "SuccessfulCreate",
                                &format!("Created pod: {pod_name}"),
                            )
                            .await;
                    }
                    Err(error) => {
                        tracing::warn!(replicaset = %name, %error, "creating a pod failed");
                        recorder
                            .record(
                                &rs_ref,
                                "Warning",
                                "FailedCreate",
                                &format!("Error creating: {error}"),
                            )
                            .await;
                        break;
                    }
                }
            }
        }
        PodDiff::Delete(names) => {
            for pod_name in names {
                match api.delete(&pod_name, &DeleteParams::default()).await {
                    Ok(either) => {
                        if let Some(p) = either.left() {
                            pods.write_through(p);
                        } else {
                            pods.remove(&crate::cache::ObjKey::new(ns.as_str(), pod_name.as_str()));
                        }
                        changed = true;
                        recorder
                            .record(
                                &rs_ref,
                                "Normal",
                                "SuccessfulDelete",
                                &format!("Deleted pod: {pod_name}"),
                            )
                            .await;
                    }
                    Err(error) => {
                        tracing::warn!(replicaset = %name, pod = %pod_name, %error, "deleting a pod failed");
                    }
                }
            }
        }
    }
    let owned: Vec<&Pod>;
    let refreshed;
    if changed {
        refreshed = pods.list();
        owned = rsplan::owned(rs, &refreshed)
            .into_iter()
            .filter(|p| rsplan::is_active(p))
            .collect();
    } else {
        owned = rsplan::owned(rs, all_pods)
            .into_iter()
            .filter(|p| rsplan::is_active(p))
            .collect();
    }
    let status = rsplan::status(rs, &owned, jiff::Timestamp::now());
    if rs.status.as_ref() != Some(&status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        match rs_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
        {
            Ok(updated) => rss.write_through(updated),
            Err(error) => tracing::debug!(replicaset = %name, %error, "status update failed"),
        }
    }
}

/// Runs the Deployment controller until dropped.
pub async fn run_deployments(client: Client, recorder: Arc<Recorder>) -> Result<(), RunError> {
    let mut tasks = JoinSet::new();
    let (deploys, mut d_rx) =
        informer::start_synced(Api::<Deployment>::all(client.clone()), &mut tasks).await;
    let (rss, mut rs_rx) =
        informer::start_synced(Api::<ReplicaSet>::all(client.clone()), &mut tasks).await;
    loop {
        if !next(&mut d_rx, &mut rs_rx).await {
            return Err(RunError::Stopped("deployment-controller"));
        }
        let all = rss.list();
        for d in deploys.list() {
            if d.metadata.deletion_timestamp.is_some() {
                continue;
            }
            sync_deployment(&client, &recorder, &deploys, &rss, &d, &all).await;
        }
    }
}

async fn sync_deployment(
    client: &Client,
    recorder: &Recorder,
    deploys: &Cache<Deployment>,
    rss: &Cache<ReplicaSet>,
    d: &Deployment,
    all: &[Arc<ReplicaSet>],
) {
    let ns = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let owned = dplan::owned(d, all);
    let plan = dplan::sync(d, &owned, jiff::Timestamp::now());
    let rs_api: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let d_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d_ref = reference("Deployment", &d.metadata);
    for action in &plan.actions {
        match action {
            RsAction::Create(rs) => {
                match rs_api.create(&PostParams::default(), rs.as_ref()).await {
                    Ok(created) => {
                        let rs_name = created.metadata.name.clone().unwrap_or_default();
                        let n = created.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                        rss.write_through(created);
                        recorder
                            .record(
                                &d_ref,
                                "Normal",
                                "ScalingReplicaSet",
                                &format!("Scaled up replica set {rs_name} from 0 to {n}"),
                            )
                            .await;
                    }
                    Err(error) => {
                        tracing::warn!(deployment = %name, %error, "creating a replica set failed");
                        return;
                    }
                }
            }
            RsAction::Update {
                name: rs_name,
                replicas,
                annotations,
            } => {
                let old = owned
                    .iter()
                    .find(|r| r.metadata.name.as_ref() == Some(rs_name))
                    .and_then(|r| r.spec.as_ref())
                    .and_then(|s| s.replicas)
                    .unwrap_or(0);
                let patch = json!({"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}});
                match rs_api
                    .patch(rs_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(updated) => {
                        rss.write_through(updated);
                        if old != *replicas {
                            let dir = if *replicas > old { "up" } else { "down" };
                            recorder
                                .record(
                                    &d_ref,
                                    "Normal",
                                    "ScalingReplicaSet",
                                    &format!(
                                        "Scaled {dir} replica set {rs_name} from {old} to {replicas}"
                                    ),
                                )
                                .await;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(deployment = %name, replicaset = %rs_name, %error, "scaling failed");
                        return;
                    }
                }
            }
        }
    }
    if let Some(rev) = &plan.revision {
        let patch = json!({"metadata": {"annotations": {dplan::REVISION: rev}}});
        match d_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(updated) => deploys.write_through(updated),
            Err(error) => {
                tracing::warn!(deployment = %name, %error, "revision update failed");
                return;
            }
        }
    }
    if d.status.as_ref() != Some(&plan.status) {
        match d_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": plan.status})),
            )
            .await
        {
            Ok(updated) => deploys.write_through(updated),
            Err(error) => tracing::debug!(deployment = %name, %error, "status update failed"),
        }
    }
}
