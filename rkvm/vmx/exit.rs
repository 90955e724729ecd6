// SPDX-License-Identifier: GPL-2.0

//! VM exits as the VMCS reports them (Intel SDM vol. 3C, 28.2 and appendix
//! C) and their translation into the vendor-neutral [`Exit`], and the
//! event-information words exits and entries share (SDM 25.8.3, 25.9.2).
//!
//! Pure logic (only `core`), tested on the host.

use crate::exit_info::{Exit, IoExit};

/// Basic exit reasons (bits 15:0 of the exit reason, SDM appendix C): the
/// ones rkvm names, some only in the tests.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) mod reason {
    pub(crate) const EXCEPTION_NMI: u16 = 0;
    pub(crate) const EXTERNAL_INTERRUPT: u16 = 1;
    pub(crate) const TRIPLE_FAULT: u16 = 2;
    pub(crate) const INIT_SIGNAL: u16 = 3;
    pub(crate) const SIPI: u16 = 4;
    pub(crate) const IO_SMI: u16 = 5;
    pub(crate) const OTHER_SMI: u16 = 6;
    pub(crate) const INTERRUPT_WINDOW: u16 = 7;
    pub(crate) const NMI_WINDOW: u16 = 8;
    pub(crate) const CPUID: u16 = 10;
    pub(crate) const GETSEC: u16 = 11;
    pub(crate) const HLT: u16 = 12;
    pub(crate) const RDPMC: u16 = 15;
    pub(crate) const VMCALL: u16 = 18;
    pub(crate) const VMCLEAR: u16 = 19;
    pub(crate) const VMLAUNCH: u16 = 20;
    pub(crate) const VMPTRLD: u16 = 21;
    pub(crate) const VMPTRST: u16 = 22;
    pub(crate) const VMREAD: u16 = 23;
    pub(crate) const VMRESUME: u16 = 24;
    pub(crate) const VMWRITE: u16 = 25;
    pub(crate) const VMXOFF: u16 = 26;
    pub(crate) const VMXON: u16 = 27;
    pub(crate) const CR_ACCESS: u16 = 28;
    pub(crate) const MOV_DR: u16 = 29;
    pub(crate) const IO_INSTRUCTION: u16 = 30;
    pub(crate) const RDMSR: u16 = 31;
    pub(crate) const WRMSR: u16 = 32;
    pub(crate) const INVALID_GUEST_STATE: u16 = 33;
    pub(crate) const MSR_LOAD_FAIL: u16 = 34;
    pub(crate) const MWAIT: u16 = 36;
    pub(crate) const MONITOR: u16 = 39;
    pub(crate) const MACHINE_CHECK_ON_ENTRY: u16 = 41;
    pub(crate) const TPR_BELOW_THRESHOLD: u16 = 43;
    pub(crate) const EPT_VIOLATION: u16 = 48;
    pub(crate) const INVEPT: u16 = 50;
    pub(crate) const INVVPID: u16 = 53;
    pub(crate) const XSETBV: u16 = 55;
    pub(crate) const VMFUNC: u16 = 59;
}

/// Bit 31 of the exit reason: the VM entry failed (SDM 28.8).
pub(crate) const REASON_FAILED_ENTRY: u32 = 1 << 31;

/// An event-information word: the VM-exit interruption information, the
/// IDT-vectoring information and the VM-entry interruption information
/// share this format (vector in bits 7:0, type in 10:8, error-code valid in
/// 11, NMI unblocking by IRET in 12 on exits, valid in 31).
pub(crate) mod event {
    pub(crate) const TYPE_SHIFT: u32 = 8;
    pub(crate) const TYPE_MASK: u32 = 7 << TYPE_SHIFT;
    pub(crate) const ERROR_CODE: u32 = 1 << 11;
    pub(crate) const NMI_UNBLOCKED_BY_IRET: u32 = 1 << 12;
    pub(crate) const VALID: u32 = 1 << 31;

    pub(crate) const TYPE_EXTERNAL_INTERRUPT: u32 = 0;
    pub(crate) const TYPE_NMI: u32 = 2;
    pub(crate) const TYPE_HW_EXCEPTION: u32 = 3;
    pub(crate) const TYPE_SOFT_INTERRUPT: u32 = 4;
    pub(crate) const TYPE_PRIV_SOFT_EXCEPTION: u32 = 5;
    pub(crate) const TYPE_SOFT_EXCEPTION: u32 = 6;

