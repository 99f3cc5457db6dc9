//! The Kubernetes protobuf envelope (`application/vnd.kubernetes.protobuf`) for request bodies.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` message whose `raw` field holds
//! the `k8s.io/api` message (types from the `k8s-pb` crate). kubectl 1.32+ sends its typed
//! generators this way (`kubectl create namespace|configmap|service ...`), so the kinds those
//! generators create are converted to JSON here: Namespace, ConfigMap and Service. Other kinds
//! answer 415 with the media types that work.

use std::collections::BTreeMap;

use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::decode::ACCEPTED_MEDIA_TYPES;
use crate::status::ApiError;

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

fn bad(msg: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("error decoding protobuf body: {msg}"))
}

fn put_str(m: &mut Map<String, Value>, k: &str, v: &Option<String>) {
    if let Some(s) = v {
        m.insert(k.into(), s.clone().into());
    }
}

fn put_list(m: &mut Map<String, Value>, k: &str, v: &[String]) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn put_map(m: &mut Map<String, Value>, k: &str, v: &BTreeMap<String, String>) {
    if !v.is_empty() {
        m.insert(k.into(), json!(v));
    }
}

fn object_meta(m: &Option<meta::ObjectMeta>) -> Value {
    let Some(m) = m else { return json!({}) };
    let mut o = Map::new();
    put_str(&mut o, "name", &m.name);
    put_str(&mut o, "generateName", &m.generate_name);
    put_str(&mut o, "namespace", &m.namespace);
    put_str(&mut o, "uid", &m.uid);
    put_str(&mut o, "resourceVersion", &m.resource_version);
    put_map(&mut o, "labels", &m.labels);
    put_map(&mut o, "annotations", &m.annotations);
    put_list(&mut o, "finalizers", &m.finalizers);
    if !m.owner_references.is_empty() {
        let refs: Vec<Value> = m
            .owner_references
            .iter()
            .map(|r| {
                let mut o = Map::new();
                put_str(&mut o, "apiVersion", &r.api_version);
                put_str(&mut o, "kind", &r.kind);
                put_str(&mut o, "name", &r.name);
                put_str(&mut o, "uid", &r.uid);
                if let Some(c) = r.controller {
                    o.insert("controller".into(), c.into());
                }
                if let Some(b) = r.block_owner_deletion {
                    o.insert("blockOwnerDeletion".into(), b.into());
                }
                Value::Object(o)
            })
            .collect();
        o.insert("ownerReferences".into(), refs.into());
    }
    Value::Object(o)
}

fn service_port(p: &pb::ServicePort) -> Value {
    let mut o = Map::new();
    put_str(&mut o, "name", &p.name);
    put_str(&mut o, "protocol", &p.protocol);
    put_str(&mut o, "appProtocol", &p.app_protocol);
    if let Some(port) = p.port {
        o.insert("port".into(), port.into());
    }
    if let Some(t) = &p.target_port {
        let v = match t.r#type.unwrap_or(0) {
            1 => Value::from(t.str_val.clone().unwrap_or_default()),
            _ => Value::from(t.int_val.unwrap_or(0)),
        };
        o.insert("targetPort".into(), v);
    }
    if let Some(n) = p.node_port {
        o.insert("nodePort".into(), n.into());
    }
    Value::Object(o)
}

