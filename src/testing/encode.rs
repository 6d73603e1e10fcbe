//! JSON encoding in the API server's field order.
//!
//! The apiserver writes built-in types from Go structs, so their fields come in struct order
//! (`kind`, `apiVersion`, `metadata`, then the type's own fields). Custom resources are
//! unstructured maps and come out with sorted keys. A [`Shape`] describes the struct order of
//! one built-in type; [`Ordered`] serializes a `serde_json::Value` (whose maps are sorted) in
//! that order. Keys a shape does not list follow the listed ones, sorted.

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

use super::status::{StatusBody, StatusError};

/// The field order of one JSON value.
pub(crate) enum Shape {
    /// A Go struct: these fields first, in this order.
    Struct(&'static [(&'static str, &'static Shape)]),
    /// A Go map whose values all have one shape, with sorted keys.
    MapOf(&'static Shape),
    /// A list whose items all have one shape.
    ListOf(&'static Shape),
    /// Anything else: maps come out sorted.
    Any,
}

// Shapes nest themselves (a schema's properties are schemas), so Debug prints one level.
impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Struct(fields) => write!(f, "Struct({} fields)", fields.len()),
            Shape::MapOf(_) => f.write_str("MapOf(..)"),
            Shape::ListOf(_) => f.write_str("ListOf(..)"),
            Shape::Any => f.write_str("Any"),
        }
    }
}

pub(crate) static ANY: Shape = Shape::Any;

static OWNER_REFERENCE: Shape = Shape::Struct(&[
    ("apiVersion", &ANY),
    ("kind", &ANY),
    ("name", &ANY),
    ("uid", &ANY),
    ("controller", &ANY),
    ("blockOwnerDeletion", &ANY),
]);

static MANAGED_FIELDS_ENTRY: Shape = Shape::Struct(&[
    ("manager", &ANY),
    ("operation", &ANY),
    ("apiVersion", &ANY),
    ("time", &ANY),
    ("fieldsType", &ANY),
    ("fieldsV1", &ANY),
    ("subresource", &ANY),
]);

static OWNER_REFERENCES: Shape = Shape::ListOf(&OWNER_REFERENCE);
static MANAGED_FIELDS: Shape = Shape::ListOf(&MANAGED_FIELDS_ENTRY);

/// `ObjectMeta` in Go order.
pub(crate) static OBJECT_META: Shape = Shape::Struct(&[
    ("name", &ANY),
    ("generateName", &ANY),
    ("namespace", &ANY),
    ("selfLink", &ANY),
    ("uid", &ANY),
    ("resourceVersion", &ANY),
    ("generation", &ANY),
    ("creationTimestamp", &ANY),
    ("deletionTimestamp", &ANY),
    ("deletionGracePeriodSeconds", &ANY),
    ("labels", &ANY),
    ("annotations", &ANY),
    ("ownerReferences", &OWNER_REFERENCES),
    ("finalizers", &ANY),
    ("managedFields", &MANAGED_FIELDS),
]);

/// `ListMeta` in Go order.
static LIST_META: Shape = Shape::Struct(&[
    ("selfLink", &ANY),
    ("resourceVersion", &ANY),
    ("continue", &ANY),
    ("remainingItemCount", &ANY),
]);

/// `meta.k8s.io/v1` `PartialObjectMetadata`.
pub(crate) static PARTIAL_OBJECT_METADATA: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
]);

/// Any built-in type with `spec` and `status`.
pub(crate) static GENERIC: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    ("spec", &ANY),
    ("status", &ANY),
]);

pub(crate) static CONFIG_MAP: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    ("immutable", &ANY),
    ("data", &ANY),
    ("binaryData", &ANY),
]);

pub(crate) static SECRET: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    ("immutable", &ANY),
    ("data", &ANY),
    ("stringData", &ANY),
    ("type", &ANY),
]);

