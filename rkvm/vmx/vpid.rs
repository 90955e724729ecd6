// SPDX-License-Identifier: GPL-2.0

//! VPID allocation: every vCPU gets its own virtual-processor identifier,
//! so the guest-linear translations the CPU caches for it are tagged and
//! survive VM exits (SDM vol. 3C, 29.1). VPID 0 is the host's; the others
//! (1..=65535) are handed out lock-free from a bitmap, and a vCPU that
//! finds none runs with VPID 0, which the CPU flushes on every entry and
//! exit (correct, only slower), as KVM does.
//!
//! Pure logic (only `core`), tested on the host.

use core::sync::atomic::{AtomicU64, Ordering};

/// VPIDs are 16 bits wide.
const NR_VPIDS: usize = 1 << 16;
const WORDS: usize = NR_VPIDS / 64;

/// The VPIDs in use, one bit each; bit 0 (the host's) is always set.
pub(crate) struct VpidPool {
    bits: [AtomicU64; WORDS],
}

impl VpidPool {
    pub(crate) const fn new() -> Self {
        let mut bits = [const { AtomicU64::new(0) }; WORDS];
        bits[0] = AtomicU64::new(1);
        Self { bits }
    }

    /// A free VPID, now taken, or `None` if all are in use.
    pub(crate) fn alloc(&self) -> Option<u16> {
        for (i, word) in self.bits.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            while cur != u64::MAX {
                let bit = (!cur).trailing_zeros();
                match word.compare_exchange_weak(
                    cur,
                    cur | 1 << bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((i * 64 + bit as usize) as u16),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Gives back a VPID from [`Self::alloc`]. The caller has flushed
    /// (or will flush before reuse) the translations tagged with it.
    pub(crate) fn free(&self, vpid: u16) {
        if vpid == 0 {
            return;
        }
        let (word, bit) = (vpid as usize / 64, vpid % 64);
        self.bits[word].fetch_and(!(1u64 << bit), Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::{boxed::Box, collections::BTreeSet, sync::Arc, thread, vec::Vec};

    #[test]
    fn never_zero_never_twice() {
        let pool = Box::new(VpidPool::new());
        let mut seen = BTreeSet::new();
        for _ in 0..(NR_VPIDS - 1) {
            let v = pool.alloc().unwrap();
            assert_ne!(v, 0);
            assert!(seen.insert(v));
        }
        assert_eq!(pool.alloc(), None, "65535 VPIDs, then none");
        pool.free(77);
        assert_eq!(pool.alloc(), Some(77));
        pool.free(0);
        assert_eq!(pool.alloc(), None, "VPID 0 is never handed out");
    }

    #[test]
    fn racing_allocations_are_distinct() {
        let pool = Arc::new(VpidPool::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || (0..1000).map(|_| pool.alloc().unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = BTreeSet::new();
        for t in threads {
            for v in t.join().unwrap() {
                assert!(all.insert(v));
            }
        }
        assert_eq!(all.len(), 4000);
    }
}