    pub(crate) const fn kind(info: u32) -> u32 {
        (info & TYPE_MASK) >> TYPE_SHIFT
    }

    /// The entry word that delivers hardware exception `vector`.
    pub(crate) const fn hw_exception(vector: u8, has_error_code: bool) -> u32 {
        let mut info = VALID | (TYPE_HW_EXCEPTION << TYPE_SHIFT) | vector as u32;
        if has_error_code {
            info |= ERROR_CODE;
        }
        info
    }

    /// The event an information word (IDT-vectoring or VM-entry) and its
    /// error code describe, if valid.
    pub(crate) fn decode(info: u32, error_code: u32) -> Option<crate::exit_info::Event> {
        use crate::exit_info::Event;
        if info & VALID == 0 {
            return None;
        }
        let vector = info as u8;
        Some(match kind(info) {
            TYPE_EXTERNAL_INTERRUPT => Event::Interrupt { vector },
            TYPE_NMI => Event::Nmi,
            TYPE_HW_EXCEPTION => Event::Exception {
                vector,
                error_code: (info & ERROR_CODE != 0).then_some(error_code),
            },
            _ => Event::Soft,
        })
    }

    /// The VM-entry interruption information and error code that deliver
    /// `event`, if it can be described (not `Event::Soft`).
    pub(crate) fn encode(event: crate::exit_info::Event) -> Option<(u32, u32)> {
        use crate::exit_info::Event;
        match event {
            Event::Interrupt { vector } => Some((external_interrupt(vector), 0)),
            Event::Nmi => Some((NMI, 0)),
            Event::Exception { vector, error_code } => {
                Some((hw_exception(vector, error_code.is_some()), error_code.unwrap_or(0)))
            }
            Event::Soft => None,
        }
    }

    /// The entry word that delivers an NMI.
    pub(crate) const NMI: u32 = VALID | (TYPE_NMI << TYPE_SHIFT) | crate::arch::vector::NMI as u32;

    /// The entry word that delivers external interrupt `vector`.
    pub(crate) const fn external_interrupt(vector: u8) -> u32 {
        VALID | (TYPE_EXTERNAL_INTERRUPT << TYPE_SHIFT) | vector as u32
    }

    /// Whether delivering the event needs the instruction length (the
    /// software types, SDM 26.6.1.1).
    pub(crate) const fn needs_insn_len(info: u32) -> bool {
        matches!(
            kind(info),
            TYPE_SOFT_INTERRUPT | TYPE_PRIV_SOFT_EXCEPTION | TYPE_SOFT_EXCEPTION
        )
    }
}

/// The exit qualification of a control-register access (SDM table 28-3).
pub(crate) mod cr_access {
    pub(crate) const fn cr(q: u64) -> u8 {
        (q & 0xf) as u8
    }

    pub(crate) const fn access_type(q: u64) -> u8 {
        ((q >> 4) & 3) as u8
    }

    pub(crate) const fn gpr(q: u64) -> u8 {
        ((q >> 8) & 0xf) as u8
    }

    pub(crate) const MOV_TO_CR: u8 = 0;
    pub(crate) const LMSW: u8 = 3;

    /// LMSW's source operand.
    pub(crate) const fn lmsw_source(q: u64) -> u16 {
        (q >> 16) as u16
    }
}

/// The exit qualification of an EPT violation (SDM table 28-7).
pub(crate) mod ept_violation {
    pub(crate) const WRITE: u64 = 1 << 1;
    pub(crate) const FETCH: u64 = 1 << 2;
    /// Bits 5:3: the leaf's R/W/X permissions; any set: it was present.
    pub(crate) const PRESENT_RWX: u64 = 7 << 3;
    pub(crate) const NMI_UNBLOCKED_BY_IRET: u64 = 1 << 12;
}

/// What the VMCS says about an exit, read right after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    /// The full exit reason (bit 31: failed entry).
    pub(crate) reason: u32,
    pub(crate) qualification: u64,
    /// VM-exit interruption information.
    pub(crate) intr_info: u32,
    pub(crate) insn_len: u32,
    pub(crate) guest_physical: u64,
    /// The guest RIP at the exit.
    pub(crate) rip: u64,
}

impl ExitInfo {
    pub(crate) const fn basic(&self) -> u16 {
        self.reason as u16
    }

