//! The in-memory source through the `Source` contract: paged lists pinned at one revision,
//! watches that replay history and follow live writes, compaction, and injected faults.

use std::num::NonZeroU64;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use informer::source::memory::{DEFAULT_PROGRESS_INTERVAL, MemorySource, MemoryStore, Op};
use informer::source::{
    Batch, Change, ContinueToken, ErrorClass, Incarnation, ListRequest, Object, Page, Revision,
    Source, SourceError, WatchMessage, WatchStream,
};
use tokio::time::{Instant, timeout};

const PREFIX: &str = "/app/";

fn first_page(limit: usize) -> ListRequest {
    ListRequest {
        revision: None,
        continue_from: None,
        limit,
    }
}

fn next_page(page: &Page<Bytes>, limit: usize) -> ListRequest {
    ListRequest {
        revision: Some(page.revision),
        continue_from: page.next.clone(),
        limit,
    }
}

fn keys(objects: &[Object<Bytes>]) -> Vec<&str> {
    objects.iter().map(|object| object.key.as_ref()).collect()
}

fn change_keys(batch: &Batch<Bytes>) -> Vec<&str> {
    batch
        .changes
        .iter()
        .map(|change| change.key().as_ref())
        .collect()
}

fn put_object(change: &Change<Bytes>) -> &Object<Bytes> {
    match change {
        Change::Put(object) => object,
        Change::Delete { key, .. } => panic!("expected a put, got a delete of {key}"),
    }
}

async fn next_message(stream: &mut WatchStream<Bytes>) -> WatchMessage<Bytes> {
    match stream.next().await {
        Some(Ok(message)) => message,
        Some(Err(error)) => panic!("watch failed: {error}"),
        None => panic!("watch ended"),
    }
}

async fn next_batch(stream: &mut WatchStream<Bytes>) -> Batch<Bytes> {
    match next_message(stream).await {
        WatchMessage::Batch(batch) => batch,
        WatchMessage::Progress(revision) => panic!("expected a batch, got progress {revision}"),
    }
}

async fn next_error(stream: &mut WatchStream<Bytes>) -> SourceError {
    match stream.next().await {
        Some(Err(error)) => error,
        Some(Ok(message)) => panic!("expected an error, got {message:?}"),
        None => panic!("expected an error, the watch ended"),
    }
}

async fn open_watch(source: &MemorySource, from: Revision) -> WatchStream<Bytes> {
    match source.watch(from).await {
        Ok(stream) => stream,
        Err(error) => panic!("watch from {from} failed: {error}"),
    }
}

async fn list_error(source: &MemorySource, request: ListRequest) -> SourceError {
    match source.list_page(request).await {
        Ok(page) => panic!("expected an error, got a page at {}", page.revision),
        Err(error) => error,
    }
}

async fn watch_error(source: &MemorySource, from: Revision) -> SourceError {
    match source.watch(from).await {
        Ok(_) => panic!("expected the watch from {from} to fail"),
        Err(error) => error,
    }
}

