//! Notify: event handlers fed from the cache, with bounded buffers and periodic resync.
//!
//! Register a handler on a [`Store`] with [`Store::register`]. Each handler runs on a task of
//! its own, so a slow handler never blocks the reflector or the other handlers.
//!
//! # Buffering policy
//! Each handler has a buffer that holds at most one pending entry per key, so its size is
//! bounded by the number of distinct keys, whatever the event rate. When a new event arrives
//! for a key that already waits, the two are merged into the net change the handler has not
//! seen yet:
//!
//! | pending            | new                 | result                          |
//! |--------------------|---------------------|---------------------------------|
//! | `Added(a)`         | `Updated(_, b)`     | `Added(b)`                      |
//! | `Added(a)`         | a delete            | nothing (the handler never saw `a`) |
//! | `Updated(o, a)`    | `Updated(_, b)`     | `Updated(o, b)`                 |
//! | `Updated(o, a)`    | a delete of `b`     | that delete                     |
//! | a delete of `x`    | `Added(b)`          | the delete, then `Added(b)`     |
//! | delete, `Added(a)` | `Updated(_, b)`     | the delete, then `Added(b)`     |
//! | `Resync(a)`        | anything            | the new event                   |
//! | anything           | `Resync(_)`         | unchanged                       |
//!
//! A handler that keeps up sees every event. A handler that lags sees fewer, larger steps, but
//! never a stale value after a newer one, and never an update across a delete. Merges are
//! counted in `informer_notify_coalesced`.
//!
//! A large list, relist difference or registration snapshot that arrives while nothing waits
//! is kept as it came, without the per-key table: the handler takes its events in order. Such
//! a batch contains at most two events per key, so the bound stays. Watch batches always go
//! through the table. When another event arrives before the handler has taken the whole
//! batch, the rest of the batch moves into the table first and merging applies as above.
//!
//! # Order
//! Events of one key arrive in order. Across keys, a key keeps the place in the buffer where it
//! first started waiting.
//!
//! # Resync
//! A handler registered with a resync period receives [`Event::Resync`] for every cached value
//! each period, except for keys that already have a pending event. A resync reads the cache and
//! never contacts the server.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, error, info};

use crate::cache::{Cached, Store};
use crate::metrics::HandlerMetrics;

/// A change of the cache, as handlers see it.
#[derive(Debug)]
pub enum Event<T> {
    /// A key appeared, or the handler was registered while it existed.
    Added(Cached<T>),
    /// A key changed within the same incarnation.
    Updated {
        /// The value the handler saw last.
        old: Cached<T>,
        /// The new value.
        new: Cached<T>,
    },
    /// A watch reported the key deleted. The value is the last one the cache held.
    Deleted(Cached<T>),
    /// A relist found the key gone, or found it recreated with a new incarnation. The key was
    /// deleted while the watch was away, so its final state before the delete is unknown. The
    /// value is the last one the cache contained.
    DeletedFinalStateUnknown(Cached<T>),
    /// A periodic resync re-delivers the cached value so a handler can repair drift.
    Resync(Cached<T>),
}

impl<T> Clone for Event<T> {
    fn clone(&self) -> Self {
        match self {
            Event::Added(c) => Event::Added(c.clone()),
            Event::Updated { old, new } => Event::Updated {
                old: old.clone(),
                new: new.clone(),
            },
            Event::Deleted(c) => Event::Deleted(c.clone()),
            Event::DeletedFinalStateUnknown(c) => Event::DeletedFinalStateUnknown(c.clone()),
            Event::Resync(c) => Event::Resync(c.clone()),
        }
    }
}

impl<T> Event<T> {
    /// Returns the key the event is about.
    pub fn key(&self) -> &Arc<str> {
        &self.object().key
    }

    /// Returns the newest value the event carries: the new value of an update, the last value
    /// of a delete.
    pub fn object(&self) -> &Cached<T> {
        match self {
            Event::Added(c)
            | Event::Deleted(c)
            | Event::DeletedFinalStateUnknown(c)
            | Event::Resync(c) => c,
            Event::Updated { new, .. } => new,
        }
    }

    /// Returns true for both kinds of delete.
    pub fn is_delete(&self) -> bool {
        matches!(self, Event::Deleted(_) | Event::DeletedFinalStateUnknown(_))
    }
}

