//! `core/v1` Events, as client-go's legacy recorder writes them (every API server serves
//! them): named `<object>.<unix nanos in hex>`, in the object's namespace (`default` for
//! cluster-scoped objects), `source.component` set; a repeat of the same object, reason and
//! message bumps `count` and `lastTimestamp` of the earlier Event instead of creating another.
//! Like client-go's spam filter, each object's events of one kind may come 25 at once, then one
//! per 5 minutes (a probe failing every second is not a write every second). Best effort:
//! failures are logged, never returned.

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

/// Kind, namespace, name/uid/fieldPath, type, reason, message (at most 1 KiB of it).
type Key = (String, String, String, String, String, String);

/// client-go's `EventSourceObjectSpamFilter`: a burst of 25, one more every 300 s.
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL_SECONDS: f64 = 300.0;

/// The spam filter's bucket: `tokens` left, `elapsed` seconds since; whether one more write
/// may go, and the tokens left after it.
fn spend(tokens: f64, elapsed: f64) -> (bool, f64) {
    let tokens = (tokens + elapsed / SPAM_REFILL_SECONDS).min(SPAM_BURST);
    if tokens < 1.0 {
        (false, tokens)
    } else {
        (true, tokens - 1.0)
    }
}

/// What is remembered of an event already written.
#[derive(Clone)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    tokens: f64,
    refilled: std::time::Instant,
}

/// Writes Events for one component.
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    seen: Mutex<HashMap<Key, Seen>>,
    /// One record at a time (client-go feeds one queue): two repeats in flight would both
    /// create an Event, or both write the same count.
    turn: tokio::sync::Mutex<()>,
}

impl Recorder {
    /// A recorder whose events say `source.component: component`.
    pub fn new(client: Client, component: impl Into<String>) -> Self {
        Self {
            client,
            component: component.into(),
            host: None,
            seen: Mutex::new(HashMap::new()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Events also say `source.host: host` (kubelet's: its node's name).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Records an event about `obj`.
    pub async fn record(&self, obj: &ObjectReference, type_: &str, reason: &str, message: &str) {
        let _turn = self.turn.lock().await;
        let namespace = obj
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = obj.name.clone().unwrap_or_default();
        // The uid and field path too: a recreated pod's events, or two containers' events
        // of one pod, are not one event.
        let mut short = message.to_string();
        if short.len() > 1024 {
            let mut end = 1024;
            while !short.is_char_boundary(end) {
                end -= 1;
            }
            short.truncate(end);
        }
        let key: Key = (
            obj.kind.clone().unwrap_or_default(),
            namespace.clone(),
            format!(
                "{name}/{}/{}",
                obj.uid.as_deref().unwrap_or_default(),
                obj.field_path.as_deref().unwrap_or_default()
            ),
            type_.to_string(),
            reason.to_string(),
            short,
        );
        let now = jiff::Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let previous = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(mut seen) = previous {
            // The spam filter: a token per write, refilled over time.
            let (allowed, tokens) = spend(seen.tokens, seen.refilled.elapsed().as_secs_f64());
            seen.tokens = tokens;
            seen.refilled = std::time::Instant::now();
            if !allowed {
                self.remember(key, seen);
                return;
            }
            let body = serde_json::json!({
                "count": seen.count + 1,
                "lastTimestamp": Time(now),
            });
            let api: Api<Event> = Api::namespaced(self.client.clone(), &seen.namespace);
            if api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .is_ok()
            {
                seen.count += 1;
                self.remember(key, seen);
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
            Ok(_) => self.remember(
                key,
                Seen {
                    namespace,
                    name: event_name,
                    count: 1,
                    tokens: SPAM_BURST - 1.0,
                    refilled: std::time::Instant::now(),
                },
            ),
            Err(error) => tracing::warn!(%error, reason, message, "could not record event"),
        }
    }

    fn remember(&self, key: Key, value: Seen) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_come_25_at_once_then_one_per_five_minutes() {
        // The first write took one token of the burst.
        let mut tokens = SPAM_BURST - 1.0;
        let mut written = 1;
        for _ in 0..100 {
            let (ok, left) = spend(tokens, 1.0);
            tokens = left;
            written += usize::from(ok);
        }
        // 25 in the burst, plus what 100 s refilled (a third of a token).
        assert_eq!(written, 25);
        let (ok, left) = spend(tokens, 200.0);
        assert!(ok, "a token refilled after 300 s in all: {left}");
        let (ok, _) = spend(left, 1.0);
        assert!(!ok);
        // Never more than the burst, however long the quiet.
        assert_eq!(spend(0.0, 1e9), (true, SPAM_BURST - 1.0));
    }
}
