//! `dualstack migrate`: copies the embedded store of a data dir into etcd (every object and
//! allocation record), so the same data dir then serves with `--etcd-servers`. See
//! `dualstack_store::migrate`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use dualstack_store::embedded::Embedded;
use dualstack_store::etcd::Etcd;

use crate::cmd::server::EtcdFlags;

/// Flags of `dualstack migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The data dir whose embedded store (store.redb) is copied. Its server must be stopped.
    #[arg(
        long = "data-dir",
        value_name = "path",
        default_value = "./dualstack-data"
    )]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub etcd: EtcdFlags,

    /// Migrate even into an etcd that already holds objects (they are overwritten) or an
    /// unfinished migration from another data dir.
    #[arg(long = "force")]
    pub force: bool,

    /// Stop after this many transactions (tests of an interrupted migration).
    #[arg(long = "max-batches", hide = true)]
    pub max_batches: Option<usize>,
}

/// Runs the migration.
pub fn run(args: MigrateArgs) -> Result<()> {
    crate::cmd::init_tracing();
    let Some(config) = args.etcd.etcd_config() else {
        bail!("--etcd-servers is required");
    };
    let path = args.data_dir.join("store.redb");
    if !path.exists() {
        bail!("no embedded store at {}", path.display());
    }
    let source_id = std::path::absolute(&args.data_dir)
        .unwrap_or_else(|_| args.data_dir.clone())
        .display()
        .to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let source = Embedded::open(&path).with_context(|| {
            format!("opening {} (is its server still running?)", path.display())
        })?;
        let target = Etcd::connect(&config)
            .await
            .with_context(|| format!("connecting to etcd at {}", config.endpoints.join(",")))?;
        let report = dualstack_store::migrate::migrate(
            &source,
            &target,
            &source_id,
            args.force,
            args.max_batches,
        )
        .await?;
        println!(
            "migrated {} keys from {} to etcd {} ({} copied, {} already there{})",
            report.source_keys,
            path.display(),
            config.endpoints.join(","),
            report.copied,
            report.unchanged,
            if report.resumed { ", resumed" } else { "" }
        );
        Ok(())
    })
}
