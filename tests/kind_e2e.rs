//! End-to-end tests of the ConfigSet operator (`examples/configmap_sync`) against a real
//! cluster, such as the kind cluster `scripts/kind-e2e.sh` creates.
//!
//! The tests run only when `KUBECONFIG` is set, and only against a context whose name starts
//! with `kind-`, unless `INFORMER_E2E_ANY_CLUSTER=1`. Otherwise each test prints why it was
//! skipped and passes.
//!
//! What they change in the cluster:
//! - The ConfigSet CRD is installed with server-side apply and left installed at the end, so
//!   reruns and tests running in parallel share it. `scripts/kind-e2e.sh` deletes the whole
//!   cluster afterwards; on a cluster you keep, remove it with
//!   `kubectl delete crd configsets.informer.example.com`.
//! - Each test creates its own namespaces, named `informer-e2e-<random>-<n>`, and deletes them
//!   at the end, also when it fails: first its ConfigSets (while the operator still runs, so
//!   their finalizers complete), then the namespaces.
//!
//! One operator runs in this process for all tests, on a runtime of its own, and watches every
//! namespace.

#[allow(dead_code)]
#[path = "../examples/configmap_sync/operator.rs"]
mod operator;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, Resource, ResourceExt};
use kube_runtime::wait::{await_condition, conditions};
use serde::de::DeserializeOwned;
use serde_json::json;

use operator::{ConfigSet, ConfigSetSpec, FIELD_MANAGER, MANAGED_BY_LABEL, OWNER_ANNOTATION};

/// How long a test waits for the cluster to reach a state. Longer than on the test server:
/// kind schedules, deletes namespaces and runs admission for real.
const WAIT: Duration = Duration::from_secs(60);

/// The field manager of the tests' own writes.
const TEST_MANAGER: &str = "informer-e2e";

const HOW_TO_RUN: &str = "scripts/kind-e2e.sh creates a kind cluster and runs these tests in it; \
     to use a cluster you already have, set KUBECONFIG and run \
     `cargo test --test kind_e2e -- --nocapture`";

/// The operator shared by every test, on its own runtime so it outlives each test's runtime.
struct SharedOperator {
    _runtime: tokio::runtime::Runtime,
    _operator: operator::Operator,
}

static OPERATOR: OnceLock<Result<SharedOperator, String>> = OnceLock::new();

/// Returns why the tests must not run here, or `None` when they may.
fn skip_reason() -> Option<String> {
    if std::env::var_os("KUBECONFIG").is_none() {
        return Some(format!("KUBECONFIG is not set. {HOW_TO_RUN}"));
    }
    let kubeconfig = match kube::config::Kubeconfig::read() {
        Ok(kubeconfig) => kubeconfig,
        Err(error) => return Some(format!("cannot read the kubeconfig in KUBECONFIG: {error}")),
    };
    let context = kubeconfig.current_context.unwrap_or_default();
    let any_cluster = std::env::var("INFORMER_E2E_ANY_CLUSTER").is_ok_and(|value| value == "1");
    if !context.starts_with("kind-") && !any_cluster {
        return Some(format!(
            "the current context {context:?} is not a kind cluster (its name does not start with \"kind-\"); \
             these tests create and delete namespaces and a CRD, so they run elsewhere only with INFORMER_E2E_ANY_CLUSTER=1"
        ));
    }
    None
}

/// Starts the shared operator once: installs the CRD, waits until it is Established, starts
/// the operator and waits until it is ready. Returns `false` when the tests must be skipped.
fn start_operator() -> bool {
    if let Some(reason) = skip_reason() {
        println!("skipping the kind end-to-end test: {reason}");
        return false;
    }
    // Tests call this from inside their own runtime, where no other runtime may block, so
    // the operator's runtime is built and entered on a thread of its own.
    let shared = OPERATOR.get_or_init(|| {
        std::thread::spawn(start_shared_operator)
            .join()
            .unwrap_or_else(|_| Err("starting the operator panicked".to_owned()))
    });
    if let Err(error) = shared {
        panic!("{error}");
    }
    true
}

