//! Resource request handling: route a parsed request to its resource, authorize it, run the
//! verb, and render the answer (JSON object, list, `Table`, `Status`, or a watch stream).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dualstack_apimachinery::decode::{BodyFormat, MAX_BODY_BYTES, decode_text, duplicate_fields};
use dualstack_apimachinery::patch::PatchType;
use dualstack_apimachinery::status::{ApiError, success_status};
use dualstack_store::StoreError;
use dualstack_store::cache::{Entry, ListPage};
use serde_json::{Value, json};

use crate::api::{IncludeObject, ListOpts, ResourceApi};
use crate::auth::{Attributes, NodeRestriction, UserInfo, authorize, forbidden_message};
use crate::registry::{DeleteOpts, Deleted, Storage, Written};
use crate::request::{
    ContinueToken, ListParams, Query, Rendering, RequestInfo, dry_run, field_validation,
    list_params, rendering,
};
use crate::resource::{Ctx, ResourceDef};
use crate::watch;

/// All served resources, by (group, version, plural).
#[derive(Clone)]
pub struct Resources {
    by_path: HashMap<(String, String, String), Arc<dyn ResourceApi>>,
    /// In discovery order.
    pub list: Vec<Arc<dyn ResourceApi>>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("count", &self.list.len())
            .finish()
    }
}

impl Resources {
    /// Indexes the resources.
    pub fn new(list: Vec<Arc<dyn ResourceApi>>) -> Self {
        let by_path = list
            .iter()
            .map(|r| {
                let d = r.def();
                (
                    (
                        d.group.to_string(),
                        d.version.to_string(),
                        d.plural.to_string(),
                    ),
                    r.clone(),
                )
            })
            .collect();
        Self { by_path, list }
    }

    /// The resource at a path.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<dyn ResourceApi>> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// The resource by kind.
    pub fn by_plural(&self, plural: &str) -> Option<&Arc<dyn ResourceApi>> {
        self.list.iter().find(|r| r.def().plural == plural)
    }
}

/// Everything a resource request needs.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The resources.
    pub resources: Resources,
    /// The storage (for consistent reads).
    pub storage: Storage,
}