/// Receives events on the handler's own task.
///
/// A handler should be quick, for example push the key onto a workqueue. A handler that panics
/// is logged and counted, and the next event is delivered as usual.
pub trait Handler<T>: Send + 'static {
    /// Handles one event.
    fn handle(&mut self, event: Event<T>);
}

impl<T, F> Handler<T> for F
where
    F: FnMut(Event<T>) + Send + 'static,
{
    fn handle(&mut self, event: Event<T>) {
        self(event)
    }
}

/// Registration options of a handler.
#[derive(Clone, Debug)]
pub struct HandlerOptions {
    /// The handler's name in logs and metrics.
    pub name: String,
    /// How often to re-deliver the cached values as [`Event::Resync`], or `None` for never.
    pub resync: Option<Duration>,
}

impl HandlerOptions {
    /// Options for a handler named `name`, without resync.
    pub fn new(name: impl Into<String>) -> Self {
        HandlerOptions {
            name: name.into(),
            resync: None,
        }
    }

    /// Sets the resync period.
    pub fn resync(mut self, period: Duration) -> Self {
        self.resync = Some(period);
        self
    }
}

/// The smallest batch that an empty buffer keeps as it came, without indexing it by key.
const BULK_EVENTS: usize = 1024;

/// The number of keys a drained buffer keeps room for. A buffer that held more frees the rest
/// once it is empty.
const RETAINED_KEYS: usize = 1024;

/// The events waiting for one key: at most a delete followed by an add or update.
struct Pending<T> {
    first: Option<Event<T>>,
    /// Boxed because it is rarely set: a pending key costs the size of one event, not two.
    then: Option<Box<Event<T>>>,
}

impl<T> Pending<T> {
    fn len(&self) -> usize {
        self.first.is_some() as usize + self.then.is_some() as usize
    }

    /// Returns the events in delivery order.
    fn into_events(self) -> impl Iterator<Item = Event<T>> {
        self.first.into_iter().chain(self.then.map(|event| *event))
    }
}

/// A handler's bounded buffer. Invariant: every key in `pending` is in `order` exactly once,
/// and `order` contains no other key, so both are bounded by the number of distinct keys.
struct Buffer<T> {
    /// A large batch that arrived while the buffer was empty, in arrival order and not indexed
    /// by key. While it is not empty, `order` and `pending` are empty.
    bulk: VecDeque<Event<T>>,
    order: VecDeque<Arc<str>>,
    pending: HashMap<Arc<str>, Pending<T>>,
    /// Number of events in `pending`.
    events: usize,
    closed: bool,
}

impl<T> Buffer<T> {
    /// Merges `event` into the key's pending events. Returns true when the event was merged
    /// into or cancelled against an existing one.
    fn push(&mut self, event: Event<T>) -> bool {
        if !self.bulk.is_empty() {
            self.index_bulk();
        }
        let key = event.key().clone();
        let pending = match self.pending.entry(key) {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(vacant) => {
                self.order.push_back(vacant.key().clone());
                vacant.insert(Pending {
                    first: Some(event),
                    then: None,
                });
                self.events += 1;
                return false;
            }
        };

        let before = pending.len();
        merge(pending, event);
        let after = pending.len();
        self.events = self.events + after - before;
        true
    }

    /// Returns true when no event waits.
    fn is_empty(&self) -> bool {
        self.bulk.is_empty() && self.pending.is_empty()
    }

    /// Keeps a large batch as it came. The buffer must be empty.
    fn push_bulk(&mut self, events: Vec<Event<T>>) {
        debug_assert!(self.is_empty());
        self.events += events.len();
        self.bulk = events.into();
    }

    /// Moves the rest of a bulk batch into the per-key table, in order, so that a new event can
    /// merge with it.
    fn index_bulk(&mut self) {
        let bulk = std::mem::take(&mut self.bulk);
        self.events -= bulk.len();
        self.pending.reserve(bulk.len());
        self.order.reserve(bulk.len());
        for event in bulk {
            self.push(event);
        }
    }

    /// Takes the events of the key that has waited longest.
    fn pop(&mut self) -> Option<Pending<T>> {
        if let Some(event) = self.bulk.pop_front() {
            self.events -= 1;
            if self.bulk.is_empty() {
                // Frees the batch's memory.
                self.bulk = VecDeque::new();
            }
            return Some(Pending {
                first: Some(event),
                then: None,
            });
        }
        while let Some(key) = self.order.pop_front() {
            let Some(pending) = self.pending.remove(&key) else {
                continue;
            };
            if self.pending.is_empty() {
                self.release_capacity();
            }
            let count = pending.len();
            self.events -= count;
            if count > 0 {
                return Some(pending);
            }
        }
        None
    }

