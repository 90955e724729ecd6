// SPDX-License-Identifier: GPL-2.0

//! A VMX vCPU: the guest's register state in the VMCS's formats (segments as
//! VMCS access rights, which is what KVM reports them through on Intel), a
//! VMCS per vCPU, the world switch around VMLAUNCH, and the translation of
//! each VM exit into a vendor-neutral [`Exit`].
//!
//! # The VMCS and the ioctls' copy
//!
//! The ioctls read and write the copy in [`GuestState`]; VMREAD and VMWRITE
//! happen only inside `run`, with IRQs off. During `KVM_RUN` the VMCS stays
//! current on the CPU the vCPU thread runs on (VMPTRLD at the first entry
//! there, VMRESUME for the next ones); when the thread is scheduled out, to
//! move to another CPU or because its CPU goes offline, a preempt notifier
//! VMCLEARs it, and so does the end of `KVM_RUN` (see `vmcs_ops`). Each
//! entry writes the groups of guest fields the ioctls or the exit handlers
//! changed since the last one (`dirty`); after the exit it reads back the
//! state the guest changes without exiting (RIP, RSP, RFLAGS, CR0's
//! guest-owned bits, CR3, segments, descriptor tables, interruptibility,
//! long-mode activity). The per-CPU host fields are rewritten when the CPU
//! changes.
//!
//! # Host state
//!
//! A VM exit loads the host's state from the VMCS: constant fields at
//! creation, per-CPU ones (GDT, IDT and TSS bases, GS base, SYSENTER) when
//! the vCPU enters on another CPU, per-task ones (CR3, FS base) when they
//! changed. The syscall MSRs and `KERNEL_GS_BASE`, which the VMCS does not
//! hold, are switched by the VM-entry and VM-exit MSR lists; what VM exit
//! leaves changed (selectors, GDT and TSS limits, debug registers) is put
//! back by the C side of the world switch.

use kernel::{alloc::flags::GFP_KERNEL, prelude::*};

use crate::{
    arch::{cr0, efer, rflags},
    debugreg,
    backend::{Entry, Event, Exit, VcpuBackend},
    emulate::Gprs,
    msr,
    regs::Regs,
    shim::{cpu::IrqsOff, ffi, x86},
    sregs::{self, SegReg, Segment, Sregs},
    vmx::{
        controls::{entry as entry_ctl, exit as exit_ctl, primary, secondary, VmcsConfig},
        exit::{ept_violation, event, reason, ExitInfo, REASON_FAILED_ENTRY},
        features::{MSR_VMX_CR0_FIXED0, MSR_VMX_CR0_FIXED1, MSR_VMX_CR4_FIXED0},
        seg::{VmxSeg, VmxSegs},
        vmcs::{
            control16, control32, control64, control_nat, exit32, exit64, exit_nat, guest16,
            guest32, guest64, guest_nat, host16, host32, host64, host_nat,
        },
        vmcs_ops::{
            self, CurrentVmcs, Failure, InveptType, InvvpidType, VmcsRegion, VmxInsnFailure,
        },
        vpid::VpidPool,
        VmxFeatures,
    },
    vcpu_events::shadow,
};

/// Every vCPU's VPID comes from here.
static VPIDS: VpidPool = VpidPool::new();

/// The exceptions that exit: machine checks, which the host handles (as
/// KVM always does), and `#DB`, whose DR6 bits VMX does not switch: the
/// backend updates the guest's DR6 from the exit and delivers it again
/// (as KVM, which intercepts it too).
const EXCEPTION_BITMAP: u32 = 1 << crate::arch::vector::MC | 1 << crate::arch::vector::DB;

/// Bits of the guest interruptibility state (SDM 25.4.2, table 25-3).
mod interruptibility {
    /// Blocking by STI and by MOV SS: the interrupt shadow.
    pub(super) const STI: u32 = 1 << 0;
    pub(super) const MOV_SS: u32 = 1 << 1;
    /// Blocking by NMI: an NMI handler has not returned (virtual NMIs).
    pub(super) const NMI: u32 = 1 << 3;
    pub(super) const SHADOW: u32 = STI | MOV_SS;
}

/// Groups of guest fields that must be written at the next entry.
mod dirty {
    /// CR0 and its read shadow.
    pub(super) const CR0: u32 = 1 << 0;
    pub(super) const CR3: u32 = 1 << 1;
    /// CR4 and its read shadow.
    pub(super) const CR4: u32 = 1 << 2;
    /// EFER and the IA-32e mode control that follows EFER.LMA.
    pub(super) const EFER: u32 = 1 << 3;
    /// Segments and descriptor tables.
    pub(super) const SEGMENTS: u32 = 1 << 4;
    /// PAT and SYSENTER.
    pub(super) const MSRS: u32 = 1 << 5;
    pub(super) const TSC_OFFSET: u32 = 1 << 6;
    /// The interruptibility state.
    pub(super) const EVENTS: u32 = 1 << 7;
    /// The PDPTEs of PAE paging.
    pub(super) const PDPTRS: u32 = 1 << 8;
    /// The primary controls (interrupt-window exiting), the TPR
    /// threshold and the exception bitmap.
    pub(super) const CONTROLS: u32 = 1 << 9;
    /// DR7.
    pub(super) const DEBUG: u32 = 1 << 10;
    pub(super) const ALL: u32 = 0x7ff;
}

/// Declares the raw encodings of a segment's four fields, for batches.
macro_rules! seg_fields {
    ($sel:ident, $ar:ident, $lim:ident, $base:ident) => {
        [
            guest16::$sel.0,
            guest32::$ar.0,
            guest32::$lim.0,
            guest_nat::$base.0,
        ]
    };
}

/// What is read after every exit (indices below): the exit itself and the
/// state exit handlers and the next entry always need.
const EXIT_FIELDS: [u32; 16] = {
    let cs = seg_fields!(CS_SELECTOR, CS_AR_BYTES, CS_LIMIT, CS_BASE);
    [
        exit32::VM_EXIT_REASON.0,
        exit_nat::EXIT_QUALIFICATION.0,
        exit32::VM_EXIT_INTR_INFO.0,
        exit32::VM_EXIT_INSTRUCTION_LEN.0,
        exit32::IDT_VECTORING_INFO_FIELD.0,
        guest_nat::RIP.0,
        guest_nat::RSP.0,
        guest_nat::RFLAGS.0,
        guest32::INTERRUPTIBILITY_INFO.0,
        guest_nat::CR0.0,
        control32::VM_ENTRY_CONTROLS.0,
        cs[0],
        cs[1],
        cs[2],
        cs[3],
        guest32::SS_AR_BYTES.0,
    ]
};

