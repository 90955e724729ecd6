// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the x86 instructions and kernel helpers rkvm's
//! hardware code uses. The `unsafe` of the FFI stays here.

use kernel::{error::to_result, page::Page, prelude::*};

use super::ffi;

/// The four registers CPUID returns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cpuid {
    pub(crate) eax: u32,
    pub(crate) ebx: u32,
    pub(crate) ecx: u32,
    pub(crate) edx: u32,
}

/// Executes CPUID on the current CPU.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: CPUID has no side effects beyond the four output registers.
    // RBX is reserved by LLVM, so it is saved and restored around the
    // instruction by hand.
    unsafe {
        core::arch::asm!(
            "mov {tmp:r}, rbx",
            "cpuid",
            "xchg {tmp:r}, rbx",
            tmp = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags),
        );
    }
    Cpuid { eax, ebx, ecx, edx }
}

/// Reads an MSR; `None` if the read faulted (the MSR does not exist).
pub(crate) fn rdmsr(msr: u32) -> Option<u64> {
    let mut val = 0u64;
    // SAFETY: `val` is a valid place for the result; a faulting RDMSR is
    // caught by the helper's exception-table fixup.
    let ret = unsafe { ffi::rkvm_rdmsr_safe(msr, &mut val) };
    (ret == 0).then_some(val)
}

/// Writes an MSR, returning `EIO` if the write faulted.
///
/// # Safety
///
/// Writing an MSR changes CPU state that the rest of the kernel may rely on;
/// the caller must own the architectural state it changes (here: the SVM
/// enable bit and host-save area that rkvm claimed on this CPU).
pub(crate) unsafe fn wrmsr(msr: u32, val: u64) -> Result {
    // SAFETY: a faulting WRMSR is caught by the helper; the caller
    // guarantees the write itself is allowed.
    to_result(unsafe { ffi::rkvm_wrmsr_safe(msr, val) })
}

/// The current CPU's CR4, from the kernel's shadow copy.
pub(crate) fn cr4() -> u64 {
    // SAFETY: reads a per-CPU variable; callers run pinned to a CPU.
    unsafe { ffi::rkvm_cr4_read() as u64 }
}

/// The current CPU's CR0.
pub(crate) fn cr0() -> u64 {
    // SAFETY: reading CR0 has no side effects.
    unsafe { ffi::rkvm_cr0_read() as u64 }
}

/// Sets (`on`) or clears bits of CR4 and the kernel's shadow of it.
///
/// # Safety
///
/// The caller must own the bits it changes (CR4.VMXE for rkvm) on this CPU.
pub(crate) unsafe fn cr4_update(mask: u64, on: bool) {
    // SAFETY: the helper keeps the kernel's CR4 shadow coherent with
    // interrupts off; the caller owns the bits.
    unsafe {
        if on {
            ffi::rkvm_cr4_set_bits(mask as usize)
        } else {
            ffi::rkvm_cr4_clear_bits(mask as usize)
        }
    }
}

/// Physical address of a page.
pub(crate) fn page_phys(page: &Page) -> u64 {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page`.
    unsafe { ffi::rkvm_page_to_phys(page.as_ptr()) }
}

/// CPUID leaf with the physical address width (EAX bits 7:0).
const CPUID_ADDRESS_SIZES: u32 = 0x8000_0008;

/// Highest guest frame number nested paging can map: NPT and EPT cannot
/// translate to addresses beyond the host's MAXPHYADDR.
pub(crate) fn max_gfn() -> u64 {
    let phys_bits = cpuid(CPUID_ADDRESS_SIZES, 0).eax & 0xff;
    (1u64 << (phys_bits.clamp(32, 52) - crate::memslot::PAGE_SHIFT)) - 1
}

/// Whether `[addr, addr + size)` lies in the current task's user space
/// (`access_ok`).
pub(crate) fn user_range_ok(addr: u64, size: u64) -> bool {
    // SAFETY: `access_ok` only compares the range with the user-space limit.
    unsafe { ffi::rkvm_access_ok(addr, size) }
}

/// Number of online CPUs (a snapshot: CPUs may come and go).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: reads the weight of the online mask; no preconditions.
    unsafe { ffi::rkvm_num_online_cpus() as usize }
}

/// The host TSC's frequency in kHz, as the kernel calibrated it.
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: reads a variable set once at boot; no preconditions.
    unsafe { ffi::rkvm_tsc_khz() }
}

/// Reads the host's clocks for kvmclock: the TSC and the times at it.
pub(crate) fn host_time() -> crate::pvclock::HostTime {
    let mut t = crate::pvclock::HostTime::default();
    // SAFETY: `t` is a valid place for the helper's result (`HostTime` is
    // `struct rkvm_host_time`'s layout); the timekeeping read it does has
    // no preconditions.
    unsafe { ffi::rkvm_host_time(&mut t) };
    t
}

/// Reads the time-stamp counter.
pub(crate) fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the TSC into EDX:EAX.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (hi as u64) << 32 | lo as u64
}

/// The current CPU's CR3: the page tables of the mm it runs in. Call with
/// preemption or IRQs off, or the value may be another CPU's by the time it
/// is used.
pub(crate) fn cr3() -> u64 {
    // SAFETY: reading CR3 has no side effects.
    unsafe { ffi::rkvm_cr3_read() }
}

/// The kernel's selectors, as a VM exit must load them to return to it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostSelectors {
    /// `__KERNEL_CS`.
    pub(crate) cs: u16,
    /// `__KERNEL_DS`, which the kernel keeps in SS.
    pub(crate) ds: u16,
    /// The TSS descriptor of the per-CPU GDT (the same index on every CPU).
    pub(crate) tr: u16,
}

/// The kernel's code, data and TSS selectors.
pub(crate) fn host_selectors() -> HostSelectors {
    // SAFETY: the helpers return compile-time constants of the kernel.
    unsafe {
        HostSelectors {
            cs: ffi::rkvm_host_cs(),
            ds: ffi::rkvm_host_ds(),
            tr: ffi::rkvm_host_tr(),
        }
    }
}
