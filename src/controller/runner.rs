//! The worker pool: workers, panic handling and graceful shutdown.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::decision::{Outcome, apply, decide};
use super::{Action, ObjectState, Reconciler, Request};
use crate::cache::Store;
use crate::metrics::{ControllerMetrics, Metrics};
use crate::workqueue::WorkQueue;

/// Default number of workers: one, so a controller reconciles one key at a time unless asked.
pub const DEFAULT_WORKERS: usize = 1;

/// Default time in-flight reconciles get to finish once shutdown begins, before they are
/// aborted. It leaves 5 s of a Kubernetes pod's default termination grace period
/// (`terminationGracePeriodSeconds`, 30 s between SIGTERM and SIGKILL) for the rest of the
/// process, so lower it for pods with a shorter grace period.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

/// A pool of workers that reconcile the keys of one queue.
///
/// Build it with [`Controller::new`], adjust it with the builder methods, and run it with
/// [`run_until`](Controller::run_until) or [`run_until_signal`](Controller::run_until_signal).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use informer::cache::Store;
/// use informer::controller::{Action, Controller, Request};
/// use informer::workqueue::WorkQueue;
///
/// let queue: WorkQueue<Arc<str>> = WorkQueue::new("configs");
/// let store: Store<String> = Store::default();
/// queue.add("app/config".into());
///
/// let reconcile = |request: Request<String>, _ctx: Arc<()>| async move {
///     println!("reconciling {}", request.key);
///     Ok::<_, std::io::Error>(Action::Done)
/// };
/// let report = Controller::new("configs", queue, store, reconcile, Arc::new(()))
///     .workers(4)
///     .shutdown_deadline(Duration::from_secs(10))
///     .run_until(tokio::time::sleep(Duration::from_millis(10)))
///     .await;
/// assert_eq!(report.aborted, 0);
/// # }
/// ```
pub struct Controller<T, C, R> {
    name: Arc<str>,
    queue: WorkQueue<Arc<str>>,
    store: Store<T>,
    reconciler: R,
    ctx: Arc<C>,
    workers: usize,
    shutdown_deadline: Duration,
    metrics: Metrics,
}

/// The reason a controller stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCause {
    /// The shutdown future completed or a shutdown signal arrived.
    Requested,
    /// Something else shut the queue down, so every worker ran out of keys.
    QueueShutDown,
}

/// A summary of how a controller stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The reason the controller stopped.
    pub cause: StopCause,
    /// Reconciles running when shutdown began.
    pub in_flight: usize,
    /// Reconciles cancelled because they were still running at the deadline.
    pub aborted: usize,
    /// Keys that were queued, waiting for a delay, or added again while in flight, and were
    /// dropped unprocessed.
    pub dropped: usize,
    /// Workers started again after a panic outside the reconciler.
    pub workers_restarted: usize,
}

