//! The controller-manager's own flags, validated with upstream's messages (pure).
//!
//! * [`ControllerSelection`]: `--controllers` (`*`, `name`, `-name`), as
//!   kube-controller-manager's `IsControllerEnabled`; `-*` (an extension) turns every controller
//!   off.
//! * [`parse_kcm_service_cidrs`]: kube-controller-manager's own copy of
//!   `--service-cluster-ip-range` (no default; only used to keep node CIDRs off service VIPs).
//! * [`parse_lb_pools`]: `--loadbalancer-ip-pool=CIDR|FIRST-LAST`, repeatable.
//! * [`LeaderElectionConfig`] and [`EndpointSliceOptions`] with client-go's and
//!   kube-controller-manager's limits and texts.
//!
//! The node IPAM flags themselves are `dualstack_api::config::NodeIpamConfig`.

use std::time::Duration;

use dualstack_api::config::ConfigError;
use dualstack_ipam::{IpFamily, LbPool, PoolEntryError};
use ipnet::IpNet;
use thiserror::Error;

/// `--controllers` name of node IPAM (upstream `node-ipam-controller`).
pub const NODE_IPAM: &str = "node-ipam-controller";
/// `--controllers` name of the EndpointSlice controller (upstream `endpointslice-controller`).
pub const ENDPOINTSLICE: &str = "endpointslice-controller";
/// `--controllers` name of the legacy Endpoints controller (upstream `endpoints-controller`).
pub const ENDPOINTS: &str = "endpoints-controller";
/// `--controllers` name of the LoadBalancer address controller (upstream's cloud
/// `service-lb-controller`; here it hands out addresses from `--loadbalancer-ip-pool`).
pub const SERVICE_LB: &str = "service-lb-controller";
/// `--controllers` name of the node lifecycle controller (upstream
/// `node-lifecycle-controller`, old name `nodelifecycle`).
pub const NODE_LIFECYCLE: &str = "node-lifecycle-controller";
/// `--controllers` name of the scheduler. Upstream's scheduler is its own binary
/// (kube-scheduler); here it runs with the controllers, on by default, under the same Lease.
pub const SCHEDULER: &str = "scheduler";
/// `--controllers` name of the ReplicaSet controller (upstream `replicaset-controller`).
pub const REPLICASET: &str = "replicaset-controller";
/// `--controllers` name of the Deployment controller (upstream `deployment-controller`).
pub const DEPLOYMENT: &str = "deployment-controller";
/// `--controllers` name of the garbage collector (upstream `garbage-collector-controller`).
pub const GARBAGE_COLLECTOR: &str = "garbage-collector-controller";
/// Every controller this binary knows, in start order.
pub const ALL_CONTROLLERS: [&str; 9] = [
    NODE_IPAM,
    NODE_LIFECYCLE,
    ENDPOINTSLICE,
    ENDPOINTS,
    SERVICE_LB,
    SCHEDULER,
    REPLICASET,
    DEPLOYMENT,
    GARBAGE_COLLECTOR,
];

/// Upstream's old short names, accepted as aliases (kube-controller-manager keeps them too).
const ALIASES: [(&str, &str); 9] = [
    ("replicaset", REPLICASET),
    ("deployment", DEPLOYMENT),
    ("garbagecollector", GARBAGE_COLLECTOR),
    ("nodeipam", NODE_IPAM),
    ("nodelifecycle", NODE_LIFECYCLE),
    ("endpointslice", ENDPOINTSLICE),
    ("endpoint", ENDPOINTS),
    ("service", SERVICE_LB),
    ("default-scheduler", SCHEDULER),
];

/// Default `--leader-elect-lease-duration` (client-go `DefaultLeaseDuration`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default `--leader-elect-renew-deadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// Default `--leader-elect-retry-period`.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Default Lease namespace.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
/// Default Lease name; the in-server controllers and every standalone controller-manager share
/// it, so they never act together.
pub const DEFAULT_LEASE_NAME: &str = "dualstack-controller-manager";
/// client-go's `JitterFactor`.
const JITTER_FACTOR: f64 = 1.2;

