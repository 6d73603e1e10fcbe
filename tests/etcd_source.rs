//! The etcd source against a real etcd server: paged lists, watch batches, compaction, prefix
//! boundaries, progress, authentication and connection failures.

mod support;

use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, Permission, Txn, TxnOp};
use futures::StreamExt;
use informer::metrics::Metrics;
use informer::source::etcd::{Credentials, EtcdConfig, EtcdSource};
use informer::source::{
    Batch, Change, ErrorClass, Incarnation, ListRequest, Page, Source, SourceError, WatchMessage,
    WatchStream,
};
use support::etcd::EtcdServer;

/// How long a test waits for one watch message before it fails.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

fn config(server: &EtcdServer, prefix: &str) -> EtcdConfig {
    let mut config = EtcdConfig::new([server.endpoint()], prefix);
    config.request_timeout = Duration::from_secs(5);
    config
}

async fn connect(config: EtcdConfig) -> EtcdSource {
    EtcdSource::connect(config)
        .await
        .expect("connect the etcd source")
}

async fn put(client: &mut Client, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
    let response = client.put(key, value, None).await.expect("put");
    response.header().expect("header").revision()
}

async fn current_revision(client: &mut Client) -> i64 {
    let response = client.get("/", None).await.expect("get");
    response.header().expect("header").revision()
}

fn first_page(limit: usize) -> ListRequest {
    ListRequest {
        revision: None,
        continue_from: None,
        limit,
    }
}

fn next_page(previous: &Page<Bytes>, limit: usize) -> Option<ListRequest> {
    Some(ListRequest {
        revision: Some(previous.revision),
        continue_from: Some(previous.next.clone()?),
        limit,
    })
}

/// Lists every page and returns them.
async fn list_all(source: &EtcdSource, limit: usize) -> Vec<Page<Bytes>> {
    let mut pages = vec![
        source
            .list_page(first_page(limit))
            .await
            .expect("first page"),
    ];
    while let Some(request) = next_page(pages.last().unwrap(), limit) {
        pages.push(source.list_page(request).await.expect("later page"));
    }
    pages
}

fn keys(pages: &[Page<Bytes>]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|page| page.objects.iter().map(|object| object.key.to_string()))
        .collect()
}

async fn next_message(stream: &mut WatchStream<Bytes>) -> Result<WatchMessage<Bytes>, SourceError> {
    tokio::time::timeout(MESSAGE_TIMEOUT, stream.next())
        .await
        .expect("a watch message within the timeout")
        .expect("the watch stream is still open")
}

/// Returns the next batch, skipping progress messages.
async fn next_batch(stream: &mut WatchStream<Bytes>) -> Batch<Bytes> {
    loop {
        match next_message(stream)
            .await
            .expect("a watch message, not an error")
        {
            WatchMessage::Batch(batch) => return batch,
            WatchMessage::Progress(_) => continue,
        }
    }
}

/// Returns the next progress revision, failing on a batch.
async fn next_progress(stream: &mut WatchStream<Bytes>) -> i64 {
    match next_message(stream)
        .await
        .expect("a watch message, not an error")
    {
        WatchMessage::Progress(revision) => revision,
        WatchMessage::Batch(batch) => panic!("expected progress, got a batch {batch:?}"),
    }
}

#[tokio::test]
async fn list_pages_pinned() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    for i in 0..25 {
        put(&mut client, format!("/app/k{i:02}"), "old").await;
    }
    let source = connect(config(&server, "/app/")).await;

    let first = source.list_page(first_page(10)).await.unwrap();
    let list_revision = first.revision;
    assert_eq!(list_revision, current_revision(&mut client).await);
    assert_eq!(first.objects.len(), 10);

    // Writes between pages: a new key, an update and a delete, all after the list revision.
    put(&mut client, "/app/k99", "new").await;
    put(&mut client, "/app/k15", "new").await;
    client.delete("/app/k20", None).await.unwrap();

    let mut pages = vec![first];
    while let Some(request) = next_page(pages.last().unwrap(), 10) {
        pages.push(source.list_page(request).await.unwrap());
    }

    let sizes: Vec<usize> = pages.iter().map(|page| page.objects.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    for page in &pages {
        assert_eq!(page.revision, list_revision);
    }
    let expected: Vec<String> = (0..25).map(|i| format!("/app/k{i:02}")).collect();
    assert_eq!(keys(&pages), expected);
    for object in pages.iter().flat_map(|page| &page.objects) {
        assert_eq!(object.value, Bytes::from_static(b"old"), "{}", object.key);
        assert!(object.revision <= list_revision);
        assert_eq!(
            object.incarnation,
            Incarnation::CreateRevision(object.revision)
        );
    }
}

