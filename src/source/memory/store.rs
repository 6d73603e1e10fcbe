//! The revisioned key-value store behind [`MemorySource`](super::MemorySource).
//!
//! The store keeps two views of its history, both trimmed by compaction:
//! - per key, every version with its `mod_revision`, so a list can read the state at any
//!   revision that is not compacted (multi-version concurrency control, as in etcd);
//! - a log of every change in revision order, so a watch can replay what it missed.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::num::NonZeroU64;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::watch;

use super::faults::{FaultState, Faults};
use crate::source::{Batch, Change, Incarnation, Object, Revision};

/// The revision of an empty store. As in etcd, a new store is at revision 1 and its first write
/// gets revision 2.
pub const INITIAL_REVISION: Revision = 1;

/// One key with its value and etcd's version fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Arc<str>,
    /// The value.
    pub value: Bytes,
    /// The revision that created this lifetime of the key. A key that is deleted and put again
    /// gets a new one.
    pub create_revision: Revision,
    /// The revision that last modified the key.
    pub mod_revision: Revision,
    /// The number of writes to the key since its creation: 1 after the put that created it.
    pub version: i64,
}

impl KeyValue {
    /// Converts this key into the [`Object`] a source returns.
    pub fn into_object(self) -> Object<Bytes> {
        Object {
            key: self.key,
            revision: self.mod_revision,
            incarnation: Incarnation::CreateRevision(self.create_revision),
            value: self.value,
        }
    }
}

/// One write of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, creating the key when it is absent.
    Put {
        /// The key.
        key: Arc<str>,
        /// The new value.
        value: Bytes,
    },
    /// Deletes `key`. Deleting an absent key changes nothing.
    Delete {
        /// The key.
        key: Arc<str>,
    },
}

impl Op {
    /// Builds a put.
    pub fn put(key: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// Builds a delete.
    pub fn delete(key: impl Into<Arc<str>>) -> Op {
        Op::Delete { key: key.into() }
    }

    /// Returns the key this op writes.
    pub fn key(&self) -> &Arc<str> {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A transaction the store rejected. Nothing of it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// Two ops of the transaction write the same key, which etcd also rejects.
    #[error(
        "the transaction writes key {key:?} more than once; write each key at most once per transaction"
    )]
    DuplicateKey {
        /// The key written twice.
        key: Arc<str>,
    },
}

/// A revision that the store cannot read or compact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    /// The revision is below the compact revision, so its state is gone.
    #[error(
        "revision {revision} was compacted at {compact_revision}; read at revision {compact_revision} or later"
    )]
    Compacted {
        /// The requested revision.
        revision: Revision,
        /// The store's compact revision.
        compact_revision: Revision,
    },
    /// The revision is above the store's current revision.
    #[error(
        "revision {revision} is in the future: the store is at revision {current}; use a revision of at most {current}"
    )]
    Future {
        /// The requested revision.
        revision: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// A compaction at or below the store's compact revision.
    #[error(
        "cannot compact at revision {revision}: the store is already compacted at {compact_revision}; pick a revision above {compact_revision}"
    )]
    AlreadyCompacted {
        /// The requested revision.
        revision: Revision,
        /// The store's compact revision.
        compact_revision: Revision,
    },
}

/// One version of a key. A tombstone (`value: None`) ends a lifetime of the key.
#[derive(Clone, Debug)]
struct Version {
    mod_revision: Revision,
    create_revision: Revision,
    /// etcd's `version`: 1 at creation, plus one per later put, 0 for a tombstone.
    version: i64,
    value: Option<Bytes>,
}

/// The versions of one key in ascending `mod_revision`.
#[derive(Debug, Default)]
struct KeyHistory {
    versions: Vec<Version>,
}

impl KeyHistory {
    /// Returns the live version at `revision`, or `None` when the key was absent then.
    fn at(&self, revision: Revision) -> Option<&Version> {
        let visible = self
            .versions
            .partition_point(|version| version.mod_revision <= revision);
        let version = self.versions.get(visible.checked_sub(1)?)?;
        version.value.is_some().then_some(version)
    }

    fn latest_live(&self) -> Option<&Version> {
        self.versions
            .last()
            .filter(|version| version.value.is_some())
    }

