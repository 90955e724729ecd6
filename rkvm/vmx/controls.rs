// SPDX-License-Identifier: GPL-2.0

//! The VM-execution, VM-exit and VM-entry controls rkvm runs guests with,
//! computed from the CPU's VMX capability MSRs, never hard-coded.
//!
//! Each control word has a capability MSR whose low half lists the bits
//! that must be 1 (allowed-0 settings) and whose high half lists the bits
//! that may be 1 (allowed-1 settings); VM entry fails if a control breaks
//! either (Intel SDM vol. 3C, appendix A.3-A.5). Some bits of the pin-based,
//! primary and exit/entry words are "default1": the plain MSRs report them
//! as must-be-1 even on CPUs that can clear them. When `IA32_VMX_BASIC` bit
//! 55 is set, the `IA32_VMX_TRUE_*` MSRs report what the CPU really needs,
//! so rkvm reads those then and can, for instance, leave CR3-load/store
//! exiting off under EPT (SDM A.2).
//!
//! The bit positions are those of SDM vol. 3C, 25.6.1-25.6.2 (execution),
//! 25.7.1 (exit) and 25.8.1 (entry). Pure logic (only `core`), tested on
//! the host.

use core::fmt;

/// `IA32_VMX_PINBASED_CTLS`.
pub(crate) const MSR_VMX_PINBASED_CTLS: u32 = 0x481;
/// `IA32_VMX_PROCBASED_CTLS`.
pub(crate) const MSR_VMX_PROCBASED_CTLS: u32 = 0x482;
/// `IA32_VMX_EXIT_CTLS`.
pub(crate) const MSR_VMX_EXIT_CTLS: u32 = 0x483;
/// `IA32_VMX_ENTRY_CTLS`.
pub(crate) const MSR_VMX_ENTRY_CTLS: u32 = 0x484;
/// `IA32_VMX_PROCBASED_CTLS2`. Secondary controls have no default1 bits,
/// hence no TRUE variant.
pub(crate) const MSR_VMX_PROCBASED_CTLS2: u32 = 0x48b;
/// `IA32_VMX_TRUE_PINBASED_CTLS`.
pub(crate) const MSR_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
/// `IA32_VMX_TRUE_PROCBASED_CTLS`.
pub(crate) const MSR_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
/// `IA32_VMX_TRUE_EXIT_CTLS`.
pub(crate) const MSR_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
/// `IA32_VMX_TRUE_ENTRY_CTLS`.
pub(crate) const MSR_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

/// `IA32_VMX_BASIC` bit 55: the TRUE capability MSRs exist and any
/// default1 control they allow to be 0 may be cleared.
pub(crate) const BASIC_TRUE_CONTROLS: u64 = 1 << 55;

