// SPDX-License-Identifier: GPL-2.0

//! The kernel side of the TDP MMU, kept thin and apart from its logic:
//! table pages (allocation, the direct map, freeing at once or through
//! RCU), the release of guest pages a zap let go of, and the IPI that kicks
//! vCPUs out of guest mode. Every `unsafe` of the TDP MMU is here;
//! `tdp.rs` has none.

use core::marker::PhantomData;

use crate::shim::ffi;

use kernel::prelude::*;

use super::{
    atomic::AtomicU64,
    spte::{ENTRIES, ROOT_LEVEL},
    tdp_iter::TableStore,
    tdp_mmu::{ChangeOps, TableSource},
    tlb::Kick,
    types::{Hpa, Pfn},
};
use crate::rwlock::{ReadGuard, WriteGuard};

/// Waits until every table page freed through RCU is back with the page
/// allocator (module unload: the RCU callback is module code).
pub(crate) fn rcu_barrier() {
    // SAFETY: sleeps until pending RCU callbacks ran; no preconditions.
    unsafe { ffi::rkvm_rcu_barrier() };
}

/// Proof that the page tables cannot be freed under the holder: `mmu_lock`
/// held in either mode, an RCU read section (a table is freed only
/// through RCU while the MMU lives: see `DirectMap`), or exclusive
/// ownership of the whole MMU.
pub(crate) trait TablesHeld {}
impl TablesHeld for ReadGuard<'_> {}
impl TablesHeld for WriteGuard<'_> {}
impl TablesHeld for kernel::sync::rcu::Guard {}
/// Held by `Tdp`'s drop: nobody else can reach the tables.
pub(crate) struct Exclusive;
impl TablesHeld for Exclusive {}

/// An MMU's table pages, reached through the direct map, for as long as
/// the proof `'a` borrows keeps them from being freed.
///
/// # Invariants
///
/// Every table address passed to `entry` is the MMU's root or was read
/// from a shadow-present non-leaf entry of its tables while the proof was
/// held, so names a table page from `rkvm_pt_alloc` that is freed only
/// after being detached with `mmu_lock` held for write, through RCU, or
/// when the `Tdp` is dropped. A zap that lets go of `mmu_lock` for a
/// moment (`WriteGuard::cond_resched`) keeps no entry reference across it
/// and restarts its walk from the root (`tdp_iter.rs`).
pub(crate) struct DirectMap<'a>(PhantomData<&'a ()>);

impl<'a> DirectMap<'a> {
    /// `_held` must be the MMU's `mmu_lock` guard (or `Exclusive` in its
    /// drop); only `tdp.rs` creates a `DirectMap`.
    pub(crate) fn new(_held: &'a impl TablesHeld) -> Self {
        Self(PhantomData)
    }
}

impl TableStore for DirectMap<'_> {
    fn entry(&self, table: Hpa, idx: usize) -> &AtomicU64 {
        assert!(idx < ENTRIES);
        // `AtomicU64` has `u64`'s layout, and every access to an entry is
        // atomic; freeing a table needs the write lock (excluded by a read
        // guard, and held throughout by a write guard's own walk) or
        // ownership.
        // SAFETY: `table` is a live, direct-mapped table page (invariant)
        // of `ENTRIES` entries that cannot be freed while the proof lives.
        unsafe { &*(ffi::rkvm_phys_to_virt(table.0) as *const AtomicU64).add(idx) }
    }
}

/// A table page owned by its holder: the root of an MMU.
///
/// # Invariants
///
/// `0` came from `rkvm_pt_alloc` and is freed only in `drop`.
pub(crate) struct RootTable(Hpa);

impl RootTable {
    pub(crate) fn new() -> Result<Self> {
        let mut cache = PtCache::new();
        cache.top_up()?;
        let root = cache.take().ok_or(ENOMEM)?;
        // INVARIANT: the page left the cache, which no longer frees it.
        Ok(Self(root))
    }

    pub(crate) fn hpa(&self) -> Hpa {
        self.0
    }
}

impl Drop for RootTable {
    fn drop(&mut self) {
        // The owner emptied the tree first (`tdp_mmu::free_all`), so no
        // table below is left behind.
        // SAFETY: from `rkvm_pt_alloc` (invariant), freed once; the MMU is
        // being dropped, no vCPU is left to use it.
        unsafe { ffi::rkvm_pt_free(self.0 .0) };
    }
}

/// Table pages allocated before taking `mmu_lock`, where a fault cannot
/// sleep: one per level below the root is always enough for one mapping.
///
/// # Invariants
///
/// `pages[..len]` came from `rkvm_pt_alloc`, are zeroed and linked nowhere.
pub(crate) struct PtCache {
    pages: [Hpa; ROOT_LEVEL as usize - 1],
    len: usize,
}

