// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of dirty logging (KVM_MEM_LOG_DIRTY_PAGES and
 * KVM_GET_DIRTY_LOG), in the spirit of KVM's dirty_log_test:
 *
 *  - exact: vCPUs (1, 4 and 8) write bursts of random pages of a logging
 *    slot with a value of the round, the VMM collects the log between
 *    rounds, and the pages reported must be exactly the pages written that
 *    round; also with the slot moved between rounds' writes and their
 *    collection, and pages dropped by the VMM (MADV_DONTNEED);
 *  - migration: vCPUs keep writing random pages while the VMM collects
 *    the log and copies the pages it reports, as live migration does;
 *    once the vCPUs stop and a last collection is copied, the copy must
 *    equal guest memory, byte for byte (a lost dirty bit is a page that
 *    differs). With logging on from the slot's creation and turned on by
 *    a flags change over memory the guest had mapped writable (THP-backed:
 *    the large leaves are split eagerly, as the VM's pages_4k/pages_2m
 *    show);
 *  - manual protection (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2): the same with
 *    KVM_GET_DIRTY_LOG reading and KVM_CLEAR_DIRTY_LOG re-protecting, 512
 *    pages at a time, and with KVM_DIRTY_LOG_INITIALLY_SET (the first
 *    collection reports every page);
 *  - the dirty ring (KVM_CAP_DIRTY_LOG_RING_ACQ_REL): exact and migration
 *    again with the log read from per-vCPU rings (harvest, then
 *    KVM_RESET_DIRTY_RINGS, then copy), in migration while the vCPUs run
 *    and stop at KVM_EXIT_DIRTY_RING_FULL; a vCPU whose ring is soft-full
 *    does not run until the VMM harvests and resets (partially too), and
 *    no dirty page is lost across the stops; the ring's rules (sizes,
 *    once and before vCPUs only, no dirty bitmap with it, shared non-exec
 *    mappings only). Skipped when the device has no ring;
 *  - logging turned off and on again between runs, and while 4 vCPUs
 *    write (migration, bitmap and ring: the VMM copies everything again
 *    after each restart, and the final copy must still equal memory);
 *  - bad input: a bitmap the VMM cannot write (EFAULT; on rkvm the pages
 *    are then reported by the next call), slots that do not exist or do
 *    not log (ENOENT), bad slot numbers (EINVAL); KVM_CLEAR_DIRTY_LOG's
 *    range rules and KVM_ENABLE_CAP's options (EINVAL).
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"

#define MB (1024UL * 1024)
#define PAGE 4096UL

#define REGION_GPA	0x40000000UL	/* slot 1: the logged guest RAM */
#define SLOT		1
#define PORT_BURST	0x52
#define MBOX		GUEST_DATA	/* npages, burst, region GPA, value */
#define MAX_VCPUS	8
#define MOVED_GPA	0x80000000UL	/* where move_and_dontneed moves slot 1 */

/* The dirty ring: the cap used, its largest size, entries kept free. */
#define RING_CAP	KVM_CAP_DIRTY_LOG_RING_ACQ_REL
#define RING_MAX	(65536 * sizeof(struct kvm_dirty_gfn))
#define RING_RSVD	64	/* entries past the soft limit */
#define PML_ENTRIES	512	/* and more with kvm_intel's PML */
#define RING_SMALLEST	1	/* a variant's ring: the smallest there is */

/*
 * Forever: write `burst` random pages of the region (xorshift in R13,
 * seeded per vCPU), the first qword of each, with the mailbox's value, or
 * with the vCPU's own counter (R12) if that is 0; then OUT PORT_BURST.
 */
GUEST_CODE_BLOCK(writer_guest, ".code64",
	"mov $" XSTR(MBOX) ", %rbp\n"
	"1: mov 8(%rbp), %r14\n"
	"2: mov %r13, %rax\n shl $13, %rax\n xor %rax, %r13\n"
	"mov %r13, %rax\n shr $7, %rax\n xor %rax, %r13\n"
	"mov %r13, %rax\n shl $17, %rax\n xor %rax, %r13\n"
	"mov %r13, %rax\n xor %edx, %edx\n divq 0(%rbp)\n"
	"shl $12, %rdx\n add 16(%rbp), %rdx\n"
	"inc %r12\n mov 24(%rbp), %rax\n test %rax, %rax\n cmovz %r12, %rax\n"
	"mov %rax, (%rdx)\n"
	"dec %r14\n jnz 2b\n"
	"out %al, $" XSTR(PORT_BURST) "\n"
	"jmp 1b\n");

struct dvm {
	struct vm *vm;
	struct vcpu *v[MAX_VCPUS];
	int nr;
	uint8_t *mem;
	size_t size, npages;
	volatile uint64_t *mbox;
	uint64_t manual;	/* manual protection options, or 0 */
	uint32_t ring;		/* dirty ring bytes per vCPU, or 0: the bitmap */
	struct kvm_dirty_gfn *gfns[MAX_VCPUS];	/* each vCPU's ring, mapped */
	uint32_t fetch[MAX_VCPUS];	/* each ring's next entry to harvest */
};

/* KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) with @options. */
static long enable_manual(struct vm *vm, uint64_t options)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
		.args = { options },
	};

	return xioctl(vm->fd, KVM_ENABLE_CAP, (unsigned long)&cap);
}

/* KVM_ENABLE_CAP(@cap, a dirty ring cap) with ring size @size bytes. */
static long enable_ring(struct vm *vm, uint32_t cap, uint64_t size)
{
	struct kvm_enable_cap c = { .cap = cap, .args = { size } };

	return xioctl(vm->fd, KVM_ENABLE_CAP, (unsigned long)&c);
}

