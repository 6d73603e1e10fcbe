//! Watches on secondary resources, mapped to the keys of the primary resource.
//!
//! A controller reconciles primary objects (say `ConfigSet`) but must also react when the
//! objects it creates (its `ConfigMap`s) change. Register one of these handlers on the secondary
//! resource's store: each event is mapped to primary keys, which go on the primary workqueue.

use std::sync::Arc;

use kube::Resource;

use crate::notify::{Event, Handler};
use crate::workqueue::WorkQueue;

/// Returns a handler that maps each event to zero or more keys with `map` and queues them.
///
/// The event's newest value is mapped. For an update, the old value's keys are queued too, so a
/// primary that lost a secondary is reconciled.
pub fn map_keys<T, F>(queue: WorkQueue<Arc<str>>, map: F) -> impl Handler<T>
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Vec<Arc<str>> + Send + 'static,
{
    move |event: Event<T>| {
        if let Event::Updated { old, .. } = &event {
            for key in map(&old.value) {
                queue.add(key);
            }
        }
        for key in map(&event.object().value) {
            queue.add(key);
        }
    }
}

/// Returns the keys (`namespace/name`, or `name` when cluster-scoped) of the owners of `object`
/// whose kind and API version are those of `P`.
///
/// Owner references never cross namespaces, so a namespaced owner lives in the object's
/// namespace.
pub fn owner_keys<P, T>(object: &T) -> Vec<Arc<str>>
where
    P: Resource<DynamicType = ()>,
    T: Resource,
{
    let kind = P::kind(&());
    let api_version = P::api_version(&());
    let namespace = object.meta().namespace.as_deref();
    let cluster_scoped = !P::url_path(&(), Some("n")).contains("/namespaces/n/");
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| owner.kind == kind && owner.api_version == api_version)
        .map(|owner| match namespace {
            Some(namespace) if !cluster_scoped => Arc::from(format!("{namespace}/{}", owner.name)),
            _ => Arc::from(owner.name.as_str()),
        })
        .collect()
}

/// Returns a handler that queues the owners of type `P` of each secondary object: the "owns"
/// relation of controller-runtime.
pub fn enqueue_owners<P, T>(queue: WorkQueue<Arc<str>>) -> impl Handler<T>
where
    P: Resource<DynamicType = ()> + 'static,
    T: Resource + Send + Sync + 'static,
{
    map_keys(queue, owner_keys::<P, T>)
}

/// Returns the cache key of a Kubernetes object: `namespace/name`, or `name` when it has no
/// namespace.
pub fn object_key<T: Resource>(object: &T) -> Arc<str> {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => Arc::from(format!("{namespace}/{name}")),
        _ => Arc::from(name),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn owned_by(references: Vec<OwnerReference>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("child".into()),
                namespace: Some("team-a".into()),
                owner_references: Some(references),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn reference(kind: &str, api_version: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn owner_keys_match_kind_and_version() {
        let object = owned_by(vec![
            reference("Deployment", "apps/v1", "web"),
            reference("Deployment", "apps/v1beta1", "old"),
            reference("StatefulSet", "apps/v1", "db"),
        ]);
        let keys = owner_keys::<Deployment, _>(&object);
        assert_eq!(keys, vec![Arc::<str>::from("team-a/web")]);
    }

    #[test]
    fn object_key_uses_namespace() {
        let object = owned_by(vec![]);
        assert_eq!(&*object_key(&object), "team-a/child");
    }
}
