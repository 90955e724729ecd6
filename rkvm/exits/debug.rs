// SPDX-License-Identifier: GPL-2.0

//! The VMM's debugger (`KVM_SET_GUEST_DEBUG`, see `guest_debug.rs`) and
//! the single-step trap of instructions the kernel completes for the
//! guest (`KVM_CAP_X86_ROBUST_SINGLESTEP`).
//!
//! The debugger's step is RFLAGS.TF, set before every entry and hidden
//! from `KVM_GET_REGS`; its `#DB` and `#BP` exit through the backend's
//! intercepts. Where the kernel moves RIP past an instruction the guest
//! did not finish itself ([`CpuCore::finish_instruction`]), the trap the
//! hardware would have raised after it is raised here, before the next
//! entry: a `KVM_EXIT_DEBUG` for the debugger, else a `#DB` for the guest.

use super::CpuCore;
use crate::{
    arch::{dr6, rflags, vector},
    debugreg,
    guest_debug,
    regs::Regs,
    run_page::RunPage,
};
use kernel::prelude::*;

impl CpuCore {
    /// `KVM_SET_GUEST_DEBUG`. An exception to inject (`INJECT_DB`,
    /// `INJECT_BP`) is refused with `EBUSY` while another event is on
    /// its way in.
    pub(crate) fn set_guest_debug(&mut self, request: &guest_debug::Request) -> Result {
        if let Some(v) = request.inject {
            if self.backend.event_pending() {
                return Err(EBUSY);
            }
            if v == vector::BP && self.breakpoint_at == Some(self.linear_rip()) {
                // The debugger hands back the INT3 it stopped at: the
                // guest's handler returns past it, as had it not exited.
                let rip = self.backend.rip().wrapping_add(1);
                self.backend.set_rip(rip);
            }
            self.backend.inject_exception(v, None);
        }
        let was_stepping = self.debug.single_step();
        self.debug = request.debug;
        let r = self.backend.rflags();
        if self.debug.single_step() {
            // At once: an instruction userspace completes on the next
            // `KVM_RUN` (an OUT) is stepped over too.
            self.backend.set_rflags(r | rflags::TF);
        } else if was_stepping {
            // The TF was the debugger's (as KVM, a TF of the guest's own
            // set meanwhile goes with it).
            self.backend.set_rflags(r & !rflags::TF);
        }
        self.apply_debug_intercepts();
        Ok(())
    }

    /// Tells the backend which exceptions the debugger takes (again after
    /// a reset, which the settings outlive).
    pub(super) fn apply_debug_intercepts(&mut self) {
        let d = self.debug;
        self.backend
            .set_debug_intercepts(d.intercept_db(), d.sw_breakpoints());
    }

    /// `KVM_GET_REGS`: without the debugger's TF.
    pub(crate) fn regs(&self) -> Regs {
        let mut regs = self.backend.regs();
        if self.debug.single_step() {
            regs.rflags &= !rflags::TF;
        }
        regs
    }

    /// Just before an entry: the debugger's TF in place. The guest may
    /// not be in an STI or MOV SS shadow then (a shadowed instruction
    /// with a fresh TF has no single-step trap pending, which VMX's entry
    /// checks refuse), so the shadow goes, as KVM does.
    pub(super) fn prepare_debug_entry(&mut self) {
        self.breakpoint_at = None;
        if !self.debug.single_step() {
            return;
        }
        let r = self.backend.rflags();
        if r & rflags::TF == 0 {
            self.backend.set_rflags(r | rflags::TF);
        }
        if self.backend.interrupt_shadow() != 0 {
            self.backend.set_interrupt_shadow(0);
        }
    }

    /// The debug registers the next entry runs with: the debugger's
    /// DR0-3 and DR7 while it sets hardware breakpoints, else the guest's.
    pub(super) fn effective_debugregs(&self) -> ([u64; 4], u64) {
        match self.debug.hw_breakpoints() {
            Some((addr, dr7)) => (*addr, dr7),
            None => (self.db, self.backend.dr7()),
        }
    }

    /// Moves RIP past an instruction the kernel completed for the guest.
    /// With TF set when it began, the single-step trap the hardware would
    /// have raised is owed (see [`Self::deliver_step_trap`]).
    pub(super) fn finish_instruction(&mut self, next_rip: u64) {
        if self.debug.single_step() || self.backend.rflags() & rflags::TF != 0 {
            self.step_trap = true;
        }
        self.backend.set_rip(next_rip);
    }

    /// Before the next entry, the single-step trap owed for an
    /// instruction the kernel completed: `KVM_EXIT_DEBUG` for the
    /// debugger (`true`: back to userspace), or a `#DB` with DR6.BS for
    /// a guest that single-steps itself.
    pub(super) fn deliver_step_trap(&mut self, run: &RunPage<'_>) -> bool {
        if !core::mem::take(&mut self.step_trap) {
            return false;
        }
        if self.debug.single_step() {
            let dr7 = self.backend.dr7();
            run.set_debug(vector::DB, self.linear_rip(), Some((guest_debug::DR6_STEP, dr7)));
            return true;
        }
        let dr6 = debugreg::dr6_after_debug_exception(self.backend.dr6(), dr6::BS);
        self.backend.set_dr6(dr6);
        self.backend.inject_exception(vector::DB, None);
        false
    }

    /// A `#DB` or INT3 the debugger intercepted: `KVM_EXIT_DEBUG`, at the
    /// guest's linear RIP (after the stepped instruction, on the
    /// breakpoint).
    pub(super) fn debug_exit(&mut self, run: &RunPage<'_>, db: Option<(u64, u64)>) {
        let pc = self.linear_rip();
        match db {
            Some(regs) => run.set_debug(vector::DB, pc, Some(regs)),
            None => {
                self.breakpoint_at = Some(pc);
                run.set_debug(vector::BP, pc, None);
            }
        }
    }
}