#[test]
fn source_name_and_interval() {
    let source = MemorySource::new(MemoryStore::new(), PREFIX);
    assert_eq!(source.name().as_ref(), r#"memory prefix "/app/""#);
    assert_eq!(source.prefix(), PREFIX);
    assert_eq!(source.progress_interval(), Some(DEFAULT_PROGRESS_INTERVAL));

    let quiet = source.clone().with_progress_interval(None);
    assert_eq!(quiet.progress_interval(), None);
    let zero = source.clone().with_progress_interval(Some(Duration::ZERO));
    assert_eq!(zero.progress_interval(), None);
}

#[tokio::test(start_paused = true)]
async fn list_empty() {
    let source = MemorySource::new(MemoryStore::new(), PREFIX);
    let page = source.list_page(first_page(10)).await.unwrap();
    assert_eq!(page.revision, 1);
    assert!(page.objects.is_empty());
    assert!(page.next.is_none());
}

#[tokio::test(start_paused = true)]
async fn list_pinned_across_pages() {
    let store = MemoryStore::new();
    for key in ["a", "b", "c", "d", "e"] {
        store.put(format!("/app/{key}"), "v1");
    }
    store.put("/other/x", "v1");
    let source = MemorySource::new(store.clone(), PREFIX);

    let first = source.list_page(first_page(2)).await.unwrap();
    let pinned = first.revision;
    assert_eq!(pinned, store.revision());
    assert_eq!(keys(&first.objects), ["/app/a", "/app/b"]);
    assert_eq!(first.next, Some(ContinueToken(b"/app/c".to_vec())));

    // Writes between pages: none of them may show in the later pages.
    store.put("/app/c", "v2");
    store.delete("/app/d");
    store.put("/app/bb", "v1");
    store.put("/app/f", "v1");
    store.delete("/app/e");

    let second = source.list_page(next_page(&first, 2)).await.unwrap();
    assert_eq!(second.revision, pinned);
    assert_eq!(keys(&second.objects), ["/app/c", "/app/d"]);
    assert_eq!(second.objects[0].value, Bytes::from("v1"));
    assert!(second.objects[0].revision <= pinned);

    let third = source.list_page(next_page(&second, 2)).await.unwrap();
    assert_eq!(third.revision, pinned);
    assert_eq!(keys(&third.objects), ["/app/e"]);
    assert!(third.next.is_none());

    let current = source.list_page(first_page(0)).await.unwrap();
    assert_eq!(current.revision, store.revision());
    assert_eq!(
        keys(&current.objects),
        ["/app/a", "/app/b", "/app/bb", "/app/c", "/app/f"]
    );
}

#[tokio::test(start_paused = true)]
async fn list_objects_carry_versions() {
    let store = MemoryStore::new();
    let created = store.put("/app/a", "1");
    let modified = store.put("/app/a", "2");
    let source = MemorySource::new(store, PREFIX);

    let page = source.list_page(first_page(10)).await.unwrap();
    let object = &page.objects[0];
    assert_eq!(object.revision, modified);
    assert_eq!(object.incarnation, Incarnation::CreateRevision(created));
    assert_eq!(object.value, Bytes::from("2"));
}

#[tokio::test(start_paused = true)]
async fn list_limit_zero_unlimited() {
    let store = MemoryStore::new();
    for i in 0..50 {
        store.put(format!("/app/{i:02}"), "v");
    }
    let source = MemorySource::new(store, PREFIX);
    let page = source.list_page(first_page(0)).await.unwrap();
    assert_eq!(page.objects.len(), 50);
    assert!(page.next.is_none());
}

#[tokio::test(start_paused = true)]
async fn list_compacted_expired() {
    let store = MemoryStore::new();
    for key in ["a", "b", "c"] {
        store.put(format!("/app/{key}"), "v1");
    }
    let source = MemorySource::new(store.clone(), PREFIX);
    let first = source.list_page(first_page(1)).await.unwrap();

    store.put("/app/a", "v2");
    store.compact(store.revision()).unwrap();

    let error = list_error(&source, next_page(&first, 1)).await;
    assert_eq!(error.class(), ErrorClass::Expired);
    assert!(error.to_string().contains("was compacted at"), "{error}");

    // A list at exactly the compact revision still works.
    let at_compaction = ListRequest {
        revision: Some(store.compact_revision()),
        continue_from: None,
        limit: 0,
    };
    let page = source.list_page(at_compaction).await.unwrap();
    assert_eq!(page.objects.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn list_invalid_requests() {
    let store = MemoryStore::new();
    store.put("/app/a", "v");
    let source = MemorySource::new(store, PREFIX);

    let future = ListRequest {
        revision: Some(99),
        continue_from: None,
        limit: 10,
    };
    let error = list_error(&source, future).await;
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(error.to_string().contains("in the future"), "{error}");

    let foreign_token = ListRequest {
        revision: None,
        continue_from: Some(ContinueToken(b"/other/a".to_vec())),
        limit: 10,
    };
    let error = list_error(&source, foreign_token).await;
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(
        error.to_string().contains("invalid continue token"),
        "{error}"
    );

    let binary_token = ListRequest {
        revision: None,
        continue_from: Some(ContinueToken(vec![0xff, 0xfe])),
        limit: 10,
    };
    let error = list_error(&source, binary_token).await;
    assert_eq!(error.class(), ErrorClass::Permanent);
}

#[tokio::test(start_paused = true)]
async fn watch_txn_one_batch() {
    let store = MemoryStore::new();
    store.put("/app/gone", "v");
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut watch = open_watch(&source, store.revision() + 1).await;

    let revision = store
        .txn(vec![
            Op::put("/app/b", "1"),
            Op::put("/other/x", "1"),
            Op::delete("/app/gone"),
            Op::put("/app/a", "1"),
        ])
        .unwrap();

    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, revision);
    assert_eq!(change_keys(&batch), ["/app/b", "/app/gone", "/app/a"]);
    assert!(matches!(batch.changes[1], Change::Delete { .. }));
    for change in &batch.changes {
        assert_eq!(change.revision(), revision);
    }

    // Nothing else is pending: the next message is the progress at the txn's revision.
    assert!(matches!(
        next_message(&mut watch).await,
        WatchMessage::Progress(progress) if progress == revision
    ));
}

#[tokio::test(start_paused = true)]
async fn watch_prefix_filter() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut watch = open_watch(&source, 0).await;

    store.put("/other/a", "1");
    store.put("/ap", "1");
    let matching = store.put("/app/a", "1");

    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, matching);
    assert_eq!(change_keys(&batch), ["/app/a"]);
}

