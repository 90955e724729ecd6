// SPDX-License-Identifier: GPL-2.0

//! A vCPU with an in-kernel local APIC (split irqchip): accepting what was
//! delivered to it, halting until it can run, choosing the interrupt each
//! entry delivers, and the guest's and the VMM's accesses to the APIC
//! (xAPIC MMIO page, x2APIC and base MSRs, `KVM_GET/SET_LAPIC`,
//! `KVM_GET/SET_MP_STATE`).
//!
//! Delivery by others only posts to the APIC's mailbox; everything here
//! runs on the vCPU's thread, under its mutex.

use kernel::prelude::*;

use super::{CpuCore, Flow};
use crate::{
    abi::{mp_state, run::exit as kvm_exit, x2apic_api},
    emulate::{Access, MmioInsn},
    lapic::{self, apic::MpState, Action, ApicFeatures, ApicMode, STATE_SIZE},
    run_page::RunPage,
    sregs::SegReg,
    vm::Vm,
    x86,
};

impl CpuCore {
    /// Whether the vCPU has an in-kernel local APIC.
    pub(crate) fn has_apic(&self) -> bool {
        self.apic.is_some()
    }

    /// Takes what the mailbox holds: a timer expiry becomes the timer's
    /// LVT interrupt, NMIs join those pending, INIT resets the vCPU (an AP
    /// then waits for a SIPI), a SIPI starts an AP waiting for one.
    fn accept_apic_events(&mut self) {
        let Some(apic) = self.apic.as_deref_mut() else {
            return;
        };
        let mb = &apic.shared.mailbox;
        if mb.take_timer() {
            if let Some(vector) = apic.regs.timer_expired() {
                mb.post_vector(vector, false);
            }
        }
        let nmis = mb.take_nmis();
        let events = mb.take_init_sipi();
        for _ in 0..nmis {
            self.queue_nmi();
        }
        if events.init {
            self.init();
        }
        if let Some(vector) = events.sipi {
            self.start_ap(vector);
        }
    }

    /// INIT: the processor state of RESET but for what INIT keeps (the
    /// extended state, MISC_ENABLE, the APIC's base and ID); the BSP runs
    /// on, an AP waits for a SIPI.
    fn init(&mut self) {
        let Some(is_bsp) = self.apic.as_deref().map(|a| a.is_bsp) else {
            return;
        };
        let misc_enable = self.misc_enable;
        self.reset_cpu(is_bsp);
        self.misc_enable = misc_enable;
        if let Some(apic) = self.apic.as_deref_mut() {
            apic.reset(true);
            apic.mp_state = if is_bsp { MpState::Runnable } else { MpState::InitReceived };
        }
    }

    /// A SIPI: an AP waiting for one starts in real mode at `vector << 12`.
    fn start_ap(&mut self, vector: u8) {
        let Some(apic) = self.apic.as_deref_mut() else {
            return;
        };
        apic.sipi_vector = vector;
        if apic.mp_state != MpState::InitReceived {
            return;
        }
        apic.mp_state = MpState::Runnable;
        let mut s = self.backend.sregs();
        let cs = &mut s.segs[SegReg::Cs as usize];
        cs.selector = (vector as u16) << 8;
        cs.base = (vector as u64) << 12;
        self.backend.set_sregs(&s);
        self.backend.set_rip(0);
    }

    /// An interrupt is waiting that the vCPU would take with interrupts
    /// enabled: the PIC's (through LINT0) or the APIC's.
    fn interrupt_waiting(&self) -> bool {
        let Some(apic) = self.apic.as_deref() else {
            return self.queued_irq.is_some();
        };
        (self.queued_irq.is_some() && apic.regs.accepts_pic_interrupt())
            || apic.regs.deliverable(apic.mailbox()).is_some()
    }

    /// Whether a halted vCPU resumes: an NMI, an event on its way in, or
    /// an interrupt it can take (IF set), as KVM's `kvm_vcpu_has_events`.
    fn halt_ends(&self) -> bool {
        self.nmi_pending > 0
            || self.backend.event_pending()
            || (self.backend.interrupt_status().0 && self.interrupt_waiting())
    }

