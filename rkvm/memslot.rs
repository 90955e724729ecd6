// SPDX-License-Identifier: GPL-2.0

//! Memory slots: which guest-physical ranges are backed by which userspace
//! ranges, and the rules `KVM_SET_USER_MEMORY_REGION(2)` enforces on them.
//!
//! A set of slots is immutable once published: a change builds a new set
//! (see [`Change::build`]) that the VM publishes under SRCU. Slots in a set
//! are sorted by guest frame number and never overlap, so a lookup by gfn
//! is a binary search.
//!
//! Pure logic (only `core`): the same file is tested on the host.

use crate::abi::field;

/// Bits of a page offset.
pub(crate) const PAGE_SHIFT: u32 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Slots per VM, reported as `KVM_CAP_NR_MEMSLOTS`; ids are `0..NR_MEMSLOTS`.
pub(crate) const NR_MEMSLOTS: u16 = 509;

/// Largest slot, in pages (KVM's `KVM_MEM_MAX_NR_PAGES`).
const MAX_NR_PAGES: u64 = (1 << 31) - 1;

/// `KVM_MEM_LOG_DIRTY_PAGES`.
pub(crate) const MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
/// `KVM_MEM_READONLY`.
pub(crate) const MEM_READONLY: u32 = 1 << 1;
/// `KVM_MEM_GUEST_MEMFD`.
pub(crate) const MEM_GUEST_MEMFD: u32 = 1 << 2;

/// Flags rkvm accepts. guest_memfd is refused (with `EINVAL`, as KVM
/// refuses flags it does not support) rather than ignored.
const VALID_FLAGS: u32 = MEM_READONLY | MEM_LOG_DIRTY_PAGES;

/// Flags accepted by the original `KVM_SET_USER_MEMORY_REGION`.
const V1_FLAGS: u32 = MEM_LOG_DIRTY_PAGES | MEM_READONLY;

/// One slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Memslot {
    /// Slot id (the low 16 bits of `kvm_userspace_memory_region.slot`).
    pub(crate) id: u16,
    /// First guest frame.
    pub(crate) base_gfn: u64,
    /// Number of pages, never 0.
    pub(crate) npages: u64,
    /// Userspace address of the first page.
    pub(crate) userspace_addr: u64,
    /// `KVM_MEM_*` flags.
    pub(crate) flags: u32,
}

impl Memslot {
    /// One past the last guest frame.
    pub(crate) const fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }

    /// Whether `gfn` is in this slot.
    // The fault path (not yet written) is the kernel user; tested on the host.
    #[allow(dead_code)]
    pub(crate) const fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn < self.end_gfn()
    }

    /// Userspace address backing `gfn`, which must be in the slot.
    #[allow(dead_code)]
    pub(crate) const fn gfn_to_hva(&self, gfn: u64) -> u64 {
        self.userspace_addr + ((gfn - self.base_gfn) << PAGE_SHIFT)
    }

    fn overlaps(&self, base_gfn: u64, end_gfn: u64) -> bool {
        self.base_gfn < end_gfn && base_gfn < self.end_gfn()
    }

    /// Whether the slot logs dirty pages (`KVM_MEM_LOG_DIRTY_PAGES`).
    pub(crate) const fn logs_dirty(&self) -> bool {
        self.flags & MEM_LOG_DIRTY_PAGES != 0
    }

    /// The largest TDP leaf level (1: 4 KiB, 2: 2 MiB, 3: 1 GiB) that may
    /// map `gfn` in this slot: the aligned block around it must lie in the
    /// slot, and guest frames and host addresses must be aligned alike, so
    /// that one host huge page can back the whole block (KVM's
    /// `disallow_lpage`). A slot that logs dirty pages is mapped 4 KiB at a
    /// time, so that a write dirties one page.
    pub(crate) const fn max_mapping_level(&self, gfn: u64) -> u32 {
        if self.logs_dirty() {
            return 1;
        }
        let mut level = 3;
        while level > 1 {
            let block = 1u64 << (9 * (level - 1));
            let first = gfn & !(block - 1);
            let skew = self.base_gfn ^ (self.userspace_addr >> PAGE_SHIFT);
            if skew & (block - 1) == 0 && first >= self.base_gfn && first + block <= self.end_gfn() {
                return level;
            }
            level -= 1;
        }
        1
    }

    /// One past the last userspace address backing the slot.
    pub(crate) const fn end_hva(&self) -> u64 {
        self.userspace_addr + (self.npages << PAGE_SHIFT)
    }

    /// The guest frames `[first, end)` that host addresses `[start, end)`
    /// back in this slot (empty if they do not overlap it).
    pub(crate) fn gfns_for_hva(&self, start: u64, end: u64) -> (u64, u64) {
        let lo = start.max(self.userspace_addr);
        let hi = end.min(self.end_hva());
        if lo >= hi {
            return (self.base_gfn, self.base_gfn);
        }
        let first = self.base_gfn + ((lo - self.userspace_addr) >> PAGE_SHIFT);
        // A partial page at the end still backs its frame.
        let last = self.base_gfn + ((hi - self.userspace_addr + PAGE_SIZE - 1) >> PAGE_SHIFT);
        (first, last)
    }
}

