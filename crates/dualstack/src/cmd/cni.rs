//! `dualstack cni`: our CNI plugin (`type: dualstack`), called by a container runtime with
//! `CNI_*` in the environment and the network configuration on stdin. The result, or the
//! spec's error JSON, goes to stdout; failure exits 1. See `dualstack_cni::plugin`.
//!
//! Installed as a plugin (`/opt/cni/bin/dualstack`, a copy of or symlink to this binary), it is
//! run with no arguments; `main` then sees `CNI_COMMAND` and comes here directly.

use std::io::Read;
use std::process::ExitCode;

use clap::Args;
use dualstack_cni::types::{CniErrorResult, ErrorCode};

/// `dualstack cni` takes no flags: everything comes from `CNI_*` and stdin.
#[derive(Debug, Clone, Args)]
pub struct CniArgs {}

/// Runs one plugin invocation.
pub fn run() -> ExitCode {
    let mut input = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut input) {
        Ok(_) => dualstack_cni::plugin::run(&|k| std::env::var(k).ok(), &input),
        Err(e) => dualstack_cni::plugin::Outcome {
            stdout: serde_json::to_string(&CniErrorResult::new(
                ErrorCode::IoFailure,
                "error reading from stdin",
                e.to_string(),
            ))
            .unwrap_or_default(),
            success: false,
        },
    };
    if !outcome.stdout.is_empty() {
        println!("{}", outcome.stdout);
    }
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
