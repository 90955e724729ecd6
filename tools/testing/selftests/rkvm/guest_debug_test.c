// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of KVM_SET_GUEST_DEBUG, the VMM debugging its guest (as
 * QEMU's gdbstub does), and of single-stepping that survives instructions
 * the hypervisor emulates (KVM_CAP_X86_ROBUST_SINGLESTEP):
 *
 *  - the capabilities: SET_GUEST_DEBUG, X86_ROBUST_SINGLESTEP, and
 *    SET_GUEST_DEBUG2's mask of the control flags;
 *  - KVM_GUESTDBG_SINGLESTEP: each KVM_RUN executes one instruction and
 *    returns KVM_EXIT_DEBUG (exception 1, DR6.BS, pc the linear RIP of
 *    the next instruction); KVM_GET_REGS never shows the debugger's TF;
 *    control 0 (or no ENABLE) lets the guest run freely again;
 *  - the step over instructions the kernel emulates without a userspace
 *    exit (CPUID, RDMSR/WRMSR of MSR_IA32_MISC_ENABLE), and over port I/O
 *    and MMIO that exit to userspace first: the step ends right after the
 *    instruction once userspace has completed it (an MMIO write, which
 *    stock KVM reports one instruction late, aside: see io_and_mmio);
 *  - KVM_GUESTDBG_USE_SW_BP: INT3 exits with exception 3 at its address;
 *    KVM_GUESTDBG_USE_HW_BP: debugreg[0..7] are the debugger's breakpoints
 *    (an instruction breakpoint, fault-like, and a data write breakpoint,
 *    trap-like);
 *  - KVM_GUESTDBG_INJECT_DB / INJECT_BP: the exception reaches the guest's
 *    own IDT handler (and a second injection while one is pending is
 *    EBUSY);
 *  - without guest debugging, the guest's own TF: its #DB handler sees
 *    every step, DR6.BS included after a CPUID the hypervisor emulated;
 *  - KVM_GUESTDBG_BLOCKIRQ: a pending NMI is held back while stepping,
 *    and delivered once the flag is cleared;
 *  - bad input: bad pointer (EFAULT), unknown control bits (accepted and
 *    ignored, as x86 KVM does).
 *
 * Skipped where the device does not report KVM_CAP_SET_GUEST_DEBUG.
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"
#include "guest_fixture.h"

#define OUT		KVM_EXIT_IO_OUT
#define IN		KVM_EXIT_IO_IN
#define PORT_IO		0x50	/* the stepped OUT and IN */
#define PORT_DB		0x51	/* the #DB handler: its return RIP */
#define PORT_BP		0x52	/* the #BP handler: its return RIP */
#define PORT_NMI	0x53	/* the NMI handler ran */
#define PORT_DONE	0x54
#define WATCHED		(GUEST_DATA + 0x100)	/* the data breakpoint's qword */
#define TF_COUNT	(GUEST_DATA + 0x200)	/* u32: #DBs the guest's handler took */
#define TF_RIP		(GUEST_DATA + 0x300)	/* u64[]: their return RIPs */
#define TF_DR6		(GUEST_DATA + 0x400)	/* u64[]: their DR6 */
#define TF_STEPS	4			/* the handler clears TF after as many */

#define RFLAGS_TF	0x100ULL
#define DR6_BS		(1ULL << 14)
#define MSR_MISC_ENABLE	0x1a0

#define CTRL_STEP	(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP)
/* The flags KVM_CAP_SET_GUEST_DEBUG2 must report at least. */
#define CTRL_ALL	(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP |	\
			 KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_USE_HW_BP |	\
			 KVM_GUESTDBG_INJECT_DB | KVM_GUESTDBG_INJECT_BP |	\
			 KVM_GUESTDBG_BLOCKIRQ)

/* Plain instructions of known lengths (1, 5, 2, 4, 4 bytes). */
GUEST_CODE_BLOCK(plain_guest, ".code64",
	"nop\n"
	"p_mov: mov $0x12345678, %eax\n"
	"p_xor: xor %ecx, %ecx\n"
	"p_lea: lea 0x10(%rax), %rdx\n"
	"p_add: add $0x7f, %rcx\n"
	"p_end: out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n");
GUEST_LABEL(p_mov);
GUEST_LABEL(p_xor);
GUEST_LABEL(p_lea);
GUEST_LABEL(p_add);
GUEST_LABEL(p_end);

