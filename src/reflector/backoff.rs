//! Capped, jittered exponential backoff, one per source.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;

/// Backoff settings of one reflector.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay. Permanent errors are retried at this delay.
    pub max: Duration,
    /// The factor between two delays.
    pub factor: f32,
    /// Each delay is shortened by a random fraction of up to this much (0.2 = up to 20 %), so
    /// sources that failed together do not retry together.
    pub jitter: f64,
    /// A watch that stayed up this long resets the backoff when it ends.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    /// 800 ms doubling to 30 s: after a server restart, about 6 attempts in the first 25 s,
    /// then one attempt per source every 24 to 30 s while the server stays down.
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(800),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The delays of one source. Not shared between sources, so one failing source never slows
/// another.
pub(crate) struct Backoff {
    config: BackoffConfig,
    delays: ExponentialBackoff,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        let delays = Self::delays(&config);
        Backoff {
            config,
            delays,
            attempt: 0,
        }
    }

    fn delays(config: &BackoffConfig) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(config.initial)
            .with_max_delay(config.max)
            .with_factor(config.factor)
            .without_max_times()
            .build()
    }

    /// Returns the next delay, with jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempt += 1;
        let delay = self.delays.next().unwrap_or(self.config.max);
        self.jittered(delay.min(self.config.max))
    }

    /// Returns the delay for a permanent error: the cap, with jitter.
    pub(crate) fn permanent_delay(&mut self) -> Duration {
        self.attempt += 1;
        self.jittered(self.config.max)
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.config.jitter <= 0.0 {
            return delay;
        }
        let cut = rand::rng().random_range(0.0..self.config.jitter.min(1.0));
        delay.mul_f64(1.0 - cut)
    }

    /// Returns the number of delays handed out since the last reset.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts again from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.delays = Self::delays(&self.config);
        self.attempt = 0;
    }

    /// Resets when a connection that started at `since` has been stable long enough.
    pub(crate) fn reset_if_stable(&mut self, since: Instant) {
        if since.elapsed() >= self.config.reset_after {
            self.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_cap() {
        let mut backoff = Backoff::new(BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        });
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        for _ in 0..100 {
            let delay = backoff.next_delay();
            assert!(delay <= Duration::from_secs(30), "{delay:?}");
            assert!(delay >= Duration::from_millis(640), "{delay:?}");
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(BackoffConfig {
            jitter: 0.0,
            ..BackoffConfig::default()
        });
        backoff.next_delay();
        backoff.next_delay();
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(800));
        assert_eq!(backoff.attempt(), 1);
    }
}
