//! Configuration of an [`EtcdSource`](super::EtcdSource) and its validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{ConnectOptions, TlsOptions};

use super::tls::EtcdTls;
use crate::source::SourceError;

/// The default number of keys per list page.
///
/// etcd 3.4 counts every key left in the range for each limited range request (the response's
/// `count` field), so a page costs time in proportion to the keys after it, not only to the
/// keys it returns. A full list of 100,000 keys of 100 bytes from etcd 3.4.23 on loopback took
/// 1.06 s at 500 keys per page and 0.26 s at 10,000 keys per page (the ignored test
/// `page_size_cost` in `tests/etcd_source.rs`, on a 2-core virtual machine).
pub const DEFAULT_PAGE_SIZE: usize = 10_000;

/// The default limit on one gRPC response or request, in bytes: 64 MiB.
///
/// tonic rejects responses above 4 MiB by default, which a page of 10,000 keys or a catch-up
/// watch response easily exceeds. etcd 3.4.23 sends larger responses (a 6 MiB page in this
/// crate's tests), so the client's limit decides.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The smallest HTTP/2 keep-alive interval etcd accepts by default.
///
/// etcd closes connections that ping more often than its `--grpc-keepalive-min-time`, which
/// defaults to 5 s.
pub const MIN_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// A user name and password for etcd's authentication.
///
/// The password never appears in `Debug` output, logs or errors.
#[derive(Clone)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// The user's password.
    pub password: String,
}

impl Credentials {
    /// Creates credentials for `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Connection settings and key prefix of an [`EtcdSource`](super::EtcdSource).
///
/// # Prefix boundaries
/// The source reads every key that starts with [`EtcdConfig::prefix`], byte for byte.
/// [`EtcdConfig::new`] treats its prefix as a directory and appends a `/` when it has none, so
/// `"/app"` becomes `"/app/"`, which matches `"/app/x"` but not `"/apple"` or `"/app-old/x"`.
/// To match every key that starts with `"/app"`, build the config with
/// [`EtcdConfig::raw_prefix`].
///
/// An empty prefix would read and watch the whole key space, so it is rejected unless
/// [`EtcdConfig::whole_keyspace`] built the config.
///
/// # Security
/// [`EtcdConfig::tls`] sets the CA and the client certificate for `https://` endpoints, and
/// [`EtcdConfig::credentials`] the user and password of etcd's authentication. `Debug` output
/// shows neither the password nor in-memory key PEM, and the source never logs them.
#[derive(Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, for example `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// The key prefix to list and watch, matched byte for byte: `"/app"` here also matches
    /// `"/apple"`. The constructors set it; see the [prefix boundaries](#prefix-boundaries).
    pub prefix: String,
    /// Whether an empty prefix, which reads every key, is intended.
    pub allow_whole_keyspace: bool,
    /// The maximum number of keys per list page. The source uses the smaller of this and the
    /// reflector's limit. See [`DEFAULT_PAGE_SIZE`] for why pages should be large.
    pub page_size: usize,
    /// The largest gRPC response accepted, in bytes: one list page or one watch response.
    ///
    /// A list page above it is read again in smaller pages. A value that alone exceeds it
    /// cannot be read: the source skips its key, logs it at warn level and counts it in the
    /// `decode_errors` metric, and a watch response that carries it leads to a relist. Keep it
    /// above the decoder's `max_bytes`, so that an oversized value fails in the decoder, which
    /// keeps the key's last good value, instead of here, where the key disappears from the
    /// cache at the next list.
    pub max_response_bytes: usize,
    /// The largest gRPC request sent, in bytes.
    pub max_request_bytes: usize,
    /// How long establishing a connection may take.
    pub connect_timeout: Duration,
    /// How long one list page, one authentication or opening one watch may take.
    pub request_timeout: Duration,
    /// How often HTTP/2 pings check an idle connection. At least [`MIN_KEEP_ALIVE_INTERVAL`].
    pub keep_alive_interval: Duration,
    /// How long a ping may wait for its response before the connection counts as dead.
    ///
    /// A frozen server is noticed within about `keep_alive_interval + keep_alive_timeout`.
    pub keep_alive_timeout: Duration,
    /// How often an open watch requests a progress response from the server, so a healthy watch
    /// without changes still delivers a [`WatchMessage::Progress`](crate::source::WatchMessage).
    pub progress_interval: Duration,
    /// Whether the revision of a requested progress response may advance the resume revision.
    ///
    /// etcd 3.4.23 sends the response to a progress request on a control channel that is not
    /// ordered with the watch's events, so the response can carry revision R while events at
    /// or below R are still on their way. Trusting it could then skip those events after a reconnect. When
    /// this is `false`, a requested progress response only proves the watch is alive and
    /// yields the last revision already delivered, and an idle watch advances through etcd's
    /// periodic progress notifications (`--experimental-watch-progress-notify-interval`,
    /// 10 minutes by default), which the server sends in order.
    ///
    /// Set it to `true` only for etcd releases that send progress responses through the
    /// watch's event channel.
    pub trust_requested_progress: bool,
    /// Whether requests and watches fail when the member has no leader, so the client moves
    /// to another member instead of waiting on a partitioned one.
    pub require_leader: bool,
    /// The user and password, when the cluster has authentication enabled.
    pub credentials: Option<Credentials>,
    /// TLS settings, required for `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

// Written by hand so that each field is shown on purpose. `Credentials` and `EtcdTls` redact
// their own secrets.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("allow_whole_keyspace", &self.allow_whole_keyspace)
            .field("page_size", &self.page_size)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("progress_interval", &self.progress_interval)
            .field("trust_requested_progress", &self.trust_requested_progress)
            .field("require_leader", &self.require_leader)
            .field("credentials", &self.credentials)
            .field("tls", &self.tls)
            .finish()
    }
}

