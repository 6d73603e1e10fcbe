//! The verbs on objects: create, update, patch, delete, get and list, with the apiserver's
//! metadata handling, preconditions, finalizers, no-op detection and generation rules.
//!
//! Every operation runs under one lock and returns objects in their stored form; callers
//! convert them to the requested API version with [`ResourceDef::to_api_form`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tracing::{debug, info};

use super::fields::{self, FieldsWrite, MapNodes, Operation};
use super::patch::{self, PatchType};
use super::resources::{Behavior, Registry, ResourceDef, builtin_resources, fill_zero_fields};
use super::selectors::Selectors;
use super::status::{FieldError, StatusCause, StatusError};
use super::store::Store;
use super::strategy::{self, finalizers, is_deleting, meta_str, metadata_mut};

/// The manager the server itself writes as (CRD conditions, bootstrap namespaces).
const SERVER_MANAGER: &str = "kube-apiserver";

/// Namespaces a new cluster has.
const BOOTSTRAP_NAMESPACES: [&str; 4] =
    ["default", "kube-node-lease", "kube-public", "kube-system"];

/// The options of one write.
#[derive(Clone, Copy)]
pub(crate) struct WriteOptions<'a> {
    /// The field manager recorded in `managedFields`.
    pub(crate) manager: &'a str,
    /// `dryRun=All`: run every check, store nothing.
    pub(crate) dry_run: bool,
    /// `Some("status")` for a write through the status subresource.
    pub(crate) subresource: Option<&'a str>,
    /// For server-side apply: the applied configuration.
    pub(crate) applied: Option<&'a Value>,
}

impl<'a> WriteOptions<'a> {
    pub(crate) fn new(manager: &'a str) -> Self {
        Self {
            manager,
            dry_run: false,
            subresource: None,
            applied: None,
        }
    }
}

/// The preconditions and options of a delete.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub(crate) uid: Option<String>,
    pub(crate) resource_version: Option<String>,
    pub(crate) dry_run: bool,
}

/// The result of a delete.
pub(crate) enum DeleteOutcome {
    /// The object is gone. This is its last state, stamped with the delete's revision.
    Deleted(Arc<Value>),
    /// The object has finalizers: it now carries `deletionTimestamp` and stays until they are
    /// removed.
    Pending(Arc<Value>),
}

/// One page of a list.
pub(crate) struct ListPage {
    pub(crate) items: Vec<Arc<Value>>,
    /// The store key of the last item, when more matching items follow.
    pub(crate) continue_after: Option<String>,
    /// How many matching items follow, when no selector is set.
    pub(crate) remaining: Option<usize>,
}

/// The objects, the served resources and the rules that tie them together.
pub(crate) struct Cluster {
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    require_namespaces: bool,
    crd_init_delay: Duration,
    /// Custom resource tables that return `429` until the given instant, as a new watch cache
    /// does while it initializes.
    initializing: HashMap<String, Instant>,
}

impl Cluster {
    pub(crate) fn new(
        history_capacity: usize,
        require_namespaces: bool,
        crd_init_delay: Duration,
    ) -> Self {
        let mut cluster = Self {
            store: Store::new(history_capacity),
            registry: Registry::default(),
            require_namespaces,
            crd_init_delay,
            initializing: HashMap::new(),
        };
        for def in builtin_resources() {
            cluster.register(def);
        }
        let namespaces = cluster
            .registry
            .get("", "v1", "namespaces")
            .expect("namespaces are built in");
        for name in BOOTSTRAP_NAMESPACES {
            cluster
                .create(
                    &namespaces,
                    None,
                    json!({"metadata": {"name": name}}),
                    &WriteOptions::new(SERVER_MANAGER),
                )
                .expect("bootstrap namespaces are valid");
        }
        cluster
    }

    pub(crate) fn register(&mut self, def: ResourceDef) -> Arc<ResourceDef> {
        self.store.ensure_table(&def.storage);
        self.registry.register(def)
    }

