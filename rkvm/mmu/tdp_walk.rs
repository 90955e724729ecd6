// SPDX-License-Identifier: GPL-2.0

//! The TDP MMU's operations on its tables: map a frame, cut a range off,
//! release what was cut, free everything. They work on an abstract store
//! of table pages, so the same code runs in the kernel (direct-mapped
//! pages, `mmu/tdp.rs`) and in host tests, with threads racing on it.
//!
//! Who may call what (see `spte.rs` and locking.rst): `map` with
//! `mmu_lock` held for read (it changes entries only by compare-and-
//! exchange); `cut` and `release` with it held for write, with the TLBs
//! flushed in between; `free_all` with exclusive ownership.
//!
//! Pure logic (only `core`), tested on the host.

use core::sync::atomic::{AtomicU64, Ordering};

use super::spte::{self, LeafAction, ENTRIES, ROOT_LEVEL};

/// The table pages of one MMU, by physical address.
pub(crate) trait TableStore {
    /// The entries of the table at `phys`. The walkers pass only the root
    /// and addresses read from present (or cut-off) non-leaf entries.
    fn entries(&self, phys: u64) -> &[AtomicU64; ENTRIES];
}

/// Zeroed table pages for a fault, allocated before `mmu_lock` is taken.
pub(crate) trait TableSource {
    fn take(&mut self) -> Option<u64>;
    /// Gives back a page that was never linked (still zero).
    fn put_back(&mut self, phys: u64);
}

/// What happens to what a zap or teardown lets go of.
pub(crate) trait Releaser {
    /// A leaf (present or removed) is gone: drop what it holds.
    fn leaf(&mut self, spte: u64);
    /// A table page is unlinked and empty: free it.
    fn table(&mut self, phys: u64);
}

/// What became of a page a fault resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapOutcome {
    /// The new leaf holds the page reference now.
    Installed,
    /// The gfn was already mapped well enough (or was upgraded to writable
    /// in place): the caller must drop its page reference.
    AlreadyMapped,
    /// Something changed under the fault: drop the reference, fault again.
    Retry,
}

/// Maps `gfn` to `pfn` under `root`, taking missing tables from `source`.
pub(crate) fn map(
    store: &impl TableStore,
    root: u64,
    gfn: u64,
    pfn: u64,
    writable: bool,
    source: &mut impl TableSource,
) -> MapOutcome {
    let mut table = root;
    for level in (2..=ROOT_LEVEL).rev() {
        let entry = &store.entries(table)[spte::index(gfn, level)];
        let mut cur = entry.load(Ordering::Acquire);
        if cur == 0 {
            let Some(new) = source.take() else {
                return MapOutcome::Retry;
            };
            // Release: the zeroed table is visible before the link.
            match entry.compare_exchange(0, spte::table(new), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => cur = spte::table(new),
                Err(winner) => {
                    source.put_back(new);
                    cur = winner;
                }
            }
        }
        if !spte::is_present(cur) {
            return MapOutcome::Retry;
        }
        table = spte::addr(cur);
    }
    let entry = &store.entries(table)[spte::index(gfn, 1)];
    loop {
        let old = entry.load(Ordering::Acquire);
        let (new, outcome) = match spte::leaf_action(old, pfn, writable) {
            LeafAction::Install => (spte::leaf(pfn, writable), MapOutcome::Installed),
            // The TLB may hold the read-only translation; the CPU drops it
            // when the write faults, so no flush is needed to widen.
            LeafAction::MakeWritable => (spte::leaf(pfn, true), MapOutcome::AlreadyMapped),
            LeafAction::AlreadyMapped => return MapOutcome::AlreadyMapped,
            LeafAction::Retry => return MapOutcome::Retry,
        };
        if entry
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return outcome;
        }
    }
}

/// Indices of the entries of a table at `level` whose first frame is
/// `base` that intersect `[start, end)`.
fn span(level: u32, base: u64, start: u64, end: u64) -> core::ops::Range<usize> {
    let per = spte::frames_per_entry(level);
    let table_end = base.saturating_add(per * ENTRIES as u64);
    let lo = start.max(base);
    let hi = end.min(table_end);
    if lo >= hi {
        return 0..0;
    }
    ((lo - base) / per) as usize..((hi - 1 - base) / per) as usize + 1
}

/// First zap pass: makes `[start, end)` non-present. Leaves become removed
/// leaves (still naming their page); tables wholly inside the range are cut
/// off at their parent. Returns whether anything changed (then the TLBs
/// must be flushed before `release`).
pub(crate) fn cut(store: &impl TableStore, root: u64, start: u64, end: u64) -> bool {
    cut_table(store, root, ROOT_LEVEL, 0, start, end)
}

fn cut_table(
    store: &impl TableStore,
    table: u64,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
) -> bool {
    let per = spte::frames_per_entry(level);
    let entries = store.entries(table);
    let mut changed = false;
    for i in span(level, base, start, end) {
        let cur = entries[i].load(Ordering::Relaxed);
        if !spte::is_present(cur) {
            continue;
        }
        let first = base + i as u64 * per;
        if level == 1 || (start <= first && first + per <= end) {
            entries[i].store(spte::removed(cur), Ordering::Relaxed);
            changed = true;
        } else {
            changed |= cut_table(store, spte::addr(cur), level - 1, first, start, end);
        }
    }
    changed
}

