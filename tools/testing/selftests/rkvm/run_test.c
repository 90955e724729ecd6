// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm KVM_RUN selftests: real guest code in real mode, 32-bit protected
 * mode and 64-bit long mode, and the exits it causes as KVM reports them:
 * port I/O (1/2/4 bytes, in and out, string I/O with rep), MMIO (mov,
 * movzx/movsx, read-modify-write), read-only slots, CPUID as set by
 * KVM_SET_CPUID2, MSRs (index list, host and guest access, #GP for unknown
 * MSRs), triple fault, signals and immediate_exit, a vCPU thread that
 * moves between CPUs while in KVM_RUN, and a guest state the CPU refuses
 * to enter.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"
#include "guest_fixture.h"

#define OUT KVM_EXIT_IO_OUT
#define IN KVM_EXIT_IO_IN

/* Generous: inside the emulated test machine every exit is slow. */
#define RUN_TIMEOUT 300

#define GUEST_TEST(name) TEST_F_TIMEOUT(guest, name, RUN_TIMEOUT)

/* Loads block @name at GUEST_CODE and makes vCPU 0 start there. */
static struct vcpu *load_guest(struct vm *vm, enum guest_mode mode,
			       const uint8_t *start, const uint8_t *end)
{
	vm_load(vm, GUEST_CODE, start, end);
	return vcpu_new(vm, 0, mode, GUEST_CODE, GUEST_STACK);
}
#define LOAD(vm, mode, name) load_guest(vm, mode, name, name##_end)

/* --- Each mode: out to a port, then hlt. ------------------------------ */

GUEST_CODE_BLOCK(real_out_hlt, ".code16",
	"mov $0x1234, %ax\n"
	"mov %ax, %ds\n"		/* a segment load works in real mode */
	"mov %ds, %bx\n"
	"mov %bl, %al\n"
	"out %al, $0x10\n"
	"hlt\n");

GUEST_CODE_BLOCK(prot32_out_hlt, ".code32",
	"mov $0xcafe0032, %eax\n"
	"out %eax, $0x11\n"
	"hlt\n");

GUEST_CODE_BLOCK(long64_out_hlt, ".code64",
	"mov $0x123456789a, %rax\n"
	"shr $8, %rax\n"		/* 64-bit arithmetic: 0x12345678 */
	"out %eax, $0x12\n"
	"hlt\n");

static void mode_out_hlt(struct __test_metadata *_metadata, struct vm *vm,
			 enum guest_mode mode, const uint8_t *start,
			 const uint8_t *end, uint8_t size, uint16_t port,
			 uint64_t val)
{
	struct vcpu *v = load_guest(vm, mode, start, end);
	struct kvm_regs regs;
	uint64_t hlt_rip = (end - start) - 1;	/* hlt is the last byte */

	ASSERT_EQ(0, run_expect_io(v, OUT, size, port, val));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_regs(v, &regs);
	/* RIP is just past the hlt; in real mode it is the CS offset. */
	EXPECT_EQ((mode == MODE_REAL ? 0 : GUEST_CODE) + hlt_rip + 1, regs.rip);
	vcpu_free(v);
}

GUEST_TEST(real_mode_out_hlt)
{
	mode_out_hlt(_metadata, self->vm, MODE_REAL, real_out_hlt,
		     real_out_hlt_end, 1, 0x10, 0x34);
}

GUEST_TEST(protected_mode_out_hlt)
{
	mode_out_hlt(_metadata, self->vm, MODE_PROT32, prot32_out_hlt,
		     prot32_out_hlt_end, 4, 0x11, 0xcafe0032);
}

GUEST_TEST(long_mode_out_hlt)
{
	mode_out_hlt(_metadata, self->vm, MODE_LONG64, long64_out_hlt,
		     long64_out_hlt_end, 4, 0x12, 0x12345678);
}

/* --- Port I/O: sizes and directions. -------------------------------- */

GUEST_CODE_BLOCK(pio_sizes, ".code64",
	"mov $0xab, %al\n"
	"out %al, $0x20\n"
	"mov $0xabcd, %ax\n"
	"out %ax, $0x21\n"
	"mov $0xabcdef01, %eax\n"
	"out %eax, $0x22\n"
	"mov $0x1234, %dx\n"		/* port in DX, above 0xff */
	"mov $0x5a, %al\n"
	"out %al, (%dx)\n"
	"mov $0x1236, %dx\n"
	"mov $0x5a5b, %ax\n"
	"out %ax, (%dx)\n"
	"mov $0xfffc, %dx\n"
	"mov $0x5a5b5c5d, %eax\n"
	"out %eax, (%dx)\n"
	/* in: the upper bytes of RAX are kept for 8/16-bit ins */
	"mov $0x1111111111111111, %rax\n"
	"in $0x30, %al\n"
	"out %eax, $0x40\n"
	"in $0x31, %ax\n"
	"out %eax, $0x41\n"
	"in $0x32, %eax\n"
	"out %eax, $0x42\n"
	"mov $0x4321, %dx\n"
	"in (%dx), %ax\n"
	"out %eax, $0x43\n"
	"mov $0xfff0, %dx\n"
	"in (%dx), %eax\n"
	"mov %rax, %r8\n"		/* a 32-bit in zero-extends into RAX */
	"hlt\n");

GUEST_TEST(pio_out_in_sizes)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, pio_sizes);
	struct kvm_regs regs;

	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x20, 0xab));
	ASSERT_EQ(0, run_expect_io(v, OUT, 2, 0x21, 0xabcd));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x22, 0xabcdef01));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x1234, 0x5a));
	ASSERT_EQ(0, run_expect_io(v, OUT, 2, 0x1236, 0x5a5b));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0xfffc, 0x5a5b5c5d));
	ASSERT_EQ(0, run_expect_io(v, IN, 1, 0x30, 0xc1));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x40, 0x111111c1));
	ASSERT_EQ(0, run_expect_io(v, IN, 2, 0x31, 0xd2c2));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x41, 0x1111d2c2));
	ASSERT_EQ(0, run_expect_io(v, IN, 4, 0x32, 0xf4e3d2c3));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x42, 0xf4e3d2c3));
	ASSERT_EQ(0, run_expect_io(v, IN, 2, 0x4321, 0x8765));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x43, 0xf4e38765));
	ASSERT_EQ(0, run_expect_io(v, IN, 4, 0xfff0, 0x89abcdef));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x89abcdefULL, regs.r8);
	vcpu_free(v);
}

/* The same I/O in real mode, where operands default to 16 bits. */
GUEST_CODE_BLOCK(real_pio, ".code16",
	"in $0x60, %al\n"
	"out %al, $0x61\n"
	"in $0x62, %ax\n"
	"out %ax, $0x63\n"
	"in $0x64, %eax\n"
	"out %eax, $0x65\n"
	"hlt\n");

GUEST_TEST(pio_real_mode)
{
	struct vcpu *v = LOAD(self->vm, MODE_REAL, real_pio);

	ASSERT_EQ(0, run_expect_io(v, IN, 1, 0x60, 0x7f));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x61, 0x7f));
	ASSERT_EQ(0, run_expect_io(v, IN, 2, 0x62, 0x8e7f));
	ASSERT_EQ(0, run_expect_io(v, OUT, 2, 0x63, 0x8e7f));
	ASSERT_EQ(0, run_expect_io(v, IN, 4, 0x64, 0x9d8e7f6a));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x65, 0x9d8e7f6a));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

