// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's Rust code; see helpers.h for why they exist.
 */
#include <linux/anon_inodes.h>
#include <linux/cpumask.h>
#include <linux/highmem.h>
#include <linux/rcupdate.h>
#include <linux/rcuwait.h>
#include <linux/preempt.h>
#include <linux/sched/signal.h>
#include <linux/sched/task_stack.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/spinlock.h>
#include <linux/cpuhotplug.h>
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/poll.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/swap.h>
#include <linux/timekeeping.h>
#include <linux/clocksource_ids.h>
#include <linux/uaccess.h>
#include <asm/asm.h>
#include <asm/tsc.h>
#include <asm/fpu/api.h>
#include <asm/gsseg.h>
#include <asm/fpu/xcr.h>
#include <asm/cpufeature.h>
#include <asm/cpu_entry_area.h>
#include <asm/debugreg.h>
#include <asm/hardirq.h>
#include <asm/hw_breakpoint.h>
#include <asm/vmx.h>
#include <asm/desc.h>
#include <asm/entry-common.h>
#include <asm/trapnr.h>
#include <asm/io.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/processor-flags.h>
#include <asm/segment.h>
#include <asm/special_insns.h>
#include <asm/tlbflush.h>

#include "helpers.h"

int rkvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrq_safe(msr, val) ? -EIO : 0;
}

int rkvm_wrmsr_safe(u32 msr, u64 val)
{
	return wrmsrq_safe(msr, val) ? -EIO : 0;
}

unsigned long rkvm_cr4_read(void)
{
	return cr4_read_shadow();
}

void rkvm_cr4_set_bits(unsigned long mask)
{
	cr4_set_bits(mask);
}

void rkvm_cr4_clear_bits(unsigned long mask)
{
	cr4_clear_bits(mask);
}

unsigned long rkvm_cr0_read(void)
{
	return read_cr0();
}