/// One slot in the by-address index of a memslot set (see
/// [`build_hva_index`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HvaEntry {
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Index of the slot in its set.
    pub(crate) slot: usize,
    /// The largest `end` of this entry and all before it.
    max_end: u64,
}

/// Fills `index` (as long as `slots`) with the slots' host ranges sorted
/// by start address, so that [`hva_overlaps`] finds the slots an MMU
/// notifier range touches without a loop over every slot. Slots may share
/// host memory, so the ranges may overlap.
pub(crate) fn build_hva_index(slots: &[Memslot], index: &mut [HvaEntry]) {
    for ((i, s), e) in slots.iter().enumerate().zip(index.iter_mut()) {
        *e = HvaEntry {
            start: s.userspace_addr,
            end: s.end_hva(),
            slot: i,
            max_end: 0,
        };
    }
    index.sort_unstable_by_key(|e| e.start);
    let mut max_end = 0;
    for e in index.iter_mut() {
        max_end = max_end.max(e.end);
        e.max_end = max_end;
    }
}

/// The entries of `index` (from [`build_hva_index`]) whose range overlaps
/// `[start, end)`: a binary search, then a walk back that stops once no
/// earlier range reaches `start`, so O(log n + overlapping entries) for
/// slots that do not share host memory.
pub(crate) fn hva_overlaps(index: &[HvaEntry], start: u64, end: u64) -> impl Iterator<Item = &HvaEntry> {
    let below = index.partition_point(|e| e.start < end);
    index[..below]
        .iter()
        .rev()
        .take_while(move |e| e.max_end > start)
        .filter(move |e| e.end > start)
}

/// `struct kvm_userspace_memory_region2` (the original `..._region` is its
/// first 32 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RegionRequest {
    /// Address space (bits 31:16) and slot id (bits 15:0).
    pub(crate) slot: u32,
    /// `KVM_MEM_*` flags.
    pub(crate) flags: u32,
    /// Guest-physical address of the slot.
    pub(crate) guest_phys_addr: u64,
    /// Size in bytes; 0 deletes the slot.
    pub(crate) memory_size: u64,
    /// Userspace address of the backing memory.
    pub(crate) userspace_addr: u64,
    /// `guest_memfd_offset` (v2 only).
    pub(crate) guest_memfd_offset: u64,
    /// `guest_memfd` (v2 only).
    pub(crate) guest_memfd: u32,
}

/// Size of `struct kvm_userspace_memory_region`.
pub(crate) const REGION_V1_SIZE: usize = 32;
/// Size of `struct kvm_userspace_memory_region2`.
pub(crate) const REGION_V2_SIZE: usize = 160;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(field(b, off))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(field(b, off))
}

