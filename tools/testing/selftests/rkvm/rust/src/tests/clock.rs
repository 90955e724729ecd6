// SPDX-License-Identifier: GPL-2.0

//! The VM's kvmclock through kvm-ioctls' own wrappers (`VmFd::get_clock`,
//! `VmFd::set_clock`): KVM_CAP_ADJUST_CLOCK names the three KVM_CLOCK_*
//! flags; the clock never goes backwards; a value set comes back plus the
//! little time since (forwards and backwards); what KVM_GET_CLOCK gave
//! goes back in; unknown flags are EINVAL and change nothing; the flags
//! reported are true (realtime near the host's CLOCK_REALTIME, host_tsc
//! within the host TSC read around the call).

use std::os::raw::c_ulong;

use kvm_bindings::{
    kvm_clock_data, KVM_CAP_ADJUST_CLOCK, KVM_CLOCK_HOST_TSC, KVM_CLOCK_REALTIME,
    KVM_CLOCK_TSC_STABLE,
};

use crate::harness::{Ctx, TestResult, diag};
use crate::util::{check_ext, ename, get, new_vm};

const SEC: u64 = 1_000_000_000;
/// How far a clock read may be past the value set just before: emulated
/// hosts are slow and noisy.
const SLACK: u64 = 5 * SEC;

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * SEC + ts.tv_nsec as u64
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory-safety preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn within(what: &str, got: u64, set: u64) -> TestResult {
    if got < set || got - set > SLACK {
        return Err(format!("{what}: clock {got} after setting {set}"));
    }
    Ok(())
}

pub(crate) fn clock_get_set_round_trip(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    let all = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
    let cap = check_ext("ADJUST_CLOCK", &kvm, KVM_CAP_ADJUST_CLOCK as c_ulong)?;
    if cap as u32 != all {
        return Err(format!("KVM_CAP_ADJUST_CLOCK = {cap:#x}, want {all:#x}"));
    }
    let vm = new_vm(&kvm)?;
    let (t0, r0) = (rdtsc(), realtime_ns());
    let c0 = get("get_clock", vm.get_clock())?;
    let (t1, r1) = (rdtsc(), realtime_ns());
    diag(&format!("clock {} ns, flags {:#x}", c0.clock, c0.flags));
    if c0.flags & !all != 0 {
        return Err(format!("unknown flags {:#x}", c0.flags));
    }
    if c0.flags & KVM_CLOCK_REALTIME != 0 && (c0.realtime + SLACK < r0 || c0.realtime > r1 + SLACK) {
        return Err(format!("realtime {} outside [{r0}, {r1}]", c0.realtime));
    }
    if c0.flags & KVM_CLOCK_HOST_TSC != 0 && (c0.host_tsc < t0 || c0.host_tsc > t1) {
        return Err(format!("host_tsc {} outside [{t0}, {t1}]", c0.host_tsc));
    }
    // A new VM's clock counts from about its creation.
    if c0.clock > 60 * SEC {
        return Err(format!("a new VM's clock is {} ns", c0.clock));
    }
    let mut last = c0.clock;
    for _ in 0..ctx.iters(100) {
        let c = get("get_clock", vm.get_clock())?.clock;
        if c < last {
            return Err(format!("clock went back from {last} to {c}"));
        }
        last = c;
    }
    for target in [c0.clock + 3600 * SEC, SEC] {
        let set = kvm_clock_data { clock: target, ..Default::default() };
        get("set_clock", vm.set_clock(&set))?;
        within("set_clock", get("get_clock", vm.get_clock())?.clock, target)?;
    }
    // What KVM_GET_CLOCK gave is taken back, flags and all.
    let d = get("get_clock", vm.get_clock())?;
    get("set_clock(get_clock())", vm.set_clock(&d))?;
    within("set_clock(get_clock())", get("get_clock", vm.get_clock())?.clock, d.clock)?;
    for flags in [1, 1 << 4, 1 << 31] {
        let bad = kvm_clock_data { clock: 100 * 3600 * SEC, flags, ..Default::default() };
        match vm.set_clock(&bad) {
            Err(e) if e.errno() == libc::EINVAL => {}
            Err(e) => return Err(format!("set_clock(flags {flags:#x}): {}", ename(e.errno()))),
            Ok(()) => return Err(format!("set_clock(flags {flags:#x}) succeeded")),
        }
    }
    within("after refused sets", get("get_clock", vm.get_clock())?.clock, d.clock)
}
