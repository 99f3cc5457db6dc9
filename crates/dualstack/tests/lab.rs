//! End to end, after upstream's dual-stack e2e suite (test/e2e/network/dual_stack.go): real
//! `dualstack up` labs (root), real kubectl on the host's loopback, real packets between pods
//! in network namespaces. Every probe runs inside the lab (pods, `dualstack exec`); each test
//! has its own data dir, so tests run side by side, and its lab is removed by `dualstack down`
//! however the test ends.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::lab::Lab;
use common::{binary, eventually};
use serde_json::Value;

/// What these tests add to the shared lab: pods and their phases.
impl Lab {
    fn pod(&self, name: &str) -> Value {
        self.json(&["get", "pod", name])
    }

    /// Waits until the pod is Running (and Ready when `ready`), returns it.
    fn wait_running(&self, name: &str, ready: bool) -> Value {
        eventually(Duration::from_secs(60), || {
            let p = self.pod(name);
            let running = p["status"]["phase"] == "Running";
            let is_ready = conditions(&p, "Ready") == Some("True");
            (running && (!ready || is_ready)).then_some(p)
        })
        .unwrap_or_else(|| {
            panic!(
                "pod {name} not Running{}: {}\nagent logs:\n{}",
                if ready { " and Ready" } else { "" },
                serde_json::to_string_pretty(&self.pod(name)["status"]).unwrap(),
                self.logs()
            )
        })
    }

    /// Waits until the pod has ended (Succeeded or Failed), returns it.
    fn wait_phase_or_failed(&self, name: &str) -> Value {
        eventually(Duration::from_secs(90), || {
            let p = self.pod(name);
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(p)
        })
        .unwrap_or_else(|| panic!("pod {name} never ended: {}", self.pod(name)))
    }

    fn wait_phase(&self, name: &str, phase: &str) -> Value {
        eventually(Duration::from_secs(90), || {
            let p = self.pod(name);
            (p["status"]["phase"] == phase).then_some(p)
        })
        .unwrap_or_else(|| {
            panic!(
                "pod {name} never {phase}: {}",
                serde_json::to_string_pretty(&self.pod(name)["status"]).unwrap()
            )
        })
    }
}

fn conditions<'a>(obj: &'a Value, ty: &str) -> Option<&'a str> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)?["status"]
        .as_str()
}

fn pod_ips(p: &Value) -> Vec<IpAddr> {
    p["status"]["podIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["ip"].as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
    }
}

/// A pod that serves HTTP on 8080 of both families (python's http.server on `::`), ready once
/// the port accepts connections.
fn web_pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: none
    command: ["python3", "-m", "http.server", "--bind", "::", "8080"]
    workingDir: /tmp
    ports:
    - containerPort: 8080
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
"#
    )
}

/// A pod that fetches every URL once (curl, retrying refused connections) and succeeds only if
/// all answered.
fn client_pod(name: &str, node: &str, urls: &[String]) -> String {
    let script = urls
        .iter()
        .map(|u| format!("curl -g -sf -m 5 --retry 3 --retry-connrefused -o /dev/null {u} || {{ echo FAIL {u}; exit 1; }}"))
        .collect::<Vec<_>>()
        .join("; ");
    script_pod(name, node, &format!("{script}; echo ALL OK"), &[])
}

/// A pod on `node` that runs `script` with `sh -c` once, with `env`.
fn script_pod(name: &str, node: &str, script: &str, env: &[(&str, &str)]) -> String {
    let env: String = env
        .iter()
        .map(|(k, v)| format!("\n    - name: {k}\n      value: {v:?}"))
        .collect();
    let env = if env.is_empty() {
        String::new()
    } else {
        format!("\n    env:{env}")
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  nodeName: {node}
  restartPolicy: Never
  containers:
  - name: client
    image: none
    command: ["sh", "-c", {script:?}]{env}
"#
    )
}

/// An in-cluster client: a pod that lists the nodes through the `kubernetes` Service by its DNS
/// name, with a token, then reads `/version` (public) at the Service's cluster IP; TLS is
/// checked against the cluster CA both times. It retries for up to 72 s while the node's proxy
/// catches up (the test waits 90 s for it to end).
fn api_client_pod(name: &str, node: &str, ca: &Path, token: &str, cluster_ip: IpAddr) -> String {
    let ip_url = match cluster_ip {
        IpAddr::V4(v4) => format!("https://{v4}/version"),
        IpAddr::V6(v6) => format!("https://[{v6}]/version"),
    };
    let ca = ca.display();
    let script = format!(
        "for i in $(seq 12); do \
           nodes=$(curl -sS --fail -m 5 --cacert {ca} -H \"Authorization: Bearer $TOKEN\" \
             https://kubernetes.default.svc.cluster.local/api/v1/nodes) && break; sleep 1; \
         done; \
         [ -n \"$nodes\" ] || exit 1; \
         echo \"$nodes\" | grep -o '\"name\": *\"node-[0-9]\"' | tr -d ' ' | sort -u; \
         curl -g -sS --fail -m 5 --cacert {ca} {ip_url}"
    );
    script_pod(name, node, &script, &[("TOKEN", token)])
}

