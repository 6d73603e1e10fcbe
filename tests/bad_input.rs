//! Bad input through the whole pipeline over a real etcd server: oversized values, values
//! that fail to decode, empty and unbounded prefixes, and keys that are not UTF-8.
//!
//! Each case ends in a typed error or in a skip that is logged and counted. In every case the
//! pipeline keeps going for every other key. The other keys are cached, and a controller with
//! a recording reconciler reconciles them, including changes made after the bad input.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Txn, TxnOp};
use informer::cache::Store;
use informer::controller::{Action, Controller, Request, ShutdownReport};
use informer::decode::{DecodeErrorKind, Decoder, Json, Text};
use informer::metrics::Metrics;
use informer::notify::{HandlerOptions, enqueue_keys};
use informer::reflector::{HealthWatch, Reflector};
use informer::source::etcd::{EtcdConfig, EtcdSource};
use informer::source::{ErrorClass, Source};
use informer::workqueue::WorkQueue;
use parking_lot::Mutex;
use serde_json::json;
use support::etcd::EtcdServer;
use support::logs::LogCapture;
use support::recording::Recorder;
use tokio::sync::{Notify, oneshot};

/// How long a test waits for a key to be cached or reconciled.
const WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
struct Never;

/// The latest reconcile of each key: its value, or `None` when the reconciler saw it deleted.
struct Reconciled<T> {
    latest: Mutex<HashMap<String, Option<Arc<T>>>>,
    changed: Notify,
}

impl<T> Reconciled<T> {
    fn record(&self, request: &Request<T>) {
        let value = request.live().map(|cached| cached.value.clone());
        self.latest.lock().insert(request.key.to_string(), value);
        self.changed.notify_waiters();
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.latest.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Waits until the latest reconcile of `key` satisfies `condition`.
    async fn wait(&self, key: &str, condition: impl Fn(Option<&T>) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            let met = match self.latest.lock().get(key) {
                Some(latest) => condition(latest.as_deref()),
                None => false,
            };
            if met {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("{key} not reconciled as expected within {WAIT:?}");
            }
        }
    }

    /// Waits until `key` was reconciled with a value equal to `expected`.
    async fn wait_value(&self, key: &str, expected: &T)
    where
        T: PartialEq,
    {
        self.wait(key, |value| value == Some(expected)).await;
    }
}

/// A reflector, its store, a work queue fed by the store and a controller that records.
struct Pipeline<T> {
    store: Store<T>,
    health: HealthWatch,
    metrics: Metrics,
    name: Arc<str>,
    events: Recorder,
    reconciled: Arc<Reconciled<T>>,
    stop: Option<oneshot::Sender<()>>,
    controller: Option<tokio::task::JoinHandle<ShutdownReport>>,
    reflector: tokio::task::JoinHandle<()>,
}

impl<T> Pipeline<T> {
    async fn wait_ready(&self) {
        let ready = tokio::time::timeout(WAIT, self.health.wait_ready()).await;
        assert!(
            ready.is_ok(),
            "{} not ready within {WAIT:?}; health: {:?}",
            self.name,
            self.health.get()
        );
    }

    /// Stops the controller and checks that it stopped cleanly.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(controller) = self.controller.take() {
            let report = controller.await.expect("the controller task");
            assert_eq!(report.aborted, 0, "{report:?}");
        }
    }

    fn cached_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.store.keys().iter().map(|k| k.to_string()).collect();
        keys.sort();
        keys
    }

    fn decode_error(&self, key: &str) -> Option<DecodeErrorKind> {
        self.store
            .decode_errors()
            .into_iter()
            .find(|(invalid, _)| &**invalid == key)
            .map(|(_, invalid)| invalid.error.reason)
    }
}

impl<T> Drop for Pipeline<T> {
    fn drop(&mut self) {
        self.reflector.abort();
        if let Some(controller) = &self.controller {
            controller.abort();
        }
    }
}

