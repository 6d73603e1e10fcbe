//! The workqueue stage: a deduplicating, delaying, rate-limited queue of keys.
//!
//! Event handlers add keys and a pool of workers takes them (see [`crate::controller`]). The
//! queue guarantees:
//!
//! - **Dedup.** A key is queued at most once, however often it is added before a worker takes
//!   it.
//! - **One worker per key.** A key handed out by [`WorkQueue::get`] is not handed out again
//!   until its worker calls [`WorkQueue::done`]. A key added while in flight is handed out once
//!   more after `done`, however often it was added.
//! - **Delays.** [`WorkQueue::add_after`] keeps one entry per key, due at the earliest time
//!   requested. An immediate add of a waiting key makes it due now and removes its delayed
//!   entry. Delays run on tokio's clock, so tests can pause and advance it.
//! - **Rate limits.** [`WorkQueue::add_rate_limited`] asks a [`RateLimiter`] how long a retry
//!   waits, and [`WorkQueue::forget`] resets the key's backoff.
//! - **Bounded memory.** Every internal structure holds at most one entry per distinct key.
//!   Once every key is done and forgotten, every structure is empty ([`WorkQueue::stats`]).
//!
//! It does not guarantee any order between keys beyond first-ready, first-out, and it does not
//! keep a key's history: a worker sees only that the key needs processing.
//!
//! # Shutdown
//!
//! [`WorkQueue::shut_down`] stops at once: adds are ignored, queued keys are dropped, and
//! `get` returns `None`. Keys in flight finish. [`WorkQueue::shut_down_with_drain`] also
//! ignores adds but hands out what is already queued, and waits until it is all done. The
//! [`controller`](crate::controller) uses `shut_down`, so a stopping controller starts no new
//! reconcile.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use informer::workqueue::WorkQueue;
//!
//! let queue: WorkQueue<Arc<str>> = WorkQueue::new("pods");
//! queue.add("default/web".into());
//! queue.add("default/web".into());
//! assert_eq!(queue.len(), 1);
//!
//! let key = queue.get().await.unwrap();
//! // ... reconcile the key ...
//! queue.forget(&key);
//! queue.done(&key);
//! assert!(queue.stats().is_clear());
//! # }
//! ```

mod delay;
mod queue;
mod ratelimit;
#[cfg(test)]
mod tests;

use std::hash::Hash;

pub use queue::{WorkQueue, WorkQueueBuilder};
pub use ratelimit::{
    DEFAULT_BASE_DELAY, DEFAULT_BUCKET_BURST, DEFAULT_BUCKET_RATE, DEFAULT_MAX_DELAY,
    ExponentialBackoff, Max, RateLimiter, TokenBucket, default_rate_limiter,
};

/// The bounds on a queue key. Every such type implements it.
pub trait QueueKey: Clone + Eq + Hash + Send + Sync + 'static {}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> QueueKey for T {}

/// The sizes of a queue's internal structures, each counted in keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Keys ready to be handed out.
    pub ready: usize,
    /// Keys that need processing: the ready ones plus keys in flight that were added again.
    pub dirty: usize,
    /// Keys handed out and not yet done.
    pub processing: usize,
    /// Keys waiting for a delay.
    pub delayed: usize,
    /// Keys the rate limiter keeps retry state for.
    pub rate_limited: usize,
}

impl QueueStats {
    /// Returns true when every structure is empty.
    pub fn is_clear(&self) -> bool {
        *self == QueueStats::default()
    }

    /// Returns the size of the largest structure.
    pub fn max_len(&self) -> usize {
        [
            self.ready,
            self.dirty,
            self.processing,
            self.delayed,
            self.rate_limited,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }
}