/* --- String port I/O with rep. --------------------------------------- */

GUEST_LABEL(rep_pio_bytes);
GUEST_CODE_BLOCK(rep_pio, ".code64",
	"lea rep_pio_bytes(%rip), %rsi\n"
	"mov $37, %ecx\n"
	"mov $0x50, %dx\n"
	"rep outsb\n"
	"lea rep_pio_bytes(%rip), %rsi\n"
	"mov $12, %ecx\n"
	"mov $0x51, %dx\n"
	"rep outsw\n"
	"mov $" XSTR(GUEST_DATA) ", %edi\n"
	"mov $300, %ecx\n"
	"mov $0x52, %dx\n"
	"rep insb\n"
	"mov $" XSTR(GUEST_DATA) " + 0x1000 - 6, %edi\n"	/* crosses a page */
	"mov $5, %ecx\n"
	"mov $0x53, %dx\n"
	"rep insw\n"
	"hlt\n"
	"rep_pio_bytes:\n"
	".byte 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08\n"
	".byte 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18\n"
	".byte 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28\n"
	".byte 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38\n"
	".byte 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48\n");

/*
 * Collects the data of string OUTs until @total elements arrived. KVM may
 * split a rep into several exits (count elements each, all in the PIO
 * data area), so any split is accepted; the concatenation is checked.
 */
static int collect_outs(struct vcpu *v, uint8_t size, uint16_t port,
			uint8_t *buf, unsigned int total, int *exits)
{
	unsigned int got = 0;

	*exits = 0;
	while (got < total) {
		if (run_expect_exit(v, KVM_EXIT_IO) || check_io(v, OUT, size, port, 0))
			return -1;
		if (got + v->run->io.count > total) {
			fprintf(stderr, "# %u elements, more than %u\n",
				got + v->run->io.count, total);
			return -1;
		}
		memcpy(buf + got * size, io_data(v), v->run->io.count * size);
		got += v->run->io.count;
		(*exits)++;
	}
	return 0;
}

/* Answers string INs with bytes pat(0), pat(1), ... until @total elements. */
static int feed_ins(struct vcpu *v, uint8_t size, uint16_t port,
		    unsigned int total, int *exits)
{
	unsigned int got = 0, i;

	*exits = 0;
	while (got < total) {
		if (run_expect_exit(v, KVM_EXIT_IO) || check_io(v, IN, size, port, 0))
			return -1;
		if (got + v->run->io.count > total) {
			fprintf(stderr, "# %u elements, more than %u\n",
				got + v->run->io.count, total);
			return -1;
		}
		for (i = 0; i < v->run->io.count * size; i++)
			io_data(v)[i] = (uint8_t)(got * size + i) * 7 + port;
		got += v->run->io.count;
		(*exits)++;
	}
	return 0;
}

GUEST_TEST(pio_rep_string)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, rep_pio);
	const uint8_t *src = rep_pio_bytes;
	uint8_t buf[600], *mem;
	struct kvm_regs regs;
	int exits, i;

	ASSERT_EQ(0, collect_outs(v, 1, 0x50, buf, 37, &exits));
	EXPECT_EQ(0, memcmp(buf, src, 37));
	TH_LOG("rep outsb x37: %d exits", exits);
	ASSERT_EQ(0, collect_outs(v, 2, 0x51, buf, 12, &exits));
	EXPECT_EQ(0, memcmp(buf, src, 24));
	TH_LOG("rep outsw x12: %d exits", exits);
	ASSERT_EQ(0, feed_ins(v, 1, 0x52, 300, &exits));
	TH_LOG("rep insb x300: %d exits", exits);
	ASSERT_EQ(0, feed_ins(v, 2, 0x53, 5, &exits));
	TH_LOG("rep insw x5: %d exits", exits);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));

	mem = gpa_ptr(self->vm, GUEST_DATA);
	for (i = 0; i < 300; i++)
		ASSERT_EQ((uint8_t)(i * 7 + 0x52), mem[i]) TH_LOG("byte %d", i);
	mem = gpa_ptr(self->vm, GUEST_DATA + 0x1000 - 6);
	for (i = 0; i < 10; i++)
		ASSERT_EQ((uint8_t)(i * 7 + 0x53), mem[i]) TH_LOG("byte %d", i);
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0, regs.rcx);
	EXPECT_EQ(GUEST_DATA + 0x1000 + 4, regs.rdi);
	EXPECT_EQ(guest_addr(rep_pio, rep_pio_bytes, GUEST_CODE) + 24, regs.rsi);
	vcpu_free(v);
}

/*
 * String I/O the way compilers and firmware also use it: backwards
 * (RFLAGS.DF), through a segment override (FS, whose base the guest sets
 * with WRMSR), with elements that straddle a page, and with a 0x67
 * address-size prefix in 64-bit mode (RDI is then EDI: the update
 * zero-extends).
 */
GUEST_LABEL(string_io_bytes);
GUEST_CODE_BLOCK(string_io_forms, ".code64",
	"std\n"
	"lea string_io_bytes + 7(%rip), %rsi\n"
	"mov $8, %ecx\n"
	"mov $0x54, %dx\n"
	"rep outsb\n"
	"cld\n"
	"mov $0xc0000100, %ecx\n"		/* FS_BASE */
	"mov $" XSTR(GUEST_DATA) ", %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $0x200, %esi\n"
	"mov $4, %ecx\n"
	"mov $0x55, %dx\n"
	"rep outsb %fs:(%rsi), (%dx)\n"
	"mov $" XSTR(GUEST_DATA) " + 0x1000 - 1, %esi\n"	/* straddles */
	"mov $2, %ecx\n"
	"mov $0x56, %dx\n"
	"rep outsw\n"
	"mov $0xdead00000000 + " XSTR(GUEST_DATA) " + 0x300, %rdi\n"
	"mov $0xbeef00000003, %rcx\n"		/* ECX counts: 3 */
	"mov $0x57, %dx\n"
	"addr32 rep insb\n"
	"hlt\n"
	"string_io_bytes:\n"
	".byte 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7\n");

GUEST_TEST(pio_string_df_segment_addrsize)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, string_io_forms);
	uint8_t *data = gpa_ptr(self->vm, GUEST_DATA);
	const uint8_t backwards[] = { 0xa7, 0xa6, 0xa5, 0xa4, 0xa3, 0xa2, 0xa1, 0xa0 };
	uint8_t buf[16];
	struct kvm_regs regs;
	int exits, i;

	for (i = 0; i < 0x1002; i++)
		data[i] = (uint8_t)(i ^ 0x5a);
	ASSERT_EQ(0, collect_outs(v, 1, 0x54, buf, 8, &exits));
	EXPECT_EQ(0, memcmp(buf, backwards, 8));
	ASSERT_EQ(0, collect_outs(v, 1, 0x55, buf, 4, &exits));
	EXPECT_EQ(0, memcmp(buf, data + 0x200, 4)) TH_LOG("FS-relative");
	ASSERT_EQ(0, collect_outs(v, 2, 0x56, buf, 2, &exits));
	EXPECT_EQ(0, memcmp(buf, data + 0xfff, 4)) TH_LOG("across the page");
	ASSERT_EQ(0, feed_ins(v, 1, 0x57, 3, &exits));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	for (i = 0; i < 3; i++)
		EXPECT_EQ((uint8_t)(i * 7 + 0x57), data[0x300 + i]) TH_LOG("byte %d", i);
	vcpu_get_regs(v, &regs);
	/* addr32: EDI and ECX move, zero-extended into RDI and RCX. */
	EXPECT_EQ(GUEST_DATA + 0x300 + 3, regs.rdi);
	EXPECT_EQ(0, regs.rcx);
	EXPECT_EQ(0, regs.rflags & (1 << 10)) TH_LOG("DF cleared again");
	vcpu_free(v);
}

