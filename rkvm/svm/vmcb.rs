// SPDX-License-Identifier: GPL-2.0

//! The Virtual Machine Control Block (AMD APM vol. 2, appendix B): the
//! control area (intercepts, exit information, event injection, nested
//! paging) and the state-save area, declared once as `#[repr(C)]` structs
//! whose offsets are checked at compile time, plus the intercept, exit-code
//! and event-injection encodings rkvm uses.
//!
//! Pure logic (only `core`), tested on the host.

use crate::msr;
use core::mem::{offset_of, size_of};

use crate::svm::seg::VmcbSeg;

/// Bit numbers of the intercept vectors, as `(word, bit)`: word 0 is
/// CR reads (low half) and writes (high half), word 1 DR accesses, word 2
/// exceptions, words 3 and 4 the instruction and event intercepts.
pub(crate) mod intercept {
    // Word 3.
    pub(crate) const INTR: u32 = 0;
    pub(crate) const NMI: u32 = 1;
    pub(crate) const SMI: u32 = 2;
    pub(crate) const INIT: u32 = 3;
    /// A virtual interrupt (`V_IRQ`) could be taken.
    pub(crate) const VINTR: u32 = 4;
    /// IRET (to see an NMI handler return).
    pub(crate) const IRET: u32 = 20;
    /// Writes of CR0 that change a bit other than TS and MP.
    pub(crate) const CR0_SEL_WRITE: u32 = 5;
    pub(crate) const RDPMC: u32 = 15;
    pub(crate) const CPUID: u32 = 18;
    pub(crate) const RSM: u32 = 19;
    pub(crate) const INVD: u32 = 22;
    pub(crate) const HLT: u32 = 24;
    pub(crate) const INVLPGA: u32 = 26;
    pub(crate) const IOIO_PROT: u32 = 27;
    pub(crate) const MSR_PROT: u32 = 28;
    pub(crate) const TASK_SWITCH: u32 = 29;
    pub(crate) const SHUTDOWN: u32 = 31;
    // Word 4.
    pub(crate) const VMRUN: u32 = 0;
    pub(crate) const VMMCALL: u32 = 1;
    pub(crate) const VMLOAD: u32 = 2;
    pub(crate) const VMSAVE: u32 = 3;
    pub(crate) const STGI: u32 = 4;
    pub(crate) const CLGI: u32 = 5;
    pub(crate) const SKINIT: u32 = 6;
    pub(crate) const RDTSCP: u32 = 7;
    pub(crate) const MONITOR: u32 = 10;
    pub(crate) const MWAIT: u32 = 11;
    pub(crate) const MWAIT_COND: u32 = 12;
    pub(crate) const XSETBV: u32 = 13;
    pub(crate) const RDPRU: u32 = 14;
    // Word 5.
    pub(crate) const INVLPGB: u32 = 0;
    pub(crate) const INVLPGB_ILLEGAL: u32 = 1;
    pub(crate) const INVPCID: u32 = 2;
    pub(crate) const MCOMMIT: u32 = 3;
    pub(crate) const TLBSYNC: u32 = 4;
}

