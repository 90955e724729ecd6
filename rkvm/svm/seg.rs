// SPDX-License-Identifier: GPL-2.0

//! Segment registers in the VMCB's format (APM vol. 2, appendix B: a
//! 16-bit selector, 12 attribute bits, a 32-bit limit, a 64-bit base) and
//! their conversion to and from `struct kvm_segment`, with the same
//! normalisation KVM's SVM backend applies, so `KVM_GET_SREGS` answers as
//! it does.
//!
//! Pure logic (only `core`), tested on the host.

use crate::sregs::{SegReg, Segment};

const TYPE_MASK: u16 = 0xf;
const S_SHIFT: u16 = 4;
const DPL_SHIFT: u16 = 5;
const P_SHIFT: u16 = 7;
const AVL_SHIFT: u16 = 8;
const L_SHIFT: u16 = 9;
const DB_SHIFT: u16 = 10;
const G_SHIFT: u16 = 11;

/// `struct vmcb_seg`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VmcbSeg {
    pub(crate) selector: u16,
    pub(crate) attrib: u16,
    pub(crate) limit: u32,
    pub(crate) base: u64,
}

/// The eight segment registers and the CPL, which SVM keeps in the VMCB
/// apart from SS.DPL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SvmSegs {
    pub(crate) segs: [VmcbSeg; 8],
    pub(crate) cpl: u8,
}

fn bit(v: u16, shift: u16) -> u8 {
    ((v >> shift) & 1) as u8
}

impl VmcbSeg {
    const fn new(selector: u16, base: u64, type_: u16, s: u16) -> Self {
        Self {
            selector,
            attrib: type_ | s << S_SHIFT | 1 << P_SHIFT,
            limit: 0xffff,
            base,
        }
    }
}

impl SvmSegs {
    /// After RESET: real-mode data segments (read/write), CS a readable
    /// code segment at `f000:` with base `0xffff0000`, a 16-bit busy TSS
    /// and an LDT, all with 64 KiB limits.
    pub(crate) fn reset() -> Self {
        let data = VmcbSeg::new(0, 0, 0x2, 1);
        let mut segs = [data; 8];
        segs[SegReg::Cs as usize] = VmcbSeg::new(0xf000, 0xffff_0000, 0xa, 1);
        segs[SegReg::Tr as usize] = VmcbSeg::new(0, 0, 0x3, 0);
        segs[SegReg::Ldt as usize] = VmcbSeg::new(0, 0, 0x2, 0);
        Self { segs, cpl: 0 }
    }

    /// Stores `var` into `reg`. A segment marked unusable is stored as not
    /// present (the VMCB has no unusable bit); SS.DPL becomes the CPL.
    pub(crate) fn set(&mut self, reg: SegReg, var: &Segment) {
        let present = var.present & 1 != 0 && var.unusable == 0;
        let attrib = (var.type_ as u16 & TYPE_MASK)
            | (var.s as u16 & 1) << S_SHIFT
            | (var.dpl as u16 & 3) << DPL_SHIFT
            | (present as u16) << P_SHIFT
            | (var.avl as u16 & 1) << AVL_SHIFT
            | (var.l as u16 & 1) << L_SHIFT
            | (var.db as u16 & 1) << DB_SHIFT
            | (var.g as u16 & 1) << G_SHIFT;
        self.segs[reg as usize] = VmcbSeg {
            selector: var.selector,
            attrib,
            limit: var.limit,
            base: var.base,
        };
        if reg == SegReg::Ss {
            self.cpl = var.dpl & 3;
        }
    }

    /// Reads `reg` as KVM reports it: G follows the limit, "unusable" is
    /// "not present", TR always reads busy, usable data segments always
    /// read accessed, an unusable SS has D/B clear, and SS.DPL is the CPL.
    pub(crate) fn get(&self, reg: SegReg) -> Segment {
        Self::read(reg, &self.segs[reg as usize], self.cpl)
    }

    /// [`Self::get`] of one segment as the VMCB holds it, with the CPL.
    pub(crate) fn read(reg: SegReg, s: &VmcbSeg, cpl: u8) -> Segment {
        let present = bit(s.attrib, P_SHIFT);
        let mut var = Segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: (s.attrib & TYPE_MASK) as u8,
            present,
            dpl: ((s.attrib >> DPL_SHIFT) & 3) as u8,
            db: bit(s.attrib, DB_SHIFT),
            s: bit(s.attrib, S_SHIFT),
            l: bit(s.attrib, L_SHIFT),
            g: (s.limit > 0xf_ffff) as u8,
            avl: bit(s.attrib, AVL_SHIFT),
            unusable: (present == 0) as u8,
        };
        match reg {
            SegReg::Tr => var.type_ |= 0x2,
            SegReg::Ds | SegReg::Es | SegReg::Fs | SegReg::Gs if var.unusable == 0 => {
                var.type_ |= 0x1
            }
            SegReg::Ss => {
                if var.unusable != 0 {
                    var.db = 0;
                }
                var.dpl = cpl;
            }
            _ => {}
        }
        var
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reads_as_kvm_amd_reports() {
        // KVM_GET_SREGS of a fresh vCPU on kvm_amd (Linux 7.3).
        let s = SvmSegs::reset();
        let cs = s.get(SegReg::Cs);
        assert_eq!(
            (cs.selector, cs.base, cs.limit, cs.type_, cs.present, cs.s),
            (0xf000, 0xffff_0000, 0xffff, 0xa, 1, 1)
        );
        assert_eq!(s.get(SegReg::Ds).type_, 3);
        assert_eq!(s.get(SegReg::Ss).type_, 2);
        assert_eq!((s.get(SegReg::Tr).type_, s.get(SegReg::Tr).s), (3, 0));
        assert_eq!((s.get(SegReg::Ldt).type_, s.get(SegReg::Ldt).s), (2, 0));
        assert!(SegReg::ALL
            .iter()
            .all(|&r| s.get(r).g == 0 && s.get(r).unusable == 0));
    }

    #[test]
    fn round_trip_and_normalisation() {
        let mut s = SvmSegs::reset();
        let code64 = crate::sregs::tests::FLAT_CODE64;
        s.set(SegReg::Cs, &code64);
        assert_eq!(s.get(SegReg::Cs), code64);
        // G is derived from the limit on reads.
        s.set(SegReg::Cs, &Segment { g: 0, ..code64 });
        assert_eq!(s.get(SegReg::Cs).g, 1);
        // Data segments read accessed; TR reads busy.
        let data = Segment {
            type_: 0x2,
            limit: 0xffff,
            present: 1,
            s: 1,
            ..Default::default()
        };
        s.set(SegReg::Fs, &data);
        assert_eq!(s.get(SegReg::Fs).type_, 3);
        s.set(
            SegReg::Tr,
            &Segment {
                type_: 0x9,
                s: 0,
                ..data
            },
        );
        assert_eq!(s.get(SegReg::Tr).type_, 0xb);
        // Unusable means not present; an unusable data segment keeps its type.
        s.set(
            SegReg::Gs,
            &Segment {
                unusable: 1,
                ..data
            },
        );
        let gs = s.get(SegReg::Gs);
        assert_eq!((gs.present, gs.unusable, gs.type_), (0, 1, 2));
        // SS.DPL is the CPL; an unusable SS reads D/B clear.
        s.set(
            SegReg::Ss,
            &Segment {
                dpl: 3,
                db: 1,
                present: 0,
                ..data
            },
        );
        let ss = s.get(SegReg::Ss);
        assert_eq!((s.cpl, ss.dpl, ss.db, ss.unusable), (3, 3, 0, 1));
    }
}
