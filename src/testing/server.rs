//! The server handle: start, client configuration, store helpers, fault controls, shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::cluster::{Cluster, DeleteOptions, DeleteOutcome, WriteOptions};
use super::faults::{ExpiredWatchForm, Failure, Faults, RequestMatch, RestartHistory, Verb};
use super::http;
use super::patch::PatchType;
use super::resources::ResourceDef;
use super::shared::{RequestRecord, Shared};
use super::status::StatusError;
use super::strategy;

/// The user whose token [`TestServer::kube_config`] carries.
pub const ADMIN_USER: &str = "admin";

/// The field manager of writes made through the store helpers.
const HELPER_MANAGER: &str = "informer-test-server";

/// Settings of a [`TestServer`]. `TestServerConfig::default()` imitates kube-apiserver's
/// defaults where they exist.
#[derive(Clone, Debug)]
pub struct TestServerConfig {
    /// How many watch events each resource keeps; a watch from an older revision gets `410
    /// Expired`. Default 10 000.
    pub history_capacity: usize,
    /// The time between two bookmarks of a watch that allows them. Default 60 s, as the
    /// apiserver.
    pub bookmark_interval: Duration,
    /// How long before its timeout a watch gets its last bookmark (the apiserver sends it
    /// about 1–3 s before). Default 2 s.
    pub bookmark_before_timeout: Duration,
    /// The timeout of a watch without `timeoutSeconds` is between one and two times this.
    /// Default 1800 s, the apiserver's `--min-request-timeout`.
    pub min_request_timeout: Duration,
    /// How long a request for a resourceVersion the store has not reached waits before it
    /// fails with `504 Too large resource version`. Default 3 s, as the watch cache.
    pub future_resource_version_wait: Duration,
    /// How long the resources of a new CRD return `429 storage is (re)initializing`. The real
    /// window is well under a second. Default zero (off).
    pub crd_initialization_delay: Duration,
    /// Whether namespaced objects may only be created in existing namespaces, as in a real
    /// cluster. Default true; `default`, `kube-system`, `kube-public` and `kube-node-lease`
    /// exist from the start.
    pub require_namespaces: bool,
    /// The form in which a watch from a too-old resourceVersion is rejected. Default: an
    /// `ERROR` event.
    pub expired_watch_form: ExpiredWatchForm,
    /// Whether watches with `sendInitialEvents=true` (streaming lists) are served. Default
    /// true.
    pub streaming_lists: bool,
}

impl Default for TestServerConfig {
    fn default() -> Self {
        Self {
            history_capacity: 10_000,
            bookmark_interval: Duration::from_secs(60),
            bookmark_before_timeout: Duration::from_secs(2),
            min_request_timeout: Duration::from_secs(1800),
            future_resource_version_wait: Duration::from_secs(3),
            crd_initialization_delay: Duration::ZERO,
            require_namespaces: true,
            expired_watch_form: ExpiredWatchForm::ErrorEvent,
            streaming_lists: true,
        }
    }
}

