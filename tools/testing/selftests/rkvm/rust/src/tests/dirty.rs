// SPDX-License-Identifier: GPL-2.0

//! Dirty logging through rust-vmm's kvm-ioctls, as a Rust VMM takes it:
//! a slot created with `KVM_MEM_LOG_DIRTY_PAGES`, `VmFd::get_dirty_log`
//! after rounds of guest writes.

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};

use crate::guest::{Backing, Guest};
use crate::harness::{Ctx, TestResult};
use crate::util::get;

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

/// Rounds of writes to chosen pages of a logging slot: each
/// `get_dirty_log` reports exactly the pages written since the last one.
pub(crate) fn dirty_log_reports_written_pages(ctx: &Ctx) -> TestResult {
    let mem = Backing::new(LOG_SIZE)?;
    let mut g = Guest::new(ctx)?;
    let region = kvm_userspace_memory_region {
        slot: 1,
        flags: KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: LOG_GPA,
        memory_size: LOG_SIZE as u64,
        userspace_addr: mem.hva(0),
    };
    // SAFETY: `mem` outlives the VM (`g` is dropped first, declared later).
    get("set_user_memory_region", unsafe { g.vm.set_user_memory_region(region) })?;
    g.enter_long_mode(CODE)?;
    let log = |g: &Guest| get("get_dirty_log", g.vm.get_dirty_log(1, LOG_SIZE));
    let first = log(&g)?;
    if first.len() != LOG_SIZE / 4096 / 64 || first.iter().any(|&w| w != 0) {
        return Err(format!("before any write: {first:x?}"));
    }
    for pages in [&[3u64, 64, 65, 200][..], &[3, 255], &[]] {
        for &page in pages {
            let mut regs = g.regs()?;
            regs.rbx = page;
            get("set_regs", g.vcpu.set_regs(&regs))?;
            g.expect_out(&format!("write page {page}"), 0x31, &(page << 12 | LOG_GPA).to_le_bytes()[..4])?;
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
