// SPDX-License-Identifier: GPL-2.0

//! The MSRs rkvm implements for guests and for `KVM_GET_MSRS`/
//! `KVM_SET_MSRS`: the architectural set a 64-bit guest needs, with the
//! value checks KVM applies.
//!
//! Pure logic (only `core`), tested on the host.

pub(crate) const TSC: u32 = 0x10;
/// `IA32_TSC_ADJUST`: what the guest's writes of `IA32_TSC` added up to.
pub(crate) const TSC_ADJUST: u32 = 0x3b;
/// `IA32_TSC_AUX`: what RDTSCP returns in ECX.
pub(crate) const TSC_AUX: u32 = 0xc000_0103;
pub(crate) const SYSENTER_CS: u32 = 0x174;
pub(crate) const SYSENTER_ESP: u32 = 0x175;
pub(crate) const SYSENTER_EIP: u32 = 0x176;
pub(crate) const MISC_ENABLE: u32 = 0x1a0;
pub(crate) const PAT: u32 = 0x277;
pub(crate) const EFER: u32 = 0xc000_0080;
pub(crate) const STAR: u32 = 0xc000_0081;
pub(crate) const LSTAR: u32 = 0xc000_0082;
pub(crate) const CSTAR: u32 = 0xc000_0083;
pub(crate) const SFMASK: u32 = 0xc000_0084;
pub(crate) const FS_BASE: u32 = 0xc000_0100;
pub(crate) const GS_BASE: u32 = 0xc000_0101;
pub(crate) const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// PAT after RESET (write-back for index 0).
pub(crate) const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// The syscall, segment-base and SYSENTER MSRs: guest state that both
/// backends keep with the rest of the guest's registers (SVM switches
/// them with VMLOAD/VMSAVE).
pub(crate) const SYSCALL_AND_BASES: [u32; 10] = [
    STAR,
    LSTAR,
    CSTAR,
    SFMASK,
    KERNEL_GS_BASE,
    FS_BASE,
    GS_BASE,
    SYSENTER_CS,
    SYSENTER_ESP,
    SYSENTER_EIP,
];

/// What `KVM_GET_MSR_INDEX_LIST` reports: the MSRs a VMM saves and
/// restores, then the kvmclock ones (`pvclock.rs`), as KVM lists its
/// emulated MSRs. As in KVM, the MTRRs and the MCi bank registers are not
/// listed (VMMs know them from MTRRcap and MCG_CAP).
pub(crate) const INDEX_LIST: [u32; 27] = [
    EFER,
    STAR,
    LSTAR,
    CSTAR,
    SFMASK,
    KERNEL_GS_BASE,
    FS_BASE,
    GS_BASE,
    SYSENTER_CS,
    SYSENTER_ESP,
    SYSENTER_EIP,
    TSC,
    TSC_ADJUST,
    TSC_AUX,
    crate::lapic::regs::TSC_DEADLINE_MSR,
    PAT,
    MISC_ENABLE,
    crate::mce::MCG_STATUS,
    crate::mce::MCG_CTL,
    crate::vcpu_msrs::UCODE_REV,
    crate::vcpu_msrs::ARCH_CAPABILITIES,
    crate::vcpu_msrs::K7_HWCR,
    crate::vcpu_msrs::POWER_CTL,
    crate::pvclock::MSR_SYSTEM_TIME,
    crate::pvclock::MSR_WALL_CLOCK,
    crate::pvclock::MSR_SYSTEM_TIME_NEW,
    crate::pvclock::MSR_WALL_CLOCK_NEW,
];

/// MISC_ENABLE of a new vCPU: BTS and PEBS unavailable, as KVM sets it.
pub(crate) const MISC_ENABLE_DEFAULT: u64 = MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL;
const MISC_ENABLE_EMON: u64 = 1 << 7;
const MISC_ENABLE_BTS_UNAVAIL: u64 = 1 << 11;
const MISC_ENABLE_PEBS_UNAVAIL: u64 = 1 << 12;

pub(crate) const EFER_SCE: u64 = crate::arch::efer::SCE;
pub(crate) const EFER_LME: u64 = crate::arch::efer::LME;
pub(crate) const EFER_LMA: u64 = crate::arch::efer::LMA;
pub(crate) const EFER_NXE: u64 = crate::arch::efer::NXE;
const CR0_PG: u64 = crate::arch::cr0::PG;

