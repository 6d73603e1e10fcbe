//! A real etcd server for integration tests.
//!
//! [`EtcdServer::start`] runs `/usr/bin/etcd` (etcd 3.4 from Debian's `etcd-server` package) on
//! free loopback ports with a temporary data directory, and returns once the server serves a
//! linearizable read. The server can then be killed, restarted on the same ports and data,
//! frozen with `SIGSTOP` and thawed with `SIGCONT`, and compacted. Dropping the server kills
//! the process and removes the directory.
//!
//! The server is a list of members so that a multi-member cluster can be added later. Today
//! every server has exactly one member.
//!
//! By default the client port speaks plain HTTP without authentication.
//! [`EtcdServerBuilder::tls`] serves it over TLS, optionally requiring client certificates, and
//! [`EtcdServer::enable_auth`] turns on etcd's users and roles. The harness's own clients
//! ([`EtcdServer::client`], the health probe, compaction) then use the TLS settings and the
//! root user's credentials.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, CompactionOptions, ConnectOptions, Identity, Permission, TlsOptions,
};
use tempfile::TempDir;

use super::pki::TestPki;

/// The environment variable that overrides the etcd binary's path.
pub const ETCD_BIN_VAR: &str = "INFORMER_ETCD_BIN";

/// The default etcd binary, installed by Debian's `etcd-server` package.
const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";

/// How long a starting server may take to serve its first read.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one health probe (connect and read) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a starting server is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// How many times a start is retried when another process took a chosen port first.
const PORT_ATTEMPTS: usize = 5;

/// The name of etcd's superuser, which must exist before authentication is enabled.
pub const ROOT_USER: &str = "root";

/// Settings of a server that [`EtcdServerBuilder::start`] starts.
#[derive(Clone, Debug, Default)]
pub struct EtcdServerBuilder {
    extra_args: Vec<String>,
    tls: Option<ServerTls>,
}

/// TLS settings of the client port, and what the harness's own clients present.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The server certificate (`--cert-file`).
    pub cert_path: PathBuf,
    /// The server certificate's key (`--key-file`).
    pub key_path: PathBuf,
    /// The CA that client certificates must chain to (`--trusted-ca-file`).
    pub trusted_ca_path: PathBuf,
    /// Whether every client must present a certificate signed by the trusted CA
    /// (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// The CA, PEM, with which the harness's clients verify the server.
    pub harness_ca_pem: String,
    /// The certificate and key, PEM, that the harness's clients present.
    pub harness_identity: (String, String),
}

impl ServerTls {
    /// Serves with `pki`'s server certificate, trusts `pki`'s CA for client certificates, and
    /// lets the harness connect with `pki`'s client certificate.
    pub fn from_pki(pki: &TestPki, client_cert_auth: bool) -> ServerTls {
        ServerTls {
            cert_path: pki.server.cert_path.clone(),
            key_path: pki.server.key_path.clone(),
            trusted_ca_path: pki.ca_path.clone(),
            client_cert_auth,
            harness_ca_pem: pki.ca_pem.clone(),
            harness_identity: (pki.client.cert_pem.clone(), pki.client.key_pem.clone()),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--cert-file={}", self.cert_path.display()),
            format!("--key-file={}", self.key_path.display()),
            format!("--trusted-ca-file={}", self.trusted_ca_path.display()),
        ];
        if self.client_cert_auth {
            args.push("--client-cert-auth".to_owned());
        }
        args
    }

    fn client_options(&self) -> TlsOptions {
        let (cert, key) = &self.harness_identity;
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.harness_ca_pem))
            .identity(Identity::from_pem(cert, key))
    }
}

/// How the harness's own clients reach the server.
#[derive(Clone, Debug, Default)]
struct HarnessAccess {
    tls: Option<TlsOptions>,
    /// The root user's name and password once authentication is enabled.
    root: Option<(String, String)>,
}

impl HarnessAccess {
    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new();
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.clone());
        }
        if let Some((user, password)) = &self.root {
            options = options.with_user(user, password);
        }
        options
    }
}

impl EtcdServerBuilder {
    /// Makes the server send a progress notification to every idle watch that requested them
    /// this often (`--experimental-watch-progress-notify-interval`, 10 minutes by default).
    pub fn watch_progress_notify_interval(self, interval: Duration) -> Self {
        self.arg(format!(
            "--experimental-watch-progress-notify-interval={}ms",
            interval.as_millis()
        ))
    }

