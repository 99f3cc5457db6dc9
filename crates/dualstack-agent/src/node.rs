//! The agent's Node: registration (kubelet's `registerWithAPIServer`), the status heartbeat,
//! the Lease in `kube-node-lease` (renewed every 10 s, 40 s duration) and the wait for
//! `spec.podCIDRs`, after which the pod network is configured and the node turns Ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::watch;

use crate::{Agent, AgentError};

/// The namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` of the node Lease (kubelet's `--node-lease-duration-seconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Api { what, source }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn facts(agent: &Agent, network_ready: bool) -> dualstack_node::node::Facts {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    let cpus =
        std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    dualstack_node::node::Facts {
        node_ips: agent.config.node_ips.clone(),
        hostname: agent.config.node_name.clone(),
        network_ready,
        max_pods: agent.config.max_pods,
        kubelet_port: agent.config.kubelet_port,
        cpus,
        memory_kib,
        info: NodeSystemInfo {
            architecture: arch().into(),
            operating_system: std::env::consts::OS.into(),
            kernel_version: kernel.trim().into(),
            os_image: "dualstack".into(),
            container_runtime_version: format!("dualstack://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: format!("v1.33.0-dualstack.{}", env!("CARGO_PKG_VERSION")),
            kube_proxy_version: String::new(),
            machine_id: machine_id.trim().into(),
            system_uuid: machine_id.trim().into(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .into(),
            ..Default::default()
        },
    }
}

/// Creates the Node (or takes over an existing one: labels merged, status replaced), with
/// retries until the API answers.
pub async fn register(agent: &Agent) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let name = &agent.config.node_name;
    let labels = dualstack_node::node::labels(name, std::env::consts::OS, arch());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut delay = Duration::from_millis(100);
    loop {
        let r = match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => nodes
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "registering the node failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(7));
            }
        }
    }
    let status = dualstack_node::node::status(&facts(agent, false), Timestamp::now(), None);
    patch_status(agent, &status).await?;
    tracing::info!(node = %name, "node registered");
    Ok(())
}

async fn patch_status(agent: &Agent, status: &NodeStatus) -> Result<(), AgentError> {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    nodes
        .patch_status(
            &agent.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map(|_| ())
        .map_err(api_err("patching the node status"))
}

/// Renews `kube-node-lease/NAME` every [`Config::lease_interval`](crate::Config).
pub async fn lease_loop(agent: Arc<Agent>) {
    let leases: Api<Lease> = Api::namespaced(agent.client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let name = agent.config.node_name.clone();
    let mut tick = tokio::time::interval(agent.config.lease_interval);
    loop {
        tick.tick().await;
        let now = MicroTime(Timestamp::now());
        let r = match leases.get_opt(&name).await {
            Ok(Some(_)) => leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}})))
                .await
                .map(|_| ()),
            Ok(None) => {
                let owner = nodes.get(&name).await.ok().and_then(|n| n.metadata.uid).map(|uid| OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid,
                    ..Default::default()
                });
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(LEASE_NAMESPACE.into()), owner_references: owner.map(|o| vec![o]), ..Default::default() },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(name.clone()),
                        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                leases.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
    }
}

/// Watches the own Node for `spec.podCIDRs`, configures the pod network once they are known,
/// and reports the node status on every change and at least every report interval.
pub async fn status_and_cidr_loop(agent: Arc<Agent>, ready_tx: watch::Sender<bool>) {
    let nodes: Api<Node> = Api::all(agent.client.clone());
    let selector = format!("metadata.name={}", agent.config.node_name);
    let stream = watcher(nodes, watcher::Config::default().fields(&selector))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    let mut reported: Option<NodeStatus> = None;
    let mut last_report = Instant::now();
    let mut check = tokio::time::interval(Duration::from_secs(10));
    let mut configured: Option<Vec<IpNet>> = None;
    loop {
        let node = tokio::select! {
            n = stream.next() => match n {
                Some(Ok(n)) => Some(n),
                Some(Err(e)) => { tracing::warn!(error = %e, "node watch failed"); None }
                None => return,
            },
            _ = check.tick() => None,
        };
        if let Some(node) = &node {
            let cidrs: Vec<IpNet> = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidrs.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect();
            if !cidrs.is_empty() && configured.as_ref() != Some(&cidrs) {
                match agent.network.configure(&cidrs).await {
                    Ok(()) => {
                        tracing::info!(?cidrs, "pod network configured");
                        configured = Some(cidrs);
                        let _ = ready_tx.send(true);
                    }
                    Err(e) => tracing::warn!(error = %e, "configuring the pod network failed"),
                }
            }
        }
        let now = Timestamp::now();
        let status = dualstack_node::node::status(
            &facts(&agent, configured.is_some()),
            now,
            reported.as_ref(),
        );
        let due = last_report.elapsed() >= agent.config.status_report_interval;
        if reported
            .as_ref()
            .is_none_or(|r| dualstack_node::node::changed(r, &status))
            || due
        {
            match patch_status(&agent, &status).await {
                Ok(()) => {
                    reported = Some(status);
                    last_report = Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "node status update failed"),
            }
        }
    }
}