    /// Before each entry with an in-kernel APIC: accepts what was
    /// delivered, and sleeps while the vCPU cannot run (halted, or an AP
    /// before INIT/SIPI) until something is delivered or a signal comes
    /// (`EINTR`). A vCPU the VMM left uninitialized sleeps once and
    /// returns `EAGAIN` (KVM's ABI: the VMM runs it again).
    pub(super) fn apic_wait(&mut self, run: &RunPage<'_>) -> Result {
        let Some(apic) = self.apic.as_deref() else {
            return Ok(());
        };
        let uninitialized = apic.mp_state == MpState::Uninitialized;
        loop {
            if let Some(apic) = self.apic.as_deref() {
                apic.mailbox().take_requests();
            }
            self.accept_apic_events();
            let state = self.apic.as_deref().map_or(MpState::Runnable, |a| a.mp_state);
            match state {
                MpState::Runnable => return Ok(()),
                MpState::Halted if self.halt_ends() => {
                    if let Some(apic) = self.apic.as_deref_mut() {
                        apic.mp_state = MpState::Runnable;
                    }
                    return Ok(());
                }
                _ => {}
            }
            let Some(apic) = self.apic.as_deref() else {
                return Ok(());
            };
            let mb = apic.mailbox();
            if !apic.shared.wait.block_until(|| mb.has_requests()) {
                run.set_exit_reason(kvm_exit::INTR);
                return Err(EINTR);
            }
            if uninitialized {
                self.accept_apic_events();
                return Err(EAGAIN);
            }
        }
    }

    /// The events of the next entry with an in-kernel APIC, in KVM's
    /// order: an event already on its way in, else an NMI if the guest
    /// can take one, else an interrupt if it can take one (the PIC's
    /// through LINT0 first, then the APIC's highest above the PPR, which
    /// moves to the ISR). What must wait opens a window: the NMI window,
    /// the interrupt window (also when the VMM asked for it), and the TPR
    /// threshold when the TPR holds back the highest waiting interrupt.
    pub(super) fn prepare_apic_events(&mut self, run: &RunPage<'_>) {
        let Some(apic) = self.apic.as_deref_mut() else {
            return;
        };
        // The debugger's BLOCKIRQ holds interrupts and NMIs back, and
        // their windows with them, as KVM.
        let block_irq = self.debug.block_irq();
        let b = &mut self.backend;
        if !b.event_pending() && !block_irq {
            if self.nmi_pending > 0 && b.nmi_allowed() {
                b.inject_nmi();
                self.nmi_pending -= 1;
            } else if b.interrupt_status().1 {
                if self.queued_irq.is_some() && apic.regs.accepts_pic_interrupt() {
                    if let Some(vector) = self.queued_irq.take() {
                        b.inject_interrupt(vector);
                    }
                } else if let Some(vector) = apic.regs.deliverable(&apic.shared.mailbox) {
                    apic.regs.acknowledge(vector, &apic.shared.mailbox);
                    b.inject_interrupt(vector);
                }
            }
        }
        let waiting = self.interrupt_waiting();
        let Some(apic) = self.apic.as_deref() else {
            return;
        };
        // The VMM's request for an interrupt window is for a PIC
        // interrupt: watched only while one could go in, through LINT0
        // (KVM's `kvm_cpu_accept_dm_intr`). With LINT0 masked the window
        // would open, exit and open again without end, the guest making
        // no progress while its IF is set.
        let requested = run.request_interrupt_window()
            && self.queued_irq.is_none()
            && apic.regs.accepts_pic_interrupt();
        let mb = apic.mailbox();
        let b = &mut self.backend;
        b.set_nmi_window(self.nmi_pending > 0 && !block_irq);
        b.set_interrupt_window((waiting && !block_irq) || requested);
        // With a TPR-patching word the TPR moves in memory, not CR8: no
        // threshold (KVM's `update_cr8_intercept`).
        let threshold = apic.regs.tpr_threshold(mb).filter(|_| apic.vapic_addr.is_none());
        b.set_tpr_threshold(threshold);
        b.set_cr8((apic.regs.tpr() >> 4) as u64);
    }

