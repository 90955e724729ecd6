// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of interrupts injected by userspace, as a VMM without an
 * in-kernel irqchip drives them (KVM's x86 ABI):
 *
 *  - KVM_INTERRUPT: the vector is delivered through the guest's IDT at the
 *    next entry (a halted guest runs its handler and halts again); queued,
 *    it shows in KVM_GET_SREGS' interrupt_bitmap; a second call before the
 *    entry replaces the first, as in KVM; vectors past 255 are EINVAL;
 *  - KVM_SET_SREGS' interrupt_bitmap queues an interrupt the same way;
 *  - kvm_run's request_interrupt_window: with IF clear the guest runs on,
 *    and KVM_RUN returns KVM_EXIT_IRQ_WINDOW_OPEN at the first instruction
 *    boundary where it can take an interrupt: after STI and the
 *    instruction in its shadow; if_flag and ready_for_interrupt_injection
 *    say so at every exit;
 *  - an interrupt whose delivery faults (its stack frame goes to a page
 *    the guest never touched, so nested paging has no mapping yet) is
 *    delivered again after the fault is fixed, exactly once;
 *  - KVM_GET/SET_MP_STATE without an in-kernel irqchip: always runnable
 *    (HLT is the VMM's), and any other state refused with EINVAL;
 *  - KVM_NMI: delivered through IDT vector 2 whatever the guest's IF; an
 *    NMI sent while the handler of another runs waits for its IRET (the
 *    NMI window: SVM without vNMI intercepts the IRET and single-steps
 *    over it, VMX has virtual NMIs), never nesting; two sent at once are
 *    both delivered, one after the other, and a third merges with them;
 *  - KVM_GET/SET_VCPU_EVENTS: what is queued shows (an interrupt, pending
 *    NMIs), what is set goes in (an exception with its error code, an
 *    interrupt, an NMI), NMIs set blocked wait until set unblocked, the
 *    interrupt shadow round-trips; unknown flags, payloads and
 *    triple-fault events (their capabilities are off), exception vectors
 *    2 and past 31, and on rkvm SMM state and software interrupts, are
 *    EINVAL.
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
#define PORT_VECTOR	0x70	/* a handler: the vector it serves */
#define PORT_MARK	0x71	/* the guest reached a point of the test */
#define PORT_DONE	0x72
#define PORT_NMI_END	0x73	/* the NMI handler is about to IRET */
#define PORT_ERROR	0x75	/* the #GP handler: its error code */
#define VEC_A		0x30
#define VEC_B		0x31
#define FRESH_GPA	0x40000000UL	/* slot 1: never touched before */
#define FRESH_SIZE	0x10000UL

/*
 * Halts forever with interrupts on (off with R14 set); the handlers of
 * VEC_A, VEC_B and the NMI say which ran. With R15 set, the stack moves
 * there first.
 */
GUEST_CODE_BLOCK(halt_guest, ".code64",
	"test %r15, %r15\n"
	"jz 1f\n"
	"mov %r15, %rsp\n"
	"1: test %r14, %r14\n"
	"jnz 3f\n"
	"sti\n"
	"jmp 2f\n"
	"3: cli\n"
	"2: hlt\n"
	"jmp 2b\n"
	"handler_gp: push %rax\n"
	"mov 8(%rsp), %eax\n"
	"out %eax, $" XSTR(PORT_ERROR) "\n"
	"pop %rax\n"
	"add $8, %rsp\n"
	"iretq\n"
	"handler_nmi: push %rax\n"
	"mov $2, %al\n"
	"out %al, $" XSTR(PORT_VECTOR) "\n"
	"out %al, $" XSTR(PORT_NMI_END) "\n"
	"pop %rax\n"
	"iretq\n"
	"handler_a: push %rax\n"
	"mov $" XSTR(VEC_A) ", %al\n"
	"out %al, $" XSTR(PORT_VECTOR) "\n"
	"pop %rax\n"
	"iretq\n"
	"handler_b: push %rax\n"
	"mov $" XSTR(VEC_B) ", %al\n"
	"out %al, $" XSTR(PORT_VECTOR) "\n"
	"pop %rax\n"
	"iretq\n");
GUEST_LABEL(handler_a);
GUEST_LABEL(handler_b);
GUEST_LABEL(handler_nmi);
GUEST_LABEL(handler_gp);

/*
 * Interrupts off, a mark, then STI in the middle of NOPs: the window opens
 * at window_open (STI's shadow covers the NOP after it).
 */
GUEST_CODE_BLOCK(window_guest, ".code64",
	"cli\n"
	"out %al, $" XSTR(PORT_MARK) "\n"
	"nop\n"
	"nop\n"
	"sti\n"
	"nop\n"
	"window_open: out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n"
	"window_handler: push %rax\n"
	"mov $" XSTR(VEC_A) ", %al\n"
	"out %al, $" XSTR(PORT_VECTOR) "\n"
	"pop %rax\n"
	"iretq\n");
GUEST_LABEL(window_open);
GUEST_LABEL(window_handler);

static struct vcpu *halt_vcpu_if(struct vm *vm, uint64_t stack, bool if_off)
{
	struct kvm_regs regs;
	struct vcpu *v;

	vm_load(vm, GUEST_CODE, halt_guest, halt_guest_end);
	vm_set_idt_gate64(vm, VEC_A, guest_addr(halt_guest, handler_a, GUEST_CODE));
	vm_set_idt_gate64(vm, VEC_B, guest_addr(halt_guest, handler_b, GUEST_CODE));
	vm_set_idt_gate64(vm, 2, guest_addr(halt_guest, handler_nmi, GUEST_CODE));
	vm_set_idt_gate64(vm, 13, guest_addr(halt_guest, handler_gp, GUEST_CODE));
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	vcpu_get_regs(v, &regs);
	regs.r15 = stack;
	regs.r14 = if_off;
	vcpu_set_regs(v, &regs);
	return v;
}

static struct vcpu *halt_vcpu(struct vm *vm, uint64_t stack)
{
	return halt_vcpu_if(vm, stack, false);
}

/* One KVM_RUN that must end at an OUT to @port (any data). */
static int run_to_port(struct vcpu *v, uint16_t port)
{
	int r = run_until_exit(v);

	return r < 0 ? -1 : check_io(v, OUT, 1, port, 1);
}

static long interrupt(struct vcpu *v, uint32_t irq)
{
	struct kvm_interrupt i = { .irq = irq };

	return xioctl(v->fd, KVM_INTERRUPT, (unsigned long)&i);
}

/* The vector KVM_GET_SREGS reports in interrupt_bitmap, or -1. */
static int queued_vector(struct vcpu *v)
{
	struct kvm_sregs s;
	int i;

	vcpu_get_sregs(v, &s);
	for (i = 0; i < 256; i++)
		if (s.interrupt_bitmap[i / 64] >> (i % 64) & 1)
			return i;
	return -1;
}

TEST_F(guest, kvm_interrupt_is_delivered)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	EXPECT_EQ(1, v->run->if_flag);
	EXPECT_EQ(1, v->run->ready_for_interrupt_injection);
	EXPECT_EQ(-1, queued_vector(v));
	ASSERT_EQ(0, interrupt(v, VEC_A));
	EXPECT_EQ(VEC_A, queued_vector(v)) TH_LOG("queued, not yet delivered");
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_A));
	EXPECT_EQ(0, v->run->if_flag) TH_LOG("in the handler: IF clear");
	EXPECT_EQ(0, v->run->ready_for_interrupt_injection);
	EXPECT_EQ(-1, queued_vector(v));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	/* Again, with the other vector. */
	ASSERT_EQ(0, interrupt(v, VEC_B));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_B));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, second_kvm_interrupt_replaces_the_first)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, interrupt(v, VEC_A));
	ASSERT_EQ(0, interrupt(v, VEC_B));
	EXPECT_EQ(VEC_B, queued_vector(v));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_B));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT)) TH_LOG("VEC_A was dropped");
	vcpu_free(v);
}