/* CPUID, RDMSR and WRMSR: exits the kernel handles without userspace. */
GUEST_CODE_BLOCK(emul_guest, ".code64",
	"xor %eax, %eax\n"
	"e_cpuid: cpuid\n"
	"e_after_cpuid: mov $0x77, %esi\n"
	"e_ecx: mov $" XSTR(MSR_MISC_ENABLE) ", %ecx\n"
	"e_rdmsr: rdmsr\n"
	"e_after_rdmsr: mov $0x78, %esi\n"
	"e_wrmsr: wrmsr\n"
	"e_after_wrmsr: mov $0x79, %esi\n"
	"e_end: out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n");
GUEST_LABEL(e_cpuid);
GUEST_LABEL(e_after_cpuid);
GUEST_LABEL(e_ecx);
GUEST_LABEL(e_rdmsr);
GUEST_LABEL(e_after_rdmsr);
GUEST_LABEL(e_wrmsr);
GUEST_LABEL(e_after_wrmsr);
GUEST_LABEL(e_end);

/* OUT and IN, then an MMIO write and read through RDI = GUEST_MMIO. */
GUEST_CODE_BLOCK(io_guest, ".code64",
	"mov $" XSTR(GUEST_MMIO) ", %edi\n"
	"io_al: mov $0x41, %al\n"
	"io_out: out %al, $" XSTR(PORT_IO) "\n"
	"io_in: in $" XSTR(PORT_IO) ", %al\n"
	"io_write: movl $0xabcd, (%rdi)\n"
	"io_after_write: nop\n"
	"io_read: mov (%rdi), %ecx\n"
	"io_after_read: nop\n"
	"io_end: out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n");
GUEST_LABEL(io_al);
GUEST_LABEL(io_out);
GUEST_LABEL(io_in);
GUEST_LABEL(io_write);
GUEST_LABEL(io_after_write);
GUEST_LABEL(io_read);
GUEST_LABEL(io_after_read);
GUEST_LABEL(io_end);

/*
 * An INT3 for the debugger's software breakpoint; an instruction and a
 * data write for its hardware breakpoints.
 */
GUEST_CODE_BLOCK(bp_guest, ".code64",
	"nop\n"
	"b_int3: int3\n"
	"b_after_int3: mov $0x99, %ebx\n"
	"b_insn: mov $0x1234, %ebx\n"
	"b_write: movq $0x55, (" XSTR(WATCHED) ")\n"
	"b_after_write: nop\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"b_bp: out %al, $" XSTR(PORT_BP) "\n"
	"iretq\n");
GUEST_LABEL(b_int3);
GUEST_LABEL(b_after_int3);
GUEST_LABEL(b_insn);
GUEST_LABEL(b_write);
GUEST_LABEL(b_after_write);
GUEST_LABEL(b_bp);

/*
 * A mark, an INT3, done; the #DB and #BP handlers report their return
 * RIP (the low half: all of guest memory is below 4 GiB).
 */
GUEST_CODE_BLOCK(inject_guest, ".code64",
	"out %al, $" XSTR(PORT_DONE) "\n"
	"j_int3: int3\n"
	"j_after: out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"j_db: mov (%rsp), %rax\n"
	"out %eax, $" XSTR(PORT_DB) "\n"
	"iretq\n"
	"j_bp: mov (%rsp), %rax\n"
	"out %eax, $" XSTR(PORT_BP) "\n"
	"iretq\n");
GUEST_LABEL(j_int3);
GUEST_LABEL(j_after);
GUEST_LABEL(j_db);
GUEST_LABEL(j_bp);

/*
 * The guest single-steps itself: TF on with POPF, then the #DB handler
 * logs each step's return RIP and DR6 and clears TF in the frame after
 * TF_STEPS of them.
 */
