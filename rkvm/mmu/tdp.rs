// SPDX-License-Identifier: GPL-2.0

//! The TDP MMU of one VM: a 4-level nested page table (AMD NPT or Intel
//! EPT), built on demand by nested page faults, with leaves as large as
//! the host maps the memory (see mmu.rst).
//!
//! The logic is pure and lives elsewhere: the walk in `tdp_iter.rs`, the
//! operations and the one door for SPTE changes in `tdp_mmu.rs`, the
//! vCPU/flush handshake in `tlb.rs`; the kernel pieces (table pages, page
//! release, IPIs) are in `shim.rs`. This file ties them to `mmu_lock`.
//!
//! # Locking
//!
//! - Faults hold `mmu_lock` for read and change entries only by
//!   compare-and-exchange (`tdp_mmu::set_spte_atomic`), so several vCPUs
//!   fault in parallel; a lost race is resolved by looking at the
//!   winner's entry, a frozen entry by faulting again.
//! - Zaps hold `mmu_lock` for write (`tdp_mmu::set_spte`). A zapped leaf's
//!   page reference is released only after every vCPU's TLB is flushed (a
//!   vCPU in guest mode is kicked out with an IPI and waited for), and a
//!   detached table is freed through RCU after that flush. A long zap
//!   yields the lock when someone waits for it or the CPU, flushing and
//!   releasing first.
//! - Page references: leaves hold none. The fault's reference is dropped
//!   once the leaf is in; the MMU notifier zaps the leaf before the host
//!   unmaps the page (see `invalidate.rs` and locking.rst).
//! - Lock order: SRCU (memslots) -> `mmu_lock`. Nothing that sleeps runs
//!   under `mmu_lock`; table pages for a fault are allocated before it.

use kernel::prelude::*;

pub(crate) use super::shim::{rcu_barrier, PtCache};
use super::{
    shim::{DirectMap, Exclusive, KickMask, Reaper, RootTable, SplitCache},
    invalidate::InvalidateState,
    spte::{Ept, Npt, ROOT_LEVEL},
    atomic::{AtomicU64, Ordering},
    tdp_mmu::{self, ChangeOps, LeafCounts, MapOutcome, ZapOps},
    tlb::TlbTracker,
    types::{Gfn, Hpa, Pfn},
};
use crate::{
    abi::MAX_VCPUS,
    rwlock::{new_rwlock, ReadGuard, RwLock, WriteGuard},
};

/// The SPTE format of an MMU: the backend's (NPT for SVM, EPT for VMX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TdpFormat {
    Npt,
    Ept,
}

/// Runs `$body` with `$F` the SPTE format type of `$format`: the MMU code
/// is generic over the format and instantiated for both.
macro_rules! with_format {
    ($format:expr, $F:ident => $body:expr) => {
        match $format {
            TdpFormat::Npt => {
                type $F = Npt;
                $body
            }
            TdpFormat::Ept => {
                type $F = Ept;
                $body
            }
        }
    };
}

/// The nested page table of one VM.
///
/// # Invariants
///
/// `root` is a table page of this MMU for its whole life; every
/// shadow-present non-leaf entry reachable from it points to another table
/// of this MMU.
#[pin_data(PinnedDrop)]
pub(crate) struct Tdp {
    #[pin]
    mmu_lock: RwLock,
    root: RootTable,
    tlb: TlbTracker<MAX_VCPUS>,
    kick_mask: KickMask,
    format: TdpFormat,
    /// The largest leaf level the hardware walks (1: 4 KiB, 2: 2 MiB,
    /// 3: 1 GiB).
    max_level: u32,
    /// The CPU sets the accessed bit of the leaves it uses (NPT; EPT with
    /// A/D flags enabled).
    hw_accessed: bool,
    /// MMU-notifier invalidations against faults (see `invalidate.rs`).
    invalidate: InvalidateState,
    /// Present leaves by size, for the VM's statistics.
    leaf_counts: LeafCounts,
    /// TLB flushes of every vCPU so far, for the VM's statistics.
    remote_tlb_flushes: AtomicU64,
}

impl Tdp {
    pub(crate) fn new(
        format: TdpFormat,
        max_level: u32,
        hw_accessed: bool,
    ) -> Result<impl PinInit<Self, Error>> {
        let kick_mask = KickMask::new()?;
        let root = RootTable::new()?;
        // INVARIANT: the root is a fresh table page; the tree is empty.
        Ok(try_pin_init!(Self {
            mmu_lock <- new_rwlock!("Tdp::mmu_lock"),
            root,
            tlb: TlbTracker::new(),
            kick_mask,
            format,
            max_level,
            hw_accessed,
            invalidate: InvalidateState::new(),
            leaf_counts: LeafCounts::new(),
            remote_tlb_flushes: AtomicU64::new(0),
        }? Error))
    }

