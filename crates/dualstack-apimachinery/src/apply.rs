//! Server-side apply and field ownership (`metadata.managedFields`), after
//! `sigs.k8s.io/structured-merge-diff` and `k8s.io/apimachinery/pkg/util/managedfields`.
//!
//! Start with [`apply`] (an `application/apply-patch+yaml` request) and
//! [`update_managed_fields`] (every other write: create, update, patch).
//!
//! # Field sets and the FieldsV1 encoding
//!
//! A [`FieldSet`] is a sorted set of [`FieldPath`]s; each path names one node of an object and
//! means "this node is owned". Path elements are encoded in FieldsV1 as:
//!
//! | element | FieldsV1 key | conflict text |
//! |---|---|---|
//! | struct field or map key | `f:<name>` | `.name` |
//! | element of a map-list (`x-kubernetes-list-type: map`) | `k:{"port":80,"protocol":"TCP"}` (key fields sorted by name, compact JSON, omitted keys filled from their defaults) | `[port=80,protocol="TCP"]` |
//! | element of a set (`list-type: set`) | `v:"10.244.0.0/24"` | `[="10.244.0.0/24"]` |
//! | list index (only as a fallback for live elements without their keys) | `i:0` | `[0]` |
//!
//! FieldsV1 is the set written as a tree: each element maps to the object of its children, a
//! leaf is `{}`, and `".": {}` marks that a node with children is itself owned (list elements,
//! maps created by an update). Atomic lists, atomic maps (`mapType=atomic`, e.g. Service
//! `spec.selector`) and atomic structs (`structType=atomic`, e.g. OwnerReference) are leaves
//! (`"f:selector": {}`); they are never descended.
//!
//! # What is owned
//!
//! - Apply: the leaves of the applied configuration, each element of its granular lists, each key
//!   of its granular maps, and struct fields given as `{}` or `null` (upstream's `ToFieldSet`).
//! - Update: every node whose value the write added or changed, including the node of a map or
//!   list that did not exist before (upstream's `Compare`: `Added` ∪ `Modified`).
//! - Never: `apiVersion`, `kind`, `metadata` itself, `metadata.{name, namespace, uid,
//!   resourceVersion, generation, creationTimestamp, selfLink, managedFields}`; `status` for
//!   writes to the main resource of kinds with a status subresource, and `spec` for writes to
//!   `status`.
//!
//! # Managers
//!
//! One `managedFields` entry per (manager, operation, subresource, and apiVersion for
//! `Update`). Conflicts print a manager as `"kubectl"` for Apply and `"kubectl-client-side-apply"
//! using v1` for Update, as upstream. Two upstream behaviours reserved to the field manager
//! named `kubectl` are kept because kubectl's client-side → server-side migration relies on
//! them: conflicts on fields whose live value still equals the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation are forced, and that annotation,
//! when present, is rewritten to the applied configuration. Applying to an object without
//! `managedFields` first credits its fields to an Update manager named `before-first-apply`.
//!
//! Not implemented: capping Update managers at 10 (`ancient-changes`), version conversion of
//! field sets, and upstream's `Apply` no-op detection (the entry time is refreshed when the
//! object changes or the entry is new).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::schema::{self, FieldSchema, ListType, MapType, Shape};
use crate::status::ApiError;

/// The annotation kubectl's client-side apply keeps its last configuration in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Update manager credited with the fields of an object applied to for the first time.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change value (409 `Conflict`).
    #[error("{message}")]
    Conflict {
        /// `Apply failed with N conflict(s): ...`.
        message: String,
        /// (message, field) per conflict, e.g. (`conflict with "kubectl-client-side-apply"
        /// using v1`, `.spec.ports[port=80,protocol="TCP"].targetPort`).
        causes: Vec<(String, String)>,
    },
    /// The applied configuration cannot be applied: not an object, carries `managedFields`,
    /// a map-list element without its keys, duplicate keys (400 `BadRequest`).
    #[error("{0}")]
    Invalid(String),
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Conflict { message, causes } => ApiError::ApplyConflict { message, causes },
            ApplyError::Invalid(message) => ApiError::BadRequest(message),
        }
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq)]
pub enum PathElement {
    /// A struct field or map key (`f:<name>`).
    Field(String),
    /// A map-list element by its key fields, sorted by name (`k:{...}`).
    Key(Vec<(String, Value)>),
    /// A set element by value (`v:<json>`).
    Value(Value),
    /// A list element by index (`i:<n>`).
    Index(usize),
}

impl Eq for PathElement {}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(e: &PathElement) -> u8 {
            match e {
                PathElement::Field(_) => 0,
                PathElement::Key(_) => 1,
                PathElement::Value(_) => 2,
                PathElement::Index(_) => 3,
            }
        }
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b) {
                    let o = an.cmp(bn).then_with(|| compare_values(av, bv));
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PathElement {
    /// The FieldsV1 key, e.g. `f:spec`, `k:{"port":80,"protocol":"TCP"}`.
    pub fn to_fields_v1_key(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let map: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(map))
            }
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a FieldsV1 key.
    pub fn from_fields_v1_key(key: &str) -> Result<PathElement, String> {
        let bad = || format!("invalid FieldsV1 key {key:?}");
        let (prefix, rest) = key.split_once(':').ok_or_else(bad)?;
        match prefix {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) => Ok(key_element(m.into_iter().collect())),
                _ => Err(bad()),
            },
            "v" => serde_json::from_str(rest)
                .map(PathElement::Value)
                .map_err(|_| bad()),
            "i" => rest.parse().map(PathElement::Index).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for PathElement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn key_element(mut fields: Vec<(String, Value)>) -> PathElement {
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    PathElement::Key(fields)
}

/// A path from the object root to one node, shown as upstream does:
/// `.spec.ports[port=80,protocol="TCP"].targetPort`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<PathElement>);

impl FieldPath {
    /// A path of struct fields / map keys, e.g. `FieldPath::fields(&["spec", "selector"])`.
    pub fn fields(names: &[&str]) -> FieldPath {
        FieldPath(
            names
                .iter()
                .map(|n| PathElement::Field((*n).to_string()))
                .collect(),
        )
    }

    fn starts_with(&self, prefix: &FieldPath) -> bool {
        self.0.starts_with(&prefix.0)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|e| write!(f, "{e}"))
    }
}

