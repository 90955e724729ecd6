// SPDX-License-Identifier: GPL-2.0

//! KVM_IOEVENTFD and KVM_IRQFD through the wrappers rust-vmm's kvm-ioctls
//! offers (`VmFd::register_ioevent`/`unregister_ioevent`,
//! `register_irqfd`/`unregister_irqfd`) with vmm-sys-util's `EventFd`, as
//! a Rust VMM with virtio devices uses them. The table skips them where
//! the device reports KVM_CAP_IOEVENTFD or KVM_CAP_IRQFD 0. The C program
//! eventfd_test covers the rules; these show the ABI a Rust VMM sees.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VcpuExit, VmFd};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::lapic::{APIC_SVR, IOAPIC_PINS, enable_split, msi_route, set_reg, with_reporting_vcpu};
use super::msr::set_msr_values;
use crate::guest::{GUEST_CODE, GUEST_MMIO, Guest};
use crate::harness::{Ctx, TestResult};
use crate::util::{ename, get};

/// Doorbells (ioeventfds) and the guest's last port, which exits.
const PORT_DOOR: u16 = 0xf4;
const PORT_DONE: u16 = 0xf5;
const VALUE: u8 = 0x42;
/// KVM_CAP_IOEVENTFD_ANY_LENGTH (kvm-ioctls' `Cap` has no name for it).
const CAP_IOEVENTFD_ANY_LENGTH: u64 = 122;

fn new_eventfd() -> Result<EventFd, String> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))
}

/// The counter (reset by the read), 0 if it was 0.
fn take(e: &EventFd) -> Result<u64, String> {
    match e.read() {
        Ok(n) => Ok(n),
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
        Err(err) => Err(format!("eventfd read: {err}")),
    }
}

fn expect_errno(what: &str, r: Result<(), kvm_ioctls::Error>, want: i32) -> TestResult {
    match r {
        Err(e) if e.errno() == want => Ok(()),
        Err(e) => Err(format!(
            "{what}: {}, want {}",
            ename(e.errno()),
            ename(want)
        )),
        Ok(()) => Err(format!("{what}: succeeded, want {}", ename(want))),
    }
}

/// 64-bit guest: `n` times OUT of VALUE to PORT_DOOR and a 4-byte MOV of
/// it to GUEST_MMIO, then OUT to PORT_DONE and HLT.
fn doorbell_code(n: u32) -> Vec<u8> {
    let mut code = vec![0xb8, VALUE, 0, 0, 0, 0xb9]; // mov $VALUE, %eax; mov $n, %ecx
    code.extend_from_slice(&n.to_le_bytes());
    code.extend_from_slice(&[0xe6, PORT_DOOR as u8]); // 1: out %al, $PORT_DOOR
    code.extend_from_slice(&[0x89, 0x04, 0x25]); // mov %eax, GUEST_MMIO
    code.extend_from_slice(&(GUEST_MMIO as u32).to_le_bytes());
    code.extend_from_slice(&[0xe2, 0xf5]); // loop 1b
    code.extend_from_slice(&[0xe6, PORT_DONE as u8, 0xf4]); // out %al, $PORT_DONE; hlt
    code
}

/// Runs `doorbell_code(n)`, which must leave KVM_RUN only at PORT_DONE,
/// and checks that each eventfd counted `n` writes.
fn run_doorbells(g: &mut Guest, n: u32, what: &str, pio: &EventFd, mmio: &EventFd) -> TestResult {
    g.enter_long_mode(&doorbell_code(n))?;
    g.expect_out(&format!("{what} doorbells"), PORT_DONE, &[VALUE])?;
    for (bus, e) in [("pio", pio), ("mmio", mmio)] {
        let got = take(e)?;
        if got != u64::from(n) {
            return Err(format!("{what} {bus} eventfd counted {got}, want {n}"));
        }
    }
    Ok(())
}

