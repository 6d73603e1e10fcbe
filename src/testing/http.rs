//! The HTTP front: authentication, fault injection, routing, the common response headers,
//! and the handlers of the resource verbs.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::{any, get};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::cluster::{DeleteOptions, DeleteOutcome, WriteOptions};
use super::discovery;
use super::encode::{self, Format, Ordered};
use super::faults::{Failure, FaultDecision, RequestAttributes, Verb};
use super::list::{self, ListOptions};
use super::patch::{self, PatchType};
use super::request::{Params, RequestContext, RequestInfo};
use super::resources::{Behavior, ResourceDef};
use super::shared::{RequestRecord, Shared};
use super::status::{self, FieldError, StatusError};
use super::strategy::{self, meta_str};
use super::watch;

pub(crate) const JSON: &str = "application/json";
const METADATA_CONTENT_TYPE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
pub(crate) const METADATA_LIST_CONTENT_TYPE: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// The error a connection task gets for a request whose injected failure closes the
/// connection: hyper then drops the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("the test server closed the connection: injected failure")]
pub(crate) struct InjectedClose;

/// Builds the routes: discovery documents and the resource paths under `/api` and `/apis`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(core_discovery))
        .route("/apis", get(groups_discovery))
        .route("/api/{*rest}", any(resource))
        .route("/apis/{*rest}", any(resource))
        .fallback(not_found_text)
        .with_state(shared)
}

/// Serves one request: authenticates it, applies the fault rules, routes it, and adds the
/// headers every apiserver response carries.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    router: Router,
    mut request: Request<Incoming>,
) -> Result<Response, InjectedClose> {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let params = Params::parse(&uri);
    let info = RequestInfo::parse(&method, &uri, &params);
    let headers = request.headers();

    let Some(user) = authenticate(&shared, headers) else {
        let response = status_response(&StatusError::unauthorized(), Format::Compact);
        return Ok(finish(&shared, &method, &uri, info.as_ref(), "", response));
    };
    let ctx = RequestContext {
        manager: field_manager(&params, headers),
        format: response_format(headers),
        metadata_only: accepts(headers, "as=PartialObjectMetadata"),
        aggregated_discovery: accepts(headers, "as=APIGroupDiscoveryList"),
        user,
        info,
        params,
    };

    if let Some(info) = &ctx.info {
        let decision = shared.faults.lock().decide(&RequestAttributes {
            verb: info.verb,
            group: &info.group,
            resource: &info.resource,
            namespace: info.namespace.as_deref(),
            user: &ctx.user,
        });
        match decision {
            FaultDecision::Proceed => {}
            FaultDecision::Fail(Failure::CloseConnection) => {
                info!(verb = %info.verb, resource = %info.resource, "injected failure: closing the connection");
                record(&shared, &method, &uri, Some(info), &ctx.user, 0);
                return Err(InjectedClose);
            }
            FaultDecision::Fail(Failure::Status(code)) => {
                info!(verb = %info.verb, resource = %info.resource, code, "injected failure");
                let error = StatusError::for_code(code, "injected failure");
                let response = status_response(&error, ctx.format);
                return Ok(finish(
                    &shared,
                    &method,
                    &uri,
                    Some(info),
                    &ctx.user,
                    response,
                ));
            }
            FaultDecision::Forbid => {
                let error = StatusError::forbidden(
                    &ctx.user,
                    info.verb.as_str(),
                    &info.group,
                    &info.resource,
                    info.subresource.as_deref(),
                    info.namespace.as_deref(),
                    info.name.as_deref(),
                );
                let response = status_response(&error, ctx.format);
                return Ok(finish(
                    &shared,
                    &method,
                    &uri,
                    Some(info),
                    &ctx.user,
                    response,
                ));
            }
        }
    }

    let ctx = Arc::new(ctx);
    request.extensions_mut().insert(ctx.clone());
    let response = match TowerToHyperService::new(router).call(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    Ok(finish(
        &shared,
        &method,
        &uri,
        ctx.info.as_ref(),
        &ctx.user,
        response,
    ))
}

/// Bearer tokens map to users; no `Authorization` header is `system:anonymous`; an unknown
/// token is rejected.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Option<String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some("system:anonymous".to_owned());
    };
    let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
    shared.user_for_token(token)
}

/// `fieldManager`, or the User-Agent up to its first `/`.
fn field_manager(params: &Params, headers: &HeaderMap) -> String {
    if let Some(manager) = params.get("fieldManager").filter(|m| !m.is_empty()) {
        return manager.to_owned();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .and_then(|agent| agent.split('/').next())
        .filter(|manager| !manager.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

/// Picks the body layout: the apiserver indents JSON for `curl` User-Agents.
fn response_format(headers: &HeaderMap) -> Format {
    let curl = headers
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok())
        .is_some_and(|agent| agent.starts_with("curl"));
    if curl {
        Format::Pretty
    } else {
        Format::Compact
    }
}

fn accepts(headers: &HeaderMap, marker: &str) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains(marker))
}