/* --- MMIO. ----------------------------------------------------------- */

GUEST_CODE_BLOCK(mmio_ops, ".code64",
	"mov $" XSTR(GUEST_MMIO) ", %ebx\n"
	"movb $0x12, (%rbx)\n"
	"movw $0x3456, 2(%rbx)\n"
	"movl $0x789abcde, 4(%rbx)\n"
	"mov $0x1122334455667788, %rax\n"
	"mov %rax, 8(%rbx)\n"
	"mov $-1, %r8\n"
	"mov (%rbx), %r8b\n"		/* byte loads keep the upper bits */
	"mov $-1, %r9\n"
	"mov 2(%rbx), %r9w\n"
	"mov $-1, %r10\n"
	"mov 4(%rbx), %r10d\n"		/* 32-bit loads zero-extend */
	"mov 8(%rbx), %r11\n"
	"movzbl 16(%rbx), %r12d\n"
	"movsbq 17(%rbx), %r13\n"
	"movswq 18(%rbx), %r14\n"
	"movzwl 20(%rbx), %ecx\n"
	"orl $0xf0, 24(%rbx)\n"		/* read-modify-write: read, then write */
	"mov $1, %r15\n"
	"addq %r15, 32(%rbx)\n"
	"hlt\n");

GUEST_TEST(mmio_mov_movzx_movsx_rmw)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, mmio_ops);
	uint64_t m = GUEST_MMIO;
	struct kvm_regs regs;

	ASSERT_EQ(0, run_expect_mmio(v, m, 1, true, 0x12));
	ASSERT_EQ(0, run_expect_mmio(v, m + 2, 2, true, 0x3456));
	ASSERT_EQ(0, run_expect_mmio(v, m + 4, 4, true, 0x789abcde));
	ASSERT_EQ(0, run_expect_mmio(v, m + 8, 8, true, 0x1122334455667788ULL));
	ASSERT_EQ(0, run_expect_mmio(v, m, 1, false, 0xa1));
	ASSERT_EQ(0, run_expect_mmio(v, m + 2, 2, false, 0xb2a2));
	ASSERT_EQ(0, run_expect_mmio(v, m + 4, 4, false, 0xd4c4b4a4));
	ASSERT_EQ(0, run_expect_mmio(v, m + 8, 8, false, 0x8877665544332211ULL));
	ASSERT_EQ(0, run_expect_mmio(v, m + 16, 1, false, 0x80));
	ASSERT_EQ(0, run_expect_mmio(v, m + 17, 1, false, 0x80));
	ASSERT_EQ(0, run_expect_mmio(v, m + 18, 2, false, 0x8001));
	ASSERT_EQ(0, run_expect_mmio(v, m + 20, 2, false, 0xfffe));
	ASSERT_EQ(0, run_expect_mmio(v, m + 24, 4, false, 0x0000000f));
	ASSERT_EQ(0, run_expect_mmio(v, m + 24, 4, true, 0x000000ff));
	ASSERT_EQ(0, run_expect_mmio(v, m + 32, 8, false, 0x41));
	ASSERT_EQ(0, run_expect_mmio(v, m + 32, 8, true, 0x42));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));

	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0xffffffffffffffa1ULL, regs.r8);
	EXPECT_EQ(0xffffffffffffb2a2ULL, regs.r9);
	EXPECT_EQ(0xd4c4b4a4ULL, regs.r10);
	EXPECT_EQ(0x8877665544332211ULL, regs.r11);
	EXPECT_EQ(0x80ULL, regs.r12);
	EXPECT_EQ(0xffffffffffffff80ULL, regs.r13);
	EXPECT_EQ(0xffffffffffff8001ULL, regs.r14);
	EXPECT_EQ(0xfffeULL, regs.rcx);
	vcpu_free(v);
}

/* MMIO from 32-bit protected mode (no paging) and real mode. */
GUEST_CODE_BLOCK(mmio_prot32, ".code32",
	"mov $" XSTR(GUEST_MMIO) ", %ebx\n"
	"movl $0xfeedf00d, 0x40(%ebx)\n"
	"mov 0x44(%ebx), %eax\n"
	"out %eax, $0x70\n"
	"hlt\n");

GUEST_CODE_BLOCK(mmio_real, ".code16",
	"mov $0xa000, %ax\n"		/* 0xa0000: below 1 MiB, not in a slot */
	"mov %ax, %es\n"
	"movw $0xbeef, %es:0x10\n"
	"mov %es:0x12, %al\n"
	"out %al, $0x71\n"
	"hlt\n");

GUEST_TEST(mmio_protected_and_real_mode)
{
	struct vcpu *v = LOAD(self->vm, MODE_PROT32, mmio_prot32);
	struct vm *vm2;

	ASSERT_EQ(0, run_expect_mmio(v, GUEST_MMIO + 0x40, 4, true, 0xfeedf00d));
	ASSERT_EQ(0, run_expect_mmio(v, GUEST_MMIO + 0x44, 4, false, 0x0badcafe));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x70, 0x0badcafe));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);

	/* Real mode in its own VM: slot 0 must stop below 0xa0000. */
	vm2 = vm_new(0x80000 + 0x1000);
	v = LOAD(vm2, MODE_REAL, mmio_real);
	ASSERT_EQ(0, run_expect_mmio(v, 0xa0010, 2, true, 0xbeef));
	ASSERT_EQ(0, run_expect_mmio(v, 0xa0012, 1, false, 0x5c));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x71, 0x5c));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
	vm_free(vm2);
}

/* --- The guest switches modes itself. -------------------------------- */

