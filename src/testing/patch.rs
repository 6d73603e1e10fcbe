//! PATCH bodies: JSON patch, JSON merge patch, strategic merge patch and server-side apply.
//!
//! NOTE: a strategic merge patch is applied as a JSON merge patch (lists are replaced, not
//! merged by key, and `$patch` directives are not understood), and an apply is a JSON merge
//! of the applied configuration onto the live object: fields the manager stops applying are
//! not removed.

use serde_json::Value;

use super::status::StatusError;

/// The patch formats, by their `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    pub(crate) fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Parses a patch body. Apply bodies must be JSON, which is what kube-rs and client-go send
/// (JSON is a subset of YAML).
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, StatusError> {
    serde_json::from_slice(body).map_err(|error| {
        StatusError::bad_request(format!(
            "error decoding patch: the test server accepts JSON patch bodies only: {error}"
        ))
    })
}

/// Applies `patch` to `target` in place.
pub(crate) fn apply(
    patch_type: PatchType,
    target: &mut Value,
    patch: &Value,
) -> Result<(), StatusError> {
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(|error| {
                    StatusError::bad_request(format!("error decoding json patch: {error}"))
                })?;
            json_patch::patch(target, &operations).map_err(|error| {
                let mut status = StatusError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {error}"
                ));
                status.code = 422;
                status.reason = "Invalid".to_owned();
                status
            })
        }
        PatchType::Merge | PatchType::StrategicMerge | PatchType::Apply => {
            if !patch.is_object() {
                return Err(StatusError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            json_patch::merge(target, patch);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_removes_null() {
        let mut target = json!({"data": {"a": "1", "b": "2"}});
        apply(
            PatchType::Merge,
            &mut target,
            &json!({"data": {"a": null, "c": "3"}}),
        )
        .unwrap();
        assert_eq!(target, json!({"data": {"b": "2", "c": "3"}}));
    }

    #[test]
    fn json_patch_test_failure() {
        let mut target = json!({"data": {"a": "1"}});
        let patch = json!([{"op": "test", "path": "/data/a", "value": "2"}]);
        let error = apply(PatchType::Json, &mut target, &patch).unwrap_err();
        assert_eq!(error.code, 422);
    }
}
