// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm`: the system fd.

use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    prelude::*,
};

use crate::{abi, anon_fd, caps, vm::Vm, x86};

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
            abi::system::CHECK_EXTENSION => Ok(caps::check_extension(arg, x86::online_cpus())),
            abi::system::GET_VCPU_MMAP_SIZE if arg == 0 => {
                Ok((abi::VCPU_MMAP_PAGES * kernel::page::PAGE_SIZE) as isize)
            }
            // Bad arguments to known ioctls and unknown ioctls alike get
            // EINVAL on the system fd, exactly as from /dev/kvm.
            _ => Err(EINVAL),
        }
    }
}
