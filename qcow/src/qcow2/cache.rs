//! A write-back cache of metadata clusters (L2 tables or refcount blocks) keyed by host offset.

use std::collections::HashMap;

/// One cached cluster.
struct Slot {
    data: Vec<u8>,
    dirty: bool,
    last_use: u64,
}

/// A fixed-capacity cache with least-recently-used eviction; the caller writes back what it evicts.
pub struct TableCache {
    slots: HashMap<u64, Slot>,
    capacity: usize,
    tick: u64,
}

impl TableCache {
    /// A cache holding at most `capacity` clusters (at least 2).
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: HashMap::new(),
            capacity: capacity.max(2),
            tick: 0,
        }
    }

    /// Cached clusters at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The cached cluster at host offset `off`, marking it used.
    pub fn get(&mut self, off: u64) -> Option<&[u8]> {
        self.tick += 1;
        let t = self.tick;
        self.slots.get_mut(&off).map(|s| {
            s.last_use = t;
            &s.data[..]
        })
    }

    /// The cached cluster at `off` for modification; it becomes dirty.
    pub fn get_mut(&mut self, off: u64) -> Option<&mut [u8]> {
        self.tick += 1;
        let t = self.tick;
        self.slots.get_mut(&off).map(|s| {
            s.last_use = t;
            s.dirty = true;
            &mut s.data[..]
        })
    }

    /// Whether `off` is cached.
    pub fn contains(&self, off: u64) -> bool {
        self.slots.contains_key(&off)
    }

    /// The least recently used entry to evict before inserting, if the cache is full:
    /// (offset, data, dirty). The caller writes dirty data back.
    pub fn evict_if_full(&mut self) -> Option<(u64, Vec<u8>, bool)> {
        if self.slots.len() < self.capacity {
            return None;
        }
        let victim = self
            .slots
            .iter()
            .min_by_key(|(_, s)| s.last_use)
            .map(|(k, _)| *k)?;
        self.slots
            .remove(&victim)
            .map(|s| (victim, s.data, s.dirty))
    }

    /// Insert a cluster (call [`Self::evict_if_full`] first).
    pub fn insert(&mut self, off: u64, data: Vec<u8>, dirty: bool) {
        self.tick += 1;
        self.slots.insert(
            off,
            Slot {
                data,
                dirty,
                last_use: self.tick,
            },
        );
    }

    /// Offsets of dirty clusters, sorted (sequential write-back).
    pub fn dirty_offsets(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, _)| *k)
            .collect();
        v.sort_unstable();
        v
    }

    /// Data of a cached cluster without touching its use time or dirty flag.
    pub fn peek(&self, off: u64) -> Option<&[u8]> {
        self.slots.get(&off).map(|s| &s.data[..])
    }

    /// Mark a cluster clean after it was written back.
    pub fn mark_clean(&mut self, off: u64) {
        if let Some(s) = self.slots.get_mut(&off) {
            s.dirty = false;
        }
    }

    /// Drop a cluster (it was freed or its contents are stale).
    pub fn remove(&mut self, off: u64) {
        self.slots.remove(&off);
    }

    /// Drop everything (after an offline rewrite of metadata).
    pub fn clear(&mut self) {
        self.slots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = TableCache::new(2);
        c.insert(0, vec![0], false);
        c.insert(512, vec![1], false);
        assert!(c.get(0).is_some());
        let (off, _, dirty) = c.evict_if_full().unwrap();
        assert_eq!(off, 512);
        assert!(!dirty);
        c.insert(1024, vec![2], false);
        c.get_mut(1024).unwrap()[0] = 9;
        assert_eq!(c.dirty_offsets(), vec![1024]);
        c.mark_clean(1024);
        assert!(c.dirty_offsets().is_empty());
        assert_eq!(c.peek(1024), Some(&[9u8][..]));
    }
}
