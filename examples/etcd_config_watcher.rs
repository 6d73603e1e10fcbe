//! Watches configuration keys under an etcd prefix and reconciles every change.
//!
//! ```text
//! cargo run --example etcd_config_watcher                      # embedded in-memory source
//! cargo run --example etcd_config_watcher -- --endpoints http://127.0.0.1:2379 --prefix /config/
//! INFORMER_ETCD_PASSWORD=... cargo run --example etcd_config_watcher -- \
//!     --endpoints https://10.0.0.5:2379 --cacert ca.pem --cert client.pem --key client-key.pem \
//!     --user watcher --prefix /config/
//! ```
//!
//! Without `--endpoints` it runs on the in-memory source, with a small writer that changes
//! keys, writes one invalid value, compacts the history and cuts the watch, so the log shows the
//! pipeline recover. `--listen` serves `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use informer::cache::Store;
use informer::controller::{Action, Controller, ObjectState, Request, shutdown_signal};
use informer::decode::{DecodeError, Decoder, Json, Text};
use informer::metrics::Metrics;
use informer::notify::{HandlerOptions, enqueue_keys};
use informer::reflector::{HealthWatch, Reflector};
use informer::source::Source;
use informer::source::etcd::{Credentials, EtcdConfig, EtcdSource, EtcdTls};
use informer::source::memory::{MemorySource, MemoryStore};
use informer::workqueue::WorkQueue;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Parser, Debug)]
#[command(about = "Watch configuration keys under an etcd prefix and reconcile every change")]
struct Args {
    /// etcd endpoints, comma-separated (for example http://127.0.0.1:2379). Without it, the
    /// example runs on the embedded in-memory source with a demo writer.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,

    /// The key directory to watch. "/app" and "/app/" both read the keys below "/app/", and
    /// not "/apple"; see --raw-prefix.
    #[arg(long, default_value = "/config/")]
    prefix: String,

    /// Read every key that starts with --prefix byte for byte, so "/app" also reads "/apple".
    #[arg(long)]
    raw_prefix: bool,

    /// CA certificate (PEM file) that verifies the etcd server, for https:// endpoints.
    #[arg(long, requires = "endpoints")]
    cacert: Option<PathBuf>,

    /// Client certificate (PEM file), for servers started with --client-cert-auth.
    #[arg(long, requires_all = ["key", "cacert"])]
    cert: Option<PathBuf>,

    /// Private key (PEM file) of the client certificate.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,

    /// etcd user. The password comes from the INFORMER_ETCD_PASSWORD environment variable
    /// or from --password-file, never from a flag.
    #[arg(long, requires = "endpoints")]
    user: Option<String>,

    /// File whose first line is the password of --user.
    #[arg(long, requires = "user")]
    password_file: Option<PathBuf>,

    /// Number of reconcile workers.
    #[arg(long, default_value_t = 4)]
    workers: usize,

    /// Resync period in seconds: every cached key is reconciled again this often. 0 turns
    /// resync off.
    #[arg(long, default_value_t = 60)]
    resync: u64,

    /// The value format: JSON documents or UTF-8 text.
    #[arg(long, value_enum, default_value_t = DecodeMode::Json)]
    decode: DecodeMode,

    /// Seconds between status lines.
    #[arg(long, default_value_t = 5)]
    status_every: u64,

    /// Address for /metrics, /healthz and /readyz, for example 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<SocketAddr>,

    /// Stop after this many seconds instead of waiting for Ctrl-C or SIGTERM.
    #[arg(long)]
    run_for: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DecodeMode {
    /// Values are JSON documents.
    Json,
    /// Values are UTF-8 text.
    Text,
}

/// A decoded configuration value.
#[derive(Debug)]
enum ConfigValue {
    Json(serde_json::Value),
    Text(String),
}

impl ConfigValue {
    /// Returns a one-line summary for the log.
    fn summary(&self) -> String {
        let text = match self {
            ConfigValue::Json(serde_json::Value::Object(map)) => {
                let fields: Vec<String> = map
                    .iter()
                    .take(4)
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }
            ConfigValue::Json(value) => value.to_string(),
            ConfigValue::Text(text) => text.clone(),
        };
        if text.chars().count() > 80 {
            format!("{}…", text.chars().take(80).collect::<String>())
        } else {
            text
        }
    }
}

/// Decodes values as JSON or text, as `--decode` selects.
struct ConfigDecoder {
    mode: DecodeMode,
    json: Json<serde_json::Value>,
    text: Text,
}

impl Decoder<Bytes> for ConfigDecoder {
    type Output = ConfigValue;

