//! A prefix of an etcd v3 key space as a [`Source`].
//!
//! [`EtcdSource`] lists and watches every key under [`EtcdConfig::prefix`] with the
//! `etcd-client` crate. Values stay raw [`Bytes`]; a [decoder](crate::decode) turns them into
//! typed values. [`EtcdConfig::new`] treats the prefix as a directory, so `"/app"` does not
//! read `"/apple"`; see the [prefix boundaries](EtcdConfig#prefix-boundaries).
//!
//! # List
//! The first page reads the prefix at the current revision and returns that revision. Every
//! later page is pinned at it with a range read at that revision, so writes between pages are
//! not seen and the whole list is one snapshot. The continue token is the last key of the page
//! followed by a zero byte. When the pinned revision has been compacted, the page fails with
//! [`ErrorClass::Expired`] and the reflector lists again.
//!
//! Pages should be large: see [`DEFAULT_PAGE_SIZE`].
//!
//! # Watch
//! See the [`watch`] module for how responses map to messages. Each object's
//! [`Incarnation`](crate::source::Incarnation) is its `create_revision`, and its revision is
//! its `mod_revision`.
//!
//! # Skipped keys
//! Two kinds of keys are skipped in lists and watches, logged at warn level and counted in
//! the `decode_errors` metric of this source, while every other key goes on:
//!
//! - a key that is not valid UTF-8, because cache keys are UTF-8 strings;
//! - a key whose value alone exceeds [`EtcdConfig::max_response_bytes`] (64 MiB by default),
//!   because gRPC rejects the response that carries it. A list page above the limit is read
//!   again in smaller pages, and a watch response above it fails as
//!   [`ErrorClass::Expired`], so the reflector relists
//!   and the watch resumes after the oversized change.
//!
//! # Connections
//! HTTP/2 keep-alive pings detect a server that stops responding, such as a frozen process or a
//! lost host, within about `keep_alive_interval + keep_alive_timeout`. A killed server is
//! noticed at once because its connection closes.
//!
//! [`EtcdSource::connect`] checks the config and loads the TLS files, but does not contact the
//! server. The first list or watch connects and, with credentials, authenticates; a failed
//! attempt is retried by the next request. Every connection failure therefore reaches the
//! [reflector](crate::reflector) as a classified error and shows in its readiness: an
//! unreachable server as transient, a wrong password or a rejected certificate as permanent.
//!
//! # Security
//! [`EtcdTls`] verifies the server with a CA and presents a client certificate, and
//! [`Credentials`] log in as an etcd user whose role may be limited to the watched prefix. The
//! source reads only its prefix's range, so a role with `read` permission on that prefix is
//! enough. The password and in-memory key PEM never appear in `Debug` output, logs or errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, KvClient, WatchClient};
use tokio::sync::OnceCell;

use crate::metrics::Metrics;
use crate::source::{ErrorClass, ListRequest, Page, Revision, Source, SourceError, WatchStream};

mod config;
mod error;
mod list;
mod probe;
mod tls;
pub mod watch;

pub use config::{
    Credentials, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PAGE_SIZE, EtcdConfig, MIN_KEEP_ALIVE_INTERVAL,
};
pub use tls::{EtcdTls, PemSource};

use error::{ErrorContext, Operation};
use list::KeyRange;
use tls::LoadedTls;

/// A prefix of an etcd key space, listed in pages and watched in batches.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct EtcdSource {
    name: Arc<str>,
    config: EtcdConfig,
    range: KeyRange,
    errors: ErrorContext,
    /// The loaded TLS settings. Their `Debug` output contains the client key, so
    /// `EtcdSource`'s `Debug` leaves them out.
    tls: Option<LoadedTls>,
    /// The clients, created by the first request that succeeds in connecting.
    clients: Arc<OnceCell<Clients>>,
    metrics: Metrics,
}

/// The etcd-client handles the source uses, with the configured message limits.
#[derive(Clone)]
struct Clients {
    kv: KvClient,
    watch: WatchClient,
}

