//! Tests of the Kubernetes API test server against kube-rs and against raw HTTP, with the
//! response bodies compared to bodies captured from kube-apiserver v1.36.2 (the `recorded`
//! module at the end). Volatile values (uids, resourceVersions, timestamps, continue tokens)
//! are masked before a comparison; everything else must match byte for byte, field order
//! included.
#![cfg(feature = "test-server")]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use futures::{StreamExt, TryStreamExt};
use informer::testing::{
    ADMIN_USER, ExpiredWatchForm, Failure, RequestMatch, ResourceDef, RestartHistory, TestServer,
    TestServerConfig, Verb,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const KUBECTL_CREATE: &str = "kubectl-create/v1.36.2 (linux/amd64) kubernetes/test";
const KUBECTL_PATCH: &str = "kubectl-patch/v1.36.2 (linux/amd64) kubernetes/test";
const KUBECTL_LABEL: &str = "kubectl-label/v1.36.2 (linux/amd64) kubernetes/test";
const CAPTURE: &str = "k8sproto-capture/1.0";
const MERGE: &str = "application/merge-patch+json";

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client, to see status lines, headers, chunks and body bytes as sent.
// ---------------------------------------------------------------------------------------------

struct RawClient {
    address: SocketAddr,
    token: String,
}

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("the body is UTF-8")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// How a streamed body ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The terminating zero-size chunk: a clean end.
    Clean,
    /// The connection closed without it.
    Closed,
    /// Nothing arrived within the wait.
    Silent,
}

struct RawStream {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
}

impl RawStream {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Reads the next chunk, or how the body ended.
    async fn next_chunk(&mut self, wait: Duration) -> Result<Vec<u8>, Ending> {
        let mut size_line = String::new();
        match tokio::time::timeout(wait, self.reader.read_line(&mut size_line)).await {
            Err(_) => return Err(Ending::Silent),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(Ending::Closed),
            Ok(Ok(_)) => {}
        }
        let size = usize::from_str_radix(size_line.trim(), 16).expect("a chunk size line");
        let mut data = vec![0; size + 2];
        if self.reader.read_exact(&mut data).await.is_err() {
            return Err(Ending::Closed);
        }
        assert_eq!(&data[size..], b"\r\n", "a chunk ends with CRLF");
        data.truncate(size);
        if size == 0 {
            return Err(Ending::Clean);
        }
        Ok(data)
    }

    /// Reads every event line until the body ends or `wait` passes without data. Each event
    /// must arrive as exactly one chunk.
    async fn lines(&mut self, wait: Duration) -> (Vec<String>, Ending) {
        let mut lines = Vec::new();
        loop {
            match self.next_chunk(wait).await {
                Ok(chunk) => {
                    let text = String::from_utf8(chunk).expect("a chunk is UTF-8");
                    assert!(text.ends_with('\n'), "one event per chunk: {text}");
                    assert_eq!(text.matches('\n').count(), 1, "one event per chunk: {text}");
                    lines.push(text.trim_end().to_owned());
                }
                Err(ending) => return (lines, ending),
            }
        }
    }

    /// Reads the next `count` event lines, each within ten minutes (of the paused clock, in
    /// most tests).
    async fn take(&mut self, count: usize) -> Vec<String> {
        let mut lines = Vec::new();
        while lines.len() < count {
            let chunk = self
                .next_chunk(Duration::from_secs(600))
                .await
                .unwrap_or_else(|ending| panic!("stream ended ({ending:?}) after {lines:?}"));
            lines.push(String::from_utf8(chunk).unwrap().trim_end().to_owned());
        }
        lines
    }
}

impl RawClient {
    fn new(server: &TestServer) -> Self {
        Self {
            address: server.address(),
            token: server.token_for(ADMIN_USER),
        }
    }

    fn as_user(server: &TestServer, user: &str) -> Self {
        Self {
            address: server.address(),
            token: server.token_for(user),
        }
    }