impl EtcdConfig {
    /// Creates a config that reads the keys below the directory `dir`, with the defaults of
    /// every other field: `"/app"` and `"/app/"` both become the prefix `"/app/"`, which does
    /// not match `"/apple"`. An empty `dir` stays empty and fails validation. See the
    /// [prefix boundaries](EtcdConfig#prefix-boundaries).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>, dir: &str) -> Self {
        let mut prefix = dir.to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        EtcdConfig::raw_prefix(endpoints, &prefix)
    }

    /// Creates a config that reads the keys below the directory `dir`. The same as
    /// [`EtcdConfig::new`], for code that wants to say so.
    pub fn directory(endpoints: impl IntoIterator<Item = impl Into<String>>, dir: &str) -> Self {
        EtcdConfig::new(endpoints, dir)
    }

    /// Creates a config that reads every key starting with `prefix`, byte for byte: `"/app"`
    /// matches `"/app/x"`, `"/apple"` and `"/app-old"`.
    pub fn raw_prefix(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        prefix: &str,
    ) -> Self {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.to_owned(),
            allow_whole_keyspace: false,
            page_size: DEFAULT_PAGE_SIZE,
            max_response_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_request_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            progress_interval: Duration::from_secs(5),
            trust_requested_progress: false,
            require_leader: true,
            credentials: None,
            tls: None,
        }
    }

    /// Creates a config that reads every key in the cluster.
    pub fn whole_keyspace(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut config = EtcdConfig::raw_prefix(endpoints, "");
        config.allow_whole_keyspace = true;
        config
    }

    /// Returns the source name used in logs, metrics and errors, for example
    /// `etcd http://127.0.0.1:2379 prefix "/app/"`.
    pub fn source_name(&self) -> Arc<str> {
        format!("etcd {} prefix {:?}", self.endpoints.join(","), self.prefix).into()
    }

    /// Checks every field.
    ///
    /// # Errors
    /// A [`SourceError::Permanent`] naming the invalid field and the fix.
    pub fn validate(&self) -> Result<(), SourceError> {
        let invalid = |detail: String, action: &str| {
            Err(SourceError::Permanent {
                source_name: self.source_name(),
                detail,
                action: action.to_owned(),
                cause: None,
            })
        };

        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return invalid(
                format!("invalid endpoints {:?}", self.endpoints),
                "Set at least one etcd client URL, for example http://127.0.0.1:2379",
            );
        }
        if self.prefix.is_empty() && !self.allow_whole_keyspace {
            return invalid(
                "the prefix is empty, which would list and watch every key in etcd".to_owned(),
                "Set a prefix such as \"/app/\", or build the config with \
                 EtcdConfig::whole_keyspace to read every key on purpose",
            );
        }
        if self.page_size == 0 {
            return invalid(
                "page_size is 0".to_owned(),
                "Set page_size to at least 1; 10000 lists large prefixes fastest",
            );
        }
        if self.max_response_bytes == 0 || self.max_request_bytes == 0 {
            return invalid(
                format!(
                    "max_response_bytes {} or max_request_bytes {} is 0",
                    self.max_response_bytes, self.max_request_bytes
                ),
                "Set both message limits above the largest page or value, for example 64 MiB",
            );
        }
        if self.keep_alive_interval < MIN_KEEP_ALIVE_INTERVAL {
            return invalid(
                format!(
                    "keep_alive_interval {:?} is below etcd's minimum of {:?}",
                    self.keep_alive_interval, MIN_KEEP_ALIVE_INTERVAL
                ),
                "Set keep_alive_interval to at least 5 s, or etcd closes the connection for \
                 pinging too often (--grpc-keepalive-min-time)",
            );
        }
        self.validate_tls()?;
        let durations = [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("progress_interval", self.progress_interval),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return invalid(
                    format!("{field} is zero"),
                    "Set every timeout and interval to a positive duration",
                );
            }
        }
        Ok(())
    }

    /// Checks that the endpoints' schemes agree with the TLS settings.
    fn validate_tls(&self) -> Result<(), SourceError> {
        let invalid = |detail: String, action: String| {
            Err(SourceError::Permanent {
                source_name: self.source_name(),
                detail,
                action,
                cause: None,
            })
        };
        for endpoint in &self.endpoints {
            let https = endpoint.starts_with("https://");
            let http = endpoint.starts_with("http://");
            if https && self.tls.is_none() {
                return invalid(
                    format!(
                        "the endpoint {endpoint} uses https but the config has no TLS settings"
                    ),
                    "Set EtcdConfig::tls with the CA certificate that signed the server's \
                     certificate"
                        .to_owned(),
                );
            }
            if http && self.tls.is_some() {
                return invalid(
                    format!("the endpoint {endpoint} uses plain http but TLS settings are set"),
                    format!(
                        "Use https://{} for a server with TLS, or remove the TLS settings",
                        endpoint.trim_start_matches("http://")
                    ),
                );
            }
        }
        Ok(())
    }

    /// Builds etcd-client's connection options with the loaded TLS settings.
    pub(super) fn connect_options(&self, tls: Option<&TlsOptions>) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(self.keep_alive_interval, self.keep_alive_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(self.require_leader);
        if let Some(credentials) = &self.credentials {
            options = options
                .with_user(&credentials.user, &credentials.password)
                .with_auto_token_refresh(true);
        }
        if let Some(tls) = tls {
            options = options.with_tls(tls.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ErrorClass;

    fn config(prefix: &str) -> EtcdConfig {
        EtcdConfig::new(["http://127.0.0.1:1"], prefix)
    }

    fn error_text(config: &EtcdConfig) -> String {
        let error = config.validate().expect_err("config must be invalid");
        assert_eq!(error.class(), ErrorClass::Permanent);
        error.to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let config = config("/app/");
        assert!(config.validate().is_ok());
        assert_eq!(config.page_size, 10_000);
        assert_eq!(config.max_response_bytes, 64 * 1024 * 1024);
        assert_eq!(config.keep_alive_interval, Duration::from_secs(10));
        assert_eq!(config.keep_alive_timeout, Duration::from_secs(5));
        assert_eq!(config.progress_interval, Duration::from_secs(5));
        assert!(!config.trust_requested_progress);
    }

    #[test]
    fn empty_prefix_rejected() {
        let text = error_text(&config(""));
        assert!(text.contains("prefix is empty"), "{text}");
        assert!(text.contains("whole_keyspace"), "{text}");
    }

    #[test]
    fn whole_keyspace_allows_empty_prefix() {
        let config = EtcdConfig::whole_keyspace(["http://127.0.0.1:1"]);
        assert_eq!(config.prefix, "");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn new_appends_separator() {
        assert_eq!(EtcdConfig::new(["e"], "/app").prefix, "/app/");
        assert_eq!(EtcdConfig::new(["e"], "/app/").prefix, "/app/");
        assert_eq!(EtcdConfig::directory(["e"], "/app").prefix, "/app/");
        assert_eq!(EtcdConfig::new(["e"], "").prefix, "");
    }

    #[test]
    fn raw_prefix_kept() {
        assert_eq!(EtcdConfig::raw_prefix(["e"], "/app").prefix, "/app");
        assert_eq!(EtcdConfig::raw_prefix(["e"], "app-").prefix, "app-");
    }

    #[test]
    fn https_without_tls_rejected() {
        let config = EtcdConfig::new(["https://127.0.0.1:1"], "/app/");
        let text = error_text(&config);
        assert!(
            text.contains("uses https but the config has no TLS"),
            "{text}"
        );
    }

    #[test]
    fn http_with_tls_rejected() {
        let mut config = config("/app/");
        config.tls = Some(EtcdTls::ca_file("/ca.pem"));
        let text = error_text(&config);
        assert!(text.contains("uses plain http"), "{text}");
        assert!(text.contains("https://127.0.0.1:1"), "{text}");
    }

    #[test]
    fn short_keep_alive_rejected() {
        let mut config = config("/app/");
        config.keep_alive_interval = Duration::from_secs(2);
        let text = error_text(&config);
        assert!(text.contains("keep_alive_interval"), "{text}");
    }

    #[test]
    fn zero_durations_rejected() {
        let mut config = config("/app/");
        config.progress_interval = Duration::ZERO;
        assert!(error_text(&config).contains("progress_interval is zero"));
    }

    #[test]
    fn missing_endpoints_rejected() {
        let config = EtcdConfig::new(Vec::<String>::new(), "/app/");
        assert!(error_text(&config).contains("invalid endpoints"));
    }

    #[test]
    fn zero_page_size_rejected() {
        let mut config = config("/app/");
        config.page_size = 0;
        assert!(error_text(&config).contains("page_size is 0"));
    }

    #[test]
    fn name_shows_endpoints_and_prefix() {
        let config = EtcdConfig::new(["http://a:1", "http://b:2"], "/app/");
        assert_eq!(
            &*config.source_name(),
            "etcd http://a:1,http://b:2 prefix \"/app/\""
        );
    }

    #[test]
    fn password_not_in_debug() {
        let credentials = Credentials {
            user: "reader".to_owned(),
            password: "secret".to_owned(),
        };
        let text = format!("{credentials:?}");
        assert!(text.contains("reader"));
        assert!(!text.contains("secret"));
    }

    #[test]
    fn secrets_not_in_config_debug() {
        let mut config = EtcdConfig::new(["https://127.0.0.1:1"], "/app/");
        config.credentials = Some(Credentials::new("reader", "hunter2-password"));
        config.tls =
            Some(EtcdTls::ca_pem("CA-PEM-TEXT").client_pem("CERT-PEM-TEXT", "KEY-PEM-TEXT"));
        let text = format!("{config:?}");
        assert!(text.contains("reader"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("KEY-PEM-TEXT"), "{text}");
        assert!(text.contains("client_key: Some(\"<redacted>\")"), "{text}");
    }
}