/// `val` if it is a canonical 48-bit address.
pub(crate) fn canonical(val: u64) -> Result<u64, ()> {
    if ((val as i64) << 16 >> 16) as u64 == val {
        Ok(val)
    } else {
        Err(())
    }
}

/// A `TSC_AUX` write: bits 63:32 are reserved on Intel (`#GP`, or a
/// failed `KVM_SET_MSRS`) and ignored on AMD, so KVM follows the guest's
/// CPUID vendor (`intel_compatible`) for both the guest and the VMM.
pub(crate) fn check_tsc_aux(val: u64, intel_compatible: bool) -> Result<u64, ()> {
    if intel_compatible && val >> 32 != 0 {
        return Err(());
    }
    Ok(val & 0xffff_ffff)
}

/// A PAT value whose eight entries are all valid memory types (UC, WC,
/// WT, WP, WB, UC-).
pub(crate) fn check_pat(val: u64) -> Result<u64, ()> {
    if val
        .to_le_bytes()
        .iter()
        .all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
    {
        Ok(val)
    } else {
        Err(())
    }
}

/// The EFER a write of `val` leaves, given the current `old` (without
/// SVME) and CR0. A guest may not toggle LME with paging on and does not
/// write LMA (the CPU owns it); the VMM (`host`) sets both freely.
pub(crate) fn check_efer(old: u64, val: u64, cr0: u64, host: bool) -> Result<u64, ()> {
    if val & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE) != 0 {
        return Err(());
    }
    if host {
        return Ok(val);
    }
    if cr0 & CR0_PG != 0 && (old ^ val) & EFER_LME != 0 {
        return Err(());
    }
    Ok((val & !EFER_LMA) | (old & EFER_LMA))
}

/// MISC_ENABLE after a write: a guest may not change the read-only BTS and
/// PEBS bits, and its writes to EMON are ignored.
pub(crate) fn check_misc_enable(old: u64, val: u64, host: bool) -> Result<u64, ()> {
    if host {
        return Ok(val);
    }
    if (old ^ val) & (MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL) != 0 {
        return Err(());
    }
    Ok((val & !MISC_ENABLE_EMON) | (old & MISC_ENABLE_EMON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_aux_high_bits_follow_the_vendor() {
        assert_eq!(check_tsc_aux(0x1234_5678, true), Ok(0x1234_5678));
        assert_eq!(check_tsc_aux(1 << 32 | 7, true), Err(()));
        // AMD ignores bits 63:32.
        assert_eq!(check_tsc_aux(1 << 32 | 7, false), Ok(7));
    }

    #[test]
    fn canonical_addresses() {
        assert!(canonical(0x0000_7fff_ffff_ffff).is_ok());
        assert!(canonical(0xffff_8000_0000_0000).is_ok());
        assert!(canonical(0x0000_8000_0000_0000).is_err());
        assert!(canonical(0x1234_0000_0000_0000).is_err());
    }

    #[test]
    fn pat_types() {
        assert!(check_pat(0x0007_0406_0007_0406).is_ok());
        assert!(check_pat(0x0007_0406_0007_0402).is_err());
        assert!(check_pat(0x0807_0406_0007_0406).is_err());
    }

    #[test]
    fn efer_rules() {
        // Reserved bits fault for everyone, SVME included (no nested SVM).
        assert!(check_efer(0, 1 << 12, 0, true).is_err());
        assert!(check_efer(0, 1 << 1, 0, false).is_err());
        // With paging on, the guest may not toggle LME, the VMM may.
        assert!(check_efer(0, EFER_LME, CR0_PG, false).is_err());
        assert_eq!(check_efer(0, EFER_LME, CR0_PG, true), Ok(EFER_LME));
        // The guest cannot set or clear LMA.
        assert_eq!(check_efer(0, EFER_LMA | EFER_SCE, 0, false), Ok(EFER_SCE));
        assert_eq!(
            check_efer(EFER_LME | EFER_LMA, EFER_LME | EFER_NXE, CR0_PG, false),
            Ok(EFER_LME | EFER_LMA | EFER_NXE)
        );
    }

    #[test]
    fn misc_enable_rules() {
        let d = MISC_ENABLE_DEFAULT;
        assert!(check_misc_enable(d, 0, false).is_err());
        assert_eq!(check_misc_enable(d, d | 1, false), Ok(d | 1));
        assert_eq!(check_misc_enable(d, d | MISC_ENABLE_EMON, false), Ok(d));
        assert_eq!(check_misc_enable(d, 0, true), Ok(0));
    }
}
