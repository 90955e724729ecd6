// SPDX-License-Identifier: GPL-2.0

//! Running a vCPU and handling its exits, once for both vendors.
//!
//! `KVM_RUN` loads the guest's extended state ([`GuestFpu::load`]) for its
//! whole duration, then loops: check for signals and rescheduling, enter
//! the guest once through the backend with IRQs off (the guest's XCR0 in
//! place only inside that window), and handle the [`Exit`] it reports in
//! the kernel (CPUID, MSRs, XSETBV, MOV to CR4, TDP faults) until one
//! needs userspace (port I/O, MMIO, HLT, shutdown, errors). An instruction
//! handed to userspace is finished by the next `KVM_RUN`
//! ([`Pending`]), unless userspace moved RIP meanwhile, as in KVM.
//!
//! # Locking
//!
//! Called with the vCPU mutex held. TDP faults take the memslot SRCU read
//! lock and `mmu_lock` inside `Vm::handle_npf`; nothing is held across an
//! entry into the guest.

use kernel::{prelude::*, sync::Arc};

mod apic;
mod debug;

use crate::{
    abi::run::{exit as kvm_exit, internal},
    arch::{cr0, cr4, vector},
    backend::{Entry, Event, Exit, IoExit, VcpuBackend},
    cpuid::{self, CpuidEntry},
    debugreg::{self, DebugRegs, Dr},
    dirty_ring_pages::VcpuRing,
    guest_debug::GuestDebug,
    emulate::{self, Access, MmioInsn, Mode},
    kvmclock::{self, VcpuClock},
    lapic::apic::VcpuApic,
    mmu::{
        guest_walk::{self, AccessKind, GuestMemory, WalkError, WalkRegs},
        tdp::PtCache,
    },
    msr, pio, pvclock,
    pio::StringIo,
    run_page::{RunPage, SharedPage},
    shim::{
        cpu::{self, IrqsOff},
        guest_fpu::{GuestFpu, LoadedGuestFpu},
    },
    sregs::{self, GuestFeatures, SegReg},
    stats,
    vcpu::VcpuStats,
    vcpu_events::{self, VcpuEvents},
    vcpu_msrs::{MsrError, VcpuMsrs},
    vm::{NpfOutcome, Vm},
    x86, xsave,
};

/// What the guest is owed when userspace comes back with `KVM_RUN`.
#[derive(Clone, Copy)]
enum Pending {
    None,
    /// An OUT was handed to userspace: skip the instruction.
    PioOut { linear_rip: u64, next_rip: u64 },
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
    MmioWrite { linear_rip: u64, len: u64 },
    /// One element of an OUTS went to userspace.
    OutsElement { linear_rip: u64, string: StringIo },
    /// `count` elements of an INS were asked of userspace.
    InsElements {
        linear_rip: u64,
        string: StringIo,
        count: u32,
    },
}

/// Whether the run loop goes on in the kernel or returns to userspace.
enum Flow {
    Guest,
    User,
}

/// The guest's physical memory as the page-table walker sees it, and the
/// dirty ring its Accessed/Dirty updates are logged in.
struct WalkerMemory<'a>(&'a Vm, Option<&'a VcpuRing>);

impl GuestMemory for WalkerMemory<'_> {
    fn read_pte(&mut self, gpa: u64, size: usize) -> Option<u64> {
        let mut b = [0u8; 8];
        self.0.read_guest_phys(gpa, b.get_mut(..size)?)?;
        Some(u64::from_le_bytes(b))
    }

    fn cmpxchg_pte(&mut self, gpa: u64, size: usize, old: u64, new: u64) -> bool {
        // Nothing behind the entry any more: let the walk restart and fail.
        self.0
            .cmpxchg_guest_phys(gpa, size as u32, old, new, self.1)
            .unwrap_or(false)
    }
}

/// A vCPU's architectural state and what running it needs: the backend's
/// registers, the extended state, and the vendor-neutral rest.
pub(crate) struct GuestCpu {
    pub(crate) fpu: GuestFpu,
    pub(crate) core: CpuCore,
}

/// Everything of a [`GuestCpu`] but its extended state, which is loaded
/// (borrowed) while this runs.
pub(crate) struct CpuCore {
    pub(crate) backend: KBox<dyn VcpuBackend>,
    /// XCR0 as the guest set it (`XSETBV`, `KVM_SET_XCRS`).
    pub(crate) xcr0: u64,
    /// The guest's CPUID table (`KVM_SET_CPUID2`).
    pub(crate) cpuid: KVec<CpuidEntry>,
    /// What the guest CPUID offers and rkvm supports, for register checks.
    pub(crate) features: GuestFeatures,
    /// The XCR0 bits the guest may set.
    pub(crate) xcr0_allowed: u64,
    /// `MSR_IA32_MISC_ENABLE` as the guest sees it.
    pub(crate) misc_enable: u64,
    /// The guest's `TSC_AUX` (32 bits), in the CPU only while the guest
    /// runs with RDTSCP (`enter`).
    pub(crate) tsc_aux: u64,
    /// `IA32_TSC_ADJUST`: what the guest's own TSC writes added.
    tsc_adjust: u64,
    /// The last exit was a shutdown: the state is undefined until reset.
    pub(crate) shut_down: bool,
    /// An external interrupt userspace queued (`KVM_INTERRUPT`, or
    /// `KVM_SET_SREGS`' interrupt bitmap) that no entry has taken yet:
    /// without an in-kernel APIC, the next entry that delivers no other
    /// event delivers it, whatever the guest's IF, as KVM's.
    pub(crate) queued_irq: Option<u8>,
    /// The guest's DR0-3 (breakpoint addresses), in the CPU only while
    /// its DR7 arms one (`enter`); DR6 and DR7 are the backend's.
    pub(crate) db: [u64; 4],
    /// The MSRs outside the backend: machine-check banks, MTRRs, model
    /// MSRs (`vcpu_msrs.rs`).
    pub(crate) msrs: KBox<VcpuMsrs>,
    /// `KVM_X86_SET_MCE` shut the guest down: the next `KVM_RUN` reports
    /// `KVM_EXIT_SHUTDOWN` (KVM's `KVM_REQ_TRIPLE_FAULT`).
    pub(crate) triple_fault: bool,
    /// NMIs userspace sent (`KVM_NMI`) that no entry has delivered yet:
    /// at most 2, or 1 while NMIs are blocked (see `queue_nmi`).
    nmi_pending: u8,
    pending: Pending,
    /// The TDP MMU's TLB generation this vCPU last flushed for.
    flushed_tlb_gen: u64,
    /// Index of this vCPU in the VM (creation order).
    idx: usize,
    /// The host's physical address width, for the walker.
    maxphyaddr: u8,
    /// The vCPU's dirty ring, if the VM logs dirty pages in rings.
    dirty_ring: Option<Arc<VcpuRing>>,
    /// The in-kernel local APIC, if the VM has the split irqchip. Boxed,
    /// as the MSRs: the vCPU's state is built on the (small) kernel stack.
    apic: Option<KBox<VcpuApic>>,
    /// `IA32_APIC_BASE` without an in-kernel APIC: only stored.
    plain_apic_base: u64,
    /// An EOI the VMM's IOAPIC must hear of (`KVM_EXIT_IOAPIC_EOI`).
    pending_eoi_exit: Option<u8>,
    /// kvmclock's structure for this vCPU.
    kvmclock: VcpuClock,
    /// The VMM debugger's settings (`KVM_SET_GUEST_DEBUG`).
    debug: GuestDebug,
    /// An instruction the kernel completed ran with TF set: its
    /// single-step trap is owed (`debug.rs`).
    step_trap: bool,
    /// The linear RIP of the INT3 the debugger was last told of, until
    /// the next entry.
    breakpoint_at: Option<u64>,
}

