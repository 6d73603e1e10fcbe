//! Measures informer's etcd pipeline beside a raw etcd-client doing the same work, against an
//! etcd server it starts on free loopback ports.
//!
//! ```text
//! cargo run --release --example bench_etcd -- --runs 5 --json target/bench-etcd.json
//! ```
//!
//! Phases (`--phases`, all by default):
//!
//! - `list`: the initial list of `--keys` keys, raw at 500 and 10,000 keys per page and
//!   unpaged, and through the pipeline (reflector, cache, handler, queue, controller).
//! - `catchup`: a watch from a revision before `--keys` writes that are already in the history.
//! - `live`: a raw watch and the pipeline, in one process, watching the same `--keys` writes
//!   as they happen.
//! - `latency`: the delay from a put to its raw watch event and to the start of its reconcile,
//!   at fixed write rates.
//!
//! `--scale` adds a list and a catch-up of `--scale-keys` (1,000,000) keys, which takes a few
//! minutes. Every measurement runs in a fresh child process, so its peak RSS is its own; the
//! order of raw and pipeline alternates between runs. Results are medians over `--runs`, and
//! every ratio is taken within one run, then the median of the ratios is shown.

mod child;
#[allow(dead_code)]
#[path = "../../tests/support/etcd.rs"]
mod etcd;
#[path = "../bench_common/harness.rs"]
mod harness;
// The harness names its certificate helper as a sibling module.
#[allow(dead_code)]
#[path = "../../tests/support/pki.rs"]
mod pki;
mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use etcd_client::{Client, Txn, TxnOp};
use serde_json::{Value, json};

use etcd::EtcdServer;
use harness::{Results, Running, record};

/// Puts per transaction. etcd 3.4 accepts at most 128 operations per transaction by default
/// (`--max-txn-ops`).
const TXN_PUTS: usize = 100;

/// Bytes per value outside the latency phase.
const VALUE_BYTES: usize = 100;

/// Concurrent writers of the bulk writes.
const WRITERS: usize = 4;

#[derive(Parser, Debug)]
#[command(about = "Benchmark informer's etcd pipeline against a raw etcd client")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one measurement; the parent process starts these.
    #[command(hide = true)]
    Child(ChildArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Keys written and read by the list, catch-up and live phases.
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Repetitions of each measurement; tables show medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Phases to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Stage::List, Stage::Catchup, Stage::Live, Stage::Latency])]
    phases: Vec<Stage>,
    /// Write rates of the latency phase, in puts per second.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 5_000])]
    latency_rates: Vec<u64>,
    /// Seconds of writes per latency run. The first second is left out as warm-up.
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Repetitions of each latency rate.
    #[arg(long, default_value_t = 3)]
    latency_runs: usize,
    /// Workers of the pipeline's controller.
    #[arg(long, default_value_t = informer::controller::DEFAULT_WORKERS)]
    workers: usize,
    /// Also list and catch up `--scale-keys` keys.
    #[arg(long)]
    scale: bool,
    /// Keys of the scale phase.
    #[arg(long, default_value_t = 1_000_000)]
    scale_keys: usize,
    /// Writes every result to this file as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Stage {
    List,
    Catchup,
    Live,
    Latency,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    ListRaw,
    ListPipeline,
    CatchupRaw,
    CatchupPipeline,
    Live,
    Latency,
}

#[derive(Args, Debug, Clone)]
struct ChildArgs {
    #[arg(long, value_enum)]
    phase: Phase,
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    prefix: String,
    /// Keys the phase expects to read.
    #[arg(long)]
    keys: usize,
    /// Keys per list page. 0 reads the raw list unpaged, and makes the pipeline's page as
    /// large as `--keys`.
    #[arg(long, default_value_t = 10_000)]
    page_size: usize,
    /// The revision a catch-up watch starts at.
    #[arg(long, default_value_t = 0)]
    from: i64,
    /// Workers of the pipeline's controller.
    #[arg(long, default_value_t = informer::controller::DEFAULT_WORKERS)]
    workers: usize,
    /// Latency samples of keys below this index are left out.
    #[arg(long, default_value_t = 0)]
    warm_up_keys: u64,
}

/// Returns the end of the key range of `prefix`: its last byte incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut().expect("a non-empty prefix");
    *last += 1;
    end
}

