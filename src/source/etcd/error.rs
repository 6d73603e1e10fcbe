//! Classification of etcd-client errors into [`SourceError`]s.
//!
//! | failure | class |
//! | --- | --- |
//! | a pinned read or watch below the compacted revision, a revision above the store's | Expired |
//! | unreachable server, broken connection, timeout, no leader, too many requests | Transient |
//! | an expired auth token or a stale auth revision (the client authenticates again) | Transient |
//! | permission denied, wrong user or password, auth not enabled, invalid argument | Permanent |
//! | a watch response above `max_response_bytes` (a relist reads past it) | Expired |
//! | any other response above `max_response_bytes` | Permanent |
//! | an invalid endpoint URL or TLS setting | Permanent |
//! | a TLS handshake that fails on a certificate, on either side | Permanent |
//!
//! The gRPC code alone is not enough: etcd reports both compaction and future revisions as
//! `OutOfRange`, and so does tonic for a response above the decoding limit, and a rejected
//! certificate arrives as `Unavailable`, like a refused connection. The classifier therefore
//! also reads the message and the error's source chain.

use std::fmt;
use std::sync::Arc;

use tonic::Code;

use crate::source::{Revision, SourceError};

/// The request that failed, named in error messages.
#[derive(Clone, Copy, Debug)]
pub(super) enum Operation {
    /// Connecting and authenticating.
    Connect,
    /// Reading a list page, pinned at `revision` for every page after the first.
    List { revision: Option<Revision> },
    /// Opening or reading a watch from revision `from`.
    Watch { from: Revision },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Connect => f.write_str("connect"),
            Operation::List { revision: None } => f.write_str("list the first page"),
            Operation::List {
                revision: Some(revision),
            } => write!(f, "list a page at revision {revision}"),
            Operation::Watch { from } => write!(f, "watch from revision {from}"),
        }
    }
}

/// The source name and prefix that every error message names.
#[derive(Clone, Debug)]
pub(super) struct ErrorContext {
    pub(super) source_name: Arc<str>,
    pub(super) prefix: String,
    /// Whether the TLS settings present a client certificate, which decides the advice for a
    /// server that rejects the connection.
    pub(super) client_certificate: bool,
}

/// The class of a failure, with the class's own text.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Expired,
    Transient,
    /// Carries the action a person has to take.
    Permanent(String),
}

impl ErrorContext {
    /// Classifies an etcd-client error of `operation`.
    pub(super) fn classify(&self, operation: Operation, error: etcd_client::Error) -> SourceError {
        let verdict = self.verdict(operation, &error);
        let mut detail = format!("{operation} failed: {}", describe(&error));
        if is_too_large(&error) {
            detail.push_str(" (the limit is the source's max_response_bytes)");
        }
        self.build(verdict, detail, Some(Box::new(error)))
    }

    /// Turns `error`, a transient failure, into a permanent one because a diagnostic handshake
    /// with `endpoint` received the certificate alert `alert`.
    pub(super) fn client_certificate_rejected(
        &self,
        error: SourceError,
        endpoint: &str,
        alert: &str,
    ) -> SourceError {
        let detail = match &error {
            SourceError::Transient { detail, .. } => detail.clone(),
            other => other.to_string(),
        };
        SourceError::Permanent {
            source_name: self.source_name.clone(),
            detail: format!(
                "{detail}; a diagnostic TLS handshake with {endpoint} received the alert {alert}"
            ),
            action: self.client_problem().action().to_owned(),
            cause: Some(Box::new(error)),
        }
    }

    /// Classifies a watch that the server canceled without a compact revision, by the
    /// server's `cancel_reason`.
    pub(super) fn classify_cancel(&self, from: Revision, reason: &str) -> SourceError {
        let verdict = if reason.contains("permission denied") {
            self.permission_denied()
        } else if reason.contains("compacted") {
            Verdict::Expired
        } else {
            Verdict::Transient
        };
        let reason = if reason.is_empty() {
            "no reason given"
        } else {
            reason
        };
        let detail = format!("the server canceled the watch from revision {from}: {reason}");
        self.build(verdict, detail, None)
    }

    /// Builds the error for a request that did not finish within `timeout`.
    pub(super) fn timed_out(
        &self,
        operation: Operation,
        timeout: std::time::Duration,
    ) -> SourceError {
        SourceError::Transient {
            source_name: self.source_name.clone(),
            detail: format!("{operation} timed out after {timeout:?}"),
            cause: None,
        }
    }

    fn build(
        &self,
        verdict: Verdict,
        detail: String,
        cause: Option<crate::source::BoxError>,
    ) -> SourceError {
        let source_name = self.source_name.clone();
        match verdict {
            Verdict::Expired => SourceError::Expired {
                source_name,
                detail,
            },
            Verdict::Transient => SourceError::Transient {
                source_name,
                detail,
                cause,
            },
            Verdict::Permanent(action) => SourceError::Permanent {
                source_name,
                detail,
                action,
                cause,
            },
        }
    }

