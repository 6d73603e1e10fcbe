//! Prometheus metrics for every pipeline stage.
//!
//! One [`Metrics`] value is shared by the stages of a pipeline. It counts from creation on, so
//! tests can read counts without a registry. [`Metrics::register`] exposes the same values in a
//! `prometheus_client` registry under the `informer_` prefix. Metric names and labels are a
//! public interface: dashboards depend on them, so they change only with a major version.

use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the per-source metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The source's name.
    pub source: String,
}

/// Labels of source errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceErrorLabels {
    /// The source's name.
    pub source: String,
    /// `expired`, `transient` or `permanent`.
    pub class: String,
}

/// Labels of the per-queue and per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    /// The queue, handler or controller name.
    pub name: String,
}

/// Labels of reconcile outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// The controller name.
    pub name: String,
    /// `done`, `requeue_after`, `requeue`, `error` or `panic`.
    pub result: String,
}

fn histogram() -> Histogram {
    // 100 µs to about 105 s in 16 doubling steps.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

struct Inner {
    source_errors: Family<SourceErrorLabels, Counter>,
    relists: Family<SourceLabels, Counter>,
    watch_restarts: Family<SourceLabels, Counter>,
    watch_batches: Family<SourceLabels, Counter>,
    decode_errors: Family<SourceLabels, Counter>,
    cache_objects: Family<SourceLabels, Gauge>,
    notify_coalesced: Family<NameLabels, Counter>,
    notify_pending: Family<NameLabels, Gauge>,
    queue_adds: Family<NameLabels, Counter>,
    queue_depth: Family<NameLabels, Gauge>,
    queue_retries: Family<NameLabels, Counter>,
    queue_wait_seconds: Family<NameLabels, Histogram, fn() -> Histogram>,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Family<NameLabels, Histogram, fn() -> Histogram>,
    active_workers: Family<NameLabels, Gauge>,
}

/// The metrics of one pipeline. Cloning shares the same values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Arc::new(Inner {
                source_errors: Family::default(),
                relists: Family::default(),
                watch_restarts: Family::default(),
                watch_batches: Family::default(),
                decode_errors: Family::default(),
                cache_objects: Family::default(),
                notify_coalesced: Family::default(),
                notify_pending: Family::default(),
                queue_adds: Family::default(),
                queue_depth: Family::default(),
                queue_retries: Family::default(),
                queue_wait_seconds: Family::new_with_constructor(histogram),
                reconciles: Family::default(),
                reconcile_seconds: Family::new_with_constructor(histogram),
                active_workers: Family::default(),
            }),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn source(name: &str) -> SourceLabels {
    SourceLabels {
        source: name.to_owned(),
    }
}

fn named(name: &str) -> NameLabels {
    NameLabels {
        name: name.to_owned(),
    }
}

/// One series of a metric family, looked up on first use and kept.
///
/// A family lookup allocates the label set, hashes it and takes the family's lock. Stages that
/// update a metric for every key hold a `Series` instead, so every update after the first is
/// one atomic operation on the value the family shares. The `for_*` constructors resolve every
/// series at once, so a queue's, controller's, handler's or source's series are exported at
/// zero before their first update, and a rate or an alert over them has data from the start.
struct Series<M> {
    cell: OnceLock<M>,
}

impl<M: Clone> Series<M> {
    fn new() -> Self {
        Series {
            cell: OnceLock::new(),
        }
    }

    fn get(&self, lookup: impl FnOnce() -> M) -> &M {
        self.cell.get_or_init(lookup)
    }
}

/// The metrics of one work queue, resolved once per queue.
pub(crate) struct QueueMetrics {
    metrics: Metrics,
    labels: NameLabels,
    adds: Series<Counter>,
    depth: Series<Gauge>,
    retries: Series<Counter>,
    wait_seconds: Series<Histogram>,
}

impl QueueMetrics {
    /// Counts a key added to the queue.
    pub(crate) fn add(&self) {
        let family = &self.metrics.inner.queue_adds;
        self.adds
            .get(|| family.get_or_create(&self.labels).clone())
            .inc();
    }

    /// Sets the number of ready keys.
    pub(crate) fn set_depth(&self, depth: usize) {
        let family = &self.metrics.inner.queue_depth;
        self.depth
            .get(|| family.get_or_create(&self.labels).clone())
            .set(depth as i64);
    }

