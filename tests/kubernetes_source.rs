//! The Kubernetes source end to end: real HTTP through kube's client to the Kubernetes-API test
//! server on loopback, with a reflector, a cache and a recording handler.
//!
//! These tests run on tokio's real clock, because the server and kube's client do real I/O.
//! Each waits on the reflector's health channel or on handler events, never on a fixed sleep,
//! and each finishes within about 20 s.
#![cfg(feature = "test-server")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use informer::cache::Store;
use informer::decode::{Decoder, Json};
use informer::metrics::Metrics;
use informer::notify::HandlerOptions;
use informer::reflector::{BackoffConfig, Health, HealthWatch, Phase, Reflector, ReflectorConfig};
use informer::source::kubernetes::{KubernetesConfig, KubernetesSource};
use informer::source::{ErrorClass, ListRequest, Page, Revision, Source, SourceError, WatchStream};
use informer::testing::{
    ExpiredWatchForm, Failure, RequestMatch, RequestRecord, RestartHistory, TestServer,
    TestServerConfig, Verb,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use serde_json::{Value, json};
use support::recording::Recorder;
use tokio::time::Instant;

/// How long a test waits for something that should happen at once.
const PROMPT: Duration = Duration::from_secs(5);

/// A running reflector over one Kubernetes source, with the handles a test needs.
struct Informer<T> {
    store: Store<T>,
    health: HealthWatch,
    metrics: Metrics,
    name: Arc<str>,
    recorder: Recorder,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Informer<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T> Informer<T> {
    /// Waits until `predicate` holds for the health, or panics after `limit`.
    async fn wait_health(
        &self,
        limit: Duration,
        condition: &str,
        predicate: impl FnMut(&Health) -> bool,
    ) -> Health {
        match tokio::time::timeout(limit, self.health.wait_for(predicate)).await {
            Ok(Some(health)) => health,
            Ok(None) => panic!("{condition}: the reflector stopped"),
            Err(_) => panic!(
                "{condition}: not reached within {limit:?}; health: {:?}",
                self.health.get()
            ),
        }
    }

    async fn wait_ready(&self) -> Health {
        self.wait_health(PROMPT, "ready", Health::ready).await
    }

    /// Waits until the handler saw an `added` event for `key`.
    async fn wait_added(&self, key: &str, limit: Duration) {
        self.recorder
            .wait_until(limit, |seen| {
                seen.iter()
                    .any(|event| event.key == key && event.kind == "added")
            })
            .await;
    }

    fn errors(&self, class: ErrorClass) -> u64 {
        self.metrics.source_errors(&self.name, class)
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Returns a reflector configuration with a backoff of 200 ms doubling to 2 s. Tests of
/// retries use it so that the retries fit their time budget. The default steps add up to
/// 24.8 s over five failures.
fn fast_backoff() -> ReflectorConfig {
    ReflectorConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            ..BackoffConfig::default()
        },
        ..ReflectorConfig::default()
    }
}

fn start_source<S, D>(source: S, decoder: D, config: ReflectorConfig) -> Informer<D::Output>
where
    S: Source<Value = Bytes>,
    D: Decoder<Bytes>,
{
    let metrics = Metrics::default();
    let name = source.name().clone();
    let reflector = Reflector::with_metrics(source, decoder, metrics.clone()).config(config);
    let store = reflector.store();
    let recorder = Recorder::default();
    store.register(HandlerOptions::new("recorder"), recorder.handler());
    let health = reflector.health();
    let task = tokio::spawn(reflector.run());
    Informer {
        store,
        health,
        metrics,
        name,
        recorder,
        task,
    }
}

fn start_config_maps(
    server: &TestServer,
    config: KubernetesConfig,
    reflector: ReflectorConfig,
) -> Informer<ConfigMap> {
    let source = KubernetesSource::new(server.client().expect("kube client"), config);
    start_source(source, Json::<ConfigMap>::new(), reflector)
}

/// Config maps in namespace `a`.
fn in_a() -> KubernetesConfig {
    KubernetesConfig::new::<ConfigMap>().namespace("a")
}

async fn server_with_namespaces(config: TestServerConfig, namespaces: &[&str]) -> TestServer {
    init_tracing();
    let server = TestServer::start_with(config)
        .await
        .expect("start the test server");
    for namespace in namespaces {
        server
            .create_namespace(namespace)
            .expect("create namespace");
    }
    server
}

fn config_map(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"payload": format!("value of {name}")},
    })
}