/// A set of owned nodes (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<FieldPath>);

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Adds a path (the empty path, the object itself, is never owned).
    pub fn insert(&mut self, path: FieldPath) {
        if !path.0.is_empty() {
            self.0.insert(path);
        }
    }

    /// Whether `path` is in the set.
    pub fn contains(&self, path: &FieldPath) -> bool {
        self.0.contains(path)
    }

    /// The paths, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &FieldPath> {
        self.0.iter()
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `self ∪ other`.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// `self ∖ other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// `self ∩ other`.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// The set as a FieldsV1 object.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<PathElement, Node>,
        }
        fn render(node: &Node) -> Value {
            let mut out = Map::new();
            if node.member && !node.children.is_empty() {
                out.insert(".".into(), json!({}));
            }
            for (element, child) in &node.children {
                out.insert(element.to_fields_v1_key(), render(child));
            }
            Value::Object(out)
        }
        let mut root = Node::default();
        for path in &self.0 {
            let mut node = &mut root;
            for element in &path.0 {
                node = node.children.entry(element.clone()).or_default();
            }
            node.member = true;
        }
        render(&root)
    }

    /// Parses a FieldsV1 object.
    pub fn from_fields_v1(fields: &Value) -> Result<FieldSet, String> {
        fn walk(v: &Value, path: &mut Vec<PathElement>, out: &mut FieldSet) -> Result<(), String> {
            let Value::Object(m) = v else {
                return Err(format!("invalid FieldsV1 value {v}"));
            };
            for (key, child) in m {
                if key == "." {
                    out.insert(FieldPath(path.clone()));
                    continue;
                }
                path.push(PathElement::from_fields_v1_key(key)?);
                if child.as_object().is_some_and(Map::is_empty) {
                    out.insert(FieldPath(path.clone()));
                } else {
                    walk(child, path, out)?;
                }
                path.pop();
            }
            Ok(())
        }
        let mut out = FieldSet::new();
        walk(fields, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    fn remove_under(&mut self, prefix: &FieldPath) {
        self.0.retain(|p| !p.starts_with(prefix));
    }
}

/// The field set of an object of (`api_version`, `kind`) as an apply of it would own it
/// (system metadata and, for kinds with a status subresource, `status` left out). Elements of
/// map-lists missing their keys are named by index.
pub fn field_set(obj: &Value, api_version: &str, kind: &str) -> FieldSet {
    let root = Root::new(api_version, kind, None);
    let mut out = FieldSet::new();
    // Lenient walks never fail.
    let _ = collect(obj, root.kind, &mut Vec::new(), &mut out, false);
    root.filter(out)
}

/// Server-side apply of `applied` (manager `manager`, `force` from the query) onto `live`
/// (`None`: the object does not exist and is created from `applied`). Returns the new object
/// with `metadata.managedFields` updated; `now` is the RFC 3339 time of the write.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    kind: &str,
    now: &str,
) -> Result<Value, ApplyError> {
    Apply {
        manager,
        force,
        api_version,
        kind,
        now,
        subresource: None,
    }
    .run(live, applied)
}

/// A server-side apply request, for callers that need a subresource (`status`).
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    /// The `fieldManager`.
    pub manager: &'a str,
    /// The `force` query parameter.
    pub force: bool,
    /// apiVersion of the object.
    pub api_version: &'a str,
    /// Kind of the object.
    pub kind: &'a str,
    /// RFC 3339 time of the write.
    pub now: &'a str,
    /// `Some("status")` for an apply to the status subresource (only `status` is owned; the
    /// caller's status strategy still resets `spec` as for any status write).
    pub subresource: Option<&'a str>,
}

impl Apply<'_> {
    /// Runs the apply; see [`apply`].
    pub fn run(&self, live: Option<&Value>, applied: &Value) -> Result<Value, ApplyError> {
        if !applied.is_object() {
            return Err(ApplyError::Invalid(
                "the applied configuration must be an object".into(),
            ));
        }
        if applied
            .pointer("/metadata/managedFields")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApplyError::Invalid(
                "metadata.managedFields must be nil".into(),
            ));
        }
        let root = Root::new(self.api_version, self.kind, self.subresource);
        let mut config_set = FieldSet::new();
        collect(applied, root.kind, &mut Vec::new(), &mut config_set, true).map_err(|e| {
            ApplyError::Invalid(format!(
                "failed to create typed patch object ({}): {e}",
                gvk_string(self.api_version, self.kind)
            ))
        })?;
        let config_set = root.filter(config_set);

        let live = live.map(without_managed_fields);
        let mut managers = match live {
            Some((_, ref entries)) => Managers::decode(entries),
            None => Managers::default(),
        };
        let live = live.map(|(obj, _)| obj);
        let zero = root.zero_object();
        if let Some(live) = &live
            && managers.entries.is_empty()
        {
            let cmp = root.compare(&zero, live);
            let owned = cmp.added.union(&cmp.modified);
            if !owned.is_empty() {
                let id = ManagerId::update(BEFORE_FIRST_APPLY, self.api_version, None);
                managers.entries.insert(
                    id,
                    Entry {
                        time: Some(self.now.to_string()),
                        set: owned,
                    },
                );
            }
        }

        // An applied `null` replaces the live value and then disappears, as Go decodes it.
        let mut merged = match &live {
            Some(live) => merge(Some(live), Some(applied), root.kind).unwrap_or_else(|| json!({})),
            None => applied.clone(),
        };
        drop_nulls(&mut merged);

        let me = ManagerId {
            manager: self.manager.to_string(),
            operation: Operation::Apply,
            api_version: String::new(),
            subresource: self.subresource.map(str::to_string),
        };
        let previous = managers.entries.remove(&me);
        managers
            .apply_versions
            .insert(me.clone(), self.api_version.to_string());
        if let Some(previous) = &previous {
            // Fields this manager applied before and no longer does, unless someone (including
            // this manager's new configuration) still owns them or something beneath them.
            let kept = managers.union().union(&config_set);
            for path in previous.set.difference(&kept).iter() {
                if !kept.iter().any(|k| k.starts_with(path)) {
                    remove_path(&mut merged, &path.0, root.kind);
                }
            }
        }

        let base = live.clone().unwrap_or_else(|| zero.clone());
        let cmp = root.compare(&base, &merged);
        let changed = cmp.added.union(&cmp.modified);
        let conflicts: BTreeMap<ManagerId, FieldSet> = managers
            .entries
            .iter()
            .map(|(id, e)| (id.clone(), e.set.intersection(&changed)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if !conflicts.is_empty() && !self.force {
            let mut remaining = conflicts.clone();
            if self.manager == "kubectl"
                && let Some(allowed) = live.as_ref().and_then(|l| root.allowed_by_last_applied(l))
            {
                for set in remaining.values_mut() {
                    *set = set.difference(&allowed);
                }
                remaining.retain(|_, s| !s.is_empty());
            }
            // All allowed: upstream retries with force.
            if !remaining.is_empty() {
                return Err(conflict_error(&remaining));
            }
        }
        for (id, entry) in managers.entries.iter_mut() {
            if let Some(taken) = conflicts.get(id) {
                entry.set = entry.set.difference(taken);
            }
            entry.set = entry.set.difference(&cmp.removed);
        }

        let object_changed = live.as_ref() != Some(&merged);
        let time = match &previous {
            Some(p) if !object_changed => p.time.clone(),
            _ => Some(self.now.to_string()),
        };
        managers.entries.insert(
            me,
            Entry {
                time,
                set: config_set,
            },
        );

        if self.manager == "kubectl" {
            sync_last_applied(&mut merged, applied);
        }
        managers.encode_into(&mut merged, self.api_version);
        Ok(merged)
    }
}

/// Updates `new`'s `metadata.managedFields` for a non-apply write (create: `old` is `None`;
/// update; patch) by `manager` at `operation_time`, optionally to a `subresource`.
///
/// Ownership: the manager's `Update` entry gains every field this write added or changed
/// (everything on create); other managers lose fields this write changed or removed (updates
/// never conflict). Managed fields written by the client: `[{}]` clears them; a non-empty list
/// (kubectl's migration writes one with a JSON patch) replaces the old one; absent or `[]`
/// keeps the old entries. Writes to a subresource always keep the old entries.
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation_time: &str,
    subresource: Option<&str>,
) {
    let api_version = type_meta(new, old, "apiVersion");
    let kind = type_meta(new, old, "kind");
    let root = Root::new(&api_version, &kind, subresource);

    let incoming = new
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.shift_remove("managedFields"));
    let old = old.map(without_managed_fields);
    let old_managers = old
        .as_ref()
        .map(|(_, entries)| Managers::decode(entries))
        .unwrap_or_default();
    let mut managers = match incoming {
        _ if subresource.is_some() => old_managers,
        Some(Value::Array(entries)) if is_reset(&entries) => Managers::default(),
        Some(Value::Array(entries)) => {
            let decoded = Managers::decode(&entries);
            if decoded.entries.is_empty() {
                old_managers
            } else {
                decoded
            }
        }
        _ => old_managers,
    };

    let zero = root.zero_object();
    let base = old.map(|(obj, _)| obj).unwrap_or(zero);
    let cmp = root.compare(&base, new);
    let changed = cmp.added.union(&cmp.modified);
    let me = ManagerId::update(manager, &api_version, subresource);
    for entry in managers.entries.values_mut() {
        entry.set = entry.set.difference(&changed).difference(&cmp.removed);
    }
    if !changed.is_empty() {
        let mine = managers
            .entries
            .remove(&me)
            .map(|e| e.set)
            .unwrap_or_default();
        managers.entries.insert(
            me,
            Entry {
                time: Some(operation_time.to_string()),
                set: mine.union(&changed),
            },
        );
    }
    managers.encode_into(new, &api_version);
}

