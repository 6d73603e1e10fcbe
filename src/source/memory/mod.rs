//! In-memory source: an in-process, revisioned key-value store with etcd v3's list, watch and
//! compaction semantics, and fault injection, for examples and deterministic tests.
//!
//! [`MemoryStore`] plays the server. [`MemorySource`] reads one key prefix of a store, as the
//! [etcd source](super::etcd) reads one prefix of etcd, and [`Faults`] plays the
//! network between them. It is not a server: nothing is persisted and nothing listens on a port.
//!
//! # Semantics shared with etcd v3
//! - Every write transaction gets the next revision, and all of its changes share it. An empty
//!   store is at revision 1 and its first write gets revision 2. A delete of an absent key
//!   changes nothing and keeps the revision.
//! - Each key has a `create_revision`, a `mod_revision` and a `version`. A key that is deleted
//!   and put again gets a new `create_revision`, which the source reports as
//!   [`Incarnation::CreateRevision`](crate::source::Incarnation::CreateRevision).
//! - A list reads the state at one revision. The first page fixes it, and later pages read the
//!   state at that revision, so writes between pages are not seen.
//! - [`MemoryStore::compact`] at revision `c` drops the history below `c`. Lists at `c` or later
//!   and watches from `c` or later still work. Below `c` they fail with
//!   [`ErrorClass::Expired`](crate::source::ErrorClass::Expired), and so does a watch that fell
//!   behind `c` while open, as etcd cancels a watch whose next revision was compacted.
//! - A watch delivers one [`Batch`](crate::source::Batch) per revision that touched its prefix,
//!   with the changes in transaction order, and a
//!   [`WatchMessage::Progress`](crate::source::WatchMessage::Progress) with the current
//!   revision after each [`MemorySource::progress_interval`] without a message, as etcd's
//!   progress notifications do.
//!
//! # Slow consumers
//! A watch has no buffer of its own: it is a cursor into the store's history, read each time its
//! consumer polls for the next message. A slow consumer therefore costs no memory, and there is
//! no handoff from replaying history to following live writes in which a change could be lost
//! or repeated. etcd does not cancel a slow watcher either: its mvcc layer
//! (`watchableStore.notify`) takes the watcher out of its synced group and later replays what
//! it missed from the store, which is what the cursor does here.
//!
//! The history itself grows with every write until a compaction.
//! [`MemoryStore::set_auto_compaction`] bounds it. A watch that then falls further behind than
//! the kept history fails with `Expired` on its next read, and the reflector relists.
//!
//! # Faults
//! [`MemoryStore::faults`] returns the [`Faults`] handle: freeze the store, cut every watch
//! stream, delay responses, and fail the next lists or watches with a chosen
//! [`ErrorClass`](crate::source::ErrorClass). Every wait uses tokio time, so tests on a paused
//! clock run deterministically.
//!
//! # Example
//! ```
//! use futures::StreamExt;
//! use informer::source::memory::{MemorySource, MemoryStore};
//! use informer::source::{ListRequest, Source, WatchMessage};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), informer::source::SourceError> {
//! let store = MemoryStore::new();
//! store.put("/app/a", "1");
//! let source = MemorySource::new(store.clone(), "/app/");
//!
//! let page = source
//!     .list_page(ListRequest { revision: None, continue_from: None, limit: 100 })
//!     .await?;
//! assert_eq!(page.objects.len(), 1);
//!
//! let mut watch = source.watch(page.revision + 1).await?;
//! store.put("/app/b", "2");
//! match watch.next().await {
//!     Some(Ok(WatchMessage::Batch(batch))) => assert_eq!(batch.changes[0].key().as_ref(), "/app/b"),
//!     other => panic!("expected a batch, got {other:?}"),
//! }
//! # Ok(())
//! # }
//! ```

mod faults;
mod store;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use faults::Faults;
pub use store::{INITIAL_REVISION, KeyValue, MemoryStore, Op, RevisionError, TxnError};

use self::faults::{Call, injected_error};
use self::store::State;
use super::{ContinueToken, ListRequest, Page, Revision, Source, SourceError, WatchStream};

/// The default [`MemorySource::progress_interval`].
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// A [`Source`] over the keys under one prefix of a [`MemoryStore`].
///
/// Clones share the store. Several sources, with the same or different prefixes, can read one
/// store.
#[derive(Clone, Debug)]
pub struct MemorySource {
    store: MemoryStore,
    prefix: Arc<str>,
    name: Arc<str>,
    progress_interval: Option<Duration>,
}

impl MemorySource {
    /// Creates a source over the keys of `store` that start with `prefix`. An empty prefix
    /// covers every key.
    pub fn new(store: MemoryStore, prefix: impl Into<Arc<str>>) -> MemorySource {
        let prefix = prefix.into();
        MemorySource {
            store,
            name: format!("memory prefix {prefix:?}").into(),
            prefix,
            progress_interval: Some(DEFAULT_PROGRESS_INTERVAL),
        }
    }

