//! The controllers against the real server (built in, and standalone `controller-manager`
//! processes): node IPAM in both `--cluster-cidr` orders, exhaustion, restarts; EndpointSlices
//! and Endpoints following dual-stack pods; LoadBalancer addresses per family; leader failover;
//! flag validation.
//!
//! Address plan (see `common/mod.rs`): Services `10.0.0.0/16` + `fd00:10::/108`, pods
//! `10.244.0.0/16` + `fd00:10:244::/56`, load balancers `198.51.100.0/24` +
//! `2001:db8:1b::/120`. There is no kubelet: pods are created with `spec.nodeName` and their
//! IPs and readiness are written through the `status` subresource, as a kubelet would.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, binary, eventually, strip_ansi};
use serde_json::{Value, json};

const SERVICES: &str = "--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108";
const SERVICES_V6_FIRST: &str = "--service-cluster-ip-range=fd00:10::/108,10.0.0.0/16";
const PODS: &str = "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56";
const PODS_V6_FIRST: &str = "--cluster-cidr=fd00:10:244::/56,10.244.0.0/16";
const WAIT: Duration = Duration::from_secs(15);

// ---- API helpers ----------------------------------------------------------------------

fn call(s: &TestServer, method: &str, path: &str, body: Option<&Value>, ct: &str) -> (u16, Value) {
    s.json_call(method, path, body, ct)
}

fn create(s: &TestServer, path: &str, body: Value) -> Value {
    s.create_json(path, body)
}

fn get(s: &TestServer, path: &str) -> Option<Value> {
    let (code, out) = call(s, "GET", path, None, "");
    (code == 200).then_some(out)
}

fn merge(s: &TestServer, path: &str, body: Value) -> Value {
    let (code, out) = call(
        s,
        "PATCH",
        path,
        Some(&body),
        "application/merge-patch+json",
    );
    assert_eq!(code, 200, "PATCH {path}: {out}");
    out
}

