// SPDX-License-Identifier: GPL-2.0

//! A memslot's dirty bitmap: one bit per page, set when the MMU lets the
//! guest write the page (a writable leaf installed or widened in a slot
//! that logs dirty pages), taken a word at a time by `KVM_GET_DIRTY_LOG`.
//!
//! Who touches it (locking.rst, "Dirty logging"): the locked fault path
//! sets bits with `mmu_lock` held for read, in the critical section that
//! makes the leaf writable; the collector swaps words to zero with `mmu_lock` held for
//! write and write-protects the pages it took before dropping the lock. So
//! a page whose bit a collection took is read-only once it returns, and a
//! write after that faults and sets the bit again: no write goes
//! unreported. The words are atomics because faults of several vCPUs set
//! bits of the same word concurrently, and the fast page fault sets bits
//! without `mmu_lock` (after its leaf became writable: see locking.rst,
//! "The fast page fault").
//!
//! Pure logic (only `core`), tested on the host.

use super::atomic::{AtomicU64, Ordering};

/// Words of a bitmap of `npages` bits (KVM rounds the user's copy up to
/// a multiple of 64 bits as well).
pub(crate) const fn words(npages: u64) -> usize {
    npages.div_ceil(64) as usize
}

/// Marks page `rel` (relative to the slot's first frame) dirty, after
/// its leaf became writable.
pub(crate) fn mark(bits: &[AtomicU64], rel: u64) {
    if let Some(w) = bits.get((rel / 64) as usize) {
        // Release: a collector that takes this bit sees the leaf writable
        // and write-protects it. The locked fault path has `mmu_lock` for
        // that; the fast path, which marks without it, needs this (loom
        // model 4 fails with `Relaxed` here).
        w.fetch_or(1 << (rel % 64), Ordering::Release);
    }
}

/// Takes word `i`: returns its bits and leaves it clear.
pub(crate) fn take(bits: &[AtomicU64], i: usize) -> u64 {
    let Some(w) = bits.get(i) else {
        return 0;
    };
    // Most words of a large slot are clear: a load skips the locked
    // exchange. One that misses a bit being set is as if it came first:
    // the bit is taken by the next collection.
    if w.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    // Acquire: pairs with `mark`.
    w.swap(0, Ordering::Acquire)
}

/// The bits of word `i`, left as they are (`KVM_GET_DIRTY_LOG` with
/// manual protection: `KVM_CLEAR_DIRTY_LOG` takes them).
pub(crate) fn read(bits: &[AtomicU64], i: usize) -> u64 {
    bits.get(i).map_or(0, |w| w.load(Ordering::Acquire))
}

/// Takes the bits of `mask` from word `i` (`KVM_CLEAR_DIRTY_LOG`): returns
/// those of them that were set.
pub(crate) fn take_masked(bits: &[AtomicU64], i: usize, mask: u64) -> u64 {
    match bits.get(i) {
        // As `take`: nothing asked for, or nothing set.
        Some(w) if mask != 0 && w.load(Ordering::Relaxed) & mask != 0 => {
            // Acquire: pairs with `mark`, as `take`.
            mask & w.fetch_and(!mask, Ordering::Acquire)
        }
        _ => 0,
    }
}

/// Marks every page of a slot of `npages` pages dirty (a log that starts
/// all set: `KVM_DIRTY_LOG_INITIALLY_SET`).
pub(crate) fn set_all(bits: &[AtomicU64], npages: u64) {
    for (i, w) in bits.iter().enumerate() {
        let n = npages.saturating_sub(i as u64 * 64).min(64);
        let m = if n == 64 { u64::MAX } else { (1 << n) - 1 };
        w.fetch_or(m, Ordering::Release);
    }
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
        // Manual protection: read leaves the bits, take_masked takes some.
        set_all(&bits, 130);
        assert_eq!(read(&bits, 2), 3, "130 pages: two bits in the last word");
        assert_eq!(read(&bits, 2), 3);
        assert_eq!(take_masked(&bits, 2, 1 | 1 << 40), 1);
        assert_eq!(read(&bits, 2), 2);
        assert_eq!(take_masked(&bits, 0, u64::MAX), u64::MAX);
    }
}
