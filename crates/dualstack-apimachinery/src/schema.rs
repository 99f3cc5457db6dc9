//! List and map merge semantics of our kinds, read by strategic merge patch ([`crate::patch`]),
//! server-side apply ([`crate::apply`]) and the OpenAPI generator.
//!
//! One table, [`PROPERTIES`], describes every list, map and nested struct reachable from our
//! kinds (core/v1 Namespace, Node, Pod, Service, Endpoints, ConfigMap, Event; discovery.k8s.io/v1
//! EndpointSlice; coordination.k8s.io/v1 Lease; networking.k8s.io/v1 ServiceCIDR, IPAddress), keyed
//! by OpenAPI definition name and JSON property name, with upstream's markers:
//!
//! - `+patchStrategy` / `+patchMergeKey` (strategic merge patch, `x-kubernetes-patch-strategy`,
//!   `x-kubernetes-patch-merge-key`);
//! - `+listType` / `+listMapKey` (server-side apply, `x-kubernetes-list-type`,
//!   `x-kubernetes-list-map-keys`);
//! - `+mapType=atomic` (`x-kubernetes-map-type`), and `+structType=atomic` on whole definitions
//!   ([`ATOMIC_STRUCTS`]).
//!
//! The rows were generated from the markers in the doc comments of the `k8s-pb` 0.9 sources
//! (`k8s.io/api` `generated.proto`), with JSON names and the set of fields taken from k8s-openapi's
//! `v1_33` module, keeping only rows that matter (lists, maps, atomic structs and the struct fields
//! leading to them). Regenerate them the same way when a Kubernetes version is added; a missing
//! row means upstream's default: strategic merge patch replaces lists and merges maps, server-side
//! apply treats lists as atomic and maps/structs as granular.
//!
//! Note the deliberate difference upstream has for Service ports: strategic merge patch merges by
//! `port` alone, server-side apply keys by (`port`, `protocol`).
//!
//! Start with [`lookup`] (path from the object root) or [`root`] + [`field`] (walk as you descend).

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Value, json};

macro_rules! core {
    ($name:literal) => {
        concat!("io.k8s.api.core.v1.", $name)
    };
}
macro_rules! discovery {
    ($name:literal) => {
        concat!("io.k8s.api.discovery.v1.", $name)
    };
}
macro_rules! networking {
    ($name:literal) => {
        concat!("io.k8s.api.networking.v1.", $name)
    };
}
macro_rules! coordination {
    ($name:literal) => {
        concat!("io.k8s.api.coordination.v1.", $name)
    };
}
macro_rules! apps {
    ($name:literal) => {
        concat!("io.k8s.api.apps.v1.", $name)
    };
}
macro_rules! meta {
    ($name:literal) => {
        concat!("io.k8s.apimachinery.pkg.apis.meta.v1.", $name)
    };
}

/// The shape of a property's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An object with declared fields, of the given definition.
    Struct(&'static str),
    /// A list of structs of the given definition, or of scalars (`None`).
    List(Option<&'static str>),
    /// A map with arbitrary string keys; values are structs of the given definition or scalars.
    Map(Option<&'static str>),
    /// An opaque JSON value (FieldsV1): always a leaf.
    Opaque,
}

impl Shape {
    /// The definition of the struct, list element or map value, if it is a struct.
    pub fn child(self) -> Option<&'static str> {
        match self {
            Shape::Struct(d) => Some(d),
            Shape::List(d) | Shape::Map(d) => d,
            Shape::Opaque => None,
        }
    }
}

/// One property of one definition with its upstream merge markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    /// OpenAPI definition name, e.g. `io.k8s.api.core.v1.ServiceSpec`.
    pub definition: &'static str,
    /// JSON property name, e.g. `ports`.
    pub name: &'static str,
    /// What the value is.
    pub shape: Shape,
    /// `+patchStrategy` (`merge`, `merge,retainKeys`, `retainKeys`, `replace`).
    pub patch_strategy: Option<&'static str>,
    /// `+patchMergeKey`.
    pub patch_merge_key: Option<&'static str>,
    /// `+listType` (`atomic`, `set`, `map`).
    pub list_type: Option<&'static str>,
    /// `+listMapKey`s in declaration order.
    pub list_map_keys: &'static [&'static str],
    /// `+mapType` (`atomic`, `granular`).
    pub map_type: Option<&'static str>,
}

impl Property {
    const fn new(definition: &'static str, name: &'static str, shape: Shape) -> Self {
        Property {
            definition,
            name,
            shape,
            patch_strategy: None,
            patch_merge_key: None,
            list_type: None,
            list_map_keys: &[],
            map_type: None,
        }
    }

    const fn patch(mut self, strategy: &'static str, merge_key: &'static str) -> Self {
        self.patch_strategy = Some(strategy);
        self.patch_merge_key = if merge_key.is_empty() {
            None
        } else {
            Some(merge_key)
        };
        self
    }

    const fn list(mut self, list_type: &'static str, keys: &'static [&'static str]) -> Self {
        self.list_type = Some(list_type);
        self.list_map_keys = keys;
        self
    }

    const fn atomic_map(mut self) -> Self {
        self.map_type = Some("atomic");
        self
    }

    /// The `x-kubernetes-*` extensions upstream's OpenAPI carries for this property, sorted by
    /// name as Go serializes them.
    pub fn extensions(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if !self.list_map_keys.is_empty() {
            out.push(("x-kubernetes-list-map-keys", json!(self.list_map_keys)));
        }
        if let Some(t) = self.list_type {
            out.push(("x-kubernetes-list-type", json!(t)));
        }
        if let Some(t) = self.map_type {
            out.push(("x-kubernetes-map-type", json!(t)));
        }
        if let Some(k) = self.patch_merge_key {
            out.push(("x-kubernetes-patch-merge-key", json!(k)));
        }
        if let Some(s) = self.patch_strategy {
            out.push(("x-kubernetes-patch-strategy", json!(s)));
        }
        out
    }
}

/// How strategic merge patch treats a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the live one (no `patchStrategy`; upstream's default).
    Replace,
    /// Elements are maps merged by the value of `key` (`patchStrategy=merge` + `patchMergeKey`).
    Merge {
        /// The merge key, e.g. `port`, `name`, `type`.
        key: &'static str,
    },
    /// A list of scalars merged as a union (`patchStrategy=merge` without a merge key).
    MergePrimitives,
}

