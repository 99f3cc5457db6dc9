//! The edge of [`crate::auth`]: the node graph answered from the watch cache, impersonation
//! headers, and the access reviews (`authorization.k8s.io/v1` SelfSubjectAccessReview,
//! SelfSubjectRulesReview and SubjectAccessReview, `authentication.k8s.io/v1`
//! SelfSubjectReview): create-only, never stored, answered by the same [`auth::authorize`]
//! every request goes through (`kubectl auth can-i`, `auth can-i --list`, `auth whoami`).

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use dualstack_apimachinery::decode::{BodyFormat, MAX_BODY_BYTES, decode_text};
use dualstack_apimachinery::selector::FieldSelector;
use dualstack_apimachinery::status::ApiError;
use dualstack_apimachinery::validation::NameRule;
use k8s_openapi::api::authentication::v1 as authn;
use k8s_openapi::api::authorization::v1 as authz;
use k8s_openapi::api::core::v1::Pod;

use crate::api::{ListOpts, ResourceApi};
use crate::auth::{
    self, Attributes, ImpersonationError, ImpersonationRequest, NodeGraph, UserInfo,
};
use crate::handlers::{RequestContext, json_response};
use crate::request::RequestInfo;
use crate::resource::ResourceDef;

/// The pods bound to a node, from the watch cache (`spec.nodeName` is an indexed field).
pub struct CacheGraph<'a> {
    pods: Option<&'a Arc<dyn ResourceApi>>,
}

impl std::fmt::Debug for CacheGraph<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheGraph").finish()
    }
}

impl<'a> CacheGraph<'a> {
    /// The graph of the served resources.
    pub fn new(rc: &'a RequestContext) -> Self {
        Self {
            pods: rc.resources.get("", "v1", "pods"),
        }
    }
}

impl NodeGraph for CacheGraph<'_> {
    fn pods_on_node(&self, node: &str, namespace: &str) -> Vec<Pod> {
        let Some(pods) = self.pods else {
            return Vec::new();
        };
        let Ok(fields) = FieldSelector::parse(&format!("spec.nodeName={node}")) else {
            return Vec::new();
        };
        let opts = ListOpts {
            fields,
            ..Default::default()
        };
        match pods.list(Some(namespace), &opts) {
            Ok(page) => page
                .items
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.output).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "listing pods for the node authorizer");
                Vec::new()
            }
        }
    }
}

const EXTRA_PREFIX: &str = "impersonate-extra-";

/// The `Impersonate-*` headers of a request (`Impersonate-Extra-<key>`: the key lower-cased and
/// percent-decoded, as upstream).
pub fn impersonation_request(headers: &HeaderMap) -> ImpersonationRequest {
    let text = |v: &header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let mut req = ImpersonationRequest {
        user: headers
            .get("impersonate-user")
            .map(text)
            .filter(|u| !u.is_empty()),
        uid: headers
            .get("impersonate-uid")
            .map(text)
            .filter(|u| !u.is_empty()),
        groups: headers
            .get_all("impersonate-group")
            .iter()
            .map(text)
            .collect(),
        extra: Vec::new(),
    };
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            let key: String = form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.to_lowercase())
                .unwrap_or_default();
            req.extra.push((key, text(value)));
        }
    }
    req
}

/// The user a request runs as: the authenticated one, or the one it impersonates.
pub fn effective_user(user: UserInfo, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let req = impersonation_request(headers);
    match auth::impersonate(&user, &req) {
        Ok(Some(u)) => {
            tracing::debug!(requestor = %user.name, user = %u.name, "impersonating");
            Ok(u)
        }
        Ok(None) => Ok(user),
        Err(ImpersonationError::Forbidden(m)) => Err(ApiError::Forbidden(m)),
        Err(e @ ImpersonationError::WithoutUser(_)) => Err(ApiError::Internal(e.to_string())),
    }
}

const fn review_def(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> ResourceDef {
    ResourceDef {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        name_rule: NameRule::Subdomain,
        field_labels: &[],
        return_deleted_object: false,
        allow_create_on_update: false,
        columns: &[],
    }
}

/// The review resources, for discovery (create only, cluster-scoped).
pub static REVIEWS: [ResourceDef; 4] = [
    review_def(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
    ),
    review_def(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
    ),
    review_def(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
    ),
    review_def(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
    ),
];

/// Whether a definition is one of the create-only reviews.
pub fn is_review(def: &ResourceDef) -> bool {
    REVIEWS
        .iter()
        .any(|r| r.group == def.group && r.plural == def.plural)
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// Decodes a review body (JSON, YAML or protobuf) into its typed form.
fn decode<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    def: &ResourceDef,
) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut v = match BodyFormat::from_content_type(ct)? {
        BodyFormat::Protobuf => {
            dualstack_apimachinery::protobuf::decode(body, &def.api_version(), def.kind)?
        }
        f => decode_text(f, body)?,
    };
    crate::api::check_type(def, &mut v)?;
    serde_json::from_value(v).map_err(|e| bad(format!("error decoding {}: {e}", def.kind)))
}

fn created(v: &impl serde::Serialize) -> Response {
    json_response(
        StatusCode::CREATED,
        serde_json::to_vec(v).unwrap_or_default(),
        &[],
    )
}

