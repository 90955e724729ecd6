// SPDX-License-Identifier: GPL-2.0

//! An SVM vCPU: its VMCB, the world switch around VMRUN, and the handling
//! of each `#VMEXIT`.
//!
//! # Entering the guest
//!
//! With the guest's FPU state loaded (a kernel-FPU section, so preemption
//! is off) and IRQs off, the vCPU announces itself in guest mode to the MMU
//! (which then kicks it for TLB flushes), picks its ASID on this CPU (see
//! `asid.rs`), flushes its TLB entries if a zap happened since it last did,
//! and runs the guest with GIF clear around VMRUN. A physical interrupt ends
//! the guest's run (`#VMEXIT(INTR)`) and is taken when IRQs come back on.
//! Between runs, the thread may be preempted or move to another CPU: the
//! ASID check then gives it a fresh ASID there, and VMCB clean bits are
//! never set (every field is reloaded), so nothing of the old CPU is
//! trusted. The TSC offset is per vCPU and the host TSCs are synchronised.

use kernel::{alloc::flags::GFP_KERNEL, prelude::*};

use crate::{
    abi::run::{exit as kvm_exit, internal},
    cpuid::{self, CpuidEntry},
    emulate::{self, Access, MmioInsn, Mode},
    fpu::{Fpu, FXSAVE_SIZE},
    hw,
    mmu::{
        guest_walk::{self, AccessKind, GuestMemory, WalkError, WalkRegs},
        tdp::PtCache,
    },
    msr,
    regs::Regs,
    run_page::{RunPage, SharedPage},
    sregs::{SegReg, Sregs},
    svm::{
        asid::{AsidCpu, VcpuAsid},
        seg::{SvmSegs, VmcbSeg},
        vmcb::{self, exit, npf, tlb_control, IoioInfo, Save, Vmcb},
    },
    vm::{NpfOutcome, Vm},
    x86,
};

mod ffi {
    extern "C" {
        pub(super) fn rkvm_svm_run(vmcb_pa: u64, gprs: *mut u64, host_save_pa: u64);
        pub(super) fn rkvm_local_irq_disable();
        pub(super) fn rkvm_local_irq_enable();
        pub(super) fn rkvm_smp_processor_id() -> u32;
        pub(super) fn rkvm_smp_processor_id_raw() -> u32;
        pub(super) fn rkvm_guest_fpu_load(fxsave: *mut u8);
        pub(super) fn rkvm_guest_fpu_put(fxsave: *mut u8);
        pub(super) fn rkvm_signal_pending() -> bool;
        pub(super) fn rkvm_need_resched() -> bool;
        pub(super) fn rkvm_cond_resched();
        pub(super) fn rkvm_virt_to_phys(p: *const core::ffi::c_void) -> u64;
    }
}

/// The guest's FXSAVE image (FXSAVE needs 16-byte alignment).
#[repr(C, align(64))]
struct FxArea([u8; FXSAVE_SIZE]);

// SAFETY: all-zero bytes are a valid `FxArea` (a byte array).
unsafe impl Zeroable for FxArea {}
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

/// What the guest is owed when userspace comes back with `KVM_RUN`.
#[derive(Clone, Copy)]
enum Pending {
    None,
    /// An OUT was handed to userspace: skip the instruction.
    PioOut {
        linear_rip: u64,
        next_rip: u64,
    },
    /// An IN: merge the PIO page's data into RAX and skip it.
    PioIn {
        linear_rip: u64,
        next_rip: u64,
        size: u8,
    },
    /// An MMIO read went to userspace: complete the instruction with the
    /// data (which may need a write-back exit of its own).
    MmioRead {
        linear_rip: u64,
        insn: MmioInsn,
        gpa: u64,
    },
    /// An MMIO write went to userspace: skip the instruction.
    MmioWrite {
        linear_rip: u64,
        len: u64,
    },
    /// One element of an OUTS went to userspace.
    OutsElement {
        linear_rip: u64,
        string: StringIo,
    },
    /// `count` elements of an INS were asked of userspace.
    InsElements {
        linear_rip: u64,
        string: StringIo,
        count: u32,
    },
}

/// A string I/O instruction (INS/OUTS, maybe with REP) being executed.
#[derive(Clone, Copy)]
struct StringIo {
    size: u8,
    rep: bool,
    /// Mask of the address size: 0xffff, 0xffff_ffff or all ones.
    addr_mask: u64,
    /// Base of the segment of the memory operand.
    seg_base: u64,
    next_rip: u64,
}

/// Adds `delta` to the part of `reg` the address size uses; a 32-bit
/// result zero-extends, a 16-bit one leaves the upper bits alone.
fn add_masked(reg: u64, delta: i64, mask: u64) -> u64 {
    let sum = reg.wrapping_add(delta as u64) & mask;
    if mask == 0xffff {
        (reg & !0xffff) | sum
    } else {
        sum
    }
}

