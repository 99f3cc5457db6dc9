//! The scheduler, `pods/binding` and the node lifecycle controller against the real server:
//! pods without a node are bound within a moment and spread evenly, a pod no node fits gets
//! upstream's `FailedScheduling` and `PodScheduled=False` until a node matches, bindings keep
//! upstream's texts and authorization, `kubectl run` gets a node, and a node whose Lease stops
//! being renewed turns `Unknown`, is tainted and its pods stop being ready.
//!
//! There is no kubelet: nodes are created Ready by the admin, their Leases are renewed by the
//! test, and pod readiness is written through `pods/status` as a kubelet would.

mod common;

use std::time::{Duration, Instant};

use common::{Kubectl, TestServer, eventually, node_token};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

fn call(s: &TestServer, method: &str, path: &str, body: Option<&Value>, ct: &str) -> (u16, Value) {
    s.json_call(method, path, body, ct)
}

fn create(s: &TestServer, path: &str, body: Value) -> Value {
    s.create_json(path, body)
}

fn get(s: &TestServer, path: &str) -> Value {
    let (code, out) = call(s, "GET", path, None, "");
    assert_eq!(code, 200, "GET {path}: {out}");
    out
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

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// A Ready node with room for 110 pods, as a kubelet registers it.
fn create_ready_node(s: &TestServer, name: &str, labels: Value) {
    create(
        s,
        "/api/v1/nodes",
        json!({"metadata": {"name": name, "labels": labels}}),
    );
    let t = now();
    merge(
        s,
        &format!("/api/v1/nodes/{name}/status"),
        json!({"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": t, "lastTransitionTime": t}],
            "capacity": {"pods": "110"},
            "allocatable": {"pods": "110"},
        }}),
    );
}

fn renew_lease(s: &TestServer, node: &str) {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}");
    let renew = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    let (code, _) = call(s, "GET", &path, None, "");
    if code == 404 {
        create(
            s,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renew}}),
        );
    } else {
        merge(s, &path, json!({"spec": {"renewTime": renew}}));
    }
}

fn pod_body(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
}

fn node_of(s: &TestServer, pod: &str) -> Option<String> {
    let p = get(s, &format!("/api/v1/namespaces/default/pods/{pod}"));
    p["spec"]["nodeName"].as_str().map(str::to_string)
}