/// Returns key `index` under `prefix`.
fn key(prefix: &str, index: usize) -> String {
    format!("{prefix}{index:07}")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = harness::start(2)?;
    match cli.command {
        Some(Command::Child(args)) => runtime.block_on(child::run(args)),
        None => runtime.block_on(async {
            // Returning from `parent` drops the server, which stops etcd and removes its data,
            // also on Ctrl-C.
            tokio::select! {
                result = parent(cli.run) => result,
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
        }),
    }
}

/// Writes `count` keys under `prefix` in transactions of [`TXN_PUTS`] puts from [`WRITERS`]
/// concurrent writers, and returns the time it took.
async fn write_keys(client: &Client, prefix: &str, count: usize) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let mut kv = client.kv_client();
        let next = next.clone();
        let prefix = prefix.to_owned();
        writers.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(TXN_PUTS, Ordering::Relaxed);
                if first >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let puts: Vec<TxnOp> = (first..(first + TXN_PUTS).min(count))
                    .map(|index| TxnOp::put(key(&prefix, index), vec![b'v'; VALUE_BYTES], None))
                    .collect();
                kv.txn(Txn::new().and_then(puts)).await?;
            }
        }));
    }
    for writer in writers {
        writer.await??;
    }
    Ok(started.elapsed())
}

