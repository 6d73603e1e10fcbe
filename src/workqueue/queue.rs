//! The work queue itself: dedup, processing set, delays, rate limits and shutdown.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info};

use super::delay::Delayed;
use super::ratelimit::{RateLimiter, default_rate_limiter};
use super::{QueueKey, QueueStats};
use crate::metrics::{Metrics, QueueMetrics};

/// Delay used in place of one too long to add to the current instant (about 30 years).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A deduplicating, delaying, rate-limited queue of keys.
///
/// See the [module documentation](super) for the guarantees. Cloning is cheap and every clone
/// shares the same queue.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<K> {
    name: Arc<str>,
    state: Mutex<State<K>>,
    /// Wakes [`WorkQueue::get`] calls. A key made ready sends `notify_one`. Shutdown, the end
    /// of a drain and a delay that moves the earliest due time earlier send `notify_waiters`.
    ready: Notify,
    /// Wakes [`WorkQueue::shut_down_with_drain`] when no key is pending or in flight.
    idle: Notify,
    limiter: Box<dyn RateLimiter<K>>,
    metrics: QueueMetrics,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    /// Accepting adds and handing out keys.
    Running,
    /// Rejecting adds, still handing out keys that were pending when the drain began.
    Draining,
    /// Rejecting adds and handing out nothing.
    Stopped,
}

/// The queue's bookkeeping, always accessed under `Shared::state`.
struct State<K> {
    /// Keys ready to be handed out, oldest first, each with the time it became ready.
    /// Invariants: every key here is also in `dirty` and never in `processing`, and no key
    /// appears twice.
    queue: VecDeque<(K, Instant)>,
    /// Keys that need processing: every key of `queue`, plus keys in `processing` that were
    /// added again after a worker took them. `done` moves those into `queue`.
    dirty: HashSet<K>,
    /// Keys handed out by `get` and not yet passed to `done`. A key here is never handed out
    /// again until `done`.
    processing: HashSet<K>,
    /// Keys waiting for a delay. Invariant: disjoint from `dirty`, because a dirty key is
    /// already due and the earliest request wins.
    delayed: Delayed<K>,
    lifecycle: Lifecycle,
}

/// The result of one attempt to take a key.
enum Take<K> {
    Key(K),
    /// The queue is shut down and has nothing more to hand out.
    Exhausted,
    /// Nothing is ready: wait for a wakeup, or until the earliest delayed key is due.
    Wait(Option<Instant>),
}

/// The result of adding a key to the dirty set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Insert {
    /// The key was already dirty: nothing changed.
    Duplicate,
    /// The key is in flight: `done` will queue it.
    AfterDone,
    /// The key joined the ready queue.
    Queued,
}

impl<K: QueueKey> State<K> {
    fn new() -> Self {
        State {
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            delayed: Delayed::new(),
            lifecycle: Lifecycle::Running,
        }
    }

    /// Marks `key` as needing processing. The caller has removed any delayed entry of `key`.
    fn insert_dirty(&mut self, key: K, ready_at: Instant) -> Insert {
        if self.dirty.contains(&key) {
            return Insert::Duplicate;
        }

        self.dirty.insert(key.clone());
        if self.processing.contains(&key) {
            return Insert::AfterDone;
        }
        self.queue.push_back((key, ready_at));
        Insert::Queued
    }

    /// Moves every delayed key due at `now` into the dirty set. Returns how many keys became
    /// dirty and how many of them joined the ready queue.
    fn promote_due(&mut self, now: Instant) -> (usize, usize) {
        let mut added = 0;
        let mut queued = 0;
        while let Some((key, due)) = self.delayed.pop_due(now) {
            match self.insert_dirty(key, due) {
                Insert::Duplicate => {}
                Insert::AfterDone => added += 1,
                Insert::Queued => {
                    added += 1;
                    queued += 1;
                }
            }
        }
        (added, queued)
    }

    /// Takes the oldest ready key and marks it as processing.
    fn pop(&mut self) -> Option<(K, Instant)> {
        let (key, ready_at) = self.queue.pop_front()?;
        self.dirty.remove(&key);
        self.processing.insert(key.clone());
        Some((key, ready_at))
    }