/// Default `--max-endpoints-per-slice`.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Default `--concurrent-service-endpoint-syncs`.
pub const DEFAULT_CONCURRENT_ENDPOINT_SYNCS: usize = 5;

/// A controller-manager flag value upstream would refuse, with upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControllerConfigError {
    /// A `--controllers` entry names no known controller.
    #[error("{0:?} is not in the list of known controllers")]
    UnknownController(String),
    /// kube-controller-manager's `--service-cluster-ip-range` has more than two entries.
    #[error("--service-cluster-ip-range can not contain more than two entries")]
    ServiceRangeTooManyEntries,
    /// A shared dual-stack flag rule (node IPAM, service ranges, feature gates).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A `--loadbalancer-ip-pool` entry does not parse.
    #[error("invalid argument {value:?} for \"--loadbalancer-ip-pool\" flag: {source}")]
    LbPool {
        /// The entry as given.
        value: String,
        /// Why it was refused.
        #[source]
        source: PoolEntryError,
    },
    /// `--leader-elect-lease-duration` is not longer than the renew deadline.
    #[error("leaseDuration must be greater than renewDeadline")]
    LeaseNotLongerThanRenewDeadline,
    /// The renew deadline leaves no room for one jittered retry.
    #[error("renewDeadline must be greater than retryPeriod*JitterFactor")]
    RenewDeadlineTooShort,
    /// `--leader-elect-lease-duration` is zero.
    #[error("leaseDuration must be greater than zero")]
    LeaseDurationZero,
    /// `--leader-elect-renew-deadline` is zero.
    #[error("renewDeadline must be greater than zero")]
    RenewDeadlineZero,
    /// `--leader-elect-retry-period` is zero.
    #[error("retryPeriod must be greater than zero")]
    RetryPeriodZero,
    /// `--leader-elect-resource-lock` other than `leases`.
    #[error("leader election resource lock {0:?} is not supported; use \"leases\"")]
    ResourceLock(String),
    /// `--max-endpoints-per-slice` below 1.
    #[error("max-endpoints-per-slice must not be less than 1, but got {0}")]
    MaxEndpointsPerSliceTooSmall(i64),
    /// `--max-endpoints-per-slice` above 1000.
    #[error("max-endpoints-per-slice must not be more than 1000, but got {0}")]
    MaxEndpointsPerSliceTooLarge(i64),
    /// `--concurrent-service-endpoint-syncs` below 1.
    #[error("concurrent-service-endpoint-syncs must not be less than 1, but got {0}")]
    ConcurrentSyncsTooSmall(i64),
    /// `--concurrent-service-endpoint-syncs` above 50.
    #[error("concurrent-service-endpoint-syncs must not be more than 50, but got {0}")]
    ConcurrentSyncsTooLarge(i64),
    /// `--cidr-allocator-type=CloudAllocator` (no cloud provider here).
    #[error(
        "--cidr-allocator-type is set to 'CloudAllocator' but cloud provider is not configured"
    )]
    CloudAllocator,
    /// Any other `--cidr-allocator-type`.
    #[error("invalid CIDR allocator type: {0}")]
    UnknownAllocatorType(String),
}

/// `--controllers`: which controllers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSelection {
    entries: Vec<String>,
}

impl Default for ControllerSelection {
    fn default() -> Self {
        Self {
            entries: vec!["*".into()],
        }
    }
}