#[tokio::test(start_paused = true)]
async fn watch_from_zero_starts_now() {
    let store = MemoryStore::new();
    store.put("/app/old", "1");
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut watch = open_watch(&source, 0).await;

    let new = store.put("/app/new", "1");
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, new);
    assert_eq!(change_keys(&batch), ["/app/new"]);
}

#[tokio::test(start_paused = true)]
async fn watch_future_revision_waits() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let from = store.revision() + 3;
    let mut watch = open_watch(&source, from).await;

    store.put("/app/a", "1");
    store.put("/app/b", "1");
    let third = store.put("/app/c", "1");
    assert_eq!(third, from);

    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, from);
    assert_eq!(change_keys(&batch), ["/app/c"]);
}

#[tokio::test(start_paused = true)]
async fn watch_catch_up_then_live() {
    let store = MemoryStore::new();
    for i in 0..50 {
        store.put(format!("/app/{i:04}"), format!("{i}"));
    }
    let source = MemorySource::new(store.clone(), PREFIX).with_progress_interval(None);
    let from = 20;
    let mut watch = open_watch(&source, from).await;

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 50..300 {
                store.put(format!("/app/{i:04}"), format!("{i}"));
                tokio::task::yield_now().await;
            }
        })
    };

    // 300 puts from revision 2 on.
    let last = 301;
    let mut expected = from;
    while expected <= last {
        let batch = next_batch(&mut watch).await;
        assert_eq!(batch.revision, expected, "gap or duplicate");
        assert_eq!(batch.changes.len(), 1);
        let object = put_object(&batch.changes[0]);
        let index = expected - 2;
        assert_eq!(object.key.as_ref(), format!("/app/{index:04}"));
        assert_eq!(object.value, Bytes::from(index.to_string()));
        expected += 1;
    }
    writer.await.unwrap();
    assert_eq!(store.revision(), last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_concurrent_writers() {
    const WRITERS: usize = 3;
    const WRITES: usize = 2000;

    let store = MemoryStore::new();
    for i in 0..100 {
        store.put(format!("/app/seed/{i}"), "v");
    }
    let source = MemorySource::new(store.clone(), PREFIX).with_progress_interval(None);
    let from = 50;
    let mut watch = open_watch(&source, from).await;

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..WRITES {
                    if i % 3 == 2 {
                        store
                            .txn(vec![
                                Op::put(format!("/app/{writer}/{i}"), "v"),
                                Op::put(format!("/app/{writer}/{i}/b"), "v"),
                            ])
                            .unwrap();
                    } else {
                        store.put(format!("/app/{writer}/{i}"), "v");
                    }
                }
            })
        })
        .collect();

    // Read while the writers run, so the watch switches between replay and live reads.
    let last = 101 + (WRITERS * WRITES) as Revision;
    let collect = async {
        let mut expected = from;
        while expected <= last {
            let batch = next_batch(&mut watch).await;
            assert_eq!(batch.revision, expected, "gap or duplicate");
            let keys = change_keys(&batch);
            match keys.as_slice() {
                [_] => {}
                [first, second] => assert_eq!(*second, format!("{first}/b")),
                _ => panic!("revision {} has changes {keys:?}", batch.revision),
            }
            expected += 1;
        }
    };
    timeout(Duration::from_secs(60), collect)
        .await
        .expect("the watch did not deliver every revision in time");

    for writer in writers {
        writer.join().unwrap();
    }
    assert_eq!(store.revision(), last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_live_while_writing() {
    const WRITES: i64 = 5000;

    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX).with_progress_interval(None);
    let from = store.revision() + 1;
    let mut watch = open_watch(&source, from).await;

    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..WRITES {
                store.put(format!("/app/{}", i % 10), i.to_string());
            }
        })
    };

    let collect = async {
        let mut expected = from;
        while expected < from + WRITES {
            let batch = next_batch(&mut watch).await;
            assert_eq!(batch.revision, expected, "gap or duplicate");
            let object = put_object(&batch.changes[0]);
            assert_eq!(object.value, Bytes::from((expected - from).to_string()));
            expected += 1;
        }
    };
    timeout(Duration::from_secs(60), collect)
        .await
        .expect("the watch did not deliver every revision in time");
    writer.join().unwrap();
}

