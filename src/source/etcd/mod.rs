//! A prefix of an etcd v3 key space as a [`Source`].
//!
//! [`EtcdSource`] lists and watches every key under [`EtcdConfig::prefix`] with the
//! `etcd-client` crate. Values stay raw [`Bytes`]; a [decoder](crate::decode) turns them into
//! typed values.
//!
//! # List
//! The first page reads the prefix at the current revision and returns that revision. Every
//! later page is pinned at it with a range read at that revision, so writes between pages are
//! not seen and the whole list is one snapshot. The continue token is the last key of the page
//! followed by a zero byte. When the pinned revision has been compacted, the page fails with
//! [`ErrorClass::Expired`](crate::source::ErrorClass::Expired) and the reflector lists again.
//!
//! Pages should be large: see [`DEFAULT_PAGE_SIZE`].
//!
//! # Watch
//! See the [`watch`] module for how responses map to messages. Each object's
//! [`Incarnation`](crate::source::Incarnation) is its `create_revision`, and its revision is
//! its `mod_revision`.
//!
//! # Keys
//! Cache keys are UTF-8 strings. A key that is not valid UTF-8 is skipped in lists and watches,
//! logged at warn level and counted in the `decode_errors` metric of this source.
//!
//! # Connections
//! Responses up to [`EtcdConfig::max_response_bytes`] (64 MiB by default) are accepted.
//! HTTP/2 keep-alive pings detect a server that stops responding, such as a frozen process or a
//! lost host, within about `keep_alive_interval + keep_alive_timeout`. A killed server is
//! noticed at once because its connection closes.
//!
//! `connect` does not contact the server unless credentials are set, in which case it
//! authenticates. Unreachable servers therefore surface on the first list or watch, as
//! transient errors the reflector retries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{Client, KvClient, WatchClient};

use crate::metrics::Metrics;
use crate::source::{ListRequest, Page, Revision, Source, SourceError, WatchStream};

mod config;
mod error;
mod list;
pub mod watch;

pub use config::{
    Credentials, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PAGE_SIZE, EtcdConfig, MIN_KEEP_ALIVE_INTERVAL,
};

use error::{ErrorContext, Operation};
use list::KeyRange;

/// A prefix of an etcd key space, listed in pages and watched in batches.
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct EtcdSource {
    name: Arc<str>,
    config: EtcdConfig,
    range: KeyRange,
    errors: ErrorContext,
    kv: KvClient,
    watch: WatchClient,
    metrics: Metrics,
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
    /// Validates `config` and creates the client. With credentials set, this also
    /// authenticates against the cluster.
    ///
    /// # Errors
    /// [`SourceError::Permanent`] for an invalid config, a wrong user or password, or an
    /// invalid endpoint URL. [`SourceError::Transient`] when authentication cannot reach the
    /// server within `request_timeout`.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdSource, SourceError> {
        config.validate()?;
        let name = config.source_name();
        let errors = ErrorContext {
            source_name: name.clone(),
            prefix: config.prefix.clone(),
        };

        let timeout = config.request_timeout;
        let connecting = Client::connect(&config.endpoints, Some(config.connect_options()));
        let client = match tokio::time::timeout(timeout, connecting).await {
            Err(_) => return Err(errors.timed_out(Operation::Connect, timeout)),
            Ok(Err(error)) => return Err(errors.classify(Operation::Connect, error)),
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
            source = %name,
            page_size = config.page_size,
            authenticated = config.credentials.is_some(),
            "etcd source created"
        );
        Ok(EtcdSource {
            range: KeyRange::for_prefix(&config.prefix),
            name,
            config,
            errors,
            kv,
            watch,
            metrics: Metrics::default(),
        })
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