/// The rest of the state the guest changes without exiting, read only when
/// someone needs it (`sync_state`): CR3, the segments in `SegReg` order,
/// GDTR and IDTR.
const LAZY_FIELDS: [u32; 37] = {
    let segs = [
        seg_fields!(CS_SELECTOR, CS_AR_BYTES, CS_LIMIT, CS_BASE),
        seg_fields!(DS_SELECTOR, DS_AR_BYTES, DS_LIMIT, DS_BASE),
        seg_fields!(ES_SELECTOR, ES_AR_BYTES, ES_LIMIT, ES_BASE),
        seg_fields!(FS_SELECTOR, FS_AR_BYTES, FS_LIMIT, FS_BASE),
        seg_fields!(GS_SELECTOR, GS_AR_BYTES, GS_LIMIT, GS_BASE),
        seg_fields!(SS_SELECTOR, SS_AR_BYTES, SS_LIMIT, SS_BASE),
        seg_fields!(TR_SELECTOR, TR_AR_BYTES, TR_LIMIT, TR_BASE),
        seg_fields!(LDTR_SELECTOR, LDTR_AR_BYTES, LDTR_LIMIT, LDTR_BASE),
    ];
    let mut f = [0u32; 37];
    f[0] = guest_nat::CR3.0;
    let mut i = 0;
    while i < 8 {
        let mut j = 0;
        while j < 4 {
            f[1 + i * 4 + j] = segs[i][j];
            j += 1;
        }
        i += 1;
    }
    f[33] = guest_nat::GDTR_BASE.0;
    f[34] = guest32::GDTR_LIMIT.0;
    f[35] = guest_nat::IDTR_BASE.0;
    f[36] = guest32::IDTR_LIMIT.0;
    f
};

/// The MSRs the VM-entry and VM-exit MSR lists switch (SDM 25.7.2,
/// 25.8.2), in list order: `KERNEL_GS_BASE` first, the only one the guest
/// changes without an exit (SWAPGS), so the exit stores just that one.
const SWITCHED_MSRS: [u32; 5] = [
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
];

/// One entry of an MSR list.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct MsrEntry {
    index: u32,
    reserved: u32,
    value: u64,
}

/// The guest's list (loaded by entry; its first entry stored by exit) and
/// the host's (loaded by exit).
#[repr(C, align(4096))]
struct MsrLists {
    guest: [MsrEntry; SWITCHED_MSRS.len()],
    host: [MsrEntry; SWITCHED_MSRS.len()],
}

// SAFETY: integers only; all-zero is valid.
unsafe impl Zeroable for MsrLists {}

/// The MSR bitmap (SDM 25.6.9): every bit set, so every RDMSR and WRMSR
/// exits, as on SVM.
#[repr(C, align(4096))]
struct MsrBitmap([u8; 4096]);
// SAFETY: a byte array; all-zero is valid.
unsafe impl Zeroable for MsrBitmap {}

/// The virtual-APIC page: the guest's TPR (CR8) lives at offset 0x80.
#[repr(C, align(4096))]
struct VirtualApic([u8; 4096]);
// SAFETY: a byte array; all-zero is valid.
unsafe impl Zeroable for VirtualApic {}

const VAPIC_TPR: usize = 0x80;

fn phys_of<T>(p: &T) -> u64 {
    // SAFETY: `p` points into kmalloc memory, which the direct map covers.
    unsafe { ffi::rkvm_virt_to_phys((p as *const T).cast()) }
}

/// The guest's architectural state as the ioctls see it.
struct GuestState {
    /// RAX..R15 in x86 order; RSP (slot 4) goes to the VMCS.
    gprs: [u64; 16],
    cr2: u64,
    rip: u64,
    rflags: u64,
    /// CR0 and CR4 as the guest sees them (the read shadows), CR3, EFER,
    /// GDT and IDT. `cr2` and `cr8` are kept elsewhere, the segments in
    /// `segs`.
    sregs: Sregs,
    segs: VmxSegs,
    pat: u64,
    sysenter: [u64; 3],
    pdptrs: [u64; 4],
    tsc_offset: u64,
    /// Guest interruptibility state (STI/MOV SS blocking, NMI blocking).
    interruptibility: u32,
    /// The event the next entry delivers (VM-entry interruption
    /// information, error code, instruction length), if any.
    event: Option<(u32, u32, u32)>,
    /// Interrupt-window exiting is asked for.
    interrupt_window: bool,
    /// NMI-window exiting is asked for.
    nmi_window: bool,
    /// The TPR threshold (a priority class, 0 for none).
    tpr_threshold: u8,
    /// Every `#DB` exits for the VMM's debugger, and every `#BP`
    /// (`set_debug_intercepts`).
    debug_db: bool,
    debug_bp: bool,
    /// `ENABLE_RDTSCP` (`set_rdtscp`).
    rdtscp: bool,
    /// DR6, which VMX does not switch (a guest `#DB` exits and says what
    /// it sets: see `enter`), and DR7 (the VMCS field).
    dr6: u64,
    dr7: u64,
    /// Groups to write at the next entry.
    dirty: u32,
    /// CR3, the segments (but CS and SS's access rights) and the
    /// descriptor tables are older than the last exit: `sync_state` reads
    /// them before anyone looks.
    stale: bool,
}

impl GuestState {
    fn reset(is_bsp: bool) -> Self {
        let regs = Regs::reset();
        Self {
            gprs: regs.gprs_x86(),
            cr2: 0,
            rip: regs.rip,
            rflags: regs.rflags,
            sregs: sregs::reset(is_bsp),
            segs: VmxSegs::reset(),
            pat: msr::PAT_DEFAULT,
            sysenter: [0; 3],
            pdptrs: [0; 4],
            tsc_offset: 0,
            interruptibility: 0,
            event: None,
            interrupt_window: false,
            nmi_window: false,
            tpr_threshold: 0,
            debug_db: false,
            debug_bp: false,
            rdtscp: false,
            dr6: debugreg::DR6_RESET,
            dr7: debugreg::DR7_RESET,
            dirty: dirty::ALL,
            stale: false,
        }
    }
}

