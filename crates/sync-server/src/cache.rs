//! The writer's hot-document cache: least recently used first out, bounded both in documents and
//! in an estimate of the bytes they hold in memory, so a few huge documents cannot pin gigabytes.

use std::num::NonZeroUsize;

use lru::LruCache;

/// Estimated memory of a loaded Automerge document from the size of its compacted `save()`:
/// loaded documents weigh tens of times their snapshot (BENCHMARKS.md: ~60 KB for ~700 B).
pub fn weight_of_snapshot(snapshot_len: usize) -> usize {
    snapshot_len.saturating_mul(64).saturating_add(16 << 10)
}

/// An LRU map with a byte budget beside its entry budget.
pub struct DocCache<V> {
    entries: LruCache<String, (V, usize)>,
    max_bytes: usize,
    bytes: usize,
}

impl<V> DocCache<V> {
    pub fn new(max_docs: usize, max_bytes: usize) -> Self {
        let cap = NonZeroUsize::new(max_docs.max(1)).expect("non-zero");
        DocCache { entries: LruCache::new(cap), max_bytes, bytes: 0 }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains(id)
    }

    pub fn get(&mut self, id: &str) -> Option<&V> {
        self.entries.get(id).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        self.entries.get_mut(id).map(|(v, _)| v)
    }

    /// Inserts `value` weighing `weight` bytes, evicting the least recently used entries until
    /// both budgets hold. An entry heavier than the whole budget is not kept.
    pub fn put(&mut self, id: String, value: V, weight: usize) {
        if let Some((_, old)) = self.entries.pop(&id) {
            self.bytes -= old;
        }
        if weight > self.max_bytes {
            return;
        }
        while self.bytes + weight > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, (_, w))) => self.bytes -= w,
                None => break,
            }
        }
        if let Some((_, (_, w))) = self.entries.push(id, (value, weight)) {
            // The entry budget pushed out the least recently used one.
            self.bytes -= w;
        }
        self.bytes += weight;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The estimated bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_budgets_hold_and_the_most_recent_stay() {
        let mut c = DocCache::new(3, 100);
        c.put("a".into(), 1, 40);
        c.put("b".into(), 2, 40);
        assert_eq!(c.get("a"), Some(&1));
        c.put("c".into(), 3, 40);
        assert!(!c.contains("b"), "bytes: the least recently used goes");
        assert_eq!((c.len(), c.bytes()), (2, 80));
        c.put("d".into(), 4, 1);
        c.put("e".into(), 5, 1);
        assert_eq!(c.len(), 3, "documents: at most three");
        assert!(c.bytes() <= 100);
        c.put("huge".into(), 6, 1_000);
        assert!(!c.contains("huge") && c.len() == 3, "heavier than the budget: not kept");
        c.put("e".into(), 7, 10);
        assert_eq!(c.get("e"), Some(&7));
        let held: usize = ["a", "c", "d", "e"].iter().filter(|k| c.contains(k)).count();
        assert_eq!(held, c.len());
    }
}
