//! Certificates for TLS tests, generated with `rcgen` at test time.
//!
//! A [`TestPki`] is one certificate authority with a server certificate for `127.0.0.1` and
//! `localhost` and a client certificate, all written as PEM files to a temporary directory.
//! Two `TestPki`s have unrelated CAs, so a certificate of one fails verification by the other.
//! Keys are ECDSA P-256, which etcd 3.4 (Go 1.19) accepts for serving and for client
//! authentication.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its private key, in PEM and on disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The file that contains `cert_pem`.
    pub cert_path: PathBuf,
    /// The file that contains `key_pem`.
    pub key_path: PathBuf,
}

/// A CA with one server and one client certificate.
pub struct TestPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The file that contains `ca_pem`.
    pub ca_path: PathBuf,
    /// The server certificate, valid for `127.0.0.1` and `localhost`.
    pub server: CertFiles,
    /// A client certificate whose common name is `client_name`.
    pub client: CertFiles,
    /// The common name of the client certificate.
    pub client_name: String,
    dir: TempDir,
}

impl TestPki {
    /// Generates a CA named `name` and its two certificates. The client certificate's common
    /// name is `client_name`.
    pub fn generate(name: &str, client_name: &str) -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("informer-pki-")
            .tempdir()
            .expect("create a temporary directory for certificates");

        let ca_key = KeyPair::generate().expect("generate the CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let ca_pem = ca_cert.pem();
        let ca_path = write(dir.path(), "ca.pem", &ca_pem);
        let issuer = Issuer::new(ca_params, ca_key);

        let server = leaf(
            dir.path(),
            "server",
            &issuer,
            "etcd test server",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            dir.path(),
            "client",
            &issuer,
            client_name,
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );

        TestPki {
            ca_pem,
            ca_path,
            server,
            client,
            client_name: client_name.to_owned(),
            dir,
        }
    }

    /// Returns the directory that contains every file of this PKI.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to a new file `name` in this PKI's directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        write(self.dir.path(), name, contents)
    }
}

/// Generates a certificate signed by `issuer` and writes it with its key.
fn leaf(
    dir: &Path,
    file_stem: &str,
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> CertFiles {
    let key = KeyPair::generate().expect("generate a certificate key");
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign the certificate");

    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    CertFiles {
        cert_path: write(dir, &format!("{file_stem}.pem"), &cert_pem),
        key_path: write(dir, &format!("{file_stem}-key.pem"), &key_pem),
        cert_pem,
        key_pem,
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
