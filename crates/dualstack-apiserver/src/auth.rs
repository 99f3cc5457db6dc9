//! Authentication (bearer tokens from `DATA_DIR/tokens.json`), impersonation and
//! authorization: the admin (group `system:masters`) may do everything; a node
//! (`system:node:<name>`, group `system:nodes`) may only touch its own Node, the pods bound to
//! it, its own Lease, and record events, read the ConfigMaps its pods use, and read what an
//! agent needs (nodes, services, endpoints, slices, namespaces, service CIDRs). This is
//! upstream's Node authorizer plus the NodeRestriction admission plugin; object-level checks
//! (is this pod bound to me? which labels does this Node update change?) are in
//! [`NodeRestriction`], [`admit_node`] and [`admit_lease`]. Everything here is pure: what the
//! node authorizer needs to know about the cluster comes in through [`NodeGraph`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Node, NodeSpec, Pod};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Group of the admin user.
pub const MASTERS_GROUP: &str = "system:masters";
/// Group of node users.
pub const NODES_GROUP: &str = "system:nodes";
/// User name prefix of node users.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The group every authenticated user has.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name, e.g. `admin` or `system:node:n1`.
    pub name: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// UID (set by `Impersonate-Uid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Extra attributes (set by `Impersonate-Extra-*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with a name and groups.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        Self {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            uid: None,
            extra: BTreeMap::new(),
        }
    }

    /// The anonymous user (only for the public endpoints).
    pub fn anonymous() -> Self {
        Self::new("system:anonymous", &["system:unauthenticated"])
    }

    /// The node name when this is a node user.
    pub fn node_name(&self) -> Option<&str> {
        if self.groups.iter().any(|g| g == NODES_GROUP) {
            self.name.strip_prefix(NODE_USER_PREFIX)
        } else {
            None
        }
    }

    /// Whether this user may do everything.
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenEntry {
    token: String,
    #[serde(flatten)]
    user: UserInfo,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFileData {
    tokens: Vec<TokenEntry>,
}

/// The token file, re-read when it changes on disk (so `dualstack token create` works while the
/// server runs).
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, Vec<TokenEntry>)>,
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

impl Tokens {
    /// The token file of a data directory.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("tokens.json"),
            cache: Mutex::new((None, Vec::new())),
        }
    }

    fn read(&self) -> Result<TokenFileData> {
        match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("parsing {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFileData::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    /// Returns the token of `user`, creating one if it has none.
    pub fn ensure(&self, user: &UserInfo) -> Result<String> {
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        let mut data = self.read()?;
        if let Some(e) = data.tokens.iter().find(|e| e.user == *user) {
            return Ok(e.token.clone());
        }
        let token = random_token();
        data.tokens.push(TokenEntry {
            token: token.clone(),
            user: user.clone(),
        });
        crate::tls::write_private(&self.path, &serde_json::to_vec_pretty(&data)?)?;
        Ok(token)
    }

    /// Looks a bearer token up.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().expect("token cache");
        if (cache.0 != mtime || cache.0.is_none())
            && let Ok(data) = self.read()
        {
            *cache = (mtime, data.tokens);
        }
        cache
            .1
            .iter()
            .find(|e| constant_time_eq(e.token.as_bytes(), token.as_bytes()))
            .map(|e| e.user.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The namespace of node heartbeat leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The attributes of a request the authorizer decides on.
#[derive(Debug, Clone, Default)]
pub struct Attributes<'a> {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`,
    /// `impersonate`.
    pub verb: &'a str,
    /// API group.
    pub group: &'a str,
    /// Plural resource.
    pub resource: &'a str,
    /// Subresource (`status`, ...).
    pub subresource: Option<&'a str>,
    /// Namespace, if any.
    pub namespace: Option<&'a str>,
    /// Object name, if any.
    pub name: Option<&'a str>,
    /// `spec.nodeName=` value of the field selector, for pod lists.
    pub node_name_selector: Option<&'a str>,
}

/// What the node authorizer knows about the cluster (upstream keeps a graph of node → pod →
/// ConfigMap edges): the pods bound to a node. The server answers from its watch cache at
/// request time; tests pass fixed pods.
pub trait NodeGraph {
    /// The pods bound to `node` (`spec.nodeName`) in `namespace`.
    fn pods_on_node(&self, node: &str, namespace: &str) -> Vec<Pod>;
}

/// A cluster without pods (for decisions that never look at the graph, and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPods;

impl NodeGraph for NoPods {
    fn pods_on_node(&self, _node: &str, _namespace: &str) -> Vec<Pod> {
        Vec::new()
    }
}

/// The ConfigMaps a pod references, as upstream's node graph records them: `configMap` and
/// projected `configMap` volumes, `envFrom[].configMapRef` and `env[].valueFrom.configMapKeyRef`
/// of every container, init container and ephemeral container.
pub fn configmaps_of_pod(pod: &Pod) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            out.insert(cm.name.clone());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                out.insert(cm.name.clone());
            }
        }
    }
    let mut env = |env: Option<&Vec<EnvVar>>, env_from: Option<&Vec<EnvFromSource>>| {
        for e in env.into_iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|f| f.config_map_key_ref.as_ref())
            {
                out.insert(r.name.clone());
            }
        }
        for e in env_from.into_iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                out.insert(r.name.clone());
            }
        }
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        env(c.env.as_ref(), c.env_from.as_ref());
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        env(c.env.as_ref(), c.env_from.as_ref());
    }
    out.remove("");
    out
}

