//! kube-proxy's metrics, under upstream's names (`pkg/proxy/metrics/metrics.go`), served as
//! the Prometheus text format on `--metrics-bind-address`.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The proxy's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_network_programming_duration_seconds`: from the slice's
    /// `endpoints.kubernetes.io/last-change-trigger-time` to the rules in the kernel.
    pub network_programming: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`.
    pub full_sync_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`.
    pub partial_sync_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_nftables_sync_failures_total`.
    pub sync_failures: Counter,
    registry: Registry,
}

fn programming_buckets() -> Vec<f64> {
    // Upstream: 0.25 0.5, 1..59 by 1, 60..115 by 5, 120..300 by 30.
    let mut b = vec![0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let sync = || Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let m = Metrics {
            sync_duration: sync(),
            network_programming: Histogram::new(programming_buckets()),
            last_sync: Gauge::default(),
            full_sync_duration: sync(),
            partial_sync_duration: sync(),
            sync_failures: Counter::default(),
            registry: Registry::default(),
        };
        let mut r = Registry::default();
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        r.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.sync_failures.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
