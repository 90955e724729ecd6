/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The world switch of rkvm's VMX backend.
 *
 * VM entry loads the guest's RSP, RIP, RFLAGS, control registers and
 * segments from the current VMCS; the other general-purpose registers are
 * loaded here from an array in x86 encoding order (the RSP slot unused) and
 * stored back after the exit. VM exit loads the host's state from the
 * VMCS: RSP is written just before entry (HOST_RSP), RIP is the exit label
 * below (HOST_RIP, written once per VMCS). After the exit the return stack
 * buffer is refilled before any RET, and no guest value is left in a
 * register. The caller (rkvm_vmx_run in helpers.c) runs this with IRQs off
 * and switches the host state VM exit does not restore.
 */
#include <linux/linkage.h>
#include <linux/errno.h>
#include <asm/asm.h>
#include <asm/nospec-branch.h>
#include <asm/processor-flags.h>
#include <asm/unwind_hints.h>

#define GPR(n)		((n) * 8)

/* VMCS encoding of HOST_RSP (Intel SDM vol. 3D, appendix B.4.4). */
#define HOST_RSP_FIELD	0x6c14

/* The stack below the callee-saved registers, as the exit finds it. */
#define GPRS		0
#define LAUNCHED	8
#define RESULT		16

/*
 * int rkvm_vmx_vmenter(u64 *gprs, bool launched)
 *
 * Returns 0 after a VM exit, X86_EFLAGS_CF or X86_EFLAGS_ZF if VMLAUNCH or
 * VMRESUME failed (VMfailInvalid, VMfailValid: the error is in the VMCS),
 * or -EIO if an instruction faulted (VMX was turned off under rkvm, as an
 * emergency reboot does): the guest did not run then.
 */
SYM_FUNC_START(rkvm_vmx_vmenter)
	push %rbp
	mov %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push $0
	push %rsi
	push %rdi

	/* The exit comes back with exactly this RSP. */
	mov $HOST_RSP_FIELD, %rax
1:	vmwrite %rsp, %rax
	jbe .Lvmfail

	mov GPR(1)(%rdi), %rcx
	mov GPR(2)(%rdi), %rdx
	mov GPR(3)(%rdi), %rbx
	mov GPR(5)(%rdi), %rbp
	mov GPR(6)(%rdi), %rsi
	mov GPR(8)(%rdi), %r8
	mov GPR(9)(%rdi), %r9
	mov GPR(10)(%rdi), %r10
	mov GPR(11)(%rdi), %r11
	mov GPR(12)(%rdi), %r12
	mov GPR(13)(%rdi), %r13
	mov GPR(14)(%rdi), %r14
	mov GPR(15)(%rdi), %r15
	mov GPR(0)(%rdi), %rax
	mov GPR(7)(%rdi), %rdi

	/* MDS and friends: clear the CPU buffers where the kernel says to. */
	ALTERNATIVE "", __stringify(VERW), X86_FEATURE_CLEAR_CPU_BUF_VM

	/* After VERW, which clobbers ZF. */
	testb $1, LAUNCHED(%rsp)

	/* A successful entry comes back at the exit label, not below. */
	UNWIND_HINT_SAVE
	jnz .Lvmresume
2:	vmlaunch
	jmp .Lvmfail
.Lvmresume:
3:	vmresume
	jmp .Lvmfail

SYM_INNER_LABEL(rkvm_vmx_vmexit, SYM_L_GLOBAL)
	UNWIND_HINT_RESTORE
	ENDBR
	/* RSP is the host's again; RDI is stored last, through the stack. */
	push %rdi
	mov GPRS+8(%rsp), %rdi
	mov %rax, GPR(0)(%rdi)
	mov %rcx, GPR(1)(%rdi)
	mov %rdx, GPR(2)(%rdi)
	mov %rbx, GPR(3)(%rdi)
	mov %rbp, GPR(5)(%rdi)
	mov %rsi, GPR(6)(%rdi)
	mov %r8, GPR(8)(%rdi)
	mov %r9, GPR(9)(%rdi)
	mov %r10, GPR(10)(%rdi)
	mov %r11, GPR(11)(%rdi)
	mov %r12, GPR(12)(%rdi)
	mov %r13, GPR(13)(%rdi)
	mov %r14, GPR(14)(%rdi)
	mov %r15, GPR(15)(%rdi)
	pop GPR(7)(%rdi)

.Lclear_regs:
	/* Leave no guest value in a register (RBX and RBP are reloaded). */
	xor %eax, %eax
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d

	/*
	 * The guest may have filled the return stack buffer with its own
	 * targets: overwrite it before the first RET, where the CPU needs it.
	 */
	FILL_RETURN_BUFFER %rcx, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT, \
			   X86_FEATURE_RSB_VMEXIT_LITE

	add $16, %rsp
	pop %rax
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	/* VMLAUNCH/VMRESUME fell through: the flags say why. */
.Lvmfail:
	mov $X86_EFLAGS_CF, %eax
	mov $X86_EFLAGS_ZF, %ecx
	cmovz %rcx, %rax
	mov %rax, RESULT(%rsp)
	jmp .Lclear_regs

	/* A fault: VMX is off on this CPU. */
.Lfault:
	movq $-EIO, RESULT(%rsp)
	jmp .Lclear_regs

	_ASM_EXTABLE(1b, .Lfault)
	_ASM_EXTABLE(2b, .Lfault)
	_ASM_EXTABLE(3b, .Lfault)
SYM_FUNC_END(rkvm_vmx_vmenter)
