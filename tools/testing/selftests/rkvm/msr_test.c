// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of machine checks and of the MSRs a guest kernel touches
 * at boot (KVM's x86 ABI):
 *
 *  - KVM_CAP_MCE is 32 (KVM_MAX_MCE_BANKS); KVM_X86_GET_MCE_CAP_SUPPORTED
 *    has MCG_CTL_P and MCG_SER_P; KVM_X86_SETUP_MCE refuses 0 or more than
 *    32 banks and unsupported MCG_CAP bits (EINVAL), and sets MCG_CAP,
 *    MCG_CTL and each MCi_CTL to all-ones;
 *  - KVM_X86_SET_MCE with an uncorrected error delivers #MC (vector 18)
 *    to a long-mode guest with CR4.MCE, whose handler finds MCG_STATUS and
 *    the bank's STATUS/ADDR/MISC by RDMSR; a second one while MCG_STATUS.
 *    MCIP is set, or one with CR4.MCE clear, shuts the guest down
 *    (KVM_EXIT_SHUTDOWN); a corrected error is only recorded (no #MC),
 *    and one over a valid entry sets OVER; a bank past the count or a
 *    status without VAL is EINVAL;
 *  - the guest's WRMSR rules: MCi_CTL only 0 or all-ones (bits 10 and 0
 *    may be clear), MCi_STATUS only 0, MCG_CTL 0 or all-ones, MCG_CAP
 *    read-only, banks past the count absent: #GP, caught by the guest's
 *    #GP handler;
 *  - MTRRs: MTRRcap (VCNT 8, FIX, WC), MTRRdefType, fixed and variable
 *    ranges round-trip for the guest and the VMM; reserved types and bits,
 *    MTRRcap writes and the gaps between the registers are #GP;
 *  - microcode revision (the VMM sets it, guest writes are dropped), AMD's
 *    HWCR write rules, the fixed-value legacy MSRs read without #GP, and
 *    TSC_DEADLINE without an in-kernel APIC (reads 0, writes dropped);
 *  - RDTSCP and TSC_AUX: with RDTSCP in the guest CPUID, RDTSCP returns
 *    the TSC_AUX the VMM set and then the one the guest wrote, and the VMM
 *    reads that back; bits 63:32 are refused for an Intel guest vendor and
 *    dropped for AMD's; without RDTSCP in the CPUID, RDTSCP is #UD and
 *    RDMSR/WRMSR of TSC_AUX #GP while the VMM still has the MSR (QEMU TCG
 *    ignores the RDTSCP intercept, so there the #UD is skipped);
 *  - KVM_GET_MSR_FEATURE_INDEX_LIST and KVM_GET_MSR_INDEX_LIST with the
 *    E2BIG-then-retry protocol; KVM_GET_MSRS on the system fd reads every
 *    feature MSR (ARCH_CAPABILITIES with PSCHANGE_MC_NO) and no other; a
 *    vCPU's KVM_GET_MSRS reads every MSR of the index list.
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"
#include "guest_fixture.h"

#define OUT		KVM_EXIT_IO_OUT
#define PORT_MC		0x70	/* the #MC handler ran */
#define PORT_DONE	0x72	/* the MSR table is done */

#define MSR_UCODE_REV		0x8b
#define MSR_MTRRCAP		0xfe
#define MSR_ARCH_CAPABILITIES	0x10a
#define MSR_MCG_CAP		0x179
#define MSR_MCG_STATUS		0x17a
#define MSR_MCG_CTL		0x17b
#define MSR_MTRR_PHYSBASE0	0x200
#define MSR_MTRR_FIX64K		0x250
#define MSR_MTRR_FIX4K_F8000	0x26f
#define MSR_MTRR_DEF_TYPE	0x2ff
#define MSR_MC0_CTL2		0x280
#define MSR_MC_CTL(i)		(0x400 + 4 * (i))
#define MSR_MC_STATUS(i)	(0x401 + 4 * (i))
#define MSR_MC_ADDR(i)		(0x402 + 4 * (i))
#define MSR_MC_MISC(i)		(0x403 + 4 * (i))
#define MSR_K7_HWCR		0xc0010015
#define MSR_TSC_AUX		0xc0000103
#define MSR_TSC_DEADLINE	0x6e0
#define MSR_AMD64_SYSCFG	0xc0010010

#define MCG_CTL_P	(1ULL << 8)
#define MCG_SER_P	(1ULL << 24)
#define MCG_STATUS_RIPV	(1ULL << 0)
#define MCG_STATUS_MCIP	(1ULL << 2)
#define MCI_VAL		(1ULL << 63)
#define MCI_OVER	(1ULL << 62)
#define MCI_UC		(1ULL << 61)
#define MCI_EN		(1ULL << 60)
#define MCI_PCC		(1ULL << 57)
#define ARCH_CAP_PSCHANGE_MC_NO	(1ULL << 6)
#define X86_CR4_MCE	(1ULL << 6)

/* Where the guest's data lives (slot 0). */
#define MC_LOG		0x60000	/* the #MC handler's RDMSR results */
#define TABLE		0x61000	/* the MSR table msr_guest runs */
#define AUX_LOG		0x62000	/* what rdtscp_guest saw */

/*
 * Runs the table at TABLE: entries of five quadwords { op (0 end, 1
 * RDMSR, 2 WRMSR), index, value, faulted, value read }, then reports at
 * PORT_DONE and halts. The #GP handler marks the entry and skips the
 * two-byte RDMSR/WRMSR. The #MC handler stores MCG_STATUS and bank 1's
 * STATUS, ADDR, MISC at MC_LOG, reports at PORT_MC and returns without
 * clearing anything (MCIP stays set).
 */
GUEST_CODE_BLOCK(msr_guest, ".code64",
	"mov $" XSTR(TABLE) ", %rbx\n"
	"1: mov (%rbx), %rax\n"
	"test %rax, %rax\n"
	"jz 9f\n"
	"movq $0, 24(%rbx)\n"
	"mov 8(%rbx), %rcx\n"
	"cmp $1, %rax\n"
	"jne 2f\n"
	"xor %eax, %eax\n"
	"xor %edx, %edx\n"
	"rdmsr\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov %rax, 32(%rbx)\n"
	"jmp 3f\n"
	"2: mov 16(%rbx), %rax\n"
	"mov %rax, %rdx\n"
	"shr $32, %rdx\n"
	"wrmsr\n"
	"3: add $40, %rbx\n"
	"jmp 1b\n"
	"9: out %al, $" XSTR(PORT_DONE) "\n"
	"8: hlt\n"
	"jmp 8b\n"
	"handler_gp: movq $1, 24(%rbx)\n"
	"add $8, %rsp\n"
	"addq $2, (%rsp)\n"
	"iretq\n"
	"handler_mc: push %rax\n"
	"push %rcx\n"
	"push %rdx\n"
	"push %rsi\n"
	"mov $" XSTR(MC_LOG) ", %rsi\n"
	"mov $" XSTR(MSR_MCG_STATUS) ", %ecx\n"
	"call 5f\n"
	"mov $0x405, %ecx\n"
	"call 5f\n"
	"mov $0x406, %ecx\n"
	"call 5f\n"
	"mov $0x407, %ecx\n"
	"call 5f\n"
	"out %al, $" XSTR(PORT_MC) "\n"
	"pop %rsi\n"
	"pop %rdx\n"
	"pop %rcx\n"
	"pop %rax\n"
	"iretq\n"
	"5: rdmsr\n"
	"shl $32, %rdx\n"
	"or %rdx, %rax\n"
	"mov %rax, (%rsi)\n"
	"add $8, %rsi\n"
	"ret\n");
GUEST_LABEL(handler_gp);
GUEST_LABEL(handler_mc);

enum { END, RD, WR };

struct msr_op {
	uint64_t op, index, value, faulted, read;
};

struct msrs {
	struct kvm_msrs m;
	struct kvm_msr_entry e[255];
};

static long get_msr(int fd, uint32_t index, uint64_t *val)
{
	struct msrs *msrs = calloc(1, sizeof(*msrs));
	long r;

	msrs->m.nmsrs = 1;
	msrs->e[0].index = index;
	r = xioctl(fd, KVM_GET_MSRS, (unsigned long)msrs);
	*val = msrs->e[0].data;
	free(msrs);
	return r;
}

static long set_msr(int fd, uint32_t index, uint64_t val)
{
	struct msrs *msrs = calloc(1, sizeof(*msrs));
	long r;

	msrs->m.nmsrs = 1;
	msrs->e[0].index = index;
	msrs->e[0].data = val;
	r = xioctl(fd, KVM_SET_MSRS, (unsigned long)msrs);
	free(msrs);
	return r;
}

/* One KVM_RUN that must end at an OUT to @port (any data). */
static int run_to_port(struct vcpu *v, uint16_t port)
{
	int r = run_until_exit(v);

	return r < 0 ? -1 : check_io(v, OUT, 1, port, 1);
}

static struct vcpu *msr_vcpu(struct vm *vm, bool cr4_mce)
{
	struct kvm_sregs sregs;
	struct vcpu *v;

	vm_load(vm, GUEST_CODE, msr_guest, msr_guest_end);
	vm_set_idt_gate64(vm, 13, guest_addr(msr_guest, handler_gp, GUEST_CODE));
	vm_set_idt_gate64(vm, 18, guest_addr(msr_guest, handler_mc, GUEST_CODE));
	memset(gpa_ptr(vm, TABLE), 0, sizeof(struct msr_op));
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	if (cr4_mce) {
		vcpu_get_sregs(v, &sregs);
		sregs.cr4 |= X86_CR4_MCE;
		vcpu_set_sregs(v, &sregs);
	}
	return v;
}

/* Runs @ops in the guest (from its start) and checks each outcome. */
static int run_table(struct vcpu *v, const struct msr_op *ops, int n)
{
	struct msr_op *t = gpa_ptr(v->vm, TABLE);
	struct kvm_regs regs;
	int i, bad = 0;

	memcpy(t, ops, n * sizeof(*ops));
	memset(&t[n], 0, sizeof(t[n]));
	vcpu_get_regs(v, &regs);
	regs.rip = GUEST_CODE;
	vcpu_set_regs(v, &regs);
	if (run_to_port(v, PORT_DONE))
		return -1;
	for (i = 0; i < n; i++) {
		if (t[i].faulted != ops[i].faulted ||
		    (ops[i].op == RD && !ops[i].faulted && t[i].read != ops[i].read)) {
			fprintf(stderr, "# entry %d: %s %#llx (%#llx): faulted %llu, read %#llx; want %llu, %#llx\n",
				i, ops[i].op == RD ? "rdmsr" : "wrmsr",
				(unsigned long long)ops[i].index,
				(unsigned long long)ops[i].value,
				(unsigned long long)t[i].faulted,
				(unsigned long long)t[i].read,
				(unsigned long long)ops[i].faulted,
				(unsigned long long)ops[i].read);
			bad++;
		}
	}
	return bad;
}

static long setup_mce(struct vcpu *v, uint64_t cap)
{
	return xioctl(v->fd, KVM_X86_SETUP_MCE, (unsigned long)&cap);
}

static long set_mce(struct vcpu *v, uint8_t bank, uint64_t status, uint64_t mcg_status)
{
	struct kvm_x86_mce m = {
		.status = status,
		.addr = 0x12345000,
		.misc = 0x86,
		.mcg_status = mcg_status,
		.bank = bank,
	};

	return xioctl(v->fd, KVM_X86_SET_MCE, (unsigned long)&m);
}

TEST(mce_capabilities)
{
	int sys = rkvm_open_dev();
	uint64_t sup = 0;

	ASSERT_LE(0, sys);
	EXPECT_EQ(32, xioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_MCE));
	ASSERT_EQ(0, xioctl(sys, KVM_X86_GET_MCE_CAP_SUPPORTED, (unsigned long)&sup));
	EXPECT_EQ(MCG_CTL_P | MCG_SER_P, sup & (MCG_CTL_P | MCG_SER_P));
	/* The bank count is not a capability bit. */
	EXPECT_EQ(0, sup & 0xff);
	close(sys);
}

