//! Rasterises a scene: each object is drawn wholly inside its grid cell with a little jitter in size,
//! position and colour, anti-aliased by 4x4 supersampling, on a noisy dark background.

use image::{Rgb, RgbImage};

use super::scene::{Scene, Shape};
use crate::rng::Rng;

/// Is the offset `(dx, dy)` (in units of the object radius) inside the shape?
fn inside(shape: Shape, dx: f32, dy: f32) -> bool {
    match shape {
        Shape::Circle => dx * dx + dy * dy <= 1.0,
        Shape::Square => dx.abs() <= 0.8 && dy.abs() <= 0.8,
        Shape::Diamond => dx.abs() + dy.abs() <= 1.0,
        // upward triangle: apex at dy = -1, base at dy = +0.8
        Shape::Triangle => (-1.0..=0.8).contains(&dy) && dx.abs() <= (dy + 1.0) / 1.8 * 0.95,
    }
}

pub fn render(scene: &Scene, size: u32, rng: &mut Rng) -> RgbImage {
    let base = 20.0 + rng.uniform() as f32 * 40.0;
    let mut px: Vec<[f32; 3]> = (0..size * size)
        .map(|_| {
            let n = (rng.uniform() as f32 - 0.5) * 10.0;
            [base + n, base + n, base + n]
        })
        .collect();
    let cell = size as f32 / 3.0;
    for o in &scene.objects {
        // radius and jitter keep every object inside its own cell, so with a ViT patch of one
        // cell each patch sees exactly one object (or none)
        let r = cell * (0.30 + 0.08 * rng.uniform() as f32);
        let cx = (o.col as f32 + 0.5) * cell + (rng.uniform() as f32 - 0.5) * cell * 0.12;
        let cy = (o.row as f32 + 0.5) * cell + (rng.uniform() as f32 - 0.5) * cell * 0.12;
        let jitter =
            |c: f32, rng: &mut Rng| (c + (rng.uniform() as f32 - 0.5) * 30.0).clamp(0.0, 255.0);
        let rgb = o.colour.rgb();
        let colour = [
            jitter(rgb[0], rng),
            jitter(rgb[1], rng),
            jitter(rgb[2], rng),
        ];
        let (x0, x1) = (
            (cx - r - 1.0).max(0.0) as u32,
            ((cx + r + 1.0) as u32).min(size - 1),
        );
        let (y0, y1) = (
            (cy - r - 1.0).max(0.0) as u32,
            ((cy + r + 1.0) as u32).min(size - 1),
        );
        for y in y0..=y1 {
            for x in x0..=x1 {
                let mut hits = 0;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let fx = x as f32 + (sx as f32 + 0.5) / 4.0;
                        let fy = y as f32 + (sy as f32 + 0.5) / 4.0;
                        if inside(o.shape, (fx - cx) / r, (fy - cy) / r) {
                            hits += 1;
                        }
                    }
                }
                if hits > 0 {
                    let a = hits as f32 / 16.0;
                    let p = &mut px[(y * size + x) as usize];
                    for c in 0..3 {
                        p[c] = p[c] * (1.0 - a) + colour[c] * a;
                    }
                }
            }
        }
    }
    let mut img = RgbImage::new(size, size);
    for (i, p) in px.iter().enumerate() {
        let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        img.put_pixel(
            i as u32 % size,
            i as u32 / size,
            Rgb([q(p[0]), q(p[1]), q(p[2])]),
        );
    }
    img
}