/* The device's CHECK_EXTENSION(RING_CAP): the largest ring, 0 if none. */
static long ring_cap(void)
{
	return rkvm_dev_check_extension(RING_CAP);
}

#define SKIP_WITHOUT_RING()							\
	do {									\
		if (ring_cap() <= 0)						\
			SKIP(return, "no dirty ring: CHECK_EXTENSION(KVM_CAP_"	\
			     "DIRTY_LOG_RING_ACQ_REL) is 0 on %s", rkvm_dev_path()); \
	} while (0)

/*
 * Entries a ring keeps free past its soft limit: KVM's 64, and 512 more
 * on kvm_intel with PML, whose 512-entry log of the guest's writes is
 * emptied into the ring at the vCPU's next exit (rkvm has no PML).
 */
static uint32_t ring_rsvd(void)
{
	char pml = 'N';
	FILE *f;

	if (strcmp(rkvm_dev_path(), "/dev/kvm"))
		return RING_RSVD;
	f = fopen("/sys/module/kvm_intel/parameters/pml", "r");
	if (f) {
		if (fscanf(f, " %c", &pml) != 1)
			pml = 'N';
		fclose(f);
	}
	return RING_RSVD + (pml == 'Y' ? PML_ENTRIES : 0);
}

/*
 * The smallest ring the device takes: a page (256 entries, soft limit
 * 192), or larger to hold the reserved entries (16 KiB with PML).
 */
static uint32_t ring_smallest(void)
{
	uint32_t size = PAGE;

	while (size < ring_rsvd() * sizeof(struct kvm_dirty_gfn))
		size *= 2;
	return size;
}

/* mmap of @size bytes of vCPU fd @fd's ring (KVM_DIRTY_LOG_PAGE_OFFSET). */
static void *ring_mmap(int fd, size_t size, int prot, int flags)
{
	return mmap(NULL, size, prot, flags, fd, KVM_DIRTY_LOG_PAGE_OFFSET * PAGE);
}

/*
 * A VM whose slot 1 (@size bytes, @flags) the writer guest writes, @nr
 * vCPUs, manual dirty-log protection with @manual options if not 0
 * (enabled before the slot is created, as INITIALLY_SET applies to logs
 * created afterwards), dirty rings of @ring bytes if not 0 (enabled
 * before the vCPUs are created, each vCPU's mapped).
 */
static struct dvm *dvm_new(size_t size, int nr, uint32_t flags, uint64_t manual,
			   uint32_t ring)
{
	struct dvm *d = calloc(1, sizeof(*d));
	struct kvm_regs regs;
	int i;

	if (!d)
		return NULL;
	d->vm = vm_new(GUEST_MEM_SIZE);
	d->manual = manual;
	if (manual && enable_manual(d->vm, manual))
		return NULL;
	d->ring = ring;
	if (ring && enable_ring(d->vm, RING_CAP, ring))
		return NULL;
	d->size = size;
	d->npages = size / PAGE;
	d->mem = guest_alloc(size);
	if (vm_set_region(d->vm, SLOT, flags, REGION_GPA, size, d->mem))
		return NULL;
	vm_load(d->vm, GUEST_CODE, writer_guest, writer_guest_end);
	d->mbox = gpa_ptr(d->vm, MBOX);
	d->mbox[0] = d->npages;
	d->mbox[1] = 64;
	d->mbox[2] = REGION_GPA;
	d->mbox[3] = 0;
	d->nr = nr;
	for (i = 0; i < nr; i++) {
		d->v[i] = vcpu_new(d->vm, i, MODE_LONG64, GUEST_CODE, GUEST_STACK - i * 0x1000);
		vcpu_get_regs(d->v[i], &regs);
		regs.r13 = 0x9e3779b97f4a7c15ULL * (i + 1);
		vcpu_set_regs(d->v[i], &regs);
		if (!ring)
			continue;
		d->gfns[i] = ring_mmap(d->v[i]->fd, ring, PROT_READ | PROT_WRITE, MAP_SHARED);
		if (d->gfns[i] == MAP_FAILED)
			return NULL;
	}
	return d;
}

static void dvm_free(struct dvm *d)
{
	int i;

	for (i = 0; i < d->nr; i++) {
		if (d->ring)
			munmap(d->gfns[i], d->ring);
		vcpu_free(d->v[i]);
	}
	vm_free(d->vm);
	munmap(d->mem, d->size);
	free(d);
}

/* Whether KVM_RUN (result @r) ended a burst at its OUT: 0, or -1 (printed). */
static int burst_done(struct vcpu *v, int r)
{
	if (r < 0) {
		fprintf(stderr, "# KVM_RUN: %s\n", strerror(-r));
		return -1;
	}
	return check_io(v, KVM_EXIT_IO_OUT, 1, PORT_BURST, 1) ? -1 : 0;
}

/* One burst of vCPU @i: 0, or -1 (printed) if it did not end at its OUT. */
static int burst(struct vcpu *v)
{
	return burst_done(v, run_until_exit(v));
}

static long get_log(struct dvm *d, void *bitmap)
{
	struct kvm_dirty_log log = { .slot = SLOT, .dirty_bitmap = bitmap };

	return xioctl(d->vm->fd, KVM_GET_DIRTY_LOG, (unsigned long)&log);
}

static long clear_log(struct dvm *d, uint64_t first, uint32_t num, void *bitmap)
{
	struct kvm_clear_dirty_log log = {
		.slot = SLOT, .num_pages = num, .first_page = first, .dirty_bitmap = bitmap,
	};

	return xioctl(d->vm->fd, KVM_CLEAR_DIRTY_LOG, (unsigned long)&log);
}

