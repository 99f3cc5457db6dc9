//! Upstream's test images without a registry, end to end (root): the shape of upstream's
//! dual-stack e2e (test/e2e/network/dual_stack.go, "should be able to reach pod on ipv4 and
//! ipv6 ip" and the Service checks) run as written, with image
//! `registry.k8s.io/e2e-test-images/agnhost:2.53` and no `command`: a Deployment of three
//! `agnhost netexec` servers spread by required pod anti-affinity, a client pod of the same
//! image, and a dual-stack Service. Every probe goes from the client pod (its netexec `/dial`,
//! reached with curl from a lab node, never from the host namespace). Also the `pause` image.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use common::eventually;
use common::lab::Lab;
use serde_json::Value;

const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.53";

fn servers_yaml() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: agnhost-server
spec:
  replicas: 3
  selector:
    matchLabels: {{app: agnhost-server}}
  template:
    metadata:
      labels: {{app: agnhost-server}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {{app: agnhost-server}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: agnhost
        image: {AGNHOST}
        args: ["netexec", "--http-port=8080", "--udp-port=8081"]
---
apiVersion: v1
kind: Pod
metadata:
  name: agnhost-client
  labels: {{app: agnhost-client}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: agnhost
    image: {AGNHOST}
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
---
apiVersion: v1
kind: Service
metadata:
  name: agnhost-server
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {{app: agnhost-server}}
  ports:
  - {{name: http, port: 80, targetPort: 8080, protocol: TCP}}
  - {{name: udp, port: 81, targetPort: 8081, protocol: UDP}}
---
apiVersion: v1
kind: Pod
metadata:
  name: pause
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: pause
    image: registry.k8s.io/pause:3.9
"#
    )
}

fn ips(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().or(i["ip"].as_str()))
        .map(|s| s.parse().unwrap())
        .collect()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

/// The answers of the client's `/dial` for `request` to `ip:port` over `protocol`, fetched by
/// curl on `node` (the client pod's node: inside the lab), as upstream's JSON.
fn dial(
    lab: &Lab,
    node: &str,
    client: IpAddr,
    ip: IpAddr,
    port: u16,
    protocol: &str,
    tries: u32,
) -> Result<Value, String> {
    let host = match client {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let url = format!(
        "http://{host}:8080/dial?request=hostname&protocol={protocol}&host={ip}&port={port}&tries={tries}"
    );
    let out = lab.exec(node, &["curl", "-g", "-s", "-S", "-m", "30", &url]);
    if !out.status.success() {
        return Err(format!(
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{url}: {e}: {:?}",
            String::from_utf8_lossy(&out.stdout).to_string()
        )
    })
}

fn responses(v: &Value) -> BTreeSet<String> {
    v["responses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn upstreams_dual_stack_agnhost_manifests_run_and_answer_over_both_families() {
    let lab = Lab::up("ds-agnhost-", 3, &[]);
    lab.apply(&servers_yaml());

    // Three servers on three nodes, a client, all Running with both families.
    let (servers, client) = eventually(Duration::from_secs(90), || {
        let pods = lab.json(&["get", "pods", "-l", "app=agnhost-server"]);
        let servers: Vec<Value> = pods["items"].as_array()?.clone();
        let client = lab.json(&["get", "pod", "agnhost-client"]);
        (servers.len() == 3
            && servers
                .iter()
                .all(|p| running(p) && ips(&p["status"]["podIPs"]).len() == 2)
            && running(&client)
            && ips(&client["status"]["podIPs"]).len() == 2)
            .then_some((servers, client))
    })
    .unwrap_or_else(|| {
        panic!(
            "agnhost pods not Running:\n{}\n{}",
            lab.kubectl_ok(&["get", "pods", "-o", "wide"]),
            lab.logs()
        )
    });
    let nodes: BTreeSet<&str> = servers
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes.len(),
        3,
        "anti-affinity spreads the servers: {nodes:?}"
    );
    let names: BTreeSet<String> = servers
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let client_node = client["spec"]["nodeName"].as_str().unwrap();
    let client_ips = ips(&client["status"]["podIPs"]);

    // Every server pod IP of both families answers `hostname` over http and udp, dialled by
    // the client over each of its own families' addresses to reach its netexec.
    for server in &servers {
        let name = server["metadata"]["name"].as_str().unwrap();
        let server_ips = ips(&server["status"]["podIPs"]);
        assert_eq!(
            (server_ips[0].is_ipv4(), server_ips[1].is_ipv6()),
            (true, true),
            "{server}"
        );
        for ip in server_ips {
            let client_ip = client_ips[usize::from(ip.is_ipv6())];
            for (protocol, port) in [("http", 8080), ("udp", 8081)] {
                let got = eventually(Duration::from_secs(30), || {
                    dial(&lab, client_node, client_ip, ip, port, protocol, 1)
                        .ok()
                        .filter(|v| v["responses"][0] == name)
                });
                assert!(
                    got.is_some(),
                    "{protocol} {ip}:{port} from the client did not answer {name}: {:?}\n{}",
                    dial(&lab, client_node, client_ip, ip, port, protocol, 1),
                    lab.logs()
                );
            }
        }
    }

    // Both ClusterIPs of the dual-stack Service answer over http and udp, with the servers'
    // hostnames, every server reached.
    let svc = lab.json(&["get", "svc", "agnhost-server"]);
    let cluster_ips = ips(&svc["spec"]["clusterIPs"]);
    assert_eq!(cluster_ips.len(), 2, "{svc}");
    for ip in cluster_ips {
        let client_ip = client_ips[usize::from(ip.is_ipv6())];
        for (protocol, port) in [("http", 80), ("udp", 81)] {
            let mut seen = BTreeSet::new();
            let ok = eventually(Duration::from_secs(60), || {
                let v = dial(&lab, client_node, client_ip, ip, port, protocol, 10).ok()?;
                let got = responses(&v);
                assert!(
                    got.is_subset(&names),
                    "{protocol} {ip}:{port} answered {got:?}, not the servers {names:?}"
                );
                seen.extend(got);
                (seen == names).then_some(())
            });
            assert!(
                ok.is_some(),
                "{protocol} {ip}:{port}: only {seen:?} of {names:?} answered:\n{}",
                lab.logs()
            );
        }
    }

    // The pause image with no command runs and stays up.
    let pause = eventually(Duration::from_secs(30), || {
        let p = lab.json(&["get", "pod", "pause"]);
        running(&p).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "pause not Running: {}",
            lab.json(&["get", "pod", "pause"])["status"]
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = lab.json(&["get", "pod", "pause"]);
    assert!(running(&p), "pause stopped: {}", p["status"]);
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{}",
        p["status"]
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
        pause["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    );
}

/// A container of any other image without `command` keeps the agent's waiting reason.
#[test]
fn a_pod_of_another_image_without_command_waits_with_the_reason() {
    let lab = Lab::up("ds-agnhost-", 1, &[]);
    lab.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: busybox\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let waiting = eventually(Duration::from_secs(30), || {
        let p = lab.json(&["get", "pod", "busybox"]);
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        w.is_object().then_some(w)
    })
    .unwrap_or_else(|| panic!("busybox never waiting:\n{}", lab.logs()));
    assert_eq!(waiting["reason"], "CreateContainerConfigError", "{waiting}");
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or_default()
            .contains("has no command"),
        "{waiting}"
    );
}

/// A free loopback port (of both families) for a server of this test.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("[::]:0").unwrap();
    l.local_addr().unwrap().port()
}

/// curl on loopback: (status code, body).
fn curl(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-g", "-s", "-m", "10", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap_or(0), body.to_string())
}

/// A child process killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The netexec sockets on loopback (no root): both families on one port, upstream's bodies,
/// status codes and `/dial` JSON over http and udp.
#[test]
fn netexec_answers_its_endpoints_over_both_families_on_loopback() {
    let (http, udp) = (free_port(), free_port());
    let _server = Child(
        std::process::Command::new(common::binary())
            .args(["agnhost", "netexec"])
            .arg(format!("--http-port={http}"))
            .arg(format!("--udp-port={udp}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let up = eventually(Duration::from_secs(10), || {
        (curl(&format!("http://127.0.0.1:{http}/healthz")).0 == 200).then_some(())
    });
    assert!(up.is_some(), "netexec never became healthy");
    for host in ["127.0.0.1", "[::1]"] {
        let base = format!("http://{host}:{http}");
        assert_eq!(curl(&format!("{base}/hostname")), (200, hostname.clone()));
        assert_eq!(curl(&format!("{base}/hostName")), (200, hostname.clone()));
        let (code, ip) = curl(&format!("{base}/clientip"));
        assert_eq!(code, 200);
        assert!(ip.starts_with(&format!("{host}:")), "{ip} from {host}");
        assert_eq!(
            curl(&format!("{base}/echo?msg=hi&code=202")),
            (202, "hi".to_string())
        );
        let (code, now) = curl(&format!("{base}/"));
        assert!(code == 200 && now.starts_with("NOW: "), "{code} {now}");
    }
    for (dial_host, v6) in [("127.0.0.1", false), ("::1", true)] {
        for (protocol, port) in [("http", http), ("udp", udp)] {
            let (code, body) = curl(&format!(
                "http://127.0.0.1:{http}/dial?request=hostname&protocol={protocol}&host={dial_host}&port={port}&tries=2"
            ));
            assert_eq!(
                (code, body),
                (
                    200,
                    format!(r#"{{"responses":["{hostname}","{hostname}"]}}"#)
                ),
                "{protocol} to {dial_host} (v6: {v6})"
            );
        }
    }
    let (code, body) = curl(&format!(
        "http://127.0.0.1:{http}/dial?request=hostname&protocol=http&host=127.0.0.1&port=1"
    ));
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("responses").is_none(), "{body}");
    assert!(
        v["errors"][0]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
    assert_eq!(
        curl(&format!("http://127.0.0.1:{http}/dial?host=x&port=1")),
        (400, "request parameter not specified. <nil>\n".to_string())
    );
    assert_eq!(
        curl(&format!(
            "http://127.0.0.1:{http}/shell?cmd=echo%20a%3Becho%20b%20%3E%262%3Bexit%203"
        )),
        (
            200,
            r#"{"error":"exit status 3","output":"a\nb\n"}"#.to_string()
        )
    );
}

/// `agnhost pause` exits as upstream's (2 on SIGTERM, 1 on SIGINT); the pause image's
/// `--exit-zero` exits 0.
#[test]
fn pause_waits_for_a_signal_and_exits_as_upstream() {
    for (args, signal, want) in [
        (&["pause"][..], "TERM", 2),
        (&["pause"][..], "INT", 1),
        (&["pause", "--exit-zero"][..], "TERM", 0),
    ] {
        let mut child = std::process::Command::new(common::binary())
            .arg("agnhost")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for "Paused" (the handler is installed before it is printed).
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "Paused\n");
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause did not wait");
        let st = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(want), "{args:?} {signal}");
    }
}

/// `agnhost serve-hostname` on loopback: HTTP by default, raw TCP and UDP with `--http=false`,
/// both families; HTTP together with TCP/UDP is refused with upstream's message.
#[test]
fn serve_hostname_serves_the_hostname_over_http_tcp_and_udp_on_both_families() {
    use std::io::Read;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let spawn = |args: &[&str]| {
        Child(
            std::process::Command::new(common::binary())
                .args(["agnhost", "serve-hostname"])
                .args(args)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };

    let port = free_port();
    let _http = spawn(&[&format!("--port={port}")]);
    for host in ["127.0.0.1", "[::1]"] {
        let got = eventually(Duration::from_secs(10), || {
            let r = curl(&format!("http://{host}:{port}/anything"));
            (r.0 == 200).then_some(r.1)
        });
        assert_eq!(got.as_deref(), Some(hostname.as_str()), "http {host}");
    }

    let port = free_port();
    let _raw = spawn(&["--http=false", "--tcp", "--udp", &format!("--port={port}")]);
    for host in ["127.0.0.1", "::1"] {
        let addr: std::net::SocketAddr = std::net::SocketAddr::new(host.parse().unwrap(), port);
        let tcp = eventually(Duration::from_secs(10), || {
            let mut c = std::net::TcpStream::connect(addr).ok()?;
            let mut s = String::new();
            c.read_to_string(&mut s).ok()?;
            Some(s)
        });
        assert_eq!(tcp.as_deref(), Some(hostname.as_str()), "tcp {addr}");
        let local = if addr.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let udp = eventually(Duration::from_secs(10), || {
            let sock = std::net::UdpSocket::bind(local).ok()?;
            sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            sock.send_to(b"x", addr).ok()?;
            let mut buf = [0u8; 256];
            let (n, _) = sock.recv_from(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        assert_eq!(udp.as_deref(), Some(hostname.as_str()), "udp {addr}");
    }

    let out = std::process::Command::new(common::binary())
        .args(["agnhost", "serve-hostname", "--tcp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Can't server TCP/UDP mode and HTTP mode at the same time"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
