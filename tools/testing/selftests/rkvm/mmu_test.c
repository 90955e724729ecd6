// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm guest memory selftests: 16 vCPUs in long mode writing and reading
 * one 64 MiB region at once (checked by the guests and from the host), and
 * memory slots added, deleted and moved under a running guest, both while
 * the vCPU is inside KVM_RUN and between exits: the guest sees new memory
 * at once, and an access to a GPA whose slot is gone exits as MMIO.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"

#define OUT KVM_EXIT_IO_OUT
#define MB (1UL << 20)

/* Generous: inside the emulated test machine every exit is slow. */
#define MMU_TIMEOUT 600

/* --- 16 vCPUs on one 64 MiB region. ---------------------------------- */

#define NR_VCPUS 16
#define REGION_GPA 0x10000000
#define REGION_SIZE (64 * MB)
#define REGION_PAGES (REGION_SIZE / 4096)

/* The owner's words at offsets 0 and 4088 of page p, written in phase 1. */
static uint64_t owner_word(uint64_t id, uint64_t p)
{
	return id << 56 | p << 8 | 0xa5;
}

/* vCPU j's word at offset 8 * (j + 1) of a page, written in phase 2. */
static uint64_t shared_word(uint64_t j, uint64_t p)
{
	return p << 16 | j << 8 | 0x5a;
}

/*
 * In: RDI = vCPU id, RSI = region GPA, RDX = pages, RCX = vCPUs (nv).
 * Page p belongs to vCPU p % nv (its stride).
 * Phase 1: owner_word(id, p) at offset 0 and its complement at 4088 of
 *          each page of its own stride. out 1 to port 0x30; the VMM holds
 *          every vCPU there until all have arrived.
 * Phase 2: for the strides of vCPUs id + 1 and id + 2 (mod nv): check the
 *          owner's words, write shared_word(id, p) at 8 * (id + 1). So
 *          every page is read and written by three vCPUs, two of them at
 *          the same time. out 2 to port 0x30 (barrier again).
 * Phase 3: check the words vCPUs id - 1 and id - 2 left in its own pages.
 * Reports the number of mismatches (out 4 bytes, port 0x31), then hlt.
 */
GUEST_CODE_BLOCK(stride_guest, ".code64",
	"mov %rdi, %r8\n"
	"mov %rsi, %r9\n"
	"mov %rdx, %r10\n"
	"mov %rcx, %r11\n"
	"xor %r15, %r15\n"
	/* phase 1 */
	"mov %r8, %rbx\n"
	"1: cmp %r10, %rbx\n"
	"jae 2f\n"
	"mov %rbx, %rax\n shl $12, %rax\n add %r9, %rax\n"
	"mov %r8, %rdx\n shl $56, %rdx\n"
	"mov %rbx, %rcx\n shl $8, %rcx\n or %rcx, %rdx\n or $0xa5, %rdx\n"
	"mov %rdx, (%rax)\n"
	"not %rdx\n"
	"mov %rdx, 4088(%rax)\n"
	"add %r11, %rbx\n"
	"jmp 1b\n"
	"2: mov $1, %al\n"
	"out %al, $0x30\n"
	/* phase 2: r14 = k, r12 = (id + k) % nv, rbx = page */
	"mov $1, %r14\n"
	"10: mov %r8, %r12\n add %r14, %r12\n"
	"cmp %r11, %r12\n jb 11f\n sub %r11, %r12\n"
	"11: mov %r12, %rbx\n"
	"12: cmp %r10, %rbx\n"
	"jae 14f\n"
	"mov %rbx, %rax\n shl $12, %rax\n add %r9, %rax\n"
	"mov %r12, %rdx\n shl $56, %rdx\n"
	"mov %rbx, %rcx\n shl $8, %rcx\n or %rcx, %rdx\n or $0xa5, %rdx\n"
	"cmp %rdx, (%rax)\n"
	"je 13f\n"
	"inc %r15\n"
	"13: not %rdx\n"
	"cmp %rdx, 4088(%rax)\n"
	"je 13f\n"
	"inc %r15\n"
	"13: mov %rbx, %rdx\n shl $16, %rdx\n"
	"mov %r8, %rcx\n shl $8, %rcx\n or %rcx, %rdx\n or $0x5a, %rdx\n"
	"mov %rdx, 8(%rax,%r8,8)\n"
	"add %r11, %rbx\n"
	"jmp 12b\n"
	"14: inc %r14\n"
	"cmp $2, %r14\n"
	"jbe 10b\n"
	"mov $2, %al\n"
	"out %al, $0x30\n"
	/* phase 3: r12 = (id - k) % nv, rbx = page of the own stride */
	"mov $1, %r14\n"
	"20: mov %r8, %r12\n add %r11, %r12\n sub %r14, %r12\n"
	"cmp %r11, %r12\n jb 21f\n sub %r11, %r12\n"
	"21: mov %r8, %rbx\n"
	"22: cmp %r10, %rbx\n"
	"jae 24f\n"
	"mov %rbx, %rax\n shl $12, %rax\n add %r9, %rax\n"
	"mov %rbx, %rdx\n shl $16, %rdx\n"
	"mov %r12, %rcx\n shl $8, %rcx\n or %rcx, %rdx\n or $0x5a, %rdx\n"
	"cmp %rdx, 8(%rax,%r12,8)\n"
	"je 23f\n"
	"inc %r15\n"
	"23: add %r11, %rbx\n"
	"jmp 22b\n"
	"24: inc %r14\n"
	"cmp $2, %r14\n"
	"jbe 20b\n"
	"mov %r15d, %eax\n"
	"out %eax, $0x31\n"
	"hlt\n");

