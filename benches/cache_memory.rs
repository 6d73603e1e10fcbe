//! Memory of the cache beside kube-runtime's reflector store, holding the same ConfigMaps.
//!
//! A counting global allocator records the bytes the program requests, live and peak. It does
//! not see the allocator's own per-block overhead, which is the same for both stores.
//!
//! For each size the bench measures:
//!
//! - **bytes per object**: live bytes of the filled store, minus the empty baseline, divided by
//!   the number of objects. informer's [`Writer`] decodes each object's JSON text in
//!   [`Bytes`] (the Kubernetes source's raw form) with [`Json<ConfigMap>`]; kube-runtime's
//!   store is filled
//!   with `Init`, `InitApply` per object and `InitDone`, as its watcher does on start.
//! - **relist peak / steady**: the highest live bytes during a second full list, divided by the
//!   steady state, both above the baseline. The list arrives in pages of [`PAGE`] objects, the
//!   default page size of informer's Kubernetes source and of kube-runtime's watcher, and the
//!   page being applied counts towards the peak. informer relists with [`Writer::relist`],
//!   once with every object unchanged and once with every tenth object changed.
//!
//! Each store is measured as is and with `metadata.managedFields` dropped before caching:
//! informer through [`Transform`] with [`drop_managed_fields`], kube-runtime by the same
//! change applied to each object before the store sees it, which is what `.modify()` on its
//! watcher stream does.
//!
//! `cargo bench --bench cache_memory` measures 10,000 and 100,000 objects. Without `--bench`
//! (as under `cargo test --all-targets`) it measures 200 objects once, as a smoke test.
//! `-- --json PATH` also writes the results as JSON.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use informer::cache::{Store, Writer};
use informer::decode::{Decoder, Json, Transform, drop_managed_fields};
use informer::metrics::Metrics;
use informer::source::{Incarnation, Object};
use k8s_openapi::api::core::v1::ConfigMap;
use kube_runtime::{reflector, watcher};
use serde_json::{Value, json};

#[path = "../examples/bench_common/config_map.rs"]
mod shape;