    async fn send_head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (BufReader<TcpStream>, u16, Vec<(String, String)>) {
        let mut stream = TcpStream::connect(self.address).await.expect("connect");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.address);
        if !self.token.is_empty() {
            request.push_str(&format!("Authorization: Bearer {}\r\n", self.token));
        }
        let mut has_agent = false;
        for (name, value) in headers {
            has_agent |= name.eq_ignore_ascii_case("user-agent");
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if !has_agent {
            request.push_str(&format!("User-Agent: {CAPTURE}\r\n"));
        }
        request.push_str("Accept: application/json\r\nConnection: close\r\n");
        if let Some(body) = body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        if let Some(body) = body {
            request.push_str(body);
        }
        stream.write_all(request.as_bytes()).await.expect("write");

        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader
            .read_line(&mut status_line)
            .await
            .expect("status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        (reader, status, headers)
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> RawResponse {
        let (reader, status, headers) = self.send_head(method, path, headers, body).await;
        let mut stream = RawStream {
            reader,
            status,
            headers,
        };
        let mut body = Vec::new();
        if stream.header("transfer-encoding") == Some("chunked") {
            while let Ok(chunk) = stream.next_chunk(Duration::from_secs(30)).await {
                body.extend(chunk);
            }
        } else if let Some(length) = stream.header("content-length") {
            body = vec![0; length.parse().unwrap()];
            stream.reader.read_exact(&mut body).await.expect("body");
        } else {
            stream.reader.read_to_end(&mut body).await.expect("body");
        }
        RawResponse {
            status: stream.status,
            headers: stream.headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> RawResponse {
        self.request("GET", path, &[], None).await
    }

    async fn post(&self, path: &str, body: &str, agent: &str) -> RawResponse {
        let headers = [("Content-Type", "application/json"), ("User-Agent", agent)];
        self.request("POST", path, &headers, Some(body)).await
    }

    async fn patch(&self, path: &str, body: &str, agent: &str) -> RawResponse {
        let headers = [("Content-Type", MERGE), ("User-Agent", agent)];
        self.request("PATCH", path, &headers, Some(body)).await
    }

    async fn delete(&self, path: &str, body: Option<&str>) -> RawResponse {
        let headers = [("Content-Type", "application/json")];
        self.request("DELETE", path, &headers, body).await
    }

    async fn stream(&self, path: &str) -> RawStream {
        let (reader, status, headers) = self.send_head("GET", path, &[], None).await;
        RawStream {
            reader,
            status,
            headers,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Normalization: mask the values that differ between any two runs.
// ---------------------------------------------------------------------------------------------

const VOLATILE_KEYS: [&str; 8] = [
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "time",
    "lastTransitionTime",
    "continue",
    "storageVersionHash",
];

/// Replaces the string values of volatile keys with `…`, leaving empty strings alone.
fn normalize(text: &str) -> String {
    let mut out = text.trim_end_matches('\n').to_owned();
    for key in VOLATILE_KEYS {
        out = mask_strings(&out, &format!("\"{key}\":\""));
        out = mask_strings(&out, &format!("\"{key}\": \""));
    }
    out
}

fn mask_strings(text: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(index) = rest.find(marker) {
        out.push_str(&rest[..index + marker.len()]);
        rest = &rest[index + marker.len()..];
        let end = rest.find('"').expect("a closing quote");
        if end > 0 {
            out.push('…');
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Replaces the JSON value after `"key":` (an array or object) with `…`.
fn mask_value(text: &str, key: &str) -> String {
    let marker = format!("\"{key}\":");
    let mut out = String::new();
    let mut rest = text;
    while let Some(index) = rest.find(&marker) {
        out.push_str(&rest[..index + marker.len()]);
        rest = &rest[index + marker.len()..];
        let mut depth = 0i32;
        let mut in_string = false;
        let mut escaped = false;
        let mut end = 0;
        for (position, ch) in rest.char_indices() {
            if in_string {
                match (escaped, ch) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match ch {
                '"' => in_string = true,
                '[' | '{' => depth += 1,
                ']' | '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = position + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push('…');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn assert_same(actual: &str, recorded: &str) {
    assert_eq!(normalize(actual), normalize(recorded));
}

fn decode_token(token: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("a base64url token");
    serde_json::from_slice(&bytes).expect("a JSON token")
}

fn resource_version(value: &Value) -> i64 {
    value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .expect("a resourceVersion")
        .parse()
        .expect("a numeric resourceVersion")
}

async fn server_with_proto() -> TestServer {
    let server = TestServer::start().await.expect("server starts");
    server.create_namespace("proto").expect("namespace proto");
    server
}

/// Creates `cm-1`…`cm-5` in `proto` with `k: v1`…`v5`, as `kubectl create` would.
async fn create_five(raw: &RawClient) {
    for index in 1..=5 {
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{index}")},
            "data": {"k": format!("v{index}")},
        });
        let response = raw
            .post(
                "/api/v1/namespaces/proto/configmaps",
                &body.to_string(),
                KUBECTL_CREATE,
            )
            .await;
        assert_eq!(response.status, 201, "{}", response.text());
    }
}

const WIDGETS: &str = "/apis/example.com/v1/namespaces/proto/widgets";

async fn install_widgets(raw: &RawClient) -> RawResponse {
    raw.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        recorded::CRD_REQUEST,
        CAPTURE,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Lists and gets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_pages_match_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;

    let page1 = raw.get("/api/v1/namespaces/proto/configmaps?limit=2").await;
    assert_eq!(page1.status, 200);
    assert_eq!(page1.header("content-type"), Some("application/json"));
    let length = page1.body.len().to_string();
    assert_eq!(page1.header("content-length"), Some(length.as_str()));
    assert_eq!(page1.header("cache-control"), Some("no-cache, private"));
    assert_eq!(page1.header("audit-id").map(str::len), Some(36));
    assert!(page1.header("x-kubernetes-pf-flowschema-uid").is_some());
    assert!(page1.header("x-kubernetes-pf-prioritylevel-uid").is_some());
    assert!(page1.body.ends_with(b"}\n"));
    assert_same(&page1.text(), recorded::LIST_PAGE_1);

    let body = page1.json();
    let list_revision = resource_version(&body);
    assert_eq!(list_revision, server.revision());
    let token = body["metadata"]["continue"].as_str().unwrap().to_owned();
    assert_eq!(
        decode_token(&token),
        json!({"v": "meta.k8s.io/v1", "rv": list_revision, "start": "/cm-2\u{0}"})
    );

    let page2 = raw
        .get(&format!(
            "/api/v1/namespaces/proto/configmaps?limit=2&continue={token}"
        ))
        .await;
    assert_same(&page2.text(), recorded::LIST_PAGE_2);
    assert_eq!(resource_version(&page2.json()), list_revision);
    let token = page2.json()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(decode_token(&token)["start"], json!("/cm-4\u{0}"));

    let page3 = raw
        .get(&format!(
            "/api/v1/namespaces/proto/configmaps?limit=2&continue={token}"
        ))
        .await;
    assert_same(&page3.text(), recorded::LIST_PAGE_3);
}

#[tokio::test]
async fn get_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;

    let compact = raw.get("/api/v1/namespaces/proto/configmaps/cm-1").await;
    assert_eq!(compact.status, 200);
    assert!(compact.body.ends_with(b"}\n"));
    assert_same(&compact.text(), recorded::GET_CM1);

    let headers = [("User-Agent", "curl/7.88.1")];
    let pretty = raw
        .request(
            "GET",
            "/api/v1/namespaces/proto/configmaps/cm-1",
            &headers,
            None,
        )
        .await;
    assert!(
        pretty.body.ends_with(b"}"),
        "no trailing newline when indented"
    );
    assert_same(&pretty.text(), recorded::GET_CM1_PRETTY);
}

#[tokio::test]
async fn kube_list_pages() {
    let server = server_with_proto().await;
    create_five(&RawClient::new(&server)).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");

    let mut names = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut remaining = Vec::new();
    loop {
        let page = api.list(&params).await.unwrap();
        names.extend(page.items.iter().map(ResourceExt::name_any));
        remaining.push(page.metadata.remaining_item_count);
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = ListParams::default().limit(2).continue_token(&token),
            None => break,
        }
    }
    assert_eq!(names, ["cm-1", "cm-2", "cm-3", "cm-4", "cm-5"]);
    assert_eq!(remaining, [Some(3), Some(1), None]);
}

#[tokio::test]
async fn exact_list_reads_past_revision() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let first: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    let created = api.create(&PostParams::default(), &first).await.unwrap();
    let revision = created.resource_version().unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let second: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap();
    api.create(&PostParams::default(), &second).await.unwrap();

    let exact = ListParams::default()
        .at(&revision)
        .matching(kube::api::VersionMatch::Exact);
    let past = api.list(&exact).await.unwrap();
    let names: Vec<String> = past.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(
        past.metadata.resource_version.as_deref(),
        Some(revision.as_str())
    );

    let now = api.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = now.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["b"]);
    assert_eq!(
        now.metadata.resource_version,
        Some(server.revision().to_string())
    );
}

#[tokio::test]
async fn label_selectors_in_lists() {
    let server = server_with_proto().await;
    for (name, labels) in [
        ("a", json!({"tier": "frontend", "env": "prod"})),
        ("b", json!({"tier": "backend", "env": "dev"})),
        ("c", json!({"tier": "frontend", "legacy": "yes"})),
        ("d", json!({})),
    ] {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "proto", "labels": labels}}))
            .unwrap();
    }
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let cases = [
        ("tier=frontend", vec!["a", "c"]),
        ("tier!=frontend", vec!["b", "d"]),
        ("env in (prod,dev)", vec!["a", "b"]),
        ("env notin (prod)", vec!["b", "c", "d"]),
        ("legacy", vec!["c"]),
        ("!legacy,tier", vec!["a", "b"]),
    ];
    for (selector, expected) in cases {
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names, expected, "{selector}");
    }
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);

    let bad = api
        .list(&ListParams::default().fields("spec.x=1"))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = bad else {
        panic!("expected an API error, got {bad:?}")
    };
    assert_eq!(status.code, 400);
    assert_eq!(status.message, "field label not supported: spec.x");
}

#[tokio::test]
async fn all_namespaces_list() {
    let server = server_with_proto().await;
    server.create_namespace("other").unwrap();
    for namespace in ["proto", "other"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "x", "namespace": namespace}}))
            .unwrap();
    }
    let api: Api<ConfigMap> = Api::all(server.client().unwrap());
    let list = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(list.items[0].namespace().as_deref(), Some("other"));
    let token = list.metadata.continue_.unwrap();
    assert_eq!(decode_token(&token)["start"], json!("/other/x\u{0}"));
    let rest = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items[0].namespace().as_deref(), Some("proto"));
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn watch_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let list = raw.get("/api/v1/namespaces/proto/configmaps").await.json();
    let revision = resource_version(&list);

    let started = tokio::time::Instant::now();
    let mut stream = raw
        .stream(&format!(
            "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={revision}&allowWatchBookmarks=true&timeoutSeconds=20"
        ))
        .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("application/json"));
    assert_eq!(stream.header("transfer-encoding"), Some("chunked"));
    assert_eq!(stream.header("content-length"), None);

    let path = "/api/v1/namespaces/proto/configmaps";
    let w1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w-1"}, "data": {"a": "1"}});
    raw.post(path, &w1.to_string(), KUBECTL_CREATE).await;
    raw.patch(
        &format!("{path}/w-1"),
        r#"{"data":{"a":"2"}}"#,
        KUBECTL_PATCH,
    )
    .await;
    raw.patch(
        &format!("{path}/w-1"),
        r#"{"metadata":{"labels":{"color":"blue"}}}"#,
        KUBECTL_LABEL,
    )
    .await;
    let noop = raw
        .patch(
            &format!("{path}/w-1"),
            r#"{"data":{"a":"2"}}"#,
            KUBECTL_PATCH,
        )
        .await;
    assert_eq!(noop.status, 200);
    raw.delete(&format!("{path}/w-1"), None).await;
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other-ns"}});
    raw.post(
        "/api/v1/namespaces/default/configmaps",
        &other.to_string(),
        KUBECTL_CREATE,
    )
    .await;
    let w2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w-2"}, "data": {"b": "1"}});
    raw.post(path, &w2.to_string(), KUBECTL_CREATE).await;
    raw.delete(&format!("{path}/w-2"), None).await;
    raw.delete("/api/v1/namespaces/default/configmaps/other-ns", None)
        .await;

    let events = stream.take(6).await;
    for (actual, expected) in events.iter().zip(recorded::WATCH_EVENTS) {
        assert_same(actual, expected);
    }
    let bookmark = stream.take(1).await;
    let bookmark_at = started.elapsed();
    assert_same(&bookmark[0], recorded::WATCH_EVENTS[6]);
    let bookmark: Value = serde_json::from_str(&bookmark[0]).unwrap();
    assert_eq!(resource_version(&bookmark["object"]), server.revision());
    assert!(
        bookmark_at >= Duration::from_secs(17) && bookmark_at < Duration::from_secs(19),
        "bookmark at {bookmark_at:?}"
    );

    let (rest, ending) = stream.lines(Duration::from_secs(60)).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(ending, Ending::Clean);
    let ended_at = started.elapsed();
    assert!(
        ended_at >= Duration::from_secs(20) && ended_at < Duration::from_secs(21),
        "ended at {ended_at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn watch_too_old_error_event() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;
    server.compact(server.revision());
    let window = server.revision();

    let mut stream = raw
        .stream("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion=1&allowWatchBookmarks=true&timeoutSeconds=10")
        .await;
    assert_eq!(stream.status, 200);
    let (lines, ending) = stream.lines(Duration::from_secs(30)).await;
    let expected = recorded::WATCH_TOO_OLD.replace("1 (626)", &format!("1 ({window})"));
    assert_eq!(lines, [expected]);
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn watch_history_window() {
    let config = TestServerConfig {
        history_capacity: 2,
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await.unwrap();
    server.create_namespace("proto").unwrap();
    let start = server.revision();
    for name in ["a", "b", "c"] {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "proto"}}))
            .unwrap();
    }
    let raw = RawClient::new(&server);
    let mut too_old = raw
        .stream(&format!(
            "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={start}&timeoutSeconds=5"
        ))
        .await;
    let (lines, _) = too_old.lines(Duration::from_secs(30)).await;
    let error: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(
        error["object"]["message"],
        format!("too old resource version: {start} ({})", start + 1)
    );

    let mut inside = raw
        .stream(&format!(
            "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={}&timeoutSeconds=5",
            start + 1
        ))
        .await;
    let (lines, ending) = inside.lines(Duration::from_secs(30)).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn watch_too_old_http_status() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;
    server.compact(server.revision());
    server.set_expired_watch_form(ExpiredWatchForm::HttpStatus);
    let window = server.revision();

    let response = raw
        .get("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion=1&allowWatchBookmarks=true")
        .await;
    assert_eq!(response.status, 410);
    let expected = recorded::WATCH_TOO_OLD.replace("1 (626)", &format!("1 ({window})"));
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(response.json(), expected["object"]);

    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let error = api.watch(&WatchParams::default(), "1").await.err().unwrap();
    let kube::Error::Api(status) = error else {
        panic!("expected a 410 API error, got {error:?}")
    };
    assert_eq!(status.code, 410);
}