/// `EXITCODE` values (APM vol. 2, appendix C).
pub(crate) mod exit {
    /// MOV to CR4 (`0x10 + n` for CRn).
    pub(crate) const CR4_WRITE: u64 = 0x014;
    pub(crate) const CR8_WRITE: u64 = 0x018;
    pub(crate) const CR0_SEL_WRITE: u64 = 0x065;
    pub(crate) const INTR: u64 = 0x060;
    pub(crate) const NMI: u64 = 0x061;
    pub(crate) const SMI: u64 = 0x062;
    pub(crate) const INIT: u64 = 0x063;
    pub(crate) const VINTR: u64 = 0x064;
    /// Reads of DR0-15 (`0x20 + n`) and writes (`0x30 + n`).
    pub(crate) const DR_READ_0: u64 = 0x020;
    pub(crate) const DR_WRITE_15: u64 = 0x03f;
    pub(crate) const IRET: u64 = 0x074;
    /// Exception intercepts: `0x40 + vector`.
    pub(crate) const EXCP_DB: u64 = 0x041;
    pub(crate) const EXCP_BP: u64 = 0x043;
    pub(crate) const RDPMC: u64 = 0x06f;
    pub(crate) const CPUID: u64 = 0x072;
    pub(crate) const HLT: u64 = 0x078;
    pub(crate) const INVLPGA: u64 = 0x07a;
    pub(crate) const IOIO: u64 = 0x07b;
    pub(crate) const MSR: u64 = 0x07c;
    pub(crate) const SHUTDOWN: u64 = 0x07f;
    pub(crate) const VMRUN: u64 = 0x080;
    pub(crate) const VMMCALL: u64 = 0x081;
    pub(crate) const VMLOAD: u64 = 0x082;
    pub(crate) const VMSAVE: u64 = 0x083;
    pub(crate) const STGI: u64 = 0x084;
    pub(crate) const CLGI: u64 = 0x085;
    pub(crate) const SKINIT: u64 = 0x086;
    pub(crate) const RDTSCP: u64 = 0x087;
    pub(crate) const MONITOR: u64 = 0x08a;
    pub(crate) const MWAIT: u64 = 0x08b;
    pub(crate) const MWAIT_COND: u64 = 0x08c;
    pub(crate) const XSETBV: u64 = 0x08d;
    pub(crate) const RDPRU: u64 = 0x08e;
    pub(crate) const INVLPGB: u64 = 0x0a0;
    pub(crate) const INVLPGB_ILLEGAL: u64 = 0x0a1;
    pub(crate) const INVPCID: u64 = 0x0a2;
    pub(crate) const MCOMMIT: u64 = 0x0a3;
    pub(crate) const TLBSYNC: u64 = 0x0a4;
    pub(crate) const NPF: u64 = 0x400;
    /// VMRUN found the VMCB's guest state invalid.
    pub(crate) const INVALID: u64 = u64::MAX;
}

/// `TLB_CONTROL` values.
pub(crate) mod tlb_control {
    pub(crate) const DO_NOTHING: u8 = 0;
    /// Flush every ASID's entries (the only flush without FlushByAsid).
    pub(crate) const FLUSH_ALL: u8 = 1;
    /// Flush this guest's ASID (needs FlushByAsid).
    pub(crate) const FLUSH_ASID: u8 = 3;
}

/// `V_INTR_MASKING` in `int_ctl`: the guest's RFLAGS.IF masks only virtual
/// interrupts; physical ones stay the host's and cause `#VMEXIT(INTR)`.
pub(crate) const V_INTR_MASKING: u32 = 1 << 24;
/// `INTERRUPT_SHADOW` in `int_state`: an STI or MOV SS shadow (SVM does
/// not say which).
pub(crate) const INT_STATE_SHADOW: u32 = 1 << 0;
/// `V_IRQ` in `int_ctl`: a virtual interrupt is pending. rkvm sets it only
/// with the `VINTR` intercept, to learn when the guest could take one.
pub(crate) const V_IRQ: u32 = 1 << 8;
/// `V_INTR_PRIO` (bits 19:16) and `V_IGN_TPR` in `int_ctl`: the pending
/// virtual interrupt is checked against RFLAGS.IF and the interrupt shadow
/// only, whatever the guest's TPR.
pub(crate) const V_INTR_PRIO_MAX: u32 = 0xf << 16;
pub(crate) const V_IGN_TPR: u32 = 1 << 20;
/// What `EVENTINJ` and `EXITINTINFO` share (APM 15.20): vector in bits
/// 7:0, type in 10:8, error code valid in 11, valid in 31.
pub(crate) mod event {
    use crate::exit_info::Event;

    pub(crate) const VALID: u32 = 1 << 31;
    pub(crate) const ERROR_VALID: u32 = 1 << 11;
    pub(crate) const TYPE_MASK: u32 = 7 << 8;
    /// An external (or virtual) interrupt.
    pub(crate) const TYPE_INTR: u32 = 0 << 8;
    pub(crate) const TYPE_NMI: u32 = 2 << 8;
    pub(crate) const TYPE_EXCEPTION: u32 = 3 << 8;

