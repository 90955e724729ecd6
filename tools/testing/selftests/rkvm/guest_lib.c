// SPDX-License-Identifier: GPL-2.0
/*
 * Guest library of rkvm's guest-running programs (see guest_lib.h): VM,
 * vCPU and memory set-up through the KVM ioctl ABI, the descriptor tables
 * and page tables for the three CPU modes, and exit checks.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest_lib.h"
#include "rkvm_util.h"

#define X86_CR4_PAE	(1UL << 5)
#define EFER_LME	(1UL << 8)
#define EFER_LMA	(1UL << 10)

#define PTE_P		(1UL << 0)
#define PTE_RW		(1UL << 1)
#define PTE_PS		(1UL << 7)
#define PTE_A		(1UL << 5)
#define PTE_D		(1UL << 6)

void (*guest_die_hook)(const char *msg);

void guest_die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (guest_die_hook)
		guest_die_hook(msg);
	else
		fprintf(stderr, "# guest_lib: %s\n", msg);
	exit(1);
}

bool dev_is_kvm_pvm(void)
{
	return !strcmp(rkvm_dev_path(), "/dev/kvm") &&
	       !access("/sys/module/kvm_pvm", F_OK);
}

void *guest_alloc(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		guest_die("mmap %zu bytes: %s", size, strerror(errno));
	return p;
}

long vm_set_region(struct vm *vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		   uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = size, .userspace_addr = (uintptr_t)hva,
	};

	return xioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, (unsigned long)&r);
}

void *gpa_ptr(struct vm *vm, uint64_t gpa)
{
	if (gpa >= vm->mem_size)
		guest_die("GPA %#llx outside slot 0", (unsigned long long)gpa);
	return vm->mem + gpa;
}

void vm_load(struct vm *vm, uint64_t gpa, const uint8_t *start, const uint8_t *end)
{
	if (gpa + (end - start) > vm->mem_size)
		guest_die("guest code at %#llx does not fit", (unsigned long long)gpa);
	memcpy(gpa_ptr(vm, gpa), start, end - start);
}

/* Flat descriptors: base 0, limit 0xfffff pages, accessed bit already set. */
static void write_gdt(struct vm *vm)
{
	uint64_t *gdt = gpa_ptr(vm, GUEST_GDT);

	gdt[0] = 0;
	gdt[SEL_CODE32 / 8] = 0x00cf9b000000ffffULL;	/* G, D, P, code r/x */
	gdt[SEL_DATA / 8] = 0x00cf93000000ffffULL;	/* G, B, P, data r/w */
	gdt[SEL_CODE64 / 8] = 0x00af9b000000ffffULL;	/* G, L, P, code r/x */
}

/*
 * Identity map of 0..4 GiB: PML4 -> PDPT -> 4 PDs of 2 MiB pages. Accessed
 * and dirty preset: the vCPUs' page walks never write to the tables, so
 * vCPUs starting together do not race on them.
 */
static void write_page_tables(struct vm *vm)
{
	uint64_t *pml4 = gpa_ptr(vm, GUEST_PT);
	uint64_t *pdpt = gpa_ptr(vm, GUEST_PT + 0x1000);
	uint64_t pd_gpa = GUEST_PT + 0x2000;
	int i, j;

	memset(pml4, 0, 0x6000);
	pml4[0] = (GUEST_PT + 0x1000) | PTE_P | PTE_RW | PTE_A;
	for (i = 0; i < 4; i++) {
		uint64_t *pd = gpa_ptr(vm, pd_gpa + i * 0x1000);

		pdpt[i] = (pd_gpa + i * 0x1000) | PTE_P | PTE_RW | PTE_A;
		for (j = 0; j < 512; j++)
			pd[j] = ((uint64_t)i << 30) | ((uint64_t)j << 21) |
				PTE_P | PTE_RW | PTE_A | PTE_D | PTE_PS;
	}
}

void vm_set_idt_gate64(struct vm *vm, int vector, uint64_t handler)
{
	uint32_t *g = gpa_ptr(vm, GUEST_IDT + vector * 16);

	g[0] = (handler & 0xffff) | (SEL_CODE64 << 16);
	g[1] = (handler & 0xffff0000) | 0x8e00;	/* P, DPL 0, interrupt gate */
	g[2] = handler >> 32;
	g[3] = 0;
}

struct vm *vm_new(size_t mem_size)
{
	return vm_new_on(rkvm_dev_path(), mem_size);
}

