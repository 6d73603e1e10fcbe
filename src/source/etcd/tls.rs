//! TLS settings of the connection to etcd: the CA that verifies the server, and the client
//! certificate that servers started with `--client-cert-auth` require.
//!
//! Certificates and keys are PEM, from files or from memory. [`EtcdSource::connect`] reads and
//! parses them once, so a missing file, a file without a certificate or a key that does not
//! match its certificate fails at start with a [`SourceError::Permanent`] naming the file. A key
//! held in memory never appears in `Debug` output, logs or errors.
//!
//! [`EtcdSource::connect`]: super::EtcdSource::connect

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::{Certificate, Identity, TlsOptions};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::source::SourceError;

/// PEM text from a file or from memory.
#[derive(Clone)]
pub enum PemSource {
    /// A file that contains PEM, read once when the source is created.
    File(PathBuf),
    /// PEM held in memory.
    Inline(Bytes),
}

impl PemSource {
    fn describe(&self) -> String {
        match self {
            PemSource::File(path) => format!("file {:?}", path.display().to_string()),
            PemSource::Inline(pem) => format!("in-memory PEM ({} bytes)", pem.len()),
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => f.debug_tuple("File").field(path).finish(),
            PemSource::Inline(pem) => write!(f, "Inline(<{} bytes>)", pem.len()),
        }
    }
}

impl From<PathBuf> for PemSource {
    fn from(path: PathBuf) -> Self {
        PemSource::File(path)
    }
}

impl From<&Path> for PemSource {
    fn from(path: &Path) -> Self {
        PemSource::File(path.to_owned())
    }
}

/// TLS settings of an [`EtcdConfig`](super::EtcdConfig), for `https://` endpoints.
///
/// # Example
/// ```
/// use informer::source::etcd::{EtcdConfig, EtcdTls};
///
/// let mut config = EtcdConfig::new(["https://10.0.0.5:2379"], "/app/");
/// config.tls = Some(
///     EtcdTls::ca_file("/etc/etcd/ca.pem")
///         .client_files("/etc/etcd/client.pem", "/etc/etcd/client-key.pem"),
/// );
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct EtcdTls {
    /// The CA certificates that the server's certificate must chain to (etcdctl's `--cacert`).
    /// The system's roots are not used, so this is required.
    pub ca_certificate: Option<PemSource>,
    /// The client certificate (etcdctl's `--cert`), for servers that require one.
    pub client_certificate: Option<PemSource>,
    /// The private key of the client certificate (etcdctl's `--key`). Its content never
    /// appears in `Debug` output.
    pub client_key: Option<PemSource>,
    /// The name the server's certificate must be valid for, when it differs from the
    /// endpoint's host.
    pub domain_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A file path is not secret, but in-memory key PEM is.
        let key = self.client_key.as_ref().map(|key| match key {
            PemSource::File(path) => path.display().to_string(),
            PemSource::Inline(_) => "<redacted>".to_owned(),
        });
        f.debug_struct("EtcdTls")
            .field("ca_certificate", &self.ca_certificate)
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &key)
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

impl EtcdTls {
    /// Creates settings that verify the server with the CA certificates in the PEM file
    /// `path`.
    pub fn ca_file(path: impl Into<PathBuf>) -> Self {
        EtcdTls {
            ca_certificate: Some(PemSource::File(path.into())),
            ..EtcdTls::default()
        }
    }

    /// Creates settings that verify the server with the CA certificates in `pem`.
    pub fn ca_pem(pem: impl Into<Bytes>) -> Self {
        EtcdTls {
            ca_certificate: Some(PemSource::Inline(pem.into())),
            ..EtcdTls::default()
        }
    }

