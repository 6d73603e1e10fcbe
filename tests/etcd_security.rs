//! TLS, client certificates and etcd users and roles against a real etcd server.
//!
//! The certificates are generated per test (see `support::pki`). Working setups fill the
//! cache over TLS and authentication. Each misconfiguration ends in a permanent error through
//! the real reflector, which is then not ready, out of sync, and shows the error in
//! `Health::last_error`. The misconfigurations are a wrong password, a client certificate from
//! another CA, a wrong CA on the client side, a missing client certificate, and a prefix
//! outside the user's role. The tests also check that no password and no private key text
//! appears in any log line of the process.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Permission;
use informer::cache::Store;
use informer::decode::Text;
use informer::reflector::{BackoffConfig, Health, HealthWatch, Reflector, ReflectorConfig};
use informer::source::etcd::{Credentials, EtcdConfig, EtcdSource, EtcdTls};
use informer::source::{ErrorClass, Source, SourceError};
use support::etcd::{EtcdServer, ServerTls};
use support::logs::LogCapture;
use support::pki::TestPki;
use tokio::time::Instant;

const ROOT_PASSWORD: &str = "root-pw-Qx7vL2";
const READER: &str = "reader";
const READER_PASSWORD: &str = "reader-pw-Hk93Zt";

/// How long a test waits for readiness or for an error.
const WAIT: Duration = Duration::from_secs(15);

/// A running reflector and the handles a test reads.
struct Pipeline {
    store: Store<String>,
    health: HealthWatch,
    name: Arc<str>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Retries a permanent error after 1 s instead of 30 s, so a fix made outside the process is
/// picked up within the test's wait.
fn reflector_config() -> ReflectorConfig {
    ReflectorConfig {
        backoff: BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..BackoffConfig::default()
        },
        ..ReflectorConfig::default()
    }
}

async fn start(config: EtcdConfig) -> Pipeline {
    let source = EtcdSource::connect(config)
        .await
        .expect("a valid config creates the source");
    let name = source.name().clone();
    let reflector = Reflector::new(source, Text::default()).config(reflector_config());
    let store = reflector.store();
    let health = reflector.health();
    let task = tokio::spawn(reflector.run());
    Pipeline {
        store,
        health,
        name,
        task,
    }
}

async fn wait_ready(pipeline: &Pipeline) {
    let ready = tokio::time::timeout(WAIT, pipeline.health.wait_ready()).await;
    assert!(
        ready.is_ok(),
        "{} not ready within {WAIT:?}; health: {:?}",
        pipeline.name,
        pipeline.health.get()
    );
}

/// Waits for a permanent error and checks the readiness it leaves.
async fn wait_permanent(pipeline: &Pipeline) -> Health {
    let failed = pipeline.health.wait_for(|health| {
        health
            .last_error
            .as_ref()
            .is_some_and(|error| error.class == ErrorClass::Permanent)
    });
    let Ok(Some(health)) = tokio::time::timeout(WAIT, failed).await else {
        panic!(
            "{}: no permanent error within {WAIT:?}; health: {:?}",
            pipeline.name,
            pipeline.health.get()
        );
    };
    assert!(!health.ready(), "{health:?}");
    assert!(!health.in_sync, "{health:?}");
    assert!(!health.synced, "{health:?}");
    health
}

fn error_message(health: &Health) -> String {
    health
        .last_error
        .as_ref()
        .map(|error| error.message.to_string())
        .unwrap_or_default()
}

