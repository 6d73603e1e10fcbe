//! Settling and the convergence checks after the writes stop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use informer::source::Incarnation;
use tokio::time::Instant;

use super::driver::{Driver, History, Stored};
use super::pipeline::{Pipeline, Seen};

/// How long the reflector may take to catch up with the last write. With the default backoff
/// a reflector that failed often waits up to 30 s before its next attempt.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(90);

/// How long the handler, the queue and the workers may take to drain once the cache caught up.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How long a drained pipeline must stay drained to count as settled.
const QUIET: Duration = Duration::from_millis(300);

const POLL: Duration = Duration::from_millis(20);

/// The maximum number of problems one failure message lists.
const REPORTED_PROBLEMS: usize = 20;

/// Which checks [`settle_and_check`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checks {
    /// Every check.
    Everything,
    /// Every check except the order and origin of each reconcile's value, for runs that
    /// record only each key's last reconcile and do not keep every value written.
    Convergence,
}

/// Waits until the pipeline has caught up with etcd and drained, then checks:
///
/// - the cache equals a fresh range read of etcd, key by key and value by value;
/// - each live key's last reconcile saw its final value and revision, and each deleted key's
///   last reconcile, if it had any, saw it deleted;
/// - no key was reconciled by two workers at once;
/// - with [`Checks::Everything`]: per key, the revisions reconciles saw never went back, and
///   each value seen is one the driver wrote to that key, at the acknowledged revision when the
///   write was acknowledged.
///
/// # Panics
/// With every problem found, when a check fails or the pipeline does not settle in time.
pub async fn settle_and_check(pipeline: &Pipeline, driver: &mut Driver, checks: Checks) {
    let (truth, revision) = driver.read_all().await;
    wait_caught_up(pipeline, revision).await;
    wait_drained(pipeline, &truth).await;

    let mut problems = Vec::new();
    check_cache(pipeline, &truth, &mut problems);
    check_last_reconciles(pipeline, &truth, &driver.history, &mut problems);
    check_overlaps(pipeline, &mut problems);
    if checks == Checks::Everything {
        check_order(pipeline, &driver.history, &mut problems);
    }
    let stats = pipeline.queue.stats();
    if !stats.is_clear() {
        problems.push(format!("the queue is not empty after settling: {stats:?}"));
    }

    println!(
        "settled at revision {revision} with {} keys; {}",
        truth.len(),
        pipeline.summary()
    );
    if !problems.is_empty() {
        let mut message = format!(
            "{} problems after settling at revision {revision}; {}:\n",
            problems.len(),
            pipeline.summary()
        );
        for problem in problems.iter().take(REPORTED_PROBLEMS) {
            let _ = writeln!(message, "- {problem}");
        }
        panic!("{message}");
    }
}

