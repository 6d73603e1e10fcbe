//! The plan of one chaos run: every write and every fault, derived from the seed alone.
//!
//! [`Plan::from_seed`] draws the whole plan from `StdRng::seed_from_u64(seed)` before anything
//! runs, so timing never changes which writes are sent or which faults are injected in which
//! order. The same seed with the same `rand` version (locked in `Cargo.lock`) gives the same
//! plan. What timing still changes: which member leads a cluster when a fault strikes, how
//! many watch responses a fault interrupts, and whether a write sent while a member dies was
//! applied.
//!
//! The seed also picks the setup. Seeds with `seed % 4 == 3` run on a three-member cluster.
//! Seeds with `seed % 4 == 2` run on one server with the default timeouts and backoff of the
//! reflector and the source. The others run on one server with short timeouts and backoff.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

/// The key prefix the pipeline lists and watches.
pub const PREFIX: &str = "/chaos/";

/// The number of distinct keys the writes touch.
pub const KEY_SPACE: usize = 300;

/// The keys that one write in five picks, so deletes and compares often find a live key.
const HOT_KEYS: usize = 20;

/// The size of the values of a [`Fault::Truncate`] transaction. Its watch response is larger
/// than the proxy's truncation threshold.
pub const LARGE_VALUE_BYTES: usize = 8 * 1024;

/// The size of the values of a [`Fault::Backlog`]. A few hundred of them exceed what HTTP/2
/// flow control, the kernel's socket buffers and etcd's queue of 128 responses per watch
/// stream hold together, so etcd can no longer send to the watch.
const BACKLOG_VALUE_BYTES: usize = 64 * 1024;

/// Where etcd runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server behind a cutting proxy.
    Single,
    /// Three members; the source gets every member's endpoint.
    Cluster,
}

/// The timeouts and backoff of the reflector and the etcd source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Short timeouts and a backoff capped at 2 s, so many faults fit into a short run.
    Fast,
    /// `ReflectorConfig::default()` and `EtcdConfig::new` defaults.
    Defaults,
}

/// One plain write, or one write inside a transaction.
#[derive(Clone, Debug)]
pub enum KeyWrite {
    /// Set `key` to `value`.
    Put { key: String, value: String },
    /// Delete `key`, which may not exist.
    Delete { key: String },
}

impl KeyWrite {
    /// Returns the key the write touches.
    pub fn key(&self) -> &str {
        match self {
            KeyWrite::Put { key, .. } | KeyWrite::Delete { key } => key,
        }
    }
}

/// The condition of a transaction.
#[derive(Clone, Debug)]
pub enum Condition {
    /// The key exists.
    Exists(String),
    /// The key does not exist.
    Missing(String),
    /// The key contains this value: the last value the plan wrote to it.
    ValueIs(String, String),
}

/// One request the driver sends to etcd.
#[derive(Clone, Debug)]
pub enum Write {
    /// A single put or delete.
    Single(KeyWrite),
    /// A transaction over distinct keys: `success` runs when `condition` holds, `failure`
    /// otherwise.
    Txn {
        condition: Condition,
        success: Vec<KeyWrite>,
        failure: Vec<KeyWrite>,
    },
}

/// A fault injected between two writes.
#[derive(Clone, Debug)]
pub enum Fault {
    /// SIGKILL the server, keep it down for `down`, then start it again on the same data.
    Kill { down: Duration },
    /// SIGSTOP the server for `frozen`, then SIGCONT it.
    Freeze { frozen: Duration },
    /// Cut the source's connection at the proxy, send `writes` straight to etcd, stay cut for
    /// `down` in total, then restore the proxy.
    Cut { down: Duration, writes: Vec<Write> },
    /// Cut the source's connection, send `writes` straight to etcd, compact at the revision
    /// reached after the first `compact_after` of them, then restore the proxy: the watch can
    /// only resume by relisting. With `again_after`, compact once more at the current revision
    /// that long after the restore, which can expire the relist's pinned revision between two
    /// pages.
    CompactWhileCut {
        writes: Vec<Write>,
        compact_after: usize,
        again_after: Option<Duration>,
    },
    /// Arm the proxy to cut the next large server response in the middle, then send `write`,
    /// a transaction with large values.
    Truncate { write: Write },
    /// Compact at the current revision while the source is connected.
    CompactLive,
    /// Hold back the server's responses at the proxy, as a slow client would, while `writes`
    /// of large values fill etcd's send buffers for the watch, then compact at the current
    /// revision and let the responses flow again. etcd moves a watch it cannot send to aside,
    /// and cancels it when the history it still owes is compacted.
    Backlog { writes: Vec<Write> },
    /// SIGKILL the cluster's leader, send `writes` to the rest, wait until the cache has them,
    /// and start the member again no earlier than `down` after the kill.
    KillLeader { down: Duration, writes: Vec<Write> },
    /// SIGKILL the member that serves the source's watch, send `writes` to the rest, wait
    /// until the cache has them through another member, and start the member again no earlier
    /// than `down` after the kill.
    KillWatchMember { down: Duration, writes: Vec<Write> },
    /// SIGSTOP the member that serves the source's watch, send `writes` to the rest, wait
    /// until the cache has them through another member, and SIGCONT the member no earlier
    /// than `frozen` after the stop.
    FreezeWatchMember {
        frozen: Duration,
        writes: Vec<Write>,
    },
}