/// Declares one control word's bits as `u32` constants, and `NAMES`, the
/// same bits with their names, so an error can say which controls are
/// missing. Only the bits rkvm asks for are listed: a default1 bit that
/// the CPU forces on needs no name to be kept.
macro_rules! control_bits {
    ($(#[$doc:meta])* $word:ident { $($(#[$bit_doc:meta])* $name:ident = $bit:literal,)* }) => {
        $(#[$doc])*
        pub(crate) mod $word {
            $($(#[$bit_doc])* pub(crate) const $name: u32 = 1 << $bit;)*

            /// Every bit above with its name, in bit order.
            pub(crate) const NAMES: &[(u32, &str)] = &[$(($name, stringify!($name)),)*];
        }
    };
}

control_bits! {
    /// Pin-based VM-execution controls (SDM 25.6.1).
    pin {
        /// External interrupts exit, so the host's interrupts reach the host.
        EXTERNAL_INTERRUPT_EXITING = 0,
        /// NMIs exit, for the same reason.
        NMI_EXITING = 3,
        /// NMI blocking is tracked for the guest, so NMI windows work.
        VIRTUAL_NMIS = 5,
    }
}

control_bits! {
    /// Primary processor-based VM-execution controls (SDM 25.6.2).
    primary {
        /// Exits as soon as the guest can take an external interrupt;
        /// turned on and off by the backend (see `PRIMARY_TOGGLED`).
        INTR_WINDOW_EXITING = 2,
        /// `IA32_VMX_TSC_OFFSET` is added to the guest's TSC reads.
        USE_TSC_OFFSETTING = 3,
        HLT_EXITING = 7,
        /// The guest never reads the host's performance counters.
        RDPMC_EXITING = 11,
        MWAIT_EXITING = 10,
        /// Default1 bits rkvm does not ask for (EPT lets the guest own
        /// CR3); named so the tests can check they stay off where the
        /// TRUE MSR allows.
        CR3_LOAD_EXITING = 15,
        CR3_STORE_EXITING = 16,
        /// The guest's CR8 is the TPR in the virtual-APIC page, not the
        /// host's APIC.
        USE_TPR_SHADOW = 21,
        /// Exits as soon as the guest's NMIs are no longer blocked (needs
        /// virtual NMIs); toggled as the interrupt window.
        NMI_WINDOW_EXITING = 22,
        /// DR0-3 are not switched by VM entry and exit.
        MOV_DR_EXITING = 23,
        UNCONDITIONAL_IO_EXITING = 24,
        USE_MSR_BITMAPS = 28,
        MONITOR_EXITING = 29,
        ACTIVATE_SECONDARY_CONTROLS = 31,
    }
}

control_bits! {
    /// Secondary processor-based VM-execution controls (SDM 25.6.2).
    secondary {
        ENABLE_EPT = 1,
        /// RDTSCP runs in the guest (else `#UD`).
        ENABLE_RDTSCP = 3,
        ENABLE_VPID = 5,
        UNRESTRICTED_GUEST = 7,
    }
}

control_bits! {
    /// Primary VM-exit controls (SDM 25.7.1).
    exit {
        /// DR7 and `IA32_DEBUGCTL` are saved (default1).
        SAVE_DEBUG_CONTROLS = 2,
        /// The host runs in 64-bit mode after the exit.
        HOST_ADDRESS_SPACE_SIZE = 9,
        LOAD_IA32_PAT = 19,
        LOAD_IA32_EFER = 21,
    }
}

control_bits! {
    /// VM-entry controls (SDM 25.8.1).
    entry {
        /// DR7 and `IA32_DEBUGCTL` are loaded (default1).
        LOAD_DEBUG_CONTROLS = 2,
        /// The guest runs in IA-32e mode (its EFER.LMA): set per entry,
        /// never part of the computed word.
        IA32E_MODE_GUEST = 9,
        LOAD_IA32_PAT = 14,
        LOAD_IA32_EFER = 15,
    }
}

/// The five control words of a VMCS (the tertiary one rkvm leaves off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlWord {
    PinBased,
    Primary,
    Secondary,
    Exit,
    Entry,
}

impl ControlWord {
    /// The capability MSR that reports this word's allowed settings: the
    /// TRUE one when `IA32_VMX_BASIC` says it exists.
    pub(crate) const fn capability_msr(self, basic: u64) -> u32 {
        let true_controls = basic & BASIC_TRUE_CONTROLS != 0;
        match (self, true_controls) {
            (Self::PinBased, false) => MSR_VMX_PINBASED_CTLS,
            (Self::PinBased, true) => MSR_VMX_TRUE_PINBASED_CTLS,
            (Self::Primary, false) => MSR_VMX_PROCBASED_CTLS,
            (Self::Primary, true) => MSR_VMX_TRUE_PROCBASED_CTLS,
            (Self::Secondary, _) => MSR_VMX_PROCBASED_CTLS2,
            (Self::Exit, false) => MSR_VMX_EXIT_CTLS,
            (Self::Exit, true) => MSR_VMX_TRUE_EXIT_CTLS,
            (Self::Entry, false) => MSR_VMX_ENTRY_CTLS,
            (Self::Entry, true) => MSR_VMX_TRUE_ENTRY_CTLS,
        }
    }

    /// The word's name, as the SDM calls it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::PinBased => "pin-based VM-execution",
            Self::Primary => "primary processor-based VM-execution",
            Self::Secondary => "secondary processor-based VM-execution",
            Self::Exit => "VM-exit",
            Self::Entry => "VM-entry",
        }
    }

    const fn bit_names(self) -> &'static [(u32, &'static str)] {
        match self {
            Self::PinBased => pin::NAMES,
            Self::Primary => primary::NAMES,
            Self::Secondary => secondary::NAMES,
            Self::Exit => exit::NAMES,
            Self::Entry => entry::NAMES,
        }
    }
}