/// Errors of starting a [`TestServer`] or configuring a client for it.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// The listener could not bind a loopback port.
    #[error(
        "failed to bind the test server to 127.0.0.1: {0}; check that loopback networking works"
    )]
    Bind(#[source] std::io::Error),
    /// The kube client could not be built from the server's configuration.
    #[error("failed to build a kube client for the test server at {url}: {source}")]
    Client {
        /// The server URL.
        url: String,
        /// The kube error.
        #[source]
        source: kube::Error,
    },
    /// The kubeconfig file could not be written.
    #[error("failed to write a kubeconfig to {path}: {source}")]
    Kubeconfig {
        /// The file path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// An in-memory Kubernetes API server on a loopback port, speaking the apiserver's HTTP
/// protocol to real clients.
///
/// It serves core `v1` namespaces, configmaps, secrets and events, `events.k8s.io/v1`
/// events, `coordination.k8s.io/v1` leases and `apiextensions.k8s.io/v1`
/// customresourcedefinitions; creating a CRD serves its custom resource. Objects live in a
/// revisioned store with etcd's semantics (one revision for the whole store, lists at past
/// revisions until compaction), and watches follow the watch cache's (bounded history,
/// bookmarks, `410 Expired`). Fault controls make it forbid, fail, expire, hang or drop
/// requests on demand.
///
/// Dropping the handle stops the server and drops its connections.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use informer::testing::TestServer;
/// use k8s_openapi::api::core::v1::ConfigMap;
/// use kube::api::{Api, ListParams};
///
/// let server = TestServer::start().await?;
/// server.create(serde_json::json!({
///     "apiVersion": "v1",
///     "kind": "ConfigMap",
///     "metadata": {"name": "settings", "namespace": "default"},
///     "data": {"mode": "fast"},
/// }))?;
/// let config_maps: Api<ConfigMap> = Api::namespaced(server.client()?, "default");
/// let list = config_maps.list(&ListParams::default()).await?;
/// assert_eq!(list.items.len(), 1);
/// # Ok(())
/// # }
/// ```
pub struct TestServer {
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with the default configuration on `127.0.0.1` and a free port.
    ///
    /// # Errors
    ///
    /// [`TestServerError::Bind`] if no loopback port can be bound.
    pub async fn start() -> Result<Self, TestServerError> {
        Self::start_with(TestServerConfig::default()).await
    }

    /// Starts a server with `config` on `127.0.0.1` and a free port.
    ///
    /// # Errors
    ///
    /// [`TestServerError::Bind`] if no loopback port can be bound.
    pub async fn start_with(config: TestServerConfig) -> Result<Self, TestServerError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(TestServerError::Bind)?;
        let address = listener.local_addr().map_err(TestServerError::Bind)?;
        let cluster = Cluster::new(
            config.history_capacity,
            config.require_namespaces,
            config.crd_initialization_delay,
        );
        let faults = Faults::new(config.streaming_lists, config.expired_watch_form);
        let uids = (strategy::new_uid(), strategy::new_uid());
        let shared = Arc::new(Shared::new(cluster, faults, config, address, uids));
        shared.token_for_user(ADMIN_USER);

        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        info!(address = %address, "Kubernetes API test server started");
        Ok(Self {
            shared,
            accept_task,
        })
    }

    /// Returns the server's URL: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.address)
    }

    /// Returns the address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// Builds a kube client configuration for this server, authenticated as [`ADMIN_USER`].
    ///
    /// Its retry layer is kube's default: `429`, `503` and `504` responses are retried, which
    /// hides injected failures with those codes from the caller.
    pub fn kube_config(&self) -> kube::Config {
        self.kube_config_for(ADMIN_USER)
    }

    /// Builds a kube client configuration authenticated as `user`.
    pub fn kube_config_for(&self, user: &str) -> kube::Config {
        let token = self.shared.token_for_user(user);
        let mut config = kube::Config::new(
            self.url()
                .parse()
                .expect("an http URL of a socket address parses"),
        );
        config.auth_info = serde_json::from_value(json!({ "token": token }))
            .expect("a token-only AuthInfo deserializes");
        config
    }

    /// Builds a kube client for this server, authenticated as [`ADMIN_USER`].
    ///
    /// # Errors
    ///
    /// [`TestServerError::Client`] if kube cannot build the client.
    pub fn client(&self) -> Result<kube::Client, TestServerError> {
        self.client_for(ADMIN_USER)
    }

    /// Builds a kube client authenticated as `user`.
    ///
    /// # Errors
    ///
    /// [`TestServerError::Client`] if kube cannot build the client.
    pub fn client_for(&self, user: &str) -> Result<kube::Client, TestServerError> {
        kube::Client::try_from(self.kube_config_for(user)).map_err(|source| {
            TestServerError::Client {
                url: self.url(),
                source,
            }
        })
    }

    /// Returns the bearer token that authenticates `user`, created on first use.
    pub fn token_for(&self, user: &str) -> String {
        self.shared.token_for_user(user)
    }

    /// Writes a kubeconfig file for [`ADMIN_USER`] into `dir` and returns its path. The file
    /// is JSON, which kubeconfig readers accept as YAML.
    ///
    /// # Errors
    ///
    /// [`TestServerError::Kubeconfig`] if the file cannot be written.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf, TestServerError> {
        let path = dir.join("kubeconfig");
        let token = self.shared.token_for_user(ADMIN_USER);
        let document = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "informer-test", "cluster": {"server": self.url()}}],
            "users": [{"name": ADMIN_USER, "user": {"token": token}}],
            "contexts": [{"name": "informer-test", "context": {"cluster": "informer-test", "user": ADMIN_USER, "namespace": "default"}}],
            "current-context": "informer-test",
        });
        let text = serde_json::to_string_pretty(&document).expect("a kubeconfig serializes");
        std::fs::write(&path, text).map_err(|source| TestServerError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Returns the store-wide revision of the last write.
    pub fn revision(&self) -> i64 {
        self.shared.read(|cluster| cluster.store.revision())
    }

    /// Compacts the store at `revision`: lists at older revisions and continue tokens from
    /// before it get `410 Expired`, and so do watches from before it. Until a compaction the
    /// store keeps every version of every object in memory.
    pub fn compact(&self, revision: i64) {
        self.shared.write(|cluster| cluster.store.compact(revision));
        info!(revision, "test server compacted");
    }

    /// Serves another resource, written like a built-in type.
    pub fn register(&self, def: ResourceDef) {
        info!(group = %def.group, version = %def.version, resource = %def.plural, "registering resource");
        self.shared.write(|cluster| {
            cluster.register(def);
        });
    }

    fn resource_for(&self, api_version: &str, kind: &str) -> Result<Arc<ResourceDef>, StatusError> {
        self.shared
            .read(|cluster| cluster.registry.by_kind(api_version, kind))
            .ok_or_else(|| {
                StatusError::for_code(
                    404,
                    &format!(
                        "the server does not serve apiVersion {api_version:?} kind {kind:?}; register it or create its CRD first"
                    ),
                )
            })
    }

    /// Creates an object from its JSON (with `apiVersion`, `kind` and `metadata`), bypassing
    /// HTTP, and returns it as stored. Watches see it like any other write.
    ///
    /// # Errors
    ///
    /// The [`StatusError`] the apiserver would return, such as `409 AlreadyExists`.
    pub fn create(&self, object: Value) -> Result<Value, StatusError> {
        let (def, namespace) = self.target(&object)?;
        let stored = self.shared.write(|cluster| {
            cluster.create(
                &def,
                namespace.as_deref(),
                object,
                &WriteOptions::new(HELPER_MANAGER),
            )
        })?;
        Ok(def.to_api_form(&stored))
    }

    /// Creates a namespace.
    ///
    /// # Errors
    ///
    /// The [`StatusError`] the apiserver would return, such as `409 AlreadyExists`.
    pub fn create_namespace(&self, name: &str) -> Result<Value, StatusError> {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    }

    /// Replaces an object, like a PUT. A `metadata.resourceVersion` in `object` must match the
    /// stored one; without one the update is unconditional (built-in types only).
    ///
    /// # Errors
    ///
    /// The [`StatusError`] the apiserver would return, such as `409 Conflict` or `404`.
    pub fn update(&self, object: Value) -> Result<Value, StatusError> {
        self.replace(object, None)
    }

    /// Replaces the `status` of an object, like a PUT to `/status`.
    ///
    /// # Errors
    ///
    /// The [`StatusError`] the apiserver would return.
    pub fn update_status(&self, object: Value) -> Result<Value, StatusError> {
        self.replace(object, Some("status"))
    }

    fn replace(&self, object: Value, subresource: Option<&str>) -> Result<Value, StatusError> {
        let (def, namespace) = self.target(&object)?;
        let name = strategy::meta_str(&object, "name").to_owned();
        let options = WriteOptions {
            subresource,
            ..WriteOptions::new(HELPER_MANAGER)
        };
        let stored = self
            .shared
            .write(|cluster| cluster.update(&def, namespace.as_deref(), &name, object, &options))?;
        Ok(def.to_api_form(&stored))
    }

    /// Applies a JSON merge patch to an object.
    ///
    /// # Errors
    ///
    /// The [`StatusError`] the apiserver would return, such as `404 NotFound`.
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, StatusError> {
        let def = self.resource_for(api_version, kind)?;
        let (stored, _) = self.shared.write(|cluster| {
            cluster.patch(
                &def,
                namespace,
                name,
                PatchType::Merge,
                &patch,
                &WriteOptions::new(HELPER_MANAGER),
            )
        })?;
        Ok(def.to_api_form(&stored))
    }

    /// Reads an object.
    ///
    /// # Errors
    ///
    /// `404 NotFound` if it does not exist.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, StatusError> {
        let def = self.resource_for(api_version, kind)?;
        let stored = self
            .shared
            .read(|cluster| cluster.get(&def, namespace, name))?;
        Ok(def.to_api_form(&stored))
    }

    /// Deletes an object. Returns `Some(object)` when it has finalizers and now only carries
    /// `deletionTimestamp`, `None` when it is gone.
    ///
    /// # Errors
    ///
    /// `404 NotFound` if it does not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, StatusError> {
        let def = self.resource_for(api_version, kind)?;
        let outcome = self
            .shared
            .write(|cluster| cluster.delete(&def, namespace, name, &DeleteOptions::default()))?;
        Ok(match outcome {
            DeleteOutcome::Pending(object) => Some(def.to_api_form(&object)),
            DeleteOutcome::Deleted(_) => None,
        })
    }

    fn target(&self, object: &Value) -> Result<(Arc<ResourceDef>, Option<String>), StatusError> {
        let text = |field: &str| object.get(field).and_then(Value::as_str).unwrap_or("");
        let def = self.resource_for(text("apiVersion"), text("kind"))?;
        let namespace = strategy::meta_str(object, "namespace");
        let namespace = (def.namespaced && !namespace.is_empty()).then(|| namespace.to_owned());
        Ok((def, namespace))
    }

    /// Makes every request matching `verb`, `resource` and `namespace` (`None`: any) fail with
    /// `403 Forbidden`, worded as RBAC words it.
    pub fn forbid(&self, verb: Verb, resource: &str, namespace: Option<&str>) {
        let mut matcher = RequestMatch::any().verb(verb).resource(resource);
        matcher.namespace = namespace.map(str::to_owned);
        self.forbid_matching(matcher);
    }

    /// Makes every request matching `matcher` fail with `403 Forbidden`.
    pub fn forbid_matching(&self, matcher: RequestMatch) {
        info!(?matcher, "forbidding requests");
        self.shared.faults.lock().forbid(matcher);
    }

    /// Lifts every [`forbid`](Self::forbid) rule.
    pub fn allow_all(&self) {
        self.shared.faults.lock().clear_forbidden();
    }

    /// Makes the next `count` requests matching `matcher` fail with `failure`.
    pub fn fail_next(&self, count: usize, matcher: RequestMatch, failure: Failure) {
        info!(count, ?matcher, ?failure, "injecting failures");
        self.shared.faults.lock().fail_next(count, matcher, failure);
    }

    /// Makes the next watch request get HTTP 200 and a single `ERROR` event with a `410
    /// Expired` Status, whatever its resourceVersion.
    pub fn expire_next_watch(&self) {
        self.shared.faults.lock().expire_next_watches(1);
    }

    /// Makes watches half-open: open streams stop sending, and new ones send their headers
    /// and nothing else. No stream ends on its own, not even at its timeout, until
    /// [`release_watches`](Self::release_watches), [`end_all_watches`](Self::end_all_watches),
    /// [`restart`](Self::restart) or the client gives up.
    pub fn hang_watches(&self) {
        info!("watches hang");
        self.shared.set_hanging(true);
    }

    /// Ends the hang of [`hang_watches`](Self::hang_watches): streams go on where they were.
    pub fn release_watches(&self) {
        info!("watches released");
        self.shared.set_hanging(false);
    }

    /// Ends every open watch stream cleanly, as a timeout does.
    pub fn end_all_watches(&self) {
        info!("ending all watches");
        self.shared.end_watches();
    }

    /// Imitates an apiserver restart: every connection is dropped (open watches end without
    /// the final chunk) and, with [`RestartHistory::Lose`], the watch history is gone.
    pub fn restart(&self, history: RestartHistory) {
        info!(?history, "test server restarting");
        self.shared.kill_connections();
        if history == RestartHistory::Lose {
            self.shared.write(|cluster| {
                // The apiserver writes on startup (leases, endpoints), so the watch cache
                // starts past every revision a client saw before the restart.
                cluster.store.bump_revision();
                cluster.store.forget_history();
            });
        }
    }

    /// Serves or refuses streaming lists (`sendInitialEvents=true`). Refused ones get HTTP
    /// 200 and an `ERROR` event, as an apiserver on an etcd without progress notifications
    /// sends.
    pub fn set_streaming_list_supported(&self, supported: bool) {
        self.shared.faults.lock().streaming_lists = supported;
    }

    /// Chooses how a watch from a too-old resourceVersion is refused.
    pub fn set_expired_watch_form(&self, form: ExpiredWatchForm) {
        self.shared.faults.lock().expired_watch_form = form;
    }

    /// Returns every request served so far (the last 10 000).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.clear_requests();
    }

    /// Counts the open watch streams.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches()
    }

    /// Stops the server: the listener closes and every connection is dropped.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.shared.kill_connections();
        info!(address = %self.shared.address, "Kubernetes API test server stopped");
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let router = http::router(shared.clone());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(error = %error, "test server failed to accept a connection; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let router = router.clone();
        tokio::spawn(serve_connection(stream, peer, shared, router));
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    router: axum::Router,
) {
    let mut kill = shared.subscribe_kill();
    kill.borrow_and_update();
    let service = hyper::service::service_fn(move |request| {
        http::handle(shared.clone(), router.clone(), request)
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                debug!(peer = %peer, error = %error, "connection ended with an error");
            }
        }
        _ = kill.changed() => debug!(peer = %peer, "connection dropped"),
    }
}
