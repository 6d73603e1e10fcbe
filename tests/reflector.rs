//! The reflector's state machine against a scripted source, under tokio's paused clock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use informer::decode::Text;
use informer::metrics::Metrics;
use informer::reflector::{Phase, Reflector};
use informer::source::{
    Batch, Change, ErrorClass, Incarnation, ListRequest, Object, Page, Revision, Source,
    SourceError, WatchMessage, WatchStream,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One scripted reply to a list page request.
enum ListReply {
    Page(Page<Bytes>),
    Fail(ErrorClass),
}

/// One scripted reply to a watch request: an error, or a stream fed by the test.
enum WatchReply {
    Stream(mpsc::UnboundedReceiver<Result<WatchMessage<Bytes>, SourceError>>),
    Fail(ErrorClass),
}

#[derive(Default)]
struct Script {
    lists: VecDeque<ListReply>,
    watches: VecDeque<WatchReply>,
    /// (time, request) of every call, for assertions.
    calls: Vec<(Instant, String)>,
}

#[derive(Clone)]
struct ScriptedSource {
    name: Arc<str>,
    script: Arc<Mutex<Script>>,
    progress: Option<Duration>,
}

fn error(class: ErrorClass, name: &Arc<str>) -> SourceError {
    match class {
        ErrorClass::Expired => SourceError::Expired {
            source_name: name.clone(),
            detail: "revision compacted".into(),
        },
        ErrorClass::Transient => SourceError::Transient {
            source_name: name.clone(),
            detail: "connection refused".into(),
            cause: None,
        },
        ErrorClass::Permanent => SourceError::Permanent {
            source_name: name.clone(),
            detail: "permission denied".into(),
            action: "grant read access".into(),
            cause: None,
        },
    }
}

impl Source for ScriptedSource {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        let reply = {
            let mut script = self.script.lock();
            script
                .calls
                .push((Instant::now(), format!("list {:?}", request.revision)));
            script.lists.pop_front()
        };
        match reply {
            Some(ListReply::Page(page)) => Ok(page),
            Some(ListReply::Fail(class)) => Err(error(class, &self.name)),
            None => std::future::pending().await,
        }
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        let reply = {
            let mut script = self.script.lock();
            script.calls.push((Instant::now(), format!("watch {from}")));
            script.watches.pop_front()
        };
        match reply {
            Some(WatchReply::Stream(receiver)) => Ok(futures::stream::unfold(
                receiver,
                |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
            )
            .boxed()),
            Some(WatchReply::Fail(class)) => Err(error(class, &self.name)),
            None => std::future::pending().await,
        }
    }

    fn progress_interval(&self) -> Option<Duration> {
        self.progress
    }
}

fn object(key: &str, revision: Revision, value: &str) -> Object<Bytes> {
    Object {
        key: Arc::from(key),
        revision,
        incarnation: Incarnation::CreateRevision(revision),
        value: Bytes::from(value.to_owned()),
    }
}

fn page(revision: Revision, objects: Vec<Object<Bytes>>) -> ListReply {
    ListReply::Page(Page {
        revision,
        objects,
        next: None,
    })
}

type Feed = mpsc::UnboundedSender<Result<WatchMessage<Bytes>, SourceError>>;

fn stream() -> (Feed, WatchReply) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (sender, WatchReply::Stream(receiver))
}

fn source(script: Script) -> ScriptedSource {
    ScriptedSource {
        name: Arc::from("scripted"),
        script: Arc::new(Mutex::new(script)),
        progress: None,
    }
}

fn calls(source: &ScriptedSource) -> Vec<String> {
    source
        .script
        .lock()
        .calls
        .iter()
        .map(|(_, call)| call.clone())
        .collect()
}

