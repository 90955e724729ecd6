// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of KVM's eventfd interfaces, written against stock KVM:
 *
 *  - KVM_IOEVENTFD: a guest write to a port or an MMIO address that
 *    matches an assignment (address, length, optionally the value)
 *    signals an eventfd in the kernel instead of exiting to userspace;
 *    everything that does not match (reads, other lengths, other values)
 *    still exits as ordinary I/O or MMIO. Assignment and deassignment
 *    with KVM's errnos.
 *  - KVM_IRQFD: writing an eventfd injects the interrupt its GSI is
 *    routed to (here: an MSI route of the split irqchip to vCPU 0's local
 *    APIC), without the vCPU leaving KVM_RUN; together with an ioeventfd
 *    a doorbell/interrupt loop that never enters userspace on the vCPU's
 *    thread. Assignment rules, routing changes, closing the eventfd, VM
 *    teardown with irqfds assigned.
 *
 * Every test skips when the device reports its capability 0
 * (KVM_CAP_IOEVENTFD, KVM_CAP_IOEVENTFD_ANY_LENGTH, KVM_CAP_IRQFD with
 * KVM_CAP_SPLIT_IRQCHIP and KVM_CAP_IRQ_ROUTING). The eventfds are
 * non-blocking: a read that finds the counter 0 is EAGAIN, counted as 0.
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"

#define IOAPIC_PINS	24	/* what QEMU reserves for its IOAPIC */
#define MAX_ROUTES	4096	/* KVM_MAX_IRQ_ROUTES */

#define PORT_DONE	0xf0	/* the guest finished a phase */
#define PORT_DOOR	0xf4	/* ping_pong's doorbell */
#define PORT_A		0x1000	/* doorbell ports of the ioeventfd tests */
#define PORT_B		0x1010
#define MMIO_A		GUEST_MMIO
#define MMIO_B		(GUEST_MMIO + 0x1000)

#define APIC_GPA	0xfee00000
#define A_EOI		0xb0
#define A_SVR		0xf0

/* Guest data (slot 0). */
#define D_COUNT_A	0x20000	/* interrupts of VEC_A handled */
#define D_COUNT_B	0x20004	/* interrupts of VEC_B handled */
#define D_READY		0x20008	/* the APIC is enabled, IF set */

#define VEC_A		0x41
#define VEC_B		0x42
#define GSI		40	/* past the IOAPIC's pins: an edge MSI, no EOI exits */

#define RUN_MS		20000	/* a vCPU thread's deadline */

static bool have(long cap)
{
	return rkvm_dev_check_extension(cap) > 0;
}

static int new_eventfd(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	if (fd < 0)
		guest_die("eventfd: %s", strerror(errno));
	return fd;
}

/* Reads and resets the counter: its value, 0 if it was 0, -errno else. */
static int64_t efd_take(int fd)
{
	uint64_t n;

	if (read(fd, &n, sizeof(n)) == sizeof(n))
		return (int64_t)n;
	return errno == EAGAIN ? 0 : -errno;
}

static void efd_signal(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) != sizeof(one))
		guest_die("eventfd write: %s", strerror(errno));
}

static long ioeventfd(struct vm *vm, int fd, uint64_t addr, uint32_t len,
		      uint32_t flags, uint64_t datamatch)
{
	struct kvm_ioeventfd a = {
		.datamatch = datamatch, .addr = addr, .len = len, .fd = fd,
		.flags = flags,
	};

	return xioctl(vm->fd, KVM_IOEVENTFD, (unsigned long)&a);
}

static long irqfd(struct vm *vm, int fd, uint32_t gsi, uint32_t flags, int resamplefd)
{
	struct kvm_irqfd a = {
		.fd = fd, .gsi = gsi, .flags = flags, .resamplefd = resamplefd,
	};

	return xioctl(vm->fd, KVM_IRQFD, (unsigned long)&a);
}

#define PIO		KVM_IOEVENTFD_FLAG_PIO
#define DATAMATCH	KVM_IOEVENTFD_FLAG_DATAMATCH
#define DEASSIGN	KVM_IOEVENTFD_FLAG_DEASSIGN

/* ---- ioeventfd: a guest that writes (or reads) one place N times. ---- */

/*
 * Entered at one of its labels with R8 = N (at least 1), R9 = the port
 * or address, R10 = the value; does N accesses of one kind and width,
 * then OUT to PORT_DONE (the end of a phase) and halts.
 */
GUEST_CODE_BLOCK(door_guest, ".code64",
	"door_pio1: mov %r9d, %edx\n"
	"mov %r10, %rax\n"
	"1: out %al, %dx\n"
	"dec %r8\n"
	"jnz 1b\n"
	"jmp door_done\n"
	"door_pio2: mov %r9d, %edx\n"
	"mov %r10, %rax\n"
	"2: out %ax, %dx\n"
	"dec %r8\n"
	"jnz 2b\n"
	"jmp door_done\n"
	"door_pio4: mov %r9d, %edx\n"
	"mov %r10, %rax\n"
	"3: out %eax, %dx\n"
	"dec %r8\n"
	"jnz 3b\n"
	"jmp door_done\n"
	"door_mmio1: mov %r10, %rax\n"
	"4: mov %al, (%r9)\n"
	"dec %r8\n"
	"jnz 4b\n"
	"jmp door_done\n"
	"door_mmio2: mov %r10, %rax\n"
	"5: mov %ax, (%r9)\n"
	"dec %r8\n"
	"jnz 5b\n"
	"jmp door_done\n"
	"door_mmio4: mov %r10, %rax\n"
	"6: mov %eax, (%r9)\n"
	"dec %r8\n"
	"jnz 6b\n"
	"jmp door_done\n"
	"door_mmio8: mov %r10, %rax\n"
	"7: mov %rax, (%r9)\n"
	"dec %r8\n"
	"jnz 7b\n"
	"jmp door_done\n"
	"door_read1: 8: mov (%r9), %al\n"
	"dec %r8\n"
	"jnz 8b\n"
	"jmp door_done\n"
	"door_read2: 9: mov (%r9), %ax\n"
	"dec %r8\n"
	"jnz 9b\n"
	"jmp door_done\n"
	"door_read4: 10: mov (%r9), %eax\n"
	"dec %r8\n"
	"jnz 10b\n"
	"jmp door_done\n"
	"door_read8: 11: mov (%r9), %rax\n"
	"dec %r8\n"
	"jnz 11b\n"
	"jmp door_done\n"
	"door_in1: mov %r9d, %edx\n"
	"12: in %dx, %al\n"
	"dec %r8\n"
	"jnz 12b\n"
	"door_done: out %al, $" XSTR(PORT_DONE) "\n"
	"hlt\n");
