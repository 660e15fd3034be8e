//! The device's measured matmul peak: the denominator of MFU (`train::flops`). Measured once
//! per device, backend and thread count with square f32 matmuls (the best of several timed
//! runs after a warm-up), and kept in the cache folder, so a run pays for it only the first
//! time on a machine.

use std::time::Instant;

use burn::prelude::*;

use super::DeviceInfo;
use crate::cache::{Key, root, write_atomic};

/// Matmul side: large enough to reach a CPU's or GPU's steady state, small enough to take well
/// under a second on a CPU.
const N: usize = 1024;
const REPEATS: usize = 10;

/// FLOP/s of an `N x N x N` f32 matmul on `device`, from the cache when measured before.
pub fn matmul_peak_flops(device: &Device, info: &DeviceInfo) -> f64 {
    let threads = crate::backend::cpu_threads();
    let entry = root().map(|r| {
        let key = Key::new("matmul-peak")
            .str(&binary_identity())
            .str(info.backend)
            .str(&info.name)
            .u64(threads as u64)
            .u64(N as u64)
            .hex();
        r.join("peak").join(format!("{key}.txt"))
    });
    if let Some(e) = &entry
        && let Ok(text) = std::fs::read_to_string(e)
        && let Ok(v) = text.trim().parse::<f64>()
        && v > 0.0
    {
        return v;
    }
    let peak = measure(device);
    if let Some(e) = &entry
        && let Err(err) = write_atomic(e, format!("{peak}\n").as_bytes())
    {
        log::warn!("cannot cache the matmul peak in {}: {err}", e.display());
    }
    peak
}

/// The running executable's path, size and modification time: another build of the same
/// version (another profile, other features) may reach another peak.
fn binary_identity() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            let m = std::fs::metadata(&p).ok()?;
            let mtime = m
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(format!("{} {} {}", p.display(), m.len(), mtime.as_nanos()))
        })
        .unwrap_or_default()
}

fn measure(device: &Device) -> f64 {
    let a = Tensor::<2>::random([N, N], burn::tensor::Distribution::Default, device);
    let b = Tensor::<2>::random([N, N], burn::tensor::Distribution::Default, device);
    let run = || {
        let c = a.clone().matmul(b.clone());
        // reading one value waits for the product on any backend
        let _ = c.slice([0..1, 0..1]).into_data();
    };
    run();
    let best = (0..REPEATS)
        .map(|_| {
            let t0 = Instant::now();
            run();
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    2.0 * (N * N * N) as f64 / best.max(1e-9)
}
