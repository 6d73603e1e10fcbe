//! The ConfigSet operator: copies each ConfigSet's data into ConfigMaps, named like the
//! ConfigSet, in every namespace the ConfigSet lists.
//!
//! # Pipeline
//!
//! ```text
//! ConfigSets (all namespaces) ──► reflector ──► store ──► predicate ─────────────┐
//!                                                         (generation,           │
//!                                                          deletion, finalizers) ▼
//! ConfigMaps (managed-by label) ─► reflector ──► store ──► owner reference ──► workqueue ──► controller
//!                                                  │       owner annotation ──►  (ConfigSet keys)
//!                                                  └── index "owner" ◄── reconcile reads it
//! ```
//!
//! The controller starts once both reflectors have listed, so a reconcile never mistakes a
//! ConfigMap that is not cached yet for a missing one.
//!
//! # Ownership
//! Every ConfigMap the operator writes carries the label `app.kubernetes.io/managed-by:
//! configset-controller`, which the ConfigMap watch selects on, and the annotation
//! `informer.example.com/owner: <namespace>/<name>` of its ConfigSet. The ConfigMap in the
//! ConfigSet's own namespace also has a controller owner reference, so Kubernetes' garbage
//! collector deletes it with the ConfigSet even while the operator is down. Owner references
//! cannot cross namespaces, so the other ConfigMaps are found through the annotation and
//! deleted by the finalizer `informer.example.com/cleanup` before the ConfigSet goes away.
//!
//! A ConfigMap with the right name that belongs to someone else (no owner annotation, or
//! another ConfigSet's) is never overwritten: the ConfigSet reports a `Conflict`.
//!
//! # Writes
//! - ConfigMaps are written with server-side apply (field manager `configset-controller`,
//!   forced) and the `resourceVersion` the operator checked, so a write based on a stale read
//!   fails with 409 and is retried. Data keys that are not in the ConfigSet are then removed
//!   with a merge patch, because apply keeps keys that other writers added.
//! - The `Ready` condition and `observedGeneration` are written through the status
//!   subresource, only when they change. Status writes do not change the generation, so the
//!   predicate keeps them from queueing the ConfigSet again.
//! - Events (`events.k8s.io/v1`) report every created, updated and deleted ConfigMap, conflicts
//!   and missing namespaces. A repeated Event updates its series.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use informer::cache::{Cached, Store};
use informer::controller::{Action, Controller, Request, ShutdownReport, StopCause};
use informer::decode::{Json, Transform, drop_managed_fields};
use informer::metrics::Metrics;
use informer::notify::{HandlerHandle, HandlerOptions, enqueue_keys};
use informer::operator::events::{EventRecorder, EventSpec, EventType, reference};
use informer::operator::finalizer::{FinalizerError, FinalizerEvent, finalizer};
use informer::operator::predicates::{self, FnPredicate, Predicate};
use informer::operator::watches::{enqueue_owners, map_keys};
use informer::reflector::{HealthWatch, Reflector};
use informer::source::kubernetes::{KubernetesConfig, KubernetesSource};
use informer::workqueue::WorkQueue;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The field manager of every write, and the value of the managed-by label.
pub const FIELD_MANAGER: &str = "configset-controller";

/// The `reportingController` of the Events the operator records.
pub const REPORTING_CONTROLLER: &str = "informer.example.com/configset-controller";

/// The label that marks the ConfigMaps the operator manages; its watch selects on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The annotation naming a ConfigMap's ConfigSet as `namespace/name`.
pub const OWNER_ANNOTATION: &str = "informer.example.com/owner";

/// The finalizer that keeps a ConfigSet until its ConfigMaps are deleted.
pub const FINALIZER: &str = "informer.example.com/cleanup";

/// The condition type the operator writes.
pub const READY: &str = "Ready";

/// The ConfigMap store index from owner key (`namespace/name` of a ConfigSet) to ConfigMaps.
const OWNER_INDEX: &str = "owner";

/// The maximum number of namespaces a condition message names; it counts the rest.
const MAX_NAMED: usize = 10;

/// The data to copy and the namespaces that get a copy.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "informer.example.com",
    version = "v1",
    kind = "ConfigSet",
    namespaced,
    status = "ConfigSetStatus",
    derive = "PartialEq",
    shortname = "cfgset",
    doc = "A set of configuration keys copied into a ConfigMap in each listed namespace",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSetSpec {
    /// The keys and values every ConfigMap holds, exactly: keys added to a ConfigMap by hand
    /// are removed.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// The namespaces that get a ConfigMap. The ConfigMap of a namespace removed from this
    /// list is deleted.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// The state the operator last observed and wrote.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSetStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `Ready` condition: `True` when every listed namespace has an up-to-date ConfigMap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl ConfigSet {
    /// Returns the cache and workqueue key: `namespace/name`.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.namespace().unwrap_or_default(),
            self.name_any()
        )
    }

    /// Returns the listed namespaces, without duplicates or empty names.
    pub fn target_namespaces(&self) -> BTreeSet<String> {
        self.spec
            .namespaces
            .iter()
            .filter(|namespace| !namespace.is_empty())
            .cloned()
            .collect()
    }

    /// Returns the condition of type `type_`, if the status has one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|condition| condition.type_ == type_)
    }
}

