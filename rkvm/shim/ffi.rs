// SPDX-License-Identifier: GPL-2.0

//! The C helpers of `helpers.c` (see `helpers.h` for why each exists),
//! declared once. Only the shims call them.

/// `struct fpu_guest`, only ever behind a pointer from
/// `rkvm_guest_fpu_alloc`.
#[repr(C)]
pub(super) struct FpuGuest {
    _opaque: [u8; 0],
}

extern "C" {
    pub(super) fn rkvm_local_irq_disable();
    pub(super) fn rkvm_local_irq_enable();
    pub(super) fn rkvm_smp_processor_id() -> u32;
    pub(super) fn rkvm_signal_pending() -> bool;
    pub(super) fn rkvm_need_resched() -> bool;
    pub(super) fn rkvm_cond_resched();
    pub(super) fn rkvm_sigset_activate(mask: u64);
    pub(super) fn rkvm_sigset_deactivate();

    pub(super) fn rkvm_guest_fpu_alloc() -> *mut FpuGuest;
    pub(super) fn rkvm_guest_fpu_free(gfpu: *mut FpuGuest);
    pub(super) fn rkvm_guest_fpu_swap(gfpu: *mut FpuGuest, enter_guest: bool);
    pub(super) fn rkvm_guest_fpu_prepare_entry();
    pub(super) fn rkvm_guest_fpu_get_uabi(gfpu: *mut FpuGuest, buf: *mut u8, size: u32, xfeatures: u64);
    pub(super) fn rkvm_guest_fpu_set_uabi(gfpu: *mut FpuGuest, buf: *const u8, xfeatures: u64) -> i32;
    pub(super) fn rkvm_host_xcr0() -> u64;
    pub(super) fn rkvm_xsetbv0(value: u64);
}
