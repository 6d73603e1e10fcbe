//! Measures informer's Kubernetes source beside kube's raw client and kube-runtime, against the
//! Kubernetes-API test server (`informer::testing::TestServer`) running in this process.
//!
//! ```text
//! cargo run --release --features test-server --example bench_k8s -- --runs 5 --json target/bench-k8s.json
//! ```
//!
//! The server fills itself with `--objects` ConfigMaps in 50 namespaces, each with the
//! metadata of a Helm release, two managedFields entries and three data entries. Phases
//! (`--phases`, all by default):
//!
//! - `list`: the initial list of every ConfigMap, at 500 objects per page and unpaged: kube's
//!   `Api::list`, informer's pipeline (`KubernetesSource`, `Reflector`, `Store`) and
//!   kube-runtime's `watcher` with its `reflector` store.
//! - `catchup`: a watch from the resourceVersion before `--updates` changes that are already in
//!   the server's history: kube's `Api::watch` and the pipeline.
//! - `live`: kube's `Api::watch` and the pipeline, in one process, watching the same `--updates`
//!   changes as this process writes them.
//!
//! Every measurement runs in a fresh child process, so its peak RSS and CPU time are its own.
//! The order of the cases alternates between runs. Results are medians over `--runs`, and every
//! ratio is taken within one run, then the median of the ratios is shown.

mod breakdown;
mod child;
#[path = "../bench_common/config_map.rs"]
mod config_map;
#[path = "../bench_common/harness.rs"]
mod harness;
mod report;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use informer::testing::{ADMIN_USER, TestServer, TestServerConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use harness::{Results, Running, record};

/// The environment variable that passes the server's bearer token to a child, which keeps it
/// out of the process list.
const TOKEN_VAR: &str = "BENCH_K8S_TOKEN";

/// The field manager of the creates, as Helm would be.
const CREATE_MANAGER: &str = "helm";

/// Concurrent HTTP requests that create the ConfigMaps.
const CREATORS: usize = 16;

#[derive(Parser, Debug)]
#[command(about = "Benchmark informer's Kubernetes source against kube's client and kube-runtime")]
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
    /// ConfigMaps on the server, listed by the list phase.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Changes written for the catch-up phase and for each live run.
    #[arg(long, default_value_t = 20_000)]
    updates: usize,
    /// Repetitions of each measurement; tables show medians.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Phases to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Stage::List, Stage::Catchup, Stage::Live])]
    phases: Vec<Stage>,
    /// Writes every result to this file as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Stage {
    List,
    Catchup,
    Live,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    ListRaw,
    ListPipeline,
    ListKubeRuntime,
    CatchupRaw,
    CatchupPipeline,
    Live,
    Breakdown,
}

#[derive(Args, Debug, Clone)]
struct ChildArgs {
    #[arg(long, value_enum)]
    phase: Phase,
    /// The server's URL. The bearer token comes in the `BENCH_K8S_TOKEN` environment variable.
    #[arg(long)]
    url: String,
    /// ConfigMaps on the server.
    #[arg(long)]
    objects: usize,
    /// Objects per list page; 0 lists without a limit.
    #[arg(long, default_value_t = 500)]
    page_size: usize,
    /// The resourceVersion the watch phases start after.
    #[arg(long, default_value_t = 0)]
    from: i64,
    /// Changes the watch phases expect after `--from`.
    #[arg(long, default_value_t = 0)]
    updates: usize,
    /// The prefix of the `LOG_LEVEL` values the changes wrote.
    #[arg(long, default_value = "")]
    label: String,
    /// Worker threads of the child's tokio runtime; 1 runs tokio's current-thread runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Some(Command::Child(args)) => args.threads,
        None => 2,
    };
    let runtime = harness::start(threads)?;
    match cli.command {
        Some(Command::Child(args)) => runtime.block_on(child::run(args)),
        None => {
            // The server gets its own runtime, so that its work does not share the
            // parent's worker threads.
            let server_runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("test-server")
                .enable_all()
                .build()?;
            let config = TestServerConfig {
                history_capacity: history_capacity(&cli.run),
                ..TestServerConfig::default()
            };
            let server = server_runtime.block_on(TestServer::start_with(config))?;
            let result = runtime.block_on(async {
                tokio::select! {
                    result = parent(&server, cli.run) => result,
                    _ = tokio::signal::ctrl_c() => bail!("interrupted"),
                }
            });
            drop(server);
            result
        }
    }
}

