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
 *    take), and it starts near 0 when the VM is created;
 *  - the VMM's KVM_SET_MSRS of IA32_TSC synchronizes as KVM's does: 0
 *    written to each vCPU 100 ms apart leaves them one offset (the VM's),
 *    a new value written to each 100 ms apart gives them one new offset,
 *    and a value more than a second off where the last write got to gives
 *    that vCPU an offset of its own;
 *  - IA32_TSC_ADJUST: the guest's write moves its TSC by the difference,
 *    its write of IA32_TSC moves TSC_ADJUST by what it moved the TSC; the
 *    VMM's write of either leaves the other alone; without the CPUID bit
 *    the guest's writes of TSC_ADJUST are dropped (no #GP) and the VMM's
 *    too, while reads still work, as KVM.
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

struct one_msr {
	struct kvm_msrs m;
	struct kvm_msr_entry e;
};

static long set_tsc(struct vcpu *v, uint64_t val)
{
	struct one_msr msr = { .m.nmsrs = 1, .e.index = 0x10, .e.data = val };

	return xioctl(v->fd, KVM_SET_MSRS, (unsigned long)&msr);
}

/* The vCPU's TSC offset (guest minus host TSC), read by KVM_GET_MSRS. */
static int64_t tsc_offset(struct __test_metadata *_metadata, struct vcpu *v)
{
	struct one_msr msr = { .m.nmsrs = 1, .e.index = 0x10 };
	uint64_t before, after;

	before = __rdtsc();
	EXPECT_EQ(1, xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msr));
	after = __rdtsc();
	return (int64_t)(msr.e.data - before / 2 - after / 2);
}

static int64_t abs64(int64_t v)
{
	return v < 0 ? -v : v;
}

TEST_F(guest, vmm_tsc_writes_synchronize_vcpus)
{
	long khz = xioctl(self->vm->fd, KVM_GET_TSC_KHZ, 0);
	int64_t gap = (int64_t)khz * 100;	/* 100 ms of TSC */
	int64_t created, o0, o1;
	struct vcpu *v0, *v1;
	uint64_t value = 1ULL << 40;

	ASSERT_LT(0, khz);
	v0 = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	v1 = vcpu_new(self->vm, 1, MODE_LONG64, GUEST_CODE, GUEST_STACK - 0x1000);
	created = tsc_offset(_metadata, v0);
	/* QEMU's reset: 0, one vCPU after the other. */
	ASSERT_EQ(1, set_tsc(v0, 0));
	usleep(100000);
	ASSERT_EQ(1, set_tsc(v1, 0));
	o0 = tsc_offset(_metadata, v0);
	o1 = tsc_offset(_metadata, v1);
	TH_LOG("after 0: offsets %ld and %ld, at creation %ld", (long)o0, (long)o1, (long)created);
	EXPECT_GT(gap / 10, abs64(o0 - o1));
	EXPECT_GT(gap / 10, abs64(o0 - created));
	/* A restore: the same value 100 ms apart is one new offset. */
	ASSERT_EQ(1, set_tsc(v0, value));
	usleep(100000);
	ASSERT_EQ(1, set_tsc(v1, value));
	o0 = tsc_offset(_metadata, v0);
	o1 = tsc_offset(_metadata, v1);
	TH_LOG("after %#llx: offsets %ld and %ld", (unsigned long long)value, (long)o0, (long)o1);
	EXPECT_GT(gap / 10, abs64(o0 - o1));
	EXPECT_LT(gap * 10, abs64(o0 - created));
	/* Five seconds ahead of where that got to: a TSC of its own. */
	ASSERT_EQ(1, set_tsc(v1, value + 50 * (uint64_t)gap));
	o1 = tsc_offset(_metadata, v1);
	TH_LOG("5 s ahead: offsets %ld and %ld", (long)o0, (long)o1);
	/* (less the time since vCPU 0's write, which set the old offset) */
	EXPECT_GT(10 * gap, abs64(o1 - o0 - 50 * gap));
	EXPECT_LT(20 * gap, abs64(o1 - o0));
	vcpu_free(v0);
	vcpu_free(v1);
}

#define MSR_TSC_ADJUST	0x3b
#define ADJUST_BY	(1ULL << 40)

/*
 * At R8: TSC, TSC_ADJUST; then TSC_ADJUST += ADJUST_BY; TSC, TSC_ADJUST;
 * then TSC = 0; TSC, TSC_ADJUST. Then halts.
 */
