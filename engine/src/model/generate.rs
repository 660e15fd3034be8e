//! KV-cached autoregressive generation: greedy or temperature / top-p sampling. Decisions are
//! made on the host from the last logits, so sampling is seeded and backend-independent.

use burn::prelude::*;

use super::attention::AttnMask;
use super::llm::KvCache;
use super::mllm::{Mllm, MllmBatch};
use crate::rng::Rng;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Nucleus sampling at a temperature.
    TopP {
        temperature: f32,
        top_p: f32,
    },
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Generation of a row ends at any of these ids (the id itself is not returned).
    pub stop: Vec<u32>,
    pub seed: u64,
}

impl Mllm {
    /// Continues each row of a LEFT-padded prompt batch; returns the new ids per row.
    /// Blocks on each readback: for native devices and the CPU backend (in a browser, WebGPU
    /// readbacks must be awaited: use [`Mllm::generate_stream`]).
    pub fn generate(&self, prompt: &MllmBatch, opts: &GenerateOptions) -> Vec<Vec<u32>> {
        pollster::block_on(self.generate_stream(prompt, opts, |_, _| std::future::ready(())))
    }

    /// The generation loop itself, shared by the CLI and the browser: every readback of logits is
    /// awaited (a browser cannot block on the GPU), and each id kept for a row is handed to
    /// `on_token(row, id)` as soon as it is chosen, so a face can stream the answer. The hook's
    /// future is awaited before the next step: a page on the CPU backend yields to its event
    /// loop there, so the streamed text is painted while generation goes on.
    pub async fn generate_stream<F, Fut>(
        &self,
        prompt: &MllmBatch,
        opts: &GenerateOptions,
        mut on_token: F,
    ) -> Vec<Vec<u32>>
    where
        F: FnMut(usize, u32) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let device = prompt.input_ids.device();
        let [b, t] = prompt.input_ids.dims();
        let v = self.config.llm.vocab_size;
        let mut rng = Rng::new(opts.seed);
        let mut cache = KvCache::default();
        let mut logits = self.prefill(prompt, &mut cache);
        let mut mask = prompt.attention_mask.clone();
        let mut next_pos: Vec<i64> = prompt
            .positions
            .clone()
            .narrow(1, t - 1, 1)
            .into_data_async()
            .await
            .expect("reading positions back from the device")
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p + 1)
            .collect();
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for step in 0..opts.max_new_tokens {
            let host = to_host(logits).await;
            let mut ids = Vec::with_capacity(b);
            for row in 0..b {
                let id = pick(&host[row * v..(row + 1) * v], opts.sampling, &mut rng);
                if !done[row] {
                    if opts.stop.contains(&id) {
                        done[row] = true;
                    } else {
                        out[row].push(id);
                        on_token(row, id).await;
                    }
                }
                ids.push(id as i64);
            }
            if done.iter().all(|d| *d) || step + 1 == opts.max_new_tokens {
                break;
            }
            if next_pos
                .iter()
                .any(|p| *p as usize >= self.llm.max_positions())
            {
                break;
            }
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &device);
            let pos =
                Tensor::<2, Int>::from_data(TensorData::new(next_pos.clone(), [b, 1]), &device);
            mask = Tensor::cat(vec![mask, Tensor::ones([b, 1], &device)], 1);
            let x = self.llm.embed(ids);
            let h = self
                .llm
                .hidden(x, pos, AttnMask::causal(mask.clone()), Some(&mut cache));
            logits = self.llm.logits(h).reshape([b, v]);
            next_pos.iter_mut().for_each(|p| *p += 1);
        }
        out
    }
}

/// Last-position logits on the host, where the next token is chosen.
async fn to_host<const D: usize>(logits: Tensor<D>) -> Vec<f32> {
    logits
        .into_data_async()
        .await
        .expect("reading logits back from the device")
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Chooses one id from a row of logits.
fn pick(row: &[f32], sampling: Sampling, rng: &mut Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(row),
        Sampling::TopP { temperature, top_p } => {
            if temperature <= 0.0 {
                return argmax(row);
            }
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut probs: Vec<(u32, f64)> = row
                .iter()
                .enumerate()
                .map(|(i, &z)| (i as u32, (((z - max) / temperature) as f64).exp()))
                .collect();
            let total: f64 = probs.iter().map(|p| p.1).sum();
            probs.sort_by(|a, b| b.1.total_cmp(&a.1));
            let mut kept = Vec::new();
            let mut acc = 0.0;
            for (i, p) in probs {
                kept.push((i, p / total));
                acc += p / total;
                if acc >= top_p as f64 {
                    break;
                }
            }
            let mass: f64 = kept.iter().map(|p| p.1).sum();
            let mut u = rng.uniform() * mass;
            for (i, p) in &kept {
                if u < *p {
                    return *i;
                }
                u -= p;
            }
            kept.last().map_or(0, |k| k.0)
        }
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &z) in row.iter().enumerate() {
        if z > row[best] {
            best = i;
        }
    }
    best as u32
}

impl super::llm::Llm {
    /// Continues one text-only prompt with the decoder alone (imported LLMs, no image); returns
    /// the new ids, without the stop id that ended it.
    pub fn generate_text(&self, prompt: &[u32], opts: &GenerateOptions) -> Vec<u32> {
        let device = self.embed_tokens.weight.val().device();
        let t = prompt.len();
        let mut out = Vec::new();
        if t == 0 || t >= self.max_positions() {
            return out;
        }
        let mut rng = Rng::new(opts.seed);
        let mut cache = KvCache::default();
        let ids: Vec<i64> = prompt.iter().map(|&i| i as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, t]), &device);
        let pos = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        let h = self.hidden(
            self.embed(ids),
            pos,
            AttnMask::causal(Tensor::ones([1, t], &device)),
            Some(&mut cache),
        );
        let mut logits = self.logits(h.narrow(1, t - 1, 1));
        for step in 0..opts.max_new_tokens {
            let host = pollster::block_on(to_host(logits));
            let id = pick(&host, opts.sampling, &mut rng);
            if opts.stop.contains(&id) {
                break;
            }
            out.push(id);
            let p = t + step;
            if step + 1 == opts.max_new_tokens || p + 1 >= self.max_positions() {
                break;
            }
            let ids =
                Tensor::<2, Int>::from_data(TensorData::new(vec![id as i64], [1, 1]), &device);
            let pos = Tensor::<2, Int>::from_data(TensorData::new(vec![p as i64], [1, 1]), &device);
            // the new token sees every cached position
            let h = self.hidden(self.embed(ids), pos, AttnMask::full(), Some(&mut cache));
            logits = self.logits(h);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_max_and_top_p_stays_in_nucleus() {
        let mut rng = Rng::new(1);
        assert_eq!(pick(&[0.1, 3.0, 2.0], Sampling::Greedy, &mut rng), 1);
        // top_p small: only the best token survives
        for _ in 0..50 {
            let s = Sampling::TopP {
                temperature: 1.0,
                top_p: 0.1,
            };
            assert_eq!(pick(&[0.0, 5.0, 4.9], s, &mut rng), 1);
        }
        // top_p 1: all tokens reachable
        let mut seen = [false; 3];
        for _ in 0..300 {
            let s = Sampling::TopP {
                temperature: 1.0,
                top_p: 1.0,
            };
            seen[pick(&[0.0, 0.0, 0.0], s, &mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