fn condition(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// The events about `pod` with `reason`.
fn events(s: &TestServer, pod: &str, reason: &str) -> Vec<Value> {
    let list = get(
        s,
        &format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name={pod}"),
    );
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["reason"] == reason)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn pods_are_bound_spread_evenly_and_unschedulable_ones_wait_for_a_matching_node() {
    // Leases are not renewed here: a long grace period keeps the nodes Ready.
    let s = TestServer::start(&["--node-monitor-grace-period=1h"]);
    for n in ["n1", "n2", "n3"] {
        create_ready_node(&s, n, json!({"kubernetes.io/hostname": n}));
    }

    // Bound quickly, watch-driven.
    let started = Instant::now();
    create(&s, "/api/v1/namespaces/default/pods", pod_body("p0"));
    let first = eventually(WAIT, || node_of(&s, "p0")).expect("p0 bound");
    let latency = started.elapsed();
    eprintln!("p0 bound to {first} after {latency:?} (create + polling included)");
    assert!(latency < Duration::from_secs(3), "took {latency:?}");
    let p0 = get(&s, "/api/v1/namespaces/default/pods/p0");
    assert_eq!(condition(&p0, "PodScheduled")["status"], "True", "{p0}");

    // Spread evenly: 6 pods on 3 nodes.
    for i in 1..6 {
        create(
            &s,
            "/api/v1/namespaces/default/pods",
            pod_body(&format!("p{i}")),
        );
    }
    let nodes: Vec<String> = (0..6)
        .map(|i| eventually(WAIT, || node_of(&s, &format!("p{i}"))).expect("bound"))
        .collect();
    for n in ["n1", "n2", "n3"] {
        assert_eq!(
            nodes.iter().filter(|x| *x == n).count(),
            2,
            "two pods per node: {nodes:?}"
        );
    }

    // The Scheduled event, as upstream's.
    let ev = eventually(WAIT, || events(&s, "p0", "Scheduled").pop()).expect("Scheduled event");
    assert_eq!(ev["type"], "Normal");
    assert_eq!(
        ev["message"],
        format!("Successfully assigned default/p0 to {first}")
    );
    assert_eq!(ev["source"]["component"], "default-scheduler");
    assert_eq!(ev["reportingComponent"], "default-scheduler");

    // A pod no node fits.
    let mut picky = pod_body("picky");
    picky["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    create(&s, "/api/v1/namespaces/default/pods", picky);
    let want = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let ev = eventually(WAIT, || events(&s, "picky", "FailedScheduling").pop())
        .expect("FailedScheduling event");
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["message"], want);
    let cond = eventually(WAIT, || {
        let c = condition(
            &get(&s, "/api/v1/namespaces/default/pods/picky"),
            "PodScheduled",
        );
        (c["status"] == "False").then_some(c)
    })
    .expect("PodScheduled=False");
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], want);
    assert_eq!(node_of(&s, "picky"), None);

    // Labelling a node lets it in at once (a node change retries the unschedulable pods).
    let labelled = Instant::now();
    merge(
        &s,
        "/api/v1/nodes/n2",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    );
    let n = eventually(WAIT, || node_of(&s, "picky")).expect("picky bound after the label");
    assert_eq!(n, "n2");
    assert!(
        labelled.elapsed() < Duration::from_secs(3),
        "retried on the node change, not on a timer: {:?}",
        labelled.elapsed()
    );
    let picky = get(&s, "/api/v1/namespaces/default/pods/picky");
    let c = condition(&picky, "PodScheduled");
    assert_eq!(c["status"], "True");
    assert!(c.get("reason").is_none_or(Value::is_null), "{c}");

    // Binding a bound pod: upstream's conflict.
    let (code, out) = call(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods/picky/binding",
        Some(
            &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "picky"},
            "target": {"kind": "Node", "name": "n3"}}),
        ),
        "application/json",
    );
    assert_eq!(code, 409, "{out}");
    assert_eq!(
        out["message"],
        r#"Operation cannot be fulfilled on pods/binding "picky": pod picky is already assigned to node "n2""#
    );
    assert_eq!(out["reason"], "Conflict");
    assert_eq!(out["details"]["kind"], "pods/binding");

    // A pod of another scheduler is left alone; the legacy bindings resource binds it and
    // copies the binding's annotations.
    let mut other = pod_body("other");
    other["spec"]["schedulerName"] = "my-scheduler".into();
    create(&s, "/api/v1/namespaces/default/pods", other);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node_of(&s, "other"), None, "not ours to schedule");
    let node = node_token(&s, "n1", None);
    let (code, out) = s
        .request_as(
            &node,
            "POST",
            "/api/v1/namespaces/default/pods/other/binding",
            Some(
                &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "other"},
                "target": {"kind": "Node", "name": "n1"}})
                .to_string(),
            ),
            Some("application/json"),
        )
        .unwrap();
    assert_eq!(code, 403, "a node may not bind pods: {out}");
    let (code, out) = call(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods/other/binding",
        Some(
            &json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "other"},
            "target": {"kind": "Pod", "name": "n1"}}),
        ),
        "application/json",
    );
    assert_eq!(code, 500, "{out}");
    assert_eq!(
        out["message"],
        r#"target.kind: Unsupported value: "Pod": supported values: "Node", "<empty>""#
    );
    let (code, out) = call(
        &s,
        "POST",
        "/api/v1/namespaces/default/bindings",
        Some(&json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": "other", "annotations": {"bound-by": "test"}},
            "target": {"kind": "Node", "name": "n1"}})),
        "application/json",
    );
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["kind"], "Status");
    assert_eq!(out["status"], "Success");
    let other = get(&s, "/api/v1/namespaces/default/pods/other");
    assert_eq!(other["spec"]["nodeName"], "n1");
    assert_eq!(other["metadata"]["annotations"]["bound-by"], "test");
    assert_eq!(condition(&other, "PodScheduled")["status"], "True");

    // Discovery lists the subresource and the legacy resource, create only.
    let v1 = get(&s, "/api/v1");
    let find = |name: &str| {
        v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in /api/v1"))
    };
    let sub = find("pods/binding");
    assert_eq!(sub["verbs"], json!(["create"]));
    assert_eq!(sub["kind"], "Binding");
    let legacy = find("bindings");
    assert_eq!(legacy["verbs"], json!(["create"]));
    assert_eq!(legacy["namespaced"], true);

    // kubectl run gets a node.
    let k = Kubectl::require("1.33");
    s.kubectl_ok(
        &k,
        &[
            "run",
            "web",
            "--image=registry.k8s.io/pause:3.10",
            "--restart=Never",
        ],
    );
    let n = eventually(WAIT, || node_of(&s, "web")).expect("kubectl run pod bound");
    assert!(["n1", "n2", "n3"].contains(&n.as_str()), "{n}");
}