#[tokio::test(start_paused = true)]
async fn kube_watch_expired_event() {
    let server = server_with_proto().await;
    create_five(&RawClient::new(&server)).await;
    server.compact(server.revision());
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let mut events = api
        .watch(&WatchParams::default().timeout(10), "1")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    assert!(events.try_next().await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn watch_initial_state_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;

    for start in ["resourceVersion=0&", ""] {
        let mut stream = raw
            .stream(&format!("/api/v1/namespaces/proto/configmaps?watch=1&{start}allowWatchBookmarks=true&timeoutSeconds=5"))
            .await;
        let lines = stream.take(6).await;
        for (actual, expected) in lines.iter().zip(recorded::INITIAL_STATE_EVENTS) {
            assert_same(actual, expected);
        }
        let bookmark: Value = serde_json::from_str(&lines[5]).unwrap();
        assert_eq!(resource_version(&bookmark["object"]), server.revision());
        assert_eq!(stream.lines(Duration::from_secs(30)).await.1, Ending::Clean);
    }

    let mut without_bookmarks = raw
        .stream("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion=0&timeoutSeconds=3")
        .await;
    let (lines, ending) = without_bookmarks.lines(Duration::from_secs(30)).await;
    assert_eq!(lines.len(), 5);
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn streaming_list_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;

    let mut stream = raw
        .stream("/api/v1/namespaces/proto/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=&allowWatchBookmarks=true&timeoutSeconds=10")
        .await;
    assert_eq!(stream.status, 200);
    let lines = stream.take(6).await;
    for (actual, expected) in lines.iter().zip(recorded::INITIAL_STATE_EVENTS) {
        assert_same(actual, expected);
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "later", "namespace": "proto"}}))
        .unwrap();
    let later: Value = serde_json::from_str(&stream.take(1).await[0]).unwrap();
    assert_eq!(later["type"], "ADDED");
    assert_eq!(later["object"]["metadata"]["name"], "later");

    let missing_match = raw
        .get("/api/v1/namespaces/proto/configmaps?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&timeoutSeconds=10")
        .await;
    assert_eq!(missing_match.status, 422);
    assert_eq!(
        missing_match.text().trim_end(),
        recorded::WATCH_INITIAL_EVENTS_INVALID
    );

    let on_list = raw
        .get("/api/v1/namespaces/proto/configmaps?sendInitialEvents=true&resourceVersionMatch=NotOlderThan")
        .await;
    assert_eq!(on_list.status, 422);
    assert_eq!(
        on_list.text().trim_end(),
        recorded::LIST_INITIAL_EVENTS_INVALID
    );

    server.set_streaming_list_supported(false);
    let mut refused = raw
        .stream("/api/v1/namespaces/proto/configmaps?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=&allowWatchBookmarks=true&timeoutSeconds=10")
        .await;
    assert_eq!(refused.status, 200);
    let (lines, ending) = refused.lines(Duration::from_secs(30)).await;
    assert_eq!(lines, [recorded::STREAMING_UNSUPPORTED]);
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn kube_runtime_watcher_strategies() {
    let server = server_with_proto().await;
    create_five(&RawClient::new(&server)).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");

    for (round, config) in [
        kube_runtime::watcher::Config::default().page_size(2),
        kube_runtime::watcher::Config::default().streaming_lists(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut events = kube_runtime::watcher(api.clone(), config).boxed();
        let mut initial = Vec::new();
        loop {
            match events.try_next().await.unwrap().unwrap() {
                kube_runtime::watcher::Event::Init => {}
                kube_runtime::watcher::Event::InitApply(object) => initial.push(object.name_any()),
                kube_runtime::watcher::Event::InitDone => break,
                other => panic!("unexpected event before InitDone: {other:?}"),
            }
        }
        assert_eq!(initial, ["cm-1", "cm-2", "cm-3", "cm-4", "cm-5"]);
        let value = format!("round-{round}");
        server
            .merge_patch(
                "v1",
                "ConfigMap",
                Some("proto"),
                "cm-1",
                json!({"data": {"k": value}}),
            )
            .unwrap();
        match events.try_next().await.unwrap().unwrap() {
            kube_runtime::watcher::Event::Apply(object) => {
                assert_eq!(object.data.unwrap()["k"], value);
            }
            other => panic!("expected Apply, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn future_resource_version() {
    let config = TestServerConfig {
        future_resource_version_wait: Duration::from_secs(3),
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await.unwrap();
    server.create_namespace("proto").unwrap();
    let raw = RawClient::new(&server);
    let current = server.revision();
    let future = current + 1_000_000;

    let started = tokio::time::Instant::now();
    let list = raw
        .get(&format!(
            "/api/v1/namespaces/proto/configmaps?resourceVersion={future}"
        ))
        .await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(list.status, 504);
    assert_eq!(list.header("retry-after"), Some("1"));
    let expected = recorded::LIST_TOO_LARGE
        .replace("1000546", &future.to_string())
        .replace("current: 555", &format!("current: {current}"));
    assert_eq!(list.text().trim_end(), expected);

    let mut watch = raw
        .stream(&format!("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={future}&allowWatchBookmarks=true&timeoutSeconds=15"))
        .await;
    assert_eq!(watch.status, 200);
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "before-future", "namespace": "proto"}}))
        .unwrap();
    let (lines, ending) = watch.lines(Duration::from_secs(60)).await;
    assert!(lines.is_empty(), "a future watch stays silent: {lines:?}");
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test]
async fn expired_continue_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    create_five(&raw).await;
    let page1 = raw
        .get("/api/v1/namespaces/proto/configmaps?limit=2")
        .await
        .json();
    let first_revision = resource_version(&page1);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_owned();

    for index in 0..6 {
        let name = format!("churn-{index}");
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"}}))
            .unwrap();
        server
            .delete("v1", "ConfigMap", Some("default"), &name)
            .unwrap();
    }
    server.compact(server.revision());

    let expired = raw
        .get(&format!(
            "/api/v1/namespaces/proto/configmaps?limit=2&continue={token}"
        ))
        .await;
    assert_eq!(expired.status, 410);
    assert_same(&expired.text(), recorded::CONTINUE_EXPIRED);
    let fresh = expired.json()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        decode_token(&fresh),
        json!({"v": "meta.k8s.io/v1", "rv": -1, "start": "cm-2\u{0}"})
    );

    let resumed = raw
        .get(&format!(
            "/api/v1/namespaces/proto/configmaps?limit=2&continue={fresh}"
        ))
        .await;
    assert_eq!(resumed.status, 200);
    let resumed = resumed.json();
    assert_eq!(resource_version(&resumed), server.revision());
    let names: Vec<&str> = resumed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cm-3", "cm-4"]);
    assert_eq!(resumed["metadata"]["remainingItemCount"], 1);

    for query in [
        format!("resourceVersion={first_revision}&resourceVersionMatch=Exact"),
        format!("limit=2&resourceVersion={first_revision}"),
    ] {
        let too_old = raw
            .get(&format!("/api/v1/namespaces/proto/configmaps?{query}"))
            .await;
        assert_eq!(too_old.status, 410, "{query}");
        assert_eq!(too_old.text().trim_end(), recorded::LIST_TOO_OLD);
    }
    let newer = raw
        .get(&format!("/api/v1/namespaces/proto/configmaps?resourceVersion={first_revision}&resourceVersionMatch=NotOlderThan"))
        .await;
    assert_eq!(newer.status, 200);
    assert_eq!(resource_version(&newer.json()), server.revision());
}

#[tokio::test(start_paused = true)]
async fn delete_recreate_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let revision = server.revision();
    let mut stream = raw
        .stream(&format!("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={revision}&fieldSelector=metadata.name%3Dsame-1&allowWatchBookmarks=true&timeoutSeconds=8"))
        .await;

    let path = "/api/v1/namespaces/proto/configmaps";
    let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same-1"}, "data": {"gen": "first"}});
    raw.post(path, &first.to_string(), KUBECTL_CREATE).await;
    raw.delete(&format!("{path}/same-1"), None).await;
    let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "same-1"}, "data": {"gen": "second"}});
    raw.post(path, &second.to_string(), KUBECTL_CREATE).await;

    let lines = stream.take(4).await;
    for (actual, expected) in lines.iter().zip(recorded::RECREATE_EVENTS) {
        assert_same(actual, expected);
    }
    let uid = |line: &str| {
        let event: Value = serde_json::from_str(line).unwrap();
        event["object"]["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (old_uid, new_uid) = (uid(&lines[0]), uid(&lines[2]));
    assert_eq!(uid(&lines[1]), old_uid);
    assert_ne!(old_uid, new_uid);
    let revision_of =
        |line: &str| resource_version(&serde_json::from_str::<Value>(line).unwrap()["object"]);
    assert_eq!(
        revision_of(&lines[1]),
        revision_of(&lines[0]) + 1,
        "DELETED carries the revision of the delete"
    );

    let precondition =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": old_uid}});
    let conflict = raw
        .delete(&format!("{path}/same-1"), Some(&precondition.to_string()))
        .await;
    assert_eq!(conflict.status, 409);
    let expected = recorded::UID_PRECONDITION_CONFLICT
        .replace("e7061136-4b1a-4460-95d8-fd30bb0b3960", &old_uid)
        .replace("be52e8fd-f6dc-4bd0-a693-e85adca9abe0", &new_uid);
    assert_eq!(conflict.text().trim_end(), expected);

    let deleted = raw.delete(&format!("{path}/same-1"), None).await;
    assert_eq!(deleted.status, 200);
    assert_same(&deleted.text(), recorded::DELETE_SUCCESS);
    assert_eq!(deleted.json()["details"]["uid"], json!(new_uid));
}

#[tokio::test(start_paused = true)]
async fn selector_watches_match_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let revision = server.revision();
    let base = "/api/v1/namespaces/proto/configmaps";
    let query = |selectors: &str| {
        format!(
            "{base}?watch=1&resourceVersion={revision}&{selectors}&allowWatchBookmarks=true&timeoutSeconds=16"
        )
    };
    let mut by_label = raw.stream(&query("labelSelector=tier%3Dfrontend")).await;
    let mut by_field = raw
        .stream(&query("fieldSelector=metadata.name%3Dsel-1"))
        .await;
    let mut by_both = raw
        .stream(&query(
            "labelSelector=tier%3Dfrontend&fieldSelector=metadata.name%3Dsel-1",
        ))
        .await;

    let sel1 = format!("{base}/sel-1");
    let label = |tier: &str| format!(r#"{{"metadata":{{"labels":{{"tier":"{tier}"}}}}}}"#);
    let created = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sel-1"}, "data": {"v": "1"}});
    raw.post(base, &created.to_string(), KUBECTL_CREATE).await;
    raw.patch(&sel1, &label("frontend"), KUBECTL_LABEL).await;
    let labelled = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "sel-2", "labels": {"tier": "frontend"}}, "data": {"v": "1"}});
    raw.post(base, &labelled.to_string(), KUBECTL_CREATE).await;
    raw.patch(&sel1, r#"{"data":{"v":"2"}}"#, KUBECTL_PATCH)
        .await;
    raw.patch(&sel1, &label("backend"), KUBECTL_LABEL).await;
    raw.patch(&sel1, r#"{"data":{"v":"3"}}"#, KUBECTL_PATCH)
        .await;
    raw.patch(&sel1, &label("frontend"), KUBECTL_LABEL).await;
    raw.delete(&sel1, None).await;
    raw.delete(&format!("{base}/sel-2"), None).await;

    for (stream, expected) in [
        (&mut by_label, recorded::LABEL_SELECTOR_EVENTS),
        (&mut by_field, recorded::FIELD_SELECTOR_EVENTS),
        (&mut by_both, recorded::BOTH_SELECTORS_EVENTS),
    ] {
        let (lines, ending) = stream.lines(Duration::from_secs(60)).await;
        assert_eq!(lines.len(), expected.len(), "{lines:#?}");
        for (actual, expected) in lines.iter().zip(expected) {
            assert_same(actual, expected);
        }
        assert_eq!(ending, Ending::Clean);
    }
}

#[tokio::test]
async fn large_list_is_chunked() {
    let server = server_with_proto().await;
    let padding = "x".repeat(200);
    for index in 0..300 {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("big-{index:03}"), "namespace": "proto"},
                "data": {"padding": padding}}))
            .unwrap();
    }
    let raw = RawClient::new(&server);
    let response = raw.get("/api/v1/namespaces/proto/configmaps").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("content-length"), None);
    assert_eq!(response.json()["items"].as_array().unwrap().len(), 300);

    let page = raw.get("/api/v1/namespaces/proto/configmaps?limit=2").await;
    assert!(page.header("content-length").is_some());
}

