//! A Kubernetes API resource as a [`Source`], through kube's HTTP client.
//!
//! Only kube's client is used: the list, watch, resume and relist logic is this crate's
//! [reflector](crate::reflector). One [`KubernetesSource`] serves one resource in one scope
//! (a namespace or all of them), so each resource backs off on its own.
//!
//! # Objects
//! - Keys are `namespace/name`, or `name` for cluster-scoped resources.
//! - Revisions are `resourceVersion`s parsed as integers, as kube-apiserver writes them. An
//!   object without a name, uid or integer `resourceVersion` is skipped with a warning.
//! - The incarnation is `metadata.uid`. A name deleted and created again while the watch was
//!   away therefore reaches handlers as a delete, then an add: the cache infers it on a relist,
//!   and a resumed watch delivers the `DELETED` and `ADDED` events themselves.
//! - Values are the objects' JSON text as the server sent it, in [`Bytes`], the same raw form
//!   as the etcd source's values. The source reads only the metadata fields it needs and
//!   skips the rest, so the decoder ([`Json`](crate::decode::Json) for a typed object) parses
//!   each object once, straight into its type. With [`KubernetesConfig::metadata_only`] the
//!   objects are `PartialObjectMetadata`, which keeps only the metadata.
//!
//! # List
//! A list is read in pages of at most [`KubernetesConfig::page_size`] objects (default 500)
//! with `limit` and `continue`. The first page is a consistent read, and its
//! `resourceVersion` pins the later pages through the continue token, so the whole list is one
//! snapshot. A continue token that expired (HTTP 410 after a compaction) is
//! [`ErrorClass::Expired`](crate::source::ErrorClass::Expired), and the reflector lists again
//! from the first page.
//!
//! With [`KubernetesConfig::streaming_list`], the first list is a watch with
//! `sendInitialEvents=true` and `resourceVersionMatch=NotOlderThan`: `ADDED` events for the
//! current state, then a bookmark annotated [`INITIAL_EVENTS_END`] whose `resourceVersion` is
//! the snapshot's. The list completes at that bookmark, and the next watch from its revision
//! continues the same stream instead of sending a new request. A server that rejects
//! streaming lists gets paged lists from then on. It rejects them with HTTP 422 Invalid, or,
//! as kube-apiserver 1.36 on etcd 3.4 does, with an `ERROR` event carrying a 500 Status that
//! names the `RequestWatchProgress` storage feature.
//!
//! # Watch
//! A watch starts after the list's `resourceVersion`, allows bookmarks, and requests a server
//! timeout drawn from [`KubernetesConfig::watch_timeout`] (5 to 10 minutes), so the watches of
//! many sources do not all end together. When the server ends it, the stream ends without an
//! error and the reflector watches again from the last applied revision. A bookmark is
//! [`WatchMessage::Progress`]: it moves the resume revision forward, never back.
//!
//! A stream that is still open [`KubernetesConfig::idle_grace`] after its server timeout is a
//! half-open connection: the peer vanished without closing it, or the server froze. It fails
//! as a transient error, and the reflector watches again.
//!
//! # Errors
//! - 410 Gone comes in two forms, an HTTP 410 when the watch opens and an `ERROR` event with
//!   a 410 Status inside an HTTP 200 stream. Both are `Expired`, so the reflector relists.
//! - 401 and 403 (credentials, RBAC), 404 and 405 (resource not served), 400 and 422 (invalid
//!   selectors or options) are `Permanent`. The message names the verb, the resource and the
//!   scope, and for a 403 the permission to grant.
//! - 429, 5xx, connection failures and unreadable responses are `Transient`. kube 5's client,
//!   with `Config::default_retry` on, retries 429, 503 and 504 up to 15 times first.

mod config;
mod error;
mod stream;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kube::api::{ListParams, WatchParams};
use kube::core::Request;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use config::{DEFAULT_IDLE_GRACE, DEFAULT_PAGE_SIZE, DEFAULT_WATCH_TIMEOUT, KubernetesConfig};
pub use stream::INITIAL_EVENTS_END;

use super::{
    Batch, Change, ContinueToken, Incarnation, ListRequest, Object, Page, Revision, Source,
    SourceError, WatchMessage, WatchStream,
};
use error::{Errors, Origin, StatusInfo, Verb};
use stream::{Event, EventStream, EventType};