    /// Counts a rate-limited add.
    pub(crate) fn retry(&self) {
        let family = &self.metrics.inner.queue_retries;
        self.retries
            .get(|| family.get_or_create(&self.labels).clone())
            .inc();
    }

    /// Records how long a key waited before a worker took it.
    pub(crate) fn observe_wait(&self, seconds: f64) {
        let family = &self.metrics.inner.queue_wait_seconds;
        self.wait_seconds
            .get(|| family.get_or_create(&self.labels).clone())
            .observe(seconds);
    }
}

/// The `result` labels of the reconcile counter, in the order of
/// [`ControllerMetrics::reconciles`].
const RECONCILE_RESULTS: [&str; 5] = ["done", "requeue_after", "requeue", "error", "panic"];

/// The metrics of one controller, resolved once per controller.
pub(crate) struct ControllerMetrics {
    metrics: Metrics,
    labels: NameLabels,
    reconciles: [Series<Counter>; RECONCILE_RESULTS.len()],
    reconcile_seconds: Series<Histogram>,
    active_workers: Series<Gauge>,
}

impl ControllerMetrics {
    /// Counts a reconcile outcome: `done`, `requeue_after`, `requeue`, `error` or `panic`.
    ///
    /// # Panics
    /// If `result` is not one of these labels.
    pub(crate) fn reconcile(&self, result: &str) {
        let index = RECONCILE_RESULTS
            .iter()
            .position(|label| *label == result)
            .unwrap_or_else(|| panic!("unknown reconcile result label {result:?}"));
        let labels = || ReconcileLabels {
            name: self.labels.name.clone(),
            result: result.to_owned(),
        };
        let family = &self.metrics.inner.reconciles;
        self.reconciles[index]
            .get(|| family.get_or_create(&labels()).clone())
            .inc();
    }

    /// Records a reconcile's duration.
    pub(crate) fn observe_reconcile(&self, seconds: f64) {
        let family = &self.metrics.inner.reconcile_seconds;
        self.reconcile_seconds
            .get(|| family.get_or_create(&self.labels).clone())
            .observe(seconds);
    }

    /// Changes the number of workers running a reconcile by `delta`.
    pub(crate) fn add_active_workers(&self, delta: i64) {
        let family = &self.metrics.inner.active_workers;
        self.active_workers
            .get(|| family.get_or_create(&self.labels).clone())
            .inc_by(delta);
    }
}

/// The metrics of one event handler, resolved once per handler.
pub(crate) struct HandlerMetrics {
    metrics: Metrics,
    labels: NameLabels,
    coalesced: Series<Counter>,
    pending: Series<Gauge>,
}

impl HandlerMetrics {
    /// Counts an event merged into a pending one.
    pub(crate) fn coalesced(&self) {
        let family = &self.metrics.inner.notify_coalesced;
        self.coalesced
            .get(|| family.get_or_create(&self.labels).clone())
            .inc();
    }

    /// Sets the number of events waiting for the handler.
    pub(crate) fn set_pending(&self, count: usize) {
        let family = &self.metrics.inner.notify_pending;
        self.pending
            .get(|| family.get_or_create(&self.labels).clone())
            .set(count as i64);
    }
}

/// The per-batch metrics of one source's cache and reflector, resolved once per source.
pub(crate) struct SourceMetrics {
    metrics: Metrics,
    labels: SourceLabels,
    cache_objects: Series<Gauge>,
    watch_batches: Series<Counter>,
}

impl SourceMetrics {
    /// Sets the number of cached objects.
    pub(crate) fn set_cache_objects(&self, count: usize) {
        let family = &self.metrics.inner.cache_objects;
        self.cache_objects
            .get(|| family.get_or_create(&self.labels).clone())
            .set(count as i64);
    }

    /// Counts an applied watch batch.
    pub(crate) fn watch_batch(&self) {
        let family = &self.metrics.inner.watch_batches;
        self.watch_batches
            .get(|| family.get_or_create(&self.labels).clone())
            .inc();
    }
}

