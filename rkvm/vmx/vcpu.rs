// SPDX-License-Identifier: GPL-2.0

//! A VMX vCPU, as far as rkvm's VMX backend goes today: register state in
//! the VMCS's formats (segments as VMCS access rights, which is what KVM
//! reports them through on Intel), so that the register ioctls behave as
//! on kvm_intel. It does not run guests yet: `run` fails with `EINVAL`, as
//! `KVM_RUN` does on VMX hosts, and `KVM_CAP_IMMEDIATE_EXIT` reads 0.

use kernel::prelude::*;

use crate::{
    arch::rflags,
    backend::{Entry, Exit, VcpuBackend},
    emulate::Gprs,
    msr,
    regs::Regs,
    sregs::{self, SegReg, Segment, Sregs},
    vmx::seg::VmxSegs,
};

/// A VMX vCPU's state.
pub(crate) struct VmxVcpu {
    regs: Regs,
    /// Control registers and descriptor tables; `segs` holds the segments.
    sregs: Sregs,
    segs: VmxSegs,
    msrs: [u64; NR_MSRS],
    tsc_offset: u64,
}

/// The MSRs the VMCS (or its MSR areas) will hold: EFER, PAT and the
/// syscall and segment-base MSRs, in `VmxVcpu::msrs` in that order.
const NR_MSRS: usize = 2 + msr::SYSCALL_AND_BASES.len();

fn msr_slot(index: u32) -> Option<usize> {
    match index {
        msr::EFER => Some(0),
        msr::PAT => Some(1),
        _ => msr::SYSCALL_AND_BASES
            .iter()
            .position(|&m| m == index)
            .map(|i| i + 2),
    }
}

impl VmxVcpu {
    pub(crate) fn new(is_bsp: bool) -> Result<KBox<Self>> {
        let mut vcpu = KBox::new(
            Self {
                regs: Regs::reset(),
                sregs: sregs::reset(is_bsp),
                segs: VmxSegs::reset(),
                msrs: [0; NR_MSRS],
                tsc_offset: 0,
            },
            GFP_KERNEL,
        )?;
        vcpu.reset(is_bsp);
        Ok(vcpu)
    }
}

impl VcpuBackend for VmxVcpu {
    fn regs(&self) -> Regs {
        self.regs
    }

    fn set_regs(&mut self, regs: &Regs) {
        self.regs = *regs;
    }

    fn gprs(&self) -> Gprs {
        self.regs.gprs_x86()
    }

    fn set_gprs(&mut self, gprs: &Gprs) {
        self.regs.set_gprs_x86(gprs);
    }

    fn rip(&self) -> u64 {
        self.regs.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.regs.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.regs.rflags
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.regs.rflags = rflags;
    }

    fn sregs(&self) -> Sregs {
        let mut out = self.sregs;
        out.segs = SegReg::ALL.map(|reg| self.segs.get(reg));
        out.efer = self.msrs[0];
        out
    }

    fn set_sregs(&mut self, new: &Sregs) {
        self.sregs = *new;
        for reg in SegReg::ALL {
            self.segs.set(reg, &new.segs[reg as usize]);
        }
        self.msrs[0] = new.efer;
    }

    fn segment(&self, reg: SegReg) -> Segment {
        self.segs.get(reg)
    }

    fn cpl(&self) -> u8 {
        self.segs.get(SegReg::Ss).dpl
    }

    fn cr0(&self) -> u64 {
        self.sregs.cr0
    }

    fn cr3(&self) -> u64 {
        self.sregs.cr3
    }

    fn cr4(&self) -> u64 {
        self.sregs.cr4
    }

    fn set_cr4(&mut self, cr4: u64) {
        self.sregs.cr4 = cr4;
    }

    fn set_cr2(&mut self, cr2: u64) {
        self.sregs.cr2 = cr2;
    }

    fn efer(&self) -> u64 {
        self.msrs[0]
    }

    fn cr8(&self) -> u64 {
        self.sregs.cr8
    }

    fn set_cr8(&mut self, cr8: u64) {
        self.sregs.cr8 = cr8;
    }

    fn read_msr(&self, index: u32) -> Option<u64> {
        msr_slot(index).map(|i| self.msrs[i])
    }

    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        match msr_slot(index) {
            Some(i) => {
                self.msrs[i] = value;
                true
            }
            None => false,
        }
    }

    fn tsc_offset(&self) -> u64 {
        self.tsc_offset
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.tsc_offset = offset;
    }

    fn exit_code(&self) -> u64 {
        0
    }

    fn inject_exception(&mut self, _vector: u8, _error_code: Option<u32>) {}

    fn next_rip(&self) -> Option<u64> {
        None
    }

    fn flush_guest_tlb(&mut self) {}

    fn interrupt_status(&self) -> (bool, bool) {
        let if_flag = self.regs.rflags & rflags::IF != 0;
        (if_flag, if_flag)
    }

    fn reset(&mut self, is_bsp: bool) {
        self.regs = Regs::reset();
        self.sregs = sregs::reset(is_bsp);
        self.segs = VmxSegs::reset();
        self.msrs = [0; NR_MSRS];
        if let Some(i) = msr_slot(msr::PAT) {
            self.msrs[i] = crate::msr::PAT_DEFAULT;
        }
    }

    fn run(&mut self, _entry: &Entry) -> Result<Exit> {
        // Entering VMX guests is the VMX backend's next step.
        Err(EINVAL)
    }
}