/// How many NMIs may wait to be delivered: one while NMIs are blocked (the
/// CPU's latch), else two (KVM's rule: one goes in at once, the other at
/// the NMI window).
fn nmi_limit(blocked: bool) -> u8 {
    if blocked {
        1
    } else {
        2
    }
}

/// `value` cut to the width of a control- or debug-register MOV's register
/// operand: 64 bits in 64-bit mode, else 32.
fn operand_width(value: u64, mode: Mode) -> u64 {
    if mode == Mode::Long64 {
        value
    } else {
        value & 0xffff_ffff
    }
}

/// Components rkvm offers on this host.
pub(crate) fn supported_xcr0() -> u64 {
    xsave::supported_xcr0(cpu::host_xcr0())
}

impl CpuCore {
    pub(crate) fn new(
        backend: KBox<dyn VcpuBackend>,
        idx: usize,
        dirty_ring: Option<Arc<VcpuRing>>,
        apic: Option<KBox<VcpuApic>>,
        tsc_generation: u64,
    ) -> Result<Self> {
        Ok(Self {
            backend,
            xcr0: crate::arch::xcr0::X87,
            cpuid: KVec::new(),
            features: GuestFeatures::default(),
            xcr0_allowed: 0,
            misc_enable: msr::MISC_ENABLE_DEFAULT,
            tsc_aux: 0,
            tsc_adjust: 0,
            shut_down: false,
            queued_irq: None,
            msrs: KBox::new(VcpuMsrs::new(&crate::msr_ioctl::host()), GFP_KERNEL)?,
            triple_fault: false,
            nmi_pending: 0,
            db: [0; 4],
            pending: Pending::None,
            flushed_tlb_gen: 0,
            idx,
            maxphyaddr: (x86::cpuid(0x8000_0008, 0).eax & 0xff) as u8,
            dirty_ring,
            apic,
            plain_apic_base: 0,
            pending_eoi_exit: None,
            kvmclock: VcpuClock::new(tsc_generation),
            debug: GuestDebug::default(),
            step_trap: false,
            breakpoint_at: None,
        })
    }

    /// Takes a new guest CPUID table (`KVM_SET_CPUID2`).
    pub(crate) fn set_cpuid(&mut self, table: KVec<CpuidEntry>) {
        let supported = cpuid::supported(
            |leaf, sub| {
                let r = x86::cpuid(leaf, sub);
                [r.eax, r.ebx, r.ecx, r.edx]
            },
            cpu::host_xcr0(),
            crate::hw::guest_rdtscp(),
        );
        let offered = GuestFeatures::from_cpuid(|l, s| cpuid::lookup(supported.entries(), l, s));
        let guest = GuestFeatures::from_cpuid(|l, s| cpuid::lookup(&table, l, s));
        self.features = guest.intersect(&offered);
        self.xcr0_allowed = if self.features.xsave {
            cpuid::guest_xcr0_bits(&table) & supported_xcr0()
        } else {
            0
        };
        self.cpuid = table;
        self.update_apic_features();
        self.backend.set_rdtscp(self.features.rdtscp);
    }

    /// `KVM_SET_XCRS`: XCR0 with the checks of a guest XSETBV.
    pub(crate) fn set_xcr0(&mut self, value: u64) -> Result {
        if !xsave::xcr0_is_valid(value, self.xcr0_allowed) {
            return Err(EINVAL);
        }
        self.xcr0 = value;
        Ok(())
    }

    /// Reads an MSR for the guest or (`host`) `KVM_GET_MSRS`; `None` if
    /// rkvm does not implement it or refuses the read (the guest gets
    /// `#GP`).
    pub(crate) fn get_msr(&self, vm: &Vm, index: u32, host: bool) -> Option<u64> {
        if let Some(r) = self.get_apic_msr(index) {
            return r.ok();
        }
        match index {
            msr::TSC => Some(x86::rdtsc().wrapping_add(self.backend.tsc_offset())),
            // Read whatever the CPUID says, as KVM.
            msr::TSC_ADJUST => Some(self.tsc_adjust),
            msr::MISC_ENABLE => Some(self.misc_enable),
            // The VMM's always (it is in KVM_GET_MSR_INDEX_LIST), the
            // guest's only with RDTSCP in its CPUID, as KVM.
            msr::TSC_AUX if host || self.features.rdtscp => Some(self.tsc_aux),
            pvclock::MSR_SYSTEM_TIME | pvclock::MSR_SYSTEM_TIME_NEW => {
                Some(self.kvmclock.system_time_msr())
            }
            pvclock::MSR_WALL_CLOCK | pvclock::MSR_WALL_CLOCK_NEW => Some(vm.clock().wall_clock_msr()),
            _ => self
                .backend
                .read_msr(index)
                .or_else(|| self.msrs.get(index, host, &self.msr_guest()).ok()),
        }
    }

