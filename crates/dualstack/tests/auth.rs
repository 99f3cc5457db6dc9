//! Authentication, node authorization and the listening surface of the real server: 401
//! `Status` without a valid token (health and version stay anonymous), what a node token
//! (`dualstack token create --node n1`) may and may not do with upstream's 403 messages, its
//! kubeconfig with real kubectl, the bind address, and the serving certificate's SANs.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{Kubectl, Response, TestServer, write_temp};
use serde_json::{Value, json};

const DUAL: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];

fn send(s: &TestServer, token: &str, method: &str, path: &str, body: Option<Value>) -> Response {
    let ct = if method == "PATCH" {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let body = body.map(|b| b.to_string());
    s.call(
        token,
        method,
        path,
        body.as_deref().map(str::as_bytes),
        &[("Content-Type", ct)],
    )
}

fn admin(s: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = send(s, &s.token, method, path, body);
    assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
    r.json()
}

fn assert_ok(r: &Response) -> Value {
    assert!((200..300).contains(&r.status), "{}: {}", r.status, r.body);
    r.json()
}

fn assert_failure(r: &Response, code: u16, reason: &str) -> String {
    assert_eq!(
        r.status, code,
        "want {code} {reason}: {} {}",
        r.body, r.curl_error
    );
    let v = r.json();
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
    v["message"].as_str().unwrap_or("").to_string()
}

fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/app:1"}]}})
}

#[test]
fn requests_without_a_valid_token_are_401_while_health_and_version_are_anonymous() {
    let s = TestServer::start(&[]);
    for token in ["", "not-a-token", &format!("{}x", s.token)] {
        for path in [
            "/api",
            "/apis",
            "/api/v1/namespaces",
            "/api/v1/namespaces/default/services",
            "/openapi/v2",
            "/metrics",
        ] {
            let r = s.call(token, "GET", path, None, &[]);
            let msg = assert_failure(&r, 401, "Unauthorized");
            assert_eq!(msg, "Unauthorized", "{path}");
        }
        // HTTP/1.1 here: the server answers 401 without reading the body and then resets the
        // HTTP/2 stream with NO_ERROR (RFC 9113 §8.1, as Go's server does); curl 7.88 sometimes
        // reports that as a framing error instead of the 401 (kubectl gets the 401).
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "anon"}});
        let r = s.call_with(
            &["--http1.1"],
            token,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(body.to_string().as_bytes()),
            &[("Content-Type", "application/json")],
        );
        assert_failure(&r, 401, "Unauthorized");
    }
    let r = s.call(
        "",
        "GET",
        "/api",
        None,
        &[("Authorization", "Basic YWRtaW46YWRtaW4=")],
    );
    assert_failure(&r, 401, "Unauthorized");
    let r = send(
        &s,
        &s.token,
        "GET",
        "/api/v1/namespaces/default/configmaps/anon",
        None,
    );
    assert_failure(&r, 404, "NotFound");

    // Anonymous (no credentials at all) may read health and version.
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = s.call("", "GET", path, None, &[]);
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
    }
    for path in ["/version", "/version/"] {
        let r = s.call("", "GET", path, None, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let v = r.json();
        for f in [
            "major",
            "minor",
            "gitVersion",
            "gitCommit",
            "gitTreeState",
            "buildDate",
            "goVersion",
            "compiler",
            "platform",
        ] {
            assert!(v[f].is_string(), "{path}: {f} missing in {v}");
        }
    }
    // A bad token is not anonymous (upstream: a failed bearer token is never anonymous).
    let r = s.call("not-a-token", "GET", "/healthz", None, &[]);
    assert_eq!(r.status, 401, "{}", r.body);
}

