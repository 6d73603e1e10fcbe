//! A real etcd server for integration tests.
//!
//! [`EtcdServer::start`] runs `/usr/bin/etcd` (etcd 3.4 from Debian's `etcd-server` package) on
//! free loopback ports with a temporary data directory, and returns once the server serves a
//! linearizable read. The server can then be killed, restarted on the same ports and data,
//! frozen with `SIGSTOP` and thawed with `SIGCONT`, and compacted. Dropping the server kills
//! the process and removes the directory.
//!
//! [`EtcdServerBuilder::members`] starts a cluster instead: every member runs on its own loopback
//! ports with its own data directory, and each can be killed, restarted, frozen and thawed on
//! its own. Members talk to each other over plain HTTP.
//!
//! By default the client port speaks plain HTTP without authentication.
//! [`EtcdServerBuilder::tls`] serves every member's client port over TLS, optionally requiring
//! client certificates, and [`EtcdServer::enable_auth`] turns on etcd's users and roles, which
//! the cluster replicates to every member. The harness's own clients ([`EtcdServer::client`],
//! the health and leader probes, compaction) then use the TLS settings and the root user's
//! credentials. Each member also serves `/metrics` over plain HTTP on a port of its own, so
//! [`EtcdServer::watchers`] works with TLS too.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

/// How long [`EtcdServer::leader`] waits for the cluster to elect a leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// The name of etcd's superuser, which must exist before authentication is enabled.
pub const ROOT_USER: &str = "root";

/// Settings of a server that [`EtcdServerBuilder::start`] starts.
#[derive(Clone, Debug)]
pub struct EtcdServerBuilder {
    extra_args: Vec<String>,
    members: usize,
    tls: Option<ServerTls>,
}

impl Default for EtcdServerBuilder {
    fn default() -> Self {
        EtcdServerBuilder {
            extra_args: Vec::new(),
            members: 1,
            tls: None,
        }
    }
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
    /// Starts a cluster of `count` members instead of a single server.
    ///
    /// # Panics
    /// If `count` is 0.
    pub fn members(mut self, count: usize) -> Self {
        assert!(count > 0, "an etcd cluster needs at least one member");
        self.members = count;
        self
    }

    /// Makes the server send a progress notification to every idle watch that requested them
    /// this often (`--experimental-watch-progress-notify-interval`, 10 minutes by default).
    pub fn watch_progress_notify_interval(self, interval: Duration) -> Self {
        self.arg(format!(
            "--experimental-watch-progress-notify-interval={}ms",
            interval.as_millis()
        ))
    }

