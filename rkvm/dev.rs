// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm`: the system fd.

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
};

use crate::{abi, anon_fd, caps, cpuid, mce, msr, msr_ioctl, uarg, vm::Vm, x86};

/// `KVM_GET_SUPPORTED_CPUID`: `E2BIG` if the array is too small, as KVM.
fn get_supported_cpuid(arg: usize) -> Result {
    let n = u32::from_ne_bytes(abi::field(&uarg::read::<8>(arg)?, 0)) as usize;
    let supported = cpuid::supported(
        |leaf, sub| {
            let r = x86::cpuid(leaf, sub);
            [r.eax, r.ebx, r.ecx, r.edx]
        },
        crate::shim::cpu::host_xcr0(),
        crate::hw::guest_rdtscp(),
    );
    let table = supported.entries();
    if n < table.len() {
        return Err(E2BIG);
    }
    uarg::write(arg, &(table.len() as u32).to_ne_bytes())?;
    for (i, e) in table.iter().enumerate() {
        uarg::write(
            arg + cpuid::HEADER_SIZE + i * cpuid::ENTRY_SIZE,
            &e.to_bytes(),
        )?;
    }
    Ok(())
}

/// `KVM_GET_MSR_INDEX_LIST`: the MSRs `KVM_GET_MSRS`/`KVM_SET_MSRS` take.
/// With too small a count, `E2BIG` and the count needed, as KVM.
fn get_msr_index_list(arg: usize) -> Result {
    let n = u32::from_ne_bytes(uarg::read::<4>(arg)?) as usize;
    let have = msr::INDEX_LIST.len();
    uarg::write(arg, &(have as u32).to_ne_bytes())?;
    if n < have {
        return Err(E2BIG);
    }
    for (i, m) in msr::INDEX_LIST.iter().enumerate() {
        uarg::write(arg + 4 + 4 * i, &m.to_ne_bytes())?;
    }
    Ok(())
}

/// An open `/dev/rkvm`. It carries no state: every VM gets its own fd.
pub(crate) struct RkvmDevice;

#[vtable]
impl MiscDevice for RkvmDevice {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(RkvmDevice, GFP_KERNEL)?)
    }

    fn ioctl(_me: &RkvmDevice, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::system::GET_API_VERSION if arg == 0 => Ok(abi::API_VERSION),
            abi::system::CREATE_VM => {
                let vm = Vm::create(arg)?;
                Ok(anon_fd::install(vm)? as isize)
            }
            abi::system::CHECK_EXTENSION => Ok(caps::check_extension(
                arg,
                x86::online_cpus(),
            )),
            abi::system::GET_VCPU_MMAP_SIZE if arg == 0 => {
                Ok((abi::VCPU_MMAP_PAGES * kernel::page::PAGE_SIZE) as isize)
            }
            abi::system::GET_MSR_INDEX_LIST => get_msr_index_list(arg).map(|()| 0),
            abi::system::GET_SUPPORTED_CPUID => get_supported_cpuid(arg).map(|()| 0),
            abi::system::GET_MSR_FEATURE_INDEX_LIST => {
                msr_ioctl::get_feature_index_list(arg).map(|()| 0)
            }
            abi::system::GET_MSRS => msr_ioctl::get_feature_msrs(arg),
            abi::system::X86_GET_MCE_CAP_SUPPORTED => {
                uarg::write(arg, &mce::SUPPORTED_CAP.to_ne_bytes()).map(|()| 0)
            }
            // Bad arguments to known ioctls and unknown ioctls alike get
            // EINVAL on the system fd, exactly as from /dev/kvm.
            _ => Err(EINVAL),
        }
    }
}
