// SPDX-License-Identifier: GPL-2.0

//! Guest code through `VcpuFd::run()`: a real-mode guest doing port I/O; a
//! 64-bit guest exiting on OUT, CPUID, MMIO write and read, WRMSR/RDMSR;
//! kvm_run.immediate_exit; a triple fault ending in KVM_EXIT_SHUTDOWN.

use kvm_ioctls::VcpuExit;

use crate::guest::{GUEST_CODE, GUEST_MMIO, Guest};
use crate::harness::{Ctx, TestResult};
use crate::tests::msr::{MSR_LSTAR, get_msr_values, set_msr_values};
use crate::util::ename;

pub(crate) fn run_real_mode_pio(ctx: &Ctx) -> TestResult {
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

pub(crate) fn run_long_mode_exits(ctx: &Ctx) -> TestResult {
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

pub(crate) fn run_immediate_exit(ctx: &Ctx) -> TestResult {
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

pub(crate) fn run_triple_fault_shutdown(ctx: &Ctx) -> TestResult {
    const CODE: &[u8] = &[0x0f, 0x0b]; // ud2: #UD, with IDT limit 0 -> #GP -> #DF -> triple fault
    let mut g = Guest::new(ctx)?;
    g.enter_long_mode(CODE)?;
    g.expect("ud2 with no IDT", "Shutdown", |e| {
        matches!(e, VcpuExit::Shutdown)
    })
}

/// Guest memory follows the host's mappings (`KVM_CAP_SYNC_MMU`): the
/// guest reads a page, the VMM drops it (`MADV_DONTNEED`) and the guest
/// reads zeroes; the VMM writes a new page and then replaces the mapping
/// (`mmap(MAP_FIXED)`) and the guest reads what the host wrote each time,
/// never the page it mapped before.
pub(crate) fn run_memory_follows_host_mappings(ctx: &Ctx) -> TestResult {
    const DATA: u64 = 0x10_0000;
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0x8b, 0x04, 0x25, 0x00, 0x00, 0x10, 0x00, // mov eax, [0x100000]
        0xe7, 0x30,                               // out 0x30, eax
        0xeb, 0xf5,                               // jmp back to the mov
    ];
    let mut g = Guest::new(ctx)?;
    g.enter_long_mode(CODE)?;
    g.write(DATA, &0x1111_1111u32.to_le_bytes());
    g.expect_out_u32("the first value", 0x30, 0x1111_1111)?;
    let page = g.hva(DATA) as *mut libc::c_void;
    // SAFETY: a page of the guest RAM mapping, which the test owns.
    if unsafe { libc::madvise(page, 4096, libc::MADV_DONTNEED) } != 0 {
        return Err(format!("madvise: {}", crate::util::ename(crate::util::errno())));
    }
    g.expect_out_u32("after MADV_DONTNEED: a zero page", 0x30, 0)?;
    g.write(DATA, &0x2222_2222u32.to_le_bytes());
    g.expect_out_u32("the host's write to the new page", 0x30, 0x2222_2222)?;
    // SAFETY: replaces one page of the guest RAM mapping in place.
    let fresh = unsafe {
        libc::mmap(
            page,
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    if fresh != page {
        return Err(format!("mmap(MAP_FIXED): {}", crate::util::ename(crate::util::errno())));
    }
    g.write(DATA, &0x3333_3333u32.to_le_bytes());
    g.expect_out_u32("a page mapped over the old one", 0x30, 0x3333_3333)
}
