// SPDX-License-Identifier: GPL-2.0

//! A value read locklessly under SRCU and replaced as a whole by writers:
//! the publication scheme of KVM's memslots.
//!
//! Readers enter an SRCU read section and load the pointer; the value they
//! see stays alive until they leave it. A writer swaps in a new value, waits
//! for an expedited SRCU grace period (every reader that could have loaded
//! the old pointer has left its read section), then frees the old value.
//! Readers may sleep inside the read section; writers must not hold one.

use core::{
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicPtr, Ordering},
};

use kernel::{
    prelude::*,
    sync::{srcu, Srcu},
};

/// A `T` published under SRCU.
///
/// # Invariants
///
/// `ptr` always comes from `KBox::into_raw` and is owned by this box; a
/// value that `ptr` stopped pointing to is freed only after an SRCU grace
/// period of `srcu`.
#[pin_data(PinnedDrop)]
pub(crate) struct SrcuBox<T> {
    #[pin]
    srcu: Srcu,
    ptr: AtomicPtr<T>,
}

// SAFETY: the box hands out `&T` to any thread (needs `T: Sync`) and drops
// a `T` on whichever thread replaces or drops it (needs `T: Send`).
unsafe impl<T: Send + Sync> Send for SrcuBox<T> {}
// SAFETY: as above; all shared mutation goes through the atomic pointer.
unsafe impl<T: Send + Sync> Sync for SrcuBox<T> {}

impl<T> SrcuBox<T> {
    /// Publishes `init`, guarded by the SRCU instance `srcu` (from
    /// `new_srcu!`, so each user gets its own lockdep class).
    pub(crate) fn new(init: KBox<T>, srcu: impl PinInit<Srcu, Error>) -> impl PinInit<Self, Error> {
        // INVARIANT: the pointer comes from `KBox::into_raw`.
        try_pin_init!(Self {
            srcu <- srcu,
            ptr: AtomicPtr::new(KBox::into_raw(init)),
        })
    }

    /// Enters a read section and returns the current value, valid until the
    /// returned reference is dropped.
    pub(crate) fn read(&self) -> SrcuRef<'_, T> {
        let guard = self.srcu.read_lock();
        // Acquire pairs with the release in `replace`: the value's contents
        // are visible before its address is.
        let ptr = self.ptr.load(Ordering::Acquire);
        // SAFETY: non-null by the type invariant.
        let val = unsafe { NonNull::new_unchecked(ptr) };
        SrcuRef { _guard: guard, val }
    }

    /// Publishes `new`, waits until no reader can see the old value, and
    /// drops it. Must not be called inside a read section of this box.
    pub(crate) fn replace(&self, new: KBox<T>) {
        let old = self.ptr.swap(KBox::into_raw(new), Ordering::AcqRel);
        self.srcu.synchronize_expedited();
        // SAFETY: `old` came from `KBox::into_raw` (type invariant) and the
        // grace period above ended every read section that could use it.
        drop(unsafe { KBox::from_raw(old) });
    }
}

#[pinned_drop]
impl<T> PinnedDrop for SrcuBox<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `ptr` came from `KBox::into_raw`; with `&mut self` there
        // is no reader left.
        drop(unsafe { KBox::from_raw(self.ptr.load(Ordering::Relaxed)) });
    }
}

/// A value read from an [`SrcuBox`], with the SRCU read section that keeps
/// it alive.
pub(crate) struct SrcuRef<'a, T> {
    _guard: srcu::Guard<'a>,
    val: NonNull<T>,
}

impl<T> Deref for SrcuRef<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the value is freed only after a grace period, which cannot
        // end while `_guard` holds the read section open.
        unsafe { self.val.as_ref() }
    }
}
