//! Prometheus metrics of the controllers, with upstream's names where upstream has them:
//!
//! * node IPAM (`pkg/controller/nodeipam/ipam/cidrset/metrics.go`, subsystem
//!   `node_ipam_controller`, label `clusterCIDR`): `..._cidrset_cidrs_allocations_total`,
//!   `..._cidrset_cidrs_releases_total`, `..._cidrset_usage_cidrs` (fraction used),
//!   `..._cirdset_max_cidrs` (upstream's spelling), `..._cidrset_allocation_tries_per_request`;
//! * EndpointSlices: `endpoint_slice_controller_syncs_total{result}`,
//!   `endpoint_slice_controller_changes_total{operation}`, and
//!   `endpoint_slice_controller_sync_duration_seconds`;
//! * LoadBalancer pools: `service_lb_controller_ip_allocations_total{family}`,
//!   `service_lb_controller_ip_releases_total{family}`, `service_lb_controller_pool_used{family}`,
//!   `service_lb_controller_sync_duration_seconds`;
//! * `leader_election_master_status{name}` (client-go's).
//!
//! [`Metrics::encode`] renders the text format; [`Metrics::register`] adds the same metrics to
//! another registry (the API server's `/metrics`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the node IPAM metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)]
pub struct CidrLabels {
    /// The cluster CIDR of the set.
    pub clusterCIDR: String,
}

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `error`.
    pub result: String,
}

/// An operation label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `create`, `update` or `delete`.
    pub operation: String,
}

/// A family label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabels {
    /// `IPv4` or `IPv6`.
    pub family: String,
}

/// A lease label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    /// The Lease name.
    pub name: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every controller metric.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// CIDRs marked used (allocations and occupations), per cluster CIDR.
    pub cidr_allocations: Family<CidrLabels, Counter>,
    /// CIDRs freed, per cluster CIDR.
    pub cidr_releases: Family<CidrLabels, Counter>,
    /// Fraction of the set in use, per cluster CIDR.
    pub cidr_usage: Family<CidrLabels, FloatGauge>,
    /// Size of the set, per cluster CIDR.
    pub cidr_max: Family<CidrLabels, FloatGauge>,
    /// Used candidates skipped per allocation, per cluster CIDR.
    pub cidr_tries: Family<CidrLabels, Histogram>,
    /// EndpointSlice syncs by result.
    pub slice_syncs: Family<ResultLabels, Counter>,
    /// EndpointSlice writes by operation.
    pub slice_changes: Family<OperationLabels, Counter>,
    /// Duration of one Service's endpoints sync.
    pub slice_sync_duration: Histogram,
    /// LoadBalancer addresses taken, per family.
    pub lb_allocations: Family<FamilyLabels, Counter>,
    /// LoadBalancer addresses given back, per family.
    pub lb_releases: Family<FamilyLabels, Counter>,
    /// LoadBalancer addresses in use, per family.
    pub lb_used: Family<FamilyLabels, FloatGauge>,
    /// Duration of one LoadBalancer decision and status write.
    pub lb_sync_duration: Histogram,
    /// 1 while this process holds the Lease.
    pub leader: Family<NameLabels, Gauge>,
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

fn durations() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// Creates the metrics in their own registry.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Arc::new(Registry::default()),
            cidr_allocations: Family::default(),
            cidr_releases: Family::default(),
            cidr_usage: Family::default(),
            cidr_max: Family::default(),
            cidr_tries: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 5.0, 5))
            }),
            slice_syncs: Family::default(),
            slice_changes: Family::default(),
            slice_sync_duration: durations(),
            lb_allocations: Family::default(),
            lb_releases: Family::default(),
            lb_used: Family::default(),
            lb_sync_duration: durations(),
            leader: Family::default(),
        };
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.registry = Arc::new(registry);
        m
    }

    /// Registers these metrics (the same handles) into `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "node_ipam_controller_cidrset_cidrs_allocations",
            "Counter measuring total number of CIDR allocations.",
            self.cidr_allocations.clone(),
        );
        registry.register(
            "node_ipam_controller_cidrset_cidrs_releases",
            "Counter measuring total number of CIDR releases.",
            self.cidr_releases.clone(),
        );
        registry.register(
            "node_ipam_controller_cidrset_usage_cidrs",
            "Gauge measuring percentage of allocated CIDRs.",
            self.cidr_usage.clone(),
        );
        registry.register(
            "node_ipam_controller_cirdset_max_cidrs",
            "Maximum number of CIDRs that can be allocated.",
            self.cidr_max.clone(),
        );
        registry.register(
            "node_ipam_controller_cidrset_allocation_tries_per_request",
            "Number of used CIDRs skipped before a free one was found, per allocation",
            self.cidr_tries.clone(),
        );
        registry.register(
            "endpoint_slice_controller_syncs",
            "Number of EndpointSlice syncs",
            self.slice_syncs.clone(),
        );
        registry.register(
            "endpoint_slice_controller_changes",
            "Number of EndpointSlice changes",
            self.slice_changes.clone(),
        );
        registry.register(
            "endpoint_slice_controller_sync_duration_seconds",
            "Duration of one Service's EndpointSlice and Endpoints sync",
            self.slice_sync_duration.clone(),
        );
        registry.register(
            "service_lb_controller_ip_allocations",
            "LoadBalancer addresses taken from the pools",
            self.lb_allocations.clone(),
        );
        registry.register(
            "service_lb_controller_ip_releases",
            "LoadBalancer addresses given back to the pools",
            self.lb_releases.clone(),
        );
        registry.register(
            "service_lb_controller_pool_used",
            "LoadBalancer addresses in use",
            self.lb_used.clone(),
        );
        registry.register(
            "service_lb_controller_sync_duration_seconds",
            "Duration of one LoadBalancer Service sync",
            self.lb_sync_duration.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
            self.leader.clone(),
        );
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The label of a cluster CIDR.
    pub fn cidr(cidr: &ipnet::IpNet) -> CidrLabels {
        CidrLabels {
            clusterCIDR: cidr.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_encode_upstream_names_with_the_cluster_cidr_label() {
        let m = Metrics::new();
        let l = Metrics::cidr(&"10.244.0.0/16".parse().unwrap());
        m.cidr_allocations.get_or_create(&l).inc();
        m.cidr_usage.get_or_create(&l).set(1.0 / 256.0);
        m.cidr_tries.get_or_create(&l).observe(0.0);
        let text = m.encode();
        assert!(
            text.contains("node_ipam_controller_cidrset_cidrs_allocations_total{clusterCIDR=\"10.244.0.0/16\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "node_ipam_controller_cidrset_usage_cidrs{clusterCIDR=\"10.244.0.0/16\"} 0.00390625"
        ));
        assert!(text.contains("node_ipam_controller_cidrset_allocation_tries_per_request_count{clusterCIDR=\"10.244.0.0/16\"} 1"));
        let mut other = Registry::default();
        m.register(&mut other);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &other).unwrap();
        assert!(out.contains("cidrset_cidrs_allocations_total{clusterCIDR=\"10.244.0.0/16\"} 1"));
    }
}
