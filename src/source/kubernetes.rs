//! A Kubernetes API resource as a source, through kube's client.
//!
//! Only kube's HTTP client is used: the list, watch, resume and relist logic is this crate's.
//!
//! - Keys are `namespace/name`, or `name` for cluster-scoped resources.
//! - Revisions are `resourceVersion`s parsed as integers, as kube-apiserver writes them.
//! - The incarnation is `metadata.uid`, so a name deleted and created again while the watch was
//!   away is a delete then an add.
//! - A list is read in pages of [`KubernetesConfig::page_size`] (default 500) with `limit` and
//!   `continue`. The first page is a consistent read whose `resourceVersion` pins the later
//!   pages. A continue token that expired (HTTP 410) is [`ErrorClass::Expired`], so the list
//!   restarts.
//! - A watch asks for bookmarks and for a server timeout drawn between 5 and 10 minutes, so
//!   watches of many resources do not all end together. A bookmark moves the resume revision.
//! - 410 Gone comes in two forms, an HTTP 410 when the watch opens and an `ERROR` event with
//!   a 410 Status inside an HTTP 200 stream. Both are [`ErrorClass::Expired`].
//! - A watch that sends nothing, not even the end of the stream, for longer than the server
//!   timeout plus [`KubernetesConfig::idle_grace`] is a half-open connection and fails as
//!   [`ErrorClass::Transient`].
//! - With [`KubernetesConfig::streaming_list`], the first list is a watch with
//!   `sendInitialEvents=true`, ready at the bookmark annotated `k8s.io/initial-events-end`. A
//!   server that does not support it gets a paged list instead, from then on.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use kube::api::{ListParams, WatchParams};
use kube::core::{ApiResource, Request};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{
    Batch, Change, ContinueToken, Incarnation, ListRequest, Object, Page, Revision, Source,
    SourceError, WatchMessage, WatchStream,
};

/// The annotation on the bookmark that ends a streaming list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// What to list and watch, and how.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// The resource: group, version, kind and plural name.
    pub resource: ApiResource,
    /// True for namespaced resources.
    pub namespaced: bool,
    /// One namespace, or `None` for all namespaces (and for cluster-scoped resources).
    pub namespace: Option<String>,
    /// A label selector, such as `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// A field selector, such as `metadata.name=config`.
    pub field_selector: Option<String>,
    /// Request `PartialObjectMetadata` instead of whole objects, to save memory.
    pub metadata_only: bool,
    /// Objects per list page.
    pub page_size: u32,
    /// The range of server-side watch timeouts, drawn at random per watch.
    pub watch_timeout: Range<Duration>,
    /// How long past its server timeout a silent watch is kept before it counts as half-open.
    pub idle_grace: Duration,
    /// Read the first list as a stream of watch events (`sendInitialEvents=true`).
    pub streaming_list: bool,
}

impl KubernetesConfig {
    /// Watches the resource of type `K` in every namespace.
    pub fn new<K>() -> Self
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Self::for_resource(ApiResource::erase::<K>(&()), is_namespaced::<K>())
    }

    /// Watches a resource described at run time.
    pub fn for_resource(resource: ApiResource, namespaced: bool) -> Self {
        KubernetesConfig {
            resource,
            namespaced,
            namespace: None,
            label_selector: None,
            field_selector: None,
            metadata_only: false,
            page_size: 500,
            watch_timeout: Duration::from_secs(300)..Duration::from_secs(600),
            idle_grace: Duration::from_secs(30),
            streaming_list: false,
        }
    }

    /// Limits the source to one namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets a label selector.
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Sets a field selector.
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Requests metadata only.
    pub fn metadata_only(mut self) -> Self {
        self.metadata_only = true;
        self
    }

    /// Reads the first list as a stream of watch events.
    pub fn streaming_list(mut self) -> Self {
        self.streaming_list = true;
        self
    }

    /// Sets the list page size.
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    fn url_path(&self) -> String {
        let base = if self.resource.group.is_empty() {
            format!("/api/{}", self.resource.version)
        } else {
            format!("/apis/{}/{}", self.resource.group, self.resource.version)
        };
        match (&self.namespace, self.namespaced) {
            (Some(namespace), true) => {
                format!("{base}/namespaces/{namespace}/{}", self.resource.plural)
            }
            _ => format!("{base}/{}", self.resource.plural),
        }
    }
}

fn is_namespaced<K: kube::Resource<DynamicType = ()>>() -> bool {
    // A cluster-scoped type's url path has no namespace segment.
    K::url_path(&(), Some("n")).contains("/namespaces/n/")
}

