//! Keeps the large tensors of inference and training in the heap instead of fresh memory maps.
//!
//! Why: libtorch's CPU tensors come from `malloc`. With glibc's defaults, a free block at the top
//! of the main thread's heap is handed back to the kernel once it exceeds the trim threshold, and
//! a block beyond the mmap threshold gets its own mapping that is unmapped on `free`. A forward
//! pass allocates and frees tens of megabytes of activations, so the next pass touches fresh
//! pages again: a page fault and a zeroed 4 KiB page for every 4 KiB. On this project's 2-core
//! machines that made the Lite0 backbone 2.6-3x slower at batch 8, and training's first stage
//! 2x slower, when run from a program's main thread (BENCHMARKS.md, "Large tensors kept in the
//! heap"). Fixing both thresholds keeps the memory mapped and reused; the process's resident
//! memory then stays at its peak instead of shrinking between passes.
//!
//! The setting is process-wide, so it is made by the programs (`clsflow-train`, `clsflow-bench`,
//! the examples), not by the library on its own: the GStreamer element leaves its host
//! application's allocator alone, and runs libtorch on its own thread, whose arena showed no such
//! slowdown.

/// Blocks up to this size are served from the heap. Training's activations reach tens of
/// megabytes per tensor (a stage-1 batch at the stem: 33 MB), so the threshold sits well above
/// them; a glibc that refuses it gets its documented maximum, [`MMAP_THRESHOLD_FALLBACK`].
pub const MMAP_THRESHOLD: usize = 1 << 30;

/// glibc's documented upper limit of the mmap threshold on 64-bit systems
/// (`DEFAULT_MMAP_THRESHOLD_MAX`), used where [`MMAP_THRESHOLD`] is refused.
pub const MMAP_THRESHOLD_FALLBACK: usize = 32 << 20;

/// Free memory at the top of the heap that glibc keeps before returning any to the kernel.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Makes glibc serve blocks of up to [`MMAP_THRESHOLD`] from the heap and keep up to
/// [`TRIM_THRESHOLD`] of freed memory mapped. Returns whether the allocator took both settings
/// (always `false` where the C library is not glibc, which is left as it is).
pub fn keep_tensor_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |param, value: usize| {
            // SAFETY: mallopt only changes allocator parameters, and returns 0 instead of
            // applying a value it refuses.
            unsafe { libc::mallopt(param, value as libc::c_int) == 1 }
        };
        (set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD)
            || set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK))
            && set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_thresholds() {
        assert!(
            super::keep_tensor_memory(),
            "glibc refused the mmap or trim threshold"
        );
    }
}
