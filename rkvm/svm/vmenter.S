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
 * are loaded from and stored to an array in x86 encoding order.
 */
#include <linux/linkage.h>
#include <asm/asm.h>

#define GPR(n)	((n) * 8)

/*
 * void rkvm_svm_vmrun(u64 vmcb_pa, u64 *gprs, u64 host_save_pa)
 */
SYM_FUNC_START(rkvm_svm_vmrun)
	push %rbp
	mov %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	/* Kept for after VMRUN: 16(%rsp) gprs, 8(%rsp) host save, 0(%rsp) VMCB. */
	push %rsi
	push %rdx
	push %rdi

	mov %rdx, %rax
	vmsave %rax
	mov %rdi, %rax
	vmload %rax

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

	/* RAX holds the VMCB's address; #VMEXIT gives it back. */
	vmrun %rax
	/*
	 * The host's RIP after VMRUN, which VMRUN saves as host state: a
	 * VMCB whose guest RIP is this and whose RAX is the VMCB's own
	 * address holds host state (rkvm_svm_run's canary).
	 */
SYM_INNER_LABEL(rkvm_svm_vmrun_ret, SYM_L_GLOBAL)
	vmsave %rax
	mov 16(%rsp), %rax
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

	mov 8(%rsp), %rax
	vmload %rax

	/* Leave no guest value in a caller-saved register. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d

	add $24, %rsp
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET
SYM_FUNC_END(rkvm_svm_vmrun)