    /// Frees the tables of a drained burst. A list of many keys grows them to one slot per
    /// key, and a hash table never shrinks by itself.
    fn release_capacity(&mut self) {
        if self.pending.capacity() > RETAINED_KEYS {
            self.pending.shrink_to(RETAINED_KEYS);
        }
        if self.order.capacity() > RETAINED_KEYS {
            self.order.shrink_to(RETAINED_KEYS);
        }
    }
}

/// Merges `new` into the pending events of its key, following the table in the module docs.
fn merge<T>(pending: &mut Pending<T>, new: Event<T>) {
    if matches!(new, Event::Resync(_)) {
        if pending.first.is_none() {
            pending.first = Some(new);
        }
        return;
    }

    // An add after a delete waits behind it.
    if let Some(then) = pending.then.take() {
        pending.then = merge_one(*then, new).map(Box::new);
        return;
    }

    match pending.first.take() {
        None => pending.first = Some(new),
        Some(first) if first.is_delete() => {
            if let Event::Added(_) = new {
                pending.first = Some(first);
                pending.then = Some(Box::new(new));
            } else {
                // An update or another delete after a delete cannot come from the cache;
                // keep the newest.
                pending.first = Some(new);
            }
        }
        Some(first) => pending.first = merge_one(first, new),
    }
}

/// Merges two events of one key that are not separated by a delete.
fn merge_one<T>(old: Event<T>, new: Event<T>) -> Option<Event<T>> {
    match (old, new) {
        (Event::Resync(_), new) => Some(new),
        (Event::Added(_), Event::Updated { new, .. }) => Some(Event::Added(new)),
        (Event::Added(_), new) if new.is_delete() => None,
        (Event::Updated { old, .. }, Event::Updated { new, .. }) => {
            Some(Event::Updated { old, new })
        }
        (_, new) => Some(new),
    }
}

/// The kind of event set handed to a handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The changes of watch batches: a key may change any number of times.
    Changes,
    /// A list, a relist's difference or a registration snapshot: at most two events per key,
    /// such as a delete and then an add. A large one may wait unindexed in an empty buffer.
    Snapshot,
}

/// The cache's side of a registered handler.
pub(crate) struct HandlerSlot<T> {
    name: Arc<str>,
    buffer: Mutex<Buffer<T>>,
    wake: Notify,
    metrics: HandlerMetrics,
}

impl<T> HandlerSlot<T> {
    /// Queues copies of events for the handler. Never blocks on the handler.
    pub(crate) fn push_all(&self, events: &[Event<T>], shape: Shape) {
        if shape == Shape::Snapshot && events.len() >= BULK_EVENTS {
            self.push_owned(events.to_vec(), shape);
        } else {
            self.push_each(events.iter().cloned());
        }
    }

    /// Queues events for the handler. Never blocks on the handler.
    pub(crate) fn push_owned(&self, events: Vec<Event<T>>, shape: Shape) {
        if shape == Shape::Snapshot && events.len() >= BULK_EVENTS {
            let mut buffer = self.buffer.lock();
            if buffer.closed {
                return;
            }
            if buffer.is_empty() {
                buffer.push_bulk(events);
                self.metrics.set_pending(buffer.events);
                drop(buffer);
                self.wake.notify_one();
                return;
            }
        }
        self.push_each(events);
    }

    fn push_each(&self, events: impl IntoIterator<Item = Event<T>>) {
        let events = events.into_iter();
        let mut buffer = self.buffer.lock();
        if buffer.closed {
            return;
        }
        // One allocation for a large batch, such as a first list, instead of a rehash at every
        // doubling. The capacity is freed once the handler drains the buffer.
        let (batch, _) = events.size_hint();
        buffer.pending.reserve(batch);
        buffer.order.reserve(batch);
        for event in events {
            if buffer.push(event) {
                self.metrics.coalesced();
            }
        }
        self.metrics.set_pending(buffer.events);
        drop(buffer);
        self.wake.notify_one();
    }