GUEST_CODE_BLOCK(tf_guest, ".code64",
	"pushfq\n"
	"orq $0x100, (%rsp)\n"
	"popfq\n"
	"nop\n"
	"t1: xor %eax, %eax\n"
	"t2: cpuid\n"
	"t3: nop\n"
	"t4: mov $1, %esi\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"t_db: push %rax\n"
	"push %rcx\n"
	"mov (" XSTR(TF_COUNT) "), %ecx\n"
	"mov 16(%rsp), %rax\n"
	"mov %rax, " XSTR(TF_RIP) "(,%rcx,8)\n"
	"mov %dr6, %rax\n"
	"mov %rax, " XSTR(TF_DR6) "(,%rcx,8)\n"
	"xor %eax, %eax\n"
	"mov %rax, %dr6\n"
	"inc %ecx\n"
	"mov %ecx, (" XSTR(TF_COUNT) ")\n"
	"cmp $" XSTR(TF_STEPS) ", %ecx\n"
	"jb 1f\n"
	"andq $-257, 32(%rsp)\n"	/* TF off in the saved RFLAGS */
	"1: pop %rcx\n"
	"pop %rax\n"
	"iretq\n");
GUEST_LABEL(t1);
GUEST_LABEL(t2);
GUEST_LABEL(t3);
GUEST_LABEL(t4);
GUEST_LABEL(t_db);

/*
 * NOPs, done; the NMI handler reports, clears TF in its frame (the
 * debugger's TF, which the NMI's delivery saved there) and returns.
 */
GUEST_CODE_BLOCK(nmi_guest, ".code64",
	"nop\n"
	"q1: nop\n"
	"q2: nop\n"
	"q3: nop\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"q_nmi: out %al, $" XSTR(PORT_NMI) "\n"
	"andq $-257, 16(%rsp)\n"
	"iretq\n"
	"q_nmi_end:\n");
GUEST_LABEL(q1);
GUEST_LABEL(q2);
GUEST_LABEL(q3);
GUEST_LABEL(q_nmi);
GUEST_LABEL(q_nmi_end);

/*
 * Touches every page the tests' guests use, from another vCPU, so that
 * they are mapped before a vCPU is stepped: the code page, GDT, IDT and
 * page tables (read), the stack page and GUEST_DATA (written with what
 * they hold). HLT.
 */
GUEST_CODE_BLOCK(touch_guest, ".code64",
	"mov (" XSTR(GUEST_CODE) "), %eax\n"
	"mov (" XSTR(GUEST_GDT) "), %eax\n"
	"mov (" XSTR(GUEST_IDT) "), %eax\n"
	"mov $" XSTR(GUEST_PT) ", %ebx\n"	/* PML4, PDPT and the four PDs */
	"mov $6, %ecx\n"
	"1: mov (%rbx), %eax\n"
	"add $0x1000, %ebx\n"
	"loop 1b\n"
	"push %rax\n"
	"pop %rax\n"
	"mov (" XSTR(GUEST_DATA) "), %rax\n"
	"mov %rax, (" XSTR(GUEST_DATA) ")\n"
	"hlt\n");

#define TOUCH_CODE	(GUEST_CODE + 0x8000)

/*
 * Bochs' VMX keeps the single-step trap it scheduled for an instruction
 * when that instruction's fetch or access exits (an EPT violation: the
 * page's first touch) and delivers it right after the next entry, before
 * the instruction runs, so that a KVM_GUESTDBG_SINGLESTEP step reports
 * the instruction it has not run (stock kvm_intel too; not so on real
 * VMX or under QEMU's SVM). The tests step over guest pages another vCPU
 * has mapped first.
 */
static void touch_guest_pages(struct vm *vm)
{
	struct vcpu *t;

	vm_load(vm, TOUCH_CODE, touch_guest, touch_guest_end);
	t = vcpu_new(vm, 1, MODE_LONG64, TOUCH_CODE, GUEST_STACK);
	if (run_expect_exit(t, KVM_EXIT_HLT))
		guest_die("the vCPU touching the guest's pages did not halt");
	vcpu_free(t);
}

#define ADDR(block, label)	guest_addr(block, label, GUEST_CODE)

#define SKIP_WITHOUT_GUEST_DEBUG()						\
	do {									\
		if (xioctl(self->vm->sys, KVM_CHECK_EXTENSION,			\
			   KVM_CAP_SET_GUEST_DEBUG) <= 0)			\
			SKIP(return, "%s does not report KVM_CAP_SET_GUEST_DEBUG", \
			     rkvm_dev_path());					\
	} while (0)

static bool host_is_amd(void)
{
	unsigned int eax, ebx, ecx, edx;

	__cpuid(0, eax, ebx, ecx, edx);
	return ebx == 0x68747541;	/* "Auth" */
}