GUEST_LABEL(door_pio1);
GUEST_LABEL(door_pio2);
GUEST_LABEL(door_pio4);
GUEST_LABEL(door_mmio1);
GUEST_LABEL(door_mmio2);
GUEST_LABEL(door_mmio4);
GUEST_LABEL(door_mmio8);
GUEST_LABEL(door_read1);
GUEST_LABEL(door_read2);
GUEST_LABEL(door_read4);
GUEST_LABEL(door_read8);
GUEST_LABEL(door_in1);

/* The entry for a port write, MMIO write or MMIO read of @len bytes. */
static const uint8_t *pio_entry(int len)
{
	return len == 1 ? door_pio1 : len == 2 ? door_pio2 : door_pio4;
}

static const uint8_t *mmio_entry(int len)
{
	return len == 1 ? door_mmio1 : len == 2 ? door_mmio2 :
	       len == 4 ? door_mmio4 : door_mmio8;
}

static const uint8_t *read_entry(int len)
{
	return len == 1 ? door_read1 : len == 2 ? door_read2 :
	       len == 4 ? door_read4 : door_read8;
}

/* What the VMM saw of one phase. */
struct phase {
	int runs;		/* KVM_RUN calls that returned */
	int io;			/* OUT/IN exits at the phase's port */
	int mmio_w;		/* MMIO write exits at the phase's address */
	int mmio_r;		/* MMIO read exits at the phase's address */
	int size;		/* the last such exit's width */
	uint64_t value;		/* and its data (writes) */
	bool done;		/* ended at PORT_DONE */
	bool other;		/* an exit nobody asked for */
	char why[256];
};

/*
 * Runs @entry with R8..R10 = @n, @addr, @val until the guest's PORT_DONE
 * (at most @n + 4 exits), answering MMIO reads with 0.
 */
static void run_phase(struct vcpu *v, const uint8_t *entry, uint64_t n, uint64_t addr,
		      uint64_t val, struct phase *p)
{
	struct kvm_run *run = v->run;
	struct kvm_regs regs;
	uint64_t i;

	memset(p, 0, sizeof(*p));
	vcpu_get_regs(v, &regs);
	regs.rip = guest_addr(door_guest, entry, GUEST_CODE);
	regs.rsp = GUEST_STACK;
	regs.r8 = n;
	regs.r9 = addr;
	regs.r10 = val;
	regs.rflags = 0x202;
	vcpu_set_regs(v, &regs);
	for (i = 0; i < n + 4; i++) {
		int r = run_until_exit(v);

		if (r < 0) {
			snprintf(p->why, sizeof(p->why), "KVM_RUN: %s", strerror(-r));
			p->other = true;
			return;
		}
		p->runs++;
		if (r == KVM_EXIT_IO && run->io.port == PORT_DONE &&
		    run->io.direction == KVM_EXIT_IO_OUT) {
			p->done = true;
			return;
		}
		if (r == KVM_EXIT_IO && run->io.port == addr && run->io.count == 1) {
			p->io++;
			p->size = run->io.size;
			if (run->io.direction == KVM_EXIT_IO_OUT)
				p->value = io_value(v);
			else
				io_set_in(v, 0);
			continue;
		}
		if (r == KVM_EXIT_MMIO && run->mmio.phys_addr == addr) {
			p->size = run->mmio.len;
			if (run->mmio.is_write) {
				p->mmio_w++;
				p->value = mmio_value(v);
			} else {
				p->mmio_r++;
				mmio_set_read(v, 0);
			}
			continue;
		}
		p->other = true;
		describe_exit(v, p->why, sizeof(p->why));
		return;
	}
	p->other = true;
	snprintf(p->why, sizeof(p->why), "no PORT_DONE after %d exits", p->runs);
}

/*
 * The phase ended at PORT_DONE after exactly @exits exits of its own.
 * Statements, not one: a TH_LOG() after it goes with the last assert.
 */
#define ASSERT_PHASE(p, exits)							\
	ASSERT_FALSE((p).other) TH_LOG("%s", (p).why);				\
	ASSERT_TRUE((p).done);							\
	if ((p).runs != (exits) + 1)						\
		TH_LOG("exits: %d I/O, %d MMIO writes, %d MMIO reads",		\
		       (p).io, (p).mmio_w, (p).mmio_r);				\
	ASSERT_EQ((exits) + 1, (p).runs)

FIXTURE(ioev) {
	struct vm *vm;
	struct vcpu *v;
	int n;		/* doorbell writes per phase */
};

FIXTURE_SETUP(ioev)
{
	if (!have(KVM_CAP_IOEVENTFD))
		SKIP(return, "%s does not report KVM_CAP_IOEVENTFD", rkvm_dev_path());
	self->vm = vm_new(GUEST_MEM_SIZE);
	vm_load(self->vm, GUEST_CODE, door_guest, door_guest_end);
	self->v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	self->n = stress_iters(1000);
}

FIXTURE_TEARDOWN(ioev)
{
	vcpu_free(self->v);
	vm_free(self->vm);
}

/* ---- 1. Port doorbells. ---------------------------------------------- */

TEST_F(ioev, pio_doorbell)
{
	static const int lens[] = { 1, 2, 4 };
	struct phase p;
	int i, e = new_eventfd();

	for (i = 0; i < 3; i++) {
		int len = lens[i];

		ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, len, PIO, 0));
		run_phase(self->v, pio_entry(len), self->n, PORT_A, 0x5a5a5a5a, &p);
		ASSERT_PHASE(p, 0) TH_LOG("len %d: the doorbells never exit", len);
		EXPECT_EQ(self->n, efd_take(e)) TH_LOG("len %d: one signal per write", len);
		EXPECT_EQ(0, efd_take(e));
		/* Only the port itself: the one next to it exits. */
		run_phase(self->v, pio_entry(len), 3, PORT_A + 4, 0x11, &p);
		ASSERT_PHASE(p, 3);
		EXPECT_EQ(0, efd_take(e));
		/* A read of the port is no write: it exits. */
		if (len == 1) {
			run_phase(self->v, door_in1, 2, PORT_A, 0, &p);
			ASSERT_PHASE(p, 2);
			EXPECT_EQ(2, p.io);
			EXPECT_EQ(0, efd_take(e));
		}
		ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, len, PIO | DEASSIGN, 0));
	}
	close(e);
}

