// SPDX-License-Identifier: GPL-2.0

//! Dirty logging through rust-vmm's kvm-ioctls, as a Rust VMM takes it:
//! a slot created with `KVM_MEM_LOG_DIRTY_PAGES`, `VmFd::get_dirty_log`
//! after rounds of guest writes; and the same rounds with the dirty ring
//! (kvm-ioctls has no ring API: the VM's `enable_cap`, then mmap and
//! `KVM_RESET_DIRTY_RINGS` by hand, as a VMM on kvm-ioctls does).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use kvm_bindings::{
    kvm_enable_cap, kvm_userspace_memory_region, KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
    KVM_DIRTY_LOG_PAGE_OFFSET, KVM_MEM_LOG_DIRTY_PAGES, KVMIO,
};
use vmm_sys_util::ioctl_io_nr;

use crate::guest::{Backing, Guest};
use crate::harness::{Ctx, TestResult};
use crate::util::{ename, errno, get, raw_ioctl};

ioctl_io_nr!(KVM_RESET_DIRTY_RINGS, KVMIO, 0xc7);

/// Where the logged slot sits, and its size (256 pages).
const LOG_GPA: u64 = 0x400_0000;
const LOG_SIZE: usize = 1 << 20;

/// The guest writes page RBX of the logged slot (its index, to the first
/// qword), then OUT 0x31; the VMM sets RBX before each run.
#[rustfmt::skip]
const CODE: &[u8] = &[
    0x48, 0x89, 0xd8,                   // mov rax, rbx
    0x48, 0xc1, 0xe0, 0x0c,             // shl rax, 12
    0x48, 0x05, 0x00, 0x00, 0x00, 0x04, // add rax, LOG_GPA
    0x48, 0x89, 0x18,                   // mov [rax], rbx
    0xe7, 0x31,                         // out 0x31, eax
    0xeb, 0xec,                         // jmp back to the first mov
];

/// The rounds of pages the guest writes; after each, the log must name
/// exactly these.
const ROUNDS: [&[u64]; 3] = [&[3, 64, 65, 200], &[3, 255], &[]];

/// Slot 1 logging, over `mem`, and the guest in long mode running `CODE`.
fn logging_guest(g: &Guest, mem: &Backing) -> TestResult {
    let region = kvm_userspace_memory_region {
        slot: 1,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: LOG_GPA,
        memory_size: LOG_SIZE as u64,
        userspace_addr: mem.hva(0),
    };
    // SAFETY: the callers' `mem` outlives the VM (`g` is dropped first,
    // declared later).
    get("set_user_memory_region", unsafe { g.vm.set_user_memory_region(region) })?;
    g.enter_long_mode(CODE)
}

/// The guest writes `page` of the logged slot.
fn write_page(g: &mut Guest, page: u64) -> TestResult {
    let mut regs = g.regs()?;
    regs.rbx = page;
    get("set_regs", g.vcpu.set_regs(&regs))?;
    g.expect_out(&format!("write page {page}"), 0x31, &(page << 12 | LOG_GPA).to_le_bytes()[..4])
}

/// Rounds of writes to chosen pages of a logging slot: each
/// `get_dirty_log` reports exactly the pages written since the last one.
pub(crate) fn dirty_log_reports_written_pages(ctx: &Ctx) -> TestResult {
    let mem = Backing::new(LOG_SIZE)?;
    let mut g = Guest::new(ctx)?;
    logging_guest(&g, &mem)?;
    let log = |g: &Guest| get("get_dirty_log", g.vm.get_dirty_log(1, LOG_SIZE));
    let first = log(&g)?;
    if first.len() != LOG_SIZE / 4096 / 64 || first.iter().any(|&w| w != 0) {
        return Err(format!("before any write: {first:x?}"));
    }
    for pages in ROUNDS {
        for &page in pages {
            write_page(&mut g, page)?;
        }
        let mut want = vec![0u64; LOG_SIZE / 4096 / 64];
        for &page in pages {
            want[(page / 64) as usize] |= 1 << (page % 64);
        }
        let got = log(&g)?;
        if got != want {
            return Err(format!("after writing {pages:?}: log {got:x?}, want {want:x?}"));
        }
    }
    Ok(())
}

