// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm vCPU selftests: KVM_CREATE_VCPU and its limits, the vCPU fd's
 * mapping (kvm_run page + PIO data page), and the register ioctls
 * (KVM_GET/SET_REGS, KVM_GET/SET_SREGS) with KVM's reset values and checks.
 * Reset segment values differ between KVM's SVM and VMX backends; rkvm
 * reports each backend's, checked here by CPU vendor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/rkvm.h>

#include "kselftest_harness.h"
#include "rkvm_caps.h"
#include "rkvm_util.h"

/* rkvm/caps.rs's KVM_CAP_MAX_VCPUS (also the vCPU id limit). */
#define MAX_VCPUS ((int)rkvm_expected_cap(KVM_CAP_MAX_VCPUS, 1))

FIXTURE(vm) {
	int sys, vm;
};

FIXTURE_SETUP(vm)
{
	self->sys = open(rkvm_dev_path(), O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->sys);
	self->vm = ioctl(self->sys, KVM_CREATE_VM, 0);
	ASSERT_LE(0, self->vm);
}

FIXTURE_TEARDOWN(vm)
{
	close(self->vm);
	close(self->sys);
}

TEST_F(vm, capabilities)
{
	long online = sysconf(_SC_NPROCESSORS_ONLN);

	EXPECT_EQ(online < MAX_VCPUS ? online : MAX_VCPUS,
		  ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS));
	EXPECT_EQ(MAX_VCPUS, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS));
	EXPECT_EQ(MAX_VCPUS, ioctl(self->vm, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPU_ID));
}

TEST_F(vm, create_limits)
{
	char path[64], target[64] = { 0 };
	int id, fd;

	for (id = 0; id < MAX_VCPUS; id++) {
		/* A taken id is EEXIST while there is room for more vCPUs. */
		if (id == 2) {
			EXPECT_EQ(-EEXIST, xioctl(self->vm, KVM_CREATE_VCPU, 0));
			EXPECT_EQ(-EEXIST, xioctl(self->vm, KVM_CREATE_VCPU, 1));
		}
		fd = xioctl(self->vm, KVM_CREATE_VCPU, id);
		ASSERT_LE(0, fd) TH_LOG("vCPU %d", id);
		ASSERT_EQ(FD_CLOEXEC, fcntl(fd, F_GETFD) & FD_CLOEXEC);
		if (id == 0) {
			snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
			ASSERT_LT(0, readlink(path, target, sizeof(target) - 1));
			ASSERT_STREQ("anon_inode:rkvm-vcpu", target);
		}
		/* Closing the fd does not free the id: the vCPU lives on. */
		if (id % 2)
			close(fd);
	}
	/* Full: KVM checks the count first, so even a taken id is EINVAL. */
	EXPECT_EQ(-EINVAL, xioctl(self->vm, KVM_CREATE_VCPU, 0));
	EXPECT_EQ(-EINVAL, xioctl(self->vm, KVM_CREATE_VCPU, MAX_VCPUS));
	EXPECT_EQ(-EINVAL, xioctl(self->vm, KVM_CREATE_VCPU, -1UL));
	EXPECT_EQ(-EINVAL, xioctl(self->vm, KVM_CREATE_VCPU, 1UL << 32));
}

