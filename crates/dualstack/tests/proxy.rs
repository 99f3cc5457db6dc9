//! The Service proxy end to end, after upstream's "Granular Checks: Services Secondary IP
//! Family" (test/e2e/network/dual_stack.go): real `dualstack up` labs (root), the in-agent
//! proxy on every node, real packets. Every probe is sent from inside the lab: from a pod's
//! network namespace (`nsenter --net=<the pod's netns file>`, i.e. from the pod) or from a lab
//! host (`dualstack exec`). Every check runs over IPv4 and IPv6.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::{binary, eventually};
use serde_json::Value;

/// The backend every test pod runs: HTTP on `http_port` (GET answers "<name> <peer>", POST
/// echoes the body, HTTP/1.1 keep-alive) and UDP echo on `udp_port`, both families.
const SERVER_PY: &str = r#"
import sys, socket, threading, http.server, socketserver
name, http_port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def peer(a):
    return a[7:] if a.startswith("::ffff:") else a
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.reply((name + " " + peer(self.client_address[0]) + "\n").encode())
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.reply(self.rfile.read(n))
    def log_message(self, fmt, *args):
        sys.stderr.write("peer %s\n" % peer(self.client_address[0]))
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", udp_port))
    while True:
        d, a = s.recvfrom(65535)
        s.sendto(name.encode() if d == b"id" else d, a)
threading.Thread(target=udp, daemon=True).start()
S(("::", http_port), H).serve_forever()
"#;

/// `client.py udp IP PORT SIZE`: sends SIZE bytes, prints OK when the echo matches.
/// `client.py keep IP PORT SIGNAL`: one GET on a connection, then waits for the SIGNAL file
/// and sends a second GET on the same connection; prints FIRST/SECOND lines.
const CLIENT_PY: &str = r#"
import sys, socket, time, os
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
if mode == "udp":
    size = int(sys.argv[4])
    msg = b"n" + b"o" * (size - 1)
    for _ in range(5):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(1)
        try:
            s.sendto(msg, (ip, port))
            d, _ = s.recvfrom(65535)
            print("OK" if d == msg else "MISMATCH %d" % len(d))
            sys.exit(0)
        except socket.timeout:
            continue
    print("TIMEOUT")
    sys.exit(1)
if mode == "udpid":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b"id", (ip, port))
    print(s.recvfrom(100)[0].decode())
    sys.exit(0)
if mode == "keep":
    signal = sys.argv[4]
    s = socket.create_connection((ip, port), timeout=10)
    def get():
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(4096)
        head, body = buf.split(b"\r\n\r\n", 1)
        n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
        while len(body) < n:
            body += s.recv(4096)
        return body.decode().strip()
    print("FIRST", get(), flush=True)
    while not os.path.exists(signal):
        time.sleep(0.1)
    s.settimeout(10)
    print("SECOND", get(), flush=True)
"#;

/// A lab for these tests: the shared one, with the HTTP/UDP server and client scripts the
/// pods run.
fn up(nodes: usize) -> Lab {
    let lab = Lab::up("ds-proxy-", nodes, &[]);
    std::fs::write(lab.path().join("server.py"), SERVER_PY).unwrap();
    std::fs::write(lab.path().join("client.py"), CLIENT_PY).unwrap();
    lab
}

/// What these tests add to the shared lab: pods, Services, running commands in pods.
impl Lab {
    fn wait_ready(&self, name: &str) -> Value {
        eventually(Duration::from_secs(60), || {
            let p = self.json(&["get", "pod", name]);
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(p)
        })
        .unwrap_or_else(|| panic!("pod {name} not Ready:\n{}", self.logs()))
    }

    /// The network namespace file of a running pod.
    fn pod_netns(&self, name: &str) -> PathBuf {
        let p = self.json(&["get", "pod", name]);
        let uid = p["metadata"]["uid"].as_str().unwrap();
        let node = p["spec"]["nodeName"].as_str().unwrap();
        self.path()
            .join("nodes")
            .join(node)
            .join("pods")
            .join(uid)
            .join("net.ns")
    }

