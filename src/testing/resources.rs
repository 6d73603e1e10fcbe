//! The resources the test server serves: built-in types, resources registered from code, and
//! custom resources defined by `CustomResourceDefinition` objects.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::encode::{self, Shape};

/// Type-specific write rules a resource follows, as the apiserver's per-type strategies do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behavior {
    /// No rules beyond the common metadata handling.
    Plain,
    /// `spec.finalizers` defaults to `["kubernetes"]`, `status.phase` to `Active`, and the
    /// `kubernetes.io/metadata.name` label is set.
    Namespace,
    /// `stringData` is folded into `data`, and `type` defaults to `Opaque`.
    Secret,
    /// `core/v1` `Event`, the storage form of both event APIs.
    CoreEvent,
    /// `events.k8s.io/v1` `Event`, converted to and from the `core/v1` form it is stored in.
    EventsV1,
    /// `CustomResourceDefinition`: creating one registers the resource it defines.
    Crd,
    /// An instance of a custom resource, validated and pruned against its schema.
    Custom,
}

/// One served group/version/resource and the rules its objects follow.
///
/// Built-in resources are written the way the apiserver writes Go structs: fields in struct
/// order, list items without `kind` and `apiVersion`. Custom resources are written the way it
/// writes unstructured objects: sorted keys, full list items. Register more built-in-like resources
/// with [`TestServer::register`](super::TestServer::register).
#[derive(Clone, Debug)]
pub struct ResourceDef {
    /// The API group, empty for the core group.
    pub group: String,
    /// The served version.
    pub version: String,
    /// The resource name in URLs (plural, lower case).
    pub plural: String,
    /// The singular name.
    pub singular: String,
    /// The kind of one object.
    pub kind: String,
    /// The kind of a list.
    pub list_kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `status` is a subresource: the main endpoint then ignores `status`, and
    /// `/status` ignores everything else.
    pub status_subresource: bool,
    /// Whether `metadata.generation` is kept and bumped on every change outside `metadata` (and
    /// outside `status` when it is a subresource).
    pub tracks_generation: bool,
    /// Short names listed in discovery.
    pub short_names: Vec<String>,
    /// Categories listed in discovery.
    pub categories: Vec<String>,
    /// Field paths usable in field selectors besides `metadata.name` and `metadata.namespace`,
    /// dotted and without a leading dot (`spec.color`).
    pub selectable_fields: Vec<String>,
    pub(crate) builtin: bool,
    pub(crate) shape: &'static Shape,
    pub(crate) behavior: Behavior,
    /// The table the objects live in; two APIs can share one (both event APIs do).
    pub(crate) storage: String,
    /// The `apiVersion` objects are stored with.
    pub(crate) storage_api_version: String,
    /// Fields a Go struct always writes even when empty; bookmarks carry them too.
    pub(crate) zero_fields: Vec<(&'static str, Value)>,
    /// The structural schema of a custom resource version.
    pub(crate) schema: Option<Arc<Value>>,
    /// The CRD that defines this resource.
    pub(crate) crd_name: Option<String>,
}

impl ResourceDef {
    /// Describes a built-in-like resource with `kind`, `apiVersion`, `metadata`, `spec` and
    /// `status`. It is namespaced, has no status subresource and keeps no generation unless the
    /// builder methods change that.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        let api_version = api_version_of(group, version);
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            list_kind: format!("{kind}List"),
            namespaced: true,
            status_subresource: false,
            tracks_generation: false,
            short_names: Vec::new(),
            categories: Vec::new(),
            selectable_fields: Vec::new(),
            builtin: true,
            shape: &encode::GENERIC,
            behavior: Behavior::Plain,
            storage: storage_key(group, plural),
            storage_api_version: api_version,
            zero_fields: Vec::new(),
            schema: None,
            crd_name: None,
        }
    }

    /// Makes the resource cluster-scoped.
    pub fn cluster_scoped(mut self) -> Self {
        self.namespaced = false;
        self
    }

    /// Serves `status` as a subresource.
    pub fn with_status_subresource(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    /// Keeps `metadata.generation`.
    pub fn with_generation(mut self) -> Self {
        self.tracks_generation = true;
        self
    }

    /// Adds short names for discovery.
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|name| (*name).to_owned()).collect();
        self
    }

    /// Returns the `apiVersion` of this resource: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        api_version_of(&self.group, &self.version)
    }

    /// `plural` or `plural.group`, as error messages name the resource.
    pub(crate) fn qualified_resource(&self) -> String {
        super::status::qualified(&self.group, &self.plural)
    }

    /// Builds a bookmark object: only `kind`, `apiVersion`, `metadata` and the zero-valued
    /// fields.
    pub(crate) fn bookmark_object(&self, metadata: Value) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("kind".to_owned(), Value::String(self.kind.clone()));
        object.insert("apiVersion".to_owned(), Value::String(self.api_version()));
        object.insert("metadata".to_owned(), metadata);
        for (field, value) in &self.zero_fields {
            object.insert((*field).to_owned(), value.clone());
        }
        Value::Object(object)
    }

    /// Converts a stored object to this API's form.
    pub(crate) fn to_api_form(&self, stored: &Value) -> Value {
        let mut object = stored.clone();
        if self.behavior == Behavior::EventsV1 {
            rename_fields(&mut object, &EVENT_RENAMES, false);
            if let Some(map) = object.as_object_mut() {
                for field in ["reportingController", "reportingInstance"] {
                    if map.get(field).and_then(Value::as_str) == Some("") {
                        map.remove(field);
                    }
                }
            }
            fill_zero_fields(&mut object, &self.zero_fields);
        }
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".to_owned(), Value::String(self.api_version()));
        }
        object
    }

    /// Converts an object of this API's form to the stored form.
    pub(crate) fn to_storage(&self, object: &mut Value, storage: &ResourceDef) {
        if self.behavior == Behavior::EventsV1 {
            rename_fields(object, &EVENT_RENAMES, true);
        }
        if let Some(map) = object.as_object_mut() {
            map.insert(
                "apiVersion".to_owned(),
                Value::String(storage.storage_api_version.clone()),
            );
            map.insert("kind".to_owned(), Value::String(storage.kind.clone()));
        }
    }
}