static uint32_t ring_entries(struct dvm *d)
{
	return d->ring / sizeof(struct kvm_dirty_gfn);
}

/*
 * Harvests up to @max entries of vCPU @i's ring from its fetch index, as
 * the ring ABI orders it: the flags loaded with acquire, and if DIRTY the
 * slot and offset read, then RESET stored with release. Each page goes
 * into @bm. The number harvested, or -EPROTO (printed) for an entry that
 * is not a page of slot 1 or whose flags are not exactly DIRTY.
 */
static long harvest(struct dvm *d, int i, uint64_t *bm, long max)
{
	long n = 0;

	while (n < max) {
		uint32_t at = d->fetch[i] & (ring_entries(d) - 1);
		struct kvm_dirty_gfn *e = &d->gfns[i][at];
		uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
		uint32_t slot;
		uint64_t off;

		if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
			break;
		slot = e->slot;
		off = e->offset;
		if (flags != KVM_DIRTY_GFN_F_DIRTY || slot != SLOT || off >= d->npages) {
			fprintf(stderr, "# vCPU %d ring entry %u: flags %#x slot %#x offset %llu\n",
				i, at, flags, slot, (unsigned long long)off);
			return -EPROTO;
		}
		bm[off / 64] |= 1ULL << (off % 64);
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		d->fetch[i]++;
		n++;
	}
	return n;
}

/* Dirty entries in vCPU @i's ring from its fetch index (not harvested). */
static long ring_dirty(struct dvm *d, int i)
{
	uint32_t n;

	for (n = 0; n < ring_entries(d); n++) {
		struct kvm_dirty_gfn *e = &d->gfns[i][(d->fetch[i] + n) & (ring_entries(d) - 1)];

		if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
			break;
	}
	return n;
}

/*
 * Harvests up to @max entries of every vCPU's ring into @bm (added to
 * what it holds), then KVM_RESET_DIRTY_RINGS, which must reset as many
 * entries as were harvested. The number harvested, or -errno.
 */
static long ring_collect(struct dvm *d, uint64_t *bm, long max)
{
	long n = 0, r;
	int i;

	for (i = 0; i < d->nr; i++) {
		r = harvest(d, i, bm, max);
		if (r < 0)
			return r;
		n += r;
	}
	r = xioctl(d->vm->fd, KVM_RESET_DIRTY_RINGS, 0);
	if (r != n) {
		fprintf(stderr, "# KVM_RESET_DIRTY_RINGS: %ld, %ld entries harvested\n", r, n);
		return r < 0 ? r : -EPROTO;
	}
	return n;
}

/*
 * One collection as a VMM does it: KVM_GET_DIRTY_LOG into @bm, and with
 * manual protection KVM_CLEAR_DIRTY_LOG of what it reported, 512 pages
 * at a time (the last chunk whatever is left); with the ring, every
 * vCPU's ring harvested into @bm and reset. 0 or -errno.
 */
static long collect(struct dvm *d, uint64_t *bm)
{
	size_t first;
	long r;

	if (d->ring) {
		memset(bm, 0, (d->npages + 63) / 64 * 8);
		r = ring_collect(d, bm, LONG_MAX);
		return r < 0 ? r : 0;
	}
	r = get_log(d, bm);
	if (r || !d->manual)
		return r;
	for (first = 0; first < d->npages && !r; first += 512) {
		size_t num = d->npages - first < 512 ? d->npages - first : 512;

		r = clear_log(d, first, num, bm + first / 64);
	}
	return r;
}

static uint64_t *bitmap_new(struct dvm *d)
{
	return calloc((d->npages + 63) / 64, 8);
}

