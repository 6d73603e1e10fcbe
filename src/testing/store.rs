//! The revisioned object store: etcd's MVCC model plus the apiserver's watch cache.
//!
//! Every write bumps one store-wide revision, as etcd does, and the written object carries it
//! as `metadata.resourceVersion`. Each key keeps its versions until [`Store::compact`], so a
//! list can be served at any revision from the compaction revision on. Each table (one per
//! resource storage) also keeps a bounded history of watch events: a watch can resume from any
//! revision at or after the table's window start, and gets `410 Expired` before it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde_json::Value;

/// The change a write made to a key, as a watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One write, as the watch history keeps it.
#[derive(Debug)]
pub(crate) struct HistoryEvent {
    pub(crate) revision: i64,
    pub(crate) kind: EventKind,
    /// The state after the write. For a delete: the last state, stamped with the delete's
    /// revision.
    pub(crate) object: Arc<Value>,
    /// The state before the write, if the key existed.
    pub(crate) previous: Option<Arc<Value>>,
}

#[derive(Debug)]
struct Version {
    revision: i64,
    /// `None` is a tombstone: the key was deleted at `revision`.
    object: Option<Arc<Value>>,
}

#[derive(Debug, Default)]
struct Table {
    /// Versions of each key in ascending revision order. Keys are `namespace/name` for
    /// namespaced resources and `name` otherwise, so their byte order is etcd's key order.
    objects: BTreeMap<String, Vec<Version>>,
    history: VecDeque<Arc<HistoryEvent>>,
    /// Every event of this table with a revision above this one is in `history`.
    window_start: i64,
}

/// The history window of a table did not reach back far enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooOld {
    /// The oldest revision a watch may start from.
    pub(crate) window_start: i64,
}

/// The store: tables of versioned objects, one revision counter, bounded watch histories.
#[derive(Debug)]
pub(crate) struct Store {
    revision: i64,
    /// Versions below this revision are gone: reads at older revisions fail.
    compacted: i64,
    history_capacity: usize,
    tables: HashMap<String, Table>,
}

impl Store {
    pub(crate) fn new(history_capacity: usize) -> Self {
        Self {
            revision: 0,
            compacted: 0,
            history_capacity: history_capacity.max(1),
            tables: HashMap::new(),
        }
    }

    /// Returns the revision of the last write.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Returns the compaction revision: reads below it fail.
    pub(crate) fn compacted(&self) -> i64 {
        self.compacted
    }

    /// Creates a table whose watch window starts now, as a new watch cache does.
    pub(crate) fn ensure_table(&mut self, storage: &str) {
        let revision = self.revision;
        self.tables
            .entry(storage.to_owned())
            .or_insert_with(|| Table {
                window_start: revision,
                ..Table::default()
            });
    }

    pub(crate) fn drop_table(&mut self, storage: &str) {
        self.tables.remove(storage);
    }

    /// Returns the current state of a key.
    pub(crate) fn get(&self, storage: &str, key: &str) -> Option<Arc<Value>> {
        let versions = self.tables.get(storage)?.objects.get(key)?;
        versions.last()?.object.clone()
    }

    /// Reads the live objects whose keys start with `prefix` and sort at or after `start`, at
    /// `revision`, in key order.
    pub(crate) fn range_at(
        &self,
        storage: &str,
        prefix: &str,
        start: Option<&str>,
        revision: i64,
    ) -> Vec<(String, Arc<Value>)> {
        self.iter_at(storage, prefix, start, revision)
            .map(|(key, object)| (key.to_owned(), object.clone()))
            .collect()
    }

