// SPDX-License-Identifier: GPL-2.0

//! AMD SVM backend.

pub(crate) mod asid;
mod features;
pub(crate) mod nmi;
pub(crate) mod seg;
pub(crate) mod vcpu;
pub(crate) mod vmcb;

pub(crate) use features::{SvmFeatures, SvmUnsupported};

use core::sync::atomic::{AtomicU32, AtomicU64};
use features::{
    SvmCpuid, CPUID_EXT_FEATURES, CPUID_SVM_FEATURES, EFER_SVME, MSR_EFER, MSR_VM_CR,
    MSR_VM_HSAVE_PA,
};

use kernel::{alloc::flags::__GFP_ZERO, error::to_result, page::Page, prelude::*};

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
        ext_edx: ext.edx,
        svm_ebx: svm.ebx,
        svm_edx: svm.edx,
        hypervisor: hypervisor_signature(),
    };
    // VM_CR exists only on CPUs with SVM; read it only then.
    let vm_cr = if features::has_svm_bit(id.ext_ecx) {
        x86::rdmsr(MSR_VM_CR)
    } else {
        None
    };
    SvmFeatures::decode(id, vm_cr)
}

/// CPUID 0x4000_0000's signature when CPUID 1 says a hypervisor is
/// there (ECX bit 31; the leaf means nothing otherwise), else zeros.
fn hypervisor_signature() -> [u32; 3] {
    const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
    if x86::cpuid(1, 0).ecx & CPUID_1_ECX_HYPERVISOR == 0 {
        return [0; 3];
    }
    let leaf = x86::cpuid(0x4000_0000, 0);
    [leaf.ebx, leaf.ecx, leaf.edx]
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
    if stgi().is_err() {
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

/// Sets the global interrupt flag, so INIT and NMIs are not left blocked
/// when SVM is turned off.
pub(crate) fn stgi() -> Result {
    // SAFETY: STGI only re-enables interrupts and NMIs that CLGI blocked;
    // it faults (caught) if SVM is off.
    to_result(unsafe { crate::shim::ffi::rkvm_stgi() })
}

/// What the SVM world switch needs of one CPU.
pub(crate) struct SvmCpu {
    /// The page VMSAVE/VMLOAD keep the host's state in across a VMRUN.
    host_save: Page,
    /// The ASID allocator (`asid.rs`): touched only by the CPU itself,
    /// with IRQs off (see `vcpu.rs`).
    pub(crate) asid_next: AtomicU32,
    pub(crate) asid_generation: AtomicU64,
}

impl SvmCpu {
    pub(crate) fn new() -> Result<Self> {
        let fresh = asid::AsidCpu::new();
        Ok(Self {
            host_save: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
            asid_next: AtomicU32::new(fresh.next),
            asid_generation: AtomicU64::new(fresh.generation),
        })
    }

    /// Physical address of the host state page.
    pub(crate) fn host_save_pa(&self) -> u64 {
        x86::page_phys(&self.host_save)
    }
}
