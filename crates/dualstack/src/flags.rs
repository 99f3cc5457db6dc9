//! Flag groups shared by several components, with upstream's names and defaults. Values are
//! kept as strings here and validated by `dualstack_api::config`, so the messages are upstream's.

use clap::Args;

/// Go-style boolean flag values (`--flag`, `--flag=true`, `--flag=False`, `--flag=1`).
pub fn go_bool(s: &str) -> Result<bool, String> {
    dualstack_api::config::parse_go_bool(s)
        .ok_or_else(|| format!("strconv.ParseBool: parsing {s:?}: invalid syntax"))
}

/// Go-style durations: `90s`, `3m`, `1h`, `1m30s`, `500ms`.
pub fn duration(s: &str) -> Result<std::time::Duration, String> {
    let err = || format!("time: invalid duration {s:?}");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// Mask sizes 0–128.
fn mask(s: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .ok()
        .filter(|&m| m <= 128)
        .ok_or_else(|| format!("strconv.ParseInt: parsing {s:?}: invalid syntax"))
}

/// `--feature-gates`, accepted by every component.
#[derive(Debug, Clone, Args)]
pub struct FeatureGateFlags {
    /// A set of key=value pairs that describe feature gates for alpha/experimental features.
    /// IPv6DualStack=true is accepted (dual-stack is always on, as in GA Kubernetes).
    #[arg(
        long = "feature-gates",
        value_name = "mapStringBool",
        default_value = ""
    )]
    pub feature_gates: String,
}

/// The Service network flags of kube-apiserver.
#[derive(Debug, Clone, Args)]
pub struct ServiceNetworkFlags {
    /// A CIDR notation IP range from which to assign service cluster IPs. A pair of one IPv4 and
    /// one IPv6 CIDR makes Services dual-stack; entry 0 is the cluster's primary family. An IPv4
    /// range may be as large as /12, an IPv6 range as large as /64. Default 10.0.0.0/24.
    #[arg(
        long = "service-cluster-ip-range",
        value_name = "string",
        default_value = ""
    )]
    pub service_cluster_ip_range: String,

    /// A port range to reserve for services with NodePort visibility (inclusive at both ends).
    #[arg(long = "service-node-port-range", value_name = "portRange", default_value = dualstack_api::config::DEFAULT_SERVICE_NODE_PORT_RANGE)]
    pub service_node_port_range: String,
}

/// The node IPAM flags of kube-controller-manager.
#[derive(Debug, Clone, Args)]
pub struct NodeIpamFlags {
    /// Should CIDRs for Pods be allocated and set on the cloud provider / nodes.
    #[arg(long = "allocate-node-cidrs", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub allocate_node_cidrs: bool,

    /// CIDR Range for Pods in cluster: one CIDR, or a dual-stack pair (e.g.
    /// 10.244.0.0/16,fc00::/48); the order decides the order of every node's podCIDRs.
    #[arg(long = "cluster-cidr", value_name = "string", default_value = "")]
    pub cluster_cidr: String,

    /// Mask size for node cidr in cluster. Default is 24 for IPv4 and 64 for IPv6.
    #[arg(long = "node-cidr-mask-size", value_name = "int32", value_parser = mask)]
    pub node_cidr_mask_size: Option<u8>,

    /// Mask size for IPv4 node cidr in dual-stack cluster. Default is 24.
    #[arg(long = "node-cidr-mask-size-ipv4", value_name = "int32", value_parser = mask)]
    pub node_cidr_mask_size_ipv4: Option<u8>,

    /// Mask size for IPv6 node cidr in dual-stack cluster. Default is 64.
    #[arg(long = "node-cidr-mask-size-ipv6", value_name = "int32", value_parser = mask)]
    pub node_cidr_mask_size_ipv6: Option<u8>,
}

impl NodeIpamFlags {
    /// The mask flags for validation.
    pub fn masks(&self) -> dualstack_api::config::NodeCidrMaskFlags {
        dualstack_api::config::NodeCidrMaskFlags {
            node_cidr_mask_size: self.node_cidr_mask_size,
            ipv4: self.node_cidr_mask_size_ipv4,
            ipv6: self.node_cidr_mask_size_ipv6,
        }
    }
}

/// The controller flags shared by `server` (its built-in controllers) and
/// `controller-manager`, with kube-controller-manager's names and defaults.
#[derive(Debug, Clone, Args)]
pub struct ControllerFlags {
    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo'
    /// enables the controller named 'foo', '-foo' disables the controller named 'foo', '-*'
    /// disables them all. Controllers: node-ipam-controller (runs only with
    /// --allocate-node-cidrs), node-lifecycle-controller, endpointslice-controller,
    /// endpoints-controller, service-lb-controller (runs only with --loadbalancer-ip-pool),
    /// scheduler (kube-scheduler's default-scheduler, built in here), replicaset-controller,
    /// deployment-controller, garbage-collector-controller.
    #[arg(long = "controllers", value_name = "strings", default_value = "*")]
    pub controllers: String,

