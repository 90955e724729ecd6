// SPDX-License-Identifier: GPL-2.0

//! The C helpers of `helpers.c` (see `helpers.h` for why each exists),
//! declared once. Only the shims, the MMU's glue and the backends' world
//! switches call them, each through a safe wrapper.

use kernel::bindings;

/// `struct fpu_guest`, only ever behind a pointer from
/// `rkvm_guest_fpu_alloc`.
#[repr(C)]
pub(crate) struct FpuGuest {
    _opaque: [u8; 0],
}

/// `struct rkvm_irqfd` (helpers.c), only ever behind a pointer.
#[repr(C)]
pub(crate) struct IrqFd {
    _opaque: [u8; 0],
}

/// `struct rkvm_mn` (helpers.c), only ever behind a pointer.
#[repr(C)]
pub(crate) struct Mn {
    _opaque: [u8; 0],
}

/// `struct rkvm_mn_ops` (helpers.h): rkvm's MMU-notifier callbacks.
#[repr(C)]
pub(crate) struct MnOps {
    pub(crate) invalidate_start:
        unsafe extern "C" fn(ctx: *const core::ffi::c_void, start: usize, end: usize, blockable: bool) -> i32,
    pub(crate) invalidate_end:
        unsafe extern "C" fn(ctx: *const core::ffi::c_void, start: usize, end: usize),
    pub(crate) release: unsafe extern "C" fn(ctx: *const core::ffi::c_void),
    pub(crate) age: unsafe extern "C" fn(
        ctx: *const core::ffi::c_void,
        start: usize,
        end: usize,
        clear: bool,
        flush: bool,
    ) -> bool,
}

/// `struct rkvm_vmcs_pin` (helpers.c), only ever behind a pointer.
#[repr(C)]
pub(crate) struct VmcsPin {
    _opaque: [u8; 0],
}

/// `struct rkvm_vmx_host_percpu` (helpers.h): the host state of this CPU
/// that a VM exit loads.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VmxHostPerCpu {
    pub(crate) gdt_base: u64,
    pub(crate) tr_base: u64,
    pub(crate) idt_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
}