/// The host state last written into the VMCS, to rewrite only changes.
#[derive(Default)]
struct HostCache {
    cpu: Option<u32>,
    cr3: u64,
    cr4: u64,
    fs_base: u64,
}

/// A VMX vCPU.
///
/// # Invariants
///
/// `lists`, `msr_bitmap` and `vapic` are physically contiguous kmalloc
/// memory owned here; the VMCS names them and the VM's EPT root (`eptp`),
/// which the VM keeps alive for as long as its vCPUs.
pub(crate) struct VmxVcpu {
    state: GuestState,
    /// Current on no CPU outside `run`; freed on drop.
    vmcs: VmcsRegion,
    lists: KBox<MsrLists>,
    _msr_bitmap: KBox<MsrBitmap>,
    vapic: KBox<VirtualApic>,
    host: HostCache,
    exit: ExitInfo,
    eptp: u64,
    /// 0 when none was free: the CPU then flushes on every entry and exit.
    vpid: u16,
    f: VmxFeatures,
    cfg: VmcsConfig,
    /// CR0 and CR4 bits the host owns (the guest/host masks), and the bits
    /// VMX operation forces to 1.
    cr0_host_owned: u64,
    cr0_fixed_on: u64,
    /// The CR0 bits VMX operation allows to be 1.
    cr0_fixed1: u64,
    cr4_fixed_on: u64,
    /// The last CPU this vCPU entered the guest on.
    last_cpu: Option<u32>,
    /// The guest's linear translations must go at the next entry.
    flush_guest_tlb: bool,
}

/// Why a VMCS could not be set up or entered.
enum VmxError {
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

impl From<VmxInsnFailure> for VmxError {
    fn from(e: VmxInsnFailure) -> Self {
        Self::Insn(e)
    }
}

impl core::fmt::Display for VmxError {
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

type VmxResult<T = ()> = core::result::Result<T, VmxInsnFailure>;

fn rdmsr(index: u32) -> core::result::Result<u64, VmxError> {
    x86::rdmsr(index).ok_or(VmxError::Msr(index))
}

impl VmxVcpu {
    /// A vCPU in its RESET state, with a VMCS for a CPU with VMX features
    /// `f` and the control words `cfg` computed at load, for a VM whose
    /// EPT root is `ept_root`. Fails with `EIO` if a VMX instruction fails.
    pub(crate) fn new(
        ept_root: u64,
        is_bsp: bool,
        f: &VmxFeatures,
        cfg: &VmcsConfig,
    ) -> Result<KBox<Self>> {
        let vmcs = VmcsRegion::new(f)?;
        let mut lists = KBox::init(pin_init::init_zeroed::<MsrLists>(), GFP_KERNEL)?;
        for (i, &index) in SWITCHED_MSRS.iter().enumerate() {
            lists.guest[i].index = index;
            lists.host[i].index = index;
            // The syscall MSRs are the same on every CPU; KERNEL_GS_BASE
            // (the task's user GS base) is read at every entry.
            lists.host[i].value = x86::rdmsr(index).ok_or(EIO)?;
        }
        let mut bitmap = KBox::init(pin_init::init_zeroed::<MsrBitmap>(), GFP_KERNEL)?;
        bitmap.0.fill(0xff);
        let vapic = KBox::init(pin_init::init_zeroed::<VirtualApic>(), GFP_KERNEL)?;
        let fixed = |m| x86::rdmsr(m).ok_or(EIO);
        let cr0_fixed0 = fixed(MSR_VMX_CR0_FIXED0)?;
        let cr0_fixed1 = fixed(MSR_VMX_CR0_FIXED1)?;
        // Unrestricted guest lets the guest clear PE and PG (SDM 26.3.1.1).
        let cr0_fixed_on = cr0_fixed0 & !(cr0::PE | cr0::PG);
        // As KVM, the guest owns only TS and WP: a write that changes any
        // other bit exits and is checked (paging-mode changes then load
        // EFER.LMA and the PDPTEs in software), and reads of those bits
        // come from the read shadow, whatever the CPU keeps (the bits VMX
        // forces on or off: Bochs, for one, keeps CD clear).
        let vpid = if f.vpid { VPIDS.alloc().unwrap_or(0) } else { 0 };
        let mut vcpu = KBox::new(
            Self {
                state: GuestState::reset(is_bsp),
                vmcs,
                lists,
                _msr_bitmap: bitmap,
                vapic,
                host: HostCache::default(),
                exit: ExitInfo::default(),
                // 4-level walk, write-back, A/D flags where the CPU has them.
                eptp: ept_root | (3 << 3) | 6 | if f.ept_ad { 1 << 6 } else { 0 },
                vpid,
                f: *f,
                cfg: *cfg,
                cr0_host_owned: !(cr0::TS | cr0::WP),
                cr0_fixed_on,
                cr0_fixed1,
                cr4_fixed_on: fixed(MSR_VMX_CR4_FIXED0)?,
                last_cpu: None,
                flush_guest_tlb: false,
            },
            GFP_KERNEL,
        )?;
        if let Err(e) = vcpu.init_vmcs() {
            pr_err!("VMCS setup failed: {}\n", format_args!("{e}"));
            return Err(EIO);
        }
        Ok(vcpu)
    }

    /// The secondary controls of this vCPU: without a VPID, VPIDs are off.
    fn secondary_controls(&self) -> u32 {
        if self.vpid == 0 {
            self.cfg.secondary & !secondary::ENABLE_VPID
        } else {
            self.cfg.secondary
        }
    }

