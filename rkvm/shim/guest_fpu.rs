// SPDX-License-Identifier: GPL-2.0

//! The guest's extended state (x87, SSE, AVX and every XSAVE component
//! rkvm offers), kept by the kernel's FPU code as KVM's is.
//!
//! A [`GuestFpu`] is a guest fpstate. [`GuestFpu::load`] swaps it in as
//! the current task's FPU state for the duration of `KVM_RUN`: from then
//! on a context switch, or a kernel-FPU section, saves the *guest's*
//! registers into it, and before each entry
//! [`GuestFpu::prepare_entry`] reloads them if anything did. So the guest
//! runs with its own registers and nothing else's, and no other task ever
//! sees the guest's. Outside `KVM_RUN` the state is in memory, where the
//! ioctls read and write it in the `KVM_GET_XSAVE` format.

use core::ptr::NonNull;

use kernel::prelude::*;

use super::{cpu::IrqsOff, ffi};

/// Size of `struct kvm_xsave`: the uABI format of the ioctls.
pub(crate) const XSAVE_UABI_SIZE: usize = 4096;

/// A guest fpstate.
///
/// # Invariants
///
/// `ptr` is a `struct fpu_guest` from `rkvm_guest_fpu_alloc`, owned here
/// and freed in `drop`.
pub(crate) struct GuestFpu {
    ptr: NonNull<ffi::FpuGuest>,
}

// SAFETY: the fpstate is plain memory owned by this value; the kernel's
// FPU code does not tie it to the allocating task. Callers serialise use
// through `&mut self` (and the vCPU mutex).
unsafe impl Send for GuestFpu {}
// SAFETY: `&GuestFpu` gives no access to the state.
unsafe impl Sync for GuestFpu {}

impl GuestFpu {
    /// A guest fpstate in its initial state.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions; returns NULL on failure.
        let ptr = NonNull::new(unsafe { ffi::rkvm_guest_fpu_alloc() }).ok_or(ENOMEM)?;
        // INVARIANT: freshly allocated and owned.
        Ok(Self { ptr })
    }

    /// Makes the guest's state the current task's until the returned
    /// guard goes (the rest of `KVM_RUN`).
    pub(crate) fn load(&mut self) -> LoadedGuestFpu<'_> {
        // SAFETY: `ptr` is valid (invariant); the swap saves the task's
        // own state and is undone by the guard's drop on this task.
        unsafe { ffi::rkvm_guest_fpu_swap(self.ptr.as_ptr(), true) };
        LoadedGuestFpu {
            fpu: self,
            _not_send: core::marker::PhantomData,
        }
    }

    /// The state in the `KVM_GET_XSAVE` format, components outside
    /// `xfeatures` reported in their initial state.
    pub(crate) fn get(&mut self, buf: &mut [u8; XSAVE_UABI_SIZE], xfeatures: u64) {
        // SAFETY: `ptr` is valid (invariant) and not loaded (`load`
        // borrows `self` mutably); `buf` is writable for its size.
        unsafe {
            ffi::rkvm_guest_fpu_get_uabi(
                self.ptr.as_ptr(),
                buf.as_mut_ptr(),
                XSAVE_UABI_SIZE as u32,
                xfeatures,
            )
        };
    }

    /// Sets the state from the `KVM_SET_XSAVE` format: `EINVAL` if it
    /// names components outside `xfeatures` or has reserved bits set.
    pub(crate) fn set(&mut self, buf: &[u8; XSAVE_UABI_SIZE], xfeatures: u64) -> Result {
        // SAFETY: `ptr` is valid (invariant) and not loaded; `buf` is
        // readable for its size, which is the uABI size or more.
        let r = unsafe { ffi::rkvm_guest_fpu_set_uabi(self.ptr.as_ptr(), buf.as_ptr(), xfeatures) };
        if r == 0 {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }
}

impl Drop for GuestFpu {
    fn drop(&mut self) {
        // SAFETY: owned (invariant) and not loaded (a guard borrows it).
        unsafe { ffi::rkvm_guest_fpu_free(self.ptr.as_ptr()) };
    }
}

/// The guest fpstate is the current task's while this lives.
///
/// # Invariants
///
/// `fpu` was swapped in on this task; not `Send`, so the same task swaps
/// it out in `drop`.
pub(crate) struct LoadedGuestFpu<'a> {
    fpu: &'a mut GuestFpu,
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl LoadedGuestFpu<'_> {
    /// Puts the guest's registers back if the kernel used the FPU since
    /// (a context switch or a kernel-FPU section), right before an entry.
    pub(crate) fn prepare_entry(&self, _irqs_off: &IrqsOff) {
        // SAFETY: IRQs are off (the argument proves it), as
        // `switch_fpu_return` on this path requires.
        unsafe { ffi::rkvm_guest_fpu_prepare_entry() };
    }
}

impl Drop for LoadedGuestFpu<'_> {
    fn drop(&mut self) {
        // SAFETY: swapped in by `GuestFpu::load` on this task (invariant).
        unsafe { ffi::rkvm_guest_fpu_swap(self.fpu.ptr.as_ptr(), false) };
    }
}