    /// Drops every version that no read at `revision` or later can see.
    fn compact(&mut self, revision: Revision) {
        let visible = self
            .versions
            .partition_point(|version| version.mod_revision <= revision);
        let Some(latest) = visible.checked_sub(1) else {
            return;
        };

        // The latest version at `revision` stays readable unless it is a tombstone, because a
        // read at `revision` finds no key either way.
        let keep_from = if self.versions[latest].value.is_some() {
            latest
        } else {
            visible
        };
        self.versions.drain(..keep_from);
    }
}

fn key_value(key: &Arc<str>, version: &Version) -> Option<KeyValue> {
    Some(KeyValue {
        key: key.clone(),
        value: version.value.clone()?,
        create_revision: version.create_revision,
        mod_revision: version.mod_revision,
        version: version.version,
    })
}

/// Everything the store holds, behind one lock.
pub(super) struct State {
    /// The revision of the last write.
    pub(super) revision: Revision,
    /// Reads and watches below this revision fail as expired. 0 until the first compaction.
    pub(super) compact_revision: Revision,
    keys: BTreeMap<Arc<str>, KeyHistory>,
    /// Every change from `compact_revision` on, in revision order and, within one revision, in
    /// transaction order.
    events: VecDeque<Change<Bytes>>,
    auto_compaction: Option<NonZeroU64>,
    pub(super) faults: FaultState,
    pub(super) open_watches: usize,
}

impl State {
    fn new() -> State {
        State {
            revision: INITIAL_REVISION,
            compact_revision: 0,
            keys: BTreeMap::new(),
            events: VecDeque::new(),
            auto_compaction: None,
            faults: FaultState::default(),
            open_watches: 0,
        }
    }

    /// Checks that the state at `revision` is readable.
    pub(super) fn check_readable(&self, revision: Revision) -> Result<(), RevisionError> {
        if revision < self.compact_revision {
            return Err(RevisionError::Compacted {
                revision,
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(RevisionError::Future {
                revision,
                current: self.revision,
            });
        }
        Ok(())
    }

    /// Iterates over the keys under `prefix`, from `start` on, that were live at `revision`.
    pub(super) fn live_at<'a>(
        &'a self,
        prefix: &'a str,
        start: &'a str,
        revision: Revision,
    ) -> impl Iterator<Item = KeyValue> + 'a {
        let start = start.max(prefix);
        self.keys
            .range::<str, _>((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .filter_map(move |(key, history)| key_value(key, history.at(revision)?))
    }

    /// Returns the current value of `key`.
    fn get(&self, key: &str) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(key)?;
        key_value(key, history.latest_live()?)
    }

    /// Returns the changes under `prefix` of the first revision at or after `*cursor` that has
    /// any, and moves `*cursor` past it. Without such a revision, moves `*cursor` past the
    /// current revision (never backwards) and returns `None`.
    pub(super) fn next_batch(&self, prefix: &str, cursor: &mut Revision) -> Option<Batch<Bytes>> {
        let start = self
            .events
            .partition_point(|change| change.revision() < *cursor);
        let mut batch: Option<Batch<Bytes>> = None;
        for change in self.events.range(start..) {
            match &mut batch {
                Some(batch) if change.revision() != batch.revision => break,
                Some(batch) => {
                    if change.key().starts_with(prefix) {
                        batch.changes.push(change.clone());
                    }
                }
                None => {
                    if change.key().starts_with(prefix) {
                        batch = Some(Batch {
                            revision: change.revision(),
                            changes: vec![change.clone()],
                        });
                    }
                }
            }
        }

        *cursor = match &batch {
            Some(batch) => batch.revision + 1,
            None => (*cursor).max(self.revision + 1),
        };
        batch
    }

    /// Applies `ops` at the next revision. Returns that revision, or `None` when no op changed
    /// anything (only deletes of absent keys), in which case the revision stays.
    ///
    /// The caller has checked that no key appears twice.
    fn commit(&mut self, ops: Vec<Op>) -> Option<Revision> {
        let revision = self.revision + 1;
        let mut changes = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let history = self.keys.entry(key.clone()).or_default();
                    let (create_revision, version) = match history.latest_live() {
                        Some(live) => (live.create_revision, live.version + 1),
                        None => (revision, 1),
                    };
                    history.versions.push(Version {
                        mod_revision: revision,
                        create_revision,
                        version,
                        value: Some(value.clone()),
                    });
                    changes.push(Change::Put(Object {
                        key,
                        revision,
                        incarnation: Incarnation::CreateRevision(create_revision),
                        value,
                    }));
                }
                Op::Delete { key } => {
                    let Some(history) = self.keys.get_mut(&key) else {
                        continue;
                    };
                    if history.latest_live().is_none() {
                        continue;
                    }
                    history.versions.push(Version {
                        mod_revision: revision,
                        create_revision: 0,
                        version: 0,
                        value: None,
                    });
                    changes.push(Change::Delete { key, revision });
                }
            }
        }
        if changes.is_empty() {
            return None;
        }

        for change in &changes {
            let kind = match change {
                Change::Put(_) => "put",
                Change::Delete { .. } => "delete",
            };
            tracing::debug!(key = ?change.key(), revision, kind, "memory store change");
        }
        self.revision = revision;
        self.events.extend(changes);
        self.auto_compact();
        Some(revision)
    }

    /// Compacts to `revision − retention` once `2 × retention` revisions of history pile up, so
    /// at least `retention` revisions stay watchable and the cost of a compaction, which visits
    /// every key, is spread over `retention` writes.
    fn auto_compact(&mut self) {
        let Some(retention) = self.auto_compaction else {
            return;
        };
        let retention = i64::try_from(retention.get()).unwrap_or(i64::MAX);
        if self.revision - self.compact_revision < retention.saturating_mul(2) {
            return;
        }

        let target = self.revision - retention;
        match self.compact(target) {
            Ok(()) => tracing::debug!(revision = target, "memory store compacted automatically"),
            Err(error) => tracing::error!(%error, "memory store automatic compaction failed"),
        }
    }

    fn compact(&mut self, revision: Revision) -> Result<(), RevisionError> {
        if revision > self.revision {
            return Err(RevisionError::Future {
                revision,
                current: self.revision,
            });
        }
        if revision <= self.compact_revision {
            return Err(RevisionError::AlreadyCompacted {
                revision,
                compact_revision: self.compact_revision,
            });
        }

        for history in self.keys.values_mut() {
            history.compact(revision);
        }
        self.keys.retain(|_, history| !history.versions.is_empty());

        // Changes at `revision` itself stay, so a watch from the compact revision misses
        // nothing.
        let expired = self
            .events
            .partition_point(|change| change.revision() < revision);
        self.events.drain(..expired);
        self.compact_revision = revision;
        Ok(())
    }
}