/// Waits until the reflector is ready and its cache reflects `revision`.
async fn wait_caught_up(pipeline: &Pipeline, revision: i64) {
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    while !(pipeline.health.ready() && pipeline.store.revision() >= revision) {
        assert!(
            Instant::now() < deadline,
            "the cache did not reach revision {revision} within {CATCH_UP_LIMIT:?}: cache at {}; {}",
            pipeline.store.revision(),
            pipeline.summary()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until no event waits for the handler, the queue is empty and idle, and every key's
/// last reconcile saw the final state, and this holds for [`QUIET`].
async fn wait_drained(pipeline: &Pipeline, truth: &BTreeMap<String, Stored>) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let drained = pipeline.handler.pending() == 0
            && pipeline.queue.stats().is_clear()
            && truth
                .iter()
                .all(|(key, stored)| pipeline.log.last(key) == Some(live(stored)));
        match (drained, quiet_since) {
            (true, Some(since)) if since.elapsed() >= QUIET => return,
            (true, None) => quiet_since = Some(Instant::now()),
            (true, Some(_)) => {}
            (false, _) => quiet_since = None,
        }
        if Instant::now() >= deadline {
            // The checks that follow name what did not converge.
            println!(
                "the pipeline did not drain within {DRAIN_LIMIT:?}: handler pending {}, queue {:?}",
                pipeline.handler.pending(),
                pipeline.queue.stats()
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

fn live(stored: &Stored) -> Seen {
    Seen::Live {
        revision: stored.revision,
        value: stored.value.clone(),
    }
}

fn check_cache(pipeline: &Pipeline, truth: &BTreeMap<String, Stored>, problems: &mut Vec<String>) {
    for (key, stored) in truth {
        match pipeline.store.get(key) {
            None => problems.push(format!(
                "{key}: missing from the cache; etcd has {stored:?}"
            )),
            Some(cached) => {
                let expected = Incarnation::CreateRevision(stored.created);
                if cached.value.as_str() != stored.value
                    || cached.revision != stored.revision
                    || cached.incarnation != expected
                {
                    problems.push(format!(
                        "{key}: the cache has revision {} ({}) value {:?}; etcd has {stored:?}",
                        cached.revision,
                        cached.incarnation,
                        short(&cached.value)
                    ));
                }
            }
        }
    }
    for key in pipeline.store.keys() {
        if !truth.contains_key(&*key) {
            let cached = pipeline.store.get(&key);
            problems.push(format!(
                "{key}: in the cache at revision {:?} but deleted in etcd",
                cached.map(|c| c.revision)
            ));
        }
    }
}

fn check_last_reconciles(
    pipeline: &Pipeline,
    truth: &BTreeMap<String, Stored>,
    history: &History,
    problems: &mut Vec<String>,
) {
    let seen = pipeline.log.seen();
    for (key, stored) in truth {
        let last = seen.get(key.as_str()).and_then(|all| all.last());
        if last != Some(&live(stored)) {
            problems.push(format!(
                "{key}: the last reconcile saw {:?}; etcd has revision {} value {:?}",
                last.map(short_seen),
                stored.revision,
                short(&stored.value)
            ));
        }
    }
    for key in history
        .touched
        .iter()
        .filter(|key| !truth.contains_key(*key))
    {
        let last = seen.get(key.as_str()).and_then(|all| all.last());
        if last.is_some_and(|last| *last != Seen::Deleted) {
            problems.push(format!(
                "{key}: deleted in etcd, but the last reconcile saw {:?}",
                last.map(short_seen)
            ));
        }
    }
}

fn check_overlaps(pipeline: &Pipeline, problems: &mut Vec<String>) {
    for key in pipeline.log.overlaps() {
        problems.push(format!("{key}: reconciled by two workers at once"));
    }
}

fn check_order(pipeline: &Pipeline, history: &History, problems: &mut Vec<String>) {
    for (key, all) in pipeline.log.seen() {
        let mut newest: Option<i64> = None;
        for (index, seen) in all.iter().enumerate() {
            let Seen::Live { revision, value } = seen else {
                continue;
            };
            if let Some(newest) = newest.filter(|newest| revision < newest) {
                problems.push(format!(
                    "{key}: reconcile {index} saw revision {revision} after revision {newest}"
                ));
            }
            newest = newest.max(Some(*revision));

            match history.acked.get(&(key.to_string(), *revision)) {
                Some(acked) if acked != value => problems.push(format!(
                    "{key}: reconcile {index} saw {:?} at revision {revision}, but the driver \
                     wrote {:?} there",
                    short(value),
                    short(acked)
                )),
                Some(_) => {}
                None => {
                    let sent = history
                        .sent
                        .get(&*key)
                        .is_some_and(|values| values.contains(value));
                    if !sent {
                        problems.push(format!(
                            "{key}: reconcile {index} saw {:?} at revision {revision}, a value \
                             the driver never wrote to this key",
                            short(value)
                        ));
                    }
                }
            }
        }
    }
}

/// Shortens the large values of truncation faults for messages.
fn short(value: &str) -> String {
    const LIMIT: usize = 40;
    if value.len() <= LIMIT {
        return value.to_owned();
    }
    let end = (0..=LIMIT)
        .rev()
        .find(|i| value.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}… ({} bytes)", &value[..end], value.len())
}

fn short_seen(seen: &Seen) -> String {
    match seen {
        Seen::Live { revision, value } => format!("revision {revision} value {:?}", short(value)),
        Seen::Deleted => "deleted".to_owned(),
    }
}