TEST_F(guest, setup_mce_checks)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	uint64_t val;
	int i;

	/* Before KVM_X86_SETUP_MCE: 32 banks, nothing enabled. */
	ASSERT_EQ(1, get_msr(v->fd, MSR_MCG_CAP, &val));
	EXPECT_EQ(32, val);
	EXPECT_EQ(-EINVAL, setup_mce(v, 0));
	EXPECT_EQ(-EINVAL, setup_mce(v, 33));
	EXPECT_EQ(-EINVAL, setup_mce(v, 4 | 1 << 9));
	EXPECT_EQ(-EINVAL, setup_mce(v, 4 | 1 << 11));
	EXPECT_EQ(-EINVAL, setup_mce(v, 4 | 1ULL << 40));
	ASSERT_EQ(0, setup_mce(v, 4 | MCG_CTL_P | MCG_SER_P));
	ASSERT_EQ(1, get_msr(v->fd, MSR_MCG_CAP, &val));
	/* AMD keeps MCG_CAP bits 8:0 only. */
	EXPECT_EQ(4 | MCG_CTL_P, val & ~MCG_SER_P);
	ASSERT_EQ(1, get_msr(v->fd, MSR_MCG_CTL, &val));
	EXPECT_EQ(~0ULL, val);
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(1, get_msr(v->fd, MSR_MC_CTL(i), &val));
		EXPECT_EQ(~0ULL, val) TH_LOG("MC%d_CTL", i);
		ASSERT_EQ(1, get_msr(v->fd, MSR_MC_STATUS(i), &val));
		EXPECT_EQ(0, val);
	}
	EXPECT_EQ(0, get_msr(v->fd, MSR_MC_CTL(4), &val)) TH_LOG("bank 4 absent");
	ASSERT_EQ(0, setup_mce(v, 32));
	EXPECT_EQ(1, get_msr(v->fd, MSR_MC_MISC(31), &val));
	/* Bad injections. */
	ASSERT_EQ(0, setup_mce(v, 2 | MCG_CTL_P));
	EXPECT_EQ(-EINVAL, set_mce(v, 2, MCI_VAL | MCI_UC, MCG_STATUS_MCIP));
	EXPECT_EQ(-EINVAL, set_mce(v, 1, MCI_UC, MCG_STATUS_MCIP));
	vcpu_free(v);
}

