/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for rkvm's Rust code: static inlines and instructions that need
 * exception-table fixups, which Rust cannot reach or express. Each helper is
 * a thin wrapper with no policy; the callers in Rust own the logic.
 */
#ifndef RKVM_HELPERS_H
#define RKVM_HELPERS_H

#include <linux/types.h>

struct file_operations;
struct page;

/* rdmsr/wrmsr that return -EIO instead of oopsing on #GP. */
int rkvm_rdmsr_safe(u32 msr, u64 *val);
int rkvm_wrmsr_safe(u32 msr, u64 val);

/* CR4 through the kernel's per-CPU shadow; call with preemption disabled. */
unsigned long rkvm_cr4_read(void);
void rkvm_cr4_set_bits(unsigned long mask);
void rkvm_cr4_clear_bits(unsigned long mask);
unsigned long rkvm_cr0_read(void);

/* VMXON/VMXOFF/STGI; 0 on success, -EIO if the instruction faulted. */
int rkvm_vmxon(u64 phys);
int rkvm_vmxoff(void);
int rkvm_stgi(void);

/* A dynamic CPU-hotplug state whose callbacks run on the CPU concerned. */
int rkvm_cpuhp_setup(const char *name, int (*online)(unsigned int cpu),
		     int (*offline)(unsigned int cpu));
void rkvm_cpuhp_remove(int state);

int rkvm_anon_inode_getfd(const char *name, const struct file_operations *fops,
			  void *priv, int flags);

u64 rkvm_page_to_phys(struct page *page);

/* access_ok() on a userspace range given as integers. */
bool rkvm_access_ok(u64 addr, u64 size);

unsigned int rkvm_num_online_cpus(void);

#endif /* RKVM_HELPERS_H */