/// Serializes any JSON answer.
pub fn json_response(code: StatusCode, body: impl Into<Body>, warnings: &[String]) -> Response {
    let mut resp = Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("response");
    for w in warnings {
        let text = format!("299 - {}", dualstack_apimachinery::field::go_quote(w));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// A `Status` answer for an error.
pub fn error_response(e: &ApiError) -> Response {
    let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(code, body, &[]);
    if let ApiError::ResourceVersionTooLarge { .. } = e {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

/// An [`ApiError`] as an axum response.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

fn verb_of(method: &Method, info: &RequestInfo, watch: bool) -> &'static str {
    match (method.as_str(), info.name.is_some()) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", false) => "create",
        // A named subresource that is created (`pods/NAME/eviction`).
        ("POST", true) if info.subresource.is_some() => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// The field manager of a write: `fieldManager`, else the User-Agent product, else `unknown`.
fn field_manager(q: &Query, headers: &HeaderMap) -> Result<(String, bool), ApiError> {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        if m.len() > 128 {
            return Err(ApiError::BadRequest(
                "fieldManager: Too long: must have at most 128 bytes".into(),
            ));
        }
        return Ok((m.clone(), true));
    }
    let ua = headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let product = prefix_from_user_agent(&ua);
    Ok((
        if product.is_empty() {
            "unknown".to_string()
        } else {
            product
        },
        false,
    ))
}

/// upstream's `prefixFromUserAgent`: the User-Agent up to its first `/`, without unprintable
/// characters, cut to the 128 bytes a field manager may have (`kubectl/v1.33.0 (linux/amd64)
/// kubernetes/abc` → `kubectl`).
pub fn prefix_from_user_agent(user_agent: &str) -> String {
    let head = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    // Go's unicode.IsPrint: graphic characters and the ASCII space.
    for c in head
        .chars()
        .filter(|&c| c == ' ' || !(c.is_control() || c.is_whitespace()))
    {
        if out.len() + c.len_utf8() > 128 {
            break;
        }
        out.push(c);
    }
    out
}

fn build_ctx(user: &UserInfo, q: &Query, headers: &HeaderMap) -> Result<Ctx, ApiError> {
    let (manager, explicit) = field_manager(q, headers)?;
    Ok(Ctx {
        user: user.clone(),
        dry_run: dry_run(q)?,
        field_manager: manager,
        field_manager_explicit: explicit,
        field_validation: field_validation(q)?,
        force: crate::request::bool_param(q, "force")?,
        legacy_fields: Default::default(),
        managed_fields_done: false,
        warnings: Vec::new(),
    })
}

/// Handles one resource request.
pub async fn handle(
    rc: &RequestContext,
    user: &UserInfo,
    method: Method,
    info: RequestInfo,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A deprecated kind warns on every request, failed ones included (upstream adds the
    // warning before the handler runs).
    let (major, minor) = crate::discovery::major_minor();
    let deprecation = rc
        .resources
        .get(&info.group, &info.version, &info.resource)
        .and_then(|api| api.def().deprecation_warning(major, minor));
    let mut resp = match handle_inner(rc, user, method, info, q, headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Some(w) = deprecation {
        let text = format!("299 - {}", dualstack_apimachinery::field::go_quote(&w));
        resp.headers_mut().append(
            header::WARNING,
            HeaderValue::from_str(&text).expect("a deprecation warning is a valid header"),
        );
    }
    resp
}

async fn handle_inner(
    rc: &RequestContext,
    user: &UserInfo,
    method: Method,
    info: RequestInfo,
    q: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if let Some(r) = crate::authz::review(rc, user, &method, &info, &headers, &body) {
        return r;
    }
    if info.group.is_empty() && info.resource == BINDINGS {
        return legacy_binding(rc, user, &method, &info, &q, &headers, &body).await;
    }
    let api = rc
        .resources
        .get(&info.group, &info.version, &info.resource)
        .ok_or(ApiError::UnknownPath)?
        .clone();
    let def = api.def().clone();
    if let Some(sub) = info.subresource.as_deref()
        && !def.subresources.contains(&sub)
    {
        return Err(ApiError::UnknownPath);
    }
    if !def.namespaced && info.namespace.is_some() {
        return Err(ApiError::UnknownPath);
    }
    let params =
        if matches!(method, Method::GET | Method::HEAD | Method::DELETE) && info.name.is_none() {
            Some(list_params(&q)?)
        } else {
            None
        };
    let watch = params.as_ref().is_some_and(|p| p.watch);
    let verb = verb_of(&method, &info, watch);
    let eviction = info.subresource.as_deref() == Some(EVICTION);
    let binding = info.subresource.as_deref() == Some(BINDING);
    let create_only = eviction || binding;
    if verb == "unknown"
        || (create_only && verb != "create")
        || (info.subresource.is_some()
            && !create_only
            && !matches!(verb, "get" | "update" | "patch"))
    {
        return Err(ApiError::MethodNotAllowed);
    }
    let node_sel = params
        .as_ref()
        .and_then(|p| p.fields.required_value("spec.nodeName"))
        .map(str::to_string);
    // As upstream's RequestInfoFactory: a list or watch narrowed by `metadata.name=` is
    // authorized as a request for that name.
    let name_sel = params
        .as_ref()
        .filter(|_| matches!(verb, "list" | "watch"))
        .and_then(|p| p.fields.required_value("metadata.name"))
        .map(str::to_string);
    let attrs = Attributes {
        verb,
        group: &info.group,
        resource: &info.resource,
        subresource: info.subresource.as_deref(),
        namespace: info.namespace.as_deref(),
        name: info.name.as_deref().or(name_sel.as_deref()),
        node_name_selector: node_sel.as_deref(),
    };
    if let Err(reason) = authorize(user, &attrs, &crate::authz::CacheGraph::new(rc)) {
        return Err(ApiError::Forbidden(forbidden_message(
            user, &attrs, &reason,
        )));
    }
    let ns = info.namespace.as_deref();
    if def.namespaced && ns.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::UnknownPath);
    }
    let render = rendering(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let include = match q.get("includeObject").map(String::as_str) {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    let node_restricted =
        user.node_name().is_some() && def.plural == "pods" && def.group.is_empty();
    if info.subresource.as_deref() == Some(SCALE) {
        let name = info.name.as_deref().expect("named");
        return scale(&api, user, verb, ns, name, &q, &headers, &body).await;
    }
    match verb {
        "get" => {
            let name = info.name.as_deref().expect("named");
            let entry = api.get(ns, name).await?;
            if node_restricted
                && let Some(reason) =
                    NodeRestriction::pod(user, api.node_name(&entry.output).as_deref())
            {
                return Err(ApiError::Forbidden(forbidden_message(
                    user, &attrs, &reason,
                )));
            }
            if render.table {
                let rows = api.rows_for_output(&entry.output, include)?;
                let t = table(
                    &def,
                    rows,
                    &entry.kv.mod_revision.to_string(),
                    None,
                    None,
                    render,
                );
                return Ok(json_response(
                    StatusCode::OK,
                    serde_json::to_vec(&t).unwrap_or_default(),
                    &[],
                ));
            }
            Ok(json_response(StatusCode::OK, entry.output.clone(), &[]))
        }
        "list" => {
            list(
                rc,
                &api,
                &def,
                ns,
                params.expect("list params"),
                render,
                include,
            )
            .await
        }
        "watch" => {
            let p = params.expect("watch params");
            check_fields(&def, &p)?;
            Ok(watch::serve(rc, api.clone(), ns, p, render, include).await)
        }
        "create" if binding => {
            let ctx = build_ctx(user, &q, &headers)?;
            let name = info.name.as_deref().expect("named");
            bind(&api, ctx, ns, name, &headers, &body).await
        }
        "create" if eviction => {
            let ctx = build_ctx(user, &q, &headers)?;
            let name = info.name.as_deref().expect("named");
            evict(&api, ctx, ns, name, &headers, &body).await
        }
        "create" => {
            let mut ctx = build_ctx(user, &q, &headers)?;
            let (value, dup) = decode_body(&headers, &body, &def)?;
            if node_restricted {
                return Err(ApiError::Forbidden(forbidden_message(
                    user,
                    &attrs,
                    "node may not create pods",
                )));
            }
            if user.node_name().is_some() && def.plural == "nodes" {
                let body_name = value["metadata"]["name"].as_str().unwrap_or("");
                if Some(body_name) != user.node_name() {
                    let reason = format!(
                        "node '{}' cannot create node '{body_name}'",
                        user.node_name().unwrap_or("")
                    );
                    return Err(ApiError::Forbidden(forbidden_message(
                        user, &attrs, &reason,
                    )));
                }
            }
            let w = api.create(&mut ctx, ns, value, &dup).await?;
            let code = StatusCode::CREATED;
            Ok(json_response(code, w.output, &ctx.warnings))
        }
        "update" => {
            let name = info.name.as_deref().expect("named");
            let mut ctx = build_ctx(user, &q, &headers)?;
            if node_restricted {
                check_pod_owner(&api, user, &attrs, ns, name).await?;
            }
            let (value, dup) = decode_body(&headers, &body, &def)?;
            let sub = info.subresource.as_deref();
            let (w, created) = api.update(&mut ctx, ns, name, sub, value, &dup).await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, w.output, &ctx.warnings))
        }
        "patch" => {
            let name = info.name.as_deref().expect("named");
            let mut ctx = build_ctx(user, &q, &headers)?;
            if node_restricted {
                check_pod_owner(&api, user, &attrs, ns, name).await?;
            }
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::from_content_type(ct)?;
            if body.len() > MAX_BODY_BYTES {
                return Err(ApiError::TooLarge(MAX_BODY_BYTES));
            }
            let patch: Value = match pt {
                PatchType::Apply => decode_text(BodyFormat::Yaml, &body)?,
                _ => serde_json::from_slice(&body)
                    .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?,
            };
            if pt == PatchType::Json && !patch.is_array() {
                return Err(ApiError::BadRequest(
                    "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
                ));
            }
            let sub = info.subresource.as_deref();
            let (w, created) = api.patch(&mut ctx, ns, name, sub, pt, patch).await?;
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, w.output, &ctx.warnings))
        }
        "delete" => {
            let name = info.name.as_deref().expect("named");
            let ctx = build_ctx(user, &q, &headers)?;
            if node_restricted {
                check_pod_owner(&api, user, &attrs, ns, name).await?;
            }
            let opts = delete_options(&q, &headers, &body)?;
            let ctx = Ctx {
                dry_run: ctx.dry_run || opts.1,
                ..ctx
            };
            match api.delete(&ctx, ns, name, &opts.0).await? {
                Deleted::Pending(w) => Ok(json_response(StatusCode::OK, w.output, &[])),
                Deleted::Gone(w) => Ok(deleted_response(&def, name, &w)),
            }
        }
        "deletecollection" => {
            let ctx = build_ctx(user, &q, &headers)?;
            let p = params.expect("params");
            check_fields(&def, &p)?;
            rc.storage.consistent().await?;
            let page = api
                .list(
                    ns,
                    &ListOpts {
                        at_revision: None,
                        labels: p.labels,
                        fields: p.fields,
                        limit: None,
                        continue_after: None,
                    },
                )
                .map_err(|e| watch_error(&e))?;
            let opts = delete_options(&q, &headers, &body)?;
            let ctx = Ctx {
                dry_run: ctx.dry_run || opts.1,
                ..ctx
            };
            let mut items = Vec::new();
            for e in &page.items {
                let v: Value = serde_json::from_slice(&e.output).unwrap_or(Value::Null);
                let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
                let item_ns = v["metadata"]["namespace"].as_str().map(str::to_string);
                match api.delete(&ctx, item_ns.as_deref(), &name, &opts.0).await {
                    Ok(Deleted::Gone(w)) | Ok(Deleted::Pending(w)) => items.push(w.output),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let rv = rc.storage.cache.revision().to_string();
            Ok(json_response(
                StatusCode::OK,
                list_body(&def, &rv, &items, None, None),
                &[],
            ))
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn check_pod_owner(
    api: &Arc<dyn ResourceApi>,
    user: &UserInfo,
    attrs: &Attributes<'_>,
    ns: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let entry = api.get(ns, name).await?;
    if let Some(reason) = NodeRestriction::pod(user, api.node_name(&entry.output).as_deref()) {
        return Err(ApiError::Forbidden(forbidden_message(user, attrs, &reason)));
    }
    Ok(())
}

fn deleted_response(def: &ResourceDef, name: &str, w: &Written) -> Response {
    if def.return_deleted_object {
        return json_response(StatusCode::OK, w.output.clone(), &[]);
    }
    let v: Value = serde_json::from_slice(&w.output).unwrap_or(Value::Null);
    let details = k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails {
        name: Some(name.to_string()),
        group: (!def.group.is_empty()).then(|| def.group.to_string()),
        kind: Some(def.plural.to_string()),
        uid: v["metadata"]["uid"].as_str().map(str::to_string),
        ..Default::default()
    };
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&success_status(Some(details))).unwrap_or_default(),
        &[],
    )
}

/// Decodes a create/update body; returns the value and duplicate field paths.
fn decode_body(
    headers: &HeaderMap,
    body: &[u8],
    def: &ResourceDef,
) -> Result<(Value, Vec<String>), ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = BodyFormat::from_content_type(ct)?;
    match format {
        BodyFormat::Protobuf => Ok((
            dualstack_apimachinery::protobuf::decode(body, &def.api_version(), def.kind)?,
            Vec::new(),
        )),
        BodyFormat::Json => Ok((decode_text(format, body)?, duplicate_fields(body))),
        BodyFormat::Yaml => Ok((decode_text(format, body)?, Vec::new())),
    }
}

/// Parses `DeleteOptions` from the query and body (JSON, YAML or protobuf, as kubectl 1.32+
/// sends it); the bool is `dryRun`.
fn delete_options(
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(DeleteOpts, bool), ApiError> {
    let mut opts = DeleteOpts::default();
    if let Some(g) = q.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts.propagation_policy = Some(p.clone());
    }
    if let Some(o) = q.get("orphanDependents") {
        opts.orphan_dependents = Some(o == "true");
    }
    let mut dry = false;
    if !body.is_empty() {
        let v = decode_delete_options_body(headers, body)?;
        dry = apply_delete_options(&mut opts, &v);
    }
    validate_propagation(&opts)?;
    clamp_grace_period(&mut opts);
    Ok((opts, dry))
}

/// The JSON of a `DeleteOptions` body.
fn decode_delete_options_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = BodyFormat::from_content_type(ct).unwrap_or(BodyFormat::Json);
    if format == BodyFormat::Protobuf || body.starts_with(dualstack_apimachinery::protobuf::MAGIC) {
        return dualstack_apimachinery::protobuf::decode_delete_options(body);
    }
    serde_json::from_slice(body)
        .or_else(|_| decode_text(BodyFormat::Yaml, body))
        .map_err(|e| ApiError::BadRequest(format!("error decoding DeleteOptions: {e}")))
}

/// Copies the options of a `DeleteOptions` JSON value into `opts`; returns `dryRun`.
fn apply_delete_options(opts: &mut DeleteOpts, v: &Value) -> bool {
    if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = v.get("preconditions") {
        opts.precondition_uid = p.get("uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_rv = p
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation_policy = Some(p.to_string());
    }
    if let Some(o) = v.get("orphanDependents").and_then(Value::as_bool) {
        opts.orphan_dependents = Some(o);
    }
    v.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|x| x == "All"))
}

/// upstream's `ValidateDeleteOptions` of the propagation options.
fn validate_propagation(opts: &DeleteOpts) -> Result<(), ApiError> {
    use dualstack_apimachinery::field::{FieldError, Path};
    let mut errors = Vec::new();
    if opts.orphan_dependents.is_some() && opts.propagation_policy.is_some() {
        errors.push(FieldError::invalid(
            &Path::new("propagationPolicy"),
            opts.propagation_policy.clone().unwrap_or_default(),
            "orphanDependents and deletionPropagation cannot be both set",
        ));
    }
    if let Some(p) = opts.propagation_policy.as_deref()
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        errors.push(FieldError::not_supported(
            &Path::new("propagationPolicy"),
            p,
            &["Background", "Foreground", "Orphan", "nil"],
        ));
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: dualstack_apimachinery::status::GroupKind::new("meta.k8s.io", "DeleteOptions"),
        name: String::new(),
        errors,
    })
}

