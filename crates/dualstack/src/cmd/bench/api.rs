//! `dualstack bench api`: the API server benchmark of issue 3.
//!
//! One server (dual-stack service range), driven over HTTPS:
//! 1. create `--objects` Services from `--clients` concurrent clients (durable creates: each 201
//!    comes after the fsync); the server's resident memory with them;
//! 2. LIST them (`--list-repeats` times);
//! 3. the same for ConfigMaps;
//! 4. `--watchers` watches of `default` ConfigMaps from the list's `resourceVersion`, then one
//!    create: the delay from just before the POST to each watcher's receipt of its event line;
//! 5. a restart on the same data, and the resident memory once the server is idle again.
//!
//! Memory is read when the server is idle (its built-in controllers, with `--controllers='*'`,
//! catch up after a burst of Services), from `/proc/<pid>/status`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::support::{
    Conn, Connector, CreateRun, H2_STREAMS_PER_CONN, Report, ServerOpts, ServerProcess, Summary,
    block_on, create_many, loadavg, ms, progress,
};

/// Goals of issue 3 on a 2-core machine.
const GOAL_CREATES_PER_SEC: f64 = 3000.0;
const GOAL_CREATE_P99: Duration = Duration::from_millis(50);
const GOAL_LIST: Duration = Duration::from_millis(300);
const GOAL_WATCH_P99: Duration = Duration::from_millis(100);
const GOAL_RSS_MIB: f64 = 300.0;
/// Longest wait for the server to become idle after a burst of writes.
const SETTLE_MAX: Duration = Duration::from_secs(60);

/// Flags of `dualstack bench api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Objects of each kind (Services, then ConfigMaps) to create.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Concurrent creating clients, one connection each.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent watchers of the one change.
    #[arg(long, default_value_t = 1_000)]
    watchers: usize,
    /// How often each LIST is timed (the median is held against the goal).
    #[arg(long, default_value_t = 5)]
    list_repeats: usize,
    #[command(flatten)]
    server: ServerOpts,
}

const SERVER_FLAGS: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];
const SERVICES: &str = "/api/v1/namespaces/default/services";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn service(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"bench-svc-{i}","labels":{{"app":"bench","shard":"s{}"}}}},"spec":{{"selector":{{"app":"bench-{i}"}},"ports":[{{"name":"http","port":80,"targetPort":8080,"protocol":"TCP"}}]}}}}"#,
        i % 16
    ))
}

fn configmap(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"data":{{"config.yaml":"listen: 0.0.0.0:8080\nlog_level: info\nupstreams:\n- http://backend-a:80\n- http://backend-b:80\n","mode":"production"}}}}"#
    ))
}

/// Runs the suite.
pub fn run(args: ApiArgs) -> Result<()> {
    block_on(run_async(args))
}

