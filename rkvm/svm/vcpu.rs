// SPDX-License-Identifier: GPL-2.0

//! An SVM vCPU: the VMCB, the world switch around VMRUN, and the
//! translation of each `#VMEXIT` into a vendor-neutral [`Exit`].
//!
//! # Entering the guest
//!
//! The caller (`exits.rs`) has the guest's extended state loaded and IRQs
//! off. The vCPU picks its ASID on this CPU (see `asid.rs`), flushes its
//! TLB entries if the TDP tables changed since it last did (or the guest
//! changed paging state under an intercept), and runs the guest with GIF
//! clear around VMRUN (`vmenter.S`). A physical interrupt ends the guest's
//! run (`#VMEXIT(INTR)`) and is taken when IRQs come back on. Between runs,
//! the thread may be preempted or move to another CPU: the ASID check then
//! gives it a fresh ASID there, and VMCB clean bits are never set (every
//! field is reloaded), so nothing of the old CPU is trusted. The TSC offset
//! is per vCPU and the host TSCs are synchronised.

use kernel::{alloc::flags::GFP_KERNEL, prelude::*};

use crate::shim::ffi;

use crate::{
    arch::{dr6, efer, rflags, vector},
    backend::{Entry, Event, Exit, IoExit, VcpuBackend},
    emulate::Gprs,
    hw, msr,
    regs::Regs,
    sregs::{self, SegReg, Segment, Sregs},
    svm::{
        asid::{AsidCpu, VcpuAsid},
        nmi::NmiBlocking,
        seg::{SvmSegs, VmcbSeg},
        vmcb::{self, exit, npf, tlb_control, IoioInfo, Save, Vmcb},
    },
    vcpu_events::shadow,
    x86,
};

// SAFETY: `Vmcb` is integers and arrays of integers; all-zero is valid.
unsafe impl Zeroable for Vmcb {}

/// The I/O permission map: every port intercepted (APM 15.10.1).
#[repr(C, align(4096))]
struct Iopm([u8; 3 * 4096]);
// SAFETY: a byte array; all-zero is valid.
unsafe impl Zeroable for Iopm {}

/// The MSR permission map (APM 15.11): two bits (read, write) per MSR in
/// three 2 KiB ranges; everything intercepted except the MSRs VMLOAD and
/// VMSAVE switch, which live in the VMCB and are safe to give the guest.
#[repr(C, align(4096))]
struct Msrpm([u8; 2 * 4096]);
// SAFETY: a byte array; all-zero is valid.
unsafe impl Zeroable for Msrpm {}

impl Msrpm {
    fn pass_through(&mut self, msr: u32) {
        let (base, off) = match msr {
            0..=0x1fff => (0, msr),
            0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
            0xc001_0000..=0xc001_1fff => (0x1000, msr - 0xc001_0000),
            _ => return,
        };
        let bit = off as usize * 2;
        if let Some(b) = self.0.get_mut(base + bit / 8) {
            *b &= !(3 << (bit % 8));
        }
    }
}

/// An SVM vCPU.
///
/// # Invariants
///
/// `vmcb`, `iopm` and `msrpm` are physically contiguous kmalloc memory at
/// their natural alignment (a VMCB page, the 12 KiB IOPM, the 8 KiB MSRPM),
/// owned here, and the VMCB names the other two and the VM's NPT root.
pub(crate) struct SvmVcpu {
    vmcb: KBox<Vmcb>,
    /// Only named by the VMCB: kept alive here.
    _iopm: KBox<Iopm>,
    _msrpm: KBox<Msrpm>,
    /// RAX..R15 in x86 order; RAX and RSP live in the VMCB instead.
    gprs: [u64; 16],
    asid: VcpuAsid,
    /// The guest's own TLB entries must go at the next entry.
    flush_guest_tlb: bool,
    nrip_save: bool,
    /// `SvmFeatures::exit_after_injected_irq`.
    exit_after_injected_irq: bool,
    flush_by_asid: bool,
    nr_asids: u32,
    /// The host's physical address width (CPUID 0x8000_0008 EAX[7:0]).
    maxphyaddr: u32,
    /// The guest's NMI blocking (no vNMI: tracked here).
    nmi: NmiBlocking,
    /// Single-stepping the guest for an NMI window: its own RFLAGS.TF
    /// and RF, to put back at the trap.
    nmi_step: Option<u64>,
    /// Every `#DB` exits for the VMM's debugger (`set_debug_intercepts`).
    debug_db: bool,
}