static NAMESPACE_CONDITION: Shape = Shape::Struct(&[
    ("type", &ANY),
    ("status", &ANY),
    ("lastTransitionTime", &ANY),
    ("reason", &ANY),
    ("message", &ANY),
]);

pub(crate) static NAMESPACE: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    ("spec", &ANY),
    (
        "status",
        &Shape::Struct(&[
            ("phase", &ANY),
            ("conditions", &Shape::ListOf(&NAMESPACE_CONDITION)),
        ]),
    ),
]);

static OBJECT_REFERENCE: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("namespace", &ANY),
    ("name", &ANY),
    ("uid", &ANY),
    ("apiVersion", &ANY),
    ("resourceVersion", &ANY),
    ("fieldPath", &ANY),
]);

static EVENT_SOURCE: Shape = Shape::Struct(&[("component", &ANY), ("host", &ANY)]);

static EVENT_SERIES: Shape = Shape::Struct(&[("count", &ANY), ("lastObservedTime", &ANY)]);

/// `core/v1` `Event`.
pub(crate) static CORE_EVENT: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    ("involvedObject", &OBJECT_REFERENCE),
    ("reason", &ANY),
    ("message", &ANY),
    ("source", &EVENT_SOURCE),
    ("firstTimestamp", &ANY),
    ("lastTimestamp", &ANY),
    ("count", &ANY),
    ("type", &ANY),
    ("eventTime", &ANY),
    ("series", &EVENT_SERIES),
    ("action", &ANY),
    ("related", &OBJECT_REFERENCE),
    ("reportingComponent", &ANY),
    ("reportingInstance", &ANY),
]);

/// `events.k8s.io/v1` `Event`.
pub(crate) static EVENTS_V1_EVENT: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    ("eventTime", &ANY),
    ("series", &EVENT_SERIES),
    ("reportingController", &ANY),
    ("reportingInstance", &ANY),
    ("action", &ANY),
    ("reason", &ANY),
    ("regarding", &OBJECT_REFERENCE),
    ("related", &OBJECT_REFERENCE),
    ("note", &ANY),
    ("type", &ANY),
    ("deprecatedSource", &EVENT_SOURCE),
    ("deprecatedFirstTimestamp", &ANY),
    ("deprecatedLastTimestamp", &ANY),
    ("deprecatedCount", &ANY),
]);

pub(crate) static LEASE: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    (
        "spec",
        &Shape::Struct(&[
            ("holderIdentity", &ANY),
            ("leaseDurationSeconds", &ANY),
            ("acquireTime", &ANY),
            ("renewTime", &ANY),
            ("leaseTransitions", &ANY),
            ("strategy", &ANY),
            ("preferredHolder", &ANY),
        ]),
    ),
]);

/// `JSONSchemaProps`, which nests itself.
static SCHEMA: Shape = Shape::Struct(&[
    ("id", &ANY),
    ("$schema", &ANY),
    ("$ref", &ANY),
    ("description", &ANY),
    ("type", &ANY),
    ("format", &ANY),
    ("title", &ANY),
    ("default", &ANY),
    ("maximum", &ANY),
    ("exclusiveMaximum", &ANY),
    ("minimum", &ANY),
    ("exclusiveMinimum", &ANY),
    ("maxLength", &ANY),
    ("minLength", &ANY),
    ("pattern", &ANY),
    ("maxItems", &ANY),
    ("minItems", &ANY),
    ("uniqueItems", &ANY),
    ("multipleOf", &ANY),
    ("enum", &ANY),
    ("maxProperties", &ANY),
    ("minProperties", &ANY),
    ("required", &ANY),
    ("items", &SCHEMA),
    ("allOf", &SCHEMA_LIST),
    ("oneOf", &SCHEMA_LIST),
    ("anyOf", &SCHEMA_LIST),
    ("not", &SCHEMA),
    ("properties", &SCHEMA_MAP),
    ("additionalProperties", &SCHEMA),
    ("patternProperties", &SCHEMA_MAP),
    ("dependencies", &ANY),
    ("additionalItems", &SCHEMA),
    ("definitions", &SCHEMA_MAP),
    ("externalDocs", &ANY),
    ("example", &ANY),
    ("nullable", &ANY),
    ("x-kubernetes-preserve-unknown-fields", &ANY),
    ("x-kubernetes-embedded-resource", &ANY),
    ("x-kubernetes-int-or-string", &ANY),
    ("x-kubernetes-list-map-keys", &ANY),
    ("x-kubernetes-list-type", &ANY),
    ("x-kubernetes-map-type", &ANY),
    ("x-kubernetes-validations", &ANY),
]);