    /// Serves the client port over TLS with `tls`, on `https://127.0.0.1` URLs.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Passes one more command-line argument to every member.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts a one-member server on free loopback ports and waits until it serves reads.
    ///
    /// # Panics
    /// If the etcd binary is missing, or the server does not become healthy within 30 s.
    pub async fn start(self) -> EtcdServer {
        let binary = etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("informer-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");

        let mut extra_args = self.extra_args.clone();
        let access = HarnessAccess {
            tls: self.tls.as_ref().map(ServerTls::client_options),
            root: None,
        };
        if let Some(tls) = &self.tls {
            extra_args.extend(tls.args());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };

        for attempt in 1..=PORT_ATTEMPTS {
            let mut member = Member::new(dir.path(), "member0", scheme, extra_args.clone());
            let initial_cluster = member.initial_cluster_entry();
            member.spawn(&binary, &initial_cluster, "new");

            match member.wait_healthy(&access).await {
                Ok(()) => {
                    return EtcdServer {
                        members: vec![member],
                        access,
                        dir,
                    };
                }
                Err(StartFailure::Exited(log)) if log.contains("address already in use") => {
                    eprintln!("etcd lost a port race on attempt {attempt}, retrying");
                    drop(member);
                    remove_dir_if_exists(&dir.path().join("member0"));
                    // The next attempt's log must not repeat this attempt's bind error.
                    let _ = fs::remove_file(dir.path().join("member0.log"));
                }
                Err(failure) => member.panic_with(failure),
            }
        }
        panic!("etcd could not bind free loopback ports after {PORT_ATTEMPTS} attempts");
    }
}

/// A running etcd server.
pub struct EtcdServer {
    members: Vec<Member>,
    access: HarnessAccess,
    // Dropped after `members`, whose drop kills the processes that use the directory.
    dir: TempDir,
}

/// One etcd process with its ports, data directory and log file.
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    process: Option<Child>,
}

/// Why a member did not become healthy.
enum StartFailure {
    /// The process exited. The log contains the reason.
    Exited(String),
    /// The process ran but did not serve a read within [`HEALTH_TIMEOUT`].
    TimedOut,
}

impl EtcdServer {
    /// Starts a one-member server with default settings. See [`EtcdServerBuilder::start`].
    pub async fn start() -> EtcdServer {
        EtcdServer::builder().start().await
    }

    /// Returns a builder for a server with non-default settings.
    pub fn builder() -> EtcdServerBuilder {
        EtcdServerBuilder::default()
    }

    /// Returns the client URL of the first member, for example `http://127.0.0.1:40123`, or
    /// `https://127.0.0.1:40123` with TLS.
    pub fn endpoint(&self) -> String {
        self.members[0].client_url.clone()
    }