/// Runs [`api_client_pod`] on `node` and returns its output, once it succeeded.
fn reach_the_api_from_a_pod(lab: &Lab, name: &str, node: &str) -> String {
    let ca = lab.path().join("server/pki/ca.crt");
    let token = lab.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.users[0].user.token}",
    ]);
    let svc = lab.json(&["get", "svc", "kubernetes"]);
    let cluster_ip: IpAddr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    lab.apply(&api_client_pod(name, node, &ca, token.trim(), cluster_ip));
    let p = lab.wait_phase_or_failed(name);
    let logs = lab.kubectl_ok(&["logs", name]);
    assert_eq!(p["status"]["phase"], "Succeeded", "{logs}\n{}", lab.logs());
    logs
}

fn nodes_json(lab: &Lab) -> Vec<Value> {
    lab.json(&["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 4 } else { 6 }
}

/// E1/E2: every node has one InternalIP per family and one podCIDR per family; E3/E4: a pod
/// gets two addresses of different families inside its node's podCIDRs, `podIP == podIPs[0]`,
/// and `hostIPs` are its node's; E5: every client reaches every server on both addresses over
/// real TCP; a restarted agent keeps its pods and their addresses; deleting a pod frees them;
/// `down` leaves nothing behind.
#[test]
fn a_three_node_lab_gives_every_pod_both_families_and_pods_reach_each_other_on_both() {
    let host_links_before = host_links();
    let lab = Lab::up("ds-lab-", 3, &[]);
    let nodes = nodes_json(&lab);
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        let internal: Vec<IpAddr> = n["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .map(|a| a["address"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(internal.len(), 2, "{n}");
        assert_eq!(family(&internal[0]), 4, "IPv4 first in an IPv4-primary lab");
        assert_eq!(family(&internal[1]), 6);
        let cidrs = n["spec"]["podCIDRs"].as_array().unwrap();
        assert_eq!(cidrs.len(), 2);
        assert_eq!(n["spec"]["podCIDR"], cidrs[0]);
        assert_eq!(conditions(n, "Ready"), Some("True"));
    }

    // One server per node.
    for i in 1..=3 {
        lab.apply(&web_pod(
            &format!("web-{i}"),
            &format!("node-{i}"),
            "app: web",
        ));
    }
    let mut urls = Vec::new();
    for i in 1..=3 {
        let p = lab.wait_running(&format!("web-{i}"), true);
        let ips = pod_ips(&p);
        assert_eq!(ips.len(), 2, "{p}");
        assert_eq!(family(&ips[0]), 4);
        assert_eq!(family(&ips[1]), 6);
        assert_eq!(
            p["status"]["podIP"].as_str(),
            Some(ips[0].to_string().as_str())
        );
        let node = nodes
            .iter()
            .find(|n| n["metadata"]["name"] == format!("node-{i}"))
            .unwrap();
        for (ip, cidr) in ips.iter().zip(node["spec"]["podCIDRs"].as_array().unwrap()) {
            let net: ipnet::IpNet = cidr.as_str().unwrap().parse().unwrap();
            assert!(net.contains(ip), "{ip} not in {net}");
        }
        let host_ips: Vec<&str> = p["status"]["hostIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["ip"].as_str().unwrap())
            .collect();
        assert_eq!(
            host_ips,
            [format!("203.0.113.1{i}"), format!("2001:db8:1::1{i}")]
        );
        urls.extend(ips.iter().map(|ip| url(*ip, 8080)));
    }

    // `get pods -o wide` shows both families of a dual-stack pod.
    let wide = lab.kubectl_ok(&["get", "pods", "-o", "wide"]);
    let web1 = pod_ips(&lab.pod("web-1"));
    assert!(wide.contains(&format!("{},{}", web1[0], web1[1])), "{wide}");

    // The nodes route each other's podCIDRs, both families: node-2 reaches web-1's addresses.
    let web1 = pod_ips(&lab.pod("web-1"));
    // (A route follows the watch of the other node; the first echo may also wait for
    // neighbour discovery: a few tries.)
    for ip in &web1 {
        let mut last = String::new();
        let reached = eventually(Duration::from_secs(20), || {
            let out = lab.exec("node-2", &["ping", "-c1", "-W2", &ip.to_string()]);
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            out.status.success().then_some(())
        });
        assert!(reached.is_some(), "node-2 cannot reach {ip}: {last}");
    }

    // A client on every node fetches from every server on both addresses.
    for i in 1..=3 {
        lab.apply(&client_pod(
            &format!("client-{i}"),
            &format!("node-{i}"),
            &urls,
        ));
    }
    for i in 1..=3 {
        let name = format!("client-{i}");
        let p = lab.wait_phase(&name, "Succeeded");
        let code = &p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"];
        assert_eq!(code, 0, "{name}: {p}");
    }

    // Nothing is masqueraded inside the cluster: the servers' logs show the clients' pod IPs.
    // (python's http.server logs the peer address of every request.)

    // A restarted agent adopts its pods: same addresses, same process.
    let before = lab.pod("web-1");
    let pidfile = lab.path().join("run/node-1.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let out = lab.dualstack(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_secs(2));
    let after = lab.wait_running("web-1", true);
    assert_eq!(pod_ips(&before), pod_ips(&after));
    assert_eq!(
        before["status"]["containerStatuses"][0]["containerID"],
        after["status"]["containerStatuses"][0]["containerID"]
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);

    // Deleting a pod frees its addresses: a new pod on the node may get them again, and the
    // IPAM store no longer holds them.
    let freed = pod_ips(&lab.pod("web-2"));
    lab.kubectl_ok(&["delete", "pod", "web-2", "--wait=true", "--timeout=60s"]);
    // (As with kubelet, the network may be released just after the API object is gone.)
    let released = eventually(Duration::from_secs(10), || {
        let held = ipam_reserved(&lab.path().join("nodes/node-2"));
        freed.iter().all(|ip| !held.contains(ip)).then_some(())
    });
    assert!(
        released.is_some(),
        "{freed:?} still reserved after delete: {:?}\n{}",
        ipam_reserved(&lab.path().join("nodes/node-2")),
        lab.logs()
    );

    drop(lab);
    assert_eq!(host_links(), host_links_before, "links on the host changed");
}

/// Every address the node's IPAM store holds (files named after addresses, anywhere under
/// the node's root dir).
fn ipam_reserved(root: &Path) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(ip) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse().ok())
            {
                out.insert(ip);
            }
        }
    }
    out
}