async fn start<D>(mut config: EtcdConfig, decoder: D) -> Pipeline<D::Output>
where
    D: Decoder<Bytes>,
{
    config.request_timeout = Duration::from_secs(5);
    let metrics = Metrics::default();
    let source = EtcdSource::connect(config)
        .await
        .expect("a valid config creates the source")
        .with_metrics(metrics.clone());
    let name = source.name().clone();
    let reflector = Reflector::with_metrics(source, decoder, metrics.clone());
    let store = reflector.store();
    let health = reflector.health();

    let events = Recorder::default();
    store.register(HandlerOptions::new("recorder"), events.handler());
    let queue = WorkQueue::<Arc<str>>::new(format!("queue {name}"));
    store.register(HandlerOptions::new("enqueue"), enqueue_keys(queue.clone()));
    let reconciled = Arc::new(Reconciled {
        latest: Mutex::new(HashMap::new()),
        changed: Notify::new(),
    });
    let controller = Controller::new(
        "recording",
        queue,
        store.clone(),
        |request: Request<D::Output>, reconciled: Arc<Reconciled<D::Output>>| async move {
            reconciled.record(&request);
            Ok::<_, Never>(Action::Done)
        },
        reconciled.clone(),
    )
    .workers(2);
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(controller.run_until(async move {
        let _ = stopped.await;
    }));
    let reflector = tokio::spawn(reflector.run());

    Pipeline {
        store,
        health,
        metrics,
        name,
        events,
        reconciled,
        stop: Some(stop),
        controller: Some(controller),
        reflector,
    }
}

async fn put(client: &mut Client, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
    let response = client.put(key, value, None).await.expect("put");
    response.header().expect("a response header").revision()
}

fn text(value: &str) -> String {
    value.to_owned()
}

