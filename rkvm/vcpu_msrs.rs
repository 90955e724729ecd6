// SPDX-License-Identifier: GPL-2.0

//! The MSRs of a vCPU that live outside the backend's register state: the
//! machine-check banks (`mce.rs`), the MTRRs (`mtrr.rs`), and the
//! model-specific MSRs a Linux guest reads or writes at boot (microcode
//! revision, ARCH_CAPABILITIES, AMD's HWCR and DE_CFG, and the legacy
//! ones KVM answers with fixed values); and the feature MSRs of the system
//! fd (`KVM_GET_MSR_FEATURE_INDEX_LIST`, `KVM_GET_MSRS` on `/dev/rkvm`).
//!
//! Pure logic (only `core`), tested on the host.

use crate::{
    mce::{self, Mce},
    msr,
    mtrr::{self, Mtrrs},
};

pub(crate) const PLATFORM_ID: u32 = 0x17;
pub(crate) const EBL_CR_POWERON: u32 = 0x2a;
pub(crate) const EBC_FREQUENCY_ID: u32 = 0x2c;
pub(crate) const UCODE_WRITE: u32 = 0x79;
/// IA32_BIOS_SIGN_ID; MSR_AMD64_PATCH_LEVEL on AMD.
pub(crate) const UCODE_REV: u32 = 0x8b;
pub(crate) const P6_PERFCTR0: u32 = 0xc1;
pub(crate) const P6_PERFCTR1: u32 = 0xc2;
pub(crate) const FSB_FREQ: u32 = 0xcd;
pub(crate) const ARCH_CAPABILITIES: u32 = 0x10a;
pub(crate) const BBL_CR_CTL3: u32 = 0x11e;
pub(crate) const P6_EVNTSEL0: u32 = 0x186;
pub(crate) const P6_EVNTSEL1: u32 = 0x187;
pub(crate) const PERF_STATUS: u32 = 0x198;
pub(crate) const PERF_CTL: u32 = 0x199;
pub(crate) const POWER_CTL: u32 = 0x1fc;
pub(crate) const RAPL_POWER_UNIT: u32 = 0x606;
pub(crate) const PKG_ENERGY_STATUS: u32 = 0x611;
pub(crate) const DRAM_ENERGY_STATUS: u32 = 0x619;
pub(crate) const PP0_ENERGY_STATUS: u32 = 0x639;
pub(crate) const PP1_ENERGY_STATUS: u32 = 0x641;
pub(crate) const K7_EVNTSEL0: u32 = 0xc001_0000;
pub(crate) const K7_PERFCTR3: u32 = 0xc001_0007;
pub(crate) const AMD64_SYSCFG: u32 = 0xc001_0010;
pub(crate) const K7_HWCR: u32 = 0xc001_0015;
pub(crate) const K7_CLK_CTL: u32 = 0xc001_001b;
pub(crate) const AMD64_NB_CFG: u32 = 0xc001_001f;
pub(crate) const AMD64_PATCH_LOADER: u32 = 0xc001_0020;
pub(crate) const K8_INT_PENDING_MSG: u32 = 0xc001_0055;
pub(crate) const FAM10H_MMIO_CONF_BASE: u32 = 0xc001_0058;
pub(crate) const K8_TSEG_ADDR: u32 = 0xc001_0112;
pub(crate) const K8_TSEG_MASK: u32 = 0xc001_0113;
pub(crate) const AMD64_DC_CFG: u32 = 0xc001_1022;
pub(crate) const AMD64_TW_CFG: u32 = 0xc001_1023;
pub(crate) const AMD64_DE_CFG: u32 = 0xc001_1029;
pub(crate) const AMD64_BU_CFG2: u32 = 0xc001_102a;
pub(crate) const F15H_EX_CFG: u32 = 0xc001_102c;

