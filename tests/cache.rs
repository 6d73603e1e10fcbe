//! The cache and notify stages, driven through the writer without a source.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use informer::cache::{Store, Writer};
use informer::decode::{Json, Text};
use informer::metrics::Metrics;
use informer::notify::{Event, HandlerOptions};
use informer::source::{Batch, Change, Incarnation, Object};
use parking_lot::Mutex;
use tokio::sync::mpsc;

fn object(key: &str, revision: i64, created: i64, value: &str) -> Object<Bytes> {
    Object {
        key: Arc::from(key),
        revision,
        incarnation: Incarnation::CreateRevision(created),
        value: Bytes::from(value.to_owned()),
    }
}

fn put(key: &str, revision: i64, created: i64, value: &str) -> Change<Bytes> {
    Change::Put(object(key, revision, created, value))
}

fn text_writer() -> Writer<Bytes, Text> {
    Writer::new(Store::new("test", Metrics::default()), Text::default())
}

/// Describes an event as `kind key=value@revision`.
fn describe(event: &Event<String>) -> String {
    let kind = match event {
        Event::Added(_) => "added",
        Event::Updated { .. } => "updated",
        Event::Deleted(_) => "deleted",
        Event::DeletedFinalStateUnknown(_) => "deleted-unknown",
        Event::Resync(_) => "resync",
    };
    let object = event.object();
    format!("{kind} {}={}@{}", object.key, object.value, object.revision)
}

/// Registers a handler that forwards descriptions of its events.
fn record(store: &Store<String>, name: &str) -> mpsc::UnboundedReceiver<String> {
    let (sender, receiver) = mpsc::unbounded_channel();
    store.register(HandlerOptions::new(name), move |event: Event<String>| {
        let _ = sender.send(describe(&event));
    });
    receiver
}

async fn next_events(receiver: &mut mpsc::UnboundedReceiver<String>, count: usize) -> Vec<String> {
    let mut events = Vec::new();
    for _ in 0..count {
        let event = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .expect("an event within 5 s")
            .expect("the handler is alive");
        events.push(event);
    }
    events
}

fn initial_list(writer: &Writer<Bytes, Text>, objects: Vec<Object<Bytes>>, revision: i64) {
    let mut relist = writer.relist();
    relist.add_page(objects);
    relist.finish(revision);
}

#[tokio::test]
async fn relist_emits_exact_difference() {
    let writer = text_writer();
    initial_list(
        &writer,
        vec![
            object("a", 10, 10, "1"),
            object("b", 11, 11, "1"),
            object("x", 12, 12, "1"),
        ],
        40,
    );
    let mut events = record(writer.store(), "diff");
    assert_eq!(next_events(&mut events, 3).await.len(), 3);

    let mut relist = writer.relist();
    relist.add_page(vec![object("a", 10, 10, "1"), object("b", 45, 11, "2")]);
    relist.add_page(vec![object("c", 46, 46, "1")]);
    let summary = relist.finish(50);

    assert_eq!(summary.unchanged, 1);
    assert_eq!(summary.updated, 1);
    assert_eq!(summary.added, 1);
    assert_eq!(summary.deleted, 1);
    let got = next_events(&mut events, 3).await;
    assert_eq!(
        got,
        ["updated b=2@45", "added c=1@46", "deleted-unknown x=1@12"]
    );
    assert!(events.try_recv().is_err(), "no event for the unchanged key");
    assert_eq!(writer.store().revision(), 50);
    assert_eq!(writer.store().len(), 3);
}

#[tokio::test]
async fn relist_recreated_key_is_delete_then_add() {
    let writer = text_writer();
    initial_list(&writer, vec![object("k", 5, 5, "old")], 5);
    let mut events = record(writer.store(), "recreate");
    next_events(&mut events, 1).await;

    let mut relist = writer.relist();
    relist.add_page(vec![object("k", 9, 8, "new")]);
    relist.finish(9);

    assert_eq!(
        next_events(&mut events, 2).await,
        ["deleted-unknown k=old@5", "added k=new@9"]
    );
}

