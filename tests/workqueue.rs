//! Tests of the work queue through its public API: a model check on the paused clock, and a
//! stress test with real threads.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use informer::workqueue::{QueueStats, WorkQueue};
use proptest::prelude::*;
use tokio::time::{advance, timeout};

#[tokio::test(start_paused = true)]
async fn readds_while_processing_stay_flat() {
    let queue: WorkQueue<Arc<str>> = WorkQueue::new("flat");
    queue.add("a".into());
    let key = queue.get().await.unwrap();

    for add in 0..10_000 {
        queue.add("a".into());
        assert_eq!(queue.len(), 0, "add {add}");
        let stats = queue.stats();
        assert!(stats.max_len() <= 1, "add {add}: {stats:?}");
    }
    queue.done(&key);

    let again = queue.get().await.unwrap();
    assert_eq!(&*again, "a");
    queue.done(&again);
    let third = timeout(Duration::from_secs(60), queue.get()).await;
    assert!(third.is_err(), "handed out exactly once more");
    assert!(queue.stats().is_clear());
}

#[tokio::test(start_paused = true)]
async fn drain_hands_out_queued_keys() {
    let queue: WorkQueue<u32> = WorkQueue::new("drain");
    for key in 0..20 {
        queue.add(key);
    }
    let processed = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let queue = queue.clone();
            let processed = processed.clone();
            tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    processed.fetch_add(1, Ordering::SeqCst);
                    queue.done(&key);
                }
            })
        })
        .collect();

    queue.shut_down_with_drain().await;

    assert_eq!(processed.load(Ordering::SeqCst), 20);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(queue.stats().is_clear());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_never_share_key() {
    const KEYS: usize = 20;
    let queue: WorkQueue<usize> = WorkQueue::new("stress");
    let in_flight: Arc<Vec<AtomicUsize>> =
        Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
    let violations = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(AtomicUsize::new(0));

    let workers: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            let in_flight = in_flight.clone();
            let violations = violations.clone();
            let processed = processed.clone();
            tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    if in_flight[key].fetch_add(1, Ordering::SeqCst) != 0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    in_flight[key].fetch_sub(1, Ordering::SeqCst);
                    processed.fetch_add(1, Ordering::SeqCst);
                    queue.done(&key);
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..2)
        .map(|producer| {
            let queue = queue.clone();
            tokio::spawn(async move {
                for add in 0..5_000 {
                    queue.add((add * 7 + producer) % KEYS);
                    if add % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }

    timeout(Duration::from_secs(30), queue.shut_down_with_drain())
        .await
        .expect("drain finished");
    for worker in workers {
        worker.await.unwrap();
    }

    assert_eq!(violations.load(Ordering::SeqCst), 0);
    assert!(processed.load(Ordering::SeqCst) >= KEYS);
    assert!(queue.stats().is_clear(), "{:?}", queue.stats());
}

/// One operation of the model check. Keys are small integers so that operations collide.
#[derive(Clone, Debug)]
enum Op {
    Add(u8),
    AddAfter(u8, u64),
    AddRateLimited(u8),
    Get,
    Done(usize),
    Forget(u8),
    Len,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4u8).prop_map(Op::Add),
        2 => (0..4u8, 0..40u64).prop_map(|(key, millis)| Op::AddAfter(key, millis)),
        2 => (0..4u8).prop_map(Op::AddRateLimited),
        3 => Just(Op::Get),
        3 => any::<usize>().prop_map(Op::Done),
        1 => (0..4u8).prop_map(Op::Forget),
        1 => Just(Op::Len),
        2 => (0..50u64).prop_map(Op::Advance),
    ]
}

/// A plain re-statement of the queue's contract, with time in milliseconds since the start.
#[derive(Default)]
struct Model {
    now: u64,
    ready: VecDeque<u8>,
    dirty: HashSet<u8>,
    processing: Vec<u8>,
    /// Delayed keys by (due, insertion sequence), the order in which they become ready.
    delayed: BTreeMap<(u64, u64), u8>,
    due_of: HashMap<u8, (u64, u64)>,
    sequence: u64,
    failures: HashMap<u8, u32>,
}

impl Model {
    fn add(&mut self, key: u8) {
        if let Some(position) = self.due_of.remove(&key) {
            self.delayed.remove(&position);
        }
        self.make_dirty(key);
    }

    fn make_dirty(&mut self, key: u8) {
        if self.dirty.insert(key) && !self.processing.contains(&key) {
            self.ready.push_back(key);
        }
    }

    fn add_after(&mut self, key: u8, millis: u64) {
        if millis == 0 {
            return self.add(key);
        }
        if self.dirty.contains(&key) {
            return;
        }
        let due = self.now + millis;
        if let Some(&(current, sequence)) = self.due_of.get(&key) {
            if current <= due {
                return;
            }
            self.delayed.remove(&(current, sequence));
        }
        let position = (due, self.sequence);
        self.sequence += 1;
        self.delayed.insert(position, key);
        self.due_of.insert(key, position);
    }

    fn add_rate_limited(&mut self, key: u8) {
        // The default limiter: 5 ms doubling per failure up to 1000 s. The overall bucket
        // never limits here, because a case makes fewer calls than its burst of 100.
        let failures = self.failures.entry(key).or_insert(0);
        let millis = if *failures >= 18 {
            1_000_000
        } else {
            (5u64 << *failures).min(1_000_000)
        };
        *failures += 1;
        self.add_after(key, millis);
    }

    fn promote(&mut self) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let key = entry.remove();
            self.due_of.remove(&key);
            self.make_dirty(key);
        }
    }

    fn get(&mut self) -> Option<u8> {
        self.promote();
        let key = self.ready.pop_front()?;
        self.dirty.remove(&key);
        self.processing.push(key);
        Some(key)
    }

    fn done(&mut self, key: u8) {
        self.processing.retain(|&other| other != key);
        if self.dirty.contains(&key) {
            self.ready.push_back(key);
        }
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            ready: self.ready.len(),
            dirty: self.dirty.len(),
            processing: self.processing.len(),
            delayed: self.delayed.len(),
            rate_limited: self.failures.len(),
        }
    }
}

