//! The lab's cluster DNS, the Kubernetes way, as data: the `kube-system/kube-dns` Service
//! (RequireDualStack, ClusterIPs = the 10th address of each service range, ports `dns` 53/UDP
//! and `dns-tcp` 53/TCP) and the `kube-system/kube-dns` Deployment behind it: hostNetwork pods
//! (anti-affinity on `kubernetes.io/hostname`) whose command is `dualstack dns`, with the node's
//! kubeconfig (the node token may list and watch Services and EndpointSlices) and a readiness
//! probe on `:8181/ready`, as CoreDNS's.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde_json::{Value, json};

/// The Service and the Deployment's label (upstream's).
pub const DNS_APP_LABEL: &str = "kube-dns";
/// The Service's and the Deployment's name.
pub const DNS_NAME: &str = "kube-dns";
/// The cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Where the DNS pods report readiness (CoreDNS's `ready` plugin port).
pub const READY_PORT: u16 = 8181;
/// How many DNS pods (kubeadm's CoreDNS default), at most one per node.
pub const REPLICAS: usize = 2;

/// The 10th address of each service range, in the ranges' order (upstream clusters put the DNS
/// Service there: 10.96.0.10, fd00:10:96::a).
pub fn cluster_ips(service_ranges: &[IpNet]) -> Vec<IpAddr> {
    service_ranges
        .iter()
        .filter_map(|r| match r {
            IpNet::V4(n) => {
                let ip = std::net::Ipv4Addr::from(u32::from(n.network()).checked_add(10)?);
                n.contains(&ip).then_some(IpAddr::V4(ip))
            }
            IpNet::V6(n) => {
                let ip = std::net::Ipv6Addr::from(u128::from(n.network()).checked_add(10)?);
                n.contains(&ip).then_some(IpAddr::V6(ip))
            }
        })
        .collect()
}

/// The `kube-system/kube-dns` Service.
pub fn service(cluster_ips: &[IpAddr]) -> Value {
    let ips: Vec<String> = cluster_ips.iter().map(IpAddr::to_string).collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": DNS_NAME,
            "namespace": "kube-system",
            "labels": {"k8s-app": DNS_APP_LABEL, "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
        },
        "spec": {
            "selector": {"k8s-app": DNS_APP_LABEL},
            "clusterIP": ips.first(),
            "clusterIPs": ips,
            "ipFamilyPolicy": if cluster_ips.len() > 1 { "RequireDualStack" } else { "SingleStack" },
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    })
}

/// The `kube-system/kube-dns` Deployment: `replicas` hostNetwork pods running `exe dns`, each
/// with the kubeconfig of its node (`<lab dir>/nodes/$(NODE_NAME)/kubeconfig`), serving on the
/// pod's (= the node's) addresses. No upstream: the lab has none, so other names are REFUSED
/// at once instead of timing out.
pub fn deployment(exe: &Path, lab_dir: &Path, replicas: usize) -> Value {
    let kubeconfig = lab_dir
        .join("nodes")
        .join("$(NODE_NAME)")
        .join("kubeconfig");
    let labels = json!({"k8s-app": DNS_APP_LABEL});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DNS_NAME, "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": true,
                    "dnsPolicy": "Default",
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": labels},
                        "topologyKey": "kubernetes.io/hostname",
                    }]}},
                    "containers": [{
                        "name": "dns",
                        "image": "dualstack",
                        "command": [
                            exe.to_string_lossy(),
                            "dns",
                            format!("--kubeconfig={}", kubeconfig.display()),
                            format!("--cluster-domain={CLUSTER_DOMAIN}"),
                            "--listen=$(POD_IPS)",
                            "--upstream=none",
                            format!("--ready-address=[::]:{READY_PORT}"),
                        ],
                        "env": [
                            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
                        ],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": READY_PORT},
                            "periodSeconds": 1,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/health", "port": READY_PORT},
                            "initialDelaySeconds": 10,
                            "periodSeconds": 10,
                            "failureThreshold": 5,
                        },
                    }],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns_service_takes_the_tenth_address_of_each_range_in_range_order() {
        let r = |s: &str| s.parse::<IpNet>().unwrap();
        for (ranges, want) in [
            (
                vec![r("10.96.0.0/12"), r("fd00:10:96::/112")],
                vec!["10.96.0.10", "fd00:10:96::a"],
            ),
            (
                vec![r("fd00::/108"), r("10.0.0.0/16")],
                vec!["fd00::a", "10.0.0.10"],
            ),
            (vec![r("10.0.0.0/29")], vec![]),
        ] {
            let got: Vec<String> = cluster_ips(&ranges).iter().map(|i| i.to_string()).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn the_dns_service_is_require_dual_stack_with_upstreams_port_names() {
        let s = service(&["10.0.0.10".parse().unwrap(), "fd00::a".parse().unwrap()]);
        assert_eq!(s["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(s["spec"]["clusterIPs"], json!(["10.0.0.10", "fd00::a"]));
        assert_eq!(s["spec"]["ports"][0]["name"], "dns");
        assert_eq!(s["spec"]["ports"][1]["name"], "dns-tcp");
        let one = service(&["10.0.0.10".parse().unwrap()]);
        assert_eq!(one["spec"]["ipFamilyPolicy"], "SingleStack");
    }

    #[test]
    fn dns_pods_run_this_binary_with_their_nodes_kubeconfig_on_the_pod_ips() {
        let d = deployment(
            Path::new("/usr/bin/dualstack"),
            Path::new("/var/lib/lab"),
            2,
        );
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"][0], "/usr/bin/dualstack");
        assert_eq!(c["command"][1], "dns");
        assert_eq!(
            c["command"][2],
            "--kubeconfig=/var/lib/lab/nodes/$(NODE_NAME)/kubeconfig"
        );
        assert_eq!(c["command"][4], "--listen=$(POD_IPS)");
        assert_eq!(d["spec"]["template"]["spec"]["hostNetwork"], true);
        // The Deployment parses as the API type.
        let _: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(d).unwrap();
    }
}