/// `struct kvm_dirty_gfn`, in memory the kernel writes concurrently.
#[repr(C)]
struct DirtyGfn {
    flags: AtomicU32,
    slot: AtomicU32,
    offset: AtomicU64,
}

const GFN_F_DIRTY: u32 = 1;
const GFN_F_RESET: u32 = 2;
/// The smallest ring: one page, 256 entries.
const RING_BYTES: usize = 4096;

/// A vCPU's dirty ring, mapped from its fd.
struct Ring {
    base: *mut libc::c_void,
    /// The next entry to harvest.
    next: usize,
}

impl Ring {
    fn map(vcpu: &impl AsRawFd) -> Result<Self, String> {
        let off = KVM_DIRTY_LOG_PAGE_OFFSET as libc::off_t * 4096;
        // SAFETY: a new shared mapping of the vCPU fd; nothing else is
        // mapped at the address the kernel picks.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RING_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                off,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap of the dirty ring: {}", ename(errno())));
        }
        Ok(Self { base, next: 0 })
    }

    fn entries(&self) -> &[DirtyGfn] {
        // SAFETY: the mapping holds RING_BYTES of `struct kvm_dirty_gfn`
        // and lives as long as `self`; the fields are atomics, valid for
        // any bits the kernel writes concurrently.
        unsafe {
            std::slice::from_raw_parts(
                self.base.cast(),
                RING_BYTES / std::mem::size_of::<DirtyGfn>(),
            )
        }
    }

    /// Harvests every published entry: (slot, offset) of each, oldest
    /// first, each marked for the reset.
    fn harvest(&mut self) -> Vec<(u32, u64)> {
        let mut got = Vec::new();
        loop {
            let n = self.entries().len();
            let e = &self.entries()[self.next % n];
            if e.flags.load(Ordering::Acquire) & GFN_F_DIRTY == 0 {
                return got;
            }
            got.push((e.slot.load(Ordering::Relaxed), e.offset.load(Ordering::Relaxed)));
            e.flags.store(GFN_F_RESET, Ordering::Release);
            self.next += 1;
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping `map` made, unused after this.
        unsafe { libc::munmap(self.base, RING_BYTES) };
    }
}

/// The rounds with the dirty ring: each harvest names exactly the pages
/// written since the last reset (once each: a page written again after
/// its first write does not fault), `KVM_RESET_DIRTY_RINGS` takes them
/// all, and the bitmap ioctls answer ENXIO.
pub(crate) fn dirty_ring_reports_written_pages(ctx: &Ctx) -> TestResult {
    let mem = Backing::new(LOG_SIZE)?;
    let mut g = Guest::with_vm_setup(ctx, |vm| {
        let mut cap = kvm_enable_cap {
            cap: KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
            ..Default::default()
        };
        cap.args[0] = RING_BYTES as u64;
        get("enable_cap(DIRTY_LOG_RING_ACQ_REL)", vm.enable_cap(&cap))
    })?;
    logging_guest(&g, &mem)?;
    let mut ring = Ring::map(&g.vcpu)?;
    match g.vm.get_dirty_log(1, LOG_SIZE) {
        Err(e) if e.errno() == libc::ENXIO => {}
        other => return Err(format!("get_dirty_log with the ring: {other:?}, want ENXIO")),
    }
    for pages in ROUNDS {
        for &page in pages {
            write_page(&mut g, page)?;
        }
        // Each page twice: the second write must not be pushed again.
        for &page in pages {
            write_page(&mut g, page)?;
        }
        let got = ring.harvest();
        let want: Vec<_> = pages.iter().map(|&p| (1, p)).collect();
        if got != want {
            return Err(format!("after writing {pages:?}: ring {got:?}, want {want:?}"));
        }
        let reset = raw_ioctl(&g.vm, KVM_RESET_DIRTY_RINGS(), 0)
            .map_err(|e| format!("KVM_RESET_DIRTY_RINGS: {}", ename(e)))?;
        if reset as usize != got.len() {
            return Err(format!("KVM_RESET_DIRTY_RINGS took {reset} entries, want {}", got.len()));
        }
    }
    Ok(())
}