/// Checks that a captured warn line names `key` and contains `message`.
fn assert_logged(logs: &LogCapture, message: &str, key: &str) {
    let lines = logs.lines_with(message);
    assert!(
        lines
            .iter()
            .any(|line| line.contains("WARN") && line.contains(key)),
        "no warn line with {message:?} for {key}: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoder_limit() {
    let logs = LogCapture::global();
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/limit/a", "1").await;
    put(&mut client, "/limit/big", "x".repeat(2048)).await;
    put(&mut client, "/limit/grows", "small").await;

    let decoder = Text { max_bytes: 1024 };
    let pipeline = start(EtcdConfig::new([server.endpoint()], "/limit"), decoder).await;
    pipeline.wait_ready().await;
    pipeline.reconciled.wait_value("/limit/a", &text("1")).await;
    pipeline
        .reconciled
        .wait_value("/limit/grows", &text("small"))
        .await;
    assert_eq!(pipeline.cached_keys(), ["/limit/a", "/limit/grows"]);
    assert!(matches!(
        pipeline.decode_error("/limit/big"),
        Some(DecodeErrorKind::TooLarge { limit: 1024 })
    ));
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 1);
    assert_logged(&logs, "failed to decode", "/limit/big");

    // A value that grows past the limit fails too, and the key keeps its last good value.
    put(&mut client, "/limit/grows", "y".repeat(4096)).await;
    put(&mut client, "/limit/b", "2").await;
    pipeline.reconciled.wait_value("/limit/b", &text("2")).await;
    assert!(matches!(
        pipeline.decode_error("/limit/grows"),
        Some(DecodeErrorKind::TooLarge { .. })
    ));
    let grows = pipeline.store.get("/limit/grows").expect("last good value");
    assert_eq!(grows.value.as_str(), "small");
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 2);
    assert!(pipeline.health.get().ready());
    assert!(
        pipeline
            .reconciled
            .keys()
            .iter()
            .all(|key| key != "/limit/big")
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_over_response_limit() {
    let logs = LogCapture::global();
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    // 20 values of 20 KiB: 400 KiB, more than one response of 256 KiB.
    for i in 0..20 {
        put(
            &mut client,
            format!("/wide/bulk-{i:02}"),
            "b".repeat(20 * 1024),
        )
        .await;
    }
    put(&mut client, "/wide/grows", "small").await;
    // 300 KiB: below etcd's request limit of 1.5 MiB, above the client's response limit.
    put(&mut client, "/wide/huge", "h".repeat(300 * 1024)).await;
    put(&mut client, "/wide/z", "last").await;

    let mut config = EtcdConfig::new([server.endpoint()], "/wide/");
    config.max_response_bytes = 256 * 1024;
    let pipeline = start(config, Text::default()).await;
    pipeline.wait_ready().await;

    // The list is read in smaller pages, and only the oversized key is missing.
    let cached = pipeline.cached_keys();
    assert_eq!(cached.len(), 22, "{cached:?}");
    assert!(!cached.contains(&"/wide/huge".to_owned()));
    pipeline
        .reconciled
        .wait_value("/wide/z", &text("last"))
        .await;
    pipeline
        .reconciled
        .wait_value("/wide/bulk-19", &"b".repeat(20 * 1024))
        .await;
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 1);
    assert_logged(&logs, "exceeds max_response_bytes", "/wide/huge");

    // A watch response above the limit makes the reflector relist, which skips the key. The
    // key is then absent from the list, so the cache drops it as deleted with an unknown
    // final state.
    put(&mut client, "/wide/grows", "g".repeat(300 * 1024)).await;
    pipeline
        .reconciled
        .wait("/wide/grows", |value| value.is_none())
        .await;
    assert!(pipeline.store.get("/wide/grows").is_none());
    let dropped = pipeline.events.for_key("/wide/grows");
    assert_eq!(
        dropped.last().map(|seen| seen.kind),
        Some("deleted-unknown")
    );
    assert!(pipeline.metrics.relists(&pipeline.name) >= 1);
    assert!(
        pipeline
            .metrics
            .source_errors(&pipeline.name, ErrorClass::Expired)
            >= 1
    );
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 3);

    // Other keys keep flowing after the relist.
    put(&mut client, "/wide/after", "1").await;
    pipeline
        .reconciled
        .wait_value("/wide/after", &text("1"))
        .await;
    pipeline.wait_ready().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_value() {
    let logs = LogCapture::global();
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/utf/good", "1").await;
    put(&mut client, "/utf/bad", b"ok\xff\xfe".to_vec()).await;

    let pipeline = start(
        EtcdConfig::new([server.endpoint()], "/utf/"),
        Text::default(),
    )
    .await;
    pipeline.wait_ready().await;
    pipeline
        .reconciled
        .wait_value("/utf/good", &text("1"))
        .await;
    assert_eq!(pipeline.cached_keys(), ["/utf/good"]);
    assert!(matches!(
        pipeline.decode_error("/utf/bad"),
        Some(DecodeErrorKind::InvalidUtf8 { valid_up_to: 2 })
    ));
    assert_logged(&logs, "failed to decode", "/utf/bad");

    // An invalid update keeps the last good value; a later good change still flows.
    put(&mut client, "/utf/good", b"\xc3\x28".to_vec()).await;
    put(&mut client, "/utf/after", "2").await;
    pipeline
        .reconciled
        .wait_value("/utf/after", &text("2"))
        .await;
    assert_eq!(pipeline.store.get("/utf/good").unwrap().value.as_str(), "1");
    assert!(pipeline.decode_error("/utf/good").is_some());
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 2);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_value() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/json/a", r#"{"replicas":1}"#).await;
    put(&mut client, "/json/broken", "{replicas: three").await;

    let decoder = Json::<serde_json::Value>::new();
    let pipeline = start(EtcdConfig::new([server.endpoint()], "/json"), decoder).await;
    pipeline.wait_ready().await;
    pipeline
        .reconciled
        .wait_value("/json/a", &json!({"replicas": 1}))
        .await;
    assert_eq!(pipeline.cached_keys(), ["/json/a"]);
    assert!(matches!(
        pipeline.decode_error("/json/broken"),
        Some(DecodeErrorKind::InvalidJson(_))
    ));

    // Fixing the broken key clears its error; breaking a good key keeps its last value.
    put(&mut client, "/json/broken", r#"{"replicas":3}"#).await;
    pipeline
        .reconciled
        .wait_value("/json/broken", &json!({"replicas": 3}))
        .await;
    assert!(pipeline.decode_error("/json/broken").is_none());
    put(&mut client, "/json/a", "[1,").await;
    put(&mut client, "/json/b", r#"{"replicas":2}"#).await;
    pipeline
        .reconciled
        .wait_value("/json/b", &json!({"replicas": 2}))
        .await;
    assert_eq!(
        *pipeline.store.get("/json/a").unwrap().value,
        json!({"replicas": 1})
    );
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 2);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_prefix() {
    for config in [
        EtcdConfig::new(["http://127.0.0.1:1"], ""),
        EtcdConfig::raw_prefix(["http://127.0.0.1:1"], ""),
    ] {
        let error = EtcdSource::connect(config)
            .await
            .expect_err("an empty prefix without the opt-in");
        assert_eq!(error.class(), ErrorClass::Permanent);
        let text = error.to_string();
        assert!(text.contains("prefix is empty"), "{text}");
        assert!(text.contains("EtcdConfig::whole_keyspace"), "{text}");
    }

    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/a/1", "x").await;
    put(&mut client, "/b/1", "y").await;
    let everything = start(
        EtcdConfig::whole_keyspace([server.endpoint()]),
        Text::default(),
    )
    .await;
    everything.wait_ready().await;
    everything.reconciled.wait_value("/a/1", &text("x")).await;
    everything.reconciled.wait_value("/b/1", &text("y")).await;
    put(&mut client, "c", "z").await;
    everything.reconciled.wait_value("c", &text("z")).await;
    everything.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_boundary() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    for key in ["/app", "/app/x", "/apple", "/app-old/y"] {
        put(&mut client, key, "1").await;
    }

    let directory = start(
        EtcdConfig::new([server.endpoint()], "/app"),
        Text::default(),
    )
    .await;
    let raw = start(
        EtcdConfig::raw_prefix([server.endpoint()], "/app"),
        Text::default(),
    )
    .await;
    directory.wait_ready().await;
    raw.wait_ready().await;
    assert_eq!(
        &*directory.name,
        "etcd ".to_owned() + &server.endpoint() + " prefix \"/app/\""
    );
    assert_eq!(directory.cached_keys(), ["/app/x"]);
    assert_eq!(
        raw.cached_keys(),
        ["/app", "/app-old/y", "/app/x", "/apple"]
    );

    put(&mut client, "/apple", "2").await;
    put(&mut client, "/app/z", "3").await;
    raw.reconciled.wait_value("/apple", &text("2")).await;
    raw.reconciled.wait_value("/app/z", &text("3")).await;
    directory.reconciled.wait_value("/app/z", &text("3")).await;
    assert_eq!(directory.reconciled.keys(), ["/app/x", "/app/z"]);
    assert!(directory.events.for_key("/apple").is_empty());
    directory.stop().await;
    raw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_keys() {
    let logs = LogCapture::global();
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/keys/good", "1").await;
    put(&mut client, b"/keys/\xff\xfe".to_vec(), "x").await;

    let pipeline = start(
        EtcdConfig::new([server.endpoint()], "/keys"),
        Text::default(),
    )
    .await;
    pipeline.wait_ready().await;
    pipeline
        .reconciled
        .wait_value("/keys/good", &text("1"))
        .await;
    assert_eq!(pipeline.cached_keys(), ["/keys/good"]);
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 1);
    assert_logged(&logs, "not valid UTF-8", "/keys/\\xff\\xfe");

    // One transaction with a binary key and a good key: the good key is applied.
    let txn = Txn::new().and_then([
        TxnOp::put(b"/keys/\xc3\x28".to_vec(), "y", None),
        TxnOp::put("/keys/after", "2", None),
    ]);
    client.txn(txn).await.expect("txn");
    pipeline
        .reconciled
        .wait_value("/keys/after", &text("2"))
        .await;
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 2);
    assert_logged(&logs, "not valid UTF-8", "/keys/\\xc3(");

    // A watch response whose only key is binary still moves the pipeline on.
    client
        .delete(b"/keys/\xff\xfe".to_vec(), None)
        .await
        .unwrap();
    put(&mut client, "/keys/last", "3").await;
    pipeline
        .reconciled
        .wait_value("/keys/last", &text("3"))
        .await;
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 3);
    assert!(pipeline.health.get().ready());
    pipeline.stop().await;
}
