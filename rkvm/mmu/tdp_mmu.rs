// SPDX-License-Identifier: GPL-2.0

//! The TDP MMU's operations on its tables, over the iterator of
//! `tdp_iter.rs` and an abstract store of table pages: map a frame (a
//! fault), zap a range (yielding `mmu_lock` as it goes), free everything
//! (teardown). The same code runs in the kernel (`tdp.rs`), in host tests
//! with threads racing on tables in a vector, and in the loom model.
//!
//! # The one door for SPTE changes
//!
//! Every change of an SPTE goes through [`set_spte_atomic`] (`mmu_lock`
//! held for read: compare-and-exchange, fails if the entry is frozen or
//! changed since it was read) or [`set_spte`] (`mmu_lock` held for write:
//! an exchange, as the CPU may set A/D meanwhile), and both hand the old
//! and new values to [`handle_changed_spte`], the one change handler:
//!
//! - A leaf that goes away, or changes page, gives its page reference back
//!   (dirty if it was writable and dirty): through [`ChangeOps`], which
//!   releases it only after the next TLB flush, since a vCPU may still
//!   reach the page through its TLB until then.
//! - A table that goes away is detached: each of its entries is frozen
//!   (exchanged for [`Spte::FROZEN`]) and handled the same way, then the
//!   table is freed through RCU.
//! - It says whether a TLB flush is needed: when a translation went away
//!   or lost write permission, not when one was added or widened (the CPU
//!   drops a stale entry when the access faults).
//! - It counts the present leaves of each size ([`LeafCounts`]).
//!
//! Who may call what (locking.rst): [`map`] with `mmu_lock` held for read;
//! [`zap_range`] with it held for write (its [`ZapOps`] yields it);
//! [`free_all`] with exclusive ownership of the tables.
//!
//! Pure logic (only `core`), tested on the host.

use super::{
    atomic::{AtomicU64, Ordering},
    spte::{self, LeafAction, Spte, SpteFormat, PG_LEVEL_4K},
    tdp_iter::{SptePtr, TableStore, TdpIter},
    types::{Gfn, Hpa, Pfn},
};

/// Zeroed table pages for a fault, allocated before `mmu_lock` is taken.
pub(crate) trait TableSource {
    fn take(&mut self) -> Option<Hpa>;
    /// Gives back a page that was never linked (still zero).
    fn put_back(&mut self, table: Hpa);
}

/// What the change handler hands to the kernel.
pub(crate) trait ChangeOps {
    /// A leaf mapping `pfn` is gone: drop the page reference it held
    /// (marking the page dirty if `dirty`), but only after the TLB flush
    /// the handler asked for.
    fn release_page(&mut self, pfn: Pfn, dirty: bool);
    /// A detached table whose entries are all frozen: free it through RCU
    /// (lockless walkers may still be looking). The caller flushes the TLBs
    /// before the grace period can end, i.e. before dropping `mmu_lock`.
    fn free_table(&mut self, table: Hpa);
    /// A leaf through which `pfn` was written lost its write permission
    /// (or its dirty bit) but still maps it: mark the page dirty now. The
    /// host still maps the page (an invalidation zaps before the host
    /// unmaps), and a write through a stale TLB entry before the flush
    /// lands in a page already marked dirty.
    fn mark_dirty(&mut self, pfn: Pfn);
    /// Where the present leaves are counted, if anywhere.
    fn leaf_counts(&self) -> Option<&LeafCounts> {
        None
    }
}

/// The present leaves of a tree by size: 4 KiB, 2 MiB, 1 GiB (KVM's
/// `pages_4k`, `pages_2m`, `pages_1g` statistics). The change handler
/// counts a leaf when its entry changes, so a count may briefly lag a
/// concurrent change (and go below zero in between: a leaf removed by one
/// thread before the thread that installed it counted it).
pub(crate) struct LeafCounts([AtomicU64; 3]);

impl LeafCounts {
    pub(crate) fn new() -> Self {
        Self(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// Present leaves at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB).
    pub(crate) fn get(&self, level: u32) -> u64 {
        match self.0.get(level as usize - 1) {
            // Wrapping arithmetic: a transient negative count reads as 0.
            Some(c) => (c.load(Ordering::Relaxed) as i64).max(0) as u64,
            None => 0,
        }
    }

    fn add(&self, level: u32, added: bool) {
        if let Some(c) = self.0.get(level as usize - 1) {
            let delta = if added { 1 } else { u64::MAX };
            c.fetch_add(delta, Ordering::Relaxed);
        }
    }
}

/// A zap's kernel side: the change handler's operations, plus yielding.
/// Implemented only by holders of `mmu_lock` for write.
pub(crate) trait ZapOps: ChangeOps {
    /// Whether someone needs the CPU or the lock.
    fn should_yield(&mut self) -> bool;
    /// Flushes the TLBs if `flush` and releases the pages waiting for it,
    /// then drops `mmu_lock`, reschedules and takes it again.
    fn yield_lock(&mut self, flush: bool);
}

/// Why [`set_spte_atomic`] did not change the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Busy;

/// The change handler (KVM's `handle_changed_spte`): `old` at `level`,
/// covering frames from `gfn`, became `new`. Returns whether a TLB flush is
/// needed before what it released may be reused.
pub(crate) fn handle_changed_spte<F: SpteFormat, S: TableStore>(
    store: &S,
    ops: &mut impl ChangeOps,
    gfn: Gfn,
    level: u32,
    old: Spte,
    new: Spte,
) -> bool {
    if old == new {
        return false;
    }
    let was_leaf = old.is_shadow_present() && old.is_last(level);
    let is_leaf = new.is_shadow_present() && new.is_last(level);
    if was_leaf != is_leaf {
        if let Some(counts) = ops.leaf_counts() {
            counts.add(level, is_leaf);
        }
    }
    if !old.is_shadow_present() {
        // Empty or frozen -> anything: nothing was mapped.
        return false;
    }
    let new_present = new.is_shadow_present();
    if old.is_last(level) {
        if !new_present || !new.is_last(level) || new.pfn() != old.pfn() {
            ops.release_page(old.pfn(), F::is_dirty(old));
            return true;
        }
        // Same page: what was written through it must not be forgotten,
        // and a flush is needed only if write permission went away.
        if F::is_dirty(old) && !F::is_dirty(new) {
            ops.mark_dirty(old.pfn());
        }
        return F::is_writable(old) && !F::is_writable(new);
    }
    let child = old.child(level);
    if new_present && new.child(level) == child {
        return false;
    }
    if let Some(child) = child {
        handle_removed_table::<F, S>(store, ops, child, level - 1, gfn);
    }
    true
}

/// A table detached from the tree (KVM's `handle_removed_pt`): freezes
/// and handles each entry, then frees the table. Each entry is exchanged,
/// not just stored: the CPU may set A/D in it until the TLB flush, and a
/// lockless walker may still be about to change it.
fn handle_removed_table<F: SpteFormat, S: TableStore>(
    store: &S,
    ops: &mut impl ChangeOps,
    table: Hpa,
    level: u32,
    base: Gfn,
) {
    for idx in 0..spte::ENTRIES {
        let old = write_spte(store, SptePtr { table, idx }, Spte::FROZEN);
        let gfn = base.add(idx as u64 * spte::frames_per_entry(level));
        handle_changed_spte::<F, S>(store, ops, gfn, level, old, Spte::FROZEN);
    }
    ops.free_table(table);
}

/// Changes the entry the iterator stands on from `iter.old_spte()` to
/// `new` by compare-and-exchange, `mmu_lock` held for read (KVM's
/// `tdp_mmu_set_spte_atomic`). On failure (frozen, or changed since read)
/// the iterator holds the current value and nothing changed. On success,
/// returns whether a TLB flush is needed.
pub(crate) fn set_spte_atomic<F: SpteFormat, S: TableStore>(
    iter: &mut TdpIter<'_, S>,
    new: Spte,
    ops: &mut impl ChangeOps,
) -> Result<bool, Busy> {
    let old = iter.old_spte();
    if old.is_frozen() {
        return Err(Busy);
    }
    let store = iter.store();
    // Release: a table linked here is seen initialised; Acquire on
    // failure: the winner's table likewise.
    match iter.sptep().get(store).compare_exchange(
        old.0,
        new.0,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            iter.set_old_spte(new);
            Ok(handle_changed_spte::<F, S>(
                store,
                ops,
                iter.gfn(),
                iter.level(),
                old,
                new,
            ))
        }
        Err(cur) => {
            iter.set_old_spte(Spte(cur));
            Err(Busy)
        }
    }
}

/// Changes the entry the iterator stands on to `new`, `mmu_lock` held for
/// write (KVM's `tdp_mmu_set_spte`). Returns whether a TLB flush is needed.
pub(crate) fn set_spte<F: SpteFormat, S: TableStore>(
    iter: &mut TdpIter<'_, S>,
    new: Spte,
    ops: &mut impl ZapOps,
) -> bool {
    let store = iter.store();
    let old = write_spte(store, iter.sptep(), new);
    // Only a thread holding the write lock freezes an entry it does not
    // finish with before unlocking.
    debug_assert!(!old.is_frozen());
    iter.set_old_spte(new);
    handle_changed_spte::<F, S>(store, ops, iter.gfn(), iter.level(), old, new)
}

/// The store of the write-locked paths (and of the change handler's
/// freezing): an exchange, so that A/D bits the CPU sets meanwhile are
/// not lost. With `set_spte_atomic`'s compare-and-exchange, the only
/// writes to an SPTE.
fn write_spte<S: TableStore>(store: &S, at: SptePtr, new: Spte) -> Spte {
    Spte(at.get(store).swap(new.0, Ordering::AcqRel))
}

/// What became of a page a fault resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapOutcome {
    /// The new leaf holds the page reference now.
    Installed,
    /// The gfn was already mapped well enough (or was widened to writable
    /// in place): the caller must drop its page reference.
    AlreadyMapped,
    /// Something changed under the fault: drop the reference, fault again.
    Retry,
    /// A table sits where the large leaf asked for goes (the host mapped
    /// the range with small pages before, then collapsed them): the caller
    /// zaps the range the leaf covers, with `mmu_lock` held for write, and
    /// faults again. A fault never frees tables itself: under the read lock
    /// it could not flush the TLBs that may still cache the table's
    /// entries before the table is reused.
    TableInTheWay,
}