TEST_F(guest, set_mce_raises_mc)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	uint64_t *log = gpa_ptr(self->vm, MC_LOG);
	uint64_t status = MCI_VAL | MCI_UC | MCI_EN | MCI_PCC | 0x134;
	uint64_t val;

	ASSERT_EQ(0, setup_mce(v, 2 | MCG_CTL_P));
	ASSERT_EQ(0, run_to_port(v, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, set_mce(v, 1, status, MCG_STATUS_MCIP | MCG_STATUS_RIPV));
	ASSERT_EQ(0, run_to_port(v, PORT_MC));
	EXPECT_EQ(MCG_STATUS_MCIP | MCG_STATUS_RIPV, log[0]);
	EXPECT_EQ(status, log[1]);
	EXPECT_EQ(0x12345000, log[2]);
	EXPECT_EQ(0x86, log[3]);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	/* MCIP is still set: another uncorrected error shuts down. */
	ASSERT_EQ(0, set_mce(v, 1, status, MCG_STATUS_MCIP | MCG_STATUS_RIPV));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_SHUTDOWN));
	/* It recorded nothing. */
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_STATUS(1), &val));
	EXPECT_EQ(status, val);
	vcpu_free(v);
}

TEST_F(guest, set_mce_without_cr4_mce_shuts_down)
{
	struct vcpu *v = msr_vcpu(self->vm, false);

	ASSERT_EQ(0, setup_mce(v, 2 | MCG_CTL_P));
	ASSERT_EQ(0, run_to_port(v, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, set_mce(v, 0, MCI_VAL | MCI_UC | MCI_PCC, MCG_STATUS_MCIP));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_SHUTDOWN));
	vcpu_free(v);
}

