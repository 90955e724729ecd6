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

/// `_IOWR(KVMIO, nr, size)`: in and out.
pub(crate) const fn iowr(nr: u32, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, KVMIO, nr, size)
}

/// Ioctls of the system fd (`/dev/rkvm`).
/// `KVM_GET_STATS_FD`, on a VM or vCPU fd: a file of its statistics.
pub(crate) const GET_STATS_FD: u32 = io(0xce);

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
    /// `KVM_GET_MSR_INDEX_LIST` (`struct kvm_msr_list`: a `u32` count).
    pub(crate) const GET_MSR_INDEX_LIST: u32 = super::iowr(0x02, 4);
    /// `KVM_GET_SUPPORTED_CPUID` (`struct kvm_cpuid2` header).
    pub(crate) const GET_SUPPORTED_CPUID: u32 = super::iowr(0x05, 8);
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST` (`struct kvm_msr_list`).
    pub(crate) const GET_MSR_FEATURE_INDEX_LIST: u32 = super::iowr(0x0a, 4);
    /// `KVM_GET_MSRS` on the system fd: feature MSR values.
    pub(crate) const GET_MSRS: u32 = super::vcpu::GET_MSRS;
    /// `KVM_X86_GET_MCE_CAP_SUPPORTED` (a `u64`).
    pub(crate) const X86_GET_MCE_CAP_SUPPORTED: u32 = super::ior(0x9d, 8);
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
    /// `KVM_GET_DIRTY_LOG`: `struct kvm_dirty_log` (slot, padding, bitmap
    /// pointer).
    pub(crate) const GET_DIRTY_LOG: u32 = iow(0x42, DIRTY_LOG_SIZE);
    /// `sizeof(struct kvm_dirty_log)`.
    pub(crate) const DIRTY_LOG_SIZE: usize = 16;
    /// `KVM_CLEAR_DIRTY_LOG`: `struct kvm_clear_dirty_log` (slot,
    /// num_pages, first_page, bitmap pointer).
    pub(crate) const CLEAR_DIRTY_LOG: u32 = super::iowr(0xc0, CLEAR_DIRTY_LOG_SIZE);
    /// `sizeof(struct kvm_clear_dirty_log)`.
    pub(crate) const CLEAR_DIRTY_LOG_SIZE: usize = 24;
    /// `KVM_ENABLE_CAP` on a VM fd: `struct kvm_enable_cap`.
    pub(crate) const ENABLE_CAP: u32 = iow(0xa3, ENABLE_CAP_SIZE);
    /// `sizeof(struct kvm_enable_cap)`.
    pub(crate) const ENABLE_CAP_SIZE: usize = 104;
    /// `KVM_RESET_DIRTY_RINGS`.
    pub(crate) const RESET_DIRTY_RINGS: u32 = io(0xc7);
    /// `KVM_IRQ_LINE` and `KVM_IRQ_LINE_STATUS` (`struct kvm_irq_level`).
    pub(crate) const IRQ_LINE: u32 = iow(0x61, 8);
    pub(crate) const IRQ_LINE_STATUS: u32 = super::iowr(0x67, 8);
    /// `KVM_SET_GSI_ROUTING` (`struct kvm_irq_routing`, its header).
    pub(crate) const SET_GSI_ROUTING: u32 = iow(0x6a, 8);
    /// `KVM_IRQFD` (`struct kvm_irqfd`), `KVM_IOEVENTFD` (`struct
    /// kvm_ioeventfd`).
    pub(crate) const IRQFD: u32 = iow(0x76, 32);
    pub(crate) const IOEVENTFD: u32 = iow(0x79, 64);
    /// `KVM_SIGNAL_MSI` (`struct kvm_msi`).
    pub(crate) const SIGNAL_MSI: u32 = iow(0xa5, MSI_SIZE);
    pub(crate) const MSI_SIZE: usize = 32;
    /// `KVM_SET_CLOCK`, `KVM_GET_CLOCK`: `struct kvm_clock_data`.
    pub(crate) const SET_CLOCK: u32 = iow(0x7b, crate::pvclock::CLOCK_DATA_SIZE);
    pub(crate) const GET_CLOCK: u32 = super::ior(0x7c, crate::pvclock::CLOCK_DATA_SIZE);
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
    /// `KVM_RUN`.
    pub(crate) const RUN: u32 = super::io(0x80);
    /// `KVM_GET_MSRS` (`struct kvm_msrs` header: count and padding).
    pub(crate) const GET_MSRS: u32 = super::iowr(0x88, 8);
    /// `KVM_SET_MSRS`.
    pub(crate) const SET_MSRS: u32 = iow(0x89, 8);
    /// `KVM_SET_CPUID2` (`struct kvm_cpuid2` header).
    pub(crate) const SET_CPUID2: u32 = iow(0x90, 8);
    /// `KVM_GET_CPUID2`.
    pub(crate) const GET_CPUID2: u32 = super::iowr(0x91, 8);
    /// `KVM_SET_TSC_KHZ`, `KVM_GET_TSC_KHZ` (also on the VM fd).
    pub(crate) const SET_TSC_KHZ: u32 = super::io(0xa2);
    pub(crate) const GET_TSC_KHZ: u32 = super::io(0xa3);
    /// `KVM_GET_MP_STATE`, `KVM_SET_MP_STATE` (`struct kvm_mp_state`).
    pub(crate) const GET_MP_STATE: u32 = ior(0x98, 4);
    pub(crate) const SET_MP_STATE: u32 = iow(0x99, 4);
    /// `KVM_GET_VCPU_EVENTS`, `KVM_SET_VCPU_EVENTS` (`struct
    /// kvm_vcpu_events`, 64 bytes: `vcpu_events.rs`).
    pub(crate) const GET_VCPU_EVENTS: u32 = ior(0x9f, 64);
    pub(crate) const SET_VCPU_EVENTS: u32 = iow(0xa0, 64);
    /// `KVM_GET_DEBUGREGS`, `KVM_SET_DEBUGREGS` (`struct kvm_debugregs`,
    /// 128 bytes: `debugreg.rs`).
    pub(crate) const GET_DEBUGREGS: u32 = ior(0xa1, 128);
    pub(crate) const SET_DEBUGREGS: u32 = iow(0xa2, 128);
    /// `KVM_NMI`.
    pub(crate) const NMI: u32 = super::io(0x9a);
    /// `KVM_GET_LAPIC`, `KVM_SET_LAPIC` (`struct kvm_lapic_state`).
    pub(crate) const GET_LAPIC: u32 = ior(0x8e, LAPIC_STATE_SIZE);
    pub(crate) const SET_LAPIC: u32 = iow(0x8f, LAPIC_STATE_SIZE);
    pub(crate) const LAPIC_STATE_SIZE: usize = 1024;
    /// `KVM_X86_SETUP_MCE` (MCG_CAP, a `u64`).
    pub(crate) const X86_SETUP_MCE: u32 = iow(0x9c, 8);
    /// `KVM_X86_SET_MCE` (`struct kvm_x86_mce`).
    pub(crate) const X86_SET_MCE: u32 = iow(0x9e, X86_MCE_SIZE);
    /// Size of `struct kvm_x86_mce`.
    pub(crate) const X86_MCE_SIZE: usize = 64;
    /// `KVM_INTERRUPT` (`struct kvm_interrupt`: the vector).
    pub(crate) const INTERRUPT: u32 = iow(0x86, 4);
    /// `KVM_SET_VAPIC_ADDR` (`struct kvm_vapic_addr`: a `u64` gpa).
    pub(crate) const SET_VAPIC_ADDR: u32 = iow(0x93, 8);
    /// `KVM_SET_GUEST_DEBUG` (`struct kvm_guest_debug`).
    pub(crate) const SET_GUEST_DEBUG: u32 = iow(0x9b, GUEST_DEBUG_SIZE);
    pub(crate) const GUEST_DEBUG_SIZE: usize = 72;
    /// `KVM_SET_SIGNAL_MASK` (`struct kvm_signal_mask` header: `len`).
    pub(crate) const SET_SIGNAL_MASK: u32 = iow(0x8b, 4);
    /// `KVM_GET_XSAVE` (`struct kvm_xsave`).
    pub(crate) const GET_XSAVE: u32 = ior(0xa4, XSAVE_SIZE);
    /// `KVM_GET_XSAVE2`: as `KVM_GET_XSAVE`, in the size `KVM_CAP_XSAVE2`
    /// reports (`struct kvm_xsave` is enough for what rkvm offers).
    pub(crate) const GET_XSAVE2: u32 = ior(0xcf, XSAVE_SIZE);
    /// `KVM_SET_XSAVE`.
    pub(crate) const SET_XSAVE: u32 = iow(0xa5, XSAVE_SIZE);
    /// `KVM_GET_XCRS` (`struct kvm_xcrs`).
    pub(crate) const GET_XCRS: u32 = ior(0xa6, XCRS_SIZE);
    /// `KVM_SET_XCRS`.
    pub(crate) const SET_XCRS: u32 = iow(0xa7, XCRS_SIZE);

    /// Size of `struct kvm_xsave`.
    pub(crate) const XSAVE_SIZE: usize = 4096;
    /// Size of `struct kvm_xcrs`: `nr_xcrs`, `flags`, 16 `struct kvm_xcr`
    /// (`xcr`, `reserved`, `value`) and 16 words of padding.
    pub(crate) const XCRS_SIZE: usize = 8 + 16 * 16 + 16 * 8;
    /// Most entries `struct kvm_xcrs` has (`KVM_MAX_XCRS`).
    pub(crate) const MAX_XCRS: usize = 16;
}

