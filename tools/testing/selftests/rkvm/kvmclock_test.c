// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of kvmclock, the paravirtual clock of KVM's x86 ABI:
 *
 *  - KVM_GET_CLOCK / KVM_SET_CLOCK on the VM fd: KVM_CAP_ADJUST_CLOCK
 *    names KVM_CLOCK_TSC_STABLE, _REALTIME and _HOST_TSC; a value set
 *    comes back (plus the little time since), forwards and backwards; the
 *    clock never goes backwards; unknown flags are EINVAL; the flags
 *    reported are true (realtime near CLOCK_REALTIME, host_tsc within the
 *    host TSC read around the call);
 *  - KVM_GET_SUPPORTED_CPUID and the guest's CPUID have KVM's leaves:
 *    0x40000000 "KVMKVMKVM\0\0\0" and 0x40000001 with CLOCKSOURCE2;
 *  - a long-mode guest enables its time structure (WRMSR
 *    MSR_KVM_SYSTEM_TIME_NEW), reads it under the version protocol,
 *    computes nanoseconds from RDTSC with its mul/shift and reports them
 *    by port I/O: the version is even, the time increases from sample to
 *    sample and lies between KVM_GET_CLOCK taken before and after (with a
 *    margin: emulated time is noisy), the structure's stable bit agrees
 *    with KVM_CLOCK_TSC_STABLE, its scale turns the TSC rate into a
 *    second; the MSRs read back with KVM_GET_MSRS;
 *  - KVM_SET_CLOCK moves the guest's kvmclock;
 *  - the wall-clock MSR writes the real time at which the kvmclock was 0;
 *  - two vCPUs sampling in turn see one monotonic time;
 *  - the old MSR on vCPU 0 works too, and (as KVM) makes the clock
 *    unstable;
 *  - a structure never enabled is never written.
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <x86intrin.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"
#include "guest_fixture.h"

#define OUT			KVM_EXIT_IO_OUT
#define PORT_SAMPLE		0x80
#define PORT_WALL		0x81

#define MSR_KVM_WALL_CLOCK	0x11
#define MSR_KVM_SYSTEM_TIME	0x12
#define MSR_KVM_WALL_CLOCK_NEW	0x4b564d00
#define MSR_KVM_SYSTEM_TIME_NEW	0x4b564d01
#define KVM_FEATURE_CLOCKSOURCE2	(1u << 3)
#define PVCLOCK_TSC_STABLE_BIT	1

/* Guest memory: the vCPUs' time structures, the wall clock, samples. */
#define PV0		0x20000
#define PV1		0x20040
#define WALL		0x20080
#define SAMPLES0	0x21000
#define SAMPLES1	0x21100

#define SEC		1000000000ull
/* How far the guest's time may stray from KVM_GET_CLOCK around it. */
#define MARGIN		(50 * 1000000ull)

/*
 * RBP: the system-time MSR; R8: the value written to it; R9: where the
 * samples go; R10: the wall-clock GPA (0: no wall clock); R11: the time
 * structure's GPA. Writes the wall clock (port PORT_WALL), enables the
 * structure, stores CPUID 0x40000000 and 0x40000001, then forever: reads
 * the structure with the version protocol, computes the kvmclock from
 * RDTSC and reports a sample (port PORT_SAMPLE).
 */