/* ---- 2. MMIO doorbells. ---------------------------------------------- */

TEST_F(ioev, mmio_doorbell)
{
	static const int lens[] = { 1, 2, 4, 8 };
	struct phase p;
	int i, e = new_eventfd();

	for (i = 0; i < 4; i++) {
		int len = lens[i];

		ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, len, 0, 0));
		run_phase(self->v, mmio_entry(len), self->n, MMIO_A,
			  0x0123456789abcdefull, &p);
		ASSERT_PHASE(p, 0) TH_LOG("len %d: the doorbells never exit", len);
		EXPECT_EQ(self->n, efd_take(e)) TH_LOG("len %d", len);
		/* Reads still exit to userspace as MMIO: ioeventfds are for writes. */
		run_phase(self->v, read_entry(len), 3, MMIO_A, 0, &p);
		ASSERT_PHASE(p, 3);
		EXPECT_EQ(3, p.mmio_r);
		EXPECT_EQ(len, p.size);
		EXPECT_EQ(0, efd_take(e)) TH_LOG("len %d: a read signals nothing", len);
		ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, len, DEASSIGN, 0));
	}
	close(e);
}

/* ---- 3. Datamatch. ---------------------------------------------------- */

TEST_F(ioev, datamatch)
{
	struct phase p;
	int e = new_eventfd();

	/* A port: only writes of the value signal; the others exit with their data. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 2, PIO | DATAMATCH, 0x1234));
	run_phase(self->v, door_pio2, self->n, PORT_A, 0x1234, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(self->n, efd_take(e));
	run_phase(self->v, door_pio2, 5, PORT_A, 0x4321, &p);
	ASSERT_PHASE(p, 5);
	EXPECT_EQ(5, p.io);
	EXPECT_EQ(2, p.size);
	EXPECT_EQ(0x4321, p.value);
	EXPECT_EQ(0, efd_take(e));

	/* MMIO, 4 bytes. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, 4, DATAMATCH, 0xdeadbeef));
	run_phase(self->v, door_mmio4, self->n, MMIO_A, 0xdeadbeef, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(self->n, efd_take(e));
	run_phase(self->v, door_mmio4, 5, MMIO_A, 0xdeadbeee, &p);
	ASSERT_PHASE(p, 5);
	EXPECT_EQ(5, p.mmio_w);
	EXPECT_EQ(0xdeadbeee, p.value);
	EXPECT_EQ(0, efd_take(e));

	/* 8 bytes: all 64 bits are compared. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_B, 8, DATAMATCH, 0x1122334455667788ull));
	run_phase(self->v, door_mmio8, 3, MMIO_B, 0x1122334455667788ull, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(3, efd_take(e));
	run_phase(self->v, door_mmio8, 3, MMIO_B, 0x0122334455667788ull, &p);
	ASSERT_PHASE(p, 3);
	EXPECT_EQ(3, p.mmio_w);
	EXPECT_EQ(0x0122334455667788ull, p.value);
	EXPECT_EQ(0, efd_take(e));
	/* A 1-byte datamatch compares the byte written. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_B, 1, PIO | DATAMATCH, 0x80));
	run_phase(self->v, door_pio1, 4, PORT_B, 0x80, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(4, efd_take(e));
	close(e);
}

/* ---- 4. Any length. --------------------------------------------------- */

TEST_F(ioev, any_length)
{
	static const int lens[] = { 1, 2, 4, 8 };
	struct phase p;
	int i, e = new_eventfd();

	if (!have(KVM_CAP_IOEVENTFD_ANY_LENGTH))
		SKIP(return, "no KVM_CAP_IOEVENTFD_ANY_LENGTH");
	/* Length 0 cannot be combined with a datamatch. */
	EXPECT_EQ(-EINVAL, ioeventfd(self->vm, e, MMIO_A, 0, DATAMATCH, 1));
	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, 0, 0, 0));
	for (i = 0; i < 4; i++) {
		run_phase(self->v, mmio_entry(lens[i]), self->n, MMIO_A, 0x77, &p);
		ASSERT_PHASE(p, 0) TH_LOG("len %d", lens[i]);
		EXPECT_EQ(self->n, efd_take(e)) TH_LOG("len %d", lens[i]);
	}
	/* The address must be exact. */
	run_phase(self->v, door_mmio1, 3, MMIO_A + 1, 0x77, &p);
	ASSERT_PHASE(p, 3);
	EXPECT_EQ(0, efd_take(e));
	/* Length 0 collides with every length at the address. */
	EXPECT_EQ(-EEXIST, ioeventfd(self->vm, e, MMIO_A, 4, 0, 0));
	EXPECT_EQ(-EEXIST, ioeventfd(self->vm, e, MMIO_A, 4, DATAMATCH, 3));
	EXPECT_EQ(-EEXIST, ioeventfd(self->vm, e, MMIO_A, 0, 0, 0));
	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, 0, DEASSIGN, 0));
	ASSERT_EQ(-ENOENT, ioeventfd(self->vm, e, MMIO_A, 0, DEASSIGN, 0));
	run_phase(self->v, door_mmio4, 2, MMIO_A, 0x77, &p);
	ASSERT_PHASE(p, 2) TH_LOG("deassigned: the writes exit again");

	/* On the port bus too. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 0, PIO, 0));
	for (i = 0; i < 3; i++) {
		run_phase(self->v, pio_entry(lens[i]), self->n, PORT_A, 0x77, &p);
		ASSERT_PHASE(p, 0) TH_LOG("len %d", lens[i]);
		EXPECT_EQ(self->n, efd_take(e)) TH_LOG("len %d", lens[i]);
	}
	/* A length-4 one already there: length 0 collides with it. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_B, 4, PIO, 0));
	EXPECT_EQ(-EEXIST, ioeventfd(self->vm, e, PORT_B, 0, PIO, 0));
	close(e);
}

/* ---- 5. Lengths must match. ------------------------------------------- */

