// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of the guest's debug registers:
 *
 *  - MOV to and from DR0-DR7 in the guest: DR0-3 keep any value, DR6
 *    keeps its fixed bits (0xffff0ff0), DR4/DR5
 *    alias DR6/DR7 without CR4.DE; KVM_GET_DEBUGREGS shows what the
 *    guest wrote, and what KVM_SET_DEBUGREGS sets the guest reads;
 *  - a data breakpoint the guest arms (DR0 and DR7) fires in the guest:
 *    its #DB handler finds B0 in DR6, and the VMM's own process is not
 *    hit by it;
 *  - the guest single-steps (RFLAGS.TF): its #DB handler finds BS in DR6;
 *  - bad input: flags, upper halves of DR6/DR7 (EINVAL), bad pointers
 *    (EFAULT); a guest MOV of upper bits to DR7 gets #GP.
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"
#include "guest_fixture.h"

#define OUT		KVM_EXIT_IO_OUT
#define PORT_DB		0x76	/* the #DB handler: DR6 */
#define PORT_GP		0x77	/* the #GP handler */
#define PORT_DONE	0x78
#define WATCHED		(GUEST_DATA + 0x100)	/* the breakpoint's qword */

/*
 * Writes DR0-3 (R8-R11), DR6 (0: its fixed bits read as 1) and DR7
 * (0x400), then reads all of them back, DR6 and DR7 also as DR4/DR5,
 * into R8-R15; HLT.
 */
GUEST_CODE_BLOCK(rw_guest, ".code64",
	"mov %r8, %dr0\n"
	"mov %r9, %dr1\n"
	"mov %r10, %dr2\n"
	"mov %r11, %dr3\n"
	"xor %eax, %eax\n"
	"mov %rax, %dr6\n"
	"mov $0x400, %eax\n"
	"mov %rax, %dr7\n"
	"xor %r8d, %r8d\n"
	"xor %r9d, %r9d\n"
	"xor %r10d, %r10d\n"
	"xor %r11d, %r11d\n"
	"mov %dr0, %r8\n"
	"mov %dr1, %r9\n"
	"mov %dr2, %r10\n"
	"mov %dr3, %r11\n"
	"mov %dr6, %r12\n"
	"mov %dr7, %r13\n"
	"mov %dr4, %r14\n"
	"mov %dr5, %r15\n"
	"hlt\n"
	/* Then: read what the VMM set. */
	"mov %dr0, %r8\n"
	"mov %dr3, %r11\n"
	"mov %dr6, %r12\n"
	"mov %dr7, %r13\n"
	"hlt\n");

/*
 * Arms DR0 on WATCHED (write, 8 bytes, L0), writes it, then says done.
 * The #DB handler reports DR6, clears it and returns after the write (a
 * data breakpoint is a trap). Then MOV of an upper bit to DR7: #GP, whose
 * handler reports and skips the 3-byte MOV.
 */
GUEST_CODE_BLOCK(bp_guest, ".code64",
	"mov $" XSTR(WATCHED) ", %eax\n"
	"mov %rax, %dr0\n"
	"mov $0x90401, %eax\n"		/* L0, RW0 = write, LEN0 = 8 bytes */
	"mov %rax, %dr7\n"
	"movq $0x55, (" XSTR(WATCHED) ")\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"mov $1, %rax\n"
	"shl $40, %rax\n"
	"mov %rax, %dr7\n"		/* #GP */
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"db_handler: push %rax\n"
	"mov %dr6, %rax\n"
	"out %eax, $" XSTR(PORT_DB) "\n"
	"xor %eax, %eax\n"
	"mov %rax, %dr6\n"
	"pop %rax\n"
	"iretq\n"
	"gp_handler: out %al, $" XSTR(PORT_GP) "\n"
	"addq $3, 8(%rsp)\n"		/* past the MOV to DR7 */
	"add $8, %rsp\n"		/* the error code */
	"iretq\n");
GUEST_LABEL(db_handler);
GUEST_LABEL(gp_handler);

/* One KVM_RUN that must end at an OUT of @size bytes to @port. */
static int run_to_out(struct vcpu *v, uint8_t size, uint16_t port)
{
	return run_until_exit(v) < 0 ? -1 : check_io(v, OUT, size, port, 1);
}

/*
 * Sets TF; the NOP after the POPF traps (#DB, DR6.BS), and the handler
 * reports DR6, clears TF in the frame and DR6, and returns; done.
 */
GUEST_CODE_BLOCK(ss_guest, ".code64",
	"pushfq\n"
	"orq $0x100, (%rsp)\n"
	"popfq\n"
	"nop\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"ss_handler: push %rax\n"
	"mov %dr6, %rax\n"
	"out %eax, $" XSTR(PORT_DB) "\n"
	"andq $-257, 24(%rsp)\n"	/* TF off in the saved RFLAGS */
	"xor %eax, %eax\n"
	"mov %rax, %dr6\n"
	"pop %rax\n"
	"iretq\n");
GUEST_LABEL(ss_handler);

static long get_dregs(struct vcpu *v, struct kvm_debugregs *d)
{
	return xioctl(v->fd, KVM_GET_DEBUGREGS, (unsigned long)d);
}

static long set_dregs(struct vcpu *v, struct kvm_debugregs *d)
{
	return xioctl(v->fd, KVM_SET_DEBUGREGS, (unsigned long)d);
}