    /// Serves every member's client port over TLS with `tls`, on `https://127.0.0.1` URLs.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Passes one more command-line argument to every member.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts the server, or every member of the cluster, on free loopback ports and waits
    /// until every member serves linearizable reads.
    ///
    /// # Panics
    /// If the etcd binary is missing, or a member does not become healthy within 30 s.
    pub async fn start(self) -> EtcdServer {
        let binary = etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("informer-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        // A token unique to this cluster, so a member never joins another test's cluster that
        // happens to reuse a port.
        let token = dir
            .path()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "informer-test".to_owned());

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
            let ports = reserve_ports(PORTS_PER_MEMBER * self.members);
            let mut members: Vec<Member> = ports
                .chunks_exact(PORTS_PER_MEMBER)
                .enumerate()
                .map(|(i, ports)| {
                    let ports = MemberPorts {
                        client: ports[0],
                        peer: ports[1],
                        metrics: ports[2],
                    };
                    Member::new(
                        dir.path(),
                        &format!("member{i}"),
                        scheme,
                        ports,
                        &token,
                        extra_args.clone(),
                    )
                })
                .collect();
            let initial_cluster = initial_cluster(&members);
            for member in &mut members {
                member.spawn(&binary, &initial_cluster, "new");
            }

            // Members of a new cluster wait for each other, so all are polled at once.
            let probes = members
                .iter_mut()
                .map(|member| member.wait_healthy(&access));
            let results = futures::future::join_all(probes).await;
            let mut port_race = false;
            let mut failure = None;
            for (index, result) in results.into_iter().enumerate() {
                match result {
                    Ok(()) => {}
                    Err(StartFailure::Exited(log)) if log.contains("address already in use") => {
                        port_race = true;
                    }
                    Err(other) => failure = failure.or(Some((index, other))),
                }
            }
            if let Some((index, failure)) = failure {
                for member in &mut members {
                    member.kill();
                }
                members[index].panic_with(failure);
            }
            if !port_race {
                return EtcdServer {
                    members,
                    access,
                    dir,
                };
            }

            eprintln!("etcd lost a port race on attempt {attempt}, retrying");
            for member in members {
                let data_dir = member.data_dir.clone();
                let log_path = member.log_path.clone();
                drop(member);
                remove_dir_if_exists(&data_dir);
                // The next attempt's log must not repeat this attempt's bind error.
                let _ = fs::remove_file(log_path);
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
    token: String,
    client_url: String,
    peer_url: String,
    /// Serves `/metrics` over plain HTTP, also when the client port uses TLS.
    metrics_url: String,
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

    /// Returns the number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Returns the client URL of member `index`.
    pub fn member_endpoint(&self, index: usize) -> String {
        self.members[index].client_url.clone()
    }

    /// Returns whether member `index` has a process, running or frozen.
    pub fn is_running(&self, index: usize) -> bool {
        self.members[index].process.is_some()
    }

    /// Returns the process id of the first member, or `None` after [`EtcdServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.members[0].process.as_ref().map(Child::id)
    }

    /// Returns the temporary directory that contains the data directories and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Connects a client to every member that has a process, with the server's TLS settings
    /// and, once authentication is enabled, as the root user.
    pub async fn client(&self) -> Client {
        Client::connect(self.live_endpoints(), Some(self.access.options()))
            .await
            .expect("connect to the test etcd server")
    }

    /// Creates the root user with `root_password` and enables authentication, which applies to
    /// every member of a cluster. From then on the harness's clients authenticate as root.
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
        self.kill_member(0);
    }

    /// Kills member `index` with `SIGKILL` and waits for it to exit. The data directory and
    /// the ports stay reserved for [`EtcdServer::restart_member`].
    pub fn kill_member(&mut self, index: usize) {
        self.members[index].kill();
    }

    /// Starts the first member again with the same data directory and ports, killing it first
    /// if it still runs, and waits until it serves reads.
    ///
    /// # Panics
    /// If the server does not become healthy within 30 s, for example because another process
    /// took its port while it was down.
    pub async fn restart(&mut self) {
        self.restart_member(0).await;
    }

    /// Starts member `index` again with the same data directory and ports, killing it first if
    /// it still runs, and waits until it serves linearizable reads, which needs a leader.
    ///
    /// # Panics
    /// As [`EtcdServer::restart`].
    pub async fn restart_member(&mut self, index: usize) {
        let binary = etcd_binary();
        let initial_cluster = initial_cluster(&self.members);
        let member = &mut self.members[index];
        member.kill();
        member.spawn(&binary, &initial_cluster, "existing");
        if let Err(failure) = member.wait_healthy(&self.access).await {
            member.panic_with(failure);
        }
    }

    /// Freezes the first member with `SIGSTOP`. Its sockets stay open but nothing responds,
    /// as on a hung host.
    pub fn stop_process(&self) {
        self.stop_member(0);
    }

    /// Freezes member `index` with `SIGSTOP`.
    pub fn stop_member(&self, index: usize) {
        self.members[index].signal("-STOP");
    }

    /// Thaws the first member with `SIGCONT` after [`EtcdServer::stop_process`].
    pub fn continue_process(&self) {
        self.continue_member(0);
    }

    /// Thaws member `index` with `SIGCONT` after [`EtcdServer::stop_member`].
    pub fn continue_member(&self, index: usize) {
        self.members[index].signal("-CONT");
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

    /// Returns the index of the member that leads the cluster, waiting up to 20 s for the
    /// running members to agree on one.
    ///
    /// # Panics
    /// If no running member reports a leader that is running within 20 s.
    pub async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + ELECTION_TIMEOUT;
        loop {
            if let Some(leader) = self.find_leader().await {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the etcd cluster {:?} elected no leader within {ELECTION_TIMEOUT:?}",
                self.endpoints()
            );
            tokio::time::sleep(PROBE_INTERVAL * 5).await;
        }
    }

