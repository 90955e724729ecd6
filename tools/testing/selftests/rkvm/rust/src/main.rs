// SPDX-License-Identifier: GPL-2.0

//! rkvm_rust_selftest: ABI selftests for `/dev/rkvm` (kselftest TAP output).
//!
//! rkvm claims to implement the KVM x86 ioctl ABI. The strongest evidence is
//! a client we did not write working unchanged, so everything a VMM would do
//! goes through the rust-vmm `kvm-ioctls` crate (the one Firecracker and
//! Cloud Hypervisor use), opened with `Kvm::new_with_path`. Raw ioctls are
//! used only for the bad-argument cases `kvm-ioctls` cannot express.
//!
//! The same binary runs against stock KVM (`--dev /dev/kvm`) to show both
//! kernels agree; tests of rkvm-specific answers are skipped there.
//!
//! Covered (the "skeleton" stage): API version, vCPU mmap size,
//! KVM_CHECK_EXTENSION on system and VM fds, VM creation and bad VM types,
//! unknown ioctls, the VM fd's owning-mm rule across fork(), and fd lifetime
//! under loops and threads.
//!
//! Usage: rkvm_rust_selftest [--dev PATH] [--require] [--scale N]
//! `--scale N` divides the stress loops' iteration counts by N (for slow
//! emulated hosts and for stock KVM, whose VM creation costs far more under
//! emulation); every check still runs.
//! Exit: 0 all passed, 1 a test failed (or --require and no device),
//! 4 (KSFT_SKIP) device cannot be opened.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::raw::c_ulong;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;
use std::thread;

use kvm_bindings::{
    KVM_API_VERSION, KVM_CAP_CHECK_EXTENSION_VM, KVM_CAP_MAX_VCPU_ID, KVM_CAP_MAX_VCPUS,
    KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS, KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_SET_TSS_ADDR,
    KVM_CAP_USER_MEMORY, KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_X86_DEFAULT_VM, KVMIO,
    KVM_CAP_READONLY_MEM, KVM_CAP_EXT_CPUID, KVM_CAP_IMMEDIATE_EXIT,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vmm_sys_util::ioctl::ioctl_with_val;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_API_VERSION, KVMIO, 0x00);
ioctl_io_nr!(KVM_CREATE_VM, KVMIO, 0x01);
ioctl_io_nr!(KVM_CHECK_EXTENSION, KVMIO, 0x03);
ioctl_io_nr!(KVM_GET_VCPU_MMAP_SIZE, KVMIO, 0x04);
// Commands no KVM implements: one of KVM's type, one of another type.
ioctl_io_nr!(KVM_BOGUS, KVMIO, 0xff);
ioctl_io_nr!(FOREIGN_BOGUS, b'x' as u32, 0x01);

const KSFT_FAIL: u8 = 1;
const KSFT_SKIP: u8 = 4;
const DEFAULT_DEV: &str = "/dev/rkvm";
/// Capability numbers swept by the KVM_CHECK_EXTENSION tests.
const CAP_MAX: c_ulong = 300;
/// rkvm's KVM_CAP_MAX_VCPUS and KVM_CAP_MAX_VCPU_ID.
const RKVM_MAX_VCPUS: i32 = 64;
/// rkvm's KVM_CAP_NR_MEMSLOTS.
const RKVM_NR_MEMSLOTS: i32 = 509;
/// rkvm's vCPU mmap area: the kvm_run page plus the PIO data page.
const RKVM_VCPU_MMAP_SIZE: usize = 2 * 4096;

type TestResult = Result<(), String>;

struct Ctx {
    dev: String,
    path: CString,
    /// True unless the device's file name is "kvm" (stock KVM).
    rkvm: bool,
    /// Divisor of the stress loops' iteration counts (>= 1).
    scale: usize,
}

impl Ctx {
    /// `n` iterations, divided by `--scale`, at least one.
    fn iters(&self, n: usize) -> usize {
        (n / self.scale).max(1)
    }

    fn open(&self) -> Result<Kvm, String> {
        Kvm::new_with_path(&self.path)
            .map_err(|e| format!("open {}: {}", self.dev, ename(e.errno())))
    }
}

struct Test {
    name: &'static str,
    func: fn(&Ctx) -> TestResult,
    rkvm_only: bool,
}

