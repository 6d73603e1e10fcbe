//! Discovery documents: `/version`, `/api`, `/apis`, group and group-version resource lists,
//! and aggregated discovery (`apidiscovery.k8s.io/v2`).

use std::hash::Hasher;
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;

use super::resources::{Registry, ResourceDef, api_version_of};

/// The Kubernetes version the server reports and imitates.
pub(crate) const KUBERNETES_MAJOR: &str = "1";
pub(crate) const KUBERNETES_MINOR: &str = "36";

/// The content type of aggregated discovery responses.
pub(crate) const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo {
    major: &'static str,
    minor: &'static str,
    emulation_major: &'static str,
    emulation_minor: &'static str,
    min_compatibility_major: &'static str,
    min_compatibility_minor: &'static str,
    git_version: String,
    git_commit: &'static str,
    git_tree_state: &'static str,
    build_date: &'static str,
    go_version: &'static str,
    compiler: &'static str,
    platform: String,
}

/// `/version`: always indented, without a trailing newline.
pub(crate) fn version() -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let info = VersionInfo {
        major: KUBERNETES_MAJOR,
        minor: KUBERNETES_MINOR,
        emulation_major: KUBERNETES_MAJOR,
        emulation_minor: KUBERNETES_MINOR,
        min_compatibility_major: KUBERNETES_MAJOR,
        min_compatibility_minor: "35",
        git_version: format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.2"),
        git_commit: "",
        git_tree_state: "",
        build_date: "1970-01-01T00:00:00Z",
        go_version: "",
        compiler: "informer-test-server",
        platform: format!("{}/{arch}", std::env::consts::OS),
    };
    serde_json::to_vec_pretty(&info).expect("version info serializes")
}

#[derive(Serialize)]
struct ServerAddress {
    #[serde(rename = "clientCIDR")]
    client_cidr: &'static str,
    #[serde(rename = "serverAddress")]
    server_address: String,
}

#[derive(Serialize)]
struct ApiVersions {
    kind: &'static str,
    versions: Vec<&'static str>,
    #[serde(rename = "serverAddressByClientCIDRs")]
    server_addresses: Vec<ServerAddress>,
}

/// `/api`: the core group's versions.
pub(crate) fn core_versions(address: SocketAddr) -> impl Serialize {
    ApiVersions {
        kind: "APIVersions",
        versions: vec!["v1"],
        server_addresses: vec![ServerAddress {
            client_cidr: "0.0.0.0/0",
            server_address: address.to_string(),
        }],
    }
}

#[derive(Serialize)]
struct GroupVersion {
    #[serde(rename = "groupVersion")]
    group_version: String,
    version: String,
}

#[derive(Serialize)]
struct ApiGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    name: String,
    versions: Vec<GroupVersion>,
    #[serde(rename = "preferredVersion")]
    preferred_version: GroupVersion,
}

fn api_group(group: &str, versions: &[String], top_level: bool) -> ApiGroup {
    let entries: Vec<GroupVersion> = versions
        .iter()
        .map(|version| GroupVersion {
            group_version: api_version_of(group, version),
            version: version.clone(),
        })
        .collect();
    let preferred = versions.first().cloned().unwrap_or_default();
    ApiGroup {
        kind: top_level.then_some("APIGroup"),
        api_version: top_level.then_some("v1"),
        name: group.to_owned(),
        versions: entries,
        preferred_version: GroupVersion {
            group_version: api_version_of(group, &preferred),
            version: preferred,
        },
    }
}

#[derive(Serialize)]
struct ApiGroupList {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    groups: Vec<ApiGroup>,
}

/// `/apis`: every group other than the core group.
pub(crate) fn group_list(registry: &Registry) -> impl Serialize {
    ApiGroupList {
        kind: "APIGroupList",
        api_version: "v1",
        groups: registry
            .groups()
            .iter()
            .map(|(group, versions)| api_group(group, versions, false))
            .collect(),
    }
}