int rkvm_vmxon(u64 phys)
{
	asm goto("1: vmxon %[phys]\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 : : [phys] "m"(phys) : "cc", "memory" : fault);
	return 0;
fault:
	return -EIO;
}

int rkvm_vmxoff(void)
{
	asm goto("1: vmxoff\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 ::: "cc", "memory" : fault);
	return 0;
fault:
	return -EIO;
}

/*
 * VMCLEAR/VMPTRLD/VMREAD/VMWRITE: the outcome the flags give (SDM 31.2),
 * 0 for VMsucceed, X86_EFLAGS_CF for VMfailInvalid, X86_EFLAGS_ZF for
 * VMfailValid, or -EIO if the instruction faulted (not in VMX operation:
 * virtualization was turned off under rkvm). Rust decodes the flags.
 */
/* VMCLEAR and VMPTRLD take the same operand and report the same way. */
#define RKVM_VMX_PTR_INSN(name, insn)					\
int name(u64 phys)							\
{									\
	asm goto("1: " insn " %[phys]\n\t"				\
		 "jc %l[invalid]\n\t"					\
		 "jz %l[valid]\n\t"					\
		 _ASM_EXTABLE(1b, %l[fault])				\
		 : : [phys] "m"(phys) : "cc", "memory"			\
		 : invalid, valid, fault);				\
	return 0;							\
invalid:								\
	return X86_EFLAGS_CF;						\
valid:									\
	return X86_EFLAGS_ZF;						\
fault:									\
	return -EIO;							\
}

RKVM_VMX_PTR_INSN(rkvm_vmclear, "vmclear")
RKVM_VMX_PTR_INSN(rkvm_vmptrld, "vmptrld")

/*
 * The value goes through memory: asm goto with outputs needs a compiler
 * feature the kernel does not require.
 */
int rkvm_vmread(u64 field, u64 *value)
{
	asm goto("1: vmread %[field], (%[value])\n\t"
		 "jc %l[invalid]\n\t"
		 "jz %l[valid]\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 : : [field] "r"(field), [value] "r"(value)
		 : "cc", "memory" : invalid, valid, fault);
	return 0;
invalid:
	return X86_EFLAGS_CF;
valid:
	return X86_EFLAGS_ZF;
fault:
	return -EIO;
}

int rkvm_vmwrite(u64 field, u64 value)
{
	asm goto("1: vmwrite %[value], %[field]\n\t"
		 "jc %l[invalid]\n\t"
		 "jz %l[valid]\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 : : [field] "r"(field), [value] "rm"(value)
		 : "cc", "memory" : invalid, valid, fault);
	return 0;
invalid:
	return X86_EFLAGS_CF;
valid:
	return X86_EFLAGS_ZF;
fault:
	return -EIO;
}

/*
 * Several VMREADs or VMWRITEs in one call: the first failure stops the
 * batch, its index in *failed.
 */
int rkvm_vmreads(const u32 *fields, u64 *values, u32 n, u32 *failed)
{
	u32 i;
	int r;

	for (i = 0; i < n; i++) {
		r = rkvm_vmread(fields[i], &values[i]);
		if (unlikely(r)) {
			*failed = i;
			return r;
		}
	}
	return 0;
}

int rkvm_vmwrites(const u32 *fields, const u64 *values, u32 n, u32 *failed)
{
	u32 i;
	int r;

	for (i = 0; i < n; i++) {
		r = rkvm_vmwrite(fields[i], values[i]);
		if (unlikely(r)) {
			*failed = i;
			return r;
		}
	}
	return 0;
}

/* The host selectors a VM exit loads, as the kernel's GDT has them. */
u16 rkvm_host_cs(void)
{
	return __KERNEL_CS;
}

u16 rkvm_host_ds(void)
{
	return __KERNEL_DS;
}

u16 rkvm_host_tr(void)
{
	return GDT_ENTRY_TSS * 8;
}

/* The current CR3 (the active mm's page tables, as the CPU has them). */
u64 rkvm_cr3_read(void)
{
	return __read_cr3();
}

int rkvm_stgi(void)
{
	asm goto("1: stgi\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 ::: "memory" : fault);
	return 0;
fault:
	return -EIO;
}

int rkvm_cpuhp_setup(const char *name, int (*online)(unsigned int cpu),
		     int (*offline)(unsigned int cpu))
{
	return cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, name, online, offline);
}

void rkvm_cpuhp_remove(int state)
{
	cpuhp_remove_state(state);
}

int rkvm_anon_inode_getfd(const char *name, const struct file_operations *fops,
			  void *priv, int flags, bool pread)
{
	struct file *file;
	int fd = get_unused_fd_flags(flags);

	if (fd < 0)
		return fd;
	/* anon_inode_getfd() gives no FMODE_PREAD, which pread() needs. */
	file = anon_inode_getfile_fmode(name, fops, priv, flags,
					pread ? FMODE_PREAD : 0);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	fd_install(fd, file);
	return fd;
}

u64 rkvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

bool rkvm_access_ok(u64 addr, u64 size)
{
	return access_ok((void __user *)(unsigned long)addr, size);
}

unsigned int rkvm_num_online_cpus(void)
{
	return num_online_cpus();
}

unsigned int rkvm_tsc_khz(void)
{
	return tsc_khz;
}

void rkvm_host_time(struct rkvm_host_time *t)
{
	struct system_time_snapshot snap;
	unsigned long flags;
	u64 tsc;

	/*
	 * Without a TSC clocksource the TSC is read next to the clocks, with
	 * interrupts off so that nothing comes in between.
	 */
	local_irq_save(flags);
	tsc = rdtsc();
	t->cpu = smp_processor_id();
	ktime_get_snapshot_id(CLOCK_REALTIME, &snap);
	local_irq_restore(flags);
	t->tsc_based = snap.valid && snap.cs_id == CSID_X86_TSC;
	t->tsc = t->tsc_based ? snap.cycles : tsc;
	t->base_ns = ktime_to_ns(ktime_add(snap.monoraw, ktime_mono_to_any(0, TK_OFFS_BOOT)));
	t->real_ns = ktime_to_ns(snap.systime);
}

/* ---- the VMX world switch ---- */

int rkvm_vmx_vmenter(u64 *gprs, bool launched);

/*
 * L1TF: the L1 data cache is flushed before VM entry where the CPU needs it,
 * with the policy KVM's vmx_setup_l1d_flush() picks from the kernel's l1tf
 * mitigation (conditional by default: only when the host may have pulled
 * secrets into L1D since the last entry, which interrupts, rescheduling and
 * the exits that run the MMU or emulator report through the per-CPU
 * kvm_cpu_l1tf_flush_l1d flag). With the FLUSH_L1D command MSR, one write;
 * without it, KVM's software sequence over a 64 KiB buffer.
 */
#if IS_ENABLED(CONFIG_CPU_MITIGATIONS)
#define RKVM_L1D_ORDER	4
static enum vmx_l1d_flush_state rkvm_l1d_mode = VMENTER_L1D_FLUSH_NOT_REQUIRED;
static void *rkvm_l1d_pages;

int rkvm_l1d_flush_setup(void)
{
	enum vmx_l1d_flush_state mode = VMENTER_L1D_FLUSH_COND;
	u64 caps = 0;

	if (boot_cpu_has(X86_FEATURE_ARCH_CAPABILITIES))
		rdmsrq(MSR_IA32_ARCH_CAPABILITIES, caps);
	if (!boot_cpu_has_bug(X86_BUG_L1TF) || (caps & ARCH_CAP_SKIP_VMENTRY_L1DFLUSH))
		mode = VMENTER_L1D_FLUSH_NOT_REQUIRED;
	else if (l1tf_mitigation == L1TF_MITIGATION_OFF)
		mode = VMENTER_L1D_FLUSH_NEVER;
	else if (l1tf_mitigation == L1TF_MITIGATION_FULL ||
		 l1tf_mitigation == L1TF_MITIGATION_FULL_FORCE)
		mode = VMENTER_L1D_FLUSH_ALWAYS;
	if ((mode == VMENTER_L1D_FLUSH_COND || mode == VMENTER_L1D_FLUSH_ALWAYS) &&
	    !boot_cpu_has(X86_FEATURE_FLUSH_L1D)) {
		struct page *page = alloc_pages(GFP_KERNEL, RKVM_L1D_ORDER);

		if (!page)
			return -ENOMEM;
		rkvm_l1d_pages = page_address(page);
		/* As KVM: not all zeroes, so the pages are really read. */
		memset(rkvm_l1d_pages, 0x90, PAGE_SIZE << RKVM_L1D_ORDER);
	}
	rkvm_l1d_mode = mode;
	/* What the sysfs l1tf file reports, as when kvm_intel is loaded. */
	l1tf_vmx_mitigation = mode;
	return mode;
}

void rkvm_l1d_flush_cleanup(void)
{
	if (rkvm_l1d_pages)
		free_pages((unsigned long)rkvm_l1d_pages, RKVM_L1D_ORDER);
	rkvm_l1d_pages = NULL;
	l1tf_vmx_mitigation = VMENTER_L1D_FLUSH_AUTO;
}

/* The next entry on this CPU flushes L1D (in conditional mode). */
void rkvm_l1d_flush_request(void)
{
	kvm_set_cpu_l1tf_flush_l1d();
}

static void rkvm_l1d_flush(void)
{
	int size = PAGE_SIZE << RKVM_L1D_ORDER;

	if (likely(rkvm_l1d_mode != VMENTER_L1D_FLUSH_COND &&
		   rkvm_l1d_mode != VMENTER_L1D_FLUSH_ALWAYS))
		return;
	if (rkvm_l1d_mode == VMENTER_L1D_FLUSH_COND) {
		if (!kvm_get_cpu_l1tf_flush_l1d())
			return;
		kvm_clear_cpu_l1tf_flush_l1d();
	}
	if (boot_cpu_has(X86_FEATURE_FLUSH_L1D)) {
		native_wrmsrq(MSR_IA32_FLUSH_CMD, L1D_FLUSH);
		return;
	}
	/* Load every page into the TLB first, then fill L1D with the buffer. */
	asm volatile("xorl %%eax, %%eax\n"
		     "1: movzbl (%[pages], %%rax), %%ecx\n\t"
		     "addl $4096, %%eax\n\t"
		     "cmpl %%eax, %[size]\n\t"
		     "jne 1b\n\t"
		     "xorl %%eax, %%eax\n\t"
		     "cpuid\n\t"
		     "xorl %%eax, %%eax\n"
		     "2: movzbl (%[pages], %%rax), %%ecx\n\t"
		     "addl $64, %%eax\n\t"
		     "cmpl %%eax, %[size]\n\t"
		     "jne 2b\n\t"
		     "lfence\n"
		     : : [pages] "r"(rkvm_l1d_pages), [size] "r"(size)
		     : "eax", "ebx", "ecx", "edx", "memory");
}

#else /* !CONFIG_CPU_MITIGATIONS: as KVM, no flush */

int rkvm_l1d_flush_setup(void)
{
	return VMENTER_L1D_FLUSH_NEVER;
}

void rkvm_l1d_flush_cleanup(void)
{
}

void rkvm_l1d_flush_request(void)
{
}

static void rkvm_l1d_flush(void)
{
}

#endif

int rkvm_vmx_run(u64 *gprs, u64 *cr2, bool launched)
{
	unsigned long debugctl = get_debugctlmsr();
	u16 ds, es, fs, gs, ldt;
	u64 base;
	int r;

	savesegment(ds, ds);
	savesegment(es, es);
	savesegment(fs, fs);
	savesegment(gs, gs);
	asm volatile("sldt %0" : "=g"(ldt));
	/* CR2 is not in the VMCS: the guest's is loaded by hand. */
	if (native_read_cr2() != *cr2)
		native_write_cr2(*cr2);
	rkvm_l1d_flush();
	r = rkvm_vmx_vmenter(gprs, launched);
	*cr2 = native_read_cr2();

	/*
	 * VM exit loaded null LDT, DS, ES, FS and GS selectors (the FS and GS
	 * bases from the VMCS, KERNEL_GS_BASE from the MSR-load list), set
	 * the GDT and TR limits to 0xffff and 0x67, and DR7 to 0x400, and
	 * cleared DEBUGCTL. Put back what userspace and the kernel had.
	 */
	if (unlikely(ldt || gs)) {
		rdmsrq(MSR_KERNEL_GS_BASE, base);
		asm volatile("lldt %0" : : "rm"(ldt));
		load_gs_index(gs);
		wrmsrq(MSR_KERNEL_GS_BASE, base);
	}
	if (unlikely(fs)) {
		rdmsrq(MSR_FS_BASE, base);
		loadsegment(fs, fs);
		wrmsrq(MSR_FS_BASE, base);
	}
	if (unlikely(ds | es)) {
		loadsegment(ds, ds);
		loadsegment(es, es);
	}
	invalidate_tss_limit();
	load_fixmap_gdt(raw_smp_processor_id());
	if (hw_breakpoint_active())
		hw_breakpoint_restore();
	if (debugctl)
		update_debugctlmsr(debugctl);
	return r;
}

/*
 * A VMCS that stays current on the CPU its task runs on: VMCLEARed when the
 * task is scheduled out, so it never stays behind on a CPU the task left.
 */
struct rkvm_vmcs_pin {
	struct preempt_notifier pn;
	u64 phys;
	int cpu;	/* where it is current, or -1 */
	bool launched;	/* VMRESUME, not VMLAUNCH, enters it there */
};

static int rkvm_vmcs_pin_clear(struct rkvm_vmcs_pin *p)
{
	int r;

	if (p->cpu < 0)
		return 0;
	/* Cannot fail in VMX operation; if VMX was turned off, nothing to do. */
	r = rkvm_vmclear(p->phys);
	p->cpu = -1;
	p->launched = false;
	return r;
}

static void rkvm_vmcs_sched_in(struct preempt_notifier *pn, int cpu)
{
}

static void rkvm_vmcs_sched_out(struct preempt_notifier *pn,
				struct task_struct *next)
{
	rkvm_vmcs_pin_clear(container_of(pn, struct rkvm_vmcs_pin, pn));
}

static struct preempt_ops rkvm_vmcs_preempt_ops = {
	.sched_in = rkvm_vmcs_sched_in,
	.sched_out = rkvm_vmcs_sched_out,
};

struct rkvm_vmcs_pin *rkvm_vmcs_pin_alloc(u64 phys)
{
	struct rkvm_vmcs_pin *p = kzalloc(sizeof(*p), GFP_KERNEL_ACCOUNT);

	if (!p)
		return NULL;
	preempt_notifier_init(&p->pn, &rkvm_vmcs_preempt_ops);
	p->phys = phys;
	p->cpu = -1;
	return p;
}

void rkvm_vmcs_pin_free(struct rkvm_vmcs_pin *p)
{
	kfree(p);
}

void rkvm_vmcs_pin_register(struct rkvm_vmcs_pin *p)
{
	preempt_disable();
	preempt_notifier_register(&p->pn);
	preempt_enable();
}

void rkvm_vmcs_pin_unregister(struct rkvm_vmcs_pin *p)
{
	preempt_disable();
	preempt_notifier_unregister(&p->pn);
	preempt_enable();
}

int rkvm_vmcs_pin_load(struct rkvm_vmcs_pin *p)
{
	int cpu = raw_smp_processor_id();
	int r;

	lockdep_assert_irqs_disabled();
	if (p->cpu == cpu)
		return 0;
	r = rkvm_vmptrld(p->phys);
	if (!r) {
		p->cpu = cpu;
		p->launched = false;
		/* The thread was away: anything may have run here since. */
		rkvm_l1d_flush_request();
	}
	return r;
}

int rkvm_vmcs_pin_put(struct rkvm_vmcs_pin *p)
{
	lockdep_assert_irqs_disabled();
	return rkvm_vmcs_pin_clear(p);
}

bool rkvm_vmcs_pin_launched(const struct rkvm_vmcs_pin *p)
{
	return p->launched;
}

void rkvm_vmcs_pin_set_launched(struct rkvm_vmcs_pin *p)
{
	p->launched = true;
}

void rkvm_preempt_notifiers_enable(bool on)
{
	if (on)
		preempt_notifier_inc();
	else
		preempt_notifier_dec();
}

void rkvm_vmx_forward_nmi(void)
{
	x86_entry_from_kvm(EVENT_TYPE_NMI, NMI_VECTOR);
}

/* The host's per-CPU state a VM exit loads (IRQs off). */
void rkvm_vmx_host_percpu(struct rkvm_vmx_host_percpu *h)
{
	struct desc_ptr gdt;
	int cpu = raw_smp_processor_id();

	native_store_gdt(&gdt);
	h->gdt_base = gdt.address;
	h->tr_base = (unsigned long)&get_cpu_entry_area(cpu)->tss.x86_tss;
	store_idt(&gdt);
	h->idt_base = gdt.address;
	rdmsrq(MSR_GS_BASE, h->gs_base);
	rdmsrq(MSR_IA32_SYSENTER_ESP, h->sysenter_esp);
	rdmsrq(MSR_IA32_SYSENTER_EIP, h->sysenter_eip);
}

/* The task's FS base, and the user GS base that KERNEL_GS_BASE holds. */
void rkvm_vmx_host_pertask(u64 *fs_base, u64 *kernel_gs_base)
{
	rdmsrq(MSR_FS_BASE, *fs_base);
	rdmsrq(MSR_KERNEL_GS_BASE, *kernel_gs_base);
}

/*
 * INVEPT and INVVPID take a type and a 128-bit descriptor (EPT pointer and
 * zero; VPID and linear address); results as for VMCLEAR above.
 */
#define RKVM_VMX_INV_INSN(name, insn)					\
int name(u64 type, u64 lo, u64 hi)					\
{									\
	struct { u64 lo, hi; } desc = { lo, hi };			\
									\
	asm goto("1: " insn " %[desc], %[type]\n\t"			\
		 "jc %l[invalid]\n\t"					\
		 "jz %l[valid]\n\t"					\
		 _ASM_EXTABLE(1b, %l[fault])				\
		 : : [desc] "m"(desc), [type] "r"(type)			\
		 : "cc", "memory" : invalid, valid, fault);		\
	return 0;							\
invalid:								\
	return X86_EFLAGS_CF;						\
valid:									\
	return X86_EFLAGS_ZF;						\
fault:									\
	return -EIO;							\
}

RKVM_VMX_INV_INSN(rkvm_invept, "invept")
RKVM_VMX_INV_INSN(rkvm_invvpid, "invvpid")

/* ---- the SVM world switch ---- */

/* The host's RIP right after VMRUN (svm/vmenter.S). */
extern const u8 rkvm_svm_vmrun_ret[];

/* The VMCB fields the host-state canary reads (APM vol. 2, appendix B). */
#define VMCB_INT_CTL		0x060
#define VMCB_EXIT_CODE		0x070
#define VMCB_EXIT_INFO_1	0x078
#define VMCB_EXIT_INFO_2	0x080
#define VMCB_SAVE_CS_SEL	0x410
#define VMCB_SAVE_CPL		0x4cb
#define VMCB_SAVE_CR3		0x550
#define VMCB_SAVE_RIP		0x578
#define VMCB_SAVE_RSP		0x5d8
#define VMCB_SAVE_RAX		0x5f8

static u64 vmcb_u64(const void *vmcb, unsigned int off)
{
	return *(const u64 *)((const u8 *)vmcb + off);
}

/*
 * The host-state canary. VMRUN saves the host's RIP (the instruction after
 * it) and RAX (the VMCB's address) in the host-save area; a VMCB whose
 * guest state has both holds the host's state, not the guest's. Under
 * QEMU's multi-threaded TCG, VMCBs were seen coming back from VMRUN that
 * way (see testing.rst, "Multi-threaded TCG"). Checked before VMRUN, so
 * host state never runs as a guest, and after it, so a corrupted exit is
 * not handled as the guest's.
 * A hit is logged and turned into the exit code RKVM_SVM_EXIT_HOST_STATE,
 * which the exit handler does not know: KVM_RUN returns
 * KVM_EXIT_INTERNAL_ERROR (KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON) with
 * that code and the CPU in its data. A guest cannot trip it by accident:
 * it would need the host-physical address of its own VMCB in RAX.
 */
static bool rkvm_svm_host_state(u64 vmcb_pa, const char *when)
{
	void *v = __va(vmcb_pa);
	u64 rip = vmcb_u64(v, VMCB_SAVE_RIP), rax = vmcb_u64(v, VMCB_SAVE_RAX);

	if (likely(rip != (unsigned long)rkvm_svm_vmrun_ret || rax != vmcb_pa))
		return false;
	/* "own stack": RSP is in this thread's stack, so the state is its. */
	pr_err_ratelimited("rkvm: VMCB %#llx holds host state %s VMRUN on CPU %d: rip %#llx rax %#llx rsp %#llx (own stack: %s) cs %#x cpl %u cr3 %#llx int_ctl %#x exit %#llx info1 %#llx info2 %#llx\n",
			   vmcb_pa, when, raw_smp_processor_id(), rip, rax,
			   vmcb_u64(v, VMCB_SAVE_RSP),
			   object_is_on_stack((void *)(unsigned long)vmcb_u64(v, VMCB_SAVE_RSP)) ? "yes" : "no",
			   *(u16 *)((u8 *)v + VMCB_SAVE_CS_SEL),
			   *((u8 *)v + VMCB_SAVE_CPL), vmcb_u64(v, VMCB_SAVE_CR3),
			   *(u32 *)((u8 *)v + VMCB_INT_CTL),
			   vmcb_u64(v, VMCB_EXIT_CODE),
			   vmcb_u64(v, VMCB_EXIT_INFO_1),
			   vmcb_u64(v, VMCB_EXIT_INFO_2));
	*(u64 *)((u8 *)v + VMCB_EXIT_CODE) = RKVM_SVM_EXIT_HOST_STATE;
	return true;
}

static int rkvm_clgi(void)
{
	asm goto("1: clgi\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 ::: "memory" : fault);
	return 0;
fault:
	return -EIO;
}

int rkvm_svm_run(u64 vmcb_pa, u64 *gprs, u64 host_save_pa)
{
	int r;

	if (rkvm_svm_host_state(vmcb_pa, "before"))
		return 0;
	/*
	 * GIF=0 from CLGI to STGI: no interrupt,
	 * NMI or SMI reaches the host while the GS base is the guest's.
	 * RFLAGS.IF is set for VMRUN because with V_INTR_MASKING the host's IF
	 * decides whether physical interrupts end the guest's run
	 * (#VMEXIT(INTR)); with GIF=0 none is taken here.
	 */
	if (rkvm_clgi())
		return -EIO;
	raw_local_irq_enable();
	r = rkvm_svm_vmrun(vmcb_pa, gprs, host_save_pa);
	raw_local_irq_disable();
	if (rkvm_stgi())
		return -EIO;
	rkvm_svm_host_state(vmcb_pa, "after");
	return r;
}

void rkvm_request_immediate_exit(void)
{
	lockdep_assert_irqs_disabled();
	arch_smp_send_reschedule(smp_processor_id());
}

void rkvm_local_irq_disable(void)
{
	local_irq_disable();
}

void rkvm_local_irq_enable(void)
{
	local_irq_enable();
}

unsigned int rkvm_smp_processor_id(void)
{
	return smp_processor_id();
}

/* ---- the guest's extended state (KVM's FPU API) ---- */

struct fpu_guest *rkvm_guest_fpu_alloc(void)
{
	struct fpu_guest *gfpu = kzalloc(sizeof(*gfpu), GFP_KERNEL_ACCOUNT);

	if (gfpu && !fpu_alloc_guest_fpstate(gfpu)) {
		kfree(gfpu);
		return NULL;
	}
	return gfpu;
}

void rkvm_guest_fpu_free(struct fpu_guest *gfpu)
{
	fpu_free_guest_fpstate(gfpu);
	kfree(gfpu);
}

void rkvm_guest_fpu_swap(struct fpu_guest *gfpu, bool enter_guest)
{
	fpu_swap_kvm_fpstate(gfpu, enter_guest);
}

void rkvm_guest_fpu_prepare_entry(void)
{
	lockdep_assert_irqs_disabled();
	fpregs_assert_state_consistent();
	if (test_thread_flag(TIF_NEED_FPU_LOAD))
		switch_fpu_return();
}

void rkvm_guest_fpu_get_uabi(struct fpu_guest *gfpu, void *buf, u32 size, u64 xfeatures)
{
	fpu_copy_guest_fpstate_to_uabi(gfpu, buf, size, xfeatures, 0);
}

int rkvm_guest_fpu_set_uabi(struct fpu_guest *gfpu, const void *buf, u64 xfeatures)
{
	u32 pkru = 0;

	return fpu_copy_uabi_to_guest_fpstate(gfpu, buf, xfeatures, &pkru);
}

u64 rkvm_host_xcr0(void)
{
	return boot_cpu_has(X86_FEATURE_OSXSAVE) ? xgetbv(XCR_XFEATURE_ENABLED_MASK) : 0;
}

/* ---- the guest's debug registers (IRQs off) ---- */

void rkvm_load_guest_debugregs(const u64 *db)
{
	/* No host breakpoint may fire on the guest's addresses meanwhile. */
	set_debugreg(0, 7);
	set_debugreg(db[0], 0);
	set_debugreg(db[1], 1);
	set_debugreg(db[2], 2);
	set_debugreg(db[3], 3);
}

void rkvm_restore_host_debugregs(void)
{
	/* DR0-3, DR6 and DR7 as the host's breakpoints have them. */
	hw_breakpoint_restore();
}

void rkvm_xsetbv0(u64 value)
{
	xsetbv(XCR_XFEATURE_ENABLED_MASK, value);
}

bool rkvm_signal_pending(void)
{
	return signal_pending(current);
}

bool rkvm_need_resched(void)
{
	return need_resched();
}

void rkvm_cond_resched(void)
{
	cond_resched();
}

void rkvm_rcuwait_prepare(struct rcuwait *w)
{
	prepare_to_rcuwait(w);
}

void rkvm_set_current_interruptible(void)
{
	set_current_state(TASK_INTERRUPTIBLE);
}

void rkvm_kick_cpu(u32 cpu)
{
	int me = get_cpu();

	/* On this CPU the guest is not running: the caller interrupted it. */
	if (cpu != me && cpu < nr_cpu_ids && cpu_online(cpu))
		arch_smp_send_reschedule(cpu);
	put_cpu();
}

/* ---- guest memory ---- */

int rkvm_gup(u64 hva, bool write, struct page **page)
{
	return get_user_pages_fast(hva, 1, write ? FOLL_WRITE : 0, page);
}

bool rkvm_gup_fast_only_write(u64 hva, struct page **page)
{
	return get_user_page_fast_only(hva, FOLL_WRITE, page);
}

u64 rkvm_page_to_pfn(struct page *page)
{
	return page_to_pfn(page);
}

void rkvm_release_pfn(u64 pfn, bool dirty)
{
	struct page *page = pfn_to_page(pfn);

	if (dirty)
		SetPageDirty(page);
	/* The guest is about to use it: as KVM, on the active list. */
	mark_page_accessed(page);
	put_page(page);
}

/*
 * Moves the dirty and accessed state of a zapped SPTE to its page. The page
 * is still mapped by the host (an invalidation zaps before the host changes
 * its page tables), so no reference is needed.
 */
void rkvm_page_zapped(u64 pfn, bool dirty, bool accessed)
{
	struct page *page = pfn_to_page(pfn);

	if (dirty)
		SetPageDirty(page);
	if (accessed)
		mark_page_accessed(page);
}

/*
 * The size of the current task's mapping at @hva, as a TDP level: 3 for a
 * 1 GiB leaf, 2 for 2 MiB (a transparent or hugetlbfs huge page), else 1.
 * Walked locklessly with IRQs off, as GUP-fast does, so the tables cannot
 * be freed under it; the caller holds mmu_lock after checking that no
 * invalidation raced, so a change after this is an invalidation to come.
 */
int rkvm_host_mapping_level(u64 hva)
{
	struct mm_struct *mm = current->mm;
	unsigned long flags;
	int level = 1;
	pgd_t pgd;
	p4d_t p4d;
	pud_t pud;
	pmd_t pmd;

	if (!mm)
		return 1;
	local_irq_save(flags);
	pgd = READ_ONCE(*pgd_offset(mm, hva));
	if (pgd_none(pgd))
		goto out;
	p4d = READ_ONCE(*p4d_offset(&pgd, hva));
	if (p4d_none(p4d) || !p4d_present(p4d))
		goto out;
	pud = READ_ONCE(*pud_offset(&p4d, hva));
	if (pud_none(pud) || !pud_present(pud))
		goto out;
	if (pud_leaf(pud)) {
		level = 3;
		goto out;
	}
	pmd = pmdp_get_lockless(pmd_offset(&pud, hva));
	if (pmd_none(pmd) || !pmd_present(pmd))
		goto out;
	if (pmd_leaf(pmd))
		level = 2;
out:
	local_irq_restore(flags);
	return level;
}

/* ---- MMU notifiers ---- */

struct rkvm_mn {
	struct mmu_notifier mn;
	const void *ctx;
	const struct rkvm_mn_ops *ops;
};

static struct rkvm_mn *to_rkvm_mn(struct mmu_notifier *mn)
{
	return container_of(mn, struct rkvm_mn, mn);
}

static int rkvm_mn_invalidate_range_start(struct mmu_notifier *mn,
					  const struct mmu_notifier_range *range)
{
	struct rkvm_mn *m = to_rkvm_mn(mn);

	return m->ops->invalidate_start(m->ctx, range->start, range->end,
					mmu_notifier_range_blockable(range));
}

static void rkvm_mn_invalidate_range_end(struct mmu_notifier *mn,
					 const struct mmu_notifier_range *range)
{
	struct rkvm_mn *m = to_rkvm_mn(mn);

	m->ops->invalidate_end(m->ctx, range->start, range->end);
}

static void rkvm_mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct rkvm_mn *m = to_rkvm_mn(mn);

	m->ops->release(m->ctx);
}

static bool rkvm_mn_clear_flush_young(struct mmu_notifier *mn,
				      struct mm_struct *mm,
				      unsigned long start, unsigned long end)
{
	struct rkvm_mn *m = to_rkvm_mn(mn);

	return m->ops->age(m->ctx, start, end, true, true);
}

static bool rkvm_mn_clear_young(struct mmu_notifier *mn, struct mm_struct *mm,
				unsigned long start, unsigned long end)
{
	struct rkvm_mn *m = to_rkvm_mn(mn);

	return m->ops->age(m->ctx, start, end, true, false);
}

static bool rkvm_mn_test_young(struct mmu_notifier *mn, struct mm_struct *mm,
			       unsigned long address)
{
	struct rkvm_mn *m = to_rkvm_mn(mn);

	return m->ops->age(m->ctx, address, address + 1, false, false);
}

static const struct mmu_notifier_ops rkvm_mn_ops = {
	.invalidate_range_start = rkvm_mn_invalidate_range_start,
	.invalidate_range_end = rkvm_mn_invalidate_range_end,
	.release = rkvm_mn_release,
	.clear_flush_young = rkvm_mn_clear_flush_young,
	.clear_young = rkvm_mn_clear_young,
	.test_young = rkvm_mn_test_young,
};

struct rkvm_mn *rkvm_mn_register(struct mm_struct *mm, const void *ctx,
				 const struct rkvm_mn_ops *ops)
{
	struct rkvm_mn *m = kzalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);
	int r;

	if (!m)
		return ERR_PTR(-ENOMEM);
	m->mn.ops = &rkvm_mn_ops;
	m->ctx = ctx;
	m->ops = ops;
	r = mmu_notifier_register(&m->mn, mm);
	if (r) {
		kfree(m);
		return ERR_PTR(r);
	}
	return m;
}

void rkvm_mn_unregister(struct rkvm_mn *m, struct mm_struct *mm)
{
	mmu_notifier_unregister(&m->mn, mm);
	kfree(m);
}

/* ---- page-table pages of the TDP MMU ---- */

u64 rkvm_pt_alloc(void)
{
	struct page *page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);

	return page ? page_to_phys(page) : 0;
}