impl Metrics {
    /// Returns the metrics of the queue named `queue`, for updates without a label lookup.
    pub(crate) fn for_queue(&self, queue: &str) -> QueueMetrics {
        let metrics = QueueMetrics {
            metrics: self.clone(),
            labels: named(queue),
            adds: Series::new(),
            depth: Series::new(),
            retries: Series::new(),
            wait_seconds: Series::new(),
        };
        let inner = &self.inner;
        let labels = &metrics.labels;
        metrics
            .adds
            .get(|| inner.queue_adds.get_or_create(labels).clone());
        metrics
            .depth
            .get(|| inner.queue_depth.get_or_create(labels).clone());
        metrics
            .retries
            .get(|| inner.queue_retries.get_or_create(labels).clone());
        metrics
            .wait_seconds
            .get(|| inner.queue_wait_seconds.get_or_create(labels).clone());
        metrics
    }

    /// Returns the metrics of the controller named `controller`, for updates without a label
    /// lookup.
    pub(crate) fn for_controller(&self, controller: &str) -> ControllerMetrics {
        let metrics = ControllerMetrics {
            metrics: self.clone(),
            labels: named(controller),
            reconciles: std::array::from_fn(|_| Series::new()),
            reconcile_seconds: Series::new(),
            active_workers: Series::new(),
        };
        let inner = &self.inner;
        let labels = &metrics.labels;
        for (series, result) in metrics.reconciles.iter().zip(RECONCILE_RESULTS) {
            let reconcile = ReconcileLabels {
                name: labels.name.clone(),
                result: result.to_owned(),
            };
            series.get(|| inner.reconciles.get_or_create(&reconcile).clone());
        }
        metrics
            .reconcile_seconds
            .get(|| inner.reconcile_seconds.get_or_create(labels).clone());
        metrics
            .active_workers
            .get(|| inner.active_workers.get_or_create(labels).clone());
        metrics
    }

    /// Returns the metrics of the handler named `handler`, for updates without a label lookup.
    pub(crate) fn for_handler(&self, handler: &str) -> HandlerMetrics {
        let metrics = HandlerMetrics {
            metrics: self.clone(),
            labels: named(handler),
            coalesced: Series::new(),
            pending: Series::new(),
        };
        let inner = &self.inner;
        let labels = &metrics.labels;
        metrics
            .coalesced
            .get(|| inner.notify_coalesced.get_or_create(labels).clone());
        metrics
            .pending
            .get(|| inner.notify_pending.get_or_create(labels).clone());
        metrics
    }

    /// Returns the per-batch metrics of the source named `source_name`, for updates without a
    /// label lookup.
    ///
    /// It also exports the source's error, relist, watch restart and decode error counters at
    /// zero.
    pub(crate) fn for_source(&self, source_name: &str) -> SourceMetrics {
        let metrics = SourceMetrics {
            metrics: self.clone(),
            labels: source(source_name),
            cache_objects: Series::new(),
            watch_batches: Series::new(),
        };
        let inner = &self.inner;
        let labels = &metrics.labels;
        metrics
            .cache_objects
            .get(|| inner.cache_objects.get_or_create(labels).clone());
        metrics
            .watch_batches
            .get(|| inner.watch_batches.get_or_create(labels).clone());
        for class in ["expired", "transient", "permanent"] {
            let _ = inner.source_errors.get_or_create(&SourceErrorLabels {
                source: source_name.to_owned(),
                class: class.to_owned(),
            });
        }
        let _ = inner.relists.get_or_create(labels);
        let _ = inner.watch_restarts.get_or_create(labels);
        let _ = inner.decode_errors.get_or_create(labels);
        metrics
    }

    /// Registers every metric in `registry` under the `informer_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let registry = registry.sub_registry_with_prefix("informer");
        let m = &self.inner;

        // Sources and the cache.
        registry.register(
            "source_errors",
            "Source errors by class",
            m.source_errors.clone(),
        );
        registry.register("relists", "Full lists after the first", m.relists.clone());
        registry.register(
            "watch_restarts",
            "Watches opened again after the first",
            m.watch_restarts.clone(),
        );
        registry.register(
            "watch_batches",
            "Watch batches applied to the cache",
            m.watch_batches.clone(),
        );
        registry.register(
            "decode_errors",
            "Values that failed to decode",
            m.decode_errors.clone(),
        );
        registry.register(
            "cache_objects",
            "Objects in the cache",
            m.cache_objects.clone(),
        );