/// Lets spawned tasks run until they wait on something.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn expired_watch_relists_once() {
    let (feed, watch) = stream();
    let (_feed2, watch2) = stream();
    let source = source(Script {
        lists: VecDeque::from([
            page(40, vec![object("a", 10, "1"), object("x", 12, "1")]),
            page(50, vec![object("a", 10, "1")]),
        ]),
        watches: VecDeque::from([watch, watch2]),
        ..Script::default()
    });
    let metrics = Metrics::default();
    let reflector = Reflector::with_metrics(source.clone(), Text::default(), metrics.clone());
    let store = reflector.store();
    let health = reflector.health();
    tokio::spawn(reflector.run());

    health.wait_ready().await.unwrap();
    feed.send(Err(error(ErrorClass::Expired, &source.name)))
        .unwrap();
    health
        .wait_for(|h| h.synced && h.in_sync && h.revision == 50)
        .await
        .unwrap();

    assert_eq!(
        calls(&source),
        ["list None", "watch 41", "list None", "watch 51"]
    );
    assert_eq!(metrics.relists("scripted"), 1);
    assert!(store.get("x").is_none());
    assert!(store.get("a").is_some());
}

#[tokio::test(start_paused = true)]
async fn transient_error_resumes_after_applied() {
    let (feed, watch) = stream();
    let (_feed2, watch2) = stream();
    let source = source(Script {
        lists: VecDeque::from([page(5, vec![])]),
        watches: VecDeque::from([watch, WatchReply::Fail(ErrorClass::Transient), watch2]),
        ..Script::default()
    });
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    let store = reflector.store();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    feed.send(Ok(WatchMessage::Batch(Batch {
        revision: 7,
        changes: vec![Change::Put(object("k", 7, "v"))],
    })))
    .unwrap();
    feed.send(Err(error(ErrorClass::Transient, &source.name)))
        .unwrap();
    settle().await;
    let start = Instant::now();
    health
        .wait_for(|h| h.phase == Phase::Watching && h.consecutive_failures == 2)
        .await
        .unwrap();
    health
        .wait_for(|h| h.consecutive_failures == 0 || h.in_sync)
        .await
        .unwrap();

    let log = source.script.lock().calls.clone();
    let names: Vec<&str> = log.iter().map(|(_, call)| call.as_str()).collect();
    assert_eq!(names, ["list None", "watch 6", "watch 8", "watch 8"]);
    // Two failures in a row wait 640-800 ms, then 1280-1600 ms.
    let gap1 = log[2].0 - log[1].0;
    let gap2 = log[3].0 - log[2].0;
    assert!(
        gap1 >= Duration::from_millis(640) && gap1 <= Duration::from_millis(800),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1280) && gap2 <= Duration::from_millis(1600),
        "{gap2:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(store.get("k").unwrap().revision, 7);
}

#[tokio::test(start_paused = true)]
async fn duplicate_batches_are_dropped() {
    let (feed, watch) = stream();
    let source = source(Script {
        lists: VecDeque::from([page(10, vec![object("k", 10, "listed")])]),
        watches: VecDeque::from([watch]),
        ..Script::default()
    });
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    let store = reflector.store();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    for (revision, value) in [(9, "old"), (10, "same"), (12, "new"), (11, "older")] {
        feed.send(Ok(WatchMessage::Batch(Batch {
            revision,
            changes: vec![Change::Put(Object {
                incarnation: Incarnation::CreateRevision(10),
                ..object("k", revision, value)
            })],
        })))
        .unwrap();
    }
    health.wait_for(|h| h.revision == 12).await.unwrap();
    settle().await;

    let cached = store.get("k").unwrap();
    assert_eq!(cached.value.as_str(), "new");
    assert_eq!(store.revision(), 12);
}

#[tokio::test(start_paused = true)]
async fn progress_moves_resume_forward() {
    let (feed, watch) = stream();
    let (_feed2, watch2) = stream();
    let source = source(Script {
        lists: VecDeque::from([page(10, vec![])]),
        watches: VecDeque::from([watch, watch2]),
        ..Script::default()
    });
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    feed.send(Ok(WatchMessage::Progress(20))).unwrap();
    feed.send(Ok(WatchMessage::Progress(15))).unwrap();
    feed.send(Err(error(ErrorClass::Transient, &source.name)))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(calls(&source), ["list None", "watch 11", "watch 21"]);
}

