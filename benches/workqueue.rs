//! Throughput of the workqueue and the controller beside kube-runtime's applier and a bare
//! tokio channel, fed the same stream of keys.
//!
//! Every case feeds [`EVENTS`] keys from one producer task to `W` consumers (1, 4 or 16) on a
//! two-thread tokio runtime, and stops the clock when every key's last event has been seen by
//! a consumer that started after it. Two key streams:
//!
//! - `distinct`: every event names a new key, so nothing can be deduplicated.
//! - `hot`: every event names one of `HOT_KEYS` keys, chosen at random, so a deduplicating
//!   queue runs far fewer reconciles than it receives events.
//!
//! The cases:
//!
//! - `queue`: [`WorkQueue`] with `W` worker tasks looping `get`, reconcile, `done`.
//! - `controller`: informer's [`Controller`] with `W` workers, which also looks each key up in
//!   the cache and records metrics.
//! - `kube_applier`: kube-runtime's `applier` with `concurrency(W)`. kube-runtime's scheduler
//!   is public but its runner is not. The applier is scheduler, runner and store lookup: the
//!   core of `kube_runtime::Controller::run` without the watcher. It has the same semantics as
//!   the controller: duplicate keys are merged while queued, and a key is never reconciled
//!   twice at once.
//! - `mpsc`: `W` tokio unbounded channels, each key always sent to the same one. It keeps a key
//!   on one consumer but merges nothing: the cost floor of moving a key between tasks.
//!
//! Throughput is in events fed per second. Run with `cargo bench --bench workqueue`.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use informer::cache::{Store, Writer};
use informer::controller::{Action, Controller, Request};
use informer::decode::Json;
use informer::source::{Batch, Change, Incarnation, Object};
use informer::workqueue::WorkQueue;
use k8s_openapi::api::core::v1::ConfigMap;
use kube_runtime::reflector::ObjectRef;
use kube_runtime::{controller as kube_controller, reflector, watcher};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

/// Events fed per iteration.
const EVENTS: usize = 20_000;

/// Events fed per iteration when the binary runs without `--bench`, as under `cargo test`,
/// where criterion runs every case once to check that it works.
const TEST_EVENTS: usize = 1_000;

/// Returns the events per iteration of this run.
fn events() -> usize {
    if std::env::args().any(|arg| arg == "--bench") {
        EVENTS
    } else {
        TEST_EVENTS
    }
}

/// Keys of the `hot` stream.
const HOT_KEYS: usize = 8;

const WORKERS: [usize; 3] = [1, 4, 16];

const NAMESPACE: &str = "default";

/// A stream of key ids with, per key, the position of its last event.
struct KeyStream {
    name: &'static str,
    ids: Vec<u32>,
    keys: usize,
}

impl KeyStream {
    fn distinct() -> KeyStream {
        KeyStream {
            name: "distinct",
            ids: (0..events() as u32).collect(),
            keys: events(),
        }
    }

    fn hot() -> KeyStream {
        let mut rng = StdRng::seed_from_u64(7);
        KeyStream {
            name: "hot",
            ids: (0..events())
                .map(|_| rng.random_range(0..HOT_KEYS as u32))
                .collect(),
            keys: HOT_KEYS,
        }
    }

    fn last_positions(&self) -> Vec<u32> {
        let mut last = vec![0; self.keys];
        for (position, id) in self.ids.iter().enumerate() {
            last[*id as usize] = position as u32;
        }
        last
    }
}

fn key_name(id: u32) -> String {
    format!("cm-{id:06}")
}

/// Parses the id back out of a name made by [`key_name`], with an optional `namespace/`.
fn key_id(key: &str) -> usize {
    let digits = &key[key.len() - 6..];
    digits.parse().expect("a key made by key_name")
}

/// Tells when every key's last event has been seen.
///
/// The producer publishes each event's position before it adds the key. A consumer reads the
/// key's published position when it starts, as a reconciler reads the cache: once it reads a
/// key's last position, that key is finished.
struct Tracker {
    published: Vec<AtomicU32>,
    last: Vec<u32>,
    finished: Vec<AtomicBool>,
    remaining: AtomicUsize,
    all_done: Notify,
}

impl Tracker {
    fn new(stream: &KeyStream) -> Tracker {
        Tracker {
            published: (0..stream.keys).map(|_| AtomicU32::new(u32::MAX)).collect(),
            last: stream.last_positions(),
            finished: (0..stream.keys).map(|_| AtomicBool::new(false)).collect(),
            remaining: AtomicUsize::new(stream.keys),
            all_done: Notify::new(),
        }
    }

