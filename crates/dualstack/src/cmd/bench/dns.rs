//! Issue 12: cluster DNS queries per second and latency from a pod (root).
//!
//! `dualstack up` makes a lab (its `kube-system/kube-dns`: two `dualstack dns` pods behind
//! 10.0.0.10 and fd00::a), the suite creates `--services` dual-stack Services, then runs the load
//! generator (`dualstack bench dns-load`, hidden) as a pod: `--concurrency` workers, each with its
//! own UDP socket, send A and AAAA queries for the Services' names back to back for
//! `--seconds`, through the node's nftables proxy to the DNS pods, once per DNS ClusterIP; and
//! once with one worker (latency without load). The pod prints one JSON line; the suite reads
//! it from the pod's log. Client, proxy and both DNS servers share this machine's cores.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};

use super::support::{Report, Summary, block_on, loadavg, ms, progress};

/// `dualstack bench dns`
#[derive(Debug, Clone, clap::Args)]
pub struct DnsBenchArgs {
    /// Lab nodes (the DNS Deployment has 2 replicas, one per node).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Dual-stack Services whose names are asked for.
    #[arg(long, default_value_t = 100)]
    pub services: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent queries (workers) in the loaded runs.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Where the lab goes (a fresh dir inside).
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
}

/// `dualstack bench dns-load`: the load generator the suite runs inside a pod.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsLoadArgs {
    /// The DNS server (`IP` or `IP:PORT`).
    #[arg(long)]
    pub server: String,
    /// Names asked: `svc-0.default.svc.cluster.local` ... `svc-<count-1>...`.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Concurrent workers.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// What one load run measured (the pod's JSON line).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Answers received (NOERROR with one record).
    pub answered: u64,
    /// Answers that were not NOERROR with one record.
    pub wrong: u64,
    /// Queries without an answer within 1 s.
    pub timeouts: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Runs the load generator and prints its [`LoadResult`] as one JSON line.
pub fn load(args: DnsLoadArgs) -> Result<()> {
    let server: SocketAddr = match args.server.parse() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(args.server.parse().context("--server")?, 53),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..args.concurrency {
            let count = args.count.max(1);
            tasks.push(tokio::spawn(async move {
                worker(server, w, count, deadline).await
            }));
        }
        let mut lat = Vec::new();
        let mut r = LoadResult::default();
        for t in tasks {
            let (l, wrong, timeouts) = t.await??;
            lat.extend(l);
            r.wrong += wrong;
            r.timeouts += timeouts;
        }
        r.seconds = start.elapsed().as_secs_f64();
        r.answered = lat.len() as u64;
        let s = Summary::of(&mut lat);
        r.p50_us = s.p50.as_micros() as u64;
        r.p99_us = s.p99.as_micros() as u64;
        r.max_us = s.max.as_micros() as u64;
        anyhow::Ok(r)
    })?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// One worker: its own socket, one query in flight, A and AAAA in turn over the names.
async fn worker(
    server: SocketAddr,
    w: usize,
    count: usize,
    deadline: Instant,
) -> Result<(Vec<Duration>, u64, u64)> {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::RecordType;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    let mut buf = vec![0u8; 4096];
    let (mut lat, mut wrong, mut timeouts) = (Vec::new(), 0u64, 0u64);
    let mut i = w;
    let mut id: u16 = (w as u16).wrapping_mul(7919);
    while Instant::now() < deadline {
        let qtype = if i.is_multiple_of(2) {
            RecordType::A
        } else {
            RecordType::AAAA
        };
        let name = format!("svc-{}.default.svc.cluster.local", (i / 2) % count);
        i += 1;
        id = id.wrapping_add(1);
        let q = dualstack_dns::client::query_message(id, &name, qtype, None)?;
        let t0 = Instant::now();
        if sock.send(&q).await.is_err() {
            // ICMP unreachable from an earlier query (no endpoint yet): count it, go on.
            wrong += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                Err(_) => {
                    timeouts += 1;
                    break;
                }
                Ok(Err(_)) => {
                    wrong += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
                Ok(Ok(n)) => {
                    let Ok(m) = Message::from_vec(&buf[..n]) else {
                        wrong += 1;
                        break;
                    };
                    if m.metadata.id != id {
                        continue; // a late answer to a query that timed out
                    }
                    if m.metadata.response_code == ResponseCode::NoError && m.answers.len() == 1 {
                        lat.push(t0.elapsed());
                    } else {
                        wrong += 1;
                    }
                    break;
                }
            }
        }
    }
    Ok((lat, wrong, timeouts))
}

