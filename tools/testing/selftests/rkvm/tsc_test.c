// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of the guest's TSC:
 *
 *  - KVM_GET_TSC_KHZ on the vCPU and VM fds gives the host's rate (more
 *    than 0, the same on both), and KVM_SET_TSC_KHZ accepts that rate and
 *    0 (the default) on both; without TSC scaling (KVM_CAP_TSC_CONTROL 0)
 *    half the rate is refused with EINVAL; on the VM fd only before the
 *    first vCPU;
 *  - the VM's vCPUs share one TSC: two vCPUs created 200 ms apart read
 *    the same guest TSC for the same host TSC (within the time the reads
 *    take), and it starts near 0 when the VM is created.
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <x86intrin.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"
#include "guest_fixture.h"

/* Stores its TSC at the GPA in R8, then halts. */
GUEST_CODE_BLOCK(tsc_guest, ".code64",
	"rdtsc\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov %rax, (%r8)\n"
	"hlt\n");

TEST_F(guest, tsc_khz_is_the_hosts)
{
	long vm_khz, khz, scaling;
	struct vcpu *v;

	ASSERT_EQ(1, xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_GET_TSC_KHZ));
	scaling = xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_TSC_CONTROL);
	vm_khz = xioctl(self->vm->fd, KVM_GET_TSC_KHZ, 0);
	ASSERT_LT(0, vm_khz);
	EXPECT_EQ(0, xioctl(self->vm->fd, KVM_SET_TSC_KHZ, vm_khz));
	EXPECT_EQ(0, xioctl(self->vm->fd, KVM_SET_TSC_KHZ, 0));
	vm_load(self->vm, GUEST_CODE, tsc_guest, tsc_guest_end);
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	khz = xioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	EXPECT_EQ(vm_khz, khz);
	EXPECT_EQ(0, xioctl(v->fd, KVM_SET_TSC_KHZ, khz));
	EXPECT_EQ(0, xioctl(v->fd, KVM_SET_TSC_KHZ, 0));
	EXPECT_EQ(khz, xioctl(v->fd, KVM_GET_TSC_KHZ, 0));
	if (scaling <= 0) {
		EXPECT_EQ(-EINVAL, xioctl(v->fd, KVM_SET_TSC_KHZ, khz / 2));
		/*
		 * A refused rate changes nothing on rkvm; KVM records it
		 * before refusing (KVM_GET_TSC_KHZ then reports it), so only
		 * rkvm is held to that.
		 */
		if (strcmp(rkvm_dev_path(), "/dev/kvm"))
			EXPECT_EQ(khz, xioctl(v->fd, KVM_GET_TSC_KHZ, 0));
	}
	/* The VM's default is fixed once a vCPU exists. */
	EXPECT_EQ(-EINVAL, xioctl(self->vm->fd, KVM_SET_TSC_KHZ, vm_khz));
	TH_LOG("TSC at %ld kHz, scaling %s", khz, scaling > 0 ? "offered" : "not offered");
	vcpu_free(v);
}

/*
 * Runs @v to its HLT and returns the guest TSC it stored at @gpa; @before
 * and @after bracket it with the host's TSC.
 */
static uint64_t guest_tsc(struct vm *vm, struct vcpu *v, uint64_t gpa,
			  uint64_t *before, uint64_t *after)
{
	struct kvm_regs regs;

	vcpu_get_regs(v, &regs);
	regs.r8 = gpa;
	vcpu_set_regs(v, &regs);
	*before = __rdtsc();
	if (run_expect_exit(v, KVM_EXIT_HLT))
		return 0;
	*after = __rdtsc();
	return *(volatile uint64_t *)gpa_ptr(vm, gpa);
}

TEST_F(guest, vcpus_share_one_tsc)
{
	uint64_t g0, g1, b0, a0, b1, a1, created = __rdtsc();
	long khz = xioctl(self->vm->fd, KVM_GET_TSC_KHZ, 0);
	uint64_t gap = (uint64_t)khz * 200;	/* 200 ms of TSC */
	int64_t lo0, hi0, lo1, hi1;
	struct vcpu *v0, *v1;

	ASSERT_LT(0, khz);
	vm_load(self->vm, GUEST_CODE, tsc_guest, tsc_guest_end);
	v0 = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	usleep(200000);
	v1 = vcpu_new(self->vm, 1, MODE_LONG64, GUEST_CODE, GUEST_STACK - 0x1000);
	g0 = guest_tsc(self->vm, v0, GUEST_DATA, &b0, &a0);
	g1 = guest_tsc(self->vm, v1, GUEST_DATA + 8, &b1, &a1);
	ASSERT_NE(0, g0);
	ASSERT_NE(0, g1);
	/* Each vCPU's offset (guest - host TSC) lies within its bracket. */
	lo0 = (int64_t)(g0 - a0), hi0 = (int64_t)(g0 - b0);
	lo1 = (int64_t)(g1 - a1), hi1 = (int64_t)(g1 - b1);
	TH_LOG("offsets: vCPU 0 in [%ld, %ld], vCPU 1 in [%ld, %ld]; vCPU 1 created %lu ms later",
	       (long)lo0, (long)hi0, (long)lo1, (long)hi1, (unsigned long)(gap / khz));
	/* The same offset, give or take a tenth of the creation gap. */
	EXPECT_GT(hi1 + (int64_t)gap / 10, lo0);
	EXPECT_GT(hi0 + (int64_t)gap / 10, lo1);
	/* Counting from about the VM's creation: not the host's uptime. */
	EXPECT_LT(g0, a0 - created + 10 * gap);
	vcpu_free(v0);
	vcpu_free(v1);
}

TEST_HARNESS_MAIN
