//! `Status` bodies: the errors (and the delete success) the API server returns, built the way
//! `k8s.io/apimachinery/pkg/api/errors` builds them, with fields in the server's order.

use std::fmt;

use serde::Serialize;

use super::resources::ResourceDef;

/// A failed API request: the HTTP status code and the `Status` body that goes with it.
///
/// The store helpers of [`TestServer`](super::TestServer) return this error too, with the
/// same code, reason and message a client would get over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {code} {reason}: {message}")]
pub struct StatusError {
    /// The HTTP status code, also written as `code` in the body.
    pub code: u16,
    /// The machine-readable reason, for example `NotFound` or `Expired`.
    pub reason: String,
    /// The human-readable message.
    pub message: String,
    /// The `details` object, if the server sends one.
    pub details: Option<Box<StatusDetails>>,
    /// `metadata.continue`, set only on a 410 for an expired continue token.
    pub continue_token: Option<String>,
    /// The `Retry-After` header in seconds, if the server sends one.
    pub retry_after_seconds: Option<u64>,
}

/// The `details` of a `Status`, in the server's field order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusDetails {
    /// The name of the object the status is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The API group of the resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The resource (plural) or kind, depending on the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The UID of the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The individual causes, for example one per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// The time a client should wait before it retries.
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// One cause in `details.causes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusCause {
    /// The machine-readable cause, for example `FieldValueForbidden`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The human-readable description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The field the cause is about, as a dotted path.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

#[derive(Serialize)]
pub(crate) struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: StatusMetadata<'a>,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    #[serde(skip_serializing_if = "is_zero")]
    code: u16,
}

#[derive(Serialize)]
struct StatusMetadata<'a> {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    continue_token: Option<&'a str>,
}

fn is_zero(code: &u16) -> bool {
    *code == 0
}

impl StatusError {
    fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
            continue_token: None,
            retry_after_seconds: None,
        }
    }

    fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// Serializes the `Status` body as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).expect("a Status body always serializes")
    }

    pub(crate) fn body(&self) -> StatusBody<'_> {
        StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: StatusMetadata {
                continue_token: self.continue_token.as_deref(),
            },
            status: "Failure",
            message: &self.message,
            reason: &self.reason,
            details: self.details.as_deref(),
            code: self.code,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.body()).expect("a Status body always serializes")
    }

    /// `404 NotFound` for one object: `configmaps "x" not found`.
    pub(crate) fn not_found(def: &ResourceDef, name: &str) -> Self {
        Self::not_found_in(&def.group, &def.plural, name)
    }

    pub(crate) fn not_found_in(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(resource_details(group, resource, Some(name)))
    }

    /// `404 NotFound` for a path the server does not serve, with empty details.
    pub(crate) fn resource_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(StatusDetails::default())
    }

    pub(crate) fn already_exists(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", def.qualified_resource()),
        )
        .with_details(resource_details(&def.group, &def.plural, Some(name)))
    }

    /// `409 Conflict` for a stale `resourceVersion` on an update.
    pub(crate) fn stale_resource_version(def: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                def.qualified_resource()
            ),
        )
        .with_details(resource_details(&def.group, &def.plural, Some(name)))
    }

    /// `409 Conflict` for a failed delete or update precondition, which names the kind.
    pub(crate) fn precondition_failed(def: &ResourceDef, name: &str, detail: String) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {detail}",
                def.kind
            ),
        )
        .with_details(StatusDetails {
            name: Some(name.to_owned()),
            group: non_empty(&def.group),
            kind: Some(def.kind.clone()),
            ..StatusDetails::default()
        })
    }

    /// `403 Forbidden` for a verb the user may not use, as the RBAC authorizer words it.
    pub(crate) fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let full_resource = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let reason = format!(
            "User \"{user}\" cannot {verb} resource \"{full_resource}\" in API group \"{group}\" {scope}"
        );
        Self::forbidden_because(group, resource, name, &reason)
    }

    /// `403 Forbidden` with the given reason: `configmaps "x" is forbidden: <reason>`.
    pub(crate) fn forbidden_because(
        group: &str,
        resource: &str,
        name: Option<&str>,
        reason: &str,
    ) -> Self {
        let subject = match name {
            Some(name) => format!("{} \"{name}\"", qualified(group, resource)),
            None => qualified(group, resource),
        };
        Self::new(
            403,
            "Forbidden",
            format!("{subject} is forbidden: {reason}"),
        )
        .with_details(resource_details(group, resource, name))
    }

    /// `422 Invalid` for `kind_qualified "name"` with one cause per field error.
    pub(crate) fn invalid(
        group: &str,
        kind: &str,
        name: &str,
        errors: &[FieldError],
        with_name_detail: bool,
    ) -> Self {
        let rendered: Vec<String> = errors.iter().map(FieldError::to_string).collect();
        let joined = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let kind_qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        Self::new(
            422,
            "Invalid",
            format!("{kind_qualified} \"{name}\" is invalid: {joined}"),
        )
        .with_details(StatusDetails {
            name: with_name_detail.then(|| name.to_owned()),
            group: non_empty(group),
            kind: Some(kind.to_owned()),
            causes: errors.iter().map(FieldError::cause).collect(),
            ..StatusDetails::default()
        })
    }

    /// `422 Invalid` for query parameters, reported against `ListOptions.meta.k8s.io ""`.
    pub(crate) fn invalid_list_options(errors: &[FieldError]) -> Self {
        Self::invalid("meta.k8s.io", "ListOptions", "", errors, false)
    }

    /// `422 Invalid` for patch options, reported against `PatchOptions.meta.k8s.io ""`.
    pub(crate) fn invalid_patch_options(errors: &[FieldError]) -> Self {
        Self::invalid("meta.k8s.io", "PatchOptions", "", errors, false)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// `410 Expired` with the given message.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// Builds the watch cache's `410 Expired` for a resourceVersion older than its window.
    pub(crate) fn too_old_resource_version(requested: i64, oldest: i64) -> Self {
        Self::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    /// `504 Timeout` for a resourceVersion the store has not reached yet.
    pub(crate) fn too_large_resource_version(requested: i64, current: i64) -> Self {
        let mut error = Self::new(
            504,
            "Timeout",
            format!("Timeout: Too large resource version: {requested}, current: {current}"),
        )
        .with_details(StatusDetails {
            causes: vec![StatusCause {
                reason: "ResourceVersionTooLarge".to_owned(),
                message: "Too large resource version".to_owned(),
                field: String::new(),
            }],
            retry_after_seconds: Some(1),
            ..StatusDetails::default()
        });
        error.retry_after_seconds = Some(1);
        error
    }

    /// `429 TooManyRequests` with a `Retry-After`.
    pub(crate) fn too_many_requests(message: impl Into<String>, retry_after: u64) -> Self {
        let mut error = Self::new(429, "TooManyRequests", message).with_details(StatusDetails {
            retry_after_seconds: Some(retry_after),
            ..StatusDetails::default()
        });
        error.retry_after_seconds = Some(retry_after);
        error
    }

    /// `500 InternalError`: `Internal error occurred: <message>`.
    pub(crate) fn internal(message: &str) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(StatusDetails {
            causes: vec![StatusCause {
                message: message.to_owned(),
                ..StatusCause::default()
            }],
            ..StatusDetails::default()
        })
    }

    /// Builds a bare `500 InternalError` whose message is sent as is.
    pub(crate) fn internal_bare(message: &str) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub(crate) fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
        .with_details(StatusDetails::default())
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml; got {content_type:?}"
            ),
        )
    }

    /// Builds the `Status` the apiserver sends for an arbitrary HTTP code, with the reason it
    /// maps that code to.
    pub(crate) fn for_code(code: u16, message: &str) -> Self {
        match code {
            400 => Self::bad_request(message),
            401 => Self::unauthorized(),
            404 => Self::new(404, "NotFound", message),
            409 => Self::new(409, "Conflict", message),
            410 => Self::expired(message),
            429 => Self::too_many_requests(message, 1),
            500 => Self::internal(message),
            503 => {
                let mut error = Self::new(503, "ServiceUnavailable", message);
                error.retry_after_seconds = Some(1);
                error
            }
            504 => Self::new(504, "Timeout", message),
            _ => Self::new(code, "", message),
        }
    }
}