fn delete(s: &TestServer, path: &str) {
    let (code, out) = call(s, "DELETE", path, None, "");
    assert!(code == 200 || code == 202, "DELETE {path}: {code} {out}");
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

// ---- nodes ----------------------------------------------------------------------------

fn create_node(s: &TestServer, name: &str) {
    create(s, "/api/v1/nodes", json!({"metadata": {"name": name}}));
}

/// Waits for the node's podCIDRs; checks `podCIDR == podCIDRs[0]`.
fn pod_cidrs(s: &TestServer, name: &str) -> Vec<String> {
    let cidrs = eventually(WAIT, || {
        let n = get(s, &format!("/api/v1/nodes/{name}"))?;
        let c = strings(&n["spec"]["podCIDRs"]);
        if c.is_empty() {
            return None;
        }
        assert_eq!(
            n["spec"]["podCIDR"].as_str(),
            Some(c[0].as_str()),
            "podCIDR of {name}"
        );
        Some(c)
    });
    cidrs.unwrap_or_else(|| panic!("node {name} got no podCIDRs; server log:\n{}", s.log()))
}

#[test]
fn nodes_get_one_cidr_per_family_in_flag_order_round_robin_and_after_restarts() {
    let mut s = TestServer::start(&[SERVICES, PODS, "--allocate-node-cidrs"]);
    create_node(&s, "node-a");
    assert_eq!(
        pod_cidrs(&s, "node-a"),
        ["10.244.0.0/24", "fd00:10:244::/64"]
    );
    create_node(&s, "node-b");
    assert_eq!(
        pod_cidrs(&s, "node-b"),
        ["10.244.1.0/24", "fd00:10:244:1::/64"]
    );
    // A node that comes with its own podCIDRs keeps them; they are never handed out again.
    create(
        &s,
        "/api/v1/nodes",
        json!({"metadata": {"name": "node-own"},
               "spec": {"podCIDRs": ["10.244.2.0/24", "fd00:10:244:2::/64"]}}),
    );
    // Release on delete; the round-robin allocator does not reuse index 0 before wrapping.
    delete(&s, "/api/v1/nodes/node-a");
    create_node(&s, "node-c");
    assert_eq!(
        pod_cidrs(&s, "node-c"),
        ["10.244.3.0/24", "fd00:10:244:3::/64"]
    );

    // After a restart occupancy is rebuilt from the nodes and the scan starts over at 0,
    // which node-a freed.
    s.restart(None);
    create_node(&s, "node-d");
    assert_eq!(
        pod_cidrs(&s, "node-d"),
        ["10.244.0.0/24", "fd00:10:244::/64"]
    );
    create_node(&s, "node-e");
    assert_eq!(
        pod_cidrs(&s, "node-e"),
        ["10.244.4.0/24", "fd00:10:244:4::/64"]
    );
    assert_eq!(
        pod_cidrs(&s, "node-own"),
        ["10.244.2.0/24", "fd00:10:244:2::/64"]
    );
}

#[test]
fn ipv6_first_cluster_cidrs_give_ipv6_first_pod_cidrs() {
    let s = TestServer::start(&[SERVICES_V6_FIRST, PODS_V6_FIRST, "--allocate-node-cidrs"]);
    create_node(&s, "node-a");
    assert_eq!(
        pod_cidrs(&s, "node-a"),
        ["fd00:10:244::/64", "10.244.0.0/24"]
    );
    create_node(&s, "node-b");
    assert_eq!(
        pod_cidrs(&s, "node-b"),
        ["fd00:10:244:1::/64", "10.244.1.0/24"]
    );
}

fn events(s: &TestServer, reason: &str, object: &str) -> Vec<Value> {
    get(s, "/api/v1/namespaces/default/events")
        .map(|l| {
            l["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == object)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_exhausted_family_records_cidr_not_available_and_leaves_the_node_untouched() {
    // IPv6 first with room; IPv4 second with only two /25s.
    let s = TestServer::start(&[
        SERVICES_V6_FIRST,
        "--cluster-cidr=fd00:10:244::/56,10.244.0.0/24",
        "--node-cidr-mask-size-ipv4=25",
        "--allocate-node-cidrs",
    ]);
    create_node(&s, "node-a");
    assert_eq!(
        pod_cidrs(&s, "node-a"),
        ["fd00:10:244::/64", "10.244.0.0/25"]
    );
    create_node(&s, "node-b");
    assert_eq!(
        pod_cidrs(&s, "node-b"),
        ["fd00:10:244:1::/64", "10.244.0.128/25"]
    );
    create_node(&s, "node-c");
    let ev = eventually(WAIT, || events(&s, "CIDRNotAvailable", "node-c").pop())
        .unwrap_or_else(|| panic!("no CIDRNotAvailable event; log:\n{}", s.log()));
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["message"], "Node node-c status is now: CIDRNotAvailable");
    assert_eq!(ev["involvedObject"]["kind"], "Node");
    assert_eq!(ev["source"]["component"], "cidrAllocator");
    // No partial update: not even the IPv6 CIDR.
    let c = get(&s, "/api/v1/nodes/node-c").unwrap();
    assert!(
        c["spec"]["podCIDRs"].is_null() && c["spec"]["podCIDR"].is_null(),
        "{c}"
    );
    // Freeing node-a's CIDRs lets node-c through; IPv6 continues round-robin (index 2 was
    // taken and given back for node-c's failed attempt).
    delete(&s, "/api/v1/nodes/node-a");
    assert_eq!(
        pod_cidrs(&s, "node-c"),
        ["fd00:10:244:3::/64", "10.244.0.0/25"]
    );
}

// ---- standalone controller-manager ------------------------------------------------------

/// A `dualstack controller-manager` child process; killed on drop.
struct ControllerManager {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl ControllerManager {
    fn start(kubeconfig: &Path, args: &[&str]) -> ControllerManager {
        let mut child = Command::new(binary())
            .arg("controller-manager")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn controller-manager");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        ControllerManager {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The value of `key=` on the first log line containing `message`.
    fn logged(&self, message: &str, key: &str) -> Option<String> {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .map(|l| strip_ansi(l))
            .find(|l| l.contains(message))?;
        let at = line.find(&format!("{key}="))? + key.len() + 1;
        Some(
            line[at..]
                .split_whitespace()
                .next()?
                .trim_matches('"')
                .to_string(),
        )
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn lease_holder(s: &TestServer) -> Option<String> {
    get(
        s,
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/dualstack-controller-manager",
    )?["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(String::from)
}

#[test]
fn a_standby_controller_manager_takes_over_within_the_lease_duration_after_sigkill() {
    let s = TestServer::start(&[SERVICES, "--controllers=-*"]);
    let args = [
        "--allocate-node-cidrs",
        PODS,
        SERVICES,
        "--metrics-bind-address=127.0.0.1:0",
    ];
    let mut first = ControllerManager::start(&s.kubeconfig, &args);
    let holder = eventually(WAIT, || lease_holder(&s))
        .unwrap_or_else(|| panic!("no leader; log:\n{}", first.log()));
    let mut second = ControllerManager::start(&s.kubeconfig, &args);
    let id_of = |cm: &ControllerManager| {
        eventually(WAIT, || {
            cm.logged("attempting to acquire leader lease", "identity")
        })
        .expect("identity logged")
    };
    let (id1, id2) = (id_of(&first), id_of(&second));
    assert_eq!(holder, id1, "the first to start leads");

    // Only the leader acts.
    create_node(&s, "node-1");
    assert_eq!(
        pod_cidrs(&s, "node-1"),
        ["10.244.0.0/24", "fd00:10:244::/64"]
    );
    assert!(first.log().contains("node ipam controller started"));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !second.log().contains("successfully acquired lease")
            && !second.log().contains("node ipam controller started"),
        "the standby must not act:\n{}",
        second.log()
    );

    // The leader's metrics endpoint serves the node IPAM metrics.
    let addr =
        eventually(WAIT, || first.logged("serving metrics", "addr")).expect("metrics address");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{addr}/metrics")])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("node_ipam_controller_cidrset_usage_cidrs{clusterCIDR=\"10.244.0.0/16\"} 0.00390625")
            && metrics.contains("node_ipam_controller_cidrset_cidrs_allocations_total{clusterCIDR=\"fd00:10:244::/56\"} 1")
            && metrics.contains("leader_election_master_status{name=\"dualstack-controller-manager\"} 1"),
        "{metrics}"
    );

    // SIGKILL: no release. The standby must act within the lease duration (15 s, counted
    // from the leader's last renewal, which is at or before its death).
    first.kill9();
    let killed = Instant::now();
    create_node(&s, "node-2");
    let cidrs = eventually(Duration::from_secs(25), || {
        let n = get(&s, "/api/v1/nodes/node-2")?;
        let c = strings(&n["spec"]["podCIDRs"]);
        (!c.is_empty()).then_some(c)
    })
    .unwrap_or_else(|| panic!("the standby never acted; its log:\n{}", second.log()));
    let took = killed.elapsed();
    eprintln!("standby acted {took:?} after SIGKILL of the leader");
    assert_eq!(
        cidrs,
        ["10.244.1.0/24", "fd00:10:244:1::/64"],
        "occupancy rebuilt from node-1"
    );
    // 15 s lease + 0.5 s for the watch, the patch and this test's polling.
    assert!(took < Duration::from_millis(15_500), "took {took:?}");
    assert_eq!(lease_holder(&s).as_deref(), Some(id2.as_str()));
    second.kill9();
}

#[test]
fn node_ipam_skips_nodes_with_foreign_or_overlapping_cidrs_and_keeps_allocating_after_a_restart() {
    let mut s = TestServer::start(&[SERVICES, PODS, "--allocate-node-cidrs"]);
    create_node(&s, "node-a");
    assert_eq!(
        pod_cidrs(&s, "node-a"),
        ["10.244.0.0/24", "fd00:10:244::/64"]
    );
    // The admin may set podCIDRs: one outside --cluster-cidr, one overlapping node-a's.
    create(
        &s,
        "/api/v1/nodes",
        json!({"metadata": {"name": "stray"}, "spec": {"podCIDRs": ["10.99.0.0/24"]}}),
    );
    create(
        &s,
        "/api/v1/nodes",
        json!({"metadata": {"name": "twin"},
               "spec": {"podCIDRs": ["10.244.0.0/23", "fd00:10:244::/64"]}}),
    );
    for (node, text) in [
        (
            "stray",
            "failed to mark cidr[10.99.0.0/24] at idx [0] as occupied for node: stray: cidr 10.99.0.0/24 is out the range of cluster cidr 10.244.0.0/16",
        ),
        (
            "twin",
            "failed to mark cidr[10.244.0.0/23] at idx [0] as occupied for node: twin: it overlaps CIDRs already allocated",
        ),
    ] {
        let ev = eventually(WAIT, || {
            events(&s, "CIDRNotAvailable", node).into_iter().next()
        })
        .unwrap_or_else(|| panic!("no event for {node}; log:\n{}", s.log()));
        assert_eq!(ev["message"], text);
        assert_eq!(ev["type"], "Warning");
    }
    create_node(&s, "node-b");
    assert_eq!(
        pod_cidrs(&s, "node-b"),
        ["10.244.1.0/24", "fd00:10:244:1::/64"]
    );
    // After a restart node IPAM starts anyway (it stopped here before) and keeps allocating.
    s.restart(None);
    create_node(&s, "node-c");
    assert_eq!(
        pod_cidrs(&s, "node-c"),
        ["10.244.2.0/24", "fd00:10:244:2::/64"]
    );
    let log = s.log();
    assert!(
        log.contains("skipping a node with podCIDRs this allocator cannot occupy")
            && !log.contains("failed to start node ipam controller"),
        "{log}"
    );
    // Deleting the overlapping node frees nothing of node-a's.
    delete(&s, "/api/v1/nodes/twin");
    create_node(&s, "node-d");
    assert_eq!(
        pod_cidrs(&s, "node-d"),
        ["10.244.3.0/24", "fd00:10:244:3::/64"]
    );
}

#[test]
fn bad_flags_exit_non_zero_with_upstream_messages_before_anything_starts() {
    // The kubeconfig does not exist: a flag error must come first.
    let rows: &[(&[&str], &str)] = &[
        (
            &["--allocate-node-cidrs"],
            "Controller: Must specify --cluster-cidr if --allocate-node-cidrs is set",
        ),
        (
            &[
                "--allocate-node-cidrs",
                "--cluster-cidr=10.0.0.0/16,10.1.0.0/16",
            ],
            "len of ClusterCIDRs==2 and they are not configured as dual stack (at least one from each IPFamily",
        ),
        (
            &["--allocate-node-cidrs", PODS, "--node-cidr-mask-size=24"],
            "usage of --node-cidr-mask-size is not allowed with dual-stack clusters",
        ),
        (
            &[
                "--allocate-node-cidrs",
                PODS,
                "--node-cidr-mask-size-ipv6=120",
            ],
            "New CIDR set failed; the node CIDR size is too big",
        ),
        (
            &["--service-cluster-ip-range=10.0.0.0/16,10.1.0.0/16,fd00::/108"],
            "--service-cluster-ip-range can not contain more than two entries",
        ),
        (
            &["--service-cluster-ip-range=10.0.0.0/16,10.1.0.0/16"],
            "serviceCIDR and secondaryServiceCIDR are not dualstack (from different IPfamiles)",
        ),
        (
            &["--loadbalancer-ip-pool=10.0.0.9-10.0.0.1"],
            "invalid argument \"10.0.0.9-10.0.0.1\" for \"--loadbalancer-ip-pool\" flag:",
        ),
        (
            &["--controllers=*,bogus"],
            "\"bogus\" is not in the list of known controllers",
        ),
        (
            &["--leader-elect-lease-duration=10s"],
            "leaseDuration must be greater than renewDeadline",
        ),
        (
            &["--cidr-allocator-type=CloudAllocator"],
            "--cidr-allocator-type is set to 'CloudAllocator' but cloud provider is not configured",
        ),
        (
            &["--max-endpoints-per-slice=0"],
            "max-endpoints-per-slice must not be less than 1, but got 0",
        ),
        (
            &["--feature-gates=Bogus=true"],
            "unrecognized feature gate: Bogus",
        ),
    ];
    for (args, want) in rows {
        let out = Command::new(binary())
            .arg("controller-manager")
            .args(["--kubeconfig", "/nonexistent/kubeconfig"])
            .args(*args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: wanted {want:?}, got {err}");
    }
    // The server validates its controller flags before it starts too.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["server", "--secure-port", "0", "--data-dir"])
        .arg(dir.path())
        .arg("--loadbalancer-ip-pool=bogus")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid argument \"bogus\" for \"--loadbalancer-ip-pool\" flag:")
    );
    assert!(!dir.path().join("store.redb").exists(), "nothing started");
}

// ---- EndpointSlices and Endpoints -------------------------------------------------------

fn service(name: &str, policy: &str, families: &[&str]) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"team": "net"}},
        "spec": {
            "ipFamilyPolicy": policy,
            "ipFamilies": families,
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]
        }
    })
}

