// SPDX-License-Identifier: GPL-2.0

//! Guest setup for the tests that run guest code: anonymous memory for
//! memslots, and `Guest`, a VM with RAM at GPA 0 and one vCPU that can be
//! put in real mode or 64-bit mode. The one place the Rust selftests build
//! guests.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, kvm_regs, kvm_segment, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::harness::{Ctx, TestResult};
use crate::util::{ename, errno, get, new_vm};

/// Anonymous memory that backs memslots; unmapped on drop.
pub(crate) struct Backing {
    pub(crate) addr: *mut libc::c_void,
    len: usize,
}

impl Backing {
    pub(crate) fn new(len: usize) -> Result<Self, String> {
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

    pub(crate) fn hva(&self, offset: usize) -> u64 {
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
pub(crate) fn set_region(vm: &VmFd, slot: u32, gpa: u64, size: u64, hva: u64) -> Result<(), i32> {
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

/// Guest RAM: one memslot at GPA 0.
pub(crate) const GUEST_MEM: usize = 2 << 20;
/// Guest physical layout (all inside `GUEST_MEM`).
pub(crate) const GUEST_GDT: u64 = 0x1000;
pub(crate) const GUEST_PML4: u64 = 0x2000;
pub(crate) const GUEST_PDPT: u64 = 0x3000;
pub(crate) const GUEST_PD: u64 = 0x4000;
pub(crate) const GUEST_IDT: u64 = 0x5000;
pub(crate) const GUEST_STACK: u64 = 0x7000;
pub(crate) const GUEST_CODE: u64 = 0x8000;
/// Unbacked (no memslot) but mapped by the guest's page tables: MMIO.
pub(crate) const GUEST_MMIO: u64 = 0x1000_0000;
/// Where KVM's TSS for real mode goes (QEMU's choice), for VMX hosts
/// without unrestricted guest; harmless elsewhere.
pub(crate) const GUEST_TSS: usize = 0xfffb_d000;

pub(crate) const SEL_CODE64: u16 = 0x8;
pub(crate) const SEL_DATA: u16 = 0x10;
pub(crate) const CR0_PE: u64 = 1 << 0;
pub(crate) const CR0_ET: u64 = 1 << 4;
pub(crate) const CR0_NE: u64 = 1 << 5;
pub(crate) const CR0_WP: u64 = 1 << 16;
pub(crate) const CR0_PG: u64 = 1 << 31;
pub(crate) const CR4_PAE: u64 = 1 << 5;
pub(crate) const EFER_LME: u64 = 1 << 8;
pub(crate) const EFER_LMA: u64 = 1 << 10;
pub(crate) const PTE_P: u64 = 1 << 0;
pub(crate) const PTE_RW: u64 = 1 << 1;
pub(crate) const PTE_PS: u64 = 1 << 7;

/// A VM with guest RAM at GPA 0 and vCPU 0 carrying the supported CPUID.
/// Fields drop in order: the vCPU and VM before the memory they map.
pub(crate) struct Guest {
    pub(crate) vcpu: VcpuFd,
    pub(crate) vm: VmFd,
    pub(crate) cpuid: CpuId,
    _kvm: Kvm,
    mem: Backing,
}

impl Guest {
    pub(crate) fn new(ctx: &Ctx) -> Result<Self, String> {
        Self::with_vm_setup(ctx, |_| Ok(()))
    }

    /// A guest whose VM `setup` configures before its vCPU exists.
    pub(crate) fn with_vm_setup(
        ctx: &Ctx,
        setup: impl FnOnce(&VmFd) -> TestResult,
    ) -> Result<Self, String> {
        let mem = Backing::new(GUEST_MEM)?;
        let kvm = ctx.open()?;
        let vm = new_vm(&kvm)?;
        setup(&vm)?;
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
            vm,
            cpuid,
            _kvm: kvm,
            mem,
        })
    }

    pub(crate) fn write(&self, gpa: u64, bytes: &[u8]) {
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

    /// The host address of guest RAM at `gpa`.
    pub(crate) fn hva(&self, gpa: u64) -> u64 {
        assert!((gpa as usize) < GUEST_MEM, "GPA {gpa:#x} outside RAM");
        self.mem.hva(gpa as usize)
    }

    pub(crate) fn write_u64s(&self, gpa: u64, vals: &[u64]) {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(gpa, &bytes);
    }

    pub(crate) fn read_u8(&self, gpa: u64) -> u8 {
        assert!((gpa as usize) < GUEST_MEM, "GPA {gpa:#x} outside RAM");
        // SAFETY: in bounds (checked above); volatile because the guest
        // wrote it behind the compiler's back.
        unsafe { std::ptr::read_volatile((self.mem.addr as *const u8).add(gpa as usize)) }
    }

    pub(crate) fn regs(&self) -> Result<kvm_regs, String> {
        get("get_regs", self.vcpu.get_regs())
    }

    pub(crate) fn set_rip(&self, rip: u64) -> TestResult {
        let regs = kvm_regs {
            rip,
            rsp: GUEST_STACK,
            rflags: 2,
            ..Default::default()
        };
        get("set_regs", self.vcpu.set_regs(&regs))
    }

    /// Real mode at `code` (CS base 0): the reset state otherwise.
    pub(crate) fn enter_real_mode(&self, code: &[u8]) -> TestResult {
        self.write(GUEST_CODE, code);
        let mut sregs = get("get_sregs", self.vcpu.get_sregs())?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        get("set_sregs", self.vcpu.set_sregs(&sregs))?;
        self.set_rip(GUEST_CODE)
    }

    /// 64-bit mode at `code`: flat GDT, the first GiB identity-mapped with
    /// 2 MiB pages, and an IDT of limit 0 (any exception triple-faults).
    pub(crate) fn enter_long_mode(&self, code: &[u8]) -> TestResult {
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
    pub(crate) fn expect(
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

    pub(crate) fn expect_out(&mut self, step: &str, port: u16, want: &[u8]) -> TestResult {
        self.expect(
            step,
            &format!("IoOut({port:#x}, {want:x?})"),
            |e| matches!(e, VcpuExit::IoOut(p, d) if *p == port && *d == want),
        )
    }

    pub(crate) fn expect_out_u32(&mut self, step: &str, port: u16, want: u32) -> TestResult {
        self.expect_out(step, port, &want.to_le_bytes())
    }

    pub(crate) fn expect_hlt_at(&mut self, step: &str, rip: u64) -> TestResult {
        self.expect(step, "Hlt", |e| matches!(e, VcpuExit::Hlt))?;
        let got = self.regs()?.rip;
        if got != rip {
            return Err(format!("{step}: rip {got:#x} after Hlt, want {rip:#x}"));
        }
        Ok(())
    }
}
