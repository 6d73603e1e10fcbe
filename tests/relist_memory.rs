//! Peak memory of a relist, measured with a counting allocator.
//!
//! A relist keeps the current contents, marks unchanged keys in place and stages only changed
//! values, so its peak stays close to the steady state when few values changed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use informer::cache::{Store, Writer};
use informer::decode::Json;
use informer::metrics::Metrics;
use informer::source::{Incarnation, Object};

/// Counts live heap bytes and the peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: usize = 20_000;
const PAGE: usize = 1_000;

/// Builds page `page` of the snapshot; keys below `changed_below` carry a new revision.
fn page(page: usize, changed_below: usize) -> Vec<Object<Bytes>> {
    (page * PAGE..(page + 1) * PAGE)
        .map(|i| {
            let changed = i < changed_below;
            let revision = if changed { 2 * KEYS as i64 + i as i64 } else { i as i64 + 1 };
            let value = format!(
                r#"{{"name":"service-{i}","replicas":{},"image":"registry.local/team/service-{i}:1.{revision}","labels":{{"team":"t{}","tier":"backend"}}}}"#,
                i % 7,
                i % 13
            );
            Object {
                key: Arc::from(format!("/services/service-{i:06}")),
                revision,
                incarnation: Incarnation::CreateRevision(i as i64 + 1),
                value: Bytes::from(value),
            }
        })
        .collect()
}

fn list(writer: &Writer<Bytes, Json<serde_json::Value>>, changed_below: usize, revision: i64) {
    let mut relist = writer.relist();
    for index in 0..KEYS / PAGE {
        relist.add_page(page(index, changed_below));
    }
    relist.finish(revision);
}

/// Returns (steady bytes, peak bytes during a relist) above the empty baseline.
fn measure(changed_below: usize) -> (usize, usize) {
    let baseline = LIVE.load(Ordering::SeqCst);
    let writer = Writer::new(
        Store::new("memory-test", Metrics::default()),
        Json::<serde_json::Value>::new(),
    );
    list(&writer, 0, KEYS as i64);
    let steady = LIVE.load(Ordering::SeqCst) - baseline;

    PEAK.store(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
    list(&writer, changed_below, 3 * KEYS as i64);
    let peak = PEAK.load(Ordering::SeqCst) - baseline;
    assert_eq!(writer.store().len(), KEYS);
    (steady, peak)
}

// One test function, so no other test allocates concurrently while the counters run.
#[test]
fn relist_peak_within_bound() {
    let (steady, peak) = measure(0);
    let ratio = peak as f64 / steady as f64;
    eprintln!("unchanged relist: steady {steady} B, peak {peak} B, ratio {ratio:.3}");
    assert!(ratio <= 1.3, "unchanged relist peak ratio {ratio:.3}");

    let (steady, peak) = measure(KEYS / 10);
    let ratio = peak as f64 / steady as f64;
    eprintln!("relist with 10% changed: steady {steady} B, peak {peak} B, ratio {ratio:.3}");
    assert!(ratio <= 1.3, "10% changed relist peak ratio {ratio:.3}");
}
