// SPDX-License-Identifier: GPL-2.0

//! Which SVM features the CPU offers, decoded from CPUID and `VM_CR`.
//!
//! AMD APM vol. 2, 15.4 ("Enabling SVM") and CPUID Fn8000_000A. Pure logic
//! (only `core`), tested on the host.

/// CPUID leaf with the extended feature flags (ECX bit 2 = SVM).
pub(crate) const CPUID_EXT_FEATURES: u32 = 0x8000_0001;
/// CPUID leaf describing SVM: revision, number of ASIDs, feature bits.
pub(crate) const CPUID_SVM_FEATURES: u32 = 0x8000_000a;
/// `VM_CR`: the firmware's lock over SVM.
pub(crate) const MSR_VM_CR: u32 = 0xc001_0114;
/// `VM_HSAVE_PA`: where VMRUN saves host state.
pub(crate) const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
/// `EFER`, whose SVME bit turns SVM on.
pub(crate) const MSR_EFER: u32 = 0xc000_0080;
/// `EFER.SVME`.
pub(crate) const EFER_SVME: u64 = crate::arch::efer::SVME;

const EXT_ECX_SVM: u32 = 1 << 2;
/// CPUID 0x8000_0001 EDX: 1 GiB pages, in the host's tables and so in NPT.
const EXT_EDX_PAGE1GB: u32 = 1 << 26;
const VM_CR_SVMDIS: u64 = 1 << 4;

const SVM_EDX_NPT: u32 = 1 << 0;
const SVM_EDX_NRIPS: u32 = 1 << 3;
const SVM_EDX_VMCB_CLEAN: u32 = 1 << 5;
const SVM_EDX_FLUSH_BY_ASID: u32 = 1 << 6;
const SVM_EDX_DECODE_ASSISTS: u32 = 1 << 7;

/// CPUID 0x4000_0000 EBX, ECX, EDX of QEMU's TCG accelerator ("TCGTCGTCGTCG").
pub(crate) const QEMU_TCG_SIGNATURE: [u32; 3] = [0x5447_4354, 0x4354_4743, 0x4743_5447];

/// Raw inputs to the decoder, read by the caller on one CPU.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SvmCpuid {
    /// CPUID 0x8000_0000 EAX: the highest extended leaf.
    pub(crate) max_ext_leaf: u32,
    /// CPUID 0x8000_0001 ECX.
    pub(crate) ext_ecx: u32,
    /// CPUID 0x8000_0001 EDX.
    pub(crate) ext_edx: u32,
    /// CPUID 0x8000_000A EBX: number of ASIDs.
    pub(crate) svm_ebx: u32,
    /// CPUID 0x8000_000A EDX: SVM feature bits.
    pub(crate) svm_edx: u32,
    /// CPUID 0x4000_0000 EBX, ECX, EDX: the signature of the hypervisor
    /// (or emulator) under the host, zero on bare metal.
    pub(crate) hypervisor: [u32; 3],
}

/// SVM as this CPU offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SvmFeatures {
    /// Number of ASIDs, ASID 0 (the host's) included.
    pub(crate) nr_asids: u32,
    /// NRIP save: the VMCB reports the next RIP on intercepts. Absent under
    /// QEMU TCG, where instruction lengths must be decoded by rkvm.
    pub(crate) nrip_save: bool,
    /// VMCB clean bits.
    pub(crate) vmcb_clean: bool,
    /// TLB flush by ASID (`TLB_CONTROL` = 3).
    pub(crate) flush_by_asid: bool,
    /// Decode assists.
    pub(crate) decode_assists: bool,
    /// 1 GiB pages, so 1 GiB NPT leaves (NPT walks the host's format).
    pub(crate) npt_1g: bool,
    /// An external interrupt injected by VMRUN must be followed by an
    /// immediate `#VMEXIT`. QEMU TCG's VMRUN delivers it but leaves its
    /// vector recorded as the CPU's pending exception; the next time the
    /// emulator's CPU loop is interrupted (a timer, another vCPU's kick) it
    /// delivers that vector again, as an exception, wherever the guest then
    /// is: usually the handler's first instruction, with IF clear. Any
    /// exit clears the record, and one is forced as KVM forces its
    /// immediate exits (a self-IPI, taken as `#VMEXIT(INTR)` once the event
    /// is in). Stock kvm_amd has no such workaround and its guests see
    /// the same nested interrupts under QEMU TCG.
    pub(crate) exit_after_injected_irq: bool,
}

/// Why rkvm cannot use SVM on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SvmUnsupported {
    /// CPUID does not list SVM.
    NoSvm,
    /// The firmware disabled SVM (`VM_CR.SVMDIS`).
    DisabledByFirmware,
    /// No nested paging: rkvm's MMU needs NPT.
    NoNpt,
    /// Fewer than two ASIDs: nothing left for guests.
    NoAsids,
}

impl SvmUnsupported {
    /// Why, in words, for the kernel log.
    pub(crate) const fn reason(&self) -> &'static str {
        match self {
            Self::NoSvm => "the CPU has no SVM",
            Self::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            Self::NoNpt => "SVM has no nested paging (NPT)",
            Self::NoAsids => "SVM reports no guest ASIDs",
        }
    }
}

