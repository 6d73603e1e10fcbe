//! The watch stream of an [`EtcdSource`].
//!
//! One etcd watch response becomes one [`WatchMessage`]:
//!
//! - a response with events becomes a [`Batch`] whose revision is the highest `mod_revision`
//!   of its events. All events of one transaction share a revision and arrive in one response,
//!   because the source never requests fragmented responses. One response can also hold several
//!   revisions when the watch catches up.
//! - a response without events becomes a [`WatchMessage::Progress`] (see
//!   [`EtcdConfig::trust_requested_progress`](super::EtcdConfig) for which revision it carries).
//! - the `created` response yields nothing.
//! - a `canceled` response ends the stream with an error: [`SourceError::Expired`] when it
//!   carries a compact revision, otherwise an error classified by its cancel reason.
//! - a response above [`EtcdConfig::max_response_bytes`](super::EtcdConfig) ends the stream
//!   with [`SourceError::Expired`], so the reflector relists and resumes after it.
//!
//! Facts measured on etcd 3.4.23 with etcd-client 0.21.1 that shape this module:
//!
//! - A watch from a compacted revision opens without an error. The server sends the `created`
//!   response, then one response with `canceled`, `compact_revision` set to the compaction
//!   revision and header revision 0, and keeps the stream open. A watch from exactly the
//!   compaction revision is valid.
//! - A requested progress response has watch id -1 and no events. The server's periodic
//!   progress notification carries the watch's own id.
//! - A killed server ends the response stream with an error within milliseconds. A frozen
//!   server sends nothing and keeps the connection open, so the client notices it only when
//!   an HTTP/2 keep-alive ping times out: after about 10 s with a 5 s interval and a 5 s
//!   timeout.
//! - etcd-client never resumes a watch by itself. After an error the stream ends and the
//!   reflector watches again from its resume revision.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, WatchOptions, WatchResponse};
use futures::StreamExt;
use tokio::time::{Interval, MissedTickBehavior};

use super::EtcdSource;
use super::error::{ErrorContext, Operation};
use super::list::{SkippedKeys, object_from_kv};
use crate::metrics::Metrics;
use crate::source::{Batch, Change, Revision, SourceError, WatchMessage, WatchStream};

impl EtcdSource {
    /// Opens a watch. See [`Source::watch`](crate::source::Source::watch).
    pub(super) async fn open_watch(
        &self,
        from: Revision,
    ) -> Result<WatchStream<Bytes>, SourceError> {
        let operation = Operation::Watch { from };
        let options = WatchOptions::new()
            .with_range(self.range.end.clone())
            .with_start_revision(from)
            .with_progress_notify();

        let mut client = self.clients().await?.watch.clone();
        let timeout = self.config.request_timeout;
        let opened = tokio::time::timeout(
            timeout,
            client.watch(self.range.start.clone(), Some(options)),
        );
        let stream = match opened.await {
            Err(_) => return Err(self.errors.timed_out(operation, timeout)),
            Ok(Err(error)) => {
                let error = self.errors.classify(operation, error);
                return Err(self.diagnose(error).await);
            }
            Ok(Ok(stream)) => stream,
        };
        tracing::info!(source = %self.name, revision = from, "watch opened");

        let period = self.config.progress_interval;
        let mut progress_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        progress_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);

        let state = WatchState {
            name: self.name.clone(),
            errors: self.errors.clone(),
            metrics: self.metrics.clone(),
            trust_requested_progress: self.config.trust_requested_progress,
            stream,
            progress_timer,
            progress_interval: period,
            from,
            watch_id: None,
            delivered: (from - 1).max(0),
            finished: false,
            source: self.clone(),
        };
        Ok(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed())
    }
}

/// The state of one open watch.
struct WatchState {
    name: Arc<str>,
    errors: ErrorContext,
    metrics: Metrics,
    trust_requested_progress: bool,
    /// The etcd watch. Dropping it cancels the watch, so the state owns it.
    stream: etcd_client::WatchStream,
    progress_timer: Interval,
    progress_interval: Duration,
    from: Revision,
    /// The id the server assigned in its `created` response.
    watch_id: Option<i64>,
    /// The highest revision this stream has reported as complete: every change up to it has
    /// been delivered. It starts at `from - 1` and only grows.
    delivered: Revision,
    /// Set after the stream yielded an error or the server closed it.
    finished: bool,
    /// The source, to diagnose a failure before the server confirmed the watch.
    source: EtcdSource,
}

/// One event of the loop in [`WatchState::next`].
enum Step {
    Response(Result<Option<WatchResponse>, etcd_client::Error>),
    RequestProgress,
}

impl WatchState {
    /// Returns the next message, or `None` once the stream has ended.
    async fn next(&mut self) -> Option<Result<WatchMessage<Bytes>, SourceError>> {
        if self.finished {
            return None;
        }
        loop {
            let step = tokio::select! {
                response = self.stream.message() => Step::Response(response),
                _ = self.progress_timer.tick() => Step::RequestProgress,
            };

            let item = match step {
                Step::Response(Ok(Some(response))) => self.handle(response),
                Step::Response(Ok(None)) => {
                    tracing::info!(
                        source = %self.name,
                        revision = self.delivered,
                        "the server closed the watch"
                    );
                    self.finished = true;
                    return None;
                }
                Step::Response(Err(error)) => {
                    let error = self.errors.classify(self.operation(), error);
                    // Before the `created` response, a failure may be the server rejecting
                    // a new TLS connection's client certificate.
                    let error = match self.watch_id {
                        None => self.source.diagnose(error).await,
                        Some(_) => error,
                    };
                    Some(Err(error))
                }
                Step::RequestProgress => self.request_progress().await,
            };

            if let Some(item) = item {
                if let Err(error) = &item {
                    self.finished = true;
                    tracing::warn!(
                        source = %self.name,
                        revision = self.delivered,
                        class = ?error.class(),
                        error = %error,
                        "watch failed"
                    );
                }
                return Some(item);
            }
        }
    }

