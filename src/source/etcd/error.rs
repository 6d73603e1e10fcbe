//! Classification of etcd-client errors into [`SourceError`]s.
//!
//! | failure | class |
//! | --- | --- |
//! | a pinned read or watch below the compacted revision, a revision above the store's | Expired |
//! | unreachable server, broken connection, timeout, no leader, too many requests | Transient |
//! | an expired auth token or a stale auth revision (the client authenticates again) | Transient |
//! | permission denied, wrong user or password, auth not enabled, invalid argument | Permanent |
//! | a response above `max_response_bytes` | Permanent |
//! | an invalid endpoint URL or TLS setting | Permanent |
//!
//! The gRPC code alone is not enough: etcd reports both compaction and future revisions as
//! `OutOfRange`, and so does tonic for a response above the decoding limit, which no relist
//! can fix, so the classifier also matches the message text.

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
        let verdict = self.verdict(&error);
        let detail = format!("{operation} failed: {error}");
        self.build(verdict, detail, Some(Box::new(error)))
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

    fn verdict(&self, error: &etcd_client::Error) -> Verdict {
        use etcd_client::Error;

        match error {
            Error::GRpcStatus(status) => self.status_verdict(status.code(), status.message()),
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

    fn status_verdict(&self, code: Code, message: &str) -> Verdict {
        match code {
            Code::OutOfRange if message.contains("message length too large") => Verdict::Permanent(
                "Raise max_response_bytes in the etcd source's config above the size in \
                     this message, or lower page_size"
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

    fn permission_denied(&self) -> Verdict {
        Verdict::Permanent(format!(
            "Grant the etcd user's role read access to the keys with prefix {prefix:?}, for \
             example `etcdctl role grant-permission ROLE read --prefix=true {prefix:?}`",
            prefix = self.prefix
        ))
    }
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
