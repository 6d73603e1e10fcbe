//! Controller features for Kubernetes operators, built on the pipeline stages.
//!
//! - [`watches`]: map events of secondary resources to the keys of the primary resource, by
//!   owner references ("owns") or by a function.
//! - [`predicates`]: skip updates that do not matter, such as status-only changes.
//! - [`finalizer`]: add and remove a finalizer safely when several writers act at once.
//! - [`events`]: record Kubernetes Events about the objects a controller manages.

pub mod events;
pub mod finalizer;
pub mod predicates;
pub mod watches;
