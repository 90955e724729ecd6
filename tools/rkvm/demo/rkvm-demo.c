// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm-demo: a minimal VMM over the KVM x86 ioctl ABI. It creates a VM with
 * one memory slot, starts a small 64-bit guest directly in long mode, and
 * serves it a serial port (port 0x3f8) and one MMIO device (GPA 0xd0000000).
 * The guest greets, fills and checksums 1 MiB, talks to the device, prints
 * what it found and halts. Exits 0 only if the guest halted with the
 * expected checksum and device answers.
 *
 * The VM is set up by the selftests' guest library
 * (tools/testing/selftests/rkvm/guest_lib.h), as the benchmark's are.
 *
 * Usage: rkvm-demo [/dev/rkvm | /dev/kvm]
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

#include "guest_lib.h"

#define MEM_SIZE	(4ULL << 20)	/* the one slot: GPA 0 .. 4 MiB */
#define BUF_GPA		0x100000ULL	/* the 1 MiB the guest fills */
#define BUF_SIZE	0x100000ULL
#define PATTERN_MUL	0x9e3779b97f4a7c15ULL

#define UART_THR	0x3f8		/* transmit holding register (write) */
#define UART_LSR	0x3fd		/* line status register (read) */
#define UART_LSR_IDLE	(0x20 | 0x40)	/* THR empty, transmitter empty */

#define DEV_GPA		GUEST_MMIO	/* the MMIO device; no memory there */
#define DEV_DATA	0x0		/* write: latch; read: the latch, bytes reversed */
#define DEV_ID		0x8		/* read: "RKVM" */
#define DEV_ID_VALUE	0x4d564b52u
#define DEV_SIZE	0x1000

#define TIMEOUT_S	120

/*
 * The guest, 64-bit code loaded at GUEST_CODE, entered with rsp set. It
 * leaves the checksum in r12 and the number of failed device checks in r13
 * when it halts. Position-independent: data is reached RIP-relative.
 */