void *rkvm_phys_to_virt(u64 phys)
{
	return phys_to_virt(phys);
}

void rkvm_pt_free(u64 phys)
{
	__free_page(phys_to_page(phys));
}

static void rkvm_pt_free_rcu_cb(struct rcu_head *head)
{
	__free_page(container_of(head, struct page, rcu_head));
}

void rkvm_pt_free_rcu(u64 phys)
{
	call_rcu(&phys_to_page(phys)->rcu_head, rkvm_pt_free_rcu_cb);
}

void rkvm_rcu_barrier(void)
{
	rcu_barrier();
}

/* ---- mmu_lock ---- */

void rkvm_rwlock_init(rwlock_t *lock, const char *name, struct lock_class_key *key)
{
	/* Lock classes exist only with spinlock debugging (lockdep selects it). */
#ifdef CONFIG_DEBUG_SPINLOCK
	__rwlock_init(lock, name, key);
#else
	rwlock_init(lock);
#endif
}

void rkvm_read_lock(rwlock_t *lock)
{
	read_lock(lock);
}

void rkvm_read_unlock(rwlock_t *lock)
{
	read_unlock(lock);
}

void rkvm_write_lock(rwlock_t *lock)
{
	write_lock(lock);
}

void rkvm_write_unlock(rwlock_t *lock)
{
	write_unlock(lock);
}