/// How server-side apply treats a list (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Owned and replaced as a whole (upstream's default).
    Atomic,
    /// A set of scalars; each value owned separately.
    Set,
    /// An associative list; each element identified by the values of `keys`.
    Map {
        /// The list-map keys, in declaration order.
        keys: &'static [&'static str],
    },
}

/// How server-side apply treats a map or struct (`x-kubernetes-map-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// Each key owned separately (upstream's default).
    Granular,
    /// Owned and replaced as a whole.
    Atomic,
}

/// What the schema says about one field; [`FieldSchema::default`] (no row) means upstream's
/// defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FieldSchema {
    /// The table row, if any.
    pub property: Option<&'static Property>,
}

impl FieldSchema {
    /// The strategic merge patch list strategy.
    pub fn list_strategy(&self) -> ListStrategy {
        let Some(p) = self.property else {
            return ListStrategy::Replace;
        };
        let merge = p
            .patch_strategy
            .is_some_and(|s| s.split(',').any(|s| s == "merge"));
        match (merge, p.patch_merge_key) {
            (true, Some(key)) => ListStrategy::Merge { key },
            (true, None) => ListStrategy::MergePrimitives,
            (false, _) => ListStrategy::Replace,
        }
    }

    /// Whether strategic merge patch honours `$retainKeys` for elements of this field.
    pub fn retain_keys(&self) -> bool {
        self.property
            .and_then(|p| p.patch_strategy)
            .is_some_and(|s| s.split(',').any(|s| s == "retainKeys"))
    }

    /// The server-side apply list type.
    pub fn list_type(&self) -> ListType {
        match self.property.and_then(|p| p.list_type) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map {
                keys: self.property.map_or(&[], |p| p.list_map_keys),
            },
            _ => ListType::Atomic,
        }
    }

    /// The server-side apply map type of a map- or struct-valued field: atomic for
    /// `mapType=atomic` maps and for fields whose struct definition is `structType=atomic`.
    pub fn map_type(&self) -> MapType {
        let Some(p) = self.property else {
            return MapType::Granular;
        };
        let atomic_struct = matches!(p.shape, Shape::Struct(d) if is_atomic_struct(d));
        if p.map_type == Some("atomic") || atomic_struct || p.shape == Shape::Opaque {
            MapType::Atomic
        } else {
            MapType::Granular
        }
    }

    /// The shape, if the field is known.
    pub fn shape(&self) -> Option<Shape> {
        self.property.map(|p| p.shape)
    }

    /// The definition of the struct, list element or map value (for descending), if known.
    pub fn child(&self) -> Option<&'static str> {
        self.property.and_then(|p| p.shape.child())
    }

    /// Whether values of this field are maps with arbitrary keys (labels, selector, data...)
    /// rather than structs with declared fields.
    pub fn is_map(&self) -> bool {
        matches!(self.shape(), Some(Shape::Map(_)))
    }
}

/// The definition name of the root of a kind, e.g. `("v1", "Service")` →
/// `io.k8s.api.core.v1.Service`. `None` for kinds we do not serve.
pub fn root(api_version: &str, kind: &str) -> Option<&'static str> {
    ROOTS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, d)| *d)
}

/// The schema of property `name` of `definition` (`None`: an unknown struct, all defaults).
pub fn field(definition: Option<&str>, name: &str) -> FieldSchema {
    FieldSchema {
        property: definition.and_then(|d| INDEX.get(&(d, name)).copied()),
    }
}

/// The schema of the field at `path` from the root of (`api_version`, `kind`). List elements are
/// transparent (`["spec", "containers", "ports"]`); inside a map the next segment is a map key
/// (`["metadata", "labels", "app"]`).
pub fn lookup(api_version: &str, kind: &str, path: &[&str]) -> FieldSchema {
    let mut definition = root(api_version, kind);
    let mut current = FieldSchema::default();
    let mut segments = path.iter();
    while let Some(segment) = segments.next() {
        current = field(definition, segment);
        definition = current.child();
        // Inside a map the next segment is a key, whose value has no markers of its own.
        if current.is_map() && segments.next().is_some() {
            current = FieldSchema::default();
        }
    }
    current
}

/// Whether a definition is `+structType=atomic` (owned and replaced as a whole by server-side
/// apply; OpenAPI `x-kubernetes-map-type: atomic` on the definition).
pub fn is_atomic_struct(definition: &str) -> bool {
    ATOMIC_STRUCTS.contains(&definition)
}

/// The `x-kubernetes-*` extensions of one property of one OpenAPI definition, e.g.
/// `extensions_for("io.k8s.api.core.v1.ServiceSpec", "ports")` →
/// list-map-keys `["port","protocol"]`, list-type `map`, patch-merge-key `port`,
/// patch-strategy `merge`. Empty for properties without markers.
pub fn extensions_for(definition: &str, property: &str) -> Vec<(&'static str, Value)> {
    field(Some(definition), property)
        .property
        .map(Property::extensions)
        .unwrap_or_default()
}

/// The `x-kubernetes-*` extensions of a whole definition (`x-kubernetes-map-type: atomic` for
/// `+structType=atomic` structs).
pub fn definition_extensions(definition: &str) -> Vec<(&'static str, Value)> {
    if is_atomic_struct(definition) {
        vec![("x-kubernetes-map-type", json!("atomic"))]
    } else {
        vec![]
    }
}

/// The default of a list-map key field that may be omitted from an element (upstream
/// `+default`), e.g. `ServicePort.protocol` → `"TCP"`.
pub fn key_default(definition: Option<&str>, key: &str) -> Option<Value> {
    let definition = definition?;
    KEY_DEFAULTS
        .iter()
        .find(|(d, k, _)| *d == definition && *k == key)
        .map(|(_, _, v)| json!(v))
}

/// Whether the kind has a `status` subresource (then writes to the main resource ignore
/// `status`, and writes to `status` ignore `spec`).
pub fn has_status_subresource(api_version: &str, kind: &str) -> bool {
    matches!(
        (api_version, kind),
        ("v1", "Namespace" | "Node" | "Pod" | "Service")
            | ("networking.k8s.io/v1", "ServiceCIDR")
            | ("apps/v1", "Deployment" | "ReplicaSet")
    )
}

static INDEX: LazyLock<HashMap<(&'static str, &'static str), &'static Property>> =
    LazyLock::new(|| {
        PROPERTIES
            .iter()
            .map(|p| ((p.definition, p.name), p))
            .collect()
    });