fn clamp_grace_period(opts: &mut DeleteOpts) {
    if let Some(g) = opts.grace_period_seconds
        && g < 0
    {
        opts.grace_period_seconds = Some(1);
    }
}

/// The `pods/eviction` subresource.
const EVICTION: &str = "eviction";

/// `POST pods/NAME/eviction` with a `policy/v1` Eviction (JSON, YAML or protobuf): as upstream's
/// `EvictionREST` with no PodDisruptionBudget in the way, the pod is deleted with the eviction's
/// `deleteOptions` and the answer is a `Success` Status with code 201.
async fn evict(
    api: &Arc<dyn ResourceApi>,
    ctx: Ctx,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let eviction = match BodyFormat::from_content_type(ct)? {
        BodyFormat::Protobuf => {
            dualstack_apimachinery::protobuf::decode(body, "policy/v1", "Eviction")?
        }
        format => decode_text(format, body)?,
    };
    let kind = eviction["kind"].as_str().unwrap_or("");
    let av = eviction["apiVersion"].as_str().unwrap_or("");
    if !matches!(av, "policy/v1" | "policy/v1beta1") || kind != "Eviction" {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type Eviction): {av}, Kind={kind}"
        )));
    }
    if eviction["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::BadRequest(
            "name in URL does not match name in Eviction object".into(),
        ));
    }
    if let Some(body_ns) = eviction["metadata"]["namespace"].as_str()
        && !body_ns.is_empty()
        && Some(body_ns) != ns
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    let mut opts = DeleteOpts::default();
    let dry = eviction
        .get("deleteOptions")
        .is_some_and(|d| apply_delete_options(&mut opts, d));
    clamp_grace_period(&mut opts);
    let ctx = Ctx {
        dry_run: ctx.dry_run || dry,
        ..ctx
    };
    api.delete(&ctx, ns, name, &opts).await?;
    let status = k8s_openapi::apimachinery::pkg::apis::meta::v1::Status {
        code: Some(201),
        ..success_status(None)
    };
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&status).unwrap_or_default(),
        &ctx.warnings,
    ))
}

