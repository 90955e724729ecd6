// SPDX-License-Identifier: GPL-2.0

//! The guest's debug registers: `MOV` to and from DR0-DR7 (always
//! intercepted, as the hardware does not switch DR0-3), their checks and
//! fixed bits as KVM's `kvm_set_dr`/`kvm_get_dr`, and `struct
//! kvm_debugregs` (`KVM_GET_DEBUGREGS`, `KVM_SET_DEBUGREGS`).
//!
//! DR0-3 are loaded into the CPU for the guest only while its DR7 enables
//! a breakpoint (`armed`); DR6 and DR7 go with the backend's guest state
//! (the VMCB; the VMCS's DR7 and, while armed, the CPU's DR6 on VMX).
//!
//! Pure logic (only `core`), tested on the host.

/// Bits of DR6 the guest can change (B0-3, BD, BS, BT, RTM's); the rest
/// read as 1 (`DR6_FIXED_1` with the RTM and bus-lock bits, which rkvm's
/// guests do not have).
pub(crate) const DR6_VOLATILE: u64 = 0x0001_e80f;
pub(crate) const DR6_FIXED: u64 = 0xffff_0ff0;
/// DR6 after RESET.
pub(crate) const DR6_RESET: u64 = 0xffff_0ff0;
/// DR7: bit 10 reads as 1; bits 12, 14 and 15 as 0.
pub(crate) const DR7_VOLATILE: u64 = 0xffff_2bff;
pub(crate) const DR7_FIXED: u64 = 0x400;
/// DR7 after RESET.
pub(crate) const DR7_RESET: u64 = 0x400;
/// DR7's breakpoint enables (L0-3, G0-3).
pub(crate) const DR7_ENABLES: u64 = 0xff;
/// DR7.GD: a MOV DR raises `#DB` first.
pub(crate) const DR7_GD: u64 = 1 << 13;
/// DR6.BD: the `#DB` was general detect.
pub(crate) const DR6_BD: u64 = 1 << 13;

/// What a debug-register number names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dr {
    /// DR0-3: a breakpoint address.
    Address(usize),
    Status,
    Control,
}

/// The register `MOV DRn` names, with CR4.DE `de`: DR4 and DR5 alias DR6
/// and DR7 without it; with it they, and DR8-15, are `#UD` (`None`).
pub(crate) fn resolve(n: u8, de: bool) -> Option<Dr> {
    match n {
        0..=3 => Some(Dr::Address(n as usize)),
        4 if !de => Some(Dr::Status),
        5 if !de => Some(Dr::Control),
        6 => Some(Dr::Status),
        7 => Some(Dr::Control),
        _ => None,
    }
}

/// DR6 as a guest `MOV` leaves it; `None` (`#GP`) with upper bits set.
pub(crate) fn dr6_write(value: u64) -> Option<u64> {
    (value >> 32 == 0).then_some(value & DR6_VOLATILE | DR6_FIXED)
}

/// DR7 as a guest `MOV` leaves it; `None` (`#GP`) with upper bits set.
pub(crate) fn dr7_write(value: u64) -> Option<u64> {
    (value >> 32 == 0).then_some(value & DR7_VOLATILE | DR7_FIXED)
}

/// DR6 after a `#DB` whose exit qualification (VMX) or payload is
/// `payload` (B0-3, BD, BS; RTM's bit 16 active low), as the CPU would
/// have left it had the exception not exited: the breakpoint bits
/// replaced, the others accumulated (KVM's `kvm_deliver_exception_payload`).
pub(crate) fn dr6_after_debug_exception(dr6: u64, payload: u64) -> u64 {
    const ACTIVE_LOW: u64 = DR6_FIXED;
    let mut v = (dr6 & !0xf) | ACTIVE_LOW | payload;
    v ^= payload & ACTIVE_LOW;
    v & !(1 << 12)
}

/// Whether DR7 enables a breakpoint: DR0-3 must be the guest's.
pub(crate) fn armed(dr7: u64) -> bool {
    dr7 & DR7_ENABLES != 0
}

