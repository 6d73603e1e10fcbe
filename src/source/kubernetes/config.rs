//! The configuration of a Kubernetes source: resource, scope, selectors, paging and timeouts.

use std::any::TypeId;
use std::ops::RangeInclusive;
use std::time::Duration;

use kube::core::{ApiResource, ClusterResourceScope};

/// The default number of objects per list page, as client-go's reflector uses.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// The default range of server-side watch timeouts: 5 to 10 minutes, as client-go draws them,
/// so the watches of many sources do not all end together.
pub const DEFAULT_WATCH_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(300)..=Duration::from_secs(600);

/// The default time a watch may outlive its server timeout before it counts as half-open.
pub const DEFAULT_IDLE_GRACE: Duration = Duration::from_secs(30);

/// The resource and scope a source lists and watches, with its selectors, paging and timeouts.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// The resource: group, version, kind and plural name.
    pub resource: ApiResource,
    /// True for namespaced resources.
    pub namespaced: bool,
    /// One namespace, or `None` for all namespaces. Ignored for cluster-scoped resources.
    pub namespace: Option<String>,
    /// A label selector, such as `app=web,tier!=db`.
    pub label_selector: Option<String>,
    /// A field selector, such as `metadata.name=config`.
    pub field_selector: Option<String>,
    /// Request `PartialObjectMetadata` instead of whole objects. Values then hold only
    /// `apiVersion`, `kind` and `metadata`; decode them with
    /// `Json::<kube::core::PartialObjectMeta<K>>`.
    pub metadata_only: bool,
    /// Objects per list page. The reflector's own page size applies too: the smaller one wins.
    pub page_size: u32,
    /// The range of server-side watch timeouts, drawn at random per watch in whole seconds.
    /// Values below one second count as one second.
    pub watch_timeout: RangeInclusive<Duration>,
    /// How long past its server timeout an open watch is kept before it counts as half-open.
    pub idle_grace: Duration,
    /// Read the first list as a stream of watch events (`sendInitialEvents=true`).
    ///
    /// NOTE: the whole streaming list is one [`Source::list_page`](crate::source::Source::list_page)
    /// call, so it must finish within the reflector's `request_timeout` (30 s by default),
    /// where a paged list gets that long per page.
    pub streaming_list: bool,
}

impl KubernetesConfig {
    /// Watches the resource of type `K` in every namespace.
    pub fn new<K>() -> Self
    where
        K: kube::Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        // Only the scope type distinguishes a cluster-scoped type, because kube's `url_path`
        // adds a namespace segment to any type.
        let namespaced = TypeId::of::<K::Scope>() != TypeId::of::<ClusterResourceScope>();
        Self::for_resource(ApiResource::erase::<K>(&()), namespaced)
    }

    /// Watches a resource described at run time.
    pub fn for_resource(resource: ApiResource, namespaced: bool) -> Self {
        KubernetesConfig {
            resource,
            namespaced,
            namespace: None,
            label_selector: None,
            field_selector: None,
            metadata_only: false,
            page_size: DEFAULT_PAGE_SIZE,
            watch_timeout: DEFAULT_WATCH_TIMEOUT,
            idle_grace: DEFAULT_IDLE_GRACE,
            streaming_list: false,
        }
    }

    /// Limits the source to one namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets a label selector.
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Sets a field selector.
    pub fn fields(mut self, selector: impl Into<String>) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Requests metadata only.
    pub fn metadata_only(mut self) -> Self {
        self.metadata_only = true;
        self
    }

    /// Reads the first list as a stream of watch events.
    pub fn streaming_list(mut self) -> Self {
        self.streaming_list = true;
        self
    }

    /// Sets the list page size.
    pub fn page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets the range of server-side watch timeouts.
    pub fn watch_timeout(mut self, range: RangeInclusive<Duration>) -> Self {
        self.watch_timeout = range;
        self
    }

    /// Sets how long past its server timeout a watch is kept before it counts as half-open.
    pub fn idle_grace(mut self, grace: Duration) -> Self {
        self.idle_grace = grace;
        self
    }

    /// Returns the namespace the requests name, if the resource is namespaced.
    pub(super) fn request_namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|_| self.namespaced)
    }

    /// Returns the scope as messages name it: `namespace "a"`, `all namespaces` or `the
    /// cluster scope`.
    pub(super) fn scope(&self) -> String {
        match self.request_namespace() {
            Some(namespace) => format!("namespace {namespace:?}"),
            None if self.namespaced => "all namespaces".to_owned(),
            None => "the cluster scope".to_owned(),
        }
    }

    /// Returns the collection's URL path.
    pub(super) fn url_path(&self) -> String {
        let base = if self.resource.group.is_empty() {
            format!("/api/{}", self.resource.version)
        } else {
            format!("/apis/{}/{}", self.resource.group, self.resource.version)
        };
        match self.request_namespace() {
            Some(namespace) => format!("{base}/namespaces/{namespace}/{}", self.resource.plural),
            None => format!("{base}/{}", self.resource.plural),
        }
    }

    /// Draws the server timeout of one watch, in whole seconds of at least one.
    pub(super) fn draw_watch_timeout(&self) -> u32 {
        let low = self.watch_timeout.start().as_secs().max(1);
        let high = self.watch_timeout.end().as_secs().max(low);
        let seconds = rand::Rng::random_range(&mut rand::rng(), low..=high);
        seconds.min(u64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};

    use super::*;

    #[test]
    fn scope_from_type() {
        assert!(KubernetesConfig::new::<ConfigMap>().namespaced);
        assert!(!KubernetesConfig::new::<Namespace>().namespaced);
    }

    #[test]
    fn url_path_by_scope() {
        let all = KubernetesConfig::new::<ConfigMap>();
        assert_eq!(all.url_path(), "/api/v1/configmaps");
        assert_eq!(
            all.clone().namespace("a").url_path(),
            "/api/v1/namespaces/a/configmaps"
        );
        let cluster = KubernetesConfig::new::<Namespace>().namespace("a");
        assert_eq!(cluster.url_path(), "/api/v1/namespaces");
        assert_eq!(cluster.scope(), "the cluster scope");
    }

    #[test]
    fn watch_timeout_at_least_one_second() {
        let config = KubernetesConfig::new::<ConfigMap>()
            .watch_timeout(Duration::from_millis(10)..=Duration::from_millis(20));
        assert_eq!(config.draw_watch_timeout(), 1);
        let config = KubernetesConfig::new::<ConfigMap>();
        for _ in 0..100 {
            let seconds = config.draw_watch_timeout();
            assert!((300..=600).contains(&seconds), "{seconds}");
        }
    }
}
