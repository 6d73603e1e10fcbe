//! The measurements, each run in its own child process so that its peak RSS and CPU time are
//! its own.
//!
//! A child connects to the test server in the parent over HTTP, runs one phase and prints one
//! JSON object on its last stdout line. The live phase first prints `ready` once both
//! consumers are watching, and the parent starts writing then. Every phase checks that each
//! consumer saw exactly the objects or changes the parent wrote, and fails otherwise.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use informer::cache::Store;
use informer::decode::Json;
use informer::metrics::Metrics;
use informer::reflector::{HealthWatch, Reflector, ReflectorConfig};
use informer::source::kubernetes::{KubernetesConfig, KubernetesSource};
use informer::source::{
    ErrorClass, Incarnation, ListRequest, Object, Page, Revision, Source, SourceError, WatchStream,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, VersionMatch, WatchEvent, WatchParams};
use kube_runtime::watcher;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::{ChildArgs, Phase, TOKEN_VAR, breakdown, change_value, config_map, harness};

/// The maximum time a phase waits for the last object or change.
const LIMIT: Duration = Duration::from_secs(600);

/// How often the pipeline's cache revision is read while a watch phase runs. Reading it adds
/// nothing to the pipeline's work per event, but the end is noticed up to this much later.
const POLL: Duration = Duration::from_millis(1);

/// Runs one phase and prints its result.
pub async fn run(args: ChildArgs) -> anyhow::Result<()> {
    harness::run_child(async {
        match args.phase {
            Phase::ListRaw => list_raw(&args).await,
            Phase::ListPipeline => list_pipeline(&args).await,
            Phase::ListKubeRuntime => list_kube_runtime(&args).await,
            Phase::CatchupRaw => catchup_raw(&args).await,
            Phase::CatchupPipeline => catchup_pipeline(&args).await,
            Phase::Live => live(&args).await,
            Phase::Breakdown => breakdown::breakdown(&args).await,
        }
    })
    .await
}

/// Builds a kube client for the server, with the token from the environment.
pub fn client(args: &ChildArgs) -> anyhow::Result<kube::Client> {
    let token = std::env::var(TOKEN_VAR)
        .with_context(|| format!("{TOKEN_VAR} is not set; the parent process sets it"))?;
    let url = args
        .url
        .parse()
        .with_context(|| format!("invalid server URL {:?}", args.url))?;
    let mut config = kube::Config::new(url);
    config.auth_info = serde_json::from_value(json!({ "token": token }))?;
    Ok(kube::Client::try_from(config)?)
}

/// Returns a kube API for ConfigMaps in every namespace, with its connection open.
async fn open_api(args: &ChildArgs) -> anyhow::Result<Api<ConfigMap>> {
    let api: Api<ConfigMap> = Api::all(client(args)?);
    // The connection opens on the first request, so open it before the clock starts.
    api.list(&ListParams::default().limit(1)).await?;
    Ok(api)
}

/// Returns the cache key of ConfigMap number `index`.
fn key(index: usize) -> String {
    format!(
        "{}/{}",
        config_map::namespace(index),
        config_map::name(index)
    )
}