    /// An address pool for Services of type LoadBalancer: a CIDR (198.51.100.0/24,
    /// 2001:db8:1b::/120) or an inclusive range FIRST-LAST, of either family. Repeatable, or
    /// comma-separated. Services get one address per entry of spec.ipFamilies.
    #[arg(long = "loadbalancer-ip-pool", value_name = "CIDR|FIRST-LAST")]
    pub loadbalancer_ip_pool: Vec<String>,

    /// Start a leader election client and gain leadership before executing the main loop.
    #[arg(long = "leader-elect", value_name = "bool", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = go_bool)]
    pub leader_elect: bool,

    /// The duration that non-leader candidates will wait after observing a leadership renewal
    /// until attempting to acquire leadership of a led but unrenewed leader slot.
    #[arg(long = "leader-elect-lease-duration", value_name = "duration", default_value = "15s", value_parser = duration)]
    pub leader_elect_lease_duration: std::time::Duration,

    /// The interval between attempts by the acting master to renew a leadership slot before it
    /// stops leading. This must be less than the lease duration.
    #[arg(long = "leader-elect-renew-deadline", value_name = "duration", default_value = "10s", value_parser = duration)]
    pub leader_elect_renew_deadline: std::time::Duration,

    /// The duration the clients should wait between attempting acquisition and renewal of a
    /// leadership.
    #[arg(long = "leader-elect-retry-period", value_name = "duration", default_value = "2s", value_parser = duration)]
    pub leader_elect_retry_period: std::time::Duration,

    /// The type of resource object that is used for locking during leader election. Supported
    /// option is 'leases'.
    #[arg(
        long = "leader-elect-resource-lock",
        value_name = "string",
        default_value = "leases"
    )]
    pub leader_elect_resource_lock: String,

    /// The name of resource object that is used for locking during leader election.
    #[arg(long = "leader-elect-resource-name", value_name = "string", default_value = dualstack_controllers::config::DEFAULT_LEASE_NAME)]
    pub leader_elect_resource_name: String,

    /// The namespace of resource object that is used for locking during leader election.
    #[arg(long = "leader-elect-resource-namespace", value_name = "string", default_value = dualstack_controllers::config::DEFAULT_LEASE_NAMESPACE)]
    pub leader_elect_resource_namespace: String,

    /// The maximum number of endpoints that will be added to an EndpointSlice.
    #[arg(
        long = "max-endpoints-per-slice",
        value_name = "int32",
        default_value_t = 100,
        allow_negative_numbers = true
    )]
    pub max_endpoints_per_slice: i64,

    /// The number of service endpoint syncing operations that will be done concurrently.
    #[arg(
        long = "concurrent-service-endpoint-syncs",
        value_name = "int32",
        default_value_t = 5,
        allow_negative_numbers = true
    )]
    pub concurrent_service_endpoint_syncs: i64,

    /// Amount of time which we allow running Node to be unresponsive before marking it
    /// unhealthy (its Lease not renewed, its Ready heartbeat unchanged).
    #[arg(long = "node-monitor-grace-period", value_name = "duration", default_value = "40s", value_parser = duration)]
    pub node_monitor_grace_period: std::time::Duration,

    /// Amount of time which we allow starting Node to be unresponsive before marking it
    /// unhealthy (a node that never posted a Ready condition).
    #[arg(long = "node-startup-grace-period", value_name = "duration", default_value = "1m0s", value_parser = duration)]
    pub node_startup_grace_period: std::time::Duration,

    /// The period for syncing NodeStatus in NodeController.
    #[arg(long = "node-monitor-period", value_name = "duration", default_value = "5s", value_parser = duration)]
    pub node_monitor_period: std::time::Duration,
}

impl ControllerFlags {
    /// Validates the flags into the controller manager's configuration (upstream's messages).
    pub fn manager_config(
        &self,
        node_ipam: Option<dualstack_api::config::NodeIpamConfig>,
        identity: String,
        stop_on_error: bool,
    ) -> Result<dualstack_controllers::ManagerConfig, dualstack_controllers::ControllerConfigError>
    {
        use dualstack_controllers::config;
        let controllers = config::ControllerSelection::parse(&self.controllers)?;
        let lb_pool = config::parse_lb_pools(&self.loadbalancer_ip_pool)?;
        let endpoints = config::EndpointSliceOptions::from_flags(
            self.max_endpoints_per_slice,
            self.concurrent_service_endpoint_syncs,
        )?;
        config::check_resource_lock(&self.leader_elect_resource_lock)?;
        let leader_election = config::LeaderElectionConfig {
            enabled: self.leader_elect,
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
            namespace: self.leader_elect_resource_namespace.clone(),
            name: self.leader_elect_resource_name.clone(),
            identity,
        };
        leader_election.validate()?;
        Ok(dualstack_controllers::ManagerConfig {
            controllers,
            node_ipam,
            lb_pool,
            endpoints,
            leader_election,
            node_lifecycle: dualstack_controllers::plan::nodelifecycle::LifecycleConfig {
                grace_period: self.node_monitor_grace_period,
                startup_grace_period: self.node_startup_grace_period,
                // A zero period would spin (tokio refuses it).
                monitor_period: self
                    .node_monitor_period
                    .max(std::time::Duration::from_millis(100)),
            },
            stop_on_error,
        })
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`), for leader election identities.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
