//! The agent's own Node: labels, `status.addresses` (InternalIP in `--node-ip` order, then
//! Hostname, spec §7.3), capacity, and the conditions with kubelet's reasons and messages.

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// kubelet's message while the pod network is not ready (no CNI configuration yet).
pub const NETWORK_NOT_READY_MESSAGE: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// What the agent knows about its node.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `--node-ip`, in order.
    pub node_ips: Vec<IpAddr>,
    /// The Hostname address (the node name).
    pub hostname: String,
    /// Whether the pod network is configured (podCIDRs known, CNI configuration written).
    pub network_ready: bool,
    /// `pods` capacity (kubelet's `--max-pods`, 110).
    pub max_pods: u32,
    /// Number of CPUs.
    pub cpus: u32,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// `nodeInfo`.
    pub info: NodeSystemInfo,
    /// The kubelet port, published as `daemonEndpoints.kubeletEndpoint.Port` (None: not
    /// served).
    pub kubelet_port: Option<u16>,
}

/// The labels kubelet sets on its Node.
pub fn labels(name: &str, os: &str, arch: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", os),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", os),
        ("beta.kubernetes.io/arch", arch),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `status.addresses`: one InternalIP per `--node-ip` entry in order, then Hostname.
pub fn addresses(node_ips: &[IpAddr], hostname: &str) -> Vec<NodeAddress> {
    node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .chain(std::iter::once(NodeAddress {
            type_: "Hostname".into(),
            address: hostname.into(),
        }))
        .collect()
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    previous: &[NodeCondition],
) -> NodeCondition {
    let status = if ok { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    NodeCondition {
        type_: kind.into(),
        status,
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(since),
    }
}

/// kubelet's node conditions, in its order: MemoryPressure, DiskPressure, PIDPressure, Ready.
pub fn conditions(
    network_ready: bool,
    now: Timestamp,
    previous: &[NodeCondition],
) -> Vec<NodeCondition> {
    let (reason, message) = if network_ready {
        ("KubeletReady", "kubelet is posting ready status")
    } else {
        ("KubeletNotReady", NETWORK_NOT_READY_MESSAGE)
    };
    vec![
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            now,
            previous,
        ),
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            now,
            previous,
        ),
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            now,
            previous,
        ),
        condition("Ready", network_ready, reason, message, now, previous),
    ]
}

/// The Node's status.
pub fn status(f: &Facts, now: Timestamp, previous: Option<&NodeStatus>) -> NodeStatus {
    let prev = previous
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", f.cpus.to_string()),
        ("memory", format!("{}Ki", f.memory_kib)),
        ("pods", f.max_pods.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    NodeStatus {
        addresses: Some(addresses(&f.node_ips, &f.hostname)),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(conditions(f.network_ready, now, &prev)),
        node_info: Some(f.info.clone()),
        daemon_endpoints: f.kubelet_port.map(|p| NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(p) }),
        }),
        ..Default::default()
    }
}

/// Whether two statuses differ in more than heartbeat times (a change worth reporting now).
pub fn changed(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) != strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_kubelet_port_is_published_as_the_daemon_endpoint() {
        let mut f = Facts {
            node_ips: ips(&["203.0.113.11"]),
            hostname: "node-1".into(),
            network_ready: true,
            max_pods: 110,
            cpus: 2,
            memory_kib: 1024,
            info: NodeSystemInfo::default(),
            kubelet_port: Some(10250),
        };
        let port = |s: &NodeStatus| {
            s.daemon_endpoints
                .as_ref()
                .and_then(|d| d.kubelet_endpoint.as_ref())
                .map(|e| e.port)
        };
        assert_eq!(port(&status(&f, t(0), None)), Some(10250));
        f.kubelet_port = None;
        assert_eq!(port(&status(&f, t(0), None)), None);
    }

    #[test]
    fn addresses_are_internal_ips_in_flag_order_then_hostname() {
        for node_ips in [
            ips(&["192.0.2.1", "2001:db8:1::1"]),
            ips(&["2001:db8:1::1", "192.0.2.1"]),
        ] {
            let got = addresses(&node_ips, "node-a");
            let want: Vec<(String, String)> = vec![
                ("InternalIP".into(), node_ips[0].to_string()),
                ("InternalIP".into(), node_ips[1].to_string()),
                ("Hostname".into(), "node-a".into()),
            ];
            assert_eq!(
                got.into_iter()
                    .map(|a| (a.type_, a.address))
                    .collect::<Vec<_>>(),
                want
            );
        }
    }

    #[test]
    fn ready_follows_the_network_with_kubelets_reasons() {
        let not_ready = conditions(false, t(0), &[]);
        assert_eq!(
            not_ready
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            vec!["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(not_ready[3].status, "False");
        assert_eq!(not_ready[3].reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            not_ready[3].message.as_deref(),
            Some(NETWORK_NOT_READY_MESSAGE)
        );
        assert_eq!(
            not_ready[0].reason.as_deref(),
            Some("KubeletHasSufficientMemory")
        );
        let ready = conditions(true, t(5), &not_ready);
        assert_eq!(
            (ready[3].status.as_str(), ready[3].reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
        assert_eq!(
            ready[3].message.as_deref(),
            Some("kubelet is posting ready status")
        );
        assert_eq!(ready[3].last_transition_time, Some(Time(t(5))));
        assert_eq!(ready[0].last_transition_time, Some(Time(t(0))));
    }
}
