//! Pod and Service helpers shared by the EndpointSlice and Endpoints planners, after upstream's
//! `podutil` and `endpointutil` (`IsPodReady`, `ShouldPodBeInEndpoints`, `FindPort`,
//! `ShouldSetHostname`, `getAddressTypesForService`).

use std::collections::BTreeMap;

use dualstack_ipam::IpFamily;
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// `spec.clusterIP` of a headless Service.
pub const CLUSTER_IP_NONE: &str = "None";

/// The pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod's `Ready` condition last changed (upstream's pod trigger time).
pub fn ready_transition_time(pod: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(pod)
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// `Succeeded` or `Failed`.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// `metadata.deletionTimestamp` is set.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Upstream `ShouldPodBeInEndpoints`: not terminal, has an IP, and (unless
/// `include_terminating`) not terminating.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if is_terminal(pod) || pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || !is_terminating(pod)
}

/// The pod's IPs as written (`status.podIPs`, else `status.podIP`), with their families;
/// entries that do not parse are left out.
pub fn pod_ips(pod: &Pod) -> Vec<(String, IpFamily)> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut raw: Vec<&str> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .filter(|s| !s.is_empty())
        .collect();
    if raw.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().filter(|s| !s.is_empty())
    {
        raw.push(ip);
    }
    raw.into_iter()
        .filter_map(|s| {
            dualstack_api::net::parse_ip_sloppy(s).map(|ip| (s.to_string(), IpFamily::of_addr(&ip)))
        })
        .collect()
}

/// The first pod IP of `family`.
pub fn pod_ip_of_family(pod: &Pod, family: IpFamily) -> Option<String> {
    pod_ips(pod)
        .into_iter()
        .find(|(_, f)| *f == family)
        .map(|(ip, _)| ip)
}

fn protocol(p: Option<&str>) -> &str {
    p.filter(|p| !p.is_empty()).unwrap_or("TCP")
}

/// Upstream `FindPort`: a numeric `targetPort` is taken as is (absent means `port`); a named
/// one is looked up among the pod's container ports (and restartable init containers) with the
/// same name and protocol. `None` when the name is not found.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let want = protocol(port.protocol.as_deref());
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && protocol(p.protocol.as_deref()) == want
                })
                .map(|p| p.container_port)
        }
    }
}

/// The Service's selector; `None` for selectorless Services (absent or empty), whose endpoints
/// are managed by someone else.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// Equality-based selector match.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// `spec.type == ExternalName`.
pub fn is_external_name(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}

/// `spec.clusterIP == None`.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some(CLUSTER_IP_NONE)
}

/// `spec.publishNotReadyAddresses`.
pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn cluster_ip_family(svc: &Service) -> Option<IpFamily> {
    let ip = svc.spec.as_ref()?.cluster_ip.as_deref()?;
    dualstack_api::net::parse_ip_sloppy(ip).map(|a| IpFamily::of_addr(&a))
}

/// Upstream `getAddressTypesForService`: one address type per `spec.ipFamilies` entry, in
/// order; for objects without families, the ClusterIP's family, or both for a headless one.
pub fn address_types(svc: &Service) -> Vec<IpFamily> {
    let from_spec: Vec<IpFamily> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|f| IpFamily::parse(f))
        .fold(Vec::new(), |mut acc, f| {
            if !acc.contains(&f) {
                acc.push(f);
            }
            acc
        });
    if !from_spec.is_empty() {
        return from_spec;
    }
    match cluster_ip_family(svc) {
        Some(f) if !is_headless(svc) => vec![f],
        _ => vec![IpFamily::IPv4, IpFamily::IPv6],
    }
}

/// The family of the legacy Endpoints object for this pod (upstream
/// `podToEndpointAddressForService`): `ipFamilies[0]`, else the ClusterIP's family, else (legacy
/// headless) the pod's own primary family.
pub fn endpoints_family(svc: &Service, pod: &Pod) -> Option<IpFamily> {
    let first = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .and_then(|f| IpFamily::parse(f));
    if let Some(f) = first {
        return Some(f);
    }
    if !is_headless(svc)
        && let Some(f) = cluster_ip_family(svc)
    {
        return Some(f);
    }
    pod_ips(pod).first().map(|(_, f)| *f)
}

