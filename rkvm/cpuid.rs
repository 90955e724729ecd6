// SPDX-License-Identifier: GPL-2.0

//! Guest CPUID: `struct kvm_cpuid_entry2` and the lookup the CPUID exit
//! handler does in the table userspace set with `KVM_SET_CPUID2`.
//!
//! Pure logic (only `core`), tested on the host.

use crate::abi::field;

/// Size of `struct kvm_cpuid_entry2`.
pub(crate) const ENTRY_SIZE: usize = 40;
/// Size of the `struct kvm_cpuid2` header (`nent`, padding).
pub(crate) const HEADER_SIZE: usize = 8;
/// Most entries a table may have (KVM's `KVM_MAX_CPUID_ENTRIES`).
pub(crate) const MAX_ENTRIES: usize = 256;
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the entry applies to one subleaf.
pub(crate) const FLAG_SIGNIFICANT_INDEX: u32 = 1 << 0;

/// `struct kvm_cpuid_entry2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuidEntry {
    pub(crate) function: u32,
    pub(crate) index: u32,
    pub(crate) flags: u32,
    pub(crate) regs: [u32; 4],
}

impl CpuidEntry {
    pub(crate) fn from_bytes(b: &[u8; ENTRY_SIZE]) -> Self {
        let w = |i: usize| u32::from_ne_bytes(field(b, i * 4));
        Self {
            function: w(0),
            index: w(1),
            flags: w(2),
            regs: [w(3), w(4), w(5), w(6)],
        }
    }

