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
//! Guest code (`VcpuFd::run()`): a real-mode guest doing port I/O; a
//! 64-bit guest (page tables and GDT set up here, the supported CPUID set
//! first) exiting on OUT, CPUID-echo, MMIO write and read, and
//! WRMSR/RDMSR; the MSR index list and KVM_SET_MSRS/KVM_GET_MSRS round
//! trips; kvm_run.immediate_exit; a triple fault ending in
//! KVM_EXIT_SHUTDOWN. These are skipped where the device does not report
//! KVM_CAP_IMMEDIATE_EXIT (an rkvm backend that cannot run guests yet).
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
    CpuId, KVM_API_VERSION, KVM_CAP_CHECK_EXTENSION_VM, KVM_CAP_EXT_CPUID, KVM_CAP_IMMEDIATE_EXIT,
    KVM_CAP_MAX_VCPU_ID, KVM_CAP_MAX_VCPUS, KVM_CAP_NR_MEMSLOTS, KVM_CAP_NR_VCPUS,
    KVM_CAP_READONLY_MEM, KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_SET_TSS_ADDR, KVM_CAP_USER_MEMORY,
    KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_CAP_XCRS, KVM_CAP_XSAVE, KVM_MAX_CPUID_ENTRIES, KVM_X86_DEFAULT_VM, KVMIO, Msrs,
    kvm_msr_entry, kvm_regs, kvm_segment, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};
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
    /// Runs guest code (KVM_RUN) or needs a backend that can: skipped
    /// where the device does not report KVM_CAP_IMMEDIATE_EXIT (rkvm on a
    /// host whose backend cannot run guests yet).
    guest: bool,
}

#[rustfmt::skip]
const TESTS: &[Test] = &[
    Test { name: "api_version", func: api_version, rkvm_only: false, guest: false },
    Test { name: "api_version_bad_arg", func: api_version_bad_arg, rkvm_only: false, guest: false },
    Test { name: "vcpu_mmap_size", func: vcpu_mmap_size, rkvm_only: false, guest: false },
    Test { name: "caps_none_unimplemented", func: caps_none_unimplemented, rkvm_only: true, guest: false },
    Test { name: "create_vm", func: create_vm, rkvm_only: false, guest: false },
    Test { name: "create_vm_bad_type", func: create_vm_bad_type, rkvm_only: false, guest: false },
    Test { name: "vm_check_extension", func: vm_check_extension, rkvm_only: false, guest: false },
    Test { name: "unknown_ioctl_system", func: unknown_ioctl_system, rkvm_only: false, guest: false },
    Test { name: "unknown_ioctl_vm", func: unknown_ioctl_vm, rkvm_only: false, guest: false },
    Test { name: "vm_fd_other_process", func: vm_fd_other_process, rkvm_only: false, guest: false },
    Test { name: "create_close_loop", func: create_close_loop, rkvm_only: false, guest: false },
    Test { name: "threads_open_close_race", func: threads_open_close_race, rkvm_only: false, guest: false },
    Test { name: "vm_outlives_system_fd", func: vm_outlives_system_fd, rkvm_only: false, guest: false },
    Test { name: "memory_regions", func: memory_regions, rkvm_only: false, guest: false },
    Test { name: "vcpu_reset_state_and_round_trips", func: vcpu_reset_state_and_round_trips, rkvm_only: false, guest: false },
    Test { name: "run_real_mode_pio", func: run_real_mode_pio, rkvm_only: false, guest: true },
    Test { name: "run_long_mode_exits", func: run_long_mode_exits, rkvm_only: false, guest: true },
    Test { name: "msrs_index_list_and_round_trip", func: msrs_index_list_and_round_trip, rkvm_only: false, guest: true },
    Test { name: "run_immediate_exit", func: run_immediate_exit, rkvm_only: false, guest: true },
    Test { name: "run_triple_fault_shutdown", func: run_triple_fault_shutdown, rkvm_only: false, guest: true },
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
        | KVM_CAP_EXT_CPUID
        | KVM_CAP_XSAVE
        | KVM_CAP_XCRS => 1,
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
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| {
        c.lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "svm"))
    })
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
    // inside a `Backing` that outlives the VM (every test drops the VM
    // first; `Guest` declares its `Backing` last). Guest code writing that
    // memory is the point of the guest-running tests.
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
// Guest-running tests: real guest code through `VcpuFd::run()`.

