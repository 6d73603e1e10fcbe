//! The reflector: lists a source, watches it from the listed revision, and keeps the cache in
//! step through disconnects and compactions.
//!
//! # States
//! The reflector is an explicit state machine, stepped one transition at a time:
//!
//! ```text
//!            ┌────────── Expired ◄───────────┐
//!            ▼                               │
//!  start ─► List ── ok ──► Watch(from) ── batch/progress ──► Watch(applied + 1)
//!            │ ▲               │ │
//!   error    │ │  Expired      │ └── Transient / stalled / ended early ──► Wait ──► Watch(applied + 1)
//!            ▼ │               └──── Permanent ──► Wait (at the cap) ──► Watch(applied + 1)
//!           Wait
//! ```
//!
//! - The resume revision only moves forward. A batch at or below the applied revision is
//!   dropped as a duplicate.
//! - A batch is applied as a unit, and the resume revision moves only after it is applied.
//! - Every retry waits for this source's own backoff (800 ms doubling to 30 s, reset after a
//!   watch stayed up for a minute), so a watch that fails or ends at once never spins.
//! - Expired history (etcd compaction, Kubernetes 410 Gone) leads to a relist, which the cache
//!   turns into exactly the difference.
//! - A list into an empty cache, such as the first one, requests the next page before it hands
//!   the current one to the cache, so decoding and caching overlap the server's work. A relist
//!   of a filled cache reads one page at a time, which keeps its memory peak low.
//! - A watch that stays silent for three times the source's
//!   [progress interval](crate::source::Source::progress_interval) is treated as stalled and
//!   reopened: it catches a frozen server that keeps the connection open.
//!
//! Readiness is published as [`Health`] through [`Reflector::health`].

mod backoff;
mod health;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

pub use backoff::BackoffConfig;
pub use health::{Health, HealthWatch, LastError, Phase};

use crate::cache::{Store, Writer};
use crate::decode::Decoder;
use crate::metrics::Metrics;
use crate::source::{
    ErrorClass, ListRequest, Page, Revision, Source, SourceError, WatchMessage, WatchStream,
};

use backoff::Backoff;

/// Settings of one reflector.
#[derive(Clone, Debug)]
pub struct ReflectorConfig {
    /// Objects per list page. The default, 10,000, keeps a list of 100,000 etcd keys near the
    /// speed of an unpaged read: etcd counts every remaining key for each limited range, so
    /// small pages make large lists slow.
    pub page_size: usize,
    /// The maximum wait for one list page or for opening a watch.
    pub request_timeout: Duration,
    /// How long the watch may be down before [`Health::in_sync`] turns false.
    pub out_of_sync_after: Duration,
    /// Silence longer than this many progress intervals means the watch stalled.
    pub stall_factor: u32,
    /// Retry delays.
    pub backoff: BackoffConfig,
}

impl Default for ReflectorConfig {
    fn default() -> Self {
        ReflectorConfig {
            page_size: 10_000,
            request_timeout: Duration::from_secs(30),
            out_of_sync_after: Duration::from_secs(10),
            stall_factor: 3,
            backoff: BackoffConfig::default(),
        }
    }
}

/// The state machine's next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Read a full snapshot and apply the difference.
    List,
    /// Open a watch from this revision.
    Watch { from: Revision },
    /// Sleep until `until`, then go to `next`.
    Wait { until: Instant, next: Next },
}

/// The step after a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    List,
    Watch { from: Revision },
}

impl From<Next> for State {
    fn from(next: Next) -> Self {
        match next {
            Next::List => State::List,
            Next::Watch { from } => State::Watch { from },
        }
    }
}

/// Keeps a cache in step with one source. See the module docs for the state machine.
pub struct Reflector<S: Source, D: Decoder<S::Value>> {
    source: Arc<S>,
    writer: Writer<S::Value, D>,
    config: ReflectorConfig,
    health: watch::Sender<Health>,
    metrics: Metrics,
    backoff: Backoff,
    /// When the watch went down, if it is down.
    down_since: Option<Instant>,
    /// True after the first successful list.
    listed_once: bool,
}

