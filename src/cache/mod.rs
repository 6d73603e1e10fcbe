//! The cache: a local store of decoded values, with indexes.
//! (Skeleton: the reader API below is stable; the writer lands next.)

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::source::{Incarnation, Revision};

/// One cached value with its key and version.
#[derive(Debug)]
pub struct Cached<T> {
    /// The key.
    pub key: Arc<str>,
    /// The revision that last modified the value.
    pub revision: Revision,
    /// The lifetime of the key this value belongs to.
    pub incarnation: Incarnation,
    /// The decoded value.
    pub value: Arc<T>,
}

impl<T> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Cached {
            key: self.key.clone(),
            revision: self.revision,
            incarnation: self.incarnation.clone(),
            value: self.value.clone(),
        }
    }
}

/// A cheap, cloneable read handle on the cache.
pub struct Store<T> {
    inner: Arc<RwLock<HashMap<Arc<str>, Cached<T>>>>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            inner: Arc::default(),
        }
    }
}

impl<T> Store<T> {
    /// Returns the cached value of `key`, or `None` when the key is absent.
    pub fn get(&self, key: &str) -> Option<Cached<T>> {
        self.inner.read().get(key).cloned()
    }

    /// Returns the number of cached keys.
    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    /// Returns true when the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Inserts a value. Test-only until the writer lands.
    #[doc(hidden)]
    pub fn insert_for_test(&self, cached: Cached<T>) {
        self.inner.write().insert(cached.key.clone(), cached);
    }
}
