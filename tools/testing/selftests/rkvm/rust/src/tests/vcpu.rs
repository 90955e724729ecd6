// SPDX-License-Identifier: GPL-2.0

//! vCPU creation, the architectural RESET state as each KVM backend
//! reports it, and KVM_{GET,SET}_{REGS,SREGS,FPU}, KVM_SET_TSS_ADDR and
//! KVM_SET_IDENTITY_MAP_ADDR round trips and refusals.

use crate::harness::{Ctx, TestResult};
use crate::util::{ename, get, new_vm};

pub(crate) fn vcpu_reset_state_and_round_trips(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    // kvm-ioctls maps KVM_GET_VCPU_MMAP_SIZE bytes of the vCPU fd here.
    let bsp = vm
        .create_vcpu(0)
        .map_err(|e| format!("create_vcpu(0): {}", ename(e.errno())))?;
    let ap = vm
        .create_vcpu(1)
        .map_err(|e| format!("create_vcpu(1): {}", ename(e.errno())))?;
    match vm.create_vcpu(1) {
        Err(e) if e.errno() == libc::EEXIST => {}
        Err(e) => {
            return Err(format!(
                "duplicate vCPU id: {}, want EEXIST",
                ename(e.errno())
            ));
        }
        Ok(_) => return Err("duplicate vCPU id accepted".into()),
    }

    // The architectural RESET state, exactly as stock KVM reports it.
    let regs = get("get_regs", bsp.get_regs())?;
    if (regs.rip, regs.rflags, regs.rdx) != (0xfff0, 2, 0x600) {
        return Err(format!(
            "reset rip/rflags/rdx = {:#x}/{:#x}/{:#x}",
            regs.rip, regs.rflags, regs.rdx
        ));
    }
    // Registers round-trip; RFLAGS bit 1 always reads as 1.
    let mut new = regs;
    new.rax = 0x1122_3344_5566_7788;
    new.rip = 0x10_0000;
    new.rflags = 0;
    get("set_regs", bsp.set_regs(&new))?;
    let back = get("get_regs", bsp.get_regs())?;
    new.rflags = 2;
    if back != new {
        return Err(format!("set_regs/get_regs: {back:?}, want {new:?}"));
    }
    // Segment and control registers after RESET, as each KVM backend
    // reports them: kvm_amd keeps CS and SS not-accessed and a 16-bit busy
    // TSS; kvm_intel marks everything accessed, with a 32-bit busy TSS.
    let amd = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("/proc/cpuinfo: {e}"))?
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "svm"));
    let sregs = get("get_sregs", bsp.get_sregs())?;
    let (cs, ss, tr) = (sregs.cs, sregs.ss, sregs.tr);
    let want_types = if amd { (0xa, 2, 3) } else { (0xb, 3, 0xb) };
    if (cs.selector, cs.base, cs.limit, cs.present, cs.s) != (0xf000, 0xffff_0000, 0xffff, 1, 1)
        || (cs.type_, ss.type_, tr.type_) != want_types
        || (sregs.ds.type_, sregs.ldt.type_, tr.s) != (3, 2, 0)
        || (sregs.gdt.limit, sregs.idt.limit) != (0xffff, 0xffff)
        || (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) != (0x6000_0010, 0, 0, 0)
        || sregs.apic_base != 0xfee0_0900
    {
        return Err(format!(
            "reset sregs differ from KVM's ({}): {sregs:?}",
            if amd { "SVM" } else { "VMX" }
        ));
    }
    let ap_sregs = get("get_sregs (AP)", ap.get_sregs())?;
    if ap_sregs.apic_base != 0xfee0_0800 {
        return Err(format!("AP apic_base {:#x}", ap_sregs.apic_base));
    }
    // Protected mode round-trips; CR0.NW without CR0.CD is refused.
    let mut pm = sregs;
    pm.cr0 = 0x11;
    pm.cs.type_ = 0xb;
    pm.cs.db = 1;
    pm.cs.limit = 0xffff_ffff;
    pm.cs.g = 1;
    pm.gdt.base = 0x5000;
    get("set_sregs", bsp.set_sregs(&pm))?;
    let back = get("get_sregs", bsp.get_sregs())?;
    if (back.cr0, back.cs, back.gdt.base) != (pm.cr0, pm.cs, pm.gdt.base) {
        return Err(format!("set_sregs/get_sregs: {back:?}, want {pm:?}"));
    }
    let mut bad = pm;
    bad.cr0 = 1 << 29;
    match bsp.set_sregs(&bad) {
        Err(e) if e.errno() == libc::EINVAL => {}
        Err(e) => {
            return Err(format!(
                "set_sregs(NW without CD): {}, want EINVAL",
                ename(e.errno())
            ));
        }
        Ok(()) => return Err("set_sregs(NW without CD) accepted".into()),
    }
    // FPU: FNINIT's control word after reset; MXCSR is never reported.
    let fpu = get("get_fpu", bsp.get_fpu())?;
    if fpu.fcw != 0x37f || fpu.mxcsr != 0 || fpu.xmm != [[0; 16]; 16] {
        return Err(format!(
            "reset FPU: fcw {:#x} mxcsr {:#x}",
            fpu.fcw, fpu.mxcsr
        ));
    }
    let mut new_fpu = fpu;
    new_fpu.fcw = 0x27f;
    new_fpu.xmm[3][5] = 7;
    new_fpu.mxcsr = 0x1f80;
    get("set_fpu", bsp.set_fpu(&new_fpu))?;
    let back_fpu = get("get_fpu", bsp.get_fpu())?;
    new_fpu.mxcsr = 0;
    if (back_fpu.fcw, back_fpu.xmm, back_fpu.mxcsr) != (new_fpu.fcw, new_fpu.xmm, 0) {
        return Err(format!(
            "set_fpu/get_fpu: fcw {:#x} mxcsr {:#x}",
            back_fpu.fcw, back_fpu.mxcsr
        ));
    }
    // KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR: accepted, with KVM's limits.
    get("set_tss_address", vm.set_tss_address(0xfffb_d000))?;
    match vm.set_tss_address(0xffff_e000) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => {
            return Err(format!(
                "set_tss_address(0xffffe000): {other:?}, want EINVAL"
            ));
        }
    }
    match vm.set_identity_map_address(0xfeff_c000) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => {
            return Err(format!(
                "set_identity_map_address with vCPUs: {other:?}, want EINVAL"
            ));
        }
    }
    let fresh = new_vm(&kvm)?;
    get(
        "set_identity_map_address",
        fresh.set_identity_map_address(0xfeff_c000),
    )?;
    drop(ap);
    Ok(())
}
