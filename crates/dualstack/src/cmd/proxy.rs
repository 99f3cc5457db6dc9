//! `dualstack proxy --kubeconfig FILE --hostname-override NAME --cluster-cidr V4,V6`: the
//! Service proxy on nftables (kube-proxy's `--proxy-mode=nftables`), with kube-proxy's flags
//! where they apply. The loop is `dualstack_proxy_run::run`; the rules are `dualstack-proxy`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use clap::Args;
use dualstack_ipam::IpFamily;
use dualstack_proxy::NodePortAddress;
use ipnet::IpNet;

/// Flags of `dualstack proxy`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Path to kubeconfig file with authorization information (node credentials suffice).
    #[arg(long = "kubeconfig", value_name = "string", default_value = "")]
    pub kubeconfig: String,

    /// If non-empty, will be used as the name of the Node that kube-proxy is running on. If
    /// unset, the node name is assumed to be the same as the node's hostname.
    #[arg(long = "hostname-override", value_name = "string")]
    pub hostname_override: Option<String>,

    #[command(flatten)]
    pub proxy: ProxyFlags,

    #[command(flatten)]
    pub gates: crate::flags::FeatureGateFlags,

    /// How often configuration from the apiserver is refreshed. Must be greater than 0.
    #[arg(long = "config-sync-period", value_name = "duration", default_value = "15m0s", value_parser = crate::flags::duration)]
    pub config_sync_period: Duration,
}

/// The proxy flags `dualstack proxy` and `dualstack agent` share.
#[derive(Debug, Clone, Args)]
pub struct ProxyFlags {
    /// The CIDR range of the pods in the cluster (for dual-stack clusters, a comma-separated
    /// pair). Traffic to Services from outside this range is masqueraded.
    #[arg(long = "cluster-cidr", value_name = "string", default_value = "")]
    pub cluster_cidr: String,

    /// Mode to use to detect local traffic. Only `ClusterCIDR` is implemented.
    #[arg(
        long = "detect-local-mode",
        value_name = "LocalMode",
        default_value = "ClusterCIDR"
    )]
    pub detect_local_mode: String,

    /// A list of CIDR ranges that contain valid node IPs, or alternatively, the single string
    /// 'primary'. If set, connections to NodePort services will only be accepted on node IPs
    /// in one of the indicated ranges. Default: the node's primary IP of each family.
    #[arg(
        long = "nodeport-addresses",
        value_name = "strings",
        default_value = ""
    )]
    pub nodeport_addresses: String,

    /// If using the pure iptables proxy, SNAT all traffic sent via Service cluster IPs.
    #[arg(long = "masquerade-all", value_name = "bool", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::flags::go_bool)]
    pub masquerade_all: bool,

    /// The bit of the fwmark space to mark packets requiring SNAT with. Must be within the
    /// range [0, 31].
    #[arg(
        long = "iptables-masquerade-bit",
        value_name = "int32",
        default_value_t = 14
    )]
    pub masquerade_bit: u8,

    /// The minimum period between proxy rule resyncs (e.g. '5s', '1m', '2h22m'). A value of
    /// 0 means every change is synced immediately.
    #[arg(long = "nftables-min-sync-period", value_name = "duration", default_value = "1s", value_parser = crate::flags::duration)]
    pub min_sync_period: Duration,

    /// An interval (e.g. '5s', '1m', '2h22m') indicating how frequently various
    /// re-synchronizing and cleanup operations are performed. Must be greater than 0.
    #[arg(long = "nftables-sync-period", value_name = "duration", default_value = "30s", value_parser = crate::flags::duration)]
    pub sync_period: Duration,

    /// The Service CIDRs (our addition; upstream reads them from ServiceCIDR objects, which
    /// is also what happens when this is empty).
    #[arg(
        long = "service-cluster-ip-range",
        value_name = "string",
        default_value = ""
    )]
    pub service_cluster_ip_range: String,
}

/// `--cluster-cidr` as kube-proxy validates it (`validateDualStackCIDRStrings`).
pub fn parse_cluster_cidrs(value: &str, required: bool) -> Result<Vec<IpNet>> {
    let entries: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let field = "KubeProxyConfiguration.DetectLocal.ClusterCIDRs";
    if entries.is_empty() {
        if required {
            bail!("{field}: Invalid value: []: must contain at least one CIDR");
        }
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in &entries {
        let net: IpNet = e.parse().map_err(|_| {
            anyhow!(
                "{field}: Invalid value: {e:?}: must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"
            )
        })?;
        out.push(net);
    }
    let fams: Vec<IpFamily> = out.iter().map(IpFamily::of_net).collect();
    if out.len() > 2 || (out.len() == 2 && fams[0] == fams[1]) {
        bail!(
            "{field}: Invalid value: {entries:?}: must be a either a single CIDR or dual-stack pair of CIDRs (e.g. [10.100.0.0/16, fde4:8dba:82e1::/48]"
        );
    }
    Ok(out)
}

/// `--nodeport-addresses`.
pub fn parse_nodeport_addresses(value: &str) -> Result<Vec<NodePortAddress>> {
    let mut out = Vec::new();
    for e in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if e == "primary" {
            out.push(NodePortAddress::Primary);
            continue;
        }
        let net: IpNet = e.parse().map_err(|_| {
            anyhow!(
                "KubeProxyConfiguration.NodePortAddresses[{}]: Invalid value: {e:?}: must be a valid CIDR",
                out.len()
            )
        })?;
        out.push(NodePortAddress::Cidr(net));
    }
    if out.len() > 1 && out.contains(&NodePortAddress::Primary) {
        bail!(
            "KubeProxyConfiguration.NodePortAddresses: Invalid value: {value:?}: can't use both 'primary' and CIDRs"
        );
    }
    Ok(out)
}

