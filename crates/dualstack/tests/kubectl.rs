//! Real kubectl (every version from 1.27 to 1.33, and the `/usr/bin/kubectl` dispatcher) against
//! the real server:
//! create, client-side and server-side apply, get (-o wide/yaml/json, -w), describe, label,
//! annotate, patch (strategic, merge, json), edit with a scripted EDITOR, explain and delete on
//! services, pods, nodes, configmaps and endpointslices; the 1.33 generators, which send
//! protobuf bodies.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Kubectl, TestServer, eventually, write_temp};
use serde_json::Value;

const DUAL: &[&str] = &["--service-cluster-ip-range=10.0.0.0/16,fd00:10::/108"];

fn manifests(ns: &str, sfx: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {{app: web}}
  ports:
  - name: http
    port: 80
    targetPort: 9376
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: {ns}
data:
  a: "1"
---
apiVersion: v1
kind: Pod
metadata:
  name: app
  namespace: {ns}
  labels: {{app: web}}
spec:
  containers:
  - name: c
    image: registry.example/agnhost:2.45
    ports:
    - containerPort: 9376
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-manual
  namespace: {ns}
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv6
endpoints:
- addresses: ["fd00:10:244::5"]
  conditions: {{ready: true}}
ports:
- name: http
  port: 9376
  protocol: TCP
---
apiVersion: v1
kind: Node
metadata:
  name: node-{sfx}
  labels: {{node-role.kubernetes.io/worker: ""}}
spec:
  podCIDRs: ["10.244.7.0/24", "fd00:10:244:7::/64"]
"#
    )
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn scenario(s: &TestServer, k: &Kubectl, sfx: &str, generators: bool) {
    let dir = tempfile::tempdir().unwrap();
    let ns = format!("team-{sfx}");
    // Namespace: the generator (protobuf body on 1.32+) or a manifest.
    s.kubectl_ok(k, &["create", "namespace", &ns]);
    assert!(s.kubectl_ok(k, &["get", "ns", &ns]).contains("Active"));

    let file = write_temp(dir.path(), "all.yaml", &manifests(&ns, sfx));
    let f = file.to_str().unwrap();
    let out = s.kubectl_ok(k, &["apply", "-f", f]);
    assert!(out.contains("service/web created"), "{out}");
    assert!(out.contains(&format!("node/node-{sfx} created")), "{out}");
    // Unchanged re-apply sends nothing.
    let out = s.kubectl_ok(k, &["apply", "-f", f]);
    assert!(out.contains("service/web unchanged"), "{out}");

    // get -o wide: upstream columns.
    let wide = s.kubectl_ok(k, &["get", "svc", "web", "-n", &ns, "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains("app=web") && wide.contains("80/TCP"),
        "{wide}"
    );
    // A dual-stack Service shows the ClusterIPs of both families.
    let svc: serde_json::Value =
        serde_json::from_str(&s.kubectl_ok(k, &["get", "svc", "web", "-n", &ns, "-o", "json"]))
            .unwrap();
    let ips: Vec<&str> = svc["spec"]["clusterIPs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(wide.contains(&ips.join(",")), "{wide}");
    let pods = s.kubectl_ok(k, &["get", "pods", "-n", &ns, "-o", "wide"]);
    assert!(
        pods.lines().next().unwrap().starts_with("NAME")
            && pods.contains("0/1")
            && pods.contains("Pending"),
        "{pods}"
    );
    let nodes = s.kubectl_ok(k, &["get", "node", &format!("node-{sfx}"), "-o", "wide"]);
    assert!(
        nodes.contains("INTERNAL-IP") && nodes.contains("worker"),
        "{nodes}"
    );
    let cms = s.kubectl_ok(k, &["get", "cm", "-n", &ns]);
    assert!(cms.contains("DATA") && cms.contains("settings"), "{cms}");
    let eps = s.kubectl_ok(k, &["get", "endpointslices", "-n", &ns]);
    assert!(
        eps.contains("ADDRESSTYPE") && eps.contains("IPv6") && eps.contains("fd00:10:244::5"),
        "{eps}"
    );

    // -o json / -o yaml: dual-stack fields of the Service.
    let svc = json(&s.kubectl_ok(k, &["get", "svc", "web", "-n", &ns, "-o", "json"]));
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "PreferDualStack");
    assert_eq!(
        svc["spec"]["ipFamilies"],
        serde_json::json!(["IPv4", "IPv6"])
    );
    assert_eq!(svc["spec"]["clusterIPs"].as_array().unwrap().len(), 2);
    assert_eq!(svc["spec"]["clusterIP"], svc["spec"]["clusterIPs"][0]);
    let yaml = s.kubectl_ok(k, &["get", "cm", "settings", "-n", &ns, "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("a: \"1\""),
        "{yaml}"
    );

    // describe.
    let d = s.kubectl_ok(k, &["describe", "svc", "web", "-n", &ns]);
    assert!(
        d.contains("IP Families:") && d.contains("IPv4,IPv6") || d.contains("IPv4, IPv6"),
        "{d}"
    );
    assert!(
        s.kubectl_ok(k, &["describe", "pod", "app", "-n", &ns])
            .contains("Containers:")
    );
    assert!(
        s.kubectl_ok(k, &["describe", "node", &format!("node-{sfx}")])
            .contains("PodCIDRs:")
    );
    assert!(
        s.kubectl_ok(k, &["describe", "cm", "settings", "-n", &ns])
            .contains("Data")
    );

    // label, annotate.
    s.kubectl_ok(k, &["label", "svc", "web", "-n", &ns, "tier=front"]);
    s.kubectl_ok(k, &["annotate", "cm", "settings", "-n", &ns, "note=hello"]);
    let labels = s.kubectl_ok(
        k,
        &[
            "get",
            "svc",
            "web",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.labels.tier}",
        ],
    );
    assert_eq!(labels, "front");
    let note = s.kubectl_ok(
        k,
        &[
            "get",
            "cm",
            "settings",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.annotations.note}",
        ],
    );
    assert_eq!(note, "hello");

    // patch: strategic (merge by port), merge, json.
    s.kubectl_ok(
        k,
        &[
            "patch",
            "svc",
            "web",
            "-n",
            &ns,
            "-p",
            r#"{"spec":{"ports":[{"port":80,"targetPort":8080}]}}"#,
        ],
    );
    let tp = s.kubectl_ok(
        k,
        &[
            "get",
            "svc",
            "web",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.ports[0].targetPort} {.spec.ports[0].name}",
        ],
    );
    assert_eq!(tp, "8080 http");
    s.kubectl_ok(
        k,
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"data":{"b":"2"}}"#,
        ],
    );
    s.kubectl_ok(
        k,
        &[
            "patch",
            "cm",
            "settings",
            "-n",
            &ns,
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/data/a","value":"3"}]"#,
        ],
    );
    let data = json(&s.kubectl_ok(k, &["get", "cm", "settings", "-n", &ns, "-o", "json"]));
    assert_eq!(data["data"], serde_json::json!({"a": "3", "b": "2"}));
    s.kubectl_ok(k, &["patch", "node", &format!("node-{sfx}"), "--subresource=status", "--type=merge", "-p", r#"{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.7"},{"type":"InternalIP","address":"2001:db8:1::7"}]}}"#]);
    let addrs = s.kubectl_ok(
        k,
        &[
            "get",
            "node",
            &format!("node-{sfx}"),
            "-o",
            "jsonpath={.status.addresses[*].address}",
        ],
    );
    assert_eq!(addrs, "192.0.2.7 2001:db8:1::7");

    // edit with a scripted editor.
    let editor = write_temp(
        dir.path(),
        "editor.sh",
        "#!/bin/sh\nsed -i 's/^  a: \"3\"$/  a: \"edited\"/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new(k_path(k))
        .args([
            "--kubeconfig",
            s.kubeconfig.to_str().unwrap(),
            "--cache-dir",
            dir.path().join("ec").to_str().unwrap(),
        ])
        .args(["edit", "cm", "settings", "-n", &ns])
        .env("EDITOR", &editor)
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.kubectl_ok(
            k,
            &[
                "get",
                "cm",
                "settings",
                "-n",
                &ns,
                "-o",
                "jsonpath={.data.a}"
            ]
        ),
        "edited"
    );

    // explain: real schemas.
    let ex = s.kubectl_ok(k, &["explain", "service.spec.ipFamilies"]);
    assert!(
        ex.contains("IPFamilies") || ex.contains("ipFamilies"),
        "{ex}"
    );
    assert!(
        s.kubectl_ok(k, &["explain", "endpointslice.addressType"])
            .contains("addressType")
    );

    // server-side apply: create, then take over a client-side applied object.
    let ssa = write_temp(
        dir.path(),
        "ssa.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\n  namespace: {ns}\ndata:\n  x: \"1\"\n"
        ),
    );
    let out = s.kubectl_ok(k, &["apply", "--server-side", "-f", ssa.to_str().unwrap()]);
    assert!(out.contains("serverside-applied"), "{out}");
    let mf = json(&s.kubectl_ok(
        k,
        &[
            "get",
            "cm",
            "ssa",
            "-n",
            &ns,
            "-o",
            "json",
            "--show-managed-fields",
        ],
    ));
    assert_eq!(mf["metadata"]["managedFields"][0]["manager"], "kubectl");
    assert_eq!(mf["metadata"]["managedFields"][0]["operation"], "Apply");
    // Taking the manifest over with server-side apply conflicts on the targetPort that
    // `kubectl patch` changed; forcing moves ownership to kubectl.
    let out = s.kubectl(k, &["apply", "--server-side", "-f", f]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("conflict") && err.contains("kubectl-patch"),
        "expected a conflict: {err}"
    );
    let out = s.kubectl_ok(k, &["apply", "--server-side", "--force-conflicts", "-f", f]);
    assert!(out.contains("service/web serverside-applied"), "{out}");
    assert_eq!(
        s.kubectl_ok(
            k,
            &[
                "get",
                "svc",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.ports[0].targetPort}"
            ]
        ),
        "9376"
    );
    // Now kubectl owns it: changing it again needs no force.
    let again = write_temp(
        dir.path(),
        "again.yaml",
        &manifests(&ns, sfx).replace("targetPort: 9376", "targetPort: 9999"),
    );
    s.kubectl_ok(
        k,
        &["apply", "--server-side", "-f", again.to_str().unwrap()],
    );
    assert_eq!(
        s.kubectl_ok(
            k,
            &[
                "get",
                "svc",
                "web",
                "-n",
                &ns,
                "-o",
                "jsonpath={.spec.ports[0].targetPort}"
            ]
        ),
        "9999"
    );

    // get -w sees a change made after its watch is established: the initial LIST must print a
    // ConfigMap that exists before the watch starts; only then is `watched` created, so its row
    // can come from the watch alone.
    s.kubectl_ok(
        k,
        &[
            "create",
            "configmap",
            "before-watch",
            "-n",
            &ns,
            "--from-literal=k=v",
        ],
    );
    let mut w = Command::new(k_path(k))
        .args([
            "--kubeconfig",
            s.kubeconfig.to_str().unwrap(),
            "--cache-dir",
            dir.path().join("wc").to_str().unwrap(),
        ])
        .args(["get", "cm", "-n", &ns, "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = w.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_row = |name: &str, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !seen.iter().any(|l| l.contains("ADDED") && l.contains(name)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => return false,
            }
        }
        true
    };
    let listed = wait_row("before-watch", &mut seen);
    assert!(listed, "get -w printed no initial row: {seen:?}");
    assert!(
        !seen.iter().any(|l| l.contains("watched")),
        "watched exists before it was created: {seen:?}"
    );
    s.kubectl_ok(
        k,
        &[
            "create",
            "configmap",
            "watched",
            "-n",
            &ns,
            "--from-literal=k=v",
        ],
    );
    let watched = wait_row("watched", &mut seen);
    let _ = w.kill();
    let _ = w.wait();
    assert!(
        watched,
        "get -w did not report a ConfigMap created after its LIST: {seen:?}"
    );

    if generators {
        let out = s.kubectl_ok(
            k,
            &[
                "create",
                "service",
                "clusterip",
                "gen",
                "-n",
                &ns,
                "--tcp=80:8080",
            ],
        );
        assert!(out.contains("service/gen created"), "{out}");
        let created = json(&s.kubectl_ok(k, &["get", "svc", "gen", "-n", &ns, "-o", "json"]));
        assert_eq!(created["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(created["spec"]["ipFamilies"], serde_json::json!(["IPv4"]));
    }

    // delete everything; the follow-up GETs 404.
    s.kubectl_ok(k, &["delete", "-f", f, "--wait=true"]);
    for (kind, name) in [
        ("svc", "web"),
        ("cm", "settings"),
        ("pod", "app"),
        ("endpointslice", "web-manual"),
    ] {
        let out = s.kubectl(k, &["get", kind, name, "-n", &ns]);
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"),
            "{kind}/{name} still there"
        );
    }
    s.kubectl_ok(
        k,
        &["delete", "namespace", &ns, "--wait=true", "--timeout=60s"],
    );
    let gone = eventually(Duration::from_secs(30), || {
        (!s.kubectl(k, &["get", "ns", &ns]).status.success()).then_some(())
    });
    assert!(gone.is_some(), "namespace {ns} not deleted");
}

