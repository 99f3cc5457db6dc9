//! The generic store of one resource, as kube-apiserver's `registry/generic/registry.Store`:
//! create, update (optimistic concurrency, status subresource), guaranteed update, graceful and
//! finalizer-aware delete. Reads come from the watch cache after it caught up with the backend
//! (consistent reads); writes are compare-and-swap transactions on the backend, with the
//! strategy's extra operations (e.g. IPAddress objects) committed atomically.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dualstack_apimachinery::apply::update_managed_fields;
use dualstack_apimachinery::field::ErrorList;
use dualstack_apimachinery::status::ApiError;
use dualstack_apimachinery::validation::{validate_object_meta, validate_object_meta_update};
use dualstack_store::cache::{Cache, Entry};
use dualstack_store::{Backend, Compare, Op, Revision, StoreError, Txn, TxnResult};
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

use crate::resource::{Ctx, KObj, Strategy, WriteHooks};

/// How long a read waits for the cache to reach the backend's revision.
pub const CONSISTENT_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Attempts of an unconditional update racing other writers.
const MAX_RETRIES: usize = 16;

/// The backend and the watch cache in front of it.
#[derive(Clone)]
pub struct Storage {
    /// Where writes go.
    pub backend: Arc<dyn Backend>,
    /// Where reads come from.
    pub cache: Cache,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("cache", &self.cache)
            .finish()
    }
}

/// Storage failures as API errors.
pub fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Closed => ApiError::Unavailable("storage is shutting down".into()),
        // etcd refuses such a request; upstream answers it as an entity too large.
        StoreError::ValueTooLarge { limit, .. } => ApiError::TooLarge(limit),
        other => ApiError::Internal(other.to_string()),
    }
}

impl Storage {
    /// Waits until the cache reflects every committed write (a consistent read point).
    pub async fn consistent(&self) -> Result<Revision, ApiError> {
        let rev = self.backend.current_revision().await.map_err(store_err)?;
        if self.cache.wait_for(rev, CONSISTENT_READ_TIMEOUT).await {
            Ok(rev)
        } else {
            Err(ApiError::Unavailable(format!(
                "storage cache did not reach revision {rev} in time (at {})",
                self.cache.revision()
            )))
        }
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, ApiError> {
        self.backend.txn(txn).await.map_err(store_err)
    }
}

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object as clients see it (JSON with `resourceVersion`).
    pub output: Bytes,
    /// The commit revision (for a dry run or a no-op, the object's current revision).
    pub revision: Revision,
}

/// Outcome of a delete request.
#[derive(Debug, Clone)]
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Written),
    /// The object still exists with `deletionTimestamp` set (finalizers, grace period).
    Pending(Written),
}

/// `DeleteOptions` we act on.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `propagationPolicy` (`Orphan`, `Background`, `Foreground`).
    pub propagation_policy: Option<String>,
    /// The deprecated `orphanDependents`.
    pub orphan_dependents: Option<bool>,
}

/// The finalizer of an owner whose dependents are orphaned (`metav1.FinalizerOrphanDependents`).
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer of an owner deleted in the foreground (`metav1.FinalizerDeleteDependents`).
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// upstream's `deletionFinalizersForGarbageCollection`: the object's finalizers after a delete
/// with `opts` (both GC finalizers removed, then the one the options ask for added back; no
/// option keeps what the object has). None when they do not change.
pub fn gc_finalizers(current: &[String], opts: &DeleteOpts) -> Option<Vec<String>> {
    let has = |f: &str| current.iter().any(|x| x == f);
    let (orphan, foreground) = match (opts.propagation_policy.as_deref(), opts.orphan_dependents) {
        (Some("Orphan"), _) | (None, Some(true)) => (true, false),
        (Some("Foreground"), _) => (false, true),
        (Some(_), _) | (None, Some(false)) => (false, false),
        (None, None) => (has(ORPHAN_FINALIZER), has(FOREGROUND_FINALIZER)),
    };
    let mut out: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if orphan {
        out.push(ORPHAN_FINALIZER.into());
    }
    if foreground {
        out.push(FOREGROUND_FINALIZER.into());
    }
    (out != current).then_some(out)
}

/// `now`, truncated to seconds as `metav1.Time` is.
pub fn now() -> jiff::Timestamp {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// RFC 3339 time (seconds) as Kubernetes writes `metav1.Time`.
pub fn time_string(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn generate_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Parses a stored or cached object.
pub fn parse<K: KObj>(bytes: &[u8]) -> Result<K, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Internal(format!("decoding stored object: {e}")))
}

