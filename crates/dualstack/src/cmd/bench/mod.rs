//! `dualstack bench <suite>`: performance measurements that print a table (never timed tests).
//! Each suite starts what it measures (a `dualstack server` child process on loopback with a
//! temporary data directory) and drives it like a real client would.

use anyhow::Result;
use clap::{Args, Subcommand};

mod api;
mod controllers;
mod deploy;
mod dns;
mod etcd;
mod exec;
mod nodes;
mod programming;
mod proxy;
mod services;
mod support;

/// `dualstack bench ...`
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Clone, Subcommand)]
enum Suite {
    /// Issue 3: durable creates, LIST, watch fan-out and memory of the API server.
    Api(api::ApiArgs),
    /// Issue 4: SingleStack vs RequireDualStack create throughput; allocation at 99% full.
    Services(services::ServicesArgs),
    /// Issue 5: node IPAM for 5,000 nodes, EndpointSlices for 1,000 Services × 10 pods, pod
    /// ready → slice latency.
    Controllers(controllers::ControllersArgs),
    /// Issue 9 (root): `up --nodes 3` to all Ready, pod create → Running with two addresses,
    /// agent memory with 100 pods.
    Nodes(nodes::NodesArgs),
    /// Issue 10 (root): connect latency through our nftables ruleset vs kube-proxy's
    /// iptables layout at 10 / 1,000 / 10,000 Services, full and one-Service syncs, memory.
    Proxy(proxy::ProxyBenchArgs),
    /// Issue 10 (root): network programming latency in a lab, pod Ready → traffic reaches it
    /// through both ClusterIPs from another node.
    Programming(programming::ProgrammingArgs),
    /// Issue 12 (root): a Deployment of 100 replicas on a 3-node lab to all ready, and its
    /// deletion.
    Deploy(deploy::DeployArgs),
    /// Issue 12 (root): cluster DNS queries per second and latency from a pod, through both
    /// DNS ClusterIPs.
    Dns(dns::DnsBenchArgs),
    /// The DNS load generator that `bench dns` runs inside a pod.
    #[command(hide = true)]
    DnsLoad(dns::DnsLoadArgs),
    /// Issue 12 (root): `pods/exec` round trips through the API server to a node's kubelet
    /// port (WebSocket v5), and kubectl exec as a user runs it.
    Exec(exec::ExecArgs),
    /// Issue 13: durable Service creates on the embedded store vs etcd (1 and 3 members),
    /// beside `etcdctl check perf` on the same etcd.
    Etcd(etcd::EtcdArgs),
}

/// Runs a suite.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.suite {
        Suite::Api(a) => api::run(a),
        Suite::Services(a) => services::run(a),
        Suite::Controllers(a) => controllers::run(a),
        Suite::Nodes(a) => nodes::run(a),
        Suite::Proxy(a) => proxy::run(a),
        Suite::Programming(a) => programming::run(a),
        Suite::Deploy(a) => deploy::run(a),
        Suite::Dns(a) => dns::run(a),
        Suite::DnsLoad(a) => dns::load(a),
        Suite::Exec(a) => exec::run(a),
        Suite::Etcd(a) => etcd::run(a),
    }
}