    fn decode(&self, key: &Arc<str>, value: &Bytes) -> Result<ConfigValue, DecodeError> {
        match self.mode {
            DecodeMode::Json => self.json.decode(key, value).map(ConfigValue::Json),
            DecodeMode::Text => self.text.decode(key, value).map(ConfigValue::Text),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unreachable")]
enum Never {}

/// Logs each change: the reconciler of this example.
async fn reconcile(request: Request<ConfigValue>, _context: Arc<()>) -> Result<Action, Never> {
    match &request.object {
        ObjectState::Live(cached) => info!(
            key = %request.key,
            revision = cached.revision,
            summary = ?cached.value.summary(),
            "reconciled"
        ),
        ObjectState::Deleted => info!(key = %request.key, "reconciled a deleted key"),
    }
    Ok(Action::Done)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    let metrics = Metrics::default();

    if args.endpoints.is_empty() {
        let store = MemoryStore::new();
        seed(&store, &args.prefix);
        let source = MemorySource::new(store.clone(), args.prefix.clone());
        info!(prefix = %args.prefix, "no --endpoints given: running on the in-memory source with a demo writer");
        tokio::spawn(demo_writer(store, args.prefix.clone()));
        run(source, &args, metrics).await
    } else {
        let config = etcd_config(&args)?;
        let source = EtcdSource::connect(config)
            .await?
            .with_metrics(metrics.clone());
        run(source, &args, metrics).await
    }
}

/// The environment variable that carries the password of `--user`.
const PASSWORD_VAR: &str = "INFORMER_ETCD_PASSWORD";

/// Rejects flag combinations the etcd source would reject, naming the flags to change.
fn check_etcd_flags(args: &Args) -> anyhow::Result<()> {
    if args.prefix.is_empty() {
        bail!(
            "--prefix is empty, which would list and watch every key in etcd; pass the key \
             directory to watch, such as --prefix /config/"
        );
    }
    for endpoint in &args.endpoints {
        if endpoint.starts_with("https://") && args.cacert.is_none() {
            bail!(
                "the endpoint {endpoint} uses https; pass --cacert with the CA certificate that \
                 signed the server's certificate"
            );
        }
        if endpoint.starts_with("http://") && args.cacert.is_some() {
            bail!(
                "the endpoint {endpoint} uses plain http but --cacert is set; use an https:// \
                 endpoint or drop --cacert"
            );
        }
    }
    Ok(())
}

/// Builds the etcd source's config from the flags.
fn etcd_config(args: &Args) -> anyhow::Result<EtcdConfig> {
    check_etcd_flags(args)?;
    let mut config = if args.raw_prefix {
        EtcdConfig::raw_prefix(args.endpoints.clone(), &args.prefix)
    } else {
        EtcdConfig::new(args.endpoints.clone(), &args.prefix)
    };

    if let Some(cacert) = &args.cacert {
        let mut tls = EtcdTls::ca_file(cacert);
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.client_files(cert, key);
        }
        config.tls = Some(tls);
    }

    let password = match (&args.password_file, std::env::var_os(PASSWORD_VAR)) {
        (Some(_), Some(_)) => {
            bail!("both {PASSWORD_VAR} and --password-file are set; keep only one")
        }
        (Some(path), None) => Some(read_password_file(path)?),
        (None, Some(value)) => Some(
            value
                .into_string()
                .map_err(|_| anyhow::anyhow!("{PASSWORD_VAR} is not valid UTF-8"))?,
        ),
        (None, None) => None,
    };
    match (&args.user, password) {
        (Some(user), Some(password)) => {
            config.credentials = Some(Credentials::new(user.clone(), password));
        }
        (Some(user), None) => {
            bail!("--user {user} needs a password: set {PASSWORD_VAR} or pass --password-file")
        }
        (None, Some(_)) => bail!("{PASSWORD_VAR} is set but --user is not; pass --user"),
        (None, None) => {}
    }
    Ok(config)
}

/// Reads the password from the first line of `path`, without its line ending.
fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        bail!("the password file {} is empty", path.display());
    }
    Ok(password.to_owned())
}

async fn run<S>(source: S, args: &Args, metrics: Metrics) -> anyhow::Result<()>
where
    S: Source<Value = Bytes>,
{
    let decoder = ConfigDecoder {
        mode: args.decode,
        json: Json::new(),
        text: Text::default(),
    };
    let reflector = Reflector::with_metrics(source, decoder, metrics.clone());
    let store = reflector.store();
    let health = reflector.health();
    let queue = WorkQueue::builder("config")
        .metrics(metrics.clone())
        .build();

    let mut options = HandlerOptions::new("config-enqueue");
    if args.resync > 0 {
        options = options.resync(Duration::from_secs(args.resync));
    }
    store.register(options, enqueue_keys(queue.clone()));

    let (stop_sender, stop) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let reflector_task = tokio::spawn(reflector.run_until(stopped(stop.clone())));
    tokio::spawn(status_lines(
        store.clone(),
        health.clone(),
        queue.clone(),
        Duration::from_secs(args.status_every.max(1)),
    ));
    if let Some(address) = args.listen {
        // A controller whose probes cannot be served would be restarted by its orchestrator
        // anyway, so a port that is taken stops it at once with the reason.
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| anyhow::anyhow!("cannot listen on {address} for --listen: {error}"))?;
        tokio::spawn(serve(listener, metrics.clone(), health.clone()));
    }

