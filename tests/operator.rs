//! The example ConfigSet operator (`examples/configmap_sync`) against the Kubernetes-API test
//! server, and the Helm chart that deploys it.
//!
//! Run with `cargo test --features test-server --test operator`. Without the feature only the
//! chart tests run.

#[allow(dead_code)]
#[path = "../examples/configmap_sync/operator.rs"]
mod operator;

/// The chart under `charts/informer-example`: its CRD matches the code, and the parts of its
/// templates without template directives are valid YAML.
mod chart {
    use std::path::{Path, PathBuf};

    use serde_yaml::Value;

    use super::operator;

    pub(crate) fn chart_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/informer-example")
    }

    fn read(relative: &str) -> String {
        let path = chart_dir().join(relative);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
    }

    fn parse(relative: &str, text: &str) -> Value {
        serde_yaml::from_str(text)
            .unwrap_or_else(|error| panic!("{relative} is not valid YAML: {error}"))
    }

    /// Returns the rules of the ClusterRole template: its `rules:` block, which has no template
    /// directives, parsed as YAML.
    pub(crate) fn cluster_role_rules() -> Vec<Rule> {
        let text = read("templates/clusterrole.yaml");
        let start = text
            .find("\nrules:")
            .expect("templates/clusterrole.yaml has a top-level rules: block");
        // The block ends where the closing template directive begins.
        let block = &text[start + 1..];
        let block = match block.find("\n{{") {
            Some(end) => &block[..end],
            None => block,
        };
        assert!(
            !block.contains("{{"),
            "the rules: block of templates/clusterrole.yaml must stay free of template directives, so this test can read it"
        );
        let parsed = parse("templates/clusterrole.yaml", block);
        let rules = parsed["rules"].as_sequence().expect("rules is a list");
        rules
            .iter()
            .map(|rule| {
                let strings = |field: &str| -> Vec<String> {
                    rule[field]
                        .as_sequence()
                        .unwrap_or_else(|| panic!("rule field {field} is a list: {rule:?}"))
                        .iter()
                        .map(|item| item.as_str().expect("a string").to_owned())
                        .collect()
                };
                Rule {
                    api_groups: strings("apiGroups"),
                    resources: strings("resources"),
                    verbs: strings("verbs"),
                }
            })
            .collect()
    }

    /// One ClusterRole rule.
    #[derive(Debug)]
    pub(crate) struct Rule {
        pub(crate) api_groups: Vec<String>,
        pub(crate) resources: Vec<String>,
        pub(crate) verbs: Vec<String>,
    }

    impl Rule {
        pub(crate) fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
            self.api_groups.iter().any(|g| g == group)
                && self.resources.iter().any(|r| r == resource)
                && self.verbs.iter().any(|v| v == verb)
        }
    }

    #[test]
    fn crd_matches_generated() {
        let generated = operator::crd_yaml().unwrap();
        let shipped = read("crds/configsets.informer.example.com.yaml");
        assert!(
            shipped == generated,
            "charts/informer-example/crds/configsets.informer.example.com.yaml differs from the CRD the code generates; regenerate it with\n  cargo run --example configmap_sync -- --print-crd > charts/informer-example/crds/configsets.informer.example.com.yaml"
        );
    }

    #[test]
    fn chart_files_parse() {
        let chart = parse("Chart.yaml", &read("Chart.yaml"));
        assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
        assert_eq!(chart["name"].as_str(), Some("informer-example"));

        let values = parse("values.yaml", &read("values.yaml"));
        let controller = values["controller"].as_str().unwrap();
        assert!(
            ["configmap-sync", "etcd-config-watcher"].contains(&controller),
            "values.yaml controller is {controller:?}"
        );
        assert!(values["image"]["repository"].as_str().is_some());
        assert_eq!(values["replicaCount"].as_u64(), Some(1));
    }

    #[test]
    fn cluster_role_has_operator_rules() {
        let rules = cluster_role_rules();
        let group = "informer.example.com";
        for (group, resource, verb) in [
            (group, "configsets", "watch"),
            (group, "configsets", "patch"),
            (group, "configsets/status", "patch"),
            (group, "configsets/finalizers", "update"),
            ("", "configmaps", "list"),
            ("", "configmaps", "delete"),
            ("events.k8s.io", "events", "create"),
            ("events.k8s.io", "events", "patch"),
            ("", "namespaces", "get"),
        ] {
            assert!(
                rules.iter().any(|rule| rule.allows(group, resource, verb)),
                "no rule allows {verb} on {resource} in group {group:?}"
            );
        }
        for (group, resource, verb) in [
            ("", "namespaces", "list"),
            ("", "secrets", "get"),
            (group, "configsets", "create"),
            (group, "configsets", "delete"),
        ] {
            assert!(
                !rules.iter().any(|rule| rule.allows(group, resource, verb)),
                "a rule allows {verb} on {resource} in group {group:?}, which the operator never does"
            );
        }
    }
}

