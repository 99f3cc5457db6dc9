//! A hierarchical bitmap: "find the first free index at or after `i`" in O(log64 n).
//!
//! Level 0 has one bit per index (set = used). Level `k + 1` has one bit per word of level `k`,
//! set when that word is all ones ("full"). To find the first clear bit at or after `i` we look
//! in `i`'s word, and when it has none we climb to the first non-full word to the right and come
//! back down along first clear bits. With 64-bit words that is at most 6 levels for 2^32 bits, so
//! every operation is a handful of word operations whatever the fill level.
//!
//! Words are allocated lazily: a word past the end of a level's vector reads as zero (all free,
//! not full). A fresh bitmap therefore costs nothing, and memory grows with the highest used
//! index, not with the declared length. The last word of level 0 may have bits past `len`; they
//! are never set, so that word is never "full", and a search that lands past `len` reports none.

/// A set of indices in `[0, len)` with fast "first free at or after" search.
#[derive(Clone, Debug)]
pub(crate) struct Bitmap {
    len: u64,
    levels: Vec<Vec<u64>>,
}

/// The mask of the bits of word `w` that fall in `[lo, hi)`.
fn word_mask(w: u64, lo: u64, hi: u64) -> u64 {
    let start = lo.max(w * 64) - w * 64;
    let end = hi.min(w * 64 + 64) - w * 64;
    let width = end - start;
    if width == 64 {
        u64::MAX
    } else {
        ((1u64 << width) - 1) << start
    }
}

impl Bitmap {
    /// An empty bitmap over `[0, len)`.
    pub(crate) fn new(len: u64) -> Self {
        let mut levels = 1;
        let mut words = len.div_ceil(64);
        while words > 1 {
            words = words.div_ceil(64);
            levels += 1;
        }
        Bitmap {
            len,
            levels: vec![Vec::new(); levels],
        }
    }

    fn word(&self, level: usize, w: u64) -> u64 {
        usize::try_from(w)
            .ok()
            .and_then(|w| self.levels[level].get(w).copied())
            .unwrap_or(0)
    }

    fn word_mut(&mut self, level: usize, w: u64) -> &mut u64 {
        let v = &mut self.levels[level];
        let w = usize::try_from(w).expect("bitmap index fits in usize");
        if w >= v.len() {
            v.resize(w + 1, 0);
        }
        &mut v[w]
    }

    /// Whether index `i` is set.
    pub(crate) fn get(&self, i: u64) -> bool {
        i < self.len && (self.word(0, i >> 6) >> (i & 63)) & 1 == 1
    }

    /// Sets index `i`; true when it was clear. `i` must be below `len`.
    pub(crate) fn set(&mut self, i: u64) -> bool {
        debug_assert!(i < self.len);
        let mut idx = i;
        for level in 0..self.levels.len() {
            let bit = 1u64 << (idx & 63);
            let word = self.word_mut(level, idx >> 6);
            if *word & bit != 0 {
                // Only possible on level 0: a parent bit is set only when the child word filled up.
                return false;
            }
            *word |= bit;
            if *word != u64::MAX {
                break;
            }
            idx >>= 6;
        }
        true
    }

    /// Clears index `i`; true when it was set.
    pub(crate) fn clear(&mut self, i: u64) -> bool {
        if !self.get(i) {
            return false;
        }
        let mut idx = i;
        for level in 0..self.levels.len() {
            let bit = 1u64 << (idx & 63);
            let word = self.word_mut(level, idx >> 6);
            let was_full = *word == u64::MAX;
            *word &= !bit;
            if !was_full {
                break;
            }
            idx >>= 6;
        }
        true
    }

    /// The first clear index at or after `from`, if any below `len`.
    pub(crate) fn first_clear_from(&self, from: u64) -> Option<u64> {
        if from >= self.len {
            return None;
        }
        let top = self.levels.len() - 1;
        let mut level = 0;
        let mut idx = from;
        let mut pos = loop {
            let w = idx >> 6;
            let candidates = !self.word(level, w) & (u64::MAX << (idx & 63));
            if candidates != 0 {
                break w * 64 + u64::from(candidates.trailing_zeros());
            }
            if level == top {
                return None;
            }
            level += 1;
            idx = w + 1;
        };
        while level > 0 {
            level -= 1;
            let word = self.word(level, pos);
            pos = pos * 64 + u64::from((!word).trailing_zeros());
        }
        (pos < self.len).then_some(pos)
    }

    /// The first clear index in `[lo, hi)`, if any.
    pub(crate) fn first_clear_in(&self, lo: u64, hi: u64) -> Option<u64> {
        self.first_clear_from(lo).filter(|&p| p < hi)
    }

    /// Sets every index in `[lo, hi)` (clamped to `len`); returns how many were clear.
    pub(crate) fn set_range(&mut self, lo: u64, hi: u64) -> u64 {
        let hi = hi.min(self.len);
        if lo >= hi {
            return 0;
        }
        let (w_lo, w_hi) = (lo >> 6, (hi - 1) >> 6);
        let mut flipped = 0;
        for w in w_lo..=w_hi {
            let mask = word_mask(w, lo, hi);
            let word = self.word_mut(0, w);
            flipped += u64::from((mask & !*word).count_ones());
            *word |= mask;
        }
        self.refresh_parents(w_lo, w_hi);
        flipped
    }

