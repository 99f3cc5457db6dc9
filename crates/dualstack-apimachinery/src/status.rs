//! API failures, each declared once with its HTTP code, `Status.reason` and upstream's message
//! (`k8s.io/apimachinery/pkg/api/errors`). The HTTP layer only serializes [`ApiError::to_status`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use crate::field::{FieldError, aggregate};

/// A group and resource, e.g. `services` or `endpointslices.discovery.k8s.io`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupResource {
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// A group and resource.
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// A group and kind, e.g. `Service` or `EndpointSlice.discovery.k8s.io`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKind {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl GroupKind {
    /// A group and kind.
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// Every way an API request can fail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 404 `NotFound`: `services "web" not found`.
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// What was looked for.
        resource: GroupResource,
        /// Its name.
        name: String,
    },
    /// 404 `NotFound` for a path the server does not serve.
    #[error("the server could not find the requested resource")]
    UnknownPath,
    /// 409 `AlreadyExists`: `services "web" already exists`.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// The resource.
        resource: GroupResource,
        /// The name taken.
        name: String,
    },
    /// 409 `Conflict` on a stale `resourceVersion` (optimistic lock).
    #[error(
        "Operation cannot be fulfilled on {resource} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// The resource.
        resource: GroupResource,
        /// The object name.
        name: String,
    },
    /// 409 `Conflict` with a custom message (precondition failures, namespace terminating, ...).
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {message}")]
    ConflictWith {
        /// The resource.
        resource: GroupResource,
        /// The object name.
        name: String,
        /// Why.
        message: String,
    },
    /// 409 `Conflict` from server-side apply field ownership.
    #[error("{message}")]
    ApplyConflict {
        /// `Apply failed with N conflict(s): ...`.
        message: String,
        /// One cause per conflicting field.
        causes: Vec<(String, String)>,
    },
    /// 422 `Invalid` with field causes.
    #[error("{kind} {name:?} is invalid: {}", aggregate(.errors))]
    Invalid {
        /// The kind of the object.
        kind: GroupKind,
        /// Its name.
        name: String,
        /// Every problem.
        errors: Vec<FieldError>,
    },
    /// 400 `BadRequest`.
    #[error("{0}")]
    BadRequest(String),
    /// 422 `Invalid` without field causes (a patch that cannot be applied).
    #[error("{0}")]
    Unprocessable(String),
    /// 401 `Unauthorized`.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403 `Forbidden`.
    #[error("{0}")]
    Forbidden(String),
    /// 405 `MethodNotAllowed`.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// 406 `NotAcceptable`.
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    /// 413 `RequestEntityTooLarge`.
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    /// 413 `RequestEntityTooLarge` with upstream's explanation (`NewRequestEntityTooLargeError`).
    #[error("Request entity too large: {0}")]
    EntityTooLarge(String),
    /// 415 `UnsupportedMediaType`.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// 410 `Expired` (too old resource version, expired continue token).
    #[error("{0}")]
    Expired(String),
    /// 410 `Gone`.
    #[error("{0}")]
    Gone(String),
    /// 504 `Timeout` with `ResourceVersionTooLarge`.
    #[error("Too large resource version: {requested}, current: {current}")]
    ResourceVersionTooLarge {
        /// Requested revision.
        requested: i64,
        /// Current revision.
        current: i64,
    },
    /// 500 `InternalError`.
    #[error("Internal error occurred: {0}")]
    Internal(String),
    /// 500 without a reason: an error a REST handler returned that is not a Status (upstream's
    /// `ErrorToAPIStatus` default, e.g. the aggregate of `ValidatePodBinding`).
    #[error("{0}")]
    Unknown(String),
    /// 503 `ServiceUnavailable`.
    #[error("{0}")]
    Unavailable(String),
    /// 429 `TooManyRequests`.
    #[error("{0}")]
    TooManyRequests(String),
}