fn k_path(k: &Kubectl) -> &std::path::Path {
    k.path()
}

#[test]
fn kubectl_1_27_works_end_to_end() {
    let s = TestServer::start(DUAL);
    scenario(&s, &Kubectl::require("1.27"), "k127", false);
}

#[test]
fn kubectl_1_33_works_end_to_end_including_protobuf_generators() {
    let s = TestServer::start(DUAL);
    scenario(&s, &Kubectl::require("1.33"), "k133", true);
}

/// The versions between: each its own server, one after the other.
#[test]
fn kubectl_1_28_to_1_32_work_end_to_end() {
    for (version, generators) in [
        ("1.28", false),
        ("1.29", false),
        ("1.30", false),
        ("1.31", false),
        ("1.32", true),
    ] {
        let s = TestServer::start(DUAL);
        scenario(
            &s,
            &Kubectl::require(version),
            &format!("k{}", version.replace('.', "")),
            generators,
        );
    }
}

#[test]
fn the_kubectl_version_dispatcher_works_end_to_end() {
    let k = Kubectl::dispatcher().unwrap_or_else(|| {
        panic!(
            "/usr/bin/kubectl (the kubectl version dispatcher) is not installed; install the \
             Google Cloud SDK kubectl component (CI has it), this test does not skip"
        )
    });
    let s = TestServer::start(DUAL);
    scenario(&s, &k, "kdisp", false);
}