struct vm *vm_new_on(const char *dev, size_t mem_size)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	long r;

	if (!vm)
		guest_die("out of memory");
	vm->dev = dev;
	vm->sys = open(dev, O_RDWR | O_CLOEXEC);
	if (vm->sys < 0)
		guest_die("open %s: %s", dev, strerror(errno));
	r = xioctl(vm->sys, KVM_GET_API_VERSION, 0);
	if (r != KVM_API_VERSION)
		guest_die("%s: KVM_GET_API_VERSION = %ld, want %d", dev, r, KVM_API_VERSION);
	vm->fd = xioctl(vm->sys, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		guest_die("%s: KVM_CREATE_VM: %s", dev, strerror(-vm->fd));
	vm->run_size = xioctl(vm->sys, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size < (int)sizeof(struct kvm_run))
		guest_die("%s: KVM_GET_VCPU_MMAP_SIZE: %d", dev, vm->run_size);
	vm->mem_size = mem_size;
	vm->mem = guest_alloc(mem_size);
	r = vm_set_region(vm, 0, 0, 0, mem_size, vm->mem);
	if (r)
		guest_die("KVM_SET_USER_MEMORY_REGION slot 0: %s", strerror(-r));
	write_gdt(vm);
	write_page_tables(vm);

	vm->cpuid = calloc(1, sizeof(*vm->cpuid) +
			   256 * sizeof(struct kvm_cpuid_entry2));
	if (!vm->cpuid)
		guest_die("out of memory");
	vm->cpuid->nent = 256;
	r = xioctl(vm->sys, KVM_GET_SUPPORTED_CPUID, (unsigned long)vm->cpuid);
	if (r) {
		/* Go on without: only long mode set-up depends on it. */
		fprintf(stderr, "# guest_lib: KVM_GET_SUPPORTED_CPUID: %s\n",
			strerror(-r));
		free(vm->cpuid);
		vm->cpuid = NULL;
	}
	return vm;
}

struct kvm_cpuid_entry2 *vm_cpuid_entry(struct vm *vm, uint32_t fn, uint32_t index)
{
	uint32_t i;

	for (i = 0; vm->cpuid && i < vm->cpuid->nent; i++)
		if (vm->cpuid->entries[i].function == fn &&
		    vm->cpuid->entries[i].index == index)
			return &vm->cpuid->entries[i];
	return NULL;
}

void vm_use_minimal_cpuid(struct vm *vm)
{
	struct kvm_cpuid_entry2 *e;
	uint32_t max, ebx, ecx, edx;
	int i;

	free(vm->cpuid);
	vm->cpuid = calloc(1, sizeof(*vm->cpuid) + 3 * sizeof(*e));
	if (!vm->cpuid)
		guest_die("out of memory");
	vm->cpuid->nent = 3;
	e = vm->cpuid->entries;
	__cpuid(0, max, ebx, ecx, edx);	/* the vendor: ebx, edx, ecx */
	(void)max;
	e[0].function = 0;
	e[0].eax = 0;
	e[1].function = 0x80000000;
	e[1].eax = 0x80000001;
	e[2].function = 0x80000001;
	e[2].edx = 1u << 29;		/* LM */
	for (i = 0; i < 2; i++) {
		e[i].ebx = ebx;
		e[i].edx = edx;
		e[i].ecx = ecx;
	}
}

void vm_free(struct vm *vm)
{
	close(vm->fd);
	close(vm->sys);
	munmap(vm->mem, vm->mem_size);
	free(vm->cpuid);
	free(vm);
}

void vcpu_get_regs(struct vcpu *v, struct kvm_regs *regs)
{
	long r = xioctl(v->fd, KVM_GET_REGS, (unsigned long)regs);

	if (r)
		guest_die("KVM_GET_REGS: %s", strerror(-r));
}

void vcpu_set_regs(struct vcpu *v, const struct kvm_regs *regs)
{
	long r = xioctl(v->fd, KVM_SET_REGS, (unsigned long)regs);

	if (r)
		guest_die("KVM_SET_REGS: %s", strerror(-r));
}

void vcpu_get_sregs(struct vcpu *v, struct kvm_sregs *sregs)
{
	long r = xioctl(v->fd, KVM_GET_SREGS, (unsigned long)sregs);

	if (r)
		guest_die("KVM_GET_SREGS: %s", strerror(-r));
}

