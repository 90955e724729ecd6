// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm-bench: micro-benchmarks of a KVM-style hypervisor through the KVM x86
 * ioctl ABI, so the same binary measures /dev/kvm and /dev/rkvm.
 *
 *   pio_exit        the guest loops `out` to a port; each is an exit to this
 *                   VMM, which re-enters at once (the userspace round trip)
 *   cpuid_exit      the guest loops `cpuid`, handled in the kernel
 *   fault_4k        a fresh VM writes one byte to every 4 KiB page of a
 *                   64 MiB slot nobody touched before: each is a nested-
 *                   paging fault in the hypervisor plus a host page fault
 *   fault_4k_4vcpu  the same with 4 vCPUs, each writing its quarter
 *   fault_thp       fault_4k on a slot the host backs with 2 MiB transparent
 *                   huge pages (2 MiB-aligned, MADV_HUGEPAGE): a hypervisor
 *                   that maps as large as the host takes one nested fault
 *                   per 2 MiB; the figure is still per 4 KiB page written
 *
 * The guest reads the TSC around its loop (under QEMU's -icount shift=0 and
 * in Bochs the TSC counts instructions, see
 * Documentation/virt/rkvm/testing.rst) and this VMM reads CLOCK_MONOTONIC
 * from the guest's "start" exit to its HLT. With --repeat R each workload
 * runs R times (a fresh VM each time) and the best figures are reported.
 * One line per workload:
 *
 *   bench NAME vcpus=V iterations=N guest_tsc_per_iter=X wall_ns_per_iter=Y
 *         runs=R guest_tsc_spread=S%      (on one line)
 *   bench NAME failed reason="..."
 *
 * Exits non-zero if any workload failed. The VMs are set up by the
 * selftests' guest library (tools/testing/selftests/rkvm/guest_lib.h), as
 * the demo's are.
 *
 * Usage: rkvm-bench DEVICE [--pio N] [--cpuid N] [--fault-mib M] [--repeat R]
 *                   [--timeout S] [--only A,B]
 * (defaults: 2000 exits, 2000 CPUIDs, 64 MiB, 1 run, 600 s per run, all)
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "guest_lib.h"

#define LOW_SIZE	(2ULL << 20)	/* slot 0: GDT, page tables, code, stacks */
#define FAULT_GPA	(1ULL << 30)	/* slot 1 of the fault workloads */
#define HUGE_SIZE	(2ULL << 20)

/* The fault workload's slot is backed by transparent huge pages. */
static int thp_slot;
#define PORT_START	0xe0		/* guest: "my timed loop starts now" */
#define PORT_LOOP	0xe1		/* the pio_exit loop's port */
#define MAX_VCPUS	4
#define TIMEOUT_S	600		/* default per workload; emulated hosts are slow */

/*
 * The guest routines, entered in 64-bit mode with their arguments in rdi
 * (and rsi). Each signals the start with an `out` to PORT_START, leaves the
 * TSC before and after its loop in r8 and r9, and halts.
 */
extern const uint8_t bench_guest_start[], bench_guest_end[];
extern const uint8_t bench_pio[], bench_cpuid[], bench_touch[];
asm(
"	.pushsection .rodata.rkvm_bench_guest, \"a\"\n"
"	.globl bench_guest_start, bench_guest_end\n"
"	.globl bench_pio, bench_cpuid, bench_touch\n"
"	.code64\n"
"bench_guest_start:\n"
/* bench_pio(rdi = iterations) */
"bench_pio:\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"1:	outb %al, $0xe1\n"
"	dec %rdi\n"
"	jnz 1b\n"
"	jmp bench_end\n"
/* bench_cpuid(rdi = iterations) */
"bench_cpuid:\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"2:	xor %eax, %eax\n"
"	xor %ecx, %ecx\n"
"	cpuid\n"
"	dec %rdi\n"
"	jnz 2b\n"
"	jmp bench_end\n"
/* bench_touch(rdi = first address, rsi = pages): one byte per 4 KiB page */
"bench_touch:\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"3:	movb $1, (%rdi)\n"
"	add $4096, %rdi\n"
"	dec %rsi\n"
"	jnz 3b\n"
"bench_end:\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r9\n"
"4:	hlt\n"
"	jmp 4b\n"
"bench_guest_end:\n"
"	.popsection\n"
);