GUEST_CODE_BLOCK(clock_guest, ".code64",
	"test %r10, %r10\n"
	"jz 1f\n"
	"mov $" XSTR(MSR_KVM_WALL_CLOCK_NEW) ", %ecx\n"
	"mov %r10, %rax\n"
	"mov %r10, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"out %al, $" XSTR(PORT_WALL) "\n"
	"1: mov %ebp, %ecx\n"
	"mov %r8, %rax\n"
	"mov %r8, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"mov $0x40000000, %eax\n"
	"cpuid\n"
	"mov %eax, 64(%r9)\n"
	"mov %ebx, 68(%r9)\n"
	"mov %ecx, 72(%r9)\n"
	"mov %edx, 76(%r9)\n"
	"mov $0x40000001, %eax\n"
	"cpuid\n"
	"mov %eax, 80(%r9)\n"
	"2: mov (%r11), %esi\n"		/* version */
	"test $1, %esi\n"
	"jnz 2b\n"
	"lfence\n"
	"rdtsc\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov %rax, %r12\n"		/* TSC */
	"mov 8(%r11), %r13\n"		/* tsc_timestamp */
	"mov 16(%r11), %r14\n"		/* system_time */
	"mov 24(%r11), %edi\n"		/* tsc_to_system_mul */
	"movsbl 28(%r11), %ebx\n"	/* tsc_shift */
	"movzbl 29(%r11), %r15d\n"	/* flags */
	"lfence\n"
	"cmp (%r11), %esi\n"
	"jne 2b\n"
	"mov %r12, %rax\n"
	"sub %r13, %rax\n"
	"mov %ebx, %ecx\n"
	"test %ecx, %ecx\n"
	"js 3f\n"
	"shl %cl, %rax\n"
	"jmp 4f\n"
	"3: neg %ecx\n"
	"shr %cl, %rax\n"
	"4: mov %edi, %edx\n"
	"mul %rdx\n"
	"shrd $32, %rdx, %rax\n"
	"add %r14, %rax\n"
	"mov %rax, 0(%r9)\n"
	"mov %rsi, 8(%r9)\n"
	"mov %r15, 16(%r9)\n"
	"mov %r12, 24(%r9)\n"
	"mov %r13, 32(%r9)\n"
	"mov %r14, 40(%r9)\n"
	"mov %rdi, 48(%r9)\n"
	"movslq %ebx, %rbx\n"
	"mov %rbx, 56(%r9)\n"
	"out %al, $" XSTR(PORT_SAMPLE) "\n"
	"jmp 2b\n");

/* What the guest stores at R9. */
struct sample {
	uint64_t ns, version, flags, tsc, tsc_timestamp, system_time, mul;
	int64_t shift;
	uint32_t sig[4];
	uint32_t features;
};

struct pvclock_time {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags, pad[2];
} __attribute__((packed));

struct pvclock_wall {
	uint32_t version, sec, nsec;
} __attribute__((packed));

/* The kvmclock of a structure at guest TSC @tsc, as a guest computes it. */
static uint64_t pvclock_ns(uint64_t tsc, uint64_t tsc_timestamp, uint64_t system_time,
			   uint32_t mul, int shift)
{
	uint64_t delta = tsc - tsc_timestamp;

	/* As the guest's SHL/SHR, which use the count's low 6 bits. */
	delta = shift < 0 ? delta >> (-shift & 63) : delta << (shift & 63);
	return system_time + (uint64_t)(((unsigned __int128)delta * mul) >> 32);
}

static struct kvm_clock_data get_clock(struct vm *vm)
{
	struct kvm_clock_data d;

	memset(&d, 0, sizeof(d));
	if (xioctl(vm->fd, KVM_GET_CLOCK, (unsigned long)&d))
		guest_die("KVM_GET_CLOCK: %s", strerror(errno));
	return d;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * SEC + ts.tv_nsec;
}

/*
 * A vCPU running clock_guest with @msr = @val, samples at @samples, its
 * structure at @pv, the wall clock at @wall (0: none).
 */
static struct vcpu *clock_vcpu(struct vm *vm, int id, uint32_t msr, uint64_t val,
			       uint64_t samples, uint64_t pv, uint64_t wall)
{
	struct kvm_regs regs;
	struct vcpu *v;

	vm_load(vm, GUEST_CODE, clock_guest, clock_guest_end);
	v = vcpu_new(vm, id, MODE_LONG64, GUEST_CODE, GUEST_STACK - id * 0x1000);
	vcpu_get_regs(v, &regs);
	regs.rbp = msr;
	regs.r8 = val;
	regs.r9 = samples;
	regs.r10 = wall;
	regs.r11 = pv;
	vcpu_set_regs(v, &regs);
	return v;
}

/*
 * Runs @v to its next sample, bracketed by KVM_GET_CLOCK; checks the
 * version and the guest's arithmetic. 0 or -1.
 */
static int take_sample(struct vm *vm, struct vcpu *v, uint64_t samples,
		       struct sample *s, struct kvm_clock_data *before,
		       struct kvm_clock_data *after)
{
	uint64_t want;