static bool test_bit(const uint64_t *b, size_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static uint64_t first_qword(struct dvm *d, size_t page)
{
	return *(volatile uint64_t *)(d->mem + page * PAGE);
}

/* --- Exact: rounds of bursts, the log between them. ------------------- */

struct burst_arg {
	struct vcpu *v;
	int bursts, failed;
};

static void *burst_thread(void *arg)
{
	struct burst_arg *a = arg;
	int i;

	for (i = 0; i < a->bursts; i++)
		a->failed |= burst(a->v);
	return NULL;
}

FIXTURE(exact) {
	struct dvm *d;
};

FIXTURE_VARIANT(exact) {
	int vcpus;
	uint64_t manual;
	/* Every third round the slot moves (with writes not yet collected),
	 * and after every third collection the VMM drops some pages. */
	bool move_and_dontneed;
	uint32_t ring;
};

#define MANUAL		KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
#define MANUAL_ALL_SET	(MANUAL | KVM_DIRTY_LOG_INITIALLY_SET)

FIXTURE_VARIANT_ADD(exact, vcpus_1) { .vcpus = 1 };
FIXTURE_VARIANT_ADD(exact, vcpus_4) { .vcpus = 4 };
FIXTURE_VARIANT_ADD(exact, vcpus_8) { .vcpus = 8 };
FIXTURE_VARIANT_ADD(exact, move_and_dontneed_vcpus_4) { .vcpus = 4, .move_and_dontneed = true };
FIXTURE_VARIANT_ADD(exact, manual_vcpus_4) { .vcpus = 4, .manual = MANUAL };
FIXTURE_VARIANT_ADD(exact, manual_all_set_vcpus_1) { .vcpus = 1, .manual = MANUAL_ALL_SET };
/*
 * Rings of 1024 entries: a round's two bursts add at most 128 entries per
 * vCPU, well below the soft limit (960, or 448 with PML), so no round
 * stops at KVM_EXIT_DIRTY_RING_FULL; and each ring wraps around about
 * twice in 20 rounds.
 */
#define EXACT_RING	(1024 * sizeof(struct kvm_dirty_gfn))
FIXTURE_VARIANT_ADD(exact, ring_vcpus_1) { .vcpus = 1, .ring = EXACT_RING };
FIXTURE_VARIANT_ADD(exact, ring_vcpus_4) { .vcpus = 4, .ring = EXACT_RING };
FIXTURE_VARIANT_ADD(exact, ring_vcpus_8) { .vcpus = 8, .ring = EXACT_RING };
FIXTURE_VARIANT_ADD(exact, ring_move_and_dontneed_vcpus_4) {
	.vcpus = 4, .move_and_dontneed = true, .ring = EXACT_RING
};

FIXTURE_SETUP(exact)
{
	if (variant->ring)
		SKIP_WITHOUT_RING();
	self->d = dvm_new(8 * MB, variant->vcpus, KVM_MEM_LOG_DIRTY_PAGES, variant->manual,
			  variant->ring);
	ASSERT_NE(NULL, self->d);
}

FIXTURE_TEARDOWN(exact)
{
	dvm_free(self->d);
}

TEST_F(exact, reported_pages_are_the_written_pages)
{
	struct dvm *d = self->d;
	uint64_t *bm = bitmap_new(d);
	int rounds = stress_iters(20), r, i;
	long reported = 0;
	size_t p;

	ASSERT_NE(NULL, bm);
	/* Nothing written yet: nothing reported, or all with INITIALLY_SET. */
	ASSERT_EQ(0, collect(d, bm));
	for (p = 0; p < d->npages; p++)
		ASSERT_EQ(d->manual == MANUAL_ALL_SET, test_bit(bm, p));
	if (d->manual) {
		/* Manual protection: a GET alone takes nothing. */
		ASSERT_EQ(0, get_log(d, bm));
		for (p = 0; p < d->npages; p++)
			ASSERT_FALSE(test_bit(bm, p));
	}
	for (r = 1; r <= rounds; r++) {
		pthread_t t[MAX_VCPUS];
		struct burst_arg a[MAX_VCPUS];
		uint64_t value = 0xd1d1ULL << 48 | r;
		long written = 0, bad = 0;

		d->mbox[3] = value;
		for (i = 0; i < d->nr; i++) {
			a[i] = (struct burst_arg){ .v = d->v[i], .bursts = 2 };
			ASSERT_EQ(0, pthread_create(&t[i], NULL, burst_thread, &a[i]));
		}
		for (i = 0; i < d->nr; i++) {
			pthread_join(t[i], NULL);
			ASSERT_EQ(0, a[i].failed);
		}
		if (variant->move_and_dontneed && r % 3 == 1) {
			/* The log follows the slot, uncollected bits too. */
			uint64_t to = d->mbox[2] == REGION_GPA ? MOVED_GPA : REGION_GPA;

			ASSERT_EQ(0, vm_set_region(d->vm, SLOT, KVM_MEM_LOG_DIRTY_PAGES, to,
						   d->size, d->mem));
			d->mbox[2] = to;
		}
		ASSERT_EQ(0, collect(d, bm));
		for (p = 0; p < d->npages; p++) {
			bool w = first_qword(d, p) == value;

			written += w;
			reported += test_bit(bm, p);
			if (w != test_bit(bm, p) && bad++ < 5)
				TH_LOG("round %d: page %zu %s", r, p,
				       w ? "written, not reported" : "reported, not written");
		}
		ASSERT_EQ(0, bad);
		ASSERT_LT(0, written);
		if (variant->move_and_dontneed && r % 3 == 2) {
			/*
			 * Pages the VMM drops are not guest writes: not
			 * reported, unless the guest writes them again (next
			 * round's check: zero pages hold no round's value).
			 */
			for (i = 0; i < 16; i++)
				ASSERT_EQ(0, madvise(d->mem + (i * 97 % d->npages) * PAGE,
						     PAGE, MADV_DONTNEED));
		}
	}
	TH_LOG("%d rounds, %d vCPUs: %ld pages reported, each written that round",
	       rounds, d->nr, reported);
	free(bm);
}

/* --- Migration: copy what the log reports while the guest writes. ---- */

static volatile int mig_stop;
static int mig_ring;		/* the VM logs to dirty rings */
static long mig_ring_full;	/* KVM_EXIT_DIRTY_RING_FULL exits seen */

static void *run_thread(void *arg)
{
	struct vcpu *v = arg;
	int r;

	while (!mig_stop) {
		r = run_until_exit(v);
		if (mig_ring && r == KVM_EXIT_DIRTY_RING_FULL) {
			/*
			 * The ring is soft-full: KVM_RUN returns at once
			 * until the collector harvests and resets it.
			 */
			__atomic_add_fetch(&mig_ring_full, 1, __ATOMIC_RELAXED);
			usleep(1000);
			continue;
		}
		if (burst_done(v, r))
			return (void *)1;
	}
	return NULL;
}

/* Copies the pages @bm reports from guest memory to @copy. */
static long copy_reported(struct dvm *d, const uint64_t *bm, uint8_t *copy)
{
	long n = 0;
	size_t p;

	for (p = 0; p < d->npages; p++) {
		if (test_bit(bm, p)) {
			memcpy(copy + p * PAGE, d->mem + p * PAGE, PAGE);
			n++;
		}
	}
	return n;
}

/*
 * Which fault path fixed the write faults (the vCPUs' pf_fast and pf_fixed
 * statistics). rkvm takes the fast page fault for pages write-protected by
 * a collection, unless loaded with fast_page_fault=0, which its test run
 * says with RKVM_PF_FAST=0; stock KVM's figures are only logged.
 */
static void check_fault_paths(struct __test_metadata *_metadata, struct dvm *d)
{
	const char *want = getenv("RKVM_PF_FAST");
	int64_t fast = 0, fixed = 0;
	struct stats st;
	int i;

	for (i = 0; i < d->nr; i++) {
		ASSERT_EQ(0, stats_open(&st, d->v[i]->fd));
		fast += stat_get(&st, "pf_fast");
		fixed += stat_get(&st, "pf_fixed");
		stats_close(&st);
	}
	TH_LOG("write faults: %ld fixed by the fast path, %ld by the locked path",
	       (long)fast, (long)fixed);
	if (!strcmp(rkvm_dev_path(), "/dev/kvm"))
		return;
	if (want && !strcmp(want, "0")) {
		EXPECT_EQ(0, fast);
	} else {
		EXPECT_LT(0, fast);
	}
}

FIXTURE(migrate) {
	struct dvm *d;
};

FIXTURE_VARIANT(migrate) {
	int vcpus;
	bool enable_later;	/* logging turned on by a flags change */
	uint64_t manual;
	uint32_t ring;
	/*
	 * Every this many collections, logging is turned off and on again
	 * while the vCPUs write (a VMM that restarts a migration): the new
	 * log starts clear, so everything is copied again right after.
	 */
	int toggle_every;
};

FIXTURE_VARIANT_ADD(migrate, from_creation_1) { .vcpus = 1 };
FIXTURE_VARIANT_ADD(migrate, from_creation_4) { .vcpus = 4 };
FIXTURE_VARIANT_ADD(migrate, enabled_later_4) { .vcpus = 4, .enable_later = true };
FIXTURE_VARIANT_ADD(migrate, manual_4) { .vcpus = 4, .manual = MANUAL };
FIXTURE_VARIANT_ADD(migrate, manual_all_set_enabled_later_4) {
	.vcpus = 4, .enable_later = true, .manual = MANUAL_ALL_SET
};
/*
 * Rings small enough that vCPUs stop at KVM_EXIT_DIRTY_RING_FULL between
 * collections (the smallest with 4 vCPUs from creation).
 */
FIXTURE_VARIANT_ADD(migrate, ring_from_creation_1) {
	.vcpus = 1, .ring = 1024 * sizeof(struct kvm_dirty_gfn)
};
FIXTURE_VARIANT_ADD(migrate, ring_from_creation_4) { .vcpus = 4, .ring = RING_SMALLEST };
FIXTURE_VARIANT_ADD(migrate, ring_enabled_later_4) {
	.vcpus = 4, .enable_later = true, .ring = 1024 * sizeof(struct kvm_dirty_gfn)
};
FIXTURE_VARIANT_ADD(migrate, toggled_while_running_4) { .vcpus = 4, .toggle_every = 5 };
FIXTURE_VARIANT_ADD(migrate, ring_toggled_while_running_4) {
	.vcpus = 4, .ring = 1024 * sizeof(struct kvm_dirty_gfn), .toggle_every = 5
};

FIXTURE_SETUP(migrate)
{
	if (variant->ring)
		SKIP_WITHOUT_RING();
	self->d = dvm_new(16 * MB, variant->vcpus,
			  variant->enable_later ? 0 : KVM_MEM_LOG_DIRTY_PAGES, variant->manual,
			  variant->ring == RING_SMALLEST ? ring_smallest() : variant->ring);
	ASSERT_NE(NULL, self->d);
}

FIXTURE_TEARDOWN(migrate)
{
	dvm_free(self->d);
}

TEST_F(migrate, copy_of_reported_pages_equals_memory)
{
	struct dvm *d = self->d;
	uint64_t *bm = bitmap_new(d);
	uint8_t *copy = malloc(d->size);
	int rounds = stress_iters(30), r, i, toggles = 0;
	pthread_t t[MAX_VCPUS];
	long copied = 0, differ = 0;
	int64_t small, large;
	struct stats st;
	size_t p;
	void *ret;

	ASSERT_NE(NULL, bm);
	ASSERT_NE(NULL, copy);
	if (variant->enable_later) {
		/* The guest maps the memory writable (large leaves) first. */
		for (i = 0; i < d->nr; i++)
			for (r = 0; r < 8; r++)
				ASSERT_EQ(0, burst(d->v[i]));
		/* With the ring there is no dirty bitmap at all. */
		ASSERT_EQ(d->ring ? -ENXIO : -ENOENT, get_log(d, bm)) TH_LOG("not logging yet");
		ASSERT_EQ(0, stats_open(&st, d->vm->fd));
		small = stat_get(&st, "pages_4k");
		large = stat_get(&st, "pages_2m");
		ASSERT_EQ(0, vm_set_region(d->vm, SLOT, KVM_MEM_LOG_DIRTY_PAGES,
					   REGION_GPA, d->size, d->mem));
		/*
		 * Eager splitting: the 2 MiB leaves over the slot become 512
		 * 4 KiB leaves each, with no guest fault.
		 */
		large -= stat_get(&st, "pages_2m");
		small = stat_get(&st, "pages_4k") - small;
		stats_close(&st);
		TH_LOG("logging on: %ld 2 MiB leaves split into %ld 4 KiB leaves",
		       (long)large, (long)small);
		EXPECT_EQ(512 * large, small);
	}
	/* The first pass copies everything; the log covers what follows. */
	memcpy(copy, d->mem, d->size);
	mig_stop = 0;
	mig_ring = !!d->ring;
	mig_ring_full = 0;
	for (i = 0; i < d->nr; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, run_thread, d->v[i]));
	for (r = 0; r < rounds; r++) {
		usleep(2000);
		if (variant->toggle_every && r % variant->toggle_every == variant->toggle_every - 1) {
			ASSERT_EQ(0, vm_set_region(d->vm, SLOT, 0, REGION_GPA, d->size, d->mem));
			usleep(1000);
			ASSERT_EQ(0, vm_set_region(d->vm, SLOT, KVM_MEM_LOG_DIRTY_PAGES,
						   REGION_GPA, d->size, d->mem));
			/* What was written while not logging is in no log. */
			memcpy(copy, d->mem, d->size);
			toggles++;
		}
		ASSERT_EQ(0, collect(d, bm));
		copied += copy_reported(d, bm, copy);
	}
	mig_stop = 1;
	for (i = 0; i < d->nr; i++) {
		pthread_join(t[i], &ret);
		ASSERT_EQ(NULL, ret);
	}
	/* The last pass, with the vCPUs stopped. */
	ASSERT_EQ(0, collect(d, bm));
	copied += copy_reported(d, bm, copy);
	for (p = 0; p < d->npages; p++) {
		if (memcmp(copy + p * PAGE, d->mem + p * PAGE, PAGE) && differ++ < 5)
			TH_LOG("page %zu changed but was not reported", p);
	}
	TH_LOG("%d collections, %d vCPUs: %ld pages copied; logging turned off and on %d times",
	       rounds + 1, d->nr, copied, toggles);
	if (d->ring)
		TH_LOG("ring of %u entries: %ld KVM_EXIT_DIRTY_RING_FULL exits",
		       ring_entries(d), mig_ring_full);
	EXPECT_EQ(0, differ);
	EXPECT_LT(0, copied);
	check_fault_paths(_metadata, d);
	free(copy);
	free(bm);
}

