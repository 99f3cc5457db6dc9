//! A Deployment on a real 3-node lab (issue 12): 3 replicas spread over the nodes, scaled to
//! 5, rolled to a new command while its dual-stack Service keeps a ready endpoint in both
//! families, answering on both ClusterIPs afterwards (probed from inside the lab), then deleted
//! with everything it owns.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::eventually;
use common::lab::Lab;
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: none
        command: [python3, -m, http.server, "8080", --bind, "::"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// The Deployment's pods that are Running and Ready: name → (node, command).
fn ready_pods(lab: &Lab) -> Vec<(String, String, Value)> {
    lab.json(&["get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["spec"]["containers"][0]["command"].clone(),
            )
        })
        .collect()
}

/// Ready endpoints per address type in the Service's slices.
fn ready_endpoints(lab: &Lab) -> (usize, usize) {
    let slices = lab.json(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    let mut v4 = 0;
    let mut v6 = 0;
    for s in slices["items"].as_array().unwrap() {
        let n = s["endpoints"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|e| e["conditions"]["ready"] == true)
                    .count()
            })
            .unwrap_or(0);
        match s["addressType"].as_str() {
            Some("IPv4") => v4 += n,
            Some("IPv6") => v6 += n,
            _ => {}
        }
    }
    (v4, v6)
}

fn url(ip: &str) -> String {
    if ip.contains(':') {
        format!("http://[{ip}]:80/")
    } else {
        format!("http://{ip}:80/")
    }
}

#[test]
fn a_deployment_spreads_scales_rolls_without_losing_its_endpoints_and_is_deleted_with_what_it_owns()
{
    let lab = Lab::up("ds-rollout-", 3, &[]);
    lab.apply(DEPLOYMENT);
    let spread = eventually(Duration::from_secs(90), || {
        let pods = ready_pods(&lab);
        (pods.len() == 3).then_some(pods)
    })
    .unwrap_or_else(|| panic!("3 ready pods: {:?}\n{}", ready_pods(&lab), lab.logs()));
    // The scheduler places each pod on the node with the fewest pods (the lab's two DNS pods
    // count too): never all on one node, and every node has one once there are 5.
    let nodes: BTreeSet<&str> = spread.iter().map(|(_, n, _)| n.as_str()).collect();
    assert!(nodes.len() >= 2, "spread over the nodes: {spread:?}");

    lab.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    let five = eventually(Duration::from_secs(90), || {
        let pods = ready_pods(&lab);
        (pods.len() == 5).then_some(pods)
    })
    .unwrap_or_else(|| panic!("5 ready pods: {:?}", ready_pods(&lab)));
    let nodes: BTreeSet<&str> = five.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(nodes.len(), 3, "5 replicas on all 3 nodes: {five:?}");
    eventually(Duration::from_secs(30), || {
        (ready_endpoints(&lab) == (5, 5)).then_some(())
    })
    .unwrap_or_else(|| panic!("5 + 5 ready endpoints: {:?}", ready_endpoints(&lab)));

    let svc = lab.json(&["get", "svc", "web"]);
    let ips: Vec<String> = svc["spec"]["clusterIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 2);

    // While the rollout runs the slices never lack a ready endpoint of either family.
    let done = AtomicBool::new(false);
    let lowest = Mutex::new((usize::MAX, usize::MAX, 0usize));
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let (v4, v6) = ready_endpoints(&lab);
                let mut l = lowest.lock().unwrap();
                *l = (l.0.min(v4), l.1.min(v6), l.2 + 1);
            }
        });
        lab.kubectl_ok(&[
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["python3","-m","http.server","8080","--bind","::","--directory","/etc"]}]"#,
        ]);
        let out = lab.kubectl(
            &["rollout", "status", "deployment/web", "--timeout=180s"],
            None,
        );
        std::thread::sleep(Duration::from_secs(2));
        done.store(true, Ordering::Relaxed);
        assert!(
            out.status.success(),
            "rollout status: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            lab.logs()
        );
    });
    let (min4, min6, samples) = *lowest.lock().unwrap();
    assert!(
        samples > 5,
        "the slices were sampled during the rollout ({samples})"
    );
    assert!(
        min4 >= 1 && min6 >= 1,
        "a moment without a ready endpoint: fewest ready IPv4 {min4}, IPv6 {min6} over {samples} samples"
    );
    // Both ClusterIPs answer from node-1 (inside the lab) with the new pods.
    // (The old pods' endpoints leave the proxy's rules a sync after they terminate: a few
    // rounds in a row must all be the new pods'.)
    for ip in &ips {
        let mut last = String::new();
        let new_only = eventually(Duration::from_secs(30), || {
            (0..4)
                .all(|_| {
                    let out = lab.exec("node-1", &["curl", "-g", "-s", "-m", "5", &url(ip)]);
                    last = format!(
                        "{:?} {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("passwd")
                })
                .then_some(())
        });
        assert!(new_only.is_some(), "{ip} is served by the new pods: {last}");
    }
    let rolled = ready_pods(&lab);
    assert_eq!(rolled.len(), 5);
    for (name, _, cmd) in &rolled {
        assert_eq!(
            cmd.as_array().unwrap().last().unwrap(),
            "/etc",
            "{name} runs the new command"
        );
    }
    let rs = lab.json(&["get", "replicasets", "-l", "app=web"]);
    assert_eq!(
        rs["items"].as_array().unwrap().len(),
        2,
        "old and new ReplicaSet"
    );

    // Deleting the Deployment deletes its ReplicaSets and their pods (background propagation).
    lab.kubectl_ok(&["delete", "deployment", "web"]);
    eventually(Duration::from_secs(90), || {
        let rs = lab.json(&["get", "replicasets", "-l", "app=web"]);
        let pods = lab.json(&["get", "pods", "-l", "app=web"]);
        (rs["items"].as_array().unwrap().is_empty() && pods["items"].as_array().unwrap().is_empty())
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "owned objects left: {}",
            lab.kubectl_ok(&["get", "replicasets,pods", "-l", "app=web"])
        )
    });
}