#[rustfmt::skip]
const TESTS: &[Test] = &[
    Test { name: "api_version", func: api_version, rkvm_only: false },
    Test { name: "api_version_bad_arg", func: api_version_bad_arg, rkvm_only: false },
    Test { name: "vcpu_mmap_size", func: vcpu_mmap_size, rkvm_only: false },
    Test { name: "caps_none_unimplemented", func: caps_none_unimplemented, rkvm_only: true },
    Test { name: "create_vm", func: create_vm, rkvm_only: false },
    Test { name: "create_vm_bad_type", func: create_vm_bad_type, rkvm_only: false },
    Test { name: "vm_check_extension", func: vm_check_extension, rkvm_only: false },
    Test { name: "unknown_ioctl_system", func: unknown_ioctl_system, rkvm_only: false },
    Test { name: "unknown_ioctl_vm", func: unknown_ioctl_vm, rkvm_only: false },
    Test { name: "vm_fd_other_process", func: vm_fd_other_process, rkvm_only: false },
    Test { name: "create_close_loop", func: create_close_loop, rkvm_only: false },
    Test { name: "threads_open_close_race", func: threads_open_close_race, rkvm_only: false },
    Test { name: "vm_outlives_system_fd", func: vm_outlives_system_fd, rkvm_only: false },
    Test { name: "memory_regions", func: memory_regions, rkvm_only: false },
    Test { name: "vcpu_reset_state_and_round_trips", func: vcpu_reset_state_and_round_trips, rkvm_only: false },
];

// ---------------------------------------------------------------------------
// Helpers

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "EINVAL (Invalid argument)" for the errnos these tests meet.
fn ename(e: i32) -> String {
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

/// TAP diagnostic line.
fn diag(msg: &str) {
    println!("# {msg}");
}

/// A raw ioctl with an integer argument: `Ok(return value)` or `Err(errno)`.
fn raw_ioctl(fd: &impl AsRawFd, req: c_ulong, arg: c_ulong) -> Result<i32, i32> {
    // SAFETY: the commands used here take an integer argument (or none) and
    // never touch user memory; an unknown command is the point of some tests.
    let ret = unsafe { ioctl_with_val(fd, req, arg) };
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

/// Checks that a raw ioctl failed with `want`; closes any fd it returned.
fn expect_errno(what: &str, res: Result<i32, i32>, want: i32, returns_fd: bool) -> TestResult {
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

fn check_ext(what: &str, fd: &impl AsRawFd, cap: c_ulong) -> Result<i32, String> {
    raw_ioctl(fd, KVM_CHECK_EXTENSION(), cap)
        .map_err(|e| format!("{what}: KVM_CHECK_EXTENSION({cap}): {}", ename(e)))
}

fn new_vm(kvm: &Kvm) -> Result<VmFd, String> {
    kvm.create_vm()
        .map_err(|e| format!("create_vm: {}", ename(e.errno())))
}

/// What rkvm's KVM_CHECK_EXTENSION must answer at this stage.
fn rkvm_expected_cap(cap: c_ulong) -> i32 {
    match cap as u32 {
        KVM_CAP_CHECK_EXTENSION_VM
        | KVM_CAP_SET_TSS_ADDR
        | KVM_CAP_SET_IDENTITY_MAP_ADDR
        | KVM_CAP_USER_MEMORY
        | KVM_CAP_USER_MEMORY2
        | KVM_CAP_READONLY_MEM
        | KVM_CAP_EXT_CPUID => 1,
        // KVM_RUN works on the SVM backend only, so far.
        KVM_CAP_IMMEDIATE_EXIT => host_has_svm() as i32,
        KVM_CAP_NR_MEMSLOTS => RKVM_NR_MEMSLOTS,
        KVM_CAP_NR_VCPUS => online_cpus().min(RKVM_MAX_VCPUS),
        KVM_CAP_MAX_VCPUS | KVM_CAP_MAX_VCPU_ID => RKVM_MAX_VCPUS,
        KVM_CAP_VM_TYPES => 1 << KVM_X86_DEFAULT_VM,
        _ => 0,
    }
}

/// Whether the host CPU has SVM (rkvm's SVM backend runs guests).
fn host_has_svm() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "svm")))
}

fn online_cpus() -> i32 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as i32 }
}