fn create_config_map(server: &TestServer, namespace: &str, name: &str) -> Value {
    server
        .create(config_map(namespace, name, json!({})))
        .expect("create config map")
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"].as_str().expect("uid").to_owned()
}

fn cached_uid(store: &Store<ConfigMap>, key: &str) -> Option<String> {
    store
        .get(key)
        .and_then(|cached| cached.value.metadata.uid.clone())
}

/// Returns the value of query parameter `name`, percent-decoded.
fn query(record: &RequestRecord, name: &str) -> Option<String> {
    let (_, query) = record.path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Returns the requests for `resource` with `verb`, in order.
fn requests(server: &TestServer, resource: &str, verb: Verb) -> Vec<RequestRecord> {
    server
        .requests()
        .into_iter()
        .filter(|record| record.resource.as_deref() == Some(resource) && record.verb == Some(verb))
        .collect()
}

/// A source wrapper that runs a hook before every list page.
struct HookedSource<S> {
    inner: S,
    before_page: Box<dyn Fn(&ListRequest) + Send + Sync>,
}

impl<S: Source> Source for HookedSource<S> {
    type Value = S::Value;

    fn name(&self) -> &Arc<str> {
        self.inner.name()
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<S::Value>, SourceError> {
        (self.before_page)(&request);
        self.inner.list_page(request).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<S::Value>, SourceError> {
        self.inner.watch(from).await
    }
}

/// Requirement: a 410 `ERROR` event inside an HTTP 200 watch stream leads to a relist, and the
/// watch goes on afterwards.
#[tokio::test]
async fn expired_event_relists() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    create_config_map(&server, "a", "before");
    server.expire_next_watch();

    let started = Instant::now();
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    informer
        .wait_health(PROMPT, "relisted", |health| health.ready())
        .await;
    // One backoff step of 800 ms, less up to 20 % jitter, separates the 410 from the relist.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(640), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(informer.metrics.relists(&informer.name), 1);
    assert_eq!(informer.errors(ErrorClass::Expired), 1);

    let watches = requests(&server, "configmaps", Verb::Watch);
    assert_eq!(watches[0].status, 200, "the 410 came inside a 200 stream");
    let lists = requests(&server, "configmaps", Verb::List);
    assert_eq!(lists.len(), 2, "one list, then the relist: {lists:?}");

    create_config_map(&server, "a", "after");
    informer.wait_added("a/after", PROMPT).await;
    assert!(informer.store.get("a/before").is_some());
    assert!(informer.store.get("a/after").is_some());
}

/// Requirement: a list longer than one page is read in pages of 500 at one revision, and the
/// reflector is ready only after the last page.
#[tokio::test]
async fn paged_list_ready_after_last_page() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    for index in 0..1200 {
        create_config_map(&server, "a", &format!("cm-{index:04}"));
    }

    // The hook records, at every page, whether the reflector claimed to be synced and how much
    // it had cached by then.
    type Probe = (HealthWatch, Store<ConfigMap>);
    let probe: Arc<std::sync::OnceLock<Probe>> = Arc::default();
    let observed: Arc<parking_lot::Mutex<Vec<(bool, usize)>>> = Arc::default();
    let hook_probe = probe.clone();
    let hook_observed = observed.clone();
    let source = HookedSource {
        inner: KubernetesSource::new(server.client().expect("kube client"), in_a()),
        before_page: Box::new(move |_request| {
            if let Some((health, store)) = hook_probe.get() {
                hook_observed
                    .lock()
                    .push((health.get().synced, store.len()));
            }
        }),
    };
    let informer = start_source(source, Json::<ConfigMap>::new(), ReflectorConfig::default());
    probe
        .set((informer.health.clone(), informer.store.clone()))
        .expect("set once");

    informer.wait_ready().await;
    assert_eq!(informer.store.len(), 1200);
    informer
        .recorder
        .wait_until(PROMPT, |seen| seen.len() == 1200)
        .await;

    let lists = requests(&server, "configmaps", Verb::List);
    assert_eq!(lists.len(), 3, "{lists:?}");
    for list in &lists {
        assert_eq!(query(list, "limit").as_deref(), Some("500"));
    }
    assert_eq!(query(&lists[0], "continue"), None);
    assert!(query(&lists[1], "continue").is_some());
    assert!(query(&lists[2], "continue").is_some());

    // Every page is requested before anything is applied or marked synced. The test runtime
    // has one thread, so the probe is set before the reflector's task first runs.
    let observed = observed.lock().clone();
    assert_eq!(observed, [(false, 0), (false, 0), (false, 0)]);
}

/// Requirement: a name deleted and created again while the watch was down reaches handlers as
/// a delete, then an add, when the watch resumes from its last revision.
#[tokio::test]
async fn recreate_during_disconnect_resumed() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    let first = create_config_map(&server, "a", "x");
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    informer.wait_ready().await;
    assert_eq!(cached_uid(&informer.store, "a/x"), Some(uid(&first)));
    let before = server.revision();

    // Every write below happens after the open watch ended and before the reflector can
    // watch again, which takes at least one backoff step.
    server.end_all_watches();
    server
        .delete("v1", "ConfigMap", Some("a"), "x")
        .expect("delete");
    let second = create_config_map(&server, "a", "x");
    assert_ne!(uid(&first), uid(&second));

    informer
        .recorder
        .wait_until(PROMPT, |seen| {
            seen.iter().filter(|event| event.key == "a/x").count() >= 3
        })
        .await;
    let kinds: Vec<&str> = informer
        .recorder
        .for_key("a/x")
        .iter()
        .map(|event| event.kind)
        .collect();
    assert_eq!(kinds, ["added", "deleted", "added"]);
    assert_eq!(cached_uid(&informer.store, "a/x"), Some(uid(&second)));

    assert_eq!(
        informer.metrics.relists(&informer.name),
        0,
        "the watch resumed"
    );
    let watches = requests(&server, "configmaps", Verb::Watch);
    let resumed = watches.last().expect("a second watch");
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert_eq!(query(resumed, "resourceVersion"), Some(before.to_string()));
}

