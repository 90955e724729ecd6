// SPDX-License-Identifier: GPL-2.0

//! Host build of rkvm's pure-logic files.
//!
//! Each module below is a file of the kernel module, included by path at
//! the same place in the module tree, so the code tested here is byte for
//! byte the code in rkvm.ko. The files'
//! items are `pub(crate)` for the module's sake; here only the tests use
//! them.

#![no_std]
#![allow(dead_code)]

#[cfg(test)]
extern crate std;

#[path = "../../../../rkvm/abi.rs"]
mod abi;
#[path = "../../../../rkvm/arch.rs"]
mod arch;
#[path = "../../../../rkvm/caps.rs"]
mod caps;
#[path = "../../../../rkvm/cpuid.rs"]
mod cpuid;
#[path = "../../../../rkvm/debugreg.rs"]
mod debugreg;
// Its re-exports are for the kernel's exit handler; here only tests use them.
#[allow(unused_imports)]
#[path = "../../../../rkvm/emulate/mod.rs"]
mod emulate;
#[path = "../../../../rkvm/exit_info.rs"]
mod exit_info;
#[path = "../../../../rkvm/fpu.rs"]
mod fpu;
#[path = "../../../../rkvm/guest_debug.rs"]
mod guest_debug;
/// The kernel's `lapic` module, as far as it is pure.
#[path = "../../../../rkvm/lapic"]
mod lapic {
    #[path = "mailbox.rs"]
    pub(crate) mod mailbox;
    #[path = "regs.rs"]
    pub(crate) mod regs;
    #[path = "route.rs"]
    pub(crate) mod route;
    #[path = "timer.rs"]
    pub(crate) mod timer;
}
#[path = "../../../../rkvm/mce.rs"]
mod mce;
#[path = "../../../../rkvm/ioeventfd.rs"]
mod ioeventfd;
#[path = "../../../../rkvm/memslot.rs"]
mod memslot;
#[path = "../../../../rkvm/msr.rs"]
mod msr;
#[path = "../../../../rkvm/mtrr.rs"]
mod mtrr;
/// The kernel's `mmu` module, as far as it is pure.
#[path = "../../../../rkvm/mmu"]
mod mmu {
    #[path = "atomic.rs"]
    pub(crate) mod atomic;
    #[path = "dirty.rs"]
    pub(crate) mod dirty;
    #[path = "dirty_ring.rs"]
    pub(crate) mod dirty_ring;
    #[path = "guest_walk.rs"]
    pub(crate) mod guest_walk;
    #[path = "invalidate.rs"]
    pub(crate) mod invalidate;
    #[path = "spte.rs"]
    pub(crate) mod spte;
    #[path = "tdp_iter.rs"]
    pub(crate) mod tdp_iter;
    #[path = "tdp_mmu.rs"]
    pub(crate) mod tdp_mmu;
    #[path = "tlb.rs"]
    pub(crate) mod tlb;
    #[path = "types.rs"]
    pub(crate) mod types;
}
#[path = "../../../../rkvm/pio.rs"]
mod pio;
#[path = "../../../../rkvm/pvclock.rs"]
mod pvclock;
#[path = "../../../../rkvm/regs.rs"]
mod regs;
#[path = "../../../../rkvm/sregs.rs"]
mod sregs;
#[path = "../../../../rkvm/stats.rs"]
mod stats;
#[path = "../../../../rkvm/tsc.rs"]
mod tsc;
#[path = "../../../../rkvm/vcpu_events.rs"]
mod vcpu_events;
#[path = "../../../../rkvm/vcpu_msrs.rs"]
mod vcpu_msrs;
/// The kernel's `svm` module, as far as it is pure.
#[path = "../../../../rkvm/svm"]
mod svm {
    #[path = "asid.rs"]
    pub(crate) mod asid;
    #[path = "features.rs"]
    pub(crate) mod features;
    #[path = "nmi.rs"]
    pub(crate) mod nmi;
    #[path = "seg.rs"]
    pub(crate) mod seg;
    #[path = "vmcb.rs"]
    pub(crate) mod vmcb;
}
/// The kernel's `vmx` module, as far as it is pure.
#[path = "../../../../rkvm/vmx"]
mod vmx {
    #[path = "controls.rs"]
    pub(crate) mod controls;
    #[path = "exit.rs"]
    pub(crate) mod exit;
    #[path = "features.rs"]
    pub(crate) mod features;
    #[path = "seg.rs"]
    pub(crate) mod seg;
    #[path = "vmcs.rs"]
    pub(crate) mod vmcs;
    #[path = "vpid.rs"]
    pub(crate) mod vpid;
}
#[path = "../../../../rkvm/xsave.rs"]
mod xsave;

