//! The measurements, each run in its own child process so that its peak RSS is its own.
//!
//! A child connects to the server the parent started, runs one phase and prints one JSON
//! object on its last stdout line. The live and latency phases first print `ready` once both
//! consumers are watching, and the parent starts writing then.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use etcd_client::{Client, GetOptions, WatchOptions};
use informer::controller::{Action, Controller, Request};
use informer::decode::RawBytes;
use informer::notify::{HandlerOptions, enqueue_keys};
use informer::reflector::{HealthWatch, Reflector, ReflectorConfig};
use informer::source::etcd::{EtcdConfig, EtcdSource};
use informer::source::{ListRequest, Page, Revision, Source, SourceError, WatchStream};
use informer::workqueue::WorkQueue;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::{ChildArgs, Phase, harness, prefix_end};

/// The largest gRPC response the raw client accepts: a whole unpaged list of 1,000,000 keys.
const RAW_MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Runs one phase and prints its result.
pub async fn run(args: ChildArgs) -> anyhow::Result<()> {
    harness::run_child(async {
        match args.phase {
            Phase::ListRaw => list_raw(&args).await,
            Phase::ListPipeline => list_pipeline(&args).await,
            Phase::CatchupRaw => catchup_raw(&args).await,
            Phase::CatchupPipeline => catchup_pipeline(&args).await,
            Phase::Live => live(&args).await,
            Phase::Latency => latency(&args).await,
        }
    })
    .await
}

async fn connect(endpoint: &str) -> anyhow::Result<Client> {
    let client = Client::connect([endpoint], None)
        .await
        .with_context(|| format!("connect to etcd at {endpoint}"))?;
    Ok(client)
}

/// Reads the whole prefix in pages of `page_size` keys (0: one unpaged read) at one revision,
/// keeping every key-value pair, as a list does.
async fn list_raw(args: &ChildArgs) -> anyhow::Result<Value> {
    let client = connect(&args.endpoint).await?;
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(RAW_MAX_RESPONSE_BYTES);
    let end = prefix_end(&args.prefix);
    // The connection opens on the first request, so open it before the clock starts.
    kv.get(args.prefix.as_str(), Some(GetOptions::new().with_limit(1)))
        .await?;

    let started = Instant::now();
    let mut kept = Vec::new();
    let mut revision: Option<i64> = None;
    let mut from = args.prefix.as_bytes().to_vec();
    let mut pages = 0;
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(args.page_size as i64);
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let mut response = kv.get(from.clone(), Some(options)).await?;
        pages += 1;
        revision.get_or_insert(response.header().context("no header")?.revision());
        let more = response.more();
        let kvs = response.take_kvs();
        if let Some(last) = kvs.last() {
            from = last.key().to_vec();
            from.push(0);
        }
        kept.extend(kvs);
        if !more {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();

    if kept.len() != args.keys {
        bail!(
            "listed {} keys under {}, expected {}",
            kept.len(),
            args.prefix,
            args.keys
        );
    }
    Ok(json!({ "secs": secs, "pages": pages }))
}

/// Counts reconciles and, in the latency phase, the delay from each put to its reconcile.
struct Reconciled {
    count: AtomicUsize,
    target: usize,
    first_at: OnceLock<Instant>,
    done_at: OnceLock<Instant>,
    done: tokio::sync::Notify,
    /// `(key index, microseconds from put to reconcile start)` when measuring latency.
    latencies: Option<Mutex<Vec<(u64, u64)>>>,
}

impl Reconciled {
    fn new(target: usize, latency: bool) -> Arc<Reconciled> {
        Arc::new(Reconciled {
            count: AtomicUsize::new(0),
            target,
            first_at: OnceLock::new(),
            done_at: OnceLock::new(),
            done: tokio::sync::Notify::new(),
            latencies: latency.then(|| Mutex::new(Vec::with_capacity(target))),
        })
    }

    fn record(&self) {
        let now = Instant::now();
        self.first_at.get_or_init(|| now);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            let _ = self.done_at.set(now);
            self.done.notify_one();
        }
    }

    async fn wait(&self, limit: Duration) -> anyhow::Result<Instant> {
        let notified = self.done.notified();
        if let Some(at) = self.done_at.get() {
            return Ok(*at);
        }
        if tokio::time::timeout(limit, notified).await.is_err() {
            bail!(
                "the pipeline reconciled {} of {} keys within {limit:?}",
                self.count.load(Ordering::Acquire),
                self.target
            );
        }
        Ok(*self.done_at.get().context("done without a time")?)
    }
}

/// Counts the reconcile and does nothing else, except in the latency phase, where it also
/// records the time since the put that is stored in the cached value.
async fn reconcile(request: Request<Bytes>, ctx: Arc<Reconciled>) -> Result<Action, Infallible> {
    if let (Some(latencies), Some(object)) = (&ctx.latencies, request.live()) {
        let now = unix_micros();
        if let Some(put_at) = parse_timestamp(&object.value) {
            latencies
                .lock()
                .push((key_index(&request.key), now.saturating_sub(put_at)));
        }
    }
    ctx.record();
    Ok(Action::Done)
}