#[test]
fn a_node_token_may_register_and_update_its_own_node_and_its_status() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    let created = assert_ok(&send(&s, &t, "POST", "/api/v1/nodes", Some(node("n1"))));
    assert_eq!(created["metadata"]["name"], "n1");
    let mut obj = created.clone();
    obj["metadata"]["labels"] = json!({"topology.kubernetes.io/zone": "a"});
    let updated = assert_ok(&send(&s, &t, "PUT", "/api/v1/nodes/n1", Some(obj)));
    assert_eq!(
        updated["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "a"
    );
    let status = json!({"status": {"addresses": [
        {"type": "InternalIP", "address": "192.0.2.11"},
        {"type": "InternalIP", "address": "2001:db8:1::11"}]}});
    assert_ok(&send(
        &s,
        &t,
        "PATCH",
        "/api/v1/nodes/n1/status",
        Some(status),
    ));
    let mut cur = admin(&s, "GET", "/api/v1/nodes/n1", None);
    assert_eq!(cur["status"]["addresses"][1]["address"], "2001:db8:1::11");
    cur["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "message": "ready", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    assert_ok(&send(&s, &t, "PUT", "/api/v1/nodes/n1/status", Some(cur)));
    let cur = admin(&s, "GET", "/api/v1/nodes/n1", None);
    assert_eq!(cur["status"]["conditions"][0]["type"], "Ready");
    // Reading nodes (its own and others) is allowed, as for upstream's system:node role.
    assert_ok(&send(&s, &t, "GET", "/api/v1/nodes/n1", None));
    assert_ok(&send(&s, &t, "GET", "/api/v1/nodes", None));
}

#[test]
fn a_node_token_gets_403_with_upstreams_message_for_other_nodes() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    admin(
        &s,
        "POST",
        "/api/v1/nodes",
        Some(json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": "n2", "labels": {"owner": "admin"}}})),
    );
    let n2 = admin(&s, "GET", "/api/v1/nodes/n2", None);

    let mut changed = n2.clone();
    changed["metadata"]["labels"]["owner"] = json!("n1");
    let msg = assert_failure(
        &send(&s, &t, "PUT", "/api/v1/nodes/n2", Some(changed)),
        403,
        "Forbidden",
    );
    assert!(
        msg.starts_with(r#"nodes "n2" is forbidden: User "system:node:n1" cannot update resource "nodes" in API group "" at the cluster scope: "#),
        "{msg}"
    );
    let msg = assert_failure(
        &send(
            &s,
            &t,
            "PATCH",
            "/api/v1/nodes/n2/status",
            Some(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.99"}]}}),
            ),
        ),
        403,
        "Forbidden",
    );
    assert!(
        msg.starts_with(r#"nodes "n2" is forbidden: User "system:node:n1" cannot patch resource "nodes/status" in API group "" at the cluster scope: "#),
        "{msg}"
    );
    let msg = assert_failure(
        &send(&s, &t, "DELETE", "/api/v1/nodes/n2", None),
        403,
        "Forbidden",
    );
    assert!(
        msg.starts_with(
            r#"nodes "n2" is forbidden: User "system:node:n1" cannot delete resource "nodes""#
        ),
        "{msg}"
    );
    let msg = assert_failure(
        &send(&s, &t, "POST", "/api/v1/nodes", Some(node("n3"))),
        403,
        "Forbidden",
    );
    assert!(
        msg.contains(r#"User "system:node:n1" cannot create resource "nodes" in API group "" at the cluster scope"#),
        "{msg}"
    );
    // Nothing changed.
    let now = admin(&s, "GET", "/api/v1/nodes/n2", None);
    assert_eq!(now["metadata"]["labels"]["owner"], "admin");
    assert_eq!(
        now["metadata"]["resourceVersion"],
        n2["metadata"]["resourceVersion"]
    );
    assert!(now["status"].get("addresses").is_none(), "{now}");
    let r = send(&s, &s.token, "GET", "/api/v1/nodes/n3", None);
    assert_failure(&r, 404, "NotFound");
}

#[test]
fn a_node_token_sees_and_updates_only_the_pods_bound_to_it() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    let pods = "/api/v1/namespaces/default/pods";
    admin(&s, "POST", pods, Some(pod("p1", "n1")));
    admin(&s, "POST", pods, Some(pod("p2", "n2")));

    // Lists only with its own spec.nodeName field selector.
    for path in [
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1".to_string(),
        format!("{pods}?fieldSelector=spec.nodeName%3Dn1"),
    ] {
        let list = assert_ok(&send(&s, &t, "GET", &path, None));
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["p1"], "{path}");
    }
    for path in [
        "/api/v1/pods".to_string(),
        format!("{pods}?fieldSelector=spec.nodeName%3Dn2"),
    ] {
        let msg = assert_failure(&send(&s, &t, "GET", &path, None), 403, "Forbidden");
        assert!(
            msg.starts_with(
                r#"pods is forbidden: User "system:node:n1" cannot list resource "pods""#
            ),
            "{msg}"
        );
    }
    // Watches follow the same rule.
    let mut w = s.watch_as(
        &t,
        "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1",
    );
    let ev = w.next_event(Duration::from_secs(10)).expect("an event");
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("p1"))
    );
    let r = send(&s, &t, "GET", "/api/v1/pods?watch=true", None);
    assert_failure(&r, 403, "Forbidden");

    // Get and status updates: its own pod yes, another node's pod no.
    assert_ok(&send(&s, &t, "GET", &format!("{pods}/p1"), None));
    let msg = assert_failure(
        &send(&s, &t, "GET", &format!("{pods}/p2"), None),
        403,
        "Forbidden",
    );
    assert!(
        msg.starts_with(r#"pods "p2" is forbidden: User "system:node:n1" cannot get resource "pods" in API group "" in the namespace "default""#),
        "{msg}"
    );
    let ips = json!({"status": {"phase": "Running", "podIP": "10.244.1.5",
        "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]}});
    let patched = assert_ok(&send(
        &s,
        &t,
        "PATCH",
        &format!("{pods}/p1/status"),
        Some(ips.clone()),
    ));
    assert_eq!(patched["status"]["podIPs"][1]["ip"], "fd00:10:244:1::5");
    let mut cur = patched.clone();
    cur["status"]["phase"] = json!("Succeeded");
    let put = assert_ok(&send(
        &s,
        &t,
        "PUT",
        &format!("{pods}/p1/status"),
        Some(cur),
    ));
    assert_eq!(put["status"]["phase"], "Succeeded");
    let msg = assert_failure(
        &send(&s, &t, "PATCH", &format!("{pods}/p2/status"), Some(ips)),
        403,
        "Forbidden",
    );
    assert!(
        msg.starts_with(r#"pods "p2" is forbidden: User "system:node:n1" cannot patch resource "pods/status" in API group "" in the namespace "default""#),
        "{msg}"
    );
    let p2 = admin(&s, "GET", &format!("{pods}/p2"), None);
    assert!(p2["status"].get("podIPs").is_none(), "{p2}");
    // Creating pods is not a node's business (only mirror pods upstream).
    let r = send(&s, &t, "POST", pods, Some(pod("p3", "n1")));
    assert_failure(&r, 403, "Forbidden");
}

#[test]
fn a_node_token_may_not_change_the_spec_or_labels_of_its_own_pods() {
    let s = TestServer::start(&[]);
    let t = common::node_token(&s, "n1", None);
    let pods = "/api/v1/namespaces/default/pods";
    let p1 = admin(&s, "POST", pods, Some(pod("p1", "n1")));
    let r = send(
        &s,
        &t,
        "PATCH",
        &format!("{pods}/p1"),
        Some(json!({"metadata": {"labels": {"by": "node"}}})),
    );
    let msg = assert_failure(&r, 403, "Forbidden");
    assert!(
        msg.starts_with(
            r#"pods "p1" is forbidden: User "system:node:n1" cannot patch resource "pods""#
        ),
        "{msg}"
    );
    let now = admin(&s, "GET", &format!("{pods}/p1"), None);
    assert_eq!(
        now["metadata"]["resourceVersion"],
        p1["metadata"]["resourceVersion"]
    );
}

#[test]
fn a_node_token_reads_cluster_objects_but_may_not_write_them() {
    let s = TestServer::start(DUAL);
    let t = common::node_token(&s, "n1", None);
    admin(
        &s,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                    "data": {"a": "1"}}),
        ),
    );
    for path in [
        "/api/v1/namespaces/default/services",
        "/api/v1/services",
        "/api/v1/namespaces/default/services/kubernetes",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/api/v1/namespaces",
        "/api/v1/namespaces/default",
        "/api",
        "/apis",
        "/api/v1",
    ] {
        assert_ok(&send(&s, &t, "GET", path, None));
    }
    // ConfigMaps only through a pod bound to the node (tests/node_authz.rs).
    for path in [
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/configmaps/cfg",
    ] {
        assert_failure(&send(&s, &t, "GET", path, None), 403, "Forbidden");
    }
    let mut w = s.watch_as(&t, "/api/v1/namespaces/default/services?watch=true");
    let ev = w
        .next_event(Duration::from_secs(10))
        .expect("a service event");
    assert_eq!(ev["object"]["metadata"]["name"], "kubernetes");

    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sneaky"},
                     "spec": {"ports": [{"port": 80}]}});
    let msg = assert_failure(
        &send(
            &s,
            &t,
            "POST",
            "/api/v1/namespaces/default/services",
            Some(svc),
        ),
        403,
        "Forbidden",
    );
    assert_eq!(
        msg,
        r#"services is forbidden: User "system:node:n1" cannot create resource "services" in API group "" in the namespace "default""#
    );
    let msg = assert_failure(
        &send(
            &s,
            &t,
            "DELETE",
            "/api/v1/namespaces/default/configmaps/cfg",
            None,
        ),
        403,
        "Forbidden",
    );
    assert_eq!(
        msg,
        r#"configmaps "cfg" is forbidden: User "system:node:n1" cannot delete resource "configmaps" in API group "" in the namespace "default": can only get individual resources of this type"#
    );
    let r = send(
        &s,
        &t,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/cfg",
        Some(json!({"data": {"a": "2"}})),
    );
    assert_failure(&r, 403, "Forbidden");
    let r = send(
        &s,
        &t,
        "DELETE",
        "/api/v1/namespaces/default/services/kubernetes",
        None,
    );
    assert_failure(&r, 403, "Forbidden");
    // Nothing changed.
    let r = send(
        &s,
        &s.token,
        "GET",
        "/api/v1/namespaces/default/services/sneaky",
        None,
    );
    assert_failure(&r, 404, "NotFound");
    let cfg = admin(&s, "GET", "/api/v1/namespaces/default/configmaps/cfg", None);
    assert_eq!(cfg["data"]["a"], "1");
    admin(
        &s,
        "GET",
        "/api/v1/namespaces/default/services/kubernetes",
        None,
    );
}

