//! The load and memory soak: a few hot keys written at a high rate while a slow reconciler
//! works through them, with the process's resident memory sampled throughout.
//!
//! The soak checks that:
//! - resident memory stays flat: after the warmup, the average of the last third of the
//!   samples is at most [`RSS_GROWTH_LIMIT`] times the average of the first third;
//! - the queue and the handler's buffer never hold more keys than there are distinct keys;
//! - every key converges once the writes stop, as in the chaos runs.
//!
//! Resident memory covers the whole process, so a soak must run in a process of its own: the
//! tests in `chaos.rs` start it in a child process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::{Client, CompactionOptions};
use informer::reflector::ReflectorConfig;
use informer::source::etcd::EtcdConfig;
use informer::workqueue::QueueStats;
use parking_lot::Mutex;
use rand::Rng;
use tokio::time::Instant;

use super::check::{self, Checks};
use super::driver::Driver;
use super::pipeline::{Pipeline, ReconcilerBehaviour, Recording};
use super::plan::PREFIX;
use crate::support::etcd::EtcdServer;

/// The maximum ratio of the average resident memory of the last third of the samples to that
/// of the first third.
pub const RSS_GROWTH_LIMIT: f64 = 1.2;

/// Keys that the writers hammer.
const HOT_KEYS: usize = 5;

/// Keys written once at the start and then only now and then.
const COLD_KEYS: usize = 45;

/// Concurrent writer tasks.
const WRITERS: usize = 4;

/// The pause of each writer between two puts: with [`WRITERS`] writers, up to about 1,000 puts a
/// second in total.
const WRITE_PAUSE: Duration = Duration::from_millis(4);

/// The fraction of puts that go to a cold key.
const COLD_WRITE_RATE: f64 = 0.01;

/// How often the soak compacts etcd, keeping one period of history, as an operator's periodic
/// compaction would.
const COMPACT_EVERY: Duration = Duration::from_secs(5);

/// How often the queue and the handler's buffer are sampled.
const BOUND_SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// One soak's length and sampling.
#[derive(Clone, Copy, Debug)]
pub struct SoakSettings {
    /// How long the writers run.
    pub duration: Duration,
    /// How often resident memory is sampled.
    pub sample_every: Duration,
    /// Samples taken before this much time has passed are not compared.
    pub warmup: Duration,
}

/// The largest sizes the samplers saw.
#[derive(Debug, Default)]
struct Bounds {
    queue: QueueStats,
    handler_keys: usize,
}

/// Runs the soak and panics when a check fails.
pub async fn run(settings: SoakSettings) {
    let server = EtcdServer::start().await;
    let keys = keys();
    let mut driver = Driver::new(server.endpoints());
    for key in &keys {
        driver
            .write(&super::plan::Write::Single(super::plan::KeyWrite::Put {
                key: key.clone(),
                value: "initial".to_owned(),
            }))
            .await;
    }

    let mut etcd = EtcdConfig::new([server.endpoint()], PREFIX);
    etcd.progress_interval = Duration::from_secs(1);
    let pipeline = Arc::new(
        Pipeline::start(
            etcd,
            ReflectorConfig::default(),
            2,
            ReconcilerBehaviour {
                max_work: Duration::from_millis(40),
                error_rate: 0.0,
                recording: Recording::LastOnly,
            },
        )
        .await,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let client = server.client().await;
        tasks.push(tokio::spawn(hammer(
            client,
            writer,
            keys.clone(),
            stop.clone(),
            written.clone(),
        )));
    }
    tasks.push(tokio::spawn(compact_periodically(
        server.client().await,
        stop.clone(),
    )));
    let bounds = Arc::new(Mutex::new(Bounds::default()));
    let sampler = tokio::spawn(sample_bounds(
        pipeline.clone(),
        bounds.clone(),
        stop.clone(),
    ));

    let samples = sample_rss(settings, &pipeline, &written).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("a writer or the compactor panicked");
    }
    sampler.await.expect("the bound sampler panicked");

    let bounds = std::mem::take(&mut *bounds.lock());
    println!(
        "soak wrote {} puts in {:?}; largest queue {:?}, largest handler buffer {} keys; {}",
        written.load(Ordering::SeqCst),
        settings.duration,
        bounds.queue,
        bounds.handler_keys,
        pipeline.summary()
    );
    let distinct = keys.len();
    assert!(
        bounds.queue.max_len() <= distinct,
        "the queue held more entries than the {distinct} distinct keys: {:?}",
        bounds.queue
    );
    assert!(
        bounds.handler_keys <= distinct,
        "the handler's buffer held {} keys, more than the {distinct} distinct keys",
        bounds.handler_keys
    );
    check_rss(settings, &samples);

    driver.history.touched.extend(keys);
    check::settle_and_check(&pipeline, &mut driver, Checks::Convergence).await;
}

