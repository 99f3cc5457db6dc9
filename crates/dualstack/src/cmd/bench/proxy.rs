//! Issue 10 (root): the Service proxy at 10, 1,000 and 10,000 dual-stack Services × 10
//! endpoints per family. In one run, inside one network namespace made for it (removed at the
//! end, also on failure): TCP connect latency (p50/p99) to the last Service through our
//! nftables ruleset and through an iptables ruleset laid out as kube-proxy's iptables mode (a
//! linear `KUBE-SERVICES` chain of one rule per Service port → `KUBE-SVC-*` → `KUBE-SEP-*`,
//! loaded with `iptables-restore`/`ip6tables-restore`); the full sync (render + one netlink
//! batch per family, the two families side by side as the proxy applies them) of 10,000 Services × 2 families;
//! one-Service changes at 10,000 (an endpoint replaced; ClientIP affinity turned on); the
//! proxier's memory.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dualstack_proxy::{DualStackProxier, NodeConfig, Transaction};
use dualstack_proxy_run::apply::{NftApplier, NftCommand};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

/// `dualstack bench proxy`
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyBenchArgs {
    /// Service counts to load.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    pub services: Vec<u32>,
    /// Connects per measurement.
    #[arg(long, default_value_t = 2000)]
    pub connects: usize,
    /// Where the namespace file goes.
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
}

const EPS: u32 = 10;
const PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;

fn cluster_ip(v6: bool, i: u32) -> IpAddr {
    if v6 {
        format!("fd00:96::{:x}:{:x}", i >> 16, (i & 0xffff) + 1)
            .parse()
            .expect("valid")
    } else {
        let n = i + 1;
        format!("10.96.{}.{}", n / 256, n % 256)
            .parse()
            .expect("valid")
    }
}

/// Endpoints: the last Service's are the addresses our server listens on in the namespace;
/// every other Service's are unrouted addresses that are never dialled.
fn endpoint(v6: bool, i: u32, e: u32, last: bool) -> IpAddr {
    if last {
        if v6 {
            format!("fd00:200::{:x}", e + 1).parse().expect("valid")
        } else {
            format!("10.200.0.{}", e + 1).parse().expect("valid")
        }
    } else {
        let n = i * 16 + e;
        if v6 {
            format!("fd00:201::{:x}:{:x}", n >> 16, n & 0xffff)
                .parse()
                .expect("valid")
        } else {
            format!("10.{}.{}.{}", 1 + n / 65536, (n / 256) % 256, n % 256)
                .parse()
                .expect("valid")
        }
    }
}

fn objects(n: u32) -> Result<(Vec<Service>, Vec<EndpointSlice>)> {
    let mut svcs = Vec::with_capacity(n as usize);
    let mut slices = Vec::with_capacity(2 * n as usize);
    for i in 0..n {
        let name = format!("svc{i}");
        let last = i + 1 == n;
        svcs.push(serde_json::from_value(json!({
            "metadata": {"namespace": "bench", "name": name},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": cluster_ip(false, i).to_string(),
                "clusterIPs": [cluster_ip(false, i).to_string(), cluster_ip(true, i).to_string()],
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "RequireDualStack",
                "ports": [{"name": "http", "port": PORT, "protocol": "TCP", "targetPort": TARGET_PORT}],
            }
        }))?);
        for (v6, fam) in [(false, "IPv4"), (true, "IPv6")] {
            let eps: Vec<_> = (0..EPS)
                .map(|e| {
                    json!({
                        "addresses": [endpoint(v6, i, e, last).to_string()],
                        "conditions": {"ready": true, "serving": true, "terminating": false},
                        "nodeName": "other",
                    })
                })
                .collect();
            slices.push(serde_json::from_value(json!({
                "metadata": {
                    "namespace": "bench",
                    "name": format!("{name}-{}", fam.to_lowercase()),
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": fam,
                "endpoints": eps,
                "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
            }))?);
        }
    }
    Ok((svcs, slices))
}