/// Puts `rate` keys per second for `secs` seconds, each value the put's start time, and
/// returns the rate achieved.
async fn write_paced(client: &Client, prefix: &str, rate: u64, secs: u64) -> anyhow::Result<f64> {
    let total = (rate * secs) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0;
    let mut puts = tokio::task::JoinSet::new();
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as usize).min(total);
        while sent < due {
            let mut kv = client.kv_client();
            let key = key(prefix, sent);
            puts.spawn(async move {
                let value = format!("{:<width$}", child::unix_micros(), width = VALUE_BYTES);
                kv.put(key, value, None).await
            });
            sent += 1;
        }
    }
    let elapsed = started.elapsed();
    while let Some(put) = puts.join_next().await {
        put??;
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Returns the command line of a child that runs `args`.
fn child_command(args: &ChildArgs) -> Vec<String> {
    vec![
        "--phase".into(),
        args.phase
            .to_possible_value()
            .expect("a phase name")
            .get_name()
            .into(),
        "--endpoint".into(),
        args.endpoint.clone(),
        "--prefix".into(),
        args.prefix.clone(),
        "--keys".into(),
        args.keys.to_string(),
        "--page-size".into(),
        args.page_size.to_string(),
        "--from".into(),
        args.from.to_string(),
        "--workers".into(),
        args.workers.to_string(),
        "--warm-up-keys".into(),
        args.warm_up_keys.to_string(),
    ]
}

/// Starts a child that runs `args`.
fn start_child(args: &ChildArgs) -> anyhow::Result<Running> {
    let description = format!("{:?} {}", args.phase, args.prefix);
    Running::start(&child_command(args), &[], description)
}

/// Runs one child to its end and returns its result.
async fn measure(args: ChildArgs) -> anyhow::Result<Value> {
    start_child(&args)?.result().await
}

async fn parent(args: RunArgs) -> anyhow::Result<()> {
    let server = EtcdServer::builder()
        .arg("--quota-backend-bytes=8589934592")
        .start()
        .await;
    let endpoint = server.endpoint();
    let client = Client::connect([endpoint.as_str()], None).await?;
    eprintln!("etcd at {endpoint}, data in {}", server.dir().display());

    let base = ChildArgs {
        phase: Phase::ListRaw,
        endpoint: endpoint.clone(),
        prefix: String::new(),
        keys: args.keys,
        page_size: 10_000,
        from: 0,
        workers: args.workers,
        warm_up_keys: 0,
    };
    let mut results = Results::new();

    if args.phases.contains(&Stage::List) {
        list_phase(
            &client,
            &base,
            &args,
            "list",
            args.keys,
            args.runs,
            &mut results,
        )
        .await?;
    }
    if args.phases.contains(&Stage::Catchup) {
        catchup_phase(
            &client,
            &base,
            "catchup",
            args.keys,
            args.runs,
            &mut results,
        )
        .await?;
    }
    if args.phases.contains(&Stage::Live) {
        live_phase(&client, &base, &args, &mut results).await?;
    }
    if args.phases.contains(&Stage::Latency) {
        latency_phase(&client, &base, &args, &mut results).await?;
    }
    if args.scale {
        let scale = ChildArgs {
            keys: args.scale_keys,
            ..base.clone()
        };
        list_phase(
            &client,
            &scale,
            &args,
            "scale_list",
            args.scale_keys,
            1,
            &mut results,
        )
        .await?;
        catchup_phase(
            &client,
            &scale,
            "scale_catchup",
            args.scale_keys,
            1,
            &mut results,
        )
        .await?;
    }

    let environment = report::environment(&server).await;
    println!("{}", report::render(&args, &environment, &results));
    if let Some(path) = &args.json {
        let document = json!({
            "environment": environment,
            "keys": args.keys,
            "runs": args.runs,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The raw page sizes of the list phase; 0 is one unpaged read.
pub const RAW_PAGE_SIZES: [usize; 5] = [500, 10_000, 25_000, 50_000, 0];

/// The pipeline's page sizes of the list phase: the reflector's default, and 0 for one page
/// that contains every key.
pub const PIPELINE_PAGE_SIZES: [usize; 4] = [10_000, 25_000, 50_000, 0];

#[allow(clippy::too_many_arguments)]
async fn list_phase(
    client: &Client,
    base: &ChildArgs,
    args: &RunArgs,
    name: &str,
    keys: usize,
    runs: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let prefix = format!("/{name}/");
    let took = write_keys(client, &prefix, keys).await?;
    eprintln!("{name}: wrote {keys} keys in {took:?}");
    // etcd 3.4 counts the rest of the range for every page, so small pages of a large list
    // take time in proportion to the square of its size.
    let raw_page_sizes: Vec<usize> = RAW_PAGE_SIZES
        .into_iter()
        .filter(|page_size| *page_size == 0 || keys / page_size <= 200)
        .collect();

    for run in 0..runs {
        let mut cases: Vec<(String, ChildArgs)> = raw_page_sizes
            .iter()
            .map(|page_size| {
                let case = ChildArgs {
                    phase: Phase::ListRaw,
                    prefix: prefix.clone(),
                    keys,
                    page_size: *page_size,
                    ..base.clone()
                };
                (format!("{name}/raw/{page_size}"), case)
            })
            .collect();
        for page_size in PIPELINE_PAGE_SIZES {
            cases.push((
                format!("{name}/pipeline/{page_size}"),
                ChildArgs {
                    phase: Phase::ListPipeline,
                    prefix: prefix.clone(),
                    keys,
                    page_size,
                    workers: args.workers,
                    ..base.clone()
                },
            ));
        }
        // Alternate the order so that neither side always reads a warmer server.
        if run % 2 == 1 {
            cases.reverse();
        }
        for (case, child_args) in cases {
            let value = measure(child_args).await?;
            record(results, &case, value);
        }
    }
    Ok(())
}

async fn catchup_phase(
    client: &Client,
    base: &ChildArgs,
    name: &str,
    keys: usize,
    runs: usize,
    results: &mut Results,
) -> anyhow::Result<()> {
    let prefix = format!("/{name}/");
    let mut kv = client.kv_client();
    let from = kv
        .get("warm-up", None)
        .await?
        .header()
        .context("no header")?
        .revision()
        + 1;
    let took = write_keys(client, &prefix, keys).await?;
    eprintln!("{name}: wrote {keys} keys in {took:?}, history from revision {from}");

    for run in 0..runs {
        let mut cases = vec![
            (format!("{name}/raw"), Phase::CatchupRaw),
            (format!("{name}/pipeline"), Phase::CatchupPipeline),
        ];
        if run % 2 == 1 {
            cases.reverse();
        }
        for (case, phase) in cases {
            let child_args = ChildArgs {
                phase,
                prefix: prefix.clone(),
                keys,
                from,
                ..base.clone()
            };
            let value = measure(child_args).await?;
            record(results, &case, value);
        }
    }
    Ok(())
}

async fn live_phase(
    client: &Client,
    base: &ChildArgs,
    args: &RunArgs,
    results: &mut Results,
) -> anyhow::Result<()> {
    for run in 0..args.runs {
        let prefix = format!("/live/{run}/");
        let mut child = start_child(&ChildArgs {
            phase: Phase::Live,
            prefix: prefix.clone(),
            keys: args.keys,
            ..base.clone()
        })?;
        child.wait_ready().await?;
        let took = write_keys(client, &prefix, args.keys).await?;
        let mut value = child.result().await?;
        value["write_secs"] = json!(took.as_secs_f64());
        record(results, "live", value);
    }
    Ok(())
}

async fn latency_phase(
    client: &Client,
    base: &ChildArgs,
    args: &RunArgs,
    results: &mut Results,
) -> anyhow::Result<()> {
    for rate in &args.latency_rates {
        for run in 0..args.latency_runs {
            let prefix = format!("/latency/{rate}/{run}/");
            let mut child = start_child(&ChildArgs {
                phase: Phase::Latency,
                prefix: prefix.clone(),
                keys: (rate * args.latency_secs) as usize,
                warm_up_keys: *rate,
                ..base.clone()
            })?;
            child.wait_ready().await?;
            let achieved = write_paced(client, &prefix, *rate, args.latency_secs).await?;
            let mut value = child.result().await?;
            value["achieved_rate"] = json!(achieved);
            record(results, &format!("latency/{rate}"), value);
        }
    }
    Ok(())
}