    fn publish(&self, id: u32, position: usize) {
        self.published[id as usize].store(position as u32, Ordering::Release);
    }

    fn observe(&self, id: usize) {
        let seen = self.published[id].load(Ordering::Acquire);
        if seen != self.last[id] || self.finished[id].swap(true, Ordering::AcqRel) {
            return;
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_done.notify_one();
        }
    }

    async fn wait(&self) {
        let notified = self.all_done.notified();
        if self.remaining.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

fn config_map(id: u32) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": key_name(id),
            "namespace": NAMESPACE,
            "uid": format!("00000000-0000-0000-0000-{id:012}"),
            "resourceVersion": "1",
        },
        "data": { "k": "v" },
    }))
    .expect("a valid ConfigMap")
}

/// Returns an informer cache with one ConfigMap per key, for the controller to read.
fn informer_store(keys: usize) -> Store<ConfigMap> {
    let writer = Writer::new(Store::default(), Json::<ConfigMap>::new());
    let changes = (0..keys as u32)
        .map(|id| {
            let value = serde_json::to_value(config_map(id)).expect("serialize a ConfigMap");
            Change::Put(Object {
                key: Arc::from(format!("{NAMESPACE}/{}", key_name(id))),
                revision: 1,
                incarnation: Incarnation::Uid(Arc::from(format!("uid-{id}"))),
                value,
            })
        })
        .collect();
    writer.apply(Batch {
        revision: 1,
        changes,
    });
    writer.store().clone()
}

/// Returns a kube-runtime reflector store with the same ConfigMaps, marked ready.
fn kube_store(keys: usize) -> reflector::Store<ConfigMap> {
    let mut writer = reflector::store::Writer::<ConfigMap>::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for id in 0..keys as u32 {
        writer.apply_watcher_event(&watcher::Event::InitApply(config_map(id)));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.as_reader()
}

/// Everything one key stream needs, built once outside the timed loops.
struct Fixture {
    stream: KeyStream,
    informer_keys: Vec<Arc<str>>,
    kube_refs: Vec<ObjectRef<ConfigMap>>,
    informer_store: Store<ConfigMap>,
    kube_store: reflector::Store<ConfigMap>,
}

impl Fixture {
    fn new(stream: KeyStream) -> Arc<Fixture> {
        let informer_keys = (0..stream.keys as u32)
            .map(|id| Arc::from(format!("{NAMESPACE}/{}", key_name(id))))
            .collect();
        let kube_refs = (0..stream.keys as u32)
            .map(|id| ObjectRef::new(&key_name(id)).within(NAMESPACE))
            .collect();
        Arc::new(Fixture {
            informer_store: informer_store(stream.keys),
            kube_store: kube_store(stream.keys),
            stream,
            informer_keys,
            kube_refs,
        })
    }
}

/// Runs `iterations` rounds of `round` and returns the time spent inside the rounds.
async fn timed<F, Fut>(iterations: u64, mut round: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        total += round().await;
    }
    total
}

async fn queue_round(fixture: Arc<Fixture>, workers: usize) -> Duration {
    let tracker = Arc::new(Tracker::new(&fixture.stream));
    let queue: WorkQueue<Arc<str>> = WorkQueue::new("bench");
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let tracker = tracker.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(key) = queue.get().await {
                tracker.observe(key_id(&key));
                queue.done(&key);
            }
        }));
    }

    let started = Instant::now();
    let producer = {
        let (fixture, tracker, queue) = (fixture.clone(), tracker.clone(), queue.clone());
        tokio::spawn(async move {
            for (position, id) in fixture.stream.ids.iter().enumerate() {
                tracker.publish(*id, position);
                queue.add(fixture.informer_keys[*id as usize].clone());
            }
        })
    };
    tracker.wait().await;
    let elapsed = started.elapsed();

    producer.await.expect("the producer finished");
    queue.shut_down();
    for task in tasks {
        task.await.expect("a worker finished");
    }
    elapsed
}