impl std::fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSource")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl EtcdSource {
    /// Validates `config`, reads and checks its TLS files, and creates the source. It does not
    /// contact the server: the first list or watch connects and authenticates.
    ///
    /// # Errors
    /// [`SourceError::Permanent`] for an invalid config, such as an empty prefix without
    /// [`EtcdConfig::whole_keyspace`], an `https://` endpoint without TLS settings, or a TLS
    /// file that is missing, unreadable, not PEM, or contains a key that does not match its
    /// certificate. The message names the field or file.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdSource, SourceError> {
        config.validate()?;
        let name = config.source_name();
        let errors = ErrorContext {
            source_name: name.clone(),
            prefix: config.prefix.clone(),
            client_certificate: config
                .tls
                .as_ref()
                .is_some_and(|tls| tls.client_certificate.is_some()),
        };
        let tls = match &config.tls {
            Some(settings) => Some(settings.load(&name)?),
            None => None,
        };

        tracing::info!(
            source = %name,
            page_size = config.page_size,
            authenticated = config.credentials.is_some(),
            tls = tls.is_some(),
            "etcd source created"
        );
        Ok(EtcdSource {
            range: KeyRange::for_prefix(&config.prefix),
            name,
            config,
            errors,
            tls,
            clients: Arc::new(OnceCell::new()),
            metrics: Metrics::default(),
        })
    }

    /// Returns the clients, connecting and authenticating first if no request has yet.
    ///
    /// # Errors
    /// The classified failure of [`Client::connect`], or a transient timeout after
    /// `request_timeout`. The next call tries again.
    async fn clients(&self) -> Result<&Clients, SourceError> {
        self.clients.get_or_try_init(|| self.open_clients()).await
    }

    async fn open_clients(&self) -> Result<Clients, SourceError> {
        let config = &self.config;
        let timeout = config.request_timeout;
        let options = config.connect_options(self.tls.as_ref().map(|tls| &tls.options));
        let connecting = Client::connect(&config.endpoints, Some(options));
        let client = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(self.errors.timed_out(Operation::Connect, timeout)),
            Ok(Err(error)) => {
                let error = self.errors.classify(Operation::Connect, error);
                return Err(self.diagnose(error).await);
            }
            Ok(Ok(client)) => client,
        };

        let kv = client
            .kv_client()
            .max_decoding_message_size(config.max_response_bytes)
            .max_encoding_message_size(config.max_request_bytes);
        let watch = client
            .watch_client()
            .max_decoding_message_size(config.max_response_bytes);
        tracing::info!(
            source = %self.name,
            authenticated = config.credentials.is_some(),
            tls = self.tls.is_some(),
            "etcd client created"
        );
        Ok(Clients { kv, watch })
    }

    /// Checks whether a transient failure of a TLS connection is a rejected client certificate,
    /// and returns the error to report.
    ///
    /// A server that rejects the client certificate closes the connection right after the
    /// handshake, which etcd-client reports like a network failure. So for a transient error
    /// with an underlying cause (not a timeout), this opens one diagnostic TLS connection to
    /// each endpoint, each within `connect_timeout`, as the `probe` module describes. A
    /// certificate alert makes the error permanent.
    async fn diagnose(&self, error: SourceError) -> SourceError {
        let Some(tls) = &self.tls else {
            return error;
        };
        let has_cause = matches!(&error, SourceError::Transient { cause: Some(_), .. });
        if error.class() != ErrorClass::Transient || !has_cause {
            return error;
        }
        for endpoint in &self.config.endpoints {
            let timeout = self.config.connect_timeout;
            if let Some(alert) = probe::certificate_alert(tls, endpoint, timeout).await {
                tracing::debug!(
                    source = %self.name,
                    endpoint = %endpoint,
                    alert = ?alert,
                    client_certificate = self.errors.client_certificate,
                    "the server rejects the client certificate"
                );
                return self.errors.client_certificate_rejected(
                    error,
                    endpoint,
                    &format!("{alert:?}"),
                );
            }
        }
        error
    }

    /// Counts this source's skipped keys in `metrics` instead of a private instance.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Returns the config this source was created with.
    pub fn config(&self) -> &EtcdConfig {
        &self.config
    }
}

impl Source for EtcdSource {
    type Value = Bytes;

    fn name(&self) -> &Arc<str> {
        &self.name
    }

    async fn list_page(&self, request: ListRequest) -> Result<Page<Bytes>, SourceError> {
        self.read_page(request).await
    }

    async fn watch(&self, from: Revision) -> Result<WatchStream<Bytes>, SourceError> {
        self.open_watch(from).await
    }

    fn progress_interval(&self) -> Option<Duration> {
        Some(self.config.progress_interval)
    }
}
