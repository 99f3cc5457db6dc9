//! The type-erased face of a resource ([`ResourceApi`]) that the HTTP layer calls, implemented
//! once for every kind by [`TypedApi`]: decoding (with strict field validation), patching,
//! server-side apply, lists with selectors and paging, table printing, and what the watch
//! cache keeps of each object.

use std::sync::Arc;

use bytes::Bytes;
use dualstack_apimachinery::apply;
use dualstack_apimachinery::decode::{Decoded, decode_typed};
use dualstack_apimachinery::patch::{self, PatchType};
use dualstack_apimachinery::selector::{FieldSelector, LabelSelector};
use dualstack_apimachinery::status::ApiError;
use dualstack_store::Revision;
use dualstack_store::cache::{Attrs, Decorated, Entry, ListPage};
use k8s_openapi::Metadata;
use serde_json::{Value, json};

use crate::registry::{DeleteOpts, Deleted, Registry, Storage, Written, now, parse, time_string};
use crate::resource::{Ctx, ResourceDef, Strategy};

/// What `includeObject` asks to embed in table rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

/// A list request after parsing.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit`.
    pub limit: Option<usize>,
    /// Key to continue after (from the `continue` token).
    pub continue_after: Option<String>,
    /// Serve the objects as they were at this revision (continue tokens, `Exact` lists).
    pub at_revision: Option<i64>,
}

/// Every operation the HTTP layer needs on a resource.
#[async_trait::async_trait]
pub trait ResourceApi: Send + Sync {
    /// The static definition.
    fn def(&self) -> &ResourceDef;

    /// GET one object: the JSON clients see.
    async fn get(&self, ns: Option<&str>, name: &str) -> Result<Arc<Entry>, ApiError>;

    /// LIST (consistent read done by the caller). `Err(Compacted)` when `at_revision` is older
    /// than the retained history.
    fn list(
        &self,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<ListPage, dualstack_store::StoreError>;

    /// POST.
    async fn create(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        body: Value,
        dup: &[String],
    ) -> Result<Written, ApiError>;

    /// PUT; `true` when it created the object.
    async fn update(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        dup: &[String],
    ) -> Result<(Written, bool), ApiError>;

    /// PATCH (merge, JSON, strategic, apply); `true` when it created the object.
    async fn patch(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch_type: PatchType,
        patch: Value,
    ) -> Result<(Written, bool), ApiError>;

    /// DELETE.
    async fn delete(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError>;

    /// A storage-level update (upstream's `GuaranteedUpdate`, as `pods/binding` does): reads
    /// the current object, lets `f` change its JSON (`None`: leave it), and writes it with
    /// compare-and-swap, retrying on conflicts; no strategy update rules, no managed fields.
    async fn update_stored(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        f: &mut (dyn FnMut(Value) -> Result<Option<Value>, ApiError> + Send),
    ) -> Result<Option<Written>, ApiError>;

    /// Table rows for cached entries.
    fn rows(&self, entries: &[Arc<Entry>], include: IncludeObject) -> Result<Vec<Value>, ApiError>;

    /// Table rows for a single output JSON (watch events, a GET).
    fn rows_for_output(
        &self,
        output: &[u8],
        include: IncludeObject,
    ) -> Result<Vec<Value>, ApiError>;

    /// What the watch cache keeps of a stored value.
    fn decorate(&self, stored: &[u8], revision: Revision) -> Decorated;

    /// `spec.nodeName` of a pod output (for node restriction); None for other kinds.
    fn node_name(&self, output: &[u8]) -> Option<String> {
        let _ = output;
        None
    }
}

/// The [`ResourceApi`] of one kind.
pub struct TypedApi<S: Strategy> {
    /// The typed store.
    pub registry: Registry<S>,
}

impl<S: Strategy> std::fmt::Debug for TypedApi<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedApi")
            .field("resource", &self.registry.strategy.def().plural)
            .finish()
    }
}

/// Runs CPU-bound work (patch application) on the blocking pool, so a large or amplifying
/// patch never holds one of the async workers that health checks, accepts and watches share.
async fn on_blocking_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("patch failed: {e}")))?
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Checks `apiVersion`/`kind` of a body against the resource, filling them when absent.
pub fn check_type(def: &ResourceDef, body: &mut Value) -> Result<(), ApiError> {
    let want_av = def.api_version();
    let obj = body
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be an object".into()))?;
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(av) if !av.is_empty() && av != want_av => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
        _ => {
            obj.insert("apiVersion".into(), want_av.into());
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != def.kind => {
            return Err(ApiError::BadRequest(format!(
                "the object provided is unrecognized (must be of type {}): kind {k:?} does not match",
                def.kind
            )));
        }
        _ => {
            obj.insert("kind".into(), def.kind.into());
        }
    }
    Ok(())
}