/// The namespace the bench runs in; removed on drop.
struct Netns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Netns {
    fn new(work: &Path) -> Result<Netns> {
        let dir = tempfile::Builder::new()
            .prefix("ds-bench-proxy-")
            .tempdir_in(work)?;
        let path = dir.path().join("ns");
        dualstack_host::netns::create(&path)?;
        let ns = Netns { path, _dir: dir };
        ns.sh(
            "ip link set lo up && ip link add v0 type veth peer name v1 && ip link set v0 up && \
             ip link set v1 up && \
             for i in 1 2 3 4 5 6 7 8 9 10; do ip addr add 10.200.0.$i/32 dev lo; \
             ip -6 addr add fd00:200::$(printf %x $i)/128 dev lo nodad; done && \
             ip route add 10.0.0.0/8 dev v0 && ip -6 route add fd00::/8 dev v0",
        )?;
        Ok(ns)
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display())).arg(prog);
        c
    }

    fn sh(&self, script: &str) -> Result<()> {
        let out = self.cmd("sh").args(["-c", script]).output()?;
        if !out.status.success() {
            bail!("{script}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn restore(&self, prog: &str, text: &str) -> Result<Duration> {
        let start = Instant::now();
        let mut child = self
            .cmd(prog)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(text.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("{prog}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(start.elapsed())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = dualstack_host::netns::remove(&self.path);
    }
}

/// kube-proxy's iptables layout for one family.
fn iptables_text(n: u32, v6: bool) -> String {
    let mut chains = String::from("*nat\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n");
    let mut rules = String::from(
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n",
    );
    let mask = if v6 { 128 } else { 32 };
    for i in 0..n {
        let last = i + 1 == n;
        chains.push_str(&format!(":KUBE-SVC-{i:08} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d {}/{mask} -p tcp -m comment --comment \"bench/svc{i}:http cluster IP\" -m tcp --dport {PORT} -j KUBE-SVC-{i:08}\n",
            cluster_ip(v6, i)
        ));
        for e in 0..EPS {
            chains.push_str(&format!(":KUBE-SEP-{i:08}-{e} - [0:0]\n"));
            let left = EPS - e;
            if left > 1 {
                rules.push_str(&format!(
                    "-A KUBE-SVC-{i:08} -m statistic --mode random --probability {:.11} -j KUBE-SEP-{i:08}-{e}\n",
                    1.0 / f64::from(left)
                ));
            } else {
                rules.push_str(&format!("-A KUBE-SVC-{i:08} -j KUBE-SEP-{i:08}-{e}\n"));
            }
            let ep = endpoint(v6, i, e, last);
            let to = if v6 {
                format!("[{ep}]:{TARGET_PORT}")
            } else {
                format!("{ep}:{TARGET_PORT}")
            };
            rules.push_str(&format!(
                "-A KUBE-SEP-{i:08}-{e} -p tcp -m tcp -j DNAT --to-destination {to}\n"
            ));
        }
    }
    chains + &rules + "COMMIT\n"
}

/// Connect latencies (p50, p99) to `dst` from inside the namespace.
fn connect_latency(ns: &Netns, dst: SocketAddr, n: usize) -> Result<(Duration, Duration)> {
    let mut times = dualstack_host::netns::run_in(&ns.path, move || -> std::io::Result<_> {
        let mut times = Vec::with_capacity(n);
        // Warm up (neighbour entries, caches).
        for _ in 0..50 {
            drop(TcpStream::connect_timeout(&dst, Duration::from_secs(2))?);
        }
        for _ in 0..n {
            let start = Instant::now();
            let s = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
            times.push(start.elapsed());
            drop(s);
        }
        Ok(times)
    })??;
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Ok((p(0.50), p(0.99)))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The applier of the bench: one for the whole run, as the proxy keeps one (its netlink
/// sockets are opened in the bench namespace by the first sync and kept).
fn nft() -> &'static NftCommand {
    static NFT: std::sync::OnceLock<NftCommand> = std::sync::OnceLock::new();
    NFT.get_or_init(NftCommand::default)
}

/// Applies both families' transactions side by side, as the proxy does.
fn apply(ns: &Netns, v4: Transaction, v6: Transaction) -> Result<()> {
    let one = |tx: Transaction| {
        let path = ns.path.clone();
        std::thread::spawn(move || -> Result<()> {
            dualstack_host::netns::run_in(&path, move || nft().apply(&tx))??;
            Ok(())
        })
    };
    let (a, b) = (one(v4), one(v6));
    a.join()
        .map_err(|_| anyhow::anyhow!("apply thread panicked"))??;
    b.join()
        .map_err(|_| anyhow::anyhow!("apply thread panicked"))??;
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Runs the suite.
pub fn run(args: ProxyBenchArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("dualstack bench proxy needs root (a network namespace, nftables)");
    }
    let ns = Netns::new(&args.work_dir)?;
    // The endpoint server: one listener per family, created inside the namespace.
    // `[::]` takes both families (bindv6only is 0).
    let listener =
        dualstack_host::netns::run_in(&ns.path, || TcpListener::bind(("::", TARGET_PORT)))??;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let node = NodeConfig::new(
        "bench",
        vec!["203.0.113.11".parse()?, "2001:db8:1::11".parse()?],
        vec!["10.244.0.0/16".parse()?, "fc00::/48".parse()?],
    );

    let mut latency_rows = Vec::new();
    let mut sync_rows = Vec::new();
    for &n in &args.services {
        eprintln!("loading {n} dual-stack Services × {EPS} endpoints per family ...");
        let (mut svcs, slices) = objects(n)?;
        let target = |v6: bool| SocketAddr::new(cluster_ip(v6, n - 1), PORT);

        // Ours: full sync = render both families + apply both.
        let rss0 = rss_kib();
        let mut px = DualStackProxier::new(&node);
        // The objects arrive as watch events (ingest), then one sync renders and applies both
        // families: kube-proxy's `sync_proxy_rules_duration` is the sync, not the events.
        let start = Instant::now();
        for s in &svcs {
            px.on_service(s);
        }
        for s in &slices {
            px.on_slice(s)?;
        }
        let ingest = start.elapsed();
        let start = Instant::now();
        let res = px.sync(Instant::now());
        let render = start.elapsed();
        let ops = res.ipv4.transaction.ops.len() + res.ipv6.transaction.ops.len();
        if std::env::var_os("DS_BENCH_DEBUG").is_some() {
            let start = Instant::now();
            let bytes = dualstack_proxy::netlink::batch(&res.ipv4.transaction, 1)
                .bytes
                .len();
            eprintln!(
                "  full: the IPv4 batch of {bytes} bytes encoded in {:?}",
                start.elapsed()
            );
        }
        let start = Instant::now();
        apply(&ns, res.ipv4.transaction, res.ipv6.transaction)?;
        let applied = start.elapsed();
        let mem_mib = rss_kib().saturating_sub(rss0) as f64 / 1024.0;
        // One-Service changes on the middle Service: one endpoint replaced in both families
        // (a pod replaced), then ClientIP affinity turned on (its own chains and sets).
        let mid = (n / 2) as usize;
        let mut slices = slices;
        let change = |px: &mut DualStackProxier, what: &dyn Fn(&mut DualStackProxier)| {
            let start = Instant::now();
            what(px);
            let inc = px.sync(Instant::now());
            let rendered = start.elapsed();
            let ops = inc.ipv4.transaction.ops.len() + inc.ipv6.transaction.ops.len();
            let elements_only = dualstack_proxy::netlink::is_element_only(&inc.ipv4.transaction);
            apply(&ns, inc.ipv4.transaction, inc.ipv6.transaction)?;
            if std::env::var_os("DS_BENCH_DEBUG").is_some() {
                eprintln!(
                    "  change: rendered in {rendered:?}, applied at {:?} (elements only: {elements_only})",
                    start.elapsed()
                );
            }
            anyhow::Ok((ops, start.elapsed()))
        };
        for s in slices.iter_mut().filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                == svcs[mid].metadata.name.as_ref()
        }) {
            if let Some(e) = s.endpoints.first_mut() {
                let a: IpAddr = e.addresses[0].parse()?;
                e.addresses[0] = match a {
                    IpAddr::V4(_) => "10.250.0.1".to_string(),
                    IpAddr::V6(_) => "fd00:250::1".to_string(),
                };
            }
        }
        let changed: Vec<EndpointSlice> = slices
            .iter()
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    == svcs[mid].metadata.name.as_ref()
            })
            .cloned()
            .collect();
        let (ep_ops, ep_took) = change(&mut px, &|px| {
            for s in &changed {
                px.on_slice(s).expect("valid slice");
            }
        })?;
        if let Some(spec) = svcs[mid].spec.as_mut() {
            spec.session_affinity = Some("ClientIP".into());
        }
        let affine = svcs[mid].clone();
        let (aff_ops, aff_took) = change(&mut px, &|px| px.on_service(&affine))?;
        sync_rows.push(format!(
            "| {n} | {ops} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {ep_ops} / {:.1} ms | {aff_ops} / {:.1} ms | {mem_mib:.0} MiB |",
            ingest.as_secs_f64() * 1e3,
            render.as_secs_f64() * 1e3,
            applied.as_secs_f64() * 1e3,
            (render + applied).as_secs_f64() * 1e3,
            ep_took.as_secs_f64() * 1e3,
            aff_took.as_secs_f64() * 1e3,
        ));
        let ours4 = connect_latency(&ns, target(false), args.connects)?;
        let ours6 = connect_latency(&ns, target(true), args.connects)?;
        ns.sh("nft delete table ip dualstack-proxy; nft delete table ip6 dualstack-proxy")?;
        drop(px);

        // kube-proxy's iptables layout.
        let t4 = ns.restore("iptables-restore", &iptables_text(n, false))?;
        let t6 = ns.restore("ip6tables-restore", &iptables_text(n, true))?;
        let lin4 = connect_latency(&ns, target(false), args.connects)?;
        let lin6 = connect_latency(&ns, target(true), args.connects)?;
        ns.sh("iptables -t nat -F && iptables -t nat -X && ip6tables -t nat -F && ip6tables -t nat -X")?;
        latency_rows.push(format!(
            "| {n} | {} / {} | {} / {} | {} / {} | {} / {} | {:.1} s |",
            us(ours4.0),
            us(ours4.1),
            us(ours6.0),
            us(ours6.1),
            us(lin4.0),
            us(lin4.1),
            us(lin6.0),
            us(lin6.1),
            (t4 + t6).as_secs_f64(),
        ));
    }
    println!(
        "connect latency to the last Service's ClusterIP, p50 / p99 ({} connects each):",
        args.connects
    );
    println!();
    println!(
        "| Services (×2 families, ×10 endpoints) | ours IPv4 | ours IPv6 | iptables layout IPv4 | iptables layout IPv6 | iptables-restore (both) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &latency_rows {
        println!("{r}");
    }
    println!();
    println!("nftables sync (both families, one netlink batch per family, side by side):");
    println!();
    println!(
        "| Services | full: ops | ingest (events) | sync: render | sync: apply | sync total | endpoint replaced: ops / event to applied | affinity on: ops / event to applied | proxier memory |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &sync_rows {
        println!("{r}");
    }
    Ok(())
}