/* --- The dirty ring: a full ring stops its vCPU; the ring's rules. -- */

/*
 * The smallest ring (256 entries, soft limit 192, without PML) and one
 * vCPU writing its own count (never 0) to random pages; the VMM harvests
 * only when KVM_RUN returns KVM_EXIT_DIRTY_RING_FULL. The ring then holds
 * at least the soft limit of dirty entries and at most all of them, and
 * KVM_RUN keeps stopping (the guest does not run) until enough is
 * harvested and reset: all of it, or on odd rounds all but half the soft
 * limit (the rest waits for the next harvest). In the end every page
 * written was reported, and no other.
 */
TEST(ring_full_stops_the_vcpu)
{
	const uint32_t size = ring_smallest(), entries = size / sizeof(struct kvm_dirty_gfn);
	const long soft = entries - ring_rsvd();
	long lo = LONG_MAX, hi = 0, harvested = 0, written = 0, bad = 0, n, dirty;
	int fulls = stress_iters(16), f, bursts, r;
	struct kvm_regs before, after;
	struct vcpu *v;
	struct dvm *d;
	uint64_t *seen;
	size_t p;

	SKIP_WITHOUT_RING();
	d = dvm_new(4 * MB, 1, KVM_MEM_LOG_DIRTY_PAGES, 0, size);
	ASSERT_NE(NULL, d);
	v = d->v[0];
	seen = bitmap_new(d);
	ASSERT_NE(NULL, seen);
	for (f = 0; f < fulls; f++) {
		/* Bursts, nothing harvested, until the ring stops the vCPU. */
		for (bursts = 0; (r = run_until_exit(v)) != KVM_EXIT_DIRTY_RING_FULL; bursts++) {
			ASSERT_EQ(0, burst_done(v, r));
			ASSERT_GT(64, bursts)
				TH_LOG("%ld dirty entries, no DIRTY_RING_FULL", ring_dirty(d, 0));
		}
		dirty = ring_dirty(d, 0);
		ASSERT_LE(soft, dirty);
		ASSERT_GE(entries, dirty);
		lo = dirty < lo ? dirty : lo;
		hi = dirty > hi ? dirty : hi;
		/*
		 * Not without a harvest and reset (a reset of nothing
		 * harvested frees nothing): KVM_RUN stops again at once.
		 */
		vcpu_get_regs(v, &before);
		ASSERT_EQ(KVM_EXIT_DIRTY_RING_FULL, run_until_exit(v));
		ASSERT_EQ(0, xioctl(d->vm->fd, KVM_RESET_DIRTY_RINGS, 0));
		ASSERT_EQ(KVM_EXIT_DIRTY_RING_FULL, run_until_exit(v));
		vcpu_get_regs(v, &after);
		ASSERT_EQ(before.rip, after.rip);
		ASSERT_EQ(before.r12, after.r12) TH_LOG("the guest wrote while its ring was full");
		ASSERT_EQ(dirty, ring_dirty(d, 0));
		n = f % 2 ? dirty - soft / 2 : dirty;
		ASSERT_EQ(n, ring_collect(d, seen, n));
		ASSERT_EQ(dirty - n, ring_dirty(d, 0));
		harvested += n;
	}
	/* One run more (a burst, or a full ring again); then the last harvest. */
	r = run_until_exit(v);
	if (r != KVM_EXIT_DIRTY_RING_FULL)
		ASSERT_EQ(0, burst_done(v, r));
	n = ring_collect(d, seen, LONG_MAX);
	ASSERT_LE(0, n);
	harvested += n;
	ASSERT_EQ(0, ring_dirty(d, 0));
	for (p = 0; p < d->npages; p++) {
		bool w = first_qword(d, p) != 0;

		written += w;
		if (w != test_bit(seen, p) && bad++ < 5)
			TH_LOG("page %zu %s", p, w ? "written, never reported" : "reported, never written");
	}
	EXPECT_EQ(0, bad);
	TH_LOG("%d full exits with %ld..%ld of %u entries dirty (soft limit %ld); "
	       "%ld entries harvested, %ld pages written", fulls, lo, hi, entries, soft,
	       harvested, written);
	free(seen);
	dvm_free(d);
}