    /// The event an `EVENTINJ` (or `EXITINTINFO`) word and its error code
    /// describe, if valid.
    pub(crate) fn decode(word: u32, error_code: u32) -> Option<Event> {
        if word & VALID == 0 {
            return None;
        }
        let vector = word as u8;
        Some(match word & TYPE_MASK {
            TYPE_INTR => Event::Interrupt { vector },
            TYPE_NMI => Event::Nmi,
            TYPE_EXCEPTION => Event::Exception {
                vector,
                error_code: (word & ERROR_VALID != 0).then_some(error_code),
            },
            // INT n (4), and what SVM does not define.
            _ => Event::Soft,
        })
    }

    /// The `EVENTINJ` word and error code that deliver `event` (nothing
    /// for `Event::Soft`, which cannot be described).
    pub(crate) fn encode(event: Option<Event>) -> (u32, u32) {
        match event {
            Some(Event::Interrupt { vector }) => (VALID | TYPE_INTR | vector as u32, 0),
            Some(Event::Nmi) => (VALID | TYPE_NMI | crate::arch::vector::NMI as u32, 0),
            Some(Event::Exception { vector, error_code }) => {
                super::event_inj_exception(vector, error_code)
            }
            Some(Event::Soft) | None => (0, 0),
        }
    }
}

/// `NP_ENABLE` in `misc_ctl`.
pub(crate) const NP_ENABLE: u64 = 1 << 0;
/// EFER.SVME must be set in the guest's EFER while it runs (APM 15.5.1);
/// rkvm keeps it set in the VMCB and hides it from the guest.
pub(crate) const EFER_SVME: u64 = crate::arch::efer::SVME;

/// MSRs that VMLOAD/VMSAVE switch through the VMCB: the guest may access
/// them directly (no intercept), they never reach the host's values.
pub(crate) const VMCB_SWITCHED: [u32; 10] = msr::SYSCALL_AND_BASES;

/// `EVENTINJ`: inject an exception with `vector` on the next VMRUN.
pub(crate) const fn event_inj_exception(vector: u8, error_code: Option<u32>) -> (u32, u32) {
    const VALID: u32 = 1 << 31;
    const TYPE_EXCEPTION: u32 = 3 << 8;
    const ERROR_VALID: u32 = 1 << 11;
    match error_code {
        Some(e) => (vector as u32 | TYPE_EXCEPTION | ERROR_VALID | VALID, e),
        None => (vector as u32 | TYPE_EXCEPTION | VALID, 0),
    }
}

/// `EXITINFO1` of an IOIO intercept (APM 15.10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoioInfo {
    pub(crate) port: u16,
    pub(crate) is_in: bool,
    pub(crate) string: bool,
    pub(crate) rep: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub(crate) size: u8,
    /// Address size in bits: 16, 32 or 64; 0 if the CPU did not say (QEMU
    /// leaves it out for non-string instructions, which do not need it).
    pub(crate) addr_bits: u8,
    /// Effective segment of a string instruction (0 ES, 1 CS, 2 SS, 3 DS,
    /// 4 FS, 5 GS), valid only with decode assists.
    pub(crate) seg: u8,
}

impl IoioInfo {
    /// Decodes `EXITINFO1`; `None` if the size or address-size fields are
    /// not the one-hot values the APM defines (an absent address size is
    /// accepted; string I/O checks for it).
    pub(crate) fn decode(info1: u64) -> Option<Self> {
        let size = match (info1 >> 4) & 7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return None,
        };
        let addr_bits = match (info1 >> 7) & 7 {
            0 => 0,
            1 => 16,
            2 => 32,
            4 => 64,
            _ => return None,
        };
        Some(Self {
            port: (info1 >> 16) as u16,
            is_in: info1 & 1 != 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
            size,
            addr_bits,
            seg: ((info1 >> 10) & 7) as u8,
        })
    }
}

