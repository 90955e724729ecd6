// SPDX-License-Identifier: GPL-2.0

//! The current CPU and task around a guest entry: IRQs off, the CPU
//! number, XCR0, pending signals, rescheduling, `KVM_SET_SIGNAL_MASK`.

use core::{
    marker::PhantomData,
    sync::atomic::{AtomicU64, Ordering},
};

use super::{ffi, x86};

/// IRQs are off on this CPU while this lives, so the task stays on it.
///
/// # Invariants
///
/// Created by disabling IRQs, which `drop` enables again; not `Send`, so
/// it is dropped on the CPU it was created on.
pub(crate) struct IrqsOff(PhantomData<*mut ()>);

impl IrqsOff {
    pub(crate) fn new() -> Self {
        // SAFETY: paired with the enable in `drop`.
        unsafe { ffi::rkvm_local_irq_disable() };
        // INVARIANT: IRQs were just disabled.
        Self(PhantomData)
    }

    /// The CPU this runs on (stable: IRQs are off).
    pub(crate) fn cpu(&self) -> u32 {
        // SAFETY: IRQs are off (invariant), so preemption cannot move the
        // task and `smp_processor_id` is valid.
        unsafe { ffi::rkvm_smp_processor_id() }
    }

    /// Loads the guest's breakpoint addresses into DR0-3 (with DR7 0 in
    /// between, so no host breakpoint fires on them). The caller puts the
    /// host's back with `restore_host_debugregs` before `self` goes.
    pub(crate) fn load_guest_debugregs(&self, db: &[u64; 4]) {
        // SAFETY: IRQs are off (invariant), so nothing of the host runs
        // with these values before they are put back; `db` is valid for
        // four reads.
        unsafe { ffi::rkvm_load_guest_debugregs(db.as_ptr()) };
    }

    /// Puts the host's DR0-3, DR6 and DR7 back.
    pub(crate) fn restore_host_debugregs(&self) {
        // SAFETY: writes the values the host's breakpoint code keeps for
        // this CPU; IRQs are off (invariant).
        unsafe { ffi::rkvm_restore_host_debugregs() };
    }

    /// Loads XCR0. The caller puts the host's value back before `self`
    /// goes: nothing in the kernel may run with the guest's XCR0, and with
    /// IRQs off nothing can until then.
    pub(crate) fn set_xcr0(&self, value: u64) {
        // SAFETY: IRQs are off (invariant); the value is the host's or a
        // guest value checked by `xsave::xcr0_is_valid` against the host's
        // components, so XSETBV does not fault.
        unsafe { ffi::rkvm_xsetbv0(value) };
    }
}

impl IrqsOff {
    /// Loads `value` into `TSC_AUX` if it differs from what the CPU holds,
    /// and returns the value it replaced, which the caller puts back
    /// before `self` goes. In kernel mode Linux does not read `TSC_AUX`
    /// (its paranoid entry stopped using RDPID for KVM's sake), and with
    /// IRQs off no task can run in between.
    pub(crate) fn load_tsc_aux(&self, value: u64) -> Option<u64> {
        let current = x86::rdmsr(crate::msr::TSC_AUX)?;
        if current == value {
            return None;
        }
        // SAFETY: IRQs are off (invariant) and the old value is restored
        // by the caller before they are back on; a 32-bit value does not
        // fault where the read did not.
        unsafe { x86::wrmsr(crate::msr::TSC_AUX, value) }.ok()?;
        Some(current)
    }
}

impl Drop for IrqsOff {
    fn drop(&mut self) {
        // SAFETY: IRQs were disabled in `new` on this CPU (invariant).
        unsafe { ffi::rkvm_local_irq_enable() };
    }
}

/// `host_xcr0`'s value once read; `u64::MAX` (never an XCR0) before.
static HOST_XCR0: AtomicU64 = AtomicU64::new(u64::MAX);

/// The XSAVE components the host kernel enables (its XCR0), 0 without
/// XSAVE. The same on every CPU and fixed from boot on, so it is read once
/// (as KVM keeps `kvm_host.xcr0`), not at every guest entry.
pub(crate) fn host_xcr0() -> u64 {
    let cached = HOST_XCR0.load(Ordering::Relaxed);
    if cached != u64::MAX {
        return cached;
    }
    // SAFETY: reads XCR0 only where CR4.OSXSAVE is set (checked by the
    // helper); no preconditions.
    let xcr0 = unsafe { ffi::rkvm_host_xcr0() };
    HOST_XCR0.store(xcr0, Ordering::Relaxed);
    xcr0
}

/// Whether the current task has a signal to take.
pub(crate) fn signal_pending() -> bool {
    // SAFETY: reads the current task's flags; no preconditions.
    unsafe { ffi::rkvm_signal_pending() }
}

/// Gives the CPU to another task if the scheduler asks for it. May sleep:
/// no spinlock may be held.
pub(crate) fn cond_resched() {
    // SAFETY: reads the current task's flags.
    if unsafe { ffi::rkvm_need_resched() } {
        // SAFETY: the caller holds no spinlock (documented above).
        unsafe { ffi::rkvm_cond_resched() };
    }
}

/// The blocked-signal mask of `KVM_SET_SIGNAL_MASK`, in force while this
/// lives.
///
/// # Invariants
///
/// The current task's blocked mask was replaced, its old value kept in
/// `real_blocked`; not `Send`, so the same task restores it.
pub(crate) struct SigmaskGuard(PhantomData<*mut ()>);

impl SigmaskGuard {
    /// Blocks the signals in `mask`, if any.
    pub(crate) fn activate(mask: Option<u64>) -> Option<Self> {
        mask.map(|m| {
            // SAFETY: replaces the current task's blocked mask, saving the
            // old one in `real_blocked`; `drop` restores it.
            unsafe { ffi::rkvm_sigset_activate(m) };
            // INVARIANT: the mask was just replaced.
            Self(PhantomData)
        })
    }
}

impl Drop for SigmaskGuard {
    fn drop(&mut self) {
        // SAFETY: paired with `rkvm_sigset_activate` in `activate`, on the
        // same task (invariant).
        unsafe { ffi::rkvm_sigset_deactivate() };
    }
}

/// Preempt notifiers are fired by the scheduler while this lives (a static
/// key the kernel keeps off until a user asks).
pub(crate) struct PreemptNotifiers(());

impl PreemptNotifiers {
    pub(crate) fn enable() -> Self {
        // SAFETY: paired with the decrement in `drop`.
        unsafe { ffi::rkvm_preempt_notifiers_enable(true) };
        Self(())
    }
}

impl Drop for PreemptNotifiers {
    fn drop(&mut self) {
        // SAFETY: `enable` incremented the key.
        unsafe { ffi::rkvm_preempt_notifiers_enable(false) };
    }
}