/// Builds the selectable attributes of an object (its labels are moved out).
pub fn attrs_of(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    extra: Vec<(&'static str, String)>,
) -> Attrs {
    Attrs::new(meta.labels.take().unwrap_or_default(), extra)
}

/// The name and namespace of a cached object, from its key
/// (`/registry/<resource>[/<namespace>]/<name>`).
pub fn name_and_namespace(key: &str, namespaced: bool) -> (&str, &str) {
    let mut parts = key.rsplit('/');
    let name = parts.next().unwrap_or("");
    let ns = if namespaced {
        parts.next().unwrap_or("")
    } else {
        ""
    };
    (name, ns)
}

/// Whether a cached object passes label and field selectors.
pub fn selected(
    labels: &LabelSelector,
    fields: &FieldSelector,
    namespaced: bool,
    e: &Entry,
) -> bool {
    if !labels.matches_with(|k| e.attrs.label(k)) {
        return false;
    }
    if fields.is_empty() {
        return true;
    }
    let (name, ns) = name_and_namespace(&e.kv.key, namespaced);
    fields.matches_with(|f| match f {
        "metadata.name" => Some(name),
        "metadata.namespace" => Some(ns),
        other => e.attrs.field(other),
    })
}

impl<S: Strategy> TypedApi<S> {
    /// An API over `storage`.
    pub fn new(strategy: S, storage: Storage) -> Self {
        Self {
            registry: Registry::new(strategy, storage),
        }
    }

    fn strategy(&self) -> &S {
        &self.registry.strategy
    }

    /// Decodes a body into a defaulted typed object, applying `fieldValidation`.
    pub fn decode(
        &self,
        ctx: &mut Ctx,
        mut body: Value,
        dup: &[String],
    ) -> Result<S::Obj, ApiError> {
        let def = self.strategy().def();
        check_type(def, &mut body)?;
        self.strategy().upgrade_value(ctx, &mut body)?;
        let Decoded {
            mut object,
            unknown,
        } = decode_typed::<S::Obj>(body, def.kind, &def.api_version())?;
        let warnings = ctx
            .field_validation
            .check(def.kind, &def.api_version(), &unknown, dup)?;
        ctx.warnings.extend(warnings);
        self.strategy().defaults(&mut object);
        Ok(object)
    }

    fn table_row(
        &self,
        obj: &S::Obj,
        output: Option<&[u8]>,
        include: IncludeObject,
        t: jiff::Timestamp,
    ) -> Result<Value, ApiError> {
        let cells = self.strategy().row(obj, t);
        let object = match include {
            IncludeObject::None => None,
            IncludeObject::Metadata => {
                let mut meta =
                    serde_json::to_value(k8s_openapi::Metadata::metadata(obj)).map_err(internal)?;
                if let Some(m) = meta.as_object_mut() {
                    m.remove("managedFields");
                }
                Some(
                    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}),
                )
            }
            IncludeObject::Object => match output {
                Some(o) => Some(serde_json::from_slice(o).map_err(internal)?),
                None => Some(serde_json::to_value(obj).map_err(internal)?),
            },
        };
        let mut row = json!({ "cells": cells });
        if let Some(o) = object {
            row["object"] = o;
        }
        Ok(row)
    }
}

#[async_trait::async_trait]
impl<S: Strategy> ResourceApi for TypedApi<S> {
    fn def(&self) -> &ResourceDef {
        self.strategy().def()
    }

    async fn get(&self, ns: Option<&str>, name: &str) -> Result<Arc<Entry>, ApiError> {
        Ok(self.registry.get(ns, name).await?.1)
    }

