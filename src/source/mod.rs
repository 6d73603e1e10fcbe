//! Sources of truth: the contract every backend implements, and the backends themselves.
//!
//! A [`Source`] offers two operations to the [reflector](crate::reflector):
//!
//! - [`Source::list_page`] reads a consistent snapshot in pages. The first page fixes the
//!   snapshot's [`Revision`], and every later page is read at that same revision.
//! - [`Source::watch`] streams [`WatchMessage`]s from a revision on. One [`Batch`] contains every
//!   change of one server response (one etcd watch response, which can carry all the events of
//!   one transaction, or one Kubernetes watch event). The reflector applies a batch as a unit and
//!   moves its resume revision only after the whole batch is applied.
//!
//! Every failure is a [`SourceError`] whose [`ErrorClass`] tells the reflector what to do next:
//! relist, back off and resume, or report a permanent failure.
//!
//! Backends:
//! - [`etcd::EtcdSource`]: a prefix of an etcd v3 key space.
//! - [`kubernetes::KubernetesSource`]: one Kubernetes API resource, through kube's client.
//! - [`memory::MemorySource`]: an in-process revisioned store with etcd's list, watch and
//!   compaction semantics and fault injection, for examples and deterministic tests.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;

pub mod etcd;
pub mod kubernetes;
pub mod memory;

/// A position in a source's history: an etcd revision, or a Kubernetes `resourceVersion`
/// parsed as an integer.
///
/// Revisions of one source only grow. Revision 0 means "none yet".
pub type Revision = i64;

/// The identity of one lifetime of a key.
///
/// A key that is deleted and created again gets a new incarnation, so a change of incarnation at
/// the same key is a delete followed by an add, never an update.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Incarnation {
    /// etcd's `create_revision` of the key.
    CreateRevision(Revision),
    /// A Kubernetes object's `metadata.uid`.
    Uid(Arc<str>),
}

/// One object as a source returns it, before decoding.
#[derive(Clone, Debug)]
pub struct Object<V> {
    /// The cache key: the etcd key, or `namespace/name` for Kubernetes.
    pub key: Arc<str>,
    /// The revision that last modified this object (etcd `mod_revision`, Kubernetes
    /// `resourceVersion`).
    pub revision: Revision,
    /// The lifetime this value belongs to.
    pub incarnation: Incarnation,
    /// The undecoded value.
    pub value: V,
}

/// One change inside a [`Batch`].
#[derive(Clone, Debug)]
pub enum Change<V> {
    /// The key now contains this object (created or modified).
    Put(Object<V>),
    /// The key was deleted at `revision`.
    Delete {
        /// The deleted key.
        key: Arc<str>,
        /// The revision of the delete.
        revision: Revision,
    },
}

impl<V> Change<V> {
    /// Returns the key this change touches.
    pub fn key(&self) -> &Arc<str> {
        match self {
            Change::Put(object) => &object.key,
            Change::Delete { key, .. } => key,
        }
    }