/// The change handler's operations for a fault: a fault only fills empty
/// entries or widens a leaf of the same page, so the handler never
/// releases anything for it; it counts the leaves it adds.
struct FaultOps<'a>(Option<&'a LeafCounts>);

impl ChangeOps for FaultOps<'_> {
    fn release_page(&mut self, _pfn: Pfn, _dirty: bool) {
        debug_assert!(false, "a fault replaced a mapped page");
    }
    fn free_table(&mut self, _table: Hpa) {
        debug_assert!(false, "a fault detached a table");
    }
    fn mark_dirty(&mut self, _pfn: Pfn) {
        debug_assert!(false, "a fault took write permission away");
    }
    fn leaf_counts(&self) -> Option<&LeafCounts> {
        self.0
    }
}

/// Maps `gfn` to `pfn` (4 KiB, writable or not) in the tree under `root`,
/// taking missing tables from `source`. `mmu_lock` held for read. (The
/// tests' and the loom model's shorthand for `map_at`.)
#[cfg_attr(not(any(test, loom)), allow(dead_code))]
pub(crate) fn map<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    gfn: Gfn,
    pfn: Pfn,
    writable: bool,
    source: &mut impl TableSource,
) -> MapOutcome {
    map_at::<F, S>(store, root, root_level, gfn, pfn, writable, PG_LEVEL_4K, source, None)
}

/// Guest frames one leaf maps at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB).
pub(crate) const fn pages_at_level(level: u32) -> u64 {
    1 << (9 * (level - 1))
}

/// Maps `gfn` to `pfn` with a leaf at `level` (a 2 MiB or 1 GiB leaf
/// covers the aligned block of frames around them, which the caller has
/// checked the host maps with one page of that size), counting the leaves
/// it adds in `counts`. If a table already sits where the large leaf
/// goes, nothing changes and the answer is [`MapOutcome::TableInTheWay`].
/// `mmu_lock` held for read.
#[allow(clippy::too_many_arguments)]
pub(crate) fn map_at<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    gfn: Gfn,
    pfn: Pfn,
    writable: bool,
    level: u32,
    source: &mut impl TableSource,
    counts: Option<&LeafCounts>,
) -> MapOutcome {
    let ops = &mut FaultOps(counts);
    let mut iter = TdpIter::new(store, root, root_level, PG_LEVEL_4K, gfn, gfn.add(1));
    while iter.valid() {
        let here = iter.level();
        let old = iter.old_spte();
        let is_table = old.child(here).is_some();
        if here == level && here > PG_LEVEL_4K && is_table {
            return MapOutcome::TableInTheWay;
        }
        if here == level || here == PG_LEVEL_4K {
            let mask = pages_at_level(here) - 1;
            return map_leaf::<F, S>(&mut iter, Pfn(pfn.0 & !mask), writable, here, ops);
        }
        if old == Spte::EMPTY {
            let Some(table) = source.take() else {
                return MapOutcome::Retry;
            };
            if set_spte_atomic::<F, S>(&mut iter, F::table(table), ops).is_err() {
                source.put_back(table);
            }
        }
        // A table (ours or a racing fault's) is stepped into; anything
        // else (frozen, a large leaf above the level asked for) ends the
        // walk at this level.
        if iter.old_spte().child(here).is_none() {
            return MapOutcome::Retry;
        }
        iter.next();
    }
    MapOutcome::Retry
}