/*
 * QEMU's TCG checks INT3 only against SVM's INTn intercept, never against
 * the #BP exception intercept that KVM_GUESTDBG_USE_SW_BP sets, so under
 * QEMU-SVM an INT3 reaches the guest's own #BP handler whatever the
 * hypervisor does (stock kvm_amd as well): the tests that need the #BP
 * exit skip when, on AMD, they get the handler's OUT to @handler_port instead.
 */
#define SKIP_IF_INT3_NOT_INTERCEPTED(v, handler_port)			\
	do {									\
		if ((v)->run->exit_reason == KVM_EXIT_IO &&			\
		    (v)->run->io.port == (handler_port) && host_is_amd())	\
			SKIP(return, "INT3 is not intercepted as #BP by this "	\
			     "CPU's SVM (QEMU TCG checks only the INTn intercept)"); \
	} while (0)

/* KVM_SET_GUEST_DEBUG with @control and, if @dr, debugreg[0..7]: 0 or -errno. */
static long set_debug(struct vcpu *v, uint32_t control, const uint64_t *dr)
{
	struct kvm_guest_debug dbg = { .control = control };

	if (dr)
		memcpy(dbg.arch.debugreg, dr, sizeof(dbg.arch.debugreg));
	return xioctl(v->fd, KVM_SET_GUEST_DEBUG, (unsigned long)&dbg);
}

/* The pc of the last KVM_EXIT_DEBUG check_debug() accepted. */
static uint64_t last_stop = -1ULL;

/*
 * Checks that the current exit is KVM_EXIT_DEBUG for @exception at @pc,
 * and for a #DB that DR6 has all of @dr6_bits: 0, else -1 with a message.
 */
static int check_debug(struct vcpu *v, uint32_t exception, uint64_t pc,
		       uint64_t dr6_bits)
{
	struct kvm_debug_exit_arch *d = &v->run->debug.arch;

	if (v->run->exit_reason == KVM_EXIT_DEBUG && d->exception == exception &&
	    d->pc == pc && (exception != 1 || (d->dr6 & dr6_bits) == dr6_bits)) {
		last_stop = pc;
		return 0;
	}
	fprintf(stderr, "# expected DEBUG exception %u pc %#llx dr6 bits %#llx\n",
		exception, (unsigned long long)pc, (unsigned long long)dr6_bits);
	print_exit(v, "got");
	return -1;
}

/*
 * KVM_RUN while single-stepping: the exit reason, or -errno. Bochs' VMX
 * keeps the single-step trap of an instruction that exits (CPUID, RDMSR,
 * I/O, MMIO) pending across the exit, and delivers it right at the next
 * entry, before anything ran: kvm_intel (and rkvm) then report a second
 * step at the pc of the last one. Real VMX and QEMU's SVM do not; on
 * Intel, one such repeat of the last stop is run past.
 */
static int run_step(struct vcpu *v)
{
	struct kvm_debug_exit_arch *d = &v->run->debug.arch;
	int r = run_until_exit(v);

	if (r == KVM_EXIT_DEBUG && d->exception == 1 && d->pc == last_stop &&
	    (d->dr6 & DR6_BS) && !host_is_amd()) {
		fprintf(stderr, "# a repeated stop at %#llx (Bochs' VMX), run past\n",
			(unsigned long long)last_stop);
		last_stop = -1ULL;
		r = run_until_exit(v);
	}
	return r;
}

/* One KVM_RUN that must be a single step ending at @pc. */
static int step_to(struct vcpu *v, uint64_t pc)
{
	if (run_step(v) < 0)
		return -1;
	return check_debug(v, 1, pc, DR6_BS);
}

/* One KVM_RUN that must end at an OUT to @port (any data). */
static int run_to_port(struct vcpu *v, uint8_t size, uint16_t port)
{
	return run_until_exit(v) < 0 ? -1 : check_io(v, OUT, size, port, 1);
}

/*
 * Loads @start..@end at GUEST_CODE, maps the guest's pages and creates
 * vCPU 0 in long mode there.
 */
static struct vcpu *debug_vcpu(struct vm *vm, const uint8_t *start,
			       const uint8_t *end)
{
	vm_load(vm, GUEST_CODE, start, end);
	touch_guest_pages(vm);
	return vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
}

