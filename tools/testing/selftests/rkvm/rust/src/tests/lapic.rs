// SPDX-License-Identifier: GPL-2.0

//! The in-kernel local APIC of KVM's split irqchip through the wrappers
//! rust-vmm's kvm-ioctls offers, as a Rust VMM with its own IOAPIC drives
//! it: `VmFd::enable_cap` with KVM_CAP_SPLIT_IRQCHIP, `VcpuFd::get_lapic`
//! and `set_lapic`, `VmFd::set_gsi_routing`, `signal_msi` and
//! `set_irq_line`. The table skips them where the device reports
//! KVM_CAP_SPLIT_IRQCHIP 0. The C program lapic_test covers the APIC
//! itself; these show the ABI a Rust VMM sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use kvm_bindings::{
    KVM_CAP_SPLIT_IRQCHIP, KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_enable_cap,
    kvm_irq_routing_entry, kvm_lapic_state, kvm_msi,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::guest::{GUEST_CODE, Guest};
use crate::harness::{Ctx, TestResult};
use crate::util::{ename, get};

/// The IOAPIC pins a VMM reserves (KVM_IOAPIC_NUM_PINS, QEMU's choice).
pub(crate) const IOAPIC_PINS: u64 = 24;

const APIC_ID: usize = 0x20;
const APIC_VER: usize = 0x30;
const APIC_TPR: usize = 0x80;
const APIC_PPR: usize = 0xa0;
pub(crate) const APIC_SVR: usize = 0xf0;
const APIC_LVTT: usize = 0x320;
const APIC_LVT0: usize = 0x350;
/// KVM's version register with a vCPU whose CPUID has x2APIC: version
/// 0x14, six LVT entries, directed EOI (lapic_test.c explains each part).
const KVM_APIC_VERSION: u32 = 0x0105_0014;

/// The MSI address of physical APIC ID 0.
const MSI_ADDR_0: u32 = 0xfee0_0000;
const PORT: u16 = 0xf1;
const VEC_MSI: u8 = 0x31;
/// Another priority class: nothing EOIs VEC_MSI, which stays in service.
const VEC_LINE: u8 = 0x41;
const GSI: u32 = 5;

pub(crate) fn enable_split(vm: &VmFd, pins: u64) -> Result<(), i32> {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        args: [pins, 0, 0, 0],
        ..Default::default()
    };
    vm.enable_cap(&cap).map_err(|e| e.errno())
}

fn expect_err(what: &str, r: Result<(), i32>, want: i32) -> TestResult {
    match r {
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: {}, want {}", ename(e), ename(want))),
        Ok(()) => Err(format!("{what}: succeeded, want {}", ename(want))),
    }
}