fn phys_of<T>(p: &T) -> u64 {
    // SAFETY: `p` points into kmalloc memory, which the direct map covers.
    unsafe { ffi::rkvm_virt_to_phys((p as *const T).cast()) }
}

fn seg_of(save: &Save, reg: SegReg) -> &VmcbSeg {
    match reg {
        SegReg::Cs => &save.cs,
        SegReg::Ds => &save.ds,
        SegReg::Es => &save.es,
        SegReg::Fs => &save.fs,
        SegReg::Gs => &save.gs,
        SegReg::Ss => &save.ss,
        SegReg::Tr => &save.tr,
        SegReg::Ldt => &save.ldtr,
    }
}

fn seg_slot(save: &mut Save, reg: SegReg) -> &mut VmcbSeg {
    match reg {
        SegReg::Cs => &mut save.cs,
        SegReg::Ds => &mut save.ds,
        SegReg::Es => &mut save.es,
        SegReg::Fs => &mut save.fs,
        SegReg::Gs => &mut save.gs,
        SegReg::Ss => &mut save.ss,
        SegReg::Tr => &mut save.tr,
        SegReg::Ldt => &mut save.ldtr,
    }
}

impl SvmVcpu {
    /// A vCPU in its RESET state, for a VM whose NPT root is `npt_root`.
    pub(crate) fn new(npt_root: u64, is_bsp: bool) -> Result<KBox<Self>> {
        let features = hw::svm_features().ok_or(EINVAL)?;
        let mut iopm = KBox::init(pin_init::init_zeroed::<Iopm>(), GFP_KERNEL)?;
        iopm.0.fill(0xff);
        let mut msrpm = KBox::init(pin_init::init_zeroed::<Msrpm>(), GFP_KERNEL)?;
        msrpm.0.fill(0xff);
        for m in vmcb::VMCB_SWITCHED {
            msrpm.pass_through(m);
        }
        let vmcb = KBox::init(pin_init::init_zeroed::<Vmcb>(), GFP_KERNEL)?;
        let mut vcpu = KBox::new(
            Self {
                vmcb,
                _iopm: iopm,
                _msrpm: msrpm,
                gprs: [0; 16],
                asid: VcpuAsid::default(),
                flush_guest_tlb: false,
                nrip_save: features.nrip_save,
                exit_after_injected_irq: features.exit_after_injected_irq,
                flush_by_asid: features.flush_by_asid,
                nr_asids: features.nr_asids,
                maxphyaddr: x86::cpuid(0x8000_0008, 0).eax & 0xff,
                nmi: NmiBlocking::default(),
                nmi_step: None,
                debug_db: false,
            },
            GFP_KERNEL,
        )?;
        let iopm = phys_of(&*vcpu._iopm);
        let msrpm = phys_of(&*vcpu._msrpm);
        let c = &mut vcpu.vmcb.control;
        c.set_default_intercepts();
        c.iopm_base_pa = iopm;
        c.msrpm_base_pa = msrpm;
        c.int_ctl = vmcb::V_INTR_MASKING;
        c.misc_ctl = vmcb::NP_ENABLE;
        c.nested_cr3 = npt_root;
        c.clean = 0;
        vcpu.reset(is_bsp);
        Ok(vcpu)
    }

    /// The segment registers and CPL as `SvmSegs` keeps them.
    fn segs(&self) -> SvmSegs {
        let save = &self.vmcb.save;
        SvmSegs {
            segs: SegReg::ALL.map(|reg| *seg_of(save, reg)),
            cpl: save.cpl,
        }
    }

    fn set_segs(&mut self, segs: &SvmSegs) {
        let save = &mut self.vmcb.save;
        for reg in SegReg::ALL {
            *seg_slot(save, reg) = segs.segs[reg as usize];
        }
        save.cpl = segs.cpl;
    }