TEST(ring_bad_input)
{
	const uint32_t small = ring_smallest();
	struct vcpu *v;
	struct dvm *d;
	struct vm *vm;
	uint64_t *bm;
	long n, i;
	void *m;
	int err;

	SKIP_WITHOUT_RING();
	vm = vm_new(GUEST_MEM_SIZE);
	/* Both ring caps, on the device and the VM; no ring with bitmap on x86. */
	EXPECT_EQ(RING_MAX, xioctl(vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING));
	EXPECT_EQ(RING_MAX, xioctl(vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL));
	EXPECT_EQ(RING_MAX, xioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING));
	EXPECT_EQ(RING_MAX, xioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL));
	EXPECT_EQ(0, xioctl(vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP));
	EXPECT_EQ(0, xioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP));
	/* Sizes: a power of two, a page at least, RING_MAX at most. */
	EXPECT_EQ(-EINVAL, enable_ring(vm, RING_CAP, 0));
	EXPECT_EQ(-EINVAL, enable_ring(vm, RING_CAP, 3000));
	EXPECT_EQ(-EINVAL, enable_ring(vm, RING_CAP, 2048));
	EXPECT_EQ(-E2BIG, enable_ring(vm, RING_CAP, 2 * MB));
	/* No ring, nothing to reset. */
	EXPECT_EQ(-EINVAL, xioctl(vm->fd, KVM_RESET_DIRTY_RINGS, 0));
	/* Only before the first vCPU. */
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	EXPECT_EQ(-EINVAL, enable_ring(vm, RING_CAP, small));
	EXPECT_EQ(-EINVAL, enable_ring(vm, KVM_CAP_DIRTY_LOG_RING, small));
	vcpu_free(v);
	vm_free(vm);

	/* Once, by either cap (x86 is TSO: the plain one is offered too). */
	vm = vm_new(GUEST_MEM_SIZE);
	EXPECT_EQ(0, enable_ring(vm, KVM_CAP_DIRTY_LOG_RING, small));
	EXPECT_EQ(-EINVAL, enable_ring(vm, KVM_CAP_DIRTY_LOG_RING, small));
	EXPECT_EQ(-EINVAL, enable_ring(vm, RING_CAP, 2 * small));
	EXPECT_EQ(0, xioctl(vm->fd, KVM_RESET_DIRTY_RINGS, 0));
	vm_free(vm);

	d = dvm_new(4 * MB, 1, KVM_MEM_LOG_DIRTY_PAGES, 0, 2 * small);
	ASSERT_NE(NULL, d);
	bm = bitmap_new(d);
	ASSERT_NE(NULL, bm);
	EXPECT_EQ(-EINVAL, enable_ring(d->vm, RING_CAP, 2 * small));
	/* The ring replaces the slots' bitmaps. */
	EXPECT_EQ(-ENXIO, get_log(d, bm));
	EXPECT_EQ(-ENXIO, clear_log(d, 0, 64, bm));
	/*
	 * Shared, not executable mappings only. An executable one may fail
	 * in the VFS first (EPERM: vCPU fds are anonymous inodes, on a
	 * noexec mount in recent kernels), else in KVM (EINVAL).
	 */
	m = ring_mmap(d->v[0]->fd, d->ring, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	err = errno;
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_EQ(EINVAL, err);
	if (m != MAP_FAILED)
		munmap(m, d->ring);
	m = ring_mmap(d->v[0]->fd, d->ring, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED);
	err = errno;
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_TRUE(err == EINVAL || err == EPERM) TH_LOG("errno %d", err);
	if (m != MAP_FAILED)
		munmap(m, d->ring);
	/*
	 * A ring starts empty. A reset takes only harvested entries (none
	 * yet: 0), and sets each it resets back to 0.
	 */
	for (i = 0; i < ring_entries(d); i++)
		EXPECT_EQ(0, d->gfns[0][i].flags);
	EXPECT_EQ(0, xioctl(d->vm->fd, KVM_RESET_DIRTY_RINGS, 0));
	ASSERT_EQ(0, burst(d->v[0]));
	n = ring_dirty(d, 0);
	EXPECT_LT(0, n);
	EXPECT_GE(64, n);
	EXPECT_EQ(0, xioctl(d->vm->fd, KVM_RESET_DIRTY_RINGS, 0));
	EXPECT_EQ(n, ring_dirty(d, 0));
	EXPECT_EQ(n, ring_collect(d, bm, LONG_MAX));
	for (i = 0; i < n; i++)
		EXPECT_EQ(0, d->gfns[0][i].flags);
	EXPECT_EQ(0, xioctl(d->vm->fd, KVM_RESET_DIRTY_RINGS, 0));
	free(bm);
	dvm_free(d);
}

