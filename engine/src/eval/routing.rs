//! What an MoE model's routers do on held-out data: per layer and expert, the visual and text
//! token assignments, the drops and the router entropy, measured teacher-forced over whole
//! records at the evaluation capacity. Drawn as a layer x expert heatmap PNG for the report.

use std::path::Path;

use crate::data::{Dataset, Padding, TextTokenizer, host_batch};
use crate::model::Mllm;
use crate::model::Visual;
use crate::model::moe::{LayerRouting, Phase};
use crate::{Error, Result};

/// Routing summed over `data` (entropy averaged over batches); empty for a dense model.
pub fn routing_profile(
    model: &Mllm,
    tok: &TextTokenizer,
    data: &Dataset,
    batch_size: usize,
    limit: Option<usize>,
) -> Result<Vec<LayerRouting>> {
    if model.config.llm.moe.is_none() {
        return Ok(Vec::new());
    }
    let device = model.vision.position_embedding.val().device();
    let nv = model.config.vision.num_visual_tokens();
    let n = limit.map_or(data.len(), |l| l.min(data.len()));
    let mut total: Vec<LayerRouting> = Vec::new();
    let mut batches = 0usize;
    for start in (0..n).step_by(batch_size.max(1)) {
        let idx: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let examples: Vec<_> = idx.iter().map(|&i| &data.encoded[i]).collect();
        let hb = host_batch(&examples, nv, tok.special.pad, Padding::Right);
        let images = data.pixels(&idx, &device)?;
        let batch = hb.to_device(Visual::Pixels(images), &device);
        let (_, trace) = model.hidden_routed(&batch, Phase::Eval);
        if total.is_empty() {
            total = trace.layers;
        } else {
            for (acc, l) in total.iter_mut().zip(trace.layers) {
                for (a, b) in acc.visual.iter_mut().zip(&l.visual) {
                    *a += b;
                }
                for (a, b) in acc.text.iter_mut().zip(&l.text) {
                    *a += b;
                }
                acc.dropped += l.dropped;
                acc.entropy += l.entropy;
            }
        }
        batches += 1;
    }
    if batches > 1 {
        for l in &mut total {
            l.entropy /= batches as f64;
        }
    }
    Ok(total)
}

/// Largest share of token assignments any expert takes in any layer (1/E when balanced).
pub fn max_expert_share(layers: &[LayerRouting]) -> Option<f64> {
    layers
        .iter()
        .flat_map(|l| l.shares())
        .fold(None, |m, x| Some(m.map_or(x, |m: f64| m.max(x))))
}

/// Writes a heatmap PNG: one row per MoE layer, one column per expert, in two panels (visual
/// tokens left, text tokens right); a cell's brightness is that expert's share of the panel's
/// assignments in that layer, on a 0..1 scale (a balanced router with E experts is 1/E).
pub fn write_heatmap(layers: &[LayerRouting], path: &Path) -> Result<()> {
    const CELL: u32 = 40;
    const GAP: u32 = 24;
    const PAD: u32 = 8;
    let rows = layers.len().max(1) as u32;
    let e = layers.first().map_or(1, |l| l.visual.len()) as u32;
    let w = 2 * PAD + 2 * e * CELL + GAP;
    let h = 2 * PAD + rows * CELL;
    let mut img = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (r, l) in layers.iter().enumerate() {
        for (panel, counts) in [&l.visual, &l.text].into_iter().enumerate() {
            let total: usize = counts.iter().sum();
            for (k, c) in counts.iter().enumerate() {
                let share = *c as f64 / total.max(1) as f64;
                let colour = ramp(share);
                let x0 = PAD + panel as u32 * (e * CELL + GAP) + k as u32 * CELL;
                let y0 = PAD + r as u32 * CELL;
                for y in y0 + 1..y0 + CELL - 1 {
                    for x in x0 + 1..x0 + CELL - 1 {
                        img.put_pixel(x, y, colour);
                    }
                }
            }
        }
    }
    let tmp = path.with_extension("png.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Dark blue (0) to yellow (1), through teal: readable in greyscale too.
fn ramp(v: f64) -> image::Rgb<u8> {
    let v = v.clamp(0.0, 1.0);
    let stops = [
        (0.0, [30.0, 20.0, 80.0]),
        (0.5, [30.0, 150.0, 140.0]),
        (1.0, [250.0, 230.0, 40.0]),
    ];
    let (a, b) = if v <= 0.5 {
        (stops[0], stops[1])
    } else {
        (stops[1], stops[2])
    };
    let t = (v - a.0) / (b.0 - a.0);
    let c = |i: usize| (a.1[i] + t * (b.1[i] - a.1[i])).round() as u8;
    image::Rgb([c(0), c(1), c(2)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_has_a_cell_per_layer_and_expert() {
        let layers = vec![
            LayerRouting {
                layer: 0,
                visual: vec![10, 0, 0, 0],
                text: vec![1, 1, 1, 1],
                dropped: 0,
                entropy: 1.0,
            },
            LayerRouting {
                layer: 2,
                visual: vec![0, 5, 5, 0],
                text: vec![0, 0, 0, 4],
                dropped: 3,
                entropy: 0.5,
            },
        ];
        let dir = std::env::temp_dir().join("condenser-heatmap-test");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("routing.png");
        write_heatmap(&layers, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (2 * 8 + 2 * 4 * 40 + 24, 2 * 8 + 2 * 40));
        // layer 0, visual, expert 0 took everything: the brightest colour
        assert_eq!(*img.get_pixel(8 + 20, 8 + 20), ramp(1.0));
        // layer 0, visual, expert 1 took nothing
        assert_eq!(*img.get_pixel(8 + 60, 8 + 20), ramp(0.0));
        // layer 1, text panel, expert 3 took everything
        assert_eq!(
            *img.get_pixel(8 + 4 * 40 + 24 + 3 * 40 + 20, 8 + 40 + 20),
            ramp(1.0)
        );
        assert_eq!(max_expert_share(&layers), Some(11.0 / 14.0));
    }
}
