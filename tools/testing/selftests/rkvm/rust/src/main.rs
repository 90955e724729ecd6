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
//! The device is `--dev PATH`, else `$RKVM_DEV` (as for the C selftests),
//! else /dev/rkvm.
//! `--scale N` divides the stress loops' iteration counts by N (for slow
//! emulated hosts and for stock KVM, whose VM creation costs far more under
//! emulation); every check still runs.
//! Exit: 0 all passed, 1 a test failed (or --require and no device),
//! 4 (KSFT_SKIP) device cannot be opened.
//!
//! Layout: `harness` (the TAP runner), `util` (raw ioctls, errno names),
//! `guest` (the one guest setup: memory, real and long mode), `tests/`
//! (one file per area, the numbered table in `tests/mod.rs`), and the
//! module's `rkvm/caps.rs` (and the files it needs) included by path.

mod guest;
mod harness;
mod tests;
mod util;

// The module's own pure-logic files, included by path: the expected
// KVM_CHECK_EXTENSION answers are rkvm/caps.rs's, not a copy of them.
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../rkvm/abi.rs"]
mod abi;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../rkvm/caps.rs"]
mod caps;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../rkvm/memslot.rs"]
mod memslot;
// What abi.rs needs for the vCPU ioctl numbers (structure sizes).
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../rkvm/fpu.rs"]
mod fpu;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../rkvm/regs.rs"]
mod regs;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../rkvm/sregs.rs"]
mod sregs;
#[allow(dead_code)]
#[path = "../../../../../../rkvm/arch.rs"]
mod arch;
// The KVM_CLOCK_* flags KVM_CAP_ADJUST_CLOCK answers (caps.rs).
#[allow(dead_code)]
#[path = "../../../../../../rkvm/pvclock.rs"]
mod pvclock;

use std::ffi::CString;
use std::path::Path;
use std::process::ExitCode;

use harness::Ctx;

/// The device when neither --dev nor $RKVM_DEV names one.
const DEFAULT_DEV: &str = "/dev/rkvm";

fn usage() -> ExitCode {
    eprintln!("usage: rkvm_rust_selftest [--dev PATH] [--require] [--scale N]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // $RKVM_DEV picks the device as for the C selftests; --dev overrides it.
    let mut dev = std::env::var("RKVM_DEV")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_DEV.to_string());
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
    harness::run(tests::TESTS, &ctx, require)
}