fn type_meta(new: &Value, old: Option<&Value>, field: &str) -> String {
    new.get(field)
        .or_else(|| old.and_then(|o| o.get(field)))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn gvk_string(api_version: &str, kind: &str) -> String {
    match api_version.split_once('/') {
        Some((group, version)) => format!("{group}/{version}, Kind={kind}"),
        None => format!("/{api_version}, Kind={kind}"),
    }
}

/// `[{}]` (every entry empty, zero values allowed) means "clear managedFields".
fn is_reset(entries: &[Value]) -> bool {
    let zero = |v: &Value| match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.as_object().is_some_and(|m| m.values().all(zero)))
}

/// The object without `metadata.managedFields`, and those entries.
fn without_managed_fields(obj: &Value) -> (Value, Vec<Value>) {
    let mut obj = obj.clone();
    let entries = match obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.shift_remove("managedFields"))
    {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    (obj, entries)
}

// ---------------------------------------------------------------------------------------------
// Managers

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Upstream's manager identifier: Apply entries are one per manager whatever the apiVersion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ManagerId {
    manager: String,
    operation: Operation,
    /// Empty for Apply.
    api_version: String,
    subresource: Option<String>,
}

impl ManagerId {
    fn update(manager: &str, api_version: &str, subresource: Option<&str>) -> ManagerId {
        ManagerId {
            manager: manager.to_string(),
            operation: Operation::Update,
            api_version: api_version.to_string(),
            subresource: subresource.map(str::to_string),
        }
    }

