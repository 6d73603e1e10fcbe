//! The cache's single writer: applies watch batches and relists.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLockWriteGuard;
use tracing::{debug, info, warn};

use super::{Cached, Entry, InvalidEntry, InvalidValue, State, Store};
use crate::decode::{DecodeError, Decoder};
use crate::notify::{Event, Shape};
use crate::source::{Batch, Change, Incarnation, Object, Revision};

/// The only handle that changes a cache. The reflector owns it.
pub struct Writer<V, D: Decoder<V>> {
    store: Store<D::Output>,
    decoder: D,
    _value: PhantomData<fn(V)>,
}

/// The counts of changes a finished relist applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelistSummary {
    /// Keys that were not cached before.
    pub added: usize,
    /// Keys whose value changed.
    pub updated: usize,
    /// Keys that vanished. A key whose incarnation changed counts as updated, although its
    /// handlers see a delete and then an add.
    pub deleted: usize,
    /// Keys whose value was the same as before.
    pub unchanged: usize,
    /// Values that failed to decode.
    pub invalid: usize,
}

impl RelistSummary {
    fn count(&mut self, stored: Stored) {
        match stored {
            Stored::Invalid => self.invalid += 1,
            Stored::Added => self.added += 1,
            Stored::Replaced => self.updated += 1,
        }
    }
}

impl<T> Fresh<T> {
    /// Turns the built contents back into steps for [`put`].
    fn into_steps(self) -> Vec<Step<T>> {
        let State {
            entries, invalid, ..
        } = self.state;
        let good = entries.into_iter().map(|(key, entry)| {
            let Cached {
                revision,
                incarnation,
                value,
                ..
            } = entry.cached;
            let meta = Meta {
                key,
                revision,
                incarnation,
            };
            Step::Put(meta, Ok(value))
        });
        let bad = invalid.into_iter().map(|(key, entry)| {
            let InvalidValue {
                revision,
                incarnation,
                error,
            } = entry.value;
            let meta = Meta {
                key,
                revision,
                incarnation,
            };
            Step::Put(meta, Err(error))
        });
        good.chain(bad).collect()
    }
}

/// The version of a value without the value.
struct Meta {
    key: Arc<str>,
    revision: Revision,
    incarnation: Incarnation,
}

/// One decoded change, ready to apply under the write lock.
enum Step<T> {
    Put(Meta, Result<Arc<T>, DecodeError>),
    Delete(Arc<str>, Revision),
}

/// Whether a delete was observed or inferred by a relist.
#[derive(Clone, Copy)]
enum DeleteKind {
    Observed,
    Inferred,
}