/// Requirement: the same delete and recreate, when the history was compacted meanwhile, is
/// found by the relist and reaches handlers as a delete, then an add.
#[tokio::test]
async fn recreate_after_compaction_relists() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    let first = create_config_map(&server, "a", "x");
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    informer.wait_ready().await;

    server.end_all_watches();
    server
        .delete("v1", "ConfigMap", Some("a"), "x")
        .expect("delete");
    let second = create_config_map(&server, "a", "x");
    server.compact(server.revision());

    informer
        .recorder
        .wait_until(PROMPT, |seen| {
            seen.iter().filter(|event| event.key == "a/x").count() >= 3
        })
        .await;
    let kinds: Vec<&str> = informer
        .recorder
        .for_key("a/x")
        .iter()
        .map(|event| event.kind)
        .collect();
    assert_eq!(kinds, ["added", "deleted-unknown", "added"]);
    assert_eq!(cached_uid(&informer.store, "a/x"), Some(uid(&second)));
    assert_ne!(uid(&first), uid(&second));
    assert_eq!(informer.metrics.relists(&informer.name), 1);
    assert_eq!(informer.errors(ErrorClass::Expired), 1);
}

/// Requirement: five connection failures on one source leave the others delivering, and the
/// failing one recovers within the sum of its backoff steps.
///
/// The reflectors use [`fast_backoff`]: five steps of 200 ms doubling to 2 s add up to 5 s,
/// where the default steps (800 ms doubling) would add up to 24.8 s.
#[tokio::test]
async fn failing_source_isolated() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    server.fail_next(
        5,
        RequestMatch::any().resource("secrets"),
        Failure::CloseConnection,
    );

    let client = server.client().expect("kube client");
    let started = Instant::now();
    let secrets = start_source(
        KubernetesSource::new(
            client.clone(),
            KubernetesConfig::new::<Secret>().namespace("a"),
        ),
        Json::<Secret>::new(),
        fast_backoff(),
    );
    let config_maps = start_source(
        KubernetesSource::new(client.clone(), in_a()),
        Json::<ConfigMap>::new(),
        fast_backoff(),
    );
    let leases = start_source(
        KubernetesSource::new(client, KubernetesConfig::new::<Lease>().namespace("a")),
        Json::<Lease>::new(),
        fast_backoff(),
    );

    config_maps.wait_ready().await;
    leases.wait_ready().await;
    create_config_map(&server, "a", "meanwhile");
    server
        .create(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "meanwhile", "namespace": "a"},
            "spec": {"holderIdentity": "test"},
        }))
        .expect("create lease");
    config_maps
        .wait_added("a/meanwhile", Duration::from_secs(1))
        .await;
    leases
        .wait_added("a/meanwhile", Duration::from_secs(1))
        .await;
    // The secrets source is still failing: its fifth failure comes at least 2.4 s after the
    // start (200 + 400 + 800 + 1600 ms, less up to 20 % jitter).
    assert!(!secrets.health.get().synced, "{:?}", secrets.health.get());
    assert!(secrets.health.get().consecutive_failures >= 1);

    let steps = Duration::from_millis(200 + 400 + 800 + 1600 + 2000);
    let remaining =
        (started + steps + Duration::from_secs(1)).saturating_duration_since(Instant::now());
    secrets
        .wait_health(
            remaining,
            "secrets ready within its backoff steps",
            Health::ready,
        )
        .await;
    assert_eq!(secrets.errors(ErrorClass::Transient), 5);
    let closed = requests(&server, "secrets", Verb::List)
        .iter()
        .filter(|record| record.status == 0)
        .count();
    assert_eq!(closed, 5);
    assert_eq!(config_maps.errors(ErrorClass::Transient), 0);
    assert_eq!(leases.errors(ErrorClass::Transient), 0);
}