    /// Runs a command inside a pod's network namespace.
    fn in_pod(&self, pod: &str, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.pod_netns(pod).display()))
            .args(cmd)
            .output()
            .unwrap()
    }

    fn server_pod(&self, name: &str, node: &str, labels: &str, http: u16, udp: u16) -> String {
        let script = self.path().join("server.py");
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: server
    image: none
    command: ["python3", "{script}", "{name}", "{http}", "{udp}"]
    readinessProbe:
      tcpSocket: {{port: {http}}}
      periodSeconds: 1
"#,
            script = script.display()
        )
    }

    fn sleeper_pod(&self, name: &str, node: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: none\n    command: [\"sleep\", \"100000\"]\n"
        )
    }

    fn svc(&self, name: &str) -> Value {
        self.json(&["get", "svc", name])
    }

    fn cluster_ips(&self, name: &str) -> Vec<IpAddr> {
        ips(&self.svc(name)["spec"]["clusterIPs"])
    }
}

fn ips(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().or(i["ip"].as_str()))
        .map(|s| s.parse().unwrap())
        .collect()
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
    }
}

fn curl_args(u: &str) -> Vec<String> {
    ["curl", "-g", "-s", "-S", "-m", "5", u]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// "<backend> <peer>" from one GET, or the error.
fn get(out: Output) -> Result<(String, String), String> {
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut it = text.split_whitespace();
    Ok((
        it.next().unwrap_or("").to_string(),
        it.next().unwrap_or("").to_string(),
    ))
}

fn from_pod(lab: &Lab, pod: &str, u: &str) -> Result<(String, String), String> {
    let args = curl_args(u);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    get(lab.in_pod(pod, &args))
}

fn from_host(lab: &Lab, host: &str, u: &str) -> Result<(String, String), String> {
    let args = curl_args(u);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    get(lab.exec(host, &args))
}

/// The backends that answer `n` requests (panics on a failed one).
fn backends(
    n: usize,
    mut one: impl FnMut() -> Result<(String, String), String>,
) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            one()
                .unwrap_or_else(|e| panic!("request {i} failed: {e}"))
                .0
        })
        .collect()
}