/// Adjusts a control word to a capability MSR, as KVM's
/// `adjust_vmx_controls`: the `required` and `optional` bits the MSR allows
/// to be 1 (high half), plus every bit it requires to be 1 (low half).
/// Fails with the required bits the CPU cannot set.
pub(crate) const fn adjust(capability: u64, required: u32, optional: u32) -> Result<u32, u32> {
    let must_be_1 = capability as u32;
    let may_be_1 = (capability >> 32) as u32;
    let value = ((required | optional) & may_be_1) | must_be_1;
    let missing = required & !value;
    if missing != 0 {
        Err(missing)
    } else {
        Ok(value)
    }
}

/// Why the control words cannot be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ControlsError {
    /// Reading this capability MSR faulted.
    Unreadable { msr: u32 },
    /// The CPU cannot set these `missing` bits of `word`, which rkvm needs.
    Missing { word: ControlWord, missing: u32 },
}

impl fmt::Display for ControlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unreadable { msr } => write!(f, "VMX capability MSR {msr:#x} is unreadable"),
            Self::Missing { word, missing } => {
                write!(f, "the CPU cannot set {} controls", word.name())?;
                let mut sep = " ";
                for &(bit, name) in word.bit_names() {
                    if missing & bit != 0 {
                        write!(f, "{sep}{name}")?;
                        sep = ", ";
                    }
                }
                write!(f, " ({missing:#x})")
            }
        }
    }
}

/// The control words of every VMCS rkvm runs a guest with, fixed at load.
/// Controls that change per entry (IA-32e mode guest, interrupt and NMI
/// windows) are added to these by the vCPU, never stored here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmcsConfig {
    pub(crate) pin_based: u32,
    pub(crate) primary: u32,
    /// Without `ENABLE_RDTSCP`, which each vCPU adds while its guest
    /// CPUID offers RDTSCP.
    pub(crate) secondary: u32,
    pub(crate) exit: u32,
    pub(crate) entry: u32,
    /// The CPU allows `ENABLE_RDTSCP`.
    pub(crate) rdtscp: bool,
}

// What rkvm asks for. Like KVM (vmx.h, KVM_{REQUIRED,OPTIONAL}_VMX_*) for
// an EPT + unrestricted-guest hypervisor, but only what rkvm's backend
// backs: what is not listed stays 0 unless the CPU forces it on.

/// The host keeps its interrupts and NMIs; the CPU tracks the guest's NMI
/// blocking (virtual NMIs), so that NMI windows work, as KVM requires
/// nowadays.
const PIN_REQUIRED: u32 = pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS;
const PIN_OPTIONAL: u32 = 0;

/// The exits rkvm's SVM backend takes too (HLT, all port I/O and MSRs,
/// MONITOR/MWAIT refused, debug registers), the TSC offset of the backend
/// interface, a TPR shadow (SVM's V_TPR: without it, or CR8 exiting, a
/// guest MOV to CR8 would set the host's TPR), and the secondary controls
/// for EPT. Port I/O exits
/// unconditionally, as in KVM, rather than through I/O bitmaps: every port
/// goes to rkvm, so bitmaps would only cost two pages. MSR bitmaps are
/// required so that the backend can pass some MSRs through later; CR3
/// load/store and INVLPG exiting are not asked for, EPT makes them useless.
const PRIMARY_REQUIRED: u32 = primary::USE_TSC_OFFSETTING
    | primary::HLT_EXITING
    | primary::RDPMC_EXITING
    | primary::MWAIT_EXITING
    | primary::USE_TPR_SHADOW
    | primary::MOV_DR_EXITING
    | primary::UNCONDITIONAL_IO_EXITING
    | primary::USE_MSR_BITMAPS
    | primary::MONITOR_EXITING
    | primary::ACTIVATE_SECONDARY_CONTROLS;
const PRIMARY_OPTIONAL: u32 = 0;
/// Controls the backend turns on only while it needs them: the CPU must
/// allow them, but the configuration starts with them off.
pub(crate) const PRIMARY_TOGGLED: u32 = primary::INTR_WINDOW_EXITING | primary::NMI_WINDOW_EXITING;

