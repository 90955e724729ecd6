/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The world switch of rkvm's SVM backend.
 *
 * VMRUN saves and restores only part of the host state (RIP, RSP, RAX,
 * RFLAGS, CR0/3/4, EFER, GDTR/IDTR and the CS/SS/DS/ES segments, in the
 * per-CPU host-save area). The rest that VMLOAD/VMSAVE cover (FS, GS, TR,
 * LDTR with their hidden state, KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK,
 * SYSENTER_*) is saved to a second per-CPU page before the guest's is
 * loaded, and restored right after. Between the two VMLOADs the GS base is
 * the guest's, so nothing here may touch per-CPU data; the caller runs this
 * with GIF clear, so no interrupt or NMI can arrive in that window.
 *
 * General-purpose registers other than RAX and RSP (which the VMCB holds)
 * are loaded from and stored to an array in x86 encoding order. After the
 * #VMEXIT the return stack buffer is refilled before any RET, and no guest
 * value is left in a register.
 */
#include <linux/linkage.h>
#include <linux/errno.h>
#include <asm/asm.h>
#include <asm/nospec-branch.h>

#define GPR(n)	((n) * 8)

/* The stack after the pushes below. */
#define VMCB_PA		0
#define HOST_SAVE_PA	8
#define GPRS		16
#define RESULT		24

/*
 * int rkvm_svm_vmrun(u64 vmcb_pa, u64 *gprs, u64 host_save_pa)
 *
 * Returns 0, or -EIO if an SVM instruction faulted. VMSAVE, VMLOAD and
 * VMRUN fault (#UD, #GP) only if EFER.SVME was cleared under rkvm, which
 * the kernel does on an emergency reboot or crash; each fault is fixed up
 * to carry on with the next step, as KVM's are, so the host's state is
 * put back as far as the hardware still lets it, and the caller learns
 * that the guest did not run.
 */
SYM_FUNC_START(rkvm_svm_vmrun)
	push %rbp
	mov %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push $0
	push %rsi
	push %rdx
	push %rdi

	mov %rdx, %rax
1:	vmsave %rax
2:	mov %rdi, %rax
3:	vmload %rax
4:
	mov GPR(1)(%rsi), %rcx
	mov GPR(2)(%rsi), %rdx
	mov GPR(3)(%rsi), %rbx
	mov GPR(5)(%rsi), %rbp
	mov GPR(7)(%rsi), %rdi
	mov GPR(8)(%rsi), %r8
	mov GPR(9)(%rsi), %r9
	mov GPR(10)(%rsi), %r10
	mov GPR(11)(%rsi), %r11
	mov GPR(12)(%rsi), %r12
	mov GPR(13)(%rsi), %r13
	mov GPR(14)(%rsi), %r14
	mov GPR(15)(%rsi), %r15
	mov GPR(6)(%rsi), %rsi

	/* RAX holds the VMCB's address. */
5:	vmrun %rax
	/*
	 * The host's RIP after VMRUN, which VMRUN saves as host state: a
	 * VMCB whose guest RIP is this and whose RAX is the VMCB's own
	 * address holds host state (rkvm_svm_run's canary).
	 */
SYM_INNER_LABEL(rkvm_svm_vmrun_ret, SYM_L_GLOBAL)
6:
	/*
	 * Only RAX and RSP are the host's again (from the host-save area):
	 * take the VMCB's address from the stack, not from what the #VMEXIT
	 * put in RAX, and the GPR array through RAX once the guest's
	 * registers are stored.
	 */
	mov VMCB_PA(%rsp), %rax
7:	vmsave %rax
8:	mov GPRS(%rsp), %rax
	mov %rcx, GPR(1)(%rax)
	mov %rdx, GPR(2)(%rax)
	mov %rbx, GPR(3)(%rax)
	mov %rbp, GPR(5)(%rax)
	mov %rsi, GPR(6)(%rax)
	mov %rdi, GPR(7)(%rax)
	mov %r8, GPR(8)(%rax)
	mov %r9, GPR(9)(%rax)
	mov %r10, GPR(10)(%rax)
	mov %r11, GPR(11)(%rax)
	mov %r12, GPR(12)(%rax)
	mov %r13, GPR(13)(%rax)
	mov %r14, GPR(14)(%rax)
	mov %r15, GPR(15)(%rax)

	/* Restores the GS base: per-CPU data is reachable again after it. */
	mov HOST_SAVE_PA(%rsp), %rax
9:	vmload %rax
10:
	/*
	 * The guest may have filled the return stack buffer with its own
	 * targets: overwrite it before the first RET (where the CPU needs it).
	 */
	FILL_RETURN_BUFFER %rax, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT

	/*
	 * Where the CPU needs it (Retbleed/SRSO on AMD), untrain RET too, or
	 * IBPB, before IRQs are back on: an interrupt handler returning to
	 * this code would not.
	 */
	UNTRAIN_RET_VM

	/* Leave no guest value in a register. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d

	add $24, %rsp
	pop %rax
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	/* Fault fixups: note the failure, go on with the next step. */
11:	movq $-EIO, RESULT(%rsp)
	jmp 2b
13:	movq $-EIO, RESULT(%rsp)
	jmp 4b
15:	movq $-EIO, RESULT(%rsp)
	jmp 6b
17:	movq $-EIO, RESULT(%rsp)
	jmp 8b
19:	movq $-EIO, RESULT(%rsp)
	jmp 10b

	_ASM_EXTABLE(1b, 11b)
	_ASM_EXTABLE(3b, 13b)
	_ASM_EXTABLE(5b, 15b)
	_ASM_EXTABLE(7b, 17b)
	_ASM_EXTABLE(9b, 19b)
SYM_FUNC_END(rkvm_svm_vmrun)
