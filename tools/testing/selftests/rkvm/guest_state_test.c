// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm guest-state isolation selftests: the extended register state (AVX's
 * YMM registers, XCR0) belongs to the guest while it runs and to the host
 * task otherwise, whatever the host does in between.
 *
 * ymm_isolated_from_host: host threads, one pinned to each CPU, keep all
 * 16 YMM registers full of a marker pattern (0xab) and check them, while a
 * 64-bit guest enables XSAVE (CR4.OSXSAVE, XCR0 = x87|SSE|AVX), loads its
 * own values into YMM0-15 and then, again and again, reads them back,
 * compares them, and exits to the VMM (an OUT and a HLT each round). The
 * VMM thread yields the CPU and fills its own YMM registers with another
 * pattern (0xcd) before every KVM_RUN. A hypervisor that does not switch
 * the state completely shows the guest a marker value (reported with the
 * register through a port) or a marker thread the guest's values.
 *
 * xsetbv_invalid_xcr0_gp: XSETBV with XCR0 bit 0 (x87) clear, and with AVX
 * but not SSE, raises #GP in the guest (its handler reports through a
 * port); a valid XCR0 is then taken.
 *
 * Both need XSAVE (and the first AVX) in KVM_GET_SUPPORTED_CPUID: they are
 * skipped, saying so, where the device does not offer it.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"

#define OUT KVM_EXIT_IO_OUT

/* Generous: inside the emulated test machine every exit is slow. */
#define STATE_TIMEOUT 300

#define NR_YMM		16
#define YMM_BYTES	32

/* Guest data: the values the guest loads, and where it stores them back. */
#define YMM_VALUES	0x20000		/* GUEST_DATA */
#define YMM_READBACK	0x21000

#define CR4_OSFXSR_OSXSAVE 0x40200	/* CR4 bits 9 and 18 */

/* Ports the guests report on. */
#define PORT_ROUND	0x60	/* 4 bytes: round number, then HLT */
#define PORT_MISMATCH	0x61	/* 4 bytes: offset of the first bad qword */
#define PORT_XCR0	0x62	/* 4 bytes: XGETBV(0) after the XSETBV */
#define PORT_STEP	0x70	/* 1 byte: step done */
#define PORT_VECTOR	0x71	/* 1 byte: exception vector (handler) */
#define PORT_ERRCODE	0x72	/* 4 bytes: its error code */
#define PORT_XCR0_OK	0x73	/* 4 bytes: XGETBV(0) after a valid XSETBV */

#define HOST_MARKER	0xab	/* the marker threads' pattern */
#define VMM_MARKER	0xcd	/* the VMM thread's, before each KVM_RUN */

#define XFEATURE_X87_SSE_AVX 7

FIXTURE(guest_state) {
	struct vm *vm;
};

FIXTURE_SETUP(guest_state)
{
	self->vm = vm_new(GUEST_MEM_SIZE);
}

FIXTURE_TEARDOWN(guest_state)
{
	vm_free(self->vm);
}

#define STATE_TEST(name) TEST_F_TIMEOUT(guest_state, name, STATE_TIMEOUT)

/*
 * NULL if the device offers what the guest needs (XSAVE, and with @avx AVX
 * and XCR0's AVX state in leaf 0xD), else why not.
 */
static const char *missing_xsave(struct vm *vm, bool avx)
{
	const struct kvm_cpuid_entry2 *leaf1 = vm_cpuid_entry(vm, 1, 0);
	const struct kvm_cpuid_entry2 *leafd = vm_cpuid_entry(vm, 0xd, 0);

	if (!vm->cpuid)
		return "KVM_GET_SUPPORTED_CPUID failed";
	if (!leaf1 || !(leaf1->ecx & bit_XSAVE))
		return "KVM_GET_SUPPORTED_CPUID does not offer XSAVE (leaf 1 ECX bit 26)";
	if (!leafd || (leafd->eax & 3) != 3)
		return "KVM_GET_SUPPORTED_CPUID has no leaf 0xD with x87 and SSE state";
	if (!avx)
		return NULL;
	if (!(leaf1->ecx & bit_AVX))
		return "KVM_GET_SUPPORTED_CPUID does not offer AVX (leaf 1 ECX bit 28)";
	if (!(leafd->eax & 4))
		return "KVM_GET_SUPPORTED_CPUID leaf 0xD does not offer AVX state";
	return NULL;
}