    /// Host physical address of the root table: the VMCB's nested CR3.
    pub(crate) fn root_hpa(&self) -> Hpa {
        self.root.hpa()
    }

    /// [`Self::root_hpa`] as a plain address, for the vCPU's VMCB.
    pub(crate) fn root_phys(&self) -> u64 {
        self.root.hpa().0
    }

    /// Takes `mmu_lock` for a fault. The guard is the only way to map:
    /// it cannot be mixed up with another MMU's lock.
    pub(crate) fn read_lock(&self) -> TdpReadGuard<'_> {
        TdpReadGuard {
            tdp: self,
            held: self.mmu_lock.read(),
        }
    }

    /// Unmaps guest frames `[start, end)`, moves their pages' dirty state
    /// to them and frees the tables wholly inside. When this returns, no
    /// vCPU can access them through a stale translation.
    pub(crate) fn zap_gfn_range(&self, start: Gfn, end: Gfn) {
        if start >= end {
            return;
        }
        let held = self.mmu_lock.write();
        self.zap_ranges(&held, [(start, end)].into_iter(), true);
    }

    /// Zaps every range of `ranges`, then flushes once. Yields `mmu_lock`
    /// to waiters only if `may_block`.
    fn zap_ranges(
        &self,
        held: &WriteGuard<'_>,
        ranges: impl Iterator<Item = (Gfn, Gfn)>,
        may_block: bool,
    ) {
        self.write_locked_walks(held, may_block, |tables, z| {
            let mut flush = false;
            for (start, end) in ranges.filter(|(s, e)| s < e) {
                flush |= with_format!(self.format, F => {
                    tdp_mmu::zap_range::<F, _>(tables, self.root_hpa(), ROOT_LEVEL, start, end, z)
                });
            }
            flush
        });
    }

    /// Runs `walks` (write-locked walks of the tables, through `Zapper`:
    /// zaps, write protection), which return whether a TLB flush is still
    /// needed; then flushes once if so, and lets go of what they released.
    /// Yields `mmu_lock` to waiters only if `may_block`.
    fn write_locked_walks(
        &self,
        held: &WriteGuard<'_>,
        may_block: bool,
        walks: impl FnOnce(&DirectMap<'_>, &mut Zapper<'_>) -> bool,
    ) {
        let tables = DirectMap::new(held);
        // INVARIANT: `held` guards this MMU's lock.
        let mut z = Zapper {
            tdp: self,
            held,
            reaper: Reaper::zap(),
            may_block,
        };
        if walks(&tables, &mut z) {
            self.flush_remote_tlbs(held);
        }
        z.reaper.release_flushed();
    }

    /// A slot on guest frames `[start, end)` starts logging dirty pages:
    /// its large leaves are split into 4 KiB ones (eagerly, as KVM does,
    /// so the vCPUs do not fault the blocks back in) and, if `protect`, its
    /// writable leaves become read-only, in one walk, so that each write
    /// from now on faults (and is logged). When this returns, no vCPU can
    /// write there through a stale TLB entry.
    pub(crate) fn write_protect_range(&self, start: Gfn, end: Gfn, protect: bool) {
        let tables = {
            let held = self.mmu_lock.read();
            let store = DirectMap::new(&held);
            tdp_mmu::tables_to_split(&store, self.root_hpa(), ROOT_LEVEL, start, end)
        };
        // Allocated without the lock; a large leaf that appears meanwhile
        // (none should: the slot maps 4 KiB now) is zapped instead.
        let mut split = SplitCache::new(tables);
        let held = self.mmu_lock.write();
        self.write_locked_walks(&held, true, |tables, z| {
            with_format!(self.format, F => tdp_mmu::write_protect::<F, _>(
                tables, self.root_hpa(), ROOT_LEVEL, start, end, |_| protect, &mut split, z,
            ))
        });
    }

    /// Dirty-log collection (`KVM_GET_DIRTY_LOG`, `KVM_CLEAR_DIRTY_LOG`,
    /// `KVM_RESET_DIRTY_RINGS`): for each `(first, mask)` that `masks`
    /// yields, the frames `first + i` for the bits `i` of `mask` are
    /// write-protected. `masks` is run under `mmu_lock` held for write, so
    /// it is where the caller takes the dirty state (the locked fault path
    /// sets it under the lock held for read: see `dirty.rs`). When this
    /// returns, every frame named is read-only to every vCPU.
    pub(crate) fn write_protect_masked(&self, masks: impl Iterator<Item = (Gfn, u64)>) {
        let held = self.mmu_lock.write();
        // A logging slot has no large leaves but those a log that started
        // all set kept, unsplit for want of memory; those are zapped here.
        let mut no_split = SplitCache::new(0);
        self.write_locked_walks(&held, true, |tables, z| {
            let mut flush = false;
            for (first, mask) in masks.filter(|&(_, mask)| mask != 0) {
                let (lo, hi) = (mask.trailing_zeros() as u64, 63 - mask.leading_zeros() as u64);
                let wanted = |g: Gfn| mask & (1 << (g.0 - first.0)) != 0;
                flush |= with_format!(self.format, F => tdp_mmu::write_protect::<F, _>(
                    tables, self.root_hpa(), ROOT_LEVEL, first.add(lo), first.add(hi + 1), wanted,
                    &mut no_split, z,
                ));
            }
            flush
        });
    }

    /// An MMU-notifier invalidation of host addresses `[start, end)`
    /// begins: faults at those addresses retry until it ends, and the
    /// guest frames `gfns` they back are zapped now. Must not sleep unless
    /// `may_block`.
    pub(crate) fn invalidate_begin(
        &self,
        start: u64,
        end: u64,
        gfns: impl Iterator<Item = (Gfn, Gfn)>,
        may_block: bool,
    ) {
        let held = self.mmu_lock.write();
        self.invalidate.begin(start, end);
        self.zap_ranges(&held, gfns, may_block);
    }

    /// The invalidation the matching `invalidate_begin` announced is done.
    pub(crate) fn invalidate_end(&self) {
        let _held = self.mmu_lock.write();
        self.invalidate.end();
    }

    /// Page aging of guest frames `gfns`: whether the guest used any since
    /// they were last made old, making them old if `clear` (and flushing
    /// the TLBs if `flush` and something was made old, so that the next
    /// access is seen). With hardware accessed bits the bits are cleared;
    /// without (EPT without A/D flags) the leaves are access-tracked: not
    /// present to the hardware until the next access faults and restores
    /// them (see `SpteFormat::aged`). A leaf that loses write permission so
    /// has its page marked dirty at once, so no flush is needed for the
    /// dirty state: without `flush` (`clear_young`) a stale TLB entry only
    /// delays what aging sees, as in KVM.
    pub(crate) fn age(&self, gfns: impl Iterator<Item = (Gfn, Gfn)>, clear: bool, flush: bool) -> bool {
        let held = self.mmu_lock.read();
        let tables = DirectMap::new(&held);
        let root = self.root_hpa();
        let hw_ad = self.hw_accessed;
        // Aging only marks pages dirty; it never releases or frees.
        let mut ops = Reaper::zap();
        let mut young = false;
        for (start, end) in gfns.filter(|(s, e)| s < e) {
            let (y, _) = with_format!(self.format, F => {
                tdp_mmu::age_range::<F, _>(&tables, root, ROOT_LEVEL, start, end, clear, hw_ad, &mut ops)
            });
            young |= y;
        }
        drop(held);
        if young && clear && flush {
            let held = self.mmu_lock.write();
            self.flush_remote_tlbs(&held);
        }
        young
    }

    /// The lockless fast path of a fault on `gfn` (see
    /// `tdp_mmu::fast_fault`), for the faults it can fix: a `write` to a
    /// leaf the hardware found `present` (write-protected), or any access
    /// to a leaf that is not present to the hardware where aging
    /// access-tracks leaves (no hardware accessed bits). `None`: take the
    /// locked path; `Some(made_writable)`: fixed.
    pub(crate) fn fast_fault(&self, gfn: Gfn, write: bool, present: bool) -> Option<bool> {
        if !(write && present) && (present || self.hw_accessed) {
            return None;
        }
        let rcu = kernel::sync::rcu::read_lock();
        let tables = DirectMap::new(&rcu);
        let root = self.root_hpa();
        with_format!(self.format, F => {
            tdp_mmu::fast_fault::<F, _>(&tables, root, ROOT_LEVEL, gfn, write)
        })
    }

    /// What a fault reads before it looks up the host page, to check
    /// under `mmu_lock` with [`TdpReadGuard::must_retry`].
    pub(crate) fn fault_seq(&self) -> u64 {
        self.invalidate.fault_seq()
    }

    /// Makes every vCPU drop its cached translations before it next runs
    /// guest code, and waits for those in guest mode to leave it.
    fn flush_remote_tlbs(&self, held: &WriteGuard<'_>) {
        self.remote_tlb_flushes.fetch_add(1, Ordering::Relaxed);
        self.tlb.flush_remote(&mut self.kick_mask.kicker(held));
    }

    /// Present leaves at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB).
    pub(crate) fn leaves(&self, level: u32) -> u64 {
        self.leaf_counts.get(level)
    }

    /// TLB flushes of every vCPU so far.
    pub(crate) fn remote_tlb_flushes(&self) -> u64 {
        self.remote_tlb_flushes.load(Ordering::Relaxed)
    }

    /// vCPU `idx` is about to enter the guest on `cpu` (IRQs off). Returns
    /// the TLB generation to compare with the one it last flushed for.
    pub(crate) fn enter_guest(&self, idx: usize, cpu: u32) -> u64 {
        self.tlb.enter_guest(idx, cpu)
    }

    /// vCPU `idx` left the guest.
    pub(crate) fn exit_guest(&self, idx: usize) {
        self.tlb.exit_guest(idx)
    }
}