    /// Asks every running member for its own id and its leader's id, and returns the index of
    /// the member whose id is the leader's.
    async fn find_leader(&self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for (index, member) in self.members.iter().enumerate() {
            if member.process.is_none() {
                continue;
            }
            let Some((member_id, leader_id)) = status(&member.client_url, &self.access).await
            else {
                continue;
            };
            ids.push((index, member_id));
            if leader_id != 0 {
                leader = Some(leader_id);
            }
        }
        let leader = leader?;
        ids.into_iter()
            .find(|(_, member_id)| *member_id == leader)
            .map(|(index, _)| index)
    }

    /// Returns the number of watchers open on member `index`, from its
    /// `etcd_debugging_mvcc_watcher_total` gauge, or `None` when the member does not respond.
    pub async fn watchers(&self, index: usize) -> Option<u64> {
        let metrics = http_get(&self.members[index].metrics_url, "/metrics").await?;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    }

    fn live_endpoints(&self) -> Vec<String> {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|member| member.process.is_some())
            .map(|member| member.client_url.clone())
            .collect();
        if live.is_empty() {
            // Every member is down: the caller's request fails as it would against a dead server.
            self.endpoints()
        } else {
            live
        }
    }
}

fn initial_cluster(members: &[Member]) -> String {
    members
        .iter()
        .map(Member::initial_cluster_entry)
        .collect::<Vec<_>>()
        .join(",")
}

/// How many ports each member listens on: client, peer and metrics.
const PORTS_PER_MEMBER: usize = 3;

/// The loopback ports that one member listens on.
struct MemberPorts {
    client: u16,
    peer: u16,
    metrics: u16,
}

/// Binds `count` distinct free loopback ports and returns them once all are known.
///
/// Every listener stays bound until all ports are known, so no two ports are equal. etcd binds
/// them a moment later, and `EtcdServerBuilder::start` retries if another process was faster.
fn reserve_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("a bound port").port())
        .collect()
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Member {
    /// Lays out a member with the given ports under `dir`. The client URL uses `scheme`, and
    /// the peer and metrics URLs plain HTTP.
    fn new(
        dir: &Path,
        name: &str,
        scheme: &str,
        ports: MemberPorts,
        token: &str,
        extra_args: Vec<String>,
    ) -> Member {
        Member {
            name: name.to_owned(),
            token: token.to_owned(),
            client_url: format!("{scheme}://127.0.0.1:{}", ports.client),
            peer_url: format!("http://127.0.0.1:{}", ports.peer),
            metrics_url: format!("http://127.0.0.1:{}", ports.metrics),
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
            .arg("--listen-metrics-urls")
            .arg(&self.metrics_url)
            .arg("--initial-cluster")
            .arg(initial_cluster)
            .arg("--initial-cluster-state")
            .arg(cluster_state)
            .arg("--initial-cluster-token")
            .arg(&self.token)
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

/// Returns a member's own id and its leader's id (0 when it has none), or `None` when the
/// member does not respond within [`PROBE_TIMEOUT`].
async fn status(url: &str, access: &HarnessAccess) -> Option<(u64, u64)> {
    let options = access
        .options()
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(PROBE_TIMEOUT);
    let read = async {
        let mut client = Client::connect([url], Some(options)).await?;
        client.status().await
    };
    let response = tokio::time::timeout(PROBE_TIMEOUT, read).await.ok()?.ok()?;
    let member_id = response.header()?.member_id();
    Some((member_id, response.leader()))
}

/// Sends an HTTP/1.0 GET for `path` to the server at `url` (`http://host:port`) and returns
/// the body, or `None` when the server does not respond within [`PROBE_TIMEOUT`].
async fn http_get(url: &str, path: &str) -> Option<String> {
    let address = url.strip_prefix("http://")?;
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let head = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let response = String::from_utf8(response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    };
    tokio::time::timeout(PROBE_TIMEOUT, request).await.ok()?
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