/// Size of `struct kvm_debugregs`.
pub(crate) const DEBUGREGS_SIZE: usize = 128;

/// `struct kvm_debugregs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DebugRegs {
    pub(crate) db: [u64; 4],
    pub(crate) dr6: u64,
    pub(crate) dr7: u64,
}

impl DebugRegs {
    /// The structure `KVM_SET_DEBUGREGS` gives, with KVM's checks: no
    /// flags, no upper bits in DR6 or DR7 (`None`: `EINVAL`). KVM stores
    /// the values as they are, fixed bits or not.
    pub(crate) fn from_bytes(b: &[u8; DEBUGREGS_SIZE]) -> Option<Self> {
        let q = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(w)
        };
        let r = Self {
            db: [q(0), q(1), q(2), q(3)],
            dr6: q(4),
            dr7: q(5),
        };
        (q(6) == 0 && r.dr6 >> 32 == 0 && r.dr7 >> 32 == 0).then_some(r)
    }

    /// The structure `KVM_GET_DEBUGREGS` returns (no flags).
    pub(crate) fn to_bytes(&self) -> [u8; DEBUGREGS_SIZE] {
        let mut b = [0u8; DEBUGREGS_SIZE];
        let words = [self.db[0], self.db[1], self.db[2], self.db[3], self.dr6, self.dr7];
        for (i, w) in words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_aliases_and_refuses() {
        assert_eq!(resolve(2, false), Some(Dr::Address(2)));
        assert_eq!(resolve(4, false), Some(Dr::Status));
        assert_eq!(resolve(5, false), Some(Dr::Control));
        assert_eq!(resolve(4, true), None);
        assert_eq!(resolve(5, true), None);
        assert_eq!(resolve(6, true), Some(Dr::Status));
        assert_eq!(resolve(7, true), Some(Dr::Control));
        assert_eq!(resolve(8, false), None);
    }

    #[test]
    fn writes_keep_fixed_bits() {
        assert_eq!(dr6_write(0), Some(0xffff_0ff0));
        // Bit 12 reads as 0.
        assert_eq!(dr6_write(0xffff_ffff), Some(0xffff_efff));
        assert_eq!(dr6_write(1 << 32), None);
        assert_eq!(dr7_write(0), Some(0x400));
        assert_eq!(dr7_write(0x0009_0001), Some(0x0009_0401));
        // Bits 12, 14 and 15 read as 0.
        assert_eq!(dr7_write(0xd000), Some(0x400));
        assert_eq!(dr7_write(1 << 40), None);
        assert!(armed(0x401) && !armed(0x400) && !armed(DR7_GD | 0x400));
        // A single step, then B1 with the old B0 replaced; RTM (bit 16)
        // is active low.
        let bs = dr6_after_debug_exception(DR6_RESET, 1 << 14);
        assert_eq!(bs, 0xffff_4ff0);
        assert_eq!(dr6_after_debug_exception(bs | 1, 2), 0xffff_4ff2);
        assert_eq!(dr6_after_debug_exception(DR6_RESET, 1 << 16), 0xfffe_0ff0);
    }

    #[test]
    fn debugregs_layout_and_checks() {
        let r = DebugRegs {
            db: [1, 2, 3, 4],
            dr6: 0xffff_0ff1,
            dr7: 0x401,
        };
        let b = r.to_bytes();
        assert_eq!(DebugRegs::from_bytes(&b), Some(r));
        assert_eq!(&b[32..40], &0xffff_0ff1u64.to_ne_bytes());
        let mut bad = b;
        bad[48] = 1;
        assert_eq!(DebugRegs::from_bytes(&bad), None, "flags");
        let mut bad = b;
        bad[36] = 1;
        assert_eq!(DebugRegs::from_bytes(&bad), None, "DR6 upper half");
        let mut bad = b;
        bad[44] = 1;
        assert_eq!(DebugRegs::from_bytes(&bad), None, "DR7 upper half");
    }
}
