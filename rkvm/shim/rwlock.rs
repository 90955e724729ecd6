// SPDX-License-Identifier: GPL-2.0

//! A data-less reader-writer spinlock (`rwlock_t`): `mmu_lock`.
//!
//! Rust-for-Linux has no `rwlock_t` abstraction. `mmu_lock` guards no single
//! value: it orders the changes to page tables that are themselves accessed
//! atomically, so the guards are tokens that functions take as proof that
//! the caller holds the lock in the right mode.

use core::marker::PhantomData;

use super::ffi;

use kernel::{bindings, prelude::*, str::CStr, sync::LockClassKey, types::Opaque};

/// Creates an [`RwLock`] initialiser with a lock class of its own.
macro_rules! new_rwlock {
    ($name:literal) => {
        $crate::rwlock::RwLock::new(kernel::c_str!($name), kernel::static_lock_class!())
    };
}
pub(crate) use new_rwlock;

/// A reader-writer spinlock.
///
/// # Invariants
///
/// `inner` is an initialised `rwlock_t`, pinned for as long as `self` lives.
#[pin_data]
pub(crate) struct RwLock {
    #[pin]
    inner: Opaque<bindings::rwlock_t>,
}

// SAFETY: an `rwlock_t` may be used from any thread.
unsafe impl Send for RwLock {}
// SAFETY: an `rwlock_t` is made for concurrent use.
unsafe impl Sync for RwLock {}

impl RwLock {
    /// An initialiser for a lock named `name` in lockdep class `key`.
    pub(crate) fn new(name: &'static CStr, key: Pin<&'static LockClassKey>) -> impl PinInit<Self> {
        // INVARIANT: the C initialiser sets up the lock in place.
        pin_init!(Self {
            inner <- Opaque::ffi_init(|ptr: *mut bindings::rwlock_t| {
                // SAFETY: `ptr` is valid uninitialised memory for an
                // `rwlock_t`; `name` and `key` are static.
                unsafe { ffi::rkvm_rwlock_init(ptr, name.as_char_ptr().cast(), key.as_ptr()) }
            }),
        })
    }

    /// Takes the lock for reading.
    pub(crate) fn read(&self) -> ReadGuard<'_> {
        // SAFETY: `inner` is initialised (type invariant).
        unsafe { ffi::rkvm_read_lock(self.inner.get()) };
        ReadGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock for writing.
    pub(crate) fn write(&self) -> WriteGuard<'_> {
        // SAFETY: `inner` is initialised (type invariant).
        unsafe { ffi::rkvm_write_lock(self.inner.get()) };
        WriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }
}

/// Proof that the lock is held for reading.
///
/// # Invariants
///
/// The current thread holds `lock` for reading until this is dropped.
pub(crate) struct ReadGuard<'a> {
    lock: &'a RwLock,
    /// Released on the CPU that took it.
    _not_send: PhantomData<*mut ()>,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the lock is held for reading (type invariant).
        unsafe { ffi::rkvm_read_unlock(self.lock.inner.get()) };
    }
}

/// Proof that the lock is held for writing.
///
/// # Invariants
///
/// The current thread holds `lock` for writing until this is dropped.
pub(crate) struct WriteGuard<'a> {
    lock: &'a RwLock,
    _not_send: PhantomData<*mut ()>,
}

impl WriteGuard<'_> {
    /// Whether the holder should let go for a moment: another CPU waits for
    /// the lock, or this one should reschedule.
    pub(crate) fn needbreak(&self) -> bool {
        // SAFETY: the lock is held for writing (type invariant).
        unsafe { ffi::rkvm_rwlock_needbreak(self.lock.inner.get()) }
    }

    /// Drops the lock, reschedules if needed, and takes it again for
    /// writing (`cond_resched_rwlock_write`). Whatever the lock protected
    /// may have changed when this returns.
    pub(crate) fn cond_resched(&self) {
        // INVARIANT: the lock is held for writing again on return.
        // SAFETY: the lock is held for writing (type invariant); no IRQs or
        // preemption are disabled beyond what the lock itself disabled.
        unsafe { ffi::rkvm_cond_resched_rwlock_write(self.lock.inner.get()) }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the lock is held for writing (type invariant).
        unsafe { ffi::rkvm_write_unlock(self.lock.inner.get()) };
    }
}