    fn push_resync(&self, values: Vec<Cached<T>>) {
        let mut buffer = self.buffer.lock();
        for cached in values {
            buffer.push(Event::Resync(cached));
        }
        drop(buffer);
        self.wake.notify_one();
    }
}

/// A registered handler. Dropping the handle leaves the handler running; call
/// [`HandlerHandle::unregister`] to stop it.
pub struct HandlerHandle<T> {
    slot: Arc<HandlerSlot<T>>,
    store: Store<T>,
    task: JoinHandle<()>,
}

impl<T> HandlerHandle<T> {
    /// Returns the number of events waiting for the handler.
    pub fn pending(&self) -> usize {
        self.slot.buffer.lock().events
    }

    /// Returns the number of keys with waiting events.
    ///
    /// While a large batch waits as it came, this counts its events instead, which is at most
    /// twice its keys.
    pub fn pending_keys(&self) -> usize {
        let buffer = self.slot.buffer.lock();
        buffer.pending.len() + buffer.bulk.len()
    }

    /// Stops delivering events, drops the pending ones and waits for the handler's task to end.
    /// An event being handled at the moment is finished first.
    pub async fn unregister(self) {
        {
            let mut state = self.store.shared.state.write();
            state.handlers.retain(|slot| !Arc::ptr_eq(slot, &self.slot));
        }
        {
            let mut buffer = self.slot.buffer.lock();
            buffer.closed = true;
            buffer.bulk = VecDeque::new();
            buffer.order.clear();
            buffer.pending.clear();
            buffer.events = 0;
        }
        self.slot.wake.notify_one();
        let _ = self.task.await;
    }
}

impl<T: Send + Sync + 'static> Store<T> {
    /// Registers `handler`. It first receives every cached value as [`Event::Added`], then every
    /// later change. Must be called within a tokio runtime.
    pub fn register<H: Handler<T>>(&self, options: HandlerOptions, handler: H) -> HandlerHandle<T> {
        let name: Arc<str> = Arc::from(options.name.as_str());
        let slot = Arc::new(HandlerSlot {
            name: name.clone(),
            buffer: Mutex::new(Buffer {
                bulk: VecDeque::new(),
                order: VecDeque::new(),
                pending: HashMap::new(),
                events: 0,
                closed: false,
            }),
            wake: Notify::new(),
            metrics: self.shared.metrics.for_handler(&name),
        });

        {
            // The snapshot and the registration happen under one write lock, so the handler
            // receives each change either in the snapshot or as an event, never both or neither.
            let mut state = self.shared.state.write();
            let mut snapshot: Vec<Event<T>> = state
                .entries
                .values()
                .map(|entry| Event::Added(entry.cached.clone()))
                .collect();
            snapshot.sort_by(|a, b| a.key().cmp(b.key()));
            slot.push_owned(snapshot, Shape::Snapshot);
            state.handlers.push(slot.clone());
        }

        info!(handler = %name, resync = ?options.resync, "registered handler");
        let task = tokio::spawn(run_handler(
            slot.clone(),
            self.clone(),
            options.resync,
            handler,
        ));
        HandlerHandle {
            slot,
            store: self.clone(),
            task,
        }
    }
}