/// HWCR: McStatusWrEn, the guest may write MCi_STATUS.
pub(crate) const HWCR_MC_STATUS_WR_EN: u64 = 1 << 18;
/// HWCR: TscFreqSel (the TSC counts at the P0 frequency).
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;
/// HWCR bits a write may carry and that are dropped: TLB cache disable,
/// flush filter disable, IGNNE emulation.
const HWCR_IGNORED: u64 = 1 << 3 | 1 << 6 | 1 << 8;

/// DE_CFG: LFENCE is dispatch-serializing.
pub(crate) const DE_CFG_LFENCE_SERIALIZE: u64 = 1 << 1;

/// ARCH_CAPABILITIES bits rkvm passes from the host: statements that the
/// processor is not affected by an issue (`*_NO`), or that an instruction
/// behaves a certain way (RSBA, RRSBA, FB_CLEAR, RFDS_CLEAR), which hold
/// for the guest on the same processor. Not those promising MSRs rkvm
/// does not emulate (IBRS_ALL: SPEC_CTRL; TSX_CTRL), nor
/// SKIP_VMENTRY_L1DFLUSH (no nested VMX).
const ARCH_CAP_PASSED: u64 = 1 << 0 // RDCL_NO
    | 1 << 2 // RSBA
    | 1 << 4 // SSB_NO
    | 1 << 5 // MDS_NO
    | 1 << 8 // TAA_NO
    | 1 << 13 // SBDR_SSDP_NO
    | 1 << 14 // FBSDP_NO
    | 1 << 15 // PSDP_NO
    | 1 << 17 // FB_CLEAR
    | 1 << 19 // RRSBA
    | 1 << 20 // BHI_NO
    | 1 << 24 // PBRSB_NO
    | 1 << 26 // GDS_NO
    | 1 << 27 // RFDS_NO
    | 1 << 28 // RFDS_CLEAR
    | 1 << 62; // ITS_NO
/// ARCH_CAPABILITIES: a page-size change does not raise #MC (KVM sets it
/// always: a guest hypervisor need not split huge pages for its guests).
const ARCH_CAP_PSCHANGE_MC_NO: u64 = 1 << 6;

/// The microcode revision a vCPU reports until the VMM sets one (KVM's).
pub(crate) const UCODE_REV_SVM: u64 = 0x0100_0065;
pub(crate) const UCODE_REV_VMX: u64 = 0x1_0000_0000;

/// The host facts the feature MSRs are computed from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Host {
    /// The backend is SVM (else VMX).
    pub(crate) svm: bool,
    /// The host's microcode revision (its UCODE_REV), 0 if unreadable.
    pub(crate) ucode_rev: u64,
    /// The host's ARCH_CAPABILITIES, 0 if it has none.
    pub(crate) arch_capabilities: u64,
    /// The host's DE_CFG (SVM), 0 if unreadable.
    pub(crate) de_cfg: u64,
}

/// `KVM_GET_MSR_FEATURE_INDEX_LIST` on an SVM and on a VMX host (KVM's
/// list less what rkvm does not offer: PERF_CAPABILITIES (no PMU),
/// PLATFORM_INFO (no CPUID faulting), the VMX capability MSRs (no nested
/// VMX)).
const FEATURES_SVM: [u32; 3] = [AMD64_DE_CFG, UCODE_REV, ARCH_CAPABILITIES];
const FEATURES_VMX: [u32; 2] = [UCODE_REV, ARCH_CAPABILITIES];

/// The feature MSRs of a host whose backend is SVM (`svm`) or VMX.
pub(crate) fn feature_list(svm: bool) -> &'static [u32] {
    if svm {
        &FEATURES_SVM
    } else {
        &FEATURES_VMX
    }
}