TEST_F(vm, mmap_run_and_pio_pages)
{
	long page = getpagesize();
	int vcpu = xioctl(self->vm, KVM_CREATE_VCPU, 0);
	int size = ioctl(self->sys, KVM_GET_VCPU_MMAP_SIZE, 0);
	unsigned char *run, *pio;
	int i;

	ASSERT_LE(0, vcpu);
	ASSERT_EQ(2 * page, size);
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	ASSERT_NE(MAP_FAILED, run);
	for (i = 0; i < size; i++)
		ASSERT_EQ(0, run[i]) TH_LOG("byte %d", i);
	/* The same pages are seen through a second mapping of offset 1. */
	run[page + 5] = 0xa5;
	pio = mmap(NULL, page, PROT_READ, MAP_SHARED, vcpu, page);
	ASSERT_NE(MAP_FAILED, pio);
	EXPECT_EQ(0xa5, pio[5]);
	munmap(pio, page);
	/* Nothing lies beyond the PIO page. */
	EXPECT_EQ(MAP_FAILED, mmap(NULL, 3 * page, PROT_READ, MAP_SHARED, vcpu, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(MAP_FAILED, mmap(NULL, page, PROT_READ, MAP_SHARED, vcpu, 2 * page));
	/* A VM fd cannot be mapped at all. */
	EXPECT_EQ(MAP_FAILED, mmap(NULL, page, PROT_READ, MAP_SHARED, self->vm, 0));
	EXPECT_EQ(ENODEV, errno);
	/* The mapping outlives the fd and the VM. */
	close(vcpu);
	close(self->vm);
	self->vm = ioctl(self->sys, KVM_CREATE_VM, 0);
	EXPECT_EQ(0xa5, run[page + 5]);
	munmap(run, size);
}

TEST_F(vm, reset_regs_are_kvms)
{
	struct kvm_regs regs;
	int vcpu = xioctl(self->vm, KVM_CREATE_VCPU, 0);

	ASSERT_LE(0, vcpu);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0xfff0, regs.rip);
	EXPECT_EQ(2, regs.rflags);
	EXPECT_EQ(0x600, regs.rdx);
	EXPECT_EQ(0, regs.rax | regs.rbx | regs.rcx | regs.rsi | regs.rdi | regs.rsp |
		     regs.rbp | regs.r8 | regs.r9 | regs.r10 | regs.r11 | regs.r12 |
		     regs.r13 | regs.r14 | regs.r15);
	close(vcpu);
}

static bool host_is_amd(void)
{
	char line[4096];
	bool svm = false;
	FILE *f = fopen("/proc/cpuinfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "flags", 5) && strstr(line, " svm"))
			svm = true;
	if (f)
		fclose(f);
	return svm;
}

TEST_F(vm, reset_sregs_are_kvms)
{
	struct kvm_sregs s;
	int bsp = xioctl(self->vm, KVM_CREATE_VCPU, 0);
	int ap = xioctl(self->vm, KVM_CREATE_VCPU, 1);
	bool amd = host_is_amd();

	ASSERT_LE(0, bsp);
	ASSERT_LE(0, ap);
	ASSERT_EQ(0, ioctl(bsp, KVM_GET_SREGS, &s));
	EXPECT_EQ(0xf000, s.cs.selector);
	EXPECT_EQ(0xffff0000, s.cs.base);
	EXPECT_EQ(0xffff, s.cs.limit);
	EXPECT_EQ(1, s.cs.present);
	EXPECT_EQ(1, s.cs.s);
	/* kvm_amd: not-accessed CS and SS, 16-bit busy TSS; kvm_intel: all accessed, 32-bit TSS. */
	EXPECT_EQ(amd ? 0xa : 0xb, s.cs.type);
	EXPECT_EQ(amd ? 2 : 3, s.ss.type);
	EXPECT_EQ(3, s.ds.type);
	EXPECT_EQ(3, s.gs.type);
	EXPECT_EQ(amd ? 3 : 0xb, s.tr.type);
	EXPECT_EQ(0, s.tr.s);
	EXPECT_EQ(2, s.ldt.type);
	EXPECT_EQ(0xffff, s.gdt.limit);
	EXPECT_EQ(0xffff, s.idt.limit);
	EXPECT_EQ(0x60000010, s.cr0);
	EXPECT_EQ(0, s.cr2 | s.cr3 | s.cr4 | s.cr8 | s.efer);
	EXPECT_EQ(0xfee00900, s.apic_base);
	EXPECT_EQ(0, s.interrupt_bitmap[0] | s.interrupt_bitmap[3]);
	ASSERT_EQ(0, ioctl(ap, KVM_GET_SREGS, &s));
	EXPECT_EQ(0xfee00800, s.apic_base);
	close(ap);
	close(bsp);
}

TEST_F(vm, sregs_round_trip_and_checks)
{
	struct kvm_sregs s, out, bad;
	struct kvm_segment flat_code = { .base = 0, .limit = 0xffffffff, .selector = 8,
		.type = 0xb, .present = 1, .s = 1, .db = 1, .g = 1 };
	struct kvm_segment flat_data = { .base = 0, .limit = 0xffffffff, .selector = 0x10,
		.type = 3, .present = 1, .s = 1, .db = 1, .g = 1 };
	int vcpu = xioctl(self->vm, KVM_CREATE_VCPU, 0);

	ASSERT_LE(0, vcpu);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &s));
	/* 32-bit protected mode with paging, in values both backends keep as they are. */
	s.cr0 = 0x80000011;
	s.cr3 = 0x1000;
	s.cr4 = 0x10;
	s.cs = flat_code;
	s.ds = s.es = s.fs = s.gs = s.ss = flat_data;
	s.tr = (struct kvm_segment){ .base = 0x3000, .limit = 0x67, .selector = 0x18,
				     .type = 0xb, .present = 1 };
	s.gdt.base = 0x5000;
	s.gdt.limit = 0x27;
	s.idt.base = 0x6000;
	s.idt.limit = 0x7ff;
	s.cr2 = 0xabc;
	s.cr8 = 5;
	s.efer = 1;		/* SCE */
	s.interrupt_bitmap[1] = 1UL << 2;	/* vector 66 pending */
	ASSERT_EQ(0, ioctl(vcpu, KVM_SET_SREGS, &s));
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &out));
	EXPECT_EQ(0, memcmp(&s, &out, sizeof(s)));
	/* An empty bitmap leaves the queued interrupt alone, as in KVM. */
	s.interrupt_bitmap[1] = 0;
	ASSERT_EQ(0, ioctl(vcpu, KVM_SET_SREGS, &s));
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &out));
	EXPECT_EQ(1UL << 2, out.interrupt_bitmap[1]);
	s.interrupt_bitmap[1] = 1UL << 2;

	/* Each invalid state fails with EINVAL and changes nothing. */