GUEST_LABEL(ms_pm32);
GUEST_LABEL(ms_lm64);
GUEST_LABEL(ms_gdtr);
GUEST_CODE_BLOCK(mode_switch, ".code16",
	"cli\n"
	"mov $1, %al\n"
	"out %al, $0x20\n"
	"lgdtl %cs:(ms_gdtr - mode_switch)\n"
	"mov %cr0, %eax\n"
	"or $1, %eax\n"			/* PE */
	"mov %eax, %cr0\n"
	"ljmpl $" XSTR(SEL_CODE32) ", $" XSTR(GUEST_CODE) " + ms_pm32 - mode_switch\n"
	".code32\n"
	"ms_pm32:\n"
	"mov $" XSTR(SEL_DATA) ", %ax\n"
	"mov %ax, %ds\n"
	"mov %ax, %es\n"
	"mov %ax, %ss\n"
	"mov $2, %al\n"
	"out %al, $0x20\n"
	"mov %cr4, %eax\n"
	"or $0x20, %eax\n"		/* PAE */
	"mov %eax, %cr4\n"
	"mov $" XSTR(GUEST_PT) ", %eax\n"
	"mov %eax, %cr3\n"
	"mov $0xc0000080, %ecx\n"
	"rdmsr\n"
	"or $0x100, %eax\n"		/* EFER.LME */
	"wrmsr\n"
	"mov %cr0, %eax\n"
	"or $0x80000000, %eax\n"	/* PG: long mode is active */
	"mov %eax, %cr0\n"
	"ljmp $" XSTR(SEL_CODE64) ", $" XSTR(GUEST_CODE) " + ms_lm64 - mode_switch\n"
	".code64\n"
	"ms_lm64:\n"
	"mov $3, %al\n"
	"out %al, $0x20\n"
	"mov $0xc0000080, %ecx\n"
	"rdmsr\n"
	"out %eax, $0x21\n"
	"mov %cr0, %rax\n"
	"out %eax, $0x22\n"
	"mov %cr4, %rax\n"
	"out %eax, $0x23\n"
	"hlt\n"
	".balign 8\n"
	"ms_gdtr: .word 4 * 8 - 1\n"
	".long " XSTR(GUEST_GDT) "\n");

GUEST_TEST(guest_enters_long_mode_from_real_mode)
{
	struct vcpu *v = LOAD(self->vm, MODE_REAL, mode_switch);
	struct kvm_sregs sregs;
	uint64_t cr0, cr4;

	/* EFER.LME needs long mode in the guest's CPUID: vcpu_new set it. */
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x20, 1));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x20, 2));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x20, 3));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x21, 0x500));	/* LME | LMA */
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_IO));
	ASSERT_EQ(0, check_io(v, OUT, 4, 0x22, 1));
	cr0 = io_value(v);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_IO));
	ASSERT_EQ(0, check_io(v, OUT, 4, 0x23, 1));
	cr4 = io_value(v);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));

	/* What the guest read is what KVM reports. */
	vcpu_get_sregs(v, &sregs);
	EXPECT_EQ(0x80000001, cr0 & 0x80000001);
	EXPECT_EQ(sregs.cr0, cr0);
	EXPECT_EQ(sregs.cr4, cr4);
	EXPECT_EQ(0x20, cr4 & 0x20);
	EXPECT_EQ(0x500, sregs.efer & 0x500);
	EXPECT_EQ(GUEST_PT, sregs.cr3);
	EXPECT_EQ(SEL_CODE64, sregs.cs.selector);
	EXPECT_EQ(1, sregs.cs.l);
	EXPECT_EQ(SEL_DATA, sregs.ds.selector);
	EXPECT_EQ(GUEST_GDT, sregs.gdt.base);
	EXPECT_EQ(31, sregs.gdt.limit);
	vcpu_free(v);
}

/* --- Registers written by the VMM between exits. --------------------- */

GUEST_CODE_BLOCK(regs_guest, ".code64",
	"mov $0x1111, %eax\n"
	"out %eax, $0x20\n"
	"out %eax, $0x21\n"
	"mov %rbx, %rax\n"
	"out %eax, $0x22\n"
	"shr $32, %rax\n"
	"out %eax, $0x22\n"
	"hlt\n");

/*
 * --- CR0 and CR8 as the guest sees them. ------------------------------
 * VMX runs a guest with CR0.NE forced on and keeps its TPR in a shadow
 * page; the guest must still read back what it wrote, and userspace see
 * it too (kvm_run.cr8, KVM_GET_SREGS). CR8 is only raised: without an
 * in-kernel APIC, KVM exits with KVM_EXIT_SET_TPR when the guest lowers it.
 */
GUEST_CODE_BLOCK(cr_readback, ".code64",
	"mov $7, %eax\n"
	"mov %rax, %cr8\n"
	"mov %cr8, %rax\n"
	"out %eax, $0x60\n"
	"mov %cr0, %rax\n"
	"and $~0x20, %eax\n"		/* clear NE */
	"or $0x40000000, %eax\n"	/* set CD */
	"mov %rax, %cr0\n"
	"mov %cr0, %rax\n"
	"out %eax, $0x61\n"
	"or $0x20, %eax\n"		/* NE back on, CD off */
	"and $~0x40000000, %eax\n"
	"mov %rax, %cr0\n"
	"mov %cr0, %rax\n"
	"out %eax, $0x62\n"
	"hlt\n");

GUEST_TEST(control_registers_read_back)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, cr_readback);
	struct kvm_sregs s;
	uint64_t cr0;

	vcpu_get_sregs(v, &s);
	cr0 = s.cr0;
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x60, 7));
	EXPECT_EQ(7, v->run->cr8);
	vcpu_get_sregs(v, &s);
	EXPECT_EQ(7, s.cr8);
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x61,
				   (uint32_t)((cr0 & ~X86_CR0_NE) | X86_CR0_CD)));
	vcpu_get_sregs(v, &s);
	EXPECT_EQ((cr0 & ~X86_CR0_NE) | X86_CR0_CD, s.cr0);
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x62, (uint32_t)cr0));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	EXPECT_EQ(7, v->run->cr8);
	vcpu_get_sregs(v, &s);
	EXPECT_EQ(cr0, s.cr0);
	EXPECT_EQ(7, s.cr8);
	vcpu_free(v);
}

/*
 * --- PAE paging outside long mode. ---------------------------------
 * Turning paging on loads the four PDPTEs from CR3 (VMX enters with them
 * from the VMCS, so rkvm loads them when it emulates the CR0 write); a
 * PDPTE with a reserved bit set makes the write #GP, and with no IDT the
 * guest shuts down.
 */
#define PAE_PDPT	GUEST_DATA
#define PAE_DATA	(GUEST_DATA + 0x100)

GUEST_CODE_BLOCK(pae_paging, ".code32",
	"mov $" XSTR(PAE_PDPT) ", %eax\n"
	"mov %eax, %cr3\n"
	"mov %cr4, %eax\n"
	"or $0x20, %eax\n"		/* PAE */
	"mov %eax, %cr4\n"
	"mov %cr0, %eax\n"
	"or $0x80000000, %eax\n"	/* PG */
	"mov %eax, %cr0\n"
	"mov $0x12345678, %ecx\n"
	"mov %ecx, " XSTR(PAE_DATA) "\n"
	"mov " XSTR(PAE_DATA) ", %eax\n"
	"out %eax, $0x70\n"
	"hlt\n");

static struct vcpu *pae_guest(struct vm *vm, uint64_t pdpte1_extra)
{
	uint64_t *pdpt = gpa_ptr(vm, PAE_PDPT);
	int i;

	/* The long-mode tables' four page directories, 2 MiB pages. */
	for (i = 0; i < 4; i++)
		pdpt[i] = (GUEST_PT + 0x2000 + i * 0x1000) | 1;
	pdpt[1] |= pdpte1_extra;
	return LOAD(vm, MODE_PROT32, pae_paging);
}

GUEST_TEST(pae_paging_loads_pdptes)
{
	struct vcpu *v = pae_guest(self->vm, 0);
	struct kvm_sregs s;

	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x70, 0x12345678));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_sregs(v, &s);
	EXPECT_EQ(X86_CR0_PG, s.cr0 & X86_CR0_PG);
	EXPECT_EQ(0x20, s.cr4 & 0x20);
	EXPECT_EQ(0, s.efer & (1 << 10));	/* not long mode */
	EXPECT_EQ(PAE_PDPT, s.cr3);
	vcpu_free(v);
}