struct stride_vcpu {
	struct vcpu *v;
	pthread_barrier_t *barrier;
	volatile int *abort;
	int fails;
};

static void *stride_thread(void *arg)
{
	struct stride_vcpu *s = arg;
	int phase;

	for (phase = 1; phase <= 2; phase++) {
		if (!*s->abort && run_expect_io(s->v, OUT, 1, 0x30, phase)) {
			s->fails++;
			*s->abort = 1;
		}
		/* Everyone reaches the barrier, even after a failure. */
		pthread_barrier_wait(s->barrier);
	}
	if (*s->abort)
		return NULL;
	if (run_expect_io(s->v, OUT, 4, 0x31, 0) ||
	    run_expect_exit(s->v, KVM_EXIT_HLT))
		s->fails++;
	return NULL;
}

static void stride_round(struct __test_metadata *_metadata)
{
	struct stride_vcpu sv[NR_VCPUS];
	pthread_t threads[NR_VCPUS];
	pthread_barrier_t barrier;
	volatile int abort = 0;
	struct kvm_regs regs;
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	uint64_t *region = guest_alloc(REGION_SIZE), p;
	int i, j, bad = 0;

	ASSERT_EQ(0, vm_set_region(vm, 1, 0, REGION_GPA, REGION_SIZE, region));
	vm_load(vm, GUEST_CODE, stride_guest, stride_guest_end);
	ASSERT_EQ(0, pthread_barrier_init(&barrier, NULL, NR_VCPUS));
	for (i = 0; i < NR_VCPUS; i++) {
		sv[i].v = vcpu_new(vm, i, MODE_LONG64, GUEST_CODE,
				   GUEST_STACK - i * 0x1000);
		sv[i].barrier = &barrier;
		sv[i].abort = &abort;
		sv[i].fails = 0;
		vcpu_get_regs(sv[i].v, &regs);
		regs.rdi = i;
		regs.rsi = REGION_GPA;
		regs.rdx = REGION_PAGES;
		regs.rcx = NR_VCPUS;
		vcpu_set_regs(sv[i].v, &regs);
	}
	for (i = 0; i < NR_VCPUS; i++)
		ASSERT_EQ(0, pthread_create(&threads[i], NULL, stride_thread, &sv[i]));
	for (i = 0; i < NR_VCPUS; i++) {
		pthread_join(threads[i], NULL);
		EXPECT_EQ(0, sv[i].fails) TH_LOG("vCPU %d", i);
	}
	ASSERT_EQ(0, abort);

	/* Every word as the guests left it, seen from the host. */
	for (p = 0; p < REGION_PAGES && bad < 10; p++) {
		uint64_t *page = region + p * 512, want;
		int owner = p % NR_VCPUS;

		if (page[0] != owner_word(owner, p) ||
		    page[511] != ~owner_word(owner, p)) {
			TH_LOG("page %llu: owner words %#llx %#llx",
			       (unsigned long long)p, (unsigned long long)page[0],
			       (unsigned long long)page[511]);
			bad++;
		}
		for (j = 0; j < NR_VCPUS; j++) {
			bool wrote = j == (owner + NR_VCPUS - 1) % NR_VCPUS ||
				     j == (owner + NR_VCPUS - 2) % NR_VCPUS;

			want = wrote ? shared_word(j, p) : 0;
			if (page[j + 1] != want) {
				TH_LOG("page %llu: vCPU %d word %#llx",
				       (unsigned long long)p, j,
				       (unsigned long long)page[j + 1]);
				bad++;
			}
		}
	}
	EXPECT_EQ(0, bad);

	for (i = 0; i < NR_VCPUS; i++)
		vcpu_free(sv[i].v);
	pthread_barrier_destroy(&barrier);
	vm_free(vm);
	munmap(region, REGION_SIZE);
}

