// SPDX-License-Identifier: GPL-2.0

//! Shadow page-table entries (SPTEs) of the TDP MMU: every bit named here,
//! with who may change it, for both hardware formats.
//!
//! - [`Npt`]: AMD nested paging. Entries have the format of long-mode
//!   page-table entries (AMD APM vol. 2, 15.25.5); guest accesses are
//!   checked as user accesses, so every entry rkvm installs has U=1.
//! - [`Ept`]: Intel EPT (SDM vol. 3C, 29.3.2): R/W/X in bits 0-2, the
//!   memory type in bits 3-5 and ignore-PAT in bit 6 of a leaf, accessed
//!   in bit 8, dirty in bit 9 (where A/D flags are enabled).
//!
//! Software bits, with KVM's meaning (`arch/x86/kvm/mmu/spte.h`):
//! - [`SHADOW_PRESENT`] (bit 11, ignored by both formats): the entry is
//!   rkvm's, present. It is independent of the format's present bits, so
//!   a later access-tracked or execute-only entry, which the hardware sees
//!   as not present or present differently, still counts as present to
//!   the MMU.
//! - `HOST_WRITABLE`: the host mapping allows writes (the page was got
//!   writable). `MMU_WRITABLE`: the MMU allows writes (no write tracking,
//!   no dirty logging). A present leaf may be made writable without
//!   taking `mmu_lock` (the fast page fault) only if both are set.
//! - [`Spte::FROZEN`]: a special non-present value. A thread in the middle
//!   of a multi-step change of an entry (freezing the entries of a table it
//!   detached, say) stores it; anyone else who finds it must not change the
//!   entry and retries later. It is never shadow-present nor hardware
//!   present in either format.
//!
//! Who changes what (locking.rst has the whole story): every change goes
//! through `tdp_mmu::set_spte_atomic` (compare-and-exchange, `mmu_lock` held
//! for read: a fault installs a table or a leaf into an empty entry, or
//! widens a read-only leaf of the same page to writable) or
//! `tdp_mmu::set_spte` (`mmu_lock` held for write: zaps), and then through
//! `tdp_mmu::handle_changed_spte`. The CPU itself only sets A and D.
//!
//! Pure logic (only `core`), tested on the host.

use super::types::{Gfn, Hpa, Pfn};

/// Entries per table.
pub(crate) const ENTRIES: usize = 512;
/// The root's level: 4-level NPT and EPT.
pub(crate) const ROOT_LEVEL: u32 = 4;
/// The lowest level: 4 KiB leaves.
pub(crate) const PG_LEVEL_4K: u32 = 1;

/// Software bit 11, the same in both formats: present to the MMU.
pub(crate) const SHADOW_PRESENT: u64 = 1 << 11;
/// Physical address bits 51:12, the same in both formats.
pub(crate) const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bit 7 of a non-4K entry, in both formats: the entry maps a large page
/// (2 MiB at level 2, 1 GiB at level 3).
pub(crate) const LARGE: u64 = 1 << 7;

/// The value of an SPTE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spte(pub(crate) u64);

impl Spte {
    /// An entry that maps nothing.
    pub(crate) const EMPTY: Self = Self(0);
    /// An entry being replaced by another thread: not present, hands off.
    /// KVM's value (bits 5, 7, 8): no present bit of either format, no
    /// [`SHADOW_PRESENT`], and no value rkvm ever installs.
    pub(crate) const FROZEN: Self = Self(0x1a0);

    /// Present to the MMU (a table or a leaf rkvm installed).
    pub(crate) const fn is_shadow_present(self) -> bool {
        self.0 & SHADOW_PRESENT != 0
    }

    pub(crate) const fn is_frozen(self) -> bool {
        self.0 == Self::FROZEN.0
    }

    /// A present entry that maps a page at `level` (as opposed to one that
    /// points to a table): every present entry at the 4 KiB level, and a
    /// large page above it.
    pub(crate) const fn is_last(self, level: u32) -> bool {
        level == PG_LEVEL_4K || self.0 & LARGE != 0
    }

    /// The page a leaf maps.
    pub(crate) const fn pfn(self) -> Pfn {
        Pfn((self.0 & ADDR_MASK) >> super::types::PAGE_SHIFT)
    }

