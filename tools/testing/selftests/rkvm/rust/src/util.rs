// SPDX-License-Identifier: GPL-2.0

//! Helpers every test uses: raw ioctls for the bad-argument cases
//! `kvm-ioctls` cannot express, errno names, VM creation.

use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::c_ulong;

use kvm_bindings::KVMIO;
use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::ioctl::ioctl_with_val;
use vmm_sys_util::ioctl_io_nr;

use crate::harness::TestResult;

ioctl_io_nr!(KVM_GET_API_VERSION, KVMIO, 0x00);
ioctl_io_nr!(KVM_CREATE_VM, KVMIO, 0x01);
ioctl_io_nr!(KVM_CHECK_EXTENSION, KVMIO, 0x03);
ioctl_io_nr!(KVM_GET_VCPU_MMAP_SIZE, KVMIO, 0x04);
// Commands no KVM implements: one of KVM's type, one of another type.
ioctl_io_nr!(KVM_BOGUS, KVMIO, 0xff);
ioctl_io_nr!(FOREIGN_BOGUS, b'x' as u32, 0x01);

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "EINVAL (Invalid argument)" for the errnos these tests meet.
pub(crate) fn ename(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::EBADF => "EBADF",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => return format!("errno {e} ({})", std::io::Error::from_raw_os_error(e)),
    };
    let msg = std::io::Error::from_raw_os_error(e).to_string();
    let msg = msg.split(" (os error").next().unwrap_or(&msg).to_string();
    format!("{name} ({msg})")
}

/// A raw ioctl with an integer argument: `Ok(return value)` or `Err(errno)`.
pub(crate) fn raw_ioctl(fd: &impl AsRawFd, req: c_ulong, arg: c_ulong) -> Result<i32, i32> {
    // SAFETY: the commands used here take an integer argument (or none) and
    // never touch user memory; an unknown command is the point of some tests.
    let ret = unsafe { ioctl_with_val(fd, req, arg) };
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// Checks that a raw ioctl failed with `want`; closes any fd it returned.
pub(crate) fn expect_errno(
    what: &str,
    res: Result<i32, i32>,
    want: i32,
    returns_fd: bool,
) -> TestResult {
    match res {
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: got {}, want {}", ename(e), ename(want))),
        Ok(v) => {
            if returns_fd {
                // SAFETY: on success the command returned a new fd we own.
                unsafe { libc::close(v) };
            }
            Err(format!("{what}: succeeded ({v}), want {}", ename(want)))
        }
    }
}

pub(crate) fn check_ext(what: &str, fd: &impl AsRawFd, cap: c_ulong) -> Result<i32, String> {
    raw_ioctl(fd, KVM_CHECK_EXTENSION(), cap)
        .map_err(|e| format!("{what}: KVM_CHECK_EXTENSION({cap}): {}", ename(e)))
}

pub(crate) fn new_vm(kvm: &Kvm) -> Result<VmFd, String> {
    kvm.create_vm()
        .map_err(|e| format!("create_vm: {}", ename(e.errno())))
}

pub(crate) fn online_cpus() -> i32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as i32 }
}

pub(crate) fn fd_flags(fd: RawFd) -> Result<i32, i32> {
    // SAFETY: F_GETFD only queries the descriptor table.
    let ret = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// A kvm-ioctls result with the failing call named.
pub(crate) fn get<T>(what: &str, r: Result<T, kvm_ioctls::Error>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", ename(e.errno())))
}