struct vcpu_job {
	struct vcpu *vcpu;
	int id;
	uint64_t loop_exits;	/* PIO exits on PORT_LOOP */
	uint64_t t0, t1;	/* CLOCK_MONOTONIC ns: start exit, HLT exit */
	uint64_t tsc0, tsc1;	/* the guest's r8, r9 */
	pthread_barrier_t *go;
	char err[256];
	volatile int done;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_job *j = arg;
	struct kvm_run *run = j->vcpu->run;
	struct kvm_regs regs;
	int started = 0, n;

	pthread_barrier_wait(j->go);
	for (;;) {
		if (ioctl(j->vcpu->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			snprintf(j->err, sizeof(j->err), "vCPU %d: KVM_RUN: %s", j->id, strerror(errno));
			goto out;
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT) {
			if (run->io.port == PORT_LOOP && started) {
				j->loop_exits++;
				continue;
			}
			if (run->io.port == PORT_START && !started) {
				started = 1;
				j->t0 = now_ns();
				continue;
			}
		}
		if (run->exit_reason == KVM_EXIT_HLT && started) {
			j->t1 = now_ns();
			break;
		}
		n = snprintf(j->err, sizeof(j->err), "vCPU %d: ", j->id);
		describe_exit(j->vcpu, j->err + n, sizeof(j->err) - n);
		goto out;
	}
	if (ioctl(j->vcpu->fd, KVM_GET_REGS, &regs) < 0) {
		snprintf(j->err, sizeof(j->err), "vCPU %d: KVM_GET_REGS: %s", j->id, strerror(errno));
		goto out;
	}
	j->tsc0 = regs.r8;
	j->tsc1 = regs.r9;
out:
	j->done = 1;
	return NULL;
}

/*
 * The host's view of [addr, addr + len): resident and transparent-huge KiB
 * from /proc/self/smaps (its VMA starts at addr). -1 if unknown.
 */
static void host_mapping(const void *addr, long *rss_kb, long *thp_kb)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	unsigned long start, end;
	char line[256];
	int in = 0;

	*rss_kb = *thp_kb = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {	/* a VMA */
			if (in)
				break;
			in = start == (unsigned long)addr;
		} else if (in) {
			sscanf(line, "Rss: %ld kB", rss_kb);
			sscanf(line, "AnonHugePages: %ld kB", thp_kb);
		}
	}
	fclose(f);
}

static int failed;
static unsigned long timeout_s = TIMEOUT_S;
static const char *current;	/* the workload being set up */

static void fail(const char *name, const char *reason)
{
	char clean[256];
	size_t i;

	/* Keep the line machine-readable: no double quotes or newlines. */
	snprintf(clean, sizeof(clean), "%s", reason);
	for (i = 0; clean[i]; i++)
		if (clean[i] == '"' || clean[i] == '\n')
			clean[i] = '\'';
	printf("bench %s failed reason=\"%s\"\n", name, clean);
	fflush(stdout);
	failed = 1;
}

/* A VM set-up step failed: guest_lib exits after this. */
static void setup_failed(const char *msg)
{
	fail(current ? current : "setup", msg);
}

/* One run of a workload: guest TSC and wall ns over all its iterations. */
struct result {
	uint64_t n, tsc, wall;
};

/*
 * Runs one workload once in a fresh VM: nvcpus vCPUs entering `entry`, each
 * doing iterations / nvcpus; fault_mib > 0 adds an untouched slot of that
 * size at FAULT_GPA with 4 KiB host pages, vCPU i writing its i-th part.
 * Returns 0, or -1 after printing why.
 */
