//! The offset allocator shared by ClusterIP ranges and NodePorts: KEP-3070 static and dynamic bands.
//!
//! Offsets `[0, static_len)` form the static band and `[static_len, total)` the dynamic band.
//! `allocate_next` picks a random start in the dynamic band and takes the first free offset at or
//! after it, wrapping inside the band (upstream's `randomScanStrategyWithOffset`); when the dynamic
//! band is full it does the same in the static band. The result depends only on the set of
//! allocated offsets and the RNG state, never on the order of earlier operations, so a restored
//! snapshot with the same seed behaves exactly like the original.
//!
//! A band of at most [`DENSE_LIMIT`] offsets is a hierarchical [`Bitmap`] (1 bit per offset,
//! O(log64 n) worst case per operation). A larger band (IPv4 shorter than /8, IPv6 /64 … /103)
//! is a hash set of allocated offsets: memory follows the number allocated, not the range, and
//! the scan from a random start is expected O(1) because such a band can only ever be filled to a
//! tiny fraction.

use std::collections::HashSet;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::bitmap::Bitmap;

/// Bands up to this many offsets use a bitmap (2 MiB at most); larger ones a hash set.
pub(crate) const DENSE_LIMIT: u64 = 1 << 24;

#[derive(Clone, Debug)]
enum Store {
    Dense(Bitmap),
    Sparse(HashSet<u64>),
}

/// One band: offsets `[start, start + len)`, stored relative to `start`.
#[derive(Clone, Debug)]
struct Band {
    start: u64,
    len: u64,
    used: u64,
    store: Store,
}

impl Band {
    fn new(start: u64, len: u64, dense_limit: u64) -> Self {
        let store = if len <= dense_limit {
            Store::Dense(Bitmap::new(len))
        } else {
            Store::Sparse(HashSet::new())
        };
        Band {
            start,
            len,
            used: 0,
            store,
        }
    }

    fn has(&self, rel: u64) -> bool {
        match &self.store {
            Store::Dense(b) => b.get(rel),
            Store::Sparse(s) => s.contains(&rel),
        }
    }

    fn insert(&mut self, rel: u64) -> bool {
        let inserted = match &mut self.store {
            Store::Dense(b) => b.set(rel),
            Store::Sparse(s) => s.insert(rel),
        };
        self.used += u64::from(inserted);
        inserted
    }

    fn remove(&mut self, rel: u64) -> bool {
        let removed = match &mut self.store {
            Store::Dense(b) => b.clear(rel),
            Store::Sparse(s) => s.remove(&rel),
        };
        self.used -= u64::from(removed);
        removed
    }

    /// A free relative offset: the first free one at or after a random start, wrapping.
    fn find_free(&self, rng: &mut impl Rng) -> Option<u64> {
        if self.used >= self.len {
            return None;
        }
        let start = rng.random_range(0..self.len);
        match &self.store {
            Store::Dense(b) => b
                .first_clear_in(start, self.len)
                .or_else(|| b.first_clear_in(0, start)),
            Store::Sparse(s) => {
                // Terminates: at least one offset of the band is free.
                let mut rel = start;
                while s.contains(&rel) {
                    rel += 1;
                    if rel == self.len {
                        rel = 0;
                    }
                }
                Some(rel)
            }
        }
    }

    fn clear(&mut self) {
        self.used = 0;
        match &mut self.store {
            Store::Dense(b) => b.clear_all(),
            Store::Sparse(s) => *s = HashSet::new(),
        }
    }

    fn iter_sorted(&self) -> Vec<u64> {
        let mut out: Vec<u64> = match &self.store {
            Store::Dense(b) => b.iter_ones().collect(),
            Store::Sparse(s) => s.iter().copied().collect(),
        };
        out.sort_unstable();
        out.iter_mut().for_each(|rel| *rel += self.start);
        out
    }
}

/// Offsets `[0, total)` split into a static band `[0, static_len)` and a dynamic band.
#[derive(Clone, Debug)]
pub(crate) struct BandedAllocator {
    /// `[static, dynamic]`.
    bands: [Band; 2],
    rng: SmallRng,
}

impl BandedAllocator {
    /// An empty allocator; `static_len` is clamped to `total`.
    pub(crate) fn new(total: u64, static_len: u64, seed: u64) -> Self {
        Self::with_dense_limit(total, static_len, seed, DENSE_LIMIT)
    }