    /// The table a non-leaf entry points to (KVM's `spte_to_child_pt`):
    /// `None` for anything but a shadow-present non-leaf entry at `level`.
    pub(crate) const fn child(self, level: u32) -> Option<Hpa> {
        if self.is_shadow_present() && !self.is_last(level) {
            Some(Hpa(self.0 & ADDR_MASK))
        } else {
            None
        }
    }
}

/// Where an access-tracked leaf keeps the hardware permission bits it had
/// (bits 52 and up, ignored by both formats; KVM's
/// `SHADOW_ACC_TRACK_SAVED_BITS_SHIFT`).
pub(crate) const ACC_TRACK_SAVED_SHIFT: u32 = 52;

/// A hardware SPTE format: where a format puts the bits both share in
/// meaning. The associated functions build and read entries of that
/// format; the rest of the MMU is written once, generic over it.
pub(crate) trait SpteFormat {
    /// Bits of which any set makes the entry present to the hardware.
    // For the fast page fault and the VMX backend; host-tested until then.
    #[cfg_attr(not(test), allow(dead_code))]
    const HW_PRESENT_MASK: u64;
    /// The permission bits of a non-leaf entry: all allowed, everything is
    /// decided at the leaf.
    const TABLE_BITS: u64;
    /// The bits of a readable, executable (not writable) leaf, with the
    /// accessed bit preset so the CPU does not write it back on first use.
    const LEAF_BITS: u64;
    /// Write permission.
    const WRITABLE: u64;
    /// Set by the CPU when the entry is used for a translation (page aging
    /// clears it).
    const ACCESSED: u64;
    /// Set by the CPU when a leaf is written through.
    const DIRTY: u64;
    /// Software: the host mapping allows writes.
    const HOST_WRITABLE: u64;
    /// Software: the MMU allows writes.
    const MMU_WRITABLE: u64;

    /// A non-leaf entry pointing to the table at `child`.
    fn table(child: Hpa) -> Spte {
        Spte((child.0 & ADDR_MASK) | Self::TABLE_BITS | SHADOW_PRESENT)
    }

    /// A 4 KiB leaf mapping `pfn`; writable (and then dirty preset, and
    /// host- and MMU-writable) or read-only.
    fn leaf(pfn: Pfn, writable: bool) -> Spte {
        let base = (pfn.hpa().0 & ADDR_MASK) | Self::LEAF_BITS | SHADOW_PRESENT;
        if writable {
            Spte(base | Self::WRITABLE | Self::DIRTY | Self::HOST_WRITABLE | Self::MMU_WRITABLE)
        } else {
            Spte(base)
        }
    }

    /// Present to the hardware (which may differ from shadow-present).
    fn is_hw_present(s: Spte) -> bool {
        s.0 & Self::HW_PRESENT_MASK != 0
    }

    /// Page aging's view of a leaf: whether the guest used it since the
    /// last [`Self::aged`]. With hardware accessed bits (`hw_ad`), the
    /// accessed bit; without them (EPT without A/D flags), whether the
    /// leaf is present to the hardware, i.e. not access-tracked.
    fn is_young(s: Spte, hw_ad: bool) -> bool {
        if hw_ad {
            Self::is_accessed(s)
        } else {
            Self::is_hw_present(s)
        }
    }

    /// A leaf made old. With hardware accessed bits, the accessed bit is
    /// cleared and the CPU sets it at the next use. Without, the leaf is
    /// access-tracked (KVM's `mark_spte_for_access_track`): its hardware
    /// permissions are saved in the high ignored bits and cleared, so the
    /// next use faults and the fault restores the leaf (a write one also
    /// widens it again). Write permission is not saved: the page is marked
    /// dirty when the leaf loses it (the change handler does that), so the
    /// next write is known too.
    fn aged(s: Spte, hw_ad: bool) -> Spte {
        if hw_ad {
            return Spte(s.0 & !Self::ACCESSED);
        }
        if !Self::is_hw_present(s) {
            return s;
        }
        let saved = s.0 & Self::HW_PRESENT_MASK & !Self::WRITABLE;
        let cleared = s.0 & !(Self::HW_PRESENT_MASK | Self::WRITABLE | Self::ACCESSED);
        Spte(cleared | saved << ACC_TRACK_SAVED_SHIFT)
    }

