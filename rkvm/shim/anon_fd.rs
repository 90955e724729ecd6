// SPDX-License-Identifier: GPL-2.0

//! Kernel objects handed to userspace as anonymous-inode file descriptors
//! (the VM fd, the vCPU fd, the statistics fds), with a safe trait for
//! their operations.
//!
//! The file holds one reference to the object (an `Arc<T>` in
//! `private_data`) and, through `file_operations.owner`, one reference to
//! the module, so rkvm cannot be unloaded while such an fd is open.

use core::marker::PhantomData;

use kernel::{
    bindings,
    fs::File,
    mm::virt::VmaNew,
    module::this_module,
    prelude::*,
    str::CStr,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};

/// Operations of an object exposed as an anonymous fd.
pub(crate) trait AnonFile: Send + Sync + Sized + 'static {
    /// Name shown in `/proc/<pid>/fd` (`anon_inode:<NAME>`).
    const NAME: &'static CStr;

    /// Handles an ioctl on the fd.
    fn ioctl(this: ArcBorrow<'_, Self>, file: &File, cmd: u32, arg: usize) -> Result<isize>;

    /// Handles `mmap` of the fd; by default the fd cannot be mapped.
    fn mmap(_this: ArcBorrow<'_, Self>, _file: &File, _vma: &VmaNew) -> Result {
        Err(ENODEV)
    }

    /// Whether the fd is a read-only file that `read` serves (with
    /// `pread` too); otherwise it is opened for reading and writing and
    /// has no `read`.
    const READ_ONLY_FILE: bool = false;

    /// Handles `read` of up to `len` bytes at position `*pos` into user
    /// address `buf`: returns the bytes read and advances `*pos`. Only
    /// called if `READ_ONLY_FILE`.
    fn read(_this: ArcBorrow<'_, Self>, _buf: usize, _len: usize, _pos: &mut i64) -> Result<usize> {
        Err(EINVAL)
    }
}

/// Installs a new fd (`O_RDWR | O_CLOEXEC`, or `O_RDONLY | O_CLOEXEC` for
/// a `READ_ONLY_FILE`) for `obj` and returns its number.
pub(crate) fn install<T: AnonFile>(obj: Arc<T>) -> Result<u32> {
    let private = obj.into_foreign();
    let access = if T::READ_ONLY_FILE {
        bindings::O_RDONLY
    } else {
        bindings::O_RDWR
    };
    // SAFETY: `NAME` is NUL-terminated and static; `VTABLE` is a static
    // whose callbacks expect `private` to come from `Arc<T>::into_foreign`.
    let fd = unsafe {
        super::ffi::rkvm_anon_inode_getfd(
            T::NAME.as_char_ptr().cast(),
            &VTable::<T>::VTABLE,
            private,
            (access | bindings::O_CLOEXEC) as i32,
            T::READ_ONLY_FILE,
        )
    };
    if fd < 0 {
        // SAFETY: no file was created, so `private` is still ours to reclaim.
        drop(unsafe { Arc::<T>::from_foreign(private) });
        return Err(Error::from_errno(fd));
    }
    // The fd may already be closed by another thread: `private` is not ours
    // any more, so nothing touches it after this point.
    Ok(fd as u32)
}

struct VTable<T>(PhantomData<T>);

impl<T: AnonFile> VTable<T> {
    const VTABLE: bindings::file_operations = bindings::file_operations {
        owner: this_module::<crate::LocalModule>().as_ptr(),
        unlocked_ioctl: Some(Self::ioctl),
        // The ioctls served so far take integers, which 32-bit callers pass
        // the same way; ioctls with layout-dependent structs will need more.
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: Some(bindings::compat_ptr_ioctl),
        mmap: Some(Self::mmap),
        read: if T::READ_ONLY_FILE {
            Some(Self::read)
        } else {
            None
        },
        release: Some(Self::release),
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zeroes is a valid `file_operations` (no callbacks).
        ..unsafe { core::mem::zeroed() }
    };

    /// # Safety
    ///
    /// Called by the VFS with a file created by `install::<T>`.
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: u32, arg: usize) -> isize {
        // The file is alive for the call; `release`, which drops the
        // `Arc<T>` that `install` stored, cannot run concurrently.
        // SAFETY: so `private_data` holds a live `Arc<T>`.
        let (this, file) = unsafe {
            (
                Arc::<T>::borrow((*file).private_data),
                File::from_raw_file(file),
            )
        };
        match T::ioctl(this, file, cmd, arg) {
            Ok(r) => r,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a file created by `install::<T>` and a VMA
    /// being set up for it.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> i32 {
        // SAFETY: as in `ioctl`, `private_data` holds the `Arc<T>`; the VMA
        // is under construction by `mmap` and not yet visible to anyone.
        let (this, file, vma) = unsafe {
            (
                Arc::<T>::borrow((*file).private_data),
                File::from_raw_file(file),
                VmaNew::from_raw(vma),
            )
        };
        match T::mmap(this, file, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a file created by `install::<T>` and the
    /// position of this read.
    unsafe extern "C" fn read(
        file: *mut bindings::file,
        buf: *mut kernel::ffi::c_char,
        len: usize,
        pos: *mut bindings::loff_t,
    ) -> isize {
        // SAFETY: as in `ioctl`, `private_data` holds the `Arc<T>`; `pos`
        // is the VFS's position for this call, which it does not touch
        // until the call returns.
        let (this, pos) = unsafe { (Arc::<T>::borrow((*file).private_data), &mut *pos) };
        match T::read(this, buf as usize, len, pos) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS once, when the last reference to the file is gone.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
        // SAFETY: `private_data` holds the `Arc<T>` from `install`; this is
        // the last use of it.
        drop(unsafe { Arc::<T>::from_foreign((*file).private_data) });
        0
    }
}

/// The file offset, in pages, that an `mmap` of one of these files asks
/// for.
pub(crate) fn mmap_pgoff(vma: &kernel::mm::virt::VmaNew) -> usize {
    // SAFETY: `vma` is a valid VMA being set up by `mmap`, which the
    // reference keeps alive; reading its offset has no side effects.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}
