//! `dualstack agent` against the real server, both inside a test network namespace (the
//! host's namespace is never touched): node registration, Ready after podCIDRs, the Lease;
//! pods with two addresses in the node's family order, hosts file, logs, restart policies,
//! back-off, probes, graceful deletion, adoption by a restarted agent, hostNetwork, and an
//! IPv6-primary node.
//!
//! Address plan (see `common/mod.rs`): nodes `192.0.2.0/24` + `2001:db8:1::/64` on a veth
//! inside the namespace; pods from `--cluster-cidr=10.244.0.0/16,fd00:10:244::/56`.
//! Needs root (network and mount namespaces). The pod network is the real one: the agent's
//! conflist in a per-test `--cni-conf-dir`, run through the CNI runtime with the `dualstack`
//! plugin (this binary), bridge and veths inside the test namespace.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A test namespace with a server and an agent inside; everything is killed and unmounted on
/// drop, also when a test fails.
struct Lab {
    dir: tempfile::TempDir,
    ns: PathBuf,
    server: Option<Child>,
    agent: Option<Child>,
    url: String,
    token: String,
    node_ips: String,
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests need root (network and mount namespaces)"
    );
}

fn sh(ns: &Path, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn start(node_ips: &str) -> Lab {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = dir.path().join("node.ns");
        dualstack_host::netns::create(&ns).expect("create test netns");
        sh(&ns, &["ip", "link", "set", "lo", "up"]);
        sh(
            &ns,
            &[
                "ip", "link", "add", "n0", "type", "veth", "peer", "name", "n1",
            ],
        );
        sh(&ns, &["ip", "link", "set", "n1", "up"]);
        sh(&ns, &["ip", "link", "set", "n0", "up"]);
        sh(&ns, &["ip", "addr", "add", "192.0.2.1/24", "dev", "n0"]);
        sh(
            &ns,
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:1::1/64",
                "dev",
                "n0",
                "nodad",
            ],
        );
        let mut lab = Lab {
            dir,
            ns,
            server: None,
            agent: None,
            url: String::new(),
            token: String::new(),
            node_ips: node_ips.into(),
        };
        let data = lab.dir.path().join("data");
        let log = lab.dir.path().join("server.log");
        let child = lab
            .in_ns(&binary())
            .arg("server")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--secure-port",
                "0",
                "--allocate-node-cidrs",
                "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
                "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108",
            ])
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn server");
        lab.server = Some(child);
        lab.url = eventually(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).ok()?;
            let i = text.find("url=https://")?;
            Some(text[i + 4..].split_whitespace().next()?.to_string())
        })
        .unwrap_or_else(|| {
            panic!(
                "server did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let kc = std::fs::read_to_string(data.join("kubeconfig")).unwrap();
        lab.token = kc
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .unwrap()
            .to_string();
        let out = Command::new(binary())
            .args(["token", "create", "--node", "node-a", "--data-dir"])
            .arg(&data)
            .arg("--kubeconfig-out")
            .arg(lab.dir.path().join("node.kubeconfig"))
            .output()
            .unwrap();
        assert!(out.status.success());
        lab.start_agent();
        lab
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn in_ns(&self, prog: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns.display())).arg(prog);
        c
    }

    fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .unwrap();
        let child = self
            .in_ns(&binary())
            .arg("agent")
            .arg("--kubeconfig")
            .arg(self.dir.path().join("node.kubeconfig"))
            .args([
                "--node-name",
                "node-a",
                "--node-ip",
                &self.node_ips,
                "--cluster-dns",
                "10.0.0.10",
            ])
            .arg("--root-dir")
            .arg(self.root())
            .arg("--cni-conf-dir")
            .arg(self.dir.path().join("net.d"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.agent = Some(child);
    }

    fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut c = self.in_ns(Path::new("curl"));
        c.args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--cacert",
        ])
        .arg(self.dir.path().join("data/pki/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", self.token)]);
        if let Some(b) = body {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            c.args([
                "-H",
                &format!("Content-Type: {ct}"),
                "--data-binary",
                &b.to_string(),
            ]);
        }
        c.arg(format!("{}{path}", self.url));
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    fn get(&self, path: &str) -> Option<Value> {
        let (code, v) = self.call("GET", path, None);
        (code == 200).then_some(v)
    }

    fn node(&self) -> Value {
        self.get("/api/v1/nodes/node-a").expect("node")
    }

    fn wait_node_ready(&self) -> Value {
        eventually(WAIT, || {
            let n = self.get("/api/v1/nodes/node-a")?;
            let ready = n["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(n)
        })
        .unwrap_or_else(|| {
            panic!(
                "node not Ready: {}\n{}",
                self.get("/api/v1/nodes/node-a").unwrap_or_default(),
                self.agent_log()
            )
        })
    }

    fn create_pod(&self, name: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!("node-a");
        for c in spec["containers"].as_array_mut().unwrap() {
            c["image"] = json!("none");
        }
        let (code, v) = self.call(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(&json!({"metadata": {"name": name}, "spec": spec})),
        );
        assert_eq!(code, 201, "{v}");
        v
    }

    fn pod(&self, name: &str) -> Option<Value> {
        self.get(&format!("/api/v1/namespaces/default/pods/{name}"))
    }

    fn wait_pod(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(WAIT, || self.pod(name).filter(|p| pred(p))).unwrap_or_else(|| {
            panic!(
                "pod {name}: {what} not reached: {}\n{}",
                self.pod(name).unwrap_or_default()["status"],
                self.agent_log()
            )
        })
    }

    fn log_of(&self, pod: &Value, container: &str, n: u32) -> String {
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        // The log file holds CRI records; this is what `kubectl logs` shows of it.
        let file = std::fs::read(self.root().join(format!("pods/{uid}/{container}/{n}.log")))
            .unwrap_or_default();
        String::from_utf8_lossy(&dualstack_node::logs::render(&file, &Default::default()))
            .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.kill_agent();
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Container processes and their shims outlive the agent by design: kill them here.
        let pods = self.root().join("pods");
        for pod in std::fs::read_dir(&pods)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            for c in std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
            {
                for f in std::fs::read_dir(c.path())
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                {
                    let p = f.path();
                    let text = std::fs::read_to_string(&p).unwrap_or_default();
                    let pid = match p.extension().and_then(|e| e.to_str()) {
                        Some("pid") => serde_json::from_str::<Value>(&text)
                            .ok()
                            .and_then(|v| v["pid"].as_i64()),
                        Some("shim") => text.split_whitespace().next().and_then(|s| s.parse().ok()),
                        _ => None,
                    };
                    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            let _ = dualstack_host::netns::remove(&pod.path().join("net.ns"));
        }
        let _ = dualstack_host::netns::remove(&self.ns);
    }
}

/// Files under `dir` whose content mentions `id` (IPAM reservations of a sandbox).
fn held_by(dir: &Path, id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let p = e.path();
        if p.is_dir() {
            out.extend(held_by(&p, id));
        } else if std::fs::read_to_string(&p).is_ok_and(|t| t.contains(id)) {
            out.push(p);
        }
    }
    out
}

