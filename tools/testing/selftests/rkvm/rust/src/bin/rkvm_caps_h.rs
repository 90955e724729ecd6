// SPDX-License-Identifier: GPL-2.0

//! rkvm_caps_h: prints `rkvm_caps.h`, rkvm's `KVM_CHECK_EXTENSION` table as
//! a C function, for the C selftests. The table is rkvm/caps.rs itself
//! (included by path, as the module and the host crate include it), so the
//! C selftests check the module against its own definition, not a copy.
//!
//! `check_extension(cap, online_cpus)` is evaluated for every capability
//! number up to `CAP_SCAN` and every host size up to `CPUS_SCAN`, and each
//! answer is written in the one of these forms that reproduces it exactly:
//! a constant or `min(online_cpus, K)`. A rule of another shape is refused (exit 1), so
//! a change to caps.rs that the generator cannot express fails the build
//! instead of testing something else.
//!
//! tools/rkvm/build-selftests.sh runs it on the build host.

#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../../rkvm/abi.rs"]
mod abi;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../../rkvm/caps.rs"]
mod caps;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../../rkvm/fpu.rs"]
mod fpu;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../../rkvm/memslot.rs"]
mod memslot;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../../rkvm/regs.rs"]
mod regs;
#[allow(dead_code, clippy::wrong_self_convention)]
#[path = "../../../../../../../rkvm/sregs.rs"]
mod sregs;
#[allow(dead_code)]
#[path = "../../../../../../../rkvm/arch.rs"]
mod arch;
// The KVM_CLOCK_* flags KVM_CAP_ADJUST_CLOCK answers (caps.rs).
#[allow(dead_code)]
#[path = "../../../../../../../rkvm/pvclock.rs"]
mod pvclock;

use std::fmt::Write;
use std::process::ExitCode;

/// Capability numbers examined (KVM's are below 300 today).
const CAP_SCAN: usize = 4096;
/// Host CPU counts examined.
const CPUS_SCAN: usize = 1024;

/// How one capability's answer depends on the host.
enum Rule {
    Const(isize),
    MinCpus(isize),
}

fn classify(cap: usize) -> Option<Rule> {
    let f = |cpus| caps::check_extension(cap, cpus);
    let all = |g: &dyn Fn(usize) -> isize| (1..=CPUS_SCAN).all(|n| f(n) == g(n));
    let one = f(1);
    if all(&|_| one) {
        return Some(Rule::Const(one));
    }
    let k = f(CPUS_SCAN);
    if k < CPUS_SCAN as isize && all(&|n| (n as isize).min(k)) {
        return Some(Rule::MinCpus(k));
    }
    None
}

fn main() -> ExitCode {
    let mut cases = String::new();
    for cap in 0..CAP_SCAN {
        let line = match classify(cap) {
            Some(Rule::Const(0)) => continue,
            Some(Rule::Const(v)) => format!("return {v};"),
            Some(Rule::MinCpus(k)) => {
                format!("return online_cpus < {k} ? online_cpus : {k};")
            }
            None => {
                eprintln!(
                    "rkvm_caps_h: capability {cap}: caps.rs has a rule this generator \
                     cannot write in C"
                );
                return ExitCode::FAILURE;
            }
        };
        writeln!(cases, "\tcase {cap}:\n\t\t{line}").unwrap();
    }
    if caps::check_extension(usize::MAX, 2) != 0 {
        eprintln!("rkvm_caps_h: caps.rs answers capability usize::MAX");
        return ExitCode::FAILURE;
    }
    print!(
        "/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Generated from rkvm/caps.rs by rkvm_caps_h (tools/testing/selftests/rkvm/
 * rust/src/bin/rkvm_caps_h.rs) at build time: do not edit.
 */
#ifndef SELFTEST_RKVM_CAPS_H
#define SELFTEST_RKVM_CAPS_H

/*
 * What rkvm's KVM_CHECK_EXTENSION answers for @cap, on the system fd and
 * on VM fds, on a host with @online_cpus CPUs.
 */
static inline long rkvm_expected_cap(unsigned long cap, long online_cpus)
{{
\t(void)online_cpus;
\tswitch (cap) {{
{cases}\tdefault:
\t\treturn 0;
\t}}
}}

#endif /* SELFTEST_RKVM_CAPS_H */
"
    );
    ExitCode::SUCCESS
}