/* --- Logging off and on again; bad input. ----------------------------- */

TEST(logging_off_and_on_again)
{
	struct dvm *d = dvm_new(4 * MB, 1, KVM_MEM_LOG_DIRTY_PAGES, 0, 0);
	uint64_t *bm;
	size_t p;
	long n;

	ASSERT_NE(NULL, d);
	bm = bitmap_new(d);
	ASSERT_EQ(0, burst(d->v[0]));
	ASSERT_EQ(0, vm_set_region(d->vm, SLOT, 0, REGION_GPA, d->size, d->mem));
	EXPECT_EQ(-ENOENT, get_log(d, bm));
	/* Not logging: the guest writes, on large leaves again. */
	ASSERT_EQ(0, burst(d->v[0]));
	ASSERT_EQ(0, vm_set_region(d->vm, SLOT, KVM_MEM_LOG_DIRTY_PAGES, REGION_GPA,
				   d->size, d->mem));
	/* A new log starts clear: what was written before is not in it. */
	ASSERT_EQ(0, get_log(d, bm));
	for (p = 0, n = 0; p < d->npages; p++)
		n += test_bit(bm, p);
	EXPECT_EQ(0, n);
	d->mbox[3] = 0x5a5a5a5a;
	ASSERT_EQ(0, burst(d->v[0]));
	ASSERT_EQ(0, get_log(d, bm));
	for (p = 0, n = 0; p < d->npages; p++) {
		n += test_bit(bm, p);
		if (first_qword(d, p) == 0x5a5a5a5a)
			EXPECT_TRUE(test_bit(bm, p));
	}
	EXPECT_LT(0, n);
	free(bm);
	dvm_free(d);
}