#[tokio::test(start_paused = true)]
async fn bookmarks_periodic() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let revision = server.revision();
    let started = tokio::time::Instant::now();
    let mut stream = raw
        .stream(&format!("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={revision}&allowWatchBookmarks=true&timeoutSeconds=200"))
        .await;
    let mut arrivals = Vec::new();
    for _ in 0..4 {
        let line = stream.take(1).await;
        assert!(line[0].starts_with(r#"{"type":"BOOKMARK""#), "{line:?}");
        arrivals.push(started.elapsed().as_secs());
    }
    assert_eq!(arrivals, [60, 120, 180, 198]);
    assert_eq!(
        stream.lines(Duration::from_secs(60)).await,
        (vec![], Ending::Clean)
    );
    assert_eq!(started.elapsed().as_secs(), 200);
}

#[tokio::test(start_paused = true)]
async fn kube_watch_times_out() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let started = tokio::time::Instant::now();
    let events: Vec<WatchEvent<ConfigMap>> = api
        .watch(
            &WatchParams::default().timeout(5),
            &server.revision().to_string(),
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(started.elapsed().as_secs(), 5);
    assert_eq!(events.len(), 1);
    let WatchEvent::Bookmark(bookmark) = &events[0] else {
        panic!("expected a bookmark before the timeout, got {events:?}")
    };
    assert_eq!(
        bookmark.metadata.resource_version,
        server.revision().to_string()
    );
}

// ---------------------------------------------------------------------------------------------
// Error bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forbidden_bodies_match_recording() {
    let server = server_with_proto().await;
    create_five(&RawClient::new(&server)).await;
    server.forbid_matching(RequestMatch::any().resource("configmaps").user("alice"));
    let alice = RawClient::as_user(&server, "alice");

    let cases = [
        (
            "/api/v1/namespaces/proto/configmaps",
            recorded::FORBIDDEN_LIST,
        ),
        (
            "/api/v1/namespaces/proto/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=10",
            recorded::FORBIDDEN_WATCH,
        ),
        (
            "/api/v1/namespaces/proto/configmaps/cm-1",
            recorded::FORBIDDEN_GET,
        ),
        (
            "/api/v1/configmaps?limit=10",
            recorded::FORBIDDEN_CLUSTER_LIST,
        ),
    ];
    for (path, expected) in cases {
        let response = alice.get(path).await;
        assert_eq!(response.status, 403, "{path}");
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert!(
            response.header("content-length").is_some(),
            "a plain response, not a stream"
        );
        assert_eq!(response.text().trim_end(), expected);
    }

    let admin = RawClient::new(&server);
    assert_eq!(
        admin
            .get("/api/v1/namespaces/proto/configmaps")
            .await
            .status,
        200
    );

    let api: Api<ConfigMap> = Api::namespaced(server.client_for("alice").unwrap(), "proto");
    let error = api.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("expected a 403 API error, got {error:?}")
    };
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");

    server.allow_all();
    assert_eq!(
        alice
            .get("/api/v1/namespaces/proto/configmaps")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn forbid_one_verb() {
    let server = server_with_proto().await;
    server.forbid(Verb::Watch, "configmaps", Some("default"));
    let raw = RawClient::new(&server);
    let watch = raw
        .get("/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1")
        .await;
    assert_eq!(watch.status, 403);
    assert_eq!(
        watch.json()["message"],
        "configmaps is forbidden: User \"admin\" cannot watch resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(
        raw.get("/api/v1/namespaces/default/configmaps")
            .await
            .status,
        200
    );
    assert_eq!(
        raw.get("/api/v1/namespaces/proto/configmaps?watch=1&timeoutSeconds=1")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn unauthorized_body_matches_recording() {
    let server = server_with_proto().await;
    let bogus = RawClient {
        address: server.address(),
        token: "not-a-token".to_owned(),
    };
    let response = bogus.get("/api/v1/namespaces/proto/configmaps").await;
    assert_eq!(response.status, 401);
    assert_eq!(response.text().trim_end(), recorded::UNAUTHORIZED);
    assert_eq!(response.header("x-kubernetes-pf-flowschema-uid"), None);
    assert_eq!(response.header("audit-id").map(str::len), Some(36));

    let anonymous = RawClient {
        address: server.address(),
        token: String::new(),
    };
    assert_eq!(
        anonymous
            .get("/api/v1/namespaces/proto/configmaps")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn not_found_bodies_match_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);

    let missing = raw
        .get("/api/v1/namespaces/proto/configmaps/does-not-exist")
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.text().trim_end(), recorded::NOT_FOUND_OBJECT);

    for path in [
        "/apis/example.com/v1/namespaces/proto/widgets",
        "/apis/example.com/v1/namespaces/proto/widgets?watch=1&allowWatchBookmarks=true&timeoutSeconds=5",
        "/apis/example.com/v1",
    ] {
        let response = raw.get(path).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(
            response.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(response.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(response.text(), "404 page not found\n");
    }

    let unknown = raw.get("/api/v1/namespaces/proto/widgets").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text().trim_end(), recorded::NOT_FOUND_RESOURCE);

    let empty = raw.get("/api/v1/namespaces/no-such-ns/configmaps").await;
    assert_eq!(empty.status, 200);
    assert_same(&empty.text(), recorded::EMPTY_LIST);

    let no_namespace = raw.get("/api/v1/namespaces/no-such-ns/configmaps/x").await;
    assert_eq!(no_namespace.json()["message"], "configmaps \"x\" not found");
}

// ---------------------------------------------------------------------------------------------
// Custom resources
// ---------------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn crd_lifecycle_matches_recording() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let mut crd_watch = raw
        .stream(&format!("{crds}?watch=1&fieldSelector=metadata.name%3Dwidgets.example.com&allowWatchBookmarks=true&timeoutSeconds=6"))
        .await;
    assert_same(&crd_watch.take(1).await[0], recorded::CRD_WATCH_EVENTS[0]);

    let created = install_widgets(&raw).await;
    assert_eq!(created.status, 201);
    let without_fields = |text: &str| mask_value(text, "managedFields");
    assert_same(
        &without_fields(&created.text()),
        &without_fields(recorded::CRD_CREATED),
    );

    let events = crd_watch.take(4).await;
    for (actual, expected) in events.iter().zip(&recorded::CRD_WATCH_EVENTS[1..]) {
        assert_same(&without_fields(actual), &without_fields(expected));
    }
    assert_eq!(
        crd_watch.lines(Duration::from_secs(30)).await.1,
        Ending::Clean
    );

    let established = raw.get(&format!("{crds}/widgets.example.com")).await;
    assert_same(
        &without_fields(&established.text()),
        &without_fields(recorded::CRD_ESTABLISHED),
    );

    let discovery = raw.get("/apis/example.com/v1").await;
    assert_same(&discovery.text(), recorded::WIDGET_DISCOVERY);

    let empty = raw.get(WIDGETS).await;
    assert_same(&empty.text(), recorded::WIDGET_LIST_EMPTY);
    let revision = resource_version(&empty.json());
    let mut widget_watch = raw
        .stream(&format!("{WIDGETS}?watch=1&resourceVersion={revision}&allowWatchBookmarks=true&timeoutSeconds=12"))
        .await;

    let w1 = raw
        .post(WIDGETS, recorded::WIDGET_W1_REQUEST, CAPTURE)
        .await;
    assert_eq!(w1.status, 201);
    assert_same(&w1.text(), recorded::WIDGET_W1);
    let w2 = raw
        .post(WIDGETS, recorded::WIDGET_W2_REQUEST, CAPTURE)
        .await;
    assert_same(&w2.text(), recorded::WIDGET_W2);
    assert_same(&raw.get(WIDGETS).await.text(), recorded::WIDGET_LIST);

    let w1_path = format!("{WIDGETS}/w1");
    let status_path = format!("{w1_path}/status");
    let patched = raw
        .patch(&status_path, recorded::STATUS_PATCH, CAPTURE)
        .await;
    assert_same(&patched.text(), recorded::STATUS_PATCHED);
    let ignored = raw
        .patch(&w1_path, recorded::MAIN_STATUS_PATCH, CAPTURE)
        .await;
    assert_same(&ignored.text(), recorded::MAIN_STATUS_PATCHED);
    assert_eq!(
        resource_version(&ignored.json()),
        resource_version(&patched.json()),
        "status on the main endpoint is ignored: no write"
    );
    let spec = raw.patch(&w1_path, recorded::SPEC_PATCH, CAPTURE).await;
    assert_same(&spec.text(), recorded::SPEC_PATCHED);
    assert_eq!(spec.json()["metadata"]["generation"], 2);
    let mixed = raw
        .patch(&status_path, recorded::MIXED_STATUS_PATCH, CAPTURE)
        .await;
    assert_same(&mixed.text(), recorded::MIXED_STATUS_PATCHED);

    let invalid = raw
        .post(WIDGETS, recorded::INVALID_WIDGET_REQUEST, CAPTURE)
        .await;
    assert_eq!(invalid.status, 422);
    assert_eq!(invalid.text().trim_end(), recorded::INVALID_WIDGET);

    let deleted = raw.delete(&format!("{WIDGETS}/w2"), None).await;
    assert_eq!(deleted.status, 200);
    assert_same(&deleted.text(), recorded::WIDGET_DELETED);

    let (lines, ending) = widget_watch.lines(Duration::from_secs(60)).await;
    assert_eq!(
        lines.len(),
        recorded::WIDGET_WATCH_EVENTS.len(),
        "{lines:#?}"
    );
    for (actual, expected) in lines.iter().zip(recorded::WIDGET_WATCH_EVENTS) {
        assert_same(actual, expected);
    }
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn crd_storage_initializing() {
    let config = TestServerConfig {
        crd_initialization_delay: Duration::from_millis(500),
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await.unwrap();
    server.create_namespace("proto").unwrap();
    let raw = RawClient::new(&server);
    assert_eq!(install_widgets(&raw).await.status, 201);

    let early = raw.get(WIDGETS).await;
    assert_eq!(early.status, 429);
    assert_eq!(early.header("retry-after"), Some("1"));
    assert_eq!(early.text().trim_end(), recorded::STORAGE_INITIALIZING);

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(raw.get(WIDGETS).await.status, 200);
}

#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Gadget", namespaced)]
#[kube(status = "GadgetStatus")]
struct GadgetSpec {
    size: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
struct GadgetStatus {
    ready: bool,
}

#[tokio::test]
async fn kube_custom_resource_crud() {
    let server = server_with_proto().await;
    let client = server.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Gadget::crd())
        .await
        .unwrap();
    let established = kube_runtime::wait::await_condition(
        crds.clone(),
        "gadgets.example.com",
        kube_runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(10), established)
        .await
        .expect("the CRD is established")
        .unwrap();

    let gadgets: Api<Gadget> = Api::namespaced(client.clone(), "proto");
    let created = gadgets
        .create(
            &PostParams::default(),
            &Gadget::new("g1", GadgetSpec { size: 1 }),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.status.is_none());

    let status = json!({"status": {"ready": true}});
    let with_status = gadgets
        .patch_status("g1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(with_status.status.as_ref().map(|s| s.ready), Some(true));
    assert_eq!(with_status.metadata.generation, Some(1));

    let mut changed = with_status.clone();
    changed.spec.size = 2;
    changed.status = Some(GadgetStatus { ready: false });
    let replaced = gadgets
        .replace("g1", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.status.as_ref().map(|s| s.ready),
        Some(true),
        "the main endpoint ignores status"
    );

    let listed = gadgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let deleted = gadgets
        .delete("g1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        deleted.is_right(),
        "a custom resource delete returns a Status"
    );
    assert!(gadgets.get_opt("g1").await.unwrap().is_none());

    crds.delete("gadgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let gone = gadgets.list(&ListParams::default()).await.unwrap_err();
    let kube::Error::Api(status) = gone else {
        panic!("expected a 404, got {gone:?}")
    };
    assert_eq!(status.code, 404);
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

fn config_map(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

#[tokio::test]
async fn stale_replace_conflicts() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let created = api
        .create(&PostParams::default(), &config_map("c", json!({"a": "1"})))
        .await
        .unwrap();
    server
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("proto"),
            "c",
            json!({"data": {"a": "2"}}),
        )
        .unwrap();

    let mut stale = created.clone();
    stale.data = Some([("a".to_owned(), "3".to_owned())].into());
    let error = api
        .replace("c", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("expected a 409, got {error:?}")
    };
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let already = api
        .create(&PostParams::default(), &config_map("c", json!({})))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = already else {
        panic!("expected a 409, got {already:?}")
    };
    assert_eq!(status.reason, "AlreadyExists");
    assert_eq!(status.message, "configmaps \"c\" already exists");

    let missing = api
        .replace(
            "nope",
            &PostParams::default(),
            &config_map("nope", json!({})),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, kube::Error::Api(status) if status.code == 404));
}

#[tokio::test]
async fn patch_types() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    api.create(
        &PostParams::default(),
        &config_map("p", json!({"a": "1", "b": "2"})),
    )
    .await
    .unwrap();

    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": null, "c": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.unwrap().keys().collect::<Vec<_>>(), ["b", "c"]);

    let operations: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "add", "path": "/data/d", "value": "4"},
    ]))
    .unwrap();
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(operations))
        .await
        .unwrap();
    let data = patched.data.unwrap();
    assert_eq!(data["b"], "20");
    assert_eq!(data["d"], "4");

    let strategic = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.labels()["x"], "y");

    let applied = api
        .patch(
            "new",
            &PatchParams::apply("test-manager").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["k"], "v");
    let managers: Vec<(String, String)> = applied
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry.manager.clone().unwrap(),
                entry.operation.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(managers, [("test-manager".to_owned(), "Apply".to_owned())]);

    let reapplied = api
        .patch(
            "new",
            &PatchParams::apply("test-manager").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.data.unwrap()["k"], "w");

    let raw = RawClient::new(&server);
    let headers = [("Content-Type", "application/apply-patch+yaml")];
    let without_manager = raw
        .request(
            "PATCH",
            "/api/v1/namespaces/proto/configmaps/new",
            &headers,
            Some("{}"),
        )
        .await;
    assert_eq!(without_manager.status, 422);
    assert_eq!(
        without_manager.json()["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
}

#[tokio::test(start_paused = true)]
async fn noop_update_writes_nothing() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let created = api
        .create(&PostParams::default(), &config_map("n", json!({"a": "1"})))
        .await
        .unwrap();
    let revision = server.revision();
    let mut events = api
        .watch(
            &WatchParams::default().timeout(5).disable_bookmarks(),
            &revision.to_string(),
        )
        .await
        .unwrap()
        .boxed();

    let same = api
        .replace("n", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(same.resource_version(), created.resource_version());
    let patched = api
        .patch(
            "n",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.resource_version(), created.resource_version());
    assert_eq!(server.revision(), revision);

    api.patch(
        "n",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(object)) => assert_eq!(object.data.unwrap()["a"], "2"),
        other => panic!("expected the one real change, got {other:?}"),
    }
}

