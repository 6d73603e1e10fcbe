//! Readiness of a reflector, published through a `tokio::sync::watch` channel.

use std::sync::Arc;

use tokio::sync::watch;

use crate::source::{ErrorClass, Revision};

/// The reflector's current activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading a full snapshot.
    Listing,
    /// Opening a watch or streaming changes.
    Watching,
    /// Waiting before the next attempt.
    BackingOff,
    /// Stopped by shutdown.
    Stopped,
}

/// The last error a reflector met.
#[derive(Clone, Debug)]
pub struct LastError {
    /// The error's class, which decided how it was handled.
    pub class: ErrorClass,
    /// The error's message, naming the source.
    pub message: Arc<str>,
}

/// A reflector's readiness.
#[derive(Clone, Debug)]
pub struct Health {
    /// The first full list has been applied. Stays true once set.
    pub synced: bool,
    /// Live: false while a relist is pending, after a permanent error, or while the watch has
    /// been down longer than [`super::ReflectorConfig::out_of_sync_after`]. For a source that
    /// promises progress messages, silence counts as down from the last message received.
    pub in_sync: bool,
    /// The reflector's current activity.
    pub phase: Phase,
    /// The revision the cache reflects.
    pub revision: Revision,
    /// The last error, cleared by the next successful list or watch message.
    pub last_error: Option<LastError>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            synced: false,
            in_sync: false,
            phase: Phase::Listing,
            revision: 0,
            last_error: None,
            consecutive_failures: 0,
        }
    }
}

impl Health {
    /// Returns true when the cache is synced and in sync: what a readiness probe reports.
    pub fn ready(&self) -> bool {
        self.synced && self.in_sync
    }
}

/// A read handle on a reflector's [`Health`].
#[derive(Clone, Debug)]
pub struct HealthWatch {
    pub(crate) receiver: watch::Receiver<Health>,
}

impl HealthWatch {
    /// Returns the current health.
    pub fn get(&self) -> Health {
        self.receiver.borrow().clone()
    }

    /// Returns true when the reflector is ready (see [`Health::ready`]).
    pub fn ready(&self) -> bool {
        self.receiver.borrow().ready()
    }

    /// Waits until `predicate` returns true and returns the health that satisfied it. Returns `None`
    /// when the reflector was dropped first.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing.
    pub async fn wait_for(&self, predicate: impl FnMut(&Health) -> bool) -> Option<Health> {
        let mut receiver = self.receiver.clone();
        receiver
            .wait_for(predicate)
            .await
            .ok()
            .map(|health| health.clone())
    }

    /// Waits until the first full list has been applied.
    pub async fn wait_synced(&self) -> Option<Health> {
        self.wait_for(|health| health.synced).await
    }

    /// Waits until the reflector is ready.
    pub async fn wait_ready(&self) -> Option<Health> {
        self.wait_for(Health::ready).await
    }

    /// Waits for the next change of health.
    ///
    /// # Errors
    /// Returns an error when the reflector was dropped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.receiver.changed().await
    }
}
