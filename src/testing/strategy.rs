//! Per-type write rules: what the apiserver's registry strategies do to an object on create
//! and update, and how a `CustomResourceDefinition` turns into served resources.

use std::sync::Arc;

use rand::Rng;
use serde_json::{Map, Value, json};

use super::encode;
use super::resources::{Behavior, ResourceDef, api_version_of, storage_key};
use super::schema;
use super::status::{FieldError, StatusError};

/// Formats the current time as the apiserver writes timestamps: RFC 3339, whole seconds, UTC.
pub(crate) fn now_timestamp() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Generates a random (version 4) UUID, the form of `metadata.uid`.
pub(crate) fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `generateName` plus five random characters from the apiserver's alphabet.
pub(crate) fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

const DNS_SUBDOMAIN_ERROR: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
    alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
    (e.g. 'example.com', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const DNS_LABEL_ERROR: &str = "a lowercase RFC 1123 label must consist of lower case \
    alphanumeric characters or '-', and must start and end with an alphanumeric character \
    (e.g. 'my-name',  or '123-abc', regex used for validation is \
    '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && text.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && text
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// Checks `metadata.name`: a DNS label for namespaces, a DNS subdomain otherwise.
pub(crate) fn validate_name(def: &ResourceDef, name: &str) -> Option<FieldError> {
    let (valid, message) = if def.behavior == Behavior::Namespace {
        (is_dns_label(name), DNS_LABEL_ERROR)
    } else {
        (is_dns_subdomain(name), DNS_SUBDOMAIN_ERROR)
    };
    (!valid).then(|| FieldError::invalid("metadata.name", format!("{name:?}"), message))
}

/// Returns the `metadata` map of an object, created if missing.
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let map = object
        .as_object_mut()
        .expect("callers check that the object is a JSON object");
    let metadata = map
        .entry("metadata".to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut().expect("just made an object")
}

/// Reads a string field of `metadata`, empty when missing.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.finalizers`, empty when missing.
pub(crate) fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks whether `metadata.deletionTimestamp` is set.
pub(crate) fn is_deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|value| !value.is_null())
}

/// Type rules for a new object, after its metadata is prepared.
pub(crate) fn prepare_create(def: &ResourceDef, object: &mut Value) -> Result<(), StatusError> {
    let name = meta_str(object, "name").to_owned();
    if def.status_subresource
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    match def.behavior {
        Behavior::Namespace => {
            let finalizers_missing = object.pointer("/spec/finalizers").is_none();
            let map = object.as_object_mut().expect("checked object");
            let spec = map.entry("spec".to_owned()).or_insert_with(|| json!({}));
            if finalizers_missing && let Some(spec) = spec.as_object_mut() {
                spec.insert("finalizers".to_owned(), json!(["kubernetes"]));
            }
            map.insert("status".to_owned(), json!({"phase": "Active"}));
            set_namespace_label(object, &name);
        }
        Behavior::Secret => fold_string_data(object),
        Behavior::Crd => prepare_crd(object)?,
        Behavior::Custom => validate_custom(def, object)?,
        Behavior::Plain | Behavior::CoreEvent | Behavior::EventsV1 => {}
    }
    Ok(())
}

/// Type rules for an update that turns `old` into `object` through the main endpoint.
pub(crate) fn prepare_update(
    def: &ResourceDef,
    old: &Value,
    object: &mut Value,
) -> Result<(), StatusError> {
    if def.status_subresource {
        let map = object.as_object_mut().expect("checked object");
        match old.get("status") {
            Some(status) => {
                map.insert("status".to_owned(), status.clone());
            }
            None => {
                map.remove("status");
            }
        }
    }
    match def.behavior {
        Behavior::Namespace => {
            if let (Some(spec), Some(map)) = (old.get("spec"), object.as_object_mut()) {
                map.insert("spec".to_owned(), spec.clone());
            }
            let name = meta_str(old, "name").to_owned();
            set_namespace_label(object, &name);
        }
        Behavior::Secret => fold_string_data(object),
        Behavior::Crd => prepare_crd(object)?,
        Behavior::Custom => validate_custom(def, object)?,
        Behavior::Plain | Behavior::CoreEvent | Behavior::EventsV1 => {}
    }
    Ok(())
}

