/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The guest-setup library of rkvm's C programs that run real guest code
 * through the KVM ioctl ABI: the guest-running selftests (on $RKVM_DEV),
 * the demo VMM (tools/rkvm/demo) and the benchmark (tools/rkvm/bench), so
 * all three set up guests the same way. VM and vCPU creation, memory slots
 * backed by anonymous memory, guest code written as assembler blocks in
 * the program's C file, the register setup for real mode, 32-bit protected
 * mode and 64-bit long mode, and checks of the exits (port I/O, MMIO) a
 * guest causes.
 *
 * No in-kernel irqchip is created unless a test enables one
 * (vm_enable_split_irqchip), so HLT exits to userspace (KVM_EXIT_HLT);
 * with the split irqchip's local APICs a halted vCPU waits in the kernel
 * instead, and the vCPU thread helpers below end such waits.
 *
 * Guest physical layout of the low memory slot (slot 0, at GPA 0):
 *   GUEST_GDT    flat GDT: 0x08 32-bit code, 0x10 data, 0x18 64-bit code
 *   GUEST_IDT    256 64-bit gates (all not present until a test sets one)
 *   GUEST_PT     PML4, PDPT and four PDs identity-mapping 0..4 GiB with
 *                2 MiB pages (built always; used only in long mode),
 *                accessed and dirty bits preset so that vCPUs starting
 *                together never write to the tables
 *   GUEST_CODE   where guest code is loaded and starts (16-byte aligned)
 *   GUEST_DATA   free for tests
 *   GUEST_STACK  initial stack pointer (grows down)
 * GPAs outside any slot (e.g. GUEST_MMIO) exit to userspace as MMIO.
 *
 * The GUEST_* numbers have no C suffixes so they can be pasted into the
 * assembler text with XSTR().
 */
#ifndef SELFTEST_RKVM_GUEST_LIB_H
#define SELFTEST_RKVM_GUEST_LIB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#define GUEST_GDT	0x1000
#define GUEST_IDT	0x2000
#define GUEST_PT	0x3000
#define GUEST_CODE	0x10000
#define GUEST_DATA	0x20000
#define GUEST_STACK	0x80000
#define GUEST_MEM_SIZE	0x200000	/* default size of slot 0 */
#define GUEST_MMIO	0xd0000000	/* never backed by a slot */

#define SEL_CODE32	0x08
#define SEL_DATA	0x10
#define SEL_CODE64	0x18

/* CR0 bits. */
#define X86_CR0_PE	(1UL << 0)
#define X86_CR0_ET	(1UL << 4)
#define X86_CR0_NE	(1UL << 5)
#define X86_CR0_WP	(1UL << 16)
#define X86_CR0_CD	(1UL << 30)
#define X86_CR0_PG	(1UL << 31)

#define STR(x) #x
#define XSTR(x) STR(x)

/*
 * Guest text that halts (IF=1) until the u32 at @addr is at least @val
 * (an immediate or a register), the check and the HLT made atomic by
 * CLI and STI's shadow, so that an interrupt between them is not missed.
 * @n: a local label number free in the block.
 */
#define HALT_UNTIL(addr, val, n)						\
	"cli\n" #n ": cmpl " val ", " addr "\n"					\
	"jae " #n "f\n"								\
	"sti\n"									\
	"hlt\n"									\
	"cli\n"									\
	"jmp " #n "b\n"								\
	#n ": sti\n"

/*
 * Defines guest code: `name` .. `name_end` in .rodata hold the machine code
 * of `text`, assembled as `mode` (".code16", ".code32" or ".code64").
 * Jumps inside the block are relative, so it runs wherever it is copied;
 * data addresses must be absolute GPAs (or RIP-relative in 64-bit code).
 * Further labels in the block can be declared with GUEST_LABEL() and
 * located with guest_addr().
 */
#define GUEST_CODE_BLOCK(name, mode, text)					\
	extern const uint8_t name[], name##_end[];				\
	asm(".pushsection .rodata\n\t.balign 16\n"				\
	    #name ":\n\t" mode "\n" text "\n" #name "_end:\n\t"			\
	    ".code64\n\t.popsection\n")