    let controller = Controller::new("config", queue, store, reconcile, Arc::new(()))
        .workers(args.workers.max(1))
        .metrics(metrics);
    let run_for = args.run_for;
    let report = controller
        .run_until(async move {
            match run_for {
                Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
                None => {
                    if let Err(error) = shutdown_signal().await {
                        warn!(%error, "cannot install signal handlers; stopping");
                    }
                }
            }
        })
        .await;
    info!(?report, "controller stopped");
    let _ = stop_sender.send(true);
    let _ = reflector_task.await;
    Ok(())
}

/// Logs a status line every `every`: keys cached, readiness and queue depth.
async fn status_lines(
    store: Store<ConfigValue>,
    health: HealthWatch,
    queue: WorkQueue<Arc<str>>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let current = health.get();
        info!(
            keys = store.len(),
            invalid = store.decode_errors().len(),
            synced = current.synced,
            in_sync = current.in_sync,
            revision = current.revision,
            queue_depth = queue.len(),
            last_error = current.last_error.as_ref().map(|e| e.message.to_string()),
            "status"
        );
    }
}

/// Serves Prometheus metrics and the health probes.
async fn serve(listener: tokio::net::TcpListener, metrics: Metrics, health: HealthWatch) {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let app = Router::new()
        .route(
            "/metrics",
            get(
                |State((registry, _)): State<(Arc<Registry>, HealthWatch)>| async move {
                    let mut body = String::new();
                    match prometheus_client::encoding::text::encode(&mut body, &registry) {
                        Ok(()) => (StatusCode::OK, body),
                        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
                    }
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(
                |State((_, health)): State<(Arc<Registry>, HealthWatch)>| async move {
                    let current = health.get();
                    if current.ready() {
                        (StatusCode::OK, "ready".to_owned())
                    } else {
                        let reason = current
                            .last_error
                            .map(|e| e.message.to_string())
                            .unwrap_or_else(|| "not synced yet".into());
                        (StatusCode::SERVICE_UNAVAILABLE, reason)
                    }
                },
            ),
        )
        .with_state((registry, health));
    let address = listener.local_addr().ok();
    info!(?address, "serving /metrics, /healthz and /readyz");
    if let Err(error) = axum::serve(listener, app).await {
        warn!(?address, %error, "the HTTP server stopped");
    }
}

const SERVICES: [&str; 6] = ["api", "web", "worker", "billing", "search", "mailer"];

fn service_value(replicas: u32) -> String {
    format!(r#"{{"replicas":{replicas},"image":"registry.local/app:1.{replicas}","debug":false}}"#)
}

/// Writes the first configuration keys.
fn seed(store: &MemoryStore, prefix: &str) {
    for (index, service) in SERVICES.iter().enumerate() {
        store.put(
            format!("{prefix}{service}"),
            service_value(index as u32 + 1),
        );
    }
}

/// Changes keys every few hundred milliseconds and, every 11 s, compacts the history and cuts
/// the watch, so the reflector must relist.
async fn demo_writer(store: MemoryStore, prefix: String) {
    let mut round: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        round += 1;
        let (service, replicas) = {
            let mut rng = rand::rng();
            (
                SERVICES[rng.random_range(0..SERVICES.len())],
                rng.random_range(1..10),
            )
        };
        let key = format!("{prefix}{service}");
        match round % 16 {
            3 => {
                store.delete(key.clone());
                info!(%key, "demo writer: deleted");
            }
            6 => {
                store.put(format!("{prefix}broken"), "{replicas: three");
                info!(key = %format!("{prefix}broken"), "demo writer: wrote a value that is not JSON");
            }
            9 => {
                store.delete(format!("{prefix}broken"));
            }
            0 => {
                // Cut the watch, write while the reflector is away, then compact the history it
                // would resume from: the reflector must relist.
                store.faults().drop_watches();
                store.put(key, service_value(replicas));
                // The first service is written before it is deleted, so the delete always
                // makes a revision, even when the key was already gone. With at least two
                // revisions written, the compaction removes the one the reflector resumes from.
                let first = format!("{prefix}{}", SERVICES[0]);
                store.put(first.clone(), service_value(replicas));
                store.delete(first);
                let revision = store.revision();
                if let Err(error) = store.compact(revision) {
                    warn!(%error, "demo writer: compaction failed");
                }
                info!(
                    revision,
                    "demo writer: cut the watch and compacted the history; expect a relist"
                );
            }
            _ => {
                store.put(key, service_value(replicas));
            }
        }
    }
}