GUEST_TEST(pae_paging_invalid_pdpte_faults)
{
	/* Bit 1 (R/W) is reserved in a PAE PDPTE. */
	struct vcpu *v = pae_guest(self->vm, 2);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_SHUTDOWN));
	vcpu_free(v);
}

GUEST_TEST(set_regs_between_exits)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, regs_guest);
	struct kvm_regs regs;
	int round;

	for (round = 0; round < 3; round++) {
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x20, 0x1111));
		vcpu_get_regs(v, &regs);
		regs.rax = 0xabcdef + round;
		regs.rbx = 0x8877665544332211ULL + round;
		vcpu_set_regs(v, &regs);
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x21, 0xabcdef + round));
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x22, 0x44332211 + round));
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x22, 0x88776655));
		ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
		/* Back to the start: the guest runs again from the new RIP. */
		vcpu_get_regs(v, &regs);
		regs.rip = GUEST_CODE;
		vcpu_set_regs(v, &regs);
	}
	vcpu_free(v);
}

/* --- A page fault the guest handles itself. -------------------------- */

#define UNMAPPED_VA 0x40000010	/* its 2 MiB page is made not present */

GUEST_LABEL(pf_handler);
GUEST_CODE_BLOCK(pf_guest, ".code64",
	"mov $" XSTR(UNMAPPED_VA) ", %ebx\n"
	"mov $2, %r15\n"		/* length of the faulting instruction */
	"mov (%rbx), %eax\n"
	"mov $0x77, %al\n"
	"out %al, $0x50\n"
	"mov $6, %r15\n"
	"movl $1, (%rbx)\n"
	"mov $0x78, %al\n"
	"out %al, $0x50\n"
	"hlt\n"
	"pf_handler:\n"
	"push %rax\n"
	"mov $14, %al\n"
	"out %al, $0x51\n"
	"mov %cr2, %rax\n"
	"out %eax, $0x52\n"
	"mov 8(%rsp), %eax\n"		/* error code */
	"out %eax, $0x53\n"
	"add %r15, 16(%rsp)\n"
	"pop %rax\n"
	"add $8, %rsp\n"
	"iretq\n");

GUEST_TEST(guest_page_fault)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, pf_guest);
	uint64_t *pd1 = gpa_ptr(self->vm, GUEST_PT + 0x3000);	/* 1..2 GiB */

	pd1[0] = 0;
	vm_set_idt_gate64(self->vm, 14, guest_addr(pf_guest, pf_handler, GUEST_CODE));
	/* read of a not-present page: #PF, error code 0 */
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x51, 14));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x52, UNMAPPED_VA));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x53, 0));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x50, 0x77));
	/* write: error code W (2) */
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x51, 14));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x52, UNMAPPED_VA));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x53, 2));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x50, 0x78));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

/* --- Executing MMIO: an internal error, with data. ------------------- */

GUEST_CODE_BLOCK(fetch_mmio, ".code64",
	"mov $" XSTR(GUEST_MMIO) ", %eax\n"
	"jmp *%rax\n");

GUEST_TEST(fetch_from_mmio_is_an_internal_error)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, fetch_mmio);

	/* KVM_CAP_INTERNAL_ERROR_DATA: internal.ndata says how much is there. */
	ASSERT_EQ(1, xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_INTERNAL_ERROR_DATA));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_INTERNAL_ERROR));
	EXPECT_EQ(KVM_INTERNAL_ERROR_EMULATION, v->run->internal.suberror);
	EXPECT_LT(0, v->run->internal.ndata);
	EXPECT_GE(16, v->run->internal.ndata);
	vcpu_free(v);
}

/* --- Read-only slots. ------------------------------------------------ */

#define ROM_GPA 0x30000000

GUEST_CODE_BLOCK(rom_access, ".code64",
	"mov $" XSTR(ROM_GPA) ", %ebx\n"
	"mov (%rbx), %r8\n"
	"movq $0x55, 8(%rbx)\n"		/* writes exit as MMIO */
	"movb $0x66, 0x1001(%rbx)\n"
	"mov 8(%rbx), %r9\n"		/* and change nothing */
	"mov 0x1000(%rbx), %r10\n"
	"hlt\n");

GUEST_TEST(readonly_slot)
{
	struct vcpu *v;
	struct kvm_regs regs;
	uint64_t *rom;

	if (xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) <= 0)
		SKIP(return, "KVM_CAP_READONLY_MEM not reported");
	rom = guest_alloc(0x2000);
	rom[0] = 0x0123456789abcdefULL;
	rom[1] = 0x1111111111111111ULL;
	rom[512] = 0x2222222222222222ULL;
	ASSERT_EQ(0, vm_set_region(self->vm, 1, KVM_MEM_READONLY, ROM_GPA,
				   0x2000, rom));
	v = LOAD(self->vm, MODE_LONG64, rom_access);
	ASSERT_EQ(0, run_expect_mmio(v, ROM_GPA + 8, 8, true, 0x55));
	ASSERT_EQ(0, run_expect_mmio(v, ROM_GPA + 0x1001, 1, true, 0x66));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x0123456789abcdefULL, regs.r8);
	EXPECT_EQ(0x1111111111111111ULL, regs.r9);
	EXPECT_EQ(0x2222222222222222ULL, regs.r10);
	EXPECT_EQ(0x1111111111111111ULL, rom[1]);
	EXPECT_EQ(0x2222222222222222ULL, rom[512]);
	vcpu_free(v);
}

/* --- CPUID. ---------------------------------------------------------- */

#define CPUID_OUT(port)							\
	"out %eax, $" #port "\n"					\
	"mov %ebx, %eax\n out %eax, $" #port "\n"			\
	"mov %ecx, %eax\n out %eax, $" #port "\n"			\
	"mov %edx, %eax\n out %eax, $" #port "\n"

GUEST_CODE_BLOCK(cpuid_guest, ".code32",
	"xor %eax, %eax\n xor %ecx, %ecx\n cpuid\n"
	CPUID_OUT(0x70)
	"mov $0x40000000, %eax\n xor %ecx, %ecx\n cpuid\n"
	CPUID_OUT(0x71)
	"mov $0x40000001, %eax\n xor %ecx, %ecx\n cpuid\n"
	CPUID_OUT(0x72)
	"hlt\n");

static const struct kvm_cpuid_entry2 chosen_cpuid[] = {
	/* max basic leaf 1, vendor "rkvmTestCPU!" (EBX, EDX, ECX) */
	{ .function = 0, .eax = 1, .ebx = 0x6d766b72, .edx = 0x74736554,
	  .ecx = 0x21555043 },
	{ .function = 0x40000000, .eax = 0x40000001, .ebx = 0x11223344,
	  .ecx = 0x55667788, .edx = 0x99aabbcc },
	{ .function = 0x40000001, .eax = 0xa5a5a5a5, .ebx = 0x5a5a5a5a,
	  .ecx = 0x01020304, .edx = 0xfffefdfc },
};

