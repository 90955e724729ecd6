// SPDX-License-Identifier: GPL-2.0

//! A vCPU's dirty ring (`KVM_CAP_DIRTY_LOG_RING_ACQ_REL`): the pages the
//! vCPU let the guest write, as `struct kvm_dirty_gfn` entries in memory
//! the VMM maps, instead of a slot's bitmap.
//!
//! Three parties use a ring (locking.rst, "The dirty ring"):
//! - the vCPU's thread pushes an entry when a leaf of a logging slot
//!   becomes writable (or the kernel writes the page for the guest), and
//!   publishes it by setting `F_DIRTY` with release;
//! - the VMM harvests entries in order: it reads `F_DIRTY` with acquire,
//!   then the slot and offset, and marks the entry `F_RESET` with release;
//! - `KVM_RESET_DIRTY_RINGS` takes the harvested entries in order, clears
//!   them and hands their pages back to be write-protected, so that the
//!   next write pushes them again.
//!
//! The VMM may write anything into the entries at any time, so they are
//! atomics, and the reset trusts nothing but the order: it stops at the
//! first entry not marked `F_RESET`, and never goes past the last entry
//! pushed. Slot ids and offsets it returns are the VMM's to check.
//!
//! The vCPU stops (`KVM_EXIT_DIRTY_RING_FULL`) once `RESERVED_ENTRIES` or
//! fewer are free; the reserve holds what one exit can still push, so a
//! push never finds the ring full (and would refuse to overwrite).
//!
//! Pure logic (only `core`), tested on the host and in loom model 6.

use core::ops::Deref;

use super::atomic::{AtomicU32, AtomicU64, Ordering};

/// `KVM_DIRTY_GFN_F_DIRTY`: the entry names a page the guest may have
/// written.
pub(crate) const F_DIRTY: u32 = 1;
/// `KVM_DIRTY_GFN_F_RESET`: the VMM has harvested the entry.
pub(crate) const F_RESET: u32 = 2;
/// Size of `struct kvm_dirty_gfn`.
pub(crate) const ENTRY_SIZE: u64 = 16;
/// Entries kept free when the vCPU stops (`KVM_DIRTY_RING_RSVD_ENTRIES`).
pub(crate) const RESERVED_ENTRIES: u32 = 64;
/// Most entries of a ring (`KVM_DIRTY_RING_MAX_ENTRIES`).
pub(crate) const MAX_ENTRIES: u32 = 65536;
/// Largest ring in bytes: what `KVM_CHECK_EXTENSION` reports.
pub(crate) const MAX_BYTES: u64 = MAX_ENTRIES as u64 * ENTRY_SIZE;

/// `struct kvm_dirty_gfn`, shared with the VMM.
#[repr(C)]
pub(crate) struct RingEntry {
    flags: AtomicU32,
    slot: AtomicU32,
    offset: AtomicU64,
}

impl RingEntry {
    /// A clear entry.
    pub(crate) fn new() -> Self {
        Self {
            flags: AtomicU32::new(0),
            slot: AtomicU32::new(0),
            offset: AtomicU64::new(0),
        }
    }

    /// The entry as the VMM reads it: `(slot, offset)` once it is dirty
    /// (the VMM's side, for the tests and the loom model).
    #[cfg_attr(not(any(test, loom)), allow(dead_code))]
    pub(crate) fn harvest(&self) -> Option<(u32, u64)> {
        if self.flags.load(Ordering::Acquire) & F_DIRTY == 0 {
            return None;
        }
        Some((
            self.slot.load(Ordering::Relaxed),
            self.offset.load(Ordering::Relaxed),
        ))
    }

    /// The VMM's mark after `harvest`.
    #[cfg_attr(not(any(test, loom)), allow(dead_code))]
    pub(crate) fn mark_harvested(&self) {
        self.flags.store(F_RESET, Ordering::Release);
    }
}

/// Why a ring size was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SizeError {
    /// Not a power of two, or less than a page or the reserve (`EINVAL`).
    Invalid,
    /// More than `MAX_BYTES` (`E2BIG`).
    TooBig,
}