/// Guest RAM: one memslot at GPA 0.
const GUEST_MEM: usize = 2 << 20;
/// Guest physical layout (all inside `GUEST_MEM`).
const GUEST_GDT: u64 = 0x1000;
const GUEST_PML4: u64 = 0x2000;
const GUEST_PDPT: u64 = 0x3000;
const GUEST_PD: u64 = 0x4000;
const GUEST_IDT: u64 = 0x5000;
const GUEST_STACK: u64 = 0x7000;
const GUEST_CODE: u64 = 0x8000;
/// Unbacked (no memslot) but mapped by the guest's page tables: MMIO.
const GUEST_MMIO: u64 = 0x1000_0000;
/// Where KVM's TSS for real mode goes (QEMU's choice), for VMX hosts
/// without unrestricted guest; harmless elsewhere.
const GUEST_TSS: usize = 0xfffb_d000;

const SEL_CODE64: u16 = 0x8;
const SEL_DATA: u16 = 0x10;
const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;

const MSR_TSC: u32 = 0x10;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// A VM with guest RAM at GPA 0 and vCPU 0 carrying the supported CPUID.
/// Fields drop in order: the vCPU and VM before the memory they map.
struct Guest {
    vcpu: VcpuFd,
    _vm: VmFd,
    cpuid: CpuId,
    _kvm: Kvm,
    mem: Backing,
}