fn map_leaf<F: SpteFormat, S: TableStore>(
    iter: &mut TdpIter<'_, S>,
    pfn: Pfn,
    writable: bool,
    level: u32,
    ops: &mut FaultOps<'_>,
) -> MapOutcome {
    let large = if level > PG_LEVEL_4K { spte::LARGE } else { 0 };
    loop {
        let old = iter.old_spte();
        let (new, outcome) = match spte::leaf_action::<F>(old, pfn, writable) {
            LeafAction::Install => (Spte(F::leaf(pfn, writable).0 | large), MapOutcome::Installed),
            // The TLB may hold the read-only translation; the CPU drops it
            // when the write faults, so no flush is needed to widen. The
            // leaf keeps its size.
            LeafAction::MakeWritable => (
                Spte(F::leaf(pfn, true).0 | (old.0 & spte::LARGE)),
                MapOutcome::AlreadyMapped,
            ),
            // Present to the hardware again (an access-tracked leaf keeps
            // its page); no flush either.
            LeafAction::Restore => (
                Spte(F::leaf(pfn, writable).0 | (old.0 & spte::LARGE)),
                MapOutcome::AlreadyMapped,
            ),
            LeafAction::AlreadyMapped => return MapOutcome::AlreadyMapped,
            LeafAction::Retry => return MapOutcome::Retry,
        };
        match set_spte_atomic::<F, S>(iter, new, ops) {
            Ok(flush) => {
                debug_assert!(!flush);
                return outcome;
            }
            // Decide again on the value that won.
            Err(Busy) => continue,
        }
    }
}

/// The fast page fault (KVM's `fast_page_fault`): fixes, with one
/// compare-and-exchange and without `mmu_lock`, a fault on a leaf that is
/// only protected for tracking: a `write` to a present leaf that is
/// host- and MMU-writable (write-protected for dirty logging), and any
/// access to an access-tracked leaf (restored; made writable too for a
/// write, under the same condition). The caller holds an RCU read section
/// (tables are freed only through RCU), so the walk's tables stay. The
/// leaf keeps its page, so nothing is released and no flush is needed
/// (the CPU drops a translation whose use faulted).
///
/// Returns `None` if the fault needs the locked path (nothing mapped, a
/// frozen entry, a leaf the MMU or the host does not let the guest write,
/// or a lost race), else `Some(made_writable)`: the leaf is as the access
/// needs it now (perhaps fixed by a racing vCPU: a spurious fault), and
/// whether this call gave it write permission, which the caller logs.
pub(crate) fn fast_fault<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    gfn: Gfn,
    write: bool,
) -> Option<bool> {
    let mut iter = TdpIter::new(store, root, root_level, PG_LEVEL_4K, gfn, gfn.add(1));
    while iter.valid() {
        let old = iter.old_spte();
        let level = iter.level();
        if old.is_shadow_present() && old.is_last(level) {
            let mut new = F::restored(old);
            if !F::is_hw_present(new) {
                return None;
            }
            let make_writable = write && !F::is_writable(new);
            if make_writable {
                if !F::is_host_writable(new) || !F::is_mmu_writable(new) {
                    return None;
                }
                new = Spte(new.0 | F::WRITABLE | F::DIRTY);
            }
            if new == old {
                return Some(false);
            }
            // One try: a lost race goes the locked way, which decides on
            // whatever won.
            return set_spte_atomic::<F, S>(&mut iter, new, &mut FaultOps(None))
                .ok()
                .map(|_| make_writable);
        }
        // Down a table; anything else (empty, frozen) needs the locked path.
        old.child(level)?;
        iter.next();
    }
    None
}

/// Page aging: whether any leaf mapping guest frames `[start, end)` was
/// used since it was last made old (`SpteFormat::is_young`), making the
/// young ones old if `clear` (`SpteFormat::aged`: the accessed bit
/// cleared with hardware accessed bits, `hw_ad`, else the leaf
/// access-tracked), through the SPTE door: the same page stays mapped, so
/// nothing is released, and a leaf that loses write permission has its
/// page marked dirty through `ops`. `mmu_lock` held for read. Returns
/// (young, whether a TLB flush is needed to make the change seen).
#[allow(clippy::too_many_arguments)]
pub(crate) fn age_range<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    start: Gfn,
    end: Gfn,
    clear: bool,
    hw_ad: bool,
    ops: &mut impl ChangeOps,
) -> (bool, bool) {
    let (mut young, mut flush) = (false, false);
    let mut iter = TdpIter::new(store, root, root_level, PG_LEVEL_4K, start, end);
    while iter.valid() {
        loop {
            let old = iter.old_spte();
            if !old.is_shadow_present() || !old.is_last(iter.level()) || !F::is_young(old, hw_ad) {
                break;
            }
            young = true;
            if !clear {
                break;
            }
            if let Ok(f) = set_spte_atomic::<F, S>(&mut iter, F::aged(old, hw_ad), ops) {
                flush |= f;
                break;
            }
            // Changed under us (the CPU set D, a fault widened it): again.
        }
        iter.next();
    }
    (young, flush)
}

/// Unmaps guest frames `[start, end)` in the tree under `root`, with
/// `mmu_lock` held for write, and frees the tables wholly inside it.
/// Returns whether a TLB flush is still needed (then the caller flushes
/// and releases what `ops` holds, before dropping `mmu_lock`).
///
/// The work done with the lock held is bounded: the walk yields through
/// `ops` when asked to (flushing first, as pages and tables it released
/// must not be reused while a TLB may reach them), and one step never
/// handles more than one table's worth of entries. For that it goes
/// bottom-up, one level per pass (as KVM's `tdp_mmu_zap_root`): first the
/// leaves, then the tables of each level wholly in the range, which by
/// then hold only what faults added while the walk yielded.
pub(crate) fn zap_range<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    start: Gfn,
    end: Gfn,
    ops: &mut impl ZapOps,
) -> bool {
    let mut flush = false;
    for target in PG_LEVEL_4K..=root_level {
        let mut iter = TdpIter::new(store, root, root_level, target, start, end);
        while iter.valid() {
            if yield_if_asked(&mut iter, ops, &mut flush) {
                continue;
            }
            let old = iter.old_spte();
            if iter.level() == target
                && old.is_shadow_present()
                && (old.is_last(target) || iter.covered_by(start, end))
            {
                flush |= set_spte::<F, S>(&mut iter, Spte::EMPTY, ops);
            }
            iter.next();
        }
    }
    flush
}

/// A write-locked walk's yield point: if the walk may yield here and
/// someone needs the CPU or the lock, yields through `ops` (flushing first
/// if `*flush`: what the walk released must not be reused while a TLB may
/// reach it) and moves the walk on, to restart from the root. Returns
/// whether it yielded.
fn yield_if_asked<S: TableStore>(
    iter: &mut TdpIter<'_, S>,
    ops: &mut impl ZapOps,
    flush: &mut bool,
) -> bool {
    if !(iter.can_yield() && ops.should_yield()) {
        return false;
    }
    ops.yield_lock(*flush);
    *flush = false;
    iter.mark_yielded();
    iter.next();
    true
}