/// `KVM_GET_MSRS` on the system fd: a feature MSR's value, what a vCPU
/// can be given; 0 for an MSR of `KVM_GET_MSR_INDEX_LIST` (as KVM
/// answers it there); `None` for anything else.
pub(crate) fn feature_value(index: u32, host: &Host) -> Option<u64> {
    if !feature_list(host.svm).contains(&index) {
        return msr::INDEX_LIST.contains(&index).then_some(0);
    }
    Some(match index {
        UCODE_REV => host.ucode_rev,
        ARCH_CAPABILITIES => host.arch_capabilities & ARCH_CAP_PASSED | ARCH_CAP_PSCHANGE_MC_NO,
        _ => host.de_cfg & DE_CFG_LFENCE_SERIALIZE,
    })
}

/// What the guest's CPU model says about the MSRs here.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Guest {
    /// The guest's CPUID vendor is AMD or Hygon (HWCR.McStatusWrEn
    /// applies).
    pub(crate) amd: bool,
    /// The guest's CPUID offers ARCH_CAPABILITIES (leaf 7 EDX bit 29).
    pub(crate) arch_capabilities: bool,
    /// GPA bits at and above the guest's MAXPHYADDR.
    pub(crate) reserved_gpa: u64,
}

/// Why an access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MsrError {
    /// Not an MSR of this vCPU (KVM's `KVM_MSR_RET_UNSUPPORTED`).
    Unsupported,
    /// The MSR exists, the access is refused.
    Invalid,
}

/// A vCPU's MSRs of this file.
#[derive(Clone, Debug)]
pub(crate) struct VcpuMsrs {
    pub(crate) mce: Mce,
    mtrr: Mtrrs,
    ucode_rev: u64,
    arch_capabilities: u64,
    hwcr: u64,
    power_ctl: u64,
    /// SVM only; `None` on VMX.
    de_cfg: Option<u64>,
    /// What DE_CFG may hold.
    de_cfg_supported: u64,
}

impl VcpuMsrs {
    /// A new vCPU's, on `host`. As in KVM, a vCPU reset leaves these be.
    pub(crate) fn new(host: &Host) -> Self {
        Self {
            mce: Mce::new(),
            mtrr: Mtrrs::default(),
            ucode_rev: if host.svm { UCODE_REV_SVM } else { UCODE_REV_VMX },
            arch_capabilities: feature_value(ARCH_CAPABILITIES, host).unwrap_or(0),
            hwcr: 0,
            power_ctl: 0,
            de_cfg: host.svm.then_some(0),
            de_cfg_supported: host.de_cfg & DE_CFG_LFENCE_SERIALIZE,
        }
    }

    /// Reads MSR `index` for the guest or (`host`) the VMM.
    pub(crate) fn get(&self, index: u32, host: bool, guest: &Guest) -> Result<u64, MsrError> {
        let r = self.get_inner(index, host, guest);
        advertised_zero(r, index, host, 0)
    }

    fn get_inner(&self, index: u32, host: bool, guest: &Guest) -> Result<u64, MsrError> {
        use MsrError::*;
        Ok(match index {
            i if Mce::owns(i) => return self.mce.get(i, host).map_err(|()| Invalid),
            i if Mtrrs::owns(i) => return self.mtrr.get(i).map_err(|()| Invalid),
            UCODE_REV => self.ucode_rev,
            ARCH_CAPABILITIES if guest.arch_capabilities => self.arch_capabilities,
            K7_HWCR => self.hwcr,
            POWER_CTL => self.power_ctl,
            AMD64_DE_CFG => self.de_cfg.ok_or(Unsupported)?,
            // Fixed values KVM gives every guest (no real counterpart).
            FSB_FREQ => 3,
            EBC_FREQUENCY_ID => 1 << 24,
            PERF_STATUS => 1000 | 4 << 40,
            K7_CLK_CTL => 0x2000_0000,
            BBL_CR_CTL3 => 0xbe70_2111,
            PLATFORM_ID | EBL_CR_POWERON | AMD64_SYSCFG | K8_TSEG_ADDR | K8_TSEG_MASK
            | K8_INT_PENDING_MSG | AMD64_NB_CFG | FAM10H_MMIO_CONF_BASE | AMD64_BU_CFG2
            | PERF_CTL | AMD64_DC_CFG | AMD64_TW_CFG | F15H_EX_CFG | RAPL_POWER_UNIT
            | PP0_ENERGY_STATUS | PP1_ENERGY_STATUS | PKG_ENERGY_STATUS | DRAM_ENERGY_STATUS => 0,
            // The legacy performance counters of a guest without a PMU.
            i if is_legacy_pmc(i) => 0,
            _ => return Err(Unsupported),
        })
    }

