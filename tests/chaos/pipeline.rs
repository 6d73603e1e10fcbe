//! The pipeline under test, wired as an application would wire it: `EtcdSource` → `Reflector`
//! → `Store` → `enqueue_keys` handler → `WorkQueue` → `Controller`, with a reconciler that
//! records what each reconcile saw.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use informer::cache::Store;
use informer::controller::{Action, Controller, ObjectState, Request};
use informer::decode::Text;
use informer::metrics::Metrics;
use informer::notify::{HandlerHandle, HandlerOptions, enqueue_keys};
use informer::reflector::{HealthWatch, Reflector, ReflectorConfig};
use informer::source::Source;
use informer::source::etcd::{EtcdConfig, EtcdSource};
use informer::workqueue::WorkQueue;
use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What one reconcile saw for its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The cache held this value, last modified at `revision`.
    Live { revision: i64, value: String },
    /// The cache did not hold the key.
    Deleted,
}

/// How much the reconciler records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording {
    /// Every reconcile of every key, in order.
    Everything,
    /// Only each key's last reconcile, so memory stays flat in a long soak.
    LastOnly,
}

/// How the reconciler behaves.
#[derive(Clone, Copy, Debug)]
pub struct ReconcilerBehaviour {
    /// How long one reconcile works, at most. Each reconcile draws a duration up to this.
    pub max_work: Duration,
    /// The fraction of reconciles that fail and are retried with backoff.
    pub error_rate: f64,
    /// What to record.
    pub recording: Recording,
}

/// The record of every reconcile, shared by the workers.
pub struct ReconcileLog {
    /// What each key's reconciles saw, oldest first. With [`Recording::LastOnly`], only the
    /// last one.
    seen: Mutex<HashMap<Arc<str>, Vec<Seen>>>,
    /// Keys being reconciled now.
    in_flight: Mutex<HashSet<Arc<str>>>,
    /// Keys that a second worker started to reconcile while the first was still running.
    overlaps: Mutex<Vec<Arc<str>>>,
    /// Reconciles started.
    reconciles: AtomicU64,
    behaviour: ReconcilerBehaviour,
}

impl ReconcileLog {
    fn new(behaviour: ReconcilerBehaviour) -> Self {
        ReconcileLog {
            seen: Mutex::default(),
            in_flight: Mutex::default(),
            overlaps: Mutex::default(),
            reconciles: AtomicU64::new(0),
            behaviour,
        }
    }

    /// Returns what each key's reconciles saw.
    pub fn seen(&self) -> HashMap<Arc<str>, Vec<Seen>> {
        self.seen.lock().clone()
    }

    /// Returns what the last reconcile of `key` saw.
    pub fn last(&self, key: &str) -> Option<Seen> {
        self.seen
            .lock()
            .get(key)
            .and_then(|seen| seen.last().cloned())
    }

    /// Returns the keys that were reconciled by two workers at once.
    pub fn overlaps(&self) -> Vec<Arc<str>> {
        self.overlaps.lock().clone()
    }

    /// Returns the number of reconciles started.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::SeqCst)
    }

    /// Marks `key` in flight, noting an overlap when it already was.
    fn enter(self: &Arc<Self>, key: &Arc<str>) -> InFlight {
        if !self.in_flight.lock().insert(key.clone()) {
            self.overlaps.lock().push(key.clone());
        }
        InFlight {
            log: self.clone(),
            key: key.clone(),
        }
    }

    fn record(&self, request: &Request<String>, recording: Recording) {
        let seen = match &request.object {
            ObjectState::Live(cached) => Seen::Live {
                revision: cached.revision,
                value: cached.value.as_str().to_owned(),
            },
            ObjectState::Deleted => Seen::Deleted,
        };
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        let mut all = self.seen.lock();
        let history = all.entry(request.key.clone()).or_default();
        if recording == Recording::LastOnly {
            history.clear();
        }
        history.push(seen);
    }
}

/// Removes a key from the in-flight set when its reconcile ends, however it ends.
struct InFlight {
    log: Arc<ReconcileLog>,
    key: Arc<str>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.log.in_flight.lock().remove(&self.key);
    }
}

/// A reconcile failure that the reconciler injects on purpose.
#[derive(Debug, thiserror::Error)]
#[error("injected reconcile failure for {0}")]
pub struct InjectedFailure(Arc<str>);

