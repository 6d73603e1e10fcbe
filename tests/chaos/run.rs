//! One chaos run: start etcd and the pipeline, play the plan's writes and faults, let the
//! pipeline settle, and check that it converged.

use std::time::Duration;

use informer::reflector::{BackoffConfig, ReflectorConfig};
use informer::source::etcd::EtcdConfig;
use tokio::time::Instant;

use super::check;
use super::driver::Driver;
use super::pipeline::{Pipeline, ReconcilerBehaviour, Recording};
use super::plan::{Fault, LARGE_VALUE_BYTES, PREFIX, Plan, Step, Timing, Topology};
use crate::support::etcd::EtcdServer;
use crate::support::proxy::Proxy;

/// How long a truncation fault waits for the armed proxy to cut a response.
const TRUNCATE_WAIT: Duration = Duration::from_secs(3);

/// How long a run waits for the source's watch to show up on a cluster member.
const WATCH_MEMBER_WAIT: Duration = Duration::from_secs(30);

/// How long the cache may take to catch up after a fault on a single server. The default
/// backoff waits up to 30 s between two attempts.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// How long the cache may take to catch up through the remaining members while one member of
/// a cluster is down or frozen.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// etcd and the connections to it.
struct Harness {
    server: EtcdServer,
    /// The proxy between the source and a single server. Clusters have none.
    proxy: Option<Proxy>,
    driver: Driver,
}

/// Runs `plan` and checks convergence.
///
/// # Panics
/// On any failed check, naming the key and what was expected.
pub async fn run(plan: Plan) {
    let mut builder = EtcdServer::builder();
    if let Some(interval) = plan.progress_notify {
        builder = builder.watch_progress_notify_interval(interval);
    }
    let server = match plan.topology {
        Topology::Single => builder.start().await,
        Topology::Cluster => builder.members(3).start().await,
    };
    let proxy = match plan.topology {
        Topology::Single => {
            let address = server
                .endpoint()
                .trim_start_matches("http://")
                .parse()
                .expect("a loopback address");
            Some(Proxy::start(address).await)
        }
        Topology::Cluster => None,
    };
    let source_endpoints = match &proxy {
        Some(proxy) => vec![proxy.url()],
        None => server.endpoints(),
    };
    let mut harness = Harness {
        driver: Driver::new(server.endpoints()),
        server,
        proxy,
    };

    harness.driver.write_all(&plan.preload).await;
    let pipeline = Pipeline::start(
        etcd_config(&plan, source_endpoints),
        reflector_config(&plan),
        plan.workers,
        ReconcilerBehaviour {
            max_work: Duration::from_millis(3),
            error_rate: 0.01,
            recording: Recording::Everything,
        },
    )
    .await;

    let started = Instant::now();
    for (index, step) in plan.steps.iter().enumerate() {
        match step {
            Step::Write(write) => harness.driver.write(write).await,
            Step::Fault(fault) => {
                let at = Instant::now();
                harness.inject(fault, &pipeline).await;
                println!(
                    "step {index}: {} took {:?}; {}",
                    fault.name(),
                    at.elapsed(),
                    pipeline.summary()
                );
            }
            Step::AwaitCatchUp => {
                let revision = harness.driver.history.last_revision;
                let took = catch_up(&pipeline, revision, RECOVERY_LIMIT, "a fault").await;
                println!("step {index}: caught up with revision {revision} in {took:?}");
            }
        }
    }
    println!(
        "played {} steps in {:?}; {} writes retried",
        plan.steps.len(),
        started.elapsed(),
        harness.driver.history.retried
    );

    check::settle_and_check(&pipeline, &mut harness.driver, check::Checks::Everything).await;
    pipeline.stop().await;
}