TEST_F(guest, corrected_error_is_only_recorded)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	uint64_t ce = MCI_VAL | MCI_EN | 0x42, val;

	ASSERT_EQ(0, setup_mce(v, 2 | MCG_CTL_P));
	ASSERT_EQ(0, run_to_port(v, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, set_mce(v, 0, ce, 0));
	/* No #MC: the guest stays halted. */
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_STATUS(0), &val));
	EXPECT_EQ(ce, val);
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_ADDR(0), &val));
	EXPECT_EQ(0x12345000, val);
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_MISC(0), &val));
	EXPECT_EQ(0x86, val);
	ASSERT_EQ(1, get_msr(v->fd, MSR_MCG_STATUS, &val));
	EXPECT_EQ(0, val);
	/* A second one overwrites it and says so. */
	ASSERT_EQ(0, set_mce(v, 0, ce | 1, 0));
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_STATUS(0), &val));
	EXPECT_EQ(ce | 1 | MCI_OVER, val);
	/* With MC1_CTL off, an uncorrected error in bank 1 is dropped. */
	ASSERT_EQ(1, set_msr(v->fd, MSR_MC_CTL(1), 0));
	ASSERT_EQ(0, set_mce(v, 1, MCI_VAL | MCI_UC | MCI_PCC, MCG_STATUS_MCIP));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_STATUS(1), &val));
	EXPECT_EQ(0, val);
	vcpu_free(v);
}

