//! Authorization hardening against the real server (issue 8, findings 1, 6, 7, 13, 14): node
//! leases, NodeRestriction on the Node object, ConfigMaps through the node graph,
//! impersonation (also with `kubectl --as`), the access reviews behind `kubectl auth can-i` and
//! `auth whoami`, the protected system namespaces and the bootstrap objects coming back.

mod common;

use std::time::{Duration, Instant};

use common::{Kubectl, Response, TestServer, eventually};
use serde_json::{Value, json};

const DUAL: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

fn send(s: &TestServer, token: &str, method: &str, path: &str, body: Option<Value>) -> Response {
    send_h(s, token, method, path, body, &[])
}

fn send_h(
    s: &TestServer,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Response {
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let body = body.map(|b| b.to_string());
    let mut h = vec![("Content-Type", ct)];
    h.extend_from_slice(headers);
    s.call(token, method, path, body.as_deref().map(str::as_bytes), &h)
}

fn ok(r: &Response) -> Value {
    assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
    r.json()
}

/// Asserts a `Status` failure and returns its message.
fn failure(r: &Response, code: u16, reason: &str) -> String {
    assert_eq!(r.status, code, "want {code} {reason}: {}", r.body);
    let v = r.json();
    assert_eq!(
        (v["kind"].as_str(), v["reason"].as_str()),
        (Some("Status"), Some(reason)),
        "{v}"
    );
    assert_eq!(v["code"], code, "{v}");
    v["message"].as_str().unwrap_or("").to_string()
}

fn lease(name: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
           "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}})
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn a_node_may_touch_only_its_own_lease_and_no_lease_collection() {
    let s = TestServer::start(DUAL);
    let (a, b) = (
        common::node_token(&s, "node-a", None),
        common::node_token(&s, "node-b", None),
    );
    ok(&send(&s, &b, "POST", LEASES, Some(lease("node-b"))));
    // The name in the body counts.
    let msg = failure(
        &send(&s, &a, "POST", LEASES, Some(lease("node-b"))),
        403,
        "Forbidden",
    );
    assert_eq!(
        msg,
        r#"leases.coordination.k8s.io "node-b" is forbidden: can only access node lease with the same name as the requesting node"#
    );
    ok(&send(&s, &a, "POST", LEASES, Some(lease("node-a"))));
    ok(&send(&s, &a, "GET", &format!("{LEASES}/node-a"), None));
    ok(&send(
        &s,
        &a,
        "PATCH",
        &format!("{LEASES}/node-a"),
        Some(json!({"spec": {"leaseDurationSeconds": 41}})),
    ));
    for (method, path) in [
        ("GET", format!("{LEASES}/node-b")),
        ("PUT", format!("{LEASES}/node-b")),
        ("DELETE", format!("{LEASES}/node-b")),
    ] {
        let msg = failure(
            &send(&s, &a, method, &path, Some(lease("node-b"))),
            403,
            "Forbidden",
        );
        assert!(
            msg.ends_with(": can only access node lease with the same name as the requesting node"),
            "{msg}"
        );
    }
    // No list, watch or collection delete (with or without dryRun).
    for (method, path, verb) in [
        ("GET", LEASES.to_string(), "list"),
        (
            "GET",
            format!("{LEASES}?watch=true&timeoutSeconds=1"),
            "watch",
        ),
        ("DELETE", LEASES.to_string(), "deletecollection"),
        ("DELETE", format!("{LEASES}?dryRun=All"), "deletecollection"),
    ] {
        let msg = failure(&send(&s, &a, method, &path, None), 403, "Forbidden");
        assert_eq!(
            msg,
            format!(
                r#"leases.coordination.k8s.io is forbidden: User "system:node:node-a" cannot {verb} resource "leases" in API group "coordination.k8s.io" in the namespace "kube-node-lease": can only get, create, update, patch, or delete a node lease"#
            )
        );
    }
    // Leases elsewhere are not a node's.
    let r = send(
        &s,
        &a,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        Some(lease("node-a")),
    );
    failure(&r, 403, "Forbidden");
    // node-b's lease is intact; node-a may delete its own.
    ok(&send(
        &s,
        &s.token,
        "GET",
        &format!("{LEASES}/node-b"),
        None,
    ));
    ok(&send(&s, &a, "DELETE", &format!("{LEASES}/node-a"), None));
}

#[test]
fn a_node_may_not_set_restricted_labels_taints_or_pod_cidrs_on_its_own_node() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    let node = |extra: Value| {
        let mut n = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1",
            "labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux"}}});
        json_merge(&mut n, &extra);
        n
    };
    let cases = [
        (
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"#,
        ),
        (
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "gold"}}}),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to set the following labels: node-restriction.kubernetes.io/pool"#,
        ),
        (
            json!({"spec": {"podCIDRs": ["10.244.7.0/24"]}}),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to set podCIDRs"#,
        ),
    ];
    for (extra, want) in &cases {
        let r = send(&s, &t, "POST", "/api/v1/nodes", Some(node(extra.clone())));
        assert_eq!(failure(&r, 403, "Forbidden"), *want);
        // Not with dryRun either.
        let r = send(
            &s,
            &t,
            "POST",
            "/api/v1/nodes?dryRun=All",
            Some(node(extra.clone())),
        );
        assert_eq!(failure(&r, 403, "Forbidden"), *want);
    }
    // Registering with kubelet labels and taints (--register-with-taints) is fine.
    ok(&send(
        &s,
        &t,
        "POST",
        "/api/v1/nodes",
        Some(node(
            json!({"metadata": {"labels": {"node.kubernetes.io/instance-type": "m1"}},
                        "spec": {"taints": [{"key": "boot", "effect": "NoSchedule"}]}}),
        )),
    ));
    let patches = [
        (
            json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": ""}}}),
            r#"nodes "n1" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker"#,
        ),
        (
            json!({"spec": {"taints": null}}),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to modify taints"#,
        ),
        (
            json!({"spec": {"taints": [{"key": "boot", "effect": "NoSchedule"}, {"key": "x", "effect": "NoExecute"}]}}),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to modify taints"#,
        ),
        (
            json!({"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}}),
            r#"nodes "n1" is forbidden: node "n1" is not allowed to modify podCIDRs"#,
        ),
    ];
    for (patch, want) in &patches {
        let r = send(&s, &t, "PATCH", "/api/v1/nodes/n1", Some(patch.clone()));
        assert_eq!(failure(&r, 403, "Forbidden"), *want, "{patch}");
    }
    // Through the status subresource too (its metadata comes from the request).
    let r = send(
        &s,
        &t,
        "PATCH",
        "/api/v1/nodes/n1/status",
        Some(json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": ""}}})),
    );
    failure(&r, 403, "Forbidden");
    // The admin may; then the node may not remove it.
    ok(&send(
        &s,
        &s.token,
        "PATCH",
        "/api/v1/nodes/n1",
        Some(json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": ""}}})),
    ));
    let r = send(
        &s,
        &t,
        "PATCH",
        "/api/v1/nodes/n1",
        Some(json!({"metadata": {"labels": {"node-role.kubernetes.io/worker": null}}})),
    );
    assert_eq!(
        failure(&r, 403, "Forbidden"),
        r#"nodes "n1" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker"#
    );
    // Other labels and status are the node's to change.
    let n = ok(&send(
        &s,
        &t,
        "PATCH",
        "/api/v1/nodes/n1",
        Some(
            json!({"metadata": {"labels": {"example.com/rack": "r1", "kubernetes.io/arch": "amd64"}}}),
        ),
    ));
    assert_eq!(n["metadata"]["labels"]["example.com/rack"], "r1");
    assert_eq!(n["spec"]["taints"][0]["key"], "boot");
    assert!(n["spec"]["podCIDRs"].is_null());
}

fn json_merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                json_merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

#[test]
fn a_node_reads_only_the_configmaps_of_pods_bound_to_it() {
    let s = TestServer::start(DUAL);
    let (t1, t2) = (
        common::node_token(&s, "n1", None),
        common::node_token(&s, "n2", None),
    );
    let cms = "/api/v1/namespaces/default/configmaps";
    for name in ["vol", "env", "other"] {
        ok(&send(
            &s,
            &s.token,
            "POST",
            cms,
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}),
            ),
        ));
    }
    ok(&send(
        &s,
        &s.token,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
            "spec": {"nodeName": "n1",
                "volumes": [{"name": "cfg", "configMap": {"name": "vol"}}],
                "containers": [{"name": "c", "image": "registry.example/app:1",
                    "envFrom": [{"configMapRef": {"name": "env"}}]}]}}),
        ),
    ));
    for name in ["vol", "env"] {
        let cm = ok(&send(&s, &t1, "GET", &format!("{cms}/{name}"), None));
        assert_eq!(cm["data"]["k"], "v");
    }
    for (token, node, name) in [(&t1, "n1", "other"), (&t2, "n2", "vol")] {
        let msg = failure(
            &send(&s, token, "GET", &format!("{cms}/{name}"), None),
            403,
            "Forbidden",
        );
        assert_eq!(
            msg,
            format!(
                r#"configmaps "{name}" is forbidden: User "system:node:{node}" cannot get resource "configmaps" in API group "" in the namespace "default": no relationship found between node '{node}' and this object"#
            )
        );
    }
    for path in [
        cms.to_string(),
        "/api/v1/configmaps".to_string(),
        format!("{cms}?watch=true&timeoutSeconds=1"),
    ] {
        let msg = failure(&send(&s, &t1, "GET", &path, None), 403, "Forbidden");
        assert!(
            msg.ends_with(": can only get individual resources of this type"),
            "{msg}"
        );
    }
    // The relationship ends with the pod.
    ok(&send(
        &s,
        &s.token,
        "DELETE",
        "/api/v1/namespaces/default/pods/p1?gracePeriodSeconds=0",
        None,
    ));
    let gone = eventually(Duration::from_secs(10), || {
        (send(&s, &t1, "GET", &format!("{cms}/vol"), None).status == 403).then_some(())
    });
    assert!(gone.is_some(), "n1 still reads vol after its pod is gone");
}

