// SPDX-License-Identifier: GPL-2.0

//! The backend interface: what a vendor (SVM, VMX) provides for a vCPU,
//! like KVM's `kvm_x86_ops`.
//!
//! Everything above this trait (`vcpu.rs`, `exits.rs`, the MMU) is written
//! once for both vendors and never names one. A backend owns the vCPU's
//! architectural register state in its own format (the VMCB or the VMCS
//! and what surrounds it) and answers the ioctls' questions from there; it
//! enters the guest once per `run` and describes the exit in
//! vendor-neutral terms ([`Exit`]). Exit handling, instruction completion,
//! CPUID, MSRs, XSETBV and control-register checks are the caller's.

use kernel::prelude::*;

pub(crate) use crate::exit_info::{Event, Exit, IoExit};
use crate::{
    emulate::Gprs,
    regs::Regs,
    shim::cpu::IrqsOff,
    sregs::{SegReg, Segment, Sregs},
};

/// What one entry needs from the vendor-neutral code, decided with IRQs
/// off just before it.
pub(crate) struct Entry<'a> {
    /// IRQs are off for the whole entry.
    pub(crate) irqs: &'a IrqsOff,
    /// The CPU this entry runs on.
    pub(crate) cpu: u32,
    /// The TDP tables changed since this vCPU last flushed its TLB on this
    /// CPU: the guest's TDP translations must go.
    pub(crate) flush_tdp: bool,
}