TEST_F(guest, mce_msr_write_rules)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	const struct msr_op ops[] = {
		{ RD, MSR_MCG_CAP, 0, 0, 2 | MCG_CTL_P },
		{ WR, MSR_MCG_CAP, 2, 1 },
		{ WR, MSR_MC_CTL(0), 0xff, 1 },
		{ WR, MSR_MC_CTL(0), 0 },
		{ RD, MSR_MC_CTL(0), 0, 0, 0 },
		{ WR, MSR_MC_CTL(0), ~0ULL & ~(1ULL << 10) & ~1ULL },
		{ RD, MSR_MC_CTL(0), 0, 0, ~0ULL & ~(1ULL << 10) & ~1ULL },
		{ WR, MSR_MC_STATUS(0), 5, 1 },
		{ WR, MSR_MC_STATUS(0), 0 },
		{ WR, MSR_MC_ADDR(1), 0x1234 },
		{ RD, MSR_MC_ADDR(1), 0, 0, 0x1234 },
		{ WR, MSR_MCG_CTL, 1, 1 },
		{ WR, MSR_MCG_CTL, 0 },
		{ RD, MSR_MCG_CTL, 0, 0, 0 },
		{ WR, MSR_MCG_STATUS, MCG_STATUS_RIPV },
		{ RD, MSR_MCG_STATUS, 0, 0, MCG_STATUS_RIPV },
		{ RD, MSR_MC_CTL(2), 0, 1 },
		{ WR, MSR_MC_CTL(2), 0, 1 },
		{ RD, MSR_MC0_CTL2, 0, 1 },
	};
	const struct msr_op no_ctl[] = {
		{ RD, MSR_MCG_CTL, 0, 1 },
		{ WR, MSR_MCG_CTL, 0, 1 },
	};
	uint64_t val;

	ASSERT_EQ(0, setup_mce(v, 2 | MCG_CTL_P));
	EXPECT_EQ(0, run_table(v, ops, sizeof(ops) / sizeof(ops[0])));
	/* The VMM may write any MCi_STATUS; MCG_CAP is not writable. */
	EXPECT_EQ(1, set_msr(v->fd, MSR_MC_STATUS(1), 5));
	ASSERT_EQ(1, get_msr(v->fd, MSR_MC_STATUS(1), &val));
	EXPECT_EQ(5, val);
	EXPECT_EQ(0, set_msr(v->fd, MSR_MCG_CAP, 2 | MCG_CTL_P));
	/* Without MCG_CTL_P, MCG_CTL is #GP for the guest. */
	ASSERT_EQ(0, setup_mce(v, 2));
	EXPECT_EQ(0, run_table(v, no_ctl, 2));
	vcpu_free(v);
}

TEST_F(guest, mtrr_round_trips)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	const struct msr_op ops[] = {
		{ RD, MSR_MTRRCAP, 0, 0, 0x508 },
		{ WR, MSR_MTRRCAP, 0x508, 1 },
		{ WR, MSR_MTRR_DEF_TYPE, 0xc06 },
		{ RD, MSR_MTRR_DEF_TYPE, 0, 0, 0xc06 },
		{ WR, MSR_MTRR_DEF_TYPE, 2, 1 },
		{ WR, MSR_MTRR_DEF_TYPE, 0x1006, 1 },
		{ WR, MSR_MTRR_FIX64K, 0x0606060606060606ULL },
		{ RD, MSR_MTRR_FIX64K, 0, 0, 0x0606060606060606ULL },
		{ WR, MSR_MTRR_FIX4K_F8000, 0x0700000000000000ULL, 1 },
		{ WR, MSR_MTRR_FIX4K_F8000, 0x0504010006050401ULL },
		{ RD, MSR_MTRR_FIX4K_F8000, 0, 0, 0x0504010006050401ULL },
		{ WR, MSR_MTRR_PHYSBASE0, 0x80000006 },
		{ WR, MSR_MTRR_PHYSBASE0 + 1, 0xf80000800ULL },
		{ RD, MSR_MTRR_PHYSBASE0, 0, 0, 0x80000006 },
		{ RD, MSR_MTRR_PHYSBASE0 + 1, 0, 0, 0xf80000800ULL },
		{ WR, MSR_MTRR_PHYSBASE0 + 2, 0x80000003, 1 },
		{ WR, MSR_MTRR_PHYSBASE0 + 2, 0x80000106, 1 },
		{ WR, MSR_MTRR_PHYSBASE0 + 3, 0x400, 1 },
		{ WR, MSR_MTRR_PHYSBASE0 + 3, 1ULL << 62 | 0x800, 1 },
		{ WR, MSR_MTRR_PHYSBASE0 + 15, 0xff0000800ULL },
		{ RD, MSR_MTRR_PHYSBASE0 + 15, 0, 0, 0xff0000800ULL },
		{ RD, MSR_MTRR_PHYSBASE0 + 16, 0, 1 },
		{ WR, MSR_MTRR_PHYSBASE0 + 16, 0, 1 },
		{ RD, 0x251, 0, 1 },
	};
	uint64_t val;

	EXPECT_EQ(0, run_table(v, ops, sizeof(ops) / sizeof(ops[0])));
	/* The VMM sees the same registers, with the same checks. */
	ASSERT_EQ(1, get_msr(v->fd, MSR_MTRR_DEF_TYPE, &val));
	EXPECT_EQ(0xc06, val);
	ASSERT_EQ(1, get_msr(v->fd, MSR_MTRR_PHYSBASE0 + 1, &val));
	EXPECT_EQ(0xf80000800ULL, val);
	EXPECT_EQ(1, set_msr(v->fd, MSR_MTRR_PHYSBASE0 + 4, 0x40000005));
	ASSERT_EQ(1, get_msr(v->fd, MSR_MTRR_PHYSBASE0 + 4, &val));
	EXPECT_EQ(0x40000005, val);
	EXPECT_EQ(0, set_msr(v->fd, MSR_MTRR_DEF_TYPE, 3));
	EXPECT_EQ(0, set_msr(v->fd, MSR_MTRRCAP, 0x508));
	vcpu_free(v);
}