/// The operator on the test server.
#[cfg(feature = "test-server")]
mod server {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::time::Duration;

    use informer::operator::events::{EventRecorder, EventSpec, EventType};
    use informer::operator::finalizer;
    use informer::testing::{Failure, RequestMatch, TestServer, Verb};
    use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use kube::{CustomResourceExt, Resource, ResourceExt};
    use kube_runtime::wait::{await_condition, conditions};
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::operator::{
        self, ConfigSet, ConfigSetSpec, FIELD_MANAGER, FINALIZER, MANAGED_BY_LABEL,
        OWNER_ANNOTATION, Operator,
    };

    /// How long a test waits for the operator to reach a state before it fails.
    const WAIT: Duration = Duration::from_secs(15);

    /// The user the operator authenticates as, which identifies its requests in the server's log.
    const OPERATOR_USER: &str = "system:serviceaccount:informer:configmap-sync";

    /// A test server with the CRD installed, a client for the test's own writes, and the
    /// operator.
    struct Harness {
        server: TestServer,
        client: kube::Client,
        operator: Option<Operator>,
    }

    impl Harness {
        async fn start() -> Harness {
            Harness::start_with(test_config()).await
        }

        async fn start_with(config: operator::Config) -> Harness {
            init_logging();
            let server = TestServer::start().await.unwrap();
            let client = server.client().unwrap();
            install_crd(&client).await;
            for namespace in ["team-a", "team-b", "team-c"] {
                server.create_namespace(namespace).unwrap();
            }
            let operator = Operator::start(server.client_for(OPERATOR_USER).unwrap(), config);
            tokio::time::timeout(WAIT, operator.wait_ready())
                .await
                .expect("the operator becomes ready");
            Harness {
                server,
                client,
                operator: Some(operator),
            }
        }

        fn operator(&self) -> &Operator {
            self.operator.as_ref().expect("the operator runs")
        }

        fn config_sets(&self, namespace: &str) -> Api<ConfigSet> {
            Api::namespaced(self.client.clone(), namespace)
        }

        fn config_maps(&self, namespace: &str) -> Api<ConfigMap> {
            Api::namespaced(self.client.clone(), namespace)
        }

        async fn create_config_set(
            &self,
            namespace: &str,
            name: &str,
            data: &[(&str, &str)],
            namespaces: &[&str],
        ) -> ConfigSet {
            let config_set = ConfigSet::new(name, spec(data, namespaces));
            self.config_sets(namespace)
                .create(&PostParams::default(), &config_set)
                .await
                .unwrap()
        }