    fn verdict(&self, operation: Operation, error: &etcd_client::Error) -> Verdict {
        use etcd_client::Error;

        if let Some(problem) = self.certificate_problem(error) {
            return Verdict::Permanent(problem.action().to_owned());
        }
        match error {
            Error::GRpcStatus(status) => {
                self.status_verdict(operation, status.code(), status.message())
            }
            // etcd-client returns a transport error only while building its channel, from
            // settings such as the TLS options, never for a failed connection.
            Error::TransportError(_) if matches!(operation, Operation::Connect) => {
                Verdict::Permanent(
                    "Fix the endpoint URLs and TLS settings in the etcd source's config".to_owned(),
                )
            }
            Error::TransportError(_) | Error::IoError(_) | Error::WatchError(_) => {
                Verdict::Transient
            }
            Error::InvalidUri(_) | Error::EndpointError(_) | Error::InvalidArgs(_) => {
                Verdict::Permanent(
                    "Fix the endpoint URLs and TLS settings in the etcd source's config".to_owned(),
                )
            }
            Error::InvalidMetadataValue(_) => Verdict::Permanent(
                "Check the user name and password: the auth token is not a valid header value"
                    .to_owned(),
            ),
            // Internal client failures and variants of APIs this source does not call.
            _ => Verdict::Transient,
        }
    }

    fn status_verdict(&self, operation: Operation, code: Code, message: &str) -> Verdict {
        match code {
            // A relist reads in pages that fit and skips a value that alone is too large, and
            // the watch then resumes after the list's revision, past the oversized response.
            Code::OutOfRange
                if message.contains(TOO_LARGE) && matches!(operation, Operation::Watch { .. }) =>
            {
                Verdict::Expired
            }
            Code::OutOfRange if message.contains(TOO_LARGE) => Verdict::Permanent(
                "Raise max_response_bytes in the etcd source's config above the size in \
                     this message"
                    .to_owned(),
            ),
            Code::OutOfRange => Verdict::Expired,
            Code::PermissionDenied => self.permission_denied(),
            Code::Unauthenticated if message.contains("invalid auth token") => Verdict::Transient,
            Code::Unauthenticated => Verdict::Permanent(CHECK_CREDENTIALS.to_owned()),
            Code::InvalidArgument if message.contains("auth store is old") => Verdict::Transient,
            Code::InvalidArgument
                if message.contains("authentication failed")
                    || message.contains("user name is empty") =>
            {
                Verdict::Permanent(CHECK_CREDENTIALS.to_owned())
            }
            Code::FailedPrecondition if message.contains("authentication is not enabled") => {
                Verdict::Permanent(
                    "Remove the credentials from the etcd source's config, or enable \
                     authentication on the etcd cluster"
                        .to_owned(),
                )
            }
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists => Verdict::Permanent(format!(
                "Check the prefix {:?} and the etcd source's config against the server",
                self.prefix
            )),
            Code::Unimplemented => Verdict::Permanent(
                "Use etcd 3.4 or later: the server does not implement this request".to_owned(),
            ),
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss => Verdict::Transient,
        }
    }

    /// Finds a certificate failure in the message or source chain of `error`.
    ///
    /// rustls's messages are matched as text because tonic turns the typed error into a
    /// `Status` message. The texts are those of rustls 0.23: "invalid peer certificate: ..."
    /// when this side rejects, "received fatal alert: ..." with a certificate alert when the
    /// server does. A server that closes the connection without the alert reaching this
    /// client is found by `EtcdSource::diagnose` instead.
    fn certificate_problem(&self, error: &etcd_client::Error) -> Option<CertificateProblem> {
        let text = describe(error);
        if text.contains("invalid peer certificate") {
            return Some(CertificateProblem::ServerRejected);
        }
        const CLIENT_ALERTS: [&str; 7] = [
            "BadCertificate",
            "UnknownCA",
            "CertificateRequired",
            "CertificateExpired",
            "CertificateRevoked",
            "CertificateUnknown",
            "UnsupportedCertificate",
        ];
        let alert = text.contains("received fatal alert")
            && CLIENT_ALERTS.iter().any(|alert| text.contains(alert));
        alert.then(|| self.client_problem())
    }

    fn client_problem(&self) -> CertificateProblem {
        if self.client_certificate {
            CertificateProblem::ClientRejected
        } else {
            CertificateProblem::ClientMissing
        }
    }

    fn permission_denied(&self) -> Verdict {
        Verdict::Permanent(format!(
            "Grant the etcd user's role read access to the keys with prefix {prefix:?}, for \
             example `etcdctl role grant-permission ROLE read --prefix=true {prefix:?}`",
            prefix = self.prefix
        ))
    }
}

