// SPDX-License-Identifier: GPL-2.0

//! vCPU segment and control registers as the KVM ABI sees them:
//! `struct kvm_sregs`, and the checks `KVM_SET_SREGS` applies.
//!
//! The segments themselves are stored in each backend's format (its
//! `seg.rs`), because KVM reports them through that format and the two
//! backends normalise them differently.
//!
//! Pure logic (only `core`), tested on the host.

/// Size of `struct kvm_sregs`.
pub(crate) const SREGS_SIZE: usize = 8 * SEGMENT_SIZE + 2 * DTABLE_SIZE + 7 * 8 + 4 * 8;
const SEGMENT_SIZE: usize = 24;
const DTABLE_SIZE: usize = 16;

use crate::arch::{cr0, cr4, efer};


const APIC_BASE_DEFAULT: u64 = 0xfee0_0000;
const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// Guest physical address width KVM assumes when the guest CPUID has no
/// leaf 0x8000_0008.
const DEFAULT_GUEST_PHYS_BITS: u32 = 36;

/// Index of each segment register in [`Sregs::segs`], in the ABI's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegReg {
    Cs = 0,
    Ds,
    Es,
    Fs,
    Gs,
    Ss,
    Tr,
    Ldt,
}

impl SegReg {
    /// All of them, in the ABI's order.
    pub(crate) const ALL: [SegReg; 8] = [
        Self::Cs,
        Self::Ds,
        Self::Es,
        Self::Fs,
        Self::Gs,
        Self::Ss,
        Self::Tr,
        Self::Ldt,
    ];
}

/// What the guest's CPUID offers, as far as register checks care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestFeatures {
    /// Long mode (EFER.LME/LMA).
    pub(crate) lm: bool,
    /// No-execute (EFER.NX).
    pub(crate) nx: bool,
    /// x2APIC (APIC_BASE bit 10).
    pub(crate) x2apic: bool,
    /// Physical address width; 0 means KVM's default of 36 bits.
    pub(crate) phys_bits: u32,
    /// XSAVE (CR4.OSXSAVE).
    pub(crate) xsave: bool,
    /// PCID (CR4.PCIDE).
    pub(crate) pcid: bool,
    /// FSGSBASE, SMEP, SMAP (leaf 7 EBX), UMIP, PKU, LA57 (leaf 7 ECX).
    pub(crate) fsgsbase: bool,
    pub(crate) smep: bool,
    pub(crate) smap: bool,
    pub(crate) umip: bool,
    pub(crate) pku: bool,
    pub(crate) la57: bool,
    /// RDTSCP and with it `TSC_AUX` (leaf 0x8000_0001 EDX).
    pub(crate) rdtscp: bool,
    /// `IA32_TSC_ADJUST` (leaf 7 EBX).
    pub(crate) tsc_adjust: bool,
    /// The vendor is Intel or one compatible with it (Centaur, Zhaoxin):
    /// where KVM follows Intel's rules over AMD's. Not a feature: the
    /// guest table's own.
    pub(crate) intel_compatible: bool,
}

impl GuestFeatures {
    fn phys_bits(&self) -> u32 {
        if self.phys_bits == 0 {
            DEFAULT_GUEST_PHYS_BITS
        } else {
            self.phys_bits
        }
    }

    /// Bits at and above the guest's MAXPHYADDR.
    pub(crate) fn reserved_gpa_bits(&self) -> u64 {
        !0u64 << self.phys_bits()
    }

    /// The CR4 bits this guest may set: the base bits, and each feature
    /// bit only when the guest CPUID offers the feature (KVM's
    /// `__cr4_reserved_bits`). VMXE and SMXE never: rkvm offers neither
    /// nested VMX nor SMX.
    pub(crate) fn cr4_allowed(&self) -> u64 {
        let mut allowed = cr4::BASE;
        for (has, bit) in [
            (self.xsave, cr4::OSXSAVE),
            (self.pcid, cr4::PCIDE),
            (self.fsgsbase, cr4::FSGSBASE),
            (self.smep, cr4::SMEP),
            (self.smap, cr4::SMAP),
            (self.umip, cr4::UMIP),
            (self.pku, cr4::PKE),
            (self.la57, cr4::LA57),
        ] {
            if has {
                allowed |= bit;
            }
        }
        allowed
    }