fn ips(v: &Value) -> Vec<IpAddr> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["ip"].as_str()?.parse().ok())
        .collect()
}

fn running(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && ips(&p["status"]["podIPs"]).len() == 2
}

fn cstatus(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn condition(p: &Value, kind: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn in_cidrs(node: &Value, ip: &IpAddr) -> bool {
    node["spec"]["podCIDRs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| {
            c.as_str()
                .unwrap()
                .parse::<ipnet::IpNet>()
                .unwrap()
                .contains(ip)
        })
}

#[test]
fn node_registers_with_addresses_in_flag_order_turns_ready_after_pod_cidrs_and_renews_its_lease() {
    let lab = Lab::start("192.0.2.1,2001:db8:1::1");
    let node = lab.wait_node_ready();
    let addrs: Vec<(String, String)> = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap().into(),
                a["address"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("InternalIP".into(), "192.0.2.1".into()),
            ("InternalIP".into(), "2001:db8:1::1".into()),
            ("Hostname".into(), "node-a".into())
        ]
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-a"
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert_eq!(node["status"]["allocatable"]["pods"], "110");
    assert_eq!(node["spec"]["podCIDRs"].as_array().unwrap().len(), 2);
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    let lease = eventually(WAIT, || {
        lab.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-a")
    })
    .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "node-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    let first = lease["spec"]["renewTime"].as_str().unwrap().to_string();
    // Renewed every 10 s (a quarter of the 40 s duration); 25 s leaves room for a slow API.
    let renewed = eventually(Duration::from_secs(25), || {
        let l = lab.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-a")?;
        (l["spec"]["renewTime"].as_str()? != first).then_some(())
    });
    assert!(renewed.is_some(), "lease not renewed within 25 s");
}

#[test]
fn a_pod_runs_with_both_families_primary_first_sees_its_hosts_file_and_is_deleted_gracefully() {
    let lab = Lab::start("192.0.2.1,2001:db8:1::1");
    let node = lab.wait_node_ready();
    // Latency: create → Running with two addresses, measured through the API.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let name = format!("lat-{i}");
        let t0 = Instant::now();
        lab.create_pod(&name, json!({"containers": [{"name": "c", "command": ["sleep", "1000"]}], "terminationGracePeriodSeconds": 1}));
        eventually(WAIT, || lab.pod(&name).filter(running).map(|_| ())).expect("running");
        latencies.push(t0.elapsed());
    }
    latencies.sort();
    eprintln!("pod create -> Running (polled at 100 ms): {latencies:?}");

    // The container runs on the host's files: its SIGTERM trap leaves a mark outside the pod.
    let mark = lab.dir.path().join("term.mark");
    lab.create_pod(
        "web",
        json!({"containers": [{"name": "c", "command": ["sh", "-c", "trap 'echo got-term > $MARK; exit 0' TERM; echo hi; cat /etc/hosts; hostname; echo IPS=$POD_IPS; sleep 1000 & wait"],
            "env": [{"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}}, {"name": "MARK", "value": mark.to_str().unwrap()}]}]}),
    );
    let p = lab.wait_pod("web", "Running with two addresses", running);
    let pod_ips = ips(&p["status"]["podIPs"]);
    assert!(pod_ips[0].is_ipv4() && pod_ips[1].is_ipv6(), "{pod_ips:?}");
    assert_eq!(p["status"]["podIP"], pod_ips[0].to_string());
    assert!(
        pod_ips.iter().all(|ip| in_cidrs(&node, ip)),
        "{pod_ips:?} outside {}",
        node["spec"]["podCIDRs"]
    );
    assert_eq!(
        ips(&p["status"]["hostIPs"]),
        vec![
            "192.0.2.1".parse::<IpAddr>().unwrap(),
            "2001:db8:1::1".parse().unwrap()
        ]
    );
    assert_eq!(condition(&p, "Ready"), "True");
    let log = eventually(WAIT, || {
        Some(lab.log_of(&p, "c", 0)).filter(|l| l.contains("IPS="))
    })
    .expect("log");
    assert!(
        log.starts_with("hi\n# Kubernetes-managed hosts file.\n"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{}\tweb\n{}\tweb\n", pod_ips[0], pod_ips[1])),
        "{log}"
    );
    assert!(log.contains("\nweb\n"), "hostname: {log}");
    assert!(
        log.contains(&format!("IPS={},{}", pod_ips[0], pod_ips[1])),
        "{log}"
    );
    // Graceful deletion: SIGTERM reaches the trap, the agent completes the deletion.
    let (code, _) = lab.call("DELETE", "/api/v1/namespaces/default/pods/web", None);
    assert_eq!(code, 200);
    assert!(
        eventually(WAIT, || (lab
            .call("GET", "/api/v1/namespaces/default/pods/web", None)
            .0
            == 404)
            .then_some(()))
        .is_some(),
        "pod not deleted: {}",
        lab.agent_log()
    );
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap_or_default(),
        "got-term\n",
        "the SIGTERM trap ran"
    );
    let uid = p["metadata"]["uid"].as_str().unwrap();
    assert!(
        lab.log_of(&p, "c", 0).is_empty(),
        "the pod's files are removed after deletion: {:?}\n{}",
        held_by(&lab.root().join("pods").join(uid), ""),
        lab.agent_log()
    );
    let uid = p["metadata"]["uid"].as_str().unwrap();
    assert!(!lab.root().join("pods").join(uid).exists());
    // The addresses were freed: the CNI IPAM holds nothing for the sandbox.
    assert!(
        lab.root().join("cni-ipam").is_dir(),
        "the pod network is the CNI one: root has {:?}, conf dir {:?}",
        std::fs::read_dir(lab.root()).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect::<Vec<_>>()),
        std::fs::read_dir(lab.dir.path().join("net.d")).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect::<Vec<_>>())
    );
    let held = held_by(&lab.root().join("cni-ipam"), &format!("dualstack-{uid}"));
    assert!(held.is_empty(), "addresses still held: {held:?}");
}

#[test]
fn restart_policies_exit_codes_crash_loop_back_off_and_a_container_without_command() {
    let lab = Lab::start("192.0.2.1,2001:db8:1::1");
    lab.wait_node_ready();
    lab.create_pod("never", json!({"restartPolicy": "Never", "containers": [{"name": "c", "command": ["sh", "-c", "exit 3"]}]}));
    lab.create_pod(
        "onfail-ok",
        json!({"restartPolicy": "OnFailure", "containers": [{"name": "c", "command": ["true"]}]}),
    );
    lab.create_pod("always", json!({"restartPolicy": "Always", "containers": [{"name": "c", "command": ["sh", "-c", "echo run; exit 1"]}]}));
    lab.create_pod("noimage", json!({"containers": [{"name": "c"}]}));
    let p = lab.wait_pod("never", "Failed", |p| p["status"]["phase"] == "Failed");
    let t = &cstatus(&p)["state"]["terminated"];
    assert_eq!(
        (t["exitCode"].as_i64(), t["reason"].as_str()),
        (Some(3), Some("Error"))
    );
    assert_eq!(cstatus(&p)["restartCount"], 0);
    let p = lab.wait_pod("onfail-ok", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(cstatus(&p)["state"]["terminated"]["reason"], "Completed");
    assert_eq!(condition(&p, "Ready"), "False");
    let p = lab.wait_pod("always", "CrashLoopBackOff", |p| {
        cstatus(p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let uid = p["metadata"]["uid"].as_str().unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(cstatus(&p)["lastState"]["terminated"]["exitCode"], 1);
    assert!(cstatus(&p)["restartCount"].as_i64().unwrap() >= 1);
    assert_eq!(
        cstatus(&p)["state"]["waiting"]["message"],
        format!("back-off 10s restarting failed container=c pod=always_default({uid})")
    );
    let p = lab.wait_pod("noimage", "waiting reason", |p| {
        cstatus(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert!(
        cstatus(&p)["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("has no command"),
        "{}",
        cstatus(&p)
    );
    assert_eq!(p["status"]["phase"], "Pending");
}

#[test]
fn a_failing_readiness_probe_keeps_ready_false_and_a_failing_liveness_probe_restarts() {
    let lab = Lab::start("192.0.2.1,2001:db8:1::1");
    lab.wait_node_ready();
    lab.create_pod("unready", json!({"containers": [{"name": "c", "command": ["sleep", "1000"],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1}}]}));
    lab.create_pod("ready", json!({"containers": [{"name": "c", "command": ["sleep", "1000"],
        "readinessProbe": {"exec": {"command": ["test", "-f", "/etc/hosts"]}, "periodSeconds": 1}}]}));
    lab.create_pod("dies", json!({"containers": [{"name": "c", "command": ["sleep", "1000"],
        "livenessProbe": {"httpGet": {"port": 8080, "path": "/healthz"}, "periodSeconds": 1, "failureThreshold": 2}}]}));
    lab.wait_pod("ready", "Ready", |p| condition(p, "Ready") == "True");
    let p = lab.wait_pod("unready", "Running", running);
    std::thread::sleep(Duration::from_secs(3));
    let p2 = lab.pod("unready").unwrap();
    assert_eq!(condition(&p2, "Ready"), "False", "{}", p2["status"]);
    assert_eq!(cstatus(&p2)["ready"], false);
    assert_eq!(p["status"]["phase"], "Running");
    let p = lab.wait_pod("dies", "restarted by liveness", |p| {
        cstatus(p)["restartCount"].as_i64() >= Some(1)
    });
    assert_eq!(
        cstatus(&p)["lastState"]["terminated"]["exitCode"],
        143,
        "SIGTERM: {}",
        cstatus(&p)
    );
}

#[test]
fn a_restarted_agent_adopts_its_pods_with_the_same_addresses_and_processes() {
    let mut lab = Lab::start("192.0.2.1,2001:db8:1::1");
    lab.wait_node_ready();
    lab.create_pod(
        "keep",
        json!({"containers": [{"name": "c", "command": ["sleep", "1000"]}]}),
    );
    let before = lab.wait_pod("keep", "Running", running);
    let uid = before["metadata"]["uid"].as_str().unwrap().to_string();
    let pid_file = lab.root().join(format!("pods/{uid}/c/0.pid"));
    let pid = eventually(WAIT, || std::fs::read_to_string(&pid_file).ok()).expect("pid file");
    lab.kill_agent();
    lab.start_agent();
    assert!(
        eventually(WAIT, || lab
            .agent_log()
            .contains("adopted pod")
            .then_some(()))
        .is_some(),
        "{}",
        lab.agent_log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let after = lab.pod("keep").unwrap();
    assert_eq!(after["status"]["phase"], "Running");
    assert_eq!(after["status"]["podIPs"], before["status"]["podIPs"]);
    assert_eq!(cstatus(&after)["restartCount"], 0);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        pid,
        "same container process"
    );
    let p: Value = serde_json::from_str(&pid).unwrap();
    assert!(
        Path::new(&format!("/proc/{}", p["pid"])).exists(),
        "container still runs"
    );
}

#[test]
fn host_network_pods_get_the_node_ips_and_an_ipv6_primary_node_lists_ipv6_first() {
    let lab = Lab::start("2001:db8:1::1,192.0.2.1");
    let node = lab.wait_node_ready();
    assert_eq!(node["status"]["addresses"][0]["address"], "2001:db8:1::1");
    lab.create_pod(
        "v6first",
        json!({"containers": [{"name": "c", "command": ["sleep", "1000"]}]}),
    );
    lab.create_pod(
        "hostnet",
        json!({"hostNetwork": true, "containers": [{"name": "c", "command": ["sleep", "1000"]}]}),
    );
    let p = lab.wait_pod("v6first", "Running", running);
    let pod_ips = ips(&p["status"]["podIPs"]);
    assert!(pod_ips[0].is_ipv6() && pod_ips[1].is_ipv4(), "{pod_ips:?}");
    assert_eq!(p["status"]["podIP"], pod_ips[0].to_string());
    assert_eq!(p["status"]["hostIP"], "2001:db8:1::1");
    let h = lab.wait_pod("hostnet", "Running", running);
    assert_eq!(
        ips(&h["status"]["podIPs"]),
        vec![
            "2001:db8:1::1".parse::<IpAddr>().unwrap(),
            "192.0.2.1".parse().unwrap()
        ]
    );
    let _ = lab.node();
}

#[test]
fn a_bad_node_ip_is_refused_with_kubelets_message() {
    let out = Command::new(binary())
        .args([
            "agent",
            "--node-name",
            "x",
            "--node-ip",
            "10.0.0.1,10.0.0.2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad --node-ip \"10.0.0.1,10.0.0.2\": must contain either a single IP or a dual-stack pair of IPs"), "{err}");
}
