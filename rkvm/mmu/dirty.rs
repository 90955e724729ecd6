// SPDX-License-Identifier: GPL-2.0

//! A memslot's dirty bitmap: one bit per page, set when the MMU lets the
//! guest write the page (a writable leaf installed or widened in a slot
//! that logs dirty pages), taken a word at a time by `KVM_GET_DIRTY_LOG`.
//!
//! Who touches it (locking.rst, "Dirty logging"): faults set bits with
//! `mmu_lock` held for read, in the critical section that makes the leaf
//! writable; the collector swaps words to zero with `mmu_lock` held for
//! write and write-protects the pages it took before dropping the lock. So
//! a page whose bit a collection took is read-only once it returns, and a
//! write after that faults and sets the bit again: no write goes
//! unreported. The words are atomics because faults of several vCPUs set
//! bits of the same word concurrently; the lock orders the rest.
//!
//! Pure logic (only `core`), tested on the host.

use super::atomic::{AtomicU64, Ordering};

/// Words of a bitmap of `npages` bits (KVM rounds the user's copy up to
/// a multiple of 64 bits as well).
pub(crate) const fn words(npages: u64) -> usize {
    npages.div_ceil(64) as usize
}

/// Marks page `rel` (relative to the slot's first frame) dirty.
pub(crate) fn mark(bits: &[AtomicU64], rel: u64) {
    if let Some(w) = bits.get((rel / 64) as usize) {
        // `mmu_lock` orders this against the collector's swap.
        w.fetch_or(1 << (rel % 64), Ordering::Relaxed);
    }
}

/// Takes word `i`: returns its bits and leaves it clear.
pub(crate) fn take(bits: &[AtomicU64], i: usize) -> u64 {
    bits.get(i).map_or(0, |w| w.swap(0, Ordering::Relaxed))
}

/// Puts bits back that a collection took but could not hand over (the
/// user buffer went away): they are reported next time instead of lost.
pub(crate) fn put_back(bits: &[AtomicU64], i: usize, mask: u64) {
    if let Some(w) = bits.get(i) {
        w.fetch_or(mask, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn marks_are_taken_once_and_can_be_put_back() {
        let bits: Vec<AtomicU64> = (0..words(130)).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(bits.len(), 3);
        for rel in [0, 63, 64, 129] {
            mark(&bits, rel);
        }
        mark(&bits, 4096); // outside: ignored
        assert_eq!(take(&bits, 0), 1 | 1 << 63);
        assert_eq!(take(&bits, 0), 0);
        assert_eq!(take(&bits, 1), 1);
        put_back(&bits, 1, 1);
        assert_eq!(take(&bits, 1), 1);
        assert_eq!(take(&bits, 2), 2);
        assert_eq!(take(&bits, 3), 0);
    }
}
