// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm selftests of the binary statistics fds (KVM_GET_STATS_FD on the VM
 * and vCPU fds) and, through the VM's pages_4k/pages_2m statistics, of
 * guest memory mapped as large as the host maps it:
 *
 *  - a guest touching memory the host backs with transparent huge pages
 *    gets one 2 MiB TDP leaf per huge page;
 *  - MADV_DONTNEED of one 4 KiB page splits the host's huge page: the
 *    2 MiB leaf goes, and the guest's next touches map 4 KiB leaves;
 *  - MADV_COLLAPSE makes it one huge page again: the 4 KiB leaves go,
 *    the guest's next touch maps one 2 MiB leaf, and what the guest wrote
 *    before and after is what the host reads, page by page;
 *  - a hugetlbfs 1 GiB page is mapped with one 1 GiB leaf, where the CPU's
 *    TDP has them (a page reserved at boot, or one the test allocates; it
 *    skips if there is none).
 *
 * Stock KVM passes them all: RKVM_DEV=/dev/kvm.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "guest_lib.h"
#include "rkvm_util.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define KB 1024UL
#define MB (1024 * KB)
#define HUGE (2 * MB)
#define PAGE 4096UL

#define REGION_GPA	0x40000000UL	/* slot 1: THP-backed guest RAM */
#define REGION_SIZE	(8 * MB)
#define PORT_READY	0x50
#define MBOX		GUEST_DATA	/* cmd, addr, len, seed, result */

enum { CMD_WRITE = 1, CMD_CHECK = 2 };

/*
 * out PORT_READY, then per 4 KiB page of [addr, addr + len): CMD_WRITE
 * stores page ^ seed in its first qword, CMD_CHECK counts the pages that
 * do not hold it (into the mailbox's result); repeat.
 */
GUEST_CODE_BLOCK(page_guest, ".code64",
	"1: out %al, $" XSTR(PORT_READY) "\n"
	"mov $" XSTR(MBOX) ", %rbp\n"
	"mov 0(%rbp), %rax\n mov 8(%rbp), %rsi\n"
	"mov 16(%rbp), %rcx\n mov 24(%rbp), %r9\n"
	"lea (%rsi,%rcx), %rdx\n xor %r10d, %r10d\n"
	"2: cmp %rdx, %rsi\n jae 9f\n"
	"mov %rsi, %r8\n xor %r9, %r8\n"
	"cmp $1, %rax\n jne 3f\n"
	"mov %r8, (%rsi)\n jmp 4f\n"
	"3: cmp (%rsi), %r8\n je 4f\n inc %r10\n"
	"4: add $4096, %rsi\n jmp 2b\n"
	"9: mov %r10, 32(%rbp)\n jmp 1b\n");

/* --- The statistics fds. ---------------------------------------------- */

static void check_layout(struct __test_metadata *_metadata, struct stats *s,
			 const char *want_id)
{
	uint32_t data_end = s->h.data_offset;
	uint32_t i;
	char buf[64];

	EXPECT_EQ(0, s->h.flags);
	EXPECT_STREQ(want_id, s->id);
	EXPECT_EQ(s->h.id_offset + s->h.name_size, s->h.desc_offset);
	EXPECT_EQ(s->h.desc_offset + s->h.num_desc * s->desc_size, s->h.data_offset);
	for (i = 0; i < s->h.num_desc; i++) {
		struct kvm_stats_desc *d = (void *)(s->descs + i * s->desc_size);

		EXPECT_NE(0, d->name[0]);
		EXPECT_EQ(0, d->name[s->h.name_size - 1]);
		EXPECT_LE((d->flags & KVM_STATS_TYPE_MASK), KVM_STATS_TYPE_MAX);
		if (d->offset + 8 * d->size > data_end - s->h.data_offset)
			data_end = s->h.data_offset + d->offset + 8 * d->size;
	}
	/* The file ends with the data; a read there returns nothing. */
	EXPECT_EQ(0, pread(s->fd, buf, sizeof(buf), data_end));
	/* read() follows the file position, from the header on. */
	ASSERT_EQ(0, lseek(s->fd, 0, SEEK_SET) < 0 ? -1 : 0);
	EXPECT_EQ(8, read(s->fd, buf, 8));
	EXPECT_EQ(0, memcmp(buf, &s->h, 8));
	EXPECT_EQ(4, read(s->fd, buf, 4));
	EXPECT_EQ(0, memcmp(buf, (char *)&s->h + 8, 4));
	/* Read-only. */
	EXPECT_EQ(O_RDONLY, fcntl(s->fd, F_GETFL) & O_ACCMODE);
	EXPECT_EQ(-1, write(s->fd, buf, 1));
	EXPECT_EQ(EBADF, errno);
}