#define REJECT(field, value) do {						\
		bad = s;							\
		bad.field = value;						\
		EXPECT_EQ(-EINVAL, xioctl(vcpu, KVM_SET_SREGS, (unsigned long)&bad)) \
			TH_LOG(#field " = " #value);				\
	} while (0)
	REJECT(cr0, 1UL << 32);			/* high bits */
	REJECT(cr0, 0x20000000);		/* NW without CD */
	REJECT(cr0, 0x80000000);		/* PG without PE */
	REJECT(cr4, 1UL << 13);			/* VMXE: not in guest CPUID */
	REJECT(cr4, 1UL << 18);			/* OSXSAVE: likewise */
	REJECT(efer, 1UL << 10);		/* LMA outside long mode */
	REJECT(efer, 1UL << 8 | 1UL << 10);	/* long mode without LM in CPUID */
	REJECT(efer, 1UL << 11);		/* NX without NX in CPUID */
	REJECT(cs.l, 1);			/* 64-bit CS outside long mode */
	REJECT(apic_base, 0xfee00801);		/* reserved low bit */
	REJECT(apic_base, 0xfee00c00);		/* x2APIC without it in CPUID */
	REJECT(apic_base, 1UL << 40 | 0x800);	/* beyond the guest MAXPHYADDR */
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &out));
	EXPECT_EQ(0, memcmp(&s, &out, sizeof(s)));
	EXPECT_EQ(-EFAULT, xioctl(vcpu, KVM_GET_SREGS, 0));
	close(vcpu);
}

TEST_F(vm, fpu_reset_and_round_trip)
{
	struct kvm_fpu f, out;
	int vcpu = xioctl(self->vm, KVM_CREATE_VCPU, 0);
	unsigned char *b = (unsigned char *)&f;
	size_t i, nonzero = 0;

	ASSERT_LE(0, vcpu);
	memset(&f, 0xaa, sizeof(f));
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_FPU, &f));
	/* FNINIT's control word, everything else 0 (MXCSR is not reported). */
	EXPECT_EQ(0x37f, f.fcw);
	for (i = 0; i < sizeof(f); i++)
		nonzero += b[i] != 0;
	EXPECT_EQ(2, nonzero);

	f.fcw = 0x27f;
	f.fsw = 0x3800;
	f.ftwx = 0x80;
	f.last_opcode = 0x1d9;
	f.last_ip = 0x1234;
	f.last_dp = 0x5678;
	f.fpr[7][9] = 0x40;
	f.xmm[15][15] = 0x7f;
	f.mxcsr = 0x1f80;	/* ignored, as by KVM */
	ASSERT_EQ(0, ioctl(vcpu, KVM_SET_FPU, &f));
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_FPU, &out));
	f.mxcsr = 0;
	EXPECT_EQ(0, memcmp(&f, &out, sizeof(f)));
	EXPECT_EQ(-EFAULT, xioctl(vcpu, KVM_SET_FPU, 16));
	close(vcpu);
}

