//! Classification of the API server's responses into [`SourceError`]s.
//!
//! | HTTP status                        | class       | why                                  |
//! |------------------------------------|-------------|--------------------------------------|
//! | 410 Gone (`Expired`)               | `Expired`   | the resourceVersion or continue token left the server's window, so the reflector relists |
//! | 401, 403                           | `Permanent` | credentials or RBAC must change      |
//! | 404, 405                           | `Permanent` | the resource is not served           |
//! | 400, 422                           | `Permanent` | the selectors or options are invalid |
//! | 429, 5xx, other                    | `Transient` | the server is busy, restarting or failing for now |
//! | connection and decoding failures   | `Transient` | a new connection may work            |
//!
//! kube 5's client, with `Config::default_retry` on, retries 429, 503 and 504 responses up to
//! 15 times before they get here.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::config::KubernetesConfig;
use crate::source::SourceError;

/// The API verb of a failed request, as RBAC names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verb {
    List,
    Watch,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::List => "list",
            Verb::Watch => "watch",
        })
    }
}

/// The origin of a Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// The HTTP response to the request.
    Response,
    /// An `ERROR` event inside an HTTP 200 watch stream.
    ErrorEvent,
}

/// The parts of a `Status` the source reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StatusInfo {
    pub(super) code: u16,
    pub(super) reason: String,
    pub(super) message: String,
}

impl StatusInfo {
    /// Reads the Status object of an `ERROR` event. Missing fields read as 0 and empty.
    pub(super) fn from_event_object(object: &Value) -> Self {
        StatusInfo {
            code: object["code"]
                .as_u64()
                .and_then(|code| u16::try_from(code).ok())
                .unwrap_or(0),
            reason: object["reason"].as_str().unwrap_or("").to_owned(),
            message: object["message"].as_str().unwrap_or("").to_owned(),
        }
    }

    /// kube-apiserver on an etcd without progress notifications (etcd 3.4) rejects a
    /// streaming list with an `ERROR` event carrying a 500 Status that names the
    /// `RequestWatchProgress` storage feature.
    pub(super) fn rejects_streaming_list(&self) -> bool {
        self.code == 500 && self.message.contains("RequestWatchProgress")
    }
}

/// Builds the errors of one source. Every message names the source, and the detail names the
/// verb, the resource and the scope.
#[derive(Clone, Debug)]
pub(super) struct Errors {
    pub(super) name: Arc<str>,
    /// The resource as messages name it: `configmaps`, or `widgets.example.com`.
    resource: String,
    group: String,
    scope: String,
}

impl Errors {
    pub(super) fn new(name: Arc<str>, config: &KubernetesConfig) -> Self {
        let plural = &config.resource.plural;
        let group = &config.resource.group;
        let resource = if group.is_empty() {
            plural.clone()
        } else {
            format!("{plural}.{group}")
        };
        Errors {
            name,
            resource,
            group: group.clone(),
            scope: config.scope(),
        }
    }

    /// Classifies a failed request.
    pub(super) fn request(&self, error: kube::Error, verb: Verb) -> SourceError {
        match error {
            kube::Error::Api(status) => self.status(
                StatusInfo {
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                },
                verb,
                Origin::Response,
            ),
            other => SourceError::Transient {
                source_name: self.name.clone(),
                detail: format!("{verb} {} in {} failed: {other}", self.resource, self.scope),
                cause: Some(Box::new(other)),
            },
        }
    }

    /// Classifies a Status the server sent, as a response or as an `ERROR` event.
    pub(super) fn status(&self, status: StatusInfo, verb: Verb, origin: Origin) -> SourceError {
        let StatusInfo {
            code,
            reason,
            message,
        } = status;
        let received = match origin {
            Origin::Response => format!("HTTP {code} {reason}"),
            Origin::ErrorEvent => format!("an ERROR event with status {code} {reason}"),
        };
        let detail = format!(
            "{verb} {} in {} failed with {received}: {message}",
            self.resource, self.scope
        );
        let permanent = |action: String| SourceError::Permanent {
            source_name: self.name.clone(),
            detail: detail.clone(),
            action,
            cause: None,
        };
        match code {
            410 => SourceError::Expired {
                source_name: self.name.clone(),
                detail,
            },
            401 => permanent(
                "Check the credentials in the kubeconfig or the service account token".into(),
            ),
            403 => permanent(format!(
                "Grant the verb \"{verb}\" on resource {:?} of API group {:?} in {} to this identity with a Role or ClusterRole and a binding",
                self.resource_plural(),
                self.group,
                self.scope
            )),
            404 | 405 => permanent(
                "Check that the server serves this resource; for a custom resource, that its CRD is installed and Established".into(),
            ),
            400 | 422 => permanent("Check the selectors and the source's configuration".into()),
            _ => SourceError::Transient {
                source_name: self.name.clone(),
                detail,
                cause: None,
            },
        }
    }