/// Decides a request (or an access review: the same question), or returns the reason for a
/// 403. The admin may do everything; a node is decided by [`authorize_node`]; anyone else may
/// do nothing (there is no RBAC here).
pub fn authorize(user: &UserInfo, a: &Attributes<'_>, graph: &dyn NodeGraph) -> Result<(), String> {
    if user.is_admin() {
        return Ok(());
    }
    match user.node_name() {
        Some(node) => authorize_node(node, a, graph),
        None => Err(String::new()),
    }
}

/// Upstream's node authorizer (and the `system:node` role's reads): a node touches its own Node,
/// the pods bound to it, its own Lease, events, the ConfigMaps its pods use, and reads what an
/// agent needs. Object-level checks that need the request body are in [`admit_node`],
/// [`admit_lease`] and [`NodeRestriction`].
pub fn authorize_node(node: &str, a: &Attributes<'_>, graph: &dyn NodeGraph) -> Result<(), String> {
    let read = matches!(a.verb, "get" | "list" | "watch");
    match (a.group, a.resource) {
        ("", "nodes") => {
            if read || a.name == Some(node) || (a.verb == "create" && a.name.is_none()) {
                Ok(())
            } else {
                Err(format!(
                    "node '{node}' cannot modify node '{}'",
                    a.name.unwrap_or("")
                ))
            }
        }
        ("", "pods") => match a.verb {
            "list" | "watch" if a.node_name_selector == Some(node) => Ok(()),
            "list" | "watch" => Err(format!(
                "node '{node}' can only list pods with fieldSelector spec.nodeName={node}"
            )),
            // Object-level: NodeRestriction checks the pod is bound to this node. As upstream's
            // node role: read it, write only its status, delete it (eviction).
            "get" | "delete" if a.name.is_some() && a.subresource.is_none() => Ok(()),
            "get" | "update" | "patch" if a.name.is_some() && a.subresource == Some("status") => {
                Ok(())
            }
            _ => Err(format!("node '{node}' cannot {} pods", a.verb)),
        },
        // Ours: every node's ip-masq-agent (inside `dualstack agent`) reads its configuration
        // with the node's credentials; upstream runs it as a DaemonSet with a ConfigMap mount.
        ("", "configmaps")
            if read
                && a.subresource.is_none()
                && a.namespace == Some(MASQ_CONFIGMAP.0)
                && a.name == Some(MASQ_CONFIGMAP.1) =>
        {
            Ok(())
        }
        ("", "configmaps") => {
            if a.verb != "get" {
                return Err("can only get individual resources of this type".into());
            }
            if a.subresource.is_some() {
                return Err("cannot get subresource".into());
            }
            let (Some(ns), Some(name)) = (a.namespace, a.name) else {
                return Err("No Object name found".into());
            };
            if graph
                .pods_on_node(node, ns)
                .iter()
                .any(|p| configmaps_of_pod(p).contains(name))
            {
                Ok(())
            } else {
                Err(format!(
                    "no relationship found between node '{node}' and this object"
                ))
            }
        }
        ("", "services" | "endpoints" | "namespaces")
        | ("discovery.k8s.io", "endpointslices")
        | ("networking.k8s.io", "servicecidrs" | "ipaddresses")
            if read =>
        {
            Ok(())
        }
        ("", "events") | ("events.k8s.io", "events")
            if matches!(a.verb, "create" | "update" | "patch" | "get") =>
        {
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            if !matches!(a.verb, "get" | "create" | "update" | "patch" | "delete") {
                Err("can only get, create, update, patch, or delete a node lease".into())
            } else if a.namespace != Some(NODE_LEASE_NAMESPACE) {
                Err(format!(
                    "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
                ))
            } else if a.verb != "create" && a.name != Some(node) {
                // The name of a create is in the body: [`admit_lease`] checks it.
                Err("can only access node lease with the same name as the requesting node".into())
            } else {
                Ok(())
            }
        }
        _ => Err(String::new()),
    }
}