fn bind_addr(flag: &str, value: &str) -> Result<Option<SocketAddr>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<SocketAddr>()
        .map(Some)
        .map_err(|_| anyhow!("invalid argument {v:?} for \"{flag}\" flag: must be IP:port"))
}

impl ProxyFlags {
    /// Validates the flags into the proxy's configuration.
    pub fn resolve(
        &self,
        node_name: &str,
        cluster_cidr_required: bool,
        healthz: &str,
        metrics: &str,
    ) -> Result<dualstack_proxy_run::Config> {
        if !matches!(self.detect_local_mode.as_str(), "" | "ClusterCIDR") {
            bail!(
                "--detect-local-mode {:?}: only ClusterCIDR is implemented",
                self.detect_local_mode
            );
        }
        if self.masquerade_bit > 31 {
            bail!(
                "KubeProxyConfiguration.IPTables.MasqueradeBit: Invalid value: {}: must be within the range [0, 31]",
                self.masquerade_bit
            );
        }
        if self.sync_period.is_zero() {
            bail!(
                "KubeProxyConfiguration.NFTables.SyncPeriod: Invalid value: 0s: must be greater than 0"
            );
        }
        let service_cidrs = if self.service_cluster_ip_range.trim().is_empty() {
            Vec::new()
        } else {
            dualstack_api::config::ServiceClusterIpRange::parse(&self.service_cluster_ip_range)
                .map_err(|e| anyhow!("--service-cluster-ip-range: {e}"))?
                .cidrs()
        };
        Ok(dualstack_proxy_run::Config {
            node_name: node_name.to_string(),
            cluster_cidrs: parse_cluster_cidrs(&self.cluster_cidr, cluster_cidr_required)?,
            service_cidrs,
            nodeport_addresses: parse_nodeport_addresses(&self.nodeport_addresses)?,
            masquerade_all: self.masquerade_all,
            masquerade_bit: self.masquerade_bit,
            healthz_bind: bind_addr("--healthz-bind-address", healthz)?,
            metrics_bind: bind_addr("--metrics-bind-address", metrics)?,
            min_sync_period: self.min_sync_period,
            sync_period: self.sync_period,
        })
    }
}

/// The flags only `dualstack proxy` has (the agent names them `--proxy-*`).
#[derive(Debug, Clone, Args)]
pub struct ProxyListenFlags {
    /// The IP address with port for the health check server to serve on (set to '0.0.0.0:10256'
    /// for all IPv4 interfaces and '[::]:10256' for all IPv6 interfaces). Set empty to disable.
    #[arg(
        long = "healthz-bind-address",
        value_name = "ipport",
        default_value = "0.0.0.0:10256"
    )]
    pub healthz_bind_address: String,

    /// The IP address with port for the metrics server to serve on. Set empty to disable.
    #[arg(
        long = "metrics-bind-address",
        value_name = "ipport",
        default_value = "127.0.0.1:10249"
    )]
    pub metrics_bind_address: String,
}

/// `dualstack proxy`'s full flag set.
#[derive(Debug, Clone, Args)]
pub struct ProxyCommand {
    #[command(flatten)]
    pub args: ProxyArgs,
    #[command(flatten)]
    pub listen: ProxyListenFlags,
}

/// Runs the proxy.
pub fn run(cmd: ProxyCommand) -> Result<()> {
    crate::cmd::init_tracing();
    let ProxyCommand { args, listen } = cmd;
    use dualstack_api::config::{ConfigErrors, FeatureGates};
    FeatureGates::parse(&args.gates.feature_gates).map_err(ConfigErrors::from)?;
    if args.config_sync_period.is_zero() {
        bail!("KubeProxyConfiguration.ConfigSyncPeriod: Invalid value: 0s: must be greater than 0");
    }
    let node_name = args
        .hostname_override
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(crate::flags::hostname)
        .to_lowercase();
    let config = args.proxy.resolve(
        &node_name,
        true,
        &listen.healthz_bind_address,
        &listen.metrics_bind_address,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = crate::cmd::agent::client(&args.kubeconfig, "kube-proxy").await?;
        tracing::info!(node = %config.node_name, cluster_cidrs = ?config.cluster_cidrs, "starting the Service proxy (nftables)");
        tokio::select! {
            r = dualstack_proxy_run::run(client, config, dualstack_proxy_run::Kernel::default()) => r.map_err(anyhow::Error::from),
            _ = crate::cmd::controller_manager::shutdown_signal() => Ok(()),
        }
    })
}
