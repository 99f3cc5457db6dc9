//! Parsing of resource requests: the path (`RequestInfo`, as kube-apiserver's
//! `RequestInfoFactory`), the verb, and the query parameters of each verb.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use dualstack_api::config::parse_go_bool;
use dualstack_apimachinery::decode::FieldValidation;
use dualstack_apimachinery::selector::{FieldSelector, LabelSelector};
use dualstack_apimachinery::status::ApiError;

/// The longest `timeoutSeconds` honoured (one day); larger values, up to `u64::MAX`, are
/// clamped so a deadline never overflows.
pub const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
/// Where a resource request points.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// API group (`""` for `/api`).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Plural resource.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub subresource: Option<String>,
}

/// Subresources of a namespace that look like a namespaced path (`/namespaces/x/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...`; None for other paths.
pub fn parse_path(path: &str) -> Option<RequestInfo> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let mut rest: &[&str] = rest;
    let mut namespace = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    let mut info = RequestInfo {
        group,
        version,
        namespace,
        ..Default::default()
    };
    match rest {
        [] => return None,
        [res] => info.resource = res.to_string(),
        [res, name] => {
            info.resource = res.to_string();
            info.name = Some(name.to_string());
        }
        [res, name, sub] => {
            info.resource = res.to_string();
            info.name = Some(name.to_string());
            info.subresource = Some(sub.to_string());
        }
        _ => return None,
    }
    if info.resource == "namespaces"
        && info.name.is_some()
        && info.namespace.is_some()
        && rest.len() <= 3
    {
        // `/api/v1/namespaces/x[/status]`: the namespace object itself, not a scope.
        info.namespace = None;
    }
    Some(info)
}

/// The query string as a map (the last value of a repeated key wins).
pub type Query = HashMap<String, String>;

/// Parses a Go-style boolean query parameter (`true`, `True`, `1`, ...).
pub fn bool_param(q: &Query, key: &str) -> Result<bool, ApiError> {
    match q.get(key) {
        None => Ok(false),
        Some(v) if v.is_empty() => Ok(true),
        Some(v) => parse_go_bool(v)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid value for {key}: {v:?}"))),
    }
}

/// `dryRun=All` (any other value is a 400).
pub fn dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(v) => Err(ApiError::BadRequest(format!(
            "Invalid dry run value: {v:?}; supported values: \"All\""
        ))),
    }
}

/// `fieldValidation`.
pub fn field_validation(q: &Query) -> Result<FieldValidation, ApiError> {
    FieldValidation::parse(q.get("fieldValidation").map(String::as_str))
}

/// A continue token: the list revision and the last key returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContinueToken {
    /// Always `meta.k8s.io/v1`.
    pub v: String,
    /// The revision of the first page.
    pub rv: i64,
    /// The last key returned.
    pub start: String,
}

impl ContinueToken {
    /// Encodes the token as upstream does (base64url JSON).
    pub fn encode(rv: i64, start: &str) -> String {
        let t = ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv,
            start: start.to_string(),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&t).unwrap_or_default())
    }

    /// Decodes a token, 400 when malformed.
    pub fn decode(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest(format!("continue key is not valid: {s}"));
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| bad())?;
        let t: ContinueToken = serde_json::from_slice(&b).map_err(|_| bad())?;
        if t.v != "meta.k8s.io/v1" {
            return Err(bad());
        }
        Ok(t)
    }
}