#[test]
fn impersonation_is_for_the_admin_only_and_runs_the_request_as_the_impersonated_user() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    ok(&send(
        &s,
        &s.token,
        "POST",
        "/api/v1/nodes",
        Some(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})),
    ));
    // A node may not impersonate anyone (not even the admin).
    let r = send_h(
        &s,
        &t,
        "GET",
        "/api/v1/namespaces/default/services",
        None,
        &[("Impersonate-User", "admin")],
    );
    assert_eq!(
        failure(&r, 403, "Forbidden"),
        r#"users "admin" is forbidden: User "system:node:n1" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );
    let r = send_h(
        &s,
        &t,
        "GET",
        "/api/v1/namespaces/default/services",
        None,
        &[
            ("Impersonate-User", "system:node:n1"),
            ("Impersonate-Group", "system:masters"),
        ],
    );
    failure(&r, 403, "Forbidden");
    // Nor may the anonymous user on the public endpoints.
    let r = s.call(
        "",
        "GET",
        "/healthz",
        None,
        &[("Impersonate-User", "admin")],
    );
    assert_eq!(
        failure(&r, 403, "Forbidden"),
        r#"users "admin" is forbidden: User "system:anonymous" cannot impersonate resource "users" in API group "" at the cluster scope"#
    );
    // Groups without a user: upstream's 500.
    let r = send_h(
        &s,
        &s.token,
        "GET",
        "/api/v1/nodes",
        None,
        &[("Impersonate-Group", "system:masters")],
    );
    let msg = failure(&r, 500, "InternalError");
    assert!(msg.ends_with("without impersonating a user"), "{msg}");
    // The admin as a node: node authorization applies.
    let as_node = [
        ("Impersonate-User", "system:node:n1"),
        ("Impersonate-Group", "system:nodes"),
    ];
    ok(&send_h(
        &s,
        &s.token,
        "GET",
        "/api/v1/nodes",
        None,
        &as_node,
    ));
    let r = send_h(
        &s,
        &s.token,
        "PATCH",
        "/api/v1/nodes/n2",
        Some(json!({"metadata": {"labels": {"a": "b"}}})),
        &as_node,
    );
    assert_eq!(
        failure(&r, 403, "Forbidden"),
        r#"nodes "n2" is forbidden: User "system:node:n1" cannot patch resource "nodes" in API group "" at the cluster scope: node 'n1' cannot modify node 'n2'"#
    );
    // A user with no rights gets 403s.
    let r = send_h(
        &s,
        &s.token,
        "GET",
        "/api/v1/namespaces/default/services",
        None,
        &[("Impersonate-User", "jane")],
    );
    assert_eq!(
        failure(&r, 403, "Forbidden"),
        r#"services is forbidden: User "jane" cannot list resource "services" in API group "" in the namespace "default""#
    );
    // whoami shows who the request runs as.
    let r = send_h(
        &s,
        &s.token,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        &[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Uid", "u-1"),
            ("Impersonate-Extra-Scopes", "view"),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["status"]["userInfo"],
        json!({"username": "jane", "uid": "u-1", "groups": ["devs", "system:authenticated"], "extra": {"scopes": ["view"]}})
    );
}

fn kubectl_versions() -> Vec<(&'static str, Kubectl)> {
    ["1.27", "1.28", "1.29", "1.30", "1.31"]
        .into_iter()
        .map(|v| (v, Kubectl::require(v)))
        .collect()
}

#[test]
fn kubectl_as_a_node_gets_node_authorization() {
    let s = TestServer::start(DUAL);
    let k = Kubectl::require("1.33");
    let as_node = ["--as=system:node:n1", "--as-group=system:nodes"];
    let out = s.kubectl(
        &k,
        &[&as_node[..], &["get", "svc", "kubernetes", "-o", "name"]].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "service/kubernetes");
    let out = s.kubectl(
        &k,
        &[&as_node[..], &["delete", "svc", "kubernetes"]].concat(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"services "kubernetes" is forbidden: User "system:node:n1" cannot delete resource "services" in API group "" in the namespace "default""#),
        "{}",
        stderr(&out)
    );
    // kubectl 1.31 sends the review as JSON; 1.33 sends protobuf (tested below).
    let out = s.kubectl(
        &Kubectl::require("1.31"),
        &[
            "--as=system:node:n1",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "system:node:n1");
}

#[test]
fn kubectl_auth_can_i_answers_from_the_authorizer_on_every_version() {
    let s = TestServer::start(DUAL);
    let as_node = ["--as=system:node:n1", "--as-group=system:nodes"];
    for (v, k) in kubectl_versions() {
        let can = |args: &[&str]| -> String {
            let out = s.kubectl(&k, &[&["auth", "can-i"][..], args].concat());
            // can-i exits 1 for "no" and prints "no - <reason>" when there is one.
            let text = stdout(&out);
            let answer = text.split(" - ").next().unwrap_or("").to_string();
            assert!(
                answer == "yes" || answer == "no",
                "kubectl {v} auth can-i {args:?}: {text} / {}",
                stderr(&out)
            );
            answer
        };
        assert_eq!(can(&["create", "services"]), "yes", "{v}");
        assert_eq!(can(&["delete", "nodes/anything"]), "yes", "{v}");
        assert_eq!(
            can(&[&as_node[..], &["create", "services"]].concat()),
            "no",
            "{v}"
        );
        assert_eq!(
            can(&[&as_node[..], &["patch", "nodes/n1"]].concat()),
            "yes",
            "{v}"
        );
        assert_eq!(
            can(&[&as_node[..], &["patch", "nodes/n2"]].concat()),
            "no",
            "{v}"
        );
        assert_eq!(
            can(&[&as_node[..], &["get", "leases/n1", "-n", "kube-node-lease"]].concat()),
            "yes",
            "{v}"
        );
        assert_eq!(
            can(&[&as_node[..], &["list", "leases", "-n", "kube-node-lease"]].concat()),
            "no",
            "{v}"
        );
        assert_eq!(
            can(&[&as_node[..], &["get", "configmaps/x"]].concat()),
            "no",
            "{v}"
        );
        assert_eq!(can(&["--as=jane", "get", "pods"]), "no", "{v}");
        assert_eq!(
            can(&["get", "--subresource=status", "nodes/n1"]),
            "yes",
            "{v}"
        );

        let out = s.kubectl(
            &k,
            &[
                &as_node[..],
                &["auth", "can-i", "--list", "-n", "kube-node-lease"],
            ]
            .concat(),
        );
        assert!(out.status.success(), "kubectl {v}: {}", stderr(&out));
        let list = stdout(&out);
        assert!(
            list.contains("leases.coordination.k8s.io")
                && list.contains("[n1]")
                && list.contains("[/api/*]"),
            "kubectl {v}:\n{list}"
        );
        let out = s.kubectl(&k, &["auth", "can-i", "--list"]);
        assert!(out.status.success(), "kubectl {v}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("*.*"),
            "kubectl {v}:\n{}",
            stdout(&out)
        );
        if v != "1.27" {
            let out = s.kubectl(&k, &["auth", "whoami", "-o", "json"]);
            assert!(
                out.status.success(),
                "kubectl {v} auth whoami: {}",
                stderr(&out)
            );
            let who: Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(who["status"]["userInfo"]["username"], "admin", "{v}");
        }
    }
}

#[test]
fn kubectl_1_33_auth_can_i_and_whoami_send_protobuf_reviews() {
    let s = TestServer::start(DUAL);
    let k = Kubectl::require("1.33");
    let out = s.kubectl(&k, &["auth", "can-i", "create", "services"]);
    assert_eq!(stdout(&out), "yes", "{}", stderr(&out));
    let out = s.kubectl(
        &k,
        &[
            "--as=system:node:n1",
            "--as-group=system:nodes",
            "auth",
            "can-i",
            "create",
            "services",
        ],
    );
    assert_eq!(stdout(&out), "no", "{}", stderr(&out));
    let out = s.kubectl(&k, &["auth", "can-i", "--list"]);
    assert!(stdout(&out).contains("*.*"), "{}", stderr(&out));
    let out = s.kubectl(
        &k,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(stdout(&out), "admin", "{}", stderr(&out));
}

#[test]
fn the_reviews_are_in_discovery_and_create_only() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    let d = ok(&send(
        &s,
        &s.token,
        "GET",
        "/apis/authorization.k8s.io/v1",
        None,
    ));
    let names: Vec<&str> = d["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "selfsubjectaccessreviews",
            "selfsubjectrulesreviews",
            "subjectaccessreviews"
        ]
    );
    assert_eq!(d["resources"][0]["verbs"], json!(["create"]));
    ok(&send(
        &s,
        &s.token,
        "GET",
        "/apis/authentication.k8s.io",
        None,
    ));
    let r = s.call(
        &s.token,
        "GET",
        "/apis",
        None,
        &[(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )],
    );
    assert!(
        r.body.contains("\"selfsubjectreviews\"")
            && r.body.contains("\"selfsubjectaccessreviews\""),
        "{}",
        r.body
    );
    // Not stored: no GET or LIST.
    let r = send(
        &s,
        &s.token,
        "GET",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        None,
    );
    failure(&r, 405, "MethodNotAllowed");
    // A node asks about itself; the answer is the authorizer's, with its reason.
    let ssar = |token: &str, attrs: Value| {
        let r = send(
            &s,
            token,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            Some(
                json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": attrs}),
            ),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["status"].clone()
    };
    assert_eq!(
        ssar(
            &t,
            json!({"resourceAttributes": {"verb": "deletecollection", "group": "coordination.k8s.io", "resource": "leases", "namespace": "kube-node-lease"}})
        ),
        json!({"allowed": false, "reason": "can only get, create, update, patch, or delete a node lease"})
    );
    assert_eq!(
        ssar(
            &t,
            json!({"resourceAttributes": {"verb": "list", "resource": "pods", "fieldSelector": {"rawSelector": "spec.nodeName=n1"}}})
        ),
        json!({"allowed": true})
    );
    assert_eq!(
        ssar(
            &t,
            json!({"nonResourceAttributes": {"verb": "get", "path": "/apis"}})
        ),
        json!({"allowed": true})
    );
    assert_eq!(
        ssar(
            &t,
            json!({"nonResourceAttributes": {"verb": "get", "path": "/metrics"}})
        ),
        json!({"allowed": false})
    );
    // SubjectAccessReview: the admin asks about anyone; a node may not.
    let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "system:node:n1", "groups": ["system:nodes"], "resourceAttributes": {"verb": "update", "resource": "nodes", "name": "n2"}}});
    let r = send(
        &s,
        &s.token,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        Some(sar.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["status"],
        json!({"allowed": false, "reason": "node 'n1' cannot modify node 'n2'"})
    );
    let r = send(
        &s,
        &t,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        Some(sar),
    );
    assert_eq!(
        failure(&r, 403, "Forbidden"),
        r#"subjectaccessreviews.authorization.k8s.io is forbidden: User "system:node:n1" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#
    );
    // Rules review of a node in kube-node-lease lists its own lease.
    let r = send(
        &s,
        &t,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        Some(
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "kube-node-lease"}}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let st = r.json()["status"].clone();
    assert_eq!(st["incomplete"], true);
    assert!(
        st["resourceRules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["resources"] == json!(["leases"]) && r["resourceNames"] == json!(["n1"])),
        "{st}"
    );
}

#[test]
fn the_system_namespaces_may_not_be_deleted() {
    let s = TestServer::start(DUAL);
    for ns in ["default", "kube-system", "kube-public"] {
        let r = send(
            &s,
            &s.token,
            "DELETE",
            &format!("/api/v1/namespaces/{ns}"),
            None,
        );
        assert_eq!(
            failure(&r, 403, "Forbidden"),
            format!(r#"namespaces "{ns}" is forbidden: this namespace may not be deleted"#)
        );
        let n = ok(&send(
            &s,
            &s.token,
            "GET",
            &format!("/api/v1/namespaces/{ns}"),
            None,
        ));
        assert_eq!(n["status"]["phase"], "Active");
    }
    let k = Kubectl::require("1.33");
    let out = s.kubectl(&k, &["delete", "ns", "kube-public"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            r#"namespaces "kube-public" is forbidden: this namespace may not be deleted"#
        ),
        "{}",
        stderr(&out)
    );
}

fn wait_back(s: &TestServer, path: &str, within: Duration) -> Value {
    eventually(within, || {
        let r = send(s, &s.token, "GET", path, None);
        (r.status == 200).then(|| r.json())
    })
    .unwrap_or_else(|| panic!("{path} did not come back within {within:?}"))
}

#[test]
fn a_deleted_kubernetes_service_its_endpoints_and_kube_node_lease_come_back() {
    let s = TestServer::start(DUAL);
    let k = Kubectl::require("1.33");
    let before = ok(&send(
        &s,
        &s.token,
        "GET",
        "/api/v1/namespaces/default/services/kubernetes",
        None,
    ));
    let start = Instant::now();
    s.kubectl_ok(&k, &["delete", "svc", "kubernetes"]);
    // The endpoints controller may have removed them with the Service already.
    s.kubectl_ok(
        &k,
        &["delete", "endpoints", "kubernetes", "--ignore-not-found"],
    );
    s.kubectl_ok(
        &k,
        &[
            "delete",
            "endpointslices.discovery.k8s.io",
            "kubernetes",
            "--ignore-not-found",
        ],
    );
    let svc = wait_back(
        &s,
        "/api/v1/namespaces/default/services/kubernetes",
        Duration::from_secs(30),
    );
    assert_eq!(svc["spec"]["clusterIP"], before["spec"]["clusterIP"]);
    assert_ne!(svc["metadata"]["uid"], before["metadata"]["uid"]);
    wait_back(
        &s,
        "/api/v1/namespaces/default/endpoints/kubernetes",
        Duration::from_secs(30),
    );
    wait_back(
        &s,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        Duration::from_secs(30),
    );
    eprintln!("kubernetes Service back after {:?}", start.elapsed());
    let out = s.kubectl_ok(&k, &["get", "svc", "kubernetes", "-o", "name"]);
    assert_eq!(out.trim(), "service/kubernetes");
    // kube-node-lease may be deleted (as upstream) and is recreated once gone.
    ok(&send(
        &s,
        &s.token,
        "DELETE",
        "/api/v1/namespaces/kube-node-lease",
        None,
    ));
    let ns = eventually(Duration::from_secs(30), || {
        let r = send(
            &s,
            &s.token,
            "GET",
            "/api/v1/namespaces/kube-node-lease",
            None,
        );
        (r.status == 200 && r.json()["status"]["phase"] == "Active").then(|| r.json())
    });
    assert!(
        ns.is_some(),
        "kube-node-lease did not come back; log:\n{}",
        s.log()
    );
}
