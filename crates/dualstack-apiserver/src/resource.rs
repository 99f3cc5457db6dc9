//! What the server knows about each resource: the static [`ResourceDef`] (names, scope,
//! subresources, printing, selectable fields) and the per-kind [`Strategy`] (defaulting,
//! validation, update rules, allocation hooks), as kube-apiserver's registry strategies.

use std::collections::BTreeMap;

use dualstack_apimachinery::decode::FieldValidation;
use dualstack_apimachinery::field::ErrorList;
use dualstack_apimachinery::status::{ApiError, GroupKind, GroupResource};
use dualstack_apimachinery::validation::NameRule;
use dualstack_store::{Compare, Op};
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::UserInfo;

/// A Kubernetes object type the server stores.
pub trait KObj:
    k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Default
    + PartialEq
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> KObj for T where
    T: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Default
        + PartialEq
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A column of server-side printing (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Header, e.g. `Cluster-IP`.
    pub name: &'static str,
    /// `string`, `integer`, `date`.
    pub ty: &'static str,
    /// `name` for the name column, else empty.
    pub format: &'static str,
    /// Description shown by `kubectl explain`-like tools.
    pub description: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: i32,
}

impl Column {
    /// A priority-0 string column.
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Column {
            name,
            ty: "string",
            format: "",
            description,
            priority: 0,
        }
    }
    /// The `Name` column.
    pub const fn name() -> Self {
        Column {
            name: "Name",
            ty: "string",
            format: "name",
            description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
            priority: 0,
        }
    }
    /// The `Age` column.
    pub const fn age() -> Self {
        Column {
            name: "Age",
            ty: "string",
            format: "",
            description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            priority: 0,
        }
    }
    /// A priority-1 (wide) string column.
    pub const fn wide(name: &'static str, description: &'static str) -> Self {
        Column {
            name,
            ty: "string",
            format: "",
            description,
            priority: 1,
        }
    }
    /// An integer column.
    pub const fn int(name: &'static str, description: &'static str) -> Self {
        Column {
            name,
            ty: "integer",
            format: "",
            description,
            priority: 0,
        }
    }
}

/// An API lifecycle deprecation of a kind (upstream's `+k8s:prerelease-lifecycle-gen:deprecated`
/// and `:replacement` markers), in force from `major.minor` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deprecation {
    /// Group of the deprecated kind (`""` for core).
    pub group: &'static str,
    /// Version of the deprecated kind.
    pub version: &'static str,
    /// The deprecated kind.
    pub kind: &'static str,
    /// The release that deprecates it: `(major, minor)`.
    pub since: (u32, u32),
    /// The replacement: `(group/version, kind)`.
    pub replacement: (&'static str, &'static str),
}

/// The deprecated kinds we serve. A table rather than a `ResourceDef` field, so kinds added
/// elsewhere need no change. v1 Endpoints: KEP-4974, deprecated in 1.33.
pub static DEPRECATIONS: &[Deprecation] = &[Deprecation {
    group: "",
    version: "v1",
    kind: "Endpoints",
    since: (1, 33),
    replacement: ("discovery.k8s.io/v1", "EndpointSlice"),
}];

impl Deprecation {
    /// upstream's `deprecation.WarningMessage`: `v1 Endpoints is deprecated in v1.33+; use
    /// discovery.k8s.io/v1 EndpointSlice`.
    pub fn warning(&self) -> String {
        let gv = if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        format!(
            "{gv} {} is deprecated in v{}.{}+; use {} {}",
            self.kind, self.since.0, self.since.1, self.replacement.0, self.replacement.1
        )
    }
}

/// The static description of a resource.
#[derive(Debug, Clone)]
pub struct ResourceDef {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural (URL segment).
    pub plural: &'static str,
    /// Singular.
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`svc`).
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Subresources served (`status`, `finalize`).
    pub subresources: &'static [&'static str],
    /// Name rule for `metadata.name`.
    pub name_rule: NameRule,
    /// Field selector labels supported besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Delete answers with the deleted object (else a success `Status`).
    pub return_deleted_object: bool,
    /// PUT of a missing object creates it.
    pub allow_create_on_update: bool,
    /// Table columns.
    pub columns: &'static [Column],
}

