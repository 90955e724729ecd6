// SPDX-License-Identifier: GPL-2.0

//! What `KVM_CHECK_EXTENSION` reports.
//!
//! A capability is reported only once everything it promises works; every
//! other number answers 0, so a VMM never takes a path rkvm cannot serve.
//! Pure logic (only `core`), tested on the host.

use crate::{
    abi::{cap, vm_type},
    memslot::NR_MEMSLOTS,
};

/// Answer to `KVM_CHECK_EXTENSION(cap)`, identical on the system fd and on
/// VM fds (rkvm has no per-VM capability differences yet).
pub(crate) fn check_extension(capability: usize) -> isize {
    match capability {
        cap::CHECK_EXTENSION_VM | cap::USER_MEMORY | cap::USER_MEMORY2 => 1,
        cap::NR_MEMSLOTS => NR_MEMSLOTS as isize,
        cap::VM_TYPES => 1 << vm_type::X86_DEFAULT,
        _ => 0,
    }
}
