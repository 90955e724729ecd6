// SPDX-License-Identifier: GPL-2.0

//! The pages a vCPU shares with its VMM: `struct kvm_run` and the PIO data
//! page. Userspace may write them at any time, so every access is a single
//! volatile load or store of a field, never a reference into the page.

use kernel::page::{Page, PAGE_SIZE};

use super::ffi;

use crate::abi::run;

/// A page mapped into the VMM, accessed field by field.
///
/// # Invariants
///
/// `base` is the kernel address of a page of `PAGE_SIZE` bytes that lives at
/// least as long as `'a`.
pub(crate) struct SharedPage<'a> {
    base: *mut u8,
    _page: &'a Page,
}

impl<'a> SharedPage<'a> {
    pub(crate) fn new(page: &'a Page) -> Self {
        // SAFETY: the page is lowmem (allocated with GFP_KERNEL), so it is
        // in the direct map; translating its address has no side effects.
        let base = unsafe { ffi::rkvm_phys_to_virt(crate::x86::page_phys(page)) }.cast();
        // INVARIANT: `base` maps `page`, which `'a` keeps alive.
        Self { base, _page: page }
    }

    fn ptr<T>(&self, off: usize) -> *mut T {
        assert!(off + core::mem::size_of::<T>() <= PAGE_SIZE);
        // The offsets are the ABI's, aligned for their fields.
        self.base.wrapping_add(off).cast()
    }

    pub(crate) fn write<T: Copy>(&self, off: usize, val: T) {
        // SAFETY: in bounds of the page (checked in `ptr`), which lives for
        // `'a` (type invariant); a volatile store of a plain integer, which
        // a concurrent userspace store cannot make unsound.
        unsafe { self.ptr::<T>(off).write_volatile(val) }
    }

    pub(crate) fn read<T: Copy>(&self, off: usize) -> T {
        // SAFETY: as in `write`; `T` is a plain integer type for every
        // caller, valid for any bit pattern.
        unsafe { self.ptr::<T>(off).read_volatile() }
    }

    /// Copies `bytes` to offset `off`.
    pub(crate) fn write_bytes(&self, off: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            self.write(off + i, b);
        }
    }

    /// Copies from offset `off` into `out`.
    pub(crate) fn read_bytes(&self, off: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read(off + i);
        }
    }
}

/// `struct kvm_run`.
pub(crate) struct RunPage<'a>(pub(crate) SharedPage<'a>);

impl RunPage<'_> {
    pub(crate) fn request_interrupt_window(&self) -> bool {
        self.0.read::<u8>(run::REQUEST_INTERRUPT_WINDOW) != 0
    }

    pub(crate) fn immediate_exit(&self) -> bool {
        self.0.read::<u8>(run::IMMEDIATE_EXIT) != 0
    }

    pub(crate) fn set_exit_reason(&self, reason: u32) {
        self.0.write(run::EXIT_REASON, reason);
    }

    pub(crate) fn exit_reason(&self) -> u32 {
        self.0.read(run::EXIT_REASON)
    }

    pub(crate) fn cr8(&self) -> u64 {
        self.0.read(run::CR8)
    }

    /// The fields KVM refreshes on every return from `KVM_RUN`.
    pub(crate) fn set_status(&self, if_flag: bool, ready_for_irq: bool, cr8: u64, apic_base: u64) {
        self.0.write(run::FLAGS, 0u16);
        self.0.write(run::IF_FLAG, if_flag as u8);
        self.0
            .write(run::READY_FOR_INTERRUPT_INJECTION, ready_for_irq as u8);
        self.0.write(run::CR8, cr8);
        self.0.write(run::APIC_BASE, apic_base);
    }

    pub(crate) fn set_io(&self, is_in: bool, size: u8, port: u16, count: u32) {
        self.set_exit_reason(run::exit::IO);
        self.0.write(
            run::IO_DIRECTION,
            if is_in { run::IO_IN } else { run::IO_OUT },
        );
        self.0.write(run::IO_SIZE, size);
        self.0.write(run::IO_PORT, port);
        self.0.write(run::IO_COUNT, count);
        // The data lives in the second page of the vCPU mapping.
        self.0.write(run::IO_DATA_OFFSET, PAGE_SIZE as u64);
    }

    pub(crate) fn set_mmio(&self, gpa: u64, len: u32, write: Option<u64>) {
        self.set_exit_reason(run::exit::MMIO);
        self.0.write(run::MMIO_PHYS_ADDR, gpa);
        self.0.write(run::MMIO_DATA, write.unwrap_or(0));
        self.0.write(run::MMIO_LEN, len);
        self.0.write(run::MMIO_IS_WRITE, write.is_some() as u8);
    }

    /// `KVM_EXIT_IOAPIC_EOI`: the guest ended the service of `vector`.
    pub(crate) fn set_ioapic_eoi(&self, vector: u8) {
        self.set_exit_reason(run::exit::IOAPIC_EOI);
        self.0.write(run::EXIT, vector);
    }

    /// `KVM_EXIT_DEBUG`: exception `vector` at linear address `pc`, with
    /// DR6 and DR7 for a `#DB` (left as they were for a `#BP`, as KVM).
    pub(crate) fn set_debug(&self, vector: u8, pc: u64, db: Option<(u64, u64)>) {
        self.set_exit_reason(run::exit::DEBUG);
        self.0.write(run::DEBUG_EXCEPTION, vector as u32);
        self.0.write(run::DEBUG_PC, pc);
        if let Some((dr6, dr7)) = db {
            self.0.write(run::DEBUG_DR6, dr6);
            self.0.write(run::DEBUG_DR7, dr7);
        }
    }

    /// The data a VMM answered an MMIO read with.
    pub(crate) fn mmio_data(&self) -> u64 {
        self.0.read(run::MMIO_DATA)
    }

    pub(crate) fn set_fail_entry(&self, reason: u64, cpu: u32) {
        self.set_exit_reason(run::exit::FAIL_ENTRY);
        self.0.write(run::FAIL_ENTRY_REASON, reason);
        self.0.write(run::FAIL_ENTRY_CPU, cpu);
    }

    pub(crate) fn set_internal_error(&self, suberror: u32, data: &[u64]) {
        self.set_exit_reason(run::exit::INTERNAL_ERROR);
        let n = data.len().min(run::INTERNAL_DATA_MAX);
        self.0.write(run::INTERNAL_SUBERROR, suberror);
        self.0.write(run::INTERNAL_NDATA, n as u32);
        for (i, &d) in data[..n].iter().enumerate() {
            self.0.write(run::INTERNAL_DATA + 8 * i, d);
        }
    }
}