impl<S, D> Reflector<S, D>
where
    S: Source,
    D: Decoder<S::Value>,
{
    /// Creates a reflector that decodes `source`'s values with `decoder` into a new cache.
    pub fn new(source: S, decoder: D) -> Self {
        Self::with_metrics(source, decoder, Metrics::default())
    }

    /// Creates a reflector that counts into `metrics`.
    pub fn with_metrics(source: S, decoder: D, metrics: Metrics) -> Self {
        let store = Store::new(source.name().clone(), metrics.clone());
        let config = ReflectorConfig::default();
        Reflector {
            source: Arc::new(source),
            writer: Writer::new(store, decoder),
            backoff: Backoff::new(config.backoff.clone()),
            config,
            health: watch::Sender::new(Health::default()),
            metrics,
            down_since: None,
            listed_once: false,
        }
    }

    /// Replaces the settings.
    pub fn config(mut self, config: ReflectorConfig) -> Self {
        self.backoff = Backoff::new(config.backoff.clone());
        self.config = config;
        self
    }

    /// Returns a read handle on the cache.
    pub fn store(&self) -> Store<D::Output> {
        self.writer.store().clone()
    }

    /// Returns a read handle on the readiness.
    pub fn health(&self) -> HealthWatch {
        HealthWatch {
            receiver: self.health.subscribe(),
        }
    }

    /// Returns the source.
    pub fn source(&self) -> &Arc<S> {
        &self.source
    }

    /// Runs until the future is dropped.
    pub async fn run(self) {
        self.run_until(std::future::pending::<()>()).await
    }

    /// Runs until `shutdown` completes, then marks the reflector stopped.
    ///
    /// # Cancel safety
    /// Dropping the future stops the reflector between two steps. The cache stays as it was
    /// after the last applied batch.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        let source_name = self.source.name().clone();
        info!(source = %source_name, "reflector started");
        tokio::pin!(shutdown);
        let mut state = State::List;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                next = self.step(state) => state = next,
            }
        }
        self.health.send_modify(|health| {
            health.phase = Phase::Stopped;
            health.in_sync = false;
        });
        info!(source = %source_name, "reflector stopped");
    }

    /// Spawns the reflector on the current runtime. Aborting the handle stops it.
    pub fn spawn(self) -> tokio::task::JoinHandle<()>
    where
        S: Send + Sync,
        S::Value: Send,
        D: Send,
        D::Output: Send + Sync,
    {
        tokio::spawn(self.run())
    }

    /// Performs one transition.
    async fn step(&mut self, state: State) -> State {
        match state {
            State::List => self.list().await,
            State::Watch { from } => self.watch(from).await,
            State::Wait { until, next } => {
                self.set_phase(Phase::BackingOff);
                self.with_down_check(tokio::time::sleep_until(until)).await;
                next.into()
            }
        }
    }

    /// Lists every page at one revision and applies the difference.
    async fn list(&mut self) -> State {
        self.set_phase(Phase::Listing);
        self.health.send_modify(|health| health.in_sync = false);
        if self.listed_once {
            self.metrics.relist(self.source.name());
        }

        let writer = &self.writer;
        let mut relist = writer.relist();
        let mut revision: Option<Revision> = None;
        let mut pages = 0usize;
        let mut next = Some(ListRequest {
            revision: None,
            continue_from: None,
            limit: self.config.page_size,
        });
        let mut in_flight: Option<PageFetch<S::Value>> = None;
        loop {
            let mut fetch = match (in_flight.take(), next.take()) {
                (Some(fetch), _) => fetch,
                (None, Some(request)) => self.fetch_page(request),
                (None, None) => break,
            };
            let page = match with_down_check_parts(
                &self.health,
                self.down_since,
                self.config.out_of_sync_after,
                fetch.wait(self.source.name()),
            )
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    drop(relist);
                    return self.fail(error, Next::List);
                }
            };
            pages += 1;
            let list_revision = *revision.get_or_insert(page.revision);
            debug!(source = %self.source.name(), page = pages, objects = page.objects.len(), revision = list_revision, "list page");
            next = page.next.map(|token| ListRequest {
                revision: Some(list_revision),
                continue_from: Some(token),
                limit: self.config.page_size,
            });
            // A list into an empty cache fetches the next page while this one is decoded and
            // stored. A relist of a filled cache keeps one raw page at a time, which bounds
            // its memory peak.
            if relist.fills_empty_cache() {
                in_flight = next.take().map(|request| self.fetch_page(request));
            }
            run_cpu_bound(|| relist.add_page(page.objects));
        }

        let revision = revision.unwrap_or(0);
        relist.finish(revision);
        self.listed_once = true;
        self.health.send_modify(|health| {
            health.synced = true;
            health.revision = revision;
            health.last_error = None;
            health.consecutive_failures = 0;
        });
        State::Watch { from: revision + 1 }
    }

    /// Starts fetching one list page in a task of its own.
    fn fetch_page(&self, request: ListRequest) -> PageFetch<S::Value> {
        let source = self.source.clone();
        let limit = self.config.request_timeout;
        PageFetch(tokio::spawn(async move {
            let name = source.name().clone();
            with_timeout(limit, &name, "list page", source.list_page(request)).await
        }))
    }

    /// Opens a watch from `from` and applies what it delivers until it fails or ends.
    async fn watch(&mut self, from: Revision) -> State {
        self.set_phase(Phase::Watching);
        let result = with_timeout(
            self.config.request_timeout,
            self.source.name(),
            "opening the watch",
            self.source.watch(from),
        );
        let result = with_down_check_parts(
            &self.health,
            self.down_since,
            self.config.out_of_sync_after,
            result,
        )
        .await;
        let stream = match result {
            Ok(stream) => stream,
            Err(error) => return self.fail(error, Next::Watch { from }),
        };

        debug!(source = %self.source.name(), from, "watch opened");
        let opened_at = Instant::now();
        self.down_since = None;
        self.health.send_modify(|health| {
            health.in_sync = true;
            if health
                .last_error
                .as_ref()
                .is_some_and(|e| e.class == ErrorClass::Permanent)
            {
                health.last_error = None;
            }
        });

        let (applied, outcome, last_message) = self.consume(stream, from - 1).await;
        let resume = Next::Watch { from: applied + 1 };
        match outcome {
            WatchEnd::Error(error) => {
                // The watch has been down since its last sign of life, not since the error.
                self.down_since = Some(last_message);
                self.backoff.reset_if_stable(opened_at);
                self.fail(error, resume)
            }
            WatchEnd::Closed => {
                self.down_since = Some(Instant::now());
                self.metrics.watch_restart(self.source.name());
                if opened_at.elapsed() >= self.config.backoff.reset_after {
                    self.backoff.reset();
                    info!(source = %self.source.name(), from = applied + 1, "watch closed by the server; watching again");
                    resume.into()
                } else {
                    let delay = self.backoff.next_delay();
                    info!(source = %self.source.name(), from = applied + 1, delay_ms = delay.as_millis() as u64, "watch closed soon after it opened; backing off");
                    State::Wait {
                        until: Instant::now() + delay,
                        next: resume,
                    }
                }
            }
        }
    }

    /// Applies watch messages until the stream fails, stalls or ends. Returns the last applied
    /// revision and why the watch ended.
    async fn consume(
        &mut self,
        mut stream: WatchStream<S::Value>,
        mut applied: Revision,
    ) -> (Revision, WatchEnd, Instant) {
        let stall_after = self
            .source
            .progress_interval()
            .map(|interval| interval * self.config.stall_factor);
        let mut last_message = Instant::now();
        // Set while in_sync is false because a source that promises progress went silent.
        let mut silent = false;
        loop {
            let next = match stall_after {
                None => stream.next().await,
                Some(limit) => {
                    let out_of_sync_at = last_message + self.config.out_of_sync_after;
                    tokio::select! {
                        next = stream.next() => next,
                        _ = tokio::time::sleep_until(out_of_sync_at), if !silent && out_of_sync_at < last_message + limit => {
                            silent = true;
                            warn!(source = %self.source.name(), silent_ms = self.config.out_of_sync_after.as_millis() as u64, "watch silent; marking the cache out of sync");
                            self.health.send_modify(|health| health.in_sync = false);
                            continue;
                        }
                        _ = tokio::time::sleep_until(last_message + limit) => {
                            let error = SourceError::Transient {
                                source_name: self.source.name().clone(),
                                detail: format!(
                                    "watch stalled: no message for {} ms although the source promises one at least every {} ms",
                                    limit.as_millis(),
                                    (limit / self.config.stall_factor).as_millis()
                                ),
                                cause: None,
                            };
                            return (applied, WatchEnd::Error(error), last_message);
                        }
                    }
                }
            };

            let Some(Ok(message)) = next else {
                let end = match next {
                    Some(Err(error)) => WatchEnd::Error(error),
                    _ => WatchEnd::Closed,
                };
                return (applied, end, last_message);
            };
            last_message = Instant::now();
            if silent {
                silent = false;
                info!(source = %self.source.name(), "watch delivering again; cache in sync");
            }

            let revision = match message {
                WatchMessage::Progress(revision) => {
                    if revision > applied {
                        self.writer.progress(revision);
                    }
                    revision
                }
                WatchMessage::Batch(batch) => {
                    if batch.revision <= applied {
                        debug!(source = %self.source.name(), revision = batch.revision, applied, "dropping duplicate batch");
                        continue;
                    }
                    let revision = batch.revision;
                    self.writer.apply(batch);
                    // The store is named after the source, so this is the source's series.
                    self.writer.store().shared.source_metrics.watch_batch();
                    revision
                }
            };
            applied = applied.max(revision);
            // Any message proves the watch healthy: clear what an earlier failure left behind.
            self.health.send_if_modified(|health| {
                let before = (
                    health.revision,
                    health.in_sync,
                    health.consecutive_failures,
                    health.last_error.is_some(),
                );
                health.revision = applied;
                health.in_sync = true;
                health.consecutive_failures = 0;
                health.last_error = None;
                before != (applied, true, 0, false)
            });
        }
    }

    /// Records a failure and returns the state that handles it.
    fn fail(&mut self, error: SourceError, resume: Next) -> State {
        let class = error.class();
        let source = self.source.name().clone();
        self.metrics.source_error(&source, class);
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
        }
        let message: Arc<str> = Arc::from(error.to_string());
        let (next, delay) = match class {
            ErrorClass::Expired => {
                warn!(source = %source, error = %message, "history expired; relisting");
                (Next::List, self.backoff.next_delay())
            }
            ErrorClass::Transient => {
                let delay = self.backoff.next_delay();
                let attempt = self.backoff.attempt();
                // Repeated warnings are limited to the first few failures of an outage, then
                // every tenth.
                let failures = self.health.borrow().consecutive_failures + 1;
                if failures <= 3 || failures % 10 == 0 {
                    warn!(source = %source, error = %message, attempt, delay_ms = delay.as_millis() as u64, "source failed; retrying");
                } else {
                    debug!(source = %source, error = %message, attempt, delay_ms = delay.as_millis() as u64, "source failed; retrying");
                }
                (resume_or_list(resume, self.listed_once), delay)
            }
            ErrorClass::Permanent => {
                let delay = self.backoff.permanent_delay();
                error!(source = %source, error = %message, attempt = self.backoff.attempt(), delay_ms = delay.as_millis() as u64, "source failed permanently; not ready until this is fixed");
                (resume_or_list(resume, self.listed_once), delay)
            }
        };
        self.health.send_modify(|health| {
            health.consecutive_failures += 1;
            health.last_error = Some(LastError { class, message });
            if class != ErrorClass::Transient {
                health.in_sync = false;
            }
        });
        State::Wait {
            until: Instant::now() + delay,
            next,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.health.send_if_modified(|health| {
            let changed = health.phase != phase;
            health.phase = phase;
            changed
        });
    }

    /// Awaits `future` while turning `in_sync` false once the watch has been down too long.
    async fn with_down_check<F: Future>(&self, future: F) -> F::Output {
        with_down_check_parts(
            &self.health,
            self.down_since,
            self.config.out_of_sync_after,
            future,
        )
        .await
    }
}