fn pod(name: &str, port: i64) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": "c", "image": "registry.example/agnhost:2.45",
                            "ports": [{"name": "http", "containerPort": port}]}]
        }
    })
}

/// Writes what a kubelet would: phase, both pod IPs (IPv4 first), the Ready condition.
fn set_status(s: &TestServer, name: &str, ips: &[&str], ready: bool) {
    let ts = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string();
    let podips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    merge(
        s,
        &format!("/api/v1/namespaces/default/pods/{name}/status"),
        json!({"status": {
            "phase": "Running",
            "podIP": ips[0],
            "podIPs": podips,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "lastTransitionTime": ts}]
        }}),
    );
}

/// The slices of `svc` managed by the controller.
fn slices(s: &TestServer, svc: &str) -> Vec<Value> {
    let sel = format!(
        "kubernetes.io/service-name%3D{svc},endpointslice.kubernetes.io/managed-by%3Dendpointslice-controller.k8s.io"
    );
    get(
        s,
        &format!("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector={sel}"),
    )
    .and_then(|l| l["items"].as_array().cloned())
    .unwrap_or_default()
}

/// Per address type: the set of (address, ready, serving, terminating, port).
type View = Vec<(String, BTreeSet<(String, bool, bool, bool, i64)>)>;

fn view(s: &TestServer, svc: &str) -> View {
    let mut by_type: std::collections::BTreeMap<String, BTreeSet<_>> = Default::default();
    for sl in slices(s, svc) {
        let t = sl["addressType"].as_str().unwrap().to_string();
        let entry = by_type.entry(t).or_default();
        let port = sl["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in sl["endpoints"].as_array().cloned().unwrap_or_default() {
            let c = &e["conditions"];
            entry.insert((
                e["addresses"][0].as_str().unwrap().to_string(),
                c["ready"].as_bool().unwrap(),
                c["serving"].as_bool().unwrap(),
                c["terminating"].as_bool().unwrap(),
                port,
            ));
        }
    }
    by_type.into_iter().collect()
}

