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
 * and the costs MMU notifiers put on guest memory the host takes back:
 *
 *   pageout         the guest writes every 4 KiB page of a --pageout-mib
 *                   slot, then (the vCPU out of the guest) this VMM pages it
 *                   all out with MADV_PAGEOUT: the host must unmap each page
 *                   from the hypervisor's page tables as well (one notifier
 *                   invalidation per page), or it stays resident. Figure:
 *                   the VMM's TSC and wall time per page of the madvise;
 *                   resident_pct says how much of the slot it left resident
 *                   (/proc/self/pagemap; the worst run). Needs swap: without
 *                   enough, pageout and pageout_fault_in are reported
 *                   "skipped" with the reason
 *   pageout_fault_in  then the guest reads every page back (swap-in plus a
 *                   nested fault each) and checks what it wrote; per page
 *   invalidate_pass the guest rewrites a THP-backed --invalidate-mib region
 *                   (rep stosq, every byte) --invalidate-passes times while
 *                   a host thread on the other CPU does MADV_DONTNEED on one
 *                   2 MiB chunk per pass, round-robin: per pass. The same
 *                   number of passes without the host thread runs first in
 *                   the same VM (quiet_tsc_per_pass)
 *   invalidate      the difference between the two phases divided by the
 *                   invalidations done: what one 2 MiB invalidation costs
 *                   a running guest (the zap, the vCPU kicked out for the
 *                   TLB flush, the refault of a new huge page)
 *
 * and dirty logging (KVM_MEM_LOG_DIRTY_PAGES, KVM_GET_DIRTY_LOG,
 * KVM_CLEAR_DIRTY_LOG, the dirty ring), in the shape of KVM's
 * dirty_log_perf_test:
 *
 *   dirty_pass      the guest writes one qword to every 4 KiB page of a
 *                   --dirty-mib logging slot (4 KiB host pages), once to
 *                   fault it in, then in passes, each ending with an exit
 *                   after which this VMM takes the log (which write-
 *                   protects the pages again) before the guest goes on:
 *                   every write of a pass is a write-protection fault the
 *                   hypervisor fixes and logs. Per pass, guest TSC from
 *                   its start to its end (the log calls not counted; they
 *                   come along as get_log_host_tsc_per_call, every page
 *                   dirty). Fails if a log does not name exactly the pages
 *                   written. One VM for all runs: a run is a group of
 *                   --dirty-passes passes after the fault-in pass
 *   dirty_pass_4vcpu  the same with 4 vCPUs, each rewriting its quarter;
 *                   the log is taken once all four have ended the pass
 *   dirty_pass_ring dirty_pass (1 vCPU) with the dirty ring instead of the
 *                   bitmap: KVM_CAP_DIRTY_LOG_RING_ACQ_REL enabled before
 *                   the vCPU exists, with room for a pass's pages and the
 *                   reserve (ring_entries), the ring mmap'ed from the vCPU
 *                   fd; between passes this VMM harvests it (flags read
 *                   with acquire, RESET stored with release) and calls
 *                   KVM_RESET_DIRTY_RINGS (collect_host_tsc_per_call). A
 *                   KVM_EXIT_DIRTY_RING_FULL inside a pass is harvested
 *                   and reset at once and counted (ring_full_exits; the
 *                   page being written then is logged twice in that pass,
 *                   ring_duplicates); the pass's figure includes it.
 *                   Fails if the entries of a pass do not name exactly
 *                   the pages written or the reset does not reset exactly
 *                   the entries harvested; skipped on a hypervisor
 *                   without the capability
 *   get_dirty_log   KVM_GET_DIRTY_LOG of a --dirty-log-mib logging slot
 *                   (1 GiB) after the guest rewrote one page in
 *                   --dirty-log-stride (256) of it (only those are ever
 *                   faulted in): per call, this VMM's clocks; runs as
 *                   dirty_pass, --dirty-log-calls calls each
 *   get_dirty_log_empty  a second call right after each: nothing dirty,
 *                   what the walk of the slot's bitmap costs alone
 *   clear_dirty_log get_dirty_log's slot and writes with manual protection
 *                   (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled before the
 *                   slot exists, MANUAL_PROTECT_ENABLE without
 *                   INITIALLY_SET): after each pass KVM_GET_DIRTY_LOG, a
 *                   snapshot (get_log_host_tsc_per_call), then one
 *                   KVM_CLEAR_DIRTY_LOG of the whole slot with that bitmap,
 *                   which takes and write-protects the pages it names: per
 *                   clear call, this VMM's clocks. Fails if the snapshot
 *                   does not name exactly the pages written or a
 *                   KVM_GET_DIRTY_LOG after the clear names any; skipped
 *                   on a hypervisor without the capability
 *
 * and interrupts with the split irqchip (local APICs in the kernel, HLT
 * waiting there; halt polling off where the device has it):
 *
 *   ipi_round_trip  vCPU 0 sends a fixed IPI to vCPU 1 (each vCPU's thread
 *                   on its own CPU), whose handler answers with an IPI
 *                   back; vCPU 0 halts until the answer: per round trip.
 *                   A second delivery of a ping or pong is not taken as
 *                   an answer but counted (duplicates)
 *   apic_timer      the APIC timer periodic at --timer-period-us, the
 *                   guest halting in between: per interrupt, the host CPU
 *                   time it took, measured by what it left to a soaker
 *                   thread on the vCPU's CPU (see struct soaker), this
 *                   VMM's TSC (host_tsc_per_iter)
 *   apic_timer_deadline  the same in TSC-deadline mode, re-armed by the
 *                   handler; with how late the handler ran on average
 *   ioeventfd_doorbell  the guest writes a port with an ioeventfd, a host
 *                   thread blocked in read() on its eventfd answers through
 *                   an irqfd with an MSI route to the vCPU, which halts
 *                   until then: per round trip, no exit to this VMM
 *
 * The guest reads the TSC around its loop (under QEMU's -icount shift=0 and
 * in Bochs the TSC counts instructions, see
 * Documentation/virt/rkvm/testing.rst) and this VMM reads CLOCK_MONOTONIC
 * from the guest's "start" exit to its HLT; what the VMM itself times
 * (pageout) it times with its own TSC, the same clock. With --repeat R each
 * workload runs R times (a fresh VM each time) and the best figures are
 * reported. One line per workload:
 *
 *   bench NAME vcpus=V iterations=N guest_tsc_per_iter=X wall_ns_per_iter=Y
 *         runs=R guest_tsc_spread=S% [more=...]      (on one line)
 *   bench NAME failed reason="..."
 *   bench NAME skipped reason="..."
 *
 * (host_tsc_per_iter and host_tsc_spread instead for pageout,
 * get_dirty_log*, clear_dirty_log and apic_timer*.) Exits
 * non-zero if any workload failed; a skipped one does not count. The VMs
 * are set up by the
 * selftests' guest library (tools/testing/selftests/rkvm/guest_lib.h), as
 * the demo's are.
 *
 * Usage: rkvm-bench DEVICE [--pio N] [--cpuid N] [--fault-mib M]
 *                   [--pageout-mib M] [--invalidate-mib M]
 *                   [--invalidate-passes P] [--dirty-mib M]
 *                   [--dirty-passes P] [--dirty-log-mib M]
 *                   [--dirty-log-stride S] [--dirty-log-calls C]
 *                   [--ipi N] [--timer N] [--timer-period-us P]
 *                   [--doorbell N]
 *                   [--repeat R] [--timeout S] [--only A,B] [--skip A,B]
 * (defaults: 2000 exits, 2000 CPUIDs, 64 MiB, pageout as --fault-mib,
 * 16 MiB and 32 passes, 32 MiB and 4 passes, 1024 MiB, one page in 256
 * and 4 calls, 2000 round trips, 1000 timer interrupts 500 us apart, 2000
 * doorbells, 1 run,
 * 600 s per run, all; --only and --skip may be given up to 4 times each:
 * a workload runs if every --only names it and no --skip does)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <linux/kvm.h>

#include "guest_lib.h"

#define LOW_SIZE	(2ULL << 20)	/* slot 0: GDT, page tables, code, stacks */
#define FAULT_GPA	(1ULL << 30)	/* slot 1 of the fault workloads */
#define HUGE_SIZE	(2ULL << 20)

/* The fault workload's slot is backed by transparent huge pages. */
static int thp_slot;
#define PORT_START	0xe0		/* guest: "my timed loop starts now" */
#define PORT_LOOP	0xe1		/* the pio_exit loop's port */
#define PORT_PAGEOUT	0xe2		/* bench_pageout: "all written, page it out" */
#define PORT_PASS	0xe3		/* bench_rewrite: "a pass is done" */
#define PORT_PHASE	0xe4		/* bench_rewrite: "the quiet passes are done" */
#define PORT_DIRTY_PASS	0xe5		/* bench_dirty: "a pass is done, see my mailbox" */
#define PORT_END	0xe6		/* the interrupt workloads' end (see irq_ping) */
#define PORT_DOORBELL	0xe7		/* ioeventfd_doorbell's doorbell */
#define MAX_VCPUS	4
#define TIMEOUT_S	600		/* default per workload; emulated hosts are slow */

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT	21
#endif

/*
 * The interrupt workloads: the split irqchip's local APIC (xAPIC
 * registers at APIC_GPA), their vectors, and their counters in slot 0
 * (IRQ_DATA; each workload has a VM of its own). No C suffixes: pasted
 * into the guest's assembler text.
 */
#define IOAPIC_PINS	24		/* reserved for a userspace IOAPIC, as QEMU does */
#define IRQ_GSI		24		/* ioeventfd_doorbell's MSI route, above them */
#define APIC_GPA	0xfee00000
#define APIC_EOI	0xb0
#define APIC_SVR	0xf0
#define APIC_ICR	0x300
#define APIC_ICR2	0x310
#define APIC_LVTT	0x320
#define APIC_TMICT	0x380
#define APIC_TDCR	0x3e0
#define VEC_COUNT	0x40
#define VEC_DEADLINE	0x41
#define VEC_ANSWER	0x42
#define VEC_PING	0x80
#define VEC_PONG	0x81
#define LVTT_PERIODIC_COUNT	0x20040		/* periodic, VEC_COUNT */
#define LVTT_DEADLINE_VEC	0x40041		/* TSC deadline, VEC_DEADLINE */
#define IRQ_DATA	0x20000			/* GUEST_DATA */
#define IRQ_PINGS	0x20000			/* u32: the ping vCPU 1 answered last */
#define IRQ_PONGS	0x20004			/* u32: the pong vCPU 0 took last */
#define IRQ_READY	0x20008			/* u32: vCPU 1 is ready for pings */
#define IRQ_COUNT	0x2000c			/* u32: VEC_COUNT or VEC_DEADLINE handled */
#define IRQ_N		0x20010			/* u32: irq_deadline's interrupts */
#define IRQ_PERIOD	0x20018			/* u64: irq_deadline's TSC cycles */
#define IRQ_DEADLINE	0x20020			/* u64: the deadline armed last */
#define IRQ_LATENCY	0x20028			/* u64: sum of handler TSC - deadline */
#define IRQ_SEQ		0x20030			/* u32: the ping vCPU 0 sent last */
#define IRQ_DUPS	0x20034			/* u32: pings, pongs, answers delivered twice */
#define IRQ_ANSWERED	0x20038			/* u32: doorbell rings answered (host) */

/*
 * The guest routines, entered in 64-bit mode with their arguments in rdi
 * (and rsi, rdx). Each signals the start with an `out` to PORT_START,
 * leaves the TSC before and after its loop in r8 and r9, and halts.
 */