impl<T, C, R> Controller<T, C, R>
where
    T: Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: Reconciler<T, C>,
{
    /// Creates a controller named `name` that reconciles the keys of `queue`, looks them up in
    /// `store`, and passes `ctx` to every reconcile. The name labels metrics and logs.
    ///
    /// The controller shuts `queue` down when it stops, so no other consumer should share it.
    pub fn new(
        name: impl Into<Arc<str>>,
        queue: WorkQueue<Arc<str>>,
        store: Store<T>,
        reconciler: R,
        ctx: Arc<C>,
    ) -> Self {
        Controller {
            name: name.into(),
            queue,
            store,
            reconciler,
            ctx,
            workers: DEFAULT_WORKERS,
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            metrics: Metrics::default(),
        }
    }

    /// Sets the number of workers, which is the maximum number of concurrent reconciles.
    /// Default: [`DEFAULT_WORKERS`].
    ///
    /// # Panics
    ///
    /// Panics when `workers` is 0.
    pub fn workers(mut self, workers: usize) -> Self {
        assert!(workers > 0, "a controller needs at least one worker");
        self.workers = workers;
        self
    }

    /// Sets how long in-flight reconciles may run once shutdown begins. Default:
    /// [`DEFAULT_SHUTDOWN_DEADLINE`].
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Sets the metrics the controller updates. The default is a fresh [`Metrics`] that
    /// nothing exports.
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs the workers until `shutdown` completes, then shuts down gracefully and returns a
    /// report.
    ///
    /// Shutdown calls [`WorkQueue::shut_down`], the non-draining mode: queued keys are
    /// dropped and no new reconcile starts. Reconciles in flight may finish until the
    /// [deadline](Self::shutdown_deadline), after which they are aborted, which drops their
    /// futures at their next await point. The method also returns when something else shuts
    /// the queue down and every worker has finished.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> ShutdownReport {
        let deadline = self.shutdown_deadline;
        let workers = self.workers;
        let metrics = self.metrics.for_controller(&self.name);
        let pool = Arc::new(Pool {
            name: self.name,
            queue: self.queue,
            store: self.store,
            reconciler: self.reconciler,
            ctx: self.ctx,
            metrics,
            in_flight: AtomicUsize::new(0),
        });

        let mut tasks = JoinSet::new();
        for worker in 0..workers {
            tasks.spawn(pool.clone().run_worker(worker));
        }
        info!(controller = %pool.name, workers, "controller started");

        let (cause, workers_restarted) = pool.supervise(&mut tasks, workers, shutdown).await;
        let mut report = match cause {
            StopCause::Requested => pool.stop(&mut tasks, deadline).await,
            StopCause::QueueShutDown => ShutdownReport {
                cause,
                in_flight: 0,
                aborted: 0,
                dropped: 0,
                workers_restarted: 0,
            },
        };
        report.workers_restarted = workers_restarted;

        info!(
            controller = %pool.name,
            cause = ?report.cause,
            in_flight = report.in_flight,
            aborted = report.aborted,
            dropped = report.dropped,
            "controller stopped"
        );
        report
    }

    /// Runs the workers until the process receives Ctrl-C (SIGINT) or, on Unix, SIGTERM. See
    /// [`run_until`](Self::run_until) for the shutdown.
    ///
    /// If the signal handlers cannot be installed, the error is logged and the controller
    /// runs until its queue is shut down.
    pub async fn run_until_signal(self) -> ShutdownReport {
        let name = self.name.clone();
        self.run_until(async move {
            if let Err(error) = shutdown_signal().await {
                error!(
                    controller = %name,
                    %error,
                    "failed to listen for shutdown signals, so the controller stops only when its queue shuts down"
                );
                std::future::pending::<()>().await;
            }
        })
        .await
    }
}

impl<T, C, R> fmt::Debug for Controller<T, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("name", &self.name)
            .field("queue", &self.queue.name())
            .field("workers", &self.workers)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .finish_non_exhaustive()
    }
}

/// Waits for Ctrl-C (SIGINT) or, on Unix, SIGTERM.
///
/// # Errors
///
/// Returns the I/O error when a signal handler cannot be installed.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};

        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result?;
                info!(signal = "SIGINT", "shutdown signal received");
            }
            _ = terminate.recv() => info!(signal = "SIGTERM", "shutdown signal received"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        info!(signal = "Ctrl-C", "shutdown signal received");
    }
    Ok(())
}

/// The state every worker of one controller shares.
struct Pool<T, C, R> {
    name: Arc<str>,
    queue: WorkQueue<Arc<str>>,
    store: Store<T>,
    reconciler: R,
    ctx: Arc<C>,
    metrics: ControllerMetrics,
    /// Reconciles running now.
    in_flight: AtomicUsize,
}