/// The number of entries of a ring of `bytes` bytes, if `KVM_ENABLE_CAP`
/// may set that size (KVM's checks, in its order).
pub(crate) fn entries_for(bytes: u64, page_size: u64) -> Result<u32, SizeError> {
    if !bytes.is_power_of_two() || bytes < page_size || bytes < RESERVED_ENTRIES as u64 * ENTRY_SIZE
    {
        return Err(SizeError::Invalid);
    }
    if bytes > MAX_BYTES {
        return Err(SizeError::TooBig);
    }
    Ok((bytes / ENTRY_SIZE) as u32)
}

/// A dirty ring over `entries` (any storage of [`RingEntry`]s: the
/// kernel's is vmalloc'ed and mapped by the VMM).
///
/// # Invariants
///
/// - `entries.len()` is a power of two, at most `MAX_ENTRIES` and more
///   than `RESERVED_ENTRIES`.
/// - `dirty_index - reset_index` (wrapping) is at most `entries.len()`:
///   the entries from `reset_index` to `dirty_index` (modulo the length)
///   are pushed and not yet reset; the others are free.
pub(crate) struct DirtyRing<S> {
    entries: S,
    /// The next entry to push; written by the producer only.
    dirty_index: AtomicU32,
    /// The next entry to reset; written by the (serialised) resets only.
    reset_index: AtomicU32,
}

/// Pages to write-protect again: `slot`'s pages `offset + i` for each bit
/// `i` of `mask` (as the VMM's entries said: unchecked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) slot: u32,
    pub(crate) offset: u64,
    pub(crate) mask: u64,
}

impl Batch {
    /// Adds page `offset` of `slot` if it fits in this batch's 64 pages,
    /// moving the batch's start down if needed and nothing falls off.
    fn absorb(&mut self, slot: u32, offset: u64) -> bool {
        if slot != self.slot {
            return false;
        }
        if let Some(d) = offset.checked_sub(self.offset).filter(|&d| d < 64) {
            self.mask |= 1 << d;
            return true;
        }
        match self.offset.checked_sub(offset) {
            Some(d) if d < 64 && self.mask.leading_zeros() as u64 >= d => {
                self.mask = self.mask << d | 1;
                self.offset = offset;
                true
            }
            _ => false,
        }
    }
}

impl<S: Deref<Target = [RingEntry]>> DirtyRing<S> {
    /// A ring over `entries`, all clear. `None` if their number is not a
    /// power of two in the allowed range.
    pub(crate) fn new(entries: S) -> Option<Self> {
        let n = entries.len();
        if !n.is_power_of_two() || n > MAX_ENTRIES as usize || n <= RESERVED_ENTRIES as usize {
            return None;
        }
        // INVARIANT: the length was checked; nothing is pushed.
        Some(Self {
            entries,
            dirty_index: AtomicU32::new(0),
            reset_index: AtomicU32::new(0),
        })
    }

    /// The entries, as the VMM maps them.
    pub(crate) fn entries(&self) -> &[RingEntry] {
        &self.entries
    }

    fn entry(&self, index: u32) -> &RingEntry {
        // The length is a power of two (type invariant).
        &self.entries[index as usize & (self.entries.len() - 1)]
    }

    /// Entries pushed and not yet reset.
    pub(crate) fn used(&self) -> u32 {
        let reset = self.reset_index.load(Ordering::Acquire);
        self.dirty_index.load(Ordering::Relaxed).wrapping_sub(reset)
    }

    /// Whether the vCPU must stop until the VMM harvests: at most
    /// `RESERVED_ENTRIES` free.
    pub(crate) fn soft_full(&self) -> bool {
        self.used() >= self.entries.len() as u32 - RESERVED_ENTRIES
    }

    /// Whether a push would find a free entry.
    pub(crate) fn has_room(&self) -> bool {
        self.used() < self.entries.len() as u32
    }

    /// Pushes page `offset` of slot `slot` (address space in bits 31:16):
    /// `false`, with nothing pushed, if the ring is full.
    ///
    /// Only the vCPU's thread pushes (the ring's single producer): the
    /// kernel calls this with the vCPU's mutex held.
    pub(crate) fn push(&self, slot: u32, offset: u64) -> bool {
        // Release: a VMM that sees the flag sees the slot and offset.
        self.push_publishing_with(slot, offset, Ordering::Release)
    }

