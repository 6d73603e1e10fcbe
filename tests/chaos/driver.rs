//! The driver: sends the plan's writes straight to etcd and records what it sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, GetResponse, Txn, TxnOp, TxnOpResponse,
};
use tokio::time::Instant;

use super::plan::{Condition, KeyWrite, PREFIX, Write};

/// How long one write may keep failing before the run gives up. A killed cluster member and
/// the election after it take a few seconds; a server that stays unavailable this long means
/// the harness is broken.
const WRITE_DEADLINE: Duration = Duration::from_secs(60);

/// The pause between two attempts of a failed write.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The largest response the driver accepts: a range read of every key, whose values can be as
/// large as 64 KiB each.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Every value the driver sent, and which of them etcd acknowledged at which revision.
#[derive(Debug, Default)]
pub struct History {
    /// Every value sent for each key, including writes whose outcome is unknown because the
    /// connection failed after sending.
    pub sent: HashMap<String, HashSet<String>>,
    /// The value of every acknowledged put, by key and revision.
    pub acked: HashMap<(String, i64), String>,
    /// Every key a write touched.
    pub touched: BTreeSet<String>,
    /// The highest revision in any response.
    pub last_revision: i64,
    /// Writes that failed at least once and were sent again.
    pub retried: usize,
}

/// One key's value in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The value.
    pub value: String,
    /// The key's `mod_revision`.
    pub revision: i64,
    /// The key's `create_revision`.
    pub created: i64,
}

/// Sends writes to etcd, retrying through failovers and restarts.
pub struct Driver {
    endpoints: Vec<String>,
    /// An endpoint the driver avoids while its member is down or frozen. A frozen member
    /// accepts connections but responds to nothing, so each request sent to it would wait for the
    /// whole request timeout.
    avoided: Option<String>,
    client: Option<Client>,
    /// What was sent and acknowledged.
    pub history: History,
}

impl Driver {
    /// Creates a driver for the given member endpoints. It connects on the first write.
    pub fn new(endpoints: Vec<String>) -> Driver {
        Driver {
            endpoints,
            avoided: None,
            client: None,
            history: History::default(),
        }
    }

    /// Sends requests only to the other members until [`Driver::avoid`] is called with `None`.
    pub fn avoid(&mut self, endpoint: Option<String>) {
        self.avoided = endpoint;
        self.client = None;
    }

    /// Sends `write` until etcd acknowledges it.
    ///
    /// # Panics
    /// If every attempt fails for [`WRITE_DEADLINE`].
    pub async fn write(&mut self, write: &Write) {
        self.record_sent(write);
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.try_write(write).await {
                Ok(()) => break,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "write {write:?} failed for {WRITE_DEADLINE:?}, {attempts} attempts: {error}"
                    );
                    // A new client drops connections to members that died.
                    self.client = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        if attempts > 1 {
            self.history.retried += 1;
        }
    }

    /// Sends the writes in order.
    pub async fn write_all(&mut self, writes: &[Write]) {
        for write in writes {
            self.write(write).await;
        }
    }