    /// The permissions an access-tracked leaf saved (none for any other
    /// entry).
    fn saved_permissions(s: Spte) -> u64 {
        if !s.is_shadow_present() || Self::is_hw_present(s) {
            return 0;
        }
        (s.0 >> ACC_TRACK_SAVED_SHIFT) & Self::HW_PRESENT_MASK & !Self::WRITABLE
    }

    /// An access-tracked leaf made present again with the permissions it
    /// saved (KVM's `restore_acc_track_spte`), accessed; any other entry
    /// unchanged.
    fn restored(s: Spte) -> Spte {
        let saved = Self::saved_permissions(s);
        if saved == 0 {
            return s;
        }
        let cleared = s.0 & !(saved << ACC_TRACK_SAVED_SHIFT);
        Spte(cleared | saved | Self::ACCESSED)
    }

    fn is_writable(s: Spte) -> bool {
        s.0 & Self::WRITABLE != 0
    }

    fn is_accessed(s: Spte) -> bool {
        s.0 & Self::ACCESSED != 0
    }

    /// Whether the page may have been written through this leaf: only a
    /// writable leaf with D set (D alone, on a leaf write-protected since,
    /// was moved to the page when W was cleared).
    fn is_dirty(s: Spte) -> bool {
        Self::is_writable(s) && s.0 & Self::DIRTY != 0
    }

    // For the fast page fault and the VMX backend; host-tested until then.
    #[cfg_attr(not(test), allow(dead_code))]
    fn is_host_writable(s: Spte) -> bool {
        s.0 & Self::HOST_WRITABLE != 0
    }

    // For the fast page fault and the VMX backend; host-tested until then.
    #[cfg_attr(not(test), allow(dead_code))]
    fn is_mmu_writable(s: Spte) -> bool {
        s.0 & Self::MMU_WRITABLE != 0
    }
}

/// AMD NPT entries.
pub(crate) struct Npt;

/// NPT bits (long-mode page-table entries).
pub(crate) mod npt {
    pub(crate) const PRESENT: u64 = 1 << 0;
    pub(crate) const WRITABLE: u64 = 1 << 1;
    /// Must be set: NPT checks guest accesses as user accesses.
    pub(crate) const USER: u64 = 1 << 2;
    pub(crate) const ACCESSED: u64 = 1 << 5;
    pub(crate) const DIRTY: u64 = 1 << 6;
    /// Software bits 9 and 10, ignored by the hardware (KVM's
    /// `DEFAULT_SPTE_{HOST,MMU}_WRITABLE`).
    pub(crate) const HOST_WRITABLE: u64 = 1 << 9;
    pub(crate) const MMU_WRITABLE: u64 = 1 << 10;
}

impl SpteFormat for Npt {
    const HW_PRESENT_MASK: u64 = npt::PRESENT;
    const TABLE_BITS: u64 = npt::PRESENT | npt::WRITABLE | npt::USER;
    const LEAF_BITS: u64 = npt::PRESENT | npt::USER | npt::ACCESSED;
    const WRITABLE: u64 = npt::WRITABLE;
    const ACCESSED: u64 = npt::ACCESSED;
    const DIRTY: u64 = npt::DIRTY;
    const HOST_WRITABLE: u64 = npt::HOST_WRITABLE;
    const MMU_WRITABLE: u64 = npt::MMU_WRITABLE;
}

/// Intel EPT entries (accessed and dirty flags used where EPTP bit 6
/// enables them).
pub(crate) struct Ept;

/// EPT bits.
// The VMX backend's format; host-tested until that backend uses it.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod ept {
    pub(crate) const READABLE: u64 = 1 << 0;
    pub(crate) const WRITABLE: u64 = 1 << 1;
    pub(crate) const EXECUTABLE: u64 = 1 << 2;
    pub(crate) const RWX: u64 = READABLE | WRITABLE | EXECUTABLE;
    /// Memory type of a leaf, bits 5:3.
    pub(crate) const MEMTYPE_SHIFT: u32 = 3;
    pub(crate) const MEMTYPE_MASK: u64 = 7 << MEMTYPE_SHIFT;
    /// Write-back: guest RAM.
    pub(crate) const MEMTYPE_WB: u64 = 6;
    /// Ignore the guest's PAT for this leaf (RAM is WB whatever it says).
    pub(crate) const IGNORE_PAT: u64 = 1 << 6;
    pub(crate) const ACCESSED: u64 = 1 << 8;
    pub(crate) const DIRTY: u64 = 1 << 9;
    /// Software bits in the high ignored range (KVM's
    /// `EPT_SPTE_{HOST,MMU}_WRITABLE` in Linux 7.3; they moved there from
    /// 57 and 58, which newer EPT features give a meaning).
    pub(crate) const HOST_WRITABLE: u64 = 1 << 53;
    pub(crate) const MMU_WRITABLE: u64 = 1 << 55;
}

