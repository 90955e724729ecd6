// SPDX-License-Identifier: GPL-2.0

//! Kernel shims: the small safe wrappers over what the kernel crate does
//! not offer (yet), kept together and apart from the hypervisor logic.
//! Everything `unsafe` about talking to the C side of the kernel lives
//! here (and in the backends' world switches).

pub(crate) mod cpu;
mod ffi;
pub(crate) mod guest_fpu;