/// One Kubernetes resource as a [`Source`]. Values are the objects as JSON.
pub struct KubernetesSource {
    client: kube::Client,
    request: Request,
    context: Context,
    /// Cleared when the server rejected a streaming list.
    streaming: AtomicBool,
}

/// The source's name and configuration, shared with its watch streams, which parse and
/// classify what the server sends.
#[derive(Clone)]
struct Context {
    name: Arc<str>,
    config: Arc<KubernetesConfig>,
}

impl KubernetesSource {
    /// Creates a source for `config` that talks through `client`.
    pub fn new(client: kube::Client, config: KubernetesConfig) -> Self {
        let scope = match &config.namespace {
            Some(namespace) if config.namespaced => format!("namespace {namespace:?}"),
            _ if config.namespaced => "all namespaces".to_owned(),
            _ => "cluster".to_owned(),
        };
        let group = if config.resource.group.is_empty() {
            "core".to_owned()
        } else {
            config.resource.group.clone()
        };
        let name = format!(
            "kubernetes {}.{}/{} in {scope}",
            config.resource.plural, group, config.resource.version
        );
        KubernetesSource {
            client,
            request: Request::new(config.url_path()),
            streaming: AtomicBool::new(config.streaming_list),
            context: Context {
                name: Arc::from(name),
                config: Arc::new(config),
            },
        }
    }

    /// Returns the configuration.
    pub fn config(&self) -> &KubernetesConfig {
        &self.context.config
    }

    async fn paged_list(&self, request: ListRequest) -> Result<Page<Value>, SourceError> {
        let context = &self.context;
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
        .map_err(|error| context.invalid_request(error))?;

        let list: ListBody = self
            .client
            .request(http_request)
            .await
            .map_err(|error| context.classify(error, "list"))?;

        let list_revision = parse_revision(&list.metadata.resource_version).ok_or_else(|| {
            context.transient(format!(
                "list returned resourceVersion {:?}, which is not an integer",
                list.metadata.resource_version
            ))
        })?;
        let objects = list
            .items
            .into_iter()
            .filter_map(|item| context.object(item))
            .collect();
        let next = list
            .metadata
            .continue_token
            .filter(|token| !token.is_empty())
            .map(|token| ContinueToken(token.into_bytes()));
        Ok(Page {
            // Later pages report the first page's revision, so the snapshot has one revision.
            revision: request.revision.unwrap_or(list_revision),
            objects,
            next,
        })
    }

    /// Reads the whole snapshot as a watch with `sendInitialEvents=true`.
    ///
    /// Returns `Ok(None)` when the server does not support streaming lists.
    async fn streaming_list(&self) -> Result<Option<Page<Value>>, SourceError> {
        let context = &self.context;
        let mut params = context.watch_params();
        params.send_initial_events = true;
        let http_request = self
            .watch_request(&params, "")
            .map_err(|error| context.invalid_request(error))?;
        let lines = match self.client.request_stream(http_request).await {
            Ok(lines) => lines,
            Err(kube::Error::Api(status)) if status.code == 422 || status.code == 400 => {
                return Ok(None);
            }
            Err(error) => return Err(context.classify(error, "watch")),
        };
        let mut lines = Box::pin(lines.lines());
        let mut objects = Vec::new();
        let idle = context.idle_limit(&params);
        loop {
            let line = match tokio::time::timeout(idle, lines.next()).await {
                Err(_) => return Err(context.idle_error(idle)),
                Ok(None) => {
                    return Err(context.transient(
                        "the streaming list ended before its initial-events-end bookmark".into(),
                    ));
                }
                Ok(Some(Err(error))) => return Err(context.read_error(error)),
                Ok(Some(Ok(line))) => line,
            };
            if line.trim().is_empty() {
                continue;
            }
            let event: EventLine = serde_json::from_str(&line)
                .map_err(|error| context.transient(format!("invalid watch event: {error}")))?;
            match event.kind.as_str() {
                "ADDED" | "MODIFIED" => objects.extend(context.object(event.object)),
                "BOOKMARK" if is_initial_events_end(&event.object) => {
                    let revision = object_revision(&event.object).unwrap_or(0);
                    objects.sort_by(|a: &Object<Value>, b| a.key.cmp(&b.key));
                    info!(source = %context.name, revision, objects = objects.len(), "streaming list complete");
                    return Ok(Some(Page {
                        revision,
                        objects,
                        next: None,
                    }));
                }
                "ERROR" => {
                    let status = status_of(&event.object);
                    if is_streaming_unsupported(&status) {
                        return Ok(None);
                    }
                    return Err(context.status_error(status, "watch"));
                }
                other => {
                    debug!(source = %context.name, kind = other, "ignoring an event during a streaming list")
                }
            }
        }
    }