/// The guest's physical memory as the page-table walker sees it.
struct WalkerMemory<'a>(&'a Vm);

impl GuestMemory for WalkerMemory<'_> {
    fn read_pte(&mut self, gpa: u64, size: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.read_guest_phys(gpa, b.get_mut(..size)?)?;
        Some(u64::from_le_bytes(b))
    }

    fn cmpxchg_pte(&mut self, gpa: u64, size: usize, old: u64, new: u64) -> bool {
        // Nothing behind the entry any more: let the walk restart and fail.
        self.0
            .cmpxchg_guest_phys(gpa, size as u32, old, new)
            .unwrap_or(false)
    }
}

/// Whether the run loop goes on in the kernel or returns to userspace.
enum Flow {
    Guest,
    User,
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
    iopm: KBox<Iopm>,
    msrpm: KBox<Msrpm>,
    fx: KBox<FxArea>,
    /// RAX..R15 in x86 order; RAX and RSP live in the VMCB instead.
    gprs: [u64; 16],
    asid: VcpuAsid,
    flushed_tlb_gen: u64,
    pending: Pending,
    /// Index of this vCPU in the VM (creation order).
    idx: usize,
    /// `MSR_IA32_MISC_ENABLE` as the guest sees it.
    misc_enable: u64,
    /// The last exit was a shutdown: the VMCB is undefined until reset.
    shut_down: bool,
    nrip_save: bool,
    flush_by_asid: bool,
    nr_asids: u32,
    /// The host's physical address width (CPUID 0x8000_0008 EAX[7:0]).
    maxphyaddr: u32,
}

