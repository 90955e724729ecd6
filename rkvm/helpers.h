/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for rkvm's Rust code: static inlines and instructions that need
 * exception-table fixups, which Rust cannot reach or express. Each helper is
 * a thin wrapper with no policy; the callers in Rust own the logic.
 */
#ifndef RKVM_HELPERS_H
#define RKVM_HELPERS_H

#include <linux/types.h>
#include <linux/spinlock_types.h>

struct rcuwait;
struct rkvm_irqfd;
struct eventfd_ctx;

struct lock_class_key;

struct file_operations;
struct page;

/* rdmsr/wrmsr that return -EIO instead of oopsing on #GP. */
int rkvm_rdmsr_safe(u32 msr, u64 *val);
int rkvm_wrmsr_safe(u32 msr, u64 val);

/* CR4 through the kernel's per-CPU shadow; call with preemption disabled. */
unsigned long rkvm_cr4_read(void);
void rkvm_cr4_set_bits(unsigned long mask);
void rkvm_cr4_clear_bits(unsigned long mask);
unsigned long rkvm_cr0_read(void);

/* VMXON/VMXOFF/STGI; 0 on success, -EIO if the instruction faulted. */
int rkvm_vmxon(u64 phys);
int rkvm_vmxoff(void);
int rkvm_stgi(void);

/*
 * VMCS instructions (IRQs or preemption off, in VMX operation): 0
 * (VMsucceed), X86_EFLAGS_CF (VMfailInvalid), X86_EFLAGS_ZF (VMfailValid:
 * the error number is in the current VMCS), or -EIO if it faulted.
 */
int rkvm_vmclear(u64 phys);
int rkvm_vmptrld(u64 phys);
int rkvm_vmread(u64 field, u64 *value);
int rkvm_vmwrite(u64 field, u64 value);
int rkvm_vmreads(const u32 *fields, u64 *values, u32 n, u32 *failed);
int rkvm_vmwrites(const u32 *fields, const u64 *values, u32 n, u32 *failed);
/* The host's kernel CS, DS/SS and TR selectors; CR3 (preemption off). */
u16 rkvm_host_cs(void);
u16 rkvm_host_ds(void);
u16 rkvm_host_tr(void);
u64 rkvm_cr3_read(void);

/* A dynamic CPU-hotplug state whose callbacks run on the CPU concerned. */
int rkvm_cpuhp_setup(const char *name, int (*online)(unsigned int cpu),
		     int (*offline)(unsigned int cpu));
void rkvm_cpuhp_remove(int state);

/* anon_inode_getfd(), with FMODE_PREAD if pread. */
int rkvm_anon_inode_getfd(const char *name, const struct file_operations *fops,
			  void *priv, int flags, bool pread);

u64 rkvm_page_to_phys(struct page *page);

/* access_ok() on a userspace range given as integers. */
bool rkvm_access_ok(u64 addr, u64 size);

unsigned int rkvm_num_online_cpus(void);
unsigned int rkvm_tsc_khz(void);

/*
 * One reading of the host's clocks for kvmclock (rkvm/pvclock.rs,
 * struct HostTime): the TSC, CLOCK_MONOTONIC_RAW plus the time spent
 * suspended (KVM's kvmclock base), CLOCK_REALTIME, and whether the
 * clocksource is the TSC, in which case the times were computed from
 * exactly that TSC value; and the CPU it read the TSC on
 * (ktime_get_snapshot_id is not a static inline,
 * but struct system_time_snapshot and TK_OFFS_BOOT are C-only).
 */
struct rkvm_host_time {
	u64 tsc;
	u64 base_ns;
	u64 real_ns;
	bool tsc_based;
	u32 cpu;
};
void rkvm_host_time(struct rkvm_host_time *t);
void rkvm_load_guest_debugregs(const u64 *db);
void rkvm_restore_host_debugregs(void);

/*
 * SVM world switch: rkvm_svm_vmrun is in svm/vmenter.S. IRQs off. 0, or
 * -EIO if an SVM instruction faulted (virtualization was turned off under
 * rkvm, e.g. by an emergency reboot): the guest did not run.
 */
int rkvm_svm_vmrun(u64 vmcb_pa, u64 *gprs, u64 host_save_pa);
int rkvm_svm_run(u64 vmcb_pa, u64 *gprs, u64 host_save_pa);
/*
 * Sends this CPU a reschedule IPI. Called with IRQs off before a guest
 * entry: the entry completes its event injection, then exits for the IPI.
 */