/// `EXITINFO1` of a nested page fault: the #PF-style error code.
pub(crate) mod npf {
    /// The nested page was present (a protection fault).
    pub(crate) const PRESENT: u64 = 1 << 0;
    pub(crate) const WRITE: u64 = 1 << 1;
    pub(crate) const FETCH: u64 = 1 << 4;
}

/// The control area: 1 KiB at offset 0.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Control {
    pub(crate) intercepts: [u32; 6],
    _reserved_18: [u32; 9],
    pub(crate) pause_filter_thresh: u16,
    pub(crate) pause_filter_count: u16,
    pub(crate) iopm_base_pa: u64,
    pub(crate) msrpm_base_pa: u64,
    pub(crate) tsc_offset: u64,
    pub(crate) asid: u32,
    pub(crate) tlb_ctl: u8,
    _reserved_5d: [u8; 3],
    pub(crate) int_ctl: u32,
    pub(crate) int_vector: u32,
    pub(crate) int_state: u32,
    _reserved_6c: u32,
    pub(crate) exit_code: u64,
    pub(crate) exit_info_1: u64,
    pub(crate) exit_info_2: u64,
    pub(crate) exit_int_info: u32,
    pub(crate) exit_int_info_err: u32,
    pub(crate) misc_ctl: u64,
    pub(crate) avic_vapic_bar: u64,
    pub(crate) ghcb_gpa: u64,
    pub(crate) event_inj: u32,
    pub(crate) event_inj_err: u32,
    pub(crate) nested_cr3: u64,
    pub(crate) misc_ctl2: u64,
    pub(crate) clean: u32,
    _reserved_c4: u32,
    pub(crate) next_rip: u64,
    pub(crate) insn_len: u8,
    pub(crate) insn_bytes: [u8; 15],
    _reserved_e0: [u8; 0x400 - 0xe0],
}

/// The state-save area: at offset 0x400.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Save {
    pub(crate) es: VmcbSeg,
    pub(crate) cs: VmcbSeg,
    pub(crate) ss: VmcbSeg,
    pub(crate) ds: VmcbSeg,
    pub(crate) fs: VmcbSeg,
    pub(crate) gs: VmcbSeg,
    pub(crate) gdtr: VmcbSeg,
    pub(crate) ldtr: VmcbSeg,
    pub(crate) idtr: VmcbSeg,
    pub(crate) tr: VmcbSeg,
    _reserved_a0: [u8; 43],
    pub(crate) cpl: u8,
    _reserved_cc: u32,
    pub(crate) efer: u64,
    _reserved_d8: [u8; 112],
    pub(crate) cr4: u64,
    pub(crate) cr3: u64,
    pub(crate) cr0: u64,
    pub(crate) dr7: u64,
    pub(crate) dr6: u64,
    pub(crate) rflags: u64,
    pub(crate) rip: u64,
    _reserved_180: [u8; 88],
    pub(crate) rsp: u64,
    pub(crate) s_cet: u64,
    pub(crate) ssp: u64,
    pub(crate) isst_addr: u64,
    pub(crate) rax: u64,
    pub(crate) star: u64,
    pub(crate) lstar: u64,
    pub(crate) cstar: u64,
    pub(crate) sfmask: u64,
    pub(crate) kernel_gs_base: u64,
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) cr2: u64,
    _reserved_248: [u8; 32],
    pub(crate) g_pat: u64,
    pub(crate) dbgctl: u64,
    pub(crate) br_from: u64,
    pub(crate) br_to: u64,
    pub(crate) last_excp_from: u64,
    pub(crate) last_excp_to: u64,
    _reserved_298: [u8; 0xc00 - 0x298],
}

/// A whole VMCB: one naturally aligned 4 KiB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub(crate) struct Vmcb {
    pub(crate) control: Control,
    pub(crate) save: Save,
}