/*
 * ---- mmu_lock breaks: a zap holding the lock for write yields it ----
 *
 * A long zap checks at each step whether another CPU waits for mmu_lock
 * or this one should reschedule (KVM's tdp_mmu_iter_cond_resched), and if
 * so drops the lock, reschedules and takes it again. Both are macros.
 */

bool rkvm_rwlock_needbreak(rwlock_t *lock)
{
	return need_resched() || rwlock_needbreak(lock);
}

void rkvm_cond_resched_rwlock_write(rwlock_t *lock)
{
	cond_resched_rwlock_write(lock);
}

/* ---- kicking vCPUs out of guest mode ---- */

static void rkvm_kick_ack(void *info)
{
}

struct cpumask *rkvm_cpumask_alloc(void)
{
	return kzalloc(cpumask_size(), GFP_KERNEL);
}

void rkvm_cpumask_free(struct cpumask *mask)
{
	kfree(mask);
}

void rkvm_kick_cpus_wait(struct cpumask *mask, const u32 *cpus, u32 n)
{
	u32 i;

	cpumask_clear(mask);
	for (i = 0; i < n; i++)
		if (cpus[i] < nr_cpu_ids)
			cpumask_set_cpu(cpus[i], mask);
	on_each_cpu_mask(mask, rkvm_kick_ack, NULL, true);
}

