//! Round trips: a k8s-pb message encoded with prost, decoded to JSON here, must be JSON the
//! k8s-openapi type accepts strictly (no unknown field) and writes back unchanged, with Go's
//! omitempty rules applied.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    authentication::v1 as oa_authn, authorization::v1 as oa_authz, coordination::v1 as oa_coord,
    core::v1 as oa_core, discovery::v1 as oa_disc, networking::v1 as oa_net,
    policy::v1 as oa_policy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as oa_meta;
use k8s_pb::api::{authentication, authorization, coordination, discovery, networking, policy};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::*;
use crate::decode::decode_typed;

/// Decodes `msg` sent as `api_version`/`kind`, checks it against the k8s-openapi type `K` and
/// returns the JSON.
fn round_trip<K: DeserializeOwned + Serialize>(
    api_version: &str,
    kind: &str,
    msg: &impl Message,
) -> Value {
    let v = decode(&encode(api_version, kind, msg), api_version, kind).unwrap();
    let typed = decode_typed::<K>(v.clone(), kind, api_version).unwrap();
    assert!(
        typed.unknown.is_empty(),
        "{kind}: fields k8s-openapi does not know: {:?}",
        typed.unknown
    );
    let back = serde_json::to_value(&typed.object).unwrap();
    assert_eq!(back, v, "{kind}: the JSON changed through k8s-openapi");
    v
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a Go client sends for an ObjectMeta with only a name: every non-pointer field, zero.
fn go_meta(name: &str) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    }
}

fn time(seconds: i64) -> Option<meta::Time> {
    Some(meta::Time {
        seconds: Some(seconds),
        nanos: Some(0),
    })
}

fn int(i: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(i),
        str_val: s(""),
    })
}

#[test]
fn a_service_from_kubectl_create_service_clusterip_stores_no_empty_fields() {
    // kubectl 1.33 `create service clusterip web --tcp=80:8080`: the Go struct's zero values.
    let svc = core::Service {
        metadata: Some(meta::ObjectMeta {
            labels: map(&[("app", "web")]),
            ..go_meta("web")
        }),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: s("80-8080"),
                protocol: s("TCP"),
                port: Some(80),
                target_port: int(8080),
                node_port: Some(0),
                ..Default::default()
            }],
            selector: map(&[("app", "web")]),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            load_balancer_ip: s(""),
            external_name: s(""),
            external_traffic_policy: s(""),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus::default()),
            ..Default::default()
        }),
    };
    let v = round_trip::<oa_core::Service>("v1", "Service", &svc);
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "selector": {"app": "web"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn a_namespace_from_kubectl_create_namespace_has_only_its_name() {
    let ns = core::Namespace {
        metadata: Some(go_meta("team-a")),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus {
            phase: s(""),
            ..Default::default()
        }),
    };
    let v = round_trip::<oa_core::Namespace>("v1", "Namespace", &ns);
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"},
            "spec": {}, "status": {}})
    );
}