    /// Returns true when `get` has nothing more to hand out, ever.
    fn is_exhausted(&self) -> bool {
        match self.lifecycle {
            Lifecycle::Running => false,
            // Dirty keys in flight are queued again by `done`, so the drain waits for them.
            Lifecycle::Draining => self.dirty.is_empty(),
            Lifecycle::Stopped => true,
        }
    }

    fn is_idle(&self) -> bool {
        self.dirty.is_empty() && self.processing.is_empty()
    }
}

/// Builder of a [`WorkQueue`] with a custom rate limiter or metrics.
pub struct WorkQueueBuilder<K> {
    name: Arc<str>,
    limiter: Option<Box<dyn RateLimiter<K>>>,
    metrics: Metrics,
}

impl<K: QueueKey> WorkQueueBuilder<K> {
    /// Sets the limiter that [`WorkQueue::add_rate_limited`] consults. The default is
    /// [`default_rate_limiter`].
    pub fn rate_limiter(mut self, limiter: impl RateLimiter<K> + 'static) -> Self {
        self.limiter = Some(Box::new(limiter));
        self
    }

    /// Sets the metrics the queue updates. The default is a fresh [`Metrics`] that nothing
    /// exports.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Creates the queue.
    pub fn build(self) -> WorkQueue<K> {
        let limiter = self
            .limiter
            .unwrap_or_else(|| Box::new(default_rate_limiter::<K>()));
        let metrics = self.metrics.for_queue(&self.name);
        WorkQueue {
            shared: Arc::new(Shared {
                name: self.name,
                state: Mutex::new(State::new()),
                ready: Notify::new(),
                idle: Notify::new(),
                limiter,
                metrics,
            }),
        }
    }
}

