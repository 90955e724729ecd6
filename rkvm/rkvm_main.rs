// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor for x86-64, in Rust.
//!
//! `/dev/rkvm` speaks the KVM x86 ioctl ABI. See
//! `Documentation/virt/rkvm/` for the API, the locking rules and the tests.

use kernel::{
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

mod abi;
mod arch;
mod backend;
mod caps;
mod cpuid;
mod debugreg;
mod dev;
mod dirty_ring_pages;
mod emulate;
mod exit_info;
mod exits;
mod fpu;
mod guest_debug;
mod hw;
mod ioeventfd;
mod ioevents;
mod irqchip;
mod kvmclock;
mod lapic;
mod mce;
mod memslot;
mod mmu;
mod msr;
mod msr_ioctl;
mod mtrr;
mod pio;
mod pvclock;
mod regs;
mod shim;
// The shims by their own names, as the rest of the crate knows them.
use shim::{anon_fd, run_page, rwlock, srcu_box, uarg, x86};
mod sregs;
mod stats;
mod stats_file;
mod svm;
mod tsc;
mod vcpu;
mod vcpu_events;
mod vcpu_msrs;
mod vm;
mod vmx;
mod xsave;

module! {
    type: Rkvm,
    name: "rkvm",
    authors: ["rkvm developers"],
    description: "KVM-compatible hypervisor written in Rust",
    license: "GPL",
    params: {
        fast_page_fault: bool {
            default: true,
            description: "Fix write faults on write-protected pages (dirty logging) and access-tracked ones without mmu_lock (0: always the locked fault path, for comparison)",
        },
        eptad: bool {
            default: true,
            description: "Use EPT accessed/dirty flags where the CPU has them (0: page aging access-tracks EPT leaves instead, as kvm_intel's eptad=0)",
        },
    },
}

/// The loaded module.
///
/// Fields drop in declaration order: `/dev/rkvm` goes away before
/// virtualization is turned off. (No VM can be alive then: each VM fd holds
/// a module reference.)
#[pin_data(PinnedDrop)]
struct Rkvm {
    #[pin]
    dev: MiscDeviceRegistration<dev::RkvmDevice>,
    hw: hw::Hardware,
}

#[pinned_drop]
impl PinnedDrop for Rkvm {
    fn drop(self: Pin<&mut Self>) {
        // Page-table pages of destroyed VMs may still wait for an RCU grace
        // period; their callback is module code, so wait for all of them.
        mmu::tdp::rcu_barrier();
    }
}

impl kernel::InPlaceModule for Rkvm {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            hw: hw::Hardware::enable()?,
            dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rkvm" }),
        })
    }
}