    /// Writes, on this CPU with IRQs off, what every entry of this vCPU
    /// uses unchanged: the control words, the addresses of the EPT root and
    /// the vCPU's pages, and the host state that is the same on every CPU
    /// and for every task; reads the controls back, and VMCLEARs it.
    fn init_vmcs(&mut self) -> core::result::Result<(), VmxError> {
        let sel = x86::host_selectors();
        let host_pat = rdmsr(msr::PAT)?;
        let host_efer = rdmsr(msr::EFER)?;
        let host_sysenter_cs = rdmsr(msr::SYSENTER_CS)?;
        let host_cr0 = x86::cr0();
        let controls = [
            (
                control32::PIN_BASED_VM_EXEC_CONTROL,
                self.cfg.pin_based,
                "pin-based controls",
            ),
            (
                control32::CPU_BASED_VM_EXEC_CONTROL,
                self.cfg.primary,
                "primary controls",
            ),
            (
                control32::SECONDARY_VM_EXEC_CONTROL,
                self.secondary_controls(),
                "secondary controls",
            ),
            (control32::VM_EXIT_CONTROLS, self.cfg.exit, "exit controls"),
            (
                control32::EXCEPTION_BITMAP,
                EXCEPTION_BITMAP,
                "exception bitmap",
            ),
        ];
        let lists_pa = phys_of(&*self.lists);
        let host_list_pa = lists_pa + core::mem::offset_of!(MsrLists, host) as u64;
        let n = SWITCHED_MSRS.len() as u32;
        let bitmap_pa = phys_of(&*self._msr_bitmap);
        let vapic_pa = phys_of(&*self.vapic);
        let irqs = IrqsOff::new();
        let mut vmcs = self.vmcs.load(&irqs)?;
        for &(field, value, _) in &controls {
            vmcs.write32(field, value)?;
        }
        for (field, value) in [
            (control32::PAGE_FAULT_ERROR_CODE_MASK, 0),
            (control32::PAGE_FAULT_ERROR_CODE_MATCH, 0),
            (control32::CR3_TARGET_COUNT, 0),
            (control32::VM_EXIT_MSR_STORE_COUNT, 1),
            (control32::VM_EXIT_MSR_LOAD_COUNT, n),
            (control32::VM_ENTRY_MSR_LOAD_COUNT, n),
            (control32::TPR_THRESHOLD, 0),
            (guest32::ACTIVITY_STATE, 0),
        ] {
            vmcs.write32(field, value)?;
        }
        for (field, value) in [
            (guest64::VMCS_LINK_POINTER, u64::MAX),
            (control64::MSR_BITMAP, bitmap_pa),
            (control64::VM_EXIT_MSR_STORE_ADDR, lists_pa),
            (control64::VM_ENTRY_MSR_LOAD_ADDR, lists_pa),
            (control64::VM_EXIT_MSR_LOAD_ADDR, host_list_pa),
            (control64::VIRTUAL_APIC_PAGE_ADDR, vapic_pa),
            (control64::EPT_POINTER, self.eptp),
            (guest64::IA32_DEBUGCTL, 0),
        ] {
            vmcs.write64(field, value)?;
        }
        if self.vpid != 0 {
            vmcs.write16(control16::VIRTUAL_PROCESSOR_ID, self.vpid)?;
        }
        vmcs.write_nat(control_nat::CR0_GUEST_HOST_MASK, self.cr0_host_owned)?;
        // Every CR4 bit is the host's: each write is checked (as on SVM).
        vmcs.write_nat(control_nat::CR4_GUEST_HOST_MASK, u64::MAX)?;
        vmcs.write_nat(guest_nat::PENDING_DBG_EXCEPTIONS, 0)?;
        vmcs.write_nat(guest_nat::DR7, 0x400)?;

        vmcs.write_nat(host_nat::CR0, host_cr0)?;
        vmcs.write16(host16::CS_SELECTOR, sel.cs)?;
        vmcs.write16(host16::SS_SELECTOR, sel.ds)?;
        // DS, ES, FS and GS exit as null selectors (a 64-bit kernel does not
        // use them); the C side of the world switch reloads the task's.
        for field in [
            host16::DS_SELECTOR,
            host16::ES_SELECTOR,
            host16::FS_SELECTOR,
            host16::GS_SELECTOR,
        ] {
            vmcs.write16(field, 0)?;
        }
        vmcs.write16(host16::TR_SELECTOR, sel.tr)?;
        vmcs.write32(host32::IA32_SYSENTER_CS, host_sysenter_cs as u32)?;
        vmcs.write_nat(host_nat::RIP, vmcs_ops::vmexit_rip())?;
        if self.cfg.exit & exit_ctl::LOAD_IA32_PAT != 0 {
            vmcs.write64(host64::IA32_PAT, host_pat)?;
        }
        if self.cfg.exit & exit_ctl::LOAD_IA32_EFER != 0 {
            vmcs.write64(host64::IA32_EFER, host_efer)?;
        }
        // Read back every control, and one field of each other width.
        let check = |field: &'static str, wrote: u64, read: u64| {
            if read == wrote {
                Ok(())
            } else {
                Err(VmxError::Readback { field, wrote, read })
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
            sel.cs.into(),
            vmcs.read16(host16::CS_SELECTOR)?.into(),
        )?;
        check("host CR0", host_cr0, vmcs.read_nat(host_nat::CR0)?)?;
        vmcs.clear()?;
        Ok(())
    }

    /// Rewrites the host fields that differ between CPUs and tasks, when
    /// they changed since they were last written.
    fn write_host_state(
        host: &mut HostCache,
        lists: &mut MsrLists,
        vmcs: &mut CurrentVmcs<'_>,
        irqs: &IrqsOff,
        cpu: u32,
    ) -> VmxResult {
        if host.cpu != Some(cpu) {
            let p = vmcs_ops::host_percpu(irqs);
            vmcs.write_nat(host_nat::GDTR_BASE, p.gdt_base)?;
            vmcs.write_nat(host_nat::IDTR_BASE, p.idt_base)?;
            vmcs.write_nat(host_nat::TR_BASE, p.tr_base)?;
            vmcs.write_nat(host_nat::GS_BASE, p.gs_base)?;
            vmcs.write_nat(host_nat::IA32_SYSENTER_ESP, p.sysenter_esp)?;
            vmcs.write_nat(host_nat::IA32_SYSENTER_EIP, p.sysenter_eip)?;
            host.cpu = Some(cpu);
        }
        let cr3 = x86::cr3();
        if cr3 != host.cr3 {
            vmcs.write_nat(host_nat::CR3, cr3)?;
            host.cr3 = cr3;
        }
        let cr4 = x86::cr4();
        if cr4 != host.cr4 {
            vmcs.write_nat(host_nat::CR4, cr4)?;
            host.cr4 = cr4;
        }
        let (fs_base, kernel_gs_base) = vmcs_ops::host_pertask(irqs);
        if fs_base != host.fs_base {
            vmcs.write_nat(host_nat::FS_BASE, fs_base)?;
            host.fs_base = fs_base;
        }
        // KERNEL_GS_BASE is first in the lists.
        lists.host[0].value = kernel_gs_base;
        Ok(())
    }