FIXTURE(mmu) {
	int unused;
};

FIXTURE_SETUP(mmu)
{
}

FIXTURE_TEARDOWN(mmu)
{
}

TEST_F_TIMEOUT(mmu, vcpus16_shared_64mib, MMU_TIMEOUT)
{
	int round;

	for (round = 0; round < stress_iters(1); round++)
		stride_round(_metadata);
}

/* --- Memory slots changing under a polling guest. -------------------- */

#define POLL_GPA 0x40000000
#define MOVE_GPA 0x50000000
#define SLOT_SIZE 0x10000
#define MMIO_ANSWER 2
#define FINAL 0xdead

/*
 * Reads the dword at POLL_GPA until it changes, reports each new value
 * (out 4 bytes, port 0x40) and stops with hlt after reporting FINAL.
 */
GUEST_CODE_BLOCK(poll_guest, ".code64",
	"mov $" XSTR(POLL_GPA) ", %ebx\n"
	"mov $0xffffffff, %r12d\n"
	"1: mov (%rbx), %eax\n"
	"cmp %eax, %r12d\n"
	"jne 2f\n"
	"pause\n"
	"jmp 1b\n"
	"2: mov %eax, %r12d\n"
	"out %eax, $0x40\n"
	"cmp $" XSTR(FINAL) ", %eax\n"
	"jne 1b\n"
	"hlt\n");

struct poller {
	struct vcpu *v;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t reports[32];
	int nreports;
	int mmio_exits;		/* reads of POLL_GPA while it had no slot */
	int bad;		/* unexpected exits */
	bool done;		/* the guest reached hlt */
};

/* The vCPU side: runs the guest, answers MMIO reads, records reports. */
static void *poll_thread(void *arg)
{
	struct poller *pl = arg;
	struct vcpu *v = pl->v;
	int r;

	for (;;) {
		r = run_until_exit(v);
		pthread_mutex_lock(&pl->lock);
		if (r == KVM_EXIT_IO && !check_io(v, OUT, 4, 0x40, 1) &&
		    pl->nreports < 32) {
			pl->reports[pl->nreports++] = io_value(v);
		} else if (r == KVM_EXIT_MMIO && !check_mmio(v, POLL_GPA, 4, false)) {
			mmio_set_read(v, MMIO_ANSWER);
			pl->mmio_exits++;
		} else if (r == KVM_EXIT_HLT) {
			pl->done = true;
		} else {
			if (r < 0)
				fprintf(stderr, "# KVM_RUN: %s\n", strerror(-r));
			else
				print_exit(v, "unexpected");
			pl->bad++;
		}
		pthread_cond_broadcast(&pl->cond);
		pthread_mutex_unlock(&pl->lock);
		if (pl->done || pl->bad)
			return NULL;
	}
}

/* Waits (up to 120 s) for report @n and checks it is @val. */
static int wait_report(struct poller *pl, int n, uint32_t val)
{
	struct timespec ts;
	int r = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 120;
	pthread_mutex_lock(&pl->lock);
	while (pl->nreports <= n && !pl->bad && !pl->done && r == 0)
		r = pthread_cond_timedwait(&pl->cond, &pl->lock, &ts);
	if (pl->nreports <= n) {
		fprintf(stderr, "# no report %d (expected %#x): %s\n", n, val,
			r ? "timed out" : "vCPU stopped");
		r = -1;
	} else if (pl->reports[n] != val) {
		fprintf(stderr, "# report %d is %#x, expected %#x\n", n,
			pl->reports[n], val);
		r = -1;
	}
	pthread_mutex_unlock(&pl->lock);
	return r;
}

