// SPDX-License-Identifier: GPL-2.0

//! Intel VMX backend.

pub(crate) mod controls;
mod exit;
pub(crate) mod features;
pub(crate) mod seg;
pub(crate) mod vcpu;
pub(crate) mod vmcs;
mod vmcs_ops;
mod vpid;

pub(crate) use features::{VmxFeatures, VmxUnsupported};

use controls::{VmcsConfig, MSR_VMX_PROCBASED_CTLS, MSR_VMX_PROCBASED_CTLS2};
use features::*;
use kernel::{error::to_result, page::Page, prelude::*};

use crate::x86;

/// Reads CPUID and the VMX capability MSRs on the current CPU and decodes
/// VMX support.
pub(crate) fn detect() -> Result<VmxFeatures, VmxUnsupported> {
    let cpuid_1_ecx = x86::cpuid(1, 0).ecx;
    let vmx = has_vmx_bit(cpuid_1_ecx);
    // The VMX MSRs fault on CPUs without VMX; don't even ask then.
    let rd = |msr| if vmx { x86::rdmsr(msr) } else { None };
    VmxFeatures::decode(VmxMsrs {
        cpuid_1_ecx,
        feature_control: rd(MSR_FEATURE_CONTROL),
        basic: rd(MSR_VMX_BASIC),
        procbased: rd(MSR_VMX_PROCBASED_CTLS),
        procbased2: rd(MSR_VMX_PROCBASED_CTLS2),
        ept_vpid_cap: rd(MSR_VMX_EPT_VPID_CAP),
    })
}

/// Computes, from this CPU's capability MSRs, the VMX controls rkvm runs
/// guests with, and logs them. Fails with `ENODEV` if the CPU lacks one
/// rkvm needs. Call only once `detect` found VMX usable.
pub(crate) fn check_vmcs_config() -> Result<VmcsConfig> {
    let basic = x86::rdmsr(MSR_VMX_BASIC).ok_or(ENODEV)?;
    match VmcsConfig::compute(basic, x86::rdmsr) {
        Ok(c) => {
            pr_info!(
                "VMX controls: pin-based {:#010x}, primary {:#010x}, secondary {:#010x}, exit {:#010x}, entry {:#010x}\n",
                c.pin_based,
                c.primary,
                c.secondary,
                c.exit,
                c.entry
            );
            Ok(c)
        }
        Err(e) => {
            // `ControlsError` is pure, so it implements `core::fmt::Display`,
            // which the kernel's formatter takes through `Arguments`.
            pr_err!("VMX is unusable: {}\n", format_args!("{e}"));
            Err(ENODEV)
        }
    }
}

/// The L1D flush before VM entry on CPUs with L1TF, set up while this
/// lives (see `rkvm_l1d_flush_setup` in helpers.c).
pub(crate) struct L1dFlush(());

impl L1dFlush {
    pub(crate) fn setup() -> Result<Self> {
        // SAFETY: called once, before any vCPU exists; undone in `drop`.
        let mode = unsafe { crate::shim::ffi::rkvm_l1d_flush_setup() };
        if mode < 0 {
            return Err(Error::from_errno(mode));
        }
        // `enum vmx_l1d_flush_state`.
        let what = match mode {
            1 => "never (mitigation off)",
            2 => "conditional",
            3 => "always",
            _ => "not needed",
        };
        pr_info!("L1D flush before VM entry: {what}\n");
        Ok(Self(()))
    }
}

impl Drop for L1dFlush {
    fn drop(&mut self) {
        // SAFETY: set up in `setup`; no vCPU is left to enter a guest.
        unsafe { crate::shim::ffi::rkvm_l1d_flush_cleanup() };
    }
}

/// Writes the VMCS revision identifier at the start of a VMXON region.
pub(crate) fn init_vmxon_region(page: &Page, f: &VmxFeatures) -> Result {
    let rev = f.vmcs_revision.to_ne_bytes();
    // SAFETY: `page` was just allocated by the caller and is not yet shared
    // with anyone, so nothing can race with this write; 4 bytes fit a page.
    unsafe { page.write_raw(rev.as_ptr(), 0, rev.len()) }
}

/// Enters VMX operation on the current CPU (`cpu`) with `region` as its
/// VMXON region. Fails with `EBUSY` if CR4.VMXE is already set: another
/// hypervisor owns VMX here.
pub(crate) fn enable_cpu(cpu: u32, region: &Page, _f: &VmxFeatures) -> Result {
    let cr4 = x86::cr4();
    if cr4 & CR4_VMXE != 0 {
        pr_err!("VMX is already enabled on CPU {cpu}: another hypervisor (kvm_intel?) owns it\n");
        return Err(EBUSY);
    }
    let cr0_ok = cr_allowed_in_vmx(
        x86::cr0(),
        x86::rdmsr(MSR_VMX_CR0_FIXED0).ok_or(EIO)?,
        x86::rdmsr(MSR_VMX_CR0_FIXED1).ok_or(EIO)?,
    );
    let cr4_ok = cr_allowed_in_vmx(
        cr4 | CR4_VMXE,
        x86::rdmsr(MSR_VMX_CR4_FIXED0).ok_or(EIO)?,
        x86::rdmsr(MSR_VMX_CR4_FIXED1).ok_or(EIO)?,
    );
    if !cr0_ok || !cr4_ok {
        pr_err!("CR0/CR4 on CPU {cpu} do not allow VMX operation\n");
        return Err(EIO);
    }
    // SAFETY: CR4.VMXE was clear, so rkvm takes ownership of it on this CPU.
    unsafe { x86::cr4_update(CR4_VMXE, true) };
    // SAFETY: VMXE is set; `region` holds the revision identifier and stays
    // allocated until after `disable_cpu` (see `hw::PerCpu`).
    if let Err(e) = unsafe { vmxon(x86::page_phys(region)) } {
        pr_err!("VMXON failed on CPU {cpu}\n");
        // SAFETY: rkvm set VMXE just above and owns it.
        unsafe { x86::cr4_update(CR4_VMXE, false) };
        return Err(e);
    }
    Ok(())
}

/// Leaves VMX operation on the current CPU (`cpu`) and clears CR4.VMXE.
pub(crate) fn disable_cpu(cpu: u32) {
    // SAFETY: rkvm entered VMX operation on this CPU in `enable_cpu`.
    if unsafe { vmxoff() }.is_err() {
        pr_warn!("VMXOFF faulted on CPU {cpu}: VMX operation was already off\n");
    }
    // SAFETY: rkvm owns CR4.VMXE on this CPU since `enable_cpu`.
    unsafe { x86::cr4_update(CR4_VMXE, false) };
}

/// Enters VMX root operation with the VMXON region at `phys`.
///
/// # Safety
///
/// CR4.VMXE must be set by the caller, and `phys` must be a page the caller
/// keeps allocated, initialised with the VMCS revision, until VMXOFF.
pub(crate) unsafe fn vmxon(phys: u64) -> Result {
    // SAFETY: preconditions above; a fault is caught by the helper.
    to_result(unsafe { crate::shim::ffi::rkvm_vmxon(phys) })
}

/// Leaves VMX root operation. Fails with `EIO` if the CPU was not in it.
///
/// # Safety
///
/// The caller must be the owner of VMX operation on this CPU.
pub(crate) unsafe fn vmxoff() -> Result {
    // SAFETY: a fault (not in VMX operation) is caught by the helper.
    to_result(unsafe { crate::shim::ffi::rkvm_vmxoff() })
}
