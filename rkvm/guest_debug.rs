// SPDX-License-Identifier: GPL-2.0

//! `KVM_SET_GUEST_DEBUG`: the VMM's debugger (QEMU's gdbstub) single-steps
//! the guest and sets software and hardware breakpoints on it, each
//! reported as `KVM_EXIT_DEBUG`.
//!
//! Single-stepping sets RFLAGS.TF for the guest, hidden from the VMM's
//! view of the registers (as KVM). The hardware traps after instructions
//! the guest ran; an instruction the kernel completes for it (CPUID, an
//! MSR, port or MMIO I/O, ...) traps in software, whoever set the TF:
//! `KVM_CAP_X86_ROBUST_SINGLESTEP`. With the debugger's step that is a
//! `KVM_EXIT_DEBUG`; with the guest's own TF, a `#DB` with DR6.BS, as the
//! hardware would have raised.
//!
//! Pure logic (only `core`), tested on the host.

use crate::{abi::field, debugreg};

/// `struct kvm_guest_debug`: `control`, a pad word, `debugreg[8]`.
pub(crate) const SIZE: usize = crate::abi::vcpu::GUEST_DEBUG_SIZE;

/// `kvm_guest_debug.control` bits.
pub(crate) use crate::abi::guestdbg as control;

/// DR6 of a single-step trap: BS, and the bits that read as 1.
pub(crate) const DR6_STEP: u64 = debugreg::DR6_FIXED | crate::arch::dr6::BS;

/// The debugger's settings for one vCPU.
///
/// # Invariants
///
/// `control` holds only bits of `control::VALID` other than the one-shot
/// injections, and is 0 unless `ENABLE` is set; `dr7` is a DR7 the
/// hardware accepts (`debugreg::dr7_write`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestDebug {
    control: u32,
    /// DR0-3 for `USE_HW_BP`.
    addr: [u64; 4],
    dr7: u64,
}

/// A `KVM_SET_GUEST_DEBUG` call: the settings to keep and the exception
/// to queue for the guest, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) debug: GuestDebug,
    /// `#DB` or `#BP` (`INJECT_DB` wins if both are set, as KVM).
    pub(crate) inject: Option<u8>,
}

impl Request {
    /// Decodes `struct kvm_guest_debug`. Bits KVM does not define are
    /// ignored, as KVM does; without `ENABLE` debugging is off.
    pub(crate) fn from_bytes(b: &[u8; SIZE]) -> Self {
        let raw = u32::from_ne_bytes(field(b, 0));
        let reg = |i: usize| u64::from_ne_bytes(field(b, 8 + 8 * i));
        let inject = if raw & control::INJECT_DB != 0 {
            Some(crate::arch::vector::DB)
        } else if raw & control::INJECT_BP != 0 {
            Some(crate::arch::vector::BP)
        } else {
            None
        };
        let kept = control::VALID & !(control::INJECT_DB | control::INJECT_BP);
        // INVARIANT: valid bits only, 0 without ENABLE; DR7 as a MOV to
        // DR7 would leave it (the upper half would fail the entry).
        let debug = GuestDebug {
            control: if raw & control::ENABLE != 0 { raw & kept } else { 0 },
            addr: [reg(0), reg(1), reg(2), reg(3)],
            dr7: debugreg::dr7_write(reg(7) & 0xffff_ffff).unwrap_or(debugreg::DR7_RESET),
        };
        Request { debug, inject }
    }
}

impl GuestDebug {
    fn has(&self, bit: u32) -> bool {
        self.control & bit != 0
    }

    /// The debugger single-steps the guest.
    pub(crate) fn single_step(&self) -> bool {
        self.has(control::SINGLESTEP)
    }

    /// INT3 exits to the debugger.
    pub(crate) fn sw_breakpoints(&self) -> bool {
        self.has(control::USE_SW_BP)
    }

    /// The debugger's DR0-3 and DR7, which replace the guest's while set.
    pub(crate) fn hw_breakpoints(&self) -> Option<(&[u64; 4], u64)> {
        self.has(control::USE_HW_BP).then_some((&self.addr, self.dr7))
    }

    /// Every `#DB` exits to the debugger (KVM's rule: with a step or
    /// hardware breakpoints of its own, the debugger gets them all).
    pub(crate) fn intercept_db(&self) -> bool {
        self.has(control::SINGLESTEP) || self.has(control::USE_HW_BP)
    }

    /// No interrupt goes into the guest.
    pub(crate) fn block_irq(&self) -> bool {
        self.has(control::BLOCKIRQ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(control: u32, regs: [u64; 8]) -> Request {
        let mut b = [0u8; SIZE];
        b[..4].copy_from_slice(&control.to_ne_bytes());
        for (i, r) in regs.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&r.to_ne_bytes());
        }
        Request::from_bytes(&b)
    }

    #[test]
    fn without_enable_debugging_is_off() {
        let r = request(control::SINGLESTEP | control::USE_SW_BP, [0; 8]);
        assert_eq!(r.debug.control, 0);
        assert!(!r.debug.single_step() && !r.debug.intercept_db());
    }

    #[test]
    fn injections_are_one_shot_and_db_wins() {
        let r = request(control::INJECT_BP, [0; 8]);
        assert_eq!(r.inject, Some(3));
        assert_eq!(r.debug.control, 0);
        let r = request(control::ENABLE | control::INJECT_DB | control::INJECT_BP, [0; 8]);
        assert_eq!(r.inject, Some(1));
        assert_eq!(r.debug.control, control::ENABLE);
    }

    #[test]
    fn unknown_bits_are_dropped() {
        let r = request(control::ENABLE | control::SINGLESTEP | 1 << 30 | 1 << 5, [0; 8]);
        assert_eq!(r.debug.control, control::ENABLE | control::SINGLESTEP);
        assert!(r.debug.single_step() && r.debug.intercept_db());
        assert!(!r.debug.sw_breakpoints() && !r.debug.block_irq());
    }

    #[test]
    fn hardware_breakpoints_take_the_debuggers_registers() {
        let regs = [0x1000, 0x2000, 0x3000, 0x4000, 0, 0, 0, 0xdead_0000_0000_0001];
        let r = request(control::ENABLE | control::USE_HW_BP, regs);
        let (addr, dr7) = r.debug.hw_breakpoints().unwrap();
        assert_eq!(addr, &[0x1000, 0x2000, 0x3000, 0x4000]);
        // The upper half is dropped, bit 10 reads as 1.
        assert_eq!(dr7, 0x401);
        assert!(r.debug.intercept_db() && !r.debug.single_step());
        let r = request(control::ENABLE | control::USE_SW_BP | control::BLOCKIRQ, regs);
        assert!(r.debug.hw_breakpoints().is_none() && !r.debug.intercept_db());
        assert!(r.debug.sw_breakpoints() && r.debug.block_irq());
    }

    #[test]
    fn step_dr6() {
        assert_eq!(DR6_STEP, 0xffff_4ff0);
    }
}