    /// The CR0 the CPU runs the guest with: its own value plus the bits
    /// VMX operation forces on.
    fn hw_cr0(&self) -> u64 {
        (self.state.sregs.cr0 | self.cr0_fixed_on) & self.cr0_fixed1
    }

    /// Writes the dirty groups of guest fields.
    fn write_guest_state(
        s: &mut GuestState,
        vmcs: &mut CurrentVmcs<'_>,
        cfg: &VmcsConfig,
        secondary_base: u32,
        hw_cr0: u64,
        cr4_fixed_on: u64,
    ) -> VmxResult {
        // RIP, RSP, RFLAGS and the event at every entry: the CPU clears the
        // event's valid bit when it delivers it.
        let (info, err, len) = s.event.take().unwrap_or((0, 0, 0));
        vmcs.write_many(
            &[
                guest_nat::RIP.0,
                guest_nat::RSP.0,
                guest_nat::RFLAGS.0,
                control32::VM_ENTRY_INTR_INFO_FIELD.0,
                control32::VM_ENTRY_EXCEPTION_ERROR_CODE.0,
                control32::VM_ENTRY_INSTRUCTION_LEN.0,
            ],
            &[
                s.rip,
                s.gprs[4],
                s.rflags,
                info.into(),
                err.into(),
                len.into(),
            ],
        )?;
        if s.dirty == 0 {
            return Ok(());
        }
        let sr = &s.sregs;
        if s.dirty & dirty::CR0 != 0 {
            vmcs.write_nat(guest_nat::CR0, hw_cr0)?;
            vmcs.write_nat(control_nat::CR0_READ_SHADOW, sr.cr0)?;
        }
        if s.dirty & dirty::CR3 != 0 {
            vmcs.write_nat(guest_nat::CR3, sr.cr3)?;
        }
        if s.dirty & dirty::CR4 != 0 {
            vmcs.write_nat(guest_nat::CR4, sr.cr4 | cr4_fixed_on)?;
            vmcs.write_nat(control_nat::CR4_READ_SHADOW, sr.cr4)?;
        }
        if s.dirty & dirty::EFER != 0 {
            vmcs.write64(guest64::IA32_EFER, sr.efer)?;
            let mut entry = cfg.entry;
            if sr.efer & efer::LMA != 0 {
                entry |= entry_ctl::IA32E_MODE_GUEST;
            }
            vmcs.write32(control32::VM_ENTRY_CONTROLS, entry)?;
        }
        if s.dirty & dirty::SEGMENTS != 0 {
            let mut values = [0u64; LAZY_FIELDS.len()];
            values[0] = sr.cr3;
            for (i, seg) in s.segs.segs.iter().enumerate() {
                let at = 1 + i * 4;
                values[at] = seg.selector.into();
                values[at + 1] = seg.ar.into();
                values[at + 2] = seg.limit.into();
                values[at + 3] = seg.base;
            }
            values[33] = sr.gdt.base;
            values[34] = sr.gdt.limit.into();
            values[35] = sr.idt.base;
            values[36] = sr.idt.limit.into();
            // CR3 (first) is rewritten with the rest: it is as fresh.
            vmcs.write_many(&LAZY_FIELDS, &values)?;
        }
        if s.dirty & dirty::MSRS != 0 {
            vmcs.write64(guest64::IA32_PAT, s.pat)?;
            vmcs.write32(guest32::SYSENTER_CS, s.sysenter[0] as u32)?;
            vmcs.write_nat(guest_nat::SYSENTER_ESP, s.sysenter[1])?;
            vmcs.write_nat(guest_nat::SYSENTER_EIP, s.sysenter[2])?;
        }
        if s.dirty & dirty::PDPTRS != 0 {
            vmcs.write_many(
                &[
                    guest64::PDPTE0.0,
                    guest64::PDPTE1.0,
                    guest64::PDPTE2.0,
                    guest64::PDPTE3.0,
                ],
                &s.pdptrs,
            )?;
        }
        if s.dirty & dirty::TSC_OFFSET != 0 {
            vmcs.write64(control64::TSC_OFFSET, s.tsc_offset)?;
        }
        if s.dirty & dirty::EVENTS != 0 {
            vmcs.write32(guest32::INTERRUPTIBILITY_INFO, s.interruptibility)?;
        }
        if s.dirty & dirty::DEBUG != 0 {
            vmcs.write_nat(guest_nat::DR7, s.dr7)?;
        }
        if s.dirty & dirty::CONTROLS != 0 {
            let mut controls = cfg.primary;
            if s.interrupt_window {
                controls |= primary::INTR_WINDOW_EXITING;
            }
            if s.nmi_window {
                controls |= primary::NMI_WINDOW_EXITING;
            }
            vmcs.write32(control32::CPU_BASED_VM_EXEC_CONTROL, controls)?;
            let mut controls2 = secondary_base;
            if s.rdtscp {
                controls2 |= secondary::ENABLE_RDTSCP;
            }
            vmcs.write32(control32::SECONDARY_VM_EXEC_CONTROL, controls2)?;
            vmcs.write32(control32::TPR_THRESHOLD, s.tpr_threshold as u32)?;
            let bp = if s.debug_bp { 1 << crate::arch::vector::BP } else { 0 };
            vmcs.write32(control32::EXCEPTION_BITMAP, EXCEPTION_BITMAP | bp)?;
        }
        s.dirty = 0;
        Ok(())
    }