fn host_links() -> String {
    let out = Command::new("ip").args(["-br", "link"]).output().unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    lines.sort();
    lines.join(" ")
}

/// An IPv6-primary lab (ranges given IPv6 first): nodes list their IPv6 InternalIP first, and
/// pods list IPv6 first in `podIPs` (the seed's known issue, kubenet forcing IPv4 first, fixed).
#[test]
fn pods_of_an_ipv6_primary_lab_list_ipv6_first() {
    let lab = Lab::up(
        "ds-lab-",
        1,
        &[
            "--service-cluster-ip-range=fd00::/108,10.0.0.0/16",
            "--cluster-cidr=fc00::/48,10.244.0.0/16",
        ],
    );
    let n = &nodes_json(&lab)[0];
    let first: IpAddr = n["status"]["addresses"][0]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(family(&first), 6);
    lab.apply(&web_pod("web", "node-1", "app: web"));
    let p = lab.wait_running("web", false);
    let ips = pod_ips(&p);
    assert_eq!(ips.iter().map(family).collect::<Vec<_>>(), [6, 4], "{p}");
    assert_eq!(
        p["status"]["podIP"].as_str(),
        Some(ips[0].to_string().as_str())
    );
    assert_eq!(p["status"]["hostIP"].as_str(), Some("2001:db8:1::11"));

    // The `kubernetes` Service is of the primary family, IPv6 here: its endpoint is node-1's
    // IPv6 address, and a pod reaches the API through it.
    let slice = lab.json(&["get", "endpointslice", "-n", "default", "kubernetes"]);
    assert_eq!(slice["addressType"], "IPv6", "{slice}");
    assert_eq!(slice["endpoints"][0]["addresses"][0], "2001:db8:1::11");
    let out = reach_the_api_from_a_pod(&lab, "api-client", "node-1");
    assert!(out.contains("\"name\":\"node-1\""), "{out}");
    assert!(out.contains("\"gitVersion\""), "{out}");
}

