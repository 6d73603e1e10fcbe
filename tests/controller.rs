//! Tests of the controller's worker pool on tokio's paused clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use informer::cache::{Cached, Store};
use informer::controller::{Action, Controller, Reconciler, Request, StopCause, shutdown_signal};
use informer::metrics::Metrics;
use informer::source::Incarnation;
use informer::workqueue::WorkQueue;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, timeout};

type Key = Arc<str>;

#[derive(Debug, thiserror::Error)]
#[error("reconcile of {key} failed on purpose")]
struct TestError {
    key: String,
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Returns a future that completes when the sender fires or is dropped.
fn trigger() -> (oneshot::Sender<()>, impl Future<Output = ()>) {
    let (sender, receiver) = oneshot::channel::<()>();
    (sender, async move {
        let _ = receiver.await;
    })
}

/// Counts concurrent reconciles for as long as it lives, also through a panic.
struct Concurrency<'a>(&'a AtomicUsize);

impl<'a> Concurrency<'a> {
    fn enter(counter: &'a AtomicUsize) -> (Self, usize) {
        let now = counter.fetch_add(1, Ordering::SeqCst) + 1;
        (Concurrency(counter), now)
    }
}

impl Drop for Concurrency<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn readds_during_reconcile_collapse() {
    let queue: WorkQueue<Key> = WorkQueue::new("collapse");
    let calls = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<usize>();
    let (gate_tx, gate_rx) = watch::channel(false);

    let reconcile = {
        let calls = calls.clone();
        move |_request: Request<String>, _ctx: Arc<()>| {
            let calls = calls.clone();
            let started_tx = started_tx.clone();
            let mut gate_rx = gate_rx.clone();
            async move {
                let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
                started_tx.send(call).unwrap();
                if call == 1 {
                    gate_rx.wait_for(|open| *open).await.unwrap();
                }
                Ok::<_, TestError>(Action::Done)
            }
        }
    };
    queue.add("a".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "collapse",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(4)
        .run_until(shutdown),
    );
    assert_eq!(started_rx.recv().await, Some(1));

    for add in 0..10_000 {
        queue.add("a".into());
        assert_eq!(queue.len(), 0, "add {add}: a is in flight");
        let stats = queue.stats();
        assert!(stats.max_len() <= 1, "add {add}: {stats:?}");
    }
    gate_tx.send(true).unwrap();

    assert_eq!(started_rx.recv().await, Some(2));
    sleep(secs(3600)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "exactly one more reconcile"
    );
    assert!(queue.stats().is_clear(), "{:?}", queue.stats());

    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(report.aborted, 0);
}

/// Progress of the panic test, published by the reconciler.
#[derive(Default)]
struct PanicProgress {
    good_reconciled: usize,
    bad_attempts: Vec<Instant>,
}

