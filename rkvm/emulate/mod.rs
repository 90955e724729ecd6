// SPDX-License-Identifier: GPL-2.0

//! The small x86 instruction emulator that MMIO needs.
//!
//! A guest access to guest-physical memory that no memslot backs ends in a
//! nested page fault that carries the guest-physical address but, on the
//! hardware rkvm is tested on (SVM under QEMU TCG: no decode assists, no
//! next-RIP save), nothing about the instruction. rkvm fetches up to
//! [`MAX_INSN_LEN`] bytes at the guest's RIP and hands them to [`decode`],
//! which tells it the instruction's length, the width of the memory access
//! and its direction. The access then goes to userspace as `KVM_EXIT_MMIO`
//! (one exit per access, at most 8 bytes), like KVM does:
//!
//! 1. [`MmioInsn::first_access`]: a store gives the value to write; every
//!    other instruction starts with a read.
//! 2. When the read data comes back, [`MmioInsn::complete_read`] updates
//!    the registers and the arithmetic flags and, for read-modify-write
//!    forms (`ADD [mem], reg`, `XCHG`, `INC [mem]`...), returns the value
//!    to write back as a second exit.
//! 3. RIP advances by [`MmioInsn::len`].
//!
//! Only the instructions compilers and drivers use on device memory are
//! supported (see [`decode`]); anything else is
//! [`DecodeError::Unsupported`] and becomes an emulation failure, as KVM
//! reports one for what its emulator does not know.
//!
//! Pure logic (only `core`), tested on the host, including against the
//! host CPU's own flags.

mod decode;
mod exec;
#[cfg(test)]
mod tests;

pub(crate) use decode::{
    decode, decode_mov_dr, decode_mov_to_cr, decode_prefixes, MmioInsn, Seg, MAX_INSN_LEN,
};
#[cfg(test)]
pub(crate) use decode::DecodeError;
pub(crate) use exec::Access;

use crate::arch::{cr0, efer, rflags};

const CR0_PE: u64 = cr0::PE;
const EFER_LMA: u64 = efer::LMA;
const RFLAGS_VM: u64 = rflags::VM;

/// Execution mode, which sets the default operand and address sizes
/// (SDM Vol. 1 3.6, Table 3-4; APM Vol. 3 1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Real mode and virtual-8086 mode: 16-bit operands and addresses.
    Real,
    /// Protected or compatibility mode with a 16-bit code segment
    /// (`CS.D` = 0).
    Prot16,
    /// Protected or compatibility mode with a 32-bit code segment
    /// (`CS.D` = 1).
    Prot32,
    /// 64-bit mode (`EFER.LMA` = 1 and `CS.L` = 1): 32-bit operands, 64-bit
    /// addresses, REX prefixes.
    Long64,
}

impl Mode {
    /// The mode a vCPU decodes in, from `CR0.PE`, `EFER.LMA`, `CS.L`,
    /// `CS.D/B` and `RFLAGS.VM`.
    ///
    /// Virtual-8086 mode is reported as [`Mode::Real`]: it decodes with
    /// 16-bit defaults and forms addresses as real mode does. `CS.L` only
    /// counts when long mode is active; in compatibility mode `CS.D` picks
    /// the size as in legacy protected mode. `CS.L` = 1 with `CS.D` = 1 is
    /// reserved (a #GP on the far transfer that loads it), so it cannot be
    /// the current state; it decodes as 64-bit here.
    pub(crate) fn from_state(cr0: u64, efer: u64, cs_l: bool, cs_db: bool, rflags: u64) -> Self {
        if cr0 & CR0_PE == 0 {
            Mode::Real
        } else if efer & EFER_LMA != 0 && cs_l {
            Mode::Long64
        } else if rflags & RFLAGS_VM != 0 {
            Mode::Real
        } else if cs_db {
            Mode::Prot32
        } else {
            Mode::Prot16
        }
    }
}

/// Guest general-purpose registers in x86 encoding order:
/// 0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8..=15 R8..R15.
pub(crate) type Gprs = [u64; 16];