static SCHEMA_LIST: Shape = Shape::ListOf(&SCHEMA);
static SCHEMA_MAP: Shape = Shape::MapOf(&SCHEMA);

static CRD_NAMES: Shape = Shape::Struct(&[
    ("plural", &ANY),
    ("singular", &ANY),
    ("shortNames", &ANY),
    ("kind", &ANY),
    ("listKind", &ANY),
    ("categories", &ANY),
]);

static CRD_VERSION: Shape = Shape::Struct(&[
    ("name", &ANY),
    ("served", &ANY),
    ("storage", &ANY),
    ("deprecated", &ANY),
    ("deprecationWarning", &ANY),
    ("schema", &Shape::Struct(&[("openAPIV3Schema", &SCHEMA)])),
    (
        "subresources",
        &Shape::Struct(&[("status", &ANY), ("scale", &ANY)]),
    ),
    ("additionalPrinterColumns", &ANY),
    ("selectableFields", &ANY),
]);

static CRD_CONDITION: Shape = Shape::Struct(&[
    ("type", &ANY),
    ("status", &ANY),
    ("lastTransitionTime", &ANY),
    ("reason", &ANY),
    ("message", &ANY),
]);

pub(crate) static CUSTOM_RESOURCE_DEFINITION: Shape = Shape::Struct(&[
    ("kind", &ANY),
    ("apiVersion", &ANY),
    ("metadata", &OBJECT_META),
    (
        "spec",
        &Shape::Struct(&[
            ("group", &ANY),
            ("names", &CRD_NAMES),
            ("scope", &ANY),
            ("versions", &Shape::ListOf(&CRD_VERSION)),
            (
                "conversion",
                &Shape::Struct(&[("strategy", &ANY), ("webhook", &ANY)]),
            ),
            ("preserveUnknownFields", &ANY),
        ]),
    ),
    (
        "status",
        &Shape::Struct(&[
            ("conditions", &Shape::ListOf(&CRD_CONDITION)),
            ("acceptedNames", &CRD_NAMES),
            ("storedVersions", &ANY),
        ]),
    ),
]);

/// A JSON value serialized in the order of a [`Shape`].
pub(crate) struct Ordered<'a> {
    pub(crate) value: &'a Value,
    pub(crate) shape: &'a Shape,
}

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.value, self.shape) {
            (Value::Object(map), Shape::Struct(fields)) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (name, shape) in fields.iter() {
                    if let Some(value) = map.get(*name) {
                        out.serialize_entry(name, &Ordered { value, shape })?;
                    }
                }
                for (key, value) in map {
                    if !fields.iter().any(|(name, _)| name == key) {
                        out.serialize_entry(key, value)?;
                    }
                }
                out.end()
            }
            (Value::Object(map), Shape::MapOf(shape)) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (key, value) in map {
                    out.serialize_entry(key, &Ordered { value, shape })?;
                }
                out.end()
            }
            (Value::Array(items), Shape::ListOf(shape)) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for value in items {
                    out.serialize_element(&Ordered { value, shape })?;
                }
                out.end()
            }
            (value, _) => value.serialize(serializer),
        }
    }
}

/// The layout of a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Compact JSON with a trailing newline: what client-go and kube-rs get.
    Compact,
    /// Indented JSON without a trailing newline: what a `curl` User-Agent gets.
    Pretty,
}