const _: () = {
    assert!(size_of::<VmcbSeg>() == 16);
    assert!(size_of::<Control>() == 0x400);
    assert!(size_of::<Save>() == 0xc00);
    assert!(size_of::<Vmcb>() == 4096);
    assert!(offset_of!(Control, pause_filter_thresh) == 0x3c);
    assert!(offset_of!(Control, iopm_base_pa) == 0x40);
    assert!(offset_of!(Control, asid) == 0x58);
    assert!(offset_of!(Control, tlb_ctl) == 0x5c);
    assert!(offset_of!(Control, int_ctl) == 0x60);
    assert!(offset_of!(Control, int_state) == 0x68);
    assert!(offset_of!(Control, exit_code) == 0x70);
    assert!(offset_of!(Control, exit_int_info) == 0x88);
    assert!(offset_of!(Control, misc_ctl) == 0x90);
    assert!(offset_of!(Control, event_inj) == 0xa8);
    assert!(offset_of!(Control, nested_cr3) == 0xb0);
    assert!(offset_of!(Control, clean) == 0xc0);
    assert!(offset_of!(Control, next_rip) == 0xc8);
    assert!(offset_of!(Control, insn_len) == 0xd0);
    assert!(offset_of!(Save, tr) == 0x90);
    assert!(offset_of!(Save, cpl) == 0xcb);
    assert!(offset_of!(Save, efer) == 0xd0);
    assert!(offset_of!(Save, cr4) == 0x148);
    assert!(offset_of!(Save, rip) == 0x178);
    assert!(offset_of!(Save, rsp) == 0x1d8);
    assert!(offset_of!(Save, rax) == 0x1f8);
    assert!(offset_of!(Save, star) == 0x200);
    assert!(offset_of!(Save, cr2) == 0x240);
    assert!(offset_of!(Save, g_pat) == 0x268);
    assert!(offset_of!(Vmcb, save) == 0x400);
};

impl Control {
    /// Sets intercept `bit` of intercept word `word`.
    pub(crate) fn intercept(&mut self, word: usize, bit: u32) {
        if let Some(w) = self.intercepts.get_mut(word) {
            *w |= 1 << bit;
        }
    }

    /// Clears intercept `bit` of intercept word `word`.
    pub(crate) fn clear_intercept(&mut self, word: usize, bit: u32) {
        if let Some(w) = self.intercepts.get_mut(word) {
            *w &= !(1 << bit);
        }
    }

    /// Sets intercept `bit` of intercept word `word` if `on`, else
    /// clears it.
    pub(crate) fn set_intercept(&mut self, word: usize, bit: u32, on: bool) {
        if on {
            self.intercept(word, bit);
        } else {
            self.clear_intercept(word, bit);
        }
    }

    /// Whether intercept `bit` of word `word` is set.
    #[cfg(test)]
    pub(crate) fn is_intercepted(&self, word: usize, bit: u32) -> bool {
        self.intercepts
            .get(word)
            .is_some_and(|w| w & (1 << bit) != 0)
    }

    /// The intercepts every rkvm guest runs with: physical interrupts, NMIs,
    /// SMIs and INIT (the host's), CPUID, HLT, all port I/O and MSR accesses
    /// (through the permission maps), shutdown, task switches, and every
    /// SVM and other instruction rkvm does not virtualize (answered with
    /// `#UD` or an internal error). Debug-register accesses exit because
    /// DR0-3 are not switched by VMRUN.
    pub(crate) fn set_default_intercepts(&mut self) {
        use intercept::*;
        self.intercepts = [0; 6];
        // Writes to CR4 (word 0: reads in bits 0-15, writes in 16-31),
        // checked against the guest's CPUID.
        self.intercepts[0] = 1 << (16 + 4);
        // DR0-7 reads and writes.
        self.intercepts[1] = 0xffff_ffff;
        for bit in [
            INTR,
            NMI,
            SMI,
            INIT,
            CR0_SEL_WRITE,
            RDPMC,
            CPUID,
            RSM,
            INVD,
            HLT,
            INVLPGA,
            IOIO_PROT,
            MSR_PROT,
            TASK_SWITCH,
            SHUTDOWN,
        ] {
            self.intercept(3, bit);
        }
        for bit in [
            VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, RDTSCP, MONITOR, MWAIT, MWAIT_COND,
            XSETBV, RDPRU,
        ] {
            self.intercept(4, bit);
        }
        for bit in [INVLPGB, INVLPGB_ILLEGAL, INVPCID, MCOMMIT, TLBSYNC] {
            self.intercept(5, bit);
        }
    }
}