/// Builds the operator's runtime, installs the CRD and starts the operator on it.
fn start_shared_operator() -> Result<SharedOperator, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot build the operator's runtime: {error}"))?;
    let operator = runtime.block_on(async {
        init_logging();
        let client = client().await;
        install_crd(&client).await;
        let config = operator::Config {
            workers: 2,
            resync: None,
            retry_after: Duration::from_secs(1),
            instance: "kind-e2e".to_owned(),
            shutdown_deadline: Duration::from_secs(5),
        };
        let operator = operator::Operator::start(client, config);
        tokio::time::timeout(WAIT, operator.wait_ready())
            .await
            .map_err(|_| format!("the operator did not become ready within {WAIT:?}"))?;
        Ok::<_, String>(operator)
    })?;
    Ok(SharedOperator {
        _runtime: runtime,
        _operator: operator,
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

async fn client() -> kube::Client {
    let config = kube::Config::infer()
        .await
        .expect("the kubeconfig in KUBECONFIG describes a reachable cluster");
    kube::Client::try_from(config).expect("a kube client builds from the kubeconfig")
}

async fn install_crd(client: &kube::Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ConfigSet::crd();
    let params = PatchParams::apply(TEST_MANAGER).force();
    api.patch(ConfigSet::crd_name(), &params, &Patch::Apply(&crd))
        .await
        .expect("the ConfigSet CRD installs");
    let established = await_condition(api, ConfigSet::crd_name(), conditions::is_crd_established());
    tokio::time::timeout(WAIT, established)
        .await
        .expect("the ConfigSet CRD becomes Established")
        .expect("watching the CRD works");
}

/// The namespaces of one test, deleted when it ends, with the ConfigSets in them first.
struct TestNamespaces {
    client: kube::Client,
    names: Vec<String>,
}

impl TestNamespaces {
    /// Creates `count` namespaces with a random common prefix.
    async fn create(client: &kube::Client, count: usize) -> TestNamespaces {
        let prefix = format!("informer-e2e-{:08x}", rand::random::<u32>());
        let mut namespaces = TestNamespaces {
            client: client.clone(),
            names: Vec::new(),
        };
        for index in 0..count {
            namespaces.add(&format!("{prefix}-{index}")).await;
        }
        namespaces
    }

    /// Creates namespace `name` and deletes it with the others.
    async fn add(&mut self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))
            .expect("a namespace deserializes");
        api.create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("cannot create namespace {name}: {error}"));
        self.names.push(name.to_owned());
    }

    fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Deletes the ConfigSets in the namespaces, waits until their finalizers are done, then
    /// deletes the namespaces.
    async fn delete(client: kube::Client, names: Vec<String>) {
        for namespace in &names {
            let api: Api<ConfigSet> = Api::namespaced(client.clone(), namespace);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for config_set in list {
                let name = config_set.name_any();
                let _ = api.delete(&name, &DeleteParams::default()).await;
                let uid = config_set.uid().unwrap_or_default();
                let gone = await_condition(api.clone(), &name, conditions::is_deleted(&uid));
                if tokio::time::timeout(WAIT, gone).await.is_err() {
                    eprintln!("ConfigSet {namespace}/{name} is still there after {WAIT:?}");
                }
            }
        }
        let api: Api<Namespace> = Api::all(client);
        for namespace in &names {
            if let Err(error) = api.delete(namespace, &DeleteParams::default()).await {
                eprintln!("cannot delete namespace {namespace}: {error}");
            }
        }
    }
}

impl Drop for TestNamespaces {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        // The test's runtime is busy dropping this value, and its client belongs to that
        // runtime, so the cleanup runs with a new client on a runtime of its own, on another
        // thread.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime builds");
            runtime.block_on(async move { TestNamespaces::delete(client().await, names).await });
        });
        if cleanup.join().is_err() {
            eprintln!("cleaning up the test namespaces panicked");
        }
    }
}

fn config_set(name: &str, data: &[(&str, &str)], namespaces: &[&str]) -> ConfigSet {
    ConfigSet::new(
        name,
        ConfigSetSpec {
            data: string_map(data),
            namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        },
    )
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
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
        Ok(result) => result.unwrap_or_else(|error| panic!("watching for {what} failed: {error}")),
        Err(_) => {
            let current = api.get_opt(name).await.ok().flatten();
            panic!("timed out after {WAIT:?} waiting for {what}; it is now {current:#?}")
        }
    }
}

async fn wait_ready(api: &Api<ConfigSet>, name: &str, status: &str) -> ConfigSet {
    let what = format!("ConfigSet {name} Ready={status} for its generation");
    wait_for(api, name, &what, |object: Option<&ConfigSet>| {
        object.is_some_and(|object| {
            object.condition(operator::READY).is_some_and(|condition| {
                condition.status == status
                    && condition.observed_generation == object.meta().generation
            })
        })
    })
    .await
    .expect("the ConfigSet exists")
}