/// rkvm's MMU is EPT only, and real mode runs without vm86 emulation.
/// INVPCID and XSAVES stay off: the guest gets `#UD` for them, as on SVM,
/// where rkvm intercepts them. RDTSCP is the vCPU's to turn on.
const SECONDARY_REQUIRED: u32 = secondary::ENABLE_EPT | secondary::UNRESTRICTED_GUEST;
/// Without VPID, the backend flushes the TLB on every entry instead.
const SECONDARY_OPTIONAL: u32 = secondary::ENABLE_VPID;

/// A 64-bit host. Interrupts are not acknowledged by the exit: as on SVM,
/// the interrupt stays pending and the host takes it once IRQs are back on
/// after the exit. EFER and PAT are switched by the exit and entry
/// themselves: KVM falls back to the MSR-load lists without these controls,
/// rkvm has no such fallback (and every CPU with EPT has them). Saving EFER
/// and PAT on exit is not asked for: the backend intercepts guest writes to
/// both and keeps the guest fields itself, as KVM does.
const EXIT_REQUIRED: u32 = exit::SAVE_DEBUG_CONTROLS
    | exit::HOST_ADDRESS_SPACE_SIZE
    | exit::LOAD_IA32_PAT
    | exit::LOAD_IA32_EFER;
const EXIT_OPTIONAL: u32 = 0;

const ENTRY_REQUIRED: u32 =
    entry::LOAD_DEBUG_CONTROLS | entry::LOAD_IA32_PAT | entry::LOAD_IA32_EFER;
const ENTRY_OPTIONAL: u32 = 0;

