// SPDX-License-Identifier: GPL-2.0

//! Port I/O arithmetic both backends share: merging IN data into RAX, and
//! the string forms (INS/OUTS, with or without REP): which segment and
//! address size the prefixes select, how RSI/RDI/RCX move with RFLAGS.DF,
//! and how many INS elements fit on the current guest page.
//!
//! Pure logic (only `core`), tested on the host.

use crate::{
    arch::rflags,
    emulate::{decode_prefixes, Mode, Seg},
    sregs::SegReg,
};

/// RAX after an IN of `size` bytes read `data`: 8- and 16-bit INs merge
/// into the low bits, a 32-bit IN zero-extends (SDM Vol. 1 3.4.1.1).
pub(crate) fn merge_in(rax: u64, data: u64, size: u8) -> u64 {
    match size {
        1 => (rax & !0xff) | (data & 0xff),
        2 => (rax & !0xffff) | (data & 0xffff),
        _ => data & 0xffff_ffff,
    }
}

/// Adds `delta` to the part of `reg` the address size (`mask`) uses; a
/// 32-bit result zero-extends, a 16-bit one leaves the upper bits alone.
pub(crate) fn add_masked(reg: u64, delta: i64, mask: u64) -> u64 {
    let sum = reg.wrapping_add(delta as u64) & mask;
    if mask == 0xffff {
        (reg & !0xffff) | sum
    } else {
        sum
    }
}

/// A string I/O instruction being executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StringIo {
    /// Element size: 1, 2 or 4.
    pub(crate) size: u8,
    pub(crate) rep: bool,
    /// Mask of the address size: 0xffff, 0xffff_ffff or all ones.
    pub(crate) addr_mask: u64,
    /// The segment of the memory operand (ES for INS).
    pub(crate) seg: SegReg,
    /// RFLAGS.DF: elements go downwards.
    pub(crate) down: bool,
    pub(crate) next_rip: u64,
}

impl StringIo {
    /// Decodes INS (`is_in`) or OUTS from its bytes (prefixes) in `mode`:
    /// OUTS reads through DS or an override, INS always writes through ES
    /// (SDM Vol. 2B INS, OUTS). `None` if the bytes end in the prefixes.
    pub(crate) fn decode(
        bytes: &[u8],
        mode: Mode,
        is_in: bool,
        size: u8,
        rep: bool,
        rflags_val: u64,
        next_rip: u64,
    ) -> Option<Self> {
        let p = decode_prefixes(bytes, mode).ok()?;
        let seg = if is_in {
            SegReg::Es
        } else {
            match p.seg {
                None | Some(Seg::Ds) => SegReg::Ds,
                Some(Seg::Es) => SegReg::Es,
                Some(Seg::Cs) => SegReg::Cs,
                Some(Seg::Ss) => SegReg::Ss,
                Some(Seg::Fs) => SegReg::Fs,
                Some(Seg::Gs) => SegReg::Gs,
            }
        };
        let addr_mask = match p.addr_size(mode) {
            2 => 0xffff,
            4 => 0xffff_ffff,
            _ => u64::MAX,
        };
        Some(Self {
            size,
            rep,
            addr_mask,
            seg,
            down: rflags_val & rflags::DF != 0,
            next_rip,
        })
    }

    /// The segment base that applies in `mode`: 64-bit mode ignores every
    /// base but FS and GS (SDM Vol. 1 3.3.7.1).
    pub(crate) fn base(&self, mode: Mode, seg_base: u64) -> u64 {
        if mode == Mode::Long64 && !matches!(self.seg, SegReg::Fs | SegReg::Gs) {
            0
        } else {
            seg_base
        }
    }

    /// Bytes RSI/RDI move for `n` elements.
    pub(crate) fn step(&self, n: u32) -> i64 {
        let bytes = self.size as i64 * n as i64;
        if self.down {
            -bytes
        } else {
            bytes
        }
    }

    /// The elements to do: RCX under REP (masked to the address size),
    /// else one.
    pub(crate) fn count(&self, rcx: u64) -> u64 {
        if self.rep {
            rcx & self.addr_mask
        } else {
            1
        }
    }

    /// RCX after `n` elements under REP, and whether the instruction is
    /// done (then RIP moves to `next_rip`; else the guest runs it again).
    pub(crate) fn finish(&self, rcx: u64, n: u32) -> (u64, bool) {
        if !self.rep {
            return (rcx, true);
        }
        let left = add_masked(rcx, -(n as i64), self.addr_mask);
        (left, left & self.addr_mask == 0)
    }

    /// How many of `count` INS elements starting at linear address
    /// `linear` to ask userspace for at once: those on the same guest page
    /// in the direction of travel (at least one, at most a page's worth,
    /// so that the data fits the PIO page).
    pub(crate) fn batch(&self, linear: u64, count: u64) -> u32 {
        let size = core::num::NonZeroU64::new(self.size as u64).unwrap_or(core::num::NonZeroU64::MIN);
        let off = linear & 0xfff;
        let in_page = if self.down {
            off / size + 1
        } else {
            (0x1000 - off) / size
        };
        count.min(in_page.max(1)).min(0x1000 / size) as u32
    }
}