/// The `scale` subresource of Deployments and ReplicaSets.
const SCALE: &str = "scale";

/// `GET/PUT/PATCH <workload>/NAME/scale`: an `autoscaling/v1` Scale view of `spec.replicas`
/// (upstream's `ScaleREST`); a write changes only `spec.replicas` of the object, through its
/// normal update (so the generation moves), with the Scale's `resourceVersion` as precondition.
#[allow(clippy::too_many_arguments)]
async fn scale(
    api: &Arc<dyn ResourceApi>,
    user: &UserInfo,
    verb: &str,
    ns: Option<&str>,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    use dualstack_apimachinery::field::{FieldError, Path};
    let entry = api.get(ns, name).await?;
    let current: Value = serde_json::from_slice(&entry.output)
        .map_err(|e| ApiError::Internal(format!("decoding stored object: {e}")))?;
    let current_scale = crate::kinds::replicaset::scale_of(&current);
    if verb == "get" {
        return Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&current_scale).unwrap_or_default(),
            &[],
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let wanted: Value = if verb == "patch" {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let patch_value: Value = serde_json::from_slice(body)
            .or_else(|_| decode_text(BodyFormat::Yaml, body))
            .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
        let err =
            |e: dualstack_apimachinery::patch::PatchError| ApiError::BadRequest(e.to_string());
        match PatchType::from_content_type(ct)? {
            PatchType::Json => {
                dualstack_apimachinery::patch::json_patch(&current_scale, &patch_value)
                    .map_err(err)?
            }
            PatchType::Strategic => dualstack_apimachinery::patch::strategic_merge_patch(
                &current_scale,
                &patch_value,
                "autoscaling/v1",
                "Scale",
            )
            .map_err(err)?,
            PatchType::Merge | PatchType::Apply => {
                dualstack_apimachinery::patch::merge_patch(&current_scale, &patch_value)
            }
        }
    } else {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match BodyFormat::from_content_type(ct)? {
            BodyFormat::Protobuf => {
                dualstack_apimachinery::protobuf::decode(body, "autoscaling/v1", "Scale")?
            }
            f => decode_text(f, body)?,
        }
    };
    let replicas = wanted["spec"]["replicas"].as_i64().unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::Invalid {
            kind: dualstack_apimachinery::status::GroupKind::new("autoscaling", "Scale"),
            name: name.to_string(),
            errors: vec![FieldError::invalid(
                &Path::new("spec").child("replicas"),
                replicas,
                "must be greater than or equal to 0",
            )],
        });
    }
    let mut patch = json!({"spec": {"replicas": replicas}});
    if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
    {
        patch["metadata"] = json!({"resourceVersion": rv});
    }
    let mut ctx = build_ctx(user, q, headers)?;
    let (w, _) = api
        .patch(&mut ctx, ns, name, None, PatchType::Merge, patch)
        .await?;
    let updated: Value = serde_json::from_slice(&w.output)
        .map_err(|e| ApiError::Internal(format!("decoding stored object: {e}")))?;
    Ok(json_response(
        StatusCode::OK,
        serde_json::to_vec(&crate::kinds::replicaset::scale_of(&updated)).unwrap_or_default(),
        &ctx.warnings,
    ))
}