async fn run_async(args: ApiArgs) -> Result<()> {
    if args.objects == 0 || args.clients == 0 {
        bail!("--objects and --clients must be positive");
    }
    let load_before = loadavg();
    let server = ServerProcess::start_with(&args.server, SERVER_FLAGS).await?;
    let connector = server.connector();
    server.settle(SETTLE_MAX).await?;
    let idle = server.memory()?;
    let mut report = Report::default();
    let n = args.objects;
    let c = args.clients;

    // 1. Services.
    progress(&format!("creating {n} Services"));
    let mut conns = connector.connect_many(c).await?;
    let svc = create_many(&mut conns, SERVICES, n, false, Arc::new(service)).await?;
    svc.ensure_ok("Service")?;
    create_rows(
        &mut report,
        &format!("create {n} Services, {c} clients"),
        &svc,
    );
    progress("waiting for the server to be idle");
    let settled = server.settle(SETTLE_MAX).await?;
    let with_services = server.memory()?;
    report.row(
        format!("server RSS with {n} Services"),
        format!(
            "{:.0} MiB (idle {:.0} MiB; measured when idle, {:.1} s after the last create)",
            with_services.rss_mib(),
            idle.rss_mib(),
            settled.as_secs_f64()
        ),
        format!("≤ {GOAL_RSS_MIB:.0} MiB"),
        Some(with_services.rss_mib() <= GOAL_RSS_MIB),
    );
    progress("listing Services");
    let (list_svc, _) = time_list(&mut conns[0], SERVICES, n, args.list_repeats).await?;
    list_row(&mut report, &format!("LIST {n} Services"), &list_svc);

    // 2. ConfigMaps.
    progress(&format!("creating {n} ConfigMaps"));
    let cm = create_many(
        &mut conns,
        CONFIGMAPS,
        n,
        false,
        Arc::new(|i| configmap(&format!("bench-cm-{i}"))),
    )
    .await?;
    cm.ensure_ok("ConfigMap")?;
    create_rows(
        &mut report,
        &format!("create {n} ConfigMaps, {c} clients"),
        &cm,
    );
    progress("listing ConfigMaps");
    let (list_cm, list_rv) = time_list(&mut conns[0], CONFIGMAPS, n, args.list_repeats).await?;
    list_row(&mut report, &format!("LIST {n} ConfigMaps"), &list_cm);

    // 3. Watchers and one change.
    if args.watchers > 0 {
        progress(&format!("opening {} watches", args.watchers));
        let w = watch_fanout(&connector, &mut conns[0], args.watchers, &list_rv).await?;
        let mut delays = w.delays;
        let s = Summary::of(&mut delays);
        let got = s.n;
        report.row(
            format!(
                "watch: 1 create → {} watchers (received {got})",
                args.watchers
            ),
            format!(
                "p50 {} · p99 {} · max {} (the create itself: {})",
                ms(s.p50),
                ms(s.p99),
                ms(s.max),
                ms(w.write)
            ),
            format!("p99 ≤ {}", ms(GOAL_WATCH_P99)),
            Some(got == args.watchers && s.p99 <= GOAL_WATCH_P99),
        );
    }
    let end = server.memory()?;
    report.row(
        format!(
            "server RSS at the end ({n} Services, {n} ConfigMaps, {} watches)",
            args.watchers
        ),
        format!("{:.0} MiB (peak {:.0} MiB)", end.rss_mib(), end.peak_mib()),
        "",
        None,
    );
    progress("restarting the server on the same data");
    let server = server.restart().await?;
    let settled = server.settle(SETTLE_MAX).await?;
    let restarted = server.memory()?;
    report.row(
        "server RSS after a restart on the same data",
        format!(
            "{:.0} MiB (peak {:.0} MiB; {:.1} s after ready)",
            restarted.rss_mib(),
            restarted.peak_mib(),
            settled.as_secs_f64()
        ),
        format!("≤ {GOAL_RSS_MIB:.0} MiB (peak)"),
        Some(restarted.peak_mib() <= GOAL_RSS_MIB),
    );
    let load_after = loadavg();
    let command = server.command_line();
    server.stop().await;

    println!("## dualstack bench api\n");
    println!("{}\n", super::support::data_dir_note());
    println!(
        "server: `{command}`; clients: {} over TLS 1.3 (rustls, ring), keep-alive, one connection per client{}",
        args.server.protocol(),
        if args.server.http2 {
            format!(", watchers {H2_STREAMS_PER_CONN} per connection")
        } else {
            ", one per watcher".to_string()
        },
    );
    println!(
        "load average before {load_before}, after {load_after}; LIST figures are the median (and max) of {} runs\n",
        args.list_repeats
    );
    report.print();
    Ok(())
}