    /// Writes an MSR for the guest or (`host`) `KVM_SET_MSRS`, with KVM's
    /// checks. `Err` means the value is not allowed (the guest gets `#GP`).
    pub(crate) fn set_msr(&mut self, vm: &Vm, index: u32, val: u64, host: bool) -> Result<(), ()> {
        if let Some(r) = self.set_apic_msr(vm, index, val, host) {
            return r;
        }
        let b = &mut self.backend;
        let checked = match index {
            msr::EFER => msr::check_efer(b.efer(), val, b.cr0(), host)?,
            msr::STAR => val,
            msr::LSTAR
            | msr::CSTAR
            | msr::KERNEL_GS_BASE
            | msr::FS_BASE
            | msr::GS_BASE
            | msr::SYSENTER_ESP
            | msr::SYSENTER_EIP => msr::canonical(val)?,
            msr::SFMASK => val & 0xffff_ffff,
            msr::SYSENTER_CS => val & 0xffff,
            msr::PAT => msr::check_pat(val)?,
            msr::TSC => {
                let old = b.tsc_offset();
                let offset = self.kvmclock.tsc_written(vm, val, x86::rdtsc(), host);
                b.set_tsc_offset(offset);
                if !host {
                    // The guest's own moves add up in TSC_ADJUST.
                    self.tsc_adjust = self.tsc_adjust.wrapping_add(offset.wrapping_sub(old));
                }
                return Ok(());
            }
            // As KVM: without the CPUID bit, writes are dropped, not #GP.
            msr::TSC_ADJUST if !self.features.tsc_adjust => return Ok(()),
            msr::TSC_ADJUST => {
                if !host {
                    // The guest moves its TSC by what it adds.
                    let host_tsc = x86::rdtsc();
                    let tsc = host_tsc
                        .wrapping_add(b.tsc_offset())
                        .wrapping_add(val.wrapping_sub(self.tsc_adjust));
                    let offset = self.kvmclock.tsc_written(vm, tsc, host_tsc, false);
                    b.set_tsc_offset(offset);
                }
                self.tsc_adjust = val;
                return Ok(());
            }
            pvclock::MSR_SYSTEM_TIME | pvclock::MSR_SYSTEM_TIME_NEW => {
                let old = index == pvclock::MSR_SYSTEM_TIME;
                self.kvmclock.set_system_time(vm, val, old, host);
                return Ok(());
            }
            pvclock::MSR_WALL_CLOCK | pvclock::MSR_WALL_CLOCK_NEW => {
                kvmclock::write_wall_clock(vm, val, self.dirty_ring.as_deref());
                return Ok(());
            }
            msr::MISC_ENABLE => {
                self.misc_enable = msr::check_misc_enable(self.misc_enable, val, host)?;
                return Ok(());
            }
            msr::TSC_AUX if host || self.features.rdtscp => {
                self.tsc_aux = msr::check_tsc_aux(val, self.features.intel_compatible)?;
                return Ok(());
            }
            _ => {
                let guest = self.msr_guest();
                return self.msrs.set(index, val, host, &guest).map_err(|_: MsrError| ());
            }
        };
        if b.write_msr(index, checked) {
            Ok(())
        } else {
            Err(())
        }
    }

    /// The vCPU goes: the VM's clock stops counting it.
    pub(crate) fn leave_vm_clock(&self, vm: &Vm) {
        self.kvmclock.vcpu_gone(vm);
    }

    /// Puts the vCPU in its RESET state (at creation, after a shutdown).
    pub(crate) fn reset(&mut self, is_bsp: bool) {
        self.reset_cpu(is_bsp);
        self.reset_apic();
        self.plain_apic_base = crate::sregs::reset(is_bsp).apic_base;
        self.pending_eoi_exit = None;
    }

    /// The processor's part of RESET, which INIT shares.
    fn reset_cpu(&mut self, is_bsp: bool) {
        self.backend.reset(is_bsp);
        self.apply_debug_intercepts();
        // What the CPUID allows survives INIT (VMX's reset clears it).
        self.backend.set_rdtscp(self.features.rdtscp);
        self.step_trap = false;
        self.xcr0 = crate::arch::xcr0::X87;
        self.misc_enable = msr::MISC_ENABLE_DEFAULT;
        self.pending = Pending::None;
        self.shut_down = false;
        self.queued_irq = None;
        self.nmi_pending = 0;
        self.db = [0; 4];
        self.kvmclock.reset(is_bsp);
    }
}

impl GuestCpu {
    /// `KVM_RUN`: runs the guest until an exit userspace must handle.
    /// Returns `EINTR` (exit reason `KVM_EXIT_INTR`) for a pending signal.
    pub(crate) fn run(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        stats: &VcpuStats,
    ) -> Result {
        let core = &mut self.core;
        if let Flow::User = core.complete_userspace_io(vm, run, pio) {
            return Ok(());
        }
        if run.immediate_exit() {
            return Err(EINTR);
        }
        // As KVM: an error return (EFAULT from a fault the host cannot
        // back, ...) leaves no stale exit reason behind.
        run.set_exit_reason(kvm_exit::UNKNOWN);
        let fpu = self.fpu.load();
        core.backend.begin_run();
        let r = core.run_loop(vm, run, pio, &fpu, stats);
        core.backend.end_run();
        r
    }
}

impl CpuCore {
    fn run_loop(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        fpu: &LoadedGuestFpu<'_>,
        stats: &VcpuStats,
    ) -> Result {
        let mut cache = PtCache::new();
        loop {
            if self.deliver_step_trap(run) {
                return Ok(());
            }
            if cpu::signal_pending() {
                run.set_exit_reason(kvm_exit::INTR);
                return Err(EINTR);
            }
            if core::mem::take(&mut self.triple_fault) {
                run.set_exit_reason(kvm_exit::SHUTDOWN);
                return Ok(());
            }
            // A guest that never exits must not keep the CPU from others.
            cpu::cond_resched();
            if self.dirty_ring.as_ref().is_some_and(|r| r.soft_full()) {
                // Until the VMM harvests and resets, the guest could write
                // pages the ring has no room for.
                run.set_exit_reason(kvm_exit::DIRTY_RING_FULL);
                return Ok(());
            }
            if let Some(vector) = self.pending_eoi_exit.take() {
                run.set_ioapic_eoi(vector);
                return Ok(());
            }
            // A halted vCPU sleeps here; its kvmclock is brought up to date
            // after, just before the entry.
            self.apic_wait(run)?;
            self.kvmclock
                .refresh(vm, self.backend.tsc_offset(), self.dirty_ring.as_deref());
            self.sync_vapic_to_guest(vm);
            self.prepare_events(run);
            self.prepare_debug_entry();
            let (exit, cpu) = self.enter(vm, fpu)?;
            self.sync_tpr_from_guest();
            self.sync_vapic_from_guest(vm);
            stats.count(stats::vcpu::EXITS);
            match self.handle_exit(vm, run, pio, &mut cache, stats, exit, cpu)? {
                Flow::Guest => {}
                Flow::User => return Ok(()),
            }
            if let Some(vector) = self.pending_eoi_exit.take() {
                run.set_ioapic_eoi(vector);
                return Ok(());
            }
            if run.request_interrupt_window() && self.ready_for_interrupt() {
                // Userspace asked to hear when it may inject.
                run.set_exit_reason(kvm_exit::IRQ_WINDOW_OPEN);
                return Ok(());
            }
        }
    }
}

impl CpuCore {
    /// `KVM_NMI`: one more NMI to deliver, up to `nmi_limit`; more merge
    /// with those waiting.
    pub(crate) fn queue_nmi(&mut self) {
        self.nmi_pending = (self.nmi_pending + 1).min(nmi_limit(self.backend.nmi_masked()));
    }