/// The text of tonic's error for a response above the decoding limit.
const TOO_LARGE: &str = "message length too large";

/// Returns whether `error` is a response above the client's decoding limit.
pub(super) fn is_too_large(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == Code::OutOfRange && status.message().contains(TOO_LARGE)
        }
        _ => false,
    }
}

/// A TLS handshake that failed on a certificate, which no retry fixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CertificateProblem {
    /// This client rejected the server's certificate.
    ServerRejected,
    /// The server rejected this client's certificate.
    ClientRejected,
    /// The server requires a client certificate and none is configured.
    ClientMissing,
}

impl CertificateProblem {
    fn action(self) -> &'static str {
        match self {
            CertificateProblem::ServerRejected => {
                "The server's certificate failed verification: set EtcdTls::ca_certificate to \
                 the CA that signed it, and check that the certificate is valid for the \
                 endpoint's host (or set EtcdTls::domain_name) and has not expired"
            }
            CertificateProblem::ClientRejected => {
                "The server rejected the client certificate: set EtcdTls::client_certificate \
                 and EtcdTls::client_key to a certificate signed by the CA in the server's \
                 --trusted-ca-file, valid for client authentication and not expired"
            }
            CertificateProblem::ClientMissing => {
                "The server requires a client certificate (--client-cert-auth): set \
                 EtcdTls::client_certificate and EtcdTls::client_key to a certificate signed \
                 by the CA in the server's --trusted-ca-file"
            }
        }
    }
}

/// Returns the error's message with the messages of its sources, so that the text of a
/// wrapped TLS or I/O error is not lost.
pub(super) fn describe(error: &etcd_client::Error) -> String {
    let mut parts = Vec::new();
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            push_message(&mut parts, status.message());
            if let Some(source) = std::error::Error::source(status) {
                push_chain(&mut parts, source);
            }
            format!("status {:?}: {}", status.code(), parts.join(": "))
        }
        other => {
            push_chain(&mut parts, other);
            parts.join(": ")
        }
    }
}