/// Port and MMIO doorbells with a datamatch absorb the guest's writes
/// (the eventfds count them, KVM_RUN returns only at PORT_DONE); once
/// unregistered, the same writes exit. With KVM_CAP_IOEVENTFD_ANY_LENGTH,
/// `NoDatamatch` (length 0: any width) does the same.
pub(crate) fn ioeventfd_doorbells(ctx: &Ctx) -> TestResult {
    let mut g = Guest::new(ctx)?;
    let n = ctx.iters(500) as u32;
    let (pio, mmio) = (new_eventfd()?, new_eventfd()?);
    let pio_addr = IoEventAddress::Pio(PORT_DOOR.into());
    let mmio_addr = IoEventAddress::Mmio(GUEST_MMIO);
    get(
        "register_ioevent(pio)",
        g.vm.register_ioevent(&pio, &pio_addr, VALUE),
    )?;
    get(
        "register_ioevent(mmio)",
        g.vm.register_ioevent(&mmio, &mmio_addr, u32::from(VALUE)),
    )?;
    expect_errno(
        "register_ioevent twice",
        g.vm.register_ioevent(&pio, &pio_addr, VALUE),
        libc::EEXIST,
    )?;
    run_doorbells(&mut g, n, "datamatch", &pio, &mmio)?;

    get(
        "unregister_ioevent(pio)",
        g.vm.unregister_ioevent(&pio, &pio_addr, VALUE),
    )?;
    get(
        "unregister_ioevent(mmio)",
        g.vm.unregister_ioevent(&mmio, &mmio_addr, u32::from(VALUE)),
    )?;
    expect_errno(
        "unregister_ioevent twice",
        g.vm.unregister_ioevent(&pio, &pio_addr, VALUE),
        libc::ENOENT,
    )?;
    g.enter_long_mode(&doorbell_code(1))?;
    g.expect_out("unregistered port", PORT_DOOR, &[VALUE])?;
    g.expect(
        "unregistered MMIO",
        "MmioWrite(GUEST_MMIO, 4 bytes)",
        |e| matches!(e, VcpuExit::MmioWrite(a, d) if *a == GUEST_MMIO && d[..] == [VALUE, 0, 0, 0]),
    )?;
    g.expect_out("done", PORT_DONE, &[VALUE])?;
    if take(&pio)? != 0 || take(&mmio)? != 0 {
        return Err("an unregistered ioeventfd was signalled".into());
    }

    if g.vm.check_extension_raw(CAP_IOEVENTFD_ANY_LENGTH) > 0 {
        get(
            "register_ioevent(pio, NoDatamatch)",
            g.vm.register_ioevent(&pio, &pio_addr, NoDatamatch),
        )?;
        get(
            "register_ioevent(mmio, NoDatamatch)",
            g.vm.register_ioevent(&mmio, &mmio_addr, NoDatamatch),
        )?;
        run_doorbells(&mut g, n, "any-length", &pio, &mmio)?;
        get(
            "unregister_ioevent(pio, NoDatamatch)",
            g.vm.unregister_ioevent(&pio, &pio_addr, NoDatamatch),
        )?;
        get(
            "unregister_ioevent(mmio, NoDatamatch)",
            g.vm.unregister_ioevent(&mmio, &mmio_addr, NoDatamatch),
        )?;
    }
    Ok(())
}

const PORT_REPORT: u16 = 0xf1;
const VEC: u8 = 0x51;
/// Past the IOAPIC's pins: an edge MSI, no EOI exits.
const GSI: u32 = 40;
const MSR_APIC_BASE: u32 = 0x1b;
/// Enabled, x2APIC mode, BSP, at the default base.
const APIC_BASE_X2APIC_BSP: u64 = 0xfee0_0d00;

fn wait_report(rx: &Receiver<Result<u8, String>>, step: &str) -> TestResult {
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(VEC)) => Ok(()),
        Ok(Ok(v)) => Err(format!("{step}: the guest reported {v:#x}, want {VEC:#x}")),
        Ok(Err(e)) => Err(format!("{step}: {e}")),
        Err(RecvTimeoutError::Timeout) => Err(format!("{step}: no interrupt")),
        Err(RecvTimeoutError::Disconnected) => Err(format!("{step}: the vCPU thread ended")),
    }
}