/// NodeRestriction for a Lease written by a node: only its own, in `kube-node-lease` (the name
/// of a create is only known from the body). `Err` is the reason of the 403.
pub fn admit_lease(user: &UserInfo, namespace: Option<&str>, name: &str) -> Result<(), String> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    if namespace != Some(NODE_LEASE_NAMESPACE) {
        return Err(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    if name != node {
        return Err("can only access node lease with the same name as the requesting node".into());
    }
    Ok(())
}

/// Labels a kubelet may set on its own Node (upstream's `kubeletapis.KubeletLabels`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces a kubelet may use (and their subdomains).
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The label namespace of NodeRestriction's own labels, which no node may set.
const NODE_RESTRICTION_LABEL_NAMESPACE: &str = "node-restriction.kubernetes.io";

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.strip_suffix(domain).is_some_and(|p| p.ends_with('.'))
}

/// Whether a kubelet may set a label on its own Node (upstream's `IsKubeletLabel`).
fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|d| in_namespace(label_namespace(key), d))
}

/// The labels of a change a node may not make (upstream's `getForbiddenLabels`): anything under
/// `node-restriction.kubernetes.io`, and `kubernetes.io` / `k8s.io` labels that are not kubelet
/// labels (`node-role.kubernetes.io/*` among them). Sorted.
fn forbidden_labels(
    new: Option<&BTreeMap<String, String>>,
    old: Option<&BTreeMap<String, String>>,
) -> Vec<String> {
    let empty = BTreeMap::new();
    let (new, old) = (new.unwrap_or(&empty), old.unwrap_or(&empty));
    let modified: BTreeSet<&String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .chain(old.iter().filter(|(k, v)| new.get(*k) != Some(v)))
        .map(|(k, _)| k)
        .collect();
    modified
        .into_iter()
        .filter(|k| {
            let ns = label_namespace(k);
            let kubernetes = in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io");
            in_namespace(ns, NODE_RESTRICTION_LABEL_NAMESPACE)
                || (kubernetes && !is_kubelet_label(k))
        })
        .cloned()
        .collect()
}

/// NodeRestriction for a Node a node writes (`old` is None on create), on the final object:
/// only its own Node; no `configSource`; labels only from the kubelet's allowed set; taints
/// unchanged (a node may register with taints, as `--register-with-taints`); and no
/// `podCIDR`/`podCIDRs` of its own choosing (node IPAM assigns them). `Err` is the reason of
/// the 403, in upstream's words.
pub fn admit_node(user: &UserInfo, new: &Node, old: Option<&Node>) -> Result<(), String> {
    let Some(node) = user.node_name() else {
        return Ok(());
    };
    let name = new.metadata.name.as_deref().unwrap_or("");
    if name != node {
        return Err(format!(
            "node {node:?} is not allowed to modify node {name:?}"
        ));
    }
    let spec = new.spec.clone().unwrap_or_default();
    let cidrs = |s: &NodeSpec| {
        (
            s.pod_cidr.clone().filter(|c| !c.is_empty()),
            s.pod_cidrs.clone().filter(|c| !c.is_empty()),
        )
    };
    match old {
        None => {
            if spec.config_source.is_some() {
                return Err(format!(
                    "node {node:?} is not allowed to create pods with a non-nil configSource"
                ));
            }
            let bad = forbidden_labels(new.metadata.labels.as_ref(), None);
            if !bad.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    bad.join(", ")
                ));
            }
            if cidrs(&spec) != (None, None) {
                return Err(format!("node {node:?} is not allowed to set podCIDRs"));
            }
        }
        Some(old) => {
            let old_spec = old.spec.clone().unwrap_or_default();
            if spec.config_source.is_some() && spec.config_source != old_spec.config_source {
                return Err(format!(
                    "node {node:?} is not allowed to update configSource to a new non-nil configSource"
                ));
            }
            let taints = |s: &NodeSpec| s.taints.clone().unwrap_or_default();
            if taints(&spec) != taints(&old_spec) {
                return Err(format!("node {node:?} is not allowed to modify taints"));
            }
            let bad = forbidden_labels(new.metadata.labels.as_ref(), old.metadata.labels.as_ref());
            if !bad.is_empty() {
                return Err(format!(
                    "is not allowed to modify labels: {}",
                    bad.join(", ")
                ));
            }
            if cidrs(&spec) != cidrs(&old_spec) {
                return Err(format!("node {node:?} is not allowed to modify podCIDRs"));
            }
        }
    }
    Ok(())
}

/// Object-level node restriction: a node may only read or change pods bound to it.
#[derive(Debug, Clone, Copy)]
pub struct NodeRestriction;

impl NodeRestriction {
    /// Checks a pod (its `spec.nodeName`) against the node user; `None` when allowed.
    pub fn pod(user: &UserInfo, pod_node_name: Option<&str>) -> Option<String> {
        let node = user.node_name()?;
        if pod_node_name == Some(node) {
            None
        } else {
            Some(format!("node '{node}' can only access pods bound to it"))
        }
    }
}

