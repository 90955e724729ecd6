// SPDX-License-Identifier: GPL-2.0

//! Shadow page-table entries of the TDP MMU on AMD NPT: every bit named
//! here, with who may change it.
//!
//! NPT entries have the format of long-mode page-table entries (AMD APM
//! vol. 2, 15.25.5); guest accesses are checked as user accesses, so every
//! entry rkvm installs has U=1.
//!
//! Who changes what:
//! - A fault, holding `mmu_lock` for read, changes an entry only with a
//!   compare-and-exchange: from non-present to a table or a leaf, or from a
//!   read-only leaf to a writable leaf of the same page.
//! - A zap, holding `mmu_lock` for write, turns leaves into [`REMOVED`]
//!   entries (not present, but still naming their page), flushes the TLBs,
//!   and only then clears them and releases the pages: a vCPU can never use
//!   a translation to a page rkvm no longer holds.
//!
//! Pure logic (only `core`), tested on the host.

/// Present.
pub(crate) const PRESENT: u64 = 1 << 0;
/// Writable.
pub(crate) const WRITABLE: u64 = 1 << 1;
/// User: must be set, NPT checks guest accesses as user accesses.
pub(crate) const USER: u64 = 1 << 2;
/// Set by the CPU when the entry is used.
pub(crate) const ACCESSED: u64 = 1 << 5;
/// Set by the CPU when the leaf is written through.
pub(crate) const DIRTY: u64 = 1 << 6;
/// Software bit 9: a leaf rkvm holds a page reference for. With P clear it
/// marks an entry a zap has removed but not yet released.
pub(crate) const HOLDS_PAGE: u64 = 1 << 9;
/// Software bit 10: the page is mapped writable (or may be made writable)
/// because the host mapping allowed a write.
pub(crate) const HOST_WRITABLE: u64 = 1 << 10;
/// Physical address bits 51:12.
pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Permissions for non-leaf entries: everything is decided at the leaf.
const TABLE_BITS: u64 = PRESENT | WRITABLE | USER;

/// Entries per table.
pub(crate) const ENTRIES: usize = 512;
/// The root's level: 4-level NPT.
pub(crate) const ROOT_LEVEL: u32 = 4;
pub(crate) const PAGE_SHIFT: u32 = 12;

/// A non-leaf entry pointing to the table at physical address `table`.
pub(crate) const fn table(table: u64) -> u64 {
    (table & ADDR_MASK) | TABLE_BITS
}

/// A 4 KiB leaf mapping page frame `pfn`, writable or not. Accessed is
/// preset so the CPU does not write it back on first use; Dirty with W.
pub(crate) const fn leaf(pfn: u64, writable: bool) -> u64 {
    let base = ((pfn << PAGE_SHIFT) & ADDR_MASK) | PRESENT | USER | ACCESSED | HOLDS_PAGE;
    if writable {
        base | WRITABLE | DIRTY | HOST_WRITABLE
    } else {
        base
    }
}

/// What a zap leaves in a leaf until the TLBs are flushed.
pub(crate) const fn removed(spte: u64) -> u64 {
    spte & !(PRESENT | WRITABLE)
}

pub(crate) const fn is_present(spte: u64) -> bool {
    spte & PRESENT != 0
}

pub(crate) const fn is_writable(spte: u64) -> bool {
    spte & WRITABLE != 0
}

/// A leaf or removed leaf that holds a page reference.
pub(crate) const fn holds_page(spte: u64) -> bool {
    spte & HOLDS_PAGE != 0
}

/// A removed leaf: its page is still held, the TLB may still use it.
pub(crate) const fn is_removed(spte: u64) -> bool {
    !is_present(spte) && holds_page(spte)
}

pub(crate) const fn addr(spte: u64) -> u64 {
    spte & ADDR_MASK
}

pub(crate) const fn pfn(spte: u64) -> u64 {
    addr(spte) >> PAGE_SHIFT
}

/// Index into the table at `level` (4 = root) for guest frame `gfn`.
pub(crate) const fn index(gfn: u64, level: u32) -> usize {
    ((gfn >> (9 * (level - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// Guest frames one entry at `level` covers.
pub(crate) const fn frames_per_entry(level: u32) -> u64 {
    1 << (9 * (level - 1))
}

/// What a fault should do with the leaf it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafAction {
    /// Install the new leaf over this (empty) entry.
    Install,
    /// The entry already maps the page at least as permissively: nothing
    /// to do, the new page reference must be dropped.
    AlreadyMapped,
    /// Upgrade a read-only leaf of the same page to writable; the old
    /// entry's reference stays, the new one must be dropped.
    MakeWritable,
    /// The entry is being torn down (removed, or maps another page): drop
    /// the new reference and let the guest fault again.
    Retry,
}

/// Decides how a fault that resolved `pfn` (writable or not) treats the
/// current leaf `old`.
pub(crate) const fn leaf_action(old: u64, pfn_new: u64, writable: bool) -> LeafAction {
    if old == 0 {
        return LeafAction::Install;
    }
    if !is_present(old) || pfn(old) != pfn_new {
        return LeafAction::Retry;
    }
    if is_writable(old) || !writable {
        LeafAction::AlreadyMapped
    } else {
        LeafAction::MakeWritable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_bits() {
        let ro = leaf(0x1234, false);
        assert!(is_present(ro) && !is_writable(ro) && holds_page(ro));
        assert_eq!(pfn(ro), 0x1234);
        assert_eq!(ro & USER, USER);
        let rw = leaf(0x1234, true);
        assert!(is_writable(rw) && rw & DIRTY != 0);
        let gone = removed(rw);
        assert!(is_removed(gone) && !is_present(gone));
        assert_eq!(pfn(gone), 0x1234);
        assert!(!is_removed(0));
        assert!(!is_removed(table(0x5000)));
    }

    #[test]
    fn indices() {
        let gfn = (3 << 27) | (5 << 18) | (7 << 9) | 9;
        assert_eq!(
            [index(gfn, 4), index(gfn, 3), index(gfn, 2), index(gfn, 1)],
            [3, 5, 7, 9]
        );
        assert_eq!(frames_per_entry(1), 1);
        assert_eq!(frames_per_entry(2), 512);
        assert_eq!(frames_per_entry(4), 1 << 27);
    }

    #[test]
    fn fault_decisions() {
        assert_eq!(leaf_action(0, 7, true), LeafAction::Install);
        assert_eq!(
            leaf_action(leaf(7, false), 7, true),
            LeafAction::MakeWritable
        );
        assert_eq!(
            leaf_action(leaf(7, true), 7, false),
            LeafAction::AlreadyMapped
        );
        assert_eq!(
            leaf_action(leaf(7, false), 7, false),
            LeafAction::AlreadyMapped
        );
        assert_eq!(leaf_action(leaf(8, false), 7, true), LeafAction::Retry);
        assert_eq!(
            leaf_action(removed(leaf(7, true)), 7, true),
            LeafAction::Retry
        );
    }
}