        /// Waits until the ConfigSet's Ready condition has `status` for its current
        /// generation, and returns the ConfigSet.
        async fn wait_ready(&self, namespace: &str, name: &str, status: &str) -> ConfigSet {
            let api = self.config_sets(namespace);
            let what = format!("ConfigSet {namespace}/{name} Ready={status} for its generation");
            wait_for(&api, name, &what, |object: Option<&ConfigSet>| {
                object.is_some_and(|object| {
                    let condition = object.condition(operator::READY);
                    condition.is_some_and(|condition| {
                        condition.status == status
                            && condition.observed_generation == object.meta().generation
                    })
                })
            })
            .await
            .unwrap()
        }

        /// Waits until the ConfigMap `namespace/name` contains exactly `data`.
        async fn wait_data(&self, namespace: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
            let expected = string_map(data);
            let what = format!("ConfigMap {namespace}/{name} with data {expected:?}");
            wait_for(
                &self.config_maps(namespace),
                name,
                &what,
                |object: Option<&ConfigMap>| {
                    object.is_some_and(|object| object.data.clone().unwrap_or_default() == expected)
                },
            )
            .await
            .unwrap()
        }

        async fn wait_gone<K>(&self, api: &Api<K>, name: &str)
        where
            K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
        {
            let what = format!("{} {name} deleted", std::any::type_name::<K>());
            wait_for(api, name, &what, |object: Option<&K>| object.is_none()).await;
        }

        async fn events_about(&self, namespace: &str, name: &str) -> Vec<Event> {
            let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
            let events = api.list(&ListParams::default()).await.unwrap().items;
            events
                .into_iter()
                .filter(|event| {
                    event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
                .collect()
        }

        async fn shutdown(&mut self) {
            if let Some(operator) = self.operator.take() {
                let report = operator.shutdown().await;
                assert_eq!(report.aborted, 0, "no reconcile is aborted at shutdown");
            }
        }
    }

    /// Sends logs to the test's output, filtered by `RUST_LOG` (default: warnings).
    fn init_logging() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }

    fn test_config() -> operator::Config {
        operator::Config {
            workers: 2,
            resync: None,
            retry_after: Duration::from_millis(200),
            instance: "test".to_owned(),
            shutdown_deadline: Duration::from_secs(5),
        }
    }