/// Adds the common headers and logs the request.
fn finish(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    info: Option<&RequestInfo>,
    user: &str,
    mut response: Response,
) -> Response {
    let status = response.status();
    let plain_text = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/plain"));
    let headers = response.headers_mut();
    headers.insert(
        "audit-id",
        HeaderValue::from_str(&strategy::new_uid()).expect("a UUID is a valid header"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    if status != StatusCode::UNAUTHORIZED {
        headers.insert(
            "x-kubernetes-pf-flowschema-uid",
            HeaderValue::from_str(&shared.flow_schema_uid).expect("a UUID is a valid header"),
        );
        headers.insert(
            "x-kubernetes-pf-prioritylevel-uid",
            HeaderValue::from_str(&shared.priority_level_uid).expect("a UUID is a valid header"),
        );
    }
    if status == StatusCode::FORBIDDEN || (status == StatusCode::NOT_FOUND && plain_text) {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    record(shared, method, uri, info, user, status.as_u16());
    response
}

fn record(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    info: Option<&RequestInfo>,
    user: &str,
    status: u16,
) {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    debug!(method = %method, path = %path, status, "request");
    shared.record(RequestRecord {
        method: method.to_string(),
        path,
        verb: info.map(|info| info.verb),
        resource: info.map(|info| info.resource.clone()),
        namespace: info.and_then(|info| info.namespace.clone()),
        user: user.to_owned(),
        status,
    });
}

pub(crate) fn bytes_response(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("a response with a valid content type builds")
}

/// List bodies above this size are sent chunked, without `Content-Length`, as the apiserver
/// sends large lists.
// NOTE: the apiserver's own threshold was not measured: a 918-byte list came with
// `Content-Length` and a 225 881-byte one chunked. 32 KiB is a guess between the two.
const CHUNKED_LIST_THRESHOLD: usize = 32 * 1024;

fn list_response(content_type: &str, body: Vec<u8>) -> Response {
    if body.len() <= CHUNKED_LIST_THRESHOLD {
        return bytes_response(StatusCode::OK, content_type, body);
    }
    let chunks: Vec<Result<Bytes, std::convert::Infallible>> = body
        .chunks(CHUNKED_LIST_THRESHOLD)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .expect("a response with a valid content type builds")
}

pub(crate) fn status_response(error: &StatusError, format: Format) -> Response {
    let status = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match format {
        Format::Compact => {
            let mut body = error.encode();
            body.push(b'\n');
            body
        }
        Format::Pretty => serde_json::to_vec_pretty(&error.body()).expect("a Status serializes"),
    };
    let mut response = bytes_response(status, JSON, body);
    if let Some(seconds) = error.retry_after_seconds {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Builds the text `404 page not found` of paths no API serves.
pub(crate) fn text_not_found() -> Response {
    bytes_response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        b"404 page not found\n".to_vec(),
    )
}

async fn not_found_text() -> Response {
    text_not_found()
}

fn json_response<T: Serialize>(ctx: &RequestContext, value: &T) -> Response {
    bytes_response(StatusCode::OK, JSON, encode::encode(value, ctx.format))
}

async fn version() -> Response {
    bytes_response(StatusCode::OK, JSON, discovery::version())
}

async fn core_discovery(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
) -> Response {
    if ctx.aggregated_discovery {
        let body = shared.read(|cluster| {
            encode::encode(&discovery::aggregated(&cluster.registry, true), ctx.format)
        });
        return bytes_response(StatusCode::OK, discovery::AGGREGATED_CONTENT_TYPE, body);
    }
    json_response(&ctx, &discovery::core_versions(shared.address))
}

async fn groups_discovery(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
) -> Response {
    let body = shared.read(|cluster| {
        if ctx.aggregated_discovery {
            encode::encode(&discovery::aggregated(&cluster.registry, false), ctx.format)
        } else {
            encode::encode(&discovery::group_list(&cluster.registry), ctx.format)
        }
    });
    let content_type = if ctx.aggregated_discovery {
        discovery::AGGREGATED_CONTENT_TYPE
    } else {
        JSON
    };
    bytes_response(StatusCode::OK, content_type, body)
}

async fn resource(
    State(shared): State<Arc<Shared>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let Some(info) = ctx.info.clone() else {
        return serve_discovery(&shared, &ctx, uri.path());
    };
    let def = match find_resource(&shared, &info) {
        Ok(def) => def,
        Err(NotServed::Text) => return text_not_found(),
        Err(NotServed::Status) => {
            return status_response(&StatusError::resource_not_found(), ctx.format);
        }
    };
    match dispatch(&shared, &ctx, &info, &def, &headers, &body).await {
        Ok(response) => response,
        Err(error) => status_response(&error, ctx.format),
    }
}

/// `/api/v1`, `/apis/{group}` and `/apis/{group}/{version}`.
fn serve_discovery(shared: &Shared, ctx: &RequestContext, path: &str) -> Response {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    shared.read(|cluster| match segments.as_slice() {
        ["api", "v1"] => json_response(
            ctx,
            &discovery::resource_list("", "v1", &cluster.registry.resources_in("", "v1")),
        ),
        ["apis", group] => match discovery::group(&cluster.registry, group) {
            Some(document) => json_response(ctx, &document),
            None => text_not_found(),
        },
        ["apis", group, version] if cluster.registry.serves_group_version(group, version) => {
            json_response(
                ctx,
                &discovery::resource_list(
                    group,
                    version,
                    &cluster.registry.resources_in(group, version),
                ),
            )
        }
        _ => text_not_found(),
    })
}

/// The 404 the apiserver sends for a path no resource serves.
enum NotServed {
    /// A `Status` (inside a served group version, or in the core group).
    Status,
    /// `404 page not found` as plain text (outside any served group version).
    Text,
}

/// Looks up the resource a request targets.
fn find_resource(shared: &Shared, info: &RequestInfo) -> Result<Arc<ResourceDef>, NotServed> {
    let (def, served) = shared.read(|cluster| {
        (
            cluster
                .registry
                .get(&info.group, &info.version, &info.resource),
            cluster
                .registry
                .serves_group_version(&info.group, &info.version),
        )
    });
    let Some(def) = def else {
        return Err(if info.core || served {
            NotServed::Status
        } else {
            NotServed::Text
        });
    };
    let scope_mismatch = (def.namespaced && info.namespace.is_none() && info.name.is_some())
        || (!def.namespaced && info.namespace.is_some());
    let bad_subresource = info
        .subresource
        .as_deref()
        .is_some_and(|sub| sub != "status" || !def.status_subresource);
    if scope_mismatch || bad_subresource {
        return Err(NotServed::Status);
    }
    Ok(def)
}

async fn dispatch(
    shared: &Arc<Shared>,
    ctx: &RequestContext,
    info: &RequestInfo,
    def: &Arc<ResourceDef>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, StatusError> {
    if shared
        .write(|cluster| cluster.initializing_until(&def.storage))
        .is_some()
    {
        return Err(StatusError::too_many_requests(
            "storage is (re)initializing",
            1,
        ));
    }
    let namespace = info.namespace.as_deref();
    let name = info.name.as_deref().unwrap_or("");
    let subresource = info.subresource.as_deref();
    let dry_run = ctx.params.get("dryRun") == Some("All");

    match info.verb {
        Verb::Get => {
            let object = shared.read(|cluster| cluster.get(def, namespace, name))?;
            Ok(object_response(ctx, def, &object, StatusCode::OK))
        }
        Verb::List => {
            let options = ListOptions::parse(&ctx.params, def, false)?;
            let (body, content_type) = list::serve(shared, ctx, def, namespace, &options).await?;
            Ok(list_response(content_type, body))
        }
        Verb::Watch => {
            let options = ListOptions::parse(&ctx.params, def, true)?;
            watch::serve(shared, ctx, def, info.namespace.clone(), &options).await
        }
        Verb::Create => {
            if subresource.is_some() {
                return Err(StatusError::method_not_allowed("POST"));
            }
            let object = parse_object(body)?;
            let options = WriteOptions {
                dry_run,
                ..WriteOptions::new(&ctx.manager)
            };
            let created =
                shared.write(|cluster| cluster.create(def, namespace, object, &options))?;
            Ok(object_response(ctx, def, &created, StatusCode::CREATED))
        }
        Verb::Update => {
            let object = parse_object(body)?;
            let options = WriteOptions {
                dry_run,
                subresource,
                ..WriteOptions::new(&ctx.manager)
            };
            let updated =
                shared.write(|cluster| cluster.update(def, namespace, name, object, &options))?;
            Ok(object_response(ctx, def, &updated, StatusCode::OK))
        }
        Verb::Patch => serve_patch(shared, ctx, def, info, headers, body, dry_run),
        Verb::Delete => serve_delete(shared, ctx, def, info, body, dry_run),
        Verb::DeleteCollection => serve_delete_collection(shared, ctx, def, namespace, dry_run),
    }
}

fn serve_patch(
    shared: &Shared,
    ctx: &RequestContext,
    def: &Arc<ResourceDef>,
    info: &RequestInfo,
    headers: &HeaderMap,
    body: &Bytes,
    dry_run: bool,
) -> Result<Response, StatusError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .ok_or_else(|| StatusError::unsupported_media_type(content_type))?;
    let patch_body = patch::parse_body(body)?;
    if patch_type == PatchType::Apply && ctx.params.get("fieldManager").is_none_or(str::is_empty) {
        return Err(StatusError::invalid_patch_options(&[FieldError::required(
            "fieldManager",
            "is required for apply patch",
        )]));
    }
    let options = WriteOptions {
        manager: &ctx.manager,
        dry_run,
        subresource: info.subresource.as_deref(),
        applied: (patch_type == PatchType::Apply).then_some(&patch_body),
    };
    let name = info.name.as_deref().unwrap_or("");
    let (object, created) = shared.write(|cluster| {
        cluster.patch(
            def,
            info.namespace.as_deref(),
            name,
            patch_type,
            &patch_body,
            &options,
        )
    })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(object_response(ctx, def, &object, status))
}

fn serve_delete(
    shared: &Shared,
    ctx: &RequestContext,
    def: &Arc<ResourceDef>,
    info: &RequestInfo,
    body: &Bytes,
    dry_run: bool,
) -> Result<Response, StatusError> {
    let options = delete_options(body, dry_run)?;
    let name = info.name.as_deref().unwrap_or("");
    let outcome =
        shared.write(|cluster| cluster.delete(def, info.namespace.as_deref(), name, &options))?;
    match outcome {
        DeleteOutcome::Pending(object) => Ok(object_response(ctx, def, &object, StatusCode::OK)),
        DeleteOutcome::Deleted(last) => {
            if def.behavior == Behavior::Namespace {
                return Ok(object_response(ctx, def, &last, StatusCode::OK));
            }
            let mut body = status::delete_success(def, name, meta_str(&last, "uid"));
            body.push(b'\n');
            Ok(bytes_response(StatusCode::OK, JSON, body))
        }
    }
}

/// Deletes every object the selectors match and returns them as a list.
fn serve_delete_collection(
    shared: &Shared,
    ctx: &RequestContext,
    def: &Arc<ResourceDef>,
    namespace: Option<&str>,
    dry_run: bool,
) -> Result<Response, StatusError> {
    let options = ListOptions::parse(&ctx.params, def, false)?;
    let delete = DeleteOptions {
        dry_run,
        ..DeleteOptions::default()
    };
    let (items, revision) = shared.write(|cluster| {
        let revision = cluster.store.revision();
        let page = cluster.list(def, namespace, &options.selectors, None, None, revision);
        let mut items = Vec::new();
        for object in page.items {
            let object_namespace = meta_str(&object, "namespace").to_owned();
            let name = meta_str(&object, "name").to_owned();
            let namespace = (!object_namespace.is_empty()).then_some(object_namespace.as_str());
            match cluster.delete(def, namespace, &name, &delete) {
                Ok(DeleteOutcome::Deleted(last) | DeleteOutcome::Pending(last)) => {
                    items.push(def.to_api_form(&last));
                }
                Err(error) => {
                    debug!(name = %name, error = %error, "deletecollection skipped an object")
                }
            }
        }
        (items, cluster.store.revision())
    });
    let metadata = encode::list_meta(revision, None, None, !def.builtin);
    let (body, content_type) = list::list_body(ctx, def, metadata, items);
    Ok(bytes_response(StatusCode::OK, content_type, body))
}

/// `DeleteOptions` from the body (preconditions, `dryRun`); the query's `dryRun` also counts.
fn delete_options(body: &Bytes, dry_run: bool) -> Result<DeleteOptions, StatusError> {
    let mut options = DeleteOptions {
        dry_run,
        ..DeleteOptions::default()
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(options);
    }
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        StatusError::bad_request(format!("error decoding DeleteOptions: {error}"))
    })?;
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    options.uid = text("/preconditions/uid");
    options.resource_version = text("/preconditions/resourceVersion");
    if value
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|modes| modes.iter().any(|mode| mode == "All"))
    {
        options.dry_run = true;
    }
    Ok(options)
}

fn parse_object(body: &Bytes) -> Result<Value, StatusError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| {
        StatusError::bad_request(format!(
            "couldn't get version/kind; json parse error: {error}"
        ))
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(StatusError::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ))
    }
}

fn object_response(
    ctx: &RequestContext,
    def: &ResourceDef,
    stored: &Value,
    status: StatusCode,
) -> Response {
    let object = def.to_api_form(stored);
    if ctx.metadata_only {
        let partial = partial_metadata(&object);
        let body = encode::encode(
            &Ordered {
                value: &partial,
                shape: &encode::PARTIAL_OBJECT_METADATA,
            },
            ctx.format,
        );
        return bytes_response(status, METADATA_CONTENT_TYPE, body);
    }
    let body = encode::encode(
        &Ordered {
            value: &object,
            shape: def.shape,
        },
        ctx.format,
    );
    bytes_response(status, JSON, body)
}

/// Converts an object to its `PartialObjectMetadata` form: its metadata only.
pub(crate) fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}