async fn run_handler<T, H>(
    slot: Arc<HandlerSlot<T>>,
    store: Store<T>,
    resync: Option<Duration>,
    mut handler: H,
) where
    T: Send + Sync + 'static,
    H: Handler<T>,
{
    let mut next_resync = resync.map(|period| tokio::time::Instant::now() + period);
    loop {
        let next = {
            let mut buffer = slot.buffer.lock();
            if buffer.closed {
                return;
            }
            let next = buffer.pop();
            slot.metrics.set_pending(buffer.events);
            next
        };

        match next {
            Some(pending) => {
                for event in pending.into_events() {
                    deliver(&slot.name, &mut handler, event);
                }
                // Yield between keys so one busy handler shares its worker thread.
                tokio::task::consume_budget().await;
            }
            None => {
                let resync_at = next_resync;
                tokio::select! {
                    _ = slot.wake.notified() => {}
                    _ = sleep_until(resync_at) => {
                        let period = resync.expect("a resync deadline implies a period");
                        next_resync = Some(tokio::time::Instant::now() + period);
                        let values = store.list();
                        debug!(handler = %slot.name, keys = values.len(), "resync");
                        slot.push_resync(values);
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn deliver<T, H: Handler<T>>(name: &Arc<str>, handler: &mut H, event: Event<T>) {
    let key = event.key().clone();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(event)));
    if let Err(panic) = result {
        let message = panic_message(&panic);
        error!(handler = %name, key = ?key, panic = %message, "handler panicked; continuing with the next event");
    }
}

/// Returns the message of a caught panic, when it has one.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Returns a handler that adds the key of every event to `queue`: the usual way to connect the
/// cache to a controller. Adding never blocks, and the queue contains each key at most once.
pub fn enqueue_keys<T>(queue: crate::workqueue::WorkQueue<Arc<str>>) -> impl Handler<T>
where
    T: Send + Sync + 'static,
{
    move |event: Event<T>| queue.add(event.key().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Incarnation;

    fn added(key: usize) -> Event<u32> {
        Event::Added(Cached {
            key: Arc::from(format!("k{key}")),
            revision: key as i64 + 1,
            incarnation: Incarnation::CreateRevision(1),
            value: Arc::new(0),
        })
    }

    fn buffer() -> Buffer<u32> {
        Buffer {
            bulk: VecDeque::new(),
            order: VecDeque::new(),
            pending: HashMap::new(),
            events: 0,
            closed: false,
        }
    }

    #[test]
    fn drained_buffer_frees_capacity() {
        let mut buffer = buffer();
        for key in 0..10_000 {
            buffer.push(added(key));
        }
        assert!(buffer.pending.capacity() >= 10_000);

        let mut popped = 0;
        while buffer.pop().is_some() {
            popped += 1;
        }
        assert_eq!(popped, 10_000);
        assert_eq!(buffer.events, 0);
        assert!(buffer.pending.capacity() <= 2 * RETAINED_KEYS);
        assert!(buffer.order.capacity() <= 2 * RETAINED_KEYS);
    }

    #[test]
    fn bulk_batch_keeps_order_and_merges_later_events() {
        let mut buffer = buffer();
        buffer.push_bulk((0..2_000).map(added).collect());
        assert_eq!(buffer.events, 2_000);
        assert!(buffer.pending.is_empty(), "a bulk batch is not indexed");
        assert_eq!(
            &**buffer.pop().unwrap().into_events().next().unwrap().key(),
            "k0"
        );

        // A later event for a key of the batch merges with it.
        let newer = Cached {
            revision: 9_999,
            ..added(5).object().clone()
        };
        assert!(buffer.push(Event::Updated {
            old: added(5).object().clone(),
            new: newer,
        }));
        assert!(buffer.bulk.is_empty());
        assert_eq!(buffer.events, 1_999);

        let mut keys = Vec::new();
        while let Some(pending) = buffer.pop() {
            for event in pending.into_events() {
                if &**event.key() == "k5" {
                    assert!(matches!(event, Event::Added(_)), "{event:?}");
                    assert_eq!(event.object().revision, 9_999);
                }
                keys.push(event.key().clone());
            }
        }
        let expected: Vec<Arc<str>> = (1..2_000).map(|key| Arc::from(format!("k{key}"))).collect();
        assert_eq!(keys, expected);
        assert_eq!(buffer.events, 0);
    }

    #[test]
    fn delete_then_add_kept() {
        let mut buffer = buffer();
        let old = added(1).object().clone();
        buffer.push(Event::Deleted(old.clone()));
        buffer.push(added(1));
        buffer.push(Event::Updated {
            old,
            new: added(1).object().clone(),
        });
        assert_eq!(buffer.events, 2);

        let events: Vec<Event<u32>> = buffer.pop().unwrap().into_events().collect();
        assert_eq!(events.len(), 2);
        assert!(matches!(events[0], Event::Deleted(_)));
        assert!(matches!(events[1], Event::Added(_)), "{:?}", events[1]);
        assert!(buffer.pop().is_none());
    }

    #[test]
    fn push_merges_same_key() {
        let mut buffer = buffer();
        assert!(!buffer.push(added(1)));
        assert!(buffer.push(Event::Resync(added(1).object().clone())));
        assert!(!buffer.push(added(2)));
        assert_eq!(buffer.events, 2);
        assert_eq!(buffer.order.len(), 2);

        let first: Vec<Event<u32>> = buffer.pop().unwrap().into_events().collect();
        assert_eq!(first.len(), 1);
        assert_eq!(&**first[0].key(), "k1");
        assert!(matches!(first[0], Event::Added(_)));
    }
}