/// Encodes `value` as a response body in `format`.
pub(crate) fn encode<T: Serialize>(value: &T, format: Format) -> Vec<u8> {
    match format {
        Format::Compact => {
            let mut bytes = serde_json::to_vec(value).expect("JSON values always serialize");
            bytes.push(b'\n');
            bytes
        }
        Format::Pretty => serde_json::to_vec_pretty(value).expect("JSON values always serialize"),
    }
}

/// Builds the `metadata` of a list.
pub(crate) fn list_meta(
    resource_version: i64,
    continue_token: Option<&str>,
    remaining: Option<usize>,
    unstructured: bool,
) -> Value {
    let mut meta = serde_json::Map::new();
    meta.insert(
        "resourceVersion".to_owned(),
        Value::String(resource_version.to_string()),
    );
    match continue_token {
        Some(token) => {
            meta.insert("continue".to_owned(), Value::String(token.to_owned()));
        }
        // Unstructured lists always carry `continue`, empty on the last page.
        None if unstructured => {
            meta.insert("continue".to_owned(), Value::String(String::new()));
        }
        None => {}
    }
    if let Some(remaining) = remaining {
        meta.insert("remainingItemCount".to_owned(), Value::from(remaining));
    }
    Value::Object(meta)
}

/// A list body. Built-in types get `{"kind","apiVersion","metadata","items"}` with items
/// that have no `kind` or `apiVersion`, and custom resources get sorted keys and full items.
pub(crate) struct ListBody<'a> {
    pub(crate) kind: &'a str,
    pub(crate) api_version: &'a str,
    pub(crate) metadata: Value,
    pub(crate) items: Vec<Value>,
    /// The item shape for built-in types, or `None` for unstructured (custom) resources.
    pub(crate) item_shape: Option<&'a Shape>,
}

impl Serialize for ListBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(4))?;
        match self.item_shape {
            Some(shape) => {
                out.serialize_entry("kind", self.kind)?;
                out.serialize_entry("apiVersion", self.api_version)?;
                out.serialize_entry(
                    "metadata",
                    &Ordered {
                        value: &self.metadata,
                        shape: &LIST_META,
                    },
                )?;
                out.serialize_entry(
                    "items",
                    &Items {
                        items: &self.items,
                        shape,
                    },
                )?;
            }
            None => {
                out.serialize_entry("apiVersion", self.api_version)?;
                out.serialize_entry("items", &self.items)?;
                out.serialize_entry("kind", self.kind)?;
                out.serialize_entry("metadata", &self.metadata)?;
            }
        }
        out.end()
    }
}

struct Items<'a> {
    items: &'a [Value],
    shape: &'a Shape,
}

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_seq(Some(self.items.len()))?;
        for value in self.items {
            out.serialize_element(&Ordered {
                value,
                shape: self.shape,
            })?;
        }
        out.end()
    }
}

/// One line of a watch stream: `{"type":…,"object":…}`.
#[derive(Serialize)]
pub(crate) struct EventLine<'a> {
    #[serde(rename = "type")]
    pub(crate) event_type: &'a str,
    pub(crate) object: Ordered<'a>,
}

/// Encodes one watch event as a line of compact JSON.
pub(crate) fn event_line(event_type: &str, object: &Value, shape: &Shape) -> Vec<u8> {
    encode(
        &EventLine {
            event_type,
            object: Ordered {
                value: object,
                shape,
            },
        },
        Format::Compact,
    )
}

/// Encodes a `Status` as the object of an `ERROR` watch event.
pub(crate) fn error_line(error: &StatusError) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorLine<'a> {
        #[serde(rename = "type")]
        event_type: &'static str,
        object: StatusBody<'a>,
    }
    encode(
        &ErrorLine {
            event_type: "ERROR",
            object: error.body(),
        },
        Format::Compact,
    )
}