/* The host kernel lets this process use AVX (CPUID.OSXSAVE, XCR0 bits). */
static bool host_has_avx(void)
{
	unsigned int a, b, c, d;
	uint32_t lo, hi;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_AVX) || !(c & bit_OSXSAVE))
		return false;
	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (lo & 6) == 6;
}

/* Byte @j of the value the guest loads into YMM@i: distinct per register. */
static uint8_t guest_ymm_byte(int i, int j)
{
	return (uint8_t)(i * 16 + (j % 16)) ^ (j >= 16 ? 0x5a : 0);
}

#define YMM_LOAD_ALL(base, P)						\
	"vmovdqu 0x000(" base "), " P "ymm0\n"				\
	"vmovdqu 0x020(" base "), " P "ymm1\n"				\
	"vmovdqu 0x040(" base "), " P "ymm2\n"				\
	"vmovdqu 0x060(" base "), " P "ymm3\n"				\
	"vmovdqu 0x080(" base "), " P "ymm4\n"				\
	"vmovdqu 0x0a0(" base "), " P "ymm5\n"				\
	"vmovdqu 0x0c0(" base "), " P "ymm6\n"				\
	"vmovdqu 0x0e0(" base "), " P "ymm7\n"				\
	"vmovdqu 0x100(" base "), " P "ymm8\n"				\
	"vmovdqu 0x120(" base "), " P "ymm9\n"				\
	"vmovdqu 0x140(" base "), " P "ymm10\n"				\
	"vmovdqu 0x160(" base "), " P "ymm11\n"				\
	"vmovdqu 0x180(" base "), " P "ymm12\n"				\
	"vmovdqu 0x1a0(" base "), " P "ymm13\n"				\
	"vmovdqu 0x1c0(" base "), " P "ymm14\n"				\
	"vmovdqu 0x1e0(" base "), " P "ymm15\n"

#define YMM_STORE_ALL(base, P)						\
	"vmovdqu " P "ymm0, 0x000(" base ")\n"				\
	"vmovdqu " P "ymm1, 0x020(" base ")\n"				\
	"vmovdqu " P "ymm2, 0x040(" base ")\n"				\
	"vmovdqu " P "ymm3, 0x060(" base ")\n"				\
	"vmovdqu " P "ymm4, 0x080(" base ")\n"				\
	"vmovdqu " P "ymm5, 0x0a0(" base ")\n"				\
	"vmovdqu " P "ymm6, 0x0c0(" base ")\n"				\
	"vmovdqu " P "ymm7, 0x0e0(" base ")\n"				\
	"vmovdqu " P "ymm8, 0x100(" base ")\n"				\
	"vmovdqu " P "ymm9, 0x120(" base ")\n"				\
	"vmovdqu " P "ymm10, 0x140(" base ")\n"				\
	"vmovdqu " P "ymm11, 0x160(" base ")\n"				\
	"vmovdqu " P "ymm12, 0x180(" base ")\n"				\
	"vmovdqu " P "ymm13, 0x1a0(" base ")\n"				\
	"vmovdqu " P "ymm14, 0x1c0(" base ")\n"				\
	"vmovdqu " P "ymm15, 0x1e0(" base ")\n"

#define YMM_CLOBBERS "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", \
	"xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

/* --- Host threads that keep the YMM registers busy. ------------------ */

struct marker {
	pthread_t thread;
	int cpu;
	volatile int *stop;
	unsigned long rounds;
	unsigned long bad;		/* rounds that read back a wrong value */
	int bad_reg;			/* the first wrong register, its value */
	uint8_t bad_val[YMM_BYTES];
};

