//! Watch streams of the in-memory source.
//!
//! A watch has no buffer. It is a cursor into the store's shared history: each time its
//! consumer polls for the next message, it reads the next revision that touched its prefix, or
//! waits for a write. Replaying history and following live writes are the same read, so the
//! switch from one to the other can neither lose nor repeat a change, and a slow consumer costs
//! no memory however far behind it falls.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::faults::{Call, injected_error};
use super::store::{Shared, State};
use crate::source::{Revision, SourceError, WatchMessage, WatchStream};

/// The next action of a watch.
enum Step {
    /// Return this message after the delay in force.
    Deliver(WatchMessage<Bytes>, Duration),
    /// The store is frozen: stay silent until something changes.
    Frozen,
    /// Nothing to deliver yet: wait for a write or for the progress deadline.
    Idle,
}

/// One open watch.
pub(super) struct Watcher {
    shared: Arc<Shared>,
    source_name: Arc<str>,
    prefix: Arc<str>,
    /// The next revision to deliver. Every change under `prefix` below it was delivered.
    cursor: Revision,
    /// The cut epoch at open. A different epoch in the store means the stream was cut.
    cut_epoch: u64,
    signal: watch::Receiver<()>,
    progress_interval: Option<Duration>,
    /// When the watch last delivered a message, opened, or came out of a freeze.
    idle_since: Instant,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.lock().open_watches -= 1;
        tracing::debug!(source = %self.source_name, revision = self.cursor - 1, "memory watch closed");
    }
}

/// Opens a watch of the changes under `prefix` from revision `from` on. A `from` of 0 or less
/// starts after the current revision, as in etcd.
///
/// Waits while the store is frozen.
///
/// # Errors
/// [`ErrorClass::Expired`](crate::source::ErrorClass::Expired) when `from` is below the compact
/// revision, or an injected failure.
pub(super) async fn open(
    shared: Arc<Shared>,
    source_name: Arc<str>,
    prefix: Arc<str>,
    from: Revision,
    progress_interval: Option<Duration>,
) -> Result<WatchStream<Bytes>, SourceError> {
    let mut signal = shared.subscribe();
    let watcher = {
        let mut state = shared.lock_unfrozen(&mut signal).await;
        if let Some(class) = state.faults.take_failure(Call::Watch) {
            return Err(injected_error(&source_name, Call::Watch, class));
        }

        let cursor = if from <= 0 { state.revision + 1 } else { from };
        if cursor < state.compact_revision {
            return Err(compacted(&source_name, cursor, &state));
        }

        state.open_watches += 1;
        Watcher {
            shared: shared.clone(),
            source_name,
            prefix,
            cursor,
            cut_epoch: state.faults.cut_epoch,
            signal,
            progress_interval,
            idle_since: Instant::now(),
        }
    };

    tracing::debug!(source = %watcher.source_name, revision = watcher.cursor, "memory watch opened");
    Ok(watcher.into_stream())
}

fn compacted(source_name: &Arc<str>, revision: Revision, state: &State) -> SourceError {
    SourceError::Expired {
        source_name: source_name.clone(),
        detail: format!(
            "revision {revision} was compacted at {}",
            state.compact_revision
        ),
    }
}

impl Watcher {
    /// Turns the watcher into a stream that ends after its first error.
    fn into_stream(self) -> WatchStream<Bytes> {
        futures::stream::unfold(Some(self), |watcher| async move {
            let mut watcher = watcher?;
            match watcher.next_message().await {
                Ok(message) => Some((Ok(message), Some(watcher))),
                Err(error) => Some((Err(error), None)),
            }
        })
        .boxed()
    }

    async fn next_message(&mut self) -> Result<WatchMessage<Bytes>, SourceError> {
        loop {
            match self.step()? {
                Step::Deliver(message, delay) => return self.deliver(message, delay).await,
                Step::Frozen => {
                    let _ = self.signal.changed().await;
                    // A freeze is silence, not idleness: the progress interval starts over when
                    // the store responds again.
                    self.idle_since = Instant::now();
                }
                Step::Idle => self.wait_idle().await,
            }
        }
    }

    /// Reads the store and decides what to do next. Fails when the stream was cut or the
    /// cursor was compacted.
    fn step(&mut self) -> Result<Step, SourceError> {
        // Marked seen before the read, so a write after the read wakes the next wait.
        self.signal.borrow_and_update();
        let state = self.shared.lock();
        self.check_cut(&state)?;
        if state.faults.frozen {
            return Ok(Step::Frozen);
        }
        if self.cursor < state.compact_revision {
            tracing::warn!(
                source = %self.source_name,
                revision = self.cursor,
                compact_revision = state.compact_revision,
                "memory watch fell behind the compact revision; ending it as expired"
            );
            return Err(compacted(&self.source_name, self.cursor, &state));
        }

        let delay = state.faults.delay;
        if let Some(batch) = state.next_batch(&self.prefix, &mut self.cursor) {
            return Ok(Step::Deliver(WatchMessage::Batch(batch), delay));
        }

        // `next_batch` found nothing, so every change up to the current revision is delivered.
        let progress_due = self
            .progress_interval
            .is_some_and(|interval| Instant::now() >= self.idle_since + interval);
        if progress_due {
            return Ok(Step::Deliver(WatchMessage::Progress(state.revision), delay));
        }
        Ok(Step::Idle)
    }

    fn check_cut(&self, state: &State) -> Result<(), SourceError> {
        if state.faults.cut_epoch == self.cut_epoch {
            return Ok(());
        }
        Err(SourceError::Transient {
            source_name: self.source_name.clone(),
            detail: "watch stream cut".to_owned(),
            cause: None,
        })
    }

    /// Waits for a write, a fault, or the progress deadline.
    async fn wait_idle(&mut self) {
        match self.progress_interval {
            Some(interval) => {
                let deadline = self.idle_since + interval;
                tokio::select! {
                    _ = self.signal.changed() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => {
                let _ = self.signal.changed().await;
            }
        }
    }

    /// Returns `message` after `delay`. A message in flight when the store froze arrives after
    /// the freeze, and one in flight when the stream was cut is lost with the stream.
    async fn deliver(
        &mut self,
        message: WatchMessage<Bytes>,
        delay: Duration,
    ) -> Result<WatchMessage<Bytes>, SourceError> {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        loop {
            self.signal.borrow_and_update();
            {
                let state = self.shared.lock();
                self.check_cut(&state)?;
                if !state.faults.frozen {
                    break;
                }
            }
            let _ = self.signal.changed().await;
        }

        match &message {
            WatchMessage::Batch(batch) => tracing::debug!(
                source = %self.source_name,
                revision = batch.revision,
                changes = batch.changes.len(),
                "memory watch batch"
            ),
            WatchMessage::Progress(revision) => {
                tracing::debug!(source = %self.source_name, revision, "memory watch progress")
            }
        }
        self.idle_since = Instant::now();
        Ok(message)
    }
}
