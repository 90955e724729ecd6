// SPDX-License-Identifier: GPL-2.0

//! The VMCS as rkvm sees it: the encodings of the fields it reads and
//! writes, and what a VMX instruction's flags say about its outcome.
//!
//! A VMCS field is named by a 32-bit encoding (Intel SDM vol. 3C, 25.11.2
//! and appendix B): bit 0 is the access type (0 = full; 1 = the high half
//! of a 64-bit field, which a 64-bit host never needs), bits 9:1 the index,
//! bits 11:10 the type (control, read-only data, guest state, host state)
//! and bits 14:13 the width (16-bit, 64-bit, 32-bit, natural). The fields
//! are declared here once, grouped by width and type, each as a constant of
//! a type that says its width, so that `VMWRITE`ing a 32-bit value to a
//! 64-bit field does not compile; the host tests check every encoding
//! against the group it is declared in.
//!
//! Pure logic (only `core`), tested on the host.

// The table lists the fields of the VMCS layout the backend is being built
// towards (the guest-state area is written by the entry step); like the
// register bits of `arch.rs`, it is complete for what it covers, so some
// fields have no user in the module yet. The host tests use them all.
#![cfg_attr(not(test), allow(dead_code))]

use core::fmt;

/// A 16-bit field's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field16(pub(crate) u32);
/// A 32-bit field's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field32(pub(crate) u32);
/// A 64-bit field's encoding (its full access: both halves at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Field64(pub(crate) u32);
/// A natural-width field's encoding (64 bits on rkvm's hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldNat(pub(crate) u32);

/// Width of a field, bits 14:13 of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Width {
    W16 = 0,
    W64 = 1,
    W32 = 2,
    Natural = 3,
}

/// Type of a field, bits 11:10 of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldType {
    Control = 0,
    /// VM-exit information and the VM-instruction error.
    ReadOnly = 1,
    Guest = 2,
    Host = 3,
}

