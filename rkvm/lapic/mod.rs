// SPDX-License-Identifier: GPL-2.0

//! The in-kernel local APIC (KVM's split irqchip: the local APICs in the
//! kernel, the PIC and IOAPIC in the VMM).
//!
//! - `regs`: one APIC's register file, priorities and timer settings
//!   (pure);
//! - `mailbox`: what other threads deliver to an APIC, and the doorbell
//!   that gets its vCPU to look (pure, lock-free);
//! - `route`: ICR and MSI decoding, destination matching (pure);
//! - `timer`: the timer's arithmetic (pure);
//! - `apic`: the kernel side: the host timer, the halted vCPU's wait.

pub(crate) mod apic;
pub(crate) mod mailbox;
pub(crate) mod regs;
pub(crate) mod route;
pub(crate) mod timer;

pub(crate) use regs::{
    base, Action, ApicFeatures, ApicMode, Lapic, TimerCmd, STATE_SIZE, TSC_DEADLINE_MSR,
    X2APIC_MSR_FIRST, X2APIC_MSR_LAST,
};
