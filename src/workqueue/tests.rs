//! Unit tests of the work queue, on tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::{Instant, advance, timeout};

use super::*;
use crate::metrics::Metrics;

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Returns the key a `get` hands out within a second, or `None` when it waits longer.
async fn try_get(queue: &WorkQueue<&'static str>) -> Option<&'static str> {
    timeout(secs(1), queue.get()).await.ok().flatten()
}

#[tokio::test(start_paused = true)]
async fn add_dedups_queued_key() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    queue.add("a");
    queue.add("b");
    queue.add("a");

    assert_eq!(queue.len(), 2);
    assert_eq!(queue.stats().dirty, 2);
    assert_eq!(queue.get().await, Some("a"));
    assert_eq!(queue.get().await, Some("b"));
    assert!(queue.is_empty());
}

#[tokio::test(start_paused = true)]
async fn in_flight_key_not_handed_out() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    let key = queue.get().await.unwrap();

    queue.add("a");

    assert_eq!(queue.len(), 0);
    assert_eq!(try_get(&queue).await, None, "a is in flight");

    queue.done(&key);
    assert_eq!(queue.len(), 1);
    assert_eq!(try_get(&queue).await, Some("a"));
}

#[tokio::test(start_paused = true)]
async fn in_flight_readds_collapse() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    let key = queue.get().await.unwrap();

    for _ in 0..1000 {
        queue.add("a");
        let stats = queue.stats();
        assert!(stats.max_len() <= 1, "stats grew: {stats:?}");
    }
    queue.done(&key);

    assert_eq!(queue.get().await, Some("a"));
    queue.done(&"a");
    assert_eq!(try_get(&queue).await, None, "handed out exactly once more");
    assert!(queue.stats().is_clear());
}

#[tokio::test(start_paused = true)]
async fn done_ignores_unknown_key() {
    let queue = WorkQueue::new("test");
    queue.add("a");

    queue.done(&"a");

    assert_eq!(queue.stats().ready, 1, "a queued key is not in flight");
    queue.done(&"never-added");
    assert_eq!(queue.get().await, Some("a"));
}

#[tokio::test(start_paused = true)]
async fn delayed_key_due_later() {
    let queue = WorkQueue::new("test");
    let start = Instant::now();
    queue.add_after("a", secs(5));

    assert_eq!(queue.len(), 0);
    assert_eq!(queue.stats().delayed, 1);
    assert_eq!(queue.get().await, Some("a"));
    assert_eq!(start.elapsed(), secs(5));
}

#[tokio::test(start_paused = true)]
async fn delayed_earliest_wins() {
    let queue = WorkQueue::new("test");
    queue.add_after("a", secs(10));
    queue.add_after("a", secs(5));
    queue.add_after("a", secs(20));
    assert_eq!(queue.stats().delayed, 1);

    advance(secs(4)).await;
    assert_eq!(queue.len(), 0);
    advance(secs(1)).await;
    assert_eq!(queue.len(), 1);

    let key = queue.get().await.unwrap();
    queue.done(&key);
    advance(secs(30)).await;
    assert_eq!(
        queue.len(),
        0,
        "later requests were merged into the earliest"
    );
    assert!(queue.stats().is_clear());
}

#[tokio::test(start_paused = true)]
async fn add_overrides_delay() {
    let queue = WorkQueue::new("test");
    queue.add_after("a", secs(10));

    queue.add("a");

    assert_eq!(queue.stats().delayed, 0);
    assert_eq!(queue.len(), 1);
    let key = queue.get().await.unwrap();
    queue.done(&key);
    advance(secs(20)).await;
    assert_eq!(queue.len(), 0, "the delayed entry was removed");
}