/// Rounds of `n` requests until one round succeeds whole and `want` holds of the backends it
/// saw (the rules of every endpoint may land a sync after the first one's); panics with the
/// last round's outcome after 30 s.
fn settled(
    n: usize,
    mut one: impl FnMut() -> Result<(String, String), String>,
    want: impl Fn(&BTreeSet<String>) -> bool,
    what: &str,
) -> BTreeSet<String> {
    let mut last = Err(String::new());
    eventually(Duration::from_secs(30), || {
        last = (0..n).map(|_| one().map(|r| r.0)).collect();
        last.as_ref().ok().filter(|s| want(s)).cloned()
    })
    .unwrap_or_else(|| panic!("{what}: last round {last:?}"))
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Waits until the proxy of every node has programmed `ip` (its rules appear in the table of
/// its family on `node`).
fn wait_programmed(lab: &Lab, node: &str, ip: IpAddr) {
    let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
    let ok = eventually(Duration::from_secs(20), || {
        let out = lab.exec(
            node,
            &["nft", "list", "map", fam, "dualstack-proxy", "service-ips"],
        );
        String::from_utf8_lossy(&out.stdout)
            .contains(&ip.to_string())
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "{ip} never programmed on {node}:\n{}",
        lab.logs()
    );
}

/// G1/G4/G6/G8/G10/G12/G13 and the external paths, over both families, in one 2-node lab:
/// a pod reaches both ClusterIPs (all endpoints answer), a node does, `outside` reaches the
/// NodePort on every node address and the LoadBalancer IPs (the seed's IPv6-only example and
/// a dual-stack one), hairpin works, 2,000-byte TCP and UDP requests are echoed, ClientIP
/// affinity keeps one backend, `externalTrafficPolicy: Local` keeps the client's address and
/// answers its health-check node port, a Service without endpoints is refused in under a
/// second, and deleting a backend leaves only the others answering.
#[test]
fn services_answer_over_both_families_from_pods_nodes_and_outside() {
    let lab = up(2);
    lab.apply(&lab.server_pod("web-1", "node-1", "app: web, pod: web-1", 8080, 9090));
    lab.apply(&lab.server_pod("web-2", "node-2", "app: web, pod: web-2", 8080, 9090));
    lab.apply(&lab.server_pod("myapp", "node-2", "app: MyApp", 9376, 9377));
    lab.apply(&lab.sleeper_pod("client", "node-1"));
    lab.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: udp, port: 90, targetPort: 9090, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: sticky}
spec:
  ipFamilyPolicy: RequireDualStack
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  ipFamilyPolicy: RequireDualStack
  selector: {pod: web-1}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: nothing}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    // The seed's IPv6 example (examples/seed/dual-stack-ipv6-svc.yaml) as a LoadBalancer.
    let seed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed/dual-stack-ipv6-svc.yaml"),
    )
    .unwrap();
    lab.apply(&seed.replace("spec:\n", "spec:\n  type: LoadBalancer\n"));
    for p in ["web-1", "web-2", "myapp"] {
        lab.wait_ready(p);
    }
    eventually(Duration::from_secs(30), || {
        let pod = lab.json(&["get", "pod", "client"]);
        (pod["status"]["phase"] == "Running").then_some(())
    })
    .expect("client running");

    let web = lab.cluster_ips("web");
    assert_eq!(web.len(), 2);
    assert!(web[0].is_ipv4() && web[1].is_ipv6(), "{web:?}");
    for node in ["node-1", "node-2"] {
        for ip in &web {
            wait_programmed(&lab, node, *ip);
        }
    }
    let all = set(&["web-1", "web-2"]);

    // A pod reaches both ClusterIPs, the secondary included; every endpoint answers.
    // (`service-ips` holds a Service from its first endpoint on; the second may be a sync
    // later.)
    for ip in &web {
        let url = url(*ip, 80);
        settled(
            20,
            || from_pod(&lab, "client", &url),
            |s| *s == all,
            &format!("pod → {ip}"),
        );
    }
    // A node reaches both ClusterIPs.
    for ip in &web {
        let url = url(*ip, 80);
        let what = format!("node-2 → {ip}");
        settled(12, || from_host(&lab, "node-2", &url), |s| *s == all, &what);
    }
    // Hairpin: an endpoint reaches its own Service, itself included.
    for ip in &web {
        let url = url(*ip, 80);
        let what = format!("web-1 → {ip} (hairpin)");
        settled(20, || from_pod(&lab, "web-1", &url), |s| *s == all, &what);
    }
    // outside → the NodePort on every node address of both families.
    let svc = lab.svc("web");
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    for addr in [
        "203.0.113.11",
        "2001:db8:1::11",
        "203.0.113.12",
        "2001:db8:1::12",
    ] {
        let ip: IpAddr = addr.parse().unwrap();
        let url = url(ip, node_port);
        let what = format!("outside → {addr}:{node_port}");
        settled(
            1,
            || from_host(&lab, "outside", &url),
            |s| s.is_subset(&all),
            &what,
        );
    }
    // outside → the dual-stack LoadBalancer's IPs.
    let lb = eventually(Duration::from_secs(20), || {
        let v = ips(&lab.svc("web")["status"]["loadBalancer"]["ingress"]);
        (v.len() == 2).then_some(v)
    })
    .expect("two LoadBalancer IPs");
    assert!(lb.iter().any(IpAddr::is_ipv4) && lb.iter().any(IpAddr::is_ipv6));
    for ip in &lb {
        let url = url(*ip, 80);
        let what = format!("outside → {ip}");
        settled(
            10,
            || from_host(&lab, "outside", &url),
            |s| s.is_subset(&all),
            &what,
        );
    }
    // outside → the seed's IPv6-only LoadBalancer.
    let seed_lb = eventually(Duration::from_secs(20), || {
        let v = ips(&lab.svc("my-service")["status"]["loadBalancer"]["ingress"]);
        (!v.is_empty()).then_some(v)
    })
    .expect("the seed's Service gets a LoadBalancer IP");
    assert_eq!(seed_lb.len(), 1);
    assert!(seed_lb[0].is_ipv6(), "{seed_lb:?}");
    let (who, _) = eventually(Duration::from_secs(10), || {
        from_host(&lab, "outside", &url(seed_lb[0], 80)).ok()
    })
    .expect("outside reaches the seed's IPv6 LoadBalancer");
    assert_eq!(who, "myapp");

    // 2,000-byte requests over TCP and UDP (G12, G13), both ClusterIPs.
    let big = "42".repeat(1000);
    let big_file = lab.path().join("big.txt");
    std::fs::write(&big_file, &big).unwrap();
    let client_py = lab.path().join("client.py");
    for ip in &web {
        let out = lab.in_pod(
            "client",
            &[
                "curl",
                "-g",
                "-s",
                "-m",
                "5",
                "--data-binary",
                &format!("@{}", big_file.display()),
                &url(*ip, 80),
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            big,
            "TCP echo via {ip}"
        );
        let out = lab.in_pod(
            "client",
            &[
                "python3",
                client_py.to_str().unwrap(),
                "udp",
                &ip.to_string(),
                "90",
                "2000",
            ],
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "OK",
            "UDP echo via {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ClientIP affinity (G10): one backend answers every time.
    for ip in lab.cluster_ips("sticky") {
        wait_programmed(&lab, "node-1", ip);
        let seen = backends(12, || from_pod(&lab, "client", &url(ip, 80)));
        assert_eq!(seen.len(), 1, "affinity via {ip}: {seen:?}");
    }

    // externalTrafficPolicy: Local keeps the client's address; the health-check node port
    // says where endpoints are.
    let local = lab.svc("local");
    let local_port = local["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    let hc_port = local["spec"]["healthCheckNodePort"].as_u64().unwrap() as u16;
    for (node_addr, outside_addr) in [
        ("203.0.113.11", "203.0.113.100"),
        ("2001:db8:1::11", "2001:db8:1::100"),
    ] {
        let ip: IpAddr = node_addr.parse().unwrap();
        let (who, peer) = eventually(Duration::from_secs(10), || {
            from_host(&lab, "outside", &url(ip, local_port)).ok()
        })
        .unwrap_or_else(|| panic!("outside → {node_addr}:{local_port} (Local)"));
        assert_eq!(who, "web-1");
        assert_eq!(peer, outside_addr, "the client's address is kept");
    }
    let hc = |addr: &str| {
        let out = lab.exec(
            "outside",
            &[
                "curl",
                "-g",
                "-s",
                "-m",
                "5",
                "-w",
                "\n%{http_code}",
                &url(addr.parse().unwrap(), hc_port),
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let with = eventually(Duration::from_secs(10), || {
        let t = hc("2001:db8:1::11");
        t.ends_with("200").then_some(t)
    })
    .unwrap_or_else(|| panic!("health check on node-1: {}", hc("2001:db8:1::11")));
    assert!(with.contains("\"localEndpoints\": 1"), "{with}");
    assert!(
        eventually(Duration::from_secs(20), || hc("203.0.113.12")
            .ends_with("503")
            .then_some(()))
        .is_some(),
        "no local endpoint on node-2: {}",
        hc("203.0.113.12")
    );

    // A Service without endpoints is refused (TCP reset) in under a second, both families.
    for ip in lab.cluster_ips("empty") {
        wait_programmed_no_endpoints(&lab, "node-1", ip);
        let start = Instant::now();
        let out = lab.in_pod("client", &["curl", "-g", "-s", "-m", "5", &url(ip, 80)]);
        let took = start.elapsed();
        assert_eq!(out.status.code(), Some(7), "connection refused via {ip}");
        assert!(
            took < Duration::from_secs(1),
            "refused after {took:?} via {ip}"
        );
    }

    // Deleting a backend (G8): only the remaining one answers, both families.
    lab.kubectl_ok(&["delete", "pod", "web-2", "--wait=true", "--timeout=60s"]);
    for ip in &web {
        let only = eventually(Duration::from_secs(20), || {
            let seen: Result<BTreeSet<String>, String> = (0..10)
                .map(|_| from_pod(&lab, "client", &url(*ip, 80)).map(|r| r.0))
                .collect();
            (seen.ok()? == set(&["web-1"])).then_some(())
        });
        assert!(
            only.is_some(),
            "only web-1 answers via {ip} after web-2 is gone"
        );
    }
    // (A datagram may be lost: a round with an empty answer is repeated.)
    let udp_id = || {
        let out = lab.in_pod(
            "client",
            &[
                "python3",
                client_py.to_str().unwrap(),
                "udpid",
                &web[1].to_string(),
                "90",
            ],
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match id.is_empty() {
            true => Err(String::from_utf8_lossy(&out.stderr).to_string()),
            false => Ok((id, String::new())),
        }
    };
    let only = set(&["web-1"]);
    settled(6, udp_id, |s| *s == only, "UDP too: only web-1");
}

fn wait_programmed_no_endpoints(lab: &Lab, node: &str, ip: IpAddr) {
    let fam = if ip.is_ipv4() { "ip" } else { "ip6" };
    let ok = eventually(Duration::from_secs(20), || {
        let out = lab.exec(
            node,
            &[
                "nft",
                "list",
                "map",
                fam,
                "dualstack-proxy",
                "no-endpoint-services",
            ],
        );
        String::from_utf8_lossy(&out.stdout)
            .contains(&ip.to_string())
            .then_some(())
    });
    assert!(ok.is_some(), "{ip} never in no-endpoint-services on {node}");
}

/// An agent restart (kill -9, then `up`) keeps established connections through a ClusterIP
/// of each family, and its first sync removes the rules of a Service deleted meanwhile.
#[test]
fn an_agent_restart_keeps_established_connections_and_leaves_no_stale_rules() {
    let lab = up(1);
    lab.apply(&lab.server_pod("web", "node-1", "app: web", 8080, 9090));
    lab.apply(&lab.sleeper_pod("client", "node-1"));
    lab.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: gone}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    lab.wait_ready("web");
    let web = lab.cluster_ips("web");
    let gone = lab.cluster_ips("gone");
    for ip in web.iter().chain(&gone) {
        wait_programmed(&lab, "node-1", *ip);
    }
    eventually(Duration::from_secs(30), || {
        (lab.json(&["get", "pod", "client"])["status"]["phase"] == "Running").then_some(())
    })
    .expect("client running");

    // One long-lived connection per family from the client pod.
    let signal = lab.path().join("go");
    let client_py = lab.path().join("client.py");
    let netns = lab.pod_netns("client");
    let mut conns: Vec<(IpAddr, std::process::Child)> = web
        .iter()
        .map(|ip| {
            let child = Command::new("nsenter")
                .arg(format!("--net={}", netns.display()))
                .args(["python3", client_py.to_str().unwrap(), "keep"])
                .arg(ip.to_string())
                .arg("80")
                .arg(&signal)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (*ip, child)
        })
        .collect();
    // Each has its first answer before the restart.
    let mut readers = Vec::new();
    for (ip, child) in &mut conns {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("FIRST web"), "{ip}: {line:?}");
        readers.push(r);
    }

    // The agent dies; a Service is deleted while it is down; the agent comes back.
    let pid = std::fs::read_to_string(lab.path().join("run/node-1.pid"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    Command::new("kill").args(["-9", &pid]).status().unwrap();
    lab.kubectl_ok(&["delete", "svc", "gone"]);
    let out = lab.dualstack(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The new proxy's first sync replaces the tables: `gone` is nowhere in them.
    let clean = eventually(Duration::from_secs(20), || {
        let text: String = ["ip", "ip6"]
            .iter()
            .map(|f| {
                let out = lab.exec("node-1", &["nft", "list", "table", f, "dualstack-proxy"]);
                String::from_utf8_lossy(&out.stdout).to_string()
            })
            .collect();
        (!text.contains("default/gone") && gone.iter().all(|ip| !text.contains(&ip.to_string())))
            .then_some(())
    });
    assert!(
        clean.is_some(),
        "rules of the deleted Service survived:\n{}",
        lab.logs()
    );

    // The established connections still work.
    std::fs::write(&signal, "").unwrap();
    for ((ip, mut child), mut r) in conns.into_iter().zip(readers) {
        use std::io::BufRead;
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            line.starts_with("SECOND web") && status.success(),
            "connection via {ip} after the restart: {line:?} {err}"
        );
    }
    // And new ones too.
    for ip in &web {
        assert_eq!(from_pod(&lab, "client", &url(*ip, 80)).unwrap().0, "web");
    }
}

/// `dualstack proxy` refuses a bad `--cluster-cidr` with kube-proxy's message, before it
/// touches anything.
#[test]
fn proxy_refuses_a_bad_cluster_cidr_with_kube_proxys_message() {
    let out = Command::new(binary())
        .args([
            "proxy",
            "--hostname-override",
            "n1",
            "--cluster-cidr",
            "10.0.0.0/8,10.1.0.0/16",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must be a either a single CIDR or dual-stack pair of CIDRs"),
        "{err}"
    );
    let out = Command::new(binary())
        .args(["proxy", "--hostname-override", "n1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must contain at least one CIDR"), "{err}");
}
