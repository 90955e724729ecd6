// SPDX-License-Identifier: GPL-2.0

//! The system fd and VM fd as a KVM client sees them: API version, vCPU
//! mmap size, KVM_CHECK_EXTENSION (against rkvm/caps.rs, the module's own
//! table), VM creation and bad types, unknown ioctls.

use std::os::fd::AsRawFd;
use std::os::raw::c_ulong;

use kvm_bindings::{KVM_API_VERSION, KVM_CAP_CHECK_EXTENSION_VM};
use kvm_ioctls::Cap;

use crate::harness::{Ctx, TestResult, diag};
use crate::util::{
    FOREIGN_BOGUS, KVM_BOGUS, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_API_VERSION,
    KVM_GET_VCPU_MMAP_SIZE, check_ext, ename, expect_errno, fd_flags, new_vm,
    online_cpus, raw_ioctl,
};
use crate::{abi, caps};

/// Capability numbers swept by the KVM_CHECK_EXTENSION tests.
const CAP_MAX: c_ulong = 300;
/// rkvm's vCPU mmap area: the kvm_run page plus the PIO data page.
const RKVM_VCPU_MMAP_SIZE: usize = abi::VCPU_MMAP_PAGES * 4096;

/// What rkvm's KVM_CHECK_EXTENSION must answer: the module's own table
/// (rkvm/caps.rs, included by path), on this host. KVM_RUN works on the
/// SVM backend only, so far.
fn rkvm_expected_cap(cap: c_ulong) -> i32 {
    caps::check_extension(cap as usize, online_cpus() as usize) as i32
}

pub(crate) fn api_version(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let v = kvm.get_api_version();
    if v != KVM_API_VERSION as i32 {
        return Err(format!("get_api_version() = {v}, want {KVM_API_VERSION}"));
    }
    Ok(())
}

pub(crate) fn api_version_bad_arg(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    expect_errno(
        "KVM_GET_API_VERSION(1)",
        raw_ioctl(&kvm, KVM_GET_API_VERSION(), 1),
        libc::EINVAL,
        false,
    )
}

pub(crate) fn vcpu_mmap_size(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let size = kvm
        .get_vcpu_mmap_size()
        .map_err(|e| format!("get_vcpu_mmap_size: {}", ename(e.errno())))?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    if size == 0 || size % page != 0 {
        return Err(format!(
            "vcpu mmap size {size} is not a positive multiple of {page}"
        ));
    }
    if ctx.rkvm && size != RKVM_VCPU_MMAP_SIZE {
        return Err(format!("vcpu mmap size {size}, want {RKVM_VCPU_MMAP_SIZE}"));
    }
    expect_errno(
        "KVM_GET_VCPU_MMAP_SIZE(1)",
        raw_ioctl(&kvm, KVM_GET_VCPU_MMAP_SIZE(), 1),
        libc::EINVAL,
        false,
    )
}

pub(crate) fn caps_none_unimplemented(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let mut bad = 0;
    for cap in 0..=CAP_MAX {
        let want = rkvm_expected_cap(cap);
        let got = raw_ioctl(&kvm, KVM_CHECK_EXTENSION(), cap).unwrap_or_else(|e| -e);
        if got != want {
            diag(&format!("cap {cap} = {got}"));
            bad += 1;
        }
        let via_crate = kvm.check_extension_raw(cap);
        if via_crate != got.max(-1) {
            diag(&format!(
                "cap {cap}: kvm-ioctls check_extension_raw = {via_crate}, raw ioctl = {got}"
            ));
            bad += 1;
        }
    }
    if kvm.check_extension_int(Cap::CheckExtensionVm) != 1
        || !kvm.check_extension(Cap::CheckExtensionVm)
    {
        diag("kvm-ioctls: Cap::CheckExtensionVm not reported as 1");
        bad += 1;
    }
    // KVM_CAP_IRQCHIP: the split irqchip (the in-kernel local APICs).
    if !kvm.check_extension(Cap::Irqchip) || !kvm.check_extension(Cap::UserMemory) {
        diag("kvm-ioctls: Cap::Irqchip or Cap::UserMemory not reported");
        bad += 1;
    }
    if bad > 0 {
        return Err(format!("{bad} unexpected KVM_CHECK_EXTENSION answers"));
    }
    Ok(())
}