#[tokio::test(start_paused = true)]
async fn permanent_error_clears_readiness() {
    let source = source(Script {
        lists: VecDeque::from([ListReply::Fail(ErrorClass::Permanent), page(3, vec![])]),
        watches: VecDeque::from([stream().1]),
        ..Script::default()
    });
    let metrics = Metrics::default();
    let reflector = Reflector::with_metrics(source.clone(), Text::default(), metrics.clone());
    let health = reflector.health();
    tokio::spawn(reflector.run());

    let failed = health.wait_for(|h| h.last_error.is_some()).await.unwrap();
    assert!(!failed.ready());
    let last = failed.last_error.unwrap();
    assert_eq!(last.class, ErrorClass::Permanent);
    assert!(last.message.contains("scripted"), "{}", last.message);
    assert!(
        last.message.contains("grant read access"),
        "{}",
        last.message
    );
    assert_eq!(metrics.source_errors("scripted", ErrorClass::Permanent), 1);

    // Retried at the capped delay, then ready.
    let start = Instant::now();
    health.wait_ready().await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(24),
        "{:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() <= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn closed_watch_backs_off() {
    let (feed1, watch1) = stream();
    let (feed2, watch2) = stream();
    let (_feed3, watch3) = stream();
    let source = source(Script {
        lists: VecDeque::from([page(1, vec![])]),
        watches: VecDeque::from([watch1, watch2, watch3]),
        ..Script::default()
    });
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    drop(feed1);
    drop(feed2);
    tokio::time::sleep(Duration::from_secs(10)).await;

    let log = source.script.lock().calls.clone();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[2].0 - log[1].0 >= Duration::from_millis(640));
    assert!(log[3].0 - log[2].0 >= Duration::from_millis(1280));
}

#[tokio::test(start_paused = true)]
async fn silent_watch_is_stalled() {
    let (_feed, watch) = stream();
    let (_feed2, watch2) = stream();
    let mut source = source(Script {
        lists: VecDeque::from([page(1, vec![])]),
        watches: VecDeque::from([watch, watch2]),
        ..Script::default()
    });
    source.progress = Some(Duration::from_secs(5));
    let metrics = Metrics::default();
    let reflector = Reflector::with_metrics(source.clone(), Text::default(), metrics.clone());
    let health = reflector.health();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    let start = Instant::now();
    health.wait_for(|h| h.last_error.is_some()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(metrics.source_errors("scripted", ErrorClass::Transient), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls(&source), ["list None", "watch 2", "watch 2"]);
}

#[tokio::test(start_paused = true)]
async fn long_outage_turns_out_of_sync() {
    let (feed, watch) = stream();
    let source = source(Script {
        lists: VecDeque::from([page(1, vec![])]),
        watches: VecDeque::from([
            watch,
            WatchReply::Fail(ErrorClass::Transient),
            WatchReply::Fail(ErrorClass::Transient),
            WatchReply::Fail(ErrorClass::Transient),
            WatchReply::Fail(ErrorClass::Transient),
            WatchReply::Fail(ErrorClass::Transient),
        ]),
        ..Script::default()
    });
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    let start = Instant::now();
    feed.send(Err(error(ErrorClass::Transient, &source.name)))
        .unwrap();
    settle().await;
    assert!(health.get().in_sync, "a short outage keeps in_sync");
    health.wait_for(|h| !h.in_sync).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(health.get().synced);
}

#[tokio::test(start_paused = true)]
async fn silent_watch_turns_out_of_sync() {
    let (feed, watch) = stream();
    let mut source = source(Script {
        lists: VecDeque::from([page(1, vec![])]),
        watches: VecDeque::from([watch]),
        ..Script::default()
    });
    source.progress = Some(Duration::from_secs(5));
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    // Silence longer than out_of_sync_after (10 s) but shorter than the stall limit (15 s).
    let start = Instant::now();
    health.wait_for(|h| !h.in_sync).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(health.get().last_error.is_none(), "not yet a failure");

    feed.send(Ok(WatchMessage::Progress(5))).unwrap();
    let recovered = health.wait_for(|h| h.in_sync).await.unwrap();
    assert_eq!(recovered.revision, 5);
    assert_eq!(
        calls(&source),
        ["list None", "watch 2"],
        "no reconnect needed"
    );
}

#[tokio::test(start_paused = true)]
async fn progress_clears_last_error() {
    let (_feed1, watch1) = stream();
    let (feed2, watch2) = stream();
    let mut source = source(Script {
        lists: VecDeque::from([page(1, vec![])]),
        watches: VecDeque::from([watch1, watch2]),
        ..Script::default()
    });
    source.progress = Some(Duration::from_secs(5));
    let reflector = Reflector::new(source.clone(), Text::default());
    let health = reflector.health();
    tokio::spawn(reflector.run());
    health.wait_ready().await.unwrap();

    // The first watch stalls and fails; the second one only sends progress.
    health.wait_for(|h| h.last_error.is_some()).await.unwrap();
    health
        .wait_for(|h| h.phase == Phase::Watching)
        .await
        .unwrap();
    feed2.send(Ok(WatchMessage::Progress(3))).unwrap();
    let healthy = health
        .wait_for(|h| h.last_error.is_none() && h.revision == 3)
        .await
        .unwrap();
    assert_eq!(healthy.consecutive_failures, 0);
    assert!(healthy.ready());
}

/// A source with two list pages that reports when the second page is requested. Its first
/// watch fails as expired, so a relist follows the first list, with new values.
struct TwoPages {
    name: Arc<str>,
    second_requested: std::sync::mpsc::SyncSender<()>,
    lists: std::sync::atomic::AtomicUsize,
    watches: std::sync::atomic::AtomicUsize,
}

impl Source for TwoPages {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        let second_list = match request.continue_from {
            None => self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0,
            Some(_) => self.lists.load(std::sync::atomic::Ordering::SeqCst) > 1,
        };
        let (revision, suffix) = if second_list { (20, "b") } else { (7, "") };
        match request.continue_from {
            None => Ok(Page {
                revision,
                objects: vec![object("a", revision - 2, &format!("1{suffix}"))],
                next: Some(informer::source::ContinueToken(b"b".to_vec())),
            }),
            Some(_) => {
                let _ = self.second_requested.try_send(());
                Ok(Page {
                    revision,
                    objects: vec![object("b", revision - 1, &format!("2{suffix}"))],
                    next: None,
                })
            }
        }
    }

    async fn watch(&self, _from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        if self
            .watches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            return Err(error(ErrorClass::Expired, &self.name));
        }
        std::future::pending().await
    }
}