    /// Reads the exit and the guest state that every handler may need;
    /// the rest goes stale until `read_lazy_state`.
    fn read_exit(
        s: &mut GuestState,
        vmcs: &CurrentVmcs<'_>,
        cr0_host_owned: u64,
    ) -> VmxResult<ExitInfo> {
        let v = vmcs.read_many(&EXIT_FIELDS)?;
        let mut e = ExitInfo {
            reason: v[0] as u32,
            qualification: v[1],
            intr_info: v[2] as u32,
            insn_len: v[3] as u32,
            guest_physical: 0,
            rip: v[5],
        };
        if e.basic() == reason::EPT_VIOLATION {
            e.guest_physical = vmcs.read64(exit64::GUEST_PHYSICAL_ADDRESS)?;
        }
        s.rip = e.rip;
        s.gprs[4] = v[6];
        s.rflags = v[7];
        s.interruptibility = v[8] as u32;
        s.sregs.cr0 = (v[9] & !cr0_host_owned) | (s.sregs.cr0 & cr0_host_owned);
        // The CPU stores EFER.LMA in the IA-32e mode control at every exit.
        let lma = v[10] as u32 & entry_ctl::IA32E_MODE_GUEST != 0;
        if lma != (s.sregs.efer & efer::LMA != 0) {
            s.sregs.efer ^= efer::LMA;
            // The EFER field must follow.
            s.dirty |= dirty::EFER;
        }
        s.segs.segs[SegReg::Cs as usize] = VmxSeg {
            selector: v[11] as u16,
            ar: v[12] as u32,
            limit: v[13] as u32,
            base: v[14],
        };
        s.segs.segs[SegReg::Ss as usize].ar = v[15] as u32;
        s.stale = true;
        // An event the CPU was delivering when the exit came (e.g. through
        // a guest IDT whose page was not mapped yet) is delivered again.
        let idt = v[4] as u32;
        if idt & event::VALID != 0 {
            let err = if idt & event::ERROR_CODE != 0 {
                vmcs.read32(exit32::IDT_VECTORING_ERROR_CODE)?
            } else {
                0
            };
            let len = if event::needs_insn_len(idt) {
                e.insn_len
            } else {
                0
            };
            // Bit 12 is undefined in IDT-vectoring information.
            s.event = Some((idt & !event::NMI_UNBLOCKED_BY_IRET, err, len));
        } else if e.basic() == reason::EPT_VIOLATION
            && e.qualification & ept_violation::NMI_UNBLOCKED_BY_IRET != 0
        {
            // The exit interrupted an IRET that unblocked NMIs: block them
            // again, as the IRET will run again (SDM 28.2.3).
            s.interruptibility |= interruptibility::NMI;
            s.dirty |= dirty::EVENTS;
        }
        Ok(e)
    }

    /// Reads what `read_exit` left stale.
    fn read_lazy_state(s: &mut GuestState, vmcs: &CurrentVmcs<'_>) -> VmxResult {
        if !s.stale {
            return Ok(());
        }
        let v = vmcs.read_many(&LAZY_FIELDS)?;
        s.sregs.cr3 = v[0];
        for (i, seg) in s.segs.segs.iter_mut().enumerate() {
            let at = 1 + i * 4;
            *seg = VmxSeg {
                selector: v[at] as u16,
                ar: v[at + 1] as u32,
                limit: v[at + 2] as u32,
                base: v[at + 3],
            };
        }
        s.sregs.gdt.base = v[33];
        s.sregs.gdt.limit = v[34] as u16;
        s.sregs.idt.base = v[35];
        s.sregs.idt.limit = v[36] as u16;
        s.stale = false;
        Ok(())
    }

    /// Brings the lazily read state up to date, with the VMCS loaded
    /// here for it if a reschedule cleared it.
    fn sync(&mut self) -> VmxResult {
        if !self.state.stale {
            return Ok(());
        }
        let irqs = IrqsOff::new();
        let vmcs = self.vmcs.load(&irqs)?;
        Self::read_lazy_state(&mut self.state, &vmcs)
    }

    /// Warns (a kernel `WARNING`, which fails the tests) when a handler
    /// looks at lazily read state without `sync_state`.
    fn check_fresh(&self) {
        kernel::warn_on!(self.state.stale);
    }

    /// Flushes what this entry must not see: everything the EPT root
    /// tagged on this CPU if the TDP tables changed or this CPU may hold
    /// translations from before the vCPU last ran elsewhere, else only the
    /// guest's linear translations when asked to.
    fn flush(&mut self, entry: &Entry<'_>) -> VmxResult {
        let migrated = self.last_cpu != Some(entry.cpu);
        self.last_cpu = Some(entry.cpu);
        if entry.flush_tdp || migrated {
            self.flush_guest_tlb = false;
            let kind = if self.f.invept_single {
                InveptType::SingleContext
            } else {
                InveptType::AllContext
            };
            return vmcs_ops::invept(kind, self.eptp, entry.irqs);
        }
        if core::mem::take(&mut self.flush_guest_tlb) && self.vpid != 0 {
            let kind = if self.f.invvpid_single {
                InvvpidType::SingleContext
            } else {
                InvvpidType::AllContext
            };
            return vmcs_ops::invvpid(kind, self.vpid, entry.irqs);
        }
        Ok(())
    }

    /// One entry: everything that needs the VMCS current.
    fn enter(&mut self, entry: &Entry<'_>) -> core::result::Result<Exit, VmxInsnFailure> {
        self.flush(entry)?;
        let hw_cr0 = self.hw_cr0();
        let secondary_base = self.secondary_controls();
        let mut vmcs = self.vmcs.load(entry.irqs)?;
        Self::write_host_state(
            &mut self.host,
            &mut self.lists,
            &mut vmcs,
            entry.irqs,
            entry.cpu,
        )?;
        Self::write_guest_state(
            &mut self.state,
            &mut vmcs,
            &self.cfg,
            secondary_base,
            hw_cr0,
            self.cr4_fixed_on,
        )?;
        let s = &mut self.state;
        // SAFETY: the host-state area was written above for this CPU and
        // task (the constant part and HOST_RIP at creation); the EPT root
        // is the VM's and the MSR lists, bitmap and virtual-APIC page are
        // this vCPU's (type invariant), all alive across the entry.
        let r = unsafe { vmcs.enter(&mut s.gprs, &mut s.cr2) };
        match r {
            Ok(()) => {}
            Err(VmxInsnFailure {
                how: Failure::Valid(e),
                ..
            }) => {
                // The controls or host state failed the entry checks:
                // KVM reports the VM-instruction error.
                self.exit = ExitInfo::default();
                return Ok(Exit::FailEntry { reason: e.0.into() });
            }
            Err(e) => return Err(e),
        }
        let e = Self::read_exit(s, &vmcs, self.cr0_host_owned)?;
        if e.is_debug_exception() && s.event.is_none() && !s.debug_db {
            // The guest's #DB: what it reports goes into the guest's DR6,
            // and it is delivered again, GD cleared as its delivery does.
            s.dr6 = debugreg::dr6_after_debug_exception(s.dr6, e.qualification);
            if s.dr7 & debugreg::DR7_GD != 0 {
                s.dr7 &= !debugreg::DR7_GD;
                s.dirty |= dirty::DEBUG;
            }
            let info = e.intr_info & (event::VALID | event::TYPE_MASK | 0xff);
            let len = if event::needs_insn_len(info) { e.insn_len } else { 0 };
            s.event = Some((info, 0, len));
            if e.intr_info & event::NMI_UNBLOCKED_BY_IRET != 0 {
                // The #DB came in an IRET that unblocked NMIs: blocked
                // again, as the IRET runs again (SDM 28.2.3).
                s.interruptibility |= interruptibility::NMI;
                s.dirty |= dirty::EVENTS;
            }
        }
        if e.reason & REASON_FAILED_ENTRY == 0 {
            // A failed entry leaves the launch state as it was (SDM 26.8).
            vmcs.set_launched();
        }
        if e.is_nmi() {
            vmcs.forward_nmi();
        }
        self.exit = e;
        let exit = if e.is_debug_exception() && s.debug_db {
            // The debugger's: what the exception reported, in DR6's form
            // (the bits that read as 1 set), as KVM.
            Exit::Debug {
                dr6: e.qualification | debugreg::DR6_FIXED,
                dr7: s.dr7,
            }
        } else {
            e.decode()
        };
        // Exits handled without touching guest memory, the MMU or the
        // emulator do not make the next entry flush L1D (as KVM's).
        if !matches!(
            exit,
            Exit::Cpuid
                | Exit::Rdpmc
                | Exit::Msr { .. }
                | Exit::Xsetbv
                | Exit::CrWrite { .. }
                | Exit::Lmsw { .. }
                | Exit::UndefinedInstruction
        ) {
            vmcs_ops::request_l1d_flush();
        }
        Ok(exit)
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // Translations tagged with this VPID may remain on any CPU; the next
        // vCPU given it flushes them at its first entry on each CPU.
        VPIDS.free(self.vpid);
    }
}

impl VcpuBackend for VmxVcpu {
    fn regs(&self) -> Regs {
        let mut regs = Regs::default();
        regs.set_gprs_x86(&self.state.gprs);
        regs.rip = self.state.rip;
        regs.rflags = self.state.rflags;
        regs
    }