u64 rkvm_virt_to_phys(const void *p)
{
	return virt_to_phys((void *)p);
}

int rkvm_cmpxchg_user(u64 hva, u32 size, u64 old, u64 new)
{
	void __user *p = (void __user *)(unsigned long)hva;
	int r;

	if (!access_ok(p, size))
		return -EFAULT;
	/* The macro returns 0 when swapped, 1 when the value differed. */
	if (size == 8) {
		u64 o = old;

		r = __try_cmpxchg_user((u64 __user *)p, &o, new, fault64);
	} else {
		u32 o = old;

		r = __try_cmpxchg_user((u32 __user *)p, &o, (u32)new, fault32);
	}
	if (r < 0)
		return r;
	return r == 0;
}

void rkvm_sigset_activate(u64 mask)
{
	sigset_t set = { .sig = { mask } };

	/* SIGKILL and SIGSTOP cannot be blocked. */
	sigdelsetmask(&set, sigmask(SIGKILL) | sigmask(SIGSTOP));
	sigprocmask(SIG_SETMASK, &set, &current->real_blocked);
}

void rkvm_sigset_deactivate(void)
{
	sigprocmask(SIG_SETMASK, &current->real_blocked, NULL);
	sigemptyset(&current->real_blocked);
}

/* ---- irqfd: an eventfd whose signal raises a GSI (shim/eventfd.rs) ---- */

