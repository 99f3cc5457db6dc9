//! `core/v1` Events, as client-go's legacy recorder writes them (every API server serves
//! them): named `<object>.<unix nanos in hex>`, in the object's namespace (`default` for
//! cluster-scoped objects), `source.component` set; a repeat of the same object, reason and
//! message bumps `count` and `lastTimestamp` of the earlier Event instead of creating another.
//! Best effort: failures are logged, never returned.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// `Normal`.
pub const NORMAL: &str = "Normal";
/// `Warning`.
pub const WARNING: &str = "Warning";

/// How many distinct events are remembered for aggregation.
const MEMORY: usize = 4096;

type Key = (String, String, String, String, String);

/// Writes Events for one component.
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    seen: Mutex<HashMap<Key, (String, String, i32)>>,
}

impl Recorder {
    /// A recorder whose events say `source.component: component`.
    pub fn new(client: Client, component: impl Into<String>) -> Self {
        Self {
            client,
            component: component.into(),
            host: None,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Events also say `source.host: host` (kubelet's: its node's name).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Records an event about `obj`.
    pub async fn record(&self, obj: &ObjectReference, type_: &str, reason: &str, message: &str) {
        let namespace = obj
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = obj.name.clone().unwrap_or_default();
        // The field path too: two containers' events of one pod are not one event.
        let key: Key = (
            obj.kind.clone().unwrap_or_default(),
            namespace.clone(),
            format!("{name}/{}", obj.field_path.as_deref().unwrap_or_default()),
            reason.to_string(),
            message.to_string(),
        );
        let now = jiff::Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some((ns, event_name, count)) = previous {
            let body = serde_json::json!({
                "count": count + 1,
                "lastTimestamp": Time(now),
            });
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            if api
                .patch(&event_name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .is_ok()
            {
                self.remember(key, (ns, event_name, count + 1));
                return;
            }
        }
        let event_name = format!("{name}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(event_name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: obj.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => self.remember(key, (namespace, event_name, 1)),
            Err(error) => tracing::warn!(%error, reason, message, "could not record event"),
        }
    }

    fn remember(&self, key: Key, value: (String, String, i32)) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MEMORY {
            seen.clear();
        }
        seen.insert(key, value);
    }
}

/// A reference to a Node (upstream `RecordNodeStatusChange` uses the node's UID).
pub fn node_ref(node: &k8s_openapi::api::core::v1::Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..Default::default()
    }
}

/// A reference to a Service.
pub fn service_ref(svc: &k8s_openapi::api::core::v1::Service) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace.clone(),
        uid: svc.metadata.uid.clone(),
        resource_version: svc.metadata.resource_version.clone(),
        ..Default::default()
    }
}