/// The kinds we serve: (apiVersion, kind, definition).
pub const ROOTS: &[(&str, &str, &str)] = &[
    ("v1", "Namespace", core!("Namespace")),
    ("v1", "Node", core!("Node")),
    ("v1", "Pod", core!("Pod")),
    ("v1", "Service", core!("Service")),
    ("v1", "Endpoints", core!("Endpoints")),
    ("v1", "ConfigMap", core!("ConfigMap")),
    ("v1", "Event", core!("Event")),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        discovery!("EndpointSlice"),
    ),
    ("coordination.k8s.io/v1", "Lease", coordination!("Lease")),
    (
        "networking.k8s.io/v1",
        "ServiceCIDR",
        networking!("ServiceCIDR"),
    ),
    (
        "networking.k8s.io/v1",
        "IPAddress",
        networking!("IPAddress"),
    ),
    ("apps/v1", "Deployment", apps!("Deployment")),
    ("apps/v1", "ReplicaSet", apps!("ReplicaSet")),
];

/// Definitions marked `+structType=atomic` upstream.
pub const ATOMIC_STRUCTS: &[&str] = &[
    core!("ConfigMapKeySelector"),
    core!("EndpointAddress"),
    core!("EndpointPort"),
    core!("FileKeySelector"),
    core!("LocalObjectReference"),
    core!("NodeSelector"),
    core!("NodeSelectorTerm"),
    core!("ObjectFieldSelector"),
    core!("ObjectReference"),
    core!("ResourceFieldSelector"),
    core!("SecretKeySelector"),
    core!("TypedLocalObjectReference"),
    discovery!("EndpointPort"),
    meta!("LabelSelector"),
    meta!("OwnerReference"),
];

/// Defaults of list-map key fields (upstream `+default`), used when an element omits them.
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    (core!("ContainerPort"), "protocol", "TCP"),
    (core!("LocalObjectReference"), "name", ""),
    (core!("ServicePort"), "protocol", "TCP"),
];

