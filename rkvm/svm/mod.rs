// SPDX-License-Identifier: GPL-2.0

//! AMD SVM backend.

pub(crate) mod asid;
mod features;
pub(crate) mod seg;
pub(crate) mod vcpu;
pub(crate) mod vmcb;

pub(crate) use features::{SvmFeatures, SvmUnsupported};

use features::{
    SvmCpuid, CPUID_EXT_FEATURES, CPUID_SVM_FEATURES, EFER_SVME, MSR_EFER, MSR_VM_CR,
    MSR_VM_HSAVE_PA,
};
use kernel::{page::Page, prelude::*};

use crate::x86;

/// Reads CPUID and `VM_CR` on the current CPU and decodes SVM support.
pub(crate) fn detect() -> Result<SvmFeatures, SvmUnsupported> {
    let max_ext_leaf = x86::cpuid(0x8000_0000, 0).eax;
    let has_leaves = max_ext_leaf >= CPUID_SVM_FEATURES;
    let ext = x86::cpuid(CPUID_EXT_FEATURES, 0);
    let svm = if has_leaves {
        x86::cpuid(CPUID_SVM_FEATURES, 0)
    } else {
        ext
    };
    let id = SvmCpuid {
        max_ext_leaf,
        ext_ecx: ext.ecx,
        svm_ebx: svm.ebx,
        svm_edx: svm.edx,
    };
    // VM_CR exists only on CPUs with SVM; read it only then.
    let vm_cr = if features::has_svm_bit(id.ext_ecx) {
        x86::rdmsr(MSR_VM_CR)
    } else {
        None
    };
    SvmFeatures::decode(id, vm_cr)
}

/// Turns SVM on for the current CPU (`cpu`), with `hsave` as its host-save
/// area. Fails with `EBUSY` if SVM is already on: another hypervisor owns it.
pub(crate) fn enable_cpu(cpu: u32, hsave: &Page) -> Result {
    let efer = x86::rdmsr(MSR_EFER).ok_or(EIO)?;
    if efer & EFER_SVME != 0 {
        pr_err!("SVM is already enabled on CPU {cpu}: another hypervisor (kvm_amd?) owns it\n");
        return Err(EBUSY);
    }
    // SAFETY: EFER.SVME was clear, so no one else uses SVM on this CPU and
    // rkvm takes ownership of SVME and VM_HSAVE_PA; `hsave` stays allocated
    // until after `disable_cpu` (see `hw::PerCpu`).
    unsafe {
        x86::wrmsr(MSR_VM_HSAVE_PA, x86::page_phys(hsave))?;
        x86::wrmsr(MSR_EFER, efer | EFER_SVME)?;
    }
    Ok(())
}

/// Turns SVM off on the current CPU (`cpu`).
pub(crate) fn disable_cpu(cpu: u32) {
    // GIF must be 1 when SVM goes off, or INIT and NMIs stay blocked.
    if x86::stgi().is_err() {
        pr_warn!("STGI faulted on CPU {cpu}: SVM was already off\n");
    }
    let Some(efer) = x86::rdmsr(MSR_EFER) else {
        return;
    };
    // SAFETY: rkvm enabled SVM on this CPU in `enable_cpu` and owns SVME
    // and VM_HSAVE_PA until this point.
    let res = unsafe {
        x86::wrmsr(MSR_EFER, efer & !EFER_SVME).and_then(|()| x86::wrmsr(MSR_VM_HSAVE_PA, 0))
    };
    if res.is_err() {
        pr_err!("could not turn SVM off on CPU {cpu}\n");
    }
}
