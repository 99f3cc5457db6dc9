//! The `endpoints.kubernetes.io/last-change-trigger-time` tracker (upstream
//! `TriggerTimeTracker`): the earliest change not yet reflected in a Service's endpoints, so
//! consumers can measure how long endpoint propagation took.
//!
//! A pod's trigger time is when its `Ready` condition last transitioned; a Service's is its
//! creation time. A sync reports the minimum over the trigger times that moved since the
//! previous sync of that Service (the Service's creation time on its first sync).

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};

use super::pods;

/// The annotation written on EndpointSlices and Endpoints that a sync changes.
pub const ANNOTATION_LAST_CHANGE_TRIGGER_TIME: &str =
    "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, Timestamp>,
    service: Option<Timestamp>,
}

/// Per-Service memory of the trigger times seen at the last sync.
#[derive(Debug, Default)]
pub struct TriggerTimeTracker {
    services: HashMap<String, State>,
}

impl TriggerTimeTracker {
    /// The trigger time for a sync of `svc` (key `namespace/name`) with its selected `pods`,
    /// and remembers the times seen.
    pub fn compute<'a>(
        &mut self,
        key: &str,
        svc: &Service,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Option<Timestamp> {
        let known = self.services.contains_key(key);
        let state = self.services.entry(key.to_string()).or_default();
        let mut min: Option<Timestamp> = None;
        let mut seen = HashMap::new();
        for pod in pods {
            let Some(t) = pods::ready_transition_time(pod) else {
                continue;
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if state.pods.get(&name).is_none_or(|last| t > *last) {
                min = Some(min.map_or(t, |m| m.min(t)));
            }
            seen.insert(name, t);
        }
        let created = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let Some(c) = created
            && state.service.is_none_or(|last| c > last)
        {
            min = Some(min.map_or(c, |m| m.min(c)));
        }
        state.pods = seen;
        state.service = created;
        if known { min } else { created }
    }

    /// Forgets a deleted Service.
    pub fn forget(&mut self, key: &str) {
        self.services.remove(key);
    }
}

/// The annotation's value: RFC 3339 with nanoseconds, UTC (Go's `time.RFC3339Nano`).
pub fn format(t: Timestamp) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::pods::fixtures::{pod, service};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn with_ready_at(mut p: Pod, at: &str) -> Pod {
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(Time(at.parse().unwrap()));
        p
    }

    #[test]
    fn should_report_service_creation_on_first_sync_then_earliest_new_pod_change() {
        let svc = service("web", &["IPv4"]);
        let mut t = TriggerTimeTracker::default();
        let a = with_ready_at(pod("a", &["10.244.0.5"], true, 80), "2026-01-01T00:01:00Z");
        let b = with_ready_at(pod("b", &["10.244.0.6"], true, 80), "2026-01-01T00:02:00Z");
        assert_eq!(
            t.compute("default/web", &svc, [&a, &b]),
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        // Nothing moved: no trigger time.
        assert_eq!(t.compute("default/web", &svc, [&a, &b]), None);
        let b2 = with_ready_at(b.clone(), "2026-01-01T00:03:00Z");
        let c = with_ready_at(pod("c", &["10.244.0.7"], true, 80), "2026-01-01T00:04:00Z");
        assert_eq!(
            t.compute("default/web", &svc, [&a, &b2, &c]),
            Some("2026-01-01T00:03:00Z".parse().unwrap())
        );
        t.forget("default/web");
        assert_eq!(
            t.compute("default/web", &svc, [&a]),
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn should_format_like_go_rfc3339_nano() {
        let t: Timestamp = "2026-01-01T00:00:05.123456789Z".parse().unwrap();
        assert_eq!(format(t), "2026-01-01T00:00:05.123456789Z");
        let t: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
        assert_eq!(format(t), "2026-01-01T00:00:05Z");
    }
}
