//! `dualstack bench controllers`: the controller benchmark of issue 5, against one
//! `dualstack server` child process running its built-in controllers (node IPAM with
//! `10.128.0.0/9,fd00:10:244::/48` and default masks; EndpointSlices and Endpoints with the
//! upstream defaults, 5 concurrent Service syncs).
//!
//! 1. Nodes: `--nodes` Nodes created by `--clients` clients; a watch counts the nodes that
//!    carry one IPv4 and one IPv6 podCIDR. Reported: the time from the first create until every
//!    node has both (and that no CIDR was given twice).
//! 2. Services × pods: `--services` RequireDualStack Services with `--pods-per-service` pods
//!    each (bound to the nodes above), then every pod's status written as a kubelet would (both
//!    pod IPs, Ready). A watch on EndpointSlices follows them. Reported: the time from the first
//!    Service create until every Service has IPv4 and IPv6 slices listing all its pods ready.
//! 3. Latency: `--latency-samples` of those pods are first made unready; then one pod every
//!    `--latency-interval-ms` becomes ready again (a status write). Reported: from the start
//!    of the write until the watch shows the pod ready in the slices of both families,
//!    p50/p99/max.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{
    Conn, Connector, Report, ServerProcess, Summary, block_on, create_many, loadavg, ms, progress,
};

/// Goal of issue 5 for node registration.
const NODE_GOAL: Duration = Duration::from_secs(5);
/// Give up waiting after this long.
const TIMEOUT: Duration = Duration::from_secs(600);
const NS: &str = "/api/v1/namespaces/default";

/// Flags of `dualstack bench controllers`.
#[derive(Debug, Clone, Args)]
pub struct ControllersArgs {
    /// Nodes to register.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Services to create (RequireDualStack).
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Pods per Service.
    #[arg(long, default_value_t = 10)]
    pods_per_service: usize,
    /// Pods whose ready-to-slice latency is measured.
    #[arg(long, default_value_t = 500)]
    latency_samples: usize,
    /// Pause between two measured pods becoming ready.
    #[arg(long, default_value_t = 20)]
    latency_interval_ms: u64,
    /// Concurrent clients, one connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
}

/// Calls `seen` for every object of a watch stream until it returns true.
async fn watch(
    conn: &mut Conn,
    path: &str,
    mut seen: impl FnMut(&str, &Value) -> bool,
) -> Result<()> {
    let resp = conn.send(Method::GET, path, None).await?;
    if resp.status() != StatusCode::OK {
        bail!("GET {path}: {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buf.extend_from_slice(data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let kind = ev["type"].as_str().unwrap_or("").to_string();
            if seen(&kind, &ev["object"]) {
                return Ok(());
            }
        }
    }
    bail!("watch {path} ended early")
}

/// Sends `count` requests from one task per connection; request `i` is `req(i)`.
async fn send_many(
    conns: &mut Vec<Conn>,
    count: usize,
    want: StatusCode,
    req: Arc<dyn Fn(usize) -> (Method, String, Bytes) + Send + Sync>,
) -> Result<Duration> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns.drain(..) {
        let (next, req) = (next.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<Conn, anyhow::Error>(conn);
                }
                let (method, path, body) = req(i);
                conn.expect(want, method, &path, Some(body)).await?;
            }
        }));
    }
    for t in tasks {
        conns.push(t.await??);
    }
    Ok(start.elapsed())
}

fn pod_name(svc: usize, j: usize) -> String {
    format!("svc-{svc}-pod-{j}")
}

fn pod_ips(i: usize) -> (String, String) {
    (
        format!("10.200.{}.{}", i / 250, i % 250 + 1),
        format!("fd00:10:200::{:x}", i + 1),
    )
}

/// The pod's status as a kubelet writes it.
fn pod_status(pod: &Value, i: usize, ready: bool) -> Bytes {
    let (v4, v6) = pod_ips(i);
    let mut p = pod.clone();
    p["status"] = json!({
        "phase": "Running",
        "podIP": v4,
        "podIPs": [{"ip": v4}, {"ip": v6}],
        "conditions": [{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).unwrap().to_string(),
        }],
    });
    Bytes::from(p.to_string())
}

/// Slices as the watch sees them: per slice name, (service, family, ready pods).
#[derive(Default)]
struct SliceView {
    slices: HashMap<String, (String, String, HashSet<String>)>,
}