impl RegionRequest {
    /// Decodes `struct kvm_userspace_memory_region`.
    pub(crate) fn from_v1(b: &[u8; REGION_V1_SIZE]) -> Self {
        Self {
            slot: u32_at(b, 0),
            flags: u32_at(b, 4),
            guest_phys_addr: u64_at(b, 8),
            memory_size: u64_at(b, 16),
            userspace_addr: u64_at(b, 24),
            guest_memfd_offset: 0,
            guest_memfd: 0,
        }
    }

    /// Decodes `struct kvm_userspace_memory_region2`; the padding is ignored,
    /// as KVM ignores it.
    pub(crate) fn from_v2(b: &[u8; REGION_V2_SIZE]) -> Self {
        Self {
            guest_memfd_offset: u64_at(b, 32),
            guest_memfd: u32_at(b, 40),
            ..Self::from_v1(
                b[..REGION_V1_SIZE]
                    .try_into()
                    .unwrap_or(&[0; REGION_V1_SIZE]),
            )
        }
    }

    /// The v1 ioctl accepts only its own flags.
    pub(crate) const fn v1_flags_ok(&self) -> bool {
        self.flags & !V1_FLAGS == 0
    }
}

/// Why a request was refused; the kernel maps these to errno values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotError {
    /// `EINVAL`: malformed or not allowed.
    Invalid,
    /// `EEXIST`: overlaps another slot.
    Overlap,
}

/// What a request does to the set, as KVM's `enum kvm_mr_change`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new slot.
    Create(Memslot),
    /// The slot goes away.
    Delete(Memslot),
    /// Same memory at another guest-physical address.
    Move {
        /// The slot as it was.
        old: Memslot,
        /// The slot as it will be.
        new: Memslot,
    },
    /// Only the flags change.
    FlagsOnly {
        /// The slot as it was.
        old: Memslot,
        /// The slot as it will be.
        new: Memslot,
    },
}

/// Limits that come from the host, passed in so this file stays pure.
pub(crate) struct HostLimits<F: Fn(u64, u64) -> bool> {
    /// Highest guest frame the MMU can map (from the host MAXPHYADDR).
    pub(crate) max_gfn: u64,
    /// `access_ok(addr, size)`: the range lies in user space.
    pub(crate) user_range_ok: F,
}

/// Slot with `id` in `slots`, if any.
pub(crate) fn by_id(slots: &[Memslot], id: u16) -> Option<&Memslot> {
    slots.iter().find(|s| s.id == id)
}

/// Slot containing `gfn`, if any. `slots` must be sorted and disjoint, as
/// every set built by [`Change::build`] is.
#[allow(dead_code)]
pub(crate) fn lookup(slots: &[Memslot], gfn: u64) -> Option<&Memslot> {
    lookup_index(slots, gfn).map(|i| &slots[i])
}

/// Index in `slots` of the slot containing `gfn`, as [`lookup`].
pub(crate) fn lookup_index(slots: &[Memslot], gfn: u64) -> Option<usize> {
    let i = slots.partition_point(|s| s.end_gfn() <= gfn);
    slots.get(i).filter(|s| s.contains(gfn)).map(|_| i)
}