TEST_F_TIMEOUT(mmu, memslot_changes_while_running, MMU_TIMEOUT)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	uint32_t *mem1 = guest_alloc(SLOT_SIZE);
	uint32_t *mem2 = guest_alloc(SLOT_SIZE);
	uint32_t *mem3 = guest_alloc(SLOT_SIZE);
	struct poller pl = {
		.lock = PTHREAD_MUTEX_INITIALIZER,
		.cond = PTHREAD_COND_INITIALIZER,
	};
	pthread_t t;
	int mmio;

	vm_load(vm, GUEST_CODE, poll_guest, poll_guest_end);
	pl.v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	mem1[0] = 1;
	mem3[0] = 5;
	ASSERT_EQ(0, vm_set_region(vm, 1, 0, POLL_GPA, SLOT_SIZE, mem1));
	ASSERT_EQ(0, vm_set_region(vm, 3, 0, MOVE_GPA, SLOT_SIZE, mem3));
	ASSERT_EQ(0, pthread_create(&t, NULL, poll_thread, &pl));

	ASSERT_EQ(0, wait_report(&pl, 0, 1));
	EXPECT_EQ(0, pl.mmio_exits);

	/* Delete under the spinning guest: its next read exits as MMIO. */
	ASSERT_EQ(0, vm_set_region(vm, 1, 0, POLL_GPA, 0, NULL));
	ASSERT_EQ(0, wait_report(&pl, 1, MMIO_ANSWER));
	EXPECT_LT(0, pl.mmio_exits);

	/* Add a slot there while the guest loops on MMIO exits. */
	mem2[0] = 3;
	ASSERT_EQ(0, vm_set_region(vm, 2, 0, POLL_GPA, SLOT_SIZE, mem2));
	ASSERT_EQ(0, wait_report(&pl, 2, 3));
	pthread_mutex_lock(&pl.lock);
	mmio = pl.mmio_exits;
	pthread_mutex_unlock(&pl.lock);

	/* The host writes the slot's memory: the guest sees it. */
	__atomic_store_n(&mem2[0], 4, __ATOMIC_SEQ_CST);
	ASSERT_EQ(0, wait_report(&pl, 3, 4));
	EXPECT_EQ(mmio, pl.mmio_exits);		/* memory, not MMIO */

	ASSERT_EQ(0, vm_set_region(vm, 2, 0, POLL_GPA, 0, NULL));
	ASSERT_EQ(0, wait_report(&pl, 4, MMIO_ANSWER));

	/* Move slot 3 from MOVE_GPA to POLL_GPA: its data appears there. */
	ASSERT_EQ(0, vm_set_region(vm, 3, 0, POLL_GPA, SLOT_SIZE, mem3));
	ASSERT_EQ(0, wait_report(&pl, 5, 5));
	__atomic_store_n(&mem3[0], FINAL, __ATOMIC_SEQ_CST);
	ASSERT_EQ(0, wait_report(&pl, 6, FINAL));

	pthread_join(t, NULL);
	EXPECT_TRUE(pl.done);
	EXPECT_EQ(0, pl.bad);
	EXPECT_EQ(7, pl.nreports);
	vcpu_free(pl.v);
	vm_free(vm);
	munmap(mem1, SLOT_SIZE);
	munmap(mem2, SLOT_SIZE);
	munmap(mem3, SLOT_SIZE);
}

/*
 * Each iteration: read POLL_GPA, write the iteration number to
 * POLL_GPA + 8, report the value read (out port 0x41); read MOVE_GPA and
 * report it (out port 0x42).
 */
GUEST_CODE_BLOCK(rw_guest, ".code64",
	"mov $" XSTR(POLL_GPA) ", %ebx\n"
	"mov $" XSTR(MOVE_GPA) ", %esi\n"
	"xor %r13d, %r13d\n"
	"1: inc %r13d\n"
	"mov (%rbx), %eax\n"
	"mov %r13d, 8(%rbx)\n"
	"out %eax, $0x41\n"
	"mov (%rsi), %eax\n"
	"out %eax, $0x42\n"
	"jmp 1b\n");

/*
 * One iteration of rw_guest. @poll/@move: the value the guest must read
 * (from memory when the GPA has a slot, else it is the MMIO answer given
 * here); @poll_mem says whether POLL_GPA has a slot (else the write of the
 * iteration number exits as MMIO too).
 */
static int rw_iteration(struct vcpu *v, bool poll_mem, uint32_t poll,
			bool move_mem, uint32_t move, uint32_t iter)
{
	if (!poll_mem && run_expect_mmio(v, POLL_GPA, 4, false, poll))
		return -1;
	if (!poll_mem && run_expect_mmio(v, POLL_GPA + 8, 4, true, iter))
		return -1;
	if (run_expect_io(v, OUT, 4, 0x41, poll))
		return -1;
	if (!move_mem && run_expect_mmio(v, MOVE_GPA, 4, false, move))
		return -1;
	return run_expect_io(v, OUT, 4, 0x42, move);
}