/// In-cluster clients: pods reach the API server through the `kubernetes` Service, by its DNS
/// name and by its cluster IP, with TLS checked against the cluster CA (the serving
/// certificate names the Service): from node-1, where the control plane answers, and from
/// node-2, across the segment.
#[test]
fn pods_reach_the_api_server_through_the_kubernetes_service() {
    let lab = Lab::up("ds-lab-", 2, &[]);
    let slice = lab.json(&["get", "endpointslice", "-n", "default", "kubernetes"]);
    assert_eq!(slice["addressType"], "IPv4", "{slice}");
    assert_eq!(slice["endpoints"][0]["addresses"][0], "203.0.113.11");
    for node in ["node-1", "node-2"] {
        let out = reach_the_api_from_a_pod(&lab, &format!("api-client-{node}"), node);
        assert!(
            out.contains("\"name\":\"node-1\"") && out.contains("\"name\":\"node-2\""),
            "from {node}: {out}"
        );
        assert!(out.contains("\"gitVersion\""), "from {node}: {out}");
    }
}

/// `kubectl run` without a node: the scheduler binds the pod and its node runs it.
#[test]
fn kubectl_run_without_a_node_lands_on_a_node_and_runs() {
    let lab = Lab::up("ds-lab-", 2, &[]);
    lab.kubectl_ok(&[
        "run",
        "sleeper",
        "--image=none",
        "--restart=Never",
        "--command",
        "--",
        "sleep",
        "1000",
    ]);
    let p = lab.wait_running("sleeper", false);
    let node = p["spec"]["nodeName"].as_str().unwrap();
    assert!(node == "node-1" || node == "node-2", "{p}");
    assert_eq!(pod_ips(&p).len(), 2);
}

/// A readiness probe that fails takes the pod out of the Service's EndpointSlices of both
/// families; when it passes again the pod is back in both.
#[test]
fn a_failing_readiness_probe_takes_the_pod_out_of_both_families_slices() {
    let lab = Lab::up("ds-lab-", 1, &[]);
    let marker = "/tmp/ready-".to_string() + &lab.path().file_name().unwrap().to_string_lossy();
    let _ = std::fs::remove_file(&marker);
    lab.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: flappy
  labels: {{app: flappy}}
spec:
  nodeName: node-1
  containers:
  - name: main
    image: none
    command: ["sleep", "1000"]
    readinessProbe:
      exec:
        command: ["test", "-e", "{marker}"]
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: flappy
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {{app: flappy}}
  ports:
  - port: 80
"#
    ));
    let ready_in_both = |want: bool| {
        eventually(Duration::from_secs(30), || {
            let slices = lab.json(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=flappy",
            ]);
            let mut fams = BTreeSet::new();
            for s in slices["items"].as_array().unwrap() {
                for e in s["endpoints"].as_array().into_iter().flatten() {
                    if e["conditions"]["ready"] == true {
                        fams.insert(s["addressType"].as_str().unwrap().to_string());
                    }
                }
            }
            let both = fams.len() == 2;
            let none = fams.is_empty();
            ((want && both) || (!want && none)).then_some(())
        })
    };
    lab.wait_running("flappy", false);
    assert!(
        ready_in_both(false).is_some(),
        "not ready yet, so in no slice as ready"
    );
    std::fs::write(&marker, "").unwrap();
    assert!(
        ready_in_both(true).is_some(),
        "ready in the IPv4 and the IPv6 slice"
    );
    std::fs::remove_file(&marker).unwrap();
    assert!(
        ready_in_both(false).is_some(),
        "out of both slices after the probe fails"
    );
    // Each failure is kubelet's `Unhealthy` event (counted on one Event; `test -e` says
    // nothing, so the message ends with the empty output).
    let unhealthy = eventually(Duration::from_secs(20), || {
        lab.json(&["get", "events"])["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["involvedObject"]["name"] == "flappy"
                    && e["reason"] == "Unhealthy"
                    && e["message"] == "Readiness probe failed: "
            })
            .cloned()
    })
    .expect("an Unhealthy event for flappy");
    assert_eq!(unhealthy["type"], "Warning");
    assert_eq!(unhealthy["message"], "Readiness probe failed: ");
    assert_eq!(
        unhealthy["involvedObject"]["fieldPath"],
        "spec.containers{main}"
    );
}