GUEST_CODE_BLOCK(adjust_guest, ".code64",
	"call 1f\n"
	"mov $" XSTR(MSR_TSC_ADJUST) ", %ecx\n"
	"rdmsr\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov $" XSTR(ADJUST_BY) ", %rdx\n"
	"add %rdx, %rax\n"
	"mov %rax, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"call 1f\n"
	"mov $0x10, %ecx\n"
	"xor %eax, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"call 1f\n"
	"hlt\n"
	/* Stores TSC and TSC_ADJUST at R8, R8 + 8; R8 += 16. */
	"1: rdtsc\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov %rax, (%r8)\n"
	"mov $" XSTR(MSR_TSC_ADJUST) ", %ecx\n"
	"rdmsr\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov %rax, 8(%r8)\n"
	"add $16, %r8\n"
	"ret\n");

/*
 * Runs adjust_guest on a new vCPU with TSC_ADJUST (@offered) in its CPUID
 * or not, after the VMM's own writes; @out gets what the guest stored.
 */
static void tsc_adjust_run(struct __test_metadata *_metadata, struct vm *vm,
			   bool offered, uint64_t out[6])
{
	struct kvm_cpuid_entry2 *leaf7 = vm_cpuid_entry(vm, 7, 0);
	uint32_t saved = leaf7 ? leaf7->ebx : 0;
	struct one_msr msr = { .m.nmsrs = 1, .e.index = MSR_TSC_ADJUST };
	struct kvm_regs regs;
	int64_t before, after;
	struct vcpu *v;

	if (!offered && leaf7)
		leaf7->ebx &= ~(1u << 1);
	vm_load(vm, GUEST_CODE, adjust_guest, adjust_guest_end);
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	if (leaf7)
		leaf7->ebx = saved;
	/* The VMM's write sets the MSR and leaves the TSC where it was. */
	before = tsc_offset(_metadata, v);
	msr.e.data = 5;
	EXPECT_EQ(1, xioctl(v->fd, KVM_SET_MSRS, (unsigned long)&msr));
	after = tsc_offset(_metadata, v);
	EXPECT_GT(1LL << 30, abs64(after - before));
	msr.e.data = 0;
	EXPECT_EQ(1, xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msr));
	EXPECT_EQ(offered ? 5 : 0, msr.e.data);
	msr.e.data = 0;
	EXPECT_EQ(1, xioctl(v->fd, KVM_SET_MSRS, (unsigned long)&msr));
	vcpu_get_regs(v, &regs);
	regs.r8 = GUEST_DATA;
	vcpu_set_regs(v, &regs);
	EXPECT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	memcpy(out, gpa_ptr(vm, GUEST_DATA), 6 * sizeof(uint64_t));
	TH_LOG("TSC %#llx adjust %#llx; %#llx %#llx; %#llx %#llx",
	       (unsigned long long)out[0], (unsigned long long)out[1],
	       (unsigned long long)out[2], (unsigned long long)out[3],
	       (unsigned long long)out[4], (unsigned long long)out[5]);
	vcpu_free(v);
}

TEST_F(guest, tsc_adjust)
{
	int64_t slack = 1LL << 34;
	uint64_t o[6];

	tsc_adjust_run(_metadata, self->vm, true, o);
	EXPECT_EQ(0, o[1]);
	/* TSC_ADJUST += ADJUST_BY moved the TSC as far. */
	EXPECT_EQ(ADJUST_BY, o[3]);
	EXPECT_GT(slack, abs64((int64_t)(o[2] - o[0] - ADJUST_BY)));
	/* TSC = 0: TSC_ADJUST moved as far as the TSC did. */
	EXPECT_GT(slack, (int64_t)o[4]);
	EXPECT_GT(slack, abs64((int64_t)(o[5] - (ADJUST_BY - o[2]))));
}

TEST_F(guest, tsc_adjust_absent_from_cpuid)
{
	int64_t slack = 1LL << 34;
	uint64_t o[6];

	if (!vm_cpuid_entry(self->vm, 7, 0))
		SKIP(return, "no CPUID leaf 7 to take the bit from");
	tsc_adjust_run(_metadata, self->vm, false, o);
	/* The guest's write of TSC_ADJUST is dropped... */
	EXPECT_EQ(0, o[3]);
	EXPECT_GT(slack, abs64((int64_t)(o[2] - o[0])));
	/* ...while its TSC write still adds up in it, as KVM. */
	EXPECT_GT(slack, (int64_t)o[4]);
	EXPECT_GT(slack, abs64((int64_t)(o[5] + o[2])));
}

TEST_HARNESS_MAIN
