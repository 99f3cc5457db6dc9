//! `dualstack server`: the API server (kube-apiserver flags), with the controllers of
//! kube-controller-manager built in.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use dualstack_api::config::{
    ConfigError, ConfigErrors, FeatureGates, NodeIpamConfig, ServiceClusterIpRange, parse_node_ips,
    parse_service_node_port_range,
};
use dualstack_apiserver::config::ServerConfig;

use crate::flags::{ControllerFlags, FeatureGateFlags, NodeIpamFlags, ServiceNetworkFlags};

/// kube-apiserver's etcd flags (`dualstack server`, `dualstack migrate`).
#[derive(Debug, Clone, Args)]
pub struct EtcdFlags {
    /// List of etcd servers to connect with (scheme://ip:port), comma separated. Without it
    /// the embedded store in --data-dir is used.
    #[arg(long = "etcd-servers", value_name = "strings", value_delimiter = ',')]
    pub servers: Vec<String>,

    /// SSL Certificate Authority file used to secure etcd communication.
    #[arg(long = "etcd-cafile", value_name = "string")]
    pub cafile: Option<PathBuf>,

    /// SSL certification file used to secure etcd communication.
    #[arg(long = "etcd-certfile", value_name = "string")]
    pub certfile: Option<PathBuf>,

    /// SSL key file used to secure etcd communication.
    #[arg(long = "etcd-keyfile", value_name = "string")]
    pub keyfile: Option<PathBuf>,

    /// The prefix to prepend to all resource paths in etcd.
    #[arg(
        long = "etcd-prefix",
        value_name = "string",
        default_value = "/registry"
    )]
    pub prefix: String,
}

impl EtcdFlags {
    /// The etcd client configuration, when `--etcd-servers` is given.
    pub fn etcd_config(&self) -> Option<dualstack_store::etcd::EtcdConfig> {
        let servers: Vec<String> = self
            .servers
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return None;
        }
        let mut config = dualstack_store::etcd::EtcdConfig::new(servers);
        config.ca_file = self.cafile.clone();
        config.cert_file = self.certfile.clone();
        config.key_file = self.keyfile.clone();
        config.prefix = self.prefix.clone();
        Some(config)
    }
}

