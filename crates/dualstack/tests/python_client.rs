//! The official Python `kubernetes` client (PyPI; `./scripts/test` installs it) against the
//! real server: `tests/python/client.py` lists, creates a RequireDualStack Service, patches,
//! watches (from a list resourceVersion with bookmarks allowed, and from "now"), deletes, reads
//! /version and uses the DynamicClient. A missing client fails the test with a clear message;
//! `DUALSTACK_SKIP_PYTHON=1` skips it and says so.

mod common;

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::Value;

const DUAL: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");

/// Checks that `python3` can import `kubernetes`; panics with what to do when it cannot.
/// Returns false (after saying why) when the user asked to skip.
fn python_client_available() -> bool {
    if std::env::var("DUALSTACK_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: DUALSTACK_SKIP_PYTHON=1 is set, so the Python kubernetes client test does not run"
        );
        return false;
    }
    let out = Command::new("python3")
        .args(["-c", "import kubernetes; print(kubernetes.__version__)"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run python3 ({e}): install Python 3 and `python3 -m pip install kubernetes` \
                 (./scripts/test does both), or set DUALSTACK_SKIP_PYTHON=1 to skip this test"
            )
        });
    assert!(
        out.status.success(),
        "`import kubernetes` failed in python3: {}\ninstall it with `python3 -m pip install kubernetes` \
         (./scripts/test does), or set DUALSTACK_SKIP_PYTHON=1 to skip this test",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    eprintln!(
        "python kubernetes client {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    true
}

/// Runs the script with a deadline; returns (success, stdout, stderr).
fn run_script(kubeconfig: &Path, ns: &str, limit: Duration) -> (bool, String, String) {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(kubeconfig)
        .arg(ns)
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait python3") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap_or_default();
    let mut err = err_reader.join().unwrap_or_default();
    if status.is_none() {
        err.push_str(&format!("\n(killed after {limit:?})"));
    }
    (status.is_some_and(|s| s.success()), out, err)
}

#[test]
fn the_python_kubernetes_client_lists_creates_patches_watches_and_discovers() {
    if !python_client_available() {
        return;
    }
    let s = TestServer::start(DUAL);
    let ns = "py-client";
    let (ok, out, err) = run_script(&s.kubeconfig, ns, Duration::from_secs(180));
    assert!(
        ok,
        "tests/python/client.py failed\nstdout:\n{out}\nstderr:\n{err}\nserver log:\n{}",
        s.log()
    );
    let summary: Value = serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON summary ({e}) in:\n{out}"));

    // Dual-stack: one IPv4 and one IPv6 ClusterIP, families in the same order.
    let ips: Vec<IpAddr> = summary["clusterIPs"]
        .as_array()
        .expect("clusterIPs")
        .iter()
        .map(|v| v.as_str().unwrap().parse().expect("an IP"))
        .collect();
    assert_eq!(ips.len(), 2, "{summary}");
    assert_ne!(ips[0].is_ipv4(), ips[1].is_ipv4(), "{summary}");
    let fam = |ip: &IpAddr| if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    assert_eq!(
        summary["ipFamilies"],
        serde_json::json!([fam(&ips[0]), fam(&ips[1])])
    );
    // The primary family is entry 0 of --service-cluster-ip-range (IPv4 here).
    assert!(ips[0].is_ipv4(), "{summary}");

    // The watch from the list RV saw the whole life of the Service.
    let types: Vec<&str> = summary["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .filter(|t| *t != "BOOKMARK")
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]);
    assert_eq!(summary["gitVersion"].as_str().map(|v| &v[..3]), Some("v1."));

    // What the script did is what the server stored.
    let (code, _) = s
        .request(
            "GET",
            &format!("/api/v1/namespaces/{ns}/services/web"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(code, 404, "the deleted Service is gone");
    let (code, body) = s
        .request(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps/from-dynamic"),
            None,
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let cm: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cm["data"]["a"], "1");
}