/// Returns the CRD of [`ConfigSet`] as YAML, with a header saying how it was made. The Helm
/// chart ships this text in `charts/informer-example/crds/`.
///
/// # Errors
/// The serializer's error, which a CRD built by the derive never causes.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&ConfigSet::crd())?;
    Ok(format!(
        "# Generated by `cargo run --example configmap_sync -- --print-crd`. Do not edit.\n{body}"
    ))
}

// ---------------------------------------------------------------------------------------------
// Ownership and desired state

/// Returns the ConfigSet keys a ConfigMap points at: its owner annotation and its ConfigSet
/// owner references. This is the `owner` index of the ConfigMap store.
pub fn owner_keys(config_map: &ConfigMap) -> Vec<String> {
    let mut keys: Vec<String> = config_map
        .annotations()
        .get(OWNER_ANNOTATION)
        .cloned()
        .into_iter()
        .collect();
    let namespace = config_map.namespace().unwrap_or_default();
    for owner in config_map.owner_references() {
        if owner.kind == ConfigSet::kind(&()) && owner.api_version == ConfigSet::api_version(&()) {
            keys.push(format!("{namespace}/{}", owner.name));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Returns the owner key of a ConfigMap whose annotation names a ConfigSet in another
/// namespace. Same-namespace ConfigMaps are mapped through their owner reference instead.
fn cross_namespace_owner(config_map: &ConfigMap) -> Vec<Arc<str>> {
    let namespace = config_map.namespace().unwrap_or_default();
    let Some(owner) = config_map.annotations().get(OWNER_ANNOTATION) else {
        return Vec::new();
    };
    match owner.split_once('/') {
        Some((owner_namespace, _)) if owner_namespace != namespace => {
            vec![Arc::from(owner.as_str())]
        }
        _ => Vec::new(),
    }
}

/// Returns true when `config_map` belongs to `config_set`: its owner annotation names the
/// ConfigSet, or, when someone removed the annotation, an owner reference carries the
/// ConfigSet's uid.
pub fn is_owned_by(config_map: &ConfigMap, config_set: &ConfigSet) -> bool {
    match config_map.annotations().get(OWNER_ANNOTATION) {
        Some(owner) => *owner == config_set.key(),
        None => {
            let uid = config_set.uid();
            config_map
                .owner_references()
                .iter()
                .any(|owner| Some(&owner.uid) == uid.as_ref())
        }
    }
}

/// Returns the ConfigMap `config_set` wants in `namespace`, as an apply configuration.
fn desired_config_map(config_set: &ConfigSet, namespace: &str) -> Value {
    let mut metadata = json!({
        "name": config_set.name_any(),
        "namespace": namespace,
        "labels": { MANAGED_BY_LABEL: FIELD_MANAGER },
        "annotations": { OWNER_ANNOTATION: config_set.key() },
    });
    if config_set.namespace().as_deref() == Some(namespace)
        && let Some(owner) = config_set.controller_owner_ref(&())
    {
        metadata["ownerReferences"] = json!([owner]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": config_set.spec.data,
    })
}

/// Returns true when `config_map` already is what `config_set` wants: the label, the
/// annotation, exactly the data, and in the ConfigSet's namespace the controller reference.
pub fn is_up_to_date(config_map: &ConfigMap, config_set: &ConfigSet) -> bool {
    let labelled = config_map
        .labels()
        .get(MANAGED_BY_LABEL)
        .map(String::as_str)
        == Some(FIELD_MANAGER);
    let annotated = config_map.annotations().get(OWNER_ANNOTATION) == Some(&config_set.key());
    let data = config_map.data.clone().unwrap_or_default() == config_set.spec.data;
    let referenced = config_map.namespace() != config_set.namespace()
        || config_map.owner_references().iter().any(|owner| {
            Some(&owner.uid) == config_set.uid().as_ref() && owner.controller == Some(true)
        });
    labelled && annotated && data && referenced
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A failed API call of a reconcile. Every variant is retried with the key's backoff.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading, writing or deleting a ConfigMap failed.
    #[error("failed to {verb} ConfigMap {namespace}/{name}: {source}")]
    ConfigMap {
        /// `read`, `apply`, `prune keys of` or `delete`.
        verb: &'static str,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading a namespace failed; the operator needs `get` on namespaces.
    #[error(
        "failed to read namespace {namespace}: {source}; check that the operator may get namespaces"
    )]
    Namespace {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("failed to write the status of ConfigSet {key}: {source}")]
    Status {
        /// The ConfigSet's key.
        key: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The finalizer helper or the apply and cleanup it wraps failed.
    #[error(transparent)]
    Finalizer(#[from] FinalizerError<SyncError>),
    /// Deleting the ConfigMaps of a ConfigSet that is gone failed.
    #[error("failed to delete the ConfigMaps of deleted ConfigSet {key}: {source}")]
    Orphans {
        /// The ConfigSet's key.
        key: String,
        /// The first failure.
        #[source]
        source: SyncError,
    },
}

// ---------------------------------------------------------------------------------------------
// Reconcile

/// The result of syncing one namespace.
#[derive(Debug)]
enum Outcome {
    /// The ConfigMap was already up to date.
    InSync,
    /// The ConfigMap was created.
    Created,
    /// The ConfigMap was changed back to what the ConfigSet wants.
    Updated,
    /// The namespace does not exist.
    NamespaceMissing,
    /// The namespace is being deleted.
    NamespaceTerminating,
    /// A write failed with 409 Conflict because the cache was behind the server. The next
    /// reconcile, after the watch catches up, tries again.
    Stale,
    /// A ConfigMap of that name belongs to someone else: another ConfigSet, or no ConfigSet.
    Conflict {
        /// The other owner's key, when it has an owner annotation.
        owner: Option<String>,
    },
    /// An API call failed.
    Failed(SyncError),
}

/// The outcomes of one apply, per namespace, and the ConfigMaps it deleted.
#[derive(Debug, Default)]
struct SyncReport {
    outcomes: BTreeMap<String, Outcome>,
    pruned: Vec<String>,
}

impl SyncReport {
    fn namespaces(&self, matches: impl Fn(&Outcome) -> bool) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|(_, outcome)| matches(outcome))
            .map(|(namespace, _)| namespace.as_str())
            .collect()
    }

    /// Returns the `Ready` condition's status, reason and message for this report.
    fn ready(&self, name: &str) -> (&'static str, &'static str, String) {
        let failed = self.namespaces(|o| matches!(o, Outcome::Failed(_)));
        let conflicts = self.namespaces(|o| matches!(o, Outcome::Conflict { .. }));
        let missing = self.namespaces(|o| matches!(o, Outcome::NamespaceMissing));
        let terminating = self.namespaces(|o| matches!(o, Outcome::NamespaceTerminating));

        let mut problems = Vec::new();
        if let Some(error) = self.outcomes.values().find_map(|outcome| match outcome {
            Outcome::Failed(error) => Some(error),
            _ => None,
        }) {
            problems.push(format!(
                "failed to sync namespaces {}: {error}",
                name_list(&failed)
            ));
        }
        for (namespace, outcome) in &self.outcomes {
            if let Outcome::Conflict { owner } = outcome {
                let owner = match owner {
                    Some(owner) => format!("ConfigSet {owner}"),
                    None => "no ConfigSet".to_owned(),
                };
                problems.push(format!(
                    "ConfigMap {namespace}/{name} belongs to {owner}; delete it or remove {namespace} from spec.namespaces"
                ));
            }
        }
        if !missing.is_empty() {
            problems.push(format!(
                "namespaces not found: {}; create them or remove them from spec.namespaces",
                name_list(&missing)
            ));
        }
        if !terminating.is_empty() {
            problems.push(format!(
                "namespaces being deleted: {}",
                name_list(&terminating)
            ));
        }

        let reason = if !failed.is_empty() {
            "SyncFailed"
        } else if !conflicts.is_empty() {
            "Conflict"
        } else if !missing.is_empty() {
            "NamespaceNotFound"
        } else if !terminating.is_empty() {
            "NamespaceTerminating"
        } else {
            let count = self.outcomes.len();
            return (
                "True",
                "Synced",
                format!("{count} ConfigMaps match the ConfigSet"),
            );
        };
        ("False", reason, problems.join("; "))
    }

    /// Takes the first API failure out of the report.
    fn take_error(&mut self) -> Option<SyncError> {
        let namespace = self
            .outcomes
            .iter()
            .find(|(_, outcome)| matches!(outcome, Outcome::Failed(_)))
            .map(|(namespace, _)| namespace.clone())?;
        match self.outcomes.remove(&namespace) {
            Some(Outcome::Failed(error)) => Some(error),
            _ => None,
        }
    }

    /// Returns true when a write was based on a stale read.
    fn stale(&self) -> bool {
        self.outcomes
            .values()
            .any(|outcome| matches!(outcome, Outcome::Stale))
    }

    /// Returns true when a namespace waits for something the operator does not watch: a
    /// namespace to appear, or another owner's ConfigMap to go.
    fn waits_outside(&self) -> bool {
        self.outcomes.values().any(|outcome| {
            matches!(
                outcome,
                Outcome::NamespaceMissing
                    | Outcome::NamespaceTerminating
                    | Outcome::Conflict { .. }
            )
        })
    }
}

/// Joins namespace names for a message, naming at most [`MAX_NAMED`].
fn name_list(names: &[&str]) -> String {
    let mut text = names
        .iter()
        .take(MAX_NAMED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_NAMED {
        let _ = write!(text, " and {} more", names.len() - MAX_NAMED);
    }
    text
}

/// The state every reconcile shares.
pub struct Context {
    client: kube::Client,
    config_maps: Store<ConfigMap>,
    recorder: EventRecorder,
    retry_after: Duration,
    /// Reconciles started per ConfigSet key, for tests and logs. A key is removed when its
    /// ConfigSet is gone, so the map has one entry per ConfigSet.
    reconciles: Mutex<HashMap<Arc<str>, u64>>,
    /// The last status written per ConfigSet key, so a reconcile that runs before the watch
    /// delivered that write does not write it again. Removed with the key's ConfigSet.
    written: Mutex<HashMap<String, WrittenStatus>>,
}

/// A status the operator wrote, and the resourceVersion the write returned.
#[derive(Clone, Debug, PartialEq)]
struct WrittenStatus {
    resource_version: i64,
    generation: Option<i64>,
    status: &'static str,
    reason: &'static str,
    message: String,
}

/// The result of [`Context::write_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusWrite {
    /// The status was written.
    Written,
    /// The status already contains this condition, or the ConfigSet is gone.
    Unchanged,
    /// The write failed with 409 Conflict because the cached ConfigSet was stale.
    Stale,
}

/// Parses a resourceVersion as the integer kube-apiserver writes.
fn parse_version(object: &impl Resource) -> Option<i64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// Reconciles one ConfigSet key. See the module docs for what it does.
async fn reconcile(
    request: Request<ConfigSet>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let attempt = ctx.count(&request.key);
    debug!(key = %request.key, attempt, requeues = request.requeues, "reconciling ConfigSet");

    let Some(cached) = request.live() else {
        ctx.reconciles.lock().remove(&request.key);
        ctx.written.lock().remove(&*request.key);
        ctx.delete_orphans(&request.key)
            .await
            .map_err(|source| ReconcileError::Orphans {
                key: request.key.to_string(),
                source,
            })?;
        return Ok(Action::Done);
    };

    let config_set = cached.value.clone();
    let namespace = config_set.namespace().unwrap_or_default();
    let api: Api<ConfigSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let ctx = &ctx;
    let action = finalizer(&api, FINALIZER, config_set, |event| async move {
        match event {
            FinalizerEvent::Apply(config_set) => ctx.apply(&config_set).await,
            FinalizerEvent::Cleanup(config_set) => ctx.cleanup(&config_set).await,
        }
    })
    .await?;
    Ok(action)
}

impl Context {
    fn count(&self, key: &Arc<str>) -> u64 {
        let mut reconciles = self.reconciles.lock();
        let count = reconciles.entry(key.clone()).or_insert(0);
        *count += 1;
        *count
    }

    /// Brings every listed namespace's ConfigMap in line, deletes the ConfigMaps of
    /// namespaces no longer listed, and writes the status.
    async fn apply(&self, config_set: &ConfigSet) -> Result<Action, SyncError> {
        let key = config_set.key();
        let wanted = config_set.target_namespaces();
        let mut report = SyncReport::default();
        for namespace in &wanted {
            let outcome = self.sync_namespace(config_set, namespace).await;
            self.record_outcome(config_set, namespace, &outcome).await;
            report.outcomes.insert(namespace.clone(), outcome);
        }

        for cached in self.owned_config_maps(&key) {
            let namespace = cached.value.namespace().unwrap_or_default();
            if wanted.contains(&namespace) || !is_owned_by(&cached.value, config_set) {
                continue;
            }
            match self.delete_config_map(&cached.value).await {
                Ok(true) => {
                    let note = format!(
                        "Deleted ConfigMap {namespace}/{}: namespace {namespace} is no longer listed",
                        cached.value.name_any()
                    );
                    self.publish(config_set, EventType::Normal, "Deleted", "Prune", note)
                        .await;
                    report.pruned.push(namespace);
                }
                Ok(false) => {}
                Err(error) => {
                    report.outcomes.insert(namespace, Outcome::Failed(error));
                }
            }
        }

        if report.stale() {
            // A Ready=False written now would only flap: retry once the watch caught up.
            debug!(key = %key, "a write was based on a stale cache; retrying");
            return Ok(Action::Requeue);
        }
        if self.write_status(config_set, &report).await? == StatusWrite::Stale {
            debug!(key = %key, "the status write was based on a stale cache; retrying");
            return Ok(Action::Requeue);
        }
        if let Some(error) = report.take_error() {
            return Err(error);
        }
        if report.waits_outside() {
            // Namespaces and foreign ConfigMaps are not watched, so look again later.
            return Ok(Action::RequeueAfter(self.retry_after));
        }
        info!(key = %key, namespaces = wanted.len(), pruned = report.pruned.len(), "ConfigSet in sync");
        Ok(Action::Done)
    }

    /// Makes the ConfigMap in `namespace` what `config_set` wants.
    async fn sync_namespace(&self, config_set: &ConfigSet, namespace: &str) -> Outcome {
        let name = config_set.name_any();
        let cached = self
            .config_maps
            .get(&format!("{namespace}/{name}"))
            .map(|cached| cached.value);
        if let Some(live) = &cached
            && is_owned_by(live, config_set)
            && is_up_to_date(live, config_set)
        {
            return Outcome::InSync;
        }

        match self.namespace_phase(namespace).await {
            Ok(None) => return Outcome::NamespaceMissing,
            Ok(Some(phase)) if phase == "Terminating" => return Outcome::NamespaceTerminating,
            Ok(Some(_)) => {}
            Err(error) => return Outcome::Failed(error),
        }

        // The cache contains only labelled ConfigMaps, so read an uncached one from the server:
        // it may be ours with the label removed, someone else's, or absent.
        let live = match cached {
            Some(live) => Some(live),
            None => match self.get_config_map(namespace, &name).await {
                Ok(live) => live.map(Arc::new),
                Err(error) => return Outcome::Failed(error),
            },
        };
        if let Some(live) = &live {
            if !is_owned_by(live, config_set) {
                let owner = live.annotations().get(OWNER_ANNOTATION).cloned();
                return Outcome::Conflict { owner };
            }
            if is_up_to_date(live, config_set) {
                return Outcome::InSync;
            }
        }

        let version = live.as_ref().and_then(|live| live.resource_version());
        match self.apply_config_map(config_set, namespace, version).await {
            Ok(()) if live.is_some() => Outcome::Updated,
            Ok(()) => Outcome::Created,
            Err(SyncError::ConfigMap {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 409 => Outcome::Stale,
            Err(error) => Outcome::Failed(error),
        }
    }

    /// Writes the desired ConfigMap with server-side apply, then removes data keys the
    /// ConfigSet does not have. `version` is the resourceVersion the caller checked, or `None`
    /// when the ConfigMap did not exist.
    async fn apply_config_map(
        &self,
        config_set: &ConfigSet,
        namespace: &str,
        version: Option<String>,
    ) -> Result<(), SyncError> {
        let name = config_set.name_any();
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let failed = |verb, source| SyncError::ConfigMap {
            verb,
            namespace: namespace.to_owned(),
            name: name.clone(),
            source,
        };

        let mut desired = desired_config_map(config_set, namespace);
        if let Some(version) = version {
            // A precondition: the apply fails with 409 if the ConfigMap changed since it was read.
            desired["metadata"]["resourceVersion"] = json!(version);
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api
            .patch(&name, &params, &Patch::Apply(&desired))
            .await
            .map_err(|source| failed("apply", source))?;

        let extra: BTreeMap<&String, Value> = applied
            .data
            .iter()
            .flatten()
            .filter(|(key, _)| !config_set.spec.data.contains_key(*key))
            .map(|(key, _)| (key, Value::Null))
            .collect();
        if !extra.is_empty() {
            debug!(namespace, name = %name, keys = extra.len(), "removing data keys the ConfigSet does not have");
            let patch = json!({
                "metadata": { "resourceVersion": applied.resource_version() },
                "data": extra,
            });
            api.patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| failed("prune keys of", source))?;
        }
        Ok(())
    }

    /// Deletes every ConfigMap of `config_set` before Kubernetes deletes it.
    async fn cleanup(&self, config_set: &ConfigSet) -> Result<Action, SyncError> {
        let key = config_set.key();
        let name = config_set.name_any();
        let mut namespaces = config_set.target_namespaces();
        for cached in self.owned_config_maps(&key) {
            namespaces.insert(cached.value.namespace().unwrap_or_default());
        }

        let mut deleted = 0;
        for namespace in &namespaces {
            // Read from the server: the cache misses ConfigMaps whose label was removed.
            let Some(live) = self.get_config_map(namespace, &name).await? else {
                continue;
            };
            if is_owned_by(&live, config_set) && self.delete_config_map(&live).await? {
                deleted += 1;
            }
        }
        info!(key = %key, deleted, "deleted the ConfigMaps of a ConfigSet being deleted");
        let note = format!("Deleted {deleted} ConfigMaps before the ConfigSet is deleted");
        self.publish(config_set, EventType::Normal, "CleanedUp", "Finalize", note)
            .await;
        Ok(Action::Done)
    }

    /// Deletes the ConfigMaps the cache attributes to `key`, whose ConfigSet is gone. The
    /// finalizer normally did it already; this catches ConfigSets deleted without it.
    async fn delete_orphans(&self, key: &str) -> Result<(), SyncError> {
        for cached in self.owned_config_maps(key) {
            let annotated = cached.value.annotations().get(OWNER_ANNOTATION);
            if annotated.map(String::as_str) == Some(key) {
                warn!(key, config_map = %cached.key, "deleting a ConfigMap whose ConfigSet is gone");
                self.delete_config_map(&cached.value).await?;
            }
        }
        Ok(())
    }

    fn owned_config_maps(&self, key: &str) -> Vec<Cached<ConfigMap>> {
        self.config_maps
            .by_index(OWNER_INDEX, key)
            .expect("the owner index is added before the controller starts")
    }

    /// Returns the namespace's phase, or `None` when it does not exist.
    async fn namespace_phase(&self, namespace: &str) -> Result<Option<String>, SyncError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let found = api
            .get_opt(namespace)
            .await
            .map_err(|source| SyncError::Namespace {
                namespace: namespace.to_owned(),
                source,
            })?;
        Ok(found.map(|namespace| {
            namespace
                .status
                .and_then(|status| status.phase)
                .unwrap_or_else(|| "Active".to_owned())
        }))
    }

    async fn get_config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, SyncError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        api.get_opt(name)
            .await
            .map_err(|source| SyncError::ConfigMap {
                verb: "read",
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source,
            })
    }

    /// Deletes `config_map` if it is still the object that was read (same uid). Returns false
    /// when it was already gone or replaced.
    async fn delete_config_map(&self, config_map: &ConfigMap) -> Result<bool, SyncError> {
        let namespace = config_map.namespace().unwrap_or_default();
        let name = config_map.name_any();
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: config_map.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                info!(namespace = %namespace, name = %name, "deleted ConfigMap");
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(namespace = %namespace, name = %name, "ConfigMap was replaced since it was read; not deleting it");
                Ok(false)
            }
            Err(source) => Err(SyncError::ConfigMap {
                verb: "delete",
                namespace,
                name,
                source,
            }),
        }
    }

    /// Writes `observedGeneration` and the `Ready` condition, unless they are unchanged or are
    /// what the operator wrote last and the cache has not caught up with.
    async fn write_status(
        &self,
        config_set: &ConfigSet,
        report: &SyncReport,
    ) -> Result<StatusWrite, SyncError> {
        let generation = config_set.meta().generation;
        let (status, reason, message) = report.ready(&config_set.name_any());
        let current = config_set.condition(READY);
        let unchanged = current.is_some_and(|condition| {
            condition.status == status
                && condition.reason == reason
                && condition.message == message
                && condition.observed_generation == generation
        });
        let observed = config_set
            .status
            .as_ref()
            .and_then(|status| status.observed_generation);
        if unchanged && observed == generation {
            return Ok(StatusWrite::Unchanged);
        }
        let key = config_set.key();
        let cached_version = parse_version(config_set).unwrap_or(0);
        let repeat = self.written.lock().get(&key).is_some_and(|written| {
            cached_version < written.resource_version
                && written.generation == generation
                && (written.status, written.reason, written.message.as_str())
                    == (status, reason, message.as_str())
        });
        if repeat {
            debug!(key = %key, "the cache has not seen the last status write yet; not writing it again");
            return Ok(StatusWrite::Unchanged);
        }

        let last_transition_time = match current {
            Some(condition) if condition.status == status => condition.last_transition_time.clone(),
            _ => Time(Timestamp::now()),
        };
        let ready = Condition {
            type_: READY.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.clone(),
            observed_generation: generation,
            last_transition_time,
        };
        let ready_message = message;
        let mut conditions: Vec<Condition> = config_set
            .status
            .iter()
            .flat_map(|status| status.conditions.iter())
            .filter(|condition| condition.type_ != READY)
            .cloned()
            .collect();
        conditions.push(ready);

        let api: Api<ConfigSet> = Api::namespaced(
            self.client.clone(),
            &config_set.namespace().unwrap_or_default(),
        );
        // The resourceVersion makes the write fail with 409 if the cached object is stale, so
        // conditions written by others since are not dropped.
        let patch = json!({
            "metadata": { "resourceVersion": config_set.resource_version() },
            "status": { "observedGeneration": generation, "conditions": conditions },
        });
        match api
            .patch_status(
                &config_set.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(updated) => {
                info!(key = %key, status, reason, "wrote the Ready condition");
                let written = WrittenStatus {
                    resource_version: parse_version(&updated).unwrap_or(0),
                    generation,
                    status,
                    reason,
                    message: ready_message,
                };
                self.written.lock().insert(key, written);
                Ok(StatusWrite::Written)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(StatusWrite::Stale),
            // Deleted meanwhile: there is no status left to write.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(StatusWrite::Unchanged),
            Err(source) => Err(SyncError::Status { key, source }),
        }
    }

    /// Records an Event for a namespace whose ConfigMap changed or could not be synced.
    async fn record_outcome(&self, config_set: &ConfigSet, namespace: &str, outcome: &Outcome) {
        let name = config_set.name_any();
        let (type_, reason, note) = match outcome {
            Outcome::InSync | Outcome::Stale | Outcome::Failed(_) => return,
            Outcome::Created => (
                EventType::Normal,
                "Created",
                format!("Created ConfigMap {namespace}/{name}"),
            ),
            Outcome::Updated => (
                EventType::Normal,
                "Updated",
                format!("Updated ConfigMap {namespace}/{name} to match the ConfigSet"),
            ),
            Outcome::NamespaceMissing => (
                EventType::Warning,
                "NamespaceNotFound",
                format!("Namespace {namespace} does not exist"),
            ),
            Outcome::NamespaceTerminating => (
                EventType::Warning,
                "NamespaceTerminating",
                format!("Namespace {namespace} is being deleted"),
            ),
            Outcome::Conflict { owner } => (
                EventType::Warning,
                "Conflict",
                format!(
                    "ConfigMap {namespace}/{name} belongs to {}",
                    owner.as_deref().unwrap_or("no ConfigSet")
                ),
            ),
        };
        self.publish(config_set, type_, reason, "Apply", note).await;
    }

    /// Records an Event about `config_set`. Events are informational, so a failure is logged
    /// and the reconcile goes on.
    async fn publish(
        &self,
        config_set: &ConfigSet,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let spec = EventSpec {
            type_,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: Some(note),
        };
        if let Err(error) = self.recorder.publish(&reference(config_set), spec).await {
            warn!(key = %config_set.key(), reason, error = &error as &dyn std::error::Error, "failed to record an Event");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wiring

/// Settings of the operator.
#[derive(Clone, Debug)]
pub struct Config {
    /// The number of ConfigSets reconciled at once.
    pub workers: usize,
    /// How often every cached ConfigSet is queued again to repair drift the watches missed,
    /// or `None` for never.
    pub resync: Option<Duration>,
    /// How long a ConfigSet waiting for a namespace, or blocked by another owner's ConfigMap,
    /// waits before the next look. Neither is watched.
    pub retry_after: Duration,
    /// The `reportingInstance` of Events, usually the pod name.
    pub instance: String,
    /// How long in-flight reconciles may run once shutdown begins.
    pub shutdown_deadline: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 2,
            resync: Some(Duration::from_secs(600)),
            retry_after: Duration::from_secs(30),
            instance: "configmap-sync".to_owned(),
            shutdown_deadline: informer::controller::DEFAULT_SHUTDOWN_DEADLINE,
        }
    }
}

/// The readiness of a running operator and its metrics, for the HTTP probes.
#[derive(Clone)]
pub struct Probes {
    config_sets: HealthWatch,
    config_maps: HealthWatch,
    started: watch::Receiver<bool>,
    registry: Arc<Registry>,
}

impl Probes {
    /// Returns `Ok` when the controller runs and both caches are synced and in sync, or what
    /// is missing.
    pub fn ready(&self) -> Result<(), String> {
        let mut missing = Vec::new();
        for (name, health) in [
            ("ConfigSet", &self.config_sets),
            ("ConfigMap", &self.config_maps),
        ] {
            let health = health.get();
            if !health.ready() {
                let error = health
                    .last_error
                    .map(|error| format!(": {}", error.message))
                    .unwrap_or_default();
                missing.push(format!(
                    "the {name} cache is not ready (synced {}, in sync {}){error}",
                    health.synced, health.in_sync
                ));
            }
        }
        if !*self.started.borrow() {
            missing.push("the controller has not started".to_owned());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join("; "))
        }
    }

    /// Returns the metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// A running operator: two reflectors, their handlers and the controller.
pub struct Operator {
    probes: Probes,
    config_sets: Store<ConfigSet>,
    config_maps: Store<ConfigMap>,
    metrics: Metrics,
    ctx: Arc<Context>,
    stop: watch::Sender<bool>,
    task: JoinHandle<ShutdownReport>,
}

impl Operator {
    /// The name of the controller in metrics and logs.
    pub const NAME: &'static str = "configset";

    /// Starts the operator on the current tokio runtime. The controller starts once both
    /// caches have listed.
    pub fn start(client: kube::Client, config: Config) -> Operator {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);

        let config_set_reflector = Reflector::with_metrics(
            KubernetesSource::new(client.clone(), KubernetesConfig::new::<ConfigSet>()),
            // The operator never reads managedFields, so the caches leave them out.
            Transform::new(Json::<ConfigSet>::new(), drop_managed_fields::<ConfigSet>),
            metrics.clone(),
        );
        let selector = format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}");
        let config_map_reflector = Reflector::with_metrics(
            KubernetesSource::new(
                client.clone(),
                KubernetesConfig::new::<ConfigMap>().labels(selector),
            ),
            Transform::new(Json::<ConfigMap>::new(), drop_managed_fields::<ConfigMap>),
            metrics.clone(),
        );
        let config_sets = config_set_reflector.store();
        let config_maps = config_map_reflector.store();
        config_maps.add_index(
            OWNER_INDEX,
            Arc::new(|config_map: &ConfigMap| owner_keys(config_map)),
        );

        let (started_tx, started) = watch::channel(false);
        let probes = Probes {
            config_sets: config_set_reflector.health(),
            config_maps: config_map_reflector.health(),
            started,
            registry: Arc::new(registry),
        };
        let ctx = Arc::new(Context {
            client: client.clone(),
            config_maps: config_maps.clone(),
            recorder: EventRecorder::new(client, REPORTING_CONTROLLER, config.instance.clone()),
            retry_after: config.retry_after,
            reconciles: Mutex::default(),
            written: Mutex::default(),
        });

        let queue: WorkQueue<Arc<str>> = WorkQueue::builder(Operator::NAME)
            .metrics(metrics.clone())
            .build();
        let handlers = register_handlers(&config_sets, &config_maps, &queue, config.resync);
        let reflectors = vec![config_set_reflector.spawn(), config_map_reflector.spawn()];

        let (stop, stop_rx) = watch::channel(false);
        let controller = Controller::new(
            Operator::NAME,
            queue,
            config_sets.clone(),
            reconcile,
            ctx.clone(),
        )
        .workers(config.workers)
        .shutdown_deadline(config.shutdown_deadline)
        .metrics(metrics.clone());
        let task = tokio::spawn(run(
            controller,
            probes.clone(),
            started_tx,
            stop_rx,
            reflectors,
            handlers,
        ));
        Operator {
            probes,
            config_sets,
            config_maps,
            metrics,
            ctx,
            stop,
            task,
        }
    }

    /// Returns the probes' view of the operator.
    pub fn probes(&self) -> Probes {
        self.probes.clone()
    }

    /// Waits until [`Probes::ready`] holds.
    pub async fn wait_ready(&self) {
        let probes = &self.probes;
        let mut started = probes.started.clone();
        let _ = started.wait_for(|started| *started).await;
        probes.config_sets.wait_ready().await;
        probes.config_maps.wait_ready().await;
    }

    /// Returns the ConfigSet cache.
    pub fn config_sets(&self) -> &Store<ConfigSet> {
        &self.config_sets
    }

    /// Returns the ConfigMap cache.
    pub fn config_maps(&self) -> &Store<ConfigMap> {
        &self.config_maps
    }

    /// Returns the pipeline's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Returns how many reconciles of `key` have started since its ConfigSet appeared.
    pub fn reconciles(&self, key: &str) -> u64 {
        self.ctx.reconciles.lock().get(key).copied().unwrap_or(0)
    }

    /// Stops the controller (in-flight reconciles finish until the shutdown deadline), then
    /// the reflectors, and returns the controller's report.
    pub async fn shutdown(self) -> ShutdownReport {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(report) => report,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// The handlers that feed the workqueue, kept so shutdown can unregister them.
struct Handlers {
    config_sets: HandlerHandle<ConfigSet>,
    config_maps: Vec<HandlerHandle<ConfigMap>>,
}

fn register_handlers(
    config_sets: &Store<ConfigSet>,
    config_maps: &Store<ConfigMap>,
    queue: &WorkQueue<Arc<str>>,
    resync: Option<Duration>,
) -> Handlers {
    let mut options = HandlerOptions::new("configsets");
    options.resync = resync;
    let config_set_handler = config_sets.register(
        options,
        predicates::filter(spec_or_lifecycle_changed(), enqueue_keys(queue.clone())),
    );
    let by_reference = config_maps.register(
        HandlerOptions::new("configmaps-by-owner-reference"),
        enqueue_owners::<ConfigSet, ConfigMap>(queue.clone()),
    );
    let by_annotation = config_maps.register(
        HandlerOptions::new("configmaps-by-owner-annotation"),
        map_keys(queue.clone(), cross_namespace_owner),
    );
    Handlers {
        config_sets: config_set_handler,
        config_maps: vec![by_reference, by_annotation],
    }
}

/// Lets an update through when the spec changed (a new generation), or when deletion began or
/// the finalizers changed. Status-only and metadata-only updates are dropped.
pub fn spec_or_lifecycle_changed() -> impl Predicate<ConfigSet> {
    predicates::generation_changed::<ConfigSet>().or(FnPredicate(
        |old: &ConfigSet, new: &ConfigSet| {
            old.meta().deletion_timestamp != new.meta().deletion_timestamp
                || old.finalizers() != new.finalizers()
        },
    ))
}

/// Waits for both caches, runs the controller until `stop`, then stops the rest.
async fn run<R>(
    controller: Controller<ConfigSet, Context, R>,
    probes: Probes,
    started: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
    reflectors: Vec<JoinHandle<()>>,
    handlers: Handlers,
) -> ShutdownReport
where
    R: informer::controller::Reconciler<ConfigSet, Context>,
{
    let synced = async {
        probes.config_sets.wait_synced().await;
        probes.config_maps.wait_synced().await;
    };
    let report = tokio::select! {
        () = stopped(stop.clone()) => {
            info!("stopped before the caches synced");
            ShutdownReport {
                cause: StopCause::Requested,
                in_flight: 0,
                aborted: 0,
                dropped: 0,
                workers_restarted: 0,
            }
        }
        () = synced => {
            info!("caches synced; starting the controller");
            let _ = started.send(true);
            controller.run_until(stopped(stop)).await
        }
    };

    let _ = started.send(false);
    handlers.config_sets.unregister().await;
    for handler in handlers.config_maps {
        handler.unregister().await;
    }
    for reflector in reflectors {
        reflector.abort();
        let _ = reflector.await;
    }
    report
}

/// Completes once `stop` holds true, or once its sender is gone.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

// ---------------------------------------------------------------------------------------------
// HTTP probes

/// Serves `/healthz` (200 while the process runs), `/readyz` (200 once the controller runs
/// and both caches are ready, 503 with the reason otherwise) and `/metrics` (OpenMetrics text)
/// on `listener` until `shutdown` completes.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve_probes(
    listener: tokio::net::TcpListener,
    probes: Probes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let ready = {
        let probes = probes.clone();
        move || {
            let probes = probes.clone();
            async move {
                match probes.ready() {
                    Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
                    Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                }
            }
        }
    };
    let metrics = move || {
        let text = probes.metrics_text();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                text,
            )
                .into_response()
        }
    };
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics));
    info!(address = ?listener.local_addr().ok(), "serving /healthz, /readyz and /metrics");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