/// Requirement: a watch forbidden by RBAC keeps the reflector not ready, with an error naming
/// the resource, the verb and the namespace, and it recovers once the permission is granted.
///
/// A permanent error is retried at the backoff cap, so the test uses [`fast_backoff`]'s 2 s
/// cap instead of the default 30 s.
#[tokio::test]
async fn forbidden_watch_not_ready() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    create_config_map(&server, "a", "before");
    server.forbid(Verb::Watch, "configmaps", Some("a"));

    let informer = start_config_maps(&server, in_a(), fast_backoff());
    let health = informer
        .wait_health(PROMPT, "permanent error", |health| {
            health
                .last_error
                .as_ref()
                .is_some_and(|error| error.class == ErrorClass::Permanent)
        })
        .await;
    assert!(!health.ready());
    assert!(health.synced, "the list was allowed");
    let message = &health.last_error.expect("error").message;
    assert!(message.contains("watch configmaps"), "{message}");
    assert!(message.contains("namespace \"a\""), "{message}");
    assert!(message.contains("403"), "{message}");
    assert!(!informer.health.ready());

    // It keeps retrying at the backoff cap and stays not ready meanwhile.
    let health = informer
        .wait_health(PROMPT, "second attempt", |health| {
            health.consecutive_failures >= 2
        })
        .await;
    assert!(!health.ready());
    assert_eq!(informer.errors(ErrorClass::Permanent), 2);

    create_config_map(&server, "a", "granted");
    server.allow_all();
    informer
        .wait_health(
            Duration::from_secs(4),
            "ready after the grant",
            Health::ready,
        )
        .await;
    informer.wait_added("a/granted", PROMPT).await;
    assert!(informer.health.get().last_error.is_none());
}

/// Requirement: a forbidden list names the list verb, and the reflector never becomes synced
/// until it is allowed.
#[tokio::test]
async fn forbidden_list_not_synced() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    create_config_map(&server, "a", "before");
    server.forbid(Verb::List, "configmaps", Some("a"));

    let informer = start_config_maps(&server, in_a(), fast_backoff());
    let health = informer
        .wait_health(PROMPT, "permanent error", |health| {
            health.last_error.is_some()
        })
        .await;
    assert!(!health.synced);
    let error = health.last_error.expect("error");
    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(
        error.message.contains("list configmaps in namespace \"a\""),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("Grant the verb \"list\""),
        "{}",
        error.message
    );

    server.allow_all();
    informer
        .wait_health(
            Duration::from_secs(4),
            "ready after the grant",
            Health::ready,
        )
        .await;
    assert!(informer.store.get("a/before").is_some());
}

/// Requirement: an HTTP 410 when the watch opens leads to a relist.
#[tokio::test]
async fn expired_status_relists() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    server.set_expired_watch_form(ExpiredWatchForm::HttpStatus);
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    informer.wait_ready().await;

    server.end_all_watches();
    create_config_map(&server, "a", "while-down");
    server.compact(server.revision());

    informer.wait_added("a/while-down", PROMPT).await;
    informer.wait_ready().await;
    assert_eq!(informer.metrics.relists(&informer.name), 1);
    assert_eq!(informer.errors(ErrorClass::Expired), 1);
    // The 410 leads straight to the relist, with no other watch in between.
    let sequence: Vec<(Verb, u16)> = server
        .requests()
        .iter()
        .filter(|record| record.resource.as_deref() == Some("configmaps"))
        .filter_map(|record| Some((record.verb?, record.status)))
        .collect();
    assert_eq!(
        sequence,
        [
            (Verb::List, 200),
            (Verb::Watch, 200),
            (Verb::Watch, 410),
            (Verb::List, 200),
            (Verb::Watch, 200),
        ]
    );
}