/// A zap in progress, `mmu_lock` held for write: releases pages only after
/// a flush, and yields the lock when asked to.
///
/// # Invariants
///
/// `held` is the guard of `tdp.mmu_lock`.
struct Zapper<'a> {
    tdp: &'a Tdp,
    held: &'a WriteGuard<'a>,
    reaper: Reaper,
    /// Whether `mmu_lock` may be dropped to reschedule.
    may_block: bool,
}

impl ChangeOps for Zapper<'_> {
    fn release_page(&mut self, pfn: Pfn, dirty: bool) {
        if self.reaper.is_full() {
            // Bounded batches: flush for what is held back, release it.
            self.tdp.flush_remote_tlbs(self.held);
            self.reaper.release_flushed();
        }
        self.reaper.release_page(pfn, dirty);
    }

    fn free_table(&mut self, table: Hpa) {
        self.reaper.free_table(table);
    }

    fn mark_dirty(&mut self, pfn: Pfn) {
        self.reaper.mark_dirty(pfn);
    }

    fn leaf_counts(&self) -> Option<&LeafCounts> {
        Some(&self.tdp.leaf_counts)
    }
}

impl ZapOps for Zapper<'_> {
    fn should_yield(&mut self) -> bool {
        self.may_block && self.held.needbreak()
    }

    fn yield_lock(&mut self, flush: bool) {
        if flush {
            self.tdp.flush_remote_tlbs(self.held);
        }
        self.reaper.release_flushed();
        self.held.cond_resched();
    }
}

