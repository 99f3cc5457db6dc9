//! `dualstack bench etcd`: durable Service creates through the API on each store, in one run.
//!
//! For the embedded store, a 1-member and a 3-member etcd cluster (Debian's `etcd`, started on
//! loopback with data dirs on disk): one `dualstack server` on it, `--objects` RequireDualStack
//! Services (two ClusterIPs, each with its `IPAddress` record, in one transaction) from
//! `--clients` connections; rate, p50 and p99 of the 201s. Then, for each etcd cluster with the
//! server stopped, `etcdctl check perf --load=xl` (60 s of raw puts from many clients) on the
//! same members: the put rate the API path sits on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use dualstack_store::etcd::local::LocalEtcd;

use super::support::{
    Report, ServerOpts, ServerProcess, block_on, create_many, filesystem, loadavg, ms, progress,
};

/// Flags of `dualstack bench etcd`.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// Services to create on each store.
    #[arg(long, default_value_t = 5_000)]
    objects: usize,
    /// Concurrent creating clients, one connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Skip `etcdctl check perf` (60 s per cluster).
    #[arg(long)]
    no_check_perf: bool,
    /// The `--load` of `etcdctl check perf`: `xl` asks for 15,000 puts/s, so its throughput line
    /// is the rate etcd reaches (`s` would stop at 150/s).
    #[arg(long, default_value = "xl")]
    check_perf_load: String,
    #[command(flatten)]
    server: ServerOpts,
}

const RANGES: &str = "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108";
const SERVICES: &str = "/api/v1/namespaces/default/services";

/// Runs the suite.
pub fn run(args: EtcdArgs) -> Result<()> {
    block_on(run_async(args))
}

fn service(i: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("bench-{i}")},
            "spec": {"ipFamilyPolicy": "RequireDualStack", "selector": {"app": "bench"},
                     "ports": [{"port": 80}]}
        })
        .to_string(),
    )
}

/// Creates `--objects` Services through a server started with `extra` flags; the report row.
async fn measure(args: &EtcdArgs, label: &str, extra: &[&str], report: &mut Report) -> Result<()> {
    let mut base = vec![RANGES];
    base.extend_from_slice(extra);
    let server = ServerProcess::start_with(&args.server, &base).await?;
    let mut conns = server.connector().connect_many(args.clients).await?;
    progress(&format!("{label}: creating {} Services", args.objects));
    let run = create_many(&mut conns, SERVICES, args.objects, false, Arc::new(service)).await?;
    run.ensure_ok(label)?;
    let s = run.summary();
    report.row(
        format!(
            "{label}: RequireDualStack Service creates, {} clients",
            args.clients
        ),
        format!(
            "{:.0}/s, p50 {}, p99 {}",
            run.per_second(),
            ms(s.p50),
            ms(s.p99)
        ),
        "",
        None,
    );
    server.stop().await;
    Ok(())
}

/// `etcdctl check perf` on `etcd`: its verdict lines, joined.
async fn check_perf(etcd: &LocalEtcd, load: &str) -> Result<String> {
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", etcd.servers_flag()))
        .args(["check", "perf", &format!("--load={load}")])
        .output()
        .await
        .context("running etcdctl (install Debian's etcd-client)")?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // The verdicts may follow a progress bar on the same line (it redraws with `\r`).
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .filter_map(|l| {
            let at = l.find("PASS").or_else(|| l.find("FAIL"))?;
            Some(l[at..].trim())
        })
        .collect();
    if lines.is_empty() {
        bail!("etcdctl check perf printed no verdict:\n{text}");
    }
    Ok(lines.join("; "))
}

async fn run_async(args: EtcdArgs) -> Result<()> {
    if args.objects == 0 || args.clients == 0 {
        bail!("--objects and --clients must be positive");
    }
    let tmp = std::env::temp_dir();
    let fs = filesystem(&tmp)?;
    if fs.in_memory {
        bail!(
            "{} is on {}, which would flatter etcd's fsyncs: set TMPDIR to a directory on a disk",
            tmp.display(),
            fs.name
        );
    }
    let load_before = loadavg();
    let mut report = Report::default();
    measure(&args, "embedded", &[], &mut report).await?;
    let mut perf = Vec::new();
    for members in [1, 3] {
        let etcd = LocalEtcd::start(members).await?;
        let flag = format!("--etcd-servers={}", etcd.servers_flag());
        let label = format!(
            "etcd, {members} member{}",
            if members > 1 { "s" } else { "" }
        );
        measure(&args, &label, &[&flag], &mut report).await?;
        if !args.no_check_perf {
            progress(&format!("{label}: etcdctl check perf (60 s)"));
            perf.push((label, check_perf(&etcd, &args.check_perf_load).await?));
        }
        // Let the members stop before the next cluster starts.
        drop(etcd);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (label, verdict) in perf {
        report.row(
            format!(
                "{label}: `etcdctl check perf --load={}`",
                args.check_perf_load
            ),
            verdict,
            "",
            None,
        );
    }
    report.print();
    println!();
    println!(
        "Data on {} ({}); load average before {load_before}, after {}; {}, {} CPUs.",
        tmp.display(),
        fs.name,
        loadavg(),
        args.server.protocol(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}