#[tokio::test]
async fn list_over_default_message_limit() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    let value = vec![b'v'; 100 * 1024];
    let first_revision = put(&mut client, "/big/000", value.clone()).await;
    for i in 1..60 {
        put(&mut client, format!("/big/{i:03}"), value.clone()).await;
    }

    // 60 values of 100 KiB make a 6 MiB page, above tonic's default limit of 4 MiB.
    let source = connect(config(&server, "/big/")).await;
    let pages = list_all(&source, 10_000).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].objects.len(), 60);
    assert!(
        pages[0]
            .objects
            .iter()
            .all(|object| object.value.len() == value.len())
    );

    // A catch-up watch sends every past event in one response of the same size.
    let mut stream = source.watch(first_revision).await.unwrap();
    let mut changes = 0;
    while changes < 60 {
        changes += next_batch(&mut stream).await.changes.len();
    }
    assert_eq!(changes, 60);

    // With the limit at 4 MiB the same list is read in smaller pages at one revision.
    let mut small = config(&server, "/big/");
    small.max_response_bytes = 4 * 1024 * 1024;
    let pages = list_all(&connect(small).await, 10_000).await;
    assert!(pages.len() > 1, "{} pages", pages.len());
    assert!(pages.iter().all(|page| page.revision == pages[0].revision));
    assert_eq!(keys(&pages).len(), 60);
}

#[tokio::test]
async fn txn_is_one_batch() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    let created = put(&mut client, "/app/gone", "x").await;
    let source = connect(config(&server, "/app/")).await;
    let mut stream = source.watch(created + 1).await.unwrap();

    let txn = Txn::new().and_then([
        TxnOp::put("/app/a", "1", None),
        TxnOp::put("/app/b", "2", None),
        TxnOp::delete("/app/gone", None),
    ]);
    let revision = client.txn(txn).await.unwrap().header().unwrap().revision();

    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.revision, revision);
    assert_eq!(batch.changes.len(), 3);
    match &batch.changes[0] {
        Change::Put(object) => {
            assert_eq!(&*object.key, "/app/a");
            assert_eq!(object.value, Bytes::from_static(b"1"));
            assert_eq!(object.revision, revision);
            assert_eq!(object.incarnation, Incarnation::CreateRevision(revision));
        }
        other => panic!("expected a put of /app/a, got {other:?}"),
    }
    assert_eq!(&**batch.changes[1].key(), "/app/b");
    match &batch.changes[2] {
        Change::Delete { key, revision: at } => {
            assert_eq!(&**key, "/app/gone");
            assert_eq!(*at, revision);
        }
        other => panic!("expected a delete of /app/gone, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_compacted_expired() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    let mut revisions = Vec::new();
    for i in 0..5 {
        revisions.push(put(&mut client, "/app/k", format!("{i}")).await);
    }
    let compacted = revisions[3];
    server.compact(compacted).await;
    let source = connect(config(&server, "/app/")).await;

    // Below the compaction revision: the server cancels the watch after creating it.
    let mut stream = source.watch(compacted - 1).await.unwrap();
    let error = next_message(&mut stream)
        .await
        .expect_err("a compacted watch fails");
    assert_eq!(error.class(), ErrorClass::Expired, "{error}");
    assert!(
        error.to_string().contains(&format!("revision {compacted}")),
        "{error}"
    );
    let end = tokio::time::timeout(MESSAGE_TIMEOUT, stream.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends after the error");

    // Exactly the compaction revision is still readable.
    let mut stream = source.watch(compacted).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.changes[0].revision(), compacted);
}

#[tokio::test]
async fn list_compacted_expired() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    for i in 0..4 {
        put(&mut client, format!("/app/k{i}"), "x").await;
    }
    let source = connect(config(&server, "/app/")).await;
    let first = source.list_page(first_page(2)).await.unwrap();

    let latest = put(&mut client, "/app/k0", "y").await;
    server.compact(latest).await;

    let error = source
        .list_page(next_page(&first, 2).expect("a second page"))
        .await
        .expect_err("a page at a compacted revision");
    assert_eq!(error.class(), ErrorClass::Expired, "{error}");
    assert!(
        error
            .to_string()
            .contains(&format!("revision {}", first.revision))
    );
}