/// Returns the watch history the server keeps: enough for the setup writes and for one phase's
/// changes, with room to spare, so that no watch here gets `410 Expired`. The default of
/// 10,000 events is less than the catch-up phase replays.
fn history_capacity(args: &RunArgs) -> usize {
    2 * (args.objects + args.updates)
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
        "--url".into(),
        args.url.clone(),
        "--objects".into(),
        args.objects.to_string(),
        "--page-size".into(),
        args.page_size.to_string(),
        "--from".into(),
        args.from.to_string(),
        "--updates".into(),
        args.updates.to_string(),
        "--label".into(),
        args.label.clone(),
        "--threads".into(),
        args.threads.to_string(),
    ]
}

/// Starts a child that runs `args` against `server`.
fn start_child(server: &TestServer, args: &ChildArgs) -> anyhow::Result<Running> {
    let token = server.token_for(ADMIN_USER);
    let description = format!(
        "{:?} at {} objects per page on {} threads",
        args.phase, args.page_size, args.threads
    );
    Running::start(&child_command(args), &[(TOKEN_VAR, &token)], description)
}

/// Runs one child to its end and returns its result.
async fn measure(server: &TestServer, args: ChildArgs) -> anyhow::Result<Value> {
    start_child(server, &args)?.result().await
}