    /// `KVM_SET_VAPIC_ADDR`: where the VMM's TPR-patching code keeps the
    /// TPR (0: nowhere). As KVM, `EINVAL` without an in-kernel APIC or if
    /// no memslot backs the word.
    pub(crate) fn set_vapic_addr(&mut self, vm: &Vm, gpa: u64) -> Result {
        let apic = self.apic.as_deref_mut().ok_or(EINVAL)?;
        if gpa != 0 {
            let mut word = [0u8; 4];
            if gpa & 0xfff > 0xffc || vm.read_guest_phys(gpa, &mut word).is_none() {
                return Err(EINVAL);
            }
        }
        apic.vapic_addr = (gpa != 0).then_some(gpa);
        Ok(())
    }

    /// Before an entry: the TPR-patching word, if any, says what the APIC
    /// has now.
    pub(super) fn sync_vapic_to_guest(&mut self, vm: &Vm) {
        let Some(apic) = self.apic.as_deref() else {
            return;
        };
        if let Some(gpa) = apic.vapic_addr {
            let word = apic.regs.vapic_word(apic.mailbox());
            // A word whose memory went away is not written, as KVM.
            let _ = vm.write_guest_phys(gpa, &word.to_le_bytes(), self.dirty_ring.as_deref());
        }
    }

    /// After an exit: the TPR the guest's patched code stored in the
    /// word.
    pub(super) fn sync_vapic_from_guest(&mut self, vm: &Vm) {
        let Some(apic) = self.apic.as_deref_mut() else {
            return;
        };
        let Some(gpa) = apic.vapic_addr else {
            return;
        };
        let mut word = [0u8; 4];
        if vm.read_guest_phys(gpa, &mut word).is_some() {
            apic.regs.set_tpr(word[0]);
        }
    }

    /// After an exit: the guest may have moved its TPR through CR8.
    pub(super) fn sync_tpr_from_guest(&mut self) {
        if let Some(apic) = self.apic.as_deref_mut() {
            let cr8 = self.backend.cr8() as u8;
            if cr8 != apic.regs.tpr() >> 4 {
                apic.regs.set_tpr(cr8 << 4);
            }
        }
    }

    /// A guest MOV to CR8 (intercepted while the TPR holds back an
    /// interrupt): the TPR's class.
    pub(super) fn write_cr8(&mut self, value: u64) {
        self.backend.set_cr8(value);
        if let Some(apic) = self.apic.as_deref_mut() {
            apic.regs.set_tpr((value as u8) << 4);
        }
    }

    /// Carries out what an APIC register write asked for.
    fn apic_action(&mut self, vm: &Vm, action: Action) {
        let Some(apic) = self.apic.as_deref_mut() else {
            return;
        };
        match action {
            Action::None | Action::Eoi(None) => {}
            Action::Eoi(Some(vector)) => {
                if vm.irqchip().ioapic_handles_eoi(vector, &apic.regs.identity()) {
                    self.pending_eoi_exit = Some(vector);
                }
            }
            Action::Send(irq) => {
                let wide = apic.regs.mode() == ApicMode::X2Apic;
                vm.irqchip().deliver(&irq, Some(self.idx), wide);
            }
            Action::Timer(cmd) => apic.program_timer(cmd),
            Action::Identity => apic.publish_identity(),
        }
    }

    /// An MMIO access to `gpa` that may be the APIC's page: emulated here
    /// (`Some`), or not the APIC's (`None`: the VMM's MMIO).
    pub(super) fn apic_mmio(&mut self, vm: &Vm, gpa: u64, insn: &MmioInsn) -> Option<Flow> {
        let apic = self.apic.as_deref_mut()?;
        if apic.regs.mmio_base()? != gpa & !0xfff {
            return None;
        }
        let off = (gpa & 0xfff) as u32;
        let size = insn.size() as u32;
        let now = apic.now_ns();
        let action = match insn.first_access(&self.backend.gprs()) {
            Access::Write(val) => apic.regs.mmio_write(off, size, val as u32, now),
            Access::Read => {
                let v = apic.regs.mmio_read(off, size, apic.mailbox(), now);
                let mut gprs = self.backend.gprs();
                let mut rflags = self.backend.rflags();
                let write_back = insn.complete_read(v, &mut gprs, &mut rflags);
                self.backend.set_gprs(&gprs);
                self.backend.set_rflags(rflags);
                match write_back {
                    Some(w) => apic.regs.mmio_write(off, size, w as u32, now),
                    None => Action::None,
                }
            }
        };
        let rip = self.backend.rip().wrapping_add(insn.len() as u64);
        self.finish_instruction(rip);
        self.apic_action(vm, action);
        Some(Flow::Guest)
    }