/* Debugging off; the guest runs to its final OUT and HLT: 0 or -1. */
static int run_free_to_end(struct vcpu *v)
{
	if (set_debug(v, 0, NULL))
		return -1;
	if (run_to_port(v, 1, PORT_DONE))
		return -1;
	return run_expect_exit(v, KVM_EXIT_HLT);
}

static uint64_t rflags(struct vcpu *v)
{
	struct kvm_regs regs;

	vcpu_get_regs(v, &regs);
	return regs.rflags;
}

TEST_F(guest, caps)
{
	long r;

	SKIP_WITHOUT_GUEST_DEBUG();
	EXPECT_LT(0, xioctl(self->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG))
		TH_LOG("on the VM fd too");
	EXPECT_LT(0, xioctl(self->vm->sys, KVM_CHECK_EXTENSION,
			    KVM_CAP_X86_ROBUST_SINGLESTEP));
	r = xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2);
	TH_LOG("KVM_CAP_SET_GUEST_DEBUG2: %#lx", r);
	EXPECT_EQ(CTRL_ALL, r & CTRL_ALL) TH_LOG("missing flags %#lx", CTRL_ALL & ~r);
	EXPECT_EQ(r, xioctl(self->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2));
}

TEST_F(guest, single_step_plain_instructions)
{
	const uint64_t after[] = {
		ADDR(plain_guest, p_mov), ADDR(plain_guest, p_xor),
		ADDR(plain_guest, p_lea), ADDR(plain_guest, p_add),
		ADDR(plain_guest, p_end),
	};
	const unsigned int len[] = { 1, 5, 2, 4, 4 };
	uint64_t prev = GUEST_CODE;
	struct kvm_regs regs;
	struct vcpu *v;
	unsigned int i;

	SKIP_WITHOUT_GUEST_DEBUG();
	v = debug_vcpu(self->vm, plain_guest, plain_guest_end);
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	EXPECT_EQ(0, rflags(v) & RFLAGS_TF) TH_LOG("the debugger's TF is hidden");
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(len[i], after[i] - prev) TH_LOG("instruction %u's length", i);
		ASSERT_EQ(0, step_to(v, after[i])) TH_LOG("step %u", i);
		vcpu_get_regs(v, &regs);
		EXPECT_EQ(after[i], regs.rip);
		EXPECT_EQ(0, regs.rflags & RFLAGS_TF) TH_LOG("step %u: TF shows", i);
		prev = after[i];
	}
	EXPECT_EQ(0x12345688, regs.rdx) TH_LOG("the LEA ran once");
	EXPECT_EQ(0x7f, regs.rcx) TH_LOG("the ADD ran once");
	/* Debugging off: the guest runs to its end. */
	ASSERT_EQ(0, run_free_to_end(v));
	EXPECT_EQ(0, rflags(v) & RFLAGS_TF) TH_LOG("no TF left behind");
	vcpu_free(v);
}

TEST_F(guest, robust_single_step_over_emulated_instructions)
{
	struct kvm_regs regs;
	struct vcpu *v;

	SKIP_WITHOUT_GUEST_DEBUG();
	v = debug_vcpu(self->vm, emul_guest, emul_guest_end);
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_cpuid)));
	/* CPUID: one step, right after it; the MOV after it not yet run. */
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_after_cpuid))) TH_LOG("CPUID");
	vcpu_get_regs(v, &regs);
	EXPECT_NE(0, regs.rax) TH_LOG("CPUID(0) ran: the highest basic leaf");
	EXPECT_NE(0, regs.rbx) TH_LOG("CPUID(0) ran: the vendor");
	EXPECT_EQ(0, regs.rsi) TH_LOG("the instruction after CPUID did not run");
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_ecx)));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x77, regs.rsi);
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_rdmsr)));
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_after_rdmsr))) TH_LOG("RDMSR");
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x77, regs.rsi) TH_LOG("the instruction after RDMSR did not run");
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_wrmsr)));
	/* WRMSR of the value RDMSR read (EDX:EAX). */
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_after_wrmsr))) TH_LOG("WRMSR");
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x78, regs.rsi) TH_LOG("the instruction after WRMSR did not run");
	ASSERT_EQ(0, step_to(v, ADDR(emul_guest, e_end)));
	ASSERT_EQ(0, run_free_to_end(v));
	vcpu_free(v);
}