/// Upstream's Forbidden message for a request.
pub fn forbidden_message(user: &UserInfo, a: &Attributes<'_>, reason: &str) -> String {
    let mut resource = a.resource.to_string();
    if let Some(s) = a.subresource {
        resource = format!("{resource}/{s}");
    }
    let mut why = match a.namespace {
        Some(ns) if !ns.is_empty() => format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, resource, a.group, ns
        ),
        _ => format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name, a.verb, resource, a.group
        ),
    };
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let qualified = if a.group.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    match a.name {
        Some(n) => format!("{qualified} {n:?} is forbidden: {why}"),
        None => format!("{qualified} is forbidden: {why}"),
    }
}

/// The `Impersonate-*` headers of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImpersonationRequest {
    /// `Impersonate-User` (empty = absent).
    pub user: Option<String>,
    /// `Impersonate-Uid`.
    pub uid: Option<String>,
    /// Every `Impersonate-Group` value.
    pub groups: Vec<String>,
    /// `Impersonate-Extra-<key>` values (key lower-cased).
    pub extra: Vec<(String, String)>,
}

impl ImpersonationRequest {
    /// Whether the request asks for impersonation at all.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.uid.is_none() && self.groups.is_empty() && self.extra.is_empty()
    }
}

/// Why an impersonation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImpersonationError {
    /// Groups, a UID or extras without `Impersonate-User` (upstream answers 500).
    #[error("requested {0} without impersonating a user")]
    WithoutUser(String),
    /// The requestor may not impersonate this (the 403 message).
    #[error("{0}")]
    Forbidden(String),
}

/// The user a request runs as after upstream's impersonation filter: each impersonated user,
/// group, UID and extra value is authorized (verb `impersonate`) for the requestor, which only
/// the admin passes; the result has the given groups plus `system:authenticated` (unless
/// `system:authenticated` or `system:unauthenticated` is given). `Ok(None)` when nothing is
/// impersonated.
pub fn impersonate(
    requestor: &UserInfo,
    req: &ImpersonationRequest,
) -> Result<Option<UserInfo>, ImpersonationError> {
    if req.is_empty() {
        return Ok(None);
    }
    let Some(name) = req.user.as_deref() else {
        let mut what: Vec<String> = req.groups.iter().map(|g| format!("group {g:?}")).collect();
        what.extend(req.extra.iter().map(|(k, v)| format!("extra {k}={v:?}")));
        what.extend(req.uid.iter().map(|u| format!("uid {u:?}")));
        return Err(ImpersonationError::WithoutUser(format!(
            "[{}]",
            what.join(", ")
        )));
    };
    let check = |a: Attributes<'_>| -> Result<(), ImpersonationError> {
        authorize(requestor, &a, &NoPods).map_err(|reason| {
            ImpersonationError::Forbidden(forbidden_message(requestor, &a, &reason))
        })
    };
    let mut groups = Vec::new();
    let sa = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains(':'));
    match sa {
        Some((ns, sa_name)) => {
            check(Attributes {
                verb: "impersonate",
                resource: "serviceaccounts",
                namespace: Some(ns),
                name: Some(sa_name),
                ..Default::default()
            })?;
            if req.groups.is_empty() {
                groups.push("system:serviceaccounts".to_string());
                groups.push(format!("system:serviceaccounts:{ns}"));
            }
        }
        None => check(Attributes {
            verb: "impersonate",
            resource: "users",
            name: Some(name),
            ..Default::default()
        })?,
    }
    for g in &req.groups {
        check(Attributes {
            verb: "impersonate",
            resource: "groups",
            name: Some(g),
            ..Default::default()
        })?;
        groups.push(g.clone());
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &req.extra {
        check(Attributes {
            verb: "impersonate",
            group: "authentication.k8s.io",
            resource: "userextras",
            subresource: Some(k),
            name: Some(v),
            ..Default::default()
        })?;
        extra.entry(k.clone()).or_default().push(v.clone());
    }
    if let Some(uid) = &req.uid {
        check(Attributes {
            verb: "impersonate",
            group: "authentication.k8s.io",
            resource: "uids",
            name: Some(uid),
            ..Default::default()
        })?;
    }
    if name == "system:anonymous" {
        if !groups.iter().any(|g| g == "system:unauthenticated") {
            groups.push("system:unauthenticated".into());
        }
    } else if !groups
        .iter()
        .any(|g| g == AUTHENTICATED_GROUP || g == "system:unauthenticated")
    {
        groups.push(AUTHENTICATED_GROUP.into());
    }
    Ok(Some(UserInfo {
        name: name.to_string(),
        groups,
        uid: req.uid.clone(),
        extra,
    }))
}