extern const uint8_t demo_guest_start[], demo_guest_end[];
asm(
"	.pushsection .rodata.rkvm_demo_guest, \"a\"\n"
"	.globl demo_guest_start, demo_guest_end\n"
"	.code64\n"
"demo_guest_start:\n"
"	lea dg_hello(%rip), %rsi\n"
"	call dg_puts\n"
/* Fill 1 MiB with word[i] = i * PATTERN_MUL ^ i. */
"	mov $0x100000, %edi\n"
"	mov $(0x100000 / 8), %ecx\n"
"	movabs $0x9e3779b97f4a7c15, %r10\n"
"	xor %eax, %eax\n"
"1:	mov %rax, %rdx\n"
"	imul %r10, %rdx\n"
"	xor %rax, %rdx\n"
"	mov %rdx, (%rdi,%rax,8)\n"
"	inc %rax\n"
"	cmp %rcx, %rax\n"
"	jb 1b\n"
/* Checksum it back: sum = rol(sum, 7) ^ word[i]. */
"	xor %r12d, %r12d\n"
"	xor %eax, %eax\n"
"2:	rol $7, %r12\n"
"	xor (%rdi,%rax,8), %r12\n"
"	inc %rax\n"
"	cmp %rcx, %rax\n"
"	jb 2b\n"
"	lea dg_msg_sum(%rip), %rsi\n"
"	call dg_puts\n"
"	mov %r12, %rax\n"
"	call dg_puthex64\n"
"	call dg_newline\n"
/* The device: read its id, write the data register, read it back. */
"	xor %r13d, %r13d\n"
"	mov $0xd0000000, %edi\n"
"	mov 8(%rdi), %ebx\n"
"	lea dg_msg_id(%rip), %rsi\n"
"	call dg_puts\n"
"	mov %ebx, %eax\n"
"	call dg_puthex32\n"
"	cmp $0x4d564b52, %ebx\n"
"	call dg_okbad\n"
"	mov $0x12345678, %ebx\n"
"	mov %ebx, (%rdi)\n"
"	mov (%rdi), %r14d\n"
"	lea dg_msg_wrote(%rip), %rsi\n"
"	call dg_puts\n"
"	mov %ebx, %eax\n"
"	call dg_puthex32\n"
"	lea dg_msg_read(%rip), %rsi\n"
"	call dg_puts\n"
"	mov %r14d, %eax\n"
"	call dg_puthex32\n"
"	bswap %ebx\n"
"	cmp %ebx, %r14d\n"
"	call dg_okbad\n"
"	lea dg_msg_bye(%rip), %rsi\n"
"	call dg_puts\n"
"3:	hlt\n"
"	jmp 3b\n"
/* okbad: prints " (ok)" if ZF is set, else " (BAD)" and counts a failure. */
"dg_okbad:	lea dg_msg_ok(%rip), %rsi\n"
"	je 4f\n"
"	lea dg_msg_bad(%rip), %rsi\n"
"	inc %r13d\n"
"4:	jmp dg_puts\n"
/* puts: prints the NUL-terminated string at rsi. */
"dg_puts:	lodsb\n"
"	test %al, %al\n"
"	jz 5f\n"
"	call dg_putc\n"
"	jmp dg_puts\n"
"5:	ret\n"
"dg_newline:\n"
"	mov $10, %al\n"
/* putc: waits for the UART to be idle, then sends al. */
"dg_putc:	push %rdx\n"
"	push %rax\n"
"	mov $0x3fd, %dx\n"
"6:	in %dx, %al\n"
"	test $0x20, %al\n"
"	jz 6b\n"
"	pop %rax\n"
"	mov $0x3f8, %dx\n"
"	out %al, %dx\n"
"	pop %rdx\n"
"	ret\n"
/* puthex64/puthex32: print rax/eax as 16/8 hex digits. */
"dg_puthex32:\n"
"	push %rbx\n"
"	push %rcx\n"
"	mov %rax, %rbx\n"
"	shl $32, %rbx\n"
"	mov $8, %ecx\n"
"	jmp 7f\n"
"dg_puthex64:\n"
"	push %rbx\n"
"	push %rcx\n"
"	mov %rax, %rbx\n"
"	mov $16, %ecx\n"
"7:	rol $4, %rbx\n"
"	mov %ebx, %eax\n"
"	and $0xf, %eax\n"
"	cmp $10, %eax\n"
"	jb 8f\n"
"	add $0x27, %eax\n"
"8:	add $0x30, %eax\n"
"	call dg_putc\n"
"	dec %ecx\n"
"	jnz 7b\n"
"	pop %rcx\n"
"	pop %rbx\n"
"	ret\n"
"dg_hello:	.asciz \"Hello from the rkvm demo guest, running in 64-bit mode.\\n\"\n"
"dg_msg_sum:	.asciz \"memory: filled 1 MiB at 0x100000, checksum 0x\"\n"
"dg_msg_id:	.asciz \"mmio: device id at 0xd0000008 is 0x\"\n"
"dg_msg_wrote:	.asciz \"mmio: wrote 0x\"\n"
"dg_msg_read:	.asciz \" to 0xd0000000, read back 0x\"\n"
"dg_msg_ok:	.asciz \" (ok)\\n\"\n"
"dg_msg_bad:	.asciz \" (BAD)\\n\"\n"
"dg_msg_bye:	.asciz \"Guest done, halting.\\n\"\n"
"demo_guest_end:\n"
"	.popsection\n"
);

struct exits {
	unsigned long io_out, io_in, mmio_read, mmio_write, hlt, other;
};

static volatile sig_atomic_t timed_out;

static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
}

/* What the guest's checksum must be. */
static uint64_t expected_checksum(void)
{
	uint64_t i, sum = 0;

	for (i = 0; i < BUF_SIZE / 8; i++)
		sum = ((sum << 7) | (sum >> 57)) ^ (i * PATTERN_MUL ^ i);
	return sum;
}

static void handle_io(struct kvm_run *run, struct exits *ex)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	uint32_t i;

	if (run->io.direction == KVM_EXIT_IO_OUT) {
		ex->io_out++;
		if (run->io.port == UART_THR) {
			for (i = 0; i < run->io.count; i++)
				putchar(data[i * run->io.size]);
			fflush(stdout);
		}
	} else {
		ex->io_in++;
		/* Reads: the LSR says idle; an absent port floats high. */
		memset(data, run->io.port == UART_LSR ? UART_LSR_IDLE : 0xff,
		       (size_t)run->io.size * run->io.count);
	}
}

/* The device: DATA latches writes and reads back the latch byte-reversed. */
static void handle_mmio(struct kvm_run *run, struct exits *ex, uint32_t *latch, int *bad)
{
	uint64_t off = run->mmio.phys_addr - DEV_GPA;
	uint32_t v;

	if (run->mmio.phys_addr < DEV_GPA || off >= DEV_SIZE || run->mmio.len != 4) {
		fprintf(stderr, "rkvm-demo: unexpected MMIO %s at 0x%llx, %u bytes\n",
			run->mmio.is_write ? "write" : "read",
			(unsigned long long)run->mmio.phys_addr, run->mmio.len);
		*bad = 1;
		if (!run->mmio.is_write)
			memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		run->mmio.is_write ? ex->mmio_write++ : ex->mmio_read++;
		return;
	}
	if (run->mmio.is_write) {
		ex->mmio_write++;
		memcpy(&v, run->mmio.data, 4);
		if (off == DEV_DATA)
			*latch = v;
		return;
	}
	ex->mmio_read++;
	v = off == DEV_DATA ? __builtin_bswap32(*latch) : off == DEV_ID ? DEV_ID_VALUE : 0;
	memcpy(run->mmio.data, &v, 4);
}

