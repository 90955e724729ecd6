// SPDX-License-Identifier: GPL-2.0

//! Segment registers in the VMCS's format (SDM vol. 3C, 25.4.1: selector,
//! base, limit and 32-bit access rights, bit 16 = unusable) and their
//! conversion to and from `struct kvm_segment`, with the same normalisation
//! KVM's VMX backend applies, so `KVM_GET_SREGS` answers as it does.
//!
//! rkvm requires unrestricted guest, so real mode needs no vm86 emulation.
//!
//! Pure logic (only `core`), tested on the host.

use crate::sregs::{SegReg, Segment};

const AR_UNUSABLE: u32 = 1 << 16;

/// A segment register's VMCS fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VmxSeg {
    pub(crate) selector: u16,
    pub(crate) ar: u32,
    pub(crate) limit: u32,
    pub(crate) base: u64,
}

/// The eight segment registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmxSegs {
    pub(crate) segs: [VmxSeg; 8],
}

fn bit(ar: u32, shift: u32) -> u8 {
    ((ar >> shift) & 1) as u8
}

impl VmxSegs {
    /// After RESET: present, accessed read/write data segments, CS an
    /// accessed readable code segment at `f000:` with base `0xffff0000`, a
    /// 32-bit busy TSS and an LDT, all with 64 KiB limits.
    pub(crate) fn reset() -> Self {
        let seg = |selector, base, ar| VmxSeg {
            selector,
            ar,
            limit: 0xffff,
            base,
        };
        let mut segs = [seg(0, 0, 0x93); 8];
        segs[SegReg::Cs as usize] = seg(0xf000, 0xffff_0000, 0x9b);
        segs[SegReg::Tr as usize] = seg(0, 0, 0x8b);
        segs[SegReg::Ldt as usize] = seg(0, 0, 0x82);
        Self { segs }
    }

    /// Stores `var` into `reg`. A segment that is unusable or not present
    /// is stored as unusable; every segment but the LDT is stored accessed
    /// (VM entry with unrestricted guest requires it).
    pub(crate) fn set(&mut self, reg: SegReg, var: &Segment) {
        let mut type_ = var.type_ as u32 & 0xf;
        if reg != SegReg::Ldt {
            type_ |= 1;
        }
        let ar = type_
            | (var.s as u32 & 1) << 4
            | (var.dpl as u32 & 3) << 5
            | (var.present as u32 & 1) << 7
            | (var.avl as u32 & 1) << 12
            | (var.l as u32 & 1) << 13
            | (var.db as u32 & 1) << 14
            | (var.g as u32 & 1) << 15
            | if var.unusable != 0 || var.present == 0 {
                AR_UNUSABLE
            } else {
                0
            };
        self.segs[reg as usize] = VmxSeg {
            selector: var.selector,
            ar,
            limit: var.limit,
            base: var.base,
        };
    }

    /// Reads `reg` as KVM reports it: "present" is "not unusable".
    pub(crate) fn get(&self, reg: SegReg) -> Segment {
        let s = &self.segs[reg as usize];
        let unusable = bit(s.ar, 16);
        Segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: (s.ar & 0xf) as u8,
            present: (unusable == 0) as u8,
            dpl: ((s.ar >> 5) & 3) as u8,
            db: bit(s.ar, 14),
            s: bit(s.ar, 4),
            l: bit(s.ar, 13),
            g: bit(s.ar, 15),
            avl: bit(s.ar, 12),
            unusable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reads_as_kvm_intel_reports() {
        let s = VmxSegs::reset();
        let cs = s.get(SegReg::Cs);
        assert_eq!(
            (cs.selector, cs.base, cs.limit, cs.type_, cs.present, cs.s),
            (0xf000, 0xffff_0000, 0xffff, 0xb, 1, 1)
        );
        assert_eq!((s.get(SegReg::Ss).type_, s.get(SegReg::Ds).type_), (3, 3));
        assert_eq!((s.get(SegReg::Tr).type_, s.get(SegReg::Tr).s), (0xb, 0));
        assert_eq!((s.get(SegReg::Ldt).type_, s.get(SegReg::Ldt).s), (2, 0));
    }

    #[test]
    fn round_trip_and_normalisation() {
        let mut s = VmxSegs::reset();
        let code64 = crate::sregs::tests::FLAT_CODE64;
        s.set(SegReg::Cs, &code64);
        assert_eq!(s.get(SegReg::Cs), code64);
        // The accessed bit is forced on, except for the LDT.
        let data = Segment {
            type_: 0x2,
            limit: 0xffff,
            present: 1,
            s: 1,
            ..Default::default()
        };
        s.set(SegReg::Ds, &data);
        assert_eq!(s.get(SegReg::Ds).type_, 3);
        s.set(SegReg::Ldt, &Segment { s: 0, ..data });
        assert_eq!(s.get(SegReg::Ldt).type_, 2);
        // Not present means unusable, and the rest of the attributes stay.
        s.set(SegReg::Gs, &Segment { present: 0, ..data });
        let gs = s.get(SegReg::Gs);
        assert_eq!((gs.present, gs.unusable, gs.type_, gs.s), (0, 1, 3, 1));
        assert_eq!(s.segs[SegReg::Gs as usize].ar, 0x1_0013);
    }
}
