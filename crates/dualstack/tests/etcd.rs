//! Several real `dualstack server` processes on one real etcd cluster (Debian's `etcd`, started
//! on loopback by `dualstack_store::etcd::local::LocalEtcd`): allocations stay unique when
//! creates race on different servers, faults are reported, acknowledged writes survive the
//! loss of an etcd member and of a server, and the controllers fail over.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use dualstack_store::etcd::local::LocalEtcd;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams};

const SERVICE_RANGES: &str = "10.0.0.0/16,fd00:10::/108";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts a server on `etcd` with the test's flags.
fn server_on(etcd: &LocalEtcd, extra: &[&str]) -> TestServer {
    let servers = format!("--etcd-servers={}", etcd.servers_flag());
    let mut args = vec![
        servers.as_str(),
        "--service-cluster-ip-range",
        SERVICE_RANGES,
    ];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

async fn client_of(s: &TestServer) -> kube::Client {
    s.kube_client().await
}

fn dual_stack_node_port(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort",
            "ipFamilyPolicy": "RequireDualStack",
            "selector": {"app": name},
            "ports": [{"port": 80}]
        }
    }))
    .unwrap()
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Names whose create was answered 201.
    acknowledged: BTreeSet<String>,
    /// Failures other than "already exists" after a retry, with their messages.
    errors: Vec<String>,
}

/// Each client creates `per_client` dual-stack NodePort Services, all clients concurrently; a
/// client whose server fails moves on to the next client's server and retries.
async fn create_load(clients: Vec<kube::Client>, per_client: usize) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    create_load_into(clients, per_client, outcome.clone()).await;
    Arc::try_unwrap(outcome).unwrap().into_inner().unwrap()
}