/// Lists every ConfigMap with kube's `Api::list`, keeping every object, in pages of
/// `args.page_size` (0: one request without a limit).
async fn list_raw(args: &ChildArgs) -> anyhow::Result<Value> {
    let api = open_api(args).await?;

    let started = Instant::now();
    let mut params = ListParams::default();
    if args.page_size > 0 {
        params = params.limit(u32::try_from(args.page_size)?);
    }
    let mut listed: Vec<ConfigMap> = Vec::new();
    let mut pages = 0;
    loop {
        let list = api.list(&params).await?;
        pages += 1;
        listed.extend(list.items);
        match list.metadata.continue_ {
            Some(token) if !token.is_empty() => params.continue_token = Some(token),
            _ => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();

    if listed.len() != args.objects {
        bail!(
            "listed {} ConfigMaps, expected {}",
            listed.len(),
            args.objects
        );
    }
    Ok(json!({ "secs": secs, "pages": pages }))
}

/// A reflector over one source, with the handles the phases read.
struct Pipeline {
    store: Store<ConfigMap>,
    health: HealthWatch,
    metrics: Metrics,
    name: Arc<str>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Returns the pipeline's page size: `--page-size`, or every object in one page for 0.
fn pipeline_page_size(args: &ChildArgs) -> usize {
    match args.page_size {
        0 => args.objects.max(1),
        page_size => page_size,
    }
}

/// Returns a Kubernetes source for ConfigMaps in every namespace at the phase's page size.
fn kubernetes_source(args: &ChildArgs) -> anyhow::Result<KubernetesSource> {
    let page_size = u32::try_from(pipeline_page_size(args))?;
    let config = KubernetesConfig::new::<ConfigMap>().page_size(page_size);
    Ok(KubernetesSource::new(client(args)?, config))
}

/// Opens the source's connection with a list of one object, before the clock starts.
async fn open_source(source: &KubernetesSource) -> anyhow::Result<()> {
    source
        .list_page(ListRequest {
            revision: None,
            continue_from: None,
            limit: 1,
        })
        .await?;
    Ok(())
}

/// Starts a reflector that decodes `source`'s objects into ConfigMaps.
fn start_pipeline<S>(source: S, args: &ChildArgs) -> Pipeline
where
    S: Source<Value = Bytes>,
{
    let metrics = Metrics::default();
    let name = source.name().clone();
    let config = ReflectorConfig {
        page_size: pipeline_page_size(args),
        ..ReflectorConfig::default()
    };
    let reflector =
        Reflector::with_metrics(source, Json::<ConfigMap>::new(), metrics.clone()).config(config);
    Pipeline {
        store: reflector.store(),
        health: reflector.health(),
        metrics,
        name,
        task: tokio::spawn(reflector.run()),
    }
}

impl Pipeline {
    /// Stops the reflector and waits until it has stopped, so that it is not cut off in the
    /// middle of a request when the process exits.
    async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Fails if the reflector met an error, listed again, restarted its watch or could not
    /// decode an object: each would make the measurement something other than one list and
    /// one watch.
    fn check_clean(&self) -> anyhow::Result<()> {
        let name = &self.name;
        for class in [
            ErrorClass::Expired,
            ErrorClass::Transient,
            ErrorClass::Permanent,
        ] {
            let errors = self.metrics.source_errors(name, class);
            if errors > 0 {
                bail!(
                    "the source failed {errors} times with {class:?} errors; last: {:?}",
                    self.health.get().last_error
                );
            }
        }
        let relists = self.metrics.relists(name);
        let restarts = self.metrics.watch_restarts(name);
        let decode_errors = self.store.decode_errors().len();
        if relists + restarts > 0 || decode_errors > 0 {
            bail!(
                "the reflector listed {relists} extra times, restarted its watch {restarts} times and failed to decode {decode_errors} objects"
            );
        }
        Ok(())
    }

    /// Returns the number of watch batches the reflector applied, from its metrics.
    fn watch_batches(&self) -> anyhow::Result<u64> {
        let mut registry = prometheus_client::registry::Registry::default();
        self.metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        let line = text
            .lines()
            .find(|line| line.starts_with("informer_watch_batches_total{"))
            .context("no informer_watch_batches_total in the metrics")?;
        let count = line
            .rsplit(' ')
            .next()
            .with_context(|| format!("no value in {line:?}"))?;
        Ok(count.parse()?)
    }

    /// Polls the cache revision until it passes `from` and until it reaches `target`, and
    /// returns both times.
    async fn wait_revision(&self, from: Revision, target: Revision) -> anyhow::Result<Progress> {
        let deadline = Instant::now() + LIMIT;
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first_at = None;
        loop {
            tick.tick().await;
            let now = Instant::now();
            let revision = self.store.revision();
            if revision > from {
                first_at.get_or_insert(now);
            }
            if revision >= target {
                return Ok(Progress {
                    first_at: first_at.unwrap_or(now),
                    done_at: now,
                });
            }
            if now > deadline {
                bail!("the cache reached resourceVersion {revision} of {target} within {LIMIT:?}");
            }
        }
    }

    /// Checks that every changed ConfigMap in the cache has the value of its last change.
    fn check_values(&self, args: &ChildArgs) -> anyhow::Result<()> {
        for index in 0..args.objects.min(args.updates) {
            // The last change to ConfigMap `index` is the largest number below `updates` that
            // is `index` modulo `objects`.
            let last_change = index + (args.updates - 1 - index) / args.objects * args.objects;
            let expected = change_value(&args.label, last_change);
            let key = key(index);
            let cached = self
                .store
                .get(&key)
                .with_context(|| format!("{key} is not in the cache"))?;
            let actual = cached
                .value
                .data
                .as_ref()
                .and_then(|data| data.get("LOG_LEVEL"));
            if actual != Some(&expected) {
                bail!("{key} has LOG_LEVEL {actual:?} in the cache, expected {expected:?}");
            }
        }
        Ok(())
    }
}

/// When a watch consumer saw its first and its last change.
struct Progress {
    first_at: Instant,
    done_at: Instant,
}

/// Lists every ConfigMap through `KubernetesSource`, `Reflector` and `Store`, until the
/// reflector reports the first list applied.
async fn list_pipeline(args: &ChildArgs) -> anyhow::Result<Value> {
    let source = kubernetes_source(args)?;
    open_source(&source).await?;

    let started = Instant::now();
    let pipeline = start_pipeline(source, args);
    pipeline
        .health
        .wait_synced()
        .await
        .context("the reflector stopped")?;
    let secs = started.elapsed().as_secs_f64();

    let cached = pipeline.store.len();
    if cached != args.objects {
        bail!(
            "the cache contains {cached} ConfigMaps, expected {}",
            args.objects
        );
    }
    pipeline.check_clean()?;
    pipeline.stop().await;
    Ok(json!({ "secs": secs }))
}

/// Lists every ConfigMap through kube-runtime's `watcher` and `reflector` store, until the
/// watcher's `InitDone`.
async fn list_kube_runtime(args: &ChildArgs) -> anyhow::Result<Value> {
    let api = open_api(args).await?;
    let page_size = match args.page_size {
        0 => None,
        page_size => Some(u32::try_from(page_size)?),
    };
    let config = watcher::Config {
        page_size,
        ..watcher::Config::default()
    };

    let started = Instant::now();
    let (reader, writer) = kube_runtime::reflector::store::<ConfigMap>();
    let mut events = kube_runtime::reflector(writer, watcher(api, config)).boxed();
    loop {
        match events.try_next().await? {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => bail!("the watcher ended before InitDone"),
        }
    }
    let secs = started.elapsed().as_secs_f64();

    let cached = reader.state().len();
    if cached != args.objects {
        bail!(
            "kube-runtime's store contains {cached} ConfigMaps, expected {}",
            args.objects
        );
    }
    Ok(json!({ "secs": secs }))
}

/// The changes a raw watch received.
struct RawSeen {
    events: usize,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

/// Opens kube's `Api::watch` after resourceVersion `from` and returns a future that counts
/// its changes up to `from + updates`. Each change arrives as a deserialized ConfigMap, which
/// the consumer drops.
async fn raw_watch(
    api: &Api<ConfigMap>,
    from: Revision,
    updates: usize,
) -> anyhow::Result<impl Future<Output = anyhow::Result<RawSeen>> + use<>> {
    let stream = api
        .watch(&WatchParams::default(), &from.to_string())
        .await?;
    let target = from + updates as Revision;
    Ok(async move {
        let mut stream = std::pin::pin!(stream);
        let mut seen = RawSeen {
            events: 0,
            first_at: None,
            last_at: None,
        };
        while let Some(event) = stream.try_next().await? {
            let now = Instant::now();
            let object = match event {
                WatchEvent::Modified(object) => object,
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Added(_) | WatchEvent::Deleted(_) => {
                    bail!("the raw watch received an unexpected {event:?}")
                }
                WatchEvent::Error(status) => bail!("the raw watch failed: {status:?}"),
            };
            seen.first_at.get_or_insert(now);
            seen.last_at = Some(now);
            seen.events += 1;
            let revision: Revision = object
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .parse()
                .context("a watch event without an integer resourceVersion")?;
            if revision >= target {
                return Ok(seen);
            }
        }
        bail!(
            "the raw watch ended after {} of {updates} changes",
            seen.events
        )
    })
}

/// Fails unless a raw watch saw exactly `updates` changes.
fn check_raw(seen: &RawSeen, updates: usize) -> anyhow::Result<()> {
    if seen.events != updates {
        bail!(
            "the raw watch received {} changes, expected {updates}",
            seen.events
        );
    }
    Ok(())
}

/// Watches the changes after `args.from` with kube's `Api::watch`.
async fn catchup_raw(args: &ChildArgs) -> anyhow::Result<Value> {
    let api = open_api(args).await?;

    let started = Instant::now();
    let seen = raw_watch(&api, args.from, args.updates).await?.await?;
    let secs = started.elapsed().as_secs_f64();

    check_raw(&seen, args.updates)?;
    let first_at = seen.first_at.context("no raw event")?;
    Ok(json!({
        "secs": secs,
        "first_secs": first_at.duration_since(started).as_secs_f64(),
    }))
}

/// A source whose list is the snapshot at the catch-up's start revision, read before the
/// clock starts, and whose watch is the Kubernetes source's. The reflector then lists that
/// snapshot and watches from the revision after it, so its first watch replays the history
/// through the real reflector and cache.
struct CatchUp {
    inner: KubernetesSource,
    snapshot: Mutex<Option<Page<Bytes>>>,
    /// When the reflector opened its watch: the start of the measurement.
    watch_started: Arc<OnceLock<Instant>>,
}

impl Source for CatchUp {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        self.inner.name()
    }

    async fn list_page(&self, _request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        self.snapshot
            .lock()
            .take()
            .ok_or_else(|| SourceError::Permanent {
                source_name: self.name().clone(),
                detail: "the reflector listed again".into(),
                action: "check the log for the error that made it relist".into(),
                cause: None,
            })
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        self.watch_started.get_or_init(Instant::now);
        self.inner.watch(from).await
    }

    fn progress_interval(&self) -> Option<Duration> {
        self.inner.progress_interval()
    }
}

/// Reads every ConfigMap as it was at `revision`, as the Kubernetes source's objects.
async fn snapshot_at(client: kube::Client, revision: Revision) -> anyhow::Result<Page<Bytes>> {
    let params = ListParams::default()
        .at(&revision.to_string())
        .matching(VersionMatch::Exact);
    let request = kube::core::Request::new("/api/v1/configmaps").list(&params)?;
    let text = client.request_text(request).await?;
    let objects =
        source_objects(&text).with_context(|| format!("the list at resourceVersion {revision}"))?;
    Ok(Page {
        revision,
        objects,
        next: None,
    })
}

/// A list body as informer's Kubernetes source reads it: each item stays JSON text.
#[derive(Deserialize)]
struct SourceListBody<'a> {
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

/// The metadata fields the source reads from an object's JSON text.
#[derive(Deserialize)]
struct SourceMetadataOnly<'a> {
    #[serde(borrow)]
    metadata: SourceMetadata<'a>,
}

#[derive(Deserialize)]
struct SourceMetadata<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    namespace: Cow<'a, str>,
    #[serde(borrow)]
    uid: Cow<'a, str>,
    #[serde(rename = "resourceVersion", borrow)]
    resource_version: Cow<'a, str>,
}

/// Parses a list body into the source's objects, as the source does.
pub fn source_objects(text: &str) -> anyhow::Result<Vec<Object<Bytes>>> {
    let body: SourceListBody<'_> = serde_json::from_str(text)?;
    body.items
        .unwrap_or_default()
        .into_iter()
        .map(|item| source_object(Bytes::copy_from_slice(item.get().as_bytes())))
        .collect()
}

/// Returns an object, given as JSON text, as the Kubernetes source returns it: keyed
/// `namespace/name`, at its resourceVersion, with its uid as the incarnation.
pub fn source_object(raw: Bytes) -> anyhow::Result<Object<Bytes>> {
    let (key, revision, incarnation) = {
        let parsed: SourceMetadataOnly<'_> = serde_json::from_slice(&raw)?;
        let metadata = parsed.metadata;
        let key = format!("{}/{}", metadata.namespace, metadata.name);
        let revision: Revision = metadata.resource_version.parse()?;
        (key, revision, Incarnation::Uid(Arc::from(&*metadata.uid)))
    };
    Ok(Object {
        key: Arc::from(key),
        revision,
        incarnation,
        value: raw,
    })
}

/// Replays the changes after `args.from` through the reflector and the cache, which contain
/// every ConfigMap as it was at `args.from` first.
async fn catchup_pipeline(args: &ChildArgs) -> anyhow::Result<Value> {
    let snapshot = snapshot_at(client(args)?, args.from).await?;
    let listed = snapshot.objects.len();
    if listed != args.objects {
        bail!(
            "listed {listed} ConfigMaps at resourceVersion {}, expected {}",
            args.from,
            args.objects
        );
    }
    let inner = kubernetes_source(args)?;
    open_source(&inner).await?;
    let watch_started = Arc::new(OnceLock::new());
    let source = CatchUp {
        inner,
        snapshot: Mutex::new(Some(snapshot)),
        watch_started: watch_started.clone(),
    };

    let pipeline = start_pipeline(source, args);
    let target = args.from + args.updates as Revision;
    let progress = pipeline.wait_revision(args.from, target).await?;
    let started = *watch_started.get().context("the reflector never watched")?;
    let secs = progress.done_at.duration_since(started).as_secs_f64();
    let first_secs = progress.first_at.duration_since(started).as_secs_f64();

    let batches = pipeline.watch_batches()?;
    if batches != args.updates as u64 {
        bail!(
            "the reflector applied {batches} watch batches, expected {}",
            args.updates
        );
    }
    pipeline.check_values(args)?;
    pipeline.check_clean()?;
    pipeline.stop().await;
    Ok(json!({ "secs": secs, "first_secs": first_secs }))
}

/// Starts kube's `Api::watch` and the pipeline on the same server, prints `ready`, and
/// measures how fast each receives the `args.updates` changes the parent then writes.
async fn live(args: &ChildArgs) -> anyhow::Result<Value> {
    let api = open_api(args).await?;
    let raw = tokio::spawn(raw_watch(&api, args.from, args.updates).await?);

    let source = kubernetes_source(args)?;
    let pipeline = start_pipeline(source, args);
    pipeline
        .health
        .wait_ready()
        .await
        .context("the reflector stopped")?;
    let listed_at = pipeline.store.revision();
    if listed_at != args.from {
        bail!(
            "the pipeline listed at resourceVersion {listed_at}, expected {}, so another client wrote to the server",
            args.from
        );
    }
    println!("ready");
    std::io::stdout().flush()?;

    let target = args.from + args.updates as Revision;
    let progress = pipeline.wait_revision(args.from, target).await?;
    let raw = tokio::time::timeout(LIMIT, raw)
        .await
        .context("the raw watch did not see every change")???;

    check_raw(&raw, args.updates)?;
    let batches = pipeline.watch_batches()?;
    if batches != args.updates as u64 {
        bail!(
            "the reflector applied {batches} watch batches, expected {}",
            args.updates
        );
    }
    pipeline.check_values(args)?;
    pipeline.check_clean()?;
    pipeline.stop().await;

    let raw_first = raw.first_at.context("no raw event")?;
    let start = raw_first.min(progress.first_at);
    let raw_secs = raw.last_at.context("no raw event")?.duration_since(start);
    let pipeline_secs = progress.done_at.duration_since(start);
    Ok(json!({
        "raw_secs": raw_secs.as_secs_f64(),
        "pipeline_secs": pipeline_secs.as_secs_f64(),
    }))
}
