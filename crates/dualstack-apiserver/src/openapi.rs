//! OpenAPI documents.
//!
//! - `/openapi/v3` and `/openapi/v3/<gv>?hash=...`: OpenAPI 3.0 JSON per group-version, with the
//!   real schemas of our kinds (k8s-openapi's schemars output, so `kubectl explain` works),
//!   `x-kubernetes-group-version-kind` on the kinds, the list/map merge extensions our strategic
//!   merge patch uses, and one PATCH path per kind that declares the `fieldValidation` query
//!   parameter, so kubectl leaves field validation to the server.
//! - `/openapi/v2`: the same PATCH paths in gnostic's protobuf `openapi.v2.Document` (kubectl
//!   runs `proto.Unmarshal` on it whatever the Content-Type; JSON there breaks `kubectl apply`).
//!   The few gnostic messages needed are declared here with prost.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::handlers::Resources;
use crate::resource::ResourceDef;

/// gnostic `openapi.v2` messages (field numbers from `openapiv2/OpenAPIv2.proto`).
mod gnostic {
    /// `Document`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
    }
    /// `Info`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    /// `Definitions`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }
    /// `NamedSchema`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }
    /// `Schema` (the fields kubectl's explain and validation read).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "2")]
        pub format: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, optional, boxed, tag = "21")]
        pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Properties>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }
    /// `AdditionalPropertiesItem` (oneof: `schema` = 1, `boolean` = 2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AdditionalPropertiesItem {
        #[prost(message, optional, tag = "1")]
        pub schema: Option<Schema>,
        #[prost(bool, optional, tag = "2")]
        pub boolean: Option<bool>,
    }
    /// `TypeItem`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }
    /// `ItemsItem`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }
    /// `Properties`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Properties {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }
    /// `Paths`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {
        #[prost(message, repeated, tag = "2")]
        pub path: Vec<NamedPathItem>,
    }
    /// `NamedPathItem`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedPathItem {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<PathItem>,
    }
    /// `PathItem` (only `patch`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PathItem {
        #[prost(message, optional, tag = "8")]
        pub patch: Option<Operation>,
    }
    /// `Operation`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Operation {
        #[prost(string, tag = "5")]
        pub operation_id: String,
        #[prost(message, repeated, tag = "8")]
        pub parameters: Vec<ParametersItem>,
        #[prost(message, optional, tag = "9")]
        pub responses: Option<Responses>,
        #[prost(message, repeated, tag = "13")]
        pub vendor_extension: Vec<NamedAny>,
    }
    /// `ParametersItem` (oneof: `parameter` = 1).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ParametersItem {
        #[prost(message, optional, tag = "1")]
        pub parameter: Option<Parameter>,
    }
    /// `Parameter` (oneof: `non_body_parameter` = 2).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Parameter {
        #[prost(message, optional, tag = "2")]
        pub non_body_parameter: Option<NonBodyParameter>,
    }
    /// `NonBodyParameter` (oneof: `query_parameter_sub_schema` = 3).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NonBodyParameter {
        #[prost(message, optional, tag = "3")]
        pub query_parameter_sub_schema: Option<QueryParameterSubSchema>,
    }
    /// `QueryParameterSubSchema`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryParameterSubSchema {
        #[prost(bool, tag = "1")]
        pub required: bool,
        #[prost(string, tag = "2")]
        pub r#in: String,
        #[prost(string, tag = "3")]
        pub description: String,
        #[prost(string, tag = "4")]
        pub name: String,
        #[prost(string, tag = "6")]
        pub r#type: String,
    }
    /// `Responses`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Responses {
        #[prost(message, repeated, tag = "1")]
        pub response_code: Vec<NamedResponseValue>,
    }
    /// `NamedResponseValue`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedResponseValue {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<ResponseValue>,
    }
    /// `ResponseValue` (oneof: `response` = 1).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseValue {
        #[prost(message, optional, tag = "1")]
        pub response: Option<Response>,
    }
    /// `Response`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(string, tag = "1")]
        pub description: String,
    }
    /// `NamedAny`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }
    /// `Any` (only the YAML text).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }
}

