//! Fault injection: a frozen server, cut watch streams, slow responses and failing calls.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::store::Shared;
use crate::source::{ErrorClass, SourceError};

/// The handle that injects faults into the lists and watches of one [`MemoryStore`].
///
/// Faults act like a network between the store and every [`MemorySource`] reading it: writes
/// to the store always succeed at once, while lists and watches see the faults. Clones share the
/// same faults. All waiting uses tokio time, so a paused test clock drives delays
/// deterministically.
///
/// [`MemoryStore`]: super::MemoryStore
/// [`MemorySource`]: super::MemorySource
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Faults")
            .field(&self.shared.lock().faults)
            .finish()
    }
}

/// The kind of call an injected failure hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Call {
    List,
    Watch,
}

impl Call {
    fn noun(self) -> &'static str {
        match self {
            Call::List => "list",
            Call::Watch => "watch",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Call::List => "Faults::fail_next_lists",
            Call::Watch => "Faults::fail_next_watches",
        }
    }
}

/// The injected failures of one kind of call, in the order they will be returned, as runs of
/// `(count, class)`.
#[derive(Debug, Default)]
struct FailureQueue {
    runs: VecDeque<(usize, ErrorClass)>,
}

impl FailureQueue {
    fn push(&mut self, count: usize, class: ErrorClass) {
        if count > 0 {
            self.runs.push_back((count, class));
        }
    }

    fn take(&mut self) -> Option<ErrorClass> {
        let (count, class) = self.runs.front_mut()?;
        let class = *class;
        *count -= 1;
        if *count == 0 {
            self.runs.pop_front();
        }
        Some(class)
    }
}

/// The faults in force, kept in the store's state so one lock covers data and faults.
#[derive(Debug, Default)]
pub(super) struct FaultState {
    /// While set, lists and watch opens wait and open watches deliver nothing.
    pub(super) frozen: bool,
    /// How long each list page and each watch message waits before it is returned.
    pub(super) delay: Duration,
    /// Bumped by every [`Faults::drop_watches`]. A watch opened under an older epoch ends.
    pub(super) cut_epoch: u64,
    lists: FailureQueue,
    watches: FailureQueue,
}

impl FaultState {
    /// Takes the next injected failure for `call`, if any.
    pub(super) fn take_failure(&mut self, call: Call) -> Option<ErrorClass> {
        match call {
            Call::List => self.lists.take(),
            Call::Watch => self.watches.take(),
        }
    }
}

/// Builds the error that an injected failure of `class` returns from `call`.
pub(super) fn injected_error(source_name: &Arc<str>, call: Call, class: ErrorClass) -> SourceError {
    let source_name = source_name.clone();
    let noun = call.noun();
    match class {
        ErrorClass::Expired => SourceError::Expired {
            source_name,
            detail: format!("injected fault: the {noun}'s revision expired"),
        },
        ErrorClass::Transient => SourceError::Transient {
            source_name,
            detail: format!("{noun} failed: injected transient fault"),
            cause: None,
        },
        ErrorClass::Permanent => SourceError::Permanent {
            source_name,
            detail: format!("{noun} rejected: injected permanent fault"),
            action: format!(
                "A test injected it with {}; nothing outside the test needs fixing",
                call.method()
            ),
            cause: None,
        },
    }
}

impl Faults {
    pub(super) fn new(shared: Arc<Shared>) -> Faults {
        Faults { shared }
    }

    /// Ends every open watch stream with an [`ErrorClass::Transient`] error, "watch stream cut",
    /// as a broken connection would. The reflector then resumes from its last applied revision.
    ///
    /// Watches opened afterwards are not affected. A frozen watch is cut too, because a broken
    /// connection is noticed even while the server is silent.
    pub fn drop_watches(&self) {
        let open = {
            let mut state = self.shared.lock();
            state.faults.cut_epoch += 1;
            state.open_watches
        };
        tracing::info!(open_watches = open, "memory store fault: watch streams cut");
        self.shared.notify();
    }

    /// Makes the store look like a server that stopped responding.
    ///
    /// While frozen, lists and watch opens wait, and open watches deliver nothing: no batch and
    /// no progress message. Writes to the store still succeed and go into the history, and
    /// watches deliver them in order after [`Faults::unfreeze`]. This is also how a network
    /// partition between the reader and a live server looks.
    pub fn freeze(&self) {
        self.shared.lock().faults.frozen = true;
        tracing::info!("memory store fault: frozen");
        self.shared.notify();
    }

    /// Ends a [`Faults::freeze`]: waiting calls go on and watches deliver what they missed.
    pub fn unfreeze(&self) {
        self.shared.lock().faults.frozen = false;
        tracing::info!("memory store fault: unfrozen");
        self.shared.notify();
    }

    /// Returns whether the store is frozen.
    pub fn is_frozen(&self) -> bool {
        self.shared.lock().faults.frozen
    }

    /// Delays each list page and each watch message (batch or progress) by `delay`, from the
    /// next call or message on. [`Duration::ZERO`] (the default) turns the delay off.
    ///
    /// A list page shows the state at the start of its delay, and a watch message is read from
    /// the history before its delay, as a response in flight would be.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().faults.delay = delay;
        tracing::info!(
            delay_ms = delay.as_millis(),
            "memory store fault: delay set"
        );
    }

    /// Makes the next `count` calls of [`Source::list_page`](crate::source::Source::list_page)
    /// fail with an error of `class`. Each page is one call.
    ///
    /// Calls queue up: failing 1 list as transient and then 1 as permanent fails the next list
    /// as transient and the one after it as permanent.
    pub fn fail_next_lists(&self, count: usize, class: ErrorClass) {
        self.shared.lock().faults.lists.push(count, class);
        tracing::info!(count, ?class, "memory store fault: failing lists");
    }

    /// Makes the next `count` calls of [`Source::watch`](crate::source::Source::watch) fail with
    /// an error of `class` before the watch opens. Calls queue up as in
    /// [`Faults::fail_next_lists`].
    pub fn fail_next_watches(&self, count: usize, class: ErrorClass) {
        self.shared.lock().faults.watches.push(count, class);
        tracing::info!(count, ?class, "memory store fault: failing watches");
    }

    /// Removes every fault in force: unfreezes, turns the delay off and drops the injected
    /// failures not yet returned. Watches cut earlier stay ended.
    pub fn clear(&self) {
        {
            let mut state = self.shared.lock();
            let cut_epoch = state.faults.cut_epoch;
            state.faults = FaultState {
                cut_epoch,
                ..FaultState::default()
            };
        }
        tracing::info!("memory store faults cleared");
        self.shared.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_queue_order() {
        let mut queue = FailureQueue::default();
        queue.push(2, ErrorClass::Transient);
        queue.push(0, ErrorClass::Expired);
        queue.push(1, ErrorClass::Permanent);

        assert_eq!(queue.take(), Some(ErrorClass::Transient));
        assert_eq!(queue.take(), Some(ErrorClass::Transient));
        assert_eq!(queue.take(), Some(ErrorClass::Permanent));
        assert_eq!(queue.take(), None);
    }

    #[test]
    fn injected_error_classes() {
        let name: Arc<str> = "memory prefix \"/app/\"".into();
        for class in [
            ErrorClass::Expired,
            ErrorClass::Transient,
            ErrorClass::Permanent,
        ] {
            let error = injected_error(&name, Call::List, class);
            assert_eq!(error.class(), class);
            assert!(error.to_string().starts_with(name.as_ref()), "{error}");
        }
    }
}