        // Handlers.
        registry.register(
            "notify_coalesced",
            "Events merged into a pending event because the handler lagged",
            m.notify_coalesced.clone(),
        );
        registry.register(
            "notify_pending",
            "Events waiting for a handler",
            m.notify_pending.clone(),
        );

        // Workqueues.
        registry.register("workqueue_adds", "Keys added", m.queue_adds.clone());
        registry.register(
            "workqueue_depth",
            "Keys ready to be processed",
            m.queue_depth.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Rate-limited adds",
            m.queue_retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "Time a key waits in the queue before a worker takes it",
            m.queue_wait_seconds.clone(),
        );

        // Controllers.
        registry.register(
            "reconciles",
            "Reconcile calls by result",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile call duration",
            m.reconcile_seconds.clone(),
        );
        registry.register(
            "active_workers",
            "Workers running a reconcile",
            m.active_workers.clone(),
        );
    }

    /// Counts a source error.
    pub fn source_error(&self, source_name: &str, class: crate::source::ErrorClass) {
        let class = match class {
            crate::source::ErrorClass::Expired => "expired",
            crate::source::ErrorClass::Transient => "transient",
            crate::source::ErrorClass::Permanent => "permanent",
        };
        self.inner
            .source_errors
            .get_or_create(&SourceErrorLabels {
                source: source_name.to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

    /// Returns the number of source errors of `class`.
    pub fn source_errors(&self, source_name: &str, class: crate::source::ErrorClass) -> u64 {
        let class = match class {
            crate::source::ErrorClass::Expired => "expired",
            crate::source::ErrorClass::Transient => "transient",
            crate::source::ErrorClass::Permanent => "permanent",
        };
        self.inner
            .source_errors
            .get_or_create(&SourceErrorLabels {
                source: source_name.to_owned(),
                class: class.to_owned(),
            })
            .get()
    }

    /// Counts a relist.
    pub fn relist(&self, source_name: &str) {
        self.inner.relists.get_or_create(&source(source_name)).inc();
    }

    /// Returns the number of relists.
    pub fn relists(&self, source_name: &str) -> u64 {
        self.inner.relists.get_or_create(&source(source_name)).get()
    }

    /// Counts a watch opened again.
    pub fn watch_restart(&self, source_name: &str) {
        self.inner
            .watch_restarts
            .get_or_create(&source(source_name))
            .inc();
    }

    /// Returns the number of watches opened again.
    pub fn watch_restarts(&self, source_name: &str) -> u64 {
        self.inner
            .watch_restarts
            .get_or_create(&source(source_name))
            .get()
    }

    /// Counts an applied watch batch.
    pub fn watch_batch(&self, source_name: &str) {
        self.inner
            .watch_batches
            .get_or_create(&source(source_name))
            .inc();
    }

    /// Counts a decode error.
    pub fn decode_error(&self, source_name: &str) {
        self.inner
            .decode_errors
            .get_or_create(&source(source_name))
            .inc();
    }

    /// Returns the number of decode errors.
    pub fn decode_errors(&self, source_name: &str) -> u64 {
        self.inner
            .decode_errors
            .get_or_create(&source(source_name))
            .get()
    }

    /// Sets the number of cached objects.
    pub fn set_cache_objects(&self, source_name: &str, count: usize) {
        self.inner
            .cache_objects
            .get_or_create(&source(source_name))
            .set(count as i64);
    }

    /// Counts an event merged into a pending one.
    pub fn notify_coalesced(&self, handler: &str) {
        self.inner
            .notify_coalesced
            .get_or_create(&named(handler))
            .inc();
    }

    /// Returns the number of events merged into pending ones.
    pub fn notify_coalesced_count(&self, handler: &str) -> u64 {
        self.inner
            .notify_coalesced
            .get_or_create(&named(handler))
            .get()
    }

    /// Sets the number of events waiting for a handler.
    pub fn set_notify_pending(&self, handler: &str, count: usize) {
        self.inner
            .notify_pending
            .get_or_create(&named(handler))
            .set(count as i64);
    }

    /// Counts a key added to a queue.
    pub fn queue_add(&self, queue: &str) {
        self.inner.queue_adds.get_or_create(&named(queue)).inc();
    }

    /// Returns the number of keys added to a queue.
    pub fn queue_adds(&self, queue: &str) -> u64 {
        self.inner.queue_adds.get_or_create(&named(queue)).get()
    }

    /// Sets the number of ready keys in a queue.
    pub fn set_queue_depth(&self, queue: &str, depth: usize) {
        self.inner
            .queue_depth
            .get_or_create(&named(queue))
            .set(depth as i64);
    }

    /// Returns the number of ready keys in a queue, as last set.
    pub fn queue_depth(&self, queue: &str) -> i64 {
        self.inner.queue_depth.get_or_create(&named(queue)).get()
    }

    /// Counts a rate-limited add.
    pub fn queue_retry(&self, queue: &str) {
        self.inner.queue_retries.get_or_create(&named(queue)).inc();
    }

    /// Returns the number of rate-limited adds to a queue.
    pub fn queue_retries(&self, queue: &str) -> u64 {
        self.inner.queue_retries.get_or_create(&named(queue)).get()
    }

    /// Records how long a key waited before a worker took it.
    pub fn observe_queue_wait(&self, queue: &str, seconds: f64) {
        self.inner
            .queue_wait_seconds
            .get_or_create(&named(queue))
            .observe(seconds);
    }

    /// Counts a reconcile outcome: `done`, `requeue_after`, `requeue`, `error` or `panic`.
    pub fn reconcile(&self, controller: &str, result: &str) {
        self.inner
            .reconciles
            .get_or_create(&ReconcileLabels {
                name: controller.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Returns the number of reconciles with `result`.
    pub fn reconciles(&self, controller: &str, result: &str) -> u64 {
        self.inner
            .reconciles
            .get_or_create(&ReconcileLabels {
                name: controller.to_owned(),
                result: result.to_owned(),
            })
            .get()
    }

    /// Records a reconcile's duration.
    pub fn observe_reconcile(&self, controller: &str, seconds: f64) {
        self.inner
            .reconcile_seconds
            .get_or_create(&named(controller))
            .observe(seconds);
    }

    /// Changes the number of workers running a reconcile by `delta`.
    pub fn add_active_workers(&self, controller: &str, delta: i64) {
        self.inner
            .active_workers
            .get_or_create(&named(controller))
            .inc_by(delta);
    }

    /// Returns the number of workers running a reconcile.
    pub fn active_workers(&self, controller: &str) -> i64 {
        self.inner
            .active_workers
            .get_or_create(&named(controller))
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn handles_share_series() {
        let metrics = Metrics::default();
        metrics.for_queue("q").add();
        metrics.for_queue("q").add();
        metrics.queue_add("q");
        assert_eq!(metrics.queue_adds("q"), 3);

        let controller = metrics.for_controller("c");
        controller.reconcile("done");
        controller.reconcile("panic");
        controller.add_active_workers(2);
        assert_eq!(metrics.reconciles("c", "done"), 1);
        assert_eq!(metrics.reconciles("c", "panic"), 1);
        assert_eq!(metrics.reconciles("c", "error"), 0);
        assert_eq!(metrics.active_workers("c"), 2);

        metrics.for_handler("h").coalesced();
        assert_eq!(metrics.notify_coalesced_count("h"), 1);
    }

    #[test]
    fn handle_series_exported_at_zero() {
        let metrics = Metrics::default();
        let source = metrics.for_source("s");
        let _controller = metrics.for_controller("c");
        let _queue = metrics.for_queue("q");
        let _handler = metrics.for_handler("h");
        let text = exported(&metrics);
        for series in [
            "informer_cache_objects{source=\"s\"} 0",
            "informer_source_errors_total{source=\"s\",class=\"permanent\"} 0",
            "informer_relists_total{source=\"s\"} 0",
            "informer_decode_errors_total{source=\"s\"} 0",
            "informer_reconciles_total{name=\"c\",result=\"error\"} 0",
            "informer_workqueue_retries_total{name=\"q\"} 0",
            "informer_notify_pending{name=\"h\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }

        source.set_cache_objects(5);
        source.watch_batch();
        let text = exported(&metrics);
        assert!(
            text.contains("informer_cache_objects{source=\"s\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("informer_watch_batches_total{source=\"s\"} 1"),
            "{text}"
        );
    }
}
