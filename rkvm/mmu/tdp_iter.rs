// SPDX-License-Identifier: GPL-2.0

//! The TDP iterator: a pre-order walk of the SPTEs that cover a range of
//! guest frames, over an abstract store of table pages (KVM's `tdp_iter`).
//!
//! The walk is kept apart from what is done at each step: the operations
//! in `tdp_mmu.rs` (map, zap, teardown) are loops over this iterator that
//! look at `level()`, `gfn()` and `old_spte()` and change the entry through
//! the one door for SPTE changes.
//!
//! At each step the iterator stands on one entry: the table it is in, its
//! index, its level (the root's entries are at the root level), the first
//! guest frame it covers, and the value it had when the iterator read it
//! (`old_spte`). `next()` steps down into the entry's table if it has one
//! and the minimum level is not reached, else sideways to the next entry,
//! going up as many levels as needed at the end of a table. The iterator
//! keeps table addresses, not references, and re-reads an entry before
//! stepping down through it, so an entry changed at a step (zapped, say)
//! is not descended into.
//!
//! A walk that yields `mmu_lock` (a long zap) calls `mark_yielded()`; the
//! next step then restarts from the root at the frame it had reached,
//! since any table on its path may have been freed meanwhile. `can_yield()`
//! refuses to yield twice at the same frame, so a walk always progresses.
//!
//! Pure logic (only `core`), tested on the host.

use super::{
    atomic::{AtomicU64, Ordering},
    spte::{self, Spte, ENTRIES, ROOT_LEVEL},
    types::{Gfn, Hpa},
};

/// The table pages of one MMU, by host physical address.
pub(crate) trait TableStore {
    /// Entry `idx` (below [`ENTRIES`]) of the table at `table`. Callers pass
    /// only the root and addresses read from shadow-present non-leaf
    /// entries, while those tables cannot be freed (`mmu_lock` is held).
    fn entry(&self, table: Hpa, idx: usize) -> &AtomicU64;
}

/// Where an SPTE lives: a table and an index into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SptePtr {
    pub(crate) table: Hpa,
    pub(crate) idx: usize,
}

impl SptePtr {
    /// The entry itself.
    pub(crate) fn get<S: TableStore>(self, store: &S) -> &AtomicU64 {
        store.entry(self.table, self.idx)
    }

    /// Reads the entry. Acquire: a table linked by another thread is seen
    /// zeroed (its initialisation happens before its link, a release).
    pub(crate) fn read<S: TableStore>(self, store: &S) -> Spte {
        Spte(self.get(store).load(Ordering::Acquire))
    }
}

/// A pre-order walk over the SPTEs covering `[start, end)`.
///
/// # Invariants
///
/// While `valid`: `min_level <= level <= root_level <= ROOT_LEVEL`;
/// `path[l - 1]` for `level <= l <= root_level` is the table holding the
/// entries of level `l` on the way to `gfn`, `path[root_level - 1]` being
/// the root; `sptep` is the entry of `gfn` in `path[level - 1]`; `gfn` is
/// aligned to the frames one entry at `level` covers.
pub(crate) struct TdpIter<'a, S: TableStore> {
    store: &'a S,
    /// The frame the walk has reached at the lowest level: where it
    /// restarts after yielding.
    next_last_level_gfn: Gfn,
    /// `next_last_level_gfn` when the walk last (re)started.
    yielded_gfn: Gfn,
    path: [Hpa; ROOT_LEVEL as usize],
    sptep: SptePtr,
    gfn: Gfn,
    end: Gfn,
    root_level: u32,
    min_level: u32,
    level: u32,
    old_spte: Spte,
    valid: bool,
    yielded: bool,
}

impl<'a, S: TableStore> TdpIter<'a, S> {
    /// Starts a walk of the tree under `root` (whose entries are at
    /// `root_level`), down to `min_level`, over the frames `[start, end)`.
    pub(crate) fn new(
        store: &'a S,
        root: Hpa,
        root_level: u32,
        min_level: u32,
        start: Gfn,
        end: Gfn,
    ) -> Self {
        assert!(1 <= min_level && min_level <= root_level && root_level <= ROOT_LEVEL);
        let mut path = [Hpa(0); ROOT_LEVEL as usize];
        path[root_level as usize - 1] = root;
        let mut it = Self {
            store,
            next_last_level_gfn: start,
            yielded_gfn: start,
            path,
            sptep: SptePtr {
                table: root,
                idx: 0,
            },
            gfn: start,
            end,
            root_level,
            min_level,
            level: root_level,
            old_spte: Spte::EMPTY,
            valid: false,
            yielded: false,
        };
        it.restart();
        it
    }