#[test]
fn the_node_kubeconfig_works_with_kubectl_for_its_own_node_only() {
    let s = TestServer::start(DUAL);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("n1.kubeconfig");
    let token = common::node_token(&s, "n1", Some(&kc));
    let text = std::fs::read_to_string(&kc).unwrap();
    assert!(text.contains(&token), "the kubeconfig holds the token");
    assert!(text.contains(&s.url), "the kubeconfig holds the server URL");
    admin(&s, "POST", "/api/v1/nodes", Some(node("n2")));
    admin(
        &s,
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(pod("web-1", "n1")),
    );

    let k = Kubectl::require("1.33");
    let run = |args: &[&str]| {
        let out = Command::new(k.path())
            .arg("--kubeconfig")
            .arg(&kc)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(args)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |args: &[&str]| {
        let (ok, out, err) = run(args);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    };
    let manifest = write_temp(
        dir.path(),
        "n1.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    role: worker\n",
    );
    let out = ok(&["create", "-f", manifest.to_str().unwrap()]);
    assert!(out.contains("node/n1 created"), "{out}");
    let out = ok(&["label", "node", "n1", "dualstack.example/ready=yes"]);
    assert!(out.contains("node/n1 labeled"), "{out}");
    let out = ok(&["get", "node", "n1", "-o", "jsonpath={.metadata.labels}"]);
    assert!(out.contains("dualstack.example/ready"), "{out}");
    let out = ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "spec.nodeName=n1",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "pod/web-1");
    let out = ok(&["get", "svc", "kubernetes", "-o", "name"]);
    assert_eq!(out.trim(), "service/kubernetes");

    let (ok2, _, err) = run(&["label", "node", "n2", "stolen=yes"]);
    assert!(!ok2);
    assert!(
        err.contains(r#"Error from server (Forbidden): nodes "n2" is forbidden: User "system:node:n1" cannot patch resource "nodes""#),
        "{err}"
    );
    let (ok2, _, err) = run(&["get", "pods", "-A"]);
    assert!(!ok2);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    let (ok2, _, err) = run(&["delete", "svc", "kubernetes"]);
    assert!(!ok2);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    let n2 = admin(&s, "GET", "/api/v1/nodes/n2", None);
    assert!(n2["metadata"].get("labels").is_none(), "{n2}");
}

/// Local addresses of the server's listening TCP sockets (from /proc: its socket inodes,
/// matched against the LISTEN rows of /proc/net/tcp and tcp6).
fn listening_addresses(pid: u32) -> Vec<SocketAddr> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd") {
        if let Ok(link) = std::fs::read_link(fd.unwrap().path()) {
            let link = link.to_string_lossy().to_string();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
                continue;
            }
            let (addr, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip = if v6 {
                let mut bytes = [0u8; 16];
                for i in 0..4 {
                    let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).unwrap();
                    bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
                }
                IpAddr::V6(Ipv6Addr::from(bytes))
            } else {
                let word = u32::from_str_radix(addr, 16).unwrap();
                IpAddr::V4(Ipv4Addr::from(word.to_le_bytes()))
            };
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}

