/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vm64.h: the smallest long-mode VM setup over the KVM x86 ioctl ABI, shared
 * by rkvm-demo and rkvm-bench. Open a KVM-style device (/dev/kvm or
 * /dev/rkvm), create a VM, add memory slots, write a flat GDT and
 * identity-mapped 4-level page tables (2 MiB pages, first 4 GiB) into guest
 * memory, and start vCPUs directly in 64-bit mode through KVM_SET_CPUID2
 * (long mode needs CPUID.LM), KVM_SET_SREGS and KVM_SET_REGS. Header-only;
 * every function returns -1 with errno set and a message in vm64_err on
 * failure.
 */
#ifndef RKVM_VM64_H
#define RKVM_VM64_H

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <linux/kvm.h>

/* Guest-physical layout of the low slot (slot 0, starting at GPA 0). */
#define VM64_GDT	0x1000ULL	/* null, code64 0x08, data 0x10, TSS 0x18 */
#define VM64_PML4	0x2000ULL
#define VM64_PDPT	0x3000ULL
#define VM64_PD		0x4000ULL	/* four PDs: 0x4000..0x7fff, 4 GiB */
#define VM64_CODE	0x10000ULL	/* guest code is copied here */
#define VM64_CODE_MAX	0x10000ULL
#define VM64_STACKS	0x20000ULL	/* vCPU n's stack top: + (n + 1) * 4 KiB */
#define VM64_LOW_MIN	0x40000ULL	/* the low slot must hold at least this */

#define VM64_SEL_CODE	0x08
#define VM64_SEL_DATA	0x10
#define VM64_SEL_TSS	0x18

static char vm64_err[256];

/* Records "what: strerror(errno)" (errno is kept) and returns -1. */
static int vm64_fail(const char *fmt, ...)
{
	int e = errno;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(vm64_err, sizeof(vm64_err), fmt, ap);
	va_end(ap);
	n = strlen(vm64_err);
	if (e)
		snprintf(vm64_err + n, sizeof(vm64_err) - n, ": %s", strerror(e));
	errno = e;
	return -1;
}

struct vm64 {
	int sys_fd;
	int vm_fd;
	int run_size;		/* KVM_GET_VCPU_MMAP_SIZE */
	uint8_t *low;		/* host mapping of slot 0 (GPA 0) */
	uint64_t low_size;
};

struct vm64_vcpu {
	int fd;
	struct kvm_run *run;
};

/* Opens the device and creates a VM. */
static int vm64_open(struct vm64 *vm, const char *dev)
{
	int v;

	memset(vm, 0, sizeof(*vm));
	vm->vm_fd = -1;
	vm->sys_fd = open(dev, O_RDWR | O_CLOEXEC);
	if (vm->sys_fd < 0)
		return vm64_fail("open %s", dev);
	v = ioctl(vm->sys_fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		if (v >= 0)
			errno = 0;
		return vm64_fail("%s: KVM_GET_API_VERSION = %d, want %d", dev, v, KVM_API_VERSION);
	}
	vm->run_size = ioctl(vm->sys_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (vm->run_size < (int)sizeof(struct kvm_run))
		return vm64_fail("%s: KVM_GET_VCPU_MMAP_SIZE = %d", dev, vm->run_size);
	vm->vm_fd = ioctl(vm->sys_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return vm64_fail("%s: KVM_CREATE_VM", dev);
	return 0;
}

static void vm64_close(struct vm64 *vm)
{
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->sys_fd >= 0)
		close(vm->sys_fd);
	vm->vm_fd = vm->sys_fd = -1;
}

/*
 * Maps size bytes of fresh anonymous memory and registers it as slot at gpa.
 * The memory is not touched here. nohuge asks for 4 KiB host pages (no THP),
 * so each guest page is its own host fault and its own NPT/EPT fault.
 */
static void *vm64_add_slot(struct vm64 *vm, uint32_t slot, uint64_t gpa, uint64_t size, int nohuge)
{
	struct kvm_userspace_memory_region r;
	void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (mem == MAP_FAILED) {
		vm64_fail("mmap %llu bytes", (unsigned long long)size);
		return NULL;
	}
	/*
	 * No THP here; kernels without madvise(2) (tinyconfig has no
	 * ADVISE_SYSCALLS) still have the per-process switch.
	 */
	if (nohuge && madvise(mem, size, MADV_NOHUGEPAGE) < 0)
		prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	memset(&r, 0, sizeof(r));
	r.slot = slot;
	r.guest_phys_addr = gpa;
	r.memory_size = size;
	r.userspace_addr = (uintptr_t)mem;
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
		vm64_fail("KVM_SET_USER_MEMORY_REGION slot %u gpa 0x%llx size 0x%llx", slot,
			  (unsigned long long)gpa, (unsigned long long)size);
		munmap(mem, size);
		return NULL;
	}
	if (gpa == 0) {
		vm->low = mem;
		vm->low_size = size;
	}
	return mem;
}

