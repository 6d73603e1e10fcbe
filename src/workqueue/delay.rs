//! The set of keys waiting for a delay, ordered by due time.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use tokio::time::Instant;

/// Keys waiting for a delay, at most one entry per key.
///
/// Invariant: `by_due` and `due_of` contain the same entries, so both have the same length.
pub(crate) struct Delayed<K> {
    /// Entries by due time. The sequence number orders keys with the same due time by insertion
    /// and makes every map key unique.
    by_due: BTreeMap<(Instant, u64), K>,
    /// The position of each key in `by_due`.
    due_of: HashMap<K, (Instant, u64)>,
    next_sequence: u64,
}

impl<K: Clone + Eq + Hash> Delayed<K> {
    pub(crate) fn new() -> Self {
        Delayed {
            by_due: BTreeMap::new(),
            due_of: HashMap::new(),
            next_sequence: 0,
        }
    }

    /// Schedules `key` at `due`, unless it is already scheduled at or before `due`: the earliest
    /// request wins. Returns true when the earliest due time of the whole set moved earlier, so
    /// waiters sleeping until the old earliest time must wake up.
    pub(crate) fn insert(&mut self, key: K, due: Instant) -> bool {
        if let Some(&(current, _)) = self.due_of.get(&key) {
            if current <= due {
                return false;
            }
            self.remove(&key);
        }

        let earlier = self.next_due().is_none_or(|earliest| due < earliest);
        let position = (due, self.next_sequence);
        self.next_sequence = self.next_sequence.wrapping_add(1);
        self.by_due.insert(position, key.clone());
        self.due_of.insert(key, position);
        earlier
    }

    /// Removes the entry of `key`. Returns true when there was one.
    pub(crate) fn remove(&mut self, key: &K) -> bool {
        match self.due_of.remove(key) {
            Some(position) => {
                self.by_due.remove(&position);
                true
            }
            None => false,
        }
    }

    /// Returns the earliest due time.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.by_due.keys().next().map(|&(due, _)| due)
    }

    /// Removes and returns the earliest entry if it is due at `now` or before.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(K, Instant)> {
        let entry = self.by_due.first_entry()?;
        let (due, _) = *entry.key();
        if due > now {
            return None;
        }

        let key = entry.remove();
        self.due_of.remove(&key);
        Some((key, due))
    }

    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_due.len(), self.due_of.len());
        self.due_of.len()
    }

    pub(crate) fn clear(&mut self) {
        self.by_due.clear();
        self.due_of.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn earliest_request_wins() {
        let now = Instant::now();
        let mut delayed = Delayed::new();

        assert!(delayed.insert("a", now + Duration::from_secs(10)));
        assert!(!delayed.insert("a", now + Duration::from_secs(20)));
        assert_eq!(delayed.next_due(), Some(now + Duration::from_secs(10)));

        assert!(delayed.insert("a", now + Duration::from_secs(5)));
        assert_eq!(delayed.next_due(), Some(now + Duration::from_secs(5)));
        assert_eq!(delayed.len(), 1);
    }

    #[test]
    fn pops_in_due_order() {
        let now = Instant::now();
        let mut delayed = Delayed::new();
        delayed.insert("late", now + Duration::from_secs(3));
        delayed.insert("first", now + Duration::from_secs(1));
        delayed.insert("second", now + Duration::from_secs(1));

        assert!(delayed.pop_due(now).is_none());

        let at = now + Duration::from_secs(2);
        assert_eq!(delayed.pop_due(at).map(|(key, _)| key), Some("first"));
        assert_eq!(delayed.pop_due(at).map(|(key, _)| key), Some("second"));
        assert!(delayed.pop_due(at).is_none());
        assert_eq!(delayed.len(), 1);
    }

    #[test]
    fn remove_clears_both_maps() {
        let now = Instant::now();
        let mut delayed = Delayed::new();
        delayed.insert("a", now + Duration::from_secs(1));

        assert!(delayed.remove(&"a"));
        assert!(!delayed.remove(&"a"));
        assert_eq!(delayed.len(), 0);
        assert_eq!(delayed.next_due(), None);
    }
}