impl<T, C, R> Pool<T, C, R>
where
    T: Send + Sync + 'static,
    C: Send + Sync + 'static,
    R: Reconciler<T, C>,
{
    /// Takes keys until the queue shuts down.
    async fn run_worker(self: Arc<Self>, worker: usize) {
        debug!(controller = %self.name, worker, "worker started");
        while let Some(key) = self.queue.get().await {
            self.process(key).await;
        }
        debug!(controller = %self.name, worker, "worker stopped: queue shut down");
    }

    /// Waits for `shutdown` while restarting workers that panicked. Returns what stopped the
    /// controller and how many workers were restarted.
    async fn supervise(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        workers: usize,
        shutdown: impl Future<Output = ()>,
    ) -> (StopCause, usize) {
        let mut shutdown = pin!(shutdown);
        let mut restarted = 0;
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return (StopCause::Requested, restarted),
                joined = tasks.join_next() => match joined {
                    None => return (StopCause::QueueShutDown, restarted),
                    Some(Ok(())) => {}
                    Some(Err(join_error)) => {
                        // `process` catches reconcile panics, so this one came from around the
                        // reconcile (such as an error type whose `Drop` panics).
                        error!(
                            controller = %self.name,
                            error = %join_error,
                            "worker panicked outside the reconciler"
                        );
                        if !self.queue.is_shutting_down() {
                            tasks.spawn(self.clone().run_worker(workers + restarted));
                            restarted += 1;
                        }
                    }
                },
            }
        }
    }

    /// Shuts the queue down, waits for in-flight reconciles until `deadline`, and aborts the
    /// rest.
    async fn stop(&self, tasks: &mut JoinSet<()>, deadline: Duration) -> ShutdownReport {
        let dropped = self.queue.shut_down();
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        info!(
            controller = %self.name,
            in_flight,
            dropped,
            deadline_ms = deadline.as_millis() as u64,
            "controller stopping"
        );

        let deadline_at = Instant::now() + deadline;
        let mut aborted = 0;
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(join_error)) => error!(
                        controller = %self.name,
                        error = %join_error,
                        "worker panicked outside the reconciler during shutdown"
                    ),
                },
                () = tokio::time::sleep_until(deadline_at) => {
                    aborted = self.abort_stragglers(tasks).await;
                    break;
                }
            }
        }

        ShutdownReport {
            cause: StopCause::Requested,
            in_flight,
            aborted,
            dropped,
            workers_restarted: 0,
        }
    }

    /// Aborts the workers still running and returns how many were cancelled.
    async fn abort_stragglers(&self, tasks: &mut JoinSet<()>) -> usize {
        warn!(
            controller = %self.name,
            stragglers = tasks.len(),
            "shutdown deadline passed, aborting reconciles still running"
        );
        tasks.abort_all();

        let mut aborted = 0;
        while let Some(joined) = tasks.join_next().await {
            if matches!(&joined, Err(join_error) if join_error.is_cancelled()) {
                aborted += 1;
            }
        }
        aborted
    }

    /// Reconciles `key` once and decides what the queue does with it next.
    async fn process(&self, key: Arc<str>) {
        let _in_flight = InFlight::begin(self, key.clone());
        let requeues = self.queue.requeues(&key);
        let object = match self.store.get(&key) {
            Some(cached) => ObjectState::Live(cached),
            None => ObjectState::Deleted,
        };
        let request = Request {
            key: key.clone(),
            object,
            requeues,
        };
        let attempt = requeues.saturating_add(1);
        debug!(controller = %self.name, key = ?key, attempt, deleted = request.is_deleted(), "reconcile started");

        let started = Instant::now();
        // The call is inside the async block so that a panic before the first await point is
        // caught too.
        let reconcile = async { self.reconciler.reconcile(request, self.ctx.clone()).await };
        let result = AssertUnwindSafe(reconcile).catch_unwind().await;
        let elapsed = started.elapsed();

        let outcome = self.log_result(&key, attempt, elapsed, result);
        self.metrics.reconcile(outcome.label());
        self.metrics.observe_reconcile(elapsed.as_secs_f64());
        apply(&self.queue, &key, decide(outcome));
    }

    /// Logs a reconcile's result and classifies it.
    fn log_result(
        &self,
        key: &str,
        attempt: u32,
        elapsed: Duration,
        result: Result<Result<Action, R::Error>, Box<dyn Any + Send>>,
    ) -> Outcome {
        let elapsed_ms = elapsed.as_millis() as u64;
        match result {
            Ok(Ok(action)) => {
                let outcome = Outcome::Action(action);
                debug!(controller = %self.name, key, attempt, elapsed_ms, result = outcome.label(), "reconcile finished");
                outcome
            }
            Ok(Err(reconcile_error)) => {
                warn!(
                    controller = %self.name,
                    key,
                    attempt,
                    elapsed_ms,
                    result = "error",
                    error = &reconcile_error as &(dyn std::error::Error + 'static),
                    "reconcile failed, retrying with backoff"
                );
                Outcome::Error
            }
            Err(payload) => {
                error!(
                    controller = %self.name,
                    key,
                    attempt,
                    elapsed_ms,
                    result = "panic",
                    panic = panic_message(payload.as_ref()),
                    "reconcile panicked, retrying with backoff"
                );
                Outcome::Panic
            }
        }
    }
}

/// Returns the message of a panic payload, for the two payload types `panic!` creates.
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "(panic payload is not a string)"
    }
}

/// Marks a key as in flight for as long as the guard lives. Dropping the guard, also when the
/// reconcile is aborted or a panic unwinds, releases the key with [`WorkQueue::done`].
struct InFlight<'a> {
    queue: &'a WorkQueue<Arc<str>>,
    metrics: &'a ControllerMetrics,
    in_flight: &'a AtomicUsize,
    key: Arc<str>,
}

impl<'a> InFlight<'a> {
    fn begin<T, C, R>(pool: &'a Pool<T, C, R>, key: Arc<str>) -> Self {
        pool.in_flight.fetch_add(1, Ordering::SeqCst);
        pool.metrics.add_active_workers(1);
        InFlight {
            queue: &pool.queue,
            metrics: &pool.metrics,
            in_flight: &pool.in_flight,
            key,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.queue.done(&self.key);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.metrics.add_active_workers(-1);
    }
}