#[tokio::test]
async fn batch_applies_as_unit_and_drops_stale() {
    let writer = text_writer();
    initial_list(&writer, vec![], 1);
    let mut events = record(writer.store(), "batch");

    writer.apply(Batch {
        revision: 2,
        changes: vec![put("k1", 2, 2, "a"), put("k2", 2, 2, "b")],
    });
    assert_eq!(
        next_events(&mut events, 2).await,
        ["added k1=a@2", "added k2=b@2"]
    );
    writer.apply(Batch {
        revision: 3,
        changes: vec![
            put("k1", 2, 2, "stale"),
            Change::Delete {
                key: Arc::from("k2"),
                revision: 3,
            },
        ],
    });

    assert_eq!(next_events(&mut events, 1).await, ["deleted k2=b@2"]);
    assert_eq!(writer.store().get("k1").unwrap().value.as_str(), "a");
    assert!(writer.store().get("k2").is_none());
}

#[tokio::test]
async fn invalid_value_keeps_last_good_value() {
    let metrics = Metrics::default();
    let writer = Writer::new(
        Store::new("json", metrics.clone()),
        Json::<serde_json::Value>::new(),
    );
    let mut relist = writer.relist();
    relist.add_page(vec![
        object("good", 2, 2, r#"{"n":1}"#),
        object("bad", 3, 3, "{not json"),
    ]);
    relist.finish(3);
    writer.apply(Batch {
        revision: 4,
        changes: vec![put("good", 4, 2, "][")],
    });

    let store = writer.store();
    assert_eq!(store.get("good").unwrap().value["n"], 1);
    assert!(store.get("bad").is_none());
    assert_eq!(metrics.decode_errors("json"), 2);
    let mut errors: Vec<String> = store
        .decode_errors()
        .into_iter()
        .map(|(key, _)| key.to_string())
        .collect();
    errors.sort();
    assert_eq!(errors, ["bad", "good"]);

    // A later valid value clears the error.
    writer.apply(Batch {
        revision: 5,
        changes: vec![put("bad", 5, 3, r#"{"n":2}"#)],
    });
    assert_eq!(store.get("bad").unwrap().value["n"], 2);
    assert_eq!(store.decode_errors().len(), 1);
}

#[tokio::test]
async fn late_handler_gets_current_contents() {
    let writer = text_writer();
    initial_list(
        &writer,
        vec![object("a", 2, 2, "1"), object("b", 3, 3, "1")],
        3,
    );
    let mut events = record(writer.store(), "late");
    assert_eq!(
        next_events(&mut events, 2).await,
        ["added a=1@2", "added b=1@3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handler_coalesces_per_key() {
    let writer = text_writer();
    initial_list(&writer, vec![object("hot", 2, 2, "0")], 2);

    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle = {
        let gate = gate.clone();
        let seen = seen.clone();
        writer
            .store()
            .register(HandlerOptions::new("slow"), move |event: Event<String>| {
                // Blocks the handler's own task until the test opens the gate.
                while gate.try_acquire().is_err() {
                    std::thread::yield_now();
                }
                seen.lock().push(describe(&event));
            })
    };

    // Wait until the handler is blocked inside its first event.
    while handle.pending() > 0 {
        tokio::task::yield_now().await;
    }
    for revision in 3..1003 {
        writer.apply(Batch {
            revision,
            changes: vec![put("hot", revision, 2, &revision.to_string())],
        });
        assert!(handle.pending_keys() <= 1, "one pending entry per key");
    }
    gate.add_permits(10);
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.lock().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the handler catches up");

    let seen = seen.lock().clone();
    assert_eq!(seen, ["added hot=0@2", "updated hot=1002@1002"]);
}

#[tokio::test(start_paused = true)]
async fn resync_redelivers_cached_values() {
    let writer = text_writer();
    initial_list(&writer, vec![object("a", 2, 2, "1")], 2);
    let (sender, mut receiver) = mpsc::unbounded_channel();
    writer.store().register(
        HandlerOptions::new("resync").resync(Duration::from_secs(30)),
        move |event: Event<String>| {
            let _ = sender.send(describe(&event));
        },
    );
    let (never_sender, mut never) = mpsc::unbounded_channel();
    writer.store().register(
        HandlerOptions::new("no-resync"),
        move |event: Event<String>| {
            let _ = never_sender.send(describe(&event));
        },
    );

    assert_eq!(receiver.recv().await.unwrap(), "added a=1@2");
    assert_eq!(never.recv().await.unwrap(), "added a=1@2");
    let start = tokio::time::Instant::now();
    assert_eq!(receiver.recv().await.unwrap(), "resync a=1@2");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(receiver.recv().await.unwrap(), "resync a=1@2");
    assert!(
        never.try_recv().is_err(),
        "a handler without resync gets none"
    );
}

#[tokio::test]
async fn index_finds_values() {
    let writer = Writer::new(
        Store::new("index", Metrics::default()),
        Json::<serde_json::Value>::new(),
    );
    writer.store().add_index(
        "team",
        Arc::new(|value: &serde_json::Value| {
            value["team"]
                .as_str()
                .map(str::to_owned)
                .into_iter()
                .collect()
        }),
    );
    let mut relist = writer.relist();
    relist.add_page(vec![
        object("a", 2, 2, r#"{"team":"red"}"#),
        object("b", 3, 3, r#"{"team":"blue"}"#),
        object("c", 4, 4, r#"{"team":"red"}"#),
    ]);
    relist.finish(4);
    writer.apply(Batch {
        revision: 5,
        changes: vec![put("c", 5, 4, r#"{"team":"blue"}"#)],
    });

    let store = writer.store();
    let red: Vec<String> = store
        .by_index("team", "red")
        .unwrap()
        .into_iter()
        .map(|c| c.key.to_string())
        .collect();
    assert_eq!(red, ["a"]);
    assert_eq!(store.by_index("team", "blue").unwrap().len(), 2);
    assert!(store.by_index("owner", "x").is_err());
}

#[tokio::test]
async fn first_list_appears_whole() {
    let writer = text_writer();
    let mut events = record(writer.store(), "first");
    let mut relist = writer.relist();
    relist.add_page(vec![object("a", 2, 2, "1"), object("b", 3, 3, "1")]);
    relist.add_page(vec![object("c", 4, 4, "1")]);
    assert_eq!(
        writer.store().len(),
        0,
        "readers see none of an unfinished list"
    );
    assert_eq!(writer.store().revision(), 0);

    let summary = relist.finish(4);
    assert_eq!(summary.added, 3);
    assert_eq!(writer.store().len(), 3);
    assert_eq!(writer.store().revision(), 4);
    assert_eq!(
        next_events(&mut events, 3).await,
        ["added a=1@2", "added b=1@3", "added c=1@4"]
    );
}

#[tokio::test]
async fn dropped_first_list_leaves_cache_empty() {
    let writer = text_writer();
    let mut relist = writer.relist();
    relist.add_page(vec![object("a", 2, 2, "1")]);
    drop(relist);
    assert_eq!(writer.store().len(), 0);

    initial_list(&writer, vec![object("b", 3, 3, "1")], 3);
    assert_eq!(writer.store().keys(), [Arc::from("b")]);
}

#[tokio::test]
async fn batch_during_first_list_is_replaced() {
    let writer = text_writer();
    let mut events = record(writer.store(), "during");
    let mut relist = writer.relist();
    relist.add_page(vec![object("a", 2, 2, "1")]);
    writer.apply(Batch {
        revision: 3,
        changes: vec![put("z", 3, 3, "1")],
    });
    assert_eq!(next_events(&mut events, 1).await, ["added z=1@3"]);
    relist.add_page(vec![object("b", 4, 4, "1")]);
    let summary = relist.finish(5);

    assert_eq!(summary.added, 2);
    assert_eq!(summary.deleted, 1);
    let mut keys = writer.store().keys();
    keys.sort();
    assert_eq!(keys, [Arc::from("a"), Arc::from("b")]);
    assert_eq!(
        next_events(&mut events, 3).await,
        ["added a=1@2", "added b=1@4", "deleted-unknown z=1@3"]
    );
}

#[tokio::test]
async fn fallback_counts_decode_error_once() {
    let metrics = Metrics::default();
    let writer = Writer::new(
        Store::new("json", metrics.clone()),
        Json::<serde_json::Value>::new(),
    );
    let mut relist = writer.relist();
    relist.add_page(vec![object("bad", 2, 2, "{not json")]);
    writer.apply(Batch {
        revision: 3,
        changes: vec![put("z", 3, 3, r#"{"n":1}"#)],
    });
    let summary = relist.finish(3);

    assert_eq!(summary.invalid, 1);
    assert_eq!(writer.store().decode_errors().len(), 1);
    assert_eq!(metrics.decode_errors("json"), 1, "one bad value, one count");
}

#[tokio::test]
async fn retried_first_list_counts_decode_error_once() {
    let metrics = Metrics::default();
    let writer = Writer::new(
        Store::new("json", metrics.clone()),
        Json::<serde_json::Value>::new(),
    );
    let mut failed = writer.relist();
    failed.add_page(vec![object("bad", 2, 2, "{not json")]);
    drop(failed);
    assert!(writer.store().decode_errors().is_empty());

    let mut relist = writer.relist();
    relist.add_page(vec![object("bad", 2, 2, "{not json")]);
    relist.finish(2);
    assert_eq!(writer.store().decode_errors().len(), 1);
    assert_eq!(metrics.decode_errors("json"), 1, "one bad value, one count");
}

#[tokio::test]
async fn handler_registered_during_first_list() {
    let writer = text_writer();
    let mut relist = writer.relist();
    relist.add_page(vec![object("a", 2, 2, "1")]);
    let mut events = record(writer.store(), "during");
    relist.add_page(vec![object("b", 3, 3, "1")]);
    relist.finish(3);

    assert_eq!(
        next_events(&mut events, 2).await,
        ["added a=1@2", "added b=1@3"]
    );
    let extra = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    assert!(extra.is_err(), "no event twice: {extra:?}");
}

#[tokio::test]
async fn index_added_during_first_list() {
    let writer = Writer::new(
        Store::new("index", Metrics::default()),
        Json::<serde_json::Value>::new(),
    );
    let mut relist = writer.relist();
    relist.add_page(vec![object("a", 2, 2, r#"{"team":"red"}"#)]);
    writer.store().add_index(
        "team",
        Arc::new(|value: &serde_json::Value| {
            value["team"]
                .as_str()
                .map(str::to_owned)
                .into_iter()
                .collect()
        }),
    );
    relist.add_page(vec![object("b", 3, 3, r#"{"team":"red"}"#)]);
    relist.finish(3);

    let mut red: Vec<String> = writer
        .store()
        .by_index("team", "red")
        .unwrap()
        .into_iter()
        .map(|cached| cached.key.to_string())
        .collect();
    red.sort();
    assert_eq!(red, ["a", "b"]);
}

#[tokio::test]
async fn large_batch_of_one_key_merges() {
    let writer = text_writer();
    // The handler's task does not run before the test awaits, so the buffer is not drained.
    let handle = writer
        .store()
        .register(HandlerOptions::new("lagging"), |_event: Event<String>| {});
    let changes = (1..=1_500)
        .map(|revision| put("hot", revision, 1, &revision.to_string()))
        .collect();
    writer.apply(Batch {
        revision: 1_500,
        changes,
    });

    assert_eq!(handle.pending_keys(), 1, "one key waits");
    assert_eq!(handle.pending(), 1, "its changes merge into one event");
}