/// Write-protects, in the tree under `root`, the 4 KiB leaves mapping
/// guest frames `[start, end)` that `want` picks (dirty logging: a write
/// then faults, and is logged). A slot that logs is mapped 4 KiB at a
/// time: a larger leaf there is split into a table of smaller ones (KVM's
/// eager page splitting: the vCPUs need not fault the block back in),
/// with tables from `split`, walked again and so protected as well; with
/// none left, it is zapped. `mmu_lock` held for write; yields through
/// `ops` as [`zap_range`] does. Every change goes through the SPTE door,
/// which marks a page dirty if it was written through a leaf that loses
/// W. Returns whether a TLB flush is still needed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_protect<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    start: Gfn,
    end: Gfn,
    want: impl Fn(Gfn) -> bool,
    split: &mut impl TableSource,
    ops: &mut impl ZapOps,
) -> bool {
    let mut flush = false;
    let mut iter = TdpIter::new(store, root, root_level, PG_LEVEL_4K, start, end);
    while iter.valid() {
        if yield_if_asked(&mut iter, ops, &mut flush) {
            continue;
        }
        let old = iter.old_spte();
        let level = iter.level();
        if old.is_shadow_present() && old.is_last(level) {
            if level > PG_LEVEL_4K {
                let new = match split.take() {
                    Some(table) => split_large_leaf::<F, S>(store, table, iter.gfn(), level, old, ops),
                    None => Spte::EMPTY,
                };
                // A split is walked into next, and its leaves protected.
                flush |= set_spte::<F, S>(&mut iter, new, ops);
            } else if F::is_writable(old) && want(iter.gfn()) {
                flush |= set_spte::<F, S>(&mut iter, Spte(old.0 & !F::WRITABLE), ops);
            }
        }
        iter.next();
    }
    flush
}

/// Table pages [`write_protect`] needs to split every large leaf mapping
/// guest frames `[start, end)`: one per 2 MiB leaf, 513 per 1 GiB leaf
/// (its 2 MiB children are split in turn). `mmu_lock` held for read; an
/// estimate for the allocation that comes before the write lock.
pub(crate) fn tables_to_split<S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    start: Gfn,
    end: Gfn,
) -> usize {
    let mut n = 0;
    let mut iter = TdpIter::new(store, root, root_level, PG_LEVEL_4K, start, end);
    while iter.valid() {
        let (old, level) = (iter.old_spte(), iter.level());
        if level > PG_LEVEL_4K && old.is_shadow_present() && old.is_last(level) {
            n += if level == PG_LEVEL_4K + 1 { 1 } else { 1 + spte::ENTRIES };
        }
        iter.next();
    }
    n
}

/// Fills the fresh table page `table` with the leaves that map what large
/// leaf `large` at `level` (covering frames from `gfn`) maps, through the
/// change handler (so they are counted), and returns the entry that links
/// it: the caller puts it in the large leaf's place. The handler then sees
/// the large leaf go (its page marked dirty if written, a flush asked
/// for); the smaller leaves keep its permissions until protected.
fn split_large_leaf<F: SpteFormat, S: TableStore>(
    store: &S,
    table: Hpa,
    gfn: Gfn,
    level: u32,
    large: Spte,
    ops: &mut impl ChangeOps,
) -> Spte {
    for i in 0..spte::ENTRIES {
        let child = spte::split_child(large, level, i);
        // Not linked yet: nobody else sees the table until `set_spte`
        // publishes it (with release ordering).
        store.entry(table, i).store(child.0, Ordering::Relaxed);
        let at = gfn.add(i as u64 * spte::frames_per_entry(level - 1));
        handle_changed_spte::<F, S>(store, ops, at, level - 1, Spte::EMPTY, child);
    }
    F::table(table)
}

/// The change handler's operations of a teardown, in a wrapper that never
/// yields: nobody else can reach the tables.
struct Teardown<'a, O: ChangeOps>(&'a mut O);

impl<O: ChangeOps> ChangeOps for Teardown<'_, O> {
    fn release_page(&mut self, pfn: Pfn, dirty: bool) {
        self.0.release_page(pfn, dirty)
    }
    fn free_table(&mut self, table: Hpa) {
        self.0.free_table(table)
    }
    fn mark_dirty(&mut self, pfn: Pfn) {
        self.0.mark_dirty(pfn)
    }
}

impl<O: ChangeOps> ZapOps for Teardown<'_, O> {
    fn should_yield(&mut self) -> bool {
        false
    }
    fn yield_lock(&mut self, _flush: bool) {}
}