#[tokio::test(start_paused = true)]
async fn add_after_ignored_when_queued() {
    let queue = WorkQueue::new("test");
    queue.add("a");

    queue.add_after("a", secs(1));

    assert_eq!(queue.stats().delayed, 0);
    assert_eq!(queue.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn add_after_kept_when_in_flight() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    let key = queue.get().await.unwrap();

    queue.add_after("a", secs(3));
    queue.done(&key);

    assert_eq!(queue.stats().delayed, 1);
    assert_eq!(queue.len(), 0);
    let start = Instant::now();
    assert_eq!(queue.get().await, Some("a"));
    assert_eq!(start.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn earlier_delay_wakes_getter() {
    let queue = WorkQueue::new("test");
    queue.add_after("late", secs(60));
    let start = Instant::now();
    let getter = tokio::spawn({
        let queue = queue.clone();
        async move { queue.get().await }
    });
    tokio::task::yield_now().await;

    queue.add_after("early", secs(1));

    assert_eq!(getter.await.unwrap(), Some("early"));
    assert_eq!(start.elapsed(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn due_keys_keep_order() {
    let queue = WorkQueue::new("test");
    queue.add_after("second", secs(2));
    queue.add_after("first", secs(1));
    queue.add_after("third", secs(3));

    advance(secs(5)).await;

    assert_eq!(queue.len(), 3);
    assert_eq!(queue.get().await, Some("first"));
    assert_eq!(queue.get().await, Some("second"));
    assert_eq!(queue.get().await, Some("third"));
}

#[tokio::test(start_paused = true)]
async fn huge_delay_does_not_panic() {
    let queue = WorkQueue::new("test");
    queue.add_after("a", Duration::MAX);

    assert_eq!(queue.stats().delayed, 1);
    assert_eq!(try_get(&queue).await, None);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_add_backs_off() {
    let queue = WorkQueue::new("test");

    for (attempt, millis) in [(1, 5), (2, 10), (3, 20)] {
        let start = Instant::now();
        queue.add_rate_limited("a");
        assert_eq!(queue.requeues(&"a"), attempt);

        let key = queue.get().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(millis));
        queue.done(&key);
    }

    queue.forget(&"a");
    assert_eq!(queue.requeues(&"a"), 0);
    assert!(queue.stats().is_clear());
}

#[tokio::test(start_paused = true)]
async fn custom_rate_limiter_used() {
    let limiter = Arc::new(ExponentialBackoff::new(secs(1), secs(4)));
    let queue = WorkQueue::builder("test")
        .rate_limiter(limiter.clone())
        .build();

    queue.add_rate_limited("a");

    assert_eq!(limiter.requeues(&"a"), 1);
    let start = Instant::now();
    assert_eq!(queue.get().await, Some("a"));
    assert_eq!(start.elapsed(), secs(1));
}

#[tokio::test(start_paused = true)]
async fn memory_clear_after_done() {
    let queue = WorkQueue::new("test");
    let keys: Vec<String> = (0..1000).map(|index| format!("key-{index}")).collect();
    for key in &keys {
        queue.add(key.clone());
        queue.add_rate_limited(key.clone());
        queue.add_after(key.clone(), secs(1));
    }

    while let Some(key) = timeout(secs(5), queue.get()).await.ok().flatten() {
        queue.forget(&key);
        queue.done(&key);
    }

    assert_eq!(queue.stats(), QueueStats::default());
}

#[tokio::test(start_paused = true)]
async fn shut_down_drops_queued() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    queue.add("b");
    queue.add_after("c", secs(1));
    let key = queue.get().await.unwrap();
    queue.add("a");

    let dropped = queue.shut_down();

    assert_eq!(dropped, 3, "b, c and the re-add of a");
    assert_eq!(queue.get().await, None);
    queue.add("d");
    queue.add_rate_limited("d");
    assert_eq!(queue.stats().ready, 0, "adds are ignored");
    assert_eq!(queue.requeues(&"d"), 0, "the limiter was not consulted");

    queue.done(&key);
    assert!(queue.stats().is_clear());
    assert_eq!(queue.shut_down(), 0);
}

#[tokio::test(start_paused = true)]
async fn shut_down_wakes_getters() {
    let queue: WorkQueue<&str> = WorkQueue::new("test");
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get().await })
        })
        .collect();
    tokio::task::yield_now().await;

    queue.shut_down();

    for getter in getters {
        assert_eq!(getter.await.unwrap(), None);
    }
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_queued() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    queue.add("b");
    queue.add_after("delayed", secs(1));
    let processed = Arc::new(AtomicUsize::new(0));
    let worker = tokio::spawn({
        let queue = queue.clone();
        let processed = processed.clone();
        async move {
            while let Some(key) = queue.get().await {
                tokio::time::sleep(secs(2)).await;
                processed.fetch_add(1, Ordering::SeqCst);
                queue.done(&key);
            }
        }
    });
    let start = Instant::now();

    queue.shut_down_with_drain().await;

    assert_eq!(start.elapsed(), secs(4), "both queued keys took 2 s each");
    assert_eq!(
        processed.load(Ordering::SeqCst),
        2,
        "the delayed key was dropped"
    );
    queue.add("late");
    assert_eq!(queue.stats().ready, 0, "adds during a drain are ignored");
    worker.await.unwrap();
    assert!(queue.stats().is_clear());
}

#[tokio::test(start_paused = true)]
async fn drain_processes_readded_in_flight() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    let key = queue.get().await.unwrap();
    queue.add("a");
    let drain = tokio::spawn({
        let queue = queue.clone();
        async move { queue.shut_down_with_drain().await }
    });
    tokio::task::yield_now().await;
    assert!(!drain.is_finished());

    queue.done(&key);
    let again = try_get(&queue).await;
    assert_eq!(
        again,
        Some("a"),
        "the re-add before the drain is handed out"
    );
    assert!(!drain.is_finished());
    queue.done(&"a");

    drain.await.unwrap();
    assert_eq!(queue.get().await, None);
}

