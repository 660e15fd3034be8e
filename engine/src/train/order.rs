//! Data order: a stage reads its examples as a stream of epochs, each a seeded permutation. The
//! order is a pure function of (seed, stage, epoch), so the step count alone is the data position
//! and a resumed run reads exactly the batches the uninterrupted run would have.

use crate::model::Rng;

pub struct Order {
    /// Epoch 0 in file order (a curriculum) rather than shuffled.
    curriculum: bool,
    seed: u64,
    stage: usize,
    n: usize,
    cached: Option<(usize, Vec<usize>)>,
}

impl Order {
    pub fn new(seed: u64, stage: usize, n: usize) -> Self {
        Order {
            curriculum: false,
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
    fn curriculum_reads_the_first_epoch_in_file_order_then_shuffles() {
        let mut c = Order::new(3, 0, 6).curriculum();
        let first: Vec<usize> = (0..3).flat_map(|s| c.batch(s, 2)).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4, 5]);
        let second: Vec<usize> = (3..6).flat_map(|s| c.batch(s, 2)).collect();
        assert_eq!(second, Order::new(3, 0, 6).batch(1, 6));
        assert_ne!(second, first);
    }
}