    /// How conflicts name the manager.
    fn describe(&self) -> String {
        match self.operation {
            Operation::Apply => format!("{:?}", self.manager),
            Operation::Update => format!("{:?} using {}", self.manager, self.api_version),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    time: Option<String>,
    set: FieldSet,
}

#[derive(Debug, Clone, Default)]
struct Managers {
    entries: BTreeMap<ManagerId, Entry>,
    /// apiVersion recorded for Apply entries.
    apply_versions: BTreeMap<ManagerId, String>,
}

impl Managers {
    /// Entries that cannot be read are skipped, as upstream resets undecodable managed fields.
    fn decode(entries: &[Value]) -> Managers {
        let mut out = Managers::default();
        for e in entries {
            let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            let (Some(manager), Some(operation)) = (text("manager"), text("operation")) else {
                continue;
            };
            let operation = match operation.as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => continue,
            };
            let version = text("apiVersion").unwrap_or_default();
            let set = match e.get("fieldsV1") {
                Some(f) => match FieldSet::from_fields_v1(f) {
                    Ok(set) => set,
                    Err(_) => continue,
                },
                None => FieldSet::new(),
            };
            let id = ManagerId {
                manager,
                operation,
                api_version: if operation == Operation::Apply {
                    String::new()
                } else {
                    version.clone()
                },
                subresource: text("subresource").filter(|s| !s.is_empty()),
            };
            if operation == Operation::Apply {
                out.apply_versions.insert(id.clone(), version);
            }
            out.entries.insert(
                id,
                Entry {
                    time: text("time"),
                    set,
                },
            );
        }
        out
    }

    fn union(&self) -> FieldSet {
        self.entries
            .values()
            .fold(FieldSet::new(), |acc, e| acc.union(&e.set))
    }

    /// Writes the entries (empty ones dropped) sorted as upstream: operation, time, manager,
    /// apiVersion, subresource.
    fn encode_into(&self, obj: &mut Value, api_version: &str) {
        let mut entries: Vec<(&ManagerId, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.set.is_empty())
            .collect();
        entries.sort_by(|(a, ea), (b, eb)| {
            a.operation
                .cmp(&b.operation)
                .then_with(|| seconds(ea.time.as_deref()).cmp(&seconds(eb.time.as_deref())))
                .then_with(|| a.manager.cmp(&b.manager))
                .then_with(|| a.api_version.cmp(&b.api_version))
                .then_with(|| a.subresource.cmp(&b.subresource))
        });
        let encoded: Vec<Value> = entries
            .into_iter()
            .map(|(id, e)| {
                let version = match id.operation {
                    Operation::Update => id.api_version.clone(),
                    Operation::Apply => self
                        .apply_versions
                        .get(id)
                        .cloned()
                        .unwrap_or_else(|| api_version.to_string()),
                };
                let mut m = Map::new();
                m.insert("manager".into(), json!(id.manager));
                m.insert("operation".into(), json!(id.operation.as_str()));
                m.insert("apiVersion".into(), json!(version));
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if let Some(s) = &id.subresource {
                    m.insert("subresource".into(), json!(s));
                }
                Value::Object(m)
            })
            .collect();
        let Some(meta) = obj
            .as_object_mut()
            .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        else {
            return;
        };
        let Some(meta) = meta.as_object_mut() else {
            return;
        };
        if encoded.is_empty() {
            meta.shift_remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

/// Seconds-resolution sort key of an RFC 3339 time (upstream compares `Time.Unix()`).
fn seconds(time: Option<&str>) -> String {
    time.map(|t| t.get(..19).unwrap_or(t).to_string())
        .unwrap_or_default()
}

fn conflict_error(conflicts: &BTreeMap<ManagerId, FieldSet>) -> ApplyError {
    let all: Vec<(&ManagerId, &FieldPath)> = conflicts
        .iter()
        .flat_map(|(id, set)| set.iter().map(move |p| (id, p)))
        .collect();
    let causes = all
        .iter()
        .map(|(id, p)| (format!("conflict with {}", id.describe()), p.to_string()))
        .collect();
    let message = if let [(id, path)] = all.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {path}",
            id.describe()
        )
    } else {
        // Grouped by the printed manager name, sorted, as upstream.
        let mut by_manager: BTreeMap<String, Vec<&FieldPath>> = BTreeMap::new();
        for (id, p) in &all {
            by_manager.entry(id.describe()).or_default().push(p);
        }
        let mut lines = Vec::new();
        for (manager, paths) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            all.len(),
            lines.join("\n")
        )
    };
    ApplyError::Conflict { message, causes }
}

// ---------------------------------------------------------------------------------------------
// kubectl's last-applied annotation

impl Root {
    /// Fields of the last-applied annotation whose live value still matches it (upstream's
    /// `lastAppliedManager`): conflicts on them are forced for the `kubectl` manager.
    fn allowed_by_last_applied(&self, live: &Value) -> Option<FieldSet> {
        let text = live
            .pointer("/metadata/annotations")?
            .get(LAST_APPLIED_ANNOTATION)?
            .as_str()?;
        let last: Value = serde_json::from_str(text).ok()?;
        if last.get("apiVersion") != live.get("apiVersion") {
            return None;
        }
        let mut set = FieldSet::new();
        collect(&last, self.kind, &mut Vec::new(), &mut set, false).ok()?;
        let cmp = self.compare(&last, live);
        Some(
            self.filter(set)
                .difference(&cmp.modified)
                .difference(&cmp.added)
                .difference(&cmp.removed),
        )
    }
}

/// Upstream's `lastAppliedUpdater`: when the object carries the annotation, it is rewritten to
/// the applied configuration (without the annotation), keys sorted like Go's encoder.
fn sync_last_applied(merged: &mut Value, applied: &Value) {
    let has = merged
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has {
        return;
    }
    let mut config = applied.clone();
    if let Some(a) = config
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.shift_remove(LAST_APPLIED_ANNOTATION);
    }
    let text = sorted(&config).to_string();
    if let Some(a) = merged
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        a.insert(LAST_APPLIED_ANNOTATION.into(), Value::String(text));
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(l) => Value::Array(l.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Typed walks

/// How a node is merged and owned.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An object with declared fields; its own node is owned only when empty or null.
    Struct(Option<&'static str>),
    /// A granular map with arbitrary keys; every key is owned.
    Map(Option<&'static str>),
    /// A set of scalars.
    Set,
    /// An associative list keyed by `keys`.
    Assoc {
        keys: &'static [&'static str],
        element: Option<&'static str>,
    },
    /// Owned and replaced as a whole.
    Leaf,
}

fn deduce(sample: Option<&Value>) -> Kind {
    if sample.is_some_and(Value::is_object) {
        Kind::Struct(None)
    } else {
        Kind::Leaf
    }
}

fn field_kind(field: FieldSchema, sample: Option<&Value>) -> Kind {
    match field.shape() {
        Some(Shape::Struct(d)) if schema::is_atomic_struct(d) => Kind::Leaf,
        Some(Shape::Struct(d)) => Kind::Struct(Some(d)),
        Some(Shape::Map(v)) if field.map_type() == MapType::Granular => Kind::Map(v),
        Some(Shape::List(element)) => match field.list_type() {
            ListType::Atomic => Kind::Leaf,
            ListType::Set => Kind::Set,
            ListType::Map { keys } => Kind::Assoc { keys, element },
        },
        Some(Shape::Map(_) | Shape::Opaque) => Kind::Leaf,
        None => deduce(sample),
    }
}

fn element_kind(definition: Option<&'static str>, sample: Option<&Value>) -> Kind {
    match definition {
        Some(d) if schema::is_atomic_struct(d) => Kind::Leaf,
        Some(d) => Kind::Struct(Some(d)),
        None => deduce(sample),
    }
}

impl Kind {
    /// The kind of the child named `key` of a struct or map.
    fn child(self, key: &str, sample: Option<&Value>) -> Kind {
        match self {
            Kind::Struct(def) => field_kind(schema::field(def, key), sample),
            Kind::Map(value) => element_kind(value, sample),
            _ => Kind::Leaf,
        }
    }

    /// The kind of list elements.
    fn element(self, sample: Option<&Value>) -> Kind {
        match self {
            Kind::Assoc { element, .. } => element_kind(element, sample),
            _ => Kind::Leaf,
        }
    }

    /// The path element of a list item: its keys (defaults filled in) or its value.
    fn item_element(self, item: &Value) -> Option<PathElement> {
        match self {
            Kind::Set => Some(PathElement::Value(item.clone())),
            Kind::Assoc { keys, element } => {
                let m = item.as_object()?;
                let mut fields = Vec::with_capacity(keys.len());
                for k in keys {
                    let v = m
                        .get(*k)
                        .filter(|v| !v.is_null())
                        .cloned()
                        .or_else(|| schema::key_default(element, k))?;
                    fields.push(((*k).to_string(), v));
                }
                Some(key_element(fields))
            }
            _ => None,
        }
    }

    fn is_list(self) -> bool {
        matches!(self, Kind::Set | Kind::Assoc { .. })
    }

    fn is_object(self) -> bool {
        matches!(self, Kind::Struct(_) | Kind::Map(_))
    }
}

/// What a kind's root looks like and which fields are never owned.
struct Root {
    kind: Kind,
    definition: Option<&'static str>,
    /// Removed with their subtrees (reset fields: `status` or `spec`).
    ignored_trees: Vec<FieldPath>,
}

/// Removed exactly (upstream's `stripMetaManager`).
const STRIPPED: &[&[&str]] = &[
    &["apiVersion"],
    &["kind"],
    &["metadata"],
    &["metadata", "name"],
    &["metadata", "namespace"],
    &["metadata", "creationTimestamp"],
    &["metadata", "selfLink"],
    &["metadata", "uid"],
    &["metadata", "clusterName"],
    &["metadata", "generation"],
    &["metadata", "managedFields"],
    &["metadata", "resourceVersion"],
];

impl Root {
    fn new(api_version: &str, kind: &str, subresource: Option<&str>) -> Root {
        let definition = schema::root(api_version, kind);
        let mut ignored_trees = Vec::new();
        if schema::has_status_subresource(api_version, kind) {
            match subresource {
                None => ignored_trees.push(FieldPath::fields(&["status"])),
                Some("status") => ignored_trees.push(FieldPath::fields(&["spec"])),
                Some(_) => {}
            }
        }
        Root {
            kind: Kind::Struct(definition),
            definition,
            ignored_trees,
        }
    }

    fn filter(&self, mut set: FieldSet) -> FieldSet {
        for path in STRIPPED {
            set.0.remove(&FieldPath::fields(path));
        }
        for tree in &self.ignored_trees {
            set.remove_under(tree);
        }
        set
    }

    /// The object a Go client would compare a create against: struct-typed top-level fields
    /// (`metadata`, `spec`, `status`) exist and are empty.
    fn zero_object(&self) -> Value {
        let mut m = Map::new();
        for name in ["metadata", "spec", "status"] {
            if matches!(
                schema::field(self.definition, name).shape(),
                Some(Shape::Struct(_))
            ) {
                m.insert(name.into(), json!({}));
            }
        }
        Value::Object(m)
    }

    /// Upstream compares typed Go objects, whose non-pointer struct fields always exist.
    fn with_zero_structs(&self, obj: &Value) -> Value {
        let mut obj = obj.clone();
        if let (Value::Object(m), Value::Object(zero)) = (&mut obj, self.zero_object()) {
            for (k, v) in zero {
                m.entry(k).or_insert(v);
            }
        }
        obj
    }

    fn compare(&self, lhs: &Value, rhs: &Value) -> Comparison {
        let mut cmp = Comparison::default();
        let (lhs, rhs) = (self.with_zero_structs(lhs), self.with_zero_structs(rhs));
        compare(Some(&lhs), Some(&rhs), self.kind, &mut Vec::new(), &mut cmp);
        Comparison {
            added: self.filter(cmp.added),
            modified: self.filter(cmp.modified),
            removed: self.filter(cmp.removed),
        }
    }
}

/// Walks an applied configuration (`strict`: map-list elements must carry their keys and be
/// unique) or a live object, inserting owned paths.
fn collect(
    v: &Value,
    kind: Kind,
    path: &mut Vec<PathElement>,
    out: &mut FieldSet,
    strict: bool,
) -> Result<(), String> {
    match (kind, v) {
        (Kind::Struct(_), Value::Object(m)) => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                collect(child, kind.child(k, Some(child)), path, out, strict)?;
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    out.insert(FieldPath(path.clone()));
                }
                path.pop();
            }
        }
        (Kind::Map(_), Value::Object(m)) => {
            for (k, child) in m {
                path.push(PathElement::Field(k.clone()));
                collect(child, kind.child(k, Some(child)), path, out, strict)?;
                out.insert(FieldPath(path.clone()));
                path.pop();
            }
        }
        (Kind::Set | Kind::Assoc { .. }, Value::Array(items)) => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let element = match (kind.item_element(item), kind) {
                    (Some(e), _) => e,
                    (None, Kind::Assoc { keys, .. }) if strict => {
                        let missing = keys
                            .iter()
                            .find(|k| item.get(**k).is_none_or(Value::is_null))
                            .unwrap_or(&"");
                        return Err(format!(
                            "{}: element {i}: associative list with keys has an element that omits key field {missing:?} (and doesn't have default value)",
                            FieldPath(path.clone())
                        ));
                    }
                    (None, _) => PathElement::Index(i),
                };
                if strict && !seen.insert(element.clone()) {
                    return Err(format!(
                        "{}: duplicate entries for key {element}",
                        FieldPath(path.clone())
                    ));
                }
                path.push(element);
                collect(item, kind.element(Some(item)), path, out, strict)?;
                out.insert(FieldPath(path.clone()));
                path.pop();
            }
        }
        _ => out.insert(FieldPath(path.clone())),
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