	*before = get_clock(vm);
	if (run_until_exit(v) < 0 || check_io(v, OUT, 1, PORT_SAMPLE, 1))
		return -1;
	*after = get_clock(vm);
	memcpy(s, gpa_ptr(vm, samples), sizeof(*s));
	if (s->version & 1) {
		fprintf(stderr, "odd version %lu\n", (unsigned long)s->version);
		return -1;
	}
	want = pvclock_ns(s->tsc, s->tsc_timestamp, s->system_time, s->mul, s->shift);
	if (want != s->ns) {
		fprintf(stderr, "guest computed %lu ns, the structure says %lu\n",
			(unsigned long)s->ns, (unsigned long)want);
		return -1;
	}
	return 0;
}

/* @s lies between the clocks read around it (with MARGIN). */
static int sample_within(const struct sample *s, const struct kvm_clock_data *before,
			 const struct kvm_clock_data *after)
{
	if (s->ns + MARGIN < before->clock || s->ns > after->clock + MARGIN) {
		fprintf(stderr, "guest kvmclock %lu outside [%llu, %llu]\n",
			(unsigned long)s->ns, before->clock, after->clock);
		return -1;
	}
	return 0;
}

TEST_F(guest, get_set_clock)
{
	const uint32_t all = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;
	struct kvm_clock_data d, c0;
	uint64_t t0, t1, r0, r1, last, targets[2];
	uint32_t bad[] = { 1, 1 << 4, 1u << 31 };
	unsigned int i;

	EXPECT_EQ(all, xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK));
	EXPECT_EQ(all, xioctl(self->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK));
	r0 = realtime_ns();
	t0 = __rdtsc();
	c0 = get_clock(self->vm);
	t1 = __rdtsc();
	r1 = realtime_ns();
	TH_LOG("clock %llu ns, flags %#x", c0.clock, c0.flags);
	EXPECT_EQ(0, c0.flags & ~all);
	if (c0.flags & KVM_CLOCK_REALTIME) {
		EXPECT_LE(r0, c0.realtime + 5 * SEC);
		EXPECT_GE(r1 + 5 * SEC, c0.realtime);
	}
	if (c0.flags & KVM_CLOCK_HOST_TSC) {
		EXPECT_LE(t0, c0.host_tsc);
		EXPECT_GE(t1, c0.host_tsc);
	}
	/* A new VM's clock counts from about its creation. */
	EXPECT_GT(60 * SEC, c0.clock);
	last = c0.clock;
	for (i = 0; i < 100; i++) {
		d = get_clock(self->vm);
		ASSERT_LE(last, d.clock);
		last = d.clock;
	}
	targets[0] = c0.clock + 3600 * SEC;
	targets[1] = SEC;
	for (i = 0; i < 2; i++) {
		memset(&d, 0, sizeof(d));
		d.clock = targets[i];
		ASSERT_EQ(0, xioctl(self->vm->fd, KVM_SET_CLOCK, (unsigned long)&d));
		d = get_clock(self->vm);
		EXPECT_LE(targets[i], d.clock);
		EXPECT_GT(targets[i] + 5 * SEC, d.clock);
	}
	/* What KVM_GET_CLOCK gave goes back in, flags and all. */
	c0 = get_clock(self->vm);
	ASSERT_EQ(0, xioctl(self->vm->fd, KVM_SET_CLOCK, (unsigned long)&c0));
	d = get_clock(self->vm);
	EXPECT_LE(c0.clock, d.clock);
	EXPECT_GT(c0.clock + 5 * SEC, d.clock);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&d, 0, sizeof(d));
		d.clock = 100 * 3600 * SEC;
		d.flags = bad[i];
		EXPECT_EQ(-EINVAL, xioctl(self->vm->fd, KVM_SET_CLOCK, (unsigned long)&d));
	}
	d = get_clock(self->vm);
	EXPECT_LE(c0.clock, d.clock);
	EXPECT_GT(c0.clock + 5 * SEC, d.clock);
}

TEST_F(guest, supported_cpuid_has_kvm_leaves)
{
	struct kvm_cpuid2 *c = self->vm->cpuid;
	bool sig = false, features = false;
	uint32_t i;

	ASSERT_NE(NULL, c);
	for (i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 0x40000000) {
			sig = true;
			EXPECT_LE(0x40000001, e->eax);
			EXPECT_EQ(0, memcmp(&e->ebx, "KVMK", 4));
			EXPECT_EQ(0, memcmp(&e->ecx, "VMKV", 4));
			EXPECT_EQ(0, memcmp(&e->edx, "M\0\0\0", 4));
		}
		if (e->function == 0x40000001) {
			features = true;
			EXPECT_NE(0, e->eax & KVM_FEATURE_CLOCKSOURCE2);
			TH_LOG("KVM features %#x", e->eax);
		}
		if (e->function == 1)
			EXPECT_NE(0, e->ecx & (1u << 31)) TH_LOG("no hypervisor bit");
	}
	EXPECT_TRUE(sig);
	EXPECT_TRUE(features);
}

