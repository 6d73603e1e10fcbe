//! The handling of one reconcile result: a single ordered decision.

use std::time::Duration;

use super::Action;
use crate::workqueue::{QueueKey, WorkQueue};

/// The end of a reconcile: an action, an error or a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The reconciler returned an action.
    Action(Action),
    /// The reconciler returned an error.
    Error,
    /// The reconciler panicked.
    Panic,
}

impl Outcome {
    /// Returns the `result` label of the reconcile metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Action(Action::Done) => "done",
            Outcome::Action(Action::RequeueAfter(_)) => "requeue_after",
            Outcome::Action(Action::Requeue) => "requeue",
            Outcome::Error => "error",
            Outcome::Panic => "panic",
        }
    }
}

/// The queue operation applied to a key after its reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Retry after the rate limiter's delay, counting one retry.
    AddRateLimited,
    /// Reset the backoff and retry after the delay.
    ForgetAndAddAfter(Duration),
    /// Reset the backoff and wait for the next change.
    Forget,
}

/// Decides what happens to a key after its reconcile. The rules apply in this order:
///
/// 1. an error or a panic retries with backoff;
/// 2. [`Action::RequeueAfter`] resets the backoff and retries after the delay;
/// 3. [`Action::Requeue`] retries with backoff;
/// 4. [`Action::Done`] resets the backoff.
pub(crate) fn decide(outcome: Outcome) -> Decision {
    let action = match outcome {
        Outcome::Error | Outcome::Panic => return Decision::AddRateLimited,
        Outcome::Action(action) => action,
    };

    match action {
        Action::RequeueAfter(delay) => Decision::ForgetAndAddAfter(delay),
        Action::Requeue => Decision::AddRateLimited,
        Action::Done => Decision::Forget,
    }
}

/// Applies `decision` to `key`. The caller still calls [`WorkQueue::done`] afterwards, which
/// queues the key if a retry is due now.
pub(crate) fn apply<K: QueueKey>(queue: &WorkQueue<K>, key: &K, decision: Decision) {
    match decision {
        Decision::AddRateLimited => queue.add_rate_limited(key.clone()),
        Decision::ForgetAndAddAfter(delay) => {
            queue.forget(key);
            queue.add_after(key.clone(), delay);
        }
        Decision::Forget => queue.forget(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_per_outcome() {
        let delay = Duration::from_secs(7);
        let cases = [
            (Outcome::Error, Decision::AddRateLimited),
            (Outcome::Panic, Decision::AddRateLimited),
            (
                Outcome::Action(Action::RequeueAfter(delay)),
                Decision::ForgetAndAddAfter(delay),
            ),
            (Outcome::Action(Action::Requeue), Decision::AddRateLimited),
            (Outcome::Action(Action::Done), Decision::Forget),
        ];

        for (outcome, expected) in cases {
            assert_eq!(decide(outcome), expected, "outcome {outcome:?}");
        }
    }

    #[test]
    fn labels_per_outcome() {
        let cases = [
            (Outcome::Action(Action::Done), "done"),
            (
                Outcome::Action(Action::RequeueAfter(Duration::ZERO)),
                "requeue_after",
            ),
            (Outcome::Action(Action::Requeue), "requeue"),
            (Outcome::Error, "error"),
            (Outcome::Panic, "panic"),
        ];

        for (outcome, expected) in cases {
            assert_eq!(outcome.label(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn apply_error_backs_off() {
        let queue = WorkQueue::new("test");
        queue.add("a");
        let key = queue.get().await.unwrap();

        apply(&queue, &key, Decision::AddRateLimited);
        queue.done(&key);

        assert_eq!(queue.requeues(&"a"), 1);
        assert_eq!(queue.stats().delayed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_requeue_after_forgets() {
        let queue = WorkQueue::new("test");
        queue.add_rate_limited("a");
        let key = queue.get().await.unwrap();

        apply(
            &queue,
            &key,
            Decision::ForgetAndAddAfter(Duration::from_secs(60)),
        );
        queue.done(&key);

        assert_eq!(queue.requeues(&"a"), 0);
        assert_eq!(queue.stats().delayed, 1);
        assert_eq!(queue.len(), 0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(queue.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_done_forgets() {
        let queue = WorkQueue::new("test");
        queue.add_rate_limited("a");
        let key = queue.get().await.unwrap();

        apply(&queue, &key, Decision::Forget);
        queue.done(&key);

        assert!(queue.stats().is_clear());
    }
}