TEST_F(guest, boot_msrs)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	const struct msr_op ops[] = {
		/* The VMM's microcode revision; the guest's load is dropped. */
		{ RD, MSR_UCODE_REV, 0, 0, 0x1234500000000ULL },
		{ WR, MSR_UCODE_REV, 0 },
		{ RD, MSR_UCODE_REV, 0, 0, 0x1234500000000ULL },
		/* HWCR: McStatusWrEn and TscFreqSel; flush-filter bits dropped. */
		{ WR, MSR_K7_HWCR, 1ULL << 24 | 1 << 6 },
		{ RD, MSR_K7_HWCR, 0, 0, 1ULL << 24 },
		{ WR, MSR_K7_HWCR, 1, 1 },
		{ RD, MSR_AMD64_SYSCFG, 0, 0, 0 },
		{ RD, 0x17, 0, 0, 0 },		/* PLATFORM_ID */
		{ RD, 0x2c, 0, 0, 1 << 24 },	/* EBC_FREQUENCY_ID */
		{ RD, 0xc001001b, 0, 0, 0x20000000 },	/* K7_CLK_CTL */
		{ WR, 0xc0010058, 1, 1 },	/* FAM10H_MMIO_CONF_BASE */
		{ RD, MSR_MCG_STATUS, 0, 0, 0 },
		/* No in-kernel APIC: TSC_DEADLINE reads 0, writes are dropped. */
		{ WR, MSR_TSC_DEADLINE, 12345 },
		{ RD, MSR_TSC_DEADLINE, 0, 0, 0 },
	};
	uint64_t want_ucode = 0x1234500000000ULL;

	ASSERT_EQ(1, set_msr(v->fd, MSR_UCODE_REV, want_ucode));
	EXPECT_EQ(0, run_table(v, ops, sizeof(ops) / sizeof(ops[0])));
	vcpu_free(v);
}

/*
 * RDTSCP (ECX to AUX_LOG), RDMSR TSC_AUX (EAX to +8), WRMSR TSC_AUX =
 * 0x5678, RDTSCP again (ECX to +16), then PORT_DONE. ECX and EAX start as
 * 0xdeadbeef, so a faulting instruction leaves that; the #UD handler
 * counts at +24 and skips RDTSCP's three bytes, the #GP handler counts at
 * +32 and skips RDMSR's or WRMSR's two.
 */
GUEST_CODE_BLOCK(rdtscp_guest, ".code64",
	"mov $" XSTR(AUX_LOG) ", %rbx\n"
	"mov $0xdeadbeef, %ecx\n"
	"rdtscp\n"
	"mov %rcx, (%rbx)\n"
	"mov $0xdeadbeef, %eax\n"
	"mov $" XSTR(MSR_TSC_AUX) ", %ecx\n"
	"rdmsr\n"
	"mov %rax, 8(%rbx)\n"
	"mov $0x5678, %eax\n"
	"xor %edx, %edx\n"
	"wrmsr\n"
	"mov $0xdeadbeef, %ecx\n"
	"rdtscp\n"
	"mov %rcx, 16(%rbx)\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"1: hlt\n"
	"jmp 1b\n"
	"handler_ud: incq 24(%rbx)\n"
	"addq $3, (%rsp)\n"
	"iretq\n"
	"handler_gp_aux: incq 32(%rbx)\n"
	"add $8, %rsp\n"
	"addq $2, (%rsp)\n"
	"iretq\n");
GUEST_LABEL(handler_ud);
GUEST_LABEL(handler_gp_aux);

static bool cpuid_has_rdtscp(struct vm *vm)
{
	struct kvm_cpuid_entry2 *e = vm_cpuid_entry(vm, 0x80000001, 0);

	return e && (e->edx & (1u << 27));
}

/* Whether this machine is QEMU's TCG (CPUID 0x40000000 "TCGTCGTCGTCG"). */
static bool host_is_qemu_tcg(void)
{
	unsigned int eax, sig[3];

	__cpuid(1, eax, sig[0], sig[1], sig[2]);
	if (!(sig[1] & (1u << 31)))
		return false;
	__cpuid(0x40000000, eax, sig[0], sig[1], sig[2]);
	return !memcmp(sig, "TCGTCGTCGTCG", 12);
}