#[test]
fn a_pod_keeps_pointer_zeros_drops_value_zeros_and_inlines_embedded_structs() {
    let pod = core::Pod {
        metadata: Some(meta::ObjectMeta {
            namespace: s("default"),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("web-1"),
                uid: s("u-1"),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            ..go_meta("web-1-abc")
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                image: s("nginx"),
                ports: vec![core::ContainerPort {
                    name: s(""),
                    host_port: Some(0),
                    container_port: Some(80),
                    protocol: s("TCP"),
                    host_ip: s(""),
                }],
                env: vec![core::EnvVar {
                    name: s("A"),
                    value: s(""),
                    value_from: None,
                }],
                resources: Some(core::ResourceRequirements {
                    limits: [("cpu".to_string(), Quantity { string: s("500m") })]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }),
                readiness_probe: Some(core::Probe {
                    handler: Some(core::ProbeHandler {
                        http_get: Some(core::HttpGetAction {
                            path: s("/healthz"),
                            port: Some(IntOrString {
                                r#type: Some(1),
                                int_val: Some(0),
                                str_val: s("http"),
                            }),
                            host: s(""),
                            scheme: s("HTTP"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    initial_delay_seconds: Some(0),
                    period_seconds: Some(10),
                    ..Default::default()
                }),
                security_context: Some(core::SecurityContext {
                    allow_privilege_escalation: Some(false),
                    ..Default::default()
                }),
                stdin: Some(false),
                ..Default::default()
            }],
            volumes: vec![core::Volume {
                name: s("data"),
                volume_source: Some(core::VolumeSource {
                    empty_dir: Some(core::EmptyDirVolumeSource {
                        medium: s(""),
                        size_limit: None,
                    }),
                    ..Default::default()
                }),
            }],
            node_name: s("node-a"),
            host_network: Some(false),
            termination_grace_period_seconds: Some(0),
            tolerations: vec![core::Toleration {
                key: s("node.kubernetes.io/unreachable"),
                operator: s("Exists"),
                value: s(""),
                effect: s("NoExecute"),
                toleration_seconds: Some(300),
            }],
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: s("Running"),
            conditions: vec![core::PodCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_probe_time: Some(meta::Time::default()),
                last_transition_time: time(1_700_000_000),
                ..Default::default()
            }],
            pod_ips: vec![
                core::PodIp {
                    ip: s("10.244.0.5"),
                },
                core::PodIp {
                    ip: s("fd00:10:244::5"),
                },
            ],
            ..Default::default()
        }),
    };
    let v = round_trip::<oa_core::Pod>("v1", "Pod", &pod);
    let c = &v["spec"]["containers"][0];
    assert_eq!(
        c["ports"][0],
        json!({"containerPort": 80, "protocol": "TCP"})
    );
    assert_eq!(c["env"][0], json!({"name": "A"}));
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    assert_eq!(
        c["readinessProbe"],
        json!({"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10})
    );
    assert_eq!(
        c["securityContext"],
        json!({"allowPrivilegeEscalation": false})
    );
    assert!(c.get("stdin").is_none());
    assert_eq!(
        v["spec"]["volumes"][0],
        json!({"name": "data", "emptyDir": {}})
    );
    assert_eq!(v["spec"]["terminationGracePeriodSeconds"], 0);
    assert!(v["spec"].get("hostNetwork").is_none());
    assert_eq!(v["spec"]["tolerations"][0]["tolerationSeconds"], 300);
    assert_eq!(
        v["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        false
    );
    assert_eq!(
        v["status"]["conditions"][0],
        json!({"type": "Ready", "status": "True", "lastTransitionTime": "2023-11-14T22:13:20Z"})
    );
    assert_eq!(v["status"]["podIPs"][1]["ip"], "fd00:10:244::5");
}

#[test]
fn a_node_with_dual_stack_cidrs_addresses_and_capacity_round_trips() {
    let node = core::Node {
        metadata: Some(go_meta("node-a")),
        spec: Some(core::NodeSpec {
            pod_cidr: s("10.244.1.0/24"),
            pod_cid_rs: vec!["10.244.1.0/24".into(), "fd00:10:244:1::/64".into()],
            unschedulable: Some(false),
            taints: vec![core::Taint {
                key: s("k"),
                value: s(""),
                effect: s("NoSchedule"),
                time_added: None,
            }],
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            capacity: [("pods".to_string(), Quantity { string: s("110") })]
                .into_iter()
                .collect(),
            addresses: vec![
                core::NodeAddress {
                    r#type: s("InternalIP"),
                    address: s("192.0.2.10"),
                },
                core::NodeAddress {
                    r#type: s("InternalIP"),
                    address: s("2001:db8::10"),
                },
            ],
            conditions: vec![core::NodeCondition {
                r#type: s("Ready"),
                status: s("True"),
                last_heartbeat_time: time(1_700_000_000),
                last_transition_time: time(1_700_000_000),
                reason: s("KubeletReady"),
                message: s(""),
            }],
            daemon_endpoints: Some(core::NodeDaemonEndpoints {
                kubelet_endpoint: Some(core::DaemonEndpoint { port: Some(10250) }),
            }),
            ..Default::default()
        }),
    };
    let v = round_trip::<oa_core::Node>("v1", "Node", &node);
    assert_eq!(v["spec"]["podCIDRs"][1], "fd00:10:244:1::/64");
    assert!(v["spec"].get("unschedulable").is_none());
    assert_eq!(
        v["spec"]["taints"][0],
        json!({"key": "k", "effect": "NoSchedule"})
    );
    assert_eq!(v["status"]["capacity"]["pods"], "110");
    assert_eq!(
        v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        10250
    );
}

#[test]
fn endpoints_configmaps_and_events_round_trip() {
    let ep = core::Endpoints {
        metadata: Some(go_meta("web")),
        subsets: vec![core::EndpointSubset {
            addresses: vec![core::EndpointAddress {
                ip: s("10.244.0.5"),
                hostname: s(""),
                node_name: s("node-a"),
                target_ref: Some(core::ObjectReference {
                    kind: s("Pod"),
                    namespace: s("default"),
                    name: s("web-1"),
                    uid: s(""),
                    api_version: s(""),
                    resource_version: s(""),
                    field_path: s(""),
                }),
            }],
            ports: vec![core::EndpointPort {
                name: s(""),
                port: Some(8080),
                protocol: s("TCP"),
                app_protocol: None,
            }],
            ..Default::default()
        }],
    };
    let v = round_trip::<oa_core::Endpoints>("v1", "Endpoints", &ep);
    assert_eq!(
        v["subsets"][0]["addresses"][0]["targetRef"],
        json!({"kind": "Pod", "namespace": "default", "name": "web-1"})
    );
    assert_eq!(
        v["subsets"][0]["ports"][0],
        json!({"port": 8080, "protocol": "TCP"})
    );

    let cm = core::ConfigMap {
        metadata: Some(go_meta("c")),
        data: map(&[("k", "v")]),
        binary_data: [("b".to_string(), vec![0u8, 1, 2])].into_iter().collect(),
        immutable: Some(false),
    };
    let v = round_trip::<oa_core::ConfigMap>("v1", "ConfigMap", &cm);
    assert_eq!(v["data"]["k"], "v");
    assert_eq!(v["binaryData"]["b"], "AAEC");
    assert_eq!(v["immutable"], false);

    let ev = core::Event {
        metadata: Some(meta::ObjectMeta {
            namespace: s("default"),
            ..go_meta("web.1")
        }),
        involved_object: Some(core::ObjectReference {
            kind: s("Service"),
            name: s("web"),
            ..Default::default()
        }),
        reason: s("ClusterIPNotAllocated"),
        message: s("m"),
        source: Some(core::EventSource {
            component: s("ipallocator-repair-controller"),
            host: s(""),
        }),
        first_timestamp: time(1_700_000_000),
        last_timestamp: Some(meta::Time::default()),
        count: Some(1),
        r#type: s("Warning"),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_700_000_000),
            nanos: Some(123_456_789),
        }),
        reporting_component: s(""),
        reporting_instance: s(""),
        ..Default::default()
    };
    let v = round_trip::<oa_core::Event>("v1", "Event", &ev);
    assert_eq!(v["eventTime"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(v["firstTimestamp"], "2023-11-14T22:13:20Z");
    assert!(v.get("lastTimestamp").is_none());
    assert_eq!(
        v["source"],
        json!({"component": "ipallocator-repair-controller"})
    );
    assert_eq!(v["reportingComponent"], "");
}

#[test]
fn endpointslices_leases_servicecidrs_and_ipaddresses_round_trip() {
    let slice = discovery::v1::EndpointSlice {
        metadata: Some(go_meta("web-abc")),
        address_type: s("IPv6"),
        endpoints: vec![discovery::v1::Endpoint {
            addresses: vec!["fd00:10:244::5".into()],
            conditions: Some(discovery::v1::EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: s("node-a"),
            ..Default::default()
        }],
        ports: vec![discovery::v1::EndpointPort {
            name: s(""),
            protocol: s("TCP"),
            port: Some(8080),
            app_protocol: None,
        }],
    };
    let v = round_trip::<oa_disc::EndpointSlice>("discovery.k8s.io/v1", "EndpointSlice", &slice);
    assert_eq!(v["addressType"], "IPv6");
    assert_eq!(
        v["endpoints"][0]["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(v["ports"][0]["name"], "");

    let lease = coordination::v1::Lease {
        metadata: Some(meta::ObjectMeta {
            namespace: s("kube-node-lease"),
            ..go_meta("node-a")
        }),
        spec: Some(coordination::v1::LeaseSpec {
            holder_identity: s("node-a"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(5_000),
            }),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let v = round_trip::<oa_coord::Lease>("coordination.k8s.io/v1", "Lease", &lease);
    assert_eq!(
        v["spec"],
        json!({"holderIdentity": "node-a", "leaseDurationSeconds": 40,
            "renewTime": "2023-11-14T22:13:20.000005Z", "leaseTransitions": 0})
    );

    let cidr = networking::v1::ServiceCIDR {
        metadata: Some(go_meta("extra")),
        spec: Some(networking::v1::ServiceCIDRSpec {
            cidrs: vec!["10.1.0.0/16".into(), "fd00:1::/108".into()],
        }),
        status: Some(networking::v1::ServiceCIDRStatus::default()),
    };
    let v = round_trip::<oa_net::ServiceCIDR>("networking.k8s.io/v1", "ServiceCIDR", &cidr);
    assert_eq!(v["spec"]["cidrs"][1], "fd00:1::/108");

    let ip = networking::v1::IPAddress {
        metadata: Some(go_meta("10.0.0.10")),
        spec: Some(networking::v1::IPAddressSpec {
            parent_ref: Some(networking::v1::ParentReference {
                group: s(""),
                resource: s("services"),
                namespace: s("default"),
                name: s("web"),
            }),
        }),
    };
    let v = round_trip::<oa_net::IPAddress>("networking.k8s.io/v1", "IPAddress", &ip);
    assert_eq!(
        v["spec"]["parentRef"],
        json!({"resource": "services", "namespace": "default", "name": "web"})
    );
}

fn drain_delete_options() -> meta::DeleteOptions {
    meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: None,
        orphan_dependents: None,
        propagation_policy: None,
        dry_run: vec![],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    }
}

#[test]
fn an_eviction_and_delete_options_from_kubectl_drain_decode() {
    let ev = policy::v1::Eviction {
        metadata: Some(meta::ObjectMeta {
            namespace: s("default"),
            ..go_meta("web-1")
        }),
        delete_options: Some(drain_delete_options()),
    };
    let v = round_trip::<oa_policy::Eviction>("policy/v1", "Eviction", &ev);
    assert_eq!(
        v,
        json!({"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"},
            "deleteOptions": {"gracePeriodSeconds": 0}})
    );

    let body = encode("v1", "DeleteOptions", &drain_delete_options());
    let v = decode_delete_options(&body).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
    );
    let typed = decode_typed::<oa_meta::DeleteOptions>(v, "DeleteOptions", "v1").unwrap();
    assert!(typed.unknown.is_empty());
    let dry = meta::DeleteOptions {
        dry_run: vec!["All".into()],
        propagation_policy: s("Background"),
        preconditions: Some(meta::Preconditions {
            uid: s("u-1"),
            resource_version: None,
        }),
        ..drain_delete_options()
    };
    let v = decode_delete_options(&encode("meta.k8s.io/v1", "DeleteOptions", &dry)).unwrap();
    assert_eq!(v["dryRun"], json!(["All"]));
    assert_eq!(v["preconditions"], json!({"uid": "u-1"}));
    assert_eq!(v["propagationPolicy"], "Background");
    assert_eq!(
        decode_delete_options(&encode("v1", "Pod", &dry))
            .unwrap_err()
            .code(),
        400
    );
}

#[test]
fn review_kinds_of_kubectl_auth_decode() {
    let ssar = authorization::v1::SelfSubjectAccessReview {
        metadata: Some(go_meta("")),
        spec: Some(authorization::v1::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authorization::v1::ResourceAttributes {
                namespace: s("default"),
                verb: s("get"),
                group: s(""),
                version: s(""),
                resource: s("pods"),
                subresource: s(""),
                name: s(""),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }),
        status: Some(authorization::v1::SubjectAccessReviewStatus {
            allowed: Some(false),
            denied: Some(false),
            reason: s(""),
            evaluation_error: s(""),
        }),
    };
    let v = round_trip::<oa_authz::SelfSubjectAccessReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &ssar,
    );
    assert_eq!(
        v["spec"],
        json!({"resourceAttributes": {"namespace": "default", "verb": "get", "resource": "pods"}})
    );
    // `allowed` has no omitempty upstream.
    assert_eq!(v["status"], json!({"allowed": false}));

    let ssrr = authorization::v1::SelfSubjectRulesReview {
        metadata: Some(go_meta("")),
        spec: Some(authorization::v1::SelfSubjectRulesReviewSpec {
            namespace: s("default"),
        }),
        status: None,
    };
    let v = round_trip::<oa_authz::SelfSubjectRulesReview>(
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
        &ssrr,
    );
    assert_eq!(v["spec"], json!({"namespace": "default"}));

    let ssr = authentication::v1::SelfSubjectReview {
        metadata: Some(go_meta("")),
        status: Some(authentication::v1::SelfSubjectReviewStatus {
            user_info: Some(authentication::v1::UserInfo {
                username: s(""),
                uid: s(""),
                groups: vec![],
                extra: [(
                    "k".to_string(),
                    authentication::v1::ExtraValue {
                        items: vec!["v".into()],
                    },
                )]
                .into_iter()
                .collect(),
            }),
        }),
    };
    let v = round_trip::<oa_authn::SelfSubjectReview>(
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
        &ssr,
    );
    assert_eq!(v["status"]["userInfo"], json!({"extra": {"k": ["v"]}}));
}

#[test]
fn envelopes_of_the_wrong_kind_or_shape_are_400_and_unknown_kinds_415() {
    let cm = core::ConfigMap::default();
    assert_eq!(decode(b"nope", "v1", "Service").unwrap_err().code(), 400);
    assert_eq!(
        decode(&encode("v1", "Service", &cm), "v1", "ConfigMap")
            .unwrap_err()
            .code(),
        400
    );
    assert_eq!(
        decode(&encode("v1", "Secret", &cm), "v1", "Secret")
            .unwrap_err()
            .code(),
        415
    );
}

#[test]
fn go_durations_are_written_as_go_writes_them() {
    for (ns, text) in [
        (0, "0s"),
        (1_500, "1.5µs"),
        (300_000_000, "300ms"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (1_500_000_000, "1.5s"),
        (-2_000_000_000, "-2s"),
    ] {
        assert_eq!(go_duration(ns), text);
    }
}
