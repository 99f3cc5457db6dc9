//! Graceful deletion as upstream's registry does it: a pod in its grace period stays while
//! its kubelet updates its status, and goes when deleted with grace 0.

mod common;

use common::TestServer;
use serde_json::json;

#[test]
fn a_pod_in_its_grace_period_survives_status_updates_until_deleted_with_grace_zero() {
    let s = TestServer::start(&[]);
    let path = "/api/v1/namespaces/default/pods";
    s.create_json(
        path,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30,
                     "containers": [{"name": "c", "image": "x"}]}
        }),
    );
    let pod = format!("{path}/p");
    let (code, out) = s.json_call("DELETE", &pod, None, "");
    assert_eq!(code, 200, "{out}");
    assert!(out["metadata"]["deletionTimestamp"].is_string(), "{out}");
    assert_eq!(out["metadata"]["deletionGracePeriodSeconds"], 30);

    // The kubelet reports its containers stopping: the pod must stay.
    let (code, out) = s.json_call(
        "PATCH",
        &format!("{pod}/status"),
        Some(&json!({"status": {"phase": "Succeeded"}})),
        "application/merge-patch+json",
    );
    assert_eq!(code, 200, "{out}");
    let (code, out) = s.json_call("GET", &pod, None, "");
    assert_eq!(
        code, 200,
        "the pod is still there in its grace period: {out}"
    );

    // The kubelet's final delete with grace 0 removes it.
    let (code, out) = s.json_call(
        "DELETE",
        &pod,
        Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})),
        "application/json",
    );
    assert_eq!(code, 200, "{out}");
    let (code, _) = s.json_call("GET", &pod, None, "");
    assert_eq!(code, 404);
}