/// Resident memory (MiB) of every `dualstack dns` process of the lab at `dir`.
fn dns_servers_rss(dir: &Path) -> Vec<f64> {
    let dir = dir.to_string_lossy().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        if args.get(1).is_some_and(|a| a == "dns") && args.iter().any(|a| a.contains(&dir)) {
            let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
            {
                out.push(kb / 1024.0);
            }
        }
    }
    out
}

/// A lab removed on drop.
struct Lab {
    dir: tempfile::TempDir,
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

fn service(i: usize) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i}"), "labels": {"bench": "dns"}},
        "spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("static service")
}

/// Runs the load generator in a pod and returns its result.
async fn load_pod(
    client: &kube::Client,
    lab_dir: &Path,
    name: &str,
    server: &str,
    args: &DnsBenchArgs,
    concurrency: usize,
) -> Result<LoadResult> {
    let exe = std::env::current_exe()?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "load", "image": "none",
            "command": [exe, "bench", "dns-load", "--server", server,
                        "--count", args.services.to_string(), "--seconds", args.seconds.to_string(),
                        "--concurrency", concurrency.to_string()],
        }]},
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds + 120);
    let done = loop {
        let p = pods.get(name).await?;
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break p;
        }
        if Instant::now() > deadline {
            bail!("load pod {name} did not finish");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let node = done
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let uid = done.metadata.uid.clone().unwrap_or_default();
    let file = std::fs::read(lab_dir.join(format!("nodes/{node}/pods/{uid}/load/0.log")))
        .context("reading the load pod's log")?;
    // The file holds CRI records; the output is what `kubectl logs` shows of it.
    let log = String::from_utf8_lossy(&dualstack_node::logs::render(&file, &Default::default()))
        .to_string();
    let line = log
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("no result in the load pod's log:\n{log}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Runs the suite.
pub fn run(args: DnsBenchArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("dualstack bench dns needs root (it runs `dualstack up`)");
    }
    block_on(async move {
        let lab = Lab {
            dir: tempfile::Builder::new()
                .prefix("ds-bench-dns-")
                .tempdir_in(&args.work_dir)?,
        };
        progress("dualstack up");
        let out = Command::new(std::env::current_exe()?)
            .args(["up", "--nodes", &args.nodes.to_string(), "--data-dir"])
            .arg(lab.dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "dualstack up failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let kc = kube::config::Kubeconfig::read_from(lab.dir.path().join("kubeconfig"))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = kube::Client::try_from(cfg)?;
        progress(&format!("creating {} dual-stack Services", args.services));
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        for i in 0..args.services {
            services.create(&PostParams::default(), &service(i)).await?;
        }
        let mut report = Report::default();
        let runs = [
            ("10.0.0.10", args.concurrency, "IPv4 ClusterIP 10.0.0.10"),
            ("fd00::a", args.concurrency, "IPv6 ClusterIP fd00::a"),
            ("10.0.0.10", 1, "IPv4 ClusterIP 10.0.0.10"),
        ];
        for (n, (server, conc, label)) in runs.iter().enumerate() {
            progress(&format!(
                "load via {server}, {conc} in flight, {} s",
                args.seconds
            ));
            let r = load_pod(
                &client,
                lab.dir.path(),
                &format!("dns-load-{n}"),
                server,
                &args,
                *conc,
            )
            .await?;
            let qps = r.answered as f64 / r.seconds;
            let p99 = Duration::from_micros(r.p99_us);
            let p50 = Duration::from_micros(r.p50_us);
            report.row(
                format!("A/AAAA from a pod via the {label}, {conc} in flight: queries/s"),
                format!("{qps:.0} /s ({} wrong, {} timeouts)", r.wrong, r.timeouts),
                "CoreDNS: 33,669 /s internal names, 1 instance on 2 vCPUs, both pegged",
                None,
            );
            report.row(
                format!("… latency p50 / p99 ({label}, {conc} in flight)"),
                format!(
                    "{} / {} (max {})",
                    ms(p50),
                    ms(p99),
                    ms(Duration::from_micros(r.max_us))
                ),
                "CoreDNS: 2.6 ms average at that load",
                None,
            );
        }
        let rss = dns_servers_rss(lab.dir.path());
        let each: Vec<String> = rss.iter().map(|r| format!("{r:.1} MiB")).collect();
        report.row(
            format!(
                "RSS of each `dualstack dns` with {} Services, after the runs",
                args.services
            ),
            each.join(", "),
            format!(
                "CoreDNS: (pods + Services) × 0.000858 + 49.1 MB = {:.1} MB",
                (args.services as f64 + 2.0 * args.nodes as f64) * 0.000858 + 49.1
            ),
            None,
        );
        println!(
            "dns bench: {} nodes, {} Services, {} s per run, load average {}",
            args.nodes,
            args.services,
            args.seconds,
            loadavg()
        );
        report.print();
        Ok(())
    })
}
