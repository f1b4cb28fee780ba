//! A map bounded by bytes that evicts the least recently used entries first: what the API
//! functions' per-tenant caches keep, so an instance serving ten thousand tenants holds at most
//! its budget, and a busy tenant stays cached while idle ones go (docs/architecture.md).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The entries and their use order. `bytes` of an entry is what the caller weighs it at
/// ([`weight`]); the map holds at most `budget` of them in all.
pub struct ByteLru<K, V> {
    budget: usize,
    used: usize,
    clock: u64,
    entries: HashMap<K, Entry<V>>,
    /// Last use (a counter, not a time) to key: the first is the least recently used.
    order: BTreeMap<u64, K>,
}

struct Entry<V> {
    value: V,
    bytes: usize,
    used_at: u64,
}

impl<K: Clone + Eq + Hash, V> ByteLru<K, V> {
    pub fn new(budget: usize) -> ByteLru<K, V> {
        ByteLru {
            budget,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value under `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        self.order.remove(&entry.used_at);
        entry.used_at = self.clock;
        self.order.insert(self.clock, key.clone());
        Some(&entry.value)
    }

    /// The value under `key`, its use order untouched.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|e| &e.value)
    }

    /// Keeps `value` under `key` as the most recently used, evicting the least recently used
    /// entries until it fits. A value over the whole budget is not kept (and replaces nothing:
    /// the key's older value goes too).
    pub fn insert(&mut self, key: K, value: V, bytes: usize) {
        self.remove(&key);
        if bytes > self.budget {
            return;
        }
        while self.used + bytes > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(evicted) = self.entries.remove(&oldest) {
                self.used -= evicted.bytes;
            }
        }
        self.clock += 1;
        self.order.insert(self.clock, key.clone());
        self.used += bytes;
        self.entries.insert(
            key,
            Entry {
                value,
                bytes,
                used_at: self.clock,
            },
        );
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(entry) = self.entries.remove(key) {
            self.order.remove(&entry.used_at);
            self.used -= entry.bytes;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as weighed.
    pub fn used(&self) -> usize {
        self.used
    }
}

/// What a cached document holds in memory, as the caches weigh it ([`ByteLru::insert`]'s
/// `bytes`). The default is [`weight`]; a document with parts whose memory its JSON does not
/// show (a parsed detector layer) says so.
pub trait Resident: serde::Serialize {
    fn resident_bytes(&self) -> usize {
        weight(self)
    }
}

/// A parsed document holds about 3.5 times its length as JSON (maps of small strings and
/// numbers: allocations, their headers, map slots), as counted with a counting allocator over
/// 64 parsed copies of a learned model's and of a configuration's version by the bench's
/// "Memory across tenants" section: weighed at 4 times, rounded up.
pub const PARSED_PER_JSON_BYTE: usize = 4;

/// What a cached document weighs: [`PARSED_PER_JSON_BYTE`] times its length as JSON, counted
/// without writing it anywhere, plus a fixed overhead per entry (key, map slot, reference
/// counts).
pub fn weight<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    json_length(value) * PARSED_PER_JSON_BYTE + ENTRY_OVERHEAD
}

/// The length of `value` as JSON.
pub fn json_length<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Bytes an entry costs besides its document.
pub const ENTRY_OVERHEAD: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let mut lru = ByteLru::new(100);
        lru.insert("a", 1, 40);
        lru.insert("b", 2, 40);
        assert_eq!(lru.get(&"a"), Some(&1)); // a is now the most recently used
        lru.insert("c", 3, 40); // over 100: b goes, not a
        assert_eq!(lru.peek(&"b"), None);
        assert_eq!((lru.peek(&"a"), lru.peek(&"c")), (Some(&1), Some(&3)));
        assert_eq!((lru.len(), lru.used()), (2, 80));
        // Replacing a key frees its old bytes first.
        lru.insert("a", 10, 60);
        assert_eq!(
            (lru.peek(&"a"), lru.peek(&"c"), lru.used()),
            (Some(&10), Some(&3), 100)
        );
        // One more evicts as many as it takes.
        lru.insert("d", 4, 90);
        assert_eq!((lru.len(), lru.used()), (1, 90));
        assert_eq!(lru.peek(&"d"), Some(&4));
    }

    #[test]
    fn a_value_over_the_budget_is_not_kept_and_drops_the_older_one() {
        let mut lru = ByteLru::new(100);
        lru.insert("a", 1, 50);
        lru.insert("b", 2, 30);
        lru.insert("a", 3, 101);
        assert_eq!(lru.peek(&"a"), None);
        assert_eq!((lru.peek(&"b"), lru.used()), (Some(&2), 30));
        lru.remove(&"b");
        assert!(lru.is_empty());
        assert_eq!(lru.used(), 0);
    }

    #[test]
    fn ten_thousand_keys_through_a_small_budget_keep_the_newest() {
        let mut lru = ByteLru::new(1_000);
        for i in 0..10_000u32 {
            lru.insert(i, i, 100);
            assert!(lru.used() <= 1_000);
        }
        let mut kept: Vec<u32> = (0..10_000).filter(|i| lru.peek(i).is_some()).collect();
        kept.sort_unstable();
        assert_eq!(kept, (9_990..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn weight_is_the_parsed_size_of_the_json_and_the_entry_overhead() {
        let value = serde_json::json!({"a": [1, 2, 3]});
        assert_eq!(
            weight(&value),
            value.to_string().len() * PARSED_PER_JSON_BYTE + ENTRY_OVERHEAD
        );
    }
}
