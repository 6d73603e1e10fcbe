//! Label and field selectors, parsed and matched as `k8s.io/apimachinery/pkg/labels` and
//! `pkg/fields` do.

use serde_json::Value;

use super::resources::ResourceDef;
use super::status::StatusError;

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    op: LabelOp,
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses `tier=frontend,env in (a,b),!legacy`.
    pub(crate) fn parse(text: &str) -> Result<Self, StatusError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part).map_err(|detail| {
                StatusError::bad_request(format!("unable to parse requirement: {detail}"))
            })?);
        }
        Ok(Self { requirements })
    }

    /// Checks whether an object's `metadata.labels` satisfy the selector.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|map| map.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|req| match &req.op {
            LabelOp::Equals(value) => label(&req.key) == Some(value.as_str()),
            LabelOp::NotEquals(value) => label(&req.key) != Some(value.as_str()),
            LabelOp::In(values) => label(&req.key).is_some_and(|v| values.iter().any(|x| x == v)),
            LabelOp::NotIn(values) => {
                !label(&req.key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            LabelOp::Exists => label(&req.key).is_some(),
            LabelOp::DoesNotExist => label(&req.key).is_none(),
            LabelOp::GreaterThan(bound) => label(&req.key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *bound),
            LabelOp::LessThan(bound) => label(&req.key)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *bound),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn is_key_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '/')
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(LabelRequirement {
            key: key.to_owned(),
            op: LabelOp::DoesNotExist,
        });
    }

    let key_end = part.find(|ch: char| !is_key_char(ch)).unwrap_or(part.len());
    let key = &part[..key_end];
    validate_key(key)?;
    let rest = part[key_end..].trim_start();

    let op = if rest.is_empty() {
        LabelOp::Exists
    } else if let Some(value) = rest.strip_prefix("!=") {
        LabelOp::NotEquals(parse_value(value)?)
    } else if let Some(value) = rest.strip_prefix("==") {
        LabelOp::Equals(parse_value(value)?)
    } else if let Some(value) = rest.strip_prefix('=') {
        LabelOp::Equals(parse_value(value)?)
    } else if let Some(value) = rest.strip_prefix('>') {
        LabelOp::GreaterThan(parse_integer(value)?)
    } else if let Some(value) = rest.strip_prefix('<') {
        LabelOp::LessThan(parse_integer(value)?)
    } else if let Some(values) = strip_keyword(rest, "notin") {
        LabelOp::NotIn(parse_set(values)?)
    } else if let Some(values) = strip_keyword(rest, "in") {
        LabelOp::In(parse_set(values)?)
    } else {
        let found = rest.split_whitespace().next().unwrap_or(rest);
        return Err(format!(
            "found '{found}', expected: '=', '!=', '==', 'in', notin'"
        ));
    };
    Ok(LabelRequirement {
        key: key.to_owned(),
        op,
    })
}

fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(keyword)?;
    (after.starts_with(char::is_whitespace) || after.starts_with('(')).then(|| after.trim_start())
}

fn parse_set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|inner| inner.strip_suffix(')'))
        .ok_or_else(|| format!("found '{text}', expected: '('"))?;
    inner.split(',').map(parse_value).collect()
}

fn parse_value(text: &str) -> Result<String, String> {
    let value = text.trim();
    if value.len() > 63 {
        return Err(format!(
            "invalid label value: {value:?}: must be no more than 63 characters"
        ));
    }
    let valid = value.is_empty()
        || (value.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && value.ends_with(|ch: char| ch.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')));
    if !valid {
        return Err(format!(
            "invalid label value: {value:?}: a valid label must be an empty string or consist of \
             alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character"
        ));
    }
    Ok(value.to_owned())
}

fn parse_integer(text: &str) -> Result<i64, String> {
    let value = text.trim();
    value
        .parse()
        .map_err(|_| format!("invalid integer value {value:?} for a '>' or '<' requirement"))
}

fn validate_key(key: &str) -> Result<(), String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        && name.ends_with(|ch: char| ch.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "key: Invalid value: {key:?}: name part must consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    equals: bool,
}

/// A parsed `fieldSelector`: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `metadata.name=a,metadata.namespace!=b`, accepting only the fields `def` supports.
    pub(crate) fn parse(text: &str, def: &ResourceDef) -> Result<Self, StatusError> {
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, equals) = if let Some((field, value)) = part.split_once("!=") {
                (field, value, false)
            } else if let Some((field, value)) = part.split_once("==") {
                (field, value, true)
            } else if let Some((field, value)) = part.split_once('=') {
                (field, value, true)
            } else {
                return Err(StatusError::bad_request(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let supported = field == "metadata.name"
                || (field == "metadata.namespace" && def.namespaced)
                || def.selectable_fields.iter().any(|f| f == field);
            if !supported {
                return Err(StatusError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                value: value.trim().to_owned(),
                equals,
            });
        }
        Ok(Self { requirements })
    }

    /// Checks whether an object's fields satisfy the selector.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|req| {
            let actual = field_value(object, &req.field);
            (actual == req.value) == req.equals
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Reads a selectable field as a string. Missing fields are empty.
fn field_value(object: &Value, field: &str) -> String {
    // `source` on core events selects the reporting component.
    let path = if field == "source" {
        "source.component"
    } else {
        field
    };
    let mut current = object;
    for segment in path.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The label and field selectors of one request.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selectors {
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_operators() {
        let cases = [
            ("tier=frontend", json!({"tier": "frontend"}), true),
            ("tier==frontend", json!({"tier": "backend"}), false),
            ("tier!=frontend", json!({}), true),
            ("env in (a, b)", json!({"env": "b"}), true),
            ("env notin (a,b)", json!({"env": "b"}), false),
            ("env notin (a,b)", json!({}), true),
            ("tier", json!({"tier": ""}), true),
            ("!tier", json!({"tier": "x"}), false),
            ("size>3", json!({"size": "4"}), true),
            (
                "tier=frontend,!legacy",
                json!({"tier": "frontend", "legacy": "y"}),
                false,
            ),
        ];
        for (selector, labels, expected) in cases {
            let parsed = LabelSelector::parse(selector).unwrap();
            assert_eq!(parsed.matches(&object(labels)), expected, "{selector}");
        }
    }

    #[test]
    fn label_parse_error() {
        let error = LabelSelector::parse("tier frontend").unwrap_err();
        assert_eq!(error.code, 400);
        assert!(error.message.starts_with("unable to parse requirement"));
    }

    #[test]
    fn field_unsupported() {
        let def = ResourceDef::new("", "v1", "ConfigMap", "configmaps");
        let error = FieldSelector::parse("spec.x=1", &def).unwrap_err();
        assert_eq!(error.message, "field label not supported: spec.x");
        let selector = FieldSelector::parse("metadata.name=a", &def).unwrap();
        assert!(selector.matches(&object(json!({}))));
    }
}
