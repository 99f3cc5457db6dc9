//! Cluster DNS end to end (root): `dualstack up` deploys `kube-system/kube-dns` (hostNetwork
//! `dualstack dns` pods behind a RequireDualStack Service at 10.0.0.10 and fd00::a), the agents
//! write pods' resolv.conf for it, and pods resolve Services with glibc (`getent`) and with
//! `dualstack dns query` over the agent's nftables proxy: both families, NODATA for a missing
//! family, headless Services, SRV, PTR, pod records, and a new Service within a second.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::lab::Lab;
use common::{binary, eventually};
use serde_json::Value;

/// Services and server pods of the tests: `web` (RequireDualStack), `web4` (IPv4 only),
/// `headless` (both families, no ClusterIP), over two `app=web` pods.
const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: none
        command: ["python3", "-m", "http.server", "--bind", "::", "8080"]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web4}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec:
  clusterIP: None
  ipFamilyPolicy: RequireDualStack
  selector: {app: web}
  ports: [{name: http, port: 8080}]
"#;

impl Lab {
    /// Runs `script` in a pod (`sh -c`, restartPolicy Never), waits for it to end and returns
    /// its exit code and output (read from the agent's log file of the container).
    fn run_pod(&self, name: &str, script: &str) -> (i64, String) {
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "q", "image": "none", "command": ["sh", "-c", script],
            }]},
        });
        self.apply(&manifest.to_string());
        let pod = eventually(Duration::from_secs(90), || {
            let p = self.json(&["get", "pod", name]);
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(p)
        })
        .unwrap_or_else(|| panic!("pod {name} did not finish:\n{}", self.logs()));
        let code = pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
            .as_i64()
            .unwrap_or(-1);
        (code, self.pod_log(&pod, "q"))
    }

    fn pod_log(&self, pod: &Value, container: &str) -> String {
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let path = self
            .path()
            .join(format!("nodes/{node}/pods/{uid}/{container}/0.log"));
        // The log file holds CRI records; this is what `kubectl logs` shows of it.
        let file =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        String::from_utf8_lossy(&dualstack_node::logs::render(&file, &Default::default()))
            .to_string()
    }

    fn cluster_ips(&self, svc: &str) -> Vec<IpAddr> {
        self.json(&["get", "svc", svc])["spec"]["clusterIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Waits for `n` ready pods of `app=web` and returns their addresses (both families).
    fn web_pod_ips(&self, n: usize) -> BTreeSet<IpAddr> {
        eventually(Duration::from_secs(90), || {
            let pods = self.json(&["get", "pods", "-l", "app=web"]);
            let items = pods["items"].as_array()?;
            let ready = items
                .iter()
                .filter(|p| {
                    p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
                .collect::<Vec<_>>();
            (ready.len() == n).then(|| {
                ready
                    .iter()
                    .flat_map(|p| p["status"]["podIPs"].as_array().unwrap().clone())
                    .map(|ip| ip["ip"].as_str().unwrap().parse().unwrap())
                    .collect()
            })
        })
        .unwrap_or_else(|| panic!("web pods not ready:\n{}", self.logs()))
    }
}

/// `getent ahosts NAME` output → the set of addresses (glibc maps nothing here: AF_UNSPEC).
fn getent_addresses(section: &str) -> BTreeSet<IpAddr> {
    section
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The part of `out` between `=== name` and the next `===` line.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("=== {name}\n"))
        .unwrap_or_else(|| panic!("no section {name} in:\n{out}"))
        + name.len()
        + 5;
    let rest = &out[start..];
    &rest[..rest.find("===").unwrap_or(rest.len())]
}

fn reverse_v6(ip: IpAddr) -> String {
    let IpAddr::V6(v6) = ip else { panic!("{ip}") };
    let mut s = String::new();
    for b in v6.octets().iter().rev() {
        s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
    }
    s + "ip6.arpa."
}

#[test]
fn pods_resolve_services_of_both_families_headless_services_srv_and_ptr_through_cluster_dns() {
    let lab = Lab::up("dns-e2e-", 2, &[]);
    // `up` made the DNS Service at the 10th address of each range, RequireDualStack.
    let dns = lab.json(&["-n", "kube-system", "get", "svc", "kube-dns"]);
    assert_eq!(
        dns["spec"]["clusterIPs"],
        serde_json::json!(["10.0.0.10", "fd00::a"])
    );
    assert_eq!(dns["spec"]["ipFamilyPolicy"], "RequireDualStack");
    let names: Vec<&str> = dns["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dns", "dns-tcp"]);

    lab.apply(APPS);
    let pod_ips = lab.web_pod_ips(2);
    // The headless answers come from the EndpointSlices, which follow the pods' Ready
    // condition a moment later.
    let sliced = eventually(Duration::from_secs(30), || {
        let slices = lab.json(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=headless",
        ]);
        let ready: BTreeSet<IpAddr> = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str()?.parse().ok())
            .collect();
        (ready == pod_ips).then_some(())
    });
    assert!(sliced.is_some(), "headless slices never listed {pod_ips:?}");
    let web = lab.cluster_ips("web");
    let web4 = lab.cluster_ips("web4");
    assert_eq!(web.len(), 2, "{web:?}");
    let q = binary();
    let q = q.display();
    let v4_pod = pod_ips.iter().find(|i| i.is_ipv4()).unwrap();
    let v6_pod = pod_ips.iter().find(|i| i.is_ipv6()).unwrap();
    let pod_record = v4_pod.to_string().replace('.', "-");
    let script = format!(
        "set -u
echo '=== resolv'; cat /etc/resolv.conf
echo '=== web'; getent ahosts web.default.svc.cluster.local
echo '=== web-short'; getent ahosts web
echo '=== web4'; getent ahosts web4.default.svc.cluster.local
echo '=== web4-aaaa'; {q} dns query web4.default.svc.cluster.local AAAA
echo '=== web4-a-tcp'; {q} dns query web4.default.svc.cluster.local A --tcp --server fd00::a
echo '=== headless'; getent ahosts headless.default.svc.cluster.local
echo '=== srv'; {q} dns query _http._tcp.web.default.svc.cluster.local SRV
echo '=== srv-headless'; {q} dns query _http._tcp.headless.default.svc.cluster.local SRV
echo '=== ptr-v6'; {q} dns query -x {web6} --server fd00::a
echo '=== ptr-pod'; {q} dns query -x {v6_pod}
echo '=== pod'; {q} dns query {pod_record}.default.pod.cluster.local A
echo '=== nx'; {q} dns query nope.default.svc.cluster.local A
echo '=== outside'; {q} dns query example.com A
echo '=== http'; curl -g -sf -m 5 --retry 5 --retry-all-errors --retry-delay 1 -o /dev/null -w '%{{http_code}}\\n' http://web/ && curl -6 -g -sf -m 5 --retry 5 --retry-all-errors --retry-delay 1 -o /dev/null -w '%{{http_code}}\\n' http://web.default/
echo '=== end'
",
        web6 = web[1],
    );
    let (code, out) = lab.run_pod("dns-client", &script);
    assert_eq!(code, 0, "{out}");

    let resolv = section(&out, "resolv");
    assert!(
        resolv.contains("nameserver 10.0.0.10\nnameserver fd00::a\n"),
        "{resolv}"
    );
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");

    // A dual-stack Service: both ClusterIPs, by full name and through the search list.
    let want: BTreeSet<IpAddr> = web.iter().copied().collect();
    assert_eq!(getent_addresses(section(&out, "web")), want, "{out}");
    assert_eq!(getent_addresses(section(&out, "web-short")), want, "{out}");
    // An IPv4-only Service: its A record, and no AAAA (NOERROR, empty answer, SOA).
    let want4: BTreeSet<IpAddr> = web4.iter().copied().collect();
    assert_eq!(getent_addresses(section(&out, "web4")), want4, "{out}");
    let aaaa = section(&out, "web4-aaaa");
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("answers: 0"),
        "{aaaa}"
    );
    assert!(aaaa.contains("IN SOA ns.dns.cluster.local."), "{aaaa}");
    let tcp = section(&out, "web4-a-tcp");
    assert!(
        tcp.contains(&format!("IN A {}", web4[0])),
        "over TCP to the IPv6 ClusterIP: {tcp}"
    );
    // A headless Service: the ready pods' addresses of both families.
    assert_eq!(
        getent_addresses(section(&out, "headless")),
        pod_ips,
        "{out}"
    );
    // SRV for the named port: the Service, or every ready endpoint.
    let srv = section(&out, "srv");
    assert!(
        srv.contains("IN SRV 0 100 80 web.default.svc.cluster.local."),
        "{srv}"
    );
    let srv_h = section(&out, "srv-headless");
    assert_eq!(srv_h.matches(" IN SRV ").count(), pod_ips.len(), "{srv_h}");
    // PTR of an IPv6 ClusterIP and of a headless endpoint (no hostname: its dashed address).
    let ptr = section(&out, "ptr-v6");
    assert!(
        ptr.contains(&format!(
            "{} 5 IN PTR web.default.svc.cluster.local.",
            reverse_v6(web[1])
        )),
        "{ptr}"
    );
    let ptr_pod = section(&out, "ptr-pod");
    let dashed6 = v6_pod.to_string().replace(':', "-");
    assert!(
        ptr_pod.contains(&format!(
            "IN PTR {dashed6}.headless.default.svc.cluster.local."
        )),
        "{ptr_pod}"
    );
    let pod = section(&out, "pod");
    assert!(pod.contains(&format!("IN A {v4_pod}")), "{pod}");
    assert!(section(&out, "nx").contains("status: NXDOMAIN"), "{out}");
    // The lab has no upstream: other names are refused at once.
    assert!(
        section(&out, "outside").contains("status: REFUSED"),
        "{out}"
    );
    assert_eq!(section(&out, "http").trim(), "200\n200", "{out}");
}