TEST_F(ioev, wrong_length)
{
	struct phase p;
	int e = new_eventfd();

	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 4, PIO, 0));
	run_phase(self->v, door_pio2, 3, PORT_A, 0x22, &p);
	ASSERT_PHASE(p, 3) TH_LOG("a 2-byte OUT to a 4-byte doorbell exits");
	EXPECT_EQ(2, p.size);
	run_phase(self->v, door_pio1, 3, PORT_A + 1, 0x22, &p);
	ASSERT_PHASE(p, 3) TH_LOG("a byte inside its range exits too");
	EXPECT_EQ(0, efd_take(e));
	run_phase(self->v, door_pio4, 3, PORT_A, 0x22, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(3, efd_take(e));

	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, 4, 0, 0));
	run_phase(self->v, door_mmio2, 3, MMIO_A, 0x22, &p);
	ASSERT_PHASE(p, 3);
	EXPECT_EQ(3, p.mmio_w);
	run_phase(self->v, door_mmio8, 3, MMIO_A, 0x22, &p);
	ASSERT_PHASE(p, 3) TH_LOG("and a wider one");
	EXPECT_EQ(8, p.size);
	run_phase(self->v, door_mmio1, 3, MMIO_A + 2, 0x22, &p);
	ASSERT_PHASE(p, 3);
	EXPECT_EQ(0, efd_take(e));
	run_phase(self->v, door_mmio4, 3, MMIO_A, 0x22, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(3, efd_take(e));
	close(e);
}

/* ---- 6. Assignment rules. --------------------------------------------- */

TEST_F(ioev, assign_rules)
{
	struct kvm_ioeventfd a = { .addr = PORT_B, .len = 1, .flags = PIO };
	int e = new_eventfd(), e2 = new_eventfd(), closed = new_eventfd();
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	struct vm *vm = self->vm;

	ASSERT_LE(0, null);
	close(closed);
	ASSERT_EQ(0, ioeventfd(vm, e, PORT_A, 1, PIO, 0));
	/* The same place again, with any eventfd, or a datamatch over a wildcard. */
	EXPECT_EQ(-EEXIST, ioeventfd(vm, e, PORT_A, 1, PIO, 0));
	EXPECT_EQ(-EEXIST, ioeventfd(vm, e2, PORT_A, 1, PIO, 0));
	EXPECT_EQ(-EEXIST, ioeventfd(vm, e2, PORT_A, 1, PIO | DATAMATCH, 7));
	/* Another length, another bus: no collision. */
	EXPECT_EQ(0, ioeventfd(vm, e2, PORT_A, 2, PIO, 0));
	EXPECT_EQ(0, ioeventfd(vm, e2, PORT_A, 1, 0, 0)) TH_LOG("MMIO address 0x1000");
	/* Two datamatches differ; the same one twice collides; a wildcard over them too. */
	EXPECT_EQ(0, ioeventfd(vm, e, MMIO_A, 4, DATAMATCH, 1));
	EXPECT_EQ(0, ioeventfd(vm, e2, MMIO_A, 4, DATAMATCH, 2));
	EXPECT_EQ(-EEXIST, ioeventfd(vm, e2, MMIO_A, 4, DATAMATCH, 1));
	EXPECT_EQ(-EEXIST, ioeventfd(vm, e2, MMIO_A, 4, 0, 0));

	/* Deassign must name exactly what was assigned. */
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, PORT_B, 1, PIO | DEASSIGN, 0)) TH_LOG("address");
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, PORT_A, 2, PIO | DEASSIGN, 0)) TH_LOG("length");
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, PORT_A, 1, DEASSIGN, 0)) TH_LOG("bus");
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, PORT_A, 1, PIO | DATAMATCH | DEASSIGN, 0))
		TH_LOG("datamatch against a wildcard");
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e2, PORT_A, 1, PIO | DEASSIGN, 0)) TH_LOG("eventfd");
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, MMIO_A, 4, DATAMATCH | DEASSIGN, 2))
		TH_LOG("another eventfd's value");
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, MMIO_A, 4, DEASSIGN, 0)) TH_LOG("wildcard");
	EXPECT_EQ(0, ioeventfd(vm, e, MMIO_A, 4, DATAMATCH | DEASSIGN, 1));
	EXPECT_EQ(-ENOENT, ioeventfd(vm, e, MMIO_A, 4, DATAMATCH | DEASSIGN, 1)) TH_LOG("twice");
	EXPECT_EQ(0, ioeventfd(vm, e2, MMIO_A, 4, DATAMATCH | DEASSIGN, 2));

	/* Lengths other than 0, 1, 2, 4, 8; unknown flags; a wrapping range. */
	EXPECT_EQ(-EINVAL, ioeventfd(vm, e, PORT_B, 3, PIO, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, e, PORT_B, 16, PIO, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, e, MMIO_B, 5, 0, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, e, MMIO_B, 4, 1u << 5, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, e, MMIO_B, 4, 1u << 31, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, e, ~0ull - 1, 4, 0, 0));
	/* Not an eventfd: EINVAL; no file: EBADF; the length is checked first. */
	EXPECT_EQ(-EINVAL, ioeventfd(vm, null, MMIO_B, 4, 0, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, vm->fd, MMIO_B, 4, 0, 0));
	EXPECT_EQ(-EBADF, ioeventfd(vm, -1, MMIO_B, 4, 0, 0));
	EXPECT_EQ(-EBADF, ioeventfd(vm, closed, MMIO_B, 4, 0, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, -1, MMIO_B, 3, 0, 0));
	EXPECT_EQ(-EINVAL, ioeventfd(vm, null, PORT_A, 1, PIO | DEASSIGN, 0));
	EXPECT_EQ(-EBADF, ioeventfd(vm, -1, PORT_A, 1, PIO | DEASSIGN, 0));
	EXPECT_EQ(-EFAULT, xioctl(vm->fd, KVM_IOEVENTFD, 8));
	/*
	 * Bit 4 (kvm_ioeventfd_flag_nr_fast_mmio in the UAPI enum) is inside
	 * KVM's mask of valid flags and changes nothing: an MMIO doorbell.
	 */
	EXPECT_EQ(0, ioeventfd(vm, e, MMIO_B, 4, 1u << 4, 0));
	EXPECT_EQ(-EEXIST, ioeventfd(vm, e, MMIO_B, 4, 0, 0));
	EXPECT_EQ(0, ioeventfd(vm, e, MMIO_B, 4, DEASSIGN, 0));
	/* KVM ignores the padding. */
	memset(a.pad, 0xff, sizeof(a.pad));
	a.fd = e;
	EXPECT_EQ(0, xioctl(vm->fd, KVM_IOEVENTFD, (unsigned long)&a));
	a.flags |= DEASSIGN;
	EXPECT_EQ(0, xioctl(vm->fd, KVM_IOEVENTFD, (unsigned long)&a));
	/* Nothing of the refused calls was assigned. */
	EXPECT_EQ(0, ioeventfd(vm, e, MMIO_B, 4, 0, 0));
	EXPECT_EQ(0, ioeventfd(vm, e, MMIO_B, 4, DEASSIGN, 0));
	close(null);
	close(e);
	close(e2);
}

