//! Rate limiters that decide how long a key waits before it is retried.
//!
//! A [`RateLimiter`] returns a delay for each retry of a key. The limiters compose: the
//! [`default_rate_limiter`] is the [`Max`] of a per-key [`ExponentialBackoff`] and an overall
//! [`TokenBucket`], the same defaults as client-go's `DefaultControllerRateLimiter`
//! (`util/workqueue/default_rate_limiters.go`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A policy that returns how long a key waits before its next retry.
///
/// Each call to [`when`](RateLimiter::when) counts as one retry of the key, so callers call it
/// once per retry. Implementations keep per-key state until [`forget`](RateLimiter::forget), so
/// their memory grows with the number of keys that failed and were not forgotten.
pub trait RateLimiter<K>: Send + Sync {
    /// Records a retry of `key` and returns how long it waits before being queued again.
    fn when(&self, key: &K) -> Duration;

    /// Drops the retry state of `key`, so its next retry starts from the first delay again.
    fn forget(&self, key: &K);

    /// Returns the number of retries of `key` since it was last forgotten.
    fn requeues(&self, key: &K) -> u32;

    /// Returns the number of keys this limiter keeps state for. Limiters without per-key state
    /// return 0.
    fn tracked_keys(&self) -> usize {
        0
    }
}

impl<K, L: RateLimiter<K> + ?Sized> RateLimiter<K> for Arc<L> {
    fn when(&self, key: &K) -> Duration {
        (**self).when(key)
    }

    fn forget(&self, key: &K) {
        (**self).forget(key)
    }

    fn requeues(&self, key: &K) -> u32 {
        (**self).requeues(key)
    }

    fn tracked_keys(&self) -> usize {
        (**self).tracked_keys()
    }
}

impl<K, L: RateLimiter<K> + ?Sized> RateLimiter<K> for Box<L> {
    fn when(&self, key: &K) -> Duration {
        (**self).when(key)
    }

    fn forget(&self, key: &K) {
        (**self).forget(key)
    }

    fn requeues(&self, key: &K) -> u32 {
        (**self).requeues(key)
    }

    fn tracked_keys(&self) -> usize {
        (**self).tracked_keys()
    }
}

/// First delay of [`ExponentialBackoff::default`].
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(5);

/// Maximum delay of [`ExponentialBackoff::default`]. Doubling from 5 ms passes it at the 19th
/// retry, after which a key that keeps failing is retried about once every 17 minutes.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(1000);

/// A per-key exponential backoff: the n-th retry of a key (counting from 0) waits
/// `base × 2ⁿ`, capped at `max`.
///
/// Keys back off independently, and [`forget`](RateLimiter::forget) resets a key to `base`.
pub struct ExponentialBackoff<K> {
    base: Duration,
    max: Duration,
    /// Retries per key since the key was last forgotten. Only keys retried at least once have
    /// an entry.
    failures: Mutex<HashMap<K, u32>>,
}

impl<K> ExponentialBackoff<K> {
    /// Creates a backoff that starts at `base` and doubles up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        ExponentialBackoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> Default for ExponentialBackoff<K> {
    /// Starts at [`DEFAULT_BASE_DELAY`] (5 ms) and doubles up to [`DEFAULT_MAX_DELAY`] (1000 s).
    fn default() -> Self {
        ExponentialBackoff::new(DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY)
    }
}

impl<K> std::fmt::Debug for ExponentialBackoff<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExponentialBackoff")
            .field("base", &self.base)
            .field("max", &self.max)
            .field("tracked_keys", &self.failures.lock().len())
            .finish()
    }
}

/// Returns `base × 2^exponent`, or `max` when that is larger or overflows.
fn doubled(base: Duration, max: Duration, exponent: u32) -> Duration {
    let factor = 2u32.checked_pow(exponent);
    match factor.and_then(|factor| base.checked_mul(factor)) {
        Some(delay) => delay.min(max),
        None => max,
    }
}

impl<K: Eq + Hash + Clone + Send + Sync> RateLimiter<K> for ExponentialBackoff<K> {
    fn when(&self, key: &K) -> Duration {
        let mut failures = self.failures.lock();
        let count = failures.entry(key.clone()).or_insert(0);
        let exponent = *count;
        *count = count.saturating_add(1);
        doubled(self.base, self.max, exponent)
    }

    fn forget(&self, key: &K) {
        self.failures.lock().remove(key);
    }

    fn requeues(&self, key: &K) -> u32 {
        self.failures.lock().get(key).copied().unwrap_or(0)
    }

    fn tracked_keys(&self) -> usize {
        self.failures.lock().len()
    }
}

/// Refill rate of [`TokenBucket::default`], in retries per second.
pub const DEFAULT_BUCKET_RATE: f64 = 10.0;

/// Burst of [`TokenBucket::default`]: after an idle period, this many retries pass at once
/// before the bucket spaces them by `1 / rate`.
pub const DEFAULT_BUCKET_BURST: u32 = 100;