    /// Writes MSR `index` for the guest or (`host`) the VMM, with KVM's
    /// checks.
    pub(crate) fn set(&mut self, index: u32, val: u64, host: bool, guest: &Guest) -> Result<(), MsrError> {
        let r = self.set_inner(index, val, host, guest);
        advertised_zero(r, index, host, val)
    }

    fn set_inner(&mut self, index: u32, val: u64, host: bool, guest: &Guest) -> Result<(), MsrError> {
        use MsrError::*;
        match index {
            i if Mce::owns(i) => {
                let w = mce::Writer {
                    host,
                    mci_status_writable: guest.amd && self.hwcr & HWCR_MC_STATUS_WR_EN != 0,
                };
                // MCG_CAP and the P5 registers are read-only, and KVM
                // does not know them for writes.
                if matches!(i, mce::MCG_CAP | mce::P5_MC_ADDR | mce::P5_MC_TYPE) {
                    return Err(Unsupported);
                }
                return self.mce.set(i, val, w).map_err(|()| Invalid);
            }
            mtrr::CAP => return Err(Unsupported),
            i if Mtrrs::owns(i) => {
                return self.mtrr.set(i, val, guest.reserved_gpa).map_err(|()| Invalid)
            }
            // The guest loading microcode changes nothing it can see.
            UCODE_REV => {
                if host {
                    self.ucode_rev = val;
                }
            }
            ARCH_CAPABILITIES if host && guest.arch_capabilities => self.arch_capabilities = val,
            K7_HWCR => {
                let val = val & !HWCR_IGNORED;
                if val & !(HWCR_MC_STATUS_WR_EN | HWCR_TSC_FREQ_SEL) != 0 {
                    return Err(Invalid);
                }
                self.hwcr = val;
            }
            POWER_CTL => self.power_ctl = val,
            AMD64_DE_CFG => {
                let de_cfg = self.de_cfg.as_mut().ok_or(Unsupported)?;
                if val & !self.de_cfg_supported != 0 {
                    return Err(Invalid);
                }
                *de_cfg = val;
            }
            FAM10H_MMIO_CONF_BASE => {
                if val != 0 {
                    return Err(Invalid);
                }
            }
            // Writes KVM drops.
            AMD64_NB_CFG | UCODE_WRITE | AMD64_PATCH_LOADER | AMD64_BU_CFG2 | AMD64_DC_CFG
            | AMD64_TW_CFG | F15H_EX_CFG | K7_CLK_CTL | BBL_CR_CTL3 => {}
            i if is_legacy_pmc(i) => {}
            _ => return Err(Unsupported),
        }
        Ok(())
    }
}

/// K7 and P6 event selectors and counters.
fn is_legacy_pmc(index: u32) -> bool {
    matches!(index, P6_PERFCTR0 | P6_PERFCTR1 | P6_EVNTSEL0 | P6_EVNTSEL1)
        || (K7_EVNTSEL0..=K7_PERFCTR3).contains(&index)
}

