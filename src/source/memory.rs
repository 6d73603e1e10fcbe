//! In-memory source.
