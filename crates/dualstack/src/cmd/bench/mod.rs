//! `dualstack bench <suite>`: performance measurements that print a table (never timed tests).
//! Each suite starts what it measures (a `dualstack server` child process on loopback with a
//! temporary data directory) and drives it like a real client would.

use anyhow::Result;
use clap::{Args, Subcommand};

/// `dualstack bench ...`
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    suite: Suite,
}

#[derive(Debug, Clone, Subcommand)]
enum Suite {}

/// Runs a suite.
pub fn run(args: BenchArgs) -> Result<()> {
    match args.suite {}
}
