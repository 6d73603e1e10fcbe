//! WATCH: one JSON event per line over a chunked HTTP 200 response.
//!
//! A stream starts in one of three ways:
//! - with the current state as `ADDED` events (no resourceVersion, `0`, or
//!   `sendInitialEvents=true`), followed by the `k8s.io/initial-events-end` bookmark when
//!   bookmarks are allowed;
//! - from a resourceVersion in the history window;
//! - with a single `ERROR` event, for a too-old resourceVersion or a rejected streaming list.
//!
//! It then follows the store. Events pass the namespace and selectors: an object that stops
//! matching is sent as `DELETED`, and one that starts matching as `ADDED`. Bookmarks come every
//! bookmark interval and once shortly before the timeout, and the stream ends cleanly at
//! `timeoutSeconds`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::cluster::list_prefix;
use super::encode;
use super::list::{ListOptions, wait_for_revision};
use super::request::RequestContext;
use super::resources::ResourceDef;
use super::selectors::Selectors;
use super::shared::{Control, Shared};
use super::status::StatusError;
use super::store::{EventKind, HistoryEvent, TooOld, set_resource_version};
use super::strategy::meta_str;
use super::{ExpiredWatchForm, http};

/// The history events a watch encodes at a time when it sends a backlog.
const HISTORY_EVENTS_PER_COLLECT: usize = 500;

/// The annotation that marks the bookmark closing the initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The start of a stream.
enum Start {
    /// The current state as `ADDED` events, read at the current revision.
    InitialState,
    /// Events after this revision.
    After(i64),
    /// A single `ERROR` event, then the end.
    Error(StatusError),
}

/// Serves a WATCH: checks it, picks where it starts, and returns the streaming response.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    ctx: &RequestContext,
    def: &Arc<ResourceDef>,
    namespace: Option<String>,
    options: &ListOptions,
) -> Result<Response, StatusError> {
    let timeout = watch_timeout(shared, options);
    let start = pick_start(shared, def, options).await?;
    let session = WatchSession::new(shared, ctx, def, namespace, options, timeout, start);
    debug!(
        resource = %def.plural,
        revision = session.position,
        timeout_seconds = timeout.as_secs(),
        "watch started"
    );
    let stream = futures::stream::unfold(session, |mut session| async move {
        let chunk = session.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), session))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, http::JSON)
        .body(Body::from_stream(stream))
        .expect("a static response is valid"))
}

/// `timeoutSeconds`, or what the apiserver picks without it: a random time between one and
/// two minimum request timeouts.
fn watch_timeout(shared: &Shared, options: &ListOptions) -> Duration {
    match options.timeout_seconds {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds),
        _ => {
            let factor = 1.0 + rand::rng().random::<f64>();
            shared.config.min_request_timeout.mul_f64(factor)
        }
    }
}

async fn pick_start(
    shared: &Arc<Shared>,
    def: &ResourceDef,
    options: &ListOptions,
) -> Result<Start, StatusError> {
    let requested = options.requested_revision()?;
    if shared.faults.lock().take_watch_expiry() {
        let current = shared.read(|cluster| cluster.store.revision());
        return Ok(Start::Error(StatusError::too_old_resource_version(
            requested.unwrap_or(0),
            current,
        )));
    }

    match options.send_initial_events {
        Some(true) => {
            let streaming = shared.faults.lock().streaming_lists;
            if !streaming {
                return Ok(Start::Error(refused_streaming_list(shared, options).await));
            }
            if let Some(requested) = requested
                && let Err(error) = wait_for_revision(shared, requested).await
            {
                return Ok(Start::Error(error));
            }
            Ok(Start::InitialState)
        }
        Some(false) => match requested {
            None => Ok(Start::After(
                shared.read(|cluster| cluster.store.revision()),
            )),
            Some(requested) => resume(shared, def, requested),
        },
        None => match requested {
            None => Ok(Start::InitialState),
            Some(requested) => resume(shared, def, requested),
        },
    }
}

/// Builds the error an apiserver whose storage cannot serve streaming lists sends: at once
/// when bookmarks are allowed, after the future-revision wait otherwise.
async fn refused_streaming_list(shared: &Arc<Shared>, options: &ListOptions) -> StatusError {
    if options.allow_bookmarks {
        return StatusError::internal_bare(
            "a watch stream was requested by the client but the required storage feature \
             RequestWatchProgress is disabled",
        );
    }
    let current = shared.read(|cluster| cluster.store.revision());
    match wait_for_revision(shared, current + 1).await {
        Err(error) => error,
        Ok(now) => StatusError::too_large_resource_version(now + 1, now),
    }
}

