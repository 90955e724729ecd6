// SPDX-License-Identifier: GPL-2.0

//! What `KVM_CHECK_EXTENSION` reports.
//!
//! A capability is reported only once everything it promises works; every
//! other number answers 0, so a VMM never takes a path rkvm cannot serve.
//! Pure logic (only `core`), tested on the host.

use crate::{
    abi::{cap, dirty_log, vm_type, DIRTY_RING_MAX_BYTES, MAX_MCE_BANKS, MAX_VCPUS, MAX_VCPU_IDS},
    memslot::NR_MEMSLOTS,
};

/// Answer to `KVM_CHECK_EXTENSION(cap)` on a host with `online_cpus` CPUs,
/// identical on the system fd and on VM fds (rkvm has no per-VM capability
/// differences yet).
pub(crate) fn check_extension(capability: usize, online_cpus: usize) -> isize {
    match capability {
        cap::CHECK_EXTENSION_VM
        | cap::USER_MEMORY
        | cap::USER_MEMORY2
        | cap::SET_TSS_ADDR
        | cap::SET_IDENTITY_MAP_ADDR
        | cap::READONLY_MEM
        | cap::EXT_CPUID
        | cap::XSAVE
        | cap::XCRS
        | cap::IMMEDIATE_EXIT
        | cap::SYNC_MMU
        | cap::BINARY_STATS_FD
        | cap::MP_STATE
        | cap::GET_TSC_KHZ
        | cap::VCPU_EVENTS
        | cap::DEBUGREGS
        | cap::DESTROY_MEMORY_REGION_WORKS
        | cap::JOIN_MEMORY_REGIONS_WORKS
        | cap::INTERNAL_ERROR_DATA
        | cap::IRQCHIP
        | cap::SPLIT_IRQCHIP
        | cap::IRQ_INJECT_STATUS
        | cap::SIGNAL_MSI
        | cap::TSC_DEADLINE_TIMER
        | cap::IRQFD
        | cap::USER_NMI
        | cap::ENABLE_CAP_VM
        | cap::IOEVENTFD
        | cap::IOEVENTFD_NO_LENGTH
        | cap::IOEVENTFD_ANY_LENGTH
        | cap::GET_MSR_FEATURES
        | cap::SET_GUEST_DEBUG
        | cap::VAPIC
        | cap::X86_ROBUST_SINGLESTEP => 1,
        cap::SET_GUEST_DEBUG2 => crate::abi::guestdbg::VALID as isize,
        cap::MCE => MAX_MCE_BANKS as isize,
        // The flags rkvm implements (not KVM's EOI-broadcast ones).
        cap::X2APIC_API => crate::abi::x2apic_api::VALID as isize,
        // The components rkvm offers (up to AVX-512) fit in
        // `struct kvm_xsave`, KVM's smallest answer.
        cap::XSAVE2 => crate::abi::vcpu::XSAVE_SIZE as isize,
        // As KVM: how many routes a table may hold (QEMU sizes its GSI
        // allocator by it).
        cap::IRQ_ROUTING => crate::abi::MAX_IRQ_ROUTES as isize,
        cap::NR_MEMSLOTS => NR_MEMSLOTS as isize,
        cap::MANUAL_DIRTY_LOG_PROTECT2 => dirty_log::MANUAL_CAPS as isize,
        cap::DIRTY_LOG_RING | cap::DIRTY_LOG_RING_ACQ_REL => DIRTY_RING_MAX_BYTES as isize,
        // As KVM: more vCPUs than host CPUs work, but are not recommended.
        cap::NR_VCPUS => online_cpus.min(MAX_VCPUS) as isize,
        cap::MAX_VCPUS => MAX_VCPUS as isize,
        cap::MAX_VCPU_ID => MAX_VCPU_IDS as isize,
        cap::VM_TYPES => 1 << vm_type::X86_DEFAULT,
        cap::ADJUST_CLOCK => crate::pvclock::flags::VALID as isize,
        _ => 0,
    }
}