/// One rule of a rules review (`authorization.k8s.io/v1` `ResourceRule`).
pub type ResourceRule = k8s_openapi::api::authorization::v1::ResourceRule;
/// One non-resource rule of a rules review.
pub type NonResourceRule = k8s_openapi::api::authorization::v1::NonResourceRule;

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> ResourceRule {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    ResourceRule {
        verbs: s(verbs),
        api_groups: Some(s(groups)),
        resources: Some(s(resources)),
        resource_names: (!names.is_empty()).then(|| s(names)),
    }
}

/// Whether `user` may use a non-resource path (`/healthz`, `/api`, ...) with `verb`: the admin
/// all, everyone else `get` of the discovery and health paths ([`DISCOVERY_PATHS`]).
pub fn authorize_non_resource(user: &UserInfo, verb: &str, path: &str) -> bool {
    user.is_admin()
        || (verb == "get"
            && DISCOVERY_PATHS.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == *p,
            }))
}

/// Paths every authenticated user may read (upstream's `system:discovery` and
/// `system:public-info-viewer` roles).
pub const DISCOVERY_PATHS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/version/",
    "/openapi",
    "/openapi/*",
];

/// The ConfigMap of ip-masq-agent (namespace, name) every node may get, list and watch by name.
pub const MASQ_CONFIGMAP: (&str, &str) = ("kube-system", "ip-masq-agent");

/// Why a node's rules review is incomplete.
pub const RULES_INCOMPLETE: &str = "node authorizer rules that depend on the object (pods bound to the node, pod lists by spec.nodeName) are decided per request";

