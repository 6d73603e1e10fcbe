//! `metadata.managedFields`: which manager last set which fields.
//!
//! Each write records the fields it set in the entry of its manager (the `fieldManager`
//! parameter, or the User-Agent up to its first `/`). It takes those fields away from every
//! other manager and moves its own entry to the end, as the apiserver's field manager does. Field sets
//! are written as `FieldsV1` tries: `{"f:data":{".":{},"f:k":{}}}`.
//!
//! NOTE: lists are owned as a whole (the server uses `k:`/`v:`/`i:` keys for list items), and
//! apply conflicts are never raised: an apply always acts as if `force=true`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// A set of field paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FieldSet {
    /// The node itself is in the set (the `"."` key, or a leaf).
    owned: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        !self.owned && self.children.is_empty()
    }

    /// Collects every field of `value`. Leaves are owned, and so are the object nodes that
    /// `maps` selects.
    fn of_value(value: &Value, maps: MapNodes, path: &mut Vec<String>) -> Self {
        let mut set = FieldSet::default();
        match value {
            Value::Object(map) if !map.is_empty() => {
                set.owned = maps.owns(path);
                for (key, child) in map {
                    path.push(key.clone());
                    set.children
                        .insert(key.clone(), Self::of_value(child, maps, path));
                    path.pop();
                }
            }
            _ => set.owned = true,
        }
        set
    }

    /// Collects the fields `new` sets that `old` lacks or has with another value. Object nodes
    /// that `new` creates are owned as `maps` selects.
    fn changed(old: Option<&Value>, new: &Value, maps: MapNodes, path: &mut Vec<String>) -> Self {
        match (old, new) {
            (Some(Value::Object(old_map)), Value::Object(new_map)) if !new_map.is_empty() => {
                let mut set = FieldSet::default();
                for (key, child) in new_map {
                    path.push(key.clone());
                    let child_set = Self::changed(old_map.get(key), child, maps, path);
                    path.pop();
                    if !child_set.is_empty() {
                        set.children.insert(key.clone(), child_set);
                    }
                }
                set
            }
            (Some(old), new) if old == new => FieldSet::default(),
            (_, new) => Self::of_value(new, maps, path),
        }
    }

    /// Collects the fields `old` has that `new` lacks.
    fn removed(old: &Value, new: Option<&Value>) -> Self {
        match (old, new) {
            (Value::Object(old_map), Some(Value::Object(new_map))) => {
                let mut set = FieldSet::default();
                for (key, child) in old_map {
                    let child_set = Self::removed(child, new_map.get(key));
                    if !child_set.is_empty() {
                        set.children.insert(key.clone(), child_set);
                    }
                }
                set
            }
            (_, Some(_)) => FieldSet::default(),
            (old, None) => Self::of_value(old, MapNodes::All, &mut Vec::new()),
        }
    }

    fn union(&mut self, other: &FieldSet) {
        self.owned |= other.owned;
        for (key, child) in &other.children {
            self.children.entry(key.clone()).or_default().union(child);
        }
    }

    fn subtract(&mut self, other: &FieldSet) {
        if other.owned {
            self.owned = false;
        }
        for (key, child) in &other.children {
            if let Some(mine) = self.children.get_mut(key) {
                mine.subtract(child);
                if mine.is_empty() {
                    self.children.remove(key);
                }
            }
        }
    }

    fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.owned && !self.children.is_empty() {
            map.insert(".".to_owned(), json!({}));
        }
        for (key, child) in &self.children {
            map.insert(format!("f:{key}"), child.to_fields_v1());
        }
        Value::Object(map)
    }

    fn from_fields_v1(value: &Value) -> Self {
        let mut set = FieldSet::default();
        let Some(map) = value.as_object() else {
            return set;
        };
        if map.is_empty() {
            set.owned = true;
        }
        for (key, child) in map {
            if key == "." {
                set.owned = true;
            } else if let Some(name) = key.strip_prefix("f:") {
                set.children
                    .insert(name.to_owned(), Self::from_fields_v1(child));
            }
        }
        set
    }
}

