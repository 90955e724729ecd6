// SPDX-License-Identifier: GPL-2.0

//! Why the guest stopped running: the vendor-neutral description of an
//! exit that both backends produce (see `backend.rs`) and `exits.rs`
//! handles.
//!
//! Pure logic (only `core`), tested on the host with the decoders that
//! produce it.

/// Why the guest stopped running, in terms both vendors share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// For the host's sake (a physical interrupt, NMI, SMI or INIT): the
    /// guest resumes once the host has taken it.
    Host,
    /// Port I/O.
    Io(IoExit),
    /// A TDP fault (NPT or EPT violation) on `gpa`: a write, an
    /// instruction fetch, or a read; `present` if the hardware found a
    /// present leaf (a protection fault: a write to a read-only leaf).
    TdpFault {
        gpa: u64,
        write: bool,
        fetch: bool,
        present: bool,
    },
    Cpuid,
    Hlt,
    /// RDMSR (`write == false`) or WRMSR.
    Msr { write: bool },
    Xsetbv,
    /// MOV to CR`cr`; `gpr` is the source register when the hardware
    /// decoded it (SVM decode assists, VMX exit qualification).
    CrWrite { cr: u8, gpr: Option<u8> },
    /// MOV to (`write`) or from DR`dr`; `gpr` is the other operand when
    /// the hardware decoded it.
    MovDr { dr: u8, write: bool, gpr: Option<u8> },
    /// LMSW with the new low CR0 bits, when it changes a bit the backend
    /// keeps to itself.
    Lmsw { msw: u16 },
    /// A triple fault: the guest state is undefined until reset.
    Shutdown,
    /// The guest state failed the entry checks (hardware or software).
    FailEntry { reason: u64 },
    /// The guest can take an external interrupt now (the exit
    /// `VcpuBackend::set_interrupt_window` asked for).
    InterruptWindow,
    /// The guest may be able to take an NMI now (the exit
    /// `VcpuBackend::set_nmi_window` asked for, or a step towards it).
    NmiWindow,
    /// A `#DB` that exited for the VMM's debugger
    /// (`VcpuBackend::set_debug_intercepts`): the DR6 the exception
    /// reported (the guest's DR6 is left as it was) and the DR7 in
    /// effect.
    Debug { dr6: u64, dr7: u64 },
    /// An INT3 (`#BP`) that exited for the VMM's debugger; RIP is still on
    /// it.
    Breakpoint,
    /// RDPMC: rkvm has no virtual PMU, so no counter exists (`#GP`), and
    /// the host's counters are never read by the guest.
    Rdpmc,
    /// An instruction rkvm does not virtualize: the guest gets `#UD`.
    UndefinedInstruction,
    /// Anything else: reported to userspace with the vendor's code.
    Unexpected { reason: u64, info: u64 },
}

/// An event on its way into the guest: injected, or interrupted by an exit
/// and delivered again by the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A hardware exception, with its error code if it pushes one.
    Exception { vector: u8, error_code: Option<u32> },
    /// An external interrupt.
    Interrupt { vector: u8 },
    Nmi,
    /// A software interrupt or exception (INT n, INT3, INTO) being
    /// delivered again: it needs its instruction's length, which
    /// `KVM_GET_VCPU_EVENTS` has no field for (KVM does not report these
    /// either).
    Soft,
}

/// A port I/O exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoExit {
    pub(crate) port: u16,
    /// 1, 2 or 4 bytes.
    pub(crate) size: u8,
    pub(crate) is_in: bool,
    /// INS/OUTS.
    pub(crate) string: bool,
    pub(crate) rep: bool,
    /// RIP of the next instruction.
    pub(crate) next_rip: u64,
}