static void *marker_thread(void *arg)
{
	struct marker *m = arg;
	uint8_t pattern[NR_YMM * YMM_BYTES], back[NR_YMM * YMM_BYTES];
	cpu_set_t set;
	int r;

	CPU_ZERO(&set);
	CPU_SET(m->cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	memset(pattern, HOST_MARKER, sizeof(pattern));
	while (!*m->stop) {
		/* Load, hold them a while (preemption may come), read back. */
		asm volatile(YMM_LOAD_ALL("%[p]", "%%")
			     "mov $2000, %%ecx\n"
			     "1: pause\n"
			     "dec %%ecx\n"
			     "jnz 1b\n"
			     YMM_STORE_ALL("%[b]", "%%")
			     "vzeroupper\n"
			     : : [p] "r"(pattern), [b] "r"(back)
			     : "ecx", "memory", YMM_CLOBBERS);
		m->rounds++;
		if (!memcmp(pattern, back, sizeof(back)))
			continue;
		for (r = 0; r < NR_YMM; r++)
			if (memcmp(pattern, back + r * YMM_BYTES, YMM_BYTES))
				break;
		if (!m->bad++) {
			m->bad_reg = r;
			memcpy(m->bad_val, back + r * YMM_BYTES, YMM_BYTES);
		}
	}
	return NULL;
}

/* Fills the calling thread's YMM0-15 with @byte (what KVM_RUN must keep). */
static void fill_own_ymm(uint8_t byte)
{
	uint8_t pattern[NR_YMM * YMM_BYTES];

	memset(pattern, byte, sizeof(pattern));
	asm volatile(YMM_LOAD_ALL("%[p]", "%%") : : [p] "r"(pattern) : "memory", YMM_CLOBBERS);
}

static void hex32(char *buf, const uint8_t *v)
{
	int j;

	/* Most significant byte first, as a 256-bit number. */
	for (j = 0; j < YMM_BYTES; j++)
		sprintf(buf + 2 * j, "%02x", v[YMM_BYTES - 1 - j]);
}

/* --- The guest: its own YMM values must stay its own. ---------------- */

GUEST_CODE_BLOCK(ymm_guest, ".code64",
	"mov %cr4, %rax\n"
	"or $" XSTR(CR4_OSFXSR_OSXSAVE) ", %rax\n"
	"mov %rax, %cr4\n"
	"xor %ecx, %ecx\n"
	"xor %edx, %edx\n"
	"mov $" XSTR(XFEATURE_X87_SSE_AVX) ", %eax\n"
	"xsetbv\n"
	"xor %ecx, %ecx\n"
	"xgetbv\n"
	"out %eax, $" XSTR(PORT_XCR0) "\n"
	"mov $" XSTR(YMM_VALUES) ", %ebx\n"
	YMM_LOAD_ALL("%rbx", "%")
	"xor %r12d, %r12d\n"		/* round */
	"cld\n"
	"1:\n"
	"mov $" XSTR(YMM_READBACK) ", %edi\n"
	YMM_STORE_ALL("%rdi", "%")
	"mov $" XSTR(YMM_VALUES) ", %esi\n"
	"mov $(" XSTR(NR_YMM) " * " XSTR(YMM_BYTES) " / 8), %ecx\n"
	"repe cmpsq\n"
	"jne 2f\n"
	"mov %r12d, %eax\n"
	"out %eax, $" XSTR(PORT_ROUND) "\n"
	"hlt\n"
	"inc %r12d\n"
	"jmp 1b\n"
	/* rdi is past the first differing qword */
	"2: lea -(" XSTR(YMM_READBACK) " + 8)(%rdi), %rax\n"
	"out %eax, $" XSTR(PORT_MISMATCH) "\n"
	"hlt\n");

STATE_TEST(ymm_isolated_from_host)
{
	int nr_cpus = sysconf(_SC_NPROCESSORS_ONLN), rounds = stress_iters(400);
	const char *missing = missing_xsave(self->vm, true);
	struct marker markers[64];
	volatile int stop = 0;
	struct vcpu *v;
	uint8_t *values, *back;
	int i, j, round, started = 0, failed = 0;

	if (missing)
		SKIP(return, "%s", missing);
	if (!host_has_avx())
		SKIP(return, "the host does not let this process use AVX");
	if (nr_cpus > 64)
		nr_cpus = 64;

	values = gpa_ptr(self->vm, YMM_VALUES);
	back = gpa_ptr(self->vm, YMM_READBACK);
	for (i = 0; i < NR_YMM; i++)
		for (j = 0; j < YMM_BYTES; j++)
			values[i * YMM_BYTES + j] = guest_ymm_byte(i, j);
	vm_load(self->vm, GUEST_CODE, ymm_guest, ymm_guest_end);
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);

	memset(markers, 0, sizeof(markers));
	for (i = 0; i < nr_cpus; i++) {
		markers[i].cpu = i;
		markers[i].stop = &stop;
		if (pthread_create(&markers[i].thread, NULL, marker_thread, &markers[i]))
			break;
		started++;
	}
	ASSERT_EQ(nr_cpus, started);

	fill_own_ymm(VMM_MARKER);
	if (run_expect_io(v, OUT, 4, PORT_XCR0, XFEATURE_X87_SSE_AVX))
		failed = 1;
	for (round = 0; !failed && round < rounds; round++) {
		/* Let a marker thread run on this CPU before the next entry. */
		sched_yield();
		fill_own_ymm(VMM_MARKER);
		if (run_until_exit(v) == KVM_EXIT_IO && v->run->io.port == PORT_MISMATCH &&
		    !check_io(v, OUT, 4, PORT_MISMATCH, 1)) {
			uint32_t off = io_value(v);
			char got[2 * YMM_BYTES + 1], want[2 * YMM_BYTES + 1];
			int reg = off / YMM_BYTES;

			if (reg >= NR_YMM)
				reg = NR_YMM - 1;
			hex32(got, back + reg * YMM_BYTES);
			hex32(want, values + reg * YMM_BYTES);
			TH_LOG("round %d: the guest read ymm%d = %s, want %s%s", round, reg,
			       got, want, memchr(back + reg * YMM_BYTES, HOST_MARKER, YMM_BYTES) ?
			       " (holds the host marker 0xab)" : "");
			failed = 1;
			break;
		}
		if (check_io(v, OUT, 4, PORT_ROUND, 1) || io_value(v) != (uint64_t)round) {
			TH_LOG("round %d: want out %#x = %d", round, PORT_ROUND, round);
			failed = 1;
			break;
		}
		sched_yield();
		fill_own_ymm(VMM_MARKER);
		if (run_expect_exit(v, KVM_EXIT_HLT))
			failed = 1;
	}

	stop = 1;
	for (i = 0; i < started; i++) {
		struct marker *m = &markers[i];

		pthread_join(m->thread, NULL);
		if (m->bad) {
			char got[2 * YMM_BYTES + 1];

			hex32(got, m->bad_val);
			TH_LOG("marker thread on CPU %d: %lu of %lu rounds read back a wrong "
			       "value, first ymm%d = %s", m->cpu, m->bad, m->rounds,
			       m->bad_reg, got);
			failed = 1;
		}
	}
	for (i = 0; i < started; i++)
		TH_LOG("marker thread on CPU %d: %lu rounds", markers[i].cpu, markers[i].rounds);
	EXPECT_EQ(0, failed);
	vcpu_free(v);
}