/// Second zap pass, after the TLB flush: releases what `cut` removed in
/// `[start, end)` and clears those entries.
pub(crate) fn release(
    store: &impl TableStore,
    root: u64,
    start: u64,
    end: u64,
    releaser: &mut impl Releaser,
) {
    release_table(store, root, ROOT_LEVEL, 0, start, end, releaser)
}

fn release_table(
    store: &impl TableStore,
    table: u64,
    level: u32,
    base: u64,
    start: u64,
    end: u64,
    releaser: &mut impl Releaser,
) {
    let per = spte::frames_per_entry(level);
    let entries = store.entries(table);
    for i in span(level, base, start, end) {
        let cur = entries[i].load(Ordering::Relaxed);
        if cur == 0 {
            continue;
        }
        if spte::is_present(cur) {
            // A table only partly in the range.
            let first = base + i as u64 * per;
            release_table(
                store,
                spte::addr(cur),
                level - 1,
                first,
                start,
                end,
                releaser,
            );
            continue;
        }
        entries[i].store(0, Ordering::Relaxed);
        if level == 1 {
            // Only `cut` leaves non-present leaves behind.
            debug_assert!(spte::is_removed(cur));
            releaser.leaf(cur);
        } else {
            free_below(store, spte::addr(cur), level - 1, releaser);
            releaser.table(spte::addr(cur));
        }
    }
}

/// Releases every leaf under `root` and frees every table below it; the
/// root itself stays (empty).
pub(crate) fn free_all(store: &impl TableStore, root: u64, releaser: &mut impl Releaser) {
    free_below(store, root, ROOT_LEVEL, releaser)
}

