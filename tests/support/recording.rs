//! Test wrappers that record what flows through the pipeline.

use std::sync::Arc;
use std::time::Duration;

use informer::notify::Event;
use informer::source::{ListRequest, Page, Revision, Source, SourceError, WatchStream};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// One call the reflector made to a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// A list page; `first` is true for the first page of a list.
    ListPage { first: bool },
    /// A watch from this revision.
    Watch { from: Revision },
}

/// A source that records every call before passing it on.
pub struct RecordingSource<S> {
    inner: S,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl<S> RecordingSource<S> {
    /// Wraps `inner`; `calls` receives the record.
    pub fn new(inner: S) -> (Self, Arc<Mutex<Vec<Call>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        (
            RecordingSource {
                inner,
                calls: calls.clone(),
            },
            calls,
        )
    }
}

impl<S: Source> Source for RecordingSource<S> {
    type Value = S::Value;

    fn name(&self) -> &Arc<str> {
        self.inner.name()
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<S::Value>, SourceError> {
        self.calls.lock().push(Call::ListPage {
            first: request.continue_from.is_none(),
        });
        self.inner.list_page(request).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<S::Value>, SourceError> {
        self.calls.lock().push(Call::Watch { from });
        self.inner.watch(from).await
    }

    fn progress_interval(&self) -> Option<Duration> {
        self.inner.progress_interval()
    }
}

/// One event as a handler saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// `added`, `updated`, `deleted`, `deleted-unknown` or `resync`.
    pub kind: &'static str,
    /// The key.
    pub key: String,
    /// The revision of the value the event carries.
    pub revision: Revision,
}

/// A handler that records events and wakes waiters.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    changed: Arc<Notify>,
}

impl Recorder {
    /// Returns a handler function that records into this recorder.
    pub fn handler<T: Send + Sync + 'static>(&self) -> impl FnMut(Event<T>) + Send + 'static {
        let recorder = self.clone();
        move |event: Event<T>| {
            let kind = match &event {
                Event::Added(_) => "added",
                Event::Updated { .. } => "updated",
                Event::Deleted(_) => "deleted",
                Event::DeletedFinalStateUnknown(_) => "deleted-unknown",
                Event::Resync(_) => "resync",
            };
            let object = event.object();
            recorder.seen.lock().push(Seen {
                kind,
                key: object.key.to_string(),
                revision: object.revision,
            });
            recorder.changed.notify_waiters();
        }
    }

    /// Returns every event seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    /// Returns the events seen for `key`.
    pub fn for_key(&self, key: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .iter()
            .filter(|seen| seen.key == key)
            .cloned()
            .collect()
    }

    /// Waits until `condition` holds for the events seen, or panics after `limit`.
    pub async fn wait_until(&self, limit: Duration, condition: impl Fn(&[Seen]) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if condition(&self.seen.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "condition not met within {limit:?}; events seen: {:?}",
                    self.seen.lock()
                );
            }
        }
    }
}