/*
 * Writes the GDT and the page tables into the low slot and copies the guest
 * code [code, code + len) to VM64_CODE.
 */
static int vm64_setup_memory(struct vm64 *vm, const void *code, size_t len)
{
	uint64_t *gdt, *pml4, *pdpt, *pd;
	int i, j;

	if (!vm->low || vm->low_size < VM64_LOW_MIN) {
		errno = EINVAL;
		return vm64_fail("the slot at GPA 0 must hold at least 0x%llx bytes",
				 (unsigned long long)VM64_LOW_MIN);
	}
	if (len > VM64_CODE_MAX) {
		errno = E2BIG;
		return vm64_fail("guest code of %zu bytes", len);
	}
	gdt = (uint64_t *)(vm->low + VM64_GDT);
	gdt[0] = 0;
	gdt[1] = 0x00af9b000000ffffULL;	/* 0x08: code, 64-bit (L), DPL 0 */
	gdt[2] = 0x00cf93000000ffffULL;	/* 0x10: data, flat 4 GiB, writable */
	gdt[3] = 0x00008b0000000067ULL;	/* 0x18: 64-bit TSS (busy), base 0 */
	gdt[4] = 0;			/*       its upper half (base 63:32) */

	pml4 = (uint64_t *)(vm->low + VM64_PML4);
	pdpt = (uint64_t *)(vm->low + VM64_PDPT);
	memset(pml4, 0, 4096);
	memset(pdpt, 0, 4096);
	/*
	 * Accessed (and Dirty) preset: the vCPUs' page walks never write to
	 * the tables, so vCPUs starting together do not race on them.
	 */
	pml4[0] = VM64_PDPT | 0x23;				/* P | RW | A */
	for (i = 0; i < 4; i++) {
		pd = (uint64_t *)(vm->low + VM64_PD + i * 4096);
		pdpt[i] = (VM64_PD + i * 4096) | 0x23;
		for (j = 0; j < 512; j++)			/* P | RW | A | D | PS */
			pd[j] = ((uint64_t)i << 30) | ((uint64_t)j << 21) | 0xe3;
	}
	memcpy(vm->low + VM64_CODE, code, len);
	return 0;
}

static int vm64_create_vcpu(struct vm64 *vm, int id, struct vm64_vcpu *vcpu)
{
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, id);
	if (vcpu->fd < 0)
		return vm64_fail("KVM_CREATE_VCPU %d", id);
	vcpu->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		return vm64_fail("mmap of vCPU %d's kvm_run", id);
	}
	return 0;
}

/*
 * Gives the vCPU the smallest CPUID that allows long mode: KVM refuses
 * EFER.LME/LMA in KVM_SET_SREGS unless the guest's CPUID has LM. Leaves
 * 0 and 0x80000000 (the host's vendor, no other basic leaf) and
 * 0x80000001 with EDX.LM; the same table on every hypervisor, so CPUID
 * costs the same lookup everywhere.
 */
static int vm64_set_cpuid(struct vm64_vcpu *vcpu)
{
	struct {
		struct kvm_cpuid2 head;
		struct kvm_cpuid_entry2 e[3];
	} c;
	uint32_t max, ebx, ecx, edx;

	__cpuid(0, max, ebx, ecx, edx);	/* the vendor: ebx, edx, ecx */
	(void)max;
	memset(&c, 0, sizeof(c));
	c.head.nent = 3;
	c.e[0].function = 0;
	c.e[0].eax = 0;
	c.e[1].function = 0x80000000;
	c.e[1].eax = 0x80000001;
	c.e[2].function = 0x80000001;
	c.e[2].edx = 1u << 29;		/* LM */
	for (int i = 0; i < 2; i++) {
		c.e[i].ebx = ebx;
		c.e[i].edx = edx;
		c.e[i].ecx = ecx;
	}
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, &c) < 0)
		return vm64_fail("KVM_SET_CPUID2 (a guest CPUID with long mode)");
	return 0;
}