struct rkvm_irqfd {
	wait_queue_entry_t wait;
	poll_table pt;
	struct eventfd_ctx *ctx;
	/* Held from rkvm_irqfd_new until armed. */
	struct file *file;
	bool armed;
	/* What adding the wait-queue entry gave (EBUSY: another irqfd). */
	int queue_ret;
	void (*fire)(const void *owner, u32 gsi);
	const void *owner;
	u32 gsi;
};

/* Called with the eventfd's wait-queue lock held, IRQs off. */
static int rkvm_irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode,
			     int sync, void *key)
{
	struct rkvm_irqfd *p = container_of(wait, struct rkvm_irqfd, wait);
	__poll_t flags = key_to_poll(key);
	u64 cnt;

	int ret = 0;

	if (flags & EPOLLIN) {
		eventfd_ctx_do_read(p->ctx, &cnt);
		p->fire(p->owner, p->gsi);
		/* An exclusive priority waiter: nobody else is woken, as KVM. */
		ret = 1;
	}
	/*
	 * The eventfd's file is going away: stop listening (the context
	 * lives on, referenced, until rkvm_irqfd_free). list_del_init, so
	 * that the removal there finds an empty entry.
	 */
	if (flags & EPOLLHUP)
		list_del_init(&p->wait.entry);
	return ret;
}