    /// Reads an APIC MSR (base, x2APIC registers, TSC deadline): `None`
    /// if `index` is not one, `Some(Err)` for `#GP`.
    pub(crate) fn get_apic_msr(&self, index: u32) -> Option<Result<u64, ()>> {
        let apic = self.apic.as_deref();
        Some(match index {
            lapic::base::MSR => Ok(self.apic_base()),
            lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST => {
                let apic = apic?;
                apic.regs.read_x2apic_msr(index, apic.mailbox(), apic.now_ns())
            }
            // As KVM, whatever the CPUID says: 0 unless the timer is in
            // TSC-deadline mode (which the CPUID gates).
            lapic::TSC_DEADLINE_MSR => Ok(apic.map_or(0, |a| a.regs.tsc_deadline())),
            _ => return None,
        })
    }

    /// Writes an APIC MSR, for the guest or (`host`) `KVM_SET_MSRS`, and
    /// carries out what it asks; as [`Self::get_apic_msr`].
    pub(crate) fn set_apic_msr(&mut self, vm: &Vm, index: u32, value: u64, host: bool) -> Option<Result<(), ()>> {
        // Every WRMSR comes here first: the common ones leave at once.
        let tsc_deadline = match index {
            lapic::base::MSR | lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST => false,
            lapic::TSC_DEADLINE_MSR => true,
            _ => return None,
        };
        let tsc_now = x86::rdtsc().wrapping_add(self.backend.tsc_offset());
        let Some(apic) = self.apic.as_deref_mut() else {
            return match index {
                // Without an in-kernel APIC the base is only stored, as KVM.
                lapic::base::MSR => Some(self.set_plain_apic_base(value, host)),
                // There is no timer to arm: dropped, as KVM.
                lapic::TSC_DEADLINE_MSR => Some(Ok(())),
                _ => None,
            };
        };
        let now = apic.now_ns();
        // The APIC's features follow the CPUID (`update_apic_features`).
        let action = match index {
            lapic::base::MSR => apic.regs.set_base(value, host),
            _ if tsc_deadline => Ok(apic.regs.set_tsc_deadline(value, tsc_now, x86::tsc_khz())),
            _ => apic.regs.write_x2apic_msr(index, value, now),
        };
        Some(action.map(|a| self.apic_action(vm, a)))
    }

    /// What the guest's CPUID offers the APIC.
    fn apic_features(&self) -> ApicFeatures {
        let leaf1 = crate::cpuid::lookup(&self.cpuid, 1, 0);
        ApicFeatures {
            x2apic: self.features.x2apic,
            tsc_deadline: leaf1[2] & (1 << 24) != 0,
            maxphyaddr: self.maxphyaddr,
        }
    }

    /// The guest's CPUID changed: what the APIC offers follows.
    pub(super) fn update_apic_features(&mut self) {
        let features = self.apic_features();
        if let Some(apic) = self.apic.as_deref_mut() {
            apic.regs.set_features(features);
        }
    }

    /// `IA32_APIC_BASE`: the APIC's, or without one what was stored.
    pub(crate) fn apic_base(&self) -> u64 {
        self.apic.as_deref().map_or(self.plain_apic_base, |a| a.regs.base_msr())
    }

    fn set_plain_apic_base(&mut self, value: u64, host: bool) -> Result<(), ()> {
        lapic::regs::check_base(&self.apic_features(), self.plain_apic_base, value, host)?;
        self.plain_apic_base = value;
        Ok(())
    }

    /// `KVM_SET_SREGS`' APIC base and CR8 (already checked).
    pub(crate) fn set_sregs_apic(&mut self, vm: &Vm, apic_base: u64, cr8: u64) {
        // `Sregs::is_valid` checked the base as KVM does; the VMM may make
        // any mode change, so the write cannot fail here.
        let _ = self.set_apic_msr(vm, lapic::base::MSR, apic_base, true);
        self.write_cr8(cr8);
    }

