// SPDX-License-Identifier: GPL-2.0

//! The kernel's dirty rings: `mmu/dirty_ring.rs` over vmalloc'ed entries,
//! which the vCPU fd maps at `abi::DIRTY_RING_PAGE_OFFSET`, as KVM's.

use core::ptr::NonNull;

use kernel::{
    alloc::allocator::Vmalloc,
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::Arc,
};

use crate::mmu::dirty_ring::{DirtyRing, RingEntry};

/// A vCPU's dirty ring.
pub(crate) type VcpuRing = DirtyRing<VVec<RingEntry>>;

/// A clear ring of `entries` entries (a size `dirty_ring::entries_for`
/// allowed).
pub(crate) fn new_ring(entries: u32) -> Result<Arc<VcpuRing>> {
    let n = entries as usize;
    let mut v = VVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        v.push_within_capacity(RingEntry::new())
            .map_err(|_| ENOMEM)?;
    }
    let ring = DirtyRing::new(v).ok_or(EINVAL)?;
    Ok(Arc::new(ring, GFP_KERNEL)?)
}

/// Page `i` of `ring`'s entries, or `None` past its end.
pub(crate) fn ring_page(ring: &VcpuRing, i: usize) -> Option<BorrowedPage<'_>> {
    let per_page = PAGE_SIZE / core::mem::size_of::<RingEntry>();
    let first = ring.entries().get(i.checked_mul(per_page)?)?;
    // SAFETY: `first` is in the buffer of the ring's `VVec`, a vmalloc
    // allocation that starts page-aligned and that whole pages of entries
    // fill (the number of entries is a power of two of at least a page's
    // worth), so it points at the start of page `i` of that allocation;
    // the allocation lives as long as the borrow of `ring`.
    Some(unsafe { Vmalloc::to_page(NonNull::from(first).cast()) })
}