/// Most machine-check banks a vCPU can have (`KVM_MAX_MCE_BANKS`).
pub(crate) const MAX_MCE_BANKS: usize = 32;

/// Most vCPUs per VM (`KVM_CAP_MAX_VCPUS`).
pub(crate) const MAX_VCPUS: usize = 64;
/// vCPU ids are `0..MAX_VCPU_IDS` (`KVM_CAP_MAX_VCPU_ID`).
pub(crate) const MAX_VCPU_IDS: usize = 64;
/// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`'s flags, those rkvm implements
/// (not the EOI-broadcast ones).
pub(crate) mod x2apic_api {
    /// x2APIC IDs in full: in `KVM_GET/SET_LAPIC`'s ID register, and in
    /// MSI address bits 63:40 (KVM's extended destination ID).
    pub(crate) const USE_32BIT_IDS: u32 = 1 << 0;
    /// A device's destination 0xff is no broadcast to x2APIC-mode APICs.
    pub(crate) const DISABLE_BROADCAST_QUIRK: u32 = 1 << 1;
    pub(crate) const VALID: u32 = USE_32BIT_IDS | DISABLE_BROADCAST_QUIRK;
}

/// `kvm_guest_debug.control` bits.
pub(crate) mod guestdbg {
    pub(crate) const ENABLE: u32 = 1 << 0;
    pub(crate) const SINGLESTEP: u32 = 1 << 1;
    /// INT3 exits (`#BP`) instead of reaching the guest.
    pub(crate) const USE_SW_BP: u32 = 1 << 16;
    /// The debugger's DR0-3 and DR7 replace the guest's.
    pub(crate) const USE_HW_BP: u32 = 1 << 17;
    /// Queue a `#DB` or `#BP` for the guest (one-shot, not kept).
    pub(crate) const INJECT_DB: u32 = 1 << 18;
    pub(crate) const INJECT_BP: u32 = 1 << 19;
    /// No interrupts go in while debugging.
    pub(crate) const BLOCKIRQ: u32 = 1 << 20;
    /// What rkvm implements: `KVM_CAP_SET_GUEST_DEBUG2`.
    pub(crate) const VALID: u32 =
        ENABLE | SINGLESTEP | USE_SW_BP | USE_HW_BP | INJECT_DB | INJECT_BP | BLOCKIRQ;
}