TEST(vm_and_vcpu_stats_fds)
{
	struct vm *vm = vm_new(GUEST_MEM_SIZE);
	struct stats vs, cs;
	struct vcpu *v;
	char id[64];
	int64_t exits, io_exits;

	ASSERT_EQ(1, xioctl(vm->sys, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD));
	ASSERT_EQ(0, stats_open(&vs, vm->fd));
	snprintf(id, sizeof(id), "kvm-%d", getpid());
	check_layout(_metadata, &vs, id);
	EXPECT_NE(NULL, stats_desc(&vs, "pages_4k"));
	EXPECT_NE(NULL, stats_desc(&vs, "pages_2m"));
	EXPECT_NE(NULL, stats_desc(&vs, "pages_1g"));
	EXPECT_NE(NULL, stats_desc(&vs, "remote_tlb_flush"));
	EXPECT_EQ(KVM_STATS_TYPE_INSTANT,
		  stats_desc(&vs, "pages_4k")->flags & KVM_STATS_TYPE_MASK);

	vm_load(vm, GUEST_CODE, page_guest, page_guest_end);
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(0, stats_open(&cs, v->fd));
	snprintf(id, sizeof(id), "kvm-%d/vcpu-0", getpid());
	check_layout(_metadata, &cs, id);
	exits = stat_get(&cs, "exits");
	io_exits = stat_get(&cs, "io_exits");
	ASSERT_LE(0, exits);
	ASSERT_LE(0, io_exits);
	/* The guest's first OUT is at least one exit, and one I/O exit. */
	ASSERT_EQ(KVM_EXIT_IO, run_until_exit(v));
	ASSERT_EQ(0, check_io(v, KVM_EXIT_IO_OUT, 1, PORT_READY, 1));
	EXPECT_LT(exits, stat_get(&cs, "exits"));
	EXPECT_EQ(io_exits + 1, stat_get(&cs, "io_exits"));
	/* The guest mapped its code, stack and tables: 4 KiB leaves or larger. */
	EXPECT_LT(0, stat_get(&vs, "pages_4k") + stat_get(&vs, "pages_2m"));

	/* The fds hold their VM and vCPU: still readable after both close. */
	vcpu_free(v);
	vm_free(vm);
	EXPECT_LE(0, stat_get(&cs, "exits"));
	EXPECT_LE(0, stat_get(&vs, "pages_4k"));
	stats_close(&cs);
	stats_close(&vs);
}

/* --- Huge pages: mapped, split, collapsed. ---------------------------- */

FIXTURE(thp) {
	struct vm *vm;
	struct vcpu *v;
	uint8_t *map;		/* the mapping, REGION_SIZE + HUGE */
	uint8_t *mem;		/* its 2 MiB-aligned REGION_SIZE */
	struct stats s;
};