/*
 * KVM keeps the debugger's TF across an instruction its emulator ran
 * (MMIO) only if RIP is still where the last KVM_SET_GUEST_DEBUG found it
 * (x86.c's singlestep_rip), so a VMM re-arms single-stepping before each
 * step, as QEMU's gdbstub does; this test does so after each MMIO.
 */
TEST_F(guest, single_step_over_io_and_mmio)
{
	struct kvm_regs regs;
	struct vcpu *v;
	uint64_t pc;

	SKIP_WITHOUT_GUEST_DEBUG();
	v = debug_vcpu(self->vm, io_guest, io_guest_end);
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_al)));
	ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_out)));
	/* OUT: the exit to userspace first, the step once it is completed. */
	ASSERT_LE(0, run_step(v));
	ASSERT_EQ(0, check_io(v, OUT, 1, PORT_IO, 1));
	EXPECT_EQ(0x41, io_value(v));
	ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_in))) TH_LOG("after OUT");
	/* IN: likewise, and the value userspace gave is in AL. */
	ASSERT_LE(0, run_step(v));
	ASSERT_EQ(0, check_io(v, IN, 1, PORT_IO, 1));
	io_set_in(v, 0x5a);
	ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_write))) TH_LOG("after IN");
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x5a, regs.rax & 0xff) TH_LOG("IN's value landed in AL");
	/*
	 * MMIO write. Stock KVM completes it without going back to its
	 * emulator (a FIXME in x86.c's complete_emulated_mmio), so the step
	 * it reports ends one instruction late, after the NOP; the step
	 * ending right after the write is the architectural answer. Both are
	 * accepted; either way nothing is lost or run twice.
	 */
	ASSERT_LE(0, run_step(v));
	ASSERT_EQ(0, check_mmio(v, GUEST_MMIO, 4, true));
	EXPECT_EQ(0xabcd, mmio_value(v));
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	ASSERT_EQ(KVM_EXIT_DEBUG, run_step(v));
	pc = v->run->debug.arch.pc;
	TH_LOG("the step over the MMIO write ends at %s",
	       pc == ADDR(io_guest, io_after_write) ? "the next instruction" :
	       pc == ADDR(io_guest, io_read) ? "the one after (as stock KVM)" : "?");
	if (pc == ADDR(io_guest, io_after_write)) {
		ASSERT_EQ(0, check_debug(v, 1, pc, DR6_BS));
		ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
		ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_read)));
	} else {
		ASSERT_EQ(0, check_debug(v, 1, ADDR(io_guest, io_read), DR6_BS));
	}
	/* MMIO read: the step ends right after it, with the value in ECX. */
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	ASSERT_LE(0, run_step(v));
	ASSERT_EQ(0, check_mmio(v, GUEST_MMIO, 4, false));
	mmio_set_read(v, 0x12345678);
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_after_read))) TH_LOG("after the MMIO read");
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x12345678, regs.rcx);
	EXPECT_EQ(0, regs.rflags & RFLAGS_TF);
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	ASSERT_EQ(0, step_to(v, ADDR(io_guest, io_end)));
	ASSERT_EQ(0, run_free_to_end(v));
	vcpu_free(v);
}