impl SpteFormat for Ept {
    const HW_PRESENT_MASK: u64 = ept::RWX;
    const TABLE_BITS: u64 = ept::RWX;
    const LEAF_BITS: u64 = ept::READABLE
        | ept::EXECUTABLE
        | (ept::MEMTYPE_WB << ept::MEMTYPE_SHIFT)
        | ept::IGNORE_PAT
        | ept::ACCESSED;
    const WRITABLE: u64 = ept::WRITABLE;
    const ACCESSED: u64 = ept::ACCESSED;
    const DIRTY: u64 = ept::DIRTY;
    const HOST_WRITABLE: u64 = ept::HOST_WRITABLE;
    const MMU_WRITABLE: u64 = ept::MMU_WRITABLE;
}

// The VMX backend's format; host-tested until that backend uses it.
#[cfg_attr(not(test), allow(dead_code))]
impl Ept {
    /// The R/W/X bits for an access permission, or `None` where EPT cannot
    /// express it: writable without readable is a misconfiguration, and
    /// execute-only needs the CPU's support (`IA32_VMX_EPT_VPID_CAP` bit
    /// 0). KVM's `make_spte` makes the same distinction (`shadow_xonly_valid`).
    pub(crate) const fn permissions(
        read: bool,
        write: bool,
        exec: bool,
        exec_only_ok: bool,
    ) -> Option<u64> {
        if write && !read {
            return None;
        }
        if exec && !read && !exec_only_ok {
            return None;
        }
        let mut bits = 0;
        if read {
            bits |= ept::READABLE;
        }
        if write {
            bits |= ept::WRITABLE;
        }
        if exec {
            bits |= ept::EXECUTABLE;
        }
        Some(bits)
    }

    /// The memory type of a leaf.
    pub(crate) const fn memtype(s: Spte) -> u64 {
        (s.0 & ept::MEMTYPE_MASK) >> ept::MEMTYPE_SHIFT
    }
}