TEST_F(vm, tss_and_identity_map_addr)
{
	uint64_t ident = 0xfeffc000;

	EXPECT_EQ(1, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_SET_TSS_ADDR));
	EXPECT_EQ(1, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR));
	EXPECT_EQ(0, xioctl(self->vm, KVM_SET_TSS_ADDR, 0xfffbd000));
	EXPECT_EQ(0, xioctl(self->vm, KVM_SET_TSS_ADDR, 0xffffd000));
	EXPECT_EQ(-EINVAL, xioctl(self->vm, KVM_SET_TSS_ADDR, 0xffffe000));
	EXPECT_EQ(0, xioctl(self->vm, KVM_SET_IDENTITY_MAP_ADDR, (unsigned long)&ident));
	EXPECT_EQ(-EFAULT, xioctl(self->vm, KVM_SET_IDENTITY_MAP_ADDR, 8));
	/* Not once a vCPU exists. */
	ASSERT_LE(0, xioctl(self->vm, KVM_CREATE_VCPU, 0));
	EXPECT_EQ(-EINVAL, xioctl(self->vm, KVM_SET_IDENTITY_MAP_ADDR, (unsigned long)&ident));
}

TEST_F(vm, regs_round_trip)
{
	struct kvm_regs in, out;
	int vcpu = xioctl(self->vm, KVM_CREATE_VCPU, 3);

	ASSERT_LE(0, vcpu);
	memset(&in, 0, sizeof(in));
	in.rax = 0x1122334455667788;
	in.r15 = 0xdeadbeef;
	in.rsp = 0x7000;
	in.rip = 0x100000;
	in.rflags = 0x200;	/* bit 1 clear: KVM sets it */
	ASSERT_EQ(0, ioctl(vcpu, KVM_SET_REGS, &in));
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_REGS, &out));
	in.rflags |= 2;
	EXPECT_EQ(0, memcmp(&in, &out, sizeof(in)));
	EXPECT_EQ(-EFAULT, xioctl(vcpu, KVM_GET_REGS, 0));
	EXPECT_EQ(-EFAULT, xioctl(vcpu, KVM_SET_REGS, 8));
	/* Unknown vCPU ioctls: EINVAL, as KVM. */
	EXPECT_EQ(-EINVAL, xioctl(vcpu, _IO(KVMIO, 0xff), 0));
	close(vcpu);
}

TEST_F(vm, vcpu_fd_only_works_in_its_creators_mm)
{
	struct kvm_regs regs;
	int vcpu = xioctl(self->vm, KVM_CREATE_VCPU, 0);
	int status;
	pid_t pid;

	ASSERT_LE(0, vcpu);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(xioctl(vcpu, KVM_GET_REGS, (unsigned long)&regs) == -EIO ? 0 : 1);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	/* The vCPU keeps its VM alive after the VM fd is closed. */
	close(self->vm);
	EXPECT_EQ(0, ioctl(vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0xfff0, regs.rip);
	close(vcpu);
	self->vm = ioctl(self->sys, KVM_CREATE_VM, 0);
}

struct creator {
	int vm, id;
	pthread_barrier_t *start;
	long fd;
};

static void *create(void *p)
{
	struct creator *c = p;

	pthread_barrier_wait(c->start);
	c->fd = xioctl(c->vm, KVM_CREATE_VCPU, c->id);
	return NULL;
}

TEST_F(vm, concurrent_creates)
{
	enum { THREADS = 16 };
	struct creator c[THREADS];
	pthread_barrier_t start;
	pthread_t t[THREADS];
	int i, won = 0, lost = 0;

	/* 16 vCPUs at once, with ids 0..7 each wanted by two threads. */
	pthread_barrier_init(&start, NULL, THREADS);
	for (i = 0; i < THREADS; i++) {
		c[i] = (struct creator){ .vm = self->vm, .id = i % 8, .start = &start };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, create, &c[i]));
	}
	for (i = 0; i < THREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		if (c[i].fd >= 0) {
			won++;
			close(c[i].fd);
		} else {
			EXPECT_EQ(-EEXIST, c[i].fd);
			lost++;
		}
	}
	pthread_barrier_destroy(&start);
	EXPECT_EQ(8, won);
	EXPECT_EQ(8, lost);
	/* And 8 more distinct ones, all at once. */
	pthread_barrier_init(&start, NULL, 8);
	for (i = 0; i < 8; i++) {
		c[i] = (struct creator){ .vm = self->vm, .id = 8 + i, .start = &start };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, create, &c[i]));
	}
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_LE(0, c[i].fd);
		close(c[i].fd);
	}
	pthread_barrier_destroy(&start);
}

TEST_HARNESS_MAIN