/// The list and watch parameters.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = none).
    pub limit: Option<usize>,
    /// `continue`.
    pub continue_token: Option<ContinueToken>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `watch`.
    pub watch: bool,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds` (clamped to [`MAX_TIMEOUT_SECONDS`]).
    pub timeout: Option<Duration>,
}

/// Parses the list/watch query.
pub fn list_params(q: &Query) -> Result<ListParams, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid limit: {l:?}")))?,
        )
        .filter(|&l| l > 0)
        .map(|l| l as usize),
    };
    let continue_token = match q.get("continue").map(String::as_str) {
        None | Some("") => None,
        Some(c) => Some(ContinueToken::decode(c)?),
    };
    let resource_version = q.get("resourceVersion").filter(|s| !s.is_empty()).cloned();
    let resource_version_match = q
        .get("resourceVersionMatch")
        .filter(|s| !s.is_empty())
        .cloned();
    let watch = bool_param(q, "watch")?;
    if let Some(m) = &resource_version_match {
        if !matches!(m.as_str(), "NotOlderThan" | "Exact") {
            return Err(ApiError::BadRequest(format!(
                "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
        if resource_version.is_none() && !watch {
            return Err(ApiError::BadRequest(
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
    }
    if continue_token.is_some() && resource_version.as_deref().is_some_and(|r| r != "0") {
        return Err(ApiError::BadRequest(
            "specifying resource version is not allowed when using continue".into(),
        ));
    }
    let send_initial_events = match q.get("sendInitialEvents") {
        None => None,
        Some(_) => Some(bool_param(q, "sendInitialEvents")?),
    };
    let timeout = match q.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => None,
        Some(t) => Some(Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::BadRequest(format!("invalid timeoutSeconds: {t:?}")))?
                .min(MAX_TIMEOUT_SECONDS),
        )),
    };
    Ok(ListParams {
        labels,
        fields,
        limit,
        continue_token,
        resource_version,
        resource_version_match,
        watch,
        allow_bookmarks: bool_param(q, "allowWatchBookmarks")?,
        send_initial_events,
        timeout,
    })
}

/// How the client wants objects rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rendering {
    /// `as=Table` was asked for.
    pub table: bool,
    /// `v=v1beta1` of the Table.
    pub table_v1beta1: bool,
}

/// Reads the `Accept` header.
pub fn rendering(accept: Option<&str>) -> Rendering {
    let Some(accept) = accept else {
        return Rendering::default();
    };
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let is_table = params.contains(&"as=Table");
        let is_meta = params.contains(&"g=meta.k8s.io");
        if is_table && is_meta {
            let v1beta1 = params.contains(&"v=v1beta1");
            return Rendering {
                table: true,
                table_v1beta1: v1beta1,
            };
        }
        if params
            .first()
            .is_some_and(|m| *m == "application/json" || *m == "*/*")
            && params.len() == 1
        {
            return Rendering::default();
        }
    }
    Rendering::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(
        g: &str,
        ns: Option<&str>,
        res: &str,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> RequestInfo {
        RequestInfo {
            group: g.into(),
            version: "v1".into(),
            namespace: ns.map(Into::into),
            resource: res.into(),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        }
    }

    #[test]
    fn paths_parse_like_kube_apiserver() {
        assert_eq!(
            parse_path("/api/v1/services"),
            Some(info("", None, "services", None, None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default/services"),
            Some(info("", Some("default"), "services", None, None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/default/services/web/status"),
            Some(info(
                "",
                Some("default"),
                "services",
                Some("web"),
                Some("status")
            ))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces"),
            Some(info("", None, "namespaces", None, None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x"),
            Some(info("", None, "namespaces", Some("x"), None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/status"),
            Some(info("", None, "namespaces", Some("x"), Some("status")))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/x/finalize"),
            Some(info("", None, "namespaces", Some("x"), Some("finalize")))
        );
        assert_eq!(
            parse_path("/api/v1/nodes/n1/status"),
            Some(info("", None, "nodes", Some("n1"), Some("status")))
        );
        assert_eq!(
            parse_path("/apis/discovery.k8s.io/v1/namespaces/d/endpointslices/s"),
            Some(info(
                "discovery.k8s.io",
                Some("d"),
                "endpointslices",
                Some("s"),
                None
            ))
        );
        assert_eq!(
            parse_path("/apis/networking.k8s.io/v1/ipaddresses/fd00::1"),
            Some(info(
                "networking.k8s.io",
                None,
                "ipaddresses",
                Some("fd00::1"),
                None
            ))
        );
        assert_eq!(parse_path("/api"), None);
        assert_eq!(parse_path("/api/v1"), None);
        assert_eq!(parse_path("/healthz"), None);
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = ContinueToken::encode(42, "/registry/services/default/web");
        let d = ContinueToken::decode(&t).unwrap();
        assert_eq!(
            (d.rv, d.start.as_str()),
            (42, "/registry/services/default/web")
        );
        assert!(ContinueToken::decode("%%%").is_err());
    }

    #[test]
    fn table_rendering_is_detected_from_accept() {
        assert!(rendering(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")).table);
        assert!(!rendering(Some("application/json")).table);
        assert!(!rendering(None).table);
        assert!(rendering(Some("application/json;as=Table;v=v1beta1;g=meta.k8s.io")).table_v1beta1);
    }

    #[test]
    fn list_params_follow_upstream_rules() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Query>()
        };
        let p = list_params(&q(&[
            ("watch", "True"),
            ("allowWatchBookmarks", "1"),
            ("timeoutSeconds", "290"),
        ]))
        .unwrap();
        assert!(p.watch && p.allow_bookmarks);
        assert_eq!(p.timeout, Some(Duration::from_secs(290)));
        let p = list_params(&q(&[
            ("watch", "1"),
            ("timeoutSeconds", "18446744073709551615"),
        ]))
        .unwrap();
        assert_eq!(p.timeout, Some(Duration::from_secs(MAX_TIMEOUT_SECONDS)));
        assert!(
            tokio::time::Instant::now()
                .checked_add(p.timeout.unwrap())
                .is_some()
        );
        assert_eq!(
            list_params(&q(&[("resourceVersionMatch", "NotOlderThan")]))
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            list_params(&q(&[("labelSelector", "a in (b")]))
                .unwrap_err()
                .code(),
            400
        );
    }
}
