// SPDX-License-Identifier: GPL-2.0

//! KVM_SET_USER_MEMORY_REGION through kvm-ioctls: create, overlap, move,
//! resize, bad arguments, delete.

use crate::guest::{Backing, set_region};
use crate::harness::{Ctx, TestResult};
use crate::util::{ename, new_vm};

pub(crate) fn memory_regions(ctx: &Ctx) -> TestResult {
    const MB: u64 = 1 << 20;
    let mem = Backing::new(16 << 20)?;
    let kvm = ctx.open()?;
    let vm = new_vm(&kvm)?;
    let expect = |what: &str, got: Result<(), i32>, want: Result<(), i32>| -> TestResult {
        if got == want {
            return Ok(());
        }
        let show = |r: Result<(), i32>| r.map_or_else(ename, |()| "success".into());
        Err(format!("{what}: got {}, want {}", show(got), show(want)))
    };
    expect(
        "create slot 0",
        set_region(&vm, 0, 0, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "create slot 1",
        set_region(&vm, 1, 4 * MB, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "overlap",
        set_region(&vm, 2, MB, 2 * MB, mem.hva(0)),
        Err(libc::EEXIST),
    )?;
    expect(
        "adjacent",
        set_region(&vm, 2, 2 * MB, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "move",
        set_region(&vm, 1, 8 * MB, 2 * MB, mem.hva(0)),
        Ok(()),
    )?;
    expect(
        "resize",
        set_region(&vm, 1, 8 * MB, 4 * MB, mem.hva(0)),
        Err(libc::EINVAL),
    )?;
    expect(
        "size not aligned",
        set_region(&vm, 3, 12 * MB, 4095, mem.hva(0)),
        Err(libc::EINVAL),
    )?;
    expect(
        "gpa wraps",
        set_region(&vm, 3, u64::MAX - 4095, 8192, mem.hva(0)),
        Err(libc::EINVAL),
    )?;
    expect(
        "kernel hva",
        set_region(&vm, 3, 12 * MB, MB, 0xffff_8880_0000_0000),
        Err(libc::EINVAL),
    )?;
    expect("delete", set_region(&vm, 0, 0, 0, 0), Ok(()))?;
    expect(
        "delete again",
        set_region(&vm, 0, 0, 0, 0),
        Err(libc::EINVAL),
    )?;
    expect(
        "reuse the range",
        set_region(&vm, 3, 0, 2 * MB, mem.hva(2 << 20)),
        Ok(()),
    )?;
    drop(vm);
    Ok(())
}