/// Releases every leaf under `root` and frees every table below it; the
/// root itself stays (empty). The caller owns the tables exclusively.
pub(crate) fn free_all<F: SpteFormat, S: TableStore>(
    store: &S,
    root: Hpa,
    root_level: u32,
    ops: &mut impl ChangeOps,
) {
    let mut ops = Teardown(ops);
    let mut iter = TdpIter::new(store, root, root_level, root_level, Gfn(0), Gfn(u64::MAX));
    while iter.valid() {
        if iter.old_spte() != Spte::EMPTY {
            set_spte::<F, S>(&mut iter, Spte::EMPTY, &mut ops);
        }
        iter.next();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::mmu::{
        atomic::AtomicU64,
        spte::{Ept, Npt, ENTRIES, ROOT_LEVEL},
    };
    use std::{boxed::Box, sync::Mutex, vec::Vec};

    /// Table pages in a vector: page `i` is at host physical address
    /// `(i + 1) << 12`; page 0 is the root.
    struct Store {
        pages: Vec<Box<[AtomicU64; ENTRIES]>>,
        free: Mutex<Vec<Hpa>>,
    }

    const ROOT: Hpa = Hpa(1 << 12);

    impl Store {
        fn new(n: usize) -> Self {
            let pages = (0..n)
                .map(|_| Box::new(core::array::from_fn(|_| AtomicU64::new(0))))
                .collect();
            Self {
                pages,
                free: Mutex::new((1..n as u64).rev().map(|i| Hpa((i + 1) << 12)).collect()),
            }
        }

        fn cache(&self, n: usize) -> Cache<'_> {
            Cache {
                store: self,
                pages: Vec::new(),
                want: n,
            }
        }

        fn free_count(&self) -> usize {
            self.free.lock().unwrap().len()
        }

        fn table(&self, t: Hpa) -> &[AtomicU64; ENTRIES] {
            &self.pages[(t.0 >> 12) as usize - 1]
        }

        fn leaf(&self, gfn: u64) -> Spte {
            let gfn = Gfn(gfn);
            let mut t = ROOT;
            for level in (2..=ROOT_LEVEL).rev() {
                let e = Spte(self.table(t)[spte::index(gfn, level)].load(Ordering::Relaxed));
                match e.child(level) {
                    Some(c) => t = c,
                    None => return Spte::EMPTY,
                }
            }
            Spte(self.table(t)[spte::index(gfn, 1)].load(Ordering::Relaxed))
        }

        fn map(&self, gfn: u64, pfn: u64, w: bool, c: &mut Cache<'_>) -> MapOutcome {
            map::<Npt, _>(self, ROOT, ROOT_LEVEL, Gfn(gfn), Pfn(pfn), w, c)
        }
    }

    impl TableStore for Store {
        fn entry(&self, table: Hpa, idx: usize) -> &AtomicU64 {
            &self.table(table)[idx]
        }
    }

    /// A fault's cache: tops up from the store's free list, as `PtCache`.
    struct Cache<'a> {
        store: &'a Store,
        pages: Vec<Hpa>,
        want: usize,
    }

    impl Cache<'_> {
        fn top_up(&mut self) {
            let mut free = self.store.free.lock().unwrap();
            while self.pages.len() < self.want {
                self.pages.push(free.pop().expect("test store too small"));
            }
        }
    }

    impl TableSource for Cache<'_> {
        fn take(&mut self) -> Option<Hpa> {
            self.pages.pop()
        }
        fn put_back(&mut self, t: Hpa) {
            assert!(self
                .store
                .table(t)
                .iter()
                .all(|e| e.load(Ordering::Relaxed) == 0));
            self.pages.push(t);
        }
    }

    impl Drop for Cache<'_> {
        fn drop(&mut self) {
            self.store.free.lock().unwrap().extend(self.pages.drain(..));
        }
    }

    /// Records what is released; tables go back to the store, zeroed.
    /// Yields every `yield_every` steps, if not 0.
    struct Recorder<'a> {
        store: &'a Store,
        /// Released pages, with their dirty flag.
        pages: Vec<(Pfn, bool)>,
        /// Pages released before a flush covered them.
        unflushed: usize,
        tables: usize,
        yield_every: usize,
        steps: usize,
        yields: usize,
        counts: Option<&'a LeafCounts>,
        /// Pages marked dirty while still mapped.
        dirtied: Vec<Pfn>,
    }

    impl ChangeOps for Recorder<'_> {
        fn release_page(&mut self, pfn: Pfn, dirty: bool) {
            self.pages.push((pfn, dirty));
            self.unflushed += 1;
        }
        fn free_table(&mut self, t: Hpa) {
            let entries = self.store.table(t);
            assert!(entries
                .iter()
                .all(|e| Spte(e.load(Ordering::Relaxed)).is_frozen()));
            for e in entries {
                e.store(0, Ordering::Relaxed);
            }
            self.tables += 1;
            self.store.free.lock().unwrap().push(t);
        }
        fn mark_dirty(&mut self, pfn: Pfn) {
            self.dirtied.push(pfn);
        }
        fn leaf_counts(&self) -> Option<&LeafCounts> {
            self.counts
        }
    }

    impl ZapOps for Recorder<'_> {
        fn should_yield(&mut self) -> bool {
            self.steps += 1;
            self.yield_every != 0 && self.steps % self.yield_every == 0
        }
        fn yield_lock(&mut self, flush: bool) {
            assert!(flush || self.unflushed == 0, "yielded with pages unflushed");
            self.unflushed = 0;
            self.yields += 1;
        }
    }

    fn recorder(store: &Store) -> Recorder<'_> {
        Recorder {
            store,
            pages: Vec::new(),
            unflushed: 0,
            tables: 0,
            yield_every: 0,
            steps: 0,
            yields: 0,
            counts: None,
            dirtied: Vec::new(),
        }
    }

    fn zap(store: &Store, start: u64, end: u64) -> Recorder<'_> {
        let mut r = recorder(store);
        let flush = zap_range::<Npt, _>(store, ROOT, ROOT_LEVEL, Gfn(start), Gfn(end), &mut r);
        assert_eq!(flush, r.unflushed != 0);
        r
    }

    fn pfns(r: &Recorder<'_>) -> Vec<u64> {
        r.pages.iter().map(|p| p.0 .0).collect()
    }

    #[test]
    fn iterator_walks_in_pre_order() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        for gfn in [0, 1, 512 + 3] {
            c.top_up();
            assert_eq!(s.map(gfn, 100 + gfn, false, &mut c), MapOutcome::Installed);
        }
        let mut seen = Vec::new();
        let mut it = TdpIter::new(&s, ROOT, ROOT_LEVEL, 1, Gfn(0), Gfn(1024));
        while it.valid() {
            if it.old_spte().is_shadow_present() {
                seen.push((it.level(), it.gfn().0));
            }
            it.next();
        }
        assert_eq!(
            seen,
            [(4, 0), (3, 0), (2, 0), (1, 0), (1, 1), (2, 512), (1, 515)]
        );
        // A walk stopped at level 2 and one that starts mid-table.
        let mut it = TdpIter::new(&s, ROOT, ROOT_LEVEL, 2, Gfn(600), Gfn(2048));
        assert_eq!((it.level(), it.gfn()), (4, Gfn(0)));
        it.next();
        it.next();
        assert_eq!((it.level(), it.gfn()), (2, Gfn(512)));
        it.next();
        assert_eq!((it.level(), it.gfn()), (2, Gfn(1024)));
        assert!(!it.old_spte().is_shadow_present());
    }

    #[test]
    fn iterator_restarts_where_it_yielded() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        for gfn in 0..8 {
            c.top_up();
            s.map(gfn, gfn, true, &mut c);
        }
        let mut it = TdpIter::new(&s, ROOT, ROOT_LEVEL, 1, Gfn(0), Gfn(8));
        // At the start, yielding would make no progress.
        assert!(!it.can_yield());
        for _ in 0..3 + 3 {
            it.next();
        }
        assert_eq!((it.level(), it.gfn()), (1, Gfn(3)));
        assert!(it.can_yield());
        it.mark_yielded();
        it.next();
        // From the root again, down to where it was.
        assert_eq!((it.level(), it.gfn()), (4, Gfn(0)));
        assert!(!it.can_yield());
        for _ in 0..3 {
            it.next();
        }
        assert_eq!((it.level(), it.gfn()), (1, Gfn(3)));
    }

    /// The entry at `level` on the path to `gfn` (a large leaf there).
    fn entry_at(s: &Store, gfn: u64, level: u32) -> Spte {
        let gfn = Gfn(gfn);
        let mut t = ROOT;
        for l in (level + 1..=ROOT_LEVEL).rev() {
            match Spte(s.table(t)[spte::index(gfn, l)].load(Ordering::Relaxed)).child(l) {
                Some(c) => t = c,
                None => return Spte::EMPTY,
            }
        }
        Spte(s.table(t)[spte::index(gfn, level)].load(Ordering::Relaxed))
    }

    #[test]
    fn large_leaves() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        c.top_up();
        // A 2 MiB leaf for frame 0x1234 maps the aligned block 0x1200..0x1400
        // to the aligned pfns, with two tables below the root.
        let counts = LeafCounts::new();
        let out = map_at::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0x1234), Pfn(0x5634), false, 2, &mut c, Some(&counts));
        assert_eq!(out, MapOutcome::Installed);
        assert_eq!(c.pages.len(), 1, "no last-level table");
        assert_eq!((counts.get(1), counts.get(2)), (0, 1));
        let e = entry_at(&s, 0x1234, 2);
        assert!(e.is_last(2) && e.pfn() == Pfn(0x5600) && !Npt::is_writable(e));
        // Another frame of the block: already mapped; a write widens it and
        // keeps it large.
        let again = |w| map_at::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0x13ff), Pfn(0x57ff), w, 2, &mut s.cache(0), Some(&counts));
        assert_eq!(again(false), MapOutcome::AlreadyMapped);
        assert_eq!(again(true), MapOutcome::AlreadyMapped);
        assert_eq!(counts.get(2), 1, "widened, not added");
        let e = entry_at(&s, 0x1200, 2);
        assert!(e.is_last(2) && Npt::is_writable(e));
        // A 4 KiB fault inside a large leaf waits for the zap that must come.
        assert_eq!(s.map(0x1300, 0x9999, false, &mut s.cache(0)), MapOutcome::Retry);
        // Zapping one frame of it zaps the whole leaf, once.
        let r = zap(&s, 0x1300, 0x1301);
        assert_eq!(pfns(&r), [0x5600]);
        assert_eq!(entry_at(&s, 0x1234, 2), Spte::EMPTY);
        // Where 4 KiB mappings already have a table, a large fault changes
        // nothing and asks for the table to be zapped first; then it maps.
        c.top_up();
        assert_eq!(s.map(0x1400, 0x100, false, &mut c), MapOutcome::Installed);
        let large = |c: &mut Cache<'_>| {
            map_at::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0x1401), Pfn(0x7001), false, 2, c, Some(&counts))
        };
        assert_eq!(large(&mut c), MapOutcome::TableInTheWay);
        assert_eq!(s.leaf(0x1400).pfn(), Pfn(0x100));
        let r = zap(&s, 0x1400, 0x1600);
        assert_eq!((pfns(&r), r.tables), (std::vec![0x100], 1), "the leaf and its table");
        assert_eq!(large(&mut c), MapOutcome::Installed);
        let e = entry_at(&s, 0x1401, 2);
        assert!(e.is_last(2) && e.pfn() == Pfn(0x7000));
    }

    #[test]
    fn write_protection_for_dirty_logging() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        for gfn in [0x10, 0x11, 0x12] {
            c.top_up();
            s.map(gfn, 0x100 + gfn, true, &mut c);
        }
        c.top_up();
        s.map(0x13, 0x200, false, &mut c);
        c.top_up();
        map_at::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0x400), Pfn(0x800), true, 2, &mut c, None);
        let mut r = recorder(&s);
        let none = &mut s.cache(0);
        let flush = write_protect::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x1000), |g| g.0 != 0x11, none, &mut r);
        assert!(flush);
        let w = |gfn| Npt::is_writable(s.leaf(gfn));
        assert!(!w(0x10) && w(0x11) && !w(0x12) && !w(0x13));
        assert_eq!(s.leaf(0x10).pfn(), Pfn(0x110), "still mapped");
        // Written through (W and D): their pages are dirty now, once.
        assert_eq!(r.dirtied, [Pfn(0x110), Pfn(0x112)]);
        // The 2 MiB leaf is gone (its page released, dirty), not split.
        assert_eq!(entry_at(&s, 0x400, 2), Spte::EMPTY);
        assert_eq!(r.pages, [(Pfn(0x800), true)]);
        // Nothing left to protect: no flush.
        let mut r = recorder(&s);
        assert!(!write_protect::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x1000), |g| g.0 != 0x11, none, &mut r));
        // A write fault makes it writable again, in place.
        c.top_up();
        assert_eq!(s.map(0x10, 0x110, true, &mut c), MapOutcome::AlreadyMapped);
        assert!(w(0x10));
    }

    #[test]
    fn fast_fault_fixes_only_tracking_protection() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        let fast = |gfn, write| fast_fault::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(gfn), write);
        assert_eq!(fast(0x10, true), None, "nothing mapped");
        for (gfn, w) in [(0x10, true), (0x11, false)] {
            c.top_up();
            map_at::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(gfn), Pfn(0x100 + gfn), w, 1, &mut c, None);
        }
        // Write-protected for dirty logging: fixed, writable and dirty.
        let mut r = recorder(&s);
        assert!(write_protect::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x20), |_| true, &mut s.cache(0), &mut r));
        assert!(!Ept::is_writable(s.leaf(0x10)));
        assert_eq!(fast(0x10, true), Some(true));
        let e = s.leaf(0x10);
        assert!(Ept::is_writable(e) && Ept::is_dirty(e) && e.pfn() == Pfn(0x110));
        assert_eq!(fast(0x10, true), Some(false), "spurious: already writable");
        assert_eq!(fast(0x10, false), Some(false));
        // Mapped read-only (the host page was not writable): locked path.
        assert_eq!(fast(0x11, true), None);
        assert!(!Ept::is_writable(s.leaf(0x11)));
        // Access-tracked: restored for a read, writable for a write.
        let mut r = recorder(&s);
        age_range::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x20), true, false, &mut r);
        assert!(!Ept::is_hw_present(s.leaf(0x10)) && !Ept::is_hw_present(s.leaf(0x11)));
        assert_eq!(fast(0x11, false), Some(false));
        assert!(Ept::is_hw_present(s.leaf(0x11)) && !Ept::is_writable(s.leaf(0x11)));
        assert_eq!(fast(0x10, true), Some(true));
        assert!(Ept::is_writable(s.leaf(0x10)));
        // A frozen entry on the way: locked path.
        let t = entry_at(&s, 0x10, 2).child(2).unwrap();
        s.table(t)[spte::index(Gfn(0x10), 1)].store(Spte::FROZEN.0, Ordering::Relaxed);
        assert_eq!(fast(0x10, true), None);
    }

    /// Eager splitting: a 2 MiB leaf in a range being write-protected
    /// becomes 512 read-only 4 KiB leaves of the same page, which the fast
    /// path can make writable again one by one.
    #[test]
    fn write_protection_splits_large_leaves() {
        let s = Store::new(16);
        let counts = LeafCounts::new();
        let mut c = s.cache(3);
        c.top_up();
        let out = map_at::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0x400), Pfn(0x800), true, 2, &mut c, Some(&counts));
        assert_eq!(out, MapOutcome::Installed);
        let tables = tables_to_split(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x1000));
        assert_eq!(tables, 1);
        let mut split = s.cache(tables);
        split.top_up();
        let mut r = recorder(&s);
        r.counts = Some(&counts);
        let flush = write_protect::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x1000), |_| true, &mut split, &mut r);
        assert!(flush);
        assert!(split.pages.is_empty(), "the table was used");
        assert_eq!((counts.get(1), counts.get(2)), (512, 0));
        for gfn in [0x400, 0x401, 0x5ff] {
            let e = s.leaf(gfn);
            assert!(e.is_shadow_present() && !Npt::is_writable(e), "{gfn:#x}");
            assert_eq!(e.pfn(), Pfn(0x800 + gfn - 0x400));
            assert!(Npt::is_host_writable(e) && Npt::is_mmu_writable(e));
        }
        // Written through (W and D), so dirty; not released.
        assert_eq!(r.pages, [(Pfn(0x800), true)]);
        assert_eq!(fast_fault::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0x4ff), true), Some(true));
        assert!(Npt::is_writable(s.leaf(0x4ff)) && !Npt::is_writable(s.leaf(0x4fe)));
    }

    #[test]
    fn leaves_are_counted_by_size() {
        let s = Store::new(16);
        let counts = LeafCounts::new();
        let mut c = s.cache(3);
        let map = |gfn, pfn, level, c: &mut Cache<'_>| {
            c.top_up();
            map_at::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(gfn), Pfn(pfn), true, level, c, Some(&counts))
        };
        for i in 0..3 {
            assert_eq!(map(0x10 + i, 0x100 + i, 1, &mut c), MapOutcome::Installed);
        }
        assert_eq!(map(0x10, 0x100, 1, &mut c), MapOutcome::AlreadyMapped);
        assert_eq!(map(0x400, 0x800, 2, &mut c), MapOutcome::Installed);
        assert_eq!((counts.get(1), counts.get(2), counts.get(3)), (3, 1, 0));
        // A zap counts what it removes: one leaf, then a table of two.
        let zap = |start, end| {
            let mut r = recorder(&s);
            r.counts = Some(&counts);
            zap_range::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(start), Gfn(end), &mut r);
        };
        zap(0x10, 0x11);
        assert_eq!(counts.get(1), 2);
        zap(0, 0x1000);
        assert_eq!((counts.get(1), counts.get(2)), (0, 0));
        assert_eq!(counts.get(4), 0, "no such level");
    }

    #[test]
    fn aging_tests_and_clears_accessed_bits() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        c.top_up();
        s.map(0x10, 5, true, &mut c);
        let mut r = recorder(&s);
        let mut age = |start, end, clear| {
            age_range::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(start), Gfn(end), clear, true, &mut r)
        };
        // New leaves are accessed (preset).
        assert_eq!(age(0x10, 0x11, false), (true, false));
        assert_eq!(age(0x11, 0x20, false), (false, false), "nothing mapped there");
        assert_eq!(age(0, 0x100, true), (true, false), "clearing A needs no flush");
        assert!(!Npt::is_accessed(s.leaf(0x10)));
        assert_eq!(age(0, 0x100, false), (false, false), "cleared");
        // The rest of the leaf is untouched: same page, still writable.
        assert_eq!(s.leaf(0x10).pfn(), Pfn(5));
        assert!(Npt::is_writable(s.leaf(0x10)));
        assert!(r.pages.is_empty() && r.dirtied.is_empty());
    }

    /// EPT without A/D flags: aging access-tracks the leaf (the hardware no
    /// longer sees it, the page is marked dirty as it loses W, a flush is
    /// asked for), and the next fault on it restores it.
    #[test]
    fn aging_without_accessed_bits_tracks_access() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        c.top_up();
        let counts = LeafCounts::new();
        let map = |gfn, w, c: &mut Cache<'_>| {
            map_at::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(gfn), Pfn(0x77), w, 1, c, Some(&counts))
        };
        assert_eq!(map(0x10, true, &mut c), MapOutcome::Installed);
        let mut r = recorder(&s);
        let mut age = |clear| {
            age_range::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x100), clear, false, &mut r)
        };
        assert_eq!(age(true), (true, true));
        let t = s.leaf(0x10);
        assert!(t.is_shadow_present() && !Ept::is_hw_present(t) && t.pfn() == Pfn(0x77));
        assert_eq!(age(false), (false, false), "old until used again");
        assert_eq!(age(true), (false, false));
        assert_eq!(r.dirtied, [Pfn(0x77)], "written through it: dirty once");
        assert!(r.pages.is_empty());
        // A read fault restores it present (read-only, as asked), counted
        // once all along.
        assert_eq!(map(0x10, false, &mut c), MapOutcome::AlreadyMapped);
        let back = s.leaf(0x10);
        assert!(Ept::is_hw_present(back) && !Ept::is_writable(back) && back.pfn() == Pfn(0x77));
        assert_eq!(map(0x10, true, &mut c), MapOutcome::AlreadyMapped);
        assert!(Ept::is_writable(s.leaf(0x10)));
        assert_eq!(counts.get(1), 1);
        let mut r = recorder(&s);
        assert_eq!(
            age_range::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(0x100), false, false, &mut r),
            (true, false),
            "young again"
        );
    }

    #[test]
    fn map_builds_tables_then_reuses_them() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        c.top_up();
        assert_eq!(s.map(0x1234, 77, false, &mut c), MapOutcome::Installed);
        // Three tables below the root were linked.
        assert_eq!(c.pages.len(), 0);
        assert_eq!(s.leaf(0x1234).pfn(), Pfn(77));
        assert!(!Npt::is_writable(s.leaf(0x1234)));
        // A neighbour in the same last-level table needs no new table.
        c.top_up();
        assert_eq!(s.map(0x1235, 78, true, &mut c), MapOutcome::Installed);
        assert_eq!(c.pages.len(), 3);
        // Same page again: nothing; a write widens in place.
        assert_eq!(s.map(0x1234, 77, false, &mut c), MapOutcome::AlreadyMapped);
        assert_eq!(s.map(0x1234, 77, true, &mut c), MapOutcome::AlreadyMapped);
        assert!(Npt::is_writable(s.leaf(0x1234)));
        // Another page for a mapped gfn is not this fault's to install.
        assert_eq!(s.map(0x1234, 99, true, &mut c), MapOutcome::Retry);
        // Without table pages, a fault that needs one retries.
        let mut empty = s.cache(0);
        assert_eq!(s.map(1 << 27, 5, true, &mut empty), MapOutcome::Retry);
    }

    #[test]
    fn fault_treats_frozen_entries_as_busy() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        c.top_up();
        s.map(0, 1, false, &mut c);
        // Freeze the leaf, then the level-2 entry above it.
        let mut it = TdpIter::new(&s, ROOT, ROOT_LEVEL, 1, Gfn(0), Gfn(1));
        for _ in 0..3 {
            it.next();
        }
        let leaf = it.sptep().get(&s);
        let saved = leaf.swap(Spte::FROZEN.0, Ordering::Relaxed);
        assert_eq!(s.map(0, 1, true, &mut c), MapOutcome::Retry);
        leaf.store(saved, Ordering::Relaxed);
        assert_eq!(s.map(0, 1, true, &mut c), MapOutcome::AlreadyMapped);
        assert!(Npt::is_writable(s.leaf(0)));
    }

    #[test]
    fn zap_releases_exactly_the_range() {
        let s = Store::new(32);
        let mut c = s.cache(3);
        // 2048 frames: four full last-level tables under one directory.
        for gfn in 0..2048 {
            c.top_up();
            let w = gfn % 2 == 0;
            assert_eq!(s.map(gfn, 1000 + gfn, w, &mut c), MapOutcome::Installed);
        }
        drop(c);
        let tables_used = 31 - s.free_count();
        assert_eq!(tables_used, 2 + 4);
        // A range inside one table: only its leaves, no table; writable
        // (dirty-preset) leaves give their page back dirty.
        let z = zap(&s, 10, 20);
        assert_eq!(pfns(&z), (1010..1020).collect::<Vec<_>>());
        assert!(z.pages.iter().all(|&(p, d)| d == (p.0 % 2 == 0)));
        assert_eq!(z.tables, 0);
        assert!(s.leaf(9).is_shadow_present());
        assert_eq!(s.leaf(10), Spte::EMPTY);
        assert!(s.leaf(20).is_shadow_present());
        // A range covering table 1 whole and parts of 0 and 2.
        let z = zap(&s, 500, 1100);
        assert_eq!(z.pages.len(), 600);
        assert_eq!(z.tables, 1);
        assert!(s.leaf(499).is_shadow_present());
        assert!(s.leaf(1100).is_shadow_present());
        // An empty or unmapped range changes nothing.
        assert_eq!(zap(&s, 600, 700).pages.len(), 0);
        assert_eq!(zap(&s, 5, 5).pages.len(), 0);
        // Everything else: every leaf once, every table below the root.
        let mut rest = recorder(&s);
        free_all::<Npt, _>(&s, ROOT, ROOT_LEVEL, &mut rest);
        assert_eq!(rest.pages.len(), 2048 - 10 - 600);
        assert_eq!(rest.tables, tables_used - 1);
        assert_eq!(s.free_count(), 31);
        assert!(s.table(ROOT).iter().all(|e| e.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn zap_of_everything_frees_every_table() {
        let s = Store::new(32);
        let mut c = s.cache(3);
        for gfn in [0, 513, 1 << 18, 1 << 27] {
            c.top_up();
            s.map(gfn, gfn, true, &mut c);
        }
        drop(c);
        let z = zap(&s, 0, u64::MAX);
        assert_eq!(z.pages.len(), 4);
        // Two level-3, three level-2 and four last-level tables.
        assert_eq!(z.tables, 9);
        assert_eq!(s.free_count(), 31);
    }

    #[test]
    fn zap_yields_and_still_releases_everything_once() {
        let s = Store::new(32);
        let mut c = s.cache(3);
        for gfn in 0..1500 {
            c.top_up();
            s.map(gfn, gfn, true, &mut c);
        }
        drop(c);
        let mut r = recorder(&s);
        r.yield_every = 7;
        let flush = zap_range::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(1500), &mut r);
        assert!(r.yields > 100);
        let mut got = pfns(&r);
        got.sort_unstable();
        assert_eq!(got, (0..1500).collect::<Vec<_>>());
        assert_eq!(flush, r.unflushed != 0);
        // The tables wholly in the range (two last-level ones) went too.
        assert_eq!(r.tables, 2);
    }

    /// A zap that really lets go of the lock: faults run while it yields.
    struct LockingZap<'a> {
        rec: Recorder<'a>,
        lock: &'a std::sync::RwLock<()>,
        guard: Option<std::sync::RwLockWriteGuard<'a, ()>>,
    }

    impl ChangeOps for LockingZap<'_> {
        fn release_page(&mut self, pfn: Pfn, dirty: bool) {
            self.rec.release_page(pfn, dirty)
        }
        fn free_table(&mut self, t: Hpa) {
            self.rec.free_table(t)
        }
        fn mark_dirty(&mut self, pfn: Pfn) {
            self.rec.mark_dirty(pfn)
        }
    }

    impl ZapOps for LockingZap<'_> {
        fn should_yield(&mut self) -> bool {
            self.rec.should_yield()
        }
        fn yield_lock(&mut self, flush: bool) {
            self.rec.yield_lock(flush);
            self.guard = None;
            std::thread::yield_now();
            self.guard = Some(self.lock.write().unwrap());
        }
    }

    #[test]
    fn faults_while_a_zap_yields_lose_no_page() {
        let s = Store::new(256);
        let lock = std::sync::RwLock::new(());
        let n = 4096u64;
        let mut c = s.cache(3);
        for gfn in (0..n).step_by(2) {
            c.top_up();
            s.map(gfn, gfn, true, &mut c);
        }
        drop(c);
        let started = std::sync::atomic::AtomicBool::new(false);
        let (installed, released) = std::thread::scope(|scope| {
            let faulter = scope.spawn(|| {
                let mut c = s.cache(3);
                let mut mine = Vec::new();
                for round in 0..3 {
                    for k in (0..n / 2).rev() {
                        let gfn = 2 * k + round % 2;
                        c.top_up();
                        let _held = lock.read().unwrap();
                        if s.map(gfn, gfn, false, &mut c) == MapOutcome::Installed {
                            mine.push(gfn);
                        }
                        started.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                mine
            });
            while !started.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::yield_now();
            }
            let mut z = LockingZap {
                rec: recorder(&s),
                lock: &lock,
                guard: Some(lock.write().unwrap()),
            };
            z.rec.yield_every = 5;
            zap_range::<Npt, _>(&s, ROOT, ROOT_LEVEL, Gfn(0), Gfn(n), &mut z);
            drop(z.guard.take());
            let released: Vec<u64> = pfns(&z.rec);
            (faulter.join().unwrap(), released)
        });
        // Every page mapped before or by the faulter was released by the
        // zap, or is still mapped now; none twice.
        let mut rest = recorder(&s);
        free_all::<Npt, _>(&s, ROOT, ROOT_LEVEL, &mut rest);
        let mut all: Vec<u64> = released.into_iter().chain(pfns(&rest)).collect();
        all.sort_unstable();
        let mut want: Vec<u64> = (0..n).step_by(2).chain(installed).collect();
        want.sort_unstable();
        assert_eq!(all, want);
        // And every table page is back.
        assert_eq!(s.free_count(), 255);
    }

    #[test]
    fn ept_format_maps_and_zaps() {
        let s = Store::new(8);
        let mut c = s.cache(3);
        c.top_up();
        let out = map::<Ept, _>(&s, ROOT, ROOT_LEVEL, Gfn(5), Pfn(9), true, &mut c);
        assert_eq!(out, MapOutcome::Installed);
        assert_eq!(s.leaf(5), Ept::leaf(Pfn(9), true));
        let mut r = recorder(&s);
        assert!(zap_range::<Ept, _>(
            &s,
            ROOT,
            ROOT_LEVEL,
            Gfn(0),
            Gfn(8),
            &mut r
        ));
        assert_eq!(r.pages, [(Pfn(9), true)]);
    }

    #[test]
    fn concurrent_faults_install_each_frame_once() {
        let s = Store::new(64);
        let gfns: Vec<u64> = (0..1024).chain((1 << 18)..(1 << 18) + 64).collect();
        let installed: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (s, gfns) = (&s, &gfns);
                    scope.spawn(move || {
                        let mut c = s.cache(3);
                        let mut n = 0;
                        for (k, &gfn) in gfns.iter().enumerate() {
                            // Threads walk in different orders.
                            let gfn = if t % 2 == 0 {
                                gfn
                            } else {
                                gfns[gfns.len() - 1 - k]
                            };
                            c.top_up();
                            if s.map(gfn, gfn + 7, t == 3, &mut c) == MapOutcome::Installed {
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(installed.iter().sum::<usize>(), gfns.len());
        for &gfn in &gfns {
            assert_eq!(s.leaf(gfn).pfn(), Pfn(gfn + 7));
        }
        // Every table page taken is either linked or back in the store.
        let mut all = recorder(&s);
        free_all::<Npt, _>(&s, ROOT, ROOT_LEVEL, &mut all);
        assert_eq!(all.pages.len(), gfns.len());
        assert_eq!(s.free_count(), 63);
    }

    #[test]
    fn handler_decisions() {
        let s = Store::new(2);
        let mut r = recorder(&s);
        let mut h =
            |old: Spte, new: Spte| handle_changed_spte::<Npt, _>(&s, &mut r, Gfn(0), 1, old, new);
        let ro = Npt::leaf(Pfn(3), false);
        let rw = Npt::leaf(Pfn(3), true);
        // Adding or widening a mapping needs no flush, releases nothing.
        assert!(!h(Spte::EMPTY, ro));
        assert!(!h(ro, rw));
        assert!(!h(Spte::FROZEN, Spte::EMPTY));
        // Write-protecting needs a flush, the page stays.
        assert!(h(rw, ro));
        // Unmapping, or changing the page, releases it.
        assert!(h(rw, Spte::EMPTY));
        assert!(h(ro, Npt::leaf(Pfn(4), false)));
        assert_eq!(r.pages, [(Pfn(3), true), (Pfn(3), false)]);
    }
}