/// Runs `ops` against a queue and the model, and checks that both agree after every step.
async fn check_against_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let queue: WorkQueue<u8> = WorkQueue::new("model");
    let mut model = Model::default();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Add(key) => {
                queue.add(key);
                model.add(key);
            }
            Op::AddAfter(key, millis) => {
                queue.add_after(key, Duration::from_millis(millis));
                model.add_after(key, millis);
            }
            Op::AddRateLimited(key) => {
                queue.add_rate_limited(key);
                model.add_rate_limited(key);
            }
            Op::Get => {
                // A get that would wait is cancelled, which also checks cancel safety.
                let handed = queue.get().now_or_never().flatten();
                prop_assert_eq!(handed, model.get(), "step {}: get", step);
            }
            Op::Done(index) => {
                if !model.processing.is_empty() {
                    let key = model.processing[index % model.processing.len()];
                    queue.done(&key);
                    model.done(key);
                }
            }
            Op::Forget(key) => {
                queue.forget(&key);
                model.failures.remove(&key);
            }
            Op::Len => {
                model.promote();
                prop_assert_eq!(queue.len(), model.ready.len(), "step {}: len", step);
            }
            Op::Advance(millis) => {
                advance(Duration::from_millis(millis)).await;
                model.now += millis;
            }
        }
        prop_assert_eq!(queue.stats(), model.stats(), "step {}: {:?}", step, op);
    }

    // Finish every key: the queue must end up empty.
    for key in std::mem::take(&mut model.processing) {
        queue.done(&key);
    }
    advance(Duration::from_secs(3600)).await;
    while let Some(key) = queue.get().now_or_never().flatten() {
        queue.forget(&key);
        queue.done(&key);
    }
    for key in 0..4 {
        queue.forget(&key);
    }
    prop_assert!(queue.stats().is_clear(), "{:?}", queue.stats());
    Ok(())
}

proptest! {
    #[test]
    fn queue_matches_model(ops in prop::collection::vec(op(), 1..100)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(check_against_model(ops))?;
    }
}