/// The rule for the object nodes a manager owns as a whole (the `"."` key) when it sets
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapNodes {
    /// Every object: custom resources, whose objects are all maps to the field manager.
    All,
    /// Only the map-typed fields of built-in types (`data`, labels, annotations); their other
    /// objects are Go structs, which the field manager does not own as nodes.
    BuiltinMaps,
}

impl MapNodes {
    fn owns(self, path: &[String]) -> bool {
        match self {
            MapNodes::All => true,
            MapNodes::BuiltinMaps => matches!(
                path.iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice(),
                ["data" | "binaryData" | "stringData"] | ["metadata", "labels" | "annotations"]
            ),
        }
    }
}

/// Returns the fields of an object that managedFields track: everything but `apiVersion`,
/// `kind` and the server-owned parts of `metadata`. When `status` is a subresource, only
/// status writes track it.
fn tracked(object: &Value, include_status: bool, exclude_status: bool) -> Value {
    let mut tracked = Map::new();
    let Some(map) = object.as_object() else {
        return Value::Object(tracked);
    };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let mut metadata = Map::new();
                if let Some(meta) = value.as_object() {
                    for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(value) = meta.get(field) {
                            metadata.insert(field.to_owned(), value.clone());
                        }
                    }
                }
                if !metadata.is_empty() {
                    tracked.insert(key.clone(), Value::Object(metadata));
                }
            }
            "status" if exclude_status => {}
            _ if include_status && key != "status" => {}
            _ => {
                tracked.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(tracked)
}

/// The operation a write performs, as managedFields name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Update,
    Apply,
}

/// One write, for the managedFields bookkeeping.
pub(crate) struct FieldsWrite<'a> {
    pub(crate) manager: &'a str,
    pub(crate) operation: Operation,
    pub(crate) api_version: &'a str,
    pub(crate) time: &'a str,
    /// `Some("status")` for a write to the status subresource.
    pub(crate) subresource: Option<&'a str>,
    /// Whether `status` is a subresource of this resource.
    pub(crate) status_subresource: bool,
    /// For an apply: the applied configuration, whose fields the manager then owns exactly.
    pub(crate) applied: Option<&'a Value>,
    /// The rule for the object nodes owned as a whole.
    pub(crate) maps: MapNodes,
}

/// Recomputes `metadata.managedFields` of `new` after a write that turned `old` into `new`.
pub(crate) fn update_managed_fields(old: Option<&Value>, new: &mut Value, write: &FieldsWrite<'_>) {
    let status_write = write.subresource == Some("status");
    let exclude_status = write.status_subresource && !status_write;
    let old_tracked = old.map(|old| tracked(old, status_write, exclude_status));
    let new_tracked = tracked(new, status_write, exclude_status);

    let changed = match (write.operation, write.applied) {
        (Operation::Apply, Some(applied)) => FieldSet::of_value(
            &tracked(applied, status_write, exclude_status),
            write.maps,
            &mut Vec::new(),
        ),
        _ => FieldSet::changed(
            old_tracked.as_ref(),
            &new_tracked,
            write.maps,
            &mut Vec::new(),
        ),
    };
    let changed = without_root(changed);
    let removed = match &old_tracked {
        Some(old_tracked) => without_root(FieldSet::removed(old_tracked, Some(&new_tracked))),
        None => FieldSet::default(),
    };

    let mut entries = existing_entries(old);
    let operation = match write.operation {
        Operation::Update => "Update",
        Operation::Apply => "Apply",
    };
    let mut mine = FieldSet::default();
    let mut kept = Vec::new();
    for entry in entries.drain(..) {
        let same_manager = entry.manager == write.manager
            && entry.operation == operation
            && entry.subresource.as_deref() == write.subresource;
        if same_manager {
            mine = entry.fields.clone();
            continue;
        }
        let mut entry = entry;
        entry.fields.subtract(&changed);
        entry.fields.subtract(&removed);
        if !entry.fields.is_empty() {
            kept.push(entry);
        }
    }

    if write.operation == Operation::Apply {
        mine = changed;
    } else if !changed.is_empty() {
        mine.union(&changed);
    }
    mine.subtract(&removed);
    if !mine.is_empty() {
        kept.push(Entry {
            manager: write.manager.to_owned(),
            operation: operation.to_owned(),
            api_version: write.api_version.to_owned(),
            time: write.time.to_owned(),
            subresource: write.subresource.map(str::to_owned),
            fields: mine,
        });
    }

    let rendered: Vec<Value> = kept.iter().map(Entry::to_json).collect();
    if let Some(metadata) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        if rendered.is_empty() {
            metadata.remove("managedFields");
        } else {
            metadata.insert("managedFields".to_owned(), Value::Array(rendered));
        }
    }
}

