// SPDX-License-Identifier: GPL-2.0

//! The kernel side of the MSR and machine-check ioctls: the
//! `struct kvm_msrs` loop shared by the vCPU's `KVM_GET_MSRS`/
//! `KVM_SET_MSRS` and the system fd's `KVM_GET_MSRS`, the host facts the
//! feature MSRs come from, and a vCPU's `KVM_X86_SETUP_MCE` and
//! `KVM_X86_SET_MCE`. The rules are the pure `mce.rs` and `vcpu_msrs.rs`.
//!
//! # Locking
//!
//! The vCPU functions run under the vCPU mutex, like every vCPU ioctl.

use kernel::prelude::*;

use crate::{
    abi,
    arch::{cr4, vector},
    backend::Event,
    cpuid,
    exits::CpuCore,
    hw,
    mce::{McAction, McError},
    uarg,
    vcpu_msrs::{self, Guest, Host},
    x86,
};

/// Most entries one `KVM_GET_MSRS`/`KVM_SET_MSRS` takes (KVM's
/// `MAX_IO_MSRS`).
const MAX_IO_MSRS: usize = 256;
/// Size of `struct kvm_msr_entry`: index, reserved, data.
const MSR_ENTRY_SIZE: usize = 16;

/// Runs `access` on each entry of the `struct kvm_msrs` at user address
/// `arg`, stopping at the first it refuses, and returns how many it did,
/// as KVM. With `write_back`, each entry's data is copied back after
/// `access` (a read); `E2BIG` for 256 entries or more.
pub(crate) fn msr_io(
    arg: usize,
    write_back: bool,
    mut access: impl FnMut(u32, &mut u64) -> bool,
) -> Result<isize> {
    let n = u32::from_ne_bytes(abi::field(&uarg::read::<8>(arg)?, 0)) as usize;
    if n >= MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let mut done = 0;
    for i in 0..n {
        let addr = arg + 8 + i * MSR_ENTRY_SIZE;
        let e: [u8; MSR_ENTRY_SIZE] = uarg::read(addr)?;
        let index = u32::from_ne_bytes(abi::field(&e, 0));
        let mut data = u64::from_ne_bytes(abi::field(&e, 8));
        if !access(index, &mut data) {
            break;
        }
        if write_back {
            uarg::write(addr + 8, &data.to_ne_bytes())?;
        }
        done += 1;
    }
    Ok(done)
}

/// What the feature MSRs are computed from on this host.
pub(crate) fn host() -> Host {
    let svm = hw::backend() == hw::Backend::Svm;
    let arch_cap_cpuid = x86::cpuid(0, 0).eax >= 7 && x86::cpuid(7, 0).edx & cpuid::LEAF7_EDX_ARCH_CAPABILITIES != 0;
    Host {
        svm,
        ucode_rev: x86::rdmsr(vcpu_msrs::UCODE_REV).unwrap_or(0),
        arch_capabilities: if arch_cap_cpuid {
            x86::rdmsr(vcpu_msrs::ARCH_CAPABILITIES).unwrap_or(0)
        } else {
            0
        },
        de_cfg: if svm {
            x86::rdmsr(vcpu_msrs::AMD64_DE_CFG).unwrap_or(0)
        } else {
            0
        },
    }
}

/// `KVM_GET_MSR_FEATURE_INDEX_LIST`: as `KVM_GET_MSR_INDEX_LIST`, `E2BIG`
/// and the count needed if the array is too small.
pub(crate) fn get_feature_index_list(arg: usize) -> Result {
    let list = vcpu_msrs::feature_list(host().svm);
    let n = u32::from_ne_bytes(uarg::read::<4>(arg)?) as usize;
    uarg::write(arg, &(list.len() as u32).to_ne_bytes())?;
    if n < list.len() {
        return Err(E2BIG);
    }
    for (i, m) in list.iter().enumerate() {
        uarg::write(arg + 4 + 4 * i, &m.to_ne_bytes())?;
    }
    Ok(())
}

/// `KVM_GET_MSRS` on the system fd: the feature MSRs' values.
pub(crate) fn get_feature_msrs(arg: usize) -> Result<isize> {
    let host = host();
    msr_io(arg, true, |index, data| match vcpu_msrs::feature_value(index, &host) {
        Some(v) => {
            *data = v;
            true
        }
        None => false,
    })
}

/// CPUID vendor strings (leaf 0 EBX) of the AMD-compatible vendors.
const VENDOR_AMD_EBX: u32 = u32::from_le_bytes(*b"Auth");
const VENDOR_HYGON_EBX: u32 = u32::from_le_bytes(*b"Hygo");

impl CpuCore {
    /// What the guest's CPUID says about the MSRs of `vcpu_msrs.rs`.
    pub(crate) fn msr_guest(&self) -> Guest {
        let vendor = cpuid::lookup(&self.cpuid, 0, 0)[1];
        Guest {
            amd: vendor == VENDOR_AMD_EBX || vendor == VENDOR_HYGON_EBX,
            // rkvm emulates ARCH_CAPABILITIES on every host, as KVM.
            arch_capabilities: cpuid::lookup(&self.cpuid, 7, 0)[3]
                & cpuid::LEAF7_EDX_ARCH_CAPABILITIES
                != 0,
            reserved_gpa: self.features.reserved_gpa_bits(),
        }
    }

    /// `KVM_X86_SETUP_MCE`.
    pub(crate) fn setup_mce(&mut self, mcg_cap: u64) -> Result {
        // AMD reserves MCG_CAP bits 63:9 (KVM's `svm_setup_mce`).
        let mask = if hw::backend() == hw::Backend::Svm { 0x1ff } else { !0 };
        self.msrs.mce.setup(mcg_cap, mask).map_err(|()| EINVAL)
    }

    /// `KVM_X86_SET_MCE`: records the error, then delivers #MC or shuts
    /// the guest down (at the next `KVM_RUN`) as the rules say.
    pub(crate) fn set_mce(&mut self, e: &McError) -> Result {
        let cr4_mce = self.backend.cr4() & cr4::MCE != 0;
        match self.msrs.mce.inject(e, cr4_mce).map_err(|()| EINVAL)? {
            McAction::None => {}
            McAction::Shutdown => self.triple_fault = true,
            McAction::Exception => {
                // The #MC takes the event slot; an interrupt or NMI that
                // was on its way in waits to be delivered after it, as
                // KVM keeps them apart from exceptions.
                match self.backend.pending_event() {
                    Some(Event::Interrupt { vector }) if self.queued_irq.is_none() => {
                        self.queued_irq = Some(vector)
                    }
                    Some(Event::Nmi) => {
                        self.backend.set_nmi_masked(false);
                        self.queue_nmi();
                    }
                    _ => {}
                }
                self.backend.inject_exception(vector::MC, None);
            }
        }
        Ok(())
    }
}