// Only pointers to kernel structs cross the boundary; `struct page` and
// `lock_class_key` contain zero-sized bindgen types, which the lint flags.
#[allow(improper_ctypes)]
extern "C" {
    // The CPU: MSRs, control registers.
    pub(crate) fn rkvm_rdmsr_safe(msr: u32, val: *mut u64) -> i32;
    pub(crate) fn rkvm_wrmsr_safe(msr: u32, val: u64) -> i32;
    pub(crate) fn rkvm_cr4_read() -> usize;
    pub(crate) fn rkvm_cr4_set_bits(mask: usize);
    pub(crate) fn rkvm_cr4_clear_bits(mask: usize);
    pub(crate) fn rkvm_cr0_read() -> usize;
    pub(crate) fn rkvm_num_online_cpus() -> u32;
    pub(crate) fn rkvm_tsc_khz() -> u32;
    /// Fills `struct rkvm_host_time`, which `pvclock::HostTime` mirrors.
    pub(crate) fn rkvm_host_time(t: *mut crate::pvclock::HostTime);

    // SVM and VMX instructions with exception-table fixups.
    pub(crate) fn rkvm_vmxon(phys: u64) -> i32;
    pub(crate) fn rkvm_vmxoff() -> i32;
    pub(crate) fn rkvm_stgi() -> i32;
    pub(crate) fn rkvm_vmread(field: u64, value: *mut u64) -> i32;
    pub(crate) fn rkvm_vmwrite(field: u64, value: u64) -> i32;
    pub(crate) fn rkvm_vmreads(fields: *const u32, values: *mut u64, n: u32, failed: *mut u32)
        -> i32;
    pub(crate) fn rkvm_vmwrites(
        fields: *const u32,
        values: *const u64,
        n: u32,
        failed: *mut u32,
    ) -> i32;
    pub(crate) fn rkvm_host_cs() -> u16;
    pub(crate) fn rkvm_host_ds() -> u16;
    pub(crate) fn rkvm_host_tr() -> u16;
    pub(crate) fn rkvm_cr3_read() -> u64;
    pub(crate) fn rkvm_svm_run(vmcb_pa: u64, gprs: *mut u64, host_save_pa: u64) -> i32;
    pub(crate) fn rkvm_request_immediate_exit();
    pub(crate) fn rkvm_vmx_run(gprs: *mut u64, cr2: *mut u64, launched: bool) -> i32;
    pub(crate) static rkvm_vmx_vmexit: [u8; 0];
    pub(crate) fn rkvm_vmx_forward_nmi();
    pub(crate) fn rkvm_l1d_flush_setup() -> i32;
    pub(crate) fn rkvm_l1d_flush_cleanup();
    pub(crate) fn rkvm_l1d_flush_request();
    pub(crate) fn rkvm_vmcs_pin_alloc(phys: u64) -> *mut VmcsPin;
    pub(crate) fn rkvm_vmcs_pin_free(p: *mut VmcsPin);
    pub(crate) fn rkvm_vmcs_pin_register(p: *mut VmcsPin);
    pub(crate) fn rkvm_vmcs_pin_unregister(p: *mut VmcsPin);
    pub(crate) fn rkvm_vmcs_pin_load(p: *mut VmcsPin) -> i32;
    pub(crate) fn rkvm_vmcs_pin_put(p: *mut VmcsPin) -> i32;
    pub(crate) fn rkvm_vmcs_pin_launched(p: *const VmcsPin) -> bool;
    pub(crate) fn rkvm_vmcs_pin_set_launched(p: *mut VmcsPin);
    pub(crate) fn rkvm_preempt_notifiers_enable(on: bool);
    pub(crate) fn rkvm_vmx_host_percpu(h: *mut VmxHostPerCpu);
    pub(crate) fn rkvm_vmx_host_pertask(fs_base: *mut u64, kernel_gs_base: *mut u64);
    pub(crate) fn rkvm_invept(kind: u64, eptp: u64, zero: u64) -> i32;
    pub(crate) fn rkvm_invvpid(kind: u64, vpid: u64, gva: u64) -> i32;

    // CPU hotplug.
    pub(crate) fn rkvm_cpuhp_setup(
        name: *const u8,
        online: unsafe extern "C" fn(cpu: u32) -> i32,
        offline: unsafe extern "C" fn(cpu: u32) -> i32,
    ) -> i32;
    pub(crate) fn rkvm_cpuhp_remove(state: i32);

    // The current task and CPU.
    pub(crate) fn rkvm_local_irq_disable();
    pub(crate) fn rkvm_local_irq_enable();
    pub(crate) fn rkvm_smp_processor_id() -> u32;
    pub(crate) fn rkvm_signal_pending() -> bool;
    pub(crate) fn rkvm_need_resched() -> bool;
    pub(crate) fn rkvm_cond_resched();
    pub(crate) fn rkvm_rcuwait_prepare(w: *mut bindings::rcuwait);
    pub(crate) fn rkvm_set_current_interruptible();
    pub(crate) fn rkvm_kick_cpu(cpu: u32);

    // irqfd: an eventfd's wait-queue entry.
    pub(crate) fn rkvm_irqfd_new(
        fd: i32,
        gsi: u32,
        fire: unsafe extern "C" fn(owner: *const core::ffi::c_void, gsi: u32),
        owner: *const core::ffi::c_void,
    ) -> *mut IrqFd;
    pub(crate) fn rkvm_irqfd_eventfd(p: *const IrqFd) -> *const bindings::eventfd_ctx;
    pub(crate) fn rkvm_irqfd_gsi(p: *const IrqFd) -> u32;
    pub(crate) fn rkvm_irqfd_arm(p: *mut IrqFd) -> i32;
    pub(crate) fn rkvm_irqfd_free(p: *mut IrqFd);
    pub(crate) fn rkvm_sigset_activate(mask: u64);
    pub(crate) fn rkvm_sigset_deactivate();

    // The guest's extended state.
    pub(crate) fn rkvm_guest_fpu_alloc() -> *mut FpuGuest;
    pub(crate) fn rkvm_guest_fpu_free(gfpu: *mut FpuGuest);
    pub(crate) fn rkvm_guest_fpu_swap(gfpu: *mut FpuGuest, enter_guest: bool);
    pub(crate) fn rkvm_guest_fpu_prepare_entry();
    pub(crate) fn rkvm_guest_fpu_get_uabi(
        gfpu: *mut FpuGuest,
        buf: *mut u8,
        size: u32,
        xfeatures: u64,
    );
    pub(crate) fn rkvm_guest_fpu_set_uabi(gfpu: *mut FpuGuest, buf: *const u8, xfeatures: u64)
        -> i32;
    pub(crate) fn rkvm_host_xcr0() -> u64;
    pub(crate) fn rkvm_xsetbv0(value: u64);
    pub(crate) fn rkvm_load_guest_debugregs(db: *const u64);
    pub(crate) fn rkvm_restore_host_debugregs();

    // Files.
    pub(crate) fn rkvm_anon_inode_getfd(
        name: *const u8,
        fops: *const bindings::file_operations,
        private: *mut core::ffi::c_void,
        flags: i32,
        pread: bool,
    ) -> i32;

    // Memory: user space, pages, the direct map.
    pub(crate) fn rkvm_access_ok(addr: u64, size: u64) -> bool;
    pub(crate) fn rkvm_cmpxchg_user(hva: u64, size: u32, old: u64, new: u64) -> i32;
    pub(crate) fn rkvm_page_to_phys(page: *mut bindings::page) -> u64;
    pub(crate) fn rkvm_virt_to_phys(p: *const core::ffi::c_void) -> u64;
    pub(crate) fn rkvm_phys_to_virt(phys: u64) -> *mut core::ffi::c_void;
    pub(crate) fn rkvm_gup(hva: u64, write: bool, page: *mut *mut bindings::page) -> i32;
    pub(crate) fn rkvm_gup_fast_only_write(hva: u64, page: *mut *mut bindings::page) -> bool;
    pub(crate) fn rkvm_page_to_pfn(page: *mut bindings::page) -> u64;
    pub(crate) fn rkvm_release_pfn(pfn: u64, dirty: bool);
    pub(crate) fn rkvm_page_zapped(pfn: u64, dirty: bool, accessed: bool);
    pub(crate) fn rkvm_host_mapping_level(hva: u64) -> i32;
    pub(crate) fn rkvm_mn_register(
        mm: *mut bindings::mm_struct,
        ctx: *const core::ffi::c_void,
        ops: *const MnOps,
    ) -> *mut Mn;
    pub(crate) fn rkvm_mn_unregister(m: *mut Mn, mm: *mut bindings::mm_struct);

    // The TDP MMU's table pages and TLB-flush kicks.
    pub(crate) fn rkvm_pt_alloc() -> u64;
    pub(crate) fn rkvm_pt_free(phys: u64);
    pub(crate) fn rkvm_pt_free_rcu(phys: u64);
    pub(crate) fn rkvm_rcu_barrier();
    pub(crate) fn rkvm_cpumask_alloc() -> *mut core::ffi::c_void;
    pub(crate) fn rkvm_cpumask_free(mask: *mut core::ffi::c_void);
    pub(crate) fn rkvm_kick_cpus_wait(mask: *mut core::ffi::c_void, cpus: *const u32, n: u32);

    // mmu_lock (rwlock_t: the lock functions are macros).
    pub(crate) fn rkvm_rwlock_init(
        lock: *mut bindings::rwlock_t,
        name: *const u8,
        key: *mut bindings::lock_class_key,
    );
    pub(crate) fn rkvm_read_lock(lock: *mut bindings::rwlock_t);
    pub(crate) fn rkvm_read_unlock(lock: *mut bindings::rwlock_t);
    pub(crate) fn rkvm_write_lock(lock: *mut bindings::rwlock_t);
    pub(crate) fn rkvm_write_unlock(lock: *mut bindings::rwlock_t);
    pub(crate) fn rkvm_rwlock_needbreak(lock: *mut bindings::rwlock_t) -> bool;
    pub(crate) fn rkvm_cond_resched_rwlock_write(lock: *mut bindings::rwlock_t);
}