impl PtCache {
    pub(crate) const fn new() -> Self {
        Self {
            pages: [Hpa(0); ROOT_LEVEL as usize - 1],
            len: 0,
        }
    }

    /// Fills the cache; may sleep.
    pub(crate) fn top_up(&mut self) -> Result {
        while self.len < self.pages.len() {
            // SAFETY: allocates a zeroed page; no preconditions.
            let phys = unsafe { ffi::rkvm_pt_alloc() };
            if phys == 0 {
                return Err(ENOMEM);
            }
            // INVARIANT: a fresh zeroed page.
            self.pages[self.len] = Hpa(phys);
            self.len += 1;
        }
        Ok(())
    }
}

impl TableSource for PtCache {
    fn take(&mut self) -> Option<Hpa> {
        // INVARIANT: the page leaves the cache to be linked into a table.
        self.len = self.len.checked_sub(1)?;
        Some(self.pages[self.len])
    }

    fn put_back(&mut self, table: Hpa) {
        // INVARIANT: the page was never linked, so it is still zero and ours.
        if let Some(slot) = self.pages.get_mut(self.len) {
            *slot = table;
            self.len += 1;
        }
    }
}

impl Drop for PtCache {
    fn drop(&mut self) {
        for &t in &self.pages[..self.len] {
            // SAFETY: the page came from `rkvm_pt_alloc` and was never
            // linked (type invariant).
            unsafe { ffi::rkvm_pt_free(t.0) };
        }
    }
}

/// Table pages for splitting large leaves (`tdp_mmu::write_protect`),
/// allocated before `mmu_lock` is taken for write; what is left is freed.
///
/// # Invariants
///
/// Every page of `pages` came from `rkvm_pt_alloc`, is zeroed and linked
/// nowhere.
pub(crate) struct SplitCache {
    pages: KVec<Hpa>,
}

impl SplitCache {
    /// Up to `n` pages: fewer if memory is short (a large leaf without a
    /// table to split into is zapped instead). May sleep.
    pub(crate) fn new(n: usize) -> Self {
        let mut pages = KVec::new();
        for _ in 0..n {
            // SAFETY: allocates a zeroed page; no preconditions.
            let phys = unsafe { ffi::rkvm_pt_alloc() };
            if phys == 0 {
                break;
            }
            if pages.push(Hpa(phys), GFP_KERNEL).is_err() {
                // SAFETY: just allocated, linked nowhere.
                unsafe { ffi::rkvm_pt_free(phys) };
                break;
            }
        }
        // INVARIANT: fresh zeroed pages.
        Self { pages }
    }
}

impl TableSource for SplitCache {
    fn take(&mut self) -> Option<Hpa> {
        // INVARIANT: the page leaves the cache to be linked.
        self.pages.pop()
    }

    fn put_back(&mut self, table: Hpa) {
        // INVARIANT: never linked, so still zero and ours; if the push
        // fails the page is freed instead.
        if self.pages.push(table, GFP_ATOMIC).is_err() {
            // SAFETY: from `rkvm_pt_alloc`, linked nowhere.
            unsafe { ffi::rkvm_pt_free(table.0) };
        }
    }
}

impl Drop for SplitCache {
    fn drop(&mut self) {
        for t in self.pages.iter() {
            // SAFETY: from `rkvm_pt_alloc`, linked nowhere (invariant).
            unsafe { ffi::rkvm_pt_free(t.0) };
        }
    }
}

/// Pages whose release waits for a TLB flush, at most this many at once.
pub(crate) const REAP_BATCH: usize = 64;

/// What the change handler lets go of: the dirty state of guest pages
/// (moved to the page once the TLB flush that must come first is done),
/// and table pages. Leaves hold no page reference: the host keeps the page
/// mapped until the zap returns (the MMU notifier's invalidation zaps
/// before the host changes its page tables).
///
/// # Invariants
///
/// `pending[..n]` are pages zapped leaves mapped, still mapped by the
/// host.
pub(crate) struct Reaper {
    pending: [(Pfn, bool); REAP_BATCH],
    n: usize,
    /// Tables are freed through RCU (lockless walkers may still look), or
    /// at once (teardown: nobody can).
    rcu: bool,
}

impl Reaper {
    /// For a zap: tables go through RCU.
    pub(crate) const fn zap() -> Self {
        Self::new(true)
    }

    /// For the teardown of an MMU no vCPU can use any more: tables are
    /// freed at once, and leaves, which the MMU notifier's release zapped
    /// already, are not followed to their pages (which the host may have
    /// freed).
    pub(crate) const fn teardown() -> Self {
        Self::new(false)
    }