/// This host's non-loopback, non-link-local addresses.
fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let mut last: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.parse().ok();
        } else if t.contains("/32 host LOCAL")
            && let Some(a) = last
            && !a.is_loopback()
            && !out.contains(&IpAddr::V4(a))
        {
            out.push(IpAddr::V4(a));
        }
    }
    let inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    for line in inet6.lines() {
        let hex = line.split_whitespace().next().unwrap_or("");
        if let Ok(v) = u128::from_str_radix(hex, 16) {
            let a = Ipv6Addr::from(v);
            if !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80 {
                out.push(IpAddr::V6(a));
            }
        }
    }
    out
}

#[test]
fn the_server_listens_only_on_its_bind_address() {
    let s = TestServer::start(&[]);
    let pid = s.pid().expect("server pid");
    let port = s.port();
    let listening = listening_addresses(pid);
    assert_eq!(
        listening,
        [SocketAddr::from(([127, 0, 0, 1], port))],
        "default --bind-address is 127.0.0.1 and nothing else listens"
    );
    // Another loopback address always exists (Linux routes all of 127.0.0.0/8 to lo), so this
    // check runs on every host; the host's own addresses, when it has any, are tried too.
    let others: Vec<IpAddr> = std::iter::once(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .chain(host_addresses())
        .collect();
    for ip in others {
        let r = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2));
        assert!(r.is_err(), "the server answered on {ip}:{port}");
    }

    // Asked for ::1, it listens on ::1 only and serves a certificate valid for it.
    let v6 = TestServer::start(&["--bind-address", "::1"]);
    assert!(v6.url.starts_with("https://[::1]:"), "{}", v6.url);
    assert_eq!(
        listening_addresses(v6.pid().unwrap()),
        [SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))]
    );
    let r = v6.call("", "GET", "/healthz", None, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{}", r.curl_error);
}

