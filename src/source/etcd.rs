//! etcd source.
