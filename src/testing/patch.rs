//! PATCH bodies: JSON patch, JSON merge patch, strategic merge patch and server-side apply.
//!
//! NOTE: a strategic merge patch is applied as a JSON merge patch, so lists are replaced, not
//! merged by key, and `$patch` directives are not understood. An apply is a JSON merge of the
//! applied configuration onto the live object, so fields the manager stops applying stay.

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
            let mut candidate = target.clone();
            for operation in operations.iter() {
                if is_null_test_of_missing_member(&candidate, operation) {
                    continue;
                }
                json_patch::patch(&mut candidate, std::slice::from_ref(operation)).map_err(
                    |error| {
                        let mut status = StatusError::bad_request(format!(
                            "the server rejected our request due to an error in our request: {error}"
                        ));
                        status.code = 422;
                        status.reason = "Invalid".to_owned();
                        status
                    },
                )?;
            }
            *target = candidate;
            Ok(())
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

/// Returns true for a `test` of `null` against an object member that does not exist. The
/// apiserver's JSON patch library (evanphx/json-patch v4) lets it pass, although RFC 6902 and
/// the json-patch crate fail it, and clients rely on it to check that `metadata.finalizers` is
/// unset before they add the first finalizer.
fn is_null_test_of_missing_member(doc: &Value, operation: &json_patch::PatchOperation) -> bool {
    let json_patch::PatchOperation::Test(test) = operation else {
        return false;
    };
    if !test.value.is_null() {
        return false;
    }
    let path = test.path.to_string();
    let Some((parent, last)) = path.rsplit_once('/') else {
        return false;
    };
    let member = last.replace("~1", "/").replace("~0", "~");
    matches!(doc.pointer(parent), Some(Value::Object(map)) if !map.contains_key(&member))
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

    #[test]
    fn json_patch_null_test_of_missing_member() {
        let mut target = json!({"metadata": {"name": "a"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
        ]);
        apply(PatchType::Json, &mut target, &patch).unwrap();
        assert_eq!(
            target,
            json!({"metadata": {"name": "a", "finalizers": ["f"]}})
        );

        let error = apply(PatchType::Json, &mut target, &patch).unwrap_err();
        assert_eq!(error.code, 422);
        assert_eq!(target["metadata"]["finalizers"], json!(["f"]));
    }
}