extern const uint8_t bench_guest_start[], bench_guest_end[];
extern const uint8_t bench_pio[], bench_cpuid[], bench_touch[];
extern const uint8_t bench_pageout[], bench_rewrite[], bench_dirty[];
extern const uint8_t irq_ping[], irq_pong[], irq_ping_handler[], irq_pong_handler[];
extern const uint8_t irq_count_handler[], irq_answer_handler[], irq_timer[], irq_deadline[];
extern const uint8_t irq_deadline_handler[], irq_doorbell[];
asm(
"	.pushsection .rodata.rkvm_bench_guest, \"a\"\n"
"	.globl bench_guest_start, bench_guest_end\n"
"	.globl bench_pio, bench_cpuid, bench_touch\n"
"	.globl bench_pageout, bench_rewrite, bench_dirty\n"
"	.globl irq_ping, irq_pong, irq_ping_handler, irq_pong_handler\n"
"	.globl irq_count_handler, irq_answer_handler, irq_timer, irq_deadline\n"
"	.globl irq_deadline_handler, irq_doorbell\n"
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
"	jmp bench_end\n"
/*
 * bench_pageout(rdi = first address, rsi = pages): writes its GPA into the
 * first qword of every page, exits to PORT_PAGEOUT (the VMM pages the slot
 * out), then reads every page back (the timed loop), counting in r10 the
 * pages that do not hold their GPA.
 */
"bench_pageout:\n"
"	mov %rdi, %r12\n"
"	mov %rsi, %r13\n"
"5:	mov %rdi, (%rdi)\n"
"	add $4096, %rdi\n"
"	dec %rsi\n"
"	jnz 5b\n"
"	outb %al, $0xe2\n"
"	mov %r12, %rdi\n"
"	mov %r13, %rsi\n"
"	xor %r10d, %r10d\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"6:	cmp %rdi, (%rdi)\n"
"	je 7f\n"
"	inc %r10\n"
"7:	add $4096, %rdi\n"
"	dec %rsi\n"
"	jnz 6b\n"
"	jmp bench_end\n"
/*
 * bench_rewrite(rdi = first address, rsi = qwords, rdx = passes): one
 * untimed pass to fault the region in, then two timed phases of `passes`
 * passes each, every pass a rep stosq over the whole region followed by an
 * exit to PORT_PASS: the quiet phase (TSC in r8 .. r10), an exit to
 * PORT_PHASE, and the phase in which the VMM's thread invalidates (r11 ..
 * r9). Both phases have the same exits, so they differ only by the
 * invalidations.
 */
"bench_rewrite:\n"
"	mov %rdi, %r12\n"
"	mov %rsi, %r13\n"
"	mov %rdx, %r14\n"
"	mov %r13, %rcx\n"
"	xor %eax, %eax\n"
"	rep stosq\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"	mov %r14, %r15\n"
"8:	mov %r12, %rdi\n"
"	mov %r13, %rcx\n"
"	mov %r15, %rax\n"
"	rep stosq\n"
"	outb %al, $0xe3\n"
"	dec %r15\n"
"	jnz 8b\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r10\n"
"	outb %al, $0xe4\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r11\n"
"	mov %r14, %r15\n"
"9:	mov %r12, %rdi\n"
"	mov %r13, %rcx\n"
"	mov %r15, %rax\n"
"	rep stosq\n"
"	outb %al, $0xe3\n"
"	dec %r15\n"
"	jnz 9b\n"
"	jmp bench_end\n"
/*
 * bench_dirty(rdi = first address, rsi = writes per pass, rdx = passes,
 * rcx = stride in bytes, rbx = this vCPU's mailbox): passes of one qword
 * write (the pass number) every `stride` bytes, each pass between two
 * TSC reads left in the mailbox (start, end) and followed by an exit to
 * PORT_DIRTY_PASS, where the VMM takes the dirty log before it lets the
 * next pass begin. The first pass faults the pages in; the VMM does not
 * time it.
 */
"bench_dirty:\n"
"	mov %rdi, %r12\n"
"	mov %rsi, %r13\n"
"	mov %rdx, %r14\n"
"	mov %rcx, %r15\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"	xor %r11d, %r11d\n"
"10:	inc %r11\n"
"	mov %r12, %rdi\n"
"	mov %r13, %rsi\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, (%rbx)\n"
"11:	mov %r11, (%rdi)\n"
"	add %r15, %rdi\n"
"	dec %rsi\n"
"	jnz 11b\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, 8(%rbx)\n"
"	outb %al, $0xe5\n"
"	cmp %r14, %r11\n"
"	jne 10b\n"
"bench_end:\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r9\n"
"4:	hlt\n"
"	jmp 4b\n"
/*
 * The interrupt workloads' guests run with the in-kernel local APIC (its
 * xAPIC page at APIC_GPA, in r15), where HLT waits in the kernel for an
 * interrupt: they halt with IF=1 (`sti; hlt`, the STI shadow closing the
 * window between the check and the HLT) and end with an exit to PORT_END
 * instead. Their handlers count in IRQ_DATA.
 *
 * irq_ping(rdi = round trips), vCPU 0 of ipi_round_trip: once vCPU 1 is
 * ready, per round trip a fixed IPI VEC_PING to APIC ID 1 (physical
 * destination), then HLT until vCPU 1's VEC_PONG answer has been counted.
 */
"irq_ping:\n"
"	mov $" XSTR(APIC_GPA) ", %r15d\n"
"	movl $0x1ff, " XSTR(APIC_SVR) "(%r15)\n"
"	sti\n"
"20:	cmpl $1, " XSTR(IRQ_READY) "\n"
"	jae 21f\n"
"	pause\n"
"	jmp 20b\n"
"21:	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"	xor %esi, %esi\n"
"22:	inc %esi\n"
"	mov %esi, " XSTR(IRQ_SEQ) "\n"
"	movl $0x01000000, " XSTR(APIC_ICR2) "(%r15)\n"
"	movl $" XSTR(VEC_PING) ", " XSTR(APIC_ICR) "(%r15)\n"
"23:	cli\n"
"	cmp " XSTR(IRQ_PONGS) ", %esi\n"
"	jbe 24f\n"
"	sti\n"
"	hlt\n"
"	jmp 23b\n"
"24:	sti\n"
"	cmp %rdi, %rsi\n"
"	jb 22b\n"
"	jmp irq_end\n"
/*
 * irq_pong(rdi = round trips), vCPU 1: counts itself ready and halts
 * until its handler has answered every ping.
 */
"irq_pong:\n"
"	mov $" XSTR(APIC_GPA) ", %r15d\n"
"	movl $0x1ff, " XSTR(APIC_SVR) "(%r15)\n"
"	outb %al, $0xe0\n"
"	sti\n"
"	lock incl " XSTR(IRQ_READY) "\n"
"25:	cli\n"
"	cmp " XSTR(IRQ_PINGS) ", %edi\n"
"	jbe 26f\n"
"	sti\n"
"	hlt\n"
"	jmp 25b\n"
"26:	sti\n"
"	jmp irq_end\n"
/*
 * The handlers count a ping or pong only if it is new: a ping is new if
 * vCPU 0 has numbered one more (IRQ_SEQ) since the last one answered,
 * a pong if vCPU 1 has answered one more. A second delivery of the same
 * interrupt is counted in IRQ_DUPS instead (see bench_ipi).
 */
"irq_ping_handler:\n"
"	push %rax\n"
"	mov " XSTR(IRQ_SEQ) ", %eax\n"
"	cmp " XSTR(IRQ_PINGS) ", %eax\n"
"	je 36f\n"
"	mov %eax, " XSTR(IRQ_PINGS) "\n"
"	movl $0, " XSTR(APIC_ICR2) "(%r15)\n"
"	movl $" XSTR(VEC_PONG) ", " XSTR(APIC_ICR) "(%r15)\n"
"	jmp 37f\n"
"36:	lock incl " XSTR(IRQ_DUPS) "\n"
"37:	movl $0, " XSTR(APIC_EOI) "(%r15)\n"
"	pop %rax\n"
"	iretq\n"
"irq_pong_handler:\n"
"	push %rax\n"
"	mov " XSTR(IRQ_PINGS) ", %eax\n"
"	cmp " XSTR(IRQ_PONGS) ", %eax\n"
"	je 38f\n"
"	mov %eax, " XSTR(IRQ_PONGS) "\n"
"	jmp 39f\n"
"38:	lock incl " XSTR(IRQ_DUPS) "\n"
"39:	movl $0, " XSTR(APIC_EOI) "(%r15)\n"
"	pop %rax\n"
"	iretq\n"
/* VEC_COUNT: the periodic timer. */
"irq_count_handler:\n"
"	incl " XSTR(IRQ_COUNT) "\n"
"	movl $0, " XSTR(APIC_EOI) "(%r15)\n"
"	iretq\n"
/*
 * VEC_ANSWER: the doorbell's answer, new if the host thread has answered
 * one more ring (IRQ_ANSWERED) since the last one taken, else counted in
 * IRQ_DUPS as irq_pong_handler does.
 */
"irq_answer_handler:\n"
"	push %rax\n"
"	mov " XSTR(IRQ_ANSWERED) ", %eax\n"
"	cmp " XSTR(IRQ_COUNT) ", %eax\n"
"	je 40f\n"
"	mov %eax, " XSTR(IRQ_COUNT) "\n"
"	jmp 41f\n"
"40:	lock incl " XSTR(IRQ_DUPS) "\n"
"41:	movl $0, " XSTR(APIC_EOI) "(%r15)\n"
"	pop %rax\n"
"	iretq\n"
/*
 * irq_timer(rdi = interrupts, rsi = initial count): the APIC timer
 * periodic (divide by 1) with VEC_COUNT, HLT until rdi have been counted,
 * then stopped (initial count 0).
 */
"irq_timer:\n"
"	mov $" XSTR(APIC_GPA) ", %r15d\n"
"	movl $0x1ff, " XSTR(APIC_SVR) "(%r15)\n"
"	movl $0xb, " XSTR(APIC_TDCR) "(%r15)\n"
"	movl $" XSTR(LVTT_PERIODIC_COUNT) ", " XSTR(APIC_LVTT) "(%r15)\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"	mov %esi, " XSTR(APIC_TMICT) "(%r15)\n"
"27:	cli\n"
"	cmp " XSTR(IRQ_COUNT) ", %edi\n"
"	jbe 28f\n"
"	sti\n"
"	hlt\n"
"	jmp 27b\n"
"28:	movl $0, " XSTR(APIC_TMICT) "(%r15)\n"
"	sti\n"
"	jmp irq_end\n"
/*
 * irq_deadline(rdi = interrupts, rsi = TSC cycles): the APIC timer in
 * TSC-deadline mode with VEC_DEADLINE, armed rsi ahead and re-armed rsi
 * ahead of its handler's TSC by the handler, until rdi interrupts; HLT
 * in between. The handler adds up in IRQ_LATENCY how late it ran (its
 * TSC minus the deadline).
 */
"irq_deadline:\n"
"	mov $" XSTR(APIC_GPA) ", %r15d\n"
"	movl $0x1ff, " XSTR(APIC_SVR) "(%r15)\n"
"	mov %edi, " XSTR(IRQ_N) "\n"
"	mov %rsi, " XSTR(IRQ_PERIOD) "\n"
"	movl $" XSTR(LVTT_DEADLINE_VEC) ", " XSTR(APIC_LVTT) "(%r15)\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"	lea (%rdx,%rsi), %rax\n"
"	mov %rax, " XSTR(IRQ_DEADLINE) "\n"
"	mov %rax, %rdx\n"
"	shr $32, %rdx\n"
"	mov $0x6e0, %ecx\n"
"	wrmsr\n"
"29:	cli\n"
"	cmp " XSTR(IRQ_COUNT) ", %edi\n"
"	jbe 30f\n"
"	sti\n"
"	hlt\n"
"	jmp 29b\n"
"30:	sti\n"
"	jmp irq_end\n"
/*
 * An interrupt before the deadline armed last (all ones once the last one
 * came) is a second delivery of the previous one: counted in IRQ_DUPS.
 */
"irq_deadline_handler:\n"
"	push %rax\n"
"	push %rdx\n"
"	push %rcx\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rdx, %rax\n"
"	mov %rax, %rdx\n"
"	sub " XSTR(IRQ_DEADLINE) ", %rdx\n"
"	jb 42f\n"
"	add %rdx, " XSTR(IRQ_LATENCY) "\n"
"	incl " XSTR(IRQ_COUNT) "\n"
"	movq $-1, " XSTR(IRQ_DEADLINE) "\n"
"	mov " XSTR(IRQ_COUNT) ", %ecx\n"
"	cmp " XSTR(IRQ_N) ", %ecx\n"
"	jae 31f\n"
"	add " XSTR(IRQ_PERIOD) ", %rax\n"
"	mov %rax, " XSTR(IRQ_DEADLINE) "\n"
"	mov %rax, %rdx\n"
"	shr $32, %rdx\n"
"	mov $0x6e0, %ecx\n"
"	wrmsr\n"
"	jmp 31f\n"
"42:	lock incl " XSTR(IRQ_DUPS) "\n"
"31:	movl $0, " XSTR(APIC_EOI) "(%r15)\n"
"	pop %rcx\n"
"	pop %rdx\n"
"	pop %rax\n"
"	iretq\n"
/*
 * irq_doorbell(rdi = round trips): per round trip a write to
 * PORT_DOORBELL (an ioeventfd: no exit to this VMM), then HLT until the
 * answer (an irqfd's MSI, VEC_COUNT) has been counted.
 */
"irq_doorbell:\n"
"	mov $" XSTR(APIC_GPA) ", %r15d\n"
"	movl $0x1ff, " XSTR(APIC_SVR) "(%r15)\n"
"	sti\n"
"	outb %al, $0xe0\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r8\n"
"	xor %esi, %esi\n"
"32:	inc %esi\n"
"	outb %al, $" XSTR(PORT_DOORBELL) "\n"
"33:	cli\n"
"	cmp " XSTR(IRQ_COUNT) ", %esi\n"
"	jbe 34f\n"
"	sti\n"
"	hlt\n"
"	jmp 33b\n"
"34:	sti\n"
"	cmp %rdi, %rsi\n"
"	jb 32b\n"
"irq_end:\n"
"	rdtsc\n"
"	shl $32, %rdx\n"
"	or %rax, %rdx\n"
"	mov %rdx, %r9\n"
"	outb %al, $" XSTR(PORT_END) "\n"
"35:	hlt\n"
"	jmp 35b\n"
"bench_guest_end:\n"
"	.popsection\n"
);