    /// The features both `self` and `other` offer.
    pub(crate) fn intersect(&self, other: &Self) -> Self {
        Self {
            lm: self.lm && other.lm,
            nx: self.nx && other.nx,
            x2apic: self.x2apic && other.x2apic,
            phys_bits: self.phys_bits,
            xsave: self.xsave && other.xsave,
            pcid: self.pcid && other.pcid,
            fsgsbase: self.fsgsbase && other.fsgsbase,
            smep: self.smep && other.smep,
            smap: self.smap && other.smap,
            umip: self.umip && other.umip,
            pku: self.pku && other.pku,
            la57: self.la57 && other.la57,
            rdtscp: self.rdtscp && other.rdtscp,
            tsc_adjust: self.tsc_adjust && other.tsc_adjust,
            intel_compatible: self.intel_compatible,
        }
    }

    /// The features a CPUID table offers; `lookup(leaf, subleaf)` answers
    /// from it.
    pub(crate) fn from_cpuid(lookup: impl Fn(u32, u32) -> [u32; 4]) -> Self {
        let leaf1 = lookup(1, 0);
        let leaf7 = lookup(7, 0);
        let ext = lookup(0x8000_0001, 0);
        let bit = |r: u32, n: u32| r & (1 << n) != 0;
        Self {
            lm: bit(ext[3], 29),
            nx: bit(ext[3], 20),
            x2apic: bit(leaf1[2], 21),
            phys_bits: lookup(0x8000_0008, 0)[0] & 0xff,
            xsave: bit(leaf1[2], 26),
            pcid: bit(leaf1[2], 17),
            fsgsbase: bit(leaf7[1], 0),
            smep: bit(leaf7[1], 7),
            smap: bit(leaf7[1], 20),
            umip: bit(leaf7[2], 2),
            pku: bit(leaf7[2], 3),
            la57: bit(leaf7[2], 16),
            rdtscp: bit(ext[3], 27),
            tsc_adjust: bit(leaf7[1], 1),
            // Leaf 0 EBX: "Genu"ineIntel, "Cent"aurHauls, "  Sh"anghai.
            intel_compatible: matches!(lookup(0, 0)[1], 0x756e_6547 | 0x746e_6543 | 0x6853_2020),
        }
    }
}

/// Whether a guest `MOV` to CR4 of `new` is allowed (else `#GP`), with the
/// current CR3/CR4/EFER: the bits must be offered, long mode keeps PAE and
/// LA57, and PCIDE is set only in long mode with CR3[11:0] clear (SDM
/// vol. 3, 2.5 and 4.10.1; KVM's `kvm_set_cr4`).
pub(crate) fn cr4_write_is_valid(
    new: u64,
    old: u64,
    cr3: u64,
    efer_val: u64,
    features: &GuestFeatures,
) -> bool {
    if new & !features.cr4_allowed() != 0 {
        return false;
    }
    let long_mode = efer_val & efer::LMA != 0;
    if long_mode && (new & cr4::PAE == 0 || (new ^ old) & cr4::LA57 != 0) {
        return false;
    }
    if new & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (!long_mode || cr3 & 0xfff != 0) {
        return false;
    }
    true
}