GUEST_TEST(cpuid_from_set_cpuid2)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[3];
	} cpuid = { .c.nent = 3 };
	struct vcpu *v = LOAD(self->vm, MODE_PROT32, cpuid_guest);
	int i;

	memcpy(cpuid.e, chosen_cpuid, sizeof(chosen_cpuid));
	ASSERT_EQ(0, xioctl(v->fd, KVM_SET_CPUID2, (unsigned long)&cpuid));
	for (i = 0; i < 3; i++) {
		const struct kvm_cpuid_entry2 *e = &chosen_cpuid[i];

		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x70 + i, e->eax));
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x70 + i, e->ebx));
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x70 + i, e->ecx));
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x70 + i, e->edx));
	}
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST(get_supported_cpuid)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[256];
	} cpuid;
	int sys = rkvm_open_dev(), i;
	bool leaf0 = false, leaf1 = false;

	ASSERT_LE(0, sys);
	memset(&cpuid, 0, sizeof(cpuid));
	cpuid.c.nent = 1;
	EXPECT_EQ(-E2BIG, xioctl(sys, KVM_GET_SUPPORTED_CPUID, (unsigned long)&cpuid));
	cpuid.c.nent = 256;
	ASSERT_EQ(0, xioctl(sys, KVM_GET_SUPPORTED_CPUID, (unsigned long)&cpuid));
	ASSERT_LT(1, cpuid.c.nent);
	ASSERT_GE(256, cpuid.c.nent);
	for (i = 0; i < (int)cpuid.c.nent; i++) {
		if (cpuid.e[i].function == 0) {
			leaf0 = true;
			EXPECT_LE(1, cpuid.e[i].eax);
		}
		if (cpuid.e[i].function == 1)
			leaf1 = true;
	}
	EXPECT_TRUE(leaf0);
	EXPECT_TRUE(leaf1);
	close(sys);
}

/* --- MSRs. ----------------------------------------------------------- */

#define MSR_IA32_TSC		0x10
#define MSR_IA32_SYSENTER_CS	0x174
#define MSR_IA32_SYSENTER_ESP	0x175
#define MSR_IA32_SYSENTER_EIP	0x176
#define MSR_IA32_MISC_ENABLE	0x1a0
#define MSR_IA32_CR_PAT		0x277
#define MSR_EFER		0xc0000080
#define MSR_STAR		0xc0000081
#define MSR_LSTAR		0xc0000082
#define MSR_CSTAR		0xc0000083
#define MSR_SYSCALL_MASK	0xc0000084
#define MSR_FS_BASE		0xc0000100
#define MSR_GS_BASE		0xc0000101
#define MSR_KERNEL_GS_BASE	0xc0000102
#define MSR_NONEXISTENT		0xc0ffee00	/* in no range any CPU defines */

/*
 * Architectural MSRs with a value KVM keeps exactly on both vendors (all
 * canonical; SYSENTER_* within 32 bits, as AMD keeps only those unless the
 * guest's CPUID says Intel).
 */
static const struct { uint32_t index; uint64_t val; } arch_msrs[] = {
	{ MSR_IA32_SYSENTER_CS, 0x10 },
	{ MSR_IA32_SYSENTER_ESP, 0x81234000 },
	{ MSR_IA32_SYSENTER_EIP, 0x81000040 },
	{ MSR_IA32_MISC_ENABLE, 0x1 },
	{ MSR_IA32_CR_PAT, 0x0007010600070106ULL },
	{ MSR_EFER, 0x501 },		/* SCE | LME | LMA, as the vCPU is */
	{ MSR_STAR, 0x0023001000000000ULL },
	{ MSR_LSTAR, 0xffffffff81a00000ULL },
	{ MSR_CSTAR, 0xffffffff81b00000ULL },
	{ MSR_SYSCALL_MASK, 0x47700 },
	{ MSR_FS_BASE, 0x00007f0000001000ULL },
	{ MSR_GS_BASE, 0x00007f0000002000ULL },
	{ MSR_KERNEL_GS_BASE, 0xffff888000001000ULL },
};
#define NR_ARCH_MSRS (sizeof(arch_msrs) / sizeof(arch_msrs[0]))

struct msrs {
	struct kvm_msrs m;
	struct kvm_msr_entry e[NR_ARCH_MSRS + 1];
};

static long get_msr(struct vcpu *v, uint32_t index, uint64_t *val)
{
	struct msrs msrs = { .m.nmsrs = 1, .e[0].index = index };
	long r = xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msrs);

	*val = msrs.e[0].data;
	return r;
}

static long set_msr(struct vcpu *v, uint32_t index, uint64_t val)
{
	struct msrs msrs = { .m.nmsrs = 1, .e[0].index = index, .e[0].data = val };

	return xioctl(v->fd, KVM_SET_MSRS, (unsigned long)&msrs);
}

/*
 * KVM_GET_MSR_INDEX_LIST names the MSRs a VMM must save and restore. EFER,
 * FS_BASE and GS_BASE are not in KVM's list (they travel in kvm_sregs), but
 * KVM_GET/SET_MSRS take them, which msr_host_round_trip checks.
 */
TEST(msr_index_list)
{
	static const uint32_t want[] = {
		MSR_IA32_TSC, MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP,
		MSR_IA32_SYSENTER_EIP, MSR_IA32_MISC_ENABLE, MSR_IA32_CR_PAT,
		MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK,
		MSR_KERNEL_GS_BASE,
	};
	struct kvm_msr_list *list;
	int sys = rkvm_open_dev();
	uint32_t n, i, j;

	ASSERT_LE(0, sys);
	list = calloc(1, sizeof(*list) + 4096 * sizeof(uint32_t));
	ASSERT_NE(NULL, list);
	list->nmsrs = 0;
	ASSERT_EQ(-E2BIG, xioctl(sys, KVM_GET_MSR_INDEX_LIST, (unsigned long)list));
	n = list->nmsrs;	/* KVM says how many there are */
	ASSERT_LT(0, n);
	ASSERT_GT(4096, n);
	list->nmsrs = n - 1;
	ASSERT_EQ(-E2BIG, xioctl(sys, KVM_GET_MSR_INDEX_LIST, (unsigned long)list));
	EXPECT_EQ(n, list->nmsrs);
	list->nmsrs = 4096;
	ASSERT_EQ(0, xioctl(sys, KVM_GET_MSR_INDEX_LIST, (unsigned long)list));
	EXPECT_EQ(n, list->nmsrs);
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		for (j = 0; j < n && list->indices[j] != want[i]; j++)
			;
		EXPECT_GT(n, j) TH_LOG("MSR %#x missing from the index list", want[i]);
	}
	free(list);
	close(sys);
}