    fn set_regs(&mut self, regs: &Regs) {
        self.state.gprs = regs.gprs_x86();
        self.state.rip = regs.rip;
        self.state.rflags = regs.rflags;
    }

    fn gprs(&self) -> Gprs {
        self.state.gprs
    }

    fn set_gprs(&mut self, gprs: &Gprs) {
        self.state.gprs = *gprs;
    }

    fn rip(&self) -> u64 {
        self.state.rip
    }

    fn set_rip(&mut self, rip: u64) {
        if rip != self.state.rip {
            // Moving RIP ends any STI/MOV SS interrupt shadow, as KVM's
            // instruction skip does.
            self.state.interruptibility &= !interruptibility::SHADOW;
            self.state.dirty |= dirty::EVENTS;
        }
        self.state.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.state.rflags
    }

    fn set_rflags(&mut self, rflags: u64) {
        self.state.rflags = rflags;
    }

    fn sregs(&self) -> Sregs {
        self.check_fresh();
        let mut out = self.state.sregs;
        out.segs = SegReg::ALL.map(|reg| self.state.segs.get(reg));
        out.cr2 = self.state.cr2;
        out.cr8 = self.cr8();
        out
    }

    fn set_sregs(&mut self, new: &Sregs) {
        let s = &mut self.state;
        s.stale = false;
        s.sregs = *new;
        for reg in SegReg::ALL {
            s.segs.set(reg, &new.segs[reg as usize]);
        }
        s.cr2 = new.cr2;
        s.dirty |= dirty::CR0 | dirty::CR3 | dirty::CR4 | dirty::EFER | dirty::SEGMENTS;
        self.set_cr8(new.cr8);
        // Paging state changed behind the guest's back.
        self.flush_guest_tlb = true;
    }

    fn segment(&self, reg: SegReg) -> Segment {
        // CS is read at every exit.
        if reg != SegReg::Cs {
            self.check_fresh();
        }
        self.state.segs.get(reg)
    }

    fn cpl(&self) -> u8 {
        self.state.segs.get(SegReg::Ss).dpl
    }

    fn cr0(&self) -> u64 {
        self.state.sregs.cr0
    }

    fn cr3(&self) -> u64 {
        self.check_fresh();
        self.state.sregs.cr3
    }

    fn cr4(&self) -> u64 {
        self.state.sregs.cr4
    }

    fn set_cr0(&mut self, cr0: u64) {
        self.state.sregs.cr0 = cr0;
        self.state.dirty |= dirty::CR0;
    }

    fn set_cr4(&mut self, cr4: u64) {
        self.state.sregs.cr4 = cr4;
        self.state.dirty |= dirty::CR4;
    }

    fn set_cr2(&mut self, cr2: u64) {
        self.state.cr2 = cr2;
    }

    fn set_pdptrs(&mut self, pdptrs: [u64; 4]) {
        self.state.pdptrs = pdptrs;
        self.state.dirty |= dirty::PDPTRS;
    }

    fn efer(&self) -> u64 {
        self.state.sregs.efer
    }

    /// The TPR shadow in the virtual-APIC page holds the guest's TPR.
    fn cr8(&self) -> u64 {
        (self.vapic.0[VAPIC_TPR] >> 4) as u64
    }

    fn set_cr8(&mut self, cr8: u64) {
        self.vapic.0[VAPIC_TPR] = ((cr8 & 0xf) << 4) as u8;
    }

    fn read_msr(&self, index: u32) -> Option<u64> {
        let s = &self.state;
        if matches!(index, msr::FS_BASE | msr::GS_BASE) {
            self.check_fresh();
        }
        Some(match index {
            msr::EFER => s.sregs.efer,
            msr::PAT => s.pat,
            msr::FS_BASE => s.segs.segs[SegReg::Fs as usize].base,
            msr::GS_BASE => s.segs.segs[SegReg::Gs as usize].base,
            msr::SYSENTER_CS => s.sysenter[0],
            msr::SYSENTER_ESP => s.sysenter[1],
            msr::SYSENTER_EIP => s.sysenter[2],
            _ => {
                let i = SWITCHED_MSRS.iter().position(|&m| m == index)?;
                self.lists.guest[i].value
            }
        })
    }

    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        let s = &mut self.state;
        match index {
            msr::EFER => {
                s.sregs.efer = value;
                s.dirty |= dirty::EFER;
            }
            msr::PAT => {
                s.pat = value;
                s.dirty |= dirty::MSRS;
            }
            msr::FS_BASE | msr::GS_BASE => {
                // All segments are written back: they must be current.
                kernel::warn_on!(s.stale);
                let reg = if index == msr::FS_BASE {
                    SegReg::Fs
                } else {
                    SegReg::Gs
                };
                s.segs.segs[reg as usize].base = value;
                s.dirty |= dirty::SEGMENTS;
            }
            msr::SYSENTER_CS | msr::SYSENTER_ESP | msr::SYSENTER_EIP => {
                s.sysenter[(index - msr::SYSENTER_CS) as usize] = value;
                s.dirty |= dirty::MSRS;
            }
            _ => match SWITCHED_MSRS.iter().position(|&m| m == index) {
                Some(i) => self.lists.guest[i].value = value,
                None => return false,
            },
        }
        true
    }

