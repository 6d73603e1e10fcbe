//! Convergence of the whole pipeline under faults, against real etcd, from seeded plans.
//!
//! Each run draws a plan from its seed (see `chaos/plan.rs`): random puts, deletes and
//! multi-key transactions over a few hundred keys, with faults between them. On one server the
//! faults are SIGKILL and restart, SIGSTOP and SIGCONT, a cut watch connection, a watch
//! response cut in the middle, a compaction while the watch is cut, a compaction while it is
//! up, and a slow client whose watch etcd cancels after a compaction. On a three-member
//! cluster they are the loss of the leader and the loss or freeze of the member serving the
//! watch. After the writes stop and the pipeline settles, the run checks that the cache equals
//! etcd, that every key's last reconcile saw its final state, that no key was reconciled twice
//! at once, and that no reconcile saw an older revision than an earlier one.
//!
//! The default run plays a few fixed seeds. Long modes:
//!
//! - `INFORMER_CHAOS_SEED=n`: replays seed `n` (`chaos_from_env`).
//! - `INFORMER_CHAOS_SEEDS=N`: plays seeds 1 to N, or `INFORMER_CHAOS_FIRST_SEED` to
//!   `INFORMER_CHAOS_FIRST_SEED + N - 1`, and lists every seed that failed.
//! - `INFORMER_SOAK=1`: the load and memory soak for 10 minutes, or `INFORMER_SOAK_SECS`.
//!
//! A failed run's message contains `INFORMER_CHAOS_SEED=<n>`, the command that replays it.

mod support;

#[path = "chaos/check.rs"]
mod check;
#[path = "chaos/driver.rs"]
mod driver;
#[path = "chaos/pipeline.rs"]
mod pipeline;
#[path = "chaos/plan.rs"]
mod plan;
#[path = "chaos/run.rs"]
mod run;
#[path = "chaos/soak.rs"]
mod soak;

use std::process::{Command, Stdio};
use std::time::Duration;

use plan::Plan;
use soak::SoakSettings;

/// The one seed `chaos_from_env` replays.
const SEED_VAR: &str = "INFORMER_CHAOS_SEED";
/// The number of seeds `chaos_from_env` plays one after another.
const SEEDS_VAR: &str = "INFORMER_CHAOS_SEEDS";
/// The first of those seeds, 1 by default.
const FIRST_SEED_VAR: &str = "INFORMER_CHAOS_FIRST_SEED";

/// Turns the long soak on when set to `1`.
const SOAK_VAR: &str = "INFORMER_SOAK";
/// The long soak's length in seconds.
const SOAK_SECS_VAR: &str = "INFORMER_SOAK_SECS";
/// Set in a soak's child process to the name of the test it runs.
const SOAK_CHILD_VAR: &str = "INFORMER_SOAK_CHILD";

/// The long soak's default length.
const LONG_SOAK: Duration = Duration::from_secs(600);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Plays one seed and returns the failure message, which names the seed and the replay
/// command, if the run failed.
async fn play(seed: u64) -> Result<(), String> {
    init_tracing();
    let plan = Plan::from_seed(seed);
    let summary = plan.to_string();
    println!("chaos {summary}");
    let started = std::time::Instant::now();
    let result = tokio::spawn(run::run(plan)).await;
    println!("chaos seed {seed} finished in {:?}", started.elapsed());
    match result {
        Ok(()) => Ok(()),
        Err(error) => {
            let message = match error.try_into_panic() {
                Ok(panic) => panic_text(panic.as_ref()),
                Err(error) => error.to_string(),
            };
            Err(format!(
                "chaos {summary}\nfailed: {message}\nreplay with: {SEED_VAR}={seed} cargo test \
                 --test chaos chaos_from_env -- --nocapture"
            ))
        }
    }
}

/// Plays one seed and panics with the replay command when it fails.
async fn play_or_panic(seed: u64) {
    if let Err(message) = play(seed).await {
        panic!("{message}");
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let number = value
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number"));
    Some(number)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_single_seed_1() {
    play_or_panic(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_single_defaults_seed_2() {
    play_or_panic(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_single_seed_5() {
    play_or_panic(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_cluster_seed_3() {
    play_or_panic(3).await;
}

/// Replays `INFORMER_CHAOS_SEED`, or plays `INFORMER_CHAOS_SEEDS` seeds one after another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_from_env() {
    if let Some(seed) = env_number(SEED_VAR) {
        play_or_panic(seed).await;
        return;
    }
    let Some(count) = env_number(SEEDS_VAR) else {
        println!("skipped: set {SEED_VAR}=n to replay one seed or {SEEDS_VAR}=N to play N seeds");
        return;
    };
    let first = env_number(FIRST_SEED_VAR).unwrap_or(1);
    let mut failures = Vec::new();
    for seed in first..first + count {
        if let Err(message) = play(seed).await {
            println!("{message}");
            failures.push(seed);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed: {failures:?}; replay one with {SEED_VAR}=<seed>",
        failures.len()
    );
}

/// The soak for 20 s, so the default suite runs its code path.
#[test]
fn soak_short() {
    soak_in_child(
        "soak_short",
        SoakSettings {
            duration: Duration::from_secs(20),
            sample_every: Duration::from_secs(1),
            warmup: Duration::from_secs(5),
        },
    );
}

/// The soak for `INFORMER_SOAK_SECS` (10 minutes by default) when `INFORMER_SOAK=1`.
#[test]
fn soak_long() {
    let in_child = std::env::var(SOAK_CHILD_VAR).is_ok();
    if !in_child && std::env::var(SOAK_VAR).as_deref() != Ok("1") {
        println!("skipped: set {SOAK_VAR}=1 to soak for 10 minutes, or {SOAK_SECS_VAR}=N seconds");
        return;
    }
    let duration = env_number(SOAK_SECS_VAR).map_or(LONG_SOAK, Duration::from_secs);
    soak_in_child(
        "soak_long",
        SoakSettings {
            duration,
            sample_every: Duration::from_secs(5),
            warmup: (duration / 10).max(Duration::from_secs(5)),
        },
    );
}

/// Runs the soak in a child process that runs only the test `name`, because resident memory
/// covers the whole process and the other tests of this binary run in parallel. In the child,
/// runs the soak itself.
fn soak_in_child(name: &str, settings: SoakSettings) {
    if std::env::var(SOAK_CHILD_VAR).as_deref() == Ok(name) {
        init_tracing();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime")
            .block_on(soak::run(settings));
        return;
    }

    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe);
    child
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SOAK_CHILD_VAR, name)
        .stdin(Stdio::null());
    let long = settings.duration > Duration::from_secs(60);
    let output = if long {
        // A long soak shows its samples as it goes.
        let status = child.status().expect("start the soak's child process");
        (status, String::new())
    } else {
        let output = child.output().expect("run the soak's child process");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{text}");
        (output.status, text)
    };
    let (status, text) = output;
    assert!(
        status.success(),
        "the soak failed ({status}); its output:\n{text}"
    );
    assert!(
        long || text.contains("1 passed"),
        "the soak's child process ran no test; its output:\n{text}"
    );
}