/// The served documents, built once at start.
#[derive(Debug, Clone)]
pub struct OpenApi {
    /// `/openapi/v2` (protobuf).
    pub v2: Vec<u8>,
    /// `/openapi/v2` as JSON, for clients that ask for `application/json`: Swagger 2.0 with
    /// the same PATCH paths and every definition.
    pub v2_json: Vec<u8>,
    /// `/openapi/v3` index.
    pub v3_index: Value,
    /// Per group-version documents by path (`api/v1`, `apis/discovery.k8s.io/v1`), with hash.
    pub v3_docs: BTreeMap<String, (String, Vec<u8>)>,
}

fn gvk(d: &ResourceDef) -> Value {
    json!({"group": d.group, "version": d.version, "kind": d.kind})
}

fn object_path(d: &ResourceDef) -> String {
    let base = if d.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", d.group, d.version)
    };
    if d.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
    } else {
        format!("{base}/{}/{{name}}", d.plural)
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Definition name of a kind in the schemas (`io.k8s.api.core.v1.Service`).
fn schemas() -> Map<String, Value> {
    use k8s_openapi::api;
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<api::core::v1::Namespace>();
    generator.subschema_for::<api::core::v1::Node>();
    generator.subschema_for::<api::core::v1::Pod>();
    generator.subschema_for::<api::core::v1::Service>();
    generator.subschema_for::<api::core::v1::Endpoints>();
    generator.subschema_for::<api::core::v1::ConfigMap>();
    generator.subschema_for::<api::core::v1::Event>();
    generator.subschema_for::<api::discovery::v1::EndpointSlice>();
    generator.subschema_for::<api::coordination::v1::Lease>();
    generator.subschema_for::<api::networking::v1::ServiceCIDR>();
    generator.subschema_for::<api::networking::v1::IPAddress>();
    generator.subschema_for::<api::apps::v1::Deployment>();
    generator.subschema_for::<api::apps::v1::ReplicaSet>();
    generator.subschema_for::<api::autoscaling::v1::Scale>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    generator.take_definitions(true).into_iter().collect()
}

fn definition_name(d: &ResourceDef) -> String {
    let group = match d.group {
        "" => "core".to_string(),
        g => g.trim_end_matches(".k8s.io").to_string(),
    };
    format!("io.k8s.api.{group}.{}.{}", d.version, d.kind)
}

/// The definitions whose `metadata` upstream lists as required: the kinds whose Go type declares
/// `json:"metadata"` without `omitempty`/`+optional` (of ours, only core/v1 `Event`).
/// k8s-openapi's schemas mark `metadata` required on every kind (its field is not an `Option`).
const METADATA_REQUIRED: &[&str] = &["io.k8s.api.core.v1.Event"];

/// Drops `metadata` from `required` where upstream has it optional (an empty `required` goes).
fn metadata_optional_as_upstream(schemas: &mut Map<String, Value>) {
    for (name, schema) in schemas.iter_mut() {
        if METADATA_REQUIRED.contains(&name.as_str()) {
            continue;
        }
        let Some(obj) = schema.as_object_mut() else {
            continue;
        };
        let Some(required) = obj.get_mut("required").and_then(Value::as_array_mut) else {
            continue;
        };
        required.retain(|r| r != "metadata");
        if required.is_empty() {
            obj.remove("required");
        }
    }
}

/// Adds our extensions: GVKs, merge metadata, and the seed's alpha `ServiceSpec.ipFamily`; makes
/// `metadata` optional as upstream does.
fn decorate_schemas(schemas: &mut Map<String, Value>, res: &Resources) {
    metadata_optional_as_upstream(schemas);
    for r in &res.list {
        let d = r.def();
        if let Some(s) = schemas.get_mut(&definition_name(d)) {
            s["x-kubernetes-group-version-kind"] = json!([gvk(d)]);
        }
    }
    for (name, schema) in schemas.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (prop, p) in props.iter_mut() {
            for (k, v) in dualstack_apimachinery::schema::extensions_for(name, prop) {
                p[k] = v;
            }
        }
    }
    if let Some(props) = schemas
        .get_mut("io.k8s.api.core.v1.ServiceSpec")
        .and_then(|s| s.get_mut("properties"))
        .and_then(Value::as_object_mut)
    {
        props.insert(
            "ipFamily".into(),
            json!({
                "type": "string",
                "enum": ["IPv4", "IPv6"],
                "description": "Deprecated: the single-family field of the Kubernetes 1.16-1.19 dual-stack alpha (IPv6DualStack). Accepted on create and translated to ipFamilies: [ipFamily] with ipFamilyPolicy: SingleStack; it must name a configured family, and on update it may only repeat the Service's primary family (it is immutable). Objects are always returned in the GA form (ipFamilies, ipFamilyPolicy, clusterIPs).",
            }),
        );
    }
}

