// SPDX-License-Identifier: GPL-2.0

//! The guest's extended state as the architecture defines it: which XCR0
//! values a guest may set (`XSETBV`), how large its XSAVE area is, and
//! which components rkvm offers at all.
//!
//! rkvm switches the guest's whole extended state through the kernel's FPU
//! API (`guest_fpu.rs`) and its XCR0 around every entry, so a guest only
//! ever sees register contents it put there. The components offered are
//! the user states the kernel's guest fpstate holds and that need nothing
//! more from the hypervisor: x87, SSE, AVX and AVX-512. Not PKRU (switched
//! apart from XSAVE by KVM), MPX (deprecated), AMX (needs XFD) or any
//! supervisor state (needs IA32_XSS).
//!
//! Pure logic (only `core`), tested on the host.

use crate::arch::xcr0;

/// `XCR_XFEATURE_ENABLED_MASK`: the only XCR the ISA defines for XSETBV.
pub(crate) const XCR0_INDEX: u32 = 0;

/// The components rkvm can give a guest, if the host has them.
pub(crate) const OFFERABLE: u64 = xcr0::X87 | xcr0::SSE | xcr0::YMM | xcr0::AVX512;

/// Size of the legacy region plus the XSAVE header.
pub(crate) const LEGACY_AND_HEADER: u32 = 512 + 64;

/// What rkvm offers guests on a host whose kernel runs with `host_xcr0`.
pub(crate) const fn supported_xcr0(host_xcr0: u64) -> u64 {
    host_xcr0 & OFFERABLE
}

/// Whether a guest allowed `guest_supported` (its CPUID leaf 0xD masked
/// by what rkvm supports) may load `value` into XCR0: the architectural
/// rules KVM applies in `__kvm_set_xcr` (x87 always on; AVX needs SSE;
/// the AVX-512 and MPX components come as a group; nothing unoffered).
pub(crate) fn xcr0_is_valid(value: u64, guest_supported: u64) -> bool {
    if value & xcr0::X87 == 0 {
        return false;
    }
    if value & xcr0::YMM != 0 && value & xcr0::SSE == 0 {
        return false;
    }
    if value & !(guest_supported | xcr0::X87) != 0 {
        return false;
    }
    if (value & xcr0::BNDREGS == 0) != (value & xcr0::BNDCSR == 0) {
        return false;
    }
    if value & xcr0::AVX512 != 0 {
        if value & xcr0::YMM == 0 || value & xcr0::AVX512 != xcr0::AVX512 {
            return false;
        }
    }
    (value & xcr0::TILECFG == 0) == (value & xcr0::TILEDATA == 0)
}

/// The XSAVE area size (standard format) for the components in `xcr0`:
/// what CPUID leaf 0xD subleaf 0 EBX reports while XCR0 holds `xcr0`, and
/// ECX for the full supported set. `host(0xd, i)` gives the host's
/// `[EAX, EBX, ECX, EDX]`, where subleaf `i` >= 2 has the component's size
/// in EAX and its offset in EBX.
pub(crate) fn xsave_size(xcr0: u64, host: impl Fn(u32, u32) -> [u32; 4]) -> u32 {
    (2..64)
        .filter(|i| xcr0 & (1u64 << i) != 0)
        .map(|i| {
            let [size, offset, ..] = host(0xd, i);
            offset.saturating_add(size)
        })
        .fold(LEGACY_AND_HEADER, u32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Component sizes and offsets of an AVX-512 machine.
    fn host(leaf: u32, sub: u32) -> [u32; 4] {
        assert_eq!(leaf, 0xd);
        match sub {
            2 => [256, 576, 0, 0],
            5 => [64, 1088, 0, 0],
            6 => [512, 1152, 0, 0],
            7 => [1024, 1664, 0, 0],
            _ => [0; 4],
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(xsave_size(xcr0::X87 | xcr0::SSE, host), 576);
        assert_eq!(xsave_size(xcr0::X87 | xcr0::SSE | xcr0::YMM, host), 832);
        assert_eq!(xsave_size(0xe7, host), 2688);
    }

    #[test]
    fn offered() {
        assert_eq!(supported_xcr0(0x2ff), 0xe7);
        assert_eq!(supported_xcr0(0x7), 0x7);
        assert_eq!(supported_xcr0(0x3), 0x3);
    }

    #[test]
    fn xsetbv_rules() {
        let avx = xcr0::X87 | xcr0::SSE | xcr0::YMM;
        assert!(xcr0_is_valid(xcr0::X87, 0));
        assert!(xcr0_is_valid(avx, avx));
        assert!(!xcr0_is_valid(0, avx), "x87 is never off");
        assert!(!xcr0_is_valid(xcr0::SSE, avx), "x87 is never off");
        assert!(!xcr0_is_valid(xcr0::X87 | xcr0::YMM, avx), "AVX without SSE");
        assert!(!xcr0_is_valid(avx, xcr0::X87 | xcr0::SSE), "not offered");
        assert!(!xcr0_is_valid(avx | xcr0::PKRU, avx), "PKRU");
        let all = avx | xcr0::AVX512;
        assert!(xcr0_is_valid(all, all));
        assert!(!xcr0_is_valid(avx | xcr0::OPMASK, all), "AVX-512 is a group");
        assert!(!xcr0_is_valid(xcr0::X87 | xcr0::SSE | xcr0::AVX512, all), "AVX-512 needs AVX");
        assert!(!xcr0_is_valid(xcr0::X87 | xcr0::BNDREGS, u64::MAX), "MPX is a pair");
        assert!(!xcr0_is_valid(avx | xcr0::TILECFG, u64::MAX), "AMX is a pair");
        assert!(!xcr0_is_valid(1 << 63, u64::MAX & !(1 << 63)));
    }
}