/// The agent as a CNI runtime with Debian's reference plugins (`bridge` + `host-local`, one
/// range per family) in place of ours: a conflist dropped into the node's conf dir before any
/// pod comes first in order and is used; pods get both addresses and reach each other across
/// nodes on both.
#[test]
fn with_the_reference_cni_plugins_pods_get_both_families_and_reach_each_other() {
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "needs Debian's containernetworking-plugins (scripts/test installs them)"
    );
    let lab = Lab::up("ds-lab-", 2, &[]);
    for n in nodes_json(&lab) {
        let name = n["metadata"]["name"].as_str().unwrap();
        let cidrs: Vec<&str> = n["spec"]["podCIDRs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let node_dir = lab.path().join("nodes").join(name);
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "reference",
            "plugins": [{
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": cidrs[0]}], [{"subnet": cidrs[1]}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                    "dataDir": node_dir.join("reference-ipam"),
                }
            }]
        });
        std::fs::write(
            node_dir.join("net.d/00-reference.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
    }
    lab.apply(&web_pod("web", "node-1", "app: web"));
    let p = lab.wait_running("web", true);
    let ips = pod_ips(&p);
    assert_eq!(ips.iter().map(family).collect::<Vec<_>>(), [4, 6], "{p}");
    let held = ipam_reserved(&lab.path().join("nodes/node-1/reference-ipam"));
    assert!(
        ips.iter().all(|ip| held.contains(ip)),
        "host-local holds {held:?}"
    );
    let urls: Vec<String> = ips.iter().map(|ip| url(*ip, 8080)).collect();
    lab.apply(&client_pod("client", "node-2", &urls));
    let p = lab.wait_phase("client", "Succeeded");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
}

/// `dualstack down` removes every process, mount and file of the lab, and is safe twice.
#[test]
fn down_leaves_nothing_behind_and_is_safe_to_run_twice() {
    let lab = Lab::up("ds-lab-", 1, &[]);
    lab.apply(&web_pod("web", "node-1", "app: web"));
    lab.wait_running("web", false);
    let dir = lab.path().to_path_buf();
    let down = lab.dualstack(&["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let again = lab.dualstack(&["down"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(dir.to_str().unwrap()),
        "mounts left under {}",
        dir.display()
    );
    // No process still refers to the lab (agents, shims, pods, the server).
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            assert!(!cmd.contains(dir.to_str().unwrap()), "process left: {cmd}");
        }
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left: {left:?}");
    // `lab` drops here and runs `down` a third time.
}

/// What a reboot does to a lab: every process of it dies and every namespace with them (the
/// namespace files stay, unmounted); the data dir stays.
fn simulate_reboot(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| p.starts_with(dir.to_str().unwrap()))
        .collect();
    use std::os::unix::fs::MetadataExt;
    let inodes: BTreeSet<u64> = points
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok().map(|m| m.ino()))
        .collect();
    let mut pids: Vec<String> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let in_lab =
            std::fs::metadata(e.path().join("ns/net")).is_ok_and(|m| inodes.contains(&m.ino()));
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mentions = String::from_utf8_lossy(&cmd).contains(dir.to_str().unwrap());
        if in_lab || mentions {
            pids.push(name);
        }
    }
    if !pids.is_empty() {
        Command::new("kill").arg("-9").args(&pids).status().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        Command::new("umount").args(["-l", &p]).status().unwrap();
    }
}

/// `up` again after a reboot brings the same cluster back from its data: the same Service
/// with the same cluster IPs, the nodes Ready, and the pod running again in a new sandbox with
/// two addresses (its container restarted, as kubelet restarts containers after a reboot).
#[test]
fn up_after_a_reboot_brings_the_same_cluster_back() {
    let lab = Lab::up("ds-lab-", 1, &[]);
    lab.apply(&web_pod("web", "node-1", "app: web"));
    lab.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ipFamilyPolicy: RequireDualStack\n  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    );
    lab.wait_running("web", true);
    let ips_before = lab.json(&["get", "svc", "web"])["spec"]["clusterIPs"].clone();
    simulate_reboot(lab.path());
    let out = lab.dualstack(&["up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        lab.json(&["get", "svc", "web"])["spec"]["clusterIPs"],
        ips_before
    );
    let p = eventually(Duration::from_secs(60), || {
        let p = lab.pod("web");
        let restarted = p["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .is_some_and(|n| n >= 1);
        let ready = conditions(&p, "Ready") == Some("True");
        (restarted && ready && pod_ips(&p).len() == 2).then_some(p)
    })
    .unwrap_or_else(|| {
        panic!(
            "pod not back after the reboot: {}\n{}",
            lab.pod("web"),
            lab.logs()
        )
    });
    // It answers in its new sandbox: a client pod reaches it on both addresses.
    let urls: Vec<String> = pod_ips(&p).iter().map(|ip| url(*ip, 8080)).collect();
    lab.apply(&client_pod("client", "node-1", &urls));
    lab.wait_phase("client", "Succeeded");
}

/// Without root, `up` says what it needs.
#[test]
fn up_without_root_says_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(binary())
        .args(["up", "--data-dir"])
        .arg(dir.path().join("lab"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dualstack up needs root"), "{err}");
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
}