/// Whether CPUID 0x8000_0001 ECX lists SVM (and so `VM_CR` exists).
pub(crate) const fn has_svm_bit(ext_ecx: u32) -> bool {
    ext_ecx & EXT_ECX_SVM != 0
}

impl SvmFeatures {
    /// Decodes SVM support. `vm_cr` is `None` when the MSR could not be read
    /// (the CPU then has no SVM either).
    pub(crate) fn decode(id: SvmCpuid, vm_cr: Option<u64>) -> Result<Self, SvmUnsupported> {
        if id.max_ext_leaf < CPUID_SVM_FEATURES || !has_svm_bit(id.ext_ecx) {
            return Err(SvmUnsupported::NoSvm);
        }
        match vm_cr {
            None => return Err(SvmUnsupported::NoSvm),
            Some(v) if v & VM_CR_SVMDIS != 0 => return Err(SvmUnsupported::DisabledByFirmware),
            Some(_) => {}
        }
        if id.svm_edx & SVM_EDX_NPT == 0 {
            return Err(SvmUnsupported::NoNpt);
        }
        if id.svm_ebx < 2 {
            return Err(SvmUnsupported::NoAsids);
        }
        Ok(Self {
            nr_asids: id.svm_ebx,
            nrip_save: id.svm_edx & SVM_EDX_NRIPS != 0,
            vmcb_clean: id.svm_edx & SVM_EDX_VMCB_CLEAN != 0,
            flush_by_asid: id.svm_edx & SVM_EDX_FLUSH_BY_ASID != 0,
            decode_assists: id.svm_edx & SVM_EDX_DECODE_ASSISTS != 0,
            npt_1g: id.ext_edx & EXT_EDX_PAGE1GB != 0,
            exit_after_injected_irq: id.hypervisor == QEMU_TCG_SIGNATURE,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What QEMU TCG reports for `-cpu EPYC,+svm,+npt`: NPT, no NRIP save.
    fn qemu_epyc() -> SvmCpuid {
        SvmCpuid {
            max_ext_leaf: 0x8000_001f,
            ext_ecx: EXT_ECX_SVM,
            ext_edx: EXT_EDX_PAGE1GB,
            svm_ebx: 16,
            svm_edx: SVM_EDX_NPT,
            hypervisor: QEMU_TCG_SIGNATURE,
        }
    }

    #[test]
    fn qemu_tcg_epyc_is_usable_without_nrips() {
        let f = SvmFeatures::decode(qemu_epyc(), Some(0)).unwrap();
        assert_eq!(f.nr_asids, 16);
        assert!(!f.nrip_save && !f.vmcb_clean && !f.flush_by_asid && !f.decode_assists);
        assert!(f.npt_1g);
        assert!(f.exit_after_injected_irq);
    }

    /// CPUID 0x4000_0000 EBX, ECX, EDX spelling `name`.
    fn signature(name: &[u8; 12]) -> [u32; 3] {
        core::array::from_fn(|i| {
            u32::from_le_bytes([
                name[4 * i],
                name[4 * i + 1],
                name[4 * i + 2],
                name[4 * i + 3],
            ])
        })
    }

    #[test]
    fn the_tcg_signature_spells_tcgtcgtcgtcg() {
        assert_eq!(QEMU_TCG_SIGNATURE, signature(b"TCGTCGTCGTCG"));
    }

    #[test]
    fn other_hosts_need_no_exit_after_injection() {
        let mut id = qemu_epyc();
        for host in [
            [0; 3],
            signature(b" KVMKVMKVM  "),
            signature(b"Microsoft Hv"),
        ] {
            id.hypervisor = host;
            assert!(
                !SvmFeatures::decode(id, Some(0))
                    .unwrap()
                    .exit_after_injected_irq
            );
        }
    }

    #[test]
    fn feature_bits_are_decoded() {
        let mut id = qemu_epyc();
        id.svm_edx |=
            SVM_EDX_NRIPS | SVM_EDX_VMCB_CLEAN | SVM_EDX_FLUSH_BY_ASID | SVM_EDX_DECODE_ASSISTS;
        let f = SvmFeatures::decode(id, Some(0)).unwrap();
        assert!(f.nrip_save && f.vmcb_clean && f.flush_by_asid && f.decode_assists);
    }

    #[test]
    fn refusals() {
        let mut id = qemu_epyc();
        assert_eq!(
            SvmFeatures::decode(id, Some(VM_CR_SVMDIS)),
            Err(SvmUnsupported::DisabledByFirmware)
        );
        assert_eq!(SvmFeatures::decode(id, None), Err(SvmUnsupported::NoSvm));
        id.svm_edx = 0;
        assert_eq!(SvmFeatures::decode(id, Some(0)), Err(SvmUnsupported::NoNpt));
        id = qemu_epyc();
        id.svm_ebx = 1;
        assert_eq!(
            SvmFeatures::decode(id, Some(0)),
            Err(SvmUnsupported::NoAsids)
        );
        id = qemu_epyc();
        id.max_ext_leaf = 0x8000_0008;
        assert_eq!(SvmFeatures::decode(id, Some(0)), Err(SvmUnsupported::NoSvm));
        id = qemu_epyc();
        id.ext_ecx = 0;
        assert_eq!(SvmFeatures::decode(id, Some(0)), Err(SvmUnsupported::NoSvm));
    }
}