/// A guest `MOV` to CR0 of `new` with the current CR0, CR4, EFER and
/// CS.L, with KVM's checks (`kvm_set_cr0`): the EFER it leaves (LMA follows
/// PG while LME is set), or `None` if it is refused (`#GP`): reserved bits,
/// NW without CD, PG without PE, enabling long-mode paging without PAE or
/// from a 64-bit code segment, and disabling paging with PCIDE set.
pub(crate) fn cr0_write(new: u64, old: u64, cr4_val: u64, efer_val: u64, cs_l: bool) -> Option<u64> {
    if !cr0_is_valid(new) {
        return None;
    }
    let mut efer_val = efer_val;
    let (was_paging, paging) = (old & cr0::PG != 0, new & cr0::PG != 0);
    if paging && !was_paging && efer_val & efer::LME != 0 {
        if cr4_val & cr4::PAE == 0 || cs_l {
            return None;
        }
        efer_val |= efer::LMA;
    }
    if !paging && was_paging {
        if cr4_val & cr4::PCIDE != 0 {
            return None;
        }
        efer_val &= !efer::LMA;
    }
    Some(efer_val)
}

/// Whether the guest pages with PAE outside long mode, where four PDPTEs
/// are loaded from CR3 when the mode changes (SDM vol. 3, 4.4.1).
pub(crate) fn is_pae_paging(cr0_val: u64, cr4_val: u64, efer_val: u64) -> bool {
    cr0_val & cr0::PG != 0 && cr4_val & cr4::PAE != 0 && efer_val & efer::LMA == 0
}

/// Whether a present PDPTE has none of its reserved bits set (bits 2:1,
/// 8:5 and those above the physical-address width `maxphyaddr`).
pub(crate) fn pdpte_is_valid(pdpte: u64, maxphyaddr: u8) -> bool {
    const RESERVED_LOW: u64 = 0x1e6;
    let reserved_high = !0u64 << maxphyaddr.min(63);
    pdpte & 1 == 0 || pdpte & (RESERVED_LOW | reserved_high) == 0
}

/// Whether changing CR0 from `old` to `new` must flush the guest's TLB, as
/// a hardware MOV to CR0 that toggles paging or write protection would.
pub(crate) fn cr0_change_flushes_tlb(old: u64, new: u64) -> bool {
    (old ^ new) & (cr0::PG | cr0::WP | cr0::PE) != 0
}

/// Whether changing CR4 from `old` to `new` must flush the guest's TLB:
/// toggling PGE, or clearing PCIDE, flushes on hardware (SDM vol. 3,
/// 4.10.4.1), and an intercepted MOV to CR4 did not reach the hardware.
pub(crate) fn cr4_change_flushes_tlb(old: u64, new: u64) -> bool {
    (old ^ new) & (cr4::PGE | cr4::PAE | cr4::PSE | cr4::SMEP) != 0
        || (old & cr4::PCIDE != 0 && new & cr4::PCIDE == 0)
}

/// `struct kvm_segment`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) limit: u32,
    pub(crate) selector: u16,
    pub(crate) type_: u8,
    pub(crate) present: u8,
    pub(crate) dpl: u8,
    pub(crate) db: u8,
    pub(crate) s: u8,
    pub(crate) l: u8,
    pub(crate) g: u8,
    pub(crate) avl: u8,
    pub(crate) unusable: u8,
}

/// `struct kvm_dtable`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DTable {
    pub(crate) base: u64,
    pub(crate) limit: u16,
}

/// `struct kvm_sregs`, with the interrupt bitmap reduced to what it can
/// carry: at most one pending external interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sregs {
    /// CS, DS, ES, FS, GS, SS, TR, LDT, in that order.
    pub(crate) segs: [Segment; 8],
    pub(crate) gdt: DTable,
    pub(crate) idt: DTable,
    pub(crate) cr0: u64,
    pub(crate) cr2: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) cr8: u64,
    pub(crate) efer: u64,
    pub(crate) apic_base: u64,
    /// The lowest vector set in `interrupt_bitmap`, queued for injection.
    pub(crate) pending_irq: Option<u8>,
}

const CS: usize = SegReg::Cs as usize;

/// Little cursor over a byte buffer in the layout of a C struct.
struct Reader<'a>(&'a [u8], usize);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let v = crate::abi::field(self.0, self.1);
        self.1 += N;
        v
    }
    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }
    fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.take())
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
}

struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        self.0[self.1..self.1 + b.len()].copy_from_slice(b);
        self.1 += b.len();
    }
}

impl Segment {
    fn read(r: &mut Reader<'_>) -> Self {
        let s = Self {
            base: r.u64(),
            limit: r.u32(),
            selector: r.u16(),
            type_: r.u8(),
            present: r.u8(),
            dpl: r.u8(),
            db: r.u8(),
            s: r.u8(),
            l: r.u8(),
            g: r.u8(),
            avl: r.u8(),
            unusable: r.u8(),
        };
        r.u8(); // padding
        s
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.base.to_ne_bytes());
        w.put(&self.limit.to_ne_bytes());
        w.put(&self.selector.to_ne_bytes());
        w.put(&[
            self.type_,
            self.present,
            self.dpl,
            self.db,
            self.s,
            self.l,
            self.g,
            self.avl,
            self.unusable,
            0,
        ]);
    }
}

impl DTable {
    fn read(r: &mut Reader<'_>) -> Self {
        let t = Self {
            base: r.u64(),
            limit: r.u16(),
        };
        r.take::<6>(); // padding[3]
        t
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.put(&self.base.to_ne_bytes());
        w.put(&self.limit.to_ne_bytes());
        w.put(&[0; 6]);
    }
}

impl Sregs {
    /// Decodes `struct kvm_sregs`.
    pub(crate) fn from_bytes(b: &[u8; SREGS_SIZE]) -> Self {
        let mut r = Reader(b, 0);
        let mut segs = [Segment::default(); 8];
        for s in &mut segs {
            *s = Segment::read(&mut r);
        }
        let gdt = DTable::read(&mut r);
        let idt = DTable::read(&mut r);
        let [cr0, cr2, cr3, cr4, cr8, efer, apic_base] = [(); 7].map(|()| r.u64());
        let bitmap = [(); 4].map(|()| r.u64());
        let pending_irq = bitmap
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| (i as u32 * 64 + w.trailing_zeros()) as u8);
        Self {
            segs,
            gdt,
            idt,
            cr0,
            cr2,
            cr3,
            cr4,
            cr8,
            efer,
            apic_base,
            pending_irq,
        }
    }

    /// Encodes `struct kvm_sregs`.
    pub(crate) fn to_bytes(&self) -> [u8; SREGS_SIZE] {
        let mut b = [0u8; SREGS_SIZE];
        let mut w = Writer(&mut b, 0);
        for s in &self.segs {
            s.write(&mut w);
        }
        self.gdt.write(&mut w);
        self.idt.write(&mut w);
        for v in [
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.cr8,
            self.efer,
            self.apic_base,
        ] {
            w.put(&v.to_ne_bytes());
        }
        let mut bitmap = [0u64; 4];
        if let Some(v) = self.pending_irq {
            bitmap[v as usize / 64] |= 1 << (v % 64);
        }
        for word in bitmap {
            w.put(&word.to_ne_bytes());
        }
        b
    }

    /// Whether `KVM_SET_SREGS` accepts these values for a guest with
    /// `features` whose APIC base is `old_apic_base` (KVM's
    /// `kvm_is_valid_sregs` and `kvm_apic_set_base` checks).
    pub(crate) fn is_valid(&self, features: &GuestFeatures, old_apic_base: u64) -> bool {
        let long_mode = self.efer & efer::LME != 0 && self.cr0 & cr0::PG != 0;
        if long_mode {
            if self.cr4 & cr4::PAE == 0 || self.efer & efer::LMA == 0 {
                return false;
            }
            if self.cr3 & features.reserved_gpa_bits() != 0 {
                return false;
            }
        } else if self.efer & efer::LMA != 0 || self.segs[CS].l != 0 {
            return false;
        }
        cr0_is_valid(self.cr0)
            && self.cr4 & !features.cr4_allowed() == 0
            && efer_is_valid(self.efer, features)
            // An unchanged APIC base is accepted as it is, as in KVM.
            && (self.apic_base == old_apic_base || apic_base_is_valid(self.apic_base, features))
    }
}

