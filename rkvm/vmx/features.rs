// SPDX-License-Identifier: GPL-2.0

//! Which VMX features the CPU offers, decoded from CPUID and the VMX
//! capability MSRs.
//!
//! Intel SDM vol. 3C, chapter 24 ("Enabling and entering VMX operation") and
//! appendix A ("VMX capability reporting facility"). Pure logic (only
//! `core`), tested on the host.

use super::controls::{primary, secondary};

/// `IA32_FEATURE_CONTROL`.
pub(crate) const MSR_FEATURE_CONTROL: u32 = 0x3a;
/// `IA32_VMX_BASIC`.
pub(crate) const MSR_VMX_BASIC: u32 = 0x480;
/// `IA32_VMX_CR0_FIXED0`; FIXED1, CR4_FIXED0 and CR4_FIXED1 follow it.
pub(crate) const MSR_VMX_CR0_FIXED0: u32 = 0x486;
/// `IA32_VMX_CR0_FIXED1`.
pub(crate) const MSR_VMX_CR0_FIXED1: u32 = 0x487;
/// `IA32_VMX_CR4_FIXED0`.
pub(crate) const MSR_VMX_CR4_FIXED0: u32 = 0x488;
/// `IA32_VMX_CR4_FIXED1`.
pub(crate) const MSR_VMX_CR4_FIXED1: u32 = 0x489;
/// `IA32_VMX_EPT_VPID_CAP`.
pub(crate) const MSR_VMX_EPT_VPID_CAP: u32 = 0x48c;
/// `CR4.VMXE`.
pub(crate) const CR4_VMXE: u64 = crate::arch::cr4::VMXE;

const CPUID_1_ECX_VMX: u32 = 1 << 5;

const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

const BASIC_REVISION_MASK: u64 = 0x7fff_ffff;
const BASIC_SIZE_SHIFT: u32 = 32;
const BASIC_SIZE_MASK: u64 = 0x1fff;
const BASIC_32BIT_ADDRESSES: u64 = 1 << 48;
const BASIC_MEMTYPE_SHIFT: u32 = 50;
const BASIC_MEMTYPE_MASK: u64 = 0xf;
const MEMTYPE_WB: u64 = 6;

// The control bits are declared once, with the control words.
const PROCBASED_SECONDARY: u32 = primary::ACTIVATE_SECONDARY_CONTROLS;
const SECONDARY_EPT: u32 = secondary::ENABLE_EPT;
const SECONDARY_VPID: u32 = secondary::ENABLE_VPID;
const SECONDARY_UNRESTRICTED_GUEST: u32 = secondary::UNRESTRICTED_GUEST;

const EPT_CAP_WALK_4: u64 = 1 << 6;
const EPT_CAP_WB: u64 = 1 << 14;
const EPT_CAP_2M: u64 = 1 << 16;
const EPT_CAP_1G: u64 = 1 << 17;
const EPT_CAP_INVEPT: u64 = 1 << 20;
const EPT_CAP_AD: u64 = 1 << 21;
const EPT_CAP_INVEPT_SINGLE: u64 = 1 << 25;
const EPT_CAP_INVEPT_ALL: u64 = 1 << 26;
const VPID_CAP_INVVPID: u64 = 1 << 32;
const VPID_CAP_INVVPID_SINGLE: u64 = 1 << 41;
const VPID_CAP_INVVPID_ALL: u64 = 1 << 42;

/// Bits of a control MSR that may be 1: the high half (SDM A.3).
const fn allowed1(ctl_msr: u64) -> u32 {
    (ctl_msr >> 32) as u32
}

/// Raw inputs to the decoder. An MSR is `None` when reading it faulted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VmxMsrs {
    /// CPUID 1 ECX.
    pub(crate) cpuid_1_ecx: u32,
    /// `IA32_FEATURE_CONTROL`.
    pub(crate) feature_control: Option<u64>,
    /// `IA32_VMX_BASIC`.
    pub(crate) basic: Option<u64>,
    /// `IA32_VMX_PROCBASED_CTLS`.
    pub(crate) procbased: Option<u64>,
    /// `IA32_VMX_PROCBASED_CTLS2`.
    pub(crate) procbased2: Option<u64>,
    /// `IA32_VMX_EPT_VPID_CAP`.
    pub(crate) ept_vpid_cap: Option<u64>,
}

/// VMX as this CPU offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmxFeatures {
    /// VMCS revision identifier, written at the start of VMXON and VMCS regions.
    pub(crate) vmcs_revision: u32,
    /// Size of a VMCS region in bytes (at most 4096).
    pub(crate) vmcs_size: u32,
    /// VPID (tagged TLB entries per vCPU), with an INVVPID that can flush
    /// one (single-context) or all of them.
    pub(crate) vpid: bool,
    /// INVVPID single-context exists (else all-context is used).
    pub(crate) invvpid_single: bool,
    /// INVEPT single-context exists (else all-context is used).
    pub(crate) invept_single: bool,
    /// EPT accessed/dirty flags.
    pub(crate) ept_ad: bool,
    /// EPT 2 MiB pages.
    pub(crate) ept_2m: bool,
    /// EPT 1 GiB pages.
    pub(crate) ept_1g: bool,
}