/// One Kubernetes resource in one scope as a [`Source`]. Values are the objects' JSON text.
///
/// ```no_run
/// # async fn example(client: kube::Client) {
/// use informer::decode::Json;
/// use informer::reflector::Reflector;
/// use informer::source::kubernetes::{KubernetesConfig, KubernetesSource};
/// use k8s_openapi::api::core::v1::ConfigMap;
///
/// let config = KubernetesConfig::new::<ConfigMap>().namespace("default").labels("app=web");
/// let source = KubernetesSource::new(client, config);
/// let reflector = Reflector::new(source, Json::<ConfigMap>::new());
/// let store = reflector.store();
/// tokio::spawn(reflector.run());
/// # let _ = store;
/// # }
/// ```
pub struct KubernetesSource {
    client: kube::Client,
    request: Request,
    context: Context,
    /// Cleared for good when the server rejected a streaming list.
    streaming: AtomicBool,
    /// The stream of the last streaming list, kept open after its initial-events-end bookmark
    /// so that the watch that follows the list continues it.
    handoff: Mutex<Option<Handoff>>,
}

/// An open stream waiting for the watch that starts at `from`.
struct Handoff {
    from: Revision,
    events: EventStream,
}

/// The source's configuration and error builder, shared with its watch streams.
#[derive(Clone)]
struct Context {
    errors: Errors,
    config: Arc<KubernetesConfig>,
}

impl KubernetesSource {
    /// Creates a source for `config` that talks through `client`. It sends no request until
    /// the reflector lists.
    pub fn new(client: kube::Client, config: KubernetesConfig) -> Self {
        let group = if config.resource.group.is_empty() {
            "core"
        } else {
            config.resource.group.as_str()
        };
        let name = format!(
            "kubernetes {}.{}/{} in {}",
            config.resource.plural,
            group,
            config.resource.version,
            config.scope()
        );
        let name: Arc<str> = Arc::from(name);
        if config.namespace.is_some() && !config.namespaced {
            warn!(source = %name, namespace = ?config.namespace, "ignoring the namespace of a cluster-scoped resource");
        }
        KubernetesSource {
            client,
            request: Request::new(config.url_path()),
            streaming: AtomicBool::new(config.streaming_list),
            handoff: Mutex::new(None),
            context: Context {
                errors: Errors::new(name, &config),
                config: Arc::new(config),
            },
        }
    }

    /// Returns the configuration.
    pub fn config(&self) -> &KubernetesConfig {
        &self.context.config
    }