    /// Returns the instant until which a custom resource's storage initializes, if it still
    /// does.
    pub(crate) fn initializing_until(&mut self, storage: &str) -> Option<Instant> {
        let until = *self.initializing.get(storage)?;
        if Instant::now() >= until {
            self.initializing.remove(storage);
            return None;
        }
        Some(until)
    }

    fn storage_def(&self, def: &ResourceDef) -> Arc<ResourceDef> {
        self.registry
            .storage_def(&def.storage)
            .unwrap_or_else(|| Arc::new(def.clone()))
    }

    pub(crate) fn get(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Arc<Value>, StatusError> {
        self.store
            .get(&def.storage, &object_key(def, namespace, name))
            .ok_or_else(|| StatusError::not_found(def, name))
    }

    /// Creates an object.
    pub(crate) fn create(
        &mut self,
        def: &Arc<ResourceDef>,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions<'_>,
    ) -> Result<Arc<Value>, StatusError> {
        check_body(def, &mut object)?;
        let namespace = scope_namespace(def, namespace, &mut object)?;
        let name = assign_name(def, &mut object)?;
        if let Some(error) = strategy::validate_name(def, &name) {
            return Err(invalid(def, &name, vec![error]));
        }
        self.check_namespace_open(def, namespace.as_deref(), &name)?;
        let key = object_key(def, namespace.as_deref(), &name);
        if self.store.get(&def.storage, &key).is_some() {
            return Err(StatusError::already_exists(def, &name));
        }

        reset_server_metadata(def, &mut object);
        strategy::prepare_create(def, &mut object)?;
        if def.behavior == Behavior::Crd {
            strategy::initial_crd_status(&mut object);
        }
        let storage = self.storage_def(def);
        def.to_storage(&mut object, &storage);
        fill_zero_fields(&mut object, &storage.zero_fields);
        let time = strategy::now_timestamp();
        let api_version = def.api_version();
        fields::update_managed_fields(
            None,
            &mut object,
            &fields_write(def, &api_version, options, &time),
        );

        if options.dry_run {
            return Ok(Arc::new(object));
        }
        let stored = self.store.put(&def.storage, &key, object);
        debug!(resource = %def.plural, key = ?key, revision = self.store.revision(), "created");
        if def.behavior == Behavior::Crd {
            return Ok(self.install_crd(def, &key, stored));
        }
        Ok(stored)
    }

    /// Replaces an object (PUT), through the main endpoint or `/status`.
    pub(crate) fn update(
        &mut self,
        def: &Arc<ResourceDef>,
        namespace: Option<&str>,
        name: &str,
        mut object: Value,
        options: &WriteOptions<'_>,
    ) -> Result<Arc<Value>, StatusError> {
        check_body(def, &mut object)?;
        let namespace = scope_namespace(def, namespace, &mut object)?;
        let body_name = meta_str(&object, "name").to_owned();
        if body_name.is_empty() {
            metadata_mut(&mut object).insert("name".to_owned(), Value::String(name.to_owned()));
        } else if body_name != name {
            return Err(StatusError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = object_key(def, namespace.as_deref(), name);
        let existing = self
            .store
            .get(&def.storage, &key)
            .ok_or_else(|| StatusError::not_found(def, name))?;
        let old = def.to_api_form(&existing);

        let requested_version = meta_str(&object, "resourceVersion").to_owned();
        if requested_version.is_empty() {
            if !def.builtin || def.behavior == Behavior::Crd {
                return Err(invalid(
                    def,
                    name,
                    vec![FieldError::invalid(
                        "metadata.resourceVersion",
                        "0x0".to_owned(),
                        "must be specified for an update",
                    )],
                ));
            }
        } else if requested_version != meta_str(&old, "resourceVersion") {
            return Err(StatusError::stale_resource_version(def, name));
        }
        let requested_uid = meta_str(&object, "uid").to_owned();
        let uid = meta_str(&old, "uid").to_owned();
        if !requested_uid.is_empty() && requested_uid != uid {
            return Err(StatusError::precondition_failed(
                def,
                name,
                format!(
                    "Precondition failed: UID in precondition: {requested_uid}, UID in object meta: {uid}"
                ),
            ));
        }

        let mut updated = if options.subresource == Some("status") {
            strategy::prepare_status_update(def, &old, &object)?
        } else {
            carry_server_metadata(&old, &mut object);
            check_new_finalizers(def, &old, &object)?;
            strategy::prepare_update(def, &old, &mut object)?;
            object
        };
        if def.tracks_generation && strategy::generation_changed(def, &old, &updated) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut updated).insert("generation".to_owned(), json!(generation + 1));
        }
        self.write_update(def, &key, &existing, &old, updated, options)
    }

    /// Stores an updated object unless it equals the old one, and deletes it instead when the
    /// last finalizer of an object being deleted is gone.
    fn write_update(
        &mut self,
        def: &Arc<ResourceDef>,
        key: &str,
        existing: &Arc<Value>,
        old: &Value,
        mut updated: Value,
        options: &WriteOptions<'_>,
    ) -> Result<Arc<Value>, StatusError> {
        let storage = self.storage_def(def);
        def.to_storage(&mut updated, &storage);
        fill_zero_fields(&mut updated, &storage.zero_fields);
        if same_content(existing, &updated) {
            return Ok(existing.clone());
        }
        let time = strategy::now_timestamp();
        let api_version = def.api_version();
        let write = fields_write(def, &api_version, options, &time);
        fields::update_managed_fields(Some(old), &mut updated, &write);

        if options.dry_run {
            return Ok(Arc::new(updated));
        }
        if is_deleting(&updated) && finalizers(&updated).is_empty() {
            let last = self
                .store
                .delete(&def.storage, key)
                .expect("the object was just read under the same lock");
            debug!(resource = %def.plural, key = ?key, "deleted after its last finalizer was removed");
            self.finish_namespace_of(def, &last);
            return Ok(last);
        }
        let stored = self.store.put(&def.storage, key, updated);
        debug!(resource = %def.plural, key = ?key, revision = self.store.revision(), "updated");
        if def.behavior == Behavior::Crd && options.subresource.is_none() {
            self.reinstall_crd(&stored);
        }
        Ok(stored)
    }

    /// Patches an object. An apply creates the object when it is missing, and then the
    /// returned flag is true.
    pub(crate) fn patch(
        &mut self,
        def: &Arc<ResourceDef>,
        namespace: Option<&str>,
        name: &str,
        patch_type: PatchType,
        patch_body: &Value,
        options: &WriteOptions<'_>,
    ) -> Result<(Arc<Value>, bool), StatusError> {
        let key = object_key(def, namespace, name);
        let Some(existing) = self.store.get(&def.storage, &key) else {
            if patch_type != PatchType::Apply {
                return Err(StatusError::not_found(def, name));
            }
            let mut object = patch_body.clone();
            if !object.is_object() {
                return Err(StatusError::bad_request(
                    "an apply patch must be a JSON object",
                ));
            }
            metadata_mut(&mut object).insert("name".to_owned(), Value::String(name.to_owned()));
            let created = self.create(def, namespace, object, options)?;
            return Ok((created, true));
        };

        let old = def.to_api_form(&existing);
        let mut candidate = old.clone();
        patch::apply(patch_type, &mut candidate, patch_body)?;
        if !candidate.is_object() {
            return Err(StatusError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        if meta_str(&candidate, "resourceVersion").is_empty() {
            let version = meta_str(&old, "resourceVersion").to_owned();
            metadata_mut(&mut candidate)
                .insert("resourceVersion".to_owned(), Value::String(version));
        }
        let updated = self.update(def, namespace, name, candidate, options)?;
        Ok((updated, false))
    }

    /// Deletes an object, or marks it for deletion while it has finalizers.
    pub(crate) fn delete(
        &mut self,
        def: &Arc<ResourceDef>,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<DeleteOutcome, StatusError> {
        let key = object_key(def, namespace, name);
        let existing = self
            .store
            .get(&def.storage, &key)
            .ok_or_else(|| StatusError::not_found(def, name))?;
        check_delete_preconditions(def, name, &existing, options)?;

        if def.behavior == Behavior::Namespace {
            return self.delete_namespace(def, &key, name, existing, options);
        }
        if def.behavior == Behavior::Crd && !options.dry_run {
            self.uninstall_crd(name);
        }
        if !finalizers(&existing).is_empty() {
            return self.mark_deleting(def, &key, existing, options.dry_run);
        }
        if options.dry_run {
            return Ok(DeleteOutcome::Deleted(existing));
        }
        let last = self
            .store
            .delete(&def.storage, &key)
            .expect("the object was just read under the same lock");
        debug!(resource = %def.plural, key = ?key, revision = self.store.revision(), "deleted");
        self.finish_namespace_of(def, &last);
        Ok(DeleteOutcome::Deleted(last))
    }

    fn mark_deleting(
        &mut self,
        def: &ResourceDef,
        key: &str,
        existing: Arc<Value>,
        dry_run: bool,
    ) -> Result<DeleteOutcome, StatusError> {
        if is_deleting(&existing) {
            return Ok(DeleteOutcome::Pending(existing));
        }
        let mut marked = (*existing).clone();
        let metadata = metadata_mut(&mut marked);
        metadata.insert(
            "deletionTimestamp".to_owned(),
            Value::String(strategy::now_timestamp()),
        );
        metadata.insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        if let Some(generation) = metadata.get("generation").and_then(Value::as_i64)
            && generation > 0
        {
            metadata.insert("generation".to_owned(), json!(generation + 1));
        }
        if dry_run {
            return Ok(DeleteOutcome::Pending(Arc::new(marked)));
        }
        Ok(DeleteOutcome::Pending(self.store.put(
            &def.storage,
            key,
            marked,
        )))
    }

    /// Deletes a namespace: marks it `Terminating`, deletes everything in it, and removes it
    /// once it is empty.
    fn delete_namespace(
        &mut self,
        def: &ResourceDef,
        key: &str,
        name: &str,
        existing: Arc<Value>,
        options: &DeleteOptions,
    ) -> Result<DeleteOutcome, StatusError> {
        if options.dry_run || is_deleting(&existing) {
            return Ok(DeleteOutcome::Pending(existing));
        }
        let mut terminating = (*existing).clone();
        metadata_mut(&mut terminating).insert(
            "deletionTimestamp".to_owned(),
            Value::String(strategy::now_timestamp()),
        );
        metadata_mut(&mut terminating).insert("deletionGracePeriodSeconds".to_owned(), json!(0));
        if let Some(status) = terminating.get_mut("status").and_then(Value::as_object_mut) {
            status.insert("phase".to_owned(), json!("Terminating"));
        }
        let marked = self.store.put(&def.storage, key, terminating);
        info!(namespace = %name, "namespace is terminating");

        let prefix = format!("{name}/");
        let namespaced: Vec<Arc<ResourceDef>> = self
            .store
            .tables()
            .iter()
            .filter_map(|storage| self.registry.storage_def(storage))
            .filter(|def| def.namespaced)
            .collect();
        for content_def in namespaced {
            let revision = self.store.revision();
            for (item_key, object) in
                self.store
                    .range_at(&content_def.storage, &prefix, None, revision)
            {
                if finalizers(&object).is_empty() {
                    self.store.delete(&content_def.storage, &item_key);
                } else if !is_deleting(&object) {
                    let item_name = meta_str(&object, "name").to_owned();
                    self.mark_deleting(&content_def, &item_key, object, false)?;
                    debug!(namespace = %name, name = %item_name, "waiting for finalizers");
                }
            }
        }
        if let Some(gone) = self.try_remove_namespace(name) {
            return Ok(DeleteOutcome::Pending(gone));
        }
        Ok(DeleteOutcome::Pending(marked))
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn finish_namespace_of(&mut self, def: &ResourceDef, object: &Value) {
        if def.namespaced {
            let namespace = meta_str(object, "namespace").to_owned();
            self.try_remove_namespace(&namespace);
        }
    }

    fn try_remove_namespace(&mut self, namespace: &str) -> Option<Arc<Value>> {
        let namespaces = self.registry.get("", "v1", "namespaces")?;
        let object = self.store.get(&namespaces.storage, namespace)?;
        if !is_deleting(&object) || !finalizers(&object).is_empty() {
            return None;
        }
        let prefix = format!("{namespace}/");
        let occupied = self.store.tables().iter().any(|storage| {
            self.registry
                .storage_def(storage)
                .is_some_and(|def| def.namespaced)
                && self.store.any_live(storage, &prefix)
        });
        if occupied {
            return None;
        }
        info!(namespace = %namespace, "namespace removed");
        self.store.delete(&namespaces.storage, namespace)
    }

    /// Rejects writes into a missing or terminating namespace.
    fn check_namespace_open(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), StatusError> {
        let Some(namespace) = namespace else {
            return Ok(());
        };
        let Some(namespaces) = self.registry.get("", "v1", "namespaces") else {
            return Ok(());
        };
        match self.store.get(&namespaces.storage, namespace) {
            None if self.require_namespaces => {
                Err(StatusError::not_found_in("", "namespaces", namespace))
            }
            Some(object) if is_deleting(&object) => {
                let mut error = StatusError::forbidden_because(
                    &def.group,
                    &def.plural,
                    Some(name),
                    &format!(
                        "unable to create new content in namespace {namespace} because it is being terminated"
                    ),
                );
                if let Some(details) = error.details.as_mut() {
                    details.causes.push(StatusCause {
                        reason: "NamespaceTerminating".to_owned(),
                        message: format!("namespace {namespace} is being terminated"),
                        field: "metadata.namespace".to_owned(),
                    });
                }
                Err(error)
            }
            _ => Ok(()),
        }
    }

    /// Serves the resources of a new CRD and records its conditions, as the apiextensions
    /// controllers do: `NamesAccepted`, then `Established`.
    fn install_crd(&mut self, def: &ResourceDef, key: &str, created: Arc<Value>) -> Arc<Value> {
        let time = strategy::now_timestamp();
        let mut current = created.clone();
        for established in [false, true] {
            let mut next = (*current).clone();
            let status = strategy::crd_status_with_conditions(&next, established, &time);
            next.as_object_mut()
                .expect("stored objects are objects")
                .insert("status".to_owned(), status);
            let write = FieldsWrite {
                manager: SERVER_MANAGER,
                operation: Operation::Update,
                api_version: "apiextensions.k8s.io/v1",
                time: &time,
                subresource: Some("status"),
                status_subresource: true,
                applied: None,
                maps: MapNodes::BuiltinMaps,
            };
            fields::update_managed_fields(Some(&current), &mut next, &write);
            current = self.store.put(&def.storage, key, next);
        }
        let resources = strategy::crd_resources(&current);
        let crd_name = meta_str(&current, "name").to_owned();
        for resource in resources {
            info!(crd = %crd_name, group = %resource.group, version = %resource.version, resource = %resource.plural, "serving custom resource");
            if !self.crd_init_delay.is_zero() {
                self.initializing.insert(
                    resource.storage.clone(),
                    Instant::now() + self.crd_init_delay,
                );
            }
            self.register(resource);
        }
        created
    }

    fn reinstall_crd(&mut self, crd: &Value) {
        let crd_name = meta_str(crd, "name").to_owned();
        self.registry.unregister_crd(&crd_name);
        for resource in strategy::crd_resources(crd) {
            self.register(resource);
        }
    }

    /// Stops serving a CRD's resources and deletes their objects.
    // NOTE: the apiserver keeps a deleted CRD (with a cleanup finalizer) until its objects are
    // gone, and it honours their finalizers. Here the objects go at once, finalizers or not.
    fn uninstall_crd(&mut self, crd_name: &str) {
        let storages = self.registry.unregister_crd(crd_name);
        for storage in storages {
            let revision = self.store.revision();
            for (key, _) in self.store.range_at(&storage, "", None, revision) {
                self.store.delete(&storage, &key);
            }
            self.store.drop_table(&storage);
            self.initializing.remove(&storage);
            info!(crd = %crd_name, storage = %storage, "stopped serving custom resource");
        }
    }

    /// Reads one page of the objects matching `selectors` at `revision`.
    pub(crate) fn list(
        &self,
        def: &ResourceDef,
        namespace: Option<&str>,
        selectors: &Selectors,
        start: Option<&str>,
        limit: Option<usize>,
        revision: i64,
    ) -> ListPage {
        let prefix = list_prefix(namespace);
        let limit = limit.filter(|limit| *limit > 0).unwrap_or(usize::MAX);
        // Only the objects up to the page's end are converted and matched. Counting the rest
        // for `remainingItemCount` still walks their keys, but converts nothing.
        let mut matching = self
            .store
            .iter_at(&def.storage, &prefix, start, revision)
            .filter(|(_, object)| {
                selectors.is_empty() || selectors.matches(&def.to_api_form(object))
            });
        let mut items = Vec::new();
        let mut last_key = None;
        for (key, object) in matching.by_ref().take(limit) {
            last_key = Some(key.to_owned());
            items.push(object.clone());
        }
        let more = matching.next().is_some();
        // The count of the rest is only reported without selectors, and then counting needs no
        // conversion.
        let remaining = (more && selectors.is_empty()).then(|| 1 + matching.count());
        ListPage {
            items,
            continue_after: if more { last_key } else { None },
            remaining,
        }
    }
}

/// Returns the store key of an object: `namespace/name`, or `name` when cluster-scoped.
pub(crate) fn object_key(def: &ResourceDef, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) if def.namespaced => format!("{namespace}/{name}"),
        _ => name.to_owned(),
    }
}

/// Returns the key prefix of a list: `namespace/`, or empty for every namespace.
pub(crate) fn list_prefix(namespace: Option<&str>) -> String {
    namespace.map(|ns| format!("{ns}/")).unwrap_or_default()
}

fn invalid(def: &ResourceDef, name: &str, errors: Vec<FieldError>) -> StatusError {
    StatusError::invalid(&def.group, &def.kind, name, &errors, true)
}

fn fields_write<'a>(
    def: &ResourceDef,
    api_version: &'a str,
    options: &WriteOptions<'a>,
    time: &'a str,
) -> FieldsWrite<'a> {
    FieldsWrite {
        manager: options.manager,
        operation: if options.applied.is_some() {
            Operation::Apply
        } else {
            Operation::Update
        },
        api_version,
        time,
        subresource: options.subresource,
        status_subresource: def.status_subresource,
        applied: options.applied,
        maps: if def.builtin {
            MapNodes::BuiltinMaps
        } else {
            MapNodes::All
        },
    }
}

/// Checks that a request body is an object of this resource's `apiVersion` and `kind`, and
/// fills them in when missing.
fn check_body(def: &ResourceDef, object: &mut Value) -> Result<(), StatusError> {
    let Some(map) = object.as_object_mut() else {
        return Err(StatusError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let expected_version = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(version) if version != expected_version => {
            return Err(StatusError::bad_request(format!(
                "the API version in the data ({version}) does not match the expected API version ({expected_version})"
            )));
        }
        Some(_) => {}
        None => {
            map.insert("apiVersion".to_owned(), Value::String(expected_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(kind) if kind != def.kind => Err(StatusError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            def.kind
        ))),
        Some(_) => Ok(()),
        None => {
            map.insert("kind".to_owned(), Value::String(def.kind.clone()));
            Ok(())
        }
    }
}

/// Reconciles the namespace of the URL with `metadata.namespace`, and returns the object's
/// namespace.
fn scope_namespace(
    def: &ResourceDef,
    namespace: Option<&str>,
    object: &mut Value,
) -> Result<Option<String>, StatusError> {
    let metadata = metadata_mut(object);
    if !def.namespaced {
        metadata.remove("namespace");
        return Ok(None);
    }
    let body_namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let namespace = match namespace {
        Some(namespace) => {
            if !body_namespace.is_empty() && body_namespace != namespace {
                return Err(StatusError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            namespace.to_owned()
        }
        None if !body_namespace.is_empty() => body_namespace,
        None => {
            return Err(StatusError::bad_request(
                "the namespace of the object is missing: namespaced objects need a namespace",
            ));
        }
    };
    metadata.insert("namespace".to_owned(), Value::String(namespace.clone()));
    Ok(Some(namespace))
}

/// Settles `metadata.name`, generating it from `generateName` when needed.
fn assign_name(def: &ResourceDef, object: &mut Value) -> Result<String, StatusError> {
    let metadata = metadata_mut(object);
    let name = metadata.get("name").and_then(Value::as_str).unwrap_or("");
    if !name.is_empty() {
        return Ok(name.to_owned());
    }
    let prefix = metadata
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if prefix.is_empty() {
        return Err(invalid(
            def,
            "",
            vec![FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    let name = strategy::generate_name(&prefix);
    metadata.insert("name".to_owned(), Value::String(name.clone()));
    Ok(name)
}

/// Sets the metadata the server owns on a new object: uid, creation time, generation.
fn reset_server_metadata(def: &ResourceDef, object: &mut Value) {
    let metadata = metadata_mut(object);
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
        "managedFields",
    ] {
        metadata.remove(field);
    }
    metadata.insert("uid".to_owned(), Value::String(strategy::new_uid()));
    metadata.insert(
        "creationTimestamp".to_owned(),
        Value::String(strategy::now_timestamp()),
    );
    if def.tracks_generation {
        metadata.insert("generation".to_owned(), json!(1));
    }
}

/// Keeps the server-owned metadata of `old` on an updated object.
fn carry_server_metadata(old: &Value, object: &mut Value) {
    let metadata = metadata_mut(object);
    metadata.remove("selfLink");
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(value) => {
                metadata.insert(field.to_owned(), value.clone());
            }
            None => {
                metadata.remove(field);
            }
        }
    }
}

/// Rejects new finalizers on an object being deleted, which may only lose finalizers.
fn check_new_finalizers(def: &ResourceDef, old: &Value, object: &Value) -> Result<(), StatusError> {
    if !is_deleting(old) {
        return Ok(());
    }
    let existing = finalizers(old);
    let added: Vec<String> = finalizers(object)
        .into_iter()
        .filter(|finalizer| !existing.contains(finalizer))
        .collect();
    if added.is_empty() {
        return Ok(());
    }
    let quoted: Vec<String> = added.iter().map(|f| format!("{f:?}")).collect();
    Err(invalid(
        def,
        meta_str(old, "name"),
        vec![FieldError::forbidden(
            "metadata.finalizers",
            &format!(
                "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                quoted.join(", ")
            ),
        )],
    ))
}

fn check_delete_preconditions(
    def: &ResourceDef,
    name: &str,
    existing: &Value,
    options: &DeleteOptions,
) -> Result<(), StatusError> {
    if let Some(uid) = &options.uid {
        let actual = meta_str(existing, "uid");
        if uid != actual {
            return Err(StatusError::precondition_failed(
                def,
                name,
                format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
                ),
            ));
        }
    }
    if let Some(version) = &options.resource_version {
        let actual = meta_str(existing, "resourceVersion");
        if version != actual {
            return Err(StatusError::precondition_failed(
                def,
                name,
                format!(
                    "the ResourceVersion in the precondition ({version}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks whether an update leaves the object as it was, apart from `resourceVersion` and
/// `managedFields`. Such an update writes nothing and sends no event.
fn same_content(existing: &Value, updated: &Value) -> bool {
    let strip = |object: &Value| {
        let mut copy = object.clone();
        if let Some(metadata) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        copy
    };
    strip(existing) == strip(updated)
}