void rkvm_request_immediate_exit(void);
/*
 * The exit code rkvm_svm_run reports for a VMCB holding the host's state
 * (its canary; not an SVM exit code): KVM_RUN ends in
 * KVM_EXIT_INTERNAL_ERROR with it.
 */
#define RKVM_SVM_EXIT_HOST_STATE	0x7e57ULL

/*
 * VMX world switch (IRQs off, the vCPU's VMCS current): runs the guest
 * with the GPRs (x86 order; the RSP slot unused) and CR2 given, stores
 * them back, and restores the host state VM exit leaves changed. 0 after
 * a VM exit, X86_EFLAGS_CF/ZF if VMLAUNCH/VMRESUME failed, -EIO if VMX
 * was off.
 */
int rkvm_vmx_run(u64 *gprs, u64 *cr2, bool launched);
/*
 * A VMCS kept current on its task's CPU for a KVM_RUN: loaded (VMPTRLD) at
 * the first entry on a CPU, VMCLEARed by a preempt notifier when the task is
 * scheduled out, and by put. load and put with IRQs off.
 */
struct rkvm_vmcs_pin;
struct rkvm_vmcs_pin *rkvm_vmcs_pin_alloc(u64 phys);
void rkvm_vmcs_pin_free(struct rkvm_vmcs_pin *p);
void rkvm_vmcs_pin_register(struct rkvm_vmcs_pin *p);
void rkvm_vmcs_pin_unregister(struct rkvm_vmcs_pin *p);
int rkvm_vmcs_pin_load(struct rkvm_vmcs_pin *p);
int rkvm_vmcs_pin_put(struct rkvm_vmcs_pin *p);
bool rkvm_vmcs_pin_launched(const struct rkvm_vmcs_pin *p);
void rkvm_vmcs_pin_set_launched(struct rkvm_vmcs_pin *p);
void rkvm_preempt_notifiers_enable(bool on);
/* The exit label: the VMCS's HOST_RIP. */
extern const u8 rkvm_vmx_vmexit[];
/*
 * L1D flush before VM entry (L1TF), with KVM's default policy: setup
 * returns the enum vmx_l1d_flush_state chosen, or -ENOMEM; request makes
 * the next entry on this CPU flush in conditional mode.
 */
int rkvm_l1d_flush_setup(void);
void rkvm_l1d_flush_cleanup(void);
void rkvm_l1d_flush_request(void);
/* Hands an NMI that caused a VM exit to the kernel's NMI handler. */
void rkvm_vmx_forward_nmi(void);
struct rkvm_vmx_host_percpu {
	u64 gdt_base, tr_base, idt_base, gs_base, sysenter_esp, sysenter_eip;
};
void rkvm_vmx_host_percpu(struct rkvm_vmx_host_percpu *h);
void rkvm_vmx_host_pertask(u64 *fs_base, u64 *kernel_gs_base);
/* Descriptor (lo, hi): (EPT pointer, 0) and (VPID, linear address). */
int rkvm_invept(u64 type, u64 lo, u64 hi);
int rkvm_invvpid(u64 type, u64 lo, u64 hi);

void rkvm_local_irq_disable(void);
void rkvm_local_irq_enable(void);
unsigned int rkvm_smp_processor_id(void);
/*
 * The guest's extended state as KVM keeps it: a guest fpstate swapped in for
 * the duration of KVM_RUN (so context switches save it, not the host's), and
 * reloaded before each entry if the kernel used the FPU meanwhile.
 */
struct fpu_guest;
struct fpu_guest *rkvm_guest_fpu_alloc(void);
void rkvm_guest_fpu_free(struct fpu_guest *gfpu);
void rkvm_guest_fpu_swap(struct fpu_guest *gfpu, bool enter_guest);
void rkvm_guest_fpu_prepare_entry(void);
void rkvm_guest_fpu_get_uabi(struct fpu_guest *gfpu, void *buf, u32 size, u64 xfeatures);
int rkvm_guest_fpu_set_uabi(struct fpu_guest *gfpu, const void *buf, u64 xfeatures);
/* XCR0: the host kernel's value (0 without XSAVE), and loading one. */
u64 rkvm_host_xcr0(void);
void rkvm_xsetbv0(u64 value);
bool rkvm_signal_pending(void);
/* KVM_SET_SIGNAL_MASK: the blocked signals while in KVM_RUN. */
void rkvm_sigset_activate(u64 mask);
void rkvm_sigset_deactivate(void);
bool rkvm_need_resched(void);
void rkvm_cond_resched(void);