    fn list(
        &self,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<ListPage, dualstack_store::StoreError> {
        let prefix = self.def().prefix(ns);
        let filter = |e: &Entry| selected(&opts.labels, &opts.fields, self.def().namespaced, e);
        let cache = &self.registry.storage.cache;
        let after = opts.continue_after.as_deref();
        match opts.at_revision {
            Some(rev) => cache.list_at(&prefix, after, opts.limit, &filter, rev),
            None => Ok(cache.list(&prefix, after, opts.limit, &filter)),
        }
    }

    async fn create(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        body: Value,
        dup: &[String],
    ) -> Result<Written, ApiError> {
        let obj = self.decode(ctx, body, dup)?;
        self.registry.create(ctx, ns, obj).await
    }

    async fn update(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        dup: &[String],
    ) -> Result<(Written, bool), ApiError> {
        let obj = self.decode(ctx, body, dup)?;
        self.registry.update(ctx, ns, name, obj, subresource).await
    }

    async fn patch(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch_type: PatchType,
        patch_body: Value,
    ) -> Result<(Written, bool), ApiError> {
        let def = self.def().clone();
        if patch_type == PatchType::Apply {
            return self
                .server_side_apply(ctx, ns, name, subresource, patch_body)
                .await;
        }
        let explicit_rv = patch_body
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let patch_body = Arc::new(patch_body);
        for _ in 0..16 {
            let (_, entry) = self.registry.get(ns, name).await?;
            let current: Value = serde_json::from_slice(&entry.output).map_err(internal)?;
            // Applying a patch is CPU work bounded by size, not time: never on an async worker.
            let (pb, d, n) = (patch_body.clone(), def.clone(), name.to_string());
            let patched = on_blocking_thread(move || {
                let patched = match patch_type {
                    PatchType::Merge => Ok(patch::merge_patch(&current, &pb)),
                    PatchType::Json => {
                        patch::json_patch(&current, &pb).map_err(|e| patch_error(&d, &n, e))
                    }
                    PatchType::Strategic => {
                        patch::strategic_merge_patch(&current, &pb, &d.api_version(), d.kind)
                            .map_err(|e| patch_error(&d, &n, e))
                    }
                    PatchType::Apply => unreachable!("handled above"),
                }?;
                // An object the store must refuse is refused here, before decoding it.
                let size = serde_json::to_vec(&patched).map_or(0, |b| b.len());
                if size > dualstack_store::MAX_VALUE_BYTES {
                    return Err(ApiError::TooLarge(dualstack_store::MAX_VALUE_BYTES));
                }
                Ok(patched)
            })
            .await?;
            if let Some(rv) = patched
                .get("metadata")
                .and_then(|m| m.get("resourceVersion"))
                .and_then(Value::as_str)
                && rv != entry.kv.mod_revision.to_string()
            {
                return Err(ApiError::Conflict {
                    resource: def.group_resource(),
                    name: name.to_string(),
                });
            }
            if patched
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                != Some(name)
            {
                return Err(ApiError::BadRequest(format!(
                    "metadata.name: Invalid value: {:?}: field is immutable",
                    patched["metadata"]["name"].as_str().unwrap_or("")
                )));
            }
            let mut pctx = ctx.clone();
            let mut obj = self.decode(&mut pctx, patched, &[])?;
            obj.metadata_mut().resource_version = Some(entry.kv.mod_revision.to_string());
            match self
                .registry
                .update(&pctx, ns, name, obj, subresource)
                .await
            {
                Err(ApiError::Conflict { .. }) if explicit_rv.is_none() => continue,
                Err(e) => return Err(e),
                Ok(r) => {
                    ctx.warnings = pctx.warnings;
                    return Ok(r);
                }
            }
        }
        Err(ApiError::Conflict {
            resource: def.group_resource(),
            name: name.to_string(),
        })
    }

    async fn delete(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        self.registry.delete(ctx, ns, name, opts).await
    }

    async fn update_stored(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        f: &mut (dyn FnMut(Value) -> Result<Option<Value>, ApiError> + Send),
    ) -> Result<Option<Written>, ApiError> {
        let ctx = Ctx {
            managed_fields_done: true,
            ..ctx.clone()
        };
        self.registry
            .guaranteed_update(&ctx, ns, name, Some("binding"), |old, _| {
                let value = serde_json::to_value(old).map_err(internal)?;
                match f(value)? {
                    Some(v) => Ok(Some(serde_json::from_value(v).map_err(internal)?)),
                    None => Ok(None),
                }
            })
            .await
    }

    fn rows(&self, entries: &[Arc<Entry>], include: IncludeObject) -> Result<Vec<Value>, ApiError> {
        let t = now();
        entries
            .iter()
            .map(|e| {
                let obj: S::Obj = parse(&e.output)?;
                self.table_row(&obj, Some(&e.output), include, t)
            })
            .collect()
    }

    fn rows_for_output(
        &self,
        output: &[u8],
        include: IncludeObject,
    ) -> Result<Vec<Value>, ApiError> {
        let obj: S::Obj = parse(output)?;
        Ok(vec![self.table_row(&obj, Some(output), include, now())?])
    }

    fn decorate(&self, stored: &[u8], revision: Revision) -> Decorated {
        decorate_object(self.strategy(), stored, revision)
    }

    fn node_name(&self, output: &[u8]) -> Option<String> {
        if self.def().plural != "pods" || !self.def().group.is_empty() {
            return None;
        }
        let v: Value = serde_json::from_slice(output).ok()?;
        v["spec"]["nodeName"].as_str().map(str::to_string)
    }
}

/// What the watch cache keeps of a stored object of strategy `S`: read-time defaulting applied,
/// `resourceVersion` set, and its selectable attributes.
pub fn decorate_object<S: Strategy>(strategy: &S, stored: &[u8], revision: Revision) -> Decorated {
    match serde_json::from_slice::<S::Obj>(stored) {
        Ok(mut obj) => {
            strategy.on_read(&mut obj);
            obj.metadata_mut().resource_version = Some(revision.to_string());
            let mut extra = Vec::new();
            strategy.fields(&obj, &mut extra);
            // Serialise before the labels move into the attributes.
            let output = exact_bytes(serde_json::to_vec(&obj).unwrap_or_default());
            let attrs = attrs_of(obj.metadata_mut(), extra);
            Decorated {
                attrs,
                output,
                keep_value: false,
            }
        }
        Err(e) => {
            tracing::error!(resource = strategy.def().plural, error = %e, "undecodable stored object");
            Decorated {
                attrs: Attrs::default(),
                output: Bytes::copy_from_slice(stored),
                keep_value: false,
            }
        }
    }
}

/// Bytes without the spare capacity `serde_json::to_vec` leaves (the cache keeps them long).
pub fn exact_bytes(mut v: Vec<u8>) -> Bytes {
    v.shrink_to_fit();
    Bytes::from(v)
}

fn patch_error(_def: &ResourceDef, _name: &str, e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::Malformed(m) => ApiError::BadRequest(m),
        patch::PatchError::Unprocessable(m) => ApiError::Unprocessable(m),
        patch::PatchError::TooLarge(m) => ApiError::EntityTooLarge(m),
    }
}

