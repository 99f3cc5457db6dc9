//! Issue 10 (root): network programming latency in a real lab, after upstream's SLI (pod Ready
//! to the Service proxy of every node sending traffic to it). `dualstack up --nodes 2` on a
//! fresh data dir; one dual-stack Service; each round replaces its only backend pod (on
//! node-2) and measures, from the moment the watch shows the new pod Ready, how long until a
//! TCP connect from node-1's network namespace to each ClusterIP is accepted. Probes run
//! inside the lab namespace (never from the host's).
//!
//! Two series: back to back (a round starts as soon as the previous pod's deletion is
//! programmed, so the Ready sync follows two syncs of the deletion and meets kube-proxy's
//! pacing, at most one sync per `--nftables-min-sync-period` after a burst of 2), and settled
//! (a round starts [`SETTLE`] after that, when the pacer has its burst again): the proxy's own
//! programming latency.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, PostParams, WatchEvent};

use super::nodes::{Lab, watch_from_now};
use super::support::{Report, Summary, block_on, ms};

/// `dualstack bench programming`
#[derive(Debug, Clone, clap::Args)]
pub struct ProgrammingArgs {
    /// How many backend replacements to measure.
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// Where the lab goes (a fresh dir inside).
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
}

/// The pause before a settled round: two minimum sync periods refill the pacer's burst.
const SETTLE: Duration = Duration::from_secs(2);

fn service() -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "prog"},
        "spec": {
            "ipFamilyPolicy": "RequireDualStack",
            "selector": {"app": "prog"},
            "ports": [{"port": 80, "targetPort": 8080}]
        }
    }))
    .expect("static service")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "prog"}},
        "spec": {
            "nodeName": "node-2",
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "web", "image": "none",
                "command": ["python3", "-m", "http.server", "8080", "--bind", "::"],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}
            }]
        }
    }))
    .expect("static pod")
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a TCP connect from inside `netns` to `addr` is accepted (a refused or timed-out
/// connect is `false`).
fn connects(netns: &Path, addr: SocketAddr) -> Result<bool> {
    Ok(dualstack_host::netns::run_in(netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })?)
}

/// Polls from `netns` every millisecond until every address connects; returns when each did.
fn until_all_connect(netns: &Path, addrs: &[SocketAddr], since: Instant) -> Result<Duration> {
    let deadline = since + Duration::from_secs(30);
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!("no traffic to {pending:?} 30 s after the pod was Ready");
        }
        let mut still = Vec::new();
        for a in pending {
            let t = Instant::now();
            let ok = connects(netns, a)?;
            if std::env::var_os("DS_BENCH_DEBUG").is_some() {
                eprintln!("  {:?} {a} {ok} in {:?}", since.elapsed(), t.elapsed());
            }
            if !ok {
                still.push(a);
            }
        }
        pending = still;
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(since.elapsed())
}

/// Runs the suite.
pub fn run(args: ProgrammingArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("dualstack bench programming needs root (it runs `dualstack up`)");
    }
    block_on(async move {
        let (lab, _) = Lab::up(&args.work_dir, 2)?;
        let netns = lab.dir.path().join("netns/node-1");
        let client = lab.client().await?;
        let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let svc = svcs.create(&PostParams::default(), &service()).await?;
        let ips: Vec<IpAddr> = svc
            .spec
            .and_then(|s| s.cluster_ips)
            .context("no clusterIPs")?
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        let targets: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, 80)).collect();
        let mut back_to_back = Vec::new();
        let mut settled = Vec::new();
        for round in 0..=2 * args.rounds {
            // Round 0 warms the lab up (first pod on the node, first programming); odd rounds
            // are back to back, even ones settled.
            let settle = round > 0 && round % 2 == 0;
            if settle {
                tokio::time::sleep(SETTLE).await;
            }
            let name = format!("prog-{round}");
            let mut watch = watch_from_now(&pods, "app=prog").await?;
            pods.create(&PostParams::default(), &pod(&name)).await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            let ready_at = loop {
                let ev = tokio::time::timeout_at(deadline.into(), watch.next())
                    .await
                    .context("pod not Ready in 60 s")?
                    .context("watch ended")??;
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = ev
                    && p.metadata.name.as_deref() == Some(name.as_str())
                    && is_ready(&p)
                {
                    break Instant::now();
                }
            };
            let (ns, t) = (netns.clone(), targets.clone());
            let took =
                tokio::task::spawn_blocking(move || until_all_connect(&ns, &t, ready_at)).await??;
            match (round, settle) {
                (0, _) => {}
                (_, true) => settled.push(took),
                (_, false) => back_to_back.push(took),
            }
            pods.delete(&name, &DeleteParams::default()).await?;
            // The next round starts from a Service without endpoints: refused everywhere.
            let gone = Instant::now() + Duration::from_secs(30);
            loop {
                let (ns, t) = (netns.clone(), targets.clone());
                let any = tokio::task::spawn_blocking(move || -> Result<bool> {
                    for a in t {
                        if connects(&ns, a)? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                })
                .await??;
                if !any && pods.get_opt(&name).await?.is_none() {
                    break;
                }
                if Instant::now() > gone {
                    bail!("{name} still answers 30 s after its deletion");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut report = Report::default();
        for (what, samples, goal) in [
            (
                "back to back: the previous pod's deletion synced just before",
                &mut back_to_back,
                false,
            ),
            (
                "settled: 2 s after the previous deletion",
                &mut settled,
                true,
            ),
        ] {
            let s = Summary::of(samples);
            report.row(
                format!(
                    "pod Ready (watch) → TCP connect to both ClusterIPs accepted from another node, {what} ({} rounds)",
                    s.n
                ),
                format!("p50 {}, p99 {}, max {}", ms(s.p50), ms(s.p99), ms(s.max)),
                if goal {
                    "p99 ≤ 1 s (upstream SLO: p99 ≤ 5 s at scale)"
                } else {
                    "— (bounded by the 1 s minimum sync period, kept from kube-proxy)"
                },
                goal.then_some(s.p99 <= Duration::from_secs(1)),
            );
        }
        report.print();
        drop(lab);
        Ok(())
    })
}