/*
 * Puts the vCPU in 64-bit mode (its CPUID first, then paging on, CR3 = our
 * PML4, flat segments) at rip = VM64_CODE + entry, rsp at the top of its own
 * stack, with the given rdi, rsi, rdx (the guest routine's arguments).
 */
static int vm64_start_long_mode(struct vm64_vcpu *vcpu, int id, uint64_t entry,
				uint64_t rdi, uint64_t rsi, uint64_t rdx)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = VM64_SEL_CODE,
		.type = 11, .present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = {
		.base = 0, .limit = 0xffffffff, .selector = VM64_SEL_DATA,
		.type = 3, .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment tss = {
		.base = 0, .limit = 0x67, .selector = VM64_SEL_TSS,
		.type = 11, .present = 1, .dpl = 0, .db = 0, .s = 0, .l = 0, .g = 0,
	};
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (vm64_set_cpuid(vcpu) < 0)
		return -1;
	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return vm64_fail("KVM_GET_SREGS");
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.tr = tss;
	sregs.gdt.base = VM64_GDT;
	sregs.gdt.limit = 5 * 8 - 1;
	sregs.idt.base = 0;	/* no IDT: an exception ends in a shutdown exit */
	sregs.idt.limit = 0;
	sregs.cr0 = 0x80050033;	/* PG | AM | WP | NE | ET | MP | PE */
	sregs.cr3 = VM64_PML4;
	sregs.cr4 = 0x20;	/* PAE */
	sregs.efer = 0x500;	/* LMA | LME */
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return vm64_fail("KVM_SET_SREGS (64-bit mode)");

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = VM64_CODE + entry;
	regs.rsp = VM64_STACKS + (uint64_t)(id + 1) * 4096;
	regs.rdi = rdi;
	regs.rsi = rsi;
	regs.rdx = rdx;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return vm64_fail("KVM_SET_REGS");
	return 0;
}

static const char *vm64_exit_name(uint32_t reason)
{
	static char buf[32];

	switch (reason) {
	case KVM_EXIT_UNKNOWN: return "UNKNOWN";
	case KVM_EXIT_EXCEPTION: return "EXCEPTION";
	case KVM_EXIT_IO: return "IO";
	case KVM_EXIT_HYPERCALL: return "HYPERCALL";
	case KVM_EXIT_DEBUG: return "DEBUG";
	case KVM_EXIT_HLT: return "HLT";
	case KVM_EXIT_MMIO: return "MMIO";
	case KVM_EXIT_IRQ_WINDOW_OPEN: return "IRQ_WINDOW_OPEN";
	case KVM_EXIT_SHUTDOWN: return "SHUTDOWN";
	case KVM_EXIT_FAIL_ENTRY: return "FAIL_ENTRY";
	case KVM_EXIT_INTR: return "INTR";
	case KVM_EXIT_INTERNAL_ERROR: return "INTERNAL_ERROR";
	}
	snprintf(buf, sizeof(buf), "%u", reason);
	return buf;
}

/* Describes an exit the caller did not expect, with the detail KVM gives. */
static void vm64_describe_exit(struct vm64_vcpu *vcpu, char *buf, size_t len)
{
	struct kvm_run *run = vcpu->run;
	struct kvm_regs regs;
	int n;

	n = snprintf(buf, len, "exit %s", vm64_exit_name(run->exit_reason));
	switch (run->exit_reason) {
	case KVM_EXIT_FAIL_ENTRY:
		n += snprintf(buf + n, len - n, " (hardware_entry_failure_reason 0x%llx)",
			      (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		n += snprintf(buf + n, len - n, " (suberror %u)", run->internal.suberror);
		break;
	case KVM_EXIT_IO:
		n += snprintf(buf + n, len - n, " (%s port 0x%x size %u)",
			      run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in",
			      run->io.port, run->io.size);
		break;
	case KVM_EXIT_MMIO:
		n += snprintf(buf + n, len - n, " (%s gpa 0x%llx len %u)",
			      run->mmio.is_write ? "write" : "read",
			      (unsigned long long)run->mmio.phys_addr, run->mmio.len);
		break;
	}
	if (n < (int)len && ioctl(vcpu->fd, KVM_GET_REGS, &regs) == 0)
		snprintf(buf + n, len - n, " at rip 0x%llx", (unsigned long long)regs.rip);
}

#endif /* RKVM_VM64_H */
