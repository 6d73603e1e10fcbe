//! A Kubernetes operator built on `informer`: ConfigSets copy their data into ConfigMaps in the
//! namespaces they list. See `operator.rs` for what it does.
//!
//! ```sh
//! cargo run --example configmap_sync -- --print-crd | kubectl apply -f -
//! cargo run --example configmap_sync -- --listen 127.0.0.1:8080
//! ```
//!
//! It talks to the cluster of the current kubeconfig context, or to the cluster it runs in.

// The module is shared with the tests, which use parts of it that this binary does not.
#[allow(dead_code)]
mod operator;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing::info;
use tracing_subscriber::EnvFilter;

use operator::{Config, Operator};

/// Copies each ConfigSet's data into ConfigMaps in the namespaces it lists.
#[derive(Debug, Parser)]
#[command(name = "configmap_sync")]
struct Args {
    /// Print the ConfigSet CRD as YAML and exit.
    #[arg(long)]
    print_crd: bool,

    /// The number of ConfigSets reconciled at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,

    /// Stop after this many seconds. Without it, run until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECONDS")]
    run_for: Option<u64>,

    /// Serve /healthz, /readyz and /metrics on this address, such as 0.0.0.0:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Queue every ConfigSet again this often to repair drift, in seconds; 0 for never.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    resync: u64,

    /// How long a ConfigSet waiting for a namespace, or blocked by another owner's
    /// ConfigMap, waits before the next look, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    retry_after: u64,

    /// The reportingInstance of Events; the chart sets it to the pod name.
    #[arg(long, env = "POD_NAME", default_value = "configmap-sync")]
    instance: String,

    /// How long in-flight reconciles may finish once shutdown begins, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    shutdown_deadline: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_crd {
        print!(
            "{}",
            operator::crd_yaml().context("failed to write the CRD as YAML")?
        );
        return Ok(());
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let client = kube::Client::try_default().await.context(
        "failed to configure a Kubernetes client; set KUBECONFIG or run inside a cluster",
    )?;
    let config = Config {
        workers: usize::from(args.workers),
        resync: (args.resync > 0).then(|| Duration::from_secs(args.resync)),
        retry_after: Duration::from_secs(args.retry_after),
        instance: args.instance,
        shutdown_deadline: Duration::from_secs(args.shutdown_deadline),
    };
    info!(workers = config.workers, resync = ?config.resync, "starting the ConfigSet operator");
    let operator = Operator::start(client, config);

    let (stop_probes, probes_stopped) = tokio::sync::oneshot::channel::<()>();
    let probe_server = match args.listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| {
                    format!("failed to listen on {address}; choose a free address with --listen")
                })?;
            let shutdown = async {
                let _ = probes_stopped.await;
            };
            Some(tokio::spawn(operator::serve_probes(
                listener,
                operator.probes(),
                shutdown,
            )))
        }
        None => None,
    };

    wait_for_stop(args.run_for).await?;
    let report = operator.shutdown().await;
    info!(
        in_flight = report.in_flight,
        aborted = report.aborted,
        dropped = report.dropped,
        "operator stopped"
    );

    let _ = stop_probes.send(());
    if let Some(server) = probe_server {
        server
            .await
            .context("the probe server panicked")?
            .context("the probe server failed")?;
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM, or for `run_for` seconds when given.
async fn wait_for_stop(run_for: Option<u64>) -> anyhow::Result<()> {
    let signal = informer::controller::shutdown_signal();
    match run_for {
        Some(seconds) => tokio::select! {
            result = signal => result.context("failed to listen for shutdown signals")?,
            () = tokio::time::sleep(Duration::from_secs(seconds)) => {
                info!(run_for_s = seconds, "run time over; stopping");
            }
        },
        None => signal
            .await
            .context("failed to listen for shutdown signals")?,
    }
    Ok(())
}