/// Resumes from `requested`, or refuses a revision older than the history window.
fn resume(shared: &Shared, def: &ResourceDef, requested: i64) -> Result<Start, StatusError> {
    let window_start = shared.read(|cluster| cluster.store.window_start(&def.storage));
    if requested >= window_start {
        return Ok(Start::After(requested));
    }
    let error = StatusError::too_old_resource_version(requested, window_start);
    match shared.faults.lock().expired_watch_form {
        ExpiredWatchForm::ErrorEvent => Ok(Start::Error(error)),
        ExpiredWatchForm::HttpStatus => Err(error),
    }
}

/// One open watch stream.
struct WatchSession {
    shared: Arc<Shared>,
    def: Arc<ResourceDef>,
    namespace: Option<String>,
    selectors: Selectors,
    metadata_only: bool,
    bookmarks: bool,
    /// Every event at or below this revision has been considered.
    position: i64,
    pending: VecDeque<Bytes>,
    /// History events taken from the store and not yet queued.
    backlog: VecDeque<Arc<HistoryEvent>>,
    finished: bool,
    deadline: Instant,
    bookmark_interval: Duration,
    next_periodic_bookmark: Instant,
    timeout_bookmark: Option<Instant>,
    revisions: watch::Receiver<i64>,
    control: watch::Receiver<Control>,
    start_epoch: u64,
}

impl WatchSession {
    fn new(
        shared: &Arc<Shared>,
        ctx: &RequestContext,
        def: &Arc<ResourceDef>,
        namespace: Option<String>,
        options: &ListOptions,
        timeout: Duration,
        start: Start,
    ) -> Self {
        let now = Instant::now();
        let lead = shared.config.bookmark_before_timeout;
        let bookmark_interval = shared
            .config
            .bookmark_interval
            .max(Duration::from_millis(1));
        let mut control = shared.subscribe_control();
        let start_epoch = control.borrow_and_update().end_epoch;
        shared.watch_opened();
        let mut session = Self {
            shared: shared.clone(),
            def: def.clone(),
            namespace,
            selectors: options.selectors.clone(),
            metadata_only: ctx.metadata_only,
            bookmarks: options.allow_bookmarks,
            position: 0,
            pending: VecDeque::new(),
            backlog: VecDeque::new(),
            finished: false,
            deadline: now + timeout,
            bookmark_interval,
            next_periodic_bookmark: now + bookmark_interval,
            timeout_bookmark: (timeout > lead).then(|| now + timeout - lead),
            revisions: shared.subscribe_revision(),
            control,
            start_epoch,
        };
        match start {
            Start::InitialState => session.push_initial_state(),
            Start::After(revision) => session.position = revision,
            Start::Error(error) => {
                session
                    .pending
                    .push_back(Bytes::from(encode::error_line(&error)));
                session.finished = true;
            }
        }
        session
    }

    /// Queues the current state as `ADDED` events, then the initial-events-end bookmark.
    fn push_initial_state(&mut self) {
        self.revisions.borrow_and_update();
        let shared = self.shared.clone();
        let cluster = shared.cluster.lock();
        let revision = cluster.store.revision();
        let prefix = list_prefix(self.namespace.as_deref());
        for (_, object) in cluster
            .store
            .range_at(&self.def.storage, &prefix, None, revision)
        {
            let object = self.def.to_api_form(&object);
            if self.selectors.matches(&object) {
                self.push_event("ADDED", &object);
            }
        }
        drop(cluster);
        self.position = revision;
        if self.bookmarks {
            let metadata = json!({
                "resourceVersion": revision.to_string(),
                "annotations": {INITIAL_EVENTS_END: "true"},
            });
            self.push_bookmark(metadata);
        }
    }

    /// Produces the next chunk of the body, or `None` when the stream ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let control = *self.control.borrow_and_update();
            if control.end_epoch != self.start_epoch {
                return None;
            }
            if control.hang {
                // Half-open: headers were sent, nothing more comes until the hang is lifted,
                // the watches are ended or the connection is dropped.
                self.control.changed().await.ok()?;
                continue;
            }
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.finished {
                return None;
            }

            self.revisions.borrow_and_update();
            self.collect();
            if !self.pending.is_empty() || self.finished {
                continue;
            }