void vcpu_set_sregs(struct vcpu *v, const struct kvm_sregs *sregs)
{
	long r = xioctl(v->fd, KVM_SET_SREGS, (unsigned long)sregs);

	if (r)
		guest_die("KVM_SET_SREGS: %s", strerror(-r));
}

uint64_t vcpu_rip(struct vcpu *v)
{
	struct kvm_regs regs;

	vcpu_get_regs(v, &regs);
	return regs.rip;
}

static void flat_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->s = 1;
	s->db = 1;
	s->g = 1;
}

void vcpu_set_mode(struct vcpu *v, enum guest_mode mode, uint64_t entry,
		   uint64_t stack)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	/* Start from the reset state: TR and LDTR stay as KVM made them. */
	vcpu_get_sregs(v, &sregs);
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x202;	/* IF: see guest_lib.h */
	regs.rsp = stack;

	switch (mode) {
	case MODE_REAL:
		if (entry & 0xf || entry > 0xffff0)
			guest_die("real-mode entry %#llx", (unsigned long long)entry);
		sregs.cs.base = entry;
		sregs.cs.selector = entry >> 4;
		regs.rip = 0;
		break;
	case MODE_PROT32:
	case MODE_LONG64:
		flat_seg(&sregs.cs, SEL_CODE32, 0xb);
		flat_seg(&sregs.ds, SEL_DATA, 0x3);
		sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
		sregs.gdt.base = GUEST_GDT;
		sregs.gdt.limit = 4 * 8 - 1;
		sregs.idt.base = GUEST_IDT;
		sregs.idt.limit = mode == MODE_LONG64 ? 256 * 16 - 1 : 256 * 8 - 1;
		sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE;
		sregs.cr4 = 0;
		sregs.efer = 0;
		regs.rip = entry;
		if (mode == MODE_PROT32)
			break;
		sregs.cs.selector = SEL_CODE64;
		sregs.cs.db = 0;
		sregs.cs.l = 1;
		sregs.cr0 |= X86_CR0_PG | X86_CR0_WP;
		sregs.cr3 = GUEST_PT;
		sregs.cr4 = X86_CR4_PAE;
		sregs.efer = EFER_LME | EFER_LMA;
		break;
	}
	vcpu_set_sregs(v, &sregs);
	vcpu_set_regs(v, &regs);
}

struct vcpu *vcpu_new(struct vm *vm, int id, enum guest_mode mode,
		      uint64_t entry, uint64_t stack)
{
	struct vcpu *v = calloc(1, sizeof(*v));

	if (!v)
		guest_die("out of memory");
	v->vm = vm;
	v->id = id;
	v->fd = xioctl(vm->fd, KVM_CREATE_VCPU, id);
	if (v->fd < 0)
		guest_die("KVM_CREATE_VCPU %d: %s", id, strerror(-v->fd));
	v->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		      v->fd, 0);
	if (v->run == MAP_FAILED)
		guest_die("mmap kvm_run: %s", strerror(errno));
	if (vm->cpuid) {
		long r = xioctl(v->fd, KVM_SET_CPUID2, (unsigned long)vm->cpuid);

		if (r)
			guest_die("KVM_SET_CPUID2 (supported entries): %s", strerror(-r));
	}
	vcpu_set_mode(v, mode, entry, stack);
	return v;
}

void vcpu_free(struct vcpu *v)
{
	munmap(v->run, v->vm->run_size);
	close(v->fd);
	free(v);
}

int run_until_exit(struct vcpu *v)
{
	long r = xioctl(v->fd, KVM_RUN, 0);

	return r < 0 ? (int)r : (int)v->run->exit_reason;
}