/* --- XSETBV with an invalid XCR0: #GP in the guest. ------------------ */

GUEST_LABEL(xsetbv_gp_handler);
GUEST_CODE_BLOCK(xsetbv_guest, ".code64",
	"mov %cr4, %rax\n"
	"or $" XSTR(CR4_OSFXSR_OSXSAVE) ", %rax\n"
	"mov %rax, %cr4\n"
	"xor %ecx, %ecx\n"
	"xor %edx, %edx\n"
	"xor %eax, %eax\n"		/* x87 clear: #GP */
	"xsetbv\n"
	"mov $1, %al\n"
	"out %al, $" XSTR(PORT_STEP) "\n"
	"xor %ecx, %ecx\n"
	"xor %edx, %edx\n"
	"mov $5, %eax\n"		/* x87 | AVX without SSE: #GP */
	"xsetbv\n"
	"mov $2, %al\n"
	"out %al, $" XSTR(PORT_STEP) "\n"
	"xor %ecx, %ecx\n"
	"xor %edx, %edx\n"
	"mov $3, %eax\n"		/* x87 | SSE: valid */
	"xsetbv\n"
	"xor %ecx, %ecx\n"
	"xgetbv\n"
	"out %eax, $" XSTR(PORT_XCR0_OK) "\n"
	"hlt\n"
	"xsetbv_gp_handler:\n"
	"push %rax\n"
	"mov $13, %al\n"
	"out %al, $" XSTR(PORT_VECTOR) "\n"
	"mov 8(%rsp), %eax\n"		/* error code */
	"out %eax, $" XSTR(PORT_ERRCODE) "\n"
	"addq $3, 16(%rsp)\n"		/* past the 3-byte xsetbv */
	"pop %rax\n"
	"add $8, %rsp\n"
	"iretq\n");

STATE_TEST(xsetbv_invalid_xcr0_gp)
{
	const char *missing = missing_xsave(self->vm, false);
	struct vcpu *v;
	int step;

	if (missing)
		SKIP(return, "%s", missing);
	vm_load(self->vm, GUEST_CODE, xsetbv_guest, xsetbv_guest_end);
	vm_set_idt_gate64(self->vm, 13,
			  guest_addr(xsetbv_guest, xsetbv_gp_handler, GUEST_CODE));
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	for (step = 1; step <= 2; step++) {
		ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, 13))
			TH_LOG("invalid XCR0 %s: no #GP", step == 1 ? "0" : "x87|AVX");
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, PORT_ERRCODE, 0));
		ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_STEP, step));
	}
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, PORT_XCR0_OK, 3));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_HARNESS_MAIN
