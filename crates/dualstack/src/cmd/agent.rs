//! `dualstack agent --kubeconfig FILE --node-name NAME --node-ip IP[,IP]`: the node agent
//! (kubelet's dual-stack side). Flags keep kubelet's names and `--node-ip` its rules and
//! messages; the work is `dualstack_agent::run`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use dualstack_agent::{CniNetwork, Config, LocalNetwork, PodNetwork};
use dualstack_node::files::ClusterDns;

/// Flags of `dualstack agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Path to a kubeconfig file with the node's credentials (`dualstack token create --node
    /// NAME --kubeconfig-out FILE`). Empty: the in-cluster configuration or $KUBECONFIG.
    #[arg(long = "kubeconfig", value_name = "string", default_value = "")]
    pub kubeconfig: String,

    /// The name of this node (default: the hostname).
    #[arg(long = "node-name", value_name = "string")]
    pub node_name: Option<String>,

    /// IP address (or comma-separated dual-stack IP addresses) of the node. The first one's
    /// family is the node's primary family: it orders every pod's podIPs and hostIPs.
    #[arg(long = "node-ip", value_name = "string", default_value = "")]
    pub node_ip: String,

    /// Directory path for managing agent files (pod sandboxes, container logs).
    #[arg(
        long = "root-dir",
        value_name = "string",
        default_value = "/var/lib/dualstack/agent"
    )]
    pub root_dir: PathBuf,

    /// The full path of the directory in which to search for CNI config files.
    #[arg(
        long = "cni-conf-dir",
        value_name = "string",
        default_value = "/etc/cni/net.d"
    )]
    pub cni_conf_dir: PathBuf,

    /// A comma-separated list of full paths of directories in which to search for CNI plugin
    /// binaries.
    #[arg(
        long = "cni-bin-dir",
        value_name = "string",
        default_value = "/opt/cni/bin"
    )]
    pub cni_bin_dir: String,

    /// Comma-separated list of DNS server IP addresses for pods with dnsPolicy=ClusterFirst.
    #[arg(long = "cluster-dns", value_name = "strings", default_value = "")]
    pub cluster_dns: String,

    /// Domain for this cluster: pods' search domains.
    #[arg(
        long = "cluster-domain",
        value_name = "string",
        default_value = "cluster.local"
    )]
    pub cluster_domain: String,

    /// Resolver configuration file used as the basis for the container DNS resolution
    /// configuration.
    #[arg(
        long = "resolv-conf",
        value_name = "string",
        default_value = "/etc/resolv.conf"
    )]
    pub resolv_conf: String,

    /// Number of pods that can run on this node.
    #[arg(long = "max-pods", value_name = "int32", default_value_t = 110)]
    pub max_pods: u32,

    /// The pod network: `cni` (the first configuration in --cni-conf-dir; the agent writes
    /// its own once the node has podCIDRs), or `local` (addresses from the podCIDRs on a veth
    /// inside the pod's namespace only, no connectivity: for tests of the agent alone).
    #[arg(
        long = "pod-network",
        value_name = "string",
        default_value = "cni",
        hide = true
    )]
    pub pod_network: String,

    /// The IP address for the kubelet port to serve on (0.0.0.0 or :: for all interfaces,
    /// both families).
    #[arg(long = "address", value_name = "ip", default_value = "0.0.0.0")]
    pub address: std::net::IpAddr,

    /// The port for the kubelet port (logs, exec, attach for the API server) to serve on.
    #[arg(long = "port", value_name = "int32", default_value_t = dualstack_agent::kubelet::DEFAULT_PORT)]
    pub port: u16,

    /// File containing the x509 certificate for HTTPS on the kubelet port. The kubelet port is
    /// served only when this, --tls-private-key-file and --client-ca-file are given.
    #[arg(long = "tls-cert-file", value_name = "string", default_value = "")]
    pub tls_cert_file: String,

    /// File containing the x509 private key matching --tls-cert-file.
    #[arg(
        long = "tls-private-key-file",
        value_name = "string",
        default_value = ""
    )]
    pub tls_private_key_file: String,

    /// The CA bundle that client certificates of the kubelet port are verified against; only
    /// the API server's identity (CN kube-apiserver-kubelet-client) is authorized.
    #[arg(long = "client-ca-file", value_name = "string", default_value = "")]
    pub client_ca_file: String,

    #[command(flatten)]
    pub gates: crate::flags::FeatureGateFlags,

    #[command(flatten)]
    pub masq: crate::cmd::masq_agent::AgentMasqArgs,
    /// Run the Service proxy (`dualstack proxy`) inside the agent for this node.
    #[arg(long = "proxy", value_name = "bool", default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = crate::flags::go_bool)]
    pub run_proxy: bool,

    /// The in-agent proxy's `--healthz-bind-address` (empty: off).
    #[arg(
        long = "proxy-healthz-bind-address",
        value_name = "ipport",
        default_value = "0.0.0.0:10256"
    )]
    pub proxy_healthz_bind_address: String,

    /// The in-agent proxy's `--metrics-bind-address` (empty: off).
    #[arg(
        long = "proxy-metrics-bind-address",
        value_name = "ipport",
        default_value = "127.0.0.1:10249"
    )]
    pub proxy_metrics_bind_address: String,

    #[command(flatten)]
    pub proxy: crate::cmd::proxy::ProxyFlags,
}

