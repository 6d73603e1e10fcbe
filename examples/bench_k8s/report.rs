//! The machine description and the Markdown tables of a run.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::harness::{self, field, median, mib, ratios};
use crate::{CATCHUP_THREADS, LIST_READERS, PAGE_SIZES, Results, RunArgs};

/// Describes the machine, the toolchain and the client crates.
pub fn environment() -> Value {
    let mut description = harness::machine();
    description.insert("kube".into(), json!("5.0"));
    description.insert("kube_runtime".into(), json!("5.0"));
    description.insert("k8s_openapi".into(), json!("0.29"));
    Value::Object(description)
}

/// Renders every table for which the results have data.
pub fn render(args: &RunArgs, environment: &Value, results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Environment: {environment}\n");
    if results.contains_key("list/pipeline/500") {
        list_table(&mut out, results, args.objects);
    }
    if results.contains_key(&format!("catchup/pipeline/{}", CATCHUP_THREADS[0])) {
        catchup_table(&mut out, results, args.updates);
    }
    if results.contains_key("live") {
        live_table(&mut out, results, args.updates);
    }
    if results.contains_key("breakdown") {
        breakdown_table(&mut out, results);
    }
    out
}

fn reader_label(reader: &str) -> &'static str {
    match reader {
        "raw" => "raw kube `Api::list`",
        "pipeline" => "pipeline",
        _ => "kube-runtime watcher + store",
    }
}

fn list_table(out: &mut String, results: &Results, objects: usize) {
    let case = |reader: &str, page: usize| format!("list/{reader}/{page}");
    let runs = field(results, &case("raw", 500), "secs").len();
    let _ = writeln!(
        out,
        "Initial list of {objects} ConfigMaps ({runs} runs, medians)\n"
    );
    let _ = writeln!(
        out,
        "| reader | objects per page | time (s) | objects/s | ÷ raw, same page size | ÷ kube-runtime, same page size | peak RSS (MiB) | CPU (s) | context switches |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for page in PAGE_SIZES {
        let raw = field(results, &case("raw", page), "secs");
        let kube_runtime = field(results, &case("kube_runtime", page), "secs");
        let page_label = if page == 0 {
            "all in one".to_owned()
        } else {
            page.to_string()
        };
        for (reader, _) in LIST_READERS {
            let name = case(reader, page);
            let secs = field(results, &name, "secs");
            let _ = writeln!(
                out,
                "| {} | {page_label} | {:.3} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} |",
                reader_label(reader),
                median(&secs),
                objects as f64 / median(&secs),
                median(&ratios(&secs, &raw)),
                median(&ratios(&secs, &kube_runtime)),
                mib(median(&field(results, &name, "peak_rss_kib"))),
                median(&field(results, &name, "cpu_secs")),
                median(&field(results, &name, "context_switches")),
            );
        }
    }
    let _ = writeln!(out);
}

fn catchup_table(out: &mut String, results: &Results, updates: usize) {
    let seconds = |case: &str| field(results, case, "secs");
    // The time from the first change to the last, while the server streams the history.
    let streaming = |case: &str| -> Vec<f64> {
        seconds(case)
            .iter()
            .zip(field(results, case, "first_secs"))
            .map(|(secs, first)| secs - first)
            .collect()
    };
    let runs = seconds(&format!("catchup/raw/{}", CATCHUP_THREADS[0])).len();
    let _ = writeln!(
        out,
        "Catch-up watch over {updates} changes of history ({runs} runs, medians)\n"
    );
    let _ = writeln!(
        out,
        "| consumer | runtime | time (s) | first change (s) | events/s | ÷ raw events/s | events/s after the first | ÷ raw, after the first | peak RSS (MiB) | CPU (s) | context switches |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for threads in CATCHUP_THREADS {
        let runtime = match threads {
            1 => "current-thread".to_owned(),
            threads => format!("{threads} workers"),
        };
        let raw_case = format!("catchup/raw/{threads}");
        let raw = seconds(&raw_case);
        let raw_streaming = streaming(&raw_case);
        for (label, consumer) in [("raw kube `Api::watch`", "raw"), ("pipeline", "pipeline")] {
            let case = format!("catchup/{consumer}/{threads}");
            let secs = seconds(&case);
            let after_first = streaming(&case);
            let _ = writeln!(
                out,
                "| {label} | {runtime} | {:.3} | {:.3} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} |",
                median(&secs),
                median(&field(results, &case, "first_secs")),
                updates as f64 / median(&secs),
                median(&ratios(&raw, &secs)),
                updates as f64 / median(&after_first),
                median(&ratios(&raw_streaming, &after_first)),
                mib(median(&field(results, &case, "peak_rss_kib"))),
                median(&field(results, &case, "cpu_secs")),
                median(&field(results, &case, "context_switches")),
            );
        }
    }
    let _ = writeln!(out);
}

/// Returns `stage` of `part` (`list` or `watch`) of every breakdown run, in microseconds.
fn stage(results: &Results, part: &str, stage: &str) -> Vec<f64> {
    results
        .get("breakdown")
        .map(|runs| {
            runs.iter()
                .filter_map(|run| run[part][stage].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// The stages of the breakdown, each including the ones it names.
const STAGES: [(&str, &str); 5] = [
    ("kube_client_us", "kube client: JSON to `ConfigMap`"),
    (
        "kube_runtime_us",
        "kube-runtime: kube client, then the store clones and inserts",
    ),
    (
        "source_us",
        "source: each object's JSON text, key, revision, uid",
    ),
    (
        "decoded_us",
        "source, then the decoder: text to `ConfigMap`",
    ),
    (
        "pipeline_us",
        "pipeline: source, then the cache decodes and inserts",
    ),
];

fn breakdown_table(out: &mut String, results: &Results) {
    let runs = stage(results, "list", "kube_client_us").len();
    let _ = writeln!(
        out,
        "Client-side work on one thread, from response bodies read beforehand ({runs} runs, medians)\n"
    );
    let _ = writeln!(
        out,
        "| stage | list, µs per object | ÷ kube client | watch, µs per event | ÷ kube client |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let list_base = stage(results, "list", "kube_client_us");
    let watch_base = stage(results, "watch", "kube_client_us");
    for (name, label) in STAGES {
        let list = stage(results, "list", name);
        let watch = stage(results, "watch", name);
        let _ = writeln!(
            out,
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} |",
            median(&list),
            median(&ratios(&list, &list_base)),
            median(&watch),
            median(&ratios(&watch, &watch_base)),
        );
    }
    let _ = writeln!(out);
}

fn live_table(out: &mut String, results: &Results, updates: usize) {
    let raw = field(results, "live", "raw_secs");
    let pipeline = field(results, "live", "pipeline_secs");
    let write = field(results, "live", "write_secs");
    let rate = |secs: &[f64]| updates as f64 / median(secs);
    let _ = writeln!(
        out,
        "Live watch of {updates} changes ({} runs, medians)\n",
        raw.len()
    );
    let _ = writeln!(
        out,
        "| writes/s | raw watch events/s | pipeline events/s | pipeline ÷ raw | peak RSS of both (MiB) | CPU of both (s) |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |\n",
        rate(&write),
        rate(&raw),
        rate(&pipeline),
        median(&ratios(&raw, &pipeline)),
        mib(median(&field(results, "live", "peak_rss_kib"))),
        median(&field(results, "live", "cpu_secs")),
    );
}
