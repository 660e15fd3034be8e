//! Host allocator settings for training on the CPU backend.
//!
//! A training step on `flex` allocates and frees many activation buffers of a few hundred KiB to
//! a few MiB. glibc serves those above its mmap threshold with fresh `mmap`s and gives freed heap
//! tops back to the kernel, so every step pays page faults and zeroing for memory it just
//! released: on the Shapes teacher that was a quarter of the step time, spent in the kernel.
//! Keeping freed memory in the process removes it (measured in the issue notes). The cost is a
//! resident set that stays at its peak, which a training process reaches anyway.

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
        }
    }
}
