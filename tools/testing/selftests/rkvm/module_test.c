// SPDX-License-Identifier: GPL-2.0
/*
 * rkvm module lifetime selftests: an open /dev/rkvm or VM fd pins the
 * module, and load/unload cycles leave a working device behind.
 *
 * Needs the path of rkvm.ko in $RKVM_KO, and rkvm loaded when it starts.
 * The tests leave rkvm loaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/rkvm.h>

#include "kselftest_harness.h"
#include "rkvm_util.h"

static int unload(void)
{
	return syscall(__NR_delete_module, "rkvm", O_NONBLOCK) ? -errno : 0;
}

static int load(void)
{
	const char *ko = getenv("RKVM_KO");
	int fd, r;

	if (!ko)
		return -ENOENT;
	fd = open(ko, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = syscall(__NR_finit_module, fd, "", 0) ? -errno : 0;
	close(fd);
	return r;
}

static long api_version(void)
{
	int fd = open(rkvm_dev_path(), O_RDWR);
	long r;

	if (fd < 0)
		return -errno;
	r = ioctl(fd, KVM_GET_API_VERSION, 0);
	close(fd);
	return r;
}

TEST(open_device_pins_module)
{
	int fd = open(rkvm_dev_path(), O_RDWR);

	ASSERT_LE(0, fd);
	/* delete_module() reports a module in use as EWOULDBLOCK. */
	EXPECT_EQ(-EWOULDBLOCK, unload());
	EXPECT_EQ(12, ioctl(fd, KVM_GET_API_VERSION, 0));
	close(fd);
}

TEST(open_vm_pins_module)
{
	int fd = open(rkvm_dev_path(), O_RDWR);
	int vm = ioctl(fd, KVM_CREATE_VM, 0);

	ASSERT_LE(0, vm);
	close(fd);
	EXPECT_EQ(-EWOULDBLOCK, unload());
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	close(vm);
}

TEST(load_unload_cycles)
{
	int i;

	if (!getenv("RKVM_KO"))
		SKIP(return, "RKVM_KO is not set");
	for (i = 0; i < stress_iters(10); i++) {
		ASSERT_EQ(0, unload()) TH_LOG("cycle %d", i);
		ASSERT_EQ(-ENOENT, api_version());
		ASSERT_EQ(0, load()) TH_LOG("cycle %d", i);
		ASSERT_EQ(12, api_version());
	}
	/* A second load of a loaded module is refused. */
	ASSERT_EQ(-EEXIST, load());
}

TEST_HARNESS_MAIN
