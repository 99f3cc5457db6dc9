//! `dualstack exec HOST -- CMD...`: runs a command on a lab host (`node-N`, `outside`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `dualstack exec ...`
#[derive(Debug, Clone, Args)]
pub struct ExecArgs {
    /// The lab's data dir.
    #[arg(long = "data-dir", value_name = "path", default_value = crate::cmd::up::DEFAULT_LAB_DIR)]
    pub data_dir: PathBuf,
    /// The host: node-1 ... node-N, or outside.
    pub host: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Replaces this process with the command on the host (must run before any thread starts).
pub fn run(args: ExecArgs) -> Result<()> {
    match dualstack_lab::lab::exec(&args.data_dir, &args.host, &args.command)? {}
}