    fn spec(data: &[(&str, &str)], namespaces: &[&str]) -> ConfigSetSpec {
        ConfigSetSpec {
            data: string_map(data),
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    async fn install_crd(client: &kube::Client) {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        api.create(&PostParams::default(), &ConfigSet::crd())
            .await
            .unwrap();
        let name = ConfigSet::crd_name();
        tokio::time::timeout(
            WAIT,
            await_condition(api, name, conditions::is_crd_established()),
        )
        .await
        .expect("the CRD becomes Established")
        .unwrap();
    }

    /// Waits until `condition` holds for the object `name`, through a watch.
    async fn wait_for<K>(
        api: &Api<K>,
        name: &str,
        what: &str,
        condition: impl Fn(Option<&K>) -> bool,
    ) -> Option<K>
    where
        K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
    {
        match tokio::time::timeout(WAIT, await_condition(api.clone(), name, condition)).await {
            Ok(result) => {
                result.unwrap_or_else(|error| panic!("watching for {what} failed: {error}"))
            }
            Err(_) => {
                let current = api.get_opt(name).await.ok().flatten();
                panic!("timed out after {WAIT:?} waiting for {what}; it is now {current:#?}")
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn config_set_creates_config_maps() {
        let mut harness = Harness::start().await;
        let created = harness
            .create_config_set(
                "team-a",
                "app",
                &[("mode", "fast"), ("level", "3")],
                &["team-a", "team-b"],
            )
            .await;

        let ready = harness.wait_ready("team-a", "app", "True").await;
        let condition = ready.condition(operator::READY).unwrap();
        assert_eq!(condition.reason, "Synced");
        assert_eq!(
            ready.status.as_ref().unwrap().observed_generation,
            ready.meta().generation
        );
        assert_eq!(ready.finalizers(), [FINALIZER.to_owned()]);

        let expected = [("mode", "fast"), ("level", "3")];
        let local = harness.wait_data("team-a", "app", &expected).await;
        let remote = harness.wait_data("team-b", "app", &expected).await;
        for config_map in [&local, &remote] {
            assert_eq!(
                config_map
                    .labels()
                    .get(MANAGED_BY_LABEL)
                    .map(String::as_str),
                Some(FIELD_MANAGER)
            );
            assert_eq!(
                config_map
                    .annotations()
                    .get(OWNER_ANNOTATION)
                    .map(String::as_str),
                Some("team-a/app")
            );
        }
        let owner = &local.owner_references()[0];
        assert_eq!(Some(&owner.uid), created.uid().as_ref());
        assert_eq!(owner.controller, Some(true));
        assert!(
            remote.owner_references().is_empty(),
            "owner references never cross namespaces"
        );
        assert!(
            harness
                .config_maps("team-c")
                .get_opt("app")
                .await
                .unwrap()
                .is_none()
        );

        let notes: Vec<String> = harness
            .events_about("team-a", "app")
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("Created"))
            .filter_map(|event| event.note)
            .collect();
        assert!(
            notes.contains(&"Created ConfigMap team-a/app".to_owned()),
            "events: {notes:?}"
        );
        assert!(
            notes.contains(&"Created ConfigMap team-b/app".to_owned()),
            "events: {notes:?}"
        );
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn edited_config_map_is_repaired() {
        let mut harness = Harness::start().await;
        harness
            .create_config_set("team-a", "app", &[("mode", "fast")], &["team-a", "team-b"])
            .await;
        harness.wait_ready("team-a", "app", "True").await;
        harness
            .wait_data("team-b", "app", &[("mode", "fast")])
            .await;
        let status_writes = status_patches(&harness.server);
        assert_eq!(status_writes, 1, "one status write for the first sync");
        let done = harness
            .operator()
            .metrics()
            .reconciles(Operator::NAME, "done");

        // Edited data and a key added by hand are both drift.
        let edit = json!({"data": {"mode": "slow", "extra": "added by hand"}});
        harness
            .config_maps("team-b")
            .patch("app", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .unwrap();
        harness
            .wait_data("team-b", "app", &[("mode", "fast")])
            .await;

        // Without the label the ConfigMap leaves the operator's watch, which reports it
        // deleted; the operator reads it from the server and labels it again.
        let unlabel = json!({"metadata": {"labels": {MANAGED_BY_LABEL: null}}});
        harness
            .config_maps("team-b")
            .patch("app", &PatchParams::default(), &Patch::Merge(&unlabel))
            .await
            .unwrap();
        let what = "ConfigMap team-b/app labelled again";
        wait_for(
            &harness.config_maps("team-b"),
            "app",
            what,
            |object: Option<&ConfigMap>| {
                object.is_some_and(|object| {
                    object.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(FIELD_MANAGER)
                })
            },
        )
        .await;

        wait_until("two more finished reconciles", || {
            harness
                .operator()
                .metrics()
                .reconciles(Operator::NAME, "done")
                >= done + 2
        })
        .await;
        assert_eq!(
            status_patches(&harness.server),
            status_writes,
            "repairs that leave the Ready condition as it was write no status"
        );
        let updated = harness
            .events_about("team-a", "app")
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("Updated"))
            .count();
        assert!(updated >= 1, "an Updated Event reports the repair");
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_namespace_config_map_deleted() {
        let mut harness = Harness::start().await;
        let namespaces = ["team-a", "team-b", "team-c"];
        harness
            .create_config_set("team-a", "app", &[("mode", "fast")], &namespaces)
            .await;
        harness.wait_ready("team-a", "app", "True").await;
        harness
            .wait_data("team-c", "app", &[("mode", "fast")])
            .await;

        let patch = json!({"spec": {"namespaces": ["team-a", "team-b"]}});
        harness
            .config_sets("team-a")
            .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        harness
            .wait_gone(&harness.config_maps("team-c"), "app")
            .await;
        let ready = harness.wait_ready("team-a", "app", "True").await;
        assert_eq!(ready.meta().generation, Some(2));
        assert!(
            harness
                .config_maps("team-b")
                .get_opt("app")
                .await
                .unwrap()
                .is_some()
        );

        let notes: Vec<String> = harness
            .events_about("team-a", "app")
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("Deleted"))
            .filter_map(|event| event.note)
            .collect();
        assert_eq!(
            notes,
            ["Deleted ConfigMap team-c/app: namespace team-c is no longer listed"]
        );
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finalizer_cleans_up_config_maps() {
        let mut harness = Harness::start().await;
        let namespaces = ["team-a", "team-b", "team-c"];
        harness
            .create_config_set("team-a", "app", &[("mode", "fast")], &namespaces)
            .await;
        harness.wait_ready("team-a", "app", "True").await;

        harness
            .config_sets("team-a")
            .delete("app", &DeleteParams::default())
            .await
            .unwrap();
        for namespace in namespaces {
            harness
                .wait_gone(&harness.config_maps(namespace), "app")
                .await;
        }
        harness
            .wait_gone(&harness.config_sets("team-a"), "app")
            .await;
        let cleaned = harness
            .events_about("team-a", "app")
            .await
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("CleanedUp"))
            .filter_map(|event| event.note)
            .collect::<Vec<_>>();
        assert_eq!(
            cleaned,
            ["Deleted 3 ConfigMaps before the ConfigSet is deleted"]
        );
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finalizer_keeps_foreign_finalizers() {
        let mut harness = Harness::start().await;
        let foreign = "example.com/keep";
        let mut config_set = ConfigSet::new("app", spec(&[("mode", "fast")], &["team-b"]));
        config_set.metadata.finalizers = Some(vec![foreign.to_owned()]);
        harness
            .config_sets("team-a")
            .create(&PostParams::default(), &config_set)
            .await
            .unwrap();
        let ready = harness.wait_ready("team-a", "app", "True").await;
        assert_eq!(
            ready.finalizers(),
            [foreign.to_owned(), FINALIZER.to_owned()]
        );

        harness
            .config_sets("team-a")
            .delete("app", &DeleteParams::default())
            .await
            .unwrap();
        harness
            .wait_gone(&harness.config_maps("team-b"), "app")
            .await;
        let what = "the operator's finalizer removed";
        let held = wait_for(
            &harness.config_sets("team-a"),
            "app",
            what,
            |object: Option<&ConfigSet>| {
                object.is_some_and(|object| object.finalizers() == [foreign.to_owned()])
            },
        )
        .await
        .unwrap();
        assert!(held.meta().deletion_timestamp.is_some());

        let release = json!({"metadata": {"finalizers": null}});
        harness
            .config_sets("team-a")
            .patch("app", &PatchParams::default(), &Patch::Merge(&release))
            .await
            .unwrap();
        harness
            .wait_gone(&harness.config_sets("team-a"), "app")
            .await;
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_only_update_skips_reconcile() {
        let config = operator::Config {
            workers: 1,
            ..test_config()
        };
        let mut harness = Harness::start_with(config).await;
        let operator = harness.operator();
        let api = harness.config_sets("team-a");
        harness
            .create_config_set("team-a", "watched", &[("mode", "fast")], &["team-b"])
            .await;
        harness
            .create_config_set("team-a", "barrier", &[("step", "0")], &["team-b"])
            .await;
        let watched = harness.wait_ready("team-a", "watched", "True").await;
        harness.wait_ready("team-a", "barrier", "True").await;
        wait_until("the caches hold the operator's own writes", || {
            cached_version(operator.config_sets(), "team-a/watched") == watched.resource_version()
        })
        .await;

        // Every ConfigSet event goes through one handler in order, and with one worker the
        // queue reconciles in order too. Once a later spec change of another ConfigSet is
        // reconciled, every earlier event has been filtered or reconciled.
        let barrier = |step: u32| {
            let api = api.clone();
            async move {
                let patch = json!({"spec": {"data": {"step": step.to_string()}}});
                api.patch("barrier", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
            }
        };
        barrier(1).await;
        harness.wait_ready("team-a", "barrier", "True").await;
        let before = operator.reconciles("team-a/watched");

        let mut status = watched.status.clone().unwrap();
        status.conditions.push(Condition {
            type_: "Audited".to_owned(),
            status: "True".to_owned(),
            reason: "Reviewed".to_owned(),
            message: "reviewed by a person".to_owned(),
            observed_generation: watched.meta().generation,
            last_transition_time: Time(Timestamp::now()),
        });
        let updated = api
            .patch_status(
                "watched",
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .unwrap();
        assert_eq!(updated.meta().generation, watched.meta().generation);
        barrier(2).await;
        harness.wait_ready("team-a", "barrier", "True").await;
        assert_eq!(
            operator.reconciles("team-a/watched"),
            before,
            "a status-only update must not be reconciled"
        );

        let patch = json!({"spec": {"data": {"mode": "slow"}}});
        api.patch("watched", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        harness.wait_ready("team-a", "watched", "True").await;
        assert!(
            operator.reconciles("team-a/watched") > before,
            "a spec change is reconciled"
        );
        let kept = api.get("watched").await.unwrap();
        assert!(
            kept.condition("Audited").is_some(),
            "the operator keeps other conditions"
        );
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_namespace_reports_not_ready() {
        let mut harness = Harness::start().await;
        harness
            .create_config_set("team-a", "app", &[("mode", "fast")], &["team-a", "team-x"])
            .await;
        let waiting = harness.wait_ready("team-a", "app", "False").await;
        let condition = waiting.condition(operator::READY).unwrap();
        assert_eq!(condition.reason, "NamespaceNotFound");
        assert!(
            condition.message.contains("team-x"),
            "message: {}",
            condition.message
        );
        harness
            .wait_data("team-a", "app", &[("mode", "fast")])
            .await;

        harness.server.create_namespace("team-x").unwrap();
        harness.wait_ready("team-a", "app", "True").await;
        harness
            .wait_data("team-x", "app", &[("mode", "fast")])
            .await;
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn foreign_config_map_conflict() {
        let mut harness = Harness::start().await;
        let foreign = json!({"metadata": {"name": "app"}, "data": {"owner": "a person"}});
        let foreign: ConfigMap = serde_json::from_value(foreign).unwrap();
        harness
            .config_maps("team-b")
            .create(&PostParams::default(), &foreign)
            .await
            .unwrap();
        harness
            .create_config_set("team-a", "app", &[("mode", "fast")], &["team-b"])
            .await;

        let blocked = harness.wait_ready("team-a", "app", "False").await;
        let condition = blocked.condition(operator::READY).unwrap();
        assert_eq!(condition.reason, "Conflict");
        assert!(
            condition.message.contains("belongs to no ConfigSet"),
            "message: {}",
            condition.message
        );
        let untouched = harness.config_maps("team-b").get("app").await.unwrap();
        assert_eq!(untouched.data, Some(string_map(&[("owner", "a person")])));

        harness
            .config_maps("team-b")
            .delete("app", &DeleteParams::default())
            .await
            .unwrap();
        harness.wait_ready("team-a", "app", "True").await;
        harness
            .wait_data("team-b", "app", &[("mode", "fast")])
            .await;
        harness.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finalizer_patch_detects_concurrent_writer() {
        init_logging();
        let server = TestServer::start().await.unwrap();
        let client = server.client().unwrap();
        install_crd(&client).await;
        let api: Api<ConfigSet> = Api::namespaced(client.clone(), "default");
        let other: Api<ConfigSet> =
            Api::namespaced(server.client_for("other-writer").unwrap(), "default");
        let created = api
            .create(
                &PostParams::default(),
                &ConfigSet::new("app", spec(&[], &[])),
            )
            .await
            .unwrap();

        // Another writer adds its finalizer between our read and our patch.
        let add_other = json!({"metadata": {"finalizers": ["example.com/other"]}});
        other
            .patch("app", &PatchParams::default(), &Patch::Merge(&add_other))
            .await
            .unwrap();
        let error = finalizer::add(&api, FINALIZER, &created).await.unwrap_err();
        assert!(
            matches!(&error, kube::Error::Api(status) if status.code == 422),
            "{error:?}"
        );
        let fresh = api.get("app").await.unwrap();
        finalizer::add(&api, FINALIZER, &fresh).await.unwrap();
        let both = api.get("app").await.unwrap();
        assert_eq!(
            both.finalizers(),
            ["example.com/other".to_owned(), FINALIZER.to_owned()]
        );

        // Another writer removes its finalizer, which moves ours to another index.
        let drop_other = json!({"metadata": {"finalizers": [FINALIZER]}});
        other
            .patch("app", &PatchParams::default(), &Patch::Merge(&drop_other))
            .await
            .unwrap();
        let error = finalizer::remove(&api, FINALIZER, &both).await.unwrap_err();
        assert!(
            matches!(&error, kube::Error::Api(status) if status.code == 422),
            "{error:?}"
        );
        let fresh = api.get("app").await.unwrap();
        finalizer::remove(&api, FINALIZER, &fresh).await.unwrap();
        assert!(api.get("app").await.unwrap().finalizers().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn event_recorder_updates_series() {
        init_logging();
        let server = TestServer::start().await.unwrap();
        let client = server.client().unwrap();
        let recorder = EventRecorder::new(client.clone(), "example.com/test", "test-0");
        let regarding = ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("ConfigMap".to_owned()),
            namespace: Some("default".to_owned()),
            name: Some("settings".to_owned()),
            uid: Some("uid-1".to_owned()),
            ..ObjectReference::default()
        };
        let synced = |note: &str| EventSpec {
            type_: EventType::Normal,
            reason: "Synced".to_owned(),
            action: "Apply".to_owned(),
            note: Some(note.to_owned()),
        };

        recorder.publish(&regarding, synced("first")).await.unwrap();
        recorder.publish(&regarding, synced("first")).await.unwrap();
        let events: Api<Event> = Api::namespaced(client, "default");
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(listed.len(), 1, "a repeat updates the Event: {listed:#?}");
        let event = &listed[0];
        assert_eq!(event.series.as_ref().map(|series| series.count), Some(2));
        assert_eq!(
            event.reporting_controller.as_deref(),
            Some("example.com/test")
        );
        assert_eq!(
            event.regarding.as_ref().and_then(|r| r.name.as_deref()),
            Some("settings")
        );

        recorder
            .publish(&regarding, synced("second"))
            .await
            .unwrap();
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(listed.len(), 2, "another note is another Event");

        // An Event deleted meanwhile is written again.
        for event in &listed {
            events
                .delete(&event.name_any(), &DeleteParams::default())
                .await
                .unwrap();
        }
        recorder.publish(&regarding, synced("first")).await.unwrap();
        let listed = events.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(listed.len(), 1);
        assert!(listed[0].series.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_report_readiness() {
        init_logging();
        let server = TestServer::start().await.unwrap();
        install_crd(&server.client().unwrap()).await;
        // The first ConfigSet lists fail, and the reflector backs off from 800 ms on, so the
        // operator stays unready for seconds.
        let lists = RequestMatch::any().verb(Verb::List).resource("configsets");
        server.fail_next(3, lists, Failure::Status(500));
        let operator = Operator::start(server.client().unwrap(), test_config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(operator::serve_probes(listener, operator.probes(), async {
            let _ = stopped.await;
        }));

        let (code, body) = http_get(address, "/healthz").await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let (code, body) = http_get(address, "/readyz").await;
        assert_eq!(code, 503);
        assert!(
            body.contains("the ConfigSet cache is not ready"),
            "body: {body}"
        );

        tokio::time::timeout(WAIT, operator.wait_ready())
            .await
            .expect("the operator becomes ready once the lists succeed");
        let (code, body) = http_get(address, "/readyz").await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let (code, body) = http_get(address, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("informer_source_errors_total"),
            "metrics: {body}"
        );
        assert!(body.ends_with("# EOF\n"), "metrics: {body}");

        operator.shutdown().await;
        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chart_rbac_covers_requests() {
        let mut harness = Harness::start().await;
        let api = harness.config_sets("team-a");
        harness
            .create_config_set(
                "team-a",
                "app",
                &[("mode", "fast")],
                &["team-a", "team-b", "team-x"],
            )
            .await;
        harness.wait_ready("team-a", "app", "False").await;
        let patch = json!({"spec": {"namespaces": ["team-a"]}});
        api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        harness
            .wait_gone(&harness.config_maps("team-b"), "app")
            .await;
        harness.wait_ready("team-a", "app", "True").await;
        api.delete("app", &DeleteParams::default()).await.unwrap();
        harness.wait_gone(&api, "app").await;
        harness.shutdown().await;

        let rules = super::chart::cluster_role_rules();
        let requests: Vec<_> = harness_requests(&harness.server)
            .into_iter()
            .filter(|request| request.user == OPERATOR_USER)
            .collect();
        assert!(
            requests.len() > 10,
            "the operator made requests: {requests:#?}"
        );
        for request in requests {
            let Some((group, resource)) = rbac_resource(&request.path) else {
                continue;
            };
            let verb = request
                .verb
                .expect("a resource request has a verb")
                .as_str();
            assert!(
                rules
                    .iter()
                    .any(|rule| rule.allows(&group, &resource, verb)),
                "the chart's ClusterRole does not allow {verb} on {resource} in group {group:?} ({} {})",
                request.method,
                request.path
            );
        }
    }

    fn harness_requests(server: &TestServer) -> Vec<informer::testing::RequestRecord> {
        server.requests()
    }

    /// Returns the API group and the resource (with its subresource, as RBAC names it) of a
    /// request path, or `None` for discovery and other non-resource paths.
    fn rbac_resource(path: &str) -> Option<(String, String)> {
        let path = path.split('?').next().unwrap_or(path);
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => (String::new(), rest),
            ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
            _ => return None,
        };
        let rest = match rest {
            ["namespaces", _namespace, rest @ ..] if !rest.is_empty() => rest,
            rest => rest,
        };
        match rest {
            [resource] | [resource, _] => Some((group, (*resource).to_owned())),
            [resource, _, subresource] => Some((group, format!("{resource}/{subresource}"))),
            _ => None,
        }
    }

    /// Counts the operator's writes to the ConfigSet status subresource.
    fn status_patches(server: &TestServer) -> usize {
        server
            .requests()
            .iter()
            .filter(|request| {
                request.user == OPERATOR_USER
                    && request.method == "PATCH"
                    && request
                        .path
                        .split('?')
                        .next()
                        .unwrap_or("")
                        .ends_with("/status")
            })
            .count()
    }

    fn cached_version(store: &informer::cache::Store<ConfigSet>, key: &str) -> Option<String> {
        store
            .get(key)
            .and_then(|cached| cached.value.resource_version())
    }

    /// Waits until `condition` holds for state inside this process (caches and counters),
    /// which offers no change notification.
    async fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `GET path` over HTTP/1.1 and returns the status code and the body.
    async fn http_get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        (code, body.to_owned())
    }
}