    /// Events for the next entry, without an in-kernel APIC (KVM's
    /// userspace-driven injection), one per entry in KVM's order: an event
    /// the last exit interrupted, then the queued interrupt (already
    /// committed), then an NMI if the guest can take one. A pending NMI
    /// that cannot go in now waits for the NMI window; the interrupt
    /// window is watched if userspace asked for it and has no interrupt
    /// queued.
    fn prepare_events(&mut self, run: &RunPage<'_>) {
        if self.apic.is_some() {
            return self.prepare_apic_events(run);
        }
        let window = run.request_interrupt_window() && self.queued_irq.is_none();
        // The debugger's BLOCKIRQ holds NMIs back, not the queued
        // interrupt, which is already committed (KVM's injected one).
        let block_irq = self.debug.block_irq();
        if !self.backend.event_pending() {
            if let Some(vector) = self.queued_irq.take() {
                self.backend.inject_interrupt(vector);
            } else if self.nmi_pending > 0 && self.backend.nmi_allowed() && !block_irq {
                self.backend.inject_nmi();
                self.nmi_pending -= 1;
            }
        }
        self.backend.set_nmi_window(self.nmi_pending > 0 && !block_irq);
        self.backend.set_interrupt_window(window);
    }

    /// `KVM_GET_VCPU_EVENTS`.
    pub(crate) fn events(&self) -> VcpuEvents {
        let b = &self.backend;
        let mut e = VcpuEvents {
            shadow: b.interrupt_shadow(),
            nmi_pending: self.nmi_pending,
            nmi_masked: b.nmi_masked(),
            flags: vcpu_events::valid::REPORTED,
            ..Default::default()
        };
        match b.pending_event() {
            Some(Event::Exception { vector, error_code }) => e.exception = Some((vector, error_code)),
            Some(Event::Interrupt { vector }) => e.interrupt = Some((vector, false)),
            Some(Event::Nmi) => e.nmi_injected = true,
            // Not reported, as KVM: delivered again from its instruction.
            Some(Event::Soft) | None => {}
        }
        // Without an in-kernel APIC the queued interrupt is committed (it
        // goes in whatever the guest's IF): injected, as KVM reports it.
        // With one it is the PIC's, waiting for the guest to take it, and
        // not reported (KVM's `pending_external_vector`): a VMM's
        // GET/SET round trip must not turn it into an injected one.
        if let Some(vector) = self.queued_irq.filter(|_| self.apic.is_none()) {
            e.interrupt = Some((vector, false));
        }
        e
    }

    /// `KVM_SET_VCPU_EVENTS`, after `VcpuEvents::check`. One event fits
    /// the backend's slot, in KVM's order (exception, NMI, interrupt); an
    /// injected interrupt behind an exception or NMI waits as a queued
    /// one. An exception and an NMI both injected, or a software
    /// interrupt (whose instruction length the structure lacks), are
    /// refused.
    pub(crate) fn set_events(&mut self, e: &VcpuEvents) -> Result {
        let irq = match e.interrupt {
            Some((_, true)) => return Err(EINVAL),
            Some((vector, false)) => Some(vector),
            None => None,
        };
        let (slot, queued) = match (e.exception, e.nmi_injected) {
            (Some(_), true) => return Err(EINVAL),
            (Some((vector, error_code)), false) => (Some(Event::Exception { vector, error_code }), irq),
            (None, true) => (Some(Event::Nmi), irq),
            (None, false) => (irq.map(|vector| Event::Interrupt { vector }), None),
        };
        let b = &mut self.backend;
        b.set_pending_event(slot);
        // With an in-kernel APIC a PIC interrupt waiting for the guest is
        // not part of the events (see `events`) and stays.
        if queued.is_some() || self.apic.is_none() {
            self.queued_irq = queued;
        }
        if e.flags & vcpu_events::valid::SHADOW != 0 {
            b.set_interrupt_shadow(e.shadow);
        }
        b.set_nmi_masked(e.nmi_masked);
        if e.flags & vcpu_events::valid::NMI_PENDING != 0 {
            self.nmi_pending = e.nmi_pending.min(nmi_limit(e.nmi_masked));
        }
        Ok(())
    }

    /// `kvm_run.ready_for_interrupt_injection`: the guest can take an
    /// external interrupt now and none is queued or on its way in.
    pub(crate) fn ready_for_interrupt(&self) -> bool {
        let pic_open = self.apic.as_deref().is_none_or(|a| a.regs.accepts_pic_interrupt());
        self.queued_irq.is_none() && pic_open && self.backend.interrupt_status().1
    }