    pub(crate) fn to_bytes(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        let words = [
            self.function,
            self.index,
            self.flags,
            self.regs[0],
            self.regs[1],
            self.regs[2],
            self.regs[3],
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        b
    }

    fn matches(&self, function: u32, index: u32) -> bool {
        self.function == function
            && (self.flags & FLAG_SIGNIFICANT_INDEX == 0 || self.index == index)
    }
}

/// What the guest's CPUID returns for `function`/`index`: the matching
/// entry's EAX, EBX, ECX, EDX, or zeros when there is none (as KVM does for
/// a guest that is not Intel-compatible; rkvm runs on AMD hosts).
pub(crate) fn lookup(table: &[CpuidEntry], function: u32, index: u32) -> [u32; 4] {
    table
        .iter()
        .find(|e| e.matches(function, index))
        .map_or([0; 4], |e| e.regs)
}

/// The fixed leaves `KVM_GET_SUPPORTED_CPUID` reports; leaf 0xD follows
/// with one subleaf per offered XSAVE component.
const FIXED_LEAVES: [u32; 9] = [
    0,
    1,
    6,
    7,
    0x8000_0000,
    0x8000_0001,
    0x8000_0002,
    0x8000_0003,
    0x8000_0004,
];

/// Most entries the supported table has: the fixed leaves, 0x8000_0008,
/// the two KVM leaves, and leaf 0xD subleaves 0, 1 and one per component
/// bit 2..63.
pub(crate) const MAX_SUPPORTED: usize = FIXED_LEAVES.len() + 1 + 2 + 2 + 62;

// Leaf 1 EDX: x87, VME, DE, PSE, TSC, MSR, PAE, MCE, CX8, SEP, MTRR, PGE,
// MCA, CMOV, PAT, PSE36, CLFSH, MMX, FXSR, SSE, SSE2 (MCE, MCA and the MTRRs
// are emulated: `mce.rs`, `mtrr.rs`), and the APIC (the in-kernel one, or
// the VMM's: KVM always offers it). Not HTT.
const LEAF1_EDX: u32 = 0x078b_fbff;
/// Leaf 1 EDX: the APIC, which the guest sees only while its
/// `IA32_APIC_BASE` enables it (KVM's `kvm_update_cpuid_runtime`).
const LEAF1_EDX_APIC: u32 = 1 << 9;
/// Leaf 6 EAX: ARAT, the APIC timer keeps running in deep C-states (the
/// in-kernel APIC's timer is a host timer), as KVM reports.
const LEAF6_EAX_ARAT: u32 = 1 << 2;
/// Leaf 7 EDX: IA32_ARCH_CAPABILITIES, which rkvm emulates on every host
/// (`vcpu_msrs.rs`), as KVM.
pub(crate) const LEAF7_EDX_ARCH_CAPABILITIES: u32 = 1 << 29;
// Leaf 1 ECX: SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT,
// AES, RDRAND. Not x2APIC.
const LEAF1_ECX: u32 = 0x42d8_2203;
/// Leaf 1 ECX: the guest runs under a hypervisor (set whatever the host
/// says, as KVM does): what a guest checks before it looks for the
/// hypervisor's leaves at 0x4000_0000.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1 ECX with the guest's extended state switched (`xsave.rs`): XSAVE,
// and the AVX instructions FMA, AVX, F16C. OSXSAVE is not a feature but
// CR4.OSXSAVE, which the CPUID exit reports as the guest set it.
const LEAF1_ECX_XSAVE: u32 = 1 << 26;
/// Leaf 1 ECX: x2APIC (21) and TSC-deadline timer (24).
const LEAF1_ECX_EMULATED: u32 = 1 << 21 | 1 << 24;
const LEAF1_ECX_AVX: u32 = 1 << 12 | 1 << 28 | 1 << 29;
/// Leaf 1 ECX: OSXSAVE.
pub(crate) const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
// Leaf 7 EBX: BMI1, BMI2, ERMS (plain instructions); AVX2 with AVX;
// AVX512F/DQ/CD/BW/VL with the AVX-512 components.
const LEAF7_EBX: u32 = 1 << 3 | 1 << 8 | 1 << 9;
/// Leaf 7 EBX: IA32_TSC_ADJUST, which rkvm emulates on every host (as
/// KVM does).
const LEAF7_EBX_TSC_ADJUST: u32 = 1 << 1;
const LEAF7_EBX_AVX: u32 = 1 << 5;
const LEAF7_EBX_AVX512: u32 = 1 << 16 | 1 << 17 | 1 << 28 | 1 << 30 | 1 << 31;
// Leaf 0xD subleaf 1 EAX: XSAVEOPT, XSAVEC, XGETBV with ECX=1. Not XSAVES
// (no IA32_XSS).
const LEAF_D1_EAX: u32 = 0x7;
// Leaf 0x8000_0001 EDX: SYSCALL, NX, MMXEXT, FXSR_OPT, 1 GiB pages, LM.
const EXT1_EDX: u32 = 0x2650_0800;
/// Leaf 0x8000_0001 EDX: RDTSCP, where the backend can let the guest run
/// it (the guest's `TSC_AUX` is loaded around each entry).
const EXT1_EDX_RDTSCP: u32 = 1 << 27;
// Leaf 0x8000_0001 ECX: LAHF/SAHF, ABM/LZCNT, SSE4A, 3DNow! prefetch.
const EXT1_ECX: u32 = 0x0000_0161;

/// The table `KVM_GET_SUPPORTED_CPUID` reports.
pub(crate) struct Supported {
    entries: [CpuidEntry; MAX_SUPPORTED],
    len: usize,
}

impl Supported {
    pub(crate) fn entries(&self) -> &[CpuidEntry] {
        &self.entries[..self.len]
    }