impl ControllerSelection {
    /// Parses a comma-separated list; every entry must be `*`, `-*`, or a known name (or one of
    /// upstream's old aliases) with an optional `-`.
    pub fn parse(value: &str) -> Result<Self, ControllerConfigError> {
        let mut entries = Vec::new();
        for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if raw == "*" || raw == "-*" {
                entries.push(raw.to_string());
                continue;
            }
            let (minus, name) = match raw.strip_prefix('-') {
                Some(n) => ("-", n),
                None => ("", raw),
            };
            let canonical = ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map(|(_, c)| *c)
                .unwrap_or(name);
            if !ALL_CONTROLLERS.contains(&canonical) {
                return Err(ControllerConfigError::UnknownController(name.to_string()));
            }
            entries.push(format!("{minus}{canonical}"));
        }
        Ok(Self { entries })
    }

    /// Upstream `IsControllerEnabled`: an explicit `name` or `-name` decides, in order; else
    /// `*` enables it; else it is off. `-*` never matches a name, so it leaves everything off.
    pub fn enabled(&self, name: &str) -> bool {
        let mut star = false;
        for e in &self.entries {
            if e == name {
                return true;
            }
            if e.strip_prefix('-') == Some(name) {
                return false;
            }
            if e == "*" {
                star = true;
            }
        }
        star
    }

    /// True when no controller is enabled.
    pub fn none_enabled(&self) -> bool {
        !ALL_CONTROLLERS.iter().any(|c| self.enabled(c))
    }
}

/// `--cidr-allocator-type`: only `RangeAllocator` exists without a cloud provider.
pub fn check_cidr_allocator_type(value: &str) -> Result<(), ControllerConfigError> {
    match value {
        "" | "RangeAllocator" => Ok(()),
        "CloudAllocator" => Err(ControllerConfigError::CloudAllocator),
        other => Err(ControllerConfigError::UnknownAllocatorType(
            other.to_string(),
        )),
    }
}

/// kube-controller-manager's `--service-cluster-ip-range`: empty means none; more than two
/// entries is an error; an entry that does not parse is skipped (upstream only logs it, so it
/// is returned for the caller to log); two parsed entries must be of different families.
pub fn parse_kcm_service_cidrs(
    value: &str,
) -> Result<(Vec<IpNet>, Vec<String>), ControllerConfigError> {
    if value.trim().is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let entries: Vec<&str> = value.split(',').collect();
    if entries.len() > 2 {
        return Err(ControllerConfigError::ServiceRangeTooManyEntries);
    }
    let mut cidrs = Vec::new();
    let mut skipped = Vec::new();
    for e in entries {
        match dualstack_api::net::parse_cidr_sloppy(e.trim()) {
            Some(n) => cidrs.push(n),
            None if e.trim().is_empty() => {}
            None => skipped.push(e.to_string()),
        }
    }
    if cidrs.len() == 2 && IpFamily::of_net(&cidrs[0]) == IpFamily::of_net(&cidrs[1]) {
        return Err(ConfigError::ServiceCidrsNotDualStack.into());
    }
    Ok((cidrs, skipped))
}

/// `--loadbalancer-ip-pool`: each flag value is one entry or a comma-separated list. No entry
/// at all means no pool (the LoadBalancer controller does not run, so another implementation
/// can serve the cluster).
pub fn parse_lb_pools<S: AsRef<str>>(
    values: &[S],
) -> Result<Option<LbPool>, ControllerConfigError> {
    let mut ranges = Vec::new();
    for value in values {
        for entry in value
            .as_ref()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let r = dualstack_ipam::PoolRange::parse(entry).map_err(|source| {
                ControllerConfigError::LbPool {
                    value: entry.to_string(),
                    source,
                }
            })?;
            ranges.push(r);
        }
    }
    if ranges.is_empty() {
        return Ok(None);
    }
    Ok(Some(LbPool::from_ranges(&ranges)))
}

/// Leader election settings (`--leader-elect*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// `--leader-elect`: when false, the controllers start at once.
    pub enabled: bool,
    /// How long a lease is valid after its holder last renewed it (as observed by others).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops acting.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This candidate's identity (holderIdentity).
    pub identity: String,
}

impl LeaderElectionConfig {
    /// Upstream's defaults with `identity`.
    pub fn with_identity(identity: impl Into<String>) -> Self {
        Self {
            enabled: true,
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            namespace: DEFAULT_LEASE_NAMESPACE.into(),
            name: DEFAULT_LEASE_NAME.into(),
            identity: identity.into(),
        }
    }