/// Checks `req` against the current `slots` exactly as KVM does and says
/// what it changes; `Ok(None)` means nothing changes.
pub(crate) fn plan<F: Fn(u64, u64) -> bool>(
    slots: &[Memslot],
    req: &RegionRequest,
    host: &HostLimits<F>,
) -> Result<Option<Change>, SlotError> {
    use SlotError::{Invalid, Overlap};

    if req.flags & !VALID_FLAGS != 0 {
        return Err(Invalid);
    }
    let as_id = req.slot >> 16;
    let id = req.slot as u16;
    if req.memory_size % PAGE_SIZE != 0 || req.guest_phys_addr % PAGE_SIZE != 0 {
        return Err(Invalid);
    }
    if req.userspace_addr % PAGE_SIZE != 0
        || !(host.user_range_ok)(req.userspace_addr, req.memory_size)
    {
        return Err(Invalid);
    }
    if as_id != 0 || id >= NR_MEMSLOTS {
        return Err(Invalid);
    }
    if req.guest_phys_addr.checked_add(req.memory_size).is_none() {
        return Err(Invalid);
    }
    let npages = req.memory_size >> PAGE_SHIFT;
    if npages > MAX_NR_PAGES {
        return Err(Invalid);
    }

    let old = by_id(slots, id).copied();
    if npages == 0 {
        return old.map(|o| Some(Change::Delete(o))).ok_or(Invalid);
    }
    let new = Memslot {
        id,
        base_gfn: req.guest_phys_addr >> PAGE_SHIFT,
        npages,
        userspace_addr: req.userspace_addr,
        flags: req.flags,
    };
    let change = match old {
        None => Change::Create(new),
        Some(old) => {
            if new.userspace_addr != old.userspace_addr
                || new.npages != old.npages
                || (new.flags ^ old.flags) & (MEM_READONLY | MEM_GUEST_MEMFD) != 0
            {
                return Err(Invalid);
            }
            if new.base_gfn != old.base_gfn {
                Change::Move { old, new }
            } else if new.flags != old.flags {
                Change::FlagsOnly { old, new }
            } else {
                return Ok(None);
            }
        }
    };
    if let Change::Create(new) | Change::Move { new, .. } = change {
        if slots
            .iter()
            .any(|s| s.id != id && s.overlaps(new.base_gfn, new.end_gfn()))
        {
            return Err(Overlap);
        }
        if new.end_gfn() - 1 > host.max_gfn {
            return Err(Invalid);
        }
    }
    Ok(Some(change))
}

impl Change {
    /// The slot that disappears from its old place, if any.
    pub(crate) const fn removed(&self) -> Option<&Memslot> {
        match self {
            Self::Create(_) => None,
            Self::Delete(old) | Self::Move { old, .. } | Self::FlagsOnly { old, .. } => Some(old),
        }
    }

    /// The slot whose guest frames must be unmapped once the change is
    /// published: a deleted slot, or a moved one at its old place.
    pub(crate) const fn unmapped(&self) -> Option<&Memslot> {
        match self {
            Self::Delete(old) | Self::Move { old, .. } => Some(old),
            Self::Create(_) | Self::FlagsOnly { .. } => None,
        }
    }

    /// The slot that starts logging dirty pages while mapped (a flags
    /// change): its writable leaves must become read-only.
    pub(crate) const fn starts_logging(&self) -> Option<&Memslot> {
        match self {
            Self::FlagsOnly { old, new } if !old.logs_dirty() && new.logs_dirty() => Some(new),
            _ => None,
        }
    }

    /// The slot that stops logging dirty pages: its 4 KiB leaves may be
    /// replaced by large ones.
    pub(crate) const fn stops_logging(&self) -> Option<&Memslot> {
        match self {
            Self::FlagsOnly { old, new } if old.logs_dirty() && !new.logs_dirty() => Some(new),
            _ => None,
        }
    }

    /// The slot that appears, if any.
    pub(crate) const fn added(&self) -> Option<&Memslot> {
        match self {
            Self::Delete(_) => None,
            Self::Create(new) | Self::Move { new, .. } | Self::FlagsOnly { new, .. } => Some(new),
        }
    }

    /// Number of slots after the change, given `len` before it.
    pub(crate) const fn new_len(&self, len: usize) -> usize {
        match self {
            Self::Create(_) => len + 1,
            Self::Delete(_) => len - 1,
            Self::Move { .. } | Self::FlagsOnly { .. } => len,
        }
    }