impl VmcsConfig {
    /// Computes the control words from the capability MSRs, read through
    /// `rdmsr` (`None` if the read faulted), for a CPU whose
    /// `IA32_VMX_BASIC` is `basic`.
    pub(crate) fn compute(
        basic: u64,
        mut rdmsr: impl FnMut(u32) -> Option<u64>,
    ) -> Result<Self, ControlsError> {
        let mut word = |word: ControlWord, required: u32, optional: u32| {
            let msr = word.capability_msr(basic);
            let capability = rdmsr(msr).ok_or(ControlsError::Unreadable { msr })?;
            adjust(capability, required, optional)
                .map_err(|missing| ControlsError::Missing { word, missing })
        };
        let pin_based = word(ControlWord::PinBased, PIN_REQUIRED, PIN_OPTIONAL)?;
        let primary = word(
            ControlWord::Primary,
            PRIMARY_REQUIRED | PRIMARY_TOGGLED,
            PRIMARY_OPTIONAL,
        )? & !PRIMARY_TOGGLED;
        let secondary = word(
            ControlWord::Secondary,
            SECONDARY_REQUIRED,
            SECONDARY_OPTIONAL | secondary::ENABLE_RDTSCP,
        )?;
        Ok(Self {
            pin_based,
            primary,
            secondary: secondary & !secondary::ENABLE_RDTSCP,
            exit: word(ControlWord::Exit, EXIT_REQUIRED, EXIT_OPTIONAL)?,
            entry: word(ControlWord::Entry, ENTRY_REQUIRED, ENTRY_OPTIONAL)?,
            rdtscp: secondary & secondary::ENABLE_RDTSCP != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{format, string::String};

    /// Low halves as Bochs 2.7 reports them for `corei7_haswell_4770`
    /// (its `cpu/vmx.h`: the default1 bits, with CR3-load/store exiting and
    /// the debug controls dropped from the TRUE MSRs). The high halves are
    /// a Haswell-like choice, not copied from a CPU: every control rkvm asks
    /// for plus others it must leave off (RDTSCP, posted interrupts...),
    /// and reserved bits clear.
    const PINBASED_LOW: u64 = 0x16;
    const PINBASED_HIGH: u64 = 0x7f;
    const PROCBASED_LOW: u64 = 0x0401_e172;
    const TRUE_PROCBASED_LOW: u64 = 0x0400_6172;
    const PROCBASED_HIGH: u64 = 0xfff9_fffe;
    const PROCBASED2_HIGH: u64 = 0x0000_37ff;
    const EXIT_LOW: u64 = 0x0003_6dff;
    const TRUE_EXIT_LOW: u64 = 0x0003_6dfb;
    const EXIT_HIGH: u64 = 0x007f_ffff;
    const ENTRY_LOW: u64 = 0x0000_11ff;
    const TRUE_ENTRY_LOW: u64 = 0x0000_11fb;
    const ENTRY_HIGH: u64 = 0x0000_ffff;
    /// Revision 0x1d3b, 4 KiB, write-back, TRUE controls.
    const HASWELL_BASIC: u64 = BASIC_TRUE_CONTROLS | (6 << 50) | (0x1000 << 32) | 0x1d3b;

    fn msr(low: u64, high: u64) -> u64 {
        high << 32 | low
    }

    fn haswell(msr_number: u32) -> Option<u64> {
        Some(match msr_number {
            MSR_VMX_PINBASED_CTLS | MSR_VMX_TRUE_PINBASED_CTLS => msr(PINBASED_LOW, PINBASED_HIGH),
            MSR_VMX_PROCBASED_CTLS => msr(PROCBASED_LOW, PROCBASED_HIGH),
            MSR_VMX_TRUE_PROCBASED_CTLS => msr(TRUE_PROCBASED_LOW, PROCBASED_HIGH),
            MSR_VMX_PROCBASED_CTLS2 => msr(0, PROCBASED2_HIGH),
            MSR_VMX_EXIT_CTLS => msr(EXIT_LOW, EXIT_HIGH),
            MSR_VMX_TRUE_EXIT_CTLS => msr(TRUE_EXIT_LOW, EXIT_HIGH),
            MSR_VMX_ENTRY_CTLS => msr(ENTRY_LOW, ENTRY_HIGH),
            MSR_VMX_TRUE_ENTRY_CTLS => msr(TRUE_ENTRY_LOW, ENTRY_HIGH),
            _ => return None,
        })
    }

    #[test]
    fn haswell_with_true_controls() {
        let c = VmcsConfig::compute(HASWELL_BASIC, haswell).unwrap();
        // Interrupts, NMIs, virtual NMIs, and default1 bits 1, 2, 4.
        assert_eq!(c.pin_based, 0x3f);
        // Default1 bits 1, 4-6, 8, 13, 14, 26 stay; CR3 exits are off.
        assert_eq!(c.primary, 0xb5a0_6dfa);
        assert_eq!(
            c.primary & (primary::CR3_LOAD_EXITING | primary::CR3_STORE_EXITING),
            0
        );
        assert_eq!(
            c.secondary,
            secondary::ENABLE_EPT | secondary::ENABLE_VPID | secondary::UNRESTRICTED_GUEST
        );
        assert_eq!(c.exit, 0x002b_6fff);
        assert_eq!(c.entry, 0x0000_d1ff);
        // IA-32e mode guest (entry bit 9) is per entry, not fixed.
        assert_eq!(c.entry & 1 << 9, 0);
    }

    #[test]
    fn plain_msrs_without_basic_bit_55() {
        let basic = HASWELL_BASIC & !BASIC_TRUE_CONTROLS;
        let mut read = [0u32; 8];
        let mut n = 0;
        let c = VmcsConfig::compute(basic, |m| {
            read[n] = m;
            n += 1;
            haswell(m)
        })
        .unwrap();
        assert_eq!(
            &read[..n],
            &[
                MSR_VMX_PINBASED_CTLS,
                MSR_VMX_PROCBASED_CTLS,
                MSR_VMX_PROCBASED_CTLS2,
                MSR_VMX_EXIT_CTLS,
                MSR_VMX_ENTRY_CTLS
            ]
        );
        // The plain MSR forces the default1 CR3 exits on: they stay.
        assert_eq!(
            c.primary,
            0xb5a0_6dfa | primary::CR3_LOAD_EXITING | primary::CR3_STORE_EXITING
        );

        n = 0;
        VmcsConfig::compute(HASWELL_BASIC, |m| {
            read[n] = m;
            n += 1;
            haswell(m)
        })
        .unwrap();
        assert_eq!(
            &read[..n],
            &[
                MSR_VMX_TRUE_PINBASED_CTLS,
                MSR_VMX_TRUE_PROCBASED_CTLS,
                MSR_VMX_PROCBASED_CTLS2,
                MSR_VMX_TRUE_EXIT_CTLS,
                MSR_VMX_TRUE_ENTRY_CTLS
            ]
        );
    }

    #[test]
    fn adjustment() {
        // Allowed-0 bits are forced on even if nobody asked for them.
        assert_eq!(adjust(msr(0b1000, 0b1111), 0b0001, 0), Ok(0b1001));
        // An optional bit the CPU cannot set is dropped.
        assert_eq!(adjust(msr(0, 0b0011), 0b0001, 0b0100), Ok(0b0001));
        assert_eq!(adjust(msr(0, 0b0111), 0b0001, 0b0100), Ok(0b0101));
        // A required bit the CPU cannot set is reported.
        assert_eq!(adjust(msr(0, 0b0001), 0b0111, 0), Err(0b0110));
    }

    /// The Haswell configuration with `missing` secondary controls not
    /// allowed.
    fn haswell_without_secondary(missing: u32) -> VmcsConfig {
        VmcsConfig::compute(HASWELL_BASIC, |m| match m {
            MSR_VMX_PROCBASED_CTLS2 => Some(msr(0, PROCBASED2_HIGH & !u64::from(missing))),
            _ => haswell(m),
        })
        .unwrap()
    }

    #[test]
    fn optional_vpid_dropped() {
        let c = haswell_without_secondary(secondary::ENABLE_VPID);
        assert_eq!(
            c.secondary,
            secondary::ENABLE_EPT | secondary::UNRESTRICTED_GUEST
        );
        assert!(c.rdtscp, "allowed, kept out of the base word");
    }

    #[test]
    fn rdtscp_only_where_allowed() {
        let c = haswell_without_secondary(secondary::ENABLE_RDTSCP);
        assert!(!c.rdtscp);
        assert_eq!(c.secondary & secondary::ENABLE_RDTSCP, 0);
    }

    #[test]
    fn missing_required_controls_are_named() {
        let no_ug_or_ept =
            PROCBASED2_HIGH & !((secondary::ENABLE_EPT | secondary::UNRESTRICTED_GUEST) as u64);
        let e = VmcsConfig::compute(HASWELL_BASIC, |m| match m {
            MSR_VMX_PROCBASED_CTLS2 => Some(msr(0, no_ug_or_ept)),
            _ => haswell(m),
        })
        .unwrap_err();
        assert_eq!(
            e,
            ControlsError::Missing {
                word: ControlWord::Secondary,
                missing: secondary::ENABLE_EPT | secondary::UNRESTRICTED_GUEST
            }
        );
        let text: String = format!("{e}");
        assert_eq!(
            text,
            "the CPU cannot set secondary processor-based VM-execution controls \
             ENABLE_EPT, UNRESTRICTED_GUEST (0x82)"
        );

        let e = VmcsConfig::compute(HASWELL_BASIC, |m| match m {
            MSR_VMX_TRUE_ENTRY_CTLS => Some(msr(
                TRUE_ENTRY_LOW,
                ENTRY_HIGH & !(entry::LOAD_IA32_EFER as u64),
            )),
            _ => haswell(m),
        })
        .unwrap_err();
        assert_eq!(
            format!("{e}"),
            "the CPU cannot set VM-entry controls LOAD_IA32_EFER (0x8000)"
        );
    }

    #[test]
    fn window_exiting_is_allowed_but_off() {
        let c = VmcsConfig::compute(HASWELL_BASIC, haswell).unwrap();
        assert_eq!(c.primary & PRIMARY_TOGGLED, 0);
        let e = VmcsConfig::compute(HASWELL_BASIC, |m| match m {
            MSR_VMX_TRUE_PROCBASED_CTLS => haswell(m).map(|v| v & !((PRIMARY_TOGGLED as u64) << 32)),
            _ => haswell(m),
        })
        .unwrap_err();
        assert_eq!(
            e,
            ControlsError::Missing {
                word: ControlWord::Primary,
                missing: primary::INTR_WINDOW_EXITING | primary::NMI_WINDOW_EXITING
            }
        );
    }

    #[test]
    fn unreadable_msr() {
        let e = VmcsConfig::compute(HASWELL_BASIC, |m| {
            (m != MSR_VMX_TRUE_EXIT_CTLS).then(|| haswell(m)).flatten()
        })
        .unwrap_err();
        assert_eq!(
            e,
            ControlsError::Unreadable {
                msr: MSR_VMX_TRUE_EXIT_CTLS
            }
        );
        assert_eq!(format!("{e}"), "VMX capability MSR 0x48f is unreadable");
    }
}