static int run_workload(const char *dev, const char *name, int nvcpus, const uint8_t *entry,
			uint64_t iterations, uint64_t fault_mib, struct result *res)
{
	struct vcpu_job jobs[MAX_VCPUS];
	pthread_t threads[MAX_VCPUS];
	pthread_barrier_t go;
	uint64_t t0 = UINT64_MAX, t1 = 0, tsc0 = UINT64_MAX, tsc1 = 0, exits = 0;
	uint64_t per_vcpu = iterations / nvcpus, deadline;
	void *slot1 = NULL;
	struct vm *vm;
	int i, ok = 1;

	memset(res, 0, sizeof(*res));
	memset(jobs, 0, sizeof(jobs));
	current = name;
	vm = vm_new_on(dev, LOW_SIZE);
	vm_use_minimal_cpuid(vm);
	vm_load(vm, GUEST_CODE, bench_guest_start, bench_guest_end);
	if (fault_mib) {
		long r;

		/*
		 * 4 KiB host pages (no THP), so each guest page is its own host
		 * fault and its own NPT/EPT fault. Kernels without madvise(2)
		 * still have the per-process switch main() set.
		 */
		if (thp_slot) {
			/* 2 MiB-aligned, as FAULT_GPA is, so THPs can back it. */
			uint8_t *raw = guest_alloc((fault_mib << 20) + HUGE_SIZE);

			slot1 = (void *)(((uintptr_t)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
			if ((uint8_t *)slot1 != raw)
				munmap(raw, (uint8_t *)slot1 - raw);
			munmap((uint8_t *)slot1 + (fault_mib << 20),
			       raw + HUGE_SIZE - (uint8_t *)slot1);
			madvise(slot1, fault_mib << 20, MADV_HUGEPAGE);
		} else {
			slot1 = guest_alloc(fault_mib << 20);
			madvise(slot1, fault_mib << 20, MADV_NOHUGEPAGE);
		}
		r = vm_set_region(vm, 1, 0, FAULT_GPA, fault_mib << 20, slot1);
		if (r) {
			char why[128];

			snprintf(why, sizeof(why), "KVM_SET_USER_MEMORY_REGION slot 1: %s",
				 strerror(-r));
			fail(name, why);
			vm_free(vm);
			munmap(slot1, fault_mib << 20);
			return -1;
		}
	}
	for (i = 0; i < nvcpus; i++) {
		uint64_t rdi = fault_mib ? FAULT_GPA + (uint64_t)i * per_vcpu * 4096 : per_vcpu;
		struct kvm_regs regs;

		jobs[i].id = i;
		jobs[i].go = &go;
		/* Each vCPU on its own 4 KiB of stack. */
		jobs[i].vcpu = vcpu_new(vm, i, MODE_LONG64,
					GUEST_CODE + (entry - bench_guest_start),
					GUEST_STACK - (uint64_t)i * 4096);
		vcpu_get_regs(jobs[i].vcpu, &regs);
		regs.rdi = rdi;
		regs.rsi = per_vcpu;
		vcpu_set_regs(jobs[i].vcpu, &regs);
	}
	current = NULL;

	pthread_barrier_init(&go, NULL, nvcpus);
	for (i = 0; i < nvcpus; i++)
		pthread_create(&threads[i], NULL, vcpu_thread, &jobs[i]);
	/* A vCPU stuck in the kernel cannot be joined: give up on the process. */
	deadline = now_ns() + timeout_s * 1000000000ULL;
	for (i = 0; i < nvcpus; i++) {
		while (!jobs[i].done) {
			if (now_ns() > deadline) {
				char why[64];

				snprintf(why, sizeof(why), "timeout: a vCPU did not halt within %lu s",
					 timeout_s);
				fail(name, why);
				exit(1);
			}
			usleep(10000);
		}
		pthread_join(threads[i], NULL);
	}
	pthread_barrier_destroy(&go);

	for (i = 0; i < nvcpus; i++) {
		struct vcpu_job *j = &jobs[i];

		if (j->err[0]) {
			fail(name, j->err);
			ok = 0;
			break;
		}
		t0 = j->t0 < t0 ? j->t0 : t0;
		t1 = j->t1 > t1 ? j->t1 : t1;
		tsc0 = j->tsc0 < tsc0 ? j->tsc0 : tsc0;
		tsc1 = j->tsc1 > tsc1 ? j->tsc1 : tsc1;
		exits += j->loop_exits;
	}
	if (ok && entry == bench_pio && exits != per_vcpu * nvcpus) {
		char why[128];

		snprintf(why, sizeof(why), "%llu loop exits, expected %llu",
			 (unsigned long long)exits, (unsigned long long)(per_vcpu * nvcpus));
		fail(name, why);
		ok = 0;
	}
	if (ok && tsc1 <= tsc0) {
		fail(name, "the guest's TSC did not advance");
		ok = 0;
	}
	if (ok && slot1) {
		long rss_kb, thp_kb;

		host_mapping(slot1, &rss_kb, &thp_kb);	/* -1: no smaps, no check */
		if (thp_slot && thp_kb >= 0 && thp_kb < (long)(fault_mib << 9)) {
			char why[128];

			snprintf(why, sizeof(why), "the host backed %ld KiB of the slot with THP, "
				 "not at least half of it", thp_kb);
			fail(name, why);
			ok = 0;
		} else if (!thp_slot &&
			   (thp_kb > 0 || (rss_kb >= 0 && rss_kb < (long)(per_vcpu * nvcpus * 4)))) {
			char why[128];

			snprintf(why, sizeof(why), "the slot has %ld KiB resident, %ld KiB of them THP: "
				 "not one 4 KiB fault per page", rss_kb, thp_kb);
			fail(name, why);
			ok = 0;
		}
	}
	if (ok) {
		/*
		 * With several vCPUs: from the first start to the last end, so
		 * the figure is the cost per iteration of the whole VM.
		 */
		res->n = per_vcpu * nvcpus;
		res->tsc = tsc1 - tsc0;
		res->wall = t1 - t0;
	}
	for (i = 0; i < nvcpus; i++)
		vcpu_free(jobs[i].vcpu);
	vm_free(vm);
	if (slot1)
		munmap(slot1, fault_mib << 20);
	return ok ? 0 : -1;
}

static unsigned int repeat = 1;

/*
 * Runs a workload `repeat` times, each in a fresh VM, and prints the best
 * (lowest) figures: interference from the rest of the host only ever adds.
 * guest_tsc_spread is (worst - best) / best over the runs, in percent.
 */
static void bench(const char *dev, const char *name, int nvcpus, const uint8_t *entry,
		  uint64_t iterations, uint64_t fault_mib)
{
	uint64_t tsc_min = UINT64_MAX, tsc_max = 0, wall_min = UINT64_MAX, n = 0;
	struct result r;
	unsigned int i;

	for (i = 0; i < repeat; i++) {
		if (run_workload(dev, name, nvcpus, entry, iterations, fault_mib, &r) < 0)
			return;
		n = r.n;
		tsc_min = r.tsc < tsc_min ? r.tsc : tsc_min;
		tsc_max = r.tsc > tsc_max ? r.tsc : tsc_max;
		wall_min = r.wall < wall_min ? r.wall : wall_min;
	}
	printf("bench %s vcpus=%d iterations=%llu guest_tsc_per_iter=%.1f wall_ns_per_iter=%.0f "
	       "runs=%u guest_tsc_spread=%.1f%%\n", name, nvcpus, (unsigned long long)n,
	       (double)tsc_min / n, (double)wall_min / n, repeat,
	       100.0 * (tsc_max - tsc_min) / tsc_min);
	fflush(stdout);
}

static int selected(const char *only, const char *name)
{
	size_t n = strlen(name);
	const char *p = only;

	if (!only)
		return 1;
	while ((p = strstr(p, name))) {
		if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
			return 1;
		p += n;
	}
	return 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s DEVICE [--pio N] [--cpuid N] [--fault-mib M] [--repeat R] [--timeout S] "
		"[--only pio_exit,cpuid_exit,fault_4k,fault_4k_4vcpu,fault_thp]\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t pio = 2000, cpuid = 2000, fault_mib = 64;
	const char *only = NULL, *dev;
	int i;

	if (argc < 2 || argv[1][0] != '/')
		usage(argv[0]);
	dev = argv[1];
	for (i = 2; i < argc; i++) {
		if (i + 1 >= argc)
			usage(argv[0]);
		if (!strcmp(argv[i], "--pio"))
			pio = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--cpuid"))
			cpuid = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--fault-mib"))
			fault_mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--repeat"))
			repeat = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--timeout"))
			timeout_s = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--only"))
			only = argv[++i];
		else
			usage(argv[0]);
	}
	/* Whole pages per vCPU, and at least one iteration everywhere. */
	if (!pio || !cpuid || !fault_mib || fault_mib > 1024 || !timeout_s || !repeat)
		usage(argv[0]);

	/*
	 * 4 KiB host pages everywhere, before any guest memory is touched: a
	 * THP-backed slot would take one fault per 2 MiB (see run_workload).
	 */
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	guest_die_hook = setup_failed;
	printf("bench-info device=%s pio=%llu cpuid=%llu fault_mib=%llu repeat=%u\n", dev,
	       (unsigned long long)pio, (unsigned long long)cpuid, (unsigned long long)fault_mib,
	       repeat);
	fflush(stdout);
	if (selected(only, "pio_exit"))
		bench(dev, "pio_exit", 1, bench_pio, pio, 0);
	if (selected(only, "cpuid_exit"))
		bench(dev, "cpuid_exit", 1, bench_cpuid, cpuid, 0);
	if (selected(only, "fault_4k"))
		bench(dev, "fault_4k", 1, bench_touch, fault_mib << 8, fault_mib);
	if (selected(only, "fault_4k_4vcpu"))
		bench(dev, "fault_4k_4vcpu", 4, bench_touch, fault_mib << 8, fault_mib);
	if (selected(only, "fault_thp")) {
		prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
		thp_slot = 1;
		bench(dev, "fault_thp", 1, bench_touch, fault_mib << 8, fault_mib);
		thp_slot = 0;
		prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	}
	return failed;
}