/// Requirement: a continue token that expired between two pages restarts the list from the
/// first page.
#[tokio::test]
async fn expired_continue_restarts_list() {
    let server = Arc::new(server_with_namespaces(TestServerConfig::default(), &["a", "b"]).await);
    for index in 0..12 {
        create_config_map(&server, "a", &format!("cm-{index:02}"));
    }

    // Before the first continued page, write elsewhere and compact past the list's revision.
    let compacted = Arc::new(AtomicBool::new(false));
    let hook_server = server.clone();
    let hook_compacted = compacted.clone();
    let source = HookedSource {
        inner: KubernetesSource::new(server.client().expect("kube client"), in_a().page_size(5)),
        before_page: Box::new(move |request| {
            if request.continue_from.is_some() && !hook_compacted.swap(true, Ordering::SeqCst) {
                create_config_map(&hook_server, "b", "elsewhere");
                hook_server.compact(hook_server.revision());
            }
        }),
    };
    let informer = start_source(source, Json::<ConfigMap>::new(), ReflectorConfig::default());
    informer.wait_ready().await;
    assert_eq!(informer.store.len(), 12);
    assert_eq!(informer.errors(ErrorClass::Expired), 1);

    let lists = requests(&server, "configmaps", Verb::List);
    let statuses: Vec<(bool, u16)> = lists
        .iter()
        .map(|record| (query(record, "continue").is_some(), record.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (false, 200),
            (true, 410),
            (false, 200),
            (true, 200),
            (true, 200)
        ]
    );
}

/// Requirement: bookmarks move the reflector's revision forward while nothing it watches
/// changes.
#[tokio::test]
async fn bookmarks_advance_revision() {
    let config = TestServerConfig {
        bookmark_interval: Duration::from_millis(300),
        ..TestServerConfig::default()
    };
    let server = server_with_namespaces(config, &["a", "b"]).await;
    let object = create_config_map(&server, "a", "x");
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    let listed = informer.wait_ready().await.revision;

    // Writes in another namespace move the store's revision but send this watch nothing.
    create_config_map(&server, "b", "elsewhere");
    let target = server.revision();
    assert!(target > listed);
    let health = informer
        .wait_health(PROMPT, "revision from a bookmark", |health| {
            health.revision >= target
        })
        .await;
    assert_eq!(health.revision, target);
    assert_eq!(informer.store.revision(), target);
    assert_eq!(informer.store.len(), 1);
    let cached = informer.store.get("a/x").expect("cached");
    assert_eq!(
        cached.revision.to_string(),
        object["metadata"]["resourceVersion"].as_str().expect("rv")
    );
    assert_eq!(informer.recorder.seen().len(), 1, "no object changed");
}

/// Requirement: a watch whose connection goes half-open (no data, no end) is detected by the
/// idle deadline and reopened, and the events flow again once the connection works.
#[tokio::test]
async fn half_open_watch_reopened() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    let config = in_a()
        .watch_timeout(Duration::from_secs(1)..=Duration::from_secs(1))
        .idle_grace(Duration::from_secs(1));
    let informer = start_config_maps(&server, config, fast_backoff());
    informer.wait_ready().await;

    server.hang_watches();
    create_config_map(&server, "a", "during-hang");
    let health = informer
        .wait_health(PROMPT, "half-open detected", |health| {
            health
                .last_error
                .as_ref()
                .is_some_and(|error| error.message.contains("half-open"))
        })
        .await;
    assert_eq!(
        health.last_error.expect("error").class,
        ErrorClass::Transient
    );
    assert!(informer.errors(ErrorClass::Transient) >= 1);
    assert!(informer.store.get("a/during-hang").is_none());

    server.release_watches();
    informer.wait_added("a/during-hang", PROMPT).await;
}