TEST_F(guest, guest_reads_kvmclock)
{
	struct kvm_clock_data before, after;
	struct sample s, prev = { 0 };
	struct {
		struct kvm_msrs m;
		struct kvm_msr_entry e[2];
	} msrs = { .m.nmsrs = 2 };
	long khz = xioctl(self->vm->fd, KVM_GET_TSC_KHZ, 0);
	uint64_t second;
	struct vcpu *v;
	int i;

	v = clock_vcpu(self->vm, 0, MSR_KVM_SYSTEM_TIME_NEW, PV0 | 1, SAMPLES0, PV0, 0);
	for (i = 0; i < 10; i++) {
		ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
		EXPECT_EQ(0, sample_within(&s, &before, &after));
		if (i)
			EXPECT_LT(prev.ns, s.ns);
		EXPECT_LE(2, s.version);
		/* The structure is stable exactly when the VM's clock is. */
		EXPECT_EQ(!!(after.flags & KVM_CLOCK_TSC_STABLE),
			  !!(s.flags & PVCLOCK_TSC_STABLE_BIT));
		prev = s;
	}
	TH_LOG("kvmclock %lu ns, version %lu, flags %#lx, mul %#lx shift %ld",
	       (unsigned long)s.ns, (unsigned long)s.version, (unsigned long)s.flags,
	       (unsigned long)s.mul, (long)s.shift);
	/* CPUID as the guest saw it. */
	EXPECT_EQ(0, memcmp(&s.sig[1], "KVMKVMKVM\0\0\0", 12));
	EXPECT_LE(0x40000001, s.sig[0]);
	EXPECT_NE(0, s.features & KVM_FEATURE_CLOCKSOURCE2);
	/* The scale makes a second of the TSC's ticks a second. */
	ASSERT_LT(0, khz);
	second = pvclock_ns(khz * 1000ull, 0, 0, s.mul, s.shift);
	EXPECT_LT(SEC - SEC / 1000, second);
	EXPECT_GT(SEC + SEC / 1000, second);
	/* The MSRs read back as written. */
	msrs.e[0].index = MSR_KVM_SYSTEM_TIME_NEW;
	msrs.e[1].index = MSR_KVM_WALL_CLOCK_NEW;
	ASSERT_EQ(2, xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msrs));
	EXPECT_EQ(PV0 | 1, msrs.e[0].data);
	EXPECT_EQ(0, msrs.e[1].data);
	vcpu_free(v);
}

TEST_F(guest, set_clock_moves_the_guest)
{
	struct kvm_clock_data before, after, d;
	struct sample s;
	struct vcpu *v;
	uint64_t target;

	v = clock_vcpu(self->vm, 0, MSR_KVM_SYSTEM_TIME_NEW, PV0 | 1, SAMPLES0, PV0, 0);
	ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
	target = s.ns + 1000 * SEC;
	memset(&d, 0, sizeof(d));
	d.clock = target;
	ASSERT_EQ(0, xioctl(self->vm->fd, KVM_SET_CLOCK, (unsigned long)&d));
	ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
	EXPECT_LE(target, s.ns + MARGIN);
	EXPECT_GT(target + 5 * SEC, s.ns);
	EXPECT_EQ(0, sample_within(&s, &before, &after));
	/* And back. */
	d.clock = SEC;
	ASSERT_EQ(0, xioctl(self->vm->fd, KVM_SET_CLOCK, (unsigned long)&d));
	ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
	EXPECT_GT(2 * SEC + 5 * SEC, s.ns);
	EXPECT_EQ(0, sample_within(&s, &before, &after));
	vcpu_free(v);
}