TEST_F(guest, mov_dr_and_debugregs)
{
	struct kvm_debugregs d;
	struct kvm_regs regs;
	struct vcpu *v;

	ASSERT_EQ(1, xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_DEBUGREGS));
	vm_load(self->vm, GUEST_CODE, rw_guest, rw_guest_end);
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(0, get_dregs(v, &d));
	EXPECT_EQ(0, d.db[0]);
	EXPECT_EQ(0xffff0ff0, d.dr6) TH_LOG("DR6 after RESET");
	EXPECT_EQ(0x400, d.dr7) TH_LOG("DR7 after RESET");
	vcpu_get_regs(v, &regs);
	regs.r8 = 0x1000;
	regs.r9 = 0xffff800000000000ULL;
	regs.r10 = 0x12345678;
	regs.r11 = 0x7ffffffff000ULL;
	vcpu_set_regs(v, &regs);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x1000, regs.r8);
	EXPECT_EQ(0xffff800000000000ULL, regs.r9);
	EXPECT_EQ(0x12345678, regs.r10);
	EXPECT_EQ(0x7ffffffff000ULL, regs.r11);
	EXPECT_EQ(0xffff0ff0, regs.r12) TH_LOG("DR6: fixed bits");
	EXPECT_EQ(0x400, regs.r13);
	EXPECT_EQ(regs.r12, regs.r14) TH_LOG("DR4 is DR6 without CR4.DE");
	EXPECT_EQ(regs.r13, regs.r15) TH_LOG("DR5 is DR7 without CR4.DE");
	ASSERT_EQ(0, get_dregs(v, &d));
	EXPECT_EQ(0x1000, d.db[0]);
	EXPECT_EQ(0x7ffffffff000ULL, d.db[3]);
	EXPECT_EQ(0xffff0ff0, d.dr6);
	EXPECT_EQ(0x400, d.dr7);
	EXPECT_EQ(0, d.flags);
	/* Set, and the guest reads it. */
	d.db[0] = 0xabc000;
	d.db[3] = 0xdef000;
	d.dr6 = 0xffff0ff1;
	d.dr7 = 0x400;
	ASSERT_EQ(0, set_dregs(v, &d));
	memset(&d, 0, sizeof(d));
	ASSERT_EQ(0, get_dregs(v, &d));
	EXPECT_EQ(0xabc000, d.db[0]);
	EXPECT_EQ(0xffff0ff1, d.dr6);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0xabc000, regs.r8);
	EXPECT_EQ(0xdef000, regs.r11);
	EXPECT_EQ(0xffff0ff1, regs.r12);
	EXPECT_EQ(0x400, regs.r13);
	vcpu_free(v);
}

TEST_F(guest, data_breakpoint_fires_in_the_guest)
{
	volatile uint64_t *watched = gpa_ptr(self->vm, WATCHED);
	struct kvm_debugregs d;
	struct vcpu *v;

	vm_load(self->vm, GUEST_CODE, bp_guest, bp_guest_end);
	vm_set_idt_gate64(self->vm, 1, guest_addr(bp_guest, db_handler, GUEST_CODE));
	vm_set_idt_gate64(self->vm, 13, guest_addr(bp_guest, gp_handler, GUEST_CODE));
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	/* The trap: B0 (bit 0) in DR6, after the write. */
	ASSERT_EQ(0, run_to_out(v, 4, PORT_DB));
	EXPECT_EQ(1, *(volatile uint32_t *)io_data(v) & 0xf) TH_LOG("DR6 %#x",
								  *(uint32_t *)io_data(v));
	EXPECT_EQ(0x55, *watched) TH_LOG("a trap: the write is done");
	ASSERT_EQ(0, run_to_out(v, 1, PORT_DONE));
	ASSERT_EQ(0, get_dregs(v, &d));
	EXPECT_EQ(WATCHED, d.db[0]);
	EXPECT_EQ(0x90401, d.dr7);
	/* The VMM writes the guest's watched qword: no breakpoint here. */
	*watched = 0x66;
	/* MOV of an upper bit to DR7: #GP, DR7 unchanged. */
	ASSERT_EQ(0, run_to_out(v, 1, PORT_GP));
	ASSERT_EQ(0, run_to_out(v, 1, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, get_dregs(v, &d));
	EXPECT_EQ(0x90401, d.dr7);
	vcpu_free(v);
}

TEST_F(guest, single_step_reports_bs)
{
	struct vcpu *v;
	uint32_t dr6;

	vm_load(self->vm, GUEST_CODE, ss_guest, ss_guest_end);
	vm_set_idt_gate64(self->vm, 1, guest_addr(ss_guest, ss_handler, GUEST_CODE));
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(0, run_to_out(v, 4, PORT_DB));
	dr6 = *(volatile uint32_t *)io_data(v);
	TH_LOG("DR6 in the #DB handler: %#x", dr6);
	EXPECT_NE(0, dr6 & (1 << 14)) TH_LOG("BS: a single step");
	EXPECT_EQ(0, dr6 & 0xf) TH_LOG("no breakpoint hit");
	ASSERT_EQ(0, run_to_out(v, 1, PORT_DONE)) TH_LOG("one step only");
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, debugregs_bad_input)
{
	struct kvm_debugregs d, good;
	struct vcpu *v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);

	ASSERT_EQ(0, get_dregs(v, &good));
	d = good;
	d.flags = 1;
	EXPECT_EQ(-EINVAL, set_dregs(v, &d));
	d = good;
	d.dr6 |= 1ULL << 32;
	EXPECT_EQ(-EINVAL, set_dregs(v, &d));
	d = good;
	d.dr7 |= 1ULL << 40;
	EXPECT_EQ(-EINVAL, set_dregs(v, &d));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_GET_DEBUGREGS, 8));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_SET_DEBUGREGS, 8));
	ASSERT_EQ(0, get_dregs(v, &d));
	EXPECT_EQ(0, memcmp(&d, &good, sizeof(d))) TH_LOG("nothing refused changed anything");
	vcpu_free(v);
}

TEST_HARNESS_MAIN