#[tokio::test]
async fn killed_server_transient() {
    let mut server = EtcdServer::start().await;
    let mut client = server.client().await;
    let revision = put(&mut client, "/app/a", "1").await;
    let source = connect(config(&server, "/app/")).await;
    let mut stream = source.watch(revision + 1).await.unwrap();

    server.kill();
    let killed_at = tokio::time::Instant::now();
    let error = next_message(&mut stream)
        .await
        .expect_err("a killed server fails the watch");
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(2),
        "noticed after {:?}",
        killed_at.elapsed()
    );

    // The same source resumes once the server is back.
    server.restart().await;
    let mut stream = source.watch(revision + 1).await.unwrap();
    let mut client = server.client().await;
    let written = put(&mut client, "/app/b", "2").await;
    assert_eq!(next_batch(&mut stream).await.revision, written);
}

#[tokio::test]
async fn prefix_boundary() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    for key in ["/app", "/app/a", "/app/b", "/apple", "/apq"] {
        put(&mut client, key, "x").await;
    }

    let directory = connect(EtcdConfig::directory([server.endpoint()], "/app")).await;
    assert_eq!(keys(&list_all(&directory, 100).await), ["/app/a", "/app/b"]);

    let mut raw = EtcdConfig::raw_prefix([server.endpoint()], "/app");
    raw.request_timeout = Duration::from_secs(5);
    let raw = connect(raw).await;
    assert_eq!(
        keys(&list_all(&raw, 100).await),
        ["/app", "/app/a", "/app/b", "/apple"]
    );

    // The watch uses the same range: a write to /apple is not a change of "/app/".
    let from = current_revision(&mut client).await + 1;
    let mut stream = directory.watch(from).await.unwrap();
    put(&mut client, "/apple", "y").await;
    let inside = put(&mut client, "/app/c", "y").await;
    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.revision, inside);
    assert_eq!(&**batch.changes[0].key(), "/app/c");
}

#[tokio::test]
async fn empty_prefix_rejected() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/a/1", "x").await;
    put(&mut client, "/b/1", "x").await;

    let error = EtcdSource::connect(config(&server, ""))
        .await
        .expect_err("an empty prefix needs an explicit opt-in");
    assert_eq!(error.class(), ErrorClass::Permanent);
    assert!(error.to_string().contains("prefix is empty"), "{error}");

    let everything = connect(EtcdConfig::whole_keyspace([server.endpoint()])).await;
    assert_eq!(keys(&list_all(&everything, 1).await), ["/a/1", "/b/1"]);
}

#[tokio::test]
async fn non_utf8_keys_skipped() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/app/good", "x").await;
    let binary = put(&mut client, b"/app/\xff\xfe".to_vec(), "x").await;

    let metrics = Metrics::default();
    let source = connect(config(&server, "/app/"))
        .await
        .with_metrics(metrics.clone());
    let pages = list_all(&source, 100).await;
    assert_eq!(keys(&pages), ["/app/good"]);
    assert_eq!(metrics.decode_errors(source.name()), 1);

    // A watch response whose only key is skipped still reports its revision.
    let mut stream = source.watch(binary).await.unwrap();
    assert_eq!(next_progress(&mut stream).await, binary);
    assert_eq!(metrics.decode_errors(source.name()), 2);
}

#[tokio::test]
async fn idle_watch_progress() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    let start = put(&mut client, "/app/a", "1").await;
    let mut config = config(&server, "/app/");
    config.progress_interval = Duration::from_millis(200);
    let source = connect(config.clone()).await;
    let mut stream = source.watch(start + 1).await.unwrap();

    // Writes outside the prefix move the store revision but not the watch.
    put(&mut client, "/other/x", "1").await;
    let latest = put(&mut client, "/other/x", "2").await;

    // A requested progress response proves the watch is alive, but etcd 3.4.23 can send it
    // ahead of events, so its revision is not trusted by default.
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(next_progress(&mut stream).await, start);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    config.trust_requested_progress = true;
    let trusting = connect(config).await;
    let mut stream = trusting.watch(start + 1).await.unwrap();
    assert_eq!(next_progress(&mut stream).await, latest);
}

#[tokio::test]
async fn periodic_progress_advances() {
    let server = EtcdServer::builder()
        .watch_progress_notify_interval(Duration::from_millis(200))
        .start()
        .await;
    let mut client = server.client().await;
    let start = put(&mut client, "/app/a", "1").await;
    let source = connect(config(&server, "/app/")).await;
    let mut stream = source.watch(start + 1).await.unwrap();
    let latest = put(&mut client, "/other/x", "1").await;

    // The server's own progress notifications travel with the events, so they advance the
    // revision even when requested ones are not trusted.
    loop {
        let revision = next_progress(&mut stream).await;
        assert!(revision == start || revision == latest, "{revision}");
        if revision == latest {
            break;
        }
    }
}