/// `events.k8s.io/v1` field names and their `core/v1` counterparts.
static EVENT_RENAMES: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename_fields(object: &mut Value, renames: &[(&str, &str)], forward: bool) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    for (v1_name, core_name) in renames {
        let (from, to) = if forward {
            (*v1_name, *core_name)
        } else {
            (*core_name, *v1_name)
        };
        if let Some(value) = map.remove(from) {
            map.insert(to.to_owned(), value);
        }
    }
}

/// Adds the fields a Go struct always writes, where they are missing.
pub(crate) fn fill_zero_fields(object: &mut Value, zero_fields: &[(&'static str, Value)]) {
    if let Some(map) = object.as_object_mut() {
        for (field, value) in zero_fields {
            map.entry((*field).to_owned())
                .or_insert_with(|| value.clone());
        }
    }
}

/// `v1` for the core group, `group/version` otherwise.
pub(crate) fn api_version_of(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// Returns the table key of a resource: `plural` or `plural.group`.
pub(crate) fn storage_key(group: &str, plural: &str) -> String {
    super::status::qualified(group, plural)
}

/// Describes the built-in resources every server starts with.
pub(crate) fn builtin_resources() -> Vec<ResourceDef> {
    let mut namespaces = ResourceDef::new("", "v1", "Namespace", "namespaces")
        .cluster_scoped()
        .with_status_subresource()
        .with_short_names(&["ns"]);
    namespaces.shape = &encode::NAMESPACE;
    namespaces.behavior = Behavior::Namespace;
    namespaces.zero_fields = vec![("spec", json!({})), ("status", json!({}))];
    namespaces.selectable_fields = vec!["status.phase".to_owned()];

    let mut config_maps =
        ResourceDef::new("", "v1", "ConfigMap", "configmaps").with_short_names(&["cm"]);
    config_maps.shape = &encode::CONFIG_MAP;

    let mut secrets = ResourceDef::new("", "v1", "Secret", "secrets");
    secrets.shape = &encode::SECRET;
    secrets.behavior = Behavior::Secret;
    secrets.selectable_fields = vec!["type".to_owned()];

    let mut core_events = ResourceDef::new("", "v1", "Event", "events").with_short_names(&["ev"]);
    core_events.shape = &encode::CORE_EVENT;
    core_events.behavior = Behavior::CoreEvent;
    core_events.zero_fields = vec![
        ("involvedObject", json!({})),
        ("source", json!({})),
        ("firstTimestamp", Value::Null),
        ("lastTimestamp", Value::Null),
        ("eventTime", Value::Null),
        ("reportingComponent", json!("")),
        ("reportingInstance", json!("")),
    ];
    core_events.selectable_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ]
    .iter()
    .map(|field| (*field).to_owned())
    .collect();

    let mut events_v1 =
        ResourceDef::new("events.k8s.io", "v1", "Event", "events").with_short_names(&["ev"]);
    events_v1.shape = &encode::EVENTS_V1_EVENT;
    events_v1.behavior = Behavior::EventsV1;
    events_v1.storage = core_events.storage.clone();
    events_v1.storage_api_version = core_events.storage_api_version.clone();
    events_v1.zero_fields = vec![
        ("eventTime", Value::Null),
        ("regarding", json!({})),
        ("deprecatedSource", json!({})),
        ("deprecatedFirstTimestamp", Value::Null),
        ("deprecatedLastTimestamp", Value::Null),
    ];

    let mut leases = ResourceDef::new("coordination.k8s.io", "v1", "Lease", "leases");
    leases.shape = &encode::LEASE;
    leases.zero_fields = vec![("spec", json!({}))];

    let mut crds = ResourceDef::new(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
    )
    .cluster_scoped()
    .with_status_subresource()
    .with_generation()
    .with_short_names(&["crd", "crds"]);
    crds.categories = vec!["api-extensions".to_owned()];
    crds.shape = &encode::CUSTOM_RESOURCE_DEFINITION;
    crds.behavior = Behavior::Crd;
    crds.zero_fields = vec![
        (
            "spec",
            json!({"group": "", "names": {"plural": "", "kind": ""}, "scope": "", "versions": null}),
        ),
        (
            "status",
            json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": null}),
        ),
    ];

    vec![
        namespaces,
        config_maps,
        secrets,
        core_events,
        events_v1,
        leases,
        crds,
    ]
}

/// The served resources, by group, version and plural.
#[derive(Default)]
pub(crate) struct Registry {
    by_resource: BTreeMap<(String, String, String), Arc<ResourceDef>>,
    /// Groups in the order discovery lists them: built-in groups first, as registered.
    group_order: Vec<String>,
}

impl Registry {
    pub(crate) fn register(&mut self, def: ResourceDef) -> Arc<ResourceDef> {
        if !def.group.is_empty() && !self.group_order.contains(&def.group) {
            self.group_order.push(def.group.clone());
        }
        let def = Arc::new(def);
        self.by_resource.insert(
            (def.group.clone(), def.version.clone(), def.plural.clone()),
            def.clone(),
        );
        def
    }

    /// Removes every resource a CRD defined, and returns their storage keys.
    pub(crate) fn unregister_crd(&mut self, crd_name: &str) -> Vec<String> {
        let mut storages = Vec::new();
        self.by_resource.retain(|_, def| {
            if def.crd_name.as_deref() == Some(crd_name) {
                storages.push(def.storage.clone());
                false
            } else {
                true
            }
        });
        let groups: Vec<String> = self.by_resource.keys().map(|(g, _, _)| g.clone()).collect();
        self.group_order.retain(|group| groups.contains(group));
        storages.sort();
        storages.dedup();
        storages
    }

    pub(crate) fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        self.by_resource
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
            .cloned()
    }

    /// Finds the resource of an object with this `apiVersion` and `kind`.
    pub(crate) fn by_kind(&self, api_version: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        let (group, version) = split_api_version(api_version);
        self.by_resource
            .values()
            .find(|def| def.group == group && def.version == version && def.kind == kind)
            .cloned()
    }

    /// Finds the resource that owns a table, in its stored form.
    pub(crate) fn storage_def(&self, storage: &str) -> Option<Arc<ResourceDef>> {
        self.by_resource
            .values()
            .find(|def| def.storage == storage && def.api_version() == def.storage_api_version)
            .cloned()
    }

    /// Whether any resource is served in this group and version.
    pub(crate) fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.by_resource
            .keys()
            .any(|(g, v, _)| g == group && v == version)
    }

    /// Groups other than the core group, in discovery order, each with its versions.
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.group_order
            .iter()
            .map(|group| {
                let mut versions: Vec<String> = self
                    .by_resource
                    .keys()
                    .filter(|(g, _, _)| g == group)
                    .map(|(_, v, _)| v.clone())
                    .collect();
                versions.dedup();
                (group.clone(), versions)
            })
            .collect()
    }

    pub(crate) fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        self.by_resource
            .iter()
            .filter(|((g, v, _), _)| g == group && v == version)
            .map(|(_, def)| def.clone())
            .collect()
    }
}

/// Splits `group/version` (or a bare core `version`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}