fn push_chain(parts: &mut Vec<String>, error: &(dyn std::error::Error + 'static)) {
    let mut next = Some(error);
    while let Some(current) = next {
        push_message(parts, &current.to_string());
        next = current.source();
    }
}

/// Adds `message` unless it is empty, is only "transport error", or repeats a part.
fn push_message(parts: &mut Vec<String>, message: &str) {
    let message = message.trim().trim_start_matches("transport error: ");
    if message.is_empty() || message == "transport error" {
        return;
    }
    if parts.iter().any(|part| part.contains(message)) {
        return;
    }
    parts.push(message.to_owned());
}

const CHECK_CREDENTIALS: &str =
    "Check the user name and password in the etcd source's config against the cluster's users";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ErrorClass;

    fn context() -> ErrorContext {
        ErrorContext {
            source_name: "etcd http://127.0.0.1:1 prefix \"/app/\"".into(),
            prefix: "/app/".to_owned(),
            client_certificate: true,
        }
    }

    fn status(code: Code, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, message))
    }

    fn classify(error: etcd_client::Error) -> SourceError {
        context().classify(Operation::List { revision: Some(7) }, error)
    }

    #[test]
    fn compacted_read_expired() {
        let error = classify(status(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert_eq!(error.class(), ErrorClass::Expired);
        let text = error.to_string();
        assert!(text.contains("list a page at revision 7"), "{text}");
        assert!(text.contains("prefix \"/app/\""), "{text}");
    }

    #[test]
    fn future_revision_expired() {
        let error = classify(status(
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ));
        assert_eq!(error.class(), ErrorClass::Expired);
    }

    #[test]
    fn oversized_watch_response_expired() {
        let error = context().classify(
            Operation::Watch { from: 9 },
            status(
                Code::OutOfRange,
                "Error, decoded message length too large: found 70000 bytes, the limit is: \
                 65536 bytes",
            ),
        );
        assert_eq!(error.class(), ErrorClass::Expired);
        assert!(
            error.to_string().contains("watch from revision 9"),
            "{error}"
        );
    }

    #[test]
    fn rejected_server_certificate_permanent() {
        let error = classify(status(
            Code::Unavailable,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(error.class(), ErrorClass::Permanent);
        let text = error.to_string();
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(text.contains("EtcdTls::ca_certificate"), "{text}");
    }

    #[test]
    fn certificate_alert_permanent() {
        let alert = || {
            status(
                Code::Unknown,
                "connection error: received fatal alert: BadCertificate",
            )
        };
        let error = classify(alert());
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(
            error
                .to_string()
                .contains("rejected the client certificate")
        );

        let without_certificate = ErrorContext {
            client_certificate: false,
            ..context()
        };
        let error = without_certificate.classify(Operation::List { revision: None }, alert());
        assert!(error.to_string().contains("requires a client certificate"));
    }

    #[test]
    fn other_alert_transient() {
        let error = classify(status(
            Code::Unknown,
            "connection error: received fatal alert: DecodeError",
        ));
        assert_eq!(error.class(), ErrorClass::Transient);
    }

    #[test]
    fn transport_error_text_deduplicated() {
        let mut parts = Vec::new();
        push_message(&mut parts, "operation was canceled");
        push_message(&mut parts, "transport error");
        push_message(&mut parts, "transport error: connection closed");
        push_message(&mut parts, "connection closed");
        assert_eq!(parts, ["operation was canceled", "connection closed"]);
    }

    #[test]
    fn oversized_response_permanent() {
        let error = classify(status(
            Code::OutOfRange,
            "Error, decoded message length too large: found 5000000 bytes, the limit is: \
             4194304 bytes",
        ));
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(error.to_string().contains("max_response_bytes"));
    }

    #[test]
    fn connection_failures_transient() {
        let cases = [
            status(Code::Unavailable, "etcdserver: no leader"),
            status(
                Code::Unavailable,
                "error trying to connect: connection refused",
            ),
            status(Code::Unknown, "h2 protocol error: connection reset"),
            status(Code::Internal, "h2 protocol error: error reading a body"),
            status(Code::DeadlineExceeded, "deadline exceeded"),
            status(Code::ResourceExhausted, "etcdserver: too many requests"),
            status(Code::Cancelled, "operation was canceled"),
            etcd_client::Error::IoError(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            etcd_client::Error::WatchError("channel closed".to_owned()),
        ];
        for error in cases {
            let text = error.to_string();
            assert_eq!(classify(error).class(), ErrorClass::Transient, "{text}");
        }
    }

    #[test]
    fn permission_denied_permanent() {
        let error = classify(status(
            Code::PermissionDenied,
            "etcdserver: permission denied",
        ));
        assert_eq!(error.class(), ErrorClass::Permanent);
        let text = error.to_string();
        assert!(text.contains("grant-permission ROLE read"), "{text}");
        assert!(text.contains("\"/app/\""), "{text}");
    }

    #[test]
    fn bad_credentials_permanent() {
        let cases = [
            status(
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            status(Code::InvalidArgument, "etcdserver: user name is empty"),
            status(Code::Unauthenticated, "etcdserver: unauthenticated"),
        ];
        for error in cases {
            let error = classify(error);
            assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
            assert!(
                error.to_string().contains("user name and password"),
                "{error}"
            );
        }
    }

    #[test]
    fn refreshable_auth_transient() {
        let cases = [
            status(Code::Unauthenticated, "etcdserver: invalid auth token"),
            status(
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
        ];
        for error in cases {
            let text = error.to_string();
            assert_eq!(classify(error).class(), ErrorClass::Transient, "{text}");
        }
    }

    #[test]
    fn auth_not_enabled_permanent() {
        let error = classify(status(
            Code::FailedPrecondition,
            "etcdserver: authentication is not enabled",
        ));
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(error.to_string().contains("Remove the credentials"));
    }

    #[test]
    fn other_invalid_argument_permanent() {
        let error = classify(status(
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        ));
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(error.to_string().contains("Check the prefix \"/app/\""));
    }

    #[test]
    fn unimplemented_permanent() {
        let error = classify(status(Code::Unimplemented, "unknown service"));
        assert_eq!(error.class(), ErrorClass::Permanent);
    }

    #[test]
    fn invalid_endpoint_permanent() {
        let error = classify(etcd_client::Error::InvalidArgs(
            "TLS options are only supported with HTTPS URLs".to_owned(),
        ));
        assert_eq!(error.class(), ErrorClass::Permanent);
        assert!(error.to_string().contains("endpoint URLs"));
    }

    #[test]
    fn cancel_reasons() {
        let context = context();
        let denied = context.classify_cancel(5, "etcdserver: permission denied");
        assert_eq!(denied.class(), ErrorClass::Permanent);
        assert!(denied.to_string().contains("watch from revision 5"));

        let compacted = context.classify_cancel(5, "mvcc: required revision has been compacted");
        assert_eq!(compacted.class(), ErrorClass::Expired);

        let unknown = context.classify_cancel(5, "");
        assert_eq!(unknown.class(), ErrorClass::Transient);
        assert!(unknown.to_string().contains("no reason given"));
    }

    #[test]
    fn timeout_transient() {
        let error = context().timed_out(
            Operation::Watch { from: 3 },
            std::time::Duration::from_secs(2),
        );
        assert_eq!(error.class(), ErrorClass::Transient);
        assert!(
            error
                .to_string()
                .contains("watch from revision 3 timed out after 2s")
        );
    }
}
