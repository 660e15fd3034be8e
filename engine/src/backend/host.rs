//! Host allocator settings for training on the CPU backend.
//!
//! A training step on `flex` allocates and frees many activation buffers of a few hundred KiB to
//! a few MiB. glibc serves those above its mmap threshold with fresh `mmap`s and gives freed heap
//! tops back to the kernel, so every step pays page faults and zeroing for memory it just
//! released: on the Shapes teacher that was a quarter of the step time, spent in the kernel.
//! Keeping freed memory in the process removes it (measured in the issue notes). The cost is a
//! resident set that stays at its peak, which a training process reaches anyway.

/// Sets the number of threads the CPU backend uses for large matmuls, reductions and
/// element-wise ops (rayon's global pool; flex threads an op only above a size at which
/// threading pays, so small models stay single-threaded). `None` keeps rayon's default: one
/// thread per core, or `RAYON_NUM_THREADS`. Call once, before the first computation; later
/// calls (the pool already exists) are refused with the reason.
#[cfg(not(target_family = "wasm"))]
pub fn set_cpu_threads(threads: Option<usize>) -> crate::Result<usize> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(crate::Error::Invalid("--threads must be at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("condenser-cpu-{i}"))
            .build_global()
            .map_err(|e| crate::Error::Invalid(format!("cannot set the CPU threads: {e}")))?;
    }
    Ok(cpu_threads())
}

/// Threads the CPU backend computes on (1 in the browser).
pub fn cpu_threads() -> usize {
    #[cfg(not(target_family = "wasm"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(target_family = "wasm")]
    {
        1
    }
}

/// Asks glibc to keep freed memory for reuse instead of returning it to the kernel. Call once,
/// early in `main`, before the large allocations start. A no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MIB: libc::c_int = 1 << 20;
        // SAFETY: mallopt only changes allocator tunables; it is safe to call at any time.
        unsafe {
            // Serve buffers up to 32 MiB (glibc's largest allowed threshold on 64-bit) from the
            // heap instead of a fresh mmap each ...
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * MIB);
            // ... never trim the heap top back to the kernel ...
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
            // ... and grow it in large steps.
            libc::mallopt(libc::M_TOP_PAD, 256 * MIB);
            // Past 32 MiB glibc would still mmap each buffer afresh: a real decoder's embedding
            // gradient and optimiser temporaries (49k x 576 floats, 113 MiB) are page-faulted and
            // zeroed every step (10% of a SmolLM2-135M step in the kernel's clear_page). No
            // mmap at all keeps them in the heap for reuse. `MALLOC_MMAP_MAX_` in the
            // environment (glibc's own knob) overrides this, for A/B runs.
            if std::env::var_os("MALLOC_MMAP_MAX_").is_none() {
                libc::mallopt(libc::M_MMAP_MAX, 0);
            }
        }
    }
}