impl Fault {
    /// Returns the fault's name for logs and failure messages.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Freeze { .. } => "freeze",
            Fault::Cut { .. } => "cut",
            Fault::CompactWhileCut { .. } => "compact-while-cut",
            Fault::Truncate { .. } => "truncate",
            Fault::CompactLive => "compact-live",
            Fault::Backlog { .. } => "backlog",
            Fault::KillLeader { .. } => "kill-leader",
            Fault::KillWatchMember { .. } => "kill-watch-member",
            Fault::FreezeWatchMember { .. } => "freeze-watch-member",
        }
    }
}

/// One step of a run.
#[derive(Clone, Debug)]
pub enum Step {
    /// Send one write.
    Write(Write),
    /// Inject one fault.
    Fault(Fault),
    /// Wait until the cache has caught up with every write so far, so the next fault strikes
    /// a healthy watch. Without it, the next fault may strike while the reflector still backs
    /// off.
    AwaitCatchUp,
}

/// Everything one seed decides.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed the plan was drawn from.
    pub seed: u64,
    /// Where etcd runs.
    pub topology: Topology,
    /// The timeouts and backoff of the pipeline.
    pub timing: Timing,
    /// Objects per list page, for both the reflector and the source.
    pub page_size: usize,
    /// Reconcile workers.
    pub workers: usize,
    /// etcd's own periodic progress notifications
    /// (`--experimental-watch-progress-notify-interval`), when enabled.
    pub progress_notify: Option<Duration>,
    /// Writes sent before the pipeline starts, so the first list has something to read.
    pub preload: Vec<Write>,
    /// The writes and faults after the pipeline started, in order.
    pub steps: Vec<Step>,
}

/// The fault kinds of a single server. Each appears in every fast single-server plan.
const SINGLE_FAULTS: [&str; 7] = [
    "kill",
    "freeze",
    "cut",
    "compact-while-cut",
    "truncate",
    "compact-live",
    "backlog",
];

impl Plan {
    /// Draws the plan of `seed`.
    pub fn from_seed(seed: u64) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        let topology = if seed % 4 == 3 {
            Topology::Cluster
        } else {
            Topology::Single
        };
        let timing = if seed % 4 == 2 {
            Timing::Defaults
        } else {
            Timing::Fast
        };
        let page_size = match timing {
            // Defaults keep the default page size of 10,000: one page per list.
            Timing::Defaults => 10_000,
            // A small page makes a relist take several pages at one pinned revision.
            Timing::Fast => *[10_000, 64, 7].choose(&mut rng).expect("a page size"),
        };
        let workers = rng.random_range(2..=6);
        let progress_notify = rng
            .random_bool(0.5)
            .then(|| Duration::from_millis(rng.random_range(200..1000)));

        let mut writer = WriteGen::new(seed);
        let preload = (0..rng.random_range(50..200))
            .map(|_| writer.write(&mut rng))
            .collect();

        let faults = fault_kinds(&mut rng, topology, timing);
        let writes: usize = match topology {
            Topology::Single => rng.random_range(1500..2500),
            Topology::Cluster => rng.random_range(1000..1600),
        };
        let mut steps = Vec::with_capacity(writes + faults.len());
        let segment = writes / (faults.len() + 1);
        for kind in faults {
            for _ in 0..rng.random_range(segment / 2..segment * 3 / 2) {
                steps.push(Step::Write(writer.write(&mut rng)));
            }
            steps.push(Step::Fault(fault(kind, &mut rng, &mut writer, timing)));
            if rng.random_bool(0.6) {
                steps.push(Step::AwaitCatchUp);
            }
        }
        for _ in 0..rng.random_range(segment / 2..segment * 3 / 2) {
            steps.push(Step::Write(writer.write(&mut rng)));
        }