    /// Clears every index in `[lo, hi)` (clamped to `len`); returns how many were set.
    pub(crate) fn clear_range(&mut self, lo: u64, hi: u64) -> u64 {
        let hi = hi.min(self.len);
        if lo >= hi {
            return 0;
        }
        // Words past the allocated part are already clear.
        let allocated = self.levels[0].len() as u64;
        if allocated == 0 || lo >> 6 >= allocated {
            return 0;
        }
        let (w_lo, w_hi) = (lo >> 6, ((hi - 1) >> 6).min(allocated - 1));
        let mut flipped = 0;
        for w in w_lo..=w_hi {
            let mask = word_mask(w, lo, hi);
            let word = self.word_mut(0, w);
            flipped += u64::from((mask & *word).count_ones());
            *word &= !mask;
        }
        self.refresh_parents(w_lo, w_hi);
        flipped
    }

    /// Recomputes the "full" bits above level-0 words `w_lo..=w_hi`.
    fn refresh_parents(&mut self, w_lo: u64, w_hi: u64) {
        let (mut lo, mut hi) = (w_lo, w_hi);
        for level in 0..self.levels.len() - 1 {
            for w in lo..=hi {
                let full = self.word(level, w) == u64::MAX;
                let bit = 1u64 << (w & 63);
                if full {
                    *self.word_mut(level + 1, w >> 6) |= bit;
                } else if let Some(parent) = self.levels[level + 1].get_mut((w >> 6) as usize) {
                    *parent &= !bit;
                }
            }
            lo >>= 6;
            hi >>= 6;
        }
    }

    /// Clears everything and releases the memory.
    pub(crate) fn clear_all(&mut self) {
        for level in &mut self.levels {
            *level = Vec::new();
        }
    }

    /// The set indices in increasing order.
    pub(crate) fn iter_ones(&self) -> impl Iterator<Item = u64> + '_ {
        self.levels[0].iter().enumerate().flat_map(|(w, &word)| {
            let base = w as u64 * 64;
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(base + u64::from(bit))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn model_first_clear(model: &BTreeSet<u64>, len: u64, from: u64) -> Option<u64> {
        (from..len).find(|i| !model.contains(i))
    }

    #[test]
    fn should_find_first_clear_bit_across_levels() {
        // 64^2 + 10 bits: three levels.
        let len = 64 * 64 + 10;
        let mut b = Bitmap::new(len);
        assert_eq!(b.first_clear_from(0), Some(0));
        assert_eq!(b.set_range(0, 64 * 64), 64 * 64);
        assert_eq!(b.first_clear_from(0), Some(64 * 64));
        assert_eq!(b.first_clear_from(17), Some(64 * 64));
        assert_eq!(b.set_range(64 * 64, len), 10);
        assert_eq!(b.first_clear_from(0), None);
        assert!(b.clear(1234));
        assert!(!b.clear(1234));
        assert_eq!(b.first_clear_from(0), Some(1234));
        assert_eq!(b.first_clear_from(1235), None);
        assert_eq!(b.first_clear_in(0, 1234), None);
        assert!(b.set(1234));
        assert!(!b.set(1234));
        assert_eq!(b.first_clear_from(0), None);
        assert_eq!(b.clear_range(0, len), len);
        assert_eq!(b.first_clear_from(5), Some(5));
    }

    #[test]
    fn should_not_report_indices_past_len() {
        let mut b = Bitmap::new(3);
        for i in 0..3 {
            assert!(b.set(i));
        }
        assert_eq!(b.first_clear_from(0), None);
        assert_eq!(Bitmap::new(0).first_clear_from(0), None);
    }

    proptest! {
        #[test]
        fn should_agree_with_a_set_model(
            len in 1u64..9000,
            ops in proptest::collection::vec((0u8..5, any::<u64>(), any::<u64>()), 1..200),
        ) {
            let mut b = Bitmap::new(len);
            let mut model = BTreeSet::new();
            for (op, x, y) in ops {
                let i = x % len;
                match op {
                    0 => prop_assert_eq!(b.set(i), model.insert(i)),
                    1 => prop_assert_eq!(b.clear(i), model.remove(&i)),
                    2 => {
                        let (lo, hi) = (i, i + y % 300);
                        let expected = (lo..hi.min(len)).filter(|j| model.insert(*j)).count() as u64;
                        prop_assert_eq!(b.set_range(lo, hi), expected);
                    }
                    3 => {
                        let (lo, hi) = (i, i + y % 300);
                        let expected = (lo..hi.min(len)).filter(|j| model.remove(j)).count() as u64;
                        prop_assert_eq!(b.clear_range(lo, hi), expected);
                    }
                    _ => prop_assert_eq!(b.first_clear_from(i), model_first_clear(&model, len, i)),
                }
                prop_assert_eq!(b.get(i), model.contains(&i));
            }
            prop_assert_eq!(b.iter_ones().collect::<Vec<_>>(), model.iter().copied().collect::<Vec<_>>());
        }
    }
}