    /// client-go's `NewLeaderElector` checks, in its order.
    pub fn validate(&self) -> Result<(), ControllerConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ControllerConfigError::LeaseNotLongerThanRenewDeadline);
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(ControllerConfigError::RenewDeadlineTooShort);
        }
        if self.lease_duration.is_zero() {
            return Err(ControllerConfigError::LeaseDurationZero);
        }
        if self.renew_deadline.is_zero() {
            return Err(ControllerConfigError::RenewDeadlineZero);
        }
        if self.retry_period.is_zero() {
            return Err(ControllerConfigError::RetryPeriodZero);
        }
        Ok(())
    }
}

/// `--leader-elect-resource-lock`: only Leases (upstream's default since 1.20).
pub fn check_resource_lock(value: &str) -> Result<(), ControllerConfigError> {
    if value == "leases" {
        Ok(())
    } else {
        Err(ControllerConfigError::ResourceLock(value.to_string()))
    }
}

/// EndpointSlice and Endpoints controller settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointSliceOptions {
    /// `--max-endpoints-per-slice` (1–1000, default 100).
    pub max_endpoints_per_slice: usize,
    /// `--concurrent-service-endpoint-syncs` (1–50, default 5): Services synced at once.
    pub concurrent_syncs: usize,
}

impl Default for EndpointSliceOptions {
    fn default() -> Self {
        Self {
            max_endpoints_per_slice: DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            concurrent_syncs: DEFAULT_CONCURRENT_ENDPOINT_SYNCS,
        }
    }
}

