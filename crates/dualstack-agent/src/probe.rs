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

/// The request path of an HTTP probe: `/` when unset, a leading `/` added as Go's URL does.
fn request_path(h: &k8s_openapi::api::core::v1::HTTPGetAction) -> String {
    match h.path.as_deref().filter(|p| !p.is_empty()) {
        None => "/".to_string(),
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
    }
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

/// kubelet's `maxProbeMessageLength`-like cap on the output an exec probe reports.
const PROBE_OUTPUT_LIMIT: usize = 10 * 1024;

/// Reads `r` to its end, keeping the first [`PROBE_OUTPUT_LIMIT`] bytes.
async fn keep_some<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let Some(mut r) = r else { return Vec::new() };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = PROBE_OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// A failed connection as Go's dialer words it (what kubelet's probe messages quote).
fn dial_error(addr: SocketAddr, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let why = match e.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "i/o timeout".to_string(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".to_string(),
        ErrorKind::HostUnreachable => "connect: no route to host".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {addr}: {why}")
}

/// Runs the probe once: `Ok` on success, else the failure as kubelet's probers word it (the
/// exec output, Go's dial error, `HTTP probe failed with statuscode: N`). A timeout is a
/// failure.
pub async fn run(
    probe: &Probe,
    c: &Container,
    t: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &probe.exec {
        let Some(pid) = t.pid else {
            return Err("the container has no process".to_string());
        };
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
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let run = async {
            let mut child = cmd.spawn()?;
            // At most 10 KiB of output is kept, as kubelet's limit writer; the rest is read
            // and dropped, so a flooding probe costs no memory.
            let (out, err) = tokio::join!(
                keep_some(child.stdout.take()),
                keep_some(child.stderr.take())
            );
            let status = child.wait().await?;
            std::io::Result::Ok((status, [out, err].concat()))
        };
        return match tokio::time::timeout(timeout, run).await {
            Ok(Ok((status, _))) if status.success() => Ok(()),
            Ok(Ok((_, mut out))) => {
                out.truncate(PROBE_OUTPUT_LIMIT);
                Err(String::from_utf8_lossy(&out).to_string())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "command {:?} timed out",
                exec.command
                    .iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        };
    }
    let (host, port_no, http) = if let Some(h) = &probe.http_get {
        let host = h.host.as_deref().and_then(|s| s.parse().ok()).or(t.pod_ip);
        (host, port(&h.port, c), Some(h.clone()))
    } else if let Some(s) = &probe.tcp_socket {
        let host = s.host.as_deref().and_then(|s| s.parse().ok()).or(t.pod_ip);
        (host, port(&s.port, c), None)
    } else {
        return Err("the probe has no handler".to_string());
    };
    let (Some(host), Some(port_no)) = (host, port_no) else {
        return Err("the probe has no address or port".to_string());
    };
    let addr = SocketAddr::new(host, port_no);
    let netns = t.netns.clone();
    let check = move || -> Result<(), String> {
        let url = |h: &k8s_openapi::api::core::v1::HTTPGetAction| {
            format!("http://{addr}{}", request_path(h))
        };
        let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match &http {
            Some(h) => format!("Get {:?}: {}", url(h), dial_error(addr, &e)),
            None => dial_error(addr, &e),
        })?;
        let Some(h) = http else { return Ok(()) };
        if h.scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
        {
            return Err("HTTPS probes are not supported on this node".to_string());
        }
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
        let path = request_path(&h);
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
        s.write_all(req.as_bytes())
            .map_err(|e| format!("Get {:?}: {e}", url(&h)))?;
        // The status line, however the server cuts its writes.
        let mut head = [0u8; 64];
        let mut n = 0;
        while n < head.len() && !head[..n].contains(&b'\n') {
            match s.read(&mut head[n..]) {
                Ok(0) if n == 0 => return Err(format!("Get {:?}: EOF", url(&h))),
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!(
                        "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                        url(&h)
                    ));
                }
                Err(e) => return Err(format!("Get {:?}: {e}", url(&h))),
            }
        }
        let line = String::from_utf8_lossy(&head[..n]);
        match line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
        {
            Some(c) if (200..400).contains(&c) => Ok(()),
            Some(c) => Err(format!("HTTP probe failed with statuscode: {c}")),
            None => Err(format!("Get {:?}: malformed HTTP response", url(&h))),
        }
    };
    let work = tokio::task::spawn_blocking(move || match netns {
        Some(ns) => {
            dualstack_host::netns::run_in(&ns, check).unwrap_or_else(|e| Err(e.to_string()))
        }
        None => check(),
    });
    match tokio::time::timeout(timeout + Duration::from_millis(500), work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HTTPGetAction, TCPSocketAction};

    fn target() -> Target {
        Target {
            pod_ip: Some("127.0.0.1".parse().unwrap()),
            netns: None,
            pid: None,
            spec_file: PathBuf::new(),
            exe: PathBuf::new(),
        }
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn failures_are_worded_as_kubelets_probers_word_them() {
        let port = closed_port();
        let tcp = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port.into()),
                host: None,
            }),
            ..Default::default()
        };
        let c = Container::default();
        let t = Duration::from_secs(2);
        assert_eq!(
            run(&tcp, &c, &target(), t).await,
            Err(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        let http = |port: u16, path: &str| Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(port.into()),
                path: Some(path.into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            run(&http(port, "/healthz"), &c, &target(), t).await,
            Err(format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
        // A server that answers 500, then one that answers 200.
        for (code, want) in [
            (
                500,
                Err("HTTP probe failed with statuscode: 500".to_string()),
            ),
            (204, Ok(())),
        ] {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                // The status line in two writes: the probe must read on.
                let _ = s.write_all(b"HTTP/1.1 ");
                std::thread::sleep(Duration::from_millis(50));
                let _ = write!(s, "{code} X\r\nContent-Length: 0\r\n\r\n");
            });
            assert_eq!(run(&http(port, "/"), &c, &target(), t).await, want);
        }
    }
}