fn cr0_is_valid(cr0: u64) -> bool {
    cr0 >> 32 == 0
        && !(cr0 & cr0::NW != 0 && cr0 & cr0::CD == 0)
        && !(cr0 & cr0::PG != 0 && cr0 & cr0::PE == 0)
}

fn efer_is_valid(efer: u64, f: &GuestFeatures) -> bool {
    let mut allowed = efer::SCE;
    if f.lm {
        allowed |= efer::LME | efer::LMA;
    }
    if f.nx {
        allowed |= efer::NXE;
    }
    efer & !allowed == 0
}

fn apic_base_is_valid(apic_base: u64, f: &GuestFeatures) -> bool {
    let mut reserved = f.reserved_gpa_bits() | 0x2ff;
    if !f.x2apic {
        reserved |= APIC_BASE_X2APIC;
    }
    // x2APIC mode without the xAPIC enable bit is not a valid state.
    let x2apic_without_enable =
        apic_base & APIC_BASE_X2APIC != 0 && apic_base & APIC_BASE_ENABLE == 0;
    apic_base & reserved == 0 && !x2apic_without_enable
}

/// The control registers and descriptor tables after RESET; the segments
/// are reset by the backends. vCPU 0 is the bootstrap processor.
pub(crate) fn reset(is_bsp: bool) -> Sregs {
    Sregs {
        gdt: DTable {
            base: 0,
            limit: 0xffff,
        },
        idt: DTable {
            base: 0,
            limit: 0xffff,
        },
        cr0: cr0::CD | cr0::NW | cr0::ET,
        apic_base: APIC_BASE_DEFAULT | APIC_BASE_ENABLE | if is_bsp { APIC_BASE_BSP } else { 0 },
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A flat 64-bit code segment, which every backend stores unchanged.
    pub(crate) const FLAT_CODE64: Segment = Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
    };

    #[test]
    fn cr0_writes() {
        let (pe, pg, cd, nw) = (cr0::PE, cr0::PG, cr0::CD, cr0::NW);
        let pae = cr4::PAE;
        // Entering long mode sets LMA; leaving it clears LMA.
        let lme = efer::LME;
        assert_eq!(cr0_write(pe | pg, pe, pae, lme, false), Some(lme | efer::LMA));
        assert_eq!(cr0_write(pe, pe | pg, pae, lme | efer::LMA, false), Some(lme));
        // Without LME, paging leaves EFER alone.
        assert_eq!(cr0_write(pe | pg, pe, 0, 0, false), Some(0));
        // Refused: long-mode paging without PAE or from a 64-bit CS, PG
        // without PE, NW without CD, high bits, PCIDE with paging off.
        assert_eq!(cr0_write(pe | pg, pe, 0, lme, false), None);
        assert_eq!(cr0_write(pe | pg, pe, pae, lme, true), None);
        assert_eq!(cr0_write(pg, 0, 0, 0, false), None);
        assert_eq!(cr0_write(nw, cd | nw, 0, 0, false), None);
        assert_eq!(cr0_write(1 << 32, 0, 0, 0, false), None);
        assert_eq!(cr0_write(pe, pe | pg, pae | cr4::PCIDE, 0, false), None);
        // CD with NW and the NE/ET bits are fine.
        assert_eq!(cr0_write(cd | nw | cr0::NE | cr0::ET, 0, 0, 0, false), Some(0));
        assert!(cr0_change_flushes_tlb(pe, pe | pg));
        assert!(!cr0_change_flushes_tlb(pe, pe | cr0::NE));
    }

    #[test]
    fn pae_paging_and_pdptes() {
        let (pg, pae) = (cr0::PG | cr0::PE, cr4::PAE);
        assert!(is_pae_paging(pg, pae, 0));
        assert!(!is_pae_paging(pg, pae, efer::LMA | efer::LME));
        assert!(!is_pae_paging(cr0::PE, pae, 0));
        assert!(pdpte_is_valid(0x1234_5001, 36));
        assert!(pdpte_is_valid(0xffff_ffff_ffff_fffe, 36), "not present");
        assert!(!pdpte_is_valid(0x1234_5003, 36), "bit 1");
        assert!(!pdpte_is_valid(0x1234_5021, 36), "bit 5");
        assert!(!pdpte_is_valid((1 << 40) | 1, 36), "above MAXPHYADDR");
    }

    #[test]
    fn size_matches_the_uapi() {
        assert_eq!(SREGS_SIZE, 312);
    }

    #[test]
    fn sregs_round_trip() {
        let mut s = reset(true);
        s.segs[3].base = 0x1234_5678_9abc;
        s.segs[5].unusable = 1;
        s.segs[0] = Segment {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            type_: 0xb,
            present: 1,
            s: 1,
            ..Default::default()
        };
        s.idt = DTable {
            base: 0xffff_8000_0000_0000,
            limit: 0xfff,
        };
        s.cr2 = 0x42;
        s.pending_irq = Some(200);
        let b = s.to_bytes();
        assert_eq!(&b[0..8], &0xffff_0000u64.to_ne_bytes());
        assert_eq!(&b[8..12], &0xffffu32.to_ne_bytes());
        assert_eq!(&b[12..14], &0xf000u16.to_ne_bytes());
        assert_eq!(b[14], 0xb);
        assert_eq!(Sregs::from_bytes(&b), s);
        // The bitmap carries vector 200: word 3, bit 8.
        assert_eq!(&b[SREGS_SIZE - 8..], &(1u64 << 8).to_ne_bytes());
        // Several bits set: the lowest one is the pending interrupt.
        let mut b2 = b;
        b2[SREGS_SIZE - 32..SREGS_SIZE - 24].copy_from_slice(&(1u64 << 33 | 1 << 40).to_ne_bytes());
        assert_eq!(Sregs::from_bytes(&b2).pending_irq, Some(33));
    }

    #[test]
    fn reset_values() {
        let s = reset(true);
        assert_eq!(
            (s.cr0, s.apic_base, s.gdt.limit, s.idt.limit),
            (0x6000_0010, 0xfee0_0900, 0xffff, 0xffff)
        );
        assert_eq!(reset(false).apic_base, 0xfee0_0800);
        assert!(s.is_valid(&GuestFeatures::default(), s.apic_base));
    }

    #[test]
    fn invalid_sregs() {
        let none = GuestFeatures::default();
        let lm = GuestFeatures {
            lm: true,
            nx: true,
            ..Default::default()
        };
        let base = reset(true);
        let old = base.apic_base;
        let with = |f: &dyn Fn(&mut Sregs)| {
            let mut s = base;
            f(&mut s);
            s
        };
        // CR0: high bits, NW without CD, PG without PE.
        assert!(!with(&|s| s.cr0 |= 1 << 32).is_valid(&none, old));
        assert!(!with(&|s| s.cr0 = cr0::NW).is_valid(&none, old));
        assert!(!with(&|s| s.cr0 = cr0::PG).is_valid(&none, old));
        assert!(with(&|s| s.cr0 = cr0::PE | cr0::ET).is_valid(&none, old));
        // CR4: feature bits need CPUID (VMXE, OSXSAVE, SMEP...).
        assert!(!with(&|s| s.cr4 = 1 << 13).is_valid(&none, old));
        assert!(!with(&|s| s.cr4 = 1 << 18).is_valid(&none, old));
        assert!(with(&|s| s.cr4 = cr4::BASE).is_valid(&none, old));
        let xsave = GuestFeatures {
            xsave: true,
            ..none
        };
        assert!(with(&|s| s.cr4 = cr4::OSXSAVE).is_valid(&xsave, old));
        // Long mode needs LM in CPUID, PAE and LMA, and a legal CR3.
        let long = |s: &mut Sregs| {
            s.cr0 = cr0::PE | cr0::PG;
            s.cr4 = cr4::PAE;
            s.efer = efer::LME | efer::LMA;
            s.segs[CS].l = 1;
        };
        assert!(with(&long).is_valid(&lm, old));
        assert!(!with(&long).is_valid(&none, old));
        assert!(!with(&|s| {
            long(s);
            s.cr4 = 0
        })
        .is_valid(&lm, old));
        assert!(!with(&|s| {
            long(s);
            s.efer = efer::LME
        })
        .is_valid(&lm, old));
        assert!(!with(&|s| {
            long(s);
            s.cr3 = 1 << 40
        })
        .is_valid(&lm, old));
        // Outside long mode, LMA and a 64-bit CS are invalid.
        assert!(!with(&|s| s.segs[CS].l = 1).is_valid(&lm, old));
        assert!(!with(&|s| s.efer = efer::LMA).is_valid(&lm, old));
        // EFER.NX needs NX; SCE needs nothing; unknown bits never.
        assert!(!with(&|s| s.efer = efer::NXE).is_valid(&none, old));
        assert!(with(&|s| s.efer = efer::SCE).is_valid(&none, old));
        assert!(!with(&|s| s.efer = 1 << 20).is_valid(&lm, old));
        // APIC base: reserved low bits, beyond MAXPHYADDR, x2APIC.
        assert!(!with(&|s| s.apic_base |= 1).is_valid(&none, old));
        assert!(!with(&|s| s.apic_base |= 1 << 36).is_valid(&none, old));
        assert!(!with(&|s| s.apic_base |= APIC_BASE_X2APIC).is_valid(&none, old));
        let x2 = GuestFeatures {
            x2apic: true,
            ..Default::default()
        };
        assert!(with(&|s| s.apic_base |= APIC_BASE_X2APIC).is_valid(&x2, old));
        assert!(!with(&|s| s.apic_base = APIC_BASE_DEFAULT | APIC_BASE_X2APIC).is_valid(&x2, old));
        assert!(with(&|s| s.apic_base = 0).is_valid(&none, old));
        // An unchanged value passes even if it would not as a new one.
        assert!(with(&|s| s.apic_base = 1).is_valid(&none, 1));
    }

    #[test]
    fn mov_to_cr4() {
        let none = GuestFeatures::default();
        let xsave = GuestFeatures::from_cpuid(|leaf, _| match leaf {
            1 => [0, 0, 1 << 26, 0],
            _ => [0; 4],
        });
        assert!(xsave.xsave && !xsave.pcid);
        let long = efer::LME | efer::LMA;
        let pae = cr4::PAE;
        assert!(cr4_write_is_valid(pae | cr4::OSXSAVE, pae, 0, long, &xsave));
        assert!(!cr4_write_is_valid(pae | cr4::OSXSAVE, pae, 0, long, &none));
        assert!(!cr4_write_is_valid(0, pae, 0, long, &none), "PAE off in long mode");
        assert!(cr4_write_is_valid(0, pae, 0, 0, &none));
        assert!(!cr4_write_is_valid(cr4::VMXE, 0, 0, 0, &xsave));
        let all = GuestFeatures::from_cpuid(|_, _| [u32::MAX; 4]);
        assert!(!cr4_write_is_valid(pae | cr4::LA57, pae, 0, long, &all), "LA57 in long mode");
        assert!(cr4_write_is_valid(pae | cr4::PCIDE, pae, 0x1000, long, &all));
        assert!(!cr4_write_is_valid(pae | cr4::PCIDE, pae, 0x1001, long, &all), "PCID in CR3");
        assert!(!cr4_write_is_valid(cr4::PCIDE, 0, 0, 0, &all), "PCIDE outside long mode");
        assert!(cr4_change_flushes_tlb(0, cr4::PGE));
        assert!(cr4_change_flushes_tlb(cr4::PCIDE, 0));
        assert!(!cr4_change_flushes_tlb(0, cr4::OSXSAVE));
        assert_eq!(all.intersect(&none).cr4_allowed(), cr4::BASE);
    }
}
