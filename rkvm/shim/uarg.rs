// SPDX-License-Identifier: GPL-2.0

//! Copying fixed-size ioctl arguments to and from userspace.

use kernel::{
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

/// Reads the `N`-byte argument at user address `arg` (`EFAULT` if unreadable).
pub(crate) fn read<const N: usize>(arg: usize) -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    UserSlice::new(UserPtr::from_addr(arg), N)
        .reader()
        .read_slice(&mut buf)?;
    Ok(buf)
}

/// Writes `data` to user address `arg` (`EFAULT` if unwritable).
pub(crate) fn write(arg: usize, data: &[u8]) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), data.len())
        .writer()
        .write_slice(data)
}

/// Writes `len` zero bytes at user address `addr` (`EFAULT` if
/// unwritable; what was written before the fault stays written).
pub(crate) fn write_zeroes(addr: usize, len: usize) -> Result {
    static ZEROES: [u8; 4096] = [0; 4096];
    let mut writer = UserSlice::new(UserPtr::from_addr(addr), len).writer();
    let mut left = len;
    while left > 0 {
        let n = left.min(ZEROES.len());
        writer.write_slice(&ZEROES[..n])?;
        left -= n;
    }
    Ok(())
}

/// Reads `out.len()` bytes at user address `addr`.
pub(crate) fn read_into(addr: usize, out: &mut [u8]) -> Result {
    UserSlice::new(UserPtr::from_addr(addr), out.len())
        .reader()
        .read_slice(out)
}

/// Atomically replaces `old` by `new` (4 or 8 bytes, the low ones of each)
/// at user address `addr` of the current process: `Ok(true)` if swapped,
/// `Ok(false)` if the memory held another value, `EFAULT` if it is not
/// mapped writable.
pub(crate) fn cmpxchg(addr: u64, size: u32, old: u64, new: u64) -> Result<bool> {
    if size != 4 && size != 8 {
        return Err(EINVAL);
    }
    // SAFETY: the helper checks `access_ok` on the range and catches faults
    // on the access; it touches nothing else.
    match unsafe { super::ffi::rkvm_cmpxchg_user(addr, size, old, new) } {
        1 => Ok(true),
        0 => Ok(false),
        _ => Err(EFAULT),
    }
}