async fn controller_round(fixture: Arc<Fixture>, workers: usize) -> Duration {
    let tracker = Arc::new(Tracker::new(&fixture.stream));
    let queue: WorkQueue<Arc<str>> = WorkQueue::new("bench");
    let reconcile = |request: Request<ConfigMap>, tracker: Arc<Tracker>| async move {
        tracker.observe(key_id(&request.key));
        black_box(request.live());
        Ok::<_, Infallible>(Action::Done)
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(
        "bench",
        queue.clone(),
        fixture.informer_store.clone(),
        reconcile,
        tracker.clone(),
    )
    .workers(workers);
    let running = tokio::spawn(controller.run_until(async {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    let producer = {
        let (fixture, tracker, queue) = (fixture.clone(), tracker.clone(), queue.clone());
        tokio::spawn(async move {
            for (position, id) in fixture.stream.ids.iter().enumerate() {
                tracker.publish(*id, position);
                queue.add(fixture.informer_keys[*id as usize].clone());
            }
        })
    };
    tracker.wait().await;
    let elapsed = started.elapsed();

    producer.await.expect("the producer finished");
    let _ = stop_tx.send(());
    running.await.expect("the controller stopped");
    elapsed
}

async fn kube_round(fixture: Arc<Fixture>, workers: usize) -> Duration {
    let tracker = Arc::new(Tracker::new(&fixture.stream));
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<ObjectRef<ConfigMap>, Infallible>>();
    let reconcile = |object: Arc<ConfigMap>, tracker: Arc<Tracker>| {
        let name = object.metadata.name.as_deref().expect("a named ConfigMap");
        tracker.observe(key_id(name));
        futures::future::ready(Ok::<_, Infallible>(kube_controller::Action::await_change()))
    };
    let error_policy = |_: Arc<ConfigMap>, error: &Infallible, _: Arc<Tracker>| match *error {};
    let config = kube_controller::Config::default().concurrency(workers as u16);
    let applier = kube_controller::applier(
        reconcile,
        error_policy,
        tracker.clone(),
        fixture.kube_store.clone(),
        rx,
        config,
    );
    let running = tokio::spawn(applier.for_each(|result| {
        result.expect("a no-op reconcile succeeds");
        futures::future::ready(())
    }));

    let started = Instant::now();
    let producer = {
        let (fixture, tracker) = (fixture.clone(), tracker.clone());
        tokio::spawn(async move {
            for (position, id) in fixture.stream.ids.iter().enumerate() {
                tracker.publish(*id, position);
                tx.unbounded_send(Ok(fixture.kube_refs[*id as usize].clone()))
                    .expect("the applier is running");
            }
            tx
        })
    };
    tracker.wait().await;
    let elapsed = started.elapsed();

    drop(producer.await.expect("the producer finished"));
    running.await.expect("the applier stopped");
    elapsed
}

async fn mpsc_round(fixture: Arc<Fixture>, workers: usize) -> Duration {
    let tracker = Arc::new(Tracker::new(&fixture.stream));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<str>>();
        senders.push(tx);
        let tracker = tracker.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(key) = rx.recv().await {
                tracker.observe(key_id(&key));
            }
        }));
    }

    let started = Instant::now();
    let producer = {
        let (fixture, tracker) = (fixture.clone(), tracker.clone());
        tokio::spawn(async move {
            for (position, id) in fixture.stream.ids.iter().enumerate() {
                tracker.publish(*id, position);
                let key = fixture.informer_keys[*id as usize].clone();
                senders[*id as usize % senders.len()]
                    .send(key)
                    .expect("the consumer is running");
            }
        })
    };
    tracker.wait().await;
    let elapsed = started.elapsed();

    producer.await.expect("the producer finished");
    for task in tasks {
        task.await.expect("a consumer finished");
    }
    elapsed
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn bench_stream(c: &mut Criterion, runtime: &tokio::runtime::Runtime, stream: KeyStream) {
    let fixture = Fixture::new(stream);
    let mut group = c.benchmark_group(format!("workqueue/{}", fixture.stream.name));
    group.throughput(Throughput::Elements(events() as u64));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    for workers in WORKERS {
        group.bench_with_input(BenchmarkId::new("queue", workers), &workers, |b, &w| {
            b.iter_custom(|n| runtime.block_on(timed(n, || queue_round(fixture.clone(), w))))
        });
        group.bench_with_input(
            BenchmarkId::new("controller", workers),
            &workers,
            |b, &w| {
                b.iter_custom(|n| {
                    runtime.block_on(timed(n, || controller_round(fixture.clone(), w)))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("kube_applier", workers),
            &workers,
            |b, &w| {
                b.iter_custom(|n| runtime.block_on(timed(n, || kube_round(fixture.clone(), w))))
            },
        );
        group.bench_with_input(BenchmarkId::new("mpsc", workers), &workers, |b, &w| {
            b.iter_custom(|n| runtime.block_on(timed(n, || mpsc_round(fixture.clone(), w))))
        });
    }
    group.finish();
}

fn workqueue(c: &mut Criterion) {
    let runtime = runtime();
    bench_stream(c, &runtime, KeyStream::distinct());
    bench_stream(c, &runtime, KeyStream::hot());
}

criterion_group!(benches, workqueue);
criterion_main!(benches);