    /// Returns the client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Returns the process id of the first member, or `None` after [`EtcdServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.members[0].process.as_ref().map(Child::id)
    }

    /// Returns the temporary directory that contains the data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connects a client to every member, with the server's TLS settings and, once
    /// authentication is enabled, as the root user.
    pub async fn client(&self) -> Client {
        Client::connect(self.endpoints(), Some(self.access.options()))
            .await
            .expect("connect to the test etcd server")
    }

    /// Creates the root user with `root_password` and enables authentication. From then on
    /// the harness's clients authenticate as root.
    pub async fn enable_auth(&mut self, root_password: &str) {
        let mut client = self.client().await;
        client
            .user_add(ROOT_USER, root_password, None)
            .await
            .expect("add the root user");
        client.role_add(ROOT_USER).await.expect("add the root role");
        client
            .user_grant_role(ROOT_USER, ROOT_USER)
            .await
            .expect("grant the root role");
        client.auth_enable().await.expect("enable authentication");
        self.access.root = Some((ROOT_USER.to_owned(), root_password.to_owned()));
    }

    /// Creates `user` with `password` and a role of the same name that may read every key
    /// starting with `prefix`, and nothing else. Call it after [`EtcdServer::enable_auth`].
    pub async fn add_reader(&self, user: &str, password: &str, prefix: &str) {
        let mut client = self.client().await;
        client
            .user_add(user, password, None)
            .await
            .unwrap_or_else(|e| panic!("add user {user}: {e}"));
        client
            .role_add(user)
            .await
            .unwrap_or_else(|e| panic!("add role {user}: {e}"));
        client
            .role_grant_permission(user, Permission::read(prefix).with_prefix())
            .await
            .unwrap_or_else(|e| panic!("grant role {user} read on {prefix:?}: {e}"));
        client
            .user_grant_role(user, user)
            .await
            .unwrap_or_else(|e| panic!("grant role {user} to user {user}: {e}"));
    }

    /// Kills the first member with `SIGKILL` and waits for it to exit. The data directory and
    /// the ports stay reserved for [`EtcdServer::restart`].
    pub fn kill(&mut self) {
        self.members[0].kill();
    }

    /// Starts the first member again with the same data directory and ports, killing it first
    /// if it still runs, and waits until it serves reads.
    ///
    /// # Panics
    /// If the server does not become healthy within 30 s, for example because another process
    /// took its port while it was down.
    pub async fn restart(&mut self) {
        let binary = etcd_binary();
        let initial_cluster = self.initial_cluster();
        let member = &mut self.members[0];
        member.kill();
        member.spawn(&binary, &initial_cluster, "existing");
        if let Err(failure) = member.wait_healthy(&self.access).await {
            member.panic_with(failure);
        }
    }

    /// Freezes the first member with `SIGSTOP`. Its sockets stay open but nothing responds,
    /// as on a hung host.
    pub fn stop_process(&self) {
        self.members[0].signal("-STOP");
    }

    /// Thaws the first member with `SIGCONT` after [`EtcdServer::stop_process`].
    pub fn continue_process(&self) {
        self.members[0].signal("-CONT");
    }

    /// Compacts the history up to `revision` and waits until the compaction is applied, so
    /// reads and watches below `revision` fail as soon as this returns.
    pub async fn compact(&self, revision: i64) {
        let mut client = self.client().await;
        client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap_or_else(|e| panic!("compact etcd at revision {revision}: {e}"));
    }

    /// Returns the current store revision.
    pub async fn revision(&self) -> i64 {
        let mut client = self.client().await;
        let response = client
            .get("health", None)
            .await
            .expect("read the current revision");
        response.header().expect("a response header").revision()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(Member::initial_cluster_entry)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Member {
    /// Reserves two free loopback ports and lays out the member's paths under `dir`. The
    /// client URL uses `scheme`, and the peer URL plain HTTP.
    fn new(dir: &Path, name: &str, scheme: &str, extra_args: Vec<String>) -> Member {
        // Both listeners stay bound until both ports are known, so the two ports differ. etcd
        // binds them a moment later, and `EtcdServer::start` retries if another process was
        // faster.
        let client = TcpListener::bind("127.0.0.1:0").expect("bind a free client port");
        let peer = TcpListener::bind("127.0.0.1:0").expect("bind a free peer port");
        let client_port = client.local_addr().expect("client port").port();
        let peer_port = peer.local_addr().expect("peer port").port();
        drop((client, peer));

        Member {
            name: name.to_owned(),
            client_url: format!("{scheme}://127.0.0.1:{client_port}"),
            peer_url: format!("http://127.0.0.1:{peer_port}"),
            data_dir: dir.join(name),
            log_path: dir.join(format!("{name}.log")),
            extra_args,
            process: None,
        }
    }

    fn initial_cluster_entry(&self) -> String {
        format!("{}={}", self.name, self.peer_url)
    }

    /// Starts the process, appending its output to the member's log file.
    fn spawn(&mut self, binary: &Path, initial_cluster: &str, cluster_state: &str) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the etcd log file");
        let log_err = log.try_clone().expect("clone the etcd log file handle");

        let child = Command::new(binary)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&self.client_url)
            .arg("--advertise-client-urls")
            .arg(&self.client_url)
            .arg("--listen-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&self.peer_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(cluster_state)
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            // Writes still reach the page cache, so a killed process loses nothing. Only a
            // machine crash could, which does not matter for a test server.
            .arg("--unsafe-no-fsync")
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        self.process = Some(child);
    }

    /// Polls the member with a linearizable read, which succeeds only once it has a leader.
    async fn wait_healthy(&mut self, access: &HarnessAccess) -> Result<(), StartFailure> {
        let deadline = tokio::time::Instant::now() + HEALTH_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(StartFailure::Exited(format!(
                    "etcd exited with {status}:\n{}",
                    self.log_tail()
                )));
            }
            if probe(&self.client_url, access).await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StartFailure::TimedOut);
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let process = self.process.as_mut()?;
        process.try_wait().expect("poll the etcd process")
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            // SIGKILL also ends a process stopped with SIGSTOP.
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .process
            .as_ref()
            .map(Child::id)
            .expect("the etcd process is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("run kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid} failed with {status}");
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }

    fn panic_with(&mut self, failure: StartFailure) -> ! {
        self.kill();
        match failure {
            StartFailure::Exited(log) => panic!("etcd {} failed to start: {log}", self.client_url),
            StartFailure::TimedOut => panic!(
                "etcd {} did not serve reads within {HEALTH_TIMEOUT:?}:\n{}",
                self.client_url,
                self.log_tail()
            ),
        }
    }
}

/// Returns whether a linearizable read at `url` succeeds within [`PROBE_TIMEOUT`].
async fn probe(url: &str, access: &HarnessAccess) -> bool {
    let options = access
        .options()
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(PROBE_TIMEOUT);
    let read = async {
        let mut client = Client::connect([url], Some(options)).await?;
        client.get("health", None).await
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, read).await, Ok(Ok(_)))
}

/// Returns the etcd binary: `$INFORMER_ETCD_BIN`, or `/usr/bin/etcd`.
///
/// # Panics
/// If the binary does not exist.
fn etcd_binary() -> PathBuf {
    let path = std::env::var_os(ETCD_BIN_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN));
    assert!(
        path.is_file(),
        "etcd not found at {}: the etcd tests need etcd 3.4 or later. Run the test command from \
         the README, which installs Debian's etcd-server package, or set {ETCD_BIN_VAR} to an \
         etcd binary",
        path.display()
    );
    path
}

fn remove_dir_if_exists(path: &Path) {
    if path.exists() {
        fs::remove_dir_all(path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
    }
}
