// SPDX-License-Identifier: GPL-2.0

//! Eventfds: signalling one (`KVM_IOEVENTFD`) and listening to one
//! (`KVM_IRQFD`).

use core::{ffi::c_void, ptr::NonNull};

use kernel::{bindings, error::from_err_ptr, prelude::*};

use super::ffi;

/// A reference to an eventfd's context.
///
/// # Invariants
///
/// `0` holds a reference taken by `eventfd_ctx_fdget`, put on drop.
pub(crate) struct EventFd(NonNull<bindings::eventfd_ctx>);

// SAFETY: an eventfd context may be signalled and released from any
// thread; the reference is all this holds.
unsafe impl Send for EventFd {}
// SAFETY: `signal` takes the context's own lock.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd of file descriptor `fd`: `EBADF` if it is none,
    /// `EINVAL` if it is not an eventfd.
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: looks `fd` up in the current task's table; on success
        // the context comes with a reference.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        let ctx = NonNull::new(ctx).ok_or(EINVAL)?;
        // INVARIANT: the reference taken above.
        Ok(Self(ctx))
    }

    /// Adds 1 to the counter and wakes its readers.
    pub(crate) fn signal(&self) {
        // SAFETY: `0` is a live context (invariant).
        unsafe { bindings::eventfd_signal_mask(self.0.as_ptr(), 0) };
    }

    /// The context's identity, to compare assignments.
    pub(crate) fn id(&self) -> *const c_void {
        self.0.as_ptr().cast()
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the reference this holds (invariant).
        unsafe { bindings::eventfd_ctx_put(self.0.as_ptr()) };
    }
}

/// What a listened eventfd's signal calls, in atomic context (the
/// eventfd's wait-queue lock held, IRQs off): `fire(owner, gsi)`.
pub(crate) type Fire = unsafe extern "C" fn(owner: *const c_void, gsi: u32);

/// An eventfd listened to: each signal calls its [`Fire`].
///
/// # Invariants
///
/// `0` came from `rkvm_irqfd_new` and is freed on drop (which stops the
/// listening and waits for a running call); the owner given to
/// [`Self::new`] stays valid until then.
pub(crate) struct IrqFdHook(NonNull<ffi::IrqFd>);

// SAFETY: the hook is driven from the thread that owns it (under a
// mutex); the eventfd side runs `fire`, which the owner makes thread-safe.
unsafe impl Send for IrqFdHook {}
// SAFETY: `&self` methods only read fields fixed at creation.
unsafe impl Sync for IrqFdHook {}

impl IrqFdHook {
    /// Takes the eventfd of `fd` (not listened to before [`Self::arm`]).
    ///
    /// # Safety
    ///
    /// `owner` must stay valid for `fire` until the hook is dropped.
    pub(crate) unsafe fn new(fd: i32, gsi: u32, fire: Fire, owner: *const c_void) -> Result<Self> {
        // SAFETY: the helper checks `fd`; the caller keeps `owner` valid
        // for `fire` (this function's contract).
        let p = from_err_ptr(unsafe { ffi::rkvm_irqfd_new(fd, gsi, fire, owner) })?;
        // INVARIANT: a hook from `rkvm_irqfd_new`.
        Ok(Self(NonNull::new(p).ok_or(ENOMEM)?))
    }

    /// Starts listening: `EBUSY` if another irqfd listens to the eventfd
    /// already (in any VM), as KVM. An eventfd already signalled fires at
    /// once.
    pub(crate) fn arm(&mut self) -> Result {
        // SAFETY: a hook from `rkvm_irqfd_new` (invariant), armed at most
        // once: `&mut self` and callers arm right after `new`.
        kernel::error::to_result(unsafe { ffi::rkvm_irqfd_arm(self.0.as_ptr()) })
    }

    /// The eventfd's identity (as [`EventFd::id`]).
    pub(crate) fn eventfd(&self) -> *const c_void {
        // SAFETY: a live hook (invariant).
        unsafe { ffi::rkvm_irqfd_eventfd(self.0.as_ptr()) }.cast()
    }

    pub(crate) fn gsi(&self) -> u32 {
        // SAFETY: a live hook (invariant).
        unsafe { ffi::rkvm_irqfd_gsi(self.0.as_ptr()) }
    }
}

impl Drop for IrqFdHook {
    fn drop(&mut self) {
        // SAFETY: a hook from `rkvm_irqfd_new` (invariant), freed once.
        unsafe { ffi::rkvm_irqfd_free(self.0.as_ptr()) };
    }
}
