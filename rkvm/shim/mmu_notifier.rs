// SPDX-License-Identifier: GPL-2.0

//! MMU notifiers: a safe registration on an address space that calls back
//! into a shared `T` when the kernel changes the address space's page
//! tables (the kernel crate has no abstraction for them yet).

use core::{ffi::c_void, ptr::NonNull};

use kernel::{mm::Mm, prelude::*, sync::aref::ARef, sync::Arc};

use super::ffi;

/// What an MMU notifier reports.
pub(crate) trait NotifierOps: Send + Sync + 'static {
    /// The host is about to unmap or change `[start, end)`: drop every
    /// secondary mapping of it. With `blockable` false (the OOM reaper),
    /// the callee must not sleep; it returns `false` when it cannot finish
    /// without sleeping, and the kernel retries later.
    fn invalidate_range_start(&self, start: u64, end: u64, blockable: bool) -> bool;
    /// The change of `[start, end)` is done.
    fn invalidate_range_end(&self, start: u64, end: u64);
    /// The address space is going away: drop every secondary mapping.
    fn release(&self);
    /// Page aging: whether the guest accessed `[start, end)` since the
    /// last time this cleared it, clearing the record if `clear` (and
    /// flushing the TLBs then if `flush`).
    fn age(&self, start: u64, end: u64, clear: bool, flush: bool) -> bool;
}

/// An MMU notifier registered on `mm`, calling into `ctx`, until dropped.
///
/// # Invariants
///
/// `raw` is a live registration made by `rkvm_mn_register` on `mm` with
/// `ctx`'s address and `Self::OPS`; `ctx` outlives it (dropped after
/// `rkvm_mn_unregister`, which waits for callbacks in flight).
pub(crate) struct MmuNotifier<T: NotifierOps> {
    raw: NonNull<ffi::Mn>,
    mm: ARef<Mm>,
    /// Only the callbacks use it, through the pointer registered.
    _ctx: Arc<T>,
}

// SAFETY: the registration is only used through `drop`, from any thread;
// `T` is `Send + Sync`.
unsafe impl<T: NotifierOps> Send for MmuNotifier<T> {}
// SAFETY: `&MmuNotifier` gives access to nothing.
unsafe impl<T: NotifierOps> Sync for MmuNotifier<T> {}

impl<T: NotifierOps> MmuNotifier<T> {
    const OPS: ffi::MnOps = ffi::MnOps {
        invalidate_start: Self::invalidate_start,
        invalidate_end: Self::invalidate_end,
        release: Self::release,
        age: Self::age,
    };

    /// Registers on `mm` (which takes its mmap lock: the caller must not
    /// hold it).
    pub(crate) fn register(mm: &Mm, ctx: Arc<T>) -> Result<Self> {
        let ptr = Arc::as_ptr(&ctx).cast::<c_void>();
        // SAFETY: `mm` is a live address space; `ptr` stays valid for the
        // registration's life (`ctx` is kept until after unregistering);
        // `OPS` is a constant promoted to a static.
        let raw = unsafe { ffi::rkvm_mn_register(mm.as_raw(), ptr, &Self::OPS) };
        // The helper returns an ERR_PTR on failure.
        let addr = raw as isize;
        if (-4095..0).contains(&addr) {
            return Err(Error::from_errno(addr as i32));
        }
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        // INVARIANT: registered just above with `ctx` and `OPS`.
        Ok(Self {
            raw,
            mm: ARef::from(mm),
            _ctx: ctx,
        })
    }

    /// # Safety
    ///
    /// `ctx` is the `T` of a live registration (type invariant).
    unsafe extern "C" fn invalidate_start(
        ctx: *const c_void,
        start: usize,
        end: usize,
        blockable: bool,
    ) -> i32 {
        // SAFETY: the registration keeps `ctx` alive (type invariant).
        let t = unsafe { &*ctx.cast::<T>() };
        if t.invalidate_range_start(start as u64, end as u64, blockable) {
            0
        } else {
            EAGAIN.to_errno()
        }
    }

    /// # Safety
    ///
    /// As for `invalidate_start`.
    unsafe extern "C" fn invalidate_end(ctx: *const c_void, start: usize, end: usize) {
        // SAFETY: as above.
        let t = unsafe { &*ctx.cast::<T>() };
        t.invalidate_range_end(start as u64, end as u64);
    }

    /// # Safety
    ///
    /// As for `invalidate_start`.
    unsafe extern "C" fn release(ctx: *const c_void) {
        // SAFETY: as above.
        let t = unsafe { &*ctx.cast::<T>() };
        t.release();
    }
}

impl<T: NotifierOps> MmuNotifier<T> {
    /// # Safety
    ///
    /// As for `invalidate_start`.
    unsafe extern "C" fn age(
        ctx: *const c_void,
        start: usize,
        end: usize,
        clear: bool,
        flush: bool,
    ) -> bool {
        // SAFETY: the registration keeps `ctx` alive (type invariant).
        let t = unsafe { &*ctx.cast::<T>() };
        t.age(start as u64, end as u64, clear, flush)
    }
}

impl<T: NotifierOps> Drop for MmuNotifier<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live on `mm` (type invariant); after this no
        // callback runs, so `_ctx` may go with `self`.
        unsafe { ffi::rkvm_mn_unregister(self.raw.as_ptr(), self.mm.as_raw()) };
    }
}