#define GUEST_LABEL(label) extern const uint8_t label[]

/* The GPA of `label` once block `name` is loaded at `load` (vm_load). */
#define guest_addr(name, label, load) \
	((uint64_t)(load) + (uint64_t)((const uint8_t *)(label) - (name)))

enum guest_mode {
	MODE_REAL,	/* CS:IP = (load >> 4):0, CR0.PE = 0 */
	MODE_PROT32,	/* flat 32-bit segments, CR0.PE, no paging */
	MODE_LONG64,	/* 64-bit CS, CR0.PE|PG, CR4.PAE, EFER.LME|LMA */
};

struct vm {
	const char *dev;	/* device path */
	int sys;		/* device fd */
	int fd;			/* VM fd */
	int run_size;		/* KVM_GET_VCPU_MMAP_SIZE */
	uint8_t *mem;		/* slot 0 */
	size_t mem_size;
	struct kvm_cpuid2 *cpuid;	/* KVM_GET_SUPPORTED_CPUID, or NULL */
};

struct vcpu {
	struct vm *vm;
	int fd;
	int id;
	struct kvm_run *run;
};

/*
 * Set-up failures (an ioctl the test does not itself check) print a message
 * and exit(1), which the kselftest harness reports as a failed test. A
 * program that reports failures its own way (the benchmark) sets
 * guest_die_hook: it is called with the message before the exit.
 */
void guest_die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
extern void (*guest_die_hook)(const char *msg);

/* Opens $RKVM_DEV, creates a VM and slot 0 of @mem_size bytes at GPA 0
 * with the GDT, IDT and page tables written into it. */
struct vm *vm_new(size_t mem_size);
/* The same on device @dev (the demo and the benchmark take it as argument). */
struct vm *vm_new_on(const char *dev, size_t mem_size);
void vm_free(struct vm *vm);

/*
 * Replaces the CPUID vcpu_new gives (KVM_GET_SUPPORTED_CPUID) with the
 * smallest table that allows long mode: leaves 0 and 0x80000000 (the
 * host's vendor, no other basic leaf) and 0x80000001 with EDX.LM. The
 * same table on every hypervisor, so a guest CPUID costs the same lookup
 * everywhere (the benchmark's cpuid_exit).
 */
void vm_use_minimal_cpuid(struct vm *vm);

/*
 * The entry (@fn, @index) of the CPUID vcpu_new gives, which a test may
 * change before it creates a vCPU; NULL if there is none.
 */
struct kvm_cpuid_entry2 *vm_cpuid_entry(struct vm *vm, uint32_t fn, uint32_t index);

/*
 * True when the device is the build host's /dev/kvm served by kvm_pvm, a
 * paravirtual KVM backend without hardware entry checks that ignores host
 * writes of the TSC: the few tests where it differs from KVM on VMX/SVM
 * relax or skip there (and only there).
 */
bool dev_is_kvm_pvm(void);

/* Anonymous private read-write memory of @size bytes (dies on failure). */
void *guest_alloc(size_t size);

/* KVM_SET_USER_MEMORY_REGION; returns 0 or -errno. size 0 deletes. */
long vm_set_region(struct vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		   uint64_t size, void *hva);

/* Host pointer to @gpa inside slot 0. */
void *gpa_ptr(struct vm *vm, uint64_t gpa);

/* Copies guest code [start, end) to @gpa in slot 0. */
void vm_load(struct vm *vm, uint64_t gpa, const uint8_t *start, const uint8_t *end);

/* Installs a 64-bit interrupt gate for @vector pointing at @handler_gpa. */
void vm_set_idt_gate64(struct vm *vm, int vector, uint64_t handler_gpa);

