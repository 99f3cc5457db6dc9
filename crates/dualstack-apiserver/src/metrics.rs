//! Prometheus metrics with upstream's names (`apiserver_request_total`,
//! `apiserver_request_duration_seconds`), served on `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a request metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `POST`, ...
    pub verb: String,
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// `namespace`, `cluster` or `resource`.
    pub scope: String,
    /// Always `apiserver`.
    pub component: String,
    /// HTTP code.
    pub code: String,
}

/// Labels of the duration histogram (no code, as upstream).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    pub subresource: String,
    /// Scope.
    pub scope: String,
    /// Component.
    pub component: String,
}

/// Another component's metrics served on the same `/metrics` (OpenMetrics text).
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    sources: Arc<std::sync::Mutex<Vec<MetricsSource>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register("apiserver_request", "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.", requests.clone());
        registry.register("apiserver_request_duration_seconds", "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.", durations.clone());
        Self {
            registry: Arc::new(registry),
            requests,
            durations,
            sources: Default::default(),
        }
    }

    /// Records one request.
    pub fn observe(&self, l: RequestLabels, seconds: f64) {
        let d = DurationLabels {
            verb: l.verb.clone(),
            group: l.group.clone(),
            version: l.version.clone(),
            resource: l.resource.clone(),
            subresource: l.subresource.clone(),
            scope: l.scope.clone(),
            component: l.component.clone(),
        };
        self.requests.get_or_create(&l).inc();
        if l.verb != "WATCH" {
            self.durations.get_or_create(&d).observe(seconds);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        let strip = |s: &mut String| {
            if let Some(i) = s.rfind("# EOF") {
                s.truncate(i);
            }
        };
        strip(&mut out);
        for source in self.sources.lock().expect("metrics sources").iter() {
            let mut text = source();
            strip(&mut text);
            out.push_str(&text);
        }
        out.push_str("# EOF\n");
        out
    }

    /// Adds another component's metrics (e.g. the built-in controllers) to `/metrics`.
    pub fn add_source(&self, source: MetricsSource) {
        self.sources.lock().expect("metrics sources").push(source);
    }
}