    /// Whether the guest is in an STI or MOV SS interrupt shadow.
    fn in_shadow(&self) -> bool {
        self.vmcb.control.int_state & vmcb::INT_STATE_SHADOW != 0
    }

    /// Single-steps the guest's next instruction (RFLAGS.TF, with RF so
    /// that an instruction breakpoint does not fire again), the trap
    /// intercepted: an NMI window SVM has no exit for.
    fn begin_nmi_step(&mut self) {
        if self.nmi_step.is_some() {
            return;
        }
        let tf_rf = rflags::TF | rflags::RF;
        let save = &mut self.vmcb.save;
        self.nmi_step = Some(save.rflags & tf_rf);
        save.rflags |= tf_rf;
        self.update_db_intercept();
    }

    /// The step trapped: the guest's own TF and RF back, the trap no
    /// longer intercepted unless the debugger wants it. Whether the TF
    /// was set anyway (the guest single-stepping itself, or the
    /// debugger): then the trap is theirs too.
    fn end_nmi_step(&mut self) -> bool {
        let Some(own) = self.nmi_step else {
            return false;
        };
        self.vmcb.save.rflags = self.rflags();
        self.nmi_step = None;
        self.update_db_intercept();
        own & rflags::TF != 0
    }

    /// `#DB` exits while the NMI step or the debugger needs it.
    fn update_db_intercept(&mut self) {
        let on = self.debug_db || self.nmi_step.is_some();
        self.vmcb.control.set_intercept(2, vector::DB.into(), on);
    }

    /// Translates the `#VMEXIT` in the VMCB; `dr6` is what the hardware
    /// left in the VMCB's DR6 (the guest's own is back there if the
    /// debugger intercepts `#DB`).
    fn exit(&mut self, dr6: u64) -> Exit {
        let c = &mut self.vmcb.control;
        let code = c.exit_code;
        // An event the CPU was delivering when the exit came (e.g. a guest
        // exception whose handler's page was not mapped yet) is re-injected.
        const VALID: u32 = 1 << 31;
        c.event_inj = 0;
        if c.exit_int_info & VALID != 0 {
            c.event_inj = c.exit_int_info;
            c.event_inj_err = c.exit_int_info_err;
        }
        let info1 = c.exit_info_1;
        let info2 = c.exit_info_2;
        self.nmi.after_exit(self.vmcb.save.rip);
        match code {
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => Exit::Host,
            exit::VINTR => Exit::InterruptWindow,
            exit::IRET => {
                // The NMI handler returns: its IRET runs next, unblocking
                // NMIs once the guest is past it.
                self.nmi.iret_intercepted(self.vmcb.save.rip);
                Exit::NmiWindow
            }
            exit::EXCP_DB if self.debug_db || self.nmi_step.is_some() => {
                let stepped = self.end_nmi_step();
                if self.debug_db {
                    Exit::Debug {
                        dr6,
                        dr7: self.vmcb.save.dr7,
                    }
                } else {
                    if stepped {
                        // The guest single-steps itself: its trap.
                        self.vmcb.save.dr6 |= dr6::BS;
                        self.inject_exception(vector::DB, None);
                    }
                    Exit::NmiWindow
                }
            }
            // Intercepted only for the debugger.
            exit::EXCP_BP => Exit::Breakpoint,
            exit::DR_READ_0..=exit::DR_WRITE_15 => Exit::MovDr {
                dr: (code & 0xf) as u8,
                write: code >= exit::DR_READ_0 + 0x10,
                // Decode assists: bit 63 says the GPR number is valid.
                gpr: (info1 >> 63 != 0).then_some((info1 & 0xf) as u8),
            },
            exit::CPUID => Exit::Cpuid,
            exit::RDPMC => Exit::Rdpmc,
            exit::HLT => Exit::Hlt,
            exit::IOIO => match IoioInfo::decode(info1) {
                Some(io) => Exit::Io(IoExit {
                    port: io.port,
                    size: io.size,
                    is_in: io.is_in,
                    string: io.string,
                    rep: io.rep,
                    // The IOIO intercept always reports the next RIP.
                    next_rip: info2,
                }),
                None => Exit::Unexpected {
                    reason: code,
                    info: info1,
                },
            },
            exit::MSR => Exit::Msr { write: info1 != 0 },
            exit::XSETBV => Exit::Xsetbv,
            exit::CR4_WRITE | exit::CR8_WRITE | exit::CR0_SEL_WRITE => Exit::CrWrite {
                cr: match code {
                    exit::CR4_WRITE => 4,
                    exit::CR8_WRITE => 8,
                    _ => 0,
                },
                // Decode assists: bit 63 says the GPR number is valid
                // (not for LMSW, which the caller then fails to decode).
                gpr: (info1 >> 63 != 0).then_some((info1 & 0xf) as u8),
            },
            exit::SHUTDOWN => Exit::Shutdown,
            exit::NPF => Exit::TdpFault {
                gpa: info2,
                write: info1 & npf::WRITE != 0,
                fetch: info1 & npf::FETCH != 0,
                present: info1 & npf::PRESENT != 0,
            },
            exit::INVALID => Exit::FailEntry { reason: code },
            c if vmcb::is_undefined_instruction_exit(c) => Exit::UndefinedInstruction,
            _ => Exit::Unexpected {
                reason: code,
                info: info1,
            },
        }
    }
}