impl<V, D> Writer<V, D>
where
    D: Decoder<V>,
{
    /// Creates a writer for `store`. A store has one writer; two writers on one store would
    /// break the per-key revision order.
    pub fn new(store: Store<D::Output>, decoder: D) -> Self {
        Writer {
            store,
            decoder,
            _value: PhantomData,
        }
    }

    /// Returns a read handle on the store.
    pub fn store(&self) -> &Store<D::Output> {
        &self.store
    }

    fn decode(&self, object: Object<V>) -> (Meta, Result<Arc<D::Output>, DecodeError>) {
        let decoded = self
            .decoder
            .decode(&object.key, &object.value)
            .map(Arc::new);
        let meta = Meta {
            key: object.key,
            revision: object.revision,
            incarnation: object.incarnation,
        };
        (meta, decoded)
    }

    /// Applies one watch batch as a unit, then notifies the handlers.
    ///
    /// Values are decoded before the write lock is taken. A put at or below the key's cached
    /// revision is dropped as a duplicate.
    pub fn apply(&self, batch: Batch<V>) {
        let steps: Vec<Step<D::Output>> = batch
            .changes
            .into_iter()
            .map(|change| match change {
                Change::Put(object) => {
                    let (meta, decoded) = self.decode(object);
                    Step::Put(meta, decoded)
                }
                Change::Delete { key, revision } => Step::Delete(key, revision),
            })
            .collect();

        let shared = &self.store.shared;
        let mut state = shared.state.write();
        let mut events = Vec::with_capacity(steps.len());
        for step in steps {
            match step {
                Step::Put(meta, decoded) => {
                    if current_revision(&state, &meta.key).is_some_and(|r| r >= meta.revision) {
                        debug!(source = %shared.name, key = ?meta.key, revision = meta.revision, "dropping duplicate change");
                        continue;
                    }
                    put(&mut state, shared, meta, decoded, 0, true, &mut events);
                }
                Step::Delete(key, revision) => {
                    if current_revision(&state, &key).is_some_and(|r| r >= revision) {
                        debug!(source = %shared.name, key = ?key, revision, "dropping stale delete");
                        continue;
                    }
                    remove(&mut state, &key, DeleteKind::Observed, &mut events);
                }
            }
        }
        state.revision = state.revision.max(batch.revision);
        shared.source_metrics.set_cache_objects(state.entries.len());
        dispatch(&state, events, Shape::Changes);
    }

    /// Records that the source has no changes up to `revision`.
    pub fn progress(&self, revision: Revision) {
        let mut state = self.store.shared.state.write();
        state.revision = state.revision.max(revision);
    }

    /// Starts a relist. Feed it every page with [`Relist::add_page`], then call
    /// [`Relist::finish`]. Dropping it unfinished leaves the cache as it was.
    ///
    /// A relist into an empty cache, such as the first list, builds the new contents aside
    /// while the pages arrive, and [`Relist::finish`] swaps them in. Otherwise each page is
    /// compared with the cache and only the changed values are kept until the end.
    pub fn relist(&self) -> Relist<'_, V, D> {
        let (epoch, empty) = {
            let mut state = self.store.shared.state.write();
            state.epoch += 1;
            (
                state.epoch,
                state.entries.is_empty() && state.invalid.is_empty(),
            )
        };
        Relist {
            writer: self,
            epoch,
            staged: Vec::new(),
            fresh: empty.then(|| Fresh {
                state: State::empty(),
                events: Vec::new(),
            }),
            summary: RelistSummary::default(),
        }
    }
}

/// The contents of a relist into an empty cache, built outside the store's lock.
struct Fresh<T> {
    /// Entries and invalid values, without handlers or indexes.
    state: State<T>,
    /// The `Added` events of the new contents, in list order.
    events: Vec<Event<T>>,
}

/// A relist in progress. See [`Writer::relist`].
pub struct Relist<'w, V, D: Decoder<V>> {
    writer: &'w Writer<V, D>,
    epoch: u64,
    /// Values that differ from the cache, decoded and waiting for [`Relist::finish`].
    staged: Vec<Step<D::Output>>,
    /// Set when the cache was empty at the start.
    fresh: Option<Fresh<D::Output>>,
    summary: RelistSummary,
}

