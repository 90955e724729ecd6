// SPDX-License-Identifier: GPL-2.0

//! The TDP MMU: one 4-level nested page table per VM (AMD NPT), 4 KiB
//! mappings, built on demand by nested page faults.
//!
//! # Locking
//!
//! - Faults hold `mmu_lock` for read and change entries only by
//!   compare-and-exchange (see `spte.rs` for who may change which bit), so
//!   several vCPUs fault in parallel; a lost race is resolved by looking at
//!   the winner's entry.
//! - Zaps hold `mmu_lock` for write. They work in two passes: the first
//!   makes the range's entries non-present (leaves keep naming their page,
//!   whole tables are cut off by their parent entry), then every vCPU's TLB
//!   is flushed (a vCPU in guest mode is kicked out with an IPI and waited
//!   for), then the second pass drops the page references and frees the cut
//!   tables through RCU. So no vCPU can reach a page after rkvm let go of it.
//! - Page references: every present or removed leaf holds one reference on
//!   its page, taken by `get_user_pages_fast` in the fault and dropped by
//!   the zap (until MMU notifiers exist, this is what keeps the host from
//!   reusing a page the guest still maps).
//! - Lock order: SRCU (memslots) -> `mmu_lock`. Nothing that sleeps runs
//!   under `mmu_lock`; table pages for a fault are allocated before it.

use core::{
    marker::PhantomData,
    sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering},
};

use kernel::prelude::*;

use crate::{
    abi::MAX_VCPUS,
    mmu::{
        spte::{self, ENTRIES, ROOT_LEVEL},
        tdp_walk::{self, MapOutcome, Releaser, TableSource, TableStore},
    },
    rwlock::{new_rwlock, ReadGuard, RwLock, WriteGuard},
};

mod ffi {
    extern "C" {
        pub(super) fn rkvm_pt_alloc() -> u64;
        pub(super) fn rkvm_phys_to_virt(phys: u64) -> *mut core::ffi::c_void;
        pub(super) fn rkvm_pt_free(phys: u64);
        pub(super) fn rkvm_pt_free_rcu(phys: u64);
        pub(super) fn rkvm_release_pfn(pfn: u64, dirty: bool);
        pub(super) fn rkvm_cpumask_alloc() -> *mut core::ffi::c_void;
        pub(super) fn rkvm_cpumask_free(mask: *mut core::ffi::c_void);
        pub(super) fn rkvm_kick_cpus_wait(mask: *mut core::ffi::c_void, cpus: *const u32, n: u32);
        pub(super) fn rkvm_rcu_barrier();
    }
}

/// Waits until every table page freed through RCU is back with the page
/// allocator (module unload: the RCU callback is module code).
pub(crate) fn rcu_barrier() {
    // SAFETY: sleeps until pending RCU callbacks ran; no preconditions.
    unsafe { ffi::rkvm_rcu_barrier() };
}

/// Proof that the page tables cannot be freed under the holder: `mmu_lock`
/// held in either mode, or exclusive ownership of the whole MMU.
trait TablesHeld {}
impl TablesHeld for ReadGuard<'_> {}
impl TablesHeld for WriteGuard<'_> {}
/// Held by `Tdp::drop`: nobody else can reach the tables.
struct Exclusive;
impl TablesHeld for Exclusive {}

/// This MMU's table pages, reached through the direct map, for as long as
/// the proof `'a` borrows keeps them from being freed.
///
/// # Invariants
///
/// Every address the walkers pass to `entries` is this MMU's root or was
/// read from a non-leaf entry of its tables, so names a table page from
/// `rkvm_pt_alloc` that is freed only after being unlinked with
/// `mmu_lock` held for write, or when the `Tdp` is dropped.
struct DirectMap<'a>(PhantomData<&'a ()>);

impl<'a> DirectMap<'a> {
    /// `_held` must be this MMU's `mmu_lock` guard (or `Exclusive` in its
    /// drop); only this file creates a `DirectMap`.
    fn new(_held: &'a impl TablesHeld) -> Self {
        Self(PhantomData)
    }
}

impl TableStore for DirectMap<'_> {
    fn entries(&self, phys: u64) -> &[AtomicU64; ENTRIES] {
        // Freeing a table needs the write lock (excluded by a read guard)
        // or ownership; `AtomicU64` has `u64`'s layout, all accesses atomic.
        // SAFETY: `phys` is a live, direct-mapped table page (invariant)
        // that cannot be freed while the borrowed proof lives.
        unsafe { &*(ffi::rkvm_phys_to_virt(phys) as *const [AtomicU64; ENTRIES]) }
    }
}