    /// Emits the set after the change, sorted by gfn, into `push`: `slots`
    /// without the removed slot, with the added one at its place.
    pub(crate) fn build<E>(
        &self,
        slots: &[Memslot],
        mut push: impl FnMut(Memslot) -> Result<(), E>,
    ) -> Result<(), E> {
        let removed = self.removed().map(|s| s.id);
        let mut added = self.added().copied();
        for s in slots.iter().filter(|s| Some(s.id) != removed) {
            if let Some(a) = added.filter(|a| a.base_gfn < s.base_gfn) {
                push(a)?;
                added = None;
            }
            push(*s)?;
        }
        match added {
            Some(a) => push(a),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn hva_index_finds_exactly_the_overlapping_slots() {
        let slot = |id: u16, gfn: u64, pages: u64, hva: u64| Memslot {
            id,
            base_gfn: gfn,
            npages: pages,
            userspace_addr: hva,
            flags: 0,
        };
        // Slot 2 shares host memory with slot 0; slot 3 is far away.
        let slots = [
            slot(0, 0, 16, 0x10_0000),
            slot(1, 0x100, 4, 0x20_0000),
            slot(2, 0x200, 8, 0x10_4000),
            slot(3, 0x400, 1, 0x7000_0000),
        ];
        let mut index = [HvaEntry::default(); 4];
        build_hva_index(&slots, &mut index);
        let hits = |start: u64, end: u64| {
            let mut v: Vec<u16> = hva_overlaps(&index, start, end)
                .map(|e| slots[e.slot].id)
                .collect();
            v.sort();
            v
        };
        assert_eq!(hits(0x10_5000, 0x10_6000), [0, 2]);
        assert_eq!(hits(0x10_0000, 0x10_1000), [0]);
        assert_eq!(hits(0x10_3000, 0x20_1000), [0, 1, 2], "spans three");
        assert_eq!(hits(0x11_0000, 0x20_0000), [] as [u16; 0], "the gap");
        assert_eq!(hits(0x7000_0000, 0x7000_0001), [3]);
        assert_eq!(hits(0, u64::MAX), [0, 1, 2, 3]);
        // Brute force agrees on a sweep of ranges.
        for start in (0x0f_0000u64..0x21_0000).step_by(0x3000) {
            for len in [0x1000u64, 0x5000, 0x40000] {
                let mut want: Vec<u16> = slots
                    .iter()
                    .filter(|s| s.userspace_addr < start + len && start < s.end_hva())
                    .map(|s| s.id)
                    .collect();
                want.sort();
                assert_eq!(hits(start, start + len), want, "{start:#x}+{len:#x}");
            }
        }
    }

    #[test]
    fn huge_page_levels() {
        let s = |gfn, pages, hva| Memslot {
            id: 0,
            base_gfn: gfn,
            npages: pages,
            userspace_addr: hva,
            flags: 0,
        };
        // 2 MiB-aligned on both sides: every full block may be 2 MiB.
        let a = s(0x200, 0x400, 0x4000_0000);
        assert_eq!(a.max_mapping_level(0x200), 2);
        assert_eq!(a.max_mapping_level(0x5ff), 2);
        // Guest and host alignment differ: never.
        let b = s(0x200, 0x400, 0x4000_1000);
        assert_eq!(b.max_mapping_level(0x300), 1);
        // Same alignment, but the block sticks out of the slot at either end.
        let c = s(0x201, 0x400, 0x4000_1000);
        assert_eq!(c.max_mapping_level(0x210), 1, "block starts before the slot");
        assert_eq!(c.max_mapping_level(0x410), 2);
        assert_eq!(c.max_mapping_level(0x600), 1, "block ends after the slot");
        // 1 GiB: a whole aligned GiB of the slot, aligned alike.
        let g = s(0x40000, 0x40400, 0x7f00_4000_0000);
        assert_eq!(g.max_mapping_level(0x40000), 3);
        assert_eq!(g.max_mapping_level(0x7ffff), 3);
        assert_eq!(g.max_mapping_level(0x80000), 2, "past the GiB: 2 MiB blocks");
        let h = s(0x40000, 0x40000, 0x7f00_4020_0000);
        assert_eq!(h.max_mapping_level(0x40000), 2, "2 MiB-aligned alike only");
    }

    #[test]
    fn gfns_for_hva_ranges() {
        let s = Memslot {
            id: 0,
            base_gfn: 0x100,
            npages: 16,
            userspace_addr: 0x40_0000,
            flags: 0,
        };
        assert_eq!(s.gfns_for_hva(0x40_0000, 0x40_1000), (0x100, 0x101));
        assert_eq!(s.gfns_for_hva(0x3f_0000, 0x40_2800), (0x100, 0x103));
        assert_eq!(s.gfns_for_hva(0x40_f000, 0x50_0000), (0x10f, 0x110));
        assert_eq!(s.gfns_for_hva(0x50_0000, 0x60_0000), (0x100, 0x100));
    }

    const MB: u64 = 1 << 20;

    fn host() -> HostLimits<impl Fn(u64, u64) -> bool> {
        // A 47-bit user address space and 48-bit guest-physical addresses.
        HostLimits {
            max_gfn: (1 << (48 - PAGE_SHIFT)) - 1,
            user_range_ok: |a: u64, s: u64| a.checked_add(s).is_some_and(|e| e <= 1 << 47),
        }
    }

    fn req(slot: u32, gpa: u64, size: u64, hva: u64) -> RegionRequest {
        RegionRequest {
            slot,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: hva,
            ..Default::default()
        }
    }

    /// Applies `r` to `set` like the kernel does, checking the invariants.
    fn apply(set: &mut Vec<Memslot>, r: RegionRequest) -> Result<Option<Change>, SlotError> {
        let change = plan(set, &r, &host())?;
        if let Some(c) = change {
            let mut next = Vec::new();
            c.build::<()>(set, |s| {
                next.push(s);
                Ok(())
            })
            .unwrap();
            assert_eq!(next.len(), c.new_len(set.len()));
            assert!(
                next.windows(2).all(|w| w[0].end_gfn() <= w[1].base_gfn),
                "sorted, disjoint"
            );
            *set = next;
        }
        Ok(change)
    }

    #[test]
    fn abi_layout() {
        let mut b = [0u8; REGION_V2_SIZE];
        b[0..4].copy_from_slice(&0x0001_0003u32.to_ne_bytes());
        b[4..8].copy_from_slice(&2u32.to_ne_bytes());
        b[8..16].copy_from_slice(&0x1000u64.to_ne_bytes());
        b[16..24].copy_from_slice(&0x2000u64.to_ne_bytes());
        b[24..32].copy_from_slice(&0x7000_0000u64.to_ne_bytes());
        b[32..40].copy_from_slice(&0x3000u64.to_ne_bytes());
        b[40..44].copy_from_slice(&7u32.to_ne_bytes());
        let r = RegionRequest::from_v2(&b);
        assert_eq!(
            r,
            RegionRequest {
                slot: 0x0001_0003,
                flags: 2,
                guest_phys_addr: 0x1000,
                memory_size: 0x2000,
                userspace_addr: 0x7000_0000,
                guest_memfd_offset: 0x3000,
                guest_memfd: 7,
            }
        );
        let v1 = RegionRequest::from_v1(b[..REGION_V1_SIZE].try_into().unwrap());
        assert_eq!(
            v1,
            RegionRequest {
                guest_memfd_offset: 0,
                guest_memfd: 0,
                ..r
            }
        );
    }

    #[test]
    fn create_lookup_delete() {
        let mut set = Vec::new();
        assert!(matches!(
            apply(&mut set, req(0, 0, MB, 0x10_0000)),
            Ok(Some(Change::Create(_)))
        ));
        assert!(matches!(
            apply(&mut set, req(1, 4 * MB, 2 * MB, 0x40_0000)),
            Ok(Some(Change::Create(_)))
        ));
        assert!(matches!(
            apply(&mut set, req(2, 2 * MB, MB, 0x80_0000)),
            Ok(Some(Change::Create(_)))
        ));
        assert_eq!(set.iter().map(|s| s.id).collect::<Vec<_>>(), [0, 2, 1]);

        assert_eq!(lookup(&set, 0).unwrap().id, 0);
        assert_eq!(lookup(&set, 255).unwrap().id, 0);
        assert!(lookup(&set, 256).is_none());
        assert_eq!(lookup(&set, 512).unwrap().id, 2);
        assert!(lookup(&set, 768).is_none());
        let s = lookup(&set, 1024 + 5).unwrap();
        assert_eq!((s.id, s.gfn_to_hva(1024 + 5)), (1, 0x40_0000 + 5 * 4096));
        assert!(lookup(&set, 1536).is_none());
        assert!(lookup(&set, u64::MAX).is_none());

        assert!(matches!(
            apply(&mut set, req(2, 0, 0, 0)),
            Ok(Some(Change::Delete(_)))
        ));
        assert!(lookup(&set, 512).is_none());
        // Deleting a slot that does not exist is an error, as in KVM.
        assert_eq!(apply(&mut set, req(2, 0, 0, 0)), Err(SlotError::Invalid));
        assert_eq!(apply(&mut set, req(300, 0, 0, 0)), Err(SlotError::Invalid));
    }

    #[test]
    fn overlap_is_eexist() {
        let mut set = Vec::new();
        apply(&mut set, req(0, 4 * MB, 2 * MB, 0x10_0000)).unwrap();
        for (gpa, size) in [
            (4 * MB, MB),
            (3 * MB, 2 * MB),
            (5 * MB, 4 * MB),
            (0, 16 * MB),
            (5 * MB, 4096),
        ] {
            assert_eq!(
                apply(&mut set, req(1, gpa, size, 0x100_0000)),
                Err(SlotError::Overlap),
                "{gpa:#x}+{size:#x}"
            );
        }
        // Adjacent is fine, on both sides.
        apply(&mut set, req(1, 6 * MB, MB, 0x100_0000)).unwrap();
        apply(&mut set, req(2, 3 * MB, MB, 0x200_0000)).unwrap();
        // A slot may not move onto another...
        assert_eq!(
            apply(&mut set, req(0, 5 * MB, 2 * MB, 0x10_0000)),
            Err(SlotError::Overlap)
        );
        // ...but may move over the space it leaves.
        apply(&mut set, req(2, 0, 0, 0)).unwrap();
        assert!(matches!(
            apply(&mut set, req(0, 3 * MB, 2 * MB, 0x10_0000)),
            Ok(Some(Change::Move { .. }))
        ));
    }

    #[test]
    fn move_and_flags() {
        let mut set = Vec::new();
        apply(&mut set, req(0, 0, MB, 0x10_0000)).unwrap();
        apply(&mut set, req(1, 8 * MB, MB, 0x20_0000)).unwrap();
        let c = apply(&mut set, req(0, 16 * MB, MB, 0x10_0000)).unwrap();
        assert!(
            matches!(c, Some(Change::Move { old, new }) if old.base_gfn == 0 && new.base_gfn == 4096)
        );
        assert_eq!(set.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 0]);
        assert!(lookup(&set, 0).is_none());
        assert_eq!(lookup(&set, 4096).unwrap().id, 0);
        // Same everything: no change.
        assert_eq!(apply(&mut set, req(0, 16 * MB, MB, 0x10_0000)), Ok(None));
        // Size and address of an existing slot cannot change.
        assert_eq!(
            apply(&mut set, req(0, 16 * MB, 2 * MB, 0x10_0000)),
            Err(SlotError::Invalid)
        );
        assert_eq!(
            apply(&mut set, req(0, 16 * MB, MB, 0x30_0000)),
            Err(SlotError::Invalid)
        );
    }

    #[test]
    fn readonly_slots() {
        let mut set = Vec::new();
        let ro = RegionRequest {
            flags: MEM_READONLY,
            ..req(0, 0, MB, 0x10_0000)
        };
        assert!(matches!(apply(&mut set, ro), Ok(Some(Change::Create(_)))));
        assert_eq!(lookup(&set, 0).unwrap().flags, MEM_READONLY);
        // KVM does not let an existing slot become writable or read-only.
        assert_eq!(
            apply(&mut set, req(0, 0, MB, 0x10_0000)),
            Err(SlotError::Invalid)
        );
    }

    #[test]
    fn dirty_logging_flag_changes() {
        let mut set = Vec::new();
        let log = |on| RegionRequest {
            flags: if on { MEM_LOG_DIRTY_PAGES } else { 0 },
            ..req(0, 0, 4 * MB, 0x4000_0000)
        };
        let c = apply(&mut set, log(true)).unwrap().unwrap();
        assert!(c.starts_logging().is_none() && c.unmapped().is_none(), "created logging");
        assert!(lookup(&set, 0).unwrap().logs_dirty());
        assert_eq!(lookup(&set, 0).unwrap().max_mapping_level(0), 1);
        let c = apply(&mut set, log(false)).unwrap().unwrap();
        assert_eq!(c.stops_logging().map(|s| s.id), Some(0));
        assert!(c.unmapped().is_none(), "a flags change keeps the mappings");
        assert_eq!(lookup(&set, 0).unwrap().max_mapping_level(0), 2);
        let c = apply(&mut set, log(true)).unwrap().unwrap();
        assert_eq!(c.starts_logging().map(|s| s.id), Some(0));
        assert_eq!(apply(&mut set, log(true)), Ok(None));
        // Deleted or moved: unmapped at the old place.
        let c = apply(&mut set, req(0, 0, 0, 0)).unwrap().unwrap();
        assert_eq!(c.unmapped().map(|s| s.base_gfn), Some(0));
        assert_eq!(lookup_index(&set, 0), None);
    }

    #[test]
    fn flags_not_yet_supported_are_refused() {
        let mut set = Vec::new();
        for flags in [MEM_GUEST_MEMFD, 1 << 3, u32::MAX] {
            let r = RegionRequest {
                flags,
                ..req(0, 0, MB, 0x10_0000)
            };
            assert_eq!(
                apply(&mut set, r),
                Err(SlotError::Invalid),
                "flags {flags:#x}"
            );
        }
        assert!(RegionRequest {
            flags: MEM_READONLY | MEM_LOG_DIRTY_PAGES,
            ..Default::default()
        }
        .v1_flags_ok());
        assert!(!RegionRequest {
            flags: MEM_GUEST_MEMFD,
            ..Default::default()
        }
        .v1_flags_ok());
    }

    #[test]
    fn bad_arguments_are_einval() {
        let mut set = Vec::new();
        let bad = [
            req(0, 0, MB + 1, 0x10_0000),                 // size not page aligned
            req(0, 0x800, MB, 0x10_0000),                 // gpa not page aligned
            req(0, 0, MB, 0x10_0800),                     // hva not page aligned
            req(0, 0, MB, (1 << 47) - 4096),              // hva range leaves user space
            req(0, 0, MB, u64::MAX - 4095),               // hva range wraps
            req(1 << 16, 0, MB, 0x10_0000),               // address space 1 (no SMM)
            req(NR_MEMSLOTS as u32, 0, MB, 0x10_0000),    // id out of range
            req(0, u64::MAX - 4095, 2 * 4096, 0x10_0000), // gpa range wraps
            req(0, 1 << 48, 4096, 0x10_0000),             // beyond MAXPHYADDR
            req(0, 0, (MAX_NR_PAGES + 1) << PAGE_SHIFT, 0x10_0000), // too big
        ];
        for r in bad {
            assert_eq!(apply(&mut set, r), Err(SlotError::Invalid), "{r:?}");
        }
        assert!(set.is_empty());
        // The last frame below MAXPHYADDR is fine.
        apply(&mut set, req(0, (1 << 48) - 4096, 4096, 0x10_0000)).unwrap();
    }

    #[test]
    fn many_slots_stay_sorted() {
        let mut set = Vec::new();
        // Insert in a scrambled order, then delete every third.
        for i in 0..NR_MEMSLOTS as u64 {
            let pos = (i * 193) % NR_MEMSLOTS as u64;
            apply(
                &mut set,
                req(i as u32, pos * 2 * MB, MB, 0x10_0000 + i * MB),
            )
            .unwrap();
        }
        assert_eq!(set.len(), NR_MEMSLOTS as usize);
        for i in (0..NR_MEMSLOTS as u32).step_by(3) {
            apply(&mut set, req(i, 0, 0, 0)).unwrap();
        }
        for i in 0..NR_MEMSLOTS as u64 {
            let pos = (i * 193) % NR_MEMSLOTS as u64;
            let found = lookup(&set, pos * 512 + 17).map(|s| s.id);
            assert_eq!(found, (i % 3 != 0).then_some(i as u16));
            assert!(lookup(&set, pos * 512 + 256).is_none());
        }
    }
}
