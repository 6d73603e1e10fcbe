//! The controller stage: a pool of workers that runs a reconciler for each queued key.
//!
//! A [`Controller`] starts N workers. Each worker takes a key from its
//! [`WorkQueue`](crate::workqueue::WorkQueue), looks the key up in the
//! [`Store`](crate::cache::Store) at that moment, and calls the [`Reconciler`] with a
//! [`Request`] and the user's context. The controller guarantees:
//!
//! - **One reconcile per key at a time**, because the queue hands a key to one worker until it
//!   is done. Different keys run concurrently, up to the number of workers.
//! - **Every change is reconciled.** A key added during its own reconcile is reconciled once
//!   more afterwards, against the cache as it is then.
//! - **One ordered decision per result**, the same as controller-runtime's: an error or panic
//!   retries with the per-key backoff, [`Action::RequeueAfter`] resets the backoff and retries
//!   after the delay, [`Action::Requeue`] retries with backoff, and [`Action::Done`] resets the
//!   backoff.
//! - **Panics stay contained.** A panic in a reconcile is caught, logged with the key, counted
//!   as `reconciles{result="panic"}`, and retried like an error. The worker carries on, so the
//!   pool keeps its size.
//! - **Graceful shutdown.** [`Controller::run_until`] stops on a future, and
//!   [`Controller::run_until_signal`] on Ctrl-C or SIGTERM. Shutdown uses the queue's
//!   non-draining mode ([`WorkQueue::shut_down`](crate::workqueue::WorkQueue::shut_down)):
//!   queued keys are dropped and no new reconcile starts. In-flight reconciles finish until a
//!   deadline, and the rest are aborted. The [`ShutdownReport`] counts the dropped keys and the
//!   aborted reconciles.
//!
//! It does not order reconciles of different keys, and it does not pass a key's history: the
//! reconciler gets the cache's current state, so it must be idempotent.
//!
//! # Metrics and logs
//!
//! The controller counts `reconciles` by `result` (`done`, `requeue_after`, `requeue`, `error`,
//! `panic`), records `reconcile_duration_seconds`, and tracks `active_workers`, all labelled
//! with its name. Each reconcile logs the `key`, the `attempt` (1 plus the key's rate-limited
//! requeues) and the `result`: at debug level on success, warn on error, error on panic.

mod decision;
mod reconciler;
mod runner;

pub use reconciler::{Action, ObjectState, Reconciler, Request};
pub use runner::{
    Controller, DEFAULT_SHUTDOWN_DEADLINE, DEFAULT_WORKERS, ShutdownReport, StopCause,
    shutdown_signal,
};
