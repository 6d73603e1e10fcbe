//! A recorder for Kubernetes Events (`events.k8s.io/v1`).
//!
//! Events tell a person running `kubectl describe` what the controller did to an object and
//! why. The recorder writes one Event per distinct (object, type, reason, action, note) and,
//! when the same one repeats, updates its `series` (count and last observed time) instead of
//! creating another object, as kube-apiserver's own components do. It remembers at most
//! [`MAX_TRACKED`] distinct Events; the oldest is forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use parking_lot::Mutex;
use serde_json::json;
use tracing::debug;

/// The maximum number of distinct Events a recorder remembers for series updates.
pub const MAX_TRACKED: usize = 1024;

/// Whether an Event reports normal operation or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Normal operation.
    Normal,
    /// Something a person may need to look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event to record.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventSpec {
    /// Normal or Warning.
    pub type_: EventType,
    /// A short CamelCase reason, such as `Synced` or `CleanupFailed`.
    pub reason: String,
    /// The controller's action, such as `Reconcile` or `Delete`.
    pub action: String,
    /// A human-readable note, at most 1 KiB.
    pub note: Option<String>,
}

/// Writes Events as one controller instance.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    controller: String,
    instance: String,
    /// Recently written Events by identity, with their name, namespace and count.
    recent: Arc<Mutex<Recent>>,
}

#[derive(Default)]
struct Recent {
    by_identity: HashMap<Identity, Written>,
    order: VecDeque<Identity>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity {
    regarding: String,
    spec: EventSpec,
}

#[derive(Clone)]
struct Written {
    name: String,
    namespace: String,
    count: i32,
}

impl EventRecorder {
    /// Creates a recorder that reports as `controller` (for example `example.com/configset`)
    /// and `instance` (usually the pod name).
    pub fn new(
        client: kube::Client,
        controller: impl Into<String>,
        instance: impl Into<String>,
    ) -> Self {
        EventRecorder {
            client,
            controller: controller.into(),
            instance: instance.into(),
            recent: Arc::default(),
        }
    }

    /// Records `spec` about the object `regarding`.
    ///
    /// # Errors
    /// The API error when the Event cannot be written. Events are informational, so callers
    /// usually log the error and go on.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        spec: EventSpec,
    ) -> Result<(), kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let identity = Identity {
            regarding: format!(
                "{}/{}/{}",
                regarding.kind.as_deref().unwrap_or_default(),
                namespace,
                regarding
                    .uid
                    .as_deref()
                    .or(regarding.name.as_deref())
                    .unwrap_or_default()
            ),
            spec: spec.clone(),
        };
        let now = MicroTime(Timestamp::now());

        let repeat = self.recent.lock().by_identity.get(&identity).cloned();
        if let Some(written) = repeat {
            let count = written.count + 1;
            let patch = json!({
                "series": { "count": count, "lastObservedTime": now },
            });
            let result = Api::<Event>::namespaced(self.client.clone(), &written.namespace)
                .patch(&written.name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
            match result {
                Ok(_) => {
                    if let Some(entry) = self.recent.lock().by_identity.get_mut(&identity) {
                        entry.count = count;
                    }
                    return Ok(());
                }
                // The Event expired or was deleted: write a new one.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    debug!(event = %written.name, "event to update is gone; writing a new one");
                }
                Err(error) => return Err(error),
            }
        }

        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or("object"),
            now.0.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            action: Some(spec.action.clone()),
            reason: Some(spec.reason.clone()),
            note: spec.note.clone().map(|note| truncate(note, 1024)),
            type_: Some(spec.type_.as_str().to_owned()),
            event_time: Some(now.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            series: None::<EventSeries>,
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;

        let mut recent = self.recent.lock();
        if recent.order.len() >= MAX_TRACKED
            && let Some(oldest) = recent.order.pop_front()
        {
            recent.by_identity.remove(&oldest);
        }
        recent.order.push_back(identity.clone());
        recent.by_identity.insert(
            identity,
            Written {
                name,
                namespace,
                count: 1,
            },
        );
        Ok(())
    }
}

/// Shortens `text` to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Returns an [`ObjectReference`] to `object`, for [`EventRecorder::publish`].
pub fn reference<K: kube::Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    object.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo".to_owned(), 2), "h");
        assert_eq!(truncate("abc".to_owned(), 10), "abc");
    }
}
