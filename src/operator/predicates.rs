//! Predicates: filters that decide which updates reach a handler.
//!
//! A predicate only filters [`Event::Updated`]. Adds, deletes and resyncs always pass, because
//! dropping them would leave a controller blind to objects it must act on.
//!
//! ```
//! use informer::operator::predicates::{self, Predicate};
//! # use k8s_openapi::api::core::v1::ConfigMap;
//! let interesting = predicates::generation_changed().or(predicates::labels_changed());
//! # let _ = |e: &informer::notify::Event<ConfigMap>| interesting.allows(e);
//! ```

use std::collections::BTreeMap;

use kube::Resource;

use crate::notify::{Event, Handler};

/// Decides whether an update matters.
pub trait Predicate<T>: Send + Sync + 'static {
    /// Returns true when the change from `old` to `new` should reach the handler.
    fn update_matters(&self, old: &T, new: &T) -> bool;

    /// Returns true when `event` should reach the handler.
    fn allows(&self, event: &Event<T>) -> bool {
        match event {
            Event::Updated { old, new } => self.update_matters(&old.value, &new.value),
            _ => true,
        }
    }

    /// Returns a predicate that holds when both hold.
    fn and<P: Predicate<T>>(self, other: P) -> And<Self, P>
    where
        Self: Sized,
    {
        And(self, other)
    }

    /// Returns a predicate that holds when either holds.
    fn or<P: Predicate<T>>(self, other: P) -> Or<Self, P>
    where
        Self: Sized,
    {
        Or(self, other)
    }

    /// Returns a predicate that holds when this one does not.
    fn not(self) -> Not<Self>
    where
        Self: Sized,
    {
        Not(self)
    }
}

/// A predicate from a function of the old and new values.
pub struct FnPredicate<F>(pub F);

impl<T, F> Predicate<T> for FnPredicate<F>
where
    F: Fn(&T, &T) -> bool + Send + Sync + 'static,
{
    fn update_matters(&self, old: &T, new: &T) -> bool {
        (self.0)(old, new)
    }
}

/// Both predicates hold.
pub struct And<A, B>(A, B);

impl<T, A: Predicate<T>, B: Predicate<T>> Predicate<T> for And<A, B> {
    fn update_matters(&self, old: &T, new: &T) -> bool {
        self.0.update_matters(old, new) && self.1.update_matters(old, new)
    }
}

/// Either predicate holds.
pub struct Or<A, B>(A, B);

impl<T, A: Predicate<T>, B: Predicate<T>> Predicate<T> for Or<A, B> {
    fn update_matters(&self, old: &T, new: &T) -> bool {
        self.0.update_matters(old, new) || self.1.update_matters(old, new)
    }
}

/// The predicate does not hold.
pub struct Not<A>(A);

impl<T, A: Predicate<T>> Predicate<T> for Not<A> {
    fn update_matters(&self, old: &T, new: &T) -> bool {
        !self.0.update_matters(old, new)
    }
}

/// `metadata.generation` changed: the spec changed, not only the status or metadata. Objects
/// without a generation (ConfigMaps, for example) always pass.
pub fn generation_changed<T: Resource + 'static>() -> impl Predicate<T> {
    FnPredicate(
        |old: &T, new: &T| match (old.meta().generation, new.meta().generation) {
            (Some(old), Some(new)) => old != new,
            _ => true,
        },
    )
}

/// `metadata.labels` changed.
pub fn labels_changed<T: Resource + 'static>() -> impl Predicate<T> {
    FnPredicate(|old: &T, new: &T| map_of(&old.meta().labels) != map_of(&new.meta().labels))
}

/// `metadata.annotations` changed.
pub fn annotations_changed<T: Resource + 'static>() -> impl Predicate<T> {
    FnPredicate(|old: &T, new: &T| {
        map_of(&old.meta().annotations) != map_of(&new.meta().annotations)
    })
}

/// `metadata.resourceVersion` changed: drops resync-like updates that carry the same version.
pub fn resource_version_changed<T: Resource + 'static>() -> impl Predicate<T> {
    FnPredicate(|old: &T, new: &T| old.meta().resource_version != new.meta().resource_version)
}

fn map_of(map: &Option<BTreeMap<String, String>>) -> Option<&BTreeMap<String, String>> {
    map.as_ref().filter(|map| !map.is_empty())
}

/// Returns a handler that passes to `handler` only the events `predicate` allows.
pub fn filter<T, P, H>(predicate: P, mut handler: H) -> impl Handler<T>
where
    T: Send + Sync + 'static,
    P: Predicate<T>,
    H: Handler<T>,
{
    move |event: Event<T>| {
        if predicate.allows(&event) {
            handler.handle(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::cache::Cached;
    use crate::source::Incarnation;

    fn config_map(generation: Option<i64>, label: &str, annotation: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                generation,
                labels: Some([("app".to_owned(), label.to_owned())].into()),
                annotations: Some([("note".to_owned(), annotation.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn update(old: ConfigMap, new: ConfigMap) -> Event<ConfigMap> {
        let cached = |value| Cached {
            key: Arc::from("ns/c"),
            revision: 1,
            incarnation: Incarnation::Uid(Arc::from("u")),
            value: Arc::new(value),
        };
        Event::Updated {
            old: cached(old),
            new: cached(new),
        }
    }

    #[test]
    fn generation_predicate_skips_status_updates() {
        let predicate = generation_changed::<ConfigMap>();
        assert!(!predicate.allows(&update(
            config_map(Some(1), "a", "x"),
            config_map(Some(1), "b", "y")
        )));
        assert!(predicate.allows(&update(
            config_map(Some(1), "a", "x"),
            config_map(Some(2), "a", "x")
        )));
        assert!(predicate.allows(&update(
            config_map(None, "a", "x"),
            config_map(None, "a", "x")
        )));
    }

    #[test]
    fn combinators_compose() {
        let labels_or_annotations =
            labels_changed::<ConfigMap>().or(annotations_changed::<ConfigMap>());
        let both = labels_changed::<ConfigMap>().and(annotations_changed::<ConfigMap>());
        let labels_only = labels_changed::<ConfigMap>().and(annotations_changed().not());

        let label_change = update(config_map(None, "a", "x"), config_map(None, "b", "x"));
        let annotation_change = update(config_map(None, "a", "x"), config_map(None, "a", "y"));

        assert!(labels_or_annotations.allows(&label_change));
        assert!(labels_or_annotations.allows(&annotation_change));
        assert!(!both.allows(&label_change));
        assert!(labels_only.allows(&label_change));
        assert!(!labels_only.allows(&annotation_change));
    }

    #[test]
    fn adds_and_deletes_always_pass() {
        let cached = Cached {
            key: Arc::from("ns/c"),
            revision: 1,
            incarnation: Incarnation::Uid(Arc::from("u")),
            value: Arc::new(config_map(Some(1), "a", "x")),
        };
        let never = FnPredicate(|_: &ConfigMap, _: &ConfigMap| false);
        assert!(never.allows(&Event::Added(cached.clone())));
        assert!(never.allows(&Event::Deleted(cached.clone())));
        assert!(never.allows(&Event::DeletedFinalStateUnknown(cached)));
    }
}