/// Expected endpoints: (address, ready, serving, terminating, port).
type Ep<'a> = (&'a str, bool, bool, bool, i64);
/// Expected slices: per address type, its endpoints.
type Want<'a> = [(&'a str, &'a [Ep<'a>])];

fn expect_view(s: &TestServer, svc: &str, want: &Want<'_>) {
    let want: View = want
        .iter()
        .map(|(t, eps)| {
            (
                t.to_string(),
                eps.iter()
                    .map(|(a, r, sv, te, p)| (a.to_string(), *r, *sv, *te, *p))
                    .collect(),
            )
        })
        .collect();
    let mut last = View::new();
    let ok = eventually(WAIT, || {
        last = view(s, svc);
        (last == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "slices of {svc}:\n got  {last:?}\n want {want:?}\n{}",
        s.log()
    );
}

/// (ready, not ready) addresses of the Endpoints object.
fn endpoints(s: &TestServer, name: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let e = get(s, &format!("/api/v1/namespaces/default/endpoints/{name}")).unwrap_or(Value::Null);
    let mut ready = BTreeSet::new();
    let mut not = BTreeSet::new();
    for sub in e["subsets"].as_array().cloned().unwrap_or_default() {
        for a in sub["addresses"].as_array().cloned().unwrap_or_default() {
            ready.insert(a["ip"].as_str().unwrap().to_string());
        }
        for a in sub["notReadyAddresses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            not.insert(a["ip"].as_str().unwrap().to_string());
        }
    }
    (ready, not)
}

fn expect_endpoints(s: &TestServer, name: &str, ready: &[&str], not: &[&str]) {
    let want = (
        ready.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        not.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
    );
    let mut last = Default::default();
    let ok = eventually(WAIT, || {
        last = endpoints(s, name);
        (last == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "Endpoints {name}: got {last:?}, want {want:?}"
    );
}

#[test]
fn slices_of_both_families_follow_pods_becoming_ready_unready_and_deleted() {
    let s = TestServer::start(&[SERVICES]);
    let ns = "/api/v1/namespaces/default";
    create(
        &s,
        &format!("{ns}/services"),
        service("web", "RequireDualStack", &["IPv4", "IPv6"]),
    );
    create(
        &s,
        &format!("{ns}/services"),
        service("web6", "RequireDualStack", &["IPv6", "IPv4"]),
    );
    // Before any pod has an IP: one placeholder per family.
    expect_view(&s, "web", &[("IPv4", &[]), ("IPv6", &[])]);
    for sl in slices(&s, "web") {
        assert_eq!(sl["ports"], json!([]), "placeholder: {sl}");
        assert_eq!(sl["metadata"]["generateName"], "web-");
    }

    // The named target port resolves per pod: 8080 on p1, 9090 on p2.
    create(&s, &format!("{ns}/pods"), pod("p1", 8080));
    create(&s, &format!("{ns}/pods"), pod("p2", 9090));
    set_status(&s, "p1", &["10.244.0.5", "fd00:10:244::5"], false);
    expect_view(
        &s,
        "web",
        &[
            ("IPv4", &[("10.244.0.5", false, false, false, 8080)]),
            ("IPv6", &[("fd00:10:244::5", false, false, false, 8080)]),
        ],
    );
    expect_endpoints(&s, "web", &[], &["10.244.0.5"]);

    set_status(&s, "p1", &["10.244.0.5", "fd00:10:244::5"], true);
    set_status(&s, "p2", &["10.244.0.6", "fd00:10:244::6"], true);
    let both_ready: &Want<'_> = &[
        (
            "IPv4",
            &[
                ("10.244.0.5", true, true, false, 8080),
                ("10.244.0.6", true, true, false, 9090),
            ],
        ),
        (
            "IPv6",
            &[
                ("fd00:10:244::5", true, true, false, 8080),
                ("fd00:10:244::6", true, true, false, 9090),
            ],
        ),
    ];
    expect_view(&s, "web", both_ready);
    expect_view(&s, "web6", both_ready);
    // Endpoints: the primary family only.
    expect_endpoints(&s, "web", &["10.244.0.5", "10.244.0.6"], &[]);
    expect_endpoints(&s, "web6", &["fd00:10:244::5", "fd00:10:244::6"], &[]);

    // Labels, owner, node name, target, trigger time.
    let sl = slices(&s, "web")
        .into_iter()
        .find(|sl| sl["addressType"] == "IPv6" && sl["ports"][0]["port"] == 8080)
        .unwrap();
    let labels = &sl["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/service-name"], "web");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(labels["team"], "net");
    assert_eq!(sl["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert!(
        sl["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string(),
        "{sl}"
    );
    assert_eq!(sl["ports"][0]["name"], "http");
    assert_eq!(sl["ports"][0]["protocol"], "TCP");
    let ep = &sl["endpoints"][0];
    assert_eq!(ep["nodeName"], "node-a");
    assert_eq!(ep["targetRef"]["kind"], "Pod");
    assert_eq!(ep["targetRef"]["name"], "p1");

    // Unready again.
    set_status(&s, "p1", &["10.244.0.5", "fd00:10:244::5"], false);
    expect_view(
        &s,
        "web",
        &[
            (
                "IPv4",
                &[
                    ("10.244.0.5", false, false, false, 8080),
                    ("10.244.0.6", true, true, false, 9090),
                ],
            ),
            (
                "IPv6",
                &[
                    ("fd00:10:244::5", false, false, false, 8080),
                    ("fd00:10:244::6", true, true, false, 9090),
                ],
            ),
        ],
    );
    expect_endpoints(&s, "web", &["10.244.0.6"], &["10.244.0.5"]);

    // Deleting p2 (bound to a node, so it terminates gracefully): terminating, still serving.
    delete(&s, &format!("{ns}/pods/p2"));
    expect_view(
        &s,
        "web",
        &[
            (
                "IPv4",
                &[
                    ("10.244.0.5", false, false, false, 8080),
                    ("10.244.0.6", false, true, true, 9090),
                ],
            ),
            (
                "IPv6",
                &[
                    ("fd00:10:244::5", false, false, false, 8080),
                    ("fd00:10:244::6", false, true, true, 9090),
                ],
            ),
        ],
    );
    expect_endpoints(&s, "web", &[], &["10.244.0.5"]);
    // The kubelet's final delete.
    delete(&s, &format!("{ns}/pods/p2?gracePeriodSeconds=0"));
    delete(&s, &format!("{ns}/pods/p1?gracePeriodSeconds=0"));
    expect_view(&s, "web", &[("IPv4", &[]), ("IPv6", &[])]);
    expect_endpoints(&s, "web", &[], &[]);

    // Downgrade to IPv4 only: the IPv6 slices go.
    merge(
        &s,
        &format!("{ns}/services/web"),
        json!({"spec": {"ipFamilyPolicy": "SingleStack"}}),
    );
    expect_view(&s, "web", &[("IPv4", &[])]);

    // Deleting the Service removes its slices and its Endpoints.
    delete(&s, &format!("{ns}/services/web"));
    let gone = eventually(WAIT, || {
        (slices(&s, "web").is_empty() && get(&s, &format!("{ns}/endpoints/web")).is_none())
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "slices or Endpoints of a deleted Service remain"
    );
}

// ---- LoadBalancer ----------------------------------------------------------------------

fn lb(name: &str, policy: &str, families: &[&str]) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": policy,
            "ipFamilies": families,
            "selector": {"app": name},
            "ports": [{"port": 80}]
        }
    })
}

fn ingress(s: &TestServer, name: &str) -> Vec<String> {
    get(s, &format!("/api/v1/namespaces/default/services/{name}"))
        .map(|svc| {
            svc["status"]["loadBalancer"]["ingress"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i["ip"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_ingress(s: &TestServer, name: &str, want: &[&str]) {
    let mut last = Vec::new();
    let ok = eventually(WAIT, || {
        last = ingress(s, name);
        (last == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "ingress of {name}: got {last:?}, want {want:?}\n{}",
        s.log()
    );
}

/// The managedFields entries of an object as (manager, operation, subresource).
fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("manager"), s("operation"), s("subresource"))
        })
        .collect()
}

#[test]
fn status_writes_record_the_user_agent_product_with_subresource_status() {
    let s = TestServer::start(&[SERVICES, "--loadbalancer-ip-pool=198.51.100.0/24"]);
    let svcs = "/api/v1/namespaces/default/services";
    create(&s, svcs, lb("web", "SingleStack", &["IPv4"]));
    // The built-in LoadBalancer controller writes status.loadBalancer as kube-controller-manager.
    wait_ingress(&s, "web", &["198.51.100.1"]);
    let svc = get(&s, &format!("{svcs}/web")).expect("service");
    let status_writers: Vec<_> = managers(&svc)
        .into_iter()
        .filter(|(_, _, sub)| sub == "status")
        .collect();
    assert_eq!(
        status_writers,
        [(
            "kube-controller-manager".to_string(),
            "Update".to_string(),
            "status".to_string()
        )],
        "{svc}"
    );
    // A client's status write: the User-Agent product, else `unknown`.
    let cases = [
        (Some("python/3.12 kubernetes-client"), "python", "P1"),
        (None, "unknown", "P2"),
    ];
    for (ua, manager, condition) in cases {
        let body = json!({"status": {"conditions": [{"type": condition, "status": "True",
            "reason": "Probe", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        let mut headers = vec![("Content-Type", "application/merge-patch+json")];
        // curl sends its own User-Agent unless the header is given empty.
        headers.push(("User-Agent", ua.unwrap_or("")));
        let r = s.call(
            &s.token,
            "PATCH",
            &format!("{svcs}/web/status"),
            Some(body.to_string().as_bytes()),
            &headers,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let got = managers(&r.json());
        assert!(
            got.contains(&(manager.to_string(), "Update".into(), "status".into())),
            "{manager}: {got:?}"
        );
    }
}

#[test]
fn load_balancer_services_get_one_address_per_family_in_family_order() {
    let mut s = TestServer::start(&[
        SERVICES,
        "--loadbalancer-ip-pool=198.51.100.0/24",
        "--loadbalancer-ip-pool=2001:db8:1b::10-2001:db8:1b::20",
    ]);
    let svcs = "/api/v1/namespaces/default/services";
    create(&s, svcs, lb("dual", "RequireDualStack", &["IPv4", "IPv6"]));
    wait_ingress(&s, "dual", &["198.51.100.1", "2001:db8:1b::10"]);
    create(&s, svcs, lb("v6", "SingleStack", &["IPv6"]));
    wait_ingress(&s, "v6", &["2001:db8:1b::11"]);
    create(&s, svcs, lb("v4", "SingleStack", &["IPv4"]));
    wait_ingress(&s, "v4", &["198.51.100.2"]);
    create(&s, svcs, lb("dual6", "RequireDualStack", &["IPv6", "IPv4"]));
    wait_ingress(&s, "dual6", &["2001:db8:1b::12", "198.51.100.3"]);
    let ev =
        eventually(WAIT, || events(&s, "IPAllocated", "dual6").pop()).expect("IPAllocated event");
    assert_eq!(ev["type"], "Normal");

    // Requested addresses: the annotation (one per family) and spec.loadBalancerIP.
    let mut asked = lb("asked", "RequireDualStack", &["IPv4", "IPv6"]);
    asked["metadata"]["annotations"] =
        json!({"metallb.io/loadBalancerIPs": "2001:db8:1b::1a,198.51.100.60"});
    create(&s, svcs, asked);
    wait_ingress(&s, "asked", &["198.51.100.60", "2001:db8:1b::1a"]);
    let mut pinned = lb("pinned", "SingleStack", &["IPv4"]);
    pinned["spec"]["loadBalancerIP"] = json!("198.51.100.50");
    create(&s, svcs, pinned);
    wait_ingress(&s, "pinned", &["198.51.100.50"]);

    // Refused: outside every pool, or held by another Service; an event says why.
    let mut outside = lb("outside", "SingleStack", &["IPv4"]);
    outside["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": "203.0.113.5"});
    create(&s, svcs, outside);
    let ev = eventually(WAIT, || events(&s, "AllocationFailed", "outside").pop())
        .expect("refusal event");
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("203.0.113.5 is not in any load balancer pool range"),
        "{ev}"
    );
    let mut thief = lb("thief", "SingleStack", &["IPv4"]);
    thief["spec"]["loadBalancerIP"] = json!("198.51.100.50");
    create(&s, svcs, thief);
    let ev =
        eventually(WAIT, || events(&s, "AllocationFailed", "thief").pop()).expect("refusal event");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("already assigned to service default/pinned"),
        "{ev}"
    );

    // A foreign class is left alone.
    let mut foreign = lb("foreign", "SingleStack", &["IPv4"]);
    foreign["spec"]["loadBalancerClass"] = json!("example.com/other");
    create(&s, svcs, foreign);

    // Changing type releases: pinned's address goes to the thief, which was waiting for it.
    merge(
        &s,
        &format!("{svcs}/pinned"),
        json!({"spec": {"type": "ClusterIP", "loadBalancerIP": null}}),
    );
    wait_ingress(&s, "pinned", &[]);
    wait_ingress(&s, "thief", &["198.51.100.50"]);
    // Deleting releases too.
    delete(&s, &format!("{svcs}/v4"));
    let mut again = lb("again", "SingleStack", &["IPv4"]);
    again["spec"]["loadBalancerIP"] = json!("198.51.100.2");
    create(&s, svcs, again);
    wait_ingress(&s, "again", &["198.51.100.2"]);

    assert!(ingress(&s, "foreign").is_empty());
    assert!(ingress(&s, "outside").is_empty());
    assert!(events(&s, "IPAllocated", "foreign").is_empty());

    // Across a restart nothing is given twice: occupancy comes back from the Services.
    s.restart(None);
    create(&s, svcs, lb("after", "RequireDualStack", &["IPv4", "IPv6"]));
    wait_ingress(&s, "after", &["198.51.100.4", "2001:db8:1b::13"]);
    let mut seen = BTreeSet::new();
    for name in ["dual", "v6", "dual6", "asked", "thief", "again", "after"] {
        for ip in ingress(&s, name) {
            assert!(seen.insert(ip.clone()), "{ip} given twice");
        }
    }
    assert_eq!(seen.len(), 11);
}

/// The events recorder, as the controllers and the node agent use it, against the real
/// server: ten records of one event at once make one Event counted ten times (one record at a
/// time: none creates a second Event, none loses a count), and a 26th repeat waits for the
/// spam filter.
#[test]
fn repeats_of_one_event_recorded_at_once_are_one_event_with_their_count() {
    use dualstack_controllers::run::events::{NORMAL, Recorder};
    use k8s_openapi::api::core::v1::ObjectReference;
    let s = TestServer::start(&["--controllers=-*"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let events = rt.block_on(async {
        let rec = Arc::new(Recorder::new(s.kube_client().await, "kubelet").with_host("node-1"));
        let obj = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some("p".into()),
            uid: Some("u-1".into()),
            field_path: Some("spec.containers{c}".into()),
            ..Default::default()
        };
        let all: Vec<_> = (0..10)
            .map(|_| {
                let (rec, obj) = (rec.clone(), obj.clone());
                tokio::spawn(async move {
                    rec.record(&obj, NORMAL, "Started", "Started container c")
                        .await
                })
            })
            .collect();
        for t in all {
            t.await.unwrap();
        }
        // 26 records in all: the burst is 25.
        for _ in 0..16 {
            rec.record(&obj, NORMAL, "Started", "Started container c")
                .await;
        }
        let api: kube::Api<k8s_openapi::api::core::v1::Event> =
            kube::Api::namespaced(s.kube_client().await, "default");
        api.list(&Default::default()).await.unwrap().items
    });
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("p"))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0].count, Some(25), "{:?}", mine[0]);
    assert_eq!(
        mine[0].source.as_ref().and_then(|s| s.host.as_deref()),
        Some("node-1")
    );
}