/*
 * Creates vCPU @id, gives it the CPUID KVM supports (KVM_SET_CPUID2 with
 * KVM_GET_SUPPORTED_CPUID's entries, as a VMM does: KVM refuses EFER.LME
 * in KVM_SET_SREGS unless the guest's CPUID has long mode), maps its
 * kvm_run and sets the registers for @mode with execution starting at
 * @entry (16-byte aligned for MODE_REAL) and the stack pointer at @stack.
 * RFLAGS = 0x202 (IF set), other GPRs 0.
 *
 * IF is set although no interrupt is ever injected (there is no irqchip):
 * Bochs' VMX does not leave a guest running with IF clear for the host's
 * timer interrupt, so a guest spinning with IF=0 there stalls the host CPU
 * (RCU stall, SIGKILL not delivered for tens of seconds) on stock
 * kvm_intel as well.
 */
struct vcpu *vcpu_new(struct vm *vm, int id, enum guest_mode mode,
		      uint64_t entry, uint64_t stack);
void vcpu_free(struct vcpu *v);

/* Sets the sregs for @mode (as vcpu_new does); exposed for re-use. */
void vcpu_set_mode(struct vcpu *v, enum guest_mode mode, uint64_t entry,
		   uint64_t stack);

void vcpu_get_regs(struct vcpu *v, struct kvm_regs *regs);
void vcpu_set_regs(struct vcpu *v, const struct kvm_regs *regs);
void vcpu_get_sregs(struct vcpu *v, struct kvm_sregs *sregs);
void vcpu_set_sregs(struct vcpu *v, const struct kvm_sregs *sregs);
uint64_t vcpu_rip(struct vcpu *v);

/* KVM_RUN once: the exit_reason, or -errno if the ioctl failed. */
int run_until_exit(struct vcpu *v);

/* Name of a KVM_EXIT_* value, for messages. */
const char *exit_name(int reason);

/* Describes the current exit (reason, details, RIP) into @buf. */
void describe_exit(struct vcpu *v, char *buf, size_t len);

/* Prints the current exit (reason and details) to stderr. */
void print_exit(struct vcpu *v, const char *why);

/*
 * Checks of the current exit. Each returns 0 when the exit matches, else
 * prints what was expected and what happened and returns -1, so tests write
 * ASSERT_EQ(0, check_io(...)) and threads can just count failures.
 */
int check_exit(struct vcpu *v, int reason);
int check_io(struct vcpu *v, uint8_t dir, uint8_t size, uint16_t port,
	     uint32_t count);
int check_mmio(struct vcpu *v, uint64_t gpa, uint32_t len, bool is_write);

/* Data of the current IO exit: the PIO data page (count * size bytes). */
uint8_t *io_data(struct vcpu *v);
/* First element of an IO exit's data, little-endian, io.size bytes. */
uint64_t io_value(struct vcpu *v);
/* Stores @val as the first element of an IN's data (io.size bytes). */
void io_set_in(struct vcpu *v, uint64_t val);
/* Data of an MMIO exit (mmio.len bytes, little-endian). */
uint64_t mmio_value(struct vcpu *v);
/* Answers an MMIO read exit with @val (mmio.len bytes). */
void mmio_set_read(struct vcpu *v, uint64_t val);

/*
 * Run + check in one call. run_expect_io: one KVM_RUN that must give an IO
 * exit with count 1; for OUT the data must be @val, for IN @val is stored
 * as the data the guest reads. run_expect_mmio: likewise for MMIO (a write
 * must carry @val, a read is answered with @val). run_expect_exit: just the
 * reason. All return 0 or -1 as the check_* helpers.
 */
int run_expect_io(struct vcpu *v, uint8_t dir, uint8_t size, uint16_t port,
		  uint64_t val);
int run_expect_mmio(struct vcpu *v, uint64_t gpa, uint32_t len, bool is_write,
		    uint64_t val);
int run_expect_exit(struct vcpu *v, int reason);

/* --- Interrupt controllers and vCPU threads. ------------------------- */

/*
 * KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) with args[0] = @ioapic_pins: the
 * local APICs in the kernel, PIC and IOAPIC in userspace (GSIs below
 * @ioapic_pins are the userspace IOAPIC's). Must come before the first
 * vCPU. 0 or -errno.
 */