/// Returns microseconds since the Unix epoch: the clock the writer and the children share.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Parses the put time that the latency writer puts at the start of each value.
fn parse_timestamp(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Returns the number at the end of a key made by `crate::key`.
fn key_index(key: &str) -> u64 {
    let digits = key.rsplit('/').next().unwrap_or_default();
    digits.parse().unwrap_or(u64::MAX)
}

/// A reflector, handler, queue and controller over one source.
struct Pipeline {
    health: HealthWatch,
    reconciled: Arc<Reconciled>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Returns the pipeline's page size: `--page-size`, or every key in one page for 0.
fn pipeline_page_size(args: &ChildArgs) -> usize {
    match args.page_size {
        0 => args.keys.max(1),
        page_size => page_size,
    }
}

fn etcd_config(args: &ChildArgs) -> EtcdConfig {
    let mut config = EtcdConfig::new([args.endpoint.clone()], &args.prefix);
    config.page_size = pipeline_page_size(args);
    config.max_response_bytes = RAW_MAX_RESPONSE_BYTES;
    config
}

fn start_pipeline<S>(source: S, args: &ChildArgs, reconciled: Arc<Reconciled>) -> Pipeline
where
    S: Source<Value = Bytes>,
{
    let config = ReflectorConfig {
        page_size: pipeline_page_size(args),
        ..ReflectorConfig::default()
    };
    let reflector = Reflector::new(source, RawBytes::default()).config(config);
    let store = reflector.store();
    let health = reflector.health();
    let queue: WorkQueue<Arc<str>> = WorkQueue::new("bench");
    store.register(HandlerOptions::new("bench"), enqueue_keys(queue.clone()));
    let controller =
        Controller::new("bench", queue, store, reconcile, reconciled.clone()).workers(args.workers);
    let tasks = vec![
        tokio::spawn(reflector.run()),
        tokio::spawn(async move {
            controller.run_until(std::future::pending()).await;
        }),
    ];
    Pipeline {
        health,
        reconciled,
        tasks,
    }
}

/// Lists the prefix through the whole pipeline and times the cache and the reconciles.
async fn list_pipeline(args: &ChildArgs) -> anyhow::Result<Value> {
    let source = EtcdSource::connect(etcd_config(args)).await?;
    // The connection opens on the first request, so open it before the clock starts.
    source
        .list_page(ListRequest {
            revision: None,
            continue_from: None,
            limit: 1,
        })
        .await?;

    let started = Instant::now();
    let pipeline = start_pipeline(source, args, Reconciled::new(args.keys, false));
    pipeline
        .health
        .wait_synced()
        .await
        .context("the reflector stopped")?;
    let cached_secs = started.elapsed().as_secs_f64();
    let done_at = pipeline.reconciled.wait(Duration::from_secs(600)).await?;
    let reconciled_secs = done_at.duration_since(started).as_secs_f64();
    Ok(json!({ "secs": cached_secs, "reconciled_secs": reconciled_secs }))
}

/// Watches from `args.from` with a raw client until every key of the history arrived.
async fn catchup_raw(args: &ChildArgs) -> anyhow::Result<Value> {
    let client = connect(&args.endpoint).await?;
    let mut kv = client.kv_client();
    kv.get("warm-up", None).await?;

    let started = Instant::now();
    let mut watch = client
        .watch_client()
        .max_decoding_message_size(RAW_MAX_RESPONSE_BYTES);
    let options = WatchOptions::new()
        .with_range(prefix_end(&args.prefix))
        .with_start_revision(args.from);
    let mut stream = watch.watch(args.prefix.as_str(), Some(options)).await?;
    let mut events = 0;
    while events < args.keys {
        let response = stream.message().await?.context("the watch ended")?;
        if response.canceled() {
            bail!("the watch was canceled: {}", response.cancel_reason());
        }
        events += response.events().len();
    }
    Ok(json!({ "secs": started.elapsed().as_secs_f64() }))
}

/// A source whose list is empty at `from - 1`, so the reflector's first watch starts at
/// `from` and replays the history through the real reflector.
struct CatchUp {
    inner: EtcdSource,
    from: Revision,
}

impl Source for CatchUp {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        self.inner.name()
    }

    async fn list_page(&self, _request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        Ok(Page {
            revision: self.from - 1,
            objects: Vec::new(),
            next: None,
        })
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        self.inner.watch(from).await
    }

    fn progress_interval(&self) -> Option<Duration> {
        self.inner.progress_interval()
    }
}

/// Replays the history from `args.from` through the whole pipeline.
async fn catchup_pipeline(args: &ChildArgs) -> anyhow::Result<Value> {
    let source = EtcdSource::connect(etcd_config(args)).await?;
    source
        .list_page(ListRequest {
            revision: None,
            continue_from: None,
            limit: 1,
        })
        .await?;
    let source = CatchUp {
        inner: source,
        from: args.from,
    };

    let started = Instant::now();
    let pipeline = start_pipeline(source, args, Reconciled::new(args.keys, false));
    let done_at = pipeline.reconciled.wait(Duration::from_secs(600)).await?;
    Ok(json!({ "secs": done_at.duration_since(started).as_secs_f64() }))
}

/// The events the raw consumer of the live and latency phases received.
struct RawSeen {
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    latencies: Vec<(u64, u64)>,
}

/// Counts `keys` events of a raw watch opened at `from`, with each event's latency when
/// `latency` is set.
async fn raw_consumer(
    args: &ChildArgs,
    from: i64,
    latency: bool,
) -> anyhow::Result<impl Future<Output = anyhow::Result<RawSeen>> + use<>> {
    let client = connect(&args.endpoint).await?;
    let mut watch = client
        .watch_client()
        .max_decoding_message_size(RAW_MAX_RESPONSE_BYTES);
    let options = WatchOptions::new()
        .with_range(prefix_end(&args.prefix))
        .with_start_revision(from);
    let mut stream = watch.watch(args.prefix.as_str(), Some(options)).await?;
    let keys = args.keys;
    Ok(async move {
        let mut seen = RawSeen {
            first_at: None,
            last_at: None,
            latencies: Vec::with_capacity(if latency { keys } else { 0 }),
        };
        let mut events = 0;
        while events < keys {
            let response = stream.message().await?.context("the watch ended")?;
            let now = Instant::now();
            if response.events().is_empty() {
                continue;
            }
            seen.first_at.get_or_insert(now);
            if latency {
                let now_micros = unix_micros();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = std::str::from_utf8(kv.key()).unwrap_or_default();
                    if let Some(put_at) = parse_timestamp(kv.value()) {
                        seen.latencies
                            .push((key_index(key), now_micros.saturating_sub(put_at)));
                    }
                }
            }
            events += response.events().len();
            seen.last_at = Some(now);
        }
        Ok(seen)
    })
}

