// SPDX-License-Identifier: GPL-2.0

//! Architectural register bits of x86-64, defined once for every part of
//! rkvm (register checks, the walker, the emulator, both backends).
//!
//! Pure definitions (only `core`). Each register's bits are listed as the
//! manuals list them, whether rkvm uses every one yet or not.
#![allow(dead_code)]

/// CR0 (Intel SDM vol. 3, 2.5; AMD APM vol. 2, 3.1.1).
pub(crate) mod cr0 {
    pub(crate) const PE: u64 = 1 << 0;
    pub(crate) const MP: u64 = 1 << 1;
    pub(crate) const EM: u64 = 1 << 2;
    pub(crate) const TS: u64 = 1 << 3;
    pub(crate) const ET: u64 = 1 << 4;
    pub(crate) const NE: u64 = 1 << 5;
    pub(crate) const WP: u64 = 1 << 16;
    pub(crate) const AM: u64 = 1 << 18;
    pub(crate) const NW: u64 = 1 << 29;
    pub(crate) const CD: u64 = 1 << 30;
    pub(crate) const PG: u64 = 1 << 31;
}

/// CR4.
pub(crate) mod cr4 {
    pub(crate) const VME: u64 = 1 << 0;
    pub(crate) const PVI: u64 = 1 << 1;
    pub(crate) const TSD: u64 = 1 << 2;
    pub(crate) const DE: u64 = 1 << 3;
    pub(crate) const PSE: u64 = 1 << 4;
    pub(crate) const PAE: u64 = 1 << 5;
    pub(crate) const MCE: u64 = 1 << 6;
    pub(crate) const PGE: u64 = 1 << 7;
    pub(crate) const PCE: u64 = 1 << 8;
    pub(crate) const OSFXSR: u64 = 1 << 9;
    pub(crate) const OSXMMEXCPT: u64 = 1 << 10;
    pub(crate) const UMIP: u64 = 1 << 11;
    pub(crate) const LA57: u64 = 1 << 12;
    pub(crate) const VMXE: u64 = 1 << 13;
    pub(crate) const SMXE: u64 = 1 << 14;
    pub(crate) const FSGSBASE: u64 = 1 << 16;
    pub(crate) const PCIDE: u64 = 1 << 17;
    pub(crate) const OSXSAVE: u64 = 1 << 18;
    pub(crate) const SMEP: u64 = 1 << 20;
    pub(crate) const SMAP: u64 = 1 << 21;
    pub(crate) const PKE: u64 = 1 << 22;

    /// Bits that need no CPUID feature: VME through OSXMMEXCPT.
    pub(crate) const BASE: u64 = VME
        | PVI
        | TSD
        | DE
        | PSE
        | PAE
        | MCE
        | PGE
        | PCE
        | OSFXSR
        | OSXMMEXCPT;
}

/// EFER (MSR 0xc000_0080).
pub(crate) mod efer {
    pub(crate) const SCE: u64 = 1 << 0;
    pub(crate) const LME: u64 = 1 << 8;
    pub(crate) const LMA: u64 = 1 << 10;
    pub(crate) const NXE: u64 = 1 << 11;
    pub(crate) const SVME: u64 = 1 << 12;
}

/// RFLAGS.
pub(crate) mod rflags {
    pub(crate) const CF: u64 = 1 << 0;
    pub(crate) const FIXED: u64 = 1 << 1;
    /// The trap flag: single-step.
    pub(crate) const TF: u64 = 1 << 8;
    pub(crate) const IF: u64 = 1 << 9;
    pub(crate) const DF: u64 = 1 << 10;
    /// Resume: no instruction breakpoint on the next instruction.
    pub(crate) const RF: u64 = 1 << 16;
    pub(crate) const VM: u64 = 1 << 17;
}

/// DR6 bits.
pub(crate) mod dr6 {
    /// The trap was a single step.
    pub(crate) const BS: u64 = 1 << 14;
}

/// XCR0, the XSAVE feature-enable register (SDM vol. 1, 13.3).
pub(crate) mod xcr0 {
    pub(crate) const X87: u64 = 1 << 0;
    pub(crate) const SSE: u64 = 1 << 1;
    pub(crate) const YMM: u64 = 1 << 2;
    pub(crate) const BNDREGS: u64 = 1 << 3;
    pub(crate) const BNDCSR: u64 = 1 << 4;
    pub(crate) const OPMASK: u64 = 1 << 5;
    pub(crate) const ZMM_HI256: u64 = 1 << 6;
    pub(crate) const HI16_ZMM: u64 = 1 << 7;
    pub(crate) const PKRU: u64 = 1 << 9;
    pub(crate) const TILECFG: u64 = 1 << 17;
    pub(crate) const TILEDATA: u64 = 1 << 18;

    pub(crate) const AVX512: u64 = OPMASK | ZMM_HI256 | HI16_ZMM;
    pub(crate) const BNDS: u64 = BNDREGS | BNDCSR;
    pub(crate) const AMX: u64 = TILECFG | TILEDATA;
}

/// Exception vectors.
pub(crate) mod vector {
    pub(crate) const DB: u8 = 1;
    pub(crate) const NMI: u8 = 2;
    pub(crate) const BP: u8 = 3;
    pub(crate) const UD: u8 = 6;
    pub(crate) const GP: u8 = 13;
    pub(crate) const PF: u8 = 14;
    pub(crate) const MC: u8 = 18;
}