    /// Returns the revision of this change.
    pub fn revision(&self) -> Revision {
        match self {
            Change::Put(object) => object.revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// The changes of one server response, applied as a unit.
#[derive(Clone, Debug)]
pub struct Batch<V> {
    /// The highest revision in this batch. After the batch is applied, the watch resumes from
    /// `revision + 1`.
    pub revision: Revision,
    /// The changes in the order the server sent them.
    pub changes: Vec<Change<V>>,
}

/// One message of a watch stream.
#[derive(Clone, Debug)]
pub enum WatchMessage<V> {
    /// Changes to apply as a unit.
    Batch(Batch<V>),
    /// The source has no changes up to and including this revision: an etcd progress
    /// notification or a Kubernetes bookmark. It moves the resume revision forward, never back.
    Progress(Revision),
}

/// A stream of watch messages. It ends without an error when the server closed the watch
/// cleanly (for example a Kubernetes watch timeout), and the reflector then watches again from
/// its resume revision.
pub type WatchStream<V> = BoxStream<'static, Result<WatchMessage<V>, SourceError>>;

/// A request for one page of a list.
#[derive(Clone, Debug)]
pub struct ListRequest {
    /// `None` for the first page. For later pages, the revision the first page returned, so the
    /// whole list is one snapshot.
    pub revision: Option<Revision>,
    /// The continue position: `None` for the first page, then [`Page::next`] of the previous page.
    pub continue_from: Option<ContinueToken>,
    /// The maximum number of objects in the page.
    pub limit: usize,
}

/// An opaque position inside a paged list: the next etcd key, or a Kubernetes `continue` token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContinueToken(pub Vec<u8>);

/// One page of a list.
#[derive(Clone, Debug)]
pub struct Page<V> {
    /// The snapshot's revision. Every page of one list reports the same revision.
    pub revision: Revision,
    /// The objects of this page in key order.
    pub objects: Vec<Object<V>>,
    /// The start of the next page, or `None` when this is the last page.
    pub next: Option<ContinueToken>,
}

/// The reflector's reaction to a [`SourceError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The requested revision or continue token is no longer available (etcd compaction,
    /// Kubernetes 410 Gone). The reflector relists.
    Expired,
    /// The server or the connection failed for now. The reflector backs off and resumes from
    /// the last applied revision.
    Transient,
    /// Retrying will not help until an operator acts: permission denied, authentication failed,
    /// invalid configuration. The reflector reports it, marks itself not ready, and retries at
    /// its longest backoff in case the cause is fixed outside the process.
    Permanent,
}

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A classified failure of a source.
///
/// Every message names the source (endpoint and prefix, or resource and namespace), so an
/// operator can tell from one log line which watch failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The requested history is gone, so the reflector must relist.
    #[error("{source_name}: {detail}; relisting")]
    Expired {
        /// The source, for example `etcd http://127.0.0.1:2379 prefix "/app/"`.
        source_name: Arc<str>,
        /// The expired history, for example `revision 40 was compacted at 50`.
        detail: String,
    },
    /// A failure that a retry after a backoff may fix.
    #[error("{source_name}: {detail}")]
    Transient {
        /// The source.
        source_name: Arc<str>,
        /// What failed.
        detail: String,
        /// The underlying error, when there is one.
        #[source]
        cause: Option<BoxError>,
    },
    /// A failure that needs a person to act.
    #[error("{source_name}: {detail}. {action}")]
    Permanent {
        /// The source.
        source_name: Arc<str>,
        /// What failed.
        detail: String,
        /// The action that fixes it, for example which permission to grant.
        action: String,
        /// The underlying error, when there is one.
        #[source]
        cause: Option<BoxError>,
    },
}

impl SourceError {
    /// Returns how the reflector handles this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            SourceError::Expired { .. } => ErrorClass::Expired,
            SourceError::Transient { .. } => ErrorClass::Transient,
            SourceError::Permanent { .. } => ErrorClass::Permanent,
        }
    }
}

/// A source of truth that the reflector lists and watches.
///
/// Implementations are cheap to share: the reflector keeps one in an `Arc` and calls it from a
/// single task.
pub trait Source: Send + Sync + 'static {
    /// The undecoded value type: bytes for etcd, a JSON value for Kubernetes.
    type Value: Send + Sync + 'static;

    /// Returns a short description for logs and errors, naming the endpoint and the prefix or
    /// resource.
    fn name(&self) -> &Arc<str>;

    /// Reads one page of a consistent snapshot.
    ///
    /// # Errors
    /// [`ErrorClass::Expired`] when `request.revision` is no longer readable (the reflector
    /// restarts the list), [`ErrorClass::Transient`] or [`ErrorClass::Permanent`] otherwise.
    fn list_page(
        &self,
        request: ListRequest,
    ) -> impl Future<Output = Result<Page<Self::Value>, SourceError>> + Send;

    /// Opens a watch that delivers every change with a revision of at least `from`.
    ///
    /// An expired `from` may fail here or arrive later as the first item of the stream; both are
    /// [`ErrorClass::Expired`]. The stream must deliver something, a batch or a
    /// [`WatchMessage::Progress`], at least once per [`Source::progress_interval`] while healthy,
    /// so the reflector can tell a silent server from a stalled one.
    fn watch(
        &self,
        from: Revision,
    ) -> impl Future<Output = Result<WatchStream<Self::Value>, SourceError>> + Send;

    /// Returns how often a healthy watch delivers at least one message, or `None` when the
    /// source gives no such promise. The reflector treats a watch that stays silent for several
    /// times this interval as stalled and reconnects.
    fn progress_interval(&self) -> Option<std::time::Duration> {
        None
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incarnation::CreateRevision(revision) => write!(f, "created at {revision}"),
            Incarnation::Uid(uid) => write!(f, "uid {uid}"),
        }
    }
}
