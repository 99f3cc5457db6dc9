//! `dualstack agent`: the kubelet side of dual-stack, over the API with a node token.
//!
//! Start with [`run`]: it registers the Node ([`node`]), renews its Lease, waits for
//! `spec.podCIDRs`, prepares the pod network ([`network`]) and hands every pod bound to the
//! node to a pod worker ([`pod`]): sandbox (a network namespace), containers (host processes
//! under `dualstack shim`, [`runtime`]), probes ([`probe`]), status patches and deletion. All
//! decisions (status, phase, back-off, probe thresholds, file contents, address order) are the
//! pure `dualstack-node` crate; this crate does the I/O.

pub mod kubelet;
pub mod masq;
pub mod network;
pub mod node;
pub mod pod;
pub mod probe;
pub mod routes;
pub mod runtime;
pub mod spdy;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dualstack_node::files::{ClusterDns, DnsConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

pub use network::{Attachment, CniNetwork, LocalNetwork, NetworkError, PodNetwork};

/// The agent's settings (flags of `dualstack agent`).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--node-name`.
    pub node_name: String,
    /// `--node-ip`, parsed, in order.
    pub node_ips: Vec<IpAddr>,
    /// `--root-dir`.
    pub root_dir: PathBuf,
    /// `--cni-conf-dir`.
    pub cni_conf_dir: PathBuf,
    /// `--cni-bin-dir` (comma-separated list).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// `--cluster-dns` and `--cluster-domain`.
    pub cluster_dns: ClusterDns,
    /// `--resolv-conf`: the node's resolver configuration for `dnsPolicy: Default` (and
    /// `ClusterFirst` without cluster DNS); `None` (the flag set to "") means the local
    /// resolver, as kubelet.
    pub resolv_conf: Option<PathBuf>,
    /// `--max-pods`.
    pub max_pods: u32,
    /// The `dualstack` binary that provides `dualstack shim`.
    pub shim_exe: PathBuf,
    /// How often the Lease is renewed (10 s).
    pub lease_interval: Duration,
    /// How often an unchanged node status is reported anyway (kubelet: 5 min).
    pub status_report_interval: Duration,
    /// The kubelet port when it is served (published in the Node's `daemonEndpoints`).
    pub kubelet_port: Option<u16>,
}

/// Agent failures.
#[derive(Debug, Error)]
pub enum AgentError {
    /// An API request failed.
    #[error("{what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What every pod worker shares.
pub struct Agent {
    /// The API client (node credentials).
    pub client: kube::Client,
    /// Settings.
    pub config: Config,
    /// The pod network.
    pub network: Arc<dyn PodNetwork>,
    /// True once the pod network is configured.
    pub network_ready: watch::Receiver<bool>,
    /// The node's own resolver configuration (for `dnsPolicy: Default`).
    pub host_dns: DnsConfig,
    /// Pod events, as kubelet records them (`source: {component: kubelet, host: NODE}`).
    pub events: Arc<dualstack_controllers::run::events::Recorder>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish()
    }
}

impl Agent {
    /// `<root>/pods`.
    pub fn pods_dir(&self) -> PathBuf {
        self.config.root_dir.join("pods")
    }
}

/// Runs the agent until the process ends.
pub async fn run(
    client: kube::Client,
    config: Config,
    network: Arc<dyn PodNetwork>,
) -> Result<(), AgentError> {
    let pods_dir = config.root_dir.join("pods");
    std::fs::create_dir_all(&pods_dir).map_err(|source| AgentError::Io {
        path: pods_dir.clone(),
        source,
    })?;
    let (ready_tx, ready_rx) = watch::channel(false);
    let host_dns = match &config.resolv_conf {
        Some(path) => DnsConfig::parse(&std::fs::read_to_string(path).unwrap_or_default()),
        None => DnsConfig::local_resolver(&config.node_ips),
    };
    let agent = Arc::new(Agent {
        client: client.clone(),
        config: config.clone(),
        network,
        network_ready: ready_rx,
        host_dns,
        events: Arc::new(
            dualstack_controllers::run::events::Recorder::new(client.clone(), "kubelet")
                .with_host(config.node_name.clone()),
        ),
    });

    node::register(&agent).await?;
    tokio::spawn(node::lease_loop(agent.clone()));
    tokio::spawn(node::status_and_cidr_loop(agent.clone(), ready_tx));
    tokio::spawn(routes::routes_loop(agent.clone()));

    // Pods this node had before a restart that the API no longer has are cleaned up; the
    // others are adopted by their workers.
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = format!("spec.nodeName={}", config.node_name);
    let listed = loop {
        match pods.list(&ListParams::default().fields(&selector)).await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let live: HashSet<String> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    pod::clean_orphans(&agent, &live).await;

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    // Workers that completed their pod's deletion: late events for it start nothing.
    let mut finished: HashSet<String> = HashSet::new();
    let dispatch = |workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
                    finished: &HashSet<String>,
                    p: Pod| {
        let Some(uid) = p.metadata.uid.clone() else {
            return;
        };
        if finished.contains(&uid) {
            return;
        }
        if let Some(tx) = workers.get(&uid) {
            let _ = tx.send(Some(p));
            return;
        }
        let (tx, rx) = watch::channel(Some(p.clone()));
        workers.insert(uid.clone(), tx);
        let agent = agent.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            pod::Worker::new(agent, p, rx).run().await;
            let _ = done.send(uid);
        });
    };
    let stream = watcher(pods, watcher::Config::default().fields(&selector)).default_backoff();
    futures::pin_mut!(stream);
    let mut relisted: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(watcher::Event::Apply(p)) => dispatch(&mut workers, &finished, p),
                    Ok(watcher::Event::Delete(p)) => {
                        if let Some(tx) = p.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                            let _ = tx.send(None);
                        }
                    }
                    Ok(watcher::Event::Init) => relisted.clear(),
                    Ok(watcher::Event::InitApply(p)) => {
                        relisted.extend(p.metadata.uid.clone());
                        dispatch(&mut workers, &finished, p);
                    }
                    Ok(watcher::Event::InitDone) => {
                        for (uid, tx) in &workers {
                            if !relisted.contains(uid) {
                                let _ = tx.send(None);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                }
            }
            Some(uid) = done_rx.recv() => {
                workers.remove(&uid);
                finished.insert(uid);
            }
        }
    }
    Ok(())
}