/// An overall token bucket shared by all keys, with reservation semantics: each call takes a
/// token, now or in the future, and returns how long the caller waits for it. A call never
/// fails and never blocks.
///
/// The bucket bounds the retry rate of the whole queue, which matters when many keys fail at
/// once: with the defaults, 100 retries pass at once and further ones are spaced 100 ms apart.
/// It keeps no per-key state, so [`forget`](RateLimiter::forget) does nothing and
/// [`requeues`](RateLimiter::requeues) returns 0.
///
/// The bucket is a GCRA (generic cell rate algorithm) over [`tokio::time::Instant`], which
/// stores one instant: the theoretical arrival time of the next token.
// NOTE: the `governor` crate (0.10) is not used because it has no reservation API: a denied
// `check` takes no cell, so concurrent callers would all be told the same wait. Its default
// clock (quanta, or `std::time::Instant`) is also not tokio's, so the paused test clock would
// not drive it without a custom `Clock` adapter.
pub struct TokenBucket {
    /// Time between two tokens: `1 / rate`.
    interval: Duration,
    /// How far the theoretical arrival time may run ahead of now while calls still pass at
    /// once: `interval × (burst − 1)`.
    tolerance: Duration,
    /// Theoretical arrival time of the next token, or `None` before the first call.
    theoretical_arrival: Mutex<Option<Instant>>,
}

impl TokenBucket {
    /// Creates a bucket that refills `rate` tokens per second and holds up to `burst` tokens.
    ///
    /// # Panics
    ///
    /// Panics when `rate` is not a positive finite number or `burst` is 0.
    pub fn new(rate: f64, burst: u32) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "token bucket rate must be a positive number of tokens per second, got {rate}"
        );
        assert!(burst > 0, "token bucket burst must be at least 1");

        let interval = Duration::from_secs_f64(1.0 / rate);
        TokenBucket {
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            theoretical_arrival: Mutex::new(None),
        }
    }

    /// Takes one token and returns how long the caller waits for it.
    pub fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut theoretical_arrival = self.theoretical_arrival.lock();

        let arrival = theoretical_arrival.map_or(now, |arrival| arrival.max(now));
        let wait = arrival
            .saturating_duration_since(now)
            .saturating_sub(self.tolerance);
        *theoretical_arrival = Some(arrival + self.interval);
        wait
    }
}

impl Default for TokenBucket {
    /// Refills [`DEFAULT_BUCKET_RATE`] (10) tokens per second with a burst of
    /// [`DEFAULT_BUCKET_BURST`] (100).
    fn default() -> Self {
        TokenBucket::new(DEFAULT_BUCKET_RATE, DEFAULT_BUCKET_BURST)
    }
}

impl std::fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket")
            .field("interval", &self.interval)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl<K> RateLimiter<K> for TokenBucket {
    fn when(&self, _key: &K) -> Duration {
        self.reserve()
    }

    fn forget(&self, _key: &K) {}

    fn requeues(&self, _key: &K) -> u32 {
        0
    }
}

/// The maximum of several limiters: every limiter records each retry, and the longest delay
/// wins.
pub struct Max<K> {
    limiters: Vec<Box<dyn RateLimiter<K>>>,
}

impl<K> Max<K> {
    /// Creates a limiter with no parts, which returns a zero delay until parts are added.
    pub fn new() -> Self {
        Max {
            limiters: Vec::new(),
        }
    }

    /// Adds `limiter` as a part.
    pub fn with(mut self, limiter: impl RateLimiter<K> + 'static) -> Self {
        self.limiters.push(Box::new(limiter));
        self
    }
}

impl<K> Default for Max<K> {
    fn default() -> Self {
        Max::new()
    }
}

impl<K> std::fmt::Debug for Max<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Max")
            .field("limiters", &self.limiters.len())
            .finish()
    }
}