/// How the `size` bytes of an element at guest-physical `gpa` split
/// between its page and the next: the length of the first part.
pub(crate) fn first_part(gpa: u64, size: usize) -> usize {
    size.min(0x1000 - (gpa & 0xfff) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_merges_as_the_cpu() {
        let rax = 0x1122_3344_5566_7788;
        assert_eq!(merge_in(rax, 0xab, 1), 0x1122_3344_5566_77ab);
        assert_eq!(merge_in(rax, 0xabcd, 2), 0x1122_3344_5566_abcd);
        assert_eq!(merge_in(rax, 0xdead_beef, 4), 0xdead_beef);
    }

    #[test]
    fn masked_addition() {
        assert_eq!(add_masked(0x1_0000_ffff, 1, 0xffff), 0x1_0000_0000);
        assert_eq!(add_masked(0xffff_0000_ffff_ffff, 1, 0xffff_ffff), 0);
        assert_eq!(add_masked(0, -2, u64::MAX), u64::MAX - 1);
        assert_eq!(add_masked(0xabcd_0001, -2, 0xffff), 0xabcd_ffff);
    }

    fn outs(bytes: &[u8], mode: Mode, rflags_val: u64) -> StringIo {
        StringIo::decode(bytes, mode, false, 2, true, rflags_val, 0x100).unwrap()
    }

    #[test]
    fn prefixes_select_segment_and_address_size() {
        // rep outsw: DS, the mode's address size.
        let s = outs(&[0xf3, 0x66, 0x6f], Mode::Long64, 0);
        assert_eq!((s.seg, s.addr_mask), (SegReg::Ds, u64::MAX));
        // 0x67 halves it; in real mode it doubles it.
        assert_eq!(outs(&[0x67, 0xf3, 0x6f], Mode::Long64, 0).addr_mask, 0xffff_ffff);
        assert_eq!(outs(&[0x67, 0xf3, 0x6f], Mode::Prot32, 0).addr_mask, 0xffff);
        assert_eq!(outs(&[0xf3, 0x6f], Mode::Real, 0).addr_mask, 0xffff);
        assert_eq!(outs(&[0x67, 0x6f], Mode::Real, 0).addr_mask, 0xffff_ffff);
        // Overrides: FS for OUTS; INS ignores them (always ES).
        assert_eq!(outs(&[0x64, 0xf3, 0x6f], Mode::Prot32, 0).seg, SegReg::Fs);
        assert_eq!(outs(&[0x26, 0x6e], Mode::Prot32, 0).seg, SegReg::Es);
        let ins = StringIo::decode(&[0x2e, 0x6c], Mode::Prot32, true, 1, false, 0, 0).unwrap();
        assert_eq!(ins.seg, SegReg::Es);
        // REX before the opcode is skipped in 64-bit mode.
        assert_eq!(outs(&[0x65, 0x48, 0x6f], Mode::Long64, 0).seg, SegReg::Gs);
        // Only prefixes: nothing to decode.
        assert!(StringIo::decode(&[0xf3, 0x66], Mode::Long64, false, 1, false, 0, 0).is_none());
        // 64-bit mode ignores the DS/ES/CS/SS bases.
        let s = outs(&[0x2e, 0x6f], Mode::Long64, 0);
        assert_eq!(s.base(Mode::Long64, 0x1000), 0);
        assert_eq!(s.base(Mode::Prot32, 0x1000), 0x1000);
        assert_eq!(outs(&[0x64, 0x6f], Mode::Long64, 0).base(Mode::Long64, 7), 7);
    }

    #[test]
    fn df_and_rep_counts() {
        let up = outs(&[0xf3, 0x6f], Mode::Prot32, 0);
        let down = outs(&[0xf3, 0x6f], Mode::Prot32, rflags::DF);
        assert_eq!(up.step(3), 6);
        assert_eq!(down.step(3), -6);
        // REP takes RCX masked to the address size.
        assert_eq!(up.count(0x1_0000_0005), 5);
        assert_eq!(up.finish(5, 2), (3, false));
        assert_eq!(up.finish(2, 2), (0, true));
        let one = StringIo { rep: false, ..up };
        assert_eq!(one.count(0), 1);
        assert_eq!(one.finish(9, 1), (9, true));
        // A 16-bit RCX keeps its upper bits.
        let real = outs(&[0xf3, 0x6f], Mode::Real, 0);
        assert_eq!(real.finish(0xdead_0001, 1), (0xdead_0000, true));
    }

    #[test]
    fn ins_batches_stop_at_the_page_end() {
        let up = StringIo::decode(&[0xf3, 0x6d], Mode::Long64, true, 4, true, 0, 0).unwrap();
        assert_eq!(up.batch(0x1000, 10_000), 1024);
        assert_eq!(up.batch(0x1ff8, 100), 2);
        assert_eq!(up.batch(0x1ffe, 100), 1, "an element that straddles pages");
        assert_eq!(up.batch(0x1000, 3), 3);
        let down = StringIo {
            down: true,
            ..up
        };
        assert_eq!(down.batch(0x1008, 100), 3);
        assert_eq!(down.batch(0x1000, 100), 1);
        assert_eq!(first_part(0x1ffe, 4), 2);
        assert_eq!(first_part(0x1000, 4), 4);
    }
}
