// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm memslot selftests: KVM_SET_USER_MEMORY_REGION and
 * KVM_SET_USER_MEMORY_REGION2 with every rule KVM enforces (alignment,
 * wrap-around, user-space bounds, slot ids, overlap, what an existing slot
 * may change), many slots, and writers racing each other.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/rkvm.h>

#include "kselftest_harness.h"
#include "rkvm_caps.h"
#include "rkvm_util.h"

#define MB (1UL << 20)
/* rkvm/caps.rs's KVM_CAP_NR_MEMSLOTS. */
#define NR_SLOTS ((int)rkvm_expected_cap(KVM_CAP_NR_MEMSLOTS, 1))

static long set_region(int vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		       uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = size, .userspace_addr = (uintptr_t)hva,
	};

	return xioctl(vm, KVM_SET_USER_MEMORY_REGION, (unsigned long)&r);
}

static long set_region2(int vm, uint32_t slot, uint32_t flags, uint64_t gpa,
			uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = size, .userspace_addr = (uintptr_t)hva,
	};

	return xioctl(vm, KVM_SET_USER_MEMORY_REGION2, (unsigned long)&r);
}

FIXTURE(vm) {
	int sys, vm;
	char *mem;	/* 16 MiB of anonymous memory to back slots */
};

FIXTURE_SETUP(vm)
{
	self->sys = open(rkvm_dev_path(), O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, self->sys);
	self->vm = ioctl(self->sys, KVM_CREATE_VM, 0);
	ASSERT_LE(0, self->vm);
	self->mem = mmap(NULL, 16 * MB, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->mem);
}

FIXTURE_TEARDOWN(vm)
{
	munmap(self->mem, 16 * MB);
	close(self->vm);
	close(self->sys);
}

TEST_F(vm, capabilities)
{
	EXPECT_EQ(1, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY));
	EXPECT_EQ(1, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2));
	EXPECT_EQ(NR_SLOTS, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS));
	EXPECT_EQ(1, ioctl(self->sys, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM));
	/* Not until rkvm can honour it. */
	EXPECT_EQ(0, ioctl(self->vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD));
}

TEST_F(vm, create_move_delete)
{
	ASSERT_EQ(0, set_region(self->vm, 0, 0, 0, 2 * MB, self->mem));
	ASSERT_EQ(0, set_region2(self->vm, 1, 0, 4 * MB, 2 * MB, self->mem + 2 * MB));
	/* The same request again changes nothing and succeeds. */
	EXPECT_EQ(0, set_region(self->vm, 0, 0, 0, 2 * MB, self->mem));
	/* Move slot 1, then back. */
	EXPECT_EQ(0, set_region(self->vm, 1, 0, 8 * MB, 2 * MB, self->mem + 2 * MB));
	EXPECT_EQ(0, set_region2(self->vm, 1, 0, 4 * MB, 2 * MB, self->mem + 2 * MB));
	/* An existing slot's size and address cannot change. */
	EXPECT_EQ(-EINVAL, set_region(self->vm, 1, 0, 4 * MB, 4 * MB, self->mem + 2 * MB));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 1, 0, 4 * MB, 2 * MB, self->mem + 4 * MB));
	/* Delete (size 0), twice: the second one has nothing to delete. */
	EXPECT_EQ(0, set_region(self->vm, 1, 0, 0, 0, NULL));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 1, 0, 0, 0, NULL));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 5, 0, 0, 0, NULL));
	/* The id is free again, and so is the range. */
	EXPECT_EQ(0, set_region(self->vm, 1, 0, 4 * MB, 4 * MB, self->mem + 4 * MB));
	/* Slots may alias the same userspace memory. */
	EXPECT_EQ(0, set_region(self->vm, 2, 0, 12 * MB, 2 * MB, self->mem));
}

TEST_F(vm, overlap_is_eexist)
{
	ASSERT_EQ(0, set_region(self->vm, 0, 0, 4 * MB, 2 * MB, self->mem));
	EXPECT_EQ(-EEXIST, set_region(self->vm, 1, 0, 4 * MB, 2 * MB, self->mem));
	EXPECT_EQ(-EEXIST, set_region(self->vm, 1, 0, 3 * MB, 2 * MB, self->mem));
	EXPECT_EQ(-EEXIST, set_region(self->vm, 1, 0, 5 * MB, 2 * MB, self->mem));
	EXPECT_EQ(-EEXIST, set_region(self->vm, 1, 0, 6 * MB - 4096, 4096, self->mem));
	EXPECT_EQ(-EEXIST, set_region2(self->vm, 1, 0, 0, 16 * MB, self->mem));
	/* Adjacent on both sides is fine. */
	EXPECT_EQ(0, set_region(self->vm, 1, 0, 6 * MB, MB, self->mem));
	EXPECT_EQ(0, set_region(self->vm, 2, 0, 3 * MB, MB, self->mem));
	/* A move onto another slot is refused too. */
	EXPECT_EQ(-EEXIST, set_region(self->vm, 2, 0, 5 * MB, MB, self->mem));
}

