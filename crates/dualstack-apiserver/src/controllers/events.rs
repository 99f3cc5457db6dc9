//! Recording core/v1 Events from inside the server.

use std::sync::Arc;

use dualstack_apimachinery::status::ApiError;
use serde_json::json;

use crate::api::ResourceApi;
use crate::registry::{now, time_string};
use crate::resource::Ctx;

/// The object an event is about.
#[derive(Debug, Clone)]
pub struct Involved {
    /// Kind.
    pub kind: String,
    /// apiVersion.
    pub api_version: String,
    /// Namespace.
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: Option<String>,
}

/// Records an event (`type` Normal or Warning) in the involved object's namespace
/// (`default` for cluster-scoped objects).
pub async fn record(
    events: &Arc<dyn ResourceApi>,
    component: &str,
    obj: &Involved,
    ty: &str,
    reason: &str,
    message: &str,
) -> Result<(), ApiError> {
    let ns = obj.namespace.clone().unwrap_or_else(|| "default".into());
    let t = time_string(now());
    let name = format!("{}.{:016x}", obj.name, rand::random::<u64>());
    let body = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": obj.kind, "apiVersion": obj.api_version, "namespace": obj.namespace,
            "name": obj.name, "uid": obj.uid,
        },
        "reason": reason,
        "message": message,
        "type": ty,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": t,
        "lastTimestamp": t,
        "count": 1,
        "action": reason,
    });
    let mut ctx = Ctx::system(component);
    events
        .create(&mut ctx, Some(&ns), body, &[])
        .await
        .map(|_| ())
}