async fn parent(server: &TestServer, args: RunArgs) -> anyhow::Result<()> {
    if args.objects == 0 || args.updates == 0 || args.runs == 0 {
        bail!("--objects, --updates and --runs must be at least 1");
    }
    eprintln!("test server at {}", server.url());
    fill(server, args.objects).await?;

    let base = ChildArgs {
        phase: Phase::ListRaw,
        url: server.url(),
        objects: args.objects,
        page_size: 500,
        from: 0,
        updates: args.updates,
        label: String::new(),
        threads: 2,
    };
    let mut results = Results::new();
    if args.phases.contains(&Stage::List) {
        list_phase(server, &base, &args, &mut results).await?;
    }
    if args.phases.contains(&Stage::Catchup) {
        catchup_phase(server, &base, &args, &mut results).await?;
    }
    if args.phases.contains(&Stage::Live) {
        live_phase(server, &base, &args, &mut results).await?;
    }

    let environment = report::environment();
    println!("{}", report::render(&args, &environment, &results));
    if let Some(path) = &args.json {
        let document = json!({
            "environment": environment,
            "objects": args.objects,
            "updates": args.updates,
            "runs": args.runs,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Returns the ConfigMap number `index` as a client creates it, without the fields the server
/// sets.
fn new_config_map(index: usize) -> anyhow::Result<ConfigMap> {
    let mut object = config_map::config_map(index, 0, "info");
    let metadata = object["metadata"]
        .as_object_mut()
        .context("a ConfigMap has metadata")?;
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
    ] {
        metadata.remove(field);
    }
    Ok(serde_json::from_value(object)?)
}

/// Creates the namespaces and `objects` ConfigMaps, then compacts the history of the setup.
///
/// The ConfigMaps are created over HTTP with the field manager `helm`, then each gets one
/// in-process edit of its `LOG_LEVEL`, so that it carries two managedFields entries as after a
/// `kubectl edit`.
async fn fill(server: &TestServer, objects: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    for index in 0..config_map::NAMESPACES.min(objects) {
        server.create_namespace(&config_map::namespace(index))?;
    }

    let client = server.client()?;
    let params = PostParams {
        field_manager: Some(CREATE_MANAGER.to_owned()),
        ..PostParams::default()
    };
    futures::stream::iter(0..objects)
        .map(|index| {
            let client = client.clone();
            let params = &params;
            async move {
                let object = new_config_map(index)?;
                let api: Api<ConfigMap> = Api::namespaced(client, &config_map::namespace(index));
                api.create(params, &object)
                    .await
                    .with_context(|| format!("create ConfigMap {}", config_map::name(index)))?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(CREATORS)
        .try_collect::<()>()
        .await?;

    tokio::task::block_in_place(|| write_changes(server, objects, objects, |_| "warn".to_owned()))?;
    server.compact(server.revision());
    let size = serde_json::to_vec(&server.get(
        "v1",
        "ConfigMap",
        Some(&config_map::namespace(0)),
        &config_map::name(0),
    )?)?
    .len();
    eprintln!(
        "created {objects} ConfigMaps of {size} bytes as JSON in {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Writes `count` changes through the server's in-process API, one after another: change `i`
/// sets `LOG_LEVEL` of ConfigMap `i % objects` to `value(i)`. Returns the time it took.
fn write_changes(
    server: &TestServer,
    objects: usize,
    count: usize,
    value: impl Fn(usize) -> String,
) -> anyhow::Result<Duration> {
    let targets: Vec<(String, String)> = (0..objects.min(count))
        .map(|index| (config_map::namespace(index), config_map::name(index)))
        .collect();
    let revision = server.revision();
    let started = Instant::now();
    for change in 0..count {
        let (namespace, name) = &targets[change % objects];
        server.merge_patch(
            "v1",
            "ConfigMap",
            Some(namespace),
            name,
            json!({"data": {"LOG_LEVEL": value(change)}}),
        )?;
    }
    let took = started.elapsed();

    let written = server.revision() - revision;
    if written != count as i64 {
        bail!("wrote {count} changes, but the revision moved by {written}");
    }
    Ok(took)
}

/// Returns the `LOG_LEVEL` value of change `change`.
fn change_value(label: &str, change: usize) -> String {
    format!("{label}-{change}")
}

/// The page sizes of the list phase: the default of informer's source, of kube-runtime's
/// watcher and of client-go, and 0 for no limit.
const PAGE_SIZES: [usize; 2] = [500, 0];

/// The list phase's readers, by case name.
const LIST_READERS: [(&str, Phase); 3] = [
    ("raw", Phase::ListRaw),
    ("pipeline", Phase::ListPipeline),
    ("kube_runtime", Phase::ListKubeRuntime),
];

async fn list_phase(
    server: &TestServer,
    base: &ChildArgs,
    args: &RunArgs,
    results: &mut Results,
) -> anyhow::Result<()> {
    for run in 0..args.runs {
        let mut cases = Vec::new();
        for page_size in PAGE_SIZES {
            for (reader, phase) in LIST_READERS {
                let case = ChildArgs {
                    phase,
                    page_size,
                    ..base.clone()
                };
                cases.push((format!("list/{reader}/{page_size}"), case));
            }
        }
        // Alternate the order so that no reader always runs first.
        if run % 2 == 1 {
            cases.reverse();
        }
        for (case, child_args) in cases {
            let value = measure(server, child_args).await?;
            record(results, &case, value);
        }
    }
    Ok(())
}

/// The runtimes of the catch-up phase's children: two worker threads, as in the other
/// phases, and tokio's current-thread runtime.
const CATCHUP_THREADS: [usize; 2] = [2, 1];

async fn catchup_phase(
    server: &TestServer,
    base: &ChildArgs,
    args: &RunArgs,
    results: &mut Results,
) -> anyhow::Result<()> {
    let from = server.revision();
    let took = tokio::task::block_in_place(|| {
        write_changes(server, args.objects, args.updates, |change| {
            change_value("catchup", change)
        })
    })?;
    eprintln!(
        "catchup: wrote {} changes in {took:?}, history after resourceVersion {from}",
        args.updates
    );

    for run in 0..args.runs {
        let mut cases = Vec::new();
        for threads in CATCHUP_THREADS {
            for (consumer, phase) in [
                ("raw", Phase::CatchupRaw),
                ("pipeline", Phase::CatchupPipeline),
            ] {
                let case = ChildArgs {
                    phase,
                    from,
                    label: "catchup".into(),
                    threads,
                    ..base.clone()
                };
                cases.push((format!("catchup/{consumer}/{threads}"), case));
            }
        }
        if run % 2 == 1 {
            cases.reverse();
        }
        for (case, child_args) in cases {
            let value = measure(server, child_args).await?;
            record(results, &case, value);
        }
    }
    for _ in 0..args.runs {
        let child_args = ChildArgs {
            phase: Phase::Breakdown,
            from,
            label: "catchup".into(),
            ..base.clone()
        };
        let value = measure(server, child_args).await?;
        record(results, "breakdown", value);
    }
    server.compact(server.revision());
    Ok(())
}

async fn live_phase(
    server: &TestServer,
    base: &ChildArgs,
    args: &RunArgs,
    results: &mut Results,
) -> anyhow::Result<()> {
    for run in 0..args.runs {
        let label = format!("live{run}");
        let mut child = start_child(
            server,
            &ChildArgs {
                phase: Phase::Live,
                from: server.revision(),
                label: label.clone(),
                ..base.clone()
            },
        )?;
        child.wait_ready().await?;
        let took = tokio::task::block_in_place(|| {
            write_changes(server, args.objects, args.updates, |change| {
                change_value(&label, change)
            })
        })?;
        let mut value = child.result().await?;
        value["write_secs"] = json!(took.as_secs_f64());
        record(results, "live", value);
        server.compact(server.revision());
    }
    Ok(())
}