/// Flags of `dualstack server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Directory for the embedded store, the PKI, tokens and the admin kubeconfig.
    #[arg(
        long = "data-dir",
        value_name = "path",
        default_value = "./dualstack-data"
    )]
    pub data_dir: PathBuf,

    /// The IP address on which to listen for the --secure-port port.
    #[arg(long = "bind-address", value_name = "ip", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// The port on which to serve HTTPS with authentication and authorization; 0 picks a free
    /// port and logs it.
    #[arg(long = "secure-port", value_name = "int", default_value_t = 6443)]
    pub secure_port: u16,

    /// The address(es) of this control-plane host as kubelet's --node-ip (one per family,
    /// primary first): published in the default/kubernetes Endpoints. The first must be of the
    /// primary service family. Defaults to the bind address, or loopback of the primary family.
    #[arg(
        long = "node-ip",
        visible_alias = "advertise-address",
        value_name = "ip[,ip]",
        default_value = ""
    )]
    pub node_ip: String,

    /// Also serve inside another network namespace: `NETNS_FILE=ADDRESS:PORT` (ours, repeatable;
    /// `dualstack up` gives each lab node the API on its own loopback this way).
    #[arg(long = "netns-listener", value_name = "netns=ip:port", hide = true, value_parser = netns_listener)]
    pub netns_listeners: Vec<(PathBuf, std::net::SocketAddr)>,

    /// Path to a client cert file for TLS to kubelets (pods/log, exec, attach).
    #[arg(
        long = "kubelet-client-certificate",
        value_name = "string",
        default_value = ""
    )]
    pub kubelet_client_certificate: String,

    /// Path to a client key file for TLS to kubelets.
    #[arg(long = "kubelet-client-key", value_name = "string", default_value = "")]
    pub kubelet_client_key: String,

    /// Path to a cert file for the certificate authority of kubelets' serving certificates
    /// (default: this server's CA).
    #[arg(
        long = "kubelet-certificate-authority",
        value_name = "string",
        default_value = ""
    )]
    pub kubelet_certificate_authority: String,

    /// List of the preferred NodeAddressTypes to use for kubelet connections, in order.
    #[arg(
        long = "kubelet-preferred-address-types",
        value_name = "strings",
        default_value = "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP",
        value_parser = preferred_address_types
    )]
    pub kubelet_preferred_address_types: String,

    /// The kubelet port of nodes that publish none in status.daemonEndpoints.
    #[arg(long = "kubelet-port", value_name = "uint", default_value_t = 10250)]
    pub kubelet_port: u16,

    /// Reach node NODE's kubelet port from inside a network namespace: `NODE=NETNS_FILE`
    /// (ours, repeatable; `dualstack up` passes one per lab node so the server never sends
    /// from the host's namespace).
    #[arg(long = "kubelet-netns", value_name = "node=netns", hide = true, value_parser = kubelet_netns)]
    pub kubelet_netns: Vec<(String, PathBuf)>,

    /// How often the ClusterIP/NodePort repair loop runs (e.g. 3m, 30s).
    #[arg(long = "service-ip-repair-interval", value_name = "duration", default_value = "3m", value_parser = crate::flags::duration)]
    pub repair_interval: std::time::Duration,

    /// Connections held at once (ours; kept below the open-file limit). A new connection that
    /// finds the server full closes the connection idle longest; connections that never
    /// authenticated may hold at most --max-untrusted-connections of them.
    #[arg(long = "max-connections", value_name = "int", default_value_t = 4096)]
    pub max_connections: usize,

    /// Connections held at once that have not made an authenticated request (ours).
    #[arg(
        long = "max-untrusted-connections",
        value_name = "int",
        default_value_t = 256
    )]
    pub max_untrusted_connections: usize,

    #[command(flatten)]
    pub etcd: EtcdFlags,

    /// The interval of compaction requests. If 0, the compaction request from apiserver is
    /// disabled.
    #[arg(long = "etcd-compaction-interval", value_name = "duration", default_value = "5m", value_parser = crate::flags::duration)]
    pub etcd_compaction_interval: std::time::Duration,

    #[command(flatten)]
    pub service: ServiceNetworkFlags,

    #[command(flatten)]
    pub ipam: NodeIpamFlags,

    #[command(flatten)]
    pub gates: FeatureGateFlags,

    // The built-in controllers (`--controllers=-*` turns them off).
    #[command(flatten)]
    pub controllers: ControllerFlags,
}

impl ServerArgs {
    /// Validates every flag (upstream's order and messages) into a server configuration.
    pub fn resolve(&self) -> Result<(ServerConfig, Option<NodeIpamConfig>), ConfigErrors> {
        let gates = FeatureGates::parse(&self.gates.feature_gates)?;
        let service_ranges = ServiceClusterIpRange::parse(&self.service.service_cluster_ip_range)?;
        gates.check_dual_stack(
            "--service-cluster-ip-range",
            &self.service.service_cluster_ip_range,
            service_ranges.is_dual_stack(),
        )?;
        let node_port_range = parse_service_node_port_range(&self.service.service_node_port_range)?;
        let ipam = NodeIpamConfig::from_flags(
            self.ipam.allocate_node_cidrs,
            &self.ipam.cluster_cidr,
            self.ipam.masks(),
            &service_ranges,
        )?;
        if let Some(cfg) = &ipam {
            gates.check_dual_stack(
                "--cluster-cidr",
                &self.ipam.cluster_cidr,
                cfg.is_dual_stack(),
            )?;
        }
        let (mut advertise, _skipped) =
            parse_node_ips(&self.node_ip, "").map_err(|e| ConfigError::Flag {
                flag: "--node-ip",
                value: self.node_ip.clone(),
                source: Box::new(e),
            })?;
        if let Some(first) = advertise.first() {
            service_ranges.check_public_address(*first)?;
        } else {
            let primary = service_ranges.primary_family();
            let bind = self.bind_address;
            let default =
                if !bind.is_unspecified() && dualstack_ipam::IpFamily::of_addr(&bind) == primary {
                    bind
                } else if primary == dualstack_ipam::IpFamily::IPv4 {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
                };
            advertise.push(default);
        }
        let config = ServerConfig {
            data_dir: self.data_dir.clone(),
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            advertise_addresses: advertise,
            service_ranges,
            node_port_range,
            repair_interval: self.repair_interval,
            netns_listeners: self.netns_listeners.clone(),
            kubelet: dualstack_apiserver::kubelet::KubeletClientConfig {
                client_cert: Some(&self.kubelet_client_certificate)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
                client_key: Some(&self.kubelet_client_key)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
                ca: Some(&self.kubelet_certificate_authority)
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from),
                port: self.kubelet_port,
                netns: self.kubelet_netns.clone(),
                // Checked by the flag's parser; empty is upstream's default order.
                preferred_address_types:
                    dualstack_apiserver::kubelet::parse_preferred_address_types(
                        &self.kubelet_preferred_address_types,
                    )
                    .unwrap_or_default(),
            },
            connection_limits: dualstack_apiserver::conn::Limits {
                max_connections: self.max_connections.max(1),
                max_untrusted: self.max_untrusted_connections.max(1),
                ..Default::default()
            }
            .within_fd_limit(dualstack_apiserver::server::raise_fd_limit(), 256),
        };
        Ok((config, ipam))
    }
}