/// Upstream `ShouldSetHostname`: the pod names the Service as its subdomain and has a hostname.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Test objects following the address plan of `crates/dualstack/tests/common/mod.rs`:
    //! pods from `10.244.0.0/16` and `fd00:10:244::/56`, services from `10.0.0.0/16` and
    //! `fd00:10::/108`.

    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    /// A dual-stack ClusterIP Service `web` selecting `app=web`, port `http` 80 → `http`.
    pub fn service(name: &str, families: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("team".to_string(), "net".to_string())].into()),
                creation_timestamp: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ip_families: Some(families.iter().map(|s| s.to_string()).collect()),
                cluster_ip: Some(if families.first() == Some(&"IPv6") {
                    "fd00:10::10".into()
                } else {
                    "10.0.0.10".into()
                }),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Pod `name` on `node-a` with the given IPs, ready or not, container port `http`=`port`.
    pub fn pod(name: &str, ips: &[&str], ready: bool, port: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ips.first().map(|s| s.to_string()),
                pod_ips: Some(ips.iter().map(|s| PodIP { ip: s.to_string() }).collect()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time("2026-01-01T00:00:05Z".parse().unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn should_resolve_named_target_ports_per_pod_and_skip_unknown_names() {
        let svc = service("web", &["IPv4"]);
        let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        assert_eq!(
            find_port(&pod("a", &["10.244.0.5"], true, 8080), port),
            Some(8080)
        );
        assert_eq!(
            find_port(&pod("b", &["10.244.0.6"], true, 9090), port),
            Some(9090)
        );
        let mut udp = port.clone();
        udp.protocol = Some("UDP".into());
        assert_eq!(
            find_port(&pod("a", &["10.244.0.5"], true, 8080), &udp),
            None
        );
        let mut numeric = port.clone();
        numeric.target_port = Some(IntOrString::Int(9376));
        assert_eq!(find_port(&pod("a", &[], true, 1), &numeric), Some(9376));
        numeric.target_port = None;
        assert_eq!(find_port(&pod("a", &[], true, 1), &numeric), Some(80));
    }

    #[test]
    fn should_choose_address_types_from_ip_families_then_cluster_ip() {
        assert_eq!(
            address_types(&service("web", &["IPv6", "IPv4"])),
            vec![IpFamily::IPv6, IpFamily::IPv4]
        );
        let mut legacy = service("web", &[]);
        assert_eq!(address_types(&legacy), vec![IpFamily::IPv4]);
        legacy.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(address_types(&legacy), vec![IpFamily::IPv4, IpFamily::IPv6]);
    }

    #[test]
    fn should_pick_the_endpoints_family_from_the_services_primary_family() {
        let p = pod("a", &["10.244.0.5", "fd00:10:244::5"], true, 8080);
        assert_eq!(
            endpoints_family(&service("web", &["IPv6", "IPv4"]), &p),
            Some(IpFamily::IPv6)
        );
        assert_eq!(
            pod_ip_of_family(&p, IpFamily::IPv6).as_deref(),
            Some("fd00:10:244::5")
        );
        let mut headless = service("web", &[]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        assert_eq!(endpoints_family(&headless, &p), Some(IpFamily::IPv4));
    }

    #[test]
    fn should_leave_terminal_ipless_and_terminating_pods_out_as_upstream() {
        let mut p = pod("a", &["10.244.0.5"], true, 8080);
        assert!(should_be_in_endpoints(&p, false));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(!should_be_in_endpoints(&p, false));
        assert!(should_be_in_endpoints(&p, true));
        let mut done = pod("b", &["10.244.0.6"], false, 8080);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(!should_be_in_endpoints(&done, true));
        assert!(!should_be_in_endpoints(&pod("c", &[], false, 8080), true));
    }

    #[test]
    fn should_treat_empty_selectors_as_selectorless() {
        let mut svc = service("web", &["IPv4"]);
        assert!(selector(&svc).is_some());
        svc.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert!(selector(&svc).is_none());
        let sel: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into();
        assert!(selector_matches(&sel, Some(&labels)));
        assert!(!selector_matches(&sel, None));
    }
}
