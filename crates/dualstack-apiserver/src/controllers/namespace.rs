//! Namespace lifecycle: a namespace marked for deletion is Terminating; its objects are
//! deleted (pods on nodes that do not exist are removed at once, as the pod GC would), and when
//! none remain the `kubernetes` finalizer is removed through `/finalize`, which deletes it.

use dualstack_apimachinery::status::ApiError;
use serde_json::Value;
use tokio::sync::watch;

use crate::handlers::Resources;
use crate::kinds::namespace::FINALIZER;
use crate::registry::{DeleteOpts, Storage};
use crate::resource::Ctx;

async fn terminating(res: &Resources) -> Vec<String> {
    let Some(ns_api) = res.by_plural("namespaces") else {
        return Vec::new();
    };
    let Ok(page) = ns_api.list(None, &Default::default()) else {
        return Vec::new();
    };
    page.items
        .iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&e.output).ok())
        .filter(|v| v["metadata"]["deletionTimestamp"].is_string())
        .filter_map(|v| v["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// Deletes what is left in `ns`; true when it is empty.
async fn empty_namespace(res: &Resources, ns: &str) -> Result<bool, ApiError> {
    let ctx = Ctx::system("namespace-controller");
    let nodes = res.by_plural("nodes");
    let mut empty = true;
    for api in res.list.iter().filter(|r| r.def().namespaced) {
        let page = api
            .list(Some(ns), &Default::default())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        for e in &page.items {
            empty = false;
            let v: Value = serde_json::from_slice(&e.output).unwrap_or(Value::Null);
            if v["metadata"]["deletionTimestamp"].is_string() && api.def().plural != "pods" {
                continue;
            }
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            let mut opts = DeleteOpts::default();
            if api.def().plural == "pods" {
                let node = v["spec"]["nodeName"].as_str().unwrap_or("");
                let node_exists = match nodes {
                    Some(n) if !node.is_empty() => n.get(None, node).await.is_ok(),
                    _ => false,
                };
                if !node_exists {
                    opts.grace_period_seconds = Some(0);
                } else if v["metadata"]["deletionTimestamp"].is_string() {
                    continue;
                }
            }
            match api.delete(&ctx, Some(ns), &name, &opts).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(namespace = ns, name, error = %e, "namespace controller: delete failed")
                }
            }
        }
    }
    Ok(empty)
}

async fn finalize(res: &Resources, ns: &str) -> Result<(), ApiError> {
    let Some(api) = res.by_plural("namespaces") else {
        return Ok(());
    };
    let entry = api.get(None, ns).await?;
    let mut v: Value =
        serde_json::from_slice(&entry.output).map_err(|e| ApiError::Internal(e.to_string()))?;
    let fins: Vec<Value> = v["spec"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|f| f.as_str() != Some(FINALIZER))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    v["spec"]["finalizers"] = Value::Array(fins);
    let mut ctx = Ctx::system("namespace-controller");
    api.update(&mut ctx, None, ns, Some("finalize"), v, &[])
        .await
        .map(|_| ())
}

async fn sync(res: &Resources) {
    for ns in terminating(res).await {
        match empty_namespace(res, &ns).await {
            Ok(true) => {
                if let Err(e) = finalize(res, &ns).await
                    && !matches!(e, ApiError::NotFound { .. })
                {
                    tracing::warn!(namespace = ns, error = %e, "namespace controller: finalize failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(namespace = ns, error = %e, "namespace controller"),
        }
    }
}

/// Runs the controller until shutdown.
pub fn start(
    storage: Storage,
    res: Resources,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    super::resync_on_changes(storage, shutdown, move || {
        let res = res.clone();
        async move { sync(&res).await }
    })
}