long vm_enable_split_irqchip(struct vm *vm, uint64_t ioapic_pins);

/*
 * The address of an x86 MSI to the local APIC with physical APIC ID @dest
 * (redirection hint 0, physical destination mode).
 */
#define MSI_ADDR(dest)	(0xfee00000u | ((uint32_t)(dest) & 0xff) << 12)
/* MSI data: @vector, fixed delivery; MSI_LEVEL makes it level-triggered (asserted). */
#define MSI_LEVEL	(1u << 15 | 1u << 14)

/* KVM_SIGNAL_MSI: the ioctl's value (>= 0) or -errno. */
long vm_signal_msi(struct vm *vm, uint32_t address_lo, uint32_t data,
		   uint32_t flags);

/* Fills @e as a KVM_IRQ_ROUTING_MSI entry for @gsi. */
void irq_route_msi(struct kvm_irq_routing_entry *e, uint32_t gsi,
		   uint32_t address_lo, uint32_t data);

/* KVM_SET_GSI_ROUTING with the @n entries @e: 0 or -errno. */
long vm_set_gsi_routing(struct vm *vm, const struct kvm_irq_routing_entry *e,
			uint32_t n);

/* KVM_GET_MP_STATE (dies on failure) and KVM_SET_MP_STATE (0 or -errno). */
uint32_t vcpu_get_mp_state(struct vcpu *v);
long vcpu_set_mp_state(struct vcpu *v, uint32_t state);

/*
 * vCPU threads. With an in-kernel local APIC a halted vCPU stays in
 * KVM_RUN until an interrupt wakes it; only a signal makes KVM_RUN return
 * (-EINTR). vcpu_thread_start() installs a no-op SIGUSR1 handler (without
 * SA_RESTART) and runs @fn(@arg) on a new thread that belongs to @v;
 * vcpu_kick() sets @v's immediate_exit and sends the thread SIGUSR1, so
 * KVM_RUN returns -EINTR whether the thread is inside it or about to
 * enter it. vcpu_thread_join() waits up to @timeout_ms for the thread,
 * then kicks it every 100 ms until it ends: 0 if it ended by itself,
 * -ETIMEDOUT if it had to be kicked (a hypervisor that never wakes a
 * vCPU fails the test instead of hanging it).
 */
struct vcpu_thread {
	struct vcpu *v;
	pthread_t tid;
	void *(*fn)(void *);
	void *arg;
	bool started;
};

void vcpu_thread_start(struct vcpu_thread *t, struct vcpu *v,
		       void *(*fn)(void *), void *arg);
void vcpu_kick(struct vcpu_thread *t);
/* Sends SIGUSR1 alone: KVM_RUN returns -EINTR if the thread is inside it. */
void vcpu_thread_signal(struct vcpu_thread *t);
int vcpu_thread_join(struct vcpu_thread *t, int timeout_ms);

/* Free swap in KiB (/proc/meminfo), -1 if unknown. */
long swap_free_kb(void);

/*
 * Pages of [p, p + len) of this process present in memory and swapped out
 * (/proc/self/pagemap): 0, or -errno.
 */
int range_pages(const void *p, size_t len, long *present, long *swapped);

/*
 * A statistics fd (KVM_GET_STATS_FD on a VM or vCPU fd) with its header,
 * id and descriptors read, for looking statistics up by name as KVM's
 * selftests do.
 */
struct stats {
	int fd;
	struct kvm_stats_header h;
	char id[64];
	uint8_t *descs;		/* num_desc descriptors of desc_size bytes */
	size_t desc_size;
};

/* Opens the statistics of VM or vCPU fd @fd: 0 or -errno. */
int stats_open(struct stats *s, int fd);
void stats_close(struct stats *s);
/* The descriptor of statistic @name, NULL if there is none. */
struct kvm_stats_desc *stats_desc(struct stats *s, const char *name);
/* The current value of statistic @name, -1 if there is none. */
int64_t stat_get(struct stats *s, const char *name);

#endif /* SELFTEST_RKVM_GUEST_LIB_H */
