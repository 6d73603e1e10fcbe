//! Times the client-side work of a list and of a watch on one thread, on response bodies read
//! beforehand, so that neither the server nor the network is in the numbers.
//!
//! The list is the unpaged list of every ConfigMap, and the watch is every change after the
//! catch-up's start revision. Each consumer's work is timed as a whole and in cumulative
//! stages, so that the difference of two stages is the cost of one step:
//!
//! - kube's client deserializes the body straight into `ConfigMap`s. kube-runtime's store
//!   then clones each one into an `Arc` and inserts it.
//! - informer's source splits the body into each object's JSON text and reads the key,
//!   revision and incarnation from its metadata, skipping the other fields. The
//!   `Json<ConfigMap>` decoder parses each object's text into a `ConfigMap`, and the cache's
//!   writer decodes and inserts them.
//!
//! A list stage keeps what it built, as a list does, and the clock stops before it is freed.
//! A watch stage handles one event at a time and frees it, as a watch consumer does, and the
//! stores it applies to contain the listed objects first. Each stage runs [`REPEATS`] times, and
//! the median is reported in microseconds per object or per event.

use std::borrow::Cow;
use std::time::Instant;

use anyhow::bail;
use bytes::Bytes;
use informer::cache::{Store, Writer};
use informer::decode::{Decoder, Json};
use informer::metrics::Metrics;
use informer::source::{Batch, Change, Object, Revision};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, ObjectList, WatchEvent, WatchParams};
use kube_runtime::watcher;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::ChildArgs;
use crate::child::{client, source_object, source_objects};
use crate::harness::median;

/// Repetitions of each stage.
const REPEATS: usize = 3;

/// The server timeout of the watch whose body is read. The server sends every change of the
/// history first, however long that takes, and then ends the response at the timeout.
const WATCH_SECS: u32 = 1;

/// A watch event as informer's Kubernetes source deserializes it: the object stays JSON text.
#[derive(Deserialize)]
struct SourceEventLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    object: &'a RawValue,
}

/// Runs `stage` [`REPEATS`] times, each on a fresh input from `prepare`, and returns the
/// median time per item in microseconds. `stage` returns the number of items it handled and
/// what it built, which is freed after the clock stops.
fn time_stage<I, O>(
    mut prepare: impl FnMut() -> anyhow::Result<I>,
    mut stage: impl FnMut(I) -> anyhow::Result<(usize, O)>,
) -> anyhow::Result<f64> {
    let mut samples = Vec::with_capacity(REPEATS);
    for _ in 0..REPEATS {
        let input = prepare()?;
        let started = Instant::now();
        let (items, built) = stage(input)?;
        let micros = started.elapsed().as_secs_f64() * 1e6;
        drop(built);
        samples.push(micros / items.max(1) as f64);
    }
    Ok(median(&samples))
}

