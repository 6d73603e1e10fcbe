//! Secondary indexes over cached values.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::Entry;

/// A function from a value to the index values under which it is found.
pub type IndexFn<T> = Arc<dyn Fn(&T) -> Vec<String> + Send + Sync>;

/// A query named an index that was never added.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no index named {0:?}; add it with Store::add_index first")]
pub struct UnknownIndex(pub String);

struct Index<T> {
    index_fn: IndexFn<T>,
    /// Index value to the keys whose value maps to it. An index value with no key is removed.
    keys: HashMap<String, HashSet<Arc<str>>>,
}

pub(crate) struct Indexes<T> {
    by_name: HashMap<String, Index<T>>,
}

impl<T> Default for Indexes<T> {
    fn default() -> Self {
        Indexes {
            by_name: HashMap::new(),
        }
    }
}

impl<T> Indexes<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub(crate) fn add(
        &mut self,
        name: String,
        index_fn: IndexFn<T>,
        entries: &HashMap<Arc<str>, Entry<T>>,
    ) {
        let mut index = Index {
            index_fn,
            keys: HashMap::new(),
        };
        for (key, entry) in entries {
            for value in (index.index_fn)(&entry.cached.value) {
                index.keys.entry(value).or_default().insert(key.clone());
            }
        }
        self.by_name.insert(name, index);
    }

    pub(crate) fn insert(&mut self, key: &Arc<str>, value: &T) {
        for index in self.by_name.values_mut() {
            for index_value in (index.index_fn)(value) {
                index
                    .keys
                    .entry(index_value)
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &Arc<str>, value: &T) {
        for index in self.by_name.values_mut() {
            for index_value in (index.index_fn)(value) {
                if let Some(keys) = index.keys.get_mut(&index_value) {
                    keys.remove(key);
                    if keys.is_empty() {
                        index.keys.remove(&index_value);
                    }
                }
            }
        }
    }

    pub(crate) fn lookup(&self, name: &str, value: &str) -> Result<Vec<Arc<str>>, UnknownIndex> {
        let index = self
            .by_name
            .get(name)
            .ok_or_else(|| UnknownIndex(name.to_owned()))?;
        Ok(index
            .keys
            .get(value)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default())
    }

    pub(crate) fn values(&self, name: &str) -> Result<Vec<String>, UnknownIndex> {
        let index = self
            .by_name
            .get(name)
            .ok_or_else(|| UnknownIndex(name.to_owned()))?;
        Ok(index.keys.keys().cloned().collect())
    }
}