impl VcpuBackend for SvmVcpu {
    fn regs(&self) -> Regs {
        let mut regs = Regs::default();
        regs.set_gprs_x86(&self.gprs());
        regs.rip = self.vmcb.save.rip;
        regs.rflags = self.rflags();
        regs
    }

    fn set_regs(&mut self, regs: &Regs) {
        self.set_gprs(&regs.gprs_x86());
        self.vmcb.save.rip = regs.rip;
        self.set_rflags(regs.rflags);
    }

    fn gprs(&self) -> Gprs {
        let mut gprs = self.gprs;
        gprs[0] = self.vmcb.save.rax;
        gprs[4] = self.vmcb.save.rsp;
        gprs
    }

    fn set_gprs(&mut self, gprs: &Gprs) {
        self.gprs = *gprs;
        self.vmcb.save.rax = gprs[0];
        self.vmcb.save.rsp = gprs[4];
    }

    fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }

    fn set_rip(&mut self, rip: u64) {
        if rip != self.vmcb.save.rip {
            // Moving RIP ends any STI/MOV SS interrupt shadow, as KVM's
            // instruction skip does (and the VMX backend).
            self.vmcb.control.int_state &= !vmcb::INT_STATE_SHADOW;
        }
        self.vmcb.save.rip = rip;
    }

    fn rflags(&self) -> u64 {
        let rflags = self.vmcb.save.rflags;
        match self.nmi_step {
            // The step's TF and RF are the backend's, not the guest's.
            Some(own) => (rflags & !(rflags::TF | rflags::RF)) | own,
            None => rflags,
        }
    }

    fn set_rflags(&mut self, rflags: u64) {
        let tf_rf = rflags::TF | rflags::RF;
        self.vmcb.save.rflags = match &mut self.nmi_step {
            // Still stepping: the new value's TF and RF are the guest's own.
            Some(own) => {
                *own = rflags & tf_rf;
                rflags | tf_rf
            }
            None => rflags,
        };
    }

    fn sregs(&self) -> Sregs {
        let s = &self.vmcb.save;
        let segs = self.segs();
        Sregs {
            segs: SegReg::ALL.map(|reg| segs.get(reg)),
            gdt: sregs::DTable {
                base: s.gdtr.base,
                limit: s.gdtr.limit as u16,
            },
            idt: sregs::DTable {
                base: s.idtr.base,
                limit: s.idtr.limit as u16,
            },
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: self.cr8(),
            efer: s.efer & !efer::SVME,
            ..Default::default()
        }
    }

    fn set_sregs(&mut self, new: &Sregs) {
        let mut segs = self.segs();
        for reg in SegReg::ALL {
            segs.set(reg, &new.segs[reg as usize]);
        }
        self.set_segs(&segs);
        let s = &mut self.vmcb.save;
        s.gdtr = VmcbSeg {
            limit: new.gdt.limit as u32,
            base: new.gdt.base,
            ..Default::default()
        };
        s.idtr = VmcbSeg {
            limit: new.idt.limit as u32,
            base: new.idt.base,
            ..Default::default()
        };
        // CR0.CD/NW are loaded as the guest set them (no intercept): valid
        // for VMRUN, and the guest clears them itself as real CPUs expect.
        s.cr0 = new.cr0;
        s.cr2 = new.cr2;
        s.cr3 = new.cr3;
        s.cr4 = new.cr4;
        s.efer = new.efer | efer::SVME;
        self.set_cr8(new.cr8);
        // Paging state changed behind the guest's back.
        self.flush_guest_tlb = true;
    }

    fn segment(&self, reg: SegReg) -> Segment {
        let save = &self.vmcb.save;
        SvmSegs::read(reg, seg_of(save, reg), save.cpl)
    }

    fn cpl(&self) -> u8 {
        self.vmcb.save.cpl
    }

    fn cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }

    fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }

    fn cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    fn set_cr4(&mut self, cr4: u64) {
        self.vmcb.save.cr4 = cr4;
    }

    fn set_cr0(&mut self, cr0: u64) {
        self.vmcb.save.cr0 = cr0;
    }

    fn set_cr2(&mut self, cr2: u64) {
        self.vmcb.save.cr2 = cr2;
    }

    fn efer(&self) -> u64 {
        self.vmcb.save.efer & !efer::SVME
    }

    /// `V_TPR` holds the guest's TPR.
    fn cr8(&self) -> u64 {
        (self.vmcb.control.int_ctl & 0xf) as u64
    }

    fn set_cr8(&mut self, cr8: u64) {
        self.vmcb.control.int_ctl = (self.vmcb.control.int_ctl & !0xf) | (cr8 as u32 & 0xf);
    }

    fn read_msr(&self, index: u32) -> Option<u64> {
        let s = &self.vmcb.save;
        Some(match index {
            msr::EFER => s.efer & !efer::SVME,
            msr::STAR => s.star,
            msr::LSTAR => s.lstar,
            msr::CSTAR => s.cstar,
            msr::SFMASK => s.sfmask,
            msr::KERNEL_GS_BASE => s.kernel_gs_base,
            msr::FS_BASE => s.fs.base,
            msr::GS_BASE => s.gs.base,
            msr::SYSENTER_CS => s.sysenter_cs,
            msr::SYSENTER_ESP => s.sysenter_esp,
            msr::SYSENTER_EIP => s.sysenter_eip,
            msr::PAT => s.g_pat,
            _ => return None,
        })
    }

    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        let s = &mut self.vmcb.save;
        match index {
            msr::EFER => s.efer = value | efer::SVME,
            msr::STAR => s.star = value,
            msr::LSTAR => s.lstar = value,
            msr::CSTAR => s.cstar = value,
            msr::SFMASK => s.sfmask = value,
            msr::KERNEL_GS_BASE => s.kernel_gs_base = value,
            msr::FS_BASE => s.fs.base = value,
            msr::GS_BASE => s.gs.base = value,
            msr::SYSENTER_CS => s.sysenter_cs = value,
            msr::SYSENTER_ESP => s.sysenter_esp = value,
            msr::SYSENTER_EIP => s.sysenter_eip = value,
            msr::PAT => s.g_pat = value,
            _ => return false,
        }
        true
    }

    fn tsc_offset(&self) -> u64 {
        self.vmcb.control.tsc_offset
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.vmcb.control.tsc_offset = offset;
    }

    fn exit_code(&self) -> u64 {
        self.vmcb.control.exit_code
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let (inj, err) = vmcb::event_inj_exception(vector, error_code);
        self.vmcb.control.event_inj = inj;
        self.vmcb.control.event_inj_err = err;
    }

    fn next_rip(&self) -> Option<u64> {
        let c = &self.vmcb.control;
        if self.nrip_save {
            return Some(c.next_rip);
        }
        match c.exit_code {
            exit::IOIO => Some(c.exit_info_2),
            code => vmcb::fixed_insn_len(code).map(|len| self.vmcb.save.rip.wrapping_add(len)),
        }
    }

    fn flush_guest_tlb(&mut self) {
        self.flush_guest_tlb = true;
    }

    fn interrupt_status(&self) -> (bool, bool) {
        let if_flag = self.vmcb.save.rflags & crate::arch::rflags::IF != 0;
        let shadow = self.in_shadow();
        (if_flag, if_flag && !shadow && !self.event_pending())
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.set_pending_event(Some(Event::Interrupt { vector }));
    }

    fn pending_event(&self) -> Option<Event> {
        let c = &self.vmcb.control;
        vmcb::event::decode(c.event_inj, c.event_inj_err)
    }

    fn set_pending_event(&mut self, event: Option<Event>) {
        let c = &mut self.vmcb.control;
        (c.event_inj, c.event_inj_err) = vmcb::event::encode(event);
    }

    fn dr6(&self) -> u64 {
        self.vmcb.save.dr6
    }

    fn set_dr6(&mut self, dr6: u64) {
        self.vmcb.save.dr6 = dr6;
    }

    fn dr7(&self) -> u64 {
        self.vmcb.save.dr7
    }

    fn set_dr7(&mut self, dr7: u64) {
        self.vmcb.save.dr7 = dr7;
    }

    fn interrupt_shadow(&self) -> u8 {
        // SVM does not tell STI from MOV SS: both, as KVM reports it.
        if self.in_shadow() {
            shadow::STI | shadow::MOV_SS
        } else {
            0
        }
    }

    fn set_interrupt_shadow(&mut self, mask: u8) {
        let c = &mut self.vmcb.control;
        c.int_state &= !vmcb::INT_STATE_SHADOW;
        if mask != 0 {
            c.int_state |= vmcb::INT_STATE_SHADOW;
        }
    }

    fn inject_nmi(&mut self) {
        self.set_pending_event(Some(Event::Nmi));
        self.nmi.injected();
    }

    fn set_nmi_masked(&mut self, masked: bool) {
        self.nmi.set_masked(masked);
    }

    fn nmi_allowed(&self) -> bool {
        !self.nmi.masked() && !self.in_shadow()
    }

    fn nmi_masked(&self) -> bool {
        self.nmi.masked()
    }

    fn set_nmi_window(&mut self, on: bool) {
        // Blocked by the handler: its IRET's exit (intercepted since the
        // NMI went in) comes first; then one step over the IRET, or over
        // whatever else held the NMI back.
        if on && self.nmi.step_for_window() {
            self.begin_nmi_step();
        }
    }

    fn set_debug_intercepts(&mut self, db: bool, bp: bool) {
        self.debug_db = db;
        self.update_db_intercept();
        self.vmcb.control.set_intercept(2, vector::BP.into(), bp);
    }

    fn set_rdtscp(&mut self, on: bool) {
        self.vmcb
            .control
            .set_intercept(4, vmcb::intercept::RDTSCP, !on);
    }

    fn set_tpr_threshold(&mut self, class: Option<u8>) {
        // Without a TPR threshold, SVM intercepts the CR8 write itself
        // (word 0, writes in bits 16-31) while the TPR holds back an
        // interrupt, as KVM's `svm_update_cr8_intercept`.
        self.vmcb.control.set_intercept(0, 16 + 8, class.is_some());
    }

    fn set_interrupt_window(&mut self, on: bool) {
        // A virtual interrupt the guest takes at its first chance, which
        // the intercept turns into the exit instead: never one without
        // the other.
        let c = &mut self.vmcb.control;
        let bits = vmcb::V_IRQ | vmcb::V_IGN_TPR | vmcb::V_INTR_PRIO_MAX;
        if on {
            c.int_ctl |= bits;
        } else {
            c.int_ctl &= !bits;
        }
        c.set_intercept(3, vmcb::intercept::VINTR, on);
    }

    fn reset(&mut self, is_bsp: bool) {
        self.nmi_step = None;
        self.nmi = NmiBlocking::default();
        self.update_db_intercept();
        self.set_regs(&Regs::reset());
        let mut sregs = sregs::reset(is_bsp);
        let segs = SvmSegs::reset();
        sregs.segs = SegReg::ALL.map(|reg| segs.get(reg));
        self.set_sregs(&sregs);
        self.set_segs(&segs);
        let save = &mut self.vmcb.save;
        save.star = 0;
        save.lstar = 0;
        save.cstar = 0;
        save.sfmask = 0;
        save.kernel_gs_base = 0;
        save.sysenter_cs = 0;
        save.sysenter_esp = 0;
        save.sysenter_eip = 0;
        save.g_pat = msr::PAT_DEFAULT;
        save.dr6 = 0xffff_0ff0;
        save.dr7 = 0x400;
        let c = &mut self.vmcb.control;
        c.event_inj = 0;
        c.int_state = 0;
    }

    fn run(&mut self, entry: &Entry<'_>) -> Result<Exit> {
        if !self.vmcb.save.entry_is_valid(self.maxphyaddr) {
            // What VMRUN reports for a state that fails its checks.
            self.vmcb.control.exit_code = exit::INVALID;
            self.vmcb.control.exit_int_info = 0;
            return Ok(self.exit(self.vmcb.save.dr6));
        }
        let svm_cpu = hw::svm_cpu(entry.cpu).ok_or(EIO)?;
        let stale_tlb = entry.flush_tdp || self.flush_guest_tlb;
        // Only this CPU touches its allocator, with IRQs off.
        let mut alloc = AsidCpu {
            next: svm_cpu
                .asid_next
                .load(core::sync::atomic::Ordering::Relaxed),
            generation: svm_cpu
                .asid_generation
                .load(core::sync::atomic::Ordering::Relaxed),
        };
        let d = alloc.select(
            entry.cpu,
            self.asid,
            self.nr_asids,
            stale_tlb && !self.flush_by_asid,
        );
        svm_cpu
            .asid_next
            .store(alloc.next, core::sync::atomic::Ordering::Relaxed);
        svm_cpu
            .asid_generation
            .store(alloc.generation, core::sync::atomic::Ordering::Relaxed);
        self.asid = d.asid;
        self.flush_guest_tlb = false;
        let c = &mut self.vmcb.control;
        c.asid = d.asid.asid;
        c.tlb_ctl = if d.flush_all {
            tlb_control::FLUSH_ALL
        } else if stale_tlb && !d.changed {
            tlb_control::FLUSH_ASID
        } else {
            tlb_control::DO_NOTHING
        };
        // Clean bits stay 0: every field is reloaded on every VMRUN.
        c.clean = 0;
        // The IRET that ends an NMI handler exits, until it is seen.
        c.set_intercept(3, vmcb::intercept::IRET, self.nmi.intercept_iret());
        // The debugger is told the DR6 of its own `#DB` alone (KVM's
        // `DR6_ACTIVE_LOW` start); the guest's waits here.
        let guest_dr6 = self
            .debug_db
            .then(|| core::mem::replace(&mut self.vmcb.save.dr6, crate::debugreg::DR6_FIXED));
        let vmcb_pa = phys_of(&*self.vmcb);
        let injects_irq = matches!(
            vmcb::event::decode(self.vmcb.control.event_inj, 0),
            Some(Event::Interrupt { .. })
        );
        if self.exit_after_injected_irq && injects_irq {
            // SAFETY: IRQs are off (the caller's `IrqsOff`), so the IPI
            // waits for VMRUN, which takes it as `#VMEXIT(INTR)` once the
            // interrupt is delivered.
            unsafe { ffi::rkvm_request_immediate_exit() };
        }
        let host_save_pa = svm_cpu.host_save_pa();
        // SAFETY: IRQs are off (the caller's `IrqsOff`) and SVM is on on
        // this CPU (enabled before any ioctl); the VMCB names the IOPM,
        // MSRPM and NPT root (type invariant); `gprs` is 16 words; the save
        // page is this CPU's.
        let r = unsafe { ffi::rkvm_svm_run(vmcb_pa, self.gprs.as_mut_ptr(), host_save_pa) };
        if r != 0 {
            // SVM was turned off under rkvm (an emergency reboot): the
            // guest did not run.
            return Err(EIO);
        }
        let dr6 = self.vmcb.save.dr6;
        if let Some(guest_dr6) = guest_dr6 {
            self.vmcb.save.dr6 = guest_dr6;
        }
        Ok(self.exit(dr6))
    }
}