async fn wait_cached(store: &Store<String>, key: &str, value: &str) {
    let deadline = Instant::now() + WAIT;
    while store
        .get(key)
        .is_none_or(|cached| cached.value.as_str() != value)
    {
        assert!(
            Instant::now() < deadline,
            "{key}={value} not cached within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns the base64 lines of a PEM key: any of them in a log would leak the key.
fn key_lines(key_pem: &str) -> Vec<String> {
    key_pem
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .map(str::to_owned)
        .collect()
}

/// Checks that no secret appears in any captured log line, and that the capture works: it
/// contains the reflector's start line for `source`.
fn assert_no_secrets(logs: &LogCapture, source: &str, secrets: &[&str]) {
    let text = logs.text();
    assert!(
        text.contains("reflector started") && text.contains(source),
        "the log capture misses the reflector of {source}"
    );
    for secret in secrets {
        let leaks = logs.lines_with(secret);
        assert!(leaks.is_empty(), "a secret appears in the logs: {leaks:?}");
    }
}

fn tls_files(pki: &TestPki) -> EtcdTls {
    EtcdTls::ca_file(&pki.ca_path).client_files(&pki.client.cert_path, &pki.client.key_path)
}

fn tls_config(server: &EtcdServer, dir: &str, tls: EtcdTls) -> EtcdConfig {
    let mut config = EtcdConfig::new([server.endpoint()], dir);
    config.request_timeout = Duration::from_secs(5);
    config.tls = Some(tls);
    config
}

fn reader_config(server: &EtcdServer, dir: &str, password: &str) -> EtcdConfig {
    let mut config = EtcdConfig::new([server.endpoint()], dir);
    config.request_timeout = Duration::from_secs(5);
    config.credentials = Some(Credentials::new(READER, password));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate() {
    let logs = LogCapture::global();
    let pki = TestPki::generate("main", "informer-client");
    let server = EtcdServer::builder()
        .tls(ServerTls::from_pki(&pki, true))
        .start()
        .await;
    assert!(server.endpoint().starts_with("https://127.0.0.1:"));
    let mut client = server.client().await;
    client.put("/app/a", "1", None).await.unwrap();

    let from_files = start(tls_config(&server, "/app/", tls_files(&pki))).await;
    let in_memory = EtcdTls::ca_pem(pki.ca_pem.clone())
        .client_pem(pki.client.cert_pem.clone(), pki.client.key_pem.clone());
    let in_memory_config = tls_config(&server, "/app/", in_memory);
    let debug = format!("{in_memory_config:?}");
    let from_memory = start(in_memory_config).await;

    for pipeline in [&from_files, &from_memory] {
        wait_ready(pipeline).await;
        assert_eq!(pipeline.store.get("/app/a").unwrap().value.as_str(), "1");
    }
    client.put("/app/b", "2", None).await.unwrap();
    for pipeline in [&from_files, &from_memory] {
        wait_cached(&pipeline.store, "/app/b", "2").await;
    }

    let key = key_lines(&pki.client.key_pem);
    assert!(!key.is_empty());
    for line in &key {
        assert!(
            !debug.contains(line.as_str()),
            "the key is in Debug: {debug}"
        );
    }
    let secrets: Vec<&str> = key.iter().map(String::as_str).collect();
    assert_no_secrets(&logs, &from_memory.name, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_other_ca() {
    let logs = LogCapture::global();
    let pki = TestPki::generate("main", "informer-client");
    let other = TestPki::generate("other", "intruder");
    let server = EtcdServer::builder()
        .tls(ServerTls::from_pki(&pki, true))
        .start()
        .await;

    let tls = EtcdTls::ca_file(&pki.ca_path)
        .client_files(&other.client.cert_path, &other.client.key_path);
    let pipeline = start(tls_config(&server, "/app/", tls)).await;
    let health = wait_permanent(&pipeline).await;
    let message = error_message(&health);
    assert!(
        message.contains("rejected the client certificate"),
        "{message}"
    );
    assert!(message.contains("--trusted-ca-file"), "{message}");

    let key = key_lines(&other.client.key_pem);
    let secrets: Vec<&str> = key.iter().map(String::as_str).collect();
    assert_no_secrets(&logs, &pipeline.name, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_client_certificate() {
    let pki = TestPki::generate("main", "informer-client");
    let server = EtcdServer::builder()
        .tls(ServerTls::from_pki(&pki, true))
        .start()
        .await;

    let pipeline = start(tls_config(&server, "/app/", EtcdTls::ca_file(&pki.ca_path))).await;
    let health = wait_permanent(&pipeline).await;
    let message = error_message(&health);
    assert!(
        message.contains("requires a client certificate"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_on_client() {
    let logs = LogCapture::global();
    let pki = TestPki::generate("main", "informer-client");
    let other = TestPki::generate("other", "intruder");
    let server = EtcdServer::builder()
        .tls(ServerTls::from_pki(&pki, false))
        .start()
        .await;

    let tls =
        EtcdTls::ca_file(&other.ca_path).client_files(&pki.client.cert_path, &pki.client.key_path);
    let pipeline = start(tls_config(&server, "/app/", tls)).await;
    let health = wait_permanent(&pipeline).await;
    let message = error_message(&health);
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("EtcdTls::ca_certificate"), "{message}");

    let key = key_lines(&pki.client.key_pem);
    let secrets: Vec<&str> = key.iter().map(String::as_str).collect();
    assert_no_secrets(&logs, &pipeline.name, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password() {
    let logs = LogCapture::global();
    let mut server = EtcdServer::start().await;
    server.enable_auth(ROOT_PASSWORD).await;
    server.add_reader(READER, READER_PASSWORD, "/app/").await;

    let wrong = "wrong-pw-Zr81Ub";
    let pipeline = start(reader_config(&server, "/app/", wrong)).await;
    let health = wait_permanent(&pipeline).await;
    let message = error_message(&health);
    assert!(message.contains("user name and password"), "{message}");
    assert!(message.contains("authentication failed"), "{message}");
    assert!(!message.contains(wrong), "{message}");

    assert_no_secrets(
        &logs,
        &pipeline.name,
        &[wrong, READER_PASSWORD, ROOT_PASSWORD],
    );
}

/// TLS with client certificates and authentication together, as a production cluster runs:
/// a user whose role may read `/app/` caches `/app/` and is denied anything wider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_limited_to_prefix() {
    let logs = LogCapture::global();
    let pki = TestPki::generate("main", "informer-client");
    let mut server = EtcdServer::builder()
        .tls(ServerTls::from_pki(&pki, true))
        .start()
        .await;
    let mut client = server.client().await;
    for key in ["/app/a", "/apple", "/other/x"] {
        client.put(key, "1", None).await.unwrap();
    }
    server.enable_auth(ROOT_PASSWORD).await;
    server.add_reader(READER, READER_PASSWORD, "/app/").await;

    let secure = |mut config: EtcdConfig| {
        config.request_timeout = Duration::from_secs(5);
        config.credentials = Some(Credentials::new(READER, READER_PASSWORD));
        config.tls = Some(tls_files(&pki));
        config
    };

    // `new` reads "/app" as the directory "/app/", inside the role.
    let allowed = start(secure(EtcdConfig::new([server.endpoint()], "/app"))).await;
    wait_ready(&allowed).await;
    assert_eq!(allowed.store.len(), 1);
    assert!(allowed.store.get("/app/a").is_some());

    // The raw prefix "/app" also covers "/apple", outside the role.
    let raw = start(secure(EtcdConfig::raw_prefix([server.endpoint()], "/app"))).await;
    let health = wait_permanent(&raw).await;
    let message = error_message(&health);
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains("grant-permission"), "{message}");

    let other = start(secure(EtcdConfig::new([server.endpoint()], "/other/"))).await;
    let health = wait_permanent(&other).await;
    assert!(error_message(&health).contains("permission denied"));

    let key = key_lines(&pki.client.key_pem);
    let mut secrets: Vec<&str> = key.iter().map(String::as_str).collect();
    secrets.extend([READER_PASSWORD, ROOT_PASSWORD]);
    assert_no_secrets(&logs, &other.name, &secrets);
}

/// A permanent error is retried at the longest backoff, so a fix outside the process heals
/// the pipeline without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_prefix_recovers_after_grant() {
    let mut server = EtcdServer::start().await;
    let mut client = server.client().await;
    client.put("/other/x", "1", None).await.unwrap();
    server.enable_auth(ROOT_PASSWORD).await;
    server.add_reader(READER, READER_PASSWORD, "/app/").await;

    let pipeline = start(reader_config(&server, "/other/", READER_PASSWORD)).await;
    wait_permanent(&pipeline).await;

    let mut root = server.client().await;
    root.role_grant_permission(READER, Permission::read("/other/").with_prefix())
        .await
        .unwrap();
    wait_ready(&pipeline).await;
    assert_eq!(pipeline.store.get("/other/x").unwrap().value.as_str(), "1");
    assert!(pipeline.health.get().last_error.is_none());
}

fn connect_error(result: Result<EtcdSource, SourceError>) -> String {
    let error = result.expect_err("the config must be rejected");
    assert_eq!(error.class(), ErrorClass::Permanent, "{error}");
    error.to_string()
}

/// Invalid TLS files are rejected when the source is created, with the file named and
/// without the key's text.
#[tokio::test]
async fn invalid_tls_files() {
    let pki = TestPki::generate("main", "informer-client");
    let other = TestPki::generate("other", "intruder");
    let config = |tls: EtcdTls| {
        let mut config = EtcdConfig::new(["https://127.0.0.1:1"], "/app/");
        config.tls = Some(tls);
        config
    };

    let missing = pki.dir().join("missing-ca.pem");
    let text = connect_error(EtcdSource::connect(config(EtcdTls::ca_file(&missing))).await);
    assert!(text.contains("missing-ca.pem"), "{text}");
    assert!(text.contains("cannot be read"), "{text}");

    // A CA file that contains a key instead of a certificate.
    let text =
        connect_error(EtcdSource::connect(config(EtcdTls::ca_file(&pki.client.key_path))).await);
    assert!(text.contains("contains no PEM certificate"), "{text}");
    assert!(text.contains("client-key.pem"), "{text}");

    // A key file that contains a certificate.
    let swapped =
        EtcdTls::ca_file(&pki.ca_path).client_files(&pki.client.cert_path, &pki.client.cert_path);
    let text = connect_error(EtcdSource::connect(config(swapped)).await);
    assert!(text.contains("contains no PEM private key"), "{text}");

    // A key file that is not PEM at all.
    let garbage = pki.write_file("garbage-key.pem", "-----BEGIN PRIVATE KEY-----\n!!!\n");
    let broken = EtcdTls::ca_file(&pki.ca_path).client_files(&pki.client.cert_path, &garbage);
    let text = connect_error(EtcdSource::connect(config(broken)).await);
    assert!(text.contains("garbage-key.pem"), "{text}");
    assert!(text.contains("is not valid PEM"), "{text}");
    assert!(!text.contains("!!!"), "{text}");

    // Another certificate's key.
    let mismatched = EtcdTls::ca_pem(pki.ca_pem.clone())
        .client_pem(pki.client.cert_pem.clone(), other.client.key_pem.clone());
    let text = connect_error(EtcdSource::connect(config(mismatched)).await);
    assert!(
        text.contains("does not match the client certificate"),
        "{text}"
    );
    for line in key_lines(&other.client.key_pem) {
        assert!(!text.contains(&line), "{text}");
    }

    // A certificate without its key.
    let mut half = EtcdTls::ca_file(&pki.ca_path);
    half.client_certificate = Some(pki.client.cert_path.clone().into());
    let text = connect_error(EtcdSource::connect(config(half)).await);
    assert!(text.contains("without a key"), "{text}");

    // No CA at all.
    let mut no_ca = EtcdTls::ca_file(&pki.ca_path);
    no_ca.ca_certificate = None;
    let text = connect_error(EtcdSource::connect(config(no_ca)).await);
    assert!(text.contains("no CA certificate"), "{text}");
}

#[test]
fn config_debug_hides_secrets() {
    let pki = TestPki::generate("main", "informer-client");
    let mut config = EtcdConfig::new(["https://127.0.0.1:1"], "/app/");
    config.credentials = Some(Credentials::new(READER, READER_PASSWORD));
    config.tls = Some(
        EtcdTls::ca_pem(pki.ca_pem.clone())
            .client_pem(pki.client.cert_pem.clone(), pki.client.key_pem.clone()),
    );

    let debug = format!("{config:?}");
    assert!(debug.contains(READER), "{debug}");
    assert!(!debug.contains(READER_PASSWORD), "{debug}");
    for line in key_lines(&pki.client.key_pem) {
        assert!(!debug.contains(&line), "{debug}");
    }
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains(READER_PASSWORD));
}

/// Returns the path of a built example, next to this test's binary.
fn example_binary(name: &str) -> Option<PathBuf> {
    let test_binary = std::env::current_exe().ok()?;
    let profile_dir = test_binary.parent()?.parent()?;
    let path = profile_dir.join("examples").join(name);
    path.exists().then_some(path)
}

/// Where the example reads the password of `--user`.
enum PasswordFrom {
    Env,
    File,
}

/// Runs the example against `server` for 4 s and returns its log.
async fn run_example(
    binary: &PathBuf,
    server: &EtcdServer,
    pki: &TestPki,
    from: PasswordFrom,
    password: &str,
) -> String {
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["--endpoints", &server.endpoint(), "--prefix", "/config"])
        .arg("--cacert")
        .arg(&pki.ca_path)
        .arg("--cert")
        .arg(&pki.client.cert_path)
        .arg("--key")
        .arg(&pki.client.key_path)
        .args(["--user", READER, "--run-for", "4", "--status-every", "1"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("INFORMER_ETCD_PASSWORD");
    match from {
        PasswordFrom::Env => {
            command.env("INFORMER_ETCD_PASSWORD", password);
        }
        PasswordFrom::File => {
            let file = pki.write_file("password", &format!("{password}\n"));
            command.arg("--password-file").arg(file);
        }
    }
    let output = command.output().await.expect("run the example");
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "exit status {}; log:\n{log}\n{errors}",
        output.status
    );
    log + &errors
}

/// The example connects with TLS, a client certificate and a user whose password comes from
/// the environment or a file, and never prints the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_with_tls_and_auth() {
    let Some(binary) = example_binary("etcd_config_watcher") else {
        eprintln!(
            "skipped: the example is not built; `cargo test --all-targets` builds it before the \
             tests"
        );
        return;
    };
    let pki = TestPki::generate("main", "informer-client");
    let mut server = EtcdServer::builder()
        .tls(ServerTls::from_pki(&pki, true))
        .start()
        .await;
    let mut client = server.client().await;
    client
        .put("/config/api", r#"{"replicas":3}"#, None)
        .await
        .unwrap();
    server.enable_auth(ROOT_PASSWORD).await;
    server.add_reader(READER, READER_PASSWORD, "/config/").await;

    let log = run_example(&binary, &server, &pki, PasswordFrom::Env, READER_PASSWORD).await;
    assert!(
        log.contains("/config/api"),
        "the key is reconciled; log:\n{log}"
    );
    assert!(
        log.contains("in_sync=true"),
        "the pipeline is ready; log:\n{log}"
    );
    assert!(!log.contains(READER_PASSWORD), "log:\n{log}");

    let wrong = "wrong-pw-Mn42Qs";
    let log = run_example(&binary, &server, &pki, PasswordFrom::File, wrong).await;
    assert!(
        log.contains("source failed permanently"),
        "a wrong password is permanent; log:\n{log}"
    );
    assert!(log.contains("authentication failed"), "log:\n{log}");
    assert!(!log.contains("in_sync=true"), "log:\n{log}");
    assert!(!log.contains(wrong), "log:\n{log}");
    for line in key_lines(&pki.client.key_pem) {
        assert!(!log.contains(&line), "log:\n{log}");
    }
}