#[tokio::test(start_paused = true)]
async fn panic_keeps_pool_and_backs_off() {
    let metrics = Metrics::default();
    let queue: WorkQueue<Key> = WorkQueue::builder("panics")
        .metrics(metrics.clone())
        .build();
    let (progress_tx, mut progress_rx) = watch::channel(PanicProgress::default());
    let progress_tx = Arc::new(progress_tx);
    let reconciled: Arc<Mutex<HashMap<Key, usize>>> = Arc::default();
    let concurrency = Arc::new(AtomicUsize::new(0));
    let max_after_panic = Arc::new(AtomicUsize::new(0));
    let panicked = Arc::new(AtomicBool::new(false));

    let reconcile = {
        let reconciled = reconciled.clone();
        let concurrency = concurrency.clone();
        let max_after_panic = max_after_panic.clone();
        let panicked = panicked.clone();
        move |request: Request<String>, _ctx: Arc<()>| {
            let progress_tx = progress_tx.clone();
            let reconciled = reconciled.clone();
            let concurrency = concurrency.clone();
            let max_after_panic = max_after_panic.clone();
            let panicked = panicked.clone();
            async move {
                let (_guard, running) = Concurrency::enter(&concurrency);
                if panicked.load(Ordering::SeqCst) {
                    max_after_panic.fetch_max(running, Ordering::SeqCst);
                }
                if &*request.key == "bad" {
                    progress_tx.send_modify(|progress| progress.bad_attempts.push(Instant::now()));
                    panicked.store(true, Ordering::SeqCst);
                    panic!("reconcile of bad panics on purpose");
                }

                sleep(ms(1)).await;
                *reconciled.lock().entry(request.key.clone()).or_default() += 1;
                progress_tx.send_modify(|progress| progress.good_reconciled += 1);
                Ok::<_, TestError>(Action::Done)
            }
        }
    };
    queue.add("bad".into());
    for index in 0..99 {
        queue.add(format!("key-{index:02}").into());
    }
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "panics",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(4)
        .metrics(metrics.clone())
        .run_until(shutdown),
    );

    progress_rx
        .wait_for(|progress| progress.good_reconciled == 99 && progress.bad_attempts.len() >= 8)
        .await
        .unwrap();

    let reconciled = reconciled.lock().clone();
    assert_eq!(reconciled.len(), 99);
    assert!(
        reconciled.values().all(|&count| count == 1),
        "each good key is reconciled once in the first pass"
    );
    assert_eq!(
        max_after_panic.load(Ordering::SeqCst),
        4,
        "4 workers after the panic"
    );

    let attempts = progress_rx.borrow().bad_attempts.clone();
    let gaps: Vec<Duration> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for (index, gap) in gaps.iter().enumerate() {
        let backoff = ms(5) * 2u32.pow(index as u32);
        assert!(
            *gap >= backoff,
            "gap {index} is {gap:?}, below the {backoff:?} backoff"
        );
    }
    // The first retry waits behind the first pass in the queue, so growth is checked from the
    // second gap on, when the queue is otherwise empty.
    for index in 2..gaps.len() {
        assert!(gaps[index] > gaps[index - 1], "gaps do not grow: {gaps:?}");
    }
    assert!(metrics.reconciles("panics", "panic") >= 8);
    assert_eq!(metrics.reconciles("panics", "done"), 99);

    stop.send(()).unwrap();
    let report = run.await.unwrap();
    assert_eq!(
        report.workers_restarted, 0,
        "reconcile panics never kill a worker"
    );
    assert_eq!(metrics.active_workers("panics"), 0);
}

/// Per-key bookkeeping of the concurrency test.
#[derive(Default)]
struct KeyRecord {
    in_flight: usize,
    max_in_flight: usize,
    /// Sequence numbers at which reconciles of the key started and finished.
    runs: Vec<(u64, Option<u64>)>,
}