/// Why rkvm cannot use VMX on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxUnsupported {
    /// CPUID does not list VMX.
    NoVmx,
    /// `IA32_FEATURE_CONTROL` is locked without VMX outside SMX, or unlocked
    /// (VMXON would fault).
    DisabledByFirmware,
    /// The VMCS layout is unusable: larger than a page, 32-bit addresses only,
    /// or not write-back.
    BadVmcsRegion,
    /// No secondary controls or no EPT: rkvm's MMU needs EPT.
    NoEpt,
    /// EPT lacks the 4-level walk, write-back memory type or INVEPT.
    EptIncomplete,
    /// No unrestricted guest: real and unpaged protected mode would need
    /// vm86 emulation, which rkvm does not do.
    NoUnrestrictedGuest,
}

impl VmxUnsupported {
    /// Why, in words, for the kernel log.
    pub(crate) const fn reason(&self) -> &'static str {
        match self {
            Self::NoVmx => "the CPU has no VMX",
            Self::DisabledByFirmware => "VMX is disabled by the firmware (IA32_FEATURE_CONTROL)",
            Self::BadVmcsRegion => "IA32_VMX_BASIC describes an unusable VMCS region",
            Self::NoEpt => "VMX has no EPT",
            Self::EptIncomplete => "EPT lacks 4-level walks, write-back memory or INVEPT",
            Self::NoUnrestrictedGuest => "VMX has no unrestricted guest",
        }
    }
}

/// Whether CPUID 1 ECX lists VMX (and so the VMX MSRs exist).
pub(crate) const fn has_vmx_bit(cpuid_1_ecx: u32) -> bool {
    cpuid_1_ecx & CPUID_1_ECX_VMX != 0
}

impl VmxFeatures {
    /// Decodes VMX support from the raw capability MSRs.
    pub(crate) fn decode(m: VmxMsrs) -> Result<Self, VmxUnsupported> {
        if !has_vmx_bit(m.cpuid_1_ecx) {
            return Err(VmxUnsupported::NoVmx);
        }
        let fc = m.feature_control.ok_or(VmxUnsupported::NoVmx)?;
        let fc_needed = FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX;
        if fc & fc_needed != fc_needed {
            return Err(VmxUnsupported::DisabledByFirmware);
        }
        let basic = m.basic.ok_or(VmxUnsupported::NoVmx)?;
        let size = ((basic >> BASIC_SIZE_SHIFT) & BASIC_SIZE_MASK) as u32;
        let memtype = (basic >> BASIC_MEMTYPE_SHIFT) & BASIC_MEMTYPE_MASK;
        if size == 0 || size > 4096 || basic & BASIC_32BIT_ADDRESSES != 0 || memtype != MEMTYPE_WB {
            return Err(VmxUnsupported::BadVmcsRegion);
        }
        let procbased = m.procbased.ok_or(VmxUnsupported::NoVmx)?;
        if allowed1(procbased) & PROCBASED_SECONDARY == 0 {
            return Err(VmxUnsupported::NoEpt);
        }
        let secondary = allowed1(m.procbased2.ok_or(VmxUnsupported::NoEpt)?);
        if secondary & SECONDARY_EPT == 0 {
            return Err(VmxUnsupported::NoEpt);
        }
        let ept = m.ept_vpid_cap.ok_or(VmxUnsupported::NoEpt)?;
        let ept_needed = EPT_CAP_WALK_4 | EPT_CAP_WB | EPT_CAP_INVEPT;
        if ept & ept_needed != ept_needed || ept & (EPT_CAP_INVEPT_SINGLE | EPT_CAP_INVEPT_ALL) == 0
        {
            return Err(VmxUnsupported::EptIncomplete);
        }
        if secondary & SECONDARY_UNRESTRICTED_GUEST == 0 {
            return Err(VmxUnsupported::NoUnrestrictedGuest);
        }
        Ok(Self {
            vmcs_revision: (basic & BASIC_REVISION_MASK) as u32,
            vmcs_size: size,
            // VPIDs are useless without a way to flush them.
            vpid: secondary & SECONDARY_VPID != 0
                && ept & VPID_CAP_INVVPID != 0
                && ept & (VPID_CAP_INVVPID_SINGLE | VPID_CAP_INVVPID_ALL) != 0,
            invvpid_single: ept & VPID_CAP_INVVPID_SINGLE != 0,
            invept_single: ept & EPT_CAP_INVEPT_SINGLE != 0,
            ept_ad: ept & EPT_CAP_AD != 0,
            ept_2m: ept & EPT_CAP_2M != 0,
            ept_1g: ept & EPT_CAP_1G != 0,
        })
    }
}