fn fd_flags(fd: RawFd) -> Result<i32, i32> {
    // SAFETY: F_GETFD only queries the descriptor table.
    let ret = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

// ---------------------------------------------------------------------------
// Tests

fn api_version(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let v = kvm.get_api_version();
    if v != KVM_API_VERSION as i32 {
        return Err(format!("get_api_version() = {v}, want {KVM_API_VERSION}"));
    }
    Ok(())
}

fn api_version_bad_arg(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    expect_errno(
        "KVM_GET_API_VERSION(1)",
        raw_ioctl(&kvm, KVM_GET_API_VERSION(), 1),
        libc::EINVAL,
        false,
    )
}

fn vcpu_mmap_size(ctx: &Ctx) -> TestResult {
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

fn caps_none_unimplemented(ctx: &Ctx) -> TestResult {
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
    if kvm.check_extension(Cap::Irqchip) || !kvm.check_extension(Cap::UserMemory) {
        diag("kvm-ioctls: Cap::Irqchip reported, or Cap::UserMemory not reported");
        bad += 1;
    }
    if bad > 0 {
        return Err(format!("{bad} unexpected KVM_CHECK_EXTENSION answers"));
    }
    Ok(())
}

fn create_vm(ctx: &Ctx) -> TestResult {
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

fn create_vm_bad_type(ctx: &Ctx) -> TestResult {
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

fn vm_check_extension(ctx: &Ctx) -> TestResult {
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

fn unknown_ioctl_system(ctx: &Ctx) -> TestResult {
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

fn unknown_ioctl_vm(ctx: &Ctx) -> TestResult {
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

fn vm_fd_other_process(ctx: &Ctx) -> TestResult {
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

fn create_close_loop(ctx: &Ctx) -> TestResult {
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

fn threads_open_close_race(ctx: &Ctx) -> TestResult {
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

fn vm_outlives_system_fd(ctx: &Ctx) -> TestResult {
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

/// Anonymous memory that backs memslots; unmapped on drop.
struct Backing {
    addr: *mut libc::c_void,
    len: usize,
}

impl Backing {
    fn new(len: usize) -> Result<Self, String> {
        // SAFETY: a fresh private anonymous mapping touches no existing memory.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(format!("mmap: {}", ename(errno())));
        }
        Ok(Self { addr, len })
    }

    fn hva(&self, offset: usize) -> u64 {
        self.addr as u64 + offset as u64
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` created.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// KVM_SET_USER_MEMORY_REGION through kvm-ioctls; `Err(errno)` on failure.
fn set_region(vm: &VmFd, slot: u32, gpa: u64, size: u64, hva: u64) -> Result<(), i32> {
    let region = kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: hva,
    };
    // SAFETY: `hva` is either 0 (deletion, or a request that must fail) or
    // inside a `Backing` that outlives the VM's use of it in these tests
    // (the VM is dropped first, and no vCPU ever touches the memory).
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| e.errno())
}

fn memory_regions(ctx: &Ctx) -> TestResult {
    const MB: u64 = 1 << 20;
    let mem = Backing::new(16 << 20)?;
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    let expect = |what: &str, got: Result<(), i32>, want: Result<(), i32>| -> TestResult {
        if got == want {
            return Ok(());
        }
        let show = |r: Result<(), i32>| r.map_or_else(ename, |()| "success".into());
        Err(format!("{what}: got {}, want {}", show(got), show(want)))
    };
    expect(
        "create slot 0",
        set_region(&vm, 0, 0, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "create slot 1",
        set_region(&vm, 1, 4 * MB, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "overlap",
        set_region(&vm, 2, MB, 2 * MB, mem.hva(0)),
        Err(libc::EEXIST),
    )?;
    expect(
        "adjacent",
        set_region(&vm, 2, 2 * MB, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "move",
        set_region(&vm, 1, 8 * MB, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "resize",
        set_region(&vm, 1, 8 * MB, 4 * MB, mem.hva(0)),
        Err(libc::EINVAL),
    )?;
    expect(
        "size not aligned",
        set_region(&vm, 3, 12 * MB, 4095, mem.hva(0)),
        Err(libc::EINVAL),
    )?;
    expect(
        "gpa wraps",
        set_region(&vm, 3, u64::MAX - 4095, 8192, mem.hva(0)),
        Err(libc::EINVAL),
    )?;
    expect(
        "kernel hva",
        set_region(&vm, 3, 12 * MB, MB, 0xffff_8880_0000_0000),
        Err(libc::EINVAL),
    )?;
    expect("delete", set_region(&vm, 0, 0, 0, 0), Ok(()))?;
    expect(
        "delete again",
        set_region(&vm, 0, 0, 0, 0),
        Err(libc::EINVAL),
    )?;
    expect(
        "reuse the range",
        set_region(&vm, 3, 0, 2 * MB, mem.hva(2 << 20)),
        Ok(()),
    )?;
    drop(vm);
    Ok(())
}

/// A kvm-ioctls result with the failing call named.
fn get<T>(what: &str, r: Result<T, kvm_ioctls::Error>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", ename(e.errno())))
}

fn vcpu_reset_state_and_round_trips(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    // kvm-ioctls maps KVM_GET_VCPU_MMAP_SIZE bytes of the vCPU fd here.
    let bsp = vm
        .create_vcpu(0)
        .map_err(|e| format!("create_vcpu(0): {}", ename(e.errno())))?;
    let ap = vm
        .create_vcpu(1)
        .map_err(|e| format!("create_vcpu(1): {}", ename(e.errno())))?;
    match vm.create_vcpu(1) {
        Err(e) if e.errno() == libc::EEXIST => {}
        Err(e) => {
            return Err(format!(
                "duplicate vCPU id: {}, want EEXIST",
                ename(e.errno())
            ));
        }
        Ok(_) => return Err("duplicate vCPU id accepted".into()),
    }

    // The architectural RESET state, exactly as stock KVM reports it.
    let regs = get("get_regs", bsp.get_regs())?;
    if (regs.rip, regs.rflags, regs.rdx) != (0xfff0, 2, 0x600) {
        return Err(format!(
            "reset rip/rflags/rdx = {:#x}/{:#x}/{:#x}",
            regs.rip, regs.rflags, regs.rdx
        ));
    }
    // Registers round-trip; RFLAGS bit 1 always reads as 1.
    let mut new = regs;
    new.rax = 0x1122_3344_5566_7788;
    new.rip = 0x10_0000;
    new.rflags = 0;
    get("set_regs", bsp.set_regs(&new))?;
    let back = get("get_regs", bsp.get_regs())?;
    new.rflags = 2;
    if back != new {
        return Err(format!("set_regs/get_regs: {back:?}, want {new:?}"));
    }
    // Segment and control registers after RESET, as each KVM backend
    // reports them: kvm_amd keeps CS and SS not-accessed and a 16-bit busy
    // TSS; kvm_intel marks everything accessed, with a 32-bit busy TSS.
    let amd = std::fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("/proc/cpuinfo: {e}"))?
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "svm"));
    let sregs = get("get_sregs", bsp.get_sregs())?;
    let (cs, ss, tr) = (sregs.cs, sregs.ss, sregs.tr);
    let want_types = if amd { (0xa, 2, 3) } else { (0xb, 3, 0xb) };
    if (cs.selector, cs.base, cs.limit, cs.present, cs.s) != (0xf000, 0xffff_0000, 0xffff, 1, 1)
        || (cs.type_, ss.type_, tr.type_) != want_types
        || (sregs.ds.type_, sregs.ldt.type_, tr.s) != (3, 2, 0)
        || (sregs.gdt.limit, sregs.idt.limit) != (0xffff, 0xffff)
        || (sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer) != (0x6000_0010, 0, 0, 0)
        || sregs.apic_base != 0xfee0_0900
    {
        return Err(format!(
            "reset sregs differ from KVM's ({}): {sregs:?}",
            if amd { "SVM" } else { "VMX" }
        ));
    }
    let ap_sregs = get("get_sregs (AP)", ap.get_sregs())?;
    if ap_sregs.apic_base != 0xfee0_0800 {
        return Err(format!("AP apic_base {:#x}", ap_sregs.apic_base));
    }
    // Protected mode round-trips; CR0.NW without CR0.CD is refused.
    let mut pm = sregs;
    pm.cr0 = 0x11;
    pm.cs.type_ = 0xb;
    pm.cs.db = 1;
    pm.cs.limit = 0xffff_ffff;
    pm.cs.g = 1;
    pm.gdt.base = 0x5000;
    get("set_sregs", bsp.set_sregs(&pm))?;
    let back = get("get_sregs", bsp.get_sregs())?;
    if (back.cr0, back.cs, back.gdt.base) != (pm.cr0, pm.cs, pm.gdt.base) {
        return Err(format!("set_sregs/get_sregs: {back:?}, want {pm:?}"));
    }
    let mut bad = pm;
    bad.cr0 = 1 << 29;
    match bsp.set_sregs(&bad) {
        Err(e) if e.errno() == libc::EINVAL => {}
        Err(e) => {
            return Err(format!(
                "set_sregs(NW without CD): {}, want EINVAL",
                ename(e.errno())
            ));
        }
        Ok(()) => return Err("set_sregs(NW without CD) accepted".into()),
    }
    // FPU: FNINIT's control word after reset; MXCSR is never reported.
    let fpu = get("get_fpu", bsp.get_fpu())?;
    if fpu.fcw != 0x37f || fpu.mxcsr != 0 || fpu.xmm != [[0; 16]; 16] {
        return Err(format!(
            "reset FPU: fcw {:#x} mxcsr {:#x}",
            fpu.fcw, fpu.mxcsr
        ));
    }
    let mut new_fpu = fpu;
    new_fpu.fcw = 0x27f;
    new_fpu.xmm[3][5] = 7;
    new_fpu.mxcsr = 0x1f80;
    get("set_fpu", bsp.set_fpu(&new_fpu))?;
    let back_fpu = get("get_fpu", bsp.get_fpu())?;
    new_fpu.mxcsr = 0;
    if (back_fpu.fcw, back_fpu.xmm, back_fpu.mxcsr) != (new_fpu.fcw, new_fpu.xmm, 0) {
        return Err(format!(
            "set_fpu/get_fpu: fcw {:#x} mxcsr {:#x}",
            back_fpu.fcw, back_fpu.mxcsr
        ));
    }
    // KVM_SET_TSS_ADDR and KVM_SET_IDENTITY_MAP_ADDR: accepted, with KVM's limits.
    get("set_tss_address", vm.set_tss_address(0xfffb_d000))?;
    match vm.set_tss_address(0xffff_e000) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => {
            return Err(format!(
                "set_tss_address(0xffffe000): {other:?}, want EINVAL"
            ));
        }
    }
    match vm.set_identity_map_address(0xfeff_c000) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => {
            return Err(format!(
                "set_identity_map_address with vCPUs: {other:?}, want EINVAL"
            ));
        }
    }
    let fresh = new_vm(&kvm)?;
    get(
        "set_identity_map_address",
        fresh.set_identity_map_address(0xfeff_c000),
    )?;
    drop(ap);
    Ok(())
}

// ---------------------------------------------------------------------------
// Runner

fn usage() -> ExitCode {
    eprintln!("usage: rkvm_rust_selftest [--dev PATH] [--require] [--scale N]");
    ExitCode::from(2)
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into())
}

fn main() -> ExitCode {
    let mut dev = DEFAULT_DEV.to_string();
    let mut require = false;
    let mut scale = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dev" => match args.next() {
                Some(p) => dev = p,
                None => return usage(),
            },
            "--require" => require = true,
            "--scale" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n >= 1 => scale = n,
                _ => return usage(),
            },
            _ => return usage(),
        }
    }
    let Ok(path) = CString::new(dev.clone()) else {
        return usage();
    };
    let rkvm = Path::new(&dev).file_name().is_none_or(|n| n != "kvm");
    let ctx = Ctx {
        dev,
        path,
        rkvm,
        scale,
    };

    println!("TAP version 13");
    if let Err(e) = Kvm::new_with_path(&ctx.path) {
        let why = ename(e.errno());
        if require {
            println!("Bail out! cannot open {}: {why}", ctx.dev);
            return ExitCode::from(KSFT_FAIL);
        }
        println!("1..0 # SKIP cannot open {}: {why}", ctx.dev);
        return ExitCode::from(KSFT_SKIP);
    }
    println!("1..{}", TESTS.len());
    diag(&format!(
        "device {} ({})",
        ctx.dev,
        if ctx.rkvm { "rkvm" } else { "stock KVM" }
    ));

    // Report panics as TAP diagnostics, not on stderr.
    panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        diag(&format!(
            "panic{loc}: {}",
            panic_message(info.payload()).replace('\n', " ")
        ));
    }));

    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (i, t) in TESTS.iter().enumerate() {
        let n = i + 1;
        if t.rkvm_only && !ctx.rkvm {
            println!("ok {n} {} # SKIP rkvm only", t.name);
            skip += 1;
            continue;
        }
        let res = panic::catch_unwind(AssertUnwindSafe(|| (t.func)(&ctx)))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_message(&*p))));
        match res {
            Ok(()) => {
                println!("ok {n} {}", t.name);
                pass += 1;
            }
            Err(why) => {
                println!("not ok {n} {} # {}", t.name, why.replace('\n', " "));
                fail += 1;
            }
        }
    }
    println!("# totals: pass:{pass} fail:{fail} skip:{skip}");
    if fail == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(KSFT_FAIL)
    }
}