    /// Reads one page with `limit` and `continue`.
    async fn paged_list(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        let context = &self.context;
        let errors = &context.errors;
        let mut params = ListParams::default().limit(page_limit(&request, &context.config));
        params.label_selector = context.config.label_selector.clone();
        params.field_selector = context.config.field_selector.clone();
        if let Some(token) = &request.continue_from {
            params.continue_token = Some(String::from_utf8_lossy(&token.0).into_owned());
        }
        let http_request = if context.config.metadata_only {
            self.request.list_metadata(&params)
        } else {
            self.request.list(&params)
        }
        .map_err(|error| errors.invalid_request(error))?;

        let text = self
            .client
            .request_text(http_request)
            .await
            .map_err(|error| errors.request(error, Verb::List))?;
        // The items stay JSON text: the decoder parses each one once, into its own type.
        let list: ListBody<'_> = serde_json::from_str(&text).map_err(|error| {
            errors.invalid_response(
                Verb::List,
                format!("the list response is not a list: {error}"),
            )
        })?;

        let list_revision = parse_revision(&list.metadata.resource_version).ok_or_else(|| {
            errors.invalid_response(
                Verb::List,
                format!(
                    "the list's resourceVersion {:?} is not an integer",
                    list.metadata.resource_version
                ),
            )
        })?;
        let objects: Vec<Object<Bytes>> = list
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| context.object(Bytes::copy_from_slice(item.get().as_bytes())))
            .collect();
        let next = list
            .metadata
            .continue_token
            .filter(|token| !token.is_empty())
            .map(|token| ContinueToken(token.into_bytes()));
        debug!(source = %errors.name, revision = list_revision, objects = objects.len(), more = next.is_some(), "list page");
        Ok(Page {
            // Later pages report the first page's revision, so the snapshot has one revision.
            revision: request.revision.unwrap_or(list_revision),
            objects,
            next,
        })
    }

    /// Reads the whole snapshot as a watch with `sendInitialEvents=true` and keeps the
    /// stream for the watch that follows.
    ///
    /// Returns `Ok(None)` when the server does not support streaming lists.
    async fn streaming_list(&self) -> Result<Option<Page<Bytes>>, SourceError> {
        let context = &self.context;
        let errors = &context.errors;
        let mut params = context.watch_params();
        params.send_initial_events = true;
        let http_request = self.watch_request(&params, "")?;
        let mut events = match self.open(http_request, &params).await {
            Ok(events) => events,
            Err(kube::Error::Api(status)) if status.code == 422 => {
                info!(source = %errors.name, message = %status.message, "the server rejected the streaming list request");
                return Ok(None);
            }
            Err(error) => return Err(errors.request(error, Verb::Watch)),
        };

        // Keyed by cache key, so the page comes out in key order as a paged list does.
        let mut objects: BTreeMap<Arc<str>, Object<Bytes>> = BTreeMap::new();
        loop {
            let Some(event) = events.next_event(errors).await? else {
                return Err(errors.invalid_response(
                    Verb::Watch,
                    "the streaming list ended before its initial-events-end bookmark".into(),
                ));
            };
            match event.kind {
                EventType::Added | EventType::Modified => {
                    if let Some(object) = context.object(event.object) {
                        objects.insert(object.key.clone(), object);
                    }
                }
                EventType::Deleted => {
                    if let Some(object) = context.object(event.object) {
                        objects.remove(&object.key);
                    }
                }
                EventType::Bookmark if event.is_initial_events_end() => {
                    let revision = object_revision(&event.object).ok_or_else(|| {
                        errors.invalid_response(
                            Verb::Watch,
                            "the initial-events-end bookmark has no integer resourceVersion".into(),
                        )
                    })?;
                    info!(source = %errors.name, revision, objects = objects.len(), "streaming list complete");
                    *self.handoff.lock() = Some(Handoff {
                        from: revision + 1,
                        events,
                    });
                    return Ok(Some(Page {
                        revision,
                        objects: objects.into_values().collect(),
                        next: None,
                    }));
                }
                EventType::Bookmark => {}
                EventType::Error => {
                    let status = StatusInfo::from_event_object(&event.object_value());
                    if status.rejects_streaming_list() {
                        info!(source = %errors.name, message = %status.message, "the server rejected the streaming list");
                        return Ok(None);
                    }
                    return Err(errors.status(status, Verb::Watch, Origin::ErrorEvent));
                }
            }
        }
    }

    fn watch_request(
        &self,
        params: &WatchParams,
        version: &str,
    ) -> Result<http::Request<Vec<u8>>, SourceError> {
        if self.context.config.metadata_only {
            self.request.watch_metadata(params, version)
        } else {
            self.request.watch(params, version)
        }
        .map_err(|error| self.context.errors.invalid_request(error))
    }

    /// Sends a watch request and wraps the response body.
    async fn open(
        &self,
        request: http::Request<Vec<u8>>,
        params: &WatchParams,
    ) -> Result<EventStream, kube::Error> {
        let requested_at = Instant::now();
        let body = self.client.request_stream(request).await?;
        let server_timeout = Duration::from_secs(params.timeout.map_or(0, u64::from));
        Ok(EventStream::new(
            body,
            requested_at,
            server_timeout,
            self.context.config.idle_grace,
        ))
    }
}

/// Returns the page size: the reflector's limit or the source's, whichever is smaller.
fn page_limit(request: &ListRequest, config: &KubernetesConfig) -> u32 {
    let limit = u32::try_from(request.limit.max(1)).unwrap_or(u32::MAX);
    limit.min(config.page_size.max(1))
}

impl Source for KubernetesSource {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        &self.context.errors.name
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        if request.continue_from.is_none() {
            // A new list makes a stream held from an earlier streaming list useless.
            drop(self.handoff.lock().take());
            if self.streaming.load(Ordering::Relaxed) {
                if let Some(page) = self.streaming_list().await? {
                    return Ok(page);
                }
                warn!(source = %self.context.errors.name, "the server does not support streaming lists; using paged lists from now on");
                self.streaming.store(false, Ordering::Relaxed);
            }
        }
        self.paged_list(request).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        let context = self.context.clone();
        let pending_handoff = self.handoff.lock().take();
        if let Some(handoff) = pending_handoff {
            if handoff.from == from {
                debug!(source = %context.errors.name, from, "continuing the streaming list's stream as the watch");
                return Ok(context.into_watch_stream(handoff.events));
            }
            debug!(source = %context.errors.name, from, held_from = handoff.from, "dropping the streaming list's stream, which starts elsewhere");
        }