    /// Presents the client certificate in the PEM file `cert`, with its private key in `key`.
    pub fn client_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_certificate = Some(PemSource::File(cert.into()));
        self.client_key = Some(PemSource::File(key.into()));
        self
    }

    /// Presents the client certificate `cert` with its private key `key`, both PEM.
    pub fn client_pem(mut self, cert: impl Into<Bytes>, key: impl Into<Bytes>) -> Self {
        self.client_certificate = Some(PemSource::Inline(cert.into()));
        self.client_key = Some(PemSource::Inline(key.into()));
        self
    }

    /// Verifies the server's certificate against `name` instead of the endpoint's host.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    /// Reads and parses every certificate and key, and builds etcd-client's TLS options and
    /// the equivalent rustls configuration.
    ///
    /// # Errors
    /// A [`SourceError::Permanent`] that names the file or setting that is missing, unreadable,
    /// not valid PEM, or a key that does not belong to its certificate. It never contains key
    /// material.
    pub(super) fn load(&self, source_name: &Arc<str>) -> Result<LoadedTls, SourceError> {
        let invalid = |detail: String, action: String| SourceError::Permanent {
            source_name: source_name.clone(),
            detail,
            action,
            cause: None,
        };

        let Some(ca) = &self.ca_certificate else {
            return Err(invalid(
                "the TLS settings have no CA certificate".to_owned(),
                "Set EtcdTls::ca_certificate to the CA that signed the etcd server's \
                 certificate; the system's trust roots are not used"
                    .to_owned(),
            ));
        };
        let (ca_pem, ca_certificates) =
            read_certificates(ca, Role::CaCertificate).map_err(|e| e.into_error(&invalid))?;
        let mut roots = RootCertStore::empty();
        for certificate in ca_certificates {
            if let Err(error) = roots.add(certificate) {
                return Err(invalid(
                    format!(
                        "the CA certificate {} contains a certificate that is not a valid \
                         X.509 certificate: {error}",
                        ca.describe()
                    ),
                    "Set EtcdTls::ca_certificate to the PEM of the CA that signed the etcd \
                     server's certificate"
                        .to_owned(),
                ));
            }
        }
        let mut options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca_pem));

        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| {
                invalid(
                    format!("the TLS provider has no usable protocol version: {error}"),
                    "Report this: the ring provider supports TLS 1.2 and 1.3".to_owned(),
                )
            })?
            .with_root_certificates(roots);
        let mut client_config = match (&self.client_certificate, &self.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let (cert_pem, chain) = read_certificates(cert, Role::ClientCertificate)
                    .map_err(|e| e.into_error(&invalid))?;
                let (key_pem, key_der) = read_key(key).map_err(|e| e.into_error(&invalid))?;
                let config =
                    builder
                        .with_client_auth_cert(chain, key_der)
                        .map_err(|error| {
                            invalid(
                        format!(
                            "the client key {} does not match the client certificate {}: {error}",
                            key.describe(),
                            cert.describe()
                        ),
                        "Set EtcdTls::client_key to the private key of the client certificate"
                            .to_owned(),
                    )
                        })?;
                options = options.identity(Identity::from_pem(cert_pem, key_pem));
                config
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "the TLS settings have a client certificate without a key, or a key \
                     without a certificate"
                        .to_owned(),
                    "Set both EtcdTls::client_certificate and EtcdTls::client_key, or neither"
                        .to_owned(),
                ));
            }
        };
        client_config.alpn_protocols = vec![b"h2".to_vec()];

        if let Some(name) = &self.domain_name {
            if let Err(error) = ServerName::try_from(name.clone()) {
                return Err(invalid(
                    format!("the TLS domain name {name:?} is not a valid server name: {error}"),
                    "Set EtcdTls::domain_name to a DNS name or IP address from the server's \
                     certificate"
                        .to_owned(),
                ));
            }
            options = options.domain_name(name.clone());
        }
        Ok(LoadedTls {
            options,
            client_config: Arc::new(client_config),
            domain_name: self.domain_name.clone(),
        })
    }
}

/// TLS settings after their files were read and parsed.
///
/// No `Debug`: the options and the rustls configuration contain the client key.
#[derive(Clone)]
pub(super) struct LoadedTls {
    /// The options etcd-client connects with.
    pub(super) options: TlsOptions,
    /// The same roots and identity as a rustls configuration, for diagnostic handshakes.
    pub(super) client_config: Arc<ClientConfig>,
    /// The name to verify instead of the endpoint's host.
    pub(super) domain_name: Option<String>,
}

/// The role of one PEM item, named in errors.
#[derive(Clone, Copy, Debug)]
enum Role {
    CaCertificate,
    ClientCertificate,
    ClientKey,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::CaCertificate => "CA certificate",
            Role::ClientCertificate => "client certificate",
            Role::ClientKey => "client key",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Role::CaCertificate => "EtcdTls::ca_certificate",
            Role::ClientCertificate => "EtcdTls::client_certificate",
            Role::ClientKey => "EtcdTls::client_key",
        }
    }
}

/// The reason one PEM item cannot be used.
struct PemProblem {
    role: Role,
    source: String,
    failure: String,
    action: String,
}

impl PemProblem {
    fn into_error(self, invalid: &impl Fn(String, String) -> SourceError) -> SourceError {
        invalid(
            format!("the {} {} {}", self.role.name(), self.source, self.failure),
            self.action,
        )
    }
}

fn read(source: &PemSource, role: Role) -> Result<Bytes, PemProblem> {
    match source {
        PemSource::Inline(pem) => Ok(pem.clone()),
        PemSource::File(path) => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|error| PemProblem {
                role,
                source: source.describe(),
                failure: format!("cannot be read: {error}"),
                action: format!(
                    "Check the path set in {} and that this process may read the file",
                    role.field()
                ),
            }),
    }
}

/// Reads a PEM item that must contain at least one certificate.
fn read_certificates(
    source: &PemSource,
    role: Role,
) -> Result<(Bytes, Vec<CertificateDer<'static>>), PemProblem> {
    let pem = read(source, role)?;
    let problem = |failure: String| PemProblem {
        role,
        source: source.describe(),
        failure,
        action: format!(
            "Set {} to PEM text with at least one \"BEGIN CERTIFICATE\" section",
            role.field()
        ),
    };
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| problem(format!("is not valid PEM: {error}")))?;
    if certificates.is_empty() {
        return Err(problem("contains no PEM certificate".to_owned()));
    }
    Ok((pem, certificates))
}

/// Reads a PEM item that must contain a private key. Errors never quote the key's text.
fn read_key(source: &PemSource) -> Result<(Bytes, PrivateKeyDer<'static>), PemProblem> {
    let role = Role::ClientKey;
    let pem = read(source, role)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok((pem, key)),
        Err(error) => {
            let failure = match error {
                rustls_pki_types::pem::Error::NoItemsFound => "contains no PEM private key",
                _ => "is not valid PEM",
            };
            Err(PemProblem {
                role,
                source: source.describe(),
                failure: failure.to_owned(),
                action: "Set EtcdTls::client_key to the PKCS#8, PKCS#1 or SEC1 private key, \
                         PEM, of the client certificate"
                    .to_owned(),
            })
        }
    }
}
