//! Protobuf request bodies from real kubectl: `kubectl drain` (1.32+ sends a protobuf Eviction
//! to `pods/NAME/eviction` and protobuf DeleteOptions), and creates by the 1.33 generators,
//! which must store exactly what the same create sent as JSON (kubectl 1.31) stores.

mod common;

use common::{Kubectl, TestServer};
use serde_json::{Value, json};

const DUAL: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];

fn create(s: &TestServer, path: &str, body: Value) {
    let r = s.call(
        &s.token,
        "POST",
        path,
        Some(body.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(r.status, 201, "POST {path}: {}", r.body);
}

fn get(s: &TestServer, path: &str) -> (u16, Value) {
    let r = s.call(&s.token, "GET", path, None, &[]);
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

#[test]
fn kubectl_drain_evicts_the_pods_bound_to_the_node_with_protobuf_bodies() {
    let s = TestServer::start(DUAL);
    for version in ["1.32", "1.33"] {
        let k = Kubectl::require(version);
        let node = format!("node-{}", version.replace('.', ""));
        let pod = format!("web-{}", version.replace('.', ""));
        create(
            &s,
            "/api/v1/nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        );
        create(
            &s,
            "/api/v1/namespaces/default/pods",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]}}),
        );
        let out = s.kubectl_ok(
            &k,
            &[
                "drain",
                &node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--force",
                "--grace-period=0",
                "--timeout=30s",
            ],
        );
        // "evicting pod" is printed only when the Eviction API is used (not the delete fallback).
        assert!(
            out.contains(&format!("evicting pod default/{pod}")),
            "kubectl {version}: {out}"
        );
        assert!(out.contains(&format!("node/{node} drained")), "{out}");
        let (code, _) = get(&s, &format!("/api/v1/namespaces/default/pods/{pod}"));
        assert_eq!(code, 404, "kubectl {version}: the pod was not deleted");
        let (_, n) = get(&s, &format!("/api/v1/nodes/{node}"));
        assert_eq!(n["spec"]["unschedulable"], true);
    }
}

#[test]
fn kubectl_delete_sends_protobuf_delete_options_that_are_honoured() {
    let s = TestServer::start(DUAL);
    let k = Kubectl::require("1.33");
    create(
        &s,
        "/api/v1/namespaces/default/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    );
    // `--dry-run=server` travels in the protobuf DeleteOptions body: the object must survive.
    s.kubectl_ok(&k, &["delete", "configmap", "c", "--dry-run=server"]);
    assert_eq!(get(&s, "/api/v1/namespaces/default/configmaps/c").0, 200);
    s.kubectl_ok(&k, &["delete", "configmap", "c", "--grace-period=0"]);
    assert_eq!(get(&s, "/api/v1/namespaces/default/configmaps/c").0, 404);
}

#[test]
fn the_eviction_subresource_answers_as_upstream() {
    let s = TestServer::start(DUAL);
    create(
        &s,
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    );
    let evict = |name: &str| {
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name},
            "deleteOptions": {"gracePeriodSeconds": 0}})
        .to_string()
    };
    let path = "/api/v1/namespaces/default/pods/p/eviction";
    let ct = [("Content-Type", "application/json")];
    let r = s.call(&s.token, "POST", path, Some(evict("other").as_bytes()), &ct);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains("name in URL does not match name in Eviction object"),
        "{}",
        r.body
    );
    let r = s.call(
        &s.token,
        "POST",
        "/api/v1/namespaces/default/pods/p/eviction?dryRun=All",
        Some(evict("p").as_bytes()),
        &ct,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(get(&s, "/api/v1/namespaces/default/pods/p").0, 200);
    let r = s.call(&s.token, "POST", path, Some(evict("p").as_bytes()), &ct);
    assert_eq!(r.status, 201, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
    );
    assert_eq!(get(&s, "/api/v1/namespaces/default/pods/p").0, 404);
    let r = s.call(&s.token, "POST", path, Some(evict("p").as_bytes()), &ct);
    assert_eq!(r.status, 404, "{}", r.body);
    // Only create: a GET of the subresource is not allowed.
    let r = s.call(&s.token, "GET", path, None, &[]);
    assert_eq!(r.status, 405, "{}", r.body);

    // Discovery lists it with the kind kubectl drain looks for.
    let (_, v1) = get(&s, "/api/v1");
    let entry = v1["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .cloned()
        .expect("pods/eviction in /api/v1");
    assert_eq!(
        (
            &entry["group"],
            &entry["version"],
            &entry["kind"],
            &entry["verbs"]
        ),
        (
            &json!("policy"),
            &json!("v1"),
            &json!("Eviction"),
            &json!(["create"])
        )
    );
}

/// The stored object without what differs between any two creates (identity, times, allocated
/// addresses, the manager's name) and with `namespace`/`name` replaced.
fn comparable(mut v: Value) -> Value {
    let meta = v["metadata"].as_object_mut().expect("metadata");
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "namespace",
        "name",
    ] {
        meta.remove(k);
    }
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        labels.remove("kubernetes.io/metadata.name");
    }
    if let Some(mf) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
        for e in mf {
            let e = e.as_object_mut().expect("entry");
            e.remove("time");
            e.remove("manager");
        }
    }
    if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
    }
    v
}

#[test]
fn protobuf_and_json_creates_of_a_service_and_a_namespace_store_the_same_object() {
    let s = TestServer::start(DUAL);
    let protobuf = Kubectl::require("1.33");
    let json_client = Kubectl::require("1.31");
    s.kubectl_ok(&protobuf, &["create", "namespace", "team-pb"]);
    s.kubectl_ok(&json_client, &["create", "namespace", "team-json"]);
    let (_, ns_pb) = get(&s, "/api/v1/namespaces/team-pb");
    let (_, ns_json) = get(&s, "/api/v1/namespaces/team-json");
    assert_eq!(comparable(ns_pb), comparable(ns_json));

    for (k, ns) in [(&protobuf, "team-pb"), (&json_client, "team-json")] {
        s.kubectl_ok(
            k,
            &[
                "create",
                "service",
                "clusterip",
                "web",
                "--tcp=80:8080",
                "-n",
                ns,
            ],
        );
    }
    let (_, svc_pb) = get(&s, "/api/v1/namespaces/team-pb/services/web");
    let (_, svc_json) = get(&s, "/api/v1/namespaces/team-json/services/web");
    for field in [
        "externalName",
        "externalTrafficPolicy",
        "healthCheckNodePort",
        "loadBalancerIP",
    ] {
        assert!(
            svc_pb["spec"].get(field).is_none(),
            "{field} stored: {svc_pb}"
        );
    }
    assert!(svc_pb["metadata"].get("generateName").is_none());
    assert!(svc_pb["spec"]["ports"][0].get("nodePort").is_none());
    assert_eq!(comparable(svc_pb), comparable(svc_json));
}