fn field_validation_param() -> Value {
    json!({"name": "fieldValidation", "in": "query", "description": "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default) and Strict.", "schema": {"type": "string", "uniqueItems": true}})
}

fn v3_doc(res: &Resources, group: &str, version: &str, schemas: &Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for r in res
        .list
        .iter()
        .filter(|r| r.def().group == group && r.def().version == version)
    {
        let d = r.def();
        let def_ref = json!({"$ref": format!("#/components/schemas/{}", definition_name(d))});
        paths.insert(
            object_path(d),
            json!({
                "get": {
                    "description": format!("read the specified {}", d.kind),
                    "operationId": format!("read{}", d.kind),
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": def_ref}}}},
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk(d),
                },
                "patch": {
                    "description": format!("partially update the specified {}", d.kind),
                    "operationId": format!("patch{}", d.kind),
                    "parameters": [field_validation_param(), {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}, {"name": "force", "in": "query", "schema": {"type": "boolean"}}],
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": def_ref}}}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk(d),
                },
                "put": {
                    "description": format!("replace the specified {}", d.kind),
                    "operationId": format!("replace{}", d.kind),
                    "parameters": [field_validation_param()],
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": def_ref}}}},
                    "x-kubernetes-action": "put",
                    "x-kubernetes-group-version-kind": gvk(d),
                },
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// A Swagger 2.0 schema (JSON) as gnostic's `Schema`.
fn gnostic_schema(v: &Value) -> gnostic::Schema {
    let str_of = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let types: Vec<String> = match v.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let properties =
        v.get("properties")
            .and_then(Value::as_object)
            .map(|props| gnostic::Properties {
                additional_properties: props
                    .iter()
                    .map(|(name, p)| gnostic::NamedSchema {
                        name: name.clone(),
                        value: Some(gnostic_schema(p)),
                    })
                    .collect(),
            });
    let additional_properties = match v.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(Box::new(gnostic::AdditionalPropertiesItem {
            schema: None,
            boolean: Some(*b),
        })),
        Some(s @ Value::Object(_)) => Some(Box::new(gnostic::AdditionalPropertiesItem {
            schema: Some(gnostic_schema(s)),
            boolean: None,
        })),
        _ => None,
    };
    let vendor_extension = v
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.starts_with("x-"))
                .map(|(k, x)| gnostic::NamedAny {
                    name: k.clone(),
                    value: Some(gnostic::Any {
                        yaml: serde_norway::to_string(x).unwrap_or_default(),
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    gnostic::Schema {
        r#ref: str_of("$ref"),
        format: str_of("format"),
        description: str_of("description"),
        required: v
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        additional_properties,
        r#type: (!types.is_empty()).then_some(gnostic::TypeItem { value: types }),
        items: v.get("items").map(|i| gnostic::ItemsItem {
            schema: vec![gnostic_schema(i)],
        }),
        properties,
        vendor_extension,
    }
}

fn v2_doc(res: &Resources, definitions: &Value) -> Vec<u8> {
    let mut paths = Vec::new();
    for r in &res.list {
        let d = r.def();
        let yaml = format!(
            "group: {:?}\nkind: {}\nversion: {}\n",
            d.group, d.kind, d.version
        );
        let op = gnostic::Operation {
            operation_id: format!("patch{}", d.kind),
            parameters: vec![gnostic::ParametersItem {
                parameter: Some(gnostic::Parameter {
                    non_body_parameter: Some(gnostic::NonBodyParameter {
                        query_parameter_sub_schema: Some(gnostic::QueryParameterSubSchema {
                            required: false,
                            r#in: "query".into(),
                            description: "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.".into(),
                            name: "fieldValidation".into(),
                            r#type: "string".into(),
                        }),
                    }),
                }),
            }],
            responses: Some(gnostic::Responses {
                response_code: vec![gnostic::NamedResponseValue {
                    name: "200".into(),
                    value: Some(gnostic::ResponseValue { response: Some(gnostic::Response { description: "OK".into() }) }),
                }],
            }),
            vendor_extension: vec![gnostic::NamedAny {
                name: "x-kubernetes-group-version-kind".into(),
                value: Some(gnostic::Any { yaml }),
            }],
        };
        paths.push(gnostic::NamedPathItem {
            name: object_path(d),
            value: Some(gnostic::PathItem { patch: Some(op) }),
        });
    }
    let doc = gnostic::Document {
        swagger: "2.0".into(),
        info: Some(gnostic::Info {
            title: "Kubernetes".into(),
            version: crate::discovery::GIT_VERSION.into(),
        }),
        paths: Some(gnostic::Paths { path: paths }),
        definitions: Some(gnostic::Definitions {
            additional_properties: definitions
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(name, s)| gnostic::NamedSchema {
                            name: name.clone(),
                            value: Some(gnostic_schema(s)),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
    };
    doc.encode_to_vec()
}

/// Rewrites OpenAPI 3 schema references (`#/components/schemas/X`) to Swagger 2.0 ones
/// (`#/definitions/X`).
fn v2_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // Swagger 2.0 readers (kube-openapi) resolve `$ref`, not a one-element `allOf`.
            if let Some(Value::Array(all)) = m.get("allOf")
                && all.len() == 1
                && let Some(r) = all[0].get("$ref").cloned()
            {
                m.remove("allOf");
                m.insert("$ref".into(), r);
            }
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/components/schemas/")
            {
                *r = format!("#/definitions/{name}");
            }
            m.values_mut().for_each(v2_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(v2_refs),
        _ => {}
    }
}

fn v2_json_doc(res: &Resources, schemas: &Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for r in &res.list {
        let d = r.def();
        paths.insert(
            object_path(d),
            json!({"patch": {
                "operationId": format!("patch{}", d.kind),
                "parameters": [{"name": "fieldValidation", "in": "query", "type": "string", "uniqueItems": true,
                    "description": field_validation_param()["description"].clone()}],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-group-version-kind": gvk(d),
            }}),
        );
    }
    let mut definitions = Value::Object(schemas.clone());
    v2_refs(&mut definitions);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::GIT_VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}

impl OpenApi {
    /// Builds every document for the served resources.
    pub fn build(res: &Resources) -> Self {
        let mut schemas = schemas();
        decorate_schemas(&mut schemas, res);
        let mut gvs: Vec<(String, String)> = res
            .list
            .iter()
            .map(|r| (r.def().group.to_string(), r.def().version.to_string()))
            .collect();
        gvs.sort();
        gvs.dedup();
        let mut docs = BTreeMap::new();
        let mut index = Map::new();
        for (g, v) in gvs {
            let doc = serde_json::to_vec(&v3_doc(res, &g, &v, &schemas)).unwrap_or_default();
            let hash = hex::encode_upper(Sha256::digest(&doc));
            let path = gv_path(&g, &v);
            index.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            );
            docs.insert(path, (hash, doc));
        }
        let v2_json = v2_json_doc(res, &schemas);
        Self {
            v2: v2_doc(res, &v2_json["definitions"]),
            v2_json: serde_json::to_vec(&v2_json).unwrap_or_default(),
            v3_index: json!({"paths": index}),
            v3_docs: docs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documents the server serves: built from the served resources exactly as
    /// `Server::start` builds them (a real store in a temporary directory).
    async fn served() -> OpenApi {
        use std::sync::Arc;

        use dualstack_api::config::ServiceClusterIpRange;
        use dualstack_store::Backend;
        use dualstack_store::cache::Cache;
        use dualstack_store::embedded::Embedded;

        use crate::kinds::{self, KindsDecorator, service::ServiceAllocators};
        use crate::registry::Storage;

        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> =
            Arc::new(Embedded::open(&dir.path().join("store.redb")).unwrap());
        let ranges = ServiceClusterIpRange::parse("10.0.0.0/16,fd00:10::/108").unwrap();
        let alloc = Arc::new(
            ServiceAllocators::new(&ranges, dualstack_ipam::ports::DEFAULT_NODE_PORT_RANGE)
                .unwrap(),
        );
        let decorator = Arc::new(KindsDecorator::new(alloc.clone()));
        let cache = Cache::start(backend.clone(), "/registry/", decorator)
            .await
            .unwrap();
        let storage = Storage { backend, cache };
        OpenApi::build(&Resources::new(kinds::all(&storage, alloc)))
    }

    #[tokio::test]
    async fn v2_document_decodes_and_declares_field_validation_for_patch() {
        let api = served().await;
        let doc = gnostic::Document::decode(api.v2.as_slice()).expect("served /openapi/v2 decodes");
        assert_eq!(doc.swagger, "2.0");
        let info = doc.info.expect("info");
        assert_eq!(
            (info.title.as_str(), info.version.as_str()),
            ("Kubernetes", crate::discovery::GIT_VERSION)
        );
        let paths = doc.paths.expect("paths").path;
        // One PATCH path per served kind, IPv4/IPv6-neutral, core and grouped, namespaced and not.
        let expected = [
            ("/api/v1/namespaces/{name}", "Namespace", r#""""#),
            ("/api/v1/nodes/{name}", "Node", r#""""#),
            (
                "/api/v1/namespaces/{namespace}/services/{name}",
                "Service",
                r#""""#,
            ),
            (
                "/api/v1/namespaces/{namespace}/endpoints/{name}",
                "Endpoints",
                r#""""#,
            ),
            (
                "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/{name}",
                "EndpointSlice",
                r#""discovery.k8s.io""#,
            ),
            (
                "/apis/networking.k8s.io/v1/servicecidrs/{name}",
                "ServiceCIDR",
                r#""networking.k8s.io""#,
            ),
            (
                "/apis/networking.k8s.io/v1/ipaddresses/{name}",
                "IPAddress",
                r#""networking.k8s.io""#,
            ),
            (
                "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                "Deployment",
                r#""apps""#,
            ),
        ];
        for (path, kind, group) in expected {
            let item = paths
                .iter()
                .find(|p| p.name == path)
                .unwrap_or_else(|| panic!("no path {path} in /openapi/v2"));
            let op = item
                .value
                .as_ref()
                .and_then(|v| v.patch.as_ref())
                .unwrap_or_else(|| panic!("{path}: no patch"));
            assert_eq!(op.operation_id, format!("patch{kind}"));
            let params: Vec<_> = op
                .parameters
                .iter()
                .filter_map(|p| p.parameter.as_ref()?.non_body_parameter.as_ref())
                .filter_map(|p| p.query_parameter_sub_schema.as_ref())
                .collect();
            assert!(
                params.iter().any(|q| q.name == "fieldValidation"
                    && q.r#in == "query"
                    && q.r#type == "string"),
                "{path}: no fieldValidation query parameter: {params:?}"
            );
            let gvk = op
                .vendor_extension
                .iter()
                .find(|e| e.name == "x-kubernetes-group-version-kind")
                .and_then(|e| e.value.as_ref())
                .unwrap_or_else(|| panic!("{path}: no GVK"));
            assert_eq!(
                gvk.yaml,
                format!("group: {group}\nkind: {kind}\nversion: v1\n")
            );
        }
        assert_eq!(paths.len(), 13, "one path per served kind");
    }

    #[tokio::test]
    async fn served_v3_schemas_require_metadata_only_where_upstream_does() {
        let api = served().await;
        let doc = |path: &str| -> Value { serde_json::from_slice(&api.v3_docs[path].1).unwrap() };
        let core = doc("api/v1");
        let discovery = doc("apis/discovery.k8s.io/v1");
        let networking = doc("apis/networking.k8s.io/v1");
        let coordination = doc("apis/coordination.k8s.io/v1");
        let required = |d: &Value, name: &str| -> Vec<String> {
            let s = &d["components"]["schemas"][name];
            assert!(s.is_object(), "no schema {name}");
            s["required"]
                .as_array()
                .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let cases: [(&Value, &str, &[&str]); 11] = [
            (&core, "io.k8s.api.core.v1.Namespace", &[]),
            (&core, "io.k8s.api.core.v1.Node", &[]),
            (&core, "io.k8s.api.core.v1.Pod", &[]),
            (&core, "io.k8s.api.core.v1.Service", &[]),
            (&core, "io.k8s.api.core.v1.Endpoints", &[]),
            // core/v1 Event declares `json:"metadata"` (no omitempty): upstream requires it.
            (
                &core,
                "io.k8s.api.core.v1.Event",
                &["involvedObject", "metadata"],
            ),
            (
                &discovery,
                "io.k8s.api.discovery.v1.EndpointSlice",
                &["addressType", "endpoints"],
            ),
            (&coordination, "io.k8s.api.coordination.v1.Lease", &[]),
            (&networking, "io.k8s.api.networking.v1.ServiceCIDR", &[]),
            (&networking, "io.k8s.api.networking.v1.IPAddress", &[]),
            (&core, "io.k8s.apimachinery.pkg.apis.meta.v1.Status", &[]),
        ];
        for (d, name, want) in cases {
            let mut got = required(d, name);
            got.sort();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn v2_json_has_every_definition_with_swagger_references() {
        let doc = v2_json_doc(&Resources::new(Vec::new()), &{
            let mut s = schemas();
            decorate_schemas(&mut s, &Resources::new(Vec::new()));
            s
        });
        assert_eq!(doc["swagger"], "2.0");
        let svc = &doc["definitions"]["io.k8s.api.core.v1.Service"];
        assert_eq!(
            svc["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.core.v1.ServiceSpec"
        );
        assert!(!doc.to_string().contains("#/components/schemas/"));
        assert!(
            doc["definitions"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ipFamilies"]
                .is_object()
        );
    }

    #[test]
    fn schemas_name_kinds_as_upstream_definitions() {
        let s = schemas();
        for name in [
            "io.k8s.api.core.v1.Service",
            "io.k8s.api.discovery.v1.EndpointSlice",
            "io.k8s.api.coordination.v1.Lease",
            "io.k8s.api.networking.v1.IPAddress",
        ] {
            assert!(s.contains_key(name), "{name}");
        }
        assert!(s["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ipFamilies"].is_object());
    }
}