#[tokio::test]
async fn finalizers_hold_deletion() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let held: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]},
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &held).await.unwrap();
    let mut events = api
        .watch(
            &WatchParams::default().timeout(30).disable_bookmarks(),
            &created.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    let pending = api.delete("held", &DeleteParams::default()).await.unwrap();
    let marked = pending
        .left()
        .expect("a held object is returned, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Modified(object)) => assert!(object.metadata.deletion_timestamp.is_some()),
        other => panic!("expected MODIFIED with deletionTimestamp, got {other:?}"),
    }
    assert!(api.get_opt("held").await.unwrap().is_some());

    let added = api
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}}),
            ),
        )
        .await
        .unwrap_err();
    assert!(matches!(added, kube::Error::Api(status) if status.code == 422));

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Deleted(object)) => assert_eq!(object.name_any(), "held"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert!(api.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn namespaces_scope_writes() {
    let server = server_with_proto().await;
    let missing = server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "nope"}}))
        .unwrap_err();
    assert_eq!(missing.code, 404);
    assert_eq!(missing.message, "namespaces \"nope\" not found");

    server.create_namespace("temp").unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "plain", "namespace": "temp"}}))
        .unwrap();
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "namespace": "temp", "finalizers": ["example.com/hold"]}}))
        .unwrap();

    let namespaces: Api<Namespace> = Api::all(server.client().unwrap());
    let terminating = namespaces
        .delete("temp", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a namespace delete returns the namespace");
    assert_eq!(
        terminating
            .status
            .and_then(|status| status.phase)
            .as_deref(),
        Some("Terminating")
    );
    assert!(
        server
            .get("v1", "ConfigMap", Some("temp"), "plain")
            .is_err()
    );

    let refused = server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "late", "namespace": "temp"}}))
        .unwrap_err();
    assert_eq!(refused.code, 403);
    assert_eq!(
        refused.message,
        "configmaps \"late\" is forbidden: unable to create new content in namespace temp because it is being terminated"
    );

    server
        .merge_patch(
            "v1",
            "ConfigMap",
            Some("temp"),
            "held",
            json!({"metadata": {"finalizers": null}}),
        )
        .unwrap();
    assert!(namespaces.get_opt("temp").await.unwrap().is_none());
}

#[tokio::test]
async fn secrets_fold_string_data() {
    let server = server_with_proto().await;
    let secret = server
        .create(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"generateName": "token-", "namespace": "proto"},
            "stringData": {"password": "hunter2"}}))
        .unwrap();
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    assert_eq!(secret["type"], "Opaque");
    assert!(secret.get("stringData").is_none());
    let name = secret["metadata"]["name"].as_str().unwrap();
    assert!(
        name.starts_with("token-") && name.len() == "token-".len() + 5,
        "{name}"
    );
}

#[tokio::test]
async fn event_apis_share_storage() {
    let server = server_with_proto().await;
    let client = server.client().unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "proto");
    let object = config_maps
        .create(&PostParams::default(), &config_map("subject", json!({})))
        .await
        .unwrap();
    let recorder = kube_runtime::events::Recorder::new(
        client.clone(),
        kube_runtime::events::Reporter {
            controller: "informer-tests".into(),
            instance: None,
        },
    );
    let event = kube_runtime::events::Event {
        type_: kube_runtime::events::EventType::Normal,
        reason: "Synced".into(),
        note: Some("synced the subject".into()),
        action: "Sync".into(),
        secondary: None,
    };
    let reference = object.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let v1: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "proto");
    let events = v1.list(&ListParams::default()).await.unwrap();
    assert_eq!(events.items.len(), 1);
    assert_eq!(events.items[0].note.as_deref(), Some("synced the subject"));
    assert_eq!(events.items[0].series.as_ref().map(|s| s.count), Some(2));

    let core: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, "proto");
    let events = core.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        events.items[0].message.as_deref(),
        Some("synced the subject")
    );
    assert_eq!(
        events.items[0].involved_object.name.as_deref(),
        Some("subject")
    );
    assert_eq!(
        events.items[0].reporting_component.as_deref(),
        Some("informer-tests")
    );
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn failures_hit_one_source() {
    let server = server_with_proto().await;
    server.create_namespace("other").unwrap();
    let matcher = RequestMatch::any()
        .verb(Verb::List)
        .resource("configmaps")
        .namespace("proto");
    server.fail_next(5, matcher, Failure::CloseConnection);
    let raw = RawClient::new(&server);

    for attempt in 0..5 {
        let mut stream = TcpStream::connect(server.address()).await.unwrap();
        let request = format!(
            "GET /api/v1/namespaces/proto/configmaps HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
            server.token_for(ADMIN_USER)
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        stream.read_to_end(&mut received).await.unwrap();
        assert!(received.is_empty(), "attempt {attempt} got a response");
        assert_eq!(
            raw.get("/api/v1/namespaces/other/configmaps").await.status,
            200
        );
    }
    assert_eq!(
        raw.get("/api/v1/namespaces/proto/configmaps").await.status,
        200
    );
    let closed = server
        .requests()
        .iter()
        .filter(|record| record.status == 0)
        .count();
    assert_eq!(closed, 5);

    server.fail_next(1, RequestMatch::any().verb(Verb::Get), Failure::Status(500));
    let failed = raw.get("/api/v1/namespaces/proto/configmaps/x").await;
    assert_eq!(failed.status, 500);
    assert_eq!(
        failed.text().trim_end(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Internal error occurred: injected failure","reason":"InternalError","details":{"causes":[{"message":"injected failure"}]},"code":500}"#
    );
}

#[tokio::test(start_paused = true)]
async fn hung_watch_stays_silent() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let revision = server.revision();
    let mut open = raw
        .stream(&format!("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={revision}&timeoutSeconds=3"))
        .await;
    server.hang_watches();
    let mut late = raw
        .stream(&format!("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={revision}&timeoutSeconds=3"))
        .await;
    assert_eq!(late.status, 200, "a hung watch still sends its headers");
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "unseen", "namespace": "proto"}}))
        .unwrap();

    assert_eq!(
        open.next_chunk(Duration::from_secs(60)).await,
        Err(Ending::Silent),
        "no data and no end, even past the timeout"
    );
    assert_eq!(
        late.next_chunk(Duration::from_secs(1)).await,
        Err(Ending::Silent)
    );

    server.release_watches();
    let (lines, ending) = open.lines(Duration::from_secs(60)).await;
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("\"unseen\""));
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn hung_watch_trips_idle_timeout() {
    let server = server_with_proto().await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let mut events = kube_runtime::watcher(api, kube_runtime::watcher::Config::default()).boxed();
    while !matches!(
        events.try_next().await.unwrap().unwrap(),
        kube_runtime::watcher::Event::InitDone
    ) {}

    server.hang_watches();
    server.clear_requests();
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "after-hang", "namespace": "proto"}}))
        .unwrap();
    let next = tokio::spawn(async move { events.try_next().await });
    tokio::time::sleep(Duration::from_secs(600)).await;
    let watches = server
        .requests()
        .iter()
        .filter(|record| record.verb == Some(Verb::Watch))
        .count();
    assert!(
        watches >= 1,
        "the client gave up on the silent stream and watched again"
    );
    assert!(!next.is_finished(), "nothing arrives while watches hang");

    server.release_watches();
    match next.await.unwrap().unwrap().unwrap() {
        kube_runtime::watcher::Event::Apply(object) => assert_eq!(object.name_any(), "after-hang"),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn end_all_watches_ends_cleanly() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let mut first = raw
        .stream("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion=0")
        .await;
    let mut second = raw
        .stream("/api/v1/configmaps?watch=1&resourceVersion=0")
        .await;
    assert_eq!(server.open_watches(), 2);
    server.end_all_watches();
    assert_eq!(first.lines(Duration::from_secs(5)).await.1, Ending::Clean);
    assert_eq!(second.lines(Duration::from_secs(5)).await.1, Ending::Clean);
    tokio::task::yield_now().await;
    assert_eq!(server.open_watches(), 0);

    let mut third = raw
        .stream("/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion=0&timeoutSeconds=2")
        .await;
    assert_eq!(third.lines(Duration::from_secs(30)).await.1, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn restart_drops_connections() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let revision = server.revision();
    let path = "/api/v1/namespaces/proto/configmaps";
    let mut stream = raw
        .stream(&format!(
            "{path}?watch=1&resourceVersion={revision}&allowWatchBookmarks=true"
        ))
        .await;
    let created = server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-1", "namespace": "proto"}}))
        .unwrap();
    assert_eq!(stream.take(1).await.len(), 1);
    let last_seen = resource_version(&created);

    server.restart(RestartHistory::Keep);
    assert_eq!(stream.lines(Duration::from_secs(5)).await.1, Ending::Closed);
    let mut resumed = raw
        .stream(&format!(
            "{path}?watch=1&resourceVersion={last_seen}&timeoutSeconds=2"
        ))
        .await;
    assert_eq!(
        resumed.lines(Duration::from_secs(30)).await,
        (vec![], Ending::Clean)
    );

    server.restart(RestartHistory::Lose);
    let mut expired = raw
        .stream(&format!(
            "{path}?watch=1&resourceVersion={last_seen}&allowWatchBookmarks=true&timeoutSeconds=5"
        ))
        .await;
    let (lines, ending) = expired.lines(Duration::from_secs(30)).await;
    let error: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(
        error["object"]["message"],
        format!(
            "too old resource version: {last_seen} ({})",
            server.revision()
        )
    );
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn expire_next_watch_once() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let revision = server.revision();
    server.expire_next_watch();
    let path = format!(
        "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={revision}&timeoutSeconds=2"
    );
    let (lines, ending) = raw.stream(&path).await.lines(Duration::from_secs(30)).await;
    assert_eq!(lines.len(), 1);
    let error: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(ending, Ending::Clean);

    let (lines, ending) = raw.stream(&path).await.lines(Duration::from_secs(30)).await;
    assert!(lines.is_empty());
    assert_eq!(ending, Ending::Clean);
}

// ---------------------------------------------------------------------------------------------
// Discovery and client setup
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_for_kube() {
    let server = server_with_proto().await;
    let raw = RawClient::new(&server);
    let version = raw.get("/version").await;
    assert!(version.text().starts_with("{\n  \"major\": \"1\""));
    assert!(version.text().ends_with('}'));

    let client = server.client().unwrap();
    let info = client.apiserver_version().await.unwrap();
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "36"));

    install_widgets(&raw).await;
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let resources: Vec<String> = discovery
        .groups()
        .flat_map(|group| group.recommended_resources())
        .map(|(resource, _)| resource.plural)
        .collect();
    for plural in [
        "configmaps",
        "namespaces",
        "leases",
        "customresourcedefinitions",
        "widgets",
    ] {
        assert!(
            resources.iter().any(|p| p == plural),
            "{plural} in {resources:?}"
        );
    }

    let aggregated = client.list_api_groups_aggregated().await.unwrap();
    assert!(aggregated.items.iter().any(|group| {
        group.metadata.as_ref().and_then(|m| m.name.as_deref()) == Some("example.com")
    }));
    let core = client.list_core_api_versions_aggregated().await.unwrap();
    let core_resources: Vec<String> = core.items[0].versions[0]
        .resources
        .iter()
        .filter_map(|resource| resource.resource.clone())
        .collect();
    assert!(core_resources.contains(&"configmaps".to_owned()));
}