TEST_F(guest, software_breakpoint)
{
	struct kvm_regs regs;
	struct vcpu *v;

	SKIP_WITHOUT_GUEST_DEBUG();
	vm_set_idt_gate64(self->vm, 3, ADDR(bp_guest, b_bp));
	v = debug_vcpu(self->vm, bp_guest, bp_guest_end);
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, NULL));
	ASSERT_LE(0, run_until_exit(v));
	SKIP_IF_INT3_NOT_INTERCEPTED(v, PORT_BP);
	ASSERT_EQ(0, check_debug(v, 3, ADDR(bp_guest, b_int3), 0));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(ADDR(bp_guest, b_int3), regs.rip) TH_LOG("RIP at the INT3");
	EXPECT_EQ(0, regs.rbx);
	/* The debugger moves past its breakpoint; the guest goes on. */
	regs.rip = ADDR(bp_guest, b_after_int3);
	vcpu_set_regs(v, &regs);
	ASSERT_EQ(0, run_to_port(v, 1, PORT_DONE));
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x1234, regs.rbx);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, hardware_breakpoints)
{
	volatile uint64_t *watched = gpa_ptr(self->vm, WATCHED);
	uint64_t dr[8] = { 0 };
	struct kvm_debugregs d;
	struct kvm_regs regs;
	struct vcpu *v;

	SKIP_WITHOUT_GUEST_DEBUG();
	v = debug_vcpu(self->vm, bp_guest, bp_guest_end);
	vcpu_get_regs(v, &regs);
	regs.rip = ADDR(bp_guest, b_after_int3);
	vcpu_set_regs(v, &regs);
	/* DR0: execute at b_insn; DR1: 8-byte write of WATCHED; L0, L1. */
	dr[0] = ADDR(bp_guest, b_insn);
	dr[1] = WATCHED;
	dr[7] = 0x400 | 0x1 | 0x4 | 1 << 20 | 3 << 22;
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, dr));
	/* The instruction breakpoint is a fault: before b_insn runs. */
	ASSERT_EQ(KVM_EXIT_DEBUG, run_until_exit(v));
	ASSERT_EQ(0, check_debug(v, 1, ADDR(bp_guest, b_insn), 1));
	EXPECT_EQ(0, v->run->debug.arch.dr6 & 2) TH_LOG("B1 not hit yet");
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x99, regs.rbx) TH_LOG("the instruction at the breakpoint did not run");
	/* The guest's own debug registers are not the debugger's. */
	ASSERT_EQ(0, xioctl(v->fd, KVM_GET_DEBUGREGS, (unsigned long)&d));
	EXPECT_EQ(0, d.db[0]);
	EXPECT_EQ(0x400, d.dr7);
	/* Re-entering as it is faults again at the same instruction. */
	ASSERT_EQ(KVM_EXIT_DEBUG, run_until_exit(v));
	ASSERT_EQ(0, check_debug(v, 1, ADDR(bp_guest, b_insn), 1));
	/* The data breakpoint alone: a trap, after the write. */
	dr[7] = 0x400 | 0x4 | 1 << 20 | 3 << 22;
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, dr));
	ASSERT_EQ(KVM_EXIT_DEBUG, run_until_exit(v));
	ASSERT_EQ(0, check_debug(v, 1, ADDR(bp_guest, b_after_write), 2));
	EXPECT_EQ(0x55, *watched) TH_LOG("a trap: the write is done");
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(0x1234, regs.rbx);
	ASSERT_EQ(0, run_free_to_end(v));
	vcpu_free(v);
}

/*
 * INJECT_BP re-injects the #BP the debugger caught (QEMU's gdbstub does
 * so for an INT3 that is not its own): KVM's VMX takes the INT3's length
 * from that exit, its SVM decodes the instruction at RIP, so only after a
 * #BP exit do both push the RIP after the INT3.
 */
