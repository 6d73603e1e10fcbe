//! One open watch response: its lines parsed as events, and the deadline by which the server
//! must have ended it.
//!
//! kube-apiserver ends every watch cleanly at its `timeoutSeconds`, with or without events
//! before. A stream still open [`KubernetesConfig::idle_grace`] after that is half-open: the
//! peer vanished without a FIN or RST (a dead node, a dropped NAT entry), or the server froze.
//! Nothing else would notice, because a quiet watch and a dead one look the same.
//!
//! [`KubernetesConfig::idle_grace`]: super::KubernetesConfig::idle_grace

use std::time::Duration;

use std::borrow::Cow;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{AsyncBufReadExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::warn;

use super::error::{Errors, Verb};
use crate::source::SourceError;

/// The annotation on the bookmark that ends a streaming list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

/// One line of a watch stream.
#[derive(Debug)]
pub(super) struct Event {
    pub(super) kind: EventType,
    /// The object's JSON text, as the server sent it.
    pub(super) object: Bytes,
}

impl Event {
    /// Parses the object into a JSON tree, for the rare events whose fields the source reads:
    /// bookmarks and errors. A body that is not JSON yields `Value::Null`.
    pub(super) fn object_value(&self) -> Value {
        serde_json::from_slice(&self.object).unwrap_or(Value::Null)
    }

    /// Returns true for the bookmark that ends a streaming list's initial events.
    pub(super) fn is_initial_events_end(&self) -> bool {
        self.kind == EventType::Bookmark
            && self.object_value()["metadata"]["annotations"][INITIAL_EVENTS_END].as_str()
                == Some("true")
    }
}

/// A watch line, with its object left as text.
#[derive(Deserialize)]
struct EventLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    object: &'a RawValue,
}

/// The lines of one watch response.
pub(super) struct EventStream {
    lines: BoxStream<'static, std::io::Result<String>>,
    /// When the server must have ended the stream.
    deadline: Instant,
    /// The time from the request to `deadline`, for the error message.
    limit: Duration,
}

impl EventStream {
    /// Wraps a response body requested at `requested_at` with a server timeout of
    /// `server_timeout` and `grace` on top.
    pub(super) fn new(
        body: impl futures::AsyncBufRead + Send + 'static,
        requested_at: Instant,
        server_timeout: Duration,
        grace: Duration,
    ) -> Self {
        let limit = server_timeout + grace;
        EventStream {
            lines: Box::pin(body.lines()).boxed(),
            deadline: requested_at + limit,
            limit,
        }
    }

    /// Reads the next event. Returns `None` when the server ended the stream.
    ///
    /// # Errors
    /// A transient error when reading fails, when a line is not a watch event, or when the
    /// deadline passes first.
    ///
    /// # Cancel safety
    /// Not cancel safe: a line half read when the future is dropped is lost.
    pub(super) async fn next_event(
        &mut self,
        errors: &Errors,
    ) -> Result<Option<Event>, SourceError> {
        loop {
            let line = match tokio::time::timeout_at(self.deadline, self.lines.next()).await {
                Err(_) => return Err(errors.half_open(Verb::Watch, self.limit)),
                Ok(None) => return Ok(None),
                Ok(Some(Err(error))) => return Err(errors.read(Verb::Watch, error)),
                Ok(Some(Ok(line))) => line,
            };
            if line.trim().is_empty() {
                continue;
            }
            match parse_line(&line) {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => {
                    warn!(source = %errors.name, line = %line, "skipping a watch event of unknown type");
                }
                Err(what) => return Err(errors.invalid_response(Verb::Watch, what)),
            }
        }
    }
}

/// Parses one line of a watch stream. Returns `None` for an event type this source does not
/// know, which a newer server might send.
pub(super) fn parse_line(line: &str) -> Result<Option<Event>, String> {
    let event: EventLine = serde_json::from_str(line)
        .map_err(|error| format!("the stream sent a line that is not a watch event: {error}"))?;
    let kind = match &*event.kind {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        "BOOKMARK" => EventType::Bookmark,
        "ERROR" => EventType::Error,
        _ => return Ok(None),
    };
    Ok(Some(Event {
        kind,
        object: Bytes::copy_from_slice(event.object.get().as_bytes()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookmark_marks_initial_events_end() {
        let line = r#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"555","annotations":{"k8s.io/initial-events-end":"true"}}}}"#;
        let event = parse_line(line).unwrap().unwrap();
        assert_eq!(event.kind, EventType::Bookmark);
        assert!(event.is_initial_events_end());
        let plain = r#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"556"}}}"#;
        assert!(!parse_line(plain).unwrap().unwrap().is_initial_events_end());
    }

    #[test]
    fn unknown_type_skipped() {
        assert!(
            parse_line(r#"{"type":"SYNC","object":{}}"#)
                .unwrap()
                .is_none()
        );
        assert!(parse_line("not json").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn silent_stream_fails_at_deadline() {
        let config = super::super::KubernetesConfig::new::<k8s_openapi::api::core::v1::ConfigMap>();
        let errors = Errors::new(std::sync::Arc::from("test"), &config);
        // A body that never yields a byte and never ends, like a half-open connection.
        let body = futures::TryStreamExt::into_async_read(futures::stream::pending::<
            std::io::Result<&'static [u8]>,
        >());
        let mut stream = EventStream::new(
            futures::io::BufReader::new(body),
            Instant::now(),
            Duration::from_secs(10),
            Duration::from_secs(5),
        );
        let started = Instant::now();
        let error = stream.next_event(&errors).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert!(error.to_string().contains("half-open"), "{error}");
    }
}