fn quiet(rx: &Receiver<Result<u8, String>>, step: &str) -> TestResult {
    match rx.recv_timeout(Duration::from_millis(100)) {
        Err(RecvTimeoutError::Timeout) => Ok(()),
        other => Err(format!("{step}: {other:?}, want nothing")),
    }
}

/// The host side of `irqfd_injects_msi`.
fn drive(vm: &VmFd, rx: &Receiver<Result<u8, String>>) -> TestResult {
    let e = new_eventfd()?;
    get("register_irqfd", vm.register_irqfd(&e, GSI))?;
    expect_errno(
        "register_irqfd twice",
        vm.register_irqfd(&e, GSI),
        libc::EBUSY,
    )?;
    for i in 0..3 {
        e.write(1).map_err(|err| format!("eventfd write: {err}"))?;
        wait_report(rx, &format!("write {i}"))?;
    }
    quiet(rx, "after three")?;
    if take(&e)? != 0 {
        return Err("KVM left a count in the irqfd".into());
    }
    get("unregister_irqfd", vm.unregister_irqfd(&e, GSI))?;
    e.write(1).map_err(|err| format!("eventfd write: {err}"))?;
    quiet(rx, "unregistered")?;
    if take(&e)? != 1 {
        return Err("an unregistered irqfd's count did not stay".into());
    }
    get("register_irqfd again", vm.register_irqfd(&e, GSI))?;
    e.write(1).map_err(|err| format!("eventfd write: {err}"))?;
    wait_report(rx, "registered again")
}

/// A halted real-mode guest with its APIC in x2APIC mode, enabled by
/// `set_lapic`, and GSI 40 routed to an MSI: each write of the irqfd's
/// eventfd runs its handler, which EOIs and reports by OUT; unregistered,
/// a write does nothing.
pub(crate) fn irqfd_injects_msi(ctx: &Ctx) -> TestResult {
    let mut g = Guest::with_vm_setup(ctx, |vm| {
        enable_split(vm, IOAPIC_PINS)
            .map_err(|e| format!("enable_cap(SPLIT_IRQCHIP): {}", ename(e)))
    })?;
    // x2APIC, so that the real-mode handler can EOI (by WRMSR: the xAPIC
    // page is out of its reach); the APIC software-enabled.
    let mut cpuid = g.cpuid.clone();
    for e in cpuid.as_mut_slice().iter_mut().filter(|e| e.function == 1) {
        e.ecx |= 1 << 21;
    }
    get("set_cpuid2", g.vcpu.set_cpuid2(&cpuid))?;
    set_msr_values(&g.vcpu, &[(MSR_APIC_BASE, APIC_BASE_X2APIC_BSP)])?;
    let mut s = get("get_lapic", g.vcpu.get_lapic())?;
    set_reg(&mut s, APIC_SVR, 0x1ff);
    get("set_lapic", g.vcpu.set_lapic(&s))?;
    // sti; 1: hlt; jmp 1b, and at +0x10: EOI (WRMSR 0x80b of 0), then
    // mov $VEC, %al; out %al, $PORT_REPORT; iret.
    let mut code = vec![0xfb, 0xf4, 0xeb, 0xfd];
    code.resize(0x10, 0x90);
    code.extend_from_slice(&[0x66, 0x31, 0xc0, 0x66, 0x31, 0xd2]);
    code.extend_from_slice(&[0x66, 0xb9, 0x0b, 0x08, 0, 0, 0x0f, 0x30]);
    code.extend_from_slice(&[0xb0, VEC, 0xe6, PORT_REPORT as u8, 0xcf]);
    g.enter_real_mode(&code)?;
    let off = (GUEST_CODE + 0x10) as u16;
    g.write(
        u64::from(VEC) * 4,
        &[off.to_le_bytes()[0], off.to_le_bytes()[1], 0, 0],
    );
    get(
        "set_gsi_routing",
        g.vm.set_gsi_routing(&msi_route(GSI, VEC)?),
    )?;
    let vm = &g.vm;
    with_reporting_vcpu(&mut g.vcpu, PORT_REPORT, None, |rx| drive(vm, rx))
}