    /// Iterates, in key order, over the objects that were live at `revision` under `prefix`,
    /// from `start` on.
    pub(crate) fn iter_at<'a>(
        &'a self,
        storage: &str,
        prefix: &'a str,
        start: Option<&str>,
        revision: i64,
    ) -> impl Iterator<Item = (&'a str, &'a Arc<Value>)> + 'a {
        let lower = match start {
            Some(start) if start >= prefix => Bound::Included(start.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        self.tables
            .get(storage)
            .into_iter()
            .flat_map(move |table| table.objects.range((lower.clone(), Bound::Unbounded)))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .filter_map(move |(key, versions)| {
                let version = versions.iter().rev().find(|v| v.revision <= revision)?;
                Some((key.as_str(), version.object.as_ref()?))
            })
    }

    /// Checks whether any live object's key starts with `prefix`.
    pub(crate) fn any_live(&self, storage: &str, prefix: &str) -> bool {
        !self
            .range_at(storage, prefix, None, self.revision)
            .is_empty()
    }

    /// Names of the tables.
    pub(crate) fn tables(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// Writes `object` at `key` with the next revision, stamped into
    /// `metadata.resourceVersion`, and returns the stored object.
    pub(crate) fn put(&mut self, storage: &str, key: &str, mut object: Value) -> Arc<Value> {
        self.revision += 1;
        let revision = self.revision;
        set_resource_version(&mut object, revision);
        let object = Arc::new(object);

        let previous = self.get(storage, key);
        let kind = if previous.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(storage, key, revision, Some(object.clone()));
        self.push_event(
            storage,
            HistoryEvent {
                revision,
                kind,
                object: object.clone(),
                previous,
            },
        );
        object
    }

    /// Deletes `key` with the next revision, and returns its last state stamped with it.
    pub(crate) fn delete(&mut self, storage: &str, key: &str) -> Option<Arc<Value>> {
        let previous = self.get(storage, key)?;
        self.revision += 1;
        let revision = self.revision;
        let mut last = (*previous).clone();
        set_resource_version(&mut last, revision);
        let last = Arc::new(last);

        self.record(storage, key, revision, None);
        self.push_event(
            storage,
            HistoryEvent {
                revision,
                kind: EventKind::Deleted,
                object: last.clone(),
                previous: Some(previous),
            },
        );
        Some(last)
    }

    fn record(&mut self, storage: &str, key: &str, revision: i64, object: Option<Arc<Value>>) {
        let table = self.tables.entry(storage.to_owned()).or_default();
        table
            .objects
            .entry(key.to_owned())
            .or_default()
            .push(Version { revision, object });
    }

    fn push_event(&mut self, storage: &str, event: HistoryEvent) {
        let capacity = self.history_capacity;
        let table = self.tables.entry(storage.to_owned()).or_default();
        table.history.push_back(Arc::new(event));
        while table.history.len() > capacity {
            if let Some(evicted) = table.history.pop_front() {
                table.window_start = table.window_start.max(evicted.revision);
            }
        }
    }

    /// Returns the events of a table after `after` up to and including `until`, or
    /// [`TooOld`] if the history no longer reaches back that far. A batch contains about
    /// `limit` events: it ends only where the revision changes, so a revision is never split.
    pub(crate) fn events_between(
        &self,
        storage: &str,
        after: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<Arc<HistoryEvent>>, TooOld> {
        let Some(table) = self.tables.get(storage) else {
            return Ok(Vec::new());
        };
        if after < table.window_start {
            return Err(TooOld {
                window_start: table.window_start,
            });
        }
        let start = table
            .history
            .partition_point(|event| event.revision <= after);
        let mut events: Vec<Arc<HistoryEvent>> = Vec::new();
        for event in table.history.range(start..) {
            let full = events.len() >= limit
                && events
                    .last()
                    .is_some_and(|last| last.revision != event.revision);
            if event.revision > until || full {
                break;
            }
            events.push(event.clone());
        }
        Ok(events)
    }

    /// Returns the oldest revision a watch of this table may start from.
    pub(crate) fn window_start(&self, storage: &str) -> i64 {
        self.tables
            .get(storage)
            .map_or(self.revision, |table| table.window_start)
    }

    /// Forgets every version below `revision` (keeping each key's state at `revision`) and
    /// every watch event at or below it.
    pub(crate) fn compact(&mut self, revision: i64) {
        let revision = revision.min(self.revision);
        if revision <= self.compacted {
            return;
        }
        self.compacted = revision;
        for table in self.tables.values_mut() {
            table.objects.retain(|_, versions| {
                let keep_from = versions
                    .iter()
                    .rposition(|v| v.revision <= revision)
                    .unwrap_or(0);
                versions.drain(..keep_from);
                if versions.len() == 1 && versions[0].object.is_none() {
                    versions.clear();
                }
                !versions.is_empty()
            });
            while table
                .history
                .front()
                .is_some_and(|event| event.revision <= revision)
            {
                table.history.pop_front();
            }
            table.window_start = table.window_start.max(revision);
        }
    }

    /// Drops every watch history, as an apiserver restart does: windows start at the current
    /// revision.
    pub(crate) fn forget_history(&mut self) {
        let revision = self.revision;
        for table in self.tables.values_mut() {
            table.history.clear();
            table.window_start = revision;
        }
    }

    /// Moves the revision on without a write to any table, as writes to resources the test
    /// server does not serve would.
    pub(crate) fn bump_revision(&mut self) {
        self.revision += 1;
    }
}

pub(crate) fn set_resource_version(object: &mut Value, revision: i64) {
    if let Some(metadata) = object
        .as_object_mut()
        .and_then(|map| map.get_mut("metadata"))
        .and_then(Value::as_object_mut)
    {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(revision.to_string()),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[test]
    fn range_at_old_revision() {
        let mut store = Store::new(10);
        store.put("t", "a", object("a"));
        store.put("t", "b", object("b"));
        store.delete("t", "a");
        let at_two: Vec<String> = store
            .range_at("t", "", None, 2)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(at_two, ["a", "b"]);
        let now: Vec<String> = store
            .range_at("t", "", None, 3)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(now, ["b"]);
    }

    #[test]
    fn events_between_keeps_revisions_whole() {
        let mut store = Store::new(10);
        store.ensure_table("t");
        for name in ["a", "b", "c", "d"] {
            store.put("t", name, object(name));
        }
        let revisions = |events: Vec<Arc<HistoryEvent>>| -> Vec<i64> {
            events.iter().map(|event| event.revision).collect()
        };
        assert_eq!(
            revisions(store.events_between("t", 0, 4, 2).unwrap()),
            [1, 2]
        );
        assert_eq!(revisions(store.events_between("t", 2, 3, 10).unwrap()), [3]);
        assert_eq!(
            revisions(store.events_between("t", 2, 4, 10).unwrap()),
            [3, 4]
        );
        assert!(store.events_between("t", 4, 4, 10).unwrap().is_empty());
    }

    #[test]
    fn history_evicts_oldest() {
        let mut store = Store::new(2);
        store.ensure_table("t");
        for name in ["a", "b", "c"] {
            store.put("t", name, object(name));
        }
        assert_eq!(
            store.events_between("t", 0, i64::MAX, usize::MAX).err(),
            Some(TooOld { window_start: 1 })
        );
        assert_eq!(
            store
                .events_between("t", 1, i64::MAX, usize::MAX)
                .map(|events| events.len()),
            Ok(2)
        );
    }

    #[test]
    fn compact_keeps_state_at_revision() {
        let mut store = Store::new(10);
        store.put("t", "a", object("a"));
        store.put("t", "a", object("a"));
        store.put("t", "b", object("b"));
        store.compact(2);
        assert_eq!(store.range_at("t", "", None, 2).len(), 1);
        assert!(store.events_between("t", 1, i64::MAX, usize::MAX).is_err());
        assert_eq!(
            store
                .events_between("t", 2, i64::MAX, usize::MAX)
                .map(|events| events.len()),
            Ok(1)
        );
    }
}