        // A watch from resourceVersion R delivers the changes after R.
        let version = (from - 1).max(0).to_string();
        let params = context.watch_params();
        let http_request = self.watch_request(&params, &version)?;
        let events = self
            .open(http_request, &params)
            .await
            .map_err(|error| context.errors.request(error, Verb::Watch))?;
        debug!(source = %context.errors.name, resource_version = %version, timeout_s = params.timeout, "watch opened");
        Ok(context.into_watch_stream(events))
    }
}

impl Context {
    fn watch_params(&self) -> WatchParams {
        let mut params = WatchParams::default().timeout(self.config.draw_watch_timeout());
        params.bookmarks = true;
        params.label_selector = self.config.label_selector.clone();
        params.field_selector = self.config.field_selector.clone();
        params
    }

    /// Turns an open stream into watch messages. The stream ends after its first error.
    fn into_watch_stream(self, events: EventStream) -> WatchStream<Bytes> {
        let stream = futures::stream::unfold(Some((events, self)), |state| async move {
            let (mut events, context) = state?;
            loop {
                let event = match events.next_event(&context.errors).await {
                    Err(error) => return Some((Err(error), None)),
                    Ok(None) => return None,
                    Ok(Some(event)) => event,
                };
                match context.message(event) {
                    Err(error) => return Some((Err(error), None)),
                    Ok(Some(message)) => return Some((Ok(message), Some((events, context)))),
                    Ok(None) => continue,
                }
            }
        });
        Box::pin(stream)
    }

    /// Turns one watch event into a message. Returns `None` for an event with nothing to apply.
    fn message(&self, event: Event) -> Result<Option<WatchMessage<Bytes>>, SourceError> {
        let name = &self.errors.name;
        match event.kind {
            EventType::Added | EventType::Modified => Ok(self.object(event.object).map(|object| {
                debug!(source = %name, key = ?object.key, revision = object.revision, kind = ?event.kind, "watch event");
                WatchMessage::Batch(Batch {
                    revision: object.revision,
                    changes: vec![Change::Put(object)],
                })
            })),
            EventType::Deleted => Ok(self.object(event.object).map(|object| {
                debug!(source = %name, key = ?object.key, revision = object.revision, "watch event: deleted");
                WatchMessage::Batch(Batch {
                    revision: object.revision,
                    changes: vec![Change::Delete {
                        key: object.key,
                        revision: object.revision,
                    }],
                })
            })),
            EventType::Bookmark => {
                let revision = object_revision(&event.object);
                if revision.is_none() {
                    warn!(source = %name, object = %preview(&event.object), "skipping a bookmark without an integer resourceVersion");
                }
                debug!(source = %name, revision, "bookmark");
                Ok(revision.map(WatchMessage::Progress))
            }
            EventType::Error => Err(self.errors.status(
                StatusInfo::from_event_object(&event.object_value()),
                Verb::Watch,
                Origin::ErrorEvent,
            )),
        }
    }

    /// Turns a listed or watched object, as JSON text, into a source object. An object without
    /// a name, uid or integer resourceVersion is skipped with a warning.
    fn object(&self, raw: Bytes) -> Option<Object<Bytes>> {
        let parsed = match serde_json::from_slice::<MetadataOnly<'_>>(&raw) {
            Ok(parsed) => parsed.metadata,
            Err(error) => {
                warn!(source = %self.errors.name, error = %error, object = %preview(&raw), "skipping an object that is not valid JSON");
                return None;
            }
        };
        let revision = parsed.resource_version.as_deref().and_then(parse_revision);
        let (Some(name), Some(uid), Some(revision)) =
            (parsed.name.as_deref(), parsed.uid.as_deref(), revision)
        else {
            warn!(source = %self.errors.name, object = %preview(&raw), "skipping an object without name, uid or integer resourceVersion");
            return None;
        };
        let key = match parsed.namespace.as_deref() {
            Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
            _ => name.to_owned(),
        };
        let incarnation = Incarnation::Uid(Arc::from(uid));
        Some(Object {
            key: Arc::from(key),
            revision,
            incarnation,
            value: raw,
        })
    }
}