impl Guest {
    fn new(ctx: &Ctx) -> Result<Self, String> {
        let mem = Backing::new(GUEST_MEM)?;
        let kvm = ctx.open()?;
        let vm = new_vm(&kvm)?;
        get("set_tss_address", vm.set_tss_address(GUEST_TSS))?;
        set_region(&vm, 0, 0, GUEST_MEM as u64, mem.hva(0))
            .map_err(|e| format!("set_user_memory_region: {}", ename(e)))?;
        let vcpu = get("create_vcpu(0)", vm.create_vcpu(0))?;
        // Before KVM_SET_SREGS: KVM refuses EFER.LME unless the guest's
        // CPUID has long mode.
        let cpuid = get(
            "get_supported_cpuid",
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES),
        )?;
        get("set_cpuid2", vcpu.set_cpuid2(&cpuid))?;
        Ok(Self {
            vcpu,
            _vm: vm,
            cpuid,
            _kvm: kvm,
            mem,
        })
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        assert!(
            gpa as usize + bytes.len() <= GUEST_MEM,
            "GPA {gpa:#x} outside RAM"
        );
        // SAFETY: in bounds of the mapping (checked above); u8 has no
        // alignment, and only this thread touches the memory while the
        // vCPU is not running.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (self.mem.addr as *mut u8).add(gpa as usize),
                bytes.len(),
            )
        };
    }

    fn write_u64s(&self, gpa: u64, vals: &[u64]) {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(gpa, &bytes);
    }

    fn read_u8(&self, gpa: u64) -> u8 {
        assert!((gpa as usize) < GUEST_MEM, "GPA {gpa:#x} outside RAM");
        // SAFETY: in bounds (checked above); volatile because the guest
        // wrote it behind the compiler's back.
        unsafe { std::ptr::read_volatile((self.mem.addr as *const u8).add(gpa as usize)) }
    }

    fn regs(&self) -> Result<kvm_regs, String> {
        get("get_regs", self.vcpu.get_regs())
    }

    fn set_rip(&self, rip: u64) -> TestResult {
        let regs = kvm_regs {
            rip,
            rsp: GUEST_STACK,
            rflags: 2,
            ..Default::default()
        };
        get("set_regs", self.vcpu.set_regs(&regs))
    }

    /// Real mode at `code` (CS base 0): the reset state otherwise.
    fn enter_real_mode(&self, code: &[u8]) -> TestResult {
        self.write(GUEST_CODE, code);
        let mut sregs = get("get_sregs", self.vcpu.get_sregs())?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        get("set_sregs", self.vcpu.set_sregs(&sregs))?;
        self.set_rip(GUEST_CODE)
    }

    /// 64-bit mode at `code`: flat GDT, the first GiB identity-mapped with
    /// 2 MiB pages, and an IDT of limit 0 (any exception triple-faults).
    fn enter_long_mode(&self, code: &[u8]) -> TestResult {
        self.write(GUEST_CODE, code);
        self.write_u64s(
            GUEST_GDT,
            &[0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff],
        );
        self.write_u64s(GUEST_PML4, &[GUEST_PDPT | PTE_P | PTE_RW]);
        self.write_u64s(GUEST_PDPT, &[GUEST_PD | PTE_P | PTE_RW]);
        let pd: Vec<u64> = (0..512u64)
            .map(|i| (i << 21) | PTE_P | PTE_RW | PTE_PS)
            .collect();
        self.write_u64s(GUEST_PD, &pd);

        // TR and LDTR stay as the vCPU's reset state has them.
        let mut sregs = get("get_sregs", self.vcpu.get_sregs())?;
        let code_seg = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: SEL_CODE64,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data_seg = kvm_segment {
            selector: SEL_DATA,
            type_: 0x3,
            db: 1,
            l: 0,
            ..code_seg
        };
        sregs.cs = code_seg;
        (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) =
            (data_seg, data_seg, data_seg, data_seg, data_seg);
        sregs.gdt.base = GUEST_GDT;
        sregs.gdt.limit = 3 * 8 - 1;
        sregs.idt.base = GUEST_IDT;
        sregs.idt.limit = 0;
        sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr3 = GUEST_PML4;
        sregs.cr4 = CR4_PAE;
        sregs.efer = EFER_LME | EFER_LMA;
        get("set_sregs", self.vcpu.set_sregs(&sregs))?;
        self.set_rip(GUEST_CODE)
    }

    /// Runs to the next exit and hands it to `check`, which answers it
    /// (IoIn, MmioRead) and says whether it is the one wanted.
    fn expect(
        &mut self,
        step: &str,
        want: &str,
        check: impl FnOnce(&mut VcpuExit) -> bool,
    ) -> TestResult {
        let got = match self.vcpu.run() {
            Ok(mut exit) => {
                if check(&mut exit) {
                    return Ok(());
                }
                format!("{exit:?}")
            }
            Err(e) => format!("KVM_RUN error {}", ename(e.errno())),
        };
        let rip = self.regs().map_or_else(|e| e, |r| format!("{:#x}", r.rip));
        Err(format!("{step}: got {got} (rip {rip}), want {want}"))
    }

    fn expect_out(&mut self, step: &str, port: u16, want: &[u8]) -> TestResult {
        self.expect(
            step,
            &format!("IoOut({port:#x}, {want:x?})"),
            |e| matches!(e, VcpuExit::IoOut(p, d) if *p == port && *d == want),
        )
    }

    fn expect_out_u32(&mut self, step: &str, port: u16, want: u32) -> TestResult {
        self.expect_out(step, port, &want.to_le_bytes())
    }

    fn expect_hlt_at(&mut self, step: &str, rip: u64) -> TestResult {
        self.expect(step, "Hlt", |e| matches!(e, VcpuExit::Hlt))?;
        let got = self.regs()?.rip;
        if got != rip {
            return Err(format!("{step}: rip {got:#x} after Hlt, want {rip:#x}"));
        }
        Ok(())
    }
}

fn run_real_mode_pio(ctx: &Ctx) -> TestResult {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xb0, 0x42,             // mov al, 0x42
        0xe6, 0x10,             // out 0x10, al
        0xe4, 0x11,             // in al, 0x11
        0xa2, 0x00, 0x20,       // mov [0x2000], al
        0xf4,                   // hlt
    ];
    const DATA: u64 = 0x2000;
    let mut g = Guest::new(ctx)?;
    g.enter_real_mode(CODE)?;
    for i in 0..ctx.iters(16) {
        let at = |e: String| format!("iteration {i}: {e}");
        let answer = 0x80 | i as u8;
        g.expect_out("out 0x10", 0x10, &[0x42]).map_err(at)?;
        g.expect("in 0x11", "IoIn(0x11, 1 byte)", |e| match e {
            VcpuExit::IoIn(0x11, d) if d.len() == 1 => {
                d[0] = answer;
                true
            }
            _ => false,
        })
        .map_err(at)?;
        g.expect_hlt_at("hlt", GUEST_CODE + CODE.len() as u64)
            .map_err(at)?;
        let got = g.read_u8(DATA);
        if got != answer {
            return Err(at(format!(
                "guest stored {got:#x} at {DATA:#x}, want the IoIn answer {answer:#x}"
            )));
        }
        let rax = g.regs().map_err(at)?.rax;
        if rax & 0xff != answer as u64 {
            return Err(at(format!(
                "al {:#x} after in, want {answer:#x}",
                rax & 0xff
            )));
        }
        g.write(DATA, &[0]);
        g.set_rip(GUEST_CODE).map_err(at)?;
    }
    Ok(())
}