struct vcpu_job {
	struct vcpu *vcpu;
	int id;
	uint64_t loop_exits;	/* PIO exits on PORT_LOOP */
	uint64_t t0, t1;	/* CLOCK_MONOTONIC ns: start exit, HLT exit */
	uint64_t tsc0, tsc1;	/* the guest's r8, r9 */
	/*
	 * The in-kernel local APIC's guests: HLT waits in the kernel, so a
	 * KVM_EXIT_HLT is unexpected and the guest ends with an OUT to
	 * PORT_END instead.
	 */
	int apic;
	uint64_t host_tsc0, host_tsc1;	/* this VMM's TSC at the start and end exits */
	/* If set, a counter read at the start and end exits, into soak0 and soak1. */
	const uint64_t *soak;
	uint64_t soak0, soak1;
	struct kvm_regs regs;	/* the guest's registers at HLT */
	/*
	 * OUTs to the workload's own ports (not PORT_START or PORT_LOOP), in
	 * the vCPU thread while the vCPU is out of the guest: 1 handled (the
	 * vCPU goes on), 0 not expected, -1 failed with err set.
	 */
	int (*on_out)(struct vcpu_job *j, uint16_t port);
	/*
	 * Other exits this loop does not handle itself (not an OUT, not the
	 * HLT after the start), likewise: 1 handled, 0 not expected, -1
	 * failed with err set.
	 */
	int (*on_exit)(struct vcpu_job *j);
	void *ctx;		/* the workload's, for on_out and on_exit */
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
				j->host_tsc0 = __rdtsc();
				if (j->soak)
					j->soak0 = __atomic_load_n(j->soak, __ATOMIC_RELAXED);
				continue;
			}
			if (run->io.port == PORT_END && started && j->apic) {
				j->t1 = now_ns();
				j->host_tsc1 = __rdtsc();
				if (j->soak)
					j->soak1 = __atomic_load_n(j->soak, __ATOMIC_RELAXED);
				break;
			}
			if (run->io.port != PORT_START && run->io.port != PORT_LOOP &&
			    j->on_out) {
				n = j->on_out(j, run->io.port);
				if (n > 0)
					continue;
				if (n < 0)
					goto out;
			}
		}
		if (run->exit_reason == KVM_EXIT_HLT && started && !j->apic) {
			j->t1 = now_ns();
			break;
		}
		if (run->exit_reason != KVM_EXIT_IO && j->on_exit) {
			n = j->on_exit(j);
			if (n > 0)
				continue;
			if (n < 0)
				goto out;
		}
		n = snprintf(j->err, sizeof(j->err), "vCPU %d: ", j->id);
		describe_exit(j->vcpu, j->err + n, sizeof(j->err) - n);
		goto out;
	}
	if (ioctl(j->vcpu->fd, KVM_GET_REGS, &j->regs) < 0) {
		snprintf(j->err, sizeof(j->err), "vCPU %d: KVM_GET_REGS: %s", j->id, strerror(errno));
		goto out;
	}
	j->tsc0 = j->regs.r8;
	j->tsc1 = j->regs.r9;
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
/* The interrupt workload's VM while its vCPUs run, for a timeout's message. */
static struct vm *irq_running;
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
 * Anonymous memory for a slot of @mib MiB. With @thp 2 MiB-aligned (as
 * FAULT_GPA is) and MADV_HUGEPAGE, so the host can back it with
 * transparent huge pages; else MADV_NOHUGEPAGE, so each guest page is its
 * own host fault and its own NPT/EPT fault (kernels without madvise(2)
 * still have the per-process switch main() sets).
 */
