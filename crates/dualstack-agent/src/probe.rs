//! Running one probe (`httpGet`, `tcpSocket`, `exec`) against a container; the thresholds are
//! `dualstack_node::probe`. HTTP and TCP connections are made from inside the pod's network
//! namespace (to the pod's primary IP, or `host`), so a probe never depends on routes from the
//! node; `exec` runs the command in the container's namespaces through `dualstack shim exec`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Where and how a probe runs.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's primary IP.
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace (None: the node's).
    pub netns: Option<PathBuf>,
    /// The container process (for exec).
    pub pid: Option<i32>,
    /// The container's shim spec (env and cwd for exec).
    pub spec_file: PathBuf,
    /// The `dualstack` binary.
    pub exe: PathBuf,
}

fn port(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(i) => u16::try_from(*i).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// Runs the probe once; `true` on success. A timeout is a failure.
pub async fn run(probe: &Probe, c: &Container, t: &Target, timeout: Duration) -> bool {
    if let Some(exec) = &probe.exec {
        let Some(pid) = t.pid else { return false };
        let mut cmd = tokio::process::Command::new(&t.exe);
        cmd.arg("shim")
            .arg("exec")
            .arg("--pid")
            .arg(pid.to_string())
            .arg("--spec")
            .arg(&t.spec_file)
            .arg("--")
            .args(exec.command.iter().flatten())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        return match tokio::time::timeout(timeout, async { cmd.status().await }).await {
            Ok(Ok(s)) => s.success(),
            _ => false,
        };
    }
    let (host, port_no, http) = if let Some(h) = &probe.http_get {
        let host = h.host.as_deref().and_then(|s| s.parse().ok()).or(t.pod_ip);
        (host, port(&h.port, c), Some(h.clone()))
    } else if let Some(s) = &probe.tcp_socket {
        let host = s.host.as_deref().and_then(|s| s.parse().ok()).or(t.pod_ip);
        (host, port(&s.port, c), None)
    } else {
        return false;
    };
    let (Some(host), Some(port_no)) = (host, port_no) else {
        return false;
    };
    let addr = SocketAddr::new(host, port_no);
    let netns = t.netns.clone();
    let check = move || -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let Some(h) = http else { return true };
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return false;
        }
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
        let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let host_header = match addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]:{port_no}"),
            IpAddr::V4(ip) => format!("{ip}:{port_no}"),
        };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for hh in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hh.name, hh.value));
        }
        req.push_str("\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 64];
        let n = s.read(&mut head).unwrap_or(0);
        let line = String::from_utf8_lossy(&head[..n]);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..400).contains(&c))
    };
    let work = tokio::task::spawn_blocking(move || match netns {
        Some(ns) => dualstack_host::netns::run_in(&ns, check).unwrap_or(false),
        None => check(),
    });
    matches!(
        tokio::time::timeout(timeout + Duration::from_millis(500), work).await,
        Ok(Ok(true))
    )
}
