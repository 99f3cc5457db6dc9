//! `dualstack controller-manager --kubeconfig FILE`: the dual-stack controllers of
//! kube-controller-manager (node IPAM, node lifecycle, EndpointSlices, Endpoints, LoadBalancer
//! pools) and the scheduler against any Kubernetes API server, behind a Lease. `dualstack server` runs the same controllers
//! in-process ([`InServer`]).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use dualstack_api::config::{FeatureGates, NodeIpamConfig, ServiceClusterIpRange};
use dualstack_controllers::{ControllerManager, ManagerConfig, Metrics, config};

use crate::flags::{ControllerFlags, FeatureGateFlags, NodeIpamFlags};

/// Flags of `dualstack controller-manager`.
#[derive(Debug, Clone, Args)]
pub struct ControllerManagerArgs {
    /// Path to kubeconfig file with authorization and master location information. Empty: the
    /// in-cluster configuration or $KUBECONFIG.
    #[arg(long = "kubeconfig", value_name = "string", default_value = "")]
    pub kubeconfig: String,

    /// The address of the plain-HTTP metrics endpoint (/metrics, /healthz); port 0 picks a
    /// free port and logs it; "0" turns it off.
    #[arg(
        long = "metrics-bind-address",
        value_name = "ip:port",
        default_value = "127.0.0.1:10257"
    )]
    pub metrics_bind_address: String,

    /// CIDR Range for Services in cluster (one CIDR or a dual-stack pair). Node CIDRs that
    /// overlap it are never given to nodes.
    #[arg(
        long = "service-cluster-ip-range",
        value_name = "string",
        default_value = ""
    )]
    pub service_cluster_ip_range: String,

    /// Type of CIDR allocator to use (only RangeAllocator without a cloud provider).
    #[arg(
        long = "cidr-allocator-type",
        value_name = "string",
        default_value = "RangeAllocator"
    )]
    pub cidr_allocator_type: String,

    #[command(flatten)]
    pub ipam: NodeIpamFlags,

    #[command(flatten)]
    pub controllers: ControllerFlags,

    #[command(flatten)]
    pub gates: FeatureGateFlags,
}

/// The validated flags.
#[derive(Debug)]
pub struct Resolved {
    /// What runs.
    pub manager: ManagerConfig,
    /// Where metrics are served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// `--service-cluster-ip-range` entries that did not parse (upstream logs and skips them).
    pub skipped_service_cidrs: Vec<String>,
}

impl ControllerManagerArgs {
    /// Validates every flag, in kube-controller-manager's order, with its messages.
    pub fn resolve(&self) -> Result<Resolved> {
        let gates = FeatureGates::parse(&self.gates.feature_gates)?;
        let (service_cidrs, skipped) =
            config::parse_kcm_service_cidrs(&self.service_cluster_ip_range)?;
        config::check_cidr_allocator_type(&self.cidr_allocator_type)?;
        // `from_flags` reads the service ranges only to copy them; kube-controller-manager's
        // own copy (no default, parse failures skipped) replaces them below.
        let placeholder = ServiceClusterIpRange::parse("")?;
        let node_ipam: Option<NodeIpamConfig> = NodeIpamConfig::from_flags(
            self.ipam.allocate_node_cidrs,
            &self.ipam.cluster_cidr,
            self.ipam.masks(),
            &placeholder,
        )?
        .map(|mut c| {
            c.service_cidrs = service_cidrs.clone();
            c
        });
        if let Some(cfg) = &node_ipam {
            gates.check_dual_stack(
                "--cluster-cidr",
                &self.ipam.cluster_cidr,
                cfg.is_dual_stack(),
            )?;
        }
        let identity = format!("{}_{}", crate::flags::hostname(), uuid::Uuid::new_v4());
        let manager = self.controllers.manager_config(node_ipam, identity, true)?;
        let metrics = match self.metrics_bind_address.as_str() {
            "0" | "" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|e| {
                anyhow!("invalid argument {a:?} for \"--metrics-bind-address\" flag: {e}")
            })?),
        };
        Ok(Resolved {
            manager,
            metrics,
            skipped_service_cidrs: skipped,
        })
    }
}

/// The User-Agent of the controllers' requests, shaped as client-go's default
/// (`<binary>/<version> (<os>/<arch>) kubernetes/<commit>`) with kube-controller-manager's name,
/// so the API server records their writes (status ones included) under the field manager
/// `kube-controller-manager`, as upstream does, rather than `unknown`.
pub fn user_agent() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "kube-controller-manager/{} ({}/{arch}) dualstack/{}",
        dualstack_apiserver::discovery::GIT_VERSION,
        std::env::consts::OS,
        env!("CARGO_PKG_VERSION")
    )
}

/// A client for the API server of a kubeconfig file (empty: in-cluster or $KUBECONFIG).
pub async fn client(kubeconfig: &str) -> Result<kube::Client> {
    let mut config = if kubeconfig.is_empty() {
        kube::Config::infer()
            .await
            .context("loading the client configuration")?
    } else {
        let file = kube::config::Kubeconfig::read_from(kubeconfig)
            .with_context(|| format!("reading kubeconfig {kubeconfig}"))?;
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading kubeconfig {kubeconfig}"))?
    };
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_str(&user_agent()).context("the User-Agent header")?,
    ));
    kube::Client::try_from(config).context("building the API client")
}

/// Serves `/metrics` and `/healthz` on plain HTTP; returns the bound address.
async fn serve_metrics(addr: SocketAddr, metrics: Metrics) -> Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for metrics"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = metrics.encode();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok(bound)
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs the controller manager until SIGINT/SIGTERM, or until a controller cannot start.
pub fn run(args: ControllerManagerArgs) -> Result<()> {
    let resolved = args.resolve()?;
    crate::cmd::init_tracing();
    for entry in &resolved.skipped_service_cidrs {
        tracing::info!(cidr = %entry, "Unsuccessful parsing of service CIDR");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = client(&args.kubeconfig).await?;
        let metrics = Metrics::new();
        if let Some(addr) = resolved.metrics {
            let bound = serve_metrics(addr, metrics.clone()).await?;
            tracing::info!(addr = %bound, "serving metrics");
        }
        ControllerManager::new(client, resolved.manager, metrics)
            .run(shutdown_signal())
            .await?;
        tracing::info!("controller manager stopped");
        Ok(())
    })
}

/// The leader election identity of the controllers built into the server of `data_dir`:
/// stable across restarts, so a restarted server takes its own Lease back at once.
pub fn server_identity(data_dir: &Path) -> String {
    let path: PathBuf = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    format!(
        "{}_dualstack-server_{:016x}",
        crate::flags::hostname(),
        h.finish()
    )
}

/// The controllers running inside `dualstack server`, over its own API.
pub struct InServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InServer {
    /// Starts the controllers with the server's admin kubeconfig; nothing when all are off.
    pub async fn start(
        kubeconfig: &Path,
        config: ManagerConfig,
        metrics: Metrics,
    ) -> Result<InServer> {
        if config.controllers.none_enabled() {
            tracing::info!("built-in controllers disabled");
            return Ok(InServer {
                stop: None,
                task: None,
            });
        }
        let path = kubeconfig.to_string_lossy().to_string();
        let client = client(&path).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let manager = ControllerManager::new(client, config, metrics);
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            if let Err(error) = manager.run(stop).await {
                tracing::error!(%error, "built-in controllers stopped");
            }
        });
        Ok(InServer {
            stop: Some(tx),
            task: Some(task),
        })
    }

    /// Stops the controllers and gives up the Lease.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }
}