#[tokio::test]
async fn kubeconfig_file_works() {
    let server = server_with_proto().await;
    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path()).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(
        names,
        [
            "default",
            "kube-node-lease",
            "kube-public",
            "kube-system",
            "proto"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn metadata_only_requests() {
    let server = server_with_proto().await;
    create_five(&RawClient::new(&server)).await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().unwrap(), "proto");
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["cm-1", "cm-2", "cm-3", "cm-4", "cm-5"]);

    let mut events = api
        .watch_metadata(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(object)) => assert_eq!(object.name_any(), "cm-1"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn registered_resource_served() {
    let server = server_with_proto().await;
    server.register(
        ResourceDef::new("apps", "v1", "Deployment", "deployments")
            .with_status_subresource()
            .with_generation(),
    );
    let created = server
        .create(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "proto"},
            "spec": {"replicas": 1}, "status": {"replicas": 5}}))
        .unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created.get("status").is_none(), "status is reset on create");

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(server.client().unwrap(), "proto");
    let scaled = deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
    assert_eq!(scaled.spec.unwrap().replicas, Some(3));
}

#[tokio::test]
async fn error_response_round_trip() {
    let server = server_with_proto().await;
    let error = server
        .get("v1", "ConfigMap", Some("proto"), "missing")
        .unwrap_err();
    let parsed: Status = serde_json::from_value(error.to_json()).unwrap();
    assert_eq!(parsed.code, 404);
    assert_eq!(parsed.reason, "NotFound");
}

/// Bodies captured from kube-apiserver v1.36.2 (watch cache on, etcd 3.6), one response body
/// or watch line each, exactly as sent.
#[rustfmt::skip]
mod recorded {
    pub const GET_CM1: &str = r##"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-1","namespace":"proto","uid":"2bb4565e-0c29-4212-a8c6-f89f2699d260","resourceVersion":"512","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v1"}}"##;

    pub const LIST_PAGE_1: &str = r##"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"516","continue":"eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NTE2LCJzdGFydCI6Ii9jbS0yXHUwMDAwIn0","remainingItemCount":3},"items":[{"metadata":{"name":"cm-1","namespace":"proto","uid":"2bb4565e-0c29-4212-a8c6-f89f2699d260","resourceVersion":"512","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v1"}},{"metadata":{"name":"cm-2","namespace":"proto","uid":"aa37b2d0-ec14-4241-a722-ddf9589be893","resourceVersion":"513","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v2"}}]}"##;

    pub const LIST_PAGE_2: &str = r##"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"516","continue":"eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NTE2LCJzdGFydCI6Ii9jbS00XHUwMDAwIn0","remainingItemCount":1},"items":[{"metadata":{"name":"cm-3","namespace":"proto","uid":"b3b596b0-4296-4166-ba89-e16f47b03066","resourceVersion":"514","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v3"}},{"metadata":{"name":"cm-4","namespace":"proto","uid":"fa04308b-d583-4844-82cd-0ead57d6d533","resourceVersion":"515","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v4"}}]}"##;

    pub const LIST_PAGE_3: &str = r##"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"516"},"items":[{"metadata":{"name":"cm-5","namespace":"proto","uid":"1cd89a5c-95e3-44e2-85cb-6d3924d8f36b","resourceVersion":"516","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v5"}}]}"##;