#[pinned_drop]
impl PinnedDrop for Tdp {
    fn drop(self: Pin<&mut Self>) {
        // No vCPU is left (each holds the VM), so nothing walks the tables;
        // the root itself is freed with `self.root`.
        let root = self.root_hpa();
        with_format!(self.format, F => tdp_mmu::free_all::<F, _>(
            &DirectMap::new(&Exclusive),
            root,
            ROOT_LEVEL,
            &mut Reaper::teardown(),
        ));
    }
}

/// `mmu_lock` of one [`Tdp`], held for reading.
///
/// # Invariants
///
/// `held` is a read guard of `tdp.mmu_lock`.
pub(crate) struct TdpReadGuard<'a> {
    tdp: &'a Tdp,
    held: ReadGuard<'a>,
}

impl TdpReadGuard<'_> {
    /// Whether a fault at host address `hva` that read `seq` from
    /// [`Tdp::fault_seq`] before its page lookup must retry: an
    /// invalidation of that address is in progress or ended since.
    pub(crate) fn must_retry(&self, seq: u64, hva: u64) -> bool {
        // `held` guards this MMU's lock (invariant).
        self.tdp.invalidate.must_retry(seq, hva)
    }

    /// Maps `gfn` to `pfn` (writable or not) with a leaf at `level` (see
    /// `tdp_mmu::map_at`). The caller holds a reference on the page until
    /// after the lock is dropped; the leaf takes none.
    pub(crate) fn map(
        &self,
        gfn: Gfn,
        pfn: Pfn,
        writable: bool,
        level: u32,
        cache: &mut PtCache,
    ) -> MapOutcome {
        // `held` guards this MMU's lock (invariant): the tables stay.
        let tables = DirectMap::new(&self.held);
        let root = self.tdp.root_hpa();
        let level = level.min(self.tdp.max_level);
        with_format!(self.tdp.format, F => tdp_mmu::map_at::<F, _>(
            &tables, root, ROOT_LEVEL, gfn, pfn, writable, level, cache,
            Some(&self.tdp.leaf_counts),
        ))
    }

    /// The largest leaf level the hardware walks.
    pub(crate) fn max_level(&self) -> u32 {
        self.tdp.max_level
    }

    /// The size of the host's mapping at `hva` in the current task, as a
    /// TDP level (1: 4 KiB, 2: 2 MiB, 3: 1 GiB). Read under `mmu_lock`
    /// after [`Self::must_retry`] said no, so the answer holds until an
    /// invalidation, which waits for the lock.
    pub(crate) fn host_mapping_level(&self, hva: u64) -> u32 {
        super::shim::host_mapping_level(hva)
    }
}
