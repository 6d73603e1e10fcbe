//! The whole pipeline over a real etcd server: reflector, cache, notify, workqueue and
//! controller, through disconnects, compaction, a killed server and a frozen one.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Compare, PutOptions, Txn, TxnOp};
use informer::cache::Store;
use informer::controller::{Action, Controller, ObjectState, Request};
use informer::decode::{Json, Text};
use informer::metrics::Metrics;
use informer::notify::{HandlerOptions, enqueue_keys};
use informer::reflector::{HealthWatch, Reflector, ReflectorConfig};
use informer::source::etcd::{EtcdConfig, EtcdSource};
use informer::source::{ErrorClass, Source};
use informer::workqueue::WorkQueue;
use parking_lot::Mutex;
use support::etcd::EtcdServer;
use support::proxy::Proxy;
use support::recording::{Call, Recorder, RecordingSource};
use tokio::time::Instant;

const PREFIX: &str = "/app/";

/// A running reflector over etcd with the handles a test needs.
struct Pipeline<T> {
    store: Store<T>,
    health: HealthWatch,
    calls: Arc<Mutex<Vec<Call>>>,
    metrics: Metrics,
    name: Arc<str>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Drop for Pipeline<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn etcd_config(endpoint: String) -> EtcdConfig {
    EtcdConfig::new([endpoint], PREFIX)
}

async fn start<D>(
    config: EtcdConfig,
    decoder: D,
    reflector_config: ReflectorConfig,
    recorders: &[&Recorder],
) -> Pipeline<D::Output>
where
    D: informer::decode::Decoder<Bytes>,
{
    let metrics = Metrics::default();
    let source = EtcdSource::connect(config)
        .await
        .expect("connect to etcd")
        .with_metrics(metrics.clone());
    let (source, calls) = RecordingSource::new(source);
    let name = source.name().clone();
    let reflector =
        Reflector::with_metrics(source, decoder, metrics.clone()).config(reflector_config);
    let store = reflector.store();
    for (index, recorder) in recorders.iter().enumerate() {
        store.register(
            HandlerOptions::new(format!("recorder-{index}")),
            recorder.handler(),
        );
    }
    let health = reflector.health();
    let task = tokio::spawn(reflector.run());
    Pipeline {
        store,
        health,
        calls,
        metrics,
        name,
        task,
    }
}

fn fast_out_of_sync() -> ReflectorConfig {
    ReflectorConfig {
        out_of_sync_after: Duration::from_secs(1),
        ..ReflectorConfig::default()
    }
}

async fn put(client: &mut etcd_client::Client, key: &str, value: &str) -> i64 {
    let response = client.put(key, value, None).await.expect("put");
    response.header().unwrap().revision()
}

async fn wait<T>(
    health: &HealthWatch,
    limit: Duration,
    what: &str,
    predicate: impl FnMut(&informer::reflector::Health) -> bool,
) {
    if tokio::time::timeout(limit, health.wait_for(predicate))
        .await
        .is_err()
    {
        panic!(
            "{what} not reached within {limit:?}; health: {:?}",
            health.get()
        );
    }
    let _ = std::marker::PhantomData::<T>;
}

/// Waits until `key` is cached with `value`.
async fn wait_cached(store: &Store<String>, key: &str, value: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while store
        .get(key)
        .is_none_or(|cached| cached.value.as_str() != value)
    {
        assert!(
            Instant::now() < deadline,
            "{key}={value} not cached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_disconnected_relists_once() {
    let server = EtcdServer::start().await;
    let proxy = Proxy::start(
        server
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    )
    .await;
    let mut client = server.client().await;

    put(&mut client, "/app/a", "1").await;
    put(&mut client, "/app/b", "1").await;
    put(&mut client, "/app/x", "1").await;
    // Other keys bring the store to revision 40.
    while put(&mut client, "/other/filler", "f").await < 40 {}

    let recorder = Recorder::default();
    let pipeline = start(
        etcd_config(proxy.url()),
        Text::default(),
        ReflectorConfig::default(),
        &[&recorder],
    )
    .await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;
    assert_eq!(pipeline.store.revision(), 40);
    recorder
        .wait_until(Duration::from_secs(5), |seen| seen.len() == 3)
        .await;

    proxy.cut();
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(10),
        "watch failure",
        |h| h.consecutive_failures > 0,
    )
    .await;
    client.delete("/app/x", None).await.unwrap();
    while put(&mut client, "/other/filler", "g").await < 50 {}
    server.compact(50).await;
    proxy.restore();

    wait::<()>(
        &pipeline.health,
        Duration::from_secs(20),
        "ready after relist",
        |h| h.ready() && h.revision >= 50,
    )
    .await;
    recorder
        .wait_until(Duration::from_secs(5), |seen| seen.len() == 4)
        .await;

    assert_eq!(
        pipeline.metrics.relists(&pipeline.name),
        1,
        "exactly one relist"
    );
    let after_cut = &recorder.seen()[3..];
    assert_eq!(after_cut.len(), 1, "{after_cut:?}");
    assert_eq!(after_cut[0].kind, "deleted-unknown");
    assert_eq!(after_cut[0].key, "/app/x");
    assert_eq!(recorder.for_key("/app/a").len(), 1, "a: only its first add");
    assert_eq!(recorder.for_key("/app/b").len(), 1, "b: only its first add");

    // The watch resumes right after the relist's revision.
    let calls = pipeline.calls.lock().clone();
    let relist_at = calls
        .iter()
        .rposition(|call| *call == Call::ListPage { first: true })
        .unwrap();
    assert_eq!(
        calls
            .iter()
            .filter(|c| **c == Call::ListPage { first: true })
            .count(),
        2
    );
    let health = pipeline.health.get();
    let Some(Call::Watch { from }) = calls.get(relist_at + 1) else {
        panic!("no watch after the relist: {calls:?}");
    };
    assert_eq!(*from, 51, "relist revision 50 + 1; calls: {calls:?}");
    assert!(health.revision >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_cut_mid_delivery_applies_whole() {
    let server = EtcdServer::start().await;
    let proxy = Proxy::start(
        server
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    )
    .await;
    let mut client = server.client().await;
    put(&mut client, "/app/seed", "s").await;

    let first = Recorder::default();
    let second = Recorder::default();
    let pipeline = start(
        etcd_config(proxy.url()),
        Text::default(),
        ReflectorConfig::default(),
        &[&first, &second],
    )
    .await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;

    // Values of 8 KiB make the watch response large enough to be cut in the middle.
    let value = "v".repeat(8 * 1024);
    proxy.truncate_next_response(8 * 1024);
    let txn = Txn::new()
        .when([Compare::version(
            "/app/k1",
            etcd_client::CompareOp::Equal,
            0,
        )])
        .and_then([
            TxnOp::put("/app/k1", value.clone(), None::<PutOptions>),
            TxnOp::put("/app/k2", value.clone(), None::<PutOptions>),
        ]);
    let response = client.txn(txn).await.unwrap();
    let txn_revision = response.header().unwrap().revision();

    for recorder in [&first, &second] {
        recorder
            .wait_until(Duration::from_secs(15), |seen| {
                seen.iter().any(|s| s.key == "/app/k1") && seen.iter().any(|s| s.key == "/app/k2")
            })
            .await;
    }
    assert_eq!(proxy.truncated(), 1, "the response was cut");
    assert!(
        pipeline.metrics.watch_restarts(&pipeline.name)
            + pipeline
                .metrics
                .source_errors(&pipeline.name, ErrorClass::Transient)
            >= 1
    );
    assert_eq!(
        pipeline.store.get("/app/k1").unwrap().revision,
        txn_revision
    );
    assert_eq!(
        pipeline.store.get("/app/k2").unwrap().revision,
        txn_revision
    );

    // Give a duplicate delivery time to show up, then check each key-revision came once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for recorder in [&first, &second] {
        let mut counts: HashMap<(String, i64), usize> = HashMap::new();
        for seen in recorder.seen() {
            *counts.entry((seen.key, seen.revision)).or_default() += 1;
        }
        assert_eq!(counts.get(&("/app/k1".into(), txn_revision)), Some(&1));
        assert_eq!(counts.get(&("/app/k2".into(), txn_revision)), Some(&1));
        assert!(counts.values().all(|count| *count == 1), "{counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_recovers() {
    let mut server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/app/before", "1").await;

    let recorder = Recorder::default();
    let pipeline = start(
        etcd_config(server.endpoint()),
        Text::default(),
        fast_out_of_sync(),
        &[&recorder],
    )
    .await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;

    server.kill();
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(5),
        "not ready while etcd is down",
        |h| !h.ready(),
    )
    .await;
    assert!(
        client.put("/app/during", "lost", None).await.is_err(),
        "etcd is down"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !pipeline.health.get().ready(),
        "still not ready while etcd is down"
    );

    server.restart().await;
    let healthy_at = Instant::now();
    let mut client = server.client().await;
    put(&mut client, "/app/after", "2").await;
    wait_cached(&pipeline.store, "/app/after", "2", Duration::from_secs(5)).await;
    assert!(healthy_at.elapsed() <= Duration::from_secs(5));
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(5),
        "ready again",
        |h| h.ready(),
    )
    .await;
    assert_eq!(
        pipeline.store.get("/app/before").unwrap().value.as_str(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_is_detected() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/app/k", "1").await;

    let mut config = etcd_config(server.endpoint());
    config.keep_alive_interval = Duration::from_secs(5);
    config.keep_alive_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(5);
    let recorder = Recorder::default();
    let pipeline = start(config, Text::default(), fast_out_of_sync(), &[&recorder]).await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;

    server.stop_process();
    let frozen_at = Instant::now();
    // Keep-alive: a ping every 5 s that times out after 5 s. The reflector's stall check
    // (3 × the 5 s progress interval) is the second line of defence.
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(20),
        "stall detected",
        |h| h.consecutive_failures > 0,
    )
    .await;
    let detected_after = frozen_at.elapsed();
    assert!(
        detected_after <= Duration::from_secs(16),
        "detected after {detected_after:?}"
    );
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(5),
        "out of sync",
        |h| !h.in_sync,
    )
    .await;

    server.continue_process();
    put(&mut client, "/app/k", "2").await;
    wait_cached(&pipeline.store, "/app/k", "2", Duration::from_secs(15)).await;
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(10),
        "ready again",
        |h| h.ready(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_during_disconnect_is_delete_then_add() {
    let server = EtcdServer::start().await;
    let proxy = Proxy::start(
        server
            .endpoint()
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
    )
    .await;
    let mut client = server.client().await;
    let first_revision = put(&mut client, "/app/k", "old").await;
    let compacted_revision = put(&mut client, "/app/c", "old").await;

    let recorder = Recorder::default();
    let pipeline = start(
        etcd_config(proxy.url()),
        Text::default(),
        ReflectorConfig::default(),
        &[&recorder],
    )
    .await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;
    recorder
        .wait_until(Duration::from_secs(5), |seen| seen.len() == 2)
        .await;

    // Resumed watch: etcd still has the history, so both events are observed.
    proxy.cut();
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(10),
        "watch failure",
        |h| h.consecutive_failures > 0,
    )
    .await;
    client.delete("/app/k", None).await.unwrap();
    let new_revision = put(&mut client, "/app/k", "new").await;
    proxy.restore();
    recorder
        .wait_until(Duration::from_secs(15), |seen| seen.len() == 4)
        .await;
    let events = recorder.for_key("/app/k");
    assert_eq!(events[1].kind, "deleted");
    assert_eq!(events[1].revision, first_revision);
    assert_eq!(events[2].kind, "added");
    assert_eq!(events[2].revision, new_revision);

    // Relisted after compaction: the delete is inferred, then the add.
    proxy.cut();
    wait::<()>(
        &pipeline.health,
        Duration::from_secs(10),
        "watch failure",
        |h| h.consecutive_failures > 0,
    )
    .await;
    client.delete("/app/c", None).await.unwrap();
    let recreated = put(&mut client, "/app/c", "new").await;
    server.compact(recreated).await;
    proxy.restore();
    recorder
        .wait_until(Duration::from_secs(15), |seen| seen.len() == 6)
        .await;
    let events = recorder.for_key("/app/c");
    assert_eq!(events[1].kind, "deleted-unknown");
    assert_eq!(events[1].revision, compacted_revision);
    assert_eq!(events[2].kind, "added");
    assert_eq!(events[2].revision, recreated);
    assert_eq!(pipeline.metrics.relists(&pipeline.name), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_initial_list_is_paged() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    // 3,000 values of 2 KiB: about 6 MiB, over the 4 MiB default gRPC message limit.
    let value = "x".repeat(2048);
    for chunk in 0..30 {
        let ops: Vec<TxnOp> = (0..100)
            .map(|i| {
                TxnOp::put(
                    format!("/app/key-{:05}", chunk * 100 + i),
                    value.clone(),
                    None,
                )
            })
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }

    let reflector_config = ReflectorConfig {
        page_size: 1000,
        ..ReflectorConfig::default()
    };
    let mut config = etcd_config(server.endpoint());
    config.page_size = 1000;
    let pipeline = start(config, Text::default(), reflector_config, &[]).await;

    let synced = tokio::time::timeout(Duration::from_secs(20), pipeline.health.wait_synced())
        .await
        .expect("synced within 20 s")
        .unwrap();
    // The store changes in one step at the end of the list, so it is full as soon as it is synced.
    assert_eq!(pipeline.store.len(), 3000);
    let pages = pipeline
        .calls
        .lock()
        .iter()
        .filter(|call| matches!(call, Call::ListPage { .. }))
        .count();
    assert_eq!(pages, 3, "3,000 keys at 1,000 a page");
    assert!(synced.synced);
    let total: usize = pipeline.store.list().iter().map(|c| c.value.len()).sum();
    assert!(total > 4 * 1024 * 1024);
}

#[derive(Debug, serde::Deserialize)]
struct Settings {
    replicas: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
struct Never;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_skips_one_key() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    for i in 0..20 {
        put(
            &mut client,
            &format!("/app/svc-{i:02}"),
            &format!(r#"{{"replicas":{i}}}"#),
        )
        .await;
    }
    put(&mut client, "/app/broken", "{replicas: three").await;

    let pipeline = start(
        etcd_config(server.endpoint()),
        Json::<Settings>::new(),
        ReflectorConfig::default(),
        &[],
    )
    .await;
    let queue = WorkQueue::<Arc<str>>::new("settings");
    pipeline
        .store
        .register(HandlerOptions::new("enqueue"), enqueue_keys(queue.clone()));
    let reconciled: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let controller = Controller::new(
        "settings",
        queue,
        pipeline.store.clone(),
        |request: Request<Settings>, seen: Arc<Mutex<HashMap<String, u32>>>| async move {
            if let ObjectState::Live(cached) = &request.object {
                seen.lock()
                    .insert(request.key.to_string(), cached.value.replicas);
            }
            Ok::<_, Never>(Action::Done)
        },
        reconciled.clone(),
    )
    .workers(2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller.run_until(async move {
        let _ = stopped.await;
    }));

    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while reconciled.lock().len() < 20 {
        assert!(
            Instant::now() < deadline,
            "reconciled: {:?}",
            reconciled.lock()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A later good value for another key is still applied.
    put(&mut client, "/app/svc-00", r#"{"replicas":100}"#).await;
    while reconciled.lock().get("/app/svc-00") != Some(&100) {
        assert!(Instant::now() < deadline + Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    assert_eq!(pipeline.store.len(), 20);
    assert!(pipeline.store.get("/app/broken").is_none());
    assert_eq!(pipeline.metrics.decode_errors(&pipeline.name), 1);
    let errors = pipeline.store.decode_errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(&*errors[0].0, "/app/broken");
    assert!(!reconciled.lock().contains_key("/app/broken"));
    assert!(
        pipeline.health.get().ready(),
        "one bad key does not affect readiness"
    );

    stop.send(()).unwrap();
    controller.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_store_relists() {
    let old_server = EtcdServer::start().await;
    let proxy = Proxy::start(address(&old_server)).await;
    let mut client = old_server.client().await;
    for i in 0..10 {
        put(&mut client, &format!("/app/old-{i}"), "1").await;
    }

    let recorder = Recorder::default();
    let pipeline = start(
        etcd_config(proxy.url()),
        Text::default(),
        fast_out_of_sync(),
        &[&recorder],
    )
    .await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;
    assert_eq!(pipeline.store.len(), 10);

    // A new, empty store behind the same address, as a rebuilt or restored etcd.
    proxy.cut();
    let new_server = EtcdServer::start().await;
    let mut client = new_server.client().await;
    let revision = put(&mut client, "/app/new", "2").await;
    assert!(
        revision < 10,
        "the new store starts over; revision {revision}"
    );
    proxy.set_target(address(&new_server));
    proxy.restore();

    wait_cached(&pipeline.store, "/app/new", "2", Duration::from_secs(20)).await;
    wait::<()>(&pipeline.health, Duration::from_secs(10), "ready", |h| {
        h.ready()
    })
    .await;
    assert_eq!(pipeline.store.len(), 1, "keys of the old store are gone");
    assert!(pipeline.metrics.relists(&pipeline.name) >= 1);
    let deleted = recorder
        .seen()
        .iter()
        .filter(|seen| seen.kind == "deleted-unknown")
        .count();
    assert_eq!(deleted, 10);
}

fn address(server: &EtcdServer) -> std::net::SocketAddr {
    server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}