TEST_F(ioev, deassign_restores_exits)
{
	struct phase p;
	int e = new_eventfd();

	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 1, PIO, 0));
	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, 8, 0, 0));
	run_phase(self->v, door_pio1, 10, PORT_A, 1, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_mmio8, 10, MMIO_A, 1, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(20, efd_take(e));
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 1, PIO | DEASSIGN, 0));
	ASSERT_EQ(0, ioeventfd(self->vm, e, MMIO_A, 8, DEASSIGN, 0));
	run_phase(self->v, door_pio1, 4, PORT_A, 0x31, &p);
	ASSERT_PHASE(p, 4);
	EXPECT_EQ(4, p.io);
	EXPECT_EQ(0x31, p.value);
	run_phase(self->v, door_mmio8, 4, MMIO_A, 0x32, &p);
	ASSERT_PHASE(p, 4);
	EXPECT_EQ(4, p.mmio_w);
	EXPECT_EQ(0x32, p.value);
	EXPECT_EQ(0, efd_take(e));
	/* And it can be assigned again. */
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 1, PIO, 0));
	run_phase(self->v, door_pio1, 10, PORT_A, 1, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(10, efd_take(e));
	close(e);
}

/*
 * KVM holds its own reference to the eventfd: closing the fd leaves the
 * assignment in place (the writes are still absorbed, the address still
 * taken) until the VM goes away, which frees it (kmemleak checks).
 */
TEST_F(ioev, closed_eventfd_stays_assigned)
{
	struct phase p;
	int e = new_eventfd(), e2 = new_eventfd();
	int d = dup(e);

	ASSERT_LE(0, d);
	ASSERT_EQ(0, ioeventfd(self->vm, e, PORT_A, 1, PIO, 0));
	ASSERT_EQ(0, ioeventfd(self->vm, e2, MMIO_A, 4, 0, 0));
	close(e);
	close(e2);
	run_phase(self->v, door_pio1, 10, PORT_A, 1, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_mmio4, 10, MMIO_A, 1, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(10, efd_take(d)) TH_LOG("the same eventfd through a dup");
	e = new_eventfd();
	EXPECT_EQ(-EEXIST, ioeventfd(self->vm, e, MMIO_A, 4, 0, 0));
	EXPECT_EQ(-ENOENT, ioeventfd(self->vm, e, MMIO_A, 4, DEASSIGN, 0));
	/* Through the dup it can still be deassigned: the eventfd is what counts. */
	EXPECT_EQ(0, ioeventfd(self->vm, d, PORT_A, 1, PIO | DEASSIGN, 0));
	run_phase(self->v, door_pio1, 2, PORT_A, 1, &p);
	ASSERT_PHASE(p, 2);
	close(e);
	close(d);
}

/* ---- 7. Several eventfds. ----------------------------------------------- */

TEST_F(ioev, multiple_eventfds)
{
	int e1 = new_eventfd(), e2 = new_eventfd(), e3 = new_eventfd();
	struct phase p;

	ASSERT_EQ(0, ioeventfd(self->vm, e1, PORT_A, 1, PIO, 0));
	ASSERT_EQ(0, ioeventfd(self->vm, e2, PORT_B, 1, PIO, 0));
	ASSERT_EQ(0, ioeventfd(self->vm, e3, MMIO_A, 4, 0, 0));
	/* One eventfd may serve several addresses. */
	ASSERT_EQ(0, ioeventfd(self->vm, e3, MMIO_B, 4, 0, 0));
	run_phase(self->v, door_pio1, 7, PORT_A, 1, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_pio1, 5, PORT_B, 1, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_mmio4, 3, MMIO_A, 1, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_mmio4, 4, MMIO_B, 1, &p);
	ASSERT_PHASE(p, 0);
	EXPECT_EQ(7, efd_take(e1));
	EXPECT_EQ(5, efd_take(e2));
	EXPECT_EQ(7, efd_take(e3));

	/* Two on one port with different values; a third value exits. */
	ASSERT_EQ(0, ioeventfd(self->vm, e1, PORT_A + 2, 2, PIO | DATAMATCH, 1));
	ASSERT_EQ(0, ioeventfd(self->vm, e2, PORT_A + 2, 2, PIO | DATAMATCH, 2));
	run_phase(self->v, door_pio2, 6, PORT_A + 2, 1, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_pio2, 9, PORT_A + 2, 2, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_pio2, 2, PORT_A + 2, 3, &p);
	ASSERT_PHASE(p, 2);
	EXPECT_EQ(3, p.value);
	EXPECT_EQ(6, efd_take(e1));
	EXPECT_EQ(9, efd_take(e2));
	/* The same on an MMIO address, 8 bytes. */
	ASSERT_EQ(0, ioeventfd(self->vm, e1, MMIO_B + 8, 8, DATAMATCH, 1ull << 40));
	ASSERT_EQ(0, ioeventfd(self->vm, e2, MMIO_B + 8, 8, DATAMATCH, 1ull << 41));
	run_phase(self->v, door_mmio8, 3, MMIO_B + 8, 1ull << 41, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_mmio8, 2, MMIO_B + 8, 1ull << 40, &p);
	ASSERT_PHASE(p, 0);
	run_phase(self->v, door_mmio8, 1, MMIO_B + 8, 0, &p);
	ASSERT_PHASE(p, 1);
	EXPECT_EQ(2, efd_take(e1));
	EXPECT_EQ(3, efd_take(e2));
	EXPECT_EQ(0, efd_take(e3));
	close(e1);
	close(e2);
	close(e3);
}

/* ---- irqfd: the split irqchip, GSI 40 an MSI to vCPU 0. ----------------- */

#define SVR_ON	"mov $" XSTR(APIC_GPA) ", %r15d\n" \
		"movl $0x1ff, " XSTR(A_SVR) "(%r15)\n"
#define EOI	"movl $0, " XSTR(A_EOI) "(%r15)\n"

/*
 * Both enable their APIC (an interrupt that reaches it software-disabled
 * is dropped) and then set D_READY. irq_guest halts for good, counting
 * interrupts; ping_guest rings
 * PORT_DOOR R8 times, each time halting until the interrupt that answers
 * it has been handled, then writes PORT_DONE.
 */
GUEST_CODE_BLOCK(irq_guest, ".code64",
	SVR_ON
	"sti\n"
	"movl $1, " XSTR(D_READY) "\n"
	"1: hlt\n"
	"jmp 1b\n"
	"irq_handler_a: lock incl " XSTR(D_COUNT_A) "\n"
	EOI
	"iretq\n"
	"irq_handler_b: lock incl " XSTR(D_COUNT_B) "\n"
	EOI
	"iretq\n"
	"ping_guest: " SVR_ON
	"sti\n"
	"movl $1, " XSTR(D_READY) "\n"
	"xor %ebx, %ebx\n"
	"2: inc %ebx\n"
	"out %al, $" XSTR(PORT_DOOR) "\n"
	HALT_UNTIL(XSTR(D_COUNT_A), "%ebx", 3)
	"cmp %r8d, %ebx\n"
	"jb 2b\n"
	"out %al, $" XSTR(PORT_DONE) "\n"
	"5: hlt\n"
	"jmp 5b\n");
GUEST_LABEL(irq_handler_a);
GUEST_LABEL(irq_handler_b);
GUEST_LABEL(ping_guest);

/* A vCPU thread: KVM_RUN until PORT_DONE, a kick, or anything else. */
struct loop {
	struct vcpu *v;
	int exits;		/* KVM_RUN returns other than EINTR */
	bool done;		/* the guest wrote PORT_DONE */
	bool kicked;		/* EINTR with immediate_exit set */
	int err;
	bool unexpected;
	char why[256];
};

static void *loop_thread(void *arg)
{
	struct loop *l = arg;
	struct kvm_run *run = l->v->run;

	for (;;) {
		int r = run_until_exit(l->v);

		if (r == -EINTR) {
			if (run->immediate_exit) {
				l->kicked = true;
				return NULL;
			}
			continue;
		}
		if (r < 0) {
			l->err = r;
			return NULL;
		}
		l->exits++;
		if (r == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
		    run->io.port == PORT_DONE) {
			l->done = true;
			return NULL;
		}
		l->unexpected = true;
		describe_exit(l->v, l->why, sizeof(l->why));
		return NULL;
	}
}

FIXTURE(irqfd) {
	struct vm *vm;
	struct vcpu *v;
	struct loop l;
	struct vcpu_thread t;
};

static bool have_irqfd(void)
{
	return have(KVM_CAP_IRQFD) && have(KVM_CAP_SPLIT_IRQCHIP) &&
	       have(KVM_CAP_IRQ_ROUTING);
}

#define SKIP_WITHOUT_IRQFD()							\
	do {									\
		if (!have_irqfd())						\
			SKIP(return, "%s lacks KVM_CAP_IRQFD, _SPLIT_IRQCHIP or " \
			     "_IRQ_ROUTING", rkvm_dev_path());			\
	} while (0)

/* Routes GSI @gsi to vCPU 0's vector @vec (and nothing else); 0 or -errno. */
static long route(struct vm *vm, uint32_t gsi, int vec)
{
	struct kvm_irq_routing_entry e;

	irq_route_msi(&e, gsi, MSI_ADDR(0), vec);
	return vm_set_gsi_routing(vm, &e, 1);
}

/* A VM with the split irqchip and irq_guest loaded; GSI routed to VEC_A. */
static struct vm *irq_vm(void)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);

	if (vm_enable_split_irqchip(vm, IOAPIC_PINS))
		guest_die("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)");
	vm_load(vm, GUEST_CODE, irq_guest, irq_guest_end);
	vm_set_idt_gate64(vm, VEC_A, guest_addr(irq_guest, irq_handler_a, GUEST_CODE));
	vm_set_idt_gate64(vm, VEC_B, guest_addr(irq_guest, irq_handler_b, GUEST_CODE));
	if (route(vm, GSI, VEC_A))
		guest_die("KVM_SET_GSI_ROUTING");
	return vm;
}