fn phys_of<T>(p: &T) -> u64 {
    // SAFETY: `p` points into kmalloc memory, which the direct map covers.
    unsafe { ffi::rkvm_virt_to_phys((p as *const T).cast()) }
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
    /// A vCPU with the VMCB set up for a VM whose NPT root is `npt_root`.
    pub(crate) fn new(idx: usize, npt_root: u64) -> Result<KBox<Self>> {
        let features = hw::svm_features().ok_or(EINVAL)?;
        let mut iopm = KBox::init(pin_init::init_zeroed::<Iopm>(), GFP_KERNEL)?;
        iopm.0.fill(0xff);
        let mut msrpm = KBox::init(pin_init::init_zeroed::<Msrpm>(), GFP_KERNEL)?;
        msrpm.0.fill(0xff);
        for m in msr::VMCB_SWITCHED {
            msrpm.pass_through(m);
        }
        let mut fx = KBox::init(pin_init::init_zeroed::<FxArea>(), GFP_KERNEL)?;
        fx.0 = Fpu::reset_fxsave();
        let vmcb = KBox::init(pin_init::init_zeroed::<Vmcb>(), GFP_KERNEL)?;
        let mut vcpu = KBox::new(
            Self {
                vmcb,
                iopm,
                msrpm,
                fx,
                gprs: [0; 16],
                asid: VcpuAsid::default(),
                flushed_tlb_gen: 0,
                pending: Pending::None,
                idx,
                misc_enable: msr::MISC_ENABLE_DEFAULT,
                shut_down: false,
                nrip_save: features.nrip_save,
                flush_by_asid: features.flush_by_asid,
                nr_asids: features.nr_asids,
                maxphyaddr: x86::cpuid(0x8000_0008, 0).eax & 0xff,
            },
            GFP_KERNEL,
        )?;
        vcpu.init_control(npt_root);
        let save = &mut vcpu.vmcb.save;
        save.g_pat = vmcb::PAT_DEFAULT;
        save.dr6 = 0xffff_0ff0;
        save.dr7 = 0x400;
        // The guest's TSC starts at 0 at creation.
        vcpu.vmcb.control.tsc_offset = 0u64.wrapping_sub(x86::rdtsc());
        Ok(vcpu)
    }

    fn init_control(&mut self, npt_root: u64) {
        let iopm = phys_of(&*self.iopm);
        let msrpm = phys_of(&*self.msrpm);
        let c = &mut self.vmcb.control;
        c.set_default_intercepts();
        c.iopm_base_pa = iopm;
        c.msrpm_base_pa = msrpm;
        c.int_ctl = vmcb::V_INTR_MASKING;
        c.misc_ctl = vmcb::NP_ENABLE;
        c.nested_cr3 = npt_root;
        c.clean = 0;
    }

    /// Loads register state set through the ioctls into the VMCB.
    pub(crate) fn load(&mut self, regs: &Regs, sregs: &Sregs, segs: &SvmSegs, fpu: &Fpu) {
        self.gprs = regs.gprs_x86();
        let save = &mut self.vmcb.save;
        save.rax = self.gprs[0];
        save.rsp = self.gprs[4];
        save.rip = regs.rip;
        save.rflags = regs.rflags;
        for reg in SegReg::ALL {
            *seg_slot(save, reg) = segs.segs[reg as usize];
        }
        save.cpl = segs.cpl;
        save.gdtr = VmcbSeg {
            limit: sregs.gdt.limit as u32,
            base: sregs.gdt.base,
            ..Default::default()
        };
        save.idtr = VmcbSeg {
            limit: sregs.idt.limit as u32,
            base: sregs.idt.base,
            ..Default::default()
        };
        // CR0.CD/NW are loaded as the guest set them (no intercept): valid
        // for VMRUN, and the guest clears them itself as real CPUs expect.
        save.cr0 = sregs.cr0;
        save.cr2 = sregs.cr2;
        save.cr3 = sregs.cr3;
        save.cr4 = sregs.cr4;
        save.efer = sregs.efer | vmcb::EFER_SVME;
        self.vmcb.control.int_ctl = (self.vmcb.control.int_ctl & !0xf) | (sregs.cr8 as u32 & 0xf);
        fpu.store_fxsave(&mut self.fx.0);
        self.shut_down = false;
    }

    /// Stores the VMCB's register state back for the ioctls.
    pub(crate) fn store(
        &self,
        regs: &mut Regs,
        sregs: &mut Sregs,
        segs: &mut SvmSegs,
        fpu: &mut Fpu,
    ) {
        regs.set_gprs_x86(&self.all_gprs());
        let save = &self.vmcb.save;
        regs.rip = save.rip;
        regs.rflags = save.rflags;
        let mut save_copy = *save;
        for reg in SegReg::ALL {
            segs.segs[reg as usize] = *seg_slot(&mut save_copy, reg);
        }
        segs.cpl = save.cpl;
        sregs.gdt.limit = save.gdtr.limit as u16;
        sregs.gdt.base = save.gdtr.base;
        sregs.idt.limit = save.idtr.limit as u16;
        sregs.idt.base = save.idtr.base;
        sregs.cr0 = save.cr0;
        sregs.cr2 = save.cr2;
        sregs.cr3 = save.cr3;
        sregs.cr4 = save.cr4;
        sregs.efer = save.efer & !vmcb::EFER_SVME;
        sregs.cr8 = (self.vmcb.control.int_ctl & 0xf) as u64;
        *fpu = Fpu::from_fxsave(&self.fx.0);
    }

    /// The guest's TPR (CR8), which `V_TPR` holds.
    pub(crate) fn cr8(&self) -> u64 {
        (self.vmcb.control.int_ctl & 0xf) as u64
    }

    /// Sets the guest's TPR from `kvm_run.cr8` (checked by the caller).
    pub(crate) fn set_cr8(&mut self, cr8: u64) {
        self.vmcb.control.int_ctl = (self.vmcb.control.int_ctl & !0xf) | (cr8 as u32 & 0xf);
    }

    /// The fields `struct kvm_run` reports after every `KVM_RUN`: whether
    /// interrupts are enabled and an interrupt could be injected now.
    pub(crate) fn interrupt_status(&self) -> (bool, bool) {
        const RFLAGS_IF: u64 = 1 << 9;
        let if_flag = self.vmcb.save.rflags & RFLAGS_IF != 0;
        let shadow = self.vmcb.control.int_state & 1 != 0;
        (if_flag, if_flag && !shadow)
    }

    /// Whether the last exit was a shutdown (triple fault): the caller
    /// resets the vCPU, as KVM does, since the VMCB is undefined.
    pub(crate) fn shut_down(&self) -> bool {
        self.shut_down
    }

    /// All sixteen general-purpose registers in x86 order, RAX and RSP
    /// from the VMCB: what the emulator works on.
    fn all_gprs(&self) -> emulate::Gprs {
        let mut gprs = self.gprs;
        gprs[0] = self.vmcb.save.rax;
        gprs[4] = self.vmcb.save.rsp;
        gprs
    }

    fn set_all_gprs(&mut self, gprs: &emulate::Gprs) {
        self.gprs = *gprs;
        self.vmcb.save.rax = gprs[0];
        self.vmcb.save.rsp = gprs[4];
    }

    fn linear_rip(&self) -> u64 {
        self.vmcb.save.cs.base.wrapping_add(self.vmcb.save.rip)
    }

    /// Finishes the instruction that was handed to userspace, unless
    /// userspace moved RIP meanwhile (as KVM does). `User` if the
    /// instruction needs another trip to userspace (an MMIO write-back).
    fn complete_userspace_io(&mut self, vm: &Vm, run: &RunPage<'_>, pio: &SharedPage<'_>) -> Flow {
        let pending = core::mem::replace(&mut self.pending, Pending::None);
        match pending {
            Pending::None => {}
            Pending::OutsElement { linear_rip, string } => {
                if self.linear_rip() == linear_rip {
                    let delta = self.string_step(string.size, 1);
                    self.gprs[6] = add_masked(self.gprs[6], delta, string.addr_mask);
                    self.finish_string_elements(&string, 1);
                }
            }
            Pending::InsElements {
                linear_rip,
                string,
                count,
            } => {
                if self.linear_rip() != linear_rip {
                    return Flow::Guest;
                }
                return self.complete_ins(vm, run, pio, string, count);
            }
            Pending::MmioWrite { linear_rip, len } => {
                if self.linear_rip() == linear_rip {
                    self.vmcb.save.rip = self.vmcb.save.rip.wrapping_add(len);
                }
            }
            Pending::MmioRead {
                linear_rip,
                insn,
                gpa,
            } => {
                if self.linear_rip() != linear_rip {
                    return Flow::Guest;
                }
                let mut gprs = self.all_gprs();
                let mut rflags = self.vmcb.save.rflags;
                let write_back = insn.complete_read(run.mmio_data(), &mut gprs, &mut rflags);
                self.set_all_gprs(&gprs);
                self.vmcb.save.rflags = rflags;
                if let Some(val) = write_back {
                    run.set_mmio(gpa, insn.size() as u32, Some(val));
                    self.pending = Pending::MmioWrite {
                        linear_rip,
                        len: insn.len() as u64,
                    };
                    return Flow::User;
                }
                self.vmcb.save.rip = self.vmcb.save.rip.wrapping_add(insn.len() as u64);
            }
            Pending::PioOut {
                linear_rip,
                next_rip,
            } => {
                if self.linear_rip() == linear_rip {
                    self.vmcb.save.rip = next_rip;
                }
            }
            Pending::PioIn {
                linear_rip,
                next_rip,
                size,
            } => {
                if self.linear_rip() != linear_rip {
                    return Flow::Guest;
                }
                let mut data = [0u8; 8];
                pio.read_bytes(0, &mut data[..size as usize]);
                let val = u64::from_le_bytes(data);
                let rax = self.vmcb.save.rax;
                // An 8- or 16-bit IN merges into RAX; a 32-bit one zero-extends.
                self.vmcb.save.rax = match size {
                    1 => (rax & !0xff) | val,
                    2 => (rax & !0xffff) | val,
                    _ => val,
                };
                self.vmcb.save.rip = next_rip;
            }
        }
        Flow::Guest
    }

    /// `KVM_RUN`: runs the guest until an exit userspace must handle.
    /// Returns `EINTR` (exit reason `KVM_EXIT_INTR`) for a pending signal.
    pub(crate) fn run(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        cpuid: &[CpuidEntry],
    ) -> Result {
        if let Flow::User = self.complete_userspace_io(vm, run, pio) {
            return Ok(());
        }
        if run.immediate_exit() {
            return Err(EINTR);
        }
        let mut cache = PtCache::new();
        loop {
            // SAFETY: reads the current task's signal state.
            if unsafe { ffi::rkvm_signal_pending() } {
                run.set_exit_reason(kvm_exit::INTR);
                return Err(EINTR);
            }
            // SAFETY: no locks are held; a guest that never exits must not
            // keep the CPU from other tasks.
            if unsafe { ffi::rkvm_need_resched() } {
                // SAFETY: as above; may sleep.
                unsafe { ffi::rkvm_cond_resched() };
            }
            let cpu = self.enter(vm)?;
            match self.handle_exit(vm, run, pio, cpuid, &mut cache, cpu)? {
                Flow::Guest => {}
                Flow::User => return Ok(()),
            }
        }
    }

    /// One VMRUN. Returns the CPU it ran on.
    fn enter(&mut self, vm: &Vm) -> Result<u32> {
        if !self.vmcb.save.entry_is_valid(self.maxphyaddr) {
            // What VMRUN reports for a state that fails its checks.
            self.vmcb.control.exit_code = exit::INVALID;
            self.vmcb.control.exit_int_info = 0;
            // SAFETY: reads the CPU number; a stale value only labels the
            // failure report.
            return Ok(unsafe { ffi::rkvm_smp_processor_id_raw() });
        }
        let fx = self.fx.0.as_mut_ptr();
        // SAFETY: `fx` is a valid, 64-byte aligned FXSAVE image that the
        // guest's state came from (or `Fpu::store_fxsave` built with a valid
        // MXCSR). The kernel-FPU section disables preemption until `put`.
        unsafe { ffi::rkvm_guest_fpu_load(fx) };
        // SAFETY: paired with the enable below, in the same function.
        unsafe { ffi::rkvm_local_irq_disable() };
        // SAFETY: preemption and IRQs are off.
        let cpu = unsafe { ffi::rkvm_smp_processor_id() };
        let result = match hw::svm_cpu(cpu) {
            Some(svm_cpu) => {
                let tdp = vm.tdp();
                let tlb_gen = tdp.enter_guest(self.idx, cpu);
                let stale_tlb = tlb_gen != self.flushed_tlb_gen;
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
                    cpu,
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
                self.flushed_tlb_gen = tlb_gen;
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
                let vmcb_pa = phys_of(&*self.vmcb);
                // IRQs are off; SVM is on here (enabled before any ioctl).
                // SAFETY: the VMCB names the IOPM, MSRPM and NPT root (type
                // invariant); `gprs` is 16 words; the save page is this CPU's.
                unsafe {
                    ffi::rkvm_svm_run(vmcb_pa, self.gprs.as_mut_ptr(), svm_cpu.host_save_pa())
                };
                tdp.exit_guest(self.idx);
                Ok(cpu)
            }
            None => Err(EIO),
        };
        // SAFETY: IRQs were disabled above.
        unsafe { ffi::rkvm_local_irq_enable() };
        // SAFETY: ends the section `rkvm_guest_fpu_load` began, saving the
        // guest's state into the same image.
        unsafe { ffi::rkvm_guest_fpu_put(fx) };
        result
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let (inj, err) = vmcb::event_inj_exception(vector, error_code);
        self.vmcb.control.event_inj = inj;
        self.vmcb.control.event_inj_err = err;
    }

    /// Skips the instruction that exited.
    fn skip_instruction(&mut self, exit_code: u64) -> bool {
        let next = if self.nrip_save {
            self.vmcb.control.next_rip
        } else {
            match vmcb::fixed_insn_len(exit_code) {
                Some(len) => self.vmcb.save.rip.wrapping_add(len),
                None => return false,
            }
        };
        self.vmcb.save.rip = next;
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_exit(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        cpuid_table: &[CpuidEntry],
        cache: &mut PtCache,
        cpu: u32,
    ) -> Result<Flow> {
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
        match code {
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => Ok(Flow::Guest),
            exit::CPUID => {
                let leaf = self.vmcb.save.rax as u32;
                let sub = self.gprs[1] as u32;
                let [a, b, cx, d] = cpuid::lookup(cpuid_table, leaf, sub);
                self.vmcb.save.rax = a as u64;
                self.gprs[3] = b as u64;
                self.gprs[1] = cx as u64;
                self.gprs[2] = d as u64;
                self.skip_instruction(code);
                Ok(Flow::Guest)
            }
            exit::HLT => {
                self.skip_instruction(code);
                run.set_exit_reason(kvm_exit::HLT);
                Ok(Flow::User)
            }
            exit::IOIO => Ok(self.handle_io(vm, run, pio, cpu)),
            exit::MSR => Ok(self.handle_msr(code)),
            exit::SHUTDOWN => {
                self.shut_down = true;
                run.set_exit_reason(kvm_exit::SHUTDOWN);
                Ok(Flow::User)
            }
            exit::NPF => self.handle_npf(vm, run, cache, cpu),
            exit::INVALID => {
                run.set_fail_entry(code, cpu);
                Ok(Flow::User)
            }
            c if vmcb::is_undefined_instruction_exit(c) => {
                self.inject_exception(vmcb::vector::UD, None);
                Ok(Flow::Guest)
            }
            _ => {
                run.set_internal_error(internal::UNEXPECTED_EXIT_REASON, &[code, cpu as u64]);
                Ok(Flow::User)
            }
        }
    }

    fn handle_io(&mut self, vm: &Vm, run: &RunPage<'_>, pio: &SharedPage<'_>, cpu: u32) -> Flow {
        let info1 = self.vmcb.control.exit_info_1;
        let Some(io) = IoioInfo::decode(info1) else {
            run.set_internal_error(
                internal::UNEXPECTED_EXIT_REASON,
                &[exit::IOIO, cpu as u64, info1],
            );
            return Flow::User;
        };
        if io.string {
            return self.start_string_io(vm, run, pio, &io);
        }
        // The IOIO intercept always reports the next RIP in EXITINFO2.
        let next_rip = self.vmcb.control.exit_info_2;
        let linear_rip = self.linear_rip();
        if io.is_in {
            // As KVM, an IN starts from zeroed data.
            pio.write_bytes(0, &[0; 4][..io.size as usize]);
            self.pending = Pending::PioIn {
                linear_rip,
                next_rip,
                size: io.size,
            };
        } else {
            let data = self.vmcb.save.rax.to_le_bytes();
            pio.write_bytes(0, &data[..io.size as usize]);
            self.pending = Pending::PioOut {
                linear_rip,
                next_rip,
            };
        }
        run.set_io(io.is_in, io.size, io.port, 1);
        Flow::User
    }

    fn handle_msr(&mut self, code: u64) -> Flow {
        let index = self.gprs[1] as u32;
        let ok = if self.vmcb.control.exit_info_1 == 0 {
            match self.get_msr(index) {
                Some(v) => {
                    self.vmcb.save.rax = v & 0xffff_ffff;
                    self.gprs[2] = v >> 32;
                    true
                }
                None => false,
            }
        } else {
            let v = (self.vmcb.save.rax & 0xffff_ffff) | (self.gprs[2] << 32);
            self.set_msr(index, v, false).is_ok()
        };
        if ok {
            self.skip_instruction(code);
        } else {
            self.inject_exception(vmcb::vector::GP, Some(0));
        }
        Flow::Guest
    }

    fn handle_npf(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        cache: &mut PtCache,
        _cpu: u32,
    ) -> Result<Flow> {
        let info1 = self.vmcb.control.exit_info_1;
        let gpa = self.vmcb.control.exit_info_2;
        let write = info1 & npf::WRITE != 0;
        match vm.handle_npf(crate::mmu::Gfn::from_gpa(gpa), write, cache) {
            Ok(NpfOutcome::Mapped) => Ok(Flow::Guest),
            Ok(NpfOutcome::Mmio) if info1 & npf::FETCH == 0 => Ok(self.emulate_mmio(vm, run, gpa)),
            Ok(NpfOutcome::Mmio) => {
                // Executing from MMIO: KVM cannot either.
                run.set_internal_error(internal::EMULATION, &[exit::NPF, info1, gpa]);
                Ok(Flow::User)
            }
            Err(e) if e == EINTR => {
                run.set_exit_reason(kvm_exit::INTR);
                Err(EINTR)
            }
            Err(e) => Err(e),
        }
    }

    /// The guest's paging registers, for the walker.
    fn walk_regs(&self) -> WalkRegs {
        let s = &self.vmcb.save;
        WalkRegs {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
            maxphyaddr: self.maxphyaddr as u8,
        }
    }

    /// The decoding mode of the guest's current code segment.
    fn mode(&self) -> Mode {
        const L: u16 = 1 << 9;
        const DB: u16 = 1 << 10;
        let s = &self.vmcb.save;
        Mode::from_state(
            s.cr0,
            s.efer,
            s.cs.attrib & L != 0,
            s.cs.attrib & DB != 0,
            s.rflags,
        )
    }

    /// Fetches up to 15 bytes at the guest's RIP, as the CPU would.
    fn fetch_insn(
        &mut self,
        vm: &Vm,
    ) -> core::result::Result<([u8; emulate::MAX_INSN_LEN], usize), WalkError> {
        let mut rip = self.linear_rip();
        if self.mode() != Mode::Long64 {
            rip &= 0xffff_ffff;
        }
        let regs = self.walk_regs();
        let access = AccessKind {
            write: false,
            user: self.vmcb.save.cpl == 3,
            fetch: true,
        };
        let mut buf = [0u8; emulate::MAX_INSN_LEN];
        let mut got = 0;
        while got < buf.len() {
            let va = rip.wrapping_add(got as u64);
            let gpa = match guest_walk::translate(va, &regs, access, &mut WalkerMemory(vm)) {
                Ok(gpa) => gpa,
                Err(e) if got == 0 => return Err(e),
                // The rest may not be needed: let the decoder decide.
                Err(_) => break,
            };
            let n = (buf.len() - got).min(0x1000 - (gpa & 0xfff) as usize);
            if vm.read_guest_phys(gpa, &mut buf[got..got + n]).is_none() {
                if got == 0 {
                    return Err(WalkError::NoMemory { gpa });
                }
                break;
            }
            got += n;
        }
        Ok((buf, got))
    }

    /// An access to `gpa` that no memslot backs (or a write to a read-only
    /// slot): decode the instruction and hand its memory access to
    /// userspace as `KVM_EXIT_MMIO`.
    fn emulate_mmio(&mut self, vm: &Vm, run: &RunPage<'_>, gpa: u64) -> Flow {
        let (bytes, len) = match self.fetch_insn(vm) {
            Ok(b) => b,
            Err(WalkError::Retry) => return Flow::Guest,
            Err(WalkError::PageFault { error_code }) => {
                // The guest's page tables changed under it: it faults.
                self.vmcb.save.cr2 = self.linear_rip();
                self.inject_exception(vmcb::vector::PF, Some(error_code));
                return Flow::Guest;
            }
            Err(_) => {
                run.set_internal_error(internal::EMULATION, &[exit::NPF, gpa]);
                return Flow::User;
            }
        };
        let insn = match emulate::decode(&bytes[..len], self.mode()) {
            Ok(insn) => insn,
            Err(_) => {
                // KVM's emulation-failure report: the instruction bytes.
                let mut data = [0u64; 3];
                data[0] = exit::NPF;
                data[1] = u64::from_le_bytes(crate::abi::field(&bytes, 0));
                data[2] = u64::from_le_bytes(crate::abi::field(&bytes, 7));
                run.set_internal_error(internal::EMULATION, &data);
                return Flow::User;
            }
        };
        let linear_rip = self.linear_rip();
        match insn.first_access(&self.all_gprs()) {
            Access::Write(val) => {
                run.set_mmio(gpa, insn.size() as u32, Some(val));
                self.pending = Pending::MmioWrite {
                    linear_rip,
                    len: insn.len() as u64,
                };
            }
            Access::Read => {
                run.set_mmio(gpa, insn.size() as u32, None);
                self.pending = Pending::MmioRead {
                    linear_rip,
                    insn,
                    gpa,
                };
            }
        }
        Flow::User
    }

    /// Bytes RSI/RDI move per element: backwards with RFLAGS.DF.
    fn string_step(&self, size: u8, n: u32) -> i64 {
        const DF: u64 = 1 << 10;
        let bytes = size as i64 * n as i64;
        if self.vmcb.save.rflags & DF != 0 {
            -bytes
        } else {
            bytes
        }
    }

    /// `n` elements are done: count them off RCX under REP, and leave the
    /// instruction when it is complete (else the guest runs it again).
    fn finish_string_elements(&mut self, string: &StringIo, n: u32) {
        if string.rep {
            self.gprs[1] = add_masked(self.gprs[1], -(n as i64), string.addr_mask);
            if self.gprs[1] & string.addr_mask != 0 {
                return;
            }
        }
        self.vmcb.save.rip = string.next_rip;
    }

    /// The effective segment and address size of INS/OUTS, from the
    /// instruction's prefixes (no decode assists under QEMU).
    fn decode_string_io(&mut self, vm: &Vm, io: &IoioInfo) -> Option<(u64, u64)> {
        let (bytes, len) = self.fetch_insn(vm).ok()?;
        let mode = self.mode();
        let mut seg = if io.is_in { 0 } else { 3 };
        let mut addr_override = false;
        for &b in &bytes[..len] {
            match b {
                0x26 | 0x2e | 0x36 | 0x3e => seg = (b >> 3) & 3,
                0x64 => seg = 4,
                0x65 => seg = 5,
                0x67 => addr_override = true,
                0x66 | 0xf0 | 0xf2 | 0xf3 => {}
                0x40..=0x4f if mode == Mode::Long64 => {}
                _ => break,
            }
        }
        // INS always writes through ES.
        if io.is_in {
            seg = 0;
        }
        let bits = match (mode, addr_override) {
            (Mode::Long64, false) => 64,
            (Mode::Long64, true) | (Mode::Prot32, false) => 32,
            (Mode::Prot32, true) => 16,
            (_, false) => 16,
            (_, true) => 32,
        };
        let mask = match bits {
            16 => 0xffff,
            32 => 0xffff_ffff,
            _ => u64::MAX,
        };
        let s = &self.vmcb.save;
        let base = match (mode, seg) {
            (Mode::Long64, 4) => s.fs.base,
            (Mode::Long64, 5) => s.gs.base,
            (Mode::Long64, _) => 0,
            (_, 0) => s.es.base,
            (_, 1) => s.cs.base,
            (_, 2) => s.ss.base,
            (_, 3) => s.ds.base,
            (_, 4) => s.fs.base,
            _ => s.gs.base,
        };
        Some((base, mask))
    }

    /// Translates the string operand's linear address for an access.
    fn string_gpa(
        &self,
        vm: &Vm,
        linear: u64,
        write: bool,
    ) -> core::result::Result<u64, WalkError> {
        let access = AccessKind {
            write,
            user: self.vmcb.save.cpl == 3,
            fetch: false,
        };
        guest_walk::translate(linear, &self.walk_regs(), access, &mut WalkerMemory(vm))
    }

    /// INS/OUTS: as KVM, each OUTS element is its own exit; INS elements
    /// are asked for in a batch up to the end of the guest page.
    fn start_string_io(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        io: &IoioInfo,
    ) -> Flow {
        let Some((seg_base, addr_mask)) = self.decode_string_io(vm, io) else {
            run.set_internal_error(
                internal::EMULATION,
                &[exit::IOIO, self.vmcb.control.exit_info_1],
            );
            return Flow::User;
        };
        let string = StringIo {
            size: io.size,
            rep: io.rep,
            addr_mask,
            seg_base,
            next_rip: self.vmcb.control.exit_info_2,
        };
        let count = if io.rep { self.gprs[1] & addr_mask } else { 1 };
        if count == 0 {
            self.vmcb.save.rip = string.next_rip;
            return Flow::Guest;
        }
        let linear_rip = self.linear_rip();
        let index = if io.is_in { self.gprs[7] } else { self.gprs[6] };
        let linear = seg_base.wrapping_add(index & addr_mask);
        let gpa = match self.string_gpa(vm, linear, io.is_in) {
            Ok(gpa) => gpa,
            Err(WalkError::Retry) => return Flow::Guest,
            Err(WalkError::PageFault { error_code }) => {
                self.vmcb.save.cr2 = linear;
                self.inject_exception(vmcb::vector::PF, Some(error_code));
                return Flow::Guest;
            }
            Err(_) => {
                run.set_internal_error(internal::EMULATION, &[exit::IOIO, linear]);
                return Flow::User;
            }
        };
        if !io.is_in {
            let mut data = [0u8; 4];
            let size = io.size as usize;
            // An element straddling a page is read in two parts.
            let first = size.min(0x1000 - (gpa & 0xfff) as usize);
            let mut ok = vm.read_guest_phys(gpa, &mut data[..first]).is_some();
            if ok && first < size {
                ok = self
                    .string_gpa(vm, linear.wrapping_add(first as u64), false)
                    .ok()
                    .and_then(|g| vm.read_guest_phys(g, &mut data[first..size]))
                    .is_some();
            }
            if !ok {
                run.set_internal_error(internal::EMULATION, &[exit::IOIO, linear]);
                return Flow::User;
            }
            pio.write_bytes(0, &data[..size]);
            run.set_io(false, io.size, io.port, 1);
            self.pending = Pending::OutsElement { linear_rip, string };
            return Flow::User;
        }
        // Elements left on this guest page in the direction of travel.
        // Never 0 (IoioInfo decodes 1, 2 or 4), which the type says.
        let size = core::num::NonZeroU64::new(io.size as u64).unwrap_or(core::num::NonZeroU64::MIN);
        let off = linear & 0xfff;
        let in_page = if self.string_step(io.size, 1) > 0 {
            (0x1000 - off) / size
        } else {
            off / size + 1
        };
        let n = count.min(in_page.max(1)).min(0x1000 / size) as u32;
        pio.write_bytes(0, &[0; 4][..io.size as usize]);
        run.set_io(true, io.size, io.port, n);
        self.pending = Pending::InsElements {
            linear_rip,
            string,
            count: n,
        };
        Flow::User
    }

    /// Stores the data of `count` INS elements from the PIO page.
    fn complete_ins(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        string: StringIo,
        count: u32,
    ) -> Flow {
        let size = string.size as usize;
        for i in 0..count {
            let mut data = [0u8; 4];
            pio.read_bytes(i as usize * size, &mut data[..size]);
            let linear = string
                .seg_base
                .wrapping_add(self.gprs[7] & string.addr_mask);
            let stored = self
                .string_gpa(vm, linear, true)
                .ok()
                .and_then(|gpa| {
                    let first = size.min(0x1000 - (gpa & 0xfff) as usize);
                    vm.write_guest_phys(gpa, &data[..first])?;
                    if first < size {
                        let g2 = self
                            .string_gpa(vm, linear.wrapping_add(first as u64), true)
                            .ok()?;
                        vm.write_guest_phys(g2, &data[first..size])?;
                    }
                    Some(())
                })
                .is_some();
            if !stored {
                run.set_internal_error(internal::EMULATION, &[exit::IOIO, linear]);
                return Flow::User;
            }
            let delta = self.string_step(string.size, 1);
            self.gprs[7] = add_masked(self.gprs[7], delta, string.addr_mask);
            self.finish_string_elements(&string, 1);
        }
        Flow::Guest
    }

    /// Reads an MSR for the guest or `KVM_GET_MSRS`; `None` if rkvm does
    /// not implement it (the guest gets `#GP`).
    pub(crate) fn get_msr(&self, index: u32) -> Option<u64> {
        let s = &self.vmcb.save;
        Some(match index {
            msr::EFER => s.efer & !vmcb::EFER_SVME,
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
            msr::TSC => x86::rdtsc().wrapping_add(self.vmcb.control.tsc_offset),
            msr::PAT => s.g_pat,
            msr::MISC_ENABLE => self.misc_enable,
            _ => return None,
        })
    }

    /// Writes an MSR for the guest or (`host`) `KVM_SET_MSRS`. `Err` means
    /// the value is not allowed (the guest gets `#GP`).
    pub(crate) fn set_msr(
        &mut self,
        index: u32,
        val: u64,
        host: bool,
    ) -> core::result::Result<(), ()> {
        let s = &mut self.vmcb.save;
        match index {
            msr::EFER => {
                let new = msr::check_efer(s.efer & !vmcb::EFER_SVME, val, s.cr0, host)?;
                s.efer = new | vmcb::EFER_SVME;
            }
            msr::STAR => s.star = val,
            msr::LSTAR => s.lstar = msr::canonical(val)?,
            msr::CSTAR => s.cstar = msr::canonical(val)?,
            msr::SFMASK => s.sfmask = val & 0xffff_ffff,
            msr::KERNEL_GS_BASE => s.kernel_gs_base = msr::canonical(val)?,
            msr::FS_BASE => s.fs.base = msr::canonical(val)?,
            msr::GS_BASE => s.gs.base = msr::canonical(val)?,
            msr::SYSENTER_CS => s.sysenter_cs = val & 0xffff,
            msr::SYSENTER_ESP => s.sysenter_esp = msr::canonical(val)?,
            msr::SYSENTER_EIP => s.sysenter_eip = msr::canonical(val)?,
            msr::TSC => self.vmcb.control.tsc_offset = val.wrapping_sub(x86::rdtsc()),
            msr::PAT => s.g_pat = msr::check_pat(val)?,
            msr::MISC_ENABLE => {
                self.misc_enable = msr::check_misc_enable(self.misc_enable, val, host)?
            }
            _ => return Err(()),
        }
        Ok(())
    }
}