impl Harness {
    fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("proxy faults are planned for a single server only")
    }

    async fn inject(&mut self, fault: &Fault, pipeline: &Pipeline) {
        match fault {
            Fault::Kill { down } => {
                self.server.kill();
                tokio::time::sleep(*down).await;
                self.server.restart().await;
            }
            Fault::Freeze { frozen } => {
                self.server.stop_process();
                tokio::time::sleep(*frozen).await;
                self.server.continue_process();
            }
            Fault::Cut { down, writes } => {
                let until = Instant::now() + *down;
                self.proxy().cut();
                self.driver.write_all(writes).await;
                tokio::time::sleep_until(until).await;
                self.proxy().restore();
            }
            Fault::CompactWhileCut {
                writes,
                compact_after,
                again_after,
            } => {
                self.proxy().cut();
                let (before, after) = writes.split_at(*compact_after);
                self.driver.write_all(before).await;
                let revision = self.driver.revision().await;
                self.driver.write_all(after).await;
                self.server.compact(revision).await;
                self.proxy().restore();
                if let Some(delay) = again_after {
                    tokio::time::sleep(*delay).await;
                    let revision = self.driver.revision().await;
                    self.server.compact(revision).await;
                }
            }
            Fault::Truncate { write } => {
                let truncated = self.proxy().truncated();
                self.proxy().truncate_next_response(LARGE_VALUE_BYTES);
                self.driver.write(write).await;
                let deadline = Instant::now() + TRUNCATE_WAIT;
                while self.proxy().truncated() == truncated && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Disarm, so a truncation that did not happen now cannot strike later.
                self.proxy().truncate_next_response(0);
            }
            Fault::CompactLive => {
                let revision = self.driver.revision().await;
                self.server.compact(revision).await;
            }
            Fault::Backlog { writes } => {
                self.proxy().pause_responses();
                self.driver.write_all(writes).await;
                let revision = self.driver.revision().await;
                self.server.compact(revision).await;
                self.proxy().resume_responses();
            }
            Fault::KillLeader { down, writes } => {
                let leader = self.server.leader().await;
                let until = Instant::now() + *down;
                self.server.kill_member(leader);
                let what = format!("member {leader}, the leader, was killed");
                self.fail_over(pipeline, leader, writes, &what).await;
                tokio::time::sleep_until(until).await;
                self.server.restart_member(leader).await;
            }
            Fault::KillWatchMember { down, writes } => {
                let member = self.watch_member().await;
                let until = Instant::now() + *down;
                self.server.kill_member(member);
                let what = format!("member {member}, which served the watch, was killed");
                self.fail_over(pipeline, member, writes, &what).await;
                tokio::time::sleep_until(until).await;
                self.server.restart_member(member).await;
            }
            Fault::FreezeWatchMember { frozen, writes } => {
                let member = self.watch_member().await;
                let until = Instant::now() + *frozen;
                self.server.stop_member(member);
                let what = format!("member {member}, which served the watch, was frozen");
                self.fail_over(pipeline, member, writes, &what).await;
                tokio::time::sleep_until(until).await;
                self.server.continue_member(member);
            }
        }
    }

    /// Sends `writes` to the members other than `member` and waits until the cache has them.
    async fn fail_over(
        &mut self,
        pipeline: &Pipeline,
        member: usize,
        writes: &[super::plan::Write],
        what: &str,
    ) {
        self.driver.avoid(Some(self.server.member_endpoint(member)));
        self.driver.write_all(writes).await;
        let revision = self.driver.history.last_revision;
        let took = catch_up(pipeline, revision, FAILOVER_LIMIT, what).await;
        println!("{what}; the cache caught up with revision {revision} in {took:?}");
        self.driver.avoid(None);
    }

    /// Returns the member with the most open watchers: the one serving the source's watch,
    /// since nothing else watches.
    async fn watch_member(&self) -> usize {
        let deadline = Instant::now() + WATCH_MEMBER_WAIT;
        loop {
            let mut best: Option<(usize, u64)> = None;
            for member in 0..self.server.member_count() {
                if !self.server.is_running(member) {
                    continue;
                }
                let Some(watchers) = self.server.watchers(member).await else {
                    continue;
                };
                if watchers > 0 && best.is_none_or(|(_, most)| watchers > most) {
                    best = Some((member, watchers));
                }
            }
            if let Some((member, _)) = best {
                return member;
            }
            assert!(
                Instant::now() < deadline,
                "no cluster member served a watch for {WATCH_MEMBER_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until the pipeline is ready and its cache reflects `revision`, and returns how long
/// that took.
///
/// # Panics
/// If that takes longer than `limit`.
async fn catch_up(pipeline: &Pipeline, revision: i64, limit: Duration, after: &str) -> Duration {
    let started = Instant::now();
    while !(pipeline.health.ready() && pipeline.store.revision() >= revision) {
        assert!(
            started.elapsed() < limit,
            "the cache did not catch up with revision {revision} within {limit:?} after {after}: \
             cache at revision {}; {}",
            pipeline.store.revision(),
            pipeline.summary()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Returns the source's config: short timeouts for fast timing, the defaults otherwise.
fn etcd_config(plan: &Plan, endpoints: Vec<String>) -> EtcdConfig {
    let mut config = EtcdConfig::new(endpoints, PREFIX);
    config.page_size = plan.page_size;
    if plan.timing == Timing::Fast {
        config.connect_timeout = Duration::from_secs(2);
        config.request_timeout = Duration::from_secs(5);
        config.keep_alive_interval = Duration::from_secs(5);
        config.keep_alive_timeout = Duration::from_secs(2);
        config.progress_interval = Duration::from_secs(1);
    }
    config
}

/// Returns the reflector's config: a backoff capped at 2 s for fast timing, the defaults
/// otherwise.
fn reflector_config(plan: &Plan) -> ReflectorConfig {
    match plan.timing {
        Timing::Defaults => ReflectorConfig::default(),
        Timing::Fast => ReflectorConfig {
            page_size: plan.page_size,
            request_timeout: Duration::from_secs(5),
            out_of_sync_after: Duration::from_secs(2),
            backoff: BackoffConfig {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
                reset_after: Duration::from_secs(10),
                ..BackoffConfig::default()
            },
            ..ReflectorConfig::default()
        },
    }
}