            let bookmark_at = self.next_bookmark_at();
            tokio::select! {
                () = sleep_until(self.deadline) => {
                    debug!(resource = %self.def.plural, revision = self.position, "watch timed out");
                    return None;
                }
                () = sleep_until_some(bookmark_at) => self.send_bookmark(),
                changed = self.revisions.changed() => changed.ok()?,
                changed = self.control.changed() => changed.ok()?,
            }
        }
    }

    /// Queues the events written since `position`, a batch at a time until one of them passes
    /// this watcher's filters or the watcher has caught up.
    fn collect(&mut self) {
        while self.pending.is_empty() && !self.finished {
            if self.collect_batch() {
                break;
            }
        }
    }

    /// Queues one batch of the events written since `position`. Returns true when nothing is
    /// left to queue.
    ///
    /// A watch that starts far behind sends its backlog in batches, so the first events leave
    /// before the last ones are encoded. The backlog is taken whole, as pointers, when the
    /// watch reaches it, so writes that push it out of the history window meanwhile do not
    /// cut it short.
    fn collect_batch(&mut self) -> bool {
        if self.backlog.is_empty() && !self.take_backlog() {
            return true;
        }
        let count = self.backlog.len().min(HISTORY_EVENTS_PER_COLLECT);
        let batch: Vec<Arc<HistoryEvent>> = self.backlog.drain(..count).collect();
        for event in &batch {
            self.push_history_event(event);
        }
        self.backlog.is_empty()
    }

    /// Takes the events written since `position` into `backlog`. Returns false when there
    /// are none, or when the watch ended instead.
    fn take_backlog(&mut self) -> bool {
        let shared = self.shared.clone();
        let cluster = shared.cluster.lock();
        let def = &self.def;
        if cluster
            .registry
            .get(&def.group, &def.version, &def.plural)
            .is_none()
        {
            // The CRD is gone: the apiserver ends its watches.
            self.finished = true;
            return false;
        }
        let current = cluster.store.revision();
        if self.position >= current {
            return false;
        }
        let history =
            cluster
                .store
                .events_between(&def.storage, self.position, current, usize::MAX);
        drop(cluster);
        match history {
            Err(TooOld { window_start }) => {
                let error = StatusError::too_old_resource_version(self.position, window_start);
                self.pending
                    .push_back(Bytes::from(encode::error_line(&error)));
                self.finished = true;
                self.position = current;
                false
            }
            Ok(events) => {
                self.position = current;
                self.backlog = events.into();
                !self.backlog.is_empty()
            }
        }
    }

    /// Queues one stored event as it passes this watcher's namespace and selectors.
    fn push_history_event(&mut self, event: &HistoryEvent) {
        if let Some(namespace) = &self.namespace
            && meta_str(&event.object, "namespace") != namespace
        {
            return;
        }
        let object = self.def.to_api_form(&event.object);
        match event.kind {
            EventKind::Added => {
                if self.selectors.matches(&object) {
                    self.push_event("ADDED", &object);
                }
            }
            EventKind::Deleted => {
                if self.selectors.matches(&object) {
                    self.push_event("DELETED", &object);
                }
            }
            EventKind::Modified => {
                let previous = event
                    .previous
                    .as_ref()
                    .map(|previous| self.def.to_api_form(previous));
                let was_matching = previous
                    .as_ref()
                    .is_some_and(|previous| self.selectors.matches(previous));
                let is_matching = self.selectors.matches(&object);
                match (was_matching, is_matching) {
                    (true, true) => self.push_event("MODIFIED", &object),
                    (false, true) => self.push_event("ADDED", &object),
                    (true, false) => {
                        // The last matching state, stamped with the revision of the change.
                        let mut last = previous.expect("was_matching implies a previous state");
                        set_resource_version(&mut last, event.revision);
                        self.push_event("DELETED", &last);
                    }
                    (false, false) => {}
                }
            }
        }
    }

    fn push_event(&mut self, event_type: &str, object: &Value) {
        let line = if self.metadata_only {
            encode::event_line(
                event_type,
                &http::partial_metadata(object),
                &encode::PARTIAL_OBJECT_METADATA,
            )
        } else {
            encode::event_line(event_type, object, self.def.shape)
        };
        self.pending.push_back(Bytes::from(line));
    }

    fn push_bookmark(&mut self, metadata: Value) {
        let object = if self.metadata_only {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
        } else {
            self.def.bookmark_object(metadata)
        };
        let shape = if self.metadata_only {
            &encode::PARTIAL_OBJECT_METADATA
        } else {
            self.def.shape
        };
        self.pending
            .push_back(Bytes::from(encode::event_line("BOOKMARK", &object, shape)));
    }

    /// When the next bookmark is due; never while the stream waits for a future revision.
    fn next_bookmark_at(&self) -> Option<Instant> {
        if !self.bookmarks || self.position > *self.revisions.borrow() {
            return None;
        }
        Some(match self.timeout_bookmark {
            Some(at) => at.min(self.next_periodic_bookmark),
            None => self.next_periodic_bookmark,
        })
    }

    fn send_bookmark(&mut self) {
        self.collect();
        if self.finished {
            return;
        }
        let now = Instant::now();
        if self.timeout_bookmark.is_some_and(|at| at <= now) {
            self.timeout_bookmark = None;
        }
        while self.next_periodic_bookmark <= now {
            self.next_periodic_bookmark += self.bookmark_interval;
        }
        let metadata = json!({"resourceVersion": self.position.to_string()});
        self.push_bookmark(metadata);
    }
}

impl Drop for WatchSession {
    fn drop(&mut self) {
        self.shared.watch_closed();
        debug!(resource = %self.def.plural, revision = self.position, "watch closed");
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