#[tokio::test(start_paused = true)]
async fn same_key_never_concurrent() {
    let queue: WorkQueue<Key> = WorkQueue::new("exclusive");
    let sequence = Arc::new(AtomicU64::new(0));
    let records: Arc<Mutex<HashMap<Key, KeyRecord>>> = Arc::default();
    let concurrency = Arc::new(AtomicUsize::new(0));
    let max_concurrency = Arc::new(AtomicUsize::new(0));
    let (finished_tx, mut finished_rx) = watch::channel(0u64);
    let finished_tx = Arc::new(finished_tx);

    let reconcile = {
        let sequence = sequence.clone();
        let records = records.clone();
        let concurrency = concurrency.clone();
        let max_concurrency = max_concurrency.clone();
        move |request: Request<String>, _ctx: Arc<()>| {
            let sequence = sequence.clone();
            let records = records.clone();
            let concurrency = concurrency.clone();
            let max_concurrency = max_concurrency.clone();
            let finished_tx = finished_tx.clone();
            async move {
                let (_guard, running) = Concurrency::enter(&concurrency);
                max_concurrency.fetch_max(running, Ordering::SeqCst);
                let run = {
                    let mut records = records.lock();
                    let record = records.entry(request.key.clone()).or_default();
                    record.in_flight += 1;
                    record.max_in_flight = record.max_in_flight.max(record.in_flight);
                    record
                        .runs
                        .push((sequence.fetch_add(1, Ordering::SeqCst), None));
                    record.runs.len() - 1
                };

                // Different durations per key make the workers free up at different times.
                let index: u64 = request.key.trim_start_matches("key-").parse().unwrap();
                sleep(ms(10 + 17 * index)).await;

                let finished = sequence.fetch_add(1, Ordering::SeqCst);
                {
                    let mut records = records.lock();
                    let record = records.get_mut(&request.key).unwrap();
                    record.in_flight -= 1;
                    record.runs[run].1 = Some(finished);
                }
                finished_tx.send_replace(finished);
                Ok::<_, TestError>(Action::Done)
            }
        }
    };
    let keys: Vec<Key> = (0..5).map(|index| format!("key-{index}").into()).collect();
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "exclusive",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(2)
        .run_until(shutdown),
    );

    for round in 0..10 {
        for key in &keys {
            if round % 3 == 1 {
                queue.add_after(key.clone(), ms(3));
            } else {
                queue.add(key.clone());
            }
        }
        sleep(ms(7)).await;
    }
    let last_trigger = sequence.fetch_add(1, Ordering::SeqCst);

    let reconciled_after_trigger = |records: &HashMap<Key, KeyRecord>| {
        keys.iter().all(|key| {
            records.get(key).is_some_and(|record| {
                record
                    .runs
                    .iter()
                    .any(|&(start, end)| start > last_trigger && end.is_some())
            })
        })
    };
    while !reconciled_after_trigger(&records.lock()) {
        finished_rx.changed().await.unwrap();
    }
    // Let the last workers call `done` after their reconcile returned.
    sleep(secs(1)).await;

    for key in &keys {
        let records = records.lock();
        let record = &records[key];
        assert_eq!(
            record.max_in_flight, 1,
            "{key} ran concurrently with itself"
        );
        assert_eq!(record.in_flight, 0);
    }
    assert_eq!(
        max_concurrency.load(Ordering::SeqCst),
        2,
        "both workers were used"
    );
    assert!(queue.stats().is_clear(), "idle queue: {:?}", queue.stats());

    stop.send(()).unwrap();
    assert_eq!(run.await.unwrap().aborted, 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_in_flight_finish() {
    let queue: WorkQueue<Key> = WorkQueue::new("graceful");
    let starts: Arc<Mutex<Vec<Key>>> = Arc::default();
    let finished = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<Key>();

    let reconcile = {
        let starts = starts.clone();
        let finished = finished.clone();
        move |request: Request<String>, _ctx: Arc<()>| {
            let starts = starts.clone();
            let finished = finished.clone();
            let started_tx = started_tx.clone();
            async move {
                starts.lock().push(request.key.clone());
                started_tx.send(request.key.clone()).unwrap();
                let duration = if &*request.key == "long-a" {
                    secs(10)
                } else {
                    secs(5)
                };
                sleep(duration).await;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok::<_, TestError>(Action::Done)
            }
        }
    };
    queue.add("long-a".into());
    queue.add("long-b".into());
    for index in 0..5 {
        queue.add(format!("queued-{index}").into());
    }
    let (stop, shutdown) = trigger();
    let start = Instant::now();
    let run = tokio::spawn(
        Controller::new(
            "graceful",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(2)
        .shutdown_deadline(secs(30))
        .run_until(shutdown),
    );
    started_rx.recv().await.unwrap();
    started_rx.recv().await.unwrap();

    stop.send(()).unwrap();
    let report = run.await.unwrap();

    assert_eq!(
        finished.load(Ordering::SeqCst),
        2,
        "both in-flight reconciles finished"
    );
    assert_eq!(
        starts.lock().len(),
        2,
        "no reconcile started after shutdown"
    );
    assert_eq!(report.cause, StopCause::Requested);
    assert_eq!(report.in_flight, 2);
    assert_eq!(report.aborted, 0);
    assert_eq!(report.dropped, 5);
    assert_eq!(
        start.elapsed(),
        secs(10),
        "returned when the longest reconcile finished"
    );
    assert!(queue.stats().is_clear(), "{:?}", queue.stats());
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_after_deadline() {
    let metrics = Metrics::default();
    let queue: WorkQueue<Key> = WorkQueue::new("deadline");
    let finished = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();

    let reconcile = {
        let finished = finished.clone();
        move |_request: Request<String>, _ctx: Arc<()>| {
            let finished = finished.clone();
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                sleep(secs(60)).await;
                finished.store(true, Ordering::SeqCst);
                Ok::<_, TestError>(Action::Done)
            }
        }
    };
    queue.add("stuck".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "deadline",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(3)
        .shutdown_deadline(secs(5))
        .metrics(metrics.clone())
        .run_until(shutdown),
    );
    started_rx.recv().await.unwrap();
    let start = Instant::now();

    stop.send(()).unwrap();
    let report = run.await.unwrap();

    assert_eq!(start.elapsed(), secs(5));
    assert_eq!(report.in_flight, 1);
    assert_eq!(report.aborted, 1, "idle workers are not counted as aborted");
    assert!(!finished.load(Ordering::SeqCst));
    assert!(queue.stats().is_clear(), "the aborted key was released");
    assert_eq!(metrics.active_workers("deadline"), 0);
}

#[tokio::test(start_paused = true)]
async fn request_reports_live_and_deleted() {
    let queue: WorkQueue<Key> = WorkQueue::new("lookup");
    let store: Store<String> = Store::default();
    store.insert_for_test(Cached {
        key: "live".into(),
        revision: 7,
        incarnation: Incarnation::CreateRevision(3),
        value: Arc::new("value".to_owned()),
    });
    // Per key: the revision and value the reconcile saw, or `None` when it saw a delete.
    type Seen = HashMap<Key, Option<(i64, String)>>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();

    let reconcile = {
        let seen = seen.clone();
        move |request: Request<String>, _ctx: Arc<()>| {
            let seen = seen.clone();
            let done_tx = done_tx.clone();
            async move {
                let object = request
                    .live()
                    .map(|cached| (cached.revision, (*cached.value).clone()));
                assert_eq!(request.is_deleted(), object.is_none());
                seen.lock().insert(request.key.clone(), object);
                done_tx.send(()).unwrap();
                Ok::<_, TestError>(Action::Done)
            }
        }
    };
    queue.add("live".into());
    queue.add("gone".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new("lookup", queue, store, reconcile, Arc::new(())).run_until(shutdown),
    );
    done_rx.recv().await.unwrap();
    done_rx.recv().await.unwrap();
    stop.send(()).unwrap();
    run.await.unwrap();

    let seen = seen.lock();
    assert_eq!(seen[&Key::from("live")], Some((7, "value".to_owned())));
    assert_eq!(seen[&Key::from("gone")], None);
}

#[tokio::test(start_paused = true)]
async fn errors_retry_with_backoff() {
    let metrics = Metrics::default();
    let queue: WorkQueue<Key> = WorkQueue::new("errors");
    let (attempt_tx, mut attempt_rx) = mpsc::unbounded_channel::<(u32, Instant)>();

    let reconcile = move |request: Request<String>, _ctx: Arc<()>| {
        let attempt_tx = attempt_tx.clone();
        async move {
            attempt_tx.send((request.requeues, Instant::now())).unwrap();
            match request.requeues {
                0 | 1 => Err(TestError {
                    key: request.key.to_string(),
                }),
                2 => Ok(Action::Requeue),
                _ => Ok(Action::Done),
            }
        }
    };
    queue.add("flaky".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "errors",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .metrics(metrics.clone())
        .run_until(shutdown),
    );

    let mut attempts = Vec::new();
    for _ in 0..4 {
        attempts.push(attempt_rx.recv().await.unwrap());
    }
    sleep(secs(60)).await;
    stop.send(()).unwrap();
    run.await.unwrap();

    let requeues: Vec<u32> = attempts.iter().map(|(requeues, _)| *requeues).collect();
    assert_eq!(requeues, [0, 1, 2, 3]);
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|pair| pair[1].1 - pair[0].1)
        .collect();
    assert_eq!(gaps, [ms(5), ms(10), ms(20)]);
    assert!(
        attempt_rx.try_recv().is_err(),
        "done after the fourth attempt"
    );
    assert_eq!(metrics.reconciles("errors", "error"), 2);
    assert_eq!(metrics.reconciles("errors", "requeue"), 1);
    assert_eq!(metrics.reconciles("errors", "done"), 1);
    assert_eq!(
        queue.requeues(&"flaky".into()),
        0,
        "done forgets the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn requeue_after_resets_backoff() {
    let queue: WorkQueue<Key> = WorkQueue::new("periodic");
    let (attempt_tx, mut attempt_rx) = mpsc::unbounded_channel::<(u32, Instant)>();

    let reconcile = move |request: Request<String>, _ctx: Arc<()>| {
        let attempt_tx = attempt_tx.clone();
        async move {
            attempt_tx.send((request.requeues, Instant::now())).unwrap();
            Ok::<_, TestError>(Action::RequeueAfter(secs(30)))
        }
    };
    queue.add_rate_limited("periodic".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "periodic",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .run_until(shutdown),
    );

    let mut attempts = Vec::new();
    for _ in 0..3 {
        attempts.push(attempt_rx.recv().await.unwrap());
    }
    stop.send(()).unwrap();
    let report = run.await.unwrap();

    assert_eq!(
        attempts[0].0, 1,
        "the first reconcile follows a rate-limited add"
    );
    assert_eq!(attempts[1].0, 0, "RequeueAfter forgot the backoff");
    assert_eq!(attempts[1].1 - attempts[0].1, secs(30));
    assert_eq!(attempts[2].1 - attempts[1].1, secs(30));
    assert_eq!(report.dropped, 1, "the next periodic reconcile was pending");
}

/// A reconciler with its own state, implementing the trait instead of being a closure.
struct CountingReconciler {
    calls: AtomicUsize,
}

impl Reconciler<String, mpsc::UnboundedSender<usize>> for CountingReconciler {
    type Error = TestError;

    async fn reconcile(
        &self,
        _request: Request<String>,
        ctx: Arc<mpsc::UnboundedSender<usize>>,
    ) -> Result<Action, TestError> {
        let calls = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        ctx.send(calls).unwrap();
        Ok(Action::Done)
    }
}

#[tokio::test(start_paused = true)]
async fn struct_reconciler_gets_context() {
    let queue: WorkQueue<Key> = WorkQueue::new("struct");
    let (calls_tx, mut calls_rx) = mpsc::unbounded_channel();
    let reconciler = CountingReconciler {
        calls: AtomicUsize::new(0),
    };
    queue.add("a".into());
    queue.add("b".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "struct",
            queue,
            Store::default(),
            reconciler,
            Arc::new(calls_tx),
        )
        .run_until(shutdown),
    );

    assert_eq!(calls_rx.recv().await, Some(1));
    assert_eq!(calls_rx.recv().await, Some(2));
    stop.send(()).unwrap();
    run.await.unwrap();
}

/// An error whose `Drop` panics, which makes a worker panic outside the reconciler.
#[derive(Debug, thiserror::Error)]
#[error("an error that panics when dropped")]
struct DropBomb;

impl Drop for DropBomb {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("DropBomb dropped");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn worker_restarted_after_panic() {
    let queue: WorkQueue<Key> = WorkQueue::new("restart");
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Key>();

    let reconcile = move |request: Request<String>, _ctx: Arc<()>| {
        let done_tx = done_tx.clone();
        async move {
            if &*request.key == "bomb" {
                return Err(DropBomb);
            }
            done_tx.send(request.key.clone()).unwrap();
            Ok(Action::Done)
        }
    };
    queue.add("bomb".into());
    queue.add("next".into());
    let (stop, shutdown) = trigger();
    let run = tokio::spawn(
        Controller::new(
            "restart",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(1)
        .run_until(shutdown),
    );

    let next = timeout(secs(10), done_rx.recv()).await;
    assert_eq!(
        next.expect("the restarted worker took the next key"),
        Some("next".into())
    );
    stop.send(()).unwrap();
    let report = run.await.unwrap();

    assert_eq!(report.workers_restarted, 1);
    assert_eq!(queue.stats().processing, 0, "the bomb key was released");
}

#[tokio::test(start_paused = true)]
async fn queue_shutdown_stops_controller() {
    let queue: WorkQueue<Key> = WorkQueue::new("external");
    let reconcile =
        |_request: Request<String>, _ctx: Arc<()>| async { Ok::<_, TestError>(Action::Done) };
    let run = tokio::spawn(
        Controller::new(
            "external",
            queue.clone(),
            Store::default(),
            reconcile,
            Arc::new(()),
        )
        .workers(3)
        .run_until(std::future::pending()),
    );
    tokio::task::yield_now().await;

    queue.shut_down();

    let report = timeout(secs(1), run).await.expect("run returned").unwrap();
    assert_eq!(report.cause, StopCause::QueueShutDown);
}

#[test]
#[should_panic(expected = "at least one worker")]
fn zero_workers_rejected() {
    let reconcile =
        |_request: Request<String>, _ctx: Arc<()>| async { Ok::<_, TestError>(Action::Done) };
    let _ = Controller::new(
        "zero",
        WorkQueue::new("zero"),
        Store::default(),
        reconcile,
        Arc::new(()),
    )
    .workers(0);
}

#[cfg(unix)]
#[tokio::test]
async fn shutdown_signal_on_sigterm() {
    let mut signal = Box::pin(shutdown_signal());
    // The first poll installs the handlers, so the SIGTERM below cannot kill the test process.
    assert!(futures::poll!(signal.as_mut()).is_pending());

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());

    let result = timeout(secs(10), signal).await.expect("signal received");
    result.expect("handlers installed");
}