/// Requirement: a watch that the server ends at its timeout is opened again from the last
/// applied revision, at once when it lived longer than the backoff's reset time, and the end
/// is not an error.
///
/// The watch timeout is 2 s and the reset time 1 s, where the defaults are 5 to 10 minutes
/// and 60 s.
#[tokio::test]
async fn watch_timeout_rewatches() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    let config = in_a().watch_timeout(Duration::from_secs(2)..=Duration::from_secs(2));
    let mut reflector = fast_backoff();
    reflector.backoff.reset_after = Duration::from_secs(1);
    let informer = start_config_maps(&server, config, reflector);
    informer.wait_ready().await;
    let object = create_config_map(&server, "a", "x");
    informer.wait_added("a/x", PROMPT).await;

    // Opening a watch updates the health, and the server logs a request before it responds,
    // so this predicate sees the second watch as soon as it is open. A backoff between the
    // two watches would show as the BackingOff phase for at least 160 ms.
    let mut phases = Vec::new();
    informer
        .wait_health(PROMPT, "second watch", |health| {
            phases.push(health.phase);
            requests(&server, "configmaps", Verb::Watch).len() >= 2
        })
        .await;
    assert!(!phases.contains(&Phase::BackingOff), "{phases:?}");

    let watches = requests(&server, "configmaps", Verb::Watch);
    assert_eq!(query(&watches[0], "timeoutSeconds").as_deref(), Some("2"));
    assert_eq!(
        query(&watches[0], "allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(
        query(&watches[1], "resourceVersion").as_deref(),
        object["metadata"]["resourceVersion"].as_str()
    );
    assert_eq!(informer.errors(ErrorClass::Transient), 0);
    assert_eq!(informer.metrics.relists(&informer.name), 0);
    assert_eq!(informer.metrics.watch_restarts(&informer.name), 1);
}

/// Requirement: the default watch requests a server timeout between 5 and 10 minutes.
#[tokio::test]
async fn watch_timeout_default_range() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    informer.wait_ready().await;
    let watches = requests(&server, "configmaps", Verb::Watch);
    let seconds: u64 = query(&watches[0], "timeoutSeconds")
        .expect("timeoutSeconds")
        .parse()
        .expect("integer");
    assert!((300..=600).contains(&seconds), "{seconds}");
}

/// Requirement: a streaming list fills the cache from `ADDED` events up to the
/// initial-events-end bookmark, and the same stream goes on as the watch.
#[tokio::test]
async fn streaming_list_success() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    for name in ["one", "two", "three"] {
        create_config_map(&server, "a", name);
    }
    let informer = start_config_maps(&server, in_a().streaming_list(), ReflectorConfig::default());
    informer.wait_ready().await;
    assert_eq!(informer.store.len(), 3);

    create_config_map(&server, "a", "late");
    informer.wait_added("a/late", PROMPT).await;

    assert!(requests(&server, "configmaps", Verb::List).is_empty());
    let watches = requests(&server, "configmaps", Verb::Watch);
    assert_eq!(
        watches.len(),
        1,
        "the list's stream is the watch: {watches:?}"
    );
    assert_eq!(
        query(&watches[0], "sendInitialEvents").as_deref(),
        Some("true")
    );
    assert_eq!(
        query(&watches[0], "resourceVersionMatch").as_deref(),
        Some("NotOlderThan")
    );
    assert_eq!(
        query(&watches[0], "allowWatchBookmarks").as_deref(),
        Some("true")
    );
}

/// Requirement: a server that refuses streaming lists gets a paged list instead.
#[tokio::test]
async fn streaming_list_fallback() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    server.set_streaming_list_supported(false);
    for name in ["one", "two"] {
        create_config_map(&server, "a", name);
    }
    let informer = start_config_maps(&server, in_a().streaming_list(), ReflectorConfig::default());
    informer.wait_ready().await;
    assert_eq!(informer.store.len(), 2);
    assert_eq!(informer.errors(ErrorClass::Transient), 0);

    let watches = requests(&server, "configmaps", Verb::Watch);
    assert_eq!(watches.len(), 2, "{watches:?}");
    assert_eq!(
        query(&watches[0], "sendInitialEvents").as_deref(),
        Some("true")
    );
    assert_eq!(query(&watches[1], "sendInitialEvents"), None);
    let lists = requests(&server, "configmaps", Verb::List);
    assert_eq!(lists.len(), 1);

    create_config_map(&server, "a", "late");
    informer.wait_added("a/late", PROMPT).await;
}