fn run_long_mode_exits(ctx: &Ctx) -> TestResult {
    const PIO: u32 = 0x1234_5678;
    const MMIO_W: u64 = 0x1122_3344_5566_7788;
    const LSTAR: u64 = 0xffff_8000_89ab_cdef;
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xb8, 0x78, 0x56, 0x34, 0x12,   // mov eax, 0x12345678
        0xe7, 0x20,                     // out 0x20, eax
        0x31, 0xc0,                     // xor eax, eax
        0x31, 0xc9,                     // xor ecx, ecx
        0x0f, 0xa2,                     // cpuid
        0xe7, 0x21,                     // out 0x21, eax
        0x89, 0xd8,                     // mov eax, ebx
        0xe7, 0x21,                     // out 0x21, eax
        0x89, 0xd0,                     // mov eax, edx
        0xe7, 0x21,                     // out 0x21, eax
        0x89, 0xc8,                     // mov eax, ecx
        0xe7, 0x21,                     // out 0x21, eax
        0xbb, 0x00, 0x00, 0x00, 0x10,   // mov ebx, 0x10000000 (GUEST_MMIO)
        0x48, 0xb8, 0x88, 0x77, 0x66,   // movabs rax, 0x1122334455667788
        0x55, 0x44, 0x33, 0x22, 0x11,
        0x48, 0x89, 0x03,               // mov [rbx], rax
        0x8b, 0x43, 0x08,               // mov eax, [rbx + 8]
        0xe7, 0x22,                     // out 0x22, eax
        0xb9, 0x82, 0x00, 0x00, 0xc0,   // mov ecx, 0xc0000082 (MSR_LSTAR)
        0xb8, 0xef, 0xcd, 0xab, 0x89,   // mov eax, 0x89abcdef
        0xba, 0x00, 0x80, 0xff, 0xff,   // mov edx, 0xffff8000
        0x0f, 0x30,                     // wrmsr
        0x31, 0xc0,                     // xor eax, eax
        0x31, 0xd2,                     // xor edx, edx
        0x0f, 0x32,                     // rdmsr
        0xe7, 0x23,                     // out 0x23, eax
        0x89, 0xd0,                     // mov eax, edx
        0xe7, 0x23,                     // out 0x23, eax
        0xf4,                           // hlt
    ];
    let mut g = Guest::new(ctx)?;
    let leaf0 = *g
        .cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 0 && e.index == 0)
        .ok_or("get_supported_cpuid has no leaf 0")?;
    g.enter_long_mode(CODE)?;
    for i in 0..ctx.iters(4) {
        let at = |e: String| format!("iteration {i}: {e}");
        let mmio_r = 0xcafe_0000 | i as u32;
        g.expect_out_u32("out 0x20 (4 bytes)", 0x20, PIO)
            .map_err(at)?;
        for (reg, want) in [
            ("eax", leaf0.eax),
            ("ebx", leaf0.ebx),
            ("edx", leaf0.edx),
            ("ecx", leaf0.ecx),
        ] {
            g.expect_out_u32(&format!("cpuid(0).{reg}"), 0x21, want)
                .map_err(at)?;
        }
        g.expect(
            "mmio write",
            &format!("MmioWrite({GUEST_MMIO:#x}, {:x?})", MMIO_W.to_le_bytes()),
            |e| matches!(e, VcpuExit::MmioWrite(a, d) if *a == GUEST_MMIO && *d == MMIO_W.to_le_bytes()),
        )
        .map_err(at)?;
        g.expect(
            "mmio read",
            &format!("MmioRead({:#x}, 4 bytes)", GUEST_MMIO + 8),
            |e| match e {
                VcpuExit::MmioRead(a, d) if *a == GUEST_MMIO + 8 && d.len() == 4 => {
                    d.copy_from_slice(&mmio_r.to_le_bytes());
                    true
                }
                _ => false,
            },
        )
        .map_err(at)?;
        g.expect_out_u32("mmio read echo", 0x22, mmio_r)
            .map_err(at)?;
        g.expect_out_u32("rdmsr(LSTAR) low", 0x23, LSTAR as u32)
            .map_err(at)?;
        g.expect_out_u32("rdmsr(LSTAR) high", 0x23, (LSTAR >> 32) as u32)
            .map_err(at)?;
        g.expect_hlt_at("hlt", GUEST_CODE + CODE.len() as u64)
            .map_err(at)?;
        let r = g.regs().map_err(at)?;
        if (r.rbx, r.rcx, r.rax) != (GUEST_MMIO, MSR_LSTAR as u64, LSTAR >> 32) {
            return Err(at(format!(
                "rbx/rcx/rax {:#x}/{:#x}/{:#x} after hlt",
                r.rbx, r.rcx, r.rax
            )));
        }
        // The guest's WRMSR is what the VMM reads.
        let got = get_msr_values(&g.vcpu, &[MSR_LSTAR]).map_err(at)?;
        if got != [LSTAR] {
            return Err(at(format!("get_msrs(LSTAR) {got:x?}, want {LSTAR:#x}")));
        }
        set_msr_values(&g.vcpu, &[(MSR_LSTAR, 0)]).map_err(at)?;
        g.set_rip(GUEST_CODE).map_err(at)?;
    }
    Ok(())
}