#[tokio::test(start_paused = true)]
async fn watch_compaction_bounds() {
    let store = MemoryStore::new();
    store.put("/app/a", "1");
    store.put("/app/b", "1");
    let compact_at = store.delete("/app/a").unwrap();
    store.put("/app/c", "1");
    store.compact(compact_at).unwrap();
    let source = MemorySource::new(store.clone(), PREFIX);

    let error = watch_error(&source, compact_at - 1).await;
    assert_eq!(error.class(), ErrorClass::Expired);
    assert!(
        error.to_string().contains(&format!(
            "revision {} was compacted at {compact_at}",
            compact_at - 1
        )),
        "{error}"
    );

    // From exactly the compact revision, the delete at that revision still arrives.
    let mut watch = open_watch(&source, compact_at).await;
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, compact_at);
    assert!(matches!(&batch.changes[0], Change::Delete { key, .. } if key.as_ref() == "/app/a"));
    let batch = next_batch(&mut watch).await;
    assert_eq!(change_keys(&batch), ["/app/c"]);
}

#[tokio::test(start_paused = true)]
async fn watch_behind_compaction_expires() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut watch = open_watch(&source, store.revision() + 1).await;

    for i in 0..10 {
        store.put(format!("/app/{i}"), "v");
    }
    store.compact(store.revision() - 2).unwrap();

    let error = next_error(&mut watch).await;
    assert_eq!(error.class(), ErrorClass::Expired);
    assert!(watch.next().await.is_none());
    assert_eq!(store.open_watches(), 0);
}

#[tokio::test(start_paused = true)]
async fn slow_watcher_holds_no_backlog() {
    const RETENTION: u64 = 100;
    const WRITES: usize = 10_000;

    let store = MemoryStore::new();
    store.set_auto_compaction(NonZeroU64::new(RETENTION));
    let source = MemorySource::new(store.clone(), PREFIX);
    let from = store.revision() + 1;
    let mut slow = open_watch(&source, from).await;
    let mut fast = open_watch(&source, from).await;

    for i in 0..WRITES {
        let revision = store.put(format!("/app/{}", i % 10), "v");
        let batch = next_batch(&mut fast).await;
        assert_eq!(batch.revision, revision);
        assert!(store.history_len() <= 2 * RETENTION as usize);
    }

    // The slow watcher never read, so the store compacted past it instead of keeping its
    // backlog, and its next read ends the stream as expired.
    let error = next_error(&mut slow).await;
    assert_eq!(error.class(), ErrorClass::Expired);
    assert!(slow.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn watch_recreate_new_incarnation() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut watch = open_watch(&source, store.revision() + 1).await;

    let created = store.put("/app/a", "1");
    let updated = store.put("/app/a", "2");
    let deleted = store.delete("/app/a").unwrap();
    let recreated = store.put("/app/a", "3");

    let batch = next_batch(&mut watch).await;
    let first = put_object(&batch.changes[0]);
    assert_eq!(first.incarnation, Incarnation::CreateRevision(created));

    let batch = next_batch(&mut watch).await;
    let second = put_object(&batch.changes[0]);
    assert_eq!(second.revision, updated);
    assert_eq!(second.incarnation, Incarnation::CreateRevision(created));

    let batch = next_batch(&mut watch).await;
    assert!(matches!(
        batch.changes[0],
        Change::Delete { revision, .. } if revision == deleted
    ));

    let batch = next_batch(&mut watch).await;
    let third = put_object(&batch.changes[0]);
    assert_eq!(third.incarnation, Incarnation::CreateRevision(recreated));
    assert_ne!(third.incarnation, first.incarnation);

    let page = source.list_page(first_page(10)).await.unwrap();
    assert_eq!(
        page.objects[0].incarnation,
        Incarnation::CreateRevision(recreated)
    );
}

#[tokio::test(start_paused = true)]
async fn drop_watches_transient() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut first = open_watch(&source, 0).await;
    let mut second = open_watch(&source, 0).await;
    assert_eq!(store.open_watches(), 2);

    store.faults().drop_watches();
    for watch in [&mut first, &mut second] {
        let error = next_error(watch).await;
        assert_eq!(error.class(), ErrorClass::Transient);
        assert_eq!(
            error.to_string(),
            r#"memory prefix "/app/": watch stream cut"#
        );
        assert!(watch.next().await.is_none());
    }
    assert_eq!(store.open_watches(), 0);

    // A watch opened after the cut resumes from history.
    let revision = store.put("/app/a", "1");
    let mut resumed = open_watch(&source, revision).await;
    assert_eq!(next_batch(&mut resumed).await.revision, revision);
}