/// The `pods/binding` subresource.
const BINDING: &str = "binding";
/// The legacy `bindings` resource (`POST namespaces/NS/bindings`, the binding's name is the
/// pod's).
pub const BINDINGS: &str = "bindings";

/// `POST namespaces/NS/bindings`: upstream's `LegacyBindingREST`, the binding of the pod named
/// in the body. Authorized as `create` on `bindings`.
async fn legacy_binding(
    rc: &RequestContext,
    user: &UserInfo,
    method: &Method,
    info: &RequestInfo,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if info.version != "v1" || info.subresource.is_some() {
        return Err(ApiError::UnknownPath);
    }
    let Some(ns) = info.namespace.as_deref() else {
        return Err(ApiError::UnknownPath);
    };
    if *method != Method::POST || info.name.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    let attrs = Attributes {
        verb: "create",
        group: "",
        resource: BINDINGS,
        namespace: Some(ns),
        ..Default::default()
    };
    if let Err(reason) = authorize(user, &attrs, &crate::authz::CacheGraph::new(rc)) {
        return Err(ApiError::Forbidden(forbidden_message(
            user, &attrs, &reason,
        )));
    }
    let api = rc
        .resources
        .get("", "v1", "pods")
        .ok_or(ApiError::UnknownPath)?
        .clone();
    let ctx = build_ctx(user, q, headers)?;
    let binding = decode_binding(headers, body)?;
    let name = binding["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    bind_decoded(&api, ctx, Some(ns), &name, binding).await
}

/// Decodes a `v1` Binding body (JSON, YAML or protobuf).
fn decode_binding(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let binding = match BodyFormat::from_content_type(ct)? {
        BodyFormat::Protobuf => dualstack_apimachinery::protobuf::decode(body, "v1", "Binding")?,
        format => decode_text(format, body)?,
    };
    let kind = binding["kind"].as_str().unwrap_or("");
    let av = binding["apiVersion"].as_str().unwrap_or("");
    if av != "v1" || kind != "Binding" {
        return Err(ApiError::BadRequest(format!(
            "the object provided is unrecognized (must be of type Binding): {av}, Kind={kind}"
        )));
    }
    Ok(binding)
}

/// `POST pods/NAME/binding` with a `v1` Binding.
async fn bind(
    api: &Arc<dyn ResourceApi>,
    ctx: Ctx,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let binding = decode_binding(headers, body)?;
    bind_decoded(api, ctx, ns, name, binding).await
}

/// Upstream's `BindingREST.Create`: the namespace and name must match the request's,
/// `ValidatePodBinding`, then [`crate::kinds::pod::assign_pod`] in a guaranteed update with the
/// binding's `uid`/`resourceVersion` as preconditions. Its refusals are 409s on `pods/binding`;
/// success is a `Success` Status with code 201.
async fn bind_decoded(
    api: &Arc<dyn ResourceApi>,
    ctx: Ctx,
    ns: Option<&str>,
    name: &str,
    binding: Value,
) -> Result<Response, ApiError> {
    if let Some(body_ns) = binding["metadata"]["namespace"].as_str()
        && !body_ns.is_empty()
        && Some(body_ns) != ns
    {
        return Err(ApiError::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    if binding["metadata"]["name"].as_str().unwrap_or("") != name {
        return Err(ApiError::BadRequest(
            "name in URL does not match name in Binding object".into(),
        ));
    }
    let target = &binding["target"];
    let kind = target["kind"].as_str().unwrap_or("");
    let node = target["name"].as_str().unwrap_or("").to_string();
    let mut errs = Vec::new();
    if !kind.is_empty() && kind != "Node" {
        errs.push(format!(
            "target.kind: Unsupported value: {}: supported values: \"Node\", \"<empty>\"",
            dualstack_apimachinery::field::go_quote(kind)
        ));
    }
    if node.is_empty() {
        errs.push("target.name: Required value".to_string());
    }
    match errs.len() {
        0 => {}
        1 => return Err(ApiError::Unknown(errs.remove(0))),
        _ => return Err(ApiError::Unknown(format!("[{}]", errs.join(", ")))),
    }
    if name.is_empty() {
        return Err(ApiError::BadRequest("Name parameter required.".into()));
    }
    let uid = binding["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let rv = binding["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let annotations = binding["metadata"]["annotations"].as_object().cloned();
    let now = crate::registry::time_string(crate::registry::now());
    let mut refused = None;
    let mut f = |mut pod: Value| -> Result<Option<Value>, ApiError> {
        if let Err(e) = crate::kinds::pod::assign_pod(&mut pod, &node, annotations.as_ref(), &now) {
            refused = Some(e.to_string());
            return Ok(None);
        }
        if !uid.is_empty() {
            pod["metadata"]["uid"] = uid.clone().into();
        }
        if !rv.is_empty() {
            pod["metadata"]["resourceVersion"] = rv.clone().into();
        }
        Ok(Some(pod))
    };
    api.update_stored(&ctx, ns, name, &mut f).await?;
    if let Some(message) = refused {
        return Err(ApiError::ConflictWith {
            resource: dualstack_apimachinery::status::GroupResource::new("", "pods/binding"),
            name: name.to_string(),
            message,
        });
    }
    let status = k8s_openapi::apimachinery::pkg::apis::meta::v1::Status {
        code: Some(201),
        ..success_status(None)
    };
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::to_vec(&status).unwrap_or_default(),
        &ctx.warnings,
    ))
}

fn check_fields(def: &ResourceDef, p: &ListParams) -> Result<(), ApiError> {
    for r in &p.fields.0 {
        if !def.supports_field(&r.field) {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {}",
                r.field
            )));
        }
    }
    Ok(())
}