#[tokio::test(start_paused = true)]
async fn drain_releases_idle_getters() {
    let queue = WorkQueue::new("test");
    queue.add("a");
    let key = queue.get().await.unwrap();
    let getter = tokio::spawn({
        let queue = queue.clone();
        async move { queue.get().await }
    });
    let drain = tokio::spawn({
        let queue = queue.clone();
        async move { queue.shut_down_with_drain().await }
    });
    tokio::task::yield_now().await;

    queue.done(&key);

    drain.await.unwrap();
    assert_eq!(getter.await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn drain_of_idle_queue_returns() {
    let queue: WorkQueue<&str> = WorkQueue::new("test");
    timeout(secs(1), queue.shut_down_with_drain())
        .await
        .expect("an idle queue drains at once");
    assert!(queue.is_shutting_down());
}

#[tokio::test(start_paused = true)]
async fn get_cancel_keeps_key() {
    let queue = WorkQueue::new("test");
    for _ in 0..10 {
        assert!(
            timeout(Duration::from_millis(1), queue.get())
                .await
                .is_err()
        );
    }
    queue.add_after("a", Duration::from_millis(5));
    for _ in 0..3 {
        let _ = timeout(Duration::from_millis(1), queue.get()).await;
    }

    assert_eq!(try_get(&queue).await, Some("a"));
}

#[tokio::test(start_paused = true)]
async fn get_cancel_passes_wakeup() {
    let queue = WorkQueue::new("test");
    let mut first = Box::pin(queue.get());
    assert!(futures::poll!(first.as_mut()).is_pending());
    let second = tokio::spawn({
        let queue = queue.clone();
        async move { queue.get().await }
    });
    tokio::task::yield_now().await;

    // The first getter waited longer, so it receives the wakeup. Dropping it unpolled must
    // pass the wakeup on to the second getter.
    queue.add("a");
    drop(first);

    let handed = timeout(secs(1), second).await;
    assert_eq!(handed.expect("second getter woke").unwrap(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn concurrent_getters_share_keys() {
    let queue = WorkQueue::new("test");
    let getters: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get().await })
        })
        .collect();
    tokio::task::yield_now().await;

    for key in ["a", "b", "c", "d"] {
        queue.add(key);
    }

    let mut handed = Vec::new();
    for getter in getters {
        handed.push(getter.await.unwrap().unwrap());
    }
    handed.sort_unstable();
    assert_eq!(handed, ["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_adds() {
    let metrics = Metrics::default();
    let queue = WorkQueue::builder("counted")
        .metrics(metrics.clone())
        .build();

    queue.add("a");
    queue.add("a");
    queue.add("b");
    assert_eq!(
        metrics.queue_adds("counted"),
        2,
        "duplicates are not counted"
    );
    assert_eq!(metrics.queue_depth("counted"), 2);

    queue.add_rate_limited("c");
    assert_eq!(metrics.queue_retries("counted"), 1);

    queue.get().await.unwrap();
    assert_eq!(metrics.queue_depth("counted"), 1);
    advance(secs(1)).await;
    assert_eq!(queue.len(), 2);
    assert_eq!(metrics.queue_adds("counted"), 3, "c counts once it is due");
    assert_eq!(metrics.queue_depth("counted"), 2);
}
