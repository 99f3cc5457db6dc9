//! Deployments, ReplicaSets, the garbage collector and pod anti-affinity against the real
//! server with real kubectl: `kubectl create deployment` → pods bound, `scale`, a template
//! change rolled out within `maxUnavailable`, `rollout history/undo/status`, tables, deletion
//! in the background, the foreground and orphaning, and required anti-affinity spreading pods.
//!
//! There is no kubelet: nodes are created Ready by the admin and pod readiness is written
//! through `pods/status` as a kubelet would.

mod common;

use std::time::Duration;

use common::{Kubectl, TestServer, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn get(s: &TestServer, path: &str) -> Value {
    let (code, out) = s.json_call("GET", path, None, "");
    assert_eq!(code, 200, "GET {path}: {out}");
    out
}

fn try_get(s: &TestServer, path: &str) -> Option<Value> {
    let (code, out) = s.json_call("GET", path, None, "");
    (code == 200).then_some(out)
}

fn merge(s: &TestServer, path: &str, body: Value) -> Value {
    let (code, out) = s.json_call("PATCH", path, Some(&body), "application/merge-patch+json");
    assert_eq!(code, 200, "PATCH {path}: {out}");
    out
}

fn create_ready_node(s: &TestServer, name: &str) {
    s.create_json(
        "/api/v1/nodes",
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
    );
    let t = jiff::Timestamp::now().to_string();
    merge(
        s,
        &format!("/api/v1/nodes/{name}/status"),
        json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": t, "lastTransitionTime": t}],
            "capacity": {"pods": "110"}, "allocatable": {"pods": "110"},
        }}),
    );
}