/// Decodes text. On the first list it blocks on the first page's value until the second page
/// is requested. On the relist it records whether the second page was requested meanwhile.
struct WatchPageOrder {
    second_requested: Mutex<std::sync::mpsc::Receiver<()>>,
    first_list_read_ahead: Arc<std::sync::atomic::AtomicBool>,
    relist_read_ahead: Arc<std::sync::atomic::AtomicBool>,
}

impl informer::decode::Decoder<Bytes> for WatchPageOrder {
    type Output = String;

    fn decode(
        &self,
        key: &Arc<str>,
        value: &Bytes,
    ) -> Result<String, informer::decode::DecodeError> {
        let receiver = self.second_requested.lock();
        match (&**key, &value[..]) {
            ("a", b"1") => {
                let requested = receiver.recv_timeout(Duration::from_secs(5)).is_ok();
                self.first_list_read_ahead
                    .store(requested, std::sync::atomic::Ordering::SeqCst);
            }
            ("a", b"1b") => {
                // Long enough for a request sent ahead to arrive.
                let requested = receiver.recv_timeout(Duration::from_millis(300)).is_ok();
                self.relist_read_ahead
                    .store(requested, std::sync::atomic::Ordering::SeqCst);
            }
            _ => {}
        }
        Ok(String::from_utf8_lossy(value).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_list_reads_ahead_relist_does_not() {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let first_list_read_ahead = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relist_read_ahead = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reflector = Reflector::new(
        TwoPages {
            name: Arc::from("two-pages"),
            second_requested: sender,
            lists: Default::default(),
            watches: Default::default(),
        },
        WatchPageOrder {
            second_requested: Mutex::new(receiver),
            first_list_read_ahead: first_list_read_ahead.clone(),
            relist_read_ahead: relist_read_ahead.clone(),
        },
    )
    .config(informer::reflector::ReflectorConfig {
        backoff: informer::reflector::BackoffConfig {
            initial: Duration::from_millis(1),
            ..Default::default()
        },
        ..Default::default()
    });
    let store = reflector.store();
    let task = reflector.spawn();
    let relisted = async {
        while store.get("b").is_none_or(|b| b.value.as_str() != "2b") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), relisted)
        .await
        .expect("the relist finishes");
    task.abort();

    assert!(
        first_list_read_ahead.load(std::sync::atomic::Ordering::SeqCst),
        "the first list requested the second page while decoding the first"
    );
    assert!(
        !relist_read_ahead.load(std::sync::atomic::Ordering::SeqCst),
        "the relist requested the second page only after applying the first"
    );
    assert_eq!(store.get("a").unwrap().value.as_str(), "1b");
}

/// Counts the page fetches that started and the ones whose future was dropped.
#[derive(Default)]
struct FetchCounts {
    started: std::sync::atomic::AtomicUsize,
    dropped: std::sync::atomic::AtomicUsize,
    first_pages: std::sync::atomic::AtomicUsize,
}

struct DropCount(Arc<FetchCounts>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0
            .dropped
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A source whose first page arrives at once and whose second page never does, or panics.
struct StuckSecondPage {
    name: Arc<str>,
    counts: Arc<FetchCounts>,
    panic: bool,
}

impl Source for StuckSecondPage {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        use std::sync::atomic::Ordering::SeqCst;
        if request.continue_from.is_none() {
            self.counts.first_pages.fetch_add(1, SeqCst);
            return Ok(Page {
                revision: 5,
                objects: vec![object("a", 5, "1")],
                next: Some(informer::source::ContinueToken(b"b".to_vec())),
            });
        }
        self.counts.started.fetch_add(1, SeqCst);
        let _guard = DropCount(self.counts.clone());
        tokio::task::yield_now().await;
        if self.panic {
            panic!("second page failed");
        }
        std::future::pending().await
    }

    async fn watch(&self, _from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        std::future::pending().await
    }
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn aborted_reflector_cancels_page_fetch() {
    use std::sync::atomic::Ordering::SeqCst;
    let counts = Arc::new(FetchCounts::default());
    let reflector = Reflector::new(
        StuckSecondPage {
            name: Arc::from("stuck"),
            counts: counts.clone(),
            panic: false,
        },
        Text::default(),
    );
    let task = reflector.spawn();
    wait_for("the second page", || counts.started.load(SeqCst) == 1).await;

    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for("the fetch to be dropped", || {
        counts.dropped.load(SeqCst) == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_page_fetch() {
    use std::sync::atomic::Ordering::SeqCst;
    let counts = Arc::new(FetchCounts::default());
    let reflector = Reflector::new(
        StuckSecondPage {
            name: Arc::from("stuck"),
            counts: counts.clone(),
            panic: false,
        },
        Text::default(),
    );
    let health = reflector.health();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reflector.run_until(async move {
        let _ = stopped.await;
    }));
    wait_for("the second page", || counts.started.load(SeqCst) == 1).await;

    stop.send(()).unwrap();
    task.await.unwrap();
    assert_eq!(health.get().phase, Phase::Stopped);
    wait_for("the fetch to be dropped", || {
        counts.dropped.load(SeqCst) == 1
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn read_ahead_page_times_out() {
    use std::sync::atomic::Ordering::SeqCst;
    let counts = Arc::new(FetchCounts::default());
    let reflector = Reflector::new(
        StuckSecondPage {
            name: Arc::from("stuck"),
            counts: counts.clone(),
            panic: false,
        },
        Text::default(),
    )
    .config(informer::reflector::ReflectorConfig {
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let health = reflector.health();
    let store = reflector.store();
    let task = reflector.spawn();
    wait_for("a second list", || counts.first_pages.load(SeqCst) == 2).await;
    task.abort();

    let last_error = health.get().last_error.expect("the timeout is recorded");
    assert!(
        last_error
            .message
            .contains("list page timed out after 1000 ms"),
        "{}",
        last_error.message
    );
    assert_eq!(counts.dropped.load(SeqCst), 1, "the timed out fetch ended");
    assert!(
        store.is_empty(),
        "a failed first list leaves the cache empty"
    );
}

#[tokio::test]
async fn panicking_page_fails_reflector() {
    let counts = Arc::new(FetchCounts::default());
    let reflector = Reflector::new(
        StuckSecondPage {
            name: Arc::from("stuck"),
            counts: counts.clone(),
            panic: true,
        },
        Text::default(),
    );
    let error = reflector.spawn().await.unwrap_err();
    assert!(error.is_panic());
    let payload = error.into_panic();
    assert_eq!(
        payload.downcast_ref::<&str>().copied(),
        Some("second page failed")
    );
}
