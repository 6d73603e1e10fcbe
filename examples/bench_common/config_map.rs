//! The ConfigMap the benchmarks fill their caches and servers with: the metadata of a Helm
//! release, two managedFields entries and three data entries, about 1.3 KB as JSON.
//!
//! `benches/cache_memory.rs` and `examples/bench_k8s` include this file with `#[path]`.

use serde_json::{Value, json};

/// The number of namespaces the ConfigMaps are spread over.
pub const NAMESPACES: usize = 50;

/// Returns the namespace of ConfigMap number `index`.
pub fn namespace(index: usize) -> String {
    format!("team-{:02}", index % NAMESPACES)
}

/// Returns the name of ConfigMap number `index`.
pub fn name(index: usize) -> String {
    format!("{}-config-{index:06}", app(index))
}

fn app(index: usize) -> String {
    format!("app-{:03}", index % 200)
}

/// Returns ConfigMap number `index` as the API server serves it: labels and annotations from
/// a Helm release, two managedFields entries and three data entries, one of them a small
/// YAML file. `log_level` is the value of the `LOG_LEVEL` entry.
pub fn config_map(index: usize, resource_version: u64, log_level: &str) -> Value {
    let app = app(index);
    let namespace = namespace(index);
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name(index),
            "namespace": namespace,
            "uid": format!("3f1c2a7e-{:04x}-4b2d-9c1e-{index:012x}", index % 65_536),
            "resourceVersion": resource_version.to_string(),
            "creationTimestamp": "2025-03-01T12:00:00Z",
            "labels": {
                "app.kubernetes.io/name": app,
                "app.kubernetes.io/instance": format!("{app}-prod"),
                "app.kubernetes.io/managed-by": "Helm",
                "helm.sh/chart": "app-1.4.2",
            },
            "annotations": {
                "meta.helm.sh/release-name": format!("{app}-prod"),
                "meta.helm.sh/release-namespace": namespace,
            },
            "managedFields": [
                {
                    "manager": "helm",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2025-03-01T12:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:data": {
                            ".": {},
                            "f:FEATURE_FLAGS": {},
                            "f:LOG_LEVEL": {},
                            "f:config.yaml": {},
                        },
                        "f:metadata": {
                            "f:annotations": {
                                ".": {},
                                "f:meta.helm.sh/release-name": {},
                                "f:meta.helm.sh/release-namespace": {},
                            },
                            "f:labels": {
                                ".": {},
                                "f:app.kubernetes.io/instance": {},
                                "f:app.kubernetes.io/managed-by": {},
                                "f:app.kubernetes.io/name": {},
                                "f:helm.sh/chart": {},
                            },
                        },
                    },
                },
                {
                    "manager": "kubectl-edit",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2025-03-02T08:30:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": { "f:data": { "f:LOG_LEVEL": {} } },
                },
            ],
        },
        "data": {
            "LOG_LEVEL": log_level,
            "FEATURE_FLAGS": "search,checkout-v2,recommendations",
            "config.yaml": format!(
                "server:\n  port: 8080\n  readTimeout: 30s\ndatabase:\n  host: db.{namespace}.svc\n  pool: 20\ncache:\n  ttl: 300s\n"
            ),
        },
    })
}