/// `--netns-listener NETNS_FILE=ADDRESS:PORT`.
fn netns_listener(v: &str) -> Result<(PathBuf, std::net::SocketAddr), String> {
    let (ns, at) = v
        .rsplit_once('=')
        .ok_or_else(|| format!("{v:?}: want NETNS_FILE=ADDRESS:PORT"))?;
    let at = at
        .parse()
        .map_err(|e| format!("{at:?}: {e} (want ADDRESS:PORT)"))?;
    Ok((PathBuf::from(ns), at))
}

/// `--kubelet-preferred-address-types`, checked when parsed (and split when the config is
/// built).
fn preferred_address_types(v: &str) -> Result<String, String> {
    dualstack_apiserver::kubelet::parse_preferred_address_types(v).map(|_| v.to_string())
}

/// `--kubelet-netns NODE=NETNS_FILE`.
fn kubelet_netns(v: &str) -> Result<(String, PathBuf), String> {
    let (node, ns) = v
        .split_once('=')
        .filter(|(n, f)| !n.is_empty() && !f.is_empty())
        .ok_or_else(|| format!("{v:?}: want NODE=NETNS_FILE"))?;
    Ok((node.to_string(), PathBuf::from(ns)))
}

/// Runs the server until interrupted.
pub fn run(args: ServerArgs) -> Result<()> {
    let (config, ipam) = args.resolve()?;
    let etcd = args.etcd.etcd_config();
    let identity = crate::cmd::controller_manager::server_identity(&config.data_dir);
    let controllers = args.controllers.manager_config(ipam, identity, false)?;
    crate::cmd::init_tracing();
    if config.service_ranges.defaulted {
        tracing::warn!(
            "No CIDR for service cluster IPs specified. Default value which was {} is deprecated and will be removed in future releases. Please specify it using --service-cluster-ip-range on kube-apiserver.",
            config.service_ranges.primary
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = match etcd {
            None => dualstack_apiserver::Server::start(config).await?,
            Some(etcd) => {
                let backend = dualstack_store::etcd::Etcd::connect(&etcd)
                    .await
                    .with_context(|| {
                        format!("connecting to etcd at {}", etcd.endpoints.join(","))
                    })?;
                tokio::spawn(dualstack_store::etcd::compaction_loop(
                    backend.clone(),
                    args.etcd_compaction_interval,
                ));
                dualstack_apiserver::Server::start_with_backend(config, std::sync::Arc::new(backend))
                    .await?
            }
        };
        tracing::info!(url = %server.url(), kubeconfig = %server.kubeconfig_path().display(), "API server ready");
        // The built-in controllers' metrics are served on the server's /metrics.
        let controller_metrics = dualstack_controllers::Metrics::new();
        let m = controller_metrics.clone();
        server.metrics.add_source(std::sync::Arc::new(move || m.encode()));
        let controllers = crate::cmd::controller_manager::InServer::start(
            server.kubeconfig_path(),
            controllers,
            controller_metrics,
        )
        .await?;
        crate::cmd::controller_manager::shutdown_signal().await;
        tracing::info!("shutting down");
        controllers.stop().await;
        server.shutdown().await;
        Ok(())
    })
}