/// Applies a write through `/status`: everything but `status` stays as it was.
pub(crate) fn prepare_status_update(
    def: &ResourceDef,
    old: &Value,
    object: &Value,
) -> Result<Value, StatusError> {
    let mut updated = old.clone();
    let map = updated.as_object_mut().expect("stored objects are objects");
    match object.get("status") {
        Some(status) => {
            map.insert("status".to_owned(), status.clone());
        }
        None => {
            map.remove("status");
        }
    }
    if def.behavior == Behavior::Custom {
        validate_custom(def, &mut updated)?;
    }
    Ok(updated)
}

/// Checks whether an update changes what `metadata.generation` counts: everything outside
/// `metadata`, and outside `status` when it is a subresource.
pub(crate) fn generation_changed(def: &ResourceDef, old: &Value, new: &Value) -> bool {
    let strip = |object: &Value| {
        let mut copy = object.clone();
        if let Some(map) = copy.as_object_mut() {
            map.remove("metadata");
            if def.status_subresource {
                map.remove("status");
            }
        }
        copy
    };
    strip(old) != strip(new)
}

fn set_namespace_label(object: &mut Value, name: &str) {
    let metadata = metadata_mut(object);
    let labels = metadata
        .entry("labels".to_owned())
        .or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(
            "kubernetes.io/metadata.name".to_owned(),
            Value::String(name.to_owned()),
        );
    }
}

/// Moves `stringData` into `data` (base64), and defaults `type` to `Opaque`.
fn fold_string_data(object: &mut Value) {
    use base64::Engine as _;
    let map = object.as_object_mut().expect("checked object");
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        let data = map.entry("data".to_owned()).or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (key, value) in string_data {
                let text = value.as_str().unwrap_or_default();
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
    }
    map.entry("type".to_owned())
        .or_insert_with(|| Value::String("Opaque".to_owned()));
}

fn validate_custom(def: &ResourceDef, object: &mut Value) -> Result<(), StatusError> {
    let Some(schema) = &def.schema else {
        return Ok(());
    };
    let errors = schema::validate_and_prune(schema, object);
    if errors.is_empty() {
        Ok(())
    } else {
        let name = meta_str(object, "name").to_owned();
        Err(StatusError::invalid(
            &def.group, &def.kind, &name, &errors, true,
        ))
    }
}

/// Checks a CRD and fills its defaults: `singular`, `listKind`, `conversion`.
fn prepare_crd(object: &mut Value) -> Result<(), StatusError> {
    let name = meta_str(object, "name").to_owned();
    let mut errors = Vec::new();
    let text = |object: &Value, pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let group = text(object, "/spec/group");
    let plural = text(object, "/spec/names/plural");
    let kind = text(object, "/spec/names/kind");
    let scope = text(object, "/spec/scope");
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        errors.push(FieldError::required("spec.names.kind", ""));
    }
    if scope != "Namespaced" && scope != "Cluster" {
        errors.push(FieldError::not_supported(
            "spec.scope",
            format!("{scope:?}"),
            &["Cluster", "Namespaced"],
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            format!("{name:?}"),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let versions = object
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_versions = versions
        .iter()
        .filter(|version| version.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if versions.is_empty() {
        errors.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    } else if storage_versions != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            "[]apiextensions.CustomResourceDefinitionVersion{...}".to_owned(),
            "must have exactly one version marked as storage version",
        ));
    }
    if !errors.is_empty() {
        return Err(StatusError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            &errors,
            true,
        ));
    }

    if let Some(names) = object
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        names
            .entry("singular".to_owned())
            .or_insert_with(|| Value::String(kind.to_lowercase()));
        names
            .entry("listKind".to_owned())
            .or_insert_with(|| Value::String(format!("{kind}List")));
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion".to_owned())
            .or_insert_with(|| json!({"strategy": "None"}));
    }
    Ok(())
}