FIXTURE_SETUP(irqfd)
{
	SKIP_WITHOUT_IRQFD();
	self->vm = irq_vm();
	self->v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	self->l.v = self->v;
}

FIXTURE_TEARDOWN(irqfd)
{
	vcpu_thread_join(&self->t, 0);
	vcpu_free(self->v);
	vm_free(self->vm);
}

static uint32_t count(struct vm *vm, uint64_t gpa)
{
	return __atomic_load_n((uint32_t *)gpa_ptr(vm, gpa), __ATOMIC_ACQUIRE);
}

/* Waits up to @ms for the guest's counter at @gpa to reach @n: 0 or -1. */
static int wait_count(struct vm *vm, uint64_t gpa, uint32_t n, int ms)
{
	int i;

	for (i = 0; i < ms; i++) {
		if (count(vm, gpa) >= n)
			return 0;
		usleep(1000);
	}
	return -1;
}

/* Nothing more arrives at @gpa within 100 ms: the counter stays @n. */
#define EXPECT_QUIET(vm, gpa, n) do {						\
	usleep(100 * 1000);							\
	EXPECT_EQ((uint32_t)(n), count(vm, gpa));				\
} while (0)

/* Starts the vCPU thread and waits until its guest can take interrupts. */
static int start(FIXTURE_DATA(irqfd) *self)
{
	vcpu_thread_start(&self->t, self->v, loop_thread, &self->l);
	return wait_count(self->vm, D_READY, 1, RUN_MS);
}

/* Ends the vCPU thread by a kick (its guest halts for good): 0 if it was kicked. */
static int stop(FIXTURE_DATA(irqfd) *self)
{
	vcpu_kick(&self->t);
	vcpu_thread_join(&self->t, RUN_MS);
	return self->l.kicked ? 0 : -1;
}

/* ---- 8. An irqfd delivers its MSI to a halted vCPU. ------------------------ */