    fn operation(&self) -> Operation {
        Operation::Watch { from: self.from }
    }

    /// Requests a progress response from the server. A request that cannot even be queued within
    /// one progress interval means the connection is stuck.
    async fn request_progress(&mut self) -> Option<Result<WatchMessage<Bytes>, SourceError>> {
        let sent =
            tokio::time::timeout(self.progress_interval, self.stream.request_progress()).await;
        match sent {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(Err(self.errors.classify(self.operation(), error))),
            Err(_) => Some(Err(self
                .errors
                .timed_out(self.operation(), self.progress_interval))),
        }
    }

    /// Converts one response, or returns `None` for a response that yields nothing.
    fn handle(
        &mut self,
        response: WatchResponse,
    ) -> Option<Result<WatchMessage<Bytes>, SourceError>> {
        if response.canceled() {
            return Some(Err(self.canceled(&response)));
        }
        let header = response.header().map_or(0, |header| header.revision());
        if let Some(error) = self.check_reset(header) {
            return Some(Err(error));
        }
        if response.created() {
            self.watch_id = Some(response.watch_id());
            return None;
        }
        if response.events().is_empty() {
            return Some(Ok(WatchMessage::Progress(
                self.progress(response.watch_id(), header),
            )));
        }
        Some(Ok(self.batch(&response)))
    }

    /// Detects a store whose revision went back: etcd rebuilt on an empty data directory or
    /// restored from an older snapshot. A header always carries the store's current revision,
    /// which never falls below a revision already delivered unless the store was replaced.
    /// The watch would otherwise wait silently for revisions the new store reaches only after
    /// unrelated writes, so this is reported as expired history and the reflector relists.
    fn check_reset(&self, header_revision: Revision) -> Option<SourceError> {
        let seen = self.from - 1;
        if header_revision <= 0 || header_revision >= seen {
            return None;
        }
        Some(SourceError::Expired {
            source_name: self.name.clone(),
            detail: format!(
                "the server's current revision {header_revision} is below revision {seen}, \
                 which this source already applied: the store was reset or restored from an \
                 older snapshot"
            ),
        })
    }

    fn canceled(&self, response: &WatchResponse) -> SourceError {
        let compact_revision = response.compact_revision();
        if compact_revision > 0 {
            return SourceError::Expired {
                source_name: self.name.clone(),
                detail: format!(
                    "watch from revision {}: the history before revision {compact_revision} \
                     was compacted",
                    self.from
                ),
            };
        }
        self.errors
            .classify_cancel(self.from, response.cancel_reason())
    }

    /// Returns the revision a progress response proves complete.
    ///
    /// A periodic progress notification carries this watch's id and travels through the same
    /// server channel as the events, so its revision is safe. A requested progress response
    /// (watch id -1) may overtake events unless the config trusts it.
    fn progress(&mut self, watch_id: i64, header_revision: Revision) -> Revision {
        let ordered = self.watch_id == Some(watch_id) || self.trust_requested_progress;
        if ordered && header_revision > self.delivered {
            self.delivered = header_revision;
        }
        tracing::debug!(
            source = %self.name,
            revision = self.delivered,
            header_revision,
            watch_id,
            "watch progress"
        );
        self.delivered
    }

    fn batch(&mut self, response: &WatchResponse) -> WatchMessage<Bytes> {
        let mut revision = 0;
        let mut changes = Vec::with_capacity(response.events().len());
        let mut skipped = SkippedKeys::default();

        for event in response.events() {
            let Some(kv) = event.kv() else {
                continue;
            };
            revision = revision.max(kv.mod_revision());
            let change = match event.event_type() {
                EventType::Put => object_from_kv(kv.clone()).map(Change::Put),
                EventType::Delete => match String::from_utf8(kv.key().to_vec()) {
                    Ok(key) => Ok(Change::Delete {
                        key: key.into(),
                        revision: kv.mod_revision(),
                    }),
                    Err(error) => Err(error.into_bytes()),
                },
            };
            match change {
                Ok(change) => changes.push(change),
                Err(key) => skipped.add(key),
            }
        }
        skipped.report(&self.name, &self.metrics, revision);
        self.delivered = self.delivered.max(revision);

        tracing::debug!(
            source = %self.name,
            revision,
            changes = changes.len(),
            "watch batch"
        );
        if changes.is_empty() {
            // Every key of the response was skipped: report the revision as done.
            return WatchMessage::Progress(self.delivered);
        }
        WatchMessage::Batch(Batch { revision, changes })
    }
}

#[cfg(test)]
mod tests {
    use crate::source::etcd::{EtcdConfig, EtcdSource};
    use crate::source::{ErrorClass, Source};

    #[tokio::test]
    async fn unreachable_server_transient() {
        let source = EtcdSource::connect(EtcdConfig::new(["http://127.0.0.1:1"], "/app/"))
            .await
            .expect("a lazy connection");
        let error = match source.watch(5).await {
            Ok(_) => panic!("no listener on port 1"),
            Err(error) => error,
        };
        assert_eq!(error.class(), ErrorClass::Transient, "{error}");
        assert!(
            error.to_string().contains("watch from revision 5"),
            "{error}"
        );
    }
}
