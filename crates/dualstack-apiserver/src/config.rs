//! The server's configuration, validated by the binary from upstream-named flags.

use std::net::IpAddr;
use std::path::PathBuf;

use dualstack_api::config::ServiceClusterIpRange;
use dualstack_ipam::PortRange;

/// Everything `dualstack server` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Store, PKI, tokens and kubeconfig live here.
    pub data_dir: PathBuf,
    /// Listen address.
    pub bind_address: IpAddr,
    /// Listen port (0 = any free port).
    pub secure_port: u16,
    /// Addresses published for the `default/kubernetes` Service, primary family first.
    pub advertise_addresses: Vec<IpAddr>,
    /// `--service-cluster-ip-range`.
    pub service_ranges: ServiceClusterIpRange,
    /// `--service-node-port-range`.
    pub node_port_range: PortRange,
    /// How often the ClusterIP/NodePort repair loop runs (upstream: 3 minutes).
    pub repair_interval: std::time::Duration,
    /// How many connections are held, and for how long (see [`crate::conn`]).
    pub connection_limits: crate::conn::Limits,
    /// More listeners, each inside another network namespace (the namespace file and the
    /// address there), served exactly like the main one: `dualstack up` gives every lab node
    /// the API on its own loopback without any route between the lab and the host.
    pub netns_listeners: Vec<(PathBuf, std::net::SocketAddr)>,
    /// How pods' streaming subresources reach kubelet ports (`--kubelet-*`).
    pub kubelet: crate::kubelet::KubeletClientConfig,
}