/// The consistent list point for a list or watch request: waits for the cache as the
/// `resourceVersion` semantics require.
pub async fn list_revision(
    storage: &Storage,
    rv: Option<&str>,
    _rv_match: Option<&str>,
) -> Result<i64, ApiError> {
    match rv {
        None => storage.consistent().await,
        Some("0") => Ok(storage.cache.revision()),
        Some(r) => {
            let n: i64 = r
                .parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {r}")))?;
            if !storage.cache.wait_for(n, Duration::from_secs(3)).await {
                return Err(ApiError::ResourceVersionTooLarge {
                    requested: n,
                    current: storage.cache.revision(),
                });
            }
            Ok(n)
        }
    }
}

fn list_body(
    def: &ResourceDef,
    rv: &str,
    items: &[Bytes],
    cont: Option<String>,
    remaining: Option<usize>,
) -> Vec<u8> {
    let mut meta = json!({ "resourceVersion": rv });
    if let Some(c) = cont {
        meta["continue"] = c.into();
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = r.into();
    }
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 128);
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(def.kind.as_bytes());
    out.extend_from_slice(b"List\",\"apiVersion\":\"");
    out.extend_from_slice(def.api_version().as_bytes());
    out.extend_from_slice(b"\",\"metadata\":");
    out.extend_from_slice(meta.to_string().as_bytes());
    out.extend_from_slice(b",\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(it);
    }
    out.extend_from_slice(b"]}");
    out
}