impl<K> RateLimiter<K> for Max<K> {
    /// Calls every part, because each part counts the retry, and returns the longest delay.
    fn when(&self, key: &K) -> Duration {
        self.limiters
            .iter()
            .map(|limiter| limiter.when(key))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn forget(&self, key: &K) {
        for limiter in &self.limiters {
            limiter.forget(key);
        }
    }

    /// Returns the highest count of the parts.
    fn requeues(&self, key: &K) -> u32 {
        self.limiters
            .iter()
            .map(|limiter| limiter.requeues(key))
            .max()
            .unwrap_or(0)
    }

    /// Returns the sum over the parts.
    fn tracked_keys(&self) -> usize {
        self.limiters
            .iter()
            .map(|limiter| limiter.tracked_keys())
            .sum()
    }
}

/// Creates the default limiter: the [`Max`] of [`ExponentialBackoff::default`] (5 ms doubling
/// to 1000 s per key) and [`TokenBucket::default`] (10 per second, burst 100, all keys).
pub fn default_rate_limiter<K: Eq + Hash + Clone + Send + Sync + 'static>() -> Max<K> {
    Max::new()
        .with(ExponentialBackoff::<K>::default())
        .with(TokenBucket::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn exponential_doubles_to_cap() {
        let limiter = ExponentialBackoff::<&str>::default();

        let delays: Vec<Duration> = (0..8).map(|_| limiter.when(&"a")).collect();
        let expected = [5, 10, 20, 40, 80, 160, 320, 640].map(ms);
        assert_eq!(delays, expected);

        for _ in 8..18 {
            limiter.when(&"a");
        }
        assert_eq!(
            limiter.when(&"a"),
            DEFAULT_MAX_DELAY,
            "19th retry is capped"
        );
        assert_eq!(limiter.when(&"a"), DEFAULT_MAX_DELAY);
    }

    #[test]
    fn exponential_survives_huge_exponent() {
        let limiter = ExponentialBackoff::<&str>::new(ms(1), Duration::from_secs(3600));
        for _ in 0..100 {
            limiter.when(&"a");
        }
        assert_eq!(limiter.when(&"a"), Duration::from_secs(3600));
    }

    #[test]
    fn exponential_keys_independent() {
        let limiter = ExponentialBackoff::<&str>::default();
        limiter.when(&"a");
        limiter.when(&"a");

        assert_eq!(limiter.when(&"b"), ms(5));
        assert_eq!(limiter.when(&"a"), ms(20));
    }

    #[test]
    fn forget_resets_backoff() {
        let limiter = ExponentialBackoff::<&str>::default();
        limiter.when(&"a");
        limiter.when(&"a");
        assert_eq!(limiter.tracked_keys(), 1);

        limiter.forget(&"a");

        assert_eq!(limiter.tracked_keys(), 0);
        assert_eq!(limiter.requeues(&"a"), 0);
        assert_eq!(limiter.when(&"a"), ms(5));
    }

    #[test]
    fn requeues_counts_retries() {
        let limiter = ExponentialBackoff::<&str>::default();
        assert_eq!(limiter.requeues(&"a"), 0);

        for expected in 1..=3 {
            limiter.when(&"a");
            assert_eq!(limiter.requeues(&"a"), expected);
        }
        assert_eq!(limiter.requeues(&"b"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_burst_then_spacing() {
        let bucket = TokenBucket::default();

        for call in 0..100 {
            assert_eq!(
                bucket.reserve(),
                Duration::ZERO,
                "call {call} is in the burst"
            );
        }
        for extra in 1..=5u64 {
            assert_eq!(
                bucket.reserve(),
                ms(100 * extra),
                "call {} after the burst",
                99 + extra
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_over_time() {
        let bucket = TokenBucket::new(10.0, 2);
        assert_eq!(bucket.reserve(), Duration::ZERO);
        assert_eq!(bucket.reserve(), Duration::ZERO);
        assert_eq!(bucket.reserve(), ms(100));

        tokio::time::advance(Duration::from_secs(10)).await;

        assert_eq!(bucket.reserve(), Duration::ZERO);
        assert_eq!(bucket.reserve(), Duration::ZERO);
        assert_eq!(bucket.reserve(), ms(100));
    }

    #[test]
    #[should_panic(expected = "burst must be at least 1")]
    fn bucket_rejects_zero_burst() {
        TokenBucket::new(10.0, 0);
    }

    #[test]
    #[should_panic(expected = "positive number")]
    fn bucket_rejects_zero_rate() {
        TokenBucket::new(0.0, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn max_takes_longest_delay() {
        let backoff = Arc::new(ExponentialBackoff::<&str>::new(ms(50), ms(1000)));
        let limiter = Max::new()
            .with(backoff.clone())
            .with(TokenBucket::new(1.0, 2));

        // The backoff dominates while the bucket still has tokens.
        assert_eq!(limiter.when(&"a"), ms(50));
        assert_eq!(limiter.when(&"a"), ms(100));
        // The bucket is empty: its 1 s wait beats the backoff's 200 ms.
        assert_eq!(limiter.when(&"a"), ms(1000));
        assert_eq!(limiter.requeues(&"a"), 3);
        assert_eq!(limiter.tracked_keys(), 1);

        limiter.forget(&"a");

        assert_eq!(backoff.requeues(&"a"), 0);
        assert_eq!(limiter.tracked_keys(), 0);
    }

    #[test]
    fn max_without_parts_is_zero() {
        let limiter = Max::<&str>::new();
        assert_eq!(limiter.when(&"a"), Duration::ZERO);
        assert_eq!(limiter.requeues(&"a"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn default_limiter_sequence() {
        let limiter = default_rate_limiter::<&str>();
        assert_eq!(limiter.when(&"a"), ms(5));
        assert_eq!(limiter.when(&"a"), ms(10));
        assert_eq!(limiter.when(&"b"), ms(5));
        assert_eq!(limiter.requeues(&"a"), 2);
    }
}