TEST_F(guest, interrupt_bitmap_queues_an_interrupt)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	struct kvm_sregs s;

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_get_sregs(v, &s);
	s.interrupt_bitmap[VEC_B / 64] |= 1ULL << (VEC_B % 64);
	vcpu_set_sregs(v, &s);
	EXPECT_EQ(VEC_B, queued_vector(v));
	/* An empty bitmap leaves the queued interrupt be. */
	memset(s.interrupt_bitmap, 0, sizeof(s.interrupt_bitmap));
	vcpu_set_sregs(v, &s);
	EXPECT_EQ(VEC_B, queued_vector(v));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_B));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, interrupt_window_opens_after_sti_shadow)
{
	struct vcpu *v;

	vm_load(self->vm, GUEST_CODE, window_guest, window_guest_end);
	vm_set_idt_gate64(self->vm, VEC_A,
			  guest_addr(window_guest, window_handler, GUEST_CODE));
	v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(0, run_to_port(v, PORT_MARK));
	EXPECT_EQ(0, v->run->if_flag);
	EXPECT_EQ(0, v->run->ready_for_interrupt_injection);
	v->run->request_interrupt_window = 1;
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_IRQ_WINDOW_OPEN));
	EXPECT_EQ(guest_addr(window_guest, window_open, GUEST_CODE), vcpu_rip(v));
	EXPECT_EQ(1, v->run->if_flag);
	EXPECT_EQ(1, v->run->ready_for_interrupt_injection);
	/* Still asked for, and still open: the next KVM_RUN says so again. */
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_IRQ_WINDOW_OPEN));
	EXPECT_EQ(guest_addr(window_guest, window_open, GUEST_CODE), vcpu_rip(v));
	ASSERT_EQ(0, interrupt(v, VEC_A));
	v->run->request_interrupt_window = 0;
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_A));
	ASSERT_EQ(0, run_to_port(v, PORT_DONE));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, faulting_delivery_is_delivered_once)
{
	void *fresh = guest_alloc(FRESH_SIZE);
	struct vcpu *v;

	ASSERT_EQ(0, vm_set_region(self->vm, 1, 0, FRESH_GPA, FRESH_SIZE, fresh));
	/* The interrupt frame is the first guest access to slot 1. */
	v = halt_vcpu(self->vm, FRESH_GPA + FRESH_SIZE);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, interrupt(v, VEC_A));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_A));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT)) TH_LOG("delivered twice?");
	/* The frame is where the guest's RSP said: slot 1's last bytes. */
	EXPECT_NE(0, *(uint64_t *)((uint8_t *)fresh + FRESH_SIZE - 40));
	vcpu_free(v);
}