impl<S: Strategy> TypedApi<S> {
    async fn server_side_apply(
        &self,
        ctx: &mut Ctx,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        applied: Value,
    ) -> Result<(Written, bool), ApiError> {
        let def = self.def().clone();
        if !ctx.field_manager_explicit {
            return Err(ApiError::BadRequest(
                "PATCH, application/apply-patch+yaml requires fieldManager parameter".into(),
            ));
        }
        let mut applied = applied;
        check_type(&def, &mut applied)?;
        match applied
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
        {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            None => {
                return Err(ApiError::BadRequest(
                    "metadata.name is required in an apply configuration".into(),
                ));
            }
        }
        let av = def.api_version();
        for _ in 0..16 {
            let live = self.registry.current(ns, name).await?;
            let stamp = time_string(now());
            let live_value: Option<Value> = match &live {
                Some((_, e)) => Some(serde_json::from_slice(&e.output).map_err(internal)?),
                None => None,
            };
            let merged = apply::apply(
                live_value.as_ref(),
                &applied,
                &ctx.field_manager,
                ctx.force,
                &av,
                def.kind,
                &stamp,
            )?;
            let mut actx = ctx.clone();
            actx.managed_fields_done = true;
            let result = match &live {
                None => {
                    if subresource.is_some() {
                        return Err(ApiError::not_found(&def.group_resource(), name));
                    }
                    let obj = self.decode(&mut actx, merged, &[])?;
                    self.registry
                        .create(&actx, ns, obj)
                        .await
                        .map(|w| (w, true))
                }
                Some((_, e)) => {
                    let mut obj = self.decode(&mut actx, merged, &[])?;
                    obj.metadata_mut().resource_version = Some(e.kv.mod_revision.to_string());
                    self.registry
                        .update(&actx, ns, name, obj, subresource)
                        .await
                }
            };
            match result {
                Err(ApiError::Conflict { .. }) | Err(ApiError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e),
                Ok(r) => {
                    ctx.warnings = actx.warnings;
                    return Ok(r);
                }
            }
        }
        Err(ApiError::Conflict {
            resource: def.group_resource(),
            name: name.to_string(),
        })
    }
}