impl<K> fmt::Debug for WorkQueueBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueueBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K: QueueKey> WorkQueue<K> {
    /// Creates a queue named `name` with the [`default_rate_limiter`] and unexported metrics.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        WorkQueue::builder(name).build()
    }

    /// Starts a builder for a queue named `name`. The name labels metrics and logs.
    pub fn builder(name: impl Into<Arc<str>>) -> WorkQueueBuilder<K> {
        WorkQueueBuilder {
            name: name.into(),
            limiter: None,
            metrics: Metrics::default(),
        }
    }

    /// Returns the queue's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Queues `key` now, unless it is already queued.
    ///
    /// A key in flight is queued again when its worker calls [`done`](Self::done). A key
    /// waiting for a delay is due now instead, and its delayed entry is removed. After shutdown
    /// began, the add is ignored.
    pub fn add(&self, key: K) {
        let now = Instant::now();
        let mut state = self.shared.state.lock();
        if state.lifecycle != Lifecycle::Running {
            drop(state);
            self.debug_rejected("add");
            return;
        }

        state.delayed.remove(&key);
        let insert = state.insert_dirty(key, now);
        let depth = state.queue.len();
        drop(state);

        match insert {
            Insert::Duplicate => {}
            Insert::AfterDone => self.shared.metrics.add(),
            Insert::Queued => {
                self.shared.metrics.add();
                self.shared.metrics.set_depth(depth);
                self.shared.ready.notify_one();
            }
        }
    }

    /// Queues `key` once `delay` has passed.
    ///
    /// A key has at most one delayed entry, due at the earliest time requested. A key that is
    /// already queued, or in flight and added again, is due now, so the request is ignored. A
    /// zero delay is an [`add`](Self::add). After shutdown began, the request is ignored.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }

        let now = Instant::now();
        let due = now.checked_add(delay).unwrap_or_else(|| now + FAR_FUTURE);
        let mut state = self.shared.state.lock();
        if state.lifecycle != Lifecycle::Running {
            drop(state);
            self.debug_rejected("add_after");
            return;
        }
        if state.dirty.contains(&key) {
            return;
        }

        let earliest_moved = state.delayed.insert(key, due);
        drop(state);

        if earliest_moved {
            // Idle getters sleep until the old earliest due time: wake them to sleep less.
            self.shared.ready.notify_waiters();
        }
    }

    /// Queues `key` after the delay the rate limiter returns for it, counting one retry.
    ///
    /// After shutdown began, the request is ignored and the limiter is not consulted.
    pub fn add_rate_limited(&self, key: K) {
        if self.is_shutting_down() {
            self.debug_rejected("add_rate_limited");
            return;
        }

        let delay = self.shared.limiter.when(&key);
        self.shared.metrics.retry();
        self.add_after(key, delay);
    }

    /// Drops the rate limiter's retry state of `key`. Call it when the key was processed
    /// successfully, so its next failure starts from the first backoff delay.
    pub fn forget(&self, key: &K) {
        self.shared.limiter.forget(key);
    }

    /// Returns the number of rate-limited retries of `key` since it was last forgotten.
    pub fn requeues(&self, key: &K) -> u32 {
        self.shared.limiter.requeues(key)
    }

    /// Waits for a ready key and hands it to the caller, who must pass it to
    /// [`done`](Self::done) when finished. Returns `None` once the queue is shut down and has
    /// nothing more to hand out.
    ///
    /// Keys come out in the order they became ready. Delayed keys become ready at their due
    /// time, measured on tokio's clock.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe. A key leaves the queue only in the poll that returns it, so
    /// a `get` dropped in a `select!` never loses a key, and a wakeup it received passes to
    /// another waiting `get`.
    pub async fn get(&self) -> Option<K> {
        loop {
            // Register for wakeups before reading the state, so an add between the check and
            // the wait still wakes this call.
            let mut notified = pin!(self.shared.ready.notified());
            notified.as_mut().enable();

            match self.try_take() {
                Take::Key(key) => return Some(key),
                Take::Exhausted => return None,
                Take::Wait(Some(due)) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                Take::Wait(None) => notified.await,
            }
        }
    }

    /// Promotes due keys and takes the oldest ready key, if any.
    // NOTE: due keys are promoted here and in `len`, not by a background task. While every
    // worker is busy, a due key waits in the delayed set and `workqueue_depth` leaves it out
    // until the next `get` or `len`. Idle getters all wake at the earliest due time.
    fn try_take(&self) -> Take<K> {
        let now = Instant::now();
        let mut state = self.shared.state.lock();
        let (added, queued) = state.promote_due(now);
        let taken = state.pop();
        let depth = state.queue.len();
        let exhausted = state.is_exhausted();
        let next_due = state.delayed.next_due();
        drop(state);

        self.record_promoted(added, queued, taken.is_some(), depth);
        if let Some((key, ready_at)) = taken {
            let waited = now.saturating_duration_since(ready_at);
            self.shared.metrics.set_depth(depth);
            self.shared.metrics.observe_wait(waited.as_secs_f64());
            return Take::Key(key);
        }
        if exhausted {
            return Take::Exhausted;
        }
        Take::Wait(next_due)
    }

    /// Marks `key` as finished. If the key was added again while in flight, it is queued now.
    /// A key that is not in flight is ignored.
    pub fn done(&self, key: &K) {
        let mut state = self.shared.state.lock();
        if !state.processing.remove(key) {
            return;
        }

        let requeued = state.dirty.contains(key);
        if requeued {
            // The clock is read only here: most keys are not added again while in flight.
            state.queue.push_back((key.clone(), Instant::now()));
        }
        let depth = state.queue.len();
        let exhausted = state.lifecycle == Lifecycle::Draining && state.is_exhausted();
        let idle = state.lifecycle != Lifecycle::Running && state.is_idle();
        drop(state);

        if requeued {
            self.shared.metrics.set_depth(depth);
            self.shared.ready.notify_one();
        }
        if exhausted {
            // The drain handed out its last key: idle getters return `None` now.
            self.shared.ready.notify_waiters();
        }
        if idle {
            self.shared.idle.notify_waiters();
        }
    }

    /// Returns the number of keys ready to be handed out, including delayed keys that are due.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let mut state = self.shared.state.lock();
        let (added, queued) = state.promote_due(now);
        let len = state.queue.len();
        drop(state);

        self.record_promoted(added, queued, false, len);
        len
    }

    /// Returns true when no key is ready to be handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the sizes of the internal structures, without promoting due keys.
    pub fn stats(&self) -> QueueStats {
        let state = self.shared.state.lock();
        QueueStats {
            ready: state.queue.len(),
            dirty: state.dirty.len(),
            processing: state.processing.len(),
            delayed: state.delayed.len(),
            rate_limited: self.shared.limiter.tracked_keys(),
        }
    }

    /// Returns true once [`shut_down`](Self::shut_down) or
    /// [`shut_down_with_drain`](Self::shut_down_with_drain) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.state.lock().lifecycle != Lifecycle::Running
    }

    /// Shuts the queue down without draining: adds are ignored from now on, queued and delayed
    /// keys are dropped, and every [`get`](Self::get) returns `None`. Keys in flight stay in
    /// flight until their workers call [`done`](Self::done), which queues nothing.
    ///
    /// Returns the number of keys dropped. Calling it again returns 0.
    pub fn shut_down(&self) -> usize {
        let mut state = self.shared.state.lock();
        if state.lifecycle == Lifecycle::Stopped {
            return 0;
        }

        state.lifecycle = Lifecycle::Stopped;
        let dropped = state.dirty.len() + state.delayed.len();
        state.queue.clear();
        state.dirty.clear();
        state.delayed.clear();
        let in_flight = state.processing.len();
        drop(state);

        info!(queue = %self.shared.name, dropped, in_flight, "work queue shut down");
        self.shared.metrics.set_depth(0);
        self.shared.ready.notify_waiters();
        if in_flight == 0 {
            self.shared.idle.notify_waiters();
        }
        dropped
    }

    /// Shuts the queue down after draining it: adds are ignored from now on, and `get` keeps
    /// handing out the keys that were queued, or in flight and added again, when the drain
    /// began. Keys still waiting for a delay are dropped, because they were not due. Waits
    /// until every such key and every key in flight is [`done`](Self::done).
    ///
    /// Workers must keep calling [`get`](Self::get) until it returns `None`, or the drain
    /// never finishes. A [`shut_down`](Self::shut_down) during the drain drops what is left.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: dropping the future stops the wait, and the queue keeps
    /// draining.
    pub async fn shut_down_with_drain(&self) {
        self.begin_drain();

        loop {
            let mut idle = pin!(self.shared.idle.notified());
            idle.as_mut().enable();
            if self.shared.state.lock().is_idle() {
                break;
            }
            idle.await;
        }
        info!(queue = %self.shared.name, "work queue drained");
    }

    /// Switches a running queue to draining and drops its delayed keys.
    fn begin_drain(&self) {
        let mut state = self.shared.state.lock();
        if state.lifecycle != Lifecycle::Running {
            return;
        }

        state.lifecycle = Lifecycle::Draining;
        let dropped = state.delayed.len();
        state.delayed.clear();
        let pending = state.dirty.len();
        let in_flight = state.processing.len();
        drop(state);

        info!(
            queue = %self.shared.name,
            pending,
            in_flight,
            dropped,
            "work queue draining"
        );
        // Getters waiting on an empty queue return `None` if nothing is pending.
        self.shared.ready.notify_waiters();
    }

    /// Updates metrics and wakes getters after due keys were promoted. `taken` is true when
    /// the calling `get` took one of the ready keys itself, and `depth` is the ready count
    /// after that.
    fn record_promoted(&self, added: usize, queued: usize, taken: bool, depth: usize) {
        for _ in 0..added {
            self.shared.metrics.add();
        }
        if queued > 0 {
            self.shared.metrics.set_depth(depth);
        }
        let others = if taken {
            queued.saturating_sub(1)
        } else {
            queued
        };
        for _ in 0..others {
            self.shared.ready.notify_one();
        }
    }

    fn debug_rejected(&self, operation: &'static str) {
        debug!(queue = %self.shared.name, operation, "work queue is shutting down, add ignored");
    }
}

impl<K: QueueKey> fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}
