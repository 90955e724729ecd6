// SPDX-License-Identifier: GPL-2.0

//! Guest memory translation: SPTE encodings, the TDP MMU, and the host
//! pages behind guest frames.

pub(crate) mod atomic;
pub(crate) mod dirty;
pub(crate) mod dirty_ring;
pub(crate) mod guest_walk;
pub(crate) mod invalidate;
mod page_ref;
mod shim;
pub(crate) mod spte;
pub(crate) mod tdp;
pub(crate) mod tdp_iter;
pub(crate) mod tdp_mmu;
pub(crate) mod tlb;
pub(crate) mod types;

pub(crate) use page_ref::GuestPage;
pub(crate) use types::{Gfn, Pfn};