    /// Reads every key under the prefix with one linearizable range read, and returns them with
    /// the read's revision.
    pub async fn read_all(&mut self) -> (BTreeMap<String, Stored>, i64) {
        let response = self
            .read(PREFIX, Some(GetOptions::new().with_prefix()))
            .await;
        let revision = header_revision(response.header());
        let keys = response
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().expect("UTF-8 key").to_owned();
                let stored = Stored {
                    value: kv.value_str().expect("UTF-8 value").to_owned(),
                    revision: kv.mod_revision(),
                    created: kv.create_revision(),
                };
                (key, stored)
            })
            .collect();
        (keys, revision)
    }

    /// Returns the current revision of the store, from a linearizable read of one key.
    pub async fn revision(&mut self) -> i64 {
        let response = self.read("health", None).await;
        header_revision(response.header())
    }

    /// Sends a range read until it succeeds.
    ///
    /// # Panics
    /// If every attempt fails for [`WRITE_DEADLINE`].
    async fn read(&mut self, key: &str, options: Option<GetOptions>) -> GetResponse {
        let deadline = Instant::now() + WRITE_DEADLINE;
        loop {
            let result = async {
                let mut kv = self
                    .client()
                    .await?
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES);
                kv.get(key, options.clone()).await
            }
            .await;
            match result {
                Ok(response) => {
                    let revision = header_revision(response.header());
                    self.history.last_revision = self.history.last_revision.max(revision);
                    return response;
                }
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "reading {key} failed for {WRITE_DEADLINE:?}: {error}"
                    );
                    self.client = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn client(&mut self) -> Result<&mut Client, etcd_client::Error> {
        if self.client.is_none() {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(3));
            let endpoints: Vec<&String> = self
                .endpoints
                .iter()
                .filter(|endpoint| Some(*endpoint) != self.avoided.as_ref())
                .collect();
            let client = Client::connect(endpoints, Some(options)).await?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    fn record_sent(&mut self, write: &Write) {
        let mut record = |key_write: &KeyWrite| {
            self.history.touched.insert(key_write.key().to_owned());
            if let KeyWrite::Put { key, value } = key_write {
                self.history
                    .sent
                    .entry(key.clone())
                    .or_default()
                    .insert(value.clone());
            }
        };
        match write {
            Write::Single(key_write) => record(key_write),
            Write::Txn {
                success, failure, ..
            } => success.iter().chain(failure).for_each(record),
        }
    }

    async fn try_write(&mut self, write: &Write) -> Result<(), etcd_client::Error> {
        let client = self.client().await?;
        let (revision, applied): (i64, Vec<&KeyWrite>) = match write {
            Write::Single(KeyWrite::Put { key, value }) => {
                let response = client.put(key.as_str(), value.as_str(), None).await?;
                (header_revision(response.header()), vec![write_of(write)])
            }
            Write::Single(KeyWrite::Delete { key }) => {
                let response = client.delete(key.as_str(), None).await?;
                (header_revision(response.header()), Vec::new())
            }
            Write::Txn {
                condition,
                success,
                failure,
            } => {
                let txn = Txn::new()
                    .when([compare(condition)])
                    .and_then(success.iter().map(txn_op).collect::<Vec<_>>())
                    .or_else(failure.iter().map(txn_op).collect::<Vec<_>>());
                let response = client.txn(txn).await?;
                let branch = if response.succeeded() {
                    success
                } else {
                    failure
                };
                // Every put of a transaction shares the transaction's revision.
                let puts = response
                    .op_responses()
                    .iter()
                    .zip(branch)
                    .filter(|(op, _)| matches!(op, TxnOpResponse::Put(_)))
                    .map(|(_, key_write)| key_write)
                    .collect();
                (header_revision(response.header()), puts)
            }
        };

        self.history.last_revision = self.history.last_revision.max(revision);
        for key_write in applied {
            if let KeyWrite::Put { key, value } = key_write {
                self.history
                    .acked
                    .insert((key.clone(), revision), value.clone());
            }
        }
        Ok(())
    }
}

fn write_of(write: &Write) -> &KeyWrite {
    match write {
        Write::Single(key_write) => key_write,
        Write::Txn { .. } => unreachable!("only single writes have one key write"),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |header| header.revision())
}

fn compare(condition: &Condition) -> Compare {
    match condition {
        Condition::Exists(key) => Compare::version(key.as_str(), CompareOp::Greater, 0),
        Condition::Missing(key) => Compare::version(key.as_str(), CompareOp::Equal, 0),
        Condition::ValueIs(key, value) => {
            Compare::value(key.as_str(), CompareOp::Equal, value.as_str())
        }
    }
}

fn txn_op(key_write: &KeyWrite) -> TxnOp {
    match key_write {
        KeyWrite::Put { key, value } => TxnOp::put(key.as_str(), value.as_str(), None),
        KeyWrite::Delete { key } => TxnOp::delete(key.as_str(), None),
    }
}