static long mp_state(struct vcpu *v, unsigned long cmd, uint32_t *state)
{
	return xioctl(v->fd, cmd, (unsigned long)state);
}

TEST_F(guest, mp_state_without_irqchip)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	uint32_t s = 0xff;

	ASSERT_EQ(1, xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_MP_STATE));
	ASSERT_EQ(0, mp_state(v, KVM_GET_MP_STATE, &s));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, s);
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	s = 0xff;
	ASSERT_EQ(0, mp_state(v, KVM_GET_MP_STATE, &s));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, s) TH_LOG("HLT is the VMM's business");
	s = KVM_MP_STATE_RUNNABLE;
	EXPECT_EQ(0, mp_state(v, KVM_SET_MP_STATE, &s));
	s = KVM_MP_STATE_HALTED;
	EXPECT_EQ(-EINVAL, mp_state(v, KVM_SET_MP_STATE, &s));
	s = KVM_MP_STATE_UNINITIALIZED;
	EXPECT_EQ(-EINVAL, mp_state(v, KVM_SET_MP_STATE, &s));
	s = 1000;
	EXPECT_EQ(-EINVAL, mp_state(v, KVM_SET_MP_STATE, &s));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_GET_MP_STATE, 8));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_SET_MP_STATE, 8));
	/* Still runnable, and it runs. */
	ASSERT_EQ(0, interrupt(v, VEC_A));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_A));
	vcpu_free(v);
}

static long nmi(struct vcpu *v)
{
	return xioctl(v->fd, KVM_NMI, 0);
}

/* One NMI handler run: its entry, then its end (one KVM_RUN each). */
static int nmi_handler_runs(struct vcpu *v)
{
	if (run_expect_io(v, OUT, 1, PORT_VECTOR, 2))
		return -1;
	return run_to_port(v, PORT_NMI_END);
}