fn get_msr_values(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<u64>, String> {
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs = Msrs::from_entries(&entries).map_err(|e| format!("Msrs: {e:?}"))?;
    let n = get("get_msrs", vcpu.get_msrs(&mut msrs))?;
    if n != indices.len() {
        return Err(format!(
            "get_msrs({indices:x?}) did {n}, want {}",
            indices.len()
        ));
    }
    Ok(msrs.as_slice().iter().map(|e| e.data).collect())
}

fn set_msr_values(vcpu: &VcpuFd, vals: &[(u32, u64)]) -> TestResult {
    let entries: Vec<kvm_msr_entry> = vals
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| format!("Msrs: {e:?}"))?;
    let n = get("set_msrs", vcpu.set_msrs(&msrs))?;
    if n != vals.len() {
        return Err(format!("set_msrs({vals:x?}) did {n}, want {}", vals.len()));
    }
    Ok(())
}

fn msrs_index_list_and_round_trip(ctx: &Ctx) -> TestResult {
    // Stock KVM leaves EFER, FS_BASE and GS_BASE out of its list (the VMM
    // has them in the sregs) but still takes them in KVM_GET_MSRS and
    // KVM_SET_MSRS; rkvm lists them too.
    const SREGS_MSRS: [u32; 3] = [MSR_EFER, MSR_FS_BASE, MSR_GS_BASE];
    const LISTED: [(u32, &str); 14] = [
        (MSR_EFER, "EFER"),
        (MSR_STAR, "STAR"),
        (MSR_LSTAR, "LSTAR"),
        (MSR_CSTAR, "CSTAR"),
        (MSR_SFMASK, "SFMASK"),
        (MSR_KERNEL_GS_BASE, "KERNEL_GS_BASE"),
        (MSR_FS_BASE, "FS_BASE"),
        (MSR_GS_BASE, "GS_BASE"),
        (MSR_SYSENTER_CS, "SYSENTER_CS"),
        (MSR_SYSENTER_ESP, "SYSENTER_ESP"),
        (MSR_SYSENTER_EIP, "SYSENTER_EIP"),
        (MSR_TSC, "TSC"),
        (MSR_PAT, "PAT"),
        (MSR_MISC_ENABLE, "MISC_ENABLE"),
    ];
    let kvm = ctx.open()?;
    let list = get("get_msr_index_list", kvm.get_msr_index_list())?;
    let missing: Vec<&str> = LISTED
        .iter()
        .filter(|(i, _)| !list.as_slice().contains(i))
        .filter(|(i, _)| ctx.rkvm || !SREGS_MSRS.contains(i))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "get_msr_index_list ({} MSRs) lacks {}",
            list.as_slice().len(),
            missing.join(", ")
        ));
    }
    let vm = new_vm(&kvm)?;
    let vcpu = get("create_vcpu(0)", vm.create_vcpu(0))?;
    let all: Vec<u32> = LISTED.iter().map(|(i, _)| *i).collect();
    get_msr_values(&vcpu, &all)?;
    // Every entry a valid memory type (2 and 3 are reserved): WC in
    // entry 0, then the reset value.
    const PATS: [u64; 2] = [0x0007_0406_0007_0401, 0x0007_0406_0007_0406];
    for i in 0..ctx.iters(8) {
        let k = i as u64;
        let vals = [
            (MSR_STAR, 0x0023_0010_0000_0000 + (k << 32)),
            (MSR_LSTAR, 0xffff_ffff_8100_0000 + (k << 12)),
            (MSR_SFMASK, 0x4_7700 | (k & 1)),
            (MSR_PAT, PATS[i % 2]),
            (MSR_SYSENTER_CS, 0x10 + 8 * k),
        ];
        set_msr_values(&vcpu, &vals).map_err(|e| format!("iteration {i}: {e}"))?;
        let want: Vec<u64> = vals.iter().map(|(_, v)| *v).collect();
        let idx: Vec<u32> = vals.iter().map(|(i, _)| *i).collect();
        let got = get_msr_values(&vcpu, &idx).map_err(|e| format!("iteration {i}: {e}"))?;
        if got != want {
            return Err(format!(
                "iteration {i}: get_msrs {got:x?} after set_msrs {want:x?}"
            ));
        }
    }
    Ok(())
}

