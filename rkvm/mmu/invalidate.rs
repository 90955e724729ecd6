// SPDX-License-Identifier: GPL-2.0

//! The invalidation handshake between MMU-notifier invalidations of the
//! VMM's address space and TDP faults (KVM's `mmu_invalidate_seq`,
//! `mmu_invalidate_in_progress` and range).
//!
//! Guest memory is not pinned: a fault looks up the host page, maps it and
//! drops its reference, and the host may unmap the page at any time after.
//! An invalidation of host virtual addresses `[start, end)` therefore:
//!
//! 1. takes `mmu_lock` for write, counts itself in progress and widens the
//!    in-progress range to cover `[start, end)`, zaps the SPTEs of every
//!    guest frame those addresses back and flushes the TLBs, and releases
//!    the lock (`begin`), before the host changes its page tables;
//! 2. after the host changed them, takes `mmu_lock` for write again, bumps
//!    the sequence number and counts itself done (`end`).
//!
//! A fault reads the sequence number before it looks the host page up
//! (`fault_seq`), and under `mmu_lock` (read) maps the page only if no
//! invalidation covering its address is in progress and the sequence is
//! unchanged (`must_retry`). Either the invalidation's `begin` took the
//! lock first, and the fault sees it in progress (or, if it already
//! ended, a new sequence number) and retries; or the fault's mapping went
//! first, and the zap in `begin` removes it. A page the fault looked up
//! before the host changed its tables is thus never left mapped after the
//! change. The range is in host virtual addresses, not guest frames, so a
//! memslot created while an invalidation is in progress is covered too.
//!
//! The loom model (`tools/rkvm/logic/tests/loom_tdp.rs`) runs this file.
//!
//! Pure logic (only `core`), tested on the host.

use super::atomic::{AtomicU64, Ordering};

/// The invalidation state of one MMU.
///
/// # Invariants
///
/// Written only with `mmu_lock` held for write; `in_progress`, `start`
/// and `end` read with it held (for read or write); `seq` also read
/// without it, by `fault_seq`.
pub(crate) struct InvalidateState {
    /// Bumped by every invalidation's end.
    seq: AtomicU64,
    /// Invalidations between their begin and end.
    in_progress: AtomicU64,
    /// The union of the in-progress invalidations' ranges (host virtual
    /// addresses), meaningful while `in_progress` is not zero.
    start: AtomicU64,
    end: AtomicU64,
}

impl InvalidateState {
    // Not `const`: loom's atomics are not.
    pub(crate) fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            in_progress: AtomicU64::new(0),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
        }
    }

    /// An invalidation of `[start, end)` begins. `mmu_lock` is held for
    /// write.
    pub(crate) fn begin(&self, start: u64, end: u64) {
        let n = self.in_progress.load(Ordering::Relaxed);
        if n == 0 {
            self.start.store(start, Ordering::Relaxed);
            self.end.store(end, Ordering::Relaxed);
        } else {
            // As KVM: one range covering all of them, which may retry
            // faults that did not need to.
            let s = self.start.load(Ordering::Relaxed);
            let e = self.end.load(Ordering::Relaxed);
            self.start.store(s.min(start), Ordering::Relaxed);
            self.end.store(e.max(end), Ordering::Relaxed);
        }
        self.in_progress.store(n + 1, Ordering::Relaxed);
    }

    /// An invalidation ends: the host's page tables changed. `mmu_lock`
    /// is held for write.
    pub(crate) fn end(&self) {
        // Faults that looked a page up before this retry; the lock's
        // release orders this before any later fault's check.
        self.seq
            .store(self.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
        let n = self.in_progress.load(Ordering::Relaxed);
        self.in_progress
            .store(n.saturating_sub(1), Ordering::Relaxed);
    }

    /// The sequence number a fault compares with under `mmu_lock`; read
    /// before it looks the host page up.
    pub(crate) fn fault_seq(&self) -> u64 {
        // Acquire: the page lookup that follows cannot be ordered before
        // this read (KVM's smp_rmb after reading mmu_invalidate_seq).
        self.seq.load(Ordering::Acquire)
    }

    /// Whether a fault at host address `hva` that read `seq` before its
    /// lookup must retry instead of mapping. `mmu_lock` is held.
    pub(crate) fn must_retry(&self, seq: u64, hva: u64) -> bool {
        if self.in_progress.load(Ordering::Relaxed) != 0
            && hva >= self.start.load(Ordering::Relaxed)
            && hva < self.end.load(Ordering::Relaxed)
        {
            return true;
        }
        self.seq.load(Ordering::Relaxed) != seq
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fault_retries_during_and_after_an_invalidation() {
        let s = InvalidateState::new();
        let seq = s.fault_seq();
        assert!(!s.must_retry(seq, 0x1000));
        s.begin(0x1000, 0x3000);
        assert!(s.must_retry(seq, 0x1000), "in the range, in progress");
        assert!(s.must_retry(seq, 0x2fff));
        assert!(!s.must_retry(seq, 0x3000), "outside the range");
        s.end();
        assert!(s.must_retry(seq, 0x5000), "the sequence moved on");
        let seq = s.fault_seq();
        assert!(!s.must_retry(seq, 0x1000));
    }

    #[test]
    fn overlapping_invalidations_widen_the_range() {
        let s = InvalidateState::new();
        s.begin(0x4000, 0x5000);
        s.begin(0x1000, 0x2000);
        let seq = s.fault_seq();
        assert!(s.must_retry(seq, 0x3000), "between the two: covered");
        s.end();
        let seq = s.fault_seq();
        assert!(s.must_retry(seq, 0x4000), "one still in progress");
        s.end();
        assert!(!s.must_retry(s.fault_seq(), 0x4000));
        // A new invalidation starts a fresh range.
        s.begin(0x9000, 0xa000);
        assert!(!s.must_retry(s.fault_seq(), 0x4000));
    }
}
