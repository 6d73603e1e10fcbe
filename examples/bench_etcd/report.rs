//! The machine description and the Markdown tables of a run.

use std::fmt::Write;

use serde_json::{Value, json};

use crate::child::PERCENTILES;
use crate::etcd::EtcdServer;
use crate::harness::{self, field, median, mib, ratios};
use crate::{PIPELINE_PAGE_SIZES, RAW_PAGE_SIZES, Results, RunArgs};

/// Describes the machine, the toolchain and the server.
pub async fn environment(server: &EtcdServer) -> Value {
    let mut client = server.client().await;
    let etcd_version = match client.status().await {
        Ok(status) => status.version().to_owned(),
        Err(error) => format!("unknown ({error})"),
    };
    let mut description = harness::machine();
    description.insert("etcd".into(), json!(etcd_version));
    description.insert("etcd_client".into(), json!("0.21"));
    Value::Object(description)
}

/// Renders every table for which the results have data.
pub fn render(args: &RunArgs, environment: &Value, results: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Environment: {environment}\n");
    for (name, keys) in [("list", args.keys), ("scale_list", args.scale_keys)] {
        if results.contains_key(&format!("{name}/pipeline/10000")) {
            list_table(&mut out, results, name, keys);
        }
    }
    for (name, keys) in [("catchup", args.keys), ("scale_catchup", args.scale_keys)] {
        if results.contains_key(&format!("{name}/pipeline")) {
            catchup_table(&mut out, results, name, keys);
        }
    }
    if results.contains_key("live") {
        live_table(&mut out, results, args.keys);
    }
    if args
        .latency_rates
        .iter()
        .any(|rate| results.contains_key(&format!("latency/{rate}")))
    {
        latency_table(&mut out, args, results);
    }
    out
}

fn list_table(out: &mut String, results: &Results, name: &str, keys: usize) {
    let raw_case = |page: usize| format!("{name}/raw/{page}");
    let raw_pages: Vec<usize> = RAW_PAGE_SIZES
        .into_iter()
        .filter(|page| results.contains_key(&raw_case(*page)))
        .collect();
    let runs = field(results, &raw_case(0), "secs").len();
    let best: Vec<f64> = (0..runs)
        .map(|run| {
            raw_pages
                .iter()
                .filter_map(|page| field(results, &raw_case(*page), "secs").get(run).copied())
                .fold(f64::INFINITY, f64::min)
        })
        .collect();

    let _ = writeln!(out, "Initial list of {keys} keys ({runs} runs, medians)\n");
    let _ = writeln!(
        out,
        "| reader | keys per page | time (s) | ÷ raw, same page size | ÷ best raw | peak RSS (MiB) | CPU (s) | context switches |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    let mut row = |label: &str, page: usize, case: &str, time_field: &str| {
        let secs = field(results, case, time_field);
        let same_page = field(results, &raw_case(page), "secs");
        let page = if page == 0 {
            "all in one".to_owned()
        } else {
            page.to_string()
        };
        let _ = writeln!(
            out,
            "| {label} | {page} | {:.3} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} |",
            median(&secs),
            median(&ratios(&secs, &same_page)),
            median(&ratios(&secs, &best)),
            mib(median(&field(results, case, "peak_rss_kib"))),
            median(&field(results, case, "cpu_secs")),
            median(&field(results, case, "context_switches")),
        );
    };
    for page in raw_pages.iter().copied() {
        row("raw etcd-client", page, &raw_case(page), "secs");
    }
    for page in PIPELINE_PAGE_SIZES {
        let case = format!("{name}/pipeline/{page}");
        row("pipeline, cached", page, &case, "secs");
        row("pipeline, reconciled", page, &case, "reconciled_secs");
    }
    let _ = writeln!(out);
}

fn catchup_table(out: &mut String, results: &Results, name: &str, keys: usize) {
    let raw = field(results, &format!("{name}/raw"), "secs");
    let pipeline = field(results, &format!("{name}/pipeline"), "secs");
    let _ = writeln!(
        out,
        "Catch-up watch over {keys} keys of history ({} runs, medians)\n",
        raw.len()
    );
    let _ = writeln!(
        out,
        "| consumer | time (s) | events/s | ÷ raw events/s | peak RSS (MiB) | CPU (s) | context switches |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (label, case, secs) in [
        ("raw etcd-client watch", format!("{name}/raw"), &raw),
        (
            "pipeline, reconciled",
            format!("{name}/pipeline"),
            &pipeline,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.3} | {:.0} | {:.2} | {:.0} | {:.2} | {:.0} |",
            median(secs),
            keys as f64 / median(secs),
            median(&ratios(&raw, secs)),
            mib(median(&field(results, &case, "peak_rss_kib"))),
            median(&field(results, &case, "cpu_secs")),
            median(&field(results, &case, "context_switches")),
        );
    }
    let _ = writeln!(out);
}

fn live_table(out: &mut String, results: &Results, keys: usize) {
    let raw = field(results, "live", "raw_secs");
    let pipeline = field(results, "live", "pipeline_secs");
    let write = field(results, "live", "write_secs");
    let rate = |secs: &[f64]| keys as f64 / median(secs);
    let _ = writeln!(
        out,
        "Live watch of {keys} writes ({} runs, medians)\n",
        raw.len()
    );
    let _ = writeln!(
        out,
        "| writes/s | raw watch events/s | pipeline events/s | pipeline ÷ raw |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {:.0} | {:.0} | {:.0} | {:.2} |\n",
        rate(&write),
        rate(&raw),
        rate(&pipeline),
        median(&ratios(&raw, &pipeline)),
    );
}

/// Returns the latency percentile at `index` of [`PERCENTILES`], in milliseconds, of every
/// run of `case` for `side` (`raw` or `pipeline`).
fn percentile_ms(results: &Results, case: &str, side: &str, index: usize) -> Vec<f64> {
    results
        .get(case)
        .map(|runs| {
            runs.iter()
                .filter_map(|run| run[side]["micros"][index].as_f64())
                .map(|micros| micros / 1000.0)
                .collect()
        })
        .unwrap_or_default()
}

fn latency_table(out: &mut String, args: &RunArgs, results: &Results) {
    let p50 = PERCENTILES.iter().position(|p| *p == 50.0).expect("p50");
    let p99 = PERCENTILES.iter().position(|p| *p == 99.0).expect("p99");
    let _ = writeln!(
        out,
        "Latency from put to raw watch event and to reconcile start ({} s per run, first second left out, {} runs, medians)\n",
        args.latency_secs, args.latency_runs
    );
    let _ = writeln!(
        out,
        "| puts/s | achieved | raw p50 (ms) | raw p99 (ms) | pipeline p50 (ms) | pipeline p99 (ms) | p99 ÷ raw p99 |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|");
    for rate in &args.latency_rates {
        let case = format!("latency/{rate}");
        if !results.contains_key(&case) {
            continue;
        }
        let raw_p99 = percentile_ms(results, &case, "raw", p99);
        let pipeline_p99 = percentile_ms(results, &case, "pipeline", p99);
        let _ = writeln!(
            out,
            "| {rate} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            median(&field(results, &case, "achieved_rate")),
            median(&percentile_ms(results, &case, "raw", p50)),
            median(&raw_p99),
            median(&percentile_ms(results, &case, "pipeline", p50)),
            median(&pipeline_p99),
            median(&ratios(&pipeline_p99, &raw_p99)),
        );
    }
    let _ = writeln!(out);
}
