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

#[cfg(test)]
mod tests {
    use super::*;

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