fn reg(s: &kvm_lapic_state, off: usize) -> u32 {
    let b = |i: usize| s.regs[off + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

pub(crate) fn set_reg(s: &mut kvm_lapic_state, off: usize, val: u32) {
    for (i, b) in val.to_le_bytes().into_iter().enumerate() {
        s.regs[off + i] = b as _;
    }
}

fn split_guest(ctx: &Ctx) -> Result<Guest, String> {
    Guest::with_vm_setup(ctx, |vm| {
        enable_split(vm, IOAPIC_PINS)
            .map_err(|e| format!("enable_cap(SPLIT_IRQCHIP): {}", ename(e)))?;
        expect_err(
            "a second enable_cap(SPLIT_IRQCHIP)",
            enable_split(vm, IOAPIC_PINS),
            libc::EEXIST,
        )
    })
}

/// `enable_cap` refusals, the APIC's reset state through `get_lapic`, and
/// a `set_lapic` read back.
pub(crate) fn split_irqchip_lapic_state(ctx: &Ctx) -> TestResult {
    let g = split_guest(ctx)?;
    expect_err(
        "enable_cap(SPLIT_IRQCHIP) after a vCPU",
        enable_split(&g.vm, IOAPIC_PINS),
        libc::EEXIST,
    )?;
    let s = get("get_lapic", g.vcpu.get_lapic())?;
    let want = [
        ("ID", APIC_ID, 0),
        ("version", APIC_VER, KVM_APIC_VERSION),
        ("SVR", APIC_SVR, 0xff),
        ("TPR", APIC_TPR, 0),
        ("LVT timer", APIC_LVTT, 0x1_0000),
        // The BSP's LINT0 delivers ExtINT (KVM_X86_QUIRK_LINT0_REENABLED).
        ("LVT LINT0", APIC_LVT0, 0x700),
    ];
    for (name, off, val) in want {
        if reg(&s, off) != val {
            return Err(format!("reset {name}: {:#x}, want {val:#x}", reg(&s, off)));
        }
    }
    let mut s = s;
    set_reg(&mut s, APIC_TPR, 0x50);
    set_reg(&mut s, APIC_SVR, 0x1ff);
    get("set_lapic", g.vcpu.set_lapic(&s))?;
    let t = get("get_lapic", g.vcpu.get_lapic())?;
    for (name, off, val) in [
        ("TPR", APIC_TPR, 0x50),
        ("PPR", APIC_PPR, 0x50),
        ("SVR", APIC_SVR, 0x1ff),
    ] {
        if reg(&t, off) != val {
            return Err(format!(
                "after set_lapic, {name}: {:#x}, want {val:#x}",
                reg(&t, off)
            ));
        }
    }
    Ok(())
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// A no-op SIGUSR1 handler without SA_RESTART: the signal only ends a
/// KVM_RUN blocked in the kernel.
fn install_kick_handler() -> TestResult {
    // SAFETY: a zeroed sigaction with a handler that does nothing is valid;
    // sigemptyset and sigaction only read and write the struct passed.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err("sigaction(SIGUSR1) failed".into());
    }
    Ok(())
}

/// Runs the vCPU, sending each byte it writes to `port`; anything else
/// (an error, EINTR from a kick) ends it, and so does the byte `last`.
fn run_reporting(
    vcpu: &mut VcpuFd,
    port: u16,
    last: Option<u8>,
    tid: &AtomicU64,
    tx: Sender<Result<u8, String>>,
) {
    // SAFETY: pthread_self has no preconditions.
    tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
    loop {
        let msg = match vcpu.run() {
            Ok(VcpuExit::IoOut(p, data)) if p == port && data.len() == 1 => Ok(data[0]),
            Ok(exit) => Err(format!("exit {exit:?}")),
            Err(e) => Err(format!("KVM_RUN: {}", ename(e.errno()))),
        };
        let end = msg.is_err() || msg.as_ref().ok().copied() == last;
        let _ = tx.send(msg);
        if end {
            return;
        }
    }
}

/// Runs `vcpu` on a thread of its own (`run_reporting`) while `drive`
/// gets what it reports; then, since a vCPU the hypervisor never woke
/// (or one halted for good) stays in KVM_RUN, signals it until it ends.
pub(crate) fn with_reporting_vcpu(
    vcpu: &mut VcpuFd,
    port: u16,
    last: Option<u8>,
    drive: impl FnOnce(&Receiver<Result<u8, String>>) -> TestResult,
) -> TestResult {
    install_kick_handler()?;
    let tid = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel();
    thread::scope(|sc| {
        let h = sc.spawn(|| run_reporting(vcpu, port, last, &tid, tx));
        let res = drive(&rx);
        while !h.is_finished() {
            let t = tid.load(Ordering::SeqCst);
            if t != 0 {
                // SAFETY: `t` is the vCPU thread, which is still running
                // (the scope has not joined it).
                unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = h.join();
        res
    })
}

/// A routing table with one entry: `gsi` to an edge MSI of `vec` for
/// APIC ID 0.
pub(crate) fn msi_route(gsi: u32, vec: u8) -> Result<KvmIrqRouting, String> {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = MSI_ADDR_0;
    e.u.msi.data = vec.into();
    KvmIrqRouting::from_entries(&[e]).map_err(|e| format!("KvmIrqRouting: {e:?}"))
}

fn wait_for(rx: &Receiver<Result<u8, String>>, want: u8) -> TestResult {
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(v)) if v == want => Ok(()),
        Ok(Ok(v)) => Err(format!("the guest reported vector {v:#x}, want {want:#x}")),
        Ok(Err(e)) => Err(e),
        Err(RecvTimeoutError::Timeout) => Err(format!("vector {want:#x} never arrived")),
        Err(RecvTimeoutError::Disconnected) => Err("the vCPU thread ended".into()),
    }
}

/// The host side: the vCPU is halted in the kernel (no exit for 100 ms);
/// `signal_msi` wakes it, then a GSI routed to an MSI by `set_gsi_routing`
/// through `set_irq_line`.
fn drive(vm: &VmFd, rx: &Receiver<Result<u8, String>>) -> TestResult {
    thread::sleep(Duration::from_millis(100));
    if let Ok(r) = rx.try_recv() {
        return Err(format!("KVM_RUN returned while the vCPU halted: {r:?}"));
    }
    let msi = kvm_msi {
        address_lo: MSI_ADDR_0,
        data: VEC_MSI.into(),
        ..Default::default()
    };
    let n = get("signal_msi", vm.signal_msi(msi))?;
    if n != 1 {
        return Err(format!("signal_msi delivered to {n} APICs, want 1"));
    }
    wait_for(rx, VEC_MSI)?;
    match vm.signal_msi(kvm_msi { flags: 2, ..msi }) {
        Err(e) if e.errno() == libc::EINVAL => {}
        other => return Err(format!("signal_msi with flags 2: {other:?}, want EINVAL")),
    }
    get(
        "set_gsi_routing",
        vm.set_gsi_routing(&msi_route(GSI, VEC_LINE)?),
    )?;
    get("set_irq_line(5, 1)", vm.set_irq_line(GSI, true))?;
    wait_for(rx, VEC_LINE)?;
    get("set_irq_line(5, 0)", vm.set_irq_line(GSI, false))
}

/// A halted real-mode guest with an APIC enabled by `set_lapic` is woken
/// in the kernel by `signal_msi` and by `set_irq_line` on a routed GSI;
/// its handlers report by OUT.
pub(crate) fn split_irqchip_msi_wakes_halted_vcpu(ctx: &Ctx) -> TestResult {
    let mut g = split_guest(ctx)?;
    let mut s = get("get_lapic", g.vcpu.get_lapic())?;
    set_reg(&mut s, APIC_SVR, 0x1ff);
    get("set_lapic", g.vcpu.set_lapic(&s))?;
    // sti; 1: hlt; jmp 1b, and at +0x10, +0x20: mov $vec, %al; out %al, $PORT; iret.
    let mut code = vec![0xfb, 0xf4, 0xeb, 0xfd];
    for vec in [VEC_MSI, VEC_LINE] {
        code.resize(code.len().next_multiple_of(16), 0x90);
        code.extend_from_slice(&[0xb0, vec, 0xe6, PORT as u8, 0xcf]);
    }
    g.enter_real_mode(&code)?;
    // Real-mode vectors (segment 0, offset GUEST_CODE + 0x10 * n).
    for (n, vec) in [(1, VEC_MSI), (2, VEC_LINE)] {
        let off = (GUEST_CODE + 0x10 * n) as u16;
        g.write(
            u64::from(vec) * 4,
            &[off.to_le_bytes()[0], off.to_le_bytes()[1], 0, 0],
        );
    }
    let vm = &g.vm;
    with_reporting_vcpu(&mut g.vcpu, PORT, Some(VEC_LINE), |rx| drive(vm, rx))
}