/// A vCPU as a vendor implements it.
///
/// Register accessors work on the backend's own copy, which is the only
/// one: nothing is copied between entries. `run` is called with the
/// guest's extended state loaded and IRQs off (see `exits.rs`).
pub(crate) trait VcpuBackend: Send + Sync {
    /// `KVM_GET_REGS`.
    fn regs(&self) -> Regs;
    /// `KVM_SET_REGS` (already sanitized).
    fn set_regs(&mut self, regs: &Regs);
    /// The sixteen general-purpose registers in x86 encoding order.
    fn gprs(&self) -> Gprs;
    fn set_gprs(&mut self, gprs: &Gprs);
    fn rip(&self) -> u64;
    /// Moves RIP (an emulated or skipped instruction): a new RIP ends any
    /// STI or MOV SS interrupt shadow, which covered the old instruction.
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, rflags: u64);

    /// `KVM_GET_SREGS`, less the APIC base and pending interrupt, which
    /// the caller keeps.
    fn sregs(&self) -> Sregs;
    /// `KVM_SET_SREGS` (already checked), with the same exceptions.
    fn set_sregs(&mut self, sregs: &Sregs);
    /// One segment register, as `KVM_GET_SREGS` would report it.
    fn segment(&self, reg: SegReg) -> Segment;
    /// The current privilege level.
    fn cpl(&self) -> u8;
    fn cr0(&self) -> u64;
    fn cr3(&self) -> u64;
    fn cr4(&self) -> u64;
    /// CR0 as a checked guest MOV to CR0 leaves it (EFER follows through
    /// `write_msr`).
    fn set_cr0(&mut self, cr0: u64);
    /// CR4 as a checked guest MOV to CR4 leaves it.
    fn set_cr4(&mut self, cr4: u64);
    fn set_cr2(&mut self, cr2: u64);
    /// The four PDPTEs of PAE paging outside long mode, loaded from guest
    /// memory after a change of paging mode the hardware did not see: VMX
    /// enters with them from its own fields. A backend whose hardware
    /// reads them from memory ignores this.
    fn set_pdptrs(&mut self, _pdptrs: [u64; 4]) {}
    fn efer(&self) -> u64;
    /// The guest's DR6 and DR7 (`debugreg.rs`), which the backend keeps
    /// with its guest state; values are the caller's to check.
    fn dr6(&self) -> u64;
    fn set_dr6(&mut self, dr6: u64);
    fn dr7(&self) -> u64;
    fn set_dr7(&mut self, dr7: u64);
    /// The guest's TPR as CR8 (0..15).
    fn cr8(&self) -> u64;
    fn set_cr8(&mut self, cr8: u64);

    /// The MSRs the backend holds in its own state (the syscall and
    /// segment-base MSRs, EFER, PAT): `None` for anything else. Values are
    /// checked by the caller.
    fn read_msr(&self, index: u32) -> Option<u64>;
    /// Stores a checked value; `false` if the backend does not hold it.
    fn write_msr(&mut self, index: u32, value: u64) -> bool;
    /// Added to the host TSC to give the guest's.
    fn tsc_offset(&self) -> u64;
    fn set_tsc_offset(&mut self, offset: u64);

    /// The vendor's own code for the last exit, for error reports.
    fn exit_code(&self) -> u64;
    /// Makes the next entry deliver exception `vector`.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// RIP after the instruction that caused the last exit, when the
    /// hardware reports it (or its length is fixed for that exit).
    fn next_rip(&self) -> Option<u64>;
    /// Makes the next entry flush the guest's own (linear) TLB entries, as
    /// a MOV to CR4 that the hardware did not execute would have.
    fn flush_guest_tlb(&mut self);
    /// Whether the guest has interrupts enabled, and whether it can take
    /// an external interrupt now (IF set, no interrupt shadow, no event
    /// already on its way in): `kvm_run`'s `if_flag` and, with nothing
    /// queued above, `ready_for_interrupt_injection`.
    fn interrupt_status(&self) -> (bool, bool);
    /// Makes the next entry deliver external interrupt `vector`, whatever
    /// the guest's IF (the caller decided it may: KVM's injected
    /// interrupt).
    fn inject_interrupt(&mut self, vector: u8);
    /// The event the next entry delivers: one injected, or one whose
    /// delivery the last exit interrupted (delivered again).
    fn pending_event(&self) -> Option<Event>;
    /// Replaces it (`KVM_SET_VCPU_EVENTS`; never with `Event::Soft`).
    fn set_pending_event(&mut self, event: Option<Event>);
    /// Whether the next entry delivers an event.
    fn event_pending(&self) -> bool {
        self.pending_event().is_some()
    }
    /// The STI and MOV SS interrupt shadow, as `KVM_X86_SHADOW_INT_*`
    /// bits (`vcpu_events::shadow`), and its setter.
    fn interrupt_shadow(&self) -> u8;
    fn set_interrupt_shadow(&mut self, shadow: u8);
    /// With `on`, the guest exits ([`Exit::InterruptWindow`]) as soon as it
    /// can take an external interrupt; without, it does not. Decided
    /// before each entry.
    fn set_interrupt_window(&mut self, on: bool);
    /// With `Some(class)`, the guest exits once it lowers its TPR (CR8)
    /// below `class`: an interrupt its TPR held back may then go in. The
    /// exit is [`Exit::Host`], or on hardware that intercepts the write
    /// instead, [`Exit::CrWrite`] of CR8 for the caller to emulate.
    fn set_tpr_threshold(&mut self, class: Option<u8>);
    /// Makes the next entry deliver an NMI (the caller checked
    /// `nmi_allowed`); NMIs are then blocked until the guest's IRET.
    fn inject_nmi(&mut self);
    /// Whether the guest can take an NMI now: NMIs not blocked (by an
    /// NMI handler that has not returned), no STI or MOV SS shadow.
    fn nmi_allowed(&self) -> bool;
    /// Whether NMIs are blocked (an NMI handler runs), as
    /// `KVM_GET_VCPU_EVENTS` reports it.
    fn nmi_masked(&self) -> bool;
    /// Blocks or unblocks NMIs (`KVM_SET_VCPU_EVENTS`).
    fn set_nmi_masked(&mut self, masked: bool);
    /// With `on`, the guest exits ([`Exit::NmiWindow`]) once it may be
    /// able to take an NMI (the caller checks `nmi_allowed` again);
    /// without, it does not. Decided before each entry.
    fn set_nmi_window(&mut self, on: bool);

    /// Which debug exceptions exit for the VMM's debugger instead of
    /// reaching the guest (`KVM_SET_GUEST_DEBUG`): with `db` every `#DB`
    /// ([`Exit::Debug`]), with `bp` every INT3 ([`Exit::Breakpoint`]).
    fn set_debug_intercepts(&mut self, db: bool, bp: bool);

    /// Whether the guest may run RDTSCP (its CPUID offers it; the caller
    /// loads the guest's `TSC_AUX` around entries), else it gets `#UD`.
    /// Only called with `on` where `hw::guest_rdtscp` allows it.
    fn set_rdtscp(&mut self, on: bool);

    /// Makes every accessor's answer current. A backend may leave part of
    /// the state the guest changes without exiting (CR3, segments but CS,
    /// descriptor tables) unread after an exit until this is called; the
    /// RIP, RSP, RFLAGS, CR0, CR4, EFER, CS and the CPL are always current.
    fn sync_state(&mut self) {}

    /// `KVM_RUN` starts on the calling task (KVM's `vcpu_load`): state the
    /// backend keeps on the CPU between entries may stay there until
    /// [`Self::end_run`].
    fn begin_run(&mut self) {}
    /// `KVM_RUN` ends (KVM's `vcpu_put`): nothing of the vCPU stays on the
    /// CPU, and the whole state is current (`sync_state`) for the ioctls.
    fn end_run(&mut self) {}

    /// Puts the vCPU in its RESET state.
    fn reset(&mut self, is_bsp: bool);
    /// Enters the guest once, with IRQs off, and says why it stopped.
    fn run(&mut self, entry: &Entry<'_>) -> Result<Exit>;
}