/// Drops the root node, which has no meaning of its own in a tracked-field tree.
fn without_root(mut set: FieldSet) -> FieldSet {
    set.owned = false;
    set
}

struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn to_json(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".to_owned(), json!(self.manager));
        entry.insert("operation".to_owned(), json!(self.operation));
        entry.insert("apiVersion".to_owned(), json!(self.api_version));
        entry.insert("time".to_owned(), json!(self.time));
        entry.insert("fieldsType".to_owned(), json!("FieldsV1"));
        entry.insert("fieldsV1".to_owned(), self.fields.to_fields_v1());
        if let Some(subresource) = &self.subresource {
            entry.insert("subresource".to_owned(), json!(subresource));
        }
        Value::Object(entry)
    }
}

fn existing_entries(object: Option<&Value>) -> Vec<Entry> {
    let Some(entries) = object
        .and_then(|object| object.pointer("/metadata/managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    entries
        .iter()
        .map(|entry| {
            let text = |field: &str| {
                entry
                    .get(field)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                api_version: text("apiVersion"),
                time: text("time"),
                subresource: entry
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                fields: FieldSet::from_fields_v1(entry.get("fieldsV1").unwrap_or(&Value::Null)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write<'a>(manager: &'a str, time: &'a str) -> FieldsWrite<'a> {
        FieldsWrite {
            manager,
            operation: Operation::Update,
            api_version: "v1",
            time,
            subresource: None,
            status_subresource: false,
            applied: None,
            maps: MapNodes::BuiltinMaps,
        }
    }

    #[test]
    fn create_owns_maps_and_leaves() {
        let mut object = json!({"metadata": {"name": "a"}, "data": {"k": "v1"}});
        update_managed_fields(None, &mut object, &write("kubectl-create", "t1"));
        assert_eq!(
            object.pointer("/metadata/managedFields/0/fieldsV1"),
            Some(&json!({"f:data": {".": {}, "f:k": {}}}))
        );
    }

    #[test]
    fn builtin_structs_not_owned() {
        let mut object = json!({"metadata": {"name": "a"}, "spec": {"group": "g"}});
        update_managed_fields(None, &mut object, &write("m", "t1"));
        assert_eq!(
            object.pointer("/metadata/managedFields/0/fieldsV1"),
            Some(&json!({"f:spec": {"f:group": {}}}))
        );
    }

    #[test]
    fn patch_takes_changed_leaf() {
        let mut old = json!({"metadata": {"name": "a"}, "data": {"a": "1"}});
        update_managed_fields(None, &mut old, &write("kubectl-create", "t1"));
        let mut new = old.clone();
        new["data"]["a"] = json!("2");
        update_managed_fields(Some(&old), &mut new, &write("kubectl-patch", "t2"));
        let entries = new.pointer("/metadata/managedFields").unwrap();
        assert_eq!(entries[0]["fieldsV1"], json!({"f:data": {}}));
        assert_eq!(entries[1]["manager"], json!("kubectl-patch"));
        assert_eq!(entries[1]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
    }
}
