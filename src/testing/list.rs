//! LIST: list options and their validation, resourceVersion semantics, pagination with
//! continue tokens, and the list body.

use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::cluster::list_prefix;
use super::encode::{self, ListBody};
use super::request::{Params, RequestContext};
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::shared::Shared;
use super::status::{FieldError, StatusError};

/// The list and watch query parameters, as `metav1.ListOptions` has them.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListOptions {
    /// Empty means unset, as in Go.
    pub(crate) resource_version: String,
    /// Empty means unset.
    pub(crate) resource_version_match: String,
    pub(crate) limit: Option<usize>,
    pub(crate) continue_token: String,
    pub(crate) send_initial_events: Option<bool>,
    pub(crate) allow_bookmarks: bool,
    pub(crate) timeout_seconds: Option<u64>,
    pub(crate) watch: bool,
    pub(crate) selectors: Selectors,
}

impl ListOptions {
    /// Reads and validates the options of a list or watch of `def`.
    pub(crate) fn parse(
        params: &Params,
        def: &ResourceDef,
        watch: bool,
    ) -> Result<Self, StatusError> {
        let limit = match params.get("limit") {
            Some(text) if !text.is_empty() => Some(text.parse::<i64>().map_err(|_| {
                StatusError::bad_request(format!("invalid value for limit: {text:?}"))
            })?),
            _ => None,
        };
        let timeout_seconds = match params.get("timeoutSeconds") {
            Some(text) if !text.is_empty() => Some(text.parse::<u64>().map_err(|_| {
                StatusError::bad_request(format!("invalid value for timeoutSeconds: {text:?}"))
            })?),
            _ => None,
        };
        let send_initial_events = match params.get("sendInitialEvents") {
            Some("true" | "1" | "True" | "TRUE" | "t" | "T") => Some(true),
            Some("false" | "0" | "False" | "FALSE" | "f" | "F") => Some(false),
            Some(other) => {
                return Err(StatusError::bad_request(format!(
                    "invalid value for sendInitialEvents: {other:?}"
                )));
            }
            None => None,
        };
        let selectors = Selectors {
            labels: LabelSelector::parse(params.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(params.get("fieldSelector").unwrap_or(""), def)?,
        };
        let options = Self {
            resource_version: params.get("resourceVersion").unwrap_or("").to_owned(),
            resource_version_match: params.get("resourceVersionMatch").unwrap_or("").to_owned(),
            limit: limit.filter(|limit| *limit > 0).map(|limit| limit as usize),
            continue_token: params.get("continue").unwrap_or("").to_owned(),
            send_initial_events,
            allow_bookmarks: params.flag("allowWatchBookmarks"),
            timeout_seconds,
            watch,
            selectors,
        };
        options.validate()?;
        Ok(options)
    }

    /// Runs the checks of `ValidateListOptions` in `k8s.io/apiserver`, with its messages.
    fn validate(&self) -> Result<(), StatusError> {
        let mut errors = Vec::new();
        let matching = self.resource_version_match.as_str();
        if self.watch {
            if self.send_initial_events.is_some() && matching != "NotOlderThan" {
                errors.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !matching.is_empty() {
                if self.send_initial_events.is_none() {
                    errors.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if matching != "NotOlderThan" {
                    errors.push(FieldError::not_supported(
                        "resourceVersionMatch",
                        format!("{matching:?}"),
                        &["NotOlderThan"],
                    ));
                }
                if !self.continue_token.is_empty() {
                    errors.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
        } else {
            if !matching.is_empty() {
                if self.resource_version.is_empty() {
                    errors.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    ));
                }
                if !self.continue_token.is_empty() {
                    errors.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
                if matching != "Exact" && matching != "NotOlderThan" {
                    errors.push(FieldError::not_supported(
                        "resourceVersionMatch",
                        format!("{matching:?}"),
                        &["Exact", "NotOlderThan", ""],
                    ));
                }
                if matching == "Exact" && self.resource_version == "0" {
                    errors.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ));
                }
            }
            if self.send_initial_events.is_some() {
                errors.push(FieldError::forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden for list",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(StatusError::invalid_list_options(&errors))
        }
    }

    /// Parses the requested resourceVersion. `None` means unset or `0`.
    pub(crate) fn requested_revision(&self) -> Result<Option<i64>, StatusError> {
        parse_resource_version(&self.resource_version)
    }
}

/// Parses a resourceVersion; empty and `0` mean "any".
pub(crate) fn parse_resource_version(text: &str) -> Result<Option<i64>, StatusError> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(0) => Ok(None),
        Ok(revision) if revision > 0 => Ok(Some(revision)),
        _ => Err(StatusError::bad_request(format!(
            "invalid resource version {text:?}: a resource version is a positive integer"
        ))),
    }
}

/// The opaque continue token, as `k8s.io/apiserver/pkg/storage` encodes it: base64url (no
/// padding) of `{"v":"meta.k8s.io/v1","rv":N,"start":"…\u0000"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContinueToken {
    pub(crate) v: String,
    pub(crate) rv: i64,
    pub(crate) start: String,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

impl ContinueToken {
    /// Builds the token of a page that ended at `last_key`, relative to the list's `prefix`.
    pub(crate) fn after(revision: i64, prefix: &str, last_key: &str) -> Self {
        let relative = last_key.strip_prefix(prefix).unwrap_or(last_key);
        Self {
            v: TOKEN_VERSION.to_owned(),
            rv: revision,
            start: format!("/{relative}\u{0}"),
        }
    }

    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a continue token serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub(crate) fn decode(text: &str) -> Result<Self, StatusError> {
        let invalid =
            |detail: &str| StatusError::bad_request(format!("continue key is not valid: {detail}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| invalid("the token is not base64url"))?;
        let token: Self =
            serde_json::from_slice(&bytes).map_err(|_| invalid("the token is not JSON"))?;
        if token.v != TOKEN_VERSION {
            return Err(invalid(&format!(
                "incorrect encoded start resourceVersion (version {TOKEN_VERSION})"
            )));
        }
        if token.start.split('/').any(|segment| segment == "..") {
            return Err(invalid("the start key is not a valid path"));
        }
        Ok(token)
    }

    /// Returns the store key the next page starts at (inclusive), for a list with `prefix`.
    pub(crate) fn start_key(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.start.trim_start_matches('/'))
    }
}

/// Serves a LIST.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    ctx: &RequestContext,
    def: &Arc<ResourceDef>,
    namespace: Option<&str>,
    options: &ListOptions,
) -> Result<(Vec<u8>, &'static str), StatusError> {
    let prefix = list_prefix(namespace);
    let (revision, start) = if options.continue_token.is_empty() {
        (resolve_revision(shared, options).await?, None)
    } else {
        let (revision, start) = resolve_continue(shared, options, &prefix)?;
        (revision, Some(start))
    };

    let page = shared.read(|cluster| {
        cluster.list(
            def,
            namespace,
            &options.selectors,
            start.as_deref(),
            options.limit,
            revision,
        )
    });
    let token = page
        .continue_after
        .as_deref()
        .map(|last| ContinueToken::after(revision, &prefix, last).encode());
    let metadata = encode::list_meta(revision, token.as_deref(), page.remaining, !def.builtin);
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|item| def.to_api_form(item))
        .collect();
    Ok(list_body(ctx, def, metadata, items))
}

/// Encodes a list for `def`, or as `PartialObjectMetadataList` when the client asked for it.
pub(crate) fn list_body(
    ctx: &RequestContext,
    def: &ResourceDef,
    metadata: Value,
    mut items: Vec<Value>,
) -> (Vec<u8>, &'static str) {
    if ctx.metadata_only {
        let items = items.iter().map(super::http::partial_metadata).collect();
        let body = ListBody {
            kind: "PartialObjectMetadataList",
            api_version: "meta.k8s.io/v1",
            metadata,
            items,
            item_shape: Some(&encode::PARTIAL_OBJECT_METADATA),
        };
        return (
            encode::encode(&body, ctx.format),
            super::http::METADATA_LIST_CONTENT_TYPE,
        );
    }
    if def.builtin {
        for item in &mut items {
            if let Some(map) = item.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
        }
    }
    let api_version = def.api_version();
    let body = ListBody {
        kind: &def.list_kind,
        api_version: &api_version,
        metadata,
        items,
        item_shape: def.builtin.then_some(def.shape),
    };
    (encode::encode(&body, ctx.format), super::http::JSON)
}

/// Picks the revision a list without a continue token is read at.
async fn resolve_revision(shared: &Arc<Shared>, options: &ListOptions) -> Result<i64, StatusError> {
    let Some(requested) = options.requested_revision()? else {
        return Ok(shared.read(|cluster| cluster.store.revision()));
    };
    // A resourceVersion with a limit and no match is an exact read, for compatibility.
    let exact = options.resource_version_match == "Exact"
        || (options.resource_version_match.is_empty() && options.limit.is_some());
    let compacted = shared.read(|cluster| cluster.store.compacted());
    if exact && requested < compacted {
        return Err(StatusError::expired(
            "The resourceVersion for the provided list is too old.",
        ));
    }
    let current = wait_for_revision(shared, requested).await?;
    Ok(if exact { requested } else { current })
}

/// Picks the revision and start key of a continued list.
fn resolve_continue(
    shared: &Arc<Shared>,
    options: &ListOptions,
    prefix: &str,
) -> Result<(i64, String), StatusError> {
    if !options.resource_version.is_empty() && options.resource_version != "0" {
        return Err(StatusError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let token = ContinueToken::decode(&options.continue_token)?;
    let start = token.start_key(prefix);
    let (current, compacted) =
        shared.read(|cluster| (cluster.store.revision(), cluster.store.compacted()));
    if token.rv == -1 {
        return Ok((current, start));
    }
    if token.rv < compacted {
        let mut error = StatusError::expired(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter, or use the continue token \
             in this response to retrieve the remainder of the results. Continuing with the \
             provided token results in an inconsistent list - objects that were created, \
             modified, or deleted between the time the first chunk was returned and now may show \
             up in the list.",
        );
        let fresh = ContinueToken {
            v: TOKEN_VERSION.to_owned(),
            rv: -1,
            start: token.start.trim_start_matches('/').to_owned(),
        };
        error.continue_token = Some(fresh.encode());
        return Err(error);
    }
    Ok((token.rv.min(current), start))
}

/// Waits until the store reaches `target`, for at most the configured time, as the watch
/// cache does. After that it fails with `504 Too large resource version`.
pub(crate) async fn wait_for_revision(
    shared: &Arc<Shared>,
    target: i64,
) -> Result<i64, StatusError> {
    let mut revisions = shared.subscribe_revision();
    let deadline = Instant::now() + shared.config.future_resource_version_wait;
    loop {
        let current = *revisions.borrow_and_update();
        if current >= target {
            return Ok(current);
        }
        match timeout_at(deadline, revisions.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Err(StatusError::too_large_resource_version(target, current)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_apiserver_encoding() {
        let token = ContinueToken::after(516, "proto/", "proto/cm-2");
        assert_eq!(
            token.encode(),
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NTE2LCJzdGFydCI6Ii9jbS0yXHUwMDAwIn0"
        );
        let decoded = ContinueToken::decode(&token.encode()).unwrap();
        assert_eq!(decoded.start_key("proto/"), "proto/cm-2\u{0}");
    }

    #[test]
    fn expired_token_encoding() {
        let token = ContinueToken {
            v: TOKEN_VERSION.to_owned(),
            rv: -1,
            start: "cm-2\u{0}".to_owned(),
        };
        assert_eq!(
            token.encode(),
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTEsInN0YXJ0IjoiY20tMlx1MDAwMCJ9"
        );
    }

    #[test]
    fn list_option_errors() {
        let def = ResourceDef::new("", "v1", "ConfigMap", "configmaps");
        let params = Params::parse(
            &"/x?sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                .parse()
                .unwrap(),
        );
        let error = ListOptions::parse(&params, &def, false).unwrap_err();
        assert_eq!(
            error.message,
            "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided, sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list]"
        );
        let params = Params::parse(&"/x?watch=1&sendInitialEvents=true".parse().unwrap());
        let error = ListOptions::parse(&params, &def, true).unwrap_err();
        assert_eq!(
            error.message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
        );
    }
}
