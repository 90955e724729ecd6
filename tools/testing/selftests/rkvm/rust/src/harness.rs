// SPDX-License-Identifier: GPL-2.0

//! The test harness: a table of tests, each run in turn with panics caught,
//! printed as kselftest TAP (`TAP version 13`, `1..N`, `ok N name`,
//! `not ok N name # why`, `ok N name # SKIP why`, `# totals: ...`), which
//! is what tools/rkvm/guest/init prefixes with the suite name and
//! tools/rkvm/check.sh counts. (libtest-mimic, the usual crate for custom
//! test harnesses, prints libtest's format, not TAP.)

use std::ffi::CString;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;

use kvm_ioctls::Kvm;

use crate::util::ename;

pub(crate) const KSFT_FAIL: u8 = 1;
pub(crate) const KSFT_SKIP: u8 = 4;

pub(crate) type TestResult = Result<(), String>;

pub(crate) struct Ctx {
    pub(crate) dev: String,
    pub(crate) path: CString,
    /// True unless the device's file name is "kvm" (stock KVM).
    pub(crate) rkvm: bool,
    /// Divisor of the stress loops' iteration counts (>= 1).
    pub(crate) scale: usize,
}

impl Ctx {
    /// `n` iterations, divided by `--scale`, at least one.
    pub(crate) fn iters(&self, n: usize) -> usize {
        (n / self.scale).max(1)
    }

    pub(crate) fn open(&self) -> Result<Kvm, String> {
        Kvm::new_with_path(&self.path)
            .map_err(|e| format!("open {}: {}", self.dev, ename(e.errno())))
    }
}

pub(crate) struct Test {
    pub(crate) name: &'static str,
    pub(crate) func: fn(&Ctx) -> TestResult,
    pub(crate) rkvm_only: bool,
    /// Runs guest code (KVM_RUN) or needs a backend that can: skipped
    /// where the device does not report KVM_CAP_IMMEDIATE_EXIT (rkvm on a
    /// host whose backend cannot run guests yet).
    pub(crate) guest: bool,
    /// Skipped where the device reports 0 for this capability (a feature
    /// rkvm does not offer yet).
    pub(crate) needs: Option<kvm_ioctls::Cap>,
}

/// TAP diagnostic line.
pub(crate) fn diag(msg: &str) {
    println!("# {msg}");
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown payload".into())
}

/// Runs `tests` on `ctx` and prints TAP; the process exit code.
/// `require`: a device that cannot be opened is a failure, not a skip.
pub(crate) fn run(tests: &[Test], ctx: &Ctx, require: bool) -> ExitCode {
    println!("TAP version 13");
    // KVM_CAP_IMMEDIATE_EXIT comes with a working KVM_RUN: without it the
    // guest-running tests are skipped.
    let kvm = match Kvm::new_with_path(&ctx.path) {
        Ok(kvm) => kvm,
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
    let runs_guests = kvm.check_extension(kvm_ioctls::Cap::ImmediateExit);
    println!("1..{}", tests.len());
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
    for (i, t) in tests.iter().enumerate() {
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
        if let Some(cap) = t.needs.filter(|&cap| !kvm.check_extension(cap)) {
            println!(
                "ok {n} {} # SKIP {} does not report {cap:?}",
                t.name, ctx.dev
            );
            skip += 1;
            continue;
        }
        let res = panic::catch_unwind(AssertUnwindSafe(|| (t.func)(ctx)))
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