TEST_F(guest, kvm_nmi_is_delivered_with_if_clear)
{
	struct vcpu *v = halt_vcpu_if(self->vm, 0, true);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	EXPECT_EQ(0, v->run->if_flag);
	ASSERT_EQ(0, nmi(v));
	ASSERT_EQ(0, nmi_handler_runs(v));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, nmi_waits_for_the_handlers_iret)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, nmi(v));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, 2));
	/* In the handler: NMIs are blocked, the second waits. */
	ASSERT_EQ(0, nmi(v));
	ASSERT_EQ(0, run_to_port(v, PORT_NMI_END)) TH_LOG("the handler was not interrupted");
	/* Its IRET opens the window: the second goes in at once. */
	ASSERT_EQ(0, nmi_handler_runs(v));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT)) TH_LOG("one NMI each");
	vcpu_free(v);
}

TEST_F(guest, two_nmis_at_once_a_third_merges)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	ASSERT_EQ(0, nmi(v));
	ASSERT_EQ(0, nmi(v));
	ASSERT_EQ(0, nmi(v));
	ASSERT_EQ(0, nmi_handler_runs(v));
	ASSERT_EQ(0, nmi_handler_runs(v));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT)) TH_LOG("the third merged");
	vcpu_free(v);
}

static struct kvm_vcpu_events get_events(struct vcpu *v)
{
	struct kvm_vcpu_events e;

	memset(&e, 0xcc, sizeof(e));
	if (xioctl(v->fd, KVM_GET_VCPU_EVENTS, (unsigned long)&e))
		memset(&e, 0xee, sizeof(e));
	return e;
}

static long set_events(struct vcpu *v, struct kvm_vcpu_events *e)
{
	return xioctl(v->fd, KVM_SET_VCPU_EVENTS, (unsigned long)e);
}

#define REPORTED_FLAGS \
	(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM)

TEST_F(guest, vcpu_events_report_what_is_queued)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	struct kvm_vcpu_events e;

	ASSERT_EQ(1, xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_VCPU_EVENTS));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	e = get_events(v);
	EXPECT_EQ(REPORTED_FLAGS, e.flags);
	EXPECT_EQ(0, e.exception.injected);
	EXPECT_EQ(0, e.interrupt.injected);
	EXPECT_EQ(0, e.interrupt.shadow) TH_LOG("RIP moved past the HLT");
	EXPECT_EQ(0, e.nmi.injected);
	EXPECT_EQ(0, e.nmi.pending);
	EXPECT_EQ(0, e.nmi.masked);
	ASSERT_EQ(0, interrupt(v, VEC_A));
	ASSERT_EQ(0, nmi(v));
	e = get_events(v);
	EXPECT_EQ(1, e.interrupt.injected);
	EXPECT_EQ(VEC_A, e.interrupt.nr);
	EXPECT_EQ(0, e.interrupt.soft);
	EXPECT_EQ(1, e.nmi.pending);
	EXPECT_EQ(0, e.nmi.injected);
	vcpu_free(v);
}

TEST_F(guest, vcpu_events_set_what_goes_in)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	struct kvm_vcpu_events e;

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	/* An exception with its error code. */
	e = get_events(v);
	e.exception.injected = 1;
	e.exception.nr = 13;
	e.exception.has_error_code = 1;
	e.exception.error_code = 0x1234;
	ASSERT_EQ(0, set_events(v, &e));
	e = get_events(v);
	EXPECT_EQ(1, e.exception.injected);
	EXPECT_EQ(13, e.exception.nr);
	EXPECT_EQ(0x1234, e.exception.error_code);
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, PORT_ERROR, 0x1234));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	/* An interrupt. */
	e = get_events(v);
	EXPECT_EQ(0, e.exception.injected) TH_LOG("delivered");
	e.interrupt.injected = 1;
	e.interrupt.nr = VEC_B;
	ASSERT_EQ(0, set_events(v, &e));
	EXPECT_EQ(VEC_B, queued_vector(v));
	ASSERT_EQ(0, run_expect_io(v, OUT, 1, PORT_VECTOR, VEC_B));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	/* An NMI. */
	e = get_events(v);
	e.nmi.injected = 1;
	ASSERT_EQ(0, set_events(v, &e));
	ASSERT_EQ(0, nmi_handler_runs(v));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	vcpu_free(v);
}

