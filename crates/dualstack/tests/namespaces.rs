//! Namespace lifecycle: `default` and `kube-system` exist; deleting a namespace makes it
//! Terminating, refuses new content, deletes everything in it (also what Services held), then
//! removes the namespace.

mod common;

use std::time::Duration;

use common::{TestServer, eventually};
use serde_json::{Value, json};

fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let (code, text) = s
        .request(
            "POST",
            path,
            Some(&body.to_string()),
            Some("application/json"),
        )
        .unwrap();
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn deleting_a_namespace_deletes_its_objects_and_then_itself() {
    let s = TestServer::start(&["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (code, _) = s
            .request("GET", &format!("/api/v1/namespaces/{ns}"), None, None)
            .unwrap();
        assert_eq!(code, 200, "{ns}");
    }
    let (code, ns) = post(
        &s,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "doomed"}}),
    );
    assert_eq!(code, 201);
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "doomed"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    let (code, svc) = post(
        &s,
        "/api/v1/namespaces/doomed/services",
        json!({"metadata": {"name": "web"}, "spec": {"ipFamilyPolicy": "RequireDualStack", "ports": [{"port": 80}]}}),
    );
    assert_eq!(code, 201, "{svc}");
    let ips: Vec<String> = svc["spec"]["clusterIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let (code, _) = post(
        &s,
        "/api/v1/namespaces/doomed/configmaps",
        json!({"metadata": {"name": "c"}, "data": {"a": "b"}}),
    );
    assert_eq!(code, 201);
    let (code, _) = post(
        &s,
        "/api/v1/namespaces/doomed/pods",
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "x"}]}}),
    );
    assert_eq!(code, 201);

    let (code, body) = s
        .request("DELETE", "/api/v1/namespaces/doomed", None, None)
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let marked: Value = serde_json::from_str(&body).unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["status"]["phase"], "Terminating");

    // While it terminates, or once gone, new content is refused.
    let (code, refused) = post(
        &s,
        "/api/v1/namespaces/doomed/configmaps",
        json!({"metadata": {"name": "late"}}),
    );
    assert!(code == 403 || code == 404, "{code} {refused}");

    let gone = eventually(Duration::from_secs(20), || {
        let (code, _) = s
            .request("GET", "/api/v1/namespaces/doomed", None, None)
            .unwrap();
        (code == 404).then_some(())
    });
    assert!(gone.is_some(), "namespace not deleted; log:\n{}", s.log());
    for path in [
        "/api/v1/namespaces/doomed/services/web",
        "/api/v1/namespaces/doomed/configmaps/c",
        "/api/v1/namespaces/doomed/pods/p",
    ] {
        let (code, _) = s.request("GET", path, None, None).unwrap();
        assert_eq!(code, 404, "{path} survived");
    }
    for ip in ips {
        let (code, _) = s
            .request(
                "GET",
                &format!("/apis/networking.k8s.io/v1/ipaddresses/{ip}"),
                None,
                None,
            )
            .unwrap();
        assert_eq!(code, 404, "{ip} still recorded");
    }
}