/// Upstream's `Compare`: leaves and atomic nodes by value; the node of a struct, map, list or
/// element that exists on one side only is itself added or removed.
fn compare(
    l: Option<&Value>,
    r: Option<&Value>,
    kind: Kind,
    path: &mut Vec<PathElement>,
    cmp: &mut Comparison,
) {
    let leaf = |cmp: &mut Comparison, path: &[PathElement]| match (l, r) {
        (None, Some(_)) => cmp.added.insert(FieldPath(path.to_vec())),
        (Some(_), None) => cmp.removed.insert(FieldPath(path.to_vec())),
        (Some(a), Some(b)) if a != b => cmp.modified.insert(FieldPath(path.to_vec())),
        _ => {}
    };
    let fits = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(v) => (kind.is_object() && v.is_object()) || (kind.is_list() && v.is_array()),
    };
    if matches!(kind, Kind::Leaf) || !fits(l) || !fits(r) {
        leaf(cmp, path);
        return;
    }
    let empty = |v: Option<&Value>| match v {
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => true,
    };
    if empty(l) && empty(r) {
        leaf(cmp, path);
        return;
    }
    if kind.is_object() {
        let lm = l.and_then(Value::as_object);
        let rm = r.and_then(Value::as_object);
        let mut keys: Vec<&String> = lm.map(|m| m.keys().collect()).unwrap_or_default();
        for k in rm.into_iter().flat_map(|m| m.keys()) {
            if !lm.is_some_and(|m| m.contains_key(k)) {
                keys.push(k);
            }
        }
        for k in keys {
            let (lc, rc) = (lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)));
            path.push(PathElement::Field(k.clone()));
            compare(lc, rc, kind.child(k, rc.or(lc)), path, cmp);
            path.pop();
        }
    } else {
        let (li, ri) = (index_items(l, kind), index_items(r, kind));
        let mut all: Vec<&PathElement> = Vec::new();
        for (e, _) in li.iter().chain(ri.iter()) {
            if !all.contains(&e) {
                all.push(e);
            }
        }
        for e in all {
            let ls: Vec<&Value> = li.iter().filter(|(x, _)| x == e).map(|(_, v)| *v).collect();
            let rs: Vec<&Value> = ri.iter().filter(|(x, _)| x == e).map(|(_, v)| *v).collect();
            path.push(e.clone());
            match (ls.len(), rs.len()) {
                (0..=1, 0..=1) => {
                    let (lc, rc) = (ls.first().copied(), rs.first().copied());
                    compare(lc, rc, kind.element(rc.or(lc)), path, cmp);
                }
                (2.., 2..) => {
                    if ls != rs {
                        cmp.modified.insert(FieldPath(path.clone()));
                    }
                }
                (2.., _) => {
                    if let Some(rc) = rs.first() {
                        compare(None, Some(rc), kind.element(Some(rc)), path, cmp);
                    }
                    cmp.removed.insert(FieldPath(path.clone()));
                }
                (_, _) => {
                    if let Some(lc) = ls.first() {
                        compare(Some(lc), None, kind.element(Some(lc)), path, cmp);
                    }
                    cmp.added.insert(FieldPath(path.clone()));
                }
            }
            path.pop();
        }
    }
    match (l, r) {
        (None, Some(_)) => cmp.added.insert(FieldPath(path.clone())),
        (Some(_), None) => cmp.removed.insert(FieldPath(path.clone())),
        _ => {}
    }
}

/// The elements of a list with their path elements (index when the keys are missing).
fn index_items(v: Option<&Value>, kind: Kind) -> Vec<(PathElement, &Value)> {
    let items = v
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            (
                kind.item_element(item).unwrap_or(PathElement::Index(i)),
                item,
            )
        })
        .collect()
}

/// Upstream's apply `Merge`: the applied value wins for leaves and atomic nodes; structs and
/// maps merge key by key (live keys first); lists merge by element key in upstream's order.
fn merge(l: Option<&Value>, r: Option<&Value>, kind: Kind) -> Option<Value> {
    let pick = || r.or(l).cloned();
    match (kind, l, r) {
        (Kind::Struct(_) | Kind::Map(_), Some(Value::Object(lm)), Some(Value::Object(rm))) => {
            let mut out = Map::new();
            for (k, lv) in lm {
                let rv = rm.get(k);
                if let Some(v) = merge(Some(lv), rv, kind.child(k, rv.or(Some(lv)))) {
                    out.insert(k.clone(), v);
                }
            }
            for (k, rv) in rm {
                if !lm.contains_key(k) {
                    out.insert(k.clone(), rv.clone());
                }
            }
            Some(Value::Object(out))
        }
        (Kind::Set | Kind::Assoc { .. }, Some(Value::Array(la)), Some(Value::Array(ra))) => {
            Some(Value::Array(merge_lists(la, ra, kind)))
        }
        _ => pick(),
    }
}

/// Port of upstream's `mergingWalker.visitListItems` ordering: live order, with shared
/// elements re-ordered as the applied list orders them and new elements placed after the
/// applied element before them.
fn merge_lists(la: &[Value], ra: &[Value], kind: Kind) -> Vec<Value> {
    let element = |i: usize, v: &Value| kind.item_element(v).unwrap_or(PathElement::Index(i));
    let lhs: Vec<(PathElement, &Value)> = la
        .iter()
        .enumerate()
        .map(|(i, v)| (element(i, v), v))
        .collect();
    let rhs: Vec<(PathElement, &Value)> = ra
        .iter()
        .enumerate()
        .map(|(i, v)| (element(i, v), v))
        .collect();
    let in_lhs = |e: &PathElement| lhs.iter().find(|(x, _)| x == e).map(|(_, v)| *v);
    let in_rhs = |e: &PathElement| rhs.iter().find(|(x, _)| x == e).map(|(_, v)| *v);
    let mut shared = rhs.iter().map(|(e, _)| e).filter(|e| in_lhs(e).is_some());
    let mut next_shared = shared.next();
    let mut merged_rhs: Vec<&PathElement> = Vec::new();
    let mut out = Vec::with_capacity(la.len().max(ra.len()));
    let merge_item = |e: &PathElement, lc: Option<&Value>, rc: Option<&Value>| {
        merge(lc, rc, kind.element(rc.or(lc))).map(|v| (e.clone(), v))
    };
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let e = &lhs[li].0;
            if *e == rhs[ri].0 {
                merged_rhs.push(e);
                out.extend(merge_item(e, in_lhs(e), in_rhs(e)));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if in_rhs(e).is_some() && next_shared.is_some_and(|n| n != e) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            let (e, lc) = &lhs[li];
            if in_rhs(e).is_none() {
                out.extend(merge_item(e, Some(lc), None));
                li += 1;
                continue;
            } else if merged_rhs.contains(&e) {
                li += 1;
            }
        }
        if ri < rhs.len() {
            let e = &rhs[ri].0;
            merged_rhs.push(e);
            out.extend(merge_item(e, in_lhs(e), in_rhs(e)));
            ri += 1;
            if next_shared == Some(e) {
                next_shared = shared.next();
            }
        }
    }
    out.into_iter().map(|(_, v)| v).collect()
}

