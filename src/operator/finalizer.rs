//! A finalizer helper: run cleanup before Kubernetes deletes an object.
//!
//! [`finalizer`] wraps a reconcile. While the object lives, it makes sure the finalizer is on
//! the object, then runs [`FinalizerEvent::Apply`]. Once the object is being deleted
//! (`metadata.deletionTimestamp` is set) and still carries the finalizer, it runs
//! [`FinalizerEvent::Cleanup`] and removes the finalizer when cleanup succeeds, which lets
//! Kubernetes delete the object.
//!
//! # Concurrent writers
//! Adding and removing use JSON patches that start with a `test` operation on the current
//! finalizer list, so the patch fails with 422 when another writer changed the list since the
//! object was read, instead of overwriting that writer's finalizer. The error is returned, and
//! the controller retries with the key's backoff against the newer cached object.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::info;

use crate::controller::Action;

/// The work requested from the wrapped reconcile.
#[derive(Debug)]
pub enum FinalizerEvent<K> {
    /// The object lives and carries the finalizer: bring the world in line with it.
    Apply(Arc<K>),
    /// The object is being deleted: release what it owns outside Kubernetes. When this returns
    /// `Ok`, the finalizer is removed.
    Cleanup(Arc<K>),
}

/// A failure of the finalizer helper or of the wrapped reconcile.
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError<E: std::error::Error + 'static> {
    /// The wrapped reconcile failed during apply.
    #[error("apply failed: {0}")]
    Apply(#[source] E),
    /// The wrapped reconcile failed during cleanup; the finalizer stays, so the object is not
    /// deleted until cleanup succeeds.
    #[error("cleanup failed; finalizer {finalizer:?} stays on {key}: {source}")]
    Cleanup {
        /// The finalizer.
        finalizer: String,
        /// The object's key.
        key: String,
        /// The reconcile's error.
        #[source]
        source: E,
    },
    /// Adding the finalizer failed, for example because another writer changed the finalizer
    /// list first (HTTP 422 from the `test` operation). Retried with backoff.
    #[error("adding finalizer {finalizer:?} to {key} failed: {source}")]
    Add {
        /// The finalizer.
        finalizer: String,
        /// The object's key.
        key: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Removing the finalizer failed. Retried with backoff; cleanup runs again, so it must be
    /// idempotent.
    #[error("removing finalizer {finalizer:?} from {key} failed: {source}")]
    Remove {
        /// The finalizer.
        finalizer: String,
        /// The object's key.
        key: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The object has no name, so it cannot be patched.
    #[error("the object has no metadata.name")]
    Unnamed,
}

/// Runs `reconcile` under finalizer `name` for `object`. See the module docs.
///
/// # Errors
/// See [`FinalizerError`]: every variant is meant to be retried with the key's backoff.
pub async fn finalizer<K, F, Fut, E>(
    api: &Api<K>,
    name: &str,
    object: Arc<K>,
    reconcile: F,
) -> Result<Action, FinalizerError<E>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: FnOnce(FinalizerEvent<K>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
    E: std::error::Error + 'static,
{
    let key = describe(object.as_ref());
    let present = object.finalizers().iter().any(|f| f == name);
    let deleting = object.meta().deletion_timestamp.is_some();

    match (deleting, present) {
        (false, false) => {
            add(api, name, object.as_ref())
                .await
                .map_err(|source| FinalizerError::Add {
                    finalizer: name.to_owned(),
                    key: key.clone(),
                    source,
                })?;
            info!(key = ?key, finalizer = name, "added finalizer");
            // The patch changes the object, so its watch event queues the key again, and the
            // next reconcile applies with the finalizer in place.
            Ok(Action::Done)
        }
        (false, true) => reconcile(FinalizerEvent::Apply(object))
            .await
            .map_err(FinalizerError::Apply),
        (true, true) => {
            let action = reconcile(FinalizerEvent::Cleanup(object.clone()))
                .await
                .map_err(|source| FinalizerError::Cleanup {
                    finalizer: name.to_owned(),
                    key: key.clone(),
                    source,
                })?;
            remove(api, name, object.as_ref())
                .await
                .map_err(|source| FinalizerError::Remove {
                    finalizer: name.to_owned(),
                    key: key.clone(),
                    source,
                })?;
            info!(key = ?key, finalizer = name, "cleanup done; removed finalizer");
            Ok(action)
        }
        // Being deleted without our finalizer: nothing left for this controller to do.
        (true, false) => Ok(Action::Done),
    }
}

fn describe<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// Adds finalizer `name`, failing if the finalizer list changed since `object` was read.
pub async fn add<K>(api: &Api<K>, name: &str, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let patch = match &object.meta().finalizers {
        None => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [name] },
        ]),
        Some(current) => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": current },
            { "op": "add", "path": "/metadata/finalizers/-", "value": name },
        ]),
    };
    apply_json_patch(api, object, patch).await
}

/// Removes finalizer `name`, failing if the finalizer list changed since `object` was read.
pub async fn remove<K>(api: &Api<K>, name: &str, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == name) else {
        return Ok(());
    };
    let patch = json!([
        { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": name },
        { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
    ]);
    apply_json_patch(api, object, patch).await
}

async fn apply_json_patch<K>(
    api: &Api<K>,
    object: &K,
    patch: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch::<K>(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Json::<K>(patch),
    )
    .await?;
    Ok(())
}