    /// Like [`BandedAllocator::new`] with a chosen dense/sparse threshold (tests force sparse).
    pub(crate) fn with_dense_limit(
        total: u64,
        static_len: u64,
        seed: u64,
        dense_limit: u64,
    ) -> Self {
        let static_len = static_len.min(total);
        BandedAllocator {
            bands: [
                Band::new(0, static_len, dense_limit),
                Band::new(static_len, total - static_len, dense_limit),
            ],
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// Restarts the random sequence from `seed`.
    pub(crate) fn reseed(&mut self, seed: u64) {
        self.rng = SmallRng::seed_from_u64(seed);
    }

    pub(crate) fn total(&self) -> u64 {
        self.bands[0].len + self.bands[1].len
    }

    pub(crate) fn static_len(&self) -> u64 {
        self.bands[0].len
    }

    pub(crate) fn used(&self) -> u64 {
        self.bands[0].used + self.bands[1].used
    }

    pub(crate) fn free(&self) -> u64 {
        self.total() - self.used()
    }

    fn locate(&self, offset: u64) -> (usize, u64) {
        if offset < self.bands[0].len {
            (0, offset)
        } else {
            (1, offset - self.bands[0].len)
        }
    }

    /// Whether `offset` (below `total`) is allocated.
    pub(crate) fn has(&self, offset: u64) -> bool {
        let (band, rel) = self.locate(offset);
        self.bands[band].has(rel)
    }

    /// Marks `offset` (below `total`) allocated; false when it already was.
    pub(crate) fn allocate(&mut self, offset: u64) -> bool {
        debug_assert!(offset < self.total());
        let (band, rel) = self.locate(offset);
        self.bands[band].insert(rel)
    }

    /// Frees `offset`; false when it was not allocated.
    pub(crate) fn release(&mut self, offset: u64) -> bool {
        if offset >= self.total() {
            return false;
        }
        let (band, rel) = self.locate(offset);
        self.bands[band].remove(rel)
    }

    fn pick(bands: &[Band; 2], rng: &mut SmallRng) -> Option<u64> {
        if let Some(rel) = bands[1].find_free(rng) {
            return Some(bands[1].start + rel);
        }
        bands[0].find_free(rng)
    }

    /// Allocates a free offset (dynamic band first); `None` when everything is taken.
    pub(crate) fn allocate_next(&mut self) -> Option<u64> {
        let offset = Self::pick(&self.bands, &mut self.rng)?;
        self.allocate(offset);
        Some(offset)
    }

    /// The offset the next [`BandedAllocator::allocate_next`] would return, without changing
    /// anything (the RNG is cloned, not advanced).
    pub(crate) fn peek_next(&self) -> Option<u64> {
        Self::pick(&self.bands, &mut self.rng.clone())
    }

    /// Every allocated offset, increasing.
    pub(crate) fn allocated(&self) -> Vec<u64> {
        let mut out = self.bands[0].iter_sorted();
        out.extend(self.bands[1].iter_sorted());
        out
    }

    /// Replaces the state with exactly `offsets` (each below `total`; duplicates are fine).
    pub(crate) fn replace_with(&mut self, offsets: impl IntoIterator<Item = u64>) {
        self.bands.iter_mut().for_each(Band::clear);
        for offset in offsets {
            self.allocate(offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn should_prefer_the_dynamic_band_and_fall_back_to_the_static_band() {
        let mut a = BandedAllocator::new(40, 16, 7);
        let mut seen = BTreeSet::new();
        for _ in 0..24 {
            let o = a.allocate_next().unwrap();
            assert!(o >= 16, "dynamic first, got {o}");
            assert!(seen.insert(o));
        }
        for _ in 0..16 {
            let o = a.allocate_next().unwrap();
            assert!(o < 16, "static once dynamic is full, got {o}");
            assert!(seen.insert(o));
        }
        assert_eq!(a.allocate_next(), None);
        assert_eq!(a.free(), 0);
    }

    #[test]
    fn should_peek_exactly_what_allocate_next_returns() {
        let mut a = BandedAllocator::new(1000, 16, 3);
        for _ in 0..1000 {
            let peeked = a.peek_next();
            assert_eq!(a.allocate_next(), peeked);
        }
        assert_eq!(a.peek_next(), None);
    }

    proptest! {
        /// The sparse store gives the same answers as the dense one for the same seed, and both
        /// agree with a set model.
        #[test]
        fn should_behave_identically_dense_and_sparse(
            total in 1u64..200,
            static_len in 0u64..40,
            seed in any::<u64>(),
            ops in proptest::collection::vec((0u8..3, any::<u64>()), 1..300),
        ) {
            let mut dense = BandedAllocator::with_dense_limit(total, static_len, seed, u64::MAX);
            let mut sparse = BandedAllocator::with_dense_limit(total, static_len, seed, 0);
            let mut model = BTreeSet::new();
            for (op, x) in ops {
                match op {
                    0 => {
                        let got = dense.allocate_next();
                        prop_assert_eq!(got, sparse.allocate_next());
                        match got {
                            Some(o) => {
                                prop_assert!(model.insert(o));
                                // A static offset is only handed out once the dynamic band is full.
                                let dynamic_full = (dense.static_len()..total).all(|d| model.contains(&d));
                                prop_assert!(o >= dense.static_len() || dynamic_full);
                            }
                            None => prop_assert_eq!(model.len() as u64, total),
                        }
                    }
                    1 => {
                        let o = x % total;
                        let fresh = !model.contains(&o);
                        if fresh { model.insert(o); }
                        prop_assert_eq!(dense.allocate(o), fresh);
                        prop_assert_eq!(sparse.allocate(o), fresh);
                    }
                    _ => {
                        let o = x % (total + 2);
                        let was = model.remove(&o);
                        prop_assert_eq!(dense.release(o), was);
                        prop_assert_eq!(sparse.release(o), was);
                    }
                }
                prop_assert_eq!(dense.used(), model.len() as u64);
                prop_assert_eq!(sparse.used(), model.len() as u64);
            }
            let expected: Vec<u64> = model.into_iter().collect();
            prop_assert_eq!(dense.allocated(), expected.clone());
            prop_assert_eq!(sparse.allocated(), expected);
        }
    }
}