impl AgentArgs {
    /// Validates the flags into the agent's configuration.
    pub fn resolve(&self) -> Result<Config> {
        let (node_ips, skipped) = dualstack_api::config::parse_node_ips(&self.node_ip, "")
            .map_err(|e| anyhow!("bad --node-ip {:?}: {e}", self.node_ip))?;
        if !skipped.is_empty() {
            tracing::info!(ips = ?skipped, "Could not parse some node IP(s), ignoring them");
        }
        use dualstack_api::config::{ConfigErrors, FeatureGates};
        let gates = FeatureGates::parse(&self.gates.feature_gates).map_err(ConfigErrors::from)?;
        gates
            .check_dual_stack("--node-ip", &self.node_ip, node_ips.len() == 2)
            .map_err(ConfigErrors::from)?;
        if node_ips.is_empty() || node_ips.iter().any(|ip| ip.is_unspecified()) {
            bail!("--node-ip must name the node's address(es): this agent does not detect them");
        }
        let mut servers = Vec::new();
        for s in self
            .cluster_dns
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            servers.push(s.parse().map_err(|_| {
                anyhow!("invalid argument {s:?} for \"--cluster-dns\" flag: invalid IP")
            })?);
        }
        let node_name = self
            .node_name
            .clone()
            .unwrap_or_else(crate::flags::hostname)
            .to_lowercase();
        Ok(Config {
            node_name,
            node_ips,
            root_dir: self.root_dir.clone(),
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bin_dirs: self
                .cni_bin_dir
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .collect(),
            cluster_dns: ClusterDns {
                servers,
                domain: self.cluster_domain.clone(),
            },
            resolv_conf: (!self.resolv_conf.is_empty()).then(|| PathBuf::from(&self.resolv_conf)),
            max_pods: self.max_pods,
            shim_exe: std::env::current_exe().context("locating the dualstack binary")?,
            lease_interval: Duration::from_secs(10),
            status_report_interval: Duration::from_secs(300),
            kubelet_port: [
                &self.tls_cert_file,
                &self.tls_private_key_file,
                &self.client_ca_file,
            ]
            .iter()
            .all(|f| !f.is_empty())
            .then_some(self.port),
        })
    }
}

