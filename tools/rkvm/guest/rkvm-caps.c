// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm-caps: print what a KVM-style device reports: API version, vCPU mmap
 * size and every capability KVM_CHECK_EXTENSION answers non-zero for.
 * Usage: rkvm-caps [/dev/rkvm]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kvm.h>

/* Generated from <linux/kvm.h>: cap_names[KVM_CAP_X] = "KVM_CAP_X". */
static const char *const cap_names[] = {
#include "cap_names.h"
};

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : "/dev/rkvm";
	unsigned int cap, nonzero = 0;
	int fd = open(dev, O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "rkvm-caps: open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	printf("%s: KVM_GET_API_VERSION = %d\n", dev, ioctl(fd, KVM_GET_API_VERSION, 0));
	printf("%s: KVM_GET_VCPU_MMAP_SIZE = %d\n", dev, ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0));
	for (cap = 0; cap < sizeof(cap_names) / sizeof(cap_names[0]); cap++) {
		int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);

		if (r != 0) {
			printf("%s: %s (%u) = %d\n", dev, cap_names[cap] ? cap_names[cap] : "?", cap, r);
			nonzero++;
		}
	}
	printf("%s: %u capabilities non-zero, every other KVM_CAP_* is 0\n", dev, nonzero);
	close(fd);
	return 0;
}
