//! Structural schemas of custom resources: type, enum and required checks, and pruning of
//! unknown fields, with the apiserver's error wording.
//!
//! NOTE: formats, patterns, numeric and length bounds, CEL rules and defaults are not checked
//! or applied.

use serde_json::Value;

use super::status::FieldError;

/// Validates a custom object against its version's `openAPIV3Schema`, removing fields the
/// schema does not declare (unless it preserves unknown fields). `apiVersion`, `kind` and
/// `metadata` at the root are left alone.
pub(crate) fn validate_and_prune(schema: &Value, object: &mut Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Value::Object(map) = object else {
        return errors;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let preserve = preserves_unknown(schema);

    check_required(schema, map, "", &mut errors);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match properties.and_then(|props| props.get(&key)) {
            Some(child_schema) => {
                if let Some(child) = map.get_mut(&key) {
                    walk(child_schema, child, &key, &mut errors);
                }
            }
            None if preserve => {}
            None => {
                map.remove(&key);
            }
        }
    }
    errors
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn walk(schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<FieldError>) {
    if value.is_null() {
        if !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            && let Some(expected) = schema.get("type").and_then(Value::as_str)
        {
            errors.push(type_error(path, expected, "null"));
        }
        return;
    }

    let int_or_string = schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let actual = type_name(value);
    if int_or_string {
        if !matches!(actual, "integer" | "string") {
            errors.push(type_error(path, "integer or string", actual));
            return;
        }
    } else if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let ok = actual == expected || (expected == "number" && actual == "integer");
        if !ok {
            errors.push(type_error(path, expected, actual));
            return;
        }
    }

    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(render_value).collect();
        let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
        let mut error = FieldError::not_supported(path, render_value(value), &[]);
        error.detail = format!("supported values: {}", supported.join(", "));
        errors.push(error);
    }

    match value {
        Value::Object(map) => walk_object(schema, map, path, errors),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &format!("{path}[{index}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn walk_object(
    schema: &Value,
    map: &mut serde_json::Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    check_required(schema, map, path, errors);
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = preserves_unknown(schema);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child_path = format!("{path}.{key}");
        let child_schema = properties
            .and_then(|props| props.get(&key))
            .or(additional.filter(|schema| schema.is_object()));
        match child_schema {
            Some(child_schema) => {
                if let Some(child) = map.get_mut(&key) {
                    walk(child_schema, child, &child_path, errors);
                }
            }
            None if preserve || additional == Some(&Value::Bool(true)) => {}
            None => {
                map.remove(&key);
            }
        }
    }
}

fn check_required(
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(required) = schema.get("required").and_then(Value::as_array) else {
        return;
    };
    for field in required.iter().filter_map(Value::as_str) {
        if !map.contains_key(field) {
            let field_path = if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            };
            errors.push(FieldError::required(&field_path, ""));
        }
    }
}

fn type_error(path: &str, expected: &str, actual: &str) -> FieldError {
    FieldError::type_invalid(
        path,
        format!("{actual:?}"),
        format!("{path} in body must be of type {expected}: {actual:?}"),
    )
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Renders a value as Go's `%q`/`%v` print it in field errors.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn widget_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer"},
                        "color": {"type": "string", "enum": ["red", "blue"]}
                    }
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        })
    }

    #[test]
    fn type_error_wording() {
        let mut object = json!({"spec": {"size": "big"}});
        let errors = validate_and_prune(&widget_schema(), &mut object);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
    }

    #[test]
    fn prunes_unknown_fields() {
        let mut object =
            json!({"spec": {"size": 1, "extra": true}, "other": 1, "status": {"x": 1}});
        let errors = validate_and_prune(&widget_schema(), &mut object);
        assert!(errors.is_empty());
        assert_eq!(object, json!({"spec": {"size": 1}, "status": {"x": 1}}));
    }

    #[test]
    fn required_and_enum() {
        let mut object = json!({"spec": {"color": "green"}});
        let errors: Vec<String> = validate_and_prune(&widget_schema(), &mut object)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "spec.size: Required value",
                "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""
            ]
        );
    }
}