impl AgentArgs {
    /// The kubelet port's settings: `None` (with a log line) without certificate files.
    fn kubelet_port(
        &self,
        config: &Config,
    ) -> Result<Option<dualstack_agent::kubelet::ServerConfig>> {
        let files = [
            &self.tls_cert_file,
            &self.tls_private_key_file,
            &self.client_ca_file,
        ];
        if files.iter().all(|f| f.is_empty()) {
            tracing::info!(
                "no --tls-cert-file, --tls-private-key-file, --client-ca-file: the kubelet port is not served"
            );
            return Ok(None);
        }
        if files.iter().any(|f| f.is_empty()) {
            bail!("--tls-cert-file, --tls-private-key-file and --client-ca-file go together");
        }
        // Go's 0.0.0.0 listens on both families; so does [::] here.
        let ip = if self.address.is_unspecified() {
            std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            self.address
        };
        Ok(Some(dualstack_agent::kubelet::ServerConfig {
            addr: std::net::SocketAddr::new(ip, self.port),
            cert: PathBuf::from(&self.tls_cert_file),
            key: PathBuf::from(&self.tls_private_key_file),
            client_ca: PathBuf::from(&self.client_ca_file),
            root_dir: config.root_dir.clone(),
            shim_exe: config.shim_exe.clone(),
        }))
    }
}

/// Runs the agent.
pub fn run(args: AgentArgs) -> Result<()> {
    crate::cmd::init_tracing();
    let config = args.resolve()?;
    let network: Arc<dyn PodNetwork> = match args.pod_network.as_str() {
        "local" => Arc::new(LocalNetwork::new(config.root_dir.join("local-ipam"))),
        "cni" => Arc::new(CniNetwork::new(
            config.cni_conf_dir.clone(),
            config.cni_bin_dirs.clone(),
            &config.root_dir,
            config.shim_exe.clone(),
        )),
        other => bail!("unknown --pod-network {other:?}"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let proxy = if args.run_proxy {
        Some(args.proxy.resolve(
            &config.node_name,
            false,
            &args.proxy_healthz_bind_address,
            &args.proxy_metrics_bind_address,
        )?)
    } else {
        None
    };
    let kubelet_port = args.kubelet_port(&config)?;
    rt.block_on(async move {
        let client = client(&args.kubeconfig, "kubelet").await?;
        if let Some(k) = kubelet_port {
            let tls = dualstack_agent::kubelet::tls_config(&k)?;
            tokio::spawn(async move {
                if let Err(e) = dualstack_agent::kubelet::serve(k, tls).await {
                    tracing::error!(error = %e, "the kubelet port stopped; logs and exec do not reach this node");
                }
            });
        }
        tracing::info!(node = %config.node_name, ips = ?config.node_ips, "starting the node agent");
        if let Some(masq) = args.masq.settings(&client, &config)? {
            let nft = Arc::new(dualstack_agent::masq::NftCommand);
            tokio::spawn(dualstack_agent::masq::run(masq, nft));
        }
        if let Some(proxy) = proxy {
            // Same process, its own client (kube-proxy's User-Agent), same node credentials.
            let pclient = crate::cmd::agent::client(&args.kubeconfig, "kube-proxy").await?;
            tokio::spawn(async move {
                if let Err(e) = dualstack_proxy_run::run(pclient, proxy, dualstack_proxy_run::Kernel::default()).await {
                    tracing::error!(error = %e, "the Service proxy stopped; Services are not proxied on this node");
                }
            });
        }
        tokio::select! {
            r = dualstack_agent::run(client, config, network) => r.map_err(anyhow::Error::from),
            _ = crate::cmd::controller_manager::shutdown_signal() => Ok(()),
        }
    })
}

/// The API client of the kubeconfig, with the User-Agent shape of `component` (`kubelet`,
/// `kube-proxy`; so writes are recorded under that field manager, as upstream's).
pub async fn client(kubeconfig: &str, component: &str) -> Result<kube::Client> {
    let mut config = if kubeconfig.is_empty() {
        kube::Config::infer()
            .await
            .context("loading the client configuration")?
    } else {
        // kube's message already names the file and the OS error; no chain to repeat it.
        let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| anyhow!("{e}"))?;
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading kubeconfig {kubeconfig}"))?
    };
    let ua = format!(
        "{component}/{} ({}/{}) dualstack/{}",
        dualstack_apiserver::discovery::GIT_VERSION,
        std::env::consts::OS,
        if std::env::consts::ARCH == "x86_64" {
            "amd64"
        } else {
            std::env::consts::ARCH
        },
        env!("CARGO_PKG_VERSION")
    );
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_str(&ua).context("the User-Agent header")?,
    ));
    kube::Client::try_from(config).context("building the API client")
}