    /// Sets how long a watch stays silent before it sends a progress message, or turns progress
    /// messages off with `None` or a zero interval. The default is
    /// [`DEFAULT_PROGRESS_INTERVAL`].
    pub fn with_progress_interval(mut self, interval: Option<Duration>) -> MemorySource {
        self.progress_interval = interval.filter(|interval| !interval.is_zero());
        self
    }

    /// Returns the store this source reads.
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Returns the key prefix this source reads.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Reads one page from the locked state.
    fn read_page(&self, state: &State, request: &ListRequest) -> Result<Page<Bytes>, SourceError> {
        // As in etcd, a revision of 0 or less reads the current state.
        let revision = match request.revision {
            Some(revision) if revision > 0 => revision,
            _ => state.revision,
        };
        state
            .check_readable(revision)
            .map_err(|error| self.revision_error(error))?;
        let start = self.continue_key(request.continue_from.as_ref())?;

        // As in etcd, a limit of 0 means no limit.
        let limit = match request.limit {
            0 => usize::MAX,
            limit => limit,
        };
        let mut live = state.live_at(&self.prefix, start, revision);
        let objects: Vec<_> = live
            .by_ref()
            .take(limit)
            .map(|kv| kv.into_object())
            .collect();
        let next = live
            .next()
            .map(|kv| ContinueToken(kv.key.as_bytes().to_vec()));

        tracing::debug!(
            source = %self.name,
            revision,
            objects = objects.len(),
            more = next.is_some(),
            "memory list page"
        );
        Ok(Page {
            revision,
            objects,
            next,
        })
    }

    /// Decodes a continue token: the first key of the next page.
    fn continue_key<'a>(
        &'a self,
        token: Option<&'a ContinueToken>,
    ) -> Result<&'a str, SourceError> {
        let Some(token) = token else {
            return Ok(&self.prefix);
        };
        match std::str::from_utf8(&token.0) {
            Ok(key) if key.starts_with(self.prefix.as_ref()) => Ok(key),
            _ => Err(SourceError::Permanent {
                source_name: self.name.clone(),
                detail: format!(
                    "invalid continue token {:?}: not a key under the prefix",
                    String::from_utf8_lossy(&token.0)
                ),
                action: "Pass the token of the previous page of a list from this source, or start the list again without one".to_owned(),
                cause: None,
            }),
        }
    }

    fn revision_error(&self, error: RevisionError) -> SourceError {
        let source_name = self.name.clone();
        match error {
            RevisionError::Compacted {
                revision,
                compact_revision,
            } => SourceError::Expired {
                source_name,
                detail: format!("revision {revision} was compacted at {compact_revision}"),
            },
            RevisionError::Future { .. } | RevisionError::AlreadyCompacted { .. } => {
                SourceError::Permanent {
                    source_name,
                    detail: error.to_string(),
                    action: "List at a revision this store returned, or start the list again without a revision".to_owned(),
                    cause: None,
                }
            }
        }
    }
}

impl Source for MemorySource {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Reads one page at the request's revision, or at the current revision when it has none.
    ///
    /// Waits while the store is frozen, and returns after the delay in force.
    ///
    /// # Errors
    /// [`ErrorClass::Expired`](crate::source::ErrorClass::Expired) when the revision was
    /// compacted. [`ErrorClass::Permanent`](crate::source::ErrorClass::Permanent) for a revision
    /// above the current one or a continue token that is not a key under the prefix. Any class
    /// when a failure was injected with [`Faults::fail_next_lists`].
    ///
    /// # Cancel safety
    /// Cancel safe. A call cancelled during its delay has already used up the injected failure
    /// it returns, if one was queued.
    async fn list_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        let shared = &self.store.shared;
        let mut signal = shared.subscribe();
        let (page, delay) = {
            let mut state = shared.lock_unfrozen(&mut signal).await;
            let page = match state.faults.take_failure(Call::List) {
                Some(class) => Err(injected_error(&self.name, Call::List, class)),
                None => self.read_page(&state, &request),
            };
            (page, state.faults.delay)
        };

        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
            // A page in flight when the store froze arrives after the freeze.
            shared.wait_unfrozen(&mut signal).await;
        }
        page
    }

    /// Opens a watch from `from`, or from the next revision when `from` is 0 or less, as in
    /// etcd.
    ///
    /// Waits while the store is frozen. The stream ends after its first error:
    /// [`ErrorClass::Expired`](crate::source::ErrorClass::Expired) when compaction passed the
    /// watch, and [`ErrorClass::Transient`](crate::source::ErrorClass::Transient) when
    /// [`Faults::drop_watches`] cut it.
    ///
    /// # Errors
    /// [`ErrorClass::Expired`](crate::source::ErrorClass::Expired) when `from` is below the
    /// compact revision. Any class when a failure was injected with
    /// [`Faults::fail_next_watches`].
    async fn watch(&self, from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        watch::open(
            self.store.shared.clone(),
            self.name.clone(),
            self.prefix.clone(),
            from,
            self.progress_interval,
        )
        .await
    }

    fn progress_interval(&self) -> Option<Duration> {
        self.progress_interval
    }
}