    fn resource_plural(&self) -> &str {
        self.resource
            .split_once('.')
            .map_or(self.resource.as_str(), |(plural, _)| plural)
    }

    /// Returns the error for a request kube could not build from the configuration.
    pub(super) fn invalid_request(&self, error: kube::core::request::Error) -> SourceError {
        SourceError::Permanent {
            source_name: self.name.clone(),
            detail: format!("building the request failed: {error}"),
            action: "Check the source's configuration".into(),
            cause: Some(Box::new(error)),
        }
    }

    /// Returns the error for something the server sent that the source cannot use.
    pub(super) fn invalid_response(&self, verb: Verb, what: String) -> SourceError {
        SourceError::Transient {
            source_name: self.name.clone(),
            detail: format!("{verb} {} in {}: {what}", self.resource, self.scope),
            cause: None,
        }
    }

    /// Returns the error for a failed read of an open stream.
    pub(super) fn read(&self, verb: Verb, error: std::io::Error) -> SourceError {
        SourceError::Transient {
            source_name: self.name.clone(),
            detail: format!(
                "reading the {verb} stream of {} in {} failed: {error}",
                self.resource, self.scope
            ),
            cause: Some(Box::new(error)),
        }
    }

    /// Returns the error for a stream that outlived its server timeout by the idle grace.
    pub(super) fn half_open(&self, verb: Verb, limit: Duration) -> SourceError {
        SourceError::Transient {
            source_name: self.name.clone(),
            detail: format!(
                "the {verb} stream of {} in {} is still open {} s after it was requested, past its server timeout and idle grace, so the connection is treated as half-open and reopened",
                self.resource,
                self.scope,
                limit.as_secs_f64()
            ),
            cause: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;
    use crate::source::ErrorClass;

    fn errors() -> Errors {
        let config = KubernetesConfig::new::<ConfigMap>().namespace("proto");
        Errors::new(Arc::from("test"), &config)
    }

    fn status(code: u16, reason: &str, message: &str) -> StatusInfo {
        StatusInfo {
            code,
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn forbidden_names_verb_resource_namespace() {
        let message = r#"configmaps is forbidden: User "alice" cannot watch resource "configmaps" in API group "" in the namespace "proto""#;
        let error = errors().status(
            status(403, "Forbidden", message),
            Verb::Watch,
            Origin::Response,
        );
        assert_eq!(error.class(), ErrorClass::Permanent);
        let text = error.to_string();
        assert!(
            text.contains("watch configmaps in namespace \"proto\""),
            "{text}"
        );
        assert!(
            text.contains("Grant the verb \"watch\" on resource \"configmaps\""),
            "{text}"
        );
    }

    #[test]
    fn expired_in_both_forms() {
        let expired = status(410, "Expired", "too old resource version: 1 (626)");
        for origin in [Origin::Response, Origin::ErrorEvent] {
            let error = errors().status(expired.clone(), Verb::Watch, origin);
            assert_eq!(error.class(), ErrorClass::Expired, "{origin:?}");
        }
    }

    #[test]
    fn server_errors_transient() {
        for code in [0, 429, 500, 503, 504] {
            let error = errors().status(status(code, "", ""), Verb::List, Origin::Response);
            assert_eq!(error.class(), ErrorClass::Transient, "{code}");
        }
    }

    #[test]
    fn event_status_parses() {
        let object = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "a watch stream was requested by the client but the required storage feature RequestWatchProgress is disabled",
            "reason": "InternalError", "code": 500,
        });
        let info = StatusInfo::from_event_object(&object);
        assert_eq!(info.code, 500);
        assert!(info.rejects_streaming_list());
    }
}