    fn watch_request(
        &self,
        params: &WatchParams,
        version: &str,
    ) -> Result<http::Request<Vec<u8>>, kube::core::request::Error> {
        if self.context.config.metadata_only {
            self.request.watch_metadata(params, version)
        } else {
            self.request.watch(params, version)
        }
    }
}

fn page_limit(request: &ListRequest, config: &KubernetesConfig) -> u32 {
    let limit = request.limit.clamp(1, u32::MAX as usize) as u32;
    limit.min(config.page_size.max(1))
}

impl Source for KubernetesSource {
    type Value = Value;

    fn name(&self) -> &Arc<str> {
        &self.context.name
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<Value>, SourceError> {
        if request.continue_from.is_none() && self.streaming.load(Ordering::Relaxed) {
            match self.streaming_list().await? {
                Some(page) => return Ok(page),
                None => {
                    warn!(source = %self.context.name, "the server does not support streaming lists; using paged lists");
                    self.streaming.store(false, Ordering::Relaxed);
                }
            }
        }
        self.paged_list(request).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<Value>, SourceError> {
        let context = self.context.clone();
        // A Kubernetes watch from resourceVersion R delivers the changes after R.
        let version = (from - 1).max(0).to_string();
        let params = context.watch_params();
        let http_request = self
            .watch_request(&params, &version)
            .map_err(|error| context.invalid_request(error))?;
        let lines = self
            .client
            .request_stream(http_request)
            .await
            .map_err(|error| context.classify(error, "watch"))?;
        let idle = context.idle_limit(&params);
        debug!(source = %context.name, resource_version = %version, timeout_s = params.timeout, "watch opened");

        let lines = Box::pin(lines.lines());
        let stream = futures::stream::unfold(Some((lines, context)), move |state| async move {
            let (mut lines, context) = state?;
            loop {
                let line = match tokio::time::timeout(idle, lines.next()).await {
                    Err(_) => return Some((Err(context.idle_error(idle)), None)),
                    Ok(None) => return None,
                    Ok(Some(Err(error))) => return Some((Err(context.read_error(error)), None)),
                    Ok(Some(Ok(line))) => line,
                };
                match context.parse_line(&line) {
                    // An error ends the stream: nothing after it is read.
                    Err(error) => return Some((Err(error), None)),
                    Ok(Some(message)) => return Some((Ok(message), Some((lines, context)))),
                    Ok(None) => continue,
                }
            }
        });
        Ok(stream.boxed())
    }
}

impl Context {
    fn watch_params(&self) -> WatchParams {
        let range = &self.config.watch_timeout;
        let seconds = rand::rng()
            .random_range(range.start.as_secs()..=range.end.as_secs().max(range.start.as_secs()));
        let mut params = WatchParams::default().timeout(seconds.min(u32::MAX as u64) as u32);
        params.bookmarks = true;
        params.label_selector = self.config.label_selector.clone();
        params.field_selector = self.config.field_selector.clone();
        params
    }

    /// Returns how long a watch may stay silent before it counts as half-open.
    fn idle_limit(&self, params: &WatchParams) -> Duration {
        Duration::from_secs(params.timeout.unwrap_or(0) as u64) + self.config.idle_grace
    }

    /// Parses one line of a watch stream. Returns `None` for a line with nothing to apply.
    fn parse_line(&self, line: &str) -> Result<Option<WatchMessage<Value>>, SourceError> {
        if line.trim().is_empty() {
            return Ok(None);
        }
        let event: EventLine = serde_json::from_str(line)
            .map_err(|error| self.transient(format!("invalid watch event: {error}")))?;
        match event.kind.as_str() {
            "ADDED" | "MODIFIED" => Ok(self.object(event.object).map(|object| {
                WatchMessage::Batch(Batch {
                    revision: object.revision,
                    changes: vec![Change::Put(object)],
                })
            })),
            "DELETED" => Ok(self.object(event.object).map(|object| {
                WatchMessage::Batch(Batch {
                    revision: object.revision,
                    changes: vec![Change::Delete {
                        key: object.key,
                        revision: object.revision,
                    }],
                })
            })),
            "BOOKMARK" => Ok(object_revision(&event.object).map(WatchMessage::Progress)),
            "ERROR" => Err(self.status_error(status_of(&event.object), "watch")),
            other => {
                debug!(source = %self.name, kind = other, "ignoring an unknown watch event type");
                Ok(None)
            }
        }
    }

    /// Turns a listed or watched object into a source object. An object without a name, uid or
    /// integer resourceVersion is skipped with a warning.
    fn object(&self, value: Value) -> Option<Object<Value>> {
        let metadata = &value["metadata"];
        let name = metadata["name"].as_str();
        let uid = metadata["uid"].as_str();
        let revision = object_revision(&value);
        let (Some(name), Some(uid), Some(revision)) = (name, uid, revision) else {
            warn!(source = %self.name, metadata = %metadata, "skipping an object without name, uid or integer resourceVersion");
            return None;
        };
        let key = match metadata["namespace"].as_str() {
            Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}"),
            _ => name.to_owned(),
        };
        let incarnation = Incarnation::Uid(Arc::from(uid));
        Some(Object {
            key: Arc::from(key),
            revision,
            incarnation,
            value,
        })
    }

    fn classify(&self, error: kube::Error, verb: &str) -> SourceError {
        match error {
            kube::Error::Api(status) => self.status_error(
                StatusInfo {
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                },
                verb,
            ),
            other => SourceError::Transient {
                source_name: self.name.clone(),
                detail: format!("{verb} failed: {other}"),
                cause: Some(Box::new(other)),
            },
        }
    }

    fn status_error(&self, status: StatusInfo, verb: &str) -> SourceError {
        let resource = &self.config.resource.plural;
        let group = &self.config.resource.group;
        let namespace = match (&self.config.namespace, self.config.namespaced) {
            (Some(namespace), true) => format!("namespace {namespace:?}"),
            (None, true) => "all namespaces".to_owned(),
            _ => "the cluster scope".to_owned(),
        };
        let detail = format!(
            "{verb} {resource} in {namespace} failed with HTTP {} {}: {}",
            status.code, status.reason, status.message
        );
        let permanent = |action: String| SourceError::Permanent {
            source_name: self.name.clone(),
            detail: detail.clone(),
            action,
            cause: None,
        };
        match status.code {
            410 => SourceError::Expired {
                source_name: self.name.clone(),
                detail,
            },
            401 => permanent(
                "check the credentials in the kubeconfig or the service account token".into(),
            ),
            403 => permanent(format!(
                "grant the verb {verb:?} on resource {resource:?} of API group {group:?} in {namespace} to this identity with a Role or ClusterRole and a binding"
            )),
            404 => permanent(
                "check that the resource exists on this server; for a custom resource, that its CRD is installed and Established".into(),
            ),
            400 | 422 => permanent("check the selectors and the source's configuration".into()),
            _ => SourceError::Transient {
                source_name: self.name.clone(),
                detail,
                cause: None,
            },
        }
    }

    fn invalid_request(&self, error: kube::core::request::Error) -> SourceError {
        SourceError::Permanent {
            source_name: self.name.clone(),
            detail: format!("cannot build the request: {error}"),
            action: "check the source's configuration".into(),
            cause: Some(Box::new(error)),
        }
    }

    fn transient(&self, detail: String) -> SourceError {
        SourceError::Transient {
            source_name: self.name.clone(),
            detail,
            cause: None,
        }
    }

    fn read_error(&self, error: std::io::Error) -> SourceError {
        SourceError::Transient {
            source_name: self.name.clone(),
            detail: format!("reading the watch stream failed: {error}"),
            cause: Some(Box::new(error)),
        }
    }

    fn idle_error(&self, idle: Duration) -> SourceError {
        self.transient(format!(
            "the watch sent nothing for {} s, longer than its server timeout allows; the connection is half-open",
            idle.as_secs()
        ))
    }
}

/// The parts of a Status the source reads.
struct StatusInfo {
    code: u16,
    reason: String,
    message: String,
}

fn status_of(object: &Value) -> StatusInfo {
    StatusInfo {
        code: object["code"].as_u64().unwrap_or(0) as u16,
        reason: object["reason"].as_str().unwrap_or("").to_owned(),
        message: object["message"].as_str().unwrap_or("").to_owned(),
    }
}

/// kube-apiserver backed by etcd 3.4 rejects streaming lists with an ERROR event carrying a 500
/// Status whose message mentions RequestWatchProgress.
fn is_streaming_unsupported(status: &StatusInfo) -> bool {
    status.code == 500 && status.message.contains("RequestWatchProgress")
}

fn is_initial_events_end(object: &Value) -> bool {
    object["metadata"]["annotations"][INITIAL_EVENTS_END].as_str() == Some("true")
}

fn object_revision(object: &Value) -> Option<Revision> {
    parse_revision(object["metadata"]["resourceVersion"].as_str().unwrap_or(""))
}

fn parse_revision(version: &str) -> Option<Revision> {
    version.parse::<Revision>().ok()
}

#[derive(Deserialize)]
struct EventLine {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
}

#[derive(Deserialize)]
struct ListBody {
    metadata: ListMetadata,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Deserialize)]
struct ListMetadata {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}
