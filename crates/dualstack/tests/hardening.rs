//! The API server against a hostile client: connection floods, plain HTTP on the TLS port,
//! oversized objects, amplifying patches, deep YAML, made-up paths in metrics, huge watch
//! timeouts, and the robustness test that runs the attacks at once while `/healthz` must keep
//! answering within a second and RSS stay under 300 MiB.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{Value, json};

/// One `/healthz` with curl: (status, seconds taken). Slow answers print curl's phases.
fn healthz(s: &TestServer) -> (u16, f64) {
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "--cacert"])
        .arg(s.ca())
        .args([
            "-w",
            "%{http_code} connect=%{time_connect} tls=%{time_appconnect} first-byte=%{time_starttransfer} total=%{time_total}",
        ])
        .arg(format!("{}/healthz", s.url))
        .output()
        .expect("run curl");
    let secs = t.elapsed().as_secs_f64();
    let w = String::from_utf8_lossy(&out.stdout).to_string();
    let code = w
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if code != 200 || secs > 0.5 {
        eprintln!(
            "/healthz: {w} (process {secs:.3}s) {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The request's own time as curl measured it (connect, TLS, answer): starting the curl
    // process on a loaded machine is not the server's latency.
    let total = w
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(secs);
    (code, total)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Raises this test process's soft open-file limit to its hard one (the floods hold thousands of
/// sockets; a default soft limit of 1024 would cut them short).
fn raise_own_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.maximum.is_some_and(|h| l.current.is_some_and(|c| c < h)) {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Opens `n` connections that never complete a request: silent ones, half a TLS record, and
/// half a TLS ClientHello header.
fn idle_flood(port: u16, n: usize) -> Vec<TcpStream> {
    raise_own_fd_limit();
    let mut conns = Vec::new();
    for i in 0..n {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        match i % 3 {
            0 => {}
            1 => {
                let _ = c.write_all(&[0x16, 0x03, 0x01]);
            }
            _ => {
                let _ = c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
            }
        }
        conns.push(c);
    }
    conns
}

#[test]
fn an_idle_connection_flood_neither_stops_health_checks_nor_holds_descriptors() {
    // The API server alone: the built-in controllers open their watch connections on their
    // own schedule and would move the descriptor count this test measures.
    let s = TestServer::start(&["--max-untrusted-connections=100", "--controllers=-*"]);
    let pid = s.pid().unwrap();
    let before = open_fds(pid);
    let flood = idle_flood(s.port(), 600);
    assert!(flood.len() >= 500, "opened {}", flood.len());
    for _ in 0..5 {
        let (code, secs) = healthz(&s);
        assert_eq!(code, 200);
        assert!(secs < 1.0, "/healthz took {secs:.2}s under the flood");
    }
    // The untrusted tier holds at most 100 connections: the rest were closed (evicted).
    let fds = open_fds(pid);
    assert!(
        fds < before + 150,
        "{fds} descriptors open with 600 idle connections (before: {before})"
    );
    // An authenticated client still works.
    let r = s.call(&s.token, "GET", "/api/v1/namespaces", None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let s = TestServer::start(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    let waited = t.elapsed();
    assert_eq!(n, 0, "the server closes without answering");
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
}

#[test]
fn plain_http_to_the_tls_port_gets_upstreams_400() {
    let s = TestServer::start(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port())).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert_eq!(
        out,
        "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    );
}

#[test]
fn the_bearer_scheme_is_case_insensitive_and_an_empty_token_is_anonymous() {
    let s = TestServer::start(&[]);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let auth = format!("{scheme} {}", s.token);
        let r = s.call(
            "",
            "GET",
            "/api/v1/namespaces",
            None,
            &[("Authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{scheme}: {}", r.body);
    }
    // An empty token is no token: anonymous may read health, nothing else.
    let r = s.call("", "GET", "/healthz", None, &[("Authorization", "Bearer ")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s.call(
        "",
        "GET",
        "/api/v1/namespaces",
        None,
        &[("Authorization", "Bearer ")],
    );
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn the_data_dir_and_the_store_are_private_to_the_server_user() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(&[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data_dir), 0o700);
    assert_eq!(mode(&s.data_dir.join("store.redb")), 0o600);
    assert_eq!(mode(&s.data_dir.join("pki")), 0o700);
    assert_eq!(mode(&s.data_dir.join("tokens.json")), 0o600);
}

#[test]
fn an_object_over_the_storage_limit_is_refused_with_413_and_not_stored() {
    let s = TestServer::start(&[]);
    // ConfigMaps have their own 1 MiB limit; a Node's status has none but the store's.
    let big = "x".repeat(1_600_000);
    let cm = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "big"}, "status": {"images": [{"names": [big], "sizeBytes": 1}]}});
    let r = s.call(
        &s.token,
        "POST",
        "/api/v1/nodes",
        Some(cm.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let st = r.json();
    assert_eq!(st["reason"], "RequestEntityTooLarge");
    assert_eq!(st["message"], "Request entity too large: limit is 1572864");
    let r = s.call(&s.token, "GET", "/api/v1/nodes/big", None, &[]);
    assert_eq!(r.status, 404);

    // A node growing its own status past the limit with patches is refused the same way.
    let token = common::node_token(&s, "n1", None);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let r = s.call(
        &token,
        "POST",
        "/api/v1/nodes",
        Some(node.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let image = json!({"names": ["x".repeat(1_000_000)], "sizeBytes": 1});
    let patch = json!({"status": {"images": [image]}});
    let r = s.call(
        &token,
        "PATCH",
        "/api/v1/nodes/n1/status",
        Some(patch.to_string().as_bytes()),
        &[("Content-Type", "application/merge-patch+json")],
    );
    assert_eq!(r.status, 200, "1 MB is under the limit: {}", r.body);
    let patch = json!({"status": {"images": [image.clone(), image]}});
    let r = s.call(
        &token,
        "PATCH",
        "/api/v1/nodes/n1/status",
        Some(patch.to_string().as_bytes()),
        &[("Content-Type", "application/merge-patch+json")],
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let stored = s
        .call(&s.token, "GET", "/api/v1/nodes/n1", None, &[])
        .json();
    assert_eq!(stored["status"]["images"].as_array().map(Vec::len), Some(1));
}

#[test]
fn made_up_resource_paths_create_no_metric_series_and_nodes_may_not_read_metrics() {
    // The API alone: the built-in controllers' own requests add legitimate series of their own.
    let s = TestServer::start(&["--controllers=-*"]);
    let urls: Vec<String> = (0..300)
        .flat_map(|i| {
            [
                format!("{}/api/v1/madeup{i}", s.url),
                format!("{}/apis/fake{i}.example.com/v1/things{i}", s.url),
                format!("{}/api/v1/namespaces/default/pods/p/sub{i}", s.url),
            ]
        })
        .collect();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "--cacert"])
        .arg(s.ca())
        .args(["-H", &format!("Authorization: Bearer {}", s.token)])
        .args(&urls)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = s.call(&s.token, "GET", "/metrics", None, &[]);
    assert_eq!(m.status, 200);
    assert!(
        !m.body.contains("madeup"),
        "unknown resources became label values"
    );
    assert!(
        !m.body.contains("things1"),
        "unknown groups became label values"
    );
    assert!(
        !m.body.contains("sub1"),
        "unknown subresources became label values"
    );
    let series = m
        .body
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total"))
        .count();
    assert!(
        series < 20,
        "{series} request series after 900 made-up paths"
    );
    let token = common::node_token(&s, "n1", None);
    let r = s.call(&token, "GET", "/metrics", None, &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.json()["message"],
        "forbidden: User \"system:node:n1\" cannot get path \"/metrics\""
    );
}

#[test]
fn a_watch_with_the_largest_timeout_is_clamped_instead_of_panicking() {
    let s = TestServer::start(&[]);
    let mut w = s.watch("/api/v1/namespaces?watch=1&timeoutSeconds=18446744073709551615");
    assert_eq!(w.status(), 200);
    assert!(
        w.next_event(Duration::from_secs(10)).is_some(),
        "the watch delivers its initial events"
    );
    let log = s.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn readyz_and_livez_list_their_checks_when_verbose() {
    let s = TestServer::start(&[]);
    let r = s.call("", "GET", "/readyz?verbose", None, &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("[+]ping ok\n"), "{}", r.body);
    assert!(
        r.body
            .contains("[+]poststarthook/start-service-ip-repair-controllers ok\n"),
        "{}",
        r.body
    );
    assert!(r.body.ends_with("readyz check passed\n"), "{}", r.body);
    let r = s.call("", "GET", "/livez?verbose", None, &[]);
    assert!(r.body.ends_with("livez check passed\n"), "{}", r.body);
    assert!(!r.body.contains("poststarthook"), "{}", r.body);
    let r = s.call("", "GET", "/readyz/ping", None, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = s.call("", "GET", "/healthz", None, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[test]
fn openapi_v2_is_json_when_json_is_asked_for_and_protobuf_otherwise() {
    let s = TestServer::start(&[]);
    let r = s.call(
        &s.token,
        "GET",
        "/openapi/v2",
        None,
        &[("Accept", "application/json")],
    );
    assert_eq!(r.status, 200);
    let doc: Value = r.json();
    assert_eq!(doc["swagger"], "2.0");
    assert!(doc["definitions"]["io.k8s.api.core.v1.Service"].is_object());
    assert!(doc["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]["patch"].is_object());
    let r = s.call(
        &s.token,
        "GET",
        "/openapi/v2",
        None,
        &[(
            "Accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )],
    );
    assert_eq!(r.status, 200);
    assert!(r.header_values("content-type")[0].contains("protobuf"));
}

/// A child process killed (and reaped) when dropped.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Stops the attack threads and SIGKILLs the server when dropped.
struct StopAndKill {
    stop: Arc<AtomicBool>,
    pid: u32,
}

impl Drop for StopAndKill {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }
}

/// A deeply nested YAML document (an apply patch), `depth` levels of one-key maps.
fn deep_yaml(depth: usize) -> Vec<u8> {
    let mut y =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata:\n  x: ");
    y.push_str(&"[".repeat(depth));
    y.push_str(&"]".repeat(depth));
    y.push('\n');
    y.into_bytes()
}

/// The JSON patch that doubles an object with each `copy` (19 operations: 2^19 copies).
fn amplifying_patch() -> Vec<u8> {
    let mut ops = vec![json!({"op": "add", "path": "/data", "value": {"a": "x".repeat(100)}})];
    let mut last = "/data/a".to_string();
    for i in 0..19 {
        let to = format!("/metadata/annotations/c{i}");
        ops.push(json!({"op": "copy", "from": if i == 0 { last.clone() } else { "/metadata/annotations".into() }, "path": to}));
        last = to;
    }
    serde_json::to_vec(&ops).unwrap()
}

#[test]
fn health_answers_within_a_second_while_every_attack_runs_at_once() {
    let s = Arc::new(TestServer::start(&["--max-untrusted-connections=200"]));
    let pid = s.pid().unwrap();
    let port = s.port();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "target", "annotations": {"a": "b"}}});
    let r = s.call(
        &s.token,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(cm.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let stop = Arc::new(AtomicBool::new(false));
    // However the test ends (a failed assertion included), the attack threads stop and the
    // server process is killed, even if a thread still holds the server.
    let _cleanup = StopAndKill {
        stop: stop.clone(),
        pid,
    };
    let peak = Arc::new(std::sync::Mutex::new(0.0f64));
    let mut attacks: Vec<std::thread::JoinHandle<Vec<u16>>> = Vec::new();
    // 1. An idle-connection flood, renewed every second.
    {
        let stop = stop.clone();
        attacks.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                held.extend(idle_flood(port, 300));
                if held.len() > 900 {
                    held.drain(..300);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            Vec::<u16>::new()
        }));
    }
    // 2. The amplifying JSON patch, and 3. deep YAML apply patches, again and again.
    for (path, body, content_type) in [
        (
            "/api/v1/namespaces/default/configmaps/target",
            amplifying_patch(),
            "application/json-patch+json",
        ),
        (
            "/api/v1/namespaces/default/configmaps/deep?fieldManager=x",
            deep_yaml(100_000),
            "application/apply-patch+yaml",
        ),
    ] {
        let (s, stop) = (s.clone(), stop.clone());
        attacks.push(std::thread::spawn(move || {
            let mut codes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let r = s.call(
                    &s.token,
                    "PATCH",
                    path,
                    Some(&body),
                    &[("Content-Type", content_type)],
                );
                if r.status == 0 {
                    eprintln!("{path}: transport failure: {}", r.curl_error.trim());
                }
                codes.push(r.status);
            }
            codes
        }));
    }
    // 4. A 20,000-path metrics scan (made-up resources), 1,000 URLs per curl.
    {
        let (s, stop) = (s.clone(), stop.clone());
        attacks.push(std::thread::spawn(move || {
            for batch in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let urls: Vec<String> = (0..1000)
                    .map(|i| format!("{}/api/v1/scan{}x{i}", s.url, batch))
                    .collect();
                let _ = Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "--cacert"])
                    .arg(s.ca())
                    .args(["-H", &format!("Authorization: Bearer {}", s.token)])
                    .args(&urls)
                    .output();
            }
            Vec::new()
        }));
    }
    // RSS sampler.
    {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = rss_mib(pid);
                let mut p = peak.lock().unwrap();
                *p = p.max(r);
                drop(p);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut worst = 0.0f64;
    let mut checks = 0;
    while Instant::now() < deadline {
        let (code, secs) = healthz(&s);
        assert_eq!(code, 200, "/healthz failed under attack");
        worst = worst.max(secs);
        checks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for a in attacks {
        results.push(a.join().unwrap_or_default());
    }
    let peak = *peak.lock().unwrap();
    eprintln!("{checks} health checks, slowest {worst:.3}s; peak RSS {peak:.0} MiB");
    assert!(worst < 1.0, "/healthz took {worst:.2}s under attack");
    assert!(peak < 300.0, "RSS reached {peak:.0} MiB");
    // The attacks were refused (an error status, or the connection dropped under the flood),
    // never served.
    let amplify = &results[1];
    assert!(
        !amplify.is_empty() && amplify.iter().all(|c| *c >= 400 || *c == 0),
        "{} requests, served: {:?}",
        amplify.len(),
        amplify
            .iter()
            .filter(|c| (1..400).contains(*c))
            .collect::<Vec<_>>()
    );
    let deep = &results[2];
    assert!(
        !deep.is_empty() && deep.iter().all(|c| *c >= 400 || *c == 0),
        "{} requests, served: {:?}",
        deep.len(),
        deep.iter()
            .filter(|c| (1..400).contains(*c))
            .collect::<Vec<_>>()
    );
    // Still serving.
    let r = s.call(
        &s.token,
        "GET",
        "/api/v1/namespaces/default/configmaps/target",
        None,
        &[],
    );
    assert_eq!(r.status, 200);
}

/// Starts the server under `sh -c 'ulimit -n LIMIT; exec dualstack server ...'` with stderr in
/// `log`; returns the child and its URL.
fn start_with_fd_limit(
    data: &std::path::Path,
    log: &std::path::Path,
    limit: u32,
) -> (KillOnDrop, String) {
    let child = KillOnDrop(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" server --data-dir \"$1\" --secure-port 0 --controllers=-* 2>\"$2\""
            ))
            .arg(common::binary())
            .arg(data)
            .arg(log)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .spawn()
            .expect("spawn the server under sh"),
    );
    let url = common::eventually(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(log).ok()?;
        let i = text.find("url=https://")?;
        Some(
            common::strip_ansi(&text[i + 4..])
                .split_whitespace()
                .next()?
                .to_string(),
        )
    })
    .unwrap_or_else(|| {
        panic!(
            "no URL in {}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    (child, url)
}

#[test]
fn at_a_low_open_file_limit_the_server_keeps_answering_and_logs_a_bounded_amount() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    // The server is killed however the test ends.
    // The API server alone (`--controllers=-*`): the built-in controllers hold a loopback
    // connection per watch (two descriptors each, about 30 watches with the garbage collector)
    // and would take the budget this test measures the API server on.
    let (mut child, url) = start_with_fd_limit(&data, &log, 64);
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let health = |what: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-w",
                "\n%{time_total}",
                "--cacert",
            ])
            .arg(data.join("pki/ca.crt"))
            .arg(format!("{url}/healthz"))
            .output()
            .unwrap();
        // curl's own time for the request (not the process start on a loaded machine).
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, total) = stdout.rsplit_once('\n').unwrap_or((&stdout, "9"));
        let secs: f64 = total.trim().parse().unwrap_or(9.0);
        assert_eq!(
            body,
            "ok",
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(secs < 1.0, "{what}: /healthz took {secs:.2}s");
    };
    health("before the flood");
    let mut flood = Vec::new();
    for round in 0..5 {
        flood.extend(idle_flood(port, 200));
        health(&format!("flood round {round}"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let log_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());
    child.kill();
    assert!(
        log_bytes < 256 * 1024,
        "{log_bytes} bytes of log in 3 s at the open-file limit"
    );
    drop(flood);
}