/* Runs rdtscp_guest on a vCPU whose CPUID has RDTSCP or (@rdtscp) not. */
static void run_rdtscp_guest(struct __test_metadata *_metadata, struct vm *vm, bool rdtscp)
{
	struct kvm_cpuid_entry2 *ext = vm_cpuid_entry(vm, 0x80000001, 0);
	uint64_t *log = gpa_ptr(vm, AUX_LOG), val = 0;
	uint32_t saved_edx = ext->edx;
	uint64_t fault = rdtscp ? 0 : 0xdeadbeef;
	struct vcpu *v;

	if (!rdtscp)
		ext->edx &= ~(1u << 27);
	vm_load(vm, GUEST_CODE, rdtscp_guest, rdtscp_guest_end);
	vm_set_idt_gate64(vm, 6, guest_addr(rdtscp_guest, handler_ud, GUEST_CODE));
	vm_set_idt_gate64(vm, 13, guest_addr(rdtscp_guest, handler_gp_aux, GUEST_CODE));
	memset(log, 0, 5 * sizeof(*log));
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ext->edx = saved_edx;
	/* The VMM has the MSR either way (it is in the index list). */
	ASSERT_EQ(1, set_msr(v->fd, MSR_TSC_AUX, 0x1234));
	ASSERT_EQ(1, get_msr(v->fd, MSR_TSC_AUX, &val));
	EXPECT_EQ(0x1234, val);
	ASSERT_EQ(0, run_to_port(v, PORT_DONE));
	EXPECT_EQ(fault ? fault : 0x1234, log[1]);
	EXPECT_EQ(rdtscp ? 0 : 2, log[4]) TH_LOG("#GP count");
	ASSERT_EQ(1, get_msr(v->fd, MSR_TSC_AUX, &val));
	EXPECT_EQ(rdtscp ? 0x5678 : 0x1234, val);
	vcpu_free(v);
	if (!rdtscp && log[3] == 0 && host_is_qemu_tcg())
		SKIP(return, "QEMU TCG runs RDTSCP without checking its SVM intercept: no #UD to see");
	EXPECT_EQ(fault ? fault : 0x1234, log[0]);
	EXPECT_EQ(fault ? fault : 0x5678, log[2]);
	EXPECT_EQ(rdtscp ? 0 : 2, log[3]) TH_LOG("#UD count");
}

TEST_F(guest, rdtscp_reads_the_guests_tsc_aux)
{
	if (!cpuid_has_rdtscp(self->vm))
		SKIP(return, "KVM_GET_SUPPORTED_CPUID offers no RDTSCP here");
	run_rdtscp_guest(_metadata, self->vm, true);
}

TEST_F(guest, rdtscp_absent_from_cpuid_faults)
{
	if (!cpuid_has_rdtscp(self->vm))
		SKIP(return, "KVM_GET_SUPPORTED_CPUID offers no RDTSCP here");
	run_rdtscp_guest(_metadata, self->vm, false);
}

TEST_F(guest, tsc_aux_high_bits_follow_the_vendor)
{
	struct kvm_cpuid_entry2 *vendor;
	struct vcpu *v;
	uint64_t val = 0;
	bool intel;

	if (!cpuid_has_rdtscp(self->vm))
		SKIP(return, "KVM_GET_SUPPORTED_CPUID offers no RDTSCP here");
	vendor = vm_cpuid_entry(self->vm, 0, 0);
	ASSERT_NE(NULL, vendor);
	intel = vendor->ebx == 0x756e6547;	/* "Genu"ineIntel */
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(1, set_msr(v->fd, MSR_TSC_AUX, 0x11));
	/* Intel reserves bits 63:32; AMD ignores them (KVM follows the CPUID). */
	EXPECT_EQ(intel ? 0 : 1, set_msr(v->fd, MSR_TSC_AUX, 1ULL << 32 | 7));
	ASSERT_EQ(1, get_msr(v->fd, MSR_TSC_AUX, &val));
	EXPECT_EQ(intel ? 0x11 : 7, val);
	vcpu_free(v);
}

