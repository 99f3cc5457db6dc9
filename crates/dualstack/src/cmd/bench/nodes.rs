//! Issue 9: `dualstack up --nodes 3` until it returns (every node Ready, cluster DNS
//! answering); pod create → Running with two addresses on one node (one at a time, then 100 at
//! once); the agent's memory with 100 pods.
//!
//! Each measurement runs the real thing: `dualstack up` as a child process on a fresh data dir
//! (root), kube-rs on the host's loopback as the client, `dualstack down` afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, WatchEvent, WatchParams};

use super::support::{Report, Summary, block_on, ms};

/// `dualstack bench nodes`
#[derive(Debug, Clone, clap::Args)]
pub struct NodesArgs {
    /// How many times to bring a 3-node lab up from nothing.
    #[arg(long, default_value_t = 3)]
    pub up_runs: usize,
    /// Pods for the latency and memory measurements.
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Where the labs go (a fresh dir inside per run).
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
}

/// A lab that is removed on drop.
pub(super) struct Lab {
    pub(super) dir: tempfile::TempDir,
}

impl Lab {
    pub(super) fn up(work: &Path, nodes: usize) -> Result<(Lab, Duration)> {
        let dir = tempfile::Builder::new()
            .prefix("ds-bench-")
            .tempdir_in(work)?;
        let lab = Lab { dir };
        let start = Instant::now();
        let out = Command::new(std::env::current_exe()?)
            .args(["up", "--nodes", &nodes.to_string(), "--data-dir"])
            .arg(lab.dir.path())
            .output()?;
        let took = start.elapsed();
        if !out.status.success() {
            bail!(
                "dualstack up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((lab, took))
    }

    pub(super) async fn client(&self) -> Result<kube::Client> {
        self.client_inner().await
    }

    /// The lab's data dir.
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn client_inner(&self) -> Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(self.dir.path().join("kubeconfig"))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// Resident memory of a recorded process (`run/<name>.pid`), MiB.
    fn rss_mib(&self, name: &str) -> Result<f64> {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("run/{name}.pid")))?;
        let pid = pid.split_whitespace().next().context("empty pid file")?;
        rss_of(pid.parse()?)
    }
}

impl Lab {
    /// The shims of this lab (processes running `dualstack shim` for a pod under its dir):
    /// how many, and their RSS together (MiB).
    fn shims_rss(&self) -> Result<(usize, f64)> {
        let dir = self.dir.path().to_string_lossy().to_string();
        let (mut n, mut total) = (0, 0.0);
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            if args.get(1).is_some_and(|a| a == "shim")
                && args.iter().any(|a| a.contains(&dir))
                && let Ok(r) = rss_of(pid)
            {
                n += 1;
                total += r;
            }
        }
        Ok((n, total))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Ok(exe) = std::env::current_exe() {
            let _ = Command::new(exe)
                .args(["down", "--data-dir"])
                .arg(self.dir.path())
                .output();
        }
    }
}

fn rss_of(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "nodeName": "node-1",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "none", "command": ["sleep", "100000"]}]
        }
    }))
    .expect("static pod")
}

fn running_with_two_ips(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running") && s.pod_ips.as_ref().is_some_and(|i| i.len() == 2)
    })
}

/// A watch of the pods with `labels`, from the current resourceVersion on (what happens after
/// this call, not the initial list).
pub(super) async fn watch_from_now(
    pods: &Api<Pod>,
    labels: &str,
) -> Result<futures::stream::BoxStream<'static, kube::Result<WatchEvent<Pod>>>> {
    let rv = pods
        .list_metadata(&Default::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    Ok(pods
        .watch(&WatchParams::default().labels(labels), &rv)
        .await?
        .boxed())
}