/// Runs decoding and caching work that takes milliseconds. On a multi-thread runtime, the
/// worker's other tasks move to another thread meanwhile. Without that, a task spawned just
/// before, such as the fetch of the next list page, would wait for this work to end.
fn run_cpu_bound<R>(work: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// A list page being fetched. Dropping it cancels the request.
struct PageFetch<V>(tokio::task::JoinHandle<Result<Page<V>, SourceError>>);

impl<V> PageFetch<V> {
    /// Waits for the page. A panic in the source's `list_page` carries on in the caller.
    async fn wait(&mut self, source_name: &Arc<str>) -> Result<Page<V>, SourceError> {
        match (&mut self.0).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(SourceError::Transient {
                source_name: source_name.clone(),
                detail: "list page request was cancelled".to_owned(),
                cause: None,
            }),
        }
    }
}

impl<V> Drop for PageFetch<V> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reason a watch ended.
enum WatchEnd {
    Error(SourceError),
    /// The server closed the stream without an error.
    Closed,
}

/// Watches again if a list succeeded before; otherwise lists.
fn resume_or_list(resume: Next, listed_once: bool) -> Next {
    if listed_once { resume } else { Next::List }
}

/// Awaits `future`; if the watch is down and stays down past `limit`, marks the reflector out of
/// sync meanwhile.
async fn with_down_check_parts<F: Future>(
    health: &watch::Sender<Health>,
    down_since: Option<Instant>,
    limit: Duration,
    future: F,
) -> F::Output {
    let Some(since) = down_since else {
        return future.await;
    };
    tokio::pin!(future);
    tokio::select! {
        output = &mut future => return output,
        _ = tokio::time::sleep_until(since + limit) => {}
    }
    health.send_if_modified(|health| {
        let changed = health.in_sync;
        health.in_sync = false;
        changed
    });
    future.await
}

/// Fails with a transient error when `future` takes longer than `limit`.
async fn with_timeout<T>(
    limit: Duration,
    source_name: &Arc<str>,
    what: &str,
    future: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(SourceError::Transient {
            source_name: source_name.clone(),
            detail: format!("{what} timed out after {} ms", limit.as_millis()),
            cause: None,
        }),
    }
}