    /// `push`, with the flag stored with `publish` (loom model 6's
    /// negative control stores it relaxed).
    pub(crate) fn push_publishing_with(&self, slot: u32, offset: u64, publish: Ordering) -> bool {
        let dirty = self.dirty_index.load(Ordering::Relaxed);
        // Acquire: pairs with the reset's release of `reset_index`, so its
        // last reads of the entry come before the writes below.
        let reset = self.reset_index.load(Ordering::Acquire);
        if dirty.wrapping_sub(reset) >= self.entries.len() as u32 {
            return false;
        }
        let e = self.entry(dirty);
        e.slot.store(slot, Ordering::Relaxed);
        e.offset.store(offset, Ordering::Relaxed);
        e.flags.store(F_DIRTY, publish);
        // INVARIANT: one more pushed entry; there was room for it.
        // Release: a reset that sees the index sees the entry written.
        self.dirty_index
            .store(dirty.wrapping_add(1), Ordering::Release);
        true
    }

    /// Takes the oldest pushed entry if the VMM has harvested it: clears it
    /// and returns what it said. Resets are serialised by the caller (the
    /// VM's `slots_lock`).
    fn take_harvested(&self) -> Option<(u32, u64)> {
        let reset = self.reset_index.load(Ordering::Relaxed);
        // Acquire: pairs with `push`'s release (the entry is written).
        if reset == self.dirty_index.load(Ordering::Acquire) {
            // Entries past the last push are not the VMM's to reset.
            return None;
        }
        let e = self.entry(reset);
        // Acquire: the VMM's reads of the entry came first.
        if e.flags.load(Ordering::Acquire) & F_RESET == 0 {
            return None;
        }
        let taken = (
            e.slot.load(Ordering::Relaxed),
            e.offset.load(Ordering::Relaxed),
        );
        // Relaxed: the release of `reset_index` below orders it before the
        // producer writes the entry again.
        e.flags.store(0, Ordering::Relaxed);
        // INVARIANT: `reset` was before `dirty_index`: one fewer in use.
        // Release: pairs with `push`'s acquire.
        self.reset_index
            .store(reset.wrapping_add(1), Ordering::Release);
        Some(taken)
    }

    /// `KVM_RESET_DIRTY_RINGS` for this ring: an iterator over the
    /// harvested entries, oldest first, that clears them as it goes and
    /// yields their pages in batches of up to 64 pages of one slot.
    pub(crate) fn reset(&self) -> Reset<'_, S> {
        Reset {
            ring: self,
            pending: None,
            entries: 0,
        }
    }
}

/// The iterator of [`DirtyRing::reset`].
pub(crate) struct Reset<'a, S> {
    ring: &'a DirtyRing<S>,
    /// The batch being filled.
    pending: Option<Batch>,
    entries: u32,
}

impl<S> Reset<'_, S> {
    /// Entries reset so far.
    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }
}

