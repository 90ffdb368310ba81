//! A fast hasher for the model's tables, whose keys are small integers the
//! kernel hands out (pids, namespace inode numbers): SipHash, the standard
//! default, cost more than the rest of a table lookup, several times per
//! event. Resistance to chosen keys is not needed there: a traced program
//! does not choose its pid or the inode number of the namespaces it makes.
//! The mixing is the one of `rustc-hash` (FxHash) with its final rotation,
//! which puts well-mixed bits where hashbrown takes the bucket index.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by kernel ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A `HashSet` of kernel ids.
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Multiply-and-rotate hashing of integers (FxHash).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher {
    hash: u64,
}

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_work_with_sequential_and_sparse_ids() {
        let mut set: IdSet<(usize, u32)> = IdSet::default();
        for i in 0..10_000u32 {
            assert!(set.insert(((i % 10) as usize, 4026531835 + i)));
            assert!(set.insert((0, i << 12)));
        }
        assert_eq!(set.len(), 20_000);
        assert!(set.contains(&(3, 4026531838)));
        assert!(!set.contains(&(4, 4026531838)));
        let mut map: IdMap<(&str, u32), u32> = IdMap::default();
        map.insert(("user", 1), 1);
        map.insert(("mnt", 1), 2);
        assert_eq!(map.get(&("user", 1)), Some(&1));
        assert_eq!(map.get(&("mnt", 1)), Some(&2));
    }

    #[test]
    fn different_ids_hash_apart() {
        let hash = |n: u32| {
            let mut h = IdHasher::default();
            h.write_u32(n);
            h.finish()
        };
        let buckets: HashSet<u64> = (1000..2000).map(|n| hash(n) & 1023).collect();
        assert!(buckets.len() > 600, "{}", buckets.len());
    }
}