/// Requirement: a label selector limits the list and the watch, and an object that stops or
/// starts matching leaves or enters the cache.
#[tokio::test]
async fn label_selector_filters() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    server
        .create(config_map("a", "web", json!({"app": "web"})))
        .expect("create");
    server
        .create(config_map("a", "db", json!({"app": "db"})))
        .expect("create");
    let informer = start_config_maps(
        &server,
        in_a().labels("app=web"),
        ReflectorConfig::default(),
    );
    informer.wait_ready().await;
    assert_eq!(informer.store.keys(), [Arc::from("a/web")]);

    server
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("a"),
            "web",
            json!({"metadata": {"labels": {"app": "db"}}}),
        )
        .expect("patch");
    server
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("a"),
            "db",
            json!({"metadata": {"labels": {"app": "web"}}}),
        )
        .expect("patch");
    informer.wait_added("a/db", PROMPT).await;
    informer
        .recorder
        .wait_until(PROMPT, |seen| {
            seen.iter()
                .any(|event| event.key == "a/web" && event.kind == "deleted")
        })
        .await;
    assert_eq!(informer.store.keys(), [Arc::from("a/db")]);

    for record in requests(&server, "configmaps", Verb::List)
        .iter()
        .chain(&requests(&server, "configmaps", Verb::Watch))
    {
        assert_eq!(query(record, "labelSelector").as_deref(), Some("app=web"));
    }
}

/// Requirement: a field selector limits the list and the watch.
#[tokio::test]
async fn field_selector_filters() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    create_config_map(&server, "a", "one");
    create_config_map(&server, "a", "two");
    let informer = start_config_maps(
        &server,
        in_a().fields("metadata.name=one"),
        ReflectorConfig::default(),
    );
    informer.wait_ready().await;
    assert_eq!(informer.store.keys(), [Arc::from("a/one")]);

    server
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("a"),
            "two",
            json!({"data": {"changed": "yes"}}),
        )
        .expect("patch");
    server
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("a"),
            "one",
            json!({"data": {"changed": "yes"}}),
        )
        .expect("patch");
    informer
        .recorder
        .wait_until(PROMPT, |seen| {
            seen.iter().any(|event| event.kind == "updated")
        })
        .await;
    let seen = informer.recorder.seen();
    assert!(seen.iter().all(|event| event.key == "a/one"), "{seen:?}");
    assert_eq!(informer.store.keys(), [Arc::from("a/one")]);
}

/// Requirement: a metadata-only source stores `PartialObjectMetadata` without the objects'
/// data, from the list and from the watch.
#[tokio::test]
async fn metadata_only_values() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    create_config_map(&server, "a", "listed");
    let client = server.client().expect("kube client");
    let raw = start_source(
        KubernetesSource::new(client.clone(), in_a().metadata_only()),
        Json::<Value>::new(),
        ReflectorConfig::default(),
    );
    let typed = start_source(
        KubernetesSource::new(client, in_a().metadata_only()),
        Json::<PartialObjectMeta<ConfigMap>>::new(),
        ReflectorConfig::default(),
    );
    raw.wait_ready().await;
    typed.wait_ready().await;
    create_config_map(&server, "a", "watched");
    raw.wait_added("a/watched", PROMPT).await;
    typed.wait_added("a/watched", PROMPT).await;

    for key in ["a/listed", "a/watched"] {
        let value = raw.store.get(key).expect("cached").value;
        assert_eq!(value["kind"], "PartialObjectMetadata", "{key}: {value}");
        assert!(value.get("data").is_none(), "{key}: {value}");
        assert!(value["metadata"]["uid"].is_string(), "{key}: {value}");
        let meta = typed.store.get(key).expect("cached").value;
        assert_eq!(
            meta.metadata.name.as_deref(),
            key.strip_prefix("a/"),
            "{key}"
        );
    }
}

/// Requirement: after an apiserver restart that loses the watch history, the reflector
/// relists and goes on.
#[tokio::test]
async fn server_restart_recovers() {
    let server = server_with_namespaces(TestServerConfig::default(), &["a"]).await;
    create_config_map(&server, "a", "before");
    let informer = start_config_maps(&server, in_a(), ReflectorConfig::default());
    informer.wait_ready().await;

    server.restart(RestartHistory::Lose);
    create_config_map(&server, "a", "after");
    informer
        .wait_added("a/after", Duration::from_secs(10))
        .await;
    informer.wait_ready().await;
    assert_eq!(informer.metrics.relists(&informer.name), 1);
    assert!(informer.store.get("a/before").is_some());
}