/// A `Table` object.
pub fn table(
    def: &ResourceDef,
    rows: Vec<Value>,
    rv: &str,
    cont: Option<String>,
    remaining: Option<usize>,
    r: Rendering,
) -> Value {
    let cols: Vec<Value> = def
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let mut meta = json!({ "resourceVersion": rv });
    if let Some(c) = cont {
        meta["continue"] = c.into();
    }
    if let Some(n) = remaining {
        meta["remainingItemCount"] = n.into();
    }
    json!({
        "kind": "Table",
        "apiVersion": if r.table_v1beta1 { "meta.k8s.io/v1beta1" } else { "meta.k8s.io/v1" },
        "metadata": meta,
        "columnDefinitions": cols,
        "rows": rows,
    })
}

async fn list(
    rc: &RequestContext,
    api: &Arc<dyn ResourceApi>,
    def: &ResourceDef,
    ns: Option<&str>,
    p: ListParams,
    render: Rendering,
    include: IncludeObject,
) -> Result<Response, ApiError> {
    check_fields(def, &p)?;
    let (at, after) = match &p.continue_token {
        Some(t) => (Some(t.rv), Some(t.start.clone())),
        None if p.resource_version_match.as_deref() == Some("Exact") => {
            let rv = list_revision(&rc.storage, p.resource_version.as_deref(), None).await?;
            (Some(rv), None)
        }
        None => {
            list_revision(
                &rc.storage,
                p.resource_version.as_deref(),
                p.resource_version_match.as_deref(),
            )
            .await?;
            (None, None)
        }
    };
    let opts = ListOpts {
        labels: p.labels,
        fields: p.fields,
        limit: p.limit,
        continue_after: after,
        at_revision: at,
    };
    let page: ListPage = api.list(ns, &opts).map_err(|e| match e {
        StoreError::Compacted { requested, oldest } if p.continue_token.is_some() => {
            let _ = (requested, oldest);
            ApiError::Expired(CONTINUE_EXPIRED.into())
        }
        other => watch_error(&other),
    })?;
    let rv = page.revision;
    let cont = page
        .continue_after
        .as_ref()
        .map(|k| ContinueToken::encode(rv, k));
    let remaining = page.continue_after.as_ref().map(|_| page.remaining);
    if render.table {
        let rows = api.rows(&page.items, include)?;
        let t = table(def, rows, &rv.to_string(), cont, remaining, render);
        return Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(&t).unwrap_or_default(),
            &[],
        ));
    }
    let items: Vec<Bytes> = page
        .items
        .iter()
        .map(|e: &Arc<Entry>| e.output.clone())
        .collect();
    Ok(json_response(
        StatusCode::OK,
        list_body(def, &rv.to_string(), &items, cont, remaining),
        &[],
    ))
}

/// Upstream's message for a continue token whose snapshot is gone.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// Maps a cache watch error to the in-stream Status.
pub fn watch_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Compacted { requested, oldest } => {
            ApiError::Expired(format!("too old resource version: {requested} ({oldest})"))
        }
        other => ApiError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_manager_is_the_user_agent_product_as_upstream_cuts_it() {
        let long = "p".repeat(200);
        let cases = [
            ("kubectl/v1.33.0 (linux/amd64) kubernetes/abc", "kubectl"),
            (
                "kube-controller-manager/v1.33.0 (linux/amd64)",
                "kube-controller-manager",
            ),
            ("python-requests/2.31", "python-requests"),
            ("OpenAPI-Generator/33.1.0/python", "OpenAPI-Generator"),
            ("no slash at all", "no slash at all"),
            ("tab\tbell\u{7}/1", "tabbell"),
            ("/leading-slash", ""),
            ("", ""),
            (long.as_str(), &long[..128]),
        ];
        for (ua, want) in cases {
            assert_eq!(prefix_from_user_agent(ua), want, "{ua:?}");
        }
    }
}