TEST(bad_input)
{
	struct dvm *d = dvm_new(4 * MB, 1, KVM_MEM_LOG_DIRTY_PAGES, 0, 0);
	struct kvm_enable_cap cap = {	/* with a flag: refused */
		.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .flags = 1, .args = { MANUAL },
	};
	struct kvm_dirty_log log = { 0 };
	uint64_t *bm;
	void *ro;
	size_t p;
	long n;

	ASSERT_NE(NULL, d);
	bm = bitmap_new(d);
	d->mbox[3] = 0x77;
	ASSERT_EQ(0, burst(d->v[0]));
	/*
	 * A bitmap the VMM cannot write: EFAULT. rkvm also takes nothing
	 * then, so the next call reports the pages; KVM takes the bits first
	 * and loses them, so that part is rkvm's alone.
	 */
	EXPECT_EQ(-EFAULT, get_log(d, (void *)8));
	ro = mmap(NULL, PAGE * 2, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, ro);
	EXPECT_EQ(-EFAULT, get_log(d, ro));
	ASSERT_EQ(0, get_log(d, bm));
	for (p = 0, n = 0; p < d->npages; p++)
		n += first_qword(d, p) == 0x77 && test_bit(bm, p);
	if (strcmp(rkvm_dev_path(), "/dev/kvm"))
		EXPECT_LT(0, n) TH_LOG("the pages are reported after the EFAULTs");
	/*
	 * Slots: slot 0 does not log, 7 does not exist, 0x7fff is past every
	 * hypervisor's slot ids; address space 1 exists only with SMM
	 * (KVM_CAP_MULTI_ADDRESS_SPACE > 1), where slot 1 is not in it.
	 */
	log.dirty_bitmap = bm;
	log.slot = 0;
	EXPECT_EQ(-ENOENT, xioctl(d->vm->fd, KVM_GET_DIRTY_LOG, (unsigned long)&log));
	log.slot = 7;
	EXPECT_EQ(-ENOENT, xioctl(d->vm->fd, KVM_GET_DIRTY_LOG, (unsigned long)&log));
	log.slot = 0x7fff;
	EXPECT_EQ(-EINVAL, xioctl(d->vm->fd, KVM_GET_DIRTY_LOG, (unsigned long)&log));
	log.slot = 1 << 16 | SLOT;
	EXPECT_EQ(xioctl(d->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_MULTI_ADDRESS_SPACE) > 1 ?
		  -ENOENT : -EINVAL,
		  xioctl(d->vm->fd, KVM_GET_DIRTY_LOG, (unsigned long)&log));
	EXPECT_EQ(-EFAULT, xioctl(d->vm->fd, KVM_GET_DIRTY_LOG, 8));

	/*
	 * KVM_CLEAR_DIRTY_LOG: 64-page aligned starts, in the slot, whole
	 * words unless it runs to the slot's end (1024 pages here); the
	 * bitmap is read before anything is taken. Allowed without manual
	 * protection, as in KVM.
	 */
	memset(bm, 0xff, (d->npages + 63) / 64 * 8);
	EXPECT_EQ(-EINVAL, clear_log(d, 1, 64, bm));
	EXPECT_EQ(-EINVAL, clear_log(d, 0, 1025, bm));
	EXPECT_EQ(-EINVAL, clear_log(d, 1088, 0, bm));
	EXPECT_EQ(-EINVAL, clear_log(d, 0, 65, bm));
	EXPECT_EQ(-EFAULT, clear_log(d, 0, 64, (void *)8));
	EXPECT_EQ(0, clear_log(d, 1024, 0, bm));
	EXPECT_EQ(0, clear_log(d, 960, 64, bm));
	EXPECT_EQ(0, clear_log(d, 0, 1024, bm));
	EXPECT_EQ(-EFAULT, xioctl(d->vm->fd, KVM_CLEAR_DIRTY_LOG, 8));
	/* KVM_ENABLE_CAP: no flags; INITIALLY_SET only with protection. */
	EXPECT_EQ(3, xioctl(d->vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
	EXPECT_EQ(-EINVAL, enable_manual(d->vm, KVM_DIRTY_LOG_INITIALLY_SET));
	EXPECT_EQ(-EINVAL, enable_manual(d->vm, 1 << 2 | MANUAL));
	EXPECT_EQ(-EINVAL, xioctl(d->vm->fd, KVM_ENABLE_CAP, (unsigned long)&cap));
	EXPECT_EQ(0, enable_manual(d->vm, MANUAL_ALL_SET));
	EXPECT_EQ(0, enable_manual(d->vm, 0));
	munmap(ro, PAGE * 2);
	free(bm);
	dvm_free(d);
}

TEST_HARNESS_MAIN