fn service(s: pb::Service) -> Value {
    let mut spec = Map::new();
    if let Some(sp) = &s.spec {
        if !sp.ports.is_empty() {
            spec.insert(
                "ports".into(),
                sp.ports.iter().map(service_port).collect::<Vec<_>>().into(),
            );
        }
        put_map(&mut spec, "selector", &sp.selector);
        put_str(&mut spec, "clusterIP", &sp.cluster_ip);
        put_list(&mut spec, "clusterIPs", &sp.cluster_ips);
        put_str(&mut spec, "type", &sp.r#type);
        put_list(&mut spec, "externalIPs", &sp.external_ips);
        put_str(&mut spec, "sessionAffinity", &sp.session_affinity);
        put_str(&mut spec, "loadBalancerIP", &sp.load_balancer_ip);
        put_list(
            &mut spec,
            "loadBalancerSourceRanges",
            &sp.load_balancer_source_ranges,
        );
        put_str(&mut spec, "externalName", &sp.external_name);
        put_str(
            &mut spec,
            "externalTrafficPolicy",
            &sp.external_traffic_policy,
        );
        if let Some(h) = sp.health_check_node_port {
            spec.insert("healthCheckNodePort".into(), h.into());
        }
        if let Some(b) = sp.publish_not_ready_addresses {
            spec.insert("publishNotReadyAddresses".into(), b.into());
        }
        if let Some(t) = sp
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
        {
            spec.insert(
                "sessionAffinityConfig".into(),
                json!({"clientIP": {"timeoutSeconds": t}}),
            );
        }
        put_list(&mut spec, "ipFamilies", &sp.ip_families);
        put_str(&mut spec, "ipFamilyPolicy", &sp.ip_family_policy);
        if let Some(b) = sp.allocate_load_balancer_node_ports {
            spec.insert("allocateLoadBalancerNodePorts".into(), b.into());
        }
        put_str(&mut spec, "loadBalancerClass", &sp.load_balancer_class);
        put_str(
            &mut spec,
            "internalTrafficPolicy",
            &sp.internal_traffic_policy,
        );
        put_str(&mut spec, "trafficDistribution", &sp.traffic_distribution);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": object_meta(&s.metadata), "spec": spec})
}

fn config_map(c: pb::ConfigMap) -> Value {
    let mut o = Map::new();
    o.insert("apiVersion".into(), "v1".into());
    o.insert("kind".into(), "ConfigMap".into());
    o.insert("metadata".into(), object_meta(&c.metadata));
    put_map(&mut o, "data", &c.data);
    if !c.binary_data.is_empty() {
        use base64::Engine;
        let b: BTreeMap<String, String> = c
            .binary_data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect();
        o.insert("binaryData".into(), json!(b));
    }
    if let Some(i) = c.immutable {
        o.insert("immutable".into(), i.into());
    }
    Value::Object(o)
}

fn namespace(n: pb::Namespace) -> Value {
    let mut v =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": object_meta(&n.metadata)});
    if let Some(spec) = n.spec.as_ref().filter(|s| !s.finalizers.is_empty()) {
        v["spec"] = json!({"finalizers": spec.finalizers});
    }
    v
}

/// Decodes a protobuf body for a resource of `api_version`/`kind` into its JSON form.
pub fn decode(body: &[u8], api_version: &str, kind: &str) -> Result<Value, ApiError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s\\0 prefix"))?;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(rest).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let (av, k) = (
        tm.api_version.unwrap_or_default(),
        tm.kind.unwrap_or_default(),
    );
    if (!av.is_empty() && av != api_version) || (!k.is_empty() && k != kind) {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): {av}, Kind={k}"
        )));
    }
    if unknown
        .content_encoding
        .as_deref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(bad("content encodings are not supported"));
    }
    let raw = unknown.raw.unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Service") => Ok(service(pb::Service::decode(raw.as_slice()).map_err(bad)?)),
        ("v1", "ConfigMap") => Ok(config_map(
            pb::ConfigMap::decode(raw.as_slice()).map_err(bad)?,
        )),
        ("v1", "Namespace") => Ok(namespace(
            pb::Namespace::decode(raw.as_slice()).map_err(bad)?,
        )),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "{} (protobuf is accepted for Namespace, ConfigMap and Service; send {kind} as JSON or YAML)",
            ACCEPTED_MEDIA_TYPES
        ))),
    }
}

/// Encodes a message in the envelope (for tests and tools).
pub fn encode(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_from_kubectl_create_service_clusterip_decodes() {
        let svc = pb::Service {
            metadata: Some(meta::ObjectMeta {
                name: Some("web".into()),
                labels: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            spec: Some(pb::ServiceSpec {
                ports: vec![pb::ServicePort {
                    name: Some("80-8080".into()),
                    protocol: Some("TCP".into()),
                    port: Some(80),
                    target_port: Some(k8s_pb::apimachinery::pkg::util::intstr::IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: None,
                    }),
                    ..Default::default()
                }],
                selector: [("app".to_string(), "web".to_string())]
                    .into_iter()
                    .collect(),
                r#type: Some("ClusterIP".into()),
                ..Default::default()
            }),
            status: None,
        };
        let body = encode("v1", "Service", &svc);
        let v = decode(&body, "v1", "Service").unwrap();
        assert_eq!(v["metadata"]["name"], "web");
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(v["spec"]["selector"]["app"], "web");
        assert_eq!(v["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn namespaces_and_configmaps_decode_and_other_kinds_are_415() {
        let ns = pb::Namespace {
            metadata: Some(meta::ObjectMeta {
                name: Some("team-a".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            decode(&encode("v1", "Namespace", &ns), "v1", "Namespace").unwrap()["metadata"]["name"],
            "team-a"
        );
        let cm = pb::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: Some("c".into()),
                ..Default::default()
            }),
            data: [("k".to_string(), "v".to_string())].into_iter().collect(),
            ..Default::default()
        };
        assert_eq!(
            decode(&encode("v1", "ConfigMap", &cm), "v1", "ConfigMap").unwrap()["data"]["k"],
            "v"
        );
        assert_eq!(
            decode(&encode("v1", "Pod", &cm), "v1", "Pod")
                .unwrap_err()
                .code(),
            415
        );
        assert_eq!(decode(b"nope", "v1", "Service").unwrap_err().code(), 400);
        assert_eq!(
            decode(&encode("v1", "Service", &cm), "v1", "ConfigMap")
                .unwrap_err()
                .code(),
            400
        );
    }
}