/// Removes the node at `path` from `v`. Maps and lists emptied by the removal are dropped, as
/// Go's `omitempty` would; structs stay.
fn remove_path(v: &mut Value, path: &[PathElement], kind: Kind) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match (first, v) {
        (PathElement::Field(name), Value::Object(m)) => {
            if rest.is_empty() {
                return m.shift_remove(name).is_some();
            }
            let Some(child) = m.get_mut(name) else {
                return false;
            };
            let child_kind = kind.child(name, Some(child));
            let removed = remove_path(child, rest, child_kind);
            if removed && emptied(child, child_kind) {
                m.shift_remove(name);
            }
            removed
        }
        (element, Value::Array(items)) => {
            let position = items
                .iter()
                .enumerate()
                .position(|(i, item)| match element {
                    PathElement::Index(n) => i == *n,
                    _ => kind.item_element(item).as_ref() == Some(element),
                });
            let Some(i) = position else { return false };
            if rest.is_empty() {
                items.remove(i);
                return true;
            }
            let child_kind = kind.element(Some(&items[i]));
            remove_path(&mut items[i], rest, child_kind)
        }
        _ => false,
    }
}

fn emptied(v: &Value, kind: Kind) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty() && matches!(kind, Kind::Map(_)),
        _ => false,
    }
}