/// Creates `names` (all at once) and returns each one's create → Running-with-two-addresses
/// latency, measured from the watch.
async fn create_and_time(pods: &Api<Pod>, names: &[String]) -> Result<Vec<Duration>> {
    let mut watch = watch_from_now(pods, "bench=pods").await?;
    let mut started = std::collections::HashMap::new();
    for n in names {
        started.insert(n.clone(), Instant::now());
        pods.create(&PostParams::default(), &pod(n)).await?;
    }
    let mut done = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.len() < names.len() {
        let ev = tokio::time::timeout_at(deadline.into(), watch.next())
            .await
            .context("pods not Running in 120 s")?
            .context("watch ended")??;
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev
            && running_with_two_ips(&p)
            && let Some(name) = p.metadata.name.clone()
            && let Some(t0) = started.get(&name)
        {
            done.entry(name).or_insert_with(|| t0.elapsed());
        }
    }
    Ok(done.into_values().collect())
}

/// Runs the suite.
pub fn run(args: NodesArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("dualstack bench nodes needs root (it runs `dualstack up`)");
    }
    block_on(async move {
        let mut report = Report::default();
        // 1. `up --nodes 3` from nothing until it returns: every node Ready, cluster DNS
        //    answering.
        let mut ups = Vec::new();
        for _ in 0..args.up_runs {
            let (lab, took) = Lab::up(&args.work_dir, 3)?;
            ups.push(took);
            drop(lab);
        }
        let s = Summary::of(&mut ups);
        report.row(
            format!(
                "`dualstack up --nodes 3` until it returns: all nodes Ready, cluster DNS answering (median of {})",
                s.n
            ),
            format!("{} (max {})", ms(s.p50), ms(s.max)),
            "≤ 5 s (kind: tens of seconds)",
            Some(s.p50 <= Duration::from_secs(5)),
        );

        // 2. Pod latency on one node.
        let (lab, _) = Lab::up(&args.work_dir, 1)?;
        let client = lab.client().await?;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let mut one_at_a_time = Vec::new();
        for i in 0..args.pods {
            let mut t = create_and_time(&pods, &[format!("seq-{i}")]).await?;
            one_at_a_time.append(&mut t);
        }
        let s = Summary::of(&mut one_at_a_time);
        report.row(
            format!(
                "pod create → Running with 2 addresses, one at a time ({} pods)",
                s.n
            ),
            format!("p50 {}, p99 {}", ms(s.p50), ms(s.p99)),
            "p50 ≤ 100 ms",
            Some(s.p50 <= Duration::from_millis(100)),
        );
        let rss = lab.rss_mib("node-1")?;
        report.row(
            format!("agent RSS with {} pods", args.pods),
            format!("{rss:.1} MiB"),
            "",
            None,
        );
        let (shims, shim_mib) = lab.shims_rss()?;
        report.row(
            format!(
                "container supervisors (`dualstack shim`) with {} pods",
                args.pods
            ),
            format!(
                "{shims} processes, {:.2} MiB RSS each",
                shim_mib / shims.max(1) as f64
            ),
            "",
            None,
        );
        for i in 0..args.pods {
            pods.delete(&format!("seq-{i}"), &DeleteParams::default())
                .await?;
        }
        // Wait until they are gone, then a burst.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pods
            .list_metadata(&Default::default())
            .await?
            .items
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("pods not deleted in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let names: Vec<String> = (0..args.pods).map(|i| format!("burst-{i}")).collect();
        let t0 = Instant::now();
        let mut burst = create_and_time(&pods, &names).await?;
        let all = t0.elapsed();
        let s = Summary::of(&mut burst);
        report.row(
            format!("{} pods created at once → all Running", s.n),
            format!("{} (p50 {}, p99 {})", ms(all), ms(s.p50), ms(s.p99)),
            "",
            None,
        );
        report.row(
            format!("agent RSS with {} pods (after the burst)", args.pods),
            format!("{:.1} MiB", lab.rss_mib("node-1")?),
            "",
            None,
        );
        drop(lab);
        report.print();
        Ok(())
    })
}
