//! `dualstack`: Kubernetes IPv4/IPv6 dual-stack networking in one binary.
//!
//! This file is the table of contents: one subcommand per component, one file each under
//! `cmd/`. Flags keep upstream's names; a bad flag value exits non-zero with upstream's message
//! before anything starts.

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
    /// The supervisor of one container process (started by the agent).
    #[command(hide = true)]
    Shim(cmd::shim::ShimArgs),
    /// Issue bearer tokens (admin or node) for a server's data directory.
    Token(cmd::token::TokenArgs),
    /// Performance measurements that print a table (see BENCHMARKS.md).
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // First: the shim must stay single-threaded (mount namespaces), so nothing may start
        // a runtime or a thread before it runs.
        Command::Shim(args) => cmd::shim::run(args),
        Command::Agent(args) => cmd::agent::run(args),
        Command::Server(args) => cmd::server::run(args),
        Command::ControllerManager(args) => cmd::controller_manager::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Bench(args) => cmd::bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
