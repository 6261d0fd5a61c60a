//! Transparent huge pages off for this process.
//!
//! mimalloc gives free memory back to the system a second after it fell free and faults it in
//! again when it is used. Where that memory is backed by transparent huge pages, every such
//! fault zeroes 2 MiB while a command waits: without them, the p99 of the benchmark's
//! 64-client command run on PostgreSQL halved (`docs/performance-history.md`, session 12;
//! `bench/results/2026-11-30-session12-ab.txt`). The workspace builds mimalloc with `no_thp`,
//! so it no longer asks for huge pages (`madvise`); this switch also covers systems whose
//! setting is `always`, where the kernel would back the allocator's memory with them unasked.

/// Turns transparent huge pages off for this process and its future children. Answers
/// whether they are off now (always `false` where the system has no such switch).
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE and PR_GET_THP_DISABLE take plain integers and touch no
        // memory of ours; an older kernel answers EINVAL, which leaves things as they were.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
            libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_switch_leaves_transparent_huge_pages_off_for_the_process() {
        assert!(super::disable_transparent_huge_pages());
        // SAFETY: as above.
        let off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(off, 1);
    }
}