TEST_F(guest, vcpu_events_nmi_blocked_until_unblocked)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	struct kvm_vcpu_events e;

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	e = get_events(v);
	e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING;
	e.nmi.pending = 1;
	e.nmi.masked = 1;
	ASSERT_EQ(0, set_events(v, &e));
	/* No handler runs (nothing will IRET): the NMI waits. */
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	e = get_events(v);
	EXPECT_EQ(1, e.nmi.pending);
	EXPECT_EQ(1, e.nmi.masked);
	e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING;
	e.nmi.masked = 0;
	ASSERT_EQ(0, set_events(v, &e));
	ASSERT_EQ(0, nmi_handler_runs(v));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	e = get_events(v);
	EXPECT_EQ(0, e.nmi.pending);
	vcpu_free(v);
}

TEST_F(guest, vcpu_events_shadow_round_trip)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	struct kvm_vcpu_events e;

	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	e = get_events(v);
	e.flags = KVM_VCPUEVENT_VALID_SHADOW;
	e.interrupt.shadow = KVM_X86_SHADOW_INT_STI;
	ASSERT_EQ(0, set_events(v, &e));
	e = get_events(v);
	/* SVM has one shadow bit: KVM reports both kinds there. */
	EXPECT_NE(0, e.interrupt.shadow & KVM_X86_SHADOW_INT_STI);
	e.interrupt.shadow = 0;
	ASSERT_EQ(0, set_events(v, &e));
	EXPECT_EQ(0, get_events(v).interrupt.shadow);
	/* Without the flag the shadow is left as it is. */
	e.flags = 0;
	e.interrupt.shadow = KVM_X86_SHADOW_INT_MOV_SS;
	ASSERT_EQ(0, set_events(v, &e));
	EXPECT_EQ(0, get_events(v).interrupt.shadow);
	vcpu_free(v);
}

TEST_F(guest, vcpu_events_bad_input)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);
	struct kvm_vcpu_events e, good = get_events(v);
	bool rkvm = strcmp(rkvm_dev_path(), "/dev/kvm");

	e = good;
	e.flags |= 1 << 6;
	EXPECT_EQ(-EINVAL, set_events(v, &e)) TH_LOG("an unknown flag");
	e = good;
	e.flags |= KVM_VCPUEVENT_VALID_PAYLOAD;
	EXPECT_EQ(-EINVAL, set_events(v, &e)) TH_LOG("payloads are not enabled");
	e = good;
	e.flags |= KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
	EXPECT_EQ(-EINVAL, set_events(v, &e)) TH_LOG("triple-fault events are not enabled");
	e = good;
	e.exception.injected = 1;
	e.exception.nr = 2;
	EXPECT_EQ(-EINVAL, set_events(v, &e)) TH_LOG("the NMI is no exception");
	e.exception.nr = 32;
	EXPECT_EQ(-EINVAL, set_events(v, &e));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_SET_VCPU_EVENTS, 8));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_GET_VCPU_EVENTS, 8));
	if (xioctl(self->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_X86_SMM) <= 0) {
		e = good;
		e.smi.smm = 1;
		EXPECT_EQ(-EINVAL, set_events(v, &e)) TH_LOG("no SMM");
	}
	if (rkvm) {
		/* The structure has no instruction length to deliver it with. */
		e = good;
		e.interrupt.injected = 1;
		e.interrupt.soft = 1;
		EXPECT_EQ(-EINVAL, set_events(v, &e));
	}
	/* Nothing refused changed anything. */
	e = get_events(v);
	EXPECT_EQ(0, memcmp(&e, &good, sizeof(e)));
	vcpu_free(v);
}

TEST_F(guest, bad_input)
{
	struct vcpu *v = halt_vcpu(self->vm, 0);

	EXPECT_EQ(-EINVAL, interrupt(v, 256));
	EXPECT_EQ(-EINVAL, interrupt(v, 0xffffffff));
	EXPECT_EQ(-EFAULT, xioctl(v->fd, KVM_INTERRUPT, 8));
	EXPECT_EQ(-1, queued_vector(v)) TH_LOG("refused calls queue nothing");
	vcpu_free(v);
}

TEST_HARNESS_MAIN