/// The decision for resource or non-resource attributes of a review.
fn decide(
    user: &UserInfo,
    graph: &dyn NodeGraph,
    resource: Option<&authz::ResourceAttributes>,
    non_resource: Option<&authz::NonResourceAttributes>,
) -> authz::SubjectAccessReviewStatus {
    let (allowed, reason) = match (resource, non_resource) {
        (Some(r), _) => {
            let selector = r
                .field_selector
                .as_ref()
                .and_then(|f| f.raw_selector.as_deref())
                .and_then(|s| FieldSelector::parse(s).ok());
            let node_sel = selector
                .as_ref()
                .and_then(|s| s.required_value("spec.nodeName"));
            let a = Attributes {
                verb: r.verb.as_deref().unwrap_or(""),
                group: r.group.as_deref().unwrap_or(""),
                resource: r.resource.as_deref().unwrap_or(""),
                subresource: r.subresource.as_deref().filter(|s| !s.is_empty()),
                namespace: r.namespace.as_deref().filter(|s| !s.is_empty()),
                name: r.name.as_deref().filter(|s| !s.is_empty()),
                node_name_selector: node_sel,
            };
            match auth::authorize(user, &a, graph) {
                Ok(()) => (true, String::new()),
                Err(reason) => (false, reason),
            }
        }
        (None, Some(n)) => (
            auth::authorize_non_resource(
                user,
                n.verb.as_deref().unwrap_or(""),
                n.path.as_deref().unwrap_or(""),
            ),
            String::new(),
        ),
        (None, None) => (false, String::new()),
    };
    authz::SubjectAccessReviewStatus {
        allowed,
        reason: (!reason.is_empty()).then_some(reason),
        ..Default::default()
    }
}

/// Serves a review request; `None` when the path is not a review resource.
pub fn review(
    rc: &RequestContext,
    user: &UserInfo,
    method: &Method,
    info: &RequestInfo,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Result<Response, ApiError>> {
    let def = REVIEWS.iter().find(|d| {
        d.group == info.group && d.version == info.version && d.plural == info.resource
    })?;
    Some(answer(rc, user, method, info, headers, body, def))
}

fn answer(
    rc: &RequestContext,
    user: &UserInfo,
    method: &Method,
    info: &RequestInfo,
    headers: &HeaderMap,
    body: &[u8],
    def: &ResourceDef,
) -> Result<Response, ApiError> {
    if info.namespace.is_some() || info.subresource.is_some() {
        return Err(ApiError::UnknownPath);
    }
    if *method != Method::POST || info.name.is_some() {
        return Err(ApiError::MethodNotAllowed);
    }
    let graph = CacheGraph::new(rc);
    match def.kind {
        "SelfSubjectReview" => {
            let mut r: authn::SelfSubjectReview = decode(headers, body, def)?;
            r.status = Some(authn::SelfSubjectReviewStatus {
                user_info: Some(authn::UserInfo {
                    username: Some(user.name.clone()),
                    uid: user.uid.clone(),
                    groups: Some(user.groups.clone()),
                    extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                }),
            });
            Ok(created(&r))
        }
        "SelfSubjectAccessReview" => {
            let mut r: authz::SelfSubjectAccessReview = decode(headers, body, def)?;
            r.status = Some(decide(
                user,
                &graph,
                r.spec.resource_attributes.as_ref(),
                r.spec.non_resource_attributes.as_ref(),
            ));
            Ok(created(&r))
        }
        "SelfSubjectRulesReview" => {
            let mut r: authz::SelfSubjectRulesReview = decode(headers, body, def)?;
            let ns = r.spec.namespace.clone().unwrap_or_default();
            let (resource_rules, non_resource_rules, incomplete) = auth::rules(user, &ns, &graph);
            r.status = Some(authz::SubjectRulesReviewStatus {
                resource_rules,
                non_resource_rules,
                incomplete,
                evaluation_error: incomplete.then(|| auth::RULES_INCOMPLETE.to_string()),
            });
            Ok(created(&r))
        }
        "SubjectAccessReview" => {
            let a = Attributes {
                verb: "create",
                group: def.group,
                resource: def.plural,
                ..Default::default()
            };
            if let Err(reason) = auth::authorize(user, &a, &graph) {
                return Err(ApiError::Forbidden(auth::forbidden_message(
                    user, &a, &reason,
                )));
            }
            let mut r: authz::SubjectAccessReview = decode(headers, body, def)?;
            let subject = UserInfo {
                name: r.spec.user.clone().unwrap_or_default(),
                groups: r.spec.groups.clone().unwrap_or_default(),
                uid: r.spec.uid.clone(),
                extra: r.spec.extra.clone().unwrap_or_default(),
            };
            if subject.name.is_empty() && subject.groups.is_empty() {
                return Err(invalid_sar());
            }
            r.status = Some(decide(
                &subject,
                &graph,
                r.spec.resource_attributes.as_ref(),
                r.spec.non_resource_attributes.as_ref(),
            ));
            Ok(created(&r))
        }
        _ => Err(ApiError::UnknownPath),
    }
}

fn invalid_sar() -> ApiError {
    use dualstack_apimachinery::field::{FieldError, Path};
    ApiError::Invalid {
        kind: dualstack_apimachinery::status::GroupKind::new(
            "authorization.k8s.io",
            "SubjectAccessReview",
        ),
        name: String::new(),
        errors: vec![FieldError::required(
            &Path::new("spec").child("user"),
            "at least one of user or group must be specified",
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impersonation_headers_are_read_with_every_group_and_lowercased_extras() {
        let mut h = HeaderMap::new();
        h.insert("Impersonate-User", "system:node:n1".parse().unwrap());
        h.append("Impersonate-Group", "system:nodes".parse().unwrap());
        h.append("Impersonate-Group", "g2".parse().unwrap());
        h.insert("Impersonate-Extra-Scopes%2FA", "v".parse().unwrap());
        let r = impersonation_request(&h);
        assert_eq!(r.user.as_deref(), Some("system:node:n1"));
        assert_eq!(r.groups, ["system:nodes", "g2"]);
        assert_eq!(r.extra, [("scopes/a".to_string(), "v".to_string())]);
        assert!(impersonation_request(&HeaderMap::new()).is_empty());
    }
}
