//! The target of a request: the apiserver's request info (verb, group, version, resource,
//! namespace, name, subresource) parsed from the method and path, and the query parameters.

use std::collections::HashMap;

use axum::http::{Method, Uri};

use super::encode::Format;
use super::faults::Verb;

/// The resource a request targets and the verb it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    /// `true` for `/api` (the core group), `false` for `/apis/{group}`.
    pub(crate) core: bool,
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) resource: String,
    pub(crate) subresource: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) verb: Verb,
}

/// Subresources of a namespace, which the path `namespaces/{name}/{sub}` names.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// Parses a resource request; discovery and other paths give `None`.
    pub(crate) fn parse(method: &Method, uri: &Uri, params: &Params) -> Option<Self> {
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let (core, group, version, mut rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => (true, "", *version, rest),
            ["apis", group, version, rest @ ..] => (false, *group, *version, rest),
            _ => return None,
        };
        if rest.is_empty() {
            return None;
        }

        // The legacy `/watch/` prefix.
        let mut legacy_watch = false;
        if rest[0] == "watch" {
            legacy_watch = true;
            rest = &rest[1..];
        }

        let mut namespace = None;
        if rest.len() > 1 && rest[0] == "namespaces" {
            namespace = Some(rest[1].to_owned());
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, subresource] => (*resource, Some(*name), Some(*subresource)),
            _ => return None,
        };
        // `namespaces/{name}` is the namespace object itself, not a namespaced request.
        if resource == "namespaces" {
            namespace = None;
        }
        if resource.is_empty() || name == Some("") {
            return None;
        }

        let watch = legacy_watch || params.flag("watch");
        let verb = match (method.as_str(), name.is_some()) {
            ("GET" | "HEAD", true) if legacy_watch => Verb::Watch,
            ("GET" | "HEAD", true) => Verb::Get,
            ("GET" | "HEAD", false) if watch => Verb::Watch,
            ("GET" | "HEAD", false) => Verb::List,
            ("POST", _) => Verb::Create,
            ("PUT", _) => Verb::Update,
            ("PATCH", _) => Verb::Patch,
            ("DELETE", true) => Verb::Delete,
            ("DELETE", false) => Verb::DeleteCollection,
            _ => return None,
        };
        Some(Self {
            core,
            group: group.to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
            subresource: subresource.map(str::to_owned),
            namespace,
            name: name.map(str::to_owned),
            verb,
        })
    }
}

/// The query parameters of a request. A repeated parameter keeps its first value.
#[derive(Clone, Debug, Default)]
pub(crate) struct Params {
    values: HashMap<String, String>,
}

impl Params {
    pub(crate) fn parse(uri: &Uri) -> Self {
        let mut values = HashMap::new();
        if let Some(query) = uri.query() {
            for (key, value) in form_pairs(query) {
                values.entry(key).or_insert(value);
            }
        }
        Self { values }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Reads a boolean parameter as Go's `strconv.ParseBool` does. Missing or invalid is
    /// false.
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

/// Decodes `a=b&c=d` with `+` as space and percent escapes; an undecodable query is empty.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    let uri: Uri = match format!("/?{query}").parse() {
        Ok(uri) => uri,
        Err(_) => return Vec::new(),
    };
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|axum::extract::Query(pairs)| pairs)
        .unwrap_or_default()
}

/// The facts about a request that the server settles before it routes it.
#[derive(Clone, Debug)]
pub(crate) struct RequestContext {
    pub(crate) user: String,
    pub(crate) info: Option<RequestInfo>,
    pub(crate) params: Params,
    pub(crate) format: Format,
    /// The field manager of writes: `fieldManager`, or the User-Agent up to its first `/`.
    pub(crate) manager: String,
    /// Whether the client asked for `PartialObjectMetadata`.
    pub(crate) metadata_only: bool,
    /// Whether the client asked for aggregated discovery.
    pub(crate) aggregated_discovery: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> Option<RequestInfo> {
        let uri: Uri = path.parse().unwrap();
        RequestInfo::parse(&method, &uri, &Params::parse(&uri))
    }

    #[test]
    fn namespaced_paths() {
        let info = parse(Method::GET, "/api/v1/namespaces/proto/configmaps/cm-1").unwrap();
        assert_eq!(info.namespace.as_deref(), Some("proto"));
        assert_eq!(info.resource, "configmaps");
        assert_eq!(info.name.as_deref(), Some("cm-1"));
        assert_eq!(info.verb, Verb::Get);

        let info = parse(
            Method::GET,
            "/apis/example.com/v1/namespaces/proto/widgets?watch=1",
        )
        .unwrap();
        assert_eq!(info.group, "example.com");
        assert_eq!(info.verb, Verb::Watch);

        let info = parse(
            Method::PATCH,
            "/apis/example.com/v1/namespaces/p/widgets/w1/status",
        )
        .unwrap();
        assert_eq!(info.subresource.as_deref(), Some("status"));
    }

    #[test]
    fn namespace_object_paths() {
        let info = parse(Method::GET, "/api/v1/namespaces/proto").unwrap();
        assert_eq!(info.resource, "namespaces");
        assert_eq!(info.name.as_deref(), Some("proto"));
        assert_eq!(info.namespace, None);

        let info = parse(Method::PUT, "/api/v1/namespaces/proto/status").unwrap();
        assert_eq!(info.resource, "namespaces");
        assert_eq!(info.subresource.as_deref(), Some("status"));

        let info = parse(Method::DELETE, "/api/v1/configmaps").unwrap();
        assert_eq!(info.verb, Verb::DeleteCollection);
        assert_eq!(parse(Method::GET, "/api/v1"), None);
    }

    #[test]
    fn query_decoding() {
        let uri: Uri = "/x?labelSelector=tier%3Dfrontend&a=b+c&watch=true"
            .parse()
            .unwrap();
        let params = Params::parse(&uri);
        assert_eq!(params.get("labelSelector"), Some("tier=frontend"));
        assert_eq!(params.get("a"), Some("b c"));
        assert!(params.flag("watch"));
    }
}