GUEST_TEST(msr_host_round_trip)
{
	struct vcpu *v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	struct msrs msrs = { .m.nmsrs = NR_ARCH_MSRS };
	uint64_t tsc, tsc2;
	unsigned int i;

	for (i = 0; i < NR_ARCH_MSRS; i++) {
		msrs.e[i].index = arch_msrs[i].index;
		msrs.e[i].data = arch_msrs[i].val;
	}
	ASSERT_EQ(NR_ARCH_MSRS, xioctl(v->fd, KVM_SET_MSRS, (unsigned long)&msrs));
	memset(msrs.e, 0, sizeof(msrs.e));
	for (i = 0; i < NR_ARCH_MSRS; i++)
		msrs.e[i].index = arch_msrs[i].index;
	ASSERT_EQ(NR_ARCH_MSRS, xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msrs));
	for (i = 0; i < NR_ARCH_MSRS; i++)
		EXPECT_EQ(arch_msrs[i].val, msrs.e[i].data)
			TH_LOG("MSR %#x", arch_msrs[i].index);

	/* The TSC runs on from what the VMM set (kvm_pvm ignores the write). */
	ASSERT_EQ(1, set_msr(v, MSR_IA32_TSC, 1ULL << 40));
	ASSERT_EQ(1, get_msr(v, MSR_IA32_TSC, &tsc));
	ASSERT_EQ(1, get_msr(v, MSR_IA32_TSC, &tsc2));
	EXPECT_LE(tsc, tsc2);
	if (!dev_is_kvm_pvm()) {
		EXPECT_LE(1ULL << 40, tsc);
		EXPECT_GT((1ULL << 40) + (1ULL << 38), tsc);
	}

	/* An unknown MSR stops the batch: the count says how far it got. */
	msrs.m.nmsrs = 2;
	msrs.e[0].index = MSR_LSTAR;
	msrs.e[1].index = MSR_NONEXISTENT;
	EXPECT_EQ(1, xioctl(v->fd, KVM_GET_MSRS, (unsigned long)&msrs));
	EXPECT_EQ(0, xioctl(v->fd, KVM_SET_MSRS, (unsigned long)&(struct msrs){
		.m.nmsrs = 1, .e[0].index = MSR_NONEXISTENT }));
	vcpu_free(v);
}

GUEST_LABEL(msr_gp_handler);
GUEST_CODE_BLOCK(msr_guest, ".code64",
	"mov $" XSTR(MSR_LSTAR) ", %ecx\n"
	"rdmsr\n"
	"out %eax, $0x80\n"
	"mov %edx, %eax\n"
	"out %eax, $0x80\n"
	"mov $0x81c0ffe0, %eax\n"
	"mov $0xffffffff, %edx\n"
	"wrmsr\n"
	"mov $0x1234, %ax\n"
	"out %ax, $0x83\n"		/* the VMM reads LSTAR here */
	"mov $" XSTR(MSR_NONEXISTENT) ", %ecx\n"
	"rdmsr\n"			/* #GP: the handler skips it */
	"mov $0x99, %al\n"
	"out %al, $0x83\n"
	"wrmsr\n"			/* #GP again */
	"mov $0x9a, %al\n"
	"out %al, $0x83\n"
	"hlt\n"
	"msr_gp_handler:\n"
	"push %rax\n"
	"mov $13, %al\n"
	"out %al, $0x81\n"
	"mov 8(%rsp), %eax\n"		/* error code */
	"out %eax, $0x82\n"
	"addq $2, 16(%rsp)\n"		/* past the 2-byte rdmsr/wrmsr */
	"pop %rax\n"
	"add $8, %rsp\n"
	"iretq\n");

GUEST_TEST(msr_guest_access)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, msr_guest);
	uint64_t val;

	vm_set_idt_gate64(self->vm, 13,
			  guest_addr(msr_guest, msr_gp_handler, GUEST_CODE));
	ASSERT_EQ(1, set_msr(v, MSR_LSTAR, 0xffffffff87654320ULL));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x80, 0x87654320));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x80, 0xffffffff));
	ASSERT_EQ(0, run_expect_io(v, OUT, 2, 0x83, 0x1234));
	ASSERT_EQ(1, get_msr(v, MSR_LSTAR, &val));
	EXPECT_EQ(0xffffffff81c0ffe0ULL, val);
	/* rdmsr of an unknown MSR: #GP(0) in the guest */
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x81, 13));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x82, 0));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x83, 0x99));
	/* wrmsr of it likewise */
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x81, 13));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x82, 0));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x83, 0x9a));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

/* --- Triple fault. --------------------------------------------------- */

GUEST_CODE_BLOCK(ud2_guest, ".code64",
	"mov $1, %al\n"
	"out %al, $0x90\n"
	"ud2\n"
	"hlt\n");

/*
 * RDPMC: rkvm has no virtual PMU, so the guest gets #GP(0) as KVM gives
 * when no counter exists, and never reads the host's counters. Stock KVM
 * may offer a vPMU (kvm_amd always has the legacy counters): there the
 * guest may read one instead, and only its survival is checked.
 */
GUEST_LABEL(rdpmc_gp_handler);
GUEST_CODE_BLOCK(rdpmc_guest, ".code64",
	"xor %ecx, %ecx\n"
	"rdpmc\n"
	"mov $0x5a, %al\n"
	"out %al, $0x84\n"
	"hlt\n"
	"rdpmc_gp_handler:\n"
	"push %rax\n"
	"mov 8(%rsp), %eax\n"		/* error code */
	"out %eax, $0x81\n"
	"addq $2, 16(%rsp)\n"		/* past the 2-byte rdpmc */
	"pop %rax\n"
	"add $8, %rsp\n"
	"iretq\n");

GUEST_TEST(rdpmc_without_pmu)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, rdpmc_guest);
	bool rkvm = !strcmp(rkvm_dev_path(), "/dev/rkvm");
	int r;

	vm_set_idt_gate64(self->vm, 13,
			  guest_addr(rdpmc_guest, rdpmc_gp_handler, GUEST_CODE));
	r = run_until_exit(v);
	ASSERT_EQ(KVM_EXIT_IO, r) TH_LOG("exit %d (%s)", r, exit_name(r));
	if (rkvm || v->run->io.port == 0x81) {
		EXPECT_EQ(0x81, v->run->io.port);
		EXPECT_EQ(0, io_value(v));	/* #GP(0) */
		ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x84, 0x5a));
	} else {
		EXPECT_EQ(0x84, v->run->io.port);
	}
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

GUEST_TEST(triple_fault_shutdown)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, ud2_guest);
	struct kvm_sregs sregs;

	/* #UD with an empty IDT: #GP, #DF, then shutdown. */
	vcpu_get_sregs(v, &sregs);
	sregs.idt.limit = 0;
	vcpu_set_sregs(v, &sregs);
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x90, 1));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_SHUTDOWN));
	vcpu_free(v);
}

/* Not-present gates instead: #UD -> #NP -> #DF -> shutdown, 32-bit. */
GUEST_CODE_BLOCK(ud2_guest32, ".code32",
	"ud2\n"
	"hlt\n");

GUEST_TEST(triple_fault_not_present_gates)
{
	struct vcpu *v = LOAD(self->vm, MODE_PROT32, ud2_guest32);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_SHUTDOWN));
	vcpu_free(v);
}

/* --- Signals and immediate_exit. ------------------------------------- */

GUEST_CODE_BLOCK(spin_guest, ".code64",
	"mov $2, %al\n"
	"out %al, $0x91\n"
	"1: pause\n"
	"jmp 1b\n");

static void sigusr1(int sig)
{
}

struct kicker {
	pthread_t target;
	volatile bool stop;
};

/* Signals the vCPU thread every 20 ms until told to stop. */
static void *kick_thread(void *arg)
{
	struct kicker *k = arg;

	while (!k->stop) {
		usleep(20000);
		pthread_kill(k->target, SIGUSR1);
	}
	return NULL;
}

static void catch_sigusr1(void)
{
	struct sigaction sa = { .sa_handler = sigusr1 };	/* no SA_RESTART */

	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
}