/// Declares one group of fields (one width and type) as constants of the
/// width's type, and `ALL`, every encoding of the group with its name, for
/// the tests.
macro_rules! fields {
    ($(#[$doc:meta])* $group:ident: $ty:ident, $width:ident, $kind:ident {
        $($(#[$fdoc:meta])* $name:ident = $enc:literal,)*
    }) => {
        $(#[$doc])*
        pub(crate) mod $group {
            use super::*;

            /// The width and type every field of this group has.
            pub(crate) const WIDTH: Width = Width::$width;
            pub(crate) const TYPE: FieldType = FieldType::$kind;

            $($(#[$fdoc])* pub(crate) const $name: $ty = $ty($enc);)*

            /// Every field above with its name.
            pub(crate) const ALL: &[(u32, &str)] = &[$(($enc, stringify!($name)),)*];
        }
    };
}

fields! {
    /// 16-bit control fields (SDM B.1.1).
    control16: Field16, W16, Control {
        VIRTUAL_PROCESSOR_ID = 0x0000,
    }
}

fields! {
    /// 16-bit guest-state fields (SDM B.1.2): the segment selectors.
    guest16: Field16, W16, Guest {
        ES_SELECTOR = 0x0800,
        CS_SELECTOR = 0x0802,
        SS_SELECTOR = 0x0804,
        DS_SELECTOR = 0x0806,
        FS_SELECTOR = 0x0808,
        GS_SELECTOR = 0x080a,
        LDTR_SELECTOR = 0x080c,
        TR_SELECTOR = 0x080e,
    }
}

fields! {
    /// 16-bit host-state fields (SDM B.1.3).
    host16: Field16, W16, Host {
        ES_SELECTOR = 0x0c00,
        CS_SELECTOR = 0x0c02,
        SS_SELECTOR = 0x0c04,
        DS_SELECTOR = 0x0c06,
        FS_SELECTOR = 0x0c08,
        GS_SELECTOR = 0x0c0a,
        TR_SELECTOR = 0x0c0c,
    }
}

fields! {
    /// 64-bit control fields (SDM B.2.1).
    control64: Field64, W64, Control {
        MSR_BITMAP = 0x2004,
        VM_EXIT_MSR_STORE_ADDR = 0x2006,
        VM_EXIT_MSR_LOAD_ADDR = 0x2008,
        VM_ENTRY_MSR_LOAD_ADDR = 0x200a,
        TSC_OFFSET = 0x2010,
        VIRTUAL_APIC_PAGE_ADDR = 0x2012,
        EPT_POINTER = 0x201a,
    }
}

fields! {
    /// 64-bit read-only data fields (SDM B.2.2).
    exit64: Field64, W64, ReadOnly {
        GUEST_PHYSICAL_ADDRESS = 0x2400,
    }
}

fields! {
    /// 64-bit guest-state fields (SDM B.2.3).
    guest64: Field64, W64, Guest {
        /// All ones: no shadow VMCS (SDM 25.4.2); VM entry fails otherwise.
        VMCS_LINK_POINTER = 0x2800,
        IA32_DEBUGCTL = 0x2802,
        IA32_PAT = 0x2804,
        IA32_EFER = 0x2806,
        PDPTE0 = 0x280a,
        PDPTE1 = 0x280c,
        PDPTE2 = 0x280e,
        PDPTE3 = 0x2810,
    }
}

fields! {
    /// 64-bit host-state fields (SDM B.2.4).
    host64: Field64, W64, Host {
        IA32_PAT = 0x2c00,
        IA32_EFER = 0x2c02,
    }
}

fields! {
    /// 32-bit control fields (SDM B.3.1).
    control32: Field32, W32, Control {
        PIN_BASED_VM_EXEC_CONTROL = 0x4000,
        CPU_BASED_VM_EXEC_CONTROL = 0x4002,
        EXCEPTION_BITMAP = 0x4004,
        PAGE_FAULT_ERROR_CODE_MASK = 0x4006,
        PAGE_FAULT_ERROR_CODE_MATCH = 0x4008,
        CR3_TARGET_COUNT = 0x400a,
        VM_EXIT_CONTROLS = 0x400c,
        VM_EXIT_MSR_STORE_COUNT = 0x400e,
        VM_EXIT_MSR_LOAD_COUNT = 0x4010,
        VM_ENTRY_CONTROLS = 0x4012,
        VM_ENTRY_MSR_LOAD_COUNT = 0x4014,
        VM_ENTRY_INTR_INFO_FIELD = 0x4016,
        VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018,
        VM_ENTRY_INSTRUCTION_LEN = 0x401a,
        TPR_THRESHOLD = 0x401c,
        SECONDARY_VM_EXEC_CONTROL = 0x401e,
    }
}

fields! {
    /// 32-bit read-only data fields (SDM B.3.2).
    exit32: Field32, W32, ReadOnly {
        /// Why the last VMX instruction failed with VMfailValid.
        VM_INSTRUCTION_ERROR = 0x4400,
        VM_EXIT_REASON = 0x4402,
        VM_EXIT_INTR_INFO = 0x4404,
        VM_EXIT_INTR_ERROR_CODE = 0x4406,
        IDT_VECTORING_INFO_FIELD = 0x4408,
        IDT_VECTORING_ERROR_CODE = 0x440a,
        VM_EXIT_INSTRUCTION_LEN = 0x440c,
        VMX_INSTRUCTION_INFO = 0x440e,
    }
}

fields! {
    /// 32-bit guest-state fields (SDM B.3.3).
    guest32: Field32, W32, Guest {
        ES_LIMIT = 0x4800,
        CS_LIMIT = 0x4802,
        SS_LIMIT = 0x4804,
        DS_LIMIT = 0x4806,
        FS_LIMIT = 0x4808,
        GS_LIMIT = 0x480a,
        LDTR_LIMIT = 0x480c,
        TR_LIMIT = 0x480e,
        GDTR_LIMIT = 0x4810,
        IDTR_LIMIT = 0x4812,
        ES_AR_BYTES = 0x4814,
        CS_AR_BYTES = 0x4816,
        SS_AR_BYTES = 0x4818,
        DS_AR_BYTES = 0x481a,
        FS_AR_BYTES = 0x481c,
        GS_AR_BYTES = 0x481e,
        LDTR_AR_BYTES = 0x4820,
        TR_AR_BYTES = 0x4822,
        INTERRUPTIBILITY_INFO = 0x4824,
        ACTIVITY_STATE = 0x4826,
        SYSENTER_CS = 0x482a,
    }
}

fields! {
    /// 32-bit host-state fields (SDM B.3.4).
    host32: Field32, W32, Host {
        IA32_SYSENTER_CS = 0x4c00,
    }
}

fields! {
    /// Natural-width control fields (SDM B.4.1).
    control_nat: FieldNat, Natural, Control {
        CR0_GUEST_HOST_MASK = 0x6000,
        CR4_GUEST_HOST_MASK = 0x6002,
        CR0_READ_SHADOW = 0x6004,
        CR4_READ_SHADOW = 0x6006,
    }
}

fields! {
    /// Natural-width read-only data fields (SDM B.4.2).
    exit_nat: FieldNat, Natural, ReadOnly {
        EXIT_QUALIFICATION = 0x6400,
        GUEST_LINEAR_ADDRESS = 0x640a,
    }
}

fields! {
    /// Natural-width guest-state fields (SDM B.4.3).
    guest_nat: FieldNat, Natural, Guest {
        CR0 = 0x6800,
        CR3 = 0x6802,
        CR4 = 0x6804,
        ES_BASE = 0x6806,
        CS_BASE = 0x6808,
        SS_BASE = 0x680a,
        DS_BASE = 0x680c,
        FS_BASE = 0x680e,
        GS_BASE = 0x6810,
        LDTR_BASE = 0x6812,
        TR_BASE = 0x6814,
        GDTR_BASE = 0x6816,
        IDTR_BASE = 0x6818,
        DR7 = 0x681a,
        RSP = 0x681c,
        RIP = 0x681e,
        RFLAGS = 0x6820,
        PENDING_DBG_EXCEPTIONS = 0x6822,
        SYSENTER_ESP = 0x6824,
        SYSENTER_EIP = 0x6826,
    }
}

fields! {
    /// Natural-width host-state fields (SDM B.4.4).
    host_nat: FieldNat, Natural, Host {
        CR0 = 0x6c00,
        CR3 = 0x6c02,
        CR4 = 0x6c04,
        FS_BASE = 0x6c06,
        GS_BASE = 0x6c08,
        TR_BASE = 0x6c0a,
        GDTR_BASE = 0x6c0c,
        IDTR_BASE = 0x6c0e,
        IA32_SYSENTER_ESP = 0x6c10,
        IA32_SYSENTER_EIP = 0x6c12,
        RSP = 0x6c14,
        RIP = 0x6c16,
    }
}

/// RFLAGS.CF: VMfailInvalid (there is no current VMCS to report into).
pub(crate) const RFLAGS_CF: u64 = 1 << 0;
/// RFLAGS.ZF: VMfailValid (the error number is in `VM_INSTRUCTION_ERROR`).
pub(crate) const RFLAGS_ZF: u64 = 1 << 6;

/// How a VMX instruction ended, from the flags it left (SDM 31.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// VMsucceed: CF and ZF clear.
    Succeed,
    /// VMfailInvalid: CF set.
    FailInvalid,
    /// VMfailValid: ZF set; the current VMCS holds the error number.
    FailValid,
}

impl Outcome {
    /// Decodes the arithmetic flags a VMX instruction left in `rflags`.
    pub(crate) const fn from_rflags(rflags: u64) -> Self {
        if rflags & RFLAGS_CF != 0 {
            Self::FailInvalid
        } else if rflags & RFLAGS_ZF != 0 {
            Self::FailValid
        } else {
            Self::Succeed
        }
    }
}

/// A VM-instruction error number, as `VM_INSTRUCTION_ERROR` holds it after
/// a VMfailValid (SDM 31.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InsnError(pub(crate) u32);

impl InsnError {
    /// The SDM's description of the error numbers of the instructions rkvm
    /// executes (VMCLEAR, VMPTRLD, VMREAD, VMWRITE, VMLAUNCH, VMRESUME,
    /// VMXOFF); `None` for the others.
    pub(crate) const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "VMCALL executed in VMX root operation",
            2 => "VMCLEAR with invalid physical address",
            3 => "VMCLEAR with VMXON pointer",
            4 => "VMLAUNCH with non-clear VMCS",
            5 => "VMRESUME with non-launched VMCS",
            7 => "VM entry with invalid control field(s)",
            8 => "VM entry with invalid host-state field(s)",
            9 => "VMPTRLD with invalid physical address",
            10 => "VMPTRLD with VMXON pointer",
            11 => "VMPTRLD with incorrect VMCS revision identifier",
            12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
            13 => "VMWRITE to read-only VMCS component",
            15 => "VMXON executed in VMX root operation",
            26 => "VM entry with events blocked by MOV SS",
            _ => return None,
        })
    }
}

impl fmt::Display for InsnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "VM-instruction error {} ({name})", self.0),
            None => write!(f, "VM-instruction error {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    const fn width(enc: u32) -> u32 {
        (enc >> 13) & 3
    }

    const fn kind(enc: u32) -> u32 {
        (enc >> 10) & 3
    }

    /// Every group, with the width and type its fields must encode.
    const GROUPS: &[(Width, FieldType, &[(u32, &str)])] = &[
        (control16::WIDTH, control16::TYPE, control16::ALL),
        (guest16::WIDTH, guest16::TYPE, guest16::ALL),
        (host16::WIDTH, host16::TYPE, host16::ALL),
        (control64::WIDTH, control64::TYPE, control64::ALL),
        (exit64::WIDTH, exit64::TYPE, exit64::ALL),
        (guest64::WIDTH, guest64::TYPE, guest64::ALL),
        (host64::WIDTH, host64::TYPE, host64::ALL),
        (control32::WIDTH, control32::TYPE, control32::ALL),
        (exit32::WIDTH, exit32::TYPE, exit32::ALL),
        (guest32::WIDTH, guest32::TYPE, guest32::ALL),
        (host32::WIDTH, host32::TYPE, host32::ALL),
        (control_nat::WIDTH, control_nat::TYPE, control_nat::ALL),
        (exit_nat::WIDTH, exit_nat::TYPE, exit_nat::ALL),
        (guest_nat::WIDTH, guest_nat::TYPE, guest_nat::ALL),
        (host_nat::WIDTH, host_nat::TYPE, host_nat::ALL),
    ];

    #[test]
    fn encodings_match_their_group() {
        for &(w, t, fields) in GROUPS {
            assert!(!fields.is_empty());
            for &(enc, name) in fields {
                assert_eq!(width(enc), w as u32, "{name} ({enc:#x}) is not {w:?}");
                assert_eq!(kind(enc), t as u32, "{name} ({enc:#x}) is not {t:?}");
                assert_eq!(enc & 1, 0, "{name} ({enc:#x}) is not a full access");
                // Bits 31:15 and 12 are reserved (SDM 25.11.2).
                assert_eq!(enc & !0x6fff, 0, "{name} ({enc:#x}) sets reserved bits");
            }
        }
    }

    #[test]
    fn encodings_are_distinct() {
        let all = GROUPS.iter().flat_map(|g| g.2.iter());
        for (i, &(a, an)) in all.clone().enumerate() {
            for &(b, bn) in all.clone().skip(i + 1) {
                assert_ne!(a, b, "{an} and {bn} share an encoding");
            }
        }
    }

    #[test]
    fn known_encodings() {
        // Values as SDM appendix B lists them.
        assert_eq!(guest64::VMCS_LINK_POINTER, Field64(0x2800));
        assert_eq!(exit32::VM_INSTRUCTION_ERROR, Field32(0x4400));
        assert_eq!(control32::SECONDARY_VM_EXEC_CONTROL, Field32(0x401e));
        assert_eq!(host_nat::RIP, FieldNat(0x6c16));
        assert_eq!(guest32::TR_AR_BYTES, Field32(0x4822));
    }

    #[test]
    fn outcomes() {
        assert_eq!(Outcome::from_rflags(0x2), Outcome::Succeed);
        // Other arithmetic flags do not matter.
        assert_eq!(
            Outcome::from_rflags(0x2 | 0x4 | 0x80 | 0x800),
            Outcome::Succeed
        );
        assert_eq!(Outcome::from_rflags(RFLAGS_CF), Outcome::FailInvalid);
        assert_eq!(Outcome::from_rflags(0x2 | RFLAGS_ZF), Outcome::FailValid);
        // The instructions never set both; CF wins as the SDM checks it first.
        assert_eq!(
            Outcome::from_rflags(RFLAGS_CF | RFLAGS_ZF),
            Outcome::FailInvalid
        );
    }

    #[test]
    fn error_names() {
        assert_eq!(
            format!("{}", InsnError(11)),
            "VM-instruction error 11 (VMPTRLD with incorrect VMCS revision identifier)"
        );
        assert_eq!(
            format!("{}", InsnError(12)),
            "VM-instruction error 12 (VMREAD/VMWRITE from/to unsupported VMCS component)"
        );
        assert_eq!(format!("{}", InsnError(99)), "VM-instruction error 99");
        assert_eq!(InsnError(6).name(), None);
        assert_eq!(
            InsnError(13).name(),
            Some("VMWRITE to read-only VMCS component")
        );
    }
}