fn run_immediate_exit(ctx: &Ctx) -> TestResult {
    const CODE: &[u8] = &[0xf4]; // hlt
    let mut g = Guest::new(ctx)?;
    g.enter_real_mode(CODE)?;
    g.vcpu.set_kvm_immediate_exit(1);
    for i in 0..ctx.iters(8) {
        match g.vcpu.run() {
            Err(e) if e.errno() == libc::EINTR => {}
            Err(e) => {
                return Err(format!(
                    "run {i} with immediate_exit: {}, want EINTR",
                    ename(e.errno())
                ));
            }
            Ok(exit) => {
                return Err(format!(
                    "run {i} with immediate_exit: exit {exit:?}, want EINTR"
                ));
            }
        }
    }
    let rip = g.regs()?.rip;
    if rip != GUEST_CODE {
        return Err(format!(
            "rip {rip:#x} after immediate exits, want {GUEST_CODE:#x} (the guest ran)"
        ));
    }
    g.vcpu.set_kvm_immediate_exit(0);
    g.expect_hlt_at("run after clearing immediate_exit", GUEST_CODE + 1)
}

fn run_triple_fault_shutdown(ctx: &Ctx) -> TestResult {
    const CODE: &[u8] = &[0x0f, 0x0b]; // ud2: #UD, with IDT limit 0 -> #GP -> #DF -> triple fault
    let mut g = Guest::new(ctx)?;
    g.enter_long_mode(CODE)?;
    g.expect("ud2 with no IDT", "Shutdown", |e| {
        matches!(e, VcpuExit::Shutdown)
    })
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
    // KVM_CAP_IMMEDIATE_EXIT comes with a working KVM_RUN: without it the
    // guest-running tests are skipped.
    let runs_guests = match Kvm::new_with_path(&ctx.path) {
        Ok(kvm) => kvm.check_extension(Cap::ImmediateExit),
        Err(e) => {
            let why = ename(e.errno());
            if require {
                println!("Bail out! cannot open {}: {why}", ctx.dev);
                return ExitCode::from(KSFT_FAIL);
            }
            println!("1..0 # SKIP cannot open {}: {why}", ctx.dev);
            return ExitCode::from(KSFT_SKIP);
        }
    };
    println!("1..{}", TESTS.len());
    diag(&format!(
        "device {} ({}{})",
        ctx.dev,
        if ctx.rkvm { "rkvm" } else { "stock KVM" },
        if runs_guests {
            ""
        } else {
            ", cannot run guests"
        }
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
        if t.guest && !runs_guests {
            println!(
                "ok {n} {} # SKIP {} does not report KVM_CAP_IMMEDIATE_EXIT (no KVM_RUN)",
                t.name, ctx.dev
            );
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