TEST_F_TIMEOUT(mmu, memslot_changes_between_exits, MMU_TIMEOUT)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	uint32_t *mem1 = guest_alloc(SLOT_SIZE);
	uint32_t *mem2 = guest_alloc(SLOT_SIZE);
	struct vcpu *v;
	int i, n = stress_iters(20);
	uint32_t iter = 0;

	vm_load(vm, GUEST_CODE, rw_guest, rw_guest_end);
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	mem1[0] = 0x1111;
	mem2[0] = 0x2222;
	for (i = 0; i < n; i++) {
		/* POLL_GPA backed by slot 1, MOVE_GPA unbacked */
		ASSERT_EQ(0, vm_set_region(vm, 1, 0, POLL_GPA, SLOT_SIZE, mem1));
		ASSERT_EQ(0, rw_iteration(v, true, 0x1111, false, 0x77, ++iter));
		ASSERT_EQ(0, rw_iteration(v, true, 0x1111, false, 0x78, ++iter));
		EXPECT_EQ(iter, mem1[2]);

		/* both unbacked */
		ASSERT_EQ(0, vm_set_region(vm, 1, 0, POLL_GPA, 0, NULL));
		ASSERT_EQ(0, rw_iteration(v, false, 0x66, false, 0x79, ++iter));
		EXPECT_EQ(iter - 1, mem1[2]);	/* the MMIO write missed it */

		/* slot 2 at MOVE_GPA */
		ASSERT_EQ(0, vm_set_region(vm, 2, 0, MOVE_GPA, SLOT_SIZE, mem2));
		ASSERT_EQ(0, rw_iteration(v, false, 0x67, true, 0x2222, ++iter));

		/* slot 2 moved to POLL_GPA: MOVE_GPA is MMIO again */
		ASSERT_EQ(0, vm_set_region(vm, 2, 0, POLL_GPA, SLOT_SIZE, mem2));
		ASSERT_EQ(0, rw_iteration(v, true, 0x2222, false, 0x7a, ++iter));
		EXPECT_EQ(iter, mem2[2]);

		/* and deleted */
		ASSERT_EQ(0, vm_set_region(vm, 2, 0, POLL_GPA, 0, NULL));
		ASSERT_EQ(0, rw_iteration(v, false, 0x68, false, 0x7b, ++iter));
		EXPECT_EQ(iter - 1, mem2[2]);
	}
	vcpu_free(v);
	vm_free(vm);
	munmap(mem1, SLOT_SIZE);
	munmap(mem2, SLOT_SIZE);
}

/* Writes then reads a data slot; after each report, the VMM may act. */
GUEST_CODE_BLOCK(data_guest, ".code64",
	"mov $" XSTR(POLL_GPA) ", %ebx\n"
	"mov $0x1234567890, %rcx\n"
	"mov %rcx, (%rbx)\n"
	"mov 0x100(%rbx), %eax\n"
	"out %eax, $0x43\n"
	"inc %rcx\n"
	"mov %rcx, (%rbx)\n"
	"mov 0x100(%rbx), %eax\n"
	"out %eax, $0x43\n"
	"hlt\n");

TEST_F_TIMEOUT(mmu, slot_deleted_between_runs, MMU_TIMEOUT)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	uint64_t *mem = guest_alloc(SLOT_SIZE);
	struct vcpu *v;

	vm_load(vm, GUEST_CODE, data_guest, data_guest_end);
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	mem[0x100 / 8] = 0xabcd;
	ASSERT_EQ(0, vm_set_region(vm, 1, 0, POLL_GPA, SLOT_SIZE, mem));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x43, 0xabcd));
	EXPECT_EQ(0x1234567890ULL, mem[0]);

	ASSERT_EQ(0, vm_set_region(vm, 1, 0, POLL_GPA, 0, NULL));
	ASSERT_EQ(0, run_expect_mmio(v, POLL_GPA, 8, true, 0x1234567891ULL));
	ASSERT_EQ(0, run_expect_mmio(v, POLL_GPA + 0x100, 4, false, 0xdcba));
	ASSERT_EQ(0, run_expect_io(v, OUT, 4, 0x43, 0xdcba));
	ASSERT_EQ(0, run_expect_exit(v, KVM_EXIT_HLT));
	EXPECT_EQ(0x1234567890ULL, mem[0]);
	vcpu_free(v);
	vm_free(vm);
	munmap(mem, SLOT_SIZE);
}

TEST_HARNESS_MAIN