/// Drops `null` map values recursively (Go decodes them to zero values, which are omitted).
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// A total order on JSON values for sorting path elements (numbers numerically).
fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Number(_) => 1,
            Value::String(_) => 2,
            Value::Bool(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or_default()
            .total_cmp(&y.as_f64().unwrap_or_default()),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare_values(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut s = String::new();
            let mut t = String::new();
            let _ = write!(s, "{}", sorted(&Value::Object(x.clone())));
            let _ = write!(t, "{}", sorted(&Value::Object(y.clone())));
            s.cmp(&t)
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-10T10:00:00Z";
    const T2: &str = "2026-01-10T10:05:00Z";
    const T3: &str = "2026-01-10T10:10:00Z";

    fn service(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn apply_svc(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, ApplyError> {
        apply(live, applied, manager, force, "v1", "Service", now)
    }

    fn entries(obj: &Value) -> Vec<Value> {
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["manager"] == manager))
            .unwrap_or_else(|| panic!("no entry for {manager} in {obj}"))
    }

    fn owns(obj: &Value, manager: &str, path: &str) -> bool {
        let Some(list) = obj["metadata"]["managedFields"].as_array() else {
            return false;
        };
        list.iter().filter(|e| e["manager"] == manager).any(|e| {
            FieldSet::from_fields_v1(&e["fieldsV1"])
                .unwrap()
                .iter()
                .any(|p| p.to_string() == path)
        })
    }

    fn conflict(err: ApplyError) -> (String, Vec<(String, String)>) {
        match err {
            ApplyError::Conflict { message, causes } => (message, causes),
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    /// A Service as `kubectl apply` (client-side) creates it: POST by
    /// `kubectl-client-side-apply` after defaulting.
    fn csa_service(annotation: Option<&str>) -> Value {
        let mut svc = service(json!({
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9376}],
            "selector": {"app": "web"},
            "sessionAffinity": "None",
            "type": "ClusterIP"
        }));
        if let Some(a) = annotation {
            svc["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: a});
        }
        update_managed_fields(None, &mut svc, "kubectl-client-side-apply", T1, None);
        svc
    }

    #[test]
    fn create_via_apply_records_a_kubectl_apply_entry() {
        let applied = service(
            json!({"ports": [{"port": 80, "targetPort": 9376}], "selector": {"app": "web"}}),
        );
        let mut applied = applied;
        applied["metadata"]["labels"] = json!({"app": "web"});
        let out = apply_svc(None, &applied, "kubectl", false, T1).unwrap();
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9376}])
        );
        assert_eq!(
            entries(&out),
            vec![json!({
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:port": {}, "f:targetPort": {}}},
                        "f:selector": {}
                    }
                }
            })]
        );
    }

    #[test]
    fn a_second_apply_omitting_fields_removes_them() {
        let mut first = service(json!({
            "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP", "name": "https"}],
            "selector": {"app": "web"},
            "externalIPs": ["192.0.2.1", "2001:db8::1"]
        }));
        first["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        let live = apply_svc(None, &first, "kubectl", false, T1).unwrap();

        let mut second = service(
            json!({"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}),
        );
        second["metadata"]["labels"] = json!({"app": "web"});
        let out = apply_svc(Some(&live), &second, "kubectl", false, T2).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP"}])
        );
        assert!(out["spec"].get("externalIPs").is_none());
        assert_eq!(entry(&out, "kubectl")["time"], T2);
        assert!(!owns(&out, "kubectl", ".metadata.labels.tier"));

        // Dropping the last label removes the now empty map too.
        second["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("labels");
        let out = apply_svc(Some(&out), &second, "kubectl", false, T3).unwrap();
        assert!(out["metadata"].get("labels").is_none());
    }

    #[test]
    fn an_update_by_another_manager_takes_the_field_and_a_reapply_conflicts() {
        let applied = service(
            json!({"ports": [{"port": 80, "targetPort": 9376}], "selector": {"app": "web"}}),
        );
        let live = apply_svc(None, &applied, "kubectl", false, T1).unwrap();

        let mut updated = live.clone();
        updated["spec"]["ports"][0]["targetPort"] = json!(8080);
        update_managed_fields(Some(&live), &mut updated, "kube-controller", T2, None);
        let path = ".spec.ports[port=80,protocol=\"TCP\"].targetPort";
        assert!(owns(&updated, "kube-controller", path));
        assert!(!owns(&updated, "kubectl", path));
        assert_eq!(entry(&updated, "kube-controller")["operation"], "Update");

        let err = apply_svc(Some(&updated), &applied, "kubectl", false, T3).unwrap_err();
        let (message, causes) = conflict(err.clone());
        assert_eq!(
            message,
            format!(
                "Apply failed with 1 conflict: conflict with \"kube-controller\" using v1: {path}"
            )
        );
        assert_eq!(
            causes,
            vec![(
                "conflict with \"kube-controller\" using v1".to_string(),
                path.to_string()
            )]
        );
        let status = ApiError::from(err).to_status();
        assert_eq!(status.code, Some(409));
        assert_eq!(status.reason.as_deref(), Some("Conflict"));
        let cause = &status.details.unwrap().causes.unwrap()[0];
        assert_eq!(cause.reason.as_deref(), Some("FieldManagerConflict"));
        assert_eq!(cause.field.as_deref(), Some(path));
    }

    #[test]
    fn force_moves_ownership_to_the_applier() {
        let applied = service(
            json!({"ports": [{"port": 80, "targetPort": 9376}], "selector": {"app": "web"}}),
        );
        let live = apply_svc(None, &applied, "kubectl", false, T1).unwrap();
        let mut updated = live.clone();
        updated["spec"]["ports"][0]["targetPort"] = json!(8080);
        update_managed_fields(Some(&live), &mut updated, "kube-controller", T2, None);

        let out = apply_svc(Some(&updated), &applied, "kubectl", true, T3).unwrap();
        assert_eq!(out["spec"]["ports"][0]["targetPort"], 9376);
        assert!(owns(
            &out,
            "kubectl",
            ".spec.ports[port=80,protocol=\"TCP\"].targetPort"
        ));
        // The controller owned nothing else, so its entry is gone.
        assert!(
            entries(&out)
                .iter()
                .all(|e| e["manager"] != "kube-controller")
        );
    }

    #[test]
    fn appliers_sharing_a_value_do_not_conflict_and_the_value_stays_when_one_drops_it() {
        let mut a = service(json!({"selector": {"app": "web"}}));
        a["metadata"]["labels"] = json!({"team": "net"});
        let live = apply_svc(None, &a, "alice", false, T1).unwrap();
        let mut b = service(json!({}));
        b["metadata"]["labels"] = json!({"team": "net", "owner": "bob"});
        let live = apply_svc(Some(&live), &b, "bob", false, T2).unwrap();
        assert!(owns(&live, "alice", ".metadata.labels.team"));
        assert!(owns(&live, "bob", ".metadata.labels.team"));

        let a2 = service(json!({"selector": {"app": "web"}}));
        let out = apply_svc(Some(&live), &a2, "alice", false, T3).unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"team": "net", "owner": "bob"})
        );
        assert!(!owns(&out, "alice", ".metadata.labels.team"));

        // A different value for a field the other applier owns conflicts, naming it without
        // "using v1" since it is an Apply manager.
        let mut b2 = service(json!({"selector": {"app": "api"}}));
        b2["metadata"]["labels"] = json!({"team": "net", "owner": "bob"});
        let (message, _) = conflict(apply_svc(Some(&out), &b2, "bob", false, T3).unwrap_err());
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"alice\": .spec.selector"
        );
    }

    #[test]
    fn client_side_apply_update_entry_conflicts_with_server_side_apply_as_in_the_compat_doc() {
        let live = csa_service(None);
        assert_eq!(
            entry(&live, "kubectl-client-side-apply")["fieldsV1"],
            json!({
                "f:spec": {
                    "f:ports": {
                        ".": {},
                        "k:{\"port\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}
                        }
                    },
                    "f:selector": {},
                    "f:sessionAffinity": {},
                    "f:type": {}
                }
            })
        );
        let applied = service(
            json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090}], "selector": {"app": "web"}}),
        );
        let (message, causes) =
            conflict(apply_svc(Some(&live), &applied, "kubectl", false, T2).unwrap_err());
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .spec.ports[port=80,protocol=\"TCP\"].targetPort"
        );
        assert_eq!(
            causes,
            vec![(
                "conflict with \"kubectl-client-side-apply\" using v1".to_string(),
                ".spec.ports[port=80,protocol=\"TCP\"].targetPort".to_string()
            )]
        );
    }

    #[test]
    fn several_conflicts_are_listed_per_manager() {
        let live = csa_service(None);
        let applied = service(
            json!({"ports": [{"port": 80, "targetPort": 9090}], "selector": {"app": "api"}}),
        );
        let (message, causes) =
            conflict(apply_svc(Some(&live), &applied, "kubectl", false, T2).unwrap_err());
        assert_eq!(
            message,
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using v1:\n\
             - .spec.ports[port=80,protocol=\"TCP\"].targetPort\n\
             - .spec.selector"
        );
        assert_eq!(causes.len(), 2);
        assert_eq!(causes[1].1, ".spec.selector");
    }

    #[test]
    fn kubectl_upgrading_from_client_side_apply_is_forced_where_last_applied_matches_live() {
        let last = r#"{"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"name":"web","namespace":"default"},"spec":{"ports":[{"name":"http","port":80,"targetPort":9376}],"selector":{"app":"web"}}}"#;
        let live = csa_service(Some(last));
        let applied = service(
            json!({"ports": [{"name": "http", "port": 80, "targetPort": 9090}], "selector": {"app": "web"}}),
        );

        // Another field manager gets the conflict...
        let (message, _) =
            conflict(apply_svc(Some(&live), &applied, "my-applier", false, T2).unwrap_err());
        assert!(message.contains("targetPort"), "{message}");

        // ...kubectl does not: the field still has its last-applied value.
        let out = apply_svc(Some(&live), &applied, "kubectl", false, T2).unwrap();
        assert_eq!(out["spec"]["ports"][0]["targetPort"], 9090);
        let path = ".spec.ports[port=80,protocol=\"TCP\"].targetPort";
        assert!(owns(&out, "kubectl", path));
        assert!(!owns(&out, "kubectl-client-side-apply", path));
        assert!(owns(&out, "kubectl-client-side-apply", ".spec.type"));
        // The annotation follows the applied configuration.
        let synced = out["metadata"]["annotations"][LAST_APPLIED_ANNOTATION]
            .as_str()
            .unwrap();
        assert_eq!(
            synced,
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"ports":[{"name":"http","port":80,"targetPort":9090}],"selector":{"app":"web"}}}"#
        );
    }

    #[test]
    fn apply_to_an_object_without_managed_fields_credits_before_first_apply() {
        let live = service(
            json!({"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "type": "ClusterIP"}),
        );
        let applied = service(json!({"ports": [{"port": 80, "targetPort": 8080}]}));
        let (message, _) =
            conflict(apply_svc(Some(&live), &applied, "kubectl", false, T1).unwrap_err());
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .spec.ports[port=80,protocol=\"TCP\"].targetPort"
        );
        let out = apply_svc(Some(&live), &applied, "kubectl", true, T1).unwrap();
        assert!(owns(&out, "before-first-apply", ".spec.type"));
        assert!(owns(
            &out,
            "kubectl",
            ".spec.ports[port=80,protocol=\"TCP\"].targetPort"
        ));
    }

    #[test]
    fn apply_merges_map_lists_sets_and_atomic_fields() {
        let live = apply(
            None,
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "finalizers": ["a/x"]},
                    "spec": {"podCIDRs": ["10.244.1.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            "provisioner",
            false,
            "v1",
            "Node",
            T1,
        )
        .unwrap();
        assert_eq!(
            entry(&live, "provisioner")["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"a/x\"": {}}},
                   "f:spec": {"f:podCIDRs": {"v:\"10.244.1.0/24\"": {}}, "f:taints": {}}})
        );
        let out = apply(
            Some(&live),
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "finalizers": ["b/y"]},
                    "spec": {"podCIDRs": ["fd00:10:244:1::/64"]}}),
            "ipam",
            false,
            "v1",
            "Node",
            T2,
        )
        .unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a/x", "b/y"]));
        assert_eq!(
            out["spec"]["podCIDRs"],
            json!(["10.244.1.0/24", "fd00:10:244:1::/64"])
        );
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "k", "effect": "NoSchedule"}])
        );
    }

    #[test]
    fn apply_keeps_live_list_order_and_puts_new_elements_before_the_applied_element_after_them() {
        let mut live = service(json!({"ports": [
            {"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}, {"port": 443, "protocol": "TCP"}
        ]}));
        update_managed_fields(None, &mut live, "creator", T1, None);
        let ports = |out: &Value| -> Vec<i64> {
            out["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_i64().unwrap())
                .collect()
        };
        let out = apply_svc(
            Some(&live),
            &service(json!({"ports": [{"port": 8080}, {"port": 443}]})),
            "a",
            false,
            T2,
        );
        assert_eq!(ports(&out.unwrap()), vec![80, 53, 8080, 443]);
        let out = apply_svc(
            Some(&live),
            &service(json!({"ports": [{"port": 80}, {"port": 8080}]})),
            "a",
            false,
            T2,
        );
        assert_eq!(ports(&out.unwrap()), vec![80, 53, 443, 8080]);
    }

    #[test]
    fn main_resource_applies_ignore_status_and_system_metadata() {
        let mut applied = service(json!({"type": "ClusterIP"}));
        applied["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}});
        applied["metadata"]["resourceVersion"] = json!("5");
        applied["metadata"]["uid"] = json!("u");
        let set = field_set(&applied, "v1", "Service");
        let paths: Vec<String> = set.iter().map(ToString::to_string).collect();
        assert_eq!(paths, vec![".spec.type"]);
        // ConfigMap has no status subresource: everything but system metadata is owned.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        let paths: Vec<String> = field_set(&cm, "v1", "ConfigMap")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(paths, vec![".data.k"]);
    }

    #[test]
    fn invalid_applied_configurations_are_rejected() {
        let no_key = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                            "spec": {"containers": [{"image": "x"}]}});
        let err = apply(None, &no_key, "m", false, "v1", "Pod", T1).unwrap_err();
        assert_eq!(
            err,
            ApplyError::Invalid(
                "failed to create typed patch object (/v1, Kind=Pod): .spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)".into()
            )
        );
        let dup = service(json!({"ports": [{"port": 80}, {"port": 80, "protocol": "TCP"}]}));
        let err = apply_svc(None, &dup, "m", false, T1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to create typed patch object (/v1, Kind=Service): .spec.ports: duplicate entries for key [port=80,protocol=\"TCP\"]"
        );
        let mut with_mf = service(json!({}));
        with_mf["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply_svc(None, &with_mf, "m", false, T1).unwrap_err(),
            ApplyError::Invalid("metadata.managedFields must be nil".into())
        );
        assert_eq!(ApiError::from(ApplyError::Invalid("x".into())).code(), 400);
    }

    #[test]
    fn create_by_update_owns_every_field_with_dots_for_new_maps_and_lists() {
        let svc = csa_service(Some("{}"));
        let e = entry(&svc, "kubectl-client-side-apply");
        assert_eq!(e["operation"], "Update");
        assert_eq!(e["apiVersion"], "v1");
        assert_eq!(e["time"], T1);
        assert_eq!(
            e["fieldsV1"]["f:metadata"],
            json!({"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}})
        );
        assert!(e.get("subresource").is_none());
    }

    #[test]
    fn an_update_that_changes_nothing_keeps_entries_and_times() {
        let live = csa_service(None);
        let mut same = live.clone();
        update_managed_fields(Some(&live), &mut same, "someone", T2, None);
        assert_eq!(
            same["metadata"]["managedFields"],
            live["metadata"]["managedFields"]
        );
    }

    #[test]
    fn managed_fields_written_by_the_client_follow_upstream_rules() {
        let live = csa_service(None);

        // [{}] clears them (zero values count as empty).
        for reset in [json!([{}]), json!([{"manager": "", "fieldsV1": null}])] {
            let mut cleared = live.clone();
            cleared["metadata"]["managedFields"] = reset;
            update_managed_fields(Some(&live), &mut cleared, "kubectl-edit", T2, None);
            assert!(cleared["metadata"].get("managedFields").is_none());
        }

        // [] or absent keeps the old ones.
        for incoming in [Some(json!([])), None] {
            let mut kept = live.clone();
            match incoming {
                Some(v) => kept["metadata"]["managedFields"] = v,
                None => {
                    kept["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .shift_remove("managedFields");
                }
            }
            update_managed_fields(Some(&live), &mut kept, "kubectl-edit", T2, None);
            assert_eq!(
                kept["metadata"]["managedFields"],
                live["metadata"]["managedFields"]
            );
        }

        // A non-empty list (kubectl's CSA → SSA migration through JSON patch) replaces them.
        let migrated = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1", "time": T1,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:selector": {}}}}]);
        let mut written = live.clone();
        written["metadata"]["managedFields"] = migrated.clone();
        update_managed_fields(Some(&live), &mut written, "kubectl", T2, None);
        assert_eq!(written["metadata"]["managedFields"], migrated);

        // ... and this write's own changes still count.
        let mut written = live.clone();
        written["metadata"]["managedFields"] = migrated;
        written["spec"]["sessionAffinity"] = json!("ClientIP");
        update_managed_fields(Some(&live), &mut written, "kubectl-edit", T2, None);
        assert!(owns(&written, "kubectl-edit", ".spec.sessionAffinity"));
        assert!(owns(&written, "kubectl", ".spec.selector"));
    }

    #[test]
    fn status_writes_get_a_subresource_entry_and_ignore_spec() {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
        update_managed_fields(None, &mut pod, "kubectl-create", T1, None);
        let mut with_status = pod.clone();
        with_status["status"] = json!({"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]});
        with_status["spec"]["nodeName"] = json!("n1");
        with_status["metadata"]["managedFields"] = json!([{}]);
        update_managed_fields(Some(&pod), &mut with_status, "kubelet", T2, Some("status"));
        let kubelet = entry(&with_status, "kubelet");
        assert_eq!(kubelet["subresource"], "status");
        assert_eq!(
            kubelet["fieldsV1"],
            json!({"f:status": {"f:podIP": {}, "f:podIPs": {".": {}, "k:{\"ip\":\"10.244.1.5\"}": {".": {}, "f:ip": {}},
                   "k:{\"ip\":\"fd00:10:244:1::5\"}": {".": {}, "f:ip": {}}}}})
        );
        // The client's [{}] is ignored on a subresource: kubectl-create keeps its entry.
        assert!(owns(
            &with_status,
            "kubectl-create",
            ".spec.containers[name=\"app\"].image"
        ));
    }

    #[test]
    fn apply_to_the_status_subresource_owns_status_only() {
        let mut live =
            service(json!({"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]}));
        update_managed_fields(None, &mut live, "kubectl-create", T1, None);
        let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "ClusterIP"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.50"}, {"ip": "2001:db8::50"}]}}});
        let request = Apply {
            manager: "lb-controller",
            force: false,
            api_version: "v1",
            kind: "Service",
            now: T2,
            subresource: Some("status"),
        };
        let out = request.run(Some(&live), &applied).unwrap();
        let e = entry(&out, "lb-controller");
        assert_eq!(e["subresource"], "status");
        assert_eq!(e["operation"], "Apply");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:status": {"f:loadBalancer": {"f:ingress": {}}}})
        );
        assert_eq!(
            out["status"]["loadBalancer"]["ingress"][1]["ip"],
            "2001:db8::50"
        );
    }

    #[test]
    fn entries_are_sorted_apply_first_then_by_time() {
        let applied = service(json!({"selector": {"app": "web"}}));
        let live = apply_svc(None, &applied, "zeta", false, T1).unwrap();
        let mut updated = live.clone();
        updated["spec"]["type"] = json!("NodePort");
        update_managed_fields(Some(&live), &mut updated, "alpha", T2, None);
        let live = apply_svc(
            Some(&updated),
            &service(json!({"sessionAffinity": "None"})),
            "beta",
            false,
            T3,
        )
        .unwrap();
        let order: Vec<(String, String)> = entries(&live)
            .iter()
            .map(|e| {
                (
                    e["operation"].as_str().unwrap().to_string(),
                    e["manager"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("Apply".into(), "zeta".into()),
                ("Apply".into(), "beta".into()),
                ("Update".into(), "alpha".into())
            ]
        );
    }

    #[test]
    fn fields_v1_round_trips_and_reads_the_compat_doc_example() {
        let doc = json!({"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:targetPort":{}}}}});
        let set = FieldSet::from_fields_v1(&doc).unwrap();
        let paths: Vec<String> = set.iter().map(ToString::to_string).collect();
        assert_eq!(
            paths,
            vec![
                ".metadata.labels.app",
                ".spec.ports[port=80,protocol=\"TCP\"]",
                ".spec.ports[port=80,protocol=\"TCP\"].port",
                ".spec.ports[port=80,protocol=\"TCP\"].targetPort",
            ]
        );
        assert_eq!(set.to_fields_v1(), doc);
        let sets =
            json!({"f:metadata": {"f:finalizers": {".": {}, "v:\"a/x\"": {}}}, "f:x": {"i:3": {}}});
        assert_eq!(
            FieldSet::from_fields_v1(&sets).unwrap().to_fields_v1(),
            sets
        );
        assert!(FieldSet::from_fields_v1(&json!({"q:x": {}})).is_err());
    }

    #[test]
    fn key_elements_sort_numerically() {
        let a = PathElement::Key(vec![("port".into(), json!(80))]);
        let b = PathElement::Key(vec![("port".into(), json!(443))]);
        assert!(a < b);
        assert!(PathElement::Field("z".into()) < a);
    }
}
