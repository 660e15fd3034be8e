//! Collation: encoded conversations to one padded [`MllmBatch`]. The next-token shift is done
//! here and only here: `targets[t] = ids[t + 1]`, counted when token `t + 1` is an assistant
//! token, so the logit at position `t` is scored on the token it predicts.

use burn::prelude::*;

use super::template::Encoded;
use crate::model::{MllmBatch, Visual};

/// Which side gets the padding: right for training, left for generation (so every row's last
/// real token sits at the last position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    Right,
    Left,
}

/// Host-side arrays of a batch (kept separate from tensors so they can be tested exactly).
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    pub b: usize,
    pub t: usize,
    pub input_ids: Vec<i64>,
    pub gather: Vec<i64>,
    pub positions: Vec<i64>,
    pub attention_mask: Vec<f32>,
    pub targets: Vec<i64>,
    pub loss_mask: Vec<f32>,
}

/// Lays out `examples` with padding. `num_visual` is the visual tokens per image.
pub fn host_batch(
    examples: &[&Encoded],
    num_visual: usize,
    pad_id: u32,
    padding: Padding,
) -> HostBatch {
    let b = examples.len();
    let t = examples
        .iter()
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut hb = HostBatch {
        b,
        t,
        input_ids: vec![pad_id as i64; b * t],
        gather: vec![0; b * t],
        positions: vec![0; b * t],
        attention_mask: vec![0.0; b * t],
        targets: vec![0; b * t],
        loss_mask: vec![0.0; b * t],
    };
    for (row, e) in examples.iter().enumerate() {
        let n = e.ids.len();
        let offset = match padding {
            Padding::Right => 0,
            Padding::Left => t - n,
        };
        for col in 0..t {
            hb.gather[row * t + col] = (row * t + col) as i64;
        }
        for (k, &id) in e.ids.iter().enumerate() {
            let at = row * t + offset + k;
            hb.input_ids[at] = id as i64;
            hb.positions[at] = k as i64;
            hb.attention_mask[at] = 1.0;
            if k + 1 < n {
                hb.targets[at] = e.ids[k + 1] as i64;
                hb.loss_mask[at] = if e.assistant[k + 1] { 1.0 } else { 0.0 };
            }
        }
        if let Some(start) = e.image_start {
            for j in 0..num_visual {
                hb.gather[row * t + offset + start + j] = (b * t + row * num_visual + j) as i64;
            }
        }
    }
    hb
}

impl HostBatch {
    /// Uploads to `device` with the given visual input (one image or feature row per example).
    pub fn to_device(&self, visual: Visual, device: &Device) -> MllmBatch {
        let (b, t) = (self.b, self.t);
        let int2 =
            |v: &Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v.clone(), [b, t]), device);
        let f2 = |v: &Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [b, t]), device);
        MllmBatch {
            input_ids: int2(&self.input_ids),
            gather: Tensor::<1, Int>::from_data(
                TensorData::new(self.gather.clone(), [b * t]),
                device,
            ),
            positions: int2(&self.positions),
            attention_mask: f2(&self.attention_mask),
            targets: int2(&self.targets),
            loss_mask: f2(&self.loss_mask),
            visual,
            real: self.attention_mask.iter().map(|m| *m > 0.0).collect(),
            is_visual: self.visual_mask().iter().map(|m| *m > 0.0).collect(),
        }
    }

    /// 1 at the positions that hold visual tokens, else 0 (`[b * t]`, row-major).
    pub fn visual_mask(&self) -> Vec<f32> {
        let first_visual = (self.b * self.t) as i64;
        self.gather
            .iter()
            .map(|g| if *g >= first_visual { 1.0 } else { 0.0 })
            .collect()
    }

    /// Flat indices (into `[b * t]`) of every example's visual positions in order, `num_visual`
    /// per row, or `None` when some example has no image.
    pub fn visual_index(&self, num_visual: usize) -> Option<Vec<i64>> {
        let first_visual = (self.b * self.t) as i64;
        let mut out = Vec::with_capacity(self.b * num_visual);
        for row in 0..self.b {
            let before = out.len();
            for col in 0..self.t {
                let at = row * self.t + col;
                if self.gather[at] >= first_visual {
                    out.push(at as i64);
                }
            }
            if out.len() - before != num_visual {
                return None;
            }
        }
        Some(out)
    }

    /// Number of loss-counted tokens.
    pub fn counted(&self) -> usize {
        self.loss_mask.iter().filter(|m| **m > 0.0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ids: &[u32], asst: &[bool], image_start: Option<usize>) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            assistant: asst.to_vec(),
            image_start,
        }
    }

    #[test]
    fn shift_targets_next_token_and_counts_assistant_only() {
        // bos user IMG IMG q asst A end
        let e = enc(
            &[2, 4, 3, 3, 10, 5, 20, 6],
            &[false, false, false, false, false, false, true, true],
            Some(2),
        );
        let hb = host_batch(&[&e], 2, 0, Padding::Right);
        assert_eq!(hb.targets, vec![4, 3, 3, 10, 5, 20, 6, 0]);
        // the logit at `asst` (pos 5) predicts the answer (20), the one at the answer predicts end
        assert_eq!(hb.loss_mask, vec![0., 0., 0., 0., 0., 1., 1., 0.]);
        // visual slots gather from after the b*t text rows
        assert_eq!(hb.gather, vec![0, 1, 8, 9, 4, 5, 6, 7]);
    }

    #[test]
    fn left_padding_aligns_last_tokens_and_restarts_positions() {
        let a = enc(&[1, 2, 3], &[false, false, true], None);
        let b = enc(&[7], &[false], None);
        let hb = host_batch(&[&a, &b], 0, 0, Padding::Left);
        assert_eq!(hb.input_ids, vec![1, 2, 3, 0, 0, 7]);
        assert_eq!(hb.positions, vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(hb.attention_mask, vec![1., 1., 1., 0., 0., 1.]);
        assert_eq!(hb.counted(), 1);
    }
}