fn keys() -> Vec<String> {
    (0..HOT_KEYS)
        .map(|i| format!("{PREFIX}hot{i}"))
        .chain((0..COLD_KEYS).map(|i| format!("{PREFIX}cold{i:02}")))
        .collect()
}

/// Puts to the hot keys, and now and then a cold key, until `stop`.
async fn hammer(
    mut client: Client,
    writer: usize,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
) {
    let mut count = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let key = {
            let mut rng = rand::rng();
            if rng.random_bool(COLD_WRITE_RATE) {
                &keys[rng.random_range(HOT_KEYS..keys.len())]
            } else {
                &keys[rng.random_range(0..HOT_KEYS)]
            }
        };
        count += 1;
        client
            .put(key.as_str(), format!("w{writer}-{count}"), None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        written.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(WRITE_PAUSE).await;
    }
}

/// Compacts at the revision of the previous period until `stop`.
async fn compact_periodically(mut client: Client, stop: Arc<AtomicBool>) {
    let mut previous: Option<i64> = None;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(COMPACT_EVERY).await;
        let response = client.get("health", None).await.expect("read the revision");
        let revision = response.header().expect("a header").revision();
        if let Some(previous) = previous {
            client
                .compact(previous, Some(CompactionOptions::new()))
                .await
                .unwrap_or_else(|e| panic!("compact at {previous}: {e}"));
        }
        previous = Some(revision);
    }
}

/// Records the largest queue and handler buffer until `stop`.
async fn sample_bounds(pipeline: Arc<Pipeline>, bounds: Arc<Mutex<Bounds>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let stats = pipeline.queue.stats();
        let handler_keys = pipeline.handler.pending_keys();
        {
            let mut bounds = bounds.lock();
            let largest = &mut bounds.queue;
            largest.ready = largest.ready.max(stats.ready);
            largest.dirty = largest.dirty.max(stats.dirty);
            largest.processing = largest.processing.max(stats.processing);
            largest.delayed = largest.delayed.max(stats.delayed);
            largest.rate_limited = largest.rate_limited.max(stats.rate_limited);
            bounds.handler_keys = bounds.handler_keys.max(handler_keys);
        }
        tokio::time::sleep(BOUND_SAMPLE_EVERY).await;
    }
}

/// Samples resident memory every `settings.sample_every` for `settings.duration`, and returns
/// the samples taken after the warmup, in KiB.
async fn sample_rss(settings: SoakSettings, pipeline: &Pipeline, written: &AtomicU64) -> Vec<u64> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next = started;
    while started.elapsed() < settings.duration {
        next += settings.sample_every;
        tokio::time::sleep_until(next).await;
        let rss = rss_kib();
        let elapsed = started.elapsed();
        println!(
            "soak {:>5.0} s: rss {rss} KiB, puts {}, queue {:?}, reconciles {}",
            elapsed.as_secs_f64(),
            written.load(Ordering::Relaxed),
            pipeline.queue.stats(),
            pipeline.log.reconciles()
        );
        if elapsed >= settings.warmup {
            samples.push(rss);
        }
    }
    samples
}

/// Asserts that the last third of `samples` averages at most [`RSS_GROWTH_LIMIT`] times the
/// first third.
fn check_rss(settings: SoakSettings, samples: &[u64]) {
    assert!(
        samples.len() >= 3,
        "too few memory samples after the warmup: {} over {:?}",
        samples.len(),
        settings.duration
    );
    let third = samples.len() / 3;
    let average = |part: &[u64]| part.iter().sum::<u64>() as f64 / part.len() as f64;
    let first = average(&samples[..third]);
    let last = average(&samples[samples.len() - third..]);
    println!("soak rss: first third {first:.0} KiB, last third {last:.0} KiB");
    assert!(
        last <= first * RSS_GROWTH_LIMIT,
        "resident memory grew from {first:.0} KiB to {last:.0} KiB on average, more than \
         {RSS_GROWTH_LIMIT}x; samples in KiB: {samples:?}"
    );
}

/// Returns the resident memory of this process in KiB, from `VmRSS` in `/proc/self/status`.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in /proc/self/status")
}
