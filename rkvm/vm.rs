// SPDX-License-Identifier: GPL-2.0

//! The VM: what a VM fd refers to.

use kernel::{
    fs::File,
    mm::Mm,
    prelude::*,
    str::CStr,
    sync::{aref::ARef, Arc, ArcBorrow},
};

use crate::{abi, anon_fd::AnonFile, caps};

/// A virtual machine.
///
/// # Invariants
///
/// `mm` is the address space of the process that created the VM; guest
/// memory will be that process's memory, so the VM is only driven from it.
pub(crate) struct Vm {
    mm: ARef<Mm>,
}

impl Vm {
    /// Creates a VM of type `vm_type` owned by the current process.
    pub(crate) fn create(vm_type: usize) -> Result<Arc<Self>> {
        if vm_type != abi::vm_type::X86_DEFAULT {
            return Err(EINVAL);
        }
        let task = kernel::current!();
        let mm: &Mm = task.mm().ok_or(EINVAL)?;
        // INVARIANT: `mm` is the creating process's address space.
        Ok(Arc::new(Self { mm: ARef::from(mm) }, GFP_KERNEL)?)
    }

    /// Whether the caller runs in the VM's address space. KVM refuses (with
    /// `EIO`) to drive a VM from anywhere else, e.g. a forked child that
    /// inherited the fd: its memory would not be the guest's.
    fn owned_by_current(&self) -> bool {
        kernel::current!()
            .mm()
            .is_some_and(|mm| core::ptr::eq(mm.as_raw(), self.mm.as_raw()))
    }
}

impl AnonFile for Vm {
    const NAME: &'static CStr = c"rkvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if !this.owned_by_current() {
            return Err(EIO);
        }
        match cmd {
            abi::system::CHECK_EXTENSION => Ok(caps::check_extension(arg)),
            // KVM answers unknown VM ioctls with ENOTTY.
            _ => Err(ENOTTY),
        }
    }
}