impl<'w, V, D> Relist<'w, V, D>
where
    D: Decoder<V>,
{
    /// Returns true when the relist started on an empty cache, as a first list does.
    pub fn fills_empty_cache(&self) -> bool {
        self.fresh.is_some()
    }

    /// Compares one page with the cache. Unchanged values are marked as seen and dropped;
    /// changed and new ones are decoded and staged.
    ///
    /// In a relist into an empty cache, every value is decoded and stored aside instead. The
    /// expensive part of a first list, decoding and filling the hash table, then happens while
    /// the reflector fetches the next page, and readers still see the whole list at once.
    pub fn add_page(&mut self, objects: Vec<Object<V>>) {
        if let Some(fresh) = &mut self.fresh {
            let shared = &self.writer.store.shared;
            fresh.state.entries.reserve(objects.len());
            fresh.events.reserve(objects.len());
            for object in objects {
                let (meta, decoded) = self.writer.decode(object);
                // Failures are reported when the contents reach the store, so that a list
                // that is dropped or retried does not report them again.
                let stored = put(
                    &mut fresh.state,
                    shared,
                    meta,
                    decoded,
                    self.epoch,
                    false,
                    &mut fresh.events,
                );
                self.summary.count(stored);
            }
            return;
        }
        let mut changed = Vec::new();
        {
            let state = self.writer.store.shared.state.read();
            for object in objects {
                if mark_if_unchanged(&state, &object, self.epoch) {
                    self.summary.unchanged += 1;
                } else {
                    changed.push(object);
                }
            }
        }
        self.staged.extend(changed.into_iter().map(|object| {
            let (meta, decoded) = self.writer.decode(object);
            Step::Put(meta, decoded)
        }));
    }

    /// Applies the staged changes and removes every key the new snapshot lacks, in one step
    /// under the write lock, then notifies the handlers. A relist into an empty cache swaps
    /// the contents built by [`Relist::add_page`] in.
    pub fn finish(mut self, revision: Revision) -> RelistSummary {
        let writer = self.writer;
        let shared = &writer.store.shared;
        let mut state = shared.state.write();
        let mut events = Vec::new();

        if let Some(fresh) = self.fresh.take() {
            if state.entries.is_empty() && state.invalid.is_empty() {
                // Every key of the new contents was seen in this relist, so nothing vanished.
                let Fresh {
                    state: built,
                    events: added,
                } = fresh;
                for (key, invalid) in &built.invalid {
                    let value = &invalid.value;
                    report_decode_error(shared, key, value.revision, &value.error);
                }
                state.entries = built.entries;
                state.invalid = built.invalid;
                let State {
                    entries, indexes, ..
                } = &mut *state;
                if !indexes.is_empty() {
                    for (key, entry) in entries.iter() {
                        indexes.insert(key, &entry.cached.value);
                    }
                }
                return self.publish(state, revision, added);
            }
            // The writer applied a batch while the relist ran: put the built contents through
            // the same path as staged values.
            self.summary = RelistSummary::default();
            self.staged = fresh.into_steps();
        }

        let staged = std::mem::take(&mut self.staged);
        // Growing the table once is cheaper than doubling it step by step when many keys are
        // new.
        state.entries.reserve(staged.len());
        events.reserve(staged.len());
        for step in staged {
            let Step::Put(meta, decoded) = step else {
                continue;
            };
            let stored = put(
                &mut state,
                shared,
                meta,
                decoded,
                self.epoch,
                true,
                &mut events,
            );
            self.summary.count(stored);
        }

        let vanished: Vec<Arc<str>> = state
            .entries
            .iter()
            .filter(|(_, entry)| entry.seen.load(Ordering::Relaxed) != self.epoch)
            .map(|(key, _)| key.clone())
            .collect();
        self.summary.deleted += vanished.len();
        for key in vanished {
            remove(&mut state, &key, DeleteKind::Inferred, &mut events);
        }
        let epoch = self.epoch;
        state
            .invalid
            .retain(|_, invalid| invalid.seen.load(Ordering::Relaxed) == epoch);
        self.publish(state, revision, events)
    }

    /// Records the revision, logs the summary and notifies the handlers, still under the
    /// write lock.
    fn publish(
        self,
        mut state: RwLockWriteGuard<'w, State<D::Output>>,
        revision: Revision,
        mut events: Vec<Event<D::Output>>,
    ) -> RelistSummary {
        let shared = &self.writer.store.shared;
        state.revision = revision;
        shared.source_metrics.set_cache_objects(state.entries.len());
        info!(
            source = %shared.name,
            revision,
            added = self.summary.added,
            updated = self.summary.updated,
            deleted = self.summary.deleted,
            unchanged = self.summary.unchanged,
            invalid = self.summary.invalid,
            "applied list"
        );
        // The difference of a relist reaches handlers in key order, which makes runs
        // reproducible.
        events.sort_by(|a: &Event<D::Output>, b| a.key().cmp(b.key()));
        dispatch(&state, events, Shape::Snapshot);
        self.summary
    }
}

/// Returns the revision the cache holds for `key`, counting a value that failed to decode.
fn current_revision<T>(state: &State<T>, key: &str) -> Option<Revision> {
    let good = state.entries.get(key).map(|entry| entry.cached.revision);
    let bad = state.invalid.get(key).map(|invalid| invalid.value.revision);
    good.max(bad)
}