TEST_F(guest, wall_clock)
{
	struct pvclock_wall *w = gpa_ptr(self->vm, WALL);
	struct {
		struct kvm_msrs m;
		struct kvm_msr_entry e[1];
	} msrs = { .m.nmsrs = 1 };
	struct kvm_clock_data c;
	uint64_t epoch, want, real;
	struct vcpu *v;

	w->version = 7;	/* junk left odd: stepped past */
	v = clock_vcpu(self->vm, 0, MSR_KVM_SYSTEM_TIME_NEW, PV0 | 1, SAMPLES0, PV0, WALL);
	ASSERT_LE(0, run_until_exit(v));
	ASSERT_EQ(0, check_io(v, OUT, 1, PORT_WALL, 1));
	real = realtime_ns();
	c = get_clock(self->vm);
	epoch = w->sec * SEC + w->nsec;
	want = real - c.clock;
	TH_LOG("wall clock version %u: %u.%09u s; CLOCK_REALTIME - kvmclock %llu.%09llu s",
	       w->version, w->sec, w->nsec, want / SEC, want % SEC);
	EXPECT_EQ(0, w->version & 1);
	EXPECT_LT(7, w->version);
	EXPECT_GT(SEC, w->nsec);
	EXPECT_GT(SEC, epoch > want ? epoch - want : want - epoch);
	msrs.e[0].index = MSR_KVM_WALL_CLOCK_NEW;
	ASSERT_EQ(1, xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msrs));
	EXPECT_EQ(WALL, msrs.e[0].data);
	vcpu_free(v);
}

TEST_F(guest, two_vcpus_one_time)
{
	struct kvm_clock_data before, after;
	struct vcpu *v[2];
	struct sample s;
	uint64_t last = 0, samples[2] = { SAMPLES0, SAMPLES1 };
	bool stable = true;
	int i;

	v[0] = clock_vcpu(self->vm, 0, MSR_KVM_SYSTEM_TIME_NEW, PV0 | 1, SAMPLES0, PV0, 0);
	v[1] = clock_vcpu(self->vm, 1, MSR_KVM_SYSTEM_TIME_NEW, PV1 | 1, SAMPLES1, PV1, 0);
	for (i = 0; i < 20; i++) {
		ASSERT_EQ(0, take_sample(self->vm, v[i & 1], samples[i & 1], &s, &before, &after));
		EXPECT_EQ(0, sample_within(&s, &before, &after));
		stable &= !!(s.flags & PVCLOCK_TSC_STABLE_BIT);
		/*
		 * Each sample follows the last one (taken on the other vCPU):
		 * exactly when both structures are stable, within the margin
		 * otherwise.
		 */
		EXPECT_LT(last, s.ns + (stable ? 0 : MARGIN))
			TH_LOG("sample %d on vCPU %d", i, i & 1);
		last = s.ns;
	}
	TH_LOG("%s", stable ? "stable" : "not stable");
	vcpu_free(v[0]);
	vcpu_free(v[1]);
}

TEST_F(guest, old_msr_on_vcpu0)
{
	struct kvm_clock_data before, after;
	struct sample s;
	struct vcpu *v;
	int i;

	v = clock_vcpu(self->vm, 0, MSR_KVM_SYSTEM_TIME, PV0 | 1, SAMPLES0, PV0, 0);
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
		EXPECT_EQ(0, sample_within(&s, &before, &after));
		/* KVM never calls the old ABI's clock stable. */
		EXPECT_EQ(0, s.flags & PVCLOCK_TSC_STABLE_BIT);
		EXPECT_EQ(0, after.flags & KVM_CLOCK_TSC_STABLE);
	}
	vcpu_free(v);
}

TEST_F(guest, disabled_structure_is_not_written)
{
	struct kvm_clock_data before, after, d;
	uint8_t *pv = gpa_ptr(self->vm, PV0);
	struct sample s;
	struct vcpu *v;
	int i;

	memset(pv, 0x5a, sizeof(struct pvclock_time));
	/* Bit 0 clear: the address is taken, the structure is off. */
	v = clock_vcpu(self->vm, 0, MSR_KVM_SYSTEM_TIME_NEW, PV0, SAMPLES0, PV0, 0);
	ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
	memset(&d, 0, sizeof(d));
	d.clock = 3600 * SEC;
	ASSERT_EQ(0, xioctl(self->vm->fd, KVM_SET_CLOCK, (unsigned long)&d));
	ASSERT_EQ(0, take_sample(self->vm, v, SAMPLES0, &s, &before, &after));
	for (i = 0; i < (int)sizeof(struct pvclock_time); i++)
		ASSERT_EQ(0x5a, pv[i]) TH_LOG("byte %d written", i);
	vcpu_free(v);
}

TEST_HARNESS_MAIN
