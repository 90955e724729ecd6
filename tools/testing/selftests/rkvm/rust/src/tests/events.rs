// SPDX-License-Identifier: GPL-2.0

//! A vCPU's events and the state around them, through the wrappers rust-vmm's
//! kvm-ioctls offers (`VcpuFd::nmi`, `get/set_vcpu_events`,
//! `get/set_debug_regs`, `get/set_mp_state`, `get/set_tsc_khz`), as a Rust
//! VMM saving and restoring a vCPU calls them: round trips, and what the
//! kernel refuses.

use kvm_bindings::{
    kvm_debugregs, kvm_mp_state, KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW, KVM_VCPUEVENT_VALID_SMM,
};

use crate::guest::Guest;
use crate::harness::{Ctx, TestResult};
use crate::util::{ename, get};

/// `KVM_NMI` shows as a pending NMI in the vCPU's events; setting the
/// events back takes it away; the flags are KVM's.
pub(crate) fn vcpu_events_round_trip(ctx: &Ctx) -> TestResult {
    let g = Guest::new(ctx)?;
    let e = get("get_vcpu_events", g.vcpu.get_vcpu_events())?;
    let reported =
        KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
    if e.flags != reported || e.nmi.pending != 0 || e.nmi.injected != 0 || e.exception.injected != 0 {
        return Err(format!("a new vCPU's events: {e:?}"));
    }
    get("nmi", g.vcpu.nmi())?;
    let mut e = get("get_vcpu_events", g.vcpu.get_vcpu_events())?;
    if e.nmi.pending != 1 {
        return Err(format!("after KVM_NMI: nmi.pending {}, want 1", e.nmi.pending));
    }
    e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING;
    e.nmi.pending = 0;
    get("set_vcpu_events", g.vcpu.set_vcpu_events(&e))?;
    let e = get("get_vcpu_events", g.vcpu.get_vcpu_events())?;
    if e.nmi.pending != 0 {
        return Err(format!("set without the NMI: nmi.pending {}", e.nmi.pending));
    }
    // An exception vector past 31 is refused.
    let mut bad = e;
    bad.exception.injected = 1;
    bad.exception.nr = 32;
    match g.vcpu.set_vcpu_events(&bad) {
        Err(err) if err.errno() == libc::EINVAL => Ok(()),
        other => Err(format!("exception 32: {other:?}, want EINVAL")),
    }
}

/// Debug registers, the MP state and the TSC rate round-trip; bad values
/// are `EINVAL`.
pub(crate) fn vcpu_state_round_trips(ctx: &Ctx) -> TestResult {
    let g = Guest::new(ctx)?;
    let d = get("get_debug_regs", g.vcpu.get_debug_regs())?;
    if d.dr6 != 0xffff_0ff0 || d.dr7 != 0x400 || d.db != [0; 4] {
        return Err(format!("a new vCPU's debug registers: {d:?}"));
    }
    let set = kvm_debugregs {
        db: [0x1000, 0x2000, 0x3000, 0x4000],
        dr6: 0xffff_0ff0,
        dr7: 0x400,
        ..Default::default()
    };
    get("set_debug_regs", g.vcpu.set_debug_regs(&set))?;
    let d = get("get_debug_regs", g.vcpu.get_debug_regs())?;
    if d.db != set.db || d.dr6 != set.dr6 || d.dr7 != set.dr7 {
        return Err(format!("debug registers: set {set:?}, got {d:?}"));
    }
    let flagged = kvm_debugregs { flags: 1, ..set };
    match g.vcpu.set_debug_regs(&flagged) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => return Err(format!("debug registers with flags: {other:?}, want EINVAL")),
    }

    let mp = get("get_mp_state", g.vcpu.get_mp_state())?;
    if mp.mp_state != KVM_MP_STATE_RUNNABLE {
        return Err(format!("MP state {}, want runnable", mp.mp_state));
    }
    get("set_mp_state(runnable)", g.vcpu.set_mp_state(mp))?;
    let halted = kvm_mp_state {
        mp_state: KVM_MP_STATE_HALTED,
    };
    match g.vcpu.set_mp_state(halted) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => return Err(format!("MP state halted without an irqchip: {other:?}, want EINVAL")),
    }

    let khz = get("get_tsc_khz", g.vcpu.get_tsc_khz())?;
    if khz == 0 {
        return Err("get_tsc_khz: 0".into());
    }
    g.vcpu
        .set_tsc_khz(khz)
        .map_err(|e| format!("set_tsc_khz({khz}), the current rate: {}", ename(e.errno())))
}

/// `KVM_GET_XSAVE2` in the size `KVM_CAP_XSAVE2` reports (kvm-ioctls'
/// `VcpuFd::get_xsave2`) gives what `KVM_GET_XSAVE` gives, and that state
/// goes back in with `KVM_SET_XSAVE`.
pub(crate) fn xsave2_matches_xsave(ctx: &Ctx) -> TestResult {
    let g = Guest::new(ctx)?;
    let size = g.vm.check_extension_int(kvm_ioctls::Cap::Xsave2);
    let base = std::mem::size_of::<kvm_bindings::kvm_xsave>() as i32;
    if size < base {
        return Err(format!("KVM_CAP_XSAVE2 is {size}, less than struct kvm_xsave"));
    }
    // The wrapper's entries are the u32s past `struct kvm_xsave`.
    let extra = ((size - base) / 4) as usize;
    let mut x2 = kvm_bindings::Xsave::new(extra).map_err(|e| format!("Xsave::new: {e:?}"))?;
    // SAFETY: the buffer has the size KVM_CAP_XSAVE2 reported.
    get("get_xsave2", unsafe { g.vcpu.get_xsave2(&mut x2) })?;
    let x1 = get("get_xsave", g.vcpu.get_xsave())?;
    if x2.as_fam_struct_ref().xsave.region != x1.region {
        return Err("KVM_GET_XSAVE2 and KVM_GET_XSAVE differ".into());
    }
    // SAFETY: `x1` is a whole `struct kvm_xsave` as the kernel gave it.
    get("set_xsave", unsafe { g.vcpu.set_xsave(&x1) })?;
    Ok(())
}