    /// `KVM_GET_LAPIC`.
    pub(crate) fn get_lapic(&self, vm: &Vm, out: &mut [u8; STATE_SIZE]) -> Result {
        let apic = self.apic.as_deref().ok_or(EINVAL)?;
        let x2apic_format = vm.irqchip().x2apic_api() & x2apic_api::USE_32BIT_IDS != 0;
        apic.regs.state(apic.mailbox(), apic.now_ns(), x2apic_format, out);
        Ok(())
    }

    /// `KVM_SET_LAPIC`.
    pub(crate) fn set_lapic(&mut self, vm: &Vm, image: &[u8; STATE_SIZE]) -> Result {
        let apic = self.apic.as_deref_mut().ok_or(EINVAL)?;
        let x2apic_format = vm.irqchip().x2apic_api() & x2apic_api::USE_32BIT_IDS != 0;
        if !apic.regs.accepts_state(image, x2apic_format) {
            return Err(EINVAL);
        }
        let now = apic.now_ns();
        let (irr, tmr, cmd) = apic.regs.set_state(image, now);
        apic.shared.mailbox.set_irr_tmr(&irr, &tmr);
        apic.program_timer(cmd);
        apic.publish_identity();
        self.backend.set_cr8((apic.regs.tpr() >> 4) as u64);
        Ok(())
    }

    /// `KVM_GET_MP_STATE`: without an in-kernel APIC always runnable (HLT
    /// is the VMM's); with one, after accepting what was delivered.
    pub(crate) fn mp_state(&mut self) -> u32 {
        self.accept_apic_events();
        match self.apic.as_deref().map(|a| a.mp_state) {
            None | Some(MpState::Runnable) => mp_state::RUNNABLE,
            Some(MpState::Uninitialized) => mp_state::UNINITIALIZED,
            Some(MpState::InitReceived) => mp_state::INIT_RECEIVED,
            Some(MpState::Halted) => mp_state::HALTED,
        }
    }

    /// `KVM_SET_MP_STATE`: `EINVAL` for anything but runnable without an
    /// in-kernel APIC, and for states rkvm has not (SMM, SEV); "SIPI
    /// received" becomes INIT received with the last SIPI pending, as KVM.
    pub(crate) fn set_mp_state(&mut self, state: u32) -> Result {
        let Some(apic) = self.apic.as_deref_mut() else {
            return if state == mp_state::RUNNABLE { Ok(()) } else { Err(EINVAL) };
        };
        apic.mp_state = match state {
            mp_state::RUNNABLE => MpState::Runnable,
            mp_state::UNINITIALIZED => MpState::Uninitialized,
            mp_state::INIT_RECEIVED => MpState::InitReceived,
            mp_state::HALTED => MpState::Halted,
            mp_state::SIPI_RECEIVED => {
                apic.shared.mailbox.post_sipi(apic.sipi_vector);
                apic.shared.mailbox.ring();
                MpState::InitReceived
            }
            _ => return Err(EINVAL),
        };
        Ok(())
    }

    /// `KVM_INTERRUPT` with an in-kernel APIC: the PIC's interrupt, taken
    /// through LINT0 when the guest can; `EEXIST` while one waits, as KVM.
    pub(crate) fn queue_pic_interrupt(&mut self, vector: u8) -> Result {
        if self.apic.is_some() && self.queued_irq.is_some() {
            return Err(EEXIST);
        }
        self.queued_irq = Some(vector);
        Ok(())
    }

    /// HLT with an in-kernel APIC: the vCPU halts in the kernel
    /// (`apic_wait`) instead of exiting to the VMM.
    pub(super) fn halt(&mut self) -> bool {
        match self.apic.as_deref_mut() {
            Some(apic) => {
                apic.mp_state = MpState::Halted;
                true
            }
            None => false,
        }
    }

    /// Stops the APIC's timer and clears it (vCPU RESET).
    pub(super) fn reset_apic(&mut self) {
        if let Some(apic) = self.apic.as_deref_mut() {
            apic.reset(false);
            apic.mp_state = MpState::at_reset(apic.is_bsp);
        }
    }
}