/// Whether a control register value satisfies the VMX fixed-bit MSRs: every
/// bit set in `fixed0` must be 1, every bit clear in `fixed1` must be 0
/// (SDM A.7, A.8). VMXON fails with #GP otherwise.
pub(crate) const fn cr_allowed_in_vmx(cr: u64, fixed0: u64, fixed1: u64) -> bool {
    cr & fixed0 == fixed0 && cr & !fixed1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values Bochs 2.7 reports for `corei7_haswell_4770` (VMX with EPT).
    fn haswell() -> VmxMsrs {
        VmxMsrs {
            cpuid_1_ecx: CPUID_1_ECX_VMX,
            feature_control: Some(FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX),
            basic: Some(
                (MEMTYPE_WB << BASIC_MEMTYPE_SHIFT) | (0x1000 << BASIC_SIZE_SHIFT) | 0x1d3b,
            ),
            procbased: Some((PROCBASED_SECONDARY as u64) << 32),
            procbased2: Some(
                ((SECONDARY_EPT | SECONDARY_VPID | SECONDARY_UNRESTRICTED_GUEST) as u64) << 32,
            ),
            ept_vpid_cap: Some(
                EPT_CAP_WALK_4
                    | EPT_CAP_WB
                    | EPT_CAP_INVEPT
                    | EPT_CAP_INVEPT_SINGLE
                    | EPT_CAP_INVEPT_ALL
                    | EPT_CAP_2M
                    | EPT_CAP_AD
                    | VPID_CAP_INVVPID
                    | VPID_CAP_INVVPID_SINGLE
                    | VPID_CAP_INVVPID_ALL,
            ),
        }
    }

    #[test]
    fn haswell_is_usable() {
        let f = VmxFeatures::decode(haswell()).unwrap();
        assert_eq!(f.vmcs_revision, 0x1d3b);
        assert_eq!(f.vmcs_size, 4096);
        assert!(f.vpid && f.ept_ad && f.ept_2m && !f.ept_1g);
        assert!(f.invept_single && f.invvpid_single);
    }

    #[test]
    fn vpid_needs_invvpid() {
        let mut m = haswell();
        let cap = m.ept_vpid_cap.unwrap();
        m.ept_vpid_cap = Some(cap & !VPID_CAP_INVVPID);
        assert!(!VmxFeatures::decode(m).unwrap().vpid);
        m.ept_vpid_cap = Some(cap & !(VPID_CAP_INVVPID_SINGLE | VPID_CAP_INVVPID_ALL));
        assert!(!VmxFeatures::decode(m).unwrap().vpid);
        m.ept_vpid_cap = Some(cap & !VPID_CAP_INVVPID_SINGLE);
        let f = VmxFeatures::decode(m).unwrap();
        assert!(f.vpid && !f.invvpid_single);
        m.ept_vpid_cap = Some(cap & !(EPT_CAP_INVEPT_SINGLE | EPT_CAP_INVEPT_ALL));
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::EptIncomplete));
    }

    #[test]
    fn allowed_settings_are_the_high_half() {
        // A control that may be 0 but not 1 (low half set, high half clear)
        // is not available.
        let mut m = haswell();
        m.procbased = Some(PROCBASED_SECONDARY as u64);
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::NoEpt));
        m = haswell();
        m.procbased2 = Some(SECONDARY_EPT as u64);
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::NoEpt));
    }

    #[test]
    fn refusals() {
        let mut m = haswell();
        m.cpuid_1_ecx = 0;
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::NoVmx));
        for fc in [0, FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX] {
            m = haswell();
            m.feature_control = Some(fc);
            assert_eq!(
                VmxFeatures::decode(m),
                Err(VmxUnsupported::DisabledByFirmware)
            );
        }
        m = haswell();
        m.basic = Some(m.basic.unwrap() | BASIC_32BIT_ADDRESSES);
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::BadVmcsRegion));
        m = haswell();
        m.basic = Some(0x2000 << BASIC_SIZE_SHIFT | MEMTYPE_WB << BASIC_MEMTYPE_SHIFT);
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::BadVmcsRegion));
        m = haswell();
        m.basic = Some(0x1000 << BASIC_SIZE_SHIFT);
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::BadVmcsRegion));
        m = haswell();
        m.ept_vpid_cap = Some(EPT_CAP_WALK_4 | EPT_CAP_INVEPT);
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::EptIncomplete));
        m = haswell();
        m.procbased2 = Some((SECONDARY_EPT as u64) << 32);
        assert_eq!(
            VmxFeatures::decode(m),
            Err(VmxUnsupported::NoUnrestrictedGuest)
        );
        m = haswell();
        m.procbased2 = None;
        assert_eq!(VmxFeatures::decode(m), Err(VmxUnsupported::NoEpt));
    }

    #[test]
    fn fixed_bits() {
        // CR0 needs PE, NE, PG (fixed0) and may have anything in fixed1.
        let fixed0 = 0x8000_0021;
        let fixed1 = 0xffff_ffff;
        assert!(cr_allowed_in_vmx(0x8005_0033, fixed0, fixed1));
        assert!(!cr_allowed_in_vmx(0x0005_0033, fixed0, fixed1));
        assert!(!cr_allowed_in_vmx(0x1_8005_0033, fixed0, fixed1));
    }
}