static void *slot_alloc(uint64_t mib, int thp)
{
	size_t len = mib << 20;
	uint8_t *raw, *slot;

	if (!thp) {
		slot = guest_alloc(len);
		madvise(slot, len, MADV_NOHUGEPAGE);
		return slot;
	}
	raw = guest_alloc(len + HUGE_SIZE);
	slot = (uint8_t *)(((uintptr_t)raw + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
	if (slot != raw)
		munmap(raw, slot - raw);
	munmap(slot + len, raw + HUGE_SIZE - slot);
	madvise(slot, len, MADV_HUGEPAGE);
	return slot;
}

/*
 * A fresh VM for workload @name with the bench guest code in slot 0, @cap
 * (if not NULL) enabled with KVM_ENABLE_CAP and then, if @mib, slot 1 at
 * FAULT_GPA of that size (see slot_alloc) with @slot_flags (KVM_MEM_*),
 * left in *@slot1. NULL after printing why.
 */
static struct vm *bench_vm(const char *dev, const char *name, const struct kvm_enable_cap *cap,
			   uint64_t mib, int thp, uint32_t slot_flags, void **slot1)
{
	struct vm *vm;
	long r;

	*slot1 = NULL;
	current = name;
	vm = vm_new_on(dev, LOW_SIZE);
	vm_use_minimal_cpuid(vm);
	vm_load(vm, GUEST_CODE, bench_guest_start, bench_guest_end);
	if (cap && ioctl(vm->fd, KVM_ENABLE_CAP, cap) < 0) {
		char why[128];

		snprintf(why, sizeof(why), "KVM_ENABLE_CAP(%u, args[0] %#llx): %s", cap->cap,
			 (unsigned long long)cap->args[0], strerror(errno));
		fail(name, why);
		vm_free(vm);
		return NULL;
	}
	if (!mib)
		return vm;
	*slot1 = slot_alloc(mib, thp);
	r = vm_set_region(vm, 1, slot_flags, FAULT_GPA, mib << 20, *slot1);
	if (r) {
		char why[128];

		snprintf(why, sizeof(why), "KVM_SET_USER_MEMORY_REGION slot 1: %s", strerror(-r));
		fail(name, why);
		vm_free(vm);
		munmap(*slot1, mib << 20);
		*slot1 = NULL;
		return NULL;
	}
	return vm;
}

/*
 * vCPU @id of @vm, entering @entry with rdi, rsi, rdx set (each vCPU on
 * its own 4 KiB of stack), into @j.
 */
static void bench_vcpu(struct vm *vm, struct vcpu_job *j, int id, const uint8_t *entry,
		       uint64_t rdi, uint64_t rsi, uint64_t rdx)
{
	struct kvm_regs regs;

	j->id = id;
	j->vcpu = vcpu_new(vm, id, MODE_LONG64, GUEST_CODE + (entry - bench_guest_start),
			   GUEST_STACK - (uint64_t)id * 4096);
	vcpu_get_regs(j->vcpu, &regs);
	regs.rdi = rdi;
	regs.rsi = rsi;
	regs.rdx = rdx;
	vcpu_set_regs(j->vcpu, &regs);
}

/* Starts a thread running @fn(@arg), on CPU @cpu only if @cpu >= 0. */
static void start_thread(pthread_t *thread, int cpu, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	if (cpu >= 0) {
		cpu_set_t one;

		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
	}
	pthread_create(thread, &attr, fn, arg);
	pthread_attr_destroy(&attr);
}

/*
 * Runs @nvcpus vCPU threads until each has halted (or failed), the thread
 * of vCPU i on CPU cpu0 + i if cpu0 >= 0. Returns 0, or -1 after printing
 * the first vCPU's error.
 */
static int run_vcpus(const char *name, struct vcpu_job *jobs, int nvcpus, int cpu0)
{
	pthread_t threads[MAX_VCPUS];
	pthread_barrier_t go;
	pthread_attr_t attr;
	uint64_t deadline;
	char why[192];
	int i;

	pthread_barrier_init(&go, NULL, nvcpus);
	for (i = 0; i < nvcpus; i++) {
		pthread_attr_init(&attr);
		if (cpu0 >= 0) {
			cpu_set_t cpu;

			CPU_ZERO(&cpu);
			CPU_SET(cpu0 + i, &cpu);
			pthread_attr_setaffinity_np(&attr, sizeof(cpu), &cpu);
		}
		jobs[i].go = &go;
		pthread_create(&threads[i], &attr, vcpu_thread, &jobs[i]);
		pthread_attr_destroy(&attr);
	}
	/* A vCPU stuck in the kernel cannot be joined: give up on the process. */
	deadline = now_ns() + timeout_s * 1000000000ULL;
	for (i = 0; i < nvcpus; i++) {
		while (!jobs[i].done) {
			if (now_ns() > deadline) {

				int len = snprintf(why, sizeof(why), "timeout: a vCPU did not halt "
						   "within %lu s", timeout_s);

				if (irq_running)	/* where the interrupt workload stopped */
					snprintf(why + len, sizeof(why) - len, " (pings %u pongs %u "
						 "count %u answered %u duplicates %u)",
						 *(volatile uint32_t *)gpa_ptr(irq_running, IRQ_PINGS),
						 *(volatile uint32_t *)gpa_ptr(irq_running, IRQ_PONGS),
						 *(volatile uint32_t *)gpa_ptr(irq_running, IRQ_COUNT),
						 *(volatile uint32_t *)gpa_ptr(irq_running, IRQ_ANSWERED),
						 *(volatile uint32_t *)gpa_ptr(irq_running, IRQ_DUPS));
				fail(name, why);
				exit(1);
			}
			usleep(10000);
		}
		pthread_join(threads[i], NULL);
	}
	pthread_barrier_destroy(&go);
	for (i = 0; i < nvcpus; i++) {
		if (jobs[i].err[0]) {
			fail(name, jobs[i].err);
			return -1;
		}
	}
	return 0;
}

/*
 * Runs one workload once in a fresh VM: nvcpus vCPUs entering `entry`, each
 * doing iterations / nvcpus; fault_mib > 0 adds an untouched slot of that
 * size at FAULT_GPA (THP-backed if thp_slot), vCPU i writing its i-th part.
 * Returns 0, or -1 after printing why.
 */
static int run_workload(const char *dev, const char *name, int nvcpus, const uint8_t *entry,
			uint64_t iterations, uint64_t fault_mib, struct result *res)
{
	struct vcpu_job jobs[MAX_VCPUS];
	uint64_t t0 = UINT64_MAX, t1 = 0, tsc0 = UINT64_MAX, tsc1 = 0, exits = 0;
	uint64_t per_vcpu = iterations / nvcpus;
	void *slot1;
	struct vm *vm;
	int i, ok = 1;

	memset(res, 0, sizeof(*res));
	memset(jobs, 0, sizeof(jobs));
	vm = bench_vm(dev, name, NULL, fault_mib, thp_slot, 0, &slot1);
	if (!vm)
		return -1;
	for (i = 0; i < nvcpus; i++)
		bench_vcpu(vm, &jobs[i], i, entry,
			   fault_mib ? FAULT_GPA + (uint64_t)i * per_vcpu * 4096 : per_vcpu,
			   per_vcpu, 0);
	current = NULL;

	if (run_vcpus(name, jobs, nvcpus, -1) < 0)
		ok = 0;
	for (i = 0; ok && i < nvcpus; i++) {
		struct vcpu_job *j = &jobs[i];

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
 * The best (lowest) figures per iteration of a workload's runs:
 * interference from the rest of the host only ever adds. The spread is
 * (worst - best) / best of the TSC figure.
 */
struct best {
	double tsc_min, tsc_max, wall_min;
};

static void best_init(struct best *b)
{
	b->tsc_min = b->wall_min = INFINITY;
	b->tsc_max = -INFINITY;
}

static void best_add(struct best *b, double tsc, double wall)
{
	b->tsc_min = tsc < b->tsc_min ? tsc : b->tsc_min;
	b->tsc_max = tsc > b->tsc_max ? tsc : b->tsc_max;
	b->wall_min = wall < b->wall_min ? wall : b->wall_min;
}

/*
 * Prints a workload's line: @n iterations. @clock is "guest" or "host":
 * whose TSC it is (the guest's around its loop, or this VMM's around what
 * it does itself). @extra: more fields, or "".
 */
static void best_print(const char *name, int nvcpus, uint64_t n, const char *clock,
		       const struct best *b, const char *extra)
{
	printf("bench %s vcpus=%d iterations=%llu %s_tsc_per_iter=%.1f wall_ns_per_iter=%.0f "
	       "runs=%u %s_tsc_spread=%.1f%%%s%s\n", name, nvcpus, (unsigned long long)n, clock,
	       b->tsc_min, b->wall_min, repeat, clock,
	       b->tsc_min > 0 ? 100.0 * (b->tsc_max - b->tsc_min) / b->tsc_min : 0.0,
	       extra[0] ? " " : "", extra);
	fflush(stdout);
}

/* Runs a workload `repeat` times, each in a fresh VM, and prints the best. */
static void bench(const char *dev, const char *name, int nvcpus, const uint8_t *entry,
		  uint64_t iterations, uint64_t fault_mib)
{
	struct result r;
	struct best b;
	uint64_t n = 0;
	unsigned int i;

	best_init(&b);
	for (i = 0; i < repeat; i++) {
		if (run_workload(dev, name, nvcpus, entry, iterations, fault_mib, &r) < 0)
			return;
		n = r.n;
		best_add(&b, (double)r.tsc / n, (double)r.wall / n);
	}
	best_print(name, nvcpus, n, "guest", &b, "");
}

static void skip(const char *name, const char *reason)
{
	printf("bench %s skipped reason=\"%s\"\n", name, reason);
	fflush(stdout);
}

/* --- pageout, pageout_fault_in ----------------------------------------- */

struct pageout_run {
	uint8_t *mem;
	size_t len;
	uint64_t tsc, wall;	/* the MADV_PAGEOUT call, this VMM's clocks */
	long present, swapped;	/* pages of the slot right after it */
	int paged_out;
};

/* bench_pageout's exit to PORT_PAGEOUT: the slot is written, page it out. */
static int pageout_on_out(struct vcpu_job *j, uint16_t port)
{
	struct pageout_run *p = j->ctx;
	uint64_t t0, tsc0;
	int r;

	if (port != PORT_PAGEOUT || p->paged_out)
		return 0;
	p->paged_out = 1;
	t0 = now_ns();
	tsc0 = __rdtsc();
	if (madvise(p->mem, p->len, MADV_PAGEOUT)) {
		snprintf(j->err, sizeof(j->err), "MADV_PAGEOUT: %s", strerror(errno));
		return -1;
	}
	p->tsc = __rdtsc() - tsc0;
	p->wall = now_ns() - t0;
	r = range_pages(p->mem, p->len, &p->present, &p->swapped);
	if (r) {
		snprintf(j->err, sizeof(j->err), "/proc/self/pagemap: %s", strerror(-r));
		return -1;
	}
	return 1;
}

/*
 * pageout and pageout_fault_in, `repeat` times each in a fresh VM with a
 * slot of @mib MiB in 4 KiB host pages.
 */
static void bench_pageout_fault_in(const char *dev, uint64_t mib)
{
	uint64_t pages = mib << 8;
	struct best out, in;
	double resident_pct = 0, swapped_pct = 100;
	cpu_set_t all, one;
	long free_kb;
	unsigned int i;
	char extra[96];

	/*
	 * Room for the slot with a margin, as the selftest's swap round trip
	 * wants: a pageout that runs out of swap leaves pages resident, which
	 * is not what resident_pct is for.
	 */
	free_kb = swap_free_kb();
	if (free_kb < (long)(mib << 10) + (long)(mib << 8)) {
		char why[160];

		snprintf(why, sizeof(why), "no swap: SwapFree %ld kB, %llu kB needed "
			 "(tools/rkvm/guest/init sets up zram in bench mode)", free_kb,
			 (unsigned long long)((mib << 10) + (mib << 8)));
		skip("pageout", why);
		skip("pageout_fault_in", why);
		return;
	}
	/*
	 * The VMM on one CPU: the pages the vCPU faulted in are then in the
	 * per-CPU LRU batch that MADV_PAGEOUT drains (its own CPU's), not in
	 * another CPU's where it cannot isolate them.
	 */
	sched_getaffinity(0, sizeof(all), &all);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	sched_setaffinity(0, sizeof(one), &one);

	best_init(&out);
	best_init(&in);
	for (i = 0; i < repeat; i++) {
		struct pageout_run p = { .len = mib << 20 };
		struct vcpu_job job = { .on_out = pageout_on_out, .ctx = &p };
		const char *why = NULL;
		struct vm *vm;
		char buf[160];

		vm = bench_vm(dev, "pageout", NULL, mib, 0, 0, (void **)&p.mem);
		if (!vm)
			break;
		bench_vcpu(vm, &job, 0, bench_pageout, FAULT_GPA, pages, 0);
		current = NULL;
		if (run_vcpus("pageout", &job, 1, -1) == 0) {
			if (!p.paged_out) {
				why = "the guest halted without asking for the pageout";
			} else if (job.regs.r10) {
				snprintf(buf, sizeof(buf), "the guest read back %llu pages that "
					 "did not hold what it wrote",
					 (unsigned long long)job.regs.r10);
				why = buf;
			} else if (job.tsc1 <= job.tsc0) {
				why = "the guest's TSC did not advance";
			}
		} else {
			why = "";	/* printed by run_vcpus */
		}
		vcpu_free(job.vcpu);
		vm_free(vm);
		munmap(p.mem, p.len);
		if (why) {
			if (why[0])
				fail("pageout_fault_in", why);
			break;
		}
		best_add(&out, (double)p.tsc / pages, (double)p.wall / pages);
		best_add(&in, (double)(job.tsc1 - job.tsc0) / pages,
			 (double)(job.t1 - job.t0) / pages);
		/* The worst run: one that leaves pages behind is the news. */
		if (100.0 * p.present / pages > resident_pct)
			resident_pct = 100.0 * p.present / pages;
		if (100.0 * p.swapped / pages < swapped_pct)
			swapped_pct = 100.0 * p.swapped / pages;
	}
	sched_setaffinity(0, sizeof(all), &all);
	if (i < repeat)
		return;
	snprintf(extra, sizeof(extra), "resident_pct=%.2f swapped_pct=%.2f", resident_pct,
		 swapped_pct);
	best_print("pageout", 1, pages, "host", &out, extra);
	best_print("pageout_fault_in", 1, pages, "guest", &in, "");
}

/* --- invalidate_pass, invalidate --------------------------------------- */

/*
 * The host thread of bench_invalidate: one MADV_DONTNEED of the next 2 MiB
 * chunk (round-robin) each time the vCPU thread posts `todo`, while the
 * guest goes on with its next pass.
 */
struct invalidator {
	uint8_t *region;
	size_t chunks;
	sem_t todo;
	uint64_t done;		/* atomic: invalidations finished */
	int error;		/* errno of a failed madvise */
	int stop;
	/* vCPU thread: what the guest has done so far */
	uint64_t passes;	/* per phase */
	uint64_t pass;		/* PORT_PASS exits of the current phase */
	int busy;		/* in the invalidating phase */
	uint64_t posted;
	uint64_t quiet_end, busy_start, busy_end;	/* CLOCK_MONOTONIC ns */
	uint64_t done_at_end;	/* invalidations finished by the last pass */
};

static void *invalidator_thread(void *arg)
{
	struct invalidator *inv = arg;
	uint64_t i;

	for (;;) {
		while (sem_wait(&inv->todo) && errno == EINTR)
			;
		if (__atomic_load_n(&inv->stop, __ATOMIC_ACQUIRE))
			return NULL;
		i = __atomic_load_n(&inv->done, __ATOMIC_RELAXED);
		if (madvise(inv->region + (i % inv->chunks) * HUGE_SIZE, HUGE_SIZE,
			    MADV_DONTNEED))
			inv->error = errno;
		__atomic_store_n(&inv->done, i + 1, __ATOMIC_RELEASE);
	}
}

/*
 * bench_rewrite's exits. The invalidation asked for after busy pass k
 * lands while the guest writes pass k + 1, and the refault of its chunk
 * comes in pass k + 1 or, if the guest had written the chunk already,
 * k + 2: so none is asked for after the last two passes, and every
 * invalidation's refault falls inside the timed phase. That holds when
 * the host thread keeps up, as under -icount and in Bochs, where the
 * emulated CPUs take turns of a few instructions. QEMU without -icount
 * runs one CPU until it is kicked, every 100 ms: the thread then runs in
 * bursts and only the invalidations finished by the last pass count.
 */
static int invalidate_on_out(struct vcpu_job *j, uint16_t port)
{
	struct invalidator *inv = j->ctx;

	if (port == PORT_PHASE && !inv->busy && inv->pass == inv->passes) {
		inv->busy = 1;
		inv->pass = 0;
		inv->busy_start = now_ns();
		return 1;
	}
	if (port != PORT_PASS || inv->pass >= inv->passes)
		return 0;
	inv->pass++;
	if (!inv->busy) {
		if (inv->pass == inv->passes)
			inv->quiet_end = now_ns();
	} else if (inv->pass + 2 <= inv->passes) {
		inv->posted++;
		sem_post(&inv->todo);
	} else if (inv->pass == inv->passes) {
		inv->busy_end = now_ns();
		inv->done_at_end = __atomic_load_n(&inv->done, __ATOMIC_ACQUIRE);
	}
	return 1;
}

/*
 * invalidate_pass and invalidate, `repeat` times each in a fresh VM with a
 * THP-backed region of @mib MiB rewritten @passes times per phase. The
 * vCPU runs on CPU 0 and the invalidating thread on CPU 1, so each
 * invalidation reaches a vCPU that is in the guest.
 */
static void bench_invalidate(const char *dev, uint64_t mib, uint64_t passes)
{
	struct best busy, cost;
	double quiet_tsc_min = INFINITY;
	uint64_t invalidations = UINT64_MAX, asked = 0;
	int two_cpus = sysconf(_SC_NPROCESSORS_ONLN) >= 2;
	unsigned int i;
	char extra[128];

	best_init(&busy);
	best_init(&cost);
	for (i = 0; i < repeat; i++) {
		struct invalidator inv = { .chunks = mib / 2, .passes = passes };
		struct vcpu_job job = { .on_out = invalidate_on_out, .ctx = &inv };
		int64_t quiet_tsc, busy_tsc, quiet_wall, busy_wall;
		long rss_kb, thp_kb;
		pthread_t thread;
		char why[192] = "";
		struct vm *vm;
		int r;

		vm = bench_vm(dev, "invalidate", NULL, mib, 1, 0, (void **)&inv.region);
		if (!vm)
			break;
		bench_vcpu(vm, &job, 0, bench_rewrite, FAULT_GPA, mib << 17, passes);
		current = NULL;
		sem_init(&inv.todo, 0, 0);
		start_thread(&thread, two_cpus ? 1 : -1, invalidator_thread, &inv);

		r = run_vcpus("invalidate", &job, 1, two_cpus ? 0 : -1);

		__atomic_store_n(&inv.stop, 1, __ATOMIC_RELEASE);
		sem_post(&inv.todo);
		pthread_join(thread, NULL);
		sem_destroy(&inv.todo);
		host_mapping(inv.region, &rss_kb, &thp_kb);
		vcpu_free(job.vcpu);
		vm_free(vm);
		munmap(inv.region, mib << 20);
		if (r < 0)
			break;

		if (inv.error)
			snprintf(why, sizeof(why), "MADV_DONTNEED: %s", strerror(inv.error));
		else if (!inv.busy_end || job.tsc1 <= job.regs.r11 || job.regs.r10 <= job.tsc0)
			snprintf(why, sizeof(why), "the guest did not run both phases");
		else if (!inv.done_at_end)
			snprintf(why, sizeof(why), "the host thread did none of its %llu "
				 "invalidations while the guest ran", (unsigned long long)inv.posted);
		else if (thp_kb >= 0 && thp_kb < (long)(mib << 9))
			snprintf(why, sizeof(why), "the host backed %ld KiB of the region with THP, "
				 "not at least half of it", thp_kb);
		if (why[0]) {
			fail("invalidate", why);
			break;
		}
		quiet_tsc = job.regs.r10 - job.tsc0;
		busy_tsc = job.tsc1 - job.regs.r11;
		quiet_wall = inv.quiet_end - job.t0;
		busy_wall = inv.busy_end - inv.busy_start;
		best_add(&busy, (double)busy_tsc / passes, (double)busy_wall / passes);
		best_add(&cost, (double)(busy_tsc - quiet_tsc) / inv.done_at_end,
			 (double)(busy_wall - quiet_wall) / inv.done_at_end);
		if ((double)quiet_tsc / passes < quiet_tsc_min)
			quiet_tsc_min = (double)quiet_tsc / passes;
		if (inv.done_at_end < invalidations)
			invalidations = inv.done_at_end;
		asked = inv.posted;
	}
	if (i < repeat)
		return;
	snprintf(extra, sizeof(extra), "quiet_tsc_per_pass=%.1f invalidations=%llu asked=%llu "
		 "region_mib=%llu", quiet_tsc_min, (unsigned long long)invalidations,
		 (unsigned long long)asked, (unsigned long long)mib);
	best_print("invalidate_pass", 1, passes, "guest", &busy, extra);
	/* iterations: the fewest invalidations a run finished in time. */
	best_print("invalidate", 1, invalidations, "guest", &cost, "");
}

/* --- dirty_pass*, get_dirty_log*, clear_dirty_log ----------------------- */

#define DIRTY_MBOX		GUEST_DATA	/* bench_dirty: 16 bytes per vCPU */

/* How the VMM collects the dirty pages after each pass. */
enum dirty_mode {
	DIRTY_GET,		/* KVM_GET_DIRTY_LOG (dirty_pass*) */
	DIRTY_GET_TWICE,	/* and a second call right after it (get_dirty_log*) */
	/*
	 * KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (without INITIALLY_SET):
	 * KVM_GET_DIRTY_LOG, a snapshot, then KVM_CLEAR_DIRTY_LOG of the whole
	 * slot with that bitmap, then KVM_GET_DIRTY_LOG again (clear_dirty_log)
	 */
	DIRTY_CLEAR,
	/*
	 * KVM_CAP_DIRTY_LOG_RING_ACQ_REL: each vCPU's ring harvested, then
	 * KVM_RESET_DIRTY_RINGS (dirty_pass_ring)
	 */
	DIRTY_RING,
};

/*
 * A group's sums: its timed passes (guest TSC from the first vCPU's start
 * to the last one's end, wall from the release to the last exit) and the
 * collections after them: the log call (or the ring's harvest and reset),
 * KVM_CLEAR_DIRTY_LOG, the second log call.
 */
struct dirty_sums {
	uint64_t pass_tsc, pass_wall;
	uint64_t log_tsc, log_wall, clear_tsc, clear_wall, empty_log_tsc, empty_log_wall;
};

/*
 * One VM of the dirty-logging workloads, shared by its vCPU threads. At
 * each PORT_DIRTY_PASS exit the vCPUs meet; the last to arrive (the
 * barrier's serial thread) adds up the pass and collects the dirty pages,
 * then all of them enter the next pass: as in KVM's dirty_log_perf_test,
 * the log is taken while no vCPU is in the guest, so the passes time the
 * write-protection faults and not the ioctl.
 */
struct dirty_run {
	struct vm *vm;
	enum dirty_mode mode;
	int nvcpus;
	uint64_t slot_pages;
	uint64_t stride_pages;	/* the guest writes one page in stride_pages */
	uint64_t *bitmap;	/* the log, or the pages the ring named this pass */
	pthread_barrier_t pass_end, log_taken;
	uint64_t pass;		/* the pass that ended last; 0: the fault-in */
	uint64_t passes;	/* timed passes per group */
	struct dirty_sums *group;	/* `repeat` groups of `passes` passes */
	uint64_t out_ns[MAX_VCPUS];	/* each vCPU's PORT_DIRTY_PASS exit */
	uint64_t released_ns;	/* when the vCPUs were let into this pass */
	char err[256];		/* why the collection failed */
	/* DIRTY_RING: each vCPU's ring and the next entry to harvest in it */
	struct kvm_dirty_gfn *ring[MAX_VCPUS];
	uint64_t ring_next[MAX_VCPUS];
	uint64_t ring_entries;	/* per vCPU, a power of 2 */
	/*
	 * Held from a harvest to the KVM_RESET_DIRTY_RINGS after it, so that
	 * the call resets exactly the entries counted in ring_harvested (a
	 * vCPU thread harvests its ring at a KVM_EXIT_DIRTY_RING_FULL).
	 */
	pthread_mutex_t ring_lock;
	uint64_t ring_harvested;	/* entries marked for the next reset */
	uint64_t ring_full_exits;	/* KVM_EXIT_DIRTY_RING_FULL, all passes */
	/*
	 * Entries naming a page already named in that pass: a write fault
	 * fixed and logged right before a KVM_EXIT_DIRTY_RING_FULL, its page
	 * reset (protected again) before the guest's write retired, faults
	 * and is logged again (KVM does this; not an error).
	 */
	uint64_t ring_duplicates;
};

/* vCPU @id's mailbox in slot 0: the guest's TSC at its pass start and end. */
static volatile uint64_t *dirty_mbox(struct vm *vm, int id)
{
	return gpa_ptr(vm, DIRTY_MBOX + (uint64_t)id * 16);
}

/* ioctl(@fd, @cmd, @arg), timed by this VMM's clocks: 0 or -errno. */
static int ioctl_timed(int fd, unsigned long cmd, void *arg, uint64_t *tsc, uint64_t *wall)
{
	uint64_t t0, tsc0;
	int r;

	t0 = now_ns();
	tsc0 = __rdtsc();
	r = ioctl(fd, cmd, arg);
	*tsc = __rdtsc() - tsc0;
	*wall = now_ns() - t0;
	return r < 0 ? -errno : 0;
}

/* KVM_GET_DIRTY_LOG of slot 1 into d->bitmap, timed by this VMM's clocks. */
static int get_dirty_log_timed(struct dirty_run *d, uint64_t *tsc, uint64_t *wall)
{
	struct kvm_dirty_log log = { .slot = 1, .dirty_bitmap = d->bitmap };

	return ioctl_timed(d->vm->fd, KVM_GET_DIRTY_LOG, &log, tsc, wall);
}

/*
 * KVM_CLEAR_DIRTY_LOG of all of slot 1 with d->bitmap (what the last
 * KVM_GET_DIRTY_LOG reported), timed by this VMM's clocks.
 */
static int clear_dirty_log_timed(struct dirty_run *d, uint64_t *tsc, uint64_t *wall)
{
	struct kvm_clear_dirty_log clear = {
		.slot = 1, .first_page = 0, .num_pages = d->slot_pages,
		.dirty_bitmap = d->bitmap,
	};

	return ioctl_timed(d->vm->fd, KVM_CLEAR_DIRTY_LOG, &clear, tsc, wall);
}

/*
 * Takes the entries the hypervisor has pushed to vCPU @id's ring since the
 * last harvest, in order: each one's flags read with acquire (DIRTY: a
 * page to take), its page set in d->bitmap, then RESET stored with
 * release, handing the entry back. The caller holds ring_lock. 0, or -1
 * with @err set if an entry names no page of slot 1 (the only logging
 * slot).
 */
static int ring_harvest(struct dirty_run *d, int id, char *err, size_t len)
{
	struct kvm_dirty_gfn *e;
	uint64_t page;

	for (;;) {
		e = &d->ring[id][d->ring_next[id] & (d->ring_entries - 1)];
		if (__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) != KVM_DIRTY_GFN_F_DIRTY)
			return 0;
		page = e->offset;
		if (e->slot != 1 || page >= d->slot_pages) {
			snprintf(err, len, "vCPU %d's dirty ring entry %llu at pass %llu names "
				 "slot %#x page %llu, not a page of slot 1 (%llu pages)", id,
				 (unsigned long long)d->ring_next[id], (unsigned long long)d->pass,
				 e->slot, (unsigned long long)page,
				 (unsigned long long)d->slot_pages);
			return -1;
		}
		if (d->bitmap[page / 64] >> (page % 64) & 1)
			d->ring_duplicates++;
		d->bitmap[page / 64] |= 1ULL << (page % 64);
		__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
		d->ring_next[id]++;
		d->ring_harvested++;
	}
}

/*
 * KVM_RESET_DIRTY_RINGS after a harvest (ring_lock held): the hypervisor
 * write-protects the pages of the entries marked RESET and frees them. It
 * must reset exactly the entries harvested. 0, or -1 with @err set.
 */
static int ring_reset(struct dirty_run *d, char *err, size_t len)
{
	int r = ioctl(d->vm->fd, KVM_RESET_DIRTY_RINGS, 0);

	if (r < 0) {
		snprintf(err, len, "KVM_RESET_DIRTY_RINGS at pass %llu: %s",
			 (unsigned long long)d->pass, strerror(errno));
		return -1;
	}
	if ((uint64_t)r != d->ring_harvested) {
		snprintf(err, len, "KVM_RESET_DIRTY_RINGS at pass %llu reset %d entries, "
			 "%llu were harvested", (unsigned long long)d->pass, r,
			 (unsigned long long)d->ring_harvested);
		return -1;
	}
	d->ring_harvested = 0;
	return 0;
}

/*
 * The collection of DIRTY_RING after a pass (every vCPU out of the
 * guest): every ring harvested into d->bitmap (which may hold pages
 * harvested at a KVM_EXIT_DIRTY_RING_FULL of this pass already), then one
 * KVM_RESET_DIRTY_RINGS; timed by this VMM's clocks. 0, or -1 with d->err
 * set.
 */
static int ring_collect_timed(struct dirty_run *d, uint64_t *tsc, uint64_t *wall)
{
	uint64_t t0, tsc0;
	int i, r = 0;

	pthread_mutex_lock(&d->ring_lock);
	t0 = now_ns();
	tsc0 = __rdtsc();
	for (i = 0; !r && i < d->nvcpus; i++)
		r = ring_harvest(d, i, d->err, sizeof(d->err));
	if (!r)
		r = ring_reset(d, d->err, sizeof(d->err));
	*tsc = __rdtsc() - tsc0;
	*wall = now_ns() - t0;
	pthread_mutex_unlock(&d->ring_lock);
	return r;
}

/*
 * Whether d->bitmap, what @source reported, names exactly the pages the
 * guest wrote (@written) or, right after a call that took them, none. A
 * hypervisor that loses dirty bits must not get a figure. 0, or -1 with
 * d->err set.
 */
static int check_dirty_log(struct dirty_run *d, int written, const char *source)
{
	uint64_t expected = written ? d->slot_pages / d->stride_pages : 0;
	uint64_t reported = 0, missing = 0, i;

	for (i = 0; i < d->slot_pages / 64; i++)
		reported += __builtin_popcountll(d->bitmap[i]);
	for (i = 0; written && i < d->slot_pages; i += d->stride_pages)
		missing += !(d->bitmap[i / 64] >> (i % 64) & 1);
	if (reported == expected && !missing)
		return 0;
	snprintf(d->err, sizeof(d->err), "%s after pass %llu reported %llu dirty pages (%llu "
		 "of the written ones missing), the guest wrote %llu", source,
		 (unsigned long long)d->pass, (unsigned long long)reported,
		 (unsigned long long)missing, (unsigned long long)expected);
	return -1;
}

/* In the barrier's serial thread, every vCPU out of the guest. */
static void dirty_collect(struct dirty_run *d)
{
	struct dirty_sums *sums = d->pass ? &d->group[(d->pass - 1) / d->passes] : NULL;
	uint64_t start = UINT64_MAX, end = 0, out = 0, tsc, wall;
	int i, r;

	/* The VM's pass: from the first vCPU's start to the last one's end. */
	for (i = 0; i < d->nvcpus; i++) {
		volatile uint64_t *mbox = dirty_mbox(d->vm, i);

		start = mbox[0] < start ? mbox[0] : start;
		end = mbox[1] > end ? mbox[1] : end;
		out = d->out_ns[i] > out ? d->out_ns[i] : out;
	}
	if (sums) {
		if (end <= start) {
			snprintf(d->err, sizeof(d->err), "the guest's TSC did not advance");
			return;
		}
		sums->pass_tsc += end - start;
		sums->pass_wall += out - d->released_ns;
	}
	if (d->mode == DIRTY_RING) {
		if (ring_collect_timed(d, &tsc, &wall) || check_dirty_log(d, 1, "the dirty ring"))
			return;
		memset(d->bitmap, 0, d->slot_pages / 8);	/* the next pass's */
	} else {
		r = get_dirty_log_timed(d, &tsc, &wall);
		if (r) {
			snprintf(d->err, sizeof(d->err), "KVM_GET_DIRTY_LOG after pass %llu: %s",
				 (unsigned long long)d->pass, strerror(-r));
			return;
		}
		if (check_dirty_log(d, 1, "KVM_GET_DIRTY_LOG"))
			return;
	}
	if (sums) {
		sums->log_tsc += tsc;
		sums->log_wall += wall;
	}
	if (d->mode == DIRTY_CLEAR) {
		r = clear_dirty_log_timed(d, &tsc, &wall);
		if (r) {
			snprintf(d->err, sizeof(d->err), "KVM_CLEAR_DIRTY_LOG after pass %llu: %s",
				 (unsigned long long)d->pass, strerror(-r));
			return;
		}
		if (sums) {
			sums->clear_tsc += tsc;
			sums->clear_wall += wall;
		}
	}
	if (d->mode == DIRTY_GET_TWICE || d->mode == DIRTY_CLEAR) {
		r = get_dirty_log_timed(d, &tsc, &wall);
		if (r) {
			snprintf(d->err, sizeof(d->err), "KVM_GET_DIRTY_LOG (the second call) "
				 "after pass %llu: %s", (unsigned long long)d->pass, strerror(-r));
			return;
		}
		if (check_dirty_log(d, 0, d->mode == DIRTY_CLEAR ?
				    "KVM_GET_DIRTY_LOG (after KVM_CLEAR_DIRTY_LOG)" :
				    "KVM_GET_DIRTY_LOG (the second call)"))
			return;
		if (sums) {
			sums->empty_log_tsc += tsc;
			sums->empty_log_wall += wall;
		}
	}
	d->pass++;
	d->released_ns = now_ns();
}

static int dirty_on_out(struct vcpu_job *j, uint16_t port)
{
	struct dirty_run *d = j->ctx;

	if (port != PORT_DIRTY_PASS)
		return 0;
	d->out_ns[j->id] = now_ns();
	if (pthread_barrier_wait(&d->pass_end) == PTHREAD_BARRIER_SERIAL_THREAD)
		dirty_collect(d);
	pthread_barrier_wait(&d->log_taken);
	if (d->err[0]) {
		snprintf(j->err, sizeof(j->err), "%s", d->err);
		return -1;
	}
	return 1;
}

/*
 * DIRTY_RING: a KVM_EXIT_DIRTY_RING_FULL (the vCPU's ring reached its soft
 * limit within a pass): harvest this vCPU's ring into the pass's pages,
 * reset, and go on with the pass, counting the exit.
 */
static int dirty_on_exit(struct vcpu_job *j)
{
	struct dirty_run *d = j->ctx;
	int r;

	if (d->mode != DIRTY_RING || j->vcpu->run->exit_reason != KVM_EXIT_DIRTY_RING_FULL)
		return 0;
	pthread_mutex_lock(&d->ring_lock);
	d->ring_full_exits++;
	r = ring_harvest(d, j->id, j->err, sizeof(j->err));
	/* Else it would exit again at once, for ever. */
	if (!r && !d->ring_harvested) {
		snprintf(j->err, sizeof(j->err), "KVM_EXIT_DIRTY_RING_FULL in pass %llu with no "
			 "dirty entry at vCPU %d's ring entry %llu", (unsigned long long)d->pass,
			 j->id, (unsigned long long)d->ring_next[j->id]);
		r = -1;
	}
	if (!r)
		r = ring_reset(d, j->err, sizeof(j->err));
	pthread_mutex_unlock(&d->ring_lock);
	return r < 0 ? -1 : 1;
}

/*
 * The best figures of a workload's groups: per timed pass, per collection
 * call; and what the run's dirty rings saw.
 */
struct dirty_best {
	struct best pass, log, clear, empty_log;
	uint64_t ring_entries, ring_full_exits, ring_duplicates;
};

/* KVM_CHECK_EXTENSION(@cap) on @dev, or -errno. */
static long dev_check_extension(const char *dev, long cap)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	long r;

	if (fd < 0)
		return -errno;
	r = ioctl(fd, KVM_CHECK_EXTENSION, cap);
	r = r < 0 ? -errno : r;
	close(fd);
	return r;
}

/*
 * Whether @dev reports capability @cap_name (@cap): its KVM_CHECK_EXTENSION
 * value, or 0 after reporting workload @name skipped (the hypervisor does
 * not have it) or -1 after reporting it failed.
 */
static long need_cap(const char *dev, const char *name, long cap, const char *cap_name)
{
	long r = dev_check_extension(dev, cap);
	char why[128];

	if (r < 0) {
		snprintf(why, sizeof(why), "KVM_CHECK_EXTENSION(%s) on %s: %s", cap_name, dev,
			 strerror(-r));
		fail(name, why);
		return -1;
	}
	if (!r) {
		snprintf(why, sizeof(why), "%s does not report %s", dev, cap_name);
		skip(name, why);
	}
	return r;
}

/*
 * One VM of a dirty-logging workload: a logging slot of @mib MiB in 4 KiB
 * host pages, @nvcpus vCPUs each writing one page in @stride_pages of its
 * own part of it, one untimed pass that faults the pages in, then
 * `repeat` groups of @passes timed passes, the dirty pages collected as
 * @mode says after each. The groups are the runs of this workload (one VM
 * for all of them: the fault-in pass costs more than a few timed ones, and
 * every pass after it does the same work). Returns 0, 1 after reporting
 * @name skipped (the hypervisor lacks the capability @mode needs), or -1
 * after printing why it failed.
 */
static int dirty_run(const char *dev, const char *name, uint64_t mib, int nvcpus,
		     uint64_t stride_pages, uint64_t passes, enum dirty_mode mode,
		     struct dirty_best *b)
{
	struct vcpu_job jobs[MAX_VCPUS];
	struct dirty_run d = {
		.mode = mode, .nvcpus = nvcpus, .slot_pages = mib << 8,
		.stride_pages = stride_pages, .passes = passes,
	};
	uint64_t writes = d.slot_pages / stride_pages / nvcpus;
	struct kvm_enable_cap cap = { 0 };
	size_t ring_bytes = 0;
	struct kvm_regs regs;
	unsigned int g;
	void *slot1;
	long max;
	int i, r;

	memset(b, 0, sizeof(*b));
	if (mode == DIRTY_CLEAR) {
		max = need_cap(dev, name, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
				"KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
		if (max <= 0)
			return max < 0 ? -1 : 1;
		if (!(max & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
			skip(name, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 lacks "
			     "KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE");
			return 1;
		}
		cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
		cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
	} else if (mode == DIRTY_RING) {
		/* The largest ring size in bytes, KVM_DIRTY_RING_MAX_ENTRIES in KVM. */
		max = need_cap(dev, name, KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
				"KVM_CAP_DIRTY_LOG_RING_ACQ_REL");
		if (max <= 0)
			return max < 0 ? -1 : 1;
		/*
		 * A vCPU's pages of one pass and room for what the hypervisor
		 * keeps in reserve below the ring's end (KVM: 64 entries plus
		 * a PML buffer of 512), so that a pass does not fill the ring
		 * up to its soft limit; at most the largest size (a pass over
		 * more than some 250 MiB then takes KVM_EXIT_DIRTY_RING_FULL
		 * exits).
		 */
		d.ring_entries = 1;
		while (d.ring_entries < writes + 1024 &&
		       d.ring_entries * sizeof(struct kvm_dirty_gfn) < (uint64_t)max)
			d.ring_entries *= 2;
		ring_bytes = d.ring_entries * sizeof(struct kvm_dirty_gfn);
		if (ring_bytes > (uint64_t)max) {
			char why[128];

			snprintf(why, sizeof(why), "KVM_CAP_DIRTY_LOG_RING_ACQ_REL reports %ld "
				 "bytes, not a power of 2", max);
			fail(name, why);
			return -1;
		}
		cap.cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
		cap.args[0] = ring_bytes;
		b->ring_entries = d.ring_entries;
	}
	memset(jobs, 0, sizeof(jobs));
	d.vm = bench_vm(dev, name, cap.cap ? &cap : NULL, mib, 0, KVM_MEM_LOG_DIRTY_PAGES,
			&slot1);
	if (!d.vm)
		return -1;
	d.bitmap = calloc(d.slot_pages / 64, 8);
	d.group = calloc(repeat, sizeof(*d.group));
	if (!d.bitmap || !d.group)
		guest_die("out of memory for the dirty bitmap");
	pthread_mutex_init(&d.ring_lock, NULL);
	for (i = 0; i < nvcpus; i++) {
		jobs[i].on_out = dirty_on_out;
		jobs[i].on_exit = dirty_on_exit;
		jobs[i].ctx = &d;
		bench_vcpu(d.vm, &jobs[i], i, bench_dirty,
			   FAULT_GPA + (uint64_t)i * writes * stride_pages * 4096, writes,
			   passes * repeat + 1);
		vcpu_get_regs(jobs[i].vcpu, &regs);
		regs.rcx = stride_pages * 4096;
		regs.rbx = DIRTY_MBOX + (uint64_t)i * 16;
		vcpu_set_regs(jobs[i].vcpu, &regs);
		if (mode == DIRTY_RING) {
			d.ring[i] = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
					 jobs[i].vcpu->fd,
					 (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
			if (d.ring[i] == MAP_FAILED)
				guest_die("mmap of vCPU %d's dirty ring (%zu bytes at page %d of "
					  "its fd): %s", i, ring_bytes, KVM_DIRTY_LOG_PAGE_OFFSET,
					  strerror(errno));
		}
	}
	current = NULL;
	pthread_barrier_init(&d.pass_end, NULL, nvcpus);
	pthread_barrier_init(&d.log_taken, NULL, nvcpus);

	r = run_vcpus(name, jobs, nvcpus, -1);
	if (!r && d.pass != passes * repeat + 1) {
		char why[128];

		snprintf(why, sizeof(why), "the guest halted after %llu of its %llu passes",
			 (unsigned long long)d.pass, (unsigned long long)passes * repeat + 1);
		fail(name, why);
		r = -1;
	}
	best_init(&b->pass);
	best_init(&b->log);
	best_init(&b->clear);
	best_init(&b->empty_log);
	for (g = 0; !r && g < repeat; g++) {
		struct dirty_sums *sums = &d.group[g];

		best_add(&b->pass, (double)sums->pass_tsc / passes,
			 (double)sums->pass_wall / passes);
		best_add(&b->log, (double)sums->log_tsc / passes, (double)sums->log_wall / passes);
		best_add(&b->clear, (double)sums->clear_tsc / passes,
			 (double)sums->clear_wall / passes);
		best_add(&b->empty_log, (double)sums->empty_log_tsc / passes,
			 (double)sums->empty_log_wall / passes);
	}
	b->ring_full_exits = d.ring_full_exits;
	b->ring_duplicates = d.ring_duplicates;
	pthread_barrier_destroy(&d.pass_end);
	pthread_barrier_destroy(&d.log_taken);
	pthread_mutex_destroy(&d.ring_lock);
	for (i = 0; i < nvcpus; i++) {
		if (d.ring[i])
			munmap(d.ring[i], ring_bytes);
		vcpu_free(jobs[i].vcpu);
	}
	vm_free(d.vm);
	munmap(slot1, mib << 20);
	free(d.bitmap);
	free(d.group);
	return r;
}

/*
 * dirty_pass (dirty_pass_4vcpu): the guest rewrites every 4 KiB page of a
 * @mib MiB logging slot, one qword each, in passes with the log taken
 * between them, so every write of a pass is a write-protection fault that
 * the hypervisor fixes and logs. Per pass; the log calls' figures (every
 * page dirty) and the figure per page come along. dirty_pass_ring
 * (@mode DIRTY_RING): the same with the dirty ring instead of the bitmap,
 * the ring's harvest and reset for the log calls.
 */
static void bench_dirty_pass(const char *dev, const char *name, int nvcpus, uint64_t mib,
			     uint64_t passes, enum dirty_mode mode)
{
	struct dirty_best b;
	char extra[320];
	int n;

	if (dirty_run(dev, name, mib, nvcpus, 1, passes, mode, &b))
		return;
	n = snprintf(extra, sizeof(extra), "pages_per_pass=%llu guest_tsc_per_page=%.1f ",
		     (unsigned long long)(mib << 8), b.pass.tsc_min / (mib << 8));
	if (mode == DIRTY_RING)
		snprintf(extra + n, sizeof(extra) - n, "ring_entries=%llu ring_full_exits=%llu "
			 "ring_duplicates=%llu collect_host_tsc_per_call=%.1f "
			 "collect_wall_ns_per_call=%.0f", (unsigned long long)b.ring_entries,
			 (unsigned long long)b.ring_full_exits,
			 (unsigned long long)b.ring_duplicates, b.log.tsc_min, b.log.wall_min);
	else
		snprintf(extra + n, sizeof(extra) - n, "get_log_host_tsc_per_call=%.1f "
			 "get_log_wall_ns_per_call=%.0f", b.log.tsc_min, b.log.wall_min);
	best_print(name, nvcpus, passes, "guest", &b.pass, extra);
}

/*
 * get_dirty_log, get_dirty_log_empty: KVM_GET_DIRTY_LOG of a @mib MiB
 * logging slot of which the guest rewrites one page in @stride before each
 * of the @calls calls (the call walks the whole bitmap, takes and
 * write-protects the pages it names), then at once a second call that
 * finds nothing dirty: what walking the bitmap alone costs. Per call,
 * this VMM's clocks. Only the pages written are ever faulted in, so a
 * large slot costs the host little memory.
 */
static void bench_get_dirty_log(const char *dev, uint64_t mib, uint64_t stride,
				uint64_t calls)
{
	struct dirty_best b;
	char extra[96];

	if (dirty_run(dev, "get_dirty_log", mib, 1, stride, calls, DIRTY_GET_TWICE, &b))
		return;
	snprintf(extra, sizeof(extra), "slot_mib=%llu dirty_pages_per_call=%llu",
		 (unsigned long long)mib, (unsigned long long)((mib << 8) / stride));
	best_print("get_dirty_log", 1, calls, "host", &b.log, extra);
	snprintf(extra, sizeof(extra), "slot_mib=%llu dirty_pages_per_call=0",
		 (unsigned long long)mib);
	best_print("get_dirty_log_empty", 1, calls, "host", &b.empty_log, extra);
}

/*
 * clear_dirty_log: the same slot and writes as get_dirty_log, with manual
 * protection (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, pages not initially set):
 * after each pass KVM_GET_DIRTY_LOG only reads the log (a snapshot), and
 * one KVM_CLEAR_DIRTY_LOG of the whole slot with that bitmap takes the
 * pages and write-protects them. Per KVM_CLEAR_DIRTY_LOG call, this VMM's
 * clocks; the snapshot's figures come along. A KVM_GET_DIRTY_LOG after the
 * clear must report nothing.
 */
static void bench_clear_dirty_log(const char *dev, uint64_t mib, uint64_t stride,
				  uint64_t calls)
{
	struct dirty_best b;
	char extra[192];

	if (dirty_run(dev, "clear_dirty_log", mib, 1, stride, calls, DIRTY_CLEAR, &b))
		return;
	snprintf(extra, sizeof(extra), "slot_mib=%llu dirty_pages_per_call=%llu "
		 "get_log_host_tsc_per_call=%.1f get_log_wall_ns_per_call=%.0f",
		 (unsigned long long)mib, (unsigned long long)((mib << 8) / stride),
		 b.log.tsc_min, b.log.wall_min);
	best_print("clear_dirty_log", 1, calls, "host", &b.clear, extra);
}

/* --- ipi_round_trip, apic_timer*, ioeventfd_doorbell -------------------- */

_Static_assert(IRQ_DATA == GUEST_DATA, "the interrupt workloads' counters are in GUEST_DATA");

static uint32_t irq_u32(struct vm *vm, uint64_t gpa)
{
	return *(volatile uint32_t *)gpa_ptr(vm, gpa);
}

static uint64_t irq_u64(struct vm *vm, uint64_t gpa)
{
	return *(volatile uint64_t *)gpa_ptr(vm, gpa);
}

/*
 * Whether @dev has what interrupt workload @name needs: the split irqchip
 * and @cap (@cap_name, 0: nothing more). 1 if so, else 0 after reporting
 * @name skipped or -1 after reporting it failed.
 */
static int irq_caps(const char *dev, const char *name, long cap, const char *cap_name)
{
	long r = need_cap(dev, name, KVM_CAP_SPLIT_IRQCHIP, "KVM_CAP_SPLIT_IRQCHIP");

	if (r > 0 && cap)
		r = need_cap(dev, name, cap, cap_name);
	return r > 0 ? 1 : r;
}

/*
 * A fresh VM for interrupt workload @name: the split irqchip (local APICs
 * in the kernel, IOAPIC_PINS reserved for a userspace IOAPIC), the bench
 * guest code and the handlers of its vectors in the IDT, and the minimal
 * CPUID with leaf 1 added: the APIC and, if @deadline, the TSC-deadline
 * timer (KVM lets a guest use it only if its CPUID has it).
 *
 * Halt polling off where the device has it (KVM_CAP_HALT_POLL 0): a vCPU
 * that halts then blocks at once, as on rkvm, which does not poll. These
 * workloads measure the delivery of interrupts, not how long a hypervisor
 * spins before it blocks (under -icount that spin costs instructions, in
 * Bochs it saves ticks on the critical path). NULL after printing why.
 */
static struct vm *irq_vm(const char *dev, const char *name, int deadline)
{
	struct kvm_enable_cap split = {
		.cap = KVM_CAP_SPLIT_IRQCHIP, .args = { IOAPIC_PINS },
	};
	struct kvm_enable_cap poll = { .cap = KVM_CAP_HALT_POLL };
	struct kvm_cpuid_entry2 *e;
	struct vm *vm;
	void *none;

	vm = bench_vm(dev, name, &split, 0, 0, 0, &none);
	if (!vm)
		return NULL;
	if (dev_check_extension(dev, KVM_CAP_HALT_POLL) > 0 &&
	    ioctl(vm->fd, KVM_ENABLE_CAP, &poll) < 0) {
		char why[96];

		snprintf(why, sizeof(why), "KVM_ENABLE_CAP(KVM_CAP_HALT_POLL, 0): %s",
			 strerror(errno));
		fail(name, why);
		vm_free(vm);
		return NULL;
	}
	vm->cpuid = realloc(vm->cpuid, sizeof(*vm->cpuid) + 4 * sizeof(*e));
	if (!vm->cpuid)
		guest_die("out of memory");
	e = vm->cpuid->entries;
	e[0].eax = 1;				/* the highest basic leaf */
	memset(&e[3], 0, sizeof(e[3]));
	e[3].function = 1;
	e[3].edx = 1u << 9;			/* APIC */
	e[3].ecx = deadline ? 1u << 24 : 0;	/* TSC_DEADLINE_TIMER */
	vm->cpuid->nent = 4;
	vm_set_idt_gate64(vm, VEC_PING, GUEST_CODE + (irq_ping_handler - bench_guest_start));
	vm_set_idt_gate64(vm, VEC_PONG, GUEST_CODE + (irq_pong_handler - bench_guest_start));
	vm_set_idt_gate64(vm, VEC_COUNT, GUEST_CODE + (irq_count_handler - bench_guest_start));
	vm_set_idt_gate64(vm, VEC_DEADLINE,
			  GUEST_CODE + (irq_deadline_handler - bench_guest_start));
	vm_set_idt_gate64(vm, VEC_ANSWER, GUEST_CODE + (irq_answer_handler - bench_guest_start));
	return vm;
}

/* vCPU @id of an interrupt workload's VM (see bench_vcpu), runnable. */
static void irq_vcpu(struct vm *vm, struct vcpu_job *j, int id, const uint8_t *entry,
		     uint64_t rdi, uint64_t rsi)
{
	bench_vcpu(vm, j, id, entry, rdi, rsi, 0);
	j->apic = 1;
	/* With an in-kernel APIC, KVM creates the APs waiting for INIT. */
	if (id && vcpu_set_mp_state(j->vcpu, KVM_MP_STATE_RUNNABLE))
		guest_die("vCPU %d: KVM_SET_MP_STATE(RUNNABLE) failed", id);
}

static int two_cpus(void)
{
	return sysconf(_SC_NPROCESSORS_ONLN) >= 2;
}

/*
 * ipi_round_trip: vCPU 0 (on CPU 0) sends a fixed IPI to vCPU 1 (on
 * CPU 1), whose handler answers with one back, and halts until the
 * answer; vCPU 1 halts in between. Per round trip, vCPU 0's TSC around
 * its @n round trips.
 */
static void bench_ipi(const char *dev, uint64_t n)
{
	const char *name = "ipi_round_trip";
	uint32_t dups_max = 0;
	char extra[32];
	struct best b;
	unsigned int i;

	if (irq_caps(dev, name, 0, NULL) <= 0)
		return;
	best_init(&b);
	for (i = 0; i < repeat; i++) {
		struct vcpu_job jobs[2];
		uint32_t pings, pongs, dups;
		char why[128] = "";
		struct vm *vm;
		int r;

		memset(jobs, 0, sizeof(jobs));
		vm = irq_vm(dev, name, 0);
		if (!vm)
			return;
		irq_vcpu(vm, &jobs[0], 0, irq_ping, n, 0);
		irq_vcpu(vm, &jobs[1], 1, irq_pong, n, 0);
		current = NULL;
		irq_running = vm;
		r = run_vcpus(name, jobs, 2, two_cpus() ? 0 : -1);
		irq_running = NULL;
		pings = irq_u32(vm, IRQ_PINGS);
		pongs = irq_u32(vm, IRQ_PONGS);
		dups = irq_u32(vm, IRQ_DUPS);
		vcpu_free(jobs[0].vcpu);
		vcpu_free(jobs[1].vcpu);
		vm_free(vm);
		if (r < 0)
			return;
		if (pings != n || pongs != n)
			snprintf(why, sizeof(why), "the last ping answered %u, the last pong taken "
				 "%u, %llu round trips asked", pings, pongs, (unsigned long long)n);
		else if (jobs[0].tsc1 <= jobs[0].tsc0)
			snprintf(why, sizeof(why), "the guest's TSC did not advance");
		if (why[0]) {
			fail(name, why);
			return;
		}
		best_add(&b, (double)(jobs[0].tsc1 - jobs[0].tsc0) / n,
			 (double)(jobs[0].t1 - jobs[0].t0) / n);
		dups_max = dups > dups_max ? dups : dups_max;
	}
	snprintf(extra, sizeof(extra), "duplicates=%u", dups_max);
	best_print(name, 2, n, "guest", &b, extra);
}

/*
 * The apic_timer workloads' measure. The guest halts between interrupts,
 * so its TSC from first to last interrupt is the period times their
 * number, whatever a delivery costs (under -icount an idle machine's
 * clock jumps to the next timer). What a delivery costs is CPU time of
 * the host: the timer's hard interrupt and hrtimer callback, the wake-up
 * of the vCPU thread, the switch to it, the entry, the injection, the
 * guest's handler and its exits (EOI, re-arming, HLT), the block and the
 * switch away. A soaker thread at SCHED_IDLE on the vCPU thread's CPU
 * takes every cycle these leave; it counts its loops. Before the VM
 * runs, it times windows of its loop alone: the fastest window gives the
 * TSC per loop undisturbed, the whole gives the share of the CPU the
 * quiet host takes anyway (its timer tick; background_pct). The CPU time
 * the interrupts took is then the TSC from the guest's start exit to its
 * end exit, less what the soaker ran in it, less the background share.
 */
struct soaker {
	uint64_t count;		/* loops run (relaxed atomic, one writer) */
	int stop;
	int ready;		/* calibrated */
	double tsc_per_loop;	/* the fastest window's */
	double background;	/* share of the quiet CPU it did not get */
	int cpu;
};

#define SOAK_WINDOW	(1u << 14)	/* loops per calibration window */
#define SOAK_CALIB_NS	50000000	/* calibration: 50 ms of windows */

/*
 * Loops until the count reaches @limit or stop is set. Not inlined nor
 * specialised, so the calibration times the very loop that runs later.
 */
static __attribute__((noipa)) void soak(struct soaker *s, uint64_t limit)
{
	uint64_t n = __atomic_load_n(&s->count, __ATOMIC_RELAXED);

	while (n < limit && !__atomic_load_n(&s->stop, __ATOMIC_RELAXED))
		__atomic_store_n(&s->count, ++n, __ATOMIC_RELAXED);
}

static void *soaker_thread(void *arg)
{
	struct sched_param none = { 0 };
	struct soaker *s = arg;
	uint64_t t0, tsc0, tsc, total = 0, loops = 0, best = UINT64_MAX;

	pthread_setschedparam(pthread_self(), SCHED_IDLE, &none);
	t0 = now_ns();
	do {
		tsc0 = __rdtsc();
		soak(s, s->count + SOAK_WINDOW);
		tsc = __rdtsc() - tsc0;
		best = tsc < best ? tsc : best;
		total += tsc;
		loops += SOAK_WINDOW;
	} while (now_ns() - t0 < SOAK_CALIB_NS);
	s->tsc_per_loop = (double)best / SOAK_WINDOW;
	s->background = 1.0 - loops * s->tsc_per_loop / total;
	__atomic_store_n(&s->ready, 1, __ATOMIC_RELEASE);
	soak(s, UINT64_MAX);
	return NULL;
}

/*
 * apic_timer (@deadline 0): the APIC timer periodic at @period_us with
 * the guest halting in between; apic_timer_deadline: TSC-deadline mode,
 * re-armed @period_us ahead by the handler. @n interrupts; per interrupt,
 * the host CPU time it took (see struct soaker), in this VMM's TSC and in
 * ns. The vCPU thread and the soaker share CPU 1, this VMM's main thread
 * waits on CPU 0.
 */
static void bench_apic_timer(const char *dev, int deadline, uint64_t n, uint64_t period_us)
{
	const char *name = deadline ? "apic_timer_deadline" : "apic_timer";
	double busy_max = 0, background_max = 0, latency_min = INFINITY;
	uint32_t dups_max = 0;
	int cpu = two_cpus() ? 1 : 0;
	cpu_set_t all, other;
	struct best b;
	unsigned int i;
	char extra[160];
	long khz = 0;
	int r;

	r = deadline ? irq_caps(dev, name, KVM_CAP_TSC_DEADLINE_TIMER,
				"KVM_CAP_TSC_DEADLINE_TIMER") : irq_caps(dev, name, 0, NULL);
	if (r <= 0)
		return;
	sched_getaffinity(0, sizeof(all), &all);
	CPU_ZERO(&other);
	CPU_SET(0, &other);
	best_init(&b);
	for (i = 0; i < repeat; i++) {
		struct soaker s = { .cpu = cpu };
		struct vcpu_job job = { .soak = &s.count };
		double elapsed, stolen, loops;
		uint32_t count, slack;
		struct kvm_regs regs;
		pthread_t thread;
		char why[160] = "";
		struct vm *vm;

		vm = irq_vm(dev, name, deadline);
		if (!vm)
			break;
		if (deadline) {
			/* The period in the guest's TSC cycles. */
			irq_vcpu(vm, &job, 0, irq_deadline, n, 0);
			khz = ioctl(job.vcpu->fd, KVM_GET_TSC_KHZ, 0);
			if (khz <= 0) {
				snprintf(why, sizeof(why), "KVM_GET_TSC_KHZ: %s", strerror(errno));
				fail(name, why);
				vcpu_free(job.vcpu);
				vm_free(vm);
				break;
			}
			vcpu_get_regs(job.vcpu, &regs);
			regs.rsi = (uint64_t)khz * period_us / 1000;
			vcpu_set_regs(job.vcpu, &regs);
		} else {
			/* Divide by 1 at KVM's 1 GHz APIC bus: one count per ns. */
			irq_vcpu(vm, &job, 0, irq_timer, n, period_us * 1000);
		}
		current = NULL;

		start_thread(&thread, cpu, soaker_thread, &s);
		while (!__atomic_load_n(&s.ready, __ATOMIC_ACQUIRE))
			usleep(1000);
		sched_setaffinity(0, sizeof(other), &other);
		irq_running = vm;
		r = run_vcpus(name, &job, 1, cpu);
		irq_running = NULL;
		sched_setaffinity(0, sizeof(all), &all);
		__atomic_store_n(&s.stop, 1, __ATOMIC_RELAXED);
		pthread_join(thread, NULL);

		count = irq_u32(vm, IRQ_COUNT);
		if (irq_u32(vm, IRQ_DUPS) > dups_max)
			dups_max = irq_u32(vm, IRQ_DUPS);
		if (deadline && count && (double)irq_u64(vm, IRQ_LATENCY) / count < latency_min)
			latency_min = (double)irq_u64(vm, IRQ_LATENCY) / count;
		vcpu_free(job.vcpu);
		vm_free(vm);
		if (r < 0)
			break;
		/* A periodic tick may come after the last one counted, before the stop. */
		slack = deadline ? 0 : 1;
		elapsed = (double)(job.host_tsc1 - job.host_tsc0);
		loops = (double)(job.soak1 - job.soak0);
		stolen = elapsed - loops * s.tsc_per_loop - s.background * elapsed;
		if (count < n || count > n + slack)
			snprintf(why, sizeof(why), "%u timer interrupts handled, %llu asked", count,
				 (unsigned long long)n);
		else if (job.host_tsc1 <= job.host_tsc0 || job.t1 <= job.t0)
			snprintf(why, sizeof(why), "this VMM's clocks did not advance");
		else if (loops < 0.1 * elapsed / s.tsc_per_loop)
			snprintf(why, sizeof(why), "the interrupts left the soaker %.1f%% of CPU %d: "
				 "the period (%llu us) is too short to tell their cost",
				 100.0 * loops * s.tsc_per_loop / elapsed, cpu,
				 (unsigned long long)period_us);
		if (why[0]) {
			fail(name, why);
			break;
		}
		best_add(&b, stolen / count,
			 stolen / count * (double)(job.t1 - job.t0) / elapsed);
		if (100.0 * stolen / elapsed > busy_max)
			busy_max = 100.0 * stolen / elapsed;
		if (100.0 * s.background > background_max)
			background_max = 100.0 * s.background;
	}
	if (i < repeat)
		return;
	r = snprintf(extra, sizeof(extra), "period_us=%llu busy_pct=%.1f background_pct=%.1f",
		     (unsigned long long)period_us, busy_max, background_max);
	if (deadline)
		snprintf(extra + r, sizeof(extra) - r, " tsc_khz=%ld latency_guest_tsc=%.1f "
			 "duplicates=%u", khz, latency_min, dups_max);
	best_print(name, 1, n, "host", &b, extra);
}

/*
 * ioeventfd_doorbell's host thread: blocked in read() on the doorbell's
 * eventfd, it answers each ring with a write to the irqfd's eventfd.
 */
struct doorbell {
	int bell, answer;
	uint64_t answered;
	volatile uint32_t *guest_answered;	/* IRQ_ANSWERED */
	int stop;
	char err[128];
};

static void *doorbell_thread(void *arg)
{
	struct doorbell *d = arg;
	uint64_t v, one = 1;

	for (;;) {
		if (read(d->bell, &v, sizeof(v)) != sizeof(v)) {
			if (errno == EINTR)
				continue;
			snprintf(d->err, sizeof(d->err), "read of the doorbell's eventfd: %s",
				 strerror(errno));
			return NULL;
		}
		if (__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE))
			return NULL;
		/* The guest rings once, then waits for the answer. */
		if (v != 1) {
			snprintf(d->err, sizeof(d->err), "the doorbell's eventfd counted %llu rings "
				 "after %llu answers", (unsigned long long)v,
				 (unsigned long long)d->answered);
			return NULL;
		}
		d->answered++;
		__atomic_store_n(d->guest_answered, (uint32_t)d->answered, __ATOMIC_RELEASE);
		if (write(d->answer, &one, sizeof(one)) != sizeof(one)) {
			snprintf(d->err, sizeof(d->err), "write of the irqfd's eventfd: %s",
				 strerror(errno));
			return NULL;
		}
	}
}

/*
 * ioeventfd_doorbell: the guest (vCPU on CPU 0) writes PORT_DOORBELL, an
 * ioeventfd; a host thread on CPU 1, blocked in read() on its eventfd,
 * writes the eventfd of an irqfd whose GSI is an MSI route to the vCPU;
 * the guest halts until that interrupt. No exit reaches this VMM. Per
 * round trip, the guest's TSC around its @n round trips.
 */
static void bench_doorbell(const char *dev, uint64_t n)
{
	const char *name = "ioeventfd_doorbell";
	uint32_t dups_max = 0;
	char extra[32];
	struct best b;
	unsigned int i;

	if (irq_caps(dev, name, KVM_CAP_IRQFD, "KVM_CAP_IRQFD") <= 0 ||
	    need_cap(dev, name, KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD") <= 0)
		return;
	best_init(&b);
	for (i = 0; i < repeat; i++) {
		struct doorbell d = { .bell = eventfd(0, EFD_CLOEXEC),
				      .answer = eventfd(0, EFD_CLOEXEC) };
		struct vcpu_job job = { 0 };
		struct kvm_irq_routing_entry route;
		struct kvm_ioeventfd io = {
			.addr = PORT_DOORBELL, .len = 1, .fd = d.bell,
			.flags = KVM_IOEVENTFD_FLAG_PIO,
		};
		struct kvm_irqfd irqfd = { .fd = d.answer, .gsi = IRQ_GSI };
		uint64_t one = 1;
		pthread_t thread;
		char why[160] = "";
		struct vm *vm;
		long r;

		if (d.bell < 0 || d.answer < 0)
			guest_die("eventfd: %s", strerror(errno));
		vm = irq_vm(dev, name, 0);
		if (!vm)
			return;
		d.guest_answered = gpa_ptr(vm, IRQ_ANSWERED);
		irq_route_msi(&route, IRQ_GSI, MSI_ADDR(0), VEC_ANSWER);
		r = vm_set_gsi_routing(vm, &route, 1);
		if (r)
			snprintf(why, sizeof(why), "KVM_SET_GSI_ROUTING: %s", strerror(-r));
		else if (ioctl(vm->fd, KVM_IOEVENTFD, &io) < 0)
			snprintf(why, sizeof(why), "KVM_IOEVENTFD: %s", strerror(errno));
		else if (ioctl(vm->fd, KVM_IRQFD, &irqfd) < 0)
			snprintf(why, sizeof(why), "KVM_IRQFD: %s", strerror(errno));
		if (why[0]) {
			fail(name, why);
			vm_free(vm);
			close(d.bell);
			close(d.answer);
			return;
		}
		irq_vcpu(vm, &job, 0, irq_doorbell, n, 0);
		current = NULL;

		start_thread(&thread, two_cpus() ? 1 : -1, doorbell_thread, &d);
		irq_running = vm;
		r = run_vcpus(name, &job, 1, two_cpus() ? 0 : -1);
		irq_running = NULL;
		__atomic_store_n(&d.stop, 1, __ATOMIC_RELEASE);
		if (write(d.bell, &one, sizeof(one)) != sizeof(one))
			guest_die("write of the doorbell's eventfd: %s", strerror(errno));
		pthread_join(thread, NULL);
		if (!r && d.err[0])
			snprintf(why, sizeof(why), "%s", d.err);
		else if (!r && (d.answered != n || irq_u32(vm, IRQ_COUNT) != n))
			snprintf(why, sizeof(why), "%llu rings answered and %u interrupts handled, "
				 "%llu round trips asked", (unsigned long long)d.answered,
				 irq_u32(vm, IRQ_COUNT), (unsigned long long)n);
		else if (!r && job.tsc1 <= job.tsc0)
			snprintf(why, sizeof(why), "the guest's TSC did not advance");
		if (irq_u32(vm, IRQ_DUPS) > dups_max)
			dups_max = irq_u32(vm, IRQ_DUPS);
		vcpu_free(job.vcpu);
		vm_free(vm);
		close(d.bell);
		close(d.answer);
		if (r < 0)
			return;
		if (why[0]) {
			fail(name, why);
			return;
		}
		best_add(&b, (double)(job.tsc1 - job.tsc0) / n, (double)(job.t1 - job.t0) / n);
	}
	snprintf(extra, sizeof(extra), "duplicates=%u", dups_max);
	best_print(name, 1, n, "guest", &b, extra);
}

/* Whether comma-separated @list names @name. */
static int listed(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list;

	while ((p = strstr(p, name))) {
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0))
			return 1;
		p += n;
	}
	return 0;
}

/*
 * --only and --skip, each given up to 4 times: a workload runs if every
 * --only lists it and no --skip does (so /init can narrow bench.sh's
 * options down further, as for the fast_page_fault=0 run).
 */
#define MAX_LISTS	4
static const char *only[MAX_LISTS], *skipped[MAX_LISTS];
static int nr_only, nr_skipped;

static int selected(const char *name)
{
	int i;

	for (i = 0; i < nr_only; i++)
		if (!listed(only[i], name))
			return 0;
	for (i = 0; i < nr_skipped; i++)
		if (listed(skipped[i], name))
			return 0;
	return 1;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s DEVICE [--pio N] [--cpuid N] [--fault-mib M] [--pageout-mib M] "
		"[--invalidate-mib M (even)] [--invalidate-passes P (>= 3)] [--repeat R] "
		"[--dirty-mib M] [--dirty-passes P] [--dirty-log-mib M] [--dirty-log-stride S "
		"(power of 2, <= 256)] [--dirty-log-calls C] "
		"[--timeout S] [--only|--skip pio_exit,cpuid_exit,fault_4k,fault_4k_4vcpu,fault_thp,"
		"pageout,invalidate,dirty_pass,dirty_pass_4vcpu,dirty_pass_ring,get_dirty_log,"
		"clear_dirty_log,ipi_round_trip,apic_timer,ioeventfd_doorbell] [--ipi N] [--timer N] "
		"[--timer-period-us P (>= 200)] [--doorbell N]\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t pio = 2000, cpuid = 2000, fault_mib = 64, pageout_mib = 0;
	uint64_t invalidate_mib = 16, invalidate_passes = 32;
	uint64_t dirty_mib = 32, dirty_passes = 4, dirty_log_mib = 1024, dirty_log_stride = 256;
	uint64_t dirty_log_calls = 4;
	uint64_t ipi = 2000, timer = 1000, timer_period_us = 500, doorbell = 2000;
	const char *dev;
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
		else if (!strcmp(argv[i], "--pageout-mib"))
			pageout_mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--invalidate-mib"))
			invalidate_mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--invalidate-passes"))
			invalidate_passes = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--repeat"))
			repeat = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--timeout"))
			timeout_s = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dirty-mib"))
			dirty_mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dirty-passes"))
			dirty_passes = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dirty-log-mib"))
			dirty_log_mib = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dirty-log-stride"))
			dirty_log_stride = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--dirty-log-calls"))
			dirty_log_calls = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--ipi"))
			ipi = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--timer"))
			timer = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--timer-period-us"))
			timer_period_us = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--doorbell"))
			doorbell = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--only") && nr_only < MAX_LISTS)
			only[nr_only++] = argv[++i];
		else if (!strcmp(argv[i], "--skip") && nr_skipped < MAX_LISTS)
			skipped[nr_skipped++] = argv[++i];
		else
			usage(argv[0]);
	}
	if (!pageout_mib)
		pageout_mib = fault_mib;
	/*
	 * Whole pages per vCPU, at least one iteration everywhere, whole
	 * 2 MiB chunks to invalidate and a pass after the last invalidation's
	 * (see invalidate_on_out).
	 */
	if (!pio || !cpuid || !fault_mib || fault_mib > 1024 || pageout_mib > 1024 ||
	    !invalidate_mib || invalidate_mib % 2 || invalidate_mib > 1024 ||
	    invalidate_passes < 3 || !dirty_mib || dirty_mib > 1024 || !dirty_passes ||
	    !dirty_log_mib || dirty_log_mib > 1024 || !dirty_log_calls || !dirty_log_stride ||
	    dirty_log_stride > 256 || dirty_log_stride & (dirty_log_stride - 1) ||
	    !timeout_s || !repeat || !ipi || ipi > UINT32_MAX || !timer || timer > UINT32_MAX ||
	    timer_period_us < 200 || timer_period_us > 1000000 || !doorbell ||
	    doorbell > UINT32_MAX)
		usage(argv[0]);

	/*
	 * 4 KiB host pages everywhere, before any guest memory is touched: a
	 * THP-backed slot would take one fault per 2 MiB (see run_workload).
	 */
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	guest_die_hook = setup_failed;
	printf("bench-info device=%s pio=%llu cpuid=%llu fault_mib=%llu pageout_mib=%llu "
	       "invalidate_mib=%llu invalidate_passes=%llu dirty_mib=%llu dirty_passes=%llu "
	       "dirty_log_mib=%llu dirty_log_stride=%llu dirty_log_calls=%llu ipi=%llu timer=%llu "
	       "timer_period_us=%llu doorbell=%llu repeat=%u\n", dev,
	       (unsigned long long)pio, (unsigned long long)cpuid, (unsigned long long)fault_mib,
	       (unsigned long long)pageout_mib, (unsigned long long)invalidate_mib,
	       (unsigned long long)invalidate_passes, (unsigned long long)dirty_mib,
	       (unsigned long long)dirty_passes, (unsigned long long)dirty_log_mib,
	       (unsigned long long)dirty_log_stride, (unsigned long long)dirty_log_calls,
	       (unsigned long long)ipi, (unsigned long long)timer,
	       (unsigned long long)timer_period_us, (unsigned long long)doorbell, repeat);
	fflush(stdout);
	if (selected("pio_exit"))
		bench(dev, "pio_exit", 1, bench_pio, pio, 0);
	if (selected("cpuid_exit"))
		bench(dev, "cpuid_exit", 1, bench_cpuid, cpuid, 0);
	if (selected("fault_4k"))
		bench(dev, "fault_4k", 1, bench_touch, fault_mib << 8, fault_mib);
	if (selected("fault_4k_4vcpu"))
		bench(dev, "fault_4k_4vcpu", 4, bench_touch, fault_mib << 8, fault_mib);
	if (selected("fault_thp")) {
		prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
		thp_slot = 1;
		bench(dev, "fault_thp", 1, bench_touch, fault_mib << 8, fault_mib);
		thp_slot = 0;
		prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	}
	if (selected("pageout"))
		bench_pageout_fault_in(dev, pageout_mib);
	if (selected("invalidate")) {
		prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0);
		bench_invalidate(dev, invalidate_mib, invalidate_passes);
		prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
	}
	if (selected("dirty_pass"))
		bench_dirty_pass(dev, "dirty_pass", 1, dirty_mib, dirty_passes, DIRTY_GET);
	if (selected("dirty_pass_4vcpu"))
		bench_dirty_pass(dev, "dirty_pass_4vcpu", 4, dirty_mib, dirty_passes, DIRTY_GET);
	if (selected("dirty_pass_ring"))
		bench_dirty_pass(dev, "dirty_pass_ring", 1, dirty_mib, dirty_passes, DIRTY_RING);
	if (selected("get_dirty_log"))
		bench_get_dirty_log(dev, dirty_log_mib, dirty_log_stride, dirty_log_calls);
	if (selected("clear_dirty_log"))
		bench_clear_dirty_log(dev, dirty_log_mib, dirty_log_stride, dirty_log_calls);
	if (selected("ipi_round_trip"))
		bench_ipi(dev, ipi);
	if (selected("apic_timer")) {
		bench_apic_timer(dev, 0, timer, timer_period_us);
		bench_apic_timer(dev, 1, timer, timer_period_us);
	}
	if (selected("ioeventfd_doorbell"))
		bench_doorbell(dev, doorbell);
	return failed;
}