impl Save {
    /// The guest-state checks VMRUN makes before entering (AMD APM vol. 2,
    /// 15.5.1, "Canonicalization and Consistency Checks"), so an invalid
    /// state fails entry exactly as on hardware, whatever the emulated CPU
    /// under rkvm checks. `maxphyaddr` bounds CR3.
    pub(crate) fn entry_is_valid(&self, maxphyaddr: u32) -> bool {
        use crate::arch::{cr0::*, cr4::PAE as CR4_PAE, efer::LME as EFER_LME};
        const CR0_PE: u64 = PE;
        const CR0_NW: u64 = NW;
        const CR0_CD: u64 = CD;
        const CR0_PG: u64 = PG;
        // SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE.
        const EFER_DEFINED: u64 = 0xfd01;
        // CR4 bits defined on AMD64 CPUs through CET (bit 23); the rest MBZ.
        const CR4_RESERVED: u64 = !0x00ff_ffff;
        const L: u16 = 1 << 9;
        const DB: u16 = 1 << 10;
        let long = self.efer & EFER_LME != 0 && self.cr0 & CR0_PG != 0;
        let cr3_reserved = !0u64 << maxphyaddr.clamp(32, 52);
        !(self.efer & EFER_SVME == 0
            || self.efer & !EFER_DEFINED != 0
            || (self.cr0 & CR0_CD == 0 && self.cr0 & CR0_NW != 0)
            || self.cr0 >> 32 != 0
            || self.cr4 & CR4_RESERVED != 0
            || self.dr6 >> 32 != 0
            || self.dr7 >> 32 != 0
            || (long && self.cr3 & cr3_reserved != 0)
            || (long && self.cr4 & CR4_PAE == 0)
            || (long && self.cr0 & CR0_PE == 0)
            || (long && self.cs.attrib & L != 0 && self.cs.attrib & DB != 0))
    }
}

/// Exits that mean "this instruction is not available to the guest": SVM's
/// own instructions and the others rkvm does not virtualize. The guest gets
/// `#UD`, as on a CPU without them.
pub(crate) fn is_undefined_instruction_exit(code: u64) -> bool {
    use exit::*;
    matches!(
        code,
        VMRUN
            | VMMCALL
            | VMLOAD
            | VMSAVE
            | STGI
            | CLGI
            | SKINIT
            | RDTSCP
            | MONITOR
            | MWAIT
            | MWAIT_COND
            | RDPRU
            | INVLPGA
            | INVLPGB
            | INVLPGB_ILLEGAL
            | INVPCID
            | MCOMMIT
            | TLBSYNC
    )
}

