//! State shared by the server handle, the connection tasks and the watch streams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

use super::TestServerConfig;
use super::cluster::Cluster;
use super::faults::{Faults, Verb};

/// Signals that every open watch stream follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Control {
    /// Streams opened before the epoch changed end cleanly.
    pub(crate) end_epoch: u64,
    /// While set, streams send nothing and never end on their own.
    pub(crate) hang: bool,
}

/// One request the server served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The verb, for resource requests.
    pub verb: Option<Verb>,
    /// The resource (plural), for resource requests.
    pub resource: Option<String>,
    /// The namespace, for namespaced resource requests.
    pub namespace: Option<String>,
    /// The authenticated user.
    pub user: String,
    /// The HTTP status code sent, or 0 when the connection was closed without a response.
    pub status: u16,
}

/// The number of requests [`Shared::record`] keeps; older ones are dropped.
const REQUEST_LOG_CAPACITY: usize = 10_000;

pub(crate) struct Shared {
    pub(crate) cluster: Mutex<Cluster>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) config: TestServerConfig,
    pub(crate) address: SocketAddr,
    /// The UIDs the APF headers carry; fixed for the server's life.
    pub(crate) flow_schema_uid: String,
    pub(crate) priority_level_uid: String,
    /// Bearer tokens and the users they authenticate.
    pub(crate) tokens: Mutex<HashMap<String, String>>,
    revision_tx: watch::Sender<i64>,
    control_tx: watch::Sender<Control>,
    /// Connections opened before the epoch changed are dropped.
    kill_tx: watch::Sender<u64>,
    requests: Mutex<Vec<RequestRecord>>,
    open_watches: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(
        cluster: Cluster,
        faults: Faults,
        config: TestServerConfig,
        address: SocketAddr,
        uids: (String, String),
    ) -> Self {
        let revision = cluster.store.revision();
        Self {
            cluster: Mutex::new(cluster),
            faults: Mutex::new(faults),
            config,
            address,
            flow_schema_uid: uids.0,
            priority_level_uid: uids.1,
            tokens: Mutex::new(HashMap::new()),
            revision_tx: watch::Sender::new(revision),
            control_tx: watch::Sender::new(Control::default()),
            kill_tx: watch::Sender::new(0),
            requests: Mutex::new(Vec::new()),
            open_watches: AtomicUsize::new(0),
        }
    }

    /// Runs `operation` on the cluster, then wakes the watch streams if the revision moved.
    pub(crate) fn write<R>(&self, operation: impl FnOnce(&mut Cluster) -> R) -> R {
        let (result, revision) = {
            let mut cluster = self.cluster.lock();
            let result = operation(&mut cluster);
            (result, cluster.store.revision())
        };
        self.revision_tx.send_if_modified(|current| {
            if revision > *current {
                *current = revision;
                true
            } else {
                false
            }
        });
        result
    }

    pub(crate) fn read<R>(&self, operation: impl FnOnce(&Cluster) -> R) -> R {
        operation(&self.cluster.lock())
    }

    pub(crate) fn subscribe_revision(&self) -> watch::Receiver<i64> {
        self.revision_tx.subscribe()
    }

    pub(crate) fn subscribe_control(&self) -> watch::Receiver<Control> {
        self.control_tx.subscribe()
    }

    pub(crate) fn subscribe_kill(&self) -> watch::Receiver<u64> {
        self.kill_tx.subscribe()
    }

    pub(crate) fn end_watches(&self) {
        self.control_tx
            .send_modify(|control| control.end_epoch += 1);
    }

    pub(crate) fn set_hanging(&self, hang: bool) {
        self.control_tx.send_modify(|control| control.hang = hang);
    }

    pub(crate) fn kill_connections(&self) {
        self.kill_tx.send_modify(|epoch| *epoch += 1);
    }

    pub(crate) fn user_for_token(&self, token: &str) -> Option<String> {
        self.tokens.lock().get(token).cloned()
    }

    /// Returns the token of `user`, created on first use.
    pub(crate) fn token_for_user(&self, user: &str) -> String {
        let mut tokens = self.tokens.lock();
        if let Some((token, _)) = tokens.iter().find(|(_, name)| name.as_str() == user) {
            return token.clone();
        }
        let token = format!("{user}-{}", super::strategy::new_uid());
        tokens.insert(token.clone(), user.to_owned());
        token
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        let mut requests = self.requests.lock();
        if requests.len() >= REQUEST_LOG_CAPACITY {
            requests.remove(0);
        }
        requests.push(record);
    }

    pub(crate) fn requests(&self) -> Vec<RequestRecord> {
        self.requests.lock().clone()
    }

    pub(crate) fn clear_requests(&self) {
        self.requests.lock().clear();
    }

    pub(crate) fn open_watches(&self) -> usize {
        self.open_watches.load(Ordering::SeqCst)
    }

    pub(crate) fn watch_opened(&self) {
        self.open_watches.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn watch_closed(&self) {
        self.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}