/// The typed store of one resource.
pub struct Registry<S: Strategy> {
    /// The kind's strategy.
    pub strategy: S,
    /// Storage.
    pub storage: Storage,
}

impl<S: Strategy> std::fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("resource", &self.strategy.def().plural)
            .finish()
    }
}

fn object_name(meta: &ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn strip_status(v: &mut Value) -> Option<Value> {
    v.as_object_mut().and_then(|m| m.remove("status"))
}

/// The object without `metadata.managedFields` and `metadata.resourceVersion`, for no-op checks.
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

impl<S: Strategy> Registry<S> {
    /// A registry over `storage`.
    pub fn new(strategy: S, storage: Storage) -> Self {
        Self { strategy, storage }
    }

    fn def(&self) -> &crate::resource::ResourceDef {
        self.strategy.def()
    }

    fn invalid(&self, name: &str, errors: ErrorList) -> ApiError {
        ApiError::Invalid {
            kind: self.def().group_kind(),
            name: name.to_string(),
            errors,
        }
    }

    /// The stored key of an object.
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        self.def().key(ns, name)
    }

    /// Turns stored bytes into what clients see at `revision`.
    pub fn output(&self, stored: &[u8], revision: Revision) -> Result<Bytes, ApiError> {
        let mut obj: S::Obj = parse(stored)?;
        self.strategy.on_read(&mut obj);
        obj.metadata_mut().resource_version = Some(revision.to_string());
        serde_json::to_vec(&obj)
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The current object from a consistent read, or None.
    pub async fn current(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<(S::Obj, Arc<Entry>)>, ApiError> {
        self.storage.consistent().await?;
        match self.storage.cache.get(&self.key(ns, name)) {
            Some(e) => Ok(Some((parse(&e.output)?, e))),
            None => Ok(None),
        }
    }

    /// GET.
    pub async fn get(
        &self,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(S::Obj, Arc<Entry>), ApiError> {
        self.current(ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(&self.def().group_resource(), name))
    }

    /// Checks that a namespace exists and accepts new objects.
    pub fn check_namespace(&self, ns: &str, name: &str) -> Result<(), ApiError> {
        let key = format!("/registry/namespaces/{ns}");
        let Some(e) = self.storage.cache.get(&key) else {
            return Err(ApiError::NotFound {
                resource: dualstack_apimachinery::status::GroupResource::new("", "namespaces"),
                name: ns.to_string(),
            });
        };
        // A namespace marked for deletion is `Terminating` (its selectable `status.phase`).
        if e.attrs.field("status.phase") != Some("Terminating") {
            return Ok(());
        }
        let resource = self.def().group_resource();
        let subject = if name.is_empty() {
            resource.to_string()
        } else {
            format!("{resource} {name:?}")
        };
        Err(ApiError::Forbidden(format!(
            "{subject} is forbidden: unable to create new content in namespace {ns} because it is being terminated"
        )))
    }

    /// CREATE. `obj` has been decoded and defaulted.
    pub async fn create(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        mut obj: S::Obj,
    ) -> Result<Written, ApiError> {
        let def = self.def();
        {
            let meta = obj.metadata_mut();
            if def.namespaced {
                let ns =
                    ns.ok_or_else(|| ApiError::BadRequest("a namespace is required".into()))?;
                match meta.namespace.as_deref() {
                    Some(b) if !b.is_empty() && b != ns => {
                        return Err(ApiError::BadRequest(
                            "the namespace of the provided object does not match the namespace sent on the request"
                                .into(),
                        ));
                    }
                    _ => meta.namespace = Some(ns.to_string()),
                }
            } else {
                meta.namespace = None;
            }
            if meta.name.as_deref().unwrap_or("").is_empty()
                && let Some(g) = meta.generate_name.as_deref().filter(|g| !g.is_empty())
            {
                meta.name = Some(format!("{g}{}", generate_suffix()));
            }
            let now = now();
            meta.uid = Some(uuid::Uuid::new_v4().to_string());
            meta.creation_timestamp = Some(Time(now));
            meta.resource_version = None;
            meta.deletion_timestamp = None;
            meta.deletion_grace_period_seconds = None;
            meta.self_link = None;
        }
        if def.namespaced {
            let meta = obj.metadata();
            self.check_namespace(
                meta.namespace.as_deref().unwrap_or(""),
                meta.name.as_deref().unwrap_or(""),
            )?;
        }
        let name = object_name(obj.metadata());
        self.strategy.admit(ctx, &obj, None)?;
        let key = self.key(obj.metadata().namespace.as_deref(), &name);
        for _ in 0..MAX_RETRIES {
            let mut attempt = obj.clone();
            // As upstream's store: BeginCreate (allocations) runs before PrepareForCreate and
            // validation; its reservations are given back when anything later fails.
            let hooks = self.strategy.begin_create(ctx, &mut attempt)?;
            self.strategy.prepare_for_create(&mut attempt);
            let mut errs = validate_object_meta(attempt.metadata(), def.namespaced, def.name_rule);
            errs.extend(self.strategy.validate(ctx, &attempt));
            if !errs.is_empty() {
                hooks.abort();
                return Err(self.invalid(&name, errs));
            }
            let mut value =
                serde_json::to_value(&attempt).map_err(|e| ApiError::Internal(e.to_string()))?;
            if !ctx.managed_fields_set() {
                update_managed_fields(
                    None,
                    &mut value,
                    &ctx.field_manager,
                    &time_string(now()),
                    None,
                );
            }
            let bytes = stored_bytes(&value)?;
            if ctx.dry_run {
                hooks.abort();
                let mut out: S::Obj = parse(&bytes)?;
                out.metadata_mut().resource_version = None;
                let output = Bytes::from(
                    serde_json::to_vec(&out).map_err(|e| ApiError::Internal(e.to_string()))?,
                );
                return Ok(Written {
                    output,
                    revision: 0,
                });
            }
            let txn = Txn::new()
                .when(Compare::absent(&key))
                .put(&key, bytes.clone());
            match self.commit(txn, hooks).await? {
                Ok(revision) => {
                    return Ok(Written {
                        output: respond(&mut value, revision)?,
                        revision,
                    });
                }
                Err(0) => {
                    return Err(ApiError::AlreadyExists {
                        resource: def.group_resource(),
                        name,
                    });
                }
                // Another writer took something the hooks reserved; try again.
                Err(_) => continue,
            }
        }
        Err(ApiError::Internal(format!(
            "too many conflicts creating {} {name:?}",
            def.plural
        )))
    }

    /// UPDATE (PUT) of the main resource or `/status`. When `new` carries a `resourceVersion`,
    /// it must be current (409 otherwise).
    pub async fn update(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        new: S::Obj,
        subresource: Option<&str>,
    ) -> Result<(Written, bool), ApiError> {
        let def = self.def();
        if let Some(body_name) = new.metadata().name.as_deref()
            && !body_name.is_empty()
            && body_name != name
        {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if def.namespaced
            && let (Some(b), Some(u)) = (new.metadata().namespace.as_deref(), ns)
            && !b.is_empty()
            && b != u
        {
            return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
        }
        let precondition_rv = new
            .metadata()
            .resource_version
            .clone()
            .filter(|r| !r.is_empty());
        for _ in 0..MAX_RETRIES {
            let Some((old, entry)) = self.current(ns, name).await? else {
                if def.allow_create_on_update && subresource.is_none() {
                    if precondition_rv.is_some() {
                        return Err(ApiError::not_found(&def.group_resource(), name));
                    }
                    let mut obj = new.clone();
                    obj.metadata_mut().name = Some(name.to_string());
                    let w = self.create(ctx, ns, obj).await?;
                    return Ok((w, true));
                }
                return Err(ApiError::not_found(&def.group_resource(), name));
            };
            if let Some(rv) = &precondition_rv
                && *rv != entry.kv.mod_revision.to_string()
            {
                return Err(ApiError::Conflict {
                    resource: def.group_resource(),
                    name: name.to_string(),
                });
            }
            match self
                .try_update(ctx, new.clone(), &old, &entry, subresource)
                .await?
            {
                Some(w) => return Ok((w, false)),
                None if precondition_rv.is_some() => {
                    return Err(ApiError::Conflict {
                        resource: def.group_resource(),
                        name: name.to_string(),
                    });
                }
                None => continue,
            }
        }
        Err(ApiError::Conflict {
            resource: def.group_resource(),
            name: name.to_string(),
        })
    }

    /// Reads the current object, lets `f` compute the new one (None = leave it), and writes it
    /// with compare-and-swap, retrying on conflicts. For the server's own controllers and for
    /// patches.
    pub async fn guaranteed_update<F>(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        mut f: F,
    ) -> Result<Option<Written>, ApiError>
    where
        F: FnMut(&S::Obj, &Entry) -> Result<Option<S::Obj>, ApiError>,
    {
        for _ in 0..MAX_RETRIES {
            let (old, entry) = self.get(ns, name).await?;
            let Some(new) = f(&old, &entry)? else {
                return Ok(None);
            };
            if let Some(rv) = new
                .metadata()
                .resource_version
                .as_deref()
                .filter(|r| !r.is_empty())
                && rv != entry.kv.mod_revision.to_string()
            {
                return Err(ApiError::Conflict {
                    resource: self.def().group_resource(),
                    name: name.to_string(),
                });
            }
            if let Some(w) = self.try_update(ctx, new, &old, &entry, subresource).await? {
                return Ok(Some(w));
            }
        }
        Err(ApiError::Conflict {
            resource: self.def().group_resource(),
            name: name.to_string(),
        })
    }

    /// One compare-and-swap attempt; `Ok(None)` when the object changed underneath.
    async fn try_update(
        &self,
        ctx: &Ctx,
        mut new: S::Obj,
        old: &S::Obj,
        entry: &Entry,
        subresource: Option<&str>,
    ) -> Result<Option<Written>, ApiError> {
        let def = self.def();
        let name = object_name(old.metadata());
        // The cache keeps what clients see; without its resourceVersion it is the stored object
        // (read-time defaulting applied, as upstream's "old object" of an update).
        let mut old_value: Value =
            serde_json::from_slice(&entry.output).map_err(|e| ApiError::Internal(e.to_string()))?;
        strip_resource_version(&mut old_value);
        // System metadata is the server's.
        {
            let (nm, om) = (new.metadata_mut(), old.metadata());
            if let (Some(nu), Some(ou)) = (nm.uid.as_deref(), om.uid.as_deref())
                && !nu.is_empty()
                && nu != ou
            {
                return Err(ApiError::ConflictWith {
                    resource: def.group_resource(),
                    name: name.clone(),
                    message: format!(
                        "Precondition failed: UID in precondition: {nu}, UID in object meta: {ou}"
                    ),
                });
            }
            nm.name = om.name.clone();
            nm.namespace = om.namespace.clone();
            nm.uid = om.uid.clone();
            nm.creation_timestamp = om.creation_timestamp.clone();
            nm.deletion_timestamp = om.deletion_timestamp.clone();
            nm.deletion_grace_period_seconds = om.deletion_grace_period_seconds;
            nm.generate_name = om.generate_name.clone().or(nm.generate_name.take());
            nm.resource_version = None;
            nm.self_link = None;
        }
        let mut new_value =
            serde_json::to_value(&new).map_err(|e| ApiError::Internal(e.to_string()))?;
        match subresource {
            Some("finalize") => {
                // Only spec.finalizers come from the request.
                let fins = new_value["spec"]["finalizers"].clone();
                let mut merged = old_value.clone();
                merged["spec"]["finalizers"] = fins;
                new_value = merged;
            }
            Some("status") => {
                // Only status (and metadata) come from the request.
                let status = strip_status(&mut new_value);
                let meta = new_value.get("metadata").cloned();
                let mut merged = old_value.clone();
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                    if let Some(s) = status {
                        m.insert("status".into(), s);
                    }
                    if let Some(meta) = meta {
                        m.insert("metadata".into(), meta);
                    }
                }
                new_value = merged;
            }
            // `pods/binding`: a storage-level update (upstream's `GuaranteedUpdate` under
            // `BindingREST`): spec, metadata and status all come from the caller.
            Some("binding") => {}
            _ if def.has_status() => {
                strip_status(&mut new_value);
                if let Some(s) = old_value.get("status") {
                    new_value
                        .as_object_mut()
                        .expect("object")
                        .insert("status".into(), s.clone());
                }
            }
            _ => {}
        }
        let mut new: S::Obj =
            serde_json::from_value(new_value).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut old_read = old.clone();
        self.strategy.on_read(&mut old_read);
        self.strategy.admit(ctx, &new, Some(&old_read))?;
        // As upstream's store: BeginUpdate (allocations) runs before PrepareForUpdate and
        // validation.
        let hooks = if subresource.is_none() {
            self.strategy.begin_update(ctx, &mut new, &old_read)?
        } else {
            WriteHooks::default()
        };
        if subresource.is_none() {
            self.strategy.prepare_for_update(&mut new, &old_read);
        }
        let mut errs = validate_object_meta_update(new.metadata(), old.metadata());
        for e in validate_object_meta(new.metadata(), def.namespaced, def.name_rule) {
            if !errs.contains(&e) {
                errs.push(e);
            }
        }
        match subresource {
            Some("status") => {
                errs.extend(self.strategy.validate_status_update(ctx, &new, &old_read))
            }
            // Upstream's binding writes below the strategy: no update validation (it would
            // refuse the change of the immutable `spec.nodeName`).
            Some("binding") => {}
            _ => errs.extend(self.strategy.validate_update(ctx, &new, &old_read)),
        }
        if !errs.is_empty() {
            hooks.abort();
            return Err(self.invalid(&name, errs));
        }
        let mut value =
            serde_json::to_value(&new).map_err(|e| ApiError::Internal(e.to_string()))?;
        if comparable(&value) == comparable(&old_value) {
            hooks.abort();
            return Ok(Some(Written {
                output: entry.output.clone(),
                revision: entry.kv.mod_revision,
            }));
        }
        if !ctx.managed_fields_set() {
            update_managed_fields(
                Some(&old_value),
                &mut value,
                &ctx.field_manager,
                &time_string(now()),
                subresource,
            );
        }
        let bytes = stored_bytes(&value)?;
        if ctx.dry_run {
            hooks.abort();
            return Ok(Some(Written {
                output: respond(&mut value, entry.kv.mod_revision)?,
                revision: entry.kv.mod_revision,
            }));
        }
        let key = entry.kv.key.clone();
        // Finalization (upstream's `shouldDeleteDuringUpdate`): an object whose delete request
        // has come, whose last finalizer went away and whose grace period is over (none, or
        // 0) is removed. A pod in its grace period is not: its kubelet's status updates while
        // it stops the containers must not end it before the kubelet deletes it with grace 0.
        let grace_over = old
            .metadata()
            .deletion_grace_period_seconds
            .is_none_or(|g| g == 0);
        let finished = old.metadata().deletion_timestamp.is_some()
            && grace_over
            && new.metadata().deletion_timestamp.is_some()
            && !self.pending_finalizers(&new);
        let mut hooks = hooks;
        let mut txn = Txn::new().when(Compare::mod_revision(&key, entry.kv.mod_revision));
        if finished {
            hooks.abort();
            hooks = self.strategy.begin_delete(ctx, &new)?;
            txn = txn.delete(&key);
        } else {
            txn = txn.put(&key, bytes.clone());
        }
        match self.commit(txn, hooks).await? {
            Ok(revision) => Ok(Some(Written {
                output: respond(&mut value, revision)?,
                revision,
            })),
            Err(_) => Ok(None),
        }
    }

    /// Commits `txn` together with the hooks' storage work, then runs the hooks' commit or
    /// abort callbacks. `Ok(Err(i))`: compare `i` failed and nothing was written.
    async fn commit(
        &self,
        mut txn: Txn,
        hooks: WriteHooks,
    ) -> Result<Result<Revision, usize>, ApiError> {
        txn.compares.extend(hooks.compares.iter().cloned());
        txn.ops.extend(hooks.ops.iter().cloned());
        match self.storage.txn(txn).await {
            Ok(TxnResult::Committed { revision }) => {
                hooks.commit();
                Ok(Ok(revision))
            }
            Ok(TxnResult::Failed { index, .. }) => {
                hooks.abort();
                Ok(Err(index))
            }
            Err(e) => {
                hooks.abort();
                Err(e)
            }
        }
    }

    fn pending_finalizers(&self, obj: &S::Obj) -> bool {
        obj.metadata()
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
            || self.strategy_pending(obj)
    }

    fn strategy_pending(&self, obj: &S::Obj) -> bool {
        // Namespaces keep `spec.finalizers` too.
        let v = serde_json::to_value(obj).unwrap_or(Value::Null);
        v["spec"]["finalizers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    }

    /// DELETE.
    pub async fn delete(
        &self,
        ctx: &Ctx,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Deleted, ApiError> {
        let def = self.def();
        for _ in 0..MAX_RETRIES {
            let (obj, entry) = self.get(ns, name).await?;
            self.strategy.admit_delete(ctx, &obj)?;
            let meta = obj.metadata();
            if let Some(uid) = &opts.precondition_uid
                && meta.uid.as_deref() != Some(uid.as_str())
            {
                return Err(ApiError::ConflictWith {
                    resource: def.group_resource(),
                    name: name.to_string(),
                    message: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta.uid.as_deref().unwrap_or("")
                    ),
                });
            }
            if let Some(rv) = &opts.precondition_rv
                && *rv != entry.kv.mod_revision.to_string()
            {
                return Err(ApiError::ConflictWith {
                    resource: def.group_resource(),
                    name: name.to_string(),
                    message: format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        entry.kv.mod_revision
                    ),
                });
            }
            let grace = self
                .strategy
                .grace_period(&obj, opts.grace_period_seconds)
                .filter(|&g| g > 0);
            let current_fins = meta.finalizers.clone().unwrap_or_default();
            let gc_fins = gc_finalizers(&current_fins, opts);
            let finalizers =
                self.pending_finalizers(&obj) || gc_fins.as_ref().is_some_and(|f| !f.is_empty());
            if finalizers || grace.is_some() {
                // Mark for deletion and let finalizers / the kubelet finish it.
                let mut marked = obj.clone();
                let now = now();
                let m = marked.metadata_mut();
                let already = m.deletion_timestamp.is_some();
                let current_grace = m.deletion_grace_period_seconds.unwrap_or(0);
                let new_grace = grace.unwrap_or(0);
                if let Some(f) = gc_fins.clone() {
                    m.finalizers = (!f.is_empty()).then_some(f);
                }
                if already && gc_fins.is_none() && (grace.is_none() || new_grace >= current_grace) {
                    return Ok(Deleted::Pending(Written {
                        output: entry.output.clone(),
                        revision: entry.kv.mod_revision,
                    }));
                }
                if !already || (grace.is_some() && new_grace < current_grace) {
                    m.deletion_timestamp =
                        Some(Time(now + jiff::SignedDuration::from_secs(new_grace)));
                    m.deletion_grace_period_seconds = Some(new_grace);
                }
                self.strategy.on_delete_marked(&mut marked);
                let mut value =
                    serde_json::to_value(&marked).map_err(|e| ApiError::Internal(e.to_string()))?;
                if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                let bytes = stored_bytes(&value)?;
                if ctx.dry_run {
                    return Ok(Deleted::Pending(Written {
                        output: respond(&mut value, entry.kv.mod_revision)?,
                        revision: entry.kv.mod_revision,
                    }));
                }
                let txn = Txn::new()
                    .when(Compare::mod_revision(&entry.kv.key, entry.kv.mod_revision))
                    .put(&entry.kv.key, bytes.clone());
                match self.storage.txn(txn).await? {
                    TxnResult::Committed { revision } => {
                        return Ok(Deleted::Pending(Written {
                            output: respond(&mut value, revision)?,
                            revision,
                        }));
                    }
                    TxnResult::Failed { .. } => continue,
                }
            }
            let hooks = self.strategy.begin_delete(ctx, &obj)?;
            if ctx.dry_run {
                hooks.abort();
                return Ok(Deleted::Gone(Written {
                    output: entry.output.clone(),
                    revision: entry.kv.mod_revision,
                }));
            }
            let txn = Txn::new()
                .when(Compare::mod_revision(&entry.kv.key, entry.kv.mod_revision))
                .delete(&entry.kv.key);
            if let Ok(revision) = self.commit(txn, hooks).await? {
                return Ok(Deleted::Gone(Written {
                    output: self.output(&entry.output, revision)?,
                    revision,
                }));
            }
        }
        Err(ApiError::Conflict {
            resource: def.group_resource(),
            name: name.to_string(),
        })
    }
}

fn strip_resource_version(v: &mut Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
}

/// The bytes to store: the object without `resourceVersion`, no spare capacity.
fn stored_bytes(value: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value)
        .map(crate::api::exact_bytes)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// What the client gets after a write: the written object at its revision.
fn respond(value: &mut Value, revision: Revision) -> Result<Bytes, ApiError> {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), revision.to_string().into());
    }
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Extra operations used by strategies.
pub fn put_op(key: String, value: &impl serde::Serialize) -> Result<Op, ApiError> {
    Ok(Op::Put {
        key,
        value: Bytes::from(
            serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?,
        ),
    })
}