/* KVM_GET_MSR_*INDEX_LIST @cmd into a fresh list, with E2BIG checks. */
static struct kvm_msr_list *msr_list(struct __test_metadata *_metadata, int sys,
				     unsigned long cmd)
{
	struct kvm_msr_list *list = calloc(1, sizeof(*list) + 1024 * sizeof(uint32_t));
	uint32_t n;

	list->nmsrs = 0;
	EXPECT_EQ(-E2BIG, xioctl(sys, cmd, (unsigned long)list));
	n = list->nmsrs;
	EXPECT_LT(0, n);
	EXPECT_GT(1024, n);
	list->nmsrs = n - 1;
	EXPECT_EQ(-E2BIG, xioctl(sys, cmd, (unsigned long)list));
	EXPECT_EQ(n, list->nmsrs);
	list->nmsrs = n;
	EXPECT_EQ(0, xioctl(sys, cmd, (unsigned long)list));
	EXPECT_EQ(n, list->nmsrs);
	return list;
}

static bool listed(const struct kvm_msr_list *list, uint32_t index)
{
	uint32_t i;

	for (i = 0; i < list->nmsrs; i++)
		if (list->indices[i] == index)
			return true;
	return false;
}

TEST(feature_msrs)
{
	int sys = rkvm_open_dev();
	struct kvm_msr_list *list;
	struct msrs *msrs = calloc(1, sizeof(*msrs));
	uint64_t arch_cap = 0;
	uint32_t i;

	ASSERT_LE(0, sys);
	ASSERT_EQ(1, xioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_GET_MSR_FEATURES));
	list = msr_list(_metadata, sys, KVM_GET_MSR_FEATURE_INDEX_LIST);
	EXPECT_TRUE(listed(list, MSR_UCODE_REV));
	EXPECT_TRUE(listed(list, MSR_ARCH_CAPABILITIES));
	ASSERT_GT(255, list->nmsrs);
	msrs->m.nmsrs = list->nmsrs;
	for (i = 0; i < list->nmsrs; i++)
		msrs->e[i].index = list->indices[i];
	EXPECT_EQ(list->nmsrs, xioctl(sys, KVM_GET_MSRS, (unsigned long)msrs));
	for (i = 0; i < list->nmsrs; i++)
		if (msrs->e[i].index == MSR_ARCH_CAPABILITIES)
			arch_cap = msrs->e[i].data;
	EXPECT_NE(0, arch_cap & ARCH_CAP_PSCHANGE_MC_NO);
	/* An MSR that is no feature (and not listed) stops the read. */
	msrs->m.nmsrs = 2;
	msrs->e[0].index = MSR_UCODE_REV;
	msrs->e[1].index = 0xdead0000;
	EXPECT_EQ(1, xioctl(sys, KVM_GET_MSRS, (unsigned long)msrs));
	msrs->m.nmsrs = 256;
	EXPECT_EQ(-E2BIG, xioctl(sys, KVM_GET_MSRS, (unsigned long)msrs));
	free(msrs);
	free(list);
	close(sys);
}

TEST_F(guest, index_list_is_readable)
{
	struct vcpu *v = msr_vcpu(self->vm, true);
	struct kvm_msr_list *list = msr_list(_metadata, self->vm->sys, KVM_GET_MSR_INDEX_LIST);
	struct msrs *msrs = calloc(1, sizeof(*msrs));
	static const uint32_t want[] = {
		MSR_MCG_STATUS, MSR_MCG_CTL, MSR_UCODE_REV, MSR_ARCH_CAPABILITIES,
		MSR_K7_HWCR, MSR_TSC_DEADLINE,
	};
	uint64_t feature = 0, vcpu_val;
	uint32_t i, done;
	long r;

	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		EXPECT_TRUE(listed(list, want[i])) TH_LOG("%#x not listed", want[i]);
	/* The VMM can read back every MSR it is told to save. */
	for (done = 0; done < list->nmsrs; done += msrs->m.nmsrs) {
		msrs->m.nmsrs = list->nmsrs - done < 255 ? list->nmsrs - done : 255;
		for (i = 0; i < msrs->m.nmsrs; i++)
			msrs->e[i].index = list->indices[done + i];
		r = xioctl(v->fd, KVM_GET_MSRS, (unsigned long)msrs);
		ASSERT_EQ(msrs->m.nmsrs, r) TH_LOG("stopped at MSR %#x",
			msrs->e[r >= 0 && r < msrs->m.nmsrs ? r : 0].index);
	}
	/* A vCPU starts with the ARCH_CAPABILITIES the system fd offers. */
	msrs->m.nmsrs = 1;
	msrs->e[0].index = MSR_ARCH_CAPABILITIES;
	ASSERT_EQ(1, xioctl(self->vm->sys, KVM_GET_MSRS, (unsigned long)msrs));
	feature = msrs->e[0].data;
	ASSERT_EQ(1, get_msr(v->fd, MSR_ARCH_CAPABILITIES, &vcpu_val));
	EXPECT_EQ(feature, vcpu_val);
	free(msrs);
	free(list);
	vcpu_free(v);
}

TEST_HARNESS_MAIN
