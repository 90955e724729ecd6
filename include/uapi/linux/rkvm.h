/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * rkvm userspace API.
 *
 * rkvm speaks the KVM x86 ioctl ABI: the ioctl numbers, structures and
 * capability numbers are those of <linux/kvm.h>, and a VMM written for
 * /dev/kvm uses them unchanged on RKVM_DEVICE_PATH. Which parts are
 * implemented is in Documentation/virt/rkvm/api.rst; KVM_CHECK_EXTENSION
 * reports 0 for every capability that is not.
 */
#ifndef _UAPI_LINUX_RKVM_H
#define _UAPI_LINUX_RKVM_H

#include <linux/kvm.h>

#define RKVM_DEVICE_PATH "/dev/rkvm"

/* KVM_GET_VCPU_MMAP_SIZE: the kvm_run page and the PIO data page. */
#define RKVM_VCPU_MMAP_PAGES 2

#endif /* _UAPI_LINUX_RKVM_H */