/// KVM's `KVM_MAX_IRQ_ROUTES`: most GSI routes (and GSIs below it).
pub(crate) const MAX_IRQ_ROUTES: usize = 4096;

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
    /// `KVM_CAP_VAPIC`: `KVM_SET_VAPIC_ADDR` works.
    pub(crate) const VAPIC: usize = 6;
    /// `KVM_CAP_SET_GUEST_DEBUG`: `KVM_SET_GUEST_DEBUG` works.
    pub(crate) const SET_GUEST_DEBUG: usize = 23;
    /// `KVM_CAP_X86_ROBUST_SINGLESTEP`: instructions the kernel completes
    /// for the guest single-step too.
    pub(crate) const X86_ROBUST_SINGLESTEP: usize = 51;
    /// `KVM_CAP_SET_GUEST_DEBUG2`: the `KVM_SET_GUEST_DEBUG` control bits.
    pub(crate) const SET_GUEST_DEBUG2: usize = 195;
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
    /// `KVM_CAP_READONLY_MEM`.
    pub(crate) const READONLY_MEM: usize = 81;
    /// `KVM_CAP_EXT_CPUID`: `KVM_GET_SUPPORTED_CPUID`.
    pub(crate) const EXT_CPUID: usize = 7;
    /// `KVM_CAP_IMMEDIATE_EXIT`.
    pub(crate) const IMMEDIATE_EXIT: usize = 136;
    /// `KVM_CAP_USER_NMI`: `KVM_NMI`.
    pub(crate) const USER_NMI: usize = 22;
    /// `KVM_CAP_ENABLE_CAP_VM`: `KVM_ENABLE_CAP` on VM fds.
    pub(crate) const ENABLE_CAP_VM: usize = 98;
    /// `KVM_CAP_XSAVE2`: `KVM_GET_XSAVE2`; the answer is its buffer size.
    pub(crate) const XSAVE2: usize = 208;
    /// `KVM_CAP_XSAVE`: `KVM_GET_XSAVE`/`KVM_SET_XSAVE`.
    pub(crate) const XSAVE: usize = 55;
    /// `KVM_CAP_XCRS`: `KVM_GET_XCRS`/`KVM_SET_XCRS`.
    pub(crate) const XCRS: usize = 56;
    /// `KVM_CAP_SYNC_MMU`: guest memory follows changes to the VMM's
    /// mappings (MMU notifiers), so it need not be pinned.
    pub(crate) const SYNC_MMU: usize = 16;
    /// `KVM_GET_STATS_FD` on VM and vCPU fds.
    pub(crate) const BINARY_STATS_FD: usize = 203;
    /// `KVM_GET_MP_STATE`/`KVM_SET_MP_STATE`.
    pub(crate) const MP_STATE: usize = 14;
    /// Deleting a slot (size 0) works; adjacent slots work; an internal
    /// error exit fills `internal.ndata`/`data`. Old promises QEMU still
    /// checks, all kept.
    pub(crate) const DESTROY_MEMORY_REGION_WORKS: usize = 21;
    pub(crate) const JOIN_MEMORY_REGIONS_WORKS: usize = 30;
    pub(crate) const INTERNAL_ERROR_DATA: usize = 40;
    /// `KVM_GET_TSC_KHZ` on vCPU and VM fds.
    pub(crate) const GET_TSC_KHZ: usize = 61;
    /// `KVM_GET_VCPU_EVENTS`/`KVM_SET_VCPU_EVENTS` (with the interrupt
    /// shadow in them; x86 KVM never reports `KVM_CAP_INTR_SHADOW`, and
    /// neither does rkvm).
    pub(crate) const VCPU_EVENTS: usize = 41;
    /// `KVM_GET_DEBUGREGS`/`KVM_SET_DEBUGREGS`.
    pub(crate) const DEBUGREGS: usize = 50;
    /// `KVM_GET_CLOCK`/`KVM_SET_CLOCK`; the answer is the `KVM_CLOCK_*`
    /// flags they know.
    pub(crate) const ADJUST_CLOCK: usize = 39;
    /// `KVM_CLEAR_DIRTY_LOG` and manual dirty-log protection, enabled with
    /// `KVM_ENABLE_CAP`; the answer is the options it takes.
    pub(crate) const MANUAL_DIRTY_LOG_PROTECT2: usize = 168;
    /// The per-vCPU dirty ring, set up with `KVM_ENABLE_CAP`; the answer
    /// is the largest ring in bytes. `_ACQ_REL` says the VMM must
    /// harvest with acquire and release; x86's total store order makes
    /// the two the same ring, as in KVM.
    pub(crate) const DIRTY_LOG_RING: usize = 192;
    pub(crate) const DIRTY_LOG_RING_ACQ_REL: usize = 223;
    /// `KVM_CAP_IRQCHIP`: an in-kernel irqchip (with a split irqchip, the
    /// local APICs; `KVM_CREATE_IRQCHIP` stays `ENOTTY`, as KVM without
    /// its IOAPIC).
    pub(crate) const IRQCHIP: usize = 0;
    /// `KVM_CAP_SPLIT_IRQCHIP`: local APICs in the kernel, PIC and IOAPIC
    /// in the VMM.
    pub(crate) const SPLIT_IRQCHIP: usize = 121;
    /// `KVM_CAP_X2APIC_API`: the flags of [`super::x2apic_api`].
    pub(crate) const X2APIC_API: usize = 129;
    /// `KVM_CAP_IRQ_ROUTING`: `KVM_SET_GSI_ROUTING`.
    pub(crate) const IRQ_ROUTING: usize = 25;
    /// `KVM_CAP_IRQ_INJECT_STATUS`: `KVM_IRQ_LINE_STATUS`.
    pub(crate) const IRQ_INJECT_STATUS: usize = 26;
    /// `KVM_CAP_SIGNAL_MSI`: `KVM_SIGNAL_MSI`.
    pub(crate) const SIGNAL_MSI: usize = 77;
    /// `KVM_CAP_IRQFD`: `KVM_IRQFD` (without resampling).
    pub(crate) const IRQFD: usize = 32;
    /// `KVM_CAP_IOEVENTFD`, `_NO_LENGTH` and `_ANY_LENGTH`:
    /// `KVM_IOEVENTFD`, also with length 0 (any length).
    pub(crate) const IOEVENTFD: usize = 36;
    pub(crate) const IOEVENTFD_NO_LENGTH: usize = 100;
    pub(crate) const IOEVENTFD_ANY_LENGTH: usize = 122;
    /// `KVM_CAP_TSC_DEADLINE_TIMER`: the APIC timer's TSC-deadline mode.
    pub(crate) const TSC_DEADLINE_TIMER: usize = 72;
    /// Machine-check injection (`KVM_X86_SETUP_MCE`, `KVM_X86_SET_MCE`);
    /// the answer is the most banks a vCPU can have.
    pub(crate) const MCE: usize = 31;
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST` and `KVM_GET_MSRS` on the
    /// system fd.
    pub(crate) const GET_MSR_FEATURES: usize = 153;
}

/// `KVM_MP_STATE_*`: a vCPU's multiprocessing state.
pub(crate) mod mp_state {
    /// Running (or halted in userspace's care, without an in-kernel APIC).
    pub(crate) const RUNNABLE: u32 = 0;
    /// An AP waiting for INIT.
    pub(crate) const UNINITIALIZED: u32 = 1;
    /// An AP waiting for a SIPI.
    pub(crate) const INIT_RECEIVED: u32 = 2;
    /// Halted until an interrupt (with an in-kernel APIC).
    pub(crate) const HALTED: u32 = 3;
    /// Set only: INIT received with a SIPI pending.
    pub(crate) const SIPI_RECEIVED: u32 = 4;
}

/// `KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)` options (`args[0]`).
pub(crate) mod dirty_log {
    /// `KVM_GET_DIRTY_LOG` only reads; `KVM_CLEAR_DIRTY_LOG` re-protects.
    pub(crate) const MANUAL_PROTECT_ENABLE: u64 = 1 << 0;
    /// A slot's log starts with every page set (and the slot is not
    /// write-protected until cleared).
    pub(crate) const INITIALLY_SET: u64 = 1 << 1;
    /// What `KVM_CHECK_EXTENSION` reports.
    pub(crate) const MANUAL_CAPS: u64 = MANUAL_PROTECT_ENABLE | INITIALLY_SET;
}

/// Size of the area a vCPU fd maps: the `kvm_run` page plus the PIO data
/// page. KVM adds a third page for the coalesced-MMIO ring; rkvm has no such
/// ring (`KVM_CAP_COALESCED_MMIO` is 0), so its mapping ends after the PIO page.
pub(crate) const VCPU_MMAP_PAGES: usize = 2;

/// Where a vCPU fd maps its dirty ring, in pages (`KVM_DIRTY_LOG_PAGE_OFFSET`).
pub(crate) const DIRTY_RING_PAGE_OFFSET: usize = 64;

/// The largest dirty ring in bytes: `KVM_DIRTY_RING_MAX_ENTRIES` (65536)
/// entries of 16 bytes (`mmu/dirty_ring.rs`, where the host tests check
/// that the two agree).
pub(crate) const DIRTY_RING_MAX_BYTES: u64 = 65536 * 16;

/// `struct kvm_run`: the offsets of the fields rkvm reads and writes, and
/// the exit reasons it reports.
pub(crate) mod run {
    pub(crate) const REQUEST_INTERRUPT_WINDOW: usize = 0;
    pub(crate) const IMMEDIATE_EXIT: usize = 1;
    pub(crate) const EXIT_REASON: usize = 8;
    pub(crate) const READY_FOR_INTERRUPT_INJECTION: usize = 12;
    pub(crate) const IF_FLAG: usize = 13;
    pub(crate) const FLAGS: usize = 14;
    pub(crate) const CR8: usize = 16;
    pub(crate) const APIC_BASE: usize = 24;
    /// The exit-specific union.
    pub(crate) const EXIT: usize = 32;
    pub(crate) const IO_DIRECTION: usize = EXIT;
    pub(crate) const IO_SIZE: usize = EXIT + 1;
    pub(crate) const IO_PORT: usize = EXIT + 2;
    pub(crate) const IO_COUNT: usize = EXIT + 4;
    pub(crate) const IO_DATA_OFFSET: usize = EXIT + 8;
    pub(crate) const MMIO_PHYS_ADDR: usize = EXIT;
    pub(crate) const MMIO_DATA: usize = EXIT + 8;
    pub(crate) const MMIO_LEN: usize = EXIT + 16;
    pub(crate) const MMIO_IS_WRITE: usize = EXIT + 20;
    pub(crate) const FAIL_ENTRY_REASON: usize = EXIT;
    pub(crate) const FAIL_ENTRY_CPU: usize = EXIT + 8;
    pub(crate) const INTERNAL_SUBERROR: usize = EXIT;
    pub(crate) const INTERNAL_NDATA: usize = EXIT + 4;
    pub(crate) const INTERNAL_DATA: usize = EXIT + 8;
    /// Entries of `internal.data`.
    pub(crate) const INTERNAL_DATA_MAX: usize = 16;
    /// `debug.arch`: the exception, the linear RIP, DR6 and DR7.
    pub(crate) const DEBUG_EXCEPTION: usize = EXIT;
    pub(crate) const DEBUG_PC: usize = EXIT + 8;
    pub(crate) const DEBUG_DR6: usize = EXIT + 16;
    pub(crate) const DEBUG_DR7: usize = EXIT + 24;

    pub(crate) const IO_IN: u8 = 0;
    pub(crate) const IO_OUT: u8 = 1;

    /// `KVM_EXIT_*`.
    pub(crate) mod exit {
        /// What an error return leaves (e.g. `EFAULT` from a fault).
        pub(crate) const UNKNOWN: u32 = 0;
        pub(crate) const IO: u32 = 2;
        pub(crate) const DEBUG: u32 = 4;
        pub(crate) const HLT: u32 = 5;
        /// The guest can take an interrupt (`request_interrupt_window`).
        pub(crate) const IRQ_WINDOW_OPEN: u32 = 7;
        pub(crate) const MMIO: u32 = 6;
        pub(crate) const SHUTDOWN: u32 = 8;
        pub(crate) const FAIL_ENTRY: u32 = 9;
        pub(crate) const INTR: u32 = 10;
        pub(crate) const INTERNAL_ERROR: u32 = 17;
        /// The guest ended the service of a vector the VMM's IOAPIC
        /// routes (split irqchip): `eoi.vector`.
        pub(crate) const IOAPIC_EOI: u32 = 26;
        /// The vCPU's dirty ring is (soft) full: harvest and reset it.
        pub(crate) const DIRTY_RING_FULL: u32 = 31;
    }

    /// `KVM_INTERNAL_ERROR_*` suberrors.
    pub(crate) mod internal {
        pub(crate) const EMULATION: u32 = 1;
        pub(crate) const UNEXPECTED_EXIT_REASON: u32 = 4;
    }
}