    const fn new(rcu: bool) -> Self {
        // INVARIANT: nothing is pending.
        Self {
            pending: [(Pfn(0), false); REAP_BATCH],
            n: 0,
            rcu,
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.n == REAP_BATCH
    }

    /// Moves the dirty state of the pages held back to them; the caller
    /// has flushed the TLBs since they were zapped, so no guest write can
    /// follow.
    pub(crate) fn release_flushed(&mut self) {
        for &(pfn, dirty) in &self.pending[..self.n] {
            // SAFETY: the host still maps the page (invariant).
            unsafe { ffi::rkvm_page_zapped(pfn.0, dirty, false) };
        }
        self.n = 0;
    }
}

impl ChangeOps for Reaper {
    fn release_page(&mut self, pfn: Pfn, dirty: bool) {
        if !self.rcu {
            // Teardown: the page is not the MMU's to touch (see `teardown`).
            return;
        }
        // The owner flushes and empties a full reaper before zapping more
        // (`Tdp`'s zapper); if it did not, the dirty state would be lost,
        // so it is marked at once then.
        match self.pending.get_mut(self.n) {
            Some(slot) => {
                // INVARIANT: the host maps the page until the zap returns.
                *slot = (pfn, dirty);
                self.n += 1;
            }
            // SAFETY: as in `release_flushed`; a vCPU may still write
            // through a stale translation until the flush, into a page
            // already marked dirty.
            None => unsafe { ffi::rkvm_page_zapped(pfn.0, dirty, false) },
        }
    }

    fn mark_dirty(&mut self, pfn: Pfn) {
        if self.rcu {
            // SAFETY: the leaf still maps the page, so the host does too
            // (the notifier zaps before the host unmaps).
            unsafe { ffi::rkvm_page_zapped(pfn.0, true, false) };
        }
    }

    fn free_table(&mut self, table: Hpa) {
        // SAFETY: the change handler passes a table it detached from the
        // tree and whose entries it froze, from `rkvm_pt_alloc`. Through
        // RCU: walkers under `mmu_lock` (an RCU read section, as it
        // disables preemption) finish first, and the zap flushes the TLBs
        // before it drops `mmu_lock`, so before the grace period can end.
        // At once: no vCPU or walker is left.
        unsafe {
            if self.rcu {
                ffi::rkvm_pt_free_rcu(table.0)
            } else {
                ffi::rkvm_pt_free(table.0)
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Every user releases after its final flush.
        if self.n != 0 {
            pr_warn!("rkvm: a zap lost the dirty state of {} guest pages\n", self.n);
        }
    }
}

/// Scratch cpumask for kicking vCPUs, allocated with the VM (as KVM's
/// per-vCPU kick masks) so a flush neither allocates nor puts an
/// `NR_CPUS`-sized mask on the stack.
///
/// # Invariants
///
/// `0` came from `rkvm_cpumask_alloc`, is non-null and is freed in `drop`.
/// It is written only through [`KickMask::kicker`], which needs `mmu_lock`
/// held for write, so never by two threads at once.
pub(crate) struct KickMask(*mut core::ffi::c_void);

// SAFETY: the mask is plain memory; the invariant says who writes it.
unsafe impl Send for KickMask {}
// SAFETY: shared access only passes the pointer on under the write lock.
unsafe impl Sync for KickMask {}

impl KickMask {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: allocates zeroed memory; no preconditions.
        let p = unsafe { ffi::rkvm_cpumask_alloc() };
        if p.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: a fresh, non-null allocation owned here.
        Ok(Self(p))
    }

    /// The IPI sender of a flush; `_held` is the MMU's `mmu_lock`, which
    /// owns the mask.
    pub(crate) fn kicker<'a>(&'a self, _held: &'a WriteGuard<'_>) -> Kicker<'a> {
        Kicker(self)
    }
}

impl Drop for KickMask {
    fn drop(&mut self) {
        // SAFETY: allocated by `rkvm_cpumask_alloc` (type invariant), freed
        // once.
        unsafe { ffi::rkvm_cpumask_free(self.0) };
    }
}

/// Kicks CPUs with the mask of a VM whose `mmu_lock` is held for write.
pub(crate) struct Kicker<'a>(&'a KickMask);

impl Kick for Kicker<'_> {
    fn kick_and_wait(&mut self, cpus: &[u32]) {
        // IRQs are on (mmu_lock does not disable them) and vCPUs never
        // spin on mmu_lock with IRQs off, so waiting cannot deadlock.
        // SAFETY: `cpus` is valid for its length (bad ids are ignored);
        // the mask is ours alone under the write lock (see `KickMask`).
        unsafe { ffi::rkvm_kick_cpus_wait(self.0 .0, cpus.as_ptr(), cpus.len() as u32) };
    }
}

/// The size of the current task's host mapping at `hva` as a TDP level
/// (1: 4 KiB, 2: 2 MiB, 3: 1 GiB).
pub(crate) fn host_mapping_level(hva: u64) -> u32 {
    // SAFETY: a lockless walk of the current task's page tables with IRQs
    // off (as GUP-fast), which only reads them.
    (unsafe { ffi::rkvm_host_mapping_level(hva) }).clamp(1, 3) as u32
}
