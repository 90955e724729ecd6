// SPDX-License-Identifier: GPL-2.0

//! File descriptor lifetimes: the VM fd's owning-mm rule across fork(),
//! create/close loops, threads racing open/create/close, a VM fd that
//! outlives its system fd.

use std::io::Write;
use std::os::raw::c_ulong;
use std::thread;

use kvm_bindings::{KVM_API_VERSION, KVM_CAP_CHECK_EXTENSION_VM};
use vmm_sys_util::ioctl::ioctl_with_val;

use crate::harness::{Ctx, TestResult};
use crate::util::{KVM_CHECK_EXTENSION, check_ext, ename, errno, new_vm};

pub(crate) fn vm_fd_other_process(ctx: &Ctx) -> TestResult {
    /// Child exit status when its ioctl unexpectedly succeeded.
    const CHILD_SUCCEEDED: i32 = 255;
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    let cap = KVM_CAP_CHECK_EXTENSION_VM as c_ulong;
    let _ = std::io::stdout().flush();
    // SAFETY: the child only issues an ioctl, reads errno and _exit()s; all
    // async-signal-safe, and no other thread is running.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", ename(errno())));
    }
    if pid == 0 {
        // SAFETY: as above; _exit skips destructors and stdio flushing.
        unsafe {
            let ret = ioctl_with_val(&vm, KVM_CHECK_EXTENSION(), cap);
            let code = if ret >= 0 {
                CHILD_SUCCEEDED
            } else {
                *libc::__errno_location()
            };
            libc::_exit(code.clamp(1, CHILD_SUCCEEDED));
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if errno() != libc::EINTR {
            return Err(format!("waitpid: {}", ename(errno())));
        }
    }
    if !libc::WIFEXITED(status) {
        return Err(format!(
            "child did not exit normally (wait status {status:#x})"
        ));
    }
    match libc::WEXITSTATUS(status) {
        libc::EIO => {}
        CHILD_SUCCEEDED => return Err("child: ioctl on inherited VM fd succeeded, want EIO".into()),
        e => {
            return Err(format!(
                "child: ioctl on inherited VM fd: {}, want EIO",
                ename(e)
            ));
        }
    }
    match check_ext("parent VM fd after fork", &vm, cap)? {
        1 => Ok(()),
        v => Err(format!(
            "parent VM fd after fork: KVM_CAP_CHECK_EXTENSION_VM = {v}, want 1"
        )),
    }
}

pub(crate) fn create_close_loop(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    for i in 0..ctx.iters(1000) {
        new_vm(&kvm).map_err(|e| format!("iteration {i}: {e}"))?;
    }
    let vms = (0..ctx.iters(100))
        .map(|i| new_vm(&kvm).map_err(|e| format!("held VM {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, vm) in vms.iter().enumerate() {
        check_ext(
            &format!("held VM {i}"),
            vm,
            KVM_CAP_CHECK_EXTENSION_VM.into(),
        )?;
    }
    drop(vms);
    drop(kvm);
    for i in 0..ctx.iters(200) {
        let kvm = ctx.open().map_err(|e| format!("open iteration {i}: {e}"))?;
        if kvm.get_api_version() != KVM_API_VERSION as i32 {
            return Err(format!("open iteration {i}: bad API version"));
        }
    }
    Ok(())
}

pub(crate) fn threads_open_close_race(ctx: &Ctx) -> TestResult {
    const THREADS: usize = 8;
    let iters = ctx.iters(200);
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || -> TestResult {
                    for i in 0..iters {
                        let at = |e: String| format!("thread {t} iteration {i}: {e}");
                        let kvm = ctx.open().map_err(at)?;
                        let vm = new_vm(&kvm).map_err(at)?;
                        let v = check_ext("VM fd", &vm, KVM_CAP_CHECK_EXTENSION_VM.into())
                            .map_err(at)?;
                        if v != 1 {
                            return Err(at(format!("KVM_CAP_CHECK_EXTENSION_VM = {v}")));
                        }
                        if (t + i) % 2 == 0 {
                            drop(vm);
                            drop(kvm);
                        } else {
                            drop(kvm);
                            drop(vm);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        // Join every thread before reporting, keep the first failure.
        let mut first = Ok(());
        for (t, h) in handles.into_iter().enumerate() {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(format!("thread {t} panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    })
}

pub(crate) fn vm_outlives_system_fd(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    drop(kvm);
    let v = check_ext(
        "VM fd after closing system fd",
        &vm,
        KVM_CAP_CHECK_EXTENSION_VM.into(),
    )?;
    if v != 1 {
        return Err(format!(
            "VM fd after closing system fd: KVM_CAP_CHECK_EXTENSION_VM = {v}"
        ));
    }
    drop(vm);
    Ok(())
}