    pub const CONTINUE_EXPIRED: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{"continue":"eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6LTEsInN0YXJ0IjoiY20tMlx1MDAwMCJ9"},"status":"Failure","message":"The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.","reason":"Expired","code":410}"##;

    pub const LIST_TOO_OLD: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"The resourceVersion for the provided list is too old.","reason":"Expired","code":410}"##;

    pub const WATCH_TOO_OLD: &str = r##"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 1 (626)","reason":"Expired","code":410}}"##;

    pub const LIST_TOO_LARGE: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: Too large resource version: 1000546, current: 555","reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1},"code":504}"##;

    pub const WATCH_INITIAL_EVENTS_INVALID: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan","reason":"Invalid","details":{"group":"meta.k8s.io","kind":"ListOptions","causes":[{"reason":"FieldValueForbidden","message":"Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan","field":"resourceVersionMatch"}]},"code":422}"##;

    pub const LIST_INITIAL_EVENTS_INVALID: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided, sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list]","reason":"Invalid","details":{"group":"meta.k8s.io","kind":"ListOptions","causes":[{"reason":"FieldValueForbidden","message":"Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided","field":"resourceVersionMatch"},{"reason":"FieldValueForbidden","message":"Forbidden: sendInitialEvents is forbidden for list","field":"sendInitialEvents"}]},"code":422}"##;

    pub const FORBIDDEN_LIST: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"proto\"","reason":"Forbidden","details":{"kind":"configmaps"},"code":403}"##;

    pub const FORBIDDEN_WATCH: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps is forbidden: User \"alice\" cannot watch resource \"configmaps\" in API group \"\" in the namespace \"proto\"","reason":"Forbidden","details":{"kind":"configmaps"},"code":403}"##;

    pub const FORBIDDEN_GET: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"cm-1\" is forbidden: User \"alice\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"proto\"","reason":"Forbidden","details":{"name":"cm-1","kind":"configmaps"},"code":403}"##;

    pub const FORBIDDEN_CLUSTER_LIST: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" at the cluster scope","reason":"Forbidden","details":{"kind":"configmaps"},"code":403}"##;

    pub const UNAUTHORIZED: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"##;

    pub const NOT_FOUND_OBJECT: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"does-not-exist\" not found","reason":"NotFound","details":{"name":"does-not-exist","kind":"configmaps"},"code":404}"##;

    pub const EMPTY_LIST: &str = r##"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"931"},"items":[]}"##;

    pub const NOT_FOUND_RESOURCE: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"##;

    pub const CRD_REQUEST: &str = r##"{"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition","metadata":{"name":"widgets.example.com"},"spec":{"group":"example.com","scope":"Namespaced","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"versions":[{"name":"v1","served":true,"storage":true,"subresources":{"status":{}},"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"}}},"status":{"type":"object","properties":{"ready":{"type":"boolean"},"observedSize":{"type":"integer"}}}}}}}]}}"##;

    pub const CRD_CREATED: &str = r##"{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.example.com","uid":"49ce4845-b67e-49c6-8be9-ae7bf074979c","resourceVersion":"968","generation":1,"creationTimestamp":"2026-12-04T20:04:06Z","managedFields":[{"manager":"k8sproto-capture","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:conversion":{".":{},"f:strategy":{}},"f:group":{},"f:names":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:scope":{},"f:versions":{}}}}]},"spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"}}},"status":{"type":"object","properties":{"observedSize":{"type":"integer"},"ready":{"type":"boolean"}}}}}},"subresources":{"status":{}}}],"conversion":{"strategy":"None"}},"status":{"conditions":null,"acceptedNames":{"plural":"","kind":""},"storedVersions":["v1"]}}"##;

    pub const CRD_ESTABLISHED: &str = r##"{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.example.com","uid":"49ce4845-b67e-49c6-8be9-ae7bf074979c","resourceVersion":"971","generation":1,"creationTimestamp":"2026-12-04T20:04:06Z","managedFields":[{"manager":"k8sproto-capture","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:conversion":{".":{},"f:strategy":{}},"f:group":{},"f:names":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:scope":{},"f:versions":{}}}},{"manager":"kube-apiserver-136","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:acceptedNames":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:conditions":{"k:{\"type\":\"Established\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"NamesAccepted\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}}}}},"subresource":"status"}]},"spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"}}},"status":{"type":"object","properties":{"observedSize":{"type":"integer"},"ready":{"type":"boolean"}}}}}},"subresources":{"status":{}}}],"conversion":{"strategy":"None"}},"status":{"conditions":[{"type":"NamesAccepted","status":"True","lastTransitionTime":"2026-12-04T20:04:06Z","reason":"NoConflicts","message":"no conflicts found"},{"type":"Established","status":"True","lastTransitionTime":"2026-12-04T20:04:06Z","reason":"InitialNamesAccepted","message":"the initial names have been accepted"}],"acceptedNames":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"storedVersions":["v1"]}}"##;

    pub const WIDGET_DISCOVERY: &str = r##"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"example.com/v1","resources":[{"name":"widgets","singularName":"widget","namespaced":true,"kind":"Widget","verbs":["delete","deletecollection","get","list","patch","create","update","watch"],"storageVersionHash":"gIwvi5rymmg="},{"name":"widgets/status","singularName":"","namespaced":true,"kind":"Widget","verbs":["get","patch","update"]}]}"##;

    pub const STORAGE_INITIALIZING: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"storage is (re)initializing","reason":"TooManyRequests","details":{"retryAfterSeconds":1},"code":429}"##;

    pub const WIDGET_LIST_EMPTY: &str = r##"{"apiVersion":"example.com/v1","items":[],"kind":"WidgetList","metadata":{"continue":"","resourceVersion":"972"}}"##;

    pub const WIDGET_W1_REQUEST: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w1"},"spec":{"size":1}}"##;

    pub const WIDGET_W1: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w1","namespace":"proto","resourceVersion":"974","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":1}}"##;

    pub const WIDGET_W2_REQUEST: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w2"},"spec":{"size":2}}"##;

    pub const WIDGET_W2: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w2","namespace":"proto","resourceVersion":"975","uid":"e3d01d3f-6f14-431e-b519-9736eb30cfae"},"spec":{"size":2}}"##;

    pub const WIDGET_LIST: &str = r##"{"apiVersion":"example.com/v1","items":[{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w1","namespace":"proto","resourceVersion":"974","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":1}},{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w2","namespace":"proto","resourceVersion":"975","uid":"e3d01d3f-6f14-431e-b519-9736eb30cfae"},"spec":{"size":2}}],"kind":"WidgetList","metadata":{"continue":"","resourceVersion":"975"}}"##;

    pub const STATUS_PATCH: &str = r##"{"status":{"ready":true,"observedSize":1}}"##;

    pub const STATUS_PATCHED: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:14Z"}],"name":"w1","namespace":"proto","resourceVersion":"976","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":1},"status":{"observedSize":1,"ready":true}}"##;

    pub const MAIN_STATUS_PATCH: &str = r##"{"status":{"ready":false}}"##;

    pub const MAIN_STATUS_PATCHED: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:14Z"}],"name":"w1","namespace":"proto","resourceVersion":"976","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":1},"status":{"observedSize":1,"ready":true}}"##;

    pub const SPEC_PATCH: &str = r##"{"spec":{"size":5}}"##;

    pub const SPEC_PATCHED: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":2,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:14Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:15Z"}],"name":"w1","namespace":"proto","resourceVersion":"977","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":5},"status":{"observedSize":1,"ready":true}}"##;

    pub const MIXED_STATUS_PATCH: &str = r##"{"spec":{"size":9},"status":{"observedSize":5}}"##;

    pub const MIXED_STATUS_PATCHED: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":2,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:15Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:16Z"}],"name":"w1","namespace":"proto","resourceVersion":"978","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":5},"status":{"observedSize":5,"ready":true}}"##;

    pub const INVALID_WIDGET_REQUEST: &str = r##"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"bad"},"spec":{"size":"big"}}"##;

    pub const INVALID_WIDGET: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Widget.example.com \"bad\" is invalid: spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"","reason":"Invalid","details":{"name":"bad","group":"example.com","kind":"Widget","causes":[{"reason":"FieldValueTypeInvalid","message":"Invalid value: \"string\": spec.size in body must be of type integer: \"string\"","field":"spec.size"}]},"code":422}"##;

    pub const WIDGET_DELETED: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"w2","group":"example.com","kind":"widgets","uid":"e3d01d3f-6f14-431e-b519-9736eb30cfae"}}"##;

    pub const UID_PRECONDITION_CONFLICT: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on ConfigMap \"same-1\": the UID in the precondition (e7061136-4b1a-4460-95d8-fd30bb0b3960) does not match the UID in record (be52e8fd-f6dc-4bd0-a693-e85adca9abe0). The object might have been deleted and then recreated","reason":"Conflict","details":{"name":"same-1","kind":"ConfigMap"},"code":409}"##;

    pub const DELETE_SUCCESS: &str = r##"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"same-1","kind":"configmaps","uid":"be52e8fd-f6dc-4bd0-a693-e85adca9abe0"}}"##;

    pub const STREAMING_UNSUPPORTED: &str = r##"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"a watch stream was requested by the client but the required storage feature RequestWatchProgress is disabled","reason":"InternalError","code":500}}"##;

    pub const GET_CM1_PRETTY: &str = r##"{
  "kind": "ConfigMap",
  "apiVersion": "v1",
  "metadata": {
    "name": "cm-1",
    "namespace": "proto",
    "uid": "2bb4565e-0c29-4212-a8c6-f89f2699d260",
    "resourceVersion": "512",
    "creationTimestamp": "2026-12-04T19:55:55Z",
    "managedFields": [
      {
        "manager": "kubectl-create",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-12-04T19:55:55Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
          "f:data": {
            ".": {},
            "f:k": {}
          }
        }
      }
    ]
  },
  "data": {
    "k": "v1"
  }
}"##;

    pub const WATCH_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"w-1","namespace":"proto","uid":"6cc628fb-0829-4d3b-9900-490d40518a34","resourceVersion":"534","creationTimestamp":"2026-12-04T19:56:12Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:12Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:a":{}}}}]},"data":{"a":"1"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"w-1","namespace":"proto","uid":"6cc628fb-0829-4d3b-9900-490d40518a34","resourceVersion":"535","creationTimestamp":"2026-12-04T19:56:12Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:12Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:14Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:a":{}}}}]},"data":{"a":"2"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"w-1","namespace":"proto","uid":"6cc628fb-0829-4d3b-9900-490d40518a34","resourceVersion":"536","creationTimestamp":"2026-12-04T19:56:12Z","labels":{"color":"blue"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:12Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:14Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:a":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:15Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:color":{}}}}}]},"data":{"a":"2"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"w-1","namespace":"proto","uid":"6cc628fb-0829-4d3b-9900-490d40518a34","resourceVersion":"537","creationTimestamp":"2026-12-04T19:56:12Z","labels":{"color":"blue"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:12Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:14Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:a":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:15Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:color":{}}}}}]},"data":{"a":"2"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"w-2","namespace":"proto","uid":"6af7cfe5-15bc-4f29-add7-09d0118647fc","resourceVersion":"541","creationTimestamp":"2026-12-04T19:56:22Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:22Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:b":{}}}}]},"data":{"b":"1"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"w-2","namespace":"proto","uid":"6af7cfe5-15bc-4f29-add7-09d0118647fc","resourceVersion":"542","creationTimestamp":"2026-12-04T19:56:22Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:56:22Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:b":{}}}}]},"data":{"b":"1"}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"543"}}}"##,
    ];

    pub const INITIAL_STATE_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-1","namespace":"proto","uid":"2bb4565e-0c29-4212-a8c6-f89f2699d260","resourceVersion":"512","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v1"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-2","namespace":"proto","uid":"aa37b2d0-ec14-4241-a722-ddf9589be893","resourceVersion":"513","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v2"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-3","namespace":"proto","uid":"b3b596b0-4296-4166-ba89-e16f47b03066","resourceVersion":"514","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v3"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-4","namespace":"proto","uid":"fa04308b-d583-4844-82cd-0ead57d6d533","resourceVersion":"515","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v4"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-5","namespace":"proto","uid":"1cd89a5c-95e3-44e2-85cb-6d3924d8f36b","resourceVersion":"516","creationTimestamp":"2026-12-04T19:55:55Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T19:55:55Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:k":{}}}}]},"data":{"k":"v5"}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"926","annotations":{"k8s.io/initial-events-end":"true"}}}}"##,
    ];

    pub const CRD_WATCH_EVENTS: &[&str] = &[
        r##"{"type":"BOOKMARK","object":{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"resourceVersion":"967","annotations":{"k8s.io/initial-events-end":"true"}},"spec":{"group":"","names":{"plural":"","kind":""},"scope":"","versions":null},"status":{"conditions":null,"acceptedNames":{"plural":"","kind":""},"storedVersions":null}}}"##,
        r##"{"type":"ADDED","object":{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.example.com","uid":"49ce4845-b67e-49c6-8be9-ae7bf074979c","resourceVersion":"968","generation":1,"creationTimestamp":"2026-12-04T20:04:06Z","managedFields":[{"manager":"k8sproto-capture","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:conversion":{".":{},"f:strategy":{}},"f:group":{},"f:names":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:scope":{},"f:versions":{}}}}]},"spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"}}},"status":{"type":"object","properties":{"observedSize":{"type":"integer"},"ready":{"type":"boolean"}}}}}},"subresources":{"status":{}}}],"conversion":{"strategy":"None"}},"status":{"conditions":null,"acceptedNames":{"plural":"","kind":""},"storedVersions":["v1"]}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.example.com","uid":"49ce4845-b67e-49c6-8be9-ae7bf074979c","resourceVersion":"970","generation":1,"creationTimestamp":"2026-12-04T20:04:06Z","managedFields":[{"manager":"k8sproto-capture","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:conversion":{".":{},"f:strategy":{}},"f:group":{},"f:names":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:scope":{},"f:versions":{}}}},{"manager":"kube-apiserver-136","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:acceptedNames":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:conditions":{"k:{\"type\":\"Established\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"NamesAccepted\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}}}}},"subresource":"status"}]},"spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"}}},"status":{"type":"object","properties":{"observedSize":{"type":"integer"},"ready":{"type":"boolean"}}}}}},"subresources":{"status":{}}}],"conversion":{"strategy":"None"}},"status":{"conditions":[{"type":"NamesAccepted","status":"True","lastTransitionTime":"2026-12-04T20:04:06Z","reason":"NoConflicts","message":"no conflicts found"},{"type":"Established","status":"False","lastTransitionTime":"2026-12-04T20:04:06Z","reason":"Installing","message":"the initial names have been accepted"}],"acceptedNames":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"storedVersions":["v1"]}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.example.com","uid":"49ce4845-b67e-49c6-8be9-ae7bf074979c","resourceVersion":"971","generation":1,"creationTimestamp":"2026-12-04T20:04:06Z","managedFields":[{"manager":"k8sproto-capture","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:conversion":{".":{},"f:strategy":{}},"f:group":{},"f:names":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:scope":{},"f:versions":{}}}},{"manager":"kube-apiserver-136","operation":"Update","apiVersion":"apiextensions.k8s.io/v1","time":"2026-12-04T20:04:06Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:acceptedNames":{"f:kind":{},"f:listKind":{},"f:plural":{},"f:singular":{}},"f:conditions":{"k:{\"type\":\"Established\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}},"k:{\"type\":\"NamesAccepted\"}":{".":{},"f:lastTransitionTime":{},"f:message":{},"f:reason":{},"f:status":{},"f:type":{}}}}},"subresource":"status"}]},"spec":{"group":"example.com","names":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":{"size":{"type":"integer"}}},"status":{"type":"object","properties":{"observedSize":{"type":"integer"},"ready":{"type":"boolean"}}}}}},"subresources":{"status":{}}}],"conversion":{"strategy":"None"}},"status":{"conditions":[{"type":"NamesAccepted","status":"True","lastTransitionTime":"2026-12-04T20:04:06Z","reason":"NoConflicts","message":"no conflicts found"},{"type":"Established","status":"True","lastTransitionTime":"2026-12-04T20:04:06Z","reason":"InitialNamesAccepted","message":"the initial names have been accepted"}],"acceptedNames":{"plural":"widgets","singular":"widget","kind":"Widget","listKind":"WidgetList"},"storedVersions":["v1"]}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"resourceVersion":"971"},"spec":{"group":"","names":{"plural":"","kind":""},"scope":"","versions":null},"status":{"conditions":null,"acceptedNames":{"plural":"","kind":""},"storedVersions":null}}}"##,
    ];

    pub const WIDGET_WATCH_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w1","namespace":"proto","resourceVersion":"974","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":1}}}"##,
        r##"{"type":"ADDED","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w2","namespace":"proto","resourceVersion":"975","uid":"e3d01d3f-6f14-431e-b519-9736eb30cfae"},"spec":{"size":2}}}"##,
        r##"{"type":"MODIFIED","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:14Z"}],"name":"w1","namespace":"proto","resourceVersion":"976","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":1},"status":{"observedSize":1,"ready":true}}}"##,
        r##"{"type":"MODIFIED","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":2,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:14Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:15Z"}],"name":"w1","namespace":"proto","resourceVersion":"977","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":5},"status":{"observedSize":1,"ready":true}}}"##,
        r##"{"type":"MODIFIED","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":2,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:15Z"},{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:status":{".":{},"f:observedSize":{},"f:ready":{}}},"manager":"k8sproto-capture","operation":"Update","subresource":"status","time":"2026-12-04T20:04:16Z"}],"name":"w1","namespace":"proto","resourceVersion":"978","uid":"b4b383bb-b6a7-48fb-b8f1-b451579bc763"},"spec":{"size":5},"status":{"observedSize":5,"ready":true}}}"##,
        r##"{"type":"DELETED","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"creationTimestamp":"2026-12-04T20:04:13Z","generation":1,"managedFields":[{"apiVersion":"example.com/v1","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{".":{},"f:size":{}}},"manager":"k8sproto-capture","operation":"Update","time":"2026-12-04T20:04:13Z"}],"name":"w2","namespace":"proto","resourceVersion":"979","uid":"e3d01d3f-6f14-431e-b519-9736eb30cfae"},"spec":{"size":2}}}"##,
        r##"{"type":"BOOKMARK","object":{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"resourceVersion":"979"}}}"##,
    ];

    pub const LABEL_SELECTOR_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"988","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"1"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-2","namespace":"proto","uid":"ff65115d-6183-4cdf-9ede-33534c6cd453","resourceVersion":"989","creationTimestamp":"2026-12-04T20:04:44Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:44Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:v":{}},"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"1"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"990","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:45Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}}]},"data":{"v":"2"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"991","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:45Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}}]},"data":{"v":"2"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"993","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:49Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"994","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:49Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-2","namespace":"proto","uid":"ff65115d-6183-4cdf-9ede-33534c6cd453","resourceVersion":"995","creationTimestamp":"2026-12-04T20:04:44Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:44Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:v":{}},"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"1"}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"995"}}}"##,
    ];

    pub const FIELD_SELECTOR_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"987","creationTimestamp":"2026-12-04T20:04:42Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:v":{}}}}]},"data":{"v":"1"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"988","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"1"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"990","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:45Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}}]},"data":{"v":"2"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"991","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"backend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:45Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:46Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"2"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"992","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"backend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:46Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"993","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:49Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"994","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:49Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"995"}}}"##,
    ];

    pub const BOTH_SELECTORS_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"988","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"1"}}}"##,
        r##"{"type":"MODIFIED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"990","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:45Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}}]},"data":{"v":"2"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"991","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:43Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:45Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}}]},"data":{"v":"2"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"993","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:49Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"sel-1","namespace":"proto","uid":"32579272-d5db-43c2-ba14-c8deb5dab483","resourceVersion":"994","creationTimestamp":"2026-12-04T20:04:42Z","labels":{"tier":"frontend"},"managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:42Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{}}},{"manager":"kubectl-patch","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:47Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{"f:v":{}}}},{"manager":"kubectl-label","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:49Z","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:tier":{}}}}}]},"data":{"v":"3"}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"995"}}}"##,
    ];

    pub const RECREATE_EVENTS: &[&str] = &[
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"same-1","namespace":"proto","uid":"e7061136-4b1a-4460-95d8-fd30bb0b3960","resourceVersion":"999","creationTimestamp":"2026-12-04T20:04:59Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:59Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:gen":{}}}}]},"data":{"gen":"first"}}}"##,
        r##"{"type":"DELETED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"same-1","namespace":"proto","uid":"e7061136-4b1a-4460-95d8-fd30bb0b3960","resourceVersion":"1000","creationTimestamp":"2026-12-04T20:04:59Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:04:59Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:gen":{}}}}]},"data":{"gen":"first"}}}"##,
        r##"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"same-1","namespace":"proto","uid":"be52e8fd-f6dc-4bd0-a693-e85adca9abe0","resourceVersion":"1002","creationTimestamp":"2026-12-04T20:05:01Z","managedFields":[{"manager":"kubectl-create","operation":"Update","apiVersion":"v1","time":"2026-12-04T20:05:01Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:gen":{}}}}]},"data":{"gen":"second"}}}"##,
        r##"{"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion":"1002"}}}"##,
    ];
}