        Plan {
            seed,
            topology,
            timing,
            page_size,
            workers,
            progress_notify,
            preload,
            steps,
        }
    }

    /// Returns the number of writes, preload included, counting a fault's writes too.
    pub fn write_count(&self) -> usize {
        let in_faults = |fault: &Fault| match fault {
            Fault::Cut { writes, .. }
            | Fault::CompactWhileCut { writes, .. }
            | Fault::Backlog { writes }
            | Fault::KillLeader { writes, .. }
            | Fault::KillWatchMember { writes, .. }
            | Fault::FreezeWatchMember { writes, .. } => writes.len(),
            Fault::Truncate { .. } => 1,
            Fault::Kill { .. } | Fault::Freeze { .. } | Fault::CompactLive => 0,
        };
        let steps: usize = self
            .steps
            .iter()
            .map(|step| match step {
                Step::Write(_) => 1,
                Step::Fault(fault) => in_faults(fault),
                Step::AwaitCatchUp => 0,
            })
            .sum();
        self.preload.len() + steps
    }
}

impl fmt::Display for Plan {
    /// Summarizes the plan: the setup and each fault with the number of writes before it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} ({:?}, {:?} timing, page size {}, {} workers, progress notify {:?}, {} \
             writes): ",
            self.seed,
            self.topology,
            self.timing,
            self.page_size,
            self.workers,
            self.progress_notify,
            self.write_count()
        )?;
        let mut writes = 0;
        let mut faults = Vec::new();
        for step in &self.steps {
            match step {
                Step::Write(_) => writes += 1,
                Step::Fault(fault) => faults.push(format!("{} after {writes}", fault.name())),
                Step::AwaitCatchUp => faults.push("catch-up".to_owned()),
            }
        }
        f.write_str(&faults.join(", "))
    }
}

/// Returns the kinds of fault of one plan, in order.
fn fault_kinds(rng: &mut StdRng, topology: Topology, timing: Timing) -> Vec<&'static str> {
    match topology {
        Topology::Single => {
            let mut kinds = SINGLE_FAULTS.to_vec();
            kinds.shuffle(rng);
            // Every failure lengthens the default backoff until a watch stays up for a minute
            // (800 ms doubling to 30 s), so the defaults get fewer faults.
            if timing == Timing::Defaults {
                kinds.truncate(4);
            }
            kinds
        }
        Topology::Cluster => {
            let all = ["kill-leader", "kill-watch-member", "freeze-watch-member"];
            let mut kinds = all.to_vec();
            kinds.push(*all.choose(rng).expect("a fault kind"));
            kinds.shuffle(rng);
            kinds
        }
    }
}

/// Draws one fault of `kind`.
fn fault(kind: &str, rng: &mut StdRng, writer: &mut WriteGen, timing: Timing) -> Fault {
    let millis =
        |rng: &mut StdRng, low: u64, high: u64| Duration::from_millis(rng.random_range(low..high));
    let writes = |rng: &mut StdRng, writer: &mut WriteGen, low: usize, high: usize| {
        (0..rng.random_range(low..high))
            .map(|_| writer.write(rng))
            .collect::<Vec<_>>()
    };
    match kind {
        "kill" => Fault::Kill {
            down: millis(rng, 200, 2000),
        },
        "freeze" => Fault::Freeze {
            // With fast timing the source requests progress every second and gives up after
            // 3 s of silence, so longer freezes are detected and shorter ones ride through.
            frozen: match timing {
                Timing::Fast => millis(rng, 500, 5000),
                Timing::Defaults => millis(rng, 500, 3000),
            },
        },
        "cut" => Fault::Cut {
            down: millis(rng, 200, 1500),
            writes: writes(rng, writer, 1, 60),
        },
        "compact-while-cut" => {
            let writes = writes(rng, writer, 5, 60);
            let compact_after = rng.random_range(1..=writes.len());
            let again_after = rng.random_bool(0.5).then(|| millis(rng, 0, 100));
            Fault::CompactWhileCut {
                writes,
                compact_after,
                again_after,
            }
        }
        "truncate" => Fault::Truncate {
            write: writer.large_txn(rng),
        },
        "compact-live" => Fault::CompactLive,
        "backlog" => Fault::Backlog {
            writes: (0..rng.random_range(200..400))
                .map(|_| writer.large_put(rng, BACKLOG_VALUE_BYTES))
                .collect(),
        },
        "kill-leader" => Fault::KillLeader {
            down: millis(rng, 1000, 3000),
            writes: writes(rng, writer, 20, 100),
        },
        "kill-watch-member" => Fault::KillWatchMember {
            down: millis(rng, 1000, 3000),
            writes: writes(rng, writer, 20, 100),
        },
        "freeze-watch-member" => Fault::FreezeWatchMember {
            frozen: millis(rng, 1000, 5000),
            writes: writes(rng, writer, 20, 100),
        },
        other => unreachable!("unknown fault kind {other}"),
    }
}