fn pods(s: &TestServer, selector: &str) -> Vec<Value> {
    get(
        s,
        &format!("/api/v1/namespaces/default/pods?labelSelector={selector}"),
    )["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn live(pods: &[Value]) -> Vec<Value> {
    pods.iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

/// Marks every bound, not yet ready pod Ready, as a kubelet would; and finishes the deletion of
/// terminating ones (the kubelet's final delete with grace 0).
fn kubelet_pass(s: &TestServer, selector: &str) {
    for p in pods(s, selector) {
        let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
        if !p["metadata"]["deletionTimestamp"].is_null() {
            let _ = s.json_call(
                "DELETE",
                &format!("/api/v1/namespaces/default/pods/{name}"),
                Some(&json!({"gracePeriodSeconds": 0})),
                "application/json",
            );
            continue;
        }
        if p["spec"]["nodeName"].is_string() && p["status"]["phase"] != "Running" {
            let t = jiff::Timestamp::now().to_string();
            let _ = s.json_call(
                "PATCH",
                &format!("/api/v1/namespaces/default/pods/{name}/status"),
                Some(&json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": t}]}})),
                "application/merge-patch+json",
            );
        }
    }
}

fn deployment(s: &TestServer, name: &str) -> Value {
    get(
        s,
        &format!("/apis/apps/v1/namespaces/default/deployments/{name}"),
    )
}

#[test]
fn deployments_scale_roll_out_roll_back_and_are_garbage_collected() {
    let k = Kubectl::require("1.33");
    let s = TestServer::start(&["--node-monitor-grace-period=1h"]);
    for n in ["n1", "n2", "n3"] {
        create_ready_node(&s, n);
    }

    // Create: 3 pods, bound, owned by the ReplicaSet `web-<hash>`.
    s.kubectl_ok(
        &k,
        &[
            "create",
            "deployment",
            "web",
            "--image=x",
            "--replicas=3",
            "--",
            "python3",
            "-m",
            "http.server",
            "8080",
        ],
    );
    eventually(WAIT, || {
        let p = live(&pods(&s, "app=web"));
        (p.len() == 3 && p.iter().all(|p| p["spec"]["nodeName"].is_string())).then_some(())
    })
    .expect("3 bound pods");
    let rs_list = get(&s, "/apis/apps/v1/namespaces/default/replicasets")["items"].clone();
    let rs = &rs_list[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let pod = &live(&pods(&s, "app=web"))[0];
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    assert!(pod_name.starts_with(&format!("web-{hash}-")), "{pod_name}");
    assert_eq!(pod_name.len(), format!("web-{hash}-").len() + 5);
    assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);

    // Ready pods make the rollout complete.
    eventually(WAIT, || {
        kubelet_pass(&s, "app=web");
        let d = deployment(&s, "web");
        (d["status"]["availableReplicas"] == 3).then_some(())
    })
    .expect("3 available");
    s.kubectl_ok(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=20s"],
    );

    // Scale through the scale subresource.
    s.kubectl_ok(&k, &["scale", "deployment/web", "--replicas=5"]);
    let scale = get(&s, "/apis/apps/v1/namespaces/default/deployments/web/scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    eventually(WAIT, || {
        kubelet_pass(&s, "app=web");
        (live(&pods(&s, "app=web")).len() == 5
            && deployment(&s, "web")["status"]["availableReplicas"] == 5)
            .then_some(())
    })
    .expect("5 pods");

    // A template change rolls out a new ReplicaSet; never fewer than 5 - 1 (25% of 5, rounded
    // down) available and never more than 5 + 2 (rounded up) pods.
    s.kubectl_ok(&k, &["set", "env", "deployment/web", "COLOR=blue"]);
    let done = eventually(Duration::from_secs(60), || {
        let all = live(&pods(&s, "app=web"));
        assert!(all.len() <= 7, "more than 5 + maxSurge pods: {}", all.len());
        let ready = all
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        let d = deployment(&s, "web");
        let available = d["status"]["availableReplicas"].as_i64().unwrap_or(0);
        assert!(available >= 4, "available {available} < 5 - maxUnavailable");
        let _ = ready;
        kubelet_pass(&s, "app=web");
        (d["status"]["updatedReplicas"] == 5
            && d["status"]["replicas"] == 5
            && d["status"]["availableReplicas"] == 5
            && d["status"]["observedGeneration"] == d["metadata"]["generation"])
            .then_some(d)
    })
    .expect("rolled out");
    assert_eq!(
        done["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    s.kubectl_ok(
        &k,
        &["rollout", "status", "deployment/web", "--timeout=20s"],
    );
    let history = s.kubectl_ok(&k, &["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("REVISION") && history.contains('1') && history.contains('2'),
        "{history}"
    );

    // Tables.
    let table = s.kubectl_ok(&k, &["get", "deploy,rs", "-o", "wide"]);
    assert!(table.contains("READY   UP-TO-DATE   AVAILABLE"), "{table}");
    assert!(
        table.contains("deployment.apps/web   5/5     5            5"),
        "{table}"
    );
    assert!(table.contains("DESIRED   CURRENT   READY"), "{table}");
    assert!(
        table.contains("CONTAINERS") && table.contains("SELECTOR"),
        "{table}"
    );
    assert!(table.contains("app=web,pod-template-hash="), "{table}");

    // Undo: back to the first template (its ReplicaSet again, revision 3).
    s.kubectl_ok(&k, &["rollout", "undo", "deployment/web"]);
    eventually(Duration::from_secs(60), || {
        kubelet_pass(&s, "app=web");
        let d = deployment(&s, "web");
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        (env.is_null()
            && d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
            && d["status"]["updatedReplicas"] == 5
            && d["status"]["replicas"] == 5)
            .then_some(())
    })
    .expect("rolled back");
    let first_rs = get(
        &s,
        &format!("/apis/apps/v1/namespaces/default/replicasets/web-{hash}"),
    );
    assert_eq!(first_rs["spec"]["replicas"], 5);

    // Background deletion: ReplicaSets and pods go.
    s.kubectl_ok(&k, &["delete", "deployment", "web"]);
    eventually(WAIT, || {
        kubelet_pass(&s, "app=web");
        let rs = get(&s, "/apis/apps/v1/namespaces/default/replicasets")["items"].clone();
        (rs.as_array().is_some_and(Vec::is_empty) && pods(&s, "app=web").is_empty()).then_some(())
    })
    .expect("replica sets and pods collected");

    // Foreground: the owner waits with `foregroundDeletion` until its dependents are gone.
    s.kubectl_ok(
        &k,
        &["create", "deployment", "fg", "--image=x", "--replicas=2"],
    );
    eventually(WAIT, || {
        (live(&pods(&s, "app=fg")).len() == 2).then_some(())
    })
    .expect("fg pods");
    let (code, out) = s.json_call(
        "DELETE",
        "/apis/apps/v1/namespaces/default/deployments/fg",
        Some(&json!({"propagationPolicy": "Foreground"})),
        "application/json",
    );
    assert_eq!(code, 200, "{out}");
    let d = deployment(&s, "fg");
    assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d}");
    assert_eq!(d["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    eventually(WAIT, || {
        kubelet_pass(&s, "app=fg");
        try_get(&s, "/apis/apps/v1/namespaces/default/deployments/fg")
            .is_none()
            .then_some(())
    })
    .expect("foreground deletion finished");
    assert!(pods(&s, "app=fg").is_empty());

    // Orphan: the ReplicaSet stays, without its owner reference.
    s.kubectl_ok(
        &k,
        &["create", "deployment", "or", "--image=x", "--replicas=1"],
    );
    eventually(WAIT, || {
        (live(&pods(&s, "app=or")).len() == 1).then_some(())
    })
    .expect("or pod");
    s.kubectl_ok(&k, &["delete", "deployment", "or", "--cascade=orphan"]);
    eventually(WAIT, || {
        try_get(&s, "/apis/apps/v1/namespaces/default/deployments/or")
            .is_none()
            .then_some(())
    })
    .expect("orphaned deployment gone");
    let rs = get(
        &s,
        "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app=or",
    )["items"][0]
        .clone();
    assert!(rs["metadata"]["ownerReferences"].is_null(), "{rs}");
    assert_eq!(live(&pods(&s, "app=or")).len(), 1);
}

#[test]
fn required_anti_affinity_spreads_pods_and_leaves_the_fourth_pending() {
    let k = Kubectl::require("1.33");
    let s = TestServer::start(&["--node-monitor-grace-period=1h"]);
    for n in ["n1", "n2", "n3"] {
        create_ready_node(&s, n);
    }
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: spread
spec:
  replicas: 4
  selector:
    matchLabels: {app: spread}
  template:
    metadata:
      labels: {app: spread}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: spread}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: c
        image: x
"#;
    let out = s.kubectl_stdin(&k, &["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pending = eventually(WAIT, || {
        let p = live(&pods(&s, "app=spread"));
        let bound: Vec<String> = p
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_string))
            .collect();
        let unbound: Vec<String> = p
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        (p.len() == 4 && bound.len() == 3 && unbound.len() == 1).then(|| {
            let mut b = bound.clone();
            b.sort();
            assert_eq!(b, ["n1", "n2", "n3"], "one per node");
            unbound[0].clone()
        })
    })
    .expect("3 spread, 1 pending");
    let want = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.";
    eventually(WAIT, || {
        let ev = get(
            &s,
            &format!(
                "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name={pending}"
            ),
        );
        ev["items"]
            .as_array()?
            .iter()
            .find(|e| e["reason"] == "FailedScheduling" && e["message"] == want)
            .cloned()
    })
    .expect("FailedScheduling with the anti-affinity text");
}