    /// Whether the exit is an NMI the host must be given.
    pub(crate) const fn is_nmi(&self) -> bool {
        self.basic() == reason::EXCEPTION_NMI
            && self.intr_info & event::VALID != 0
            && event::kind(self.intr_info) == event::TYPE_NMI
    }

    /// Whether the exit is a guest `#DB` (from a breakpoint, a single step
    /// or ICEBP): intercepted only to learn what it reports in DR6, which
    /// VMX does not switch (SDM 27.1: a `#DB` that exits leaves DR6
    /// alone, its exit qualification says what it would have set).
    pub(crate) const fn is_debug_exception(&self) -> bool {
        self.basic() == reason::EXCEPTION_NMI
            && self.intr_info & event::VALID != 0
            && self.intr_info as u8 == crate::arch::vector::DB
            && matches!(
                event::kind(self.intr_info),
                event::TYPE_HW_EXCEPTION | event::TYPE_PRIV_SOFT_EXCEPTION
            )
    }

    /// RIP after the instruction that exited, for the exits rkvm handles
    /// that report its length (SDM 28.2.5); `None` for the others (an EPT
    /// violation's length field is undefined).
    pub(crate) const fn next_rip(&self) -> Option<u64> {
        use reason::*;
        if self.reason & REASON_FAILED_ENTRY != 0 {
            return None;
        }
        match self.basic() {
            CPUID | HLT | IO_INSTRUCTION | RDMSR | WRMSR | XSETBV | CR_ACCESS | MOV_DR => {
                Some(self.rip.wrapping_add(self.insn_len as u64))
            }
            _ => None,
        }
    }

