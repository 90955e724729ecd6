// SPDX-License-Identifier: GPL-2.0

//! Where a halted vCPU sleeps, and how others get it out of guest mode.

use core::cell::UnsafeCell;

use kernel::bindings;

use super::ffi;

/// The one task that may sleep on this: the vCPU's thread in `KVM_RUN`
/// (KVM's `vcpu->wait`, an rcuwait). Waking needs no lock, so timer
/// callbacks in hardirq context and other vCPUs' threads wake it alike.
///
/// # Invariants
///
/// `0` is an initialized `struct rcuwait`; only the thread that owns the
/// vCPU (under its mutex) waits on it.
pub(crate) struct VcpuWait(UnsafeCell<bindings::rcuwait>);

// SAFETY: the rcuwait is made for waking from any context while its one
// waiter sleeps; its task pointer is accessed through RCU by the C side.
unsafe impl Send for VcpuWait {}
// SAFETY: as above: `wake` may run concurrently with `block_until`.
unsafe impl Sync for VcpuWait {}

impl VcpuWait {
    pub(crate) fn new() -> Self {
        // INVARIANT: a NULL task is an initialized, idle rcuwait
        // (`rcuwait_init`).
        Self(UnsafeCell::new(bindings::rcuwait {
            task: core::ptr::null_mut(),
        }))
    }

    /// Sleeps until `ready()` or a signal is pending. Returns whether
    /// `ready()` held (`false`: a signal).
    ///
    /// `ready` runs with the task already marked sleeping: it must only
    /// read (atomics), never sleep. A waker makes it true, then calls
    /// [`Self::wake`]: the barrier in `set_current_state` pairs with the
    /// one in `rcuwait_wake_up`, so no wakeup is lost between the check
    /// and `schedule`.
    pub(crate) fn block_until(&self, mut ready: impl FnMut() -> bool) -> bool {
        let w = self.0.get();
        // SAFETY: `w` is an initialized rcuwait (invariant) and this
        // thread is its only waiter (the vCPU's mutex is held).
        unsafe { ffi::rkvm_rcuwait_prepare(w) };
        let woken = loop {
            // SAFETY: marks the current task sleeping; `schedule` or
            // `finish_rcuwait` sets it running again.
            unsafe { ffi::rkvm_set_current_interruptible() };
            if ready() {
                break true;
            }
            // SAFETY: reads the current task's signal state.
            if unsafe { ffi::rkvm_signal_pending() } {
                break false;
            }
            // SAFETY: process context, no locks held that a waker needs
            // (the vCPU mutex is not one), task state set above.
            unsafe { bindings::schedule() };
        };
        // SAFETY: pairs with the prepare above; sets the task running.
        unsafe { bindings::finish_rcuwait(w) };
        woken
    }

    /// Wakes the waiter, if it sleeps. Any context.
    pub(crate) fn wake(&self) {
        // SAFETY: `self.0` is an initialized rcuwait (invariant); waking
        // is allowed from any context and concurrently with a wait.
        unsafe { bindings::rcuwait_wake_up(self.0.get()) };
    }
}

/// Interrupts `cpu` (a reschedule IPI) so that a vCPU in guest mode there
/// exits; nothing if that is this CPU, whose guest is not running while
/// its caller is. Any context.
pub(crate) fn kick_cpu(cpu: u32) {
    // SAFETY: the helper checks `cpu` against the online CPUs and runs
    // with preemption disabled around the IPI.
    unsafe { ffi::rkvm_kick_cpu(cpu) };
}
