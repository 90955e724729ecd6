// SPDX-License-Identifier: GPL-2.0

//! A VMX vCPU, as far as rkvm's VMX backend goes today: register state in
//! the VMCS's formats (segments as VMCS access rights, which is what KVM
//! reports them through on Intel), so that the register ioctls behave as
//! on kvm_intel, and a VMCS holding the controls and the host state that
//! never changes. It does not run guests yet: `run` fails with `EINVAL`, as
//! `KVM_RUN` does on VMX hosts, and `KVM_CAP_IMMEDIATE_EXIT` reads 0.

use kernel::prelude::*;

use crate::{
    arch::{rflags, vector},
    backend::{Entry, Exit, VcpuBackend},
    emulate::Gprs,
    msr,
    regs::Regs,
    shim::{cpu::IrqsOff, x86},
    sregs::{self, SegReg, Segment, Sregs},
    vmx::{
        controls::{exit, VmcsConfig},
        seg::VmxSegs,
        vmcs::{control32, guest64, host16, host64, host_nat},
        vmcs_ops::{CurrentVmcs, VmcsRegion, VmxInsnFailure},
        VmxFeatures,
    },
};

/// A VMX vCPU's state.
pub(crate) struct VmxVcpu {
    regs: Regs,
    /// Control registers and descriptor tables; `segs` holds the segments.
    sregs: Sregs,
    segs: VmxSegs,
    msrs: [u64; NR_MSRS],
    tsc_offset: u64,
    /// Current on no CPU between uses (see `vmcs_ops`); freed on drop.
    /// Only owned until the entry step loads it for `run`.
    #[allow(dead_code)]
    vmcs: VmcsRegion,
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

/// The exceptions that exit: machine checks, which the host handles (as
/// KVM always does). Those the backend must see to emulate something are
/// added by the entry step.
const EXCEPTION_BITMAP: u32 = 1 << vector::MC;

impl VmxVcpu {
    /// A vCPU in its RESET state, with a VMCS for a CPU with VMX features
    /// `f`, set up with the control words `cfg` computed at load. Fails
    /// with `EIO` if a VMX instruction fails.
    pub(crate) fn new(is_bsp: bool, f: &VmxFeatures, cfg: &VmcsConfig) -> Result<KBox<Self>> {
        let mut vmcs = VmcsRegion::new(f)?;
        init_vmcs(&mut vmcs, cfg).map_err(|e| {
            pr_err!("VMCS setup failed: {}\n", format_args!("{e}"));
            EIO
        })?;
        let mut vcpu = KBox::new(
            Self {
                regs: Regs::reset(),
                sregs: sregs::reset(is_bsp),
                segs: VmxSegs::reset(),
                msrs: [0; NR_MSRS],
                tsc_offset: 0,
                vmcs,
            },
            GFP_KERNEL,
        )?;
        vcpu.reset(is_bsp);
        Ok(vcpu)
    }
}

/// Why a VMCS could not be set up.
enum InitError {
    Insn(VmxInsnFailure),
    /// The host's value of this MSR could not be read.
    Msr(u32),
    /// A field read back other than written.
    Readback {
        field: &'static str,
        wrote: u64,
        read: u64,
    },
}

impl From<VmxInsnFailure> for InitError {
    fn from(e: VmxInsnFailure) -> Self {
        Self::Insn(e)
    }
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Insn(e) => write!(f, "{e}"),
            Self::Msr(m) => write!(f, "RDMSR {m:#x} faulted"),
            Self::Readback { field, wrote, read } => {
                write!(f, "{field} reads back {read:#x}, {wrote:#x} was written")
            }
        }
    }
}