/// The store's state and the signal that wakes its waiting watches and calls.
pub(super) struct Shared {
    state: Mutex<State>,
    /// Sent after every change a waiting call may care about: a write, a fault, a cut.
    signal: watch::Sender<()>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<()> {
        self.signal.subscribe()
    }

    /// Wakes every waiting watch and call so it reads the state again.
    pub(super) fn notify(&self) {
        self.signal.send_replace(());
    }

    /// Locks the state once the store is not frozen, waiting on `signal` meanwhile.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future gives up the wait and changes nothing.
    pub(super) async fn lock_unfrozen(
        &self,
        signal: &mut watch::Receiver<()>,
    ) -> MutexGuard<'_, State> {
        loop {
            // Marking the signal seen before reading the state means a write or an unfreeze
            // after the read wakes the `changed` below.
            signal.borrow_and_update();
            {
                let state = self.state.lock();
                if !state.faults.frozen {
                    return state;
                }
            }
            // The sender lives in `self`, so `changed` cannot fail.
            let _ = signal.changed().await;
        }
    }

    /// Waits until the store is not frozen.
    pub(super) async fn wait_unfrozen(&self, signal: &mut watch::Receiver<()>) {
        drop(self.lock_unfrozen(signal).await);
    }
}

/// An in-process, revisioned key-value store with etcd v3's revision, list, watch and
/// compaction semantics.
///
/// Clones share the same store. Every method is synchronous and ignores the store's [`Faults`],
/// which affect only lists and watches through a [`MemorySource`](super::MemorySource).
///
/// ```
/// use informer::source::memory::{MemoryStore, Op};
///
/// let store = MemoryStore::new();
/// let created = store.put("/app/a", "1");
/// assert_eq!(created, 2);
/// let revision = store.txn(vec![Op::put("/app/b", "2"), Op::delete("/app/a")]).unwrap();
/// assert_eq!(revision, 3);
/// assert_eq!(store.range("/app/").len(), 1);
/// assert_eq!(store.range_at("/app/", created).unwrap()[0].key.as_ref(), "/app/a");
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    pub(super) shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("MemoryStore")
            .field("revision", &state.revision)
            .field("compact_revision", &state.compact_revision)
            .field("keys", &state.keys.len())
            .field("history", &state.events.len())
            .finish()
    }
}