    fn tsc_offset(&self) -> u64 {
        self.state.tsc_offset
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.state.tsc_offset = offset;
        self.state.dirty |= dirty::TSC_OFFSET;
    }

    fn exit_code(&self) -> u64 {
        self.exit.reason.into()
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let info = event::hw_exception(vector, error_code.is_some());
        self.state.event = Some((info, error_code.unwrap_or(0), 0));
    }

    fn next_rip(&self) -> Option<u64> {
        self.exit.next_rip()
    }

    fn flush_guest_tlb(&mut self) {
        self.flush_guest_tlb = true;
    }

    fn interrupt_status(&self) -> (bool, bool) {
        let if_flag = self.state.rflags & rflags::IF != 0;
        // Blocking by STI or by MOV SS.
        let shadow = self.state.interruptibility & interruptibility::SHADOW != 0;
        (if_flag, if_flag && !shadow && !self.event_pending())
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.set_pending_event(Some(Event::Interrupt { vector }));
    }

    fn pending_event(&self) -> Option<Event> {
        let (info, err, _) = self.state.event?;
        event::decode(info, err)
    }

    fn set_pending_event(&mut self, e: Option<Event>) {
        self.state.event = e.and_then(event::encode).map(|(info, err)| (info, err, 0));
    }

    fn dr6(&self) -> u64 {
        self.state.dr6
    }

    fn set_dr6(&mut self, dr6: u64) {
        self.state.dr6 = dr6;
    }

    fn dr7(&self) -> u64 {
        self.state.dr7
    }

    fn set_dr7(&mut self, dr7: u64) {
        self.state.dr7 = dr7;
        self.state.dirty |= dirty::DEBUG;
    }

    fn interrupt_shadow(&self) -> u8 {
        let i = self.state.interruptibility;
        let mut s = 0;
        if i & interruptibility::STI != 0 {
            s |= shadow::STI;
        }
        if i & interruptibility::MOV_SS != 0 {
            s |= shadow::MOV_SS;
        }
        s
    }

    fn set_interrupt_shadow(&mut self, mask: u8) {
        let mut i = self.state.interruptibility & !interruptibility::SHADOW;
        // One shadow at a time: MOV SS's wins, as in KVM.
        if mask & shadow::MOV_SS != 0 {
            i |= interruptibility::MOV_SS;
        } else if mask & shadow::STI != 0 {
            i |= interruptibility::STI;
        }
        self.state.interruptibility = i;
        self.state.dirty |= dirty::EVENTS;
    }

    fn set_nmi_masked(&mut self, masked: bool) {
        if masked {
            self.state.interruptibility |= interruptibility::NMI;
        } else {
            self.state.interruptibility &= !interruptibility::NMI;
        }
        self.state.dirty |= dirty::EVENTS;
    }

    fn set_interrupt_window(&mut self, on: bool) {
        if self.state.interrupt_window != on {
            self.state.interrupt_window = on;
            self.state.dirty |= dirty::CONTROLS;
        }
    }

    fn set_debug_intercepts(&mut self, db: bool, bp: bool) {
        let s = &mut self.state;
        s.debug_db = db;
        if s.debug_bp != bp {
            s.debug_bp = bp;
            s.dirty |= dirty::CONTROLS;
        }
    }

    fn set_rdtscp(&mut self, on: bool) {
        let on = on && self.cfg.rdtscp;
        if self.state.rdtscp != on {
            self.state.rdtscp = on;
            self.state.dirty |= dirty::CONTROLS;
        }
    }

    fn set_tpr_threshold(&mut self, class: Option<u8>) {
        let t = class.unwrap_or(0) & 0xf;
        if self.state.tpr_threshold != t {
            self.state.tpr_threshold = t;
            self.state.dirty |= dirty::CONTROLS;
        }
    }

    fn inject_nmi(&mut self) {
        // The CPU blocks NMIs as it delivers this one (virtual NMIs).
        self.set_pending_event(Some(Event::Nmi));
    }

    fn nmi_allowed(&self) -> bool {
        self.state.interruptibility & (interruptibility::SHADOW | interruptibility::NMI) == 0
    }

    fn nmi_masked(&self) -> bool {
        self.state.interruptibility & interruptibility::NMI != 0
    }

    fn set_nmi_window(&mut self, on: bool) {
        if self.state.nmi_window != on {
            self.state.nmi_window = on;
            self.state.dirty |= dirty::CONTROLS;
        }
    }

    fn begin_run(&mut self) {
        self.vmcs.begin_run();
        // Userspace ran since the last entry.
        vmcs_ops::request_l1d_flush();
    }

    fn end_run(&mut self) {
        // Userspace sees the whole state after KVM_RUN.
        if let Err(e) = self.sync() {
            pr_err!("reading the guest state: {}\n", format_args!("{e}"));
        }
        self.vmcs.end_run();
    }

    fn sync_state(&mut self) {
        if let Err(e) = self.sync() {
            pr_err!("reading the guest state: {}\n", format_args!("{e}"));
        }
    }

    fn reset(&mut self, is_bsp: bool) {
        let tsc_offset = self.state.tsc_offset;
        self.state = GuestState::reset(is_bsp);
        self.state.tsc_offset = tsc_offset;
        for e in self.lists.guest.iter_mut() {
            e.value = 0;
        }
        self.set_cr8(0);
        self.flush_guest_tlb = true;
    }

    fn run(&mut self, entry: &Entry<'_>) -> Result<Exit> {
        self.enter(entry).map_err(|e| {
            pr_err!("VM entry on CPU {}: {}\n", entry.cpu, format_args!("{e}"));
            EIO
        })
    }
}