#[test]
fn the_serving_certificate_is_valid_for_localhost_and_both_loopback_addresses() {
    let s = TestServer::start(&[]);
    let port = s.port();
    // curl verifies the name against the SANs with the cluster CA.
    for (name, resolve) in [
        ("localhost", "127.0.0.1"),
        ("kubernetes.default.svc", "127.0.0.1"),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(s.ca())
            .args(["--resolve", &format!("{name}:{port}:{resolve}")])
            .arg(format!("https://{name}:{port}/healthz"))
            .output()
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok",
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A name the certificate does not carry fails verification (the check above is real).
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(s.ca())
        .args([
            "--resolve",
            &format!("not-in-cert.example:{port}:127.0.0.1"),
        ])
        .arg(format!("https://not-in-cert.example:{port}/healthz"))
        .output()
        .expect("curl");
    assert!(
        !out.status.success(),
        "curl accepted a name not in the SANs"
    );

    let cert = s.data_dir.join("pki/apiserver.crt");
    match Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let sans = text
                .lines()
                .skip_while(|l| !l.contains("Subject Alternative Name"))
                .nth(1)
                .unwrap_or_else(|| panic!("no SAN extension:\n{text}"));
            for want in [
                "DNS:localhost",
                "IP Address:127.0.0.1",
                "IP Address:0:0:0:0:0:0:0:1",
            ] {
                assert!(
                    sans.split(", ").any(|s| s.trim() == want),
                    "{want} missing from {sans}"
                );
            }
        }
        Ok(out) => panic!(
            "openssl x509 failed on {}: {}",
            cert.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "openssl is needed to read the certificate's SANs (scripts/test installs it): {e}"
        ),
    }

    // ::1 is checked by TLS verification too, on a server bound to it.
    let v6 = TestServer::start(&["--bind-address", "::1"]);
    let r = v6.call("", "GET", "/healthz", None, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{}", r.curl_error);
}

#[test]
fn the_serving_certificate_includes_a_bind_address_other_than_the_defaults() {
    // 127.0.0.2 is on every Linux host (all of 127.0.0.0/8 is local) and is none of the default
    // SANs (localhost, 127.0.0.1, ::1): curl's verification below passes only if the
    // certificate names the bind address. No traffic leaves loopback.
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let bind = ip.to_string();
    let s = TestServer::start(&["--bind-address", &bind]);
    assert_eq!(s.url, format!("https://{ip}:{}", s.port()));
    assert_eq!(
        listening_addresses(s.pid().unwrap()),
        [SocketAddr::new(ip, s.port())]
    );
    let r = s.call("", "GET", "/healthz", None, &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{}", r.curl_error);
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(s.data_dir.join("pki/apiserver.crt"))
        .output()
        .expect("openssl is needed to read the certificate's SANs (scripts/test installs it)");
    let sans = String::from_utf8_lossy(&out.stdout);
    assert!(sans.contains("IP Address:127.0.0.2"), "{sans}");
}