pub(crate) fn create_vm(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    let fd = vm.as_raw_fd();
    let flags = fd_flags(fd).map_err(|e| format!("F_GETFD on VM fd: {}", ename(e)))?;
    if flags & libc::FD_CLOEXEC == 0 {
        return Err(format!("VM fd {fd} lacks FD_CLOEXEC (flags {flags:#x})"));
    }
    let mmap_size = kvm
        .get_vcpu_mmap_size()
        .map_err(|e| format!("get_vcpu_mmap_size: {e}"))?;
    if vm.run_size() != mmap_size {
        return Err(format!(
            "VmFd::run_size() {} != KVM_GET_VCPU_MMAP_SIZE {mmap_size}",
            vm.run_size()
        ));
    }
    drop(vm);
    // Single-threaded here, so nothing can have reused the number.
    match fd_flags(fd) {
        Err(libc::EBADF) => Ok(()),
        Err(e) => Err(format!("F_GETFD after drop: {}, want EBADF", ename(e))),
        Ok(_) => Err(format!("VM fd {fd} still open after drop")),
    }
}

pub(crate) fn create_vm_bad_type(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    for ty in [0xdead, 1 << 31] {
        expect_errno(
            &format!("KVM_CREATE_VM(type {ty:#x})"),
            raw_ioctl(&kvm, KVM_CREATE_VM(), ty),
            libc::EINVAL,
            true,
        )?;
    }
    Ok(())
}

pub(crate) fn vm_check_extension(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    let v = check_ext("VM fd", &vm, KVM_CAP_CHECK_EXTENSION_VM.into())?;
    if v != 1 {
        return Err(format!("VM fd: KVM_CAP_CHECK_EXTENSION_VM = {v}, want 1"));
    }
    if vm.check_extension_int(Cap::CheckExtensionVm) != 1 {
        return Err("VmFd::check_extension_int(CheckExtensionVm) != 1".into());
    }
    if !ctx.rkvm {
        return Ok(());
    }
    let mut bad = 0;
    for cap in 0..=CAP_MAX {
        let sys = raw_ioctl(&kvm, KVM_CHECK_EXTENSION(), cap).unwrap_or_else(|e| -e);
        let vmv = raw_ioctl(&vm, KVM_CHECK_EXTENSION(), cap).unwrap_or_else(|e| -e);
        if sys != vmv {
            diag(&format!("cap {cap}: system fd = {sys}, VM fd = {vmv}"));
            bad += 1;
        }
    }
    if bad > 0 {
        return Err(format!(
            "{bad} capabilities differ between system and VM fd"
        ));
    }
    Ok(())
}

pub(crate) fn unknown_ioctl_system(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    expect_errno(
        "system fd _IO(0xAE, 0xff)",
        raw_ioctl(&kvm, KVM_BOGUS(), 0),
        libc::EINVAL,
        false,
    )?;
    expect_errno(
        "system fd _IO('x', 1)",
        raw_ioctl(&kvm, FOREIGN_BOGUS(), 0),
        libc::EINVAL,
        false,
    )
}

pub(crate) fn unknown_ioctl_vm(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    expect_errno(
        "VM fd _IO(0xAE, 0xff)",
        raw_ioctl(&vm, KVM_BOGUS(), 0),
        libc::ENOTTY,
        false,
    )?;
    expect_errno(
        "VM fd _IO('x', 1)",
        raw_ioctl(&vm, FOREIGN_BOGUS(), 0),
        libc::ENOTTY,
        false,
    )
}