/*
 * A halted vCPU's wait (shim/wait.rs): prepare_to_rcuwait() and
 * set_current_state() are inline; and kicking a vCPU out of guest mode on
 * another CPU, as kvm_vcpu_kick() does (smp_send_reschedule is inline).
 */
void rkvm_rcuwait_prepare(struct rcuwait *w);
void rkvm_set_current_interruptible(void);
void rkvm_kick_cpu(u32 cpu);

/* Guest memory: one page of the current mm, with a reference. */
int rkvm_gup(u64 hva, bool write, struct page **page);
bool rkvm_gup_fast_only_write(u64 hva, struct page **page);
u64 rkvm_page_to_pfn(struct page *page);
void rkvm_release_pfn(u64 pfn, bool dirty);
void rkvm_page_zapped(u64 pfn, bool dirty, bool accessed);
/* The current task's host mapping size at @hva as a TDP level (1..3). */
int rkvm_host_mapping_level(u64 hva);

/*
 * An MMU notifier on an mm, calling back into rkvm with @ctx. Registration
 * takes the mm's mmap lock; unregistration waits for callbacks in flight
 * (and calls release if the mm is still alive).
 */
struct mm_struct;
struct rkvm_mn_ops {
	int (*invalidate_start)(const void *ctx, unsigned long start,
				unsigned long end, bool blockable);
	void (*invalidate_end)(const void *ctx, unsigned long start,
			       unsigned long end);
	void (*release)(const void *ctx);
	/* Whether the guest used [start, end) since the last clear; clears. */
	bool (*age)(const void *ctx, unsigned long start, unsigned long end,
		    bool clear, bool flush);
};
struct rkvm_mn;
struct rkvm_mn *rkvm_mn_register(struct mm_struct *mm, const void *ctx,
				 const struct rkvm_mn_ops *ops);
void rkvm_mn_unregister(struct rkvm_mn *m, struct mm_struct *mm);

/* Page-table pages, by physical address. */
u64 rkvm_pt_alloc(void);
void *rkvm_phys_to_virt(u64 phys);
void rkvm_pt_free(u64 phys);
void rkvm_pt_free_rcu(u64 phys);
void rkvm_rcu_barrier(void);

/* rwlock_t wrappers (the lock functions are macros). */
void rkvm_rwlock_init(rwlock_t *lock, const char *name, struct lock_class_key *key);
void rkvm_read_lock(rwlock_t *lock);
void rkvm_read_unlock(rwlock_t *lock);
void rkvm_write_lock(rwlock_t *lock);
void rkvm_write_unlock(rwlock_t *lock);

/*
 * mmu_lock breaks (held for write): whether to yield (someone waits for the
 * lock or the CPU), and drop-reschedule-retake.
 */
bool rkvm_rwlock_needbreak(rwlock_t *lock);
void rkvm_cond_resched_rwlock_write(rwlock_t *lock);

/*
 * IPI the given CPUs and wait until each has taken it; @mask (from
 * rkvm_cpumask_alloc) is scratch space the caller owns exclusively.
 */
struct cpumask;
struct cpumask *rkvm_cpumask_alloc(void);
void rkvm_cpumask_free(struct cpumask *mask);
void rkvm_kick_cpus_wait(struct cpumask *mask, const u32 *cpus, u32 n);

u64 rkvm_virt_to_phys(const void *p);

/* Atomic compare-and-exchange of 4 or 8 bytes of user memory: 1 if swapped,
 * 0 if the value differed, -EFAULT. */
int rkvm_cmpxchg_user(u64 hva, u32 size, u64 old, u64 new);

/*
 * irqfd (shim/eventfd.rs): an eventfd's wait-queue entry whose wakeup
 * (EPOLLIN) calls fire(owner, gsi) in atomic context. new() takes the
 * eventfd of @fd without listening yet; arm() starts listening (-EBUSY if
 * another irqfd listens to that eventfd); free() stops (waiting for a
 * running wakeup) and drops everything.
 */
struct rkvm_irqfd *rkvm_irqfd_new(int fd, u32 gsi,
				  void (*fire)(const void *owner, u32 gsi),
				  const void *owner);
const struct eventfd_ctx *rkvm_irqfd_eventfd(const struct rkvm_irqfd *p);
u32 rkvm_irqfd_gsi(const struct rkvm_irqfd *p);
int rkvm_irqfd_arm(struct rkvm_irqfd *p);
void rkvm_irqfd_free(struct rkvm_irqfd *p);

#endif /* RKVM_HELPERS_H */