/// KVM's rule for the MSRs it lists in `KVM_GET_MSR_INDEX_LIST`: the VMM
/// may read (as 0) and write 0 to them even where the vCPU's model lacks
/// them, so that it can save and restore the whole list blindly.
fn advertised_zero<T>(r: Result<T, MsrError>, index: u32, host: bool, val: u64) -> Result<T, MsrError>
where
    T: Default,
{
    match r {
        Err(MsrError::Unsupported) if host && val == 0 && msr::INDEX_LIST.contains(&index) => {
            Ok(T::default())
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD: Host = Host {
        svm: true,
        ucode_rev: 0x0a20_1016,
        arch_capabilities: 0,
        de_cfg: DE_CFG_LFENCE_SERIALIZE | 1 << 9,
    };
    const INTEL: Host = Host {
        svm: false,
        ucode_rev: 0x2b00_0181,
        // RDCL_NO, IBRS_ALL, SKIP_L1DFL, MDS_NO, TSX_CTRL, GDS_NO.
        arch_capabilities: 1 << 0 | 1 << 1 | 1 << 3 | 1 << 5 | 1 << 7 | 1 << 26,
        de_cfg: 0,
    };
    const G: Guest = Guest {
        amd: false,
        arch_capabilities: true,
        reserved_gpa: !0 << 40,
    };

    #[test]
    fn feature_msrs() {
        assert_eq!(feature_list(true), &[AMD64_DE_CFG, UCODE_REV, ARCH_CAPABILITIES]);
        assert_eq!(feature_list(false), &[UCODE_REV, ARCH_CAPABILITIES]);
        assert_eq!(feature_value(AMD64_DE_CFG, &AMD), Some(DE_CFG_LFENCE_SERIALIZE));
        assert_eq!(feature_value(AMD64_DE_CFG, &INTEL), None);
        assert_eq!(feature_value(UCODE_REV, &INTEL), Some(0x2b00_0181));
        assert_eq!(feature_value(ARCH_CAPABILITIES, &AMD), Some(ARCH_CAP_PSCHANGE_MC_NO));
        assert_eq!(
            feature_value(ARCH_CAPABILITIES, &INTEL),
            Some(1 << 0 | 1 << 5 | 1 << 6 | 1 << 26)
        );
        // A listed, non-feature MSR reads as 0; others fail.
        assert_eq!(feature_value(msr::EFER, &AMD), Some(0));
        assert_eq!(feature_value(0x1234, &AMD), None);
    }

    #[test]
    fn defaults_and_round_trips() {
        let mut m = VcpuMsrs::new(&AMD);
        assert_eq!(m.get(UCODE_REV, false, &G), Ok(UCODE_REV_SVM));
        assert_eq!(VcpuMsrs::new(&INTEL).get(UCODE_REV, false, &G), Ok(UCODE_REV_VMX));
        // Guest microcode loads are ignored, the VMM's value stays.
        assert_eq!(m.set(UCODE_REV, 0, false, &G), Ok(()));
        assert_eq!(m.get(UCODE_REV, true, &G), Ok(UCODE_REV_SVM));
        assert_eq!(m.set(UCODE_REV, 0x1234, true, &G), Ok(()));
        assert_eq!(m.get(UCODE_REV, false, &G), Ok(0x1234));
        assert_eq!(m.get(ARCH_CAPABILITIES, false, &G), Ok(ARCH_CAP_PSCHANGE_MC_NO));
        assert_eq!(m.set(POWER_CTL, 0x8_0000, false, &G), Ok(()));
        assert_eq!(m.get(POWER_CTL, true, &G), Ok(0x8_0000));
        assert_eq!(m.get(PERF_STATUS, false, &G), Ok(0x400_0000_03e8));
        assert_eq!(m.get(AMD64_SYSCFG, false, &G), Ok(0));
        assert_eq!(m.set(AMD64_NB_CFG, 0x1234, false, &G), Ok(()));
        assert_eq!(m.get(AMD64_NB_CFG, false, &G), Ok(0));
        assert_eq!(m.set(K7_EVNTSEL0 + 2, 0x1234, false, &G), Ok(()));
        assert_eq!(m.get(K7_PERFCTR3, false, &G), Ok(0));
        assert_eq!(m.get(mtrr::CAP, false, &G), Ok(mtrr::CAP_VALUE));
        assert_eq!(m.set(mtrr::CAP, mtrr::CAP_VALUE, true, &G), Err(MsrError::Unsupported));
    }

    #[test]
    fn arch_capabilities_follows_cpuid() {
        let mut m = VcpuMsrs::new(&INTEL);
        let no = Guest {
            arch_capabilities: false,
            ..G
        };
        assert_eq!(m.get(ARCH_CAPABILITIES, false, &no), Err(MsrError::Unsupported));
        // Listed for migration: the VMM reads 0 and may write 0.
        assert_eq!(m.get(ARCH_CAPABILITIES, true, &no), Ok(0));
        assert_eq!(m.set(ARCH_CAPABILITIES, 0, true, &no), Ok(()));
        assert_eq!(m.set(ARCH_CAPABILITIES, 1, true, &no), Err(MsrError::Unsupported));
        // Only the VMM writes it.
        assert_eq!(m.set(ARCH_CAPABILITIES, 1, false, &G), Err(MsrError::Unsupported));
        assert_eq!(m.set(ARCH_CAPABILITIES, 1, true, &G), Ok(()));
        assert_eq!(m.get(ARCH_CAPABILITIES, false, &G), Ok(1));
    }

    #[test]
    fn hwcr_rules() {
        let mut m = VcpuMsrs::new(&AMD);
        assert_eq!(m.set(K7_HWCR, 1 << 24 | 1 << 3 | 1 << 6 | 1 << 8, false, &G), Ok(()));
        assert_eq!(m.get(K7_HWCR, false, &G), Ok(1 << 24));
        assert_eq!(m.set(K7_HWCR, 1 << 0, false, &G), Err(MsrError::Invalid));
        // McStatusWrEn lets an AMD guest write MCi_STATUS.
        let amd = Guest { amd: true, ..G };
        m.mce.setup(1, !0).unwrap();
        assert_eq!(m.set(mce::MC0_CTL + 1, 3, false, &amd), Err(MsrError::Invalid));
        m.set(K7_HWCR, HWCR_MC_STATUS_WR_EN, false, &amd).unwrap();
        assert_eq!(m.set(mce::MC0_CTL + 1, 3, false, &G), Err(MsrError::Invalid));
        assert_eq!(m.set(mce::MC0_CTL + 1, 3, false, &amd), Ok(()));
        assert_eq!(m.set(mce::MCG_CAP, 1, true, &amd), Err(MsrError::Unsupported));
    }

    #[test]
    fn de_cfg_is_svm_only() {
        let mut m = VcpuMsrs::new(&AMD);
        assert_eq!(m.get(AMD64_DE_CFG, false, &G), Ok(0));
        assert_eq!(m.set(AMD64_DE_CFG, DE_CFG_LFENCE_SERIALIZE, false, &G), Ok(()));
        assert_eq!(m.get(AMD64_DE_CFG, false, &G), Ok(DE_CFG_LFENCE_SERIALIZE));
        assert_eq!(m.set(AMD64_DE_CFG, 1 << 9, false, &G), Err(MsrError::Invalid));
        let mut v = VcpuMsrs::new(&INTEL);
        assert_eq!(v.get(AMD64_DE_CFG, false, &G), Err(MsrError::Unsupported));
        assert_eq!(v.set(AMD64_DE_CFG, 0, true, &G), Err(MsrError::Unsupported));
        assert_eq!(v.set(FAM10H_MMIO_CONF_BASE, 1, false, &G), Err(MsrError::Invalid));
    }

    #[test]
    fn index_list_msrs_are_all_known() {
        // Every MSR this file adds to KVM_GET_MSR_INDEX_LIST reads for the VMM.
        let m = VcpuMsrs::new(&AMD);
        for i in [mce::MCG_STATUS, mce::MCG_CTL, UCODE_REV, ARCH_CAPABILITIES, K7_HWCR, POWER_CTL] {
            assert!(msr::INDEX_LIST.contains(&i), "{i:#x}");
            assert!(m.get(i, true, &G).is_ok(), "{i:#x}");
        }
    }
}