/// Returns the integer resourceVersion of an object given as JSON text.
fn object_revision(raw: &[u8]) -> Option<Revision> {
    let parsed = serde_json::from_slice::<MetadataOnly<'_>>(raw).ok()?;
    parsed
        .metadata
        .resource_version
        .as_deref()
        .and_then(parse_revision)
}

/// Returns the start of an object's JSON text for a log line.
fn preview(raw: &[u8]) -> Cow<'_, str> {
    const LIMIT: usize = 300;
    String::from_utf8_lossy(&raw[..raw.len().min(LIMIT)])
}

/// The metadata fields the source reads, borrowed from an object's JSON text. Every other
/// field is skipped without being built.
#[derive(Deserialize)]
struct MetadataOnly<'a> {
    #[serde(borrow, default)]
    metadata: Metadata<'a>,
}

#[derive(Deserialize, Default)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
    #[serde(rename = "resourceVersion", borrow, default)]
    resource_version: Option<Cow<'a, str>>,
}

fn parse_revision(version: &str) -> Option<Revision> {
    version.parse::<Revision>().ok()
}

/// The parts of a list response the source reads, with each item left as JSON text.
#[derive(Deserialize)]
struct ListBody<'a> {
    metadata: ListMetadata,
    /// Go encodes an empty list as `null` in some versions.
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct ListMetadata {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

    use super::*;

    fn context(config: KubernetesConfig) -> Context {
        Context {
            errors: Errors::new(Arc::from("test"), &config),
            config: Arc::new(config),
        }
    }

    #[test]
    fn key_is_namespace_and_name() {
        let context = context(KubernetesConfig::new::<ConfigMap>());
        let object = serde_json::json!({"metadata": {
            "name": "a", "namespace": "proto", "uid": "u1", "resourceVersion": "12",
        }});
        let object = context.object(Bytes::from(object.to_string())).unwrap();
        assert_eq!(&*object.key, "proto/a");
        assert_eq!(object.revision, 12);
        assert_eq!(object.incarnation, Incarnation::Uid(Arc::from("u1")));

        let cluster = self::context(KubernetesConfig::new::<Namespace>());
        let namespace = serde_json::json!({"metadata": {
            "name": "proto", "uid": "u2", "resourceVersion": "3",
        }});
        assert_eq!(
            &*cluster
                .object(Bytes::from(namespace.to_string()))
                .unwrap()
                .key,
            "proto"
        );
    }

    #[test]
    fn object_without_uid_skipped() {
        let context = context(KubernetesConfig::new::<ConfigMap>());
        let object = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "12"}});
        assert!(context.object(Bytes::from(object.to_string())).is_none());
        assert!(context.object(Bytes::from_static(b"{not json")).is_none());
    }

    #[test]
    fn error_event_410_expired() {
        let context = context(KubernetesConfig::new::<ConfigMap>());
        let line = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (626)","reason":"Expired","code":410}}"#;
        let event = stream::parse_line(line).unwrap().unwrap();
        let error = context.message(event).unwrap_err();
        assert_eq!(error.class(), crate::source::ErrorClass::Expired);
        assert!(
            error.to_string().contains("too old resource version"),
            "{error}"
        );
    }

    #[test]
    fn deleted_carries_deletion_revision() {
        let context = context(KubernetesConfig::new::<ConfigMap>());
        let line = r#"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","namespace":"proto","uid":"u1","resourceVersion":"640"}}}"#;
        let event = stream::parse_line(line).unwrap().unwrap();
        let Some(WatchMessage::Batch(batch)) = context.message(event).unwrap() else {
            panic!("a DELETED event is a batch");
        };
        assert_eq!(batch.revision, 640);
        assert!(matches!(
            &batch.changes[..],
            [Change::Delete { key, revision: 640 }] if &**key == "proto/a"
        ));
    }

    #[test]
    fn page_limit_takes_smaller() {
        let config = KubernetesConfig::new::<ConfigMap>();
        let request = |limit| ListRequest {
            revision: None,
            continue_from: None,
            limit,
        };
        assert_eq!(page_limit(&request(10_000), &config), 500);
        assert_eq!(page_limit(&request(20), &config), 20);
        assert_eq!(page_limit(&request(0), &config), 1);
    }
}