    fn push(&mut self, function: u32, index: u32, flags: u32, regs: [u32; 4]) {
        if let Some(e) = self.entries.get_mut(self.len) {
            *e = CpuidEntry {
                function,
                index,
                flags,
                regs,
            };
            self.len += 1;
        }
    }
}

/// What rkvm supports for a guest, computed from the host's CPUID
/// (`host(leaf, subleaf)`) and the XSAVE components the host kernel
/// enables (`host_xcr0`, 0 without XSAVE), and whether the backend can
/// run RDTSCP for guests (`rdtscp`): the vendor, family/model, brand
/// string and address widths pass through; feature bits are masked to
/// what guests can use under rkvm.
pub(crate) fn supported(
    host: impl Fn(u32, u32) -> [u32; 4],
    host_xcr0: u64,
    rdtscp: bool,
) -> Supported {
    let xcr0 = if host(1, 0)[2] & LEAF1_ECX_XSAVE != 0 {
        crate::xsave::supported_xcr0(host_xcr0)
    } else {
        0
    };
    let avx = xcr0 & crate::arch::xcr0::YMM != 0;
    let avx512 = xcr0 & crate::arch::xcr0::AVX512 != 0;
    let mut out = Supported {
        entries: [CpuidEntry::default(); MAX_SUPPORTED],
        len: 0,
    };
    for function in FIXED_LEAVES {
        let mut regs = host(function, 0);
        let mut flags = 0;
        match function {
            0 => regs[0] = regs[0].min(0xd),
            1 => {
                // EBX bits 31:24 (initial APIC ID) and 23:16 (logical CPU
                // count) are the VMM's to fill per vCPU.
                regs[1] &= 0xffff;
                let mut ecx = LEAF1_ECX;
                if xcr0 != 0 {
                    ecx |= LEAF1_ECX_XSAVE;
                }
                if avx {
                    ecx |= LEAF1_ECX_AVX;
                }
                // x2APIC and the TSC-deadline timer are the in-kernel
                // APIC's, whatever the host has (KVM's emulated features).
                regs[2] = (regs[2] & ecx) | LEAF1_ECX_EMULATED | LEAF1_ECX_HYPERVISOR;
                regs[3] &= LEAF1_EDX;
            }
            6 => regs = [LEAF6_EAX_ARAT, 0, 0, 0],
            7 => {
                flags = FLAG_SIGNIFICANT_INDEX;
                let mut ebx = LEAF7_EBX;
                if avx {
                    ebx |= LEAF7_EBX_AVX;
                }
                if avx512 {
                    ebx |= LEAF7_EBX_AVX512;
                }
                regs = [0, regs[1] & ebx | LEAF7_EBX_TSC_ADJUST, 0, LEAF7_EDX_ARCH_CAPABILITIES];
            }
            0x8000_0000 => regs[0] = regs[0].min(0x8000_0008),
            0x8000_0001 => {
                regs[0] = 0;
                regs[1] = 0;
                regs[2] &= EXT1_ECX;
                regs[3] &= EXT1_EDX | if rdtscp { EXT1_EDX_RDTSCP } else { 0 };
            }
            _ => {}
        }
        out.push(function, 0, flags, regs);
    }
    let mut regs = host(0x8000_0008, 0);
    regs = [regs[0] & 0xffff, 0, 0, 0];
    out.push(0x8000_0008, 0, 0, regs);
    // KVM's own leaves: the signature, and the paravirtual features rkvm
    // implements (kvmclock: `pvclock.rs`).
    let [ebx, ecx, edx] = crate::pvclock::SIGNATURE;
    out.push(
        crate::pvclock::CPUID_SIGNATURE,
        0,
        0,
        [crate::pvclock::CPUID_FEATURES, ebx, ecx, edx],
    );
    out.push(crate::pvclock::CPUID_FEATURES, 0, 0, [crate::pvclock::FEATURES, 0, 0, 0]);
    if xcr0 != 0 {
        let size = crate::xsave::xsave_size(xcr0, &host);
        let low = xcr0 as u32;
        let high = (xcr0 >> 32) as u32;
        out.push(0xd, 0, FLAG_SIGNIFICANT_INDEX, [low, size, size, high]);
        let d1 = host(0xd, 1)[0] & LEAF_D1_EAX;
        out.push(0xd, 1, FLAG_SIGNIFICANT_INDEX, [d1, 0, 0, 0]);
        for i in 2..64 {
            if xcr0 & (1 << i) != 0 {
                let [size, offset, ecx, _] = host(0xd, i);
                out.push(0xd, i, FLAG_SIGNIFICANT_INDEX, [size, offset, ecx & 0x3, 0]);
            }
        }
    }
    out
}

/// What the guest's CPUID instruction returns: the table's answer, with
/// the bits KVM keeps in step with the guest's state at run time
/// (`kvm_update_cpuid_runtime`): OSXSAVE mirrors CR4.OSXSAVE, the APIC
/// bit `IA32_APIC_BASE`'s enable (`apic_enabled`), and leaf 0xD's EBX is
/// the XSAVE area size for the guest's current XCR0.
pub(crate) fn guest_cpuid(
    table: &[CpuidEntry],
    function: u32,
    index: u32,
    osxsave: bool,
    apic_enabled: bool,
    xsave_size_now: impl Fn() -> u32,
) -> [u32; 4] {
    let mut regs = lookup(table, function, index);
    match (function, index) {
        (1, _) => {
            regs[2] &= !LEAF1_ECX_OSXSAVE;
            if osxsave && regs[2] & LEAF1_ECX_XSAVE != 0 {
                regs[2] |= LEAF1_ECX_OSXSAVE;
            }
            if apic_enabled {
                regs[3] |= LEAF1_EDX_APIC;
            } else {
                regs[3] &= !LEAF1_EDX_APIC;
            }
        }
        (0xd, 0) if regs != [0; 4] => regs[1] = xsave_size_now(),
        _ => {}
    }
    regs
}

/// The XSAVE components a guest CPUID table offers (leaf 0xD subleaf 0
/// EAX and EDX), before rkvm's own limits.
pub(crate) fn guest_xcr0_bits(table: &[CpuidEntry]) -> u64 {
    let [eax, _, _, edx] = lookup(table, 0xd, 0);
    (edx as u64) << 32 | eax as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_masks_features() {
        let s = supported(|_, _| [u32::MAX; 4], 0, false);
        let t = s.entries();
        assert_eq!(lookup(t, 0, 0)[0], 0xd);
        assert_eq!(lookup(t, 0x8000_0000, 0)[0], 0x8000_0008);
        let l1 = lookup(t, 1, 0);
        assert_eq!(l1[1], 0xffff);
        assert_ne!(l1[3] & (1 << 9), 0, "the APIC");
        assert_eq!(lookup(t, 6, 0), [4, 0, 0, 0], "ARAT");
        assert_eq!(l1[3] & (1 << 7 | 1 << 12 | 1 << 14), 1 << 7 | 1 << 12 | 1 << 14, "MCE, MTRR, MCA");
        assert_eq!(lookup(t, 7, 0)[3], LEAF7_EDX_ARCH_CAPABILITIES);
        assert_ne!(
            lookup(supported(|_, _| [0; 4], 0, false).entries(), 7, 0)[1] & LEAF7_EBX_TSC_ADJUST,
            0,
            "TSC_ADJUST whatever the host has"
        );
        assert_eq!(l1[2] & (1 << 27), 0, "no OSXSAVE");
        let e1 = lookup(t, 0x8000_0001, 0);
        assert_ne!(e1[3] & (1 << 29), 0, "long mode");
        assert_eq!(e1[3] & (1 << 27), 0, "no RDTSCP unless the backend runs it");
        let with_rdtscp = supported(|_, _| [u32::MAX; 4], 0, true);
        assert_ne!(lookup(with_rdtscp.entries(), 0x8000_0001, 0)[3] & (1 << 27), 0);
        assert_eq!(lookup(t, 0x8000_0008, 0)[0], 0xffff);
        assert_ne!(l1[2] & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(supported(|_, _| [0; 4], 0, true).entries()[1].regs[2] & LEAF1_ECX_HYPERVISOR, 0);
        // "KVMKVMKVM\0\0\0", and kvmclock (both MSR pairs, the stable bit).
        let sig = lookup(t, 0x4000_0000, 0);
        assert_eq!(sig[0], 0x4000_0001);
        let mut name = [0u8; 12];
        for (i, r) in sig[1..].iter().enumerate() {
            name[i * 4..i * 4 + 4].copy_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&name, b"KVMKVMKVM\0\0\0");
        assert_eq!(lookup(t, 0x4000_0001, 0), [1 << 0 | 1 << 3 | 1 << 24, 0, 0, 0]);
    }

    #[test]
    fn supported_xsave_follows_the_host() {
        let host = |leaf: u32, sub: u32| match (leaf, sub) {
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 1) => [0xf, 0, 0, 0],
            _ => [u32::MAX; 4],
        };
        // Without XSAVE in the host kernel: no XSAVE, AVX or leaf 0xD.
        let s = supported(host, 0, false);
        let t = s.entries();
        assert_eq!(lookup(t, 1, 0)[2] & (1 << 26 | 1 << 28), 0);
        assert_eq!(lookup(t, 7, 0)[1] & (1 << 5), 0, "no AVX2");
        assert_eq!(lookup(t, 0xd, 0), [0; 4]);
        // x87, SSE, AVX (and PKRU, which rkvm leaves out).
        let s = supported(host, 0x207, false);
        let t = s.entries();
        let l1 = lookup(t, 1, 0)[2];
        assert_ne!(l1 & (1 << 26), 0, "XSAVE");
        assert_ne!(l1 & (1 << 28), 0, "AVX");
        assert_eq!(l1 & LEAF1_ECX_OSXSAVE, 0, "OSXSAVE is dynamic");
        assert_ne!(lookup(t, 7, 0)[1] & (1 << 5), 0, "AVX2");
        assert_eq!(lookup(t, 7, 0)[1] & (1 << 16), 0, "no AVX-512");
        assert_eq!(lookup(t, 0xd, 0), [7, 832, 832, 0]);
        assert_eq!(lookup(t, 0xd, 1)[0], 7, "no XSAVES");
        assert_eq!(lookup(t, 0xd, 2), [256, 576, 0, 0]);
        assert_eq!(lookup(t, 0xd, 9), [0; 4]);
        assert_eq!(guest_xcr0_bits(t), 7);
        // At run time: OSXSAVE follows CR4, EBX the current XCR0.
        assert_ne!(guest_cpuid(t, 1, 0, true, true, || 0)[2] & LEAF1_ECX_OSXSAVE, 0);
        assert_eq!(guest_cpuid(t, 1, 0, false, true, || 0)[2] & LEAF1_ECX_OSXSAVE, 0);
        assert_eq!(guest_cpuid(t, 0xd, 0, true, true, || 576)[1], 576);
        assert_eq!(guest_cpuid(t, 0xd, 1, true, true, || 576)[1], 0);
        // The APIC bit follows IA32_APIC_BASE's enable.
        assert_ne!(guest_cpuid(t, 1, 0, true, true, || 0)[3] & LEAF1_EDX_APIC, 0);
        assert_eq!(guest_cpuid(t, 1, 0, true, false, || 0)[3] & LEAF1_EDX_APIC, 0);
    }

    #[test]
    fn round_trip() {
        let e = CpuidEntry {
            function: 7,
            index: 1,
            flags: FLAG_SIGNIFICANT_INDEX,
            regs: [1, 2, 3, 4],
        };
        let b = e.to_bytes();
        assert_eq!(&b[36..], &[0; 4]);
        assert_eq!(CpuidEntry::from_bytes(&b), e);
    }

    #[test]
    fn lookup_rules() {
        let t = [
            CpuidEntry {
                function: 0,
                regs: [0xd, 0x68747541, 0x444d4163, 0x69746e65],
                ..Default::default()
            },
            CpuidEntry {
                function: 7,
                index: 0,
                flags: FLAG_SIGNIFICANT_INDEX,
                regs: [1, 0, 0, 0],
            },
            CpuidEntry {
                function: 7,
                index: 1,
                flags: FLAG_SIGNIFICANT_INDEX,
                regs: [2, 0, 0, 0],
            },
        ];
        // Without a significant index, the subleaf does not matter.
        assert_eq!(lookup(&t, 0, 99)[1], 0x68747541);
        assert_eq!(lookup(&t, 7, 0)[0], 1);
        assert_eq!(lookup(&t, 7, 1)[0], 2);
        assert_eq!(lookup(&t, 7, 2), [0; 4]);
        assert_eq!(lookup(&t, 0x8000_0000, 0), [0; 4]);
        assert_eq!(lookup(&[], 0, 0), [0; 4]);
    }
}