#[test]
fn a_node_whose_lease_is_not_renewed_turns_unknown_and_its_pods_stop_being_ready() {
    let s = TestServer::start(&[
        "--node-monitor-grace-period=3s",
        "--node-monitor-period=500ms",
    ]);
    create_ready_node(&s, "alive", json!({}));
    create_ready_node(&s, "silent", json!({}));
    renew_lease(&s, "alive");
    // The grace period runs from this last renewal (not from after the calls below, which
    // can be slow on a loaded machine).
    let silent_since = Instant::now();
    renew_lease(&s, "silent");

    // A ready pod on the node that will go silent.
    let mut pod = pod_body("victim");
    pod["spec"]["nodeName"] = "silent".into();
    create(&s, "/api/v1/namespaces/default/pods", pod);
    let t = now();
    merge(
        &s,
        "/api/v1/namespaces/default/pods/victim/status",
        json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": t}]}}),
    );

    // Only "alive" keeps renewing.
    let node = eventually(Duration::from_secs(20), || {
        renew_lease(&s, "alive");
        let n = get(&s, "/api/v1/nodes/silent");
        (condition(&n, "Ready")["status"] == "Unknown").then_some(n)
    })
    .expect("silent turns Unknown");
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(2500),
        "not before the grace period: {waited:?}"
    );
    let ready = condition(&node, "Ready");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    let has_taint = |n: &Value| {
        n["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter().any(|t| {
                t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoSchedule"
            })
        })
    };
    let node = eventually(WAIT, || {
        let n = get(&s, "/api/v1/nodes/silent");
        has_taint(&n).then_some(n)
    })
    .expect("unreachable taint");
    assert!(has_taint(&node));
    let pod = eventually(WAIT, || {
        let p = get(&s, "/api/v1/namespaces/default/pods/victim");
        (condition(&p, "Ready")["status"] == "False").then_some(p)
    })
    .expect("pod marked not ready");
    assert_eq!(
        condition(&pod, "ContainersReady")["status"],
        "True",
        "only Ready changes, as upstream's MarkPodsNotReady"
    );
    let ev = eventually(WAIT, || events(&s, "victim", "NodeNotReady").pop()).expect("event");
    assert_eq!(ev["message"], "Node is not ready");
    let alive = get(&s, "/api/v1/nodes/alive");
    assert_eq!(condition(&alive, "Ready")["status"], "True");
    assert!(!has_taint(&alive));

    // New pods avoid the unreachable node.
    for i in 0..4 {
        renew_lease(&s, "alive");
        create(
            &s,
            "/api/v1/namespaces/default/pods",
            pod_body(&format!("new{i}")),
        );
    }
    for i in 0..4 {
        let n = eventually(WAIT, || node_of(&s, &format!("new{i}"))).expect("bound");
        assert_eq!(n, "alive");
    }

    // The kubelet comes back: the Lease is renewed and Ready posted; the taint goes.
    renew_lease(&s, "silent");
    let t = now();
    merge(
        &s,
        "/api/v1/nodes/silent/status",
        json!({"status": {"conditions": [{"type": "Ready", "status": "True",
            "reason": "KubeletReady", "message": "kubelet is posting ready status",
            "lastHeartbeatTime": t, "lastTransitionTime": t}]}}),
    );
    eventually(WAIT, || {
        renew_lease(&s, "alive");
        renew_lease(&s, "silent");
        let n = get(&s, "/api/v1/nodes/silent");
        (!has_taint(&n) && condition(&n, "Ready")["status"] == "True").then_some(())
    })
    .expect("taint removed once the kubelet is back");
}