TEST_F_TIMEOUT(irqfd, irqfd_msi, 120)
{
	int i, n = stress_iters(200), e = new_eventfd(), pending = new_eventfd();
	uint32_t base, got;

	ASSERT_EQ(0, irqfd(self->vm, e, GSI, 0, -1));
	ASSERT_EQ(0, start(self));
	/* One write, one interrupt, each waited for. */
	for (i = 1; i <= n; i++) {
		efd_signal(e);
		ASSERT_EQ(0, wait_count(self->vm, D_COUNT_A, i, RUN_MS))
			TH_LOG("write %d: %u interrupts", i, count(self->vm, D_COUNT_A));
	}
	EXPECT_QUIET(self->vm, D_COUNT_A, n);
	EXPECT_EQ(0, efd_take(e)) TH_LOG("KVM consumed every signal");
	/* A burst: interrupts still pending in IRR coalesce, at least one arrives. */
	base = count(self->vm, D_COUNT_A);
	for (i = 0; i < n; i++)
		efd_signal(e);
	ASSERT_EQ(0, wait_count(self->vm, D_COUNT_A, base + 1, RUN_MS));
	usleep(200 * 1000);
	got = count(self->vm, D_COUNT_A) - base;
	TH_LOG("%d writes in a row: %u interrupts", n, got);
	EXPECT_LE(1, got);
	EXPECT_GE((uint32_t)n, got);
	EXPECT_EQ(0, efd_take(e));
	/*
	 * An event pending when the irqfd is assigned is delivered then;
	 * KVM injects it without reading the counter, which stays 1.
	 */
	efd_signal(pending);
	base = count(self->vm, D_COUNT_A);
	ASSERT_EQ(0, irqfd(self->vm, pending, GSI, 0, -1));
	ASSERT_EQ(0, wait_count(self->vm, D_COUNT_A, base + 1, RUN_MS));
	EXPECT_QUIET(self->vm, D_COUNT_A, base + 1);
	EXPECT_EQ(1, efd_take(pending));
	efd_signal(pending);
	ASSERT_EQ(0, wait_count(self->vm, D_COUNT_A, base + 2, RUN_MS));
	EXPECT_EQ(0, efd_take(pending));
	ASSERT_EQ(0, stop(self));
	EXPECT_EQ(0, self->l.exits) TH_LOG("no userspace exit: %s", self->l.why);
	EXPECT_EQ(0, self->l.err);
	EXPECT_EQ(0, count(self->vm, D_COUNT_B));
	close(e);
	close(pending);
}

/* ---- 9. Doorbell and interrupt, both in the kernel. ------------------------ */

TEST_F_TIMEOUT(irqfd, irqfd_ping_pong, 120)
{
	int i, dups = 0, n = stress_iters(1000), door = new_eventfd(), e = new_eventfd();
	struct kvm_regs regs;

	if (!have(KVM_CAP_IOEVENTFD))
		SKIP(return, "no KVM_CAP_IOEVENTFD");
	ASSERT_EQ(0, ioeventfd(self->vm, door, PORT_DOOR, 1, PIO, 0));
	ASSERT_EQ(0, irqfd(self->vm, e, GSI, 0, -1));
	vcpu_get_regs(self->v, &regs);
	regs.rip = guest_addr(irq_guest, ping_guest, GUEST_CODE);
	regs.r8 = n;
	vcpu_set_regs(self->v, &regs);
	ASSERT_EQ(0, start(self));
	/*
	 * One doorbell, one answer. Under QEMU's SVM emulation an interrupt is
	 * (rarely) delivered twice, with stock kvm_amd as with rkvm: the guest
	 * then rings again before the answer, and two rings are read at once.
	 * Those are counted (and at most a few allowed); every ring must still
	 * come from one OUT.
	 */
	for (i = 0; i < n;) {
		struct pollfd pfd = { .fd = door, .events = POLLIN };

		int64_t rung;

		ASSERT_EQ(1, poll(&pfd, 1, RUN_MS)) TH_LOG("round %d: no doorbell", i);
		rung = efd_take(door);
		ASSERT_LE(1, rung) TH_LOG("round %d: %u interrupts handled", i,
					  count(self->vm, D_COUNT_A));
		dups += rung - 1;
		i += rung;
		efd_signal(e);
	}
	ASSERT_EQ(n, i) TH_LOG("rings past the guest's %d", n);
	if (dups)
		TH_LOG("%d interrupts delivered twice", dups);
	EXPECT_GE(3, dups);
	ASSERT_EQ(0, vcpu_thread_join(&self->t, RUN_MS));
	ASSERT_TRUE(self->l.done) TH_LOG("err %d: %s", self->l.err, self->l.why);
	EXPECT_EQ(1, self->l.exits) TH_LOG("only PORT_DONE left KVM_RUN");
	EXPECT_LE((uint32_t)n, count(self->vm, D_COUNT_A));
	EXPECT_GE((uint32_t)(n + 3), count(self->vm, D_COUNT_A));
	EXPECT_EQ(0, efd_take(door));
	close(door);
	close(e);
}

/* ---- 10. irqfd rules. ------------------------------------------------------ */

