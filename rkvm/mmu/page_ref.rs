// SPDX-License-Identifier: GPL-2.0

//! Page references: the host page behind a guest frame, taken with
//! `get_user_pages_fast` in the VM owner's process for the duration of a
//! fault only. Once the SPTE is installed (under the invalidation check,
//! see `invalidate.rs`) the reference goes: the MMU notifier keeps the
//! mapping coherent with the host's page tables instead.

use kernel::{bindings, prelude::*};

use crate::shim::ffi;

use super::Pfn;

/// A reference on the host page behind a guest frame, from
/// `get_user_pages_fast` in the current process.
///
/// # Invariants
///
/// `pfn` names a page on which this value owns one reference.
pub(crate) struct GuestPage {
    pfn: Pfn,
    writable: bool,
}

impl GuestPage {
    /// Gets the page at `hva` of the current process. A write fault needs
    /// it writable; a read fault maps it writable only if the slot allows
    /// and the host page is already writable (no copy-on-write is broken
    /// for a read), else read-only, to be upgraded by a later write fault.
    pub(crate) fn get(hva: u64, write_fault: bool, slot_writable: bool) -> Result<Self> {
        let mut page: *mut bindings::page = core::ptr::null_mut();
        let writable = if write_fault {
            // SAFETY: `page` is a valid place for one page pointer.
            Self::check(unsafe { ffi::rkvm_gup(hva, true, &mut page) })?;
            true
        // SAFETY: as above; never sleeps.
        } else if slot_writable && unsafe { ffi::rkvm_gup_fast_only_write(hva, &mut page) } {
            true
        } else {
            // SAFETY: as above.
            Self::check(unsafe { ffi::rkvm_gup(hva, false, &mut page) })?;
            false
        };
        // SAFETY: GUP returned a valid page with a reference we own.
        let pfn = Pfn(unsafe { ffi::rkvm_page_to_pfn(page) });
        // INVARIANT: the reference GUP took is ours.
        Ok(Self { pfn, writable })
    }

    fn check(ret: i32) -> Result {
        match ret {
            1 => Ok(()),
            r if r == -(bindings::EINTR as i32) => Err(EINTR),
            // Nothing mapped there, or not writable: KVM's answer is EFAULT.
            _ => Err(EFAULT),
        }
    }

    pub(crate) fn pfn(&self) -> Pfn {
        self.pfn
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

}

impl Drop for GuestPage {
    fn drop(&mut self) {
        // A writable mapping may be written by the guest from now on: the
        // page is dirty, as KVM marks it when it releases a fault's page.
        // SAFETY: this value owns one reference on the page (invariant).
        unsafe { ffi::rkvm_release_pfn(self.pfn.0, self.writable) };
    }
}
