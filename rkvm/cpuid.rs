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

/// Leaves `KVM_GET_SUPPORTED_CPUID` reports.
pub(crate) const SUPPORTED_LEAVES: [u32; 8] = [
    0,
    1,
    0x8000_0000,
    0x8000_0001,
    0x8000_0002,
    0x8000_0003,
    0x8000_0004,
    0x8000_0008,
];

// Leaf 1 EDX: x87, VME, DE, PSE, TSC, MSR, PAE, CX8, SEP, PGE, CMOV, PAT,
// PSE36, CLFSH, MMX, FXSR, SSE, SSE2. Not the APIC, MTRRs, MCE/MCA or HTT:
// rkvm does not emulate them.
const LEAF1_EDX: u32 = 0x078b_a97f;
// Leaf 1 ECX: SSE3, PCLMULQDQ, SSSE3, CX16, SSE4.1, SSE4.2, MOVBE, POPCNT,
// AES, RDRAND. Not XSAVE/OSXSAVE/AVX (no XCR0 switching), x2APIC, or the
// hypervisor bit's friends.
const LEAF1_ECX: u32 = 0x42d8_2203;
// Leaf 0x8000_0001 EDX: SYSCALL, NX, MMXEXT, FXSR_OPT, 1 GiB pages, LM.
// Not RDTSCP (intercepted: TSC_AUX is the host's).
const EXT1_EDX: u32 = 0x2650_0800;
// Leaf 0x8000_0001 ECX: LAHF/SAHF, ABM/LZCNT, SSE4A, 3DNow! prefetch.
const EXT1_ECX: u32 = 0x0000_0161;

/// What rkvm supports for a guest, computed from the host's CPUID
/// (`host(leaf, subleaf)`): the vendor, family/model, brand string and
/// address widths pass through; feature bits are masked to what guests
/// can use under rkvm.
pub(crate) fn supported(
    host: impl Fn(u32, u32) -> [u32; 4],
) -> [CpuidEntry; SUPPORTED_LEAVES.len()] {
    core::array::from_fn(|i| {
        let function = SUPPORTED_LEAVES[i];
        let mut regs = host(function, 0);
        match function {
            0 => regs[0] = regs[0].min(1),
            1 => {
                // EBX bits 31:24 (initial APIC ID) and 23:16 (logical CPU
                // count) are the VMM's to fill per vCPU.
                regs[1] &= 0xffff;
                regs[2] &= LEAF1_ECX;
                regs[3] &= LEAF1_EDX;
            }
            0x8000_0000 => regs[0] = regs[0].min(0x8000_0008),
            0x8000_0001 => {
                regs[0] = 0;
                regs[1] = 0;
                regs[2] &= EXT1_ECX;
                regs[3] &= EXT1_EDX;
            }
            0x8000_0008 => {
                regs[0] &= 0xffff;
                regs[1] = 0;
                regs[2] = 0;
                regs[3] = 0;
            }
            _ => {}
        }
        CpuidEntry {
            function,
            index: 0,
            flags: 0,
            regs,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_masks_features() {
        let t = supported(|_, _| [u32::MAX; 4]);
        assert_eq!(lookup(&t, 0, 0)[0], 1);
        assert_eq!(lookup(&t, 0x8000_0000, 0)[0], 0x8000_0008);
        let l1 = lookup(&t, 1, 0);
        assert_eq!(l1[1], 0xffff);
        assert_eq!(l1[3] & (1 << 9), 0, "no APIC");
        assert_eq!(l1[2] & (1 << 27), 0, "no OSXSAVE");
        let e1 = lookup(&t, 0x8000_0001, 0);
        assert_ne!(e1[3] & (1 << 29), 0, "long mode");
        assert_eq!(e1[3] & (1 << 27), 0, "no RDTSCP");
        assert_eq!(lookup(&t, 0x8000_0008, 0)[0], 0xffff);
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
