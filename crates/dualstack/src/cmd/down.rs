//! `dualstack down`: removes a lab made by `dualstack up`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// `dualstack down ...`
#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    /// The lab's data dir.
    #[arg(long = "data-dir", value_name = "path", default_value = crate::cmd::up::DEFAULT_LAB_DIR)]
    pub data_dir: PathBuf,
}

/// Runs `down`.
pub fn run(args: DownArgs) -> Result<()> {
    if dualstack_lab::lab::down(&args.data_dir)? {
        println!("removed the lab in {}", args.data_dir.display());
    } else {
        println!("no lab in {}", args.data_dir.display());
    }
    Ok(())
}
