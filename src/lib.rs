//! `informer` builds controllers: programs that watch a source of truth and reconcile every
//! change, over etcd and the Kubernetes API.
//!
//! The pipeline has one module per stage:
//!
//! ```text
//! source ──► reflector ──► cache ──► notify ──► workqueue ──► controller
//! (etcd,     (list, watch,  (store,   (event     (dedup, delay, (worker pool,
//!  memory)    resume,        indexes)  handlers,  rate limits)   reconcilers)
//!             relist)                  resync)
//! ```
//!
//! - [`source`]: the contract a backend implements (paged list at one revision, watch in
//!   batches, classified errors) and the etcd, Kubernetes and in-memory backends.
//! - [`reflector`]: the list, watch, resume and relist state machine, with backoff and
//!   readiness.
//! - [`cache`]: the local store of decoded values with indexes, updated a batch at a time, and
//!   the exact difference on relist.
//! - [`notify`]: event handlers with bounded, coalescing buffers and per-handler resync.
//! - [`workqueue`]: a deduplicating, delaying, rate-limited queue of keys.
//! - [`controller`]: a pool of workers that runs a reconciler for each queued key.
//!
//! Around the stages:
//! - [`decode`]: decoders from raw values to the typed values the cache stores.
//! - [`metrics`]: Prometheus metrics shared by every stage.
//! - [`operator`]: Kubernetes operator helpers: owner mapping, predicates, a finalizer helper
//!   and an Event recorder.
//! - `testing` (feature `test-server`): an in-memory Kubernetes-API server for tests.
//!
//! The cache is eventually consistent: it never claims to equal the server at an instant, so
//! reconcilers must be idempotent.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod cache;
pub mod controller;
pub mod decode;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod reflector;
pub mod source;
#[cfg(feature = "test-server")]
pub mod testing;
pub mod workqueue;
