//! Data order: a stage reads its examples as a stream of epochs, each a seeded permutation. The
//! order is a pure function of (seed, stage, epoch), so the step count alone is the data position
//! and a resumed run reads exactly the batches the uninterrupted run would have.
//!
//! Length bucketing (optional) regroups that stream window by window: each run of
//! [`BUCKET_WINDOW`] batches is sorted by length, cut into batches again and the batches are
//! shuffled within the window. Batches are padded to their longest example, so this cuts the
//! padding (a quarter of the tokens of a shuffled Shapes batch) without changing which examples
//! an epoch sees.

use crate::rng::Rng;

/// Batches per length-bucketing window: large enough to find similar lengths, small enough
/// that the stream keeps its epoch-by-epoch mixing.
pub const BUCKET_WINDOW: usize = 16;

pub struct Order {
    /// Epoch 0 in file order (a curriculum) rather than shuffled.
    curriculum: bool,
    /// Per-unit lengths when batches are length-bucketed.
    lengths: Option<Vec<usize>>,
    /// The last bucketed window: (window index, batch size, its batches in order).
    window: Option<(usize, usize, Vec<Vec<usize>>)>,
    seed: u64,
    stage: usize,
    n: usize,
    cached: Option<(usize, Vec<usize>)>,
}

impl Order {
    pub fn new(seed: u64, stage: usize, n: usize) -> Self {
        Order {
            curriculum: false,
            lengths: None,
            window: None,
            seed,
            stage,
            n,
            cached: None,
        }
    }

    /// The first epoch reads the examples in file order; later epochs are shuffled.
    pub fn curriculum(mut self) -> Self {
        self.curriculum = true;
        self.cached = None;
        self
    }

    /// Batches of similar length (see the module doc); `lengths[u]` is unit `u`'s token count.
    pub fn bucketed(mut self, lengths: Vec<usize>) -> Self {
        assert_eq!(lengths.len(), self.n, "one length per unit");
        self.lengths = Some(lengths);
        self.window = None;
        self
    }

    fn epoch(&mut self, e: usize) -> &[usize] {
        if self.cached.as_ref().map(|c| c.0) != Some(e) {
            let mut perm: Vec<usize> = (0..self.n).collect();
            if self.curriculum && e == 0 {
                self.cached = Some((e, perm));
                return &self.cached.as_ref().expect("just set").1;
            }
            Rng::new(self.seed)
                .fork(1000 + self.stage as u64 * 7919 + e as u64)
                .shuffle(&mut perm);
            self.cached = Some((e, perm));
        }
        &self.cached.as_ref().expect("just set").1
    }

    /// Example indices of batch `step` (batches run across epoch boundaries).
    pub fn batch(&mut self, step: usize, batch_size: usize) -> Vec<usize> {
        if self.lengths.is_none() {
            return self.plain_batch(step, batch_size);
        }
        let w = step / BUCKET_WINDOW;
        if self.window.as_ref().map(|(i, b, _)| (*i, *b)) != Some((w, batch_size)) {
            let mut units: Vec<usize> = (w * BUCKET_WINDOW..(w + 1) * BUCKET_WINDOW)
                .flat_map(|s| self.plain_batch(s, batch_size))
                .collect();
            let lengths = self.lengths.as_ref().expect("bucketed");
            // stable: equal lengths keep the shuffled order
            units.sort_by_key(|&u| std::cmp::Reverse(lengths[u]));
            let mut batches: Vec<Vec<usize>> =
                units.chunks(batch_size).map(|c| c.to_vec()).collect();
            Rng::new(self.seed)
                .fork(0xB0C4 + self.stage as u64 * 7919 + w as u64 * 104_729)
                .shuffle(&mut batches);
            self.window = Some((w, batch_size, batches));
        }
        self.window.as_ref().expect("just set").2[step % BUCKET_WINDOW].clone()
    }

    fn plain_batch(&mut self, step: usize, batch_size: usize) -> Vec<usize> {
        (step * batch_size..(step + 1) * batch_size)
            .map(|i| {
                let n = self.n;
                self.epoch(i / n)[i % n]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_is_a_permutation_and_order_is_reproducible() {
        let mut a = Order::new(3, 0, 10);
        let first: Vec<usize> = (0..5).flat_map(|s| a.batch(s, 2)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let mut b = Order::new(3, 0, 10);
        assert_eq!(b.batch(7, 3), a.batch(7, 3));
        assert_ne!(
            Order::new(3, 1, 10).batch(0, 10),
            Order::new(3, 0, 10).batch(0, 10)
        );
    }

    #[test]
    fn bucketing_keeps_the_examples_and_groups_similar_lengths() {
        let n = 1000;
        let lengths: Vec<usize> = (0..n).map(|i| 20 + (i * 37) % 50).collect();
        let bs = 8;
        let steps = BUCKET_WINDOW * 4;
        let mut plain = Order::new(5, 1, n);
        let mut bucketed = Order::new(5, 1, n).bucketed(lengths.clone());
        let a: Vec<Vec<usize>> = (0..steps).map(|s| plain.batch(s, bs)).collect();
        let b: Vec<Vec<usize>> = (0..steps).map(|s| bucketed.batch(s, bs)).collect();
        // the same examples window by window, only regrouped
        for w in 0..4 {
            let mut x: Vec<usize> = a[w * BUCKET_WINDOW..(w + 1) * BUCKET_WINDOW].concat();
            let mut y: Vec<usize> = b[w * BUCKET_WINDOW..(w + 1) * BUCKET_WINDOW].concat();
            x.sort();
            y.sort();
            assert_eq!(x, y);
        }
        // padded tokens (batch size x longest) fall by more than a fifth here
        let padded = |bs_: &[Vec<usize>]| -> usize {
            bs_.iter()
                .map(|b| b.len() * b.iter().map(|&u| lengths[u]).max().unwrap())
                .sum()
        };
        assert!(
            padded(&b) * 5 < padded(&a) * 4,
            "{} vs {}",
            padded(&b),
            padded(&a)
        );
        // batch order within a window is shuffled, not longest-first
        let firsts: Vec<usize> = b[..BUCKET_WINDOW].iter().map(|x| lengths[x[0]]).collect();
        assert!(firsts.windows(2).any(|p| p[0] < p[1]));
        // a pure function of the step: a fresh order (a resumed run) reads the same batch
        let mut again = Order::new(5, 1, n).bucketed(lengths);
        assert_eq!(again.batch(37, bs), b[37]);
        assert_eq!(again.batch(3, bs), b[3]);
    }

    #[test]
    fn curriculum_reads_the_first_epoch_in_file_order_then_shuffles() {
        let mut c = Order::new(3, 0, 6).curriculum();
        let first: Vec<usize> = (0..3).flat_map(|s| c.batch(s, 2)).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4, 5]);
        let second: Vec<usize> = (3..6).flat_map(|s| c.batch(s, 2)).collect();
        assert_eq!(second, Order::new(3, 0, 6).batch(1, 6));
        assert_ne!(second, first);
    }
}
