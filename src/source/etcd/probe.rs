//! A diagnostic TLS handshake that finds out whether the server rejects this client's
//! certificate.
//!
//! With TLS 1.3 the client finishes its side of the handshake before the server has checked
//! the client certificate. A server started with `--client-cert-auth` that rejects the
//! certificate then sends an alert and closes the connection, and tonic often reports only
//! "connection closed", which reads like a network failure. To tell the two apart, the source
//! opens one connection of its own with the same rustls configuration, sends the HTTP/2
//! preface and reads the server's response: a certificate alert proves the rejection.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{AlertDescription, Error as TlsError};

use super::tls::LoadedTls;

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Alerts with which a server rejects a client certificate, or the lack of one.
const CERTIFICATE_ALERTS: [AlertDescription; 8] = [
    AlertDescription::BadCertificate,
    AlertDescription::UnsupportedCertificate,
    AlertDescription::CertificateRevoked,
    AlertDescription::CertificateExpired,
    AlertDescription::CertificateUnknown,
    AlertDescription::UnknownCA,
    AlertDescription::AccessDenied,
    AlertDescription::CertificateRequired,
];

/// Connects to `endpoint` with `tls` and returns the certificate alert the server sends, or
/// `None` when the server responds, cannot be reached, or fails in another way within
/// `timeout`.
pub(super) async fn certificate_alert(
    tls: &LoadedTls,
    endpoint: &str,
    timeout: Duration,
) -> Option<AlertDescription> {
    let uri: http::Uri = if endpoint.contains("://") {
        endpoint.parse().ok()?
    } else {
        format!("https://{endpoint}").parse().ok()?
    };
    if uri.scheme_str() == Some("http") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let name = tls.domain_name.as_deref().unwrap_or(host).to_owned();
    let server_name = ServerName::try_from(name).ok()?;

    let handshake = async {
        let tcp = TcpStream::connect((host, port)).await?;
        let connector = TlsConnector::from(Arc::clone(&tls.client_config));
        let mut stream = connector.connect(server_name, tcp).await?;
        stream.write_all(HTTP2_PREFACE).await?;
        stream.flush().await?;
        let mut buffer = [0u8; 64];
        stream.read(&mut buffer).await
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Err(error)) => alert_of(&error),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// Returns the certificate alert inside an I/O error from tokio-rustls.
fn alert_of(error: &std::io::Error) -> Option<AlertDescription> {
    let inner = error.get_ref()?.downcast_ref::<TlsError>()?;
    match inner {
        TlsError::AlertReceived(alert) if CERTIFICATE_ALERTS.contains(alert) => Some(*alert),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_alert_found() {
        let error = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::AlertReceived(AlertDescription::BadCertificate),
        );
        assert_eq!(alert_of(&error), Some(AlertDescription::BadCertificate));
    }

    #[test]
    fn other_errors_ignored() {
        let other_alert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TlsError::AlertReceived(AlertDescription::HandshakeFailure),
        );
        assert_eq!(alert_of(&other_alert), None);
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(alert_of(&reset), None);
    }
}