#[test]
fn a_new_service_resolves_from_a_pod_as_soon_as_it_exists() {
    let lab = Lab::up("dns-new-", 1, &[]);
    // The pod asks for `late` every 20 ms and prints the moment it first resolves.
    let q = binary();
    let script = format!(
        "for i in $(seq 1 3000); do if {q} dns query late.default.svc.cluster.local A --timeout 1s | grep -q 'answers: 1'; then echo resolved-at $(date +%s.%N); exit 0; fi; echo waiting; sleep 0.02; done; exit 1",
        q = q.display()
    );
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "asker"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "q", "image": "none", "command": ["sh", "-c", script]}]},
    });
    lab.apply(&manifest.to_string());
    // It runs (and gets NXDOMAIN) before the Service exists.
    let pod = eventually(Duration::from_secs(60), || {
        let p = lab.json(&["get", "pod", "asker"]);
        let log = (p["status"]["phase"] == "Running").then(|| lab.pod_log(&p, "q"))?;
        log.contains("waiting").then_some(p)
    })
    .unwrap_or_else(|| panic!("asker never asked:\n{}", lab.logs()));
    lab.kubectl_ok(&["create", "service", "clusterip", "late", "--tcp=80:8080"]);
    // From the moment the create returned (kubectl's own start-up is not the DNS server's
    // time). The DNS server follows a watch, so this is the watch's delay plus one turn of
    // the pod's loop; a TTL or a periodic re-list would take far longer. The figure under
    // no load is in BENCHMARKS.md; here the bound leaves room for a busy machine.
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let done = eventually(Duration::from_secs(30), || {
        let p = lab.json(&["get", "pod", "asker"]);
        (p["status"]["phase"] == "Succeeded").then_some(p)
    })
    .unwrap_or_else(|| panic!("late never resolved: {}", lab.pod_log(&pod, "q")));
    let log = lab.pod_log(&done, "q");
    let at: f64 = log
        .lines()
        .find_map(|l| l.strip_prefix("resolved-at "))
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    let after = at - created;
    eprintln!("late resolved {after:.3}s after kubectl create returned");
    assert!(
        after < 2.0,
        "late resolved {after:.3}s after kubectl create returned"
    );
}