#[tokio::test]
async fn paged_selector_list() {
    let server = server_with_proto().await;
    for index in 0..7 {
        let tier = if index % 2 == 0 { "even" } else { "odd" };
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{index}"), "namespace": "proto",
                    "labels": {"tier": tier}}}))
            .unwrap();
    }
    let raw = RawClient::new(&server);
    let base = "/api/v1/namespaces/proto/configmaps?limit=2&labelSelector=tier%3Deven";
    let mut path = base.to_owned();
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = raw.get(&path).await.json();
        pages += 1;
        assert!(
            page["metadata"].get("remainingItemCount").is_none(),
            "no count with a selector: {page}"
        );
        for item in page["items"].as_array().unwrap() {
            names.push(item["metadata"]["name"].as_str().unwrap().to_owned());
        }
        match page["metadata"]["continue"].as_str() {
            Some(token) if !token.is_empty() => path = format!("{base}&continue={token}"),
            _ => break,
        }
    }
    assert_eq!(names, ["cm-0", "cm-2", "cm-4", "cm-6"]);
    assert_eq!(pages, 2, "the last matching item ends the list");
}

#[tokio::test(start_paused = true)]
async fn filtered_backlog_does_not_stall() {
    let server = server_with_proto().await;
    server.create_namespace("other").unwrap();
    let start = server.revision();
    for index in 0..1_200 {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("o-{index}"), "namespace": "other"}}))
            .unwrap();
    }
    server
        .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "mine", "namespace": "proto"}}))
        .unwrap();
    let raw = RawClient::new(&server);
    let mut stream = raw
        .stream(&format!(
            "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={start}&timeoutSeconds=5"
        ))
        .await;
    let (lines, ending) = stream.lines(Duration::from_secs(30)).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(r#""name":"mine""#), "{}", lines[0]);
    assert_eq!(ending, Ending::Clean);
}

#[tokio::test(start_paused = true)]
async fn long_backlog_then_bookmark() {
    let server = server_with_proto().await;
    let start = server.revision();
    for index in 0..1_234 {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{index:04}"), "namespace": "proto"}}))
            .unwrap();
    }
    let last = server.revision();

    let raw = RawClient::new(&server);
    let mut stream = raw
        .stream(&format!(
            "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={start}&allowWatchBookmarks=true&timeoutSeconds=70"
        ))
        .await;
    let (lines, ending) = stream.lines(Duration::from_secs(600)).await;
    assert_eq!(ending, Ending::Clean);

    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let added: Vec<i64> = events
        .iter()
        .filter(|event| event["type"] == "ADDED")
        .map(|event| resource_version(&event["object"]))
        .collect();
    assert_eq!(added.len(), 1_234);
    assert!(added.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    assert_eq!(added.last(), Some(&last));

    let bookmarks: Vec<i64> = events
        .iter()
        .filter(|event| event["type"] == "BOOKMARK")
        .map(|event| resource_version(&event["object"]))
        .collect();
    assert!(!bookmarks.is_empty());
    assert!(
        bookmarks.iter().all(|revision| *revision == last),
        "{bookmarks:?}"
    );
    let first_bookmark = events
        .iter()
        .position(|event| event["type"] == "BOOKMARK")
        .unwrap();
    assert_eq!(first_bookmark, 1_234, "bookmarks follow the whole backlog");
}

#[tokio::test(start_paused = true)]
async fn backlog_expires_midway() {
    let config = TestServerConfig {
        history_capacity: 600,
        ..TestServerConfig::default()
    };
    let server = TestServer::start_with(config).await.unwrap();
    server.create_namespace("proto").unwrap();
    let start = server.revision();
    // Large enough that the backlog does not fit in the socket buffers.
    let padding = "x".repeat(16 * 1024);
    for index in 0..600 {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{index:04}"), "namespace": "proto"},
                "data": {"padding": padding}}))
            .unwrap();
    }
    let raw = RawClient::new(&server);
    let mut stream = raw
        .stream(&format!(
            "/api/v1/namespaces/proto/configmaps?watch=1&resourceVersion={}&timeoutSeconds=30",
            start + 1
        ))
        .await;
    // Once the first batch of the backlog is out, more writes push the rest out of the window.
    let first = stream.take(10).await;
    assert_eq!(first.len(), 10);

    for index in 0..600 {
        server
            .create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("late-{index:04}"), "namespace": "proto"}}))
            .unwrap();
    }

    let (lines, ending) = stream.lines(Duration::from_secs(60)).await;
    let errors: Vec<&String> = lines
        .iter()
        .filter(|line| line.starts_with(r#"{"type":"ERROR""#))
        .collect();
    assert!(
        errors.is_empty(),
        "a watch that started inside the window sends its backlog whole: {errors:?}"
    );
    assert_eq!(ending, Ending::Clean);
}