#[tokio::test(start_paused = true)]
async fn drop_watches_while_frozen() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let mut watch = open_watch(&source, 0).await;

    store.faults().freeze();
    store.faults().drop_watches();
    let error = next_error(&mut watch).await;
    assert_eq!(error.class(), ErrorClass::Transient);
}

#[tokio::test(start_paused = true)]
async fn open_watches_count() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let first = open_watch(&source, 0).await;
    let second = open_watch(&source, 0).await;
    assert_eq!(store.open_watches(), 2);
    drop(first);
    assert_eq!(store.open_watches(), 1);
    drop(second);
    assert_eq!(store.open_watches(), 0);
}

#[tokio::test(start_paused = true)]
async fn freeze_silence_then_recovery() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let faults = store.faults();
    let mut watch = open_watch(&source, store.revision() + 1).await;

    faults.freeze();
    assert!(faults.is_frozen());
    let first = store.put("/app/a", "1");
    let second = store
        .txn(vec![Op::put("/app/b", "1"), Op::put("/app/c", "1")])
        .unwrap();

    // Silence: no batch and no progress message, for many progress intervals.
    let silence = 20 * DEFAULT_PROGRESS_INTERVAL;
    assert!(timeout(silence, watch.next()).await.is_err());
    assert!(
        timeout(silence, source.list_page(first_page(10)))
            .await
            .is_err()
    );
    assert!(timeout(silence, source.watch(0)).await.is_err());

    faults.unfreeze();
    let unfrozen = Instant::now();
    assert_eq!(next_batch(&mut watch).await.revision, first);
    let batch = next_batch(&mut watch).await;
    assert_eq!(batch.revision, second);
    assert_eq!(change_keys(&batch), ["/app/b", "/app/c"]);
    assert_eq!(unfrozen.elapsed(), Duration::ZERO);

    // Progress messages come back a full interval after the last batch.
    assert!(matches!(
        next_message(&mut watch).await,
        WatchMessage::Progress(revision) if revision == second
    ));
    assert_eq!(unfrozen.elapsed(), DEFAULT_PROGRESS_INTERVAL);

    let page = source.list_page(first_page(10)).await.unwrap();
    assert_eq!(page.objects.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn freeze_blocks_pending_list() {
    let store = MemoryStore::new();
    store.put("/app/a", "1");
    let source = MemorySource::new(store.clone(), PREFIX);
    let faults = store.faults();
    faults.freeze();

    let list = tokio::spawn({
        let source = source.clone();
        async move { source.list_page(first_page(10)).await }
    });
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!list.is_finished());

    faults.unfreeze();
    let page = list.await.unwrap().unwrap();
    assert_eq!(keys(&page.objects), ["/app/a"]);
}