#[tokio::test]
async fn frozen_server_detected() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    let start = put(&mut client, "/app/a", "1").await;
    let mut config = config(&server, "/app/");
    config.keep_alive_interval = Duration::from_secs(5);
    config.keep_alive_timeout = Duration::from_secs(5);
    config.progress_interval = Duration::from_secs(1);
    let source = connect(config).await;
    let mut stream = source.watch(start + 1).await.unwrap();
    next_progress(&mut stream).await;

    server.stop_process();
    let stopped_at = tokio::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(WatchMessage::Progress(_))) => continue,
                other => return other,
            }
        }
    })
    .await;
    let elapsed = stopped_at.elapsed();
    server.continue_process();

    let error = match outcome {
        Ok(Some(Err(error))) => error,
        Ok(other) => panic!("expected an error from a frozen server, got {other:?}"),
        Err(_) => panic!("a frozen server went unnoticed for 20 s"),
    };
    assert_eq!(error.class(), ErrorClass::Transient, "{error}");
    println!("a frozen server was noticed after {elapsed:?}: {error}");

    // After SIGCONT a new watch on the same source works.
    let mut stream = source.watch(start + 1).await.unwrap();
    let written = put(&mut client, "/app/b", "2").await;
    assert_eq!(next_batch(&mut stream).await.revision, written);
}

/// Enables authentication with a root user and a user `reader` that may read `/other/` only.
async fn enable_auth(client: &mut Client) {
    client
        .user_add("root", "root-password", None)
        .await
        .unwrap();
    client.role_add("root").await.ok();
    client.user_grant_role("root", "root").await.unwrap();
    client
        .user_add("reader", "reader-password", None)
        .await
        .unwrap();
    client.role_add("reader").await.unwrap();
    client
        .role_grant_permission("reader", Permission::read("/other/").with_prefix())
        .await
        .unwrap();
    client.user_grant_role("reader", "reader").await.unwrap();
    client.auth_enable().await.unwrap();
}

fn reader_config(server: &EtcdServer, prefix: &str, password: &str) -> EtcdConfig {
    let mut config = config(server, prefix);
    config.credentials = Some(Credentials {
        user: "reader".to_owned(),
        password: password.to_owned(),
    });
    config
}

#[tokio::test]
async fn auth_errors_permanent() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    put(&mut client, "/other/x", "1").await;
    put(&mut client, "/app/x", "1").await;
    enable_auth(&mut client).await;

    // The permitted prefix lists with the user's credentials.
    let permitted = connect(reader_config(&server, "/other/", "reader-password")).await;
    assert_eq!(keys(&list_all(&permitted, 10).await), ["/other/x"]);

    let denied = connect(reader_config(&server, "/app/", "reader-password")).await;
    let error = denied
        .list_page(first_page(10))
        .await
        .expect_err("no read access");
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    assert!(error.to_string().contains("grant-permission"), "{error}");

    let watch_error = match denied.watch(1).await {
        Err(error) => error,
        Ok(mut stream) => next_message(&mut stream).await.expect_err("no read access"),
    };
    assert_eq!(watch_error.class(), ErrorClass::Permanent, "{watch_error}");

    // The source authenticates on its first request.
    let error = connect(reader_config(&server, "/other/", "wrong"))
        .await
        .list_page(first_page(10))
        .await
        .expect_err("a wrong password");
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    assert!(
        error.to_string().contains("user name and password"),
        "{error}"
    );
}

/// Measures a full list of 100,000 keys at two page sizes, the reason for the default of
/// 10,000. Run with `cargo test --test etcd_source -- --ignored --nocapture page_size_cost`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn page_size_cost() {
    let server = EtcdServer::start().await;
    let mut client = server.client().await;
    // etcd 3.4 accepts at most 128 operations per transaction (--max-txn-ops).
    for batch in 0..(100_000 / 100) {
        let puts: Vec<TxnOp> = (0..100)
            .map(|i| {
                TxnOp::put(
                    format!("/many/{:06}", batch * 100 + i),
                    vec![b'v'; 100],
                    None,
                )
            })
            .collect();
        client.txn(Txn::new().and_then(puts)).await.unwrap();
    }
    let source = connect(config(&server, "/many/")).await;

    for page_size in [500, 10_000] {
        let started = tokio::time::Instant::now();
        let pages = list_all(&source, page_size).await;
        let objects: usize = pages.iter().map(|page| page.objects.len()).sum();
        assert_eq!(objects, 100_000);
        println!(
            "listed 100,000 keys in {} pages of {page_size} in {:?}",
            pages.len(),
            started.elapsed()
        );
    }
}