GUEST_TEST(signal_interrupts_run)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, spin_guest);
	struct kicker k = { .target = pthread_self() };
	pthread_t t;
	uint64_t rip;
	int i, r;

	catch_sigusr1();
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x91, 2));
	ASSERT_EQ(0, pthread_create(&t, NULL, kick_thread, &k));
	for (i = 0; i < stress_iters(5); i++) {
		r = run_until_exit(v);
		ASSERT_EQ(-EINTR, r) TH_LOG("KVM_RUN gave %d (%s)", r, exit_name(r));
		EXPECT_EQ(KVM_EXIT_INTR, v->run->exit_reason);
		rip = vcpu_rip(v);	/* still in the spin loop */
		EXPECT_LE(GUEST_CODE + 4, rip);
		EXPECT_GE(GUEST_CODE + 6, rip);
	}
	k.stop = true;
	pthread_join(t, NULL);
	vcpu_free(v);
}

/*
 * --- The vCPU thread moves between CPUs while the guest runs. -------
 * The guest exits for CPUID over and over (exits handled in the kernel,
 * so one KVM_RUN spans many entries) and counts them in a register it
 * never reloads; another thread flips the vCPU thread's affinity between
 * two CPUs. Every count must come out exact: the guest's state survives
 * the vCPU thread being scheduled out and resumed on another CPU in the
 * middle of KVM_RUN.
 */
#define CPUIDS_PER_ROUND 200

GUEST_CODE_BLOCK(cpuid_counter, ".code64",
	"xor %r15, %r15\n"
	"1: mov $" XSTR(CPUIDS_PER_ROUND) ", %r12\n"
	"2: xor %eax, %eax\n"
	"cpuid\n"
	"inc %r15\n"
	"dec %r12\n"
	"jnz 2b\n"
	"mov %r15d, %eax\n"
	"out %eax, $0x50\n"
	"jmp 1b\n");

struct mover {
	pthread_t target;
	volatile bool stop;
	int moves;
};

/* Moves the target thread to the other CPU every 200 us. */
static void *move_thread(void *arg)
{
	struct mover *m = arg;
	cpu_set_t set;

	while (!m->stop) {
		CPU_ZERO(&set);
		CPU_SET(m->moves & 1, &set);
		if (!pthread_setaffinity_np(m->target, sizeof(set), &set))
			m->moves++;
		usleep(200);
	}
	return NULL;
}

GUEST_TEST(vcpu_thread_moves_between_cpus)
{
	struct vcpu *v;
	struct mover m = { .target = pthread_self() };
	cpu_set_t all;
	pthread_t t;
	int i, rounds = stress_iters(20);

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		SKIP(return, "needs two online CPUs");
	ASSERT_EQ(0, pthread_getaffinity_np(pthread_self(), sizeof(all), &all));
	v = LOAD(self->vm, MODE_LONG64, cpuid_counter);
	ASSERT_EQ(0, pthread_create(&t, NULL, move_thread, &m));
	for (i = 1; i <= rounds; i++)
		ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x50, i * CPUIDS_PER_ROUND))
			TH_LOG("round %d", i);
	m.stop = true;
	pthread_join(t, NULL);
	pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
	EXPECT_LT(1, m.moves);
	vcpu_free(v);
}

GUEST_TEST(signal_pending_with_signal_mask)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, spin_guest);
	struct {
		struct kvm_signal_mask m;
		uint8_t set[8];
	} mask = { .m.len = 8 };
	sigset_t block, pending;

	/* Block SIGUSR1 in the thread, but not while the guest runs. */
	catch_sigusr1();
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	ASSERT_EQ(0, sigprocmask(SIG_BLOCK, &block, NULL));
	ASSERT_EQ(0, xioctl(v->fd, KVM_SET_SIGNAL_MASK, (unsigned long)&mask));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x91, 2));
	ASSERT_EQ(0, raise(SIGUSR1));
	ASSERT_EQ(-EINTR, run_until_exit(v));
	EXPECT_EQ(KVM_EXIT_INTR, v->run->exit_reason);
	/* Still pending: KVM_RUN put the thread's own mask back. */
	ASSERT_EQ(0, sigpending(&pending));
	EXPECT_TRUE(sigismember(&pending, SIGUSR1));
	ASSERT_EQ(0, sigprocmask(SIG_UNBLOCK, &block, NULL));
	vcpu_free(v);
}

GUEST_TEST(immediate_exit)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, spin_guest);

	v->run->immediate_exit = 1;
	ASSERT_EQ(-EINTR, run_until_exit(v));
	EXPECT_EQ(GUEST_CODE, vcpu_rip(v));	/* the guest did not run */
	ASSERT_EQ(-EINTR, run_until_exit(v));
	EXPECT_EQ(GUEST_CODE, vcpu_rip(v));
	v->run->immediate_exit = 0;
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x91, 2));
	v->run->immediate_exit = 1;
	ASSERT_EQ(-EINTR, run_until_exit(v));
	vcpu_free(v);
}

GUEST_CODE_BLOCK(in_then_spin, ".code64",
	"mov $0x1111111111111111, %rax\n"
	"in $0x92, %al\n"
	"out %al, $0x93\n"
	"1: pause\n"
	"jmp 1b\n");

/*
 * immediate_exit after an IN exit still completes the IN (the data lands
 * in AL and RIP moves past it), which is how a VMM finishes pending I/O
 * before saving the vCPU state, but runs no further guest code.
 */
GUEST_TEST(immediate_exit_completes_pending_in)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, in_then_spin);
	struct kvm_regs regs;

	ASSERT_EQ(0, run_expect_io(v, IN, 1, 0x92, 0x77));
	v->run->immediate_exit = 1;
	ASSERT_EQ(-EINTR, run_until_exit(v));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x1111111111111177ULL, regs.rax);
	EXPECT_EQ(GUEST_CODE + 10 + 2, regs.rip);	/* movabs, in imm8 */
	v->run->immediate_exit = 0;
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, 0x93, 0x77));
	vcpu_free(v);
}

/* --- A guest state the CPU refuses to enter. ------------------------- */

GUEST_TEST(invalid_state_fail_entry)
{
	struct vcpu *v = LOAD(self->vm, MODE_LONG64, long64_out_hlt);
	struct kvm_sregs sregs;
	int r;

	/*
	 * Long mode with CS.L and CS.D both set: KVM_SET_SREGS takes it, but
	 * both VMX (guest-state checks) and SVM (VMRUN consistency checks)
	 * refuse the entry, which KVM reports as KVM_EXIT_FAIL_ENTRY.
	 */
	vcpu_get_sregs(v, &sregs);
	sregs.cs.db = 1;
	ASSERT_EQ(0, xioctl(v->fd, KVM_SET_SREGS, (unsigned long)&sregs));
	r = run_until_exit(v);
	if (r != KVM_EXIT_FAIL_ENTRY)
		print_exit(v, "CS.L=CS.D=1");
	/* kvm_pvm (no hardware entry checks) just runs it. */
	if (r == KVM_EXIT_IO && dev_is_kvm_pvm())
		SKIP(goto out, "kvm_pvm entered a guest with CS.L=CS.D=1: no entry checks");
	ASSERT_EQ(KVM_EXIT_FAIL_ENTRY, r);
out:
	vcpu_free(v);
}

TEST_HARNESS_MAIN