/// Every list, map and nested struct of our kinds with its markers (generated, see the module doc).
#[rustfmt::skip]
pub const PROPERTIES: &[Property] = &[
    // Namespace
    Property::new(core!("Namespace"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("Namespace"), "spec", Shape::Struct(core!("NamespaceSpec"))),
    Property::new(core!("Namespace"), "status", Shape::Struct(core!("NamespaceStatus"))),
    // Node
    Property::new(core!("Node"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("Node"), "spec", Shape::Struct(core!("NodeSpec"))),
    Property::new(core!("Node"), "status", Shape::Struct(core!("NodeStatus"))),
    // Pod
    Property::new(core!("Pod"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("Pod"), "spec", Shape::Struct(core!("PodSpec"))),
    Property::new(core!("Pod"), "status", Shape::Struct(core!("PodStatus"))),
    // Service
    Property::new(core!("Service"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("Service"), "spec", Shape::Struct(core!("ServiceSpec"))),
    Property::new(core!("Service"), "status", Shape::Struct(core!("ServiceStatus"))),
    // Endpoints
    Property::new(core!("Endpoints"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("Endpoints"), "subsets", Shape::List(Some(core!("EndpointSubset")))).list("atomic", &[]),
    // ConfigMap
    Property::new(core!("ConfigMap"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("ConfigMap"), "data", Shape::Map(None)),
    Property::new(core!("ConfigMap"), "binaryData", Shape::Map(None)),
    // Event
    Property::new(core!("Event"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("Event"), "involvedObject", Shape::Struct(core!("ObjectReference"))),
    Property::new(core!("Event"), "related", Shape::Struct(core!("ObjectReference"))),
    // EndpointSlice
    Property::new(discovery!("EndpointSlice"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(discovery!("EndpointSlice"), "endpoints", Shape::List(Some(discovery!("Endpoint")))).list("atomic", &[]),
    Property::new(discovery!("EndpointSlice"), "ports", Shape::List(Some(discovery!("EndpointPort")))).list("atomic", &[]),
    // Lease
    Property::new(coordination!("Lease"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    // ServiceCIDR
    Property::new(networking!("ServiceCIDR"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(networking!("ServiceCIDR"), "spec", Shape::Struct(networking!("ServiceCIDRSpec"))),
    Property::new(networking!("ServiceCIDR"), "status", Shape::Struct(networking!("ServiceCIDRStatus"))),
    // IPAddress
    Property::new(networking!("IPAddress"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    // Deployment
    Property::new(apps!("Deployment"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(apps!("Deployment"), "spec", Shape::Struct(apps!("DeploymentSpec"))),
    Property::new(apps!("Deployment"), "status", Shape::Struct(apps!("DeploymentStatus"))),
    // DeploymentSpec
    Property::new(apps!("DeploymentSpec"), "selector", Shape::Struct(meta!("LabelSelector"))),
    Property::new(apps!("DeploymentSpec"), "template", Shape::Struct(core!("PodTemplateSpec"))),
    Property::new(apps!("DeploymentSpec"), "strategy", Shape::Struct(apps!("DeploymentStrategy"))).patch("retainKeys", ""),
    // DeploymentStatus
    Property::new(apps!("DeploymentStatus"), "conditions", Shape::List(Some(apps!("DeploymentCondition")))).patch("merge", "type").list("map", &["type"]),
    // ReplicaSet
    Property::new(apps!("ReplicaSet"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(apps!("ReplicaSet"), "spec", Shape::Struct(apps!("ReplicaSetSpec"))),
    Property::new(apps!("ReplicaSet"), "status", Shape::Struct(apps!("ReplicaSetStatus"))),
    // ReplicaSetSpec
    Property::new(apps!("ReplicaSetSpec"), "selector", Shape::Struct(meta!("LabelSelector"))),
    Property::new(apps!("ReplicaSetSpec"), "template", Shape::Struct(core!("PodTemplateSpec"))),
    // ReplicaSetStatus
    Property::new(apps!("ReplicaSetStatus"), "conditions", Shape::List(Some(apps!("ReplicaSetCondition")))).patch("merge", "type").list("map", &["type"]),
    // PodTemplateSpec
    Property::new(core!("PodTemplateSpec"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("PodTemplateSpec"), "spec", Shape::Struct(core!("PodSpec"))),
    // ObjectMeta
    Property::new(meta!("ObjectMeta"), "labels", Shape::Map(None)),
    Property::new(meta!("ObjectMeta"), "annotations", Shape::Map(None)),
    Property::new(meta!("ObjectMeta"), "ownerReferences", Shape::List(Some(meta!("OwnerReference")))).patch("merge", "uid").list("map", &["uid"]),
    Property::new(meta!("ObjectMeta"), "finalizers", Shape::List(None)).patch("merge", "").list("set", &[]),
    Property::new(meta!("ObjectMeta"), "managedFields", Shape::List(Some(meta!("ManagedFieldsEntry")))).list("atomic", &[]),
    // NamespaceSpec
    Property::new(core!("NamespaceSpec"), "finalizers", Shape::List(None)).list("atomic", &[]),
    // NamespaceStatus
    Property::new(core!("NamespaceStatus"), "conditions", Shape::List(Some(core!("NamespaceCondition")))).patch("merge", "type").list("map", &["type"]),
    // NodeSpec
    Property::new(core!("NodeSpec"), "podCIDRs", Shape::List(None)).patch("merge", "").list("set", &[]),
    Property::new(core!("NodeSpec"), "taints", Shape::List(Some(core!("Taint")))).list("atomic", &[]),
    // NodeStatus
    Property::new(core!("NodeStatus"), "capacity", Shape::Map(None)),
    Property::new(core!("NodeStatus"), "allocatable", Shape::Map(None)),
    Property::new(core!("NodeStatus"), "conditions", Shape::List(Some(core!("NodeCondition")))).patch("merge", "type").list("map", &["type"]),
    Property::new(core!("NodeStatus"), "addresses", Shape::List(Some(core!("NodeAddress")))).patch("merge", "type").list("map", &["type"]),
    Property::new(core!("NodeStatus"), "images", Shape::List(Some(core!("ContainerImage")))).list("atomic", &[]),
    Property::new(core!("NodeStatus"), "volumesInUse", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("NodeStatus"), "volumesAttached", Shape::List(Some(core!("AttachedVolume")))).list("atomic", &[]),
    Property::new(core!("NodeStatus"), "runtimeHandlers", Shape::List(Some(core!("NodeRuntimeHandler")))).list("atomic", &[]),
    // PodSpec
    Property::new(core!("PodSpec"), "volumes", Shape::List(Some(core!("Volume")))).patch("merge,retainKeys", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "initContainers", Shape::List(Some(core!("Container")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "containers", Shape::List(Some(core!("Container")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "ephemeralContainers", Shape::List(Some(core!("EphemeralContainer")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "nodeSelector", Shape::Map(None)).atomic_map(),
    Property::new(core!("PodSpec"), "securityContext", Shape::Struct(core!("PodSecurityContext"))),
    Property::new(core!("PodSpec"), "imagePullSecrets", Shape::List(Some(core!("LocalObjectReference")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "affinity", Shape::Struct(core!("Affinity"))),
    Property::new(core!("PodSpec"), "tolerations", Shape::List(Some(core!("Toleration")))).list("atomic", &[]),
    Property::new(core!("PodSpec"), "hostAliases", Shape::List(Some(core!("HostAlias")))).patch("merge", "ip").list("map", &["ip"]),
    Property::new(core!("PodSpec"), "dnsConfig", Shape::Struct(core!("PodDNSConfig"))),
    Property::new(core!("PodSpec"), "readinessGates", Shape::List(Some(core!("PodReadinessGate")))).list("atomic", &[]),
    Property::new(core!("PodSpec"), "overhead", Shape::Map(None)),
    Property::new(core!("PodSpec"), "topologySpreadConstraints", Shape::List(Some(core!("TopologySpreadConstraint")))).patch("merge", "topologyKey").list("map", &["topologyKey", "whenUnsatisfiable"]),
    Property::new(core!("PodSpec"), "schedulingGates", Shape::List(Some(core!("PodSchedulingGate")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "resourceClaims", Shape::List(Some(core!("PodResourceClaim")))).patch("merge,retainKeys", "name").list("map", &["name"]),
    Property::new(core!("PodSpec"), "resources", Shape::Struct(core!("ResourceRequirements"))),
    // PodStatus
    Property::new(core!("PodStatus"), "conditions", Shape::List(Some(core!("PodCondition")))).patch("merge", "type").list("map", &["type"]),
    Property::new(core!("PodStatus"), "hostIPs", Shape::List(Some(core!("HostIP")))).patch("merge", "ip").list("atomic", &[]),
    Property::new(core!("PodStatus"), "podIPs", Shape::List(Some(core!("PodIP")))).patch("merge", "ip").list("map", &["ip"]),
    Property::new(core!("PodStatus"), "initContainerStatuses", Shape::List(Some(core!("ContainerStatus")))).list("atomic", &[]),
    Property::new(core!("PodStatus"), "containerStatuses", Shape::List(Some(core!("ContainerStatus")))).list("atomic", &[]),
    Property::new(core!("PodStatus"), "ephemeralContainerStatuses", Shape::List(Some(core!("ContainerStatus")))).list("atomic", &[]),
    Property::new(core!("PodStatus"), "resourceClaimStatuses", Shape::List(Some(core!("PodResourceClaimStatus")))).patch("merge,retainKeys", "name").list("map", &["name"]),
    // ServiceSpec
    Property::new(core!("ServiceSpec"), "ports", Shape::List(Some(core!("ServicePort")))).patch("merge", "port").list("map", &["port", "protocol"]),
    Property::new(core!("ServiceSpec"), "selector", Shape::Map(None)).atomic_map(),
    Property::new(core!("ServiceSpec"), "clusterIPs", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("ServiceSpec"), "externalIPs", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("ServiceSpec"), "loadBalancerSourceRanges", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("ServiceSpec"), "ipFamilies", Shape::List(None)).list("atomic", &[]),
    // ServiceStatus
    Property::new(core!("ServiceStatus"), "loadBalancer", Shape::Struct(core!("LoadBalancerStatus"))),
    Property::new(core!("ServiceStatus"), "conditions", Shape::List(Some(meta!("Condition")))).patch("merge", "type").list("map", &["type"]),
    // EndpointSubset
    Property::new(core!("EndpointSubset"), "addresses", Shape::List(Some(core!("EndpointAddress")))).list("atomic", &[]),
    Property::new(core!("EndpointSubset"), "notReadyAddresses", Shape::List(Some(core!("EndpointAddress")))).list("atomic", &[]),
    Property::new(core!("EndpointSubset"), "ports", Shape::List(Some(core!("EndpointPort")))).list("atomic", &[]),
    // Endpoint
    Property::new(discovery!("Endpoint"), "addresses", Shape::List(None)).list("set", &[]),
    Property::new(discovery!("Endpoint"), "targetRef", Shape::Struct(core!("ObjectReference"))),
    Property::new(discovery!("Endpoint"), "deprecatedTopology", Shape::Map(None)),
    Property::new(discovery!("Endpoint"), "hints", Shape::Struct(discovery!("EndpointHints"))),
    // ServiceCIDRSpec
    Property::new(networking!("ServiceCIDRSpec"), "cidrs", Shape::List(None)).list("atomic", &[]),
    // ServiceCIDRStatus
    Property::new(networking!("ServiceCIDRStatus"), "conditions", Shape::List(Some(meta!("Condition")))).patch("merge", "type").list("map", &["type"]),
    // ManagedFieldsEntry
    Property::new(meta!("ManagedFieldsEntry"), "fieldsV1", Shape::Opaque),
    // ContainerImage
    Property::new(core!("ContainerImage"), "names", Shape::List(None)).list("atomic", &[]),
    // Volume
    Property::new(core!("Volume"), "secret", Shape::Struct(core!("SecretVolumeSource"))),
    Property::new(core!("Volume"), "iscsi", Shape::Struct(core!("ISCSIVolumeSource"))),
    Property::new(core!("Volume"), "rbd", Shape::Struct(core!("RBDVolumeSource"))),
    Property::new(core!("Volume"), "flexVolume", Shape::Struct(core!("FlexVolumeSource"))),
    Property::new(core!("Volume"), "cinder", Shape::Struct(core!("CinderVolumeSource"))),
    Property::new(core!("Volume"), "cephfs", Shape::Struct(core!("CephFSVolumeSource"))),
    Property::new(core!("Volume"), "downwardAPI", Shape::Struct(core!("DownwardAPIVolumeSource"))),
    Property::new(core!("Volume"), "fc", Shape::Struct(core!("FCVolumeSource"))),
    Property::new(core!("Volume"), "configMap", Shape::Struct(core!("ConfigMapVolumeSource"))),
    Property::new(core!("Volume"), "projected", Shape::Struct(core!("ProjectedVolumeSource"))),
    Property::new(core!("Volume"), "scaleIO", Shape::Struct(core!("ScaleIOVolumeSource"))),
    Property::new(core!("Volume"), "storageos", Shape::Struct(core!("StorageOSVolumeSource"))),
    Property::new(core!("Volume"), "csi", Shape::Struct(core!("CSIVolumeSource"))),
    Property::new(core!("Volume"), "ephemeral", Shape::Struct(core!("EphemeralVolumeSource"))),
    // Container
    Property::new(core!("Container"), "command", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("Container"), "args", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("Container"), "ports", Shape::List(Some(core!("ContainerPort")))).patch("merge", "containerPort").list("map", &["containerPort", "protocol"]),
    Property::new(core!("Container"), "envFrom", Shape::List(Some(core!("EnvFromSource")))).list("atomic", &[]),
    Property::new(core!("Container"), "env", Shape::List(Some(core!("EnvVar")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("Container"), "resources", Shape::Struct(core!("ResourceRequirements"))),
    Property::new(core!("Container"), "resizePolicy", Shape::List(Some(core!("ContainerResizePolicy")))).list("atomic", &[]),
    Property::new(core!("Container"), "volumeMounts", Shape::List(Some(core!("VolumeMount")))).patch("merge", "mountPath").list("map", &["mountPath"]),
    Property::new(core!("Container"), "volumeDevices", Shape::List(Some(core!("VolumeDevice")))).patch("merge", "devicePath").list("map", &["devicePath"]),
    Property::new(core!("Container"), "livenessProbe", Shape::Struct(core!("Probe"))),
    Property::new(core!("Container"), "readinessProbe", Shape::Struct(core!("Probe"))),
    Property::new(core!("Container"), "startupProbe", Shape::Struct(core!("Probe"))),
    Property::new(core!("Container"), "lifecycle", Shape::Struct(core!("Lifecycle"))),
    Property::new(core!("Container"), "securityContext", Shape::Struct(core!("SecurityContext"))),
    // EphemeralContainer
    Property::new(core!("EphemeralContainer"), "command", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("EphemeralContainer"), "args", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("EphemeralContainer"), "ports", Shape::List(Some(core!("ContainerPort")))).patch("merge", "containerPort").list("map", &["containerPort", "protocol"]),
    Property::new(core!("EphemeralContainer"), "envFrom", Shape::List(Some(core!("EnvFromSource")))).list("atomic", &[]),
    Property::new(core!("EphemeralContainer"), "env", Shape::List(Some(core!("EnvVar")))).patch("merge", "name").list("map", &["name"]),
    Property::new(core!("EphemeralContainer"), "resources", Shape::Struct(core!("ResourceRequirements"))),
    Property::new(core!("EphemeralContainer"), "resizePolicy", Shape::List(Some(core!("ContainerResizePolicy")))).list("atomic", &[]),
    Property::new(core!("EphemeralContainer"), "volumeMounts", Shape::List(Some(core!("VolumeMount")))).patch("merge", "mountPath").list("map", &["mountPath"]),
    Property::new(core!("EphemeralContainer"), "volumeDevices", Shape::List(Some(core!("VolumeDevice")))).patch("merge", "devicePath").list("map", &["devicePath"]),
    Property::new(core!("EphemeralContainer"), "livenessProbe", Shape::Struct(core!("Probe"))),
    Property::new(core!("EphemeralContainer"), "readinessProbe", Shape::Struct(core!("Probe"))),
    Property::new(core!("EphemeralContainer"), "startupProbe", Shape::Struct(core!("Probe"))),
    Property::new(core!("EphemeralContainer"), "lifecycle", Shape::Struct(core!("Lifecycle"))),
    Property::new(core!("EphemeralContainer"), "securityContext", Shape::Struct(core!("SecurityContext"))),
    // PodSecurityContext
    Property::new(core!("PodSecurityContext"), "supplementalGroups", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("PodSecurityContext"), "sysctls", Shape::List(Some(core!("Sysctl")))).list("atomic", &[]),
    // Affinity
    Property::new(core!("Affinity"), "nodeAffinity", Shape::Struct(core!("NodeAffinity"))),
    Property::new(core!("Affinity"), "podAffinity", Shape::Struct(core!("PodAffinity"))),
    Property::new(core!("Affinity"), "podAntiAffinity", Shape::Struct(core!("PodAntiAffinity"))),
    // HostAlias
    Property::new(core!("HostAlias"), "hostnames", Shape::List(None)).list("atomic", &[]),
    // PodDNSConfig
    Property::new(core!("PodDNSConfig"), "nameservers", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("PodDNSConfig"), "searches", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("PodDNSConfig"), "options", Shape::List(Some(core!("PodDNSConfigOption")))).list("atomic", &[]),
    // TopologySpreadConstraint
    Property::new(core!("TopologySpreadConstraint"), "labelSelector", Shape::Struct(meta!("LabelSelector"))),
    Property::new(core!("TopologySpreadConstraint"), "matchLabelKeys", Shape::List(None)).list("atomic", &[]),
    // ResourceRequirements
    Property::new(core!("ResourceRequirements"), "limits", Shape::Map(None)),
    Property::new(core!("ResourceRequirements"), "requests", Shape::Map(None)),
    Property::new(core!("ResourceRequirements"), "claims", Shape::List(Some(core!("ResourceClaim")))).list("map", &["name"]),
    // ContainerStatus
    Property::new(core!("ContainerStatus"), "allocatedResources", Shape::Map(None)),
    Property::new(core!("ContainerStatus"), "resources", Shape::Struct(core!("ResourceRequirements"))),
    Property::new(core!("ContainerStatus"), "volumeMounts", Shape::List(Some(core!("VolumeMountStatus")))).patch("merge", "mountPath").list("map", &["mountPath"]),
    Property::new(core!("ContainerStatus"), "user", Shape::Struct(core!("ContainerUser"))),
    Property::new(core!("ContainerStatus"), "allocatedResourcesStatus", Shape::List(Some(core!("ResourceStatus")))).patch("merge", "name").list("map", &["name"]),
    // LoadBalancerStatus
    Property::new(core!("LoadBalancerStatus"), "ingress", Shape::List(Some(core!("LoadBalancerIngress")))).list("atomic", &[]),
    // EndpointAddress
    Property::new(core!("EndpointAddress"), "targetRef", Shape::Struct(core!("ObjectReference"))),
    // EndpointHints
    Property::new(discovery!("EndpointHints"), "forZones", Shape::List(Some(discovery!("ForZone")))).list("atomic", &[]),
    Property::new(discovery!("EndpointHints"), "forNodes", Shape::List(Some(discovery!("ForNode")))).list("atomic", &[]),
    // EnvVar
    Property::new(core!("EnvVar"), "valueFrom", Shape::Struct(core!("EnvVarSource"))),
    // Probe
    Property::new(core!("Probe"), "exec", Shape::Struct(core!("ExecAction"))),
    Property::new(core!("Probe"), "httpGet", Shape::Struct(core!("HTTPGetAction"))),
    // Lifecycle
    Property::new(core!("Lifecycle"), "postStart", Shape::Struct(core!("LifecycleHandler"))),
    Property::new(core!("Lifecycle"), "preStop", Shape::Struct(core!("LifecycleHandler"))),
    // SecurityContext
    Property::new(core!("SecurityContext"), "capabilities", Shape::Struct(core!("Capabilities"))),
    // NodeAffinity
    Property::new(core!("NodeAffinity"), "requiredDuringSchedulingIgnoredDuringExecution", Shape::Struct(core!("NodeSelector"))),
    Property::new(core!("NodeAffinity"), "preferredDuringSchedulingIgnoredDuringExecution", Shape::List(Some(core!("PreferredSchedulingTerm")))).list("atomic", &[]),
    // PodAffinity
    Property::new(core!("PodAffinity"), "requiredDuringSchedulingIgnoredDuringExecution", Shape::List(Some(core!("PodAffinityTerm")))).list("atomic", &[]),
    Property::new(core!("PodAffinity"), "preferredDuringSchedulingIgnoredDuringExecution", Shape::List(Some(core!("WeightedPodAffinityTerm")))).list("atomic", &[]),
    // PodAntiAffinity
    Property::new(core!("PodAntiAffinity"), "requiredDuringSchedulingIgnoredDuringExecution", Shape::List(Some(core!("PodAffinityTerm")))).list("atomic", &[]),
    Property::new(core!("PodAntiAffinity"), "preferredDuringSchedulingIgnoredDuringExecution", Shape::List(Some(core!("WeightedPodAffinityTerm")))).list("atomic", &[]),
    // LabelSelector
    Property::new(meta!("LabelSelector"), "matchLabels", Shape::Map(None)),
    Property::new(meta!("LabelSelector"), "matchExpressions", Shape::List(Some(meta!("LabelSelectorRequirement")))).list("atomic", &[]),
    // ContainerUser
    Property::new(core!("ContainerUser"), "linux", Shape::Struct(core!("LinuxContainerUser"))),
    // ResourceStatus
    Property::new(core!("ResourceStatus"), "resources", Shape::List(Some(core!("ResourceHealth")))).list("map", &["resourceID"]),
    // LoadBalancerIngress
    Property::new(core!("LoadBalancerIngress"), "ports", Shape::List(Some(core!("PortStatus")))).list("atomic", &[]),
    // SecretVolumeSource
    Property::new(core!("SecretVolumeSource"), "items", Shape::List(Some(core!("KeyToPath")))).list("atomic", &[]),
    // ISCSIVolumeSource
    Property::new(core!("ISCSIVolumeSource"), "portals", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("ISCSIVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    // RBDVolumeSource
    Property::new(core!("RBDVolumeSource"), "monitors", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("RBDVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    // FlexVolumeSource
    Property::new(core!("FlexVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    Property::new(core!("FlexVolumeSource"), "options", Shape::Map(None)),
    // CinderVolumeSource
    Property::new(core!("CinderVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    // CephFSVolumeSource
    Property::new(core!("CephFSVolumeSource"), "monitors", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("CephFSVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    // DownwardAPIVolumeSource
    Property::new(core!("DownwardAPIVolumeSource"), "items", Shape::List(Some(core!("DownwardAPIVolumeFile")))).list("atomic", &[]),
    // FCVolumeSource
    Property::new(core!("FCVolumeSource"), "targetWWNs", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("FCVolumeSource"), "wwids", Shape::List(None)).list("atomic", &[]),
    // ConfigMapVolumeSource
    Property::new(core!("ConfigMapVolumeSource"), "items", Shape::List(Some(core!("KeyToPath")))).list("atomic", &[]),
    // ProjectedVolumeSource
    Property::new(core!("ProjectedVolumeSource"), "sources", Shape::List(Some(core!("VolumeProjection")))).list("atomic", &[]),
    // ScaleIOVolumeSource
    Property::new(core!("ScaleIOVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    // StorageOSVolumeSource
    Property::new(core!("StorageOSVolumeSource"), "secretRef", Shape::Struct(core!("LocalObjectReference"))),
    // CSIVolumeSource
    Property::new(core!("CSIVolumeSource"), "volumeAttributes", Shape::Map(None)),
    Property::new(core!("CSIVolumeSource"), "nodePublishSecretRef", Shape::Struct(core!("LocalObjectReference"))),
    // EphemeralVolumeSource
    Property::new(core!("EphemeralVolumeSource"), "volumeClaimTemplate", Shape::Struct(core!("PersistentVolumeClaimTemplate"))),
    // EnvVarSource
    Property::new(core!("EnvVarSource"), "fieldRef", Shape::Struct(core!("ObjectFieldSelector"))),
    Property::new(core!("EnvVarSource"), "resourceFieldRef", Shape::Struct(core!("ResourceFieldSelector"))),
    Property::new(core!("EnvVarSource"), "configMapKeyRef", Shape::Struct(core!("ConfigMapKeySelector"))),
    Property::new(core!("EnvVarSource"), "secretKeyRef", Shape::Struct(core!("SecretKeySelector"))),
    // LifecycleHandler
    Property::new(core!("LifecycleHandler"), "exec", Shape::Struct(core!("ExecAction"))),
    Property::new(core!("LifecycleHandler"), "httpGet", Shape::Struct(core!("HTTPGetAction"))),
    // Capabilities
    Property::new(core!("Capabilities"), "add", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("Capabilities"), "drop", Shape::List(None)).list("atomic", &[]),
    // NodeSelector
    Property::new(core!("NodeSelector"), "nodeSelectorTerms", Shape::List(Some(core!("NodeSelectorTerm")))).list("atomic", &[]),
    // PreferredSchedulingTerm
    Property::new(core!("PreferredSchedulingTerm"), "preference", Shape::Struct(core!("NodeSelectorTerm"))),
    // PodAffinityTerm
    Property::new(core!("PodAffinityTerm"), "labelSelector", Shape::Struct(meta!("LabelSelector"))),
    Property::new(core!("PodAffinityTerm"), "namespaces", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("PodAffinityTerm"), "namespaceSelector", Shape::Struct(meta!("LabelSelector"))),
    Property::new(core!("PodAffinityTerm"), "matchLabelKeys", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("PodAffinityTerm"), "mismatchLabelKeys", Shape::List(None)).list("atomic", &[]),
    // WeightedPodAffinityTerm
    Property::new(core!("WeightedPodAffinityTerm"), "podAffinityTerm", Shape::Struct(core!("PodAffinityTerm"))),
    // LabelSelectorRequirement
    Property::new(meta!("LabelSelectorRequirement"), "values", Shape::List(None)).list("atomic", &[]),
    // LinuxContainerUser
    Property::new(core!("LinuxContainerUser"), "supplementalGroups", Shape::List(None)).list("atomic", &[]),
    // DownwardAPIVolumeFile
    Property::new(core!("DownwardAPIVolumeFile"), "fieldRef", Shape::Struct(core!("ObjectFieldSelector"))),
    Property::new(core!("DownwardAPIVolumeFile"), "resourceFieldRef", Shape::Struct(core!("ResourceFieldSelector"))),
    // VolumeProjection
    Property::new(core!("VolumeProjection"), "secret", Shape::Struct(core!("SecretProjection"))),
    Property::new(core!("VolumeProjection"), "downwardAPI", Shape::Struct(core!("DownwardAPIProjection"))),
    Property::new(core!("VolumeProjection"), "configMap", Shape::Struct(core!("ConfigMapProjection"))),
    Property::new(core!("VolumeProjection"), "clusterTrustBundle", Shape::Struct(core!("ClusterTrustBundleProjection"))),
    // PersistentVolumeClaimTemplate
    Property::new(core!("PersistentVolumeClaimTemplate"), "metadata", Shape::Struct(meta!("ObjectMeta"))),
    Property::new(core!("PersistentVolumeClaimTemplate"), "spec", Shape::Struct(core!("PersistentVolumeClaimSpec"))),
    // ExecAction
    Property::new(core!("ExecAction"), "command", Shape::List(None)).list("atomic", &[]),
    // HTTPGetAction
    Property::new(core!("HTTPGetAction"), "httpHeaders", Shape::List(Some(core!("HTTPHeader")))).list("atomic", &[]),
    // NodeSelectorTerm
    Property::new(core!("NodeSelectorTerm"), "matchExpressions", Shape::List(Some(core!("NodeSelectorRequirement")))).list("atomic", &[]),
    Property::new(core!("NodeSelectorTerm"), "matchFields", Shape::List(Some(core!("NodeSelectorRequirement")))).list("atomic", &[]),
    // SecretProjection
    Property::new(core!("SecretProjection"), "items", Shape::List(Some(core!("KeyToPath")))).list("atomic", &[]),
    // DownwardAPIProjection
    Property::new(core!("DownwardAPIProjection"), "items", Shape::List(Some(core!("DownwardAPIVolumeFile")))).list("atomic", &[]),
    // ConfigMapProjection
    Property::new(core!("ConfigMapProjection"), "items", Shape::List(Some(core!("KeyToPath")))).list("atomic", &[]),
    // ClusterTrustBundleProjection
    Property::new(core!("ClusterTrustBundleProjection"), "labelSelector", Shape::Struct(meta!("LabelSelector"))),
    // PersistentVolumeClaimSpec
    Property::new(core!("PersistentVolumeClaimSpec"), "accessModes", Shape::List(None)).list("atomic", &[]),
    Property::new(core!("PersistentVolumeClaimSpec"), "selector", Shape::Struct(meta!("LabelSelector"))),
    Property::new(core!("PersistentVolumeClaimSpec"), "resources", Shape::Struct(core!("VolumeResourceRequirements"))),
    Property::new(core!("PersistentVolumeClaimSpec"), "dataSource", Shape::Struct(core!("TypedLocalObjectReference"))),
    // NodeSelectorRequirement
    Property::new(core!("NodeSelectorRequirement"), "values", Shape::List(None)).list("atomic", &[]),
    // VolumeResourceRequirements
    Property::new(core!("VolumeResourceRequirements"), "limits", Shape::Map(None)),
    Property::new(core!("VolumeResourceRequirements"), "requests", Shape::Map(None)),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ports_merge_by_port_for_smp_but_by_port_and_protocol_for_ssa() {
        let ports = lookup("v1", "Service", &["spec", "ports"]);
        assert_eq!(ports.list_strategy(), ListStrategy::Merge { key: "port" });
        assert_eq!(
            ports.list_type(),
            ListType::Map {
                keys: &["port", "protocol"]
            }
        );
        assert_eq!(ports.child(), Some("io.k8s.api.core.v1.ServicePort"));
        assert_eq!(key_default(ports.child(), "protocol"), Some(json!("TCP")));
    }

    #[test]
    fn dual_stack_service_fields_are_atomic() {
        for f in [
            "clusterIPs",
            "ipFamilies",
            "externalIPs",
            "loadBalancerSourceRanges",
        ] {
            let s = lookup("v1", "Service", &["spec", f]);
            assert_eq!(s.list_strategy(), ListStrategy::Replace, "{f}");
            assert_eq!(s.list_type(), ListType::Atomic, "{f}");
        }
        let selector = lookup("v1", "Service", &["spec", "selector"]);
        assert_eq!(selector.map_type(), MapType::Atomic);
        assert!(selector.is_map());
        let ingress = lookup("v1", "Service", &["status", "loadBalancer", "ingress"]);
        assert_eq!(ingress.list_type(), ListType::Atomic);
        let conditions = lookup("v1", "Service", &["status", "conditions"]);
        assert_eq!(
            conditions.list_strategy(),
            ListStrategy::Merge { key: "type" }
        );
    }

    #[test]
    fn node_and_pod_lists_follow_upstream_markers() {
        let cidrs = lookup("v1", "Node", &["spec", "podCIDRs"]);
        assert_eq!(cidrs.list_strategy(), ListStrategy::MergePrimitives);
        assert_eq!(cidrs.list_type(), ListType::Set);
        let addresses = lookup("v1", "Node", &["status", "addresses"]);
        assert_eq!(
            addresses.list_strategy(),
            ListStrategy::Merge { key: "type" }
        );
        assert_eq!(addresses.list_type(), ListType::Map { keys: &["type"] });
        assert_eq!(
            lookup("v1", "Node", &["spec", "taints"]).list_type(),
            ListType::Atomic
        );
        let pod_ips = lookup("v1", "Pod", &["status", "podIPs"]);
        assert_eq!(pod_ips.list_strategy(), ListStrategy::Merge { key: "ip" });
        assert_eq!(pod_ips.list_type(), ListType::Map { keys: &["ip"] });
        let env = lookup("v1", "Pod", &["spec", "containers", "env"]);
        assert_eq!(env.list_strategy(), ListStrategy::Merge { key: "name" });
        let cports = lookup("v1", "Pod", &["spec", "initContainers", "ports"]);
        assert_eq!(
            cports.list_type(),
            ListType::Map {
                keys: &["containerPort", "protocol"]
            }
        );
        let volumes = lookup("v1", "Pod", &["spec", "volumes"]);
        assert!(volumes.retain_keys());
        assert_eq!(volumes.list_strategy(), ListStrategy::Merge { key: "name" });
        let statuses = lookup("v1", "Pod", &["status", "containerStatuses"]);
        assert_eq!(statuses.list_type(), ListType::Atomic);
    }

    #[test]
    fn metadata_lists_and_maps_are_described() {
        let fin = lookup("v1", "ConfigMap", &["metadata", "finalizers"]);
        assert_eq!(fin.list_strategy(), ListStrategy::MergePrimitives);
        assert_eq!(fin.list_type(), ListType::Set);
        let owners = lookup(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            &["metadata", "ownerReferences"],
        );
        assert_eq!(owners.list_type(), ListType::Map { keys: &["uid"] });
        assert!(is_atomic_struct(owners.child().unwrap()));
        let labels = lookup("v1", "Pod", &["metadata", "labels"]);
        assert!(labels.is_map());
        assert_eq!(labels.map_type(), MapType::Granular);
        assert_eq!(
            lookup("v1", "Pod", &["metadata", "labels", "app"]),
            FieldSchema::default()
        );
    }

    #[test]
    fn unknown_fields_and_kinds_get_upstream_defaults() {
        let s = lookup("v1", "Service", &["spec", "bogus"]);
        assert_eq!(s.list_strategy(), ListStrategy::Replace);
        assert_eq!(s.list_type(), ListType::Atomic);
        assert_eq!(s.map_type(), MapType::Granular);
        assert_eq!(
            lookup("example.com/v1", "Widget", &["spec", "ports"]),
            FieldSchema::default()
        );
        let slice = lookup("discovery.k8s.io/v1", "EndpointSlice", &["endpoints"]);
        assert_eq!(slice.list_type(), ListType::Atomic);
        let subsets = lookup("v1", "Endpoints", &["subsets"]);
        assert_eq!(subsets.list_strategy(), ListStrategy::Replace);
        let cidrs = lookup("networking.k8s.io/v1", "ServiceCIDR", &["spec", "cidrs"]);
        assert_eq!(cidrs.list_type(), ListType::Atomic);
    }

    #[test]
    fn openapi_extensions_come_from_the_same_rows() {
        let ext = extensions_for("io.k8s.api.core.v1.ServiceSpec", "ports");
        assert_eq!(
            ext,
            vec![
                ("x-kubernetes-list-map-keys", json!(["port", "protocol"])),
                ("x-kubernetes-list-type", json!("map")),
                ("x-kubernetes-patch-merge-key", json!("port")),
                ("x-kubernetes-patch-strategy", json!("merge")),
            ]
        );
        assert_eq!(
            extensions_for("io.k8s.api.core.v1.ServiceSpec", "selector"),
            vec![("x-kubernetes-map-type", json!("atomic"))]
        );
        assert_eq!(
            extensions_for("io.k8s.api.core.v1.PodSpec", "volumes")[3],
            ("x-kubernetes-patch-strategy", json!("merge,retainKeys"))
        );
        assert!(extensions_for("io.k8s.api.core.v1.ServiceSpec", "type").is_empty());
        assert_eq!(
            definition_extensions("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"),
            vec![("x-kubernetes-map-type", json!("atomic"))]
        );
    }

    #[test]
    fn every_row_points_at_a_known_definition_or_a_leaf() {
        let defs: std::collections::HashSet<&str> =
            PROPERTIES.iter().map(|p| p.definition).collect();
        for p in PROPERTIES {
            assert!(!p.name.is_empty());
            if let Some(keys) = p.patch_merge_key {
                assert!(
                    matches!(p.shape, Shape::List(Some(_))),
                    "{}.{} {keys}",
                    p.definition,
                    p.name
                );
            }
            if p.list_type == Some("map") {
                assert!(!p.list_map_keys.is_empty(), "{}.{}", p.definition, p.name);
            }
        }
        for (_, _, d) in ROOTS {
            assert!(defs.contains(d), "{d}");
        }
    }
}