/// Sets the status a new CRD starts with: no conditions, no accepted names yet.
pub(crate) fn initial_crd_status(object: &mut Value) {
    let storage = crd_storage_version(object).unwrap_or_default();
    if let Some(map) = object.as_object_mut() {
        map.insert(
            "status".to_owned(),
            json!({
                "conditions": null,
                "acceptedNames": {"plural": "", "kind": ""},
                "storedVersions": [storage],
            }),
        );
    }
}

/// Builds the CRD status once its names are accepted: `NamesAccepted` true and
/// `Established` as given (`False`/`Installing`, then `True`/`InitialNamesAccepted`).
pub(crate) fn crd_status_with_conditions(object: &Value, established: bool, time: &str) -> Value {
    let names = object.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored = object
        .pointer("/status/storedVersions")
        .cloned()
        .unwrap_or(json!([]));
    let (status, reason) = if established {
        ("True", "InitialNamesAccepted")
    } else {
        ("False", "Installing")
    };
    json!({
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": time,
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": status,
                "lastTransitionTime": time,
                "reason": reason,
                "message": "the initial names have been accepted",
            },
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    })
}

fn crd_storage_version(object: &Value) -> Option<String> {
    object
        .pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|version| version.get("storage").and_then(Value::as_bool) == Some(true))?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

/// The resources a CRD serves: one per served version.
pub(crate) fn crd_resources(crd: &Value) -> Vec<ResourceDef> {
    let text = |pointer: &str| {
        crd.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let strings = |pointer: &str| -> Vec<String> {
        crd.pointer(pointer)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let crd_name = meta_str(crd, "name").to_owned();
    let group = text("/spec/group");
    let plural = text("/spec/names/plural");
    let kind = text("/spec/names/kind");
    let storage_version = crd_storage_version(crd).unwrap_or_default();
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();

    versions
        .iter()
        .filter(|version| version.get("served").and_then(Value::as_bool) == Some(true))
        .map(|version| {
            let name = version.get("name").and_then(Value::as_str).unwrap_or("");
            let selectable_fields = version
                .get("selectableFields")
                .and_then(Value::as_array)
                .map(|fields| {
                    fields
                        .iter()
                        .filter_map(|field| field.get("jsonPath").and_then(Value::as_str))
                        .map(|path| path.trim_start_matches('.').to_owned())
                        .collect()
                })
                .unwrap_or_default();
            ResourceDef {
                group: group.clone(),
                version: name.to_owned(),
                plural: plural.clone(),
                singular: text("/spec/names/singular"),
                kind: kind.clone(),
                list_kind: text("/spec/names/listKind"),
                namespaced: text("/spec/scope") == "Namespaced",
                status_subresource: version.pointer("/subresources/status").is_some(),
                tracks_generation: true,
                short_names: strings("/spec/names/shortNames"),
                categories: strings("/spec/names/categories"),
                selectable_fields,
                builtin: false,
                shape: &encode::ANY,
                behavior: Behavior::Custom,
                storage: storage_key(&group, &plural),
                storage_api_version: api_version_of(&group, &storage_version),
                zero_fields: Vec::new(),
                schema: version
                    .pointer("/schema/openAPIV3Schema")
                    .cloned()
                    .map(Arc::new),
                crd_name: Some(crd_name.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_format() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }

    #[test]
    fn name_rules() {
        let config_maps = ResourceDef::new("", "v1", "ConfigMap", "configmaps");
        assert!(validate_name(&config_maps, "a.b-c").is_none());
        assert!(validate_name(&config_maps, "Bad_Name").is_some());
        assert!(validate_name(&config_maps, "-a").is_some());
    }

    #[test]
    fn timestamp_format() {
        let now = now_timestamp();
        assert_eq!(now.len(), 20);
        assert!(now.ends_with('Z'));
    }
}
