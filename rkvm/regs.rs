// SPDX-License-Identifier: GPL-2.0

//! vCPU general-purpose register state as the KVM ABI sees it:
//! `struct kvm_regs` and its reset value.
//!
//! (The segment and control registers of `struct kvm_sregs` are kept in
//! each backend's own format, VMCB or VMCS, and KVM reports their reset
//! values differently per vendor; they arrive with the backends.)
//!
//! Pure logic (only `core`), tested on the host.

use crate::abi::field;

/// Size of `struct kvm_regs`.
pub(crate) const REGS_SIZE: usize = 18 * 8;

/// `RFLAGS` bit 1 reads as 1 on every x86 CPU.
const RFLAGS_FIXED: u64 = crate::arch::rflags::FIXED;

/// `struct kvm_regs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Regs {
    /// RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP, R8..R15, in that order.
    pub(crate) gprs: [u64; 16],
    /// RIP.
    pub(crate) rip: u64,
    /// RFLAGS.
    pub(crate) rflags: u64,
}

const RDX: usize = 3;

impl Regs {
    /// Decodes `struct kvm_regs`.
    pub(crate) fn from_bytes(b: &[u8; REGS_SIZE]) -> Self {
        let word = |i: usize| u64::from_ne_bytes(field(b, i * 8));
        Self {
            gprs: core::array::from_fn(word),
            rip: word(16),
            rflags: word(17),
        }
    }

    /// Encodes `struct kvm_regs`.
    pub(crate) fn to_bytes(&self) -> [u8; REGS_SIZE] {
        let mut b = [0u8; REGS_SIZE];
        let words = self.gprs.iter().chain([&self.rip, &self.rflags]);
        for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    /// `kvm_regs` index of each register in x86 encoding order (RAX, RCX,
    /// RDX, RBX, RSP, RBP, RSI, RDI, R8..R15), the order instructions name
    /// them and the world switch stores them in.
    const X86_ORDER: [usize; 16] = [0, 2, 3, 1, 6, 7, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15];

    /// The general-purpose registers in x86 encoding order.
    pub(crate) fn gprs_x86(&self) -> [u64; 16] {
        core::array::from_fn(|i| self.gprs[Self::X86_ORDER[i]])
    }

    /// Sets the general-purpose registers from x86 encoding order.
    pub(crate) fn set_gprs_x86(&mut self, x86: &[u64; 16]) {
        for (i, &v) in x86.iter().enumerate() {
            self.gprs[Self::X86_ORDER[i]] = v;
        }
    }

    /// What `KVM_SET_REGS` stores: RFLAGS bit 1 is forced on, as in KVM.
    pub(crate) fn sanitized(mut self) -> Self {
        self.rflags |= RFLAGS_FIXED;
        self
    }

    /// The general-purpose registers after RESET, as KVM reports them for
    /// a vCPU that has not run: `RIP = 0xfff0` (with CS base `0xffff0000`,
    /// the reset vector), RDX the family/model/stepping KVM uses for a
    /// guest without CPUID (0x600), everything else 0.
    pub(crate) fn reset() -> Self {
        let mut regs = Self {
            rip: 0xfff0,
            rflags: RFLAGS_FIXED,
            ..Default::default()
        };
        regs.gprs[RDX] = 0x600;
        regs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_order() {
        let mut r = Regs::default();
        for (i, g) in r.gprs.iter_mut().enumerate() {
            *g = i as u64;
        }
        // kvm_regs: rax rbx rcx rdx rsi rdi rsp rbp; x86: rax rcx rdx rbx rsp rbp rsi rdi.
        let x = r.gprs_x86();
        assert_eq!(&x[..8], &[0, 2, 3, 1, 6, 7, 4, 5]);
        let mut back = Regs::default();
        back.set_gprs_x86(&x);
        assert_eq!(back.gprs, r.gprs);
    }

    #[test]
    fn size_matches_the_uapi() {
        assert_eq!(REGS_SIZE, 144);
    }

    #[test]
    fn regs_round_trip_and_rflags_bit_1() {
        let mut r = Regs::default();
        for (i, g) in r.gprs.iter_mut().enumerate() {
            *g = 0x0101_0101_0101_0101 * (i as u64 + 1);
        }
        r.rip = 0xdead_beef;
        r.rflags = 0x246;
        let b = r.to_bytes();
        assert_eq!(&b[0..8], &0x0101_0101_0101_0101u64.to_ne_bytes());
        assert_eq!(&b[24..32], &0x0404_0404_0404_0404u64.to_ne_bytes());
        assert_eq!(&b[128..136], &0xdead_beefu64.to_ne_bytes());
        assert_eq!(&b[136..144], &0x246u64.to_ne_bytes());
        assert_eq!(Regs::from_bytes(&b), r);
        assert_eq!(Regs { rflags: 0, ..r }.sanitized().rflags, 2);
    }

    #[test]
    fn reset_is_kvms() {
        let r = Regs::reset();
        assert_eq!((r.rip, r.rflags, r.gprs[RDX]), (0xfff0, 2, 0x600));
        assert!(r.gprs.iter().enumerate().all(|(i, &g)| i == RDX || g == 0));
    }
}
