/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Small helpers shared by rkvm's C selftests.
 */
#ifndef SELFTEST_RKVM_UTIL_H
#define SELFTEST_RKVM_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

/* ioctl() returning -errno on failure, so asserts can name the error. */
static inline long xioctl(int fd, unsigned long cmd, unsigned long arg)
{
	long r = ioctl(fd, cmd, arg);

	return r < 0 ? -errno : r;
}

/*
 * Iterations of a stress loop: @n, divided by $RKVM_STRESS_DIVISOR for slow
 * emulated hosts (at least 1). Every check still runs; only repeats shrink.
 */
static inline int stress_iters(int n)
{
	const char *d = getenv("RKVM_STRESS_DIVISOR");
	int div = d ? atoi(d) : 1;

	if (div <= 1)
		return n;
	return n / div > 0 ? n / div : 1;
}

/*
 * The device the tests drive: $RKVM_DEV, default /dev/rkvm. Setting
 * RKVM_DEV=/dev/kvm runs the same tests against stock KVM, which is how the
 * guest-running tests are checked to be right before rkvm passes them.
 */
static inline const char *rkvm_dev_path(void)
{
	const char *p = getenv("RKVM_DEV");

	return p && *p ? p : "/dev/rkvm";
}

/* open() of rkvm_dev_path(), O_RDWR | O_CLOEXEC; -errno on failure. */
static inline int rkvm_open_dev(void)
{
	int fd = open(rkvm_dev_path(), O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/* KVM_CHECK_EXTENSION(@cap) on a fresh device fd, or -errno. */
static inline long rkvm_dev_check_extension(long cap)
{
	int fd = rkvm_open_dev();
	long r;

	if (fd < 0)
		return fd;
	r = xioctl(fd, KVM_CHECK_EXTENSION, cap);
	close(fd);
	return r;
}

#endif /* SELFTEST_RKVM_UTIL_H */