impl ApiError {
    /// `NotFound` for `resource/name`.
    pub fn not_found(resource: &GroupResource, name: &str) -> Self {
        ApiError::NotFound {
            resource: resource.clone(),
            name: name.to_string(),
        }
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownPath => 404,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ConflictWith { .. }
            | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::TooLarge(_) | ApiError::EntityTooLarge(_) => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Expired(_) | ApiError::Gone(_) => 410,
            ApiError::ResourceVersionTooLarge { .. } => 504,
            ApiError::Internal(_) | ApiError::Unknown(_) => 500,
            ApiError::Unavailable(_) => 503,
            ApiError::TooManyRequests(_) => 429,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::UnknownPath => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. }
            | ApiError::ConflictWith { .. }
            | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::TooLarge(_) | ApiError::EntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Expired(_) => "Expired",
            ApiError::Gone(_) => "Gone",
            ApiError::ResourceVersionTooLarge { .. } => "Timeout",
            ApiError::Internal(_) => "InternalError",
            ApiError::Unknown(_) => "",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::TooManyRequests(_) => "TooManyRequests",
        }
    }

    /// The full `Status` object.
    pub fn to_status(&self) -> Status {
        let details = match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name }
            | ApiError::ConflictWith { resource, name, .. } => Some(StatusDetails {
                name: Some(name.clone()),
                group: (!resource.group.is_empty()).then(|| resource.group.clone()),
                kind: Some(resource.resource.clone()),
                ..Default::default()
            }),
            ApiError::UnknownPath => Some(StatusDetails::default()),
            ApiError::Invalid { kind, name, errors } => Some(StatusDetails {
                name: Some(name.clone()),
                group: (!kind.group.is_empty()).then(|| kind.group.clone()),
                kind: Some(kind.kind.clone()),
                causes: Some(
                    errors
                        .iter()
                        .map(|e| StatusCause {
                            reason: Some(e.kind.cause_type().to_string()),
                            message: Some(e.body()),
                            field: Some(e.field.to_string()),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ApiError::ApplyConflict { causes, .. } => Some(StatusDetails {
                causes: Some(
                    causes
                        .iter()
                        .map(|(message, field)| StatusCause {
                            reason: Some("FieldManagerConflict".into()),
                            message: Some(message.clone()),
                            field: Some(field.clone()),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ApiError::ResourceVersionTooLarge { .. } => Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ResourceVersionTooLarge".into()),
                    message: Some("Too large resource version".into()),
                    field: None,
                }]),
                retry_after_seconds: Some(1),
                ..Default::default()
            }),
            _ => None,
        };
        Status {
            status: Some("Failure".into()),
            message: Some(self.to_string()),
            reason: Some(self.reason().to_string()).filter(|r| !r.is_empty()),
            details,
            code: Some(i32::from(self.code())),
            metadata: Default::default(),
        }
    }
}

/// A `Status` of success (`deletecollection`, delete of an object already gone).
pub fn success_status(details: Option<StatusDetails>) -> Status {
    Status {
        status: Some("Success".into()),
        details,
        metadata: Default::default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Path;

    #[test]
    fn statuses_have_upstream_codes_reasons_and_messages() {
        let svc = GroupResource::new("", "services");
        let e = ApiError::not_found(&svc, "web");
        assert_eq!(
            (e.code(), e.reason(), e.to_string().as_str()),
            (404, "NotFound", r#"services "web" not found"#)
        );
        let eps = GroupResource::new("discovery.k8s.io", "endpointslices");
        assert_eq!(
            ApiError::AlreadyExists {
                resource: eps,
                name: "x".into()
            }
            .to_string(),
            r#"endpointslices.discovery.k8s.io "x" already exists"#
        );
        assert_eq!(
            ApiError::Conflict {
                resource: svc,
                name: "web".into()
            }
            .to_string(),
            r#"Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again"#
        );
        let inv = ApiError::Invalid {
            kind: GroupKind::new("", "Service"),
            name: "web".into(),
            errors: vec![FieldError::required(&Path::new("spec").child("ports"), "")],
        };
        assert_eq!(
            inv.to_string(),
            r#"Service "web" is invalid: spec.ports: Required value"#
        );
        let st = inv.to_status();
        assert_eq!(st.code, Some(422));
        let cause = &st.details.unwrap().causes.unwrap()[0];
        assert_eq!(cause.reason.as_deref(), Some("FieldValueRequired"));
        assert_eq!(cause.field.as_deref(), Some("spec.ports"));
        assert_eq!(cause.message.as_deref(), Some("Required value"));
    }

    #[test]
    fn status_serializes_with_kind_and_api_version() {
        let st = ApiError::UnknownPath.to_status();
        let v = serde_json::to_value(&st).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["code"], 404);
        assert_eq!(v["details"], serde_json::json!({}));
    }

    #[test]
    fn a_json_patch_over_the_operation_limit_is_a_413_request_entity_too_large() {
        let e = ApiError::EntityTooLarge(
            "The allowed maximum operations in a JSON patch is 10000, got 10001".into(),
        );
        assert_eq!(
            (e.code(), e.reason(), e.to_string().as_str()),
            (
                413,
                "RequestEntityTooLarge",
                "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
            )
        );
    }
}