/// [`create_load`] recording into `outcome` as it goes (so faults can be timed to it).
async fn create_load_into(
    clients: Vec<kube::Client>,
    per_client: usize,
    outcome: Arc<Mutex<Outcome>>,
) {
    let n = clients.len();
    let mut tasks = Vec::new();
    for c in 0..n {
        let clients = clients.clone();
        let outcome = outcome.clone();
        tasks.push(tokio::spawn(async move {
            let mut at = c;
            for i in 0..per_client {
                let name = format!("load-{c}-{i}");
                let mut tries = 0;
                loop {
                    // Clients of one server are the even/odd indices: a failed server moves
                    // its clients to the other one.
                    let api: Api<Service> = Api::namespaced(clients[at].clone(), "default");
                    match api
                        .create(&PostParams::default(), &dual_stack_node_port(&name))
                        .await
                    {
                        Ok(_) => {
                            outcome.lock().unwrap().acknowledged.insert(name.clone());
                            break;
                        }
                        Err(kube::Error::Api(s)) if s.code == 409 && tries > 0 => break,
                        Err(e) => {
                            tries += 1;
                            if tries > 20 {
                                outcome.lock().unwrap().errors.push(format!("{name}: {e}"));
                                break;
                            }
                            at = (at + 1) % n;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every Service's ClusterIPs and NodePorts are unique; returns the names present.
fn assert_unique_allocations(services: &[Service]) -> BTreeSet<String> {
    let mut ips: HashMap<String, String> = HashMap::new();
    let mut ports: HashMap<i32, String> = HashMap::new();
    let mut names = BTreeSet::new();
    for s in services {
        let name = s.metadata.name.clone().unwrap();
        let spec = s.spec.as_ref().unwrap();
        if name != "kubernetes" {
            assert_eq!(
                spec.cluster_ips.as_ref().map(Vec::len),
                Some(2),
                "{name} is not dual-stack: {spec:?}"
            );
        }
        for ip in spec.cluster_ips.clone().unwrap_or_default() {
            if let Some(other) = ips.insert(ip.clone(), name.clone()) {
                panic!("ClusterIP {ip} is held by both {other} and {name}");
            }
        }
        for p in spec.ports.clone().unwrap_or_default() {
            if let Some(np) = p.node_port
                && let Some(other) = ports.insert(np, name.clone())
            {
                panic!("NodePort {np} is held by both {other} and {name}");
            }
        }
        names.insert(name);
    }
    names
}

async fn all_services(c: &kube::Client) -> Vec<Service> {
    let api: Api<Service> = Api::all(c.clone());
    api.list(&ListParams::default()).await.unwrap().items
}

#[test]
fn two_servers_with_eight_clients_each_create_2000_dual_stack_services_without_a_duplicate() {
    let rt = runtime();
    let etcd = rt.block_on(LocalEtcd::start(1)).unwrap();
    let a = server_on(&etcd, &["--controllers=-*"]);
    let b = server_on(&etcd, &["--controllers=-*"]);
    let (ca, cb) = rt.block_on(async { (client_of(&a).await, client_of(&b).await) });
    // 16 clients alternating between the servers, 125 Services each.
    let clients: Vec<kube::Client> = (0..16)
        .map(|i| if i % 2 == 0 { ca.clone() } else { cb.clone() })
        .collect();
    let outcome = rt.block_on(create_load(clients, 125));
    assert!(outcome.errors.is_empty(), "failures: {:?}", outcome.errors);
    assert_eq!(outcome.acknowledged.len(), 2000);
    for c in [&ca, &cb] {
        let services = rt.block_on(all_services(c));
        let names = assert_unique_allocations(&services);
        let missing: Vec<_> = outcome.acknowledged.difference(&names).collect();
        assert!(
            missing.is_empty(),
            "acknowledged but not listed: {missing:?}"
        );
    }
    // Each server's allocators followed the other's writes: one more Service on each still
    // gets a fresh address.
    let services = rt.block_on(async {
        for (c, n) in [(&ca, "after-a"), (&cb, "after-b")] {
            let api: Api<Service> = Api::namespaced(c.clone(), "default");
            api.create(&PostParams::default(), &dual_stack_node_port(n))
                .await
                .unwrap();
        }
        all_services(&ca).await
    });
    assert_eq!(assert_unique_allocations(&services).len(), 2003);
    let started = Instant::now();
    drop((a, b));
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// `/readyz?verbose` of `s`: (status, body).
fn readyz(s: &TestServer) -> (u16, String) {
    s.request("GET", "/readyz?verbose", None, None).unwrap()
}

/// A Service create through curl: (status, Status JSON, how long it took).
fn timed_create(s: &TestServer, name: &str) -> (u16, serde_json::Value, Duration) {
    let started = Instant::now();
    let body = serde_json::to_value(dual_stack_node_port(name)).unwrap();
    let (code, out) = s.json_call(
        "POST",
        "/api/v1/namespaces/default/services",
        Some(&body),
        "application/json",
    );
    (code, out, started.elapsed())
}

fn assert_fault_reported(s: &TestServer, what: &str) {
    let failing = common::eventually(Duration::from_secs(20), || {
        let (code, body) = readyz(s);
        (code == 500).then_some(body)
    })
    .unwrap_or_else(|| panic!("/readyz stayed ok with etcd {what}"));
    assert!(
        failing.contains("[-]etcd failed: reason withheld\n"),
        "{failing}"
    );
    assert!(failing.ends_with("readyz check failed\n"), "{failing}");
    let (code, status, took) = timed_create(s, &format!("during-{what}"));
    assert!(
        (500..600).contains(&code),
        "a write with etcd {what} got {code}: {status}"
    );
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["code"], code, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("etcd")),
        "{status}"
    );
    assert!(
        took < Duration::from_secs(15),
        "the write with etcd {what} took {took:?}"
    );
}

fn assert_recovered(s: &TestServer, name: &str) {
    common::eventually(Duration::from_secs(30), || {
        (readyz(s).0 == 200).then_some(())
    })
    .expect("/readyz did not recover");
    let recovered = common::eventually(Duration::from_secs(30), || {
        let (code, _, _) = timed_create(s, name);
        (code == 201).then_some(())
    });
    assert!(recovered.is_some(), "writes did not recover");
}

#[test]
fn an_unreachable_etcd_fails_readyz_and_writes_get_a_5xx_status_in_bounded_time() {
    use nix::sys::signal::Signal;
    let rt = runtime();
    let mut etcd = rt.block_on(LocalEtcd::start(1)).unwrap();
    let s = server_on(&etcd, &["--controllers=-*"]);
    let (code, body) = readyz(&s);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("[+]etcd ok\n"), "{body}");

    // A stopped etcd: connections stay open, nothing answers.
    let pid = etcd.pid(0).unwrap();
    signal(pid, Signal::SIGSTOP);
    assert_fault_reported(&s, "stopped");
    signal(pid, Signal::SIGCONT);
    assert_recovered(&s, "after-stop");

    // A killed etcd: connections refused; then it comes back on its data dir.
    etcd.kill(0);
    assert_fault_reported(&s, "killed");
    etcd.restart(0).unwrap();
    assert_recovered(&s, "after-kill");
    let (code, out) = s
        .request(
            "GET",
            "/api/v1/namespaces/default/services/after-stop",
            None,
            None,
        )
        .unwrap();
    assert_eq!(code, 200, "{out}");
}

/// Waits until `outcome` holds at least `n` acknowledged creates.
fn wait_acknowledged(outcome: &Mutex<Outcome>, n: usize) {
    let got = common::eventually(Duration::from_secs(120), || {
        (outcome.lock().unwrap().acknowledged.len() >= n).then_some(())
    });
    assert!(
        got.is_some(),
        "the load stalled at {} creates",
        outcome.lock().unwrap().acknowledged.len()
    );
}

#[test]
fn acknowledged_creates_survive_the_loss_of_an_etcd_member_and_then_of_a_server() {
    let rt = runtime();
    let mut etcd = rt.block_on(LocalEtcd::start(3)).unwrap();
    let mut a = server_on(&etcd, &["--controllers=-*"]);
    let b = server_on(&etcd, &["--controllers=-*"]);
    let (ca, cb) = rt.block_on(async { (client_of(&a).await, client_of(&b).await) });
    let clients: Vec<kube::Client> = (0..16)
        .map(|i| if i % 2 == 0 { ca.clone() } else { cb.clone() })
        .collect();
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let load = rt.spawn(create_load_into(clients, 125, outcome.clone()));
    wait_acknowledged(&outcome, 300);
    etcd.kill(0);
    wait_acknowledged(&outcome, 900);
    a.kill9();
    rt.block_on(load).unwrap();
    let outcome = Arc::try_unwrap(outcome).unwrap().into_inner().unwrap();
    assert!(outcome.errors.is_empty(), "failures: {:?}", outcome.errors);
    // Every create was acknowledged or found to exist on a retry; every acknowledged one is
    // there, read through the surviving server, with unique addresses.
    assert!(
        outcome.acknowledged.len() > 1900,
        "{}",
        outcome.acknowledged.len()
    );
    let services = rt.block_on(all_services(&cb));
    let names = assert_unique_allocations(&services);
    let missing: Vec<_> = outcome.acknowledged.difference(&names).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert_eq!(names.len(), 2001, "every load Service and kubernetes");
    // The killed server comes back on the surviving members and serves the same objects.
    a.restart(None);
    let again = rt.block_on(async { all_services(&client_of(&a).await).await });
    assert_eq!(assert_unique_allocations(&again), names);
}

/// The holder of the controllers' Lease, read through `s`.
fn lease_holder(s: &TestServer) -> Option<String> {
    let (code, out) = s
        .request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/dualstack-controller-manager",
            None,
            None,
        )
        .ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["spec"]["holderIdentity"].as_str().map(str::to_string)
}

#[test]
fn the_controllers_fail_over_to_another_server_within_15_seconds() {
    let rt = runtime();
    let etcd = rt.block_on(LocalEtcd::start(1)).unwrap();
    let pool = [
        "--loadbalancer-ip-pool",
        "198.51.100.0/24,2001:db8:1b::/120",
    ];
    let mut a = server_on(&etcd, &pool);
    let first = common::eventually(Duration::from_secs(30), || lease_holder(&a))
        .expect("server a never took the controllers' Lease");
    let b = server_on(&etcd, &pool);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lease_holder(&b).as_deref(),
        Some(first.as_str()),
        "a keeps leading"
    );
    a.kill9();
    let killed = Instant::now();
    let second = common::eventually(Duration::from_secs(30), || {
        lease_holder(&b).filter(|h| *h != first)
    })
    .expect("nobody took the Lease over");
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(15), "fail-over took {took:?}");
    assert_ne!(second, first);
    // The new leader's controllers work: a LoadBalancer Service gets both addresses.
    b.create_json(
        "/api/v1/namespaces/default/services",
        serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
                     "ports": [{"port": 80}]}
        }),
    );
    let ingress = common::eventually(Duration::from_secs(20), || {
        let (_, v) = b.json_call("GET", "/api/v1/namespaces/default/services/lb", None, "");
        let n = v["status"]["loadBalancer"]["ingress"]
            .as_array()
            .map_or(0, Vec::len);
        (n == 2).then_some(v)
    });
    assert!(
        ingress.is_some(),
        "the LoadBalancer Service got no addresses after fail-over"
    );
}

/// `dualstack migrate` with these flags: (success, stdout + stderr).
fn migrate(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::binary())
        .arg("migrate")
        .args(args)
        .output()
        .expect("run dualstack migrate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What must survive a migration: per Service its uid, ClusterIPs and NodePorts.
fn service_facts(s: &TestServer) -> Vec<(String, String, Vec<String>, Vec<i64>)> {
    let (code, list) = s.json_call("GET", "/api/v1/services", None, "");
    assert_eq!(code, 200, "{list}");
    let mut out: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|svc| {
            (
                format!(
                    "{}/{}",
                    svc["metadata"]["namespace"].as_str().unwrap(),
                    svc["metadata"]["name"].as_str().unwrap()
                ),
                svc["metadata"]["uid"].as_str().unwrap().to_string(),
                svc["spec"]["clusterIPs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|ip| ip.as_str().unwrap().to_string())
                    .collect(),
                svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["nodePort"].as_i64())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_migrated_data_dir_serves_the_same_objects_from_etcd() {
    let rt = runtime();
    let etcd = rt.block_on(LocalEtcd::start(1)).unwrap();
    let mut s = TestServer::start(&[
        "--controllers=-*",
        "--service-cluster-ip-range",
        SERVICE_RANGES,
    ]);
    for i in 0..40 {
        let body = serde_json::to_value(dual_stack_node_port(&format!("svc-{i}"))).unwrap();
        s.create_json("/api/v1/namespaces/default/services", body);
    }
    let cm = s.create_json(
        "/api/v1/namespaces/default/configmaps",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings"}, "data": {"a": "1"}}),
    );
    let before = service_facts(&s);
    assert_eq!(before.len(), 41);
    s.kill9();

    let data_dir = s.data_dir.display().to_string();
    let servers = format!("--etcd-servers={}", etcd.servers_flag());
    let base = ["--data-dir", data_dir.as_str(), servers.as_str()];
    // Interrupted after one transaction, then resumed.
    let (ok, out) = migrate(&[&base[..], &["--max-batches", "1"]].concat());
    assert!(!ok && out.contains("run again to resume"), "{out}");
    let (ok, out) = migrate(&base);
    assert!(ok && out.contains("resumed"), "{out}");
    // A finished migration is not run again into the now non-empty etcd.
    let (ok, out) = migrate(&base);
    assert!(!ok, "{out}");
    assert!(
        out.contains("refusing to migrate into a non-empty store without --force"),
        "{out}"
    );
    let (ok, out) = migrate(&[&base[..], &["--force"]].concat());
    assert!(ok, "{out}");

    s.restart(Some(&[
        servers.as_str(),
        "--controllers=-*",
        "--service-cluster-ip-range",
        SERVICE_RANGES,
    ]));
    assert!(readyz(&s).1.contains("etcd"), "not serving from etcd");
    assert_eq!(service_facts(&s), before);
    let (code, got) = s.json_call(
        "GET",
        "/api/v1/namespaces/default/configmaps/settings",
        None,
        "",
    );
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["data"], cm["data"]);
    assert_eq!(got["metadata"]["uid"], cm["metadata"]["uid"]);
    // The allocations came along: a new Service gets addresses no migrated one holds.
    let body = serde_json::to_value(dual_stack_node_port("after")).unwrap();
    s.create_json("/api/v1/namespaces/default/services", body);
    let (_, list) = s.json_call("GET", "/api/v1/services", None, "");
    let services: Vec<Service> = serde_json::from_value(list["items"].clone()).unwrap();
    assert_eq!(assert_unique_allocations(&services).len(), 42);
}

/// The `renewTime` of every node Lease of a lab.
fn node_lease_renewals(lab: &common::lab::Lab) -> Vec<String> {
    let v = lab.json(&["get", "leases", "-n", "kube-node-lease"]);
    let mut out: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["spec"]["renewTime"].as_str().unwrap_or("").to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn an_ha_lab_keeps_serving_kubectl_and_the_agents_when_a_server_dies() {
    let lab = common::lab::Lab::up("ds-etcd-ha", 2, &["--ha"]);
    let run = lab.path().join("run");
    for p in [
        "etcd-0", "etcd-1", "etcd-2", "server", "server-1", "server-2", "lb",
    ] {
        assert!(run.join(format!("{p}.pid")).exists(), "{p} is not running");
    }
    let pid_of = |name: &str| -> u32 {
        let text = std::fs::read_to_string(run.join(format!("{name}.pid"))).unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    // The server kubectl and the agents reached first dies.
    signal(pid_of("server"), nix::sys::signal::Signal::SIGKILL);
    let killed = std::time::SystemTime::now();
    let nodes = lab.json(&["get", "nodes"]);
    assert_eq!(nodes["items"].as_array().unwrap().len(), 2, "{nodes}");
    lab.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: after-failover\nspec:\n  ipFamilyPolicy: RequireDualStack\n  ports:\n  - port: 80\n",
    );
    let svc = lab.json(&["get", "service", "after-failover"]);
    assert_eq!(
        svc["spec"]["clusterIPs"].as_array().unwrap().len(),
        2,
        "{svc}"
    );
    // The agents renew their Leases through another server (every 10 s).
    let since = jiff::Timestamp::try_from(killed).unwrap();
    let renewed = common::eventually(Duration::from_secs(30), || {
        let all = node_lease_renewals(&lab);
        all.iter()
            .all(|t| t.parse::<jiff::Timestamp>().is_ok_and(|t| t > since))
            .then_some(all)
    });
    assert!(
        renewed.is_some(),
        "the node Leases were not renewed after the server died: {:?}",
        node_lease_renewals(&lab)
    );
    let nodes = lab.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(nodes.matches(" Ready ").count(), 2, "{nodes}");
}

#[test]
fn a_list_on_one_server_right_after_a_create_on_the_other_includes_it() {
    let rt = runtime();
    let etcd = rt.block_on(LocalEtcd::start(1)).unwrap();
    let a = server_on(&etcd, &["--controllers=-*"]);
    let b = server_on(&etcd, &["--controllers=-*"]);
    rt.block_on(async {
        let (ca, cb) = (client_of(&a).await, client_of(&b).await);
        for i in 0..40 {
            let (writer, reader) = if i % 2 == 0 { (&ca, &cb) } else { (&cb, &ca) };
            let name = format!("rw-{i}");
            let api: Api<Service> = Api::namespaced(writer.clone(), "default");
            api.create(&PostParams::default(), &dual_stack_node_port(&name))
                .await
                .unwrap();
            // A list without resourceVersion is a consistent read on every server.
            let names = assert_unique_allocations(&all_services(reader).await);
            assert!(
                names.contains(&name),
                "{name} missing from the other server's list"
            );
        }
    });
}