/// Draws writes with values that are unique within a seed: `s<seed>-w<n>`, padded.
struct WriteGen {
    seed: u64,
    next: u64,
    /// The last value the plan put to each key, for [`Condition::ValueIs`].
    last_value: HashMap<String, String>,
}

impl WriteGen {
    fn new(seed: u64) -> Self {
        WriteGen {
            seed,
            next: 0,
            last_value: HashMap::new(),
        }
    }

    fn key(&self, rng: &mut StdRng) -> String {
        let index = if rng.random_bool(0.2) {
            rng.random_range(0..HOT_KEYS)
        } else {
            rng.random_range(0..KEY_SPACE)
        };
        format!("{PREFIX}k{index:03}")
    }

    fn value(&mut self, rng: &mut StdRng, size: usize) -> String {
        self.next += 1;
        let mut value = format!("s{}-w{}", self.seed, self.next);
        let padding = size.saturating_sub(value.len());
        value.push('-');
        value.extend(std::iter::repeat_n(
            char::from(rng.random_range(b'a'..=b'z')),
            padding,
        ));
        value
    }

    fn key_write(&mut self, rng: &mut StdRng, key: String, size: usize) -> KeyWrite {
        if rng.random_bool(0.25) {
            self.last_value.remove(&key);
            KeyWrite::Delete { key }
        } else {
            let value = self.value(rng, size);
            self.last_value.insert(key.clone(), value.clone());
            KeyWrite::Put { key, value }
        }
    }

    fn write(&mut self, rng: &mut StdRng) -> Write {
        let size = if rng.random_bool(0.05) {
            rng.random_range(256..2048)
        } else {
            rng.random_range(8..64)
        };
        if rng.random_bool(0.65) {
            let key = self.key(rng);
            return Write::Single(self.key_write(rng, key, size));
        }
        self.txn(rng, size)
    }

    fn txn(&mut self, rng: &mut StdRng, size: usize) -> Write {
        let subject = self.key(rng);
        let condition = match rng.random_range(0..3) {
            0 => Condition::Exists(subject),
            1 => Condition::Missing(subject),
            _ => match self.last_value.get(&subject) {
                Some(value) => Condition::ValueIs(subject, value.clone()),
                None => Condition::Exists(subject),
            },
        };

        // etcd rejects a transaction that writes one key twice, so each branch draws distinct
        // keys.
        let mut branch = |rng: &mut StdRng, count: usize| {
            let mut keys: Vec<String> = Vec::new();
            while keys.len() < count {
                let key = self.key(rng);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            keys.into_iter()
                .map(|key| self.key_write(rng, key, size))
                .collect::<Vec<_>>()
        };
        let success_count = rng.random_range(1..=5);
        let success = branch(rng, success_count);
        let failure_count = rng.random_range(0..=2);
        let failure = branch(rng, failure_count);
        Write::Txn {
            condition,
            success,
            failure,
        }
    }

    /// Returns a put of a large value.
    fn large_put(&mut self, rng: &mut StdRng, size: usize) -> Write {
        let key = self.key(rng);
        let value = self.value(rng, size);
        self.last_value.insert(key.clone(), value.clone());
        Write::Single(KeyWrite::Put { key, value })
    }

    /// Returns an unconditional transaction that puts large values to 2 to 4 keys.
    fn large_txn(&mut self, rng: &mut StdRng) -> Write {
        let count = rng.random_range(2..=4);
        let mut keys: Vec<String> = Vec::new();
        while keys.len() < count {
            let key = self.key(rng);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let success = keys
            .into_iter()
            .map(|key| {
                let value = self.value(rng, LARGE_VALUE_BYTES);
                self.last_value.insert(key.clone(), value.clone());
                KeyWrite::Put { key, value }
            })
            .collect();
        Write::Txn {
            condition: Condition::Missing(format!("{PREFIX}never-written")),
            success,
            failure: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_plan() {
        let first = format!("{:?}", Plan::from_seed(17));
        let second = format!("{:?}", Plan::from_seed(17));
        assert_eq!(first, second);
        assert_ne!(first, format!("{:?}", Plan::from_seed(18)));
    }
}
