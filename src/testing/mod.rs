//! A Kubernetes API test server: an in-memory kube-apiserver on a loopback port, for tests of
//! controllers that talk to Kubernetes through a real client (kube-rs, or anything that speaks
//! HTTP).
//!
//! [`TestServer`] serves the apiserver's REST protocol as kube-apiserver 1.36 does with its
//! watch cache on, and sends the same bodies: lists with `continue` tokens and
//! `remainingItemCount`, watch streams of one JSON event per line with bookmarks and the
//! `k8s.io/initial-events-end` marker, `Status` bodies for errors (`410 Expired`, `403
//! Forbidden`, `404 NotFound`, `409 Conflict`, `422 Invalid`, `504 Timeout`), discovery, CRDs
//! that become served resources, finalizers and the status subresource.
//!
//! Guarantees:
//! - One store-wide revision counts every write, as etcd's does; it is every object's
//!   `resourceVersion` and every list's. A write that changes nothing is not stored and sends
//!   no event.
//! - Lists are consistent snapshots: a continued list reads at its first page's revision until
//!   [`TestServer::compact`] removes it.
//! - A watch delivers every change after its start revision, in order, unless the revision
//!   has left the bounded history ([`TestServerConfig::history_capacity`]), in which case it
//!   gets `410 Expired`.
//!
//! Not modelled: authorization beyond [`TestServer::forbid`], admission webhooks, garbage
//! collection of owned objects, server-side apply conflicts, strategic merge of lists, field
//! validation beyond a CRD's structural schema, gzip responses, HTTP/2 and TLS. Each such
//! place in the code carries a `NOTE`.
//!
//! The module is compiled with the `test-server` feature.

mod cluster;
mod discovery;
mod encode;
mod faults;
mod fields;
mod http;
mod list;
mod patch;
mod request;
mod resources;
mod schema;
mod selectors;
mod server;
mod shared;
mod status;
mod store;
mod strategy;
mod watch;

pub use faults::{ExpiredWatchForm, Failure, RequestMatch, RestartHistory, Verb};
pub use resources::ResourceDef;
pub use server::{ADMIN_USER, TestServer, TestServerConfig, TestServerError};
pub use shared::RequestRecord;
pub use status::{StatusCause, StatusDetails, StatusError};