    /// One entry into the guest. Returns the exit and the CPU it ran on.
    fn enter(&mut self, vm: &Vm, fpu: &LoadedGuestFpu<'_>) -> Result<(Exit, u32)> {
        let host_xcr0 = cpu::host_xcr0();
        let irqs = IrqsOff::new();
        let cpu = irqs.cpu();
        if self.kvmclock.moved_from(cpu) {
            // Its kvmclock pairs another CPU's TSC: rewritten first.
            return Ok((Exit::Host, cpu));
        }
        // Something was delivered since the events were chosen: choose
        // again (see `lapic/mailbox.rs`, the doorbell).
        if let Some(apic) = &self.apic {
            if !apic.mailbox().enter(cpu) {
                return Ok((Exit::Host, cpu));
            }
        }
        fpu.prepare_entry(&irqs);
        let tdp = vm.tdp();
        let tlb_gen = tdp.enter_guest(self.idx, cpu);
        let entry = Entry {
            irqs: &irqs,
            cpu,
            flush_tdp: tlb_gen != self.flushed_tlb_gen,
        };
        self.flushed_tlb_gen = tlb_gen;
        // The guest's XCR0 only matters, and is only loaded, once it can
        // use XSAVE (KVM's `kvm_load_xfeatures`).
        let guest_xcr0 = self.backend.cr4() & cr4::OSXSAVE != 0 && self.xcr0 != host_xcr0;
        if guest_xcr0 {
            irqs.set_xcr0(self.xcr0);
        }
        // The guest's breakpoints (or the debugger's), if DR7 arms one:
        // the hardware switches DR7 (and on SVM DR6), not DR0-3.
        let (addrs, dr7) = self.effective_debugregs();
        let guest_dr7 = self.backend.dr7();
        if dr7 != guest_dr7 {
            self.backend.set_dr7(dr7);
        }
        let breakpoints = debugreg::armed(dr7);
        if breakpoints {
            irqs.load_guest_debugregs(&addrs);
        }
        // RDTSCP reads the CPU's TSC_AUX; guest accesses to the MSR exit.
        let host_tsc_aux = if self.features.rdtscp {
            irqs.load_tsc_aux(self.tsc_aux)
        } else {
            None
        };
        let exit = self.backend.run(&entry);
        if let Some(host) = host_tsc_aux {
            irqs.load_tsc_aux(host);
        }
        if breakpoints {
            irqs.restore_host_debugregs();
        }
        if dr7 != guest_dr7 {
            self.backend.set_dr7(guest_dr7);
        }
        if guest_xcr0 {
            irqs.set_xcr0(host_xcr0);
        }
        tdp.exit_guest(self.idx);
        if let Some(apic) = &self.apic {
            apic.mailbox().exit();
        }
        drop(irqs);
        Ok((exit?, cpu))
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_exit(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        cache: &mut PtCache,
        stats: &VcpuStats,
        exit: Exit,
        cpu: u32,
    ) -> Result<Flow> {
        match exit {
            // These handlers need only what is always current (RIP, RSP,
            // RFLAGS, GPRs, CR0, CR4, EFER, CS, CPL); TDP faults sync
            // before they emulate.
            Exit::Host
            | Exit::InterruptWindow
            | Exit::NmiWindow
            | Exit::Cpuid
            | Exit::Hlt
            | Exit::Xsetbv
            | Exit::Rdpmc
            | Exit::Debug { .. }
            | Exit::Breakpoint
            | Exit::TdpFault { .. } => {}
            Exit::Io(io) if !io.string => {}
            _ => self.backend.sync_state(),
        }
        Ok(match exit {
            // The window checks after and before every entry decide.
            Exit::Host | Exit::InterruptWindow | Exit::NmiWindow => Flow::Guest,
            Exit::Cpuid => self.handle_cpuid(),
            Exit::Hlt => {
                self.skip_instruction(None);
                if self.halt() {
                    // Halted in the kernel until an interrupt (`apic_wait`).
                    return Ok(Flow::Guest);
                }
                run.set_exit_reason(kvm_exit::HLT);
                Flow::User
            }
            Exit::Io(io) => self.handle_io(vm, run, pio, &io),
            Exit::Msr { write } => self.handle_msr(vm, write),
            Exit::Xsetbv => self.handle_xsetbv(),
            Exit::CrWrite { cr, gpr } => self.handle_cr_write(vm, run, cr, gpr),
            Exit::MovDr { dr, write, gpr } => self.handle_mov_dr(vm, run, dr, write, gpr),
            Exit::Lmsw { msw } => {
                // LMSW sets PE, MP, EM and TS, and cannot clear PE.
                let old = self.backend.cr0();
                let value = (old & !0xe) | (msw as u64 & 0xf);
                if self.write_cr0(vm, value) {
                    self.skip_instruction(None);
                }
                Flow::Guest
            }
            Exit::Shutdown => {
                self.shut_down = true;
                run.set_exit_reason(kvm_exit::SHUTDOWN);
                Flow::User
            }
            Exit::TdpFault {
                gpa,
                write,
                fetch,
                present,
            } => return self.handle_tdp_fault(vm, run, cache, stats, gpa, write, fetch, present),
            Exit::FailEntry { reason } => {
                run.set_fail_entry(reason, cpu);
                Flow::User
            }
            Exit::Rdpmc => {
                self.backend.inject_exception(vector::GP, Some(0));
                Flow::Guest
            }
            Exit::UndefinedInstruction => {
                self.backend.inject_exception(vector::UD, None);
                Flow::Guest
            }
            Exit::Debug { dr6, dr7 } => {
                self.debug_exit(run, Some((dr6, dr7)));
                Flow::User
            }
            Exit::Breakpoint => {
                self.debug_exit(run, None);
                Flow::User
            }
            Exit::Unexpected { reason, info } => {
                run.set_internal_error(
                    internal::UNEXPECTED_EXIT_REASON,
                    &[reason, cpu as u64, info],
                );
                Flow::User
            }
        })
    }

    fn gpr(&self, i: usize) -> u64 {
        self.backend.gprs()[i]
    }

    /// GPR `gpr` as the register operand of a MOV to a control or debug
    /// register: 32 bits outside 64-bit mode.
    fn gpr_operand(&self, gpr: u8, mode: Mode) -> u64 {
        operand_width(self.gpr(gpr as usize & 15), mode)
    }

    fn set_gpr(&mut self, i: usize, v: u64) {
        let mut g = self.backend.gprs();
        g[i] = v;
        self.backend.set_gprs(&g);
    }

    fn linear_rip(&self) -> u64 {
        self.backend
            .segment(SegReg::Cs)
            .base
            .wrapping_add(self.backend.rip())
    }

    /// Skips the instruction that exited: to the RIP the hardware gave,
    /// else by `len` when the caller decoded it. `false` if neither.
    fn skip_instruction(&mut self, len: Option<u64>) -> bool {
        let next = match (self.backend.next_rip(), len) {
            (Some(next), _) => next,
            (None, Some(len)) => self.backend.rip().wrapping_add(len),
            (None, None) => return false,
        };
        self.finish_instruction(next);
        true
    }

    fn handle_cpuid(&mut self) -> Flow {
        let mut g = self.backend.gprs();
        let osxsave = self.backend.cr4() & cr4::OSXSAVE != 0;
        let xcr0 = self.xcr0;
        let apic_enabled = self.apic_base() & crate::lapic::regs::base::ENABLE != 0;
        let [a, b, c, d] = cpuid::guest_cpuid(&self.cpuid, g[0] as u32, g[1] as u32, osxsave, apic_enabled, || {
            xsave::xsave_size(xcr0, |l, s| {
                let r = x86::cpuid(l, s);
                [r.eax, r.ebx, r.ecx, r.edx]
            })
        });
        g[0] = a as u64;
        g[3] = b as u64;
        g[1] = c as u64;
        g[2] = d as u64;
        self.backend.set_gprs(&g);
        // CPUID is 0F A2.
        self.skip_instruction(Some(2));
        Flow::Guest
    }

    fn handle_msr(&mut self, vm: &Vm, write: bool) -> Flow {
        let g = self.backend.gprs();
        let index = g[1] as u32;
        let ok = if write {
            self.set_msr(vm, index, (g[0] & 0xffff_ffff) | (g[2] << 32), false)
                .is_ok()
        } else {
            match self.get_msr(vm, index, false) {
                Some(v) => {
                    let mut g = g;
                    g[0] = v & 0xffff_ffff;
                    g[2] = v >> 32;
                    self.backend.set_gprs(&g);
                    true
                }
                None => false,
            }
        };
        if ok {
            // RDMSR and WRMSR are 0F 32 and 0F 30.
            self.skip_instruction(Some(2));
        } else {
            self.backend.inject_exception(vector::GP, Some(0));
        }
        Flow::Guest
    }

    /// XSETBV, with KVM's checks: `#UD` without CR4.OSXSAVE, `#GP` outside
    /// CPL 0, for an XCR other than XCR0 or for a value the rules or the
    /// guest's CPUID do not allow. The host's XCR0 never changes here: the
    /// value is loaded around the next entry.
    fn handle_xsetbv(&mut self) -> Flow {
        if self.backend.cr4() & cr4::OSXSAVE == 0 {
            self.backend.inject_exception(vector::UD, None);
            return Flow::Guest;
        }
        let g = self.backend.gprs();
        let value = (g[0] & 0xffff_ffff) | (g[2] << 32);
        if self.backend.cpl() == 0
            && g[1] as u32 == xsave::XCR0_INDEX
            && xsave::xcr0_is_valid(value, self.xcr0_allowed)
        {
            self.xcr0 = value;
            // XSETBV is 0F 01 D1.
            self.skip_instruction(Some(3));
        } else {
            self.backend.inject_exception(vector::GP, Some(0));
        }
        Flow::Guest
    }

    /// Decodes the instruction at RIP, for an exit the hardware did not
    /// decode: `decode` gives whether it is the one that exited, and what
    /// the handler needs. `Err` with where to go on: the guest again if it
    /// changed under the exit, userspace with an emulation error (`what`
    /// in its data) if it cannot be fetched or decoded.
    fn decode_at_rip<T>(
        &self,
        vm: &Vm,
        run: &RunPage<'_>,
        what: u8,
        decode: impl FnOnce(&[u8]) -> Option<(bool, T)>,
    ) -> core::result::Result<T, Flow> {
        let decoded = self.fetch_insn(vm).ok().and_then(|(b, n)| decode(&b[..n]));
        match decoded {
            Some((true, t)) => Ok(t),
            // The instruction changed under the exit: run it again.
            Some((false, _)) => Err(Flow::Guest),
            None => {
                run.set_internal_error(internal::EMULATION, &[self.backend.rip(), what as u64]);
                Err(Flow::User)
            }
        }
    }

    /// `MOV` to or from DR`dr` (always intercepted): KVM's checks (`#GP`
    /// outside CPL 0 or for upper bits in DR6/DR7, `#UD` for DR4/DR5 with
    /// CR4.DE and DR8-15, `#DB` first with DR7.GD), the fixed bits of
    /// `debugreg.rs`. Without the hardware's decoding, the instruction is
    /// fetched and decoded.
    fn handle_mov_dr(&mut self, vm: &Vm, run: &RunPage<'_>, dr: u8, write: bool, gpr: Option<u8>) -> Flow {
        let mode = self.mode();
        let (gpr, len) = match gpr {
            Some(g) => (g, None),
            None => match self.decode_at_rip(vm, run, dr, |b| {
                emulate::decode_mov_dr(b, mode)
                    .ok()
                    .map(|(d, g, w, len)| (d == dr && w == write, (g, Some(len as u64))))
            }) {
                Ok(decoded) => decoded,
                Err(flow) => return flow,
            },
        };
        if self.backend.cpl() != 0 {
            self.backend.inject_exception(vector::GP, Some(0));
            return Flow::Guest;
        }
        let Some(reg) = debugreg::resolve(dr, self.backend.cr4() & cr4::DE != 0) else {
            self.backend.inject_exception(vector::UD, None);
            return Flow::Guest;
        };
        let b = &mut self.backend;
        let dr7 = b.dr7();
        if dr7 & debugreg::DR7_GD != 0 {
            // General detect: a #DB before the access, reported in DR6;
            // delivering it clears GD, so that the handler can use DRs.
            let dr6 = b.dr6() & !0xf | debugreg::DR6_BD;
            b.set_dr6(dr6);
            b.set_dr7(dr7 & !debugreg::DR7_GD);
            b.inject_exception(vector::DB, None);
            return Flow::Guest;
        }
        if write {
            let value = self.gpr_operand(gpr, mode);
            let b = &mut self.backend;
            let ok = match reg {
                Dr::Address(i) => {
                    self.db[i] = value;
                    true
                }
                Dr::Status => debugreg::dr6_write(value).map(|v| b.set_dr6(v)).is_some(),
                Dr::Control => debugreg::dr7_write(value).map(|v| b.set_dr7(v)).is_some(),
            };
            if !ok {
                self.backend.inject_exception(vector::GP, Some(0));
                return Flow::Guest;
            }
        } else {
            let b = &self.backend;
            let value = match reg {
                Dr::Address(i) => self.db[i],
                Dr::Status => b.dr6(),
                Dr::Control => b.dr7(),
            };
            // Outside 64-bit mode the GPR's upper half is zeroed, as any
            // 32-bit register write.
            self.set_gpr(gpr as usize & 15, operand_width(value, mode));
        }
        self.skip_instruction(len);
        Flow::Guest
    }

    /// `KVM_GET_DEBUGREGS`.
    pub(crate) fn debugregs(&self) -> DebugRegs {
        DebugRegs {
            db: self.db,
            dr6: self.backend.dr6(),
            dr7: self.backend.dr7(),
        }
    }

    /// `KVM_SET_DEBUGREGS` (checked by `DebugRegs::from_bytes`): stored as
    /// they are, as KVM does.
    pub(crate) fn set_debugregs(&mut self, r: &DebugRegs) {
        self.db = r.db;
        self.backend.set_dr6(r.dr6);
        self.backend.set_dr7(r.dr7);
    }

    /// MOV to CR0 (when a bit the backend keeps to itself changes) or CR4
    /// (every write): checked as KVM checks them, against the guest's
    /// CPUID and mode, `#GP` if refused.
    fn handle_cr_write(&mut self, vm: &Vm, run: &RunPage<'_>, cr: u8, gpr: Option<u8>) -> Flow {
        let mode = self.mode();
        let (gpr, len) = match gpr {
            Some(g) => (g, None),
            None => match self.decode_at_rip(vm, run, cr, |b| {
                emulate::decode_mov_to_cr(b, mode)
                    .ok()
                    .map(|(c, g, len)| (c == cr, (g, Some(len as u64))))
            }) {
                Ok(decoded) => decoded,
                Err(flow) => return flow,
            },
        };
        let value = self.gpr_operand(gpr, mode);
        let b = &self.backend;
        match cr {
            0 => {
                if !self.write_cr0(vm, value) {
                    return Flow::Guest;
                }
            }
            4 => {
                let old = b.cr4();
                if !sregs::cr4_write_is_valid(value, old, b.cr3(), b.efer(), &self.features) {
                    self.backend.inject_exception(vector::GP, Some(0));
                    return Flow::Guest;
                }
                let pae_bits = cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP;
                if (old ^ value) & pae_bits != 0
                    && !self.load_pdptrs(vm, b.cr0(), value, b.efer())
                {
                    self.backend.inject_exception(vector::GP, Some(0));
                    return Flow::Guest;
                }
                self.backend.set_cr4(value);
                if sregs::cr4_change_flushes_tlb(old, value) {
                    self.backend.flush_guest_tlb();
                }
            }
            8 => {
                if value & !0xf != 0 {
                    self.backend.inject_exception(vector::GP, Some(0));
                    return Flow::Guest;
                }
                self.write_cr8(value);
            }
            _ => {
                run.set_internal_error(internal::UNEXPECTED_EXIT_REASON, &[cr as u64]);
                return Flow::User;
            }
        }
        self.skip_instruction(len);
        Flow::Guest
    }

    /// A guest write of CR0 (MOV or LMSW), with KVM's checks; `false` if
    /// it was refused (the guest gets `#GP`).
    fn write_cr0(&mut self, vm: &Vm, value: u64) -> bool {
        let b = &self.backend;
        let old = b.cr0();
        let cs_l = b.segment(SegReg::Cs).l != 0;
        let cr4_val = b.cr4();
        let Some(efer) = sregs::cr0_write(value, old, cr4_val, b.efer(), cs_l) else {
            self.backend.inject_exception(vector::GP, Some(0));
            return false;
        };
        let paging_changed = (old ^ value) & (cr0::PG | cr0::CD | cr0::NW) != 0;
        if paging_changed && !self.load_pdptrs(vm, value, cr4_val, efer) {
            self.backend.inject_exception(vector::GP, Some(0));
            return false;
        }
        self.backend.set_cr0(value);
        self.backend.write_msr(msr::EFER, efer);
        if sregs::cr0_change_flushes_tlb(old, value) {
            self.backend.flush_guest_tlb();
        }
        true
    }

    /// With PAE paging outside long mode under the given registers, loads
    /// the four PDPTEs from CR3 into the backend, as a CPU does when the
    /// paging mode changes; `false` if one is invalid (KVM's
    /// `load_pdptrs`). Nothing to do in other modes.
    pub(crate) fn load_pdptrs(&mut self, vm: &Vm, cr0_val: u64, cr4_val: u64, efer_val: u64) -> bool {
        if !sregs::is_pae_paging(cr0_val, cr4_val, efer_val) {
            return true;
        }
        let base = self.backend.cr3() & 0xffff_ffe0;
        let mut pdptrs = [0u64; 4];
        for (i, p) in pdptrs.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            if vm.read_guest_phys(base + i as u64 * 8, &mut b).is_none() {
                return false;
            }
            *p = u64::from_le_bytes(b);
        }
        if !pdptrs.iter().all(|&p| sregs::pdpte_is_valid(p, self.maxphyaddr)) {
            return false;
        }
        self.backend.set_pdptrs(pdptrs);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_tdp_fault(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        cache: &mut PtCache,
        stats: &VcpuStats,
        gpa: u64,
        write: bool,
        fetch: bool,
        present: bool,
    ) -> Result<Flow> {
        let gfn = crate::mmu::Gfn::from_gpa(gpa);
        let try_fast = crate::module_parameters::fast_page_fault.value();
        let ring = self.dirty_ring.as_deref();
        let outcome = vm.handle_npf(gfn, write, present, try_fast, cache, ring);
        match outcome {
            Ok(NpfOutcome::Mapped) => stats.count(stats::vcpu::PF_FIXED),
            Ok(NpfOutcome::FastFixed) => stats.count(stats::vcpu::PF_FAST),
            // Emulation walks the guest's page tables and segments.
            Ok(NpfOutcome::Mmio) => self.backend.sync_state(),
            Err(_) => {}
        }
        match outcome {
            Ok(NpfOutcome::Mapped | NpfOutcome::FastFixed) => Ok(Flow::Guest),
            Ok(NpfOutcome::Mmio) if !fetch => Ok(self.emulate_mmio(vm, run, gpa)),
            Ok(NpfOutcome::Mmio) => {
                // Executing from MMIO: KVM cannot either.
                run.set_internal_error(
                    internal::EMULATION,
                    &[self.backend.exit_code(), gpa],
                );
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
        let b = &self.backend;
        WalkRegs {
            cr0: b.cr0(),
            cr3: b.cr3(),
            cr4: b.cr4(),
            efer: b.efer(),
            maxphyaddr: self.maxphyaddr,
        }
    }

    /// The decoding mode of the guest's current code segment.
    fn mode(&self) -> Mode {
        let b = &self.backend;
        let cs = b.segment(SegReg::Cs);
        Mode::from_state(b.cr0(), b.efer(), cs.l != 0, cs.db != 0, b.rflags())
    }

    fn translate(&self, vm: &Vm, linear: u64, access: AccessKind) -> Result<u64, WalkError> {
        guest_walk::translate(linear, &self.walk_regs(), access, &mut WalkerMemory(vm, self.dirty_ring.as_deref()))
    }

    /// Fetches up to 15 bytes at the guest's RIP, as the CPU would.
    fn fetch_insn(&self, vm: &Vm) -> Result<([u8; emulate::MAX_INSN_LEN], usize), WalkError> {
        let mut rip = self.linear_rip();
        if self.mode() != Mode::Long64 {
            rip &= 0xffff_ffff;
        }
        let access = AccessKind {
            write: false,
            user: self.backend.cpl() == 3,
            fetch: true,
        };
        let mut buf = [0u8; emulate::MAX_INSN_LEN];
        let mut got = 0;
        while got < buf.len() {
            let va = rip.wrapping_add(got as u64);
            let gpa = match self.translate(vm, va, access) {
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

    /// A guest page fault the emulation found: delivered as the CPU would.
    fn inject_page_fault(&mut self, linear: u64, error_code: u32) {
        self.backend.set_cr2(linear);
        self.backend
            .inject_exception(vector::PF, Some(error_code));
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
                let rip = self.linear_rip();
                self.inject_page_fault(rip, error_code);
                return Flow::Guest;
            }
            Err(_) => {
                run.set_internal_error(internal::EMULATION, &[self.backend.exit_code(), gpa]);
                return Flow::User;
            }
        };
        let insn = match emulate::decode(&bytes[..len], self.mode()) {
            Ok(insn) => insn,
            Err(_) => {
                // KVM's emulation-failure report: the instruction bytes.
                let data = [
                    self.backend.exit_code(),
                    u64::from_le_bytes(crate::abi::field(&bytes, 0)),
                    u64::from_le_bytes(crate::abi::field(&bytes, 7)),
                ];
                run.set_internal_error(internal::EMULATION, &data);
                return Flow::User;
            }
        };
        if let Some(flow) = self.apic_mmio(vm, gpa, &insn) {
            return flow;
        }
        let linear_rip = self.linear_rip();
        match insn.first_access(&self.backend.gprs()) {
            Access::Write(val) if vm.ioevents().signal(false, gpa, insn.size() as u32, val) => {
                // A doorbell (`KVM_IOEVENTFD`): signalled, no exit.
                let rip = self.backend.rip().wrapping_add(insn.len() as u64);
                self.finish_instruction(rip);
                return Flow::Guest;
            }
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

    fn handle_io(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        io: &IoExit,
    ) -> Flow {
        if io.string {
            return self.start_string_io(vm, run, pio, io);
        }
        let linear_rip = self.linear_rip();
        if io.is_in {
            // As KVM, an IN starts from zeroed data.
            pio.write_bytes(0, &[0; 4][..io.size as usize]);
            self.pending = Pending::PioIn {
                linear_rip,
                next_rip: io.next_rip,
                size: io.size,
            };
        } else {
            // A doorbell (`KVM_IOEVENTFD`): signalled, no exit.
            let value = self.gpr(0);
            if vm.ioevents().signal(true, io.port as u64, io.size as u32, value) {
                self.finish_instruction(io.next_rip);
                return Flow::Guest;
            }
            let data = value.to_le_bytes();
            pio.write_bytes(0, &data[..io.size as usize]);
            self.pending = Pending::PioOut {
                linear_rip,
                next_rip: io.next_rip,
            };
        }
        run.set_io(io.is_in, io.size, io.port, 1);
        Flow::User
    }

    /// Translates the string operand's linear address for an access.
    fn string_gpa(&self, vm: &Vm, linear: u64, write: bool) -> Result<u64, WalkError> {
        let access = AccessKind {
            write,
            user: self.backend.cpl() == 3,
            fetch: false,
        };
        self.translate(vm, linear, access)
    }

    /// The linear address of the string operand: `index` (RSI or RDI)
    /// in the instruction's segment and address size.
    fn string_linear(&self, string: &StringIo, index: u64) -> u64 {
        let base = string.base(self.mode(), self.backend.segment(string.seg).base);
        base.wrapping_add(index & string.addr_mask)
    }

    /// `n` elements are done: count them off RCX under REP, and leave the
    /// instruction when it is complete (else the guest runs it again).
    fn finish_string_elements(&mut self, string: &StringIo, n: u32) {
        let (rcx, done) = string.finish(self.gpr(1), n);
        self.set_gpr(1, rcx);
        if done {
            self.finish_instruction(string.next_rip);
        }
    }

    /// INS/OUTS: as KVM, each OUTS element is its own exit; INS elements
    /// are asked for in a batch up to the end of the guest page.
    fn start_string_io(
        &mut self,
        vm: &Vm,
        run: &RunPage<'_>,
        pio: &SharedPage<'_>,
        io: &IoExit,
    ) -> Flow {
        let decoded = self.fetch_insn(vm).ok().and_then(|(bytes, len)| {
            StringIo::decode(
                &bytes[..len],
                self.mode(),
                io.is_in,
                io.size,
                io.rep,
                self.backend.rflags(),
                io.next_rip,
            )
        });
        let Some(string) = decoded else {
            run.set_internal_error(internal::EMULATION, &[self.backend.exit_code(), io.port as u64]);
            return Flow::User;
        };
        let count = string.count(self.gpr(1));
        if count == 0 {
            self.finish_instruction(string.next_rip);
            return Flow::Guest;
        }
        let linear_rip = self.linear_rip();
        let index = if io.is_in { self.gpr(7) } else { self.gpr(6) };
        let linear = self.string_linear(&string, index);
        let gpa = match self.string_gpa(vm, linear, io.is_in) {
            Ok(gpa) => gpa,
            Err(WalkError::Retry) => return Flow::Guest,
            Err(WalkError::PageFault { error_code }) => {
                self.inject_page_fault(linear, error_code);
                return Flow::Guest;
            }
            Err(_) => {
                run.set_internal_error(internal::EMULATION, &[self.backend.exit_code(), linear]);
                return Flow::User;
            }
        };
        if !io.is_in {
            let mut data = [0u8; 4];
            let size = io.size as usize;
            // An element straddling a page is read in two parts.
            let first = pio::first_part(gpa, size);
            let mut ok = vm.read_guest_phys(gpa, &mut data[..first]).is_some();
            if ok && first < size {
                ok = self
                    .string_gpa(vm, linear.wrapping_add(first as u64), false)
                    .ok()
                    .and_then(|g| vm.read_guest_phys(g, &mut data[first..size]))
                    .is_some();
            }
            if !ok {
                run.set_internal_error(internal::EMULATION, &[self.backend.exit_code(), linear]);
                return Flow::User;
            }
            pio.write_bytes(0, &data[..size]);
            run.set_io(false, io.size, io.port, 1);
            self.pending = Pending::OutsElement { linear_rip, string };
            return Flow::User;
        }
        let n = string.batch(linear, count);
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
            let linear = self.string_linear(&string, self.gpr(7));
            let stored = self
                .string_gpa(vm, linear, true)
                .ok()
                .and_then(|gpa| {
                    let first = pio::first_part(gpa, size);
                    vm.write_guest_phys(gpa, &data[..first], self.dirty_ring.as_deref())?;
                    if first < size {
                        let g2 = self
                            .string_gpa(vm, linear.wrapping_add(first as u64), true)
                            .ok()?;
                        vm.write_guest_phys(g2, &data[first..size], self.dirty_ring.as_deref())?;
                    }
                    Some(())
                })
                .is_some();
            if !stored {
                run.set_internal_error(internal::EMULATION, &[self.backend.exit_code(), linear]);
                return Flow::User;
            }
            let rdi = pio::add_masked(self.gpr(7), string.step(1), string.addr_mask);
            self.set_gpr(7, rdi);
            self.finish_string_elements(&string, 1);
        }
        Flow::Guest
    }

    /// Finishes the instruction that was handed to userspace, unless
    /// userspace moved RIP meanwhile (as KVM does). `User` if the
    /// instruction needs another trip to userspace (an MMIO write-back).
    fn complete_userspace_io(&mut self, vm: &Vm, run: &RunPage<'_>, pio: &SharedPage<'_>) -> Flow {
        let pending = core::mem::replace(&mut self.pending, Pending::None);
        let same_rip = |this: &Self, linear_rip: u64| this.linear_rip() == linear_rip;
        match pending {
            Pending::None => {}
            Pending::OutsElement { linear_rip, string } => {
                if same_rip(self, linear_rip) {
                    let rsi = pio::add_masked(self.gpr(6), string.step(1), string.addr_mask);
                    self.set_gpr(6, rsi);
                    self.finish_string_elements(&string, 1);
                }
            }
            Pending::InsElements {
                linear_rip,
                string,
                count,
            } => {
                if same_rip(self, linear_rip) {
                    return self.complete_ins(vm, run, pio, string, count);
                }
            }
            Pending::MmioWrite { linear_rip, len } => {
                if same_rip(self, linear_rip) {
                    let rip = self.backend.rip().wrapping_add(len);
                    self.finish_instruction(rip);
                }
            }
            Pending::MmioRead {
                linear_rip,
                insn,
                gpa,
            } => {
                if !same_rip(self, linear_rip) {
                    return Flow::Guest;
                }
                let mut gprs = self.backend.gprs();
                let mut rflags = self.backend.rflags();
                let write_back = insn.complete_read(run.mmio_data(), &mut gprs, &mut rflags);
                self.backend.set_gprs(&gprs);
                self.backend.set_rflags(rflags);
                if let Some(val) = write_back {
                    run.set_mmio(gpa, insn.size() as u32, Some(val));
                    self.pending = Pending::MmioWrite {
                        linear_rip,
                        len: insn.len() as u64,
                    };
                    return Flow::User;
                }
                let rip = self.backend.rip().wrapping_add(insn.len() as u64);
                self.finish_instruction(rip);
            }
            Pending::PioOut {
                linear_rip,
                next_rip,
            } => {
                if same_rip(self, linear_rip) {
                    self.finish_instruction(next_rip);
                }
            }
            Pending::PioIn {
                linear_rip,
                next_rip,
                size,
            } => {
                if same_rip(self, linear_rip) {
                    let mut data = [0u8; 8];
                    pio.read_bytes(0, &mut data[..size as usize]);
                    let rax = pio::merge_in(self.gpr(0), u64::from_le_bytes(data), size);
                    self.set_gpr(0, rax);
                    self.finish_instruction(next_rip);
                }
            }
        }
        Flow::Guest
    }
}