/// Index into the table at `level` (4 = root) for guest frame `gfn`.
pub(crate) const fn index(gfn: Gfn, level: u32) -> usize {
    ((gfn.0 >> (9 * (level - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// Guest frames one entry at `level` covers.
pub(crate) const fn frames_per_entry(level: u32) -> u64 {
    1 << (9 * (level - 1))
}

/// Entry `i` of the table that replaces large leaf `large` at `level`
/// (eager splitting): the same permissions and bits, the `i`th part of its
/// page, itself large unless at the 4 KiB level (where bit 7 means
/// something else).
pub(crate) const fn split_child(large: Spte, level: u32, i: usize) -> Spte {
    let pfn = large.pfn().0 + i as u64 * frames_per_entry(level - 1);
    let mut bits = large.0 & !ADDR_MASK;
    if level - 1 == PG_LEVEL_4K {
        bits &= !LARGE;
    }
    Spte(bits | (pfn << super::types::PAGE_SHIFT))
}

/// What a fault should do with the leaf it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LeafAction {
    /// Install the new leaf over this (empty) entry.
    Install,
    /// The entry already maps the page at least as permissively: nothing
    /// to do, the new page reference must be dropped.
    AlreadyMapped,
    /// Widen a read-only leaf of the same page to writable; the old
    /// entry's reference stays, the new one must be dropped.
    MakeWritable,
    /// The leaf maps the page but is access-tracked (aged without hardware
    /// accessed bits): make it present to the hardware again.
    Restore,
    /// The entry is frozen, not rkvm's, or maps another page: drop the new
    /// reference and let the guest fault again.
    Retry,
}

/// Decides how a fault that resolved `pfn` (writable or not) treats the
/// current leaf `old`.
pub(crate) fn leaf_action<F: SpteFormat>(old: Spte, pfn: Pfn, writable: bool) -> LeafAction {
    if old == Spte::EMPTY {
        return LeafAction::Install;
    }
    if !old.is_shadow_present() || old.pfn() != pfn {
        return LeafAction::Retry;
    }
    if !F::is_hw_present(old) {
        return LeafAction::Restore;
    }
    if F::is_writable(old) || !writable {
        LeafAction::AlreadyMapped
    } else {
        LeafAction::MakeWritable
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn npt_leaf_bits() {
        let ro = Npt::leaf(Pfn(0x1234), false);
        assert!(ro.is_shadow_present() && Npt::is_hw_present(ro) && !Npt::is_writable(ro));
        assert!(!Npt::is_host_writable(ro) && !Npt::is_mmu_writable(ro));
        assert_eq!(ro.pfn(), Pfn(0x1234));
        assert_eq!(ro.0 & npt::USER, npt::USER);
        assert!(Npt::is_accessed(ro) && !Npt::is_dirty(ro));
        let rw = Npt::leaf(Pfn(0x1234), true);
        assert!(Npt::is_writable(rw) && Npt::is_dirty(rw));
        assert!(Npt::is_host_writable(rw) && Npt::is_mmu_writable(rw));
        assert_eq!(rw.0 & (npt::HOST_WRITABLE | npt::MMU_WRITABLE), 0x600);
        assert!(rw.is_last(1) && rw.child(1).is_none());
        let t = Npt::table(Hpa(0x5000));
        assert_eq!(t.0, 0x5000 | 0x7 | SHADOW_PRESENT);
        assert_eq!(t.child(2), Some(Hpa(0x5000)));
        assert_eq!(Spte::EMPTY.child(2), None);
    }

    #[test]
    fn ept_leaf_bits() {
        let ro = Ept::leaf(Pfn(0xabcde), false);
        assert_eq!(ro.0 & ept::RWX, ept::READABLE | ept::EXECUTABLE);
        assert_eq!(Ept::memtype(ro), ept::MEMTYPE_WB);
        assert!(ro.0 & ept::IGNORE_PAT != 0 && Ept::is_accessed(ro));
        assert!(ro.is_shadow_present() && Ept::is_hw_present(ro));
        assert_eq!(ro.pfn(), Pfn(0xabcde));
        let rw = Ept::leaf(Pfn(0xabcde), true);
        assert_eq!(rw.0 & ept::RWX, ept::RWX);
        assert!(Ept::is_dirty(rw) && rw.0 & (1 << 9) != 0);
        assert_eq!(rw.0 & (1 << 53 | 1 << 55), 1 << 53 | 1 << 55);
        // The software bits are clear of the address and of every
        // hardware bit either format uses.
        for b in [SHADOW_PRESENT, ept::HOST_WRITABLE, ept::MMU_WRITABLE] {
            assert_eq!(b & (ADDR_MASK | 0x3ff), 0);
        }
        assert_eq!(Ept::table(Hpa(0x9000)).0, 0x9000 | 7 | SHADOW_PRESENT);
    }

    #[test]
    fn ept_execute_only() {
        assert_eq!(Ept::permissions(true, true, true, false), Some(7));
        assert_eq!(Ept::permissions(false, true, false, true), None);
        assert_eq!(Ept::permissions(false, false, true, false), None);
        let xo = Ept::permissions(false, false, true, true).unwrap();
        assert_eq!(xo, ept::EXECUTABLE);
        // An execute-only entry is present to the hardware although not
        // readable; the MMU's own notion of present is bit 11.
        assert!(Ept::is_hw_present(Spte(xo)));
        assert!(!Spte(xo).is_shadow_present());
        assert!(Ept::is_hw_present(Spte(xo | SHADOW_PRESENT)));
    }

    #[test]
    fn split_children_cover_the_large_page() {
        let big = Spte(Npt::leaf(Pfn(0x40200), true).0 | LARGE);
        let c0 = split_child(big, 2, 0);
        let c5 = split_child(big, 2, 5);
        assert_eq!((c0.pfn(), c5.pfn()), (Pfn(0x40200), Pfn(0x40205)));
        assert!(c5.is_last(1) && c5.0 & LARGE == 0 && Npt::is_writable(c5));
        assert_eq!(c5.0 & !ADDR_MASK, big.0 & !ADDR_MASK & !LARGE);
        let gig = Spte(Ept::leaf(Pfn(0x80000), false).0 | LARGE);
        let c = split_child(gig, 3, 3);
        assert_eq!(c.pfn(), Pfn(0x80000 + 3 * 512));
        assert!(c.is_last(2) && c.0 & LARGE != 0);
        assert_eq!(Ept::memtype(c), ept::MEMTYPE_WB);
    }

    #[test]
    fn frozen() {
        let f = Spte::FROZEN;
        assert!(f.is_frozen() && !f.is_shadow_present());
        assert!(!Npt::is_hw_present(f) && !Ept::is_hw_present(f));
        assert_eq!(f.child(2), None);
        assert!(!Spte::EMPTY.is_frozen());
        assert!(!Npt::leaf(Pfn(0), false).is_frozen());
    }

    #[test]
    fn indices() {
        let gfn = Gfn((3 << 27) | (5 << 18) | (7 << 9) | 9);
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
        let p = Pfn(7);
        let act = leaf_action::<Npt>;
        assert_eq!(act(Spte::EMPTY, p, true), LeafAction::Install);
        assert_eq!(act(Npt::leaf(p, false), p, true), LeafAction::MakeWritable);
        assert_eq!(act(Npt::leaf(p, true), p, false), LeafAction::AlreadyMapped);
        assert_eq!(
            act(Npt::leaf(p, false), p, false),
            LeafAction::AlreadyMapped
        );
        assert_eq!(act(Npt::leaf(Pfn(8), false), p, true), LeafAction::Retry);
        assert_eq!(act(Spte::FROZEN, p, true), LeafAction::Retry);
        assert_eq!(
            leaf_action::<Ept>(Ept::leaf(p, false), p, true),
            LeafAction::MakeWritable
        );
        let tracked = Ept::aged(Ept::leaf(p, true), false);
        assert_eq!(leaf_action::<Ept>(tracked, p, false), LeafAction::Restore);
        assert_eq!(leaf_action::<Ept>(tracked, Pfn(8), false), LeafAction::Retry);
    }

    #[test]
    fn aging_with_and_without_hardware_accessed_bits() {
        let rw = Ept::leaf(Pfn(0x42), true);
        // With A/D: only A goes.
        let old = Ept::aged(rw, true);
        assert_eq!(old.0, rw.0 & !ept::ACCESSED);
        assert!(!Ept::is_young(old, true) && Ept::is_young(rw, true));
        // Without: access-tracked. Not present to the hardware, still the
        // MMU's, same page; R and X saved at 52 and 54, clear of the
        // software writable bits (53, 55); W gone (and so not dirty).
        let t = Ept::aged(rw, false);
        assert!(!Ept::is_hw_present(t) && t.is_shadow_present());
        assert!(!Ept::is_young(t, false) && Ept::is_young(rw, false));
        assert_eq!(t.pfn(), Pfn(0x42));
        let saved = (ept::READABLE | ept::EXECUTABLE) << ACC_TRACK_SAVED_SHIFT;
        assert_eq!(t.0 & saved, saved);
        assert!(Ept::is_host_writable(t) && Ept::is_mmu_writable(t));
        assert!(!Ept::is_writable(t) && !Ept::is_dirty(t));
        assert!(t.is_last(1));
        assert_eq!(Ept::aged(t, false), t, "aging a tracked leaf again changes nothing");
        // A large leaf stays large.
        let big = Spte(Ept::leaf(Pfn(0x200), false).0 | LARGE);
        assert!(Ept::aged(big, false).is_last(2));
        // Restored: the saved bits back, accessed, still not writable.
        let back = Ept::restored(t);
        assert!(Ept::is_hw_present(back) && Ept::is_young(back, false));
        assert_eq!(back.0 & ept::RWX, ept::READABLE | ept::EXECUTABLE);
        assert_eq!(back.0 & saved, 0);
        assert!(Ept::is_host_writable(back) && !Ept::is_writable(back));
        assert_eq!(Ept::restored(back), back, "only tracked leaves change");
        assert_eq!(Ept::restored(Spte::FROZEN), Spte::FROZEN);
        // NPT (always A/D in practice) tracks the same way if asked.
        let n = Npt::aged(Npt::leaf(Pfn(3), true), false);
        assert!(!Npt::is_hw_present(n) && n.is_shadow_present() && !Npt::is_young(n, false));
    }
}
