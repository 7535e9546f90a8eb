//! How the process allocates the large, short-lived buffers of a forward pass.

/// Keeps buffers of up to 256 MiB in the heap instead of fresh memory maps (glibc on
/// Linux; elsewhere nothing). A sweep allocates and frees tens of megabytes per layer;
/// above glibc's mapping threshold (at most 32 MiB by default) each is a new mapping
/// whose pages fault in one by one, measured at 6–7 % of a `head_out_by_pos` sweep on
/// gpt2-small shapes. Freed memory up to 256 MiB stays with the process for reuse (the
/// peak resident size does not change). Call once, at the start of a program.
pub fn keep_large_buffers_in_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        const BYTES: i32 = 256 << 20;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: glibc's mallopt only sets allocator parameters; both are in range.
        unsafe {
            mallopt(M_MMAP_THRESHOLD, BYTES);
            mallopt(M_TRIM_THRESHOLD, BYTES);
        }
    }
}