TEST_F(guest, inject_db_and_bp)
{
	struct vcpu *v;

	SKIP_WITHOUT_GUEST_DEBUG();
	vm_set_idt_gate64(self->vm, 1, ADDR(inject_guest, j_db));
	vm_set_idt_gate64(self->vm, 3, ADDR(inject_guest, j_bp));
	v = debug_vcpu(self->vm, inject_guest, inject_guest_end);
	ASSERT_EQ(0, run_to_port(v, 1, PORT_DONE));
	/* #DB, a fault as injected: the handler returns to the INT3. */
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_DB, NULL));
	EXPECT_EQ(-EBUSY, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP, NULL))
		TH_LOG("an exception is already pending");
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, PORT_DB, ADDR(inject_guest, j_int3)));
	/* The debugger catches the INT3 ... */
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, NULL));
	ASSERT_LE(0, run_until_exit(v));
	SKIP_IF_INT3_NOT_INTERCEPTED(v, PORT_BP);
	ASSERT_EQ(0, check_debug(v, 3, ADDR(inject_guest, j_int3), 0));
	/* ... and hands it to the guest: its handler returns after the INT3. */
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_BP, NULL));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, PORT_BP, ADDR(inject_guest, j_after)));
	ASSERT_EQ(0, run_to_port(v, 1, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, guest_single_steps_itself)
{
	const uint64_t want[TF_STEPS] = {
		ADDR(tf_guest, t1), ADDR(tf_guest, t2), ADDR(tf_guest, t3),
		ADDR(tf_guest, t4),
	};
	const uint64_t *rips = gpa_ptr(self->vm, TF_RIP);
	const uint64_t *dr6 = gpa_ptr(self->vm, TF_DR6);
	struct kvm_regs regs;
	struct vcpu *v;
	int i;

	SKIP_WITHOUT_GUEST_DEBUG();
	vm_set_idt_gate64(self->vm, 1, ADDR(tf_guest, t_db));
	v = debug_vcpu(self->vm, tf_guest, tf_guest_end);
	ASSERT_EQ(0, run_to_port(v, 1, PORT_DONE));
	EXPECT_EQ(TF_STEPS, *(volatile uint32_t *)gpa_ptr(self->vm, TF_COUNT));
	for (i = 0; i < TF_STEPS; i++) {
		EXPECT_EQ(want[i], rips[i]) TH_LOG("step %d", i);
		EXPECT_EQ(DR6_BS, dr6[i] & (DR6_BS | 0xf))
			TH_LOG("step %d: DR6 %#llx", i, (unsigned long long)dr6[i]);
	}
	vcpu_get_regs(v, &regs);
	EXPECT_EQ(1, regs.rsi);
	EXPECT_EQ(0, regs.rflags & RFLAGS_TF);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

/*
 * BLOCKIRQ holds back events not yet injected: an NMI (KVM_NMI). (An
 * interrupt from KVM_INTERRUPT without an in-kernel irqchip counts as
 * already injected in KVM and is delivered regardless.)
 */
TEST_F(guest, blockirq_holds_back_an_nmi)
{
	struct kvm_vcpu_events ev;
	struct vcpu *v;
	int i;

	SKIP_WITHOUT_GUEST_DEBUG();
	vm_set_idt_gate64(self->vm, 2, ADDR(nmi_guest, q_nmi));
	v = debug_vcpu(self->vm, nmi_guest, nmi_guest_end);
	ASSERT_EQ(0, set_debug(v, CTRL_STEP | KVM_GUESTDBG_BLOCKIRQ, NULL));
	ASSERT_EQ(0, xioctl(v->fd, KVM_NMI, 0));
	ASSERT_EQ(0, step_to(v, ADDR(nmi_guest, q1)));
	ASSERT_EQ(0, step_to(v, ADDR(nmi_guest, q2)));
	ASSERT_EQ(0, step_to(v, ADDR(nmi_guest, q3)));
	ASSERT_EQ(0, xioctl(v->fd, KVM_GET_VCPU_EVENTS, (unsigned long)&ev));
	EXPECT_EQ(1, ev.nmi.pending) TH_LOG("the NMI still waits");
	EXPECT_EQ(0, ev.nmi.injected);
	/*
	 * Stepping without BLOCKIRQ: the NMI is delivered. Whether a step
	 * stops at the handler's first instruction before its OUT runs is
	 * left open; every stop must be inside the handler.
	 */
	ASSERT_EQ(0, set_debug(v, CTRL_STEP, NULL));
	for (i = 0; i < 3; i++) {
		ASSERT_LE(0, run_until_exit(v));
		if (v->run->exit_reason != KVM_EXIT_DEBUG)
			break;
		ASSERT_LE(ADDR(nmi_guest, q_nmi), v->run->debug.arch.pc);
		ASSERT_GT(ADDR(nmi_guest, q_nmi_end), v->run->debug.arch.pc);
	}
	ASSERT_EQ(0, check_io(v, OUT, 1, PORT_NMI, 1));
	ASSERT_EQ(0, run_free_to_end(v));
	vcpu_free(v);
}

TEST_F(guest, bad_input_and_disabling)
{
	struct vcpu *v;

	SKIP_WITHOUT_GUEST_DEBUG();
	v = debug_vcpu(self->vm, plain_guest, plain_guest_end);
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_SET_GUEST_DEBUG, 8));
	/*
	 * x86 KVM does not check control against the flags it supports
	 * (arm64's does): an unknown bit is accepted and ignored.
	 */
	ASSERT_EQ(0, set_debug(v, CTRL_STEP | 1u << 30, NULL));
	ASSERT_EQ(0, step_to(v, ADDR(plain_guest, p_mov)));
	/* Without ENABLE, all of control is ignored: the guest runs freely. */
	ASSERT_EQ(0, set_debug(v, KVM_GUESTDBG_SINGLESTEP | KVM_GUESTDBG_USE_SW_BP, NULL));
	ASSERT_EQ(0, run_to_port(v, 1, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_HARNESS_MAIN