impl<S: Deref<Target = [RingEntry]>> Iterator for Reset<'_, S> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        while let Some((slot, offset)) = self.ring.take_harvested() {
            self.entries += 1;
            if self
                .pending
                .as_mut()
                .is_some_and(|b| b.absorb(slot, offset))
            {
                continue;
            }
            let full = self.pending.replace(Batch {
                slot,
                offset,
                mask: 1,
            });
            if full.is_some() {
                return full;
            }
        }
        self.pending.take()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn ring(n: usize) -> DirtyRing<Vec<RingEntry>> {
        DirtyRing::new((0..n).map(|_| RingEntry::new()).collect()).unwrap()
    }

    /// The VMM: harvests every dirty entry from `*next` on.
    fn harvest(r: &DirtyRing<Vec<RingEntry>>, next: &mut u32) -> Vec<(u32, u64)> {
        let mut got = Vec::new();
        loop {
            let e = r.entry(*next);
            match e.harvest() {
                Some(x) => {
                    got.push(x);
                    e.mark_harvested();
                    *next = next.wrapping_add(1);
                }
                None => return got,
            }
        }
    }

    #[test]
    fn sizes_follow_kvm() {
        assert_eq!(entries_for(4096, 4096), Ok(256));
        assert_eq!(entries_for(MAX_BYTES, 4096), Ok(MAX_ENTRIES));
        assert_eq!(entries_for(0, 4096), Err(SizeError::Invalid));
        assert_eq!(entries_for(3000, 4096), Err(SizeError::Invalid));
        assert_eq!(entries_for(2048, 4096), Err(SizeError::Invalid));
        assert_eq!(entries_for(2 * MAX_BYTES, 4096), Err(SizeError::TooBig));
        assert!(DirtyRing::new(Vec::<RingEntry>::new()).is_none());
        assert!(DirtyRing::new((0..100).map(|_| RingEntry::new()).collect::<Vec<_>>()).is_none());
    }

    #[test]
    fn push_harvest_reset_round_trip() {
        let r = ring(128);
        let mut next = 0;
        for i in 0..10 {
            assert!(r.push(1, 100 + i));
        }
        assert_eq!(r.used(), 10);
        // Nothing harvested: a reset takes nothing.
        assert_eq!(r.reset().count(), 0);
        let got = harvest(&r, &mut next);
        assert_eq!(got.len(), 10);
        assert_eq!(got[3], (1, 103));
        let mut reset = r.reset();
        assert_eq!(
            reset.next(),
            Some(Batch {
                slot: 1,
                offset: 100,
                mask: 0x3ff
            })
        );
        assert_eq!(reset.next(), None);
        assert_eq!(reset.entries(), 10);
        assert_eq!(r.used(), 0);
        // Cleared: the VMM sees nothing until the next push.
        assert!(harvest(&r, &mut next).is_empty());
    }

    #[test]
    fn reset_stops_at_the_first_unharvested_entry() {
        let r = ring(128);
        for i in 0..4 {
            assert!(r.push(0, i));
        }
        // The VMM marks entries 0, 1 and 3, not 2.
        for i in [0, 1, 3] {
            r.entry(i).mark_harvested();
        }
        let mut reset = r.reset();
        assert_eq!(
            reset.by_ref().collect::<Vec<_>>(),
            [Batch {
                slot: 0,
                offset: 0,
                mask: 3
            }]
        );
        assert_eq!(reset.entries(), 2);
        assert_eq!(r.used(), 2);
    }

    #[test]
    fn reset_never_passes_the_last_push() {
        let r = ring(128);
        assert!(r.push(0, 5));
        // A VMM that marks entries never pushed gains nothing.
        for i in 0..128 {
            r.entry(i).mark_harvested();
        }
        assert_eq!(r.reset().count(), 1);
        assert_eq!(r.used(), 0);
        assert!(r.push(0, 6));
        assert_eq!(r.used(), 1);
    }

    #[test]
    fn batches_coalesce_within_64_pages_of_one_slot() {
        let r = ring(128);
        let pages = [
            (1, 70),
            (1, 71),
            (1, 10),
            (1, 69),
            (2, 69),
            (2, 5),
            (2, 133),
            (1, 0),
        ];
        for (s, o) in pages {
            assert!(r.push(s, o));
        }
        let mut next = 0;
        harvest(&r, &mut next);
        let batches: Vec<_> = r.reset().collect();
        assert_eq!(
            batches,
            [
                // 70, 71, then 10 (moved down 60), then 69.
                Batch {
                    slot: 1,
                    offset: 10,
                    mask: 1 | 1 << 59 | 1 << 60 | 1 << 61
                },
                // 5 is 64 below 69: too far.
                Batch {
                    slot: 2,
                    offset: 69,
                    mask: 1
                },
                Batch {
                    slot: 2,
                    offset: 5,
                    mask: 1
                },
                Batch {
                    slot: 2,
                    offset: 133,
                    mask: 1
                },
                Batch {
                    slot: 1,
                    offset: 0,
                    mask: 1
                },
            ]
        );
    }

    #[test]
    fn a_full_ring_refuses_and_stops_the_vcpu_first() {
        let r = ring(128);
        let mut pushed = 0;
        while !r.soft_full() {
            assert!(r.push(0, pushed));
            pushed += 1;
        }
        assert_eq!(pushed, 128 - RESERVED_ENTRIES as u64);
        while r.has_room() {
            assert!(r.push(0, pushed));
            pushed += 1;
        }
        assert_eq!(pushed, 128);
        assert!(!r.push(0, 999));
        // Harvest and reset everything: the ring wraps around.
        let mut next = 0;
        assert_eq!(harvest(&r, &mut next).len(), 128);
        assert_eq!(r.reset().map(|b| b.mask.count_ones()).sum::<u32>(), 128);
        assert!(!r.soft_full());
        assert!(r.push(3, 4));
        assert_eq!(harvest(&r, &mut next), [(3, 4)]);
    }
}