#[tokio::test(start_paused = true)]
async fn delay_list_and_watch() {
    let delay = Duration::from_millis(1500);
    let store = MemoryStore::new();
    store.put("/app/a", "1");
    let source = MemorySource::new(store.clone(), PREFIX);
    store.faults().set_delay(delay);

    let start = Instant::now();
    let page = source.list_page(first_page(10)).await.unwrap();
    assert_eq!(start.elapsed(), delay);
    assert_eq!(page.objects.len(), 1);

    let mut watch = open_watch(&source, page.revision + 1).await;
    let written = Instant::now();
    let revision = store.put("/app/b", "1");
    assert_eq!(next_batch(&mut watch).await.revision, revision);
    assert_eq!(written.elapsed(), delay);

    store.faults().set_delay(Duration::ZERO);
    let written = Instant::now();
    store.put("/app/c", "1");
    next_batch(&mut watch).await;
    assert_eq!(written.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn delayed_list_shows_state_at_request() {
    let store = MemoryStore::new();
    store.put("/app/a", "1");
    let source = MemorySource::new(store.clone(), PREFIX);
    store.faults().set_delay(Duration::from_secs(1));

    let list = tokio::spawn({
        let source = source.clone();
        async move { source.list_page(first_page(10)).await }
    });
    tokio::task::yield_now().await;
    store.put("/app/b", "1");

    let page = list.await.unwrap().unwrap();
    assert_eq!(keys(&page.objects), ["/app/a"]);
    assert_eq!(page.revision, 2);
}

#[tokio::test(start_paused = true)]
async fn fail_next_lists_classes() {
    let store = MemoryStore::new();
    store.put("/app/a", "1");
    let source = MemorySource::new(store.clone(), PREFIX);
    let faults = store.faults();
    faults.fail_next_lists(2, ErrorClass::Transient);
    faults.fail_next_lists(1, ErrorClass::Permanent);
    faults.fail_next_lists(1, ErrorClass::Expired);

    let expected = [
        ErrorClass::Transient,
        ErrorClass::Transient,
        ErrorClass::Permanent,
        ErrorClass::Expired,
    ];
    for class in expected {
        let error = list_error(&source, first_page(10)).await;
        assert_eq!(error.class(), class, "{error}");
        assert!(error.to_string().contains("injected"), "{error}");
    }
    let page = source.list_page(first_page(10)).await.unwrap();
    assert_eq!(page.objects.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn fail_next_watches_classes() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let faults = store.faults();
    faults.fail_next_watches(1, ErrorClass::Permanent);
    faults.fail_next_watches(1, ErrorClass::Transient);

    assert_eq!(watch_error(&source, 0).await.class(), ErrorClass::Permanent);
    assert_eq!(watch_error(&source, 0).await.class(), ErrorClass::Transient);
    assert_eq!(store.open_watches(), 0);

    let mut watch = open_watch(&source, 0).await;
    let revision = store.put("/app/a", "1");
    assert_eq!(next_batch(&mut watch).await.revision, revision);
}

#[tokio::test(start_paused = true)]
async fn faults_clear() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX);
    let faults = store.faults();
    faults.freeze();
    faults.set_delay(Duration::from_secs(3));
    faults.fail_next_lists(5, ErrorClass::Transient);

    faults.clear();
    assert!(!faults.is_frozen());
    let start = Instant::now();
    source.list_page(first_page(10)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn progress_on_idle_watch() {
    let interval = Duration::from_secs(2);
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX).with_progress_interval(Some(interval));
    let mut watch = open_watch(&source, 0).await;
    let opened = Instant::now();

    assert!(matches!(
        next_message(&mut watch).await,
        WatchMessage::Progress(1)
    ));
    assert_eq!(opened.elapsed(), interval);

    // Writes outside the prefix do not restart the interval, and the progress covers them.
    tokio::time::advance(Duration::from_millis(500)).await;
    let other = store.put("/other/a", "1");
    assert!(matches!(
        next_message(&mut watch).await,
        WatchMessage::Progress(revision) if revision == other
    ));
    assert_eq!(opened.elapsed(), 2 * interval);

    // A batch restarts the interval.
    tokio::time::advance(Duration::from_millis(500)).await;
    let revision = store.put("/app/a", "1");
    assert_eq!(next_batch(&mut watch).await.revision, revision);
    let batch_at = Instant::now();
    assert!(matches!(
        next_message(&mut watch).await,
        WatchMessage::Progress(progress) if progress == revision
    ));
    assert_eq!(batch_at.elapsed(), interval);
}

#[tokio::test(start_paused = true)]
async fn progress_off() {
    let store = MemoryStore::new();
    let source = MemorySource::new(store.clone(), PREFIX).with_progress_interval(None);
    let mut watch = open_watch(&source, 0).await;
    assert!(
        timeout(Duration::from_secs(3600), watch.next())
            .await
            .is_err()
    );
}