/// Reads the response bodies, then times every stage of the list and of the watch.
pub async fn breakdown(args: &ChildArgs) -> anyhow::Result<Value> {
    let client = client(args)?;
    let collection = kube::core::Request::new("/api/v1/configmaps");
    let list_text = client
        .request_text(collection.list(&ListParams::default())?)
        .await?;
    let watch_params = WatchParams::default().timeout(WATCH_SECS);
    let watch_text = client
        .request_text(collection.watch(&watch_params, &args.from.to_string())?)
        .await?;
    let lines: Vec<&str> = watch_text
        .lines()
        .filter(|line| line.contains(r#""type":"MODIFIED""#))
        .collect();
    if lines.len() != args.updates {
        bail!(
            "the watch body contains {} changes, expected {}",
            lines.len(),
            args.updates
        );
    }

    let list = time_list(args.objects, &list_text)?;
    let watch = time_watch(args, &list_text, &lines)?;
    Ok(json!({ "list": list, "watch": watch }))
}

/// Fails unless a stage handled `expected` items, and returns the count.
fn check(count: usize, expected: usize) -> anyhow::Result<usize> {
    if count != expected {
        bail!("a stage handled {count} items, expected {expected}");
    }
    Ok(count)
}

/// Returns a writer over an empty cache.
fn new_writer() -> Writer<Bytes, Json<ConfigMap>> {
    Writer::new(
        Store::new("breakdown", Metrics::default()),
        Json::<ConfigMap>::new(),
    )
}

/// Applies `objects` to `writer` as one list.
fn relist(writer: &Writer<Bytes, Json<ConfigMap>>, objects: Vec<Object<Bytes>>) {
    let revision: Revision = objects
        .iter()
        .map(|object| object.revision)
        .max()
        .unwrap_or(0);
    let mut relist = writer.relist();
    relist.add_page(objects);
    relist.finish(revision);
}

/// Returns a kube-runtime store writer after a list of `objects`, and its reader.
fn kube_runtime_store(
    objects: Vec<ConfigMap>,
) -> (
    kube_runtime::reflector::Store<ConfigMap>,
    kube_runtime::reflector::store::Writer<ConfigMap>,
) {
    let (reader, mut writer) = kube_runtime::reflector::store::<ConfigMap>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (reader, writer)
}

fn time_list(objects: usize, text: &str) -> anyhow::Result<Value> {
    let decoder = Json::<ConfigMap>::new();

    let kube_client = time_stage(
        || Ok(()),
        |()| {
            let list: ObjectList<ConfigMap> = serde_json::from_str(text)?;
            Ok((check(list.items.len(), objects)?, list))
        },
    )?;
    let kube_runtime = time_stage(
        || Ok(()),
        |()| {
            let list: ObjectList<ConfigMap> = serde_json::from_str(text)?;
            let (reader, writer) = kube_runtime_store(list.items);
            Ok((check(reader.state().len(), objects)?, (reader, writer)))
        },
    )?;
    let source = time_stage(
        || Ok(()),
        |()| {
            let built = source_objects(text)?;
            Ok((check(built.len(), objects)?, built))
        },
    )?;
    let decoded = time_stage(
        || Ok(()),
        |()| {
            let mut decoded = Vec::with_capacity(objects);
            for object in source_objects(text)? {
                decoded.push(decoder.decode(&object.key, &object.value)?);
            }
            Ok((check(decoded.len(), objects)?, decoded))
        },
    )?;
    let pipeline = time_stage(
        || Ok(new_writer()),
        |writer| {
            relist(&writer, source_objects(text)?);
            Ok((check(writer.store().len(), objects)?, writer))
        },
    )?;

    Ok(json!({
        "kube_client_us": kube_client,
        "kube_runtime_us": kube_runtime,
        "source_us": source,
        "decoded_us": decoded,
        "pipeline_us": pipeline,
    }))
}

/// Parses one watch line as the source does.
fn source_batch(line: &str) -> anyhow::Result<Batch<Bytes>> {
    let event: SourceEventLine<'_> = serde_json::from_str(line)?;
    if event.kind != "MODIFIED" {
        bail!("an unexpected {} event", event.kind);
    }
    let object = source_object(Bytes::copy_from_slice(event.object.get().as_bytes()))?;
    Ok(Batch {
        revision: object.revision,
        changes: vec![Change::Put(object)],
    })
}

fn time_watch(args: &ChildArgs, list_text: &str, lines: &[&str]) -> anyhow::Result<Value> {
    let updates = args.updates;
    let decoder = Json::<ConfigMap>::new();

    let kube_client = time_stage(
        || Ok(()),
        |()| {
            let mut count = 0;
            for line in lines {
                if let WatchEvent::Modified(_) =
                    serde_json::from_str::<WatchEvent<ConfigMap>>(line)?
                {
                    count += 1;
                }
            }
            Ok((check(count, updates)?, ()))
        },
    )?;
    let kube_runtime = time_stage(
        || {
            let list: ObjectList<ConfigMap> = serde_json::from_str(list_text)?;
            Ok(kube_runtime_store(list.items))
        },
        |(reader, mut writer)| {
            let mut count = 0;
            for line in lines {
                if let WatchEvent::Modified(object) = serde_json::from_str(line)? {
                    writer.apply_watcher_event(&watcher::Event::Apply(object));
                    count += 1;
                }
            }
            check(reader.state().len(), args.objects)?;
            Ok((check(count, updates)?, (reader, writer)))
        },
    )?;
    let source = time_stage(
        || Ok(()),
        |()| {
            let mut count = 0;
            for line in lines {
                source_batch(line)?;
                count += 1;
            }
            Ok((check(count, updates)?, ()))
        },
    )?;
    let decoded = time_stage(
        || Ok(()),
        |()| {
            let mut count = 0;
            for line in lines {
                for change in source_batch(line)?.changes {
                    if let Change::Put(object) = change {
                        decoder.decode(&object.key, &object.value)?;
                        count += 1;
                    }
                }
            }
            Ok((check(count, updates)?, ()))
        },
    )?;
    let pipeline = time_stage(
        || {
            let writer = new_writer();
            relist(&writer, source_objects(list_text)?);
            Ok(writer)
        },
        |writer| {
            let mut last = 0;
            for line in lines {
                let batch = source_batch(line)?;
                last = batch.revision;
                writer.apply(batch);
            }
            if writer.store().revision() != last {
                bail!("the cache did not reach the last change's revision {last}");
            }
            Ok((check(lines.len(), updates)?, writer))
        },
    )?;

    Ok(json!({
        "kube_client_us": kube_client,
        "kube_runtime_us": kube_runtime,
        "source_us": source,
        "decoded_us": decoded,
        "pipeline_us": pipeline,
    }))
}