/// The numbers rkvm uses must be KVM's: checked against the rust-vmm
/// `kvm-bindings` crate (generated from `linux/kvm.h`) and the ioctl values
/// stock KVM is known to use.
#[cfg(test)]
mod abi_matches_kvm {
    use super::{abi, caps, stats};
    use kvm_bindings as kb;

    #[test]
    fn system_ioctl_numbers() {
        assert_eq!(abi::system::GET_API_VERSION, 0xae00);
        assert_eq!(abi::system::CREATE_VM, 0xae01);
        assert_eq!(abi::system::CHECK_EXTENSION, 0xae03);
        assert_eq!(abi::system::GET_VCPU_MMAP_SIZE, 0xae04);
        assert_eq!(abi::vm::SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(abi::vm::SET_USER_MEMORY_REGION2, 0x40a0_ae49);
        assert_eq!(abi::vm::CREATE_VCPU, 0xae41);
        assert_eq!(abi::vcpu::GET_REGS, 0x8090_ae81);
        assert_eq!(abi::vcpu::SET_REGS, 0x4090_ae82);
        assert_eq!(abi::vcpu::GET_SREGS, 0x8138_ae83);
        assert_eq!(abi::vcpu::SET_SREGS, 0x4138_ae84);
        assert_eq!(abi::vcpu::GET_FPU, 0x81a0_ae8c);
        assert_eq!(abi::vcpu::SET_FPU, 0x41a0_ae8d);
        assert_eq!(abi::vm::SET_TSS_ADDR, 0xae47);
        assert_eq!(abi::vm::SET_IDENTITY_MAP_ADDR, 0x4008_ae48);
        assert_eq!(abi::KVMIO, kb::KVMIO);
        assert_eq!(abi::API_VERSION, kb::KVM_API_VERSION as isize);
    }

    #[test]
    fn memory_region_structs() {
        use core::mem::size_of;
        assert_eq!(size_of::<kb::kvm_userspace_memory_region>(), super::memslot::REGION_V1_SIZE);
        assert_eq!(size_of::<kb::kvm_userspace_memory_region2>(), super::memslot::REGION_V2_SIZE);
        assert_eq!(kb::KVM_MEM_LOG_DIRTY_PAGES, super::memslot::MEM_LOG_DIRTY_PAGES);
        assert_eq!(kb::KVM_MEM_READONLY, super::memslot::MEM_READONLY);
        assert_eq!(kb::KVM_MEM_GUEST_MEMFD, super::memslot::MEM_GUEST_MEMFD);
    }

    #[test]
    fn register_structs() {
        use core::mem::size_of;
        assert_eq!(size_of::<kb::kvm_regs>(), super::regs::REGS_SIZE);
        assert_eq!(size_of::<kb::kvm_sregs>(), super::sregs::SREGS_SIZE);
        assert_eq!(size_of::<kb::kvm_fpu>(), super::fpu::FPU_SIZE);
    }

    #[test]
    fn capability_numbers() {
        assert_eq!(abi::cap::CHECK_EXTENSION_VM, kb::KVM_CAP_CHECK_EXTENSION_VM as usize);
        assert_eq!(abi::cap::VM_TYPES, kb::KVM_CAP_VM_TYPES as usize);
        assert_eq!(abi::cap::USER_MEMORY, kb::KVM_CAP_USER_MEMORY as usize);
        assert_eq!(abi::cap::USER_MEMORY2, kb::KVM_CAP_USER_MEMORY2 as usize);
        assert_eq!(abi::cap::NR_MEMSLOTS, kb::KVM_CAP_NR_MEMSLOTS as usize);
        assert_eq!(abi::cap::NR_VCPUS, kb::KVM_CAP_NR_VCPUS as usize);
        assert_eq!(abi::cap::MAX_VCPUS, kb::KVM_CAP_MAX_VCPUS as usize);
        assert_eq!(abi::cap::MAX_VCPU_ID, kb::KVM_CAP_MAX_VCPU_ID as usize);
        assert_eq!(abi::cap::SET_TSS_ADDR, kb::KVM_CAP_SET_TSS_ADDR as usize);
        assert_eq!(abi::cap::SET_IDENTITY_MAP_ADDR, kb::KVM_CAP_SET_IDENTITY_MAP_ADDR as usize);
        assert_eq!(abi::vm_type::X86_DEFAULT, kb::KVM_X86_DEFAULT_VM as usize);
        assert_eq!(abi::cap::READONLY_MEM, kb::KVM_CAP_READONLY_MEM as usize);
        assert_eq!(abi::cap::EXT_CPUID, kb::KVM_CAP_EXT_CPUID as usize);
        assert_eq!(abi::cap::IMMEDIATE_EXIT, kb::KVM_CAP_IMMEDIATE_EXIT as usize);
        assert_eq!(abi::cap::XSAVE, kb::KVM_CAP_XSAVE as usize);
        assert_eq!(abi::cap::XCRS, kb::KVM_CAP_XCRS as usize);
        assert_eq!(abi::cap::SYNC_MMU, kb::KVM_CAP_SYNC_MMU as usize);
        assert_eq!(abi::cap::BINARY_STATS_FD, kb::KVM_CAP_BINARY_STATS_FD as usize);
        assert_eq!(abi::cap::MP_STATE, kb::KVM_CAP_MP_STATE as usize);
        assert_eq!(abi::cap::GET_TSC_KHZ, kb::KVM_CAP_GET_TSC_KHZ as usize);
        assert_eq!(abi::vcpu::SET_TSC_KHZ, 0xaea2);
        assert_eq!(abi::vcpu::GET_TSC_KHZ, 0xaea3);
        assert_eq!(abi::mp_state::RUNNABLE, kb::KVM_MP_STATE_RUNNABLE);
        assert_eq!(abi::vcpu::GET_MP_STATE, 0x8004_ae98);
        assert_eq!(abi::vcpu::SET_MP_STATE, 0x4004_ae99);
        assert_eq!(abi::vcpu::INTERRUPT, 0x4004_ae86);
        assert_eq!(abi::vcpu::NMI, 0xae9a);
        assert_eq!(crate::guest_debug::SIZE, core::mem::size_of::<kb::kvm_guest_debug>());
        assert_eq!(abi::vcpu::SET_GUEST_DEBUG, 0x4048_ae9b);
        assert_eq!(abi::vcpu::SET_VAPIC_ADDR, 0x4008_ae93);
        assert_eq!(abi::cap::VAPIC, kb::KVM_CAP_VAPIC as usize);
        assert_eq!(abi::cap::SET_GUEST_DEBUG, kb::KVM_CAP_SET_GUEST_DEBUG as usize);
        assert_eq!(abi::cap::X86_ROBUST_SINGLESTEP, kb::KVM_CAP_X86_ROBUST_SINGLESTEP as usize);
        assert_eq!(abi::cap::SET_GUEST_DEBUG2, kb::KVM_CAP_SET_GUEST_DEBUG2 as usize);
        assert_eq!(abi::run::exit::DEBUG, kb::KVM_EXIT_DEBUG);
        assert_eq!(crate::guest_debug::control::VALID, kb::KVM_GUESTDBG_ENABLE
            | kb::KVM_GUESTDBG_SINGLESTEP | kb::KVM_GUESTDBG_USE_SW_BP | kb::KVM_GUESTDBG_USE_HW_BP
            | kb::KVM_GUESTDBG_INJECT_DB | kb::KVM_GUESTDBG_INJECT_BP | kb::KVM_GUESTDBG_BLOCKIRQ);
        assert_eq!(abi::cap::VCPU_EVENTS, kb::KVM_CAP_VCPU_EVENTS as usize);
        assert_eq!(abi::cap::DEBUGREGS, kb::KVM_CAP_DEBUGREGS as usize);
        assert_eq!(abi::cap::DESTROY_MEMORY_REGION_WORKS, kb::KVM_CAP_DESTROY_MEMORY_REGION_WORKS as usize);
        assert_eq!(abi::cap::JOIN_MEMORY_REGIONS_WORKS, kb::KVM_CAP_JOIN_MEMORY_REGIONS_WORKS as usize);
        assert_eq!(abi::cap::INTERNAL_ERROR_DATA, kb::KVM_CAP_INTERNAL_ERROR_DATA as usize);
        assert_eq!(crate::debugreg::DEBUGREGS_SIZE, core::mem::size_of::<kb::kvm_debugregs>());
        assert_eq!(abi::vcpu::GET_DEBUGREGS, 0x8080_aea1);
        assert_eq!(abi::vcpu::SET_DEBUGREGS, 0x4080_aea2);
        assert_eq!(crate::vcpu_events::SIZE, core::mem::size_of::<kb::kvm_vcpu_events>());
        assert_eq!(abi::vcpu::GET_VCPU_EVENTS, 0x8040_ae9f);
        assert_eq!(abi::vcpu::SET_VCPU_EVENTS, 0x4040_aea0);
        assert_eq!(crate::vcpu_events::valid::REPORTED, kb::KVM_VCPUEVENT_VALID_NMI_PENDING
            | kb::KVM_VCPUEVENT_VALID_SHADOW | kb::KVM_VCPUEVENT_VALID_SMM);
        assert_eq!(crate::vcpu_events::shadow::STI as u32, kb::KVM_X86_SHADOW_INT_STI);
        assert_eq!(crate::vcpu_events::shadow::MOV_SS as u32, kb::KVM_X86_SHADOW_INT_MOV_SS);
        assert_eq!(abi::run::exit::IRQ_WINDOW_OPEN, kb::KVM_EXIT_IRQ_WINDOW_OPEN);
        assert_eq!(abi::GET_STATS_FD, 0xaece);
        assert_eq!(abi::vm::GET_DIRTY_LOG, 0x4010_ae42);
        assert_eq!(abi::vm::CLEAR_DIRTY_LOG, 0xc018_aec0);
        assert_eq!(abi::vm::ENABLE_CAP, 0x4068_aea3);
        assert_eq!(abi::vm::CLEAR_DIRTY_LOG_SIZE, core::mem::size_of::<kb::kvm_clear_dirty_log>());
        assert_eq!(abi::vm::ENABLE_CAP_SIZE, core::mem::size_of::<kb::kvm_enable_cap>());
        assert_eq!(abi::cap::MANUAL_DIRTY_LOG_PROTECT2, kb::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 as usize);
        assert_eq!(abi::dirty_log::MANUAL_CAPS, 3);
        assert_eq!(abi::cap::DIRTY_LOG_RING, kb::KVM_CAP_DIRTY_LOG_RING as usize);
        assert_eq!(abi::cap::DIRTY_LOG_RING_ACQ_REL, kb::KVM_CAP_DIRTY_LOG_RING_ACQ_REL as usize);
        assert_eq!(abi::vm::RESET_DIRTY_RINGS, 0xaec7);
        assert_eq!(abi::run::exit::DIRTY_RING_FULL, kb::KVM_EXIT_DIRTY_RING_FULL);
        assert_eq!(abi::DIRTY_RING_PAGE_OFFSET, kb::KVM_DIRTY_LOG_PAGE_OFFSET as usize);
        // KVM_DIRTY_GFN_F_* are BIT() macros, not in the bindings.
        assert_eq!(crate::mmu::dirty_ring::F_DIRTY, 1 << 0);
        assert_eq!(crate::mmu::dirty_ring::F_RESET, 1 << 1);
        let entry = core::mem::size_of::<crate::mmu::dirty_ring::RingEntry>();
        assert_eq!(entry, core::mem::size_of::<kb::kvm_dirty_gfn>());
        assert_eq!(crate::mmu::dirty_ring::ENTRY_SIZE as usize, entry);
        assert_eq!(crate::mmu::dirty_ring::MAX_BYTES, abi::DIRTY_RING_MAX_BYTES);
        assert_eq!(stats::HEADER_SIZE, core::mem::size_of::<kb::kvm_stats_header>());
        // The uapi descriptor ends in a flexible array: the name follows.
        assert_eq!(stats::DESC_SIZE, core::mem::size_of::<kb::kvm_stats_desc>() + stats::NAME_SIZE);
        // KVM_STATS_NAME_SIZE is kernel-only; 48 in linux/kvm_host.h.
        assert_eq!(stats::NAME_SIZE, 48);
        assert_eq!(stats::Kind::Instant as u32, kb::KVM_STATS_TYPE_INSTANT);
        assert_eq!(abi::vcpu::XSAVE_SIZE, core::mem::size_of::<kb::kvm_xsave>());
        assert_eq!(abi::vcpu::XCRS_SIZE, core::mem::size_of::<kb::kvm_xcrs>());
        assert_eq!(abi::vcpu::GET_XSAVE, 0x9000_aea4);
        assert_eq!(abi::vcpu::SET_XSAVE, 0x5000_aea5);
        assert_eq!(abi::vcpu::GET_XCRS, 0x8188_aea6);
        assert_eq!(abi::vcpu::SET_XCRS, 0x4188_aea7);
        // The in-kernel APIC's (kvm-ioctls' numbers).
        assert_eq!(abi::vcpu::GET_LAPIC, 0x8400_ae8e);
        assert_eq!(abi::vcpu::SET_LAPIC, 0x4400_ae8f);
        assert_eq!(abi::vm::IRQ_LINE, 0x4008_ae61);
        assert_eq!(abi::vm::IRQ_LINE_STATUS, 0xc008_ae67);
        assert_eq!(abi::vm::SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(abi::vm::SIGNAL_MSI, 0x4020_aea5);
        assert_eq!(abi::vm::IRQFD, 0x4020_ae76);
        assert_eq!(crate::lapic::route::routing::MAX_ROUTES, abi::MAX_IRQ_ROUTES);
        assert_eq!(abi::vcpu::GET_XSAVE2, 0x9000_aecf);
        assert_eq!(abi::vm::IOEVENTFD, 0x4040_ae79);
        assert_eq!(crate::ioeventfd::IOEVENTFD_SIZE, core::mem::size_of::<kb::kvm_ioeventfd>());
        assert_eq!(abi::vcpu::LAPIC_STATE_SIZE, core::mem::size_of::<kb::kvm_lapic_state>());
        assert_eq!(abi::vm::MSI_SIZE, core::mem::size_of::<kb::kvm_msi>());
        assert_eq!(abi::cap::MCE, kb::KVM_CAP_MCE as usize);
        assert_eq!(abi::cap::GET_MSR_FEATURES, kb::KVM_CAP_GET_MSR_FEATURES as usize);
        assert_eq!(abi::system::GET_MSR_FEATURE_INDEX_LIST, 0xc004_ae0a);
        assert_eq!(abi::system::GET_MSRS, 0xc008_ae88);
        assert_eq!(abi::system::X86_GET_MCE_CAP_SUPPORTED, 0x8008_ae9d);
        assert_eq!(abi::vcpu::X86_SETUP_MCE, 0x4008_ae9c);
        assert_eq!(abi::vcpu::X86_SET_MCE, 0x4040_ae9e);
        assert_eq!(crate::mce::X86_MCE_SIZE, core::mem::size_of::<kb::kvm_x86_mce>());
        assert_eq!(abi::cap::ADJUST_CLOCK, kb::KVM_CAP_ADJUST_CLOCK as usize);
        assert_eq!(abi::vm::SET_CLOCK, 0x4030_ae7b);
        assert_eq!(abi::vm::GET_CLOCK, 0x8030_ae7c);
        assert_eq!(crate::pvclock::CLOCK_DATA_SIZE, core::mem::size_of::<kb::kvm_clock_data>());
        assert_eq!(crate::pvclock::flags::TSC_STABLE, kb::KVM_CLOCK_TSC_STABLE);
        assert_eq!(crate::pvclock::flags::REALTIME, kb::KVM_CLOCK_REALTIME);
        assert_eq!(crate::pvclock::flags::HOST_TSC, kb::KVM_CLOCK_HOST_TSC);
    }

    #[test]
    fn only_implemented_capabilities_are_reported() {
        for cap in 0..4096usize {
            let v = caps::check_extension(cap, 2);
            match cap {
                c if c == kb::KVM_CAP_CHECK_EXTENSION_VM as usize
                    || c == kb::KVM_CAP_SET_TSS_ADDR as usize
                    || c == kb::KVM_CAP_SET_IDENTITY_MAP_ADDR as usize
                    || c == kb::KVM_CAP_USER_MEMORY as usize
                    || c == kb::KVM_CAP_USER_MEMORY2 as usize
                    || c == kb::KVM_CAP_READONLY_MEM as usize
                    || c == kb::KVM_CAP_EXT_CPUID as usize
                    || c == kb::KVM_CAP_IMMEDIATE_EXIT as usize
                    || c == kb::KVM_CAP_XSAVE as usize
                    || c == kb::KVM_CAP_XCRS as usize
                    || c == kb::KVM_CAP_SYNC_MMU as usize
                    || c == kb::KVM_CAP_BINARY_STATS_FD as usize
                    || c == kb::KVM_CAP_MP_STATE as usize
                    || c == kb::KVM_CAP_GET_TSC_KHZ as usize
                    || c == kb::KVM_CAP_VCPU_EVENTS as usize
                    || c == kb::KVM_CAP_DEBUGREGS as usize
                    || c == kb::KVM_CAP_DESTROY_MEMORY_REGION_WORKS as usize
                    || c == kb::KVM_CAP_JOIN_MEMORY_REGIONS_WORKS as usize
                    || c == kb::KVM_CAP_INTERNAL_ERROR_DATA as usize
                    || c == kb::KVM_CAP_IRQCHIP as usize
                    || c == kb::KVM_CAP_SPLIT_IRQCHIP as usize
                    || c == kb::KVM_CAP_IRQ_INJECT_STATUS as usize
                    || c == kb::KVM_CAP_SIGNAL_MSI as usize
                    || c == kb::KVM_CAP_TSC_DEADLINE_TIMER as usize
                    || c == kb::KVM_CAP_IRQFD as usize
                    || c == kb::KVM_CAP_USER_NMI as usize
                    || c == kb::KVM_CAP_ENABLE_CAP_VM as usize
                    || c == kb::KVM_CAP_IOEVENTFD as usize
                    || c == kb::KVM_CAP_IOEVENTFD_NO_LENGTH as usize
                    || c == kb::KVM_CAP_IOEVENTFD_ANY_LENGTH as usize
                    || c == kb::KVM_CAP_GET_MSR_FEATURES as usize
                    || c == kb::KVM_CAP_SET_GUEST_DEBUG as usize
                    || c == kb::KVM_CAP_VAPIC as usize
                    || c == kb::KVM_CAP_X86_ROBUST_SINGLESTEP as usize =>
                {
                    assert_eq!(v, 1)
                }
                // KVM_GUESTDBG_VALID_MASK.
                c if c == kb::KVM_CAP_SET_GUEST_DEBUG2 as usize => assert_eq!(v, 0x1f0003),
                c if c == kb::KVM_CAP_NR_MEMSLOTS as usize => assert_eq!(v, 509),
                // KVM_MAX_IRQ_ROUTES.
                c if c == kb::KVM_CAP_IRQ_ROUTING as usize => assert_eq!(v, 4096),
                c if c == kb::KVM_CAP_XSAVE2 as usize => {
                    assert_eq!(v, core::mem::size_of::<kb::kvm_xsave>() as isize)
                }
                c if c == kb::KVM_CAP_MCE as usize => assert_eq!(v, 32),
                // USE_32BIT_IDS and DISABLE_BROADCAST_QUIRK, not the
                // EOI-broadcast flags.
                c if c == kb::KVM_CAP_X2APIC_API as usize => assert_eq!(
                    v,
                    (kb::KVM_X2APIC_API_USE_32BIT_IDS | kb::KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK) as isize
                ),
                c if c == kb::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 as usize => assert_eq!(v, 3),
                c if c == kb::KVM_CAP_DIRTY_LOG_RING as usize
                    || c == kb::KVM_CAP_DIRTY_LOG_RING_ACQ_REL as usize =>
                {
                    // KVM_DIRTY_RING_MAX_ENTRIES of struct kvm_dirty_gfn.
                    assert_eq!(v, 65536 * core::mem::size_of::<kb::kvm_dirty_gfn>() as isize)
                }
                c if c == kb::KVM_CAP_NR_VCPUS as usize => assert_eq!(v, 2),
                c if c == kb::KVM_CAP_MAX_VCPUS as usize || c == kb::KVM_CAP_MAX_VCPU_ID as usize => {
                    assert_eq!(v, 64)
                }
                c if c == kb::KVM_CAP_VM_TYPES as usize => assert_eq!(v, 1 << kb::KVM_X86_DEFAULT_VM),
                c if c == kb::KVM_CAP_ADJUST_CLOCK as usize => {
                    let all = kb::KVM_CLOCK_TSC_STABLE | kb::KVM_CLOCK_REALTIME | kb::KVM_CLOCK_HOST_TSC;
                    assert_eq!(v, all as isize)
                }
                _ => assert_eq!(v, 0, "cap {cap}"),
            }
        }
        assert_eq!(caps::check_extension(usize::MAX, 2), 0);
        // NR_VCPUS recommends no more vCPUs than host CPUs, within the maximum.
        assert_eq!(caps::check_extension(kb::KVM_CAP_NR_VCPUS as usize, 1000), 64);
    }
}