/// Starts a raw watch and the pipeline on an empty prefix, prints `ready`, and waits for
/// `args.keys` writes to reach both.
async fn watch_both(args: &ChildArgs, latency: bool) -> anyhow::Result<(RawSeen, Arc<Reconciled>)> {
    let mut client = connect(&args.endpoint).await?;
    let revision = client
        .get("warm-up", None)
        .await?
        .header()
        .context("no header")?
        .revision();
    let raw = tokio::spawn(raw_consumer(args, revision + 1, latency).await?);

    let source = EtcdSource::connect(etcd_config(args)).await?;
    let pipeline = start_pipeline(source, args, Reconciled::new(args.keys, latency));
    pipeline
        .health
        .wait_ready()
        .await
        .context("the reflector stopped")?;
    println!("ready");
    std::io::stdout().flush()?;

    let limit = Duration::from_secs(600);
    let raw = tokio::time::timeout(limit, raw)
        .await
        .context("the raw watch did not see every write")???;
    pipeline.reconciled.wait(limit).await?;
    Ok((raw, pipeline.reconciled.clone()))
}

/// Measures the rate at which each consumer keeps up with writes as they happen.
async fn live(args: &ChildArgs) -> anyhow::Result<Value> {
    let (raw, reconciled) = watch_both(args, false).await?;
    let raw_first = raw.first_at.context("no raw event")?;
    let pipeline_first = *reconciled.first_at.get().context("no reconcile")?;
    let start = raw_first.min(pipeline_first);
    let raw_secs = raw.last_at.context("no raw event")?.duration_since(start);
    let pipeline_secs = reconciled
        .done_at
        .get()
        .context("no last reconcile")?
        .duration_since(start);
    Ok(json!({
        "raw_secs": raw_secs.as_secs_f64(),
        "pipeline_secs": pipeline_secs.as_secs_f64(),
    }))
}

/// Measures the delay from each put to its raw watch event and to its reconcile.
async fn latency(args: &ChildArgs) -> anyhow::Result<Value> {
    let (raw, reconciled) = watch_both(args, true).await?;
    let pipeline = reconciled
        .latencies
        .as_ref()
        .context("latencies were recorded")?
        .lock()
        .clone();
    Ok(json!({
        "raw": percentiles(raw.latencies, args.warm_up_keys),
        "pipeline": percentiles(pipeline, args.warm_up_keys),
    }))
}

/// The percentiles the latency table and plot show.
pub const PERCENTILES: [f64; 7] = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0];

/// Returns latency percentiles in microseconds, leaving out keys below `warm_up_keys`.
fn percentiles(samples: Vec<(u64, u64)>, warm_up_keys: u64) -> Value {
    let mut micros: Vec<u64> = samples
        .into_iter()
        .filter(|(index, _)| *index >= warm_up_keys)
        .map(|(_, micros)| micros)
        .collect();
    micros.sort_unstable();
    let at = |percentile: f64| -> u64 {
        if micros.is_empty() {
            return 0;
        }
        let rank = (percentile / 100.0 * micros.len() as f64).ceil() as usize;
        micros[rank.clamp(1, micros.len()) - 1]
    };
    let values: Vec<u64> = PERCENTILES.iter().map(|p| at(*p)).collect();
    json!({ "samples": micros.len(), "micros": values })
}
