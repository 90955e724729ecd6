// SPDX-License-Identifier: GPL-2.0

//! The KVM x86 ioctl ABI subset that rkvm speaks: ioctl numbers, capability
//! numbers and constants from `include/uapi/linux/kvm.h`.
//!
//! Pure logic (only `core`): also built by the host test crate, which checks
//! every number against the values stock KVM uses.

/// The ioctl "type" byte of every KVM ioctl (`KVMIO`).
pub(crate) const KVMIO: u32 = 0xAE;

/// `KVM_API_VERSION`: the only version KVM has ever reported.
pub(crate) const API_VERSION: isize = 12;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// The `N` bytes at `off` of an ioctl argument buffer, for decoding a field
/// of a C struct with `from_ne_bytes`.
pub(crate) fn field<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut v = [0u8; N];
    v.copy_from_slice(&b[off..off + N]);
    v
}

/// `_IOC(dir, type, nr, size)` from `include/uapi/asm-generic/ioctl.h`.
pub(crate) const fn ioc(dir: u32, ty: u32, nr: u32, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | (ty << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IO(KVMIO, nr)`.
pub(crate) const fn io(nr: u32) -> u32 {
    ioc(IOC_NONE, KVMIO, nr, 0)
}

/// `_IOW(KVMIO, nr, size)`: userspace passes `size` bytes in.
pub(crate) const fn iow(nr: u32, size: usize) -> u32 {
    ioc(IOC_WRITE, KVMIO, nr, size)
}

/// `_IOR(KVMIO, nr, size)`: the kernel passes `size` bytes out.
pub(crate) const fn ior(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ, KVMIO, nr, size)
}

/// Ioctls of the system fd (`/dev/rkvm`).
pub(crate) mod system {
    use super::io;

    /// `KVM_GET_API_VERSION`.
    pub(crate) const GET_API_VERSION: u32 = io(0x00);
    /// `KVM_CREATE_VM`.
    pub(crate) const CREATE_VM: u32 = io(0x01);
    /// `KVM_CHECK_EXTENSION` (also valid on a VM fd).
    pub(crate) const CHECK_EXTENSION: u32 = io(0x03);
    /// `KVM_GET_VCPU_MMAP_SIZE`.
    pub(crate) const GET_VCPU_MMAP_SIZE: u32 = io(0x04);
}

/// Ioctls of a VM fd (besides `KVM_CHECK_EXTENSION`).
pub(crate) mod vm {
    use super::{io, iow};
    use crate::memslot::{REGION_V1_SIZE, REGION_V2_SIZE};

    /// `KVM_SET_USER_MEMORY_REGION`.
    pub(crate) const SET_USER_MEMORY_REGION: u32 = iow(0x46, REGION_V1_SIZE);
    /// `KVM_SET_USER_MEMORY_REGION2`.
    pub(crate) const SET_USER_MEMORY_REGION2: u32 = iow(0x49, REGION_V2_SIZE);
    /// `KVM_CREATE_VCPU`.
    pub(crate) const CREATE_VCPU: u32 = io(0x41);
    /// `KVM_SET_TSS_ADDR`.
    pub(crate) const SET_TSS_ADDR: u32 = io(0x47);
    /// `KVM_SET_IDENTITY_MAP_ADDR`.
    pub(crate) const SET_IDENTITY_MAP_ADDR: u32 = iow(0x48, 8);
}

/// Ioctls of a vCPU fd.
pub(crate) mod vcpu {
    use super::{ior, iow};
    use crate::{fpu::FPU_SIZE, regs::REGS_SIZE, sregs::SREGS_SIZE};

    /// `KVM_GET_REGS`.
    pub(crate) const GET_REGS: u32 = ior(0x81, REGS_SIZE);
    /// `KVM_SET_REGS`.
    pub(crate) const SET_REGS: u32 = iow(0x82, REGS_SIZE);
    /// `KVM_GET_SREGS`.
    pub(crate) const GET_SREGS: u32 = ior(0x83, SREGS_SIZE);
    /// `KVM_SET_SREGS`.
    pub(crate) const SET_SREGS: u32 = iow(0x84, SREGS_SIZE);
    /// `KVM_GET_FPU`.
    pub(crate) const GET_FPU: u32 = ior(0x8c, FPU_SIZE);
    /// `KVM_SET_FPU`.
    pub(crate) const SET_FPU: u32 = iow(0x8d, FPU_SIZE);
}

/// Most vCPUs per VM (`KVM_CAP_MAX_VCPUS`).
pub(crate) const MAX_VCPUS: usize = 64;
/// vCPU ids are `0..MAX_VCPU_IDS` (`KVM_CAP_MAX_VCPU_ID`).
pub(crate) const MAX_VCPU_IDS: usize = 64;

/// VM types accepted by `KVM_CREATE_VM` on x86.
pub(crate) mod vm_type {
    /// `KVM_X86_DEFAULT_VM`: a plain VM, the only type rkvm creates.
    pub(crate) const X86_DEFAULT: usize = 0;
}

/// Capability numbers (`KVM_CAP_*`) that rkvm answers for.
pub(crate) mod cap {
    /// `KVM_CAP_USER_MEMORY`: `KVM_SET_USER_MEMORY_REGION` works.
    pub(crate) const USER_MEMORY: usize = 3;
    /// `KVM_CAP_NR_VCPUS`: recommended most vCPUs (online host CPUs).
    pub(crate) const NR_VCPUS: usize = 9;
    /// `KVM_CAP_NR_MEMSLOTS`: number of slot ids.
    pub(crate) const NR_MEMSLOTS: usize = 10;
    /// `KVM_CAP_SET_TSS_ADDR`.
    pub(crate) const SET_TSS_ADDR: usize = 4;
    /// `KVM_CAP_SET_IDENTITY_MAP_ADDR`.
    pub(crate) const SET_IDENTITY_MAP_ADDR: usize = 37;
    /// `KVM_CAP_MAX_VCPUS`: most vCPUs per VM.
    pub(crate) const MAX_VCPUS: usize = 66;
    /// `KVM_CAP_MAX_VCPU_ID`: vCPU ids are below this.
    pub(crate) const MAX_VCPU_ID: usize = 128;
    /// `KVM_CAP_CHECK_EXTENSION_VM`: `KVM_CHECK_EXTENSION` works on VM fds.
    pub(crate) const CHECK_EXTENSION_VM: usize = 105;
    /// `KVM_CAP_USER_MEMORY2`: `KVM_SET_USER_MEMORY_REGION2` works.
    pub(crate) const USER_MEMORY2: usize = 231;
    /// `KVM_CAP_VM_TYPES`: bitmap of VM types `KVM_CREATE_VM` accepts.
    pub(crate) const VM_TYPES: usize = 235;
}

/// Size of the area a vCPU fd maps: the `kvm_run` page plus the PIO data
/// page. KVM adds a third page for the coalesced-MMIO ring; rkvm has no such
/// ring (`KVM_CAP_COALESCED_MMIO` is 0), so its mapping ends after the PIO page.
pub(crate) const VCPU_MMAP_PAGES: usize = 2;