impl ResourceDef {
    /// `apiVersion` of the kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The deprecation warning every request to this resource carries when the server reports
    /// `major.minor` (upstream's `deprecation.IsDeprecated`: from the deprecating release on).
    pub fn deprecation_warning(&self, major: u32, minor: u32) -> Option<String> {
        DEPRECATIONS
            .iter()
            .find(|d| d.group == self.group && d.version == self.version && d.kind == self.kind)
            .filter(|d| (major, minor) >= d.since)
            .map(Deprecation::warning)
    }

    /// The group and resource (`services`, `endpointslices.discovery.k8s.io`).
    pub fn group_resource(&self) -> GroupResource {
        GroupResource::new(self.group, self.plural)
    }

    /// The group and kind.
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::new(self.group, self.kind)
    }

    /// The storage key segment: `services`, `endpointslices.discovery.k8s.io`.
    pub fn storage_resource(&self) -> String {
        self.group_resource().to_string()
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/{}", self.storage_resource(), ns, name),
            _ => format!("/registry/{}/{}", self.storage_resource(), name),
        }
    }

    /// The storage prefix of a list (one namespace, or all).
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("/registry/{}/{}/", self.storage_resource(), ns),
            _ => format!("/registry/{}/", self.storage_resource()),
        }
    }

    /// Whether `field` may be used in a field selector.
    pub fn supports_field(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.field_labels.contains(&field)
    }

    /// Whether the resource serves `/status`.
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }
}

/// Per-request context.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Who asks.
    pub user: UserInfo,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// The field manager (query parameter, else User-Agent product, else `unknown`).
    pub field_manager: String,
    /// `fieldManager` was given explicitly.
    pub field_manager_explicit: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (server-side apply).
    pub force: bool,
    /// Values of alpha or removed fields seen while decoding (e.g. `spec.ipFamily`).
    pub legacy_fields: BTreeMap<String, String>,
    /// `metadata.managedFields` were already computed (server-side apply).
    pub managed_fields_done: bool,
    /// Warnings for the response (`Warning: 299 - "..."`).
    pub warnings: Vec<String>,
}

impl Ctx {
    /// A context for the server's own writes.
    pub fn system(manager: &str) -> Self {
        Ctx {
            user: UserInfo::new("system:apiserver", &[crate::auth::MASTERS_GROUP]),
            dry_run: false,
            field_manager: manager.to_string(),
            field_manager_explicit: true,
            field_validation: FieldValidation::Ignore,
            force: false,
            legacy_fields: BTreeMap::new(),
            managed_fields_done: false,
            warnings: Vec::new(),
        }
    }

    /// Whether managed fields were already computed for this write.
    pub fn managed_fields_set(&self) -> bool {
        self.managed_fields_done
    }
}

/// Extra storage work a strategy attaches to a write (e.g. the IPAddress objects of a Service),
/// committed atomically with it, and what to do after.
#[derive(Default)]
pub struct WriteHooks {
    /// Extra preconditions.
    pub compares: Vec<Compare>,
    /// Extra changes.
    pub ops: Vec<Op>,
    /// Run after the transaction committed (e.g. release addresses of a downgrade).
    pub on_commit: Vec<Box<dyn FnOnce() + Send>>,
    /// Run when the write does not happen (e.g. return reserved addresses).
    pub on_abort: Vec<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for WriteHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHooks")
            .field("compares", &self.compares)
            .field("ops", &self.ops)
            .finish()
    }
}

impl WriteHooks {
    /// Runs the commit callbacks.
    pub fn commit(self) {
        for f in self.on_commit {
            f();
        }
    }

    /// Runs the abort callbacks.
    pub fn abort(self) {
        for f in self.on_abort {
            f();
        }
    }

    /// Adds another set of hooks.
    pub fn merge(&mut self, other: WriteHooks) {
        self.compares.extend(other.compares);
        self.ops.extend(other.ops);
        self.on_commit.extend(other.on_commit);
        self.on_abort.extend(other.on_abort);
    }
}