static const char *dev = "/dev/rkvm";

/* A set-up step failed (guest_lib exits 1 after this). */
static void setup_failed(const char *msg)
{
	fprintf(stderr, "rkvm-demo: cannot set up the VM on %s: %s\n", dev, msg);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct exits ex = { 0 };
	struct kvm_regs regs;
	struct vcpu *vcpu;
	struct vm *vm;
	uint64_t want = expected_checksum();
	uint32_t latch = 0;
	int halted = 0, bad = 0, ok;
	char why[256];

	if (argc > 2 || (argc == 2 && argv[1][0] != '/')) {
		fprintf(stderr, "usage: %s [/dev/rkvm | /dev/kvm]\n", argv[0]);
		return 2;
	}
	if (argc == 2)
		dev = argv[1];
	guest_die_hook = setup_failed;
	vm = vm_new_on(dev, MEM_SIZE);
	vm_use_minimal_cpuid(vm);
	vm_load(vm, GUEST_CODE, demo_guest_start, demo_guest_end);
	vcpu = vcpu_new(vm, 0, MODE_LONG64, GUEST_CODE, GUEST_STACK);
	printf("rkvm-demo: %s: VM with %llu MiB at GPA 0, one vCPU in 64-bit mode, "
	       "UART at port 0x%x, device at GPA 0x%llx\n", dev,
	       (unsigned long long)(MEM_SIZE >> 20), UART_THR, (unsigned long long)DEV_GPA);
	printf("--- guest output ---\n");
	fflush(stdout);

	sigaction(SIGALRM, &sa, NULL);	/* no SA_RESTART: KVM_RUN returns EINTR */
	alarm(TIMEOUT_S);
	while (!halted) {
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			int e = errno;

			if (e == EINTR && !timed_out)
				continue;
			printf("\n--- guest output ends (incomplete) ---\n");
			if (timed_out)
				fprintf(stderr, "rkvm-demo: the guest did not halt within %d s\n",
					TIMEOUT_S);
			else
				fprintf(stderr, "rkvm-demo: KVM_RUN on %s failed: %s (errno %d)%s\n",
					dev, strerror(e), e,
					e == EINVAL ? "; the hypervisor refused to run the vCPU"
						      " (rkvm does so until it implements KVM_RUN)" : "");
			return 1;
		}
		switch (vcpu->run->exit_reason) {
		case KVM_EXIT_IO:
			handle_io(vcpu->run, &ex);
			break;
		case KVM_EXIT_MMIO:
			handle_mmio(vcpu->run, &ex, &latch, &bad);
			break;
		case KVM_EXIT_HLT:
			ex.hlt++;
			halted = 1;
			break;
		default:
			ex.other++;
			describe_exit(vcpu, why, sizeof(why));
			printf("\n--- guest output ends (incomplete) ---\n");
			fprintf(stderr, "rkvm-demo: unexpected %s\n", why);
			return 1;
		}
	}
	alarm(0);
	printf("--- end of guest output ---\n");
	printf("rkvm-demo: exits by reason: IO %lu (out %lu, in %lu), MMIO %lu (read %lu, write %lu), "
	       "HLT %lu, other %lu\n", ex.io_out + ex.io_in, ex.io_out, ex.io_in,
	       ex.mmio_read + ex.mmio_write, ex.mmio_read, ex.mmio_write, ex.hlt, ex.other);

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0) {
		fprintf(stderr, "rkvm-demo: KVM_GET_REGS: %s\n", strerror(errno));
		return 1;
	}
	ok = regs.r12 == want && regs.r13 == 0 && !bad && ex.mmio_read == 2 && ex.mmio_write == 1;
	printf("rkvm-demo: guest checksum 0x%016llx, expected 0x%016llx; device checks failed: %llu\n",
	       (unsigned long long)regs.r12, (unsigned long long)want, (unsigned long long)regs.r13);
	printf("rkvm-demo: %s\n", ok ? "PASS: the guest halted with the expected results"
				    : "FAIL: the guest halted with wrong results");
	vcpu_free(vcpu);
	vm_free(vm);
	return ok ? 0 : 1;
}
