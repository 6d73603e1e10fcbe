//! A TCP proxy on loopback that tests use to cut a client's connection to a server.
//!
//! The client connects to [`Proxy::address`]; the proxy forwards bytes to the target. A test
//! can then:
//! - [`Proxy::cut`]: close every open connection and reject new ones until [`Proxy::restore`];
//! - [`Proxy::truncate_next_response`]: forward only the first half of the next server-to-client
//!   read of at least a given size, then close that connection, so a message is cut in the middle.
//! - [`Proxy::pause_responses`]: stop reading from the server until [`Proxy::resume_responses`],
//!   so the server's send buffers fill as with a slow client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A loopback TCP proxy with faults.
pub struct Proxy {
    address: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    /// The server connections are forwarded to; [`Proxy::set_target`] changes it.
    target: parking_lot::Mutex<SocketAddr>,
    /// True while connections are cut.
    cut: AtomicBool,
    /// Bumped on every cut; connections of an older generation close.
    generation: watch::Sender<u64>,
    /// When non-zero, the next server-to-client read of at least this many bytes is truncated.
    truncate_at_least: AtomicUsize,
    /// Number of truncations performed.
    truncated: AtomicUsize,
    /// True while server-to-client traffic is held back.
    paused: watch::Sender<bool>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().unwrap();
        let state = Arc::new(State {
            target: parking_lot::Mutex::new(target),
            cut: AtomicBool::new(false),
            generation: watch::Sender::new(0),
            truncate_at_least: AtomicUsize::new(0),
            truncated: AtomicUsize::new(0),
            paused: watch::Sender::new(false),
        });
        let task = tokio::spawn(accept(listener, state.clone()));
        Proxy {
            address,
            state,
            task,
        }
    }

    /// Returns the address clients connect to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Returns the proxy's URL for an HTTP client.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Closes every connection and rejects new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state
            .generation
            .send_modify(|generation| *generation += 1);
    }

    /// Forwards new connections to `target`, as when a server is replaced behind one address.
    pub fn set_target(&self, target: SocketAddr) {
        *self.state.target.lock() = target;
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Arms a truncation: the next server-to-client read of at least `min_bytes` is forwarded
    /// only in part, and its connection is closed.
    pub fn truncate_next_response(&self, min_bytes: usize) {
        self.state
            .truncate_at_least
            .store(min_bytes, Ordering::SeqCst);
    }

    /// Stops reading from the server on every connection, new ones included, until
    /// [`Proxy::resume_responses`]. Client-to-server traffic still flows.
    pub fn pause_responses(&self) {
        self.state.paused.send_replace(true);
    }

    /// Forwards server-to-client traffic again after [`Proxy::pause_responses`].
    pub fn resume_responses(&self) {
        self.state.paused.send_replace(false);
    }

    /// Returns how many responses were truncated.
    pub fn truncated(&self) -> usize {
        self.state.truncated.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if state.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let target = *state.target.lock();
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let mut generation = state.generation.subscribe();
            generation.mark_unchanged();
            tokio::select! {
                _ = pipe(client, server, &state) => {}
                _ = generation.changed() => {}
            }
        });
    }
}

async fn pipe(client: TcpStream, server: TcpStream, state: &State) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut paused = state.paused.subscribe();
        loop {
            if paused.wait_for(|paused| !*paused).await.is_err() {
                return;
            }
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let threshold = state.truncate_at_least.load(Ordering::SeqCst);
            if threshold > 0
                && n >= threshold
                && state
                    .truncate_at_least
                    .compare_exchange(threshold, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                let _ = client_write.write_all(&buffer[..n / 2]).await;
                let _ = client_write.flush().await;
                state.truncated.fetch_add(1, Ordering::SeqCst);
                return;
            }
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