    /// Whether the walk stands on an entry of the range.
    pub(crate) fn valid(&self) -> bool {
        self.valid && self.gfn < self.end
    }

    pub(crate) fn level(&self) -> u32 {
        self.level
    }

    /// The first frame the current entry covers.
    pub(crate) fn gfn(&self) -> Gfn {
        self.gfn
    }

    pub(crate) fn sptep(&self) -> SptePtr {
        self.sptep
    }

    /// The entry's value when the walk last read it.
    pub(crate) fn old_spte(&self) -> Spte {
        self.old_spte
    }

    /// Records the entry's current value (after a lost compare-and-
    /// exchange, or the walker's own change).
    pub(crate) fn set_old_spte(&mut self, s: Spte) {
        self.old_spte = s;
    }

    pub(crate) fn store(&self) -> &'a S {
        self.store
    }

    /// Whether the current entry lies wholly inside `[start, end)`.
    pub(crate) fn covered_by(&self, start: Gfn, end: Gfn) -> bool {
        let last = self.gfn.0 + (spte::frames_per_entry(self.level) - 1);
        start <= self.gfn && last < end.0
    }

    /// Whether yielding now makes progress: not at the frame the walk
    /// (re)started from.
    pub(crate) fn can_yield(&self) -> bool {
        self.next_last_level_gfn != self.yielded_gfn
    }

    /// The caller let go of `mmu_lock`: the next step restarts from the
    /// root, as tables on the path may be gone.
    pub(crate) fn mark_yielded(&mut self) {
        self.yielded = true;
    }

    /// Starts over from the root, at the frame the walk had reached.
    pub(crate) fn restart(&mut self) {
        self.yielded = false;
        self.yielded_gfn = self.next_last_level_gfn;
        self.level = self.root_level;
        self.gfn = self
            .next_last_level_gfn
            .align_down(spte::frames_per_entry(self.level));
        self.refresh_sptep();
        self.valid = true;
    }

    fn refresh_sptep(&mut self) {
        self.sptep = SptePtr {
            table: self.path[self.level as usize - 1],
            idx: spte::index(self.gfn, self.level),
        };
        self.old_spte = self.sptep.read(self.store);
    }

    fn try_step_down(&mut self) -> bool {
        if self.level == self.min_level {
            return false;
        }
        // Re-read: the entry may have changed at this step.
        self.old_spte = self.sptep.read(self.store);
        let Some(child) = self.old_spte.child(self.level) else {
            return false;
        };
        self.level -= 1;
        self.path[self.level as usize - 1] = child;
        self.gfn = self
            .next_last_level_gfn
            .align_down(spte::frames_per_entry(self.level));
        self.refresh_sptep();
        true
    }

    fn try_step_side(&mut self) -> bool {
        if self.sptep.idx == ENTRIES - 1 {
            return false;
        }
        self.gfn = self.gfn.add(spte::frames_per_entry(self.level));
        self.next_last_level_gfn = self.gfn;
        self.sptep.idx += 1;
        self.old_spte = self.sptep.read(self.store);
        true
    }

    fn try_step_up(&mut self) -> bool {
        if self.level == self.root_level {
            return false;
        }
        self.level += 1;
        self.gfn = self.gfn.align_down(spte::frames_per_entry(self.level));
        self.refresh_sptep();
        true
    }

    /// Steps to the next entry in pre-order: down, else sideways, going up
    /// at the end of a table; after `mark_yielded`, restarts instead.
    pub(crate) fn next(&mut self) {
        if self.yielded {
            self.restart();
            return;
        }
        if self.try_step_down() {
            return;
        }
        loop {
            if self.try_step_side() {
                return;
            }
            if !self.try_step_up() {
                break;
            }
        }
        self.valid = false;
    }
}