/// Drops page references and frees table pages a zap let go of.
struct KernelReleaser {
    /// Free tables through RCU (lockless readers may still look), or at
    /// once (teardown: nobody can).
    rcu: bool,
}

impl Releaser for KernelReleaser {
    fn leaf(&mut self, spte_val: u64) {
        if spte::holds_page(spte_val) {
            // SAFETY: the leaf held one reference on this page, given up
            // here exactly once (the walker cleared the entry).
            unsafe { ffi::rkvm_release_pfn(spte::pfn(spte_val), spte_val & spte::DIRTY != 0) };
        }
    }

    fn table(&mut self, phys: u64) {
        // SAFETY: the table came from `rkvm_pt_alloc`, is unlinked and
        // empty, and no TLB holds it (flushed after `cut`, or no vCPU is
        // left).
        unsafe {
            if self.rcu {
                ffi::rkvm_pt_free_rcu(phys)
            } else {
                ffi::rkvm_pt_free(phys)
            }
        }
    }
}

/// Table pages allocated before taking `mmu_lock`, where a fault cannot
/// sleep: one per level below the root is always enough for one mapping.
pub(crate) struct PtCache {
    pages: [u64; ROOT_LEVEL as usize - 1],
    len: usize,
}

impl PtCache {
    pub(crate) const fn new() -> Self {
        Self {
            pages: [0; ROOT_LEVEL as usize - 1],
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
            self.pages[self.len] = phys;
            self.len += 1;
        }
        Ok(())
    }
}

impl TableSource for PtCache {
    fn take(&mut self) -> Option<u64> {
        self.len = self.len.checked_sub(1)?;
        // The page leaves the cache to be linked into a table.
        Some(self.pages[self.len])
    }

    fn put_back(&mut self, phys: u64) {
        // The page was never linked, so it is still zero and ours.
        if let Some(slot) = self.pages.get_mut(self.len) {
            *slot = phys;
            self.len += 1;
        }
    }
}

impl Drop for PtCache {
    fn drop(&mut self) {
        for &phys in &self.pages[..self.len] {
            // SAFETY: the page came from `rkvm_pt_alloc` and was never linked.
            unsafe { ffi::rkvm_pt_free(phys) };
        }
    }
}

/// Scratch cpumask for kicking vCPUs, allocated with the VM (as KVM's
/// per-vCPU kick masks) so a zap neither allocates nor puts an
/// `NR_CPUS`-sized mask on the stack.
///
/// # Invariants
///
/// `0` came from `rkvm_cpumask_alloc`, is non-null and is freed in `drop`.
/// It is written only by `Tdp::flush_remote_tlbs`, which runs with
/// `mmu_lock` held for write, so never by two threads at once.
struct KickMask(*mut core::ffi::c_void);

// SAFETY: the mask is plain memory; the invariant says who writes it.
unsafe impl Send for KickMask {}
// SAFETY: shared access only passes the pointer on under the write lock.
unsafe impl Sync for KickMask {}

impl KickMask {
    fn new() -> Result<Self> {
        // SAFETY: allocates zeroed memory; no preconditions.
        let p = unsafe { ffi::rkvm_cpumask_alloc() };
        if p.is_null() {
            return Err(ENOMEM);
        }
        // INVARIANT: a fresh, non-null allocation owned here.
        Ok(Self(p))
    }
}

impl Drop for KickMask {
    fn drop(&mut self) {
        // SAFETY: allocated by `rkvm_cpumask_alloc` (type invariant), freed
        // once.
        unsafe { ffi::rkvm_cpumask_free(self.0) };
    }
}

/// Whether a vCPU is in guest mode, and on which CPU.
struct VcpuMode {
    in_guest: AtomicU8,
    cpu: AtomicU32,
}

/// The nested page table of one VM.
///
/// # Invariants
///
/// `root` is a table page of this MMU for its whole life; every present
/// non-leaf entry reachable from it points to another table of this MMU,
/// and every leaf with `HOLDS_PAGE` owns one reference on its page.
#[pin_data(PinnedDrop)]
pub(crate) struct Tdp {
    #[pin]
    mmu_lock: RwLock,
    /// Physical address of the root table.
    root: u64,
    /// Bumped by every zap before it kicks vCPUs; a vCPU that sees a value
    /// it has not flushed for flushes its ASID before entering the guest.
    tlb_gen: AtomicU64,
    vcpus: [VcpuMode; MAX_VCPUS],
    kick_mask: KickMask,
}