impl MemoryStore {
    /// Creates an empty store at revision [`INITIAL_REVISION`].
    pub fn new() -> MemoryStore {
        let (signal, _) = watch::channel(());
        MemoryStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new()),
                signal,
            }),
        }
    }

    /// Sets `key` to `value` and returns the revision of the write.
    pub fn put(&self, key: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Revision {
        let revision = self.commit(vec![Op::put(key, value)]);
        revision.unwrap_or_else(|| self.revision())
    }

    /// Deletes `key` and returns the revision of the delete, or `None` when the key was absent,
    /// in which case the revision does not change.
    pub fn delete(&self, key: impl Into<Arc<str>>) -> Option<Revision> {
        self.commit(vec![Op::delete(key)])
    }

    /// Deletes every key under `prefix` in one transaction and returns its revision, or `None`
    /// when no key was live.
    pub fn delete_prefix(&self, prefix: &str) -> Option<Revision> {
        let ops = {
            let state = self.shared.lock();
            state
                .live_at(prefix, prefix, state.revision)
                .map(|kv| Op::Delete { key: kv.key })
                .collect::<Vec<_>>()
        };
        // A concurrent delete of one of these keys turns its op into a no-op, as in etcd.
        self.commit(ops)
    }

    /// Applies `ops` atomically at one revision and returns it. Watches deliver all of the
    /// transaction's changes under their prefix as one batch, in the order of `ops`.
    ///
    /// When no op changes anything (deletes of absent keys only, or no ops), the revision stays
    /// and the current revision is returned, as etcd does.
    ///
    /// # Errors
    /// [`TxnError::DuplicateKey`] when two ops write the same key. Nothing is applied then.
    pub fn txn(&self, ops: Vec<Op>) -> Result<Revision, TxnError> {
        let mut seen = HashSet::with_capacity(ops.len());
        for op in &ops {
            if !seen.insert(op.key().clone()) {
                return Err(TxnError::DuplicateKey {
                    key: op.key().clone(),
                });
            }
        }

        let revision = self.commit(ops);
        Ok(revision.unwrap_or_else(|| self.revision()))
    }

    fn commit(&self, ops: Vec<Op>) -> Option<Revision> {
        let revision = self.shared.lock().commit(ops);
        if revision.is_some() {
            self.shared.notify();
        }
        revision
    }

    /// Returns the current value of `key`, or `None` when the key is absent.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.shared.lock().get(key)
    }

    /// Returns every live key under `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        let state = self.shared.lock();
        state.live_at(prefix, prefix, state.revision).collect()
    }

    /// Returns every key under `prefix` that was live at `revision`, in key order, with the
    /// values it had then.
    ///
    /// # Errors
    /// [`RevisionError::Compacted`] below the compact revision, [`RevisionError::Future`] above
    /// the current revision.
    pub fn range_at(
        &self,
        prefix: &str,
        revision: Revision,
    ) -> Result<Vec<KeyValue>, RevisionError> {
        let state = self.shared.lock();
        state.check_readable(revision)?;
        Ok(state.live_at(prefix, prefix, revision).collect())
    }

    /// Returns the revision of the last write.
    pub fn revision(&self) -> Revision {
        self.shared.lock().revision
    }

    /// Returns the compact revision: 0 before the first compaction.
    pub fn compact_revision(&self) -> Revision {
        self.shared.lock().compact_revision
    }

    /// Drops the history below `revision`, keeping the state at `revision` and every change from
    /// `revision` on.
    ///
    /// Afterwards, as in etcd, reads at `revision` or later work and reads below it fail. A watch
    /// from `revision` or later works and replays every change from `revision` on. A watch whose
    /// next revision is below `revision`, including one that was open and fell behind, fails
    /// with [`ErrorClass::Expired`](crate::source::ErrorClass::Expired).
    ///
    /// # Errors
    /// [`RevisionError::Future`] above the current revision,
    /// [`RevisionError::AlreadyCompacted`] at or below the compact revision.
    pub fn compact(&self, revision: Revision) -> Result<(), RevisionError> {
        self.shared.lock().compact(revision)?;
        tracing::info!(revision, "memory store compacted");
        self.shared.notify();
        Ok(())
    }

    /// Makes the store compact itself so it keeps between `retention` and `2 × retention`
    /// revisions of history, or turns that off with `None` (the default).
    ///
    /// This bounds the store's memory to the live keys plus at most `2 × retention` revisions of
    /// changes. A watch that falls more than `retention` revisions behind may find its position
    /// compacted and fail with [`ErrorClass::Expired`](crate::source::ErrorClass::Expired).
    pub fn set_auto_compaction(&self, retention: Option<NonZeroU64>) {
        let mut state = self.shared.lock();
        state.auto_compaction = retention;
        state.auto_compact();
    }

    /// Returns the number of changes kept for watches to replay. Compaction shrinks it.
    pub fn history_len(&self) -> usize {
        self.shared.lock().events.len()
    }

    /// Returns the number of watch streams that are open (neither dropped nor ended).
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// Returns the handle that injects faults into this store's lists and watches.
    pub fn faults(&self) -> Faults {
        Faults::new(self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kv: &KeyValue) -> &[u8] {
        kv.value.as_ref()
    }

    #[test]
    fn put_revisions() {
        let store = MemoryStore::new();
        assert_eq!(store.revision(), INITIAL_REVISION);

        assert_eq!(store.put("/a", "1"), 2);
        assert_eq!(store.put("/a", "2"), 3);
        assert_eq!(store.put("/b", "1"), 4);
        assert_eq!(store.revision(), 4);

        let a = store.get("/a").unwrap();
        assert_eq!(value(&a), b"2");
        assert_eq!(a.create_revision, 2);
        assert_eq!(a.mod_revision, 3);
        assert_eq!(a.version, 2);

        let b = store.get("/b").unwrap();
        assert_eq!(b.create_revision, 4);
        assert_eq!(b.version, 1);
    }

    #[test]
    fn get_exact_key() {
        let store = MemoryStore::new();
        store.put("/ab", "1");
        assert!(store.get("/a").is_none());
        assert_eq!(store.get("/ab").unwrap().key.as_ref(), "/ab");
    }

    #[test]
    fn delete_absent() {
        let store = MemoryStore::new();
        store.put("/a", "1");
        assert_eq!(store.delete("/b"), None);
        assert_eq!(store.revision(), 2);

        assert_eq!(store.delete("/a"), Some(3));
        assert_eq!(store.delete("/a"), None);
        assert_eq!(store.revision(), 3);
        assert!(store.get("/a").is_none());
    }

    #[test]
    fn delete_recreate() {
        let store = MemoryStore::new();
        store.put("/a", "1");
        store.put("/a", "2");
        store.delete("/a");
        let revision = store.put("/a", "3");

        let a = store.get("/a").unwrap();
        assert_eq!(a.create_revision, revision);
        assert_eq!(a.version, 1);
    }

    #[test]
    fn txn_one_revision() {
        let store = MemoryStore::new();
        store.put("/gone", "x");
        let revision = store
            .txn(vec![
                Op::put("/a", "1"),
                Op::put("/b", "2"),
                Op::delete("/gone"),
                Op::delete("/absent"),
            ])
            .unwrap();
        assert_eq!(revision, 3);
        assert_eq!(store.get("/a").unwrap().mod_revision, 3);
        assert_eq!(store.get("/b").unwrap().mod_revision, 3);
        assert!(store.get("/gone").is_none());
        assert_eq!(store.history_len(), 4);
    }

    #[test]
    fn txn_duplicate_key() {
        let store = MemoryStore::new();
        let error = store
            .txn(vec![Op::put("/a", "1"), Op::delete("/a")])
            .unwrap_err();
        assert_eq!(error, TxnError::DuplicateKey { key: "/a".into() });
        assert_eq!(store.revision(), INITIAL_REVISION);
        assert!(store.get("/a").is_none());
    }

    #[test]
    fn txn_noop() {
        let store = MemoryStore::new();
        store.put("/a", "1");
        assert_eq!(store.txn(vec![]).unwrap(), 2);
        assert_eq!(store.txn(vec![Op::delete("/b")]).unwrap(), 2);
        assert_eq!(store.revision(), 2);
    }

    #[test]
    fn delete_prefix_one_txn() {
        let store = MemoryStore::new();
        store.put("/app/a", "1");
        store.put("/app/b", "1");
        store.put("/other", "1");
        assert_eq!(store.delete_prefix("/app/"), Some(5));
        assert!(store.range("/app/").is_empty());
        assert!(store.get("/other").is_some());
        assert_eq!(store.delete_prefix("/app/"), None);
    }

    #[test]
    fn range_at_history() {
        let store = MemoryStore::new();
        let first = store.put("/a", "1");
        store.put("/b", "1");
        store.put("/a", "2");
        store.delete("/b");

        let then = store.range_at("/", first).unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!(value(&then[0]), b"1");

        let now = store.range("/");
        assert_eq!(now.len(), 1);
        assert_eq!(value(&now[0]), b"2");

        assert_eq!(
            store.range_at("/", 99),
            Err(RevisionError::Future {
                revision: 99,
                current: 5
            })
        );
    }

    #[test]
    fn range_prefix_bounds() {
        let store = MemoryStore::new();
        store.put("/ap", "1");
        store.put("/app/a", "1");
        store.put("/app/b", "1");
        store.put("/apq", "1");
        let keys: Vec<_> = store
            .range("/app/")
            .into_iter()
            .map(|kv| kv.key.to_string())
            .collect();
        assert_eq!(keys, ["/app/a", "/app/b"]);
    }

    #[test]
    fn compact_keeps_state() {
        let store = MemoryStore::new();
        store.put("/a", "1");
        store.put("/a", "2");
        store.put("/b", "1");
        store.delete("/b");
        let at = store.put("/c", "1");
        store.put("/a", "3");

        store.compact(at).unwrap();
        assert_eq!(store.compact_revision(), at);

        let then = store.range_at("/", at).unwrap();
        let keys: Vec<_> = then
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("/a".to_owned(), Bytes::from("2")),
                ("/c".to_owned(), Bytes::from("1"))
            ]
        );
        assert_eq!(
            store.range_at("/", at - 1),
            Err(RevisionError::Compacted {
                revision: at - 1,
                compact_revision: at
            })
        );

        // The changes at the compact revision and after it stay for watches.
        assert_eq!(store.history_len(), 2);
        // `/b` is gone from every readable revision, so the store dropped it.
        assert_eq!(store.shared.lock().keys.len(), 2);
    }

    #[test]
    fn compact_tombstone_at_revision() {
        let store = MemoryStore::new();
        store.put("/a", "1");
        let deleted = store.delete("/a").unwrap();
        store.compact(deleted).unwrap();

        assert!(store.range_at("/", deleted).unwrap().is_empty());
        assert_eq!(store.history_len(), 1);
        let recreated = store.put("/a", "2");
        assert_eq!(store.get("/a").unwrap().create_revision, recreated);
    }

    #[test]
    fn compact_errors() {
        let store = MemoryStore::new();
        store.put("/a", "1");
        store.put("/a", "2");
        assert_eq!(
            store.compact(4),
            Err(RevisionError::Future {
                revision: 4,
                current: 3
            })
        );
        store.compact(3).unwrap();
        assert_eq!(
            store.compact(3),
            Err(RevisionError::AlreadyCompacted {
                revision: 3,
                compact_revision: 3
            })
        );
        assert_eq!(
            store.compact(2),
            Err(RevisionError::AlreadyCompacted {
                revision: 2,
                compact_revision: 3
            })
        );
    }

    #[test]
    fn auto_compaction_bounds_history() {
        let store = MemoryStore::new();
        store.set_auto_compaction(NonZeroU64::new(10));
        for i in 0..1000 {
            store.put(format!("/k{}", i % 7), "v");
            assert!(
                store.history_len() <= 20,
                "history grew to {}",
                store.history_len()
            );
            assert!(store.revision() - store.compact_revision() <= 20);
        }
        assert!(store.revision() - store.compact_revision() >= 10);
        assert_eq!(store.range("/").len(), 7);
    }

    #[test]
    fn next_batch_groups_revision() {
        let store = MemoryStore::new();
        store.put("/other/x", "1");
        store
            .txn(vec![
                Op::put("/app/b", "1"),
                Op::put("/other/y", "1"),
                Op::put("/app/a", "1"),
            ])
            .unwrap();
        store.put("/app/c", "1");

        let state = store.shared.lock();
        let mut cursor = 2;
        let batch = state.next_batch("/app/", &mut cursor).unwrap();
        assert_eq!(batch.revision, 3);
        let keys: Vec<_> = batch.changes.iter().map(|c| c.key().to_string()).collect();
        assert_eq!(keys, ["/app/b", "/app/a"]);
        assert_eq!(cursor, 4);

        let batch = state.next_batch("/app/", &mut cursor).unwrap();
        assert_eq!(batch.revision, 4);
        assert_eq!(cursor, 5);

        assert!(state.next_batch("/app/", &mut cursor).is_none());
        assert_eq!(cursor, 5);

        let mut future = 9;
        assert!(state.next_batch("/app/", &mut future).is_none());
        assert_eq!(future, 9);
    }
}