/// Length of the instruction that caused `exit_code` when the CPU does not
/// report the next RIP (no NRIP save, as under QEMU TCG), for the exits
/// whose instruction has one unprefixed encoding. `None` for the others.
pub(crate) fn fixed_insn_len(exit_code: u64) -> Option<u64> {
    use exit::*;
    match exit_code {
        HLT => Some(1),
        CPUID | MSR => Some(2),
        XSETBV => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioio_decoding() {
        // `out dx, al` to port 0x3f8: size 1, 16-bit addresses (real mode).
        let i = IoioInfo::decode(0x03f8_0000 | 1 << 4 | 1 << 7).unwrap();
        assert_eq!(
            i,
            IoioInfo {
                port: 0x3f8,
                is_in: false,
                string: false,
                rep: false,
                size: 1,
                addr_bits: 16,
                seg: 0
            }
        );
        // `rep insd` with 64-bit addresses.
        let i = IoioInfo::decode(0x0080_0000 | 1 | 1 << 2 | 1 << 3 | 4 << 4 | 4 << 7).unwrap();
        assert!(i.is_in && i.string && i.rep);
        assert_eq!((i.port, i.size, i.addr_bits), (0x80, 4, 64));
        // Size fields that are not one-hot are refused.
        assert_eq!(IoioInfo::decode(3 << 4 | 1 << 7), None);
        assert_eq!(IoioInfo::decode(3 << 7 | 1 << 4), None);
        // QEMU leaves the address size out of non-string I/O.
        assert_eq!(
            IoioInfo::decode(0x10_0010).map(|i| (i.port, i.size, i.addr_bits)),
            Some((0x10, 1, 0))
        );
    }

    #[test]
    fn default_intercepts() {
        let mut c = Control {
            intercepts: [0xdead; 6],
            ..zeroed_control()
        };
        c.set_default_intercepts();
        assert!(c.is_intercepted(3, intercept::CPUID));
        assert!(c.is_intercepted(3, intercept::SHUTDOWN));
        assert!(c.is_intercepted(4, intercept::VMRUN));
        // PAUSE (word 3, bit 23) runs in the guest.
        assert!(!c.is_intercepted(3, 23));
        // VMRUN must be intercepted or the CPU refuses the VMCB.
        assert_eq!(c.intercepts[4] & 1, 1);
        assert!(c.is_intercepted(0, 20), "CR4 writes");
        assert!(c.is_intercepted(4, intercept::XSETBV));
        assert!(is_undefined_instruction_exit(exit::VMMCALL));
        assert!(!is_undefined_instruction_exit(exit::XSETBV));
        assert!(!is_undefined_instruction_exit(exit::CPUID));
    }

    #[test]
    fn entry_checks() {
        // SAFETY: `Save` is integers and arrays; all-zero is valid.
        let mut s: Save = unsafe { core::mem::zeroed() };
        assert!(!s.entry_is_valid(48), "SVME clear");
        s.efer = EFER_SVME;
        assert!(s.entry_is_valid(48));
        s.cr0 = 1 << 29;
        assert!(!s.entry_is_valid(48), "NW without CD");
        s.cr0 = 1 | 1 << 31;
        s.cr4 = 1 << 5;
        s.efer = EFER_SVME | 1 << 8 | 1 << 10;
        s.cs.attrib = 1 << 9;
        assert!(s.entry_is_valid(48), "64-bit code");
        s.cs.attrib |= 1 << 10;
        assert!(!s.entry_is_valid(48), "CS.L and CS.D");
        s.cs.attrib = 1 << 9;
        s.cr4 = 0;
        assert!(!s.entry_is_valid(48), "long mode without PAE");
        s.cr4 = 1 << 5;
        s.cr3 = 1 << 50;
        assert!(!s.entry_is_valid(48), "CR3 beyond MAXPHYADDR");
    }

    #[test]
    fn switched_msrs_are_listed() {
        for m in VMCB_SWITCHED {
            assert!(msr::INDEX_LIST.contains(&m));
        }
    }

    #[test]
    fn events_round_trip() {
        use crate::exit_info::Event;
        for e in [
            Event::Interrupt { vector: 0x30 },
            Event::Nmi,
            Event::Exception {
                vector: 13,
                error_code: Some(0x1234),
            },
            Event::Exception {
                vector: 6,
                error_code: None,
            },
        ] {
            let (w, err) = event::encode(Some(e));
            assert_eq!(event::decode(w, err), Some(e));
        }
        assert_eq!(event::encode(None), (0, 0));
        assert_eq!(event::decode(0x8000_0430, 0), Some(Event::Soft));
        assert_eq!(event::decode(0x30, 0), None);
        assert_eq!(event::encode(Some(Event::Nmi)).0, 0x8000_0202);
    }

    #[test]
    fn event_injection_encoding() {
        assert_eq!(event_inj_exception(6, None), (0x8000_0306, 0));
        assert_eq!(event_inj_exception(13, Some(0)), (0x8000_0b0d, 0));
    }

    fn zeroed_control() -> Control {
        // SAFETY: `Control` is plain integers and arrays of them, for which
        // all-zero bytes are a valid value.
        unsafe { core::mem::zeroed() }
    }
}
