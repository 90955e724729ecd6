// SPDX-License-Identifier: GPL-2.0

//! The MMU's address kinds as types of their own, so that a guest frame
//! number cannot be passed where a host page frame or a host physical
//! address is expected (KVM keeps them apart as `gfn_t`, `kvm_pfn_t` and
//! `hpa_t` by convention; here the compiler checks it).
//!
//! Pure logic (only `core`), tested on the host.

/// Shift from a frame number to the address of its first byte.
pub(crate) const PAGE_SHIFT: u32 = 12;

/// A guest frame number: a guest-physical address shifted right by 12.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Gfn(pub(crate) u64);

/// A host page frame number: what `page_to_pfn` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pfn(pub(crate) u64);

/// A host physical address (of a page-table page, say).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Hpa(pub(crate) u64);

impl Gfn {
    /// The frame holding guest-physical address `gpa`.
    pub(crate) const fn from_gpa(gpa: u64) -> Self {
        Self(gpa >> PAGE_SHIFT)
    }

    /// `self + n`, saturating at the top of the address space.
    pub(crate) const fn add(self, n: u64) -> Self {
        Self(self.0.saturating_add(n))
    }

    /// `self` rounded down to a multiple of `n` frames (`n` a power of two).
    pub(crate) const fn align_down(self, n: u64) -> Self {
        Self(self.0 & !(n - 1))
    }
}

impl Pfn {
    /// The host physical address of the frame's first byte.
    pub(crate) const fn hpa(self) -> Hpa {
        Hpa(self.0 << PAGE_SHIFT)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Gfn::from_gpa(0x1234_5678), Gfn(0x12345));
        assert_eq!(Pfn(7).hpa(), Hpa(0x7000));
        assert_eq!(Gfn(0x3ff).align_down(512), Gfn(0x200));
        assert_eq!(Gfn(u64::MAX - 1).add(5), Gfn(u64::MAX));
    }
}