impl EndpointSliceOptions {
    /// Validates the flag values as kube-controller-manager's `EndpointSliceControllerOptions`.
    pub fn from_flags(
        max_endpoints_per_slice: i64,
        concurrent_syncs: i64,
    ) -> Result<Self, ControllerConfigError> {
        if concurrent_syncs < 1 {
            return Err(ControllerConfigError::ConcurrentSyncsTooSmall(
                concurrent_syncs,
            ));
        }
        if concurrent_syncs > 50 {
            return Err(ControllerConfigError::ConcurrentSyncsTooLarge(
                concurrent_syncs,
            ));
        }
        if max_endpoints_per_slice < 1 {
            return Err(ControllerConfigError::MaxEndpointsPerSliceTooSmall(
                max_endpoints_per_slice,
            ));
        }
        if max_endpoints_per_slice > 1000 {
            return Err(ControllerConfigError::MaxEndpointsPerSliceTooLarge(
                max_endpoints_per_slice,
            ));
        }
        Ok(Self {
            max_endpoints_per_slice: max_endpoints_per_slice as usize,
            concurrent_syncs: concurrent_syncs as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_enable_controllers_as_upstream_is_controller_enabled() {
        let all = ControllerSelection::parse("*").unwrap();
        assert!(ALL_CONTROLLERS.iter().all(|c| all.enabled(c)));
        let minus = ControllerSelection::parse("*,-service-lb-controller").unwrap();
        assert!(minus.enabled(NODE_IPAM) && !minus.enabled(SERVICE_LB));
        let only = ControllerSelection::parse("endpointslice").unwrap();
        assert!(only.enabled(ENDPOINTSLICE) && !only.enabled(ENDPOINTS));
        let first_wins = ControllerSelection::parse("-endpoints-controller,*").unwrap();
        assert!(!first_wins.enabled(ENDPOINTS) && first_wins.enabled(NODE_IPAM));
        let none = ControllerSelection::parse("-*").unwrap();
        assert!(none.none_enabled());
        assert!(ControllerSelection::parse("").unwrap().none_enabled());
        assert!(ControllerSelection::default().enabled(SERVICE_LB));
    }

    #[test]
    fn should_refuse_unknown_controllers_with_upstream_text() {
        assert_eq!(
            ControllerSelection::parse("*,bogus")
                .unwrap_err()
                .to_string(),
            "\"bogus\" is not in the list of known controllers"
        );
        // Upstream trims the dash before checking, so an unknown `-name` is refused too.
        assert_eq!(
            ControllerSelection::parse("-bogus")
                .unwrap_err()
                .to_string(),
            "\"bogus\" is not in the list of known controllers"
        );
    }

    #[test]
    fn should_parse_kcm_service_ranges_with_upstream_rules() {
        let (c, skipped) = parse_kcm_service_cidrs("10.0.0.0/16,fd00:10::/108").unwrap();
        assert_eq!(c.len(), 2);
        assert!(skipped.is_empty());
        assert_eq!(
            parse_kcm_service_cidrs("10.0.0.0/16,10.1.0.0/16,fd00::/108")
                .unwrap_err()
                .to_string(),
            "--service-cluster-ip-range can not contain more than two entries"
        );
        assert_eq!(
            parse_kcm_service_cidrs("10.0.0.0/16,10.1.0.0/16")
                .unwrap_err()
                .to_string(),
            "serviceCIDR and secondaryServiceCIDR are not dualstack (from different IPfamiles)"
        );
        let (c, skipped) = parse_kcm_service_cidrs("bogus,fd00::/108").unwrap();
        assert_eq!(c, vec!["fd00::/108".parse::<IpNet>().unwrap()]);
        assert_eq!(skipped, vec!["bogus".to_string()]);
        assert_eq!(parse_kcm_service_cidrs("").unwrap().0, Vec::<IpNet>::new());
    }

    #[test]
    fn should_parse_pools_of_both_families_from_repeated_and_comma_separated_flags() {
        let pool = parse_lb_pools(&[
            "198.51.100.0/24",
            "2001:db8:1b::10-2001:db8:1b::20,192.0.2.5",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(pool.families(), &[IpFamily::IPv4, IpFamily::IPv6]);
        assert!(pool.contains("192.0.2.5".parse().unwrap()));
        assert!(parse_lb_pools::<&str>(&[]).unwrap().is_none());
        let err = parse_lb_pools(&["10.0.0.1-fd00::1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid argument \"10.0.0.1-fd00::1\" for \"--loadbalancer-ip-pool\" flag: "
            ),
            "{err}"
        );
    }

    #[test]
    fn should_validate_leader_election_timings_as_client_go() {
        let ok = LeaderElectionConfig::with_identity("a");
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.lease_duration = Duration::from_secs(10);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "leaseDuration must be greater than renewDeadline"
        );
        let mut c = ok.clone();
        c.retry_period = Duration::from_secs(9);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "renewDeadline must be greater than retryPeriod*JitterFactor"
        );
        let mut c = ok.clone();
        c.retry_period = Duration::ZERO;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "retryPeriod must be greater than zero"
        );
        let mut c = ok;
        c.enabled = false;
        c.lease_duration = Duration::ZERO;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn should_bound_endpoint_slice_options_as_upstream() {
        assert_eq!(
            EndpointSliceOptions::from_flags(100, 5).unwrap(),
            EndpointSliceOptions::default()
        );
        assert_eq!(
            EndpointSliceOptions::from_flags(0, 5)
                .unwrap_err()
                .to_string(),
            "max-endpoints-per-slice must not be less than 1, but got 0"
        );
        assert_eq!(
            EndpointSliceOptions::from_flags(1001, 5)
                .unwrap_err()
                .to_string(),
            "max-endpoints-per-slice must not be more than 1000, but got 1001"
        );
        assert_eq!(
            EndpointSliceOptions::from_flags(100, 51)
                .unwrap_err()
                .to_string(),
            "concurrent-service-endpoint-syncs must not be more than 50, but got 51"
        );
    }

    #[test]
    fn should_refuse_the_cloud_allocator() {
        assert!(check_cidr_allocator_type("RangeAllocator").is_ok());
        assert_eq!(
            check_cidr_allocator_type("CloudAllocator")
                .unwrap_err()
                .to_string(),
            "--cidr-allocator-type is set to 'CloudAllocator' but cloud provider is not configured"
        );
    }
}