/// The `Status` that a delete returns when the object is gone: `status: Success`, no code.
pub(crate) fn delete_success(def: &ResourceDef, name: &str, uid: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Success<'a> {
        kind: &'static str,
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        metadata: StatusMetadata<'a>,
        status: &'static str,
        details: StatusDetails,
    }
    let body = Success {
        kind: "Status",
        api_version: "v1",
        metadata: StatusMetadata {
            continue_token: None,
        },
        status: "Success",
        details: StatusDetails {
            name: Some(name.to_owned()),
            group: non_empty(&def.group),
            kind: Some(def.plural.clone()),
            uid: Some(uid.to_owned()),
            ..StatusDetails::default()
        },
    };
    serde_json::to_vec(&body).expect("a Status body always serializes")
}

/// The kind of one field error, as `k8s.io/apimachinery/pkg/util/validation/field` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    Required,
    Forbidden,
    Invalid,
    TypeInvalid,
    NotSupported,
}

/// One invalid field of a request.
#[derive(Clone, Debug)]
pub(crate) struct FieldError {
    pub(crate) kind: FieldErrorKind,
    pub(crate) field: String,
    /// The offending value, already rendered as Go prints it (`"string"` quoted).
    pub(crate) value: Option<String>,
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn forbidden(field: &str, detail: &str) -> Self {
        Self {
            kind: FieldErrorKind::Forbidden,
            field: field.to_owned(),
            value: None,
            detail: detail.to_owned(),
        }
    }

    pub(crate) fn required(field: &str, detail: &str) -> Self {
        Self {
            kind: FieldErrorKind::Required,
            field: field.to_owned(),
            value: None,
            detail: detail.to_owned(),
        }
    }

    pub(crate) fn invalid(field: &str, value: String, detail: &str) -> Self {
        Self {
            kind: FieldErrorKind::Invalid,
            field: field.to_owned(),
            value: Some(value),
            detail: detail.to_owned(),
        }
    }

    pub(crate) fn type_invalid(field: &str, value: String, detail: String) -> Self {
        Self {
            kind: FieldErrorKind::TypeInvalid,
            field: field.to_owned(),
            value: Some(value),
            detail,
        }
    }

    pub(crate) fn not_supported(field: &str, value: String, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self {
            kind: FieldErrorKind::NotSupported,
            field: field.to_owned(),
            value: Some(value),
            detail: format!("supported values: {}", quoted.join(", ")),
        }
    }

    /// Renders the error without the field path, as `field.Error.ErrorBody` does.
    fn body(&self) -> String {
        let type_name = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
        };
        let mut body = match &self.value {
            Some(value) => format!("{type_name}: {value}"),
            None => type_name.to_owned(),
        };
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    fn cause(&self) -> StatusCause {
        let reason = match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
        };
        StatusCause {
            reason: reason.to_owned(),
            message: self.body(),
            field: self.field.clone(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// `resource` or `resource.group`, as errors name a resource.
pub(crate) fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

fn resource_details(group: &str, resource: &str, name: Option<&str>) -> StatusDetails {
    StatusDetails {
        name: name.map(str::to_owned),
        group: non_empty(group),
        kind: Some(resource.to_owned()),
        ..StatusDetails::default()
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}