/// `/apis/{group}`, if the group is served.
pub(crate) fn group(registry: &Registry, name: &str) -> Option<impl Serialize + use<>> {
    let (group, versions) = registry
        .groups()
        .into_iter()
        .find(|(group, _)| group == name)?;
    Some(api_group(&group, &versions, true))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiResource {
    name: String,
    singular_name: String,
    namespaced: bool,
    kind: String,
    verbs: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    short_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    categories: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_version_hash: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiResourceList {
    kind: &'static str,
    api_version: &'static str,
    group_version: String,
    resources: Vec<ApiResource>,
}

const BUILTIN_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CUSTOM_VERBS: [&str; 8] = [
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];

fn verbs(def: &ResourceDef) -> Vec<&'static str> {
    if def.builtin {
        BUILTIN_VERBS.to_vec()
    } else {
        CUSTOM_VERBS.to_vec()
    }
}

/// An opaque hash of the storage version, as `storageVersionHash` carries: eight bytes,
/// base64. Clients only compare it.
fn storage_version_hash(def: &ResourceDef) -> String {
    // FNV-1a over `group/version/kind` of the stored form.
    let mut hasher = Fnv1a::default();
    hasher.write(format!("{}/{}", def.storage_api_version, def.kind).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(hasher.finish().to_be_bytes())
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
pub(crate) fn resource_list(
    group: &str,
    version: &str,
    defs: &[Arc<ResourceDef>],
) -> impl Serialize {
    let mut resources = Vec::new();
    for def in defs {
        resources.push(ApiResource {
            name: def.plural.clone(),
            singular_name: def.singular.clone(),
            namespaced: def.namespaced,
            kind: def.kind.clone(),
            verbs: verbs(def),
            short_names: def.short_names.clone(),
            categories: def.categories.clone(),
            storage_version_hash: Some(storage_version_hash(def)),
        });
        if def.status_subresource {
            resources.push(ApiResource {
                name: format!("{}/status", def.plural),
                singular_name: String::new(),
                namespaced: def.namespaced,
                kind: def.kind.clone(),
                verbs: STATUS_VERBS.to_vec(),
                short_names: Vec::new(),
                categories: Vec::new(),
                storage_version_hash: None,
            });
        }
    }
    ApiResourceList {
        kind: "APIResourceList",
        api_version: "v1",
        group_version: api_version_of(group, version),
        resources,
    }
}

#[derive(Serialize)]
struct Kind {
    group: String,
    version: String,
    kind: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubresourceDiscovery {
    subresource: &'static str,
    response_kind: Kind,
    verbs: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDiscovery {
    resource: String,
    response_kind: Kind,
    scope: &'static str,
    singular_resource: String,
    verbs: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    short_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    categories: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subresources: Vec<SubresourceDiscovery>,
}

#[derive(Serialize)]
struct VersionDiscovery {
    version: String,
    resources: Vec<ResourceDiscovery>,
    freshness: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DiscoveryMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    creation_timestamp: Option<String>,
}

#[derive(Serialize)]
struct GroupDiscovery {
    metadata: DiscoveryMetadata,
    versions: Vec<VersionDiscovery>,
}

#[derive(Serialize)]
struct GroupDiscoveryList {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: serde_json::Value,
    items: Vec<GroupDiscovery>,
}

fn kind_of(def: &ResourceDef) -> Kind {
    Kind {
        group: def.group.clone(),
        version: def.version.clone(),
        kind: def.kind.clone(),
    }
}

fn group_discovery(registry: &Registry, group: &str, versions: &[String]) -> GroupDiscovery {
    let versions = versions
        .iter()
        .map(|version| VersionDiscovery {
            version: version.clone(),
            resources: registry
                .resources_in(group, version)
                .iter()
                .map(|def| ResourceDiscovery {
                    resource: def.plural.clone(),
                    response_kind: kind_of(def),
                    scope: if def.namespaced {
                        "Namespaced"
                    } else {
                        "Cluster"
                    },
                    singular_resource: def.singular.clone(),
                    verbs: verbs(def),
                    short_names: def.short_names.clone(),
                    categories: def.categories.clone(),
                    subresources: if def.status_subresource {
                        vec![SubresourceDiscovery {
                            subresource: "status",
                            response_kind: kind_of(def),
                            verbs: STATUS_VERBS.to_vec(),
                        }]
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
            freshness: "Current",
        })
        .collect();
    GroupDiscovery {
        metadata: DiscoveryMetadata {
            name: (!group.is_empty()).then(|| group.to_owned()),
            creation_timestamp: None,
        },
        versions,
    }
}

/// Aggregated discovery of the core group (`/api`) or of every other group (`/apis`).
pub(crate) fn aggregated(registry: &Registry, core: bool) -> impl Serialize {
    let items = if core {
        vec![group_discovery(registry, "", &["v1".to_owned()])]
    } else {
        registry
            .groups()
            .iter()
            .map(|(group, versions)| group_discovery(registry, group, versions))
            .collect()
    };
    GroupDiscoveryList {
        kind: "APIGroupDiscoveryList",
        api_version: "apidiscovery.k8s.io/v2",
        metadata: serde_json::json!({}),
        items,
    }
}
