// SPDX-License-Identifier: GPL-2.0

//! Kernel shims: the small safe wrappers over what the kernel crate does
//! not offer (yet), kept together and apart from the hypervisor logic.
//! Everything `unsafe` about talking to the C side of the kernel lives
//! here (and in the backends' world switches).

pub(crate) mod anon_fd;
pub(crate) mod cpu;
pub(crate) mod eventfd;
pub(crate) mod ffi;
pub(crate) mod guest_fpu;
pub(crate) mod mmu_notifier;
pub(crate) mod run_page;
pub(crate) mod rwlock;
pub(crate) mod srcu_box;
pub(crate) mod uarg;
pub(crate) mod wait;
pub(crate) mod x86;