fn free_below(store: &impl TableStore, table: u64, level: u32, releaser: &mut impl Releaser) {
    for entry in store.entries(table) {
        let cur = entry.swap(0, Ordering::Relaxed);
        if cur == 0 {
            continue;
        }
        if level == 1 {
            releaser.leaf(cur);
        } else {
            free_below(store, spte::addr(cur), level - 1, releaser);
            releaser.table(spte::addr(cur));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{boxed::Box, sync::Mutex, vec::Vec};

    /// Table pages in a vector: page `i` is at physical address
    /// `(i + 1) << 12`; page 0 is the root.
    struct Store {
        pages: Vec<Box<[AtomicU64; ENTRIES]>>,
        free: Mutex<Vec<u64>>,
    }

    const ROOT: u64 = 1 << 12;

    impl Store {
        fn new(n: usize) -> Self {
            let pages = (0..n)
                .map(|_| Box::new(core::array::from_fn(|_| AtomicU64::new(0))))
                .collect();
            Self {
                pages,
                free: Mutex::new((1..n as u64).rev().map(|i| (i + 1) << 12).collect()),
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

        fn leaf(&self, gfn: u64) -> u64 {
            let mut t = ROOT;
            for level in (2..=ROOT_LEVEL).rev() {
                let e = self.entries(t)[spte::index(gfn, level)].load(Ordering::Relaxed);
                if !spte::is_present(e) {
                    return 0;
                }
                t = spte::addr(e);
            }
            self.entries(t)[spte::index(gfn, 1)].load(Ordering::Relaxed)
        }
    }

    impl TableStore for Store {
        fn entries(&self, phys: u64) -> &[AtomicU64; ENTRIES] {
            &self.pages[(phys >> 12) as usize - 1]
        }
    }

    /// A fault's cache: tops up from the store's free list, as `PtCache`.
    struct Cache<'a> {
        store: &'a Store,
        pages: Vec<u64>,
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
        fn take(&mut self) -> Option<u64> {
            self.pages.pop()
        }
        fn put_back(&mut self, phys: u64) {
            assert!(self
                .store
                .entries(phys)
                .iter()
                .all(|e| e.load(Ordering::Relaxed) == 0));
            self.pages.push(phys);
        }
    }

    impl Drop for Cache<'_> {
        fn drop(&mut self) {
            self.store.free.lock().unwrap().extend(self.pages.drain(..));
        }
    }

    /// Counts what is released; tables go back to the store.
    struct Counter<'a> {
        store: &'a Store,
        leaves: Vec<u64>,
        tables: usize,
    }

    impl Releaser for Counter<'_> {
        fn leaf(&mut self, spte_val: u64) {
            assert!(spte::holds_page(spte_val));
            self.leaves.push(spte::pfn(spte_val));
        }
        fn table(&mut self, phys: u64) {
            assert!(self
                .store
                .entries(phys)
                .iter()
                .all(|e| e.load(Ordering::Relaxed) == 0));
            self.tables += 1;
            self.store.free.lock().unwrap().push(phys);
        }
    }

    fn counter(store: &Store) -> Counter<'_> {
        Counter {
            store,
            leaves: Vec::new(),
            tables: 0,
        }
    }

    fn zap(store: &Store, start: u64, end: u64) -> Counter<'_> {
        let mut c = counter(store);
        if cut(store, ROOT, start, end) {
            release(store, ROOT, start, end, &mut c);
        }
        c
    }

    #[test]
    fn map_builds_tables_then_reuses_them() {
        let s = Store::new(16);
        let mut c = s.cache(3);
        c.top_up();
        assert_eq!(
            map(&s, ROOT, 0x1234, 77, false, &mut c),
            MapOutcome::Installed
        );
        // Three tables below the root were linked.
        assert_eq!(c.pages.len(), 0);
        assert_eq!(spte::pfn(s.leaf(0x1234)), 77);
        assert!(!spte::is_writable(s.leaf(0x1234)));
        // A neighbour in the same last-level table needs no new table.
        c.top_up();
        assert_eq!(
            map(&s, ROOT, 0x1235, 78, true, &mut c),
            MapOutcome::Installed
        );
        assert_eq!(c.pages.len(), 3);
        // Same page again: nothing; a write upgrades in place.
        assert_eq!(
            map(&s, ROOT, 0x1234, 77, false, &mut c),
            MapOutcome::AlreadyMapped
        );
        assert_eq!(
            map(&s, ROOT, 0x1234, 77, true, &mut c),
            MapOutcome::AlreadyMapped
        );
        assert!(spte::is_writable(s.leaf(0x1234)));
        // Another page for a mapped gfn is not this fault's to install.
        assert_eq!(map(&s, ROOT, 0x1234, 99, true, &mut c), MapOutcome::Retry);
        // Without table pages, a fault that needs one retries.
        let mut empty = s.cache(0);
        assert_eq!(
            map(&s, ROOT, 1 << 27, 5, true, &mut empty),
            MapOutcome::Retry
        );
    }

    #[test]
    fn zap_releases_exactly_the_range() {
        let s = Store::new(32);
        let mut c = s.cache(3);
        // 2048 frames: four full last-level tables under one directory.
        for gfn in 0..2048 {
            c.top_up();
            assert_eq!(
                map(&s, ROOT, gfn, 1000 + gfn, true, &mut c),
                MapOutcome::Installed
            );
        }
        drop(c);
        let tables_used = 31 - s.free_count();
        assert_eq!(tables_used, 2 + 4);
        // A range inside one table: only its leaves, no table.
        let z = zap(&s, 10, 20);
        assert_eq!(z.leaves, (1010..1020).collect::<Vec<_>>());
        assert_eq!(z.tables, 0);
        assert_eq!(s.leaf(9) & spte::PRESENT, spte::PRESENT);
        assert_eq!(s.leaf(10), 0);
        assert_eq!(s.leaf(20) & spte::PRESENT, spte::PRESENT);
        // A range covering table 1 whole and parts of 0 and 2.
        let z = zap(&s, 500, 1100);
        assert_eq!(z.leaves.len(), 600);
        assert_eq!(z.tables, 1);
        assert_eq!(s.leaf(499) & spte::PRESENT, spte::PRESENT);
        assert_eq!(s.leaf(1100) & spte::PRESENT, spte::PRESENT);
        // An empty or unmapped range changes nothing.
        assert!(!cut(&s, ROOT, 600, 700));
        assert!(!cut(&s, ROOT, 5, 5));
        // Everything else: every leaf once, every table below the root.
        let mut rest = counter(&s);
        free_all(&s, ROOT, &mut rest);
        assert_eq!(rest.leaves.len(), 2048 - 10 - 600);
        assert_eq!(rest.tables, tables_used - 1);
        assert_eq!(s.free_count(), 31);
        assert!(s
            .entries(ROOT)
            .iter()
            .all(|e| e.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn cut_leaves_removed_entries_until_release() {
        let s = Store::new(8);
        let mut c = s.cache(3);
        c.top_up();
        map(&s, ROOT, 3, 42, true, &mut c);
        assert!(cut(&s, ROOT, 0, 8));
        // Between the passes the leaf is not present but still holds its page.
        let e = s.leaf(3);
        assert!(spte::is_removed(e));
        assert_eq!(spte::pfn(e), 42);
        let mut r = counter(&s);
        release(&s, ROOT, 0, 8, &mut r);
        assert_eq!(r.leaves, [42]);
        // 0..8 lies inside one last-level table but does not cover it.
        assert_eq!(r.tables, 0);
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
                            if map(s, ROOT, gfn, gfn + 7, t == 3, &mut c) == MapOutcome::Installed {
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
            assert_eq!(spte::pfn(s.leaf(gfn)), gfn + 7);
        }
        // Every table page taken is either linked or back in the store.
        let mut all = counter(&s);
        free_all(&s, ROOT, &mut all);
        assert_eq!(all.leaves.len(), gfns.len());
        assert_eq!(s.free_count(), 63);
    }

    #[test]
    fn spans() {
        assert_eq!(span(1, 0, 10, 20), 10..20);
        assert_eq!(span(1, 512, 0, 600), 0..88);
        assert_eq!(span(2, 0, 0, u64::MAX), 0..512);
        assert_eq!(span(2, 0, 511, 513), 0..2);
        assert_eq!(span(1, 0, 600, 700), 0..0);
    }
}