static void rkvm_irqfd_queue(struct file *file, wait_queue_head_t *wqh,
			     poll_table *pt)
{
	struct rkvm_irqfd *p = container_of(pt, struct rkvm_irqfd, pt);

	/* One irqfd per eventfd, in any VM: as KVM, EBUSY for a second. */
	p->queue_ret = add_wait_queue_priority_exclusive(wqh, &p->wait);
}

struct rkvm_irqfd *rkvm_irqfd_new(int fd, u32 gsi,
				  void (*fire)(const void *owner, u32 gsi),
				  const void *owner)
{
	struct rkvm_irqfd *p;
	struct file *file = fget(fd);
	struct eventfd_ctx *ctx;

	if (!file)
		return ERR_PTR(-EBADF);
	ctx = eventfd_ctx_fileget(file);
	if (IS_ERR(ctx)) {
		fput(file);
		return ERR_CAST(ctx);
	}
	p = kzalloc(sizeof(*p), GFP_KERNEL_ACCOUNT);
	if (!p) {
		eventfd_ctx_put(ctx);
		fput(file);
		return ERR_PTR(-ENOMEM);
	}
	p->ctx = ctx;
	p->file = file;
	p->fire = fire;
	p->owner = owner;
	p->gsi = gsi;
	init_waitqueue_func_entry(&p->wait, rkvm_irqfd_wakeup);
	init_poll_funcptr(&p->pt, rkvm_irqfd_queue);
	return p;
}

const struct eventfd_ctx *rkvm_irqfd_eventfd(const struct rkvm_irqfd *p)
{
	return p->ctx;
}

u32 rkvm_irqfd_gsi(const struct rkvm_irqfd *p)
{
	return p->gsi;
}

int rkvm_irqfd_arm(struct rkvm_irqfd *p)
{
	__poll_t events = vfs_poll(p->file, &p->pt);

	fput(p->file);
	p->file = NULL;
	if (p->queue_ret)
		return p->queue_ret;
	p->armed = true;
	/* Signalled before it was assigned: raise the GSI now, as KVM. */
	if (events & EPOLLIN)
		p->fire(p->owner, p->gsi);
	return 0;
}

void rkvm_irqfd_free(struct rkvm_irqfd *p)
{
	u64 cnt;

	/* After this no wakeup runs: it takes the wait-queue lock. */
	if (p->armed)
		eventfd_ctx_remove_wait_queue(p->ctx, &p->wait, &cnt);
	if (p->file)
		fput(p->file);
	eventfd_ctx_put(p->ctx);
	kfree(p);
}