impl Tdp {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let kick_mask = KickMask::new()?;
        let mut cache = PtCache::new();
        cache.top_up()?;
        let root = cache.take().ok_or(ENOMEM)?;
        // INVARIANT: the root is a fresh table page; the tree is empty.
        Ok(try_pin_init!(Self {
            mmu_lock <- new_rwlock!("Tdp::mmu_lock"),
            root,
            tlb_gen: AtomicU64::new(0),
            kick_mask,
            vcpus: core::array::from_fn(|_| VcpuMode {
                in_guest: AtomicU8::new(0),
                cpu: AtomicU32::new(0),
            }),
        }? Error))
    }

    /// Physical address of the root table: the VMCB's nested CR3.
    pub(crate) fn root_phys(&self) -> u64 {
        self.root
    }

    /// Takes `mmu_lock` for a fault.
    pub(crate) fn read_lock(&self) -> ReadGuard<'_> {
        self.mmu_lock.read()
    }

    /// Maps `gfn` to `pfn` (writable or not). The caller holds `mmu_lock`
    /// for read and a reference on the page, which the new leaf takes over
    /// when the outcome is `Installed`.
    pub(crate) fn map(
        &self,
        held: &ReadGuard<'_>,
        gfn: u64,
        pfn: u64,
        writable: bool,
        cache: &mut PtCache,
    ) -> MapOutcome {
        tdp_walk::map(&DirectMap::new(held), self.root, gfn, pfn, writable, cache)
    }

    /// Unmaps guest frames `[start, end)` and releases their pages. When
    /// this returns, no vCPU can access them through a stale translation.
    pub(crate) fn zap_gfn_range(&self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let held = self.mmu_lock.write();
        let tables = DirectMap::new(&held);
        if tdp_walk::cut(&tables, self.root, start, end) {
            self.flush_remote_tlbs(&held);
            tdp_walk::release(
                &tables,
                self.root,
                start,
                end,
                &mut KernelReleaser { rcu: true },
            );
        }
    }

    /// Makes every vCPU drop its cached translations before it next runs
    /// guest code, and waits for those in guest mode to leave it.
    fn flush_remote_tlbs(&self, _held: &WriteGuard<'_>) {
        // SeqCst pairs with `enter_guest`: either the vCPU sees the new
        // generation, or this sees it in guest mode and kicks it.
        self.tlb_gen.fetch_add(1, Ordering::SeqCst);
        let mut cpus = [0u32; MAX_VCPUS];
        let mut n = 0;
        for m in &self.vcpus {
            if m.in_guest.load(Ordering::SeqCst) != 0 {
                cpus[n] = m.cpu.load(Ordering::Relaxed);
                n += 1;
            }
        }
        if n > 0 {
            // IRQs are on (mmu_lock does not disable them) and vCPUs never
            // spin on mmu_lock with IRQs off, so waiting cannot deadlock.
            // SAFETY: `cpus[..n]` is valid (bad ids are ignored); the mask
            // is ours alone under the write lock `_held` (see `KickMask`).
            unsafe { ffi::rkvm_kick_cpus_wait(self.kick_mask.0, cpus.as_ptr(), n as u32) };
        }
    }

    /// vCPU `idx` is about to enter the guest on `cpu` (IRQs off). Returns
    /// the TLB generation to compare with the one it last flushed for.
    pub(crate) fn enter_guest(&self, idx: usize, cpu: u32) -> u64 {
        if let Some(m) = self.vcpus.get(idx) {
            m.cpu.store(cpu, Ordering::Relaxed);
            m.in_guest.store(1, Ordering::SeqCst);
        }
        self.tlb_gen.load(Ordering::SeqCst)
    }

    /// vCPU `idx` left the guest.
    pub(crate) fn exit_guest(&self, idx: usize) {
        if let Some(m) = self.vcpus.get(idx) {
            m.in_guest.store(0, Ordering::Release);
        }
    }
}

#[pinned_drop]
impl PinnedDrop for Tdp {
    fn drop(self: Pin<&mut Self>) {
        // No vCPU is left (each holds the VM), so nothing walks the tables.
        tdp_walk::free_all(
            &DirectMap::new(&Exclusive),
            self.root,
            &mut KernelReleaser { rcu: false },
        );
        // SAFETY: the root belongs to this MMU (type invariant) and is
        // unreachable now.
        unsafe { ffi::rkvm_pt_free(self.root) };
    }
}