async fn wait_data(api: &Api<ConfigMap>, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let expected = string_map(data);
    let what = format!("ConfigMap {name} with data {expected:?}");
    wait_for(api, name, &what, |object: Option<&ConfigMap>| {
        object.is_some_and(|object| object.data.clone().unwrap_or_default() == expected)
    })
    .await
    .expect("the ConfigMap exists")
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    let what = format!("{} {name} deleted", std::any::type_name::<K>());
    wait_for(api, name, &what, |object: Option<&K>| object.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configset_lifecycle() {
    if !start_operator() {
        return;
    }
    let client = client().await;
    let namespaces = TestNamespaces::create(&client, 3).await;
    let (home, second, third) = (namespaces.name(0), namespaces.name(1), namespaces.name(2));
    let config_sets: Api<ConfigSet> = Api::namespaced(client.clone(), home);
    let config_maps =
        |namespace: &str| -> Api<ConfigMap> { Api::namespaced(client.clone(), namespace) };

    let created = config_sets
        .create(
            &PostParams::default(),
            &config_set("app", &[("mode", "fast")], &[home, second]),
        )
        .await
        .unwrap();
    let ready = wait_ready(&config_sets, "app", "True").await;
    assert_eq!(ready.condition(operator::READY).unwrap().reason, "Synced");
    assert!(ready.finalizers().contains(&operator::FINALIZER.to_owned()));

    let local = wait_data(&config_maps(home), "app", &[("mode", "fast")]).await;
    let remote = wait_data(&config_maps(second), "app", &[("mode", "fast")]).await;
    let owner = format!("{home}/app");
    for config_map in [&local, &remote] {
        assert_eq!(
            config_map
                .labels()
                .get(MANAGED_BY_LABEL)
                .map(String::as_str),
            Some(FIELD_MANAGER)
        );
        assert_eq!(config_map.annotations().get(OWNER_ANNOTATION), Some(&owner));
    }
    assert_eq!(
        local.owner_references().first().map(|owner| &owner.uid),
        created.uid().as_ref()
    );

    // Drift in a ConfigMap is repaired.
    let edit = json!({"data": {"mode": "slow", "extra": "added by hand"}});
    config_maps(second)
        .patch("app", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_data(&config_maps(second), "app", &[("mode", "fast")]).await;

    // A namespace dropped from the spec loses its ConfigMap; a new one gets one.
    let patch = json!({"spec": {"namespaces": [home, third]}});
    config_sets
        .patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_gone(&config_maps(second), "app").await;
    wait_data(&config_maps(third), "app", &[("mode", "fast")]).await;
    wait_ready(&config_sets, "app", "True").await;

    let events: Api<Event> = Api::namespaced(client.clone(), home);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("app"))
        .filter_map(|event| event.reason)
        .collect();
    for reason in ["Created", "Updated", "Deleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event in {reasons:?}"
        );
    }

    // Deleting the ConfigSet deletes its ConfigMaps through the finalizer.
    config_sets
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&config_maps(home), "app").await;
    wait_gone(&config_maps(third), "app").await;
    wait_gone(&config_sets, "app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_namespace_then_created() {
    if !start_operator() {
        return;
    }
    let client = client().await;
    let mut namespaces = TestNamespaces::create(&client, 1).await;
    let home = namespaces.name(0).to_owned();
    let later = format!("{home}-later");
    let config_sets: Api<ConfigSet> = Api::namespaced(client.clone(), &home);
    config_sets
        .create(
            &PostParams::default(),
            &config_set("app", &[("mode", "fast")], &[&home, &later]),
        )
        .await
        .unwrap();

    let waiting = wait_ready(&config_sets, "app", "False").await;
    let condition = waiting.condition(operator::READY).unwrap();
    assert_eq!(condition.reason, "NamespaceNotFound");
    assert!(
        condition.message.contains(&later),
        "message: {}",
        condition.message
    );

    namespaces.add(&later).await;
    wait_ready(&config_sets, "app", "True").await;
    wait_data(
        &Api::namespaced(client.clone(), &later),
        "app",
        &[("mode", "fast")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_config_map_kept() {
    if !start_operator() {
        return;
    }
    let client = client().await;
    let namespaces = TestNamespaces::create(&client, 2).await;
    let (home, other) = (namespaces.name(0), namespaces.name(1));
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "data": {"owner": "a person"},
    }))
    .unwrap();
    let other_maps: Api<ConfigMap> = Api::namespaced(client.clone(), other);
    other_maps
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let config_sets: Api<ConfigSet> = Api::namespaced(client.clone(), home);
    config_sets
        .create(
            &PostParams::default(),
            &config_set("app", &[("mode", "fast")], &[other]),
        )
        .await
        .unwrap();
    let blocked = wait_ready(&config_sets, "app", "False").await;
    assert_eq!(
        blocked.condition(operator::READY).unwrap().reason,
        "Conflict"
    );
    let kept = other_maps.get("app").await.unwrap();
    assert_eq!(kept.data, Some(string_map(&[("owner", "a person")])));

    other_maps
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    wait_ready(&config_sets, "app", "True").await;
    wait_data(&other_maps, "app", &[("mode", "fast")]).await;
}