impl SliceView {
    fn apply(&mut self, kind: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if kind == "DELETED" {
            self.slices.remove(&name);
            return;
        }
        let Some(svc) = obj["metadata"]["labels"]["kubernetes.io/service-name"].as_str() else {
            return;
        };
        let ready: HashSet<String> = obj["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["targetRef"]["name"].as_str().map(String::from))
            .collect();
        let family = obj["addressType"].as_str().unwrap_or("").to_string();
        self.slices.insert(name, (svc.to_string(), family, ready));
    }

    /// Services with `want` ready pods in both families.
    fn complete(&self, want: usize) -> usize {
        let mut per: HashMap<(&str, &str), usize> = HashMap::new();
        for (svc, fam, ready) in self.slices.values() {
            *per.entry((svc.as_str(), fam.as_str())).or_default() += ready.len();
        }
        let mut done: HashMap<&str, usize> = HashMap::new();
        for ((svc, _), n) in per {
            if n == want {
                *done.entry(svc).or_default() += 1;
            }
        }
        done.values().filter(|&&families| families == 2).count()
    }
}

/// Runs the suite.
pub fn run(args: ControllersArgs) -> Result<()> {
    block_on(run_async(args))
}

async fn run_async(args: ControllersArgs) -> Result<()> {
    let flags = [
        "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
        "--cluster-cidr=10.128.0.0/9,fd00:10:244::/48",
        "--allocate-node-cidrs",
    ];
    progress("starting dualstack server with its built-in controllers");
    let server = ServerProcess::start(&flags, false).await?;
    let connector = server.connector();
    let mut report = Report::default();
    let load_before = loadavg();

    // 1. Nodes.
    let node_time = nodes(&connector, &args, &mut report).await?;
    report.row(
        format!(
            "{} nodes → all have an IPv4 and an IPv6 podCIDR (from the first create)",
            args.nodes
        ),
        format!("{:.2} s", node_time.as_secs_f64()),
        "≤ 5 s",
        Some(node_time <= NODE_GOAL),
    );

    // 2. Services × pods.
    let pods = services_and_pods(&connector, &args, &mut report).await?;

    // 3. Ready → slice latency.
    latency(&connector, &args, &pods, &mut report).await?;

    println!("{}", super::support::data_dir_note());
    println!(
        "\ndualstack bench controllers: {} nodes, {} Services × {} pods, {} clients; load average before {load_before}, after {}\n",
        args.nodes,
        args.services,
        args.pods_per_service,
        args.clients,
        loadavg()
    );
    report.print();
    server.stop().await;
    Ok(())
}

async fn nodes(
    connector: &Connector,
    args: &ControllersArgs,
    report: &mut Report,
) -> Result<Duration> {
    let n = args.nodes;
    let mut watcher = connector.connect().await?;
    let done = Arc::new(Mutex::new(None::<Instant>));
    let cidrs: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (d, c) = (done.clone(), cidrs.clone());
    let watch_task = tokio::spawn(async move {
        let mut ok: HashSet<String> = HashSet::new();
        watch(
            &mut watcher,
            "/api/v1/nodes?watch=true&timeoutSeconds=900",
            |_, node| {
                let list: Vec<&str> = node["spec"]["podCIDRs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str())
                    .collect();
                let name = node["metadata"]["name"].as_str().unwrap_or("");
                if list.len() == 2
                    && list[0].contains('.')
                    && list[1].contains(':')
                    && ok.insert(name.to_string())
                {
                    let mut all = c.lock().unwrap();
                    all.insert(list[0].to_string());
                    all.insert(list[1].to_string());
                }
                if ok.len() == n {
                    *d.lock().unwrap() = Some(Instant::now());
                    return true;
                }
                false
            },
        )
        .await
    });
    // Let the watch start before the clock does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conns = connector.connect_many(args.clients).await?;
    progress(&format!("registering {n} nodes"));
    let start = Instant::now();
    let run = create_many(
        &mut conns,
        "/api/v1/nodes",
        n,
        false,
        Arc::new(|i| Bytes::from(json!({"metadata": {"name": format!("node-{i}")}}).to_string())),
    )
    .await?;
    run.ensure_ok("node")?;
    report.row(
        format!("register {n} nodes ({} clients)", args.clients),
        format!(
            "{:.2} s ({:.0}/s)",
            run.elapsed.as_secs_f64(),
            run.per_second()
        ),
        "",
        None,
    );
    tokio::time::timeout(TIMEOUT, watch_task)
        .await
        .context("nodes never all got podCIDRs")???;
    let took = done.lock().unwrap().context("watch ended")? - start;
    let distinct = cidrs.lock().unwrap().len();
    if distinct != 2 * n {
        bail!("{distinct} distinct podCIDRs for {n} dual-stack nodes: some CIDR was given twice");
    }
    progress(&format!("all {n} nodes have dual podCIDRs after {took:?}"));
    Ok(took)
}

async fn services_and_pods(
    connector: &Connector,
    args: &ControllersArgs,
    report: &mut Report,
) -> Result<Vec<Value>> {
    let (s, per) = (args.services, args.pods_per_service);
    let view = Arc::new(Mutex::new(SliceView::default()));
    let done = Arc::new(Mutex::new(None::<Instant>));
    let mut watcher = connector.connect().await?;
    let (v, d) = (view.clone(), done.clone());
    let watch_task = tokio::spawn(async move {
        watch(
            &mut watcher,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=true&timeoutSeconds=900",
            |kind, obj| {
                let mut view = v.lock().unwrap();
                view.apply(kind, obj);
                if view.complete(per) == s {
                    *d.lock().unwrap() = Some(Instant::now());
                    return true;
                }
                false
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conns = connector.connect_many(args.clients).await?;
    progress(&format!("creating {s} Services"));
    let start = Instant::now();
    let svc_run = create_many(
        &mut conns,
        &format!("{NS}/services"),
        s,
        false,
        Arc::new(|i| {
            Bytes::from(
                json!({
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {
                        "ipFamilyPolicy": "RequireDualStack",
                        "selector": {"app": format!("svc-{i}")},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]
                    }
                })
                .to_string(),
            )
        }),
    )
    .await?;
    svc_run.ensure_ok("Service")?;
    progress(&format!("creating {} pods", s * per));
    let nodes = args.nodes.max(1);
    let pod_run = create_many(
        &mut conns,
        &format!("{NS}/pods"),
        s * per,
        true,
        Arc::new(move |i| {
            let (svc, j) = (i / per, i % per);
            Bytes::from(
                json!({
                    "metadata": {"name": pod_name(svc, j), "labels": {"app": format!("svc-{svc}")}},
                    "spec": {
                        "nodeName": format!("node-{}", i % nodes),
                        "containers": [{"name": "c", "image": "registry.example/agnhost:2.45",
                                        "ports": [{"name": "http", "containerPort": 8080}]}]
                    }
                })
                .to_string(),
            )
        }),
    )
    .await?;
    pod_run.ensure_ok("pod")?;
    let mut pods: Vec<Value> = pod_run
        .bodies
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()?;
    let index = |p: &Value| -> usize {
        let name = p["metadata"]["name"].as_str().unwrap_or("");
        let mut parts = name.split('-');
        let svc: usize = parts.nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        let j: usize = parts.nth(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        svc * per + j
    };
    pods.sort_by_key(|p| index(p));
    progress("writing pod status (both IPs, Ready)");
    let shared = Arc::new(pods.clone());
    let status_time = send_many(
        &mut conns,
        shared.len(),
        StatusCode::OK,
        Arc::new(move |i| {
            let p = &shared[i];
            let name = p["metadata"]["name"].as_str().unwrap_or("");
            (
                Method::PUT,
                format!("{NS}/pods/{name}/status"),
                pod_status(p, i, true),
            )
        }),
    )
    .await?;
    tokio::time::timeout(TIMEOUT, watch_task)
        .await
        .context("slices never complete")???;
    let took = done.lock().unwrap().context("watch ended")? - start;
    report.row(
        format!("create {s} RequireDualStack Services"),
        format!(
            "{:.2} s ({:.0}/s)",
            svc_run.elapsed.as_secs_f64(),
            svc_run.per_second()
        ),
        "",
        None,
    );
    report.row(
        format!(
            "create {} pods, then write their status (2 IPs, Ready)",
            s * per
        ),
        format!(
            "{:.2} s + {:.2} s",
            pod_run.elapsed.as_secs_f64(),
            status_time.as_secs_f64()
        ),
        "",
        None,
    );
    report.row(
        format!("{s} Services × {per} pods → every Service has IPv4 and IPv6 slices with all pods ready (from the first create)"),
        format!("{:.2} s", took.as_secs_f64()),
        "",
        None,
    );
    progress(&format!("all slices complete after {took:?}"));
    // The current objects (their resourceVersions moved with the status writes).
    let mut conn = connector.connect().await?;
    let body = conn
        .expect(StatusCode::OK, Method::GET, &format!("{NS}/pods"), None)
        .await?;
    let list: Value = serde_json::from_slice(&body)?;
    let mut current: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
    current.sort_by_key(|p| index(p));
    Ok(current)
}

async fn latency(
    connector: &Connector,
    args: &ControllersArgs,
    pods: &[Value],
    report: &mut Report,
) -> Result<()> {
    let n = args.latency_samples.min(pods.len());
    if n == 0 {
        return Ok(());
    }
    // Spread the samples over the Services.
    let step = (pods.len() / n).max(1);
    let chosen: Vec<(usize, Value)> = pods
        .iter()
        .cloned()
        .enumerate()
        .step_by(step)
        .take(n)
        .collect();
    let names: HashSet<String> = chosen
        .iter()
        .filter_map(|(_, p)| p["metadata"]["name"].as_str().map(String::from))
        .collect();

    // Make them unready (keeping the answers, for their resourceVersions) and wait until both
    // families show it.
    let mut writer = connector.connect().await?;
    let mut unready: Vec<(usize, Value)> = Vec::with_capacity(n);
    for (idx, pod) in &chosen {
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let body = writer
            .expect(
                StatusCode::OK,
                Method::PUT,
                &format!("{NS}/pods/{name}/status"),
                Some(pod_status(pod, *idx, false)),
            )
            .await?;
        unready.push((*idx, serde_json::from_slice(&body)?));
    }
    let mut conn = connector.connect().await?;
    let wait_unready = async {
        loop {
            let body = conn
                .expect(
                    StatusCode::OK,
                    Method::GET,
                    "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
                    None,
                )
                .await?;
            let list: Value = serde_json::from_slice(&body)?;
            let still_ready = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] == true)
                .filter(|e| {
                    e["targetRef"]["name"]
                        .as_str()
                        .is_some_and(|n| names.contains(n))
                })
                .count();
            if still_ready == 0 {
                return Ok::<(), anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(TIMEOUT, wait_unready)
        .await
        .context("pods never became unready in the slices")??;

    // The measured pods: the watch records when both families show each one ready.
    let pending: Arc<Mutex<HashMap<String, (Instant, u8)>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut watcher = connector.connect().await?;
    let (p, s) = (pending.clone(), samples.clone());
    let watch_task = tokio::spawn(async move {
        watch(
            &mut watcher,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?watch=true&timeoutSeconds=900",
            |kind, obj| {
                if kind == "DELETED" {
                    return false;
                }
                let now = Instant::now();
                let bit = if obj["addressType"] == "IPv6" { 2 } else { 1 };
                let mut pending = p.lock().unwrap();
                for e in obj["endpoints"].as_array().into_iter().flatten() {
                    if e["conditions"]["ready"] != true {
                        continue;
                    }
                    let Some(name) = e["targetRef"]["name"].as_str() else { continue };
                    if let Some((sent, seen)) = pending.get_mut(name) {
                        *seen |= bit;
                        if *seen == 3 {
                            let took = now - *sent;
                            pending.remove(name);
                            s.lock().unwrap().push(took);
                        }
                    }
                }
                s.lock().unwrap().len() == n
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    progress(&format!(
        "measuring: {n} pods become ready, one every {} ms",
        args.latency_interval_ms
    ));
    let interval = Duration::from_millis(args.latency_interval_ms);
    let mut tick = tokio::time::interval(interval);
    for (idx, pod) in &unready {
        tick.tick().await;
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let body = pod_status(pod, *idx, true);
        pending
            .lock()
            .unwrap()
            .insert(name.clone(), (Instant::now(), 0));
        writer
            .expect(
                StatusCode::OK,
                Method::PUT,
                &format!("{NS}/pods/{name}/status"),
                Some(body),
            )
            .await?;
    }
    tokio::time::timeout(Duration::from_secs(120), watch_task)
        .await
        .context("not every measured pod showed up ready")???;
    let mut all = samples.lock().unwrap().clone();
    let sum = Summary::of(&mut all);
    report.row(
        format!(
            "pod Ready (status write) → ready in its IPv4 and IPv6 slices ({} pods, one every {} ms)",
            sum.n, args.latency_interval_ms
        ),
        format!("p50 {} · p99 {} · max {}", ms(sum.p50), ms(sum.p99), ms(sum.max)),
        "",
        None,
    );
    Ok(())
}
