//! Routes between nodes' pod networks: every other node's podCIDRs, both families, via that
//! node's InternalIP of the same family, following nodes as they come and go. A pod-to-pod
//! packet keeps both of its addresses (no NAT inside the cluster).
//!
//! The plan is `dualstack_api::node::pod_cidr_routes` (pure); this loop watches the Nodes and
//! applies the difference with netlink in the agent's own network namespace (the node's).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use dualstack_api::node::{PodCidrRoute, pod_cidr_routes};
use dualstack_host::netlink::Netlink;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;

use crate::Agent;

/// Keeps the node's routes to the other nodes' podCIDRs in step with the API, until the
/// process ends. Also turns on forwarding for both families (a node routes its pods' packets).
pub async fn routes_loop(agent: Arc<Agent>) {
    for (path, what) in [
        (&["ipv4", "ip_forward"][..], "IPv4 forwarding"),
        (
            &["ipv6", "conf", "all", "forwarding"][..],
            "IPv6 forwarding",
        ),
    ] {
        if let Err(e) = dualstack_host::sysctl::write_net(path, "1") {
            tracing::warn!(error = %e, "could not turn on {what}");
        }
    }
    let nl = loop {
        match Netlink::connect() {
            Ok(nl) => break nl,
            Err(e) => {
                tracing::warn!(error = %e, "netlink connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let me = agent.config.node_name.clone();
    let nodes_api: Api<Node> = Api::all(agent.client.clone());
    let stream = watcher(nodes_api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Node>> = None;
    let mut installed: BTreeSet<PodCidrRoute> = BTreeSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(n)) => {
                if let Some(name) = n.metadata.name.clone() {
                    nodes.insert(name, n);
                }
            }
            Ok(watcher::Event::Delete(n)) => {
                if let Some(name) = &n.metadata.name {
                    nodes.remove(name);
                }
            }
            Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(n)) => {
                if let (Some(l), Some(name)) = (listing.as_mut(), n.metadata.name.clone()) {
                    l.insert(name, n);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(l) = listing.take() {
                    nodes = l;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "node watch failed");
                continue;
            }
        }
        let all: Vec<Node> = nodes.values().cloned().collect();
        let want: BTreeSet<PodCidrRoute> = pod_cidr_routes(&me, &all).into_iter().collect();
        apply(&nl, &mut installed, &want).await;
    }
}

/// Makes the installed routes `want`: removes those no longer wanted, adds (or replaces) the
/// new ones. Failures are logged and retried at the next change.
async fn apply(
    nl: &Netlink,
    installed: &mut BTreeSet<PodCidrRoute>,
    want: &BTreeSet<PodCidrRoute>,
) {
    for r in installed.difference(want).copied().collect::<Vec<_>>() {
        // A route to the same destination that is still wanted (a new gateway) is replaced
        // below; delete only what nothing wants any more.
        if !want.iter().any(|w| w.dst == r.dst) {
            match nl.delete_route(r.dst).await {
                Ok(_) => tracing::info!(dst = %r.dst, via = %r.gateway, "removed pod route"),
                Err(e) => {
                    tracing::warn!(error = %e, dst = %r.dst, "removing pod route failed");
                    continue;
                }
            }
        }
        installed.remove(&r);
    }
    for r in want.difference(installed).copied().collect::<Vec<_>>() {
        let result = match nl.add_route(r.dst, r.gateway, None).await {
            // Something already routes this destination (an older gateway, or a route left by
            // an earlier run): replace it.
            Ok(false) => match nl.delete_route(r.dst).await {
                Ok(_) => nl.add_route(r.dst, r.gateway, None).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        match result {
            Ok(_) => {
                tracing::info!(dst = %r.dst, via = %r.gateway, "added pod route");
                installed.insert(r);
            }
            Err(e) => {
                tracing::warn!(error = %e, dst = %r.dst, via = %r.gateway, "adding pod route failed")
            }
        }
    }
}
