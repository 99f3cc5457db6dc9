//! `dualstack`: Kubernetes IPv4/IPv6 dual-stack networking in one binary.
//!
//! This file is the table of contents: one subcommand per component, one file each under
//! `cmd/`. Flags keep upstream's names; a bad flag value exits non-zero with upstream's message
//! before anything starts.
//!
//! One exception to "flags first": run with no arguments and `CNI_COMMAND` in the environment,
//! the binary is a CNI plugin (installed or symlinked as `/opt/cni/bin/dualstack`, runtimes call
//! it that way) and goes straight to `dualstack cni`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod flags;

/// Kubernetes IPv4/IPv6 dual-stack networking.
#[derive(Debug, Parser)]
#[command(name = "dualstack", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The Kubernetes-compatible API server (kube-apiserver), with the controllers built in.
    Server(cmd::server::ServerArgs),
    /// The dual-stack controllers of kube-controller-manager (node IPAM, EndpointSlices,
    /// Endpoints, LoadBalancer pools) against any API server, with leader election.
    ControllerManager(cmd::controller_manager::ControllerManagerArgs),
    /// The node agent (kubelet's side): registers the Node, renews its Lease, runs the pods
    /// bound to it as host processes in their own network namespaces.
    Agent(cmd::agent::AgentArgs),
    /// The Service proxy on nftables (kube-proxy), both families: ClusterIPs, NodePorts,
    /// externalIPs and LoadBalancer IPs to their endpoints.
    Proxy(cmd::proxy::ProxyCommand),
    /// The supervisor of one container process (started by the agent).
    #[command(hide = true)]
    Shim(cmd::shim::ShimArgs),
    /// Upstream's e2e test image agnhost, built in (netexec, serve-hostname, pause): what pods
    /// of the agnhost and pause images run.
    #[command(hide = true)]
    Agnhost(cmd::agnhost::AgnhostArgs),
    /// Issue bearer tokens (admin or node) for a server's data directory.
    Token(cmd::token::TokenArgs),
    /// The CNI plugin `dualstack` (bridge, veth, one address per family): `CNI_*` environment
    /// and network config on stdin, as container runtimes call plugins.
    Cni(cmd::cni::CniArgs),
    /// Performance measurements that print a table (see BENCHMARKS.md).
    Bench(cmd::bench::BenchArgs),
    /// A local dual-stack cluster: server, nodes and an outside host in network namespaces
    /// (root); returns once every node is Ready and leaves the cluster running.
    Up(cmd::up::UpArgs),
    /// Run a command on a lab host (node-1 ... node-N, outside).
    Exec(cmd::exec::ExecArgs),
    /// Remove a lab made by `up`: processes, namespaces, mounts, files. Safe to run twice.
    Down(cmd::down::DownArgs),
    /// ip-masq-agent for both families: masquerades traffic to destinations outside
    /// `nonMasqueradeCIDRs` to the node's address (nftables tables `ip`/`ip6 dualstack-masq`).
    MasqAgent(cmd::masq_agent::MasqAgentArgs),
    /// Cluster DNS (a kube-dns / CoreDNS stand-in) for both families: A and AAAA, SRV, PTR and
    /// pod records from Services and EndpointSlices; `dns query` asks one question.
    Dns(cmd::dns::DnsCommand),
    /// Copy a data dir's embedded store into etcd (every object and allocation), resumable;
    /// the data dir then serves with --etcd-servers.
    Migrate(cmd::migrate::MigrateArgs),
    /// A loopback TCP balancer in front of several API servers (`up --ha` runs it).
    #[command(hide = true)]
    Lb(cmd::lb::LbArgs),
}

fn main() -> ExitCode {
    if std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some() {
        return cmd::cni::run();
    }
    let cli = Cli::parse();
    let result = match cli.command {
        // First: the shim must stay single-threaded (mount namespaces), so nothing may start
        // a runtime or a thread before it runs.
        Command::Shim(args) => cmd::shim::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Agnhost(args) => cmd::agnhost::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::ControllerManager(args) => cmd::controller_manager::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Up(args) => cmd::up::run(args),
        Command::Exec(args) => cmd::exec::run(args),
        Command::Down(args) => cmd::down::run(args),
        Command::MasqAgent(args) => cmd::masq_agent::run(args),
        Command::Dns(args) => cmd::dns::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Lb(args) => cmd::lb::run(args),
        Command::Cni(_) => return cmd::cni::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