async fn reconcile(
    request: Request<String>,
    log: Arc<ReconcileLog>,
) -> Result<Action, InjectedFailure> {
    let behaviour = log.behaviour;
    let _in_flight = log.enter(&request.key);
    log.record(&request, behaviour.recording);

    // The worker's randomness is timing noise: it does not change the plan.
    let (work, fail) = {
        let mut rng = rand::rng();
        let work = rng.random_range(Duration::ZERO..=behaviour.max_work);
        (work, rng.random_bool(behaviour.error_rate))
    };
    if work.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(work).await;
    }
    if fail {
        return Err(InjectedFailure(request.key.clone()));
    }
    Ok(Action::Done)
}

/// A running pipeline and the handles the checks need.
pub struct Pipeline {
    /// The cache.
    pub store: Store<String>,
    /// The reflector's readiness.
    pub health: HealthWatch,
    /// The queue between the handler and the workers.
    pub queue: WorkQueue<Arc<str>>,
    /// The handler that enqueues keys.
    pub handler: HandlerHandle<String>,
    /// What the reconciles saw.
    pub log: Arc<ReconcileLog>,
    /// The counters of the source, the cache and the controller.
    pub metrics: Metrics,
    /// The source's name, which labels its metrics.
    pub source_name: Arc<str>,
    reflector: JoinHandle<()>,
    stop_controller: Option<oneshot::Sender<()>>,
    controller: Option<JoinHandle<informer::controller::ShutdownReport>>,
}

impl Pipeline {
    /// Connects the source and starts the reflector, the handler and the controller.
    pub async fn start(
        etcd: EtcdConfig,
        reflector: ReflectorConfig,
        workers: usize,
        behaviour: ReconcilerBehaviour,
    ) -> Pipeline {
        let metrics = Metrics::default();
        let source = EtcdSource::connect(etcd)
            .await
            .expect("create the etcd source")
            .with_metrics(metrics.clone());
        let source_name = source.name().clone();
        let reflector =
            Reflector::with_metrics(source, Text::default(), metrics.clone()).config(reflector);
        let store = reflector.store();
        let health = reflector.health();

        let queue = WorkQueue::<Arc<str>>::builder("chaos")
            .metrics(metrics.clone())
            .build();
        let handler = store.register(HandlerOptions::new("enqueue"), enqueue_keys(queue.clone()));

        let log = Arc::new(ReconcileLog::new(behaviour));
        let controller = Controller::new(
            "chaos",
            queue.clone(),
            store.clone(),
            reconcile,
            log.clone(),
        )
        .workers(workers)
        .metrics(metrics.clone())
        .shutdown_deadline(Duration::from_secs(5));
        let (stop_controller, stopped) = oneshot::channel::<()>();
        let controller = tokio::spawn(controller.run_until(async move {
            let _ = stopped.await;
        }));
        let reflector = tokio::spawn(reflector.run());

        Pipeline {
            store,
            health,
            queue,
            handler,
            log,
            metrics,
            source_name,
            reflector,
            stop_controller: Some(stop_controller),
            controller: Some(controller),
        }
    }

    /// Returns the counters that explain a run: relists, watch restarts and source errors.
    pub fn summary(&self) -> String {
        use informer::source::ErrorClass;

        let name = &self.source_name;
        format!(
            "relists {}, watch restarts {}, errors expired/transient/permanent {}/{}/{}, \
             reconciles {}, health {:?}",
            self.metrics.relists(name),
            self.metrics.watch_restarts(name),
            self.metrics.source_errors(name, ErrorClass::Expired),
            self.metrics.source_errors(name, ErrorClass::Transient),
            self.metrics.source_errors(name, ErrorClass::Permanent),
            self.log.reconciles(),
            self.health.get(),
        )
    }

    /// Stops the controller and the reflector.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_controller.take() {
            let _ = stop.send(());
        }
        if let Some(controller) = self.controller.take() {
            let report = controller.await.expect("the controller task");
            assert_eq!(
                report.aborted, 0,
                "a reconcile outlived the shutdown deadline"
            );
        }
        self.reflector.abort();
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.reflector.abort();
        if let Some(controller) = &self.controller {
            controller.abort();
        }
    }
}
