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
    let file = kube::config::Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    config.read_timeout = Some(Duration::from_secs(30));
    config.connect_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(config).unwrap()
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

/// `clients_per_server` clients per server create `total` dual-stack NodePort Services
/// concurrently; a client whose server fails moves on to the next server and retries.
async fn create_load(clients: Vec<kube::Client>, per_client: usize) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
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
    Arc::try_unwrap(outcome).unwrap().into_inner().unwrap()
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
