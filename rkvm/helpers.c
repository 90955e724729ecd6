// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's Rust code; see helpers.h for why they exist.
 */
#include <linux/anon_inodes.h>
#include <linux/cpuhotplug.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/uaccess.h>
#include <asm/asm.h>
#include <asm/msr.h>
#include <asm/special_insns.h>
#include <asm/tlbflush.h>

#include "helpers.h"

int rkvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrq_safe(msr, val) ? -EIO : 0;
}

int rkvm_wrmsr_safe(u32 msr, u64 val)
{
	return wrmsrq_safe(msr, val) ? -EIO : 0;
}

unsigned long rkvm_cr4_read(void)
{
	return cr4_read_shadow();
}

void rkvm_cr4_set_bits(unsigned long mask)
{
	cr4_set_bits(mask);
}

void rkvm_cr4_clear_bits(unsigned long mask)
{
	cr4_clear_bits(mask);
}

unsigned long rkvm_cr0_read(void)
{
	return read_cr0();
}

int rkvm_vmxon(u64 phys)
{
	asm goto("1: vmxon %[phys]\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 : : [phys] "m"(phys) : "cc", "memory" : fault);
	return 0;
fault:
	return -EIO;
}

int rkvm_vmxoff(void)
{
	asm goto("1: vmxoff\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 ::: "cc", "memory" : fault);
	return 0;
fault:
	return -EIO;
}

int rkvm_stgi(void)
{
	asm goto("1: stgi\n\t"
		 _ASM_EXTABLE(1b, %l[fault])
		 ::: "memory" : fault);
	return 0;
fault:
	return -EIO;
}

int rkvm_cpuhp_setup(const char *name, int (*online)(unsigned int cpu),
		     int (*offline)(unsigned int cpu))
{
	return cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, name, online, offline);
}

void rkvm_cpuhp_remove(int state)
{
	cpuhp_remove_state(state);
}

int rkvm_anon_inode_getfd(const char *name, const struct file_operations *fops,
			  void *priv, int flags)
{
	return anon_inode_getfd(name, fops, priv, flags);
}

u64 rkvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

bool rkvm_access_ok(u64 addr, u64 size)
{
	return access_ok((void __user *)(unsigned long)addr, size);
}

unsigned int rkvm_num_online_cpus(void)
{
	return num_online_cpus();
}