    /// Translates the exit for the vendor-neutral handler.
    pub(crate) fn decode(&self) -> Exit {
        use reason::*;
        if self.reason & REASON_FAILED_ENTRY != 0 {
            // What KVM reports as hardware_entry_failure_reason.
            return Exit::FailEntry {
                reason: self.reason as u64,
            };
        }
        let q = self.qualification;
        let unexpected = Exit::Unexpected {
            reason: self.reason as u64,
            info: q,
        };
        match self.basic() {
            EXCEPTION_NMI if self.is_nmi() => Exit::Host,
            // The guest's #DB: the backend has updated DR6 and delivers it
            // again; nothing for the caller.
            EXCEPTION_NMI if self.is_debug_exception() => Exit::Host,
            // INT3, intercepted only for the debugger; RIP is on it.
            EXCEPTION_NMI
                if self.intr_info & event::VALID != 0
                    && self.intr_info as u8 == crate::arch::vector::BP
                    && event::kind(self.intr_info) == event::TYPE_SOFT_EXCEPTION =>
            {
                Exit::Breakpoint
            }
            EXTERNAL_INTERRUPT | INIT_SIGNAL | SIPI | IO_SMI | OTHER_SMI => Exit::Host,
            TRIPLE_FAULT => Exit::Shutdown,
            INTERRUPT_WINDOW => Exit::InterruptWindow,
            // The guest lowered its TPR under a waiting interrupt: the
            // caller reads the TPR and chooses the events again.
            TPR_BELOW_THRESHOLD => Exit::Host,
            NMI_WINDOW => Exit::NmiWindow,
            CPUID => Exit::Cpuid,
            HLT => Exit::Hlt,
            RDPMC => Exit::Rdpmc,
            IO_INSTRUCTION => Exit::Io(IoExit {
                port: (q >> 16) as u16,
                size: ((q & 7) + 1) as u8,
                is_in: q & (1 << 3) != 0,
                string: q & (1 << 4) != 0,
                rep: q & (1 << 5) != 0,
                next_rip: self.rip.wrapping_add(self.insn_len as u64),
            }),
            RDMSR => Exit::Msr { write: false },
            WRMSR => Exit::Msr { write: true },
            XSETBV => Exit::Xsetbv,
            CR_ACCESS if cr_access::access_type(q) == cr_access::MOV_TO_CR => Exit::CrWrite {
                cr: cr_access::cr(q),
                gpr: Some(cr_access::gpr(q)),
            },
            // SDM table 28-4: DR in bits 2:0, from DR (a read) in bit 4,
            // the GPR in bits 11:8.
            MOV_DR => Exit::MovDr {
                dr: (q & 7) as u8,
                write: q & (1 << 4) == 0,
                gpr: Some(((q >> 8) & 0xf) as u8),
            },
            CR_ACCESS if cr_access::access_type(q) == cr_access::LMSW => Exit::Lmsw {
                msw: cr_access::lmsw_source(q),
            },
            EPT_VIOLATION => Exit::TdpFault {
                gpa: self.guest_physical,
                write: q & ept_violation::WRITE != 0,
                fetch: q & ept_violation::FETCH != 0,
                present: q & ept_violation::PRESENT_RWX != 0,
            },
            // Virtualization instructions and MONITOR/MWAIT: #UD, as on SVM.
            VMCALL | VMCLEAR | VMLAUNCH | VMPTRLD | VMPTRST | VMREAD | VMRESUME | VMWRITE
            | VMXOFF | VMXON | INVEPT | INVVPID | VMFUNC | GETSEC | MONITOR | MWAIT => {
                Exit::UndefinedInstruction
            }
            _ => unexpected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(reason: u16, qualification: u64) -> ExitInfo {
        ExitInfo {
            reason: reason as u32,
            qualification,
            rip: 0x1000,
            insn_len: 2,
            ..Default::default()
        }
    }

    #[test]
    fn io() {
        // OUT DX, AL to port 0x3f8: size 0 (1 byte), DX operand (bit 6).
        let e = exit(reason::IO_INSTRUCTION, 0x03f8_0040).decode();
        assert_eq!(
            e,
            Exit::Io(IoExit {
                port: 0x3f8,
                size: 1,
                is_in: false,
                string: false,
                rep: false,
                next_rip: 0x1002,
            })
        );
        // REP INSD from port 0x60.
        let e = exit(reason::IO_INSTRUCTION, 0x0060_0000 | 3 | 8 | 16 | 32).decode();
        assert_eq!(
            e,
            Exit::Io(IoExit {
                port: 0x60,
                size: 4,
                is_in: true,
                string: true,
                rep: true,
                next_rip: 0x1002,
            })
        );
    }

    #[test]
    fn ept_violation() {
        let mut e = exit(reason::EPT_VIOLATION, 0x182);
        e.guest_physical = 0xfee0_0000;
        assert_eq!(
            e.decode(),
            Exit::TdpFault {
                gpa: 0xfee0_0000,
                write: true,
                fetch: false,
                present: false
            }
        );
        e.qualification = 0x184;
        assert_eq!(
            e.decode(),
            Exit::TdpFault {
                gpa: 0xfee0_0000,
                write: false,
                fetch: true,
                present: false
            }
        );
        // A write to a readable, executable (write-protected) leaf.
        e.qualification = 0x2a;
        assert_eq!(
            e.decode(),
            Exit::TdpFault {
                gpa: 0xfee0_0000,
                write: true,
                fetch: false,
                present: true
            }
        );
    }

    #[test]
    fn cr_access() {
        // MOV CR4, RCX (GPR 1 in bits 11:8).
        assert_eq!(
            exit(reason::CR_ACCESS, 0x104).decode(),
            Exit::CrWrite {
                cr: 4,
                gpr: Some(1)
            }
        );
        // LMSW with source 0x0011 (type 3 in bits 5:4, data in 31:16).
        assert_eq!(
            exit(reason::CR_ACCESS, 0x0011_0030).decode(),
            Exit::Lmsw { msw: 0x11 }
        );
        // MOV RAX, CR4 (a read) is not a write.
        assert!(matches!(
            exit(reason::CR_ACCESS, 0x14).decode(),
            Exit::Unexpected { .. }
        ));
    }

    #[test]
    fn nmis_go_to_the_host_exceptions_do_not() {
        let mut e = exit(reason::EXCEPTION_NMI, 0);
        e.intr_info = event::VALID | (event::TYPE_NMI << event::TYPE_SHIFT) | 2;
        assert!(e.is_nmi());
        assert_eq!(e.decode(), Exit::Host);
        e.intr_info = event::hw_exception(18, false);
        assert!(!e.is_nmi());
        assert!(matches!(e.decode(), Exit::Unexpected { reason: 0, .. }));
    }

    #[test]
    fn failed_entry_keeps_the_full_reason() {
        let e = exit(reason::INVALID_GUEST_STATE, 0);
        let e = ExitInfo {
            reason: e.reason | REASON_FAILED_ENTRY,
            ..e
        };
        assert_eq!(
            e.decode(),
            Exit::FailEntry {
                reason: 0x8000_0021
            }
        );
    }

    #[test]
    fn simple_exits() {
        assert_eq!(exit(reason::CPUID, 0).decode(), Exit::Cpuid);
        assert_eq!(exit(reason::HLT, 0).decode(), Exit::Hlt);
        assert_eq!(exit(reason::RDPMC, 0).decode(), Exit::Rdpmc);
        assert_eq!(exit(reason::TRIPLE_FAULT, 0).decode(), Exit::Shutdown);
        assert_eq!(exit(reason::EXTERNAL_INTERRUPT, 0).decode(), Exit::Host);
        assert_eq!(exit(reason::INTERRUPT_WINDOW, 0).decode(), Exit::InterruptWindow);
        assert_eq!(event::external_interrupt(0x30), 0x8000_0030);
        assert_eq!(exit(reason::NMI_WINDOW, 0).decode(), Exit::NmiWindow);
        // MOV RBX, DR7 (from DR7 to RBX, GPR 3); MOV DR0, R9.
        assert_eq!(
            exit(reason::MOV_DR, 0x317).decode(),
            Exit::MovDr { dr: 7, write: false, gpr: Some(3) }
        );
        assert_eq!(
            exit(reason::MOV_DR, 0x900).decode(),
            Exit::MovDr { dr: 0, write: true, gpr: Some(9) }
        );
        assert_eq!(event::NMI, 0x8000_0202);
        use crate::exit_info::Event;
        for e in [
            Event::Interrupt { vector: 0x30 },
            Event::Nmi,
            Event::Exception { vector: 13, error_code: Some(7) },
            Event::Exception { vector: 6, error_code: None },
        ] {
            let (info, err) = event::encode(e).unwrap();
            assert_eq!(event::decode(info, err), Some(e));
        }
        assert_eq!(event::decode(0x8000_0403, 0), Some(Event::Soft));
        assert_eq!(event::encode(Event::Soft), None);
        assert_eq!(exit(reason::WRMSR, 0).decode(), Exit::Msr { write: true });
        assert_eq!(exit(reason::XSETBV, 0).decode(), Exit::Xsetbv);
        assert_eq!(
            exit(reason::VMCALL, 0).decode(),
            Exit::UndefinedInstruction
        );
        assert_eq!(
            exit(reason::MWAIT, 0).decode(),
            Exit::UndefinedInstruction
        );
        assert_eq!(
            exit(reason::INVVPID, 0).decode(),
            Exit::UndefinedInstruction
        );
        assert_eq!(
            exit(999, 7).decode(),
            Exit::Unexpected {
                reason: 999,
                info: 7
            }
        );
    }

    #[test]
    fn next_rip_only_where_the_length_is_reported() {
        assert_eq!(exit(reason::CPUID, 0).next_rip(), Some(0x1002));
        assert_eq!(exit(reason::MOV_DR, 0).next_rip(), Some(0x1002));
        let mut db = exit(reason::EXCEPTION_NMI, 1 << 14);
        db.intr_info = event::hw_exception(1, false);
        assert!(db.is_debug_exception() && !db.is_nmi());
        db.intr_info = event::VALID | (event::TYPE_PRIV_SOFT_EXCEPTION << event::TYPE_SHIFT) | 1;
        assert!(db.is_debug_exception());
        db.intr_info = event::hw_exception(13, true);
        assert!(!db.is_debug_exception());
        let mut bp = exit(reason::EXCEPTION_NMI, 0);
        bp.intr_info = event::VALID | (event::TYPE_SOFT_EXCEPTION << event::TYPE_SHIFT) | 3;
        assert_eq!(bp.decode(), Exit::Breakpoint);
        assert_eq!(exit(reason::EPT_VIOLATION, 0).next_rip(), None);
        let failed = ExitInfo {
            reason: reason::CPUID as u32 | REASON_FAILED_ENTRY,
            ..exit(0, 0)
        };
        assert_eq!(failed.next_rip(), None);
    }

    #[test]
    fn event_words() {
        assert_eq!(event::hw_exception(13, true), 0x8000_0b0d);
        assert_eq!(event::hw_exception(6, false), 0x8000_0306);
        assert!(event::needs_insn_len(event::VALID | (4 << 8) | 0x80));
        assert!(!event::needs_insn_len(event::hw_exception(14, true)));
    }
}