const char *exit_name(int reason)
{
	static const char *const names[] = {
		[KVM_EXIT_UNKNOWN] = "UNKNOWN",
		[KVM_EXIT_EXCEPTION] = "EXCEPTION",
		[KVM_EXIT_IO] = "IO",
		[KVM_EXIT_HYPERCALL] = "HYPERCALL",
		[KVM_EXIT_DEBUG] = "DEBUG",
		[KVM_EXIT_HLT] = "HLT",
		[KVM_EXIT_MMIO] = "MMIO",
		[KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
		[KVM_EXIT_SHUTDOWN] = "SHUTDOWN",
		[KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
		[KVM_EXIT_INTR] = "INTR",
		[KVM_EXIT_SET_TPR] = "SET_TPR",
		[KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
		[KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
		[KVM_EXIT_SYSTEM_EVENT] = "SYSTEM_EVENT",
		[KVM_EXIT_X86_RDMSR] = "X86_RDMSR",
		[KVM_EXIT_X86_WRMSR] = "X86_WRMSR",
		[KVM_EXIT_DIRTY_RING_FULL] = "DIRTY_RING_FULL",
	};

	if (reason < 0)
		return "(KVM_RUN failed)";
	if (reason < (int)(sizeof(names) / sizeof(names[0])) && names[reason])
		return names[reason];
	return "(other)";
}

void describe_exit(struct vcpu *v, char *buf, size_t len)
{
	struct kvm_run *run = v->run;
	struct kvm_regs regs;
	size_t n;

	snprintf(buf, len, "exit %u (%s)", run->exit_reason,
		 exit_name(run->exit_reason));
	n = strlen(buf);
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		snprintf(buf + n, len - n, " %s port %#x size %u count %u data %#llx",
			 run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in",
			 run->io.port, run->io.size, run->io.count,
			 (unsigned long long)io_value(v));
		break;
	case KVM_EXIT_MMIO:
		snprintf(buf + n, len - n, " %s gpa %#llx len %u data %#llx",
			 run->mmio.is_write ? "write" : "read",
			 (unsigned long long)run->mmio.phys_addr, run->mmio.len,
			 (unsigned long long)mmio_value(v));
		break;
	case KVM_EXIT_DEBUG:
		snprintf(buf + n, len - n, " exception %u pc %#llx dr6 %#llx dr7 %#llx",
			 run->debug.arch.exception,
			 (unsigned long long)run->debug.arch.pc,
			 (unsigned long long)run->debug.arch.dr6,
			 (unsigned long long)run->debug.arch.dr7);
		break;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(buf + n, len - n, " reason %#llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(buf + n, len - n, " suberror %u", run->internal.suberror);
		break;
	}
	n = strlen(buf);
	if (!xioctl(v->fd, KVM_GET_REGS, (unsigned long)&regs))
		snprintf(buf + n, len - n, " rip %#llx", (unsigned long long)regs.rip);
}

void print_exit(struct vcpu *v, const char *why)
{
	char buf[256];

	describe_exit(v, buf, sizeof(buf));
	fprintf(stderr, "# vCPU %d: %s: %s\n", v->id, why, buf);
}

int check_exit(struct vcpu *v, int reason)
{
	if ((int)v->run->exit_reason == reason)
		return 0;
	fprintf(stderr, "# vCPU %d: expected exit %s\n", v->id, exit_name(reason));
	print_exit(v, "got");
	return -1;
}

int check_io(struct vcpu *v, uint8_t dir, uint8_t size, uint16_t port,
	     uint32_t count)
{
	struct kvm_run *run = v->run;

	if (run->exit_reason == KVM_EXIT_IO && run->io.direction == dir &&
	    run->io.size == size && run->io.port == port &&
	    (count == 0 || run->io.count == count) && run->io.count > 0 &&
	    run->io.data_offset >= sizeof(*run) &&
	    run->io.data_offset + (uint64_t)run->io.count * size <= (uint64_t)v->vm->run_size)
		return 0;
	fprintf(stderr, "# vCPU %d: expected IO %s port %#x size %u count %u\n",
		v->id, dir == KVM_EXIT_IO_OUT ? "out" : "in", port, size, count);
	print_exit(v, "got");
	if (run->exit_reason == KVM_EXIT_IO)
		fprintf(stderr, "# data_offset %llu\n",
			(unsigned long long)run->io.data_offset);
	return -1;
}

int check_mmio(struct vcpu *v, uint64_t gpa, uint32_t len, bool is_write)
{
	struct kvm_run *run = v->run;

	if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.phys_addr == gpa &&
	    run->mmio.len == len && !!run->mmio.is_write == is_write)
		return 0;
	fprintf(stderr, "# vCPU %d: expected MMIO %s gpa %#llx len %u\n", v->id,
		is_write ? "write" : "read", (unsigned long long)gpa, len);
	print_exit(v, "got");
	return -1;
}

uint8_t *io_data(struct vcpu *v)
{
	return (uint8_t *)v->run + v->run->io.data_offset;
}

uint64_t io_value(struct vcpu *v)
{
	uint64_t val = 0;
	unsigned int n = v->run->io.size;

	if (n > 8 || v->run->io.data_offset + n > (uint64_t)v->vm->run_size)
		return ~0ULL;
	memcpy(&val, io_data(v), n);
	return val;
}

void io_set_in(struct vcpu *v, uint64_t val)
{
	memcpy(io_data(v), &val, v->run->io.size);
}

uint64_t mmio_value(struct vcpu *v)
{
	uint64_t val = 0;
	unsigned int n = v->run->mmio.len;

	memcpy(&val, v->run->mmio.data, n <= 8 ? n : 8);
	return val;
}

void mmio_set_read(struct vcpu *v, uint64_t val)
{
	unsigned int n = v->run->mmio.len;

	memcpy(v->run->mmio.data, &val, n <= 8 ? n : 8);
}

int run_expect_exit(struct vcpu *v, int reason)
{
	int r = run_until_exit(v);

	if (r < 0) {
		fprintf(stderr, "# vCPU %d: KVM_RUN: %s (expected exit %s)\n",
			v->id, strerror(-r), exit_name(reason));
		return -1;
	}
	return check_exit(v, reason);
}

int run_expect_io(struct vcpu *v, uint8_t dir, uint8_t size, uint16_t port,
		  uint64_t val)
{
	if (run_expect_exit(v, KVM_EXIT_IO) || check_io(v, dir, size, port, 1))
		return -1;
	if (dir == KVM_EXIT_IO_IN) {
		io_set_in(v, val);
		return 0;
	}
	if (io_value(v) != (size < 8 ? val & ((1ULL << (size * 8)) - 1) : val)) {
		fprintf(stderr, "# vCPU %d: out port %#x: expected data %#llx\n",
			v->id, port, (unsigned long long)val);
		print_exit(v, "got");
		return -1;
	}
	return 0;
}

int run_expect_mmio(struct vcpu *v, uint64_t gpa, uint32_t len, bool is_write,
		    uint64_t val)
{
	uint64_t mask = len < 8 ? (1ULL << (len * 8)) - 1 : ~0ULL;

	if (run_expect_exit(v, KVM_EXIT_MMIO) || check_mmio(v, gpa, len, is_write))
		return -1;
	if (!is_write) {
		mmio_set_read(v, val);
		return 0;
	}
	if (mmio_value(v) != (val & mask)) {
		fprintf(stderr, "# vCPU %d: MMIO write %#llx: expected data %#llx\n",
			v->id, (unsigned long long)gpa, (unsigned long long)val);
		print_exit(v, "got");
		return -1;
	}
	return 0;
}

/* --- Interrupt controllers and vCPU threads. ------------------------- */

long vm_enable_split_irqchip(struct vm *vm, uint64_t ioapic_pins)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_SPLIT_IRQCHIP, .args = { ioapic_pins },
	};

	return xioctl(vm->fd, KVM_ENABLE_CAP, (unsigned long)&cap);
}

long vm_signal_msi(struct vm *vm, uint32_t address_lo, uint32_t data,
		   uint32_t flags)
{
	struct kvm_msi msi = {
		.address_lo = address_lo, .data = data, .flags = flags,
	};

	return xioctl(vm->fd, KVM_SIGNAL_MSI, (unsigned long)&msi);
}

void irq_route_msi(struct kvm_irq_routing_entry *e, uint32_t gsi,
		   uint32_t address_lo, uint32_t data)
{
	memset(e, 0, sizeof(*e));
	e->gsi = gsi;
	e->type = KVM_IRQ_ROUTING_MSI;
	e->u.msi.address_lo = address_lo;
	e->u.msi.data = data;
}

long vm_set_gsi_routing(struct vm *vm, const struct kvm_irq_routing_entry *e,
			uint32_t n)
{
	struct kvm_irq_routing *r = calloc(1, sizeof(*r) + n * sizeof(*e));
	long ret;

	if (!r)
		guest_die("out of memory");
	r->nr = n;
	memcpy(r->entries, e, n * sizeof(*e));
	ret = xioctl(vm->fd, KVM_SET_GSI_ROUTING, (unsigned long)r);
	free(r);
	return ret;
}

uint32_t vcpu_get_mp_state(struct vcpu *v)
{
	struct kvm_mp_state s;
	long r = xioctl(v->fd, KVM_GET_MP_STATE, (unsigned long)&s);

	if (r)
		guest_die("KVM_GET_MP_STATE: %s", strerror(-r));
	return s.mp_state;
}

long vcpu_set_mp_state(struct vcpu *v, uint32_t state)
{
	struct kvm_mp_state s = { .mp_state = state };

	return xioctl(v->fd, KVM_SET_MP_STATE, (unsigned long)&s);
}

static void kick_handler(int sig)
{
	(void)sig;
}

void vcpu_thread_start(struct vcpu_thread *t, struct vcpu *v,
		       void *(*fn)(void *), void *arg)
{
	struct sigaction sa = { .sa_handler = kick_handler };
	int r;

	/* No SA_RESTART: the signal is what ends a blocked KVM_RUN. */
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		guest_die("sigaction: %s", strerror(errno));
	t->v = v;
	t->fn = fn;
	t->arg = arg;
	r = pthread_create(&t->tid, NULL, fn, arg);
	if (r)
		guest_die("pthread_create: %s", strerror(r));
	t->started = true;
}

void vcpu_thread_signal(struct vcpu_thread *t)
{
	pthread_kill(t->tid, SIGUSR1);
}

void vcpu_kick(struct vcpu_thread *t)
{
	__atomic_store_n(&t->v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	vcpu_thread_signal(t);
}

static int join_within(struct vcpu_thread *t, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_timedjoin_np(t->tid, NULL, &ts);
}

int vcpu_thread_join(struct vcpu_thread *t, int timeout_ms)
{
	int i;

	if (!t->started)
		return 0;
	t->started = false;
	if (!join_within(t, timeout_ms))
		return 0;
	for (i = 0; i < 600; i++) {
		vcpu_kick(t);
		if (!join_within(t, 100))
			return -ETIMEDOUT;
	}
	guest_die("vCPU %d: its thread does not end after 60 s of kicks", t->v->id);
}

/* --- Host memory. ----------------------------------------------------- */

long swap_free_kb(void)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "SwapFree: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

int range_pages(const void *p, size_t len, long *present, long *swapped)
{
	uint64_t ent[512];
	uintptr_t first = (uintptr_t)p / 4096;
	size_t n = len / 4096, i, j, k;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		return -errno;
	*present = *swapped = 0;
	for (i = 0; i < n; i += k) {
		k = n - i < 512 ? n - i : 512;
		if (pread(fd, ent, k * 8, (first + i) * 8) != (ssize_t)(k * 8)) {
			close(fd);
			return -EIO;
		}
		for (j = 0; j < k; j++) {
			*present += ent[j] >> 63 & 1;
			*swapped += ent[j] >> 62 & 1;
		}
	}
	close(fd);
	return 0;
}

/* --- Binary statistics fds. ------------------------------------------ */

int stats_open(struct stats *s, int fd)
{
	long r = xioctl(fd, KVM_GET_STATS_FD, 0);

	memset(s, 0, sizeof(*s));
	if (r < 0)
		return r;
	s->fd = r;
	if (pread(s->fd, &s->h, sizeof(s->h), 0) != sizeof(s->h))
		return -EIO;
	if (s->h.name_size >= sizeof(s->id) || s->h.name_size == 0)
		return -EPROTO;
	if (pread(s->fd, s->id, s->h.name_size, s->h.id_offset) != s->h.name_size)
		return -EIO;
	s->desc_size = sizeof(struct kvm_stats_desc) + s->h.name_size;
	s->descs = calloc(s->h.num_desc, s->desc_size);
	if (!s->descs)
		return -ENOMEM;
	if (pread(s->fd, s->descs, s->h.num_desc * s->desc_size, s->h.desc_offset) !=
	    (ssize_t)(s->h.num_desc * s->desc_size))
		return -EIO;
	return 0;
}

void stats_close(struct stats *s)
{
	free(s->descs);
	if (s->fd > 0)
		close(s->fd);
}

struct kvm_stats_desc *stats_desc(struct stats *s, const char *name)
{
	uint32_t i;

	for (i = 0; i < s->h.num_desc; i++) {
		struct kvm_stats_desc *d = (void *)(s->descs + i * s->desc_size);

		if (!strncmp(d->name, name, s->h.name_size))
			return d;
	}
	return NULL;
}

int64_t stat_get(struct stats *s, const char *name)
{
	struct kvm_stats_desc *d = stats_desc(s, name);
	uint64_t v;

	if (!d || pread(s->fd, &v, 8, s->h.data_offset + d->offset) != 8)
		return -1;
	return v;
}