FIXTURE_SETUP(thp)
{
	self->map = mmap(NULL, REGION_SIZE + HUGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->map);
	self->mem = (uint8_t *)(((uintptr_t)self->map + HUGE - 1) & ~(HUGE - 1));
	ASSERT_EQ(0, madvise(self->mem, REGION_SIZE, MADV_HUGEPAGE));
	self->vm = vm_new(GUEST_MEM_SIZE);
	ASSERT_EQ(0, vm_set_region(self->vm, 1, 0, REGION_GPA, REGION_SIZE, self->mem));
	vm_load(self->vm, GUEST_CODE, page_guest, page_guest_end);
	self->v = vcpu_new(self->vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(KVM_EXIT_IO, run_until_exit(self->v));
	ASSERT_EQ(0, stats_open(&self->s, self->vm->fd));
}

static int64_t guest_cmd(struct vm *vm, struct vcpu *v, uint64_t cmd,
			 uint64_t gpa, uint64_t len, uint64_t seed);

FIXTURE_TEARDOWN(thp)
{
	stats_close(&self->s);
	vcpu_free(self->v);
	vm_free(self->vm);
	munmap(self->map, REGION_SIZE + HUGE);
}

/* Runs one guest command over [gpa, gpa + len): its result, or -1. */
static int64_t guest_cmd(struct vm *vm, struct vcpu *v, uint64_t cmd,
			 uint64_t gpa, uint64_t len, uint64_t seed)
{
	volatile uint64_t *m = gpa_ptr(vm, MBOX);

	m[0] = cmd;
	m[1] = gpa;
	m[2] = len;
	m[3] = seed;
	m[4] = -1;
	if (run_until_exit(v) != KVM_EXIT_IO ||
	    check_io(v, KVM_EXIT_IO_OUT, 1, PORT_READY, 1))
		return -1;
	return m[4];
}

/* Pages of [p, p + len) whose first qword is not (GPA ^ seed). */
static long host_mismatches(uint8_t *p, uint64_t gpa, size_t len, uint64_t seed)
{
	long bad = 0;
	size_t off;

	for (off = 0; off < len; off += PAGE)
		bad += *(uint64_t *)(p + off) != ((gpa + off) ^ seed);
	return bad;
}

/* KiB of [p, p + len) the host maps with huge pages (/proc/self/smaps). */
static long anon_huge_kb(void *p)
{
	char line[256];
	unsigned long start, end;
	long kb = -1;
	bool in = false;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= start && (uintptr_t)p < end;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

TEST_F(thp, mapped_split_and_collapsed)
{
	const uint64_t chunk = REGION_GPA + HUGE;	/* the 2 MiB block split */
	int64_t small0, large0, small, large;
	long huge_kb;

	/* A command over nothing: the guest's own pages are mapped by now. */
	ASSERT_EQ(0, guest_cmd(self->vm, self->v, CMD_CHECK, REGION_GPA, 0, 0));
	small0 = stat_get(&self->s, "pages_4k");
	large0 = stat_get(&self->s, "pages_2m");
	ASSERT_LE(0, small0);
	ASSERT_LE(0, large0);

	/* First touch: the host faults in huge pages, the guest maps them. */
	ASSERT_EQ(0, guest_cmd(self->vm, self->v, CMD_WRITE, REGION_GPA, REGION_SIZE, 1));
	EXPECT_EQ(0, host_mismatches(self->mem, REGION_GPA, REGION_SIZE, 1));
	huge_kb = anon_huge_kb(self->mem);
	if (huge_kb < (long)(REGION_SIZE / KB))
		SKIP(return, "the host backed %ld of %lu KiB with huge pages",
		     huge_kb, REGION_SIZE / KB);
	small = stat_get(&self->s, "pages_4k");
	large = stat_get(&self->s, "pages_2m");
	TH_LOG("after the first touch: pages_4k %ld -> %ld, pages_2m %ld -> %ld",
	       (long)small0, (long)small, (long)large0, (long)large);
	ASSERT_EQ(large0 + REGION_SIZE / HUGE, large)
		TH_LOG("one 2 MiB leaf per huge page");
	EXPECT_EQ(small0, small);

	/* One 4 KiB page dropped: the host splits the huge page. */
	ASSERT_EQ(0, madvise(self->mem + HUGE + 5 * PAGE, PAGE, MADV_DONTNEED));
	EXPECT_EQ(large0 + REGION_SIZE / HUGE - 1, stat_get(&self->s, "pages_2m"))
		TH_LOG("the 2 MiB leaf over it is gone");
	/* The guest reads a zero page there, the rest as it wrote it. */
	EXPECT_EQ(1, guest_cmd(self->vm, self->v, CMD_CHECK, chunk, HUGE, 1));
	EXPECT_EQ(small0 + HUGE / PAGE, stat_get(&self->s, "pages_4k"))
		TH_LOG("the guest maps the split page with 4 KiB leaves");
	ASSERT_EQ(0, guest_cmd(self->vm, self->v, CMD_WRITE, chunk, HUGE, 2));
	EXPECT_EQ(0, host_mismatches(self->mem + HUGE, chunk, HUGE, 2));

	/* Collapsed again: the guest maps it with one 2 MiB leaf. */
	if (madvise(self->mem + HUGE, HUGE, MADV_COLLAPSE))
		SKIP(return, "MADV_COLLAPSE: %s", strerror(errno));
	EXPECT_EQ(small0, stat_get(&self->s, "pages_4k"))
		TH_LOG("the 4 KiB leaves over the old pages are gone");
	EXPECT_EQ(0, guest_cmd(self->vm, self->v, CMD_CHECK, chunk, HUGE, 2));
	ASSERT_EQ(0, guest_cmd(self->vm, self->v, CMD_WRITE, chunk, HUGE, 3));
	EXPECT_EQ(0, host_mismatches(self->mem + HUGE, chunk, HUGE, 3))
		TH_LOG("guest writes reach the collapsed page");
	EXPECT_EQ(large0 + REGION_SIZE / HUGE, stat_get(&self->s, "pages_2m"));
	EXPECT_EQ(small0, stat_get(&self->s, "pages_4k"));
	EXPECT_EQ(0, guest_cmd(self->vm, self->v, CMD_CHECK, REGION_GPA, HUGE, 1));
}

/* --- 1 GiB pages. ----------------------------------------------------- */

#define GIB (1024 * MB)
#define HP_1G "/sys/kernel/mm/hugepages/hugepages-1048576kB/"
#define NR_1G HP_1G "nr_hugepages"
#define FREE_1G HP_1G "free_hugepages"

/*
 * Whether this CPU's TDP has 1 GiB leaves: AMD's NPT where the CPU has
 * 1 GiB pages, Intel's EPT where IA32_VMX_EPT_VPID_CAP says so (read
 * through the msr driver). -1 if unknown.
 */
static int tdp_has_1g(void)
{
	unsigned int a, b, c, d;
	uint64_t cap;
	int fd, r;

	__cpuid(0, a, b, c, d);
	if (b == 0x68747541) {			/* "Auth"enticAMD */
		__cpuid(0x80000001, a, b, c, d);
		return d >> 26 & 1;
	}
	fd = open("/dev/cpu/0/msr", O_RDONLY);
	if (fd < 0)
		return -1;
	r = pread(fd, &cap, 8, 0x48c) == 8 ? (int)(cap >> 17 & 1) : -1;
	close(fd);
	return r;
}

static long read_long(const char *path)
{
	long v = -1;
	FILE *f = fopen(path, "r");

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int r;

	if (!f)
		return -errno;
	r = fprintf(f, "%ld\n", v) < 0 ? -EIO : 0;
	if (fclose(f))
		r = -errno;
	return r;
}

/*
 * A guest touching a hugetlbfs 1 GiB page gets one 1 GiB leaf; when the
 * page goes (munmap), so does the leaf. The page is one reserved at boot
 * (hugepagesz=1G hugepages=1, as make check boots QEMU), else one the test
 * allocates (kernels with CONFIG_CONTIG_ALLOC) and frees again.
 */
TEST(hugetlb_1g_page_maps_one_leaf)
{
	long nr0 = read_long(NR_1G);
	bool added = false;
	struct vm *vm;
	struct vcpu *v;
	struct stats s;
	uint8_t *mem;
	int has_1g = tdp_has_1g();

	if (nr0 < 0)
		SKIP(return, "no 1 GiB huge pages on this host (" HP_1G ")");
	if (has_1g != 1)
		SKIP(return, "the CPU's TDP has no 1 GiB leaves (%d)", has_1g);
	if (read_long(FREE_1G) < 1) {
		if (write_long(NR_1G, nr0 + 1) || read_long(FREE_1G) < 1) {
			write_long(NR_1G, nr0);
			SKIP(return, "no free 1 GiB page, and none could be allocated");
		}
		added = true;
	}
	mem = mmap(NULL, GIB, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | (30 << MAP_HUGE_SHIFT), -1, 0);
	if (mem == MAP_FAILED) {
		if (added)
			write_long(NR_1G, nr0);
		SKIP(return, "mmap of a 1 GiB page: %s", strerror(errno));
	}
	vm = vm_new(GUEST_MEM_SIZE);
	ASSERT_EQ(0, vm_set_region(vm, 1, 0, GIB, GIB, mem));
	vm_load(vm, GUEST_CODE, page_guest, page_guest_end);
	v = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	ASSERT_EQ(KVM_EXIT_IO, run_until_exit(v));
	ASSERT_EQ(0, stats_open(&s, vm->fd));
	ASSERT_EQ(0, guest_cmd(vm, v, CMD_CHECK, GIB, 0, 0));
	ASSERT_EQ(0, stat_get(&s, "pages_1g"));

	/* Pages at both ends of the GiB and in between. */
	ASSERT_EQ(0, guest_cmd(vm, v, CMD_WRITE, GIB, 64 * PAGE, 7));
	ASSERT_EQ(0, guest_cmd(vm, v, CMD_WRITE, 2 * GIB - 64 * PAGE, 64 * PAGE, 7));
	EXPECT_EQ(0, host_mismatches(mem, GIB, 64 * PAGE, 7));
	EXPECT_EQ(0, host_mismatches(mem + GIB - 64 * PAGE, 2 * GIB - 64 * PAGE, 64 * PAGE, 7));
	EXPECT_EQ(1, stat_get(&s, "pages_1g"));
	*(uint64_t *)(mem + GIB / 2) = (GIB + GIB / 2) ^ 5;
	EXPECT_EQ(0, guest_cmd(vm, v, CMD_CHECK, GIB + GIB / 2, PAGE, 5))
		TH_LOG("the guest reads what the host wrote in the middle");
	EXPECT_EQ(1, stat_get(&s, "pages_1g"));

	ASSERT_EQ(0, munmap(mem, GIB));
	EXPECT_EQ(0, stat_get(&s, "pages_1g")) TH_LOG("unmapped with the page");
	stats_close(&s);
	vcpu_free(v);
	vm_free(vm);
	if (added)
		EXPECT_EQ(0, write_long(NR_1G, nr0));
}

TEST_HARNESS_MAIN