TEST_F(vm, bad_arguments_are_einval)
{
	char *m = self->mem;

	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 0, MB + 1, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 0x800, MB, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 0, MB, m + 0x800));
	/* Kernel addresses and wrapping ranges are not user memory. */
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 0, MB, (void *)0xffff888000000000UL));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 0, 2 * 4096, (void *)-4096UL));
	/* Guest-physical range wraps, or lies beyond MAXPHYADDR. */
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, -4096UL, 2 * 4096, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 1UL << 52, 4096, m));
	/* Slot ids: 509 slots in address space 0 only. */
	EXPECT_EQ(-EINVAL, set_region(self->vm, NR_SLOTS, 0, 0, MB, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0xffff, 0, 0, MB, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 1 << 16, 0, 0, MB, m));
	/* guest_memfd, which rkvm does not have, and unknown flags. */
	EXPECT_EQ(-EINVAL, set_region2(self->vm, 0, KVM_MEM_GUEST_MEMFD, 0, MB, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, KVM_MEM_GUEST_MEMFD, 0, MB, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 1 << 7, 0, MB, m));
	/* An unreadable argument. */
	EXPECT_EQ(-EFAULT, xioctl(self->vm, KVM_SET_USER_MEMORY_REGION, 0));
	EXPECT_EQ(-EFAULT, xioctl(self->vm, KVM_SET_USER_MEMORY_REGION2, 8));
	/* A slot does not become writable or read-only once created. */
	ASSERT_EQ(0, set_region(self->vm, 0, KVM_MEM_READONLY, 0, MB, m));
	EXPECT_EQ(-EINVAL, set_region(self->vm, 0, 0, 0, MB, m));
	ASSERT_EQ(0, set_region(self->vm, 0, KVM_MEM_READONLY, 0, 0, m));
	/* After all that, the whole range is still free. */
	EXPECT_EQ(0, set_region(self->vm, 0, 0, 0, 16 * MB, m));
}

TEST_F(vm, all_slots)
{
	int i;

	/* Every id, each one page, in scrambled guest-physical order. */
	for (i = 0; i < NR_SLOTS; i++)
		ASSERT_EQ(0, set_region(self->vm, i, 0, (i * 193UL % NR_SLOTS) * 2 * 4096,
					4096, self->mem)) TH_LOG("slot %d", i);
	EXPECT_EQ(-EINVAL, set_region(self->vm, NR_SLOTS, 0, 1UL << 32, 4096, self->mem));
	/* Every free page between them is still available to a moved slot. */
	EXPECT_EQ(0, set_region(self->vm, 0, 0, 4096, 4096, self->mem));
	EXPECT_EQ(-EEXIST, set_region(self->vm, 0, 0, 2 * 4096, 4096, self->mem));
	for (i = 0; i < NR_SLOTS; i++)
		ASSERT_EQ(0, set_region(self->vm, i, 0, 0, 0, NULL)) TH_LOG("slot %d", i);
}

struct writer {
	int vm, id, rounds, failures;
	char *mem;
};

static void *own_slot_writer(void *p)
{
	struct writer *w = p;
	int i;

	for (i = 0; i < w->rounds; i++) {
		uint64_t gpa = (uint64_t)w->id * 16 * MB + (i % 4) * MB;

		if (set_region(w->vm, w->id, 0, gpa, MB, w->mem) ||
		    set_region(w->vm, w->id, 0, 0, 0, NULL))
			w->failures++;
	}
	return NULL;
}

TEST_F(vm, writers_on_distinct_slots)
{
	enum { WRITERS = 4 };
	struct writer w[WRITERS];
	pthread_t t[WRITERS];
	int i;

	for (i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){ .vm = self->vm, .id = i, .rounds = stress_iters(200),
					.mem = self->mem };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, own_slot_writer, &w[i]));
	}
	for (i = 0; i < WRITERS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, w[i].failures) TH_LOG("writer %d", i);
	}
}

struct racer {
	int vm, id;
	char *mem;
	pthread_barrier_t *start;
	long result;
};

static void *create_at_same_gpa(void *p)
{
	struct racer *r = p;

	pthread_barrier_wait(r->start);
	r->result = set_region(r->vm, r->id, 0, 0, MB, r->mem);
	return NULL;
}

TEST_F(vm, overlapping_creates_race_one_wins)
{
	int round;

	for (round = 0; round < stress_iters(100); round++) {
		pthread_barrier_t start;
		struct racer r[2];
		pthread_t t[2];
		int i, winner;

		pthread_barrier_init(&start, NULL, 2);
		for (i = 0; i < 2; i++) {
			r[i] = (struct racer){ .vm = self->vm, .id = 10 + i, .mem = self->mem,
					       .start = &start };
			ASSERT_EQ(0, pthread_create(&t[i], NULL, create_at_same_gpa, &r[i]));
		}
		for (i = 0; i < 2; i++)
			ASSERT_EQ(0, pthread_join(t[i], NULL));
		pthread_barrier_destroy(&start);
		/* Exactly one slot got the range; the other saw it. */
		winner = r[0].result == 0 ? 0 : 1;
		ASSERT_EQ(0, r[winner].result) TH_LOG("round %d", round);
		ASSERT_EQ(-EEXIST, r[!winner].result) TH_LOG("round %d", round);
		ASSERT_EQ(0, set_region(self->vm, 10 + winner, 0, 0, 0, NULL));
	}
}

TEST_F(vm, vm_with_slots_can_be_closed)
{
	int i;

	for (i = 0; i < 8; i++)
		ASSERT_EQ(0, set_region(self->vm, i, 0, i * MB, MB, self->mem));
	/* The teardown closes the VM with its slots still in place. */
}

TEST_HARNESS_MAIN