/// Writes, on this CPU with IRQs off, what every entry of this vCPU will
/// use unchanged: the control words, the VMCS link pointer, the exception
/// bitmap and the host state that is the same on every CPU and for every
/// task. Reads the controls back, then VMCLEARs the VMCS, so that it is
/// current on no CPU afterwards.
///
/// Host CR3 and CR4 are as the kernel has them now; CR3 is the creating
/// task's and CR4 may differ between CPUs, so the entry step rewrites both
/// when they change, as KVM does. The per-CPU host state (GDT, IDT and TSS
/// bases, the stack, FS/GS bases) is written at entry too.
fn init_vmcs(region: &mut VmcsRegion, cfg: &VmcsConfig) -> core::result::Result<(), InitError> {
    let host = HostState {
        sel: x86::host_selectors(),
        // The same on every CPU of a running kernel.
        pat: x86::rdmsr(msr::PAT).ok_or(InitError::Msr(msr::PAT))?,
        efer: x86::rdmsr(msr::EFER).ok_or(InitError::Msr(msr::EFER))?,
        cr0: x86::cr0(),
    };
    let irqs = IrqsOff::new();
    let mut vmcs = region.load(&irqs)?;
    let controls = [
        (
            control32::PIN_BASED_VM_EXEC_CONTROL,
            cfg.pin_based,
            "pin-based controls",
        ),
        (
            control32::CPU_BASED_VM_EXEC_CONTROL,
            cfg.primary,
            "primary controls",
        ),
        (
            control32::SECONDARY_VM_EXEC_CONTROL,
            cfg.secondary,
            "secondary controls",
        ),
        (control32::VM_EXIT_CONTROLS, cfg.exit, "exit controls"),
        (control32::VM_ENTRY_CONTROLS, cfg.entry, "entry controls"),
        (
            control32::EXCEPTION_BITMAP,
            EXCEPTION_BITMAP,
            "exception bitmap",
        ),
    ];
    for &(field, value, _) in &controls {
        vmcs.write32(field, value)?;
    }
    vmcs.write64(guest64::VMCS_LINK_POINTER, u64::MAX)?;
    write_host_state(&mut vmcs, cfg, &host)?;
    // Read back every control, and one field of each other width.
    let check = |field: &'static str, wrote: u64, read: u64| {
        if read == wrote {
            Ok(())
        } else {
            Err(InitError::Readback { field, wrote, read })
        }
    };
    for &(field, wrote, name) in &controls {
        check(name, wrote.into(), vmcs.read32(field)?.into())?;
    }
    check(
        "VMCS link pointer",
        u64::MAX,
        vmcs.read64(guest64::VMCS_LINK_POINTER)?,
    )?;
    check(
        "host CS",
        host.sel.cs.into(),
        vmcs.read16(host16::CS_SELECTOR)?.into(),
    )?;
    check("host CR0", host.cr0, vmcs.read_nat(host_nat::CR0)?)?;
    vmcs.clear()?;
    Ok(())
}

/// The host state that is the same on every CPU, read before IRQs go off.
struct HostState {
    sel: x86::HostSelectors,
    pat: u64,
    efer: u64,
    cr0: u64,
}

fn write_host_state(
    vmcs: &mut CurrentVmcs<'_>,
    cfg: &VmcsConfig,
    host: &HostState,
) -> core::result::Result<(), VmxInsnFailure> {
    vmcs.write_nat(host_nat::CR0, host.cr0)?;
    vmcs.write_nat(host_nat::CR3, x86::cr3())?;
    vmcs.write_nat(host_nat::CR4, x86::cr4())?;
    let sel = host.sel;
    vmcs.write16(host16::CS_SELECTOR, sel.cs)?;
    vmcs.write16(host16::SS_SELECTOR, sel.ds)?;
    // DS, ES, FS and GS exit as null selectors (a 64-bit kernel does not use
    // them; FS and GS bases are written at entry); the user values are the
    // entry step's to reload after an exit, as KVM does.
    for field in [
        host16::DS_SELECTOR,
        host16::ES_SELECTOR,
        host16::FS_SELECTOR,
        host16::GS_SELECTOR,
    ] {
        vmcs.write16(field, 0)?;
    }
    vmcs.write16(host16::TR_SELECTOR, sel.tr)?;
    if cfg.exit & exit::LOAD_IA32_PAT != 0 {
        vmcs.write64(host64::IA32_PAT, host.pat)?;
    }
    if cfg.exit & exit::LOAD_IA32_EFER != 0 {
        vmcs.write64(host64::IA32_EFER, host.efer)?;
    }
    Ok(())
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