/// What `user` may do in `namespace`, for a SelfSubjectRulesReview: the resource rules, the
/// non-resource rules, and whether the list is incomplete (a node's pod rules depend on the
/// pod, which rules cannot express). Every listed rule is allowed by [`authorize`].
pub fn rules(
    user: &UserInfo,
    namespace: &str,
    graph: &dyn NodeGraph,
) -> (Vec<ResourceRule>, Vec<NonResourceRule>, bool) {
    let discovery = NonResourceRule {
        verbs: vec!["get".into()],
        non_resource_urls: Some(DISCOVERY_PATHS.iter().map(|p| p.to_string()).collect()),
    };
    if user.is_admin() {
        return (
            vec![rule(&["*"], &["*"], &["*"], &[])],
            vec![NonResourceRule {
                verbs: vec!["*".into()],
                non_resource_urls: Some(vec!["*".into()]),
            }],
            false,
        );
    }
    let Some(node) = user.node_name() else {
        return (Vec::new(), vec![discovery], false);
    };
    let mut out = vec![
        rule(
            &["get", "list", "watch"],
            &[""],
            &["nodes", "services", "endpoints", "namespaces"],
            &[],
        ),
        rule(
            &["get", "list", "watch"],
            &["discovery.k8s.io"],
            &["endpointslices"],
            &[],
        ),
        rule(
            &["get", "list", "watch"],
            &["networking.k8s.io"],
            &["servicecidrs", "ipaddresses"],
            &[],
        ),
        rule(&["create"], &[""], &["nodes"], &[]),
        rule(
            &["get", "update", "patch", "delete"],
            &[""],
            &["nodes", "nodes/status"],
            &[node],
        ),
        rule(&["get", "delete"], &[""], &["pods"], &[]),
        rule(&["get", "update", "patch"], &[""], &["pods/status"], &[]),
        rule(
            &["create", "update", "patch", "get"],
            &["", "events.k8s.io"],
            &["events"],
            &[],
        ),
    ];
    if namespace == NODE_LEASE_NAMESPACE {
        out.push(rule(
            &["create"],
            &["coordination.k8s.io"],
            &["leases"],
            &[],
        ));
        out.push(rule(
            &["get", "update", "patch", "delete"],
            &["coordination.k8s.io"],
            &["leases"],
            &[node],
        ));
    }
    if namespace == MASQ_CONFIGMAP.0 {
        out.push(rule(
            &["get", "list", "watch"],
            &[""],
            &["configmaps"],
            &[MASQ_CONFIGMAP.1],
        ));
    }
    let configmaps: BTreeSet<String> = graph
        .pods_on_node(node, namespace)
        .iter()
        .flat_map(configmaps_of_pod)
        .collect();
    if !configmaps.is_empty() {
        let names: Vec<&str> = configmaps.iter().map(String::as_str).collect();
        out.push(rule(&["get"], &[""], &["configmaps"], &names));
    }
    (out, vec![discovery], true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(n: &str) -> UserInfo {
        UserInfo::new(format!("system:node:{n}"), &[NODES_GROUP])
    }

    fn az(u: &UserInfo, a: &Attributes<'_>) -> Result<(), String> {
        authorize(u, a, &NoPods)
    }

    fn attrs<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group,
            resource,
            subresource: None,
            namespace: ns,
            name,
            node_name_selector: None,
        }
    }

    #[test]
    fn tokens_are_issued_once_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::new(dir.path());
        let admin = UserInfo::new("admin", &[MASTERS_GROUP]);
        let tok = t.ensure(&admin).unwrap();
        assert_eq!(t.ensure(&admin).unwrap(), tok);
        assert_eq!(t.authenticate(&tok), Some(admin));
        assert_eq!(t.authenticate("nope"), None);
        let n1 = t.ensure(&node("n1")).unwrap();
        assert_eq!(t.authenticate(&n1).unwrap().node_name(), Some("n1"));
    }

    #[test]
    fn nodes_may_only_touch_their_own_node_and_read_cluster_state() {
        let u = node("n1");
        assert!(az(&u, &attrs("update", "", "nodes", None, Some("n1"))).is_ok());
        assert!(az(&u, &attrs("update", "", "nodes", None, Some("n2"))).is_err());
        assert!(az(&u, &attrs("list", "", "nodes", None, None)).is_ok());
        assert!(az(&u, &attrs("list", "", "services", None, None)).is_ok());
        assert!(az(&u, &attrs("create", "", "services", Some("default"), None)).is_err());
        assert!(
            az(
                &u,
                &attrs("delete", "", "configmaps", Some("default"), Some("x"))
            )
            .is_err()
        );
        let mut pods = attrs("list", "", "pods", None, None);
        assert!(az(&u, &pods).is_err());
        pods.node_name_selector = Some("n1");
        assert!(az(&u, &pods).is_ok());
        assert!(NodeRestriction::pod(&u, Some("n2")).is_some());
        assert!(NodeRestriction::pod(&u, Some("n1")).is_none());
    }

    #[test]
    fn forbidden_messages_match_upstream_shape() {
        let u = node("n1");
        let a = attrs("update", "", "nodes", None, Some("n2"));
        assert_eq!(
            forbidden_message(&u, &a, "node 'n1' cannot modify node 'n2'"),
            r#"nodes "n2" is forbidden: User "system:node:n1" cannot update resource "nodes" in API group "" at the cluster scope: node 'n1' cannot modify node 'n2'"#
        );
        let a = attrs("create", "", "services", Some("default"), None);
        assert_eq!(
            forbidden_message(&u, &a, ""),
            r#"services is forbidden: User "system:node:n1" cannot create resource "services" in API group "" in the namespace "default""#
        );
    }

    fn node_obj(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_node_may_only_get_create_update_patch_and_delete_its_own_lease() {
        let u = node("n1");
        let ns = Some(NODE_LEASE_NAMESPACE);
        for verb in ["get", "update", "patch", "delete"] {
            assert!(
                az(
                    &u,
                    &attrs(verb, "coordination.k8s.io", "leases", ns, Some("n1"))
                )
                .is_ok()
            );
            assert_eq!(
                az(
                    &u,
                    &attrs(verb, "coordination.k8s.io", "leases", ns, Some("n2"))
                ),
                Err("can only access node lease with the same name as the requesting node".into())
            );
        }
        assert!(
            az(
                &u,
                &attrs("create", "coordination.k8s.io", "leases", ns, None)
            )
            .is_ok()
        );
        for verb in ["list", "watch", "deletecollection"] {
            assert_eq!(
                az(&u, &attrs(verb, "coordination.k8s.io", "leases", ns, None)),
                Err("can only get, create, update, patch, or delete a node lease".into()),
                "{verb}"
            );
        }
        assert_eq!(
            az(
                &u,
                &attrs(
                    "get",
                    "coordination.k8s.io",
                    "leases",
                    Some("kube-system"),
                    Some("n1")
                )
            ),
            Err(r#"can only access leases in the "kube-node-lease" system namespace"#.into())
        );
        // The name of a create comes from the body.
        assert!(admit_lease(&u, ns, "n1").is_ok());
        assert_eq!(
            admit_lease(&u, ns, "n2"),
            Err("can only access node lease with the same name as the requesting node".into())
        );
        assert!(admit_lease(&UserInfo::new("admin", &[MASTERS_GROUP]), ns, "n2").is_ok());
    }

    #[test]
    fn a_node_may_not_set_restricted_labels_taints_or_pod_cidrs_on_its_own_node() {
        let u = node("n1");
        let plain = node_obj(json!({"metadata": {"name": "n1", "labels": {
            "kubernetes.io/hostname": "n1", "node.kubernetes.io/exclude-from-external-load-balancers": "",
            "example.com/x": "y"}}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}));
        // Registering with kubelet labels and taints is fine.
        assert_eq!(admit_node(&u, &plain, None), Ok(()));
        let with = |labels: serde_json::Value| {
            node_obj(json!({"metadata": {"name": "n1", "labels": labels}}))
        };
        assert_eq!(
            admit_node(&u, &with(json!({"node-role.kubernetes.io/control-plane": "", "node-restriction.kubernetes.io/a": "b", "kubernetes.io/os": "linux"})), None),
            Err(r#"node "n1" is not allowed to set the following labels: node-restriction.kubernetes.io/a, node-role.kubernetes.io/control-plane"#.into())
        );
        let old = with(json!({"a": "1"}));
        assert_eq!(
            admit_node(
                &u,
                &with(json!({"a": "2", "foo.node-restriction.kubernetes.io/x": ""})),
                Some(&old)
            ),
            Err("is not allowed to modify labels: foo.node-restriction.kubernetes.io/x".into())
        );
        // Removing one is a modification too.
        let had_role = with(json!({"node-role.kubernetes.io/worker": ""}));
        assert_eq!(
            admit_node(&u, &with(json!({})), Some(&had_role)),
            Err("is not allowed to modify labels: node-role.kubernetes.io/worker".into())
        );
        assert_eq!(admit_node(&u, &had_role, Some(&had_role)), Ok(()));
        let tainted = node_obj(
            json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            admit_node(&u, &tainted, Some(&with(json!({})))),
            Err(r#"node "n1" is not allowed to modify taints"#.into())
        );
        assert_eq!(
            admit_node(&u, &with(json!({})), Some(&tainted)),
            Err(r#"node "n1" is not allowed to modify taints"#.into())
        );
        let cidrs = node_obj(
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}}),
        );
        assert_eq!(
            admit_node(&u, &cidrs, None),
            Err(r#"node "n1" is not allowed to set podCIDRs"#.into())
        );
        assert_eq!(
            admit_node(&u, &cidrs, Some(&with(json!({})))),
            Err(r#"node "n1" is not allowed to modify podCIDRs"#.into())
        );
        // Keeping what node IPAM assigned is fine.
        assert_eq!(admit_node(&u, &cidrs, Some(&cidrs)), Ok(()));
        let other = node_obj(json!({"metadata": {"name": "n2"}}));
        assert_eq!(
            admit_node(&u, &other, None),
            Err(r#"node "n1" is not allowed to modify node "n2""#.into())
        );
        // The admin is not restricted.
        assert_eq!(
            admit_node(&UserInfo::new("admin", &[MASTERS_GROUP]), &cidrs, None),
            Ok(())
        );
    }

    struct Pods(Vec<Pod>);

    impl NodeGraph for Pods {
        fn pods_on_node(&self, node: &str, namespace: &str) -> Vec<Pod> {
            self.0
                .iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace)
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                })
                .cloned()
                .collect()
        }
    }

    fn graph() -> Pods {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1",
              "volumes": [{"name": "a", "configMap": {"name": "vol"}},
                          {"name": "b", "projected": {"sources": [{"configMap": {"name": "proj"}}]}}],
              "initContainers": [{"name": "i", "envFrom": [{"configMapRef": {"name": "envfrom"}}]}],
              "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "keyref", "key": "k"}}}]}]}
        }))
        .unwrap();
        Pods(vec![pod])
    }

    #[test]
    fn a_node_reads_the_ip_masq_agent_configmap_by_name_only() {
        let g = NoPods;
        let u = &node("n1");
        for verb in ["get", "list", "watch"] {
            assert_eq!(
                authorize(
                    u,
                    &attrs(
                        verb,
                        "",
                        "configmaps",
                        Some("kube-system"),
                        Some("ip-masq-agent")
                    ),
                    &g
                ),
                Ok(()),
                "{verb}"
            );
        }
        for (verb, ns, name) in [
            ("list", "kube-system", None),
            ("update", "kube-system", Some("ip-masq-agent")),
            ("delete", "kube-system", Some("ip-masq-agent")),
            ("get", "default", Some("ip-masq-agent")),
            ("get", "kube-system", Some("other")),
        ] {
            assert!(
                authorize(u, &attrs(verb, "", "configmaps", Some(ns), name), &g).is_err(),
                "{verb} {ns} {name:?}"
            );
        }
    }

    #[test]
    fn a_node_gets_only_the_configmaps_its_pods_reference() {
        let g = graph();
        assert_eq!(
            configmaps_of_pod(&g.0[0]).into_iter().collect::<Vec<_>>(),
            ["envfrom", "keyref", "proj", "vol"]
        );
        let cm = |u: &UserInfo, verb, ns, name| {
            authorize(u, &attrs(verb, "", "configmaps", Some(ns), name), &g)
        };
        for name in ["vol", "proj", "envfrom", "keyref"] {
            assert_eq!(
                cm(&node("n1"), "get", "default", Some(name)),
                Ok(()),
                "{name}"
            );
        }
        assert_eq!(
            cm(&node("n1"), "get", "default", Some("other")),
            Err("no relationship found between node 'n1' and this object".into())
        );
        assert_eq!(
            cm(&node("n2"), "get", "default", Some("vol")),
            Err("no relationship found between node 'n2' and this object".into())
        );
        assert_eq!(
            cm(&node("n1"), "get", "kube-system", Some("vol")),
            Err("no relationship found between node 'n1' and this object".into())
        );
        for verb in ["list", "watch", "update", "delete"] {
            assert_eq!(
                cm(&node("n1"), verb, "default", None),
                Err("can only get individual resources of this type".into())
            );
        }
    }

    #[test]
    fn only_the_admin_may_impersonate_and_the_request_then_runs_as_the_impersonated_user() {
        let admin = UserInfo::new("admin", &[MASTERS_GROUP, AUTHENTICATED_GROUP]);
        let req = ImpersonationRequest {
            user: Some("system:node:n1".into()),
            groups: vec![NODES_GROUP.into()],
            ..Default::default()
        };
        let u = impersonate(&admin, &req).unwrap().unwrap();
        assert_eq!(u.name, "system:node:n1");
        assert_eq!(u.groups, [NODES_GROUP, AUTHENTICATED_GROUP]);
        assert_eq!(u.node_name(), Some("n1"));
        assert!(az(&u, &attrs("update", "", "nodes", None, Some("n2"))).is_err());
        assert_eq!(
            impersonate(&node("n2"), &req),
            Err(ImpersonationError::Forbidden(
                r#"users "system:node:n1" is forbidden: User "system:node:n2" cannot impersonate resource "users" in API group "" at the cluster scope"#.into()
            ))
        );
        // Groups are checked too, one by one.
        let groups_only = ImpersonationRequest {
            groups: vec![MASTERS_GROUP.into()],
            ..Default::default()
        };
        assert!(matches!(
            impersonate(&admin, &groups_only),
            Err(ImpersonationError::WithoutUser(_))
        ));
        let nobody = impersonate(
            &admin,
            &ImpersonationRequest {
                user: Some("jane".into()),
                uid: Some("u1".into()),
                extra: vec![("scopes".into(), "a".into())],
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(nobody.groups, [AUTHENTICATED_GROUP]);
        assert_eq!(nobody.uid.as_deref(), Some("u1"));
        assert_eq!(nobody.extra["scopes"], ["a"]);
        assert!(
            az(
                &nobody,
                &attrs("get", "", "services", Some("default"), None)
            )
            .is_err()
        );
        let sa = impersonate(
            &admin,
            &ImpersonationRequest {
                user: Some("system:serviceaccount:ns1:sa".into()),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                AUTHENTICATED_GROUP
            ]
        );
        assert_eq!(
            impersonate(&admin, &ImpersonationRequest::default()),
            Ok(None)
        );
    }

    #[test]
    fn every_rule_a_rules_review_lists_is_allowed_by_the_authorizer() {
        let g = graph();
        for ns in ["default", NODE_LEASE_NAMESPACE] {
            let u = node("n1");
            let (rules, non_resource, incomplete) = rules(&u, ns, &g);
            assert!(incomplete);
            assert!(!rules.is_empty());
            for r in &rules {
                let names = r.resource_names.clone().unwrap_or_else(|| vec!["x".into()]);
                for verb in &r.verbs {
                    for group in r.api_groups.iter().flatten() {
                        for res in r.resources.iter().flatten() {
                            let (res, sub) = match res.split_once('/') {
                                Some((r, s)) => (r, Some(s)),
                                None => (res.as_str(), None),
                            };
                            for name in &names {
                                let name = (verb != "create").then_some(name.as_str());
                                let a = Attributes {
                                    verb,
                                    group,
                                    resource: res,
                                    subresource: sub,
                                    namespace: Some(ns),
                                    name,
                                    node_name_selector: None,
                                };
                                assert_eq!(authorize(&u, &a, &g), Ok(()), "{a:?}");
                            }
                        }
                    }
                }
            }
            assert!(
                rules.iter().any(|r| r
                    .resources
                    .as_ref()
                    .unwrap()
                    .contains(&"configmaps".to_string()))
                    == (ns == "default")
            );
            assert!(authorize_non_resource(&u, "get", "/apis/apps/v1"));
            assert!(!authorize_non_resource(&u, "get", "/metrics"));
            assert_eq!(non_resource.len(), 1);
        }
        let admin = UserInfo::new("admin", &[MASTERS_GROUP]);
        let (rules, _, incomplete) = rules(&admin, "default", &g);
        assert_eq!(rules[0].verbs, ["*"]);
        assert!(!incomplete);
    }
}