/// Per-kind behaviour. Every method has upstream's generic default.
pub trait Strategy: Send + Sync + 'static {
    /// The object type.
    type Obj: KObj;

    /// The static definition.
    fn def(&self) -> &ResourceDef;

    /// Defaulting (upstream's `SetDefaults_*`, run on every decoded object).
    fn defaults(&self, _obj: &mut Self::Obj) {}

    /// `PrepareForCreate`: clear or set fields users may not set.
    fn prepare_for_create(&self, _obj: &mut Self::Obj) {}

    /// Admission (upstream's admission plugins, e.g. NodeRestriction) on the final object of a
    /// create (`old` is None) or an update of any subresource, before validation; `Err` (a
    /// 403) refuses the write. Runs for dry runs too.
    fn admit(
        &self,
        _ctx: &Ctx,
        _new: &Self::Obj,
        _old: Option<&Self::Obj>,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Admission of a delete (upstream's NamespaceLifecycle protects the system namespaces).
    fn admit_delete(&self, _ctx: &Ctx, _old: &Self::Obj) -> Result<(), ApiError> {
        Ok(())
    }

    /// `Validate` (object meta is validated by the registry).
    fn validate(&self, _ctx: &Ctx, _obj: &Self::Obj) -> ErrorList {
        Vec::new()
    }

    /// `PrepareForUpdate` of the main resource, after the registry kept the old status.
    fn prepare_for_update(&self, _new: &mut Self::Obj, _old: &Self::Obj) {}

    /// `ValidateUpdate` (object meta update rules are checked by the registry).
    fn validate_update(&self, ctx: &Ctx, new: &Self::Obj, _old: &Self::Obj) -> ErrorList {
        self.validate(ctx, new)
    }

    /// `ValidateUpdate` of the status subresource.
    fn validate_status_update(&self, _ctx: &Ctx, _new: &Self::Obj, _old: &Self::Obj) -> ErrorList {
        Vec::new()
    }

    /// Read-time defaulting of objects stored by older servers.
    fn on_read(&self, _obj: &mut Self::Obj) {}

    /// Kind-specific selectable fields (besides `metadata.name` / `metadata.namespace`).
    fn fields(&self, _obj: &Self::Obj, _out: &mut Vec<(&'static str, String)>) {}

    /// Table cells, one per [`ResourceDef::columns`] entry.
    fn row(&self, obj: &Self::Obj, now: jiff::Timestamp) -> Vec<serde_json::Value> {
        vec![
            obj.metadata().name.clone().unwrap_or_default().into(),
            age_cell(obj.metadata(), now),
        ]
    }

    /// Storage work attached to a create (after validation), e.g. allocations.
    fn begin_create(&self, _ctx: &Ctx, _obj: &mut Self::Obj) -> Result<WriteHooks, ApiError> {
        Ok(WriteHooks::default())
    }

    /// Storage work attached to an update (after validation).
    fn begin_update(
        &self,
        _ctx: &Ctx,
        _new: &mut Self::Obj,
        _old: &Self::Obj,
    ) -> Result<WriteHooks, ApiError> {
        Ok(WriteHooks::default())
    }

    /// Storage work attached to the final removal of an object.
    fn begin_delete(&self, _ctx: &Ctx, _old: &Self::Obj) -> Result<WriteHooks, ApiError> {
        Ok(WriteHooks::default())
    }

    /// Hooks run before defaulting on the raw value (alpha fields, legacy forms); may record
    /// values in `ctx.legacy_fields`.
    fn upgrade_value(
        &self,
        _ctx: &mut Ctx,
        _value: &mut serde_json::Value,
    ) -> Result<(), ApiError> {
        Ok(())
    }

    /// Called when a delete marks the object (finalizers or grace period pending), e.g. a
    /// namespace becomes `Terminating`.
    fn on_delete_marked(&self, _obj: &mut Self::Obj) {}

    /// Graceful deletion: the grace period to wait (None = delete now).
    fn grace_period(&self, _obj: &Self::Obj, _requested: Option<i64>) -> Option<i64> {
        None
    }
}

/// `translateTimestampSince`: `5s`, `3m`, `2d`, `<unknown>`.
pub fn age_cell(meta: &ObjectMeta, now: jiff::Timestamp) -> serde_json::Value {
    match &meta.creation_timestamp {
        Some(t) => human_duration(now.duration_since(t.0).as_secs()).into(),
        None => "<unknown>".into(),
    }
}

/// `duration.HumanDuration` of apimachinery.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        let d = hours / 24;
        return if h == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        let y = hours / 24 / 365;
        return if d == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{d}d")
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 600, "3h10m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }
}