TEST_F(irqfd, irqfd_rules)
{
	int e = new_eventfd(), e2 = new_eventfd(), e3 = new_eventfd(), closed = new_eventfd();
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	struct kvm_irq_routing_entry r[2];
	struct vm *vm = self->vm, *other;
	uint32_t a = 0, b = 0;
	int d;

	ASSERT_LE(0, null);
	close(closed);
	ASSERT_EQ(0, start(self));
	/* Unknown flags, whatever else. */
	EXPECT_EQ(-EINVAL, irqfd(vm, e, GSI, 1u << 2, -1));
	EXPECT_EQ(-EINVAL, irqfd(vm, e, GSI, 1u << 31, -1));
	EXPECT_EQ(-EINVAL, irqfd(vm, -1, GSI, 1u << 2, -1));
	/* Files that are no eventfds, and no files. */
	EXPECT_EQ(-EBADF, irqfd(vm, -1, GSI, 0, -1));
	EXPECT_EQ(-EBADF, irqfd(vm, closed, GSI, 0, -1));
	EXPECT_EQ(-EINVAL, irqfd(vm, null, GSI, 0, -1));
	EXPECT_EQ(-EINVAL, irqfd(vm, vm->fd, GSI, 0, -1));
	EXPECT_EQ(-EBADF, irqfd(vm, -1, GSI, KVM_IRQFD_FLAG_DEASSIGN, -1));
	EXPECT_EQ(-EINVAL, irqfd(vm, null, GSI, KVM_IRQFD_FLAG_DEASSIGN, -1));
	EXPECT_EQ(-EFAULT, xioctl(vm->fd, KVM_IRQFD, 8));
	/* Resampling needs the full in-kernel irqchip (an IOAPIC to resample). */
	EXPECT_EQ(-EINVAL, irqfd(vm, e, GSI, KVM_IRQFD_FLAG_RESAMPLE, e2));

	ASSERT_EQ(0, irqfd(vm, e, GSI, 0, -1));
	/* An eventfd drives one irqfd at a time, in any VM. */
	EXPECT_EQ(-EBUSY, irqfd(vm, e, GSI, 0, -1));
	EXPECT_EQ(-EBUSY, irqfd(vm, e, GSI + 1, 0, -1));
	other = irq_vm();
	EXPECT_EQ(-EBUSY, irqfd(other, e, GSI, 0, -1));
	EXPECT_EQ(0, irqfd(other, e2, GSI, 0, -1));
	vm_free(other);
	/* ... but a GSI takes several: e2 was released with the other VM. */
	ASSERT_EQ(0, irqfd(vm, e2, GSI, 0, -1));
	efd_signal(e2);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_A, ++a, RUN_MS));
	efd_signal(e);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_A, ++a, RUN_MS));

	/* Deassigning what is not assigned is no error, and removes nothing. */
	EXPECT_EQ(0, irqfd(vm, e, GSI + 1, KVM_IRQFD_FLAG_DEASSIGN, -1));
	EXPECT_EQ(0, irqfd(vm, e3, GSI, KVM_IRQFD_FLAG_DEASSIGN, -1));
	efd_signal(e);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_A, ++a, RUN_MS));

	/* Routing changes apply to the next write. */
	ASSERT_EQ(0, route(vm, GSI, VEC_B));
	efd_signal(e);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_B, ++b, RUN_MS));
	EXPECT_QUIET(vm, D_COUNT_A, a);
	/* A table without the GSI: the signal is consumed, nothing delivered. */
	ASSERT_EQ(0, route(vm, GSI + 5, VEC_B));
	efd_signal(e);
	EXPECT_QUIET(vm, D_COUNT_B, b);
	EXPECT_EQ(a, count(vm, D_COUNT_A));
	EXPECT_EQ(0, efd_take(e));
	irq_route_msi(&r[0], GSI, MSI_ADDR(0), VEC_A);
	irq_route_msi(&r[1], GSI + 1, MSI_ADDR(0), VEC_B);
	ASSERT_EQ(0, vm_set_gsi_routing(vm, r, 2));
	efd_signal(e);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_A, ++a, RUN_MS));

	/* Deassigned, the eventfd keeps its count and delivers nothing. */
	ASSERT_EQ(0, irqfd(vm, e, GSI, KVM_IRQFD_FLAG_DEASSIGN, -1));
	efd_signal(e);
	EXPECT_QUIET(vm, D_COUNT_A, a);
	EXPECT_EQ(1, efd_take(e));
	/* Reassigned to another GSI, it delivers there. */
	ASSERT_EQ(0, irqfd(vm, e, GSI + 1, 0, -1));
	efd_signal(e);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_B, ++b, RUN_MS));

	/* A GSI beyond any routing table is accepted and delivers nothing. */
	ASSERT_EQ(0, irqfd(vm, e3, MAX_ROUTES + 100, 0, -1));
	efd_signal(e3);
	EXPECT_QUIET(vm, D_COUNT_A, a);
	EXPECT_EQ(b, count(vm, D_COUNT_B));
	EXPECT_EQ(0, efd_take(e3));
	EXPECT_EQ(0, irqfd(vm, e3, MAX_ROUTES + 100, KVM_IRQFD_FLAG_DEASSIGN, -1));

	/*
	 * Closing the last fd of an eventfd detaches its irqfd (nobody can
	 * write it any more); while a dup lives, it still delivers.
	 */
	ASSERT_EQ(0, irqfd(vm, e3, GSI, 0, -1));
	d = dup(e3);
	ASSERT_LE(0, d);
	close(e3);
	efd_signal(d);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_A, ++a, RUN_MS));
	close(d);
	EXPECT_EQ(-EBADF, irqfd(vm, d, GSI, KVM_IRQFD_FLAG_DEASSIGN, -1));
	/* e2 still works after all that. */
	efd_signal(e2);
	ASSERT_EQ(0, wait_count(vm, D_COUNT_A, ++a, RUN_MS));
	EXPECT_QUIET(vm, D_COUNT_A, a);
	EXPECT_EQ(b, count(vm, D_COUNT_B));
	ASSERT_EQ(0, stop(self));
	EXPECT_EQ(0, self->l.exits) TH_LOG("%s", self->l.why);
	close(null);
	close(e);
	close(e2);
}

/* Without an in-kernel irqchip there is nothing to inject into. */
TEST(irqfd_without_irqchip)
{
	struct vm *vm;
	int e;

	if (!have(KVM_CAP_IRQFD))
		SKIP(return, "%s does not report KVM_CAP_IRQFD", rkvm_dev_path());
	vm = vm_new(GUEST_MEM_SIZE);
	e = new_eventfd();
	EXPECT_EQ(-EINVAL, irqfd(vm, e, GSI, 0, -1));
	EXPECT_EQ(-EINVAL, irqfd(vm, e, GSI, KVM_IRQFD_FLAG_RESAMPLE, e));
	EXPECT_EQ(-EINVAL, irqfd(vm, e, GSI, 1u << 3, -1));
	/* Deassigning looks only for a match, and finds none. */
	EXPECT_EQ(0, irqfd(vm, e, GSI, KVM_IRQFD_FLAG_DEASSIGN, -1));
	if (have(KVM_CAP_SPLIT_IRQCHIP)) {
		ASSERT_EQ(0, vm_enable_split_irqchip(vm, IOAPIC_PINS));
		EXPECT_EQ(0, irqfd(vm, e, GSI, 0, -1)) TH_LOG("with the split irqchip");
	}
	vm_free(vm);
	close(e);
}

/*
 * A VM closed with irqfds assigned releases their eventfds: a write then
 * reaches nobody (the count stays), and another VM may take them.
 */
TEST(irqfd_vm_close)
{
	int e1, e2, i;
	struct vm *vm;

	if (!have_irqfd())
		SKIP(return, "%s lacks KVM_CAP_IRQFD, _SPLIT_IRQCHIP or _IRQ_ROUTING",
		     rkvm_dev_path());
	e1 = new_eventfd();
	e2 = new_eventfd();
	for (i = 0; i < 3; i++) {
		struct vcpu *v;

		vm = irq_vm();
		v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
		ASSERT_EQ(0, irqfd(vm, e1, GSI, 0, -1)) TH_LOG("round %d", i);
		ASSERT_EQ(0, irqfd(vm, e2, GSI + 7, 0, -1)) TH_LOG("round %d", i);
		efd_signal(e1);
		/* Closed in both orders. */
		if (i & 1) {
			vm_free(vm);
			vcpu_free(v);
		} else {
			vcpu_free(v);
			vm_free(vm);
		}
		EXPECT_EQ(0, efd_take(e1)) TH_LOG("consumed while assigned");
		efd_signal(e1);
		efd_signal(e2);
		EXPECT_EQ(1, efd_take(e1)) TH_LOG("nobody consumes it now");
		EXPECT_EQ(1, efd_take(e2));
	}
	close(e1);
	close(e2);
}

TEST_HARNESS_MAIN