/// Counts the bytes requested from the system allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes as isize, Ordering::Relaxed) + bytes as isize;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(bytes: usize) {
    LIVE.fetch_sub(bytes as isize, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` with the same arguments; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            grow(layout.size());
        }
        pointer
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let pointer = unsafe { System.alloc_zeroed(layout) };
        if !pointer.is_null() {
            grow(layout.size());
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(pointer, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(live(), Ordering::Relaxed);
}

fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Objects per list page.
const PAGE: usize = 500;

/// The resource version of the first list. A changed object gets `FIRST_VERSION + 1 + index`.
const FIRST_VERSION: u64 = 1_000;

/// The version of a list: the first one, or one with changed objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    /// The first list.
    First,
    /// Every tenth object has a new resource version and new data.
    TenthChanged,
}

fn changed(index: usize, version: Version) -> bool {
    version == Version::TenthChanged && index % 10 == 0
}

/// Returns ConfigMap number `index` of a list of `version`.
fn config_map(index: usize, version: Version) -> Value {
    let is_changed = changed(index, version);
    let resource_version = if is_changed {
        FIRST_VERSION + 1 + index as u64
    } else {
        FIRST_VERSION + index as u64
    };
    let log_level = if is_changed { "debug" } else { "info" };
    shape::config_map(index, resource_version, log_level)
}

/// Returns page `page` of a list in informer's raw form.
fn informer_page(page: usize, objects: usize, version: Version) -> Vec<Object<Bytes>> {
    page_range(page, objects)
        .map(|index| {
            let value = config_map(index, version);
            let metadata = &value["metadata"];
            let key = format!(
                "{}/{}",
                metadata["namespace"].as_str().expect("a namespace"),
                metadata["name"].as_str().expect("a name")
            );
            let revision = metadata["resourceVersion"]
                .as_str()
                .and_then(|version| version.parse().ok())
                .expect("a numeric resourceVersion");
            let uid = metadata["uid"].as_str().expect("a uid");
            Object {
                key: Arc::from(key),
                revision,
                incarnation: Incarnation::Uid(Arc::from(uid)),
                value: Bytes::from(serde_json::to_vec(&value).expect("serialize a ConfigMap")),
            }
        })
        .collect()
}

/// Returns page `page` of a list as kube-runtime's watcher hands it over: typed objects,
/// parsed from JSON text as kube's client parses a response.
fn kube_page(page: usize, objects: usize, version: Version, strip: bool) -> Vec<ConfigMap> {
    page_range(page, objects)
        .map(|index| {
            let text = serde_json::to_vec(&config_map(index, version)).expect("serialize");
            let mut object: ConfigMap = serde_json::from_slice(&text).expect("a valid ConfigMap");
            if strip {
                object.metadata.managed_fields = None;
            }
            object
        })
        .collect()
}

fn page_range(page: usize, objects: usize) -> std::ops::Range<usize> {
    page * PAGE..((page + 1) * PAGE).min(objects)
}

fn pages(objects: usize) -> usize {
    objects.div_ceil(PAGE)
}

/// The measurements of one store.
#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    bytes_per_object: f64,
    steady_bytes: isize,
    peak_unchanged: f64,
    peak_changed: f64,
    relist_unchanged: Duration,
    relist_changed: Duration,
}

/// Lists every page into informer's writer and returns the list time.
fn informer_list<D: Decoder<Bytes>>(
    writer: &Writer<Bytes, D>,
    objects: usize,
    version: Version,
) -> Duration {
    let started = Instant::now();
    let mut relist = writer.relist();
    for page in 0..pages(objects) {
        relist.add_page(informer_page(page, objects, version));
    }
    let summary = relist.finish(FIRST_VERSION as i64 + objects as i64 + 1);
    assert_eq!(summary.invalid, 0, "every object decodes");
    started.elapsed()
}

fn measure_informer<D: Decoder<Bytes>>(decoder: D, objects: usize) -> Measured {
    let base = live();
    let writer = Writer::new(Store::new("bench", Metrics::default()), decoder);
    informer_list(&writer, objects, Version::First);
    assert_eq!(writer.store().len(), objects);
    let steady = live() - base;

    reset_peak();
    let relist_unchanged = informer_list(&writer, objects, Version::First);
    let peak_unchanged = peak() - base;

    reset_peak();
    let relist_changed = informer_list(&writer, objects, Version::TenthChanged);
    let peak_changed = peak() - base;
    assert_eq!(writer.store().len(), objects);

    Measured {
        bytes_per_object: steady as f64 / objects as f64,
        steady_bytes: steady,
        peak_unchanged: peak_unchanged as f64 / steady as f64,
        peak_changed: peak_changed as f64 / steady as f64,
        relist_unchanged,
        relist_changed,
    }
}

/// Lists every page into kube-runtime's writer and returns the list time.
fn kube_list(
    writer: &mut reflector::store::Writer<ConfigMap>,
    objects: usize,
    version: Version,
    strip: bool,
) -> Duration {
    let started = Instant::now();
    writer.apply_watcher_event(&watcher::Event::Init);
    for page in 0..pages(objects) {
        for object in kube_page(page, objects, version, strip) {
            writer.apply_watcher_event(&watcher::Event::InitApply(object));
        }
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    started.elapsed()
}

fn measure_kube(objects: usize, strip: bool) -> Measured {
    let base = live();
    let mut writer = reflector::store::Writer::<ConfigMap>::default();
    let store = writer.as_reader();
    kube_list(&mut writer, objects, Version::First, strip);
    assert_eq!(store.state().len(), objects);
    let steady = live() - base;

    reset_peak();
    let relist_unchanged = kube_list(&mut writer, objects, Version::First, strip);
    let peak_unchanged = peak() - base;

    reset_peak();
    let relist_changed = kube_list(&mut writer, objects, Version::TenthChanged, strip);
    let peak_changed = peak() - base;
    assert_eq!(store.state().len(), objects);

    Measured {
        bytes_per_object: steady as f64 / objects as f64,
        steady_bytes: steady,
        peak_unchanged: peak_unchanged as f64 / steady as f64,
        peak_changed: peak_changed as f64 / steady as f64,
        relist_unchanged,
        relist_changed,
    }
}

/// Returns the bytes per object of the decoded objects alone, each in an `Arc` as both stores
/// keep them, without any store around them.
fn measure_values(objects: usize, strip: bool) -> f64 {
    let base = live();
    let mut values = Vec::with_capacity(objects);
    for page in 0..pages(objects) {
        values.extend(
            kube_page(page, objects, Version::First, strip)
                .into_iter()
                .map(Arc::new),
        );
    }
    let bytes = live() - base - (values.capacity() * size_of::<Arc<ConfigMap>>()) as isize;
    bytes as f64 / objects as f64
}

/// The results of one size.
struct Row {
    objects: usize,
    managed_fields: &'static str,
    /// Bytes per object of the objects alone.
    values: f64,
    informer: Measured,
    kube: Measured,
}

fn measure(objects: usize) -> Vec<Row> {
    let kept = Row {
        objects,
        managed_fields: "kept",
        values: measure_values(objects, false),
        informer: measure_informer(Json::<ConfigMap>::new(), objects),
        kube: measure_kube(objects, false),
    };
    let dropped = Row {
        objects,
        managed_fields: "dropped",
        values: measure_values(objects, true),
        informer: measure_informer(
            Transform::new(Json::<ConfigMap>::new(), drop_managed_fields::<ConfigMap>),
            objects,
        ),
        kube: measure_kube(objects, true),
    };
    vec![kept, dropped]
}

fn print_tables(rows: &[Row]) {
    println!(
        "| objects | managedFields | informer B/object | kube-runtime B/object | informer ÷ kube-runtime | objects alone B/object | informer store overhead B/object | kube-runtime store overhead B/object |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
            row.objects,
            row.managed_fields,
            row.informer.bytes_per_object,
            row.kube.bytes_per_object,
            row.informer.bytes_per_object / row.kube.bytes_per_object,
            row.values,
            row.informer.bytes_per_object - row.values,
            row.kube.bytes_per_object - row.values,
        );
    }
    println!();
    println!(
        "| objects | managedFields | informer relist peak ÷ steady, unchanged | informer, 10% changed | kube-runtime, unchanged | kube-runtime, 10% changed |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            row.objects,
            row.managed_fields,
            row.informer.peak_unchanged,
            row.informer.peak_changed,
            row.kube.peak_unchanged,
            row.kube.peak_changed,
        );
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn to_json(rows: &[Row]) -> Value {
    let side = |m: &Measured| {
        json!({
            "bytes_per_object": m.bytes_per_object,
            "steady_bytes": m.steady_bytes,
            "peak_unchanged": m.peak_unchanged,
            "peak_changed": m.peak_changed,
            "relist_unchanged_ms": millis(m.relist_unchanged),
            "relist_changed_ms": millis(m.relist_changed),
        })
    };
    Value::Array(
        rows.iter()
            .map(|row| {
                json!({
                    "objects": row.objects,
                    "managed_fields": row.managed_fields,
                    "objects_alone_bytes_per_object": row.values,
                    "informer": side(&row.informer),
                    "kube_runtime": side(&row.kube),
                })
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|arg| arg == "--bench");
    let json_path = args
        .iter()
        .position(|arg| arg == "--json")
        .and_then(|at| args.get(at + 1))
        .cloned();
    let sizes: &[usize] = if full { &[10_000, 100_000] } else { &[200] };

    let mut rows = Vec::new();
    for &objects in sizes {
        rows.extend(measure(objects));
    }
    print_tables(&rows);

    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&to_json(&rows)).expect("serialize the results");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}
