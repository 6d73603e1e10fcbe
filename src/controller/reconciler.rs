//! The reconciler contract: what a reconcile receives and what it returns.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cached;

/// The state of a key's object in the cache when the reconcile starts.
#[derive(Debug)]
pub enum ObjectState<T> {
    /// The cache contains the object.
    Live(Cached<T>),
    /// The cache does not contain the key: the object was deleted, or the cache has not seen it
    /// yet. The reconciler should treat the object as absent and clean up what it owned.
    Deleted,
}

impl<T> Clone for ObjectState<T> {
    fn clone(&self) -> Self {
        match self {
            ObjectState::Live(cached) => ObjectState::Live(cached.clone()),
            ObjectState::Deleted => ObjectState::Deleted,
        }
    }
}

/// One reconcile request: a key, and its object as the cache has it at the start of the
/// reconcile.
#[derive(Debug)]
pub struct Request<T> {
    /// The key that was queued.
    pub key: Arc<str>,
    /// The object in the cache, looked up when the reconcile starts rather than when the key
    /// was queued, so it is never older than the cache.
    pub object: ObjectState<T>,
    /// The number of rate-limited requeues of this key since it last succeeded: 0 on the first
    /// attempt, 1 after one error or [`Action::Requeue`], and so on.
    pub requeues: u32,
}

impl<T> Request<T> {
    /// Returns the cached object, or `None` when it was deleted.
    pub fn live(&self) -> Option<&Cached<T>> {
        match &self.object {
            ObjectState::Live(cached) => Some(cached),
            ObjectState::Deleted => None,
        }
    }

    /// Returns true when the cache does not contain the key.
    pub fn is_deleted(&self) -> bool {
        matches!(self.object, ObjectState::Deleted)
    }
}

impl<T> Clone for Request<T> {
    fn clone(&self) -> Self {
        Request {
            key: self.key.clone(),
            object: self.object.clone(),
            requeues: self.requeues,
        }
    }
}

/// The next step for a key after a successful reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The key is reconciled: reset its backoff and wait for the next change.
    Done,
    /// Reconcile the key again after this delay, and reset its backoff. Use it for work that
    /// is due at a known time, such as an expiry.
    RequeueAfter(Duration),
    /// Reconcile the key again after its per-key backoff, as for an error, without logging
    /// an error.
    Requeue,
}

/// The user's reconcile logic for objects of type `T` with a context of type `C`.
///
/// A reconcile must be idempotent: the cache is eventually consistent, and the same key may be
/// reconciled again with the same state. Errors are retried with the queue's per-key backoff.
/// A panic is caught and retried the same way.
///
/// Every `Fn(Request<T>, Arc<C>) -> impl Future<Output = Result<Action, E>>` closure or
/// `async fn` is a reconciler, so a struct is only needed to carry state outside the context.
/// A closure needs its parameter types written out, because the compiler infers closure
/// parameters only from a direct `Fn` bound.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use informer::controller::{Action, Reconciler, Request};
///
/// struct Ctx;
///
/// async fn reconcile(request: Request<String>, _ctx: Arc<Ctx>) -> Result<Action, std::io::Error> {
///     match request.live() {
///         Some(object) => println!("{} is {}", request.key, object.value),
///         None => println!("{} was deleted", request.key),
///     }
///     Ok(Action::Done)
/// }
///
/// fn assert_reconciler<R: Reconciler<String, Ctx>>(_: &R) {}
/// assert_reconciler(&reconcile);
/// ```
pub trait Reconciler<T, C>: Send + Sync + 'static {
    /// The reconcile error. Every error is retried with backoff.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reconciles one key.
    fn reconcile(
        &self,
        request: Request<T>,
        ctx: Arc<C>,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;
}

impl<T, C, F, Fut, E> Reconciler<T, C> for F
where
    F: Fn(Request<T>, Arc<C>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    type Error = E;

    fn reconcile(
        &self,
        request: Request<T>,
        ctx: Arc<C>,
    ) -> impl Future<Output = Result<Action, E>> + Send {
        self(request, ctx)
    }
}
