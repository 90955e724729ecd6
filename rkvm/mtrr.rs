// SPDX-License-Identifier: GPL-2.0

//! A vCPU's memory-type range registers: MTRRcap, MTRRdefType, the fixed
//! and the eight variable ranges, with the value checks KVM applies.
//!
//! The registers are kept for the guest (firmware and Linux program
//! them and read them back); as in KVM, they do not change how guest
//! memory is mapped: the TDP tables use write-back and the guest's PAT.
//!
//! Pure logic (only `core`), tested on the host.

pub(crate) const CAP: u32 = 0xfe;
pub(crate) const DEF_TYPE: u32 = 0x2ff;
/// PHYSBASE0; PHYSMASKn is `PHYS_BASE0 + 2 * n + 1`.
pub(crate) const PHYS_BASE0: u32 = 0x200;
pub(crate) const FIX_64K_00000: u32 = 0x250;
pub(crate) const FIX_16K_80000: u32 = 0x258;
pub(crate) const FIX_16K_A0000: u32 = 0x259;
pub(crate) const FIX_4K_C0000: u32 = 0x268;
pub(crate) const FIX_4K_F8000: u32 = 0x26f;

/// Variable ranges (KVM's `KVM_NR_VAR_MTRR`).
pub(crate) const NR_VAR: usize = 8;
/// MTRRcap: VCNT, fixed ranges, write-combining; no SMRR.
pub(crate) const CAP_VALUE: u64 = 1 << 10 | 1 << 8 | NR_VAR as u64;

/// The registers MTRRdefType's valid bits: type, FE (fixed enable), E.
const DEF_TYPE_BITS: u64 = 0xcff;

/// A memory type an MTRR may hold: UC, WC, WT, WP, WB.
fn valid_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// Where each register lives in [`Mtrrs`]: MTRRdefType, the eleven fixed
/// ranges (64K_00000, 16K_80000, 16K_A0000, 4K_C0000 .. 4K_F8000), then
/// PHYSBASE0, PHYSMASK0, PHYSBASE1, ...
const NR_REGS: usize = 1 + 11 + 2 * NR_VAR;

fn slot(index: u32) -> Option<usize> {
    let i = index as usize;
    match index {
        DEF_TYPE => Some(0),
        FIX_64K_00000 => Some(1),
        FIX_16K_80000 | FIX_16K_A0000 => Some(2 + i - FIX_16K_80000 as usize),
        FIX_4K_C0000..=FIX_4K_F8000 => Some(4 + i - FIX_4K_C0000 as usize),
        _ => {
            let v = i.checked_sub(PHYS_BASE0 as usize)?;
            (v < 2 * NR_VAR).then_some(12 + v)
        }
    }
}

/// A vCPU's MTRRs, all zero after creation (and, as in KVM, left alone by
/// a reset).
#[derive(Clone, Debug, Default)]
pub(crate) struct Mtrrs([u64; NR_REGS]);

impl Mtrrs {
    /// Whether `index` is an MSR of this file (MTRRcap included).
    pub(crate) fn owns(index: u32) -> bool {
        index == CAP || index == DEF_TYPE || (PHYS_BASE0..=FIX_4K_F8000).contains(&index)
    }

    /// Reads an MSR `owns` accepts; `Err` for the gaps between the
    /// registers (`#GP`).
    pub(crate) fn get(&self, index: u32) -> Result<u64, ()> {
        if index == CAP {
            return Ok(CAP_VALUE);
        }
        slot(index).map(|s| self.0[s]).ok_or(())
    }

    /// Writes an MSR `owns` accepts. MTRRcap is read-only; types must be
    /// valid; a variable range's base and mask may set no reserved bit,
    /// those at and above the guest's MAXPHYADDR included
    /// (`reserved_gpa`).
    pub(crate) fn set(&mut self, index: u32, val: u64, reserved_gpa: u64) -> Result<(), ()> {
        let ok = match index {
            DEF_TYPE => val & !DEF_TYPE_BITS == 0 && valid_type(val & 0xff),
            FIX_64K_00000..=FIX_4K_F8000 => val.to_le_bytes().iter().all(|&t| valid_type(t as u64)),
            i if i % 2 == 0 => valid_type(val & 0xff) && val & (reserved_gpa | 0xf00) == 0,
            _ => val & (reserved_gpa | 0x7ff) == 0,
        };
        let s = slot(index).ok_or(())?;
        if !ok {
            return Err(());
        }
        self.0[s] = val;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSVD: u64 = !0 << 40;

    #[test]
    fn cap_is_read_only() {
        let mut m = Mtrrs::default();
        assert_eq!(m.get(CAP), Ok(0x508));
        assert!(m.set(CAP, 0x508, RSVD).is_err());
    }

    #[test]
    fn round_trips() {
        let mut m = Mtrrs::default();
        for (i, v) in [
            (DEF_TYPE, 0xc06),
            (FIX_64K_00000, 0x0606_0606_0606_0606),
            (FIX_16K_A0000, 0),
            (FIX_4K_F8000, 0x0504_0100_0605_0401),
            (PHYS_BASE0 + 14, 0xff_0000_0006),
            (PHYS_BASE0 + 15, 0xff_c000_0800),
        ] {
            assert_eq!(m.set(i, v, RSVD), Ok(()), "{i:#x}");
            assert_eq!(m.get(i), Ok(v));
        }
        assert_eq!(m.get(FIX_16K_80000), Ok(0));
    }

    #[test]
    fn invalid_values() {
        let mut m = Mtrrs::default();
        // Types 2, 3 and 7+ are reserved.
        assert!(m.set(DEF_TYPE, 2, RSVD).is_err());
        assert!(m.set(DEF_TYPE, 0x100, RSVD).is_err());
        assert!(m.set(FIX_4K_C0000, 0x0600_0000_0000_0000 | 7, RSVD).is_err());
        assert!(m.set(FIX_64K_00000, 0x0300, RSVD).is_err());
        // Base: type and no bits 11:8 or above MAXPHYADDR.
        assert!(m.set(PHYS_BASE0, 3, RSVD).is_err());
        assert!(m.set(PHYS_BASE0, 0x106, RSVD).is_err());
        assert!(m.set(PHYS_BASE0, 1 << 40 | 6, RSVD).is_err());
        // Mask: bits 10:0 reserved (V is bit 11).
        assert!(m.set(PHYS_BASE0 + 1, 0x400, RSVD).is_err());
        assert!(m.set(PHYS_BASE0 + 1, 1 << 45 | 0x800, RSVD).is_err());
        assert_eq!(m.get(PHYS_BASE0 + 1), Ok(0));
    }

    #[test]
    fn gaps_fault() {
        let mut m = Mtrrs::default();
        for i in [0x210, 0x24f, 0x251, 0x257, 0x25a, 0x267] {
            assert!(Mtrrs::owns(i));
            assert!(m.get(i).is_err(), "{i:#x}");
            assert!(m.set(i, 0, RSVD).is_err(), "{i:#x}");
        }
        assert!(!Mtrrs::owns(0x270));
        assert!(!Mtrrs::owns(0x1ff));
    }
}
