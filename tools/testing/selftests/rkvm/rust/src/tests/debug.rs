// SPDX-License-Identifier: GPL-2.0

//! KVM_SET_GUEST_DEBUG through `VcpuFd::set_guest_debug()`, as a VMM's
//! gdbstub drives it: single steps (over an OUT that exits to userspace
//! and a CPUID the kernel emulates) and a hardware instruction
//! breakpoint, each seen as `VcpuExit::Debug`.

use kvm_bindings::{
    KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, kvm_guest_debug,
    kvm_guest_debug_arch,
};
use kvm_ioctls::VcpuExit;

use crate::guest::{GUEST_CODE, Guest};
use crate::harness::{Ctx, TestResult};
use crate::util::get;

const DR6_BS: u64 = 1 << 14;
const DR6_B0: u64 = 1 << 0;
const RFLAGS_TF: u64 = 1 << 8;

fn set_debug(g: &Guest, control: u32, debugreg: [u64; 8]) -> TestResult {
    let dbg = kvm_guest_debug {
        control,
        pad: 0,
        arch: kvm_guest_debug_arch { debugreg },
    };
    get("set_guest_debug", g.vcpu.set_guest_debug(&dbg))
}

/// The vendor in the supported CPUID leaf 0 is AMD's ("Auth...").
fn host_is_amd(g: &Guest) -> bool {
    g.cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 0 && e.ebx == u32::from_le_bytes(*b"Auth"))
}

/// Runs to the next exit, which must be `VcpuExit::Debug` for #DB at `pc`
/// with all of `dr6_bits` in DR6. `last` is the pc of the previous stop:
/// on Intel a repeat of it with DR6.BS is run past (Bochs' VMX keeps the
/// single-step trap of an instruction that exited pending across the
/// exit; see guest_debug_test.c's run_step).
fn expect_db(g: &mut Guest, step: &str, pc: u64, dr6_bits: u64, last: &mut u64) -> TestResult {
    let prev = *last;
    let amd = host_is_amd(g);
    let mut repeat = false;
    let want = format!("Debug(exception 1, pc {pc:#x}, dr6 bits {dr6_bits:#x})");
    g.expect(step, &want, |e| match e {
        VcpuExit::Debug(d)
            if d.exception == 1 && d.pc == prev && d.dr6 & DR6_BS != 0 && pc != prev && !amd =>
        {
            repeat = true;
            true
        }
        VcpuExit::Debug(d) => d.exception == 1 && d.pc == pc && d.dr6 & dr6_bits == dr6_bits,
        _ => false,
    })?;
    if repeat {
        g.expect(step, &want, |e| {
            matches!(e, VcpuExit::Debug(d) if d.exception == 1 && d.pc == pc && d.dr6 & dr6_bits == dr6_bits)
        })?;
    }
    *last = pc;
    Ok(())
}

pub(crate) fn guest_debug_steps_and_breakpoint(ctx: &Ctx) -> TestResult {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x90,                           // nop
        0xb8, 0x42, 0x00, 0x00, 0x00,   // mov eax, 0x42
        0xe6, 0x10,                     // out 0x10, al
        0x31, 0xc0,                     // xor eax, eax
        0x0f, 0xa2,                     // cpuid
        0xbb, 0x01, 0x00, 0x00, 0x00,   // mov ebx, 1 (the breakpoint)
        0xf4,                           // hlt
    ];
    const BP: u64 = GUEST_CODE + 12;
    let mut g = Guest::new(ctx)?;
    g.enter_long_mode(CODE)?;
    // Up to the OUT without stepping: the guest's pages get mapped first
    // (Bochs' VMX reports a step before the instruction ran when the
    // instruction's first touch of a page exits; see guest_debug_test.c).
    g.expect_out("out 0x10", 0x10, &[0x42])?;
    // The step over the OUT ends once userspace has completed it.
    set_debug(&g, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, [0; 8])?;
    let mut last = 0;
    expect_db(&mut g, "step over out", GUEST_CODE + 8, DR6_BS, &mut last)?;
    expect_db(&mut g, "step over xor", GUEST_CODE + 10, DR6_BS, &mut last)?;
    // CPUID, emulated in the kernel: one step, right after it.
    expect_db(&mut g, "step over cpuid", BP, DR6_BS, &mut last)?;
    let regs = g.regs()?;
    if regs.rbx == 0 || regs.rbx == 1 {
        return Err(format!(
            "rbx {:#x} after cpuid(0), want the vendor",
            regs.rbx
        ));
    }
    if regs.rflags & RFLAGS_TF != 0 {
        return Err(format!(
            "rflags {:#x}: the debugger's TF shows",
            regs.rflags
        ));
    }
    // A hardware breakpoint on the next instruction (DR7.L0, execute):
    // a fault, before it runs.
    let mut dr = [0; 8];
    dr[0] = BP;
    dr[7] = 0x401;
    set_debug(&g, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, dr)?;
    last = 0;
    expect_db(&mut g, "hardware breakpoint", BP, DR6_B0, &mut last)?;
    if g.regs()?.rbx != regs.rbx {
        return Err("the instruction at the breakpoint ran".into());
    }
    // Debugging off: the guest runs to its end.
    set_debug(&g, 0, [0; 8])?;
    g.expect_hlt_at("hlt", GUEST_CODE + CODE.len() as u64)?;
    if g.regs()?.rbx != 1 {
        return Err("mov ebx, 1 did not run after the breakpoint".into());
    }
    Ok(())
}