fn create_rows(report: &mut Report, what: &str, run: &CreateRun) {
    let s = run.summary();
    let rate = run.per_second();
    report.row(
        format!("{what}: throughput"),
        format!(
            "{rate:.0} creates/s ({} in {:.2} s)",
            run.created,
            run.elapsed.as_secs_f64()
        ),
        format!("≥ {GOAL_CREATES_PER_SEC:.0}/s"),
        Some(rate >= GOAL_CREATES_PER_SEC),
    );
    report.row(
        format!("{what}: latency"),
        format!("p50 {} · p99 {} · max {}", ms(s.p50), ms(s.p99), ms(s.max)),
        format!("p99 ≤ {}", ms(GOAL_CREATE_P99)),
        Some(s.p99 <= GOAL_CREATE_P99),
    );
}

fn list_row(report: &mut Report, what: &str, s: &Summary) {
    report.row(
        what,
        format!("{} (max {})", ms(s.p50), ms(s.max)),
        format!("≤ {}", ms(GOAL_LIST)),
        Some(s.p50 <= GOAL_LIST),
    );
}

/// Times `repeats` LISTs of `path` (request sent → last byte received); checks the item count
/// once, untimed. Returns the summary and the list's `resourceVersion`.
async fn time_list(
    conn: &mut Conn,
    path: &str,
    want: usize,
    repeats: usize,
) -> Result<(Summary, String)> {
    let mut times = Vec::with_capacity(repeats);
    let mut last = Bytes::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        last = conn.expect(StatusCode::OK, Method::GET, path, None).await?;
        times.push(t.elapsed());
    }
    let list: Value = serde_json::from_slice(&last).context("decoding the list")?;
    let items = list["items"].as_array().map_or(0, Vec::len);
    if items < want {
        bail!("LIST {path} returned {items} items, wanted at least {want}");
    }
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("list without resourceVersion")?
        .to_string();
    Ok((Summary::of(&mut times), rv))
}

struct Fanout {
    /// The create's own latency.
    write: Duration,
    /// From just before the create to each watcher's receipt of the event line.
    delays: Vec<Duration>,
}

/// Opens `watchers` watches of default ConfigMaps from `rv`, creates one ConfigMap, and
/// measures when each watcher receives its ADDED event.
async fn watch_fanout(
    connector: &Connector,
    writer: &mut Conn,
    watchers: usize,
    rv: &str,
) -> Result<Fanout> {
    const PROBE: &str = "bench-watch-probe";
    let path = format!("{CONFIGMAPS}?watch=true&resourceVersion={rv}");
    let per_conn = if connector.http2() {
        H2_STREAMS_PER_CONN
    } else {
        1
    };
    let mut conns = connector.connect_many(watchers.div_ceil(per_conn)).await?;
    // Open every stream and wait for every response head before the change.
    let (start_tx, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let mut tasks = Vec::with_capacity(watchers);
    for i in 0..watchers {
        let resp = conns[i / per_conn]
            .send(Method::GET, &path, None)
            .await
            .with_context(|| format!("opening watch {i}"))?;
        if resp.status() != StatusCode::OK {
            bail!("watch {i}: {}", resp.status());
        }
        let mut start_rx = start_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut buf: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let at = Instant::now();
                let Ok(frame) = frame else { break };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let ev: Value = serde_json::from_slice(&line).unwrap_or(Value::Null);
                    if ev["type"] == "ADDED" && ev["object"]["metadata"]["name"] == PROBE {
                        let start = start_rx.recv().await.ok()?;
                        return Some(at.saturating_duration_since(start));
                    }
                }
            }
            None
        }));
    }
    // Let the server's watch tasks reach their wait before the change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    progress("one ConfigMap create, watched");
    let start = Instant::now();
    let _ = start_tx.send(start);
    writer
        .expect(
            StatusCode::CREATED,
            Method::POST,
            CONFIGMAPS,
            Some(configmap(PROBE)),
        )
        .await?;
    let write = start.elapsed();
    let mut delays = Vec::with_capacity(watchers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(Some(d))) => delays.push(d),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    drop(conns);
    Ok(Fanout { write, delays })
}