/// Marks `object`'s key as seen in this relist when the cache already contains this exact version.
fn mark_if_unchanged<T, V>(state: &State<T>, object: &Object<V>, epoch: u64) -> bool {
    let same = |revision: Revision, incarnation: &Incarnation| {
        revision == object.revision && *incarnation == object.incarnation
    };
    if let Some(invalid) = state.invalid.get(&object.key) {
        if !same(invalid.value.revision, &invalid.value.incarnation) {
            return false;
        }
        invalid.seen.store(epoch, Ordering::Relaxed);
        if let Some(entry) = state.entries.get(&object.key) {
            // The last good value of the same incarnation stays.
            entry.seen.store(epoch, Ordering::Relaxed);
        }
        return true;
    }
    match state.entries.get(&object.key) {
        Some(entry) if same(entry.cached.revision, &entry.cached.incarnation) => {
            entry.seen.store(epoch, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

/// The outcome of [`put`] for one value.
enum Stored {
    /// The value failed to decode.
    Invalid,
    /// The key had no good value before.
    Added,
    /// The value replaced a good value of the key.
    Replaced,
}

/// Stores a new version of a key and records the events it causes.
///
/// A value that failed to decode is logged and counted unless `report` is false, as for
/// contents built aside, which are reported once they reach the store.
fn put<T>(
    state: &mut State<T>,
    shared: &super::Shared<T>,
    meta: Meta,
    decoded: Result<Arc<T>, DecodeError>,
    epoch: u64,
    report: bool,
    events: &mut Vec<Event<T>>,
) -> Stored {
    let Meta {
        key,
        revision,
        incarnation,
    } = meta;

    let value = match decoded {
        Ok(value) => value,
        Err(error) => {
            if report {
                report_decode_error(shared, &key, revision, &error);
            }
            // A last good value of an older incarnation belongs to a deleted key.
            if state
                .entries
                .get(&key)
                .is_some_and(|entry| entry.cached.incarnation != incarnation)
            {
                remove(state, &key, DeleteKind::Inferred, events);
            }
            if let Some(entry) = state.entries.get(&key) {
                entry.seen.store(epoch, Ordering::Relaxed);
            }
            state.invalid.insert(
                key,
                InvalidEntry {
                    value: InvalidValue {
                        revision,
                        incarnation,
                        error,
                    },
                    seen: AtomicU64::new(epoch),
                },
            );
            return Stored::Invalid;
        }
    };

    state.invalid.remove(&key);
    let cached = Cached {
        key: key.clone(),
        revision,
        incarnation,
        value,
    };
    let new_entry = Entry {
        cached: cached.clone(),
        seen: AtomicU64::new(epoch),
    };
    let old = state.entries.insert(key.clone(), new_entry);
    if let Some(old) = &old {
        state.indexes.remove(&key, &old.cached.value);
    }
    state.indexes.insert(&key, &cached.value);
    match old {
        None => {
            events.push(Event::Added(cached));
            Stored::Added
        }
        Some(old) => {
            if old.cached.incarnation == cached.incarnation {
                events.push(Event::Updated {
                    old: old.cached,
                    new: cached,
                });
            } else {
                events.push(Event::DeletedFinalStateUnknown(old.cached));
                events.push(Event::Added(cached));
            }
            Stored::Replaced
        }
    }
}

/// Logs and counts a value that failed to decode.
fn report_decode_error<T>(
    shared: &super::Shared<T>,
    key: &Arc<str>,
    revision: Revision,
    error: &DecodeError,
) {
    warn!(source = %shared.name, key = ?key, revision, error = %error, "skipping a value that failed to decode; the key keeps its last good value, if it has one");
    shared.metrics.decode_error(&shared.name);
}

/// Removes a key and records the delete event, if the key held a value.
fn remove<T>(state: &mut State<T>, key: &Arc<str>, kind: DeleteKind, events: &mut Vec<Event<T>>) {
    state.invalid.remove(key);
    let Some(old) = state.entries.remove(key) else {
        return;
    };
    state.indexes.remove(key, &old.cached.value);
    events.push(match kind {
        DeleteKind::Observed => Event::Deleted(old.cached),
        DeleteKind::Inferred => Event::DeletedFinalStateUnknown(old.cached),
    });
}

/// Hands events to every registered handler. Runs under the write lock, so a handler that
/// registers concurrently receives either all of these events or a snapshot that includes them.
fn dispatch<T>(state: &State<T>, events: Vec<Event<T>>, shape: Shape) {
    let Some((last, others)) = state.handlers.split_last() else {
        return;
    };
    if events.is_empty() {
        return;
    }
    for handler in others {
        handler.push_all(&events, shape);
    }
    // The last handler takes the events themselves, which saves a clone of each.
    last.push_owned(events, shape);
}
